//! The `tcp` and `shm` providers: reliable-connection semantics emulated in userspace over a
//! byte stream. The frame engine is shared; only the transport under it differs ([`tcp`]: a
//! TCP socket, for any host; [`shm`]: shared-memory rings, for processes on one host).
//!
//! - Every work request is one frame ([`wire`]) written by the posting thread with one
//!   vectored write; a payload is sent straight from registered memory.
//! - The receiving side checks every one-sided operation against its protection domain's
//!   registry (rkey, access flags, bounds) before a byte lands in memory; a violation is a
//!   NAK to the requester, an error completion on both sides, and the end of the connection.
//! - Progress is made by whoever polls a completion queue of the connection ([`conn`]), so a
//!   hot-polling thread needs no hand-off. A per-context thread ([`engine`]) makes progress for
//!   connections whose queues are armed for a blocking wait, connections created with
//!   `background_progress`, and connections nobody has polled for a while; it also notices
//!   peers that hang up.
//! - The bytes move through a [`transport::Transport`]: a TCP socket, or two shared-memory
//!   rings with no system call on the data path.

mod cm;
mod conn;
mod engine;
mod handshake;
mod shm;
mod sys;
mod tcp;
mod transport;
mod wire;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

pub(crate) use cm::{ConnectRequest, Listener};
pub(crate) use conn::Connection;

use crate::device::ProviderKind;
use crate::error::{Error, Result};
use crate::types::{Access, Completion, QpSpec};
use engine::Engine;
use sys::EventFd;

/// Keys are unique in the process, so a key from another domain never matches by accident.
static NEXT_KEY: AtomicU32 = AtomicU32::new(0x1000);

/// What carries the frames: the one difference between the two stream providers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Medium {
    /// A TCP socket (the `tcp` provider), for any host.
    Tcp,
    /// Shared-memory rings (the `shm` provider), for processes on one host.
    Shm,
}

impl Medium {
    fn provider(self) -> ProviderKind {
        match self {
            Medium::Tcp => ProviderKind::Tcp,
            Medium::Shm => ProviderKind::Shm,
        }
    }
}

/// A context of the `tcp` or the `shm` provider: both share the frame engine and differ only
/// in the [`Medium`] under it.
pub(crate) struct Context {
    engine: Arc<Engine>,
    medium: Medium,
}

impl Context {
    pub(crate) fn open(medium: Medium) -> Result<Context> {
        Ok(Context {
            engine: Engine::start()?,
            medium,
        })
    }

    pub(crate) fn provider(&self) -> ProviderKind {
        self.medium.provider()
    }

    pub(crate) fn alloc_pd(&self) -> Result<Arc<Pd>> {
        Ok(Arc::new(Pd {
            regions: Mutex::new(HashMap::new()),
            medium: self.medium,
        }))
    }

    pub(crate) fn create_cq(&self, capacity: u32) -> Result<Arc<Cq>> {
        Ok(Arc::new(Cq {
            queue: Mutex::new(VecDeque::with_capacity(capacity as usize)),
            conns: RwLock::new(Vec::new()),
            armed: AtomicU8::new(NOT_ARMED),
            doorbell: EventFd::new().map_err(|e| Error::io("eventfd for a completion queue", e))?,
        }))
    }

    pub(crate) fn listen(&self, addr: SocketAddr) -> Result<Listener> {
        Listener::bind(self.engine.clone(), addr, self.medium)
    }

    pub(crate) fn connect(
        &self,
        pd: &Arc<Pd>,
        addr: SocketAddr,
        qp: &QpSpec<Arc<Cq>>,
        private_data: &[u8],
        timeout: Duration,
    ) -> Result<Connection> {
        cm::connect(
            &self.engine,
            pd,
            addr,
            qp,
            private_data,
            timeout,
            self.medium,
        )
    }
}

/// A protection domain: the registry of its regions, looked up by key on every remote access.
pub(crate) struct Pd {
    regions: Mutex<HashMap<u32, Arc<Region>>>,
    /// The medium of the context that allocated it (only for [`Pd::provider`]).
    medium: Medium,
}

