//! The verbs provider: libibverbs + librdmacm (InfiniBand, RoCE, iWARP, SoftRoCE).
//!
//! The libraries are loaded at run time (`rdma-mummy-sys` dlopens them), so a binary built with
//! this provider starts on any host; without them, or without RDMA kernel support or devices,
//! [`list_devices`] and [`Context::open`] fail with [`Error::NoRdmaDevice`].
//!
//! Layout:
//! - `ffi`: every raw call, with the ownership table and the invariants the `unsafe` blocks
//!   rely on. Device listing goes through `sideway`; the rest is `rdma-mummy-sys` directly,
//!   since connection setup needs private data and PDs on librdmacm's own device context.
//! - `cm`: the connection manager on top of it: [`Connection`], [`Listener`],
//!   [`ConnectRequest`] and the per-context event thread.
//! - this file: device discovery and [`Context`].
//!
//! Objects are linked with `Arc`s from child to parent (MR → PD → device; QP → PD and CQs;
//! cm id → event channel), so dropping them in any order is safe.
//!
//! # How disconnects are detected
//!
//! Each context has one rdma_cm event channel, and every cm id of the context (listeners,
//! accepted and outgoing connections) lives on it. A thread per context (`rdmacm-<device>`)
//! sleeps in poll(2) on it. When a connection's peer disconnects (or the connection breaks:
//! connect error after accept, device removal), that thread marks the connection as not
//! connected, answers with `rdma_disconnect` and moves the QP to the error state, so every
//! posted receive completes with [`Status::WrFlushError`](crate::Status::WrFlushError) on the
//! application's CQ: a thread blocked in `wait_one` on a receive learns the peer died without
//! polling anything else. Listeners additionally report `Established` and `Disconnected` for
//! the connections they accepted. Events are queued for [`Listener::get_event`], so
//! disconnects are handled even if nobody calls it.
//!
//! # How it keeps the provider contract
//!
//! - Private data is padded by the transport itself (IB/RoCE: 56 bytes in a request, 196 in
//!   an accept, 148 in a reject).
//! - A failed completion keeps only `wr_id`, `status` and `qp_num` (see `ffi::completion`).
//! - A failed completion means its QP is in the error state: [`Cq::poll`] closes the
//!   connection (`rdma_disconnect`), so the peer sees a disconnect, as with tcp and shm.
//! - A request posted on a connection known to be closed never reaches the device and is
//!   completed by the [`Cq`] with a flush error (rxe does not flush receives posted then).
//! - A reject by the peer application is [`Error::Rejected`]; a reject by the remote
//!   connection manager (nobody listening on the port, stale connection) is an I/O error of
//!   kind `ConnectionRefused`.
//! - `background_progress` needs no helper: the NIC makes progress by itself.

mod cm;
mod ffi;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use sideway::ibverbs::device::{DeviceInfo, DeviceList, GetDeviceListErrorKind};

use crate::device::DeviceConfig;
use crate::error::{Error, Result};
use crate::types::QpSpec;

pub(crate) use cm::{ConnectRequest, Connection, Cq, Listener};
pub(crate) use ffi::{Mr, Pd};

/// Names of the host's RDMA devices, or why there are none.
fn device_names() -> std::result::Result<Vec<String>, String> {
    let list = DeviceList::new().map_err(|e| {
        let source = match &e.0 {
            GetDeviceListErrorKind::Ibverbs(io) => Some(io),
            _ => None,
        };
        match source.and_then(std::io::Error::raw_os_error) {
            // rdma-mummy-sys reports a library it could not load as "not supported".
            Some(libc::EOPNOTSUPP) => {
                "libibverbs.so.1 could not be loaded (rdma-core is not installed)".to_string()
            }
            Some(libc::ENOSYS) => {
                "the kernel has no RDMA support (ibv_get_device_list: ENOSYS)".to_string()
            }
            _ => match source {
                Some(io) => format!("ibv_get_device_list failed: {io}"),
                None => format!("ibv_get_device_list failed: {e}"),
            },
        }
    })?;
    let names: Vec<String> = list
        .iter()
        .map(|d| d.name())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return Err("ibv_get_device_list found no RDMA device".to_string());
    }
    Ok(names)
}

/// Names of the host's RDMA devices; [`Error::NoRdmaDevice`] when there are none or verbs is
/// not usable here.
pub(crate) fn list_devices() -> Result<Vec<String>> {
    device_names().map_err(|reason| Error::NoRdmaDevice {
        device: "any".into(),
        reason,
    })
}

/// Whether the host has an RDMA device called `name`.
pub(crate) fn device_exists(name: &str) -> Result<bool> {
    Ok(list_devices()?.iter().any(|n| n == name))
}

/// An opened device: librdmacm's context of it, and the connection-manager thread.
pub(crate) struct Context {
    hub: Arc<cm::Hub>,
    dev: Arc<ffi::Device>,
    ip: IpAddr,
}

impl Context {
    pub(crate) fn open(config: &DeviceConfig) -> Result<Context> {
        let name = &config.name;
        let no_device = |reason: String| Error::NoRdmaDevice {
            device: name.clone(),
            reason,
        };
        let names = device_names().map_err(no_device)?;
        if !names.iter().any(|n| n == name) {
            return Err(no_device(format!("the host has {}", names.join(", "))));
        }
        let ip = config.ip()?;
        let dev = match ffi::Device::open(name) {
            Ok(Some(dev)) => Arc::new(dev),
            Ok(None) => {
                return Err(no_device(
                    "librdmacm does not list it (rdma_get_devices)".into(),
                ));
            }
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                return Err(no_device(
                    "librdmacm.so.1 could not be loaded (rdma-core is not fully installed)".into(),
                ));
            }
            Err(e) => return Err(e),
        };
        let hub = cm::Hub::start(name)?;
        Ok(Context { hub, dev, ip })
    }

    pub(crate) fn alloc_pd(&self) -> Result<Arc<Pd>> {
        Pd::alloc(&self.dev)
    }

    pub(crate) fn create_cq(&self, capacity: u32) -> Result<Arc<Cq>> {
        Cq::new(ffi::Cq::create(&self.dev, capacity)?, &self.hub)
    }

    pub(crate) fn listen(&self, addr: SocketAddr) -> Result<Listener> {
        cm::listen(&self.hub, &self.dev, addr)
    }

    pub(crate) fn connect(
        &self,
        pd: &Arc<Pd>,
        addr: SocketAddr,
        qp: &QpSpec<Arc<Cq>>,
        private_data: &[u8],
        timeout: Duration,
    ) -> Result<Connection> {
        if pd.device().key() != self.dev.key() {
            return Err(Error::InvalidArgument(format!(
                "the protection domain belongs to device {}, not {}",
                pd.device().name(),
                self.dev.name()
            )));
        }
        cm::connect(
            &self.hub,
            &self.dev,
            self.ip,
            pd,
            addr,
            qp,
            private_data,
            timeout,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn provider_types_are_send_and_sync() {
        assert_send_sync::<Context>();
        assert_send_sync::<Pd>();
        assert_send_sync::<Mr>();
        assert_send_sync::<Cq>();
        assert_send_sync::<Connection>();
        assert_send_sync::<Listener>();
        assert_send_sync::<ConnectRequest>();
    }
}
