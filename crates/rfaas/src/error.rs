//! Errors of the client library.

use crate::protocol::{ProtocolError, ReturnCode};

/// Result alias of the client library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong when leasing, allocating or invoking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The RDMA layer failed.
    #[error(transparent)]
    Rdma(#[from] rdmalib::Error),
    /// A peer sent something the protocol does not allow.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The function library cannot be used (or has no such function).
    #[error(transparent)]
    Code(#[from] function_library::Error),
    /// No executor server can take the request.
    #[error("{0}")]
    NoExecutor(String),
    /// Every executor server is busy right now (leases return when allocations end).
    #[error("{0}")]
    NoResources(String),
    /// The executor manager refused the allocation.
    #[error("the executor manager refused the allocation: {0}")]
    Refused(String),
    /// The executor could not load the code.
    #[error("the executor could not load the code: {0}")]
    ExecutorFailed(String),
    /// The executor process or its connection went away.
    #[error("the executor is gone: {0}")]
    ExecutorLost(String),
    /// A peer did not answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The function ran but the executor reports an error.
    #[error("invocation failed: {0}")]
    Invocation(ReturnCode),
    /// An argument is not valid for this executor.
    #[error("{0}")]
    InvalidArgument(String),
}
