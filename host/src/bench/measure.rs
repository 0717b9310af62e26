//! The measurements themselves, each on its own runtime, host and store.

use super::cart::{native_cart_total, sample_cart};
use super::stats::{median_of, Samples};
use super::BenchOptions;
use crate::engine::{Engine, StartOptions};
use crate::plugin::{CodeCache, LoadedPlugin, PluginDirectory, PluginRegistry};
use crate::sandbox::{Call, HostResources, Limits, Sandbox, StepContext};
use crate::services::ledger::{Ledger, LedgerEntry};
use crate::store::kv::MemoryKv;
use crate::store::{ExecutionStore, MemoryStore, SqliteStore};
use crate::workflow::Workflow;
use anyhow::{anyhow, Context, Result};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) const ACCEPT_QUOTE: &str = include_str!("../../../guest-examples/workflows/accept-quote.toml");
pub(super) const QUOTE_INPUT: &str = include_str!("../../../guest-examples/workflows/accept-quote.input.json");

/// The guests compared for the isolated step: language -> plugin. The
/// JavaScript step is built twice from one source: on QuickJS (what a sync
/// or async step gets) and on SpiderMonkey (the baseline it replaced, kept
/// as an option for `Intl`).
const CART_TOTALS: [(&str, &str); 4] = [
    ("rust", "cart-total"),
    ("js", "js-cart-total"),
    ("js-spidermonkey", "js-cart-total-spidermonkey"),
    ("python", "py-cart-total"),
];

/// The demo services record nothing here: the benchmark measures the engine,
/// not the services' audit log (which would grow without bound).
struct Discard;

impl Ledger for Discard {
    fn record(&self, _entry: LedgerEntry) -> Result<(), String> {
        Ok(())
    }

    fn entries(&self, _service: &str) -> Result<Vec<LedgerEntry>, String> {
        Ok(Vec::new())
    }

    fn may_block(&self) -> bool {
        false
    }
}

/// The host every measurement shares: sandbox with the demo services, and a
/// registry over the plugin directory compiling through a scratch cache.
pub(super) struct Host {
    pub(super) registry: Arc<PluginRegistry>,
}

impl Host {
    pub(super) fn new(options: &BenchOptions) -> Result<Self> {
        use crate::services::demo;
        let inventory = demo::Inventory::with_ledger(Arc::new(Discard)).map_err(anyhow::Error::msg)?;
        let payments = demo::Payments::with_ledger(Arc::new(Discard)).map_err(anyhow::Error::msg)?;
        let services = demo::registry(Arc::new(inventory), Arc::new(payments));
        let resources = HostResources { services: Arc::new(services), kv: Arc::new(MemoryKv::default()) };
        let sandbox = Sandbox::with_resources(Limits::default(), resources)?;
        let directory = PluginDirectory::scan(&options.plugins).with_context(|| {
            format!("reading the plugin directory {} (build it: scripts/build-guests.sh)", options.plugins.display())
        })?;
        // The persistent cache `stepwise` itself uses: a second run does not
        // compile again (cold compiles are measured apart, in `loads`).
        let cache = CodeCache::new(&CodeCache::default_dir());
        Ok(Self { registry: Arc::new(PluginRegistry::with_cache(sandbox, directory, Some(cache))) })
    }

    pub(super) fn engine(&self, store: Arc<dyn ExecutionStore>) -> Engine {
        Engine::new(self.registry.clone(), store)
    }
}

pub(super) fn runtime(workers: usize) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?)
}

/// Runs every measurement `options` asks for.
pub fn all(options: &BenchOptions, scratch: &Path) -> Result<Value> {
    let host = Host::new(options)?;
    let mut report = json!({});
    if options.wants("isolated_step") || options.wants("throughput") {
        let steps = isolated_steps(&host, options)?;
        let mut rust = steps.iter().find(|s| s["lang"] == "rust").cloned().unwrap_or_else(|| json!({}));
        if options.wants("throughput") {
            let throughput = throughput(&host, options)?;
            rust["one_thread_per_s"] = json!(throughput.one);
            rust["two_threads_per_s"] = json!(throughput.two);
            // The median of the phases' ratios, not the ratio of the medians.
            rust["scaling"] = json!(median_of(&throughput.ratios));
            rust["scaling_per_phase"] = json!(throughput.ratios);
        }
        report["isolated_step"] = rust;
        report["isolated_steps"] = json!(steps);
    }
    for (name, durable) in [("accept_quote_memory", false), ("accept_quote_sqlite", true)] {
        if options.wants(name) {
            report[name] = accept_quote(&host, options, scratch, durable)?;
        }
    }
    if options.wants("chain") {
        report["chain_us_per_step"] = chains(&host, options)?;
    }
    if options.wants("load") {
        report["load"] = loads(options, scratch)?;
    }
    if options.wants("hot_swap") {
        report["hot_swap_ms"] = json!(hot_swap(options, scratch)?);
    }
    if options.wants("store_scale") {
        report["store_scale"] = super::store_scale::store_scale(&host, options, scratch)?;
    }
    if options.wants("hosts") {
        match &options.postgres {
            Some(url) => report["hosts"] = super::hosts::hosts(&host, options, scratch, url)?,
            None if options.only.is_some() => {
                anyhow::bail!(
                    "the hosts measurement needs a PostgreSQL server: --postgres URL (scripts/postgres.sh prints one)"
                )
            }
            None => eprintln!("skipping the hosts measurement: no --postgres URL (scripts/postgres.sh prints one)"),
        }
    }
    Ok(report)
}

