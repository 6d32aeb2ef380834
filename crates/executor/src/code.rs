//! Where the function library comes from: the manager's code cache (`--code-file`), or the
//! client over thread 0's connection. A received library whose allocation names a digest
//! (`--code-digest`) must have that SHA-256; with `--store-code` it is then stored in the
//! cache for the allocations after this one.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use function_library::{FunctionLibrary, Kind};
use rdmalib::{Access, CompletionQueue, Connection, Opcode, ProtectionDomain};
use rfaas_protocol::control::{CodeDigest, MessageKind, code_digest};
use rfaas_protocol::mailbox::CODE_WR_ID;

use crate::atomic_file;

/// How long the client has to send the code after the executor connected.
const CODE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the executor polls for the code before it sleeps: the code follows the
/// connection within a millisecond or two, and a sleep and wake-up would add to every cold
/// start.
const CODE_EAGER_WAIT: Duration = Duration::from_millis(50);

/// The library of one allocation, inspected.
pub struct Code {
    pub bytes: Vec<u8>,
    pub library: FunctionLibrary,
    /// The cache file it was read from, if it came from the cache.
    pub cached: Option<PathBuf>,
}

/// Where the manager said the library comes from.
pub struct CodeOrigin<'a> {
    /// The cached library to load.
    pub file: Option<&'a Path>,
    /// The SHA-256 the client named for what it sends.
    pub digest: Option<CodeDigest>,
    /// Where to store what the client sends.
    pub store: Option<&'a Path>,
    pub size: u32,
    pub kind: Kind,
}

impl CodeOrigin<'_> {
    /// Reads the cached library, or receives it on `conn` and checks its digest.
    pub fn obtain(
        &self,
        pd: &ProtectionDomain,
        conn: &Connection,
        cq: &CompletionQueue,
    ) -> Result<Code> {
        let started = Instant::now();
        let (bytes, cached) = match self.file {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("reading the cached library {}", path.display()))?;
                (bytes, Some(path.to_path_buf()))
            }
            None => {
                let bytes = receive(pd, conn, cq, self.size)?;
                if let Some(digest) = &self.digest
                    && code_digest(&bytes) != *digest
                {
                    bail!("the library's SHA-256 is not the digest its allocation request names");
                }
                (bytes, None)
            }
        };
        let library = FunctionLibrary::inspect_as(&bytes, self.kind)?;
        tracing::info!(
            "{} {} bytes of {} code with functions {:?} in {:.3} ms",
            if cached.is_some() {
                "Read from the code cache"
            } else {
                "Received"
            },
            bytes.len(),
            self.kind,
            library.functions(),
            started.elapsed().as_secs_f64() * 1e3
        );
        Ok(Code {
            bytes,
            library,
            cached,
        })
    }

    /// Stores a received library in the code cache if the manager asked for it, on a thread
    /// of its own: the allocation's first invocations need not wait for the disk. Join the
    /// handle before the process ends, or the entry may not be there.
    pub fn store(&self, code: Code) -> Option<JoinHandle<()>> {
        let path = self.store?.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("code-cache".into())
            .spawn(move || match atomic_file::write(&path, &code.bytes) {
                Ok(()) => tracing::debug!("stored the library in {}", path.display()),
                Err(e) => tracing::warn!(
                    "could not store the library in the code cache as {}: {e:#}",
                    path.display()
                ),
            });
        match spawned {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!("could not start storing the library in the code cache: {e}");
                None
            }
        }
    }
}

/// Receives the function library on thread 0's connection.
fn receive(
    pd: &ProtectionDomain,
    conn: &Connection,
    cq: &CompletionQueue,
    size: u32,
) -> Result<Vec<u8>> {
    if size == 0 {
        bail!("the allocation announces an empty function library");
    }
    let buf = pd.register(size as usize, Access::LOCAL_WRITE)?;
    conn.post_recv(CODE_WR_ID, buf.sge(0, size as usize)?)?;
    let wc = cq
        .wait_one_eager(CODE_EAGER_WAIT, Some(CODE_TIMEOUT))?
        .with_context(|| format!("the client sent no code within {CODE_TIMEOUT:?}"))?;
    if !wc.is_ok() || wc.opcode != Some(Opcode::Recv) || wc.imm != Some(MessageKind::Code as u32) {
        bail!("expected the function library from the client, got {wc:?}");
    }
    let mut bytes = vec![0u8; wc.byte_len as usize];
    buf.read(0, &mut bytes)?;
    Ok(bytes)
}
