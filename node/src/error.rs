//! Node errors and their wire statuses.
//!
//! The one place where an error becomes a protocol [`Status`] (and, through it, an HTTP code):
//! `impl From<&NodeError> for Status`. Handlers return `NodeError`; the connection loop maps.

use ellipsis_core::protocol::{ProtocolError, Status};

use crate::backend::BackendError;

/// What can go wrong while serving a request or running the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A backend (or its engine) refused or failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The request did not decode.
    #[error("bad request: {0}")]
    Protocol(#[from] ProtocolError),
    /// No such backend on this node.
    #[error("no backend {0} on this node")]
    NoBackend(u32),
    /// The key's owner is another node and forwarding is not allowed or failed.
    #[error("cannot reach the owner: {0}")]
    Unreachable(String),
    /// Admin command without a valid token.
    #[error("admin token missing or wrong")]
    Unauthorized,
    /// Queue full.
    #[error("overloaded: {0}")]
    Busy(String),
    /// The command is not supported.
    #[error("command not supported: {0}")]
    NotSupported(String),
    /// Request is malformed beyond decoding (bad combination, bad range).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A peer answered with an error status while forwarding.
    #[error("peer answered {0}")]
    Peer(Status),
    /// Startup failed.
    #[error("startup: {0}")]
    Startup(String),
    /// Socket or file failure at the node level.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A job control request (pause / continue / cancel) was refused.
    #[error(transparent)]
    Job(#[from] crate::worker::ControlError),
    /// The request's job was cancelled before it finished.
    #[error("cancelled: {0}")]
    Cancelled(String),
}

impl From<&NodeError> for Status {
    fn from(e: &NodeError) -> Status {
        use eblob::Error as E;
        match e {
            NodeError::Backend(BackendError::Engine(engine)) => match engine {
                E::NotFound => Status::NOT_FOUND,
                E::Uncommitted => Status::UNCOMMITTED,
                E::NewerExists { .. } => Status::NEWER_EXISTS,
                E::Corrupted { .. } => Status::CORRUPTED,
                E::NoSpace { .. } => Status::NO_SPACE,
                E::ReadOnly { .. } => Status::READ_ONLY,
                // The bytes that arrived are not the ones the writer named.
                E::DataMismatch { .. } => Status::CORRUPTED,
                E::OutOfRange { .. } | E::InvalidArgument(_) | E::ChecksumMismatch { .. } => {
                    Status::INVALID
                }
                E::SortRunning => Status::AGAIN,
                _ => Status::IO,
            },
            NodeError::Backend(BackendError::Disabled(_)) => Status::UNREACHABLE,
            NodeError::Backend(BackendError::ReadOnly { .. }) => Status::READ_ONLY,
            NodeError::Backend(_) => Status::IO,
            NodeError::Protocol(ProtocolError::FrameTooLarge { .. }) => Status::TOO_BIG,
            NodeError::Protocol(_) | NodeError::Invalid(_) => Status::INVALID,
            NodeError::NoBackend(_) | NodeError::Unreachable(_) => Status::UNREACHABLE,
            NodeError::Unauthorized => Status::ACCESS,
            NodeError::Busy(_) => Status::AGAIN,
            NodeError::NotSupported(_) => Status::NOT_SUPPORTED,
            NodeError::Peer(s) => *s,
            NodeError::Startup(_) | NodeError::Io(_) => Status::IO,
            NodeError::Job(crate::worker::ControlError::NotFound(_)) => Status::NOT_FOUND,
            NodeError::Job(_) => Status::INVALID,
            NodeError::Cancelled(_) => Status::CANCELLED,
        }
    }
}

/// The HTTP status code for a wire status (the HTTP API reuses the mapping above).
pub fn http_code(status: Status) -> u16 {
    match status {
        Status::OK => 200,
        Status::NOT_FOUND => 404,
        Status::ACCESS => 401,
        Status::INVALID => 400,
        Status::TOO_BIG => 413,
        Status::NEWER_EXISTS => 409,
        Status::UNCOMMITTED => 409,
        Status::NO_SPACE => 507,
        Status::READ_ONLY => 503,
        Status::AGAIN => 503,
        Status::UNREACHABLE => 502,
        Status::TIMED_OUT => 504,
        Status::NOT_SUPPORTED => 501,
        _ => 500,
    }
}
