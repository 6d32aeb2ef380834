//! Connection management: one rdma_cm event channel per [`Context`](super::Context), watched
//! by one thread (the [`Hub`]), and the connection, listener and request types on top of it.
//!
//! Every cm id of a context (listening ids, the ids of connect requests, which inherit the
//! listener's channel, and the ids of outgoing connections) lives on the hub's channel. The
//! hub thread takes each event, copies and acknowledges it, and routes it by id:
//!
//! - an outgoing connection that is still being set up gets its events through a
//!   `mpsc` channel, on which `connect` waits with its timeout;
//! - a listener gets connect requests, and the `Established`/`Disconnected` events of the
//!   connections it accepted, in a queue whose length an eventfd (semaphore mode) mirrors;
//!   that eventfd is [`Listener::fd`];
//! - an established connection is marked disconnected on `DISCONNECTED` (or a late
//!   connect error, or device removal): the hub answers with `rdma_disconnect` and moves the
//!   QP to the error state, so posted receives flush with `WrFlushError`.
//!
//! Lock discipline: the route table lock is held only to look a route up, change it or send
//! on an `mpsc` channel (never blocks); no cm id is destroyed while it is held. Routes hold
//! `Weak` references, so the hub never keeps a connection or listener alive; when it briefly
//! holds the last strong one, destroying the id is safe because the event was acknowledged.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use rdma_mummy_sys::rdma_cm_event_type as ev;

use super::ffi::{
    self, CmEvent, CmId, ConnParams, Cq as RawCq, Device, EventChannel, Pd, QpCaps, SendOp,
};
use crate::error::{Error, Result};
use crate::types::{Completion, Event, QpSpec, RawSge, RemoteBuffer, SendFlags, Status};

