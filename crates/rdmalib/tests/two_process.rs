//! rdmalib's provider contract (the crate documentation, "The provider contract") between two
//! real processes. The same tests run on every provider:
//!
//! - tcp over 127.0.0.1 (the default);
//! - `RDMALIB_TEST_PROVIDER=shm`: shm on this host;
//! - `RDMALIB_TEST_PROVIDER=verbs` with `RDMA_DEVICE` and `RDMA_IP` naming an RDMA device and
//!   its address, as `tools/softroce.sh` sets them: verbs, both processes on that device.
//!
//! The peer inherits the variables; `tools/test.sh` runs all three.
//!
//! The responder ("peer") is this same test binary, re-executed: the binary has its own
//! `main` (libtest-mimic runs the tests), which serves as the peer ([`serve`]) when
//! `RDMALIB_TEST_PEER` is set, until it is killed or its stdin closes (the harness holds the
//! other end, so a peer never outlives the test binary that started it).
//!
//! The peer speaks on stdout, one line per event, which the harness collects:
//! - `listening on 127.0.0.1:PORT` once, after it binds;
//! - `peer-error STATUS qp N` for every error completion it polls (send or receive side);
//! - `peer-disconnected qp N` for every connection that closes.
//!
//! It registers R1 (4096 B, all access), R2 (4096 B, local + remote write, no atomics),
//! R3 (4096 B, local write only) and BIG (1 MiB, all access), and accepts every connection
//! request except one carrying `reject-me` (rejected with `go away`); a connection requested
//! with `keep-broken` is kept open (never dropped) after it breaks. The accept's private data
//! describes R1, R2, R3 and BIG in that order, 16 bytes each (`addr u64, rkey u32, len u32`,
//! little-endian). Commands arrive as two-sided sends and are answered with a send:
//! `ping` → `pong`; `qp` → the peer's queue pair number in ASCII; `echo BYTES` → `BYTES`;
//! `private` → the private data of this connection's request, as the peer received it;
//! `dump R OFFSET LEN` → those bytes of region R (1 = R1 … 4 = BIG), sent straight from the
//! region; `delay MS TEXT` → `TEXT`, MS milliseconds later. A write with immediate is answered
//! with a send that carries the same immediate and the write's length (u32, little-endian).
//!
//! Nothing here busy-polls: both sides wait on completion channels, so tests may run in
//! parallel on a 2-core machine.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Trial};
use rdmalib::*;

/// Set in the environment of the re-executed binary to make it the peer ([`serve`]).
const PEER_ENV: &str = "RDMALIB_TEST_PEER";
/// Length of R1, R2 and R3.
const REGION_LEN: usize = 4096;
/// Length of BIG, the target of the large write.
const BIG_LEN: usize = 1 << 20;
/// Bytes of one command or reply slot at the peer.
const SLOT: usize = 256;
/// Command and reply slots at the peer, shared by all its connections.
const SLOTS: usize = 256;
/// Receives the peer keeps posted per connection.
const RECVS_PER_CONN: usize = 8;
/// Largest inline payload, on both sides.
const MAX_INLINE: u32 = 64;
/// How long any expected event may take.
const T: Duration = Duration::from_secs(10);

/// The provider under test: `tcp`, or the one `RDMALIB_TEST_PROVIDER` names.
fn provider() -> ProviderKind {
    match std::env::var("RDMALIB_TEST_PROVIDER") {
        Ok(name) => name
            .parse()
            .expect("RDMALIB_TEST_PROVIDER names a provider"),
        Err(_) => ProviderKind::Tcp,
    }
}

/// The device under test: `RDMA_DEVICE` at `RDMA_IP` (as `tools/softroce.sh` sets them), else
/// the loopback interface.
fn device() -> DeviceConfig {
    DeviceConfig {
        name: std::env::var("RDMA_DEVICE").unwrap_or_else(|_| "lo".into()),
        ip_address: std::env::var("RDMA_IP").unwrap_or_else(|_| "127.0.0.1".into()),
        port: 0,
        max_inline_data: MAX_INLINE,
        default_receive_buffer_size: 32,
        provider: Some(provider()),
    }
}

/// The peer when [`PEER_ENV`] is set (only the [`Peer`] harness sets it), else the tests.
fn main() -> ExitCode {
    if std::env::var_os(PEER_ENV).is_some() {
        serve();
    }
    macro_rules! trials {
        ($($test:ident,)*) => {
            vec![$(Trial::test(stringify!($test), || {
                $test();
                Ok(())
            }),)*]
        };
    }
    let mut tests = trials![
        sends_and_receives_both_ways,
        write_lands_in_the_peers_region,
        write_with_imm_delivers_the_imm_and_the_length,
        fetch_and_add_returns_the_old_values,
        inline_sends_are_limited_to_max_inline_data,
        private_data_arrives_padded_to_the_transports_size,
        the_peer_sees_the_client_disconnect,
        the_client_sees_the_peer_process_die,
        blocking_wait_sleeps_until_a_late_reply,
        a_write_with_a_bad_rkey_is_refused,
        a_write_across_the_end_of_a_region_is_refused,
        an_atomic_on_a_region_without_atomic_access_is_refused,
        a_write_to_a_region_without_remote_access_is_refused,
        a_send_larger_than_the_receive_buffer_is_refused,
        a_refused_unsignaled_atomic_completes_and_leaves_the_local_buffer_alone,
        a_megabyte_write_with_imm_arrives_intact,
        a_large_write_after_a_refused_one_is_flushed_instead_of_hanging,
    ];
    // rdma_cm exchanges connection requests in the kernel: no listener of ours reads them.
    tests.push(
        Trial::test("strangers_that_say_nothing_delay_no_one", || {
            strangers_that_say_nothing_delay_no_one();
            Ok(())
        })
        .with_ignored_flag(provider() == ProviderKind::Verbs),
    );
    libtest_mimic::run(&Arguments::from_args(), tests).exit_code()
}

