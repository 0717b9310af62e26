//! `stepwise invoke`: runs one step's `invoke` (or `compensate`) alone, in
//! the same sandbox with the same limits and grants as in a workflow, with
//! the services it calls answered from fixture files, and prints what it
//! returned, what it logged, the service calls it made and what it cost.
//! The way to unit-test a step in any language.

use super::PluginDirArg;
use crate::journal::Timestamp;
use crate::plugin::{CacheOutcome, LoadedPlugin};
use crate::sandbox::{Call, CallSuccess, HostResources, Limits, Sandbox, StepContext};
use crate::services::{Caller, Service, ServiceRegistry};
use crate::store::kv::MemoryKv;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

/// Arguments of `stepwise invoke`.
#[derive(clap::Args)]
pub struct InvokeArgs {
    /// The plugin (a component `<name>.wasm` of the plugin directory, with its
    /// manifest); with `--from`, the recorded step's plugin.
    #[arg(required_unless_present = "from")]
    plugin: Option<String>,
    /// The step's input, as JSON.
    #[arg(long, default_value = "{}", conflicts_with = "from")]
    input: String,
    /// Rerun a recorded step: `EXECUTION_ID/STEP` (a plugin step or a fan-out
    /// element, `reserve[2]`) of the store `--store`, with the input it was run
    /// with (rebuilt from the execution's log), the context its last attempt
    /// saw (execution id, step, attempt, idempotency key) and the plugin's
    /// current version.
    #[arg(long, value_name = "EXECUTION_ID/STEP")]
    from: Option<String>,
    #[command(flatten)]
    store: super::StoreArg,
    /// Call `compensate` with this compensation data (JSON) instead of
    /// `invoke`; with `--from` and no DATA, with the data the step recorded.
    #[arg(long, value_name = "DATA", num_args = 0..=1)]
    compensate: Option<Option<String>>,
    /// Answers for a service the step calls: `NAME=FILE`, the file a JSON
    /// object from method name to its answer (`{"error": "..."}` to fail it).
    #[arg(long = "service", value_name = "NAME=FIXTURE.json")]
    services: Vec<String>,
    /// A config value for the step (`KEY=VALUE`), over its manifest's `[config]`.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// The attempt number the step sees (default 1; with `--from`, the
    /// recorded step's last attempt, of `compensate` with `--compensate`).
    #[arg(long)]
    attempt: Option<u32>,
    #[command(flatten)]
    plugins: PluginDirArg,
}

/// A service answered from a fixture: method -> answer; every call recorded.
struct Fixture {
    name: String,
    answers: BTreeMap<String, Value>,
    calls: Arc<Mutex<Vec<Value>>>,
}

impl Service for Fixture {
    fn call(&self, method: &str, input: Value, caller: &Caller) -> Result<Value, String> {
        let call =
            json!({"service": self.name, "method": method, "input": input, "idempotency_key": caller.idempotency_key});
        self.calls.lock().expect("fixture lock").push(call);
        match self.answers.get(method) {
            Some(Value::Object(answer)) if answer.len() == 1 && answer.get("error").is_some_and(Value::is_string) => {
                Err(answer["error"].as_str().unwrap_or_default().to_string())
            }
            Some(answer) => Ok(answer.clone()),
            None => Err(format!("the fixture of service `{}` has no answer for method `{method}`", self.name)),
        }
    }

    fn may_block(&self) -> bool {
        false
    }
}

fn parse_json(what: &str, text: &str) -> Result<Value> {
    crate::journal::json::parse_bounded(text).map_err(|error| anyhow::anyhow!("{what} is not valid JSON: {error}"))
}

fn fixtures(specs: &[String], calls: &Arc<Mutex<Vec<Value>>>) -> Result<ServiceRegistry> {
    let mut registry = ServiceRegistry::new();
    for spec in specs {
        let Some((name, file)) = spec.split_once('=') else {
            bail!("--service `{spec}`: expected NAME=FIXTURE.json");
        };
        let text = std::fs::read_to_string(file).with_context(|| format!("--service {name}: reading {file}"))?;
        let answers: BTreeMap<String, Value> = serde_json::from_str(&text)
            .with_context(|| format!("--service {name}: {file} must be a JSON object from method name to answer"))?;
        let fixture = Fixture { name: name.to_string(), answers, calls: calls.clone() };
        registry.register(name, Arc::new(fixture));
    }
    Ok(registry)
}

