//! The manager's event loop: connection requests and disconnects on the listener, allocation
//! requests on the clients' shared receive queue, and executor processes to reap.

use std::collections::HashMap;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rdmalib::{
    Access, CmEvent, Completion, CompletionQueue, Connection, Context, DeviceConfig, Listener,
    MemoryRegion, Opcode, ProtectionDomain, QpConfig,
};
use rfaas_protocol::config::{ExecutorManagerConfig, ManagerSection};
use rfaas_protocol::control::{
    AllocationRequest, AllocationResponse, AllocationStatus, BillingRecord, Credential,
    ExecutorExit, HeldLease, Hello, LeaseClosed, MessageKind, Role, billing, credentials_match,
    random_credential,
};
use rfaas_protocol::mailbox::Mailbox;
use rfaas_protocol::{ProtocolError, Record};

use crate::resource_manager::{KnownLease, ResourceManagerLink, Unacked};
use crate::spawn::{Launcher, Spawned, describe_exit};

/// Receive slots per client connection.
const CLIENT_SLOTS: usize = 4;
/// How often an idle manager looks for executors that ended.
const REAP_INTERVAL: Duration = Duration::from_millis(20);
/// How long the resource manager may take to answer at start.
const RM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a manager that lost its resource manager tries to register again, and how long
/// each try may take (the event loop waits for it).
const RM_RETRY: Duration = Duration::from_secs(1);
const RM_RETRY_TIMEOUT: Duration = Duration::from_millis(500);
/// How long an allocation naming a lease this manager has not heard of waits for the resource
/// manager's notice. The notice is sent before the client learns of its lease, and the client
/// still has to connect here, so it is late only on a machine too busy to run its threads.
const NOTICE_WAIT: Duration = Duration::from_millis(250);

struct Client {
    conn: Connection,
    mailbox: Mailbox,
}

/// An allocation request whose lease has not been announced yet.
struct AwaitingNotice {
    client_qp: u32,
    request: AllocationRequest,
    until: Instant,
}

struct Allocation {
    client_qp: u32,
    /// The lease it runs under, as the resource manager announced it (id 0: no lease).
    lease: HeldLease,
    child: Child,
    started: Instant,
    /// What the executor presents on its billing connection.
    billing_token: Credential,
    /// The counters the executor adds its billing into: a region of its own, so its rkey
    /// reaches this allocation's record only.
    account: MemoryRegion,
    /// The executor's billing connection, kept until it exits.
    billing: Option<Connection>,
}

pub struct Manager {
    // Field order: connections and regions go before the domain and the context.
    clients: HashMap<u32, Client>,
    allocations: HashMap<u32, Allocation>,
    listener: Listener,
    recv_cq: CompletionQueue,
    send_cq: CompletionQueue,
    /// Completion queue of the billing connections; never polled (background progress).
    billing_cq: CompletionQueue,
    resource_manager: Option<ResourceManagerLink>,
    /// Where the resource manager is (`None` with `--skip-resource-manager`), and when to try
    /// to register again after the link broke.
    rm_config: Option<ManagerSection>,
    rm_retry_at: Instant,
    /// Bills the resource manager has not acknowledged: sent again after registering again.
    unacked_bills: Unacked,
    /// Announced leases not used yet, kept while the link is down.
    carried_leases: HashMap<u32, KnownLease>,
    awaiting_notice: Vec<AwaitingNotice>,
    launcher: Launcher,
    use_docker: bool,
    /// Sleep on the completion channel when idle (`rdma-sleep`), else poll.
    sleep: bool,
    max_inline_data: u32,
    next_allocation: u32,
    pd: ProtectionDomain,
    ctx: Context,
}

