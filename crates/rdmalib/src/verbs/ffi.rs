//! Every raw libibverbs / librdmacm call of the verbs provider, fenced in one module.
//!
//! Each type below owns exactly one C object and holds `Arc`s on the objects it depends on,
//! so a parent is never destroyed before its children:
//!
//! | type           | owns                                             | destroyed by                          | keeps alive |
//! |----------------|--------------------------------------------------|---------------------------------------|-------------|
//! | [`Device`]     | an `rdma_get_devices` list and one context in it | `rdma_free_devices`                   | —           |
//! | [`Pd`]         | `ibv_pd`                                         | `ibv_dealloc_pd`                      | `Device`    |
//! | [`Mr`]         | `ibv_mr`                                         | `ibv_dereg_mr`                        | `Pd`        |
//! | [`Cq`]         | `ibv_cq` and its own `ibv_comp_channel`          | `ibv_destroy_cq`, then the channel    | `Device`    |
//! | [`EventChannel`] | `rdma_event_channel` (fd non-blocking)         | `rdma_destroy_event_channel`          | —           |
//! | [`CmId`]       | `rdma_cm_id` and, after `create_qp`, its RC QP   | `rdma_destroy_qp`, `rdma_destroy_id`  | `EventChannel`; the QP's `Pd` and `Cq`s |
//!
//! Invariants the `unsafe` blocks rely on:
//!
//! 1. A handle's pointer is non-null, came from the matching create call and is destroyed
//!    exactly once, in `Drop`. `Drop::drop` runs before the fields drop, so the parents held
//!    in fields outlive the object.
//! 2. The device context comes from `rdma_get_devices`, i.e. it is the context librdmacm
//!    itself uses; `rdma_create_qp` requires the PD to belong to the cm id's context.
//! 3. libibverbs and librdmacm are thread-safe: posting, polling, arming and modifying one
//!    QP/CQ from several threads is allowed (providers lock internally). The fields we read
//!    back from C structs (`lkey`, `rkey`, `qp_num`, `fd`, addresses) are written by the call
//!    that created the object, or by bind/resolve before the value is shared.
//! 4. A CM event is copied and acknowledged inside [`EventChannel::next_event`] before it is
//!    looked at, so no event is ever held unacknowledged: `rdma_destroy_id`, which waits for
//!    the acknowledgement of every event reported for its id, never waits on us.
//! 5. The buffer of a work request is a [`RawSge`] made from a checked `Sge` of a live
//!    registered region. Deregistering a region revokes the NIC's access, so a request that
//!    outlives its region fails with a protection error instead of touching freed memory.

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::os::raw::{c_int, c_void};
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdma_mummy_sys as sys;
use sys::rdma_cm_event_type as ev;

use crate::error::{Error, Result};
use crate::types::{Access, Completion, Opcode, RawSge, RemoteBuffer, SendFlags, Status};

/// An error for a call that reported failure through `errno`. `errno` is read before `what`
/// runs, so formatting the message cannot clobber it.
fn errno_error(what: impl FnOnce() -> String) -> Error {
    let source = io::Error::last_os_error();
    Error::io(what(), source)
}

/// Checks an ibverbs return value: 0, or the errno value (a few old calls return -1 and set
/// `errno`).
fn check_ibv(ret: c_int, what: impl FnOnce() -> String) -> Result<()> {
    match ret {
        0 => Ok(()),
        r if r > 0 => Err(Error::io(what(), io::Error::from_raw_os_error(r))),
        _ => Err(errno_error(what)),
    }
}

/// Checks a librdmacm return value: 0, or -1 with `errno` set.
fn check_cm(ret: c_int, what: impl FnOnce() -> String) -> Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(errno_error(what))
    }
}

fn clamp_u8(v: c_int) -> u8 {
    u8::try_from(v.max(0)).unwrap_or(u8::MAX)
}

fn clamp_u32(v: c_int) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Device

/// The list `rdma_get_devices` returned; freeing it drops librdmacm's reference on each context.
struct DeviceList(NonNull<*mut sys::ibv_context>);

impl Drop for DeviceList {
    fn drop(&mut self) {
        // SAFETY: the list came from rdma_get_devices and is freed once, here.
        unsafe { sys::rdma_free_devices(self.0.as_ptr()) };
    }
}

/// Limits of a device that connection setup needs.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Largest completion queue.
    pub max_cqe: u32,
    /// RDMA reads/atomics this side may have outstanding as a responder.
    pub responder_resources: u8,
    /// RDMA reads/atomics this side may have outstanding as an initiator.
    pub initiator_depth: u8,
}

/// One RDMA device as librdmacm sees it: the context that cm ids bound to the device use.
pub(super) struct Device {
    ctx: NonNull<sys::ibv_context>,
    name: String,
    limits: Limits,
    // Keeps librdmacm's reference on `ctx`; dropped (freed) last.
    _list: DeviceList,
}

// SAFETY: an ibv_context is thread-safe (invariant 3); `name` and `limits` are plain data
// written before the value is shared, and the list is only touched again in Drop.
unsafe impl Send for Device {}
// SAFETY: see Send; no method mutates the device.
unsafe impl Sync for Device {}

