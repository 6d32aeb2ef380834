//! The seed's JSON files, with its field names: `executor_manager.json`, `benchmark.json`,
//! `executors_database.json`, `resource_manager.json`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// What the file should hold.
        what: String,
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// The file is not the JSON it should be.
    #[error("{what} {} is not valid: {source}", path.display())]
    Parse {
        /// What the file should hold.
        what: String,
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line and column.
        source: serde_json::Error,
    },
    /// An address field holds no resolvable address.
    #[error("{field} {value:?} is not an address")]
    Address {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
    },
}

/// `resource_manager_address` and `resource_manager_port` of a configuration, resolved;
/// `None` when the address is empty (a deployment without a resource manager).
fn resource_manager(address: &str, port: u16) -> Result<Option<SocketAddr>, ConfigError> {
    if address.is_empty() {
        return Ok(None);
    }
    (address, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map(Some)
        .ok_or_else(|| ConfigError::Address {
            field: "resource_manager_address",
            value: address.to_string(),
        })
}

/// Reads and parses a JSON file; errors name the file and what it was expected to hold.
pub fn load_json<T: DeserializeOwned>(
    path: impl AsRef<Path>,
    what: &str,
) -> Result<T, ConfigError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

/// `executor_manager.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorManagerConfig {
    /// Device and resource-manager settings.
    pub config: ManagerSection,
    /// How executors are run.
    pub executor: ExecutorSection,
}

/// The `config` section of `executor_manager.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagerSection {
    /// Device name in the device database; empty picks the first device.
    pub rdma_device: String,
    /// Port clients connect to.
    pub rdma_device_port: u16,
    /// Name under which the resource manager knows this node.
    #[serde(default = "default_node_name")]
    pub node_name: String,
    /// Resource manager address; empty when there is none.
    #[serde(default)]
    pub resource_manager_address: String,
    /// Resource manager port.
    #[serde(default)]
    pub resource_manager_port: u16,
    /// Secret shared with the resource manager.
    #[serde(default)]
    pub resource_manager_secret: Secret,
    /// Sleep on the completion channel instead of polling for control events.
    #[serde(rename = "rdma-sleep", default = "yes")]
    pub rdma_sleep: bool,
}

impl ManagerSection {
    /// Where the resource manager is; `None` when `resource_manager_address` is empty.
    pub fn resource_manager(&self) -> Result<Option<SocketAddr>, ConfigError> {
        resource_manager(&self.resource_manager_address, self.resource_manager_port)
    }
}

/// The `executor` section of `executor_manager.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorSection {
    /// Run executors in containers (not supported: use the wasm sandbox).
    #[serde(default)]
    pub use_docker: bool,
    /// Optional cap on invocations per executor; absent or 0 means unlimited.
    #[serde(default)]
    pub repetitions: u64,
    /// Invocations an executor runs before it starts measuring (kept for compatibility).
    #[serde(default)]
    pub warmup_iters: u64,
    /// Pin each executor thread to a core.
    #[serde(default)]
    pub pin_threads: bool,
}

/// `benchmark.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkConfig {
    /// Device and resource-manager settings.
    pub config: ClientSection,
    /// What to measure.
    pub benchmark: BenchmarkSection,
}

/// The `config` section of `benchmark.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// Device name in the device database; empty picks the first device.
    pub rdma_device: String,
    /// Port the client listens on for its executors (0 picks a free one).
    pub rdma_device_port: u16,
    /// Resource manager address; empty when executors come from a database file.
    #[serde(default)]
    pub resource_manager_address: String,
    /// Resource manager port.
    #[serde(default)]
    pub resource_manager_port: u16,
}

impl ClientSection {
    /// Where the resource manager is; `None` when `resource_manager_address` is empty.
    pub fn resource_manager(&self) -> Result<Option<SocketAddr>, ConfigError> {
        resource_manager(&self.resource_manager_address, self.resource_manager_port)
    }
}

/// The `benchmark` section of `benchmark.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkSection {
    /// Pin the client's polling threads.
    #[serde(default)]
    pub pin_threads: bool,
    /// Measured invocations.
    pub repetitions: u64,
    /// Invocations before measuring.
    #[serde(default)]
    pub warmup_repetitions: u64,
    /// Cores to lease.
    pub numcores: u16,
    /// Memory to lease, in MiB.
    pub memory: u32,
    /// -1 always hot, 0 always warm, >0 ms of hot polling before sleeping.
    pub hot_timeout: i32,
    /// Per-invocation time limit in ms that the executor enforces (0 or absent: none).
    #[serde(default)]
    pub time_limit_ms: u32,
}

