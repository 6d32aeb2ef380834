//! The loop of one executor thread: take an invocation from the receive queue, run it in
//! place, write the result back. Hot (busy polling), warm (sleeping on the completion
//! channel), or hot for `hot_timeout` ms of idleness and then warm.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rdmalib::{
    Completion, CompletionQueue, Connection, Opcode, RemoteBuffer, SendFlags, Sge, Status,
};
use rfaas_protocol::Record;
use rfaas_protocol::control::{MessageKind, ThreadReady};
use rfaas_protocol::invocation::{
    FUNCTION_ERROR, INPUT_HEADER_LEN, InputHeader, ReturnCode, invocation_receives,
    parse_invocation_imm, result_imm,
};

use rfaas_protocol::mailbox::Mailbox;

use crate::meter::Meter;
use crate::sandbox::{Sandbox, SlotLayout};

/// Polling policy from the allocation's `hot_timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polling {
    /// Always busy-poll (`-1`).
    Hot,
    /// Always sleep on the completion channel (`0`).
    Warm,
    /// Busy-poll until idle for this long, then sleep until the next invocation.
    HotFor(Duration),
}

impl Polling {
    /// The policy for a `hot_timeout` value.
    pub fn from_hot_timeout(ms: i32) -> Polling {
        match ms {
            ..0 => Polling::Hot,
            0 => Polling::Warm,
            ms => Polling::HotFor(Duration::from_millis(ms as u64)),
        }
    }
}

pub struct Worker<S> {
    pub thread: u16,
    /// Shared with the executor's main thread and watchdog, which may answer on it.
    pub conn: Arc<Connection>,
    pub cq: CompletionQueue,
    /// The thread's announcement, sent once its receives are posted.
    pub ready: ThreadReady,
    /// Where the announcement is sent from.
    pub mailbox: Mailbox,
    pub sandbox: S,
    pub layout: SlotLayout,
    pub polling: Polling,
    /// Stop after this many invocations; 0 for no limit.
    pub max_invocations: u64,
    /// What the thread has done, for billing and the watchdog.
    pub meter: Arc<Meter>,
}

impl<S: Sandbox> Worker<S> {
    /// Serves invocations until the client disconnects (or the cap is reached).
    pub fn run(mut self) -> Result<()> {
        // A client that left already makes these posts flush: the loop sees it.
        self.announce()
            .context("announcing the thread to the client")?;
        let mut wcs = [Completion::default(); 16];
        let mut served = 0u64;
        let mut last_work = Instant::now();
        self.meter.enter_hot(last_work);
        let outcome = loop {
            let mut n = self.cq.poll(&mut wcs)?;
            if n == 0 {
                let sleep = match self.polling {
                    Polling::Hot => false,
                    Polling::Warm => true,
                    Polling::HotFor(limit) => last_work.elapsed() >= limit,
                };
                if !sleep {
                    continue;
                }
                self.meter.leave_hot(Instant::now());
                let Some(wc) = self.cq.wait_one(None)? else {
                    continue;
                };
                wcs[0] = wc;
                n = 1;
                self.meter.enter_hot(Instant::now());
            }
            if let Some(outcome) = self.handle(&wcs[..n], &mut served, &mut last_work)? {
                break outcome;
            }
        };
        self.meter.leave_hot(Instant::now());
        tracing::info!("thread {}: {outcome}", self.thread);
        Ok(())
    }

    /// Serves the invocations among `wcs` (`served` counts them); why the thread ends, if it
    /// does.
    #[inline]
    fn handle(
        &mut self,
        wcs: &[Completion],
        served: &mut u64,
        last_work: &mut Instant,
    ) -> Result<Option<String>> {
        for wc in wcs {
            if wc.status != Status::Success {
                if wc.status != Status::WrFlushError {
                    tracing::warn!("thread {}: completion failed: {:?}", self.thread, wc);
                }
                return Ok(Some(format!(
                    "client disconnected after {served} invocations"
                )));
            }
            if wc.opcode != Some(Opcode::RecvRdmaWithImm) {
                continue;
            }
            let started = Instant::now();
            let flags = SendFlags::selective(*served);
            let empty = self.sandbox.input().sge(0, 0)?;
            // On a connection the client has left, both posts flush and the loop ends at
            // that completion.
            self.conn
                .post_recv(wc.wr_id, empty)
                .and_then(|()| self.serve(wc, flags, started))
                .context("serving an invocation")?;
            *served += 1;
            let done = Instant::now();
            self.meter.end(started, done);
            *last_work = done;
            if self.max_invocations > 0 && *served >= self.max_invocations {
                return Ok(Some(format!(
                    "reached the cap of {} invocations",
                    self.max_invocations
                )));
            }
        }
        Ok(None)
    }