impl Device {
    /// Opens the device called `name`; `Ok(None)` when librdmacm does not list it.
    pub(super) fn open(name: &str) -> Result<Option<Device>> {
        let mut count: c_int = 0;
        // SAFETY: rdma_get_devices only writes `count`; it returns NULL (errno set) or a
        // NULL-terminated array that we own until rdma_free_devices.
        let list = unsafe { sys::rdma_get_devices(&mut count) };
        let Some(list) = NonNull::new(list) else {
            return Err(errno_error(|| "rdma_get_devices".to_string()));
        };
        let list = DeviceList(list);
        let mut found = None;
        for i in 0..usize::try_from(count).unwrap_or(0) {
            // SAFETY: the array holds `count` entries followed by a NULL.
            let ctx = unsafe { *list.0.as_ptr().add(i) };
            let Some(ctx) = NonNull::new(ctx) else { break };
            // SAFETY: `ctx` is an open context of the list, so its device pointer is valid;
            // ibv_get_device_name returns NULL or a NUL-terminated name owned by the device,
            // which we copy at once.
            let dev_name = unsafe {
                let n = sys::ibv_get_device_name((*ctx.as_ptr()).device);
                if n.is_null() {
                    None
                } else {
                    Some(CStr::from_ptr(n).to_string_lossy().into_owned())
                }
            };
            if dev_name.as_deref() == Some(name) {
                found = Some(ctx);
                break;
            }
        }
        let Some(ctx) = found else { return Ok(None) };
        // SAFETY: all-zero is a valid ibv_device_attr (integers and byte arrays).
        let mut attr: sys::ibv_device_attr = unsafe { std::mem::zeroed() };
        // SAFETY: `ctx` is open (the list holds a reference) and `attr` is writable.
        let ret = unsafe { sys::ibv_query_device(ctx.as_ptr(), &mut attr) };
        check_ibv(ret, || format!("ibv_query_device on {name}"))?;
        let limits = Limits {
            max_cqe: clamp_u32(attr.max_cqe),
            responder_resources: clamp_u8(attr.max_qp_rd_atom),
            initiator_depth: clamp_u8(attr.max_qp_init_rd_atom),
        };
        Ok(Some(Device {
            ctx,
            name: name.to_string(),
            limits,
            _list: list,
        }))
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn limits(&self) -> Limits {
        self.limits
    }

    /// Identifies the context, to compare with [`CmId::device_key`].
    pub(super) fn key(&self) -> usize {
        self.ctx.as_ptr() as usize
    }
}

// ---------------------------------------------------------------------------------------------
// Protection domain and memory regions

/// A protection domain (`ibv_alloc_pd`).
pub(crate) struct Pd {
    pd: NonNull<sys::ibv_pd>,
    dev: Arc<Device>,
}

// SAFETY: an ibv_pd may be used from any thread (invariant 3); the pointer is only read.
unsafe impl Send for Pd {}
// SAFETY: see Send.
unsafe impl Sync for Pd {}

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: allocated in `alloc`, deallocated once; every MR and QP on it holds an
        // Arc<Pd>, so none is left.
        let ret = unsafe { sys::ibv_dealloc_pd(self.pd.as_ptr()) };
        if ret != 0 {
            tracing::warn!(
                "ibv_dealloc_pd on {}: {}",
                self.dev.name,
                io::Error::from_raw_os_error(ret)
            );
        }
    }
}

impl Pd {
    pub(super) fn alloc(dev: &Arc<Device>) -> Result<Arc<Pd>> {
        // SAFETY: the context is open while `dev` lives.
        let pd = unsafe { sys::ibv_alloc_pd(dev.ctx.as_ptr()) };
        let pd = NonNull::new(pd)
            .ok_or_else(|| errno_error(|| format!("ibv_alloc_pd on {}", dev.name)))?;
        Ok(Arc::new(Pd {
            pd,
            dev: dev.clone(),
        }))
    }

    pub(super) fn device(&self) -> &Arc<Device> {
        &self.dev
    }

    /// Registers `ptr..ptr+len` (`ibv_reg_mr`).
    ///
    /// # Safety
    ///
    /// As for [`ProtectionDomain::register_raw`](crate::ProtectionDomain::register_raw): the
    /// range must stay valid and in place until the returned [`Mr`] is dropped.
    pub(crate) unsafe fn register(
        self: &Arc<Self>,
        ptr: *mut u8,
        len: usize,
        access: Access,
    ) -> Result<Mr> {
        let flags = access_flags(access);
        // SAFETY: the PD is live; the caller guarantees the range (this function's contract).
        let mr = unsafe { sys::ibv_reg_mr(self.pd.as_ptr(), ptr.cast::<c_void>(), len, flags) };
        let mr = NonNull::new(mr).ok_or_else(|| {
            errno_error(|| {
                format!(
                    "ibv_reg_mr of {len} bytes at {ptr:p} with {access:?} on {}",
                    self.dev.name
                )
            })
        })?;
        // SAFETY: a successful ibv_reg_mr returns a valid ibv_mr whose keys never change.
        let (lkey, rkey) = unsafe { ((*mr.as_ptr()).lkey, (*mr.as_ptr()).rkey) };
        Ok(Mr {
            mr,
            lkey,
            rkey,
            _pd: self.clone(),
        })
    }

    fn raw(&self) -> *mut sys::ibv_pd {
        self.pd.as_ptr()
    }
}

/// Our access bits are the `IBV_ACCESS_*` values; verbs also demands local write whenever
/// remote write or remote atomics are granted, so it is added then.
fn access_flags(access: Access) -> c_int {
    let mut flags = sys::ibv_access_flags(0);
    let remote_write_or_atomic =
        access.contains(Access::REMOTE_WRITE) || access.contains(Access::REMOTE_ATOMIC);
    if access.contains(Access::LOCAL_WRITE) || remote_write_or_atomic {
        flags |= sys::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE;
    }
    if access.contains(Access::REMOTE_WRITE) {
        flags |= sys::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE;
    }
    if access.contains(Access::REMOTE_READ) {
        flags |= sys::ibv_access_flags::IBV_ACCESS_REMOTE_READ;
    }
    if access.contains(Access::REMOTE_ATOMIC) {
        flags |= sys::ibv_access_flags::IBV_ACCESS_REMOTE_ATOMIC;
    }
    flags.0 as c_int
}

/// A registered memory region (`ibv_reg_mr`); deregistered on drop.
pub(crate) struct Mr {
    mr: NonNull<sys::ibv_mr>,
    lkey: u32,
    rkey: u32,
    _pd: Arc<Pd>,
}

// SAFETY: the ibv_mr is only passed to ibv_dereg_mr in Drop; the keys are copies.
unsafe impl Send for Mr {}
// SAFETY: see Send.
unsafe impl Sync for Mr {}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: registered in `Pd::register`, deregistered once; the PD is still alive.
        let ret = unsafe { sys::ibv_dereg_mr(self.mr.as_ptr()) };
        if ret != 0 {
            tracing::warn!("ibv_dereg_mr: {}", io::Error::from_raw_os_error(ret));
        }
    }
}

