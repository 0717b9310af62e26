//! The driver: performs the state machine's commands and feeds the results
//! back as events, writing each event to the store before applying it.
//!
//! Guest calls and backoff timers run as tokio tasks, so independent steps
//! run in parallel; the driver itself is a single loop per execution and
//! holds no saga rules. It returns when the execution is final, or when it
//! waits for the outside world (async steps) with nothing left to run.

use super::event::{Command, Event, Timer};
use super::machine::{ExecutionStatus, Machine};
use super::view::ExecutionView;
use super::{Engine, EngineError};
use crate::failure::{FailureKind, StepFailure};
use crate::ids::PluginName;
use crate::plugin::{LoadedPlugin, PluginError, PluginRegistry};
use crate::sandbox::{Call, StepContext};
use crate::store::RecordedEvent;
use crate::time::Timestamp;
use crate::workflow::Workflow;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::task::JoinSet;

/// The compiled plugins an execution uses, by name.
pub(super) type Plugins = HashMap<PluginName, Arc<LoadedPlugin>>;

/// Loads every plugin of the workflow before the execution starts, so a
/// broken plugin is reported up front rather than halfway through a saga:
/// the versions pinned in `pinned` (name -> content hash), else the current ones.
pub(super) async fn resolve_plugins(
    registry: &PluginRegistry,
    workflow: &Workflow,
    pinned: &BTreeMap<String, String>,
) -> Result<Plugins, EngineError> {
    let mut plugins = HashMap::new();
    for name in workflow.plugins() {
        let plugin = match pinned.get(name.as_str()) {
            Some(hash) => registry.get_pinned(name.as_str(), hash).await?,
            None => registry.get(name.as_str()).await?,
        };
        plugins.insert(name, plugin);
    }
    if pinned.is_empty() {
        for step in workflow.steps() {
            let Some(pin) = &step.plugin_version else { continue };
            let version = plugins[&step.plugin].version();
            let matches =
                version.is_some_and(|v| v == pin || v.strip_prefix(pin.as_str()).is_some_and(|r| r.starts_with('.')));
            if !matches {
                return Err(PluginError::VersionMismatch {
                    name: step.plugin.to_string(),
                    version: version.map(str::to_string),
                    pin: pin.clone(),
                    step: step.id.to_string(),
                }
                .into());
            }
        }
    }
    Ok(plugins)
}

/// Which export a call task invokes.
#[derive(Clone, Copy)]
enum Export {
    Invoke,
    Compensate,
}

/// What a task in flight is, by task id.
enum Task {
    /// A guest call; the event stands for it if its task panics.
    Call(Event),
    /// A backoff the execution waits out.
    Backoff,
    /// A deadline (async step or workflow timeout), re-armed on resume.
    Deadline,
}

/// Drives one execution.
pub(super) struct Driver {
    engine: Engine,
    machine: Machine,
    plugins: Plugins,
    next_seq: u64,
    tasks: JoinSet<Event>,
    in_flight: HashMap<tokio::task::Id, Task>,
}

impl Driver {
    /// A driver for `machine`, whose log holds `next_seq` events already.
    pub(super) fn new(engine: Engine, machine: Machine, plugins: Plugins, next_seq: u64) -> Self {
        Self { engine, machine, plugins, next_seq, tasks: JoinSet::new(), in_flight: HashMap::new() }
    }

    /// The execution this driver drives.
    pub(super) fn execution_id(&self) -> &crate::ids::ExecutionId {
        self.machine.execution_id()
    }