/// Pending connect requests a listener queues in the kernel.
const LISTEN_BACKLOG: c_int = 128;
/// IB CM reject reason of a reject by the peer application.
const IB_CM_REJ_CONSUMER_DEFINED: i32 = 28;
/// IB CM reject reason when nobody listens on the port.
const IB_CM_REJ_INVALID_SERVICE_ID: i32 = 8;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn eventfd(flags: EfdFlags, what: &str) -> Result<EventFd> {
    EventFd::from_value_and_flags(0, flags | EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
        .map_err(|e| Error::io(format!("eventfd for {what}"), io::Error::from(e)))
}

// ---------------------------------------------------------------------------------------------
// Hub

/// Where the events of one cm id go.
enum Route {
    /// An outgoing connection being set up.
    Pending(mpsc::Sender<CmEvent>),
    /// A listening id: connect requests.
    Listener(Weak<ListenerShared>),
    /// An established (or accepted) connection, and the listener that accepted it.
    Conn {
        conn: Weak<ConnShared>,
        listener: Option<Weak<ListenerShared>>,
    },
}

struct HubShared {
    channel: Arc<EventChannel>,
    wake: EventFd,
    stop: AtomicBool,
    routes: Mutex<HashMap<usize, Route>>,
}

/// The context's cm event channel and the thread that serves it, and the context's
/// connections by QP number. Everything that owns a cm id, and every completion queue, holds
/// an `Arc<Hub>`; the thread stops when the last one goes.
pub(super) struct Hub {
    shared: Arc<HubShared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Connections by QP number, for closing the one whose completion failed.
    qps: Mutex<HashMap<u32, Weak<ConnShared>>>,
}

impl Hub {
    pub(super) fn start(device: &str) -> Result<Arc<Hub>> {
        let shared = Arc::new(HubShared {
            channel: EventChannel::create()?,
            wake: eventfd(EfdFlags::empty(), "the rdma_cm event thread")?,
            stop: AtomicBool::new(false),
            routes: Mutex::new(HashMap::new()),
        });
        let for_thread = shared.clone();
        let handle = thread::Builder::new()
            .name(format!("rdmacm-{device}"))
            .spawn(move || for_thread.run())
            .map_err(|e| Error::io("spawning the rdma_cm event thread", e))?;
        Ok(Arc::new(Hub {
            shared,
            thread: Mutex::new(Some(handle)),
            qps: Mutex::new(HashMap::new()),
        }))
    }

    /// A completion of QP `qp_num` failed, so the QP is in the error state and can do nothing
    /// more: close its connection (the peer sees a disconnect), as the stream providers do.
    fn completion_failed(&self, qp_num: u32, status: Status) {
        let conn = lock(&self.qps).get(&qp_num).and_then(Weak::upgrade);
        if let Some(conn) = conn
            && conn.connected.load(Ordering::Acquire)
        {
            conn.close(&format!("a completion failed with {status:?}"));
        }
    }

    fn channel(&self) -> &Arc<EventChannel> {
        &self.shared.channel
    }

    fn set_route(&self, key: usize, route: Route) {
        lock(&self.shared.routes).insert(key, route);
    }

    fn remove_route(&self, key: usize) {
        let removed = lock(&self.shared.routes).remove(&key);
        drop(removed); // outside the lock
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Err(e) = self.shared.wake.write(1) {
            tracing::warn!("waking the rdma_cm event thread: {e}");
        }
        let Some(handle) = lock(&self.thread).take() else {
            return;
        };
        if handle.thread().id() == thread::current().id() {
            // The last user went away on the event thread itself: it stops after this event.
            return;
        }
        if handle.join().is_err() {
            tracing::error!("the rdma_cm event thread panicked");
        }
    }
}

impl HubShared {
    fn run(&self) {
        let fds = [self.channel.fd(), self.wake.as_raw_fd()];
        while !self.stop.load(Ordering::Acquire) {
            match ffi::poll_readable(fds, None) {
                Ok([cm, wake]) => {
                    if wake {
                        // Only resets the counter; `stop` is checked by the loop.
                        let _ = self.wake.read();
                    }
                    if cm && !self.drain() {
                        thread::sleep(Duration::from_millis(10));
                    }
                }
                Err(e) => {
                    tracing::error!("rdma_cm event thread: poll: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Handles every pending event; `false` when taking one failed.
    fn drain(&self) -> bool {
        loop {
            match self.channel.next_event() {
                Ok(Some(event)) => self.dispatch(event),
                Ok(None) => return true,
                Err(e) => {
                    tracing::error!("rdma_cm event thread: {e}");
                    return false;
                }
            }
        }
    }

    fn dispatch(&self, event: CmEvent) {
        enum Target {
            Sent,
            Listener(Weak<ListenerShared>),
            Conn(Weak<ConnShared>, Option<Weak<ListenerShared>>),
            Unknown,
        }
        let key = if event.kind == ev::RDMA_CM_EVENT_CONNECT_REQUEST {
            event.listen_id
        } else {
            event.id
        };
        tracing::debug!(
            "rdma_cm event {} (status {})",
            ffi::event_name(event.kind),
            event.status
        );
        let mut event = Some(event);
        let target = {
            let routes = lock(&self.routes);
            match routes.get(&key) {
                Some(Route::Pending(tx)) => {
                    // Sent under the lock, so `connect` sees every event sent before it
                    // switches the route (see `connect`).
                    if let Some(e) = event.take()
                        && let Err(mpsc::SendError(e)) = tx.send(e)
                    {
                        event = Some(e);
                    }
                    Target::Sent
                }
                Some(Route::Listener(l)) => Target::Listener(l.clone()),
                Some(Route::Conn { conn, listener }) => {
                    Target::Conn(conn.clone(), listener.clone())
                }
                None => Target::Unknown,
            }
        };
        let Some(mut event) = event else { return };
        match target {
            Target::Sent => tracing::debug!(
                "connect attempt gave up; dropped {}",
                ffi::event_name(event.kind)
            ),
            Target::Listener(weak) => match (event.request.take(), weak.upgrade()) {
                (Some(id), Some(listener)) => listener.push_request(id, event, &weak),
                (Some(id), None) => reject_orphan(id),
                (None, _) => tracing::warn!(
                    "listener event {} (status {})",
                    ffi::event_name(event.kind),
                    event.status
                ),
            },
            Target::Conn(conn, listener) => match conn.upgrade() {
                Some(conn) => conn.handle_event(&event, listener.as_ref()),
                None => tracing::debug!("{} for a closed connection", ffi::event_name(event.kind)),
            },
            Target::Unknown => match event.request.take() {
                Some(id) => reject_orphan(id),
                None => tracing::debug!("{} for an id nobody watches", ffi::event_name(event.kind)),
            },
        }
    }
}

/// Rejects (and destroys) a connect request whose listener is gone.
fn reject_orphan(id: CmId) {
    if let Err(e) = id.reject(&[]) {
        tracing::debug!("rejecting a request for a closed listener: {e}");
    }
}

/// Removes a route when dropped, unless disarmed.
struct RouteGuard<'a> {
    hub: &'a Hub,
    key: usize,
    armed: bool,
}

impl Drop for RouteGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.hub.remove_route(self.key);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connections

/// What a connection shares with the hub thread.
struct ConnShared {
    // Destroyed (QP, then id) before the hub reference below is released.
    id: CmId,
    qp_num: u32,
    send_cq: Arc<Cq>,
    recv_cq: Arc<Cq>,
    connected: AtomicBool,
    /// Whether the listener was told about the disconnect.
    reported: AtomicBool,
    hub: Arc<Hub>,
}

impl Drop for ConnShared {
    fn drop(&mut self) {
        self.hub.remove_route(self.id.key());
        let mut qps = lock(&self.hub.qps);
        // Only our own entry: ours can no longer be upgraded.
        if qps.get(&self.qp_num).is_some_and(|w| w.strong_count() == 0) {
            qps.remove(&self.qp_num);
        }
    }
}

impl ConnShared {
    fn new(id: CmId, qp_num: u32, spec: &QpSpec<Arc<Cq>>, hub: Arc<Hub>) -> Arc<ConnShared> {
        let shared = Arc::new(ConnShared {
            id,
            qp_num,
            send_cq: spec.send_cq.clone(),
            recv_cq: spec.recv_cq.clone(),
            connected: AtomicBool::new(true),
            reported: AtomicBool::new(false),
            hub,
        });
        lock(&shared.hub.qps).insert(qp_num, Arc::downgrade(&shared));
        shared
    }

    /// Ends the connection once: `rdma_disconnect` (answers the peer's disconnect request, or
    /// starts ours), then the QP goes to the error state so outstanding requests flush.
    fn close(&self, why: &str) {
        if self.connected.swap(false, Ordering::AcqRel) {
            tracing::debug!("QP {}: {why}", self.qp_num);
            if let Err(e) = self.id.disconnect() {
                tracing::debug!("QP {}: {e}", self.qp_num);
            }
        }
        if let Err(e) = self.id.set_qp_error() {
            tracing::warn!("QP {}: {e}", self.qp_num);
        }
    }

    fn handle_event(&self, event: &CmEvent, listener: Option<&Weak<ListenerShared>>) {
        match event.kind {
            ev::RDMA_CM_EVENT_ESTABLISHED => {
                if let Some(l) = listener.and_then(Weak::upgrade) {
                    l.push(Event::Established(self.qp_num));
                }
            }
            ev::RDMA_CM_EVENT_DISCONNECTED
            | ev::RDMA_CM_EVENT_DEVICE_REMOVAL
            | ev::RDMA_CM_EVENT_CONNECT_ERROR
            | ev::RDMA_CM_EVENT_UNREACHABLE
            | ev::RDMA_CM_EVENT_REJECTED => {
                self.close(ffi::event_name(event.kind));
                if !self.reported.swap(true, Ordering::AcqRel)
                    && let Some(l) = listener.and_then(Weak::upgrade)
                {
                    l.push(Event::Disconnected(self.qp_num));
                }
            }
            other => tracing::debug!("QP {}: ignoring {}", self.qp_num, ffi::event_name(other)),
        }
    }
}

/// A reliable connection: an RC QP with its cm id.
pub(crate) struct Connection {
    shared: Arc<ConnShared>,
    peer: SocketAddr,
    /// The accept's private data (active side) or the request's (passive side).
    peer_private_data: Vec<u8>,
}

impl Connection {
    pub(crate) fn qp_num(&self) -> u32 {
        self.shared.qp_num
    }

    pub(crate) fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    pub(crate) fn peer_private_data(&self) -> &[u8] {
        &self.peer_private_data
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    #[inline]
    pub(crate) fn post_recv(&self, wr_id: u64, sge: RawSge) -> Result<()> {
        if !self.is_connected() {
            self.shared.recv_cq.flush(wr_id, self.shared.qp_num);
            return Ok(());
        }
        self.shared.id.post_recv(wr_id, sge)
    }

    #[inline]
    pub(crate) fn post_send(
        &self,
        wr_id: u64,
        sge: RawSge,
        imm: Option<u32>,
        flags: SendFlags,
    ) -> Result<()> {
        self.post(wr_id, sge, SendOp::Send { imm }, flags)
    }

    #[inline]
    pub(crate) fn post_write(
        &self,
        wr_id: u64,
        sge: RawSge,
        remote: RemoteBuffer,
        imm: Option<u32>,
        flags: SendFlags,
    ) -> Result<()> {
        self.post(wr_id, sge, SendOp::Write { remote, imm }, flags)
    }

    pub(crate) fn post_fetch_add(
        &self,
        wr_id: u64,
        sge: RawSge,
        remote: RemoteBuffer,
        add: u64,
        flags: SendFlags,
    ) -> Result<()> {
        self.post(wr_id, sge, SendOp::FetchAdd { remote, add }, flags)
    }

    /// A send-queue request: to the device while connected, else flushed (see [`Cq`]).
    #[inline]
    fn post(&self, wr_id: u64, sge: RawSge, op: SendOp, flags: SendFlags) -> Result<()> {
        if !self.is_connected() {
            self.shared.send_cq.flush(wr_id, self.shared.qp_num);
            return Ok(());
        }
        self.shared.id.post_send(wr_id, sge, op, flags)
    }

    pub(crate) fn disconnect(&self) {
        self.shared.close("disconnect requested");
    }
}

/// A completion queue: the device's CQ, plus the flush completions of requests posted on
/// closed connections, and the hub that closes a connection whose completion failed.
///
/// The IB specification flushes every request posted on a QP in the error state (C10-42,
/// C10-97.2.1), but rxe (Linux 6.1) leaves receives posted from userspace in an errored QP
/// uncompleted. So a request posted on a connection this provider knows to be closed never
/// reaches the device: it completes here, with [`Status::WrFlushError`], on every device alike.
pub(crate) struct Cq {
    raw: Arc<RawCq>,
    hub: Arc<Hub>,
    flushed: Mutex<VecDeque<Completion>>,
    has_flushed: AtomicBool,
    /// Readable while `flushed` is not empty.
    flushed_ready: EventFd,
    /// Readable when the completion channel or `flushed_ready` is: the queue's descriptor.
    readiness: Epoll,
}

impl Cq {
    pub(super) fn new(raw: Arc<RawCq>, hub: &Arc<Hub>) -> Result<Arc<Cq>> {
        let flushed_ready = eventfd(EfdFlags::empty(), "a completion queue")?;
        let readiness = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| Error::io("epoll_create for a completion queue", e.into()))?;
        // SAFETY: the completion channel's descriptor lives as long as `raw`, which this queue
        // holds for as long as the epoll set that watches it.
        let channel = unsafe { BorrowedFd::borrow_raw(raw.fd()) };
        for fd in [channel, flushed_ready.as_fd()] {
            readiness
                .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, 0))
                .map_err(|e| Error::io("epoll_ctl for a completion queue", e.into()))?;
        }
        Ok(Arc::new(Cq {
            raw,
            hub: hub.clone(),
            flushed: Mutex::new(VecDeque::new()),
            has_flushed: AtomicBool::new(false),
            flushed_ready,
            readiness,
        }))
    }

    #[inline]
    pub(crate) fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        let mut done = 0;
        if self.has_flushed.load(Ordering::Acquire) {
            done = self.take_flushed(out);
        }
        let n = self.raw.poll(&mut out[done..])?;
        for wc in &out[done..done + n] {
            if !wc.is_ok() {
                self.hub.completion_failed(wc.qp_num, wc.status);
            }
        }
        Ok(done + n)
    }

    pub(crate) fn req_notify(&self, solicited_only: bool) -> Result<()> {
        self.raw.req_notify(solicited_only)
    }

    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        let deadline = ffi::deadline_after(timeout);
        loop {
            if self.has_flushed.load(Ordering::Acquire) || self.raw.take_event()? {
                return Ok(true);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(false);
            }
            ffi::poll_readable([self.fd()], left)
                .map_err(|e| Error::io("waiting on a completion channel", e))?;
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.readiness.0.as_raw_fd()
    }

    /// Completes a request of QP `qp_num` with a flush error, without the device.
    fn flush(&self, wr_id: u64, qp_num: u32) {
        let mut flushed = lock(&self.flushed);
        flushed.push_back(Completion::error(wr_id, Status::WrFlushError, qp_num));
        self.has_flushed.store(true, Ordering::Release);
        if let Err(e) = self.flushed_ready.write(1) {
            tracing::warn!("signalling a flushed request: {e}");
        }
    }

    fn take_flushed(&self, out: &mut [Completion]) -> usize {
        let mut flushed = lock(&self.flushed);
        let n = out.len().min(flushed.len());
        for (slot, wc) in out.iter_mut().zip(flushed.drain(..n)) {
            *slot = wc;
        }
        if flushed.is_empty() {
            self.has_flushed.store(false, Ordering::Release);
            // Only resets the counter, so the descriptor stops being readable.
            let _ = self.flushed_ready.read();
        }
        n
    }
}

fn caps(spec: &QpSpec<Arc<Cq>>) -> QpCaps {
    QpCaps {
        max_send_wr: spec.max_send_wr,
        max_recv_wr: spec.max_recv_wr,
        max_inline_data: spec.max_inline_data,
    }
}

/// The PD and both CQs must belong to the device the cm id is bound to.
fn check_device(id_device: usize, pd: &Pd, spec: &QpSpec<Arc<Cq>>) -> Result<()> {
    let dev = pd.device();
    if spec.send_cq.raw.device().key() != dev.key() || spec.recv_cq.raw.device().key() != dev.key()
    {
        return Err(Error::InvalidArgument(format!(
            "the completion queues and the protection domain belong to different contexts (PD on {})",
            dev.name()
        )));
    }
    if id_device != dev.key() {
        return Err(Error::InvalidArgument(format!(
            "the connection runs over another RDMA device than {}, where the protection domain is",
            dev.name()
        )));
    }
    Ok(())
}

fn ms_left(deadline: Instant) -> c_int {
    let left = deadline.saturating_duration_since(Instant::now());
    c_int::try_from(left.as_millis())
        .unwrap_or(c_int::MAX)
        .max(1)
}

fn status_error(status: i32) -> io::Error {
    if status < 0 {
        io::Error::from_raw_os_error(-status)
    } else {
        io::Error::other(format!("status {status}"))
    }
}

fn rejected(addr: SocketAddr, event: CmEvent) -> Error {
    // iWARP reports every reject as -ECONNREFUSED; IB/RoCE say who rejected.
    if event.status == IB_CM_REJ_CONSUMER_DEFINED || event.status < 0 {
        return Error::Rejected {
            private_data: event.private_data,
        };
    }
    let why = if event.status == IB_CM_REJ_INVALID_SERVICE_ID {
        ": nobody listens on that port"
    } else {
        ""
    };
    Error::io(
        format!("connect to {addr}"),
        io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "rejected by the remote connection manager (IB CM reason {}{why})",
                event.status
            ),
        ),
    )
}

