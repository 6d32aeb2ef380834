//! The wire contract between clients, executor managers and executors.
//!
//! # Invocations (the hot path)
//!
//! The client RDMA-writes `[InputHeader][payload]` into one of the executor thread's input
//! slots with an immediate built by [`invocation_imm`]:
//! `invocation_id << 16 | solicited << 15 | function_index`. The slot is
//! `invocation_id % slot_count`, so calls in flight never share memory. The payload size is
//! the write's length minus [`INPUT_HEADER_LEN`].
//!
//! The executor runs the function in place and RDMA-writes the output to the address in the
//! header, with the immediate [`result_imm`]: `invocation_id << 16 | return_code`. A result
//! with a non-zero [`ReturnCode`] carries no bytes.
//!
//! # Control messages
//!
//! Connections start with a [`Hello`] in the connection request's private data; a peer with
//! another [`PROTOCOL_VERSION`] is rejected with a message saying both versions. Control
//! messages are two-sided sends whose immediate is the [`MessageKind`] and whose payload is a
//! fixed-layout little-endian record (at most [`MAX_MESSAGE_LEN`] bytes); the function
//! library is shipped as one send of kind [`MessageKind::Code`].

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Version of this protocol; both ends of every connection must speak the same.
pub const PROTOCOL_VERSION: u16 = 1;
const MAGIC: [u8; 4] = *b"RFAS";

/// Bytes in front of every payload in an input slot: `{ u64 result_address, u32 result_rkey }`.
pub const INPUT_HEADER_LEN: usize = 12;
/// Largest control message.
pub const MAX_MESSAGE_LEN: usize = 256;
/// Largest human-readable message carried in a control record.
pub const MAX_TEXT_LEN: usize = 200;
/// Function indices have 15 bits.
pub const MAX_FUNCTION_INDEX: u16 = 0x7fff;

const SOLICITED_BIT: u32 = 1 << 15;

/// Immediate of an invocation write.
#[inline]
pub fn invocation_imm(invocation_id: u16, function_index: u16, solicited: bool) -> u32 {
    (u32::from(invocation_id) << 16)
        | if solicited { SOLICITED_BIT } else { 0 }
        | u32::from(function_index & MAX_FUNCTION_INDEX)
}

/// Splits an invocation immediate into `(invocation_id, function_index, solicited)`.
#[inline]
pub fn parse_invocation_imm(imm: u32) -> (u16, u16, bool) {
    (
        (imm >> 16) as u16,
        (imm & u32::from(MAX_FUNCTION_INDEX)) as u16,
        imm & SOLICITED_BIT != 0,
    )
}

/// Immediate of a result write.
#[inline]
pub fn result_imm(invocation_id: u16, code: ReturnCode) -> u32 {
    (u32::from(invocation_id) << 16) | u32::from(code as u16)
}

/// Splits a result immediate into `(invocation_id, return code)`.
#[inline]
pub fn parse_result_imm(imm: u32) -> (u16, u16) {
    ((imm >> 16) as u16, imm as u16)
}

/// The header the client writes in front of each payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputHeader {
    /// Where the executor writes the result.
    pub result_addr: u64,
    /// Remote key of the result buffer.
    pub result_rkey: u32,
}

impl InputHeader {
    /// The 12 header bytes.
    pub fn encode(&self) -> [u8; INPUT_HEADER_LEN] {
        let mut b = [0u8; INPUT_HEADER_LEN];
        b[..8].copy_from_slice(&self.result_addr.to_le_bytes());
        b[8..].copy_from_slice(&self.result_rkey.to_le_bytes());
        b
    }

    /// Reads the header from its 12 bytes.
    pub fn decode(b: &[u8; INPUT_HEADER_LEN]) -> InputHeader {
        InputHeader {
            result_addr: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            result_rkey: u32::from_le_bytes(b[8..].try_into().expect("4 bytes")),
        }
    }
}

