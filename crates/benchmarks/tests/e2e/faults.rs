//! What happens when something goes wrong on purpose: a native function past its time limit,
//! a forged billing connection, an executor killed mid-lease, a manager that dies under its
//! executors.

use std::time::{Duration, Instant};

use rdmalib::{Context, Opcode, QpConfig};
use rfaas::{AllocationSpec, Error, ReturnCode};
use rfaas_protocol::Record;
use rfaas_protocol::control::{
    AllocationRequest, AllocationResponse, AllocationStatus, Hello, MessageKind,
};
use rfaas_protocol::mailbox::Mailbox;

use crate::harness::*;

/// The pid the manager logged for the executor of allocation `id`.
fn executor_pid(manager: &Manager, id: u32) -> i32 {
    let marker = format!("Allocation {id}: ");
    assert!(
        manager.wait_for_log(&marker, Duration::from_secs(10)),
        "{}",
        manager.log()
    );
    let log = manager.log();
    let line = log.lines().find(|l| l.contains(&marker)).unwrap();
    line.rsplit("executor pid ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn is_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn sleep_call(executor: &rfaas::Executor, millis: u32) -> rfaas::Result<u32> {
    let sleep = executor.function("sleep")?;
    let input = executor.input_buffer(4)?;
    input.write(&millis.to_le_bytes())?;
    let output = executor.output_buffer(4)?;
    executor.execute(sleep, &input, 4, &output)
}

/// A native function that runs past the allocation's time limit: its caller gets the timeout
/// code, the executor is stopped (native code cannot be interrupted), the manager says why,
/// and the next allocation is served.
#[test]
fn a_native_function_past_its_time_limit_is_stopped() {
    let _serial = serial();
    let dir = TempDir::new("time-limit");
    let mut manager = local_manager(&dir);
    let code = std::fs::read(native_library()).unwrap();
    let spec = AllocationSpec {
        max_payload: 64,
        time_limit_ms: 200,
        hot_timeout_ms: 0,
        ..AllocationSpec::default()
    };
    let executor = allocate(&manager, &code, &spec).unwrap();
    assert_eq!(sleep_call(&executor, 10).unwrap(), 4, "a short call runs");
    let started = Instant::now();
    match sleep_call(&executor, 5000) {
        Err(Error::Invocation(ReturnCode::Timeout)) => {}
        other => panic!("expected the timeout code, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    match sleep_call(&executor, 0) {
        Err(Error::ExecutorLost(why)) => {
            assert!(
                why.contains("ran past the allocation's time limit"),
                "{why}"
            )
        }
        other => panic!("expected the executor to be gone, got {other:?}"),
    }
    assert!(
        manager.wait_for_log("was stopped by its watchdog", Duration::from_secs(10)),
        "{}",
        manager.log()
    );
    drop(executor);
    let next = allocate(&manager, &code, &AllocationSpec::default()).unwrap();
    echo_once(&next, 2, 16).unwrap();
    assert!(manager.is_running());
}

/// A billing connection must prove which allocation it belongs to: a stranger with the
/// allocation's id but not its token is refused, and the allocation's billing is untouched.
#[test]
fn a_forged_billing_connection_is_refused() {
    let _serial = serial();
    let dir = TempDir::new("forged-billing");
    let manager = local_manager(&dir);
    let code = std::fs::read(native_library()).unwrap();
    let executor = allocate(&manager, &code, &AllocationSpec::default()).unwrap();
    echo_once(&executor, 1, 8).unwrap();
    let ctx = Context::open(&test_device()).unwrap();
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(4).unwrap();
    let forged = Hello::billing(executor.allocation_id(), [0; 32]);
    match ctx.connect(
        &pd,
        manager.addr,
        &QpConfig::new(&cq, &cq),
        &forged.encode(),
    ) {
        Err(rdmalib::Error::Rejected { .. }) => {}
        Err(e) => panic!("expected a rejection, got {e}"),
        Ok(_) => panic!("a forged billing connection was accepted"),
    }
    assert!(
        manager.wait_for_log("wrong token", Duration::from_secs(5)),
        "{}",
        manager.log()
    );
    echo_once(&executor, 2, 8).unwrap();
}

/// An executor killed mid-lease still bills what it did up to its last flush (every second):
/// the manager reports it from the allocation's record.
#[test]
fn a_killed_executor_bills_up_to_its_last_flush() {
    let _serial = serial();
    let dir = TempDir::new("killed-executor");
    let manager = local_manager(&dir);
    let code = std::fs::read(native_library()).unwrap();
    let spec = AllocationSpec {
        hot_timeout_ms: 0,
        ..AllocationSpec::default()
    };
    let executor = allocate(&manager, &code, &spec).unwrap();
    let pid = executor_pid(&manager, executor.allocation_id());
    let until = Instant::now() + Duration::from_millis(2500);
    let mut calls = 0;
    while Instant::now() < until {
        echo_once(&executor, 3, 64).unwrap();
        calls += 1;
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    let marker = "was killed by signal 9";
    assert!(
        manager.wait_for_log(marker, Duration::from_secs(10)),
        "{}",
        manager.log()
    );
    let billed = manager
        .log()
        .lines()
        .find(|l| l.contains("Billing of allocation"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no billing line:\n{}", manager.log()));
    let invocations: u64 = billed
        .split("invocations ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("{billed}"));
    assert!(
        invocations > 0 && invocations <= calls,
        "{invocations} of {calls} calls billed: {billed}"
    );
}

/// When the manager dies, its executors stop and tell their clients, instead of running on
/// while their cores are leased to someone else.
#[test]
fn executors_stop_when_their_manager_dies() {
    let _serial = serial();
    let dir = TempDir::new("manager-gone");
    let mut manager = local_manager(&dir);
    let code = std::fs::read(native_library()).unwrap();
    let spec = AllocationSpec {
        hot_timeout_ms: 0,
        ..AllocationSpec::default()
    };
    let executor = allocate(&manager, &code, &spec).unwrap();
    let pid = executor_pid(&manager, executor.allocation_id());
    echo_once(&executor, 4, 16).unwrap();
    manager.daemon.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!is_alive(pid), "the executor outlived its manager");
    match echo_once(&executor, 5, 16) {
        Err(Error::ExecutorLost(why)) => {
            assert!(why.contains("executor manager went away"), "{why}")
        }
        other => panic!("expected the executor to be gone, got {other:?}"),
    }
}

/// A client that asks for an allocation and is gone before its executor connects back: the
/// executor gives up, the manager reaps it, and the next client is served.
#[test]
fn a_client_gone_before_its_executor_connects_back() {
    let _serial = serial();
    let dir = TempDir::new("client-gone");
    let manager = local_manager(&dir);
    let ctx = Context::open(&test_device()).unwrap();
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(8).unwrap();
    let conn = ctx
        .connect(
            &pd,
            manager.addr,
            &QpConfig::new(&cq, &cq),
            &Hello::client().encode(),
        )
        .unwrap();
    let mailbox = Mailbox::new(&pd, 2, 1).unwrap();
    mailbox.post_receives(&conn).unwrap();
    // Where nobody listens: the executor's connection back is refused.
    let nowhere = std::net::TcpListener::bind((device_ip().as_str(), 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let request = AllocationRequest {
        lease_id: 0,
        cores: 1,
        input_buf_count: 1,
        hot_timeout_ms: 0,
        max_payload: 64,
        code_size: 1000,
        code_digest: [0; 32],
        memory_mb: 256,
        sandbox: rfaas::Kind::Native,
        time_limit_ms: 0,
        client: nowhere,
        token: [0; 32],
    };
    mailbox
        .send(&conn, MessageKind::AllocationRequest, &request.encode())
        .unwrap();
    let response = loop {
        let wc = cq
            .wait_one(Some(Duration::from_secs(10)))
            .unwrap()
            .expect("the manager answers");
        assert!(wc.is_ok(), "{wc:?}");
        if wc.opcode == Some(Opcode::Recv) {
            let message = mailbox.take(&conn, &wc).unwrap();
            break AllocationResponse::decode(&message.payload).unwrap();
        }
    };
    assert_eq!(response.status, AllocationStatus::Accepted, "{response:?}");
    drop(conn);
    let ended = format!("Executor of allocation {} exited", response.allocation_id);
    assert!(
        manager.wait_for_log(&ended, Duration::from_secs(15)),
        "{}",
        manager.log()
    );
    let code = std::fs::read(native_library()).unwrap();
    let next = allocate(&manager, &code, &AllocationSpec::default()).unwrap();
    echo_once(&next, 9, 16).unwrap();
}

/// Control messages a broken or hostile client might send: garbage, truncated records, an
/// unknown kind, each answered with a refusal; and a message larger than the manager's receive
/// slots, which breaks that connection only. The manager serves the next client either way.
#[test]
fn garbage_and_oversized_control_messages_are_refused() {
    let _serial = serial();
    let dir = TempDir::new("garbage");
    let mut manager = local_manager(&dir);
    let ctx = Context::open(&test_device()).unwrap();
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(16).unwrap();
    let connect = || {
        let conn = ctx
            .connect(
                &pd,
                manager.addr,
                &QpConfig::new(&cq, &cq),
                &Hello::client().encode(),
            )
            .unwrap();
        let mailbox = Mailbox::new(&pd, 4, 1).unwrap();
        mailbox.post_receives(&conn).unwrap();
        (conn, mailbox)
    };
    let (conn, mailbox) = connect();
    let answer = |payload: &[u8], kind: u32| {
        let buf = pd
            .register(payload.len().max(1), rdmalib::Access::LOCAL_WRITE)
            .unwrap();
        buf.write(0, payload).unwrap();
        conn.post_send(
            7,
            buf.sge(0, payload.len()).unwrap(),
            Some(kind),
            rdmalib::SendFlags::SIGNALED,
        )
        .unwrap();
        loop {
            let wc = cq
                .wait_one(Some(Duration::from_secs(10)))
                .unwrap()
                .expect("the manager answers");
            assert!(wc.is_ok(), "{wc:?}");
            if wc.opcode == Some(Opcode::Recv) {
                let message = mailbox.take(&conn, &wc).unwrap();
                assert_eq!(message.kind, Some(MessageKind::AllocationResponse));
                return AllocationResponse::decode(&message.payload).unwrap();
            }
        }
    };
    let request = MessageKind::AllocationRequest as u32;
    for (payload, kind) in [
        (&b"\xff\xfe garbage, not a record"[..], request),
        (&[1, 0, 0][..], request),
        (&[][..], request),
        (&b"a record of no known kind"[..], 999),
    ] {
        let response = answer(payload, kind);
        assert_eq!(
            response.status,
            AllocationStatus::BadRequest,
            "{response:?}"
        );
        assert!(!response.message.is_empty());
    }
    // Larger than the manager's receive slots: that connection breaks, nothing else.
    let big = vec![0u8; rfaas_protocol::MAX_MESSAGE_LEN * 4];
    let buf = pd
        .register(big.len(), rdmalib::Access::LOCAL_WRITE)
        .unwrap();
    conn.post_send(
        8,
        buf.sge(0, big.len()).unwrap(),
        Some(request),
        rdmalib::SendFlags::SIGNALED,
    )
    .unwrap();
    let failed = loop {
        let wc = cq
            .wait_one(Some(Duration::from_secs(10)))
            .unwrap()
            .expect("the oversized send completes");
        if wc.wr_id == 8 || !wc.is_ok() {
            break wc;
        }
    };
    assert!(!failed.is_ok(), "{failed:?}");
    assert!(manager.is_running());
    let code = std::fs::read(native_library()).unwrap();
    let next = allocate(&manager, &code, &AllocationSpec::default()).unwrap();
    echo_once(&next, 7, 16).unwrap();
}