/// Waits for the event `expected` of a connection being set up.
fn expect(
    rx: &mpsc::Receiver<CmEvent>,
    deadline: Instant,
    addr: SocketAddr,
    expected: u32,
    step: &str,
) -> Result<CmEvent> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = match rx.recv_timeout(left) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => {
                return Err(Error::io(
                    format!("connect to {addr}: {step}"),
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no answer within the connect timeout",
                    ),
                ));
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::io(
                    format!("connect to {addr}: {step}"),
                    io::Error::other("the rdma_cm event thread stopped"),
                ));
            }
        };
        match event.kind {
            k if k == expected => return Ok(event),
            ev::RDMA_CM_EVENT_REJECTED => return Err(rejected(addr, event)),
            ev::RDMA_CM_EVENT_ADDR_ERROR
            | ev::RDMA_CM_EVENT_ROUTE_ERROR
            | ev::RDMA_CM_EVENT_CONNECT_ERROR
            | ev::RDMA_CM_EVENT_UNREACHABLE
            | ev::RDMA_CM_EVENT_DISCONNECTED
            | ev::RDMA_CM_EVENT_DEVICE_REMOVAL => {
                return Err(Error::io(
                    format!(
                        "connect to {addr}: {step} failed with {}",
                        ffi::event_name(event.kind)
                    ),
                    status_error(event.status),
                ));
            }
            other => tracing::debug!(
                "connect to {addr}: ignoring {} during {step}",
                ffi::event_name(other)
            ),
        }
    }
}

