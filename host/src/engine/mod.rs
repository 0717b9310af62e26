//! The executor: a pure saga state machine ([`machine`]) and the driver that
//! performs its commands ([`driver`]): Wasm calls, timers and store writes.
//!
//! [`Engine`] is the entry point: start an execution of a validated workflow,
//! resume one from the store, or read one back as JSON.

mod driver;
mod event;
mod machine;
mod timeline;
mod view;

pub use event::{Command, Event, Timer, TimerPurpose};
pub use machine::{ExecutionError, ExecutionStatus, Machine, StepPhase, StepState};
pub use timeline::{CallPhase, TimelineEntry, TimelineKind};
pub use view::{ExecutionView, StepStatus, StepView};

use crate::ids::ExecutionId;
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
}

impl Engine {
    /// An engine over `registry` recording into `store`.
    pub fn new(registry: Arc<PluginRegistry>, store: Arc<dyn ExecutionStore>) -> Self {
        Self { registry, store }
    }

    /// The plugin registry.
    pub fn registry(&self) -> &Arc<PluginRegistry> {
        &self.registry
    }

    /// The execution store.
    pub fn store(&self) -> &Arc<dyn ExecutionStore> {
        &self.store
    }

    /// Runs `workflow` on `input` to a final status and returns the execution.
    /// With an idempotency key already used, returns that execution instead.
    pub async fn run(
        &self,
        workflow: Arc<Workflow>,
        input: Value,
        options: StartOptions,
    ) -> Result<ExecutionView, EngineError> {
        let plugins = driver::resolve_plugins(&self.registry, &workflow).await?;
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
        if let Created::Existing(existing) = created {
            return self.show(&existing).await;
        }
        let machine = Machine::new(workflow, id, input);
        driver::Driver::new(self.clone(), machine, plugins).run(vec![]).await
    }

    /// Continues an unfinished execution from its recorded events: completed
    /// steps are not invoked again, calls that were in flight are made again
    /// (same idempotency key), armed timers are re-armed.
    pub async fn resume(&self, id: &ExecutionId) -> Result<ExecutionView, EngineError> {
        let machine = self.replay(id).await?;
        if machine.status().is_final() && machine.is_started() {
            return Ok(ExecutionView::of(&machine));
        }
        let plugins = driver::resolve_plugins(&self.registry, machine.workflow()).await?;
        let outstanding = machine.outstanding_commands();
        driver::Driver::new(self.clone(), machine, plugins).run(outstanding).await
    }

    /// The execution as recorded so far.
    pub async fn show(&self, id: &ExecutionId) -> Result<ExecutionView, EngineError> {
        Ok(ExecutionView::of(&self.replay(id).await?))
    }

    /// Rebuilds an execution's state by replaying its recorded events.
    async fn replay(&self, id: &ExecutionId) -> Result<Machine, EngineError> {
        let stored = self.store.load(id).await?.ok_or_else(|| EngineError::NotFound(id.clone()))?;
        let source = format!("stored definition of execution {id}");
        let workflow = Workflow::from_definition(&source, stored.workflow, self.registry.directory())?;
        let mut machine = Machine::new(Arc::new(workflow), stored.id, stored.input);
        for recorded in stored.events {
            machine.apply(recorded.at, recorded.event);
        }
        Ok(machine)
    }
}
