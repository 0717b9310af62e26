//! Saga semantics on real compiled guests: data wiring, retries with backoff,
//! reverse-order compensation, failing compensations, concurrency, traps and deadlines.

use serde_json::{json, Value};
use stepwise::engine::StartOptions;
use stepwise::workflow::Workflow;
use stepwise_test_support::*;

#[tokio::test]
async fn accept_quote_wires_data_through_four_steps() {
    let engine = engine();
    let execution = run_example(&engine, "accept-quote.toml", quote_input()).await;
    assert_eq!(execution["status"], "succeeded", "{execution:#}");
    let reservation = &step(&execution, "reserve")["output"]["reservation_id"];
    let authorization = &step(&execution, "payment")["output"]["authorization_id"];
    // The order step received both ids through input references ...
    assert_eq!(&step(&execution, "order")["output"]["reservation_id"], reservation);
    assert_eq!(&step(&execution, "order")["output"]["authorization_id"], authorization);
    // ... the payment was authorized for the cart total computed by the first step ...
    assert_eq!(step(&execution, "payment")["output"]["amount"], json!(2 * 2500 + 1200));
    // ... and the workflow output is the template over step outputs.
    assert_eq!(execution["output"]["reservation_id"], *reservation);
    assert_eq!(execution["output"]["total"], json!(6200));
    assert_eq!(event_steps(&execution, "step_started"), vec!["cart", "reserve", "payment", "order"]);
    assert!(execution["error"].is_null());
}

#[tokio::test]
async fn retryable_failures_are_retried_with_exponential_backoff_and_the_same_idempotency_key() {
    let engine = engine();
    let execution = run_example(&engine, "flaky.toml", json!({})).await;
    assert_eq!(execution["status"], "succeeded", "{execution:#}");
    let unstable = step(&execution, "unstable");
    assert_eq!(unstable["attempts"], 3);
    assert_eq!(unstable["output"]["attempt"], 3, "the guest saw attempt numbers counting from 1");
    let key = format!("{}/unstable", execution["execution_id"].as_str().unwrap());
    assert_eq!(unstable["output"]["idempotency_key"], json!(key));

    let failures = events(&execution, "step_attempt_failed");
    let backoffs: Vec<u64> = failures.iter().map(|e| e["retry_in_ms"].as_u64().unwrap()).collect();
    assert_eq!(backoffs, vec![100, 200]);
    assert!(failures.iter().all(|e| e["error"]["kind"] == "retryable"));
    let starts: Vec<u64> = events(&execution, "step_started")
        .iter()
        .filter(|e| e["step"] == "unstable")
        .map(|e| millis(&e["at"]))
        .collect();
    assert_eq!(starts.len(), 3);
    assert!(starts[1] - starts[0] >= 100, "waited the first backoff: {starts:?}");
    assert!(starts[2] - starts[1] >= 200, "waited the doubled backoff: {starts:?}");
}

#[tokio::test]
async fn permanent_failure_compensates_completed_steps_in_reverse_order() {
    let engine = engine();
    let execution = run_example(&engine, "accept-quote-declined.toml", quote_input()).await;
    assert_eq!(execution["status"], "compensated", "{execution:#}");
    assert_eq!(execution["error"]["step"], "order");
    assert_eq!(execution["error"]["kind"], "permanent");
    assert_eq!(step(&execution, "order")["status"], "failed");
    assert_eq!(step(&execution, "order")["attempts"], 1, "permanent errors are not retried");
    assert_eq!(event_steps(&execution, "compensation_started"), vec!["payment", "reserve", "cart"]);
    assert_eq!(event_steps(&execution, "step_compensated"), vec!["payment", "reserve", "cart"]);
    for id in ["cart", "reserve", "payment"] {
        assert_eq!(step(&execution, id)["status"], "compensated");
    }
    // Compensation happens only after the failure, one step at a time.
    let failed_at = millis(&events(&execution, "step_failed")[0]["at"]);
    assert!(events(&execution, "compensation_started").iter().all(|e| millis(&e["at"]) >= failed_at));
    let logs: Vec<&str> = events(&execution, "log")
        .iter()
        .filter(|e| e["phase"] == "compensate")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(logs[0].starts_with("voided authorization"), "{logs:?}");
    assert!(logs[1].starts_with("released reservation"), "{logs:?}");
}

