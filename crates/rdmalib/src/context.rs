//! Opened devices, completion queues and reliable connections: the provider-independent API.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::device::{DeviceConfig, ProviderKind};
use crate::error::{Error, Result};
use crate::region::{PdImpl, ProtectionDomain, Sge};
use crate::stream;
use crate::types::{
    Completion, Event, MAX_ACCEPT_PRIVATE_DATA, MAX_CONNECT_PRIVATE_DATA, MAX_REJECT_PRIVATE_DATA,
    QpSpec, RemoteBuffer, SendFlags,
};

#[cfg(feature = "verbs")]
use crate::verbs;

/// An opened device: the entry point of the RDMA layer.
pub struct Context {
    device: DeviceConfig,
    inner: CtxImpl,
}

enum CtxImpl {
    Stream(stream::Context),
    #[cfg(feature = "verbs")]
    Verbs(verbs::Context),
}

impl Context {
    /// Opens `device` with its configured provider or, when none is set, with the one that
    /// is available: a verbs device of that name if this build and host have one, else tcp.
    /// The choice is logged.
    pub fn open(device: &DeviceConfig) -> Result<Context> {
        let kind = match device.provider {
            Some(kind) => kind,
            None => detect(device),
        };
        let inner = match kind {
            ProviderKind::Tcp => CtxImpl::Stream(stream::Context::open(stream::Medium::Tcp)?),
            ProviderKind::Shm => CtxImpl::Stream(stream::Context::open(stream::Medium::Shm)?),
            #[cfg(feature = "verbs")]
            ProviderKind::Verbs => CtxImpl::Verbs(verbs::Context::open(device)?),
            #[cfg(not(feature = "verbs"))]
            ProviderKind::Verbs => return Err(Error::ProviderUnavailable("verbs")),
        };
        tracing::info!(
            "Opened device {} ({}) with provider {}{}",
            device.name,
            device.ip_address,
            kind,
            if device.provider.is_none() {
                " (detected)"
            } else {
                ""
            }
        );
        Ok(Context {
            device: device.clone(),
            inner,
        })
    }

    /// The device this context was opened on.
    pub fn device(&self) -> &DeviceConfig {
        &self.device
    }

    /// The provider in use.
    pub fn provider(&self) -> ProviderKind {
        match &self.inner {
            CtxImpl::Stream(ctx) => ctx.provider(),
            #[cfg(feature = "verbs")]
            CtxImpl::Verbs(_) => ProviderKind::Verbs,
        }
    }

    /// Allocates a protection domain.
    pub fn alloc_pd(&self) -> Result<ProtectionDomain> {
        Ok(ProtectionDomain(match &self.inner {
            CtxImpl::Stream(ctx) => PdImpl::Stream(ctx.alloc_pd()?),
            #[cfg(feature = "verbs")]
            CtxImpl::Verbs(ctx) => PdImpl::Verbs(ctx.alloc_pd()?),
        }))
    }

    /// Creates a completion queue with room for `capacity` completions. One queue may serve the
    /// send or receive side of many connections.
    pub fn create_cq(&self, capacity: u32) -> Result<CompletionQueue> {
        Ok(CompletionQueue(match &self.inner {
            CtxImpl::Stream(ctx) => CqImpl::Stream(ctx.create_cq(capacity)?),
            #[cfg(feature = "verbs")]
            CtxImpl::Verbs(ctx) => CqImpl::Verbs(ctx.create_cq(capacity)?),
        }))
    }

    /// Listens for connection requests on the device's address at `port` (0 picks a free one).
    pub fn listen(&self, port: u16) -> Result<Listener> {
        let addr = SocketAddr::new(self.device.ip()?, port);
        Ok(Listener(match &self.inner {
            CtxImpl::Stream(ctx) => ListenerImpl::Stream(ctx.listen(addr)?),
            #[cfg(feature = "verbs")]
            CtxImpl::Verbs(ctx) => ListenerImpl::Verbs(ctx.listen(addr)?),
        }))
    }

