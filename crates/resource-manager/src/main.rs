//! `resource_manager`: the global lease broker. Executor managers register over the RDMA layer
//! with a shared secret; clients lease cores and memory; batch systems add and remove executor
//! servers over HTTP. Nodes, leases and bills live in a SQLite database (`--database`).

mod broker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use resource_manager::{HttpState, Registry, Store, router};
use rfaas_protocol::config::{ExecutorsDatabase, ResourceManagerConfig, load_json};

/// Leases executor cores to clients and tracks executor servers.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file (resource_manager.json).
    #[arg(short = 'c', long = "config")]
    config: PathBuf,
    /// Device database (devices.json).
    #[arg(long)]
    device_database: PathBuf,
    /// The database of nodes, leases and bills (SQLite), created if missing [default:
    /// resource_manager.db beside the configuration file].
    #[arg(long)]
    database: Option<PathBuf>,
    /// Import executor servers from this file (executors_database.json) into the database:
    /// those it does not know yet.
    #[arg(short = 'i', long = "input-database")]
    input_database: Option<PathBuf>,
    /// Export the executor servers known at shutdown here (executors_database.json format).
    #[arg(short = 'o', long = "output-database")]
    output_database: Option<PathBuf>,
    /// Require `Authorization: Bearer TOKEN` on /add and /remove.
    #[arg(long, env = "RFAAS_HTTP_TOKEN")]
    http_token: Option<String>,
    /// More logging (-v debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let args = Args::parse();
    rfaas_cli::run("resource_manager", args.verbose, || run(&args))
}

fn run(args: &Args) -> Result<()> {
    tracing::info!("Executing rFaaS resource manager!");
    let config: ResourceManagerConfig = load_json(&args.config, "resource manager configuration")?;
    let c = &config.config;
    let devices = rdmalib::DeviceDatabase::load(&args.device_database)?;
    let device = devices.get_or_first(&c.rdma_device)?.clone();
    let database = match &args.database {
        Some(path) => path.clone(),
        None => args
            .config
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("resource_manager.db"),
    };
    let store = Store::open(&database)?;
    let (registry, restored) = Registry::open(store)
        .with_context(|| format!("loading the database {}", database.display()))?;
    tracing::info!(
        "Database {}: {} node(s), {} lease(s) ({} in doubt until their managers report), {} bill(s)",
        database.display(),
        restored.nodes,
        restored.leases,
        restored.in_doubt,
        restored.bills
    );
    if let Some(path) = &args.input_database {
        let db: ExecutorsDatabase = load_json(path, "executors database")?;
        let added = registry
            .import(&db)
            .with_context(|| format!("importing {}", path.display()))?;
        tracing::info!(
            "Imported {} of the {} executor server(s) in {} (the others were known)",
            added.len(),
            db.executors.len(),
            path.display()
        );
    }
    if args.http_token.as_deref() == Some("") {
        bail!("an empty --http-token would lock /add and /remove; give a token or none");
    }
    rfaas_cli::install_shutdown_handler();

    let http_addr = format!("{}:{}", c.http_network_address, c.http_network_port);
    let state = HttpState {
        registry: registry.clone(),
        token: args.http_token.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&http_addr))
        .with_context(|| format!("binding the HTTP interface to {http_addr}"))?;
    tracing::info!("HTTP interface listening on {}", listener.local_addr()?);
    let http = runtime.spawn(async move {
        let shutdown = async {
            while !rfaas_cli::shutdown_requested() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown)
            .await
    });

    let broker = broker::Broker::start(
        &device,
        c.rdma_device_port,
        &c.rdma_secret,
        c.rdma_sleep,
        registry.clone(),
    )?;
    let served = broker.run();
    if served.is_err() {
        // The RDMA side failed: the HTTP side ends with it instead of waiting for a signal.
        rfaas_cli::request_shutdown();
    }
    if let Err(e) = runtime.block_on(http) {
        tracing::warn!("the HTTP interface ended badly: {e}");
    }
    if let Some(path) = &args.output_database {
        let db = serde_json::to_string_pretty(&registry.to_database())?;
        std::fs::write(path, db).with_context(|| format!("writing {}", path.display()))?;
        tracing::info!("Wrote the executor servers to {}", path.display());
    }
    served
}
