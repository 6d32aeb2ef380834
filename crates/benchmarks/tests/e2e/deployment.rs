//! The tutorial's full deployment: resource manager, executor manager registered over the
//! RDMA layer with the shared secret, the node added over HTTP with the tutorial's curl line,
//! clients leasing through the resource manager, billing in `GET /leases`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rfaas::{AllocationSpec, Error, Executor, Lease};

use crate::harness::*;

pub(crate) struct ResourceManager {
    pub(crate) daemon: Daemon,
    pub(crate) rdma: SocketAddr,
    pub(crate) http: SocketAddr,
}

fn start_resource_manager(dir: &TempDir) -> ResourceManager {
    start_resource_manager_with(dir, 0, &[])
}

/// A resource manager on RDMA port `port` (0: any), with `extra` arguments.
pub(crate) fn start_resource_manager_with(
    dir: &TempDir,
    port: u16,
    extra: &[&str],
) -> ResourceManager {
    let devices = test_devices(dir);
    let mut config = shipped_config("resource_manager.json");
    config["config"]["rdma_device"] = device_name().into();
    config["config"]["rdma_device_port"] = port.into();
    config["config"]["http_network_address"] = "127.0.0.1".into();
    config["config"]["http_network_port"] = 0.into();
    let config = dir.write_json("resource_manager.json", &config);
    let mut args = vec!["-c", arg(&config), "--device-database", arg(&devices)];
    args.extend_from_slice(extra);
    let daemon = Daemon::start("resource_manager", &args);
    let rdma = daemon.address_after("Begin listening at ");
    let http = daemon.address_after("HTTP interface listening on ");
    ResourceManager { daemon, rdma, http }
}

/// An executor manager that registers with `rm` using `secret`.
pub(crate) fn manager_config(dir: &TempDir, rm: &ResourceManager, secret: u32) -> PathBuf {
    let mut config = shipped_config("executor_manager.json");
    config["config"]["rdma_device"] = device_name().into();
    config["config"]["rdma_device_port"] = 0.into();
    config["config"]["resource_manager_address"] = device_ip().into();
    config["config"]["resource_manager_port"] = rm.rdma.port().into();
    config["config"]["resource_manager_secret"] = secret.into();
    dir.write_json(&format!("executor_manager_{secret}.json"), &config)
}

/// The tutorial's curl line, with this deployment's ports.
fn add_node(rm: &ResourceManager, manager: &Manager) -> (String, String) {
    add_node_with(rm, manager, 1)
}

/// The tutorial's curl line for a node of `cores` cores.
pub(crate) fn add_node_with(
    rm: &ResourceManager,
    manager: &Manager,
    cores: u32,
) -> (String, String) {
    let url = format!("http://{}/add?node=exec-mgr-node", rm.http);
    let body = format!(
        r#"{{"ip_address": "{}", "port": {}, "cores": {cores}, "memory": 1024}}"#,
        device_ip(),
        manager.addr.port()
    );
    curl(&[&url, "-X", "POST", "-d", &body])
}

/// (status code, body) of a curl request.
pub(crate) fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed");
    let text = text(&out.stdout);
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.to_string(), body.to_string())
}

pub(crate) fn get_json(rm: &ResourceManager, path: &str) -> serde_json::Value {
    let (status, body) = curl(&[&format!("http://{}{path}", rm.http)]);
    assert_eq!(status, "200", "{body}");
    serde_json::from_str(&body).unwrap()
}

fn registered_deployment(dir: &TempDir) -> (ResourceManager, Manager) {
    registered_deployment_with(dir, 1)
}

/// A resource manager and a registered executor manager whose node has `cores` cores.
pub(crate) fn registered_deployment_with(dir: &TempDir, cores: u32) -> (ResourceManager, Manager) {
    let rm = start_resource_manager(dir);
    let manager = Manager::start(
        &manager_config(dir, &rm, 42),
        &dir.path("devices.json"),
        &[],
    );
    assert!(
        rm.daemon.wait_for_log(
            &format!("Executor manager {}", device_ip()),
            Duration::from_secs(10)
        ),
        "{}",
        rm.daemon.log()
    );
    add_registered_node(&rm, &manager, cores);
    (rm, manager)
}

