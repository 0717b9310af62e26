//! Outside events racing each other against a real `stepwise serve` on
//! SQLite, with real guests: parallel completions of one async step,
//! success racing failure, completions racing cancels and the deadline,
//! cancels at random moments, a cancel while a step runs, `stepwise
//! complete` from a second process while the server owns the execution,
//! deeply nested JSON at every door, and an idle server's wake-ups and CPU. In process:
//! cancels racing executions that `Engine::run` drives in its caller's task.
//!
//! Each test audits the demo services' ledger against the recorded events:
//! no service call after its completion was recorded, every reservation and
//! authorization applied once and undone exactly when its execution rolled
//! back. Nothing here waits a fixed time to pass: outcomes are read from
//! the recorded executions.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use stepwise_test_support::audit::audit_side_effects;
use stepwise_test_support::server::{Server, TOKEN};
use stepwise_test_support::*;

/// cart -> reserve -> approve (async, with `approve_options`) -> payment -> order.
fn race(name: &str, approve_options: &str) -> String {
    let order = r#"[[steps]]
id = "order"
plugin = "create-order"
input = { cart_id = "$.steps.cart.output.id", reservation_id = "$.steps.reserve.output.reservation_id", authorization_id = "$.steps.payment.output.authorization_id", total = "$.steps.cart.output.total" }
"#;
    let retry = "[retry]\nmax_attempts = 3\ninitial_backoff_ms = 10";
    quote_workflow(name, retry, &(approved_payment(approve_options) + order))
}

fn race_server(label: &str) -> Arc<Server> {
    let (plain, timed, slow) = (race("race", ""), race("race-timeout", "timeout_ms = 300"), slow_quote("slow", 300));
    Arc::new(Server::start(
        label,
        &[("race.toml", plain.as_str()), ("race-timeout.toml", timed.as_str()), ("slow.toml", slow.as_str())],
    ))
}

fn db(server: &Server) -> PathBuf {
    server.dir.join("server.db")
}

/// Starts `count` executions of `workflow` without waiting; their ids.
async fn start_many(server: &Arc<Server>, workflow: &str, count: usize) -> Vec<String> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        let server = server.clone();
        let path = format!("/v1/workflows/{workflow}/executions");
        tasks.spawn(async move { server.post(&path, quote_input()).await });
    }
    let mut ids = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (status, body) = joined.unwrap();
        assert!(status.is_success(), "{status}: {body}");
        ids.push(body["execution_id"].as_str().unwrap().to_string());
    }
    ids
}

