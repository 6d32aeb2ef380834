//! The values every provider shares: access flags, work completions, remote buffers and the
//! private-data limits (public), and what the front layer hands a provider (crate-private):
//! scatter-gather entries, queue-pair parameters and listener events. Providers import these
//! from here, never from the front layer, so imports run one way: front layer → providers →
//! this module.

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

/// One request in this many of a selectively signaled stream is signaled
/// ([`SendFlags::selective`]).
pub const SIGNAL_EVERY: u64 = 32;

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

    /// The flags of request `n` (counting from 0) of a stream of which one request in
    /// [`SIGNAL_EVERY`] is signaled: completions stay off the hot path, yet a verbs send queue,
    /// which frees its entries only when a signaled completion is polled, never fills (as long
    /// as `max_send_wr` exceeds [`SIGNAL_EVERY`] and the sender polls its send queue).
    #[inline]
    pub const fn selective(n: u64) -> SendFlags {
        SendFlags {
            signaled: n % SIGNAL_EVERY == SIGNAL_EVERY - 1,
            inline: false,
            solicited: false,
        }
    }

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
    /// The responder's side of a refused write with immediate, on NICs that report it so
    /// (`IBV_WC_LOC_ACCESS_ERR`); rxe, tcp and shm report [`Status::RemoteAccessError`].
    LocalAccessError,
    /// The responder refused a one-sided operation: bad rkey, bounds or access flags. The
    /// requester's request fails with it; a receive of the responder's that the refused
    /// request consumed (a write with immediate) fails with it too.
    RemoteAccessError,
    /// The responder could not take the request (for example a send larger than its receive
    /// buffer, on most NICs, tcp and shm).
    RemoteInvalidRequest,
    /// The responder failed to carry the request out (rxe's answer to a send larger than the
    /// receive buffer).
    RemoteOperationError,
    /// A receive could not take what arrived because of its own queue pair (rxe's status for
    /// the receive of a send larger than its buffer).
    LocalQpOperationError,
    /// The request was flushed because the connection closed or went into the error state:
    /// every request outstanding or posted after that, signaled or not, and every posted receive.
    WrFlushError,
    /// The peer did not answer (transport retries exhausted).
    RetryExceeded,
    /// Any other provider status, with its raw value.
    Other(u32),
}

/// What kind of request a completion belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// A two-sided send finished.
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
///
/// Which fields are valid follows verbs (`ibv_poll_cq(3)`), on every provider:
/// - always: `wr_id`, `status` and `qp_num`;
/// - for a successful completion: `opcode`; `byte_len` for receives (the bytes received, or
///   the length of a write with immediate), reads and fetch-and-add (8); `imm` when the
///   sender attached an immediate;
/// - for a failed one nothing else: `opcode` is `None`, `byte_len` 0 and `imm` `None`.
///   Verbs does not say which operation failed, so callers that share a queue between
///   several kinds of request tell them apart by `wr_id`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    /// The id given when the request was posted.
    pub wr_id: u64,
    /// Whether it worked.
    pub status: Status,
    /// Which operation completed; `None` when `status` is an error.
    pub opcode: Option<Opcode>,
    /// Bytes received (receives), read (reads) or 8 (fetch-and-add); 0 for sends, writes and
    /// failed completions, where verbs does not define it.
    pub byte_len: u32,
    /// Immediate data of a received send or write with immediate.
    pub imm: Option<u32>,
    /// The queue pair number of the connection it happened on, to tell connections on a
    /// shared queue apart.
    pub qp_num: u32,
}

impl Completion {
    /// `true` when `status` is [`Status::Success`].
    pub fn is_ok(&self) -> bool {
        self.status == Status::Success
    }

    /// A successful completion of `opcode`, keeping `byte_len` only where verbs defines it.
    #[inline]
    pub(crate) fn success(
        wr_id: u64,
        opcode: Opcode,
        byte_len: u32,
        imm: Option<u32>,
        qp_num: u32,
    ) -> Completion {
        let byte_len = match opcode {
            Opcode::Send | Opcode::Write => 0,
            Opcode::Read | Opcode::FetchAdd | Opcode::Recv | Opcode::RecvRdmaWithImm => byte_len,
        };
        Completion {
            wr_id,
            status: Status::Success,
            opcode: Some(opcode),
            byte_len,
            imm,
            qp_num,
        }
    }

    /// A failed completion: only the request, the status and the connection are known.
    pub(crate) fn error(wr_id: u64, status: Status, qp_num: u32) -> Completion {
        debug_assert_ne!(status, Status::Success);
        Completion {
            wr_id,
            status,
            opcode: None,
            byte_len: 0,
            imm: None,
            qp_num,
        }
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

/// Largest private data of a connection request (the rdma_cm limit for RC over IB and RoCE).
pub const MAX_CONNECT_PRIVATE_DATA: usize = 56;
/// Largest private data of an accept.
pub const MAX_ACCEPT_PRIVATE_DATA: usize = 196;
/// Largest private data of a reject.
pub const MAX_REJECT_PRIVATE_DATA: usize = 148;

/// Private data as a receiver sees it on IB and RoCE: the sender's bytes, then zeros up to
/// the transport's size `size` (one of the `MAX_*_PRIVATE_DATA`). The stream providers pad
/// what they receive the same way.
pub(crate) fn padded_private_data(mut data: Vec<u8>, size: usize) -> Vec<u8> {
    if data.len() < size {
        data.resize(size, 0);
    }
    data
}

/// What providers receive: an address, a length and the key of the region it lies in. The
/// public API made it from a checked [`Sge`](crate::Sge), so it lies inside a live registered
/// region for the duration of the post call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawSge {
    pub addr: *mut u8,
    pub len: u32,
    pub lkey: u32,
}

/// [`QpConfig`](crate::QpConfig) with the queues resolved to one provider's type.
#[cfg_attr(
    not(feature = "verbs"),
    expect(dead_code, reason = "only verbs bounds its send queue")
)]
pub(crate) struct QpSpec<C> {
    pub send_cq: C,
    pub recv_cq: C,
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_inline_data: u32,
    pub background_progress: bool,
}

/// Provider-level listener event, generic over the provider's request type.
pub(crate) enum Event<R> {
    ConnectRequest(R),
    Established(u32),
    Disconnected(u32),
}