fn context(step: &str) -> StepContext {
    StepContext {
        workflow: "bench".into(),
        execution_id: "bench".into(),
        step_id: step.into(),
        attempt: 1,
        idempotency_key: format!("bench/{step}"),
    }
}

/// Calls `plugin` in a loop for `duration`, on the current task; returns the latencies.
async fn call_loop(sandbox: &Sandbox, plugin: &LoadedPlugin, input: &str, duration: Duration) -> Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration || latencies.len() < 3 {
        let call = Call::Invoke { ctx: context("total"), input: input.to_string() };
        let began = Instant::now();
        let outcome = sandbox.call(plugin.runtime(), call, None, None).await;
        latencies.push(began.elapsed());
        outcome.result.map_err(|failure| anyhow!("{}: {failure}", plugin.name))?;
    }
    Ok(latencies)
}

/// Fresh instance + invoke of each language's cart total, beside the native logic.
fn isolated_steps(host: &Host, options: &BenchOptions) -> Result<Vec<Value>> {
    let rt = runtime(1)?;
    let input = sample_cart().to_string();
    let duration = options.duration();
    // The native baseline, measured in batches (one call is below the clock's resolution).
    let mut native = Vec::new();
    for _ in 0..options.repetitions {
        let started = Instant::now();
        let mut latencies = Vec::new();
        while started.elapsed() < duration || latencies.len() < 3 {
            let began = Instant::now();
            for _ in 0..100 {
                std::hint::black_box(native_cart_total(std::hint::black_box(&input)).map_err(anyhow::Error::msg)?);
            }
            latencies.push(began.elapsed() / 100);
        }
        native.push(Samples::from_durations(&latencies).median());
    }
    let native = median_of(&native);
    let mut rows = Vec::new();
    for (lang, name) in CART_TOTALS {
        let plugin = match rt.block_on(host.registry.get(name)) {
            Ok(plugin) => plugin,
            Err(error) => {
                eprintln!("skipping the {lang} isolated step: {error}");
                continue;
            }
        };
        let sandbox = host.registry.sandbox().clone();
        rt.block_on(call_loop(&sandbox, &plugin, &input, duration / 4))?; // warm up
        let (mut medians, mut p99s) = (Vec::new(), Vec::new());
        for _ in 0..options.repetitions {
            let samples = Samples::from_durations(&rt.block_on(call_loop(&sandbox, &plugin, &input, duration))?);
            medians.push(samples.median());
            p99s.push(samples.p99());
        }
        let median = median_of(&medians);
        rows.push(json!({
            "lang": lang,
            "plugin": name,
            "median_us": median,
            "p99_us": median_of(&p99s),
            "native_median_us": native,
            "ratio_to_native": median / native.max(1e-9),
            "overhead_us": median - native,
            "component_bytes": plugin.size,
        }));
    }
    Ok(rows)
}

/// Isolated invocations per second of the Rust cart total on 1 and on 2
/// worker threads, and the scaling between them.
struct Throughput {
    /// Median rate on one worker thread.
    one: f64,
    /// Median rate on two.
    two: f64,
    /// Each 2-thread phase's rate over the mean of the 1-thread phases just
    /// before and just after it, in run order.
    ratios: Vec<f64>,
}

