//! The RDMA side of the resource manager: executor managers register with the shared secret
//! and list the leases they still hold, clients ask for leases, managers hear of each lease
//! before its client does and report it closed with billing, which is acknowledged once stored.
//!
//! Managers send a heartbeat every [`HEARTBEAT_INTERVAL`]; one that has not been heard from for
//! [`HEARTBEAT_TIMEOUT`] (killed, its link cut, its host gone) is dropped like one that
//! disconnected: its connection is closed and its leases are released. It registers again
//! when it is back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rdmalib::{
    CmEvent, Completion, CompletionQueue, Connection, Context, DeviceConfig, Listener, Opcode,
    ProtectionDomain, QpConfig,
};
use rfaas_protocol::config::Secret;
use rfaas_protocol::control::{
    BillRecorded, Credential, HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, HeldLease, Hello, LeaseClosed,
    LeaseNotice, LeaseRequest, LeaseResponse, LeaseStatus, LeasesHeld, MessageKind,
    NodeRegistration, Role, credentials_match,
};
use rfaas_protocol::mailbox::Mailbox;
use rfaas_protocol::{ProtocolError, Record};

use resource_manager::registry::{Billing, Grant, LeaseState, Registry, RegistryError};

/// Receive slots per peer.
const RECV_SLOTS: usize = 4;
/// Send slots per peer, used round-robin.
const SEND_SLOTS: usize = 8;
/// An idle broker wakes this often (for nodes added over HTTP after their manager registered).
const IDLE_WAKEUP: Duration = Duration::from_millis(20);

enum Kind {
    /// An executor manager; its node once it registered, and the leases it listed so far as
    /// held ([`LeasesHeld`] records before the last).
    Manager {
        node: Option<String>,
        held: Vec<HeldLease>,
    },
    Client,
}

struct Peer {
    conn: Connection,
    mailbox: Mailbox,
    kind: Kind,
    /// When its last message arrived (or it connected).
    last_heard: Instant,
}

pub struct Broker {
    peers: HashMap<u32, Peer>,
    /// Managers that registered a node the registry does not know (yet).
    unknown_nodes: HashMap<u32, String>,
    registry: Registry,
    /// The digest executor managers must present.
    secret: Credential,
    /// Sleep on the completion channel when idle (`rdma-sleep`), else poll.
    sleep: bool,
    listener: Listener,
    send_cq: CompletionQueue,
    recv_cq: CompletionQueue,
    pd: ProtectionDomain,
    _ctx: Context,
}

impl Broker {
    pub fn start(
        device: &DeviceConfig,
        port: u16,
        secret: &Secret,
        sleep: bool,
        registry: Registry,
    ) -> Result<Broker> {
        let ctx = Context::open(device)?;
        let pd = ctx.alloc_pd()?;
        let listener = ctx
            .listen(port)
            .with_context(|| format!("listening on device {}", device.name))?;
        let addr = listener.local_addr();
        tracing::info!("Listening on device {}, port {}", device.name, addr.port());
        if secret.is_the_example() && !addr.ip().is_loopback() {
            tracing::warn!(
                "the shared secret is the example configuration's 42, and this resource manager listens on {addr}: anybody who reads the examples can register a node; set rdma-secret"
            );
        }
        tracing::info!("Begin listening at {addr} and processing events!");
        Ok(Broker {
            peers: HashMap::new(),
            unknown_nodes: HashMap::new(),
            registry,
            secret: secret.digest(),
            sleep,
            listener,
            send_cq: ctx.create_cq(1024)?,
            recv_cq: ctx.create_cq(1024)?,
            pd,
            _ctx: ctx,
        })
    }

