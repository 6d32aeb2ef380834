//! The loop of one executor thread: take an invocation from the receive queue, run it in
//! place, write the result back. Hot (busy polling), warm (sleeping on the completion
//! channel), or hot for `hot_timeout` ms of idleness and then warm.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rdmalib::{Completion, CompletionQueue, Connection, Opcode, RemoteBuffer, SendFlags, Status};
use rfaas_protocol::Record;
use rfaas_protocol::control::{MessageKind, ThreadReady};
use rfaas_protocol::invocation::{
    INPUT_HEADER_LEN, InputHeader, ReturnCode, invocation_receives, parse_invocation_imm,
    result_imm,
};

use rfaas_protocol::mailbox::Mailbox;

use crate::sandbox::{Sandbox, SlotLayout};

/// What one thread did, for billing.
#[derive(Clone, Copy, Debug, Default)]
pub struct WorkerStats {
    /// Invocations served.
    pub invocations: u64,
    /// Time spent busy-polling for invocations (not running them), in ns.
    pub hot_polling_ns: u64,
    /// Time spent running functions, in ns.
    pub execution_ns: u64,
}

impl WorkerStats {
    fn with_hot_wall(mut self, hot_wall_ns: u64) -> Self {
        self.hot_polling_ns = hot_wall_ns.saturating_sub(self.execution_ns);
        self
    }
}

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
    pub conn: Connection,
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
}

impl<S: Sandbox> Worker<S> {
    /// Serves invocations until the client disconnects (or the cap is reached).
    pub fn run(mut self) -> Result<WorkerStats> {
        let mut stats = WorkerStats::default();
        // A client that left already makes these posts flush: the loop sees it.
        self.announce()
            .context("announcing the thread to the client")?;
        let mut wcs = [Completion::default(); 16];
        let mut results_sent = 0u64;
        // Wall time in hot mode; every execution happens inside it, so hot polling is this
        // minus the execution time.
        let mut hot_wall_ns = 0u64;
        let mut hot_since = Instant::now();
        let mut last_work = hot_since;
        loop {
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
                hot_wall_ns += hot_since.elapsed().as_nanos() as u64;
                let Some(wc) = self.cq.wait_one(None)? else {
                    continue;
                };
                wcs[0] = wc;
                n = 1;
                hot_since = Instant::now();
            }
            for wc in &wcs[..n] {
                if wc.status != Status::Success {
                    if wc.status != Status::WrFlushError {
                        tracing::warn!("thread {}: completion failed: {:?}", self.thread, wc);
                    }
                    hot_wall_ns += hot_since.elapsed().as_nanos() as u64;
                    tracing::info!(
                        "thread {}: client disconnected after {} invocations",
                        self.thread,
                        stats.invocations
                    );
                    return Ok(stats.with_hot_wall(hot_wall_ns));
                }
                if wc.opcode != Some(Opcode::RecvRdmaWithImm) {
                    continue;
                }
                let started = Instant::now();
                let flags = SendFlags::selective(results_sent);
                let empty = self.sandbox.input().sge(0, 0)?;
                // On a connection the client has left, both posts flush and the loop ends
                // at that completion.
                let sent = self
                    .conn
                    .post_recv(wc.wr_id, empty)
                    .and_then(|()| self.serve(wc, flags))
                    .context("serving an invocation")?;
                results_sent += u64::from(sent);
                let done = Instant::now();
                stats.execution_ns += (done - started).as_nanos() as u64;
                stats.invocations += 1;
                last_work = done;
                if self.max_invocations > 0 && stats.invocations >= self.max_invocations {
                    tracing::info!(
                        "thread {}: reached the cap of {} invocations",
                        self.thread,
                        self.max_invocations
                    );
                    hot_wall_ns += hot_since.elapsed().as_nanos() as u64;
                    return Ok(stats.with_hot_wall(hot_wall_ns));
                }
            }
        }
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

    /// Runs one invocation and sends its result; `false` when no result could be sent.
    #[inline]
    fn serve(&mut self, wc: &Completion, flags: SendFlags) -> rdmalib::Result<bool> {
        let (id, function, solicited) = parse_invocation_imm(wc.imm.unwrap_or(0));
        let slot = id as usize % self.layout.slot_count;
        let len = wc.byte_len as usize;
        if len < INPUT_HEADER_LEN {
            tracing::warn!(
                "thread {}: invocation {id} has no input header ({len} bytes); dropped",
                self.thread
            );
            return Ok(false);
        }
        let mut header = [0u8; INPUT_HEADER_LEN];
        self.sandbox
            .input()
            .read(self.layout.input_offset(slot), &mut header)?;
        let header = InputHeader::decode(&header);
        let size = (len - INPUT_HEADER_LEN) as u32;
        let (code, out_len) = match self.sandbox.invoke(function as usize, slot, size) {
            Ok(n) if n as usize <= self.layout.max_payload => (ReturnCode::Success, n),
            Ok(n) => {
                tracing::warn!(
                    "thread {}: function {function} returned {n} bytes, more than its output buffer",
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
        let flags = flags.with_solicited(solicited);
        self.conn
            .post_write_with_imm(wc.wr_id, out, remote, result_imm(id, code), flags)?;
        Ok(true)
    }
}
