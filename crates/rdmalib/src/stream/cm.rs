//! Connection management for the stream providers (tcp and shm): the listener, the handshake
//! that carries private data ([`super::handshake`]), accept and reject. After an accept both
//! sides speak frames.
//!
//! A listener never waits for a peer: connections are accepted into pending handshakes whose
//! bytes are read as they arrive, each dropped at its own deadline, so a silent, slow or
//! half-sent handshake delays no one else. Only the active side blocks, within its connect
//! timeout.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use super::conn::{Connection, Shared};
use super::engine::Engine;
use super::handshake::{self, Request};
use super::shm;
use super::sys::{EventFd, wait_readable};
use super::tcp::TcpTransport;
use super::transport::Transport;
use super::wire::VERSION;
use super::{Cq, Medium, Pd};
use crate::error::{Error, Result};
use crate::types::{
    Event, MAX_ACCEPT_PRIVATE_DATA, MAX_CONNECT_PRIVATE_DATA, MAX_REJECT_PRIVATE_DATA, QpSpec,
    padded_private_data,
};

/// How long a peer may take to send its connection request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Handshakes a listener keeps pending at most; connections beyond are dropped at once.
const MAX_PENDING: usize = 1024;

/// Events produced by other threads (disconnects, establishment) for the listener's owner.
pub(crate) struct ListenerShared {
    events: Mutex<VecDeque<Event<ConnectRequest>>>,
    doorbell: EventFd,
}

impl ListenerShared {
    pub(super) fn push(&self, event: Event<ConnectRequest>) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(event);
        self.doorbell.signal();
    }

    fn pop(&self) -> Option<Event<ConnectRequest>> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }
}

/// The socket a handshake runs over: TCP for `tcp`, a Unix socket for `shm` (which stays open
/// for the connection's life as its hang-up detector).
pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::Unix(s) => s.set_nonblocking(on),
        }
    }

    fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t)),
            Stream::Unix(s) => s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t)),
        }
    }

    /// Reads what is waiting into `buf` (non-blocking when the socket is), collecting
    /// descriptors passed along (shm) into `fds`. `Ok(0)` is end of stream.
    fn read_some(&mut self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => shm::recv_with_fds(s, buf, fds),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(bytes),
            Stream::Unix(s) => s.write_all(bytes),
        }
    }

    /// Sends `answer` within [`HANDSHAKE_TIMEOUT`] (the socket is fresh, so it has room).
    fn answer(&mut self, answer: &[u8]) -> io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_timeouts(Some(HANDSHAKE_TIMEOUT))?;
        self.write_all(answer)
    }
}

enum Socket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Socket {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Socket::Tcp(s) => s.as_fd(),
            Socket::Unix(s) => s.as_fd(),
        }
    }

    fn accept(&self, local: SocketAddr) -> io::Result<(Stream, SocketAddr)> {
        match self {
            Socket::Tcp(s) => s.accept().map(|(s, a)| (Stream::Tcp(s), a)),
            // A Unix peer has no IP address: name it by the listener's IP and port 0.
            Socket::Unix(s) => s
                .accept()
                .map(|(s, _)| (Stream::Unix(s), SocketAddr::new(local.ip(), 0))),
        }
    }
}

/// A connection whose request has not fully arrived: read as its bytes come, dropped at its
/// deadline, so a silent or slow peer delays nobody else.
struct Pending {
    stream: Stream,
    peer: SocketAddr,
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
    deadline: Instant,
}

/// What reading a pending handshake came to.
enum Outcome {
    /// More bytes are to come.
    Waiting,
    /// The request is complete.
    Request(ConnectRequest),
    /// The peer is gone, sent garbage, or another version (answered): it is dropped.
    Dropped(String),
}

pub(crate) struct Listener {
    socket: Socket,
    local: SocketAddr,
    medium: Medium,
    shared: Arc<ListenerShared>,
    /// Readable when the socket has a connection waiting, a pending handshake has bytes or
    /// passed its deadline, or the doorbell rang.
    readiness: Epoll,
    pending: Mutex<Vec<Pending>>,
    /// Armed for the earliest deadline of the pending handshakes.
    deadline_timer: TimerFd,
    engine: Arc<Engine>,
}

