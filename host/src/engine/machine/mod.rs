//! The saga state machine: `(execution state, event) -> (new state, commands)`.
//!
//! This is the one place that knows the saga rules. It does no I/O and reads
//! no clock: time arrives with each event, so replaying a recorded log
//! rebuilds exactly the same state (this is how a crashed execution resumes).
//! The owner ([`super::owner`]) records the events and performs the commands.
//!
//! The rules live in rooms named for what they decide:
//! - [`progress`]: which nodes are ready, their recorded decisions
//!   (conditions, fan-out lists, transforms), starting units, success;
//! - [`retry`]: whether a failed attempt or compensation is retried, after
//!   which backoff;
//! - [`rollback`]: when the execution rolls back and in which order
//!   completed units are compensated;
//! - [`state`]: the state itself, with no rules.
//!
//! This module dispatches events to them and answers questions about the
//! state (which unit a [`UnitId`] names, what is outstanding after a replay).
//!
//! The graph's nodes are the workflow's steps and hooks. A node runs as one
//! or more *units*, each invoked (with retries) and compensated on its own:
//! a plain step is one unit; a fan-out step (`for_each`) is one unit per
//! element, `<step>[<index>]`; a hook is one unit per handler the tenant
//! bound, `<hook>[<plugin>]`, run one after another; a transform is one unit
//! whose output is decided here, with nothing to compensate.

mod progress;
mod retry;
mod rollback;
mod state;

pub use retry::is_retryable;
pub use state::{Completion, ExecutionError, NodePhase, NodeState, Origin, Pinned, StepPhase, StepState, Target, Unit};

use super::command::Command;
use super::timeline::{CallPhase, TimelineEntry, TimelineKind};
use crate::journal::{
    CallCost, Event, ExecutionId, ExecutionStatus, FailureKind, HandlerBinding, LogLine, Slot, StepFailure, Timer,
    Timestamp, UnitId, LOG_VERSION,
};
use crate::workflow::reference::{Root, Scope};
use crate::workflow::{StepKind, Workflow};
use serde_json::Value;
use std::sync::Arc;

/// The state of one execution, advanced only by [`Machine::apply`].
#[derive(Clone, Debug)]
pub struct Machine {
    workflow: Arc<Workflow>,
    execution_id: ExecutionId,
    input: Value,
    origin: Origin,
    status: ExecutionStatus,
    nodes: Vec<NodeState>,
    completion_order: Vec<Unit>,
    compensation_queue: Option<Vec<Unit>>,
    timeline: Vec<TimelineEntry>,
    output: Option<Value>,
    error: Option<ExecutionError>,
    started_at: Option<Timestamp>,
    finished_at: Option<Timestamp>,
    /// How many times it reached a final status.
    endings: u32,
    pinned: Pinned,
    /// The log format: from version 2, decisions are recorded events.
    log_version: u32,
}

static NULL: Value = Value::Null;

/// Node outputs, the input and (for a fan-out element) its item, as seen by
/// templates and expressions. A skipped node reads as `null`.
struct Outputs<'a> {
    input: &'a Value,
    workflow: &'a Workflow,
    nodes: &'a [NodeState],
    element: Option<(&'a Value, Value)>,
}

impl Scope for Outputs<'_> {
    fn value(&self, root: &Root) -> Option<&Value> {
        match root {
            Root::Input => Some(self.input),
            Root::StepOutput(id) | Root::Hook(id) => {
                let node = &self.nodes[self.workflow.step_index(id)?];
                match node.phase {
                    NodePhase::Skipped { .. } => Some(&NULL),
                    _ => node.output.as_ref(),
                }
            }
            Root::Item => self.element.as_ref().map(|(item, _)| *item),
            Root::Index => self.element.as_ref().map(|(_, index)| index),
        }
    }
}

