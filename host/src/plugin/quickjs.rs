//! Builds a JavaScript step's component on Stepwise's QuickJS runtime
//! (`stepwise plugins build-js`).
//!
//! The runtime (`guest-examples/js/runtime`, one core module per step world)
//! is QuickJS compiled for `wasm32-unknown-unknown` with a little glue. A
//! step's component is that module pre-initialised with the step's bundled
//! script (what `@stepwise/sdk/build` makes of a step file), then wrapped as
//! a component:
//!
//! 1. the module is instrumented by wizer (its memories and globals exported);
//! 2. it is instantiated here, on a plain engine, with every import a trap:
//!    loading a script may not reach the host;
//! 3. the script is copied into the buffer `stepwise-js-source(len)` returns
//!    and `stepwise-js-init` evaluates it and keeps the step's functions (it
//!    answers null, or a length-prefixed message saying why the script is
//!    not a step);
//! 4. wizer writes the instance's memory and globals back as the module's
//!    initial state, and `wit-component` wraps the module (its world is in
//!    the module's `component-type` section) into the component.
//!
//! Every call of the step then starts from that state in a fresh instance:
//! QuickJS, the SDK and the step are ready, nothing is parsed again.

use anyhow::{anyhow, bail, Context, Result};
use std::future::Future;
use std::pin::pin;
use std::task::{Poll, Waker};
use wasmtime::{Config, Engine, Instance, Linker, Memory, Module, Store, StoreLimits, StoreLimitsBuilder, Val};
use wasmtime_wizer::{InstanceState, SnapshotVal, ValType, Wizer};

/// What loading a script may spend (wasm fuel): far more than any bundle
/// needs, enough to stop a script that never finishes loading.
const LOAD_FUEL: u64 = 2_000_000_000;
/// Memory loading may use: a script that asks for more fails to load
/// (QuickJS throws its out-of-memory error).
const LOAD_MEMORY_BYTES: usize = 256 << 20;
/// The loaded step's memory must fit the default per-call limit: every call
/// starts with it.
const MAX_LOADED_MEMORY_BYTES: usize = 64 << 20;
/// The runtime's build-time entry points (see `guest-examples/js/runtime`).
const SOURCE_EXPORT: &str = "stepwise-js-source";
const INIT_EXPORT: &str = "stepwise-js-init";

/// The component of a step: `runtime` (a QuickJS runtime module) pre-initialised
/// with `script` (the step's bundled script).
pub fn build_component(runtime: &[u8], script: &str) -> Result<Vec<u8>> {
    let mut wizer = Wizer::new();
    wizer.init_func(INIT_EXPORT);
    let (instrumentation, instrumented) = wizer
        .instrument(runtime)
        .map_err(|error| anyhow!("the runtime module cannot be pre-initialised: {error:#}"))?;
    let mut config = Config::new();
    config.consume_fuel(true);
    let engine = Engine::new(&config).map_err(|error| anyhow!("configuring wasmtime: {error:#}"))?;
    let module = Module::new(&engine, &instrumented).map_err(|error| anyhow!("compiling the runtime: {error:#}"))?;
    let limits = StoreLimitsBuilder::new().memory_size(LOAD_MEMORY_BYTES).build();
    let mut store = Store::new(&engine, limits);
    store.limiter(|limits| limits);
    store.set_fuel(LOAD_FUEL).map_err(|error| anyhow!("{error:#}"))?;
    let instance = instantiate_without_host(&mut store, &module)?;
    load_script(&mut store, &instance, script)?;
    let snapshot = block_on(wizer.snapshot(&instrumentation, &mut Loaded { store: &mut store, instance }))
        .map_err(|error| anyhow!("snapshotting the loaded step: {error:#}"))?;
    wit_component::ComponentEncoder::default()
        .module(&snapshot)
        .context("reading the runtime's world")?
        .validate(true)
        .encode()
        .context("wrapping the step into a component")
}