    /// Connects to a listener at `addr`, sending `private_data` (at most
    /// [`MAX_CONNECT_PRIVATE_DATA`] bytes) with the request. Fails with
    /// [`Error::Rejected`] when the peer rejects.
    pub fn connect(
        &self,
        pd: &ProtectionDomain,
        addr: SocketAddr,
        qp: &QpConfig<'_>,
        private_data: &[u8],
    ) -> Result<Connection> {
        check_private_data(private_data, MAX_CONNECT_PRIVATE_DATA, "connect")?;
        let inner = match (&self.inner, &pd.0) {
            (CtxImpl::Stream(ctx), PdImpl::Stream(pd)) => {
                ConnImpl::Stream(ctx.connect(pd, addr, &qp.stream()?, private_data, qp.timeout)?)
            }
            #[cfg(feature = "verbs")]
            (CtxImpl::Verbs(ctx), PdImpl::Verbs(pd)) => {
                ConnImpl::Verbs(ctx.connect(pd, addr, &qp.verbs()?, private_data, qp.timeout)?)
            }
            #[cfg(feature = "verbs")]
            _ => return Err(mixed_providers()),
        };
        Ok(Connection {
            inner,
            max_inline_data: qp.max_inline_data,
        })
    }
}

fn check_private_data(data: &[u8], max: usize, what: &str) -> Result<()> {
    if data.len() > max {
        return Err(Error::InvalidArgument(format!(
            "{} bytes of {what} private data; at most {max} are allowed",
            data.len()
        )));
    }
    Ok(())
}

#[cfg(feature = "verbs")]
fn mixed_providers() -> Error {
    Error::InvalidArgument("objects of different providers cannot be combined".into())
}

fn detect(device: &DeviceConfig) -> ProviderKind {
    #[cfg(feature = "verbs")]
    {
        match verbs::device_exists(&device.name) {
            Ok(true) => return ProviderKind::Verbs,
            Ok(false) => tracing::debug!("no verbs device named {:?}", device.name),
            Err(e) => tracing::debug!("verbs not usable here: {e}"),
        }
    }
    let _ = device;
    ProviderKind::Tcp
}

/// Parameters of a new connection's queue pair.
#[derive(Clone, Copy)]
pub struct QpConfig<'a> {
    /// Completions of sends, writes and atomics.
    pub send_cq: &'a CompletionQueue,
    /// Completions of receives; may be shared by many connections.
    pub recv_cq: &'a CompletionQueue,
    /// Send requests that may be outstanding.
    pub max_send_wr: u32,
    /// Receive requests that may be posted.
    pub max_recv_wr: u32,
    /// Largest inline payload (the device's `max_inline_data`).
    pub max_inline_data: u32,
    /// Let the provider make progress on this connection even when nobody polls its queues
    /// (for connections that only serve the peer's one-sided operations).
    pub background_progress: bool,
    /// How long `connect` waits for the peer's answer.
    pub timeout: Duration,
}

impl<'a> QpConfig<'a> {
    /// Defaults that fit rFaaS: 128 send and receive requests, no inlining, 5 s to connect.
    pub fn new(send_cq: &'a CompletionQueue, recv_cq: &'a CompletionQueue) -> Self {
        QpConfig {
            send_cq,
            recv_cq,
            max_send_wr: 128,
            max_recv_wr: 128,
            max_inline_data: 0,
            background_progress: false,
            timeout: Duration::from_secs(5),
        }
    }

    /// Sets the largest inline payload.
    pub fn max_inline_data(mut self, bytes: u32) -> Self {
        self.max_inline_data = bytes;
        self
    }

    /// Sets the number of receive requests that may be posted.
    pub fn max_recv_wr(mut self, n: u32) -> Self {
        self.max_recv_wr = n;
        self
    }

    /// Sets the number of send requests that may be outstanding.
    pub fn max_send_wr(mut self, n: u32) -> Self {
        self.max_send_wr = n;
        self
    }

    /// Turns on background progress (see the field).
    pub fn background_progress(mut self, on: bool) -> Self {
        self.background_progress = on;
        self
    }