/// What an executor answers for one invocation (the low 16 bits of a result immediate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ReturnCode {
    /// The function ran; the result bytes follow.
    Success = 0,
    /// The function index is not in the library.
    UnknownFunction = 1,
    /// The payload is larger than the input slot.
    PayloadTooLarge = 2,
    /// The function returned a size larger than the output buffer; nothing was sent.
    OutputTooLarge = 3,
    /// The wasm function trapped (unreachable, out-of-bounds access, stack overflow …).
    Trap = 4,
    /// The function ran past the allocation's time limit and was interrupted.
    Timeout = 5,
    /// The write was too short to hold an input header.
    BadRequest = 6,
    /// The executor is not ready (its sandbox failed and is being rebuilt).
    Unavailable = 7,
}

impl ReturnCode {
    /// The code for a raw value; unknown values are `None`.
    pub fn from_u16(v: u16) -> Option<ReturnCode> {
        Some(match v {
            0 => ReturnCode::Success,
            1 => ReturnCode::UnknownFunction,
            2 => ReturnCode::PayloadTooLarge,
            3 => ReturnCode::OutputTooLarge,
            4 => ReturnCode::Trap,
            5 => ReturnCode::Timeout,
            6 => ReturnCode::BadRequest,
            7 => ReturnCode::Unavailable,
            _ => return None,
        })
    }

    /// A sentence for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            ReturnCode::Success => "success",
            ReturnCode::UnknownFunction => "the executor has no function with that index",
            ReturnCode::PayloadTooLarge => "the payload does not fit the executor's input buffer",
            ReturnCode::OutputTooLarge => {
                "the function returned more bytes than its output buffer holds"
            }
            ReturnCode::Trap => "the function trapped",
            ReturnCode::Timeout => "the function ran past the allocation's time limit",
            ReturnCode::BadRequest => "the invocation was malformed",
            ReturnCode::Unavailable => "the executor thread is not ready",
        }
    }
}

impl fmt::Display for ReturnCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Errors decoding protocol records.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// The record ended early.
    #[error("truncated {0} record")]
    Truncated(&'static str),
    /// The peer is not an rFaaS component.
    #[error("the peer does not speak the rFaaS protocol")]
    BadMagic,
    /// The peer speaks another version.
    #[error(
        "protocol version mismatch: the peer speaks version {peer}, this build speaks {PROTOCOL_VERSION}"
    )]
    Version {
        /// The peer's version.
        peer: u16,
    },
    /// A field has a value the protocol does not define.
    #[error("invalid {field} value {value} in a {record} record")]
    Invalid {
        /// The record.
        record: &'static str,
        /// The field.
        field: &'static str,
        /// The raw value.
        value: u64,
    },
}

/// Who opens a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// A client connecting to an executor manager.
    Client = 1,
    /// An executor thread connecting back to its client.
    Executor = 2,
    /// An executor manager registering with the resource manager.
    ExecutorManager = 3,
    /// An executor connecting to its manager for billing.
    ExecutorBilling = 4,
}

/// The connection request's private data (20 bytes, within the 56-byte limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Who connects.
    pub role: Role,
    /// Allocation the connection belongs to (executors), or 0.
    pub allocation_id: u32,
    /// Executor thread index, or 0.
    pub thread: u16,
    /// Role-specific word: the shared secret for managers, 0 otherwise.
    pub secret: u32,
}

impl Hello {
    /// Encodes the hello.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(&MAGIC)
            .u16(PROTOCOL_VERSION)
            .u8(self.role as u8)
            .u8(0);
        w.u32(self.allocation_id)
            .u16(self.thread)
            .u16(0)
            .u32(self.secret);
        w.buf
    }

    /// Decodes and version-checks a hello.
    pub fn decode(data: &[u8]) -> Result<Hello, ProtocolError> {
        let mut r = Reader::new(data, "hello");
        if r.take(4)? != MAGIC {
            return Err(ProtocolError::BadMagic);
        }
        let version = r.u16()?;
        if version != PROTOCOL_VERSION {
            return Err(ProtocolError::Version { peer: version });
        }
        let role = match r.u8()? {
            1 => Role::Client,
            2 => Role::Executor,
            3 => Role::ExecutorManager,
            4 => Role::ExecutorBilling,
            v => return Err(invalid("hello", "role", v.into())),
        };
        r.u8()?;
        let allocation_id = r.u32()?;
        let thread = r.u16()?;
        r.u16()?;
        let secret = r.u32()?;
        Ok(Hello {
            role,
            allocation_id,
            thread,
            secret,
        })
    }
}

