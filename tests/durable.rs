//! Durable executions on the SQLite store: crash recovery (SIGKILL of real
//! processes), resume, idempotent runs, async steps completed from another
//! process, step and workflow timeouts, and broken database files.

use rusqlite::Connection;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use stepwise_test_support::audit::{audit_side_effects, ledger};
use stepwise_test_support::*;

/// A fresh directory for one test's database and workflow files.
fn scratch(label: &str) -> PathBuf {
    scratch_dir(&format!("durable-{label}"))
}

fn store_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("stepwise.db").display())
}

/// `stepwise <args> --store <dir's db> --plugins <built plugins>`.
fn cli(dir: &Path, args: &[&str]) -> Output {
    let store = store_url(dir);
    let plugins = plugins_dir().display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--store", &store, "--plugins", &plugins]);
    stepwise(&all)
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}); stderr: {}", String::from_utf8_lossy(&output.stderr)))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

const APPROVAL: &str = r#"
name = "approval"
[[steps]]
id = "reserve"
plugin = "reserve-inventory"
input = { items = [{ sku = "A", quantity = 2 }] }
[[steps]]
id = "approve"
plugin = "echo"
async = true
timeout_ms = 60000
input = { ask = "manager", reservation = "$.steps.reserve.output.reservation_id" }
[[steps]]
id = "notify"
plugin = "echo"
input = { approved_by = "$.steps.approve.output.approved_by" }
"#;

