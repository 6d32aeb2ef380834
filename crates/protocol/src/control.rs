//! Control records: the [`Hello`] in every connection request's private data, and the
//! records of the allocation, lease and billing exchanges, sent as two-sided messages whose
//! immediate is their [`MessageKind`] ([`crate::mailbox`]).

use std::fmt;
use std::net::SocketAddr;

use function_library::Kind;

use crate::record::{Field, ProtocolError, Reader, Writer, record, wire_enum};

/// Version of the control protocol; both ends of every connection must speak the same.
pub const PROTOCOL_VERSION: u16 = 7;
const MAGIC: [u8; 4] = *b"RFAS";

/// The start of every [`Hello`]: the magic and [`PROTOCOL_VERSION`], checked before anything
/// else, so a stranger or a peer of another version gets a clear error.
#[derive(Default)]
pub struct Preamble;

impl Field for Preamble {
    const MAX_LEN: usize = 6;
    fn put(&self, w: &mut Writer) {
        w.bytes(&MAGIC);
        PROTOCOL_VERSION.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        if r.array::<4>()? != MAGIC {
            return Err(ProtocolError::BadMagic);
        }
        match u16::get(r)? {
            PROTOCOL_VERSION => Ok(Preamble),
            peer => Err(ProtocolError::Version { peer }),
        }
    }
}

wire_enum! {
    /// Who opens a connection.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Role: u8 ("role") {
        /// A client connecting to an executor manager or the resource manager.
        Client = 1,
        /// An executor thread connecting back to its client.
        Executor = 2,
        /// An executor manager registering with the resource manager.
        ExecutorManager = 3,
        /// An executor connecting to its manager for billing.
        ExecutorBilling = 4,
    }
}

/// What a connecting peer proves who it is with: the SHA-256 digest of the shared secret (an
/// executor manager), the allocation's token (an executor, to its client and to its manager),
/// or nothing (clients).
pub type Credential = [u8; 32];

record! {
    /// The connection request's private data (within the 56-byte limit).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Hello("hello", preamble Preamble) {
        /// Who connects.
        pub role: Role,
        /// Allocation the connection belongs to (executors), or 0.
        pub allocation_id: u32,
        /// Executor thread index, or 0.
        pub thread: u16,
        /// See [`Credential`]; all zero for clients.
        pub credential: Credential,
    }
}

const _: () = assert!(
    Preamble::MAX_LEN + 1 + 4 + 2 + 32 <= rdmalib::MAX_CONNECT_PRIVATE_DATA,
    "a hello must fit a connection request's private data"
);

impl Hello {
    /// A client connecting to an executor manager or the resource manager.
    pub fn client() -> Hello {
        Hello::with(Role::Client, 0, 0, [0; 32])
    }

    /// Executor thread `thread` of allocation `allocation_id` connecting back to its client,
    /// with the token the client put in its allocation request.
    pub fn executor(allocation_id: u32, thread: u16, token: Credential) -> Hello {
        Hello::with(Role::Executor, allocation_id, thread, token)
    }

    /// An executor manager registering with the resource manager, with the shared secret's
    /// digest.
    pub fn executor_manager(secret: Credential) -> Hello {
        Hello::with(Role::ExecutorManager, 0, 0, secret)
    }

    /// The executor of allocation `allocation_id` connecting to its manager for billing, with
    /// the token the manager gave it.
    pub fn billing(allocation_id: u32, token: Credential) -> Hello {
        Hello::with(Role::ExecutorBilling, allocation_id, 0, token)
    }

    fn with(role: Role, allocation_id: u32, thread: u16, credential: Credential) -> Hello {
        Hello {
            role,
            allocation_id,
            thread,
            credential,
        }
    }
}

/// Whether two credentials are equal, in time that does not depend on where they differ.
pub fn credentials_match(a: &Credential, b: &Credential) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The environment variable in which a manager hands its executor the client's token.
pub const CLIENT_TOKEN_ENV: &str = "RFAAS_CLIENT_TOKEN";
/// The environment variable in which a manager hands its executor the billing token.
pub const BILLING_TOKEN_ENV: &str = "RFAAS_BILLING_TOKEN";

