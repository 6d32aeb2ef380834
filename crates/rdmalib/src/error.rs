//! The error type of the RDMA layer.

use std::io;

/// Result alias used throughout `rdmalib`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the RDMA layer. Messages quote the offending value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed; `what` names the call or the step.
    #[error("{what}: {source}")]
    Io {
        /// The failing step, for example `connect to 10.0.0.1:10005`.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// A verbs device was asked for but the host has none (or no RDMA kernel support).
    #[error("no RDMA device {device:?} usable on this host ({reason}); use the tcp provider")]
    NoRdmaDevice {
        /// The device asked for (`any` when listing).
        device: String,
        /// Why not: no kernel support, libraries missing, another device list.
        reason: String,
    },
    /// The device database could not be read or does not name the device.
    #[error("{0}")]
    Config(String),
    /// The passive side rejected our connection request; it may have sent private data.
    #[error("connection rejected by the peer")]
    Rejected {
        /// Private data that came with the rejection.
        private_data: Vec<u8>,
    },
    /// An argument is out of the range the API or the provider allows.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The peer speaks another wire protocol or another version of it.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The provider was not compiled into this build.
    #[error("provider {0} is not compiled into this build")]
    ProviderUnavailable(&'static str),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn last_os(what: impl Into<String>) -> Self {
        Error::io(what, io::Error::last_os_error())
    }
}
