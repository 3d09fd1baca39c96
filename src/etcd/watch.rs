//! A watch on a range of keys from a revision: replayed history, then live
//! changes, in revision order.
//!
//! What etcd promises (and this module checks): events come in revision
//! order, without gaps or duplicates, the events of one revision together.
//! What it does not: a batch's header revision says how far the *store* had
//! got when etcd sent it, not that every event up to it was sent (while a
//! watcher catches up, etcd sends 1000 revisions per response with the
//! store's revision in each header). Resume from [`Watcher::next_revision`],
//! which only counts events handed out. A progress notification (a batch
//! without events) does say "nothing else up to this revision", but etcd
//! before 3.4.31 / 3.5.13 could send one ahead of events it still owed
//! (etcd#15220, #17507): don't build correctness on them with those
//! versions (Debian's 3.4.23 is one).

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::kv::{KeyValue, Keys, strip};
use super::pb::etcdserverpb as pb;
use super::pb::mvccpb;
use super::{EtcdClient, EtcdError, Result};

/// What to watch and from where.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    keys: Keys,
    start_revision: i64,
    prev_kv: bool,
    progress_notify: bool,
}

impl WatchOptions {
    /// Changes of `keys` (relative to the client's prefix) from now on.
    pub fn new(keys: Keys) -> Self {
        Self {
            keys,
            start_revision: 0,
            prev_kv: false,
            progress_notify: false,
        }
    }
    /// Starting at `revision`, included (history first, then live). Older
    /// than the compaction point: [`EtcdError::Compacted`] from
    /// [`Watcher::next`].
    pub fn from_revision(mut self, revision: i64) -> Self {
        self.start_revision = revision;
        self
    }
    /// Each event carries the key's value before it.
    pub fn prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
    /// etcd sends a progress notification (an empty batch) when the watch
    /// has been quiet for a while (about 10 minutes by default).
    pub fn progress_notify(mut self) -> Self {
        self.progress_notify = true;
        self
    }
}

/// A put or a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change of one key.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    /// The key after the change (for a delete: the key, and the deletion's
    /// revision as `mod_revision`). Prefix taken off.
    pub kv: KeyValue,
    /// Before it, when asked for ([`WatchOptions::prev_kv`]) and not
    /// compacted.
    pub prev: Option<KeyValue>,
}

/// One response of the watch (fragments put back together).
#[derive(Clone, Debug, PartialEq)]
pub struct WatchBatch {
    /// The response header's revision: the store's revision when etcd sent
    /// it (see the module's documentation for what it does not promise).
    pub revision: i64,
    /// In revision order; empty for a progress notification.
    pub events: Vec<Event>,
}

impl WatchBatch {
    /// A progress notification: no events, only a revision.
    pub fn is_progress(&self) -> bool {
        self.events.is_empty()
    }
}

/// An open watch, on one member. Dropping it cancels it.
pub struct Watcher {
    requests: mpsc::Sender<pb::WatchRequest>,
    responses: tonic::Streaming<pb::WatchResponse>,
    watch_id: i64,
    prefix: Vec<u8>,
    next_revision: i64,
    endpoint: String,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("endpoint", &self.endpoint)
            .field("watch_id", &self.watch_id)
            .field("next_revision", &self.next_revision)
            .finish()
    }
}

