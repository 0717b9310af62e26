//! The execution as JSON: what `stepwise run` prints and the API returns.
//!
//! Steps and hooks are listed apart. A plain step shows its one unit's
//! attempts, output and errors; a fan-out step adds its `elements`, a hook
//! its `handlers`, a workflow step the `child_execution_ids` it started.

use super::machine::{ExecutionError, Machine, NodePhase, NodeState, StepPhase, StepState, Unit};
use super::timeline::TimelineEntry;
use crate::journal::{CallCost, ExecutionId, ExecutionStatus, PluginName, StepFailure, StepId, Timestamp, UnitId};
use crate::store::Ownership;
use crate::workflow::StepKind;
use serde::Serialize;
use serde_json::Value;

/// A step's (or unit's) status as shown to people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Its condition was false, or a step whose output it needs was skipped.
    Skipped,
    /// An attempt is in flight.
    Running,
    /// Waiting to retry after a failed attempt.
    Retrying,
    /// An async step (or a child execution) waiting for the outside world.
    Waiting,
    /// Succeeded (and not rolled back).
    Succeeded,
    /// Failed for good.
    Failed,
    /// Was waiting to retry when the execution rolled back.
    Cancelled,
    /// Being compensated.
    Compensating,
    /// Compensated.
    Compensated,
    /// Its compensation failed for good.
    CompensationFailed,
}

impl StepStatus {
    /// The status as its JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Skipped => "skipped",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Waiting => "waiting",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Compensating => "compensating",
            Self::Compensated => "compensated",
            Self::CompensationFailed => "compensation_failed",
        }
    }
}

impl From<StepPhase> for StepStatus {
    fn from(phase: StepPhase) -> Self {
        match phase {
            StepPhase::Pending => Self::Pending,
            StepPhase::Running { .. } => Self::Running,
            StepPhase::RetryWaiting { .. } => Self::Retrying,
            StepPhase::Waiting { .. } | StepPhase::ChildWaiting { .. } => Self::Waiting,
            StepPhase::Succeeded => Self::Succeeded,
            StepPhase::Skipped => Self::Skipped,
            StepPhase::Failed => Self::Failed,
            StepPhase::Cancelled => Self::Cancelled,
            StepPhase::Compensating { .. } | StepPhase::CompensationRetryWaiting { .. } => Self::Compensating,
            StepPhase::Compensated => Self::Compensated,
            StepPhase::CompensationFailed => Self::CompensationFailed,
        }
    }
}

/// The status of a node from its phase and its units: the most telling one
/// (a failure over work in flight over a finished rollback over success).
fn node_status(node: &NodeState) -> StepStatus {
    match &node.phase {
        NodePhase::Pending | NodePhase::Deciding => return StepStatus::Pending,
        // A step skipped after its failure may still be compensated (an async
        // step whose invoke returned): then its units say how that went.
        NodePhase::Skipped { .. } if node.elements.iter().all(|e| !e.phase.is_compensation()) => {
            return StepStatus::Skipped
        }
        NodePhase::Failed if node.elements.is_empty() => return StepStatus::Failed,
        _ => {}
    }
    // A unit whose failure its step tolerated (`on_permanent_failure`) lets
    // the step succeed: it counts as succeeded here (its own row says failed).
    let status_of = |unit: &StepState| {
        if unit.tolerated && unit.phase == StepPhase::Failed {
            StepStatus::Succeeded
        } else {
            unit.phase.into()
        }
    };
    if let [only] = node.elements.as_slice() {
        return status_of(only);
    }
    let statuses: Vec<StepStatus> = node.elements.iter().map(status_of).collect();
    for status in [
        StepStatus::Failed,
        StepStatus::CompensationFailed,
        StepStatus::Compensating,
        StepStatus::Running,
        StepStatus::Retrying,
        StepStatus::Waiting,
        StepStatus::Compensated,
    ] {
        if statuses.contains(&status) {
            return status;
        }
    }
    let nothing_active = node.elements.iter().all(|unit| !unit.phase.is_active());
    match node.phase {
        NodePhase::Succeeded => StepStatus::Succeeded,
        _ if statuses.contains(&StepStatus::Cancelled) => StepStatus::Cancelled,
        // Rolled back while its elements ran: some skipped themselves, the
        // others never started.
        _ if nothing_active && statuses.contains(&StepStatus::Skipped) => StepStatus::Skipped,
        _ => StepStatus::Running,
    }
}