/// Adds `manager`'s node of `cores` cores over HTTP and waits until the resource manager has
/// it registered.
pub(crate) fn add_registered_node(rm: &ResourceManager, manager: &Manager, cores: u32) {
    let (status, body) = add_node_with(rm, manager, cores);
    assert_eq!(status, "201", "{body}");
    assert!(
        rm.daemon
            .wait_for_log("exec-mgr-node is now registered", Duration::from_secs(10)),
        "{}",
        rm.daemon.log()
    );
}

fn benchmark_config(dir: &TempDir, rm: &ResourceManager, repetitions: u64) -> PathBuf {
    let mut bench = shipped_config("benchmark.json");
    bench["config"]["rdma_device"] = device_name().into();
    bench["config"]["rdma_device_port"] = 0.into();
    bench["config"]["resource_manager_address"] = device_ip().into();
    bench["config"]["resource_manager_port"] = rm.rdma.port().into();
    bench["benchmark"]["repetitions"] = repetitions.into();
    dir.write_json("benchmark.json", &bench)
}

#[test]
fn full_deployment_leases_bills_and_frees_the_cores() {
    let _serial = serial();
    let dir = TempDir::new("deployment");
    let (rm, manager) = registered_deployment(&dir);
    let bench = benchmark_config(&dir, &rm, 100);
    let client = ClientFiles {
        config: bench,
        devices: dir.path("devices.json"),
        executors: None,
    };
    let out = run(
        "warm_benchmarker",
        client.args(&native_library(), &["--name", "empty", "-s", "64"]),
    );
    assert!(
        out.status.success(),
        "{}\nrm: {}\nmanager: {}",
        text(&out.stderr),
        rm.daemon.log(),
        manager.log()
    );
    assert!(
        text(&out.stderr).contains("Executed 100 repetitions"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        rm.daemon
            .wait_for_log("Lease 1 on exec-mgr-node closed", Duration::from_secs(10)),
        "{}\nmanager: {}",
        rm.daemon.log(),
        manager.log()
    );
    let leases = get_json(&rm, "/leases");
    let lease = &leases["leases"][0];
    assert_eq!(lease["state"], "closed", "{leases}");
    let billing = &lease["billing"];
    assert_eq!(billing["invocations"], 100, "{leases}");
    assert!(billing["hot_polling_ns"].as_u64().unwrap() > 0, "{leases}");
    assert!(billing["execution_ns"].as_u64().unwrap() > 0, "{leases}");
    let ns = |field: &str| billing[field].as_u64().unwrap();
    assert!(
        ns("allocation_ns") >= ns("hot_polling_ns") + ns("execution_ns"),
        "hot polling and execution are disjoint parts of the allocation: {leases}"
    );
    let nodes = get_json(&rm, "/executors");
    let node = &nodes["executors"][0];
    assert_eq!(
        (node["free_cores"].as_u64(), node["leased_cores"].as_u64()),
        (Some(1), Some(0)),
        "{nodes}"
    );
    assert_eq!(node["manager_connected"], true);
}

#[test]
fn a_wrong_secret_is_rejected_and_logged() {
    let _serial = serial();
    let dir = TempDir::new("secret");
    let rm = start_resource_manager(&dir);
    let config = manager_config(&dir, &rm, 41);
    let mut manager = Daemon::start(
        "executor_manager",
        &[
            "-c",
            arg(&config),
            "--device-database",
            arg(&dir.path("devices.json")),
        ],
    );
    let status = manager
        .wait_exit(Duration::from_secs(10))
        .expect("the manager gives up");
    assert!(!status.success());
    assert!(
        manager.log().contains("refused us: wrong secret"),
        "{}",
        manager.log()
    );
    assert!(
        rm.daemon.log().contains("wrong secret"),
        "{}",
        rm.daemon.log()
    );
}

#[test]
fn unknown_leases_and_oversized_requests_are_clear_errors() {
    let _serial = serial();
    let dir = TempDir::new("leases");
    let (rm, manager) = registered_deployment(&dir);
    let code = std::fs::read(native_library()).unwrap();
    let forged = Lease {
        lease_id: 999,
        node: "exec-mgr-node".into(),
        address: manager.addr,
        cores: 1,
        memory_mb: 256,
    };
    match Executor::allocate(&test_endpoint(), &forged, &code, &AllocationSpec::default()) {
        Err(Error::Refused(msg)) => {
            assert!(msg.contains("UnknownLease") && msg.contains("999"), "{msg}")
        }
        Err(other) => panic!("expected an unknown-lease refusal, got {other}"),
        Ok(_) => panic!("a forged lease was accepted"),
    }
    match Lease::from_resource_manager(&test_endpoint(), rm.rdma, 64, 256, Duration::from_secs(5)) {
        // Larger than any node: not a transient refusal, and it names the largest node.
        Err(Error::NoExecutor(msg)) => assert!(
            msg.contains("cannot lease 64 core(s)")
                && msg.contains("no executor server has 64 cores and 256 MiB (largest: 1 cores, 1024 MiB, node \"exec-mgr-node\")"),
            "{msg}"
        ),
        other => panic!("expected no executor, got {other:?}"),
    }
    let lease =
        Lease::from_resource_manager(&test_endpoint(), rm.rdma, 1, 256, Duration::from_secs(5))
            .unwrap();
    let executor =
        Executor::allocate(&test_endpoint(), &lease, &code, &AllocationSpec::default()).unwrap();
    assert_eq!(executor.functions().len(), 5);
}

#[test]
fn a_manager_that_dies_holding_a_lease_releases_it() {
    let _serial = serial();
    let dir = TempDir::new("manager-dies");
    let (rm, mut manager) = registered_deployment(&dir);
    let lease =
        Lease::from_resource_manager(&test_endpoint(), rm.rdma, 1, 256, Duration::from_secs(5))
            .unwrap();
    let leases = get_json(&rm, "/leases");
    assert_eq!(leases["leases"][0]["state"], "active", "{leases}");
    assert_eq!(
        lease.lease_id,
        leases["leases"][0]["lease_id"].as_u64().unwrap() as u32
    );
    manager.daemon.kill();
    assert!(
        rm.daemon
            .wait_for_log("released 1 lease(s)", Duration::from_secs(10)),
        "{}",
        rm.daemon.log()
    );
    let leases = get_json(&rm, "/leases");
    assert_eq!(leases["leases"][0]["state"], "released", "{leases}");
    let nodes = get_json(&rm, "/executors");
    assert_eq!(nodes["executors"][0]["manager_connected"], false, "{nodes}");
    assert_eq!(nodes["executors"][0]["free_cores"], 1, "{nodes}");
    match Lease::from_resource_manager(&test_endpoint(), rm.rdma, 1, 256, Duration::from_secs(5)) {
        Err(Error::NoResources(msg)) => assert!(msg.contains("cannot lease"), "{msg}"),
        other => panic!("a node without a manager must not be leased, got {other:?}"),
    }
}

/// A resource manager restarted with the node list it wrote when it shut down (`-o`, then
/// `-i`): its executor manager registers again by itself, and the node is leased again. The
/// client's endpoint leases twice on one connection, and after the restart replaces that
/// broken connection by itself.
#[test]
fn a_restarted_resource_manager_gets_its_manager_back() {
    let _serial = serial();
    let dir = TempDir::new("rm-restart");
    let saved = dir.path("saved_executors.json");
    let first = start_resource_manager_with(&dir, 0, &["-o", arg(&saved)]);
    let manager = Manager::start(
        &manager_config(&dir, &first, 42),
        &dir.path("devices.json"),
        &[],
    );
    add_registered_node(&first, &manager, 3);
    let endpoint = test_endpoint();
    for _ in 0..2 {
        Lease::from_resource_manager(&endpoint, first.rdma, 1, 256, Duration::from_secs(5))
            .unwrap();
    }
    let log = first.daemon.log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("Client ") && l.ends_with(" connected"))
            .count(),
        1,
        "{log}"
    );
    let port = first.rdma.port();
    let mut first = first;
    first.daemon.terminate();
    assert!(
        first.daemon.wait_exit(Duration::from_secs(10)).is_some(),
        "the resource manager did not shut down"
    );
    assert!(saved.is_file(), "{}", first.daemon.log());

    let second = start_resource_manager_with(&dir, port, &["-i", arg(&saved)]);
    assert!(
        second.daemon.wait_for_log(
            "Executor manager registered node exec-mgr-node",
            Duration::from_secs(15)
        ),
        "second: {}\nmanager: {}",
        second.daemon.log(),
        manager.log()
    );
    // The manager logs this once the acknowledgement reaches it, after the resource manager
    // logged the registration.
    assert!(
        manager.wait_for_log(
            "Registered with the resource manager again",
            Duration::from_secs(5)
        ),
        "{}",
        manager.log()
    );
    let lease =
        Lease::from_resource_manager(&endpoint, second.rdma, 1, 256, Duration::from_secs(5))
            .unwrap();
    let code = std::fs::read(native_library()).unwrap();
    let executor =
        Executor::allocate(&endpoint, &lease, &code, &AllocationSpec::default()).unwrap();
    echo_once(&executor, 8, 32).unwrap();
}

