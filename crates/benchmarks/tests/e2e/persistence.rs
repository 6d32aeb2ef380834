//! The resource manager keeps its state in its database: killed with SIGKILL at each step of a
//! lease and started again on the same database (and RDMA port), it loses no lease, grants
//! none twice, and has every bill once, with totals that are the sums of the bills. A grant
//! its database lost (as a crash of its host may leave it) comes back from the manager.

use std::time::{Duration, Instant};

use rfaas::{AllocationSpec, Executor, Lease};

use crate::deployment::{
    ResourceManager, curl, get_json, registered_deployment_with, start_resource_manager_with,
};
use crate::harness::*;

/// SIGKILL (the harness's kill), then a new resource manager on the same port and database;
/// waits until the node's manager registered with it and listed its leases.
fn kill_and_restart(dir: &TempDir, rm: &mut ResourceManager, manager: &Manager) -> ResourceManager {
    let port = rm.rdma.port();
    rm.daemon.kill();
    let next = start_resource_manager_with(dir, port, &[]);
    assert!(
        next.daemon.wait_for_log(
            "Executor manager registered node exec-mgr-node",
            Duration::from_secs(20)
        ),
        "restarted: {}\nmanager: {}",
        next.daemon.log(),
        manager.log()
    );
    assert!(
        next.daemon.log().contains("1 node(s)"),
        "the node comes back from the database: {}",
        next.daemon.log()
    );
    next
}

