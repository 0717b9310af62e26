//! The store at scale. [`generate`] fills a SQLite store the way a busy
//! server would (`stepwise bench generate-store`): finished accept-quote
//! executions, and executions of the same workflow waiting on an async
//! approval, spread among them, all run by the real engine and written by the
//! real store. [`store_scale`] then starts a real `stepwise serve` process on
//! such a store, at two sizes, and measures what an operator feels: how long
//! the server takes to answer, the first page of listings (over HTTP and
//! from `stepwise executions list`), completing one waiting execution, the
//! bytes each execution takes on disk and the server's memory; then a host
//! crashes with executions in flight on the store ([`abandon`]) and a new
//! server's start and takeover of them is timed.

use super::http::Connection;
use super::measure::{runtime, Host, ACCEPT_QUOTE, QUOTE_INPUT};
use super::stats::Samples;
use super::BenchOptions;
use crate::engine::StartOptions;
use crate::journal::{ExecutionId, ExecutionStatus};
use crate::store::{ExecutionStore, SqliteStore};
use crate::workflow::Workflow;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// accept-quote with an async approval between the payment and the order:
/// an execution rests `waiting` on `approve` until someone completes it.
const APPROVAL: &str = r#"
name = "accept-quote-approval"
description = "accept-quote, with a person approving the payment before the order"

[[steps]]
id = "cart"
plugin = "retrieve-cart"
input = { cart_id = "$.input.cart_id", items = "$.input.items", currency = "$.input.currency" }

[[steps]]
id = "reserve"
plugin = "reserve-inventory"
input = { items = "$.steps.cart.output.items" }

[[steps]]
id = "payment"
plugin = "authorize-payment"
input = { amount = "$.steps.cart.output.total", currency = "$.steps.cart.output.currency" }
after = ["reserve"]

[[steps]]
id = "approve"
plugin = "echo"
async = true
input = { authorization_id = "$.steps.payment.output.authorization_id" }

[[steps]]
id = "order"
plugin = "create-order"
input = { cart_id = "$.steps.cart.output.id", reservation_id = "$.steps.reserve.output.reservation_id", authorization_id = "$.steps.payment.output.authorization_id", total = "$.steps.cart.output.total" }
after = ["approve"]
"#;

/// The plugins the two workflows use (the server loads only these).
const PLUGINS: [&str; 5] = ["retrieve-cart", "reserve-inventory", "authorize-payment", "create-order", "echo"];

/// Executions in flight while a store is filled.
const IN_FLIGHT: usize = 128;

/// How many executions a store holds.
#[derive(Clone, Copy, Debug)]
pub struct Fill {
    /// Finished (`succeeded`) accept-quote executions.
    pub finished: usize,
    /// Executions waiting on their async `approve` step.
    pub waiting: usize,
}

/// A filled store.
pub struct Generated {
    /// The waiting executions, oldest first.
    pub waiting: Vec<ExecutionId>,
    /// Seconds the filling took.
    pub seconds: f64,
    /// The database's size on disk, checkpointed (no write-ahead log left).
    pub bytes: u64,
    /// How many executions it holds.
    pub executions: usize,
}

impl Generated {
    /// Bytes on disk per execution.
    pub fn bytes_per_execution(&self) -> f64 {
        self.bytes as f64 / self.executions.max(1) as f64
    }
}