impl Mr {
    pub(crate) fn lkey(&self) -> u32 {
        self.lkey
    }

    pub(crate) fn rkey(&self) -> u32 {
        self.rkey
    }
}

// ---------------------------------------------------------------------------------------------
// Completion queues

struct CompChannel(NonNull<sys::ibv_comp_channel>);

impl Drop for CompChannel {
    fn drop(&mut self) {
        // SAFETY: created by ibv_create_comp_channel; the CQ using it is destroyed first
        // (Cq::drop runs before Cq's fields drop).
        let ret = unsafe { sys::ibv_destroy_comp_channel(self.0.as_ptr()) };
        if ret != 0 {
            tracing::warn!(
                "ibv_destroy_comp_channel: {}",
                io::Error::from_raw_os_error(ret)
            );
        }
    }
}

/// A completion queue with its own completion channel (non-blocking fd).
pub(crate) struct Cq {
    cq: NonNull<sys::ibv_cq>,
    channel: CompChannel,
    fd: RawFd,
    dev: Arc<Device>,
}

// SAFETY: ibv_poll_cq, ibv_req_notify_cq and ibv_get_cq_event are thread-safe (invariant 3);
// events are acknowledged right after they are taken, so no state is kept on our side.
unsafe impl Send for Cq {}
// SAFETY: see Send.
unsafe impl Sync for Cq {}

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: created in `create`, destroyed once; every QP using it holds an Arc<Cq> and
        // every channel event was acknowledged in `wait`.
        let ret = unsafe { sys::ibv_destroy_cq(self.cq.as_ptr()) };
        if ret != 0 {
            tracing::warn!(
                "ibv_destroy_cq on {}: {}",
                self.dev.name,
                io::Error::from_raw_os_error(ret)
            );
        }
    }
}

/// Completions taken per `ibv_poll_cq` call.
const POLL_BATCH: usize = 16;

impl Cq {
    pub(super) fn create(dev: &Arc<Device>, capacity: u32) -> Result<Arc<Cq>> {
        let max = dev.limits.max_cqe;
        let cqe = c_int::try_from(capacity)
            .ok()
            .filter(|&c| c > 0 && (max == 0 || capacity <= max));
        let Some(cqe) = cqe else {
            return Err(Error::InvalidArgument(format!(
                "a completion queue of {capacity} entries; {} allows 1 to {max}",
                dev.name
            )));
        };
        // SAFETY: the context is open while `dev` lives.
        let channel = unsafe { sys::ibv_create_comp_channel(dev.ctx.as_ptr()) };
        let channel = NonNull::new(channel)
            .map(CompChannel)
            .ok_or_else(|| errno_error(|| format!("ibv_create_comp_channel on {}", dev.name)))?;
        // SAFETY: the channel is live; `fd` is set by its creation and never changes.
        let fd = unsafe { (*channel.0.as_ptr()).fd };
        set_nonblocking(fd)
            .map_err(|e| Error::io("making the completion channel non-blocking", e))?;
        // SAFETY: context and channel are live; the CQ keeps no pointer to our stack.
        let cq = unsafe {
            sys::ibv_create_cq(
                dev.ctx.as_ptr(),
                cqe,
                ptr::null_mut(),
                channel.0.as_ptr(),
                0,
            )
        };
        let cq = NonNull::new(cq).ok_or_else(|| {
            errno_error(|| format!("ibv_create_cq of {capacity} entries on {}", dev.name))
        })?;
        Ok(Arc::new(Cq {
            cq,
            channel,
            fd,
            dev: dev.clone(),
        }))
    }

    pub(super) fn device(&self) -> &Arc<Device> {
        &self.dev
    }

    fn raw(&self) -> *mut sys::ibv_cq {
        self.cq.as_ptr()
    }

    /// `ibv_poll_cq` into `out`, in batches, until the queue is empty or `out` is full.
    pub(super) fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        let mut done = 0;
        while done < out.len() {
            let want = (out.len() - done).min(POLL_BATCH);
            // Only the entries handed to the provider are initialised (zeroed: a valid
            // ibv_wc, since it holds integers and a union of two u32), because providers may
            // leave fields of failed completions unwritten.
            let mut wc = [const { MaybeUninit::<sys::ibv_wc>::uninit() }; POLL_BATCH];
            for entry in &mut wc[..want] {
                *entry = MaybeUninit::zeroed();
            }
            // SAFETY: the CQ is live and `wc` has room for `want` entries.
            let n = unsafe {
                sys::ibv_poll_cq(self.cq.as_ptr(), want as c_int, wc.as_mut_ptr().cast())
            };
            let Ok(n) = usize::try_from(n) else {
                return Err(Error::io(
                    format!("ibv_poll_cq on {}", self.dev.name),
                    io::Error::other(format!("returned {n}")),
                ));
            };
            let n = n.min(want);
            for (dst, src) in out[done..done + n].iter_mut().zip(&wc[..n]) {
                // SAFETY: entries below `want` were zeroed (a valid ibv_wc) and then written
                // by the provider.
                *dst = completion(unsafe { src.assume_init_ref() });
            }
            done += n;
            if n < want {
                break;
            }
        }
        Ok(done)
    }

    /// `ibv_req_notify_cq`.
    pub(super) fn req_notify(&self, solicited_only: bool) -> Result<()> {
        // SAFETY: the CQ is live.
        let ret = unsafe { sys::ibv_req_notify_cq(self.cq.as_ptr(), c_int::from(solicited_only)) };
        check_ibv(ret, || format!("ibv_req_notify_cq on {}", self.dev.name))
    }

    /// Takes and acknowledges one event of the channel, if one is there (never blocks).
    pub(super) fn take_event(&self) -> Result<bool> {
        let mut cq: *mut sys::ibv_cq = ptr::null_mut();
        let mut ctx: *mut c_void = ptr::null_mut();
        // SAFETY: the channel is live; the out pointers are valid. The fd is non-blocking, so
        // this returns EAGAIN when there is no event (or another thread took it first).
        let ret = unsafe { sys::ibv_get_cq_event(self.channel.0.as_ptr(), &mut cq, &mut ctx) };
        if ret == 0 {
            // SAFETY: `cq` is the CQ the event belongs to (ours: the channel serves only it);
            // one event taken, one acknowledged.
            unsafe { sys::ibv_ack_cq_events(cq, 1) };
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Ok(false);
        }
        Err(Error::io(
            format!("ibv_get_cq_event on {}", self.dev.name),
            e,
        ))
    }

    /// The completion channel's file descriptor.
    pub(super) fn fd(&self) -> RawFd {
        self.fd
    }
}

