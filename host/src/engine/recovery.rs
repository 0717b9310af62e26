//! Recovery and reads: resuming what a crash or a dead host left (the
//! executions the store lists as needing a driver), adopting due work,
//! marking an execution that cannot be loaded `failed`, replaying a log to
//! rebuild an execution's state, and reading one from the store. Replaying
//! is for recovery and for reading executions nobody here drives; a live
//! execution is read from its owner ([`Engine::show`]).

use super::*;
use crate::journal::{Event, RecordedEvent, LOG_VERSION};
use crate::store::DueClaim;
use crate::workflow::StepKind;

impl Engine {
    /// Continues an unfinished execution (in this process, unless another
    /// live host owns it) and waits until it rests: completed steps are not
    /// invoked again, calls that were in flight are made again (same
    /// idempotency key), deadlines that passed fire.
    pub async fn resume(&self, id: &ExecutionId) -> Result<ExecutionView, EngineError> {
        self.resume_claimed(id, None).await
    }

    /// [`Self::resume`] of an execution this host may have claimed already,
    /// with the fence `claimed` (see [`Self::route_claimed`]).
    async fn resume_claimed(&self, id: &ExecutionId, claimed: Option<Fence>) -> Result<ExecutionView, EngineError> {
        self.deliver_claimed(id, Outside::Wake, claimed).await?.settling.wait().await
    }

    /// Resumes every execution of the store that needs a driver and has no
    /// live owner (work in flight, deadlines due), 64 at a time. An
    /// execution that cannot be loaded is marked `failed` and reported, and
    /// the others go on.
    pub async fn resume_all(&self) -> Result<Vec<Result<ExecutionView, EngineError>>, EngineError> {
        const CONCURRENCY: usize = 64;
        // Registering first ends the leases of this machine's dead processes,
        // so that what they left can be claimed now.
        self.shared.host.ensure_registered(self).await?;
        let mut seen: HashSet<ExecutionId> = HashSet::new();
        let mut results = Vec::new();
        loop {
            let due = self.shared.store.claim_due(self.shared.host.id(), Timestamp::now(), 256).await?;
            self.count_claims(&due);
            let (fresh, again): (Vec<DueClaim>, Vec<DueClaim>) =
                due.into_iter().partition(|claim| seen.insert(claim.id.clone()));
            // Resumed once already and due again (a timer): left for a server,
            // not held by this process until it exits.
            for claim in again {
                self.shared.store.release(&claim.id, claim.fence).await?;
            }
            if fresh.is_empty() {
                return Ok(results);
            }
            let mut tasks = tokio::task::JoinSet::new();
            for claim in fresh {
                while tasks.len() >= CONCURRENCY {
                    if let Some(Ok(result)) = tasks.join_next().await {
                        results.push(result);
                    }
                }
                let engine = self.clone();
                // Claimed above: driven with that claim, not claimed again.
                tasks.spawn(async move { engine.resume_claimed(&claim.id, Some(claim.fence)).await });
            }
            while let Some(joined) = tasks.join_next().await {
                if let Ok(result) = joined {
                    results.push(result);
                }
            }
        }
    }

    /// Registers this process as a host of the store now (a server does at
    /// start, so that it is listed and heartbeats before it owns anything).
    pub async fn register(&self) -> Result<(), EngineError> {
        Ok(self.shared.host.ensure_registered(self).await?)
    }

    /// Adopts, in the background, up to `limit` executions of the store that
    /// need a driver and have no live owner (work in flight left by a crash
    /// or a dead host, deadlines and backoffs due); returns those it adopted
    /// (not those claimed that were driven here already).
    pub async fn adopt_claimable(&self, limit: usize) -> Result<Vec<ExecutionId>, EngineError> {
        self.shared.host.ensure_registered(self).await?;
        let mut adopted = Vec::new();
        let due = self.shared.store.claim_due(self.shared.host.id(), Timestamp::now(), limit).await?;
        self.count_claims(&due);
        for claim in due {
            // Claimed already: driven with the claim's fence, not claimed again.
            if self.route_claimed(&claim.id, Message::Adopt, Some(claim.fence)) {
                adopted.push(claim.id);
            } else {
                // Live here: its owner had let go and is leaving, or drives
                // again with a claim of its own. This claim is let go (a
                // release with its fence does nothing once the owner claimed
                // again), so that it is due for the next scan, not held by
                // nobody.
                self.shared.store.release(&claim.id, claim.fence).await?;
            }
        }
        Ok(adopted)
    }

