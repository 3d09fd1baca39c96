//! `WatchAnnotations`: one task per stream delivers every matching change in
//! revision order, exactly once.
//!
//! The task first replays the durable changelog from `start_revision` up to
//! the head, then follows the store's live broadcast. It subscribes to the
//! broadcast *before* it reads the head, so every revision is either in the
//! replay or in the broadcast (or both: revisions it already delivered are
//! skipped). Writers never wait for watchers: the broadcast is a bounded ring,
//! and a watcher that falls behind it (`Lagged`, or a gap) goes back to the
//! changelog on disk. Each stream's outgoing queue is bounded too, so a client
//! that reads slowly costs a fixed amount of memory, not a growing backlog.
//! Progress messages go through the same queue as events, so a progress
//! revision never overtakes an event.
//!
//! Memory is bounded in bytes, not messages: the live ring holds a change
//! whole only if it is small ([`crate::store::LIVE_CHANGE_BYTES`]; a larger one is read
//! from disk by each watcher), and each stream's queue holds at most
//! [`STREAM_BUDGET`] bytes of encoded messages (one larger message alone), so
//! a stalled client costs a fixed amount whatever the writes. One analyst
//! holds at most [`WatchOptions::max_per_analyst`] streams, and a stream ends
//! (UNAUTHENTICATED) when the tokens are reloaded without its token.

pub mod reviews;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tonic::Status;

use crate::auth::{TokenHash, Tokens};
use crate::convert;
use crate::domain::{Analyst, Annotation, Article, ArticleId, Caller, Change, EventKind, Role, WatchFilter};
use crate::error::Error;
use crate::pb;
use crate::pb::watch_annotations_response::Kind;
use crate::store::{ChangesRead, Live, Store};

/// Messages queued for one stream before the task waits for the client.
const STREAM_QUEUE: usize = 64;
/// Bytes of encoded messages queued for one stream before the task waits
/// for the client; a larger message waits until the queue is empty.
pub const STREAM_BUDGET: usize = 1024 * 1024;
/// The events of one revision go out in messages of at most about this many
/// bytes (a client's default limit is 4 MiB).
pub const MAX_EVENTS_MESSAGE: usize = 1024 * 1024;
/// Changes read from the changelog at a time while catching up.
const CATCH_UP_CHUNK: usize = 512;

/// Watch settings.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// An idle stream gets a progress message this often.
    pub progress_interval: Duration,
    /// More concurrent streams than this are refused (RESOURCE_EXHAUSTED).
    pub max_watchers: usize,
    /// More concurrent streams of one analyst than this are refused, so one
    /// token cannot take every slot.
    pub max_per_analyst: usize,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            progress_interval: Duration::from_secs(5),
            max_watchers: 10_000,
            max_per_analyst: 1_000,
        }
    }
}

/// Counts live watch streams; shared with whoever started the server.
#[derive(Debug)]
pub struct WatchGauge {
    live: watch::Sender<usize>,
    /// Times a watcher fell behind the live ring and went back to the
    /// changelog on disk.
    fell_behind: AtomicU64,
    /// Streams open per analyst.
    per_analyst: Mutex<HashMap<Analyst, usize>>,
    /// Bytes of messages queued for clients, over all streams, and the most
    /// there ever were.
    queued: AtomicUsize,
    peak_queued: AtomicUsize,
}

impl Default for WatchGauge {
    fn default() -> Self {
        Self {
            live: watch::channel(0).0,
            fell_behind: AtomicU64::new(0),
            per_analyst: Mutex::default(),
            queued: AtomicUsize::new(0),
            peak_queued: AtomicUsize::new(0),
        }
    }
}

impl WatchGauge {
    /// Watch streams open right now.
    pub fn live(&self) -> usize {
        *self.live.borrow()
    }

    /// Times a watcher fell behind the live ring and caught up from disk.
    pub fn fell_behind(&self) -> u64 {
        self.fell_behind.load(Ordering::Relaxed)
    }

