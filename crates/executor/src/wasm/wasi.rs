//! WASI preview 1 for wasm functions, through wasmtime's own implementation, granting nothing.
//!
//! Each instance gets a context with no preopened directories, no arguments, no environment,
//! no sockets (every address denied, no name lookup) and an empty stdin. Clocks and random
//! numbers are the host's. What a function writes to stdout or stderr goes to the executor's
//! log line by line, tagged with the allocation and the function, at most [`CALL_OUTPUT_LIMIT`]
//! bytes per invocation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::{ExternType, ImportType};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use bytes::Bytes;

/// The one module a wasm function may import from.
pub(crate) const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// The streams a function writes, by index.
const STREAMS: [&str; 2] = ["stdout", "stderr"];
const STDOUT: usize = 0;
const STDERR: usize = 1;

/// Bytes of stdout and stderr one invocation may write to the log; the rest is dropped.
pub(crate) const CALL_OUTPUT_LIMIT: usize = 16 << 10;

/// Why the module's import cannot be satisfied, or `None` if WASI provides it.
pub(crate) fn refuse_import(import: &ImportType<'_>) -> Option<String> {
    let kind = match import.ty() {
        ExternType::Func(_) if import.module() == WASI_MODULE => return None,
        ExternType::Func(_) => "function",
        ExternType::Global(_) => "global",
        ExternType::Table(_) => "table",
        ExternType::Memory(_) => "memory",
        ExternType::Tag(_) => "tag",
    };
    Some(format!(
        "the module imports {kind} `{}`.`{}`; rFaaS provides only the functions of \
         `{WASI_MODULE}` (WASI preview 1)",
        import.module(),
        import.name()
    ))
}

/// A WASI context that grants no capabilities, with stdout and stderr going to `console`.
pub(crate) fn context(console: &Console) -> WasiP1Ctx {
    WasiCtxBuilder::new()
        .stdout(console.stream(STDOUT))
        .stderr(console.stream(STDERR))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build_p1()
}

/// Where one thread's wasm functions write: the log, tagged with the running invocation.
#[derive(Clone, Debug)]
pub(crate) struct Console {
    shared: Arc<ConsoleShared>,
}

#[derive(Debug)]
struct ConsoleShared {
    allocation: u32,
    thread: u16,
    /// Function names in index order.
    names: Arc<[String]>,
    /// The running invocation: its sequence number (high 32 bits) and function index.
    call: AtomicU64,
    state: Mutex<ConsoleState>,
}

#[derive(Debug, Default)]
struct ConsoleState {
    /// The invocation the counters below belong to.
    call: u64,
    /// Bytes written by that invocation.
    written: usize,
    /// A line not yet ended, per stream.
    partial: [Vec<u8>; 2],
}

impl Console {
    pub(crate) fn new(allocation: u32, thread: u16, names: Arc<[String]>) -> Console {
        Console {
            shared: Arc::new(ConsoleShared {
                allocation,
                thread,
                names,
                call: AtomicU64::new(0),
                state: Mutex::default(),
            }),
        }
    }

    /// Marks the start of invocation number `sequence` of function `index`: one store, so
    /// invocations that print nothing pay nothing else.
    #[inline]
    pub(crate) fn begin(&self, sequence: u32, index: usize) {
        let call = (u64::from(sequence) << 32) | index as u64;
        self.shared.call.store(call, Ordering::Relaxed);
    }

    fn stream(&self, which: usize) -> ConsoleStream {
        ConsoleStream {
            console: self.clone(),
            which,
        }
    }
}

impl ConsoleShared {
    fn function(&self, call: u64) -> &str {
        self.names
            .get((call & u32::MAX as u64) as usize)
            .map_or("?", String::as_str)
    }

    fn log_line(&self, call: u64, stream: &str, line: &[u8]) {
        tracing::info!(
            "allocation {} thread {} `{}` {stream}: {}",
            self.allocation,
            self.thread,
            self.function(call),
            String::from_utf8_lossy(line).trim_end_matches('\r')
        );
    }

    /// Logs `bytes` written to stream `which` by the running invocation.
    fn write(&self, which: usize, bytes: &[u8]) {
        let call = self.call.load(Ordering::Relaxed);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.call != call {
            self.end_lines(&mut state);
            state.call = call;
            state.written = 0;
        }
        let before = state.written;
        state.written = before.saturating_add(bytes.len());
        let kept = &bytes[..bytes.len().min(CALL_OUTPUT_LIMIT.saturating_sub(before))];
        let mut rest = kept;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut state.partial[which]);
            line.extend_from_slice(&rest[..end]);
            self.log_line(call, STREAMS[which], &line);
            rest = &rest[end + 1..];
        }
        state.partial[which].extend_from_slice(rest);
        let first_drop = kept.len() < bytes.len() && before <= CALL_OUTPUT_LIMIT;
        if first_drop {
            self.end_lines(&mut state);
            tracing::warn!(
                "allocation {} thread {} `{}`: output beyond {CALL_OUTPUT_LIMIT} bytes in one \
                 invocation is dropped",
                self.allocation,
                self.thread,
                self.function(call)
            );
        }
    }

    /// Logs the lines not yet ended.
    fn end_lines(&self, state: &mut ConsoleState) {
        for (which, name) in STREAMS.into_iter().enumerate() {
            let line = std::mem::take(&mut state.partial[which]);
            if !line.is_empty() {
                self.log_line(state.call, name, &line);
            }
        }
    }
}

/// stdout or stderr of one instance.
struct ConsoleStream {
    console: Console,
    /// [`STDOUT`] or [`STDERR`].
    which: usize,
}

impl IsTerminal for ConsoleStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for ConsoleStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.console.stream(self.which))
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(ConsoleWriter(self.console.stream(self.which)))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for ConsoleStream {
    async fn ready(&mut self) {}
}

impl OutputStream for ConsoleStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.console.shared.write(self.which, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(usize::MAX)
    }
}

/// [`ConsoleStream`] for WASI's asynchronous interfaces (not used by preview 1, which
/// takes [`StdoutStream::p2_stream`]).
struct ConsoleWriter(ConsoleStream);

impl tokio::io::AsyncWrite for ConsoleWriter {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let stream = &self.0;
        stream.console.shared.write(stream.which, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