/// The immediate of a control send: which record its payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MessageKind {
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
    /// [`LeaseAck`], manager → resource manager.
    LeaseAck = 10,
    /// [`LeaseClosed`], manager → resource manager.
    LeaseClosed = 11,
}

impl MessageKind {
    /// The kind for an immediate value.
    pub fn from_imm(imm: u32) -> Option<MessageKind> {
        Some(match imm {
            1 => MessageKind::AllocationRequest,
            2 => MessageKind::AllocationResponse,
            3 => MessageKind::Code,
            4 => MessageKind::ThreadReady,
            5 => MessageKind::ExecutorExit,
            6 => MessageKind::NodeRegistration,
            7 => MessageKind::LeaseRequest,
            8 => MessageKind::LeaseResponse,
            9 => MessageKind::LeaseNotice,
            10 => MessageKind::LeaseAck,
            11 => MessageKind::LeaseClosed,
            _ => return None,
        })
    }
}

/// Which sandbox runs the functions of an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Sandbox {
    /// A native shared library, dlopened in the executor process.
    Native = 1,
    /// A WebAssembly module under wasmtime.
    Wasm = 2,
}

impl fmt::Display for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sandbox::Native => "native",
            Sandbox::Wasm => "wasm",
        })
    }
}

impl From<function_library::Kind> for Sandbox {
    fn from(kind: function_library::Kind) -> Sandbox {
        match kind {
            function_library::Kind::Native => Sandbox::Native,
            function_library::Kind::Wasm => Sandbox::Wasm,
        }
    }
}

/// A client asks an executor manager for an executor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocationRequest {
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
    /// Memory in MiB.
    pub memory_mb: u32,
    /// Sandbox of the code.
    pub sandbox: Sandbox,
    /// Per-invocation time limit in ms for wasm functions; 0 for none.
    pub time_limit_ms: u32,
    /// Where the executor connects back to.
    pub client: SocketAddr,
}

impl AllocationRequest {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(self.lease_id)
            .u16(self.cores)
            .u16(self.input_buf_count);
        w.u32(self.hot_timeout_ms as u32)
            .u32(self.max_payload)
            .u32(self.code_size);
        w.u32(self.memory_mb)
            .u8(self.sandbox as u8)
            .u32(self.time_limit_ms);
        w.addr(self.client);
        w.buf
    }

    /// Decodes the record.
    pub fn decode(data: &[u8]) -> Result<Self, ProtocolError> {
        const R: &str = "allocation request";
        let mut r = Reader::new(data, R);
        Ok(AllocationRequest {
            lease_id: r.u32()?,
            cores: r.u16()?,
            input_buf_count: r.u16()?,
            hot_timeout_ms: r.u32()? as i32,
            max_payload: r.u32()?,
            code_size: r.u32()?,
            memory_mb: r.u32()?,
            sandbox: match r.u8()? {
                1 => Sandbox::Native,
                2 => Sandbox::Wasm,
                v => return Err(invalid(R, "sandbox", v.into())),
            },
            time_limit_ms: r.u32()?,
            client: r.addr()?,
        })
    }
}

/// Outcome of an allocation request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AllocationStatus {
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

/// The manager's answer to an [`AllocationRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocationResponse {
    /// Outcome.
    pub status: AllocationStatus,
    /// Id of the new allocation (executors present it when connecting back).
    pub allocation_id: u32,
    /// Explanation for a refusal.
    pub message: String,
}

