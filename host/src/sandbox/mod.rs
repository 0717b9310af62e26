//! The sandbox every step runs in: wasmtime engines (one per lane, below), their linkers, and the
//! limits applied to each invocation.
//!
//! It owns the engine configuration (pooling allocator, fuel, epoch
//! interruption), links the whole WASI 0.2 set with no authority plus the
//! Stepwise capabilities, and performs single guest calls in a fresh store
//! ([`invoke`]). It knows nothing about workflows or sagas: the engine asks
//! it to call `invoke` or `compensate` on a compiled plugin and gets back a
//! classified outcome.
//!
//! **Lanes.** A call writes dozens of cache lines of its wasmtime engine
//! (reference counts of the engine, component and modules, the pool's
//! counters and free lists): two threads calling through one engine passed
//! those lines back and forth on every call, and two worker threads made
//! 1.4-1.9x the calls of one where two processes made 2.0x. So the sandbox
//! has one engine (with its own pools and linker) per CPU, up to
//! [`MAX_LANES`]; every plugin is linked on each, and a call takes the lane
//! of the CPU its thread runs on. Plugins are compiled, checked and
//! described on the first lane's engine ([`Sandbox::engine`]). The
//! instance slots are divided among the lanes (each lane's pools reserve
//! address space for its share only): a call takes its slots (one per two
//! memories of its component) from its own lane, or from another when its
//! lane's are taken, or waits for the first lane to free them.

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
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How many instances may exist at once, all lanes together; invocations
/// beyond it wait for a slot.
const MAX_CONCURRENT_INSTANCES: u32 = 256;

/// Memories in a lane's pools per instance slot: a call of a component
/// with more takes more slots ([`slots_needed`]). Tables and core instances
/// are pooled for the most a component may have, per slot.
const MEMORIES_PER_SLOT: u32 = 2;
const MAX_MEMORIES_PER_COMPONENT: u32 = 8;
const MAX_TABLES_PER_COMPONENT: u32 = 16;
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 64;

/// The most lanes (engines) a sandbox has, whatever the number of CPUs:
/// each lane holds its own copy of every plugin's compiled code.
pub const MAX_LANES: usize = 4;

/// One wasmtime engine, with its own pools, the linker over it, and its
/// share of the instance slots (each a place in its pools).
struct Lane {
    engine: Engine,
    linker: Linker<HostState>,
    slots: Arc<Semaphore>,
    capacity: u32,
    calls: CallCount,
}

/// How many calls a lane has run: written by calls on that lane only, on a
/// cache line of its own (the next lane's engine is read by every call on it).
#[derive(Default)]
#[repr(align(128))]
struct CallCount(std::sync::atomic::AtomicU64);

impl Lane {
    fn new(limits: &Limits, capacity: u32) -> Result<Self> {
        let engine = Engine::new(&engine_config(limits, capacity))
            .map_err(|e| wasmtime_error("configuring the wasmtime engine", e))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| wasmtime_error("linking WASI", e))?;
        for capability in capabilities::all() {
            capability
                .add_to_linker(&mut linker)
                .map_err(|e| wasmtime_error(&format!("linking capability `{}`", capability.interface()), e))?;
        }
        let slots = Arc::new(Semaphore::new(capacity as usize));
        Ok(Self { engine, linker, slots, capacity, calls: CallCount::default() })
    }
}

/// The engines, linkers and default limits shared by every invocation.
pub struct Sandbox {
    lanes: Vec<Lane>,
    limits: Limits,
    resources: HostResources,
    /// The lane of each CPU (by its number), for the CPUs this process may
    /// run on: the allowed CPUs taken in turn.
    lane_of_cpu: Vec<usize>,
    ticker: epoch::Ticker,
}

impl Sandbox {
    /// A sandbox with the given default limits, an in-memory kv store and no services.
    pub fn new(limits: Limits) -> Result<Arc<Self>> {
        Self::with_resources(limits, HostResources::default())
    }