/// The manifest text with `--config` values set over its `[config]`.
fn manifest_with(text: Option<String>, config: &[String]) -> Result<Option<String>> {
    if config.is_empty() {
        return Ok(text);
    }
    let mut table: toml::Table = toml::from_str(text.as_deref().unwrap_or("")).context("reading the manifest")?;
    let section = table.entry("config").or_insert_with(|| toml::Value::Table(Default::default()));
    let Some(section) = section.as_table_mut() else { bail!("the manifest's `config` is not a table") };
    for entry in config {
        let Some((key, value)) = entry.split_once('=') else { bail!("--config `{entry}`: expected KEY=VALUE") };
        section.insert(key.to_string(), toml::Value::String(value.to_string()));
    }
    Ok(Some(toml::to_string(&table)?))
}

/// What the call is made with: the plugin, the context the step sees, and
/// the payload of the export.
struct Rerun {
    plugin: String,
    ctx: StepContext,
    export: Export,
    /// The input (for `invoke`) or compensation data (for `compensate`).
    payload: Value,
}

#[derive(Clone, Copy, PartialEq)]
enum Export {
    Invoke,
    Compensate,
}

impl Export {
    fn as_str(self) -> &'static str {
        match self {
            Export::Invoke => "invoke",
            Export::Compensate => "compensate",
        }
    }
}

/// The call `--input`/`--compensate` describe, in a context of its own.
fn alone(args: &InvokeArgs) -> Result<Rerun> {
    let plugin = args.plugin.clone().unwrap_or_default();
    let (name, _) = component_path(&args.plugins.dir, &plugin)?;
    let execution_id = format!("invoke-{}", Timestamp::now().0);
    let ctx = StepContext {
        workflow: "stepwise-invoke".into(),
        execution_id: execution_id.clone(),
        step_id: name.clone(),
        attempt: args.attempt.unwrap_or(1),
        idempotency_key: format!("{execution_id}/{name}"),
    };
    let (export, payload) = match &args.compensate {
        Some(Some(data)) => (Export::Compensate, parse_json("--compensate", data)?),
        Some(None) => {
            bail!("--compensate needs DATA (the compensation data, as JSON) unless --from names a recorded step")
        }
        None => (Export::Invoke, parse_json("--input", &args.input)?),
    };
    Ok(Rerun { plugin, ctx, export, payload })
}

/// The call a recorded step made: its plugin, input and context (the last
/// attempt's; `--attempt` overrides), or its `compensate` with the data it
/// recorded (or `--compensate DATA`).
async fn recorded(args: &InvokeArgs, from: &str) -> Result<Rerun> {
    let Some((execution, step)) = from.split_once('/') else {
        bail!("--from `{from}`: expected EXECUTION_ID/STEP");
    };
    let step: crate::journal::UnitId =
        step.parse().map_err(|error: crate::journal::unit::InvalidUnitId| anyhow::anyhow!("--from: {error}"))?;
    if let Some(path) = args.store.url.strip_prefix("sqlite://").filter(|path| !std::path::Path::new(path).exists()) {
        bail!("--from `{from}`: there is no store at `{path}` (--store or $STEPWISE_STORE names the store that recorded the execution)");
    }
    let engine = super::reading_engine(&args.store, &args.plugins).await?;
    let execution_id = crate::journal::ExecutionId::new(execution);
    let recorded = engine.recorded_step(&execution_id, &step).await?;
    let plugin = recorded.plugin.to_string();
    // A component named by its path (a local build) is the plugin its file name says.
    let named = args.plugin.as_deref().map(|named| component_path(&args.plugins.dir, named)).transpose()?;
    if let Some((name, _)) = named.as_ref().filter(|(name, _)| *name != plugin) {
        bail!("--from `{from}` ran plugin `{plugin}`, not `{name}`");
    }
    let plugin = args.plugin.clone().unwrap_or(plugin);
    let (export, payload) = match &args.compensate {
        Some(Some(data)) => (Export::Compensate, parse_json("--compensate", data)?),
        Some(None) => match recorded.compensation_data {
            Some(data) => (Export::Compensate, data),
            None => bail!("--from `{from}`: a rollback would not compensate this step (it did not complete), so it has no compensation data (give --compensate DATA)"),
        },
        None => (Export::Invoke, recorded.input),
    };
    let mut ctx = recorded.context;
    ctx.attempt = args.attempt.unwrap_or(match export {
        Export::Invoke => ctx.attempt,
        Export::Compensate => recorded.compensation_attempts.max(1),
    });
    Ok(Rerun { plugin, ctx, export, payload })
}

