//! Page-aligned buffers that registered memory regions own.
//!
//! This is one of the few places with raw memory: an [`Allocation`] is an anonymous shared
//! mapping of a memfd. It lives until dropped; remote peers reach it only through a memory
//! region registered over it, whose bounds the providers check.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::error::{Error, Result};

/// A zero-initialised, page-aligned, memfd-backed mapping.
///
/// Invariant: `ptr` points to a mapping of exactly `len` bytes (at least one page) that stays
/// valid and does not move until `Drop` unmaps it.
pub(crate) struct Allocation {
    ptr: NonNull<u8>,
    len: usize,
    _memfd: OwnedFd,
}

// SAFETY: the mapping is plain memory owned by this value; sharing the pointer across threads
// is what registered memory is for, and every access through it goes through raw-pointer
// copies whose synchronisation is the caller's (completions order them, as in verbs).
unsafe impl Send for Allocation {}
// SAFETY: see `Send`; `&Allocation` only hands out the pointer and the length.
unsafe impl Sync for Allocation {}

impl Allocation {
    /// Maps `len` bytes (rounded up to a page) of a new memfd.
    pub(crate) fn new(len: usize) -> Result<Allocation> {
        let page = page_size();
        let len = len.max(1).div_ceil(page) * page;
        // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new fd or -1.
        let fd = unsafe { libc::memfd_create(c"rdmalib-region".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::last_os("memfd_create for a memory region"));
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let size = libc::off_t::try_from(len)
            .map_err(|_| Error::InvalidArgument(format!("region of {len} bytes is too large")))?;
        // SAFETY: ftruncate on an fd we own.
        if unsafe { libc::ftruncate(memfd.as_raw_fd(), size) } != 0 {
            return Err(Error::last_os(format!(
                "sizing a memory region of {len} bytes"
            )));
        }
        // SAFETY: a new shared mapping of the memfd, which has exactly `len` bytes; we check
        // for MAP_FAILED before using the pointer.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                memfd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::last_os(format!(
                "mapping a memory region of {len} bytes"
            )));
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).expect("mmap never returns NULL on success");
        Ok(Allocation {
            ptr,
            len,
            _memfd: memfd,
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        // SAFETY: ptr/len describe the mapping made in `new`, unmapped exactly once here.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}
