//! The store: annotations, articles, reviews and their histories, over one
//! of two engines ([`engine`]: sled, embedded, or an etcd cluster).
//!
//! Every write goes through the single committer thread (see
//! [`committer`]), which has the engine commit a group durably, and only
//! then publishes it: it moves the in-memory index and the store's revision
//! forward together, under the write side of `visible`, for a moment.
//! Readers take the read side only to pick an index state and its revision,
//! then read the engine *at that revision* (see [`read_at`]): a record a
//! later group wrote, committed yet or not, is read from the audit history
//! as it was. So a reader sees whole groups only, and only durable ones,
//! and never waits for a commit. The key layout is in [`keys`], the value
//! formats in [`codec`]; both are the same on every engine.

mod as_of;
mod audit;
mod backup;
mod codec;
mod committer;
pub mod engine;
mod figures;
mod follow;
mod index;
mod keys;
mod quorum;
mod read_ahead;
mod reanchoring;
mod review_log;
mod sync;
mod wal;
pub use wal::SEGMENT_BYTES as WAL_SEGMENT_BYTES;
/// See [`StoreConfig::reanchor_chunk`].
pub const REANCHOR_CHUNK: u64 = reanchoring::CHUNK as u64;

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{broadcast, mpsc, oneshot};
use uuid::Uuid;

pub use as_of::AsOf;
pub use audit::{AuditReport, HistoryCursor};
pub use backup::{BACKUP_MAGIC, restore, restore_etcd};
pub use committer::MODERATION_PREFIX;
pub use committer::{Applied, Mutation, RequestKey, now_us};
use committer::{Job, Work};
use engine::Engine;
pub use engine::EngineConfig;

use crate::domain::{
    Analyst, Annotation, AnnotationFilter, AnnotationName, Article, ArticleId, Change, Review, SEEDS_AUTHOR,
};
use crate::error::{Error, Result};
use index::Index;

/// How many jobs may wait for the committer before callers wait to enqueue.
const QUEUE_DEPTH: usize = 4096;

/// Where and how to open the store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The sled database lives in `<data_dir>/db`.
    pub data_dir: PathBuf,
    /// Seed articles to load (`*.txt`, id = file stem); `None` loads none.
    pub seeds_dir: Option<PathBuf>,
    /// sled's page cache, in bytes: the main term of the server's memory.
    pub cache_capacity_bytes: u64,
    /// How much of the changelog to keep for watchers resuming.
    pub retention: Retention,
    /// After each group's flush, also `fdatasync` sled's log file, so an
    /// acknowledged write survives power loss, not only a crash of the
    /// process. sled's own flush uses `sync_file_range`, which writes the
    /// pages out but neither flushes the drive's cache nor the file's size;
    /// see [`sync`] for the blob files.
    pub sync: bool,
    /// The most a write's answer may hold, in bytes (about): a larger batch
    /// is refused before it is applied, so no answer, changelog entry or
    /// watch message grows past it.
    pub max_result_bytes: usize,
    /// Analysts who must have annotated an article before its review can
    /// be READY.
    pub review_min_analysts: u32,
    /// The size of a write-ahead log segment ([`wal::SEGMENT_BYTES`]
    /// unless a test wants a rotation every few frames).
    pub wal_segment_bytes: u64,
    /// Most annotations a correction re-anchors per revision
    /// ([`reanchoring::CHUNK`] unless a test wants many chunks).
    pub reanchor_chunk: usize,
    /// Which engine holds the keys: sled in `data_dir` (the default) or an
    /// etcd cluster.
    pub engine: EngineConfig,
}

/// The default of [`StoreConfig::max_result_bytes`] and of the server's
/// response limit.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Changelog retention: an entry is trimmed once it is more than `revisions`
/// behind the head or older than `age`, whichever comes first.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub revisions: u64,
    pub age: std::time::Duration,
}

