//! Shared support for the integration tests: building the guest components
//! and the `stepwise` binary once, running workflows on a real engine, a
//! real server process ([`server`]), and the audit of the demo services'
//! ledger against the recorded events ([`audit`]).

pub mod audit;
pub mod browser;
pub mod server;
pub mod web;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};
use stepwise::engine::{Engine, StartOptions};
use stepwise::journal::ExecutionId;
use stepwise::plugin::{CodeCache, PluginDirectory, PluginRegistry};
use stepwise::sandbox::{HostResources, Limits, Sandbox};
use stepwise::services::demo::{self, Inventory, Payments};
use stepwise::services::ledger::MemoryLedger;
use stepwise::store::kv::MemoryKv;
use stepwise::store::{ExecutionStore, MemoryStore};
use stepwise::workflow::Workflow;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// A command for a build (a script that runs cargo, or cargo itself)
/// without the variables cargo set for this test process
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...). Some build scripts rerun when
/// one of them changes (ring's reads `CARGO_MANIFEST_DIR`): inherited, they
/// made every nested build recompile the host and half its dependencies
/// that the plain build (`scripts/test.sh`, a developer's shell) had made.
pub fn build_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    const SET_FOR_TESTS: [&str; 6] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
    ];
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if SET_FOR_TESTS.contains(&&*text) || text.starts_with("CARGO_PKG_") || text.starts_with("CARGO_BIN_EXE_") {
            command.env_remove(&name);
        }
    }
    command
}

/// Builds every guest (idempotent, fast when up to date) and returns the plugin directory.
pub fn plugins_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = repo_root();
            let status =
                build_command(root.join("scripts/build-guests.sh")).status().expect("running scripts/build-guests.sh");
            assert!(status.success(), "building the guest components failed");
            root.join("build/plugins")
        })
        .clone()
}

/// A component the host must refuse (`build/invalid-components/<name>.wasm`).
pub fn invalid_component(name: &str) -> PathBuf {
    plugins_dir();
    repo_root().join("build/invalid-components").join(format!("{name}.wasm"))
}

/// A fresh scratch directory for one test.
pub fn scratch_dir(label: &str) -> PathBuf {
    let dir = test_dir(label);
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}

/// Where a test of this process keeps its files (removed first if it
/// exists, not created): `$TMPDIR/stepwise-tests/<pid>/<name>`. The first
/// call of a process removes what processes that no longer run left there,
/// so test runs do not fill the disk.
pub fn test_dir(name: &str) -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let all = std::env::temp_dir().join("stepwise-tests");
        for entry in std::fs::read_dir(&all).into_iter().flatten().flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            let alive = pid.parse::<u32>().is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        all.join(std::process::id().to_string())
    });
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The accept-quote example's input.
pub fn quote_input() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(example_workflow("accept-quote.input.json")).expect("the example input"),
    )
    .expect("the example input is JSON")
}

/// An example workflow, validated against the engine's plugins (child
/// workflows from the examples' directory).
pub fn example(engine: &Engine, name: &str) -> Arc<Workflow> {
    let catalog = stepwise::workflow::DirectoryCatalog::scan(&repo_root().join("guest-examples/workflows"))
        .expect("the examples' directory");
    let path = example_workflow(name);
    Arc::new(Workflow::load_file_with(&path, engine.registry().as_ref(), &catalog).expect("a valid example"))
}

/// Runs an example workflow on `input` until it rests; its JSON.
pub async fn run_example(engine: &Engine, name: &str, input: Value) -> Value {
    let execution = engine.run(example(engine, name), input, StartOptions::default()).await.expect("execution ran");
    execution.to_json()
}

/// A JSON object as a TOML inline table (for test workflows).
pub fn toml_inline(value: &Value) -> String {
    match value {
        Value::Object(fields) => {
            let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k} = {}", toml_inline(v))).collect();
            format!("{{ {} }}", parts.join(", "))
        }
        other => other.to_string(),
    }
}

/// An example workflow file under `guest-examples/workflows/`.
pub fn example_workflow(name: &str) -> PathBuf {
    repo_root().join("guest-examples/workflows").join(name)
}

/// An engine with the demo services, whose side effects tests can inspect.
pub struct DemoHost {
    /// The engine.
    pub engine: Engine,
    /// The `inventory` service the plugins call.
    pub inventory: Arc<Inventory>,
    /// The `payments` service the plugins call.
    pub payments: Arc<Payments>,
    /// The kv store behind the `kv` capability.
    pub kv: Arc<MemoryKv>,
    /// Every call the services received, in order.
    pub ledger: Arc<MemoryLedger>,
}