/// Measures [`Throughput`] with each 2-thread phase between two 1-thread
/// phases (1, 2, 1, 2, ..., 1: one 2-thread phase per repetition), and
/// compares each 2-thread phase with the mean of its two neighbours. A
/// shared VM that speeds up or slows down steadily then moves both sides of
/// every ratio alike (all 1-thread repetitions first, then all 2-thread
/// ones, made the ratio swing from 1.7x to 2.2x between runs of one binary).
fn throughput(host: &Host, options: &BenchOptions) -> Result<Throughput> {
    let input = Arc::new(sample_cart().to_string());
    let runtimes = [runtime(1)?, runtime(2)?];
    let plugin = runtimes[0].block_on(host.registry.get("cart-total"))?;
    // Each task calls until the phase ends; a failed call ends the measurement.
    let measure = |workers: usize, duration: Duration| -> Result<f64> {
        let started = Instant::now();
        let calls = runtimes[workers - 1].block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..workers * 4 {
                let (sandbox, plugin, input) = (host.registry.sandbox().clone(), plugin.clone(), input.clone());
                tasks.spawn(
                    async move { call_loop(&sandbox, &plugin, &input, duration).await.map(|calls| calls.len()) },
                );
            }
            let mut calls = 0;
            while let Some(joined) = tasks.join_next().await {
                calls += joined??;
            }
            anyhow::Ok(calls)
        })?;
        Ok(calls as f64 / started.elapsed().as_secs_f64())
    };
    // A first short run on each warms the pool and the threads up.
    for workers in [1, 2] {
        measure(workers, options.duration() / 4)?;
    }
    let mut ones = vec![measure(1, options.duration())?];
    let (mut twos, mut ratios) = (Vec::new(), Vec::new());
    for _ in 0..options.repetitions {
        let two = measure(2, options.duration())?;
        let one = measure(1, options.duration())?;
        ratios.push(two / ((ones[ones.len() - 1] + one) / 2.0).max(1.0));
        twos.push(two);
        ones.push(one);
    }
    Ok(Throughput { one: median_of(&ones), two: median_of(&twos), ratios })
}

/// Runs `workflow` for `duration` with `concurrency` executions in flight,
/// spread round-robin over `engines`; returns executions per second and the
/// latencies.
pub(super) fn saga_loop(
    rt: &tokio::runtime::Runtime,
    engines: &[Engine],
    workflow: &Arc<Workflow>,
    input: &Value,
    concurrency: usize,
    duration: Duration,
) -> Result<(f64, Samples)> {
    let started = Instant::now();
    let latencies = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..concurrency {
            let (engine, workflow, input) = (engines[n % engines.len()].clone(), workflow.clone(), input.clone());
            tasks.spawn(async move {
                let mut latencies = Vec::new();
                while started.elapsed() < duration || latencies.is_empty() {
                    let began = Instant::now();
                    if concurrency > 1 {
                        // A client's next request waits its turn among the
                        // others (as a new request to a server would): the
                        // engine drives an execution in the task that waits
                        // for it, so without this one task would run many
                        // executions back to back while the others wait.
                        tokio::task::yield_now().await;
                    }
                    // As a client that waits for the outcome: the view is not built.
                    let execution =
                        engine.run_to_rest(workflow.clone(), input.clone(), StartOptions::default()).await?;
                    if execution.status() != crate::journal::ExecutionStatus::Succeeded {
                        anyhow::bail!(
                            "{} ended {}: {:?}",
                            workflow.name(),
                            execution.status().as_str(),
                            execution.error()
                        );
                    }
                    latencies.push(began.elapsed());
                }
                Ok(latencies)
            });
        }
        let mut all = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            all.extend(joined??);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    Ok((rate, Samples::from_durations(&latencies)))
}

