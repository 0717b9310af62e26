//! `stepwise run`: one execution of a workflow file, printed as JSON.

use super::{demo_engine, exit_code, PluginDirArg, StoreArg};
use crate::engine::StartOptions;
use crate::workflow::{DirectoryCatalog, NoWorkflows, Workflow, WorkflowCatalog};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `stepwise run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The workflow file (TOML).
    workflow: PathBuf,
    /// The workflow input, as JSON.
    #[arg(long, conflicts_with = "input_file")]
    input: Option<String>,
    /// A file holding the workflow input, as JSON.
    #[arg(long)]
    input_file: Option<PathBuf>,
    #[command(flatten)]
    plugins: PluginDirArg,
    #[command(flatten)]
    store: StoreArg,
    /// Starting twice with the same key returns the first execution.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// The tenant the execution runs for: the hook handlers its tenant file binds run.
    #[arg(long)]
    tenant: Option<String>,
    #[command(flatten)]
    tenants: super::TenantDirArg,
    /// Where the workflows it runs as children are (default: the workflow file's directory).
    #[arg(long)]
    workflows: Option<PathBuf>,
}

pub async fn run(args: RunArgs) -> Result<ExitCode> {
    let input = read_input(&args)?;
    let engine = demo_engine(&args.store, &args.plugins).await?.with_tenants(args.tenants.load()?);
    let workflows_dir = match &args.workflows {
        Some(dir) => dir.clone(),
        None => args.workflow.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")),
    };
    let dir = if workflows_dir.as_os_str().is_empty() { PathBuf::from(".") } else { workflows_dir };
    let catalog: Box<dyn WorkflowCatalog> = match DirectoryCatalog::scan(&dir) {
        Ok(catalog) => Box::new(catalog),
        Err(error) if args.workflows.is_some() => bail!("reading the workflow directory {}: {error}", dir.display()),
        // The workflow file's own directory is unreadable: loading the file says why.
        Err(_) => Box::new(NoWorkflows),
    };
    let workflow = Workflow::load_file_with(&args.workflow, engine.registry().as_ref(), catalog.as_ref())?;
    let resumed = engine.resume_all().await.context("resuming unfinished executions")?;
    if !resumed.is_empty() {
        eprintln!("resumed {} unfinished execution(s) first", resumed.len());
        for error in resumed.iter().filter_map(|result| result.as_ref().err()) {
            eprintln!("warning: {error}");
        }
    }
    let options = StartOptions { idempotency_key: args.idempotency_key, tenant: args.tenant };
    let execution = engine.run(Arc::new(workflow), input, options).await;
    engine.shutdown().await;
    let execution = execution?;
    println!("{}", serde_json::to_string_pretty(&execution)?);
    Ok(exit_code(execution.status))
}

fn read_input(args: &RunArgs) -> Result<Value> {
    let (text, source) = match (&args.input, &args.input_file) {
        (Some(text), _) => (text.clone(), "--input".to_string()),
        (None, Some(path)) => (
            std::fs::read_to_string(path).with_context(|| format!("reading the input file {}", path.display()))?,
            path.display().to_string(),
        ),
        (None, None) => ("{}".to_string(), String::new()),
    };
    match crate::journal::json::parse_bounded(&text) {
        Ok(value) => Ok(value),
        Err(error) => bail!("invalid JSON in {source}: {error}"),
    }
}