/// The active side: resolve, create the QP, `rdma_connect` with `private_data`, and wait for
/// `ESTABLISHED` (or a reject) until `timeout`.
#[allow(clippy::too_many_arguments)]
pub(super) fn connect(
    hub: &Arc<Hub>,
    dev: &Arc<Device>,
    src: IpAddr,
    pd: &Arc<Pd>,
    addr: SocketAddr,
    spec: &QpSpec<Arc<Cq>>,
    private_data: &[u8],
    timeout: Duration,
) -> Result<Connection> {
    // A year stands for "forever" and keeps the deadline representable.
    let deadline = Instant::now() + timeout.min(Duration::from_secs(365 * 24 * 3600));
    let mut id = CmId::create(hub.channel())?;
    let key = id.key();
    let (tx, rx) = mpsc::channel();
    hub.set_route(key, Route::Pending(tx));
    // Declared after `id`, so on an early return the route goes before the id is destroyed.
    let mut route = RouteGuard {
        hub,
        key,
        armed: true,
    };

    // Leave from the device's address, so the connection runs over this device.
    let src =
        (src.is_ipv4() == addr.is_ipv4() && !src.is_unspecified()).then(|| SocketAddr::new(src, 0));
    id.resolve_addr(src, addr, ms_left(deadline))?;
    expect(
        &rx,
        deadline,
        addr,
        ev::RDMA_CM_EVENT_ADDR_RESOLVED,
        "address resolution",
    )?;
    if id.device_key() != dev.key() {
        return Err(Error::InvalidArgument(format!(
            "{addr} is reached through another RDMA device than {}",
            dev.name()
        )));
    }
    check_device(id.device_key(), pd, spec)?;
    id.resolve_route(ms_left(deadline))?;
    expect(
        &rx,
        deadline,
        addr,
        ev::RDMA_CM_EVENT_ROUTE_RESOLVED,
        "route resolution",
    )?;
    let qp_num = id.create_qp(pd, &spec.send_cq.raw, &spec.recv_cq.raw, caps(spec))?;
    let limits = dev.limits();
    id.connect(&ConnParams {
        private_data,
        responder_resources: limits.responder_resources,
        initiator_depth: limits.initiator_depth,
    })?;
    let established = expect(
        &rx,
        deadline,
        addr,
        ev::RDMA_CM_EVENT_ESTABLISHED,
        "connection",
    )?;

    let peer = id.peer_addr().unwrap_or(addr);
    let shared = ConnShared::new(id, qp_num, spec, hub.clone());
    hub.set_route(
        key,
        Route::Conn {
            conn: Arc::downgrade(&shared),
            listener: None,
        },
    );
    route.armed = false;
    // Events the hub sent before the route switched (it sends under the route lock).
    while let Ok(event) = rx.try_recv() {
        shared.handle_event(&event, None);
    }
    Ok(Connection {
        shared,
        peer,
        peer_private_data: established.private_data,
    })
}

