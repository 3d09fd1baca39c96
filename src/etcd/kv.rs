//! Reads, writes, transactions and compaction, in keys relative to the
//! client's prefix.

use super::pb::etcdserverpb as pb;
use super::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use super::pb::mvccpb;

/// A key as etcd stores it, with the client's prefix taken off.
pub type KeyValue = mvccpb::KeyValue;

/// Which keys a read, a delete or a watch is about, relative to the prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keys {
    /// One key.
    One(Vec<u8>),
    /// Every key that starts with these bytes (all of them when empty).
    Prefix(Vec<u8>),
    /// `[start, end)`; an empty `end` is the end of the client's prefix.
    Range(Vec<u8>, Vec<u8>),
}

impl Keys {
    /// etcd's `key` and `range_end` for these keys under `prefix`.
    pub(crate) fn to_etcd(&self, prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let join = |k: &[u8]| [prefix, k].concat();
        match self {
            Keys::One(k) => (join(k), Vec::new()),
            Keys::Prefix(p) => {
                let key = join(p);
                let end = prefix_end(&key);
                (key, end)
            }
            Keys::Range(start, end) if end.is_empty() => (join(start), prefix_end(prefix)),
            Keys::Range(start, end) => (join(start), join(end)),
        }
    }
}

/// The first key after every key that starts with `prefix`: etcd's
/// `range_end` for a prefix (`"\0"`, every key, when there is none).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A read: `Range`.
#[derive(Clone, Debug)]
pub struct Get {
    keys: Keys,
    revision: i64,
    limit: i64,
    keys_only: bool,
    count_only: bool,
    serializable: bool,
    descending: bool,
}

impl Get {
    pub fn new(keys: Keys) -> Self {
        Self {
            keys,
            revision: 0,
            limit: 0,
            keys_only: false,
            count_only: false,
            serializable: false,
            descending: false,
        }
    }
    /// One key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self::new(Keys::One(key.into()))
    }
    /// Every key starting with `prefix` (under the client's).
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self::new(Keys::Prefix(prefix.into()))
    }
    /// The state as it was at `revision` (0: now). Older than the
    /// compaction point: [`super::EtcdError::Compacted`].
    pub fn at_revision(mut self, revision: i64) -> Self {
        self.revision = revision;
        self
    }
    /// At most `limit` keys, in key order (`more` says if there were more).
    pub fn limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }
    /// Keys and revisions without values.
    pub fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }
    /// Only the count.
    pub fn count_only(mut self) -> Self {
        self.count_only = true;
        self
    }
    /// Answered by the member asked, from what it has applied, without a
    /// quorum round: may be stale. The default is linearizable.
    pub fn serializable(mut self) -> Self {
        self.serializable = true;
        self
    }

    /// In descending key order: with a limit, the last keys of the range.
    pub fn descending(mut self) -> Self {
        self.descending = true;
        self
    }

    pub(crate) fn to_etcd(&self, prefix: &[u8]) -> pb::RangeRequest {
        let (key, range_end) = self.keys.to_etcd(prefix);
        pb::RangeRequest {
            key,
            range_end,
            limit: self.limit,
            revision: self.revision,
            keys_only: self.keys_only,
            count_only: self.count_only,
            serializable: self.serializable,
            sort_order: if self.descending {
                pb::range_request::SortOrder::Descend as i32
            } else {
                pb::range_request::SortOrder::None as i32
            },
            sort_target: pb::range_request::SortTarget::Key as i32,
            ..Default::default()
        }
    }

    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }
}

/// A write of one key: `Put`.
#[derive(Clone, Debug)]
pub struct Put {
    key: Vec<u8>,
    value: Vec<u8>,
    lease: i64,
    prev_kv: bool,
}

impl Put {
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            lease: 0,
            prev_kv: false,
        }
    }
    /// Deleted with the lease when it expires or is revoked.
    pub fn lease(mut self, lease: i64) -> Self {
        self.lease = lease;
        self
    }
    /// Answer the value it replaced.
    pub fn prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    pub(crate) fn to_etcd(&self, prefix: &[u8]) -> pb::PutRequest {
        pb::PutRequest {
            key: [prefix, &self.key].concat(),
            value: self.value.clone(),
            lease: self.lease,
            prev_kv: self.prev_kv,
            ..Default::default()
        }
    }
}

/// A delete: `DeleteRange`.
#[derive(Clone, Debug)]
pub struct Delete {
    keys: Keys,
    prev_kv: bool,
}

