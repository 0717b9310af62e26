//! The soak: thousands of hostile invocations in one host (loops, memory
//! bombs, recursion, panics, huge outputs, files, sockets, environment).
//! This file holds only this test, so that the process's resident memory it
//! reads is the soak's alone.

use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use stepwise::engine::StartOptions;
use stepwise::journal::ExecutionStatus;
use stepwise::workflow::Workflow;
use stepwise_test_support::*;

/// Many hostile invocations in one host: every one stopped and rolled back,
/// memory bounded. `STEPWISE_SOAK` sets the count (default 300 so the suite
/// stays fast; SECURITY.md says how to run 10,000). Alone in its test binary,
/// so that the process's memory is the soak's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_hostile_invocations_keep_host_memory_bounded() {
    let count: usize = std::env::var("STEPWISE_SOAK").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let engine = engine();
    let attacks = ["loop", "memory_bomb", "recursion", "panic", "huge_output", "read_file", "open_socket", "read_env"];
    let workflows: Vec<Arc<Workflow>> = attacks
        .iter()
        .map(|attack| {
            let mut input = json!({"attack": attack});
            if *attack == "huge_output" {
                input["size"] = json!(2_000_000);
            }
            let toml = format!(
                "name = \"soak\"\n[[steps]]\nid = \"attack\"\nplugin = \"hostile\"\ninput = {}\nretry = {{ max_attempts = 1 }}\n",
                toml_inline(&input)
            );
            workflow(&engine, &toml)
        })
        .collect();
    // Warm up (instance pool, compiled code) before the first reading.
    for workflow in &workflows {
        engine.run(workflow.clone(), json!({}), StartOptions::default()).await.unwrap();
    }
    let before = rss_kib();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut statuses = Vec::new();
    for i in 0..count {
        let engine = engine.clone();
        let workflow = workflows[i % workflows.len()].clone();
        tasks.spawn(async move {
            let execution = engine.run(workflow, json!({}), StartOptions::default()).await.unwrap();
            let kind = execution.to_json()["error"]["kind"].as_str().map(str::to_string);
            (execution.status, kind)
        });
        if tasks.len() >= 8 {
            statuses.push(tasks.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(status) = tasks.join_next().await {
        statuses.push(status.unwrap());
    }
    let after = rss_kib();
    eprintln!(
        "soak: {count} hostile invocations in {:.1} s, host RSS {} MiB before, {} MiB after",
        started.elapsed().as_secs_f64(),
        before / 1024,
        after / 1024
    );
    // Every attack was stopped and rolled back, none succeeded or was lost.
    assert_eq!(statuses.len(), count);
    for (status, kind) in &statuses {
        assert_eq!(*status, ExecutionStatus::Compensated, "an attack ended {status:?}");
        assert!(kind.is_some(), "an attack was rolled back without a failure kind");
    }
    let healthy =
        engine.run(example(&engine, "accept-quote.toml"), quote_input(), StartOptions::default()).await.unwrap();
    assert_eq!(healthy.to_json()["status"], "succeeded");
    // The in-memory store keeps every execution, so some growth is expected;
    // a leak of instances or memories would be hundreds of MiB.
    assert!(after < before + 200 * 1024, "RSS grew from {before} KiB to {after} KiB");
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