/// Instantiates `module` with every function import a trap naming it.
fn instantiate_without_host(store: &mut Store<StoreLimits>, module: &Module) -> Result<Instance> {
    let mut linker = Linker::new(store.engine());
    for import in module.imports() {
        let wasmtime::ExternType::Func(ty) = import.ty() else {
            bail!("the runtime module imports {}.{}, which is not a function", import.module(), import.name());
        };
        let name = format!("{}#{}", import.module(), import.name());
        linker
            .func_new(import.module(), import.name(), ty, move |_, _, _| {
                Err(wasmtime::Error::msg(format!(
                    "the script called the host ({name}) while loading: host calls belong in invoke and compensate"
                )))
            })
            .map_err(|error| anyhow!("{error:#}"))?;
    }
    linker.instantiate(&mut *store, module).map_err(|error| anyhow!("instantiating the runtime: {error:#}"))
}

/// Hands `script` to the instance and has it loaded (steps 3 of the module docs).
fn load_script(store: &mut Store<StoreLimits>, instance: &Instance, script: &str) -> Result<()> {
    let memory = instance.get_memory(&mut *store, "memory").context("the runtime module exports no memory")?;
    let len = u32::try_from(script.len()).context("the script is larger than 4 GiB")?;
    let source = instance
        .get_typed_func::<u32, u32>(&mut *store, SOURCE_EXPORT)
        .map_err(|error| anyhow!("the runtime module has no `{SOURCE_EXPORT}`: {error:#}"))?;
    let buffer = source.call(&mut *store, len).map_err(|error| anyhow!("allocating the script: {error:#}"))?;
    memory.write(&mut *store, buffer as usize, script.as_bytes()).context("copying the script")?;
    let init = instance
        .get_typed_func::<(), u32>(&mut *store, INIT_EXPORT)
        .map_err(|error| anyhow!("the runtime module has no `{INIT_EXPORT}`: {error:#}"))?;
    let error = init.call(&mut *store, ()).map_err(|error| {
        let fuel_left = store.get_fuel().unwrap_or(1);
        if fuel_left == 0 {
            anyhow!("the script did not finish loading (it ran out of its budget: a loop at its top level?)")
        } else {
            anyhow!("loading the script trapped: {error:#}")
        }
    })?;
    if error != 0 {
        bail!("{}", error_record(store, &memory, error as usize)?);
    }
    let loaded = memory.data_size(&*store);
    if loaded > MAX_LOADED_MEMORY_BYTES {
        bail!(
            "the loaded step holds {} MiB of memory, more than the {} MiB a call may use: \
             build large data at call time, or keep it out of the script",
            loaded >> 20,
            MAX_LOADED_MEMORY_BYTES >> 20
        );
    }
    Ok(())
}

/// The message of an error record (a little-endian `u32` length, then UTF-8).
fn error_record(store: &Store<StoreLimits>, memory: &Memory, at: usize) -> Result<String> {
    let data = memory.data(store);
    let len = data.get(at..at + 4).context("an error record outside memory")?;
    let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
    let text = data.get(at + 4..at + 4 + len).context("an error record outside memory")?;
    Ok(String::from_utf8_lossy(text).into_owned())
}

/// The instance's state, as wizer reads it.
struct Loaded<'a> {
    store: &'a mut Store<StoreLimits>,
    instance: Instance,
}

impl InstanceState for Loaded<'_> {
    async fn global_get(&mut self, name: &str, _: ValType) -> SnapshotVal {
        let global = self.instance.get_global(&mut *self.store, name).expect("wizer exported it");
        match global.get(&mut *self.store) {
            Val::I32(x) => SnapshotVal::I32(x),
            Val::I64(x) => SnapshotVal::I64(x),
            Val::F32(x) => SnapshotVal::F32(x),
            Val::F64(x) => SnapshotVal::F64(x),
            Val::V128(x) => SnapshotVal::V128(x.as_u128()),
            other => panic!("wizer exported a global of type {other:?}, which it cannot snapshot"),
        }
    }

    async fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) {
        let memory = self.instance.get_memory(&mut *self.store, name).expect("wizer exported it");
        contents(memory.data(&*self.store))
    }
}

/// Runs a future that never waits (wizer's snapshot reads state already here).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = std::task::Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
}
