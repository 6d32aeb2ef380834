//! The WebAssembly sandbox: functions of a wasm module whose linear memory *is* the registered
//! buffer.
//!
//! One wasmtime [`Engine`] per executor process; per thread one [`Store`] and instance,
//! whose linear memory the host supplies (see [`memory`]): a fixed mapping per thread, reused by
//! every instance that thread creates. The thread's input and output buffers are pages the host
//! grows beyond the module's own initial memory; they are registered with the RDMA layer and
//! published, so the client's payload lands inside the module's memory and the function's output
//! is sent from where it wrote it. No copies.
//!
//! A function that traps (unreachable, out-of-bounds access, stack overflow …) or runs past the
//! allocation's time limit (epoch interruption, one ticker thread per engine) returns
//! [`ReturnCode::Trap`] or [`ReturnCode::Timeout`]. Its instance may then be inconsistent (a
//! Rust module's shadow-stack pointer is left where the trap happened), so the thread
//! re-instantiates the module on the same memory: the module's part is zeroed, the buffer pages
//! stay registered as they are (in-flight payloads of other slots survive), and the published
//! addresses stay valid.
//!
//! Modules may import WASI preview 1 (`wasi_snapshot_preview1`, see [`wasi`]), which grants
//! nothing but clocks, random numbers and a log for stdout and stderr; any other import is
//! refused. A WASI reactor's `_initialize` and the function SDK's output-capacity hook run once
//! per instance, after the buffers are in place. An instance's memory is held to the
//! allocation's `memory` (see [`limits`]).
//!
//! Instantiation is not pooled and memories are not copy-on-write initialised: wasmtime's
//! pooling allocator and CoW images cannot be combined with host-supplied memory (the pooling
//! allocator ignores the memory creator; CoW needs wasmtime's own mmap and panics for a module
//! with data segments). Instantiation happens once per thread per allocation, and again only
//! after a failure, so this costs a few tens of microseconds where it does not matter.
//! Compilation is what costs at a cold start; it is cached on disk (see [`cache`]).

mod cache;
mod limits;
mod memory;
mod mmap;
#[cfg(test)]
mod tests;
mod wasi;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use function_library::{FunctionLibrary, SET_OUTPUT_CAPACITY, WASI_INITIALIZE};
use rdmalib::{Access, MemoryRegion, ProtectionDomain};
use rfaas_protocol::invocation::ReturnCode;
use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module, Store,
    Trap, TypedFunc, ValType,
};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p1::WasiP1Ctx;

use self::cache::CacheOutcome;
use self::limits::{Budget, InstanceLimits};
use self::memory::ThreadMemory;
use self::wasi::Console;
use crate::sandbox::{Sandbox, SlotLayout};

/// The size of a wasm page.
const WASM_PAGE: usize = 64 << 10;
/// Pages of a 32-bit memory.
const MAX_PAGES: u64 = 1 << 16;
/// The name of the memory the module must export.
const MEMORY_EXPORT: &str = "memory";
/// How often the epoch advances: the granularity of the time limit.
const EPOCH_TICK: Duration = Duration::from_millis(1);
/// The epoch deadline without a time limit: never reached.
const NO_DEADLINE: u64 = u64::MAX / 2;

/// The type of every function: `(args, size, res) -> output size`.
type WasmFn = TypedFunc<(i32, i32, i32), i32>;

/// What an allocation allows its wasm functions, and how their log lines are tagged.
#[derive(Clone, Copy, Debug, Default)]
pub struct WasmOptions {
    /// The allocation's id, in the log lines of what functions print.
    pub allocation_id: u32,
    /// Per-invocation time limit in ms (0: none).
    pub time_limit_ms: u32,
    /// The module memory all threads' instances may hold together, in MiB (0: no limit).
    pub memory_mb: u32,
}