// ---------------------------------------------------------------------------------------------
// Listener

struct ListenerShared {
    // Destroyed before the hub reference below is released.
    id: CmId,
    local: SocketAddr,
    queue: Mutex<VecDeque<Event<ConnectRequest>>>,
    /// Counts the queued events (semaphore mode): readable while the queue is not empty.
    ready: EventFd,
    hub: Arc<Hub>,
}

impl Drop for ListenerShared {
    fn drop(&mut self) {
        self.hub.remove_route(self.id.key());
        // Queued requests are rejected as they drop, after the listening id is gone.
    }
}

impl ListenerShared {
    fn push(&self, event: Event<ConnectRequest>) {
        let mut queue = lock(&self.queue);
        queue.push_back(event);
        // Under the queue lock, so the counter always equals the queue length.
        if let Err(e) = self.ready.write(1) {
            tracing::warn!("listener {}: signalling an event: {e}", self.local);
        }
    }

    fn push_request(&self, id: CmId, event: CmEvent, weak: &Weak<ListenerShared>) {
        let hub = self.hub.clone();
        let peer = id.peer_addr().unwrap_or(self.local);
        self.push(Event::ConnectRequest(ConnectRequest {
            id: Some(id),
            private_data: event.private_data,
            peer,
            initiator_depth: event.initiator_depth,
            responder_resources: event.responder_resources,
            listener: weak.clone(),
            hub,
        }));
    }
}

