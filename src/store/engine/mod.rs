//! The engine boundary: where the store's keys live, and how a group of
//! changes becomes durable.
//!
//! Everything above it — the committer's checks and staging, the key layout
//! ([`super::keys`]), the value formats ([`super::codec`]), the in-memory
//! index, reviews, the audit chains, the changelog and its trimming,
//! backups — is the same code on every engine; an engine only stores
//! bytes under byte keys, reads them back in key order, and commits a group
//! of key changes atomically and durably. Two engines:
//!
//! - [`sled::SledEngine`]: the embedded default. A group is made durable by
//!   the write-ahead log ([`super::wal`]) and applied to sled; sled is made
//!   durable behind the log by a checkpointer.
//! - [`etcd::EtcdEngine`]: an etcd v3 cluster, under a key prefix. A group
//!   is one `Txn` guarded by the store's revision key, so a group lands
//!   whole or not at all and never on a state it was not staged on.
//!
//! Garage's `src/db` is the model: one trait, several engines, one test
//! suite run against each (`FACTCHECK_TEST_STORE=etcd`).

pub mod etcd;
pub mod sled;

use std::ops::Bound;

use crate::error::{Error, Result};

/// One key change of a group: a value to put, or `None` to remove.
pub type Op = (Vec<u8>, Option<Vec<u8>>);

/// A key and its value.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Which engine a store is on.
#[derive(Clone, Debug, Default)]
pub enum EngineConfig {
    /// sled and the write-ahead log in the data dir.
    #[default]
    Sled,
    /// An etcd cluster, under the config's key prefix.
    Etcd(crate::etcd::EtcdConfig),
}

impl EngineConfig {
    pub fn name(&self) -> &'static str {
        match self {
            EngineConfig::Sled => "sled",
            EngineConfig::Etcd(_) => "etcd",
        }
    }
}

/// One query of [`Engine::pages`].
#[derive(Clone, Debug)]
pub struct PageQuery {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
    pub limit: usize,
    pub reverse: bool,
}

impl PageQuery {
    /// The value of `key`, if any.
    pub fn key(key: &[u8]) -> Self {
        PageQuery {
            start: key.to_vec(),
            end: Some(successor(key)),
            limit: 1,
            reverse: false,
        }
    }

    /// The one key a [`PageQuery::key`] asks for: a `get` answers it.
    pub fn exact_key(&self) -> Option<&[u8]> {
        (self.limit == 1 && !self.reverse && self.end.as_deref() == Some(&successor(&self.start)[..]))
            .then_some(&self.start[..])
    }

    /// The last pair in `[start, end)`.
    pub fn last_before(start: &[u8], end: &[u8]) -> Self {
        PageQuery {
            start: start.to_vec(),
            end: Some(end.to_vec()),
            limit: 1,
            reverse: true,
        }
    }
}

/// Why a group was not committed.
#[derive(Debug)]
pub enum CommitError {
    /// The engine may hold the group in part, or in memory only: nothing
    /// more may be built on it (fail-stop; the store refuses writes until
    /// it is reopened).
    Failed(String),
    /// The group was not applied, and the engine is as it was: its jobs
    /// get this error, and the committer goes on (etcd refused the `Txn`:
    /// out of space, too large).
    Refused(Error),
    /// The engine did not say whether the group was applied (the answer
    /// was lost: etcd unreachable, a timeout). Its jobs are answered
    /// `UNAVAILABLE` (a client retries with its request id, which returns
    /// the first outcome if it did land), and before the next group the
    /// committer follows the engine's changelog, which holds the group if
    /// it landed.
    Uncertain(String),
    /// The store moved on under this server: another server on the same
    /// store (etcd) committed since the group was staged, so its guard
    /// failed and nothing was written. The committer follows the changes it
    /// missed and stages the jobs again, on the new state.
    Conflict,
}

/// What an engine's watch on the store's head says ([`Engine::watch_head`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadEvent {
    /// The store's revision is now this: another server may have committed.
    Moved(u64),
    /// The watch is (again) open: changes missed meanwhile must be followed.
    Connected,
    /// The watch broke: this server cannot see other servers' commits until
    /// it is open again.
    Broken,
}

/// The most one commit may hold: etcd's `--max-txn-ops` and
/// `--max-request-bytes`.
#[derive(Clone, Copy, Debug)]
pub struct CommitLimits {
    pub ops: usize,
    pub bytes: usize,
}

