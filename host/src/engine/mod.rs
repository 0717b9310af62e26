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
pub use machine::{
    ExecutionError, ExecutionStatus, Machine, NodePhase, NodeState, Origin, Pinned, StepPhase, StepState, Target, Unit,
};
pub use metrics::{EngineMetrics, LATENCY_BUCKETS_MS};
pub use timeline::{CallPhase, TimelineEntry, TimelineKind};
pub use view::{ExecutionView, HookView, RunView, StepStatus, StepView, UnitView};

use crate::ids::{ExecutionId, PluginName, StepId};
use crate::plugin::{PluginError, PluginRegistry};
use crate::store::{Created, ExecutionStore, NewExecution, StoreError};
use crate::tenants::TenantBindings;
use crate::time::Timestamp;
use crate::workflow::{Workflow, WorkflowDefinition, WorkflowError};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future of an execution's view: engine calls that recurse through
/// child executions (a parent runs its child, a child resumes its parent).
type BoxedRun = Pin<Box<dyn Future<Output = Result<ExecutionView, EngineError>> + Send>>;

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
    /// The start options are invalid (a tenant name, a missing child definition).
    #[error("{0}")]
    Invalid(String),
}

/// An execution ready to drive, or the one an idempotency key already names.
enum Prepared {
    New(Box<driver::Driver>),
    Existing(ExecutionId),
}

/// Options for starting an execution.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// Starting twice with the same key returns the first execution.
    pub idempotency_key: Option<String>,
    /// The tenant the execution runs for: its hook handlers run, and its
    /// plugins' kv data is namespaced by it.
    pub tenant: Option<String>,
}

/// A child execution a workflow step starts (or finds again).
pub(crate) struct ChildRun {
    /// Its id, derived from the parent, the unit and the attempt.
    pub id: ExecutionId,
    /// The parent execution.
    pub parent: ExecutionId,
    /// The parent's tenant.
    pub tenant: Option<String>,
    /// The child's definition, as the parent pinned it.
    pub definition: Option<WorkflowDefinition>,
    /// Every definition the parent pinned (the child's own children among them).
    pub workflows: BTreeMap<String, WorkflowDefinition>,
    /// The rendered input.
    pub input: Value,
}

/// Runs workflows: plugins from a registry, executions recorded in a store.
#[derive(Clone)]
pub struct Engine {
    registry: Arc<PluginRegistry>,
    store: Arc<dyn ExecutionStore>,
    metrics: Arc<EngineMetrics>,
    tenants: Arc<TenantBindings>,
}

impl Engine {
    /// An engine over `registry` recording into `store`, with no tenant bindings.
    pub fn new(registry: Arc<PluginRegistry>, store: Arc<dyn ExecutionStore>) -> Self {
        Self { registry, store, metrics: Arc::new(EngineMetrics::default()), tenants: Arc::new(TenantBindings::none()) }
    }

    /// The same engine with tenants' hook handlers from `tenants`.
    pub fn with_tenants(mut self, tenants: Arc<TenantBindings>) -> Self {
        self.tenants = tenants;
        self
    }