impl AllocationResponse {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(self.status as u8)
            .u32(self.allocation_id)
            .text(&self.message);
        w.buf
    }

    /// Decodes the record.
    pub fn decode(data: &[u8]) -> Result<Self, ProtocolError> {
        const R: &str = "allocation response";
        let mut r = Reader::new(data, R);
        let status = match r.u8()? {
            0 => AllocationStatus::Accepted,
            1 => AllocationStatus::UnknownLease,
            2 => AllocationStatus::NoResources,
            3 => AllocationStatus::Unsupported,
            4 => AllocationStatus::BadRequest,
            5 => AllocationStatus::SpawnFailed,
            v => return Err(invalid(R, "status", v.into())),
        };
        Ok(AllocationResponse {
            status,
            allocation_id: r.u32()?,
            message: r.text()?,
        })
    }
}

/// An executor thread tells its client that it is ready, and where its input slots are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadReady {
    /// `Ok(())`, or why the code could not be loaded.
    pub result: Result<(), String>,
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
}

impl ThreadReady {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(self.result.is_err() as u8)
            .u16(self.thread)
            .u64(self.input_addr);
        w.u32(self.input_rkey)
            .u32(self.slot_size)
            .u16(self.slot_count)
            .u16(self.function_count);
        w.text(self.result.as_ref().err().map_or("", String::as_str));
        w.buf
    }

    /// Decodes the record.
    pub fn decode(data: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(data, "thread ready");
        let failed = r.u8()? != 0;
        let (thread, input_addr, input_rkey) = (r.u16()?, r.u64()?, r.u32()?);
        let (slot_size, slot_count, function_count) = (r.u32()?, r.u16()?, r.u16()?);
        let text = r.text()?;
        Ok(ThreadReady {
            result: if failed { Err(text) } else { Ok(()) },
            thread,
            input_addr,
            input_rkey,
            slot_size,
            slot_count,
            function_count,
        })
    }
}

/// The manager tells a client that its executor process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecutorExit {
    /// The allocation.
    pub allocation_id: u32,
    /// `Some(signal)` when killed by a signal.
    pub signal: Option<i32>,
    /// Exit status when it exited.
    pub status: i32,
}

impl ExecutorExit {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(self.allocation_id).u8(self.signal.is_some() as u8);
        w.u32(self.signal.unwrap_or(self.status) as u32);
        w.buf
    }

    /// Decodes the record.
    pub fn decode(data: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(data, "executor exit");
        let allocation_id = r.u32()?;
        let signaled = r.u8()? != 0;
        let value = r.u32()? as i32;
        Ok(ExecutorExit {
            allocation_id,
            signal: signaled.then_some(value),
            status: if signaled { -1 } else { value },
        })
    }
}

impl fmt::Display for ExecutorExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.signal {
            Some(sig) => write!(
                f,
                "executor of allocation {} was killed by signal {sig}",
                self.allocation_id
            ),
            None => write!(
                f,
                "executor of allocation {} exited with status {}",
                self.allocation_id, self.status
            ),
        }
    }
}

/// An executor manager tells the resource manager which node it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRegistration {
    /// The manager's `node_name`.
    pub node: String,
}

impl NodeRegistration {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.text(&self.node);
        w.buf
    }

    /// Decodes the record.
    pub fn decode(data: &[u8]) -> Result<Self, ProtocolError> {
        Ok(NodeRegistration {
            node: Reader::new(data, "node registration").text()?,
        })
    }
}

/// A client asks the resource manager for cores and memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRequest {
    /// Cores wanted.
    pub cores: u16,
    /// Memory wanted, in MiB.
    pub memory_mb: u32,
}

impl LeaseRequest {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u16(self.cores).u32(self.memory_mb);
        w.buf
    }

    /// Decodes the record.
    pub fn decode(data: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(data, "lease request");
        Ok(LeaseRequest {
            cores: r.u16()?,
            memory_mb: r.u32()?,
        })
    }
}

