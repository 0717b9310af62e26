//! The multi-host measurement: accept-quote on one PostgreSQL shared by 1, 2
//! and 3 hosts, beside SQLite in the same run.
//!
//! Each host is an engine with its own connection pool, `LISTEN` connection
//! and host identity, as a `stepwise serve` process has; they run in this
//! process, on the same two worker threads, so on a small machine they share
//! the CPUs as separate processes would. Besides executions per second and
//! latency it reports what each execution costs: CPU-seconds of the hosts
//! (this process) and of the database server (its `postgres` processes),
//! and the database transactions per execution and per recorded event (with
//! autocommit every statement is a transaction, so these are also the round
//! trips, read from `pg_stat_database`). The inbox round trip is measured
//! apart: a cancel sent to one host for an execution another host drives.

use super::measure::{saga_loop, Host};
use super::stats::{median_of, Samples};
use super::BenchOptions;
use crate::engine::{Engine, StartOptions};
use crate::journal::{ExecutionId, ExecutionStatus};
use crate::store::{ExecutionStore, PostgresStore, SqliteStore};
use crate::workflow::Workflow;
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ACCEPT_QUOTE: &str = include_str!("../../../guest-examples/workflows/accept-quote.toml");
const QUOTE_INPUT: &str = include_str!("../../../guest-examples/workflows/accept-quote.input.json");
/// A step that runs long enough to be cancelled while it runs.
const NAP: &str = "name = \"nap\"\n[[steps]]\nid = \"nap\"\nplugin = \"echo\"\ninput = { sleep_ms = 1500 }\n";
/// Executions in flight, spread round-robin over the hosts.
const IN_FLIGHT: usize = 64;
/// The database each run uses (dropped and created again).
const DATABASE: &str = "stepwise_bench_hosts";

/// CPU time used so far by the processes `matches` selects, from `/proc`.
fn cpu_seconds(matches: impl Fn(u32, &str) -> bool) -> f64 {
    // utime and stime, in clock ticks (100 per second on Linux).
    const TICKS_PER_SECOND: f64 = 100.0;
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    let mut ticks = 0u64;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        if !matches(pid, &stat[open + 1..close]) {
            continue;
        }
        // Fields after the command: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        ticks += field(14) + field(15);
    }
    ticks as f64 / TICKS_PER_SECOND
}

fn host_cpu() -> f64 {
    let me = std::process::id();
    cpu_seconds(|pid, _| pid == me)
}

fn database_cpu() -> f64 {
    cpu_seconds(|_, command| command == "postgres")
}

/// One row of one query, on a connection of its own to `url`.
async fn query_one(
    url: &str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<tokio_postgres::Row> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    let row = client.query_one(sql, params).await?;
    drop(client);
    let _ = driver.await;
    Ok(row)
}

/// Committed transactions of `database` so far, as the statistics say.
async fn commits(admin: &str, database: &str) -> Result<i64> {
    let sql = "SELECT coalesce(sum(xact_commit), 0)::bigint FROM pg_stat_database WHERE datname = $1";
    Ok(query_one(admin, sql, &[&database]).await?.get(0))
}

/// One timed run on `hosts` engines sharing a fresh PostgreSQL database (or
/// on SQLite when `hosts` is 0).
struct RunFigures {
    rate: f64,
    latencies: Samples,
    host_cpu: f64,
    database_cpu: f64,
    executions: i64,
    events: i64,
    transactions: i64,
}

fn timed_run(
    host: &Host,
    rt: &tokio::runtime::Runtime,
    url: &str,
    hosts: usize,
    scratch: &Path,
    duration: Duration,
) -> Result<RunFigures> {
    let workflow = Arc::new(Workflow::from_toml("accept-quote.toml", ACCEPT_QUOTE, host.registry.as_ref())?);
    let input: Value = serde_json::from_str(QUOTE_INPUT)?;
    let database = if hosts == 0 { None } else { Some(rt.block_on(PostgresStore::create_database(url, DATABASE))?) };
    let stores: Vec<Arc<dyn ExecutionStore>> = match &database {
        None => vec![Arc::new(SqliteStore::open(&scratch.join(format!("hosts-{}.db", std::process::id())))?)],
        Some(database) => (0..hosts)
            .map(|_| Ok(Arc::new(rt.block_on(PostgresStore::open(database))?) as Arc<dyn ExecutionStore>))
            .collect::<Result<_>>()?,
    };
    let engines: Vec<Engine> = stores.iter().map(|store| host.engine(store.clone())).collect();
    let (host_before, database_before) = (host_cpu(), database_cpu());
    let (rate, latencies) = saga_loop(rt, &engines, &workflow, &input, IN_FLIGHT, duration)?;
    let (host_used, database_used) = (host_cpu() - host_before, database_cpu() - database_before);
    let mut figures = RunFigures {
        rate,
        latencies,
        host_cpu: host_used,
        database_cpu: database_used,
        executions: 0,
        events: 0,
        transactions: 0,
    };
    if let Some(database) = database {
        let counts = "SELECT (SELECT count(*) FROM executions), (SELECT count(*) FROM events)";
        let row = rt.block_on(query_one(&database, counts, &[]))?;
        (figures.executions, figures.events) = (row.get(0), row.get(1));
        // Closing the hosts' connections makes their backends report their statistics.
        for engine in &engines {
            rt.block_on(engine.shutdown());
        }
        drop(engines);
        drop(stores);
        std::thread::sleep(Duration::from_millis(700));
        figures.transactions = rt.block_on(commits(url, DATABASE))?;
    }
    Ok(figures)
}

