//! `executor_manager`: the per-node allocator. It accepts clients, starts one `executor`
//! process per allocation, tracks and reaps them, and tells a client when its executor died.

mod code_cache;
mod manager;
mod resource_manager;
mod spawn;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Parser;
use rfaas_protocol::config::{ExecutorManagerConfig, load_json};

/// Accepts rFaaS clients and starts executors for them.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file (executor_manager.json).
    #[arg(short = 'c', long = "config")]
    config: String,
    /// Device database (devices.json).
    #[arg(long)]
    device_database: String,
    /// Serve clients without a resource manager (no leases are checked).
    #[arg(long)]
    skip_resource_manager: bool,
    /// Start every executor when its allocation arrives, instead of keeping one started ahead
    /// (a spare that has opened the device and waits for its allocation).
    #[arg(long)]
    no_spare_executor: bool,
    /// Directory of the code cache: function libraries named by their SHA-256, so that a
    /// library already here does not cross the network again [default:
    /// $XDG_CACHE_HOME/rfaas/code, else ~/.cache/rfaas/code].
    #[arg(long, env = "RFAAS_CODE_CACHE_DIR", value_name = "DIR")]
    code_cache: Option<PathBuf>,
    /// Bytes the code cache holds, in MiB; the least recently used libraries go first.
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    code_cache_mb: u64,
    /// Keep no code cache: every allocation's client sends its library.
    #[arg(long, conflicts_with = "code_cache")]
    no_code_cache: bool,
    /// More logging (-v debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let args = Args::parse();
    rfaas_cli::run("executor_manager", args.verbose, || run(&args))
}

fn run(args: &Args) -> Result<()> {
    tracing::info!("Executing rFaaS executor manager!");
    let config: ExecutorManagerConfig = load_json(&args.config, "executor manager configuration")?;
    let devices = rdmalib::DeviceDatabase::load(&args.device_database)?;
    let device = devices.get_or_first(&config.config.rdma_device)?.clone();
    let device_database = std::fs::canonicalize(&args.device_database)
        .with_context(|| format!("resolving {}", args.device_database))?;
    rfaas_protocol::control::check_node_name(&config.config.node_name)
        .map_err(|why| anyhow::anyhow!("{}: node_name: {why}", args.config))?;
    if !args.skip_resource_manager && config.config.resource_manager_address.is_empty() {
        anyhow::bail!(
            "no resource_manager_address in {}; set it, or pass --skip-resource-manager for a deployment without one",
            args.config
        );
    }
    let launcher = spawn::Launcher::new(
        device_database,
        device.name.clone(),
        &config.executor,
        args.verbose,
        !args.no_spare_executor,
        open_code_cache(args),
    )?;
    rfaas_cli::install_shutdown_handler();
    manager::Manager::start(&device, &config, launcher, args.skip_resource_manager)?.run()
}

/// The code cache the flags ask for; without a usable one, clients send every library.
fn open_code_cache(args: &Args) -> Option<code_cache::CodeCache> {
    if args.no_code_cache {
        return None;
    }
    let Some(dir) = args.code_cache.clone().or_else(code_cache::default_dir) else {
        tracing::warn!(
            "no directory for the code cache (pass --code-cache or set HOME); clients send every library"
        );
        return None;
    };
    match code_cache::CodeCache::open(dir, args.code_cache_mb << 20) {
        Ok(cache) => {
            tracing::info!(
                "Code cache in {} ({} MiB)",
                cache.dir().display(),
                args.code_cache_mb
            );
            Some(cache)
        }
        Err(e) => {
            tracing::warn!("no code cache ({e:#}); clients send every library");
            None
        }
    }
}