#[tokio::test]
async fn compensate_receives_compensation_data_or_else_the_output() {
    let engine = engine();
    let toml = r#"
        name = "fallback"
        [[steps]]
        id = "with-data"
        plugin = "echo"
        input = { order = 1, compensation = { refund = "r-1" } }
        [[steps]]
        id = "without-data"
        plugin = "echo"
        input = { order = 2 }
        after = ["with-data"]
        [[steps]]
        id = "boom"
        plugin = "fail"
        input = { kind = "permanent", message = "no" }
        after = ["without-data"]
    "#;
    let execution = run(&engine, toml, json!({})).await;
    assert_eq!(execution["status"], "compensated", "{execution:#}");
    let compensation_logs: Vec<(String, String)> = events(&execution, "log")
        .iter()
        .filter(|e| e["phase"] == "compensate")
        .map(|e| (e["step"].as_str().unwrap().to_string(), e["message"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(compensation_logs.len(), 2, "{compensation_logs:?}");
    assert_eq!(compensation_logs[0].0, "without-data");
    let received: serde_json::Value =
        serde_json::from_str(compensation_logs[0].1.split_once(" with ").unwrap().1).unwrap();
    assert_eq!(received, json!({"order": 2}), "no compensation data: compensate gets the output");
    let received: serde_json::Value =
        serde_json::from_str(compensation_logs[1].1.split_once(" with ").unwrap().1).unwrap();
    assert_eq!(received, json!({"refund": "r-1"}), "compensate gets the compensation data");
}

#[tokio::test]
async fn a_compensation_that_keeps_failing_leaves_the_execution_failed_after_its_retries() {
    let engine = engine();
    let toml = r#"
        name = "stuck"
        retry = { max_attempts = 3, initial_backoff_ms = 10, multiplier = 2.0, max_backoff_ms = 50 }
        [[steps]]
        id = "first"
        plugin = "echo"
        input = { n = 1 }
        [[steps]]
        id = "hold"
        plugin = "compensate-fails"
        input = { compensation_error_kind = "retryable" }
        after = ["first"]
        [[steps]]
        id = "boom"
        plugin = "fail"
        after = ["hold"]
    "#;
    let execution = run(&engine, toml, json!({})).await;
    assert_eq!(execution["status"], "failed", "{execution:#}");
    let hold = step(&execution, "hold");
    assert_eq!(hold["status"], "compensation_failed");
    assert_eq!(hold["compensation_attempts"], 3);
    assert_eq!(hold["compensation_error"]["kind"], "retryable");
    assert_eq!(events(&execution, "compensation_attempt_failed").len(), 3);
    // The other completed step is still compensated.
    assert_eq!(step(&execution, "first")["status"], "compensated");
    assert_eq!(events(&execution, "execution_failed").len(), 1);
}

#[tokio::test]
async fn a_compensation_that_recovers_on_retry_still_compensates_cleanly() {
    let engine = engine();
    let toml = r#"
        name = "recovers"
        retry = { max_attempts = 3, initial_backoff_ms = 10 }
        [[steps]]
        id = "hold"
        plugin = "compensate-fails"
        input = { compensation_failures = 1 }
        [[steps]]
        id = "boom"
        plugin = "fail"
        after = ["hold"]
    "#;
    let execution = run(&engine, toml, json!({})).await;
    assert_eq!(execution["status"], "compensated", "{execution:#}");
    assert_eq!(step(&execution, "hold")["compensation_attempts"], 2);
}

#[tokio::test]
async fn independent_steps_run_at_the_same_time() {
    let engine = engine();
    let execution = run_example(&engine, "branches.toml", json!({"sleep_ms": 400})).await;
    assert_eq!(execution["status"], "succeeded", "{execution:#}");
    assert_eq!(execution["output"]["joined"], json!({"inventory": "inventory", "payment": "payment"}));
    let ordered: Vec<(String, String)> = execution["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "step_started" || e["type"] == "step_succeeded")
        .map(|e| (e["type"].as_str().unwrap().to_string(), e["step"].as_str().unwrap().to_string()))
        .collect();
    // Both branches start before either finishes.
    assert_eq!(ordered[0].0, "step_started");
    assert_eq!(ordered[1].0, "step_started");
    // Each branch started before the other finished: their recorded spans overlap.
    let span = |id: &str| (millis(&step(&execution, id)["started_at"]), millis(&step(&execution, id)["finished_at"]));
    let ((inventory_start, inventory_end), (payment_start, payment_end)) = (span("inventory"), span("payment"));
    assert!(inventory_start < payment_end && payment_start < inventory_end, "the branches' spans do not overlap");
}

#[tokio::test]
async fn a_trapping_guest_fails_its_step_and_the_host_keeps_serving() {
    let engine = engine();
    let toml = r#"
        name = "trap"
        [[steps]]
        id = "ok"
        plugin = "echo"
        [[steps]]
        id = "crash"
        plugin = "panic"
        retry = { max_attempts = 2, initial_backoff_ms = 10 }
        after = ["ok"]
    "#;
    let execution = run(&engine, toml, json!({})).await;
    assert_eq!(execution["status"], "compensated", "{execution:#}");
    let crash = step(&execution, "crash");
    assert_eq!(crash["attempts"], 2, "traps are retried by default");
    assert_eq!(crash["error"]["kind"], "trap");
    let message = crash["error"]["message"].as_str().unwrap();
    assert!(message.contains("unreachable") && message.contains("guest panicked on attempt 2"), "{message}");

    // The same engine runs the next execution normally.
    let next = engine
        .run(
            std::sync::Arc::new(
                Workflow::load_file(&example_workflow("accept-quote.toml"), engine.registry().as_ref()).unwrap(),
            ),
            quote_input(),
            StartOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(next.to_json()["status"], "succeeded");
}

#[tokio::test]
async fn a_guest_that_recovers_from_a_trap_succeeds_on_retry() {
    let engine = engine();
    let toml = r#"
        name = "recover"
        [[steps]]
        id = "crash-once"
        plugin = "panic"
        input = { panic_times = 1 }
        retry = { max_attempts = 2, initial_backoff_ms = 10 }
    "#;
    let execution = run(&engine, toml, json!({})).await;
    assert_eq!(execution["status"], "succeeded", "{execution:#}");
    assert_eq!(step(&execution, "crash-once")["output"], json!(2));
}

#[tokio::test]
async fn a_step_timeout_stops_a_guest_blocked_in_a_host_call() {
    let engine = engine();
    let toml = r#"
        name = "slow"
        [[steps]]
        id = "sleepy"
        plugin = "echo"
        input = { sleep_ms = 10000 }
        timeout_ms = 200
        retry = { max_attempts = 1 }
    "#;
    let execution = run(&engine, toml, json!({})).await;
    let duration = step_duration_ms(&execution, "sleepy");
    assert!(duration < 2500, "the 10 s sleep was cut short at the 200 ms timeout, after {duration} ms");
    assert_eq!(execution["status"], "compensated", "{execution:#}");
    assert_eq!(step(&execution, "sleepy")["error"]["kind"], "deadline_exceeded");
}

#[tokio::test]
async fn retryable_errors_exhaust_their_attempts_then_fail() {
    let engine = engine();
    let toml = r#"
        name = "exhaust"
        [[steps]]
        id = "always"
        plugin = "fail"
        input = { kind = "retryable", message = "still down" }
        retry = { max_attempts = 3, initial_backoff_ms = 5 }
    "#;
    let execution = run(&engine, toml, json!({})).await;
    assert_eq!(execution["status"], "compensated");
    let always = step(&execution, "always");
    assert_eq!(always["status"], "failed");
    assert_eq!(always["attempts"], 3);
    assert_eq!(always["error"], json!({"kind": "retryable", "message": "still down"}));
    assert_eq!(events(&execution, "step_failed").len(), 1);
}

#[tokio::test]
async fn a_missing_referenced_value_fails_the_step_without_running_it() {
    let engine = engine();
    let toml = r#"
        name = "missing"
        [[steps]]
        id = "first"
        plugin = "echo"
        input = { a = 1 }
        [[steps]]
        id = "second"
        plugin = "echo"
        input = { b = "$.steps.first.output.b" }
    "#;
    let execution = run(&engine, toml, json!({})).await;
    assert_eq!(execution["status"], "compensated");
    let second = step(&execution, "second");
    assert_eq!(second["attempts"], 0);
    assert_eq!(second["error"]["kind"], "input_mapping");
    assert!(second["error"]["message"].as_str().unwrap().contains("$.steps.first.output.b"));
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_first_execution() {
    let engine = engine();
    let workflow = example(&engine, "accept-quote.toml");
    let options = StartOptions { idempotency_key: Some("quote-42".into()), ..Default::default() };
    let first = engine.run(workflow.clone(), quote_input(), options.clone()).await.unwrap();
    let second = engine.run(workflow, quote_input(), options).await.unwrap();
    assert_eq!(first.execution_id, second.execution_id);
    assert_eq!(second.status, stepwise::journal::ExecutionStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_executions_do_not_interfere() {
    let engine = engine();
    let workflow = example(&engine, "accept-quote.toml");
    let runs = (0..40).map(|i| {
        let engine = engine.clone();
        let workflow = workflow.clone();
        let mut input = quote_input();
        input["cart_id"] = json!(format!("cart-{i}"));
        tokio::spawn(async move { engine.run(workflow, input, StartOptions::default()).await.unwrap() })
    });
    let executions: Vec<_> = futures_join(runs).await;
    for (i, execution) in executions.iter().enumerate() {
        let json = execution.to_json();
        assert_eq!(json["status"], "succeeded");
        assert_eq!(step(&json, "order")["output"]["cart_id"], json!(format!("cart-{i}")));
    }
}

async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        results.push(handle.await.expect("task"));
    }
    results
}

/// `on_permanent_failure`: `skip` and `continue` let an execution go on past
/// a step (or a fan-out element) that failed for good; nothing of it is
/// compensated, and `fail` (the default) still rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_and_continue_go_on_past_a_step_that_failed_for_good() {
    let engine = engine();
    let workflow = |policy: &str| {
        format!(
            r#"
            name = "tolerant"
            [[steps]]
            id = "first"
            plugin = "echo"
            input = {{ n = 1 }}
            [[steps]]
            id = "risky"
            plugin = "fail"
            input = {{ message = "the ERP is read-only today" }}
            after = ["first"]
            on_permanent_failure = "{policy}"
            [[steps]]
            id = "reader"
            plugin = "echo"
            input = {{ saw = "$.steps.risky.output" }}
            [[steps]]
            id = "independent"
            plugin = "echo"
            input = {{ n = 2 }}
            after = ["risky"]
            "#
        )
    };
    let continued = run(&engine, &workflow("continue"), json!({})).await;
    assert_eq!(continued["status"], "succeeded", "{continued:#}");
    let risky = step(&continued, "risky");
    assert_eq!(risky["status"], "succeeded", "the step's error became its output: {risky:#}");
    assert_eq!(risky["output"]["error"]["kind"], "permanent");
    assert_eq!(step(&continued, "reader")["output"]["saw"]["error"]["message"], "the ERP is read-only today");
    assert_eq!(events(&continued, "failure_tolerated").len(), 1);

    let skipped = run(&engine, &workflow("skip"), json!({})).await;
    assert_eq!(skipped["status"], "succeeded", "{skipped:#}");
    let risky = step(&skipped, "risky");
    assert_eq!(risky["status"], "skipped");
    assert!(risky["skip_reason"].as_str().unwrap().contains("on_permanent_failure is `skip`"), "{risky:#}");
    assert_eq!(step(&skipped, "reader")["status"], "skipped", "it needs the skipped step's output");
    assert!(step(&skipped, "reader")["skip_reason"].as_str().unwrap().contains("risky"));
    assert_eq!(step(&skipped, "independent")["status"], "succeeded");

    let failed = run(&engine, &workflow("fail"), json!({})).await;
    assert_eq!(failed["status"], "compensated", "the default rolls back");
    assert_eq!(step(&failed, "first")["status"], "compensated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_and_continue_apply_to_each_element_of_a_fan_out() {
    let engine = engine();
    let workflow = |policy: &str| {
        format!(
            r#"
            name = "limits"
            [[steps]]
            id = "check"
            plugin = "cart-limit"
            for_each = "$.input.carts"
            input = "$.item"
            on_permanent_failure = "{policy}"
            [[steps]]
            id = "report"
            plugin = "echo"
            input = {{ checked = "$.steps.check.output" }}
            "#
        )
    };
    let carts = json!({"carts": [{"id": "a", "total": 10}, {"id": "b", "total": 50000}, {"id": "c", "total": 20}]});
    let skipped = run(&engine, &workflow("skip"), carts.clone()).await;
    assert_eq!(skipped["status"], "succeeded", "{skipped:#}");
    let checked = &step(&skipped, "report")["output"]["checked"];
    assert_eq!(checked[0]["approved"], true);
    assert_eq!(checked[1], Value::Null, "the failed element reads as null");
    assert_eq!(checked[2]["approved"], true);
    let elements = step(&skipped, "check")["elements"].as_array().unwrap().clone();
    assert_eq!(elements[1]["status"], "failed", "the element itself says it failed");

    let continued = run(&engine, &workflow("continue"), carts).await;
    assert_eq!(continued["status"], "succeeded", "{continued:#}");
    let checked = &step(&continued, "report")["output"]["checked"];
    assert_eq!(checked[1]["error"]["kind"], "permanent", "{checked:#}");
    assert_eq!(checked[0]["approved"], true);
}

#[tokio::test]
async fn a_guest_that_skips_itself_is_skipped_with_its_readers_and_never_compensated() {
    let engine = engine();
    let workflow = r#"
        name = "gift"
        [[steps]]
        id = "gift"
        plugin = "apply-gift-card"
        input = { gift_card = "$.input.card ?? null", total = 40 }
        [[steps]]
        id = "thank"
        plugin = "echo"
        input = { card = "$.steps.gift.output.card" }
        [[steps]]
        id = "order"
        plugin = "fail"
        input = { message = "$.input.order_error" }
        after = ["gift"]
        when = "has(input.order_error)"
    "#;
    let skipped = run(&engine, workflow, json!({})).await;
    assert_eq!(skipped["status"], "succeeded", "{skipped:#}");
    let gift = step(&skipped, "gift");
    assert_eq!(gift["status"], "skipped", "{gift:#}");
    assert_eq!(gift["skip_reason"], "the step skipped itself: the cart has no gift card");
    assert_eq!(step(&skipped, "thank")["status"], "skipped", "it reads the skipped step's output");
    let timeline = events(&skipped, "step_skipped");
    assert!(timeline.iter().any(|e| e["step"] == "gift" && e["reason"].as_str().unwrap().contains("no gift card")));

    // Rolled back after a later failure: the skipped step is not compensated.
    let rolled_back = run(&engine, workflow, json!({"order_error": "out of stock"})).await;
    assert_eq!(rolled_back["status"], "compensated", "{rolled_back:#}");
    assert_eq!(step(&rolled_back, "gift")["status"], "skipped");
    assert!(events(&rolled_back, "compensation_started").is_empty(), "{rolled_back:#}");

    // With a gift card it runs, and a rollback compensates it.
    let applied = run(&engine, workflow, json!({"card": "GC-1", "order_error": "out of stock"})).await;
    assert_eq!(applied["status"], "compensated", "{applied:#}");
    assert_eq!(step(&applied, "gift")["status"], "compensated");
    assert_eq!(step(&applied, "thank")["status"], "compensated");
}

#[test]
fn on_permanent_failure_is_refused_on_a_transform() {
    let engine = engine();
    let toml = "name = \"t\"\n[[steps]]\nid = \"sum\"\ntransform = \"1 + 1\"\non_permanent_failure = \"skip\"\n";
    let error = Workflow::from_toml("t.toml", toml, engine.registry().as_ref()).unwrap_err().to_string();
    assert!(error.contains("on_permanent_failure") && error.contains("plugin and workflow steps"), "{error}");
    let bad = "name = \"t\"\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\non_permanent_failure = \"ignore\"\n";
    let error = Workflow::from_toml("t.toml", bad, engine.registry().as_ref()).unwrap_err().to_string();
    assert!(error.contains("unknown variant `ignore`"), "{error}");
}

/// A service that panics on every call, in the guest's own task.
struct Panicking;

impl stepwise::services::Service for Panicking {
    fn call(&self, method: &str, _input: Value, _caller: &stepwise::services::Caller) -> Result<Value, String> {
        panic!("the {method} handler panicked on purpose");
    }

    fn may_block(&self) -> bool {
        false
    }
}

/// An engine whose `inventory` and `payments` services panic.
fn panicking_host() -> stepwise::engine::Engine {
    engine_with(&plugins_dir(), resources_serving(std::sync::Arc::new(Panicking), std::sync::Arc::new(Panicking)))
}

#[tokio::test]
async fn a_host_panic_during_a_call_fails_that_attempt_whether_the_call_ran_inline_or_in_a_task() {
    let engine = panicking_host();
    // A sequence: each call is the only one in flight and runs in the
    // owner's own task. The reservation's attempts panic, and the execution
    // rolls back the cart step before it.
    let execution = run_example(&engine, "accept-quote.toml", quote_input()).await;
    assert_eq!(execution["status"], "compensated", "{execution:#}");
    let failures = events(&execution, "step_attempt_failed");
    assert_eq!(failures.len(), 3, "each of the three attempts failed: {failures:#?}");
    for failure in &failures {
        assert_eq!(failure["step"], "reserve");
        assert_eq!(failure["error"]["kind"], "trap");
        assert!(failure["error"]["message"].as_str().unwrap().contains("panicked"), "{failure:#}");
    }

    // A fan-out: the first element's call starts inline and moves to a task
    // when the second starts; the others (up to four at once) get tasks of
    // their own. Every element's attempts panic.
    let items: Vec<Value> =
        (0..6).map(|i| json!({"sku": format!("SKU-{i}"), "quantity": 1, "unit_price": 10})).collect();
    let input = json!({"cart_id": "cart-panic", "items": items, "currency": "EUR"});
    let execution = run_example(&engine, "reserve-each.toml", input).await;
    assert_eq!(execution["status"], "compensated", "{execution:#}");
    let failed: std::collections::BTreeSet<String> = events(&execution, "step_attempt_failed")
        .iter()
        .inspect(|failure| assert!(failure["error"]["message"].as_str().unwrap().contains("panicked"), "{failure:#}"))
        .map(|failure| failure["step"].as_str().unwrap().to_string())
        .collect();
    assert!(failed.len() >= 2, "elements beside the first failed too (calls in tasks): {failed:?}");

    // The host goes on: an execution that calls no service still succeeds.
    let execution = run(
        &engine,
        "name = \"after-panics\"\n[[steps]]\nid = \"say\"\nplugin = \"echo\"\ninput = { n = 1 }\n",
        json!({}),
    )
    .await;
    assert_eq!(execution["status"], "succeeded", "{execution:#}");
}

/// The demo inventory behind a gate: its first call tells the test it
/// started, then waits until the test opens the gate. Counts every call.
struct Gated {
    inner: std::sync::Arc<stepwise::services::demo::Inventory>,
    entered: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
    open: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    calls: std::sync::Mutex<Vec<String>>,
}

impl stepwise::services::Service for Gated {
    fn call(&self, method: &str, input: Value, caller: &stepwise::services::Caller) -> Result<Value, String> {
        self.calls.lock().unwrap().push(method.to_string());
        let first = self.entered.lock().unwrap().take();
        if let Some(entered) = first {
            entered.send(()).unwrap();
            self.open.lock().unwrap().recv().unwrap();
        }
        self.inner.call(method, input, caller)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_away_mid_run_leaves_its_execution_to_finish_once_on_its_own() {
    let ledger = std::sync::Arc::new(stepwise::services::ledger::MemoryLedger::default());
    let inventory = std::sync::Arc::new(stepwise::services::demo::Inventory::with_ledger(ledger.clone()).unwrap());
    let payments = std::sync::Arc::new(stepwise::services::demo::Payments::with_ledger(ledger).unwrap());
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (open, open_rx) = std::sync::mpsc::channel();
    let gated = std::sync::Arc::new(Gated {
        inner: inventory,
        entered: std::sync::Mutex::new(Some(entered_tx)),
        open: std::sync::Mutex::new(open_rx),
        calls: std::sync::Mutex::new(Vec::new()),
    });
    let engine = engine_with(&plugins_dir(), resources_serving(gated.clone(), payments));
    let workflow = example(&engine, "accept-quote.toml");
    let options = || StartOptions { idempotency_key: Some("caller-goes-away".into()), tenant: None };

    // `run` drives the execution in the caller's own task; the caller goes
    // away while the reservation's call is under way.
    let caller = tokio::spawn({
        let (engine, workflow) = (engine.clone(), workflow.clone());
        async move { engine.run(workflow, quote_input(), options()).await }
    });
    tokio::task::spawn_blocking(move || entered.recv()).await.unwrap().expect("the reservation started");
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled(), "the caller was gone before the execution rested");

    // The execution goes on without it: the call that was under way ends,
    // and the rest of the steps run.
    open.send(()).unwrap();
    let (id, settling) = engine.start(workflow, quote_input(), options()).await.unwrap();
    assert!(settling.is_none(), "the key names the execution the caller started");
    // A guard against a hang (an owner lost with its caller), not a timing.
    let rested = tokio::time::timeout(std::time::Duration::from_secs(120), engine.wait_for_rest(&id)).await;
    let execution = rested.expect("the execution rests without its caller").unwrap().to_json();
    assert_eq!(execution["status"], "succeeded", "{execution:#}");
    assert_eq!(event_steps(&execution, "step_started").iter().filter(|step| *step == "reserve").count(), 1);
    assert_eq!(*gated.calls.lock().unwrap(), ["reserve"], "the reservation was made once, and nothing undone");
}
