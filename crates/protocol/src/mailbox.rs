//! How control records travel on one connection: two-sided sends whose immediate is the
//! record's [`MessageKind`], into a registered buffer cut into [`MAX_MESSAGE_LEN`]-byte
//! receive slots, which stay posted, and send slots used in turn.

use std::sync::atomic::{AtomicUsize, Ordering};

use rdmalib::{Access, Completion, Connection, MemoryRegion, ProtectionDomain, SendFlags};

use crate::control::MessageKind;
use crate::record::MAX_MESSAGE_LEN;

/// Work-request id of control sends (receives use their slot number).
pub const SEND_WR_ID: u64 = u64::MAX - 1;
/// Work-request id of the function library's send (client) and receive (executor thread 0).
pub const CODE_WR_ID: u64 = u64::MAX;

/// A received control message.
#[derive(Debug)]
pub struct Message {
    /// Its kind, from the immediate; `None` for an unknown one.
    pub kind: Option<MessageKind>,
    /// Its record.
    pub payload: Vec<u8>,
}

/// The control-message buffer of one connection.
pub struct Mailbox {
    buf: MemoryRegion,
    recv_slots: usize,
    send_slots: usize,
    next_send: AtomicUsize,
}

impl Mailbox {
    /// A mailbox with `recv_slots` receive and `send_slots` send slots (at least one each).
    pub fn new(
        pd: &ProtectionDomain,
        recv_slots: usize,
        send_slots: usize,
    ) -> rdmalib::Result<Mailbox> {
        let (recv_slots, send_slots) = (recv_slots.max(1), send_slots.max(1));
        let buf = pd.register(
            MAX_MESSAGE_LEN * (recv_slots + send_slots),
            Access::LOCAL_WRITE,
        )?;
        Ok(Mailbox {
            buf,
            recv_slots,
            send_slots,
            next_send: AtomicUsize::new(0),
        })
    }

    /// Posts every receive slot on `conn` (once, after connecting or accepting).
    pub fn post_receives(&self, conn: &Connection) -> rdmalib::Result<()> {
        for slot in 0..self.recv_slots {
            self.repost(conn, slot as u64)?;
        }
        Ok(())
    }

    /// The message a receive completion of `conn` announces; its slot is posted again.
    pub fn take(&self, conn: &Connection, wc: &Completion) -> rdmalib::Result<Message> {
        let offset = wc.wr_id as usize * MAX_MESSAGE_LEN;
        let mut payload = vec![0; (wc.byte_len as usize).min(MAX_MESSAGE_LEN)];
        self.buf.read(offset, &mut payload)?;
        self.repost(conn, wc.wr_id)?;
        Ok(Message {
            kind: wc.imm.and_then(MessageKind::from_raw),
            payload,
        })
    }

    /// Sends `payload` as a message of `kind` (signaled, wr_id [`SEND_WR_ID`]). A send slot is
    /// reused after `send_slots` more sends: wait for completions before sending that many.
    pub fn send(
        &self,
        conn: &Connection,
        kind: MessageKind,
        payload: &[u8],
    ) -> rdmalib::Result<()> {
        if payload.len() > MAX_MESSAGE_LEN {
            return Err(rdmalib::Error::InvalidArgument(format!(
                "a control message of {} bytes; at most {MAX_MESSAGE_LEN} are allowed",
                payload.len()
            )));
        }
        let slot =
            self.recv_slots + self.next_send.fetch_add(1, Ordering::Relaxed) % self.send_slots;
        let offset = slot * MAX_MESSAGE_LEN;
        self.buf.write(offset, payload)?;
        conn.post_send(
            SEND_WR_ID,
            self.buf.sge(offset, payload.len())?,
            Some(kind as u32),
            SendFlags::SIGNALED,
        )
    }

    fn repost(&self, conn: &Connection, slot: u64) -> rdmalib::Result<()> {
        let sge = self
            .buf
            .sge(slot as usize * MAX_MESSAGE_LEN, MAX_MESSAGE_LEN)?;
        conn.post_recv(slot, sge)
    }
}