// ---------------------------------------------------------------------------------------------
// The peer (responder).
// ---------------------------------------------------------------------------------------------

/// A posted receive of the peer: which connection and which slot it uses.
struct Posted {
    qp: u32,
    slot: usize,
}

struct Responder {
    listener: Listener,
    pd: ProtectionDomain,
    send_cq: CompletionQueue,
    recv_cq: CompletionQueue,
    /// R1, R2, R3, BIG.
    regions: [MemoryRegion; 4],
    /// Accept private data: the four regions.
    accept_data: Vec<u8>,
    recv_mr: MemoryRegion,
    tx_mr: MemoryRegion,
    tx_next: usize,
    conns: HashMap<u32, Connection>,
    /// Connections requested with `keep-broken`: the peer keeps them open after they break.
    keep: Vec<u32>,
    kept: Vec<Connection>,
    posted: HashMap<u64, Posted>,
    free_slots: Vec<usize>,
    next_wr: u64,
    delayed: Vec<(Instant, u32, Vec<u8>)>,
}

fn serve() -> ! {
    // The harness holds our stdin: when it goes away, so do we.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let ctx = Context::open(&device()).expect("opening the tcp context");
    let listener = ctx.listen(0).expect("listening on 127.0.0.1");
    println!("listening on {}", listener.local_addr());
    let pd = ctx.alloc_pd().unwrap();
    let regions = [
        pd.register(REGION_LEN, Access::ALL).unwrap(),
        pd.register(REGION_LEN, Access::LOCAL_WRITE | Access::REMOTE_WRITE)
            .unwrap(),
        pd.register(REGION_LEN, Access::LOCAL_WRITE).unwrap(),
        pd.register(BIG_LEN, Access::ALL).unwrap(),
    ];
    let mut accept_data = Vec::new();
    for r in &regions {
        accept_data.extend_from_slice(&r.addr().to_le_bytes());
        accept_data.extend_from_slice(&r.rkey().to_le_bytes());
        accept_data.extend_from_slice(&(r.len() as u32).to_le_bytes());
    }
    let mut responder = Responder {
        listener,
        send_cq: ctx.create_cq(1024).unwrap(),
        recv_cq: ctx.create_cq(1024).unwrap(),
        recv_mr: pd.register(SLOT * SLOTS, Access::LOCAL_WRITE).unwrap(),
        tx_mr: pd.register(SLOT * SLOTS, Access::LOCAL_WRITE).unwrap(),
        pd,
        regions,
        accept_data,
        tx_next: 0,
        conns: HashMap::new(),
        keep: Vec::new(),
        kept: Vec::new(),
        posted: HashMap::new(),
        free_slots: (0..SLOTS).rev().collect(),
        next_wr: 1,
        delayed: Vec::new(),
    };
    loop {
        responder.step();
    }
}

impl Responder {
    /// Handles everything that is ready, then sleeps until something else may be.
    fn step(&mut self) {
        while let Some(event) = self.listener.get_event(Some(Duration::ZERO)).unwrap() {
            self.on_event(event);
        }
        let mut busy = self.drain_cqs();
        busy |= self.send_due();
        if busy {
            return;
        }
        // Completions that arrive before arming do not ring the channel: poll once more.
        self.recv_cq.req_notify(false).unwrap();
        self.send_cq.req_notify(false).unwrap();
        if self.drain_cqs() {
            return;
        }
        let timeout = self
            .delayed
            .iter()
            .map(|(due, _, _)| due.saturating_duration_since(Instant::now()))
            .min();
        let fds = [
            self.listener.as_raw_fd(),
            self.recv_cq.as_raw_fd(),
            self.send_cq.as_raw_fd(),
        ];
        wait_readable(&fds, timeout);
        // Consume the channel events that fired (listener events are consumed by get_event).
        self.recv_cq.wait(Some(Duration::ZERO)).unwrap();
        self.send_cq.wait(Some(Duration::ZERO)).unwrap();
    }

    fn drain_cqs(&mut self) -> bool {
        let mut any = false;
        while let Some(wc) = self.recv_cq.poll_one().unwrap() {
            any = true;
            self.on_recv(wc);
        }
        while let Some(wc) = self.send_cq.poll_one().unwrap() {
            any = true;
            if !wc.is_ok() {
                println!("peer-error {:?} qp {}", wc.status, wc.qp_num);
            }
        }
        any
    }

    fn on_event(&mut self, event: CmEvent) {
        match event {
            CmEvent::ConnectRequest(req) => {
                if sent_part(req.private_data()) == b"reject-me" {
                    req.reject(b"go away").unwrap();
                    return;
                }
                let qp = QpConfig::new(&self.send_cq, &self.recv_cq)
                    .max_inline_data(MAX_INLINE)
                    .max_recv_wr(RECVS_PER_CONN as u32);
                let keep = sent_part(req.private_data()) == b"keep-broken";
                let conn = req.accept(&self.pd, &qp, &self.accept_data).unwrap();
                let qp_num = conn.qp_num();
                if keep {
                    self.keep.push(qp_num);
                }
                self.conns.insert(qp_num, conn);
                for _ in 0..RECVS_PER_CONN {
                    let slot = self.free_slots.pop().expect("a free receive slot");
                    self.post_slot(qp_num, slot);
                }
            }
            CmEvent::Established { .. } => {}
            CmEvent::Disconnected { qp_num } => {
                let conn = self.conns.remove(&qp_num);
                if self.keep.contains(&qp_num) {
                    self.kept.extend(conn);
                }
                println!("peer-disconnected qp {qp_num}");
            }
        }
    }