/// A store engine. Every method may block (on disk or on the network), so
/// none is called from async code directly.
pub trait Engine: Send + Sync {
    /// `sled` or `etcd`, for logs and errors.
    fn name(&self) -> &'static str;

    /// The value of `key`, as last committed.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Up to `limit` pairs with keys in `[start, end)` (`None`: to the last
    /// key), ascending, or descending from the end when `reverse`.
    fn page(&self, start: &[u8], end: Option<&[u8]>, limit: usize, reverse: bool) -> Result<Vec<Pair>>;

    /// Several [`Engine::page`] queries at once (etcd: one round trip per
    /// 256, as one read-only `Txn`): how a server following others
    /// reads the hundreds of records a big revision points at.
    fn pages(&self, queries: &[PageQuery]) -> Result<Vec<Vec<Pair>>> {
        queries
            .iter()
            .map(|q| match q.exact_key() {
                Some(key) => Ok(self.get(key)?.map(|v| (key.to_vec(), v)).into_iter().collect()),
                None => self.page(&q.start, q.end.as_deref(), q.limit, q.reverse),
            })
            .collect()
    }

    /// Makes `ops` durable at once, outside any revision: only while the
    /// store opens, before the committer runs (seeds, the page secret).
    fn write(&self, ops: Vec<Op>) -> Result<()>;

    /// Puts `value` under `key` unless the key holds a value already; the
    /// value that stands. Only while the store opens: what several servers
    /// opening one store at once must agree on (the page-token secret, the
    /// seed articles), whichever of them writes first.
    fn write_if_absent(&self, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>> {
        if let Some(v) = self.get(key)? {
            return Ok(v);
        }
        self.write(vec![(key.to_vec(), Some(value.clone()))])?;
        Ok(value)
    }

    /// Commits one group, the store going from revision `base` to
    /// `revision` (the ops carry the revision key), durably and atomically.
    /// Called by the committer thread only, one group at a time.
    fn commit(&self, base: u64, revision: u64, ops: Vec<Op>) -> std::result::Result<(), CommitError>;

    /// The store's revision as the engine holds it: how the committer
    /// learns whether an [`CommitError::Uncertain`] group landed.
    fn stored_revision(&self) -> Result<u64>;

    /// From now on, reads see the store as it is now, whatever is committed
    /// later (etcd: reads at the current etcd revision): for an audit of a
    /// store that servers keep writing to. sled: the audit runs offline.
    fn pin_reads(&self) -> Result<()> {
        Ok(())
    }

    /// A read-only view of the store as it is now, which later commits (by
    /// any server) do not change: what a backup copies, so the copy is one
    /// revision of the store. `None`: this engine itself does not change
    /// between the committer's groups (sled: one server, and the backup
    /// runs between groups).
    fn frozen(&self) -> Result<Option<Box<dyn Engine>>> {
        Ok(None)
    }

    /// What one commit may hold, if the engine limits it.
    fn limits(&self) -> Option<CommitLimits> {
        None
    }

    /// The committer stopped: make everything durable where it lives for
    /// good (sled: a last checkpoint, the log deleted), unless `failed`.
    fn close(&self, failed: bool);

    /// Whether other servers may commit to the same store (etcd): then the
    /// store follows their changes ([`Engine::watch_head`]) and a read
    /// first makes sure it has every change committed before it began.
    fn shared(&self) -> bool {
        false
    }

    /// Calls `on` whenever the stored revision moves, and when the watch
    /// that tells breaks or opens again; one watch per server, however many
    /// clients watch it. sled: one server per store, nothing to watch.
    fn watch_head(&self, on: Box<dyn Fn(HeadEvent) + Send + Sync>) {
        let _ = on;
    }

    /// Blob files made durable since open (sled with `--sync` only).
    fn blob_files_synced(&self) -> u64 {
        0
    }
}

/// How many pairs a scan reads in its first page; each next page is twice
/// as big, up to [`MAX_PAGE`]. Most scans want one or two pairs (the last
/// history record of an annotation), a few want them all.
const FIRST_PAGE: usize = 4;
const MAX_PAGE: usize = 1024;

/// The first key after `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

/// The first key after every key that starts with `prefix`; `None` if
/// there is none (the prefix is all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Pairs in key order, read a page at a time.
pub struct Scan<'a> {
    engine: &'a dyn Engine,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    reverse: bool,
    page: std::vec::IntoIter<Pair>,
    next_page: usize,
    done: bool,
}

