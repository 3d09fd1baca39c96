//! Whether the cluster takes the transactions the server will send.
//!
//! etcd refuses a `Txn` with more than `--max-txn-ops` operations (default
//! 128; it counts the largest of the compares, the success and the failure
//! operations) and a proposal bigger than `--max-request-bytes` (default
//! 1.5 MiB). Neither is readable through the API, so the server probes them
//! at start-up and refuses to start with the flag to set, rather than
//! failing its first big batch.

use super::kv::{CmpOp, Compare, Delete, Get, Txn};
use super::{EtcdClient, EtcdError, SCRATCH_KEY};

/// Why the cluster cannot take the batches needed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// A `Txn` of `needed` operations was refused.
    #[error(
        "etcd refuses a transaction of {needed} operations: start every etcd member with --max-txn-ops={needed} (or more; the default is 128)"
    )]
    TooFewOps { needed: usize },
    /// A request of `needed` bytes was refused.
    #[error(
        "etcd refuses a request of {needed} bytes: start every etcd member with --max-request-bytes={flag} (or more; the default is 1572864)",
        flag = max_request_bytes_flag(*needed)
    )]
    TooFewBytes { needed: usize },
    /// The probe itself failed (etcd unavailable, out of space...).
    #[error("could not probe etcd's limits: {0}")]
    Etcd(#[from] EtcdError),
}

/// The `--max-request-bytes` that lets a request of `needed` bytes through:
/// etcd wraps a request in a raft proposal with a header of a few dozen
/// bytes, so a little more than the request.
pub fn max_request_bytes_flag(needed: usize) -> usize {
    needed + 1024
}

/// Checks that the cluster takes a `Txn` of `needed_ops` operations and a
/// request of `needed_bytes` bytes; the error says which etcd flag to set,
/// to what.
///
/// Neither probe changes anything. The first is a `Txn` of `needed_ops`
/// reads of [`SCRATCH_KEY`] (read-only: no revision). The second is a `Txn`
/// that would delete a key of about `needed_bytes` under the scratch key if
/// its compare held, which it never does (a version of -1): a transaction
/// with a write goes through raft, where etcd checks the size, and one
/// whose branch writes nothing makes no revision. Keep `needed_bytes`
/// under 10 MiB: etcd up to 3.5 cannot restart from a log entry bigger
/// than that (`wal: max entry size limit exceeded`).
pub async fn probe_limits(
    client: &EtcdClient,
    needed_ops: usize,
    needed_bytes: usize,
) -> Result<(), LimitsError> {
    let reads = Txn::new().and_then((0..needed_ops).map(|_| Get::key(SCRATCH_KEY).count_only()));
    match client.txn(reads).await {
        Ok(_) => {}
        Err(EtcdError::TooManyOps) => return Err(LimitsError::TooFewOps { needed: needed_ops }),
        Err(e) => return Err(e.into()),
    }
    // A delete, not a put: etcd charges a put's bytes against its space
    // quota even when the compare fails, so a put probe could raise the
    // NOSPACE alarm on a cluster that is nearly full. A delete costs no
    // quota and is proposed through raft all the same.
    let never = || Txn::new().when([Compare::version(SCRATCH_KEY, CmpOp::Equal, -1)]);
    let overhead = client.encoded_len(&never().and_then([Delete::key(SCRATCH_KEY.to_vec())]));
    // the key's length prefix grows with it: a few bytes over, never under
    let key = [SCRATCH_KEY, &vec![0u8; needed_bytes.saturating_sub(overhead)]].concat();
    let big = never().and_then([Delete::key(key)]);
    debug_assert!(client.encoded_len(&big) >= needed_bytes);
    match client.txn(big).await {
        Ok(r) if !r.succeeded => Ok(()),
        Ok(_) => Err(EtcdError::Other {
            code: tonic::Code::Internal,
            message: "the limits probe's compare held: it wrote its scratch key".into(),
        }
        .into()),
        Err(EtcdError::RequestTooLarge) => Err(LimitsError::TooFewBytes { needed: needed_bytes }),
        Err(e) => Err(e.into()),
    }
}
