//! The hostile-guest suite: every attack fails its attempt with the right
//! error kind (or reaches nothing), the workflow compensates, and a healthy
//! workflow running at the same time in the same host finishes normally.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use stepwise::engine::{Engine, StartOptions};
use stepwise::workflow::Workflow;
use stepwise_test_support::*;

/// The capabilities the hostile component imports, granted (HTTP only to a host that does not exist).
const HOSTILE_GRANTS: &str = "[capabilities]\nkv = true\nconfig = true\nhttp = [\"allowed.invalid\"]\n";

/// `guard` (echo) then `attack` (the hostile plugin, no retries).
fn attack_workflow(plugin: &str, attack: Value) -> String {
    format!(
        r#"
        name = "attack"
        [[steps]]
        id = "guard"
        plugin = "echo"
        input = {{ guarded = true }}
        [[steps]]
        id = "attack"
        plugin = "{plugin}"
        input = {attack}
        after = ["guard"]
        retry = {{ max_attempts = 1 }}
        "#,
        attack = toml_inline(&attack)
    )
}

/// Runs the attack beside a healthy accept-quote execution; returns the attack's execution.
async fn attack_beside_healthy_run(engine: &Engine, plugin: &str, attack: Value) -> Value {
    let healthy = {
        let engine = engine.clone();
        let workflow = example(&engine, "accept-quote.toml");
        tokio::spawn(async move { engine.run(workflow, quote_input(), StartOptions::default()).await.unwrap() })
    };
    let execution = run(engine, &attack_workflow(plugin, attack), json!({})).await;
    let healthy = healthy.await.expect("healthy run").to_json();
    assert_eq!(healthy["status"], "succeeded", "the healthy execution was disturbed: {healthy:#}");
    execution
}

/// Asserts the attack failed with `kind` and the guard step was compensated.
fn assert_contained(execution: &Value, kind: &str) -> String {
    assert_eq!(execution["status"], "compensated", "{execution:#}");
    let attack = step(execution, "attack");
    assert_eq!(attack["status"], "failed");
    assert_eq!(attack["error"]["kind"], kind, "{attack:#}");
    assert_eq!(step(execution, "guard")["status"], "compensated");
    attack["error"]["message"].as_str().unwrap().to_string()
}

