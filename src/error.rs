//! The one error type of the service and its one mapping to gRPC statuses.
//!
//! Messages are lowercase with no trailing period. `Internal` carries the
//! detail for the log only: clients see a generic message, never a sled error
//! or a file path.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every error this service raises.
pub const ERROR_DOMAIN: &str = "factcheck.v1";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is invalid whatever the state of the store.
    #[error("invalid {field}: {description}")]
    InvalidArgument {
        /// Which failure, for scripts (`SPAN_OUT_OF_RANGE`, ...): one per
        /// kind of mistake, listed in the README.
        reason: &'static str,
        field: String,
        description: String,
    },

    /// A named resource does not exist.
    #[error("{resource} not found")]
    NotFound { resource: String },

    /// The request conflicts with what already exists.
    #[error("{message}")]
    AlreadyExists { reason: &'static str, message: String },

    /// The request cannot succeed until the state changes.
    #[error("{message}")]
    FailedPrecondition { reason: &'static str, message: String },

    /// A concurrent change won: re-read and retry the read-modify-write.
    #[error("{message}")]
    Aborted { reason: &'static str, message: String },

    /// A watch asked for a revision the changelog no longer holds.
    #[error("{message}")]
    Compacted { message: String, oldest: u64 },

    /// A read named a revision this server cannot read at: older than the
    /// changelog's retention (`oldest` is the oldest it can), or newer than
    /// any the store has written.
    #[error("{message}")]
    OutOfRange {
        reason: &'static str,
        message: String,
        oldest: Option<u64>,
    },

    /// A limit was reached.
    #[error("{message}")]
    ResourceExhausted { reason: &'static str, message: String },

    /// No valid bearer token.
    #[error("{0}")]
    Unauthenticated(String),

    /// The caller's role does not allow the call, or not on this annotation.
    #[error("{message}")]
    PermissionDenied { reason: &'static str, message: String },

    /// The server is shutting down.
    #[error("the server is shutting down")]
    Unavailable,

    /// The store's engine cannot be reached now (etcd has no quorum, is
    /// restarting, or did not answer): retry. For a write, `reason` says
    /// whether it may have landed (`COMMIT_OUTCOME_UNKNOWN`: retry with the
    /// same request_id, which returns the first outcome if it did).
    #[error("{message}")]
    StoreUnavailable { reason: &'static str, message: String },

    /// The store failed to make a commit durable earlier: it refuses writes
    /// until restarted (fail-stop).
    #[error("the store failed to write to disk and refuses writes until the server is restarted")]
    StoreFailed,

    /// This call's commit could not be made durable (e.g. the disk is full).
    /// Readers never saw it; after a restart it may or may not be there.
    #[error(
        "the write could not be made durable and was not applied here; after the server restarts it may or may not be there: retry with the same request_id"
    )]
    CommitFailed,

    /// One child of a batch failed, which fails the whole batch.
    #[error("{at}: {error}")]
    Child { at: String, error: Box<Error> },

    /// A bug or a storage failure; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(reason: &'static str, field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument {
            reason,
            field: field.into(),
            description: description.into(),
        }
    }

    pub fn not_found(resource: impl Into<String>) -> Self {
        Error::NotFound {
            resource: resource.into(),
        }
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Error::Internal(detail.to_string())
    }

    /// This error, as the failure of the batch child `at` (`requests[3]`).
    pub fn at(self, at: impl Into<String>) -> Self {
        match self {
            // Internal errors are about the whole call, not a child.
            Error::Internal(_)
            | Error::Unavailable
            | Error::StoreUnavailable { .. }
            | Error::StoreFailed
            | Error::CommitFailed => self,
            error => Error::Child {
                at: at.into(),
                error: Box::new(error),
            },
        }
    }

    /// The `ErrorInfo.reason` (UPPER_SNAKE, AIP-193).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidArgument { reason, .. } => reason,
            Error::NotFound { resource } => not_found_reason(resource),
            Error::AlreadyExists { reason, .. }
            | Error::FailedPrecondition { reason, .. }
            | Error::Aborted { reason, .. }
            | Error::ResourceExhausted { reason, .. }
            | Error::StoreUnavailable { reason, .. }
            | Error::OutOfRange { reason, .. }
            | Error::PermissionDenied { reason, .. } => reason,
            Error::Compacted { .. } => "REVISION_COMPACTED",
            Error::Child { error, .. } => error.reason(),
            Error::Unauthenticated(_) => "UNAUTHENTICATED",
            Error::Unavailable => "UNAVAILABLE",
            Error::StoreFailed => "STORE_FAILED",
            Error::CommitFailed => "COMMIT_FAILED",
            Error::Internal(_) => "INTERNAL",
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound { .. } => Code::NotFound,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::FailedPrecondition { .. } => Code::FailedPrecondition,
            Error::Aborted { .. } => Code::Aborted,
            Error::Compacted { .. } => Code::FailedPrecondition,
            Error::OutOfRange { .. } => Code::OutOfRange,
            Error::ResourceExhausted { .. } => Code::ResourceExhausted,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied { .. } => Code::PermissionDenied,
            Error::Unavailable | Error::StoreUnavailable { .. } | Error::StoreFailed => Code::Unavailable,
            Error::CommitFailed => Code::Internal,
            Error::Child { error, .. } => error.code(),
            Error::Internal(_) => Code::Internal,
        }
    }
}

/// What kind of resource `resource` (a name) is, as a reason.
fn not_found_reason(resource: &str) -> &'static str {
    if resource.contains("/annotations/") {
        "ANNOTATION_NOT_FOUND"
    } else if resource.contains("/adjudications/") {
        "ADJUDICATION_NOT_FOUND"
    } else if resource.contains('@') {
        "ARTICLE_REVISION_NOT_FOUND"
    } else {
        "ARTICLE_NOT_FOUND"
    }
}

/// The longest message or field description sent: errors quote the input,
/// and a quoted 20 KB name would make a response header no client accepts.
const MAX_MESSAGE_CHARS: usize = 512;

/// `s` cut to [`MAX_MESSAGE_CHARS`] code points, marked where cut.
fn capped(s: String) -> String {
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => format!("{}… (cut)", &s[..at]),
        None => s,
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let mut metadata = std::collections::HashMap::<String, String>::new();
        if let Error::Compacted { oldest, .. }
        | Error::OutOfRange {
            oldest: Some(oldest), ..
        } = &err
        {
            metadata.insert("oldest_revision".into(), oldest.to_string());
        }
        // A batch child's error: say which child, and prefix its field.
        let (prefix, inner) = match &err {
            Error::Child { at, error } => {
                metadata.insert("child".into(), at.clone());
                (format!("{at}."), error.as_ref())
            }
            _ => (String::new(), &err),
        };
        let mut details = ErrorDetails::with_error_info(err.reason(), ERROR_DOMAIN, metadata);
        let message = match inner {
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error".to_owned()
            }
            Error::InvalidArgument {
                field, description, ..
            } => {
                details.add_bad_request_violation(
                    capped(format!("{prefix}{field}")),
                    capped(description.clone()),
                );
                err.to_string()
            }
            Error::NotFound { resource } => {
                details.set_resource_info("", capped(resource.clone()), "", "");
                err.to_string()
            }
            _ => err.to_string(),
        };
        Status::with_error_details(err.code(), capped(message), details)
    }
}
