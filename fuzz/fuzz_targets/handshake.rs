//! Connection requests as a stranger could send them to a tcp listener of rdmalib: any bytes,
//! then the connection closes. The listener must drop what is not a request, never block,
//! and keep answering real ones.
#![no_main]

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rdmalib::{CmEvent, Context, DeviceConfig, Listener, ProviderKind};

struct Setup {
    listener: Listener,
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
        let listener = ctx.listen(0).expect("a listener");
        Mutex::new(Setup {
            listener,
            _ctx: ctx,
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let s = setup().lock().unwrap();
    let mut stranger = TcpStream::connect(s.listener.local_addr()).expect("connect");
    let _ = stranger.write_all(data);
    drop(stranger);
    // The listener reads what arrived without blocking; a complete request is answered
    // (rejected when dropped), anything else is dropped.
    for _ in 0..4 {
        match s.listener.get_event(Some(Duration::from_millis(1))) {
            Ok(Some(CmEvent::ConnectRequest(req))) => {
                let _ = req.private_data();
            }
            Ok(_) => {}
            Err(e) => panic!("the listener failed: {e}"),
        }
    }
});
