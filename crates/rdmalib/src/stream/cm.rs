//! Connection management for the stream providers (tcp and shm): the listener, the handshake that carries
//! private data, accept and reject.
//!
//! Handshake (little-endian): the active side sends `MAGIC, version u16, len u16, data`; the
//! passive side answers `MAGIC, version u16, status u8, len u16, data` with status 0 accept,
//! 1 reject, 2 version mismatch. After an accept both sides speak frames.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use super::conn::{Connection, Shared};
use super::engine::Engine;
use super::shm;
use super::sys::{EventFd, wait_readable};
use super::tcp::TcpTransport;
use super::transport::Transport;
use super::wire::{MAGIC, VERSION};
use super::{Cq, Medium, Pd};
use crate::error::{Error, Result};
use crate::types::{
    Event, MAX_ACCEPT_PRIVATE_DATA, MAX_CONNECT_PRIVATE_DATA, MAX_REJECT_PRIVATE_DATA, QpSpec,
    padded_private_data,
};

/// How long a peer may take to send its connection request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

const ACCEPT: u8 = 0;
const REJECT: u8 = 1;
const BAD_VERSION: u8 = 2;

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
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::Unix(s) => s.set_nonblocking(on),
        }
    }

    /// Turns the handshaken socket into the connection's transport. `active`: this side
    /// connected (for shm it creates and sends the shared memory; the passive side receives it).
    fn into_transport(self, active: bool) -> Result<Box<dyn Transport>> {
        match self {
            Stream::Tcp(s) => {
                s.set_nodelay(true)
                    .map_err(|e| Error::io("setting TCP_NODELAY", e))?;
                s.set_read_timeout(None)
                    .map_err(|e| Error::io("clearing the handshake timeout", e))?;
                Ok(Box::new(TcpTransport(s)))
            }
            Stream::Unix(s) => Ok(Box::new(if active {
                shm::ShmTransport::create(s)?
            } else {
                shm::ShmTransport::receive(s)?
            })),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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

pub(crate) struct Listener {
    socket: Socket,
    local: SocketAddr,
    shared: Arc<ListenerShared>,
    /// Readable when the socket has a connection waiting or the doorbell rang.
    readiness: Epoll,
    engine: Arc<Engine>,
}

impl Listener {
    pub(super) fn bind(engine: Arc<Engine>, addr: SocketAddr, medium: Medium) -> Result<Listener> {
        let (socket, local) = if medium == Medium::Shm {
            let (socket, local) = shm::bind(addr)?;
            socket
                .set_nonblocking(true)
                .map_err(|e| Error::io("making the listener non-blocking", e))?;
            (Socket::Unix(socket), local)
        } else {
            let socket =
                TcpListener::bind(addr).map_err(|e| Error::io(format!("listen on {addr}"), e))?;
            socket
                .set_nonblocking(true)
                .map_err(|e| Error::io("making the listener non-blocking", e))?;
            let local = socket
                .local_addr()
                .map_err(|e| Error::io("listener address", e))?;
            (Socket::Tcp(socket), local)
        };
        let shared = Arc::new(ListenerShared {
            events: Mutex::new(VecDeque::new()),
            doorbell: EventFd::new().map_err(|e| Error::io("eventfd for a listener", e))?,
        });
        let readiness = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| Error::io("epoll_create for a listener", e.into()))?;
        for fd in [socket.fd(), shared.doorbell.fd()] {
            readiness
                .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, 0))
                .map_err(|e| Error::io("epoll_ctl for a listener", e.into()))?;
        }
        Ok(Listener {
            socket,
            local,
            shared,
            readiness,
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
            match self.socket.accept(self.local) {
                Ok((stream, peer)) => match self.read_request(stream, peer) {
                    Ok(request) => return Ok(Some(Event::ConnectRequest(request))),
                    Err(e) => tracing::warn!("ignored a connection attempt from {peer}: {e}"),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = match deadline {
                        None => None,
                        Some(d) => match d.checked_duration_since(Instant::now()) {
                            Some(left) => Some(left),
                            None => return Ok(None),
                        },
                    };
                    wait_readable(&[self.socket.fd(), self.shared.doorbell.fd()], left)
                        .map_err(|e| Error::io("waiting for connection requests", e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(format!("accept on {}", self.local), e)),
            }
        }
    }

    fn read_request(&self, mut stream: Stream, peer: SocketAddr) -> Result<ConnectRequest> {
        let io_err = |e| Error::io(format!("connection request from {peer}"), e);
        stream.set_nonblocking(false).map_err(io_err)?;
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(io_err)?;
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).map_err(io_err)?;
        if head[..4] != MAGIC {
            return Err(Error::Protocol(format!(
                "{peer} does not speak the rdmalib tcp protocol"
            )));
        }
        let version = u16::from_le_bytes([head[4], head[5]]);
        if version != VERSION {
            let _ = reply(&mut stream, BAD_VERSION, &[]);
            return Err(Error::Protocol(format!(
                "{peer} speaks tcp-provider protocol version {version}, this build speaks {VERSION}"
            )));
        }
        let len = u16::from_le_bytes([head[6], head[7]]) as usize;
        if len > MAX_CONNECT_PRIVATE_DATA {
            return Err(Error::Protocol(format!(
                "{peer} sent {len} bytes of private data"
            )));
        }
        let mut private_data = vec![0; len];
        stream.read_exact(&mut private_data).map_err(io_err)?;
        Ok(ConnectRequest {
            stream: Some(stream),
            peer,
            private_data: padded_private_data(private_data, MAX_CONNECT_PRIVATE_DATA),
            listener: Arc::downgrade(&self.shared),
            engine: self.engine.clone(),
        })
    }
}

fn reply(stream: &mut Stream, status: u8, data: &[u8]) -> io::Result<()> {
    let mut msg = Vec::with_capacity(9 + data.len());
    msg.extend_from_slice(&MAGIC);
    msg.extend_from_slice(&VERSION.to_le_bytes());
    msg.push(status);
    msg.extend_from_slice(&(data.len() as u16).to_le_bytes());
    msg.extend_from_slice(data);
    stream.write_all(&msg)
}

pub(crate) struct ConnectRequest {
    stream: Option<Stream>,
    peer: SocketAddr,
    private_data: Vec<u8>,
    listener: Weak<ListenerShared>,
    engine: Arc<Engine>,
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
        qp: &QpSpec<Arc<Cq>>,
        private_data: &[u8],
    ) -> Result<Connection> {
        let mut stream = self.stream.take().ok_or_else(|| {
            Error::InvalidArgument("the connect request was already answered".into())
        })?;
        reply(&mut stream, ACCEPT, private_data)
            .map_err(|e| Error::io(format!("accepting {}", self.peer), e))?;
        let data = std::mem::take(&mut self.private_data);
        let transport = stream.into_transport(false)?;
        let shared = Shared::new(transport, self.peer, data, pd, qp, &self.engine)?;
        shared.set_listener(self.listener.clone());
        if let Some(listener) = self.listener.upgrade() {
            listener.push(Event::Established(shared.qp_num));
        }
        Ok(Connection::new(shared))
    }

    pub(crate) fn reject(mut self, private_data: &[u8]) -> Result<()> {
        if let Some(mut stream) = self.stream.take() {
            reply(&mut stream, REJECT, private_data)
                .map_err(|e| Error::io(format!("rejecting {}", self.peer), e))?;
        }
        Ok(())
    }
}

