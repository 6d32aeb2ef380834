//! The allocation handshake, client side: the request to the executor manager, the executor
//! threads connecting back, the code shipped to thread 0, each thread announcing its input
//! slots. [`Executor::allocate`](crate::Executor::allocate) runs these steps in order.

use std::time::{Duration, Instant};

use rdmalib::{
    Access, CmEvent, Completion, CompletionQueue, Connection, Context, Listener, MemoryRegion,
    Opcode, ProtectionDomain, QpConfig, SendFlags,
};
use rfaas_protocol::MAX_MESSAGE_LEN;
use rfaas_protocol::Record;
use rfaas_protocol::control::{
    AllocationRequest, AllocationResponse, AllocationStatus, Credential, ExecutorExit, Hello,
    MessageKind, Role, ThreadReady, credentials_match, private_text,
};
use rfaas_protocol::mailbox::{CODE_WR_ID, Mailbox};

use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::spec::AllocationSpec;

/// How long the client polls for the threads' announcements before it sleeps between
/// polls: they come within a few milliseconds of the code, and each sleep and wake-up would
/// add to the cold start.
const EAGER_WAIT: Duration = Duration::from_millis(50);

/// What the steps after the manager's answer share.
pub(crate) struct Handshake<'a> {
    pub pd: &'a ProtectionDomain,
    pub manager: &'a ManagerLink,
    pub allocation_id: u32,
    /// What the allocation's executor threads present when they connect back.
    pub token: Credential,
    pub spec: &'a AllocationSpec,
}

impl Handshake<'_> {
    /// Accepts one connection per executor thread (in thread order) and posts the receive for
    /// each thread's announcement into the returned buffer.
    pub(crate) fn accept_threads(
        &self,
        listener: &Listener,
        qp: &QpConfig<'_>,
    ) -> Result<(Vec<Connection>, MemoryRegion)> {
        let cores = self.spec.cores;
        let ready_buf = self
            .pd
            .register(MAX_MESSAGE_LEN * cores as usize, Access::LOCAL_WRITE)?;
        let mut conns: Vec<Option<Connection>> = (0..cores).map(|_| None).collect();
        let deadline = Instant::now() + self.spec.timeout;
        while conns.iter().any(Option::is_none) {
            self.manager.check_exit(self.allocation_id)?;
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or_else(|| {
                    Error::Timeout(format!(
                        "the executor did not connect back within {:?}",
                        self.spec.timeout
                    ))
                })?;
            let Some(CmEvent::ConnectRequest(req)) =
                listener.get_event(Some(left.min(Duration::from_millis(50))))?
            else {
                continue;
            };
            let thread = match Hello::decode(req.private_data()) {
                Ok(h)
                    if h.role == Role::Executor
                        && h.allocation_id == self.allocation_id
                        && h.thread < cores
                        && credentials_match(&h.credential, &self.token) =>
                {
                    h.thread as usize
                }
                Ok(h) => {
                    let peer = req.peer_addr();
                    let _ = req.reject(b"unexpected connection");
                    tracing::warn!(
                        "rejected a connection from {peer} that is not our executor's ({:?} of allocation {}, thread {})",
                        h.role,
                        h.allocation_id,
                        h.thread
                    );
                    continue;
                }
                Err(e) => {
                    let _ = req.reject(e.to_string().as_bytes());
                    continue;
                }
            };
            let conn = req.accept(self.pd, qp, &[])?;
            let slot = ready_buf.sge(thread * MAX_MESSAGE_LEN, MAX_MESSAGE_LEN)?;
            conn.post_recv(thread as u64, slot)?;
            conns[thread] = Some(conn);
        }
        Ok((
            conns
                .into_iter()
                .map(|c| c.expect("every thread connected"))
                .collect(),
            ready_buf,
        ))
    }

    /// Sends the code to thread 0, unless `code` is `None` (the executor loads it from the
    /// manager's code cache), and collects every thread's announcement (in thread order).
    pub(crate) fn ship_code(
        &self,
        code: Option<&[u8]>,
        first: &Connection,
        send_cq: &CompletionQueue,
        recv_cq: &CompletionQueue,
        ready_buf: &MemoryRegion,
    ) -> Result<Vec<ThreadReady>> {
        let _code_mr = match code {
            Some(code) => {
                let code_mr = self.pd.register(code.len(), Access::LOCAL_WRITE)?;
                code_mr.write(0, code)?;
                first.post_send(
                    CODE_WR_ID,
                    code_mr.sge(0, code.len())?,
                    Some(MessageKind::Code as u32),
                    SendFlags::SIGNALED,
                )?;
                Some(code_mr)
            }
            None => None,
        };
        let lost = |wc: &Completion| {
            let exit = self.manager.wait_exit(self.allocation_id);
            Error::ExecutorLost(
                exit.unwrap_or_else(|| format!("connection failed: {:?}", wc.status)),
            )
        };
        let waiting = Instant::now();
        let deadline = waiting + self.spec.timeout;
        let mut ready: Vec<Option<ThreadReady>> = (0..self.spec.cores).map(|_| None).collect();
        let mut code_sent = code.is_none();
        while ready.iter().any(Option::is_none) {
            self.manager.check_exit(self.allocation_id)?;
            while let Some(wc) = send_cq.poll_one()? {
                if !wc.is_ok() {
                    return Err(lost(&wc));
                }
                code_sent |= wc.wr_id == CODE_WR_ID;
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout("the executor did not become ready".into()));
            }
            let eager = EAGER_WAIT.saturating_sub(waiting.elapsed());
            let Some(wc) = recv_cq.wait_one_eager(eager, Some(Duration::from_millis(20)))? else {
                continue;
            };
            if !wc.is_ok() {
                return Err(lost(&wc));
            }
            if wc.opcode == Some(Opcode::Recv) && wc.imm == Some(MessageKind::ThreadReady as u32) {
                let mut raw = vec![0; wc.byte_len as usize];
                ready_buf.read(wc.wr_id as usize * MAX_MESSAGE_LEN, &mut raw)?;
                let msg = ThreadReady::decode(&raw)?;
                if let Some(why) = &msg.error {
                    return Err(Error::ExecutorFailed(why.clone()));
                }
                if let Some(slot) = ready.get_mut(msg.thread as usize) {
                    *slot = Some(msg);
                }
            }
        }
        // Every thread is ready, so the code arrived; its send completes at once. The code's
        // buffer may go only after that.
        while !code_sent {
            let wc = wait(send_cq, self.spec.timeout, "the code's send completion")?;
            if !wc.is_ok() {
                return Err(lost(&wc));
            }
            code_sent |= wc.wr_id == CODE_WR_ID;
        }
        Ok(ready
            .into_iter()
            .map(|r| r.expect("every thread ready"))
            .collect())
    }
}