impl Listener {
    pub(super) fn bind(engine: Arc<Engine>, addr: SocketAddr, medium: Medium) -> Result<Listener> {
        let (socket, local) = match medium {
            Medium::Shm => {
                let (socket, local) = shm::bind(addr)?;
                socket
                    .set_nonblocking(true)
                    .map_err(|e| Error::io("making the listener non-blocking", e))?;
                (Socket::Unix(socket), local)
            }
            Medium::Tcp => {
                let socket = TcpListener::bind(addr)
                    .map_err(|e| Error::io(format!("listen on {addr}"), e))?;
                socket
                    .set_nonblocking(true)
                    .map_err(|e| Error::io("making the listener non-blocking", e))?;
                let local = socket
                    .local_addr()
                    .map_err(|e| Error::io("listener address", e))?;
                (Socket::Tcp(socket), local)
            }
        };
        let shared = Arc::new(ListenerShared {
            events: Mutex::new(VecDeque::new()),
            doorbell: EventFd::new().map_err(|e| Error::io("eventfd for a listener", e))?,
        });
        let readiness = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| Error::io("epoll_create for a listener", e.into()))?;
        let deadline_timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(|e| Error::io("timerfd for a listener", e.into()))?;
        for fd in [socket.fd(), shared.doorbell.fd(), deadline_timer.as_fd()] {
            readiness
                .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, 0))
                .map_err(|e| Error::io("epoll_ctl for a listener", e.into()))?;
        }
        Ok(Listener {
            socket,
            local,
            medium,
            shared,
            readiness,
            pending: Mutex::new(Vec::new()),
            deadline_timer,
            engine,
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.readiness.0.as_raw_fd()
    }

    pub(crate) fn get_event(
        &self,
        timeout: Option<Duration>,
    ) -> Result<Option<Event<ConnectRequest>>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            self.shared.doorbell.drain();
            if let Some(event) = self.shared.pop() {
                return Ok(Some(event));
            }
            self.accept_waiting()?;
            let (request, next_deadline) = self.progress_pending();
            self.arm_deadline_timer(next_deadline);
            if let Some(request) = request {
                return Ok(Some(Event::ConnectRequest(request)));
            }
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) => Some(left),
                    None => return Ok(None),
                },
            };
            wait_readable(&[self.readiness.0.as_fd()], left)
                .map_err(|e| Error::io("waiting for connection requests", e))?;
        }
    }

    /// Makes the listener's descriptor readable at `deadline` (a pending handshake's), so an
    /// event loop that sleeps on it comes back to drop that handshake; re-arming also clears
    /// an expiry already seen.
    fn arm_deadline_timer(&self, deadline: Option<Instant>) {
        let armed = match deadline {
            Some(d) => {
                let left = d
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                self.deadline_timer.set(
                    Expiration::OneShot(TimeSpec::from_duration(left)),
                    TimerSetTimeFlags::empty(),
                )
            }
            None => self.deadline_timer.unset(),
        };
        if let Err(e) = armed {
            tracing::warn!("listener {}: arming the handshake timer: {e}", self.local);
        }
    }

    /// Takes every connection waiting on the socket into the pending handshakes.
    fn accept_waiting(&self) -> Result<()> {
        loop {
            let (stream, peer) = match self.socket.accept(self.local) {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(format!("accept on {}", self.local), e)),
            };
            let mut pending = lock(&self.pending);
            if pending.len() >= MAX_PENDING {
                tracing::warn!(
                    "listener {}: {MAX_PENDING} handshakes are pending; dropped the connection from {peer}",
                    self.local
                );
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true).and_then(|()| {
                self.readiness
                    .add(stream.fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))
                    .map_err(io::Error::from)
            }) {
                tracing::warn!("listener {}: connection from {peer}: {e}", self.local);
                continue;
            }
            pending.push(Pending {
                stream,
                peer,
                bytes: Vec::new(),
                fds: Vec::new(),
                deadline: Instant::now() + HANDSHAKE_TIMEOUT,
            });
        }
    }

    /// Reads what has arrived on the pending handshakes; returns the first complete request
    /// and the earliest deadline of those still pending.
    fn progress_pending(&self) -> (Option<ConnectRequest>, Option<Instant>) {
        let mut pending = lock(&self.pending);
        let now = Instant::now();
        let mut i = 0;
        let mut request = None;
        while i < pending.len() {
            let outcome = if now >= pending[i].deadline {
                Outcome::Dropped(format!(
                    "no connection request within {HANDSHAKE_TIMEOUT:?}"
                ))
            } else if request.is_some() {
                Outcome::Waiting
            } else {
                self.read_request(&mut pending[i])
            };
            match outcome {
                Outcome::Waiting => i += 1,
                Outcome::Request(r) => {
                    let p = pending.swap_remove(i);
                    let _ = self.readiness.delete(p.stream.fd());
                    request = Some(r.with_stream(p.stream));
                }
                Outcome::Dropped(why) => {
                    let p = pending.swap_remove(i);
                    let _ = self.readiness.delete(p.stream.fd());
                    tracing::warn!("ignored a connection attempt from {}: {why}", p.peer);
                }
            }
        }
        let next = pending.iter().map(|p| p.deadline).min();
        (request, next)
    }

    fn read_request(&self, p: &mut Pending) -> Outcome {
        let mut buf = [0u8; 128];
        loop {
            let want = match handshake::parse_request(&p.bytes) {
                Ok(Request::Incomplete(n)) => n,
                Ok(Request::Complete(data)) => {
                    return self.complete(p, data.to_vec());
                }
                Ok(Request::OtherVersion(version)) => {
                    let _ = p
                        .stream
                        .answer(&handshake::reply(handshake::BAD_VERSION, &[]));
                    return Outcome::Dropped(format!(
                        "it speaks stream-provider protocol version {version}, this build speaks {VERSION}"
                    ));
                }
                Err(e) => return Outcome::Dropped(e.to_string()),
            };
            match p.stream.read_some(&mut buf[..want.min(128)], &mut p.fds) {
                Ok(0) => return Outcome::Dropped("it closed the connection".into()),
                Ok(n) => p.bytes.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Waiting,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Outcome::Dropped(e.to_string()),
            }
        }
    }

    fn complete(&self, p: &mut Pending, private_data: Vec<u8>) -> Outcome {
        let fds = std::mem::take(&mut p.fds);
        if (self.medium == Medium::Shm) == fds.is_empty() {
            return Outcome::Dropped(format!("its request came with {} descriptors", fds.len()));
        }
        Outcome::Request(ConnectRequest {
            stream: None,
            fds,
            peer: p.peer,
            private_data: padded_private_data(private_data, MAX_CONNECT_PRIVATE_DATA),
            listener: Arc::downgrade(&self.shared),
            engine: self.engine.clone(),
        })
    }
}

