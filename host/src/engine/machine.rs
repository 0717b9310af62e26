//! The saga state machine: `(execution state, event) -> (new state, commands)`.
//!
//! This is the one place that knows the saga rules: which nodes are ready,
//! which are skipped by a condition, how a fan-out or a hook expands into
//! units, when an attempt is retried and after which backoff, when the
//! execution rolls back, and in which order completed units are compensated.
//! It does no I/O and reads no clock: time arrives with each event, so
//! replaying a recorded log rebuilds exactly the same state (this is how a
//! crashed execution resumes). The driver ([`super::driver`]) performs the commands.
//!
//! The graph's nodes are the workflow's steps and hooks. A node runs as one
//! or more *units*, each invoked (with retries) and compensated on its own:
//! a plain step is one unit; a fan-out step (`for_each`) is one unit per
//! element, `<step>[<index>]`; a hook is one unit per handler the tenant
//! bound, `<hook>[<plugin>]`, run one after another; a transform is one unit
//! evaluated here, with nothing to compensate. Labels are derived from the
//! definition, the pinned handlers and the element's position, never from
//! the run time, so a resumed execution finds every unit again.

use super::event::{Command, Event, Timer};
use super::timeline::{CallPhase, TimelineEntry, TimelineKind};
use crate::failure::{FailureKind, StepFailure};
use crate::ids::{ExecutionId, StepId};
use crate::sandbox::LogLine;
use crate::tenants::HandlerBinding;
use crate::time::Timestamp;
use crate::workflow::reference::{Root, Scope};
use crate::workflow::{StepKind, Workflow, WorkflowDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Status of an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// Steps are running or ready to run.
    Running,
    /// Nothing runs: async steps (or child executions) wait for the outside world.
    Waiting,
    /// A step failed: running steps are settling, then completed steps are compensated.
    Compensating,
    /// Every step succeeded (or was skipped).
    Succeeded,
    /// A step failed and every completed step was compensated.
    Compensated,
    /// A compensation failed after its retries: needs attention.
    Failed,
}

impl ExecutionStatus {
    /// Whether the execution is over.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Compensated | Self::Failed)
    }

    /// Whether the execution moves forward (not rolling back, not over).
    pub fn is_forward(self) -> bool {
        matches!(self, Self::Running | Self::Waiting)
    }

    /// The status as its JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Compensating => "compensating",
            Self::Succeeded => "succeeded",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
        }
    }
}

/// One unit of work: element `element` of node `node` (0 for a plain step).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Unit {
    /// Index of the node (step or hook) in the workflow.
    pub node: usize,
    /// Index of the element within the node.
    pub element: usize,
}

impl Unit {
    /// The only unit of a plain step.
    pub fn single(node: usize) -> Self {
        Self { node, element: 0 }
    }
}

/// Where one unit is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepPhase {
    /// Not started: waiting for its dependencies (or never started).
    Pending,
    /// An `invoke` attempt is in flight.
    Running {
        /// The attempt.
        attempt: u32,
    },
    /// Waiting for a backoff timer before attempt `attempt`.
    RetryWaiting {
        /// The next attempt.
        attempt: u32,
        /// When it is due.
        due: Timestamp,
    },
    /// An async step's `invoke` returned; waiting for completion from outside.
    Waiting {
        /// When the wait times out, if it can.
        due: Option<Timestamp>,
    },
    /// A workflow step's child execution waits for the outside world.
    ChildWaiting {
        /// The attempt whose child waits.
        attempt: u32,
    },
    /// `invoke` succeeded (for an async step: completed from outside).
    Succeeded,
    /// `invoke` failed for good.
    Failed,
    /// Was waiting to retry when the execution started rolling back.
    Cancelled,
    /// A `compensate` attempt is in flight.
    Compensating {
        /// The compensation attempt.
        attempt: u32,
    },
    /// Waiting for a backoff timer before compensation attempt `attempt`.
    CompensationRetryWaiting {
        /// The next compensation attempt.
        attempt: u32,
        /// When it is due.
        due: Timestamp,
    },
    /// `compensate` succeeded.
    Compensated,
    /// `compensate` failed for good.
    CompensationFailed,
}

impl StepPhase {
    /// Whether an `invoke` is in flight or will be retried: the unit holds a
    /// slot of its node's concurrency and keeps the execution running.
    fn is_busy(self) -> bool {
        matches!(self, Self::Running { .. } | Self::RetryWaiting { .. })
    }