impl Default for Retention {
    /// A million revisions or a week: days of work for a busy desk.
    fn default() -> Self {
        Self {
            revisions: 1_000_000,
            age: std::time::Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// How many committed changes are buffered for live watchers; a watcher
/// further behind catches up from the changelog on disk.
pub const LIVE_BUFFER: usize = 1024;

/// The largest change (about, in bytes) the live buffer holds whole; a
/// larger one is announced by its revision only, and watchers read it from
/// the changelog on disk. So the buffer holds at most
/// `LIVE_BUFFER * LIVE_CHANGE_BYTES` (16 MiB), whatever the writes.
pub const LIVE_CHANGE_BYTES: usize = 16 * 1024;

/// One committed change, as the live buffer carries it.
#[derive(Clone, Debug)]
pub enum Live {
    Change(Arc<Change>),
    /// A change over [`LIVE_CHANGE_BYTES`]: read it from the changelog.
    OnDisk {
        revision: u64,
    },
}

impl Live {
    pub fn revision(&self) -> u64 {
        match self {
            Live::Change(c) => c.revision,
            Live::OnDisk { revision } => *revision,
        }
    }
}

/// A read of the changelog.
pub enum ChangesRead {
    /// The changes from the revision asked for, in order.
    Changes(Vec<Arc<Change>>),
    /// The revision asked for was trimmed; `oldest` is the oldest kept.
    Compacted { oldest: u64 },
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            seeds_dir: None,
            cache_capacity_bytes: 128 * 1024 * 1024,
            retention: Retention::default(),
            sync: true,
            max_result_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            review_min_analysts: crate::domain::DEFAULT_MIN_ANALYSTS,
            wal_segment_bytes: wal::SEGMENT_BYTES,
            reanchor_chunk: reanchoring::CHUNK,
            engine: EngineConfig::Sled,
        }
    }
}

/// A handle to the store; clones share it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// What the committer thread shares with readers.
struct Shared {
    /// Where the keys live ([`engine`]).
    engine: Arc<dyn Engine>,
    /// The in-memory index at `revision`. Readers hold it shared while they
    /// pick keys; the committer holds it exclusively only to apply a durable
    /// group and move `revision`, never across a flush.
    visible: RwLock<Index>,
    /// The revision of the last durable, published group: what readers read
    /// at.
    revision: AtomicU64,
    /// Turns true when a commit fails: the store then refuses writes until
    /// it is reopened (fail-stop), and the server reports NOT_SERVING.
    failed: Arc<tokio::sync::watch::Sender<bool>>,
    /// See [`StoreConfig::max_result_bytes`].
    max_result_bytes: usize,
    /// The highest revision trimmed from the changelog (0: none).
    compacted: AtomicU64,
    retention: Retention,
    /// Committed changes, published by the committer after each flush.
    changes: broadcast::Sender<Live>,
    /// Where the committer's time goes; logged at close.
    figures: Arc<figures::CommitFigures>,
    /// The published revision, for reads that wait to reach one
    /// ([`Store::fresh`]).
    head: tokio::sync::watch::Sender<u64>,
    /// Set by the engine's watch when another server committed: the
    /// committer follows before its next group ([`follow`]).
    follow_asked: std::sync::atomic::AtomicBool,
    /// The revision of the group the committer is committing now: the
    /// engine's watch reports this server's own commits too, and those
    /// need no following.
    committing: AtomicU64,
    /// False while this server cannot see other servers' commits (its watch
    /// on the store's head is broken): reads would be stale, so the server
    /// reports NOT_SERVING. Always true on an engine nobody else writes to.
    in_sync: Arc<tokio::sync::watch::Sender<bool>>,
    /// The corrections whose annotations this server is still re-anchoring.
    reanchoring: reanchoring::Pending,
    /// See [`StoreConfig::reanchor_chunk`].
    reanchor_chunk: usize,
}

struct Inner {
    shared: Arc<Shared>,
    /// Article revisions read from sled: they never change, so any reader
    /// may keep one. Cleared when full.
    revisions: Mutex<HashMap<(ArticleId, u32), Arc<Article>>>,
    /// Key for page-token MACs, kept in the store so tokens survive restarts.
    page_secret: [u8; 32],
    /// See [`StoreConfig::review_min_analysts`].
    review_min_analysts: u32,
    /// Where the store lives: backups are made in it first.
    data_dir: PathBuf,
    /// Consistent reads' quorum reads of the store's revision, shared.
    quorum: Arc<quorum::QuorumReads>,
    /// `None` once the store is closing.
    queue: Mutex<Option<mpsc::Sender<Work>>>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        // The committer closes the engine as it stops (sled: the last
        // checkpoint, unless the store failed).
        if let Some(handle) = self.committer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = handle.join();
        }
        tracing::info!(figures = %self.shared.figures.summary(), "committer figures");
    }
}

/// How long a read waits to see every change committed before it began
/// (etcd) before it is refused `UNAVAILABLE` rather than answered stale.
const FRESH_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Has the committer follow other servers' commits as the engine's watch
/// reports them. Holds the queue weakly: the store still closes when its
/// last handle goes.
fn watch_head(shared: &Arc<Shared>, queue: mpsc::WeakSender<Work>) {
    let weak = Arc::downgrade(shared);
    shared.engine.watch_head(Box::new(move |event| {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let nudge = match event {
            engine::HeadEvent::Moved(r) => {
                r > shared.revision.load(Ordering::Acquire) && r > shared.committing.load(Ordering::Acquire)
            }
            engine::HeadEvent::Connected => {
                shared.in_sync.send_replace(true);
                true
            }
            engine::HeadEvent::Broken => {
                shared.in_sync.send_replace(false);
                false
            }
        };
        // One nudge in the queue at a time: the committer follows to the
        // head, whatever it moved to meanwhile.
        if nudge
            && !shared.follow_asked.swap(true, Ordering::AcqRel)
            && let Some(q) = queue.upgrade()
        {
            let _ = q.try_send(Work::Follow);
        }
    }));
}

/// A position in a list, after which the next page starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor(Vec<u8>);

impl Cursor {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The cursor of a page that ends with `a`.
    pub fn after(a: &Annotation) -> Self {
        Self(keys::position(
            &a.name.article,
            a.judgement.span.start(),
            a.name.id,
        ))
    }
}

/// A job for [`Store::submit`].
pub struct Submit {
    pub mutations: Vec<Mutation>,
    /// Who asked: recorded in the audit history.
    pub actor: Analyst,
    pub request: Option<RequestKey>,
    /// Check everything, write nothing.
    pub validate_only: bool,
    /// What the mutations are called in errors, e.g. `requests`.
    pub children: Option<&'static str>,
}

/// One page of annotations.
pub struct AnnotationPage {
    pub annotations: Vec<Annotation>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
    /// The revision the page was read at.
    pub revision: u64,
}

impl Store {
    /// Opens (or creates) the store and loads the seed articles. Blocking.
    pub fn open(config: &StoreConfig) -> Result<Store> {
        Self::open_with(config, false)
    }

