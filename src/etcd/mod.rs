//! A small async client of etcd v3, over tonic, generated from etcd's own
//! protos (`proto/etcd`, compiled with protox by `build.rs`: no `protoc`).
//!
//! It is the groundwork of the etcd engine, and holds none of its policy:
//!
//! - [`EtcdClient::connect`]: several endpoints (the members' client URLs),
//!   optional TLS with a CA and a client certificate ([`EtcdTls`]), and a
//!   key prefix that every key given is relative to and every key answered
//!   has taken off, so deployments sharing a cluster cannot see each
//!   other's keys.
//! - [`kv`]: `range` / `put` / `delete` / `txn` with compares on the mod
//!   revision, create revision, version or value / `compact`.
//! - [`watch`]: a watch from a revision that yields events in order with
//!   the header revision, reassembles fragments, turns a compacted start
//!   into [`EtcdError::Compacted`] with the oldest revision held, and sends
//!   progress requests.
//! - [`lease`]: grant, keep-alive, revoke.
//! - [`maintenance`]: member status (db size, leader, raft index), alarms,
//!   defragmentation, the member list.
//! - [`limits`]: [`probe_limits`], whether the cluster takes the
//!   transactions and requests the server will send.
//! - [`error`]: [`EtcdError`], the few kinds of failure a caller tells
//!   apart.
//!
//! # Endpoints and failover
//!
//! Each endpoint gets its own lazily connected channel, and calls go to a
//! *preferred* one. A call that fails [`EtcdError::Unavailable`] moves the
//! preference to the next endpoint; reads (and opening a watch) then retry
//! there at once, each endpoint once, while writes return the error to the
//! caller, who knows whether a retry is safe (a write whose answer was lost
//! may have been applied). tonic's `Channel::balance_list` is not used: it
//! keeps sending a share of the calls to a member that is down or cut off,
//! and a watch must stay on one member for its whole life.
//!
//! Every call has a deadline ([`EtcdConfig::request_timeout`]), sent to etcd
//! as `grpc-timeout` too: a member that is stopped or cut from the network
//! fails calls in bounded time instead of hanging. Watch streams carry
//! etcd's `hasleader=true`, so a member that loses its leader cancels them
//! rather than leaving them silent.

pub mod error;
pub mod kv;
pub mod lease;
pub mod limits;
pub mod maintenance;
pub mod pb;
pub mod watch;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use error::{EtcdError, Result};
pub use kv::{
    CmpOp, Compare, Delete, DeleteResult, Get, KeyValue, Keys, Op, OpResult, Put, PutResult, RangeResult,
    Txn, TxnResult,
};
pub use lease::{Lease, LeaseKeepAlive};
pub use limits::{LimitsError, probe_limits};
pub use maintenance::{Alarm, AlarmKind, Member, MemberStatus};
pub use watch::{Event, EventKind, WatchBatch, WatchOptions, Watcher};

use pb::etcdserverpb as etcdpb;

/// A key under the prefix that this client reads but never writes: the
/// probes and revision look-ups use it, so they leave nothing behind.
pub const SCRATCH_KEY: &[u8] = b".probe";

/// TLS to etcd: PEM bytes.
#[derive(Clone, Debug, Default)]
pub struct EtcdTls {
    /// The CA that signed the members' certificates; the system's roots
    /// when `None`.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate chain and its key, for a cluster started with
    /// `--client-cert-auth`.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the members' certificates must carry; the endpoint's host
    /// when `None`.
    pub domain: Option<String>,
}

impl EtcdTls {
    /// Reads the PEM files (`--etcd-ca`, `--etcd-cert`, `--etcd-key`); a
    /// certificate needs its key and the other way round.
    pub fn from_files(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> std::io::Result<Self> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))
        };
        let identity_pem = match (cert, key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            (None, None) => None,
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "an etcd client certificate needs its key, and a key its certificate",
                ));
            }
        };
        Ok(Self {
            ca_pem: ca.map(read).transpose()?,
            identity_pem,
            domain: None,
        })
    }

    fn to_tonic(&self) -> ClientTlsConfig {
        let mut tls = ClientTlsConfig::new();
        tls = match &self.ca_pem {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(ca)),
            None => tls.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity_pem {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            tls = tls.domain_name(domain.clone());
        }
        tls
    }
}

/// Where etcd is and how to talk to it.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// The members' client URLs: `http://host:2379`, or `https://` with
    /// [`EtcdConfig::tls`].
    pub endpoints: Vec<String>,
    /// Prepended to every key; `/factcheck/` for the server.
    pub prefix: Vec<u8>,
    pub tls: Option<EtcdTls>,
    /// To set up a connection to one member.
    pub connect_timeout: Duration,
    /// For one call (opening a watch included; not the life of the watch).
    pub request_timeout: Duration,
    /// The largest response accepted (tonic's default, 4 MiB, is too small
    /// for a watch response of a big revision or a large range).
    pub max_response_bytes: usize,
}

