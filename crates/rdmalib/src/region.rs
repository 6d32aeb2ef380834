//! Protection domains and registered memory regions.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::error::{Error, Result};
use crate::memory::Allocation;
use crate::types::{Access, RawSge, RemoteBuffer};
use crate::{ProviderKind, stream};

#[cfg(feature = "verbs")]
use crate::verbs;

/// A protection domain: memory regions and connections that may use each other.
#[derive(Clone)]
pub struct ProtectionDomain(pub(crate) PdImpl);

#[derive(Clone)]
pub(crate) enum PdImpl {
    Stream(Arc<stream::Pd>),
    #[cfg(feature = "verbs")]
    Verbs(Arc<verbs::Pd>),
}

impl ProtectionDomain {
    /// Which provider serves this domain.
    pub fn provider(&self) -> ProviderKind {
        match &self.0 {
            PdImpl::Stream(pd) => pd.provider(),
            #[cfg(feature = "verbs")]
            PdImpl::Verbs(_) => ProviderKind::Verbs,
        }
    }

    /// Allocates `len` zeroed bytes (rounded up to a page) and registers them with `access`.
    pub fn register(&self, len: usize, access: Access) -> Result<MemoryRegion> {
        let alloc = Allocation::new(len)?;
        let (ptr, alloc_len) = (alloc.as_ptr(), alloc.len());
        // SAFETY: the allocation is valid for `alloc_len` bytes and is kept alive in the
        // returned region, whose fields drop the registration before the allocation.
        let mut mr = unsafe { self.register_raw(ptr, alloc_len, access)? };
        mr.len = len;
        mr._backing = Some(alloc);
        Ok(mr)
    }

    /// Registers memory the caller owns, for example a range of a wasm linear memory.
    ///
    /// # Safety
    ///
    /// `ptr..ptr+len` must be valid for reads and writes and must neither move nor be unmapped
    /// until the returned region is dropped. Remote peers may write to it at any time while it
    /// is registered: the caller must not hold Rust references into the range across such
    /// writes (copy through raw pointers, as [`MemoryRegion::read`] does).
    pub unsafe fn register_raw(
        &self,
        ptr: *mut u8,
        len: usize,
        access: Access,
    ) -> Result<MemoryRegion> {
        if ptr.is_null() || len == 0 || len > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "cannot register {len} bytes at {ptr:p} (need a non-null range of 1 B to 4 GiB)"
            )));
        }
        let inner = match &self.0 {
            // SAFETY: forwarded from this function's contract.
            PdImpl::Stream(pd) => MrImpl::Stream(unsafe { pd.register(ptr, len, access)? }),
            #[cfg(feature = "verbs")]
            // SAFETY: forwarded from this function's contract.
            PdImpl::Verbs(pd) => MrImpl::Verbs(unsafe { pd.register(ptr, len, access)? }),
        };
        let (lkey, rkey) = match &inner {
            MrImpl::Stream(mr) => (mr.lkey(), mr.rkey()),
            #[cfg(feature = "verbs")]
            MrImpl::Verbs(mr) => (mr.lkey(), mr.rkey()),
        };
        Ok(MemoryRegion {
            ptr,
            len,
            lkey,
            rkey,
            access,
            _registration: inner,
            _backing: None,
        })
    }
}

pub(crate) enum MrImpl {
    Stream(stream::Mr),
    #[cfg(feature = "verbs")]
    Verbs(verbs::Mr),
}

/// Registered memory: a local buffer that work requests use and that remote peers may reach
/// through its rkey, as its access flags allow.
///
/// The memory may change at any moment a remote write is allowed to land; read it after the
/// completion that announces the write, through [`read`](Self::read) or the raw pointer.
pub struct MemoryRegion {
    ptr: *mut u8,
    len: usize,
    lkey: u32,
    rkey: u32,
    access: Access,
    // Field order matters: the registration is dropped before the memory it covers.
    _registration: MrImpl,
    _backing: Option<Allocation>,
}

// SAFETY: the region is a pointer and keys; the provider handles are Send + Sync, and access to
// the memory is through raw copies whose ordering the completions provide.
unsafe impl Send for MemoryRegion {}
// SAFETY: as for Send; no method hands out a Rust reference to memory a peer may write.
unsafe impl Sync for MemoryRegion {}

impl MemoryRegion {
    /// Start address, as published to peers.
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Raw pointer to the first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` for a region of zero bytes (never, registration requires at least one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Local key.
    pub fn lkey(&self) -> u32 {
        self.lkey
    }

    /// Remote key: what a peer needs, with the address, to write here.
    pub fn rkey(&self) -> u32 {
        self.rkey
    }

    /// Access flags it was registered with.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The whole region as a remote buffer, to publish to a peer.
    pub fn remote(&self) -> RemoteBuffer {
        RemoteBuffer {
            addr: self.addr(),
            rkey: self.rkey,
            len: self.len as u32,
        }
    }

    /// A checked scatter-gather entry for `len` bytes at `offset`.
    pub fn sge(&self, offset: usize, len: usize) -> Result<Sge<'_>> {
        self.check(offset, len)?;
        Ok(Sge {
            mr: self,
            offset: offset as u32,
            len: len as u32,
        })
    }

    /// Copies `out.len()` bytes at `offset` out of the region.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.check(offset, out.len())?;
        // SAFETY: the range is inside the region (checked), which is valid memory; `out` is a
        // distinct Rust buffer, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Copies `data` into the region at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        // SAFETY: as in `read`, with the direction reversed.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(offset), data.len()) };
        Ok(())
    }

    /// The 8 bytes at `offset` as an atomic counter (the target of remote fetch-and-add).
    pub fn atomic_u64(&self, offset: usize) -> Result<&AtomicU64> {
        self.check(offset, 8)?;
        if !(self.addr() + offset as u64).is_multiple_of(8) {
            return Err(Error::InvalidArgument(format!(
                "offset {offset} is not 8-byte aligned for an atomic"
            )));
        }
        // SAFETY: in bounds and aligned (checked); the region outlives the reference, and remote
        // atomics on it are themselves atomic operations on the same location.
        Ok(unsafe { AtomicU64::from_ptr(self.ptr.add(offset).cast()) })
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::InvalidArgument(format!(
                "range {offset}+{len} is outside the region of {} bytes",
                self.len
            ))),
        }
    }
}

impl std::fmt::Debug for MemoryRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRegion")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("len", &self.len)
            .field("lkey", &self.lkey)
            .field("rkey", &self.rkey)
            .field("access", &self.access)
            .finish()
    }
}

/// A bounds-checked piece of a registered region, used as the local side of a work request.
#[derive(Clone, Copy, Debug)]
pub struct Sge<'a> {
    pub(crate) mr: &'a MemoryRegion,
    pub(crate) offset: u32,
    pub(crate) len: u32,
}

impl Sge<'_> {
    /// Length in bytes.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// `true` when the entry covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn raw(&self) -> RawSge {
        RawSge {
            // SAFETY: offset is within the region (checked when the Sge was made).
            addr: unsafe { self.mr.ptr.add(self.offset as usize) },
            len: self.len,
            lkey: self.mr.lkey,
        }
    }
}
