//! Before any call: the device an endpoint opens, the lease that says where to allocate, and
//! the seed's `benchmark.json` for clients that take their settings from it.

use std::ffi::{CString, c_char};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use rfaas_protocol::config::{BenchmarkConfig, ExecutorsDatabase, load_json};

use crate::boundary::{
    Failure, check_out, entry, entry_void, get, handle, optional_text, put, release, text,
};
use crate::status::rfaas_status;

/// This process's device, shared by its leases and allocations. Made by
/// `rfaas_endpoint_open`, freed by `rfaas_endpoint_free` (executors allocated through it keep
/// the device open until they are deallocated).
pub struct rfaas_endpoint {
    pub(crate) endpoint: rfaas::Endpoint,
}

/// Where to allocate: an executor manager with the cores and memory granted. Made by
/// `rfaas_lease_from_database` or `rfaas_lease_from_resource_manager`, freed by
/// `rfaas_lease_free`.
pub struct rfaas_lease {
    pub(crate) lease: rfaas::Lease,
}

/// Opens the device called `device` in the device database `device_database` (a devices.json
/// file); NULL or "" picks the first device, as the seed's empty `rdma_device` does. On
/// success `*out` is a new endpoint.
///
/// # Safety
///
/// `device_database` is a NUL-terminated string, `device` NULL or one, `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_endpoint_open(
    device_database: *const c_char,
    device: *const c_char,
    out: *mut *mut rfaas_endpoint,
) -> rfaas_status {
    entry(|| {
        // SAFETY: the caller passes C strings (this function's contract).
        let (path, device) = unsafe {
            (
                text(device_database, "device_database")?,
                optional_text(device, "device")?,
            )
        };
        check_out(out, "out")?;
        let devices = rdmalib::DeviceDatabase::load(path)?;
        let endpoint = rfaas::Endpoint::open(devices.get_or_first(device.unwrap_or(""))?)?;
        // SAFETY: `out` is valid for a write (this function's contract).
        unsafe { put(out, handle(rfaas_endpoint { endpoint }), "out") }
    })
}

/// Frees an endpoint (NULL: nothing).
///
/// # Safety
///
/// `endpoint` is NULL or came from `rfaas_endpoint_open` and is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_endpoint_free(endpoint: *mut rfaas_endpoint) {
    // SAFETY: forwarded from this function's contract.
    entry_void(|| drop(unsafe { release(endpoint) }));
}

/// A lease on the first executor server of the executors database `executors_database` (an
/// executors_database.json file) with at least `cores` cores and `memory_mb` MiB, without a
/// resource manager. On success `*out` is a new lease.
///
/// # Safety
///
/// `executors_database` is a NUL-terminated string, `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_lease_from_database(
    executors_database: *const c_char,
    cores: u16,
    memory_mb: u32,
    out: *mut *mut rfaas_lease,
) -> rfaas_status {
    entry(|| {
        // SAFETY: the caller passes a C string (this function's contract).
        let path = unsafe { text(executors_database, "executors_database")? };
        check_out(out, "out")?;
        let db: ExecutorsDatabase = load_json(path, "executors database")?;
        let lease = rfaas::Lease::from_database(&db, cores, memory_mb)?;
        // SAFETY: `out` is valid for a write (this function's contract).
        unsafe { put(out, handle(rfaas_lease { lease }), "out") }
    })
}

/// Asks the resource manager at `address` ("host:port") for `cores` cores and `memory_mb`
/// MiB through `endpoint`, waiting at most `timeout_ms` for its answer. On success `*out` is
/// a new lease; `RFAAS_ERROR_NO_RESOURCES` means every server is busy right now.
///
/// # Safety
///
/// `endpoint` is a valid endpoint, `address` a NUL-terminated string, `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_lease_from_resource_manager(
    endpoint: *const rfaas_endpoint,
    address: *const c_char,
    cores: u16,
    memory_mb: u32,
    timeout_ms: u32,
    out: *mut *mut rfaas_lease,
) -> rfaas_status {
    entry(|| {
        // SAFETY: a valid endpoint and a C string (this function's contract).
        let (endpoint, address) =
            unsafe { (get(endpoint, "endpoint")?, text(address, "address")?) };
        check_out(out, "out")?;
        let lease = rfaas::Lease::from_resource_manager(
            &endpoint.endpoint,
            resolve(address)?,
            cores,
            memory_mb,
            Duration::from_millis(u64::from(timeout_ms)),
        )?;
        // SAFETY: `out` is valid for a write (this function's contract).
        unsafe { put(out, handle(rfaas_lease { lease }), "out") }
    })
}