/// A credential as 64 hex digits (for the environment).
pub fn credential_hex(c: &Credential) -> String {
    c.iter().map(|b| format!("{b:02x}")).collect()
}

/// The credential that [`credential_hex`] wrote.
pub fn parse_credential(hex: &str) -> Option<Credential> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut c = [0u8; 32];
    for (i, byte) in c.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(c)
}

/// The SHA-256 of a function library: what names it in an executor manager's code cache.
pub type CodeDigest = [u8; 32];

/// The [`CodeDigest`] of `code`.
pub fn code_digest(code: &[u8]) -> CodeDigest {
    use sha2::{Digest, Sha256};
    Sha256::digest(code).into()
}

/// A fresh random credential (from the kernel's random source).
pub fn random_credential() -> std::io::Result<Credential> {
    use std::io::Read;
    let mut token = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut token)?;
    Ok(token)
}

wire_enum! {
    /// The immediate of a control send: which record its payload is.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum MessageKind: u32 ("message kind") {
        /// [`AllocationRequest`], client → manager.
        AllocationRequest = 1,
        /// [`AllocationResponse`], manager → client.
        AllocationResponse = 2,
        /// The function library bytes, client → executor thread 0.
        Code = 3,
        /// [`ThreadReady`], executor thread → client.
        ThreadReady = 4,
        /// [`ExecutorExit`], manager → client.
        ExecutorExit = 5,
        /// [`NodeRegistration`], manager → resource manager.
        NodeRegistration = 6,
        /// [`LeaseRequest`], client → resource manager.
        LeaseRequest = 7,
        /// [`LeaseResponse`], resource manager → client.
        LeaseResponse = 8,
        /// [`LeaseNotice`], resource manager → manager.
        LeaseNotice = 9,
        /// [`LeaseClosed`], manager → resource manager.
        LeaseClosed = 11,
        /// An empty message, manager → resource manager, every [`HEARTBEAT_INTERVAL`]: the
        /// manager is alive and its link works.
        Heartbeat = 12,
        /// [`LeasesHeld`], manager → resource manager, after registering.
        LeasesHeld = 13,
        /// [`BillRecorded`], resource manager → manager.
        BillRecorded = 14,
    }
}

/// How often an executor manager sends the resource manager a [`MessageKind::Heartbeat`].
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
/// A manager the resource manager has heard nothing from for this long is gone: its leases are
/// released and its connection closed. A manager whose heartbeats have gone unacknowledged for
/// this long takes its resource manager for gone and registers again.
pub const HEARTBEAT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Which sandbox runs an allocation's functions: the kind of its code.
impl Field for Kind {
    const MAX_LEN: usize = 1;
    fn put(&self, w: &mut Writer) {
        let raw: u8 = match self {
            Kind::Native => 1,
            Kind::Wasm => 2,
        };
        raw.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        match u8::get(r)? {
            1 => Ok(Kind::Native),
            2 => Ok(Kind::Wasm),
            v => Err(r.invalid("sandbox", v.into())),
        }
    }
}

record! {
    /// A client asks an executor manager for an executor.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct AllocationRequest("allocation request") {
        /// The lease from the resource manager; 0 without one (`--skip-resource-manager`).
        pub lease_id: u32,
        /// Executor threads (leased cores).
        pub cores: u16,
        /// Input slots per thread.
        pub input_buf_count: u16,
        /// -1 always hot, 0 always warm, >0 ms of idle hot polling before sleeping.
        pub hot_timeout_ms: i32,
        /// Largest payload per invocation, in bytes.
        pub max_payload: u32,
        /// Size of the function library the client will send.
        pub code_size: u32,
        /// Its [`CodeDigest`]: a manager that has the library cached answers
        /// [`AllocationResponse::code_cached`] and the client sends nothing.
        pub code_digest: CodeDigest,
        /// Memory in MiB.
        pub memory_mb: u32,
        /// Sandbox of the code.
        pub sandbox: Kind,
        /// Per-invocation time limit in ms (wasm and native); 0 for none.
        pub time_limit_ms: u32,
        /// Where the executor connects back to.
        pub client: SocketAddr,
        /// What the executor's threads present when they connect back, so the client takes
        /// no stranger for its executor.
        pub token: Credential,
    }
}