/// Fills a new SQLite store at `path` (which must not exist) with `fill`:
/// one waiting execution every `(finished + waiting) / waiting` executions,
/// so that waiting ones are spread through time as in a real store.
pub fn generate(host: &Host, path: &Path, fill: Fill, progress: bool) -> Result<Generated> {
    if path.exists() {
        bail!("{} exists: generate-store fills a new store only", path.display());
    }
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty() && !parent.is_dir()) {
        bail!("{}: the directory {} does not exist", path.display(), parent.display());
    }
    let rt = runtime(2)?;
    let store: Arc<dyn ExecutionStore> =
        Arc::new(SqliteStore::open(path).with_context(|| format!("creating the store {}", path.display()))?);
    let engine = host.engine(store);
    let quote = Arc::new(Workflow::from_toml("accept-quote.toml", ACCEPT_QUOTE, host.registry.as_ref())?);
    let approval = Arc::new(Workflow::from_toml("accept-quote-approval.toml", APPROVAL, host.registry.as_ref())?);
    let input: Value = serde_json::from_str(QUOTE_INPUT)?;
    let total = fill.finished + fill.waiting;
    let every = total.checked_div(fill.waiting).unwrap_or(usize::MAX);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut waiting = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..IN_FLIGHT {
            let (engine, quote, approval, input) = (engine.clone(), quote.clone(), approval.clone(), input.clone());
            let next = next.clone();
            // Each task returns the waiting executions it made.
            tasks.spawn(async move {
                let mut waiting = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return Ok::<_, anyhow::Error>(waiting);
                    }
                    // The last of every `every` executions waits (there are at
                    // least `waiting` such slots), until `waiting` of them did.
                    let waits = n % every == every - 1 && n / every < fill.waiting;
                    let workflow = if waits { approval.clone() } else { quote.clone() };
                    let expected = if waits { ExecutionStatus::Waiting } else { ExecutionStatus::Succeeded };
                    let execution = engine.run_to_rest(workflow, input.clone(), StartOptions::default()).await?;
                    if execution.status() != expected {
                        bail!("execution {n} ended {} ({:?})", execution.status().as_str(), execution.error());
                    }
                    if waits {
                        waiting.push(execution.execution_id().clone());
                    }
                    if progress && n.is_multiple_of(100_000) && n > 0 {
                        eprintln!("  {n} of {total} executions ({:.0} s)", started.elapsed().as_secs_f64());
                    }
                }
            });
        }
        let mut waiting = Vec::with_capacity(fill.waiting);
        while let Some(joined) = tasks.join_next().await {
            waiting.extend(joined??);
        }
        engine.shutdown().await;
        Ok::<_, anyhow::Error>(waiting)
    })?;
    let seconds = started.elapsed().as_secs_f64();
    drop(engine);
    drop(rt);
    waiting.sort();
    let connection = rusqlite::Connection::open(path)?;
    connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    drop(connection);
    Ok(Generated { waiting, seconds, bytes: disk_bytes(path), executions: total })
}

/// A process's executions in flight, left as a host that dies leaves them:
/// the runtime and engine that drive them are kept (never shut down) until
/// the process ends.
pub struct Abandoned {
    /// How many executions were started.
    pub started: usize,
    _driving: (tokio::runtime::Runtime, crate::engine::Engine),
}

/// Starts `running` accept-quote executions on the existing SQLite store at
/// `path`, all at once, and returns once every one is recorded (most have
/// not got far): ending the process then without a shutdown (`stepwise
/// bench crash-store`) leaves them `running`, owned by a host that is gone,
/// as a crash in the middle of a burst of work does.
pub fn abandon(host: &Host, path: &Path, running: usize) -> Result<Abandoned> {
    if !path.is_file() {
        bail!("{}: no such store (make one with generate-store)", path.display());
    }
    let rt = runtime(2)?;
    let store: Arc<dyn ExecutionStore> =
        Arc::new(SqliteStore::open(path).with_context(|| format!("opening the store {}", path.display()))?);
    let engine = host.engine(store);
    let quote = Arc::new(Workflow::from_toml("accept-quote.toml", ACCEPT_QUOTE, host.registry.as_ref())?);
    let input: Value = serde_json::from_str(QUOTE_INPUT)?;
    let started = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..running {
            let (engine, quote, input) = (engine.clone(), quote.clone(), input.clone());
            tasks.spawn(async move { engine.start(quote, input, StartOptions::default()).await.map(|_| ()) });
        }
        let mut started = 0;
        while let Some(joined) = tasks.join_next().await {
            joined??;
            started += 1;
        }
        Ok::<_, anyhow::Error>(started)
    })?;
    Ok(Abandoned { started, _driving: (rt, engine) })
}

/// The database file and its write-ahead log, in bytes.
fn disk_bytes(path: &Path) -> u64 {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    [path.to_path_buf(), wal].iter().filter_map(|file| std::fs::metadata(file).ok()).map(|m| m.len()).sum()
}

