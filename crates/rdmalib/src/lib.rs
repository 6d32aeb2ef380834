//! The RDMA layer of rFaaS-rs: one API with the verbs concepts, served by several providers.
//!
//! - [`Context`] is an opened device (from the [`DeviceDatabase`]); it allocates
//!   [`ProtectionDomain`]s and [`CompletionQueue`]s, listens ([`Listener`]) and connects.
//! - A [`ProtectionDomain`] registers [`MemoryRegion`]s: local memory with an lkey and an rkey
//!   that peers use, with the address, as a [`RemoteBuffer`].
//! - A [`Connection`] is a reliable connection: send/receive, RDMA write, write with immediate
//!   and atomic fetch-and-add. Its completions arrive on the queues named in its [`QpConfig`].
//!   Polling a queue drives the provider, so a hot-polling thread is the whole data path.
//!
//! Providers: `verbs` (libibverbs + librdmacm, loaded at run time; feature `verbs`),
//! `tcp` (a userspace emulation of reliable-connection semantics over TCP, for any host) and
//! `shm` (the same emulation over shared-memory rings, for processes on one host; only when a
//! device names it: `"provider": "shm"`).
//! Remote writes are always checked against the target's registered regions: a bad rkey, a
//! range outside the region or missing access rights is a [`Status::RemoteAccessError`] on
//! both sides, and nothing is written.
//!
//! ```no_run
//! use rdmalib::{Access, Context, DeviceDatabase, QpConfig, SendFlags};
//!
//! # fn main() -> rdmalib::Result<()> {
//! let db = DeviceDatabase::load("devices.json")?;
//! let ctx = Context::open(db.get("lo")?)?;
//! let pd = ctx.alloc_pd()?;
//! let cq = ctx.create_cq(64)?;
//! let mr = pd.register(4096, Access::ALL)?;
//! let conn = ctx.connect(&pd, "127.0.0.1:10005".parse().unwrap(), &QpConfig::new(&cq, &cq), b"hello")?;
//! mr.write(0, b"payload")?;
//! # let remote = mr.remote();
//! conn.post_write_with_imm(1, mr.sge(0, 7)?, remote, 42, SendFlags::SIGNALED)?;
//! let wc = cq.wait_one(None)?.expect("no timeout");
//! assert!(wc.is_ok());
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod context;
mod device;
mod error;
mod memory;
mod region;
mod stream;
mod types;
#[cfg(feature = "verbs")]
mod verbs;

pub use context::{
    CmEvent, CompletionQueue, ConnectRequest, Connection, Context, Listener,
    MAX_ACCEPT_PRIVATE_DATA, MAX_CONNECT_PRIVATE_DATA, MAX_REJECT_PRIVATE_DATA, QpConfig, wait_any,
};
pub use device::{DeviceConfig, DeviceDatabase, ProviderKind};
pub use error::{Error, Result};
pub use region::{MemoryRegion, ProtectionDomain, Sge};
pub use types::{Access, Completion, Opcode, RemoteBuffer, SendFlags, Status};

/// Whether this build can use the verbs provider and the host has at least one RDMA device.
/// The error says why not.
pub fn verbs_available() -> Result<()> {
    #[cfg(feature = "verbs")]
    {
        verbs::list_devices().map(|_| ())
    }
    #[cfg(not(feature = "verbs"))]
    {
        Err(Error::ProviderUnavailable("verbs"))
    }
}