    /// Sets the connect timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn stream(&self) -> Result<QpSpec<Arc<stream::Cq>>> {
        match (&self.send_cq.0, &self.recv_cq.0) {
            (CqImpl::Stream(s), CqImpl::Stream(r)) => Ok(self.spec(s.clone(), r.clone())),
            #[cfg(feature = "verbs")]
            _ => Err(mixed_providers()),
        }
    }

    #[cfg(feature = "verbs")]
    fn verbs(&self) -> Result<QpSpec<Arc<verbs::Cq>>> {
        match (&self.send_cq.0, &self.recv_cq.0) {
            (CqImpl::Verbs(s), CqImpl::Verbs(r)) => Ok(self.spec(s.clone(), r.clone())),
            _ => Err(mixed_providers()),
        }
    }

    fn spec<C>(&self, send_cq: C, recv_cq: C) -> QpSpec<C> {
        QpSpec {
            send_cq,
            recv_cq,
            max_send_wr: self.max_send_wr,
            max_recv_wr: self.max_recv_wr,
            max_inline_data: self.max_inline_data,
            background_progress: self.background_progress,
        }
    }
}

/// A completion queue. Polling it also drives the provider's progress for the connections
/// attached to it, so a busy-polling thread needs no helper thread on the data path.
#[derive(Clone)]
pub struct CompletionQueue(CqImpl);

#[derive(Clone)]
enum CqImpl {
    Stream(Arc<stream::Cq>),
    #[cfg(feature = "verbs")]
    Verbs(Arc<verbs::Cq>),
}

impl CompletionQueue {
    /// Takes up to `out.len()` completions without blocking; returns how many.
    #[inline]
    pub fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        match &self.0 {
            CqImpl::Stream(cq) => cq.poll(out),
            #[cfg(feature = "verbs")]
            CqImpl::Verbs(cq) => cq.poll(out),
        }
    }

    /// Takes one completion without blocking.
    #[inline]
    pub fn poll_one(&self) -> Result<Option<Completion>> {
        let mut wc = [Completion::default()];
        Ok((self.poll(&mut wc)? == 1).then_some(wc[0]))
    }

    /// Arms the completion channel: the next completion (or next solicited one) makes the
    /// file descriptor readable and ends a [`wait`](Self::wait). Poll once more after arming,
    /// since completions that arrived before it do not count.
    pub fn req_notify(&self, solicited_only: bool) -> Result<()> {
        match &self.0 {
            CqImpl::Stream(cq) => cq.req_notify(solicited_only),
            #[cfg(feature = "verbs")]
            CqImpl::Verbs(cq) => cq.req_notify(solicited_only),
        }
    }

    /// Blocks until the armed channel fires or `timeout` passes; returns whether it fired.
    /// The event is consumed, so arm again before the next wait.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        match &self.0 {
            CqImpl::Stream(cq) => cq.wait(timeout),
            #[cfg(feature = "verbs")]
            CqImpl::Verbs(cq) => cq.wait(timeout),
        }
    }

    /// Polls until a completion arrives or `timeout` passes, sleeping on the channel
    /// between polls: the blocking ("warm") way to take one completion.
    pub fn wait_one(&self, timeout: Option<Duration>) -> Result<Option<Completion>> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            if let Some(wc) = self.poll_one()? {
                return Ok(Some(wc));
            }
            self.req_notify(false)?;
            if let Some(wc) = self.poll_one()? {
                return Ok(Some(wc));
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                    Some(left) => Some(left),
                    None => return Ok(None),
                },
                None => None,
            };
            self.wait(left)?;
        }
    }

    /// Polls, yielding the core between polls, for up to `eager`, then sleeps on the channel
    /// like [`wait_one`](Self::wait_one) for the rest of `timeout`. For one-off waits on a
    /// setup path where a sleep and wake-up (tens to hundreds of µs each) is a large share
    /// of the wait: the yield lets the peer run on a loaded core.
    pub fn wait_one_eager(
        &self,
        eager: Duration,
        timeout: Option<Duration>,
    ) -> Result<Option<Completion>> {
        let start = std::time::Instant::now();
        let eager = timeout.map_or(eager, |t| eager.min(t));
        loop {
            if let Some(wc) = self.poll_one()? {
                return Ok(Some(wc));
            }
            if start.elapsed() >= eager {
                break;
            }
            std::thread::yield_now();
        }
        self.wait_one(timeout.map(|t| t.saturating_sub(start.elapsed())))
    }

    /// The completion channel's file descriptor, readable when the armed channel fired.
    pub fn as_raw_fd(&self) -> RawFd {
        match &self.0 {
            CqImpl::Stream(cq) => cq.fd(),
            #[cfg(feature = "verbs")]
            CqImpl::Verbs(cq) => cq.fd(),
        }
    }
}