/// The measurement: a store at each size, a server on it.
pub(super) fn store_scale(host: &Host, options: &BenchOptions, scratch: &Path) -> Result<Value> {
    let fills = if options.quick {
        vec![Fill { finished: 300, waiting: 30 }]
    } else {
        vec![Fill { finished: 10_000, waiting: 10_000 }, Fill { finished: 1_000_000, waiting: 10_000 }]
    };
    let served_dir = scratch.join("store-scale");
    prepare_server_directories(&options.plugins, &served_dir)?;
    let mut sizes = Vec::new();
    for fill in fills {
        let path = scratch.join(format!("scale-{}.db", fill.finished));
        eprintln!("filling a store with {} finished and {} waiting executions", fill.finished, fill.waiting);
        let generated = generate(host, &path, fill, true)?;
        let mut figures = serve_and_measure(&path, &served_dir, &generated, options.quick)?;
        let crashed = if options.quick { 30 } else { CRASHED_RUNNING };
        figures["resume"] = crash_and_resume(&path, &served_dir, crashed)?;
        figures["finished"] = json!(fill.finished);
        figures["waiting"] = json!(fill.waiting);
        figures["fill_seconds"] = json!(generated.seconds);
        figures["bytes"] = json!(generated.bytes);
        figures["bytes_per_execution"] = json!(generated.bytes_per_execution());
        sizes.push(figures);
        let _ = std::fs::remove_file(&path);
    }
    let mut report = json!({ "sizes": sizes });
    if let [small, large] = &sizes[..] {
        // The same waiting executions in both: what the extra finished ones cost.
        let extra = (large["finished"].as_f64().unwrap_or(0.0) - small["finished"].as_f64().unwrap_or(0.0)).max(1.0);
        let bytes = large["bytes"].as_f64().unwrap_or(0.0) - small["bytes"].as_f64().unwrap_or(0.0);
        report["bytes_per_finished_execution"] = json!(bytes / extra);
        let mut growth = serde_json::Map::new();
        for key in GROWTH {
            if let (Some(a), Some(b)) = (small[key].as_f64(), large[key].as_f64()) {
                growth.insert(key.to_string(), json!(b / a.max(1e-9)));
            }
        }
        report["growth"] = Value::Object(growth);
    }
    Ok(report)
}

/// Executions a host dies with, for a server to resume.
const CRASHED_RUNNING: usize = 10_000;