    /// Posts the receive slot on connection `qp`, or frees it if that is no longer possible.
    fn post_slot(&mut self, qp: u32, slot: usize) {
        let wr_id = self.next_wr;
        self.next_wr += 1;
        let sge = self.recv_mr.sge(slot * SLOT, SLOT).unwrap();
        match self.conns.get(&qp).map(|c| c.post_recv(wr_id, sge)) {
            Some(Ok(())) => {
                self.posted.insert(wr_id, Posted { qp, slot });
            }
            _ => self.free_slots.push(slot),
        }
    }

    fn on_recv(&mut self, wc: Completion) {
        if !wc.is_ok() {
            println!("peer-error {:?} qp {}", wc.status, wc.qp_num);
        }
        // Error completions of requests that consumed no receive carry a wr_id we never used.
        let Some(Posted { qp, slot }) = self.posted.remove(&wc.wr_id) else {
            return;
        };
        if !wc.is_ok() {
            self.free_slots.push(slot);
            return;
        }
        if wc.opcode == Some(Opcode::RecvRdmaWithImm) {
            // The data went to the written region; `byte_len` is the write's length.
            self.post_slot(qp, slot);
            return self.reply(qp, &wc.byte_len.to_le_bytes(), wc.imm);
        }
        let mut msg = vec![0; wc.byte_len as usize];
        self.recv_mr.read(slot * SLOT, &mut msg).unwrap();
        self.post_slot(qp, slot);
        self.on_command(qp, &msg);
    }

    fn on_command(&mut self, qp: u32, msg: &[u8]) {
        if let Some(rest) = msg.strip_prefix(b"echo ") {
            return self.reply(qp, rest, None);
        }
        let text = String::from_utf8_lossy(msg).into_owned();
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["ping"] => self.reply(qp, b"pong", None),
            ["qp"] => self.reply(qp, qp.to_string().as_bytes(), None),
            ["private"] => {
                let data = self.conns.get(&qp).map(|c| c.peer_private_data().to_vec());
                self.reply(qp, &data.unwrap_or_default(), None)
            }
            ["dump", region, offset, len] => {
                let parsed = (
                    region.parse::<usize>(),
                    offset.parse::<usize>(),
                    len.parse::<usize>(),
                );
                let (Ok(region @ 1..=4), Ok(offset), Ok(len)) = parsed else {
                    return self.reply(qp, format!("error: bad dump {text:?}").as_bytes(), None);
                };
                // Straight from the region: the send reads local memory, whatever its remote rights.
                let Ok(sge) = self.regions[region - 1].sge(offset, len) else {
                    return self.reply(
                        qp,
                        format!("error: {text:?} is out of bounds").as_bytes(),
                        None,
                    );
                };
                post_reply(self.conns.get(&qp), sge, None);
            }
            ["delay", ms, rest @ ..] => match ms.parse::<u64>() {
                Ok(ms) => {
                    let due = Instant::now() + Duration::from_millis(ms);
                    self.delayed.push((due, qp, rest.join(" ").into_bytes()));
                }
                Err(_) => self.reply(qp, format!("error: bad delay {text:?}").as_bytes(), None),
            },
            _ => self.reply(
                qp,
                format!("error: unknown command {text:?}").as_bytes(),
                None,
            ),
        }
    }

    /// Sends the delayed replies that are due; returns whether there were any.
    fn send_due(&mut self) -> bool {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) =
            self.delayed.drain(..).partition(|(at, _, _)| *at <= now);
        self.delayed = later;
        let any = !due.is_empty();
        for (_, qp, data) in due {
            self.reply(qp, &data, None);
        }
        any
    }

    /// Sends `data` (at most one slot) on connection `qp` from the next transmit slot.
    fn reply(&mut self, qp: u32, data: &[u8], imm: Option<u32>) {
        let data = &data[..data.len().min(SLOT)];
        let offset = self.tx_next * SLOT;
        self.tx_next = (self.tx_next + 1) % SLOTS;
        // The tcp provider has sent the payload when `post_send` returns, and SLOTS replies
        // are never in flight at once here, so reusing slots round-robin is safe.
        self.tx_mr.write(offset, data).unwrap();
        post_reply(
            self.conns.get(&qp),
            self.tx_mr.sge(offset, data.len()).unwrap(),
            imm,
        );
    }
}

fn post_reply(conn: Option<&Connection>, sge: Sge<'_>, imm: Option<u32>) {
    let Some(conn) = conn else { return };
    if let Err(e) = conn.post_send(0, sge, imm, SendFlags::SIGNALED) {
        eprintln!("peer: reply on qp {} not sent: {e}", conn.qp_num());
    }
}

/// Blocks until one of `fds` is readable or `timeout` passes.
fn wait_readable(fds: &[RawFd], timeout: Option<Duration>) {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    // SAFETY: `pfds` is a live array of `pfds.len()` pollfd entries; poll only writes `revents`.
    unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
}

// ---------------------------------------------------------------------------------------------
// The harness.
// ---------------------------------------------------------------------------------------------

/// A running peer process: its address and its stdout lines. Killed on drop.
struct Peer {
    child: Child,
    addr: SocketAddr,
    lines: Receiver<String>,
    /// Lines received but not yet matched by an expectation.
    unmatched: Vec<String>,
}