    /// Follows the count as it changes.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.live.subscribe()
    }

    /// The most bytes of messages ever queued for clients at once, over all
    /// streams.
    pub fn peak_queued_bytes(&self) -> usize {
        self.peak_queued.load(Ordering::Relaxed)
    }

    /// Takes a slot for `analyst`; refused if `options` allow no more.
    fn enter(self: &Arc<Self>, analyst: &Analyst, options: &WatchOptions) -> Result<Slot, Error> {
        let mut per_analyst = self.per_analyst.lock().unwrap_or_else(|e| e.into_inner());
        let mine = per_analyst.get(analyst).copied().unwrap_or(0);
        if mine >= options.max_per_analyst {
            return Err(Error::ResourceExhausted {
                reason: "TOO_MANY_WATCHERS_FOR_ANALYST",
                message: format!(
                    "{analyst} already holds {mine} watch streams, the most one analyst may: close one and retry"
                ),
            });
        }
        let mut taken = false;
        self.live.send_if_modified(|n| {
            taken = *n < options.max_watchers;
            if taken {
                *n += 1;
            }
            taken
        });
        if !taken {
            return Err(Error::ResourceExhausted {
                reason: "TOO_MANY_WATCHERS",
                message: format!(
                    "the server already serves {} watch streams: close one and retry",
                    options.max_watchers
                ),
            });
        }
        *per_analyst.entry(analyst.clone()).or_default() += 1;
        Ok(Slot(self.clone(), analyst.clone()))
    }
}

/// A live stream's place in the gauge, given back when the task ends.
struct Slot(Arc<WatchGauge>, Analyst);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_analyst = self.0.per_analyst.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_analyst.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                per_analyst.remove(&self.1);
            }
        }
        drop(per_analyst);
        self.0.live.send_modify(|n| *n -= 1);
    }
}

pub type Outgoing = Result<pb::WatchAnnotationsResponse, Status>;

/// A message and its share of the stream's byte budget, given back once
/// the message is handed to the transport.
struct Queued {
    msg: Outgoing,
    _permit: Option<Budget>,
}

/// Bytes taken from a stream's budget and from the gauge's count.
struct Budget {
    _permit: OwnedSemaphorePermit,
    bytes: usize,
    gauge: Arc<WatchGauge>,
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.gauge.queued.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The body of a `WatchAnnotations` response.
pub struct Body {
    rx: mpsc::Receiver<Queued>,
}

impl tokio_stream::Stream for Body {
    type Item = Outgoing;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Outgoing>> {
        self.rx.poll_recv(cx).map(|q| q.map(|q| q.msg))
    }
}

/// Who a stream serves: checked again whenever the tokens are reloaded.
pub struct Identity {
    pub tokens: Arc<Tokens>,
    pub token: TokenHash,
    pub caller: Caller,
}

/// Starts a watch; the returned body is the stream's.
pub fn start(
    store: Store,
    filter: WatchFilter,
    start_revision: Option<u64>,
    options: &WatchOptions,
    gauge: &Arc<WatchGauge>,
    shutdown: watch::Receiver<bool>,
    identity: Identity,
) -> Result<Body, Error> {
    let slot = gauge.enter(&identity.caller.analyst, options)?;
    // Subscribe before anything reads the head: see the module docs.
    let live = store.subscribe();
    let head = store.revision();
    if let Some(start) = start_revision {
        let oldest = store.oldest_revision();
        if start < oldest {
            return Err(compacted(start, oldest));
        }
    }
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    let reloads = identity.tokens.reloads();
    let watcher = Watcher {
        store,
        filter,
        next: start_revision.unwrap_or(head + 1),
        tx,
        budget: Arc::new(Semaphore::new(STREAM_BUDGET)),
        shutdown,
        reloads,
        identity,
        progress_interval: options.progress_interval,
        slot,
    };
    tokio::spawn(watcher.run(live, head));
    Ok(Body { rx })
}

fn compacted(start: u64, oldest: u64) -> Error {
    Error::Compacted {
        message: format!(
            "revision {start} was compacted: the oldest kept is {oldest}; list again and watch from the list's revision + 1"
        ),
        oldest,
    }
}

struct Watcher {
    store: Store,
    filter: WatchFilter,
    /// The next revision to deliver: everything before it is delivered.
    next: u64,
    tx: mpsc::Sender<Queued>,
    /// [`STREAM_BUDGET`] bytes, taken by queued messages.
    budget: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
    /// Changes when the tokens are reloaded: the stream's token is checked
    /// again.
    reloads: watch::Receiver<u64>,
    identity: Identity,
    progress_interval: Duration,
    /// Last, so it is given back after `store` is dropped: a server that
    /// saw the gauge reach 0 holds no store in a watch task.
    slot: Slot,
}

/// Why a watch task stops early.
enum Stop {
    /// The client went away, or the store is closing.
    Gone,
    /// End the stream with this status.
    Fail(Status),
}

impl Watcher {
    async fn run(mut self, mut live: broadcast::Receiver<Live>, head: u64) {
        let created = message(Kind::Created, head);
        let result = match self.send(Ok(created)).await {
            Ok(()) => self.follow(&mut live).await,
            Err(stop) => Err(stop),
        };
        if let Err(Stop::Fail(status)) = result {
            // Bounded: a client that stopped reading does not hold shutdown.
            let last = Queued {
                msg: Err(status),
                _permit: None,
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), self.tx.send(last)).await;
        }
    }