/// Outcome of a lease request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LeaseStatus {
    /// Granted; the response names the node.
    Granted = 0,
    /// No registered node has that many free cores and that much memory.
    NoResources = 1,
    /// The request is malformed or the node's manager did not confirm.
    Failed = 2,
}

/// The resource manager's answer to a [`LeaseRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseResponse {
    /// Outcome.
    pub status: LeaseStatus,
    /// The lease, presented to the executor manager in the allocation request.
    pub lease_id: u32,
    /// Node name.
    pub node: String,
    /// The node's executor manager.
    pub manager: SocketAddr,
    /// Leased cores.
    pub cores: u16,
    /// Leased memory in MiB.
    pub memory_mb: u32,
    /// Why the lease was refused.
    pub message: String,
}

impl LeaseResponse {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(self.status as u8)
            .u32(self.lease_id)
            .addr(self.manager)
            .u16(self.cores)
            .u32(self.memory_mb);
        w.text(&self.node).text(&self.message);
        w.buf
    }

    /// Decodes the record.
    pub fn decode(data: &[u8]) -> Result<Self, ProtocolError> {
        const R: &str = "lease response";
        let mut r = Reader::new(data, R);
        let status = match r.u8()? {
            0 => LeaseStatus::Granted,
            1 => LeaseStatus::NoResources,
            2 => LeaseStatus::Failed,
            v => return Err(invalid(R, "status", v.into())),
        };
        let (lease_id, manager, cores, memory_mb) = (r.u32()?, r.addr()?, r.u16()?, r.u32()?);
        Ok(LeaseResponse {
            status,
            lease_id,
            manager,
            cores,
            memory_mb,
            node: r.text()?,
            message: r.text()?,
        })
    }
}

/// The resource manager tells a node's manager about a lease before the client arrives
/// (and the manager answers with [`LeaseAck`], the same record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseNotice {
    /// The lease.
    pub lease_id: u32,
    /// Leased cores.
    pub cores: u16,
    /// Leased memory in MiB.
    pub memory_mb: u32,
}

/// A manager's confirmation that it knows a lease.
pub type LeaseAck = LeaseNotice;

impl LeaseNotice {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(self.lease_id).u16(self.cores).u32(self.memory_mb);
        w.buf
    }

    /// Decodes the record.
    pub fn decode(data: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(data, "lease notice");
        Ok(LeaseNotice {
            lease_id: r.u32()?,
            cores: r.u16()?,
            memory_mb: r.u32()?,
        })
    }
}

/// A manager reports a lease's end with its billing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseClosed {
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

impl LeaseClosed {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(self.lease_id)
            .u64(self.allocation_ns)
            .u64(self.hot_polling_ns);
        w.u64(self.execution_ns).u64(self.invocations);
        w.buf
    }

    /// Decodes the record.
    pub fn decode(data: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(data, "lease closed");
        Ok(LeaseClosed {
            lease_id: r.u32()?,
            allocation_ns: r.u64()?,
            hot_polling_ns: r.u64()?,
            execution_ns: r.u64()?,
            invocations: r.u64()?,
        })
    }
}

/// The accounting record an executor adds its times into with fetch-and-add: three
/// little-endian u64 counters at the address the manager publishes when accepting the
/// executor's billing connection (private data: `u64 addr, u32 rkey`).
pub mod billing {
    /// Offset of the hot-polling nanoseconds.
    pub const HOT_POLLING_NS: u32 = 0;
    /// Offset of the execution nanoseconds.
    pub const EXECUTION_NS: u32 = 8;
    /// Offset of the invocation count.
    pub const INVOCATIONS: u32 = 16;
    /// Bytes per record (a cache line's half, to keep records apart).
    pub const RECORD_LEN: usize = 32;
}

/// Private data as text: RDMA transports pad it with zeros, which are cut off here.
pub fn private_text(data: &[u8]) -> String {
    let end = data.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&data[..end]).into_owned()
}

fn invalid(record: &'static str, field: &'static str, value: u64) -> ProtocolError {
    ProtocolError::Invalid {
        record,
        field,
        value,
    }
}

