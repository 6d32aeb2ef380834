//! Registered buffers for invocations: the client writes its payload into an [`InputBuffer`]
//! (which keeps room for the 12-byte header in front) and the executor writes the result
//! straight into an [`OutputBuffer`].

use rdmalib::{Access, MemoryRegion, ProtectionDomain};

use crate::error::{Error, Result};
use rfaas_protocol::invocation::INPUT_HEADER_LEN;

/// A registered input buffer: `[header][payload]`. One call at a time may use it.
pub struct InputBuffer {
    pub(crate) mr: MemoryRegion,
    capacity: usize,
}

impl InputBuffer {
    pub(crate) fn new(pd: &ProtectionDomain, capacity: usize) -> Result<InputBuffer> {
        let mr = pd.register(INPUT_HEADER_LEN + capacity, Access::LOCAL_WRITE)?;
        Ok(InputBuffer { mr, capacity })
    }

    /// Largest payload it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Copies `data` into the payload area.
    pub fn write(&self, data: &[u8]) -> Result<()> {
        if data.len() > self.capacity {
            return Err(Error::InvalidArgument(format!(
                "{} bytes do not fit an input buffer of {} bytes",
                data.len(),
                self.capacity
            )));
        }
        Ok(self.mr.write(INPUT_HEADER_LEN, data)?)
    }

    /// Copies the first `out.len()` payload bytes out.
    pub fn read(&self, out: &mut [u8]) -> Result<()> {
        Ok(self.mr.read(INPUT_HEADER_LEN, out)?)
    }

    /// The payload area's first byte, [`capacity`](Self::capacity) bytes long: for bindings
    /// that let their callers fill registered memory in place (the C ABI). Nothing may write
    /// through it while a call that uses this buffer is in flight.
    pub fn payload_ptr(&self) -> *mut u8 {
        self.mr.as_ptr().wrapping_add(INPUT_HEADER_LEN)
    }
}

/// A registered output buffer the executor writes results into.
pub struct OutputBuffer {
    pub(crate) mr: MemoryRegion,
    capacity: usize,
}

impl OutputBuffer {
    pub(crate) fn new(pd: &ProtectionDomain, capacity: usize) -> Result<OutputBuffer> {
        let mr = pd.register(capacity.max(1), Access::LOCAL_WRITE | Access::REMOTE_WRITE)?;
        Ok(OutputBuffer { mr, capacity })
    }

    /// Bytes it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Copies the first `out.len()` result bytes out.
    pub fn read(&self, out: &mut [u8]) -> Result<()> {
        Ok(self.mr.read(0, out)?)
    }

    /// The first byte, [`capacity`](Self::capacity) bytes long: for bindings that let their
    /// callers read results in place (the C ABI). The executor writes here while a call that
    /// uses this buffer is in flight.
    pub fn as_ptr(&self) -> *const u8 {
        self.mr.as_ptr()
    }

    /// The first `len` result bytes.
    pub fn to_vec(&self, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0; len];
        self.read(&mut v)?;
        Ok(v)
    }

    /// Fills the buffer with `byte` (to see what a call overwrote).
    pub fn fill(&self, byte: u8) -> Result<()> {
        Ok(self.mr.write(0, &vec![byte; self.capacity])?)
    }
}
