//! The resource manager answers a lease without waiting for the node's manager to confirm its
//! notice. A notice that comes after the client's allocation request makes the request wait
//! for it; one that never comes makes it fail with an unknown lease.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rfaas::{AllocationSpec, Executor, Lease};

use crate::deployment::{add_registered_node, manager_config, start_resource_manager_with};
use crate::harness::*;

/// How long the proxy holds up what the resource manager sends to the executor manager: longer
/// than the client takes from its lease to its allocation request (milliseconds for the small
/// wasm module; hashing the 4 MB debug build of the native library can take longer than this),
/// and shorter than the manager waits for a notice (250 ms).
const NOTICE_DELAY: Duration = Duration::from_millis(100);

/// A TCP proxy for one connection that passes bytes towards `upstream` at once and delays the
/// bytes coming back by `delay`, in order.
fn delaying_proxy(upstream: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (downstream, _) = listener.accept().unwrap();
        let upstream = TcpStream::connect(upstream).unwrap();
        for stream in [&downstream, &upstream] {
            stream.set_nodelay(true).unwrap();
        }
        let (mut down_read, mut up_write) = (
            downstream.try_clone().unwrap(),
            upstream.try_clone().unwrap(),
        );
        std::thread::spawn(move || std::io::copy(&mut down_read, &mut up_write));
        let (sent, held) = mpsc::channel::<(Instant, Vec<u8>)>();
        let mut up_read = upstream;
        std::thread::spawn(move || {
            let mut buf = [0u8; 64 * 1024];
            while let Ok(n @ 1..) = up_read.read(&mut buf) {
                if sent.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        });
        let mut down_write = downstream;
        for (at, bytes) in held {
            std::thread::sleep((at + delay).saturating_duration_since(Instant::now()));
            if down_write.write_all(&bytes).is_err() {
                break;
            }
        }
    });
    addr
}

#[test]
fn an_allocation_that_overtakes_its_lease_notice_waits_for_it() {
    if provider() != rdmalib::ProviderKind::Tcp {
        eprintln!("skipped: the notice is held up on a TCP stream, and this run is not on tcp");
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("late-notice");
    let rm = start_resource_manager_with(&dir, 0, &[]);
    let proxied = delaying_proxy(rm.rdma, NOTICE_DELAY);
    let config = manager_config(&dir, &rm, 42);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["config"]["resource_manager_port"] = proxied.port().into();
    let config = dir.write_json("executor_manager_proxied.json", &json);
    let manager = Manager::start(&config, &dir.path("devices.json"), &[]);
    add_registered_node(&rm, &manager, 1);

    let code = std::fs::read(wasm_library()).unwrap();
    let lease =
        Lease::from_resource_manager(&test_endpoint(), rm.rdma, 1, 256, Duration::from_secs(5))
            .unwrap();
    let executor =
        Executor::allocate(&test_endpoint(), &lease, &code, &AllocationSpec::default()).unwrap();
    echo_once(&executor, 7, 64).unwrap();
    let overtaken = format!("for lease {} came before its notice", lease.lease_id);
    assert!(manager.log().contains(&overtaken), "{}", manager.log());
}
