//! `stepwise bench`: the performance harness. Each measurement runs beside
//! its baseline in the same process (the same step compiled natively, one
//! worker vs two, 4 steps vs 64), warms up, repeats at least three times and
//! reports medians, p99s and ratios, as a table and as `--json`.
//!
//! It measures the real thing: compiled guests from the plugin directory,
//! the engine with its state machine and driver, the in-memory and the
//! durable SQLite store, the compiled-code cache and the directory watcher.
//! Timing assertions do not belong here (nor in tests): `--quick` only proves
//! that every measurement runs.

mod cart;
mod hosts;
mod http;
mod measure;
mod stats;
mod store_scale;

pub use cart::{native_cart_total, sample_cart};
pub use stats::{median_of, Samples};
pub use store_scale::Fill;

use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// Every measurement, by the name `--only` takes.
pub const MEASUREMENTS: [&str; 9] = [
    "isolated_step",
    "throughput",
    "accept_quote_memory",
    "accept_quote_sqlite",
    "chain",
    "load",
    "hot_swap",
    "store_scale",
    "hosts",
];

/// How the benchmark runs.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The plugin directory holding the built guests (`build/plugins`).
    pub plugins: PathBuf,
    /// Time per repetition of a timed loop.
    pub seconds: f64,
    /// Repetitions of each measurement (at least 3).
    pub repetitions: usize,
    /// Only this measurement.
    pub only: Option<String>,
    /// A smoke run: tiny loops, proves every measurement runs.
    pub quick: bool,
    /// The PostgreSQL server for the multi-host measurement (skipped without).
    pub postgres: Option<String>,
}

impl BenchOptions {
    fn wants(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == name)
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(if self.quick { 0.05 } else { self.seconds })
    }
}