    /// Serves until a shutdown signal arrives.
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
            self.retry_unknown_nodes();
            self.drop_silent_managers();
            if !busy && self.sleep {
                // Arm, then look once more: what arrived before arming would not wake us.
                self.recv_cq.req_notify(false)?;
                if self.poll_messages(&mut wcs)? {
                    continue;
                }
                rdmalib::wait_any(Some(&self.listener), &[&self.recv_cq], IDLE_WAKEUP)?;
            }
        }
        Ok(())
    }

    /// Handles received messages; whether there were any.
    fn poll_messages(&mut self, wcs: &mut [Completion]) -> Result<bool> {
        let n = self.recv_cq.poll(wcs)?;
        for wc in &wcs[..n] {
            self.on_message(wc);
        }
        Ok(n > 0)
    }

    fn on_event(&mut self, event: CmEvent) {
        match event {
            CmEvent::ConnectRequest(req) => {
                let peer = req.peer_addr();
                let kind = match Hello::decode(req.private_data()) {
                    Ok(h)
                        if h.role == Role::ExecutorManager
                            && !credentials_match(&h.credential, &self.secret) =>
                    {
                        tracing::warn!("rejected the executor manager at {peer}: wrong secret");
                        let _ = req.reject(b"wrong secret");
                        return;
                    }
                    Ok(h) if h.role == Role::ExecutorManager => Kind::Manager {
                        node: None,
                        held: Vec::new(),
                    },
                    Ok(h) if h.role == Role::Client => Kind::Client,
                    Ok(h) => {
                        tracing::warn!(
                            "rejected {peer}: a {:?} does not connect to the resource manager",
                            h.role
                        );
                        let _ = req.reject(b"only clients and executor managers connect here");
                        return;
                    }
                    Err(e @ (ProtocolError::Version { .. } | ProtocolError::BadMagic)) => {
                        tracing::warn!("rejected {peer}: {e}");
                        let _ = req.reject(e.to_string().as_bytes());
                        return;
                    }
                    Err(e) => {
                        tracing::warn!("rejected {peer}: {e}");
                        let _ = req.reject(b"malformed connection request");
                        return;
                    }
                };
                if let Err(e) = self.accept(req, kind) {
                    tracing::warn!("accepting {peer} failed: {e:#}");
                }
            }
            CmEvent::Established { .. } => {}
            CmEvent::Disconnected { qp_num } => self.on_disconnect(qp_num),
        }
    }

    fn accept(&mut self, req: rdmalib::ConnectRequest, kind: Kind) -> Result<()> {
        let qp = QpConfig::new(&self.send_cq, &self.recv_cq).max_recv_wr(RECV_SLOTS as u32);
        let conn = req.accept(&self.pd, &qp, &[])?;
        let mailbox = Mailbox::new(&self.pd, RECV_SLOTS, SEND_SLOTS)?;
        mailbox.post_receives(&conn)?;
        tracing::info!(
            "{} {} connected",
            if matches!(kind, Kind::Client) {
                "Client"
            } else {
                "Executor manager"
            },
            conn.peer_addr()
        );
        self.peers.insert(
            conn.qp_num(),
            Peer {
                conn,
                mailbox,
                kind,
                last_heard: Instant::now(),
            },
        );
        Ok(())
    }

    fn on_disconnect(&mut self, qp_num: u32) {
        self.manager_gone(qp_num, "disconnected");
    }

    /// Managers not heard from for [`HEARTBEAT_TIMEOUT`] are gone: their connection is closed
    /// and their leases released.
    fn drop_silent_managers(&mut self) {
        let silent: Vec<(u32, Duration)> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.kind, Kind::Manager { .. }))
            .map(|(qp, p)| (*qp, p.last_heard.elapsed()))
            .filter(|(_, silent)| *silent > HEARTBEAT_TIMEOUT)
            .collect();
        for (qp_num, silent) in silent {
            self.manager_gone(
                qp_num,
                &format!(
                    "sent no heartbeat for {:.1} s (they come every {HEARTBEAT_INTERVAL:?})",
                    silent.as_secs_f64()
                ),
            );
        }
    }

    /// Forgets the peer on `qp_num` (closing its connection); if it was a registered manager,
    /// releases its node's leases.
    fn manager_gone(&mut self, qp_num: u32, why: &str) {
        self.unknown_nodes.remove(&qp_num);
        let Some(peer) = self.peers.remove(&qp_num) else {
            return;
        };
        let from = peer.conn.peer_addr();
        drop(peer.conn);
        let node = match peer.kind {
            Kind::Manager {
                node: Some(node), ..
            } => node,
            Kind::Manager { node: None, .. } => {
                tracing::warn!("The executor manager at {from} {why} before it registered a node");
                return;
            }
            Kind::Client => return,
        };
        match self.registry.release_node(&node) {
            Ok(released) => {
                let ids: Vec<String> = released.iter().map(|l| l.lease_id.to_string()).collect();
                tracing::warn!(
                    "The executor manager of node {node} ({from}) {why}; released {} lease(s) [{}], the node is gone until it registers again",
                    released.len(),
                    ids.join(", ")
                );
            }
            Err(e) => tracing::error!(
                "The executor manager of node {node} ({from}) {why}; releasing its leases: {e}"
            ),
        }
    }

    fn on_message(&mut self, wc: &Completion) {
        if !wc.is_ok() || wc.opcode != Some(Opcode::Recv) {
            return;
        }
        let Some(peer) = self.peers.get_mut(&wc.qp_num) else {
            return;
        };
        peer.last_heard = Instant::now();
        let message = match peer.mailbox.take(&peer.conn, wc) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!("reading a message from {}: {e}", peer.conn.peer_addr());
                return;
            }
        };
        let raw = message.payload;
        let from = peer.conn.peer_addr();
        let is_manager = matches!(peer.kind, Kind::Manager { .. });
        let outcome = match (message.kind, is_manager) {
            (Some(MessageKind::NodeRegistration), true) => {
                NodeRegistration::decode(&raw).map(|r| self.register(wc.qp_num, r.node))
            }
            (Some(MessageKind::LeaseClosed), true) => {
                LeaseClosed::decode(&raw).map(|c| self.closed(wc.qp_num, c))
            }
            (Some(MessageKind::LeasesHeld), true) => {
                LeasesHeld::decode(&raw).map(|h| self.held(wc.qp_num, h))
            }
            (Some(MessageKind::Heartbeat), true) => Ok(()),
            (Some(MessageKind::LeaseRequest), false) => {
                LeaseRequest::decode(&raw).map(|r| self.lease(wc.qp_num, r))
            }
            (kind, _) => {
                tracing::warn!("unexpected message {kind:?} from {from}");
                Ok(())
            }
        };
        if let Err(e) = outcome {
            tracing::warn!("malformed message from {from}: {e}");
        }
    }

    fn register(&mut self, qp_num: u32, node: String) {
        // A manager that registers again while its old connection is still here lost that
        // connection's state (its lease notices): the old one goes, with its leases.
        let stale: Vec<u32> = self
            .peers
            .iter()
            .filter(|(qp, p)| {
                **qp != qp_num
                    && matches!(&p.kind, Kind::Manager { node: Some(n), .. } if *n == node)
            })
            .map(|(qp, _)| *qp)
            .collect();
        for old in stale {
            self.manager_gone(old, "registered again on a new connection");
        }
        if let Some(Peer {
            kind: Kind::Manager { node: slot, held },
            ..
        }) = self.peers.get_mut(&qp_num)
        {
            *slot = Some(node);
            held.clear();
        }
    }

    /// The node of a manager that listed its leases gets leases from now on: not before, so
    /// that the cores of a lease the database lost and the manager still holds are never
    /// leased again.
    fn mark_registered(&mut self, qp_num: u32, node: String) {
        match self.registry.set_manager_connected(&node, true) {
            Ok(()) => tracing::info!("Executor manager registered node {node}"),
            Err(RegistryError::UnknownNode(_)) => {
                tracing::warn!(
                    "node {node} is not in the executor database; add it (POST /add?node={node}) to lease its cores"
                );
                self.unknown_nodes.insert(qp_num, node);
            }
            Err(e) => tracing::warn!("registering node {node}: {e}"),
        }
    }

    /// Nodes added over HTTP after their manager registered become leasable.
    fn retry_unknown_nodes(&mut self) {
        if self.unknown_nodes.is_empty() {
            return;
        }
        let registry = &self.registry;
        self.unknown_nodes
            .retain(|_, node| match registry.set_manager_connected(node, true) {
                Ok(()) => {
                    tracing::info!("Executor manager of node {node} is now registered");
                    false
                }
                Err(_) => true,
            });
    }

    /// A registered manager lists the leases it holds; at the last record, its node's leases
    /// are reconciled and the node gets leases.
    fn held(&mut self, qp_num: u32, record: LeasesHeld) {
        let Some(Peer {
            kind: Kind::Manager { node, held },
            ..
        }) = self.peers.get_mut(&qp_num)
        else {
            return;
        };
        held.extend(record.leases);
        if !record.last {
            return;
        }
        let held = std::mem::take(held);
        let Some(node) = node.clone() else {
            tracing::warn!("a manager listed its leases before registering a node");
            return;
        };
        match self.registry.reconcile(&node, &held) {
            Ok(r) => {
                if !r.active.is_empty() || !r.released.is_empty() {
                    tracing::info!(
                        "Node {node}: its manager holds {} lease(s); {} in doubt active again {:?}, {} released {:?}",
                        held.len(),
                        r.active.len(),
                        r.active,
                        r.released.len(),
                        r.released
                    );
                }
                if !r.adopted.is_empty() {
                    tracing::warn!(
                        "Node {node}: its manager holds {} lease(s) this resource manager had lost (its host went down before they reached the disk?); taken back: {:?}",
                        r.adopted.len(),
                        r.adopted
                    );
                }
            }
            Err(e) => tracing::error!("reconciling the leases of node {node}: {e}"),
        }
        self.mark_registered(qp_num, node);
    }

    fn lease(&mut self, client_qp: u32, request: LeaseRequest) {
        let grant = match self
            .registry
            .grant(u32::from(request.cores), u64::from(request.memory_mb))
        {
            Ok(grant) => grant,
            Err(e) => {
                tracing::info!(
                    "Lease of {} core(s), {} MiB refused: {e}",
                    request.cores,
                    request.memory_mb
                );
                let status = match e {
                    RegistryError::NoResources { .. } => LeaseStatus::NoResources,
                    RegistryError::TooLarge { .. } => LeaseStatus::TooLarge,
                    _ => LeaseStatus::Failed,
                };
                self.answer(
                    client_qp,
                    &LeaseResponse {
                        status,
                        ..failed(e.to_string())
                    },
                );
                return;
            }
        };
        let manager = self.peers.iter().find_map(|(qp, p)| match &p.kind {
            Kind::Manager { node: Some(n), .. } if *n == grant.node => Some(*qp),
            _ => None,
        });
        let Some(manager) = manager else {
            let why = format!("the manager of node {} is not connected", grant.node);
            return self.withdraw(client_qp, &grant, why);
        };
        let Ok(address) = format!("{}:{}", grant.ip_address, grant.port).parse::<SocketAddr>()
        else {
            let why = format!("node {} has an invalid address", grant.node);
            return self.withdraw(client_qp, &grant, why);
        };
        // The notice goes first, so it reaches the manager long before the client, which has
        // yet to connect there; a manager asked to allocate on a lease it has not heard of yet
        // waits a moment for the notice.
        let notice = LeaseNotice {
            lease_id: grant.lease_id,
            cores: request.cores,
            memory_mb: request.memory_mb,
        };
        if !self.send(manager, MessageKind::LeaseNotice, &notice.encode()) {
            let why = format!("the manager of node {} could not be told", grant.node);
            return self.withdraw(client_qp, &grant, why);
        }
        tracing::info!(
            "Lease {}: {} core(s), {} MiB on {} granted",
            grant.lease_id,
            grant.cores,
            grant.memory,
            grant.node
        );
        let response = LeaseResponse {
            status: LeaseStatus::Granted,
            lease_id: grant.lease_id,
            node: grant.node,
            manager: address,
            cores: request.cores,
            memory_mb: request.memory_mb,
            message: String::new(),
        };
        self.answer(client_qp, &response);
    }

    /// Releases `grant`, which could not be handed out, and tells the client why.
    fn withdraw(&mut self, client_qp: u32, grant: &Grant, why: String) {
        let _ = self.registry.release(grant.lease_id);
        self.answer(client_qp, &failed(why));
    }

    fn closed(&mut self, manager_qp: u32, c: LeaseClosed) {
        let billing = Billing {
            allocation_ns: c.allocation_ns,
            hot_polling_ns: c.hot_polling_ns,
            execution_ns: c.execution_ns,
            invocations: c.invocations,
        };
        match self.registry.close(c.lease_id, billing) {
            Ok(lease) => tracing::info!(
                "Lease {} on {} closed: allocation {:.3} ms, hot polling {:.3} ms, execution {:.3} ms, {} invocations",
                c.lease_id,
                lease.node,
                c.allocation_ns as f64 / 1e6,
                c.hot_polling_ns as f64 / 1e6,
                c.execution_ns as f64 / 1e6,
                c.invocations
            ),
            Err(RegistryError::LeaseNotActive(id))
                if self
                    .registry
                    .lease(id)
                    .is_some_and(|l| l.state == LeaseState::Closed) =>
            {
                // Sent again after a reconnect: it is stored already.
                tracing::info!("Lease {id}: its bill is recorded already");
            }
            Err(e @ RegistryError::Storage(_)) => {
                // Not acknowledged: the manager sends it again when it registers again.
                tracing::error!("closing lease {}: {e}", c.lease_id);
                return;
            }
            Err(e) => tracing::warn!("closing lease {}: {e}", c.lease_id),
        }
        self.send(
            manager_qp,
            MessageKind::BillRecorded,
            &BillRecorded {
                lease_id: c.lease_id,
            }
            .encode(),
        );
    }

    fn answer(&mut self, client_qp: u32, response: &LeaseResponse) {
        self.send(client_qp, MessageKind::LeaseResponse, &response.encode());
    }

    /// Sends to the peer on `qp_num`; whether the send was posted (a failure is logged).
    fn send(&mut self, qp_num: u32, kind: MessageKind, payload: &[u8]) -> bool {
        let Some(peer) = self.peers.get(&qp_num) else {
            return false;
        };
        match peer.mailbox.send(&peer.conn, kind, payload) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("could not send {kind:?} to {}: {e}", peer.conn.peer_addr());
                false
            }
        }
    }
}

fn failed(message: String) -> LeaseResponse {
    LeaseResponse {
        status: LeaseStatus::Failed,
        lease_id: 0,
        node: String::new(),
        manager: SocketAddr::from(([0, 0, 0, 0], 0)),
        cores: 0,
        memory_mb: 0,
        message,
    }
}
