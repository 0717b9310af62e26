//! The executor: a pure saga state machine ([`machine`]) and the driver that
//! performs its commands ([`driver`]): Wasm calls, timers and store writes.
//!
//! [`Engine`] is the entry point: start an execution of a validated workflow,
//! resume one from the store, or read one back as JSON.

mod driver;
mod event;
mod machine;
mod metrics;
mod timeline;
mod view;

pub use event::{Command, Event, Timer};
pub use machine::{ExecutionError, ExecutionStatus, Machine, StepPhase, StepState};
pub use metrics::{EngineMetrics, LATENCY_BUCKETS_MS};
pub use timeline::{CallPhase, TimelineEntry, TimelineKind};
pub use view::{ExecutionView, StepStatus, StepView};

use crate::ids::{ExecutionId, StepId};
use crate::plugin::{PluginError, PluginRegistry};
use crate::store::{Created, ExecutionStore, NewExecution, StoreError};
use crate::time::Timestamp;
use crate::workflow::{Workflow, WorkflowError};
use serde_json::Value;
use std::sync::Arc;

/// Why the engine could not start, resume or show an execution. A step
/// failing is not an engine error: it is part of the execution's result.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A plugin the workflow needs could not be loaded.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored workflow definition no longer validates (e.g. a plugin is gone).
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
    /// No such execution.
    #[error("no execution `{0}`")]
    NotFound(ExecutionId),
    /// A completion was reported for a step that is not waiting for one.
    #[error("{0}")]
    NotWaiting(String),
}

/// An execution ready to drive, or the one an idempotency key already names.
enum Prepared {
    New(Box<driver::Driver>),
    Existing(ExecutionId),
}

/// Accepts every plugin name: for re-validating stored definitions.
struct AnyPlugin;

impl crate::workflow::PluginCatalog for AnyPlugin {
    fn contains_plugin(&self, _name: &str) -> bool {
        true
    }
}

/// Options for starting an execution.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// Starting twice with the same key returns the first execution.
    pub idempotency_key: Option<String>,
}

/// Runs workflows: plugins from a registry, executions recorded in a store.
#[derive(Clone)]
pub struct Engine {
    registry: Arc<PluginRegistry>,
    store: Arc<dyn ExecutionStore>,
    metrics: Arc<EngineMetrics>,
}

impl Engine {
    /// An engine over `registry` recording into `store`.
    pub fn new(registry: Arc<PluginRegistry>, store: Arc<dyn ExecutionStore>) -> Self {
        Self { registry, store, metrics: Arc::new(EngineMetrics::default()) }
    }

    /// The plugin registry.
    pub fn registry(&self) -> &Arc<PluginRegistry> {
        &self.registry
    }

    /// The execution store.
    pub fn store(&self) -> &Arc<dyn ExecutionStore> {
        &self.store
    }

    /// The engine's counters.
    pub fn metrics(&self) -> &Arc<EngineMetrics> {
        &self.metrics
    }

    /// Runs `workflow` on `input` until it is final (or waits for an async
    /// step) and returns the execution. With an idempotency key already used,
    /// returns that execution instead.
    pub async fn run(
        &self,
        workflow: Arc<Workflow>,
        input: Value,
        options: StartOptions,
    ) -> Result<ExecutionView, EngineError> {
        match self.create(workflow, input, options).await? {
            Prepared::Existing(existing) => self.show(&existing).await,
            Prepared::New(driver) => driver.run(vec![]).await,
        }
    }

    /// Records a new execution and drives it in the background; returns its id
    /// at once (or the id of the execution started with the same idempotency
    /// key). The task's result is the execution as it ended (or waits).
    pub async fn start(
        &self,
        workflow: Arc<Workflow>,
        input: Value,
        options: StartOptions,
    ) -> Result<(ExecutionId, Option<tokio::task::JoinHandle<Result<ExecutionView, EngineError>>>), EngineError> {
        match self.create(workflow, input, options).await? {
            Prepared::Existing(existing) => Ok((existing, None)),
            Prepared::New(driver) => {
                let id = driver.execution_id().clone();
                Ok((id, Some(tokio::spawn(driver.run(vec![])))))
            }
        }
    }

    async fn create(
        &self,
        workflow: Arc<Workflow>,
        input: Value,
        options: StartOptions,
    ) -> Result<Prepared, EngineError> {
        let plugins = driver::resolve_plugins(&self.registry, &workflow, &Default::default()).await?;
        let id = ExecutionId::generate();
        let created = self
            .store
            .create(NewExecution {
                id: id.clone(),
                workflow: workflow.definition().clone(),
                input: input.clone(),
                idempotency_key: options.idempotency_key,
                created_at: Timestamp::now(),
            })
            .await?;
        Ok(match created {
            Created::Existing(existing) => Prepared::Existing(existing),
            Created::New => {
                let machine = Machine::new(workflow, id, input);
                Prepared::New(Box::new(driver::Driver::new(self.clone(), machine, plugins, 0)))
            }
        })
    }

