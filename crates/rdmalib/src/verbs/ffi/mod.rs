//! Every raw libibverbs / librdmacm call of the verbs provider, fenced in one module.
//!
//! Each type below owns exactly one C object and holds `Arc`s on the objects it depends on,
//! so a parent is never destroyed before its children:
//!
//! | type           | owns                                             | destroyed by                          | keeps alive |
//! |----------------|--------------------------------------------------|---------------------------------------|-------------|
//! | [`Device`]     | an `rdma_get_devices` list and one context in it | `rdma_free_devices`                   | —           |
//! | [`Pd`]         | `ibv_pd`                                         | `ibv_dealloc_pd`                      | `Device`    |
//! | [`Mr`]         | `ibv_mr`                                         | `ibv_dereg_mr`                        | `Pd`        |
//! | [`Cq`]         | `ibv_cq` and its own `ibv_comp_channel`          | `ibv_destroy_cq`, then the channel    | `Device`    |
//! | [`EventChannel`] | `rdma_event_channel` (fd non-blocking)         | `rdma_destroy_event_channel`          | —           |
//! | [`CmId`]       | `rdma_cm_id` and, after `create_qp`, its RC QP   | `rdma_destroy_qp`, `rdma_destroy_id`  | `EventChannel`; the QP's `Pd` and `Cq`s |
//!
//! Invariants the `unsafe` blocks rely on:
//!
//! 1. A handle's pointer is non-null, came from the matching create call and is destroyed
//!    exactly once, in `Drop`. `Drop::drop` runs before the fields drop, so the parents held
//!    in fields outlive the object.
//! 2. The device context comes from `rdma_get_devices`, i.e. it is the context librdmacm
//!    itself uses; `rdma_create_qp` requires the PD to belong to the cm id's context.
//! 3. libibverbs and librdmacm are thread-safe: posting, polling, arming and modifying one
//!    QP/CQ from several threads is allowed (providers lock internally). The fields we read
//!    back from C structs (`lkey`, `rkey`, `qp_num`, `fd`, addresses) are written by the call
//!    that created the object, or by bind/resolve before the value is shared.
//! 4. A CM event is copied and acknowledged inside [`EventChannel::next_event`] before it is
//!    looked at, so no event is ever held unacknowledged: `rdma_destroy_id`, which waits for
//!    the acknowledgement of every event reported for its id, never waits on us.
//! 5. The buffer of a work request is a [`RawSge`] made from a checked `Sge` of a live
//!    registered region. Deregistering a region revokes the NIC's access, so a request that
//!    outlives its region fails with a protection error instead of touching freed memory.

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::os::raw::{c_int, c_void};
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdma_mummy_sys as sys;
use sys::rdma_cm_event_type as ev;

use crate::error::{Error, Result};

mod cm;
mod cq;
mod device;

use crate::types::{Access, Completion, Opcode, RawSge, RemoteBuffer, SendFlags, Status};

pub(super) use cm::{CmEvent, CmId, ConnParams, EventChannel, QpCaps, SendOp, event_name};
pub(crate) use cq::Cq;
pub(super) use device::Device;
pub(crate) use device::{Mr, Pd};

/// An error for a call that reported failure through `errno`. `errno` is read before `what`
/// runs, so formatting the message cannot clobber it.
fn errno_error(what: impl FnOnce() -> String) -> Error {
    let source = io::Error::last_os_error();
    Error::io(what(), source)
}

/// Checks an ibverbs return value: 0, or the errno value (a few old calls return -1 and set
/// `errno`).
fn check_ibv(ret: c_int, what: impl FnOnce() -> String) -> Result<()> {
    match ret {
        0 => Ok(()),
        r if r > 0 => Err(Error::io(what(), io::Error::from_raw_os_error(r))),
        _ => Err(errno_error(what)),
    }
}

/// Checks a librdmacm return value: 0, or -1 with `errno` set.
fn check_cm(ret: c_int, what: impl FnOnce() -> String) -> Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(errno_error(what))
    }
}

fn clamp_u8(v: c_int) -> u8 {
    u8::try_from(v.max(0)).unwrap_or(u8::MAX)
}

fn clamp_u32(v: c_int) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

// Small libc helpers

/// When `timeout` (`None`: never) runs out; `None` also for timeouts too large to represent.
pub(super) fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL on a descriptor that is open for the duration of the call.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFL only changes the descriptor's status flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// poll(2) for readability of `fds` for up to `timeout` (`None`: forever), retrying on EINTR.
/// Errors and hang-ups count as readable, so the following read reports them.
pub(super) fn poll_readable<const N: usize>(
    fds: [RawFd; N],
    timeout: Option<Duration>,
) -> io::Result<[bool; N]> {
    let deadline = deadline_after(timeout);
    let mut pfds = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                c_int::try_from(left.as_micros().div_ceil(1000)).unwrap_or(c_int::MAX)
            }
        };
        // SAFETY: `pfds` is an array of N initialised pollfd that poll may write.
        let ret = unsafe { libc::poll(pfds.as_mut_ptr(), N as libc::nfds_t, ms) };
        if ret >= 0 {
            return Ok(pfds.map(|p| {
                p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
            }));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
