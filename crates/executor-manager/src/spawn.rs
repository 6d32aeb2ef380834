//! Starting and reaping `executor` processes.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};

use anyhow::{Context as _, Result};
use rfaas_protocol::config::ExecutorSection;
use rfaas_protocol::control::{
    AllocationRequest, BILLING_TOKEN_ENV, CLIENT_TOKEN_ENV, Credential, EXIT_MANAGER_LOST,
    EXIT_OUT_OF_MEMORY, EXIT_TIME_LIMIT, credential_hex,
};

/// Builds and starts executor processes.
pub struct Launcher {
    executor: PathBuf,
    device_database: PathBuf,
    device: String,
    max_invocations: u64,
    pin_threads: bool,
    verbose: u8,
}

impl Launcher {
    /// Finds the `executor` binary beside this one, else on `PATH`.
    pub fn new(
        device_database: PathBuf,
        device: String,
        config: &ExecutorSection,
        verbose: u8,
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
        tracing::info!("Executors run {}", executor.display());
        Ok(Launcher {
            executor,
            device_database,
            device,
            max_invocations: config.repetitions,
            pin_threads: config.pin_threads,
            verbose,
        })
    }

    /// Starts the executor of one allocation (fork + exec).
    /// The client's token and `billing_token` go in the environment, where other users cannot
    /// read them (unlike the command line).
    pub fn spawn(
        &self,
        allocation_id: u32,
        request: &AllocationRequest,
        manager: SocketAddr,
        billing_token: &Credential,
    ) -> Result<Child> {
        let mut cmd = Command::new(&self.executor);
        cmd.env(CLIENT_TOKEN_ENV, credential_hex(&request.token))
            .env(BILLING_TOKEN_ENV, credential_hex(billing_token));
        cmd.arg("--device-database")
            .arg(&self.device_database)
            .args(["--device", &self.device])
            .args(["--client", &request.client.to_string()])
            .args(["--allocation-id", &allocation_id.to_string()])
            .args(["--cores", &request.cores.to_string()])
            .args(["--input-buf-count", &request.input_buf_count.to_string()])
            .args(["--max-payload", &request.max_payload.to_string()])
            .args(["--code-size", &request.code_size.to_string()])
            .args(["--sandbox", &request.sandbox.to_string()])
            .args(["--hot-timeout", &request.hot_timeout_ms.to_string()])
            .args(["--time-limit-ms", &request.time_limit_ms.to_string()])
            .args(["--memory-mb", &request.memory_mb.to_string()])
            .args(["--max-invocations", &self.max_invocations.to_string()])
            .args(["--manager", &manager.to_string()]);
        if self.pin_threads {
            cmd.arg("--pin-threads");
        }
        if self.verbose > 0 {
            cmd.arg(format!("-{}", "v".repeat(self.verbose as usize)));
        }
        cmd.spawn()
            .with_context(|| format!("starting {}", self.executor.display()))
    }
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