/// Builds one wasm sandbox per thread for the module `code`, whose functions are
/// `library.functions()` (sorted: position = function index).
pub fn build_wasm_sandboxes(
    pd: &ProtectionDomain,
    code: &[u8],
    library: &FunctionLibrary,
    layout: SlotLayout,
    threads: u16,
    options: WasmOptions,
) -> Result<Vec<Box<dyn Sandbox>>> {
    let cache_dir = cache::default_dir();
    let built = build(
        pd,
        code,
        library.functions(),
        layout,
        threads,
        options,
        cache_dir.as_deref(),
    )?;
    Ok(built
        .sandboxes
        .into_iter()
        .map(|s| Box::new(s) as Box<dyn Sandbox>)
        .collect())
}

/// The sandboxes of one allocation and how the module was obtained.
pub(crate) struct Built {
    pub(crate) sandboxes: Vec<WasmSandbox>,
    /// Logged by `build`; the tests assert on it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) cache: CacheOutcome,
}

/// [`build_wasm_sandboxes`] with the function names and the cache directory given.
pub(crate) fn build(
    pd: &ProtectionDomain,
    code: &[u8],
    names: &[String],
    layout: SlotLayout,
    threads: u16,
    options: WasmOptions,
    cache_dir: Option<&Path>,
) -> Result<Built> {
    let time_limit_ms = options.time_limit_ms;
    if threads == 0 || layout.slot_count == 0 {
        bail!("a wasm sandbox needs at least one thread and one input slot");
    }
    if names.is_empty() {
        bail!("the module exports no functions");
    }
    let engine = engine()?;
    let loaded = cache::load(engine, code, cache_dir)?;
    let ms = loaded.elapsed.as_secs_f64() * 1e3;
    match loaded.outcome {
        CacheOutcome::Hit => tracing::info!(
            "wasm module: cache hit, loaded in {ms:.1} ms ({} bytes of code)",
            code.len()
        ),
        CacheOutcome::Miss { stored } => tracing::info!(
            "wasm module: cache miss, compiled in {ms:.1} ms ({} bytes of code){}",
            code.len(),
            if stored { "; cached" } else { "" }
        ),
        CacheOutcome::Disabled => tracing::info!(
            "wasm module: compiled in {ms:.1} ms ({} bytes of code; no cache)",
            code.len()
        ),
    }
    let plan = MemoryPlan::new(&loaded.module, names, layout)?;
    let budget = Budget::new(options.memory_mb);
    if let Some(limit) = budget.limit()
        && plan.module_len.saturating_mul(threads.into()) > limit
    {
        bail!(
            "the module's own memory of {} KiB, once per thread ({threads}), does not fit the \
             allocation's memory of {} MiB",
            plan.module_len >> 10,
            options.memory_mb
        );
    }
    let deadline = if time_limit_ms == 0 {
        None
    } else {
        start_epoch_ticker(engine)?;
        Some(u64::from(time_limit_ms) + 1)
    };
    let pre = linker()?
        .instantiate_pre(&loaded.module)
        .map_err(|e| anyhow::anyhow!("linking the module to WASI: {e:#}"))?;
    let shared = Arc::new(Shared {
        pre,
        names: names.into(),
        plan,
        budget,
        allocation_id: options.allocation_id,
        output_capacity: layout.max_payload as u32,
    });
    let sandboxes = (0..threads)
        .map(|thread| {
            WasmSandbox::new(shared.clone(), pd, layout, thread, deadline)
                .with_context(|| format!("preparing the wasm sandbox of thread {thread}"))
        })
        .collect::<Result<Vec<_>>>()?;
    tracing::info!(
        "wasm sandboxes ready: {threads} threads, buffers at linear memory offset {:#x} \
         (input) and {:#x} (output), time limit {}, memory {}",
        plan.input_base,
        plan.output_base,
        if time_limit_ms == 0 {
            "none".to_string()
        } else {
            format!("{time_limit_ms} ms")
        },
        if options.memory_mb == 0 {
            "unlimited".to_string()
        } else {
            format!("{} MiB", options.memory_mb)
        }
    );
    Ok(Built {
        sandboxes,
        cache: loaded.outcome,
    })
}