    /// A sandbox with the given default limits and capability resources.
    pub fn with_resources(limits: Limits, resources: HostResources) -> Result<Arc<Self>> {
        let cpus = allowed_cpus();
        let count = if cfg!(target_os = "linux") { cpus.len().clamp(1, MAX_LANES) } else { 1 };
        let highest = cpus.iter().copied().max().unwrap_or(0);
        let mut lane_of_cpu: Vec<usize> = (0..=highest).map(|cpu| cpu % count).collect();
        for (turn, &cpu) in cpus.iter().enumerate() {
            lane_of_cpu[cpu] = turn % count;
        }
        let share = |lane: usize| {
            let (each, rest) = (MAX_CONCURRENT_INSTANCES / count as u32, MAX_CONCURRENT_INSTANCES % count as u32);
            each + u32::from((lane as u32) < rest)
        };
        let lanes = (0..count).map(|lane| Lane::new(&limits, share(lane))).collect::<Result<Vec<_>>>()?;
        let engines: Vec<&Engine> = lanes.iter().map(|lane| &lane.engine).collect();
        let ticker = epoch::Ticker::start(&engines);
        Ok(Arc::new(Self { lanes, limits, resources, lane_of_cpu, ticker }))
    }

    /// How many instance slots calls hold now, all lanes together (a call
    /// holds one per two memories of its component: [`Sandbox::slots_for`]).
    pub fn instances_running(&self) -> usize {
        self.lanes.iter().map(|lane| lane.capacity as usize - lane.slots.available_permits()).sum()
    }

    /// How many calls each lane has run, in lane order: which engine calls
    /// actually used (a call runs on the lane whose slot it took).
    pub fn calls_by_lane(&self) -> Vec<u64> {
        self.lanes.iter().map(|lane| lane.calls.0.load(std::sync::atomic::Ordering::Relaxed)).collect()
    }

    /// How many instances may run at once; further calls wait for a slot,
    /// within their deadline.
    pub fn instance_slots(&self) -> usize {
        MAX_CONCURRENT_INSTANCES as usize
    }

    /// How many instance slots a call of `component` takes: one per
    /// [`MEMORIES_PER_SLOT`] memories it has, so that a call holding its
    /// slots always finds room in its lane's pools.
    pub fn slots_for(&self, component: &Component) -> u32 {
        let smallest = self.lanes.iter().map(|lane| lane.capacity).min().unwrap_or(1);
        slots_needed(component.resources_required()).min(smallest)
    }

    /// `count` free instance slots of one lane: of the lane of this
    /// thread's CPU, or else of the next lane with them, or else the first
    /// freed on any lane. The lane whose slots they are, which the call runs on.
    async fn slot(&self, count: u32) -> Result<(usize, OwnedSemaphorePermit), tokio::sync::AcquireError> {
        let here = self.lane_here();
        let order = (0..self.lanes.len()).map(|turn| (here + turn) % self.lanes.len());
        for lane in order.clone() {
            if let Ok(slot) = self.lanes[lane].slots.clone().try_acquire_many_owned(count) {
                return Ok((lane, slot));
            }
        }
        let waits = order.map(|lane| {
            let slots = self.lanes[lane].slots.clone();
            Box::pin(async move { (lane, slots.acquire_many_owned(count).await) })
        });
        // The waits not chosen are dropped: a slot granted to one of them meanwhile is given back.
        let ((lane, slot), _, _) = futures_util::future::select_all(waits).await;
        Ok((lane, slot?))
    }

    /// The first lane's wasmtime engine: the one components are compiled,
    /// checked and described with.
    pub fn engine(&self) -> &Engine {
        &self.lanes[0].engine
    }

    /// The first lane's linker, holding WASI and every capability.
    pub fn linker(&self) -> &Linker<HostState> {
        &self.lanes[0].linker
    }

    /// How many lanes (engines) calls are spread over: one per CPU, at most [`MAX_LANES`].
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// `linked` (`component` linked by [`Sandbox::linker`]) and the same
    /// compiled code linked on every other lane, in lane order: what a
    /// [`SandboxedPlugin`] holds. Each other lane loads the code with
    /// `cached` (the compiled-code cache's file, mapped: a fraction of a
    /// millisecond), or else from a copy of `component`'s code in memory.
    pub fn link_on_every_lane(
        &self,
        component: &Component,
        linked: LinkedStep,
        cached: impl Fn(&Engine) -> Option<Component>,
    ) -> Result<Vec<LinkedStep>> {
        let mut all = Vec::with_capacity(self.lanes.len());
        all.push(linked);
        let mut code = None;
        for (index, lane) in self.lanes.iter().enumerate().skip(1) {
            let copy = match cached(&lane.engine) {
                Some(copy) => copy,
                None => {
                    if code.is_none() {
                        code = Some(
                            component
                                .serialize()
                                .map_err(|e| wasmtime_error("copying compiled code to another lane", e))?,
                        );
                    }
                    let code = code.as_deref().expect("serialized above");
                    // SAFETY: `code` was serialized by an engine configured
                    // exactly as this one (`engine_config`), in this process.
                    unsafe { Component::deserialize(&lane.engine, code) }
                        .map_err(|e| wasmtime_error(&format!("loading compiled code on lane {index}"), e))?
                }
            };
            let instance_pre = lane
                .linker
                .instantiate_pre(&copy)
                .map_err(|e| wasmtime_error(&format!("linking on lane {index}"), e))?;
            all.push(LinkedStep::new(instance_pre).map_err(|error| anyhow::anyhow!("on lane {index}: {error}"))?);
        }
        Ok(all)
    }