/// An `ibv_wc` as a [`Completion`]: every field for a success, only `wr_id`, `status` and
/// `qp_num` for a failure (verbs leaves the others undefined there).
fn completion(wc: &sys::ibv_wc) -> Completion {
    use sys::ibv_wc_opcode as op;
    use sys::ibv_wc_status as st;
    let status = match wc.status {
        st::IBV_WC_SUCCESS => Status::Success,
        st::IBV_WC_LOC_LEN_ERR => Status::LocalLengthError,
        st::IBV_WC_LOC_PROT_ERR => Status::LocalProtectionError,
        st::IBV_WC_LOC_ACCESS_ERR => Status::LocalAccessError,
        st::IBV_WC_REM_ACCESS_ERR => Status::RemoteAccessError,
        st::IBV_WC_REM_INV_REQ_ERR => Status::RemoteInvalidRequest,
        st::IBV_WC_REM_OP_ERR => Status::RemoteOperationError,
        st::IBV_WC_LOC_QP_OP_ERR => Status::LocalQpOperationError,
        st::IBV_WC_WR_FLUSH_ERR => Status::WrFlushError,
        st::IBV_WC_RETRY_EXC_ERR => Status::RetryExceeded,
        other => Status::Other(other),
    };
    if status != Status::Success {
        return Completion::error(wc.wr_id, status, wc.qp_num);
    }
    let opcode = match wc.opcode {
        op::IBV_WC_SEND => Opcode::Send,
        op::IBV_WC_RDMA_WRITE => Opcode::Write,
        op::IBV_WC_RDMA_READ => Opcode::Read,
        op::IBV_WC_FETCH_ADD => Opcode::FetchAdd,
        op::IBV_WC_RECV => Opcode::Recv,
        op::IBV_WC_RECV_RDMA_WITH_IMM => Opcode::RecvRdmaWithImm,
        // Requests this crate never posts (compare-and-swap, binds, TSO, ...).
        other => {
            tracing::warn!("ignoring the opcode {other} of a completion");
            Opcode::Send
        }
    };
    let imm = (wc.wc_flags & sys::ibv_wc_flags::IBV_WC_WITH_IMM.0 != 0)
        // SAFETY: both union members are u32, so either reads an initialised u32.
        .then(|| u32::from_be(unsafe { wc.imm_data_invalidated_rkey_union.imm_data }));
    Completion::success(wc.wr_id, opcode, wc.byte_len, imm, wc.qp_num)
}

// ---------------------------------------------------------------------------------------------
// Connection manager

/// An `rdma_event_channel` with a non-blocking fd.
pub(super) struct EventChannel {
    ch: NonNull<sys::rdma_event_channel>,
    fd: RawFd,
}

// SAFETY: rdma_get_cm_event/rdma_ack_cm_event are thread-safe; the channel is only destroyed
// in Drop, after every cm id on it (each holds an Arc<EventChannel>).
unsafe impl Send for EventChannel {}
// SAFETY: see Send.
unsafe impl Sync for EventChannel {}

impl Drop for EventChannel {
    fn drop(&mut self) {
        // SAFETY: created in `create`; all ids on it are destroyed (they hold Arcs on it) and
        // all events were acknowledged (invariant 4).
        unsafe { sys::rdma_destroy_event_channel(self.ch.as_ptr()) };
    }
}

/// A CM event, copied out of librdmacm's event (which is acknowledged already).
pub(super) struct CmEvent {
    /// `RDMA_CM_EVENT_*`.
    pub kind: u32,
    /// The event's status: negative errno, or a transport reason (IB CM reject reason).
    pub status: i32,
    /// [`CmId::key`] of the id the event is about (the new id for a connect request).
    pub id: usize,
    /// [`CmId::key`] of the listening id, for a connect request.
    pub listen_id: usize,
    /// Private data of connect requests, rejects and establishment.
    pub private_data: Vec<u8>,
    /// The peer's initiator depth (connect requests).
    pub initiator_depth: u8,
    /// The peer's responder resources (connect requests).
    pub responder_resources: u8,
    /// The new id of a connect request, now owned by us.
    pub request: Option<CmId>,
}

impl EventChannel {
    pub(super) fn create() -> Result<Arc<EventChannel>> {
        // SAFETY: no arguments; returns NULL (errno set) or a new channel we own.
        let ch = unsafe { sys::rdma_create_event_channel() };
        let ch = NonNull::new(ch)
            .ok_or_else(|| errno_error(|| "rdma_create_event_channel".to_string()))?;
        // SAFETY: the channel is live; `fd` is set by its creation and never changes.
        let fd = unsafe { (*ch.as_ptr()).fd };
        let channel = Arc::new(EventChannel { ch, fd });
        set_nonblocking(fd)
            .map_err(|e| Error::io("making the rdma_cm event channel non-blocking", e))?;
        Ok(channel)
    }

    pub(super) fn fd(&self) -> RawFd {
        self.fd
    }