/// Asserts the attack ran to completion but observed nothing it should not.
fn observed(execution: &Value) -> Value {
    assert_eq!(execution["status"], "succeeded", "{execution:#}");
    step(execution, "attack")["output"]["observed"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_runs_out_of_fuel() {
    let engine = engine();
    let execution = attack_beside_healthy_run(&engine, "hostile", json!({"attack": "loop"})).await;
    assert_contained(&execution, "fuel_exhausted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_with_ample_fuel_is_stopped_at_its_deadline() {
    let dir = plugin_dir_with(
        "deadline",
        &[(
            "hostile-slow",
            "hostile",
            Some(&format!("{HOSTILE_GRANTS}[limits]\nfuel = 100000000000\ndeadline_ms = 200\n")),
        )],
    );
    let engine = demo_host_in(&dir).engine;
    let execution = attack_beside_healthy_run(&engine, "hostile-slow", json!({"attack": "loop"})).await;
    let message = assert_contained(&execution, "deadline_exceeded");
    let duration = step_duration_ms(&execution, "attack");
    assert!(duration < 2000, "the 200 ms deadline stopped the loop after {duration} ms");
    assert!(message.contains("200 ms") || message.contains("interrupt"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_in_compensate_fails_the_compensation_not_the_host() {
    let engine = engine();
    let toml = r#"
        name = "loop-compensate"
        [[steps]]
        id = "looper"
        plugin = "hostile"
        input = { attack = "loop_in_compensate" }
        retry = { max_attempts = 2, initial_backoff_ms = 5 }
        [[steps]]
        id = "boom"
        plugin = "fail"
        after = ["looper"]
    "#;
    let execution = run(&engine, toml, json!({})).await;
    assert_eq!(execution["status"], "failed", "{execution:#}");
    let looper = step(&execution, "looper");
    assert_eq!(looper["status"], "compensation_failed");
    assert_eq!(looper["compensation_attempts"], 2, "compensations follow the retry policy");
    assert_eq!(looper["compensation_error"]["kind"], "fuel_exhausted");
    let healthy =
        engine.run(example(&engine, "accept-quote.toml"), quote_input(), StartOptions::default()).await.unwrap();
    assert_eq!(healthy.to_json()["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_hits_the_memory_limit() {
    let engine = engine();
    let execution = attack_beside_healthy_run(&engine, "hostile", json!({"attack": "memory_bomb"})).await;
    let message = assert_contained(&execution, "memory_limit");
    assert!(message.contains("memory limit"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creeping_allocation_hits_the_memory_limit() {
    let engine = engine();
    let execution = attack_beside_healthy_run(&engine, "hostile", json!({"attack": "memory_creep"})).await;
    assert_contained(&execution, "memory_limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_recursion_overflows_the_stack_as_a_trap() {
    let engine = engine();
    let execution = attack_beside_healthy_run(&engine, "hostile", json!({"attack": "recursion"})).await;
    let message = assert_contained(&execution, "trap");
    // Rust keeps its stack in linear memory: overflowing it leaves the memory's
    // bounds before the native wasm stack limit is reached.
    assert!(message.contains("out of bounds memory access") || message.contains("stack overflow"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_megabyte_output_is_refused() {
    let engine = engine();
    let execution =
        attack_beside_healthy_run(&engine, "hostile", json!({"attack": "huge_output", "size": 5_000_000})).await;
    let message = assert_contained(&execution, "output_too_large");
    assert!(message.contains("exceeds the limit of 1048576 bytes"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_stdout_is_capped() {
    let engine = engine();
    let execution = attack_beside_healthy_run(&engine, "hostile", json!({"attack": "huge_stdout", "size": 500})).await;
    assert_contained(&execution, "trap");
    let captured: usize = events(&execution, "log")
        .iter()
        .filter(|e| e["level"] == "stdout")
        .map(|e| e["message"].as_str().unwrap().len())
        .sum();
    assert!(captured <= 64 << 10, "captured {captured} bytes of stdout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_a_trap_with_its_message() {
    let engine = engine();
    let execution = attack_beside_healthy_run(&engine, "hostile", json!({"attack": "panic"})).await;
    let message = assert_contained(&execution, "trap");
    assert!(message.contains("hostile guest panics on purpose"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filesystem_is_unreachable() {
    let engine = engine();
    for attack in ["read_file", "list_root"] {
        let execution = attack_beside_healthy_run(&engine, "hostile", json!({"attack": attack})).await;
        let message = assert_contained(&execution, "permanent");
        assert!(message.starts_with(&format!("{attack} denied")), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_is_empty() {
    let engine = engine();
    std::env::set_var("STEPWISE_HOST_SECRET", "do-not-leak");
    let execution = attack_beside_healthy_run(&engine, "hostile", json!({"attack": "read_env"})).await;
    let message = assert_contained(&execution, "permanent");
    assert_eq!(message, "read_env denied: the environment is empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_and_name_lookup_are_denied() {
    let engine = engine();
    for attack in ["open_socket", "resolve_host"] {
        let execution = attack_beside_healthy_run(&engine, "hostile", json!({"attack": attack})).await;
        let message = assert_contained(&execution, "permanent");
        assert!(message.starts_with(&format!("{attack} denied")), "{message}");
    }
}

#[tokio::test]
async fn no_state_survives_between_invocations() {
    let engine = engine();
    for _ in 0..3 {
        let execution = run(&engine, &attack_workflow("hostile", json!({"attack": "counter"})), json!({})).await;
        assert_eq!(observed(&execution), json!(1), "each call sees a fresh instance");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_is_private_to_each_plugin() {
    let dir = plugin_dir_with("kv", &[("hostile-b", "hostile", Some(HOSTILE_GRANTS))]);
    let engine = demo_host_in(&dir).engine;
    let set = run(
        &engine,
        &attack_workflow("hostile", json!({"attack": "kv_set", "key": "card", "value": "4242"})),
        json!({}),
    )
    .await;
    assert_eq!(observed(&set), json!({"Ok": null}));
    let own = run(&engine, &attack_workflow("hostile", json!({"attack": "kv_get", "key": "card"})), json!({})).await;
    assert_eq!(observed(&own), json!("4242"), "a plugin reads its own keys back");
    let other =
        run(&engine, &attack_workflow("hostile-b", json!({"attack": "kv_get", "key": "card"})), json!({})).await;
    assert_eq!(observed(&other), Value::Null, "another plugin cannot read them");
    let oversized = "x".repeat(70_000);
    let quota = run(
        &engine,
        &attack_workflow("hostile", json!({"attack": "kv_set", "key": "big", "value": oversized})),
        json!({}),
    )
    .await;
    assert!(observed(&quota)["Err"].as_str().unwrap().contains("exceeds the limit"));
}

#[tokio::test]
async fn config_is_readable_only_as_granted() {
    let engine = engine();
    let execution =
        run(&engine, &attack_workflow("hostile", json!({"attack": "config_get", "key": "greeting"})), json!({})).await;
    assert_eq!(observed(&execution), json!("hello"));
    let missing =
        run(&engine, &attack_workflow("hostile", json!({"attack": "config_get", "key": "nope"})), json!({})).await;
    assert_eq!(observed(&missing), Value::Null);
}

#[tokio::test]
async fn a_component_importing_an_ungranted_capability_is_refused_at_load() {
    let dir = plugin_dir_with("ungranted", &[("sneaky", "hostile", None)]);
    let engine = demo_host_in(&dir).engine;
    let error = engine.registry().get("sneaky").await.err().expect("refused");
    let message = error.to_string();
    assert!(message.contains("sneaky.wasm"), "{message}");
    assert!(message.contains("imports `stepwise:step/kv@0.1.0`, which plugin `sneaky` is not granted"), "{message}");
    assert!(message.contains("`kv = true` under [capabilities]"), "{message}");
    assert!(message.contains("stepwise:step/config@0.1.0"), "{message}");
    assert!(message.contains("wasi:http/outgoing-handler"), "{message}");
}

/// A loopback HTTP server answering `200 OK`; returns its port and a request counter.
fn loopback_server() -> (u16, Arc<AtomicUsize>) {
    let (port, requests, _) = recording_loopback_server();
    (port, requests)
}

/// A loopback HTTP server answering 200; how many requests it got, and their heads.
fn recording_loopback_server() -> (u16, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (counter, recorded) = (requests.clone(), heads.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = [0u8; 4096];
            let read = stream.read(&mut buffer).unwrap_or(0);
            recorded.lock().unwrap().push(String::from_utf8_lossy(&buffer[..read]).to_lowercase());
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (port, requests, heads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_a_host_not_in_the_manifest_is_denied_before_connecting() {
    let (port, requests) = loopback_server();
    let engine = engine();
    let url = format!("http://127.0.0.1:{port}/steal");
    let execution = attack_beside_healthy_run(&engine, "hostile", json!({"attack": "http_get", "key": url})).await;
    let message = assert_contained(&execution, "permanent");
    assert!(message.contains("HttpRequestDenied"), "{message}");
    assert_eq!(requests.load(Ordering::SeqCst), 0, "no connection was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_to_a_host_in_the_manifest_is_allowed() {
    let (port, requests, heads) = recording_loopback_server();
    let manifest = format!("[capabilities]\nkv = true\nconfig = true\nhttp = [\"127.0.0.1:{port}\"]\n");
    let dir = plugin_dir_with("http", &[("hostile-net", "hostile", Some(&manifest))]);
    let engine = demo_host_in(&dir).engine;
    let url = format!("http://127.0.0.1:{port}/allowed");
    let execution =
        run(&engine, &attack_workflow("hostile-net", json!({"attack": "http_get", "key": url})), json!({})).await;
    assert_eq!(observed(&execution), json!(200));
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    // The request carries the step's idempotency key (execution/step).
    let key = format!("idempotency-key: {}/attack", execution["execution_id"].as_str().unwrap());
    assert!(heads.lock().unwrap()[0].contains(&key), "{:?} lacks {key}", heads.lock().unwrap());
    // The same plugin still cannot reach another port of the same host.
    let other = format!("http://127.0.0.1:{}/", port.wrapping_add(1));
    let execution =
        run(&engine, &attack_workflow("hostile-net", json!({"attack": "http_get", "key": other})), json!({})).await;
    assert!(assert_contained(&execution, "permanent").contains("HttpRequestDenied"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_name_that_resolves_to_a_private_address_or_an_unnamed_port_is_denied() {
    let (port, requests) = loopback_server();
    // `localhost` is listed, with the port: it resolves to loopback (the
    // hosts file), so it reaches nothing. 127.0.0.1 is listed without a
    // port: only its scheme's port (80) is allowed. [::1] is not listed.
    let manifest = format!("[capabilities]\nkv = true\nconfig = true\nhttp = [\"localhost:{port}\", \"127.0.0.1\"]\n");
    let dir = plugin_dir_with("http-private", &[("hostile-net", "hostile", Some(&manifest))]);
    let engine = demo_host_in(&dir).engine;
    for (url, error) in [
        (format!("http://localhost:{port}/metadata"), "DestinationIpProhibited"),
        (format!("http://127.0.0.1:{port}/other-port"), "HttpRequestDenied"),
        (format!("http://[::1]:{port}/v6-loopback"), "HttpRequestDenied"),
    ] {
        let attack = attack_workflow("hostile-net", json!({"attack": "http_get", "key": url}));
        let execution = run(&engine, &attack, json!({})).await;
        let message = assert_contained(&execution, "permanent");
        assert!(message.contains(error), "{url}: {message}");
    }
    assert_eq!(requests.load(Ordering::SeqCst), 0, "no connection was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_reaches_a_private_address_that_an_address_or_range_entry_grants() {
    let (port, requests, _) = recording_loopback_server();
    // The operator names the private range (and the v6 loopback that
    // `localhost` may also resolve to): the name may reach it, on that port.
    let manifest = format!(
        "[capabilities]\nkv = true\nconfig = true\nhttp = [\"localhost:{port}\", \"127.0.0.0/8:{port}\", \"[::1]:{port}\"]\n"
    );
    let dir = plugin_dir_with("http-range", &[("hostile-net", "hostile", Some(&manifest))]);
    let engine = demo_host_in(&dir).engine;
    let url = format!("http://localhost:{port}/inside");
    let execution =
        run(&engine, &attack_workflow("hostile-net", json!({"attack": "http_get", "key": url})), json!({})).await;
    assert_eq!(observed(&execution), json!(200), "{execution:#}");
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    // An address of the range reached by its literal, on the granted port.
    let url = format!("http://127.0.0.1:{port}/literal");
    let execution =
        run(&engine, &attack_workflow("hostile-net", json!({"attack": "http_get", "key": url})), json!({})).await;
    assert_eq!(observed(&execution), json!(200), "{execution:#}");
}

#[tokio::test]
async fn a_manifest_with_a_malformed_http_entry_is_refused_naming_it() {
    let manifest = "[capabilities]\nhttp = [\"api.example.com:99999\"]\n";
    let dir = plugin_dir_with("http-malformed", &[("bad-http", "hostile", Some(manifest))]);
    let engine = demo_host_in(&dir).engine;
    let message = engine.registry().get("bad-http").await.err().expect("refused").to_string();
    assert!(message.contains("`api.example.com:99999`") && message.contains("1-65535"), "{message}");
}

#[tokio::test]
async fn a_manifest_granting_an_unknown_service_is_refused() {
    let dir =
        plugin_dir_with("unknown-service", &[("greedy", "echo", Some("[capabilities]\nservices = [\"bank\"]\n"))]);
    let engine = demo_host_in(&dir).engine;
    let message = engine.registry().get("greedy").await.err().expect("refused").to_string();
    assert!(message.contains("grants `bank`, which this host does not register"), "{message}");
}

#[tokio::test]
async fn an_invalid_manifest_is_refused_with_its_problem() {
    let dir = plugin_dir_with("bad-manifest", &[("typo", "echo", Some("[limits]\nfuell = 5\n"))]);
    let engine = demo_host_in(&dir).engine;
    let message = engine.registry().get("typo").await.err().expect("refused").to_string();
    assert!(message.contains("typo.toml") && message.contains("unknown field `fuell`"), "{message}");
}

#[tokio::test]
async fn side_effects_go_through_granted_services_once_and_are_undone_once() {
    let host = demo_host();
    let workflow =
        |name: &str| Arc::new(Workflow::load_file(&example_workflow(name), host.engine.registry().as_ref()).unwrap());
    let ok = host.engine.run(workflow("accept-quote.toml"), quote_input(), StartOptions::default()).await.unwrap();
    assert_eq!(ok.to_json()["status"], "succeeded");
    let inventory = host.inventory.snapshot();
    assert_eq!((inventory.reserves_applied, inventory.releases_applied), (1, 0));
    assert_eq!(inventory.reserved.get("SHIRT-M"), Some(&2));
    assert_eq!(host.payments.snapshot().authorizations_applied, 1);

    let declined =
        host.engine.run(workflow("accept-quote-declined.toml"), quote_input(), StartOptions::default()).await;
    assert_eq!(declined.unwrap().to_json()["status"], "compensated");
    let inventory = host.inventory.snapshot();
    assert_eq!((inventory.reserves_applied, inventory.releases_applied), (2, 1));
    assert_eq!(inventory.reserved.get("SHIRT-M"), Some(&2), "the declined quote's reservation was released");
    let payments = host.payments.snapshot();
    assert_eq!((payments.authorizations_applied, payments.voids_applied), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_for_a_free_instance_slot_counts_against_the_deadline() {
    use std::time::Duration;
    use stepwise::sandbox::{Call, StepContext};
    let engine = engine();
    let echo = engine.registry().get("echo").await.unwrap();
    let sandbox = engine.registry().sandbox().clone();
    let call = |input: &str| Call::Invoke {
        ctx: StepContext {
            workflow: "slots".into(),
            execution_id: "slots".into(),
            step_id: "nap".into(),
            attempt: 1,
            idempotency_key: "slots/nap".into(),
        },
        input: input.to_string(),
    };
    // Every slot taken by a call that sleeps far past the deadline below.
    let mut sleepers = tokio::task::JoinSet::new();
    for _ in 0..sandbox.instance_slots() {
        let (sandbox, echo, nap) = (sandbox.clone(), echo.clone(), call(r#"{"sleep_ms": 4000}"#));
        sleepers.spawn(async move { sandbox.call(echo.runtime(), nap, Some(Duration::from_secs(30)), None).await });
    }
    let filling = std::time::Instant::now();
    while sandbox.instances_running() < sandbox.instance_slots() {
        assert!(filling.elapsed() < Duration::from_secs(30), "only {} slots ever busy", sandbox.instances_running());
        assert!(sleepers.try_join_next().is_none(), "a sleeper ended before every slot was busy");
        tokio::task::yield_now().await;
    }
    let waited = sandbox.call(echo.runtime(), call("{}"), Some(Duration::from_millis(100)), None).await;
    let failure = waited.result.expect_err("no slot became free within the deadline");
    assert_eq!(failure.kind.as_str(), "deadline_exceeded", "{failure:?}");
    assert!(failure.message.contains("waiting for a free instance slot"), "{failure:?}");
    // A call with time to wait gets the first slot freed, on whichever lane.
    let patient = {
        let (sandbox, echo) = (sandbox.clone(), echo.clone());
        let call = call(r#"{"patient": true}"#);
        tokio::spawn(async move { sandbox.call(echo.runtime(), call, Some(Duration::from_secs(30)), None).await })
    };
    // The sleepers were not disturbed.
    while let Some(done) = sleepers.join_next().await {
        assert!(done.unwrap().result.is_ok());
    }
    let patient = patient.await.unwrap().result.expect("a slot was freed for the waiting call");
    assert_eq!(patient.output, Some(json!({"patient": true})));
}

/// Moves this thread to `cpus` (it runs there from the call's return).
#[cfg(target_os = "linux")]
fn pin_to(cpus: &[usize]) {
    // SAFETY: as above; the set names CPUs this thread was allowed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    assert_eq!(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) }, 0);
}

/// Calls are spread over one wasmtime engine per CPU (up to `MAX_LANES`),
/// each plugin linked on every one: a call made from each CPU in turn takes
/// that CPU's lane (the allowed CPUs taken in turn), runs on that lane's
/// engine (the lanes' call counts), and the plugin answers the same on each.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "current_thread")]
async fn a_plugin_answers_on_the_lane_of_every_cpu() {
    use stepwise::sandbox::{Call, StepContext, MAX_LANES};
    let engine = engine();
    let echo = engine.registry().get("echo").await.unwrap();
    let sandbox = engine.registry().sandbox().clone();
    let cpus = stepwise::sandbox::allowed_cpus();
    assert_eq!(sandbox.lanes(), cpus.len().clamp(1, MAX_LANES));
    assert_eq!(echo.runtime().linked.len(), sandbox.lanes(), "the plugin is not linked on every lane");
    let mut lanes = std::collections::BTreeSet::new();
    for (turn, &cpu) in cpus.iter().enumerate() {
        pin_to(&[cpu]);
        let lane = sandbox.lane_here();
        assert_eq!(lane, turn % sandbox.lanes(), "a call from CPU {cpu} takes another CPU's lane");
        let input = json!({"cpu": cpu});
        let call = Call::Invoke {
            ctx: StepContext {
                workflow: "lanes".into(),
                execution_id: "lanes".into(),
                step_id: "echo".into(),
                attempt: 1,
                idempotency_key: "lanes/echo".into(),
            },
            input: input.to_string(),
        };
        let before = sandbox.calls_by_lane();
        let outcome = sandbox.call(echo.runtime(), call, None, None).await;
        assert_eq!(outcome.result.expect("echo answers").output, Some(input), "on lane {lane}");
        // The call ran on that lane's engine, and on no other.
        let mut expected = before;
        expected[lane] += 1;
        assert_eq!(sandbox.calls_by_lane(), expected, "the call from CPU {cpu} ran on another lane than {lane}");
        lanes.insert(lane);
    }
    pin_to(&cpus);
    let expected: std::collections::BTreeSet<usize> = (0..cpus.len().min(sandbox.lanes())).collect();
    assert_eq!(lanes, expected);
}

/// A service or kv store that does not answer until released (or 60 s):
/// it counts the calls that started and those that returned.
#[derive(Default)]
struct Stuck {
    started: AtomicUsize,
    returned: AtomicUsize,
    released: std::sync::Mutex<bool>,
    wake: std::sync::Condvar,
}

impl Stuck {
    fn wait(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
        let released = self.released.lock().unwrap();
        let _ = self.wake.wait_timeout_while(released, std::time::Duration::from_secs(60), |released| !*released);
        self.returned.fetch_add(1, Ordering::SeqCst);
    }

    fn release(&self) {
        *self.released.lock().unwrap() = true;
        self.wake.notify_all();
    }
}

impl stepwise::services::Service for Stuck {
    fn call(&self, _method: &str, _input: Value, caller: &stepwise::services::Caller) -> Result<Value, String> {
        assert!(caller.deadline > std::time::Instant::now(), "the service is told the step's deadline");
        self.wait();
        Ok(json!({}))
    }
}

impl stepwise::store::kv::KvStore for Stuck {
    fn get(&self, _namespace: &str, _key: &str) -> Result<Option<String>, String> {
        self.wait();
        Ok(None)
    }
    fn set(&self, _namespace: &str, _key: &str, _value: &str) -> Result<(), String> {
        self.wait();
        Ok(())
    }
    fn delete(&self, _namespace: &str, _key: &str) -> Result<bool, String> {
        self.wait();
        Ok(false)
    }
}

/// A host whose `inventory` service and kv store never answer on their own.
fn stuck_host(label: &str, plugins: &[(&str, &str, Option<&str>)]) -> (Engine, Arc<Stuck>) {
    let stuck = Arc::new(Stuck::default());
    let mut services = stepwise::services::ServiceRegistry::new();
    services.register("inventory", stuck.clone());
    let resources = stepwise::sandbox::HostResources { services: Arc::new(services), kv: stuck.clone() };
    (engine_with(&plugin_dir_with(label, plugins), resources), stuck)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_call_past_the_deadline_is_stopped() {
    let manifest = "[capabilities]\nservices = [\"inventory\"]\n[limits]\ndeadline_ms = 300\n";
    let (engine, stuck) = stuck_host("stuck-service", &[("slow-reserve", "reserve-inventory", Some(manifest))]);
    let toml = "name = \"stuck\"\n[[steps]]\nid = \"reserve\"\nplugin = \"slow-reserve\"\ninput = { items = \"$.input.items\" }\nretry = { max_attempts = 2, initial_backoff_ms = 1 }\n";
    let execution = run(&engine, toml, quote_input()).await;
    let reserve = step(&execution, "reserve");
    assert_eq!(reserve["error"]["kind"], "deadline_exceeded", "{execution:#}");
    assert_eq!(reserve["attempts"], 2);
    assert_eq!(stuck.started.load(Ordering::SeqCst), 2, "each attempt called the service");
    assert_eq!(stuck.returned.load(Ordering::SeqCst), 0, "both attempts ended while the service still waited");
    stuck.release();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_write_past_the_deadline_is_stopped() {
    let (engine, stuck) = stuck_host("stuck-kv", &[]);
    let attack = attack_workflow("hostile", json!({"attack": "kv_set", "key": "k", "value": "v"}));
    let execution = run(&engine, &attack, json!({})).await;
    assert_eq!(step(&execution, "attack")["error"]["kind"], "deadline_exceeded", "{execution:#}");
    assert!(stuck.started.load(Ordering::SeqCst) >= 1);
    assert_eq!(stuck.returned.load(Ordering::SeqCst), 0, "the step ended while the write still waited");
    stuck.release();
}

/// On a runtime with one worker thread, a guest spinning in a loop until
/// its deadline must not hold that worker: a task beside it keeps ticking.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_guest_in_a_loop_does_not_hold_a_tokio_worker() {
    let manifest = "[capabilities]\nkv = true\nconfig = true\nhttp = [\"allowed.invalid\"]\n[limits]\nfuel = 1000000000000\ndeadline_ms = 1500\n";
    let dir = plugin_dir_with("spin-yields", &[("spinner", "hostile", Some(manifest))]);
    let engine = demo_host_in(&dir).engine;
    engine.registry().get("spinner").await.expect("loads");
    let ticks = Arc::new(AtomicUsize::new(0));
    let counter = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let attack = attack_workflow("spinner", json!({"attack": "loop"}));
    let execution = run(&engine, &attack, json!({})).await;
    let during = ticks.load(Ordering::SeqCst);
    ticker.abort();
    assert_contained(&execution, "deadline_exceeded");
    // 1.5 s of spinning: the ticker, sharing the only worker, ran throughout
    // (a held worker would have let it tick at most a few times).
    assert!(during >= 20, "the task beside the spinning guest ticked only {during} times");
}