impl Iterator for Scan<'_> {
    type Item = Result<Pair>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(pair) = self.page.next() {
                return Some(Ok(pair));
            }
            if self.done {
                return None;
            }
            let want = self.next_page;
            self.next_page = (want * 2).min(MAX_PAGE);
            let page = match self
                .engine
                .page(&self.start, self.end.as_deref(), want, self.reverse)
            {
                Ok(p) => p,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if page.len() < want {
                self.done = true;
            }
            match page.last() {
                None => return None,
                Some((k, _)) if self.reverse => self.end = Some(k.clone()),
                Some((k, _)) => self.start = successor(k),
            }
            self.page = page.into_iter();
        }
    }
}

impl dyn Engine + '_ {
    /// Every pair within the bounds, ascending.
    pub fn range(&self, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> Scan<'_> {
        self.scan_bounds(lower, upper, false)
    }

    /// Every pair whose key starts with `prefix`, ascending.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Scan<'_> {
        self.scan_bounds(Bound::Included(prefix), end_bound(prefix).as_deref(), false)
    }

    /// Every pair whose key starts with `prefix`, descending.
    pub fn scan_prefix_rev(&self, prefix: &[u8]) -> Scan<'_> {
        self.scan_bounds(Bound::Included(prefix), end_bound(prefix).as_deref(), true)
    }

    /// The last pair whose key starts with `prefix`.
    pub fn last_in(&self, prefix: &[u8]) -> Result<Option<Pair>> {
        let end = prefix_end(prefix);
        Ok(self.page(prefix, end.as_deref(), 1, true)?.pop())
    }

    /// The last pair with a key in `[start, end)`.
    pub fn last_before(&self, start: &[u8], end: &[u8]) -> Result<Option<Pair>> {
        Ok(self.page(start, Some(end), 1, true)?.pop())
    }

    /// Whether any key starts with `prefix`.
    pub fn any_in(&self, prefix: &[u8]) -> Result<bool> {
        let end = prefix_end(prefix);
        Ok(!self.page(prefix, end.as_deref(), 1, false)?.is_empty())
    }

    /// Every pair, ascending.
    pub fn iter(&self) -> Scan<'_> {
        self.scan_bounds(Bound::Unbounded, Bound::Unbounded, false)
    }

    fn scan_bounds(&self, lower: Bound<&[u8]>, upper: Bound<&[u8]>, reverse: bool) -> Scan<'_> {
        let start = match lower {
            Bound::Included(k) => k.to_vec(),
            Bound::Excluded(k) => successor(k),
            Bound::Unbounded => Vec::new(),
        };
        let end = match upper {
            Bound::Included(k) => Some(successor(k)),
            Bound::Excluded(k) => Some(k.to_vec()),
            Bound::Unbounded => None,
        };
        Scan {
            engine: self,
            start,
            end,
            reverse,
            page: Vec::new().into_iter(),
            next_page: FIRST_PAGE,
            done: false,
        }
    }
}

/// The upper bound of the keys starting with `prefix`.
fn end_bound(prefix: &[u8]) -> BoundBuf {
    BoundBuf(prefix_end(prefix))
}

/// An owned upper bound, borrowed as a `Bound<&[u8]>`.
struct BoundBuf(Option<Vec<u8>>);

impl BoundBuf {
    fn as_deref(&self) -> Bound<&[u8]> {
        match &self.0 {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => Bound::Unbounded,
        }
    }
}

/// Collapses `ops` to the last change of each key, in first-seen order:
/// what applying them in order leaves. etcd refuses a `Txn` that names a
/// key twice.
pub fn last_op_per_key(ops: Vec<Op>) -> Vec<Op> {
    let mut at: std::collections::HashMap<Vec<u8>, usize> = std::collections::HashMap::new();
    let mut out: Vec<Op> = Vec::with_capacity(ops.len());
    for (k, v) in ops {
        match at.get(&k) {
            Some(&i) => out[i].1 = v,
            None => {
                at.insert(k.clone(), out.len());
                out.push((k, v));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_op_per_key_keeps_what_order_leaves() {
        let ops = vec![
            (b"a".to_vec(), Some(b"1".to_vec())),
            (b"b".to_vec(), Some(b"2".to_vec())),
            (b"a".to_vec(), None),
            (b"b".to_vec(), Some(b"3".to_vec())),
        ];
        assert_eq!(
            last_op_per_key(ops),
            vec![(b"a".to_vec(), None), (b"b".to_vec(), Some(b"3".to_vec()))]
        );
    }

    #[test]
    fn prefix_end_of_all_ff_is_none() {
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