impl Delete {
    pub fn new(keys: Keys) -> Self {
        Self { keys, prev_kv: false }
    }
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self::new(Keys::One(key.into()))
    }
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self::new(Keys::Prefix(prefix.into()))
    }
    /// Answer the deleted keys' last values.
    pub fn prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    pub(crate) fn to_etcd(&self, prefix: &[u8]) -> pb::DeleteRangeRequest {
        let (key, range_end) = self.keys.to_etcd(prefix);
        pb::DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.prev_kv,
        }
    }
}

/// One operation of a [`Txn`].
#[derive(Clone, Debug)]
pub enum Op {
    Get(Get),
    Put(Put),
    Delete(Delete),
}

impl From<Get> for Op {
    fn from(g: Get) -> Self {
        Op::Get(g)
    }
}
impl From<Put> for Op {
    fn from(p: Put) -> Self {
        Op::Put(p)
    }
}
impl From<Delete> for Op {
    fn from(d: Delete) -> Self {
        Op::Delete(d)
    }
}

impl Op {
    fn to_etcd(&self, prefix: &[u8]) -> pb::RequestOp {
        use pb::request_op::Request;
        let request = match self {
            Op::Get(g) => Request::RequestRange(g.to_etcd(prefix)),
            Op::Put(p) => Request::RequestPut(p.to_etcd(prefix)),
            Op::Delete(d) => Request::RequestDeleteRange(d.to_etcd(prefix)),
        };
        pb::RequestOp {
            request: Some(request),
        }
    }
}

/// How a [`Compare`] compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// A condition of a [`Txn`] on one key. A key that does not exist has
/// revisions and version 0 (so `create_revision(k, Equal, 0)` is "absent").
#[derive(Clone, Debug)]
pub struct Compare {
    key: Vec<u8>,
    op: CmpOp,
    target: TargetUnion,
}

impl Compare {
    /// On the revision of the key's last change: the etag check.
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CmpOp, revision: i64) -> Self {
        Self {
            key: key.into(),
            op,
            target: TargetUnion::ModRevision(revision),
        }
    }
    /// On the revision that created the key (0: absent).
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CmpOp, revision: i64) -> Self {
        Self {
            key: key.into(),
            op,
            target: TargetUnion::CreateRevision(revision),
        }
    }
    /// On the number of changes since the key was created (0: absent).
    pub fn version(key: impl Into<Vec<u8>>, op: CmpOp, version: i64) -> Self {
        Self {
            key: key.into(),
            op,
            target: TargetUnion::Version(version),
        }
    }
    /// On the value (bytewise). An absent key's comparison is false.
    pub fn value(key: impl Into<Vec<u8>>, op: CmpOp, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            op,
            target: TargetUnion::Value(value.into()),
        }
    }

    fn to_etcd(&self, prefix: &[u8]) -> pb::Compare {
        let result = match self.op {
            CmpOp::Equal => CompareResult::Equal,
            CmpOp::NotEqual => CompareResult::NotEqual,
            CmpOp::Greater => CompareResult::Greater,
            CmpOp::Less => CompareResult::Less,
        };
        let target = match self.target {
            TargetUnion::Version(_) => CompareTarget::Version,
            TargetUnion::CreateRevision(_) => CompareTarget::Create,
            TargetUnion::ModRevision(_) => CompareTarget::Mod,
            TargetUnion::Value(_) => CompareTarget::Value,
            TargetUnion::Lease(_) => CompareTarget::Lease,
        };
        pb::Compare {
            result: result as i32,
            target: target as i32,
            key: [prefix, &self.key].concat(),
            range_end: Vec::new(),
            target_union: Some(self.target.clone()),
        }
    }
}

/// If every compare holds, the `success` operations, else the `failure`
/// ones, atomically, in one revision (none if nothing is written). etcd
/// refuses more than `--max-txn-ops` in the largest of the three lists, and
/// two writes of one key.
#[derive(Clone, Debug, Default)]
pub struct Txn {
    compares: Vec<Compare>,
    success: Vec<Op>,
    failure: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }
    pub fn and_then(mut self, ops: impl IntoIterator<Item = impl Into<Op>>) -> Self {
        self.success.extend(ops.into_iter().map(Into::into));
        self
    }
    pub fn or_else(mut self, ops: impl IntoIterator<Item = impl Into<Op>>) -> Self {
        self.failure.extend(ops.into_iter().map(Into::into));
        self
    }
    /// What etcd counts against `--max-txn-ops`.
    pub fn ops(&self) -> usize {
        self.compares
            .len()
            .max(self.success.len())
            .max(self.failure.len())
    }

    pub(crate) fn to_etcd(&self, prefix: &[u8]) -> pb::TxnRequest {
        pb::TxnRequest {
            compare: self.compares.iter().map(|c| c.to_etcd(prefix)).collect(),
            success: self.success.iter().map(|o| o.to_etcd(prefix)).collect(),
            failure: self.failure.iter().map(|o| o.to_etcd(prefix)).collect(),
        }
    }
}