/// The measurement: SQLite, then PostgreSQL with 1, 2 and 3 hosts.
pub(super) fn hosts(host: &Host, options: &BenchOptions, scratch: &Path, url: &str) -> Result<Value> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    // Reachable before anything is measured (the server's own database is not migrated).
    rt.block_on(query_one(url, "SELECT 1", &[])).with_context(|| format!("connecting to PostgreSQL at `{url}`"))?;
    let mut figures = Map::new();
    for (label, hosts) in [("sqlite", 0usize), ("postgres_1", 1), ("postgres_2", 2), ("postgres_3", 3)] {
        let mut runs = Vec::new();
        for repetition in 0..=options.repetitions {
            let duration = if repetition == 0 { options.duration() / 4 } else { options.duration() };
            let run = timed_run(host, &rt, url, hosts, scratch, duration)?;
            if repetition > 0 {
                runs.push(run);
            }
        }
        let median = |f: &dyn Fn(&RunFigures) -> f64| median_of(&runs.iter().map(f).collect::<Vec<_>>());
        let mut row = json!({
            "hosts": hosts.max(1),
            "exec_per_s": median(&|r| r.rate),
            "p50_us": median(&|r| r.latencies.median()),
            "p99_us": median(&|r| r.latencies.p99()),
            "exec_per_host_cpu_s": median(&|r| r.latencies.len() as f64 / r.host_cpu.max(0.01)),
        });
        if hosts > 0 {
            row["exec_per_database_cpu_s"] = json!(median(&|r| r.latencies.len() as f64 / r.database_cpu.max(0.01)));
            row["transactions_per_execution"] = json!(median(&|r| r.transactions as f64 / r.executions.max(1) as f64));
            row["transactions_per_event"] = json!(median(&|r| r.transactions as f64 / r.events.max(1) as f64));
            row["events_per_execution"] = json!(median(&|r| r.events as f64 / r.executions.max(1) as f64));
        }
        figures.insert(label.to_string(), row);
    }
    figures.insert("inbox_round_trip".into(), rt.block_on(inbox_round_trip(host, url, options))?);
    figures.insert("in_flight".into(), json!(IN_FLIGHT));
    Ok(Value::Object(figures))
}

/// Cancels sent to host B for executions host A drives (a step running on
/// A): B posts to the inbox, A is woken by `NOTIFY`, decides and answers, B
/// is woken by the answer. Milliseconds from the cancel to its answer.
async fn inbox_round_trip(host: &Host, url: &str, options: &BenchOptions) -> Result<Value> {
    let database = PostgresStore::create_database(url, DATABASE).await?;
    let a = host.engine(Arc::new(PostgresStore::open(&database).await?));
    let b = host.engine(Arc::new(PostgresStore::open(&database).await?));
    let workflow = Arc::new(Workflow::from_toml("nap.toml", NAP, host.registry.as_ref())?);
    let count = if options.quick { 3 } else { 30 };
    let mut started = Vec::new();
    for _ in 0..count {
        let (id, settling) = a.start(workflow.clone(), json!({}), StartOptions::default()).await?;
        started.push((id, settling));
    }
    for (id, _) in &started {
        running(&a, id).await?;
    }
    let mut latencies = Vec::new();
    for (id, _) in &started {
        let began = Instant::now();
        b.cancel(id, "bench").await?;
        latencies.push(began.elapsed());
    }
    for (id, settling) in started {
        let Some(settling) = settling else { continue };
        let execution = settling.wait().await?;
        if execution.status != ExecutionStatus::Compensated {
            bail!("{id} ended {} after its cancel", execution.status.as_str());
        }
    }
    a.shutdown().await;
    b.shutdown().await;
    let samples = Samples::from_durations(&latencies);
    Ok(json!({"cancels": count, "p50_ms": samples.median() / 1000.0, "p99_ms": samples.p99() / 1000.0}))
}

/// Waits until the execution's step runs.
async fn running(engine: &Engine, id: &ExecutionId) -> Result<()> {
    for _ in 0..500 {
        let view = engine.show(id).await?;
        if view.steps.iter().any(|step| step.run.status == crate::engine::StepStatus::Running) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("{id}: its step never ran")
}
