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
//!
//! # The provider contract
//!
//! What verbs does on InfiniBand and RoCE is the reference; tcp and shm do the same, so code
//! tested on them behaves alike on an RDMA NIC. `tests/two_process.rs` checks every point
//! below on all three providers (verbs on SoftRoCE, in CI).
//!
//! 1. **Private data** arrives padded with zeros to the transport's size:
//!    [`MAX_CONNECT_PRIVATE_DATA`] (56) bytes in a [`ConnectRequest`],
//!    [`MAX_ACCEPT_PRIVATE_DATA`] (196) in [`Connection::peer_private_data`] of the active
//!    side, [`MAX_REJECT_PRIVATE_DATA`] (148) in [`Error::Rejected`]. Longer private data is
//!    refused with [`Error::InvalidArgument`] before anything is sent. Use fixed-size or
//!    self-delimiting private data. (iWARP delivers exactly what was sent: no verbs provider
//!    guarantee is broken by that, only the padding is missing.)
//! 2. **Completions** carry `wr_id`, `status` and `qp_num` always; `opcode`, `byte_len` and
//!    `imm` only when they succeeded, and `byte_len` only for receives, reads and atomics
//!    (see [`Completion`]). A request that fails always completes, signaled or not.
//! 3. **Posting** fails only for a request that is wrong in itself: an inline payload larger
//!    than the connection's `max_inline_data` ([`Error::InvalidArgument`], on every provider,
//!    although rxe would take it), a misaligned or wrongly sized atomic. A post on a
//!    connection that is closed or broken is accepted, and the request completes with
//!    [`Status::WrFlushError`]: a receive on the receive queue, anything else on the send
//!    queue.
//! 4. **Remote access errors**: a write or atomic with a bad rkey, a range outside the
//!    region, or a region without the right (remote write, remote atomic) writes nothing. The
//!    request fails with [`Status::RemoteAccessError`]; a receive of the responder's that the
//!    request consumed (a write with immediate) fails too (`RemoteAccessError`, or
//!    [`Status::LocalAccessError`] on some NICs). A send larger than the receive buffer it lands in
//!    fails with [`Status::RemoteInvalidRequest`] and that receive with
//!    [`Status::LocalLengthError`] (rxe: [`Status::RemoteOperationError`] and
//!    [`Status::LocalQpOperationError`]). The connection is then broken at both ends, as an RC queue pair in the error
//!    state is: whatever else is outstanding or posted later flushes, both sides' posted
//!    receives flush, [`Connection::is_connected`] turns `false` (at the requester once the
//!    error completion has been polled), and the responder's listener reports
//!    [`CmEvent::Disconnected`].
//! 5. **Disconnects**: when the peer disconnects or its process dies, posted receives and
//!    outstanding requests flush with [`Status::WrFlushError`], `is_connected` turns `false`,
//!    and a listener reports [`CmEvent::Disconnected`] for a connection it accepted.
//!    [`Connection::disconnect`] (also on drop) does the same at both ends.
//!
//! Known differences: tcp and shm treat an unsignaled request as done once its bytes are
//! sent, so one that a peer never processed because it died is not flushed (verbs flushes
//! it). On rxe (Linux 6.1), a receive posted in the short window between a QP entering the
//! error state and the provider learning of it is never completed.
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
    CmEvent, CompletionQueue, ConnectRequest, Connection, Context, Listener, QpConfig, wait_any,
};
pub use device::{DeviceConfig, DeviceDatabase, ProviderKind};
pub use error::{Error, Result};
pub use region::{MemoryRegion, ProtectionDomain, Sge};
pub use types::{
    Access, Completion, MAX_ACCEPT_PRIVATE_DATA, MAX_CONNECT_PRIVATE_DATA, MAX_REJECT_PRIVATE_DATA,
    Opcode, RemoteBuffer, SIGNAL_EVERY, SendFlags, Status,
};

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
