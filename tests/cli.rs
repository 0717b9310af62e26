//! The `stepwise` command line as a user runs it: exit codes, JSON on stdout,
//! errors on stderr naming the file, step and field.

use serde_json::{json, Value};
use stepwise_test_support::*;

fn plugins_arg() -> String {
    plugins_dir().display().to_string()
}

/// Runs `stepwise` with the in-memory store (the CLI defaults to `sqlite://stepwise.db`).
fn stepwise(args: &[&str]) -> std::process::Output {
    let mut args = args.to_vec();
    if matches!(args.first(), Some(&"run")) {
        args.extend(["--store", "memory"]);
    }
    stepwise_test_support::stepwise(args.as_slice())
}

fn write_workflow(name: &str, text: &str) -> std::path::PathBuf {
    let dir = test_dir("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

#[test]
fn run_prints_the_succeeded_execution_and_exits_zero() {
    let output = stepwise(&[
        "run",
        "guest-examples/workflows/accept-quote.toml",
        "--input-file",
        "guest-examples/workflows/accept-quote.input.json",
        "--plugins",
        &plugins_arg(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let execution: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(execution["status"], "succeeded");
    assert_eq!(execution["workflow"], "accept-quote");
    for field in ["execution_id", "output", "steps", "events"] {
        assert!(!execution[field].is_null(), "missing {field}");
    }
    for step in execution["steps"].as_array().unwrap() {
        for field in ["id", "plugin", "status", "attempts", "output", "error", "compensation_error"] {
            assert!(step.get(field).is_some(), "step lacks {field}");
        }
    }
    let event = &execution["events"][1];
    assert_eq!(event["type"], "step_started");
    assert!(event["at"].is_string() && event["attempt"] == 1 && event["step"] == "cart");
}

#[test]
fn run_exits_one_when_the_execution_is_compensated() {
    let output = stepwise(&[
        "run",
        "guest-examples/workflows/accept-quote-declined.toml",
        "--input",
        r#"{"cart_id": "c-9", "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unit_price": 10}]}"#,
        "--plugins",
        &plugins_arg(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let execution: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(execution["status"], "compensated");
    assert_eq!(execution["error"]["message"], "order rejected: quote expired");
}

#[test]
fn invalid_workflows_exit_two_with_file_step_and_field() {
    let cases = [
        ("unknown-plugin.toml", "name = \"w\"\n[[steps]]\nid = \"pay\"\nplugin = \"stripe\"\n", "step `pay`, field `plugin`: unknown plugin `stripe`"),
        ("syntax.toml", "name = \"w\"\n[[steps]\nid = \"a\"\n", "line 2"),
        ("unknown-step.toml", "name = \"w\"\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\ninput = { x = \"$.steps.b.output\" }\n", "step `a`, field `input.x`: `$.steps.b.output`: unknown step `b`"),
        ("cycle.toml", "name = \"w\"\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\nafter = [\"b\"]\n[[steps]]\nid = \"b\"\nplugin = \"echo\"\nafter = [\"a\"]\n", "dependency cycle"),
        ("duplicate.toml", "name = \"w\"\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\n", "duplicate step id `a`"),
        ("malformed.toml", "name = \"w\"\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\ninput = \"$.input..x\"\n", "malformed reference"),
    ];
    for (file, text, expected) in cases {
        let path = write_workflow(file, text);
        let output = stepwise(&["run", path.to_str().unwrap(), "--plugins", &plugins_arg()]);
        assert_eq!(output.status.code(), Some(2), "{file}: {}", stderr(&output));
        let message = stderr(&output);
        assert!(message.contains(file), "{file}: error does not name the file: {message}");
        assert!(message.contains(expected), "{file}: expected `{expected}` in: {message}");
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn bad_input_json_exits_two() {
    let output =
        stepwise(&["run", "guest-examples/workflows/flaky.toml", "--input", "{not json", "--plugins", &plugins_arg()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("invalid JSON in --input"), "{}", stderr(&output));
}

#[test]
fn a_missing_workflow_file_exits_two() {
    let output = stepwise(&["run", "no/such/workflow.toml", "--plugins", &plugins_arg()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("no/such/workflow.toml"), "{}", stderr(&output));
}

#[test]
fn a_component_for_another_contract_version_is_refused() {
    let output = stepwise(&["plugins", "validate", invalid_component("wrong-version").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("stepwise:step/log@0.9.0"), "{message}");
    assert!(message.contains("built for stepwise:step@0.9.0, this host implements stepwise:step@0.1.0"), "{message}");
}

#[test]
fn a_component_of_another_world_is_refused_naming_the_missing_exports() {
    let output = stepwise(&["plugins", "validate", invalid_component("not-a-step").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("missing export `invoke`") && message.contains("missing export `compensate`"),
        "{message}"
    );
}

#[test]
fn a_file_that_is_not_a_component_is_refused() {
    let path = write_workflow("garbage.wasm", "this is not wasm");
    let output = stepwise(&["plugins", "validate", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("is not a valid WebAssembly component"), "{}", stderr(&output));
}

#[test]
fn a_workflow_using_a_broken_plugin_is_refused_before_it_starts() {
    let dir = test_dir("broken-plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(invalid_component("not-a-step"), dir.join("echo.wasm")).unwrap();
    let output = stepwise(&[
        "run",
        "guest-examples/workflows/branches.toml",
        "--input",
        "{\"sleep_ms\": 0}",
        "--plugins",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("echo.wasm") && stderr(&output).contains("missing export `invoke`"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn valid_plugins_validate_and_list() {
    let plugin = plugins_dir().join("reserve-inventory.wasm");
    let output = stepwise(&["plugins", "validate", plugin.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let output = stepwise(&["plugins", "list", "--json", "--plugins", &plugins_arg()]);
    let rows: Value = serde_json::from_slice(&output.stdout).unwrap();
    let names: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    for name in ["retrieve-cart", "reserve-inventory", "authorize-payment", "create-order"] {
        assert!(names.contains(&name), "{names:?}");
    }
    assert!(rows.as_array().unwrap().iter().all(|r| r["status"] == "ok" && r["hash"].as_str().unwrap().len() == 64));
}

#[test]
fn inspect_shows_exports_and_imports() {
    let plugin = plugins_dir().join("echo.wasm");
    let output = stepwise(&["plugins", "inspect", plugin.to_str().unwrap()]);
    let description: Value = serde_json::from_slice(&output.stdout).unwrap();
    let exports: Vec<&str> =
        description["exports"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(exports, vec!["invoke", "compensate"]);
    let imports = description["imports"].to_string();
    assert!(imports.contains("stepwise:step/log@0.1.0"), "{imports}");
    assert_eq!(description["implements_step_world"], true);
}

#[test]
fn schema_describes_the_workflow_format() {
    let output = stepwise(&["schema"]);
    assert_eq!(output.status.code(), Some(0));
    let schema: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(schema["title"], "WorkflowDefinition");
    assert!(schema["properties"]["steps"].is_object());
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("workflow.schema.json")).unwrap()).unwrap();
    assert_eq!(schema, committed, "workflow.schema.json is stale: regenerate it with `stepwise schema`");
}

/// A JavaScript project's `node_modules`: the repository's pinned packages,
/// linked, and `@stepwise/sdk` linked to the project's own copy (as `npm
/// install` would make it), so that its build and tests use what it carries.
fn project_node_modules(project: &std::path::Path) {
    let shared = repo_root().join("guest-examples/js/node_modules");
    let own = project.join("node_modules");
    std::fs::create_dir_all(own.join("@stepwise")).unwrap();
    for entry in std::fs::read_dir(&shared).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "@stepwise" {
            std::os::unix::fs::symlink(entry.path(), own.join(entry.file_name())).unwrap();
        }
    }
    std::os::unix::fs::symlink(project.join("stepwise-sdk"), own.join("@stepwise/sdk")).unwrap();
}

#[test]
fn new_creates_step_projects_that_build_and_run_in_every_language() {
    let dir = scratch_dir("new");
    for lang in ["rust", "js", "ts", "python"] {
        let name = format!("hello-{lang}");
        let output = stepwise(&["new", &name, "--lang", lang, "--dir", dir.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let project = dir.join(&name);
        for file in ["wit/step.wit", "workflow.toml", "build.sh"] {
            assert!(project.join(file).is_file(), "{lang}: {file}");
        }
        // Reuse the toolchains scripts/build-guests.sh installed (same pinned
        // versions): the Rust target directory, the npm packages (but
        // @stepwise/sdk, which is the project's own copy), the venv.
        match lang {
            "js" | "ts" => project_node_modules(&project),
            "python" => {
                std::os::unix::fs::symlink(repo_root().join("build/python-venv"), project.join(".venv")).unwrap()
            }
            _ => {}
        }
        // The QuickJS runtime is built from the project's own copy of its
        // source, in the repository's runtime target directory (its
        // dependencies are compiled already).
        let built = build_command(project.join("build.sh"))
            .env("CARGO_TARGET_DIR", repo_root().join("guest-examples/rust/target"))
            .env("STEPWISE_QUICKJS_TARGET_DIR", repo_root().join("guest-examples/js/runtime/target"))
            .output()
            .unwrap();
        assert!(built.status.success(), "{lang}: {}", String::from_utf8_lossy(&built.stderr));
        let plugins = project.display().to_string();
        let run = stepwise(&[
            "run",
            project.join("workflow.toml").to_str().unwrap(),
            "--plugins",
            &plugins,
            "--input",
            r#"{"name": "Ada"}"#,
        ]);
        assert_eq!(run.status.code(), Some(0), "{lang}: {}", stderr(&run));
        let execution: Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(execution["output"]["greet"]["greeting"], "Hello, Ada!", "{lang}");
        if lang == "js" || lang == "ts" {
            // The project's unit tests, on its own SDK copy.
            let tested = std::process::Command::new("node").arg("--test").current_dir(&project).output().unwrap();
            let report = String::from_utf8_lossy(&tested.stdout);
            assert!(tested.status.success() && report.contains("# pass 2"), "{lang}: {report}");
        }
    }
    let again = stepwise(&["new", "hello-rust", "--lang", "rust", "--dir", dir.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("exists already"), "{}", stderr(&again));
    let invalid = stepwise(&["new", "Bad Name", "--lang", "js", "--dir", dir.to_str().unwrap()]);
    assert!(stderr(&invalid).contains("not a valid step name"), "{}", stderr(&invalid));
}

#[test]
fn an_unreachable_postgres_store_is_named_with_the_cause() {
    // Port 1 on loopback: nothing listens there.
    let url = "postgres://stepwise@127.0.0.1:1/stepwise";
    let output = stepwise(&["hosts", "--store", url]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains(url) && message.contains("Connection refused"), "{message}");
}

/// `stepwise invoke` runs one step alone, with its services answered from
/// fixtures: a Rust step's invoke and compensate, a JavaScript and a Python
/// step, and a service failing from its fixture.
#[test]
fn a_step_is_invoked_alone_with_services_from_fixtures() {
    let dir = scratch_dir("invoke");
    let fixture = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let inventory = fixture("inventory.json", r#"{"reserve": {"reservation_id": "res_1", "units": 2}, "release": {}}"#);
    let plugins = plugins_dir().display().to_string();
    let invoke = |args: &[&str]| {
        let output = stepwise(&[&["invoke"][..], args, &["--plugins", &plugins]].concat());
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
        (output.status.code(), report)
    };
    let items = r#"{"items": [{"sku": "A", "quantity": 2}]}"#;
    let service = format!("inventory={inventory}");
    let (code, report) = invoke(&["reserve-inventory", "--input", items, "--service", &service]);
    assert_eq!(code, Some(0), "{report:#}");
    assert!(report["result"]["ok"]["output"]["reservation_id"].as_str().unwrap().starts_with("res_"), "{report:#}");
    assert!(report["logs"][0]["message"].as_str().unwrap().contains("reserved 2 units"), "{report:#}");
    let calls = report["service_calls"].as_array().unwrap();
    assert_eq!((calls.len(), calls[0]["method"].as_str()), (1, Some("reserve")));
    assert!(calls[0]["idempotency_key"].as_str().unwrap().ends_with("/reserve-inventory"));
    assert!(report["cost"]["fuel"].as_u64().unwrap() > 0 && report["cost"]["wall_us"].as_u64().unwrap() > 0);
    let data = report["result"]["ok"]["compensation"].to_string();
    let (code, undone) = invoke(&["reserve-inventory", "--compensate", &data, "--service", &service]);
    assert_eq!(code, Some(0), "{undone:#}");
    assert_eq!(undone["export"], "compensate");
    assert_eq!(undone["service_calls"][0]["method"], "release");

    // A service failing from its fixture: the step's error, exit 1.
    let broken = format!("inventory={}", fixture("broken.json", r#"{"reserve": {"error": "warehouse offline"}}"#));
    let (code, failed) = invoke(&["reserve-inventory", "--input", items, "--service", &broken]);
    assert_eq!(code, Some(1));
    assert!(failed["result"]["error"]["message"].as_str().unwrap().contains("warehouse offline"), "{failed:#}");

    // A step that skips itself says so (exit 0: a skip is not a failure).
    let (code, skipped) = invoke(&["apply-gift-card", "--input", r#"{"total": 5}"#]);
    assert_eq!((code, &skipped["result"]), (Some(0), &json!({"skipped": "the cart has no gift card"})));

    // JavaScript and Python steps, the same way.
    let cart = r#"{"items": [{"sku": "A", "quantity": 2, "unit_price": 150}]}"#;
    let (code, js) = invoke(&["js-cart-total", "--input", cart]);
    assert_eq!(code, Some(0), "{js:#}");
    assert!(js["result"]["ok"]["output"].is_object(), "{js:#}");
    let payments = format!(
        "payments={}",
        fixture("payments.json", r#"{"authorize": {"authorization_id": "auth_1", "status": "authorized"}}"#)
    );
    let (code, py) =
        invoke(&["py-authorize-payment", "--input", r#"{"amount": 300, "currency": "EUR"}"#, "--service", &payments]);
    assert_eq!(code, Some(0), "{py:#}");
    assert_eq!(py["service_calls"][0]["method"], "authorize");
    // TypeScript (async, on QuickJS), with the same inventory fixture.
    let gift = r#"{"items": [{"sku": "A", "quantity": 2, "gift": true}]}"#;
    let (code, ts) = invoke(&["js-gift-wrap", "--input", gift, "--service", &service]);
    assert_eq!(code, Some(0), "{ts:#}");
    assert_eq!(ts["result"]["ok"]["output"]["wrapped"], 2, "{ts:#}");
    assert_eq!(ts["service_calls"][0]["input"]["items"][0]["sku"], "WRAP-A");
    // A recorded step again, with the input it ran with (rebuilt from the log).
    let store = format!("sqlite://{}", dir.join("recorded.db").display());
    let run_flow = |file: &str| -> Value {
        let run = stepwise_test_support::stepwise(&[
            "run",
            &format!("guest-examples/workflows/{file}"),
            "--input-file",
            "guest-examples/workflows/accept-quote.input.json",
            "--store",
            &store,
            "--plugins",
            &plugins,
        ]);
        serde_json::from_slice(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&run)))
    };
    let execution = run_flow("accept-quote.toml");
    let from = format!("{}/reserve", execution["execution_id"].as_str().unwrap());
    let output =
        stepwise(&["invoke", "--from", &from, "--store", &store, "--plugins", &plugins, "--service", &service]);
    let again: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(again["plugin"], "reserve-inventory");
    assert_eq!(again["input"]["items"], step(&execution, "cart")["output"]["items"], "the recorded input: {again:#}");
    assert!(again["result"]["ok"]["output"]["reservation_id"].as_str().unwrap().starts_with("res_"), "{again:#}");
    // ... in the context the recorded attempt saw: the service gets its idempotency key.
    let id = execution["execution_id"].as_str().unwrap();
    let recorded_key = format!("{id}/reserve");
    assert_eq!(
        (&again["context"]["execution_id"], &again["context"]["step_id"], &again["context"]["workflow"]),
        (&json!(id), &json!("reserve"), &json!("accept-quote")),
        "{again:#}"
    );
    assert_eq!(again["context"]["attempt"], 1, "{again:#}");
    assert_eq!(again["service_calls"][0]["idempotency_key"], json!(recorded_key), "{again:#}");
    // Its compensate, with the compensation data the step recorded.
    let output = stepwise(&[
        "invoke",
        "--from",
        &from,
        "--compensate",
        "--store",
        &store,
        "--plugins",
        &plugins,
        "--service",
        &service,
    ]);
    let undo_recorded: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(undo_recorded["export"], "compensate", "{undo_recorded:#}");
    assert_eq!(
        undo_recorded["compensation_data"]["reservation_id"],
        step(&execution, "reserve")["output"]["reservation_id"],
        "{undo_recorded:#}"
    );
    assert_eq!(undo_recorded["service_calls"][0]["method"], "release", "{undo_recorded:#}");
    let wrong = stepwise(&["invoke", "--from", &format!("{from}x"), "--store", &store, "--plugins", &plugins]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("has no step `reservex`"), "{wrong:?}");
    let hook = format!("{id}/validate-cart");
    let wrong = stepwise(&["invoke", "--from", &hook, "--store", &store, "--plugins", &plugins]);
    assert!(stderr(&wrong).contains("is a hook: name one of its handlers"), "{}", stderr(&wrong));
    // A fan-out is rerun element by element (here on a local build named by
    // its path); a workflow step points at its child execution.
    let id_of = |execution: Value| execution["execution_id"].as_str().unwrap().to_string();
    let each = id_of(run_flow("reserve-each.toml"));
    let whole = stepwise(&["invoke", "--from", &format!("{each}/reserve"), "--store", &store, "--plugins", &plugins]);
    assert!(stderr(&whole).contains("is a fan-out: name one of its elements"), "{}", stderr(&whole));
    let local = plugins_dir().join("reserve-inventory.wasm").display().to_string();
    let element = format!("{each}/reserve[1]");
    let rerun_args =
        ["invoke", &local, "--from", &element, "--store", &store, "--plugins", &plugins, "--service", &service];
    let output = stepwise(&rerun_args);
    let rerun: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&output)));
    assert_eq!((&rerun["context"]["step_id"], &rerun["input"]["line"]), (&json!("reserve[1]"), &json!(1)), "{rerun:#}");
    let order = id_of(run_flow("place-order.toml"));
    let child = stepwise(&["invoke", "--from", &format!("{order}/quote"), "--store", &store, "--plugins", &plugins]);
    let pointer = format!("as execution `{order}.quote.1`: rerun one of its steps with `--from {order}.quote.1/STEP`");
    assert!(stderr(&child).contains(&pointer), "{}", stderr(&child));
    // A store that is not there is named, not created empty.
    let absent = dir.join("absent.db");
    let missing = stepwise(&[
        "invoke",
        "--from",
        &from,
        "--store",
        &format!("sqlite://{}", absent.display()),
        "--plugins",
        &plugins,
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("there is no store at"), "{missing:?}");
    assert!(!absent.exists(), "no store was created");

    // A granted service without a fixture is named before anything runs.
    let output = stepwise(&["invoke", "reserve-inventory", "--plugins", &plugins, "--input", items]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("grants the service `inventory`: answer it with --service")
    );
    // `--config` over the manifest's `[config]`, and a component named by its path.
    let over_limit = r#"{"id": "c1", "total": 10}"#;
    let (code, limited) = invoke(&["cart-limit", "--input", over_limit, "--config", "max_total=5"]);
    assert_eq!(code, Some(1), "{limited:#}");
    assert_eq!(limited["result"]["error"]["kind"], "permanent", "{limited:#}");
    assert!(limited["result"]["error"]["message"].as_str().unwrap().contains("limit of 5"), "{limited:#}");
    let output = stepwise(&["invoke", "cart-total", "--plugins", &plugins, "--config", "max_total=5"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--config: plugin `cart-total` cannot read config"), "{}", stderr(&output));
    let path = plugins_dir().join("cart-limit.wasm").display().to_string();
    let (code, within) = invoke(&[&path, "--input", over_limit]);
    assert_eq!(code, Some(0), "{within:#}");
    assert_eq!(
        (&within["result"]["ok"]["output"]["limit"], &within["context"]["step_id"]),
        (&json!(10000), &json!("cart-limit"))
    );
    // The compiled code is cached as `serve` caches it: a second run loads it.
    let (_, again) = invoke(&[&path, "--input", over_limit]);
    assert_eq!(again["load"]["compiled_code"], "cached", "{again:#}");

    // A malformed --service is refused before anything runs.
    let output = stepwise(&["invoke", "reserve-inventory", "--plugins", &plugins, "--service", "inventory"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("expected NAME=FIXTURE.json"));
}

/// The newcomer's first command prints the execution and nothing else on
/// stdout (progress goes to stderr), having built only the four Rust guests
/// accept-quote runs: into an empty plugin directory, it needs nothing else.
#[test]
fn the_demo_prints_only_the_execution_json() {
    plugins_dir();
    let plugins = scratch_dir("demo-plugins");
    let output = build_command(repo_root().join("scripts/demo.sh"))
        .env("STEPWISE_DEMO_PLUGINS", &plugins)
        .args(["--store", &format!("sqlite://{}", plugins.join("demo.db").display())])
        .output()
        .expect("running the demo");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let execution: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("stdout is not one JSON document ({e}): {}", String::from_utf8_lossy(&output.stdout))
    });
    assert_eq!(execution["status"], "succeeded", "{execution:#}");
    assert_eq!(execution["workflow"], "accept-quote");
    let mut built: Vec<String> = std::fs::read_dir(&plugins)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".wasm"))
        .collect();
    built.sort();
    let expected = ["authorize-payment.wasm", "create-order.wasm", "reserve-inventory.wasm", "retrieve-cart.wasm"];
    assert_eq!(built, expected, "the demo builds what accept-quote runs, nothing else");
}

#[test]
fn generate_store_fills_a_new_store_with_finished_and_waiting_executions() {
    let dir = test_dir("generate-store");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("generated.db");
    let store = format!("sqlite://{}", path.display());
    let path_arg = path.display().to_string();
    let generate = || {
        stepwise(&[
            "bench",
            "generate-store",
            &path_arg,
            "--finished",
            "60",
            "--waiting",
            "7",
            "--plugins",
            &plugins_arg(),
        ])
    };
    let output = generate();
    assert!(output.status.success(), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((report["finished"].as_u64(), report["waiting"].as_u64()), (Some(60), Some(7)), "{report}");
    assert!(report["bytes_per_execution"].as_f64().unwrap() > 0.0, "{report}");
    let listed = |status: &str| -> Vec<Value> {
        let output =
            stepwise(&["executions", "list", "--status", status, "--limit", "500", "--json", "--store", &store]);
        assert!(output.status.success(), "{}", stderr(&output));
        serde_json::from_slice::<Value>(&output.stdout).unwrap().as_array().cloned().unwrap_or_default()
    };
    assert_eq!(listed("succeeded").len(), 60);
    let waiting = listed("waiting");
    assert_eq!(waiting.len(), 7);
    assert!(waiting.iter().all(|e| e["workflow"] == "accept-quote-approval"), "{waiting:?}");
    // The waiting ones are spread among the finished ones, not all the newest.
    let output = stepwise(&["executions", "list", "--limit", "7", "--json", "--store", &store]);
    let newest: Value = serde_json::from_slice(&output.stdout).unwrap();
    let newest = newest.as_array().unwrap();
    assert_eq!(newest.len(), 7);
    assert!(newest.iter().any(|e| e["status"] == "succeeded"), "{newest:?}");
    let again = generate();
    assert!(!again.status.success(), "an existing store is never filled again");
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));

    // A host crashes with work in flight: its executions stay running,
    // owned by a process that is gone; `resume` takes them over at once
    // (no lease to wait out) and finishes each; no recorded step runs again.
    let crash = stepwise(&["bench", "crash-store", &path_arg, "--running", "40", "--plugins", &plugins_arg()]);
    assert!(crash.status.success(), "{}", stderr(&crash));
    let report: Value = serde_json::from_slice(&crash.stdout).unwrap();
    assert_eq!(report["started"], 40, "{report}");
    let running = listed("running");
    assert!(!running.is_empty(), "the crash left nothing running");
    let resumed = stepwise(&["resume", "--store", &store, "--plugins", &plugins_arg()]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(listed("running").is_empty());
    assert_eq!(listed("succeeded").len(), 100);
    for execution in running {
        let id = execution["execution_id"].as_str().unwrap();
        let output = stepwise(&["executions", "show", id, "--json", "--store", &store]);
        let shown: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(shown["status"], "succeeded", "{shown:#}");
        let events = shown["events"].as_array().unwrap();
        for step in ["cart", "reserve", "payment", "order"] {
            let succeeded = events.iter().filter(|e| e["type"] == "step_succeeded" && e["step"] == step).count();
            assert_eq!(succeeded, 1, "{id}: step {step} succeeded {succeeded} times: {shown:#}");
        }
    }
    let missing = stepwise(&["bench", "crash-store", "missing.db", "--running", "1", "--plugins", &plugins_arg()]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("missing.db: no such store"), "{}", stderr(&missing));
}

/// The QuickJS runtime module of the log-only world (scripts/build-guests.sh builds it).
fn quickjs_runtime() -> String {
    repo_root().join("guest-examples/js/sdk/runtime/stepwise-qjs-log.wasm").display().to_string()
}

/// `stepwise plugins build-js` on `script`, writing into a scratch directory.
fn build_js(label: &str, script: &str) -> (std::process::Output, std::path::PathBuf) {
    let dir = scratch_dir(label);
    let (source, component) = (dir.join("step.js"), dir.join(format!("{label}.wasm")));
    std::fs::write(&source, script).unwrap();
    let output = stepwise(&[
        "plugins",
        "build-js",
        "--runtime",
        &quickjs_runtime(),
        "--script",
        source.to_str().unwrap(),
        "--output",
        component.to_str().unwrap(),
    ]);
    (output, dir)
}

#[test]
fn build_js_refuses_a_script_that_is_not_a_step_and_says_why() {
    for (label, script, why) in [
        ("js-syntax", "this is not ( javascript", "SyntaxError"),
        ("js-throws", "throw new Error('no database at load time')", "no database at load time"),
        ("js-unbound", "const step = 1 + 1;", "the script bound no step"),
        (
            "js-no-compensate",
            "globalThis.__stepwise_step = { invoke() {} };",
            "__stepwise_step.compensate is not a function",
        ),
        ("js-host-at-load", "__stepwise_host.log('info', 'too early');", "log was called while the step is loading"),
        ("js-random-at-load", "const id = Math.random();", "Math.random was called while the step is loading"),
        ("js-throws-a-value", "throw { code: 42 };", r#"the script threw {"code":42}"#),
        ("js-too-big", "globalThis.data = new Uint8Array(100 << 20).fill(7); globalThis.__stepwise_step = { invoke() {}, compensate() {} };", "more than the 64 MiB a call may use"),
        ("js-loops", "for (;;) {}", "did not finish loading"),
    ] {
        let (output, dir) = build_js(label, script);
        assert_eq!(output.status.code(), Some(2), "{label}: {}", stderr(&output));
        assert!(stderr(&output).contains(why), "{label}: {}", stderr(&output));
        assert!(!dir.join(format!("{label}.wasm")).exists(), "{label}: no component is written");
    }
    let missing = stepwise(&[
        "plugins",
        "build-js",
        "--runtime",
        "/nonexistent/runtime.wasm",
        "--script",
        "x.js",
        "-o",
        "y.wasm",
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("reading the runtime /nonexistent/runtime.wasm"), "{}", stderr(&missing));
}

#[test]
fn a_step_written_against_the_raw_contract_runs_on_the_quickjs_runtime() {
    // No SDK: the script binds `invoke` and `compensate` itself, answering in
    // the WIT's terms (JSON text, tagged outcome and error).
    let script = r#"
        const seen = [];
        globalThis.__stepwise_step = {
          invoke(ctx, input) {
            const { n } = JSON.parse(input);
            if (n < 0) throw { tag: 'permanent', val: `negative: ${n}` };
            seen.push(n);
            return { tag: 'done', val: { output: JSON.stringify({ double: n * 2, seen: seen.length, step: ctx.stepId, attempt: ctx.attempt }) } };
          },
          compensate(ctx, data) { __stepwise_host.log('info', `undo ${data}`); },
        };
    "#;
    let (output, dir) = build_js("js-raw", script);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let plugins = dir.display().to_string();
    let invoke = |input: &str, extra: &[&str]| {
        let mut args = vec!["invoke", "js-raw", "--plugins", plugins.as_str(), "--input", input];
        args.extend_from_slice(extra);
        let output = stepwise(&args);
        serde_json::from_slice::<Value>(&output.stdout).unwrap_or_else(|_| panic!("{}", stderr(&output)))
    };
    // Every call starts from the state the script was loaded in: `seen` is
    // empty again in the second call.
    for _ in 0..2 {
        let result = invoke(r#"{"n": 21}"#, &["--attempt", "3"]);
        assert_eq!(result["result"]["ok"]["output"], json!({"double": 42, "seen": 1, "step": "js-raw", "attempt": 3}));
    }
    let refused = invoke(r#"{"n": -1}"#, &[]);
    assert_eq!(refused["result"]["error"], json!({"kind": "permanent", "message": "negative: -1"}));
    let undone = invoke("{}", &["--compensate", r#"{"id": 7}"#]);
    assert_eq!(undone["logs"][0]["message"], r#"undo {"id":7}"#, "{undone:#}");
}