/// A reliable connection (an RC queue pair with its connection-manager id).
///
/// Posting is thread-safe. Completions arrive on the queues given in [`QpConfig`]. A post
/// fails only for a request that is wrong in itself (an inline payload over
/// `max_inline_data`, a misaligned atomic); on a connection that is closed or broken it is
/// accepted and completes with [`Status::WrFlushError`](crate::Status::WrFlushError), as in
/// verbs (see the crate's provider contract).
pub struct Connection {
    inner: ConnImpl,
    max_inline_data: u32,
}

enum ConnImpl {
    Stream(stream::Connection),
    #[cfg(feature = "verbs")]
    Verbs(verbs::Connection),
}

macro_rules! dispatch {
    ($self:expr, $conn:ident => $body:expr) => {
        match &$self.inner {
            ConnImpl::Stream($conn) => $body,
            #[cfg(feature = "verbs")]
            ConnImpl::Verbs($conn) => $body,
        }
    };
}

impl Connection {
    /// The queue pair number, as found in [`Completion::qp_num`].
    pub fn qp_num(&self) -> u32 {
        dispatch!(self, c => c.qp_num())
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        dispatch!(self, c => c.peer_addr())
    }

    /// Private data the peer sent: its accept's (active side) or its request's (passive side).
    pub fn peer_private_data(&self) -> &[u8] {
        dispatch!(self, c => c.peer_private_data())
    }

    /// `false` once the connection closed, the peer went away or an error broke it.
    pub fn is_connected(&self) -> bool {
        dispatch!(self, c => c.is_connected())
    }

    /// Posts a receive into `sge` (may be empty, for writes with immediate).
    #[inline]
    pub fn post_recv(&self, wr_id: u64, sge: Sge<'_>) -> Result<()> {
        dispatch!(self, c => c.post_recv(wr_id, sge.raw()))
    }

    /// Posts a two-sided send of `sge`, with immediate data if `imm` is set.
    #[inline]
    pub fn post_send(
        &self,
        wr_id: u64,
        sge: Sge<'_>,
        imm: Option<u32>,
        flags: SendFlags,
    ) -> Result<()> {
        self.check_inline(&sge, flags)?;
        dispatch!(self, c => c.post_send(wr_id, sge.raw(), imm, flags))
    }

    /// Posts an RDMA write of `sge` to `remote`.
    #[inline]
    pub fn post_write(
        &self,
        wr_id: u64,
        sge: Sge<'_>,
        remote: RemoteBuffer,
        flags: SendFlags,
    ) -> Result<()> {
        self.check_inline(&sge, flags)?;
        dispatch!(self, c => c.post_write(wr_id, sge.raw(), remote, None, flags))
    }

    /// Posts an RDMA write with immediate: the write lands in `remote` and consumes one posted
    /// receive on the peer, which completes with `imm` and the write's length.
    #[inline]
    pub fn post_write_with_imm(
        &self,
        wr_id: u64,
        sge: Sge<'_>,
        remote: RemoteBuffer,
        imm: u32,
        flags: SendFlags,
    ) -> Result<()> {
        self.check_inline(&sge, flags)?;
        dispatch!(self, c => c.post_write(wr_id, sge.raw(), remote, Some(imm), flags))
    }

