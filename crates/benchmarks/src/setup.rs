//! What every benchmark client does first: read the seed's flags and files, take a lease,
//! allocate an executor.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use rdmalib::DeviceDatabase;
use rfaas::{AllocationSpec, Endpoint, Executor, Lease};
use rfaas_protocol::config::{BenchmarkConfig, ExecutorsDatabase, load_json};

/// How long the resource manager may take to grant a lease.
const LEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// The flags the seed's benchmark clients share.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// Benchmark configuration (benchmark.json).
    #[arg(long)]
    pub config: PathBuf,
    /// Device database (devices.json).
    #[arg(long)]
    pub device_database: PathBuf,
    /// Executor servers to use without a resource manager (executors_database.json).
    #[arg(long)]
    pub executors_database: Option<PathBuf>,
    /// The function library: a native .so or a wasm module (detected from its bytes).
    #[arg(long)]
    pub functions: PathBuf,
    /// More logging (-v debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// What to invoke and where the samples go: the flags of the seed's invocation benchmarks.
#[derive(clap::Args, Debug, Clone)]
pub struct InvocationArgs {
    /// Function to invoke.
    #[arg(long)]
    pub name: String,
    /// Payload size in bytes.
    #[arg(short = 's', long = "size")]
    pub size: usize,
    /// Write every measured sample to this CSV file.
    #[arg(long)]
    pub output_stats: Option<PathBuf>,
}

/// Loaded configuration of a benchmark client.
pub struct Client {
    /// `benchmark.json`.
    pub config: BenchmarkConfig,
    /// This side's device, shared by its leases and allocations.
    pub endpoint: Endpoint,
    /// The function library's bytes.
    pub code: Vec<u8>,
    executors: Option<ExecutorsDatabase>,
}

impl Client {
    /// Reads the configuration, the device database and the function library.
    pub fn load(args: &ClientArgs) -> Result<Client> {
        let config: BenchmarkConfig = load_json(&args.config, "benchmark configuration")?;
        let devices = DeviceDatabase::load(&args.device_database)?;
        let endpoint = Endpoint::open(devices.get_or_first(&config.config.rdma_device)?)?;
        let code = std::fs::read(&args.functions).with_context(|| {
            format!(
                "cannot read the function library {}",
                args.functions.display()
            )
        })?;
        let executors = match &args.executors_database {
            Some(path) => Some(load_json(path, "executors database")?),
            None => None,
        };
        Ok(Client {
            config,
            endpoint,
            code,
            executors,
        })
    }

    /// A lease for the configured cores and memory: from the executors database when given,
    /// else from the resource manager in `benchmark.json`, asking again for up to 10 s while
    /// no node has the cores free.
    pub fn lease(&self) -> Result<Lease> {
        self.lease_before(Instant::now() + LEASE_TIMEOUT)
    }

    /// [`Client::lease`], asking the resource manager again until `deadline` while no node
    /// has the cores free.
    pub fn lease_before(&self, deadline: Instant) -> Result<Lease> {
        let b = &self.config.benchmark;
        match &self.executors {
            Some(db) => Ok(Lease::from_database(db, b.numcores, b.memory)?),
            None => {
                let Some(address) = self.config.config.resource_manager()? else {
                    bail!(
                        "give --executors-database, or set resource_manager_address in the benchmark configuration"
                    );
                };
                // Cores of a lease that just ended return once its manager reaped the executor;
                // a lease held by another client may last much longer, so back off to 50 ms.
                let mut pause = Duration::from_millis(2);
                loop {
                    let lease = Lease::from_resource_manager(
                        &self.endpoint,
                        address,
                        b.numcores,
                        b.memory,
                        LEASE_TIMEOUT,
                    );
                    match lease {
                        Err(rfaas::Error::NoResources(why)) if Instant::now() < deadline => {
                            tracing::debug!("{why}; asking again");
                            std::thread::sleep(pause);
                            pause = (pause * 2).min(Duration::from_millis(50));
                        }
                        other => return Ok(other?),
                    }
                }
            }
        }
    }

    /// The allocation the configuration describes, for payloads of up to `max_payload` bytes.
    pub fn spec(&self, max_payload: u32, input_buf_count: u16) -> AllocationSpec {
        let b = &self.config.benchmark;
        AllocationSpec {
            cores: b.numcores,
            memory_mb: b.memory,
            hot_timeout_ms: b.hot_timeout,
            time_limit_ms: b.time_limit_ms,
            max_payload,
            input_buf_count,
            listen_port: self.config.config.rdma_device_port,
            ..AllocationSpec::default()
        }
    }

    /// Pins the calling thread to the last core when benchmark.json asks for `pin_threads`
    /// (executor threads pinned by their manager take the first cores).
    pub fn pin_if_asked(&self) {
        use nix::sched::{CpuSet, sched_setaffinity};
        if !self.config.benchmark.pin_threads {
            return;
        }
        let core = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
        let mut set = CpuSet::new();
        match set
            .set(core)
            .and_then(|()| sched_setaffinity(nix::unistd::Pid::from_raw(0), &set))
        {
            Ok(()) => tracing::info!("Client thread pinned to core {core}"),
            Err(e) => tracing::warn!("could not pin the client thread to core {core}: {e}"),
        }
    }

    /// Leases and allocates, with the function library of `--functions`.
    pub fn allocate(&self, max_payload: u32, input_buf_count: u16) -> Result<Executor> {
        self.allocate_code(&self.code, max_payload, input_buf_count)
    }

    /// Leases and allocates, with the function library `code`.
    pub fn allocate_code(
        &self,
        code: &[u8],
        max_payload: u32,
        input_buf_count: u16,
    ) -> Result<Executor> {
        let lease = self.lease()?;
        let spec = self.spec(max_payload, input_buf_count);
        Executor::allocate(&self.endpoint, &lease, code, &spec).with_context(|| {
            format!(
                "allocating an executor on {} ({})",
                lease.node, lease.address
            )
        })
    }
}
