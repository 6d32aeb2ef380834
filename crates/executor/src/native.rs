//! The native sandbox: the shipped shared library is written to a memfd and dlopened from
//! there (or dlopened from the manager's code cache); functions run on the registered input buffer in place.
//!
//! Native code is not isolated: a function that crashes takes the executor process down (the
//! manager reports it to the client), and one that writes past its output slot corrupts this
//! executor's own memory only. Use the wasm sandbox for isolation.

use std::ffi::c_void;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use function_library::SET_OUTPUT_CAPACITY;
use rdmalib::{Access, MemoryRegion, ProtectionDomain};
use rfaas_protocol::invocation::ReturnCode;

use crate::sandbox::{Sandbox, SlotLayout};

/// The seed's function signature: `uint32_t f(void* args, uint32_t size, void* res)`.
type NativeFn = unsafe extern "C" fn(*mut c_void, u32, *mut c_void) -> u32;

/// A loaded function library and its functions in index order.
pub struct NativeLibrary {
    functions: Vec<NativeFn>,
    // Kept loaded for as long as the function pointers are used.
    _library: libloading::Library,
}

impl NativeLibrary {
    /// Loads `code`, resolves `names` (sorted: position = function index) and tells the
    /// library the size of its output slots if it asks (the SDK's hook).
    pub fn load(code: &[u8], names: &[String], output_capacity: u32) -> Result<Arc<NativeLibrary>> {
        // SAFETY: memfd_create takes a NUL-terminated name; the result is checked.
        let fd = unsafe { libc::memfd_create(c"rfaas-functions".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .context("memfd_create for the function library");
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
        std::fs::File::from(memfd.try_clone()?)
            .write_all(code)
            .context("writing the function library to a memfd")?;
        let path = format!("/proc/self/fd/{}", memfd.as_raw_fd());
        Self::open(Path::new(&path), names, output_capacity)
    }

    /// Loads the library in the file at `path`, as [`load`](Self::load) does its bytes.
    pub fn open(path: &Path, names: &[String], output_capacity: u32) -> Result<Arc<NativeLibrary>> {
        // SAFETY: loading a library runs its initialisers. That is the point of a native
        // allocation: the client chose to run this code here, in a process of its own.
        let library = unsafe { libloading::Library::new(path) }
            .map_err(|e| anyhow::anyhow!("dlopen of the shipped library failed: {e}"))?;
        let mut functions = Vec::with_capacity(names.len());
        for name in names {
            // SAFETY: the symbol is a function exported by the library (the inspector checked
            // it is a defined FUNC in .text); we trust its signature to be the seed's, as
            // rFaaS does.
            let f: libloading::Symbol<'_, NativeFn> = unsafe { library.get(name.as_bytes()) }
                .map_err(|e| anyhow::anyhow!("function {name:?} not found in the library: {e}"))?;
            functions.push(*f);
        }
        if functions.is_empty() {
            bail!("the library exports no functions");
        }
        // SAFETY: the SDK's hook, which its crate and header export as
        // `void __rfaas_set_output_capacity(uint32_t)`; trusted as the functions are.
        let hook =
            unsafe { library.get::<unsafe extern "C" fn(u32)>(SET_OUTPUT_CAPACITY.as_bytes()) };
        if let Ok(hook) = hook {
            // SAFETY: as above; it only stores the value.
            unsafe { hook(output_capacity) };
        }
        Ok(Arc::new(NativeLibrary {
            functions,
            _library: library,
        }))
    }
}

/// One thread's native sandbox.
pub struct NativeSandbox {
    library: Arc<NativeLibrary>,
    layout: SlotLayout,
    input: MemoryRegion,
    output: MemoryRegion,
}

impl NativeSandbox {
    /// Registers this thread's buffers.
    pub fn new(
        library: Arc<NativeLibrary>,
        pd: &ProtectionDomain,
        layout: SlotLayout,
    ) -> Result<Self> {
        let input = pd
            .register(
                layout.input_len(),
                Access::LOCAL_WRITE | Access::REMOTE_WRITE,
            )
            .context("registering the input buffer")?;
        let output = pd
            .register(layout.output_len(), Access::LOCAL_WRITE)
            .context("registering the output buffer")?;
        Ok(NativeSandbox {
            library,
            layout,
            input,
            output,
        })
    }
}

impl Sandbox for NativeSandbox {
    fn input(&self) -> &MemoryRegion {
        &self.input
    }

    fn output(&self) -> &MemoryRegion {
        &self.output
    }

    #[inline]
    fn invoke(&mut self, index: usize, slot: usize, size: u32) -> Result<u32, ReturnCode> {
        let f = *self
            .library
            .functions
            .get(index)
            .ok_or(ReturnCode::UnknownFunction)?;
        if size as usize > self.layout.max_payload || slot >= self.layout.slot_count {
            return Err(ReturnCode::PayloadTooLarge);
        }
        // SAFETY: both offsets are inside their regions (slot < slot_count); the input slot has
        // `size <= max_payload` payload bytes and the output slot `max_payload` bytes, which is
        // the seed's contract (the output holds at least as much as the input). The client
        // does not write this slot again before it has the result.
        unsafe {
            let args = self.input.as_ptr().add(self.layout.payload_offset(slot));
            let res = self.output.as_ptr().add(self.layout.output_offset(slot));
            Ok(f(args.cast(), size, res.cast()))
        }
    }
}