/// A demo host over the plugins of `dir`, with an in-memory store.
pub fn demo_host_in(dir: &Path) -> DemoHost {
    demo_host_on(dir, Arc::new(MemoryStore::new()))
}

/// A demo host over the plugins of `dir`, recording into `store`.
pub fn demo_host_on(dir: &Path, store: Arc<dyn ExecutionStore>) -> DemoHost {
    let ledger = Arc::new(MemoryLedger::default());
    let inventory = Arc::new(Inventory::with_ledger(ledger.clone()).expect("an in-memory ledger"));
    let payments = Arc::new(Payments::with_ledger(ledger.clone()).expect("an in-memory ledger"));
    let services = demo::registry(inventory.clone(), payments.clone());
    let kv = Arc::new(MemoryKv::default());
    let resources = HostResources { services: Arc::new(services), kv: kv.clone() };
    let engine = engine_on(dir, resources, store);
    DemoHost { engine, inventory, payments, kv, ledger }
}

/// Host resources whose `inventory` and `payments` services are these (a
/// test's own, or demo ones wrapped), with an in-memory kv.
pub fn resources_serving(
    inventory: Arc<dyn stepwise::services::Service>,
    payments: Arc<dyn stepwise::services::Service>,
) -> HostResources {
    let mut services = stepwise::services::ServiceRegistry::new();
    services.register("inventory", inventory).register("payments", payments);
    HostResources { services: Arc::new(services), kv: Arc::new(MemoryKv::default()) }
}

/// An engine over the plugins of `dir` whose capabilities reach `resources`
/// (services, kv), with an in-memory store.
pub fn engine_with(dir: &Path, resources: HostResources) -> Engine {
    engine_on(dir, resources, Arc::new(MemoryStore::new()))
}

/// An engine over the plugins of `dir` whose capabilities reach `resources`,
/// recording into `store`.
pub fn engine_on(dir: &Path, resources: HostResources, store: Arc<dyn ExecutionStore>) -> Engine {
    let sandbox = Sandbox::with_resources(Limits::default(), resources).expect("creating the sandbox");
    let directory = PluginDirectory::scan(dir).expect("scanning the plugin directory");
    // Compiled code is cached across tests: the JavaScript and Python guests
    // (12-18 MB) take seconds to compile.
    let cache = CodeCache::new(&repo_root().join("target/test-code-cache"));
    let registry = PluginRegistry::with_cache(sandbox, directory, Some(cache));
    Engine::new(Arc::new(registry), store)
}

/// A demo host over the built plugins.
pub fn demo_host() -> DemoHost {
    demo_host_in(&plugins_dir())
}

/// An engine over the built plugins (with the demo services) and an in-memory store.
pub fn engine() -> Engine {
    demo_host().engine
}

/// A fresh plugin directory holding every built plugin plus `extra` plugins:
/// (name, built plugin whose component to copy, manifest text or none).
pub fn plugin_dir_with(label: &str, extra: &[(&str, &str, Option<&str>)]) -> PathBuf {
    let dir = scratch_dir(&format!("plugins-{label}"));
    for entry in std::fs::read_dir(plugins_dir()).expect("listing plugins") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.join(path.file_name().expect("file name"))).expect("copying a plugin");
    }
    for (name, source, manifest) in extra {
        std::fs::copy(plugins_dir().join(format!("{source}.wasm")), dir.join(format!("{name}.wasm"))).expect("copy");
        if let Some(manifest) = manifest {
            std::fs::write(dir.join(format!("{name}.toml")), manifest).expect("writing a manifest");
        }
    }
    dir
}

/// Validates a TOML workflow against the engine's plugins.
pub fn workflow(engine: &Engine, toml: &str) -> Arc<Workflow> {
    Arc::new(Workflow::from_toml("test.toml", toml, engine.registry().as_ref()).expect("valid workflow"))
}

/// Runs a TOML workflow to its end and returns the execution JSON.
pub async fn run(engine: &Engine, toml: &str, input: Value) -> Value {
    let execution = engine.run(workflow(engine, toml), input, StartOptions::default()).await.expect("execution ran");
    execution.to_json()
}

/// Reports an async step (`step` may be `step[3]` or `hook[plugin]`) done
/// with `output`, and returns the execution JSON once it rests.
pub async fn complete(engine: &Engine, id: &ExecutionId, step: &str, output: Value) -> Value {
    let step = step.parse().expect("a valid step id");
    let delivery = engine.complete_step(id, &step, output, None).await.expect("the completion is accepted");
    delivery.settling.wait().await.expect("the execution rests").to_json()
}

