//! Commands on recorded executions: resume, complete/fail async steps,
//! cancel (roll back), list, show and purge.

use super::{demo_engine, exit_code, PluginDirArg, StoreArg};
use crate::engine::{Delivery, Engine, ExecutionView, StepStatus, TimelineKind};
use crate::journal::{CallCost, ExecutionId, ExecutionStatus, StepFailure, Timestamp, UnitId};
use crate::store::ListFilter;
use anyhow::Result;
use std::process::ExitCode;

/// Arguments of `stepwise resume`.
#[derive(clap::Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    plugins: PluginDirArg,
    #[command(flatten)]
    store: StoreArg,
}

/// Arguments of `stepwise complete`.
#[derive(clap::Args)]
pub struct CompleteArgs {
    /// The execution.
    execution_id: String,
    /// The async step.
    step_id: String,
    /// The step's output, as JSON.
    #[arg(long)]
    output: String,
    /// The same report again with the same key gets the same answer.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    plugins: PluginDirArg,
    #[command(flatten)]
    store: StoreArg,
}

/// Arguments of `stepwise fail`.
#[derive(clap::Args)]
pub struct FailArgs {
    /// The execution.
    execution_id: String,
    /// The async step.
    step_id: String,
    /// What went wrong.
    #[arg(long)]
    error: String,
    /// The same report again with the same key gets the same answer.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    plugins: PluginDirArg,
    #[command(flatten)]
    store: StoreArg,
}

/// Arguments of `stepwise cancel`.
#[derive(clap::Args)]
pub struct CancelArgs {
    /// The execution.
    execution_id: String,
    /// Why, recorded in the execution.
    #[arg(long, default_value = "cancelled by an operator")]
    reason: String,
    #[command(flatten)]
    plugins: PluginDirArg,
    #[command(flatten)]
    store: StoreArg,
}

/// Arguments of `stepwise retry`.
#[derive(clap::Args)]
pub struct RetryArgs {
    /// The `failed` execution.
    execution_id: String,
    /// Why, recorded in the execution.
    #[arg(long, default_value = "retried by an operator")]
    reason: String,
    #[command(flatten)]
    plugins: PluginDirArg,
    #[command(flatten)]
    store: StoreArg,
}