/// The process's engine, created on first use.
fn engine() -> Result<&'static Engine> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config
                .epoch_interruption(true)
                .with_host_memory(Arc::new(memory::ThreadMemoryCreator))
                // Host memory works only with the on-demand allocator, and CoW memory images
                // only with wasmtime's own mmaps.
                .allocation_strategy(InstanceAllocationStrategy::OnDemand)
                .memory_init_cow(false)
                .memory_may_move(false)
                .memory_reservation(memory::RESERVATION as u64)
                .memory_guard_size(memory::GUARD as u64)
                .memory_reservation_for_growth(0);
            Engine::new(&config).map_err(|e| format!("creating the wasm engine: {e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The process's linker with WASI, created on first use.
fn linker() -> Result<&'static Linker<Host>> {
    static LINKER: OnceLock<Result<Linker<Host>, String>> = OnceLock::new();
    let engine = engine()?;
    LINKER
        .get_or_init(|| {
            let mut linker = Linker::new(engine);
            wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |host: &mut Host| &mut host.wasi)
                .map_err(|e| format!("providing WASI to the module: {e:#}"))?;
            Ok(linker)
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Creates the engine and the linker now rather than in the first wasm allocation: a spare
/// executor does this while it waits. A failure is the allocation's to report.
pub fn prepare() {
    if let Err(e) = linker() {
        tracing::debug!("preparing the wasm engine: {e:#}");
    }
}

/// Starts the engine's epoch ticker (once per process).
fn start_epoch_ticker(engine: &'static Engine) -> Result<()> {
    static TICKER: OnceLock<Result<(), String>> = OnceLock::new();
    TICKER
        .get_or_init(|| {
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map(drop)
                .map_err(|e| format!("starting the wasm epoch thread: {e}"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Where the buffers go in the linear memory, checked against the module.
#[derive(Clone, Copy, Debug)]
struct MemoryPlan {
    /// The module's initial memory, in bytes.
    module_len: usize,
    /// Offset of the input buffer (the first page after the module's memory).
    input_base: usize,
    /// Offset of the output buffer (the page after the input buffer).
    output_base: usize,
    /// End of the buffer pages.
    buffers_end: usize,
}

impl MemoryPlan {
    /// Checks the module's imports, memory and functions, and places the buffers.
    fn new(module: &Module, names: &[String], layout: SlotLayout) -> Result<MemoryPlan> {
        let imports: Vec<_> = module.imports().collect();
        if let Some(import) = imports
            .iter()
            .find(|i| matches!(i.ty(), ExternType::Memory(_)))
        {
            bail!(
                "the module imports its memory (`{}`.`{}`); it must define and export `{MEMORY_EXPORT}`",
                import.module(),
                import.name()
            );
        }
        if let Some(why) = imports.iter().find_map(wasi::refuse_import) {
            bail!("{why}");
        }
        let ty = match module.get_export(MEMORY_EXPORT) {
            Some(ExternType::Memory(ty)) => ty,
            Some(_) => bail!("the module's export `{MEMORY_EXPORT}` is not a memory"),
            None => bail!(
                "the module does not export a memory named `{MEMORY_EXPORT}`; it must define \
                 and export it"
            ),
        };
        if ty.is_64() || ty.is_shared() || ty.page_size() != WASM_PAGE as u64 {
            bail!(
                "the module's memory must be an unshared 32-bit memory with 64 KiB pages \
                 (64-bit: {}, shared: {}, page size: {})",
                ty.is_64(),
                ty.is_shared(),
                ty.page_size()
            );
        }
        for name in names {
            match module.get_export(name) {
                Some(ExternType::Func(f)) => {
                    let params: Vec<ValType> = f.params().collect();
                    let results: Vec<ValType> = f.results().collect();
                    let i32s = |v: &[ValType], n| v.len() == n && v.iter().all(ValType::is_i32);
                    if !i32s(&params, 3) || !i32s(&results, 1) {
                        bail!(
                            "the function `{name}` has the type {f}, expected \
                             (i32 args, i32 size, i32 res) -> i32"
                        );
                    }
                }
                Some(_) => bail!("the module's export `{name}` is not a function"),
                None => bail!("the module exports no function `{name}`"),
            }
        }
        let module_pages = ty.minimum();
        // Never place a buffer at address 0, where the function would see a null pointer.
        let start_pages = module_pages.max(1);
        let input_pages = layout.input_len().div_ceil(WASM_PAGE) as u64;
        let output_pages = layout.output_len().div_ceil(WASM_PAGE) as u64;
        let needed = start_pages + input_pages + output_pages;
        let maximum = ty.maximum().unwrap_or(MAX_PAGES).min(MAX_PAGES);
        if needed > maximum {
            bail!(
                "the module's memory may grow to {maximum} pages of 64 KiB, but rFaaS needs \
                 {needed}: {module_pages} of its own, {} for the buffers of {} slots of {} \
                 bytes (input {input_pages}, output {output_pages}); raise the memory's maximum \
                 to at least {needed} pages, or lower max_payload / input_buf_count",
                needed - start_pages,
                layout.slot_count,
                layout.max_payload,
            );
        }
        let page = WASM_PAGE as u64;
        Ok(MemoryPlan {
            module_len: (module_pages * page) as usize,
            input_base: (start_pages * page) as usize,
            output_base: ((start_pages + input_pages) * page) as usize,
            buffers_end: (needed * page) as usize,
        })
    }
}

/// What the threads of one allocation share.
struct Shared {
    /// The module, linked to WASI.
    pre: InstancePre<Host>,
    /// Function names in index order.
    names: Arc<[String]>,
    plan: MemoryPlan,
    budget: Arc<Budget>,
    allocation_id: u32,
    /// What the SDK's output-capacity hook is told: the size of an output slot.
    output_capacity: u32,
}

/// What an instance's store holds for the host.
struct Host {
    wasi: WasiP1Ctx,
    limits: InstanceLimits,
}

/// One live instance of the module on a thread's memory.
struct Live {
    store: Store<Host>,
    /// The functions in index order.
    functions: Box<[WasmFn]>,
    #[cfg_attr(not(test), allow(dead_code))]
    memory: wasmtime::Memory,
}

/// One thread's wasm sandbox.
pub(crate) struct WasmSandbox {
    // Field order matters: the registrations drop before the instance and the memory.
    input: MemoryRegion,
    output: MemoryRegion,
    /// `None` only when re-instantiating after a failure failed too.
    live: Option<Live>,
    memory: Arc<ThreadMemory>,
    shared: Arc<Shared>,
    /// Where the functions' stdout and stderr go.
    console: Console,
    /// Invocations so far (wrapping): tells one invocation's output from the next.
    calls: u32,
    layout: SlotLayout,
    thread: u16,
    /// Epoch ticks a call may run; `None` for no limit.
    deadline: Option<u64>,
    /// How many times the module was instantiated after a failure.
    reinstantiations: u64,
}

impl WasmSandbox {
    fn new(
        shared: Arc<Shared>,
        pd: &ProtectionDomain,
        layout: SlotLayout,
        thread: u16,
        deadline: Option<u64>,
    ) -> Result<WasmSandbox> {
        let plan = shared.plan;
        let memory = ThreadMemory::new(plan.module_len, plan.input_base, plan.buffers_end)
            .context("reserving the linear memory")?;
        let console = Console::new(shared.allocation_id, thread, shared.names.clone());
        let live = instantiate(&shared, &memory, &console, deadline)?;
        // SAFETY: both ranges lie inside the thread memory's buffer pages
        // `[input_base, buffers_end)` (MemoryPlan), which are readable and writable from
        // `ThreadMemory::new` on and are never moved, unmapped, zeroed or protected while the
        // ThreadMemory lives, across every re-instantiation. The regions are fields of this
        // sandbox declared before `memory`, so they are deregistered before our reference to
        // the mapping goes (instances hold further references). We never take Rust references
        // into the ranges: the function accesses them as wasm memory, the worker through raw
        // copies.
        let (input, output) = unsafe {
            let base = memory.base();
            let input = pd
                .register_raw(
                    base.add(plan.input_base),
                    layout.input_len(),
                    Access::LOCAL_WRITE | Access::REMOTE_WRITE,
                )
                .context("registering the input buffer")?;
            let output = pd
                .register_raw(
                    base.add(plan.output_base),
                    layout.output_len(),
                    Access::LOCAL_WRITE,
                )
                .context("registering the output buffer")?;
            (input, output)
        };
        Ok(WasmSandbox {
            input,
            output,
            live: Some(live),
            memory,
            shared,
            console,
            calls: 0,
            layout,
            thread,
            deadline,
            reinstantiations: 0,
        })
    }

    /// Replaces the instance by a fresh one on the same memory.
    fn reinstantiate(&mut self) -> Result<()> {
        // The old instance must release the memory before the new one takes it.
        self.live = None;
        self.reinstantiations += 1;
        self.live = Some(instantiate(
            &self.shared,
            &self.memory,
            &self.console,
            self.deadline,
        )?);
        Ok(())
    }

    /// Turns a failed call into its return code, logs it and re-instantiates.
    #[cold]
    #[inline(never)]
    fn fail(&mut self, index: usize, error: wasmtime::Error) -> ReturnCode {
        let name = &self.shared.names[index];
        let out_of_memory = self
            .live
            .as_ref()
            .is_some_and(|live| live.store.data().limits.refused());
        let code = match error.downcast_ref::<Trap>() {
            _ if out_of_memory => {
                tracing::warn!(
                    "thread {}: wasm function `{name}` failed after the allocation's memory \
                     ({} MiB) refused it more: {error:#}; re-instantiating",
                    self.thread,
                    self.shared.budget.limit().unwrap_or(0) >> 20
                );
                ReturnCode::OutOfMemory
            }
            Some(Trap::Interrupt) => {
                tracing::warn!(
                    "thread {}: wasm function `{name}` ran past the time limit of {} ms; \
                     re-instantiating",
                    self.thread,
                    self.deadline.unwrap_or(1) - 1
                );
                ReturnCode::Timeout
            }
            Some(trap) => {
                tracing::warn!(
                    "thread {}: wasm function `{name}` trapped: {trap}; re-instantiating",
                    self.thread
                );
                ReturnCode::Trap
            }
            None => {
                match error.downcast_ref::<I32Exit>() {
                    Some(I32Exit(status)) => tracing::warn!(
                        "thread {}: wasm function `{name}` called exit({status}); \
                         re-instantiating",
                        self.thread
                    ),
                    None => tracing::warn!(
                        "thread {}: wasm function `{name}` failed: {error:#}; re-instantiating",
                        self.thread
                    ),
                }
                ReturnCode::Trap
            }
        };
        if let Err(e) = self.reinstantiate() {
            tracing::error!(
                "thread {}: re-instantiating the wasm module failed: {e:#}",
                self.thread
            );
        }
        code
    }

    /// How many times the module was instantiated again after a failure.
    #[cfg(test)]
    pub(crate) fn reinstantiations(&self) -> u64 {
        self.reinstantiations
    }

    /// The current instance's linear memory, as wasmtime shows it.
    ///
    /// Test helper: the caller must make sure no peer writes the buffers while it holds the
    /// slice.
    #[cfg(test)]
    pub(crate) fn wasm_memory(&self) -> &[u8] {
        let live = self.live.as_ref().expect("a live instance");
        live.memory.data(&live.store)
    }

    /// The base of the current instance's linear memory, as wasmtime shows it.
    #[cfg(test)]
    pub(crate) fn wasm_memory_ptr(&self) -> *mut u8 {
        let live = self.live.as_ref().expect("a live instance");
        live.memory.data_ptr(&live.store)
    }

    /// Offsets of the input and output buffers in the linear memory.
    #[cfg(test)]
    pub(crate) fn buffer_offsets(&self) -> (usize, usize) {
        (self.shared.plan.input_base, self.shared.plan.output_base)
    }
}

/// Instantiates the module on `memory`, grows the memory over the buffer pages and runs the
/// module's initialisers.
fn instantiate(
    shared: &Shared,
    memory: &Arc<ThreadMemory>,
    console: &Console,
    deadline: Option<u64>,
) -> Result<Live> {
    let wasm_err = |what: &str, e: wasmtime::Error| anyhow::anyhow!("{what}: {e:#}");
    let plan = shared.plan;
    let host = Host {
        wasi: wasi::context(console),
        limits: InstanceLimits::new(shared.budget.clone(), &plan),
    };
    let mut store = Store::new(shared.pre.module().engine(), host);
    store.limiter(|host| &mut host.limits);
    store.set_epoch_deadline(NO_DEADLINE);
    let instance = {
        let _selected = memory::select(memory);
        shared
            .pre
            .instantiate(&mut store)
            .map_err(|e| wasm_err("instantiating the wasm module", e))?
    };
    let wasm_memory = instance
        .get_memory(&mut store, MEMORY_EXPORT)
        .context("the instance has no memory `memory`")?;
    if wasm_memory.data_ptr(&store) != memory.base() {
        bail!("wasmtime did not place the module's memory in the host-supplied mapping");
    }
    let pages = ((plan.buffers_end - plan.module_len) / WASM_PAGE) as u64;
    let old = wasm_memory
        .grow(&mut store, pages)
        .map_err(|e| wasm_err("growing the linear memory over the buffers", e))?;
    if old as usize * WASM_PAGE != plan.module_len {
        bail!(
            "the module's memory had {old} pages after instantiation instead of {}: \
             modules that grow their memory while instantiating are not supported",
            plan.module_len / WASM_PAGE
        );
    }
    // Initialisers run once the buffers are in place, so what they allocate lands beyond them.
    // Each has the time limit of a call, counted from its own start: instantiating can take
    // longer than the limit on a slow machine (an emulated one, a debug build).
    if let Some(init) = instance.get_func(&mut store, WASI_INITIALIZE) {
        store.set_epoch_deadline(deadline.unwrap_or(NO_DEADLINE));
        init.typed::<(), ()>(&store)
            .and_then(|init| init.call(&mut store, ()))
            .map_err(|e| wasm_err(&format!("the module's `{WASI_INITIALIZE}` failed"), e))?;
    }
    if let Some(hook) = instance.get_func(&mut store, SET_OUTPUT_CAPACITY) {
        store.set_epoch_deadline(deadline.unwrap_or(NO_DEADLINE));
        hook.typed::<i32, ()>(&store)
            .and_then(|hook| hook.call(&mut store, shared.output_capacity as i32))
            .map_err(|e| wasm_err(&format!("the module's `{SET_OUTPUT_CAPACITY}` failed"), e))?;
    }
    let functions = shared
        .names
        .iter()
        .map(|name| {
            instance
                .get_typed_func::<(i32, i32, i32), i32>(&mut store, name)
                .map_err(|e| {
                    wasm_err(
                        &format!("function `{name}` is not callable as (i32, i32, i32) -> i32"),
                        e,
                    )
                })
        })
        .collect::<Result<Box<[_]>>>()?;
    Ok(Live {
        store,
        functions,
        memory: wasm_memory,
    })
}

impl Sandbox for WasmSandbox {
    fn input(&self) -> &MemoryRegion {
        &self.input
    }

    fn output(&self) -> &MemoryRegion {
        &self.output
    }

    #[inline]
    fn invoke(&mut self, index: usize, slot: usize, size: u32) -> Result<u32, ReturnCode> {
        if index >= self.shared.names.len() {
            return Err(ReturnCode::UnknownFunction);
        }
        if size as usize > self.layout.max_payload || slot >= self.layout.slot_count {
            return Err(ReturnCode::PayloadTooLarge);
        }
        if self.live.is_none() && self.reinstantiate().is_err() {
            return Err(ReturnCode::Unavailable);
        }
        let Some(live) = self.live.as_mut() else {
            return Err(ReturnCode::Unavailable);
        };
        let plan = self.shared.plan;
        // All below 4 GiB (checked by MemoryPlan), so they fit an i32 as wasm reads it.
        let args = (plan.input_base + self.layout.payload_offset(slot)) as u32 as i32;
        let res = (plan.output_base + self.layout.output_offset(slot)) as u32 as i32;
        if let Some(ticks) = self.deadline {
            live.store.set_epoch_deadline(ticks);
        }
        self.calls = self.calls.wrapping_add(1);
        self.console.begin(self.calls, index);
        live.store.data_mut().limits.clear_refusal();
        match live.functions[index].call(&mut live.store, (args, size as i32, res)) {
            // Read as u32: a negative result is a huge size, which the worker rejects.
            Ok(n) => Ok(n as u32),
            Err(e) => Err(self.fail(index, e)),
        }
    }
}
