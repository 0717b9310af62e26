//! Performing one `Invoke` or `Compensate` command: a plugin call in the
//! sandbox, or a child execution run (or rolled back) through the engine.
//! Each is a future that yields the event it leads to; the owner runs it as
//! a task and records the event. Nothing here decides anything about the
//! saga: failures are classified and handed back.

use super::machine::{Machine, Target, Unit};
use super::view::ExecutionView;
use super::{ChildRun, Engine, EngineError};
use crate::journal::{CallCost, Event, ExecutionStatus, FailureKind, LogLine, PluginName, StepFailure, UnitId};
use crate::plugin::LoadedPlugin;
use crate::sandbox::{Call, CallSuccess, StepContext};
use crate::telemetry::{CallSpan, Traces};
use crate::workflow::WorkflowDefinition;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The compiled plugins an execution uses, by name.
pub(super) type Plugins = HashMap<PluginName, Arc<LoadedPlugin>>;

/// Which export a call invokes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Export {
    Invoke,
    Compensate,
}

/// A call about to be made, as a future yielding its event.
pub(super) type CallFuture = Pin<Box<dyn Future<Output = Event> + Send>>;

/// The event a failed call leads to.
pub(super) fn failed_event(
    export: Export,
    step: UnitId,
    attempt: u32,
    failure: StepFailure,
    logs: Vec<LogLine>,
    cost: Option<CallCost>,
) -> Event {
    match export {
        Export::Invoke => Event::AttemptFailed { step, attempt, failure, logs, cost },
        Export::Compensate => Event::CompensationFailed { step, attempt, failure, logs, cost },
    }
}

/// The call a command makes for `unit` of the execution in `machine`.
pub(super) fn call(
    engine: &Engine,
    machine: &Machine,
    plugins: &Plugins,
    unit: Unit,
    attempt: u32,
    export: Export,
    payload: Value,
) -> CallFuture {
    match machine.target(unit) {
        Target::Plugin(plugin) => {
            Box::pin(plugin_call(engine, machine, plugins, unit, &plugin, attempt, export, payload))
        }
        Target::Workflow(name) => Box::pin(child_call(engine, machine, unit, &name, attempt, export, payload)),
    }
}

/// What attempt `attempt` of `unit` is told about itself: the same for every
/// attempt but its number (the idempotency key is the execution and the
/// unit's label).
pub(super) fn step_context(machine: &Machine, unit: Unit, attempt: u32) -> StepContext {
    let (execution_id, step) = (machine.execution_id(), machine.label(unit));
    StepContext {
        workflow: machine.workflow().name().to_string(),
        execution_id: execution_id.to_string(),
        step_id: step.to_string(),
        attempt,
        idempotency_key: format!("{execution_id}/{step}"),
    }
}