/// accept-quote (4 steps and its hook point): sequential and 64 concurrent.
fn accept_quote(host: &Host, options: &BenchOptions, scratch: &Path, durable: bool) -> Result<Value> {
    let rt = runtime(2)?;
    let workflow = Arc::new(Workflow::from_toml("accept-quote.toml", ACCEPT_QUOTE, host.registry.as_ref())?);
    let input: Value = serde_json::from_str(QUOTE_INPUT)?;
    let mut figures: Map<String, Value> = Map::new();
    for (label, concurrency) in [("seq", 1usize), ("c64", 64)] {
        let (mut rates, mut p50s, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
        for repetition in 0..=options.repetitions {
            // A fresh store per repetition: the in-memory one keeps every execution.
            let store: Arc<dyn ExecutionStore> = if durable {
                let path = scratch.join(format!("bench-{label}-{repetition}.db"));
                Arc::new(SqliteStore::open(&path)?)
            } else {
                Arc::new(MemoryStore::new())
            };
            let engine = host.engine(store);
            let duration = if repetition == 0 { options.duration() / 4 } else { options.duration() };
            let (rate, latencies) =
                saga_loop(&rt, std::slice::from_ref(&engine), &workflow, &input, concurrency, duration)?;
            if repetition > 0 {
                rates.push(rate);
                p50s.push(latencies.median());
                p99s.push(latencies.p99());
            }
        }
        figures.insert(format!("{label}_exec_per_s"), json!(median_of(&rates)));
        figures.insert(format!("{label}_p50_us"), json!(median_of(&p50s)));
        figures.insert(format!("{label}_p99_us"), json!(median_of(&p99s)));
    }
    figures.insert("durable".into(), json!(if durable { "WAL, synchronous=FULL, group commit" } else { "no" }));
    Ok(Value::Object(figures))
}

/// A chain of `n` trivial steps (the WAT echo), each reading the previous output.
fn chain_workflow(n: usize, host: &Host) -> Result<Workflow> {
    let mut toml = format!("name = \"chain-{n}\"\n");
    for k in 0..n {
        let input = if k == 0 { "\"$.input\"".to_string() } else { format!("\"$.steps.s{}.output\"", k - 1) };
        toml.push_str(&format!("[[steps]]\nid = \"s{k}\"\nplugin = \"wat-echo\"\ninput = {input}\n"));
    }
    Ok(Workflow::from_toml(&format!("chain-{n}"), &toml, host.registry.as_ref())?)
}

/// Microseconds per step for chains of 4, 16 and 64 trivial steps (sequential executions).
fn chains(host: &Host, options: &BenchOptions) -> Result<Value> {
    let rt = runtime(2)?;
    let mut figures = Map::new();
    for n in [4usize, 16, 64] {
        let workflow = Arc::new(chain_workflow(n, host)?);
        figures.insert(n.to_string(), json!(per_unit_us(host, &rt, options, &workflow, &json!({"n": n}), n)?));
    }
    let ratio = figures["64"].as_f64().unwrap_or(0.0) / figures["4"].as_f64().unwrap_or(1.0).max(1e-9);
    figures.insert("ratio_64_to_4".into(), json!(ratio));
    // One step fanned out over 10 and 1,000 elements: microseconds per
    // element, beside a plain step of the chain of 4 (the same guest).
    for elements in [10usize, 1000] {
        let toml = format!(
            "name = \"fan-out-{elements}\"\n[[steps]]\nid = \"each\"\nplugin = \"wat-echo\"\nfor_each = \"$.input.items\"\ninput = \"$.item\"\n"
        );
        let workflow = Arc::new(Workflow::from_toml("fan-out.toml", &toml, host.registry.as_ref())?);
        let input = json!({ "items": (0..elements).collect::<Vec<_>>() });
        let per_element = per_unit_us(host, &rt, options, &workflow, &input, elements)?;
        figures.insert(format!("fan_out_{elements}_per_element"), json!(per_element));
    }
    let plain = figures["4"].as_f64().unwrap_or(1.0).max(1e-9);
    let ratio = figures["fan_out_1000_per_element"].as_f64().unwrap_or(0.0) / plain;
    figures.insert("ratio_fan_out_1000_to_plain".into(), json!(ratio));
    Ok(Value::Object(figures))
}

/// Microseconds per unit (step or element) of `workflow`, run sequentially
/// on a fresh in-memory store per repetition: the median execution time over
/// `units`, the median of the repetitions after a warm-up one.
fn per_unit_us(
    host: &Host,
    rt: &tokio::runtime::Runtime,
    options: &BenchOptions,
    workflow: &Arc<Workflow>,
    input: &Value,
    units: usize,
) -> Result<f64> {
    let mut per_unit = Vec::new();
    for repetition in 0..=options.repetitions {
        let engine = host.engine(Arc::new(MemoryStore::new()));
        let (_, latencies) = saga_loop(rt, std::slice::from_ref(&engine), workflow, input, 1, options.duration())?;
        if repetition > 0 {
            per_unit.push(latencies.median() / units as f64);
        }
    }
    Ok(median_of(&per_unit))
}

/// Cold compile (+ checks + linking) vs cached load, per guest.
fn loads(options: &BenchOptions, scratch: &Path) -> Result<Value> {
    let sandbox = Sandbox::new(Limits::default())?;
    let mut figures = Map::new();
    let guests =
        ["wat-echo", "cart-total", "retrieve-cart", "js-cart-total", "js-cart-total-spidermonkey", "py-cart-total"];
    for guest in guests {
        let path = options.plugins.join(format!("{guest}.wasm"));
        if !path.exists() {
            continue;
        }
        let (mut cold, mut cached) = (Vec::new(), Vec::new());
        let big = guest.starts_with("js-") || guest.starts_with("py-");
        if big && options.quick {
            continue; // seconds to compile: measured in full runs only
        }
        // SpiderMonkey and Python take many seconds to compile: once. QuickJS
        // has a target of its own (issue 16): its median of the repetitions.
        let slow = guest == "js-cart-total-spidermonkey" || guest.starts_with("py-");
        let repetitions = if slow { 1 } else { options.repetitions };
        let mut cache_bytes = 0;
        for repetition in 0..repetitions {
            let cache_dir = scratch.join(format!("load-{guest}-{repetition}"));
            let cache = CodeCache::new(&cache_dir);
            let began = Instant::now();
            let plugin = LoadedPlugin::load_cached(&sandbox, Some(&cache), guest, &path)?;
            cold.push(began.elapsed().as_secs_f64() * 1e3);
            for _ in 0..3 {
                let began = Instant::now();
                LoadedPlugin::load_cached(&sandbox, Some(&cache), guest, &path)?;
                cached.push(began.elapsed().as_secs_f64() * 1e3);
            }
            figures.insert(guest.to_string(), json!({"size_bytes": plugin.size}));
            cache_bytes = directory_bytes(&cache_dir);
        }
        figures.insert(
            guest.to_string(),
            json!({
                "size_bytes": figures[guest]["size_bytes"],
                "cold_compile_ms": median_of(&cold),
                "cached_load_ms": median_of(&cached),
                "compiled_cache_bytes": cache_bytes,
            }),
        );
    }
    Ok(Value::Object(figures))
}

/// The bytes of the files under `dir` (the code cache: compiled code and the archived version).
fn directory_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => directory_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// From writing a new version of a plugin into a watched directory to the
/// first execution that runs it.
fn hot_swap(options: &BenchOptions, scratch: &Path) -> Result<f64> {
    let variants = options.plugins.join("../variants");
    let v1 = std::fs::read(variants.join("versioned-v1.wasm")).context("build/variants/versioned-v1.wasm")?;
    let v2 = std::fs::read(variants.join("versioned-v2.wasm")).context("build/variants/versioned-v2.wasm")?;
    let dir = scratch.join("hot-swap");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("versioned.wasm"), &v1)?;
    let rt = runtime(2)?;
    let sandbox = Sandbox::new(Limits::default())?;
    let registry = Arc::new(PluginRegistry::with_cache(
        sandbox,
        PluginDirectory::scan(&dir)?,
        Some(CodeCache::new(&scratch.join("hot-swap-cache"))),
    ));
    let engine = Engine::new(registry.clone(), Arc::new(MemoryStore::new()));
    let workflow = Arc::new(Workflow::from_toml(
        "versioned",
        "name = \"versioned\"\n[[steps]]\nid = \"only\"\nplugin = \"versioned\"\n",
        registry.as_ref(),
    )?);
    let mut swaps = Vec::new();
    rt.block_on(async {
        let _watch = registry.watch().map_err(anyhow::Error::msg)?;
        let version = |execution: &crate::engine::ExecutionView| {
            execution.steps[0].run.output.as_ref().and_then(|o| o["version"].as_str().map(str::to_string))
        };
        engine.run(workflow.clone(), json!({}), StartOptions::default()).await?;
        for repetition in 0..options.repetitions.max(3) {
            let (bytes, expected) = if repetition % 2 == 0 { (&v2, "v2") } else { (&v1, "v1") };
            // A new build each time (a trailing custom section), so nothing is cached.
            let mut bytes = bytes.clone();
            bytes.extend_from_slice(&custom_section(repetition));
            let written = Instant::now();
            std::fs::write(dir.join("versioned.wasm.partial"), &bytes)?;
            std::fs::rename(dir.join("versioned.wasm.partial"), dir.join("versioned.wasm"))?;
            loop {
                let execution = engine.run(workflow.clone(), json!({}), StartOptions::default()).await?;
                if version(&execution).as_deref() == Some(expected) {
                    swaps.push(written.elapsed().as_secs_f64() * 1e3);
                    break;
                }
                anyhow::ensure!(written.elapsed() < Duration::from_secs(30), "the new version never went live");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(median_of(&swaps))
}

/// A component-level custom section (id 0) named `bench` holding `n`.
fn custom_section(n: usize) -> Vec<u8> {
    let payload: Vec<u8> = [&[5u8][..], b"bench", &(n as u64).to_le_bytes()].concat();
    let mut section = vec![0u8, payload.len() as u8];
    section.extend(payload);
    section
}