    /// Whether the unit started and has not ended its forward life.
    fn is_active(self) -> bool {
        self.is_busy() || matches!(self, Self::Waiting { .. } | Self::ChildWaiting { .. })
    }
}

/// Everything known about one unit of an execution.
#[derive(Clone, Debug, PartialEq)]
pub struct StepState {
    /// Its phase.
    pub phase: StepPhase,
    /// `invoke` attempts started.
    pub attempts: u32,
    /// `compensate` attempts started.
    pub compensation_attempts: u32,
    /// Output of the successful attempt.
    pub output: Option<Value>,
    /// Compensation data of the successful attempt.
    pub compensation_data: Option<Value>,
    /// The last `invoke` failure.
    pub error: Option<StepFailure>,
    /// The last `compensate` failure.
    pub compensation_error: Option<StepFailure>,
    /// When the first attempt started.
    pub started_at: Option<Timestamp>,
    /// When it succeeded or failed for good.
    pub finished_at: Option<Timestamp>,
}

impl StepState {
    fn new() -> Self {
        Self {
            phase: StepPhase::Pending,
            attempts: 0,
            compensation_attempts: 0,
            output: None,
            compensation_data: None,
            error: None,
            compensation_error: None,
            started_at: None,
            finished_at: None,
        }
    }
}

/// Where one node (step or hook) is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodePhase {
    /// Waiting for its dependencies.
    Pending,
    /// Its condition was false, or a step whose output it needs was skipped.
    Skipped {
        /// Why, for people.
        reason: String,
    },
    /// Expanded into its units, some still to finish.
    Started,
    /// Every unit succeeded; its output is known.
    Succeeded,
    /// A unit (or the node itself: condition, fan-out list) failed for good.
    Failed,
}

/// Everything known about one node of an execution.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeState {
    /// Its phase.
    pub phase: NodePhase,
    /// Its units (one for a plain step; one per element or handler).
    pub elements: Vec<StepState>,
    /// The fan-out's elements (`$.item` of each unit), when it has `for_each`.
    pub items: Option<Vec<Value>>,
    /// Its output once succeeded: a plain step's output, the list of element
    /// outputs, or a hook's `{"output": [..], "handlers": {..}}`.
    pub output: Option<Value>,
    /// A failure of the node itself (condition, `for_each` list, transform).
    pub error: Option<StepFailure>,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it succeeded, failed or was skipped.
    pub finished_at: Option<Timestamp>,
}

impl NodeState {
    fn new() -> Self {
        Self {
            phase: NodePhase::Pending,
            elements: Vec::new(),
            items: None,
            output: None,
            error: None,
            started_at: None,
            finished_at: None,
        }
    }

    /// Whether dependants may go ahead (it succeeded or was skipped).
    fn is_settled(&self) -> bool {
        matches!(self.phase, NodePhase::Succeeded | NodePhase::Skipped { .. })
    }
}

/// What a unit's command runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A plugin's exports.
    Plugin(String),
    /// A child execution of this workflow.
    Workflow(String),
}

/// Why an execution did not succeed: the unit that failed (none when the
/// workflow output could not be rendered or a rollback was requested) and its failure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExecutionError {
    /// The step (or element, or handler) that failed.
    pub step: Option<StepId>,
    /// The failure.
    #[serde(flatten)]
    pub failure: StepFailure,
}

/// Who the execution runs for and under which parent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The tenant whose hook handlers run (and whose kv namespace is used).
    pub tenant: Option<String>,
    /// The execution that runs this one as a workflow step.
    pub parent: Option<ExecutionId>,
}