wire_enum! {
    /// Outcome of an allocation request.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum AllocationStatus: u8 ("status") {
        /// The executor is being started; it connects back.
        Accepted = 0,
        /// The manager knows no such lease.
        UnknownLease = 1,
        /// Not enough free cores or memory.
        NoResources = 2,
        /// The request asks for something this manager does not do.
        Unsupported = 3,
        /// The request is malformed.
        BadRequest = 4,
        /// Starting the executor failed.
        SpawnFailed = 5,
    }
}

record! {
    /// The manager's answer to an [`AllocationRequest`].
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct AllocationResponse("allocation response") {
        /// Outcome.
        pub status: AllocationStatus,
        /// Id of the new allocation (executors present it when connecting back).
        pub allocation_id: u32,
        /// The executor loads the library from the manager's code cache: the client does not
        /// send it.
        pub code_cached: bool,
        /// Explanation for a refusal.
        pub message: String,
    }
}

record! {
    /// An executor thread tells its client that it is ready, and where its input slots are.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct ThreadReady("thread ready") {
        /// Thread index.
        pub thread: u16,
        /// Address of the first input slot.
        pub input_addr: u64,
        /// Remote key of the input slots.
        pub input_rkey: u32,
        /// Bytes per slot (header and payload).
        pub slot_size: u32,
        /// Number of slots.
        pub slot_count: u16,
        /// Functions in the loaded library.
        pub function_count: u16,
        /// Why the code could not be loaded; `None` when the thread is ready.
        pub error: Option<String>,
    }
}

impl ThreadReady {
    /// The announcement of a thread that cannot serve: `why`, and no input slots.
    pub fn failed(thread: u16, why: &str) -> ThreadReady {
        ThreadReady {
            thread,
            input_addr: 0,
            input_rkey: 0,
            slot_size: 0,
            slot_count: 0,
            function_count: 0,
            error: Some(why.to_string()),
        }
    }
}

record! {
    /// The manager tells a client that its executor process ended.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct ExecutorExit("executor exit") {
        /// The allocation.
        pub allocation_id: u32,
        /// `Some(signal)` when killed by a signal.
        pub signal: Option<i32>,
        /// Exit status when it exited.
        pub status: i32,
    }
}

/// Exit status of an executor whose watchdog stopped it: a native function ran past the
/// allocation's time limit.
pub const EXIT_TIME_LIMIT: i32 = 124;
/// Exit status of an executor that stopped because its manager went away.
pub const EXIT_MANAGER_LOST: i32 = 125;
/// Exit status of a native executor whose function aborted after an allocation failed: it
/// asked for more memory than the allocation leases.
pub const EXIT_OUT_OF_MEMORY: i32 = 126;

impl fmt::Display for ExecutorExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.allocation_id;
        match (self.signal, self.status) {
            (Some(sig), _) => write!(f, "executor of allocation {id} was killed by signal {sig}"),
            (None, EXIT_TIME_LIMIT) => write!(
                f,
                "executor of allocation {id} was stopped: a native function ran past the allocation's time limit"
            ),
            (None, EXIT_MANAGER_LOST) => write!(
                f,
                "executor of allocation {id} stopped: its executor manager went away"
            ),
            (None, EXIT_OUT_OF_MEMORY) => write!(
                f,
                "executor of allocation {id} stopped: a native function ran out of memory \
                 (it asked for more than the allocation leases) and aborted"
            ),
            (None, status) => write!(f, "executor of allocation {id} exited with status {status}"),
        }
    }
}

/// Longest node name.
pub const MAX_NODE_NAME_LEN: usize = 64;

