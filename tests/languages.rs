//! Steps in Rust, JavaScript and TypeScript (@stepwise/sdk on Stepwise's
//! QuickJS runtime and on SpiderMonkey), Python (componentize-py) and raw
//! WAT, in one workflow:
//! data flows between them, compensations run in each language, errors map
//! to the contract, and the sandbox stops runaway guests whatever their
//! runtime.

use serde_json::{json, Value};
use std::sync::Arc;
use stepwise::engine::StartOptions;
use stepwise::services::ledger::Ledger;
use stepwise::workflow::Workflow;
use stepwise_test_support::*;

fn logs(execution: &Value, contains: &str) -> Vec<String> {
    events(execution, "log")
        .iter()
        .filter(|e| e["message"].as_str().unwrap_or_default().contains(contains))
        .map(|e| format!("{}: {}", e["step"].as_str().unwrap_or_default(), e["message"].as_str().unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_mixes_rust_javascript_and_python_steps() {
    let host = demo_host();
    let workflow = Arc::new(
        Workflow::load_file(&example_workflow("accept-quote-polyglot.toml"), host.engine.registry().as_ref()).unwrap(),
    );
    let execution = host.engine.run(workflow, quote_input(), StartOptions::default()).await.unwrap().to_json();
    assert_eq!(execution["status"], "succeeded", "{execution:#}");
    assert!(execution["output"]["reservation_id"].as_str().unwrap().starts_with("res_"));
    assert!(execution["output"]["authorization_id"].as_str().unwrap().starts_with("auth_"));
    assert_eq!(logs(&execution, "(JavaScript)").len(), 1);
    assert_eq!(logs(&execution, "(Python)").len(), 1);
    let payments = host.payments.snapshot();
    assert_eq!(payments.authorizations_applied, 1);
    assert_eq!(host.inventory.snapshot().reserves_applied, 1);
    // What each call cost is recorded, whatever the language, and summed.
    let mut fuel = 0;
    for (id, language) in [("cart", "Rust"), ("reserve", "JavaScript"), ("payment", "Python")] {
        let cost = &step(&execution, id)["cost"];
        assert_eq!(cost["calls"], 1, "{language}: {cost}");
        assert!(cost["fuel"].as_u64().unwrap() > 0, "{language} consumed fuel: {cost}");
        assert!(cost["wall_us"].as_u64().unwrap() > 0, "{language} took time: {cost}");
        assert!(cost["peak_memory_bytes"].as_u64().unwrap() >= 65536, "{language} had a memory: {cost}");
        fuel += cost["fuel"].as_u64().unwrap();
    }
    assert_eq!(step(&execution, "wrap")["status"], "skipped", "no gift: the TypeScript step skipped itself");
    assert_eq!(step(&execution, "wrap")["skip_reason"], "the step skipped itself: no item is a gift");
    let total = &execution["cost"];
    assert_eq!(total["calls"], 5, "five steps, one call each: {total}");
    assert!(total["fuel"].as_u64().unwrap() > fuel, "the total includes create-order too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_failure_runs_compensations_in_all_three_languages_in_reverse_order() {
    let host = demo_host();
    let workflow = Arc::new(
        Workflow::load_file(&example_workflow("accept-quote-polyglot-declined.toml"), host.engine.registry().as_ref())
            .unwrap(),
    );
    let execution = host.engine.run(workflow, quote_input(), StartOptions::default()).await.unwrap().to_json();
    assert_eq!(execution["status"], "compensated", "{execution:#}");
    assert_eq!(event_steps(&execution, "step_compensated"), vec!["payment", "reserve", "cart"]);
    assert_eq!(logs(&execution, "voided").len(), 1, "Python compensated: {:?}", logs(&execution, ""));
    assert_eq!(logs(&execution, "released reservation").len(), 1, "JavaScript compensated");
    assert_eq!(logs(&execution, "nothing to undo").len(), 1, "Rust compensated");
    assert_eq!(host.ledger.entries("payments").unwrap().iter().filter(|e| e.method == "void").count(), 1);
    assert_eq!(host.ledger.entries("inventory").unwrap().iter().filter(|e| e.method == "release").count(), 1);
    assert!(host.inventory.snapshot().reservations.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_typescript_step_runs_and_is_compensated_with_the_others() {
    let host = demo_host();
    let workflow = Arc::new(
        Workflow::load_file(&example_workflow("accept-quote-polyglot-declined.toml"), host.engine.registry().as_ref())
            .unwrap(),
    );
    let mut input = quote_input();
    input["items"][0]["gift"] = json!(true);
    let execution = host.engine.run(workflow, input, StartOptions::default()).await.unwrap().to_json();
    assert_eq!(execution["status"], "compensated", "{execution:#}");
    let wrap = step(&execution, "wrap");
    assert_eq!(wrap["status"], "compensated", "{wrap:#}");
    assert_eq!(wrap["output"]["wrapped"], json!(input_quantity(&quote_input(), 0)));
    assert_eq!(logs(&execution, "wrapped 2 units (TypeScript)").len(), 1, "{:?}", logs(&execution, ""));
    assert_eq!(logs(&execution, "unwrapped wrap-").len(), 1, "compensated once, with its compensation data");
    // Both reservations (stock, wraps) were made once and released once.
    let inventory = host.ledger.entries("inventory").unwrap();
    assert_eq!(inventory.iter().filter(|e| e.method == "reserve").count(), 2);
    assert_eq!(inventory.iter().filter(|e| e.method == "release").count(), 2);
    assert!(host.inventory.snapshot().reservations.is_empty());
}

fn input_quantity(input: &Value, item: usize) -> u64 {
    input["items"][item]["quantity"].as_u64().unwrap()
}

/// What a JavaScript step written with @stepwise/sdk throws or returns becomes
/// the contract's result, never a trap: the same on QuickJS and SpiderMonkey
/// (one source, built for each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatever_a_javascript_step_throws_is_a_step_error_with_its_message() {
    let engine = engine();
    for plugin in ["js-cart-total", "js-cart-total-spidermonkey"] {
        let run_cart = |input: Value| {
            let engine = engine.clone();
            async move {
                let toml = format!("name = \"t\"\n[[steps]]\nid = \"s\"\nplugin = \"{plugin}\"\ninput = \"$.input\"\nretry = {{ max_attempts = 2, initial_backoff_ms = 5 }}\n");
                run(&engine, &toml, input).await
            }
        };
        // `throw new Error(..)`: retryable, with its message and stack.
        let thrown = run_cart(json!({"fail": "retryable"})).await;
        let error = &step(&thrown, "s")["error"];
        assert_eq!(
            (error["kind"].as_str(), step(&thrown, "s")["attempts"].as_u64()),
            (Some("retryable"), Some(2)),
            "{plugin}"
        );
        let message = error["message"].as_str().unwrap();
        assert!(message.starts_with("Error: failed as asked") && message.contains("\n"), "{plugin}: {message}");
        // StepResponse.permanentFailure: permanent, one attempt.
        let permanent = run_cart(json!({"fail": "permanent"})).await;
        assert_eq!(step(&permanent, "s")["error"]["kind"], "permanent", "{plugin}");
        assert_eq!(step(&permanent, "s")["attempts"], 1, "{plugin}");
        // A plain object returned is the output.
        let cart = run_cart(json!({"items": [{"quantity": 2, "unit_price": 5}]})).await;
        assert_eq!(step(&cart, "s")["output"], json!({"total": 10, "units": 2, "lines": 1}), "{plugin}");
        // A thrown string, object or number: retryable, carrying what was thrown.
        for (kind, message) in [
            ("string", "a thrown string"),
            ("object", r#"thrown: {"code":"E42","detail":"a thrown object"}"#),
            ("number", "thrown: 42"),
        ] {
            let thrown = run_cart(json!({"throw": kind})).await;
            let error = &step(&thrown, "s")["error"];
            let got = (error["kind"].as_str(), error["message"].as_str());
            assert_eq!(got, (Some("retryable"), Some(message)), "{plugin}: {kind}");
        }
    }
    // In an async step: a rejected promise, and a failing service.
    let toml = "name = \"w\"\n[[steps]]\nid = \"s\"\nplugin = \"js-gift-wrap\"\ninput = \"$.input\"\nretry = { max_attempts = 1 }\n";
    let rejected = run(&engine, toml, json!({"items": [], "reject": "the wrap machine jammed"})).await;
    let error = &step(&rejected, "s")["error"];
    assert_eq!(error["kind"], "retryable", "{rejected:#}");
    assert!(error["message"].as_str().unwrap().starts_with("Error: the wrap machine jammed"), "{error}");
    let gift = json!({"items": [{"sku": "A", "quantity": "lots", "gift": true}]}); // the service refuses it
    let refused = run(&engine, toml, gift).await;
    let error = &step(&refused, "s")["error"];
    assert_eq!(error["kind"], "retryable", "{refused:#}");
    assert!(error["message"].as_str().unwrap().contains("ServiceError: inventory.reserve:"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_and_permanent_errors_map_the_same_in_every_language() {
    let engine = engine();
    for plugin in ["cart-total", "js-cart-total", "py-cart-total"] {
        for (kind, attempts) in [("retryable", 2), ("permanent", 1)] {
            let toml = format!(
                "name = \"errors\"\n[[steps]]\nid = \"s\"\nplugin = \"{plugin}\"\ninput = {{ fail = \"{kind}\" }}\nretry = {{ max_attempts = 2, initial_backoff_ms = 5 }}\n"
            );
            let execution = run(&engine, &toml, json!({})).await;
            let step = step(&execution, "s");
            assert_eq!(step["error"]["kind"], kind, "{plugin}: {execution:#}");
            assert_eq!(step["attempts"], attempts, "{plugin} {kind}");
            assert!(step["error"]["message"].as_str().unwrap().contains("failed as asked"), "{plugin}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_step_gives_the_same_result_in_every_language_and_in_raw_wat() {
    let engine = engine();
    let cart = quote_input();
    let mut outputs = Vec::new();
    for plugin in ["cart-total", "js-cart-total", "py-cart-total"] {
        let toml = format!("name = \"total\"\n[[steps]]\nid = \"s\"\nplugin = \"{plugin}\"\ninput = \"$.input\"\n");
        let execution = run(&engine, &toml, cart.clone()).await;
        assert_eq!(execution["status"], "succeeded", "{plugin}: {execution:#}");
        outputs.push(step(&execution, "s")["output"].clone());
    }
    assert_eq!(outputs[0], json!({"total": 6200, "units": 3, "lines": 2}));
    assert!(outputs.iter().all(|output| output == &outputs[0]), "{outputs:?}");

    let toml = "name = \"raw\"\n[[steps]]\nid = \"s\"\nplugin = \"wat-echo\"\ninput = { echo = \"$.input.cart_id\" }\n";
    let execution = run(&engine, toml, cart).await;
    assert_eq!(step(&execution, "s")["output"], json!({"echo": "cart_01HQ"}), "{execution:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loops_in_javascript_and_python_are_stopped_by_the_same_limits() {
    // The same guests under a second name with a budget of fuel no loop
    // exhausts in a few seconds: only the deadline can stop them, whatever
    // the speed of the machine.
    let ample = |name: &str| format!("name = \"{name}\"\n[limits]\nfuel = 1000000000000\ndeadline_ms = 5000\n");
    let (js, py) = (ample("js-ample"), ample("py-ample"));
    let dir = plugin_dir_with(
        "ample-fuel",
        &[("js-ample", "js-cart-total", Some(js.as_str())), ("py-ample", "py-cart-total", Some(py.as_str()))],
    );
    let host = demo_host_in(&dir);
    let healthy =
        Arc::new(Workflow::load_file(&example_workflow("accept-quote.toml"), host.engine.registry().as_ref()).unwrap());
    // Their own manifests' fuel (300 M) runs out long before their 5 s deadline;
    // with ample fuel, a 20 ms step timeout stops the loop.
    let cases = [
        ("js-cart-total", "", "fuel_exhausted"),
        ("py-cart-total", "", "fuel_exhausted"),
        ("js-ample", "timeout_ms = 20\n", "deadline_exceeded"),
        ("py-ample", "timeout_ms = 20\n", "deadline_exceeded"),
    ];
    for (plugin, limit, expected) in cases {
        let toml = format!(
            "name = \"spin\"\n[[steps]]\nid = \"s\"\nplugin = \"{plugin}\"\ninput = {{ spin = true }}\nretry = {{ max_attempts = 1 }}\n{limit}"
        );
        let spinning = workflow(&host.engine, &toml);
        let (spun, ok) = tokio::join!(
            host.engine.run(spinning, json!({}), StartOptions::default()),
            host.engine.run(healthy.clone(), quote_input(), StartOptions::default())
        );
        let spun = spun.unwrap().to_json();
        assert_eq!(step(&spun, "s")["error"]["kind"], expected, "{plugin}: {spun:#}");
        assert_eq!(spun["status"], "compensated");
        assert_eq!(ok.unwrap().to_json()["status"], "succeeded", "the host keeps serving beside {plugin}");
    }
}

/// The JavaScript steps' unit tests (`node --test`, through the SDK's
/// binding with services answered by functions: no Wasm) pass.
#[test]
fn the_javascript_steps_unit_tests_pass_in_node() {
    plugins_dir(); // installs the pinned npm packages
    let output = std::process::Command::new("node")
        .args(["--test", "test/"])
        .current_dir(repo_root().join("guest-examples/js"))
        .output()
        .expect("running node");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}{}", String::from_utf8_lossy(&output.stderr));
    assert!(report.contains("# pass 10") && report.contains("# fail 0"), "{report}");
}

/// What a JavaScript step meets inside a call on the QuickJS runtime: fresh
/// randomness and the current time (nothing frozen by the build's
/// snapshot), the host interfaces as modules, and failures that are step
/// errors or stopped by the sandbox, each leaving the next call intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_step_on_quickjs_sees_a_fresh_world_in_every_call() {
    let engine = engine();
    let probe = |input: Value| {
        let engine = engine.clone();
        async move {
            let toml = "name = \"p\"\n[[steps]]\nid = \"s\"\nplugin = \"js-probe\"\ninput = \"$.input\"\nretry = { max_attempts = 1 }\n";
            let execution = run(&engine, toml, input).await;
            step(&execution, "s").clone()
        }
    };
    let first = probe(json!({"probe": "random"})).await;
    let second = probe(json!({"probe": "random"})).await;
    let draws: Vec<f64> = [&first, &second]
        .iter()
        .flat_map(|s| s["output"]["random"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>())
        .collect();
    assert!(draws.iter().all(|x| (0.0..1.0).contains(x)), "{draws:?}");
    assert_ne!(first["output"], second["output"], "two calls drew the same numbers: the seed was frozen");

    let now = probe(json!({"probe": "now"})).await["output"]["now"].as_u64().unwrap();
    let host_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(now.abs_diff(host_now) < 3_600_000, "Date.now() {now} vs the host's {host_now}");

    let never = probe(json!({"probe": "never"})).await;
    assert_eq!(never["error"]["kind"], "retryable", "{never:#}");
    assert!(never["error"]["message"].as_str().unwrap().contains("never settled"), "{never:#}");
    let fetch = probe(json!({"probe": "fetch"})).await;
    assert_eq!(fetch["error"]["kind"], "permanent", "{fetch:#}");
    assert!(fetch["error"]["message"].as_str().unwrap().contains("fetch is not available"), "{fetch:#}");

    let kv = probe(json!({"probe": "kv", "key": "colour", "value": "teal"})).await;
    assert_eq!(kv["output"], json!({"value": "teal"}), "{kv:#}");
    let config = probe(json!({"probe": "config", "key": "greeting"})).await;
    assert_eq!(config["output"], json!({"value": "hello"}), "{config:#}");

    // A lone surrogate in a log line does not fail the step; console writes to the log.
    let toml = "name = \"p\"\n[[steps]]\nid = \"s\"\nplugin = \"js-probe\"\ninput = { probe = \"log\" }\n";
    let logged = run(&engine, toml, json!({})).await;
    assert_eq!(step(&logged, "s")["status"], "succeeded", "{logged:#}");
    assert_eq!(logs(&logged, "cut:"), vec!["s: cut: \u{FFFD}".to_string()]);
    assert_eq!(logs(&logged, "from console"), vec![r#"s: from console {"n":1}"#.to_string()]);

    // Deep recursion is a RangeError the step can catch, as in Node, long
    // before the wasm stack would trap; uncaught, it is a retryable error.
    let caught = probe(json!({"probe": "recurse-caught"})).await;
    assert_eq!(caught["output"]["caught"], "RangeError: Maximum call stack size exceeded", "{caught:#}");
    assert!(caught["output"]["depth"].as_u64().unwrap() > 500, "{caught:#}");
    let recursed = probe(json!({"probe": "recurse"})).await;
    assert_eq!(recursed["error"]["kind"], "retryable", "{recursed:#}");
    assert!(recursed["error"]["message"].as_str().unwrap().starts_with("RangeError: Maximum call stack size exceeded"));
    // Allocation without end runs out of fuel or memory; the next call is healthy.
    let allocated = probe(json!({"probe": "allocate"})).await;
    let kind = allocated["error"]["kind"].as_str().unwrap();
    assert!(["fuel_exhausted", "memory_limit", "retryable"].contains(&kind), "{allocated:#}");
    assert_eq!(probe(json!({"probe": "config", "key": "greeting"})).await["output"]["value"], "hello");
}