/// A host crashes with `running` executions in flight on the store
/// (`stepwise bench crash-store`, a child process that ends without a
/// shutdown); then a server starts on it. Measured: how many it left
/// `running`, the server's start to `/healthz`, and its start to the moment
/// no execution is `running` any more (every one taken over and finished).
fn crash_and_resume(store: &Path, dir: &Path, running: usize) -> Result<Value> {
    let crash = output_within(
        Command::new(std::env::current_exe()?)
            .args(["bench", "crash-store"])
            .arg(store)
            .args(["--running", &running.to_string(), "--plugins"])
            .arg(dir.join("plugins")),
        "stepwise bench crash-store",
    )?;
    if !crash.status.success() {
        bail!("stepwise bench crash-store failed: {}", String::from_utf8_lossy(&crash.stderr));
    }
    let count = rusqlite::Connection::open(store)?;
    let still_running = || -> Result<u64> {
        Ok(count.query_row("SELECT count(*) FROM executions WHERE status = 'running'", [], |row| row.get(0))?)
    };
    let left = still_running()?;
    // What the dead host left is still its own until a live host claims it.
    let dead: Vec<String> = count
        .prepare("SELECT DISTINCT owner FROM executions WHERE status = 'running' AND owner IS NOT NULL")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let still_the_dead_hosts = || -> Result<u64> {
        let mut owned = 0;
        for owner in &dead {
            owned += count.query_row::<u64, _, _>(
                "SELECT count(*) FROM executions WHERE status = 'running' AND owner = ?1",
                [owner],
                |row| row.get(0),
            )?;
        }
        Ok(owned)
    };
    let (served, start) = start_server(store, dir)?;
    let listening = Instant::now();
    let mut taken_over = None;
    while still_running()? > 0 {
        if taken_over.is_none() && still_the_dead_hosts()? == 0 {
            taken_over = Some(start + listening.elapsed());
        }
        if listening.elapsed() > PATIENCE {
            bail!("the server did not finish the {left} executions left running within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let resumed = start + listening.elapsed();
    drop(served);
    Ok(json!({
        "left_running": left,
        "start_ms": start.as_secs_f64() * 1e3,
        "taken_over_ms": taken_over.unwrap_or(resumed).as_secs_f64() * 1e3,
        "resumed_ms": resumed.as_secs_f64() * 1e3,
        "resumed_per_s": left as f64 / resumed.as_secs_f64().max(1e-9),
    }))
}

/// The figures whose growth from the small store to the large one is reported.
const GROWTH: [&str; 9] = [
    "start_ms",
    "list_ms",
    "list_waiting_ms",
    "list_succeeded_ms",
    "list_failed_ms",
    "cli_list_ms",
    "complete_p50_ms",
    "rss_mb",
    "peak_rss_mb",
];

/// A plugin directory with the plugins the workflows use (copied, with
/// their manifests), a workflow directory with both workflows, no tenants.
fn prepare_server_directories(plugins: &Path, dir: &Path) -> Result<()> {
    for sub in ["plugins", "workflows", "tenants"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    for plugin in PLUGINS {
        for ext in ["wasm", "toml"] {
            let from = plugins.join(format!("{plugin}.{ext}"));
            if ext == "toml" && !from.exists() {
                continue;
            }
            std::fs::copy(&from, dir.join("plugins").join(format!("{plugin}.{ext}")))
                .with_context(|| format!("copying {} (build it: scripts/build-guests.sh)", from.display()))?;
        }
    }
    std::fs::write(dir.join("workflows/accept-quote.toml"), ACCEPT_QUOTE)?;
    std::fs::write(dir.join("workflows/accept-quote-approval.toml"), APPROVAL)?;
    Ok(())
}

/// A `stepwise serve` process: stopped with SIGTERM when dropped (it then
/// shuts down cleanly, so that what runs next on its store finds no log
/// to recover), killed if it does not exit within seconds.
struct Served {
    child: Child,
    address: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TOKEN: &str = "bench-store-scale-token-0123456789";

/// How long the server may take to listen, or to answer one request.
const PATIENCE: Duration = Duration::from_secs(120);

/// Starts `stepwise serve` on the store and waits until it answers `/healthz`.
fn start_server(store: &Path, dir: &Path) -> Result<(Served, Duration)> {
    let began = Instant::now();
    let child = Command::new(std::env::current_exe()?)
        .args(["serve", "--addr", "127.0.0.1:0", "--token", TOKEN])
        .arg("--plugins")
        .arg(dir.join("plugins"))
        .arg("--workflows")
        .arg(dir.join("workflows"))
        .arg("--tenants")
        .arg(dir.join("tenants"))
        .arg("--store")
        .arg(format!("sqlite://{}", store.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting stepwise serve")?;
    let mut served = Served { child, address: String::new() };
    let stderr = served.child.stderr.take().context("the server's stderr")?;
    // Its output is read on a thread (to the end, so that it never blocks on
    // a full pipe); the address comes back through a channel, with a limit.
    let (found, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(address) = line.strip_prefix("stepwise serving on http://") {
                if let Some(found) = found.take() {
                    let _ = found.send(address.to_string());
                }
            }
        }
    });
    served.address = match address.recv_timeout(PATIENCE) {
        Ok(address) => address,
        Err(_) => bail!("stepwise serve did not listen within {PATIENCE:?} ({:?})", served.child.try_wait()?),
    };
    let rt = runtime(1)?;
    rt.block_on(async {
        loop {
            if let Ok(mut connection) = Connection::open(&served.address).await {
                if connection.get("/healthz", None).await.is_ok_and(|(status, _)| status == 200) {
                    return Ok::<_, anyhow::Error>(());
                }
            }
            if began.elapsed() > PATIENCE {
                bail!("stepwise serve did not answer /healthz within {PATIENCE:?}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })?;
    Ok((served, began.elapsed()))
}

/// The server's resident memory now and at its peak, in MB (`/proc`).
fn memory_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn serve_and_measure(store: &Path, dir: &Path, generated: &Generated, quick: bool) -> Result<Value> {
    let (served, start) = start_server(store, dir)?;
    let (rss_started, _) = memory_mb(served.child.id());
    let rt = runtime(1)?;
    let requests = if quick { 5 } else { 50 };
    let mut figures = rt.block_on(async {
        let mut connection = Connection::open(&served.address).await?;
        let mut figures = json!({
            "start_ms": start.as_secs_f64() * 1e3,
            "rss_started_mb": rss_started,
        });
        for (key, query) in [
            ("list_ms", ""),
            ("list_waiting_ms", "&status=waiting"),
            ("list_succeeded_ms", "&status=succeeded"),
            ("list_failed_ms", "&status=failed"),
        ] {
            let path = format!("/v1/executions?limit=50{query}");
            let mut latencies = Vec::new();
            for _ in 0..requests {
                let began = Instant::now();
                let (status, body) = connection.get(&path, Some(TOKEN)).await?;
                latencies.push(began.elapsed());
                if status != 200 {
                    bail!("GET {path} answered {status}: {}", String::from_utf8_lossy(&body));
                }
            }
            figures[key] = json!(Samples::from_durations(&latencies).median() / 1e3);
        }
        let completions = generated.waiting.len().min(if quick { 10 } else { 500 });
        let mut latencies = Vec::new();
        for id in generated.waiting.iter().take(completions) {
            let path = format!("/v1/executions/{id}/steps/approve/success");
            let began = Instant::now();
            let (status, body) = connection.post(&path, TOKEN, br#"{"approved": true}"#).await?;
            latencies.push(began.elapsed());
            let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if status != 200 || answer["status"] != "succeeded" {
                bail!("completing {id} answered {status}: {}", String::from_utf8_lossy(&body));
            }
        }
        let latencies = Samples::from_durations(&latencies);
        figures["completions"] = json!(latencies.len());
        figures["complete_p50_ms"] = json!(latencies.median() / 1e3);
        figures["complete_p99_ms"] = json!(latencies.p99() / 1e3);
        Ok::<_, anyhow::Error>(figures)
    })?;
    let (rss, peak) = memory_mb(served.child.id());
    figures["rss_mb"] = json!(rss);
    figures["peak_rss_mb"] = json!(peak);
    drop(served);
    figures["cli_list_ms"] = json!(cli_list_ms(store, if quick { 1 } else { 5 })?);
    Ok(figures)
}

/// `stepwise executions list --status waiting` against the store, wall
/// time of the whole process (its start included), median of `runs`.
fn cli_list_ms(store: &Path, runs: usize) -> Result<f64> {
    let mut times = Vec::new();
    for _ in 0..runs {
        let began = Instant::now();
        let output = output_within(
            Command::new(std::env::current_exe()?)
                .args(["executions", "list", "--status", "waiting", "--limit", "50", "--json", "--store"])
                .arg(format!("sqlite://{}", store.display())),
            "stepwise executions list",
        )?;
        times.push(began.elapsed());
        if !output.status.success() {
            bail!("stepwise executions list failed: {}", String::from_utf8_lossy(&output.stderr));
        }
    }
    Ok(Samples::from_durations(&times).median() / 1e3)
}

/// Runs `command` to its end and returns its output; killed, and an error
/// naming `what`, if it does not end within [`PATIENCE`].
fn output_within(command: &mut Command, what: &str) -> Result<std::process::Output> {
    let child =
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().with_context(|| format!("starting {what}"))?;
    let pid = child.id();
    let (done, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || drop(done.send(child.wait_with_output())));
    match output.recv_timeout(PATIENCE) {
        Ok(output) => Ok(output?),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            bail!("{what} did not end within {PATIENCE:?}");
        }
    }
}