    /// Takes the next event without blocking (`Ok(None)` when there is none), copies it and
    /// acknowledges it (invariant 4).
    pub(super) fn next_event(self: &Arc<Self>) -> Result<Option<CmEvent>> {
        let mut event: *mut sys::rdma_cm_event = ptr::null_mut();
        // SAFETY: the channel is live and `event` is a valid out pointer.
        let ret = unsafe { sys::rdma_get_cm_event(self.ch.as_ptr(), &mut event) };
        if ret != 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(Error::io("rdma_get_cm_event", e)),
            };
        }
        let Some(event) = NonNull::new(event) else {
            return Err(Error::io(
                "rdma_get_cm_event",
                io::Error::other("returned no event"),
            ));
        };
        // SAFETY: a successful rdma_get_cm_event hands out a valid event that stays valid
        // until it is acknowledged below.
        let copy = unsafe { self.copy_event(event) };
        // SAFETY: the event came from rdma_get_cm_event on this channel; it is acknowledged
        // exactly once and not read afterwards.
        if unsafe { sys::rdma_ack_cm_event(event.as_ptr()) } != 0 {
            tracing::warn!("rdma_ack_cm_event: {}", io::Error::last_os_error());
        }
        Ok(Some(copy))
    }

    /// # Safety
    ///
    /// `event` must be a valid, not yet acknowledged event of this channel.
    unsafe fn copy_event(self: &Arc<Self>, event: NonNull<sys::rdma_cm_event>) -> CmEvent {
        // SAFETY: valid per this function's contract; only read.
        let e = unsafe { event.as_ref() };
        let kind = e.event;
        let with_conn_param = matches!(
            kind,
            ev::RDMA_CM_EVENT_CONNECT_REQUEST
                | ev::RDMA_CM_EVENT_CONNECT_RESPONSE
                | ev::RDMA_CM_EVENT_REJECTED
                | ev::RDMA_CM_EVENT_ESTABLISHED
        );
        let (private_data, initiator_depth, responder_resources) = if with_conn_param {
            // SAFETY: for these events of an RDMA_PS_TCP id, librdmacm fills `param.conn`.
            let p = unsafe { e.param.conn };
            let data = if p.private_data.is_null() || p.private_data_len == 0 {
                Vec::new()
            } else {
                // SAFETY: librdmacm points `private_data` at `private_data_len` bytes that
                // live as long as the event.
                unsafe {
                    std::slice::from_raw_parts(
                        p.private_data.cast::<u8>(),
                        usize::from(p.private_data_len),
                    )
                }
                .to_vec()
            };
            (data, p.initiator_depth, p.responder_resources)
        } else {
            (Vec::new(), 0, 0)
        };
        let request = if kind == ev::RDMA_CM_EVENT_CONNECT_REQUEST {
            // A connect request hands us a new id on this channel, which we must destroy.
            NonNull::new(e.id).map(|id| CmId {
                id,
                qp: None,
                _channel: self.clone(),
            })
        } else {
            None
        };
        CmEvent {
            kind,
            status: e.status,
            id: e.id as usize,
            listen_id: e.listen_id as usize,
            private_data,
            initiator_depth,
            responder_resources,
            request,
        }
    }
}

/// Name of an `RDMA_CM_EVENT_*` value, for messages.
pub(super) fn event_name(kind: u32) -> &'static str {
    match kind {
        ev::RDMA_CM_EVENT_ADDR_RESOLVED => "ADDR_RESOLVED",
        ev::RDMA_CM_EVENT_ADDR_ERROR => "ADDR_ERROR",
        ev::RDMA_CM_EVENT_ROUTE_RESOLVED => "ROUTE_RESOLVED",
        ev::RDMA_CM_EVENT_ROUTE_ERROR => "ROUTE_ERROR",
        ev::RDMA_CM_EVENT_CONNECT_REQUEST => "CONNECT_REQUEST",
        ev::RDMA_CM_EVENT_CONNECT_RESPONSE => "CONNECT_RESPONSE",
        ev::RDMA_CM_EVENT_CONNECT_ERROR => "CONNECT_ERROR",
        ev::RDMA_CM_EVENT_UNREACHABLE => "UNREACHABLE",
        ev::RDMA_CM_EVENT_REJECTED => "REJECTED",
        ev::RDMA_CM_EVENT_ESTABLISHED => "ESTABLISHED",
        ev::RDMA_CM_EVENT_DISCONNECTED => "DISCONNECTED",
        ev::RDMA_CM_EVENT_DEVICE_REMOVAL => "DEVICE_REMOVAL",
        ev::RDMA_CM_EVENT_ADDR_CHANGE => "ADDR_CHANGE",
        ev::RDMA_CM_EVENT_TIMEWAIT_EXIT => "TIMEWAIT_EXIT",
        _ => "unknown rdma_cm event",
    }
}

/// QP capabilities (one SGE each way).
#[derive(Clone, Copy, Debug)]
pub(super) struct QpCaps {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_inline_data: u32,
}

/// Connection parameters of `rdma_connect`/`rdma_accept`.
pub(super) struct ConnParams<'a> {
    pub private_data: &'a [u8],
    pub responder_resources: u8,
    pub initiator_depth: u8,
}

impl ConnParams<'_> {
    fn raw(&self) -> Result<sys::rdma_conn_param> {
        let len = u8::try_from(self.private_data.len()).map_err(|_| {
            Error::InvalidArgument(format!(
                "{} bytes of private data; rdma_cm allows 255",
                self.private_data.len()
            ))
        })?;
        Ok(sys::rdma_conn_param {
            private_data: if len == 0 {
                ptr::null()
            } else {
                self.private_data.as_ptr().cast()
            },
            private_data_len: len,
            responder_resources: self.responder_resources,
            initiator_depth: self.initiator_depth,
            flow_control: 1,
            // As rFaaS: the most transport and receiver-not-ready retries (7 = RNR forever).
            retry_count: 7,
            rnr_retry_count: 7,
            srq: 0,
            qp_num: 0,
        })
    }
}

/// What a send-queue work request does.
#[derive(Clone, Copy, Debug)]
pub(super) enum SendOp {
    Send {
        imm: Option<u32>,
    },
    Write {
        remote: RemoteBuffer,
        imm: Option<u32>,
    },
    FetchAdd {
        remote: RemoteBuffer,
        add: u64,
    },
}

impl SendOp {
    fn name(self) -> &'static str {
        match self {
            SendOp::Send { imm: None } => "send",
            SendOp::Send { imm: Some(_) } => "send with immediate",
            SendOp::Write { imm: None, .. } => "RDMA write",
            SendOp::Write { imm: Some(_), .. } => "RDMA write with immediate",
            SendOp::FetchAdd { .. } => "atomic fetch-and-add",
        }
    }
}

struct QpParts {
    qp: NonNull<sys::ibv_qp>,
    qp_num: u32,
    _pd: Arc<Pd>,
    _send_cq: Arc<Cq>,
    _recv_cq: Arc<Cq>,
}