pub(crate) struct ConnectRequest {
    stream: Option<Stream>,
    /// The shm peer's shared memory and doorbells (empty for tcp).
    fds: Vec<OwnedFd>,
    peer: SocketAddr,
    private_data: Vec<u8>,
    listener: Weak<ListenerShared>,
    engine: Arc<Engine>,
}

impl ConnectRequest {
    fn with_stream(mut self, stream: Stream) -> ConnectRequest {
        self.stream = Some(stream);
        self
    }

    pub(crate) fn private_data(&self) -> &[u8] {
        &self.private_data
    }

    pub(crate) fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    pub(crate) fn accept(
        mut self,
        pd: &Arc<Pd>,
        qp: &QpSpec<Arc<Cq>>,
        private_data: &[u8],
    ) -> Result<Connection> {
        let mut stream = self.stream.take().ok_or_else(|| {
            Error::InvalidArgument("the connect request was already answered".into())
        })?;
        stream
            .answer(&handshake::reply(handshake::ACCEPT, private_data))
            .map_err(|e| Error::io(format!("accepting {}", self.peer), e))?;
        let data = std::mem::take(&mut self.private_data);
        let transport = into_transport(stream, std::mem::take(&mut self.fds), None)?;
        let shared = Shared::new(transport, self.peer, data, pd, qp, &self.engine)?;
        shared.set_listener(self.listener.clone());
        if let Some(listener) = self.listener.upgrade() {
            listener.push(Event::Established(shared.qp_num));
        }
        Ok(Connection::new(shared))
    }

