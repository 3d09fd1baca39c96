//! Corrections re-anchor their annotations in chunks.
//!
//! A correction of an article with N annotations rewrites N records. Done
//! in one revision, as it was, one correction of 20,000 annotations with
//! 10 KB notes held gigabytes and the single committer for seconds: every
//! other writer, of any article, waited for all of it (issue 21, item 4).
//!
//! So the correction's own revision holds the new text and the first chunk
//! of its annotations (all of them, for a correction of at most one chunk:
//! most corrections, which stay one revision as before). When more remain,
//! the same revision writes a [`Mark`] (`g article_id`, see [`super::keys`]):
//! from which article revision to which, and the last annotation id done.
//! The committer then adds one chunk of the next ids to each group it makes,
//! after the jobs callers queued, until a chunk finds none left and deletes
//! the mark. So a writer of another article waits for one chunk at most,
//! and the committer holds one chunk of records at a time.
//!
//! While a mark stands:
//! - each annotation names the article revision its span points into (the
//!   old one until its chunk is done), so every read is exact; the review
//!   counts those not moved yet apart (`moving_count`);
//! - a further correction, an adjudication and a sign-off of the article are
//!   refused (`ABORTED`, `REANCHORING_IN_PROGRESS`): they would judge a
//!   half-moved article (the service refuses them before they reach the
//!   committer, which checks again as it commits);
//! - annotation writes go on: a chunk re-reads each record and moves only
//!   those still at the old revision.
//!
//! The caller's `UpdateArticle` is answered once the last chunk is in
//! ([`super::Store::reanchored`]). A server that stops with a mark standing
//! finds it when it opens and finishes the work ([`marks`]); a server that
//! refuses a call for a mark it does not drive takes it up once it has stood
//! still for [`STALLED_AFTER`] (`Store::take_up_stalled_reanchorings`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use tokio::sync::oneshot;

use super::committer::{Applied, Job, Mutation};
use super::engine::Engine;
use super::{Shared, Store, Work, keys};
use crate::anchor::Reanchor;
use crate::domain::{Analyst, ArticleId};
use crate::error::{Error, Result};

/// How many annotations one chunk re-anchors at most, unless the engine's
/// limits or [`CHUNK_BYTES`] stop it sooner.
pub const CHUNK: usize = 256;

/// About how many bytes of records one chunk writes at most (its records
/// and their history records).
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// How long a mark this server does not drive must stand still before a
/// refusal it caused makes this server take it up
/// ([`super::Store::take_up_stalled_reanchorings`]; plus up to 1 s of
/// jitter). A live driver rewrites it with every chunk, one per group: tens
/// of milliseconds apart, unless its committer is held longer (a backup
/// being written), when the mark may be taken up while it still drives —
/// safe, as two drivers are, but wasted work until it ends.
pub const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// An unfinished re-anchoring, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The article revision the annotations are moved from.
    pub from: u32,
    /// The article revision they are moved to: the article's current one.
    pub to: u32,
    /// Every annotation id up to this one is done.
    pub after: Uuid,
    /// The last annotation id the article had when it was corrected: the
    /// ids after it (made since, on the new text: ids grow with time) need
    /// no moving, so the re-anchoring ends here however many are made.
    pub until: Uuid,
    /// Who made the correction: the history records of the chunks name them.
    pub actor: String,
}

const FORMAT: u8 = 1;

impl Mark {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(41 + self.actor.len());
        v.push(FORMAT);
        v.extend_from_slice(&self.from.to_be_bytes());
        v.extend_from_slice(&self.to.to_be_bytes());
        v.extend_from_slice(self.after.as_bytes());
        v.extend_from_slice(self.until.as_bytes());
        v.extend_from_slice(self.actor.as_bytes());
        v
    }

    pub fn decode(v: &[u8]) -> Result<Mark> {
        let bad = || Error::internal("a damaged re-anchoring mark");
        if v.len() < 41 || v[0] != FORMAT {
            return Err(bad());
        }
        Ok(Mark {
            from: u32::from_be_bytes(v[1..5].try_into().map_err(|_| bad())?),
            to: u32::from_be_bytes(v[5..9].try_into().map_err(|_| bad())?),
            after: Uuid::from_slice(&v[9..25]).map_err(|_| bad())?,
            until: Uuid::from_slice(&v[25..41]).map_err(|_| bad())?,
            actor: String::from_utf8(v[41..].to_vec()).map_err(|_| bad())?,
        })
    }
}

/// The mark of the article's re-anchoring, if one is unfinished.
pub fn mark(engine: &dyn Engine, article: &ArticleId) -> Result<Option<Mark>> {
    engine
        .get(&keys::reanchoring(article))?
        .map(|v| Mark::decode(&v))
        .transpose()
}