/// A listening cm id.
pub(crate) struct Listener {
    shared: Arc<ListenerShared>,
}

pub(super) fn listen(hub: &Arc<Hub>, dev: &Arc<Device>, addr: SocketAddr) -> Result<Listener> {
    let id = CmId::create(hub.channel())?;
    id.bind(addr)?;
    let bound = id.device_key();
    if bound != 0 && bound != dev.key() {
        return Err(Error::InvalidArgument(format!(
            "{addr} belongs to another RDMA device than {}",
            dev.name()
        )));
    }
    let key = id.key();
    let local = id.local_addr().unwrap_or(addr);
    let shared = Arc::new(ListenerShared {
        id,
        local,
        queue: Mutex::new(VecDeque::new()),
        ready: eventfd(EfdFlags::EFD_SEMAPHORE, "a listener")?,
        hub: hub.clone(),
    });
    hub.set_route(key, Route::Listener(Arc::downgrade(&shared)));
    shared.id.listen(LISTEN_BACKLOG)?;
    Ok(Listener { shared })
}

impl Listener {
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    pub(crate) fn get_event(
        &self,
        timeout: Option<Duration>,
    ) -> Result<Option<Event<ConnectRequest>>> {
        let deadline = ffi::deadline_after(timeout);
        loop {
            {
                let mut queue = lock(&self.shared.queue);
                if let Some(event) = queue.pop_front() {
                    // Keeps the counter equal to the queue length; it is at least 1 here.
                    let _ = self.shared.ready.read();
                    return Ok(Some(event));
                }
            }
            let left = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    Some(left)
                }
                None => None,
            };
            ffi::poll_readable([self.shared.ready.as_raw_fd()], left).map_err(|e| {
                Error::io(
                    format!(
                        "waiting for events of the listener on {}",
                        self.shared.local
                    ),
                    e,
                )
            })?;
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.shared.ready.as_raw_fd()
    }
}

