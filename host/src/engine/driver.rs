//! The driver: performs the state machine's commands and feeds the results
//! back as events, writing each event to the store before applying it.
//!
//! Guest calls, child executions and backoff timers run as tokio tasks, so
//! independent units run in parallel; the driver itself is a single loop per
//! execution and holds no saga rules. It returns when the execution is final,
//! or when it waits for the outside world (async steps, waiting children)
//! with nothing left to run.

use super::event::{Command, Event, Timer};
use super::machine::{ExecutionStatus, Machine, StepPhase, Target, Unit};
use super::view::ExecutionView;
use super::{ChildRun, Engine, EngineError};
use crate::failure::{FailureKind, StepFailure};
use crate::ids::{PluginName, StepId};
use crate::plugin::{LoadedPlugin, PluginError, PluginRegistry};
use crate::sandbox::{Call, StepContext};
use crate::store::RecordedEvent;
use crate::time::Timestamp;
use crate::workflow::{StepKind, Workflow};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use tokio::task::JoinSet;

/// The compiled plugins an execution uses, by name.
pub(super) type Plugins = HashMap<PluginName, Arc<LoadedPlugin>>;

/// Loads every plugin an execution uses before it starts (or resumes), so a
/// broken plugin is reported up front rather than halfway through a saga:
/// the versions pinned in `pinned` (name -> content hash), else the current ones.
pub(super) async fn resolve_plugins(
    registry: &PluginRegistry,
    names: &BTreeSet<PluginName>,
    pinned: &BTreeMap<String, String>,
) -> Result<Plugins, EngineError> {
    let mut plugins = HashMap::new();
    for name in names {
        let plugin = match pinned.get(name.as_str()) {
            Some(hash) => registry.get_pinned(name.as_str(), hash).await?,
            None => registry.get(name.as_str()).await?,
        };
        plugins.insert(name.clone(), plugin);
    }
    Ok(plugins)
}

/// Refuses to start when a step pins a plugin version (`name@1.2`) that the
/// current plugin does not have.
pub(super) fn check_version_pins(workflow: &Workflow, plugins: &Plugins) -> Result<(), EngineError> {
    for step in workflow.steps() {
        let StepKind::Plugin { name, version: Some(pin) } = &step.kind else { continue };
        let version = plugins[name].version();
        let matches =
            version.is_some_and(|v| v == pin || v.strip_prefix(pin.as_str()).is_some_and(|r| r.starts_with('.')));
        if !matches {
            return Err(PluginError::VersionMismatch {
                name: name.to_string(),
                version: version.map(str::to_string),
                pin: pin.clone(),
                step: step.id.to_string(),
            }
            .into());
        }
    }
    Ok(())
}

/// Which export a call task invokes.
#[derive(Clone, Copy)]
enum Export {
    Invoke,
    Compensate,
}

/// What a task in flight is, by task id.
enum Task {
    /// A guest call or child execution; the event stands for it if its task panics.
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
    /// Whether the parent execution's driver runs this (child) execution, and
    /// so learns of its end itself.
    inside_parent: bool,
    /// The status the store holds for the execution, when this driver wrote it.
    persisted_status: Option<ExecutionStatus>,
}

impl Driver {
    /// A driver for `machine`, whose log holds `next_seq` events already.
    pub(super) fn new(engine: Engine, machine: Machine, plugins: Plugins, next_seq: u64) -> Self {
        Self {
            engine,
            machine,
            plugins,
            next_seq,
            tasks: JoinSet::new(),
            in_flight: HashMap::new(),
            inside_parent: false,
            persisted_status: None,
        }
    }

    /// Marks the driver as run by the parent execution's driver.
    pub(super) fn inside_parent(mut self) -> Self {
        self.inside_parent = true;
        self
    }

    /// The execution this driver drives.
    pub(super) fn execution_id(&self) -> &crate::ids::ExecutionId {
        self.machine.execution_id()
    }