impl Peer {
    fn start() -> Peer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(PEER_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the peer process");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut peer = Peer {
            child,
            addr: ([0, 0, 0, 0], 0).into(),
            lines,
            unmatched: Vec::new(),
        };
        let line = peer.expect(|l| l.starts_with("listening on "));
        peer.addr = line["listening on ".len()..]
            .parse()
            .expect("the peer's address");
        peer
    }

    /// Waits for a stdout line that satisfies `pred` (earlier unmatched lines count too).
    fn expect(&mut self, pred: impl Fn(&str) -> bool) -> String {
        if let Some(i) = self.unmatched.iter().position(|l| pred(l)) {
            return self.unmatched.remove(i);
        }
        let deadline = Instant::now() + T;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) if pred(&line) => return line,
                Ok(line) => self.unmatched.push(line),
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no expected line from the peer within {T:?}; other lines: {:?}",
                        self.unmatched
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the peer exited ({:?}); its lines: {:?}",
                        self.child.try_wait(),
                        self.unmatched
                    )
                }
            }
        }
    }

    fn expect_line(&mut self, line: &str) {
        self.expect(|l| l == line);
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The peer's regions, as indices into [`Client::regions`] and the `dump` command (index + 1).
const R1: usize = 0;
const R2: usize = 1;
const R3: usize = 2;
const BIG: usize = 3;

/// Where the client's outgoing payloads and incoming replies live in its region.
const TX: usize = 0;
const RX: usize = BIG_LEN;

/// One connection of the test process to the peer, with its own queues and memory.
struct Client {
    conn: Connection,
    pd: ProtectionDomain,
    send_cq: CompletionQueue,
    recv_cq: CompletionQueue,
    mr: MemoryRegion,
    /// R1, R2, R3, BIG as the peer published them.
    regions: [RemoteBuffer; 4],
}

impl Client {
    fn connect(ctx: &Context, addr: SocketAddr) -> Client {
        Client::try_connect(ctx, addr, b"hello").unwrap()
    }

    fn try_connect(ctx: &Context, addr: SocketAddr, private_data: &[u8]) -> Result<Client> {
        let pd = ctx.alloc_pd()?;
        let send_cq = ctx.create_cq(64)?;
        let recv_cq = ctx.create_cq(64)?;
        let mr = pd.register(2 * BIG_LEN, Access::ALL)?;
        let qp = QpConfig::new(&send_cq, &recv_cq).max_inline_data(MAX_INLINE);
        let conn = ctx.connect(&pd, addr, &qp, private_data)?;
        let regions = parse_regions(conn.peer_private_data());
        Ok(Client {
            conn,
            pd,
            send_cq,
            recv_cq,
            mr,
            regions,
        })
    }

    fn wait_send(&self) -> Completion {
        self.send_cq
            .wait_one(Some(T))
            .unwrap()
            .expect("a send-side completion in time")
    }

    fn wait_recv(&self) -> Completion {
        self.recv_cq
            .wait_one(Some(T))
            .unwrap()
            .expect("a receive completion in time")
    }

    fn post_reply_recv(&self, wr_id: u64) {
        self.conn
            .post_recv(wr_id, self.mr.sge(RX, BIG_LEN).unwrap())
            .unwrap();
    }

    /// The bytes of the reply that completion `wc` announced.
    fn reply_bytes(&self, wc: &Completion) -> Vec<u8> {
        let mut out = vec![0; wc.byte_len as usize];
        self.mr.read(RX, &mut out).unwrap();
        out
    }

    /// Sends `data` from the start of the client's buffer.
    fn send(&self, wr_id: u64, data: &[u8], flags: SendFlags) -> Result<()> {
        self.mr.write(TX, data).unwrap();
        self.conn
            .post_send(wr_id, self.mr.sge(TX, data.len()).unwrap(), None, flags)
    }

    /// Sends a command and returns the reply's completion and bytes, checking both sides.
    fn call_wc(&self, command: &[u8]) -> (Completion, Vec<u8>) {
        self.post_reply_recv(100);
        self.send(1, command, SendFlags::SIGNALED).unwrap();
        let sent = self.wait_send();
        // Verbs defines byte_len for receives, reads and atomics only; sends report 0.
        assert_eq!(
            (sent.wr_id, sent.status, sent.opcode, sent.byte_len),
            (1, Status::Success, Some(Opcode::Send), 0)
        );
        let got = self.wait_recv();
        assert_eq!(
            (got.wr_id, got.status, got.opcode),
            (100, Status::Success, Some(Opcode::Recv))
        );
        assert_eq!(got.qp_num, self.conn.qp_num());
        let bytes = self.reply_bytes(&got);
        (got, bytes)
    }

    fn call(&self, command: &str) -> Vec<u8> {
        self.call_wc(command.as_bytes()).1
    }

    fn dump(&self, region: usize, offset: usize, len: usize) -> Vec<u8> {
        let bytes = self.call(&format!("dump {} {offset} {len}", region + 1));
        assert_eq!(
            bytes.len(),
            len,
            "dump reply: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        bytes
    }

    /// The peer's queue pair number for this connection (what its stdout lines name).
    fn peer_qp(&self) -> u32 {
        String::from_utf8(self.call("qp")).unwrap().parse().unwrap()
    }

    /// A signaled write of `data` (placed at the client's TX) to `remote`, with `imm` if set.
    fn post_write(&self, wr_id: u64, data: &[u8], remote: RemoteBuffer, imm: Option<u32>) {
        self.mr.write(TX, data).unwrap();
        let sge = self.mr.sge(TX, data.len()).unwrap();
        match imm {
            Some(imm) => {
                self.conn
                    .post_write_with_imm(wr_id, sge, remote, imm, SendFlags::SIGNALED)
            }
            None => self
                .conn
                .post_write(wr_id, sge, remote, SendFlags::SIGNALED),
        }
        .unwrap();
    }

    /// A write that must succeed: checks its completion.
    fn write_ok(&self, data: &[u8], remote: RemoteBuffer) {
        self.post_write(2, data, remote, None);
        let wc = self.wait_send();
        assert_eq!(
            (wc.wr_id, wc.status, wc.opcode, wc.byte_len),
            (2, Status::Success, Some(Opcode::Write), 0)
        );
    }
}

/// What the sender put into padded private data: the bytes before the zero padding.
fn sent_part(data: &[u8]) -> &[u8] {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &data[..end]
}

/// Checks the contract's form of received private data: `sent`, then zeros up to `size`.
fn assert_padded(data: &[u8], sent: &[u8], size: usize) {
    assert_eq!(data.len(), size, "private data is padded to {size} bytes");
    assert_eq!(&data[..sent.len()], sent);
    assert!(
        data[sent.len()..].iter().all(|&b| b == 0),
        "the padding is zeros: {data:?}"
    );
}

fn parse_regions(data: &[u8]) -> [RemoteBuffer; 4] {
    assert_eq!(
        data.len(),
        MAX_ACCEPT_PRIVATE_DATA,
        "accept private data is padded to {MAX_ACCEPT_PRIVATE_DATA} bytes"
    );
    std::array::from_fn(|i| {
        let d = &data[16 * i..16 * (i + 1)];
        RemoteBuffer {
            addr: u64::from_le_bytes(d[..8].try_into().unwrap()),
            rkey: u32::from_le_bytes(d[8..12].try_into().unwrap()),
            len: u32::from_le_bytes(d[12..16].try_into().unwrap()),
        }
    })
}

/// Deterministic bytes that differ from position to position.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn setup() -> (Peer, Context) {
    (Peer::start(), Context::open(&device()).unwrap())
}

// ---------------------------------------------------------------------------------------------
// Operations.
// ---------------------------------------------------------------------------------------------

fn sends_and_receives_both_ways() {
    let (peer, ctx) = setup();
    let c = Client::connect(&ctx, peer.addr);
    let (wc, bytes) = c.call_wc(b"ping");
    assert_eq!(bytes, b"pong");
    assert_eq!((wc.byte_len, wc.imm), (4, None));
    assert_eq!(c.call("echo two-sided, both ways"), b"two-sided, both ways");
    // Many round trips on one connection keep their order and lose nothing.
    for i in 0..50 {
        assert_eq!(c.call(&format!("echo {i}")), i.to_string().as_bytes());
    }
}

fn write_lands_in_the_peers_region() {
    let (peer, ctx) = setup();
    let c = Client::connect(&ctx, peer.addr);
    let data = pattern(64, 1);
    c.write_ok(&data, c.regions[R1].offset(100));
    let dump = c.dump(R1, 99, 66);
    assert_eq!(dump[0], 0, "the byte before the write is untouched");
    assert_eq!(&dump[1..65], &data[..]);
    assert_eq!(dump[65], 0, "the byte after the write is untouched");
    // R2 allows remote writes too (it lacks only atomics).
    c.write_ok(b"r2", c.regions[R2].offset(4094));
    assert_eq!(c.dump(R2, 4094, 2), b"r2");
}

fn write_with_imm_delivers_the_imm_and_the_length() {
    let (peer, ctx) = setup();
    let c = Client::connect(&ctx, peer.addr);
    let data = pattern(300, 2);
    c.post_reply_recv(100);
    c.post_write(3, &data, c.regions[R1].offset(8), Some(0xabcd_1234));
    let wc = c.wait_send();
    assert_eq!(
        (wc.wr_id, wc.status, wc.opcode),
        (3, Status::Success, Some(Opcode::Write))
    );
    // The peer's answer is a send with immediate: our imm and the byte_len its receive saw.
    let got = c.wait_recv();
    assert_eq!(
        (got.wr_id, got.status, got.opcode, got.imm),
        (100, Status::Success, Some(Opcode::Recv), Some(0xabcd_1234))
    );
    assert_eq!(c.reply_bytes(&got), 300u32.to_le_bytes());
    assert_eq!(c.dump(R1, 8, 300), data);
}

fn fetch_and_add_returns_the_old_values() {
    let (peer, ctx) = setup();
    let c = Client::connect(&ctx, peer.addr);
    let counter = c.regions[R1].offset(16);
    let mut olds = Vec::new();
    for (i, add) in [5u64, 7, 30].into_iter().enumerate() {
        let local = TX + 8 * i;
        c.mr.write(local, &[0xaa; 8]).unwrap();
        c.conn
            .post_fetch_add(
                10 + i as u64,
                c.mr.sge(local, 8).unwrap(),
                counter,
                add,
                SendFlags::SIGNALED,
            )
            .unwrap();
        let wc = c.wait_send();
        assert_eq!(
            (wc.wr_id, wc.status, wc.opcode, wc.byte_len),
            (10 + i as u64, Status::Success, Some(Opcode::FetchAdd), 8)
        );
        let mut old = [0; 8];
        c.mr.read(local, &mut old).unwrap();
        olds.push(u64::from_ne_bytes(old));
    }
    assert_eq!(olds, [0, 5, 12]);
    assert_eq!(
        u64::from_ne_bytes(c.dump(R1, 16, 8).try_into().unwrap()),
        42
    );
}

fn inline_sends_are_limited_to_max_inline_data() {
    let (peer, ctx) = setup();
    let c = Client::connect(&ctx, peer.addr);
    let inline = SendFlags::SIGNALED.with_inline(true);
    let mut command = b"echo ".to_vec();
    command.resize(MAX_INLINE as usize, b'x');
    c.post_reply_recv(100);
    c.send(4, &command, inline).unwrap();
    let wc = c.wait_send();
    assert_eq!((wc.wr_id, wc.status), (4, Status::Success));
    let got = c.wait_recv();
    assert_eq!(c.reply_bytes(&got), &command[5..]);
    command.push(b'x');
    match c.send(5, &command, inline) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("max_inline_data"), "{msg}"),
        other => panic!("an inline send over max_inline_data gave {other:?}"),
    }
    // Refused before it reached the wire: the connection is fine and nothing else completes.
    assert_eq!(c.send_cq.poll_one().unwrap(), None);
    assert_eq!(c.call("ping"), b"pong");
}