    /// Catches up from the changelog, then follows the live changes, going
    /// back to the changelog whenever it falls behind.
    async fn follow(&mut self, live: &mut broadcast::Receiver<Live>) -> Result<(), Stop> {
        loop {
            self.catch_up().await?;
            self.follow_live(live).await?;
        }
    }

    async fn catch_up(&mut self) -> Result<(), Stop> {
        self.catch_up_to(u64::MAX, CATCH_UP_CHUNK).await
    }

    /// Delivers from the changelog up to `through` (or the head), `chunk`
    /// changes per read.
    async fn catch_up_to(&mut self, through: u64, chunk: usize) -> Result<(), Stop> {
        while self.next <= self.store.revision().min(through) {
            let store = self.store.clone();
            let from = self.next;
            let limit = chunk.min((through - from).saturating_add(1) as usize);
            let read = tokio::task::spawn_blocking(move || store.changes_since(from, limit))
                .await
                .map_err(|e| Stop::Fail(Error::internal(e).into()))?
                .map_err(|e| Stop::Fail(e.into()))?;
            match read {
                ChangesRead::Compacted { oldest } => {
                    return Err(Stop::Fail(compacted(self.next, oldest).into()));
                }
                ChangesRead::Changes(changes) if changes.is_empty() => return Ok(()),
                ChangesRead::Changes(changes) => {
                    for change in changes {
                        self.deliver(&change).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Returns when the watcher fell behind the live buffer.
    async fn follow_live(&mut self, live: &mut broadcast::Receiver<Live>) -> Result<(), Stop> {
        let mut progress = tokio::time::interval_at(
            tokio::time::Instant::now() + self.progress_interval,
            self.progress_interval,
        );
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|stopping| *stopping) => return Err(shutting_down()),
                () = self.tx.closed() => return Err(Stop::Gone),
                Ok(()) = self.reloads.changed() => {
                    recheck(&self.identity)?;
                    continue;
                }
                received = live.recv() => match received {
                    Ok(change) if change.revision() < self.next => continue,
                    Ok(change) if change.revision() == self.next => Some(change),
                    // A gap: the missed changes are in the changelog.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.slot.0.fell_behind.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(Stop::Gone),
                },
                _ = progress.tick() => None,
            };
            match wake {
                Some(Live::Change(change)) => {
                    if self.deliver(&change).await? {
                        progress.reset();
                    }
                }
                Some(Live::OnDisk { revision }) => {
                    // Too large for the ring: read it from the changelog.
                    self.catch_up_to(revision, 1).await?;
                    progress.reset();
                }
                None => {
                    // Everything through the head is delivered, or was
                    // before `start_revision`; never a revision not reached.
                    let through = (self.next - 1).min(self.store.revision());
                    self.send(Ok(message(Kind::Progress, through))).await?
                }
            }
        }
    }

    /// Sends the events of `change` that match; true if a message was sent.
    async fn deliver(&mut self, change: &Change) -> Result<bool, Stop> {
        debug_assert_eq!(change.revision, self.next);
        self.next = change.revision + 1;
        let enc = self.filter.encoding;
        // The revision a state's span points into: read once per revision
        // of the article (old ones from the store's cache, or sled, briefly).
        let mut articles: std::collections::HashMap<(ArticleId, u32), Option<Arc<Article>>> =
            std::collections::HashMap::new();
        let mut to_pb = |a: &Annotation| {
            let article = articles
                .entry((a.name.article.clone(), a.article_revision))
                .or_insert_with(|| {
                    let found = self.store.article_revision(&a.name.article, a.article_revision);
                    if !matches!(found, Ok(Some(_))) {
                        tracing::error!(annotation = %a.name, revision = a.article_revision, "an event's article revision cannot be read: the event is not delivered");
                    }
                    found.ok().flatten()
                })
                .clone()?;
            Some(convert::annotation_to_pb(a, &article, enc))
        };
        let events: Vec<pb::AnnotationEvent> = change
            .events
            .iter()
            .filter(|e| self.filter.matches(e))
            .filter_map(|e| {
                Some(pb::AnnotationEvent {
                    r#type: match e.kind() {
                        EventKind::Created => pb::annotation_event::Type::Created,
                        EventKind::Updated => pb::annotation_event::Type::Updated,
                        EventKind::Deleted => pb::annotation_event::Type::Deleted,
                    } as i32,
                    annotation: Some(to_pb(e.annotation())?),
                    previous: match &e.before {
                        Some(b) => Some(to_pb(b)?),
                        None => None,
                    },
                })
            })
            .collect();
        let article_events: Vec<pb::ArticleEvent> = change
            .articles
            .iter()
            .filter(|e| self.filter.matches_article(e))
            .map(|e| pb::ArticleEvent {
                r#type: if e.created {
                    pb::article_event::Type::Created
                } else {
                    pb::article_event::Type::Updated
                } as i32,
                article: Some(convert::article_to_pb(&e.article, false, enc, false)),
            })
            .collect();
        let review_events: Vec<pb::ReviewEvent> = change
            .reviews
            .iter()
            .filter(|e| self.filter.article.as_ref().is_none_or(|id| *id == e.article))
            .filter_map(|e| {
                let read = |id: &ArticleId, rev: u32| {
                    self.store
                        .article_revision(id, rev)?
                        .ok_or_else(|| Error::internal(format!("missing revision {rev} of {id}")))
                };
                convert::review_event_to_pb(e, read, enc)
                    .inspect_err(|err| tracing::error!(error = %err, "a review event cannot be converted: not delivered"))
                    .ok()
            })
            .collect();
        if events.is_empty() && article_events.is_empty() && review_events.is_empty() {
            return Ok(false);
        }
        // One message per revision, unless that would be over the cap.
        let mut parts: Vec<Vec<pb::AnnotationEvent>> = vec![Vec::new()];
        let mut size = 0;
        for e in events {
            let n = prost::Message::encoded_len(&e) + 8;
            if size + n > MAX_EVENTS_MESSAGE && !parts.last().is_some_and(Vec::is_empty) {
                parts.push(Vec::new());
                size = 0;
            }
            size += n;
            parts.last_mut().expect("never empty").push(e);
        }
        let count = parts.len();
        let mut article_events = Some(article_events);
        let mut review_events = Some(review_events);
        for (i, part) in parts.into_iter().enumerate() {
            let mut msg = message(Kind::Events, change.revision);
            msg.events = part;
            msg.article_events = article_events.take().unwrap_or_default();
            msg.review_events = review_events.take().unwrap_or_default();
            msg.commit_time = Some(convert::timestamp(change.commit_time_us));
            msg.more = i + 1 < count;
            self.send(Ok(msg)).await?;
        }
        Ok(true)
    }