impl EtcdClient {
    /// Opens a watch (on the preferred member, or the next ones if it is
    /// unavailable) and waits for etcd to confirm it.
    pub async fn watch(&self, options: WatchOptions) -> Result<Watcher> {
        let (key, range_end) = options.keys.to_etcd(self.prefix());
        let create = pb::WatchCreateRequest {
            key,
            range_end,
            start_revision: options.start_revision,
            progress_notify: options.progress_notify,
            prev_kv: options.prev_kv,
            // big revisions arrive in parts, put back together by `next`
            fragment: true,
            ..Default::default()
        };
        let max = self.inner.max_response_bytes;
        let (requests, responses, created, endpoint) = {
            let n = self.inner.channels.len();
            let first = self.inner.preferred.load(std::sync::atomic::Ordering::Relaxed) % n;
            let mut last = None;
            let mut opened = None;
            for attempt in 0..n {
                let i = (first + attempt) % n;
                let open = |ch, t| {
                    let create = create.clone();
                    async move {
                        let (tx, rx) = mpsc::channel(16);
                        let first = pb::WatchRequest {
                            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
                        };
                        tx.send(first)
                            .await
                            .map_err(|_| tonic::Status::unavailable("watch request dropped"))?;
                        // No deadline on the stream itself (a grpc-timeout
                        // would cut the watch after it): `call_on` bounds
                        // the wait for etcd to confirm it.
                        let _ = t;
                        let mut req = tonic::Request::new(ReceiverStream::new(rx));
                        // a member cut from its leader cancels the watch
                        // instead of leaving it silent
                        req.metadata_mut()
                            .insert("hasleader", tonic::metadata::MetadataValue::from_static("true"));
                        let mut c = pb::watch_client::WatchClient::new(ch).max_decoding_message_size(max);
                        let mut stream = c.watch(req).await?.into_inner();
                        let created = stream.message().await?.ok_or_else(|| {
                            tonic::Status::unavailable("the watch stream ended before it started")
                        })?;
                        Ok(tonic::Response::new((tx, stream, created)))
                    }
                };
                match self.call_on(i, self.inner.request_timeout, &open).await {
                    Ok((tx, stream, created)) => {
                        opened = Some((tx, stream, created, self.inner.endpoints[i].clone()));
                        break;
                    }
                    Err(e) if e.is_unavailable() => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            match opened {
                Some(o) => o,
                None => return Err(last.expect("at least one endpoint")),
            }
        };
        if created.compact_revision != 0 {
            return Err(EtcdError::Compacted {
                requested: options.start_revision,
                oldest: created.compact_revision,
            });
        }
        if created.canceled || !created.created {
            return Err(cancelled(&created.cancel_reason));
        }
        let next_revision = if options.start_revision > 0 {
            options.start_revision
        } else {
            created.header.as_ref().map_or(0, |h| h.revision) + 1
        };
        Ok(Watcher {
            requests,
            responses,
            watch_id: created.watch_id,
            prefix: self.prefix().to_vec(),
            next_revision,
            endpoint,
        })
    }
}

/// A watch etcd cancelled, for `reason`.
fn cancelled(reason: &str) -> EtcdError {
    if reason.contains("no leader") {
        EtcdError::Unavailable(format!("etcd cancelled the watch: {reason}"))
    } else {
        EtcdError::Other {
            code: tonic::Code::Cancelled,
            message: format!("etcd cancelled the watch: {reason}"),
        }
    }
}

impl Watcher {
    /// The next batch of events, or a progress notification.
    ///
    /// A start older than the compaction point (or a watcher that fell
    /// behind it) is [`EtcdError::Compacted`] with the oldest revision etcd
    /// holds; a broken stream or a member without a leader is
    /// [`EtcdError::Unavailable`]: watch again from
    /// [`Watcher::next_revision`], on another member if need be. After an
    /// error the watcher is finished.
    pub async fn next(&mut self) -> Result<WatchBatch> {
        let mut events = Vec::new();
        loop {
            let response = match self.responses.message().await {
                Ok(Some(r)) => r,
                Ok(None) => {
                    return Err(EtcdError::Unavailable(format!(
                        "the watch stream from {} ended",
                        self.endpoint
                    )));
                }
                Err(status) => return Err(EtcdError::from_status(&status)),
            };
            // progress responses to a request carry -1 (etcd 3.4) or our id
            if response.watch_id != self.watch_id && response.watch_id != -1 {
                continue;
            }
            if response.compact_revision != 0 {
                return Err(EtcdError::Compacted {
                    requested: self.next_revision,
                    oldest: response.compact_revision,
                });
            }
            if response.canceled {
                return Err(cancelled(&response.cancel_reason));
            }
            events.extend(response.events.into_iter().map(|e| self.event(e)));
            if response.fragment {
                continue;
            }
            let mut at = self.next_revision;
            for e in &events {
                if e.kv.mod_revision < at {
                    return Err(EtcdError::Other {
                        code: tonic::Code::Internal,
                        message: format!(
                            "etcd's watch went backwards: an event of revision {} after revision {}",
                            e.kv.mod_revision, at
                        ),
                    });
                }
                at = e.kv.mod_revision;
            }
            if let Some(last) = events.last() {
                self.next_revision = last.kv.mod_revision + 1;
            }
            let revision = response.header.map_or(0, |h| h.revision);
            return Ok(WatchBatch { revision, events });
        }
    }

    fn event(&self, e: mvccpb::Event) -> Event {
        let kind = match mvccpb::event::EventType::try_from(e.r#type) {
            Ok(mvccpb::event::EventType::Delete) => EventKind::Delete,
            _ => EventKind::Put,
        };
        Event {
            kind,
            kv: strip(&self.prefix, e.kv.unwrap_or_default()),
            prev: e.prev_kv.map(|kv| strip(&self.prefix, kv)),
        }
    }

    /// Asks etcd for a progress notification: a batch without events,
    /// whose revision says how far the store is (see the module's
    /// documentation on what it promises with etcd before 3.4.31).
    pub async fn request_progress(&self) -> Result<()> {
        let progress = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
                pb::WatchProgressRequest {},
            )),
        };
        self.requests
            .send(progress)
            .await
            .map_err(|_| EtcdError::Unavailable(format!("the watch stream to {} is closed", self.endpoint)))
    }

    /// The revision of the first event not handed out yet: where to watch
    /// from again, after an error, without a gap or a duplicate.
    pub fn next_revision(&self) -> i64 {
        self.next_revision
    }

    /// The member this watch is on.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}