/// Every unfinished re-anchoring in the store.
pub fn marks(engine: &dyn Engine) -> Result<Vec<(ArticleId, Mark)>> {
    let mut out = Vec::new();
    for item in engine.scan_prefix(&[keys::REANCHORING]) {
        let (k, v) = item?;
        let id = keys::parse_reanchoring(&k).ok_or_else(|| Error::internal("a damaged re-anchoring key"))?;
        out.push((id, Mark::decode(&v)?));
    }
    Ok(out)
}

/// The refusal of what must wait for a re-anchoring to finish.
pub fn in_progress(article: &ArticleId, mark: &Mark) -> Error {
    Error::Aborted {
        reason: "REANCHORING_IN_PROGRESS",
        message: format!(
            "{}'s annotations are still being moved from revision {} to {} of its text: retry in a moment",
            article.name(),
            mark.from,
            mark.to
        ),
    }
}

/// One re-anchoring this server drives.
#[derive(Clone)]
pub struct Driving {
    pub reanchor: Arc<Reanchor>,
    pub actor: Analyst,
}

/// The re-anchorings this server drives, and who waits for them.
pub struct Pending {
    driving: Mutex<HashMap<ArticleId, Driving>>,
    /// Why a re-anchoring stopped before its end, for whoever waits for it.
    stopped: Mutex<HashMap<ArticleId, Error>>,
    /// Bumped whenever one finishes (or stops).
    finished: tokio::sync::watch::Sender<u64>,
    /// Whether this server is looking for stalled marks to take up.
    pub(super) looking: Arc<std::sync::atomic::AtomicBool>,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            driving: Mutex::new(HashMap::new()),
            stopped: Mutex::new(HashMap::new()),
            finished: tokio::sync::watch::channel(0).0,
            looking: Default::default(),
        }
    }
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ArticleId, Driving>> {
        self.driving.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn start(&self, reanchor: Arc<Reanchor>, actor: Analyst) {
        let id = reanchor.new_revision().id.clone();
        self.stopped.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        self.lock().insert(id, Driving { reanchor, actor });
    }

    /// Ends the re-anchoring `reanchor` of `article` (not a newer one that
    /// took its place); `Err`: it stopped before its end, and why.
    pub fn finish(&self, article: &ArticleId, reanchor: &Arc<Reanchor>, outcome: Result<()>) {
        let mut driving = self.lock();
        if !driving
            .get(article)
            .is_some_and(|d| Arc::ptr_eq(&d.reanchor, reanchor))
        {
            return;
        }
        driving.remove(article);
        drop(driving);
        if let Err(e) = outcome {
            self.stopped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(article.clone(), e);
        }
        self.finished.send_modify(|n| *n += 1);
    }

    pub fn driving(&self) -> Vec<(ArticleId, Driving)> {
        self.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn is_driving(&self, article: &ArticleId) -> bool {
        self.lock().contains_key(article)
    }

    /// Returns once this server no longer drives a re-anchoring of
    /// `article`: `Err` if it stopped before its end.
    pub async fn wait(&self, article: &ArticleId) -> Result<()> {
        let mut rx = self.finished.subscribe();
        while self.is_driving(article) {
            if rx.changed().await.is_err() {
                break;
            }
        }
        match self
            .stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(article)
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Store {
    /// Makes sure someone drives the re-anchorings that refused a write
    /// here: those this server does not drive and whose mark has not moved
    /// for [`STALLED_AFTER`] are taken up. Such a mark is
    /// another server's that died (or is cut off from the store), or this
    /// server's own whose commit answer was lost. A mark that moves has a
    /// live driver, which a second one would only collide with (on etcd one
    /// of two colliding commits is staged again, every chunk). One look at a
    /// time; returns at once (and does nothing outside a tokio runtime).
    pub fn take_up_stalled_reanchorings(&self) {
        use std::sync::atomic::{AtomicBool, Ordering};
        /// Clears the flag however the look ends, a runtime shut down in
        /// the middle of it included.
        struct Looking(Arc<AtomicBool>);
        impl Drop for Looking {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let looking = self.inner.shared.reanchoring.looking.clone();
        if looking.swap(true, Ordering::AcqRel) {
            return;
        }
        let looking = Looking(looking);
        // Weak: a look holds no store open (one closed meanwhile closes at
        // once, and its look ends).
        let weak = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            let _looking = looking;
            // The marks this server does not drive; `None` once it closed.
            let unowned = |weak: std::sync::Weak<super::Inner>| async move {
                let Some(inner) = weak.upgrade() else {
                    return Ok(None);
                };
                let store = Store { inner };
                tokio::task::spawn_blocking(move || {
                    let shared = &store.inner.shared;
                    let marks = marks(&*shared.engine)?;
                    Ok(Some(
                        marks
                            .into_iter()
                            .filter(|(id, _)| !shared.reanchoring.is_driving(id))
                            .collect::<Vec<_>>(),
                    ))
                })
                .await
                .map_err(|e| Error::internal(format!("reading re-anchoring marks: {e}")))?
            };
            let looked: Result<()> = async {
                let Some(before) = unowned(weak.clone()).await? else {
                    return Ok(());
                };
                if before.is_empty() {
                    return Ok(());
                }
                // Of servers that look at once, the first to take a mark up
                // moves it before the others look again, and they leave it.
                let jitter = std::time::Duration::from_millis((uuid::Uuid::new_v4().as_u128() % 1000) as u64);
                tokio::time::sleep(STALLED_AFTER + jitter).await;
                let Some(now) = unowned(weak.clone()).await? else {
                    return Ok(());
                };
                let stalled: Vec<_> = now.into_iter().filter(|m| before.contains(m)).collect();
                if stalled.is_empty() {
                    tracing::info!(
                        count = before.len(),
                        "the re-anchorings another server drives moved on: left to it"
                    );
                    return Ok(());
                }
                let Some(inner) = weak.upgrade() else {
                    return Ok(());
                };
                let store = Store { inner };
                tokio::task::spawn_blocking(move || store.adopt_reanchorings(&stalled))
                    .await
                    .map_err(|e| Error::internal(format!("taking up re-anchorings: {e}")))?
            }
            .await;
            if let Err(e) = looked {
                tracing::warn!(error = %e, "taking up unfinished re-anchorings failed");
            }
        });
    }

    /// Drives the unfinished re-anchorings in `stalled` this server does not
    /// drive, if their marks are still as given. Blocking (it diffs
    /// revisions).
    fn adopt_reanchorings(&self, stalled: &[(ArticleId, Mark)]) -> Result<()> {
        if super::drive_unfinished(&self.inner.shared, Some(stalled))?
            && let Ok(queue) = self.queue()
        {
            // Wakes the committer, which may be waiting for work.
            let _ = queue.try_send(Work::Follow);
        }
        Ok(())
    }
}

/// A chunk in a group: its answer, and the re-anchoring it belongs to.
pub(super) type Chunk = (oneshot::Receiver<Result<Applied>>, Arc<Reanchor>);

/// A job for the next chunk of each re-anchoring this server drives that
/// has none in a group yet.
pub(super) fn chunk_jobs(shared: &Shared, inflight: &mut HashMap<ArticleId, Chunk>) -> Vec<Job> {
    let mut jobs = Vec::new();
    for (article, d) in shared.reanchoring.driving() {
        if inflight.contains_key(&article) {
            continue;
        }
        // Tests stop here to leave a re-anchoring unfinished.
        fail::fail_point!("reanchor::chunk", |_| Vec::new());
        let (reply, rx) = oneshot::channel();
        inflight.insert(article, (rx, d.reanchor.clone()));
        jobs.push(Job {
            mutations: vec![Mutation::Reanchor { reanchor: d.reanchor }],
            actor: d.actor,
            request: None,
            validate_only: false,
            children: None,
            reply,
        });
    }
    jobs
}

/// Takes the answers of the chunks committed: a chunk that found nothing
/// left to do finishes its re-anchoring. Whether one could not reach the
/// store (it is tried again).
pub(super) fn chunks_done(shared: &Shared, inflight: &mut HashMap<ArticleId, Chunk>) -> bool {
    use tokio::sync::oneshot::error::TryRecvError;
    let mut unreachable = false;
    inflight.retain(|article, (rx, reanchor)| match rx.try_recv() {
        Ok(Ok(applied)) => {
            if applied.revision == 0 {
                tracing::info!(article = %article, "re-anchoring finished");
                shared.reanchoring.finish(article, reanchor, Ok(()));
            }
            false
        }
        Ok(Err(e @ (Error::StoreUnavailable { .. } | Error::Unavailable))) => {
            tracing::warn!(article = %article, error = %e, "a chunk of a re-anchoring was not written: trying again");
            unreachable = true;
            false
        }
        Ok(Err(e)) => {
            tracing::error!(
                article = %article,
                error = %e,
                "the re-anchoring of a correction stopped: its annotations stay at the article's previous revision \
                 until the server starts again"
            );
            let why = match e {
                Error::StoreFailed => Error::StoreFailed,
                e => Error::internal(format!(
                    "the correction of {} landed, but moving its annotations stopped ({e}): the rest move when \
                     the server starts again",
                    article.name()
                )),
            };
            shared.reanchoring.finish(article, reanchor, Err(why));
            false
        }
        // In the next group (it did not fit this one's limits).
        Err(TryRecvError::Empty) => true,
        Err(TryRecvError::Closed) => false,
    });
    unreachable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_reads_back_as_written() {
        let m = Mark {
            from: 3,
            to: 4,
            after: Uuid::from_u128(0x1234),
            until: Uuid::from_u128(0x5678),
            actor: "조태열".into(),
        };
        assert_eq!(Mark::decode(&m.encode()).unwrap(), m);
        assert!(Mark::decode(&m.encode()[..20]).is_err());
    }
}
