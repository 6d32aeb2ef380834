//! Starting and reaping `executor` processes.

use std::ffi::OsStr;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rfaas_protocol::config::ExecutorSection;
use rfaas_protocol::control::{
    AllocationRequest, BILLING_TOKEN_ENV, CLIENT_TOKEN_ENV, Credential, EXIT_MANAGER_LOST,
    EXIT_OUT_OF_MEMORY, EXIT_TIME_LIMIT, credential_hex,
};

use crate::code_cache::{CodeCache, CodeSource};

/// Builds and starts executor processes.
///
/// With spares on, one executor is started ahead of the allocation that will use it: it opens
/// the device and waits on a pipe (`executor --spare`), so an allocation does not wait for a
/// process to start, only for its arguments to cross the pipe. The manager's loop starts the
/// next spare ([`Launcher::replenish`]) [`SPARE_DELAY`] after an allocation took the last one.
pub struct Launcher {
    executor: PathBuf,
    device_database: PathBuf,
    device: String,
    max_invocations: u64,
    pin_threads: bool,
    verbose: u8,
    spares: bool,
    spare: Option<Child>,
    /// When to start the next spare.
    spare_due: Instant,
    code_cache: Option<CodeCache>,
    /// An executor is storing a library in the cache, which may now exceed its capacity.
    trim_due: bool,
}

/// An executor started for an allocation.
pub struct Spawned {
    pub child: Child,
    /// It loads the library from the code cache; the client sends nothing.
    pub code_cached: bool,
}

/// How long after an allocation the next spare starts. Starting a process takes a core for a
/// millisecond or two; on a small node that would slow the allocation that has just begun,
/// whose executor is connecting and loading its code meanwhile.
pub const SPARE_DELAY: Duration = Duration::from_millis(20);