    /// Posts the receives, then tells the client where the input slots are (the first
    /// invocation must find its receive; the send's completion is one the loop skips).
    fn announce(&self) -> rdmalib::Result<()> {
        for slot in 0..invocation_receives(self.layout.slot_count as u32) {
            self.conn
                .post_recv(u64::from(slot), self.sandbox.input().sge(0, 0)?)?;
        }
        self.mailbox
            .send(&self.conn, MessageKind::ThreadReady, &self.ready.encode())
    }

    /// Runs one invocation and sends its result (a bare return code when it went wrong).
    #[inline]
    fn serve(
        &mut self,
        wc: &Completion,
        flags: SendFlags,
        started: Instant,
    ) -> rdmalib::Result<()> {
        let (id, function, solicited) = parse_invocation_imm(wc.imm.unwrap_or(0));
        let flags = flags.with_solicited(solicited);
        self.meter.begin(id, started);
        let slot = id as usize % self.layout.slot_count;
        let len = wc.byte_len as usize;
        if len < INPUT_HEADER_LEN {
            tracing::warn!(
                "thread {}: invocation {id} has no input header ({len} bytes)",
                self.thread
            );
            let empty = self.sandbox.input().sge(0, 0)?;
            return answer(
                &self.conn,
                empty,
                wc.wr_id,
                id,
                ReturnCode::BadRequest,
                flags,
            );
        }
        let mut header = [0u8; INPUT_HEADER_LEN];
        self.sandbox
            .input()
            .read(self.layout.input_offset(slot), &mut header)?;
        let header = InputHeader::decode(&header);
        let size = (len - INPUT_HEADER_LEN) as u32;
        // The output must fit both the output slot and the client's result buffer.
        let capacity = self.layout.max_payload.min(header.result_capacity as usize);
        let (code, out_len) = match self.sandbox.invoke(function as usize, slot, size) {
            Ok(n) if n as usize <= capacity => (ReturnCode::Success, n),
            Ok(n) if n & FUNCTION_ERROR != 0 => {
                // A message longer than the buffer is cut; the code tells what happened.
                let message = (n & !FUNCTION_ERROR).min(capacity as u32);
                (ReturnCode::FunctionError, message)
            }
            Ok(n) => {
                tracing::warn!(
                    "thread {}: function {function} returned {n} bytes, more than the {capacity} \
                     its result buffer holds",
                    self.thread
                );
                (ReturnCode::OutputTooLarge, 0)
            }
            Err(code) => (code, 0),
        };
        let out = self
            .sandbox
            .output()
            .sge(self.layout.output_offset(slot), out_len as usize)?;
        let remote = RemoteBuffer {
            addr: header.result_addr,
            rkey: header.result_rkey,
            len: out_len,
        };
        self.conn
            .post_write_with_imm(wc.wr_id, out, remote, result_imm(id, code), flags)
    }
}

/// Answers invocation `id` with `code` alone: a zero-length write with immediate, which needs
/// no valid result address (IB C9-88; the stream providers check nothing for zero bytes).
/// `empty` is any empty entry of a registered region.
pub fn answer(
    conn: &Connection,
    empty: Sge<'_>,
    wr_id: u64,
    id: u16,
    code: ReturnCode,
    flags: SendFlags,
) -> rdmalib::Result<()> {
    let nowhere = RemoteBuffer {
        addr: 0,
        rkey: 0,
        len: 0,
    };
    conn.post_write_with_imm(wr_id, empty, nowhere, result_imm(id, code), flags)
}
