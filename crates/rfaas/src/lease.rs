//! Leases: which executor manager to allocate on, with how many cores and how much memory.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use rdmalib::{Opcode, QpConfig};
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
    pub fn from_resource_manager(
        endpoint: &Endpoint,
        resource_manager: SocketAddr,
        cores: u16,
        memory_mb: u32,
        timeout: Duration,
    ) -> Result<Lease> {
        let unreachable = |reason: String| Error::Unreachable {
            peer: "the resource manager".into(),
            addr: resource_manager,
            reason,
        };
        let ctx = endpoint.context();
        let pd = ctx.alloc_pd()?;
        let cq = ctx.create_cq(8)?;
        let conn = ctx
            .connect(
                &pd,
                resource_manager,
                &QpConfig::new(&cq, &cq).timeout(timeout),
                &Hello::client().encode(),
            )
            .map_err(|e| match e {
                rdmalib::Error::Rejected { private_data } => Error::Refused(format!(
                    "the resource manager at {resource_manager} refused the connection: {}",
                    private_text(&private_data)
                )),
                other => unreachable(other.to_string()),
            })?;
        let mailbox = Mailbox::new(&pd, 1, 1)?;
        mailbox.post_receives(&conn)?;
        mailbox.send(
            &conn,
            MessageKind::LeaseRequest,
            &LeaseRequest { cores, memory_mb }.encode(),
        )?;
        let deadline = Instant::now() + timeout;
        let response = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wc = cq.wait_one(Some(left))?.ok_or_else(|| {
                Error::Timeout(format!(
                    "the resource manager at {resource_manager} did not answer within {timeout:?}"
                ))
            })?;
            if !wc.is_ok() {
                return Err(unreachable("it closed the connection".into()));
            }
            if wc.opcode == Some(Opcode::Recv) {
                let message = mailbox.take(&conn, &wc)?;
                if message.kind == Some(MessageKind::LeaseResponse) {
                    break LeaseResponse::decode(&message.payload)?;
                }
            }
        };
        conn.disconnect();
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