fn resolve(address: &str) -> Result<SocketAddr, Failure> {
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            Failure::invalid(format!(
                "address {address:?} is not host:port (for example 127.0.0.1:10000)"
            ))
        })
}

/// Frees a lease (NULL: nothing). Executors allocated on it are not affected.
///
/// # Safety
///
/// `lease` is NULL or came from an `rfaas_lease_from_*` function and is not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_lease_free(lease: *mut rfaas_lease) {
    // SAFETY: forwarded from this function's contract.
    entry_void(|| drop(unsafe { release(lease) }));
}

/// The seed's benchmark.json, as a benchmark client written in C uses it. Filled by
/// `rfaas_benchmark_settings_load`; its strings belong to the library and are freed by
/// `rfaas_benchmark_settings_free`.
#[repr(C)]
pub struct rfaas_benchmark_settings {
    /// `rdma_device`: the device's name ("" picks the first).
    pub rdma_device: *mut c_char,
    /// `rdma_device_port`: the port the client listens on for its executors (0: any).
    pub rdma_device_port: u16,
    /// `resource_manager_address:resource_manager_port` ("host:port"), or NULL when the
    /// address is empty (executors come from an executors database).
    pub resource_manager: *mut c_char,
    /// `pin_threads`: pin the client's polling thread.
    pub pin_threads: bool,
    /// `repetitions`: measured invocations.
    pub repetitions: u64,
    /// `warmup_repetitions`: invocations before measuring.
    pub warmup_repetitions: u64,
    /// `numcores`: cores to lease.
    pub numcores: u16,
    /// `memory`: MiB to lease.
    pub memory_mb: u32,
    /// `hot_timeout`: -1 always hot, 0 always warm, >0 ms of hot polling before sleeping.
    pub hot_timeout_ms: i32,
}

/// Reads a benchmark.json file into `*out` (whose previous contents are not freed).
///
/// # Safety
///
/// `path` is a NUL-terminated string, `out` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_benchmark_settings_load(
    path: *const c_char,
    out: *mut rfaas_benchmark_settings,
) -> rfaas_status {
    entry(|| {
        // SAFETY: the caller passes a C string (this function's contract).
        let path = unsafe { text(path, "path")? };
        check_out(out, "out")?;
        let config: BenchmarkConfig = load_json(path, "benchmark configuration")?;
        let resource_manager = config
            .config
            .resource_manager()?
            .map(|addr| c_string(addr.to_string()));
        let b = &config.benchmark;
        let settings = rfaas_benchmark_settings {
            rdma_device: c_string(config.config.rdma_device.clone()),
            rdma_device_port: config.config.rdma_device_port,
            resource_manager: resource_manager.unwrap_or(std::ptr::null_mut()),
            pin_threads: b.pin_threads,
            repetitions: b.repetitions,
            warmup_repetitions: b.warmup_repetitions,
            numcores: b.numcores,
            memory_mb: b.memory,
            hot_timeout_ms: b.hot_timeout,
        };
        // SAFETY: `out` is valid for a write (this function's contract).
        unsafe { put(out, settings, "out") }
    })
}

fn c_string(s: String) -> *mut c_char {
    CString::new(s.replace('\0', ""))
        .unwrap_or_default()
        .into_raw()
}

/// Frees the strings of settings filled by `rfaas_benchmark_settings_load` and sets them to
/// NULL (NULL settings: nothing).
///
/// # Safety
///
/// `settings` is NULL or was filled by `rfaas_benchmark_settings_load` (or already freed by
/// this function).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rfaas_benchmark_settings_free(settings: *mut rfaas_benchmark_settings) {
    entry_void(|| {
        // SAFETY: NULL or valid settings (this function's contract).
        let Some(settings) = (unsafe { settings.as_mut() }) else {
            return;
        };
        for s in [&mut settings.rdma_device, &mut settings.resource_manager] {
            let p = std::mem::replace(s, std::ptr::null_mut());
            if !p.is_null() {
                // SAFETY: a non-NULL string here came from `CString::into_raw` in
                // `rfaas_benchmark_settings_load` and is freed once (it is NULL afterwards).
                drop(unsafe { CString::from_raw(p) });
            }
        }
    });
}