/// A registered range as the receive path sees it.
pub(super) struct Region {
    addr: u64,
    len: u64,
    access: Access,
    /// `true` while registered. The receive path holds the read lock while it writes into the
    /// range; deregistration takes the write lock, so it waits for writes in flight and no
    /// write starts after it.
    alive: RwLock<bool>,
}

impl Region {
    /// The pointer to `len` bytes at remote address `addr`, if they lie inside the region.
    fn locate(&self, addr: u64, len: u64) -> Option<*mut u8> {
        let end = addr.checked_add(len)?;
        (addr >= self.addr && end <= self.addr + self.len).then_some(addr as *mut u8)
    }
}

impl Pd {
    pub(crate) fn provider(&self) -> ProviderKind {
        self.medium.provider()
    }

    fn lookup(&self, key: u32) -> Option<Arc<Region>> {
        self.regions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
    }

    /// # Safety
    ///
    /// See `ProtectionDomain::register_raw`: the range stays valid until the `Mr` is dropped.
    pub(crate) unsafe fn register(
        self: &Arc<Self>,
        ptr: *mut u8,
        len: usize,
        access: Access,
    ) -> Result<Mr> {
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        let region = Arc::new(Region {
            addr: ptr as u64,
            len: len as u64,
            access,
            alive: RwLock::new(true),
        });
        self.regions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, region.clone());
        Ok(Mr {
            pd: self.clone(),
            key,
            region,
        })
    }
}

pub(crate) struct Mr {
    pd: Arc<Pd>,
    key: u32,
    region: Arc<Region>,
}

impl Mr {
    pub(crate) fn lkey(&self) -> u32 {
        self.key
    }

    pub(crate) fn rkey(&self) -> u32 {
        self.key
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        self.pd
            .regions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        *self.region.alive.write().unwrap_or_else(|p| p.into_inner()) = false;
    }
}

const NOT_ARMED: u8 = 0;
const ARMED_ANY: u8 = 1;
const ARMED_SOLICITED: u8 = 2;

/// A completion queue: completions pushed by whichever thread made progress, a doorbell for
/// blocking waits, and the connections whose progress a poll drives.
pub(crate) struct Cq {
    queue: Mutex<VecDeque<Completion>>,
    conns: RwLock<Vec<Weak<conn::Shared>>>,
    armed: AtomicU8,
    doorbell: EventFd,
}

impl Cq {
    pub(crate) fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        {
            let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
            for c in conns.iter() {
                if let Some(c) = c.upgrade() {
                    c.progress();
                }
            }
        }
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let n = out.len().min(queue.len());
        for (slot, wc) in out.iter_mut().zip(queue.drain(..n)) {
            *slot = wc;
        }
        Ok(n)
    }

    pub(crate) fn req_notify(&self, solicited_only: bool) -> Result<()> {
        let mode = if solicited_only {
            ARMED_SOLICITED
        } else {
            ARMED_ANY
        };
        self.armed.store(mode, Ordering::SeqCst);
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        for c in conns.iter().filter_map(Weak::upgrade) {
            c.arm_background();
        }
        Ok(())
    }

    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        self.doorbell
            .wait(timeout)
            .map_err(|e| Error::io("waiting on a completion channel", e))
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.doorbell.fd().as_raw_fd()
    }

    fn push(&self, wc: Completion, solicited: bool) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(wc);
        let armed = self.armed.load(Ordering::SeqCst);
        if (armed == ARMED_ANY || (armed == ARMED_SOLICITED && solicited))
            && self
                .armed
                .compare_exchange(armed, NOT_ARMED, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.doorbell.signal();
        }
    }

    fn is_armed(&self) -> bool {
        self.armed.load(Ordering::SeqCst) != NOT_ARMED
    }

    fn attach(&self, conn: &Arc<conn::Shared>) {
        let mut conns = self.conns.write().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| c.strong_count() > 0);
        conns.push(Arc::downgrade(conn));
    }
}