impl EtcdConfig {
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>, prefix: impl Into<Vec<u8>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: prefix.into(),
            tls: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_response_bytes: 64 * 1024 * 1024,
        }
    }
}

/// An etcd cluster, through one prefix. Cheap to clone: clones share the
/// connections.
#[derive(Clone)]
pub struct EtcdClient {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    preferred: AtomicUsize,
    prefix: Vec<u8>,
    request_timeout: Duration,
    max_response_bytes: usize,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("endpoints", &self.inner.endpoints)
            .field("prefix", &String::from_utf8_lossy(&self.inner.prefix))
            .finish()
    }
}

impl EtcdClient {
    /// Sets up a channel per endpoint and checks that one member answers a
    /// status request (each is tried in turn): an unreachable cluster fails
    /// here, [`EtcdError::Unavailable`], not at the first write.
    pub async fn connect(config: &EtcdConfig) -> Result<Self> {
        let client = Self::new_lazy(config)?;
        client.status().await?;
        Ok(client)
    }

    /// Like [`EtcdClient::connect`], without the check: connections are
    /// made at the first call.
    pub fn new_lazy(config: &EtcdConfig) -> Result<Self> {
        let bad = |message: String| EtcdError::Other {
            code: tonic::Code::InvalidArgument,
            message,
        };
        if config.endpoints.is_empty() {
            return Err(bad("no etcd endpoints".into()));
        }
        let mut channels = Vec::new();
        for url in &config.endpoints {
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| bad(format!("etcd endpoint {url}: {e}")))?
                .connect_timeout(config.connect_timeout)
                .tcp_nodelay(true)
                .tcp_keepalive(Some(Duration::from_secs(30)))
                // etcd answers pings more often than every 5 s, or any
                // without a stream open, with GOAWAY (too_many_pings).
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(false);
            if let Some(tls) = &config.tls {
                endpoint = endpoint
                    .tls_config(tls.to_tonic())
                    .map_err(|e| bad(format!("etcd TLS for {url}: {e}")))?;
            } else if url.starts_with("https://") {
                return Err(bad(format!(
                    "etcd endpoint {url} is https: give the TLS settings"
                )));
            }
            channels.push(endpoint.connect_lazy());
        }
        Ok(Self {
            inner: Arc::new(Inner {
                endpoints: config.endpoints.clone(),
                channels,
                preferred: AtomicUsize::new(0),
                prefix: config.prefix.clone(),
                request_timeout: config.request_timeout,
                max_response_bytes: config.max_response_bytes,
            }),
        })
    }

    /// The members' client URLs, as configured.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// The prefix of every key.
    pub fn prefix(&self) -> &[u8] {
        &self.inner.prefix
    }

    /// The size of `txn` as etcd receives it (about: etcd adds a header of
    /// a few dozen bytes when it proposes it), to keep batches under
    /// `--max-request-bytes`.
    pub fn encoded_len(&self, txn: &Txn) -> usize {
        prost::Message::encoded_len(&txn.to_etcd(self.prefix()))
    }

    fn kv(&self, channel: Channel) -> etcdpb::kv_client::KvClient<Channel> {
        etcdpb::kv_client::KvClient::new(channel).max_decoding_message_size(self.inner.max_response_bytes)
    }

    /// Calls `f` on the preferred member; when it is unavailable, moves the
    /// preference on and, if `retry`, tries each other member once.
    async fn call<T, F, Fut>(&self, retry: bool, timeout: Duration, f: F) -> Result<T>
    where
        F: Fn(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let n = self.inner.channels.len();
        let first = self.inner.preferred.load(Ordering::Relaxed) % n;
        let mut last = None;
        for attempt in 0..if retry { n } else { 1 } {
            let i = (first + attempt) % n;
            match self.call_on(i, timeout, &f).await {
                Ok(r) => return Ok(r),
                Err(e) if e.is_unavailable() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one endpoint"))
    }

    /// Calls `f` on member `i`, with the deadline; an unavailable member
    /// stops being preferred.
    async fn call_on<T, F, Fut>(&self, i: usize, timeout: Duration, f: &F) -> Result<T>
    where
        F: Fn(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let n = self.inner.channels.len();
        let result = match tokio::time::timeout(timeout, f(self.inner.channels[i].clone(), timeout)).await {
            Ok(Ok(r)) => return Ok(r.into_inner()),
            Ok(Err(status)) => EtcdError::from_status(&status),
            Err(_) => EtcdError::Unavailable(format!(
                "{} did not answer within {} ms",
                self.inner.endpoints[i],
                timeout.as_millis()
            )),
        };
        if result.is_unavailable() {
            let _ =
                self.inner
                    .preferred
                    .compare_exchange(i, (i + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
        }
        Err(result)
    }

    /// A compaction error with its revisions filled in.
    async fn compacted(&self, e: EtcdError, requested: i64) -> EtcdError {
        match e {
            EtcdError::Compacted { .. } => match self.oldest_revision().await {
                Ok(oldest) => EtcdError::Compacted { requested, oldest },
                Err(e) => e,
            },
            e => e,
        }
    }

    /// A `Range`, retried on another member when one is unavailable; a
    /// compaction error left as it comes.
    async fn range_raw(&self, get: &Get) -> Result<etcdpb::RangeResponse> {
        let req = get.to_etcd(self.prefix());
        self.call(true, self.inner.request_timeout, |ch, t| {
            let mut c = self.kv(ch);
            let req = request(req.clone(), t);
            async move { c.range(req).await }
        })
        .await
    }

    /// Reads keys (retried on another member when one is unavailable).
    pub async fn range(&self, get: Get) -> Result<RangeResult> {
        match self.range_raw(&get).await {
            Ok(r) => Ok(kv::range_result(self.prefix(), r)),
            Err(e) => Err(self.compacted(e, get.revision()).await),
        }
    }

    /// Writes one key.
    pub async fn put(&self, put: Put) -> Result<PutResult> {
        let req = put.to_etcd(self.prefix());
        let r = self
            .call(false, self.inner.request_timeout, |ch, t| {
                let mut c = self.kv(ch);
                let req = request(req.clone(), t);
                async move { c.put(req).await }
            })
            .await?;
        Ok(kv::put_result(self.prefix(), r))
    }

    /// Deletes keys.
    pub async fn delete(&self, delete: Delete) -> Result<DeleteResult> {
        let req = delete.to_etcd(self.prefix());
        let r = self
            .call(false, self.inner.request_timeout, |ch, t| {
                let mut c = self.kv(ch);
                let req = request(req.clone(), t);
                async move { c.delete_range(req).await }
            })
            .await?;
        Ok(kv::delete_result(self.prefix(), r))
    }

    /// Runs a transaction (not retried: a lost answer may hide a commit).
    pub async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        self.run_txn(txn.to_etcd(self.prefix()), false).await
    }

    /// Sends a transaction, retried on another member if `retry`.
    async fn run_txn(&self, req: etcdpb::TxnRequest, retry: bool) -> Result<TxnResult> {
        let r = self
            .call(retry, self.inner.request_timeout, |ch, t| {
                let mut c = self.kv(ch);
                let req = request(req.clone(), t);
                async move { c.txn(req).await }
            })
            .await;
        match r {
            Ok(r) => Ok(kv::txn_result(self.prefix(), r)),
            // a Get at a compacted revision inside the transaction
            Err(e) => Err(self.compacted(e, 0).await),
        }
    }

    /// Runs a transaction of reads only (`Get`s), retried on another member
    /// when one is unavailable, like a `Range`: it changes nothing, so
    /// running it twice is safe.
    pub async fn read_txn(&self, txn: Txn) -> Result<TxnResult> {
        let req = txn.to_etcd(self.prefix());
        if req
            .success
            .iter()
            .chain(&req.failure)
            .any(|op| !matches!(op.request, Some(etcdpb::request_op::Request::RequestRange(_))))
        {
            return Err(EtcdError::Other {
                code: tonic::Code::InvalidArgument,
                message: "read_txn: the transaction writes".into(),
            });
        }
        self.run_txn(req, true).await
    }

    /// Drops the history before `revision` (for every key of the cluster,
    /// not only this prefix's); `physical` waits until the space is
    /// reclaimable. Answers the store's revision. Compacting at or before
    /// the current compaction point is [`EtcdError::Compacted`].
    pub async fn compact(&self, revision: i64, physical: bool) -> Result<i64> {
        let req = etcdpb::CompactionRequest { revision, physical };
        let r = self
            .call(false, self.inner.request_timeout * 4, |ch, t| {
                let mut c = self.kv(ch);
                let req = request(req, t);
                async move { c.compact(req).await }
            })
            .await;
        match r {
            Ok(r) => Ok(r.header.map_or(0, |h| h.revision)),
            Err(e) => Err(self.compacted(e, revision).await),
        }
    }

    /// The store's current revision, from a linearizable (quorum) read:
    /// every write acknowledged before the call is at or below it.
    pub async fn current_revision(&self) -> Result<i64> {
        let r = self.range_raw(&Get::key(SCRATCH_KEY).count_only()).await?;
        Ok(r.header.map_or(0, |h| h.revision))
    }

    /// The oldest revision etcd still holds (its compaction point; 1 if it
    /// never compacted). etcd has no call for it: a binary search of reads
    /// at a revision, `log2(current revision)` small reads.
    pub async fn oldest_revision(&self) -> Result<i64> {
        let readable = |revision: i64| async move {
            match self
                .range_raw(&Get::key(SCRATCH_KEY).count_only().at_revision(revision))
                .await
            {
                Ok(_) => Ok(true),
                Err(EtcdError::Compacted { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        };
        let (mut lo, mut hi) = (1, self.current_revision().await?);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if readable(mid).await? {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }
}

/// A request with its deadline, which etcd receives as `grpc-timeout`.
fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(timeout);
    r
}