/// What a read found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RangeResult {
    /// The store's revision the read saw.
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
    /// There were more keys than the limit.
    pub more: bool,
    /// How many keys are in the range (all of them, not just `kvs`).
    pub count: i64,
}

/// What a put did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PutResult {
    /// The revision of the write.
    pub revision: i64,
    /// What it replaced, if asked for and there was something.
    pub prev: Option<KeyValue>,
}

/// What a delete did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeleteResult {
    pub revision: i64,
    pub deleted: i64,
    pub prev: Vec<KeyValue>,
}

/// The result of one operation of a transaction, in the order given.
#[derive(Clone, Debug, PartialEq)]
pub enum OpResult {
    Get(RangeResult),
    Put(PutResult),
    Delete(DeleteResult),
}

/// What a transaction did.
#[derive(Clone, Debug, PartialEq)]
pub struct TxnResult {
    /// The store's revision after it: the revision of its writes if it wrote.
    pub revision: i64,
    /// Whether the compares held (the `success` operations ran).
    pub succeeded: bool,
    pub results: Vec<OpResult>,
}

/// The client's prefix off every key.
pub(crate) fn strip(prefix: &[u8], mut kv: KeyValue) -> KeyValue {
    if kv.key.starts_with(prefix) {
        kv.key.drain(..prefix.len());
    }
    kv
}

fn revision(header: &Option<pb::ResponseHeader>) -> i64 {
    header.as_ref().map_or(0, |h| h.revision)
}

pub(crate) fn range_result(prefix: &[u8], r: pb::RangeResponse) -> RangeResult {
    RangeResult {
        revision: revision(&r.header),
        kvs: r.kvs.into_iter().map(|kv| strip(prefix, kv)).collect(),
        more: r.more,
        count: r.count,
    }
}

pub(crate) fn put_result(prefix: &[u8], r: pb::PutResponse) -> PutResult {
    PutResult {
        revision: revision(&r.header),
        prev: r.prev_kv.map(|kv| strip(prefix, kv)),
    }
}

pub(crate) fn delete_result(prefix: &[u8], r: pb::DeleteRangeResponse) -> DeleteResult {
    DeleteResult {
        revision: revision(&r.header),
        deleted: r.deleted,
        prev: r.prev_kvs.into_iter().map(|kv| strip(prefix, kv)).collect(),
    }
}

pub(crate) fn txn_result(prefix: &[u8], r: pb::TxnResponse) -> TxnResult {
    use pb::response_op::Response;
    let results = r
        .responses
        .into_iter()
        .filter_map(|op| match op.response? {
            Response::ResponseRange(r) => Some(OpResult::Get(range_result(prefix, r))),
            Response::ResponsePut(r) => Some(OpResult::Put(put_result(prefix, r))),
            Response::ResponseDeleteRange(r) => Some(OpResult::Delete(delete_result(prefix, r))),
            // nested transactions are not built by this client
            Response::ResponseTxn(_) => None,
        })
        .collect();
    TxnResult {
        revision: revision(&r.header),
        succeeded: r.succeeded,
        results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/factcheck/"), b"/factcheck0".to_vec());
        assert_eq!(prefix_end(b"a\xff\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn keys_stay_under_the_prefix() {
        let p = b"/p/".as_slice();
        assert_eq!(Keys::One(b"k".to_vec()).to_etcd(p), (b"/p/k".to_vec(), vec![]));
        assert_eq!(
            Keys::Prefix(b"a/".to_vec()).to_etcd(p),
            (b"/p/a/".to_vec(), b"/p/a0".to_vec())
        );
        assert_eq!(
            Keys::Prefix(vec![]).to_etcd(p),
            (b"/p/".to_vec(), b"/p0".to_vec())
        );
        assert_eq!(
            Keys::Range(b"b".to_vec(), vec![]).to_etcd(p),
            (b"/p/b".to_vec(), b"/p0".to_vec())
        );
        assert_eq!(
            strip(
                p,
                KeyValue {
                    key: b"/p/k".to_vec(),
                    ..Default::default()
                }
            )
            .key,
            b"k".to_vec()
        );
    }
}
