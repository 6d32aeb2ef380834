//! The `shm` provider's byte transport: two shared-memory rings per connection, for processes
//! on one host. Everything above the bytes (frames, rkey/bounds/access checks, acks, atomics,
//! teardown) is the tcp provider's frame engine ([`super::conn`]), unchanged.
//!
//! # Connection management
//!
//! A listener is a Unix socket in the abstract namespace named after its address,
//! `\0rdmalib-shm/IP:PORT` (port 0: the first free port of the ephemeral range). The handshake
//! is the tcp provider's ([`super::handshake`]: magic, version, private data, accept/reject
//! with private data). The connecting side creates one memfd with two rings ([`ring`]) and
//! two eventfds, one doorbell per side, and passes all three with its request (`SCM_RIGHTS`),
//! so the accepting side never waits for them. Both map the memfd `MAP_SHARED`.
//!
//! # Doorbells
//!
//! Hot pollers never make a system call: a writer rings the peer's eventfd only when the peer's
//! `sleeping` flag is set, which the peer sets while its engine watches the connection for data
//! (a completion queue armed for a blocking wait, or background progress). See
//! [`ring::write`] and [`ring::set_sleeping`] for the fence protocol that keeps wake-ups from
//! being lost.
//!
//! # Hang-ups
//!
//! The Unix socket stays open for the connection's life and carries nothing after the
//! handshake. The engine watches it for `EPOLLRDHUP`: a graceful close (`shutdown_write` sets
//! the ring's `closed` flag and shuts the socket down) or the peer process dying both show up
//! there, and [`Transport::on_event`] then notes the peer is gone, so the receive path reports
//! end of stream once the ring is drained.
//!
//! # Copies
//!
//! Every byte is copied twice: the sender into the ring, the receiver out of the ring
//! straight into the checked target (the engine reads headers alone on this transport, see
//! [`Transport::stages_frames`], so no payload passes through its staging buffer). The two
//! copies of a large payload overlap: each side publishes its progress every 16 KiB.
//! DESIGN.md describes a single-copy design where registered regions are memfd-backed and
//! mapped by the peer, so a write is one memcpy into the peer's memory. That needs every
//! registered region to be memfd-backed, which wasm linear memory (unless supplied by a
//! host `MemoryCreator`) and `register_raw` memory are not, and it would move the rkey, bounds
//! and access checks to the writer's side. Rings keep all remote accesses going through the
//! receiver's checks and work for any registered memory.

mod ring;

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{self as unix, UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use super::sys::{EventFd, RawIov};
use super::transport::Transport;
use crate::error::{Error, Result};
use ring::Mapping;

/// How long a writer waiting for room in a full ring yields before it sleeps.
const YIELD_FOR: Duration = Duration::from_micros(200);

/// Ports tried for a listener bound to port 0.
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;

fn name(addr: SocketAddr) -> String {
    format!("rdmalib-shm/{addr}")
}

fn abstract_addr(addr: SocketAddr) -> io::Result<unix::SocketAddr> {
    unix::SocketAddr::from_abstract_name(name(addr).as_bytes())
}

/// Binds the listener's Unix socket; returns it with the address it answers to.
pub(super) fn bind(addr: SocketAddr) -> Result<(UnixListener, SocketAddr)> {
    let try_bind = |a: SocketAddr| UnixListener::bind_addr(&abstract_addr(a)?);
    if addr.port() != 0 {
        let l = try_bind(addr).map_err(|e| Error::io(format!("shm listen on {addr}"), e))?;
        return Ok((l, addr));
    }
    let span = (EPHEMERAL.end() - EPHEMERAL.start()) as u32 + 1;
    let start = std::process::id().wrapping_mul(2654435761) % span;
    for i in 0..span {
        let port = EPHEMERAL.start() + ((start + i) % span) as u16;
        let a = SocketAddr::new(addr.ip(), port);
        match try_bind(a) {
            Ok(l) => return Ok((l, a)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(Error::io(format!("shm listen on {a}"), e)),
        }
    }
    Err(Error::io(
        format!("shm listen on {addr}"),
        io::ErrorKind::AddrInUse.into(),
    ))
}

/// Connects to a listener's Unix socket; a listener on the unspecified address answers for
/// every IP.
pub(super) fn connect(addr: SocketAddr) -> Result<UnixStream> {
    let what = || format!("shm connect to {addr}");
    match UnixStream::connect_addr(&abstract_addr(addr).map_err(|e| Error::io(what(), e))?) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            let any = match addr {
                SocketAddr::V4(_) => SocketAddr::new([0, 0, 0, 0].into(), addr.port()),
                SocketAddr::V6(_) => SocketAddr::new([0u16; 8].into(), addr.port()),
            };
            UnixStream::connect_addr(&abstract_addr(any).map_err(|e| Error::io(what(), e))?)
                .map_err(|_| Error::io(what(), e))
        }
        Err(e) => Err(Error::io(what(), e)),
    }
}

