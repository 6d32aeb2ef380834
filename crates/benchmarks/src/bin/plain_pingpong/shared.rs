//! The one unsafe part of `plain_pingpong`: a shared anonymous mapping that a forked child
//! sees too, and the fork itself.
//!
//! Layout: one page of control words, each [`AtomicU64`] on its own cache line, then two
//! payload areas of `area` bytes each. Payload bytes are only touched through raw-pointer
//! copies, never references, because the other process maps the same pages.

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use anyhow::{Context as _, Result, ensure};
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
use nix::unistd::{ForkResult, fork};

const PAGE: usize = 4096;
const LINE: usize = 64;

/// A `MAP_SHARED | MAP_ANONYMOUS` mapping: after a fork, parent and child share its pages.
pub struct SharedPages {
    base: NonNull<u8>,
    len: usize,
    area: usize,
}

impl SharedPages {
    /// A zeroed mapping with `words` control words and two payload areas of `area` bytes.
    pub fn new(words: usize, area: usize) -> Result<SharedPages> {
        ensure!(
            words * LINE <= PAGE,
            "{words} control words do not fit a page"
        );
        let len = PAGE + 2 * area;
        let length = NonZeroUsize::new(len).expect("at least a page");
        // SAFETY: a fresh anonymous mapping at an address the kernel picks; nothing aliases it.
        let base = unsafe {
            mmap_anonymous(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .with_context(|| format!("mapping {len} bytes of shared memory"))?;
        Ok(SharedPages {
            base: base.cast(),
            len,
            area,
        })
    }

    /// Control word `i`, alone on its cache line.
    pub fn word(&self, i: usize) -> &AtomicU64 {
        assert!(
            (i + 1) * LINE <= PAGE,
            "control word {i} is outside the page"
        );
        // SAFETY: inside the first page of the live mapping, 64-aligned (the mapping is
        // page-aligned); both processes access these words only atomically. `AtomicU64` has
        // the layout of `u64`, and zeroed pages are valid zeros.
        unsafe { &*self.base.as_ptr().add(i * LINE).cast::<AtomicU64>() }
    }

    /// Copies `bytes` to the start of payload area `which` (0 or 1).
    ///
    /// The caller's protocol must keep the other process from touching those bytes until the
    /// copy is published (a `Release` store to a control word after this call).
    pub fn copy_into(&self, which: usize, bytes: &[u8]) {
        assert!(which < 2 && bytes.len() <= self.area);
        // SAFETY: the area `PAGE + which*area .. + bytes.len()` is inside the mapping
        // (checked above); it never overlaps `bytes`, which is private memory; no reference
        // to the area exists.
        unsafe {
            let dst = self.base.as_ptr().add(PAGE + which * self.area);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len());
        }
    }
}

impl Drop for SharedPages {
    fn drop(&mut self) {
        // SAFETY: our own mapping of `len` bytes; the references `word` hands out borrow
        // `self`, so none outlives it.
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}

/// Forks; the child runs `child` and exits with its status, never returning. Returns the
/// child's pid in the parent.
///
/// Only call it while the process has one thread: the child gets a copy of the calling
/// thread alone, and locks other threads held would stay locked in it.
pub fn fork_child(child: impl FnOnce() -> i32) -> Result<nix::unistd::Pid> {
    // SAFETY: the caller keeps the process single-threaded (see above), so the child can run
    // arbitrary code; it leaves with `exit` and never returns into the parent's frames.
    match unsafe { fork() }.context("forking the server")? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => std::process::exit(child()),
    }
}