/// Checks a node name: 1 to [`MAX_NODE_NAME_LEN`] bytes, no spaces or control characters at
/// either end, no control characters inside. The error says what is wrong.
pub fn check_node_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("a node name must not be empty".into());
    }
    if name.len() > MAX_NODE_NAME_LEN {
        return Err(format!(
            "node name {:?}… has {} bytes; at most {MAX_NODE_NAME_LEN} are allowed",
            name.chars().take(16).collect::<String>(),
            name.len()
        ));
    }
    if name.chars().any(char::is_control) || name.trim() != name {
        return Err(format!(
            "node name {name:?} has control characters or surrounding spaces"
        ));
    }
    Ok(())
}

record! {
    /// An executor manager tells the resource manager which node it serves.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct NodeRegistration("node registration") {
        /// The manager's `node_name`.
        pub node: String,
    }
}

record! {
    /// A client asks the resource manager for cores and memory.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct LeaseRequest("lease request") {
        /// Cores wanted.
        pub cores: u16,
        /// Memory wanted, in MiB.
        pub memory_mb: u32,
    }
}

wire_enum! {
    /// Outcome of a lease request.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum LeaseStatus: u8 ("status") {
        /// Granted; the response names the node.
        Granted = 0,
        /// No registered node has that many free cores and that much memory.
        NoResources = 1,
        /// The request is malformed or the node's manager did not confirm.
        Failed = 2,
        /// No executor server is that large, free or not: the request can never be granted.
        TooLarge = 3,
    }
}

record! {
    /// The resource manager's answer to a [`LeaseRequest`].
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct LeaseResponse("lease response") {
        /// Outcome.
        pub status: LeaseStatus,
        /// The lease, presented to the executor manager in the allocation request.
        pub lease_id: u32,
        /// The node's executor manager.
        pub manager: SocketAddr,
        /// Leased cores.
        pub cores: u16,
        /// Leased memory in MiB.
        pub memory_mb: u32,
        /// Node name.
        pub node: String,
        /// Why the lease was refused.
        pub message: String,
    }
}

record! {
    /// The resource manager tells a node's manager about a lease before it answers the client;
    /// the manager does not answer (a request that comes first waits for the notice).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct LeaseNotice("lease notice") {
        /// The lease.
        pub lease_id: u32,
        /// Leased cores.
        pub cores: u16,
        /// Leased memory in MiB.
        pub memory_mb: u32,
    }
}

record! {
    /// A manager reports a lease's end with its billing.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct LeaseClosed("lease closed") {
        /// The lease.
        pub lease_id: u32,
        /// From allocation to the executor's exit, in ns.
        pub allocation_ns: u64,
        /// Busy-polling time of all executor threads, in ns.
        pub hot_polling_ns: u64,
        /// Function execution time of all executor threads, in ns.
        pub execution_ns: u64,
        /// Invocations served.
        pub invocations: u64,
    }
}

/// A lease a manager holds, with the cores and memory its notice granted: enough for a
/// resource manager that lost the lease (its host went down before the grant reached the disk)
/// to take it back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldLease {
    /// The lease.
    pub lease_id: u32,
    /// Leased cores.
    pub cores: u16,
    /// Leased memory in MiB.
    pub memory_mb: u32,
}

impl Field for HeldLease {
    const MAX_LEN: usize = 10;
    fn put(&self, w: &mut Writer) {
        self.lease_id.put(w);
        self.cores.put(w);
        self.memory_mb.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(HeldLease {
            lease_id: u32::get(r)?,
            cores: u16::get(r)?,
            memory_mb: u32::get(r)?,
        })
    }
}

/// Most leases in one [`LeasesHeld`] record.
pub const MAX_HELD: usize = 50;

