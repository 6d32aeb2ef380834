//! The verbs provider on this host: unavailable with a clear error when the host has no RDMA
//! device, available when it has one. Which case applies is decided by `/sys/class/infiniband`,
//! independently of the provider, so the test never passes vacuously.
#![cfg(feature = "verbs")]

use rdmalib::{Context, DeviceConfig, Error, ProviderKind};

/// Names of the RDMA devices the kernel knows.
fn kernel_rdma_devices() -> Vec<String> {
    match std::fs::read_dir("/sys/class/infiniband") {
        Ok(dir) => dir
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn verbs_device(name: &str) -> DeviceConfig {
    DeviceConfig {
        name: name.to_string(),
        ip_address: "127.0.0.1".to_string(),
        port: 10005,
        max_inline_data: 0,
        default_receive_buffer_size: 32,
        provider: Some(ProviderKind::Verbs),
    }
}

#[test]
fn verbs_availability_matches_the_host() {
    let devices = kernel_rdma_devices();
    let available = rdmalib::verbs_available();
    if devices.is_empty() {
        let err = available.expect_err("verbs reported available on a host without RDMA devices");
        assert!(matches!(err, Error::NoRdmaDevice { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("no RDMA device"), "{msg}");
        assert!(msg.contains("use the tcp provider"), "{msg}");
    } else {
        assert!(
            available.is_ok(),
            "host has RDMA devices {devices:?}, but: {}",
            available.unwrap_err()
        );
    }
}

#[test]
fn opening_a_verbs_device_fails_cleanly_without_rdma() {
    let devices = kernel_rdma_devices();
    if devices.is_empty() {
        match Context::open(&verbs_device("mlx5_0")) {
            Ok(_) => panic!("opened a verbs device on a host without RDMA devices"),
            Err(err) => {
                assert!(matches!(err, Error::NoRdmaDevice { .. }), "{err:?}");
                let msg = err.to_string();
                assert!(
                    msg.contains("no RDMA device") && msg.contains("mlx5_0"),
                    "{msg}"
                );
            }
        }
    } else {
        let ctx = Context::open(&verbs_device(&devices[0]))
            .unwrap_or_else(|e| panic!("cannot open RDMA device {}: {e}", devices[0]));
        assert_eq!(ctx.provider(), ProviderKind::Verbs);
        ctx.alloc_pd().expect("ibv_alloc_pd");
        ctx.create_cq(16).expect("ibv_create_cq");
        match Context::open(&verbs_device("no-such-rdma-device")) {
            Ok(_) => panic!("opened a device that does not exist"),
            Err(err) => {
                let msg = err.to_string();
                assert!(matches!(err, Error::NoRdmaDevice { .. }), "{err:?}");
                assert!(msg.contains("no-such-rdma-device"), "{msg}");
            }
        }
    }
}