/// `executors_database.json`: executor managers to use without a resource manager.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorsDatabase {
    /// The executor servers.
    pub executors: Vec<ExecutorNode>,
}

/// One executor server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorNode {
    /// Node name (the manager's `node_name`).
    pub node: String,
    /// Address of its executor manager.
    pub address: String,
    /// Port of its executor manager.
    pub port: u16,
    /// Cores it offers.
    pub cores: u32,
    /// Memory it offers, in MiB.
    pub memory: u64,
}

/// `resource_manager.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceManagerConfig {
    /// All settings.
    pub config: ResourceManagerSection,
}

/// The `config` section of `resource_manager.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceManagerSection {
    /// Device name; empty picks the first device.
    pub rdma_device: String,
    /// Port for executor managers and clients.
    pub rdma_device_port: u16,
    /// Address the HTTP interface binds.
    pub http_network_address: String,
    /// Port of the HTTP interface.
    pub http_network_port: u16,
    /// Threads serving RDMA connections.
    #[serde(rename = "rdma-threads", default = "one")]
    pub rdma_threads: u32,
    /// Secret executor managers must present.
    #[serde(rename = "rdma-secret", default)]
    pub rdma_secret: Secret,
    /// Sleep on the completion channel instead of polling.
    #[serde(rename = "rdma-sleep", default = "yes")]
    pub rdma_sleep: bool,
}

fn default_node_name() -> String {
    "exec-mgr-node".into()
}

/// The secret an executor manager shares with the resource manager: a number, as in the
/// seed's files, or a string of any length. Only its SHA-256 digest travels.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SecretValue", into = "SecretValue")]
pub struct Secret(String);

/// How a secret is written in a file.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum SecretValue {
    Number(u64),
    Text(String),
}

impl From<SecretValue> for Secret {
    fn from(v: SecretValue) -> Secret {
        match v {
            SecretValue::Number(n) => Secret(n.to_string()),
            SecretValue::Text(s) => Secret(s),
        }
    }
}

impl From<Secret> for SecretValue {
    fn from(s: Secret) -> SecretValue {
        match s.0.parse() {
            Ok(n) => SecretValue::Number(n),
            Err(_) => SecretValue::Text(s.0),
        }
    }
}

impl Default for Secret {
    fn default() -> Secret {
        Secret("0".into())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret from its text (a number is its decimal digits).
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// What travels in the executor manager's hello.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// Whether it is the example configuration's `42`, fine on one host only.
    pub fn is_the_example(&self) -> bool {
        self.0 == "42"
    }
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> String {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/");
        std::fs::read_to_string(format!("{dir}{name}")).unwrap()
    }

    #[test]
    fn the_shipped_configs_parse() {
        let m: ExecutorManagerConfig =
            serde_json::from_str(&shipped("executor_manager.json")).unwrap();
        assert_eq!(
            m.executor.repetitions, 0,
            "the shipped config must not cap benchmarks"
        );
        let b: BenchmarkConfig = serde_json::from_str(&shipped("benchmark.json")).unwrap();
        assert_eq!(b.benchmark.hot_timeout, -1);
        let d: ExecutorsDatabase =
            serde_json::from_str(&shipped("executors_database.json")).unwrap();
        assert_eq!(d.executors[0].node, "exec-mgr-node");
        let r: ResourceManagerConfig =
            serde_json::from_str(&shipped("resource_manager.json")).unwrap();
        assert_eq!(r.config.http_network_port, 5000);
    }

    #[test]
    fn secrets_are_numbers_or_strings() {
        let number: Secret = serde_json::from_str("42").unwrap();
        let text: Secret = serde_json::from_str(r#""42""#).unwrap();
        assert_eq!(number.digest(), text.digest());
        assert!(number.is_the_example());
        let long: Secret = serde_json::from_str(r#""correct horse battery staple""#).unwrap();
        assert_ne!(long.digest(), number.digest());
        assert_eq!(serde_json::to_string(&number).unwrap(), "42");
    }

    #[test]
    fn misspelled_fields_are_named() {
        let err = serde_json::from_str::<ExecutorsDatabase>(
            r#"{"executors":[{"node":"a","adress":"x"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("adress"), "{err}");
    }
}
