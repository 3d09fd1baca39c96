//! The distributed engine: the store's keys in an etcd v3 cluster, under a
//! key prefix (`--etcd-prefix`, `/factcheck/` by default).
//!
//! The key layout is the sled engine's ([`crate::store::keys`]), each key
//! put under the prefix as it is. A group is one `Txn`: its compare is
//! "the store's revision key still holds `base`" (Kubernetes'
//! `GuaranteedUpdate` compares a key's `mod_revision` the same way), its
//! success branch every key change of the group. So a group lands whole or
//! not at all, is durable on a quorum once etcd answers, and never lands on
//! a state it was not checked against: when another server on the same
//! prefix committed first, the compare fails, nothing is written, and the
//! committer follows the changes it missed and stages its jobs again on the
//! new state (dense revisions, one `Txn` landing at a time; see
//! docs/ENGINES.md). Each server watches the revision key
//! ([`Engine::watch_head`]) to follow the others' commits as they land.
//!
//! etcd refuses a `Txn` with more operations than `--max-txn-ops` or bigger
//! than `--max-request-bytes`: at open the engine probes that the cluster
//! takes what the API can ask in one call ([`NEEDED_OPS`],
//! [`NEEDED_BYTES`]) and refuses to start otherwise, naming the flag.
//!
//! etcd keeps every old version of a key until it is compacted; the store
//! reads only the latest (its own history records answer as-of reads), so
//! the engine compacts etcd's history a little behind the head now and
//! then ([`COMPACT_EVERY`]).
//!
//! The client is async (tonic); the store's engine calls are blocking, so
//! the engine runs its own small tokio runtime and waits on it.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use super::{CommitError, CommitLimits, Engine, HeadEvent, Op, Pair, last_op_per_key};
use crate::error::{Error, Result};
use crate::etcd::{
    CmpOp, Compare, Delete, EtcdClient, EtcdConfig, EtcdError, Get, Keys, Put, Txn, WatchOptions,
};
use crate::store::keys;

/// The most operations one commit may need: a batch of 1,000 mutations
/// (each a few keys: the record, its location, its history record) with
/// the request record, the changelog entry and the stats, and a
/// correction that re-anchors 20,000 annotations (three keys each). One
/// that needs more (or more than [`NEEDED_BYTES`]) is refused
/// `RESOURCE_EXHAUSTED` (`ETCD_TXN_TOO_LARGE`).
pub const NEEDED_OPS: usize = 65536;

/// The largest commit. Not more: etcd (3.4, 3.5) writes a `Txn` to its log
/// as one entry and refuses to *restart* from a log holding an entry over
/// 10 MiB (`wal: max entry size limit exceeded`; found by
/// `etcd_killed_and_restarted_under_writers_loses_nothing_acknowledged`
/// when this was 16 MiB), so a bigger limit would let one large call make
/// the cluster unable to come back.
pub const NEEDED_BYTES: usize = 8 * 1024 * 1024;

/// etcd's history is compacted every this many store revisions, to this
/// many etcd revisions behind the head.
const COMPACT_EVERY: u64 = 1000;
const COMPACT_KEEP: i64 = 10_000;

/// The key that marks a prefix as holding a store whose restore is not
/// finished: `serve` refuses it.
pub const RESTORING_KEY: &[u8] = b"\x00restoring";

pub struct EtcdEngine {
    client: EtcdClient,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    limits: CommitLimits,
    /// Reads are at this etcd revision ([`Engine::pin_reads`]); 0: the latest.
    pinned: AtomicI64,
}

fn unavailable(e: &EtcdError) -> Error {
    Error::StoreUnavailable {
        reason: "STORE_UNAVAILABLE",
        message: format!("the store cannot be reached: {e}; retry"),
    }
}

/// An etcd failure of a read, as the client sees it.
fn read_error(e: EtcdError) -> Error {
    match e {
        EtcdError::Unavailable(_) => unavailable(&e),
        other => Error::internal(format!("etcd: {other}")),
    }
}