    /// Continues an unfinished execution from its recorded events: completed
    /// steps are not invoked again, calls that were in flight are made again
    /// (same idempotency key), timers are re-armed and those already due fire.
    pub async fn resume(&self, id: &ExecutionId) -> Result<ExecutionView, EngineError> {
        let (machine, recorded) = self.replay(id).await?;
        if machine.status().is_final() {
            // The final status may not have reached the listing before a crash.
            let at = machine.finished_at().unwrap_or_else(Timestamp::now);
            self.store.set_status(id, machine.status(), at).await?;
            return Ok(ExecutionView::of(&machine));
        }
        let plugins = driver::resolve_plugins(&self.registry, machine.workflow(), machine.plugins()).await?;
        let outstanding = if machine.is_started() { machine.outstanding_commands() } else { Vec::new() };
        driver::Driver::new(self.clone(), machine, plugins, recorded).run(outstanding).await
    }

    /// Resumes every unfinished execution of the store, oldest first, and
    /// returns them as they ended (or wait).
    pub async fn resume_all(&self) -> Result<Vec<ExecutionView>, EngineError> {
        let mut resumed = Vec::new();
        for id in self.store.unfinished().await? {
            resumed.push(self.resume(&id).await?);
        }
        Ok(resumed)
    }

    /// Reports an async step done with `output`, then continues the execution.
    pub async fn complete_step(
        &self,
        id: &ExecutionId,
        step: &StepId,
        output: Value,
    ) -> Result<ExecutionView, EngineError> {
        self.finish_async_step(id, step, Event::AsyncStepSucceeded { step: step.clone(), output }).await
    }

    /// Reports an async step failed, then continues the execution (it rolls back).
    pub async fn fail_step(
        &self,
        id: &ExecutionId,
        step: &StepId,
        message: String,
    ) -> Result<ExecutionView, EngineError> {
        self.finish_async_step(id, step, Event::AsyncStepFailed { step: step.clone(), message }).await
    }

    async fn finish_async_step(
        &self,
        id: &ExecutionId,
        step: &StepId,
        event: Event,
    ) -> Result<ExecutionView, EngineError> {
        let (machine, recorded) = self.replay(id).await?;
        if machine.workflow().step_index(step).is_none() {
            return Err(EngineError::NotWaiting(format!("execution `{id}` has no step `{step}`")));
        }
        if !machine.is_waiting(step) {
            let view = ExecutionView::of(&machine);
            let status = view.steps.iter().find(|s| &s.id == step).map(|s| s.status);
            let status = serde_json::to_value(status).ok().and_then(|v| v.as_str().map(str::to_string));
            return Err(EngineError::NotWaiting(format!(
                "step `{step}` of execution `{id}` is not waiting for completion (its status is `{}`)",
                status.unwrap_or_default()
            )));
        }
        let plugins = driver::resolve_plugins(&self.registry, machine.workflow(), machine.plugins()).await?;
        let mut outstanding = machine.outstanding_commands();
        let mut machine = machine;
        let at = Timestamp::now();
        let recorded_event = crate::store::RecordedEvent { at, event };
        self.store.append(id, recorded, &recorded_event).await?;
        outstanding.extend(machine.apply(at, recorded_event.event));
        driver::Driver::new(self.clone(), machine, plugins, recorded + 1).run(outstanding).await
    }

    /// Deletes archived plugin versions and compiled code that neither the
    /// plugin directory's current files nor an unfinished execution needs;
    /// returns how many cache files went.
    pub async fn collect_plugin_garbage(&self) -> Result<usize, EngineError> {
        let Some(cache) = self.registry.cache() else { return Ok(0) };
        let mut keep: std::collections::HashSet<String> = self.registry.current_file_hashes().into_iter().collect();
        for id in self.store.unfinished().await? {
            let (machine, _) = self.replay(&id).await?;
            keep.extend(machine.plugins().values().cloned());
        }
        cache
            .retain(&keep)
            .map_err(|e| EngineError::Store(crate::store::StoreError::Backend(format!("plugin cache: {e}"))))
    }

    /// The execution as recorded so far.
    pub async fn show(&self, id: &ExecutionId) -> Result<ExecutionView, EngineError> {
        Ok(ExecutionView::of(&self.replay(id).await?.0))
    }

    /// Rebuilds an execution's state by replaying its recorded events; also
    /// returns how many events there are.
    async fn replay(&self, id: &ExecutionId) -> Result<(Machine, u64), EngineError> {
        let stored = self.store.load(id).await?.ok_or_else(|| EngineError::NotFound(id.clone()))?;
        let source = format!("stored definition of execution {id}");
        // The definition was validated when the execution started; its plugins
        // may since have left the directory while their pinned versions remain
        // loadable, so only the structure is checked again here.
        let workflow = Workflow::from_definition(&source, stored.workflow, &AnyPlugin)?;
        let mut machine = Machine::new(Arc::new(workflow), stored.id, stored.input);
        let count = stored.events.len() as u64;
        for recorded in stored.events {
            machine.apply(recorded.at, recorded.event);
        }
        Ok((machine, count))
    }
}
