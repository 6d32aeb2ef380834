//! Real processes for the end-to-end tests: an executor manager started from the build's
//! binaries, waited for through the line it prints after binding, killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// End-to-end tests hot-poll; on two cores they must run one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The directory with the workspace's binaries (beside this package's own).
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_warm_benchmarker"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A binary of the workspace; it must have been built (`cargo build --workspace --bins`,
/// which `tools/test.sh` does).
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (tools/test.sh does)",
        path.display()
    );
    path
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn native_library() -> PathBuf {
    bin("libfunctions.so")
}

pub fn wasm_library() -> PathBuf {
    let path = repo().join("functions-wasm/target/wasm32-unknown-unknown/release/functions.wasm");
    assert!(
        path.is_file(),
        "{} is missing: tools/test.sh builds it",
        path.display()
    );
    path
}

/// An example function library from `tools/build_functions.sh`: in `RFAAS_EXAMPLES_DIR`, else
/// in the prefix `tools/test.sh` lays out (`RFAAS_CLIENTS_PREFIX`, default
/// `build/test-prefix`), under `examples/`.
pub fn example(name: &str) -> PathBuf {
    let dir = std::env::var_os("RFAAS_EXAMPLES_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("RFAAS_CLIENTS_PREFIX").map(|p| PathBuf::from(p).join("examples"))
        })
        .unwrap_or_else(|| repo().join("build/test-prefix/examples"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: `tools/build.sh --debug build/test-prefix` builds it (tools/test.sh does)",
        path.display()
    );
    path
}

/// A scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("rfaas-e2e-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn write_json(&self, name: &str, value: &serde_json::Value) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, serde_json::to_string_pretty(value).unwrap()).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running daemon whose stderr is collected line by line.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// Set when the process's stderr reached its end: every line is in `log`.
    drained: Arc<AtomicBool>,
}

impl Daemon {
    /// Starts `bin` with the build's bin directory first on PATH.
    pub fn start(bin_name: &str, args: &[&str]) -> Daemon {
        let mut command = Command::new(bin(bin_name));
        command.args(args);
        Daemon::spawn(bin_name, command)
    }

    /// Starts `command` (a binary of the build, or a wrapper such as `ip netns exec NS BIN`)
    /// with the build's bin directory first on PATH, its stderr collected; `what` names it in
    /// messages.
    pub fn spawn(what: &str, mut command: Command) -> Daemon {
        let path = format!(
            "{}:{}",
            bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = command
            .env("PATH", path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} starts: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let (sink, drained) = (log.clone(), Arc::new(AtomicBool::new(false)));
        let done = drained.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
            done.store(true, Ordering::Release);
        });
        Daemon {
            child,
            log,
            drained,
        }
    }

    /// The address in the first log line that contains `marker` (waits for it).
    pub fn address_after(&self, marker: &str) -> SocketAddr {
        assert!(
            self.wait_for_log(marker, Duration::from_secs(20)),
            "no {marker:?} line; log:\n{}",
            self.log()
        );
        let log = self.log.lock().unwrap();
        let line = log.iter().find(|l| l.contains(marker)).unwrap();
        let rest = line.split(marker).nth(1).unwrap();
        rest.split_whitespace().next().unwrap().parse().unwrap()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to end; its exit status. Its last log lines are in by then
    /// (unless a child it left behind holds its stderr open for more than a second).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                let drained_by = Instant::now() + Duration::from_secs(1);
                while !self.drained.load(Ordering::Acquire) && Instant::now() < drained_by {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the process to shut down gracefully (SIGTERM).
    pub fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running executor manager.
pub struct Manager {
    pub daemon: Daemon,
    pub addr: SocketAddr,
}

impl Manager {
    /// Starts `executor_manager -c CONFIG --device-database DEVICES [extra]` and waits for its
    /// "Begin listening at" line.
    pub fn start(config: &Path, devices: &Path, extra: &[&str]) -> Manager {
        let mut args = vec!["-c", arg(config), "--device-database", arg(devices)];
        args.extend_from_slice(extra);
        let daemon = Daemon::start("executor_manager", &args);
        let addr = daemon.address_after("Begin listening at ");
        Manager { daemon, addr }
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.daemon.wait_for_log(needle, timeout)
    }

    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
    }
}

/// The provider under test: `tcp`, or the one `RFAAS_E2E_PROVIDER` names (`tools/test.sh`
/// also runs the suite with `shm`, and with `verbs` in the SoftRoCE guest).
pub fn provider() -> rdmalib::ProviderKind {
    match std::env::var("RFAAS_E2E_PROVIDER") {
        Ok(name) => name.parse().expect("RFAAS_E2E_PROVIDER names a provider"),
        Err(_) => rdmalib::ProviderKind::Tcp,
    }
}

/// The device under test: `RDMA_DEVICE` (as `tools/softroce.sh` sets it), else `lo`.
pub fn device_name() -> String {
    std::env::var("RDMA_DEVICE").unwrap_or_else(|_| "lo".into())
}

/// The address of the device under test: `RDMA_IP`, else 127.0.0.1.
pub fn device_ip() -> String {
    std::env::var("RDMA_IP").unwrap_or_else(|_| "127.0.0.1".into())
}

/// A device database with the device under test on [`provider`].
pub fn test_devices(dir: &TempDir) -> PathBuf {
    dir.write_json(
        "devices.json",
        &serde_json::json!({"devices": [{"name": device_name(), "ip_address": device_ip(),
            "port": 10000, "max_inline_data": 0, "default_receive_buffer_size": 32,
            "provider": provider().name()}]}),
    )
}

/// Starts a manager on a free port with the shipped configuration and `--skip-resource-manager`.
pub fn local_manager(dir: &TempDir) -> Manager {
    local_manager_with(dir, &[])
}

/// [`local_manager`] with more arguments.
pub fn local_manager_with(dir: &TempDir, extra: &[&str]) -> Manager {
    let devices = test_devices(dir);
    let config = shipped_config("executor_manager.json");
    let mut config: serde_json::Value = config;
    config["config"]["rdma_device"] = device_name().into();
    config["config"]["rdma_device_port"] = 0.into();
    let config = dir.write_json("executor_manager.json", &config);
    let mut args = vec!["--skip-resource-manager"];
    args.extend_from_slice(extra);
    Manager::start(&config, &devices, &args)
}

pub fn shipped_config(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join("config").join(name)).unwrap())
        .unwrap()
}

