//! The executor: a pure saga state machine ([`machine`]) and, per live
//! execution, one owner ([`owner`]) that records its events and performs its
//! commands (Wasm calls, child executions, timers).
//!
//! [`Engine`] is the entry point: start an execution of a validated
//! workflow, deliver events to one from outside (complete or fail an async
//! step, cancel), read one, or resume what a crash left unfinished. Every
//! path that changes an execution goes through its owner's mailbox
//! ([`live`]); an execution owned by another process is reached through the
//! store's inbox ([`forward`]). Nothing here replays a live execution to
//! drive it, and reading a live execution asks its owner.

mod adopt;
mod calls;
mod command;
mod forward;
mod here;
mod host;
mod intake;
mod live;
mod machine;
mod metrics;
mod outside;
mod owner;
mod plugins;
mod recovery;
mod rested;
#[cfg(test)]
mod simulation;
mod timeline;
mod view;

pub use command::Command;
pub use host::DEFAULT_LEASE;
pub use machine::{
    is_retryable, ExecutionError, Machine, NodePhase, NodeState, Origin, Pinned, StepPhase, StepState, Target, Unit,
};
pub use metrics::{EngineMetrics, LATENCY_BUCKETS_MS};
pub use outside::{Answer, Outside, Refusal};
pub use recovery::RecordedStep;
pub use rested::Rested;
pub use timeline::{CallPhase, TimelineEntry, TimelineKind};
pub use view::{ExecutionView, HookView, RunView, StepStatus, StepView, UnitView};

use crate::journal::{Event, ExecutionId, ExecutionStatus, PluginName, Timestamp, UnitId, LOG_VERSION};
use crate::plugin::{PluginError, PluginRegistry};
use crate::store::{Created, ExecutionStore, Fence, NewExecution, Ownership, StoreError};
use crate::telemetry::{ExecutionSpan, Traces};
use crate::tenants::TenantBindings;
use crate::workflow::{Workflow, WorkflowDefinition, WorkflowError};
use owner::{Message, Owner};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// A boxed future of an execution's view: engine calls that recurse through
/// child executions (a parent runs its child, which may roll back its own).
type BoxedRun = Pin<Box<dyn Future<Output = Result<ExecutionView, EngineError>> + Send>>;

/// Why the engine could not start, change or show an execution. A step
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
    /// The workflow has no such step.
    #[error("{0}")]
    NoSuchStep(String),
    /// A completion was reported for a step that is not waiting for one.
    #[error("{0}")]
    NotWaiting(String),
    /// The start options are invalid (a tenant name, a missing child definition).
    #[error("{0}")]
    Invalid(String),
    /// The execution cannot be loaded (its log or definition is unreadable);
    /// it was marked `failed` with this reason.
    #[error("execution `{0}` cannot be loaded: {1}")]
    Unloadable(ExecutionId, String),
    /// The execution's owner stopped before it rested (its store failed).
    /// When another host took it over, callers are handed on to it instead.
    #[error("{0}")]
    Lost(String),
    /// A retry of an execution that is not `failed`.
    #[error("{0}")]
    NotRetryable(String),
    /// The execution's log was written by a newer Stepwise (this log
    /// version): this host neither drives it nor marks it failed, and a host
    /// of that version will.
    #[error("execution `{0}` was written by a newer Stepwise (log version {1}; this one reads up to {max}): a host of that version drives it", max = crate::journal::LOG_VERSION)]
    NewerLog(ExecutionId, u32),
}

impl From<Refusal> for EngineError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NotWaiting(message) => EngineError::NotWaiting(message),
            Refusal::NoSuchStep(message) => EngineError::NoSuchStep(message),
            Refusal::NotRetryable(message) => EngineError::NotRetryable(message),
            Refusal::NoSuchExecution(message) | Refusal::Unavailable(message) => EngineError::Lost(message),
        }
    }
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

/// The execution once its owner rests (it is over, or waits for the outside world).
pub struct Settling {
    settled: here::Settled,
    /// The owner, when the waiter drives it ([`Engine::start_waiting`]).
    owner: Option<here::DrivenHere>,
}

