//! Leases: which executor manager to allocate on, with how many cores and how much memory.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::config::ExecutorsDatabase;
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
