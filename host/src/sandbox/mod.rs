//! The sandbox every step runs in: one wasmtime engine, one linker, and the
//! limits applied to each invocation.
//!
//! It owns the engine configuration (pooling allocator, fuel, epoch
//! interruption), links the whole WASI 0.2 set with no authority plus the
//! Stepwise capabilities, and performs single guest calls in a fresh store
//! ([`invoke`]). It knows nothing about workflows or sagas: the engine asks
//! it to call `invoke` or `compensate` on a compiled plugin and gets back a
//! classified outcome.

mod bindings;
pub mod capabilities;
mod epoch;
#[cfg(test)]
mod function_tables;
mod grants;
mod host_state;
pub mod invoke;
pub mod limits;
mod linked;

pub use bindings::stepwise::step::types::StepContext;
pub use bindings::{Step, StepPre};
pub use grants::{Grants, HostResources};
pub use host_state::HostState;
pub use invoke::{Call, CallOutcome, CallSuccess, SandboxedPlugin};
pub use limits::Limits;
pub use linked::LinkedStep;

use anyhow::Result;
use std::sync::Arc;
use tokio::sync::Semaphore;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How many instances may exist at once; invocations beyond it wait for a slot.
const MAX_CONCURRENT_INSTANCES: u32 = 256;

/// The engine, linker and default limits shared by every invocation.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    resources: HostResources,
    slots: Arc<Semaphore>,
    ticker: epoch::Ticker,
}

impl Sandbox {
    /// A sandbox with the given default limits, an in-memory kv store and no services.
    pub fn new(limits: Limits) -> Result<Arc<Self>> {
        Self::with_resources(limits, HostResources::default())
    }

    /// A sandbox with the given default limits and capability resources.
    pub fn with_resources(limits: Limits, resources: HostResources) -> Result<Arc<Self>> {
        let engine =
            Engine::new(&engine_config(&limits)).map_err(|e| wasmtime_error("configuring the wasmtime engine", e))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| wasmtime_error("linking WASI", e))?;
        for capability in capabilities::all() {
            capability
                .add_to_linker(&mut linker)
                .map_err(|e| wasmtime_error(&format!("linking capability `{}`", capability.interface()), e))?;
        }
        let ticker = epoch::Ticker::start(&engine);
        Ok(Arc::new(Self {
            engine,
            linker,
            limits,
            resources,
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_INSTANCES as usize)),
            ticker,
        }))
    }

    /// How many instances run now (at most one per instance slot).
    pub fn instances_running(&self) -> usize {
        MAX_CONCURRENT_INSTANCES as usize - self.slots.available_permits()
    }

    /// How many instances may run at once; further calls wait for a slot,
    /// within their deadline.
    pub fn instance_slots(&self) -> usize {
        MAX_CONCURRENT_INSTANCES as usize
    }

    /// The wasmtime engine (for compiling components).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker holding WASI and every capability.
    pub fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }

    /// The default per-invocation limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The resources behind the capabilities (kv store, services).
    pub fn resources(&self) -> &HostResources {
        &self.resources
    }
}

fn engine_config(limits: &Limits) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.consume_fuel(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(limits.max_wasm_stack_bytes);

    // Fresh instances are cheap with the pooling allocator when slots keep
    // their pages resident and are reset by a pagemap scan (see NOTES.md).
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(MAX_CONCURRENT_INSTANCES);
    pool.total_core_instances(MAX_CONCURRENT_INSTANCES * 32);
    pool.max_core_instances_per_component(64);
    pool.max_memories_per_component(8);
    pool.total_memories(MAX_CONCURRENT_INSTANCES * 2);
    pool.max_tables_per_component(16);
    pool.total_tables(MAX_CONCURRENT_INSTANCES * 8);
    pool.total_stacks(MAX_CONCURRENT_INSTANCES);
    pool.max_memory_size(limits::POOL_MAX_MEMORY_BYTES);
    pool.table_elements(limits.max_table_elements);
    pool.linear_memory_keep_resident(2 << 20);
    pool.table_keep_resident(2 << 20);
    pool.async_stack_keep_resident(2 << 20);
    pool.pagemap_scan(wasmtime::Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Converts a wasmtime error (its own type, not `anyhow`'s) with context.
pub(crate) fn wasmtime_error(context: &str, error: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{context}: {error:#}")
}