/// Where the plugin's component is: a name in the plugin directory, or a
/// path to a `.wasm` file (its manifest beside it); with the plugin's name.
fn component_path(plugins: &std::path::Path, plugin: &str) -> Result<(String, PathBuf)> {
    let as_path = std::path::Path::new(plugin);
    if plugin.ends_with(".wasm") {
        let name = as_path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default();
        return Ok((name, as_path.to_path_buf()));
    }
    if plugin.contains(std::path::MAIN_SEPARATOR) {
        bail!("`{plugin}`: name a plugin of --plugins, or a component by its path ending in `.wasm`");
    }
    Ok((plugin.to_string(), plugins.join(format!("{plugin}.wasm"))))
}

pub async fn run(args: InvokeArgs) -> Result<ExitCode> {
    let rerun = match &args.from {
        Some(from) => recorded(&args, from).await?,
        None => alone(&args)?,
    };
    let calls = Arc::new(Mutex::new(Vec::new()));
    let services = fixtures(&args.services, &calls)?;
    let resources = HostResources { services: Arc::new(services), kv: Arc::new(MemoryKv::default()) };
    let sandbox = Sandbox::with_resources(Limits::default(), resources)?;
    let (plugin_name, path) = component_path(&args.plugins.dir, &rerun.plugin)?;
    let wasm = std::fs::read(&path).with_context(|| format!("reading the plugin {}", path.display()))?;
    let manifest = crate::plugin::Manifest::text_for_component(&path).map_err(anyhow::Error::msg)?;
    let parsed = manifest.as_deref().map(|text| crate::plugin::Manifest::parse(text, &path)).transpose();
    let parsed = parsed.map_err(anyhow::Error::msg)?.unwrap_or_default();
    if !args.config.is_empty() && !parsed.capabilities.config {
        bail!("--config: plugin `{plugin_name}` cannot read config: its manifest does not grant `capabilities.config`");
    }
    unanswered_services(&parsed, &args.services)?;
    let manifest = manifest_with(manifest, &args.config)?;
    // Compiled code is cached as `serve` caches it: a second run of a big
    // guest (JavaScript, Python) loads in milliseconds.
    let cache = crate::plugin::CodeCache::new(&crate::plugin::CodeCache::default_dir());
    let loading = std::time::Instant::now();
    let plugin = LoadedPlugin::from_bytes(&sandbox, Some(&cache), &plugin_name, &path, &wasm, manifest.as_deref())?;
    let load = json!({
        "compiled_code": if plugin.cache == Some(CacheOutcome::Hit) { "cached" } else { "compiled" },
        "ms": loading.elapsed().as_secs_f64() * 1000.0,
    });
    let Rerun { ctx, export, payload, .. } = rerun;
    let call = match export {
        Export::Invoke => Call::Invoke { ctx: ctx.clone(), input: payload.to_string() },
        Export::Compensate => Call::Compensate { ctx: ctx.clone(), data: payload.to_string() },
    };
    let outcome = sandbox.call(plugin.runtime(), call, None, None).await;
    let (result, succeeded) = match outcome.result {
        Ok(CallSuccess { skipped: Some(reason), .. }) => (json!({"skipped": reason}), true),
        Ok(success) if export == Export::Invoke => {
            (json!({"ok": {"output": success.output, "compensation": success.compensation}}), true)
        }
        Ok(_) => (json!({"ok": null}), true),
        Err(failure) => (json!({"error": failure}), false),
    };
    let payload_field = if export == Export::Invoke { "input" } else { "compensation_data" };
    let report = json!({
        "plugin": plugin_name,
        "from": args.from,
        "context": {
            "workflow": ctx.workflow,
            "execution_id": ctx.execution_id,
            "step_id": ctx.step_id,
            "attempt": ctx.attempt,
            "idempotency_key": ctx.idempotency_key,
        },
        payload_field: payload,
        "version": plugin.version(),
        "load": load,
        "export": export.as_str(),
        "result": result,
        "logs": outcome.logs,
        "service_calls": *calls.lock().expect("fixture lock"),
        "cost": outcome.cost,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Refuses a run where a service the manifest grants has no `--service`
/// fixture: the step could call it and nothing would answer.
fn unanswered_services(manifest: &crate::plugin::Manifest, given: &[String]) -> Result<()> {
    let answered: Vec<&str> = given.iter().filter_map(|spec| spec.split_once('=').map(|(name, _)| name)).collect();
    let missing: Vec<&str> =
        manifest.capabilities.services.iter().map(String::as_str).filter(|name| !answered.contains(name)).collect();
    if !missing.is_empty() {
        let (plural, them) = if missing.len() == 1 { ("", "it") } else { ("s", "each") };
        let names = missing.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ");
        bail!("the manifest grants the service{plural} {names}: answer {them} with --service NAME=FIXTURE.json");
    }
    Ok(())
}