    /// Starts the execution if it was not, performs `outstanding` work, and
    /// runs until it is final or waits for the outside world.
    pub(super) async fn run(mut self, outstanding: Vec<Command>) -> Result<ExecutionView, EngineError> {
        let mut queue = VecDeque::from(outstanding);
        if !self.machine.is_started() {
            self.engine.metrics.executions_started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let plugins = self.plugins.iter().map(|(name, p)| (name.to_string(), p.hash.clone())).collect();
            queue.extend(self.record(Event::ExecutionStarted { plugins }).await?);
        }
        loop {
            let mut finished = false;
            while let Some(command) = queue.pop_front() {
                match command {
                    Command::Invoke { step, attempt, input } => {
                        let id = self.machine.workflow().steps()[step].id.clone();
                        queue.extend(self.record(Event::AttemptStarted { step: id, attempt }).await?);
                        self.spawn_call(step, attempt, Export::Invoke, input);
                    }
                    Command::Compensate { step, attempt, data } => {
                        let id = self.machine.workflow().steps()[step].id.clone();
                        queue.extend(self.record(Event::CompensationStarted { step: id, attempt }).await?);
                        self.spawn_call(step, attempt, Export::Compensate, data);
                    }
                    // A timer already due fires now, so that a resumed execution
                    // acts on deadlines that passed while nobody was driving it.
                    Command::StartTimer { timer, due } if due <= Timestamp::now() => {
                        queue.extend(self.record(Event::TimerFired { timer }).await?);
                    }
                    Command::StartTimer { timer, due } => self.spawn_timer(timer, due),
                    Command::Finish => finished = true,
                }
            }
            let status = self.machine.status();
            let busy = self.in_flight.values().any(|task| !matches!(task, Task::Deadline));
            if finished || status.is_final() || (status == ExecutionStatus::Waiting && !busy) {
                // Left: stale backoffs and deadlines, re-armed by whoever resumes.
                self.tasks.abort_all();
                if status.is_final() {
                    self.engine.metrics.observe_finished(status);
                    let at = self.machine.finished_at().unwrap_or_else(Timestamp::now);
                    self.engine.store.set_status(self.machine.execution_id(), status, at).await?;
                }
                return Ok(ExecutionView::of(&self.machine));
            }
            let event = match self.tasks.join_next_with_id().await {
                Some(Ok((id, event))) => {
                    self.in_flight.remove(&id);
                    event
                }
                Some(Err(error)) => match self.in_flight.remove(&error.id()) {
                    Some(Task::Call(fallback)) if error.is_panic() => fallback,
                    _ => continue,
                },
                None => unreachable!("a running execution always has work in flight"),
            };
            queue.extend(self.record(event).await?);
        }
    }

    /// Writes the event to the store, then applies it.
    async fn record(&mut self, event: Event) -> Result<Vec<Command>, EngineError> {
        let recorded = RecordedEvent { at: Timestamp::now(), event };
        let id = self.machine.execution_id().clone();
        self.engine.store.append(&id, self.next_seq, &recorded).await?;
        self.next_seq += 1;
        let before = self.machine.status();
        let commands = self.machine.apply(recorded.at, recorded.event);
        let after = self.machine.status();
        if after != before && !after.is_final() {
            self.engine.store.set_status(&id, after, recorded.at).await?;
        }
        Ok(commands)
    }

    fn spawn_call(&mut self, step: usize, attempt: u32, export: Export, payload: Value) {
        let workflow = self.machine.workflow();
        let definition = &workflow.steps()[step];
        let step_id = definition.id.clone();
        let plugin = self.plugins[&definition.plugin].clone();
        let sandbox = self.engine.registry.sandbox().clone();
        let execution_id = self.machine.execution_id();
        let ctx = StepContext {
            workflow: workflow.name().to_string(),
            execution_id: execution_id.to_string(),
            step_id: step_id.to_string(),
            attempt,
            idempotency_key: format!("{execution_id}/{step_id}"),
        };
        // An async step's timeout bounds its wait, not its invoke call.
        let timeout = if definition.is_async { None } else { definition.timeout };
        let payload = payload.to_string();
        let call = match export {
            Export::Invoke => Call::Invoke { ctx, input: payload },
            Export::Compensate => Call::Compensate { ctx, data: payload },
        };
        let failed_step = step_id.clone();
        let failed = move |failure: StepFailure, logs| match export {
            Export::Invoke => Event::AttemptFailed { step: failed_step.clone(), attempt, failure, logs },
            Export::Compensate => Event::CompensationFailed { step: failed_step.clone(), attempt, failure, logs },
        };
        let panicked =
            failed(StepFailure::new(FailureKind::Trap, "the host task running this call panicked"), Vec::new());
        let metrics = self.engine.metrics.clone();
        let handle = self.tasks.spawn(async move {
            let started = std::time::Instant::now();
            let outcome = sandbox.call(plugin.runtime(), call, timeout).await;
            match export {
                Export::Invoke => metrics.observe_attempt(outcome.result.is_ok(), started.elapsed()),
                Export::Compensate => {
                    metrics.compensation_attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            match (export, outcome.result) {
                (Export::Invoke, Ok(success)) => Event::AttemptSucceeded {
                    step: step_id,
                    attempt,
                    output: success.output.unwrap_or(Value::Null),
                    compensation: success.compensation,
                    logs: outcome.logs,
                },
                (Export::Compensate, Ok(_)) => {
                    Event::CompensationSucceeded { step: step_id, attempt, logs: outcome.logs }
                }
                (_, Err(failure)) => failed(failure, outcome.logs),
            }
        });
        self.in_flight.insert(handle.id(), Task::Call(panicked));
    }

    fn spawn_timer(&mut self, timer: Timer, due: Timestamp) {
        let delay = Timestamp::now().until(due);
        let kind = if timer.is_deadline() { Task::Deadline } else { Task::Backoff };
        let handle = self.tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            Event::TimerFired { timer }
        });
        self.in_flight.insert(handle.id(), kind);
    }
}
