//! `stepwise invoke`: runs one step's `invoke` (or `compensate`) alone, in
//! the same sandbox with the same limits and grants as in a workflow, with
//! the services it calls answered from fixture files, and prints what it
//! returned, what it logged, the service calls it made and what it cost.
//! The way to unit-test a step in any language.

use super::PluginDirArg;
use crate::journal::Timestamp;
use crate::plugin::LoadedPlugin;
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
    /// with (rebuilt from the execution's log) and the plugin's current version.
    #[arg(long, value_name = "EXECUTION_ID/STEP")]
    from: Option<String>,
    #[command(flatten)]
    store: super::StoreArg,
    /// Call `compensate` with this compensation data (JSON) instead of `invoke`.
    #[arg(long, value_name = "DATA")]
    compensate: Option<String>,
    /// Answers for a service the step calls: `NAME=FILE`, the file a JSON
    /// object from method name to its answer (`{"error": "..."}` to fail it).
    #[arg(long = "service", value_name = "NAME=FIXTURE.json")]
    services: Vec<String>,
    /// A config value for the step (`KEY=VALUE`), over its manifest's `[config]`.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// The attempt number the step sees.
    #[arg(long, default_value_t = 1)]
    attempt: u32,
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

/// The plugin and input a recorded step ran with.
async fn recorded(args: &InvokeArgs, from: &str) -> Result<(String, Value)> {
    let Some((execution, step)) = from.split_once('/') else {
        bail!("--from `{from}`: expected EXECUTION_ID/STEP");
    };
    let step: crate::journal::UnitId =
        step.parse().map_err(|error: crate::journal::unit::InvalidUnitId| anyhow::anyhow!("--from: {error}"))?;
    let engine = super::demo_engine(&args.store, &args.plugins).await?;
    let (plugin, input) = engine.recorded_input(&crate::journal::ExecutionId::new(execution), &step).await?;
    if let Some(named) = args.plugin.as_deref().filter(|named| *named != plugin.as_str()) {
        bail!("--from `{from}` ran plugin `{plugin}`, not `{named}`");
    }
    Ok((plugin.to_string(), input))
}

pub async fn run(args: InvokeArgs) -> Result<ExitCode> {
    let (plugin_name, input) = match &args.from {
        Some(from) => recorded(&args, from).await?,
        None => (args.plugin.clone().unwrap_or_default(), parse_json("--input", &args.input)?),
    };
    let calls = Arc::new(Mutex::new(Vec::new()));
    let services = fixtures(&args.services, &calls)?;
    let resources = HostResources { services: Arc::new(services), kv: Arc::new(MemoryKv::default()) };
    let sandbox = Sandbox::with_resources(Limits::default(), resources)?;
    let path: PathBuf = args.plugins.dir.join(format!("{plugin_name}.wasm"));
    let wasm = std::fs::read(&path).with_context(|| format!("reading the plugin {}", path.display()))?;
    let manifest = crate::plugin::Manifest::text_for_component(&path).map_err(anyhow::Error::msg)?;
    let manifest = manifest_with(manifest, &args.config)?;
    let plugin = LoadedPlugin::from_bytes(&sandbox, None, &plugin_name, &path, &wasm, manifest.as_deref())?;
    let execution_id = format!("invoke-{}", Timestamp::now().0);
    let ctx = StepContext {
        workflow: "stepwise-invoke".into(),
        execution_id: execution_id.clone(),
        step_id: plugin_name.clone(),
        attempt: args.attempt,
        idempotency_key: format!("{execution_id}/{plugin_name}"),
    };
    let (export, call) = match &args.compensate {
        Some(data) => {
            let data = parse_json("--compensate", data)?;
            ("compensate", Call::Compensate { ctx, data: data.to_string() })
        }
        None => ("invoke", Call::Invoke { ctx, input: input.to_string() }),
    };
    let outcome = sandbox.call(plugin.runtime(), call, None, None).await;
    let (result, succeeded) = match outcome.result {
        Ok(CallSuccess { skipped: Some(reason), .. }) => (json!({"skipped": reason}), true),
        Ok(success) if export == "invoke" => {
            (json!({"ok": {"output": success.output, "compensation": success.compensation}}), true)
        }
        Ok(_) => (json!({"ok": null}), true),
        Err(failure) => (json!({"error": failure}), false),
    };
    let report = json!({
        "plugin": plugin_name,
        "from": args.from,
        "input": input,
        "version": plugin.version(),
        "export": export,
        "result": result,
        "logs": outcome.logs,
        "service_calls": *calls.lock().expect("fixture lock"),
        "cost": outcome.cost,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
