//! In-process checks of the tcp and shm providers' basic operations (the two-process tests are
//! in `two_process.rs`).
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdmalib::*;

fn dev() -> DeviceConfig {
    dev_with(ProviderKind::Tcp)
}

fn dev_with(provider: ProviderKind) -> DeviceConfig {
    DeviceConfig {
        name: "lo".into(),
        ip_address: "127.0.0.1".into(),
        port: 0,
        max_inline_data: 64,
        default_receive_buffer_size: 32,
        provider: Some(provider),
    }
}

const T: Option<Duration> = Some(Duration::from_secs(5));

#[test]
fn write_with_imm_fetch_add_and_blocking_wait_in_one_process() {
    basic_operations(dev);
}

#[test]
fn shm_write_with_imm_fetch_add_and_blocking_wait_in_one_process() {
    basic_operations(|| dev_with(ProviderKind::Shm));
}

fn basic_operations(dev: fn() -> DeviceConfig) {
    let ctx = Context::open(&dev()).unwrap();
    assert_eq!(ctx.provider(), dev().provider.unwrap());
    let listener = ctx.listen(0).unwrap();
    let addr = listener.local_addr();
    let server = std::thread::spawn(move || {
        let ctx = Context::open(&dev()).unwrap();
        let pd = ctx.alloc_pd().unwrap();
        let cq = ctx.create_cq(16).unwrap();
        let mr = pd.register(4096, Access::ALL).unwrap();
        let Some(CmEvent::ConnectRequest(req)) = listener.get_event(T).unwrap() else {
            panic!("no request")
        };
        assert!(req.private_data().starts_with(b"hi"));
        let mut pdata = mr.addr().to_le_bytes().to_vec();
        pdata.extend_from_slice(&mr.rkey().to_le_bytes());
        let conn = req.accept(&pd, &QpConfig::new(&cq, &cq), &pdata).unwrap();
        assert!(matches!(
            listener.get_event(T).unwrap(),
            Some(CmEvent::Established { .. })
        ));
        conn.post_recv(7, mr.sge(0, 0).unwrap()).unwrap();
        // Blocking (warm) wait: armed channel, the engine thread makes the progress.
        let wc = cq.wait_one(T).unwrap().unwrap();
        assert_eq!(
            (wc.wr_id, wc.opcode, wc.imm, wc.byte_len),
            (7, Some(Opcode::RecvRdmaWithImm), Some(99), 5)
        );
        let mut b = [0u8; 5];
        mr.read(100, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        // The client's fetch-and-adds land without this side polling anything.
        let counter = mr.atomic_u64(1000).unwrap();
        let start = std::time::Instant::now();
        while counter.load(Ordering::SeqCst) != 3 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(counter.load(Ordering::SeqCst), 3);
        assert!(matches!(
            listener.get_event(T).unwrap(),
            Some(CmEvent::Disconnected { .. })
        ));
    });
    let pd = ctx.alloc_pd().unwrap();
    assert_eq!(pd.provider(), ctx.provider());
    let cq = ctx.create_cq(16).unwrap();
    let mr = pd.register(4096, Access::ALL).unwrap();
    let conn = ctx
        .connect(&pd, addr, &QpConfig::new(&cq, &cq), b"hi")
        .unwrap();
    let p = conn.peer_private_data();
    let remote = RemoteBuffer {
        addr: u64::from_le_bytes(p[..8].try_into().unwrap()),
        rkey: u32::from_le_bytes(p[8..12].try_into().unwrap()),
        len: 4096,
    };
    mr.write(0, b"hello").unwrap();
    conn.post_write_with_imm(
        1,
        mr.sge(0, 5).unwrap(),
        remote.offset(100),
        99,
        SendFlags::SIGNALED,
    )
    .unwrap();
    let wc = cq.wait_one(T).unwrap().unwrap();
    assert_eq!(
        (wc.wr_id, wc.status, wc.opcode),
        (1, Status::Success, Some(Opcode::Write))
    );
    conn.post_fetch_add(
        2,
        mr.sge(8, 8).unwrap(),
        remote.offset(1000),
        1,
        SendFlags::SIGNALED,
    )
    .unwrap();
    conn.post_fetch_add(
        3,
        mr.sge(16, 8).unwrap(),
        remote.offset(1000),
        2,
        SendFlags::SIGNALED,
    )
    .unwrap();
    let mut got = vec![];
    while got.len() < 2 {
        got.push(cq.wait_one(T).unwrap().unwrap());
    }
    assert_eq!(
        (got[0].wr_id, got[0].opcode, got[1].wr_id),
        (2, Some(Opcode::FetchAdd), 3)
    );
    let mut old = [0u8; 8];
    mr.read(16, &mut old).unwrap();
    assert_eq!(u64::from_ne_bytes(old), 1);
    std::thread::sleep(Duration::from_millis(300));
    drop(conn);
    server.join().unwrap();
}

#[test]
fn an_eager_wait_takes_completions_before_and_after_it_sleeps() {
    let ctx = Context::open(&dev()).unwrap();
    let listener = ctx.listen(0).unwrap();
    let addr = listener.local_addr();
    let sender = std::thread::spawn(move || {
        let ctx = Context::open(&dev()).unwrap();
        let pd = ctx.alloc_pd().unwrap();
        let cq = ctx.create_cq(16).unwrap();
        let mr = pd.register(64, Access::LOCAL_WRITE).unwrap();
        let Some(CmEvent::ConnectRequest(req)) = listener.get_event(T).unwrap() else {
            panic!("no request")
        };
        let conn = req.accept(&pd, &QpConfig::new(&cq, &cq), &[]).unwrap();
        // The first message comes while the receiver still polls, the second after its eager
        // phase (20 ms) is over and it sleeps on the channel.
        for (pause_ms, imm) in [(5, 1), (200, 2)] {
            std::thread::sleep(Duration::from_millis(pause_ms));
            conn.post_send(
                imm as u64,
                mr.sge(0, 8).unwrap(),
                Some(imm),
                SendFlags::SIGNALED,
            )
            .unwrap();
            assert!(cq.wait_one(T).unwrap().unwrap().is_ok());
        }
        std::thread::sleep(Duration::from_millis(300));
    });
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(16).unwrap();
    let mr = pd.register(64, Access::LOCAL_WRITE).unwrap();
    let conn = ctx
        .connect(&pd, addr, &QpConfig::new(&cq, &cq), &[])
        .unwrap();
    for wr_id in 0..2 {
        conn.post_recv(wr_id, mr.sge(0, 64).unwrap()).unwrap();
    }
    let eager = Duration::from_millis(20);
    for imm in [1, 2] {
        let start = std::time::Instant::now();
        let wc = cq.wait_one_eager(eager, T).unwrap().unwrap();
        assert_eq!((wc.opcode, wc.imm), (Some(Opcode::Recv), Some(imm)));
        assert!(start.elapsed() < Duration::from_secs(2));
    }
    let start = std::time::Instant::now();
    let none = cq
        .wait_one_eager(eager, Some(Duration::from_millis(100)))
        .unwrap();
    assert!(none.is_none(), "nothing more was sent, got {none:?}");
    assert!(start.elapsed() >= Duration::from_millis(100));
    sender.join().unwrap();
}