/// Rolls an execution back and returns its JSON once it rests.
pub async fn cancel(engine: &Engine, id: &ExecutionId, reason: &str) -> Value {
    let delivery = engine.cancel(id, reason).await.expect("the cancel is accepted");
    delivery.settling.wait().await.expect("the execution rests").to_json()
}

/// The `stepwise` binary, built once per test process.
pub fn stepwise_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = build_command(cargo)
                .args(["build", "--quiet", "-p", "stepwise", "--bin", "stepwise"])
                .current_dir(repo_root())
                .status()
                .expect("running cargo build");
            assert!(status.success(), "building the stepwise binary failed");
            let target =
                std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"));
            target.join("debug/stepwise")
        })
        .clone()
}

/// Runs the `stepwise` binary with `args` from the repository root.
pub fn stepwise(args: &[&str]) -> Output {
    Command::new(stepwise_bin()).args(args).current_dir(repo_root()).output().expect("running stepwise")
}

/// The events of an execution JSON whose `type` is `kind`.
pub fn events<'a>(execution: &'a Value, kind: &str) -> Vec<&'a Value> {
    execution["events"].as_array().expect("events").iter().filter(|e| e["type"] == kind).collect()
}

/// The `step` field of every event of `kind`, in order.
pub fn event_steps(execution: &Value, kind: &str) -> Vec<String> {
    events(execution, kind).iter().map(|e| e["step"].as_str().unwrap_or_default().to_string()).collect()
}

/// The step object with id `id`.
pub fn step<'a>(execution: &'a Value, id: &str) -> &'a Value {
    execution["steps"].as_array().expect("steps").iter().find(|s| s["id"] == id).expect("step exists")
}

/// How long a step took, from its first start to its end, in milliseconds
/// (compilation and scheduling before the step are not counted).
pub fn step_duration_ms(execution: &Value, id: &str) -> u64 {
    let step = step(execution, id);
    millis(&step["finished_at"]) - millis(&step["started_at"])
}

/// Milliseconds since the epoch of an RFC 3339 timestamp in the execution JSON.
pub fn millis(timestamp: &Value) -> u64 {
    let text = timestamp.as_str().expect("timestamp string");
    let time = humantime_parse(text);
    time.duration_since(std::time::UNIX_EPOCH).expect("after epoch").as_millis() as u64
}

fn humantime_parse(text: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(text).expect("RFC 3339 timestamp")
}

/// A quote workflow `name` for the race and multi-host tests: cart ->
/// reserve, then `rest` (more `[[steps]]`, which may read
/// `$.steps.cart.output` and `$.steps.reserve.output`); `retry` goes at the
/// top level (e.g. a `[retry]` table), before the steps.
pub fn quote_workflow(name: &str, retry: &str, rest: &str) -> String {
    format!(
        r#"name = "{name}"
{retry}
[[steps]]
id = "cart"
plugin = "retrieve-cart"
input = {{ cart_id = "$.input.cart_id", items = "$.input.items", currency = "$.input.currency" }}
[[steps]]
id = "reserve"
plugin = "reserve-inventory"
input = {{ items = "$.steps.cart.output.items" }}
{rest}"#
    )
}

/// The steps after reserve of an approved quote: approve (async, with
/// `approve_options` such as a timeout) -> payment.
pub fn approved_payment(approve_options: &str) -> String {
    format!(
        r#"[[steps]]
id = "approve"
plugin = "echo"
async = true
after = ["reserve"]
{approve_options}
[[steps]]
id = "payment"
plugin = "authorize-payment"
input = {{ amount = "$.steps.cart.output.total", currency = "$.steps.cart.output.currency", approval = "$.steps.approve.output" }}
"#
    )
}

/// A quote whose third step sleeps `sleep_ms` before payment: cart ->
/// reserve -> slow -> payment.
pub fn slow_quote(name: &str, sleep_ms: u64) -> String {
    quote_workflow(
        name,
        "",
        &format!(
            r#"[[steps]]
id = "slow"
plugin = "echo"
input = {{ sleep_ms = {sleep_ms}, after = "$.steps.reserve.output.reservation_id" }}
[[steps]]
id = "payment"
plugin = "authorize-payment"
input = {{ amount = "$.steps.cart.output.total", currency = "$.steps.cart.output.currency", slow = "$.steps.slow.output" }}
"#
        ),
    )
}