impl Manager {
    pub fn start(
        device: &DeviceConfig,
        config: &ExecutorManagerConfig,
        launcher: Launcher,
        skip_resource_manager: bool,
    ) -> Result<Manager> {
        let ctx = Context::open(device)?;
        let pd = ctx.alloc_pd()?;
        let listener = ctx
            .listen(config.config.rdma_device_port)
            .with_context(|| format!("listening on device {}", device.name))?;
        let addr = listener.local_addr();
        tracing::info!("Listening on device {}, port {}", device.name, addr.port());
        let rm_config = (!skip_resource_manager).then(|| config.config.clone());
        let resource_manager = match &rm_config {
            None => None,
            Some(c) => Some(ResourceManagerLink::connect(
                &ctx,
                &pd,
                c,
                RM_CONNECT_TIMEOUT,
                &Unacked::new(),
                &[],
                &mut HashMap::new(),
            )?),
        };
        let mut launcher = launcher;
        launcher.replenish();
        tracing::info!("Begin listening at {addr} and processing events!");
        Ok(Manager {
            clients: HashMap::new(),
            allocations: HashMap::new(),
            listener,
            recv_cq: ctx.create_cq(1024)?,
            send_cq: ctx.create_cq(1024)?,
            billing_cq: ctx.create_cq(64)?,
            resource_manager,
            rm_config,
            rm_retry_at: Instant::now(),
            unacked_bills: Unacked::new(),
            carried_leases: HashMap::new(),
            awaiting_notice: Vec::new(),
            launcher,
            use_docker: config.executor.use_docker,
            sleep: config.config.rdma_sleep,
            max_inline_data: device.max_inline_data,
            next_allocation: 1,
            pd,
            ctx,
        })
    }

    pub fn run(mut self) -> Result<()> {
        let mut wcs = [Completion::default(); 16];
        while !rfaas_cli::shutdown_requested() {
            let mut busy = false;
            while let Some(event) = self.listener.get_event(Some(Duration::ZERO))? {
                self.on_event(event);
                busy = true;
            }
            busy |= self.poll_messages(&mut wcs)?;
            while self.send_cq.poll(&mut wcs)? > 0 {}
            self.reap();
            self.launcher.replenish();
            self.launcher.trim_code_cache();
            self.reconnect_resource_manager();
            if !busy && self.sleep {
                // Arm, then look once more: what arrived before arming would not wake us.
                self.recv_cq.req_notify(false)?;
                if let Some(link) = &self.resource_manager {
                    link.arm()?;
                }
                if self.poll_messages(&mut wcs)? {
                    continue;
                }
                let link_cq = self.resource_manager.as_ref().map(ResourceManagerLink::cq);
                let cqs: Vec<&CompletionQueue> =
                    std::iter::once(&self.recv_cq).chain(link_cq).collect();
                rdmalib::wait_any(Some(&self.listener), &cqs, REAP_INTERVAL)?;
            }
        }
        tracing::info!(
            "Shutting down: stopping {} executor(s)",
            self.allocations.len()
        );
        for (id, mut alloc) in self.allocations.drain() {
            let _ = alloc.child.kill();
            let _ = alloc.child.wait();
            tracing::debug!("stopped the executor of allocation {id}");
        }
        Ok(())
    }

    /// Handles the resource manager's messages and then the clients'; whether there were any.
    /// Lease notices go first, so a request that arrived with its lease's notice finds it.
    fn poll_messages(&mut self, wcs: &mut [Completion]) -> Result<bool> {
        let mut from_link = false;
        if let Some(link) = &mut self.resource_manager {
            match link.poll(&mut self.unacked_bills) {
                Ok(any) => from_link = any,
                Err(e) => {
                    tracing::error!(
                        "{e:#}; registering again every {RM_RETRY:?} (leases cannot be checked until then; bills are kept and sent then)"
                    );
                    if let Some(old) = self.resource_manager.take() {
                        self.carried_leases = old.leases;
                    }
                    self.rm_retry_at = Instant::now() + RM_RETRY;
                }
            }
        }
        self.answer_awaiting();
        let n = self.recv_cq.poll(wcs)?;
        for wc in &wcs[..n] {
            self.on_message(wc);
        }
        Ok(n > 0 || from_link)
    }

    /// Whether `request` names a lease the resource manager has not announced here yet.
    fn lease_unannounced(&self, request: &AllocationRequest) -> bool {
        self.resource_manager
            .as_ref()
            .is_some_and(|link| !link.leases.contains_key(&request.lease_id))
    }

