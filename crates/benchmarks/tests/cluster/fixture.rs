//! The test cluster: `tools/cluster.sh up`, the resource manager on `rm`, executor managers on
//! the nodes, registered over HTTP with the tutorial's `/add`; clients on `cl`, in this process
//! (a thread that entered `cl`'s namespace) or as the benchmark binaries.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::*;

/// The executor servers: name and cores.
pub const NODES: [(&str, u32); 3] = [("n1", 1), ("n2", 2), ("n3", 4)];
/// Memory of every node, in MiB.
pub const NODE_MEMORY: u64 = 4096;
/// The shared secret of the resource manager and the executor managers.
pub const SECRET: &str = "cluster-test-secret";
/// The HTTP token that protects `/add` and `/remove`.
pub const TOKEN: &str = "cluster-test-token";
/// Ports: the resource manager's RDMA and HTTP, the executor managers'.
pub const RM_PORT: u16 = 10000;
pub const HTTP_PORT: u16 = 5000;
pub const MANAGER_PORT: u16 = 10005;

/// `tools/cluster.sh ARGS`, which must succeed.
pub fn cluster_sh(args: &[&str]) -> Output {
    let out = Command::new(repo().join("tools/cluster.sh"))
        .args(args)
        .output()
        .expect("tools/cluster.sh runs");
    assert!(
        out.status.success(),
        "tools/cluster.sh {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// A host's address in the cluster.
pub fn addr(host: &str) -> String {
    text(&cluster_sh(&["addr", host]).stdout).trim().to_string()
}

/// The namespace of `host`.
pub fn netns(host: &str) -> String {
    format!("rfaas-{host}")
}

/// A command run inside `host`'s namespace.
pub fn on(host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", &netns(host)]).arg(program);
    command
}

/// Runs `f` on a thread inside `host`'s namespace: sockets it opens, and threads it starts,
/// live there.
pub fn on_host<T: Send>(host: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{}", netns(host));
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("entering {path}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The device of `host` (its eth0, tcp), for clients in this process.
pub fn device(host: &str) -> rdmalib::DeviceConfig {
    rdmalib::DeviceConfig {
        name: "eth0".into(),
        ip_address: addr(host),
        port: 0,
        max_inline_data: 0,
        default_receive_buffer_size: 32,
        provider: Some(rdmalib::ProviderKind::Tcp),
    }
}

/// The resource manager on `rm`, executor managers on the nodes, files in a scratch directory.
pub struct Cluster {
    pub dir: TempDir,
    pub rm: Daemon,
    pub managers: BTreeMap<String, Daemon>,
    pub rm_rdma: SocketAddr,
    pub http: String,
}

impl Cluster {
    /// A fresh cluster with the resource manager running and no executor manager.
    pub fn up(tag: &str) -> Cluster {
        assert!(
            // /proc/self belongs to the process's effective user.
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0,
            "the cluster tests need root (network namespaces)"
        );
        cluster_sh(&["up"]);
        let dir = TempDir::new(&format!("cluster-{tag}"));
        for host in ["rm", "n1", "n2", "n3", "cl"] {
            let out = dir.path(&format!("devices_{host}.json"));
            cluster_sh(&["devices", host, "10000", arg(&out)]);
        }
        let mut config = shipped_config("resource_manager.json");
        config["config"]["rdma_device"] = "eth0".into();
        config["config"]["rdma_device_port"] = RM_PORT.into();
        config["config"]["http_network_address"] = addr("rm").into();
        config["config"]["http_network_port"] = HTTP_PORT.into();
        config["config"]["rdma-secret"] = SECRET.into();
        let config = dir.write_json("resource_manager.json", &config);
        let mut command = on("rm", bin("resource_manager"));
        command.args([
            "-c",
            arg(&config),
            "--device-database",
            arg(&dir.path("devices_rm.json")),
            "--http-token",
            TOKEN,
        ]);
        let rm = Daemon::spawn("resource_manager", command);
        let rm_rdma = rm.address_after("Begin listening at ");
        let http = rm.address_after("HTTP interface listening on ").to_string();
        Cluster {
            dir,
            rm,
            managers: BTreeMap::new(),
            rm_rdma,
            http,
        }
    }

    /// A cluster with every node's manager running, added over HTTP and registered.
    pub fn deployed(tag: &str) -> Cluster {
        let mut cluster = Cluster::up(tag);
        for (node, cores) in NODES {
            cluster.start_manager(node);
            let (status, body) = cluster.add_node(node, cores);
            assert_eq!(status, "201", "{body}");
        }
        for (node, _) in NODES {
            cluster.wait_registered(node, 1);
        }
        cluster
    }

    /// The configuration of `node`'s executor manager (the tutorial's, pointed at `rm`).
    pub fn manager_config(&self, node: &str) -> PathBuf {
        let mut config = shipped_config("executor_manager.json");
        config["config"]["rdma_device"] = "eth0".into();
        config["config"]["rdma_device_port"] = MANAGER_PORT.into();
        config["config"]["node_name"] = node.into();
        config["config"]["resource_manager_address"] = addr("rm").into();
        config["config"]["resource_manager_port"] = RM_PORT.into();
        config["config"]["resource_manager_secret"] = SECRET.into();
        self.dir
            .write_json(&format!("executor_manager_{node}.json"), &config)
    }

    /// Starts `node`'s executor manager in its namespace and waits until it listens.
    pub fn start_manager(&mut self, node: &str) {
        let mut command = on(node, bin("executor_manager"));
        command.args([
            "-c",
            arg(&self.manager_config(node)),
            "--device-database",
            arg(&self.dir.path(&format!("devices_{node}.json"))),
        ]);
        let daemon = Daemon::spawn("executor_manager", command);
        daemon.address_after("Begin listening at ");
        self.managers.insert(node.to_string(), daemon);
    }

    /// The tutorial's `curl … /add?node=NODE` from the client host, with the token.
    pub fn add_node(&self, node: &str, cores: u32) -> (String, String) {
        let body = format!(
            r#"{{"ip_address": "{}", "port": {MANAGER_PORT}, "cores": {cores}, "memory": {NODE_MEMORY}}}"#,
            addr(node)
        );
        self.curl(&[
            &format!("http://{}/add?node={node}", self.http),
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            "-d",
            &body,
        ])
    }

    /// (status code, body) of `curl ARGS` run on the client host.
    pub fn curl(&self, args: &[&str]) -> (String, String) {
        let out = on("cl", "curl")
            .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("curl is installed");
        let text = text(&out.stdout);
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        (status.to_string(), body.to_string())
    }

    /// `GET PATH` on the resource manager, as JSON.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.curl(&[&format!("http://{}{path}", self.http)]);
        assert_eq!(status, "200", "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `GET /executors`, by node name.
    pub fn executors(&self) -> BTreeMap<String, serde_json::Value> {
        self.get("/executors")["executors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["node"].as_str().unwrap().to_string(), n.clone()))
            .collect()
    }

    /// `GET /leases`, by lease id.
    pub fn leases(&self) -> BTreeMap<u32, serde_json::Value> {
        self.get("/leases")["leases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l["lease_id"].as_u64().unwrap() as u32, l.clone()))
            .collect()
    }

    /// How often the resource manager logged that `node`'s manager registered.
    pub fn registrations(&self, node: &str) -> usize {
        let (known, added) = (
            format!("registered node {node}"),
            format!("node {node} is now registered"),
        );
        self.rm
            .log()
            .lines()
            .filter(|l| l.contains(&known) || l.contains(&added))
            .count()
    }

    /// Waits until `node`'s manager has registered `count` times.
    pub fn wait_registered(&self, node: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.registrations(node) < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            self.registrations(node) >= count,
            "{node} did not register {count} time(s); rm:\n{}\nmanager:\n{}",
            self.rm.log(),
            self.managers.get(node).map(Daemon::log).unwrap_or_default()
        );
    }

    /// Polls `GET /leases` until lease `id` is in `state`; how long that took.
    pub fn wait_lease_state(&self, id: u32, state: &str, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.leases().get(&id).map(|l| l["state"] == state) == Some(true) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Runs the benchmark client `client` (a binary of the build) on the client host, leasing
    /// through the resource manager: the shipped benchmark.json with `benchmark` overriding
    /// its `benchmark` fields, the tutorial's flags for `empty` with 64-byte payloads.
    pub fn run_client(&self, client: &str, benchmark: serde_json::Value) -> Output {
        let mut bench = shipped_config("benchmark.json");
        bench["config"]["rdma_device"] = "eth0".into();
        bench["config"]["resource_manager_address"] = addr("rm").into();
        bench["config"]["resource_manager_port"] = RM_PORT.into();
        for (key, value) in benchmark.as_object().expect("benchmark fields") {
            bench["benchmark"][key] = value.clone();
        }
        let bench = self.dir.write_json("benchmark.json", &bench);
        on("cl", bin(client))
            .args([
                "--config",
                arg(&bench),
                "--device-database",
                arg(&self.dir.path("devices_cl.json")),
                "--name",
                "empty",
                "--functions",
                arg(&native_library()),
                "-s",
                "64",
            ])
            .output()
            .unwrap()
    }

    /// Every log, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = format!("rm:\n{}\n", self.rm.log());
        for (node, m) in &self.managers {
            all += &format!("{node}:\n{}\n", m.log());
        }
        all
    }

    /// Kills every process in `node`'s namespace (its manager and executors) with SIGKILL.
    pub fn kill_node(&mut self, node: &str) {
        let out = Command::new("ip")
            .args(["netns", "pids", &netns(node)])
            .output()
            .unwrap();
        for pid in text(&out.stdout).split_whitespace() {
            let pid = nix::unistd::Pid::from_raw(pid.parse().unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
        }
        if let Some(mut manager) = self.managers.remove(node) {
            manager.wait_exit(Duration::from_secs(5));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut m) in std::mem::take(&mut self.managers) {
            m.kill();
        }
        self.rm.kill();
        // Executors and anything else left in the namespaces go with them.
        let _ = Command::new(repo().join("tools/cluster.sh"))
            .arg("down")
            .output();
    }
}