    pub(crate) fn reject(mut self, private_data: &[u8]) -> Result<()> {
        if let Some(mut stream) = self.stream.take() {
            stream
                .answer(&handshake::reply(handshake::REJECT, private_data))
                .map_err(|e| Error::io(format!("rejecting {}", self.peer), e))?;
        }
        Ok(())
    }
}

impl Drop for ConnectRequest {
    fn drop(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            let _ = stream.answer(&handshake::reply(handshake::REJECT, &[]));
        }
    }
}

/// Turns a handshaken socket into the connection's transport: for shm, the accepting side
/// maps the peer's `fds` and the connecting side its own `offer`.
fn into_transport(
    stream: Stream,
    fds: Vec<OwnedFd>,
    offer: Option<shm::Offer>,
) -> Result<Box<dyn Transport>> {
    match stream {
        Stream::Tcp(s) => {
            s.set_nodelay(true)
                .map_err(|e| Error::io("setting TCP_NODELAY", e))?;
            s.set_read_timeout(None)
                .and_then(|()| s.set_write_timeout(None))
                .map_err(|e| Error::io("clearing the handshake timeouts", e))?;
            Ok(Box::new(TcpTransport(s)))
        }
        Stream::Unix(s) => Ok(Box::new(match offer {
            Some(offer) => offer.into_transport(s)?,
            None => shm::ShmTransport::accept(s, fds)?,
        })),
    }
}

pub(super) fn connect(
    engine: &Arc<Engine>,
    pd: &Arc<Pd>,
    addr: SocketAddr,
    qp: &QpSpec<Arc<Cq>>,
    private_data: &[u8],
    timeout: Duration,
    medium: Medium,
) -> Result<Connection> {
    let what = || format!("connect to {addr}");
    let request = handshake::request(private_data);
    let (mut stream, offer) = match medium {
        Medium::Shm => {
            let sock = shm::connect(addr)?;
            let offer = shm::Offer::new()?;
            offer
                .send_with(&sock, &request)
                .map_err(|e| Error::io(what(), e))?;
            (Stream::Unix(sock), Some(offer))
        }
        Medium::Tcp => {
            let mut sock =
                TcpStream::connect_timeout(&addr, timeout).map_err(|e| Error::io(what(), e))?;
            sock.set_nodelay(true).map_err(|e| Error::io(what(), e))?;
            sock.write_all(&request).map_err(|e| Error::io(what(), e))?;
            (Stream::Tcp(sock), None)
        }
    };
    stream
        .set_timeouts(Some(timeout))
        .map_err(|e| Error::io(what(), e))?;
    let answer = read_reply(&mut stream).map_err(|e| match e {
        Error::Protocol(why) => Error::Protocol(format!("{addr}: {why}")),
        other => other,
    })?;
    let reply = handshake::parse_reply(&answer)?;
    let max = if reply.accepted {
        MAX_ACCEPT_PRIVATE_DATA
    } else {
        MAX_REJECT_PRIVATE_DATA
    };
    let data = padded_private_data(reply.private_data.to_vec(), max);
    if !reply.accepted {
        return Err(Error::Rejected { private_data: data });
    }
    let transport = into_transport(stream, Vec::new(), offer)?;
    Ok(Connection::new(Shared::new(
        transport, addr, data, pd, qp, engine,
    )?))
}

/// Reads the passive side's whole answer (blocking, within the stream's timeouts).
fn read_reply(stream: &mut Stream) -> Result<Vec<u8>> {
    let mut answer = vec![0u8; handshake::reply_head_len()];
    read_exact(stream, &mut answer)?;
    let len = handshake::reply_len(&answer)?;
    let head = answer.len();
    answer.resize(len, 0);
    read_exact(stream, &mut answer[head..])?;
    Ok(answer)
}

fn read_exact(stream: &mut Stream, mut buf: &mut [u8]) -> Result<()> {
    let mut fds = Vec::new();
    while !buf.is_empty() {
        match stream.read_some(buf, &mut fds) {
            Ok(0) => {
                return Err(Error::io(
                    "waiting for the answer to a connection request",
                    io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::io(
                    "waiting for the answer to a connection request",
                    e,
                ));
            }
        }
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
