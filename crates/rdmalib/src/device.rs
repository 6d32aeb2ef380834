//! The device database (`devices.json`): which RDMA device, address and port a component uses.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which implementation of the RDMA API serves a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// libibverbs + librdmacm: InfiniBand, RoCE, SoftRoCE.
    Verbs,
    /// Userspace emulation of reliable connections over TCP.
    Tcp,
    /// Processes on one host: the same emulation over shared-memory rings. Only when named.
    Shm,
}

impl ProviderKind {
    /// The name used in `devices.json` and in messages.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Verbs => "verbs",
            ProviderKind::Tcp => "tcp",
            ProviderKind::Shm => "shm",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProviderKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "verbs" => Ok(ProviderKind::Verbs),
            "tcp" => Ok(ProviderKind::Tcp),
            "shm" => Ok(ProviderKind::Shm),
            other => Err(Error::Config(format!(
                "unknown provider {other:?}; expected \"verbs\", \"tcp\" or \"shm\""
            ))),
        }
    }
}

/// One entry of `devices.json`, with the seed's field names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfig {
    /// Device name as `ibv_devices` shows it (for tcp: any name, often the interface).
    pub name: String,
    /// IP address of the interface that belongs to the device.
    pub ip_address: String,
    /// Default port of the device.
    pub port: u16,
    /// Largest payload sent inline; 0 disables inlining.
    pub max_inline_data: u32,
    /// Default number of receive slots per connection.
    pub default_receive_buffer_size: u32,
    /// The provider; detected when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderKind>,
}

impl DeviceConfig {
    /// The device's IP address, parsed.
    pub fn ip(&self) -> Result<IpAddr> {
        self.ip_address.parse().map_err(|_| {
            Error::Config(format!(
                "device {:?} has ip_address {:?}, which is not an IP address",
                self.name, self.ip_address
            ))
        })
    }
}

/// The whole `devices.json` file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDatabase {
    /// All devices in the file.
    pub devices: Vec<DeviceConfig>,
}

impl DeviceDatabase {
    /// Reads and parses a device database.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read device database {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(&text)
            .map_err(|e| Error::Config(format!("device database {}: {e}", path.display())))
    }

    /// Parses a device database from JSON text.
    pub fn parse(text: &str) -> Result<Self> {
        let db: DeviceDatabase = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("malformed JSON: {e}")))?;
        for dev in &db.devices {
            dev.ip()?;
        }
        Ok(db)
    }

    /// The device called `name`; the error lists the names that exist.
    pub fn get(&self, name: &str) -> Result<&DeviceConfig> {
        self.devices.iter().find(|d| d.name == name).ok_or_else(|| {
            let known: Vec<_> = self.devices.iter().map(|d| d.name.as_str()).collect();
            Error::Config(format!(
                "device {name:?} is not in the device database (it has: {})",
                if known.is_empty() {
                    "no devices".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    /// The device called `name`, or the first one when `name` is empty (the seed's configs
    /// leave `rdma_device` empty until the user fills it in).
    pub fn get_or_first(&self, name: &str) -> Result<&DeviceConfig> {
        if name.is_empty() {
            self.devices
                .first()
                .ok_or_else(|| Error::Config("the device database lists no devices".into()))
        } else {
            self.get(name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{"devices":[{"name":"rocep61s0","ip_address":"192.168.0.21","port":10005,
        "max_inline_data":0,"default_receive_buffer_size":32}]}"#;

    #[test]
    fn parses_the_seed_format_and_detects_provider_later() {
        let db = DeviceDatabase::parse(SEED).unwrap();
        let dev = db.get("rocep61s0").unwrap();
        assert_eq!(dev.port, 10005);
        assert_eq!(dev.provider, None);
    }

    #[test]
    fn shm_is_a_provider_name() {
        let db = DeviceDatabase::parse(
            &SEED.replace("\"port\":10005", "\"port\":10005,\"provider\":\"shm\""),
        )
        .unwrap();
        assert_eq!(db.devices[0].provider, Some(ProviderKind::Shm));
        assert_eq!("shm".parse::<ProviderKind>().unwrap(), ProviderKind::Shm);
        assert_eq!(ProviderKind::Shm.to_string(), "shm");
    }

    #[test]
    fn unknown_device_names_the_known_ones() {
        let db = DeviceDatabase::parse(SEED).unwrap();
        let err = db.get("mlx5_0").unwrap_err().to_string();
        assert!(
            err.contains("\"mlx5_0\"") && err.contains("rocep61s0"),
            "{err}"
        );
    }

    #[test]
    fn rejects_bad_json_and_bad_addresses() {
        assert!(
            DeviceDatabase::parse("{")
                .unwrap_err()
                .to_string()
                .contains("malformed JSON")
        );
        let bad = SEED.replace("192.168.0.21", "not-an-ip");
        assert!(
            DeviceDatabase::parse(&bad)
                .unwrap_err()
                .to_string()
                .contains("not-an-ip")
        );
        let provider = SEED.replace("\"port\"", "\"provider\":\"carrier-pigeon\",\"port\"");
        assert!(DeviceDatabase::parse(&provider).is_err());
    }
}