/// An `rdma_cm_id` on an [`EventChannel`], with its RC QP once [`create_qp`](Self::create_qp)
/// made one.
pub(super) struct CmId {
    id: NonNull<sys::rdma_cm_id>,
    qp: Option<QpParts>,
    _channel: Arc<EventChannel>,
}

// SAFETY: librdmacm calls on one id may come from any thread, and posting/modifying its QP is
// thread-safe (invariant 3). The fields of the C id we read (`verbs`, the route's addresses,
// `qp`) are set by bind/resolve/create_qp, which run before the id is shared.
unsafe impl Send for CmId {}
// SAFETY: see Send.
unsafe impl Sync for CmId {}

impl Drop for CmId {
    fn drop(&mut self) {
        if self.qp.is_some() {
            // SAFETY: the QP was created by rdma_create_qp on this id and is destroyed once.
            unsafe { sys::rdma_destroy_qp(self.id.as_ptr()) };
        }
        // SAFETY: the id is ours and destroyed once; its QP is gone and all its events are
        // acknowledged (invariant 4), so this does not block.
        if unsafe { sys::rdma_destroy_id(self.id.as_ptr()) } != 0 {
            tracing::warn!("rdma_destroy_id: {}", io::Error::last_os_error());
        }
    }
}

impl CmId {
    /// `rdma_create_id` on `channel`, for reliable connections (`RDMA_PS_TCP`).
    pub(super) fn create(channel: &Arc<EventChannel>) -> Result<CmId> {
        let mut id: *mut sys::rdma_cm_id = ptr::null_mut();
        // SAFETY: the channel is live and `id` is a valid out pointer.
        let ret = unsafe {
            sys::rdma_create_id(
                channel.ch.as_ptr(),
                &mut id,
                ptr::null_mut(),
                sys::rdma_port_space::RDMA_PS_TCP,
            )
        };
        check_cm(ret, || "rdma_create_id".to_string())?;
        let id = NonNull::new(id)
            .ok_or_else(|| Error::io("rdma_create_id", io::Error::other("returned no id")))?;
        Ok(CmId {
            id,
            qp: None,
            _channel: channel.clone(),
        })
    }

    /// Identifies the id in events ([`CmEvent::id`], [`CmEvent::listen_id`]).
    pub(super) fn key(&self) -> usize {
        self.id.as_ptr() as usize
    }

    /// The device context the id is bound to ([`Device::key`]), 0 when unbound.
    pub(super) fn device_key(&self) -> usize {
        // SAFETY: the id is live; `verbs` is set by bind/resolve/connect request.
        unsafe { (*self.id.as_ptr()).verbs as usize }
    }

    /// `rdma_bind_addr`.
    pub(super) fn bind(&self, addr: SocketAddr) -> Result<()> {
        let mut sa = sockaddr_from(addr);
        // SAFETY: the id is live; `sa` holds a valid sockaddr of the family it declares and
        // librdmacm copies it.
        let ret = unsafe { sys::rdma_bind_addr(self.id.as_ptr(), (&raw mut sa).cast()) };
        check_cm(ret, || format!("rdma_bind_addr to {addr}"))
    }

    /// `rdma_listen`.
    pub(super) fn listen(&self, backlog: c_int) -> Result<()> {
        // SAFETY: the id is live and bound.
        let ret = unsafe { sys::rdma_listen(self.id.as_ptr(), backlog) };
        check_cm(ret, || "rdma_listen".to_string())
    }

    /// `rdma_resolve_addr` from `src` (or any local address) to `dst`.
    pub(super) fn resolve_addr(
        &self,
        src: Option<SocketAddr>,
        dst: SocketAddr,
        timeout_ms: c_int,
    ) -> Result<()> {
        let mut src_sa = src.map(sockaddr_from);
        let mut dst_sa = sockaddr_from(dst);
        let src_ptr = match &mut src_sa {
            Some(sa) => ptr::from_mut(sa).cast(),
            None => ptr::null_mut(),
        };
        // SAFETY: the id is live; the sockaddrs are valid for the call and copied by it.
        let ret = unsafe {
            sys::rdma_resolve_addr(
                self.id.as_ptr(),
                src_ptr,
                (&raw mut dst_sa).cast(),
                timeout_ms,
            )
        };
        check_cm(ret, || format!("rdma_resolve_addr to {dst}"))
    }

    /// `rdma_resolve_route`.
    pub(super) fn resolve_route(&self, timeout_ms: c_int) -> Result<()> {
        // SAFETY: the id is live with a resolved address.
        let ret = unsafe { sys::rdma_resolve_route(self.id.as_ptr(), timeout_ms) };
        check_cm(ret, || "rdma_resolve_route".to_string())
    }

