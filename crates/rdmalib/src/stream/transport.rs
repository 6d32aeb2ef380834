//! The byte transport under the frame engine ([`super::conn`]): a reliable, ordered,
//! non-blocking byte stream. The frame logic (RC semantics, checks, acks, teardown) is the same
//! for every transport; only how bytes move differs: a TCP socket for the `tcp` provider ([`super::tcp`]), a
//! pair of shared-memory rings for the `shm` provider ([`super::shm`]).

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use super::sys::RawIov;

/// A reliable non-blocking byte stream. Sends are serialised by the caller (one sender at a
/// time) and so are receives (one receiver at a time).
pub(super) trait Transport: Send + Sync {
    /// Non-blocking read into `ptr..ptr+len`; `Ok(0)` means the peer closed; `WouldBlock` when
    /// nothing is waiting.
    ///
    /// # Safety
    ///
    /// `ptr..ptr+len` must be valid for writes for the duration of the call.
    unsafe fn recv(&self, ptr: *mut u8, len: usize) -> io::Result<usize>;

    /// Whether small frames should be read through the frame engine's staging buffer, many
    /// at a time: `true` where a read costs a system call (tcp). Where it costs a few loads
    /// (shm), the engine reads each header alone and copies every payload straight from the
    /// transport into its target, one copy fewer.
    fn stages_frames(&self) -> bool {
        true
    }

    /// Non-blocking vectored write; returns the bytes taken; `WouldBlock` when full.
    ///
    /// # Safety
    ///
    /// Every piece of `iov` must be valid for reads for the duration of the call.
    unsafe fn send(&self, iov: &[RawIov]) -> io::Result<usize>;

    /// No more bytes will be sent; the peer's `recv` returns `Ok(0)` once it has read the rest.
    fn shutdown_write(&self);

    /// The descriptor the engine watches with `EPOLLIN` for data (only while someone waits).
    fn readiness_fd(&self) -> BorrowedFd<'_>;

    /// The descriptor the engine always watches for the peer hanging up (`EPOLLRDHUP`).
    /// `None`: the readiness descriptor reports hang-ups itself.
    fn hangup_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Waits until writable or readable, at most `timeout` (used when the send side is full).
    fn wait_writable(&self, timeout: Duration);

    /// Whether the readiness descriptor must report new data: `true` while a blocking waiter
    /// or the engine relies on it; `false` for hot polling (the shm writer then skips the
    /// doorbell, so the data path makes no system call).
    fn want_wakeups(&self, _on: bool) {}

    /// Called by the engine when one of the descriptors fired, before it makes progress:
    /// consume doorbells, notice a hang-up.
    fn on_event(&self) {}
}
