//! What can go wrong talking to etcd, in the few kinds a caller decides on.

use tonic::Code;

/// An etcd call that failed, sorted by what the caller does about it.
///
/// etcd answers errors as gRPC statuses whose messages are its API
/// (`api/v3rpc/rpctypes/error.go`): [`EtcdError::from_status`] reads them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// No member answered in time, the member has no leader, the leader
    /// changed or etcd sheds load: retry, on another member if there are
    /// several. Exists because this is the one failure a cluster recovers
    /// from by itself (an election takes seconds), so the server answers
    /// `UNAVAILABLE` and clients retry. For a write it does **not** mean
    /// "not applied": an answer lost on the way back looks the same, which is
    /// why writes carry request ids.
    #[error("etcd is unavailable: {0}")]
    Unavailable(String),
    /// The revision asked for (a read at a revision, a watch start, a
    /// compaction) is older than etcd's compaction point; `oldest` is the
    /// oldest revision etcd still holds. Exists because the caller's answer
    /// is specific: a watcher relists and watches from `oldest` or later, an
    /// as-of read reports the oldest revision readable.
    #[error("etcd compacted revision {requested}: the oldest revision it holds is {oldest}")]
    Compacted { requested: i64, oldest: i64 },
    /// etcd raised its NOSPACE alarm (the backend reached
    /// `--quota-backend-bytes`): it refuses every write until an operator
    /// compacts, defragments and disarms the alarm, while reads go on.
    /// Exists so the server answers `RESOURCE_EXHAUSTED` with that reason
    /// rather than an opaque failure.
    #[error("etcd is out of space (NOSPACE alarm: --quota-backend-bytes reached)")]
    NoSpace,
    /// A `Txn` had more operations than the cluster's `--max-txn-ops`
    /// (default 128). Exists because the fix is an etcd flag, not a retry:
    /// [`super::probe_limits`] turns it into the flag and value needed.
    #[error("etcd refused a Txn with too many operations (--max-txn-ops)")]
    TooManyOps,
    /// A request was bigger than the cluster's `--max-request-bytes`
    /// (default 1.5 MiB) or its gRPC receive limit (that plus 512 KiB).
    /// Exists for the same reason as [`EtcdError::TooManyOps`].
    #[error("etcd refused a request as too large (--max-request-bytes)")]
    RequestTooLarge,
    /// Anything else etcd or the transport said (a bad argument, a lease
    /// not found, a corrupt cluster...): a bug or an operator's problem, not
    /// something a caller retries.
    #[error("etcd error {code:?}: {message}")]
    Other { code: Code, message: String },
}

impl EtcdError {
    /// Sorts a status from an etcd call. A compaction error comes out as
    /// `Compacted` with both revisions 0: the client fills them in
    /// ([`super::EtcdClient`] looks the oldest revision up).
    pub fn from_status(status: &tonic::Status) -> Self {
        let message = status.message();
        match status.code() {
            Code::OutOfRange if message.contains("required revision has been compacted") => Self::Compacted {
                requested: 0,
                oldest: 0,
            },
            Code::ResourceExhausted if message.contains("database space exceeded") => Self::NoSpace,
            // grpc-go's own limit (etcd sets it to --max-request-bytes + 512 KiB)
            Code::ResourceExhausted if message.contains("larger than max") => Self::RequestTooLarge,
            // "etcdserver: too many requests": etcd sheds load
            Code::ResourceExhausted if message.contains("too many requests") => {
                Self::Unavailable(message.to_owned())
            }
            Code::InvalidArgument if message.contains("too many operations in txn request") => {
                Self::TooManyOps
            }
            Code::InvalidArgument if message.contains("request is too large") => Self::RequestTooLarge,
            // no leader, leader changed, timeouts, stopped, unhealthy,
            // refused connections; "not leader" is a member that lost it.
            Code::Unavailable | Code::DeadlineExceeded => Self::Unavailable(message.to_owned()),
            Code::FailedPrecondition if message.contains("not leader") => {
                Self::Unavailable(message.to_owned())
            }
            // A member whose leader died while it waited on the request
            // (a proposal or a read index) answers grpc-go's context error
            // as UNKNOWN: seen when the leader is killed under load.
            Code::Unknown if message.contains("context deadline exceeded") => {
                Self::Unavailable(message.to_owned())
            }
            // A status tonic made from a transport failure (a connection
            // reset mid-stream, a member killed): it carries its cause,
            // a status etcd sent does not.
            Code::Unknown | Code::Internal | Code::Cancelled
                if std::error::Error::source(status).is_some() =>
            {
                Self::Unavailable(format!(
                    "{message}: {}",
                    std::error::Error::source(status).unwrap()
                ))
            }
            code => Self::Other {
                code,
                message: message.to_owned(),
            },
        }
    }

    /// Whether retrying (elsewhere, later) can help.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<tonic::Status> for EtcdError {
    fn from(status: tonic::Status) -> Self {
        Self::from_status(&status)
    }
}

/// What this module's calls return.
pub type Result<T, E = EtcdError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    #[test]
    fn etcd_messages_are_sorted() {
        let e = |code, msg: &str| EtcdError::from_status(&Status::new(code, msg));
        assert_eq!(
            e(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted"
            ),
            EtcdError::Compacted {
                requested: 0,
                oldest: 0
            }
        );
        assert_eq!(
            e(
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded"
            ),
            EtcdError::NoSpace
        );
        assert_eq!(
            e(
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request"
            ),
            EtcdError::TooManyOps
        );
        assert_eq!(
            e(Code::InvalidArgument, "etcdserver: request is too large"),
            EtcdError::RequestTooLarge
        );
        assert_eq!(
            e(
                Code::ResourceExhausted,
                "grpc: received message larger than max (3000000 vs. 2097152)"
            ),
            EtcdError::RequestTooLarge
        );
        assert!(e(Code::Unavailable, "etcdserver: no leader").is_unavailable());
        assert!(e(Code::ResourceExhausted, "etcdserver: too many requests").is_unavailable());
        assert!(e(Code::FailedPrecondition, "etcdserver: not leader").is_unavailable());
        assert!(e(Code::Unknown, "context deadline exceeded").is_unavailable());
        assert!(matches!(
            e(
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request"
            ),
            EtcdError::Other {
                code: Code::InvalidArgument,
                ..
            }
        ));
        assert!(matches!(
            e(Code::Unknown, "etcd said so"),
            EtcdError::Other { .. }
        ));
    }
}
