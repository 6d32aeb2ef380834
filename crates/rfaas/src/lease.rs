//! Leases: which executor manager to allocate on, with how many cores and how much memory.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use rdmalib::{CompletionQueue, Connection, Opcode, ProtectionDomain, QpConfig};
use rfaas_protocol::Record;
use rfaas_protocol::config::ExecutorsDatabase;
use rfaas_protocol::control::{
    Hello, LeaseRequest, LeaseResponse, LeaseStatus, MessageKind, private_text,
};
use rfaas_protocol::mailbox::Mailbox;

use crate::endpoint::Endpoint;
use crate::error::{Error, Result};

/// The right to allocate `cores` cores and `memory_mb` MiB on one executor server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Lease id from the resource manager; 0 for a lease taken from an executors database.
    pub lease_id: u32,
    /// Node name of the executor server.
    pub node: String,
    /// Address of its executor manager.
    pub address: SocketAddr,
    /// Leased cores.
    pub cores: u16,
    /// Leased memory in MiB.
    pub memory_mb: u32,
}

impl Lease {
    /// Picks the first executor server of `db` with at least `cores` cores and `memory_mb`
    /// MiB (the seed's `--executors-database`, without a resource manager).
    pub fn from_database(db: &ExecutorsDatabase, cores: u16, memory_mb: u32) -> Result<Lease> {
        let node = db
            .executors
            .iter()
            .find(|e| e.cores >= u32::from(cores) && e.memory >= u64::from(memory_mb))
            .ok_or_else(|| {
                let have: Vec<String> = db
                    .executors
                    .iter()
                    .map(|e| format!("{} ({} cores, {} MiB)", e.node, e.cores, e.memory))
                    .collect();
                Error::NoExecutor(format!(
                    "no executor in the database has {cores} cores and {memory_mb} MiB (it lists: {})",
                    if have.is_empty() { "nothing".to_string() } else { have.join(", ") }
                ))
            })?;
        let address = (node.address.as_str(), node.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                Error::NoExecutor(format!(
                    "executor {} has an invalid address {:?}",
                    node.node, node.address
                ))
            })?;
        Ok(Lease {
            lease_id: 0,
            node: node.node.clone(),
            address,
            cores,
            memory_mb,
        })
    }
}

impl Lease {
    /// Asks the resource manager at `resource_manager` for `cores` cores and `memory_mb` MiB,
    /// through `endpoint`. The resource manager tells the chosen node's manager about the lease
    /// before it answers.
    ///
    /// The endpoint keeps its connection to the resource manager for the leases after this
    /// one. A kept connection that turns out broken (the resource manager restarted, say) is
    /// replaced by a new one, once.
    pub fn from_resource_manager(
        endpoint: &Endpoint,
        resource_manager: SocketAddr,
        cores: u16,
        memory_mb: u32,
        timeout: Duration,
    ) -> Result<Lease> {
        let request = LeaseRequest { cores, memory_mb };
        let kept = endpoint
            .take_resource_manager_link(resource_manager)
            .map(|link| {
                let answer = link.ask(&request, timeout);
                answer.map(|response| (link, response))
            });
        let (link, response) = match kept {
            Some(Ok(answered)) => answered,
            Some(Err(e)) if !matches!(e, Error::Unreachable { .. } | Error::Rdma(_)) => {
                return Err(e);
            }
            none_or_broken => {
                if let Some(Err(e)) = none_or_broken {
                    tracing::debug!(
                        "the kept connection to {resource_manager} failed ({e}); connecting again"
                    );
                }
                let link = ResourceManagerLink::connect(endpoint, resource_manager, timeout)?;
                let response = link.ask(&request, timeout)?;
                (link, response)
            }
        };
        endpoint.keep_resource_manager_link(link);
        match response.status {
            LeaseStatus::Granted => {
                tracing::info!(
                    "Leased {} core(s) and {} MiB on {} ({}), lease {}",
                    response.cores,
                    response.memory_mb,
                    response.node,
                    response.manager,
                    response.lease_id
                );
                Ok(Lease {
                    lease_id: response.lease_id,
                    node: response.node,
                    address: response.manager,
                    cores: response.cores,
                    memory_mb: response.memory_mb,
                })
            }
            LeaseStatus::NoResources => Err(Error::NoResources(format!(
                "the resource manager cannot lease {cores} core(s) and {memory_mb} MiB: {}",
                response.message
            ))),
            LeaseStatus::TooLarge => Err(Error::NoExecutor(format!(
                "the resource manager cannot lease {cores} core(s) and {memory_mb} MiB: {}",
                response.message
            ))),
            LeaseStatus::Failed => Err(Error::Refused(format!(
                "the resource manager cannot lease {cores} core(s) and {memory_mb} MiB: {}",
                response.message
            ))),
        }
    }
}

/// A connection to a resource manager, which an [`Endpoint`] keeps between leases.
pub(crate) struct ResourceManagerLink {
    // Field order: the connection and the mailbox's region go before their queue and domain.
    conn: Connection,
    mailbox: Mailbox,
    cq: CompletionQueue,
    _pd: ProtectionDomain,
    addr: SocketAddr,
}

impl ResourceManagerLink {
    fn connect(endpoint: &Endpoint, addr: SocketAddr, timeout: Duration) -> Result<Self> {
        let ctx = endpoint.context();
        let pd = ctx.alloc_pd()?;
        let cq = ctx.create_cq(8)?;
        let conn = ctx
            .connect(
                &pd,
                addr,
                &QpConfig::new(&cq, &cq).timeout(timeout),
                &Hello::client().encode(),
            )
            .map_err(|e| match e {
                rdmalib::Error::Rejected { private_data } => Error::Refused(format!(
                    "the resource manager at {addr} refused the connection: {}",
                    private_text(&private_data)
                )),
                other => unreachable(addr, other.to_string()),
            })?;
        let mailbox = Mailbox::new(&pd, 1, 1)?;
        mailbox.post_receives(&conn)?;
        Ok(ResourceManagerLink {
            conn,
            mailbox,
            cq,
            _pd: pd,
            addr,
        })
    }

    /// Where the resource manager is.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the connection is still up, as far as the provider knows.
    pub(crate) fn is_connected(&self) -> bool {
        self.conn.is_connected()
    }

    /// Sends `request` and waits up to `timeout` for the answer. Completions of earlier
    /// sends on this connection are skipped.
    fn ask(&self, request: &LeaseRequest, timeout: Duration) -> Result<LeaseResponse> {
        self.mailbox
            .send(&self.conn, MessageKind::LeaseRequest, &request.encode())?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wc = self.cq.wait_one(Some(left))?.ok_or_else(|| {
                Error::Timeout(format!(
                    "the resource manager at {} did not answer within {timeout:?}",
                    self.addr
                ))
            })?;
            if !wc.is_ok() {
                return Err(unreachable(self.addr, "it closed the connection".into()));
            }
            if wc.opcode == Some(Opcode::Recv) {
                let message = self.mailbox.take(&self.conn, &wc)?;
                if message.kind == Some(MessageKind::LeaseResponse) {
                    return Ok(LeaseResponse::decode(&message.payload)?);
                }
            }
        }
    }
}

fn unreachable(addr: SocketAddr, reason: String) -> Error {
    Error::Unreachable {
        peer: "the resource manager".into(),
        addr,
        reason,
    }
}