/// Little-endian record writer.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }
    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    /// Text, cut at [`MAX_TEXT_LEN`] bytes (on a character boundary).
    pub(crate) fn text(&mut self, s: &str) -> &mut Self {
        let mut end = s.len().min(MAX_TEXT_LEN);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16).bytes(&s.as_bytes()[..end])
    }
    pub(crate) fn addr(&mut self, a: SocketAddr) -> &mut Self {
        let ip = match a.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        self.bytes(&ip.octets()).u16(a.port())
    }
}

/// Little-endian record reader; every read is bounds-checked.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    record: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8], record: &'static str) -> Self {
        Reader { data, record }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.data.len() < n {
            return Err(ProtocolError::Truncated(self.record));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, ProtocolError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(crate) fn text(&mut self) -> Result<String, ProtocolError> {
        let len = self.u16()? as usize;
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }
    pub(crate) fn addr(&mut self) -> Result<SocketAddr, ProtocolError> {
        let octets: [u8; 16] = self.take(16)?.try_into().expect("16 bytes");
        let v6 = Ipv6Addr::from(octets);
        let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
        Ok(SocketAddr::new(ip, self.u16()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immediates_pack_as_the_seed_defines() {
        let imm = invocation_imm(0xbeef, 5, true);
        assert_eq!(imm, 0xbeef_0000 | 1 << 15 | 5);
        assert_eq!(parse_invocation_imm(imm), (0xbeef, 5, true));
        assert_eq!(parse_result_imm(result_imm(7, ReturnCode::Trap)), (7, 4));
    }

    #[test]
    fn records_round_trip() {
        let req = AllocationRequest {
            lease_id: 3,
            cores: 2,
            input_buf_count: 4,
            hot_timeout_ms: -1,
            max_payload: 1 << 20,
            code_size: 12345,
            memory_mb: 256,
            sandbox: Sandbox::Wasm,
            time_limit_ms: 1000,
            client: "127.0.0.1:10006".parse().unwrap(),
        };
        assert_eq!(AllocationRequest::decode(&req.encode()).unwrap(), req);
        assert!(req.encode().len() <= MAX_MESSAGE_LEN);
        let ready = ThreadReady {
            result: Err("bad module".into()),
            thread: 1,
            input_addr: 0x7f00_0000_1000,
            input_rkey: 9,
            slot_size: 4108,
            slot_count: 4,
            function_count: 6,
        };
        assert_eq!(ThreadReady::decode(&ready.encode()).unwrap(), ready);
        let exit = ExecutorExit {
            allocation_id: 5,
            signal: Some(11),
            status: -1,
        };
        assert_eq!(ExecutorExit::decode(&exit.encode()).unwrap(), exit);
        let hello = Hello {
            role: Role::Executor,
            allocation_id: 77,
            thread: 3,
            secret: 42,
        };
        assert_eq!(Hello::decode(&hello.encode()).unwrap(), hello);
    }

    #[test]
    fn rejects_truncated_and_foreign_records() {
        let hello = Hello {
            role: Role::Client,
            allocation_id: 0,
            thread: 0,
            secret: 0,
        }
        .encode();
        assert_eq!(
            Hello::decode(&hello[..5]),
            Err(ProtocolError::Truncated("hello"))
        );
        let mut other = hello;
        other[4] = 9;
        assert_eq!(
            Hello::decode(&other),
            Err(ProtocolError::Version { peer: 9 })
        );
        assert_eq!(
            Hello::decode(b"GET / HTTP/1.1\r\n"),
            Err(ProtocolError::BadMagic)
        );
        let long = "é".repeat(300);
        let resp = AllocationResponse {
            status: AllocationStatus::NoResources,
            allocation_id: 0,
            message: long,
        };
        let back = AllocationResponse::decode(&resp.encode()).unwrap();
        assert!(back.message.len() <= MAX_TEXT_LEN && back.encode().len() <= MAX_MESSAGE_LEN);
    }
}