impl Machine {
    /// A new execution of `workflow` with `input`, not started yet: apply
    /// [`Event::ExecutionStarted`] to start it.
    pub fn new(workflow: Arc<Workflow>, execution_id: ExecutionId, input: Value) -> Self {
        let nodes = vec![NodeState::new(); workflow.steps().len()];
        Self {
            workflow,
            execution_id,
            input,
            origin: Origin::default(),
            status: ExecutionStatus::Running,
            nodes,
            completion_order: Vec::new(),
            compensation_queue: None,
            timeline: Vec::new(),
            output: None,
            error: None,
            started_at: None,
            finished_at: None,
            endings: 0,
            pinned: Pinned::default(),
            log_version: LOG_VERSION,
        }
    }

    /// Sets who the execution runs for and under which parent.
    pub fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }

    /// Sets what a new execution pins when it starts (its handlers and child
    /// workflows; the owner adds the plugin versions). Replaced by what
    /// [`Event::ExecutionStarted`] records.
    pub fn with_pinned(mut self, pinned: Pinned) -> Self {
        self.pinned = pinned;
        self
    }

    /// Who the execution runs for and under which parent.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The plugin versions the execution is pinned to (name -> content hash).
    pub fn plugins(&self) -> &std::collections::BTreeMap<String, String> {
        &self.pinned.plugins
    }

    /// Everything the execution pinned when it started.
    pub fn pinned(&self) -> &Pinned {
        &self.pinned
    }

    /// The workflow being executed.
    pub fn workflow(&self) -> &Arc<Workflow> {
        &self.workflow
    }

    /// The execution's id.
    pub fn execution_id(&self) -> &ExecutionId {
        &self.execution_id
    }

    /// The execution's input.
    pub fn input(&self) -> &Value {
        &self.input
    }

    /// Its status.
    pub fn status(&self) -> ExecutionStatus {
        self.status
    }

    /// Whether [`Event::ExecutionStarted`] was applied.
    pub fn is_started(&self) -> bool {
        self.started_at.is_some()
    }

    /// Every node's state, in workflow order (steps, then hooks).
    pub fn nodes(&self) -> &[NodeState] {
        &self.nodes
    }

    /// The state of one unit.
    pub fn unit(&self, unit: Unit) -> &StepState {
        &self.nodes[unit.node].elements[unit.element]
    }

    fn unit_mut(&mut self, unit: Unit) -> &mut StepState {
        &mut self.nodes[unit.node].elements[unit.element]
    }

    /// The timeline so far.
    pub fn timeline(&self) -> &[TimelineEntry] {
        &self.timeline
    }

    /// The workflow output, once succeeded.
    pub fn output(&self) -> Option<&Value> {
        self.output.as_ref()
    }

    /// Why it did not succeed, once a step failed.
    pub fn error(&self) -> Option<&ExecutionError> {
        self.error.as_ref()
    }

    /// When it started.
    pub fn started_at(&self) -> Option<Timestamp> {
        self.started_at
    }

    /// When it reached a final status.
    pub fn finished_at(&self) -> Option<Timestamp> {
        self.finished_at
    }

    /// How many times it reached a final status: more than once when it was
    /// rolled back after it succeeded, or retried after it failed.
    pub fn endings(&self) -> u32 {
        self.endings
    }

    /// What its calls cost, summed over every unit.
    pub fn cost(&self) -> CallCost {
        self.nodes.iter().flat_map(|node| node.elements.iter().map(|unit| &unit.cost)).sum()
    }

    /// Whether anything runs or will run without news from outside: an
    /// attempt or compensation in flight or waiting out its backoff.
    pub fn is_busy(&self) -> bool {
        self.nodes.iter().flat_map(|node| &node.elements).any(|unit| {
            unit.phase.is_busy()
                || matches!(unit.phase, StepPhase::Compensating { .. } | StepPhase::CompensationRetryWaiting { .. })
        })
    }

    /// The stable name of a unit: `step`, `step[3]` or `hook[plugin]`.
    pub fn label(&self, unit: Unit) -> UnitId {
        let step = &self.workflow.steps()[unit.node];
        if step.is_hook() {
            match self.handler(unit) {
                Some(handler) => UnitId::handler(step.id.clone(), handler.plugin.clone()),
                None => UnitId::step(step.id.clone()),
            }
        } else if step.for_each.is_some() {
            UnitId::element(step.id.clone(), unit.element as u32)
        } else {
            UnitId::step(step.id.clone())
        }
    }

    /// Whether the workflow has the step or hook a unit id names (whatever
    /// the state of its units).
    pub fn has_node(&self, id: &UnitId) -> bool {
        self.workflow.step_index(&id.step).is_some()
    }

    /// The unit an id names, if it exists in the current state.
    pub fn unit_of(&self, id: &UnitId) -> Option<Unit> {
        let node = self.workflow.step_index(&id.step)?;
        let step = &self.workflow.steps()[node];
        let element = match &id.slot {
            None if step.is_hook() || step.for_each.is_some() => return None,
            None => 0,
            Some(Slot::Handler(plugin)) if step.is_hook() => {
                self.handlers_of(node).iter().position(|h| &h.plugin == plugin)?
            }
            Some(Slot::Element(index)) if step.for_each.is_some() => *index as usize,
            Some(_) => return None,
        };
        (element < self.nodes[node].elements.len()).then_some(Unit { node, element })
    }

    /// The handler a hook unit runs.
    pub fn handler(&self, unit: Unit) -> Option<&HandlerBinding> {
        self.handlers_of(unit.node).get(unit.element)
    }

    fn handlers_of(&self, node: usize) -> &[HandlerBinding] {
        let name = self.workflow.steps()[node].id.as_str();
        self.pinned.handlers.get(name).map_or(&[], Vec::as_slice)
    }

    /// What a unit's commands run.
    pub fn target(&self, unit: Unit) -> Target {
        match &self.workflow.steps()[unit.node].kind {
            StepKind::Plugin { name, .. } => Target::Plugin(name.clone()),
            StepKind::Workflow(name) => Target::Workflow(name.clone()),
            StepKind::Hook => Target::Plugin(
                self.handler(unit).map(|h| h.plugin.clone()).unwrap_or_else(|| crate::journal::PluginName::new("")),
            ),
            StepKind::Transform(_) => unreachable!("transforms are decided by the machine"),
        }
    }

    /// The id of the child execution an attempt of a workflow step runs: a
    /// function of this execution, the unit and the attempt, so a resumed
    /// parent finds its child again. `{parent}.{step}.{attempt}`, and for a
    /// fan-out element `{parent}.{step}.{index}.{attempt}`: a step id starts
    /// with a letter and an index is digits, so no two units of one
    /// execution (nor of its descendants) share a child.
    pub fn child_execution_id(&self, unit: Unit, attempt: u32) -> ExecutionId {
        let step = &self.workflow.steps()[unit.node];
        let parent = &self.execution_id;
        ExecutionId::new(match (step.for_each.is_some(), self.log_version >= 3) {
            (false, _) => format!("{parent}.{}.{attempt}", step.id),
            (true, true) => format!("{parent}.{}.{}.{attempt}", step.id, unit.element),
            // As the execution's log was written before version 3 (where a
            // step `{step}-{index}` would name the same child).
            (true, false) => format!("{parent}.{}-{}.{attempt}", step.id, unit.element),
        })
    }

    /// Applies one event that happened at `at` and returns what to do next.
    /// Events that no longer match the state (a stale timer, a result for an
    /// attempt that is not in flight) change nothing.
    pub fn apply(&mut self, at: Timestamp, event: Event) -> Vec<Command> {
        let mut commands = Vec::new();
        match event {
            Event::ExecutionStarted { plugins, handlers, workflows, log_version } => {
                if self.started_at.is_none() {
                    self.started_at = Some(at);
                    self.pinned = Pinned { plugins, handlers, workflows };
                    self.log_version = log_version;
                    self.record(at, TimelineKind::ExecutionStarted);
                    if let Some(timeout) = self.workflow.timeout() {
                        commands.push(Command::StartTimer { timer: Timer::WorkflowTimeout, due: at.plus(timeout) });
                    }
                    self.advance(at, &mut commands);
                }
            }
            Event::NodeDecided { step, decision } => {
                if let Some(node) = self.workflow.step_index(&step) {
                    if self.nodes[node].phase == NodePhase::Deciding {
                        self.apply_decision(at, node, decision);
                        self.advance(at, &mut commands);
                    }
                }
            }
            Event::AttemptStarted { step, attempt } => {
                if let Some(unit) = self.unit_in(&step, |phase| phase == StepPhase::Running { attempt }) {
                    let state = self.unit_mut(unit);
                    state.attempts = state.attempts.max(attempt);
                    state.started_at.get_or_insert(at);
                    self.record(at, TimelineKind::StepStarted { step, attempt });
                }
            }
            Event::AttemptSucceeded { step, attempt, output, compensation, logs, cost } => {
                if let Some(unit) = self.unit_in(&step, |phase| phase.awaits_attempt(attempt)) {
                    self.add_cost(unit, cost);
                    self.record_logs(&step, attempt, CallPhase::Invoke, logs);
                    self.attempt_succeeded(at, unit, attempt, output, compensation, &mut commands);
                    self.advance(at, &mut commands);
                }
            }
            Event::AttemptSkipped { step, attempt, reason, logs, cost } => {
                if let Some(unit) = self.unit_in(&step, |phase| phase.awaits_attempt(attempt)) {
                    self.add_cost(unit, cost);
                    self.record_logs(&step, attempt, CallPhase::Invoke, logs);
                    self.attempt_skipped(at, unit, reason);
                    self.advance(at, &mut commands);
                }
            }
            Event::AttemptFailed { step, attempt, failure, logs, cost } => {
                if let Some(unit) = self.unit_in(&step, |phase| phase.awaits_attempt(attempt)) {
                    self.add_cost(unit, cost);
                    self.record_logs(&step, attempt, CallPhase::Invoke, logs);
                    self.attempt_failed(at, unit, attempt, failure, &mut commands);
                    self.advance(at, &mut commands);
                }
            }
            Event::ChildWaiting { step, attempt } => {
                if let Some(unit) = self.unit_in(&step, |phase| phase == StepPhase::Running { attempt }) {
                    self.unit_mut(unit).phase = StepPhase::ChildWaiting { attempt };
                    if !self.status.is_forward() {
                        // The rollback began while it ran: its child is rolled
                        // back like a completed unit (the queue is not built
                        // yet, this unit having been running until now).
                        self.completion_order.push(unit);
                    }
                    let child = self.child_execution_id(unit, attempt);
                    self.record(at, TimelineKind::ChildWaiting { step, attempt, child });
                    self.advance(at, &mut commands);
                }
            }
            Event::TimerFired { timer } => self.timer_fired(at, timer, &mut commands),
            Event::AsyncStepSucceeded { step, output, key } => {
                if let Some(unit) = self.waiting_unit(&step) {
                    let attempt = self.unit(unit).attempts;
                    self.unit_mut(unit).completion = Some(Completion { key, succeeded: true });
                    self.succeed_unit(at, unit, attempt, output);
                    self.advance(at, &mut commands);
                }
            }
            Event::AsyncStepFailed { step, message, key } => {
                if let Some(unit) = self.waiting_unit(&step) {
                    self.unit_mut(unit).completion = Some(Completion { key, succeeded: false });
                    self.fail_unit(at, unit, StepFailure::new(FailureKind::Permanent, message));
                    self.advance(at, &mut commands);
                }
            }
            Event::CompensationStarted { step, attempt } => {
                if let Some(unit) = self.unit_in(&step, |phase| phase == StepPhase::Compensating { attempt }) {
                    let state = self.unit_mut(unit);
                    state.compensation_attempts = state.compensation_attempts.max(attempt);
                    self.record(at, TimelineKind::CompensationStarted { step, attempt });
                }
            }
            Event::CompensationSucceeded { step, attempt, logs, cost } => {
                if let Some(unit) = self.unit_in(&step, |phase| phase == StepPhase::Compensating { attempt }) {
                    self.add_cost(unit, cost);
                    self.record_logs(&step, attempt, CallPhase::Compensate, logs);
                    self.unit_mut(unit).phase = StepPhase::Compensated;
                    self.record(at, TimelineKind::StepCompensated { step, attempt });
                    self.advance(at, &mut commands);
                }
            }
            Event::CompensationFailed { step, attempt, failure, logs, cost } => {
                if let Some(unit) = self.unit_in(&step, |phase| phase == StepPhase::Compensating { attempt }) {
                    self.add_cost(unit, cost);
                    self.record_logs(&step, attempt, CallPhase::Compensate, logs);
                    self.compensation_failed(at, unit, attempt, failure, &mut commands);
                    self.advance(at, &mut commands);
                }
            }
            Event::RollbackRequested { reason } => self.rollback_requested(at, reason, &mut commands),
            Event::RetryRequested { reason } => self.retry_requested(at, reason, &mut commands),
        }
        commands
    }

    /// Adds what a call of `unit` cost to its sum.
    fn add_cost(&mut self, unit: Unit, cost: Option<CallCost>) {
        if let Some(cost) = cost {
            self.unit_mut(unit).cost.add(&cost);
        }
    }

    fn timer_fired(&mut self, at: Timestamp, timer: Timer, commands: &mut Vec<Command>) {
        if !self.is_armed(&timer) {
            return;
        }
        match timer {
            Timer::Retry { step, attempt } => {
                if let Some(unit) = self.unit_of(&step) {
                    self.start_attempt(at, unit, attempt, commands);
                    self.advance(at, commands);
                }
            }
            Timer::CompensationRetry { step, attempt } => {
                if let Some(unit) = self.unit_of(&step) {
                    self.start_compensation(unit, attempt, commands);
                }
            }
            Timer::AsyncTimeout { step } => {
                if let Some(unit) = self.unit_of(&step) {
                    let timeout = self.workflow.steps()[unit.node].timeout.unwrap_or_default();
                    let message = format!("not completed within its timeout of {} ms", timeout.as_millis());
                    self.fail_unit(at, unit, StepFailure::new(FailureKind::TimedOut, message));
                    self.advance(at, commands);
                }
            }
            Timer::WorkflowTimeout => {
                let timeout = self.workflow.timeout().unwrap_or_default();
                let message = format!("the workflow did not finish within its timeout of {} ms", timeout.as_millis());
                self.record(at, TimelineKind::ExecutionTimedOut);
                self.begin_rollback(at, None, StepFailure::new(FailureKind::TimedOut, message));
                self.advance(at, commands);
            }
        }
    }

    /// Whether `timer` still means something: firing it now would change the
    /// state. A timer that is not armed (stale, fired already) is not recorded.
    pub fn is_armed(&self, timer: &Timer) -> bool {
        match timer {
            Timer::Retry { step, attempt } => self
                .unit_in(step, |phase| matches!(phase, StepPhase::RetryWaiting { attempt: a, .. } if a == *attempt))
                .is_some_and(|_| self.status.is_forward()),
            Timer::CompensationRetry { step, attempt } => self
                .unit_in(
                    step,
                    |phase| matches!(phase, StepPhase::CompensationRetryWaiting { attempt: a, .. } if a == *attempt),
                )
                .is_some(),
            Timer::AsyncTimeout { step } => self.waiting_unit(step).is_some(),
            Timer::WorkflowTimeout => self.status.is_forward() && self.is_started(),
        }
    }

    /// The commands still outstanding in the current state: calls in flight,
    /// decisions not recorded yet and armed timers. After replaying a
    /// recorded log, performing these resumes the execution where it stopped.
    pub fn outstanding_commands(&self) -> Vec<Command> {
        let mut commands = Vec::new();
        for node in 0..self.nodes.len() {
            if self.nodes[node].phase == NodePhase::Deciding {
                let step = self.workflow.steps()[node].id.clone();
                commands.push(Command::Decide { step, decision: self.decide(node) });
            }
        }
        for unit in self.units() {
            let step = self.label(unit);
            match self.unit(unit).phase {
                // An attempt in flight, or a child to look at again: the input
                // rendered when the attempt started (outputs never change after).
                StepPhase::Running { attempt } | StepPhase::ChildWaiting { attempt } => {
                    if let Ok(input) = self.render_input(unit) {
                        commands.push(Command::Invoke { unit, attempt, input });
                    }
                }
                StepPhase::RetryWaiting { attempt, due } => {
                    commands.push(Command::StartTimer { timer: Timer::Retry { step, attempt }, due })
                }
                StepPhase::Waiting { due: Some(due) } => {
                    commands.push(Command::StartTimer { timer: Timer::AsyncTimeout { step }, due })
                }
                StepPhase::Compensating { attempt } => {
                    commands.push(Command::Compensate { unit, attempt, data: self.compensation_data(unit) })
                }
                StepPhase::CompensationRetryWaiting { attempt, due } => {
                    commands.push(Command::StartTimer { timer: Timer::CompensationRetry { step, attempt }, due })
                }
                _ => {}
            }
        }
        if let Some(due) = self.workflow_deadline() {
            commands.push(Command::StartTimer { timer: Timer::WorkflowTimeout, due });
        }
        if self.status.is_final() {
            commands.push(Command::Finish);
        }
        commands
    }

    /// The earliest time an armed timer falls due, if any: what the store
    /// indexes so that an execution nobody drives is woken in time.
    pub fn next_due(&self) -> Option<Timestamp> {
        let units = self.units().filter_map(|unit| match self.unit(unit).phase {
            StepPhase::RetryWaiting { due, .. } | StepPhase::CompensationRetryWaiting { due, .. } => Some(due),
            StepPhase::Waiting { due } => due,
            _ => None,
        });
        units.chain(self.workflow_deadline()).min()
    }

    fn workflow_deadline(&self) -> Option<Timestamp> {
        match (self.status.is_forward(), self.workflow.timeout(), self.started_at) {
            (true, Some(timeout), Some(started_at)) => Some(started_at.plus(timeout)),
            _ => None,
        }
    }

    /// Every unit that exists so far, node by node.
    pub fn units(&self) -> impl Iterator<Item = Unit> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .flat_map(|(node, state)| (0..state.elements.len()).map(move |element| Unit { node, element }))
    }

    fn waiting_unit(&self, step: &UnitId) -> Option<Unit> {
        self.unit_in(step, |phase| matches!(phase, StepPhase::Waiting { .. }))
    }

    /// Whether `step` is an async step waiting to be completed from outside.
    pub fn is_waiting(&self, step: &UnitId) -> bool {
        self.waiting_unit(step).is_some()
    }

    fn unit_in(&self, step: &UnitId, phase: impl Fn(StepPhase) -> bool) -> Option<Unit> {
        let unit = self.unit_of(step)?;
        phase(self.unit(unit).phase).then_some(unit)
    }

    fn record(&mut self, at: Timestamp, kind: TimelineKind) {
        self.timeline.push(TimelineEntry { at, kind });
    }

    fn record_logs(&mut self, step: &UnitId, attempt: u32, phase: CallPhase, logs: Vec<LogLine>) {
        for line in logs {
            self.record(
                line.at,
                TimelineKind::Log { step: step.clone(), attempt, phase, level: line.level, message: line.message },
            );
        }
    }

    fn scope(&self, element: Option<Unit>) -> Outputs<'_> {
        let element = element.and_then(|unit| {
            let items = self.nodes[unit.node].items.as_ref()?;
            Some((&items[unit.element], Value::from(unit.element)))
        });
        Outputs { input: &self.input, workflow: &self.workflow, nodes: &self.nodes, element }
    }

    /// The input of `unit`, rendered from the execution's input and the
    /// outputs it reads (the same as its attempts got: those never change).
    pub fn render_input(&self, unit: Unit) -> Result<Value, String> {
        self.workflow.steps()[unit.node].input.render(&self.scope(Some(unit)))
    }

    /// Whether a rollback would compensate `unit`: it completed (or, async,
    /// its invoke returned and started work).
    pub fn is_compensable(&self, unit: Unit) -> bool {
        self.completion_order.contains(&unit)
    }

    /// What `compensate` of `unit` gets: its recorded compensation data, or its output.
    pub fn compensation_data(&self, unit: Unit) -> Value {
        let state = self.unit(unit);
        state.compensation_data.clone().or_else(|| state.output.clone()).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests;