/// The lease's entry in `GET /leases` once it is `state` (waits up to 15 s).
fn lease_in_state(rm: &ResourceManager, lease_id: u32, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let leases = get_json(rm, "/leases");
        let entry = leases["leases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["lease_id"] == lease_id)
            .cloned();
        match entry {
            Some(l) if l["state"] == state => return l,
            other if Instant::now() > deadline => panic!(
                "lease {lease_id} is not {state}: {other:?}\nall: {leases}\nlog: {}",
                rm.daemon.log()
            ),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn lease(rm: &ResourceManager) -> Lease {
    Lease::from_resource_manager(&test_endpoint(), rm.rdma, 1, 256, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", rm.daemon.log()))
}

fn allocate(lease: &Lease) -> Executor {
    let code = std::fs::read(native_library()).unwrap();
    // Warm executors: nothing hot-polls on a machine of few cores while the test waits.
    let spec = AllocationSpec {
        hot_timeout_ms: 0,
        ..AllocationSpec::default()
    };
    Executor::allocate(&test_endpoint(), lease, &code, &spec).unwrap()
}

fn calls(executor: &Executor, n: u8) {
    for fill in 0..n {
        echo_once(executor, fill, 32).unwrap();
    }
}

#[test]
fn a_resource_manager_killed_at_each_step_of_a_lease_loses_nothing() {
    let _serial = serial();
    let dir = TempDir::new("persistence");
    let (mut rm, manager) = registered_deployment_with(&dir, 4);

    // Granted, not allocated yet: the manager holds it as announced; it is active again.
    let granted = lease(&rm);
    rm = kill_and_restart(&dir, &mut rm, &manager);
    lease_in_state(&rm, granted.lease_id, "active");
    let executor = allocate(&granted);
    calls(&executor, 3);
    executor.deallocate();
    lease_in_state(&rm, granted.lease_id, "closed");

    // In use: calls go on while the resource manager is away, and are billed.
    let in_use = lease(&rm);
    let executor = allocate(&in_use);
    calls(&executor, 5);
    rm = {
        let port = rm.rdma.port();
        rm.daemon.kill();
        calls(&executor, 6);
        let next = start_resource_manager_with(&dir, port, &[]);
        assert!(
            next.daemon.wait_for_log(
                "Executor manager registered node exec-mgr-node",
                Duration::from_secs(20)
            ),
            "{}",
            next.daemon.log()
        );
        next
    };
    lease_in_state(&rm, in_use.lease_id, "active");
    executor.deallocate();
    lease_in_state(&rm, in_use.lease_id, "closed");

    // Closing while the resource manager is away: the manager keeps the bill and sends it
    // when it registers again.
    let closing = lease(&rm);
    let executor = allocate(&closing);
    calls(&executor, 6);
    let port = rm.rdma.port();
    rm.daemon.kill();
    executor.deallocate();
    // Wait until the executor is reaped (its bill made) before the resource manager returns.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !manager
        .log()
        .lines()
        .filter(|l| l.contains("Billing of allocation"))
        .any(|l| l.contains("invocations 6"))
    {
        assert!(Instant::now() < deadline, "{}", manager.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    rm = start_resource_manager_with(&dir, port, &[]);
    lease_in_state(&rm, closing.lease_id, "closed");

    // Racing a close: killed right after the client deallocated, the bill on its way.
    let racing = lease(&rm);
    let executor = allocate(&racing);
    calls(&executor, 7);
    executor.deallocate();
    rm = kill_and_restart(&dir, &mut rm, &manager);
    lease_in_state(&rm, racing.lease_id, "closed");
    // Which way the race went (any is right): stored before the kill, or sent again after it.
    let again = rm.daemon.log().contains("its bill is recorded already");
    let log = manager.log();
    let resent = log
        .lines()
        .filter(|l| l.contains("bill(s) again") && !l.contains("manager 0 bill(s)"))
        .count();
    eprintln!(
        "racing a close: the bill was {} (the manager sent bills again after {resent} of its registrations)",
        if again {
            "stored before the kill and sent again"
        } else {
            "stored after the restart, or before the kill and acknowledged"
        }
    );

    // Every lease once, every bill once, with its calls; nothing in doubt.
    let ids = [
        granted.lease_id,
        in_use.lease_id,
        closing.lease_id,
        racing.lease_id,
    ];
    assert_eq!(ids[0], 1, "{ids:?}");
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "no id granted twice: {ids:?}"
    );
    let leases = get_json(&rm, "/leases");
    let list = leases["leases"].as_array().unwrap();
    assert_eq!(
        list.iter()
            .map(|l| l["lease_id"].as_u64().unwrap() as u32)
            .collect::<Vec<_>>(),
        ids,
        "{leases}"
    );
    assert!(list.iter().all(|l| l["state"] == "closed"), "{leases}");
    let invocations: Vec<u64> = list
        .iter()
        .map(|l| l["billing"]["invocations"].as_u64().unwrap())
        .collect();
    assert_eq!(invocations, [3, 11, 6, 7], "{leases}");
    let nodes = get_json(&rm, "/executors");
    assert_eq!(nodes["executors"][0]["free_cores"], 4, "{nodes}");

    let report = get_json(&rm, "/billing");
    let bills = report["bills"].as_array().unwrap();
    assert_eq!(bills.len(), 4, "{report}");
    for field in [
        "allocation_ns",
        "hot_polling_ns",
        "execution_ns",
        "invocations",
    ] {
        let sum: u64 = bills.iter().map(|b| b[field].as_u64().unwrap()).sum();
        assert_eq!(
            report["totals"][field].as_u64(),
            Some(sum),
            "{field}: {report}"
        );
        assert_eq!(
            report["nodes"]["exec-mgr-node"][field].as_u64(),
            Some(sum),
            "{field}: {report}"
        );
    }
    assert_eq!(report["totals"]["invocations"], 27, "{report}");
    assert_eq!(report["totals"]["bills"], 4, "{report}");
    let (status, csv) = curl(&[&format!(
        "http://{}/billing?node=exec-mgr-node&format=csv",
        rm.http
    )]);
    assert_eq!(status, "200", "{csv}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 6, "header, 4 bills, total: {csv}");
    let total = format!(
        "total,exec-mgr-node,,,,,{},{},{},27",
        report["totals"]["allocation_ns"],
        report["totals"]["hot_polling_ns"],
        report["totals"]["execution_ns"]
    );
    assert_eq!(lines[5], total, "{csv}");
    let closed_at = bills[1]["closed_at_ms"].as_u64().unwrap();
    let later = get_json(&rm, &format!("/billing?from={}", closed_at + 1));
    assert!(
        later["bills"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["closed_at_ms"].as_u64().unwrap() > closed_at),
        "{later}"
    );

    // A lease open while both die: in doubt after the restart, its core still reserved, until
    // the node's manager registers; a new manager holds nothing, so it is released.
    let mut manager = manager;
    let orphan = lease(&rm);
    assert!(
        orphan.lease_id > racing.lease_id,
        "ids go on after those of the database: {}",
        orphan.lease_id
    );
    let port = rm.rdma.port();
    rm.daemon.kill();
    manager.daemon.kill();
    rm = start_resource_manager_with(&dir, port, &[]);
    lease_in_state(&rm, orphan.lease_id, "in_doubt");
    let nodes = get_json(&rm, "/executors");
    assert_eq!(nodes["executors"][0]["free_cores"], 3, "{nodes}");
    assert_eq!(nodes["executors"][0]["manager_connected"], false, "{nodes}");
    let _manager = Manager::start(
        &crate::deployment::manager_config(&dir, &rm, 42),
        &dir.path("devices.json"),
        &[],
    );
    lease_in_state(&rm, orphan.lease_id, "released");
    let nodes = get_json(&rm, "/executors");
    assert_eq!(nodes["executors"][0]["free_cores"], 4, "{nodes}");
    assert_eq!(get_json(&rm, "/billing")["totals"]["bills"], 4);
    assert!(lease(&rm).lease_id > orphan.lease_id);
}

/// A grant is committed without a sync, so a crash of the resource manager's host may lose
/// it. The manager still holds the lease, and the restarted resource manager takes it back when
/// the manager lists it; the client allocates on it as if nothing happened, and no later lease
/// gets its id.
#[test]
fn a_grant_the_database_lost_comes_back_from_the_manager() {
    let _serial = serial();
    let dir = TempDir::new("lost-grant");
    let (mut rm, manager) = registered_deployment_with(&dir, 4);
    let lost = lease(&rm);
    let port = rm.rdma.port();
    rm.daemon.kill();
    // What the host's crash may leave: the grant never reached the disk.
    let db = rusqlite::Connection::open(dir.path("resource_manager.db")).unwrap();
    let deleted = db
        .execute("DELETE FROM leases WHERE id = ?1", [lost.lease_id])
        .unwrap();
    assert_eq!(deleted, 1);
    drop(db);
    rm = start_resource_manager_with(&dir, port, &[]);
    assert!(
        rm.daemon.wait_for_log("had lost", Duration::from_secs(20)),
        "restarted: {}\nmanager: {}",
        rm.daemon.log(),
        manager.log()
    );
    let back = lease_in_state(&rm, lost.lease_id, "active");
    assert_eq!(
        (back["cores"].as_u64(), back["memory"].as_u64()),
        (Some(1), Some(256)),
        "{back}"
    );
    let nodes = get_json(&rm, "/executors");
    assert_eq!(nodes["executors"][0]["free_cores"], 3, "{nodes}");

    let executor = allocate(&lost);
    calls(&executor, 2);
    executor.deallocate();
    let closed = lease_in_state(&rm, lost.lease_id, "closed");
    assert_eq!(closed["billing"]["invocations"], 2, "{closed}");
    assert!(lease(&rm).lease_id > lost.lease_id);
}

/// A database whose schema is newer than this build's is refused with one clear line, and left
/// as it was.
#[test]
fn a_database_of_a_newer_schema_is_refused() {
    let _serial = serial();
    let dir = TempDir::new("newer-db");
    let db = dir.path("state.db");
    let mut rm = start_resource_manager_with(&dir, 0, &["--database", arg(&db)]);
    rm.daemon.terminate();
    assert!(rm.daemon.wait_exit(Duration::from_secs(10)).is_some());
    // The header's user_version (offset 60, big-endian), as a newer resource manager would
    // leave it; a graceful shutdown folded the log into the file.
    let mut bytes = std::fs::read(&db).unwrap();
    assert_eq!(&bytes[..16], b"SQLite format 3\0");
    assert_eq!(bytes[60..64], 1u32.to_be_bytes(), "schema version 1");
    bytes[60..64].copy_from_slice(&99u32.to_be_bytes());
    std::fs::write(&db, &bytes).unwrap();

    let out = run(
        "resource_manager",
        [
            "-c",
            arg(&dir.path("resource_manager.json")),
            "--device-database",
            arg(&dir.path("devices.json")),
            "--database",
            arg(&db),
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("has schema version 99, newer than this resource manager's 1"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        bytes,
        "the database is left alone"
    );
}
