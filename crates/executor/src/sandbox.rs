//! What the worker loop needs from a sandbox: the registered input and output buffers and a
//! way to run function `i` on slot `s`.

use rdmalib::MemoryRegion;
use rfaas_protocol::invocation::{INPUT_HEADER_LEN, ReturnCode};

/// How a thread's input and output buffers are cut into slots.
#[derive(Clone, Copy, Debug)]
pub struct SlotLayout {
    /// Slots per thread (calls that may be in flight at once).
    pub slot_count: usize,
    /// Largest payload of one call, and the size of each output slot.
    pub max_payload: usize,
}

impl SlotLayout {
    /// Bytes per input slot: the header, the payload, rounded up to a cache line.
    pub fn slot_size(&self) -> usize {
        (INPUT_HEADER_LEN + self.max_payload).next_multiple_of(64)
    }

    /// Bytes of the whole input buffer.
    pub fn input_len(&self) -> usize {
        self.slot_count * self.slot_size()
    }

    /// Bytes of the whole output buffer (at least one, as regions cannot be empty).
    pub fn output_len(&self) -> usize {
        (self.slot_count * self.max_payload).max(1)
    }

    /// Offset of slot `slot`'s header in the input buffer.
    pub fn input_offset(&self, slot: usize) -> usize {
        slot * self.slot_size()
    }

    /// Offset of slot `slot`'s payload in the input buffer.
    pub fn payload_offset(&self, slot: usize) -> usize {
        self.input_offset(slot) + INPUT_HEADER_LEN
    }

    /// Offset of slot `slot` in the output buffer.
    pub fn output_offset(&self, slot: usize) -> usize {
        slot * self.max_payload
    }
}

/// One executor thread's functions and buffers.
pub trait Sandbox: Send {
    /// The input buffer the client writes into ([`SlotLayout::input_len`] bytes).
    fn input(&self) -> &MemoryRegion;

    /// The output buffer results are sent from ([`SlotLayout::output_len`] bytes).
    fn output(&self) -> &MemoryRegion;

    /// Runs function `index` on the `size` payload bytes of `slot`, writing its output into
    /// the output slot; returns the output size as the function reported it.
    fn invoke(&mut self, index: usize, slot: usize, size: u32) -> Result<u32, ReturnCode>;
}

impl<S: Sandbox + ?Sized> Sandbox for Box<S> {
    fn input(&self) -> &MemoryRegion {
        (**self).input()
    }

    fn output(&self) -> &MemoryRegion {
        (**self).output()
    }

    #[inline]
    fn invoke(&mut self, index: usize, slot: usize, size: u32) -> Result<u32, ReturnCode> {
        (**self).invoke(index, slot, size)
    }
}