    /// Posts an atomic fetch-and-add of `add` on the 8 bytes at `remote`; the old value lands
    /// in `sge`, which must be 8 bytes. `flags.inline` is ignored: an atomic sends no payload.
    pub fn post_fetch_add(
        &self,
        wr_id: u64,
        sge: Sge<'_>,
        remote: RemoteBuffer,
        add: u64,
        flags: SendFlags,
    ) -> Result<()> {
        if sge.len() != 8 {
            return Err(Error::InvalidArgument(format!(
                "fetch-and-add needs an 8-byte local buffer, got {} bytes",
                sge.len()
            )));
        }
        if !remote.addr.is_multiple_of(8) {
            return Err(Error::InvalidArgument(format!(
                "fetch-and-add target {:#x} is not 8-byte aligned",
                remote.addr
            )));
        }
        dispatch!(self, c => c.post_fetch_add(wr_id, sge.raw(), remote, add, flags))
    }

    /// Closes the connection; the peer sees a disconnect, posted receives are flushed.
    pub fn disconnect(&self) {
        dispatch!(self, c => c.disconnect())
    }

    /// The largest payload this connection sends inline ([`QpConfig::max_inline_data`]).
    pub fn max_inline_data(&self) -> u32 {
        self.max_inline_data
    }

    /// Verbs refuses an inline payload over the queue pair's limit on most devices (rxe takes
    /// it); every provider refuses it here, before it is posted.
    #[inline]
    fn check_inline(&self, sge: &Sge<'_>, flags: SendFlags) -> Result<()> {
        if flags.inline && sge.len() > self.max_inline_data {
            return Err(Error::InvalidArgument(format!(
                "an inline payload of {} bytes exceeds the connection's max_inline_data of {}",
                sge.len(),
                self.max_inline_data
            )));
        }
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.disconnect();
    }
}

/// The passive side: sees connection requests and accepts or rejects each.
pub struct Listener(ListenerImpl);

enum ListenerImpl {
    Stream(stream::Listener),
    #[cfg(feature = "verbs")]
    Verbs(verbs::Listener),
}

/// What happens on a listener.
pub enum CmEvent {
    /// A peer asks to connect.
    ConnectRequest(ConnectRequest),
    /// A connection this listener accepted is established.
    Established {
        /// Its queue pair number.
        qp_num: u32,
    },
    /// A connection this listener accepted closed (peer went away or disconnected).
    Disconnected {
        /// Its queue pair number.
        qp_num: u32,
    },
}

impl Listener {
    /// The address it listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        match &self.0 {
            ListenerImpl::Stream(l) => l.local_addr(),
            #[cfg(feature = "verbs")]
            ListenerImpl::Verbs(l) => l.local_addr(),
        }
    }

    /// Waits up to `timeout` (forever for `None`) for the next event.
    pub fn get_event(&self, timeout: Option<Duration>) -> Result<Option<CmEvent>> {
        Ok(match &self.0 {
            ListenerImpl::Stream(l) => l
                .get_event(timeout)?
                .map(|e| e.map(|r| ConnectRequest(ReqImpl::Stream(r)))),
            #[cfg(feature = "verbs")]
            ListenerImpl::Verbs(l) => l
                .get_event(timeout)?
                .map(|e| e.map(|r| ConnectRequest(ReqImpl::Verbs(r)))),
        })
    }

    /// A file descriptor that is readable when an event may be ready.
    pub fn as_raw_fd(&self) -> RawFd {
        match &self.0 {
            ListenerImpl::Stream(l) => l.fd(),
            #[cfg(feature = "verbs")]
            ListenerImpl::Verbs(l) => l.fd(),
        }
    }
}

impl<R> Event<R> {
    fn map(self, f: impl FnOnce(R) -> ConnectRequest) -> CmEvent {
        match self {
            Event::ConnectRequest(r) => CmEvent::ConnectRequest(f(r)),
            Event::Established(qp_num) => CmEvent::Established { qp_num },
            Event::Disconnected(qp_num) => CmEvent::Disconnected { qp_num },
        }
    }
}

