//! Host-supplied linear memory: one fixed mapping per executor thread, reused by every
//! instance that thread creates.
//!
//! wasmtime asks the engine's one [`MemoryCreator`] for each instance's memory. The creator
//! ([`ThreadMemoryCreator`]) hands out the mapping the instantiating thread selected just before
//! with [`select`], so the linear memory of every instance of that thread lives at the same
//! address:
//!
//! ```text
//! base                     buffers_start                       buffers_end
//!  │ the module's own memory │ input buffer │ output buffer │ grown by the module … │ PROT_NONE
//!  │ zeroed for each instance│  registered, kept as is across instances            │
//! ```
//!
//! - `[0, buffers_start)`: the module's initial memory (at least one wasm page, so that no
//!   buffer sits at the null address). Zeroed whenever a new instance takes the memory; the
//!   instance's data segments are then copied in by wasmtime (`memory_init_cow(false)`).
//! - `[buffers_start, buffers_end)`: the host's buffer pages. Readable and writable from the
//!   moment the thread memory exists until it is dropped, never zeroed, never protected: they
//!   are registered with the RDMA layer and peers write them at any time. The sandbox grows
//!   each new instance's memory over them right after instantiation.
//! - Beyond `buffers_end`: pages the module grows itself. Discarded and made inaccessible again
//!   when a new instance takes the memory.
//!
//! Between instantiation and the host's growth, the instance's memory ends at `buffers_start`
//! while the buffer pages are still accessible: an access there would not trap. No wasm code
//! runs in that window except a start function, and the pages become that module's memory
//! right after anyway, so it breaks no isolation.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use wasmtime::{LinearMemory, MemoryCreator, MemoryType};

use super::mmap::Reservation;

/// Address space reserved per thread for the linear memory (also given to wasmtime as
/// `Config::memory_reservation`): all of a 32-bit memory, so growth never moves it and
/// compiled code needs no explicit bounds checks.
pub(crate) const RESERVATION: usize = 1 << 32;
/// Guard region after (and before) the linear memory (wasmtime's `Config::memory_guard_size`).
pub(crate) const GUARD: usize = 32 << 20;

/// One executor thread's linear memory, shared by its successive instances.
#[derive(Debug)]
pub(crate) struct ThreadMemory {
    reservation: Reservation,
    /// The module's initial memory size in bytes: what wasmtime asks for.
    module_len: usize,
    /// Where the buffers start: `module_len`, or one wasm page if the module has none.
    buffers_start: usize,
    /// Where the buffer pages end.
    buffers_end: usize,
    /// How many bytes from `base` are currently readable and writable (at least
    /// `buffers_end`). Changed only by the holder of `in_use`.
    accessible: AtomicUsize,
    /// Whether a live [`HostMemory`] (an instance) uses the mapping.
    in_use: AtomicBool,
}

impl ThreadMemory {
    /// Reserves a memory for a module whose memory starts at `module_len` bytes, with buffer
    /// pages over `[buffers_start, buffers_end)`, which become accessible right away.
    pub(crate) fn new(
        module_len: usize,
        buffers_start: usize,
        buffers_end: usize,
    ) -> std::io::Result<Arc<ThreadMemory>> {
        assert!(module_len <= buffers_start && buffers_start <= buffers_end);
        let reservation = Reservation::new(RESERVATION, GUARD)?;
        if buffers_end > reservation.usable() {
            return Err(std::io::Error::other(format!(
                "{buffers_end} bytes of linear memory do not fit the {} byte reservation",
                reservation.usable()
            )));
        }
        reservation.make_accessible(0..buffers_end)?;
        Ok(Arc::new(ThreadMemory {
            reservation,
            module_len,
            buffers_start,
            buffers_end,
            accessible: AtomicUsize::new(buffers_end),
            in_use: AtomicBool::new(false),
        }))
    }

    /// The fixed address of linear memory offset 0.
    pub(crate) fn base(&self) -> *mut u8 {
        self.reservation.base()
    }

    /// Hands the memory to a new instance: checks the request, then resets everything but the
    /// buffer pages.
    fn attach(
        self: &Arc<Self>,
        ty: &MemoryType,
        minimum: usize,
        reserved: Option<usize>,
        guard: usize,
    ) -> Result<HostMemory, String> {
        if ty.is_shared() || ty.is_64() {
            return Err("rFaaS supports only unshared 32-bit linear memories".into());
        }
        if reserved.is_some_and(|r| r > self.reservation.usable())
            || guard > self.reservation.guard()
        {
            return Err(format!(
                "wasmtime asks for {reserved:?} bytes with a {guard} byte guard, more than the \
                 {} byte reservation with a {} byte guard",
                self.reservation.usable(),
                self.reservation.guard()
            ));
        }
        if minimum != self.module_len {
            return Err(format!(
                "a memory of {minimum} bytes was requested, but this thread's memory was \
                 prepared for the module's {} bytes",
                self.module_len
            ));
        }
        if self.in_use.swap(true, Ordering::Acquire) {
            return Err(
                "the thread's linear memory is already in use: rFaaS supports modules \
                        with exactly one memory"
                    .into(),
            );
        }
        // From here on we are the only user of the memory until the HostMemory drops.
        let memory = HostMemory {
            memory: self.clone(),
            size: minimum,
        };
        self.reset()
            .map_err(|e| format!("resetting the linear memory: {e}"))?;
        Ok(memory)
    }