/// Subcommands of `stepwise executions`.
#[derive(clap::Subcommand)]
pub enum ExecutionsCommand {
    /// List executions, newest first.
    List {
        /// Only executions with this status.
        #[arg(long)]
        status: Option<String>,
        /// Only executions of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only executions of this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        plugins: PluginDirArg,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Show one execution: a readable view, or its JSON with `--json`.
    Show {
        /// The execution.
        execution_id: String,
        /// Print the execution JSON (as `run` does).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        plugins: PluginDirArg,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Delete finished executions older than an age (e.g. `30d`, `12h`):
    /// `succeeded` and `compensated` ones; `failed` ones only with
    /// `--include-failed`; unfinished ones never.
    Purge {
        /// Age of the last status change beyond which finished executions go.
        #[arg(long)]
        older_than: humantime::Duration,
        /// Also delete `failed` executions (compensations that kept failing).
        #[arg(long)]
        include_failed: bool,
        /// Print what was deleted as JSON (`{"purged": {"succeeded": N, ...}}`).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        plugins: PluginDirArg,
        #[command(flatten)]
        store: StoreArg,
    },
}

pub async fn resume(args: ResumeArgs) -> Result<ExitCode> {
    let engine = demo_engine(&args.store, &args.plugins).await?;
    let resumed = engine.resume_all().await;
    let collected = engine.collect_plugin_garbage().await;
    engine.shutdown().await;
    let resumed = resumed?;
    if collected? > 0 {
        eprintln!("removed plugin cache files no unfinished execution needs");
    }
    let summary: Vec<_> = resumed
        .iter()
        .map(|result| match result {
            Ok(e) => serde_json::json!({"execution_id": e.execution_id, "workflow": e.workflow, "status": e.status}),
            Err(error) => {
                eprintln!("warning: {error}");
                serde_json::json!({"error": error.to_string()})
            }
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(ExitCode::SUCCESS)
}

pub async fn complete(args: CompleteArgs) -> Result<ExitCode> {
    let output = crate::journal::json::parse_bounded(&args.output)
        .map_err(|e| anyhow::anyhow!("invalid JSON in --output: {e}"))?;
    let engine = demo_engine(&args.store, &args.plugins).await?;
    let id = ExecutionId::new(args.execution_id);
    let step = unit_id(&args.step_id)?;
    let delivered = engine.complete_step(&id, &step, output, args.idempotency_key).await;
    print_settled(&engine, delivered).await
}

pub async fn fail(args: FailArgs) -> Result<ExitCode> {
    let engine = demo_engine(&args.store, &args.plugins).await?;
    let id = ExecutionId::new(args.execution_id);
    let step = unit_id(&args.step_id)?;
    let delivered = engine.fail_step(&id, &step, args.error, args.idempotency_key).await;
    print_settled(&engine, delivered).await
}

pub async fn cancel(args: CancelArgs) -> Result<ExitCode> {
    let engine = demo_engine(&args.store, &args.plugins).await?;
    let delivered = engine.cancel(&ExecutionId::new(args.execution_id), &args.reason).await;
    print_settled(&engine, delivered).await
}

pub async fn retry(args: RetryArgs) -> Result<ExitCode> {
    let engine = demo_engine(&args.store, &args.plugins).await?;
    let delivered = engine.retry(&ExecutionId::new(args.execution_id), &args.reason).await;
    print_settled(&engine, delivered).await
}

/// Waits until the execution an accepted event went to rests, prints it and
/// lets go of this process's claims.
async fn print_settled(engine: &Engine, delivered: Result<Delivery, crate::engine::EngineError>) -> Result<ExitCode> {
    let settled = match delivered {
        Ok(delivery) => delivery.settling.wait().await,
        Err(error) => Err(error),
    };
    engine.shutdown().await;
    let execution = settled?;
    println!("{}", serde_json::to_string_pretty(&execution)?);
    Ok(exit_code(execution.status))
}

fn unit_id(text: &str) -> Result<UnitId> {
    text.parse().map_err(|error: crate::journal::unit::InvalidUnitId| anyhow::anyhow!(error))
}

fn parse_status(text: &str) -> Result<ExecutionStatus> {
    text.parse().map_err(|error: crate::journal::status::UnknownStatus| anyhow::anyhow!(error))
}

pub async fn run(command: ExecutionsCommand) -> Result<ExitCode> {
    match command {
        ExecutionsCommand::List { status, workflow, tenant, limit, json, plugins, store } => {
            let status = status.as_deref().map(parse_status).transpose()?;
            let engine = super::reading_engine(&store, &plugins).await?;
            let filter = ListFilter { status, workflow, tenant, limit: Some(limit), before: None };
            let executions = engine.store().list(&filter).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&executions)?);
            } else {
                println!("{:<38} {:<24} {:<13} {:<25} UPDATED", "EXECUTION", "WORKFLOW", "STATUS", "CREATED");
                for e in executions {
                    println!(
                        "{:<38} {:<24} {:<13} {:<25} {}",
                        e.execution_id,
                        e.workflow,
                        e.status.as_str(),
                        e.created_at.to_rfc3339(),
                        e.updated_at.to_rfc3339()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ExecutionsCommand::Show { execution_id, json, plugins, store } => {
            let engine = super::reading_engine(&store, &plugins).await?;
            let execution = engine.show(&ExecutionId::new(execution_id)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&execution)?);
            } else {
                print!("{}", readable(&execution));
            }
            Ok(ExitCode::SUCCESS)
        }
        ExecutionsCommand::Purge { older_than, include_failed, json, plugins, store } => {
            let engine = super::reading_engine(&store, &plugins).await?;
            let age: std::time::Duration = older_than.into();
            let cutoff = Timestamp(Timestamp::now().0.saturating_sub(age.as_millis() as u64));
            let mut statuses = crate::store::PURGED_BY_DEFAULT.to_vec();
            if include_failed {
                statuses.push(ExecutionStatus::Failed);
            }
            let purged = engine.store().purge_finished_before(cutoff, &statuses).await?;
            if json {
                let counts: serde_json::Map<String, serde_json::Value> =
                    purged.iter().map(|(status, count)| (status.as_str().to_string(), (*count).into())).collect();
                println!("{}", serde_json::json!({"purged": counts, "before": cutoff.to_rfc3339()}));
            } else {
                let kept = if include_failed { "" } else { "; failed executions are kept (--include-failed)" };
                println!(
                    "purged {} (last updated before {}){kept}",
                    crate::store::describe_purge(&purged),
                    cutoff.to_rfc3339()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The execution for people: header, steps, timeline.
/// A cost for people: `fuel 1.2M, 0.41 ms, 1.1 MiB`.
fn cost_text(cost: &CallCost) -> String {
    let fuel = match cost.fuel {
        fuel if fuel >= 1_000_000 => format!("{:.1}M", fuel as f64 / 1e6),
        fuel if fuel >= 1_000 => format!("{:.1}k", fuel as f64 / 1e3),
        fuel => fuel.to_string(),
    };
    let memory = cost.peak_memory_bytes as f64 / (1 << 20) as f64;
    format!("fuel {fuel}, {:.2} ms, {memory:.1} MiB", cost.wall_us as f64 / 1e3)
}

fn readable(execution: &ExecutionView) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "execution {}  workflow {}  status {}",
        execution.execution_id,
        execution.workflow,
        execution.status.as_str()
    );
    if let Some(error) = &execution.error {
        let step = error.step.as_ref().map_or("workflow".to_string(), |s| format!("step {s}"));
        let _ = writeln!(out, "error: {step}: {}", error.failure);
    }
    if let Some(tenant) = &execution.tenant {
        let _ = writeln!(out, "tenant: {tenant}");
    }
    if let Some(parent) = &execution.parent_execution_id {
        let _ = writeln!(out, "parent execution: {parent}");
    }
    if !execution.cost.is_empty() {
        let _ = writeln!(out, "cost: {} calls, {}", execution.cost.calls, cost_text(&execution.cost));
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:<24} {:<19} {:>8}  {:<28} ERROR / NOTE",
        "STEP", "RUNS", "STATUS", "ATTEMPTS", "COST"
    );
    let row = |out: &mut String, id: &str, runs: &str, run: (StepStatus, u32, &CallCost), note: String| {
        let (status, attempts, cost) = run;
        let status = serde_json::to_value(status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let cost = if cost.is_empty() { "-".to_string() } else { cost_text(cost) };
        let _ = writeln!(out, "{id:<24} {runs:<24} {status:<19} {attempts:>8}  {cost:<28} {note}");
    };
    let problem = |error: Option<&StepFailure>, compensation: Option<&StepFailure>| {
        error.or(compensation).map(ToString::to_string).unwrap_or_default()
    };
    for step in &execution.steps {
        let runs = match (&step.plugin, &step.workflow, &step.transform) {
            (Some(plugin), _, _) => plugin.to_string(),
            (_, Some(workflow), _) => format!("workflow {workflow}"),
            _ => "transform".to_string(),
        };
        let mut note = problem(step.run.error.as_ref(), step.run.compensation_error.as_ref());
        if let Some(reason) = &step.skip_reason {
            note = format!("skipped: {reason}");
        }
        if !step.run.child_execution_ids.is_empty() {
            let children: Vec<&str> = step.run.child_execution_ids.iter().map(|id| id.as_str()).collect();
            note = format!("{note} children: {}", children.join(", ")).trim().to_string();
        }
        row(&mut out, step.id.as_str(), &runs, (step.run.status, step.run.attempts, &step.run.cost), note);
        for element in step.elements.iter().flatten() {
            let note = problem(element.run.error.as_ref(), element.run.compensation_error.as_ref());
            let run = (element.run.status, element.run.attempts, &element.run.cost);
            row(&mut out, &format!("  {}", element.id), "", run, note);
        }
    }
    for hook in &execution.hooks {
        let note = match (&hook.skip_reason, hook.handlers.is_empty()) {
            (Some(reason), _) => format!("skipped: {reason}"),
            (None, true) => "no handlers for this tenant".to_string(),
            (None, false) => String::new(),
        };
        row(&mut out, &format!("hook {}", hook.name), "", (hook.status, 0, &CallCost::default()), note);
        for handler in &hook.handlers {
            let note = problem(handler.run.error.as_ref(), handler.run.compensation_error.as_ref());
            let runs = handler.plugin.as_ref().map(|plugin| plugin.to_string()).unwrap_or_default();
            let run = (handler.run.status, handler.run.attempts, &handler.run.cost);
            row(&mut out, &format!("  {}", handler.id), &runs, run, note);
        }
    }
    let _ = writeln!(out, "\ntimeline:");
    for entry in &execution.events {
        let detail = match &entry.kind {
            TimelineKind::Log { step, level, message, .. } => format!("  {step} [{level:?}] {message}"),
            other => {
                let value = serde_json::to_value(other).unwrap_or_default();
                let kind = value["type"].as_str().unwrap_or_default().to_string();
                let step = value["step"].as_str().map(|s| format!(" {s}")).unwrap_or_default();
                let attempt = value["attempt"].as_u64().map(|a| format!(" #{a}")).unwrap_or_default();
                format!("{kind}{step}{attempt}")
            }
        };
        let _ = writeln!(out, "  {} {detail}", entry.at.to_rfc3339());
    }
    out
}
