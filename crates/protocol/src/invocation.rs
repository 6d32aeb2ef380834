//! The hot path: how a client invokes a function on an executor thread.
//!
//! The client RDMA-writes `[InputHeader][payload]` into one of the thread's input slots with
//! an immediate built by [`invocation_imm`]: `invocation_id << 16 | solicited << 15 |
//! function_index`. The slot is `invocation_id % slot_count`, so calls in flight never share
//! memory. The payload size is the write's length minus [`INPUT_HEADER_LEN`].
//!
//! The executor runs the function in place and RDMA-writes the output to the address in the
//! header, with the immediate [`result_imm`]: `invocation_id << 16 | return_code`. A result
//! with a non-zero [`ReturnCode`] carries no bytes, except [`ReturnCode::FunctionError`],
//! whose bytes are the function's message.
//!
//! Both sides size their queues from the slot count with the functions at the end, so a
//! client never has more calls in flight than the executor has receives posted.

use crate::record::wire_enum;

/// Bytes in front of every payload in an input slot:
/// `{ u64 result_address, u32 result_rkey, u32 result_capacity }`.
pub const INPUT_HEADER_LEN: usize = 16;
/// Function indices have 15 bits.
pub const MAX_FUNCTION_INDEX: u16 = 0x7fff;
/// Largest number of input slots per executor thread (the client tracks them in a bit mask).
pub const MAX_INPUT_BUFFERS: u16 = 64;

const SOLICITED_BIT: u32 = 1 << 15;

/// The function ABI's error flag: a function that returns `FUNCTION_ERROR | n` failed, and the
/// first `n` bytes of its output are a UTF-8 message for the caller
/// ([`ReturnCode::FunctionError`]). No output is that large (payloads are far below 2 GiB), so
/// the flag takes nothing from functions that never fail.
pub const FUNCTION_ERROR: u32 = 1 << 31;

/// Immediate of an invocation write.
#[inline]
pub fn invocation_imm(invocation_id: u16, function_index: u16, solicited: bool) -> u32 {
    (u32::from(invocation_id) << 16)
        | if solicited { SOLICITED_BIT } else { 0 }
        | u32::from(function_index & MAX_FUNCTION_INDEX)
}

/// Splits an invocation immediate into `(invocation_id, function_index, solicited)`.
#[inline]
pub fn parse_invocation_imm(imm: u32) -> (u16, u16, bool) {
    (
        (imm >> 16) as u16,
        (imm & u32::from(MAX_FUNCTION_INDEX)) as u16,
        imm & SOLICITED_BIT != 0,
    )
}

/// Immediate of a result write.
#[inline]
pub fn result_imm(invocation_id: u16, code: ReturnCode) -> u32 {
    (u32::from(invocation_id) << 16) | u32::from(code as u16)
}

/// Splits a result immediate into `(invocation_id, return code)`.
#[inline]
pub fn parse_result_imm(imm: u32) -> (u16, u16) {
    ((imm >> 16) as u16, imm as u16)
}

/// The header the client writes in front of each payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputHeader {
    /// Where the executor writes the result.
    pub result_addr: u64,
    /// Remote key of the result buffer.
    pub result_rkey: u32,
    /// Bytes the result buffer holds: a longer output is answered with
    /// [`ReturnCode::OutputTooLarge`] instead of a write the client's region refuses.
    pub result_capacity: u32,
}

impl InputHeader {
    /// The header's bytes.
    #[inline]
    pub fn encode(&self) -> [u8; INPUT_HEADER_LEN] {
        let mut b = [0u8; INPUT_HEADER_LEN];
        b[..8].copy_from_slice(&self.result_addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.result_rkey.to_le_bytes());
        b[12..].copy_from_slice(&self.result_capacity.to_le_bytes());
        b
    }

    /// Reads the header from its bytes.
    #[inline]
    pub fn decode(b: &[u8; INPUT_HEADER_LEN]) -> InputHeader {
        let word = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        InputHeader {
            result_addr: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            result_rkey: word(8),
            result_capacity: word(12),
        }
    }
}

