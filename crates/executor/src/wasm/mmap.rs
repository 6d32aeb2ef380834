//! Raw virtual memory for the wasm linear memories: the only place that calls `mmap`,
//! `mprotect`, `madvise` and `munmap`.
//!
//! # Invariants
//!
//! A [`Reservation`] owns one anonymous private mapping laid out as
//!
//! ```text
//! start                base                              base + usable
//!   │ guard (PROT_NONE)  │ accessible (RW) │ PROT_NONE ... │ guard (PROT_NONE) │
//! ```
//!
//! 1. The mapping is created once, in [`Reservation::new`], and unmapped only in `Drop`: while
//!    the `Reservation` lives, `base` never changes and every byte of the mapping stays mapped.
//!    Nobody else maps over, remaps or unmaps any part of it.
//! 2. Both guard regions stay `PROT_NONE` forever; only `[base, base + usable)` changes
//!    protection, in whole host pages, through the methods below.
//! 3. [`make_accessible`](Reservation::make_accessible) only adds access and leaves the
//!    contents alone, so it is safe at any time. Taking access away or discarding contents
//!    ([`discard`](Reservation::discard), [`make_inaccessible`](Reservation::make_inaccessible))
//!    is `unsafe`: the caller guarantees that nothing (a wasm instance, a Rust reference, a
//!    registered region a peer may write) uses the range at that moment.
//!
//! The mapping is `MAP_NORESERVE`: the reservation costs address space, not memory, and pages
//! get physical memory only when first touched.

use std::io;
use std::ops::Range;
use std::ptr::NonNull;

/// The host's page size.
pub(crate) fn host_page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|s| *s > 0)
        .unwrap_or(4096)
}

/// An address-space reservation with guard regions before and after it (see the module
/// documentation for its invariants).
pub(crate) struct Reservation {
    /// First byte of the whole mapping (the leading guard).
    start: NonNull<u8>,
    /// Length of the whole mapping.
    total: usize,
    /// Length of each guard region.
    guard: usize,
    /// Length of the usable range that starts at `start + guard`.
    usable: usize,
}

// SAFETY: a Reservation is an address range; its methods are system calls on that range, which
// are thread-safe, and it hands out no references into the memory.
unsafe impl Send for Reservation {}
// SAFETY: as for Send.
unsafe impl Sync for Reservation {}

impl Reservation {
    /// Reserves `usable` bytes with `guard` bytes of guard on either side, all inaccessible.
    /// Both sizes are rounded up to whole host pages.
    pub(crate) fn new(usable: usize, guard: usize) -> io::Result<Reservation> {
        let page = host_page_size();
        let usable = usable.next_multiple_of(page);
        let guard = guard.next_multiple_of(page);
        let total = guard
            .checked_mul(2)
            .and_then(|g| g.checked_add(usable))
            .ok_or_else(|| io::Error::other("reservation size overflows"))?;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks: it cannot alias any
        // existing memory. The result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave 0"))?;
        Ok(Reservation {
            start,
            total,
            guard,
            usable,
        })
    }

    /// The first usable byte: the base of the linear memory. Fixed for the reservation's life.
    pub(crate) fn base(&self) -> *mut u8 {
        // SAFETY: `guard < total`, so the result is inside the mapping.
        unsafe { self.start.as_ptr().add(self.guard) }
    }

    /// Bytes usable after [`base`](Self::base) (a multiple of the host page size).
    pub(crate) fn usable(&self) -> usize {
        self.usable
    }

    /// Bytes of guard after the usable range (and before it).
    pub(crate) fn guard(&self) -> usize {
        self.guard
    }

    /// Makes `range` (offsets from `base`) readable and writable. Contents are unchanged
    /// (zero for pages never touched).
    pub(crate) fn make_accessible(&self, range: Range<usize>) -> io::Result<()> {
        let (ptr, len) = self.checked(range)?;
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the range is inside the usable part of our own mapping (checked) and page
        // aligned; adding access cannot invalidate anything that uses the range.
        let rc = unsafe { libc::mprotect(ptr.cast(), len, libc::PROT_READ | libc::PROT_WRITE) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Drops the contents of `range`: the pages read as zero afterwards and give their
    /// physical memory back. Protection is unchanged.
    ///
    /// # Safety
    ///
    /// Nothing may access the range concurrently, and no Rust reference into it may be live:
    /// no wasm instance runs on this memory and no registered region covers the range.
    pub(crate) unsafe fn discard(&self, range: Range<usize>) -> io::Result<()> {
        let (ptr, len) = self.checked(range)?;
        if len == 0 {
            return Ok(());
        }
        // SAFETY: inside our own private anonymous mapping (checked) and page aligned; for such
        // a mapping MADV_DONTNEED makes the next access see zero-filled pages. Nobody uses the
        // range (the caller's contract), so nobody observes the change.
        let rc = unsafe { libc::madvise(ptr.cast(), len, libc::MADV_DONTNEED) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Discards the contents of `range` and makes it inaccessible again.
    ///
    /// # Safety
    ///
    /// As for [`discard`](Self::discard).
    pub(crate) unsafe fn make_inaccessible(&self, range: Range<usize>) -> io::Result<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.discard(range.clone())? };
        let (ptr, len) = self.checked(range)?;
        if len == 0 {
            return Ok(());
        }
        // SAFETY: inside our own mapping (checked) and page aligned; nobody uses the range (the
        // caller's contract), so no access can fault because of it.
        let rc = unsafe { libc::mprotect(ptr.cast(), len, libc::PROT_NONE) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The pointer and length of `range`, checked to be page aligned and inside the usable part.
    fn checked(&self, range: Range<usize>) -> io::Result<(*mut u8, usize)> {
        let page = host_page_size();
        if range.start > range.end
            || range.end > self.usable
            || !range.start.is_multiple_of(page)
            || !range.end.is_multiple_of(page)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "range {range:?} is not page aligned inside the {} usable bytes",
                    self.usable
                ),
            ));
        }
        // SAFETY: `range.start <= usable`, so the pointer is inside the mapping (or one past
        // the usable part, which is still inside it: the trailing guard follows).
        Ok((
            unsafe { self.base().add(range.start) },
            range.end - range.start,
        ))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and nothing refers to it any more: its owners (the thread
        // memory, hence every linear memory and registered region over it) are gone.
        let rc = unsafe { libc::munmap(self.start.as_ptr().cast(), self.total) };
        if rc != 0 {
            tracing::warn!(
                "munmap of a wasm memory reservation failed: {}",
                io::Error::last_os_error()
            );
        }
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("base", &self.base())
            .field("usable", &self.usable)
            .field("guard", &self.guard)
            .finish()
    }
}