/// Clients allocating at the same time, more than the node has cores for: every allocation
/// completes within the time limit, and nothing leaks: every lease ends closed, no executor
/// process is left.
#[test]
fn many_clients_allocating_at_once_leak_nothing() {
    let _serial = serial();
    let dir = TempDir::new("load");
    let (rm, manager) = registered_deployment_with(&dir, 2);
    let mut bench: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(benchmark_config(&dir, &rm, 1)).unwrap())
            .unwrap();
    bench["benchmark"]["hot_timeout"] = 0.into();
    let client = ClientFiles {
        config: dir.write_json("load_benchmark.json", &bench),
        devices: dir.path("devices.json"),
        executors: None,
    };
    let out = run(
        "allocation_load",
        client.args(
            &native_library(),
            &[
                "--name",
                "empty",
                "-s",
                "64",
                "--clients",
                "3",
                "--allocations",
                "4",
                "--time-limit-s",
                "120",
            ],
        ),
    );
    assert!(
        out.status.success(),
        "{}\nmanager: {}",
        text(&out.stderr),
        manager.log()
    );
    assert!(
        text(&out.stdout).contains("12 allocations by 3 clients"),
        "{}",
        text(&out.stdout)
    );
    // The last executors are reaped, and their leases closed, a moment after they end.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let leases = loop {
        let leases = get_json(&rm, "/leases");
        let all_closed = leases["leases"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["state"] == "closed");
        if all_closed || std::time::Instant::now() > deadline {
            break leases;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let list = leases["leases"].as_array().unwrap();
    assert_eq!(list.len(), 12, "{leases}");
    assert!(list.iter().all(|l| l["state"] == "closed"), "{leases}");
    assert!(
        list.iter()
            .all(|l| l["billing"]["invocations"].as_u64() == Some(1)),
        "{leases}"
    );
    assert_eq!(executor_children(&manager), 0, "{}", manager.log());
}