/// How one unit (or a whole step) ran: status, attempts, results, timings.
#[derive(Clone, Debug, Serialize)]
pub struct RunView {
    /// Status.
    pub status: StepStatus,
    /// `invoke` attempts made (a fan-out step: over every element).
    pub attempts: u32,
    /// Output, once succeeded (a fan-out step: the element outputs, in order).
    pub output: Option<Value>,
    /// Compensation data it returned, if any.
    pub compensation_data: Option<Value>,
    /// The last `invoke` failure (a fan-out step: the failed element's).
    pub error: Option<StepFailure>,
    /// `compensate` attempts made.
    pub compensation_attempts: u32,
    /// The last `compensate` failure.
    pub compensation_error: Option<StepFailure>,
    /// When it started.
    #[serde(serialize_with = "crate::journal::time::rfc3339_opt")]
    pub started_at: Option<Timestamp>,
    /// When it succeeded, failed or was skipped.
    #[serde(serialize_with = "crate::journal::time::rfc3339_opt")]
    pub finished_at: Option<Timestamp>,
    /// The child executions its attempts started (workflow steps).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub child_execution_ids: Vec<ExecutionId>,
    /// What its guest calls (attempts and compensations) cost, summed
    /// (absent when it made none: a transform, a workflow step, a skip).
    #[serde(skip_serializing_if = "CallCost::is_empty")]
    pub cost: CallCost,
}

/// One unit in the execution JSON: a fan-out element or a hook handler.
#[derive(Clone, Debug, Serialize)]
pub struct UnitView {
    /// Its stable id: `step[3]` or `hook[plugin]`.
    pub id: UnitId,
    /// A fan-out element's position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// A hook handler's plugin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginName>,
    /// A hook handler's priority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Why its guest skipped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// How it ran.
    #[serde(flatten)]
    pub run: RunView,
}

/// One step in the execution JSON.
#[derive(Clone, Debug, Serialize)]
pub struct StepView {
    /// Step id.
    pub id: StepId,
    /// `plugin`, `workflow` or `transform`.
    pub kind: &'static str,
    /// Plugin name (plugin steps).
    pub plugin: Option<PluginName>,
    /// The child workflow (workflow steps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The expression (transform steps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
    /// Its condition, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Steps and hooks that must settle before this one (its references and `after`).
    pub depends_on: Vec<StepId>,
    /// Why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// How it ran.
    #[serde(flatten)]
    pub run: RunView,
    /// A fan-out's elements, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elements: Option<Vec<UnitView>>,
}

/// One hook point in the execution JSON.
#[derive(Clone, Debug, Serialize)]
pub struct HookView {
    /// Hook name.
    pub name: StepId,
    /// Its condition, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Steps and hooks that must settle before it runs.
    pub depends_on: Vec<StepId>,
    /// Status (`succeeded` with no handlers when the tenant bound none).
    pub status: StepStatus,
    /// Why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// The handler outputs, in order, once succeeded.
    pub output: Option<Value>,
    /// A failure of the hook itself (its condition).
    pub error: Option<StepFailure>,
    /// The tenant's handlers, in the order they run.
    pub handlers: Vec<UnitView>,
    /// When it started.
    #[serde(serialize_with = "crate::journal::time::rfc3339_opt")]
    pub started_at: Option<Timestamp>,
    /// When it finished.
    #[serde(serialize_with = "crate::journal::time::rfc3339_opt")]
    pub finished_at: Option<Timestamp>,
}