    /// Counts claims of due work, and those taken from a host whose lease expired.
    fn count_claims(&self, due: &[DueClaim]) {
        let metrics = &self.shared.metrics;
        metrics.claims.fetch_add(due.len() as u64, Ordering::Relaxed);
        let takeovers = due.iter().filter(|claim| claim.takeover).count();
        metrics.takeovers.fetch_add(takeovers as u64, Ordering::Relaxed);
    }

    /// The execution as its recorded log says (an owner elsewhere may be ahead).
    pub(crate) async fn read(&self, id: &ExecutionId) -> Result<ExecutionView, EngineError> {
        let replayed = self.replay(id).await?;
        let mut view = ExecutionView::of(&replayed.machine);
        view.owner = replayed.owner;
        Ok(view)
    }

    /// What a recorded plugin step of an execution ran with, rebuilt by
    /// replaying the log (for `stepwise invoke --from`): its plugin, its
    /// rendered input, the context its last attempt saw and the compensation
    /// data it recorded.
    pub async fn recorded_step(&self, id: &ExecutionId, step: &UnitId) -> Result<RecordedStep, EngineError> {
        let replayed = self.replay(id).await?;
        let machine = &replayed.machine;
        let Some(unit) = machine.unit_of(step) else { return Err(no_unit(machine, step)) };
        let plugin = match machine.workflow().steps()[unit.node].kind {
            StepKind::Plugin { .. } | StepKind::Hook => match machine.target(unit) {
                Target::Plugin(name) => name,
                Target::Workflow(_) => unreachable!("a plugin step or a hook handler runs a plugin"),
            },
            StepKind::Workflow(ref child) => {
                let attempt = machine.unit(unit).attempts.max(1);
                let child_id = machine.child_execution_id(unit, attempt);
                return Err(EngineError::Invalid(format!(
                    "step `{step}` runs workflow `{child}` as execution `{child_id}`: rerun one of its steps with `--from {child_id}/STEP`"
                )));
            }
            StepKind::Transform(_) => {
                return Err(EngineError::Invalid(format!("step `{step}` is a transform: it runs no plugin")))
            }
        };
        let input = machine
            .render_input(unit)
            .map_err(|error| EngineError::Invalid(format!("the input of step `{step}` cannot be rendered: {error}")))?;
        let state = machine.unit(unit);
        Ok(RecordedStep {
            plugin,
            input,
            context: calls::step_context(machine, unit, state.attempts.max(1)),
            compensation_attempts: state.compensation_attempts,
            compensation_data: machine.is_compensable(unit).then(|| machine.compensation_data(unit)),
        })
    }

    /// Marks an execution that cannot be loaded `failed`, logs and counts
    /// it; returns the error to report.
    pub(super) async fn unloadable(&self, id: &ExecutionId, error: EngineError) -> EngineError {
        let reason = error.to_string();
        tracing::error!(execution = %id, "cannot be loaded, marked failed: {reason}");
        self.shared.metrics.executions_unloadable.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = self.shared.store.mark_unloadable(id, &reason).await {
            tracing::error!(execution = %id, "marking it failed: {error}");
        }
        EngineError::Unloadable(id.clone(), reason)
    }

    /// The plugins a replayed execution uses: the pinned versions (or, for an
    /// execution that never started, the current ones).
    pub(super) async fn pinned_plugins(&self, machine: &Machine) -> Result<calls::Plugins, EngineError> {
        let mut names: BTreeSet<PluginName> = machine.workflow().plugins();
        names.extend(machine.plugins().keys().map(|name| PluginName::new(name)));
        plugins::resolve(&self.shared.registry, &names, machine.plugins()).await
    }

