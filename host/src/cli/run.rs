//! `stepwise run`: one execution of a workflow file, printed as JSON.

use super::{demo_engine, exit_code, PluginDirArg, StoreArg};
use crate::engine::StartOptions;
use crate::workflow::Workflow;
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
}

pub async fn run(args: RunArgs) -> Result<ExitCode> {
    let input = read_input(&args)?;
    let engine = demo_engine(&args.store, &args.plugins)?;
    let workflow = Workflow::load_file(&args.workflow, engine.registry().as_ref())?;
    let resumed = engine.resume_all().await.context("resuming unfinished executions")?;
    if !resumed.is_empty() {
        eprintln!("resumed {} unfinished execution(s) first", resumed.len());
    }
    let options = StartOptions { idempotency_key: args.idempotency_key };
    let execution = engine.run(Arc::new(workflow), input, options).await?;
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
    match serde_json::from_str(&text) {
        Ok(value) => Ok(value),
        Err(error) => bail!("invalid JSON in {source}: {error}"),
    }
}