impl Settling {
    /// Told by an owner that runs on its own.
    fn told(settled: here::Settled) -> Self {
        Self { settled, owner: None }
    }

    /// Sets a new execution's owner going on `commands`: in a task of its
    /// own, or (`drive_here`) in whichever task waits on the result.
    fn of_new(mut owner: Box<Owner>, commands: Vec<Command>, drive_here: bool) -> Self {
        let (settled, settling) = oneshot::channel();
        owner.wait_for_rest(settled);
        let id = owner.execution_id().clone();
        let run = owner.run_created(commands);
        if drive_here {
            return Self { settled: settling, owner: Some(here::DrivenHere::new(id, run)) };
        }
        tokio::spawn(run);
        Self::told(settling)
    }

    /// Waits for it, and builds its view.
    pub async fn wait(self) -> Result<ExecutionView, EngineError> {
        self.wait_rested().await.map(Rested::into_view)
    }

    /// Waits for it: its status at once, its view only if asked for.
    pub async fn wait_rested(self) -> Result<Rested, EngineError> {
        match self.owner {
            Some(owner) => owner.until_rest(self.settled).await,
            None => self.settled.await.unwrap_or_else(|_| Err(here::owner_stopped())),
        }
    }
}

/// An outside event the owner took: how, and the execution once it rests.
pub struct Delivery {
    /// How the event was taken.
    pub answer: Answer,
    /// The execution once its owner rests.
    pub settling: Settling,
}

/// An execution ready to drive, or the one an idempotency key already names.
enum Prepared {
    /// Created with its first step recorded: the owner and the commands to perform.
    New(Box<Owner>, Vec<Command>),
    Existing(ExecutionId),
}

/// An execution rebuilt from its log.
pub(crate) struct Replayed {
    machine: Machine,
    events: u64,
    status: ExecutionStatus,
    owner: Option<Ownership>,
}

/// Runs workflows: plugins from a registry, executions recorded in a store.
/// Cloning is cheap: every clone is a handle on the same engine.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

/// What every handle on an engine shares. Background work (the host's
/// heartbeat and inbox poller) holds it weakly, so that an engine nobody
/// holds any more is dropped with its store.
#[derive(Clone)]
pub(crate) struct Shared {
    registry: Arc<PluginRegistry>,
    store: Arc<dyn ExecutionStore>,
    metrics: Arc<EngineMetrics>,
    tenants: Arc<TenantBindings>,
    live: Arc<live::LiveTable>,
    host: Arc<host::Host>,
    traces: Option<Arc<Traces>>,
    /// Stored definitions checked again for replays, by their hash.
    stored_workflows: Arc<crate::store::by_hash::ByHash<Workflow>>,
}

impl Engine {
    /// An engine over `registry` recording into `store`, with no tenant
    /// bindings and the default lease.
    pub fn new(registry: Arc<PluginRegistry>, store: Arc<dyn ExecutionStore>) -> Self {
        let shared = Shared {
            registry,
            store,
            metrics: Arc::new(EngineMetrics::default()),
            tenants: Arc::new(TenantBindings::none()),
            live: Arc::new(live::LiveTable::default()),
            host: Arc::new(host::Host::new(DEFAULT_LEASE, None)),
            traces: None,
            stored_workflows: Default::default(),
        };
        Self { shared: Arc::new(shared) }
    }

    /// An engine on the same shared state, held weakly by background work.
    pub(crate) fn downgrade(&self) -> std::sync::Weak<Shared> {
        Arc::downgrade(&self.shared)
    }

    /// The engine a weak handle names, while anyone still holds it.
    pub(crate) fn upgrade(weak: &std::sync::Weak<Shared>) -> Option<Self> {
        weak.upgrade().map(|shared| Self { shared })
    }

    /// The same engine with tenants' hook handlers from `tenants`.
    pub fn with_tenants(self, tenants: Arc<TenantBindings>) -> Self {
        let mut shared = (*self.shared).clone();
        shared.tenants = tenants;
        Self { shared: Arc::new(shared) }
    }