    /// Starts the execution if it was not, applies `events` (from outside:
    /// an async completion, a rollback request), performs `outstanding` work,
    /// and runs until it is final or waits for the outside world.
    pub(super) async fn run(
        mut self,
        mut events: Vec<Event>,
        outstanding: Vec<Command>,
    ) -> Result<ExecutionView, EngineError> {
        if !self.machine.is_started() {
            self.engine.metrics.executions_started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let plugins = self.plugins.iter().map(|(name, p)| (name.to_string(), p.hash.clone())).collect();
            let pinned = self.machine.pinned().clone();
            let started = Event::ExecutionStarted { plugins, handlers: pinned.handlers, workflows: pinned.workflows };
            events.insert(0, started);
        }
        let mut commands = self.commit(events, outstanding).await?;
        loop {
            for command in commands.drain(..) {
                match command {
                    Command::Invoke { unit, attempt, input } => self.spawn_call(unit, attempt, Export::Invoke, input),
                    Command::Compensate { unit, attempt, data } => {
                        self.spawn_call(unit, attempt, Export::Compensate, data)
                    }
                    Command::StartTimer { timer, due } => self.spawn_timer(timer, due),
                    // The status says when the execution is over: a `Finish`
                    // left from before a rollback request must not end it.
                    Command::Finish => {}
                }
            }
            let status = self.machine.status();
            let busy = self.in_flight.values().any(|task| !matches!(task, Task::Deadline));
            if status.is_final() || (status == ExecutionStatus::Waiting && !busy) {
                return self.end().await;
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
                None => {
                    tracing::error!(execution = %self.machine.execution_id(), "running with no work in flight");
                    return self.end().await;
                }
            };
            if self.is_stale_child_wait(&event) {
                continue;
            }
            commands = self.commit(vec![event], Vec::new()).await?;
        }
    }

    /// Stops what is left (stale backoffs and deadlines, re-armed by whoever
    /// resumes), makes sure the final status is recorded, and lets a waiting
    /// parent carry on.
    async fn end(mut self) -> Result<ExecutionView, EngineError> {
        self.tasks.abort_all();
        let status = self.machine.status();
        let view = ExecutionView::of(&self.machine);
        if status.is_final() {
            self.engine.metrics.observe_finished(status);
            if self.persisted_status != Some(status) {
                let at = self.machine.finished_at().unwrap_or_else(Timestamp::now);
                self.engine.store.set_status(self.machine.execution_id(), status, at).await?;
            }
            if let (false, Some(parent)) = (self.inside_parent, self.machine.origin().parent.clone()) {
                // This child ended outside its parent's driver (completed from
                // outside, resumed on its own): the parent takes its result now.
                if let Err(error) = self.engine.resume_boxed(parent.clone()).await {
                    tracing::warn!(%parent, child = %self.machine.execution_id(), "resuming the parent failed: {error}");
                }
            }
        }
        Ok(view)
    }

    /// A child that still waits, reported again on resume: nothing to record.
    fn is_stale_child_wait(&self, event: &Event) -> bool {
        let Event::ChildWaiting { step, .. } = event else { return false };
        self.machine
            .unit_of(step)
            .is_some_and(|unit| !matches!(self.machine.unit(unit).phase, StepPhase::Running { .. }))
    }

