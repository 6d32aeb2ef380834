//! This process's side of rFaaS on one device.

use std::sync::Arc;

use rdmalib::{Context, DeviceConfig};
use rfaas_protocol::control::CodeDigest;

use crate::digests::CodeDigests;
use crate::error::Result;

/// An opened device that leases and allocations share: one device context for a client,
/// however many leases it takes and executors it allocates.
#[derive(Clone)]
pub struct Endpoint {
    ctx: Arc<Context>,
    digests: Arc<CodeDigests>,
}

impl Endpoint {
    /// Opens `device` (its provider is picked as [`Context::open`] does).
    pub fn open(device: &DeviceConfig) -> Result<Endpoint> {
        Ok(Endpoint {
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

    /// A reference to the context that keeps it open.
    pub(crate) fn shared_context(&self) -> Arc<Context> {
        self.ctx.clone()
    }
}
