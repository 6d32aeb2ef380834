//! The raw system calls of the tcp provider, fenced: socket I/O straight from and into
//! registered memory, and eventfds.
//!
//! Callers pass raw pointers that lie inside a registered region which stays alive (its
//! entry's `alive` read lock is held, or the pointer came from a checked `RawSge` during the
//! post call). No Rust reference to registered memory is ever created here, because a peer may
//! write into it concurrently.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// One piece of an outgoing frame.
pub(super) struct RawIov {
    pub ptr: *const u8,
    pub len: usize,
}

/// Receives up to `len` bytes into `ptr` without blocking. `Ok(0)` is end of stream.
///
/// # Safety
///
/// `ptr..ptr+len` must be valid for writes for the duration of the call.
pub(super) unsafe fn recv_raw(fd: BorrowedFd<'_>, ptr: *mut u8, len: usize) -> io::Result<usize> {
    // SAFETY: the caller guarantees the destination range; recv writes at most `len` bytes.
    let n = unsafe { libc::recv(fd.as_raw_fd(), ptr.cast(), len, libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Sends as much of `iov` as the socket takes without blocking; returns the bytes sent.
///
/// # Safety
///
/// Every `ptr..ptr+len` in `iov` must be valid for reads for the duration of the call.
pub(super) unsafe fn send_raw(fd: BorrowedFd<'_>, iov: &[RawIov]) -> io::Result<usize> {
    let mut vecs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 4];
    let count = iov.len().min(vecs.len());
    for (v, piece) in vecs.iter_mut().zip(iov) {
        *v = libc::iovec {
            iov_base: piece.ptr as *mut _,
            iov_len: piece.len,
        };
    }
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = vecs.as_mut_ptr();
    msg.msg_iovlen = count as _;
    // SAFETY: msg points to `count` iovecs over ranges the caller guarantees readable.
    let n = unsafe {
        libc::sendmsg(
            fd.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A non-blocking eventfd used as a doorbell.
pub(super) struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adopts an eventfd received from a peer.
    pub fn from_owned(fd: OwnedFd) -> EventFd {
        EventFd(fd)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.0.as_fd()
    }

    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a local u64. A full counter (EAGAIN) is still signalled.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Consumes pending signals; returns whether there were any.
    pub fn drain(&self) -> bool {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a local u64.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) == 8 }
    }

    /// Waits until signalled or `timeout` passes; returns whether it was signalled (and
    /// consumes the signal).
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        if wait_readable(&[self.fd()], timeout)? {
            Ok(self.drain())
        } else {
            Ok(false)
        }
    }
}

/// Waits until one of `fds` is readable (or hung up) or `timeout` passes.
pub(super) fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(t) => PollTimeout::try_from(t.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX),
    };
    loop {
        match poll(&mut pfds, timeout) {
            Ok(n) => return Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until `fd` is writable or readable, for at most `timeout`.
pub(super) fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut pfd = [PollFd::new(fd, PollFlags::POLLOUT | PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(timeout.as_millis() as i32).unwrap_or(PollTimeout::MAX);
    let _ = poll(&mut pfd, ms);
}