// ---------------------------------------------------------------------------------------------
// Connection management.
// ---------------------------------------------------------------------------------------------

fn private_data_arrives_padded_to_the_transports_size() {
    let (peer, ctx) = setup();
    match Client::try_connect(&ctx, peer.addr, b"reject-me") {
        Err(Error::Rejected { private_data }) => {
            assert_padded(&private_data, b"go away", MAX_REJECT_PRIVATE_DATA)
        }
        Err(e) => panic!("expected a rejection, got {e}"),
        Ok(_) => panic!("expected a rejection, got a connection"),
    }
    // The peer lives on and accepts the next request, describing its regions (parse_regions
    // checks the accept's padding); the request's private data reached it padded too.
    let c = Client::connect(&ctx, peer.addr);
    assert_padded(&c.call("private"), b"hello", MAX_CONNECT_PRIVATE_DATA);
    // Too much private data is refused before anything is sent.
    let too_long = [1u8; MAX_CONNECT_PRIVATE_DATA + 1];
    match Client::try_connect(&ctx, peer.addr, &too_long) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("private data"), "{msg}"),
        Err(e) => panic!("expected an invalid argument, got {e}"),
        Ok(_) => panic!("57 bytes of private data were accepted"),
    }
    let lens: Vec<u32> = c.regions.iter().map(|r| r.len).collect();
    assert_eq!(lens, [4096, 4096, 4096, 1 << 20]);
    for (i, r) in c.regions.iter().enumerate() {
        assert_eq!(r.addr % 4096, 0, "region {i} is page-aligned: {r:?}");
        assert!(
            c.regions[..i]
                .iter()
                .all(|o| o.rkey != r.rkey && o.addr != r.addr),
            "{:?}",
            c.regions
        );
    }
    assert_eq!(c.call("ping"), b"pong");
}

