//! `stepwise plugins`: list a plugin directory, validate or inspect a component file.

use super::PluginDirArg;
use crate::plugin::{describe_component, LoadedPlugin, Manifest, PluginDirectory, PluginRegistry};
use anyhow::{Context, Result};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use wasmtime::component::Component;

/// Subcommands of `stepwise plugins`.
#[derive(clap::Subcommand)]
pub enum PluginsCommand {
    /// List the plugins of a directory: name, size, hash, status.
    List {
        #[command(flatten)]
        plugins: PluginDirArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check that a component file is a valid step plugin (exit code 0 when it is).
    Validate {
        /// The component file.
        file: PathBuf,
    },
    /// Show a component's exports and imports.
    Inspect {
        /// The component file.
        file: PathBuf,
    },
    /// Build a JavaScript step's component: a QuickJS runtime module
    /// (guest-examples/js/runtime) pre-initialised with the step's bundled
    /// script. `@stepwise/sdk/build` runs this; a script that does not load
    /// as a step is refused with the reason (exit 2).
    BuildJs {
        /// The runtime module of the step's world (`stepwise-qjs-<world>.wasm`).
        #[arg(long)]
        runtime: PathBuf,
        /// The bundled script (it sets `globalThis.__stepwise_step`).
        #[arg(long)]
        script: PathBuf,
        /// Where to write the component.
        #[arg(long, short)]
        output: PathBuf,
    },
}

pub async fn run(command: PluginsCommand) -> Result<ExitCode> {
    if let PluginsCommand::BuildJs { runtime, script, output } = &command {
        return build_js(runtime, script, output);
    }
    let sandbox = super::demo_sandbox()?;
    match command {
        PluginsCommand::List { plugins, json } => {
            let directory = PluginDirectory::scan(&plugins.dir)
                .with_context(|| format!("reading the plugin directory {}", plugins.dir.display()))?;
            let cache = crate::plugin::CodeCache::new(&crate::plugin::CodeCache::default_dir());
            let registry = PluginRegistry::with_cache(sandbox, directory.clone(), Some(cache));
            let mut rows = Vec::new();
            for (name, path) in directory.plugins() {
                let row = match registry.get(name).await {
                    Ok(plugin) => json!({
                        "name": name, "file": path, "size": plugin.size, "hash": plugin.hash, "status": "ok",
                        "version": plugin.manifest.version, "capabilities": plugin.runtime().grants.names(),
                    }),
                    Err(error) => json!({"name": name, "file": path, "status": "invalid", "error": error.to_string()}),
                };
                rows.push(row);
            }
            for (path, reason) in directory.ignored() {
                rows.push(json!({"file": path, "status": "ignored", "error": reason}));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<22} {:<8} {:<8} {:>9}  {:<16} DETAIL", "NAME", "VERSION", "STATUS", "SIZE", "HASH");
                for row in &rows {
                    let text = |key: &str| row[key].as_str().unwrap_or("-").to_string();
                    let hash: String = text("hash").chars().take(16).collect();
                    let detail = match row.get("error").and_then(|e| e.as_str()) {
                        Some(error) => error.to_string(),
                        None => row["capabilities"].as_array().map_or(String::new(), |caps| {
                            caps.iter().filter_map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
                        }),
                    };
                    let size = row["size"].as_u64().map_or("-".to_string(), |s| s.to_string());
                    let (name, version, status) = (text("name"), text("version"), text("status"));
                    println!("{name:<22} {version:<8} {status:<8} {size:>9}  {hash:<16} {detail}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Validate { file } => {
            let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin").to_string();
            let plugin = LoadedPlugin::load(&sandbox, &name, &file)?;
            println!("{}: valid step plugin (world stepwise:step/step@0.1.0), sha256 {}", file.display(), plugin.hash);
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Inspect { file } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let component = Component::from_binary(sandbox.engine(), &bytes).map_err(|error| {
                crate::sandbox::wasmtime_error(
                    &format!("{} is not a valid WebAssembly component", file.display()),
                    error,
                )
            })?;
            let description = describe_component(sandbox.engine(), &component);
            let list = |items: &[(String, &str)]| {
                items.iter().map(|(name, kind)| json!({"name": name, "kind": kind})).collect::<Vec<_>>()
            };
            let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin");
            let manifest = Manifest::for_component(&file).map_err(anyhow::Error::msg)?.unwrap_or_default();
            let problems = crate::plugin::check_world(sandbox.engine(), &component, &manifest.grants(name, None));
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "file": file,
                    "exports": list(&description.exports),
                    "imports": list(&description.imports),
                    "implements_step_world": problems.is_empty(),
                    "problems": problems,
                }))?
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::BuildJs { .. } => unreachable!("handled before the sandbox is built"),
    }
}

fn build_js(runtime: &std::path::Path, script: &std::path::Path, output: &std::path::Path) -> Result<ExitCode> {
    let runtime_module =
        std::fs::read(runtime).with_context(|| format!("reading the runtime {}", runtime.display()))?;
    let source = std::fs::read_to_string(script).with_context(|| format!("reading the script {}", script.display()))?;
    let component = crate::plugin::quickjs::build_component(&runtime_module, &source)
        .with_context(|| format!("building {} from {}", output.display(), script.display()))?;
    std::fs::write(output, &component).with_context(|| format!("writing {}", output.display()))?;
    Ok(ExitCode::SUCCESS)
}