/// A call of a plugin's export in the sandbox.
#[allow(clippy::too_many_arguments)]
fn plugin_call(
    engine: &Engine,
    machine: &Machine,
    plugins: &Plugins,
    unit: Unit,
    plugin: &PluginName,
    attempt: u32,
    export: Export,
    payload: Value,
) -> impl Future<Output = Event> + Send + 'static {
    let step = machine.label(unit);
    let definition = &machine.workflow().steps()[unit.node];
    let loaded = plugins.get(plugin).cloned();
    let sandbox = engine.shared.registry.sandbox().clone();
    let execution_id = machine.execution_id();
    let ctx = step_context(machine, unit, attempt);
    // An async step's timeout bounds its wait, not its invoke call.
    let timeout = if definition.is_async { None } else { definition.timeout };
    let tenant = machine.origin().tenant.clone();
    let payload = payload.to_string();
    let call = match export {
        Export::Invoke => Call::Invoke { ctx, input: payload },
        Export::Compensate => Call::Compensate { ctx, data: payload },
    };
    let metrics = engine.shared.metrics.clone();
    // What a call's span names, only when traces are exported.
    let traced = engine.shared.traces.clone().map(|traces| TracedCall {
        traces,
        execution_id: execution_id.to_string(),
        workflow: machine.workflow().name().to_string(),
    });
    let plugin = plugin.clone();
    async move {
        let Some(loaded) = loaded else {
            let failure = StepFailure::new(FailureKind::Unavailable, format!("plugin `{plugin}` is not loaded"));
            return failed_event(export, step, attempt, failure, Vec::new(), None);
        };
        let started = std::time::Instant::now();
        let outcome = sandbox.call(loaded.runtime(), call, timeout, tenant.as_deref()).await;
        if let Some(traced) = &traced {
            traced.record(&loaded, &step, attempt, export, tenant.as_deref(), &outcome, started.elapsed());
        }
        match export {
            Export::Invoke => metrics.observe_attempt(outcome.result.is_ok(), started.elapsed()),
            Export::Compensate => {
                metrics.compensation_attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        metrics.observe_cost(tenant.as_deref(), plugin.as_str(), &outcome.cost);
        let cost = (!outcome.cost.is_empty()).then_some(outcome.cost);
        match (export, outcome.result) {
            (Export::Invoke, Ok(CallSuccess { skipped: Some(reason), .. })) => {
                Event::AttemptSkipped { step, attempt, reason, logs: outcome.logs, cost }
            }
            (Export::Invoke, Ok(success)) => Event::AttemptSucceeded {
                step,
                attempt,
                output: success.output.unwrap_or(Value::Null),
                compensation: success.compensation,
                logs: outcome.logs,
                cost,
            },
            (Export::Compensate, Ok(_)) => Event::CompensationSucceeded { step, attempt, logs: outcome.logs, cost },
            (_, Err(failure)) => failed_event(export, step, attempt, failure, outcome.logs, cost),
        }
    }
}

/// The trace exporter, and the execution a call belongs to.
struct TracedCall {
    traces: Arc<Traces>,
    execution_id: String,
    workflow: String,
}

impl TracedCall {
    /// Records a finished call as a span, which started `duration` ago.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        plugin: &LoadedPlugin,
        step: &UnitId,
        attempt: u32,
        export: Export,
        tenant: Option<&str>,
        outcome: &crate::sandbox::CallOutcome,
        duration: std::time::Duration,
    ) {
        let (outcome_name, error) = match &outcome.result {
            Ok(CallSuccess { skipped: Some(_), .. }) => ("skipped", None),
            Ok(_) => ("succeeded", None),
            Err(failure) => (failure.kind.as_str(), Some(failure.message.as_str())),
        };
        self.traces.call(&CallSpan {
            execution_id: &self.execution_id,
            workflow: &self.workflow,
            tenant,
            step: &step.to_string(),
            plugin: plugin.name.as_str(),
            plugin_hash: &plugin.hash,
            plugin_version: plugin.version(),
            export: if export == Export::Invoke { "invoke" } else { "compensate" },
            attempt,
            outcome: outcome_name,
            error,
            cost: &outcome.cost,
            started: std::time::SystemTime::now() - duration,
            duration,
        });
    }
}