/// The files a benchmark client starts with.
pub struct ClientFiles {
    pub config: PathBuf,
    pub devices: PathBuf,
    /// `None` when the client leases through the resource manager.
    pub executors: Option<PathBuf>,
}

impl ClientFiles {
    /// The flags every benchmark client takes (`--config`, `--device-database`, `--functions`
    /// and, without a resource manager, `--executors-database`), then `extra`.
    pub fn args(&self, functions: &Path, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            "--config".to_string(),
            arg(&self.config).to_string(),
            "--device-database".to_string(),
            arg(&self.devices).to_string(),
            "--functions".to_string(),
            arg(functions).to_string(),
        ];
        if let Some(executors) = &self.executors {
            args.extend([
                "--executors-database".to_string(),
                arg(executors).to_string(),
            ]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    }
}

/// Benchmark and executors-database files that point at `manager` (and the
/// `devices.json` that `local_manager` wrote).
pub fn client_configs(
    dir: &TempDir,
    manager: &Manager,
    cores: u32,
    hot_timeout: i32,
    repetitions: u64,
) -> ClientFiles {
    let mut bench = shipped_config("benchmark.json");
    bench["config"]["rdma_device"] = device_name().into();
    bench["config"]["rdma_device_port"] = 0.into();
    bench["benchmark"]["numcores"] = cores.into();
    bench["benchmark"]["hot_timeout"] = hot_timeout.into();
    bench["benchmark"]["repetitions"] = repetitions.into();
    let executors = serde_json::json!({"executors": [{"node": "exec-mgr-node",
        "address": device_ip(), "port": manager.addr.port(), "cores": cores, "memory": 512}]});
    ClientFiles {
        config: dir.write_json("benchmark.json", &bench),
        devices: dir.path("devices.json"),
        executors: Some(dir.write_json("executors_database.json", &executors)),
    }
}

/// Runs a client binary to completion.
pub fn run<S: AsRef<std::ffi::OsStr>>(bin_name: &str, args: impl IntoIterator<Item = S>) -> Output {
    Command::new(bin(bin_name))
        .args(args)
        .output()
        .expect("client runs")
}

/// A path as a `&str` argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The device under test, for clients in the test process.
pub fn test_device() -> rdmalib::DeviceConfig {
    rdmalib::DeviceConfig {
        name: device_name(),
        ip_address: device_ip(),
        port: 0,
        max_inline_data: 0,
        default_receive_buffer_size: 32,
        provider: Some(provider()),
    }
}

/// An endpoint on the device under test, for clients in the test process.
pub fn test_endpoint() -> rfaas::Endpoint {
    rfaas::Endpoint::open(&test_device()).expect("the device under test opens")
}

/// Allocates on `manager` without a resource manager.
pub fn allocate(
    manager: &Manager,
    code: &[u8],
    spec: &rfaas::AllocationSpec,
) -> rfaas::Result<rfaas::Executor> {
    let lease = rfaas::Lease {
        lease_id: 0,
        node: "exec-mgr-node".into(),
        address: manager.addr,
        cores: spec.cores,
        memory_mb: 512,
    };
    rfaas::Executor::allocate(&test_endpoint(), &lease, code, spec)
}

/// One call of `empty` on `size` bytes of `fill`; checks the bytes that come back.
pub fn echo_once(executor: &rfaas::Executor, fill: u8, size: usize) -> rfaas::Result<()> {
    let empty = executor.function("empty")?;
    let (input, output) = (executor.input_buffer(size)?, executor.output_buffer(size)?);
    input.write(&vec![fill; size])?;
    output.fill(0)?;
    let len = executor.execute(empty, &input, size, &output)?;
    assert_eq!(len as usize, size);
    assert_eq!(output.to_vec(size)?, vec![fill; size]);
    Ok(())
}