/// Executor processes the manager still has (its children named `executor`, zombies too),
/// other than the one spare it keeps started ahead (`executor --spare`, waiting for work).
fn executor_children(manager: &Manager) -> usize {
    let ppid = manager.daemon.pid().to_string();
    let children: Vec<std::path::PathBuf> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let dir = e.ok()?.path();
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            // pid (comm) state ppid ...
            let (comm, rest) = stat.split_once(") ")?;
            (comm.ends_with("(executor") && rest.split_whitespace().nth(1) == Some(ppid.as_str()))
                .then_some(dir)
        })
        .collect();
    let spares = children
        .iter()
        .filter(|dir| {
            std::fs::read(dir.join("cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == b"--spare"))
        })
        .count();
    assert!(spares <= 1, "{spares} spare executors");
    children.len() - spares
}

/// A resource manager killed (SIGKILL) under a running allocation: the client's calls go on,
/// since the resource manager is not on the invocation path, and a new resource manager on the
/// same port gets the manager back.
#[test]
fn a_killed_resource_manager_interrupts_no_call() {
    let _serial = serial();
    let dir = TempDir::new("rm-killed");
    let (mut rm, manager) = registered_deployment(&dir);
    let lease =
        Lease::from_resource_manager(&test_endpoint(), rm.rdma, 1, 256, Duration::from_secs(5))
            .unwrap();
    let code = std::fs::read(native_library()).unwrap();
    let executor =
        Executor::allocate(&test_endpoint(), &lease, &code, &AllocationSpec::default()).unwrap();
    echo_once(&executor, 1, 16).unwrap();
    let port = rm.rdma.port();
    rm.daemon.kill();
    for fill in 2..12 {
        echo_once(&executor, fill, 256).unwrap();
    }
    assert!(
        manager.wait_for_log("registering again every", Duration::from_secs(10)),
        "{}",
        manager.log()
    );
    drop(executor);
    let second = start_resource_manager_with(&dir, port, &[]);
    // The node is back from the database.
    let (status, body) = add_node(&second, &manager);
    assert_eq!(status, "409", "{body}");
    // The manager may register before or after the node is added.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let registered = || {
        let log = second.daemon.log();
        log.contains("exec-mgr-node is now registered")
            || log.contains("registered node exec-mgr-node")
    };
    while !registered() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        registered(),
        "{}\nmanager: {}",
        second.daemon.log(),
        manager.log()
    );
    // The bill of the lease, made while the resource manager was away, arrives after the
    // registration and gives the node's one core back.
    assert!(
        second.daemon.wait_for_log(
            &format!("Lease {} on exec-mgr-node closed", lease.lease_id),
            Duration::from_secs(10)
        ),
        "{}\nmanager: {}",
        second.daemon.log(),
        manager.log()
    );
    Lease::from_resource_manager(
        &test_endpoint(),
        second.rdma,
        1,
        256,
        Duration::from_secs(5),
    )
    .unwrap();
}

