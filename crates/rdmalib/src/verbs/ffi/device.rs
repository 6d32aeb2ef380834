//! Devices, protection domains and memory regions.

use super::*;

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
pub(in crate::verbs) struct Limits {
    /// Largest completion queue.
    pub max_cqe: u32,
    /// RDMA reads/atomics this side may have outstanding as a responder.
    pub responder_resources: u8,
    /// RDMA reads/atomics this side may have outstanding as an initiator.
    pub initiator_depth: u8,
}

/// One RDMA device as librdmacm sees it: the context that cm ids bound to the device use.
pub(in crate::verbs) struct Device {
    pub(super) ctx: NonNull<sys::ibv_context>,
    pub(super) name: String,
    pub(super) limits: Limits,
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
    pub(in crate::verbs) fn open(name: &str) -> Result<Option<Device>> {
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

    pub(in crate::verbs) fn name(&self) -> &str {
        &self.name
    }

    pub(in crate::verbs) fn limits(&self) -> Limits {
        self.limits
    }

    /// Identifies the context, to compare with [`CmId::device_key`].
    pub(in crate::verbs) fn key(&self) -> usize {
        self.ctx.as_ptr() as usize
    }
}

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
    pub(in crate::verbs) fn alloc(dev: &Arc<Device>) -> Result<Arc<Pd>> {
        // SAFETY: the context is open while `dev` lives.
        let pd = unsafe { sys::ibv_alloc_pd(dev.ctx.as_ptr()) };
        let pd = NonNull::new(pd)
            .ok_or_else(|| errno_error(|| format!("ibv_alloc_pd on {}", dev.name)))?;
        Ok(Arc::new(Pd {
            pd,
            dev: dev.clone(),
        }))
    }

    pub(in crate::verbs) fn device(&self) -> &Arc<Device> {
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

    pub(super) fn raw(&self) -> *mut sys::ibv_pd {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_adds_local_write_when_verbs_requires_it() {
        let bits = |a| access_flags(a) as u32;
        assert_eq!(bits(Access::REMOTE_READ), 4);
        assert_eq!(bits(Access::REMOTE_WRITE), 1 | 2);
        assert_eq!(bits(Access::REMOTE_ATOMIC), 1 | 8);
        assert_eq!(bits(Access::ALL), Access::ALL.bits());
    }
}
