//! `WatchArticleReviews`: one task per stream keeps a dashboard's reviews
//! current without polling.
//!
//! The task subscribes to the store's live changes, sends every matching
//! article's review (the initial listing), then, whenever changes commit,
//! the review of each article they touched. Reviews are states, not events:
//! while the client is slow, changes pile up in the broadcast ring and are
//! coalesced into one review per article; a task that falls behind the ring
//! (or meets a change too large for it) re-sends every matching review. The
//! stream's queue holds a few messages of at most [`super::MAX_EVENTS_MESSAGE`]
//! bytes, so a stalled client costs a fixed amount. Like `WatchAnnotations`
//! it counts against the watch limits and ends when its token is revoked.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tonic::Status;

use super::{Identity, Slot, Stop, WatchGauge, WatchOptions, recheck, shutting_down};
use crate::convert;
use crate::domain::{ArticleId, OffsetEncoding, ReviewState};
use crate::error::Error;
use crate::pb;
use crate::store::{Live, Store};

/// Messages queued for one stream.
const QUEUE: usize = 4;
/// Contested spans a streamed review carries, as in `ListArticleReviews`.
const STREAMED_CONTESTED_SPANS: usize = 10;

/// What a stream wants.
pub struct Options {
    /// One article, or every article when `None`.
    pub article: Option<ArticleId>,
    /// Only reviews in this state (and, once more, those leaving it).
    pub state: Option<ReviewState>,
    pub encoding: OffsetEncoding,
    /// The server's response limit: no review is cut to less than a quarter.
    pub max_response: usize,
}

type Outgoing = Result<pb::WatchArticleReviewsResponse, Status>;

/// The body of a `WatchArticleReviews` response.
pub struct Body {
    rx: mpsc::Receiver<Outgoing>,
}

impl tokio_stream::Stream for Body {
    type Item = Outgoing;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Outgoing>> {
        self.rx.poll_recv(cx)
    }
}

pub fn start(
    store: Store,
    options: Options,
    watch_options: &WatchOptions,
    gauge: &Arc<WatchGauge>,
    shutdown: watch::Receiver<bool>,
    identity: Identity,
) -> Result<Body, Error> {
    let slot = gauge.enter(&identity.caller.analyst, watch_options)?;
    let live = store.subscribe();
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = Task {
        store,
        options,
        tx,
        shutdown,
        reloads: identity.tokens.reloads(),
        identity,
        shown: BTreeSet::new(),
        _slot: slot,
    };
    tokio::spawn(task.run(live));
    Ok(Body { rx })
}

struct Task {
    store: Store,
    options: Options,
    tx: mpsc::Sender<Outgoing>,
    shutdown: watch::Receiver<bool>,
    reloads: watch::Receiver<u64>,
    identity: Identity,
    /// With a state filter: the articles last sent in that state, so one
    /// leaving it is sent once more.
    shown: BTreeSet<ArticleId>,
    /// Last: given back after `store` is dropped.
    _slot: Slot,
}

impl Task {
    async fn run(mut self, mut live: broadcast::Receiver<Live>) {
        let result = self.follow(&mut live).await;
        if let Err(Stop::Fail(status)) = result {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.tx.send(Err(status))).await;
        }
    }

    async fn follow(&mut self, live: &mut broadcast::Receiver<Live>) -> Result<(), Stop> {
        let all = self.articles();
        self.send_reviews(all, true).await?;
        loop {
            let received = tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|stopping| *stopping) => return Err(shutting_down()),
                () = self.tx.closed() => return Err(Stop::Gone),
                Ok(()) = self.reloads.changed() => {
                    recheck(&self.identity)?;
                    continue;
                }
                received = live.recv() => received,
            };
            // Everything committed meanwhile, as one set of articles.
            let mut touched = BTreeSet::new();
            let mut everything = false;
            let mut next = Some(received);
            while let Some(r) = next {
                match r {
                    Ok(Live::Change(change)) => {
                        touched.extend(change.events.iter().map(|e| e.annotation().name.article.clone()));
                        touched.extend(change.articles.iter().map(|e| e.article.id.clone()));
                        touched.extend(change.reviews.iter().map(|e| e.article.clone()));
                    }
                    // Too large for the ring, or missed: send them all.
                    Ok(Live::OnDisk { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        everything = true
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(Stop::Gone),
                }
                next = match live.try_recv() {
                    Ok(l) => Some(Ok(l)),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        Some(Err(broadcast::error::RecvError::Lagged(n)))
                    }
                    Err(_) => None,
                };
            }
            let ids = if everything {
                self.articles()
            } else {
                touched
                    .into_iter()
                    .filter(|id| self.options.article.as_ref().is_none_or(|a| a == id))
                    .collect()
            };
            if !ids.is_empty() {
                self.send_reviews(ids, false).await?;
            }
        }
    }

    /// Every article the stream follows.
    fn articles(&self) -> Vec<ArticleId> {
        match &self.options.article {
            Some(id) => vec![id.clone()],
            None => self.store.articles().iter().map(|a| a.id.clone()).collect(),
        }
    }

    /// Sends the reviews of `ids` that match, in messages under the cap; an
    /// initial listing always sends at least one message.
    async fn send_reviews(&mut self, ids: Vec<ArticleId>, initial: bool) -> Result<(), Stop> {
        let store = self.store.clone();
        let reviews = tokio::task::spawn_blocking(move || {
            ids.iter()
                .filter_map(|id| match store.review(id) {
                    Ok(r) => Some(Ok(r)),
                    // Not (yet) visible: nothing to send.
                    Err(Error::NotFound { .. }) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, Error>>()
        })
        .await
        .map_err(|e| Stop::Fail(Error::internal(e).into()))?
        .map_err(|e| Stop::Fail(e.into()))?;
        let mut messages: Vec<pb::WatchArticleReviewsResponse> = vec![Default::default()];
        let mut size = 0;
        for (review, at) in reviews {
            let id = &review.article.id;
            if let Some(state) = self.options.state {
                let matches = review.state == state;
                let was = if matches {
                    !self.shown.insert(id.clone())
                } else {
                    self.shown.remove(id)
                };
                if !matches && !was {
                    continue;
                }
            }
            let mut p =
                convert::review_to_pb(&review, at, self.options.max_response / 4, self.options.encoding);
            p.contested_spans.truncate(STREAMED_CONTESTED_SPANS);
            let n = prost::Message::encoded_len(&p) + 8;
            if size + n > super::MAX_EVENTS_MESSAGE && size > 0 {
                messages.push(Default::default());
                size = 0;
            }
            size += n;
            let m = messages.last_mut().expect("never empty");
            m.revision = m.revision.max(at);
            m.reviews.push(p);
        }
        if !initial && messages.len() == 1 && messages[0].reviews.is_empty() {
            return Ok(());
        }
        let count = messages.len();
        for (i, mut m) in messages.into_iter().enumerate() {
            if m.revision == 0 {
                m.revision = self.store.revision();
            }
            m.initial = initial;
            m.more = i + 1 < count;
            self.send(Ok(m)).await?;
        }
        Ok(())
    }

    /// Queues a message; waits while the client is slow, but not past
    /// shutdown or a revoked token.
    async fn send(&mut self, msg: Outgoing) -> Result<(), Stop> {
        let tx = self.tx.clone();
        let queue = tx.send(msg);
        tokio::pin!(queue);
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|stopping| *stopping) => return Err(shutting_down()),
                Ok(()) = self.reloads.changed() => recheck(&self.identity)?,
                sent = &mut queue => return sent.map_err(|_| Stop::Gone),
            }
        }
    }
}