/// A manager that stops answering (SIGSTOP, as if its host hung) loses its leases once the
/// resource manager has not heard its heartbeat for 2 s; running again (SIGCONT), it registers
/// again by itself and its node is leased again.
#[test]
fn a_frozen_manager_loses_its_leases_and_registers_again() {
    use nix::sys::signal::{Signal, kill};
    let _serial = serial();
    let dir = TempDir::new("frozen");
    let (rm, manager) = registered_deployment(&dir);
    let lease =
        Lease::from_resource_manager(&test_endpoint(), rm.rdma, 1, 256, Duration::from_secs(5))
            .unwrap();
    let pid = nix::unistd::Pid::from_raw(manager.daemon.pid() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let frozen = std::time::Instant::now();
    let dropped = rm
        .daemon
        .wait_for_log("sent no heartbeat for", Duration::from_secs(10));
    let after = frozen.elapsed();
    kill(pid, Signal::SIGCONT).unwrap();
    assert!(dropped, "{}", rm.daemon.log());
    assert!(
        after >= Duration::from_millis(1400) && after <= Duration::from_secs(4),
        "dropped after {after:?}: {}",
        rm.daemon.log()
    );
    let leases = get_json(&rm, "/leases");
    assert_eq!(leases["leases"][0]["lease_id"], lease.lease_id);
    assert_eq!(leases["leases"][0]["state"], "released", "{leases}");
    assert!(
        rm.daemon.wait_for_log(
            "Executor manager registered node exec-mgr-node",
            Duration::from_secs(10)
        ),
        "rm: {}\nmanager: {}",
        rm.daemon.log(),
        manager.log()
    );
    let again =
        Lease::from_resource_manager(&test_endpoint(), rm.rdma, 1, 256, Duration::from_secs(5))
            .unwrap();
    let code = std::fs::read(native_library()).unwrap();
    let executor =
        Executor::allocate(&test_endpoint(), &again, &code, &AllocationSpec::default()).unwrap();
    echo_once(&executor, 4, 64).unwrap();
}