/// What an execution pinned when it started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pinned {
    /// Plugin name -> content hash.
    pub plugins: BTreeMap<String, String>,
    /// Hook name -> handlers, in order.
    pub handlers: BTreeMap<String, Vec<HandlerBinding>>,
    /// Child workflow definitions, by name.
    pub workflows: BTreeMap<String, WorkflowDefinition>,
}

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
    pinned: Pinned,
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
            pinned: Pinned::default(),
        }
    }

    /// Sets who the execution runs for and under which parent.
    pub fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }

    /// Sets what a new execution pins when it starts (its handlers and child
    /// workflows; the driver adds the plugin versions). Replaced by what
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
    pub fn plugins(&self) -> &BTreeMap<String, String> {
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

    /// The stable label of a unit: `step`, `step[3]` or `hook[plugin]`.
    pub fn label(&self, unit: Unit) -> StepId {
        let step = &self.workflow.steps()[unit.node];
        if step.is_hook() {
            let plugin = self.handler(unit).map_or("?", |handler| handler.plugin.as_str());
            StepId::new(&format!("{}[{plugin}]", step.id))
        } else if step.for_each.is_some() {
            StepId::new(&format!("{}[{}]", step.id, unit.element))
        } else {
            step.id.clone()
        }
    }

    /// The unit a label names, if it exists in the current state.
    pub fn unit_of(&self, label: &StepId) -> Option<Unit> {
        let text = label.as_str();
        let (id, inner) = match text.strip_suffix(']').and_then(|rest| rest.split_once('[')) {
            Some((id, inner)) => (id, Some(inner)),
            None => (text, None),
        };
        let node = self.workflow.step_index(&StepId::new(id))?;
        let step = &self.workflow.steps()[node];
        let element = match inner {
            None if step.is_hook() || step.for_each.is_some() => return None,
            None => 0,
            Some(plugin) if step.is_hook() => self.handlers_of(node).iter().position(|h| h.plugin == plugin)?,
            Some(index) if step.for_each.is_some() => index.parse().ok()?,
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
            StepKind::Plugin { name, .. } => Target::Plugin(name.to_string()),
            StepKind::Workflow(name) => Target::Workflow(name.clone()),
            StepKind::Hook => Target::Plugin(self.handler(unit).map(|h| h.plugin.clone()).unwrap_or_default()),
            StepKind::Transform(_) => unreachable!("transforms are evaluated by the machine"),
        }
    }

    /// The id of the child execution an attempt of a workflow step runs: a
    /// function of this execution, the unit and the attempt, so a resumed
    /// parent finds its child again.
    pub fn child_execution_id(&self, unit: Unit, attempt: u32) -> ExecutionId {
        let label = self.label(unit).as_str().replace('[', "-").replace(']', "");
        ExecutionId::new(format!("{}.{label}.{attempt}", self.execution_id))
    }

    /// Applies one event that happened at `at` and returns what to do next.
    /// Events that no longer match the state (a stale timer, a result for an
    /// attempt that is not in flight) change nothing.
    pub fn apply(&mut self, at: Timestamp, event: Event) -> Vec<Command> {
        let mut commands = Vec::new();
        match event {
            Event::ExecutionStarted { plugins, handlers, workflows } => {
                if self.started_at.is_none() {
                    self.started_at = Some(at);
                    self.pinned = Pinned { plugins, handlers, workflows };
                    self.record(at, TimelineKind::ExecutionStarted);
                    if let Some(timeout) = self.workflow.timeout() {
                        commands.push(Command::StartTimer { timer: Timer::WorkflowTimeout, due: at.plus(timeout) });
                    }
                    self.advance(at, &mut commands);
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
            Event::AttemptSucceeded { step, attempt, output, compensation, logs } => {
                if let Some(unit) = self.unit_in(&step, |phase| in_flight(phase, attempt)) {
                    self.record_logs(&step, attempt, CallPhase::Invoke, logs);
                    self.unit_mut(unit).compensation_data = compensation;
                    let definition = &self.workflow.steps()[unit.node];
                    if definition.is_async {
                        let due = definition.timeout.map(|timeout| at.plus(timeout));
                        self.unit_mut(unit).phase = StepPhase::Waiting { due };
                        self.record(at, TimelineKind::StepWaiting { step: step.clone(), attempt, timeout_at: due });
                        if let Some(due) = due {
                            commands.push(Command::StartTimer { timer: Timer::AsyncTimeout { step }, due });
                        }
                    } else {
                        self.succeed_unit(at, unit, attempt, output);
                    }
                    self.advance(at, &mut commands);
                }
            }
            Event::AttemptFailed { step, attempt, failure, logs } => {
                if let Some(unit) = self.unit_in(&step, |phase| in_flight(phase, attempt)) {
                    self.record_logs(&step, attempt, CallPhase::Invoke, logs);
                    self.attempt_failed(at, unit, attempt, failure, &mut commands);
                    self.advance(at, &mut commands);
                }
            }
            Event::ChildWaiting { step, attempt } => {
                if let Some(unit) = self.unit_in(&step, |phase| phase == StepPhase::Running { attempt }) {
                    self.unit_mut(unit).phase = StepPhase::ChildWaiting { attempt };
                    let child = self.child_execution_id(unit, attempt);
                    self.record(at, TimelineKind::ChildWaiting { step, attempt, child });
                    self.advance(at, &mut commands);
                }
            }
            Event::TimerFired { timer } => self.timer_fired(at, timer, &mut commands),
            Event::AsyncStepSucceeded { step, output } => {
                if let Some(unit) = self.waiting_unit(&step) {
                    let attempt = self.unit(unit).attempts;
                    self.succeed_unit(at, unit, attempt, output);
                    self.advance(at, &mut commands);
                }
            }
            Event::AsyncStepFailed { step, message } => {
                if let Some(unit) = self.waiting_unit(&step) {
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
            Event::CompensationSucceeded { step, attempt, logs } => {
                if let Some(unit) = self.unit_in(&step, |phase| phase == StepPhase::Compensating { attempt }) {
                    self.record_logs(&step, attempt, CallPhase::Compensate, logs);
                    self.unit_mut(unit).phase = StepPhase::Compensated;
                    self.record(at, TimelineKind::StepCompensated { step, attempt });
                    self.advance(at, &mut commands);
                }
            }
            Event::CompensationFailed { step, attempt, failure, logs } => {
                if let Some(unit) = self.unit_in(&step, |phase| phase == StepPhase::Compensating { attempt }) {
                    self.record_logs(&step, attempt, CallPhase::Compensate, logs);
                    self.compensation_failed(at, unit, attempt, failure, &mut commands);
                    self.advance(at, &mut commands);
                }
            }
            Event::RollbackRequested { reason } => self.rollback_requested(at, reason, &mut commands),
        }
        commands
    }

    /// The commands still outstanding in the current state: calls in flight
    /// and armed timers. After replaying a recorded log, performing these
    /// resumes the execution where it stopped.
    pub fn outstanding_commands(&self) -> Vec<Command> {
        let mut commands = Vec::new();
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
        if let (true, Some(timeout), Some(started_at)) =
            (self.status.is_forward(), self.workflow.timeout(), self.started_at)
        {
            commands.push(Command::StartTimer { timer: Timer::WorkflowTimeout, due: started_at.plus(timeout) });
        }
        if self.status.is_final() {
            commands.push(Command::Finish);
        }
        commands
    }

    /// Every unit that exists so far, node by node.
    pub fn units(&self) -> impl Iterator<Item = Unit> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .flat_map(|(node, state)| (0..state.elements.len()).map(move |element| Unit { node, element }))
    }

    fn waiting_unit(&self, step: &StepId) -> Option<Unit> {
        self.unit_in(step, |phase| matches!(phase, StepPhase::Waiting { .. }))
    }

    /// Whether `step` (a label) is an async step waiting to be completed from outside.
    pub fn is_waiting(&self, step: &StepId) -> bool {
        self.waiting_unit(step).is_some()
    }

    fn unit_in(&self, step: &StepId, phase: impl Fn(StepPhase) -> bool) -> Option<Unit> {
        let unit = self.unit_of(step)?;
        phase(self.unit(unit).phase).then_some(unit)
    }

    fn record(&mut self, at: Timestamp, kind: TimelineKind) {
        self.timeline.push(TimelineEntry { at, kind });
    }

    fn record_logs(&mut self, step: &StepId, attempt: u32, phase: CallPhase, logs: Vec<LogLine>) {
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

    fn render_input(&self, unit: Unit) -> Result<Value, String> {
        self.workflow.steps()[unit.node].input.render(&self.scope(Some(unit)))
    }

    fn compensation_data(&self, unit: Unit) -> Value {
        let state = self.unit(unit);
        state.compensation_data.clone().or_else(|| state.output.clone()).unwrap_or(Value::Null)
    }

    /// Starts attempt `attempt` of a unit, or fails it if its input cannot be rendered.
    fn start_attempt(&mut self, at: Timestamp, unit: Unit, attempt: u32, commands: &mut Vec<Command>) {
        match self.render_input(unit) {
            Ok(input) => {
                self.unit_mut(unit).phase = StepPhase::Running { attempt };
                commands.push(Command::Invoke { unit, attempt, input });
            }
            Err(message) => {
                let failure = StepFailure::new(FailureKind::InputMapping, format!("cannot build the input: {message}"));
                self.unit_mut(unit).attempts = attempt.saturating_sub(1);
                self.fail_unit(at, unit, failure);
            }
        }
    }

    fn succeed_unit(&mut self, at: Timestamp, unit: Unit, attempt: u32, output: Value) {
        let state = self.unit_mut(unit);
        state.phase = StepPhase::Succeeded;
        state.output = Some(output);
        state.finished_at = Some(at);
        self.completion_order.push(unit);
        let step = self.label(unit);
        self.record(at, TimelineKind::StepSucceeded { step, attempt });
        if self.nodes[unit.node].elements.iter().all(|element| element.phase == StepPhase::Succeeded) {
            self.succeed_node(at, unit.node);
        }
    }

    /// Marks a node succeeded and builds its output from its units.
    fn succeed_node(&mut self, at: Timestamp, node: usize) {
        let step = &self.workflow.steps()[node];
        let outputs = self.nodes[node].elements.iter().map(|e| e.output.clone().unwrap_or(Value::Null));
        let output = if step.is_hook() {
            let list: Vec<Value> = outputs.collect();
            let handlers: Map<String, Value> = self
                .handlers_of(node)
                .iter()
                .zip(&list)
                .map(|(handler, output)| (handler.plugin.clone(), serde_json::json!({ "output": output })))
                .collect();
            serde_json::json!({ "output": list, "handlers": handlers })
        } else if step.for_each.is_some() {
            Value::Array(outputs.collect())
        } else {
            self.nodes[node].elements[0].output.clone().unwrap_or(Value::Null)
        };
        let state = &mut self.nodes[node];
        state.phase = NodePhase::Succeeded;
        state.output = Some(output);
        state.finished_at = Some(at);
    }

    fn attempt_failed(
        &mut self,
        at: Timestamp,
        unit: Unit,
        attempt: u32,
        failure: StepFailure,
        commands: &mut Vec<Command>,
    ) {
        let step = self.label(unit);
        let policy = &self.workflow.steps()[unit.node].retry;
        let retry = self.status.is_forward() && failure.kind.is_retryable(policy) && attempt < policy.max_attempts;
        if retry {
            let delay = policy.backoff_before(attempt + 1);
            let due = at.plus(delay);
            let state = self.unit_mut(unit);
            state.phase = StepPhase::RetryWaiting { attempt: attempt + 1, due };
            state.error = Some(failure.clone());
            self.record(
                at,
                TimelineKind::StepAttemptFailed {
                    step: step.clone(),
                    attempt,
                    error: failure,
                    retry_in_ms: Some(delay.as_millis() as u64),
                },
            );
            commands.push(Command::StartTimer { timer: Timer::Retry { step, attempt: attempt + 1 }, due });
        } else {
            self.record(
                at,
                TimelineKind::StepAttemptFailed { step, attempt, error: failure.clone(), retry_in_ms: None },
            );
            self.fail_unit(at, unit, failure);
        }
    }

    fn fail_unit(&mut self, at: Timestamp, unit: Unit, failure: StepFailure) {
        let step = self.label(unit);
        let state = self.unit_mut(unit);
        state.phase = StepPhase::Failed;
        state.error = Some(failure.clone());
        state.finished_at = Some(at);
        let attempts = state.attempts;
        self.record(at, TimelineKind::StepFailed { step: step.clone(), attempts, error: failure.clone() });
        let node = &mut self.nodes[unit.node];
        node.phase = NodePhase::Failed;
        node.finished_at = Some(at);
        self.begin_rollback(at, Some(step), failure);
    }

    /// A failure of the node itself (its condition, its fan-out list, its transform).
    fn fail_node(&mut self, at: Timestamp, node: usize, failure: StepFailure) {
        let step = self.workflow.steps()[node].id.clone();
        let state = &mut self.nodes[node];
        state.phase = NodePhase::Failed;
        state.error = Some(failure.clone());
        state.started_at.get_or_insert(at);
        state.finished_at = Some(at);
        self.record(at, TimelineKind::StepFailed { step: step.clone(), attempts: 0, error: failure.clone() });
        self.begin_rollback(at, Some(step), failure);
    }

    /// Stops starting units; units waiting to retry or for the outside world
    /// are cancelled (a waiting child execution is rolled back like a
    /// completed unit). Compensation begins once the units in flight have
    /// settled (see [`Machine::advance`]).
    fn begin_rollback(&mut self, at: Timestamp, step: Option<StepId>, failure: StepFailure) {
        if !self.status.is_forward() {
            return;
        }
        self.status = ExecutionStatus::Compensating;
        self.error = Some(ExecutionError { step, failure });
        let units: Vec<Unit> = self.units().collect();
        for unit in units {
            match self.unit(unit).phase {
                StepPhase::RetryWaiting { .. } | StepPhase::Waiting { .. } => {
                    let state = self.unit_mut(unit);
                    state.phase = StepPhase::Cancelled;
                    state.finished_at = Some(at);
                    let step = self.label(unit);
                    self.record(at, TimelineKind::StepCancelled { step });
                }
                StepPhase::ChildWaiting { .. } => self.completion_order.push(unit),
                _ => {}
            }
        }
    }

    fn rollback_requested(&mut self, at: Timestamp, reason: String, commands: &mut Vec<Command>) {
        let failure = StepFailure::new(FailureKind::Cancelled, reason.clone());
        if self.status.is_forward() && self.is_started() {
            self.record(at, TimelineKind::RollbackRequested { reason });
            self.begin_rollback(at, None, failure);
            self.advance(at, commands);
        } else if self.status == ExecutionStatus::Succeeded {
            self.record(at, TimelineKind::RollbackRequested { reason });
            self.status = ExecutionStatus::Compensating;
            self.error = Some(ExecutionError { step: None, failure });
            self.finished_at = None;
            self.compensation_queue = None;
            self.advance(at, commands);
        }
    }

    fn timer_fired(&mut self, at: Timestamp, timer: Timer, commands: &mut Vec<Command>) {
        match timer {
            Timer::Retry { step, attempt } => {
                let due_now = |phase| matches!(phase, StepPhase::RetryWaiting { attempt: a, .. } if a == attempt);
                if let Some(unit) = self.unit_in(&step, due_now) {
                    if self.status.is_forward() {
                        self.start_attempt(at, unit, attempt, commands);
                        self.advance(at, commands);
                    }
                }
            }
            Timer::CompensationRetry { step, attempt } => {
                let due_now =
                    |phase| matches!(phase, StepPhase::CompensationRetryWaiting { attempt: a, .. } if a == attempt);
                if let Some(unit) = self.unit_in(&step, due_now) {
                    self.start_compensation(unit, attempt, commands);
                }
            }
            Timer::AsyncTimeout { step } => {
                if let Some(unit) = self.waiting_unit(&step) {
                    let timeout = self.workflow.steps()[unit.node].timeout.unwrap_or_default();
                    let message = format!("not completed within its timeout of {} ms", timeout.as_millis());
                    self.fail_unit(at, unit, StepFailure::new(FailureKind::TimedOut, message));
                    self.advance(at, commands);
                }
            }
            Timer::WorkflowTimeout => {
                if self.status.is_forward() {
                    let timeout = self.workflow.timeout().unwrap_or_default();
                    let message =
                        format!("the workflow did not finish within its timeout of {} ms", timeout.as_millis());
                    self.record(at, TimelineKind::ExecutionTimedOut);
                    self.begin_rollback(at, None, StepFailure::new(FailureKind::TimedOut, message));
                    self.advance(at, commands);
                }
            }
        }
    }

    fn start_compensation(&mut self, unit: Unit, attempt: u32, commands: &mut Vec<Command>) {
        self.unit_mut(unit).phase = StepPhase::Compensating { attempt };
        commands.push(Command::Compensate { unit, attempt, data: self.compensation_data(unit) });
    }

    fn compensation_failed(
        &mut self,
        at: Timestamp,
        unit: Unit,
        attempt: u32,
        failure: StepFailure,
        commands: &mut Vec<Command>,
    ) {
        let step = self.label(unit);
        let policy = &self.workflow.steps()[unit.node].retry;
        if failure.kind.is_retryable(policy) && attempt < policy.max_attempts {
            let delay = policy.backoff_before(attempt + 1);
            let due = at.plus(delay);
            let state = self.unit_mut(unit);
            state.phase = StepPhase::CompensationRetryWaiting { attempt: attempt + 1, due };
            state.compensation_error = Some(failure.clone());
            self.record(
                at,
                TimelineKind::CompensationAttemptFailed {
                    step: step.clone(),
                    attempt,
                    error: failure,
                    retry_in_ms: Some(delay.as_millis() as u64),
                },
            );
            let timer = Timer::CompensationRetry { step, attempt: attempt + 1 };
            commands.push(Command::StartTimer { timer, due });
        } else {
            let state = self.unit_mut(unit);
            state.phase = StepPhase::CompensationFailed;
            state.compensation_error = Some(failure.clone());
            let attempts = state.compensation_attempts;
            self.record(
                at,
                TimelineKind::CompensationAttemptFailed {
                    step: step.clone(),
                    attempt,
                    error: failure.clone(),
                    retry_in_ms: None,
                },
            );
            self.record(at, TimelineKind::CompensationFailed { step, attempts, error: failure });
        }
    }

    /// Moves the execution forward after a change: starts ready nodes and
    /// units, finishes, or drives the compensation sequence.
    fn advance(&mut self, at: Timestamp, commands: &mut Vec<Command>) {
        if self.status.is_forward() {
            self.start_ready_nodes(at, commands);
        }
        if self.status.is_forward() && self.nodes.iter().all(NodeState::is_settled) {
            self.finish_successfully(at, commands);
        }
        if self.status.is_forward() {
            let busy = self.nodes.iter().flat_map(|n| &n.elements).any(|e| e.phase.is_busy());
            self.status = if busy { ExecutionStatus::Running } else { ExecutionStatus::Waiting };
        }
        if self.status == ExecutionStatus::Compensating {
            self.advance_compensation(at, commands);
        }
    }

    /// Starts every node whose dependencies are settled, and the units of
    /// started nodes that their concurrency allows; repeats while starting a
    /// node settles it at once (skipped, transform, empty fan-out or hook).
    fn start_ready_nodes(&mut self, at: Timestamp, commands: &mut Vec<Command>) {
        loop {
            let mut settled_one = false;
            for node in 0..self.nodes.len() {
                if !self.status.is_forward() {
                    return;
                }
                let ready = self.nodes[node].phase == NodePhase::Pending
                    && self.workflow.steps()[node].dependencies.iter().all(|&d| self.nodes[d].is_settled());
                if ready {
                    self.start_node(at, node);
                    settled_one |= self.nodes[node].is_settled();
                }
                if self.nodes[node].phase == NodePhase::Started {
                    self.start_units(at, node, commands);
                }
            }
            if !settled_one {
                return;
            }
        }
    }

    /// Decides a ready node: skipped, failed, settled at once, or expanded into units.
    fn start_node(&mut self, at: Timestamp, node: usize) {
        let workflow = self.workflow.clone();
        let step = &workflow.steps()[node];
        self.nodes[node].started_at = Some(at);
        if let Some(&skipped) =
            step.data_dependencies.iter().find(|&&d| matches!(self.nodes[d].phase, NodePhase::Skipped { .. }))
        {
            let reason = format!("needs the output of skipped step `{}`", workflow.steps()[skipped].id);
            return self.skip_node(at, node, reason);
        }
        if let Some(condition) = &step.when {
            match condition.evaluate_condition(&self.scope(None)) {
                Ok(true) => {}
                Ok(false) => return self.skip_node(at, node, format!("condition `{}` is false", condition.source())),
                Err(message) => {
                    let failure = StepFailure::new(FailureKind::Expression, format!("condition {message}"));
                    return self.fail_node(at, node, failure);
                }
            }
        }
        let count = match (&step.kind, &step.for_each) {
            (StepKind::Transform(expression), _) => {
                let step_id = step.id.clone();
                self.nodes[node].elements = vec![StepState::new()];
                let unit = Unit::single(node);
                self.unit_mut(unit).attempts = 1;
                self.unit_mut(unit).started_at = Some(at);
                self.record(at, TimelineKind::StepStarted { step: step_id.clone(), attempt: 1 });
                match expression.evaluate(&self.scope(None)) {
                    Ok(output) => {
                        let state = self.unit_mut(unit);
                        state.phase = StepPhase::Succeeded;
                        state.output = Some(output);
                        state.finished_at = Some(at);
                        self.record(at, TimelineKind::StepSucceeded { step: step_id, attempt: 1 });
                        self.succeed_node(at, node);
                    }
                    Err(message) => {
                        let failure = StepFailure::new(FailureKind::Expression, format!("transform {message}"));
                        self.record(
                            at,
                            TimelineKind::StepAttemptFailed {
                                step: step_id,
                                attempt: 1,
                                error: failure.clone(),
                                retry_in_ms: None,
                            },
                        );
                        self.fail_unit(at, unit, failure);
                    }
                }
                return;
            }
            (StepKind::Hook, _) => self.handlers_of(node).len(),
            (_, Some(for_each)) => match for_each.items.resolve(&self.scope(None)) {
                Ok(Value::Array(items)) => {
                    let items = items.clone();
                    let count = items.len();
                    self.nodes[node].items = Some(items);
                    count
                }
                Ok(other) => {
                    let message = format!("`for_each` = `{}` is not an array but {other}", for_each.items);
                    return self.fail_node(at, node, StepFailure::new(FailureKind::InputMapping, message));
                }
                Err(message) => {
                    let failure = StepFailure::new(FailureKind::InputMapping, format!("`for_each`: {message}"));
                    return self.fail_node(at, node, failure);
                }
            },
            _ => 1,
        };
        self.nodes[node].elements = vec![StepState::new(); count];
        self.nodes[node].phase = NodePhase::Started;
        if step.is_hook() || step.for_each.is_some() {
            self.record(at, TimelineKind::StepExpanded { step: step.id.clone(), units: count });
        }
        if count == 0 {
            self.succeed_node(at, node);
        }
    }

    fn skip_node(&mut self, at: Timestamp, node: usize, reason: String) {
        let step = self.workflow.steps()[node].id.clone();
        let state = &mut self.nodes[node];
        state.phase = NodePhase::Skipped { reason: reason.clone() };
        state.finished_at = Some(at);
        self.record(at, TimelineKind::StepSkipped { step, reason });
    }

    /// Starts pending units of a started node, in order, up to its concurrency:
    /// a fan-out's `max_concurrency`, one at a time for a hook's handlers.
    fn start_units(&mut self, at: Timestamp, node: usize, commands: &mut Vec<Command>) {
        let step = &self.workflow.steps()[node];
        let limit = step.for_each.as_ref().map_or(1, |for_each| for_each.max_concurrency);
        let mut active = self.nodes[node].elements.iter().filter(|e| e.phase.is_active()).count();
        for element in 0..self.nodes[node].elements.len() {
            if active >= limit || !self.status.is_forward() {
                return;
            }
            if self.nodes[node].elements[element].phase == StepPhase::Pending {
                self.start_attempt(at, Unit { node, element }, 1, commands);
                active += 1;
            }
        }
    }

    fn finish_successfully(&mut self, at: Timestamp, commands: &mut Vec<Command>) {
        let rendered = match self.workflow.output() {
            Some(template) => template.render(&self.scope(None)),
            None => Ok(Value::Object(
                self.workflow
                    .steps()
                    .iter()
                    .zip(&self.nodes)
                    .filter(|(step, _)| !step.is_hook())
                    .map(|(step, state)| (step.id.to_string(), state.output.clone().unwrap_or(Value::Null)))
                    .collect(),
            )),
        };
        match rendered {
            Ok(output) => {
                self.output = Some(output);
                self.status = ExecutionStatus::Succeeded;
                self.finished_at = Some(at);
                self.record(at, TimelineKind::ExecutionSucceeded);
                commands.push(Command::Finish);
            }
            Err(message) => {
                let failure = StepFailure::new(
                    FailureKind::OutputMapping,
                    format!("cannot build the workflow output: {message}"),
                );
                self.record(at, TimelineKind::OutputFailed { error: failure.clone() });
                self.begin_rollback(at, None, failure);
            }
        }
    }

    /// Compensates completed units one at a time, most recently completed
    /// first, once no unit is in flight any more.
    fn advance_compensation(&mut self, at: Timestamp, commands: &mut Vec<Command>) {
        if self.compensation_queue.is_none() {
            if self.nodes.iter().flat_map(|n| &n.elements).any(|e| matches!(e.phase, StepPhase::Running { .. })) {
                return; // let running units settle first
            }
            let queue = self.completion_order.iter().rev().copied().collect();
            self.compensation_queue = Some(queue);
        }
        let queue = self.compensation_queue.clone().unwrap_or_default();
        for unit in queue {
            match self.unit(unit).phase {
                StepPhase::Compensated | StepPhase::CompensationFailed => continue,
                StepPhase::Compensating { .. } | StepPhase::CompensationRetryWaiting { .. } => return,
                _ => {
                    self.start_compensation(unit, 1, commands);
                    return;
                }
            }
        }
        let any_failed = self.units().any(|unit| self.unit(unit).phase == StepPhase::CompensationFailed);
        self.status = if any_failed { ExecutionStatus::Failed } else { ExecutionStatus::Compensated };
        self.finished_at = Some(at);
        let kind = if any_failed { TimelineKind::ExecutionFailed } else { TimelineKind::ExecutionCompensated };
        self.record(at, kind);
        commands.push(Command::Finish);
    }
}

/// Whether a unit in `phase` awaits the result of attempt `attempt`.
fn in_flight(phase: StepPhase, attempt: u32) -> bool {
    matches!(phase, StepPhase::Running { attempt: a } | StepPhase::ChildWaiting { attempt: a } if a == attempt)
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