    /// Applies `events` and what follows from them, then writes them all to
    /// the store in one durable write, before anything is acted upon; returns
    /// the commands to perform. Every call about to be made gets its start
    /// event (`AttemptStarted`, `CompensationStarted`) in the same write, and
    /// timers already due fire at once (so a resumed execution acts on
    /// deadlines that passed while nobody drove it). One write per step
    /// transition, not one per event: half the fsyncs of a saga on SQLite.
    async fn commit(&mut self, events: Vec<Event>, outstanding: Vec<Command>) -> Result<Vec<Command>, EngineError> {
        let before = self.machine.status();
        let mut recorded = Vec::new();
        let mut commands = Vec::new();
        let mut todo: VecDeque<Event> = events.into();
        let mut pending: VecDeque<Command> = outstanding.into();
        loop {
            if let Some(event) = todo.pop_front() {
                let at = Timestamp::now();
                recorded.push(RecordedEvent { at, event: event.clone() });
                pending.extend(self.machine.apply(at, event));
                continue;
            }
            let Some(command) = pending.pop_front() else { break };
            match &command {
                // A waiting child is only looked at again: its attempt already started.
                Command::Invoke { unit, attempt, .. }
                    if !matches!(self.machine.unit(*unit).phase, StepPhase::ChildWaiting { .. }) =>
                {
                    todo.push_back(Event::AttemptStarted { step: self.machine.label(*unit), attempt: *attempt });
                }
                Command::Compensate { unit, attempt, .. } => {
                    todo.push_back(Event::CompensationStarted { step: self.machine.label(*unit), attempt: *attempt });
                }
                Command::StartTimer { timer, due } if *due <= Timestamp::now() => {
                    todo.push_back(Event::TimerFired { timer: timer.clone() });
                    continue;
                }
                _ => {}
            }
            commands.push(command);
        }
        if recorded.is_empty() {
            return Ok(commands);
        }
        let after = self.machine.status();
        let status = (after != before || self.persisted_status != Some(after)).then(|| {
            let at = if after.is_final() { self.machine.finished_at() } else { None };
            (after, at.unwrap_or_else(Timestamp::now))
        });
        let count = recorded.len() as u64;
        let id = self.machine.execution_id().clone();
        self.engine.store.append(&id, self.next_seq, recorded, status).await?;
        self.next_seq += count;
        if status.is_some() {
            self.persisted_status = Some(after);
        }
        Ok(commands)
    }

    fn spawn_call(&mut self, unit: Unit, attempt: u32, export: Export, payload: Value) {
        let step = self.machine.label(unit);
        let failed_step = step.clone();
        let failed = move |failure: StepFailure, logs| match export {
            Export::Invoke => Event::AttemptFailed { step: failed_step.clone(), attempt, failure, logs },
            Export::Compensate => Event::CompensationFailed { step: failed_step.clone(), attempt, failure, logs },
        };
        let panicked =
            failed(StepFailure::new(FailureKind::Trap, "the host task running this call panicked"), Vec::new());
        let handle = match self.machine.target(unit) {
            Target::Plugin(plugin) => {
                let call = self.plugin_call(unit, &plugin, step, attempt, export, payload, failed);
                self.tasks.spawn(call)
            }
            Target::Workflow(name) => {
                let call = self.child_call(unit, &name, step, attempt, export, payload, failed);
                self.tasks.spawn(call)
            }
        };
        self.in_flight.insert(handle.id(), Task::Call(panicked));
    }

