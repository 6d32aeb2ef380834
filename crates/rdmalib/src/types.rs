//! Plain values shared by every provider: access flags, work completions, remote buffers.

use std::fmt;
use std::ops::BitOr;

/// Access rights of a registered memory region (the `IBV_ACCESS_*` flags).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Access(u32);

impl Access {
    /// The local side may write into the region (receives, atomic results).
    pub const LOCAL_WRITE: Access = Access(1);
    /// Remote peers may RDMA-write into the region.
    pub const REMOTE_WRITE: Access = Access(1 << 1);
    /// Remote peers may RDMA-read the region.
    pub const REMOTE_READ: Access = Access(1 << 2);
    /// Remote peers may run atomics on the region.
    pub const REMOTE_ATOMIC: Access = Access(1 << 3);
    /// Everything: what rFaaS registers its buffers with.
    pub const ALL: Access = Access(0b1111);

    /// The raw bits, equal to the verbs `IBV_ACCESS_*` values.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    /// Builds flags from raw bits, ignoring unknown ones.
    pub const fn from_bits_truncate(bits: u32) -> Access {
        Access(bits & Self::ALL.0)
    }
}

impl BitOr for Access {
    type Output = Access;
    fn bitor(self, rhs: Access) -> Access {
        Access(self.0 | rhs.0)
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Self::LOCAL_WRITE, "LOCAL_WRITE"),
            (Self::REMOTE_WRITE, "REMOTE_WRITE"),
            (Self::REMOTE_READ, "REMOTE_READ"),
            (Self::REMOTE_ATOMIC, "REMOTE_ATOMIC"),
        ];
        let set: Vec<_> = names
            .iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, name)| *name)
            .collect();
        write!(f, "Access({})", set.join(" | "))
    }
}

/// Flags of a send-side work request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendFlags {
    /// Produce a completion on the send queue when the request is done.
    /// Failed requests always produce one.
    pub signaled: bool,
    /// Copy the payload into the request (at most `max_inline_data` bytes).
    pub inline: bool,
    /// Wake a peer that waits for solicited events only (sends and writes with immediate).
    pub solicited: bool,
}

impl SendFlags {
    /// Signaled, not inline, not solicited.
    pub const SIGNALED: SendFlags = SendFlags {
        signaled: true,
        inline: false,
        solicited: false,
    };
    /// No completion on success.
    pub const UNSIGNALED: SendFlags = SendFlags {
        signaled: false,
        inline: false,
        solicited: false,
    };

    /// The same flags with `inline` set to `inline`.
    pub const fn with_inline(mut self, inline: bool) -> SendFlags {
        self.inline = inline;
        self
    }

    /// The same flags with `solicited` set to `solicited`.
    pub const fn with_solicited(mut self, solicited: bool) -> SendFlags {
        self.solicited = solicited;
        self
    }
}

/// Status of a work completion (the subset of `ibv_wc_status` that rFaaS distinguishes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Status {
    /// The request completed.
    #[default]
    Success,
    /// A receive buffer was too small for the incoming message.
    LocalLengthError,
    /// A local buffer or key was not valid for the operation.
    LocalProtectionError,
    /// The responder refused a one-sided operation: bad rkey, bounds or access flags.
    /// Reported on both sides of the connection.
    RemoteAccessError,
    /// The responder could not take the request (for example a send larger than its receive buffer).
    RemoteInvalidRequest,
    /// The request was flushed because the connection closed or went into the error state.
    WrFlushError,
    /// The peer did not answer (transport retries exhausted).
    RetryExceeded,
    /// Any other provider status, with its raw value.
    Other(u32),
}

/// What kind of request a completion belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Opcode {
    /// A two-sided send finished.
    #[default]
    Send,
    /// An RDMA write finished.
    Write,
    /// An RDMA read finished.
    Read,
    /// An atomic fetch-and-add finished; the old value is in the local buffer.
    FetchAdd,
    /// A receive consumed a send from the peer.
    Recv,
    /// A receive consumed a write-with-immediate from the peer; `byte_len` is the write's length.
    RecvRdmaWithImm,
}

/// One work completion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    /// The id given when the request was posted.
    pub wr_id: u64,
    /// Whether it worked.
    pub status: Status,
    /// Which operation it was.
    pub opcode: Opcode,
    /// Bytes received (receive side) or transferred.
    pub byte_len: u32,
    /// Immediate data, for sends and writes with immediate.
    pub imm: Option<u32>,
    /// The queue pair number of the connection it happened on, to tell connections on a shared CQ apart.
    pub qp_num: u32,
}

impl Completion {
    /// `true` when `status` is [`Status::Success`].
    pub fn is_ok(&self) -> bool {
        self.status == Status::Success
    }
}

/// A buffer in a remote peer's registered memory: what a peer publishes so we can write to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteBuffer {
    /// Remote virtual address (as the peer's provider understands it).
    pub addr: u64,
    /// Remote key of the region.
    pub rkey: u32,
    /// Length in bytes the peer allows us to use.
    pub len: u32,
}

impl RemoteBuffer {
    /// The part of this buffer that starts `offset` bytes in.
    ///
    /// The remote side checks bounds; this only saturates the length.
    pub fn offset(&self, offset: u32) -> RemoteBuffer {
        RemoteBuffer {
            addr: self.addr + u64::from(offset),
            rkey: self.rkey,
            len: self.len.saturating_sub(offset),
        }
    }
}
