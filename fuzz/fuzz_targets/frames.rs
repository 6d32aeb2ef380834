//! Frames as a peer could send them on an established tcp connection of rdmalib: after a
//! real handshake, any bytes, then the peer closes. The receive path must check everything
//! (bad opcodes, lengths, rkeys, acks for nothing) and end the connection cleanly; nothing may
//! be written outside the registered region.
#![no_main]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rdmalib::{
    Access, CmEvent, CompletionQueue, Context, DeviceConfig, Listener, MemoryRegion,
    ProtectionDomain, ProviderKind, QpConfig,
};

/// The stream providers' connection request: magic, version 2, no private data.
const REQUEST: [u8; 8] = [b'R', b'F', b'T', b'C', 2, 0, 0, 0];
/// The accept's length: magic, version, status, length, no private data.
const ACCEPT_LEN: usize = 9;

struct Setup {
    listener: Listener,
    cq: CompletionQueue,
    mr: MemoryRegion,
    pd: ProtectionDomain,
    _ctx: Context,
}

fn setup() -> &'static Mutex<Setup> {
    static SETUP: OnceLock<Mutex<Setup>> = OnceLock::new();
    SETUP.get_or_init(|| {
        let device = DeviceConfig {
            name: "lo".into(),
            ip_address: "127.0.0.1".into(),
            port: 0,
            max_inline_data: 0,
            default_receive_buffer_size: 32,
            provider: Some(ProviderKind::Tcp),
        };
        let ctx = Context::open(&device).expect("a tcp context");
        let pd = ctx.alloc_pd().expect("a protection domain");
        Mutex::new(Setup {
            listener: ctx.listen(0).expect("a listener"),
            cq: ctx.create_cq(256).expect("a completion queue"),
            mr: pd.register(4096, Access::ALL).expect("a region"),
            pd,
            _ctx: ctx,
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let s = setup().lock().unwrap();
    let mut peer = TcpStream::connect(s.listener.local_addr()).expect("connect");
    peer.write_all(&REQUEST).expect("the request");
    let req = loop {
        match s.listener.get_event(Some(Duration::from_secs(5))) {
            Ok(Some(CmEvent::ConnectRequest(req))) => break req,
            Ok(Some(_)) => continue,
            other => panic!("no connection request: {}", other.is_ok()),
        }
    };
    let conn = req
        .accept(&s.pd, &QpConfig::new(&s.cq, &s.cq), b"")
        .expect("accept");
    let mut accept = [0u8; ACCEPT_LEN];
    peer.read_exact(&mut accept).expect("the accept");
    for slot in 0..4u64 {
        let sge = s.mr.sge(slot as usize * 1024, 1024).expect("a slot");
        conn.post_recv(slot, sge).expect("a receive");
    }
    let _ = peer.write_all(data);
    let _ = peer.shutdown(std::net::Shutdown::Write);
    // Drive the connection until it ends (the peer closed its side) or a second passes.
    let deadline = Instant::now() + Duration::from_secs(1);
    while conn.is_connected() && Instant::now() < deadline {
        while s.cq.poll_one().expect("poll").is_some() {}
    }
    drop(conn);
    while s.cq.poll_one().expect("poll").is_some() {}
    while let Ok(Some(_)) = s.listener.get_event(Some(Duration::ZERO)) {}
});
