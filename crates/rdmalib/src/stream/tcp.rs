//! The `tcp` provider's byte transport: a connected TCP socket (non-blocking per call).

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use super::sys::{self, RawIov};
use super::transport::Transport;

/// The `tcp` provider's transport: a connected, non-blocking-by-flags TCP socket.
pub(super) struct TcpTransport(pub TcpStream);

impl Transport for TcpTransport {
    unsafe fn recv(&self, ptr: *mut u8, len: usize) -> io::Result<usize> {
        // SAFETY: forwarded from the caller.
        unsafe { sys::recv_raw(self.0.as_fd(), ptr, len) }
    }

    unsafe fn send(&self, iov: &[RawIov]) -> io::Result<usize> {
        // SAFETY: forwarded from the caller.
        unsafe { sys::send_raw(self.0.as_fd(), iov) }
    }

    fn shutdown_write(&self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }

    fn readiness_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    fn wait_writable(&self, timeout: Duration) {
        sys::wait_writable(self.0.as_fd(), timeout);
    }
}
