//! Frames of the tcp provider: a fixed 40-byte little-endian header, then `len` payload bytes
//! for sends and writes.

use crate::types::{Opcode, Status};

pub(super) const HEADER_LEN: usize = 40;

/// Protocol version, checked in the connection handshake.
pub(super) const VERSION: u16 = 2;
pub(super) const MAGIC: [u8; 4] = *b"RFTC";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Op {
    /// Two-sided send; the payload goes into the next posted receive.
    Send = 1,
    /// RDMA write to `addr`/`rkey`; with `FLAG_IMM` it also consumes a receive.
    Write = 2,
    /// Fetch-and-add of `value` on the 8 bytes at `addr`/`rkey`.
    FetchAdd = 3,
    /// The responder did a signaled request `wr_id`.
    Ack = 4,
    /// The responder refused request `wr_id` with `status`; the connection is broken.
    Nak = 5,
    /// Result of a fetch-and-add: the old value in `value`.
    AtomicResp = 6,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Send,
            2 => Op::Write,
            3 => Op::FetchAdd,
            4 => Op::Ack,
            5 => Op::Nak,
            6 => Op::AtomicResp,
            _ => return None,
        })
    }
}

pub(super) const FLAG_SIGNALED: u8 = 1;
pub(super) const FLAG_SOLICITED: u8 = 1 << 1;
pub(super) const FLAG_IMM: u8 = 1 << 2;

/// A decoded frame header. Fields unused by an op are zero.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Header {
    pub op: u8,
    pub flags: u8,
    /// For `Nak`: the status code (see [`status_code`]).
    pub status: u8,
    /// For `Ack`/`Nak`: the op of the request answered, as an [`Opcode`] code.
    pub orig: u8,
    /// Payload length (send, write) or bytes done (ack).
    pub len: u32,
    pub imm: u32,
    pub rkey: u32,
    pub addr: u64,
    pub wr_id: u64,
    /// Addend of a fetch-and-add, or the old value in its response.
    pub value: u64,
}

impl Header {
    pub fn op(&self) -> Option<Op> {
        Op::from_u8(self.op)
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.op;
        b[1] = self.flags;
        b[2] = self.status;
        b[3] = self.orig;
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..12].copy_from_slice(&self.imm.to_le_bytes());
        b[12..16].copy_from_slice(&self.rkey.to_le_bytes());
        b[16..24].copy_from_slice(&self.addr.to_le_bytes());
        b[24..32].copy_from_slice(&self.wr_id.to_le_bytes());
        b[32..40].copy_from_slice(&self.value.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Header {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(x)
        };
        Header {
            op: b[0],
            flags: b[1],
            status: b[2],
            orig: b[3],
            len: u32_at(4),
            imm: u32_at(8),
            rkey: u32_at(12),
            addr: u64_at(16),
            wr_id: u64_at(24),
            value: u64_at(32),
        }
    }
}

pub(super) fn opcode_code(op: Opcode) -> u8 {
    match op {
        Opcode::Send => 1,
        Opcode::Write => 2,
        Opcode::Read => 3,
        Opcode::FetchAdd => 4,
        Opcode::Recv => 5,
        Opcode::RecvRdmaWithImm => 6,
    }
}

pub(super) fn opcode_from(code: u8) -> Opcode {
    match code {
        2 => Opcode::Write,
        3 => Opcode::Read,
        4 => Opcode::FetchAdd,
        5 => Opcode::Recv,
        6 => Opcode::RecvRdmaWithImm,
        _ => Opcode::Send,
    }
}

pub(super) fn status_code(status: Status) -> u8 {
    match status {
        Status::Success => 0,
        Status::LocalLengthError => 1,
        Status::LocalProtectionError => 2,
        Status::RemoteAccessError => 3,
        Status::RemoteInvalidRequest => 4,
        Status::WrFlushError => 5,
        Status::RetryExceeded => 6,
        Status::Other(_) => 7,
        Status::LocalAccessError => 8,
        Status::RemoteOperationError => 9,
        Status::LocalQpOperationError => 10,
    }
}

pub(super) fn status_from(code: u8) -> Status {
    match code {
        0 => Status::Success,
        1 => Status::LocalLengthError,
        2 => Status::LocalProtectionError,
        3 => Status::RemoteAccessError,
        4 => Status::RemoteInvalidRequest,
        5 => Status::WrFlushError,
        6 => Status::RetryExceeded,
        8 => Status::LocalAccessError,
        9 => Status::RemoteOperationError,
        10 => Status::LocalQpOperationError,
        other => Status::Other(u32::from(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            op: Op::Write as u8,
            flags: FLAG_IMM | FLAG_SIGNALED,
            status: 3,
            orig: 2,
            len: 0xdead_beef,
            imm: 7,
            rkey: 9,
            addr: 0x1122_3344_5566_7788,
            wr_id: u64::MAX,
            value: 42,
        };
        let d = Header::decode(&h.encode());
        assert_eq!(d.op(), Some(Op::Write));
        assert!(d.has(FLAG_IMM) && d.has(FLAG_SIGNALED) && !d.has(FLAG_SOLICITED));
        assert_eq!(
            (d.len, d.imm, d.rkey, d.addr, d.wr_id, d.value),
            (h.len, 7, 9, h.addr, u64::MAX, 42)
        );
        assert_eq!(Header::decode(&[0xff; HEADER_LEN]).op(), None);
    }
}