impl EtcdEngine {
    /// Connects to the cluster and checks that it takes the transactions
    /// the store sends. `check_limits: false` for offline tools that only
    /// read (audit verify).
    pub fn open(config: &EtcdConfig, check_limits: bool) -> Result<EtcdEngine> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("factcheck-etcd")
            .enable_all()
            .build()
            .map_err(Error::internal)?;
        let handle = runtime.handle().clone();
        // Made on the engine's runtime, so the connections' tasks run there:
        // a caller that blocks its own runtime's thread on a read (a
        // current-thread runtime, say) must not stall them.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let made = config.clone();
        handle.spawn(async move {
            let _ = tx.send(EtcdClient::new_lazy(&made));
        });
        let client = rx
            .recv()
            .map_err(Error::internal)?
            .map_err(|e| Error::internal(format!("etcd: {e}")))?;
        let engine = EtcdEngine {
            client,
            runtime: Mutex::new(Some(runtime)),
            handle,
            limits: CommitLimits {
                ops: NEEDED_OPS,
                bytes: NEEDED_BYTES,
            },
            pinned: AtomicI64::new(0),
        };
        let client = engine.client.clone();
        engine.block(async move { client.status().await }).map_err(|e| {
            Error::internal(format!(
                "cannot reach etcd at {}: {e}",
                config.endpoints.join(",")
            ))
        })?;
        if check_limits {
            let client = engine.client.clone();
            engine
                .block(async move { crate::etcd::probe_limits(&client, NEEDED_OPS, NEEDED_BYTES).await })
                .map_err(|e| Error::internal(format!("etcd at {}: {e}", config.endpoints.join(","))))?;
        }
        Ok(engine)
    }

    /// Runs `f` on the engine's runtime and waits for it, from any thread
    /// that is not one of the runtime's own.
    fn block<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv()
            .expect("the etcd runtime runs until the engine is dropped")
    }

    fn txn(&self, txn: Txn) -> std::result::Result<crate::etcd::TxnResult, EtcdError> {
        let client = self.client.clone();
        self.block(async move { client.txn(txn).await })
    }

    /// The key changes of `ops` as `Txn` operations, in chunks that fit the
    /// limits.
    fn chunks(&self, ops: Vec<Op>) -> Vec<Vec<Op>> {
        let mut out = vec![Vec::new()];
        let mut bytes = 0;
        for op in last_op_per_key(ops) {
            let size = op.0.len() + op.1.as_ref().map_or(0, Vec::len) + 16;
            let last = out.last_mut().expect("one chunk at least");
            if !last.is_empty() && (last.len() == self.limits.ops || bytes + size > self.limits.bytes / 2) {
                out.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            out.last_mut().expect("one chunk at least").push(op);
        }
        out
    }

    /// Removes a restore mark: the restore is whole.
    pub fn finish_restore(&self) -> Result<()> {
        let client = self.client.clone();
        self.block(async move { client.delete(Delete::key(RESTORING_KEY)).await })
            .map_err(read_error)?;
        Ok(())
    }

    /// Deletes every key under the prefix (an interrupted restore's).
    pub fn clear(&self) -> Result<()> {
        let client = self.client.clone();
        self.block(async move { client.delete(Delete::new(Keys::Prefix(Vec::new()))).await })
            .map_err(read_error)?;
        Ok(())
    }

    /// Whether the prefix holds any key at all.
    pub fn is_empty(&self) -> Result<bool> {
        Ok((self as &dyn Engine).iter().next().transpose()?.is_none())
    }

    /// Whether a restore into this prefix was started and not finished.
    pub fn restoring(&self) -> Result<bool> {
        Ok(self.get(RESTORING_KEY)?.is_some())
    }

    /// Compacts etcd's history behind `head`, in the background, when the
    /// group took the store's revision past a multiple of
    /// [`COMPACT_EVERY`]: each store revision is committed by exactly one
    /// server (its `Txn`'s guard), so of all the servers on a prefix exactly
    /// one compacts each time, decided by etcd itself, with no configuration.
    fn maybe_compact(&self, base: u64, revision: u64, head: i64) {
        if base / COMPACT_EVERY == revision / COMPACT_EVERY {
            return;
        }
        let at = head - COMPACT_KEEP;
        if at <= 0 {
            return;
        }
        let client = self.client.clone();
        self.handle.spawn(async move {
            match client.compact(at, false).await {
                Ok(_) | Err(EtcdError::Compacted { .. }) => {}
                Err(e) => tracing::warn!(error = %e, revision = at, "etcd compaction failed"),
            }
        });
    }
}

impl Drop for EtcdEngine {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.lock().unwrap_or_else(|e| e.into_inner()).take() {
            rt.shutdown_background();
        }
    }
}