    /// Queues a message; waits while the client is slow (for a slot and for
    /// its bytes in the budget), but not past shutdown or a revoked token.
    async fn send(&mut self, msg: Outgoing) -> Result<(), Stop> {
        let bytes = match &msg {
            Ok(m) => prost::Message::encoded_len(m).clamp(1, STREAM_BUDGET),
            Err(_) => 1,
        };
        let gauge = self.slot.0.clone();
        let budget = self.budget.clone();
        let tx = self.tx.clone();
        let queue = async move {
            let permit = budget
                .acquire_many_owned(bytes as u32)
                .await
                .map_err(|_| Stop::Gone)?;
            let queued = gauge.queued.fetch_add(bytes, Ordering::Relaxed) + bytes;
            gauge.peak_queued.fetch_max(queued, Ordering::Relaxed);
            let item = Queued {
                msg,
                _permit: Some(Budget {
                    _permit: permit,
                    bytes,
                    gauge: gauge.clone(),
                }),
            };
            tx.send(item).await.map_err(|_| Stop::Gone)
        };
        tokio::pin!(queue);
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|stopping| *stopping) => return Err(shutting_down()),
                // A client gone while its budget is full: its queued messages
                // (and their budget) live as long as this sender, so wait no
                // more.
                () = self.tx.closed() => return Err(Stop::Gone),
                Ok(()) = self.reloads.changed() => recheck(&self.identity)?,
                sent = &mut queue => return sent,
            }
        }
    }
}

/// Ends the stream if its token was revoked or its role lost the right.
fn recheck(id: &Identity) -> Result<(), Stop> {
    id.tokens
        .recheck(&id.token, &id.caller, Role::Reader, "watch annotations")
        .map_err(|e| {
            tracing::info!(analyst = %id.caller.analyst, "ending a watch stream: {e}");
            Stop::Fail(e.into())
        })
}

fn shutting_down() -> Stop {
    Stop::Fail(Error::Unavailable.into())
}

fn message(kind: Kind, revision: u64) -> pb::WatchAnnotationsResponse {
    pb::WatchAnnotationsResponse {
        kind: kind as i32,
        revision,
        ..Default::default()
    }
}