    /// The lane a call made now from this thread takes while the lane has
    /// a free slot: that of the CPU it runs on.
    pub fn lane_here(&self) -> usize {
        if self.lanes.len() == 1 {
            return 0;
        }
        let cpu = current_cpu();
        self.lane_of_cpu.get(cpu).copied().unwrap_or(cpu % self.lanes.len())
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

/// The configuration of a lane's engine, its pools sized for `instances` at once.
fn engine_config(limits: &Limits, instances: u32) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.consume_fuel(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(limits.max_wasm_stack_bytes);

    // Fresh instances are cheap with the pooling allocator when slots keep
    // their pages resident and are reset by a pagemap scan (see NOTES.md).
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances);
    pool.total_core_instances(instances * MAX_CORE_INSTANCES_PER_COMPONENT);
    pool.max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT);
    pool.max_memories_per_component(MAX_MEMORIES_PER_COMPONENT);
    pool.total_memories(instances * MEMORIES_PER_SLOT);
    pool.max_tables_per_component(MAX_TABLES_PER_COMPONENT);
    pool.total_tables(instances * MAX_TABLES_PER_COMPONENT);
    pool.total_stacks(instances);
    pool.max_memory_size(limits::POOL_MAX_MEMORY_BYTES);
    pool.table_elements(limits.max_table_elements);
    pool.linear_memory_keep_resident(2 << 20);
    pool.table_keep_resident(2 << 20);
    pool.async_stack_keep_resident(2 << 20);
    pool.pagemap_scan(wasmtime::Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// The slots a component takes for its memories (`None`: it imports core
/// modules, and may have as many as a component may).
fn slots_needed(required: Option<wasmtime::ResourcesRequired>) -> u32 {
    let memories = required.map_or(MAX_MEMORIES_PER_COMPONENT, |required| required.num_memories);
    memories.div_ceil(MEMORIES_PER_SLOT).max(1)
}

/// The CPU this thread runs on (0 where the system cannot say).
#[cfg(target_os = "linux")]
fn current_cpu() -> usize {
    // SAFETY: `sched_getcpu` takes nothing and returns -1 on failure.
    usize::try_from(unsafe { libc::sched_getcpu() }).unwrap_or(0)
}

#[cfg(not(target_os = "linux"))]
fn current_cpu() -> usize {
    0
}

/// The CPUs this thread may run on, in order (CPU 0 alone where the system
/// cannot say): the sandbox's lanes are dealt to them in turn.
#[cfg(target_os = "linux")]
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed `cpu_set_t` is an empty set, which the call fills.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return vec![0];
    }
    let cpus: Vec<usize> =
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect();
    if cpus.is_empty() {
        vec![0]
    } else {
        cpus
    }
}

#[cfg(not(target_os = "linux"))]
pub fn allowed_cpus() -> Vec<usize> {
    vec![0]
}

/// Converts a wasmtime error (its own type, not `anyhow`'s) with context.
pub(crate) fn wasmtime_error(context: &str, error: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{context}: {error:#}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn required(memories: u32) -> Option<wasmtime::ResourcesRequired> {
        Some(wasmtime::ResourcesRequired {
            num_memories: memories,
            max_initial_memory_size: None,
            num_tables: 1,
            max_initial_table_size: None,
        })
    }

    #[test]
    fn a_component_takes_a_slot_per_two_memories_and_the_most_when_unknown() {
        assert_eq!(slots_needed(required(0)), 1);
        assert_eq!(slots_needed(required(1)), 1);
        assert_eq!(slots_needed(required(2)), 1);
        assert_eq!(slots_needed(required(3)), 2);
        assert_eq!(slots_needed(required(8)), 4);
        assert_eq!(slots_needed(None), MAX_MEMORIES_PER_COMPONENT / MEMORIES_PER_SLOT);
    }
}