/// One end of an shm connection.
pub(super) struct ShmTransport {
    /// The handshake socket, kept open as the hang-up detector.
    sock: UnixStream,
    map: Mapping,
    /// The ring this side writes (0 for the connecting side, 1 for the accepting side).
    tx: usize,
    /// The ring this side reads.
    rx: usize,
    /// Rung by the peer when it wrote into `rx` while this side was sleeping.
    own_bell: EventFd,
    /// The peer's doorbell.
    peer_bell: EventFd,
    /// The writer's copy of the `head` of `tx` ([`ring::write`]).
    tx_seen_head: AtomicU64,
    /// The Unix socket reported the peer gone.
    peer_gone: AtomicBool,
}

/// What the connecting side offers with its connection request: the shared memory and the
/// doorbells, passed with the request's bytes so the accepting side never waits for them.
pub(super) struct Offer {
    memfd: OwnedFd,
    map: Mapping,
    own_bell: EventFd,
    peer_bell: EventFd,
}

impl Offer {
    pub(super) fn new() -> Result<Offer> {
        let err = |e| Error::io("setting up shared memory for an shm connection", e);
        let (memfd, map) = Mapping::create().map_err(err)?;
        Ok(Offer {
            memfd,
            map,
            own_bell: EventFd::new().map_err(err)?,
            peer_bell: EventFd::new().map_err(err)?,
        })
    }

    /// Sends `bytes` (the connection request) with the memfd and both doorbells attached.
    pub(super) fn send_with(&self, sock: &UnixStream, bytes: &[u8]) -> io::Result<()> {
        let fds = [
            self.memfd.as_raw_fd(),
            self.own_bell.fd().as_raw_fd(),
            self.peer_bell.fd().as_raw_fd(),
        ];
        let iov = [IoSlice::new(bytes)];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let sent = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)?;
        if sent != bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the connection request did not fit the socket",
            ));
        }
        Ok(())
    }

    /// The connecting side's transport, once the peer accepted.
    pub(super) fn into_transport(self, sock: UnixStream) -> Result<ShmTransport> {
        ShmTransport::finish(sock, self.map, 0, self.own_bell, self.peer_bell)
    }
}

impl ShmTransport {
    /// The accepting side, from the descriptors that came with the request.
    pub(super) fn accept(sock: UnixStream, mut fds: Vec<OwnedFd>) -> Result<ShmTransport> {
        if fds.len() != 3 {
            return Err(Error::Protocol(format!(
                "the shm peer passed {} descriptors instead of 3",
                fds.len()
            )));
        }
        let own_bell = EventFd::from_owned(fds.pop().expect("3 fds"));
        let peer_bell = EventFd::from_owned(fds.pop().expect("3 fds"));
        let map = Mapping::open(&fds[0])
            .map_err(|e| Error::io("mapping the shm peer's shared memory", e))?;
        ShmTransport::finish(sock, map, 1, own_bell, peer_bell)
    }