#[test]
fn an_async_step_is_completed_from_a_second_process() {
    let dir = scratch("async-complete");
    let workflow = write(&dir, "approval.toml", APPROVAL);
    let started = cli(&dir, &["run", &workflow]);
    assert_eq!(started.status.code(), Some(1), "waiting is not success");
    let execution = json_of(&started);
    assert_eq!(execution["status"], "waiting", "{execution:#}");
    assert_eq!(step(&execution, "approve")["status"], "waiting");
    assert_eq!(step(&execution, "notify")["status"], "pending");
    let id = execution["execution_id"].as_str().unwrap();

    let completed = cli(&dir, &["complete", id, "approve", "--output", r#"{"approved_by": "ana"}"#]);
    assert_eq!(completed.status.code(), Some(0), "{}", String::from_utf8_lossy(&completed.stderr));
    let execution = json_of(&completed);
    assert_eq!(execution["status"], "succeeded");
    assert_eq!(step(&execution, "notify")["output"]["approved_by"], "ana");

    // Completing it again is refused with a clear error.
    let again = cli(&dir, &["complete", id, "approve", "--output", "{}"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is not waiting for completion (its status is `succeeded`)")
    );
}

#[test]
fn an_async_step_failed_from_outside_rolls_the_execution_back() {
    let dir = scratch("async-fail");
    let workflow = write(&dir, "approval.toml", APPROVAL);
    let execution = json_of(&cli(&dir, &["run", &workflow]));
    let id = execution["execution_id"].as_str().unwrap();
    let failed = cli(&dir, &["fail", id, "approve", "--error", "rejected by the manager"]);
    let execution = json_of(&failed);
    assert_eq!(execution["status"], "compensated", "{execution:#}");
    assert_eq!(execution["error"]["message"], "rejected by the manager");
    assert_eq!(step(&execution, "reserve")["status"], "compensated");
}

#[test]
fn an_async_step_that_is_not_completed_in_time_times_out_and_compensates() {
    let dir = scratch("async-timeout");
    let workflow = write(&dir, "approval.toml", &APPROVAL.replace("timeout_ms = 60000", "timeout_ms = 300"));
    let execution = json_of(&cli(&dir, &["run", &workflow]));
    assert_eq!(execution["status"], "waiting");
    let id = execution["execution_id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(400));
    // The deadline was stored: a later process fires it.
    let resumed = cli(&dir, &["resume"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", String::from_utf8_lossy(&resumed.stderr));
    let execution = json_of(&cli(&dir, &["executions", "show", &id, "--json"]));
    assert_eq!(execution["status"], "compensated", "{execution:#}");
    assert_eq!(step(&execution, "approve")["error"]["kind"], "timed_out");
    assert_eq!(step(&execution, "reserve")["status"], "compensated");
}

#[test]
fn a_workflow_timeout_rolls_back_after_running_steps_settle() {
    let dir = scratch("workflow-timeout");
    let workflow = write(
        &dir,
        "slow.toml",
        r#"
        name = "slow"
        timeout_ms = 200
        [[steps]]
        id = "first"
        plugin = "echo"
        input = { n = 1 }
        [[steps]]
        id = "long"
        plugin = "echo"
        input = { sleep_ms = 600 }
        after = ["first"]
        [[steps]]
        id = "never"
        plugin = "echo"
        after = ["long"]
        "#,
    );
    let started = Instant::now();
    let execution = json_of(&cli(&dir, &["run", &workflow]));
    assert_eq!(execution["status"], "compensated", "{execution:#}");
    assert_eq!(execution["error"]["kind"], "timed_out");
    assert!(execution["error"]["step"].is_null());
    assert_eq!(events(&execution, "execution_timed_out").len(), 1);
    assert_eq!(step(&execution, "never")["status"], "pending");
    for id in ["first", "long"] {
        assert_eq!(step(&execution, id)["status"], "compensated", "{id}");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn the_same_idempotency_key_across_processes_returns_the_first_execution() {
    let dir = scratch("idempotency");
    let args = [
        "run",
        "guest-examples/workflows/accept-quote.toml",
        "--input-file",
        "guest-examples/workflows/accept-quote.input.json",
        "--idempotency-key",
        "quote-7",
    ];
    let first = json_of(&cli(&dir, &args));
    let second = json_of(&cli(&dir, &args));
    assert_eq!(first["execution_id"], second["execution_id"]);
    let listed = json_of(&cli(&dir, &["executions", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let calls = ledger(&dir.join("stepwise.db"));
    assert_eq!(calls.iter().filter(|c| c.method == "reserve").count(), 1, "the second run applied nothing");
}

#[test]
fn executions_are_listed_filtered_shown_and_purged() {
    let dir = scratch("inspect");
    let quote = ["--input-file", "guest-examples/workflows/accept-quote.input.json"];
    cli(&dir, &[&["run", "guest-examples/workflows/accept-quote.toml"][..], &quote[..]].concat());
    cli(&dir, &[&["run", "guest-examples/workflows/accept-quote-declined.toml"][..], &quote[..]].concat());
    cli(&dir, &[&["run", "guest-examples/workflows/accept-quote-declined.toml"][..], &quote[..]].concat());
    // Each definition is stored once, however many executions run it.
    let definitions = || -> i64 {
        let db = Connection::open(dir.join("stepwise.db")).unwrap();
        db.query_row("SELECT COUNT(*) FROM definitions", [], |row| row.get(0)).unwrap()
    };
    assert_eq!(definitions(), 2);
    let compensated = json_of(&cli(&dir, &["executions", "list", "--status", "compensated", "--json"]));
    assert_eq!(compensated.as_array().unwrap().len(), 2);
    assert_eq!(compensated[0]["workflow"], "accept-quote-declined");
    let by_workflow = json_of(&cli(&dir, &["executions", "list", "--workflow", "accept-quote", "--json"]));
    assert_eq!(by_workflow.as_array().unwrap().len(), 1);
    let table = String::from_utf8(cli(&dir, &["executions", "list"]).stdout).unwrap();
    assert!(table.contains("accept-quote-declined") && table.contains("compensated"), "{table}");

    let id = compensated[0]["execution_id"].as_str().unwrap();
    let view = String::from_utf8(cli(&dir, &["executions", "show", id]).stdout).unwrap();
    assert!(view.contains("status compensated") && view.contains("order rejected: quote expired"), "{view}");
    assert!(view.contains("compensation_started payment"), "{view}");
    assert!(view.contains("COST") && view.contains("cost: ") && view.contains("fuel "), "costs are shown: {view}");

    let bad = cli(&dir, &["executions", "list", "--status", "exploded"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown status `exploded`"));

    // Beside them: a failed execution (its compensation kept failing) and a
    // waiting one (an async step): retention keeps both.
    let failing = "name = \"stuck\"\nretry = { max_attempts = 2, initial_backoff_ms = 1 }\n[[steps]]\nid = \"hold\"\nplugin = \"compensate-fails\"\ninput = { compensation_error_kind = \"retryable\" }\n[[steps]]\nid = \"boom\"\nplugin = \"fail\"\nafter = [\"hold\"]\n";
    let waiting = "name = \"approval\"\n[[steps]]\nid = \"ask\"\nplugin = \"echo\"\nasync = true\n";
    for (file, text, status) in [("stuck.toml", failing, "failed"), ("approval.toml", waiting, "waiting")] {
        std::fs::write(dir.join(file), text).unwrap();
        let run = json_of(&cli(&dir, &["run", dir.join(file).to_str().unwrap()]));
        assert_eq!(run["status"], status, "{run:#}");
    }
    let kept = cli(&dir, &["executions", "purge", "--older-than", "1h"]);
    assert!(String::from_utf8_lossy(&kept.stdout).contains("purged nothing"), "{kept:?}");
    std::thread::sleep(Duration::from_millis(20));
    let purged = json_of(&cli(&dir, &["executions", "purge", "--older-than", "10ms", "--json"]));
    assert_eq!(purged["purged"], json!({"succeeded": 1, "compensated": 2}), "failed kept, waiting never: {purged}");
    let left = json_of(&cli(&dir, &["executions", "list", "--json"]));
    let mut statuses: Vec<&str> = left.as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, ["failed", "waiting"]);
    let purged = cli(&dir, &["executions", "purge", "--older-than", "10ms", "--include-failed"]);
    assert!(String::from_utf8_lossy(&purged.stdout).contains("purged 1 failed"), "{purged:?}");
    let left = json_of(&cli(&dir, &["executions", "list", "--json"]));
    assert_eq!(left.as_array().unwrap().len(), 1, "an unfinished execution is never purged: {left}");
    assert_eq!(left[0]["status"], "waiting");
    assert_eq!(definitions(), 1, "definitions no execution uses are purged too");
}

#[test]
fn a_corrupted_database_file_gives_a_clear_error() {
    let dir = scratch("corrupt");
    std::fs::write(dir.join("stepwise.db"), vec![0x42u8; 8192]).unwrap();
    let output = cli(&dir, &["executions", "list"]);
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("stepwise.db") && message.contains("not a database"), "{message}");
    assert!(!message.contains("panicked"), "{message}");
}

#[test]
fn a_locked_database_gives_a_clear_error() {
    let dir = scratch("locked");
    cli(&dir, &["executions", "list"]); // create it
    let holder = Connection::open(dir.join("stepwise.db")).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE; INSERT INTO kv VALUES ('x', 'y', 'z');").unwrap();
    let output = cli(&dir, &["run", "guest-examples/workflows/flaky.toml"]);
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("stepwise.db") && message.contains("locked"), "{message}");
    drop(holder);
}

fn kill_workflows(dir: &Path) -> [String; 2] {
    let paced = |name: &str, reject: &str| {
        format!(
            r#"
            name = "{name}"
            [[steps]]
            id = "cart"
            plugin = "retrieve-cart"
            input = {{ cart_id = "$.input.cart_id" }}
            [[steps]]
            id = "pause-1"
            plugin = "echo"
            input = {{ sleep_ms = 80 }}
            after = ["cart"]
            [[steps]]
            id = "reserve"
            plugin = "reserve-inventory"
            input = {{ items = "$.steps.cart.output.items" }}
            after = ["pause-1"]
            [[steps]]
            id = "pause-2"
            plugin = "echo"
            input = {{ sleep_ms = 80 }}
            after = ["reserve"]
            [[steps]]
            id = "payment"
            plugin = "authorize-payment"
            input = {{ amount = "$.steps.cart.output.total", currency = "EUR" }}
            after = ["pause-2"]
            [[steps]]
            id = "pause-3"
            plugin = "echo"
            input = {{ sleep_ms = 80 }}
            after = ["payment"]
            [[steps]]
            id = "order"
            plugin = "create-order"
            input = {{ cart_id = "$.steps.cart.output.id", reservation_id = "$.steps.reserve.output.reservation_id", authorization_id = "$.steps.payment.output.authorization_id", total = "$.steps.cart.output.total"{reject} }}
            after = ["pause-3"]
            "#
        )
    };
    [
        write(dir, "crash-ok.toml", &paced("crash-ok", "")),
        write(dir, "crash-declined.toml", &paced("crash-declined", ", reject_reason = \"declined\"")),
    ]
}

/// Kills `stepwise run` with SIGKILL at pseudo-random points, 50 times,
/// restarting each time; then checks that every execution ended, that no
/// side effect was applied again after its completion was recorded, and that
/// every rolled-back side effect was undone exactly once.
#[test]
fn sigkill_at_random_points_never_applies_a_recorded_side_effect_twice() {
    let runs: u64 = std::env::var("STEPWISE_CRASH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let dir = scratch("crash");
    let workflows = kill_workflows(&dir);
    let killed = kill_at_random_points(&dir, &workflows, runs);
    let interrupted = unfinished(&dir);
    let resumed = cli(&dir, &["resume"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", String::from_utf8_lossy(&resumed.stderr));

    let executions = json_of(&cli(&dir, &["executions", "list", "--limit", "1000", "--json"]));
    let executions = executions.as_array().unwrap();
    assert!(!executions.is_empty());
    for execution in executions {
        let status = execution["status"].as_str().unwrap();
        let expected = if execution["workflow"] == "crash-ok" { "succeeded" } else { "compensated" };
        assert_eq!(status, expected, "{execution}");
    }

    let (calls, checked) =
        audit_side_effects(&dir.join("stepwise.db"), executions, &|execution| execution["status"] == "compensated");
    eprintln!(
        "crash test: {runs} runs, {killed} killed, {interrupted} left unfinished, {} executions, {} service calls, {checked} checked against recorded completions",
        executions.len(),
        calls
    );
    // The store, not the clock, says whether the kills struck mid-run.
    assert!(interrupted > 0, "no run was interrupted mid-way ({killed} of {runs} killed)");
}

/// How many executions of the store are unfinished (left mid-run by a kill).
fn unfinished(dir: &Path) -> u64 {
    let db = Connection::open(dir.join("stepwise.db")).unwrap();
    db.query_row("SELECT COUNT(*) FROM executions WHERE status IN ('running', 'waiting', 'compensating')", [], |row| {
        row.get(0)
    })
    .unwrap()
}

/// Runs `stepwise run` `runs` times, alternating `workflows`, each killed
/// with SIGKILL after a pseudo-random delay unless it ended first; returns
/// how many were killed mid-run.
fn kill_at_random_points(dir: &Path, workflows: &[String], runs: u64) -> u64 {
    let store = store_url(dir);
    let plugins = plugins_dir().display().to_string();
    let mut seed: u64 = 0x5eed_1234;
    let mut killed = 0;
    for run in 0..runs {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(10 + (seed >> 33) % 300);
        let workflow = &workflows[(run % workflows.len() as u64) as usize];
        let mut child = Command::new(stepwise_bin())
            .args(["run", workflow, "--store", &store, "--plugins", &plugins])
            .args(["--input", &format!(r#"{{"cart_id": "cart-{run}"}}"#)])
            .current_dir(repo_root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
    }
    killed
}

/// Kills `stepwise run` in the middle of a fan-out whose elements are child
/// executions that reserve stock; after `resume`, every element's side effect
/// was applied once, and undone once exactly when the parent rolled back.
#[test]
fn sigkill_in_the_middle_of_a_fan_out_never_applies_an_elements_side_effect_twice() {
    let runs: u64 = std::env::var("STEPWISE_CRASH_RUNS").ok().and_then(|v| v.parse::<u64>().ok()).map_or(16, |n| n / 3);
    let dir = scratch("crash-fan-out");
    write(
        &dir,
        "paced-reserve.toml",
        r#"
        name = "paced-reserve"
        [[steps]]
        id = "pause"
        plugin = "echo"
        input = { sleep_ms = 100 }
        [[steps]]
        id = "reserve"
        plugin = "reserve-inventory"
        input = { items = ["$.input.item"] }
        after = ["pause"]
        "#,
    );
    let fan_out = |name: &str, reject: &str| {
        format!(
            r#"
            name = "{name}"
            [[steps]]
            id = "cart"
            plugin = "retrieve-cart"
            input = {{ cart_id = "$.input.cart_id" }}
            [[steps]]
            id = "lines"
            workflow = "paced-reserve"
            for_each = "$.steps.cart.output.items"
            max_concurrency = 2
            input = {{ item = "$.item" }}
            [[steps]]
            id = "order"
            plugin = "create-order"
            input = {{ cart_id = "$.steps.cart.output.id", reservation_id = "r", authorization_id = "a", total = 1{reject} }}
            after = ["lines"]
            "#
        )
    };
    let workflows = [
        write(&dir, "fan-ok.toml", &fan_out("fan-ok", "")),
        write(&dir, "fan-declined.toml", &fan_out("fan-declined", ", reject_reason = \"declined\"")),
    ];
    let killed = kill_at_random_points(&dir, &workflows, runs);
    let interrupted = unfinished(&dir);
    let resumed = cli(&dir, &["resume"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", String::from_utf8_lossy(&resumed.stderr));

    let executions = json_of(&cli(&dir, &["executions", "list", "--limit", "1000", "--json"]));
    let executions = executions.as_array().unwrap();
    let by_id: HashMap<String, &Value> =
        executions.iter().map(|e| (e["execution_id"].as_str().unwrap().to_string(), e)).collect();
    // A child's id starts with its parent's: `<parent>.lines-<index>.<attempt>`.
    let top = |execution: &'_ Value| -> Value {
        let id = execution["execution_id"].as_str().unwrap();
        id.split_once('.').and_then(|(parent, _)| by_id.get(parent)).map_or(execution.clone(), |p| (*p).clone())
    };
    let mut elements = 0;
    for execution in executions {
        let expected = if top(execution)["workflow"] == "fan-ok" { "succeeded" } else { "compensated" };
        assert_eq!(execution["status"], expected, "{execution}");
        elements += usize::from(execution["workflow"] == "paced-reserve");
    }
    let rolled_back = |execution: &Value| top(execution)["status"] == "compensated";
    let (calls, checked) = audit_side_effects(&dir.join("stepwise.db"), executions, &rolled_back);
    eprintln!(
        "fan-out crash test: {runs} runs, {killed} killed, {interrupted} left unfinished, {elements} element executions, {calls} service calls, {checked} checked"
    );
    assert!(elements > 0 && checked > 0);
    assert!(interrupted > 0, "no run was interrupted mid-way ({killed} of {runs} killed)");
}

/// Throughput of accept-quote on the SQLite store vs the in-memory store,
/// measured in one run (ignored by default: a figure for the notes, not a
/// check; `cargo test --release -p stepwise-tests --test durable -- --ignored`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_sqlite_vs_memory() {
    use std::sync::Arc;
    use stepwise::engine::StartOptions;
    use stepwise::store::{ExecutionStore, MemoryStore, SqliteStore};
    let dir = scratch("throughput");
    let host = demo_host();
    let workflow = Arc::new(
        stepwise::workflow::Workflow::load_file(
            &example_workflow("accept-quote.toml"),
            host.engine.registry().as_ref(),
        )
        .unwrap(),
    );
    let input: Value =
        serde_json::from_str(&std::fs::read_to_string(example_workflow("accept-quote.input.json")).unwrap()).unwrap();
    let stores: Vec<(&str, Arc<dyn ExecutionStore>)> = vec![
        ("memory", Arc::new(MemoryStore::new())),
        ("sqlite", Arc::new(SqliteStore::open(&dir.join("bench.db")).unwrap())),
    ];
    for (name, store) in stores {
        let engine = stepwise::engine::Engine::new(host.engine.registry().clone(), store);
        for concurrency in [1usize, 64] {
            let total = 2000;
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..total {
                if tasks.len() >= concurrency {
                    tasks.join_next().await.unwrap().unwrap();
                }
                let (engine, workflow, input) = (engine.clone(), workflow.clone(), input.clone());
                tasks.spawn(async move { engine.run(workflow, input, StartOptions::default()).await.unwrap() });
            }
            while tasks.join_next().await.is_some() {}
            let rate = total as f64 / started.elapsed().as_secs_f64();
            eprintln!("accept-quote on {name}, {concurrency} concurrent: {rate:.0} executions/s");
        }
    }
}

/// A reservation, then a step whose compensation fails twice before it
/// succeeds (no retries of its own), then a step that fails: the execution
/// ends `failed`; each operator retry tries the failed compensation once more.
const RETRIED_ROLLBACK: &str = r#"
name = "retried-rollback"
[[steps]]
id = "reserve"
plugin = "reserve-inventory"
input = { items = [{ sku = "A", quantity = 2 }] }
[[steps]]
id = "hold"
plugin = "compensate-fails"
input = { compensation_failures = 2 }
retry = { max_attempts = 1 }
after = ["reserve"]
[[steps]]
id = "boom"
plugin = "fail"
after = ["hold"]
"#;

#[test]
fn an_operator_retries_a_failed_execution_until_its_compensations_succeed() {
    let dir = scratch("operator-retry");
    let workflow = write(&dir, "retried.toml", RETRIED_ROLLBACK);
    let failed = json_of(&cli(&dir, &["run", &workflow]));
    assert_eq!(failed["status"], "failed", "{failed:#}");
    let id = failed["execution_id"].as_str().unwrap().to_string();
    let hold = |execution: &Value| step(execution, "hold").clone();
    assert_eq!(hold(&failed)["status"], "compensation_failed");
    assert_eq!(step(&failed, "reserve")["status"], "compensated", "the rollback went on past the failure");

    // First retry: attempt 2 fails too; the execution is failed again.
    let again = cli(&dir, &["retry", &id, "--reason", "payments provider back"]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    let again = json_of(&again);
    assert_eq!(again["status"], "failed");
    assert_eq!(hold(&again)["compensation_attempts"], 2);
    // Second retry: attempt 3 succeeds; the execution is compensated.
    let done = json_of(&cli(&dir, &["retry", &id]));
    assert_eq!(done["status"], "compensated", "{done:#}");
    assert_eq!(hold(&done)["status"], "compensated");
    assert_eq!(hold(&done)["compensation_attempts"], 3);
    let retries: Vec<&Value> = events(&done, "retry_requested");
    assert_eq!(retries.len(), 2, "each retry is in the timeline");
    assert_eq!(retries[0]["reason"], "payments provider back");
    assert_eq!(retries[0]["steps"], json!(["hold"]));
    // Nothing left to retry: refused (exit 2), naming the status.
    let refused = cli(&dir, &["retry", &id]);
    assert_eq!(refused.status.code(), Some(2));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("is compensated") && message.contains("only a `failed` execution"), "{message}");
    // The reservation was applied once and undone once, through every retry.
    let calls = ledger(&dir.join("stepwise.db"));
    let count = |method: &str| calls.iter().filter(|call| call.method == method).count();
    assert_eq!((count("reserve"), count("release")), (1, 1), "{calls:?}");
}

/// A loopback HTTP server that leaves its first `held` requests unanswered
/// (the step calling it stops at its deadline, or its process is killed)
/// and answers the others `200`; it sends the head of every request it gets.
fn holding_http_server(held: usize) -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let port = listener.local_addr().unwrap().port();
    let (heads, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut unanswered = Vec::new();
        for (index, stream) in listener.incoming().take(8).enumerate() {
            let Ok(mut stream) = stream else { continue };
            // The whole head, however many reads it takes.
            let mut head = Vec::new();
            let mut buffer = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => head.extend_from_slice(&buffer[..read]),
                }
            }
            let _ = heads.send(String::from_utf8_lossy(&head).to_lowercase());
            if index < held {
                unanswered.push(stream);
            } else {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            }
        }
    });
    (port, received)
}

/// The `Idempotency-Key` header of an outgoing request stays the step's
/// across a retry after a deadline and across a SIGKILL of the process:
/// attempt 1 is left unanswered (deadline), attempt 2 is in flight when the
/// process is killed, and the attempt `resume` makes is answered.
#[test]
fn the_idempotency_key_of_an_http_call_is_the_same_across_attempts_and_a_sigkill() {
    let dir = scratch("idempotent-http");
    let (port, heads) = holding_http_server(2);
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(plugins_dir().join("hostile.wasm"), plugins.join("charge.wasm")).unwrap();
    let manifest = format!("[capabilities]\nkv = true\nconfig = true\nhttp = [\"127.0.0.1:{port}\"]\n");
    std::fs::write(plugins.join("charge.toml"), manifest).unwrap();
    let workflow = write(
        &dir,
        "charge.toml",
        &format!(
            r#"
            name = "charge"
            [[steps]]
            id = "charge"
            plugin = "charge"
            input = {{ attack = "http_get", key = "http://127.0.0.1:{port}/charges" }}
            timeout_ms = 1500
            retry = {{ max_attempts = 5, initial_backoff_ms = 10 }}
            "#
        ),
    );
    let (store, plugins) = (store_url(&dir), plugins.display().to_string());
    let mut child = Command::new(stepwise_bin())
        .args(["run", &workflow, "--store", &store, "--plugins", &plugins])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let wait = Duration::from_secs(60);
    let first = heads.recv_timeout(wait).expect("attempt 1 calls the server");
    let second = heads.recv_timeout(wait).expect("attempt 2 calls the server after attempt 1's deadline");
    child.kill().unwrap(); // SIGKILL, with attempt 2's request in flight
    child.wait().unwrap();
    assert_eq!(unfinished(&dir), 1, "the kill left the execution unfinished");

    let resumed = stepwise(&["resume", "--store", &store, "--plugins", &plugins]);
    assert_eq!(resumed.status.code(), Some(0), "{}", String::from_utf8_lossy(&resumed.stderr));
    let third = heads.recv_timeout(wait).expect("the resumed attempt calls the server");
    // Listing reads the store alone: no plugin directory needed.
    let listed = stepwise(&["executions", "list", "--json", "--store", &store]);
    let executions = json_of(&listed);
    let execution = &executions[0];
    assert_eq!(execution["status"], "succeeded", "{execution}");
    let key = format!("idempotency-key: {}/charge", execution["execution_id"].as_str().unwrap());
    for (call, head) in [("attempt 1", &first), ("attempt 2", &second), ("after the kill", &third)] {
        assert!(head.contains(&key), "{call}: {head} lacks {key}");
    }
}