/// A u16 count (at most [`MAX_HELD`]), then each lease. Encoding a longer list writes its
/// first [`MAX_HELD`]; [`LeasesHeld::split`] cuts long lists into several records.
impl Field for Vec<HeldLease> {
    const MAX_LEN: usize = 2 + HeldLease::MAX_LEN * MAX_HELD;
    fn put(&self, w: &mut Writer) {
        let n = self.len().min(MAX_HELD);
        (n as u16).put(w);
        for lease in &self[..n] {
            lease.put(w);
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let n = u16::get(r)?;
        if usize::from(n) > MAX_HELD {
            return Err(r.invalid("lease count", n.into()));
        }
        (0..n).map(|_| HeldLease::get(r)).collect()
    }
}

record! {
    /// After registering, a manager tells the resource manager which of its leases it still
    /// holds (allocated, or announced and not used yet), in as many records as it takes, the
    /// last one marked. A resource manager that restarted reconciles the leases it had open on
    /// the node: held ones stay active; the others end with the bill the manager sent before
    /// this list, or are released. A held lease it does not know at all is taken back.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct LeasesHeld("leases held") {
        /// The leases (at most [`MAX_HELD`] per record).
        pub leases: Vec<HeldLease>,
        /// Whether this is the last record of the list.
        pub last: bool,
    }
}

impl LeasesHeld {
    /// The records that list `leases` (at least one, the last marked).
    pub fn split(leases: &[HeldLease]) -> Vec<LeasesHeld> {
        let mut records: Vec<LeasesHeld> = leases
            .chunks(MAX_HELD)
            .map(|chunk| LeasesHeld {
                leases: chunk.to_vec(),
                last: false,
            })
            .collect();
        if records.is_empty() {
            records.push(LeasesHeld::default());
        }
        if let Some(end) = records.last_mut() {
            end.last = true;
        }
        records
    }
}

record! {
    /// The resource manager stored a lease's bill ([`LeaseClosed`]): the manager may forget
    /// it. A manager sends every bill not acknowledged again after it registers again.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct BillRecorded("bill recorded") {
        /// The lease.
        pub lease_id: u32,
    }
}

record! {
    /// Where an executor adds its billing: the manager's accept of a billing connection
    /// carries it as private data. The record there holds three little-endian u64 counters
    /// at the offsets in [`billing`], which the executor adds to with fetch-and-add.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct BillingRecord("billing record") {
        /// Address of the allocation's counters.
        pub addr: u64,
        /// Remote key of the accounting region.
        pub rkey: u32,
    }
}

/// The layout of an allocation's accounting counters (see [`BillingRecord`]).
pub mod billing {
    /// Offset of the hot-polling nanoseconds.
    pub const HOT_POLLING_NS: u32 = 0;
    /// Offset of the execution nanoseconds.
    pub const EXECUTION_NS: u32 = 8;
    /// Offset of the invocation count.
    pub const INVOCATIONS: u32 = 16;
    /// Bytes per allocation's counters (half a cache line, to keep allocations apart).
    pub const RECORD_LEN: usize = 32;
}

