//! The executor threads as the client sees them: each thread's input slots, which calls are in
//! flight in them, and the result slot that each call's answer lands in.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use rdmalib::{Connection, MemoryRegion, RemoteBuffer};
use rfaas_protocol::control::ThreadReady;
use rfaas_protocol::invocation::{MAX_INPUT_BUFFERS, invocation_receives};

use crate::error::Result;

/// States of a [`ResultSlot`].
pub(crate) const FREE: u8 = 0;
pub(crate) const PENDING: u8 = 1;
pub(crate) const DONE: u8 = 2;
/// Its caller stopped waiting: the slot is freed when the late result arrives, since the
/// executor may still be using the input slot until then.
pub(crate) const ABANDONED: u8 = 3;
/// Result code stored when the executor went away before answering.
pub(crate) const LOST: u32 = u32::MAX;

/// Where the answer to the call in one input slot lands.
pub(crate) struct ResultSlot {
    /// Executor thread and input slot this result slot belongs to (fixed).
    pub thread: usize,
    pub slot: usize,
    pub state: AtomicU8,
    /// Invocation id of the call in flight.
    pub id: AtomicU32,
    pub code: AtomicU32,
    pub len: AtomicU32,
}

impl ResultSlot {
    pub(crate) fn new(thread: usize, slot: usize) -> Self {
        ResultSlot {
            thread,
            slot,
            state: AtomicU8::new(FREE),
            id: AtomicU32::new(0),
            code: AtomicU32::new(0),
            len: AtomicU32::new(0),
        }
    }
}

/// One executor thread: its connection, its input slots and which of them are free.
pub(crate) struct Thread {
    pub conn: Connection,
    pub input: RemoteBuffer,
    pub slot_size: u32,
    pub slot_count: u16,
    /// Index of this thread's first result slot.
    pub slot_base: usize,
    /// Invocation ids cycle through `id_span * slot_count` values (slot = id % slot_count).
    id_span: u32,
    /// Bit i set: slot i is free.
    free: AtomicU64,
    seq: AtomicU32,
}

impl Thread {
    /// Thread `index` as it announced itself; posts the receives its results will consume,
    /// with the thread's index as their work-request id.
    pub(crate) fn new(
        index: usize,
        conn: Connection,
        ready: &ThreadReady,
        slot_base: usize,
        empty: &MemoryRegion,
    ) -> Result<Thread> {
        let slot_count = ready.slot_count.clamp(1, MAX_INPUT_BUFFERS);
        for _ in 0..invocation_receives(u32::from(slot_count)) {
            conn.post_recv(index as u64, empty.sge(0, 0)?)?;
        }
        Ok(Thread {
            conn,
            input: RemoteBuffer {
                addr: ready.input_addr,
                rkey: ready.input_rkey,
                len: ready.slot_size * u32::from(ready.slot_count),
            },
            slot_size: ready.slot_size,
            slot_count,
            slot_base,
            id_span: (u32::from(u16::MAX) + 1) / u32::from(slot_count),
            free: AtomicU64::new(if slot_count == 64 {
                u64::MAX
            } else {
                (1u64 << slot_count) - 1
            }),
            seq: AtomicU32::new(0),
        })
    }

    /// Takes the lowest free input slot.
    #[inline]
    pub(crate) fn claim(&self) -> Option<usize> {
        let mut mask = self.free.load(Ordering::Acquire);
        loop {
            if mask == 0 {
                return None;
            }
            let slot = mask.trailing_zeros() as usize;
            match self.free.compare_exchange_weak(
                mask,
                mask & !(1 << slot),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(slot),
                Err(now) => mask = now,
            }
        }
    }

    /// Gives input slot `slot` back.
    #[inline]
    pub(crate) fn release(&self, slot: usize) {
        self.free.fetch_or(1 << slot, Ordering::AcqRel);
    }

    /// A fresh invocation id for a call in input slot `slot` (`id % slot_count == slot`).
    #[inline]
    pub(crate) fn next_id(&self, slot: usize) -> u16 {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        ((seq % self.id_span) * u32::from(self.slot_count) + slot as u32) as u16
    }

    /// The result slot of invocation `id`.
    #[inline]
    pub(crate) fn result_slot(&self, id: u16) -> usize {
        self.slot_base + id as usize % self.slot_count as usize
    }
}