    /// Zeroes the module's part and drops the pages the module grew beyond the buffers.
    /// Called by the holder of `in_use` before the instance uses the memory.
    fn reset(&self) -> std::io::Result<()> {
        // SAFETY: `in_use` is held and no instance has this memory yet, so no wasm code runs on
        // it and nobody holds references into it; `[0, buffers_start)` is not registered (peers
        // write only the buffer pages).
        unsafe { self.reservation.discard(0..self.buffers_start)? };
        let accessible = self.accessible.load(Ordering::Relaxed);
        if accessible > self.buffers_end {
            // SAFETY: as above; these pages lie beyond the registered buffers.
            unsafe {
                self.reservation
                    .make_inaccessible(self.buffers_end..accessible)?
            };
            self.accessible.store(self.buffers_end, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Makes the first `len` bytes accessible (no-op for what already is).
    fn ensure_accessible(&self, len: usize) -> std::io::Result<()> {
        let accessible = self.accessible.load(Ordering::Relaxed);
        if len > accessible {
            let end = len.next_multiple_of(super::mmap::host_page_size());
            self.reservation.make_accessible(accessible..end)?;
            self.accessible.store(end, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The linear memory of one instance: a view of its thread's [`ThreadMemory`].
struct HostMemory {
    memory: Arc<ThreadMemory>,
    /// The wasm-visible size in bytes.
    size: usize,
}

impl Drop for HostMemory {
    fn drop(&mut self) {
        self.memory.in_use.store(false, Ordering::Release);
    }
}

// SAFETY: the base is fixed and page aligned (a Reservation's usable part starts on a page);
// the size is always a multiple of the 64 KiB wasm page; everything in `[size, capacity)` that
// is not accessible is PROT_NONE, and the capacity is followed by a `GUARD`-byte PROT_NONE guard
// region, at least the guard wasmtime asked for (checked in `attach`). Growth never moves the
// base. The only memory touched outside wasmtime is the registered buffer pages, which peers
// write with raw copies (no Rust references), as wasm's own racy memory accesses would.
unsafe impl LinearMemory for HostMemory {
    fn byte_size(&self) -> usize {
        self.size
    }

    fn byte_capacity(&self) -> usize {
        self.memory.reservation.usable()
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        if new_size > self.byte_capacity() {
            wasmtime::bail!(
                "cannot grow the linear memory to {new_size} bytes: it is reserved for {}",
                self.byte_capacity()
            );
        }
        self.memory
            .ensure_accessible(new_size)
            .map_err(|e| wasmtime::format_err!("growing the linear memory: {e}"))?;
        self.size = self.size.max(new_size);
        Ok(())
    }

    fn as_ptr(&self) -> *mut u8 {
        self.memory.base()
    }
}

thread_local! {
    /// The memory the next instantiation on this thread gets.
    static SELECTED: RefCell<Option<Arc<ThreadMemory>>> = const { RefCell::new(None) };
}

/// Selects `memory` for instantiations on this thread until the guard drops.
pub(crate) fn select(memory: &Arc<ThreadMemory>) -> Selected {
    SELECTED.with(|s| *s.borrow_mut() = Some(memory.clone()));
    Selected(())
}

/// Clears the thread's selected memory when dropped.
pub(crate) struct Selected(());

impl Drop for Selected {
    fn drop(&mut self) {
        SELECTED.with(|s| s.borrow_mut().take());
    }
}

/// The engine's memory creator: gives each instance the memory its thread selected.
pub(crate) struct ThreadMemoryCreator;

// SAFETY: every memory returned is a HostMemory, whose LinearMemory contract is upheld above;
// it is zero-filled up to `minimum` (reset) and handed to one instance at a time (`in_use`).
unsafe impl MemoryCreator for ThreadMemoryCreator {
    fn new_memory(
        &self,
        ty: MemoryType,
        minimum: usize,
        _maximum: Option<usize>,
        reserved_size_in_bytes: Option<usize>,
        guard_size_in_bytes: usize,
    ) -> Result<Box<dyn LinearMemory>, String> {
        let memory = SELECTED.with(|s| s.borrow().clone()).ok_or_else(|| {
            "no linear memory selected on this thread: rFaaS instantiates only through its \
             wasm sandbox"
                .to_string()
        })?;
        let memory = memory.attach(&ty, minimum, reserved_size_in_bytes, guard_size_in_bytes)?;
        Ok(Box::new(memory))
    }
}
