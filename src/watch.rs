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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tonic::Status;

use crate::convert;
use crate::domain::{Change, EventKind, WatchFilter};
use crate::error::Error;
use crate::pb;
use crate::pb::watch_annotations_response::Kind;
use crate::store::{ChangesRead, Store};

/// Messages queued for one stream before the task waits for the client.
const STREAM_QUEUE: usize = 64;
/// Changes read from the changelog at a time while catching up.
const CATCH_UP_CHUNK: usize = 512;

/// Watch settings.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// An idle stream gets a progress message this often.
    pub progress_interval: Duration,
    /// More concurrent streams than this are refused (RESOURCE_EXHAUSTED).
    pub max_watchers: usize,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            progress_interval: Duration::from_secs(5),
            max_watchers: 10_000,
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
}

impl Default for WatchGauge {
    fn default() -> Self {
        Self {
            live: watch::channel(0).0,
            fell_behind: AtomicU64::new(0),
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

    /// Takes a slot, or `None` if `max` are taken.
    fn enter(self: &Arc<Self>, max: usize) -> Option<Slot> {
        let mut taken = false;
        self.live.send_if_modified(|n| {
            taken = *n < max;
            if taken {
                *n += 1;
            }
            taken
        });
        taken.then(|| Slot(self.clone()))
    }
}

/// A live stream's place in the gauge, given back when the task ends.
struct Slot(Arc<WatchGauge>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.live.send_modify(|n| *n -= 1);
    }
}

pub type Outgoing = Result<pb::WatchAnnotationsResponse, Status>;

/// Starts a watch; the returned receiver is the stream's body.
pub fn start(
    store: Store,
    filter: WatchFilter,
    start_revision: Option<u64>,
    options: &WatchOptions,
    gauge: &Arc<WatchGauge>,
    shutdown: watch::Receiver<bool>,
) -> Result<mpsc::Receiver<Outgoing>, Error> {
    let slot = gauge
        .enter(options.max_watchers)
        .ok_or_else(|| Error::ResourceExhausted {
            reason: "TOO_MANY_WATCHERS",
            message: format!(
                "the server already serves {} watch streams: close one and retry",
                options.max_watchers
            ),
        })?;
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
    let watcher = Watcher {
        store,
        filter,
        next: start_revision.unwrap_or(head + 1),
        tx,
        shutdown,
        progress_interval: options.progress_interval,
        slot,
    };
    tokio::spawn(watcher.run(live, head));
    Ok(rx)
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
    tx: mpsc::Sender<Outgoing>,
    shutdown: watch::Receiver<bool>,
    progress_interval: Duration,
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
    async fn run(mut self, mut live: broadcast::Receiver<Arc<Change>>, head: u64) {
        let created = message(Kind::Created, head);
        let result = match self.send(Ok(created)).await {
            Ok(()) => self.follow(&mut live).await,
            Err(stop) => Err(stop),
        };
        if let Err(Stop::Fail(status)) = result {
            // Bounded: a client that stopped reading does not hold shutdown.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.tx.send(Err(status))).await;
        }
    }

    /// Catches up from the changelog, then follows the live changes, going
    /// back to the changelog whenever it falls behind.
    async fn follow(&mut self, live: &mut broadcast::Receiver<Arc<Change>>) -> Result<(), Stop> {
        loop {
            self.catch_up().await?;
            self.follow_live(live).await?;
        }
    }

    async fn catch_up(&mut self) -> Result<(), Stop> {
        while self.next <= self.store.revision() {
            let store = self.store.clone();
            let from = self.next;
            let read = tokio::task::spawn_blocking(move || store.changes_since(from, CATCH_UP_CHUNK))
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
    async fn follow_live(&mut self, live: &mut broadcast::Receiver<Arc<Change>>) -> Result<(), Stop> {
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
                received = live.recv() => match received {
                    Ok(change) if change.revision < self.next => continue,
                    Ok(change) if change.revision == self.next => Some(change),
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
                Some(change) => {
                    if self.deliver(&change).await? {
                        progress.reset();
                    }
                }
                None => self.send(Ok(message(Kind::Progress, self.next - 1))).await?,
            }
        }
    }

    /// Sends the events of `change` that match; true if a message was sent.
    async fn deliver(&mut self, change: &Change) -> Result<bool, Stop> {
        debug_assert_eq!(change.revision, self.next);
        self.next = change.revision + 1;
        let events: Vec<pb::AnnotationEvent> = change
            .events
            .iter()
            .filter(|e| self.filter.matches(e))
            .filter_map(|e| {
                let article = self.store.article(&e.annotation().name.article)?;
                let to_pb = |a: &crate::domain::Annotation| convert::annotation_to_pb(a, article);
                Some(pb::AnnotationEvent {
                    r#type: match e.kind() {
                        EventKind::Created => pb::annotation_event::Type::Created,
                        EventKind::Updated => pb::annotation_event::Type::Updated,
                        EventKind::Deleted => pb::annotation_event::Type::Deleted,
                    } as i32,
                    annotation: Some(to_pb(e.annotation())),
                    previous: e.before.as_ref().map(to_pb),
                })
            })
            .collect();
        if events.is_empty() {
            return Ok(false);
        }
        let mut msg = message(Kind::Events, change.revision);
        msg.events = events;
        msg.commit_time = Some(convert::timestamp(change.commit_time_us));
        self.send(Ok(msg)).await?;
        Ok(true)
    }

    /// Queues a message; waits while the client is slow, but not past
    /// shutdown.
    async fn send(&mut self, msg: Outgoing) -> Result<(), Stop> {
        tokio::select! {
            biased;
            _ = self.shutdown.wait_for(|stopping| *stopping) => Err(shutting_down()),
            sent = self.tx.send(msg) => sent.map_err(|_| Stop::Gone),
        }
    }
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