    /// The same engine as a host whose claims hold for `lease` without a
    /// heartbeat, serving HTTP at `address` (for `GET /v1/hosts`). Set before
    /// the engine starts anything.
    pub fn with_host(self, lease: Duration, address: Option<String>) -> Self {
        let mut shared = (*self.shared).clone();
        shared.host = Arc::new(host::Host::new(lease, address));
        Self { shared: Arc::new(shared) }
    }

    /// The same engine recording each execution as a trace into `traces`.
    pub fn with_traces(self, traces: Arc<Traces>) -> Self {
        let mut shared = (*self.shared).clone();
        shared.traces = Some(traces);
        Self { shared: Arc::new(shared) }
    }

    /// Counts an execution that reached a final status and ends its trace.
    pub(crate) fn finished(&self, machine: &Machine, status: ExecutionStatus) {
        self.shared.metrics.observe_finished(status);
        if let Some(traces) = &self.shared.traces {
            let at = machine.finished_at().unwrap_or_else(Timestamp::now);
            traces.execution(&ExecutionSpan {
                execution_id: machine.execution_id().as_str(),
                workflow: machine.workflow().name(),
                tenant: machine.origin().tenant.as_deref(),
                status: status.as_str(),
                started: machine.started_at().unwrap_or(at),
                finished: at,
                cost: &machine.cost(),
                ended_before: machine.endings() > 1,
            });
        }
    }

    /// The tenants' hook handler bindings.
    pub fn tenants(&self) -> &Arc<TenantBindings> {
        &self.shared.tenants
    }

    /// The plugin registry.
    pub fn registry(&self) -> &Arc<PluginRegistry> {
        &self.shared.registry
    }

    /// The execution store.
    pub fn store(&self) -> &Arc<dyn ExecutionStore> {
        &self.shared.store
    }

    /// The engine's counters.
    pub fn metrics(&self) -> &Arc<EngineMetrics> {
        &self.shared.metrics
    }

    /// This process's host id in the store.
    pub fn host_id(&self) -> &crate::store::HostId {
        self.shared.host.id()
    }

    /// How many executions this process drives now.
    pub fn live_executions(&self) -> usize {
        self.shared.live.len()
    }

    /// Stops this process as a host: the store forgets it and everything it
    /// owns can be claimed at once. Executions still live here are left to
    /// whoever claims them next (their calls are made again, same keys).
    pub async fn shutdown(&self) {
        self.shared.host.stop(self).await;
    }

    /// Runs `workflow` on `input` until it rests (it is over, or waits for an
    /// async step) and returns the execution. With an idempotency key
    /// already used, returns that execution as it is.
    ///
    /// The execution is driven in the calling task while this future is
    /// polled (see [`Engine::start_waiting`]): await it (alone or in a
    /// `select!`), but do not hold it unpolled while the task waits for
    /// something else, which would hold the execution still. Dropped before
    /// the execution rests, it leaves the execution to go on in a task of
    /// its own.
    pub async fn run(
        &self,
        workflow: Arc<Workflow>,
        input: Value,
        options: StartOptions,
    ) -> Result<ExecutionView, EngineError> {
        self.run_to_rest(workflow, input, options).await.map(Rested::into_view)
    }

    /// [`Engine::run`] for a caller that may only need how the execution
    /// ended: its view is built if [`Rested::into_view`] asks for it.
    pub async fn run_to_rest(
        &self,
        workflow: Arc<Workflow>,
        input: Value,
        options: StartOptions,
    ) -> Result<Rested, EngineError> {
        match self.start_waiting(workflow, input, options).await? {
            (_, Some(settling)) => settling.wait_rested().await,
            (existing, None) => self.show(&existing).await.map(Rested::from),
        }
    }

    /// Records a new execution and drives it in the background; returns its
    /// id at once (or the id of the execution started with the same
    /// idempotency key, with no [`Settling`]).
    pub async fn start(
        &self,
        workflow: Arc<Workflow>,
        input: Value,
        options: StartOptions,
    ) -> Result<(ExecutionId, Option<Settling>), EngineError> {
        self.begin(workflow, input, options, false).await
    }