impl Launcher {
    /// Finds the `executor` binary beside this one, else on `PATH`.
    pub fn new(
        device_database: PathBuf,
        device: String,
        config: &ExecutorSection,
        verbose: u8,
        spares: bool,
        code_cache: Option<CodeCache>,
    ) -> Result<Launcher> {
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("executor")))
            .filter(|p| p.is_file());
        let executor = match beside {
            Some(path) => path,
            None => find_on_path("executor").context(
                "cannot find the `executor` binary beside executor_manager or on PATH; add <build-dir>/bin to PATH",
            )?,
        };
        tracing::info!(
            "Executors run {}{}",
            executor.display(),
            if spares {
                ", one started ahead as a spare"
            } else {
                ""
            }
        );
        Ok(Launcher {
            executor,
            device_database,
            device,
            max_invocations: config.repetitions,
            pin_threads: config.pin_threads,
            verbose,
            spares,
            spare: None,
            spare_due: Instant::now(),
            code_cache,
            trim_due: false,
        })
    }

    /// Starts the executor of one allocation: hands it to the spare if one is waiting, else
    /// starts a process (fork + exec). The library comes from the code cache if it has it.
    /// The client's token and `billing_token` never go on a command line, where other users
    /// could read them: a spare reads them from its pipe, a new process from its environment.
    pub fn spawn(
        &mut self,
        allocation_id: u32,
        request: &AllocationRequest,
        manager: SocketAddr,
        billing_token: &Credential,
    ) -> Result<Spawned> {
        let source = match &self.code_cache {
            Some(cache) => cache.source(&request.code_digest, request.sandbox),
            None => CodeSource::Sent,
        };
        let code_cached = matches!(source, CodeSource::Cached(_));
        self.trim_due |= matches!(source, CodeSource::Store { .. });
        let args = self.allocation_args(allocation_id, request, manager, &source);
        self.spare_due = Instant::now() + SPARE_DELAY;
        let (client, billing) = (
            credential_hex(&request.token),
            credential_hex(billing_token),
        );
        if let Some(spare) = self.take_spare() {
            match hand_over(spare, &client, &billing, &args) {
                Ok(child) => return Ok(Spawned { child, code_cached }),
                Err(e) => tracing::warn!(
                    "the spare executor could not take allocation {allocation_id} ({e:#}); starting one"
                ),
            }
        }
        let mut cmd = Command::new(&self.executor);
        cmd.env(CLIENT_TOKEN_ENV, client)
            .env(BILLING_TOKEN_ENV, billing)
            .args(self.device_args())
            .args(&args);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.executor.display()))?;
        Ok(Spawned { child, code_cached })
    }

    /// Evicts from the code cache what no longer fits, once an allocation that stores a
    /// library has had [`SPARE_DELAY`] to start.
    pub fn trim_code_cache(&mut self) {
        if !self.trim_due || Instant::now() < self.spare_due {
            return;
        }
        self.trim_due = false;
        let Some(cache) = &self.code_cache else {
            return;
        };
        match cache.trim() {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                "Evicted {n} least recently used function librar{} from the code cache",
                if n == 1 { "y" } else { "ies" }
            ),
            Err(e) => tracing::warn!(
                "cannot trim the code cache {}: {e:#}",
                cache.dir().display()
            ),
        }
    }

    /// Starts a spare executor if spares are on, none is waiting and it is time.
    pub fn replenish(&mut self) {
        if !self.spares || self.spare.is_some() || Instant::now() < self.spare_due {
            return;
        }
        let mut cmd = Command::new(&self.executor);
        cmd.arg("--spare")
            .args(self.device_args())
            .args(self.verbosity())
            .stdin(Stdio::piped());
        match cmd.spawn() {
            Ok(child) => self.spare = Some(child),
            Err(e) => tracing::warn!(
                "cannot start a spare executor ({e}); executors start when their allocation arrives"
            ),
        }
    }

    /// The waiting spare, if it is still alive.
    fn take_spare(&mut self) -> Option<Child> {
        let mut spare = self.spare.take()?;
        match spare.try_wait() {
            Ok(None) => Some(spare),
            Ok(Some(status)) => {
                tracing::warn!(
                    "the spare executor {} before it was needed",
                    describe_exit(status)
                );
                None
            }
            Err(e) => {
                tracing::warn!("the spare executor cannot be waited for: {e}");
                None
            }
        }
    }

    fn device_args(&self) -> [&OsStr; 4] {
        [
            OsStr::new("--device-database"),
            self.device_database.as_os_str(),
            OsStr::new("--device"),
            OsStr::new(&self.device),
        ]
    }

    /// The executor's arguments for one allocation, without the device options.
    fn allocation_args(
        &self,
        allocation_id: u32,
        request: &AllocationRequest,
        manager: SocketAddr,
        source: &CodeSource,
    ) -> Vec<String> {
        let mut args: Vec<String> = [
            ("--client", request.client.to_string()),
            ("--allocation-id", allocation_id.to_string()),
            ("--cores", request.cores.to_string()),
            ("--input-buf-count", request.input_buf_count.to_string()),
            ("--max-payload", request.max_payload.to_string()),
            ("--code-size", request.code_size.to_string()),
            ("--sandbox", request.sandbox.to_string()),
            ("--hot-timeout", request.hot_timeout_ms.to_string()),
            ("--time-limit-ms", request.time_limit_ms.to_string()),
            ("--memory-mb", request.memory_mb.to_string()),
            ("--max-invocations", self.max_invocations.to_string()),
            ("--manager", manager.to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect();
        match source {
            CodeSource::Cached(path) => {
                args.extend(["--code-file".into(), path.display().to_string()]);
            }
            CodeSource::Store { path, digest } => args.extend([
                "--code-digest".into(),
                credential_hex(digest),
                "--store-code".into(),
                path.display().to_string(),
            ]),
            CodeSource::Sent => {}
        }
        if self.pin_threads {
            args.push("--pin-threads".into());
        }
        args.extend(self.verbosity());
        args
    }

    /// The manager's own verbosity, passed on to its executors (`-v`, `-vv`, …).
    fn verbosity(&self) -> Option<String> {
        (self.verbose > 0).then(|| format!("-{}", "v".repeat(self.verbose as usize)))
    }
}

impl Drop for Launcher {
    /// A spare whose pipe closes without an allocation ends by itself.
    fn drop(&mut self) {
        if let Some(mut spare) = self.spare.take() {
            drop(spare.stdin.take());
            let _ = spare.wait();
        }
    }
}

/// Writes an allocation to a spare's pipe as one line: the tokens, then the arguments, all
/// NUL-separated (no argument holds a NUL or a newline).
fn hand_over(mut spare: Child, client: &str, billing: &str, args: &[String]) -> Result<Child> {
    let mut line = [client, billing]
        .into_iter()
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("\0");
    line.push('\n');
    let written = match spare.stdin.take() {
        Some(mut pipe) => pipe
            .write_all(line.as_bytes())
            .context("writing to its pipe"),
        None => Err(anyhow::anyhow!("it has no pipe")),
    };
    if let Err(e) = written {
        let _ = spare.kill();
        let _ = spare.wait();
        return Err(e);
    }
    Ok(spare)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|p| p.is_file())
}

/// A sentence for an executor's exit.
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(EXIT_TIME_LIMIT), _) => {
            "was stopped by its watchdog: a native function ran past the allocation's time limit"
                .to_string()
        }
        (Some(EXIT_MANAGER_LOST), _) => "stopped: it lost its manager".to_string(),
        (Some(EXIT_OUT_OF_MEMORY), _) => {
            "stopped: a native function ran out of the allocation's memory and aborted".to_string()
        }
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended".to_string(),
    }
}