/// Runs the measurements and returns the report (the `--json` document).
pub fn run(options: &BenchOptions) -> anyhow::Result<Value> {
    if let Some(only) = &options.only {
        if !MEASUREMENTS.contains(&only.as_str()) {
            anyhow::bail!("unknown measurement `{only}` (one of {})", MEASUREMENTS.join(", "));
        }
    }
    let scratch = std::env::temp_dir().join(format!("stepwise-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let result = measure::all(options, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    let mut report = result?;
    report["machine"] = machine();
    report["options"] = json!({"seconds": options.seconds, "repetitions": options.repetitions, "quick": options.quick});
    Ok(report)
}

/// The measurements' host over the guests in `plugins`, for the commands
/// that fill or crash a store.
fn host_of(plugins: PathBuf) -> anyhow::Result<measure::Host> {
    let options = BenchOptions { plugins, seconds: 1.0, repetitions: 3, only: None, quick: false, postgres: None };
    measure::Host::new(&options)
}

/// `stepwise bench crash-store`: starts `running` executions on the store at
/// `path` and returns with them in flight; the caller ends the process
/// without a shutdown while it holds the returned [`store_scale::Abandoned`].
pub fn abandon_executions(
    plugins: PathBuf,
    path: &std::path::Path,
    running: usize,
) -> anyhow::Result<store_scale::Abandoned> {
    store_scale::abandon(&host_of(plugins)?, path, running)
}

/// `stepwise bench generate-store`: fills a new SQLite store at `path` with
/// `fill` (real executions, run by the engine on the guests in `plugins`)
/// and says what it wrote.
pub fn generate_store(plugins: PathBuf, path: &std::path::Path, fill: Fill) -> anyhow::Result<Value> {
    let generated = store_scale::generate(&host_of(plugins)?, path, fill, true)?;
    Ok(json!({
        "store": format!("sqlite://{}", path.display()),
        "finished": fill.finished,
        "waiting": fill.waiting,
        "seconds": generated.seconds,
        "executions_per_s": generated.executions as f64 / generated.seconds.max(1e-9),
        "bytes": generated.bytes,
        "bytes_per_execution": generated.bytes_per_execution(),
    }))
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|info| {
        info.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
    });
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": cpu,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// The report as a readable table.
pub fn table(report: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let f = |v: &Value| {
        v.as_f64().map_or("-".to_string(), |x| if x >= 100.0 { format!("{x:.0}") } else { format!("{x:.2}") })
    };
    let machine = &report["machine"];
    let _ = writeln!(
        out,
        "machine: {} cores, {} ({} build)",
        machine["nproc"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["build"].as_str().unwrap_or("?")
    );
    if let Some(steps) = report["isolated_steps"].as_array() {
        let _ = writeln!(out, "\nisolated step (fresh instance + invoke, ~1 KB cart)");
        let _ = writeln!(
            out,
            "  {:<8} {:>10} {:>10} {:>12} {:>9} {:>13}",
            "lang", "median us", "p99 us", "native us", "ratio", "overhead us"
        );
        for step in steps {
            let _ = writeln!(
                out,
                "  {:<8} {:>10} {:>10} {:>12} {:>9} {:>13}",
                step["lang"].as_str().unwrap_or(""),
                f(&step["median_us"]),
                f(&step["p99_us"]),
                f(&step["native_median_us"]),
                f(&step["ratio_to_native"]),
                f(&step["overhead_us"])
            );
        }
    }
    let throughput = &report["isolated_step"];
    if throughput.get("one_thread_per_s").is_some() {
        let _ = writeln!(
            out,
            "\nisolated invocations/s: 1 thread {}, 2 threads {} (medians); scaling {}x (the median of each \
             2-thread phase against the 1-thread phases around it: {})",
            f(&throughput["one_thread_per_s"]),
            f(&throughput["two_threads_per_s"]),
            f(&throughput["scaling"]),
            throughput["scaling_per_phase"]
                .as_array()
                .map(|ratios| ratios.iter().map(|ratio| format!("{}x", f(ratio))).collect::<Vec<_>>().join(" / "))
                .unwrap_or_default()
        );
    }
    for (key, title) in [
        ("accept_quote_memory", "accept-quote, in-memory store"),
        ("accept_quote_sqlite", "accept-quote, SQLite (fsync'd)"),
    ] {
        let row = &report[key];
        if row.is_object() {
            let _ = writeln!(
                out,
                "\n{title}: sequential {} exec/s (p50 {} us, p99 {} us); 64 concurrent {} exec/s (p50 {} us, p99 {} us)",
                f(&row["seq_exec_per_s"]),
                f(&row["seq_p50_us"]),
                f(&row["seq_p99_us"]),
                f(&row["c64_exec_per_s"]),
                f(&row["c64_p50_us"]),
                f(&row["c64_p99_us"])
            );
        }
    }
    if let Some(chain) = report["chain_us_per_step"].as_object() {
        let mut sizes: Vec<(u32, &Value)> = chain.iter().filter_map(|(k, v)| Some((k.parse().ok()?, v))).collect();
        sizes.sort_by_key(|(n, _)| *n);
        let sizes: Vec<String> = sizes.iter().map(|(n, v)| format!("{n} steps {} us", f(v))).collect();
        let _ = writeln!(out, "\nchain, per step: {} (64 vs 4: {}x)", sizes.join(", "), f(&chain["ratio_64_to_4"]));
        let _ = writeln!(
            out,
            "fan-out, per element: 10 elements {} us, 1000 elements {} us (1000 vs a plain step of the chain of 4: {}x)",
            f(&chain["fan_out_10_per_element"]),
            f(&chain["fan_out_1000_per_element"]),
            f(&chain["ratio_fan_out_1000_to_plain"])
        );
    }
    if let Some(load) = report["load"].as_object() {
        let _ = writeln!(out, "\nload per guest (compile+check+link vs cached):");
        for (guest, row) in load {
            let _ = writeln!(
                out,
                "  {guest:<20} cold {} ms, cached {} ms, {} bytes",
                f(&row["cold_compile_ms"]),
                f(&row["cached_load_ms"]),
                row["size_bytes"]
            );
        }
    }
    if let Some(hosts) = report["hosts"].as_object() {
        let _ = writeln!(out, "\naccept-quote on shared stores, {} in flight:", report["hosts"]["in_flight"]);
        let _ = writeln!(
            out,
            "  {:<11} {:>9} {:>9} {:>9} {:>14} {:>12} {:>10} {:>10}",
            "store", "exec/s", "p50 us", "p99 us", "exec/host-cpu", "exec/db-cpu", "tx/exec", "tx/event"
        );
        for label in ["sqlite", "postgres_1", "postgres_2", "postgres_3"] {
            let Some(row) = hosts.get(label) else { continue };
            let _ = writeln!(
                out,
                "  {label:<11} {:>9} {:>9} {:>9} {:>14} {:>12} {:>10} {:>10}",
                f(&row["exec_per_s"]),
                f(&row["p50_us"]),
                f(&row["p99_us"]),
                f(&row["exec_per_host_cpu_s"]),
                f(&row["exec_per_database_cpu_s"]),
                f(&row["transactions_per_execution"]),
                f(&row["transactions_per_event"])
            );
        }
        let inbox = &report["hosts"]["inbox_round_trip"];
        let _ = writeln!(
            out,
            "  inbox round trip (cancel at host B, execution driven by host A): p50 {} ms, p99 {} ms",
            f(&inbox["p50_ms"]),
            f(&inbox["p99_ms"])
        );
    }
    if let Some(sizes) = report["store_scale"]["sizes"].as_array() {
        store_scale_table(&mut out, sizes, &report["store_scale"], &f);
    }
    if report["hot_swap_ms"].is_number() {
        let _ = writeln!(
            out,
            "\nhot swap (file written -> first execution on the new version): {} ms",
            f(&report["hot_swap_ms"])
        );
    }
    out
}

/// The store-at-scale rows: one column per size, then how it grew.
fn store_scale_table(out: &mut String, sizes: &[Value], scale: &Value, f: &dyn Fn(&Value) -> String) {
    use std::fmt::Write;
    let _ = writeln!(out, "\nSQLite store at scale, a `stepwise serve` process on it:");
    for (key, label) in [("finished", "finished executions"), ("waiting", "waiting executions")] {
        let cells: String = sizes.iter().map(|size| format!("{:>14}", size[key].to_string())).collect();
        let _ = writeln!(out, "  {label:<38} {cells}");
    }
    for (key, label) in [
        ("start_ms", "serve: start to /healthz, ms"),
        ("list_ms", "GET /v1/executions first page, ms"),
        ("list_waiting_ms", "  ?status=waiting, ms"),
        ("list_succeeded_ms", "  ?status=succeeded, ms"),
        ("list_failed_ms", "  ?status=failed (none), ms"),
        ("cli_list_ms", "executions list (whole process), ms"),
        ("complete_p50_ms", "complete a waiting execution p50, ms"),
        ("complete_p99_ms", "  p99, ms"),
        ("rss_mb", "server RSS after, MB"),
        ("peak_rss_mb", "server peak RSS, MB"),
        ("bytes_per_execution", "bytes per execution on disk"),
        ("fill_seconds", "filling the store, s"),
    ] {
        let cells: String = sizes.iter().map(|size| format!("{:>14}", f(&size[key]))).collect();
        let _ = writeln!(out, "  {label:<38} {cells}");
    }
    let _ = writeln!(out, "  after a crash with executions in flight:");
    for (key, label) in [
        ("left_running", "  left running by the dead host"),
        ("start_ms", "  serve: start to /healthz, ms"),
        ("taken_over_ms", "  serve: start to all taken over, ms"),
        ("resumed_ms", "  serve: start to none running, ms"),
        ("resumed_per_s", "  taken over and finished per s"),
    ] {
        let cells: String = sizes.iter().map(|size| format!("{:>14}", f(&size["resume"][key]))).collect();
        let _ = writeln!(out, "  {label:<38} {cells}");
    }
    if scale["bytes_per_finished_execution"].is_number() {
        let _ =
            writeln!(out, "  bytes per finished accept-quote execution: {}", f(&scale["bytes_per_finished_execution"]));
    }
    if let Some(growth) = scale["growth"].as_object() {
        let grown: Vec<String> = growth.iter().map(|(key, ratio)| format!("{key} {}x", f(ratio))).collect();
        let _ = writeln!(out, "  growth small -> large: {}", grown.join(", "));
    }
}