impl Engine for EtcdEngine {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let client = self.client.clone();
        let get = Get::key(key.to_vec()).at_revision(self.pinned.load(Ordering::Acquire));
        let found = self
            .block(async move { client.range(get).await })
            .map_err(read_error)?;
        Ok(found.kvs.into_iter().next().map(|kv| kv.value))
    }

    fn page(&self, start: &[u8], end: Option<&[u8]>, limit: usize, reverse: bool) -> Result<Vec<Pair>> {
        if end.is_some_and(|e| e <= start) || limit == 0 {
            return Ok(Vec::new());
        }
        let client = self.client.clone();
        let mut get = Get::new(Keys::Range(
            start.to_vec(),
            end.map(<[u8]>::to_vec).unwrap_or_default(),
        ))
        .limit(limit as i64)
        .at_revision(self.pinned.load(Ordering::Acquire));
        if reverse {
            get = get.descending();
        }
        let found = self
            .block(async move { client.range(get).await })
            .map_err(read_error)?;
        Ok(found.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect())
    }

    fn pages(&self, queries: &[super::PageQuery]) -> Result<Vec<Vec<Pair>>> {
        let at = self.pinned.load(Ordering::Acquire);
        let mut out = Vec::with_capacity(queries.len());
        // A read of 256 records at most: 256 large annotations stay well
        // under the client's response limit.
        for chunk in queries.chunks(256) {
            let gets: Vec<Get> = chunk
                .iter()
                .map(|q| {
                    let mut get = Get::new(Keys::Range(q.start.clone(), q.end.clone().unwrap_or_default()))
                        .limit(q.limit as i64)
                        .at_revision(at);
                    if q.reverse {
                        get = get.descending();
                    }
                    get
                })
                .collect();
            let client = self.client.clone();
            let r = self
                .block(async move { client.read_txn(Txn::new().and_then(gets)).await })
                .map_err(read_error)?;
            for result in r.results {
                match result {
                    crate::etcd::OpResult::Get(found) => {
                        out.push(found.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect())
                    }
                    _ => {
                        return Err(Error::internal(
                            "etcd: a read in a transaction answered as a write",
                        ));
                    }
                }
            }
        }
        if out.len() != queries.len() {
            return Err(Error::internal("etcd: a transaction of reads answered fewer"));
        }
        Ok(out)
    }

    fn write(&self, ops: Vec<Op>) -> Result<()> {
        for chunk in self.chunks(ops) {
            if chunk.is_empty() {
                continue;
            }
            self.txn(Txn::new().and_then(chunk.into_iter().map(to_etcd)))
                .map_err(read_error)?;
        }
        Ok(())
    }

    fn write_if_absent(&self, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>> {
        let txn = Txn::new()
            .when([Compare::version(key.to_vec(), CmpOp::Equal, 0)])
            .and_then([Put::new(key.to_vec(), value.clone())])
            .or_else([Get::key(key.to_vec())]);
        let r = self.txn(txn).map_err(read_error)?;
        if r.succeeded {
            return Ok(value);
        }
        match r.results.into_iter().next() {
            Some(crate::etcd::OpResult::Get(found)) => found
                .kvs
                .into_iter()
                .next()
                .map(|kv| kv.value)
                .ok_or_else(|| Error::internal("etcd: a key present a moment ago is gone")),
            _ => Err(Error::internal("etcd: no answer to a read in a transaction")),
        }
    }

    fn commit(&self, base: u64, revision: u64, ops: Vec<Op>) -> std::result::Result<(), CommitError> {
        let ops = last_op_per_key(ops);
        let bytes: usize = ops
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 16)
            .sum();
        if ops.len() > self.limits.ops || bytes > self.limits.bytes {
            return Err(CommitError::Refused(too_large(ops.len(), bytes)));
        }
        let guard = if base == 0 {
            Compare::version(keys::META_REVISION.to_vec(), CmpOp::Equal, 0)
        } else {
            Compare::value(
                keys::META_REVISION.to_vec(),
                CmpOp::Equal,
                base.to_be_bytes().to_vec(),
            )
        };
        // The group's last changelog entry: only this group wrote these
        // bytes under that key (see NOSPACE below).
        let entry_key = keys::change(revision).to_vec();
        let entry = ops
            .iter()
            .find(|(k, _)| *k == entry_key)
            .and_then(|(_, v)| v.clone());
        let txn = Txn::new().when([guard]).and_then(ops.into_iter().map(to_etcd));
        // As on sled: the engine broke before anything was written.
        fail::fail_point!("commit::flush", |_| Err(CommitError::Failed(
            "injected flush failure".into()
        )));
        match self.txn(txn) {
            Ok(r) if r.succeeded => {
                // The group landed and its answer is lost (a timeout, a
                // member cut off just then).
                fail::fail_point!("etcd::answer_lost", |_| Err(CommitError::Uncertain(
                    "injected lost answer".into()
                )));
                self.maybe_compact(base, revision, r.revision);
                Ok(())
            }
            // Another server committed since the group was staged.
            Ok(_) => Err(CommitError::Conflict),
            // etcd applies a `Txn` that takes it past its quota and *then*
            // answers NOSPACE (its `quotaApplierV3`), whether the compare
            // held or not: the group may have landed. Its changelog entry,
            // read back, says which.
            Err(EtcdError::NoSpace) if entry.is_some() => match self.get(&entry_key) {
                Ok(found) if found == entry => Ok(()),
                Ok(_) => Err(no_space()),
                Err(e) => Err(CommitError::Uncertain(format!(
                    "etcd answered NOSPACE, and whether the group landed could not be read back: {e}"
                ))),
            },
            Err(EtcdError::NoSpace) => Err(no_space()),
            Err(EtcdError::TooManyOps) | Err(EtcdError::RequestTooLarge) => {
                Err(CommitError::Refused(too_large(0, bytes)))
            }
            Err(e) => Err(CommitError::Uncertain(e.to_string())),
        }
    }

    fn stored_revision(&self) -> Result<u64> {
        keys::decode_revision(self.get(keys::META_REVISION)?.as_deref(), "revision")
    }

    fn limits(&self) -> Option<CommitLimits> {
        Some(self.limits)
    }

    fn shared(&self) -> bool {
        true
    }

    fn frozen(&self) -> Result<Option<Box<dyn Engine>>> {
        let client = self.client.clone();
        let now = self
            .block(async move { client.current_revision().await })
            .map_err(read_error)?;
        // The same connections and runtime (which this view must not shut
        // down: it owns none), reading at one etcd revision.
        Ok(Some(Box::new(EtcdEngine {
            client: self.client.clone(),
            runtime: Mutex::new(None),
            handle: self.handle.clone(),
            limits: self.limits,
            pinned: AtomicI64::new(now),
        })))
    }

    fn watch_head(&self, on: Box<dyn Fn(HeadEvent) + Send + Sync>) {
        let client = self.client.clone();
        self.handle.spawn(async move {
            let mut backoff = std::time::Duration::from_millis(50);
            loop {
                let options = WatchOptions::new(Keys::One(keys::META_REVISION.to_vec()));
                match client.watch(options).await {
                    Ok(mut watcher) => {
                        backoff = std::time::Duration::from_millis(50);
                        on(HeadEvent::Connected);
                        loop {
                            match watcher.next().await {
                                Ok(batch) => {
                                    if let Some(revision) = batch
                                        .events
                                        .last()
                                        .and_then(|e| e.kv.value.as_slice().try_into().ok())
                                        .map(u64::from_be_bytes)
                                    {
                                        on(HeadEvent::Moved(revision));
                                    }
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "the watch on the store's head broke: reopening");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot watch the store's head: retrying"),
                }
                on(HeadEvent::Broken);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
            }
        });
    }

    fn pin_reads(&self) -> Result<()> {
        let client = self.client.clone();
        let now = self
            .block(async move { client.current_revision().await })
            .map_err(read_error)?;
        self.pinned.store(now, Ordering::Release);
        Ok(())
    }

    fn close(&self, _failed: bool) {
        // etcd holds every committed group durably already.
    }
}

fn too_large(ops: usize, bytes: usize) -> Error {
    Error::ResourceExhausted {
        reason: "ETCD_TXN_TOO_LARGE",
        message: format!(
            "this change needs one etcd transaction of {ops} key changes and {bytes} bytes, more than the \
             store takes in one ({NEEDED_OPS} changes, {NEEDED_BYTES} bytes): split it into smaller calls"
        ),
    }
}

fn to_etcd((key, value): Op) -> crate::etcd::Op {
    match value {
        Some(v) => Put::new(key, v).into(),
        None => Delete::key(key).into(),
    }
}

/// etcd out of space, and the group not written.
fn no_space() -> CommitError {
    CommitError::Refused(Error::ResourceExhausted {
        reason: "STORE_NOSPACE",
        message: "the store is out of space (etcd's NOSPACE alarm): nothing was written; reads go on. \
                  An operator must compact and defragment etcd, or raise --quota-backend-bytes, and \
                  disarm the alarm"
            .into(),
    })
}