/// A connect request; rejected without private data if dropped unanswered.
pub(crate) struct ConnectRequest {
    // `None` once answered.
    id: Option<CmId>,
    private_data: Vec<u8>,
    peer: SocketAddr,
    /// The peer's initiator depth and responder resources, which bound ours.
    initiator_depth: u8,
    responder_resources: u8,
    listener: Weak<ListenerShared>,
    hub: Arc<Hub>,
}

impl Drop for ConnectRequest {
    fn drop(&mut self) {
        if let Some(id) = self.id.take()
            && let Err(e) = id.reject(&[])
        {
            tracing::debug!("rejecting an unanswered request from {}: {e}", self.peer);
        }
    }
}

impl ConnectRequest {
    pub(crate) fn private_data(&self) -> &[u8] {
        &self.private_data
    }

    pub(crate) fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    pub(crate) fn accept(
        mut self,
        pd: &Arc<Pd>,
        spec: &QpSpec<Arc<Cq>>,
        private_data: &[u8],
    ) -> Result<Connection> {
        let Some(mut id) = self.id.take() else {
            return Err(Error::InvalidArgument(
                "the connect request was already answered".into(),
            ));
        };
        let qp_num = match check_device(id.device_key(), pd, spec)
            .and_then(|()| id.create_qp(pd, &spec.send_cq.raw, &spec.recv_cq.raw, caps(spec)))
        {
            Ok(qp_num) => qp_num,
            Err(e) => {
                if let Err(r) = id.reject(&[]) {
                    tracing::debug!("rejecting {} after a failed accept: {r}", self.peer);
                }
                return Err(e);
            }
        };
        let limits = pd.device().limits();
        let params = ConnParams {
            private_data,
            responder_resources: limits.responder_resources.min(self.initiator_depth),
            initiator_depth: limits.initiator_depth.min(self.responder_resources),
        };
        let key = id.key();
        let shared = ConnShared::new(id, qp_num, spec, self.hub.clone());
        self.hub.set_route(
            key,
            Route::Conn {
                conn: Arc::downgrade(&shared),
                listener: Some(self.listener.clone()),
            },
        );
        if let Err(e) = shared.id.accept(&params) {
            shared.connected.store(false, Ordering::Release);
            if let Err(r) = shared.id.reject(&[]) {
                tracing::debug!("rejecting {} after a failed accept: {r}", self.peer);
            }
            return Err(e); // dropping `shared` removes the route and destroys the id
        }
        Ok(Connection {
            shared,
            peer: self.peer,
            peer_private_data: std::mem::take(&mut self.private_data),
        })
    }

    pub(crate) fn reject(mut self, private_data: &[u8]) -> Result<()> {
        match self.id.take() {
            Some(id) => id.reject(private_data),
            None => Err(Error::InvalidArgument(
                "the connect request was already answered".into(),
            )),
        }
    }
}