    /// [`Engine::start`] for a caller that waits for the execution's rest at
    /// once: waiting on the [`Settling`] drives the execution in the
    /// caller's task, which saves a task and two wakes per execution. Until
    /// it is waited on, and whenever its wait is not polled, nothing drives
    /// it (its calls, timers and mailbox wait too); once the `Settling` or
    /// its wait is dropped, the execution goes on in a task of its own. For
    /// a caller whose task may stop being polled (a server's handler), use
    /// [`Engine::start`].
    pub async fn start_waiting(
        &self,
        workflow: Arc<Workflow>,
        input: Value,
        options: StartOptions,
    ) -> Result<(ExecutionId, Option<Settling>), EngineError> {
        self.begin(workflow, input, options, true).await
    }

    /// Creates the execution and hands its owner to a task of its own, or
    /// (`drive_here`) to whoever waits on the returned [`Settling`].
    async fn begin(
        &self,
        workflow: Arc<Workflow>,
        input: Value,
        options: StartOptions,
        drive_here: bool,
    ) -> Result<(ExecutionId, Option<Settling>), EngineError> {
        match self.create(workflow, input, options, None).await? {
            Prepared::Existing(existing) => Ok((existing, None)),
            Prepared::New(owner, commands) => {
                let id = owner.execution_id().clone();
                Ok((id, Some(Settling::of_new(owner, commands, drive_here))))
            }
        }
    }

    /// Pins the plugins, hook handlers and child workflows of a new
    /// execution, records it (owned by this host), and returns its owner
    /// with the event that starts it.
    async fn create(
        &self,
        workflow: Arc<Workflow>,
        input: Value,
        options: StartOptions,
        child: Option<(ExecutionId, ExecutionId)>,
    ) -> Result<Prepared, EngineError> {
        crate::journal::json::check_depth(&input).map_err(|error| EngineError::Invalid(format!("input: {error}")))?;
        let mut handlers = BTreeMap::new();
        if let Some(tenant) = &options.tenant {
            if !crate::tenants::is_valid_tenant(tenant) {
                return Err(EngineError::Invalid(format!(
                    "`{tenant}` is not a valid tenant (lowercase letters, digits, `-`, `_`, at most 64)"
                )));
            }
            for hook in workflow.steps().iter().filter(|step| step.is_hook()) {
                let bound = self.shared.tenants.handlers(tenant, workflow.name(), hook.id.as_str());
                if !bound.is_empty() {
                    handlers.insert(hook.id.to_string(), bound);
                }
            }
        }
        let mut names = workflow.plugins();
        names.extend(handlers.values().flatten().map(|handler| handler.plugin.clone()));
        let plugins = plugins::resolve(&self.shared.registry, &names, &Default::default()).await?;
        plugins::check_version_pins(&workflow, &plugins)?;
        self.shared.host.ensure_registered(self).await?;
        let (id, parent) = match child {
            Some((id, parent)) => (id, Some(parent)),
            None => (ExecutionId::generate(), None),
        };
        let origin = Origin { tenant: options.tenant.clone(), parent: parent.clone() };
        let workflows: BTreeMap<String, Value> = workflow
            .children()
            .iter()
            .map(|(name, definition)| (name.clone(), serde_json::to_value(definition).expect("definitions serialize")))
            .collect();
        let started = Event::ExecutionStarted {
            plugins: plugins.iter().map(|(name, plugin)| (name.to_string(), plugin.hash.clone())).collect(),
            handlers,
            workflows,
            log_version: LOG_VERSION,
        };
        // The execution and its first step are one write: there is no
        // moment at which it exists without its start recorded.
        let record = workflow.record().clone();
        let mut machine = Machine::new(workflow, id.clone(), input.clone()).with_origin(origin);
        let now = Timestamp::now();
        let mut first = intake::Batch::default();
        intake::record(&mut machine, now, started, &mut first);
        let status = machine.status();
        let next_due = machine.next_due();
        let calls = first.commands.iter().any(|c| matches!(c, Command::Invoke { .. } | Command::Compensate { .. }));
        let released = status.is_final() || (status == ExecutionStatus::Waiting && !calls);
        let events = first.recorded.len() as u64;
        let created = self
            .shared
            .store
            .create(NewExecution {
                id: id.clone(),
                workflow: record,
                input,
                idempotency_key: options.idempotency_key,
                tenant: options.tenant,
                parent,
                created_at: now,
                owner: (!released).then(|| self.shared.host.id().clone()),
                events: first.recorded,
                status,
                next_due,
            })
            .await?;
        let fence = match created {
            Created::Existing(existing) => return Ok(Prepared::Existing(existing)),
            Created::New(fence) => fence,
        };
        self.shared.metrics.executions_started.fetch_add(1, Ordering::Relaxed);
        if status.is_final() {
            self.finished(&machine, status);
        }
        let mailbox = self.shared.live.open(&id);
        let mut owner = Owner::new(self.clone(), machine, plugins, (events, fence, status), mailbox);
        owner.created(next_due, released);
        Ok(Prepared::New(Box::new(owner), first.commands))
    }