    /// Answers the requests whose lease was announced since, that waited long enough (they are
    /// refused), or whose resource manager link broke (leases cannot be checked then); drops
    /// those whose client left.
    fn answer_awaiting(&mut self) {
        if self.awaiting_notice.is_empty() {
            return;
        }
        let now = Instant::now();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.awaiting_notice)
            .into_iter()
            .partition(|a| now >= a.until || !self.lease_unannounced(&a.request));
        self.awaiting_notice = waiting;
        for a in ready {
            if !self.clients.contains_key(&a.client_qp) {
                continue;
            }
            let response = self.allocate(a.client_qp, &a.request);
            self.send(
                a.client_qp,
                MessageKind::AllocationResponse,
                &response.encode(),
            );
        }
    }

    fn on_event(&mut self, event: CmEvent) {
        match event {
            CmEvent::ConnectRequest(req) => {
                let peer = req.peer_addr();
                match Hello::decode(req.private_data()) {
                    Ok(hello) if hello.role == Role::Client => match self.accept_client(req) {
                        Ok(qp) => tracing::info!("Client {peer} connected (connection {qp})"),
                        Err(e) => tracing::warn!("accepting client {peer} failed: {e:#}"),
                    },
                    Ok(hello) if hello.role == Role::ExecutorBilling => {
                        self.accept_billing(req, &hello)
                    }
                    Ok(hello) => {
                        tracing::warn!(
                            "rejected {peer}: a {:?} cannot connect to an executor manager",
                            hello.role
                        );
                        let _ =
                            req.reject(b"this is an executor manager; only clients connect here");
                    }
                    Err(e @ ProtocolError::Version { .. }) | Err(e @ ProtocolError::BadMagic) => {
                        tracing::warn!("rejected {peer}: {e}");
                        let _ = req.reject(e.to_string().as_bytes());
                    }
                    Err(e) => {
                        tracing::warn!("rejected {peer}: {e}");
                        let _ = req.reject(b"malformed connection request");
                    }
                }
            }
            CmEvent::Established { .. } => {}
            CmEvent::Disconnected { qp_num } => {
                if let Some(client) = self.clients.remove(&qp_num) {
                    tracing::info!("Client {} disconnected", client.conn.peer_addr());
                }
            }
        }
    }

    fn accept_client(&mut self, req: rdmalib::ConnectRequest) -> Result<u32> {
        let qp = QpConfig::new(&self.send_cq, &self.recv_cq)
            .max_inline_data(self.max_inline_data)
            .max_recv_wr(CLIENT_SLOTS as u32);
        let conn = req.accept(&self.pd, &qp, &[])?;
        let mailbox = Mailbox::new(&self.pd, CLIENT_SLOTS, CLIENT_SLOTS)?;
        mailbox.post_receives(&conn)?;
        let qp_num = conn.qp_num();
        self.clients.insert(qp_num, Client { conn, mailbox });
        Ok(qp_num)
    }

    /// An executor connects to add its times into its accounting record; it proves which
    /// allocation it belongs to with the token this manager gave it.
    fn accept_billing(&mut self, req: rdmalib::ConnectRequest, hello: &Hello) {
        let allocation_id = hello.allocation_id;
        let alloc = match self.allocations.get_mut(&allocation_id) {
            Some(alloc) if credentials_match(&alloc.billing_token, &hello.credential) => alloc,
            found => {
                tracing::warn!(
                    "rejected a billing connection from {} for allocation {allocation_id}: {}",
                    req.peer_addr(),
                    if found.is_some() {
                        "wrong token"
                    } else {
                        "no such allocation"
                    }
                );
                let _ = req.reject(b"not an executor of this manager");
                return;
            }
        };
        let record = alloc.account.remote();
        let data = BillingRecord {
            addr: record.addr,
            rkey: record.rkey,
        }
        .encode();
        let qp = QpConfig::new(&self.billing_cq, &self.billing_cq).background_progress(true);
        match req.accept(&self.pd, &qp, &data) {
            Ok(conn) => alloc.billing = Some(conn),
            Err(e) => tracing::warn!("billing connection of allocation {allocation_id}: {e}"),
        }
    }

    fn on_message(&mut self, wc: &Completion) {
        if !wc.is_ok() || wc.opcode != Some(Opcode::Recv) {
            return;
        }
        let Some(client) = self.clients.get(&wc.qp_num) else {
            return;
        };
        let peer = client.conn.peer_addr();
        let message = match client.mailbox.take(&client.conn, wc) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!("reading a message from {peer}: {e}");
                return;
            }
        };
        let response = match (message.kind, AllocationRequest::decode(&message.payload)) {
            (Some(MessageKind::AllocationRequest), Ok(request))
                if self.lease_unannounced(&request) =>
            {
                tracing::info!(
                    "Allocation request from {peer} for lease {} came before its notice; waiting up to {NOTICE_WAIT:?}",
                    request.lease_id
                );
                self.awaiting_notice.push(AwaitingNotice {
                    client_qp: wc.qp_num,
                    request,
                    until: Instant::now() + NOTICE_WAIT,
                });
                return;
            }
            (Some(MessageKind::AllocationRequest), Ok(request)) => {
                self.allocate(wc.qp_num, &request)
            }
            (kind, decoded) => {
                let why = match decoded {
                    Err(e) => e.to_string(),
                    Ok(_) => format!("unexpected message {kind:?}"),
                };
                tracing::warn!("bad request from {peer}: {why}");
                refuse(AllocationStatus::BadRequest, why)
            }
        };
        self.send(
            wc.qp_num,
            MessageKind::AllocationResponse,
            &response.encode(),
        );
    }

    fn allocate(&mut self, client_qp: u32, request: &AllocationRequest) -> AllocationResponse {
        if self.use_docker {
            return refuse(
                AllocationStatus::Unsupported,
                "container executors are not supported; use the wasm sandbox".into(),
            );
        }
        if request.cores == 0 || request.input_buf_count == 0 || request.code_size == 0 {
            return refuse(
                AllocationStatus::BadRequest,
                format!(
                    "an allocation needs cores, input buffers and code (got {} cores, {} buffers, {} bytes of code)",
                    request.cores, request.input_buf_count, request.code_size
                ),
            );
        }
        let mut lease = HeldLease {
            lease_id: request.lease_id,
            cores: request.cores,
            memory_mb: request.memory_mb,
        };
        if let Some(link) = &mut self.resource_manager {
            match link.leases.get(&request.lease_id) {
                Some(known)
                    if request.cores <= known.cores && request.memory_mb <= known.memory_mb =>
                {
                    (lease.cores, lease.memory_mb) = (known.cores, known.memory_mb);
                    link.leases.remove(&request.lease_id);
                }
                Some(known) => {
                    return refuse(
                        AllocationStatus::BadRequest,
                        format!(
                            "lease {} is for {} core(s) and {} MiB; the request asks for {} and {}",
                            request.lease_id,
                            known.cores,
                            known.memory_mb,
                            request.cores,
                            request.memory_mb
                        ),
                    );
                }
                None => {
                    return refuse(
                        AllocationStatus::UnknownLease,
                        format!(
                            "this manager knows no lease {}; ask the resource manager for one",
                            request.lease_id
                        ),
                    );
                }
            }
        }
        let id = self.next_allocation;
        self.next_allocation += 1;
        let (billing_token, account) = match random_credential()
            .map_err(anyhow::Error::from)
            .and_then(|t| {
                let account = self.pd.register(
                    billing::RECORD_LEN,
                    Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_ATOMIC,
                )?;
                Ok((t, account))
            }) {
            Ok(parts) => parts,
            Err(e) => {
                tracing::error!("allocation {id}: {e:#}");
                return refuse(AllocationStatus::SpawnFailed, format!("{e:#}"));
            }
        };
        match self
            .launcher
            .spawn(id, request, self.listener.local_addr(), &billing_token)
        {
            Ok(Spawned { child, code_cached }) => {
                tracing::info!(
                    "Allocation {id}: {} {} core(s) for {}, code {}, executor pid {}",
                    request.sandbox,
                    request.cores,
                    request.client,
                    if code_cached { "cached" } else { "sent" },
                    child.id()
                );
                self.allocations.insert(
                    id,
                    Allocation {
                        client_qp,
                        lease,
                        child,
                        started: Instant::now(),
                        billing_token,
                        account,
                        billing: None,
                    },
                );
                AllocationResponse {
                    status: AllocationStatus::Accepted,
                    allocation_id: id,
                    code_cached,
                    message: String::new(),
                }
            }
            Err(e) => {
                tracing::error!("allocation {id}: {e:#}");
                refuse(AllocationStatus::SpawnFailed, format!("{e:#}"))
            }
        }
    }

    /// Registers with the resource manager again once it is back.
    fn reconnect_resource_manager(&mut self) {
        let Some(config) = &self.rm_config else {
            return;
        };
        if self.resource_manager.is_some() || Instant::now() < self.rm_retry_at {
            return;
        }
        let allocated: Vec<HeldLease> = self
            .allocations
            .values()
            .map(|a| a.lease)
            .filter(|l| l.lease_id != 0)
            .collect();
        match ResourceManagerLink::connect(
            &self.ctx,
            &self.pd,
            config,
            RM_RETRY_TIMEOUT,
            &self.unacked_bills,
            &allocated,
            &mut self.carried_leases,
        ) {
            Ok(link) => {
                tracing::info!("Registered with the resource manager again");
                self.resource_manager = Some(link);
            }
            Err(e) => {
                tracing::debug!("the resource manager is still away: {e:#}");
                self.rm_retry_at = Instant::now() + RM_RETRY;
            }
        }
    }

    /// Collects executors that ended; tells the client when one died abnormally.
    fn reap(&mut self) {
        let mut ended = Vec::new();
        for (id, alloc) in &mut self.allocations {
            match alloc.child.try_wait() {
                Ok(Some(status)) => ended.push((*id, status)),
                Ok(None) => {}
                Err(e) => tracing::warn!("waiting for the executor of allocation {id}: {e}"),
            }
        }
        for (id, status) in ended {
            let Some(alloc) = self.allocations.remove(&id) else {
                continue;
            };
            let lifetime = alloc.started.elapsed();
            let closed = billing_of(&alloc, lifetime);
            tracing::info!(
                "Billing of allocation {id}: invocations {}, hot polling {:.3} ms, execution {:.3} ms, allocation {:.3} s",
                closed.invocations,
                closed.hot_polling_ns as f64 / 1e6,
                closed.execution_ns as f64 / 1e6,
                lifetime.as_secs_f64()
            );
            if status.success() {
                tracing::info!(
                    "Executor of allocation {id} finished after {:.3} s: {} invocations, hot polling {:.3} ms, execution {:.3} ms",
                    lifetime.as_secs_f64(),
                    closed.invocations,
                    closed.hot_polling_ns as f64 / 1e6,
                    closed.execution_ns as f64 / 1e6
                );
            } else {
                tracing::warn!(
                    "Executor of allocation {id} {} after {:.3} s",
                    describe_exit(status),
                    lifetime.as_secs_f64()
                );
                use std::os::unix::process::ExitStatusExt;
                let exit = ExecutorExit {
                    allocation_id: id,
                    signal: status.signal(),
                    status: status.code().unwrap_or(-1),
                };
                self.send(alloc.client_qp, MessageKind::ExecutorExit, &exit.encode());
            }
            if self.rm_config.is_some() && alloc.lease.lease_id != 0 {
                // Kept until the resource manager says it stored it: sent again after a
                // reconnect if the link breaks first.
                self.unacked_bills.insert(alloc.lease.lease_id, closed);
                if let Some(link) = &mut self.resource_manager
                    && let Err(e) = link.close(closed)
                {
                    tracing::error!(
                        "reporting the end of lease {} (kept to send again): {e:#}",
                        alloc.lease.lease_id
                    );
                }
            }
        }
    }

    fn send(&self, client_qp: u32, kind: MessageKind, payload: &[u8]) {
        let Some(client) = self.clients.get(&client_qp) else {
            return;
        };
        let sent = client.mailbox.send(&client.conn, kind, payload);
        if let Err(e) = sent {
            tracing::warn!(
                "could not send {kind:?} to {}: {e}",
                client.conn.peer_addr()
            );
        }
    }
}

/// What an allocation consumed: its lifetime and what its executor added into its record.
fn billing_of(alloc: &Allocation, lifetime: Duration) -> LeaseClosed {
    let counter = |field: u32| {
        alloc
            .account
            .atomic_u64(field as usize)
            .map_or(0, |c| c.load(std::sync::atomic::Ordering::SeqCst))
    };
    LeaseClosed {
        lease_id: alloc.lease.lease_id,
        allocation_ns: lifetime.as_nanos() as u64,
        hot_polling_ns: counter(billing::HOT_POLLING_NS),
        execution_ns: counter(billing::EXECUTION_NS),
        invocations: counter(billing::INVOCATIONS),
    }
}

fn refuse(status: AllocationStatus, message: String) -> AllocationResponse {
    AllocationResponse {
        status,
        allocation_id: 0,
        code_cached: false,
        message,
    }
}