/// The execution JSON.
#[derive(Clone, Debug, Serialize)]
pub struct ExecutionView {
    /// Execution id.
    pub execution_id: ExecutionId,
    /// Workflow name.
    pub workflow: String,
    /// Status.
    pub status: ExecutionStatus,
    /// The tenant it runs for, if any.
    pub tenant: Option<String>,
    /// The execution that runs this one as a workflow step, if any.
    pub parent_execution_id: Option<ExecutionId>,
    /// The child executions its workflow steps started.
    pub child_execution_ids: Vec<ExecutionId>,
    /// The input it was started with.
    pub input: Value,
    /// The workflow output (when succeeded).
    pub output: Option<Value>,
    /// Why it did not succeed (when it did not).
    pub error: Option<ExecutionError>,
    /// When it started.
    #[serde(serialize_with = "crate::journal::time::rfc3339_opt")]
    pub started_at: Option<Timestamp>,
    /// When it finished.
    #[serde(serialize_with = "crate::journal::time::rfc3339_opt")]
    pub finished_at: Option<Timestamp>,
    /// The plugin versions it is pinned to: name -> content hash.
    pub plugins: std::collections::BTreeMap<String, String>,
    /// Every step, in workflow order.
    pub steps: Vec<StepView>,
    /// Every hook point, in workflow order.
    pub hooks: Vec<HookView>,
    /// The timeline.
    pub events: Vec<TimelineEntry>,
    /// The host that drives it now and its lease (absent when none does:
    /// it is over, or waits for the outside world).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Ownership>,
    /// What all its guest calls cost (steps, elements, hook handlers), summed.
    pub cost: CallCost,
}

fn unit_view(machine: &Machine, unit: Unit, state: &StepState) -> UnitView {
    let step = &machine.workflow().steps()[unit.node];
    let handler = if step.is_hook() { machine.handler(unit) } else { None };
    UnitView {
        id: machine.label(unit),
        index: step.for_each.as_ref().map(|_| unit.element),
        plugin: handler.map(|h| h.plugin.clone()),
        priority: handler.map(|h| h.priority),
        skip_reason: state.skip_reason.as_ref().map(|reason| format!("the step skipped itself: {reason}")),
        run: RunView {
            status: state.phase.into(),
            attempts: state.attempts,
            output: state.output.clone(),
            compensation_data: state.compensation_data.clone(),
            error: state.error.clone(),
            compensation_attempts: state.compensation_attempts,
            compensation_error: state.compensation_error.clone(),
            started_at: state.started_at,
            finished_at: state.finished_at,
            child_execution_ids: child_ids(machine, unit, state),
            cost: state.cost,
        },
    }
}

fn child_ids(machine: &Machine, unit: Unit, state: &StepState) -> Vec<ExecutionId> {
    match machine.workflow().steps()[unit.node].kind {
        StepKind::Workflow(_) => (1..=state.attempts).map(|a| machine.child_execution_id(unit, a)).collect(),
        _ => Vec::new(),
    }
}

fn units(machine: &Machine, node: usize) -> Vec<UnitView> {
    machine.nodes()[node]
        .elements
        .iter()
        .enumerate()
        .map(|(element, state)| unit_view(machine, Unit { node, element }, state))
        .collect()
}

/// Whether a unit failed for good (and may have been compensated since: an
/// async step whose invoke had started work).
fn failed_for_good(unit: &StepState) -> bool {
    let after_failure = matches!(
        unit.phase,
        StepPhase::Failed
            | StepPhase::Compensating { .. }
            | StepPhase::CompensationRetryWaiting { .. }
            | StepPhase::Compensated
            | StepPhase::CompensationFailed
    );
    after_failure && unit.error.is_some() && unit.output.is_none()
}

fn skip_reason(node: &NodeState) -> Option<String> {
    match &node.phase {
        NodePhase::Skipped { reason } => Some(reason.clone()),
        _ => None,
    }
}

