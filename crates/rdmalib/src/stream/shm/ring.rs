//! The shared mapping of one shm connection and the single-producer single-consumer byte rings
//! in it. All raw-pointer work of the `shm` provider's data path is in this file.
//!
//! Layout of the memfd (created by the connecting side, [`MAP_LEN`] bytes, sealed against
//! resizing so neither side can shrink it under the other's mapping):
//!
//! ```text
//! 0            header of ring 0 (connecting side -> accepting side)   one page
//! PAGE         header of ring 1 (accepting side -> connecting side)   one page
//! 2*PAGE       data of ring 0                                         RING_CAP bytes
//! 2*PAGE+CAP   data of ring 1                                         RING_CAP bytes
//! ```
//!
//! A header holds four `AtomicU64`s, each on its own cache line: `head` (bytes consumed; only
//! the reader stores it), `tail` (bytes produced; only the writer stores it), `sleeping` (the
//! reader wants a doorbell; only the reader stores it) and `closed` (the writer will send no
//! more; only the writer stores it). `head` and `tail` count bytes since the start and never
//! wrap in practice (u64); the position in the data area is `count & (RING_CAP - 1)`.
//!
//! Invariants, checked on every access because the peer is another process that may be buggy
//! or hostile: `0 <= tail - head <= RING_CAP`. A violation is an `InvalidData` error, which the
//! frame engine treats as the connection failing; a bad peer can corrupt only the bytes of
//! its own connection, never memory outside the mapping (all offsets are masked) and never a
//! registered region (frames are still checked by the receiver, [`super::super::conn`]).
//!
//! Memory ordering: the writer copies the bytes, then stores `tail` with `Release`; the reader
//! loads `tail` with `Acquire`, then copies. Symmetrically the reader publishes `head` with
//! `Release` after copying out, and the writer loads it with `Acquire` before reusing space.
//! Both publish every [`CHUNK`] bytes of a long copy, not only at its end, so the two copies
//! of a large payload overlap.
//! Bytes in the data areas are only ever accessed through raw pointers (never references), as
//! the other process may touch them concurrently.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering, fence};

use super::super::sys::RawIov;

/// Bytes of each ring's data area (a power of two).
pub(super) const RING_CAP: usize = 1 << 20;
/// Bytes copied between two publications of `tail` (writer) or `head` (reader). A large
/// payload then streams: the reader copies one chunk out while the writer copies the next in,
/// instead of each waiting for the other's whole copy.
const CHUNK: usize = 16 << 10;
const PAGE: usize = 4096;
/// Bytes of the whole shared mapping.
pub(super) const MAP_LEN: usize = 2 * PAGE + 2 * RING_CAP;

/// Seals of the shared memfd: its size can never change.
const SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

const HEAD: usize = 0;
const TAIL: usize = 64;
const SLEEPING: usize = 128;
const CLOSED: usize = 192;

/// A `MAP_SHARED` mapping of a connection's memfd, unmapped on drop.
pub(super) struct Mapping {
    base: *mut u8,
}

