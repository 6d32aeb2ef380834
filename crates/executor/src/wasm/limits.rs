//! The allocation's memory, enforced on its wasm instances.
//!
//! An allocation leases `memory` MiB. Its wasm functions hold memory in their instances' linear
//! memories, one per thread; what counts is the module's own part of each: its initial memory
//! and what it grows itself. The host's buffer pages in between (sized by the client's buffer
//! request, registered with the RDMA layer) are not counted. Every instance of the allocation
//! charges one shared [`Budget`]; a `memory.grow` that would take it past the limit fails
//! (returns -1 to the module, as the wasm spec allows), which the module's allocator reports
//! as an allocation failure: the function's to handle. A function that traps after such a
//! failure (Rust's `handle_alloc_error`, C's `abort`) gets [`ReturnCode::OutOfMemory`].
//!
//! [`ReturnCode::OutOfMemory`]: rfaas_protocol::invocation::ReturnCode::OutOfMemory

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::MemoryPlan;

/// What one table element costs the host: a function reference is a pointer.
const TABLE_ELEMENT: usize = std::mem::size_of::<usize>();

/// Bytes of module memory an allocation may hold, summed over its instances.
#[derive(Debug)]
pub(crate) struct Budget {
    /// `usize::MAX` for no limit.
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    /// A budget of `memory_mb` MiB; 0 is no limit.
    pub(crate) fn new(memory_mb: u32) -> Arc<Budget> {
        let limit = if memory_mb == 0 {
            usize::MAX
        } else {
            (memory_mb as usize) << 20
        };
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// The limit in bytes, `None` for none.
    pub(crate) fn limit(&self) -> Option<usize> {
        (self.limit != usize::MAX).then_some(self.limit)
    }

    /// Takes `bytes` from the budget if they fit.
    fn charge(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn refund(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes charged now, over all instances.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One instance's share of the budget: its store's [`wasmtime::ResourceLimiter`].
#[derive(Debug)]
pub(crate) struct InstanceLimits {
    budget: Arc<Budget>,
    /// Where the host's buffer pages start and end in the linear memory.
    buffers: (usize, usize),
    /// What this instance's memory holds of the budget; given back when the instance goes.
    memory_charged: usize,
    /// What its tables hold.
    table_charged: usize,
    /// Whether a growth was refused since [`InstanceLimits::clear_refusal`].
    refused: bool,
}

impl InstanceLimits {
    pub(crate) fn new(budget: Arc<Budget>, plan: &MemoryPlan) -> InstanceLimits {
        InstanceLimits {
            budget,
            buffers: (plan.module_len, plan.buffers_end),
            memory_charged: 0,
            table_charged: 0,
            refused: false,
        }
    }

    /// The module's part of a linear memory of `len` bytes.
    fn module_part(&self, len: usize) -> usize {
        let (start, end) = self.buffers;
        if len <= start {
            len
        } else {
            start + len.saturating_sub(end)
        }
    }

    /// Whether a growth was refused since the last [`InstanceLimits::clear_refusal`].
    pub(crate) fn refused(&self) -> bool {
        self.refused
    }

    pub(crate) fn clear_refusal(&mut self) {
        self.refused = false;
    }

    /// Charges `bytes` to the budget, or notes the refusal.
    fn take(&mut self, bytes: usize) -> bool {
        let granted = bytes == 0 || self.budget.charge(bytes);
        self.refused |= !granted;
        granted
    }
}

impl wasmtime::ResourceLimiter for InstanceLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            // wasmtime refuses this growth itself, after asking; nothing to charge.
            return Ok(true);
        }
        // What the memory holds is the truth: a growth that failed after it was charged
        // (the host ran out of memory) is given back here.
        let held = self.module_part(current);
        if self.memory_charged > held {
            self.budget.refund(self.memory_charged - held);
            self.memory_charged = held;
        }
        let more = self.module_part(desired).saturating_sub(held);
        let granted = self.take(more);
        if granted {
            self.memory_charged += more;
        }
        Ok(granted)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let more = desired.saturating_sub(current).saturating_mul(TABLE_ELEMENT);
        let granted = self.take(more);
        if granted {
            self.table_charged += more;
        }
        Ok(granted)
    }
}

impl Drop for InstanceLimits {
    fn drop(&mut self) {
        self.budget.refund(self.memory_charged + self.table_charged);
    }
}