/// Sends requests at once; their statuses and bodies, in order.
async fn all_at_once(server: &Arc<Server>, requests: Vec<(String, Value)>) -> Vec<(StatusCode, Value)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(path, body)| {
            let (server, barrier) = (server.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                server.post(&path, body).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

fn events_of<'a>(execution: &'a Value, kind: &str, unit: &str) -> Vec<&'a Value> {
    events(execution, kind).into_iter().filter(|e| e["step"] == unit).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_ten_parallel_completions_exactly_one_is_recorded_and_nothing_runs_twice() {
    let server = race_server("parallel-completions");
    let ids = start_many(&server, "race", 100).await;
    let mut finals = Vec::new();
    for id in &ids {
        server.until_step_waits(id, "approve").await;
        let requests =
            (0..10).map(|n| (format!("/v1/executions/{id}/steps/approve/success"), json!({"by": n}))).collect();
        let answers = all_at_once(&server, requests).await;
        let accepted: Vec<usize> = (0..10).filter(|&n| answers[n].0.is_success()).collect();
        assert_eq!(accepted.len(), 1, "{id}: {:?}", answers.iter().map(|a| a.0).collect::<Vec<_>>());
        for (status, body) in &answers {
            if !status.is_success() {
                assert_eq!((*status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_waiting")));
            }
        }
        let execution = server.wait_final(id).await;
        assert_eq!(execution["status"], "succeeded", "{execution:#}");
        // The output recorded is the accepted caller's.
        assert_eq!(step(&execution, "approve")["output"], json!({"by": accepted[0]}));
        assert_eq!(events_of(&execution, "step_started", "payment").len(), 1, "payment authorized once");
        finals.push(execution);
    }
    let (calls, checked) = audit_side_effects(&db(&server), &finals, &|_| false);
    assert!(calls >= 200 && checked >= 200, "{calls} calls, {checked} checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_racing_failure_and_completions_racing_cancels_roll_back_exactly_once() {
    let server = race_server("success-failure-cancel");
    let ids = start_many(&server, "race", 60).await;
    let mut finals = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        server.until_step_waits(id, "approve").await;
        let success = (format!("/v1/executions/{id}/steps/approve/success"), json!({"ok": true}));
        let failure = (format!("/v1/executions/{id}/steps/approve/failure"), json!({"error": "declined"}));
        let cancel = (format!("/v1/executions/{id}/cancel"), json!({"reason": "customer"}));
        let racing = n.is_multiple_of(2);
        let requests = if racing {
            vec![success.clone(), failure.clone(), success, failure]
        } else {
            vec![success.clone(), cancel.clone(), cancel.clone(), cancel]
        };
        let answers = all_at_once(&server, requests).await;
        let execution = server.wait_final(id).await;
        if racing {
            let accepted: Vec<usize> = (0..4).filter(|&i| answers[i].0.is_success()).collect();
            assert_eq!(accepted.len(), 1, "{id}: {:?}", answers.iter().map(|a| a.0).collect::<Vec<_>>());
            let expected = if accepted[0].is_multiple_of(2) { "succeeded" } else { "compensated" };
            assert_eq!(execution["status"], expected, "{execution:#}");
        } else {
            // Every cancel is answered 2xx; the completion may or may not be
            // taken first, and the execution ends rolled back either way.
            assert!(answers[1..].iter().all(|(status, _)| status.is_success()), "{answers:?}");
            assert!(answers[0].0.is_success() || answers[0].0 == StatusCode::CONFLICT, "{answers:?}");
            assert_eq!(execution["status"], "compensated", "{execution:#}");
            assert_eq!(events(&execution, "rollback_requested").len(), 1, "one rollback for three cancels");
        }
        finals.push(execution);
    }
    let (_, checked) = audit_side_effects(&db(&server), &finals, &|e| e["status"] == "compensated");
    assert!(checked > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_at_random_moments_are_never_lost() {
    let server = race_server("random-cancels");
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..300u64 {
        let server = server.clone();
        tasks.spawn(async move {
            let (_, started) = server.post("/v1/workflows/accept-quote/executions", quote_input()).await;
            let id = started["execution_id"].as_str().unwrap().to_string();
            // Spread over the execution's life: before its first step ends, mid-way, after success.
            tokio::time::sleep(Duration::from_millis((n * 7919) % 40)).await;
            let (status, body) = server.post(&format!("/v1/executions/{id}/cancel"), json!({})).await;
            assert!(status.is_success(), "cancel of {id}: {status} {body}");
            id
        });
    }
    let mut finals = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let id = joined.unwrap();
        let execution = server.wait_final(&id).await;
        assert_eq!(execution["status"], "compensated", "{execution:#}");
        assert_eq!(events(&execution, "rollback_requested").len(), 1);
        finals.push(execution);
    }
    let (_, checked) = audit_side_effects(&db(&server), &finals, &|_| true);
    assert!(checked > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_racing_the_deadline_either_complete_or_time_out_never_both() {
    let server = race_server("deadline");
    let ids = start_many(&server, "race-timeout", 150).await;
    let mut tasks = tokio::task::JoinSet::new();
    for (n, id) in ids.into_iter().enumerate() {
        let server = server.clone();
        tasks.spawn(async move {
            // Around the 300 ms deadline, give or take.
            tokio::time::sleep(Duration::from_millis(240 + (n as u64 * 37) % 120)).await;
            let answer = server.post(&format!("/v1/executions/{id}/steps/approve/success"), json!({"late": n})).await;
            (id, answer)
        });
    }
    let (mut completed, mut timed_out, mut finals) = (0, 0, Vec::new());
    while let Some(joined) = tasks.join_next().await {
        let (id, (status, body)) = joined.unwrap();
        let execution = server.wait_final(&id).await;
        if status.is_success() {
            completed += 1;
            assert_eq!(execution["status"], "succeeded", "{execution:#}");
        } else {
            timed_out += 1;
            assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_waiting")));
            assert_eq!(execution["status"], "compensated", "{execution:#}");
            assert_eq!(step(&execution, "approve")["error"]["kind"], "timed_out");
        }
        assert!(events_of(&execution, "step_started", "payment").len() <= 1);
        finals.push(execution);
    }
    eprintln!("deadline race: {completed} completed, {timed_out} timed out");
    audit_side_effects(&db(&server), &finals, &|e| e["status"] == "compensated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_a_step_runs_lets_it_finish_once_then_compensates() {
    let server = race_server("cancel-running");
    let waiting = {
        let server = server.clone();
        tokio::spawn(async move { server.post("/v1/workflows/slow/executions?wait=true", quote_input()).await })
    };
    // The execution id, once the slow step runs.
    let id = loop {
        let (_, list) = server.get("/v1/executions?workflow=slow").await;
        if let Some(id) = list["executions"][0]["execution_id"].as_str() {
            let (_, execution) = server.get(&format!("/v1/executions/{id}")).await;
            if step(&execution, "slow")["status"] == "running" {
                break id.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let (status, cancelled) = server.post(&format!("/v1/executions/{id}/cancel"), json!({"reason": "now"})).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "compensated");
    // The caller that started it gets the rolled-back execution, not a conflict.
    let (status, execution) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{execution}");
    assert_eq!(execution["status"], "compensated");
    assert_eq!(events_of(&execution, "step_started", "slow").len(), 1, "the running step ran once");
    assert_eq!(events_of(&execution, "step_compensated", "slow").len(), 1, "and was compensated once");
    assert!(events_of(&execution, "step_started", "payment").is_empty());
    let (_, checked) = audit_side_effects(&db(&server), &[execution], &|_| true);
    assert!(checked > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stepwise_complete_from_a_second_process_goes_through_the_owner() {
    // approve waits while `busy` runs for 3 s: the server owns the execution
    // the whole time, so the second process must hand its event over.
    let workflow = r#"
        name = "owned"
        [[steps]]
        id = "approve"
        plugin = "echo"
        async = true
        [[steps]]
        id = "busy"
        plugin = "echo"
        input = { sleep_ms = 3000 }
        [[steps]]
        id = "after"
        plugin = "echo"
        input = { approved = "$.steps.approve.output", busy = "$.steps.busy.output" }
    "#;
    let server = Arc::new(Server::start("second-process", &[("owned.toml", workflow)]));
    let (_, started) = server.post("/v1/workflows/owned/executions", json!({})).await;
    let id = started["execution_id"].as_str().unwrap().to_string();
    server.until_step_waits(&id, "approve").await;
    let (_, hosts) = server.get("/v1/hosts").await;
    let (_, execution) = server.get(&format!("/v1/executions/{id}")).await;
    assert_eq!(execution["owner"]["host"], hosts["hosts"][0]["id"], "the server owns it: {execution:#}");
    let output = std::process::Command::new(stepwise_bin())
        .args(["complete", &id, "approve", "--output", r#"{"by": "cli"}"#])
        .arg("--store")
        .arg(format!("sqlite://{}", db(&server).display()))
        .arg("--plugins")
        .arg(server.dir.join("plugins"))
        .env("STEPWISE_CACHE", server.dir.join("cache"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["status"], "succeeded", "{printed:#}");
    let execution = server.wait_final(&id).await;
    assert_eq!(step(&execution, "approve")["output"], json!({"by": "cli"}));
    assert_eq!(events_of(&execution, "step_started", "busy").len(), 1, "one driver: busy ran once");
    assert_eq!(events_of(&execution, "step_started", "after").len(), 1);
    let metrics =
        server.client.get(server.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("stepwise_fencing_refusals_total 0"), "{metrics}");
}

fn nested(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_refused_at_every_door_and_blocks_nothing() {
    let wraps = r#"
        name = "wraps"
        [[steps]]
        id = "deeper"
        plugin = "echo"
        input = { a = { b = { c = { d = { e = "$.input.deep" } } } } }
    "#;
    let server = Arc::new(Server::start("deep", &[("wraps.toml", wraps)]));
    let post_raw = |path: String, body: String| {
        let server = server.clone();
        async move {
            let response = server
                .client
                .post(server.url(&path))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    for levels in [127, 10_000] {
        let (status, body) = post_raw("/v1/workflows/approval/executions".into(), nested(levels)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("deeper than the limit of 64"), "{body}");
    }
    // An async step's output, too deep.
    let (_, waiting) = server.post("/v1/workflows/approval/executions", json!({})).await;
    let id = waiting["execution_id"].as_str().unwrap().to_string();
    for levels in [127, 10_000] {
        let (status, body) = post_raw(format!("/v1/executions/{id}/steps/ask/success"), nested(levels)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    // A guest returning a value nested deeper than the limit fails its step.
    let (status, failed) = server
        .post(
            "/v1/workflows/wraps/executions?wait=true",
            json!({"deep": serde_json::from_str::<Value>(&nested(60)).unwrap()}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(failed["status"], "compensated", "{failed:#}");
    assert_eq!(step(&failed, "deeper")["error"]["kind"], "invalid_output");
    // An event's payload: too deep, or not an object.
    let (status, body) = post_raw("/v1/events/order.placed".into(), nested(10_000)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    for not_an_object in ["null", "[1]", "\"text\""] {
        let (status, body) = post_raw("/v1/events/order.placed".into(), not_an_object.into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("JSON object"), "{body}");
    }
    // `stepwise complete --output` from a shell, on the server's own store.
    let store = format!("sqlite://{}", server.dir.join("server.db").display());
    for levels in [127, 10_000] {
        let plugins = plugins_dir().display().to_string();
        let cli =
            stepwise(&["complete", &id, "ask", "--output", &nested(levels), "--store", &store, "--plugins", &plugins]);
        assert_eq!(cli.status.code(), Some(2), "{}", String::from_utf8_lossy(&cli.stderr));
        assert!(String::from_utf8_lossy(&cli.stderr).contains("deeper than the limit of 64"));
    }
    // The CLI's door.
    let cli = std::process::Command::new(stepwise_bin())
        .args(["run", "--store", "memory", "--input", &nested(127)])
        .arg(example_workflow("accept-quote.toml"))
        .arg("--plugins")
        .arg(plugins_dir())
        .output()
        .unwrap();
    assert_eq!(cli.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&cli.stderr).contains("deeper than the limit of 64"));
    // Everything else is untouched: the waiting execution completes, every execution reads back.
    let (status, done) =
        server.post(&format!("/v1/executions/{id}/steps/ask/success"), json!({"approved": true})).await;
    assert_eq!((status, done["status"].as_str()), (StatusCode::OK, Some("succeeded")));
    let (_, list) = server.get("/v1/executions").await;
    for execution in list["executions"].as_array().unwrap() {
        let (status, _) = server.get(&format!("/v1/executions/{}", execution["execution_id"].as_str().unwrap())).await;
        assert_eq!(status, StatusCode::OK);
    }
}

/// CPU time (user + system) of a process so far, from /proc, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// How many times each thread of a process went to sleep of its own accord
/// (`voluntary_ctxt_switches`: a wait for a timer, a lock, I/O or a
/// message), by thread, from /proc. Being preempted on a busy machine does
/// not count, so the figure follows what the process does far more than how
/// loaded the machine is (see the bound's comment for what load adds).
fn sleeps_by_thread(pid: u32) -> std::collections::BTreeMap<String, (String, u64)> {
    let mut sleeps = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        // A thread may end between the listing and the read.
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        let field =
            |name: &str| status.lines().find_map(|line| line.strip_prefix(name)).map(|value| value.trim().to_string());
        let (Some(name), Some(count)) = (field("Name:"), field("voluntary_ctxt_switches:")) else { continue };
        sleeps.insert(task.file_name().to_string_lossy().into_owned(), (name, count.parse().unwrap()));
    }
    sleeps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_sleeps_after_a_burst() {
    let server = race_server("idle");
    // A burst of executions, and executions left waiting with deadlines far ahead.
    let ids = start_many(&server, "accept-quote", 50).await;
    for id in &ids {
        server.wait_final(id).await;
    }
    let waiting = start_many(&server, "approval", 5).await;
    for id in &waiting {
        server.until(id, "waited", |e| e["status"] == "waiting").await;
    }
    let pid = server.child.id();
    let (cpu_before, sleeps_before) = (cpu_ticks(pid), sleeps_by_thread(pid));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu_after, sleeps_after) = (cpu_ticks(pid), sleeps_by_thread(pid));
    let hz = 100; // USER_HZ on Linux
    let millis = (cpu_after - cpu_before) * 1000 / hz;
    // Wake-ups in the 5 s, by thread name. A thread that started in them
    // counts whole; one that ended in them is not counted (an undercount, but
    // a thread that polls does not end); a thread id reused by a new thread
    // counts from zero rather than below it.
    let mut wakeups = std::collections::BTreeMap::<String, u64>::new();
    for (tid, (name, after)) in &sleeps_after {
        let before = sleeps_before.get(tid).map_or(0, |(_, count)| *count);
        *wakeups.entry(name.clone()).or_default() += after.checked_sub(before).unwrap_or(*after);
    }
    let total: u64 = wakeups.values().sum();
    eprintln!("idle server: {millis} ms of CPU and {total} wake-ups in 5 s: {wakeups:?}");
    // Idle, it wakes about 40 times in 5 s here: a scan for due work each
    // second and a heartbeat each quarter lease, each a wake of a runtime
    // worker and of the SQLite writer or a reader. Anything that polls
    // (every 20 ms, as the inbox poller did until session 20, is 250 in 5 s)
    // or ticks while no call runs (the epoch ticker: 5,000) is far above 100.
    // Being a count of the process's own sleeps (not of preemptions), it
    // depends little on how fast or loaded the machine is: a few sleeps more
    // per scan or heartbeat when an answer misses its spin (the SQLite
    // writer's hand-over) or a lock is contended.
    assert!(total <= 100, "an idle server woke {total} times in 5 s: {wakeups:?}");
    // A loop that never sleeps does not show in the count: it shows as CPU
    // time (seconds of it). Idle, the server uses 0-10 ms in 5 s here.
    assert!(millis <= 150, "an idle server used {millis} ms of CPU in 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_that_cannot_be_loaded_is_marked_failed_and_blocks_nothing() {
    let dir = test_dir("server-unloadable");
    let _ = std::fs::remove_dir_all(&dir);
    let [broken, healthy, newer] = {
        let server = Server::start_in(dir.clone(), &[]);
        let (_, broken) = server.post("/v1/workflows/approval/executions", json!({})).await;
        let (_, healthy) = server.post("/v1/workflows/approval/executions", json!({})).await;
        let (_, newer) = server.post("/v1/workflows/approval/executions", json!({})).await;
        let ids = [broken, healthy, newer].map(|body| body["execution_id"].as_str().unwrap().to_string());
        for id in &ids {
            server.until(id, "waited", |e| e["status"] == "waiting").await;
        }
        ids
    };
    // Both look unfinished with work in flight; one log holds an event no one can read.
    let db = rusqlite::Connection::open(dir.join("server.db")).unwrap();
    db.execute("UPDATE executions SET status = 'running'", []).unwrap();
    db.execute("UPDATE events SET event = '{\"type\": 1' WHERE execution_id = ?1 AND seq = 1", [&broken]).unwrap();
    // One was written by a newer Stepwise (a log version this one does not know).
    let newer_log =
        "UPDATE events SET event = json_set(event, '$.log_version', 99) WHERE execution_id = ?1 AND seq = 0";
    assert_eq!(db.execute(newer_log, [&newer]).unwrap(), 1);
    drop(db);
    let server = Server::start_in(dir, &[]);
    // The restarted server adopts both: the broken one is failed with the reason.
    let listed = loop {
        let (_, listed) = server.get("/v1/executions?status=failed").await;
        if !listed["executions"].as_array().unwrap().is_empty() {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let failed = &listed["executions"][0];
    assert_eq!(failed["execution_id"], broken.as_str(), "{listed:#}");
    assert_eq!(listed["executions"].as_array().unwrap().len(), 1, "only the unreadable one: {listed:#}");
    assert!(failed["error"].as_str().unwrap().contains("corrupt event"), "{failed}");
    let (status, body) = server.get(&format!("/v1/executions/{broken}")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body["error"]["message"].as_str().unwrap().contains(&broken), "{body}");
    let metrics =
        server.client.get(server.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("stepwise_executions_unloadable_total 1"), "{metrics}");
    // Everything else goes on.
    let (status, done) =
        server.post(&format!("/v1/executions/{healthy}/steps/ask/success"), json!({"approved": true})).await;
    assert_eq!((status, done["status"].as_str()), (StatusCode::OK, Some("succeeded")));
    let (status, quote) = server.post("/v1/workflows/accept-quote/executions?wait=true", quote_input()).await;
    assert_eq!((status, quote["status"].as_str()), (StatusCode::OK, Some("succeeded")));
    // The newer one is left for a host of its version: not driven, not failed.
    let (status, body) = server.get(&format!("/v1/executions/{newer}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("newer_log")),
        "{body}"
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("log version 99"), "{body}");
    let (_, running) = server.get("/v1/executions?status=running").await;
    let running: Vec<&str> =
        running["executions"].as_array().unwrap().iter().map(|e| e["execution_id"].as_str().unwrap()).collect();
    assert_eq!(running, [newer.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_repeated_with_its_idempotency_key_gets_the_same_answer() {
    let server = race_server("repeat");
    let (_, started) = server.post("/v1/workflows/approval/executions", json!({})).await;
    let id = started["execution_id"].as_str().unwrap().to_string();
    server.until_step_waits(&id, "ask").await;
    let complete = |key: &'static str, output: Value| {
        let (server, id) = (server.clone(), id.clone());
        async move {
            let url = server.url(&format!("/v1/executions/{id}/steps/ask/success"));
            let request = server.client.post(url).bearer_auth(TOKEN).header("Idempotency-Key", key).json(&output);
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let (first_status, first) = complete("approval-1", json!({"approved": true})).await;
    assert_eq!(first_status, StatusCode::OK, "{first}");
    // The same report again (a retried request): the same answer, nothing recorded twice.
    let (again_status, again) = complete("approval-1", json!({"approved": true})).await;
    assert_eq!(again_status, StatusCode::OK, "{again}");
    assert_eq!(again["execution_id"], first["execution_id"]);
    assert_eq!(again["status"], first["status"]);
    // Another report for the step: refused, it does not wait any more.
    let (other_status, other) = complete("approval-2", json!({"approved": false})).await;
    assert_eq!(other_status, StatusCode::CONFLICT, "{other}");
    assert_eq!(other["error"]["code"], "not_waiting");
    let execution = server.wait_final(&id).await;
    let recorded = events(&execution, "step_succeeded").into_iter().filter(|e| e["step"] == "ask").count();
    assert_eq!(recorded, 1, "{execution:#}");
    assert_eq!(step(&execution, "ask")["output"]["approved"], true, "the first report's output");
}

/// The demo inventory that tells the test which execution a reservation
/// belongs to as the reservation starts, and holds it until the test lets
/// it go (on a blocking thread: the owner reads its mailbox meanwhile).
struct Announcing {
    inner: Arc<stepwise::services::demo::Inventory>,
    reserving: tokio::sync::mpsc::UnboundedSender<(String, std::sync::mpsc::Sender<()>)>,
}

impl stepwise::services::Service for Announcing {
    fn call(&self, method: &str, input: Value, caller: &stepwise::services::Caller) -> Result<Value, String> {
        if method == "reserve" {
            let (go, wait) = std::sync::mpsc::channel();
            self.reserving.send((caller.execution_id.clone(), go)).unwrap();
            wait.recv().unwrap();
        }
        self.inner.call(method, input, caller)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_racing_executions_that_run_drives_in_its_callers_task_roll_each_back_once() {
    use stepwise::engine::{Answer, Engine, StartOptions};
    use stepwise::services::demo::{Inventory, Payments};
    use stepwise::services::ledger::SqliteLedger;
    use stepwise::store::SqliteStore;
    let path = scratch_dir("run-here-cancels").join("stepwise.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let ledger = Arc::new(SqliteLedger::on(store.clone()).await.unwrap());
    let (reserving, mut reservations) = tokio::sync::mpsc::unbounded_channel();
    let inventory =
        Arc::new(Announcing { inner: Arc::new(Inventory::with_ledger(ledger.clone()).unwrap()), reserving });
    let payments = Arc::new(Payments::with_ledger(ledger).unwrap());
    let registry = engine_with(&plugins_dir(), resources_serving(inventory, payments)).registry().clone();
    let engine = Engine::new(registry, store);
    let workflow = example(&engine, "accept-quote.toml");

    // Forty executions at once, each driven by `run` in its own caller's
    // task, each cancelled from another task. Half are cancelled while
    // their reservation is held (the owner takes the cancel while the call
    // runs inline in the caller's task); the other half after their
    // reservation is let go and 0 to 7 turns of the scheduler, so those
    // cancels land during a later step or after the end (a cancel rolls a
    // succeeded execution back too).
    const EXECUTIONS: usize = 40;
    let mut runs = tokio::task::JoinSet::new();
    for n in 0..EXECUTIONS {
        let (engine, workflow) = (engine.clone(), workflow.clone());
        let options = StartOptions { idempotency_key: Some(format!("run-here-{n}")), tenant: None };
        runs.spawn(async move { engine.run(workflow, quote_input(), options).await.unwrap().to_json() });
    }
    let mut cancels = tokio::task::JoinSet::new();
    for n in 0..EXECUTIONS {
        let (id, go) = reservations.recv().await.expect("every execution reserves");
        let engine = engine.clone();
        cancels.spawn(async move {
            let id = stepwise::journal::ExecutionId::new(id);
            let held = n % 2 == 0;
            if !held {
                go.send(()).unwrap();
                for _ in 0..n % 8 {
                    tokio::task::yield_now().await;
                }
            }
            let answer = engine.cancel(&id, "customer").await.map(|delivery| delivery.answer);
            if held {
                go.send(()).unwrap();
            }
            assert!(matches!(answer, Ok(Answer::Accepted)), "{id}: running or succeeded, it rolls back: {answer:?}");
            (id, held)
        });
    }
    let ran: Vec<Value> = runs.join_all().await;
    let mut finals = Vec::new();
    for (id, held) in cancels.join_all().await {
        let execution = engine.wait_for_rest(&id).await.unwrap().to_json();
        assert_eq!(execution["status"], "compensated", "{execution:#}");
        assert_eq!(events(&execution, "rollback_requested").len(), 1, "one rollback for the one cancel");
        let returned = &ran.iter().find(|run| run["execution_id"] == execution["execution_id"]).unwrap()["status"];
        if held {
            assert_eq!(returned, "compensated", "{id}: cancelled mid-run, run returned it rolled back");
        } else {
            assert!(returned == "compensated" || returned == "succeeded", "{id}: run returned {returned}");
        }
        finals.push(execution);
    }
    assert_eq!(finals.len(), EXECUTIONS);
    let (calls, checked) = audit_side_effects(&path, &finals, &|_| true);
    assert!(calls > 0 && checked > 0, "the ledger was audited: {calls} calls, {checked} checks");
}