    /// The local address (after bind, resolve or a connect request).
    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
        // SAFETY: the id is live; the route's address union is sockaddr storage that librdmacm
        // zero-initialises and fills; we copy it.
        let sa = unsafe { (*self.id.as_ptr()).route.addr.src_addr_union.src_storage };
        sockaddr_to(&sa)
    }

    /// The peer's address (after resolve or a connect request).
    pub(super) fn peer_addr(&self) -> Option<SocketAddr> {
        // SAFETY: as in `local_addr`.
        let sa = unsafe { (*self.id.as_ptr()).route.addr.dst_addr_union.dst_storage };
        sockaddr_to(&sa)
    }

    /// `rdma_create_qp`: an RC QP on `pd` with the given CQs and one SGE each way; returns
    /// its number. The QP keeps `pd` and the CQs alive.
    pub(super) fn create_qp(
        &mut self,
        pd: &Arc<Pd>,
        send_cq: &Arc<Cq>,
        recv_cq: &Arc<Cq>,
        caps: QpCaps,
    ) -> Result<u32> {
        if self.qp.is_some() {
            return Err(Error::InvalidArgument(
                "the connection already has a queue pair".into(),
            ));
        }
        let mut attr = sys::ibv_qp_init_attr {
            qp_context: ptr::null_mut(),
            send_cq: send_cq.raw(),
            recv_cq: recv_cq.raw(),
            srq: ptr::null_mut(),
            cap: sys::ibv_qp_cap {
                max_send_wr: caps.max_send_wr,
                max_recv_wr: caps.max_recv_wr,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: caps.max_inline_data,
            },
            qp_type: sys::ibv_qp_type::IBV_QPT_RC,
            sq_sig_all: 0,
        };
        // SAFETY: the id is live and bound to the PD's device (callers check); PD and CQs are
        // live and kept alive by the QpParts stored below; `attr` is valid for the call.
        let ret = unsafe { sys::rdma_create_qp(self.id.as_ptr(), pd.raw(), &mut attr) };
        check_cm(ret, || {
            format!(
                "rdma_create_qp (RC, {} send / {} receive requests, {} B inline)",
                caps.max_send_wr, caps.max_recv_wr, caps.max_inline_data
            )
        })?;
        // SAFETY: a successful rdma_create_qp stores the new QP in the id.
        let qp = unsafe { (*self.id.as_ptr()).qp };
        let Some(qp) = NonNull::new(qp) else {
            return Err(Error::io(
                "rdma_create_qp",
                io::Error::other("no QP was created"),
            ));
        };
        // SAFETY: the QP is live; its number never changes.
        let qp_num = unsafe { (*qp.as_ptr()).qp_num };
        self.qp = Some(QpParts {
            qp,
            qp_num,
            _pd: pd.clone(),
            _send_cq: send_cq.clone(),
            _recv_cq: recv_cq.clone(),
        });
        Ok(qp_num)
    }

    /// `rdma_connect`.
    pub(super) fn connect(&self, params: &ConnParams<'_>) -> Result<()> {
        let mut p = params.raw()?;
        // SAFETY: the id is live with a resolved route and a QP; `p` and the private data it
        // points to outlive the call, which copies them.
        let ret = unsafe { sys::rdma_connect(self.id.as_ptr(), &mut p) };
        check_cm(ret, || "rdma_connect".to_string())
    }

    /// `rdma_accept`.
    pub(super) fn accept(&self, params: &ConnParams<'_>) -> Result<()> {
        let mut p = params.raw()?;
        // SAFETY: the id is a connect request's id with a QP; `p` and the private data
        // outlive the call, which copies them.
        let ret = unsafe { sys::rdma_accept(self.id.as_ptr(), &mut p) };
        check_cm(ret, || "rdma_accept".to_string())
    }

    /// `rdma_reject` with `private_data`.
    pub(super) fn reject(&self, private_data: &[u8]) -> Result<()> {
        let len = u8::try_from(private_data.len()).map_err(|_| {
            Error::InvalidArgument(format!(
                "{} bytes of private data; rdma_cm allows 255",
                private_data.len()
            ))
        })?;
        let data = if len == 0 {
            ptr::null()
        } else {
            private_data.as_ptr().cast()
        };
        // SAFETY: the id is a connect request's id; the data outlives the call, which copies it.
        let ret = unsafe { sys::rdma_reject(self.id.as_ptr(), data, len) };
        check_cm(ret, || "rdma_reject".to_string())
    }

    /// `rdma_disconnect` (which also moves an IB/RoCE QP to the error state).
    pub(super) fn disconnect(&self) -> Result<()> {
        // SAFETY: the id is live.
        let ret = unsafe { sys::rdma_disconnect(self.id.as_ptr()) };
        check_cm(ret, || "rdma_disconnect".to_string())
    }

    /// `ibv_modify_qp` to `IBV_QPS_ERR`: outstanding requests complete with a flush error.
    pub(super) fn set_qp_error(&self) -> Result<()> {
        let Some(q) = &self.qp else { return Ok(()) };
        // SAFETY: all-zero is a valid ibv_qp_attr (integers and plain structs).
        let mut attr: sys::ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = sys::ibv_qp_state::IBV_QPS_ERR;
        let mask = sys::ibv_qp_attr_mask::IBV_QP_STATE.0 as c_int;
        // SAFETY: the QP is live (destroyed only in Drop); only its state is changed.
        let ret = unsafe { sys::ibv_modify_qp(q.qp.as_ptr(), &mut attr, mask) };
        check_ibv(ret, || {
            format!("ibv_modify_qp of QP {} to the error state", q.qp_num)
        })
    }

    fn qp(&self) -> Result<&QpParts> {
        self.qp.as_ref().ok_or_else(|| {
            Error::InvalidArgument("the connection manager id has no queue pair".into())
        })
    }

    /// `ibv_post_recv` of one SGE (none when `sge` is empty).
    #[inline]
    pub(super) fn post_recv(&self, wr_id: u64, sge: RawSge) -> Result<()> {
        let q = self.qp()?;
        let mut list = sys::ibv_sge {
            addr: sge.addr as u64,
            length: sge.len,
            lkey: sge.lkey,
        };
        let mut wr = sys::ibv_recv_wr {
            wr_id,
            next: ptr::null_mut(),
            sg_list: &mut list,
            num_sge: c_int::from(sge.len > 0),
        };
        let mut bad: *mut sys::ibv_recv_wr = ptr::null_mut();
        // SAFETY: the QP is live; `wr` and `list` are valid for the call (the provider copies
        // them); the buffer lies in a live registered region (invariant 5).
        let ret = unsafe { sys::ibv_post_recv(q.qp.as_ptr(), &mut wr, &mut bad) };
        check_ibv(ret, || format!("ibv_post_recv on QP {}", q.qp_num))
    }

    /// `ibv_post_send` of one request with one SGE (none when `sge` is empty).
    #[inline]
    pub(super) fn post_send(
        &self,
        wr_id: u64,
        sge: RawSge,
        op: SendOp,
        flags: SendFlags,
    ) -> Result<()> {
        let q = self.qp()?;
        let mut list = sys::ibv_sge {
            addr: sge.addr as u64,
            length: sge.len,
            lkey: sge.lkey,
        };
        // SAFETY: all-zero is a valid ibv_send_wr (integers, null pointers, unions of them).
        let mut wr: sys::ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        wr.sg_list = &mut list;
        wr.num_sge = c_int::from(sge.len > 0);
        let mut send_flags = sys::ibv_send_flags(0);
        if flags.signaled {
            send_flags |= sys::ibv_send_flags::IBV_SEND_SIGNALED;
        }
        if flags.inline && !matches!(op, SendOp::FetchAdd { .. }) {
            send_flags |= sys::ibv_send_flags::IBV_SEND_INLINE;
        }
        if flags.solicited {
            send_flags |= sys::ibv_send_flags::IBV_SEND_SOLICITED;
        }
        wr.send_flags = send_flags.0;
        match op {
            SendOp::Send { imm } => {
                wr.opcode = match imm {
                    Some(_) => sys::ibv_wr_opcode::IBV_WR_SEND_WITH_IMM,
                    None => sys::ibv_wr_opcode::IBV_WR_SEND,
                };
                wr.imm_data_invalidated_rkey_union.imm_data = imm.unwrap_or(0).to_be();
            }
            SendOp::Write { remote, imm } => {
                wr.opcode = match imm {
                    Some(_) => sys::ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM,
                    None => sys::ibv_wr_opcode::IBV_WR_RDMA_WRITE,
                };
                wr.imm_data_invalidated_rkey_union.imm_data = imm.unwrap_or(0).to_be();
                wr.wr.rdma = sys::rdma_t {
                    remote_addr: remote.addr,
                    rkey: remote.rkey,
                };
            }
            SendOp::FetchAdd { remote, add } => {
                wr.opcode = sys::ibv_wr_opcode::IBV_WR_ATOMIC_FETCH_AND_ADD;
                wr.wr.atomic = sys::atomic_t {
                    remote_addr: remote.addr,
                    compare_add: add,
                    swap: 0,
                    rkey: remote.rkey,
                };
            }
        }
        let mut bad: *mut sys::ibv_send_wr = ptr::null_mut();
        // SAFETY: the QP is live; `wr` and `list` are valid for the call (the provider copies
        // them, inline data included); the buffer lies in a live registered region
        // (invariant 5).
        let ret = unsafe { sys::ibv_post_send(q.qp.as_ptr(), &mut wr, &mut bad) };
        check_ibv(ret, || {
            format!("ibv_post_send ({}) on QP {}", op.name(), q.qp_num)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Small libc helpers

/// When `timeout` (`None`: never) runs out; `None` also for timeouts too large to represent.
pub(super) fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL on a descriptor that is open for the duration of the call.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFL only changes the descriptor's status flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// poll(2) for readability of `fds` for up to `timeout` (`None`: forever), retrying on EINTR.
/// Errors and hang-ups count as readable, so the following read reports them.
pub(super) fn poll_readable<const N: usize>(
    fds: [RawFd; N],
    timeout: Option<Duration>,
) -> io::Result<[bool; N]> {
    let deadline = deadline_after(timeout);
    let mut pfds = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                c_int::try_from(left.as_micros().div_ceil(1000)).unwrap_or(c_int::MAX)
            }
        };
        // SAFETY: `pfds` is an array of N initialised pollfd that poll may write.
        let ret = unsafe { libc::poll(pfds.as_mut_ptr(), N as libc::nfds_t, ms) };
        if ret >= 0 {
            return Ok(pfds.map(|p| {
                p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
            }));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn sockaddr_from(addr: SocketAddr) -> libc::sockaddr_storage {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in.
            unsafe { ptr::write(ptr::from_mut(&mut storage).cast::<libc::sockaddr_in>(), sin) };
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in6.
            unsafe {
                ptr::write(
                    ptr::from_mut(&mut storage).cast::<libc::sockaddr_in6>(),
                    sin6,
                )
            };
        }
    }
    storage
}

fn sockaddr_to(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; storage is large and
            // aligned enough for it.
            let sin = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for addr in ["10.1.2.3:10005", "[fe80::1%2]:4791", "0.0.0.0:0"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(sockaddr_to(&sockaddr_from(addr)), Some(addr));
        }
    }

    #[test]
    fn access_adds_local_write_when_verbs_requires_it() {
        let bits = |a| access_flags(a) as u32;
        assert_eq!(bits(Access::REMOTE_READ), 4);
        assert_eq!(bits(Access::REMOTE_WRITE), 1 | 2);
        assert_eq!(bits(Access::REMOTE_ATOMIC), 1 | 8);
        assert_eq!(bits(Access::ALL), Access::ALL.bits());
    }

    #[test]
    fn work_completions_map_status_opcode_and_immediate() {
        // SAFETY: all-zero is a valid ibv_wc.
        let mut wc: sys::ibv_wc = unsafe { std::mem::zeroed() };
        wc.wr_id = 7;
        wc.opcode = sys::ibv_wc_opcode::IBV_WC_RECV_RDMA_WITH_IMM;
        wc.byte_len = 5;
        wc.qp_num = 99;
        wc.wc_flags = sys::ibv_wc_flags::IBV_WC_WITH_IMM.0;
        wc.imm_data_invalidated_rkey_union.imm_data = 42u32.to_be();
        let c = completion(&wc);
        assert_eq!(
            c,
            Completion {
                wr_id: 7,
                status: Status::Success,
                opcode: Some(Opcode::RecvRdmaWithImm),
                byte_len: 5,
                imm: Some(42),
                qp_num: 99
            }
        );
        // A failed completion keeps the request, the status and the QP only, whatever else
        // the provider left in the entry.
        wc.status = sys::ibv_wc_status::IBV_WC_WR_FLUSH_ERR;
        assert_eq!(
            completion(&wc),
            Completion {
                wr_id: 7,
                status: Status::WrFlushError,
                opcode: None,
                byte_len: 0,
                imm: None,
                qp_num: 99
            }
        );
        // Verbs defines byte_len of send-side completions only for reads and atomics.
        wc.status = sys::ibv_wc_status::IBV_WC_SUCCESS;
        wc.opcode = sys::ibv_wc_opcode::IBV_WC_RDMA_WRITE;
        wc.wc_flags = 0;
        assert_eq!(
            (completion(&wc).opcode, completion(&wc).byte_len),
            (Some(Opcode::Write), 0)
        );
        wc.status = sys::ibv_wc_status::IBV_WC_RNR_RETRY_EXC_ERR;
        assert_eq!(completion(&wc).status, Status::Other(13));
    }
}
