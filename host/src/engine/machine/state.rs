//! The state the machine keeps per execution, node and unit, and nothing
//! else: no rules live here (they are in the sibling rooms `progress`,
//! `retry` and `rollback`).

use crate::journal::{CallCost, ExecutionId, HandlerBinding, PluginName, StepFailure, Timestamp, UnitId};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// One unit of work: element `element` of node `node` (0 for a plain step).
/// An index into the machine's state; [`UnitId`] is its name in the log.
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
    /// `invoke` said the step had nothing to do (see [`StepState::skip_reason`]).
    Skipped,
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
    pub(super) fn is_busy(self) -> bool {
        matches!(self, Self::Running { .. } | Self::RetryWaiting { .. })
    }

    /// Whether the unit started and has not ended its forward life.
    pub(crate) fn is_active(self) -> bool {
        self.is_busy() || matches!(self, Self::Waiting { .. } | Self::ChildWaiting { .. })
    }

    /// Whether the unit is being (or was) compensated.
    pub fn is_compensation(self) -> bool {
        matches!(
            self,
            Self::Compensating { .. }
                | Self::CompensationRetryWaiting { .. }
                | Self::Compensated
                | Self::CompensationFailed
        )
    }

    /// Whether a unit in this phase awaits the result of attempt `attempt`.
    pub(super) fn awaits_attempt(self, attempt: u32) -> bool {
        matches!(self, Self::Running { attempt: a } | Self::ChildWaiting { attempt: a } if a == attempt)
    }
}

/// How an async step was completed from outside, kept to answer a repeated
/// report with the same idempotency key the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The reporter's idempotency key.
    pub key: Option<String>,
    /// Whether it reported success.
    pub succeeded: bool,
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
    /// `compensate` attempts made before an operator's retry: the retry
    /// policy counts the attempts after it afresh.
    pub compensation_attempts_before_retry: u32,
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
    /// For an async step: how it was completed from outside.
    pub completion: Option<Completion>,
    /// What its calls (attempts and compensations) cost, summed.
    pub cost: CallCost,
    /// It failed for good, and its step's `on_permanent_failure` let the
    /// execution go on.
    pub tolerated: bool,
    /// Why its `invoke` skipped it, in the guest's words.
    pub skip_reason: Option<String>,
}

impl StepState {
    pub(super) fn new() -> Self {
        Self {
            phase: StepPhase::Pending,
            attempts: 0,
            compensation_attempts: 0,
            compensation_attempts_before_retry: 0,
            output: None,
            compensation_data: None,
            error: None,
            compensation_error: None,
            started_at: None,
            finished_at: None,
            completion: None,
            cost: CallCost::default(),
            tolerated: false,
            skip_reason: None,
        }
    }
}

/// Where one node (step or hook) is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodePhase {
    /// Waiting for its dependencies.
    Pending,
    /// Ready, its code-dependent decision (condition, list, transform) made
    /// and waiting to be recorded before it is applied.
    Deciding,
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
    pub(super) fn new() -> Self {
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
    pub(super) fn is_settled(&self) -> bool {
        matches!(self.phase, NodePhase::Succeeded | NodePhase::Skipped { .. })
    }
}

/// What a unit's command runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A plugin's exports.
    Plugin(PluginName),
    /// A child execution of this workflow.
    Workflow(String),
}

/// Why an execution did not succeed: the unit that failed (none when the
/// workflow output could not be rendered or a rollback was requested) and its failure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExecutionError {
    /// The step (or element, or handler) that failed.
    pub step: Option<UnitId>,
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
    /// Child workflow definitions (JSON documents), by name.
    pub workflows: BTreeMap<String, Value>,
}