/// A pending connection request; dropping it rejects it without private data.
pub struct ConnectRequest(ReqImpl);

enum ReqImpl {
    Stream(stream::ConnectRequest),
    #[cfg(feature = "verbs")]
    Verbs(verbs::ConnectRequest),
}

impl ConnectRequest {
    /// The private data the peer sent.
    pub fn private_data(&self) -> &[u8] {
        match &self.0 {
            ReqImpl::Stream(r) => r.private_data(),
            #[cfg(feature = "verbs")]
            ReqImpl::Verbs(r) => r.private_data(),
        }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        match &self.0 {
            ReqImpl::Stream(r) => r.peer_addr(),
            #[cfg(feature = "verbs")]
            ReqImpl::Verbs(r) => r.peer_addr(),
        }
    }

    /// Accepts: creates the queue pair in `pd` and answers with `private_data` (at most
    /// [`MAX_ACCEPT_PRIVATE_DATA`] bytes).
    pub fn accept(
        self,
        pd: &ProtectionDomain,
        qp: &QpConfig<'_>,
        private_data: &[u8],
    ) -> Result<Connection> {
        check_private_data(private_data, MAX_ACCEPT_PRIVATE_DATA, "accept")?;
        let inner = match (self.0, &pd.0) {
            (ReqImpl::Stream(r), PdImpl::Stream(pd)) => {
                ConnImpl::Stream(r.accept(pd, &qp.stream()?, private_data)?)
            }
            #[cfg(feature = "verbs")]
            (ReqImpl::Verbs(r), PdImpl::Verbs(pd)) => {
                ConnImpl::Verbs(r.accept(pd, &qp.verbs()?, private_data)?)
            }
            #[cfg(feature = "verbs")]
            _ => return Err(mixed_providers()),
        };
        Ok(Connection {
            inner,
            max_inline_data: qp.max_inline_data,
        })
    }

    /// Rejects, sending `private_data` (at most [`MAX_REJECT_PRIVATE_DATA`] bytes).
    pub fn reject(self, private_data: &[u8]) -> Result<()> {
        check_private_data(private_data, MAX_REJECT_PRIVATE_DATA, "reject")?;
        match self.0 {
            ReqImpl::Stream(r) => r.reject(private_data),
            #[cfg(feature = "verbs")]
            ReqImpl::Verbs(r) => r.reject(private_data),
        }
    }
}

/// Blocks until `listener` may have an event or one of `cqs` fired, or `timeout` passes: the
/// sleeping half of an event loop that serves a listener and completion queues together.
///
/// Arm every queue with [`CompletionQueue::req_notify`] and poll it once more before calling;
/// the events of the queues that fired are consumed here, so arm them again for the next wait.
pub fn wait_any(
    listener: Option<&Listener>,
    cqs: &[&CompletionQueue],
    timeout: Duration,
) -> Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::BorrowedFd;

    let raw: Vec<RawFd> = listener
        .map(Listener::as_raw_fd)
        .into_iter()
        .chain(cqs.iter().map(|cq| cq.as_raw_fd()))
        .collect();
    // SAFETY: every descriptor belongs to a listener or queue borrowed for this whole call, so
    // it stays open while it is polled.
    let fds: Vec<BorrowedFd<'_>> = raw
        .iter()
        .map(|fd| unsafe { BorrowedFd::borrow_raw(*fd) })
        .collect();
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    let ms = PollTimeout::try_from(timeout.as_millis().min(i32::MAX as u128) as i32)
        .unwrap_or(PollTimeout::MAX);
    match poll(&mut pfds, ms) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(Error::io("waiting for events", e.into())),
    }
    let fired: Vec<bool> = pfds
        .iter()
        .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
        .collect();
    let first_cq = usize::from(listener.is_some());
    for (cq, fired) in cqs.iter().zip(&fired[first_cq..]) {
        if *fired {
            cq.wait(Some(Duration::ZERO))?;
        }
    }
    Ok(())
}