    fn finish(
        sock: UnixStream,
        map: Mapping,
        tx: usize,
        own_bell: EventFd,
        peer_bell: EventFd,
    ) -> Result<ShmTransport> {
        sock.set_read_timeout(None)
            .and_then(|()| sock.set_nonblocking(true))
            .map_err(|e| Error::io("configuring an shm connection's socket", e))?;
        Ok(ShmTransport {
            sock,
            map,
            tx,
            rx: 1 - tx,
            own_bell,
            peer_bell,
            tx_seen_head: AtomicU64::new(0),
            peer_gone: AtomicBool::new(false),
        })
    }
}

impl Transport for ShmTransport {
    unsafe fn recv(&self, ptr: *mut u8, len: usize) -> io::Result<usize> {
        if len == 0 {
            return Ok(0);
        }
        // SAFETY: one reader per ring: the frame engine holds its `rx` lock; `ptr` from the
        // caller.
        match unsafe { ring::read(&self.map, self.rx, ptr, len) } {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if ring::closed(&self.map, self.rx) || self.peer_gone.load(Ordering::Acquire) {
                    // Bytes written before the close are published before the flag: one more
                    // look, then end of stream.
                    // SAFETY: as above.
                    match unsafe { ring::read(&self.map, self.rx, ptr, len) } {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                        other => other,
                    }
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    fn stages_frames(&self) -> bool {
        false
    }

    unsafe fn send(&self, iov: &[RawIov]) -> io::Result<usize> {
        if self.peer_gone.load(Ordering::Acquire) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        // SAFETY: one writer per ring: the frame engine holds its `tx` lock; `iov` from the
        // caller.
        let (n, ring_bell) = unsafe { ring::write(&self.map, self.tx, iov, &self.tx_seen_head)? };
        if ring_bell {
            self.peer_bell.signal();
        }
        Ok(n)
    }

    fn shutdown_write(&self) {
        ring::close(&self.map, self.tx);
        self.peer_bell.signal();
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
    }

    fn readiness_fd(&self) -> BorrowedFd<'_> {
        self.own_bell.fd()
    }

    fn hangup_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.sock.as_fd())
    }

    /// Yields while the reader makes room, which a reader that is copying out does within a
    /// chunk's copy; sleeps once it has made none for [`YIELD_FOR`], so a writer whose reader
    /// stopped reading does not spin.
    fn wait_writable(&self, timeout: Duration) {
        let start = Instant::now();
        while !ring::has_room(&self.map, self.tx) && !self.peer_gone.load(Ordering::Acquire) {
            let waited = start.elapsed();
            if waited >= timeout {
                return;
            }
            if waited < YIELD_FOR {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
                return;
            }
        }
    }

    fn want_wakeups(&self, on: bool) {
        if ring::set_sleeping(&self.map, self.rx, on) {
            // Bytes arrived before the flag was visible: the writer may not ring, so ring our
            // own doorbell and let the engine pick them up.
            self.own_bell.signal();
        }
    }

    fn on_event(&self) {
        self.own_bell.drain();
        let mut b = 0u8;
        // SAFETY: peeks at most one byte into a local; the socket carries nothing after the
        // handshake, so 0 means the peer shut down or died.
        let n = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                (&mut b as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        let gone = n == 0
            || (n < 0 && {
                let e = io::Error::last_os_error();
                !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                )
            });
        if gone {
            self.peer_gone.store(true, Ordering::Release);
        }
    }
}

/// Reads from `sock` into `buf` (blocking unless the socket is non-blocking), and any
/// descriptors that came with the bytes into `fds`. `Ok(0)` is end of stream.
pub(super) fn recv_with_fds(
    sock: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            for fd in received {
                // SAFETY: SCM_RIGHTS installed `fd` in this process for us; nobody else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok(msg.bytes)
}