fn the_peer_sees_the_client_disconnect() {
    let (mut peer, ctx) = setup();
    let c = Client::connect(&ctx, peer.addr);
    let other = Client::connect(&ctx, peer.addr);
    let q = c.peer_qp();
    assert_ne!(q, other.peer_qp());
    drop(c);
    peer.expect_line(&format!("peer-disconnected qp {q}"));
    // Only that connection went away.
    assert_eq!(other.call("ping"), b"pong");
    assert!(other.conn.is_connected());
}

fn the_client_sees_the_peer_process_die() {
    let (mut peer, ctx) = setup();
    let c = Client::connect(&ctx, peer.addr);
    assert_eq!(c.call("ping"), b"pong");
    c.conn.post_recv(77, c.mr.sge(RX, 64).unwrap()).unwrap();
    assert!(c.conn.is_connected());
    peer.kill();
    let wc = c.wait_recv();
    assert_eq!(
        (wc.wr_id, wc.status, wc.qp_num),
        (77, Status::WrFlushError, c.conn.qp_num())
    );
    // A failed completion carries the request, the status and the connection only.
    assert_eq!((wc.opcode, wc.byte_len, wc.imm), (None, 0, None));
    assert!(!c.conn.is_connected());
    // Posts on the broken connection are accepted and flushed, signaled or not.
    c.send(6, b"ping", SendFlags::SIGNALED).unwrap();
    c.send(7, b"ping", SendFlags::UNSIGNALED).unwrap();
    let flushed: Vec<_> = [c.wait_send(), c.wait_send()]
        .iter()
        .map(|wc| (wc.wr_id, wc.status, wc.opcode))
        .collect();
    assert_eq!(
        flushed,
        [
            (6, Status::WrFlushError, None),
            (7, Status::WrFlushError, None)
        ]
    );
    c.conn.post_recv(78, c.mr.sge(RX, 64).unwrap()).unwrap();
    assert_eq!(
        (c.wait_recv().wr_id, c.recv_cq.poll_one().unwrap()),
        (78, None)
    );
}

/// Connections to the peer's listener that send nothing, half a handshake or garbage: a real
/// request is answered at once all the same, and the strangers are dropped at their deadline.
fn strangers_that_say_nothing_delay_no_one() {
    use std::io::{Read, Write};
    let (peer, ctx) = setup();
    let mut strangers = Vec::new();
    for bytes in [&b""[..], b"", b"", b"RF", b"GET / HTTP/1.1\r\n"] {
        let mut s = stranger(peer.addr);
        s.write_all(bytes).unwrap();
        strangers.push(s);
    }
    let started = Instant::now();
    let c = Client::connect(&ctx, peer.addr);
    assert_eq!(c.call("ping"), b"pong");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "connecting behind {} strangers took {:?}",
        strangers.len(),
        started.elapsed()
    );
    for mut s in strangers {
        let mut byte = [0u8; 1];
        // Closed: end of stream, or a reset for one whose bytes were never read.
        match s.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("a stranger was answered or kept: {other:?}"),
        }
    }
}

/// A raw connection to `addr` as the provider under test listens there (a TCP socket, or
/// shm's abstract Unix socket), with a read timeout beyond the handshake deadline.
fn stranger(addr: SocketAddr) -> Box<dyn StrangerStream> {
    use std::os::linux::net::SocketAddrExt;
    let timeout = Some(Duration::from_secs(10));
    match provider() {
        ProviderKind::Shm => {
            let name = format!("rdmalib-shm/{addr}");
            let unix = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let s = std::os::unix::net::UnixStream::connect_addr(&unix).unwrap();
            s.set_read_timeout(timeout).unwrap();
            Box::new(s)
        }
        _ => {
            let s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(timeout).unwrap();
            Box::new(s)
        }
    }
}