    /// Runs (or finds again and waits for) the child execution a workflow
    /// step starts, until it rests.
    pub(crate) fn run_child(&self, child: ChildRun) -> BoxedRun {
        let engine = self.clone();
        Box::pin(async move {
            if engine.shared.store.status(&child.id).await?.is_some() {
                return engine.wait_for_rest(&child.id).await;
            }
            let Some(definition) = child.definition else {
                return Err(EngineError::Invalid(format!("no pinned definition for child execution `{}`", child.id)));
            };
            let source = format!("workflow `{}` (child of execution {})", definition.name, child.parent);
            let workflow =
                Workflow::from_definition_with(&source, definition, engine.shared.registry.as_ref(), &child.workflows)?;
            let options = StartOptions { idempotency_key: Some(format!("child:{}", child.id)), tenant: child.tenant };
            match engine.create(Arc::new(workflow), child.input, options, Some((child.id, child.parent))).await? {
                Prepared::Existing(existing) => engine.wait_for_rest(&existing).await,
                // A task of its own: nested children driven inside their
                // parents' calls would stack their polls ever deeper.
                Prepared::New(owner, commands) => Settling::of_new(owner, commands, false).wait().await,
            }
        })
    }

    /// Rolls an execution back and waits until it rests (a parent rolling
    /// back its child).
    pub(crate) fn rollback_and_wait(&self, id: &ExecutionId, reason: String) -> BoxedRun {
        let engine = self.clone();
        let id = id.clone();
        Box::pin(async move { engine.cancel(&id, &reason).await?.settling.wait().await })
    }

    /// Hands a message to the execution's owner: the one in this process,
    /// or a new owner that claims it (or posts to the owner elsewhere).
    pub(crate) fn route(&self, id: &ExecutionId, message: Message) {
        self.route_claimed(id, message, None);
    }

    /// [`Self::route`] for an execution this host may have claimed already
    /// (with the fence `claimed`, as `claim_due` does): an owner it starts
    /// drives with that fence instead of claiming again. Returns whether it
    /// started one.
    pub(crate) fn route_claimed(&self, id: &ExecutionId, message: Message, claimed: Option<Fence>) -> bool {
        let Some(mailbox) = self.shared.live.send_or_open(id, message) else { return false };
        match claimed {
            Some(fence) => tokio::spawn(adopt::adopt_claimed(self.clone(), id.clone(), fence, mailbox)),
            None => tokio::spawn(adopt::adopt(self.clone(), id.clone(), mailbox)),
        };
        true
    }

    /// Delivers an outside event and returns how it was taken.
    async fn deliver(&self, id: &ExecutionId, request: Outside) -> Result<Delivery, EngineError> {
        self.deliver_claimed(id, request, None).await
    }