// SAFETY: the mapping is plain shared memory; every access goes through atomics (headers) or
// raw-pointer copies whose exclusivity the ring protocol provides (see the module docs).
unsafe impl Send for Mapping {}
// SAFETY: as above; `Mapping` itself has no interior state besides the pointer.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Creates a fresh memfd of [`MAP_LEN`] zero bytes and maps it.
    pub fn create() -> io::Result<(OwnedFd, Mapping)> {
        // SAFETY: the name is a NUL-terminated literal; the result is checked.
        let fd = unsafe {
            libc::memfd_create(
                c"rdmalib-shm".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate on our own memfd; the result is checked.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), MAP_LEN as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // The size is final: sealed, so neither side can shrink the file under the other's
        // mapping (which would turn its accesses into SIGBUS).
        // SAFETY: fcntl on our own memfd with integer arguments; the result is checked.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let map = Mapping::map(&fd)?;
        Ok((fd, map))
    }

    /// Maps a memfd received from the peer after checking its seals and size.
    pub fn open(fd: &OwnedFd) -> io::Result<Mapping> {
        // SAFETY: fcntl with an integer command on a descriptor we own; the result is checked.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & SEALS != SEALS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the peer's shared memory is not a sealed memfd",
            ));
        }
        // SAFETY: `stat` is plain data; fstat fills it and the result is checked.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid, writable stat buffer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if st.st_size as u64 != MAP_LEN as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the peer's shared memory has {} bytes, expected {MAP_LEN}",
                    st.st_size
                ),
            ));
        }
        Mapping::map(fd)
    }

    fn map(fd: &OwnedFd) -> io::Result<Mapping> {
        // SAFETY: a new shared mapping of the whole file (at least MAP_LEN bytes, checked by
        // the callers); the kernel picks the address; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAP_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { base: base.cast() })
    }

    /// The header word at `offset` of ring `ring`.
    fn word(&self, ring: usize, offset: usize) -> &AtomicU64 {
        debug_assert!(ring < 2 && offset <= CLOSED);
        // SAFETY: `ring * PAGE + offset` is inside the first two pages of the live mapping,
        // 8-aligned (the mapping is page-aligned), and these words are only ever accessed
        // atomically by both processes. `AtomicU64` has the layout of `u64`.
        unsafe { &*self.base.add(ring * PAGE + offset).cast::<AtomicU64>() }
    }

    fn data(&self, ring: usize) -> *mut u8 {
        // SAFETY: inside the mapping: 2*PAGE + ring*RING_CAP + RING_CAP <= MAP_LEN.
        unsafe { self.base.add(2 * PAGE + ring * RING_CAP) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base..base+MAP_LEN` is our mapping; the rings borrowing it are gone (they
        // live in the same transport and are dropped with it).
        unsafe { libc::munmap(self.base.cast(), MAP_LEN) };
    }
}

fn corrupt() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the peer corrupted the shared ring",
    )
}

/// Copies `len` bytes between a linear buffer and the ring data area starting at ring offset
/// `pos`, wrapping at the end of the area.
///
/// # Safety
///
/// `data` is a ring data area of `RING_CAP` bytes; `buf..buf+len` is valid for the direction
/// of the copy; `len <= RING_CAP`.
unsafe fn copy_ring(data: *mut u8, pos: usize, buf: *mut u8, len: usize, into_ring: bool) {
    let first = len.min(RING_CAP - pos);
    // SAFETY: both copies stay inside the data area (`pos + first <= RING_CAP`,
    // `len - first <= pos`) and inside `buf..buf+len`; the areas never overlap (one is in the
    // mapping, the other is the caller's buffer).
    unsafe {
        if into_ring {
            std::ptr::copy_nonoverlapping(buf, data.add(pos), first);
            std::ptr::copy_nonoverlapping(buf.add(first), data, len - first);
        } else {
            std::ptr::copy_nonoverlapping(data.add(pos), buf, first);
            std::ptr::copy_nonoverlapping(data, buf.add(first), len - first);
        }
    }
}

/// Writes as much of `iov` as fits into ring `ring`; returns the bytes written and whether the
/// reader asked for a doorbell.
///
/// `seen_head` is the writer's own copy of the reader's `head`, as of its last look. The
/// writer looks at the shared `head` again only when that copy leaves too little room for
/// `iov`, so a write that fits touches no cache line the reader writes (the reader's `head`
/// line stays in the reader's cache). Space up to an older `head` is free all the same.
///
/// # Safety
///
/// Only one thread in one process writes a given ring (the frame engine's `tx` lock, and the
/// ring assignment of [`super::ShmTransport`]), always with the same `seen_head`, which
/// starts at 0; every piece of `iov` is valid for reads.
pub(super) unsafe fn write(
    map: &Mapping,
    ring: usize,
    iov: &[RawIov],
    seen_head: &AtomicU64,
) -> io::Result<(usize, bool)> {
    let tail = map.word(ring, TAIL).load(Ordering::Relaxed);
    let wanted: usize = iov.iter().map(|p| p.len).sum();
    let mut used = tail.wrapping_sub(seen_head.load(Ordering::Relaxed));
    if RING_CAP as u64 - used.min(RING_CAP as u64) < wanted as u64 {
        let head = map.word(ring, HEAD).load(Ordering::Acquire);
        seen_head.store(head, Ordering::Relaxed);
        used = tail.wrapping_sub(head);
    }
    if used > RING_CAP as u64 {
        return Err(corrupt());
    }
    let mut free = RING_CAP - used as usize;
    if free == 0 {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    let data = map.data(ring);
    let tail_word = map.word(ring, TAIL);
    let mut written = 0usize;
    let mut unpublished = 0usize;
    for piece in iov {
        let mut done = 0usize;
        while free > 0 && done < piece.len {
            let n = (piece.len - done).min(free).min(CHUNK - unpublished);
            let pos = (tail as usize).wrapping_add(written) & (RING_CAP - 1);
            // SAFETY: `n <= free <= RING_CAP` bytes from the caller's readable piece into free
            // ring space, which the reader does not touch until `tail` covers it.
            unsafe { copy_ring(data, pos, piece.ptr.add(done) as *mut u8, n, true) };
            done += n;
            written += n;
            free -= n;
            unpublished += n;
            if unpublished == CHUNK {
                tail_word.store(tail.wrapping_add(written as u64), Ordering::Release);
                unpublished = 0;
            }
        }
    }
    tail_word.store(tail.wrapping_add(written as u64), Ordering::Release);
    // Doorbell protocol, writer half: publish `tail`, full fence, then read `sleeping`. The
    // reader sets `sleeping`, full fence, then reads `tail`. With both fences SeqCst, at least
    // one side sees the other's store: either we see `sleeping` and ring, or the reader sees
    // our bytes before it sleeps. No wake-up is lost.
    fence(Ordering::SeqCst);
    let ring_bell = map.word(ring, SLEEPING).load(Ordering::Relaxed) != 0;
    Ok((written, ring_bell))
}

/// Reads up to `len` bytes from ring `ring` into `buf`. `Ok(0)` only when `len == 0`;
/// `WouldBlock` when empty (the caller then looks at [`closed`]).
///
/// # Safety
///
/// Only one thread in one process reads a given ring; `buf..buf+len` is valid for writes.
pub(super) unsafe fn read(
    map: &Mapping,
    ring: usize,
    buf: *mut u8,
    len: usize,
) -> io::Result<usize> {
    let head = map.word(ring, HEAD).load(Ordering::Relaxed);
    let tail = map.word(ring, TAIL).load(Ordering::Acquire);
    let avail = tail.wrapping_sub(head);
    if avail > RING_CAP as u64 {
        return Err(corrupt());
    }
    if avail == 0 {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    let n = (avail as usize).min(len);
    let head_word = map.word(ring, HEAD);
    let mut done = 0usize;
    while done < n {
        let k = (n - done).min(CHUNK);
        let pos = (head as usize).wrapping_add(done) & (RING_CAP - 1);
        // SAFETY: `k` of the `avail` published bytes (the writer does not reuse them until
        // `head` passes them) into the caller's writable buffer, `done + k <= len`.
        unsafe { copy_ring(map.data(ring), pos, buf.add(done), k, false) };
        done += k;
        head_word.store(head.wrapping_add(done as u64), Ordering::Release);
    }
    Ok(n)
}

/// Whether ring `ring` has unread bytes.
pub(super) fn has_data(map: &Mapping, ring: usize) -> bool {
    map.word(ring, TAIL).load(Ordering::Acquire) != map.word(ring, HEAD).load(Ordering::Relaxed)
}

/// Whether ring `ring` has free space for the writer.
pub(super) fn has_room(map: &Mapping, ring: usize) -> bool {
    let used = map
        .word(ring, TAIL)
        .load(Ordering::Relaxed)
        .wrapping_sub(map.word(ring, HEAD).load(Ordering::Acquire));
    used != RING_CAP as u64
}

/// Reader half of the doorbell protocol: announce (or withdraw) that the reader of `ring`
/// waits for a doorbell, then look at `tail` again. Returns whether bytes are already
/// waiting, in which case the caller must not sleep (it rings its own doorbell).
pub(super) fn set_sleeping(map: &Mapping, ring: usize, on: bool) -> bool {
    map.word(ring, SLEEPING)
        .store(u64::from(on), Ordering::Relaxed);
    fence(Ordering::SeqCst);
    on && has_data(map, ring)
}

/// The writer of `ring` will send no more.
pub(super) fn close(map: &Mapping, ring: usize) {
    map.word(ring, CLOSED).store(1, Ordering::Release);
    fence(Ordering::SeqCst);
}

/// Whether the writer of `ring` closed it.
pub(super) fn closed(map: &Mapping, ring: usize) -> bool {
    map.word(ring, CLOSED).load(Ordering::Acquire) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iov(b: &[u8]) -> [RawIov; 1] {
        [RawIov {
            ptr: b.as_ptr(),
            len: b.len(),
        }]
    }

    #[test]
    fn bytes_survive_many_wrap_arounds_and_fill_ups() {
        let (fd, w) = Mapping::create().unwrap();
        // The reader is a second mapping of the same memfd, as in the peer process.
        let r = Mapping::open(&fd).unwrap();
        let mut next_out = 0u8;
        let mut next_in = 0u8;
        let chunk = 100_003; // not a divisor of RING_CAP: pieces straddle the wrap point
        let mut buf = vec![0u8; chunk];
        let seen = AtomicU64::new(0);
        for _ in 0..50 {
            let out: Vec<u8> = (0..chunk)
                .map(|_| {
                    next_out = next_out.wrapping_add(7);
                    next_out
                })
                .collect();
            let mut sent = 0;
            while sent < out.len() {
                // SAFETY: single writer and reader (this thread); buffers are ours.
                match unsafe { write(&w, 0, &iov(&out[sent..]), &seen) } {
                    Ok((n, _)) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // SAFETY: as above.
                        let n = unsafe { read(&r, 0, buf.as_mut_ptr(), buf.len()) }.unwrap();
                        for b in &buf[..n] {
                            next_in = next_in.wrapping_add(7);
                            assert_eq!(*b, next_in);
                        }
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        // SAFETY: as above.
        while let Ok(n) = unsafe { read(&r, 0, buf.as_mut_ptr(), buf.len()) } {
            for b in &buf[..n] {
                next_in = next_in.wrapping_add(7);
                assert_eq!(*b, next_in);
            }
        }
        assert_eq!(next_in, next_out);
        assert!(!has_data(&r, 0) && has_room(&w, 0));
    }

    #[test]
    fn a_reader_draining_while_the_writer_streams_gets_every_byte_in_order() {
        let (fd, w) = Mapping::create().unwrap();
        let r = Mapping::open(&fd).unwrap();
        // Writes larger than the ring and than a chunk, and small ones, so publications of
        // `tail` and `head` interleave mid-copy on both sides.
        let sizes = [3 * RING_CAP / 2, 1, CHUNK + 7, 64, RING_CAP, 5 * CHUNK / 2];
        let total: usize = sizes.iter().sum::<usize>() * 4;
        let byte = |i: usize| (i.wrapping_mul(31) >> 3) as u8;
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; RING_CAP / 3];
            let mut got = 0usize;
            while got < total {
                // SAFETY: the only reader of ring 0; `buf` is ours.
                match unsafe { read(&r, 0, buf.as_mut_ptr(), buf.len()) } {
                    Ok(n) => {
                        for (k, b) in buf[..n].iter().enumerate() {
                            assert_eq!(*b, byte(got + k), "byte {}", got + k);
                        }
                        got += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let seen = AtomicU64::new(0);
        let mut sent = 0usize;
        for &size in sizes.iter().cycle().take(sizes.len() * 4) {
            let out: Vec<u8> = (sent..sent + size).map(byte).collect();
            let mut done = 0;
            while done < size {
                // SAFETY: the only writer of ring 0; `out` is ours.
                match unsafe { write(&w, 0, &iov(&out[done..]), &seen) } {
                    Ok((n, _)) => done += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                    Err(e) => panic!("{e}"),
                }
            }
            sent += size;
        }
        reader.join().unwrap();
    }

    #[test]
    fn a_corrupted_ring_is_an_error_not_a_wild_copy() {
        let (_fd, m) = Mapping::create().unwrap();
        m.word(1, TAIL)
            .store(RING_CAP as u64 + 1, Ordering::Relaxed);
        let mut b = [0u8; 8];
        // SAFETY: single thread; buffers are ours.
        let e = unsafe { read(&m, 1, b.as_mut_ptr(), b.len()) }.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // SAFETY: as above.
        let e = unsafe { write(&m, 1, &iov(&b), &AtomicU64::new(0)) }.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn the_doorbell_flag_reports_bytes_that_are_already_there() {
        let (_fd, m) = Mapping::create().unwrap();
        let seen = AtomicU64::new(0);
        assert!(!set_sleeping(&m, 0, true));
        // SAFETY: single thread; buffers are ours.
        let (_, bell) = unsafe { write(&m, 0, &iov(b"x"), &seen) }.unwrap();
        assert!(bell, "a sleeping reader gets the doorbell");
        assert!(
            set_sleeping(&m, 0, true),
            "data already waiting: do not sleep"
        );
        set_sleeping(&m, 0, false);
        // SAFETY: as above.
        let (_, bell) = unsafe { write(&m, 0, &iov(b"y"), &seen) }.unwrap();
        assert!(!bell, "a polling reader gets no doorbell");
    }
}