impl Drop for ConnectRequest {
    fn drop(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            let _ = reply(&mut stream, REJECT, &[]);
        }
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
    let mut stream = if medium == Medium::Shm {
        Stream::Unix(shm::connect(addr)?)
    } else {
        let stream =
            TcpStream::connect_timeout(&addr, timeout).map_err(|e| Error::io(what(), e))?;
        stream.set_nodelay(true).map_err(|e| Error::io(what(), e))?;
        Stream::Tcp(stream)
    };
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| Error::io(what(), e))?;
    let mut msg = Vec::with_capacity(8 + private_data.len());
    msg.extend_from_slice(&MAGIC);
    msg.extend_from_slice(&VERSION.to_le_bytes());
    msg.extend_from_slice(&(private_data.len() as u16).to_le_bytes());
    msg.extend_from_slice(private_data);
    stream.write_all(&msg).map_err(|e| Error::io(what(), e))?;
    let mut head = [0u8; 9];
    stream
        .read_exact(&mut head)
        .map_err(|e| Error::io(format!("waiting for {addr} to answer"), e))?;
    if head[..4] != MAGIC {
        return Err(Error::Protocol(format!(
            "{addr} does not speak the rdmalib tcp protocol"
        )));
    }
    let version = u16::from_le_bytes([head[4], head[5]]);
    let len = u16::from_le_bytes([head[7], head[8]]) as usize;
    let (accepted, max) = match head[6] {
        ACCEPT => (true, MAX_ACCEPT_PRIVATE_DATA),
        REJECT => (false, MAX_REJECT_PRIVATE_DATA),
        BAD_VERSION => {
            return Err(Error::Protocol(format!(
                "{addr} speaks tcp-provider protocol version {version}, this build speaks {VERSION}"
            )));
        }
        other => {
            return Err(Error::Protocol(format!(
                "{addr} answered with unknown status {other}"
            )));
        }
    };
    if len > max {
        return Err(Error::Protocol(format!(
            "{addr} answered with {len} bytes of private data; at most {max} are allowed"
        )));
    }
    let mut data = vec![0; len];
    stream
        .read_exact(&mut data)
        .map_err(|e| Error::io(format!("answer from {addr}"), e))?;
    let data = padded_private_data(data, max);
    if !accepted {
        return Err(Error::Rejected { private_data: data });
    }
    let transport = stream.into_transport(true)?;
    Ok(Connection::new(Shared::new(
        transport, addr, data, pd, qp, engine,
    )?))
}
