//! This process's side of rFaaS on one device.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rdmalib::{Context, DeviceConfig};
use rfaas_protocol::control::CodeDigest;

use crate::digests::CodeDigests;
use crate::error::Result;
use crate::lease::ResourceManagerLink;

/// How many connections to resource managers an endpoint keeps between leases.
const KEPT_LINKS: usize = 4;

/// An opened device that leases and allocations share: one device context for a client,
/// however many leases it takes and executors it allocates.
#[derive(Clone)]
pub struct Endpoint {
    // Field order: the kept connections go before the context they were made on.
    resource_managers: Arc<Mutex<Vec<ResourceManagerLink>>>,
    ctx: Arc<Context>,
    digests: Arc<CodeDigests>,
}

impl Endpoint {
    /// Opens `device` (its provider is picked as [`Context::open`] does).
    pub fn open(device: &DeviceConfig) -> Result<Endpoint> {
        Ok(Endpoint {
            resource_managers: Arc::default(),
            ctx: Arc::new(Context::open(device)?),
            digests: Arc::default(),
        })
    }

    /// The device context.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The device this endpoint was opened on.
    pub fn device(&self) -> &DeviceConfig {
        self.ctx.device()
    }

    /// The SHA-256 of a function library, computed once per library this endpoint ships.
    pub(crate) fn code_digest(&self, code: &[u8]) -> CodeDigest {
        self.digests.digest(code)
    }

    /// A kept connection to the resource manager at `addr`, taken out for one lease; none if
    /// there is none or other leases use them all. Kept connections the provider saw close
    /// (the resource manager went away) are dropped here.
    pub(crate) fn take_resource_manager_link(
        &self,
        addr: SocketAddr,
    ) -> Option<ResourceManagerLink> {
        let mut links = self
            .resource_managers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        links.retain(ResourceManagerLink::is_connected);
        let index = links.iter().position(|link| link.addr() == addr)?;
        Some(links.swap_remove(index))
    }

    /// Keeps `link` for the next lease, unless [`KEPT_LINKS`] are kept already (as many as
    /// leases were taken at once): then it is closed.
    pub(crate) fn keep_resource_manager_link(&self, link: ResourceManagerLink) {
        let mut links = self
            .resource_managers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if links.len() < KEPT_LINKS {
            links.push(link);
        }
    }

    /// Closes the connections this endpoint keeps to resource managers; the next lease
    /// connects again.
    pub fn close_resource_manager_connections(&self) {
        self.resource_managers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// A reference to the context that keeps it open.
    pub(crate) fn shared_context(&self) -> Arc<Context> {
        self.ctx.clone()
    }
}
