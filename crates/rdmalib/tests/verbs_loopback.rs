//! The verbs provider against itself on real hardware (or SoftRoCE):
//!
//! ```text
//! RDMA_DEVICE=mlx5_0 RDMA_IP=192.168.0.21 cargo test -p rdmalib --test verbs_loopback -- --ignored
//! ```
#![cfg(feature = "verbs")]

use std::sync::atomic::Ordering;
use std::time::Duration;

use rdmalib::{
    Access, CmEvent, ConnectRequest, Context, DeviceConfig, Error, Listener, Opcode, ProviderKind,
    QpConfig, SendFlags, Status,
};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(10));

fn device() -> DeviceConfig {
    let name =
        std::env::var("RDMA_DEVICE").expect("set RDMA_DEVICE to an RDMA device (see ibv_devices)");
    let ip = std::env::var("RDMA_IP").expect("set RDMA_IP to the IP address of that device");
    DeviceConfig {
        name,
        ip_address: ip,
        port: 0,
        max_inline_data: 64,
        default_receive_buffer_size: 32,
        provider: Some(ProviderKind::Verbs),
    }
}

fn next_request(listener: &Listener) -> ConnectRequest {
    loop {
        match listener.get_event(TIMEOUT).expect("listener event") {
            Some(CmEvent::ConnectRequest(req)) => return req,
            Some(_) => continue,
            None => panic!("no connect request within {TIMEOUT:?}"),
        }
    }
}

/// Waits for the listener to report `Established` (`true`) or `Disconnected` of `qp_num`.
fn wait_for(listener: &Listener, qp_num: u32, established: bool) {
    loop {
        match listener.get_event(TIMEOUT).expect("listener event") {
            Some(CmEvent::Established { qp_num: q }) if established && q == qp_num => return,
            Some(CmEvent::Disconnected { qp_num: q }) if !established && q == qp_num => return,
            Some(_) => continue,
            None => panic!("listener did not report QP {qp_num} (established: {established})"),
        }
    }
}

#[test]
#[ignore = "needs an RDMA device; set RDMA_DEVICE and RDMA_IP"]
fn loopback_connect_write_with_imm_fetch_add_and_disconnect() -> anyhow::Result<()> {
    let ctx = Context::open(&device())?;
    assert_eq!(ctx.provider(), ProviderKind::Verbs);
    let pd = ctx.alloc_pd()?;
    let server_cq = ctx.create_cq(64)?;
    let client_cq = ctx.create_cq(64)?;
    let server_mr = pd.register(4096, Access::ALL)?;
    let client_mr = pd.register(4096, Access::ALL)?;
    let listener = ctx.listen(0)?;
    let addr = listener.local_addr();
    assert_ne!(addr.port(), 0);

    // Connect with private data; the server sees it and answers.
    let (server, client) = std::thread::scope(|s| {
        let server = s.spawn(|| -> rdmalib::Result<_> {
            let req = next_request(&listener);
            assert!(
                req.private_data().starts_with(b"hello verbs"),
                "{:?}",
                req.private_data()
            );
            let conn = req.accept(&pd, &QpConfig::new(&server_cq, &server_cq), b"welcome")?;
            conn.post_recv(1, server_mr.sge(0, 0)?)?;
            Ok(conn)
        });
        let client_qp = QpConfig::new(&client_cq, &client_cq).max_inline_data(64);
        let client = ctx.connect(&pd, addr, &client_qp, b"hello verbs");
        (server.join().expect("server thread panicked"), client)
    });
    let (server, client) = (server?, client?);
    assert!(server.is_connected() && client.is_connected());
    wait_for(&listener, server.qp_num(), true);

    // RDMA write with immediate: the data lands, the server's receive completes with the imm.
    client_mr.write(0, b"payload")?;
    client.post_write_with_imm(
        7,
        client_mr.sge(0, 7)?,
        server_mr.remote(),
        42,
        SendFlags::SIGNALED,
    )?;
    let wc = client_cq.wait_one(TIMEOUT)?.expect("write completion");
    assert_eq!(
        (wc.status, wc.opcode, wc.wr_id),
        (Status::Success, Some(Opcode::Write), 7),
        "{wc:?}"
    );
    let wc = server_cq.wait_one(TIMEOUT)?.expect("receive completion");
    assert_eq!(
        (
            wc.status,
            wc.opcode,
            wc.wr_id,
            wc.imm,
            wc.byte_len,
            wc.qp_num
        ),
        (
            Status::Success,
            Some(Opcode::RecvRdmaWithImm),
            1,
            Some(42),
            7,
            server.qp_num()
        ),
        "{wc:?}"
    );
    let mut landed = [0u8; 7];
    server_mr.read(0, &mut landed)?;
    assert_eq!(&landed, b"payload");

    // Inline payloads are bounded by max_inline_data.
    let too_big = client.post_send(
        8,
        client_mr.sge(0, 65)?,
        None,
        SendFlags::SIGNALED.with_inline(true),
    );
    assert!(matches!(too_big, Err(Error::InvalidArgument(_))));

    // Fetch-and-add: the old value comes back, the remote counter grows.
    server_mr.atomic_u64(64)?.store(5, Ordering::SeqCst);
    client.post_fetch_add(
        9,
        client_mr.sge(128, 8)?,
        server_mr.remote().offset(64),
        10,
        SendFlags::SIGNALED,
    )?;
    let wc = client_cq.wait_one(TIMEOUT)?.expect("atomic completion");
    assert_eq!(
        (wc.status, wc.opcode, wc.wr_id),
        (Status::Success, Some(Opcode::FetchAdd), 9),
        "{wc:?}"
    );
    assert_eq!(client_mr.atomic_u64(128)?.load(Ordering::SeqCst), 5);
    assert_eq!(server_mr.atomic_u64(64)?.load(Ordering::SeqCst), 15);

    // A disconnect flushes the peer's posted receives and is reported on the listener.
    server.post_recv(2, server_mr.sge(0, 0)?)?;
    client.disconnect();
    client.disconnect(); // idempotent
    assert!(!client.is_connected());
    let wc = server_cq.wait_one(TIMEOUT)?.expect("flushed receive");
    assert_eq!((wc.status, wc.wr_id), (Status::WrFlushError, 2), "{wc:?}");
    assert!(!server.is_connected());
    wait_for(&listener, server.qp_num(), false);

    // A rejected request carries the reject's private data back.
    let rejected = std::thread::scope(|s| {
        s.spawn(|| {
            next_request(&listener)
                .reject(b"go away")
                .expect("rdma_reject")
        });
        ctx.connect(&pd, addr, &QpConfig::new(&client_cq, &client_cq), b"second")
    });
    match rejected {
        Err(Error::Rejected { private_data }) => {
            assert!(private_data.starts_with(b"go away"), "{private_data:?}")
        }
        Err(e) => panic!("expected a rejection, got {e}"),
        Ok(_) => panic!("expected a rejection, got a connection"),
    }
    Ok(())
}