fn step_view(machine: &Machine, node: usize) -> StepView {
    let workflow = machine.workflow();
    let step = &workflow.steps()[node];
    let state = &machine.nodes()[node];
    let elements = units(machine, node);
    let (kind, workflow_name, transform) = match &step.kind {
        StepKind::Plugin { .. } | StepKind::Hook => ("plugin", None, None),
        StepKind::Workflow(name) => ("workflow", Some(name.clone()), None),
        StepKind::Transform(expression) => ("transform", None, Some(expression.source().to_string())),
    };
    let single = (step.for_each.is_none()).then(|| state.elements.first()).flatten();
    let failed = state.elements.iter().find(|e| failed_for_good(e));
    StepView {
        id: step.id.clone(),
        kind,
        plugin: step.plugin().cloned(),
        workflow: workflow_name,
        transform,
        when: step.when.as_ref().map(|w| w.source().to_string()),
        depends_on: step.dependencies.iter().map(|&i| workflow.steps()[i].id.clone()).collect(),
        skip_reason: skip_reason(state),
        run: RunView {
            status: node_status(state),
            attempts: state.elements.iter().map(|e| e.attempts).sum(),
            output: state.output.clone(),
            compensation_data: single.and_then(|e| e.compensation_data.clone()),
            error: state.error.clone().or_else(|| failed.and_then(|e| e.error.clone())),
            compensation_attempts: state.elements.iter().map(|e| e.compensation_attempts).sum(),
            compensation_error: state.elements.iter().find_map(|e| e.compensation_error.clone()),
            started_at: state.started_at,
            finished_at: single.and_then(|e| e.finished_at).or(state.finished_at),
            child_execution_ids: elements.iter().flat_map(|e| e.run.child_execution_ids.clone()).collect(),
            cost: state.elements.iter().map(|e| &e.cost).sum(),
        },
        elements: step.for_each.as_ref().map(|_| elements),
    }
}

fn hook_view(machine: &Machine, node: usize) -> HookView {
    let workflow = machine.workflow();
    let step = &workflow.steps()[node];
    let state = &machine.nodes()[node];
    HookView {
        name: step.id.clone(),
        when: step.when.as_ref().map(|w| w.source().to_string()),
        depends_on: step.dependencies.iter().map(|&i| workflow.steps()[i].id.clone()).collect(),
        status: node_status(state),
        skip_reason: skip_reason(state),
        output: state.output.as_ref().and_then(|o| o.get("output")).cloned(),
        error: state.error.clone(),
        handlers: units(machine, node),
        started_at: state.started_at,
        finished_at: state.finished_at,
    }
}

impl ExecutionView {
    /// The view of a machine's current state.
    pub fn of(machine: &Machine) -> Self {
        let workflow = machine.workflow();
        let (hooks, steps): (Vec<usize>, Vec<usize>) =
            (0..workflow.steps().len()).partition(|&node| workflow.steps()[node].is_hook());
        let steps: Vec<StepView> = steps.into_iter().map(|node| step_view(machine, node)).collect();
        Self {
            execution_id: machine.execution_id().clone(),
            workflow: workflow.name().to_string(),
            status: machine.status(),
            tenant: machine.origin().tenant.clone(),
            parent_execution_id: machine.origin().parent.clone(),
            child_execution_ids: steps.iter().flat_map(|s| s.run.child_execution_ids.clone()).collect(),
            input: machine.input().clone(),
            output: machine.output().cloned(),
            error: machine.error().cloned(),
            started_at: machine.started_at(),
            finished_at: machine.finished_at(),
            plugins: machine.plugins().clone(),
            steps,
            hooks: hooks.into_iter().map(|node| hook_view(machine, node)).collect(),
            events: machine.timeline().to_vec(),
            owner: None,
            cost: machine.cost(),
        }
    }

    /// The view as a JSON value.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("an execution view is valid JSON")
    }
}