pub(crate) fn wait(cq: &CompletionQueue, timeout: Duration, what: &str) -> Result<Completion> {
    cq.wait_one(Some(timeout))?
        .ok_or_else(|| Error::Timeout(format!("no answer from {what} within {timeout:?}")))
}

/// The client's connection to the executor manager of its allocation.
pub(crate) struct ManagerLink {
    pub(crate) conn: Connection,
    cq: CompletionQueue,
    mailbox: Mailbox,
}

impl ManagerLink {
    /// Connects to the executor manager the lease names.
    pub(crate) fn connect(
        ctx: &Context,
        pd: &ProtectionDomain,
        lease: &Lease,
        timeout: Duration,
    ) -> Result<Self> {
        let cq = ctx.create_cq(16)?;
        let conn = ctx
            .connect(
                pd,
                lease.address,
                &QpConfig::new(&cq, &cq).timeout(timeout),
                &Hello::client().encode(),
            )
            .map_err(|e| match e {
                rdmalib::Error::Rejected { private_data } => {
                    Error::Refused(private_text(&private_data))
                }
                other => Error::Unreachable {
                    peer: format!("the executor manager {}", lease.node),
                    addr: lease.address,
                    reason: other.to_string(),
                },
            })?;
        let mailbox = Mailbox::new(pd, 4, 1)?;
        mailbox.post_receives(&conn)?;
        Ok(ManagerLink { conn, cq, mailbox })
    }

    /// Sends the allocation request; the manager's answer when it accepts it.
    pub(crate) fn request(
        &self,
        request: &AllocationRequest,
        lease: &Lease,
        timeout: Duration,
    ) -> Result<AllocationResponse> {
        self.mailbox.send(
            &self.conn,
            MessageKind::AllocationRequest,
            &request.encode(),
        )?;
        let response = loop {
            let wc = wait(&self.cq, timeout, "the executor manager's answer")?;
            if !wc.is_ok() {
                return Err(Error::Unreachable {
                    peer: format!("the executor manager {}", lease.node),
                    addr: lease.address,
                    reason: "it closed the connection".into(),
                });
            }
            if wc.opcode == Some(Opcode::Recv) {
                let message = self.mailbox.take(&self.conn, &wc)?;
                if message.kind == Some(MessageKind::AllocationResponse) {
                    break AllocationResponse::decode(&message.payload)?;
                }
            }
        };
        if response.status != AllocationStatus::Accepted {
            return Err(Error::Refused(format!(
                "{:?}: {}",
                response.status, response.message
            )));
        }
        Ok(response)
    }

    /// Fails if the manager reported that our executor exited.
    pub(crate) fn check_exit(&self, allocation_id: u32) -> Result<()> {
        match self.poll_exit(allocation_id, Duration::ZERO) {
            Some(exit) => Err(Error::ExecutorLost(exit)),
            None => Ok(()),
        }
    }

    /// Gives the manager a moment to say why our executor died.
    pub(crate) fn wait_exit(&self, allocation_id: u32) -> Option<String> {
        self.poll_exit(allocation_id, Duration::from_millis(500))
    }

    fn poll_exit(&self, allocation_id: u32, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let wc = match self.cq.poll_one() {
                Ok(Some(wc)) => wc,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                _ => return None,
            };
            if !wc.is_ok() || wc.opcode != Some(Opcode::Recv) {
                continue;
            }
            let message = self.mailbox.take(&self.conn, &wc).ok()?;
            if message.kind == Some(MessageKind::ExecutorExit)
                && let Ok(exit) = ExecutorExit::decode(&message.payload)
                && exit.allocation_id == allocation_id
            {
                return Some(exit.to_string());
            }
        }
    }
}