trait StrangerStream: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> StrangerStream for T {}

// ---------------------------------------------------------------------------------------------
// Blocking waits.
// ---------------------------------------------------------------------------------------------

fn blocking_wait_sleeps_until_a_late_reply() {
    let (peer, ctx) = setup();
    let c = Client::connect(&ctx, peer.addr);
    let delay = Duration::from_millis(100);

    // req_notify + wait.
    c.post_reply_recv(100);
    let start = Instant::now();
    c.send(1, b"delay 100 late", SendFlags::UNSIGNALED).unwrap();
    c.recv_cq.req_notify(false).unwrap();
    assert_eq!(
        c.recv_cq.poll_one().unwrap(),
        None,
        "the reply is 100 ms away"
    );
    assert!(
        !c.recv_cq.wait(Some(Duration::from_millis(10))).unwrap(),
        "nothing within 10 ms"
    );
    c.recv_cq.req_notify(false).unwrap();
    assert!(c.recv_cq.wait(Some(T)).unwrap(), "the armed channel fires");
    let waited = start.elapsed();
    let wc = c
        .recv_cq
        .poll_one()
        .unwrap()
        .expect("the completion that fired the channel");
    assert_eq!((wc.wr_id, wc.status), (100, Status::Success));
    assert_eq!(c.reply_bytes(&wc), b"late");
    assert!(waited >= delay, "woke after {waited:?}");

    // wait_one.
    c.post_reply_recv(101);
    let start = Instant::now();
    c.send(2, b"delay 100 later", SendFlags::UNSIGNALED)
        .unwrap();
    let wc = c
        .recv_cq
        .wait_one(Some(T))
        .unwrap()
        .expect("the late reply");
    let waited = start.elapsed();
    assert_eq!((wc.wr_id, wc.status), (101, Status::Success));
    assert_eq!(c.reply_bytes(&wc), b"later");
    assert!(waited >= delay, "woke after {waited:?}");
    // Nothing else was queued: unsignaled sends complete silently.
    assert_eq!(c.send_cq.poll_one().unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// Access violations: refused on both sides, nothing written, both processes carry on.
// ---------------------------------------------------------------------------------------------

/// What a refused request does to the peer's receives.
enum PeerReceive {
    /// Sends and writes with immediate consume one, which fails with one of these statuses.
    Consumed(&'static [Status]),
    /// Plain writes and atomics consume none.
    Untouched,
}

/// Runs `violate` (which posts one signaled request with wr_id 9 that the peer must refuse) on a
/// fresh connection, then checks both sides' errors and that `region[offset..offset+len]` at
/// the peer still holds what it held before, through a new connection.
fn check_violation(
    region: usize,
    offset: usize,
    len: usize,
    prepare: impl FnOnce(&Client),
    violate: impl FnOnce(&Client),
    statuses: &[Status],
    peer_receive: PeerReceive,
) {
    let (mut peer, ctx) = setup();
    let c = Client::connect(&ctx, peer.addr);
    prepare(&c);
    let before = c.dump(region, offset, len);
    let q = c.peer_qp();
    c.conn.post_recv(55, c.mr.sge(RX, 64).unwrap()).unwrap();

    violate(&c);
    let wc = c.wait_send();
    assert_eq!((wc.wr_id, wc.opcode), (9, None));
    assert!(
        statuses.contains(&wc.status),
        "{wc:?}, expected one of {statuses:?}"
    );
    // The connection is broken: our receive flushes, and so does a request posted now.
    let flushed = c.wait_recv();
    assert_eq!((flushed.wr_id, flushed.status), (55, Status::WrFlushError));
    assert!(!c.conn.is_connected());
    c.send(10, b"ping", SendFlags::SIGNALED).unwrap();
    let late = c.wait_send();
    assert_eq!((late.wr_id, late.status), (10, Status::WrFlushError));

    // The peer: the receive the request consumed fails, the others flush, and the listener
    // reports the disconnect.
    if let PeerReceive::Consumed(statuses) = peer_receive {
        let lines: Vec<String> = statuses
            .iter()
            .map(|s| format!("peer-error {s:?} qp {q}"))
            .collect();
        peer.expect(|l| lines.iter().any(|want| want == l));
    }
    peer.expect_line(&format!("peer-error WrFlushError qp {q}"));
    peer.expect_line(&format!("peer-disconnected qp {q}"));

    // Same client process, new connection: the peer serves it and its memory is unchanged.
    let fresh = Client::connect(&ctx, peer.addr);
    assert_eq!(fresh.call("ping"), b"pong");
    assert_eq!(
        fresh.dump(region, offset, len),
        before,
        "the refused request changed memory"
    );
}

fn a_write_with_a_bad_rkey_is_refused() {
    check_violation(
        R1,
        0,
        64,
        |c| c.write_ok(&[0x11; 64], c.regions[R1]),
        |c| {
            let known: Vec<u32> = c.regions.iter().map(|r| r.rkey).collect();
            let bad = RemoteBuffer {
                rkey: 0xdead_beef,
                ..c.regions[R1]
            };
            assert!(!known.contains(&bad.rkey));
            c.post_write(9, &[0xee; 64], bad, None);
        },
        &[Status::RemoteAccessError],
        PeerReceive::Untouched,
    );
}

fn a_write_across_the_end_of_a_region_is_refused() {
    // The 64-byte write would cover R1[4064..4096] and 32 bytes past its end. As a write with
    // immediate, it also consumes one of the peer's receives, which completes in error there.
    check_violation(
        R1,
        4064,
        32,
        |c| c.write_ok(&[0x22; 32], c.regions[R1].offset(4064)),
        |c| {
            let remote = RemoteBuffer {
                len: 64,
                ..c.regions[R1].offset(4064)
            };
            c.post_write(9, &[0xee; 64], remote, Some(1));
        },
        &[Status::RemoteAccessError],
        // rxe, tcp and shm report the responder's side as a remote access error, some NICs as
        // a local one.
        PeerReceive::Consumed(&[Status::RemoteAccessError, Status::LocalAccessError]),
    );
}

fn an_atomic_on_a_region_without_atomic_access_is_refused() {
    check_violation(
        R2,
        0,
        8,
        |c| c.write_ok(&7u64.to_ne_bytes(), c.regions[R2]),
        |c| {
            c.mr.write(TX, &[0xaa; 8]).unwrap();
            c.conn
                .post_fetch_add(
                    9,
                    c.mr.sge(TX, 8).unwrap(),
                    c.regions[R2],
                    1,
                    SendFlags::SIGNALED,
                )
                .unwrap();
        },
        &[Status::RemoteAccessError],
        PeerReceive::Untouched,
    );
}

fn a_write_to_a_region_without_remote_access_is_refused() {
    check_violation(
        R3,
        0,
        16,
        |_| {},
        |c| c.post_write(9, &[0xee; 16], c.regions[R3], None),
        &[Status::RemoteAccessError],
        PeerReceive::Untouched,
    );
}

fn a_send_larger_than_the_receive_buffer_is_refused() {
    check_violation(
        R1,
        0,
        SLOT,
        |_| {},
        |c| c.send(9, &[b'x'; SLOT + 1], SendFlags::SIGNALED).unwrap(),
        // What most NICs, tcp and shm say; then what rxe says.
        &[Status::RemoteInvalidRequest, Status::RemoteOperationError],
        PeerReceive::Consumed(&[Status::LocalLengthError, Status::LocalQpOperationError]),
    );
}

fn a_refused_unsignaled_atomic_completes_and_leaves_the_local_buffer_alone() {
    let (peer, ctx) = setup();
    let c = Client::connect(&ctx, peer.addr);
    c.mr.write(TX, &[0xaa; 8]).unwrap();
    c.conn
        .post_fetch_add(
            9,
            c.mr.sge(TX, 8).unwrap(),
            c.regions[R2],
            1,
            SendFlags::UNSIGNALED,
        )
        .unwrap();
    // A request that fails always completes, signaled or not.
    let wc = c.wait_send();
    assert_eq!((wc.wr_id, wc.status), (9, Status::RemoteAccessError));
    let mut local = [0; 8];
    c.mr.read(TX, &mut local).unwrap();
    assert_eq!(local, [0xaa; 8]);
}

// ---------------------------------------------------------------------------------------------
// Large payloads.
// ---------------------------------------------------------------------------------------------

fn a_megabyte_write_with_imm_arrives_intact() {
    let (peer, ctx) = setup();
    let c = Client::connect(&ctx, peer.addr);
    let data = pattern(BIG_LEN, 3);
    c.post_reply_recv(100);
    c.post_write(3, &data, c.regions[BIG], Some(7));
    let wc = c.wait_send();
    assert_eq!((wc.wr_id, wc.status), (3, Status::Success));
    let got = c.wait_recv();
    assert_eq!((got.status, got.imm), (Status::Success, Some(7)));
    assert_eq!(c.reply_bytes(&got), (BIG_LEN as u32).to_le_bytes());
    // And back: the peer sends the whole region in one 1 MiB send.
    let dump = c.dump(BIG, 0, BIG_LEN);
    let first_bad = dump.iter().zip(&data).position(|(a, b)| a != b);
    assert_eq!(first_bad, None, "the 1 MiB payload differs");
}

fn a_large_write_after_a_refused_one_is_flushed_instead_of_hanging() {
    // The peer keeps this connection open after refusing the bad write, but reads no more
    // from it: a large write posted right after must be accepted and flushed, not wait
    // forever for room in the socket.
    let (mut peer, ctx) = setup();
    let c = Client::try_connect(&ctx, peer.addr, b"keep-broken").unwrap();
    let q = c.peer_qp();
    // Far more than the socket buffers of both sides hold.
    let huge = c.pd.register(64 << 20, Access::LOCAL_WRITE).unwrap();
    let (done_tx, done) = mpsc::channel();
    let client = std::thread::spawn(move || {
        let bad = RemoteBuffer {
            rkey: 0xdead_beef,
            ..c.regions[R1]
        };
        c.conn
            .post_write(9, c.mr.sge(TX, 8).unwrap(), bad, SendFlags::SIGNALED)
            .unwrap();
        let sge = huge.sge(0, huge.len()).unwrap();
        let outcome = c
            .conn
            .post_write(10, sge, c.regions[BIG], SendFlags::UNSIGNALED);
        done_tx.send(()).unwrap();
        (c, outcome)
    });
    if done.recv_timeout(T).is_err() {
        panic!("posting a write on a broken connection hangs");
    }
    let (c, outcome) = client.join().unwrap();
    outcome.unwrap();
    // In posting order: the refused write, then the large one, flushed although unsignaled.
    let completions: Vec<_> = [c.wait_send(), c.wait_send()]
        .iter()
        .map(|wc| (wc.wr_id, wc.status))
        .collect();
    assert_eq!(
        completions,
        [(9, Status::RemoteAccessError), (10, Status::WrFlushError)]
    );
    peer.expect_line(&format!("peer-error WrFlushError qp {q}"));
    let fresh = Client::connect(&ctx, peer.addr);
    assert_eq!(fresh.call("ping"), b"pong");
}