    /// A call of a plugin's export in the sandbox, as a task's future.
    #[allow(clippy::too_many_arguments)]
    fn plugin_call(
        &self,
        unit: Unit,
        plugin: &str,
        step: StepId,
        attempt: u32,
        export: Export,
        payload: Value,
        failed: impl Fn(StepFailure, Vec<crate::sandbox::LogLine>) -> Event + Send + 'static,
    ) -> impl std::future::Future<Output = Event> + Send + 'static {
        let definition = &self.machine.workflow().steps()[unit.node];
        let loaded = self.plugins.get(&PluginName::new(plugin)).cloned();
        let sandbox = self.engine.registry.sandbox().clone();
        let execution_id = self.machine.execution_id();
        let ctx = StepContext {
            workflow: self.machine.workflow().name().to_string(),
            execution_id: execution_id.to_string(),
            step_id: step.to_string(),
            attempt,
            idempotency_key: format!("{execution_id}/{step}"),
        };
        // An async step's timeout bounds its wait, not its invoke call.
        let timeout = if definition.is_async { None } else { definition.timeout };
        let tenant = self.machine.origin().tenant.clone();
        let payload = payload.to_string();
        let call = match export {
            Export::Invoke => Call::Invoke { ctx, input: payload },
            Export::Compensate => Call::Compensate { ctx, data: payload },
        };
        let metrics = self.engine.metrics.clone();
        let plugin = plugin.to_string();
        async move {
            let Some(loaded) = loaded else {
                let failure = StepFailure::new(FailureKind::Unavailable, format!("plugin `{plugin}` is not loaded"));
                return failed(failure, Vec::new());
            };
            let started = std::time::Instant::now();
            let outcome = sandbox.call(loaded.runtime(), call, timeout, tenant.as_deref()).await;
            match export {
                Export::Invoke => metrics.observe_attempt(outcome.result.is_ok(), started.elapsed()),
                Export::Compensate => {
                    metrics.compensation_attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            match (export, outcome.result) {
                (Export::Invoke, Ok(success)) => Event::AttemptSucceeded {
                    step,
                    attempt,
                    output: success.output.unwrap_or(Value::Null),
                    compensation: success.compensation,
                    logs: outcome.logs,
                },
                (Export::Compensate, Ok(_)) => Event::CompensationSucceeded { step, attempt, logs: outcome.logs },
                (_, Err(failure)) => failed(failure, outcome.logs),
            }
        }
    }

    /// A child execution run (invoke) or rolled back (compensate), as a task's future.
    #[allow(clippy::too_many_arguments)]
    fn child_call(
        &self,
        unit: Unit,
        workflow: &str,
        step: StepId,
        attempt: u32,
        export: Export,
        input: Value,
        failed: impl Fn(StepFailure, Vec<crate::sandbox::LogLine>) -> Event + Send + 'static,
    ) -> impl std::future::Future<Output = Event> + Send + 'static {
        let engine = self.engine.clone();
        let pinned = &self.machine.pinned().workflows;
        let run = ChildRun {
            id: self.machine.child_execution_id(unit, attempt),
            parent: self.machine.execution_id().clone(),
            tenant: self.machine.origin().tenant.clone(),
            definition: pinned.get(workflow).cloned(),
            workflows: pinned.clone(),
            input,
        };
        // Compensation rolls back the child of the attempt that succeeded.
        let completed = self.machine.child_execution_id(unit, self.machine.unit(unit).attempts.max(1));
        let parent = self.machine.execution_id().clone();
        async move {
            match export {
                Export::Invoke => {
                    let child = run.id.clone();
                    match engine.run_child(run).await {
                        Ok(view) => match view.status {
                            ExecutionStatus::Succeeded => Event::AttemptSucceeded {
                                step,
                                attempt,
                                output: view.output.unwrap_or(Value::Null),
                                compensation: None,
                                logs: Vec::new(),
                            },
                            ExecutionStatus::Compensated | ExecutionStatus::Failed => {
                                failed(child_failure(&view), Vec::new())
                            }
                            _ => Event::ChildWaiting { step, attempt },
                        },
                        Err(error) => failed(
                            StepFailure::new(FailureKind::Unavailable, format!("child execution `{child}`: {error}")),
                            Vec::new(),
                        ),
                    }
                }
                Export::Compensate => {
                    let reason = format!("its parent execution `{parent}` is rolling back");
                    match engine.rollback_boxed(completed.clone(), reason).await {
                        Ok(view) if view.status == ExecutionStatus::Compensated => {
                            Event::CompensationSucceeded { step, attempt, logs: Vec::new() }
                        }
                        Ok(view) => failed(
                            StepFailure::new(
                                FailureKind::Permanent,
                                format!(
                                    "child execution `{completed}` ended `{}` instead of `compensated`",
                                    view.status.as_str()
                                ),
                            ),
                            Vec::new(),
                        ),
                        // Its attempt never created the child: nothing to undo.
                        Err(EngineError::NotFound(_)) => {
                            Event::CompensationSucceeded { step, attempt, logs: Vec::new() }
                        }
                        Err(error) => failed(
                            StepFailure::new(
                                FailureKind::Unavailable,
                                format!("rolling back child execution `{completed}`: {error}"),
                            ),
                            Vec::new(),
                        ),
                    }
                }
            }
        }
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