/// A child execution run (invoke) or rolled back (compensate).
fn child_call(
    engine: &Engine,
    machine: &Machine,
    unit: Unit,
    workflow: &str,
    attempt: u32,
    export: Export,
    input: Value,
) -> impl Future<Output = Event> + Send + 'static {
    let step = machine.label(unit);
    let engine = engine.clone();
    let pinned = &machine.pinned().workflows;
    let definitions: Result<std::collections::BTreeMap<String, WorkflowDefinition>, String> = pinned
        .iter()
        .map(|(name, json)| {
            serde_json::from_value(json.clone())
                .map(|definition| (name.clone(), definition))
                .map_err(|e| format!("the pinned definition of workflow `{name}` cannot be read: {e}"))
        })
        .collect();
    let child = machine.child_execution_id(unit, attempt);
    let parent = machine.execution_id().clone();
    let tenant = machine.origin().tenant.clone();
    // Compensation rolls back the child of the attempt that succeeded.
    let completed = machine.child_execution_id(unit, machine.unit(unit).attempts.max(1));
    let workflow = workflow.to_string();
    async move {
        let failed = |kind, message: String| {
            failed_event(export, step.clone(), attempt, StepFailure::new(kind, message), Vec::new(), None)
        };
        match export {
            Export::Invoke => {
                let workflows = match definitions {
                    Ok(workflows) => workflows,
                    Err(message) => return failed(FailureKind::Permanent, message),
                };
                let run = ChildRun {
                    id: child.clone(),
                    parent,
                    tenant,
                    definition: workflows.get(&workflow).cloned(),
                    workflows,
                    input,
                };
                match engine.run_child(run).await {
                    Ok(view) => match view.status {
                        ExecutionStatus::Succeeded => Event::AttemptSucceeded {
                            step,
                            attempt,
                            output: view.output.unwrap_or(Value::Null),
                            compensation: None,
                            logs: Vec::new(),
                            cost: None,
                        },
                        ExecutionStatus::Compensated | ExecutionStatus::Failed => {
                            let failure = child_failure(&view);
                            failed_event(export, step, attempt, failure, Vec::new(), None)
                        }
                        _ => Event::ChildWaiting { step, attempt },
                    },
                    Err(error) => failed(FailureKind::Unavailable, format!("child execution `{child}`: {error}")),
                }
            }
            Export::Compensate => {
                let reason = format!("its parent execution `{parent}` is rolling back");
                let mut rolled_back = engine.rollback_and_wait(&completed, reason.clone()).await;
                // A child whose own rollback failed is `failed`: a later
                // compensation attempt (an operator's retry of the parent)
                // retries the child's failed compensations.
                if attempt > 1 && matches!(&rolled_back, Ok(view) if view.status == ExecutionStatus::Failed) {
                    rolled_back = match engine.retry(&completed, &reason).await {
                        Ok(delivery) => delivery.settling.wait().await,
                        Err(error) => Err(error),
                    };
                }
                match rolled_back {
                    Ok(view) if view.status == ExecutionStatus::Compensated => {
                        Event::CompensationSucceeded { step, attempt, logs: Vec::new(), cost: None }
                    }
                    Ok(view) => failed(
                        FailureKind::Permanent,
                        format!(
                            "child execution `{completed}` ended `{}` instead of `compensated`",
                            view.status.as_str()
                        ),
                    ),
                    // Its attempt never created the child: nothing to undo.
                    Err(EngineError::NotFound(_)) => {
                        Event::CompensationSucceeded { step, attempt, logs: Vec::new(), cost: None }
                    }
                    Err(error) => {
                        failed(FailureKind::Unavailable, format!("rolling back child execution `{completed}`: {error}"))
                    }
                }
            }
        }
    }
}

/// Why a child that rolled back (or failed) makes its workflow step fail:
/// the child's own failure kind, so that the step's retry policy decides
/// as it would for the failing step itself.
fn child_failure(view: &ExecutionView) -> StepFailure {
    let id = &view.execution_id;
    match (&view.error, view.status) {
        (_, ExecutionStatus::Failed) => StepFailure::new(
            FailureKind::Permanent,
            format!("child execution `{id}` failed: a compensation of its own failed"),
        ),
        (Some(error), _) => {
            let step = error.step.as_ref().map(|s| format!("step `{s}`: ")).unwrap_or_default();
            StepFailure::new(
                error.failure.kind,
                format!("child execution `{id}` was rolled back: {step}{}", error.failure.message),
            )
        }
        (None, _) => StepFailure::new(FailureKind::Permanent, format!("child execution `{id}` was rolled back")),
    }
}