wire_enum! {
    /// What an executor answers for one invocation (the low 16 bits of a result immediate).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum ReturnCode: u16 ("return code") {
        /// The function ran; the result bytes follow.
        Success = 0,
        /// The function index is not in the library.
        UnknownFunction = 1,
        /// The payload is larger than the input slot.
        PayloadTooLarge = 2,
        /// The function returned a size larger than the output buffer; nothing was sent.
        OutputTooLarge = 3,
        /// The wasm function trapped (unreachable, out-of-bounds access, stack overflow …).
        Trap = 4,
        /// The function ran past the allocation's time limit and was interrupted.
        Timeout = 5,
        /// The write was too short to hold an input header.
        BadRequest = 6,
        /// The executor is not ready (its sandbox failed and is being rebuilt).
        Unavailable = 7,
        /// The executor is shutting down (its manager went away); sent once per thread, not
        /// for one invocation, and the client treats the executor as gone.
        Shutdown = 8,
        /// The wasm function needed more memory than the allocation leases (a `memory.grow`
        /// was refused and the function trapped).
        OutOfMemory = 9,
        /// The function reported an error ([`FUNCTION_ERROR`]); the result's bytes are its
        /// message.
        FunctionError = 10,
    }
}

impl ReturnCode {
    /// A sentence for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            ReturnCode::Success => "success",
            ReturnCode::UnknownFunction => "the executor has no function with that index",
            ReturnCode::PayloadTooLarge => "the payload does not fit the executor's input buffer",
            ReturnCode::OutputTooLarge => {
                "the function returned more bytes than its output buffer holds"
            }
            ReturnCode::Trap => "the function trapped",
            ReturnCode::Timeout => "the function ran past the allocation's time limit",
            ReturnCode::BadRequest => "the invocation was malformed",
            ReturnCode::Unavailable => "the executor thread is not ready",
            ReturnCode::Shutdown => "the executor is shutting down",
            ReturnCode::OutOfMemory => {
                "the function needed more memory than the allocation leases"
            }
            ReturnCode::FunctionError => "the function reported an error",
        }
    }
}

impl std::fmt::Display for ReturnCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Receives kept posted per input slot, on the executor thread (for invocations) and on the
/// client (for results): one for the call in flight and one reposted while it is served.
pub const RECEIVES_PER_SLOT: u32 = 2;
/// Receives a connection carrying invocations has room for besides those: the code, the
/// thread's announcement and control messages.
pub const CONTROL_RECEIVES: u32 = 4;

/// Send requests each side of a connection carrying invocations keeps room for (its
/// `max_send_wr`); sends are signaled selectively, one in [`rdmalib::SIGNAL_EVERY`].
pub const SEND_QUEUE_DEPTH: u32 = 128;

/// Receives each side posts for the invocations of one thread with `slot_count` slots.
pub const fn invocation_receives(slot_count: u32) -> u32 {
    slot_count * RECEIVES_PER_SLOT
}

/// `max_recv_wr` of a connection between a client and an executor thread.
pub const fn connection_receives(slot_count: u32) -> u32 {
    invocation_receives(slot_count) + CONTROL_RECEIVES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immediates_pack_as_the_seed_defines() {
        let imm = invocation_imm(0xbeef, 5, true);
        assert_eq!(imm, 0xbeef_0000 | 1 << 15 | 5);
        assert_eq!(parse_invocation_imm(imm), (0xbeef, 5, true));
        assert_eq!(parse_result_imm(result_imm(7, ReturnCode::Trap)), (7, 4));
        assert_eq!(ReturnCode::from_raw(4), Some(ReturnCode::Trap));
        assert_eq!(ReturnCode::from_raw(11), None);
    }

    #[test]
    fn the_input_header_round_trips() {
        let h = InputHeader {
            result_addr: 0x1122_3344_5566_7788,
            result_rkey: 0xdead_beef,
            result_capacity: 0x0102_0304,
        };
        assert_eq!(InputHeader::decode(&h.encode()), h);
    }
}