    /// [`Self::deliver`] to an execution this host may have claimed already
    /// (see [`Self::route_claimed`]).
    async fn deliver_claimed(
        &self,
        id: &ExecutionId,
        request: Outside,
        claimed: Option<Fence>,
    ) -> Result<Delivery, EngineError> {
        let (reply, answer) = oneshot::channel();
        let (settled, settling) = oneshot::channel();
        self.route_claimed(id, Message::Outside { request, reply, settled: Some(settled) }, claimed);
        match answer.await {
            Ok(Ok(answer)) => Ok(Delivery { answer, settling: Settling::told(settling) }),
            Ok(Err(Refusal::NoSuchExecution(_))) => Err(EngineError::NotFound(id.clone())),
            Ok(Err(refusal)) => Err(refusal.into()),
            Err(_) => Err(EngineError::Lost(format!("the owner of execution `{id}` stopped"))),
        }
    }

    /// Rolls an execution back: steps in flight settle, then every completed
    /// step is compensated in reverse order, even when the execution had
    /// succeeded. Any number of cancels lead to one rollback; a cancel of an
    /// execution already rolling back or over is answered
    /// [`Answer::AlreadyDone`].
    pub async fn cancel(&self, id: &ExecutionId, reason: &str) -> Result<Delivery, EngineError> {
        self.deliver(id, Outside::Cancel { reason: reason.to_string() }).await
    }

    /// Retries a `failed` execution: its compensations that failed for good
    /// are tried again (fresh attempts, the same idempotency keys) and the
    /// rollback goes on. A retry of an execution rolling back after a retry
    /// is answered [`Answer::AlreadyDone`]; of any other, refused with
    /// [`EngineError::NotRetryable`].
    pub async fn retry(&self, id: &ExecutionId, reason: &str) -> Result<Delivery, EngineError> {
        self.deliver(id, Outside::Retry { reason: reason.to_string() }).await
    }

    /// Reports an async step done with `output`. Exactly one of racing
    /// reports is accepted; a repeated report with the same `key` gets
    /// [`Answer::Repeated`], any other [`EngineError::NotWaiting`].
    pub async fn complete_step(
        &self,
        id: &ExecutionId,
        step: &UnitId,
        output: Value,
        key: Option<String>,
    ) -> Result<Delivery, EngineError> {
        crate::journal::json::check_depth(&output).map_err(|error| EngineError::Invalid(format!("output: {error}")))?;
        self.deliver(id, Outside::Complete { step: step.clone(), output, key }).await
    }

    /// Reports an async step failed (the execution rolls back).
    pub async fn fail_step(
        &self,
        id: &ExecutionId,
        step: &UnitId,
        message: String,
        key: Option<String>,
    ) -> Result<Delivery, EngineError> {
        self.deliver(id, Outside::Fail { step: step.clone(), message, key }).await
    }

    /// Waits until an execution rests (it is over, or waits for the outside
    /// world) and returns it.
    pub async fn wait_for_rest(&self, id: &ExecutionId) -> Result<ExecutionView, EngineError> {
        let (settled, settling) = oneshot::channel();
        match self.shared.live.send(id, Message::Wait { settled }) {
            Ok(()) => Settling::told(settling).wait().await,
            Err(_) => {
                // Not live here: at rest in the store, or driven elsewhere
                // (or by nobody since a crash: waiting adopts it).
                let view = self.read(id).await?;
                let resting = view.status.is_final() || view.status == ExecutionStatus::Waiting;
                if resting && view.owner.is_none() {
                    return Ok(view);
                }
                let (settled, settling) = oneshot::channel();
                self.route(id, Message::Wait { settled });
                Settling::told(settling).wait().await
            }
        }
    }

    /// The execution as it is now: from its owner when it is live here,
    /// else from the store.
    pub async fn show(&self, id: &ExecutionId) -> Result<ExecutionView, EngineError> {
        let (reply, view) = oneshot::channel();
        if self.shared.live.send(id, Message::Show { reply }).is_ok() {
            if let Ok(view) = view.await {
                return Ok(view);
            }
        }
        self.read(id).await
    }
}
