//! Real processes for the end-to-end tests: an executor manager started from the build's
//! binaries, waited for through the line it prints after binding, killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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

/// A running executor manager.
pub struct Manager {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Manager {
    /// Starts `executor_manager -c CONFIG --device-database DEVICES [extra]` with the build's
    /// bin directory first on PATH, and waits for its "Begin listening at" line.
    pub fn start(config: &Path, devices: &Path, extra: &[&str]) -> Manager {
        let path = format!(
            "{}:{}",
            bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = Command::new(bin("executor_manager"))
            .arg("-c")
            .arg(config)
            .arg("--device-database")
            .arg(devices)
            .args(extra)
            .env("PATH", path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("executor_manager starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("Begin listening at ").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "the manager did not start listening; its log: {:?}",
                    log.lock().unwrap()
                )
            });
        Manager {
            child,
            addr: addr.parse().unwrap(),
            log,
        }
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
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A device database with the loopback device on the tcp provider.
pub fn loopback_devices(dir: &TempDir) -> PathBuf {
    dir.write_json(
        "devices.json",
        &serde_json::json!({"devices": [{"name": "lo", "ip_address": "127.0.0.1", "port": 10000,
            "max_inline_data": 0, "default_receive_buffer_size": 32, "provider": "tcp"}]}),
    )
}

/// Starts a manager on a free port with the shipped configuration and `--skip-resource-manager`.
pub fn local_manager(dir: &TempDir) -> Manager {
    let devices = loopback_devices(dir);
    let config = shipped_config("executor_manager.json");
    let mut config: serde_json::Value = config;
    config["config"]["rdma_device"] = "lo".into();
    config["config"]["rdma_device_port"] = 0.into();
    let config = dir.write_json("executor_manager.json", &config);
    Manager::start(&config, &devices, &["--skip-resource-manager"])
}

pub fn shipped_config(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join("config").join(name)).unwrap())
        .unwrap()
}

/// Benchmark and executors-database files that point at `manager`.
pub fn client_configs(
    dir: &TempDir,
    manager: &Manager,
    cores: u32,
    hot_timeout: i32,
    repetitions: u64,
) -> (PathBuf, PathBuf) {
    let mut bench = shipped_config("benchmark.json");
    bench["config"]["rdma_device"] = "lo".into();
    bench["config"]["rdma_device_port"] = 0.into();
    bench["benchmark"]["numcores"] = cores.into();
    bench["benchmark"]["hot_timeout"] = hot_timeout.into();
    bench["benchmark"]["repetitions"] = repetitions.into();
    let executors = serde_json::json!({"executors": [{"node": "exec-mgr-node", "address": "127.0.0.1",
        "port": manager.addr.port(), "cores": cores, "memory": 512}]});
    (
        dir.write_json("benchmark.json", &bench),
        dir.write_json("executors_database.json", &executors),
    )
}

/// Runs a client binary to completion.
pub fn run(bin_name: &str, args: &[&str]) -> Output {
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