    /// The tenants' hook handler bindings.
    pub fn tenants(&self) -> &Arc<TenantBindings> {
        &self.tenants
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
        match self.create(workflow, input, options, None).await? {
            Prepared::Existing(existing) => self.show(&existing).await,
            Prepared::New(driver) => driver.run(vec![], vec![]).await,
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
        match self.create(workflow, input, options, None).await? {
            Prepared::Existing(existing) => Ok((existing, None)),
            Prepared::New(driver) => {
                let id = driver.execution_id().clone();
                Ok((id, Some(tokio::spawn(driver.run(vec![], vec![])))))
            }
        }
    }

    /// Pins the plugins, hook handlers and child workflows of a new execution,
    /// records it, and returns its driver.
    async fn create(
        &self,
        workflow: Arc<Workflow>,
        input: Value,
        options: StartOptions,
        child: Option<(ExecutionId, ExecutionId)>,
    ) -> Result<Prepared, EngineError> {
        let mut handlers = BTreeMap::new();
        if let Some(tenant) = &options.tenant {
            if !crate::tenants::is_valid_tenant(tenant) {
                return Err(EngineError::Invalid(format!(
                    "`{tenant}` is not a valid tenant (lowercase letters, digits, `-`, `_`, at most 64)"
                )));
            }
            for hook in workflow.steps().iter().filter(|step| step.is_hook()) {
                let bound = self.tenants.handlers(tenant, workflow.name(), hook.id.as_str());
                if !bound.is_empty() {
                    handlers.insert(hook.id.to_string(), bound);
                }
            }
        }
        let mut names = workflow.plugins();
        names.extend(handlers.values().flatten().map(|handler| PluginName::new(&handler.plugin)));
        let plugins = driver::resolve_plugins(&self.registry, &names, &Default::default()).await?;
        driver::check_version_pins(&workflow, &plugins)?;
        let (id, parent) = match child {
            Some((id, parent)) => (id, Some(parent)),
            None => (ExecutionId::generate(), None),
        };
        let origin = Origin { tenant: options.tenant.clone(), parent: parent.clone() };
        let created = self
            .store
            .create(NewExecution {
                id: id.clone(),
                workflow: workflow.record().clone(),
                input: input.clone(),
                idempotency_key: options.idempotency_key,
                tenant: options.tenant,
                parent,
                created_at: Timestamp::now(),
            })
            .await?;
        Ok(match created {
            Created::Existing(existing) => Prepared::Existing(existing),
            Created::New => {
                let pinned = Pinned { plugins: BTreeMap::new(), handlers, workflows: workflow.children().clone() };
                let machine = Machine::new(workflow, id, input).with_origin(origin).with_pinned(pinned);
                Prepared::New(Box::new(driver::Driver::new(self.clone(), machine, plugins, 0)))
            }
        })
    }

    /// Runs (or finds again and continues) the child execution a workflow step starts.
    pub(crate) fn run_child(&self, child: ChildRun) -> BoxedRun {
        let engine = self.clone();
        Box::pin(async move {
            if engine.store.load(&child.id).await?.is_some() {
                return engine.resume_driver(&child.id, true).await;
            }
            let Some(definition) = child.definition else {
                return Err(EngineError::Invalid(format!("no pinned definition for child execution `{}`", child.id)));
            };
            let source = format!("workflow `{}` (child of execution {})", definition.name, child.parent);
            let workflow =
                Workflow::from_definition_with(&source, definition, engine.registry.as_ref(), &child.workflows)?;
            let options = StartOptions { idempotency_key: Some(format!("child:{}", child.id)), tenant: child.tenant };
            match engine.create(Arc::new(workflow), child.input, options, Some((child.id, child.parent))).await? {
                Prepared::Existing(existing) => engine.resume_driver(&existing, true).await,
                Prepared::New(driver) => driver.inside_parent().run(vec![], vec![]).await,
            }
        })
    }

    /// [`Engine::resume`], boxed (a child resumes its parent).
    pub(crate) fn resume_boxed(&self, id: ExecutionId) -> BoxedRun {
        let engine = self.clone();
        Box::pin(async move { engine.resume(&id).await })
    }

    /// [`Engine::rollback`], boxed (a parent rolls back its child).
    pub(crate) fn rollback_boxed(&self, id: ExecutionId, reason: String) -> BoxedRun {
        let engine = self.clone();
        Box::pin(async move { engine.rollback(&id, &reason).await })
    }

    /// Rolls an execution back: steps in flight settle, then every completed
    /// step is compensated in reverse order, even when the execution had
    /// succeeded. An execution already rolled back (or failed) is returned as is.
    pub async fn rollback(&self, id: &ExecutionId, reason: &str) -> Result<ExecutionView, EngineError> {
        let (machine, _) = self.replay(id).await?;
        match machine.status() {
            ExecutionStatus::Compensated | ExecutionStatus::Failed => Ok(ExecutionView::of(&machine)),
            // Already rolling back (its driver stopped): carry on.
            ExecutionStatus::Compensating => self.resume_driver(id, true).await,
            _ => self.deliver(id, Event::RollbackRequested { reason: reason.to_string() }, true).await,
        }
    }

    /// Continues an unfinished execution from its recorded events: completed
    /// steps are not invoked again, calls that were in flight are made again
    /// (same idempotency key), timers are re-armed and those already due fire.
    pub async fn resume(&self, id: &ExecutionId) -> Result<ExecutionView, EngineError> {
        self.resume_driver(id, false).await
    }

    async fn resume_driver(&self, id: &ExecutionId, inside_parent: bool) -> Result<ExecutionView, EngineError> {
        let (machine, recorded) = self.replay(id).await?;
        if machine.status().is_final() {
            // The final status may not have reached the listing before a crash.
            let at = machine.finished_at().unwrap_or_else(Timestamp::now);
            self.store.set_status(id, machine.status(), at).await?;
            return Ok(ExecutionView::of(&machine));
        }
        let plugins = self.pinned_plugins(&machine).await?;
        let outstanding = if machine.is_started() { machine.outstanding_commands() } else { Vec::new() };
        let driver = driver::Driver::new(self.clone(), machine, plugins, recorded);
        let driver = if inside_parent { driver.inside_parent() } else { driver };
        driver.run(vec![], outstanding).await
    }

    /// The plugins a replayed execution uses: the pinned versions (or, for an
    /// execution that never started, the current ones).
    async fn pinned_plugins(&self, machine: &Machine) -> Result<driver::Plugins, EngineError> {
        let mut names: BTreeSet<PluginName> = machine.workflow().plugins();
        names.extend(machine.plugins().keys().map(|name| PluginName::new(name)));
        driver::resolve_plugins(&self.registry, &names, machine.plugins()).await
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
        let (machine, _) = self.replay(id).await?;
        if machine.unit_of(step).is_none() {
            return Err(EngineError::NotWaiting(format!("execution `{id}` has no step `{step}`")));
        }
        if !machine.is_waiting(step) {
            let status = machine.unit_of(step).map(|unit| machine.unit(unit).phase.into());
            let status: Option<StepStatus> = status;
            let status = serde_json::to_value(status).ok().and_then(|v| v.as_str().map(str::to_string));
            return Err(EngineError::NotWaiting(format!(
                "step `{step}` of execution `{id}` is not waiting for completion (its status is `{}`)",
                status.unwrap_or_default()
            )));
        }
        self.deliver(id, event, false).await
    }

    /// Records an event from outside (an async completion, a rollback
    /// request), then drives the execution on.
    async fn deliver(&self, id: &ExecutionId, event: Event, inside_parent: bool) -> Result<ExecutionView, EngineError> {
        let (machine, recorded) = self.replay(id).await?;
        let plugins = self.pinned_plugins(&machine).await?;
        let outstanding = machine.outstanding_commands();
        let driver = driver::Driver::new(self.clone(), machine, plugins, recorded);
        let driver = if inside_parent { driver.inside_parent() } else { driver };
        driver.run(vec![event], outstanding).await
    }

    /// Deletes archived plugin versions and compiled code that neither the
    /// plugin directory's current files nor an unfinished execution needs;
    /// returns how many cache files went.
    pub async fn collect_plugin_garbage(&self) -> Result<usize, EngineError> {
        let Some(cache) = self.registry.cache() else { return Ok(0) };
        let mut keep: std::collections::HashSet<String> = self.registry.current_file_hashes().into_iter().collect();
        // An unfinished execution may still roll back its children, even
        // those that succeeded: their pinned versions are kept too.
        let mut pending = self.store.unfinished().await?;
        while let Some(id) = pending.pop() {
            let Ok((machine, _)) = self.replay(&id).await else { continue };
            keep.extend(machine.plugins().values().cloned());
            pending.extend(ExecutionView::of(&machine).child_execution_ids);
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
        let workflow = Workflow::revalidate_stored(&source, Arc::unwrap_or_clone(stored.workflow))?;
        let origin = Origin { tenant: stored.tenant, parent: stored.parent };
        let mut machine = Machine::new(Arc::new(workflow), stored.id, stored.input).with_origin(origin);
        let count = stored.events.len() as u64;
        for recorded in stored.events {
            machine.apply(recorded.at, recorded.event);
        }
        Ok((machine, count))
    }
}