    /// Deletes archived plugin versions and compiled code that neither the
    /// plugin directory's current files nor an unfinished execution needs;
    /// returns how many cache files went.
    pub async fn collect_plugin_garbage(&self) -> Result<usize, EngineError> {
        let Some(cache) = self.shared.registry.cache() else { return Ok(0) };
        let mut keep: HashSet<String> = self.shared.registry.current_file_hashes().into_iter().collect();
        // An unfinished execution may still roll back its children, even
        // those that succeeded: their pinned versions are kept too.
        let mut pending = self.shared.store.unfinished().await?;
        while let Some(id) = pending.pop() {
            let Ok(replayed) = self.replay(&id).await else { continue };
            keep.extend(replayed.machine.plugins().values().cloned());
            pending.extend(ExecutionView::of(&replayed.machine).child_execution_ids);
        }
        cache.retain(&keep).map_err(|e| EngineError::Store(StoreError::Backend(format!("plugin cache: {e}"))))
    }

    /// Rebuilds an execution's state by replaying its recorded events.
    pub(super) async fn replay(&self, id: &ExecutionId) -> Result<Replayed, EngineError> {
        let stored = match self.shared.store.load(id).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return Err(EngineError::NotFound(id.clone())),
            Err(StoreError::Corrupt(id, reason)) => return Err(EngineError::Unloadable(id, reason)),
            Err(error) => return Err(error.into()),
        };
        if let Some(RecordedEvent { event: Event::ExecutionStarted { log_version, .. }, .. }) = stored.events.first() {
            if *log_version > LOG_VERSION {
                return Err(EngineError::NewerLog(id.clone(), *log_version));
            }
        }
        let source = format!("stored definition of execution {id}");
        // The definition was validated when the execution started; its plugins
        // may since have left the directory while their pinned versions remain
        // loadable, so only the structure is checked again here.
        let revalidate = || Workflow::revalidate_stored(&source, Arc::unwrap_or_clone(stored.workflow));
        let workflow = match &stored.definition_hash {
            Some(hash) => self.shared.stored_workflows.get_or_try_make(hash, revalidate)?,
            None => Arc::new(revalidate()?),
        };
        let origin = Origin { tenant: stored.tenant, parent: stored.parent };
        let mut machine = Machine::new(workflow, stored.id, stored.input).with_origin(origin);
        let events = stored.events.len() as u64;
        for recorded in stored.events {
            machine.apply(recorded.at, recorded.event);
        }
        Ok(Replayed { machine, events, status: stored.status, owner: stored.owner })
    }
}

/// Why `step` names no unit of the execution: no such step, a fan-out or
/// hook named without its element or handler, or one that has not run.
fn no_unit(machine: &Machine, step: &UnitId) -> EngineError {
    let id = machine.execution_id();
    let Some(node) = machine.workflow().step_index(&step.step) else {
        return EngineError::NoSuchStep(format!("execution `{id}` has no step `{step}`"));
    };
    let definition = &machine.workflow().steps()[node];
    let message = match (&step.slot, definition.for_each.is_some(), definition.is_hook()) {
        (None, true, _) => format!("step `{step}` is a fan-out: name one of its elements, `{step}[0]`"),
        (None, _, true) => format!("`{step}` is a hook: name one of its handlers, `{step}[PLUGIN]`"),
        _ => format!("execution `{id}` has not run `{step}`"),
    };
    EngineError::NoSuchStep(message)
}

/// A recorded plugin step, as `stepwise invoke --from` reruns it.
pub struct RecordedStep {
    /// The plugin it ran.
    pub plugin: PluginName,
    /// Its input, as every attempt got it.
    pub input: Value,
    /// What its last `invoke` attempt was told (the first, if none ran).
    pub context: crate::sandbox::StepContext,
    /// How many `compensate` attempts were started.
    pub compensation_attempts: u32,
    /// What `compensate` gets, when a rollback would compensate the step.
    pub compensation_data: Option<Value>,
}