/// Private data as text: RDMA transports pad it with zeros, which are cut off here.
pub fn private_text(data: &[u8]) -> String {
    let end = data.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&data[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{MAX_MESSAGE_LEN, MAX_TEXT_LEN, Record};

    #[test]
    fn records_round_trip() {
        let req = AllocationRequest {
            lease_id: 3,
            cores: 2,
            input_buf_count: 4,
            hot_timeout_ms: -1,
            max_payload: 1 << 20,
            code_size: 12345,
            code_digest: code_digest(b"library"),
            memory_mb: 256,
            sandbox: Kind::Wasm,
            time_limit_ms: 1000,
            client: "127.0.0.1:10006".parse().unwrap(),
            token: [9; 32],
        };
        assert_eq!(AllocationRequest::decode(&req.encode()).unwrap(), req);
        let ready = ThreadReady::failed(1, "bad module");
        assert_eq!(ThreadReady::decode(&ready.encode()).unwrap(), ready);
        let exit = ExecutorExit {
            allocation_id: 5,
            signal: Some(11),
            status: -1,
        };
        assert_eq!(ExecutorExit::decode(&exit.encode()).unwrap(), exit);
        let hello = Hello::executor(77, 3, [7; 32]);
        assert_eq!(Hello::decode(&hello.encode()).unwrap(), hello);
        // Padded as private data arrives over IB and RoCE.
        let mut padded = hello.encode();
        padded.resize(rdmalib::MAX_CONNECT_PRIVATE_DATA, 0);
        assert_eq!(Hello::decode(&padded).unwrap(), hello);
    }

    #[test]
    fn the_longest_records_fit_a_message() {
        let long = "x".repeat(1000);
        let response = LeaseResponse {
            status: LeaseStatus::Failed,
            lease_id: u32::MAX,
            manager: "[::1]:1".parse().unwrap(),
            cores: u16::MAX,
            memory_mb: u32::MAX,
            node: long.clone(),
            message: long,
        };
        let bytes = response.encode();
        assert!(bytes.len() <= MAX_MESSAGE_LEN, "{}", bytes.len());
        let back = LeaseResponse::decode(&bytes).unwrap();
        assert_eq!(back.message.len(), MAX_TEXT_LEN);
    }

    #[test]
    fn rejects_truncated_foreign_and_invalid_records() {
        let hello = Hello::client().encode();
        assert_eq!(
            Hello::decode(&hello[..5]),
            Err(ProtocolError::Truncated("hello"))
        );
        let mut other = hello.clone();
        other[4] = 9;
        assert_eq!(
            Hello::decode(&other),
            Err(ProtocolError::Version { peer: 9 })
        );
        assert_eq!(
            Hello::decode(b"GET / HTTP/1.1\r\n"),
            Err(ProtocolError::BadMagic)
        );
        let mut bad_role = hello;
        bad_role[6] = 42;
        assert_eq!(
            Hello::decode(&bad_role),
            Err(ProtocolError::Invalid {
                record: "hello",
                field: "role",
                value: 42
            })
        );
        assert_eq!(MessageKind::from_raw(12), Some(MessageKind::Heartbeat));
        assert_eq!(MessageKind::from_raw(15), None);
    }

    #[test]
    fn held_leases_split_into_records() {
        assert_eq!(
            LeasesHeld::split(&[]),
            [LeasesHeld {
                leases: vec![],
                last: true
            }]
        );
        let held: Vec<HeldLease> = (1..=120)
            .map(|id| HeldLease {
                lease_id: id,
                cores: (id % 7) as u16,
                memory_mb: id * 256,
            })
            .collect();
        let records = LeasesHeld::split(&held);
        assert_eq!(records.len(), 3);
        assert_eq!(
            records.iter().map(|r| r.last).collect::<Vec<_>>(),
            [false, false, true]
        );
        let mut back = Vec::new();
        for r in &records {
            let bytes = r.encode();
            assert!(bytes.len() <= MAX_MESSAGE_LEN);
            back.extend(LeasesHeld::decode(&bytes).unwrap().leases);
        }
        assert_eq!(back, held);
        // A count beyond the limit, and a flag that is neither 0 nor 1, are refused.
        let mut bad = records[2].encode();
        bad[..2].copy_from_slice(&(MAX_HELD as u16 + 1).to_le_bytes());
        assert!(matches!(
            LeasesHeld::decode(&bad),
            Err(ProtocolError::Invalid { .. })
        ));
        let mut bad = LeasesHeld::split(&[held[6]])[0].encode();
        *bad.last_mut().unwrap() = 2;
        assert!(matches!(
            LeasesHeld::decode(&bad),
            Err(ProtocolError::Invalid { .. })
        ));
        let ack = BillRecorded { lease_id: 9 };
        assert_eq!(BillRecorded::decode(&ack.encode()).unwrap(), ack);
    }

    #[test]
    fn node_names_are_bounded() {
        assert!(check_node_name("exec-mgr-node").is_ok());
        for bad in [
            "",
            "  ",
            " padded",
            "tab\there",
            &"n".repeat(MAX_NODE_NAME_LEN + 1),
        ] {
            assert!(check_node_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credentials_compare_whole() {
        let a = [1u8; 32];
        let mut b = a;
        assert!(credentials_match(&a, &b));
        b[31] ^= 1;
        assert!(!credentials_match(&a, &b));
        assert_ne!(random_credential().unwrap(), random_credential().unwrap());
        let t = random_credential().unwrap();
        assert_eq!(parse_credential(&credential_hex(&t)), Some(t));
        assert_eq!(parse_credential("00"), None);
    }
}
