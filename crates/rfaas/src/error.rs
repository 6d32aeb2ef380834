//! Errors of the client library.

use std::net::SocketAddr;

use rfaas_protocol::ProtocolError;
use rfaas_protocol::invocation::ReturnCode;

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
    /// No executor server fits the request, free or not: none in the executors database, or
    /// none the resource manager knows (asking again does not help).
    #[error("{0}")]
    NoExecutor(String),
    /// Every executor server is busy right now; leases return when allocations end, so asking
    /// again later may succeed.
    #[error("{0}")]
    NoResources(String),
    /// A manager cannot be reached, or closed the connection.
    #[error("cannot reach {peer} at {addr}: {reason}")]
    Unreachable {
        /// Who: "the executor manager exec-mgr-node", "the resource manager".
        peer: String,
        /// Its address.
        addr: SocketAddr,
        /// What happened.
        reason: String,
    },
    /// The executor manager or the resource manager refused the request.
    #[error("{0}")]
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
    /// The function reported an error ([`ReturnCode::FunctionError`]): its message, taken
    /// from the output buffer where the call can read it (calls that wait with the buffer at
    /// hand), else only its length.
    #[error("{}", describe_function_error(message.as_deref(), *len))]
    Function {
        /// The message's length in bytes; they are at the start of the output buffer.
        len: u32,
        /// The message, when the waiting call had the output buffer.
        message: Option<String>,
    },
    /// Every input slot of the executor thread is used by a call in flight; one is free again
    /// once a result is taken.
    #[error(
        "all {slots} input buffers of executor thread {thread} are in use by calls in flight; wait for one or allocate more (input_buf_count)"
    )]
    Busy {
        /// The executor thread.
        thread: usize,
        /// Its input slots.
        slots: u16,
    },
    /// An argument is not valid for this executor.
    #[error("{0}")]
    InvalidArgument(String),
}

impl Error {
    /// Whether the same request may succeed later without changes: [`Error::Busy`] and
    /// [`Error::NoResources`].
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Busy { .. } | Error::NoResources(_))
    }

    /// The executor's return code, for the errors that carry one: [`Error::Invocation`] and
    /// [`Error::Function`].
    pub fn return_code(&self) -> Option<ReturnCode> {
        match self {
            Error::Invocation(code) => Some(*code),
            Error::Function { .. } => Some(ReturnCode::FunctionError),
            _ => None,
        }
    }
}

fn describe_function_error(message: Option<&str>, len: u32) -> String {
    match message {
        Some(m) => format!("the function failed: {m}"),
        None => format!("the function failed; its {len}-byte message is in the output buffer"),
    }
}