    fn open_with(config: &StoreConfig, pin_reads: bool) -> Result<Store> {
        // Tests hold the open here, as a large store would.
        fail::fail_point!("store::open");
        let figures = Arc::new(figures::CommitFigures::default());
        let failed = Arc::new(tokio::sync::watch::channel(false).0);
        let mut sled_engine = None;
        let engine: Arc<dyn Engine> = match &config.engine {
            EngineConfig::Sled => {
                let e = Arc::new(engine::sled::SledEngine::open(
                    config,
                    figures.clone(),
                    failed.clone(),
                )?);
                sled_engine = Some(e.clone());
                e
            }
            EngineConfig::Etcd(etcd) => {
                // Backups are copied through the data dir on every engine.
                backup::remove_stale_copies(&config.data_dir);
                let e = engine::etcd::EtcdEngine::open(etcd, true)?;
                if e.restoring()? {
                    return Err(Error::internal(format!(
                        "the etcd prefix {} holds an unfinished restore, not a store: run `factcheck restore \
                         --store etcd` again, or delete the prefix's keys to start an empty store",
                        String::from_utf8_lossy(&etcd.prefix)
                    )));
                }
                Arc::new(e)
            }
        };
        tracing::info!(engine = engine.name(), "store engine open");
        if pin_reads {
            engine.pin_reads()?;
        }
        let tree = &*engine;
        migrate_articles(tree)?;
        // Every server of a store must sign page tokens with the same key.
        let page_secret = match tree.get(keys::META_PAGE_SECRET)? {
            Some(v) if v.len() == 32 => v.as_slice().try_into().expect("length checked"),
            Some(_) => {
                let secret: [u8; 32] = rand::random();
                tree.write(vec![(keys::META_PAGE_SECRET.to_vec(), Some(secret.to_vec()))])?;
                secret
            }
            None => {
                let secret: [u8; 32] = rand::random();
                tree.write_if_absent(keys::META_PAGE_SECRET, secret.to_vec())?
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::internal("corrupt page secret"))?
            }
        };
        let revision = tree.stored_revision()?;
        let seeds = match &config.seeds_dir {
            Some(dir) => read_seeds(dir)?,
            None => Vec::new(),
        };
        // Into a store nothing was ever committed to, seeds are its initial
        // state, written as revision 1 of each article; after that, a new or
        // changed seed is a change like any other (below).
        if revision == 0 {
            for (id, text) in &seeds {
                let article = Article::revision(
                    id.clone(),
                    String::new(),
                    text.clone(),
                    String::new(),
                    1,
                    SEEDS_AUTHOR.into(),
                    committer::now_us(),
                    committer::now_us(),
                );
                let record = codec::ArticleRevisionRecord::from_article(&article, 0);
                let key = keys::article_revision(id, 1);
                match tree.get(&key)? {
                    Some(v) if codec::decode::<codec::ArticleRevisionRecord>(&v)?.text == *text => {}
                    // Changed before anything was committed: still the
                    // initial state.
                    Some(_) => tree.write(vec![(key, Some(codec::encode(&record)))])?,
                    // Servers opening a new etcd store at once write each
                    // seed once.
                    None => {
                        tree.write_if_absent(&key, codec::encode(&record))?;
                    }
                }
            }
        }
        // Other servers may commit while this one lists the store (etcd): it
        // lists one etcd revision, and follows from the store revision that
        // view holds, so no change is counted twice or missed.
        let frozen = match engine.shared() && !pin_reads {
            true => engine.frozen()?,
            false => None,
        };
        let view: &dyn Engine = frozen.as_deref().unwrap_or(tree);
        let revision = view.stored_revision()?;
        let compacted = compaction_mark(view)?;
        let mut index = build_index(view)?;
        for article in current_articles(view)? {
            index.set_text(article);
        }
        drop(frozen);
        let shared = Arc::new(Shared {
            engine: engine.clone(),
            visible: RwLock::new(index),
            revision: AtomicU64::new(revision),
            failed,
            max_result_bytes: config.max_result_bytes,
            compacted: AtomicU64::new(compacted),
            retention: config.retention,
            changes: broadcast::channel(LIVE_BUFFER).0,
            figures,
            head: tokio::sync::watch::channel(revision).0,
            follow_asked: std::sync::atomic::AtomicBool::new(false),
            committing: AtomicU64::new(0),
            in_sync: Arc::new(tokio::sync::watch::channel(true).0),
            reanchoring: Default::default(),
            reanchor_chunk: config.reanchor_chunk,
        });
        if !pin_reads {
            drive_unfinished(&shared, None)?;
        }
        if revision > 0 {
            apply_seeds(&shared, seeds)?;
        }
        if let Some(e) = &sled_engine {
            e.start();
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let handle = committer::spawn(shared.clone(), rx);
        if engine.shared() && !pin_reads {
            watch_head(&shared, tx.downgrade());
        }
        Ok(Store {
            inner: Arc::new(Inner {
                shared,
                revisions: Mutex::new(HashMap::new()),
                page_secret,
                review_min_analysts: config.review_min_analysts,
                data_dir: config.data_dir.clone(),
                quorum: Default::default(),
                queue: Mutex::new(Some(tx)),
                committer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Opens the store to check its audit history: like [`Store::open`],
    /// and every read then sees one state, even of an etcd prefix that
    /// servers keep writing to.
    pub fn open_for_audit(config: &StoreConfig) -> Result<Store> {
        Self::open_with(config, true)
    }

    /// Every article's current revision, by id.
    pub fn articles(&self) -> Vec<Arc<Article>> {
        self.read_lock().texts().values().cloned().collect()
    }

    /// The article's current revision.
    pub fn article(&self, id: &ArticleId) -> Option<Arc<Article>> {
        self.read_lock().text(id).cloned()
    }

    /// One revision of an article; `None` if it does not exist (yet, as of
    /// the last durable revision). Blocking, briefly, when it is not cached.
    pub fn article_revision(&self, id: &ArticleId, revision: u32) -> Result<Option<Arc<Article>>> {
        match self.article(id) {
            Some(a) if a.revision == revision => return Ok(Some(a)),
            Some(a) if a.revision < revision => return Ok(None),
            None => return Ok(None),
            Some(_) => {}
        }
        let key = (id.clone(), revision);
        if let Some(a) = self
            .inner
            .revisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Some(a.clone()));
        }
        let Some(article) = read_article_revision(&*self.inner.shared.engine, id, revision)? else {
            return Ok(None);
        };
        let mut cache = self.inner.revisions.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= REVISION_CACHE {
            cache.clear();
        }
        cache.insert(key, article.clone());
        Ok(Some(article))
    }

    /// Up to `limit` revisions of an article after revision `after`, oldest
    /// first, and whether more follow. Blocking.
    pub fn article_revisions(
        &self,
        id: &ArticleId,
        after: u32,
        limit: usize,
    ) -> Result<(Vec<Arc<Article>>, bool)> {
        let Some(current) = self.article(id) else {
            return Err(Error::not_found(id.name()));
        };
        let mut out = Vec::new();
        for rev in after.saturating_add(1)..=current.revision {
            if out.len() == limit {
                return Ok((out, true));
            }
            match self.article_revision(id, rev)? {
                Some(a) => out.push(a),
                None => return Err(Error::internal(format!("article {id} lacks revision {rev}"))),
            }
        }
        Ok((out, false))
    }

    /// The revision of the last durable change.
    pub fn revision(&self) -> u64 {
        self.inner.shared.revision.load(Ordering::Acquire)
    }

    /// A secret that survives restarts, for signing page tokens.
    pub fn page_secret(&self) -> &[u8; 32] {
        &self.inner.page_secret
    }

    /// Applies `mutations` atomically as one revision, durably. A repeated
    /// `request` returns the first outcome instead.
    pub async fn apply(
        &self,
        mutations: Vec<Mutation>,
        actor: Analyst,
        request: Option<RequestKey>,
    ) -> Result<Applied> {
        self.submit(Submit {
            mutations,
            actor,
            request,
            validate_only: false,
            children: None,
        })
        .await
    }

    /// Applies (or only checks) a batch: like [`Store::apply`], and a failed
    /// mutation is named `{children}[i]`.
    pub async fn submit(&self, submit: Submit) -> Result<Applied> {
        let Submit {
            mutations,
            actor,
            request,
            validate_only,
            children,
        } = submit;
        let queue = self.queue()?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            mutations,
            actor,
            request,
            validate_only,
            children,
            reply,
        };
        queue
            .send(Work::Commit(job))
            .await
            .map_err(|_| Error::Unavailable)?;
        let answer = answer.await.map_err(|_| Error::Unavailable)?;
        if let Err(Error::Aborted {
            reason: "REANCHORING_IN_PROGRESS",
            ..
        }) = &answer
        {
            // Refused for a re-anchoring: make sure someone drives it.
            self.take_up_stalled_reanchorings();
        }
        answer
    }

    /// Copies the whole store, as of one revision, to a new file in the data
    /// dir (tokens are not in the store; the page-token secret is left
    /// out): the committer makes it between two groups, so writers wait
    /// while it is written. Returns the file (the caller removes it) and
    /// the revision.
    pub async fn backup(&self) -> Result<(PathBuf, u64)> {
        let path = self.inner.data_dir.join(format!(
            "{}{}{}",
            backup::PARTIAL_PREFIX,
            Uuid::new_v4(),
            backup::PARTIAL_SUFFIX
        ));
        if self.shared() {
            // etcd: the copy reads one etcd revision (a frozen view), so
            // it needs no pause of the committer, whose follows reads wait
            // on.
            let shared = self.inner.shared.clone();
            let at = path.clone();
            let (reply, answer) = oneshot::channel();
            tokio::task::spawn_blocking(move || {
                // Nobody waits for it any more (the caller gave up): the
                // copy must not stay in the data dir.
                if reply.send(backup::write(&shared, &at)).is_err() {
                    let _ = std::fs::remove_file(&at);
                }
            });
            return match answer.await.map_err(|_| Error::Unavailable)? {
                Ok(revision) => Ok((path, revision)),
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    Err(e)
                }
            };
        }
        let queue = self.queue()?;
        let (reply, answer) = oneshot::channel();
        queue
            .send(Work::Backup {
                path: path.clone(),
                reply,
            })
            .await
            .map_err(|_| Error::Unavailable)?;
        match answer.await.map_err(|_| Error::Unavailable)? {
            Ok(revision) => Ok((path, revision)),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Several annotations read at one revision; `None` where missing.
    /// Blocking, briefly: never waits for a commit.
    pub fn get_many(&self, names: &[AnnotationName]) -> Result<(Vec<Option<Annotation>>, u64)> {
        let at = self.revision();
        let tree = &*self.inner.shared.engine;
        // The locations in one batch of reads, then the records (etcd: two
        // round trips for up to 256 names, not two per name).
        let queries: Vec<engine::PageQuery> = names
            .iter()
            .map(|n| engine::PageQuery::key(&keys::location(n.id)))
            .collect();
        let mut located = Vec::new();
        let mut found: Vec<Option<Annotation>> = Vec::with_capacity(names.len());
        for (i, (n, mut page)) in names.iter().zip(tree.pages(&queries)?).enumerate() {
            match page.pop() {
                Some((_, v)) => {
                    let (article, start) = parse_location(&v)?;
                    located.push((i, (article, start, n.id)));
                    found.push(None);
                }
                // Deleted, perhaps after `at`: the history has it.
                None => found.push(audit::state_at(tree, n.id, at)?),
            }
        }
        let positions: Vec<Position> = located.iter().map(|(_, p)| p.clone()).collect();
        for ((i, _), a) in located.iter().zip(read_many_at(tree, &positions, at)?) {
            found[*i] = a;
        }
        for (a, n) in found.iter_mut().zip(names) {
            if a.as_ref().is_some_and(|a| a.name.article != n.article) {
                *a = None;
            }
        }
        Ok((found, at))
    }

    /// One annotation by name, as of the last durable revision. Blocking,
    /// briefly: never waits for a commit.
    pub fn get(&self, article: &ArticleId, id: Uuid) -> Result<Option<Annotation>> {
        let found = read_at(&*self.inner.shared.engine, id, None, self.revision())?;
        Ok(found.filter(|a| &a.name.article == article))
    }

    /// One annotation by id, in whatever article, as of the last durable
    /// revision. Blocking, briefly.
    pub fn get_any(&self, id: Uuid) -> Result<Option<Annotation>> {
        read_at(&*self.inner.shared.engine, id, None, self.revision())
    }

    /// Returns once this server has re-anchored every annotation of the
    /// article's last correction (at once if it has none in progress); `Err`
    /// if it stopped before the end.
    pub async fn reanchored(&self, article: &ArticleId) -> Result<()> {
        self.inner.shared.reanchoring.wait(article).await
    }

    /// Places the spans a correction moves (each annotation on its old
    /// text), off the committer, which then only looks the placements up.
    /// Blocking: the quote searches may take a while on a long article.
    pub fn place_known(&self, reanchor: &crate::anchor::Reanchor) {
        place_known(&self.inner.shared, reanchor)
    }

    /// Whether a commit failed, and the store refuses writes; follows it.
    pub fn failed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.shared.failed.subscribe()
    }

    /// Blob files made durable since open (0 without `sync`).
    pub fn blob_files_synced(&self) -> u64 {
        self.inner.shared.engine.blob_files_synced()
    }

    /// Up to `limit` annotations matching `filter`, after `cursor`. Blocking:
    /// the index selects, sled supplies only the page's records.
    pub fn list(
        &self,
        filter: &AnnotationFilter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<AnnotationPage> {
        let index = self.read_lock();
        let revision = self.revision();
        let (keys, next) = select_page(&index, filter, cursor, limit)?;
        // The index is picked; the records are read at its revision, without
        // the lock.
        drop(index);
        let tree = &*self.inner.shared.engine;
        let annotations = read_many_at(tree, &keys, revision)?
            .into_iter()
            .zip(&keys)
            .map(|(a, (_, _, uuid))| {
                a.ok_or_else(|| Error::internal(format!("indexed annotation {uuid} has no record")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AnnotationPage {
            annotations,
            next,
            revision,
        })
    }

    /// Where the review of `article` stands, and the revision it stands at.
    /// Computed once per state of the article and then shared, so usually
    /// cheap; the first call after a change is O(n log n) in its annotations,
    /// computed from a copy taken under the lock, not under it, so neither
    /// the committer nor other readers wait for it.
    pub fn review(&self, id: &ArticleId) -> Result<(Arc<Review>, u64)> {
        let (snapshot, version, revision, article) = {
            let index = self.read_lock();
            let revision = self.revision();
            let article = index
                .text(id)
                .cloned()
                .ok_or_else(|| Error::not_found(id.name()))?;
            match index.article(id) {
                None => {
                    let context = crate::domain::ReviewContext {
                        min_analysts: self.inner.review_min_analysts,
                        ..Default::default()
                    };
                    let review = Review::compute(article, &[], Vec::new(), context);
                    return Ok((Arc::new(review), revision));
                }
                Some(a) => match a.cached_review() {
                    Some(review) => return Ok((review, revision)),
                    None => (a.snapshot(), a.version(), revision, article),
                },
            }
        };
        let review = Arc::new(snapshot.compute(&article, self.inner.review_min_analysts));
        let index = self.read_lock();
        if let Some(a) = index.article(id)
            && a.version() == version
        {
            a.share_review(review.clone());
        }
        Ok((review, revision))
    }

    /// The review of `article` if it is already computed and the store is
    /// not committing: never blocks, so async code may call it.
    pub fn cached_review(&self, article: &ArticleId) -> Option<(Arc<Review>, u64)> {
        let index = match self.inner.shared.visible.try_read() {
            Ok(index) => index,
            Err(_) => return None,
        };
        let review = index.article(article)?.cached_review()?;
        Some((review, self.revision()))
    }

    /// Live changes committed from now on. A receiver that falls more than
    /// [`LIVE_BUFFER`] changes behind gets `Lagged` and should catch up with
    /// [`Store::changes_since`].
    pub fn subscribe(&self) -> broadcast::Receiver<Live> {
        self.inner.shared.changes.subscribe()
    }

    /// Waits until this server has taken in every change committed to the
    /// store before the call, by any server, and returns its revision then:
    /// what a read does first, so a write acknowledged by another server is
    /// never missed (etcd; on sled this server is the only writer). Refused
    /// `UNAVAILABLE` rather than answered stale when etcd cannot say.
    pub async fn fresh(&self) -> Result<u64> {
        let shared = &self.inner.shared;
        if !shared.engine.shared() {
            return Ok(self.revision());
        }
        let stored = self.stored_revision().await?;
        self.caught_up_to(stored).await
    }

    /// The store's revision: on a shared store a quorum read that started
    /// after this call (shared with the calls waiting with it,
    /// [`quorum`]), not through the committer, so a commit in flight (or a
    /// slow one) does not hold reads up; on sled, this server's.
    async fn stored_revision(&self) -> Result<u64> {
        let engine = &self.inner.shared.engine;
        if !engine.shared() {
            return Ok(self.revision());
        }
        self.inner.quorum.revision(engine).await
    }

    /// Waits until this server has taken in revision `min` (a revision a
    /// client's write returned, on whichever server), and returns its
    /// revision then: `min_revision` and `read_revision`. Cheaper than
    /// [`Store::fresh`] when the server already has it: no round trip.
    /// A revision the store has not written is `OUT_OF_RANGE`.
    pub async fn at_least(&self, min: u64) -> Result<u64> {
        if self.revision() >= min {
            return Ok(self.revision());
        }
        let stored = self.stored_revision().await?;
        if stored < min {
            return Err(Error::OutOfRange {
                reason: "REVISION_NOT_YET_WRITTEN",
                message: format!(
                    "revision {min} is newer than any the store has written: its newest is {stored}"
                ),
                oldest: None,
            });
        }
        self.caught_up_to(min).await
    }

    /// Waits, within [`FRESH_WITHIN`], until this server has published
    /// `revision`, which the store holds: it has this server follow the
    /// store meanwhile.
    async fn caught_up_to(&self, revision: u64) -> Result<u64> {
        let shared = &self.inner.shared;
        if self.revision() >= revision {
            return Ok(self.revision());
        }
        if *shared.failed.borrow() {
            // It follows no more: whatever it answered would be stale.
            return Err(Error::StoreFailed);
        }
        if !shared.follow_asked.swap(true, Ordering::AcqRel) {
            let _ = self.queue()?.try_send(Work::Follow);
        }
        let mut head = shared.head.subscribe();
        match tokio::time::timeout(FRESH_WITHIN, head.wait_for(|h| *h >= revision)).await {
            Ok(Ok(h)) => Ok(*h),
            Ok(Err(_)) => Err(Error::Unavailable),
            Err(_) => Err(Error::StoreUnavailable {
                reason: "REPLICA_BEHIND",
                message: format!(
                    "this server could not take in, within {}s, every change committed to the store ({}) \
                     up to revision {revision}: not answering from a state that may be stale; retry",
                    FRESH_WITHIN.as_secs(),
                    shared.engine.name()
                ),
            }),
        }
    }

    /// Whether other servers may write to this store (etcd).
    pub fn shared(&self) -> bool {
        self.inner.shared.engine.shared()
    }

    /// False while this server cannot see other servers' commits (etcd):
    /// the server reports NOT_SERVING meanwhile.
    pub fn in_sync(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.shared.in_sync.subscribe()
    }

    /// The revision of the last change to `article`, its annotations or its
    /// review, as this server has published; `None` for an unknown article.
    pub fn last_change(&self, article: &ArticleId) -> Option<u64> {
        let index = self.read_lock();
        index.text(article)?;
        Some(index.article(article).map_or(0, |a| a.last_revision()))
    }

    /// The oldest revision the changelog still holds.
    pub fn oldest_revision(&self) -> u64 {
        self.inner.shared.compacted.load(Ordering::Acquire) + 1
    }

    /// The oldest revision a read may name (`read_revision`): the state at
    /// `r` is today's with every later change taken back, so it needs the
    /// changelog from `r + 1` on.
    pub fn oldest_readable(&self) -> u64 {
        self.inner.shared.compacted.load(Ordering::Acquire)
    }

    /// Up to `limit` changes from revision `from` on, up to the durable
    /// head. Blocking.
    pub fn changes_since(&self, from: u64, limit: usize) -> Result<ChangesRead> {
        let head = self.revision();
        let oldest = self.oldest_revision();
        if from < oldest {
            return Ok(ChangesRead::Compacted { oldest });
        }
        if from > head {
            return Ok(ChangesRead::Changes(Vec::new()));
        }
        let mut out = Vec::new();
        let (lower, upper) = (keys::change(from), keys::change(head + 1));
        let range = self
            .inner
            .shared
            .engine
            .range(Bound::Included(&lower[..]), Bound::Excluded(&upper[..]));
        for item in range.take(limit) {
            let (_, v) = item?;
            let change = codec::decode_change(&v, self)?;
            if change.revision != from + out.len() as u64 {
                return Err(Error::internal(format!(
                    "changelog gap before revision {}",
                    change.revision
                )));
            }
            out.push(Arc::new(change));
        }
        Ok(ChangesRead::Changes(out))
    }

    /// The committer's queue; Unavailable once the store is closing.
    fn queue(&self) -> Result<mpsc::Sender<Work>> {
        self.inner
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Error::Unavailable)
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.inner
            .shared
            .visible
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }
}

impl codec::ChangeSource for Store {
    fn article(&self, id: &ArticleId, revision: u32) -> Result<Arc<Article>> {
        self.article_revision(id, revision)?
            .ok_or_else(|| Error::internal(format!("changelog names a missing revision {revision} of {id}")))
    }

    fn history(
        &self,
        id: Uuid,
        revision: u64,
        seq: u32,
    ) -> Result<(codec::HistoryRecord, Option<codec::HistoryRecord>)> {
        self.inner.shared.history(id, revision, seq)
    }

    fn review(&self, article: &ArticleId, revision: u64, seq: u32) -> Result<codec::ReviewRecord> {
        codec::ChangeSource::review(&*self.inner.shared, article, revision, seq)
    }
}

/// Where an annotation is listed: its article, start and id.
type Position = (ArticleId, u32, Uuid);

/// The positions of up to `limit` annotations of `index` matching `filter`
/// after `cursor`, and the cursor of the next page if there is one: the
/// selection of `ListAnnotations`, today's and as of a past revision.
fn select_page(
    index: &Index,
    filter: &AnnotationFilter,
    cursor: Option<&Cursor>,
    limit: usize,
) -> Result<(Vec<Position>, Option<Cursor>)> {
    let after = match cursor {
        Some(c) => Some(keys::parse_position(&c.0).ok_or_else(|| Error::internal("malformed cursor"))?),
        None => None,
    };
    let articles: Vec<&ArticleId> = match &filter.article {
        Some(a) => vec![a],
        None => index.texts().keys().collect(),
    };
    let lengths = |id: &ArticleId| index.text(id).map_or(0, |a| a.len());
    // One more than a page: whether there is a next page.
    let mut keys: Vec<(&ArticleId, u32, Uuid)> = Vec::new();
    for id in articles {
        let from = match &after {
            Some((a, _, _)) if a > id => continue,
            Some((a, start, uuid)) if a == id => Some((*start, *uuid)),
            _ => None,
        };
        if let Some(article) = index.article(id) {
            let want = limit + 1 - keys.len();
            keys.extend(
                article
                    .select(filter, from, want, lengths(id))
                    .into_iter()
                    .map(|(start, uuid)| (id, start, uuid)),
            );
        }
        if keys.len() > limit {
            break;
        }
    }
    let next = (keys.len() > limit).then(|| {
        let (a, start, uuid) = keys[limit - 1];
        Cursor(keys::position(a, start, uuid))
    });
    keys.truncate(limit);
    Ok((
        keys.into_iter().map(|(a, s, u)| (a.clone(), s, u)).collect(),
        next,
    ))
}

/// The highest revision trimmed from the changelog, as stored (0: none).
fn compaction_mark(tree: &dyn Engine) -> Result<u64> {
    keys::decode_revision(tree.get(keys::META_COMPACTED)?.as_deref(), "compaction mark")
}

/// The index of every stored annotation, and each article's last update.
fn build_index(tree: &dyn Engine) -> Result<Index> {
    let mut index = Index::default();
    for item in tree.scan_prefix(&[keys::POSITION]) {
        let (_, v) = item?;
        index.insert(&codec::decode_annotation(&v)?);
    }
    for item in tree.scan_prefix(&[keys::STATS]) {
        let (k, v) = item?;
        let id = std::str::from_utf8(&k[1..])
            .ok()
            .and_then(|s| ArticleId::parse(s).ok())
            .ok_or_else(|| Error::internal("corrupt stats key"))?;
        let stats: codec::StatsRecord = codec::decode(&v)?;
        if stats.last_update_time_us != 0 {
            index.set_last_update(&id, stats.last_update_time_us);
        }
        index.set_last_revision(&id, stats.last_revision);
    }
    for item in tree.scan_prefix(&[keys::REVIEW]) {
        let (_, v) = item?;
        let record: codec::ReviewRecord = codec::decode(&v)?;
        index.apply_review(&record.to_event()?);
    }
    Ok(index)
}

/// The annotation `id` as it stood at revision `at`, in whatever article.
/// `position` is where the index says it starts, if the caller knows.
///
/// Its stored record, unless a commit after `at` changed it (its revision is
/// newer, or it moved or was deleted): then the last history record at or
/// before `at`, which the same atomic batch wrote. The committer applies a
/// group before it is durable, and after a failed commit what it applied
/// stays in sled's memory: this is how readers never see either.
fn read_at(
    tree: &dyn Engine,
    id: Uuid,
    position: Option<(&ArticleId, u32)>,
    at: u64,
) -> Result<Option<Annotation>> {
    let position = match position {
        Some((article, start)) => Some((article.clone(), start)),
        None => location(tree, id)?,
    };
    // `None` if a commit moved or deleted it since the location was read:
    // the history has it.
    let stored = match position {
        Some((article, start)) => record(tree, &article, start, id)?,
        None => None,
    };
    if let Some(a) = stored
        && a.revision <= at
    {
        return Ok(Some(a));
    }
    audit::state_at(tree, id, at)
}

/// [`read_at`] of many annotations at the positions the index gave: their
/// records in one batch of reads (etcd: one round trip per 256, not one
/// each), the history of the few a later commit changed.
fn read_many_at(
    tree: &dyn Engine,
    positions: &[(ArticleId, u32, Uuid)],
    at: u64,
) -> Result<Vec<Option<Annotation>>> {
    let queries: Vec<engine::PageQuery> = positions
        .iter()
        .map(|(article, start, id)| engine::PageQuery::key(&keys::position(article, *start, *id)))
        .collect();
    let pages = tree.pages(&queries)?;
    positions
        .iter()
        .zip(pages)
        .map(|((_, _, id), mut page)| {
            if let Some((_, v)) = page.pop() {
                let a = codec::decode_annotation(&v)?;
                if a.revision <= at {
                    return Ok(Some(a));
                }
            }
            // Moved, deleted or changed since `at`: the history has it.
            audit::state_at(tree, *id, at)
        })
        .collect()
}

/// Where the annotation `id` is stored: its article and start.
fn location(tree: &dyn Engine, id: Uuid) -> Result<Option<(ArticleId, u32)>> {
    match tree.get(&keys::location(id))? {
        Some(location) => parse_location(&location).map(Some),
        None => Ok(None),
    }
}

/// The article and start a location value names.
fn parse_location(location: &[u8]) -> Result<(ArticleId, u32)> {
    let start = keys::location_start(location).ok_or_else(|| Error::internal("corrupt location"))?;
    let article = std::str::from_utf8(&location[4..])
        .ok()
        .and_then(|s| ArticleId::parse(s).ok())
        .ok_or_else(|| Error::internal("corrupt location"))?;
    Ok((article, start))
}

/// The record at a position key, if any.
fn record(tree: &dyn Engine, article: &ArticleId, start: u32, id: Uuid) -> Result<Option<Annotation>> {
    match tree.get(&keys::position(article, start, id))? {
        Some(v) => Ok(Some(codec::decode_annotation(&v)?)),
        None => Ok(None),
    }
}

/// The stored annotation with this id, in whatever article.
fn read_annotation(tree: &dyn Engine, id: Uuid) -> Result<Option<Annotation>> {
    let Some((article, start)) = location(tree, id)? else {
        return Ok(None);
    };
    record(tree, &article, start, id)?
        .map(Some)
        .ok_or_else(|| Error::internal(format!("annotation {id} has a location but no record")))
}

/// Article revisions kept in memory besides the current ones.
const REVISION_CACHE: usize = 256;

/// One article revision from sled.
/// Has the committer drive every unfinished re-anchoring (see
/// [`reanchoring`]) this server does not drive yet: at open, the ones a
/// server left when it stopped; later, ones nobody drives. Each one's spans
/// are placed here first, off the committer. With `only`, just those whose
/// marks are still exactly as given. Whether it took any up.
fn drive_unfinished(shared: &Shared, only: Option<&[(ArticleId, reanchoring::Mark)]>) -> Result<bool> {
    let mut any = false;
    for (id, mark) in reanchoring::marks(&*shared.engine)? {
        let wanted = only.is_none_or(|only| only.iter().any(|(i, m)| *i == id && *m == mark));
        if shared.reanchoring.is_driving(&id) || !wanted {
            continue;
        }
        tracing::info!(article = %id, from = mark.from, to = mark.to, "taking up the unfinished re-anchoring of a correction");
        let revision = |r| {
            read_article_revision(&*shared.engine, &id, r)?.ok_or_else(|| {
                Error::internal(format!(
                    "the unfinished re-anchoring of {id} names revision {r}, which the store does not hold"
                ))
            })
        };
        let reanchor = crate::anchor::Reanchor::new(revision(mark.from)?, revision(mark.to)?);
        place_known(shared, &reanchor);
        let actor = Analyst::parse(&mark.actor)
            .unwrap_or_else(|_| Analyst::parse(SEEDS_AUTHOR).expect("a valid name"));
        shared.reanchoring.start(Arc::new(reanchor), actor);
        any = true;
    }
    Ok(any)
}

/// Places the spans of the article's annotations still on the correction's
/// old text, as the index knows them (no record is read).
fn place_known(shared: &Shared, reanchor: &crate::anchor::Reanchor) {
    let old = reanchor.old();
    let spans: Vec<crate::domain::Span> = shared
        .visible
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .article(&old.id)
        .map(|a| a.spans_at(old.revision).collect())
        .unwrap_or_default();
    for span in spans {
        reanchor.place(span);
    }
}

fn read_article_revision(tree: &dyn Engine, id: &ArticleId, revision: u32) -> Result<Option<Arc<Article>>> {
    match tree.get(&keys::article_revision(id, revision))? {
        Some(v) => {
            let record: codec::ArticleRevisionRecord = codec::decode(&v)?;
            Ok(Some(Arc::new(record.into_article(id.clone(), revision))))
        }
        None => Ok(None),
    }
}

/// The last revision of every article.
fn current_articles(tree: &dyn Engine) -> Result<Vec<Arc<Article>>> {
    let mut out: Vec<Arc<Article>> = Vec::new();
    // Keys sort by article, then revision: keep the last of each article.
    let mut last: Option<(ArticleId, u32, Vec<u8>)> = None;
    let mut finish = |last: Option<(ArticleId, u32, Vec<u8>)>| -> Result<()> {
        if let Some((id, rev, v)) = last {
            let record: codec::ArticleRevisionRecord = codec::decode(&v)?;
            out.push(Arc::new(record.into_article(id, rev)));
        }
        Ok(())
    };
    for item in tree.scan_prefix(&[keys::ARTICLE_REVISION]) {
        let (k, v) = item?;
        let (id, rev) = keys::parse_article_revision(&k)
            .ok_or_else(|| Error::internal("corrupt article revision key"))?;
        if last.as_ref().is_some_and(|(l, _, _)| *l != id) {
            finish(last.take())?;
        }
        last = Some((id, rev, v));
    }
    finish(last)?;
    Ok(out)
}

/// Rewrites format 1's articles (`a id` → text) as their revision 1.
fn migrate_articles(tree: &dyn Engine) -> Result<()> {
    let old: Vec<_> = tree.scan_prefix(&[keys::ARTICLE]).collect::<Result<_>>()?;
    for (k, v) in old {
        let id = std::str::from_utf8(&k[1..])
            .ok()
            .and_then(|s| ArticleId::parse(s).ok())
            .ok_or_else(|| Error::internal("corrupt article key"))?;
        let old: codec::ArticleRecord = codec::decode(&v)?;
        let article = Article::revision(
            id.clone(),
            String::new(),
            old.text,
            String::new(),
            1,
            SEEDS_AUTHOR.into(),
            0,
            0,
        );
        tree.write(vec![
            (
                keys::article_revision(&id, 1),
                Some(codec::encode(&codec::ArticleRevisionRecord::from_article(
                    &article, 0,
                ))),
            ),
            (k, None),
        ])?;
        tracing::info!(article = %id, "article stored as its revision 1");
    }
    Ok(())
}

/// The seed files `dir/*.txt`, by id (the file stem).
fn read_seeds(dir: &Path) -> Result<Vec<(ArticleId, String)>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::internal(format!("cannot read the seeds directory {}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let Some(id) = file
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| ArticleId::parse(s).ok())
        else {
            tracing::warn!(file = %file.display(), "skipping seed file: its name is not a valid article id");
            continue;
        };
        let text = match std::fs::read(&file).map(String::from_utf8) {
            Ok(Ok(text)) => text,
            Ok(Err(_)) => {
                tracing::warn!(file = %file.display(), "skipping seed file: not valid UTF-8");
                continue;
            }
            Err(e) => {
                return Err(Error::internal(format!(
                    "cannot read seed file {}: {e}",
                    file.display()
                )));
            }
        };
        out.push((id, text));
    }
    Ok(out)
}

/// Seeds that are new or changed since the store last saw them, as changes
/// by `seeds`: a new file creates its article, a changed one becomes its
/// next revision and re-anchors its annotations, each a revision of its own.
fn apply_seeds(shared: &Shared, seeds: Vec<(ArticleId, String)>) -> Result<()> {
    for (id, text) in seeds {
        let current = shared
            .visible
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .text(&id)
            .cloned();
        let now = committer::now_us();
        let mutation = match current {
            Some(c) if c.text == text => continue,
            Some(_) if shared.reanchoring.is_driving(&id) => {
                tracing::warn!(article = %id, "seed file changed while the last correction is still re-anchoring: applied at the next start");
                continue;
            }
            Some(c) => {
                let next = Arc::new(Article::revision(
                    id.clone(),
                    String::new(),
                    text,
                    c.source_url.clone(),
                    c.revision + 1,
                    SEEDS_AUTHOR.into(),
                    c.create_time_us,
                    now,
                ));
                tracing::info!(article = %id, revision = next.revision, "seed file changed: new article revision, annotations re-anchored");
                Mutation::PutArticle {
                    reanchor: Some(Arc::new(crate::anchor::Reanchor::new(c.clone(), next.clone()))),
                    base: Some(c.revision),
                    article: next,
                }
            }
            None => {
                tracing::info!(article = %id, "new seed file: article created");
                Mutation::PutArticle {
                    article: Arc::new(Article::revision(
                        id,
                        String::new(),
                        text,
                        String::new(),
                        1,
                        SEEDS_AUTHOR.into(),
                        now,
                        now,
                    )),
                    base: None,
                    reanchor: None,
                }
            }
        };
        let actor = Analyst::parse(SEEDS_AUTHOR).expect("a valid name");
        committer::apply_now(shared, mutation, actor)?;
    }
    Ok(())
}
