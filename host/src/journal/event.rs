//! [`Event`]: what happened to an execution, in the order it was recorded.
//!
//! The log of an execution is its events; replaying them through the state
//! machine rebuilds its state. Every decision that depends on code (a `when`
//! condition, a transform's output, a fan-out's list) is an event too
//! ([`Event::NodeDecided`]), so a replay never depends on today's code.

use super::cost::CallCost;
use super::failure::StepFailure;
use super::ids::{PluginName, StepId};
use super::log_line::LogLine;
use super::time::Timestamp;
use super::unit::UnitId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The version of the log format new executions write. Version 1 logs
/// (written before decisions were recorded) are replayed by recomputing
/// their decisions, as they were executed. Logs before version 3 named the
/// child execution of a fan-out element `{parent}.{step}-{index}.{attempt}`,
/// which a step with the id `{step}-{index}` names too; they keep that name,
/// so that their children are found again (see
/// `Machine::child_execution_id`).
pub const LOG_VERSION: u32 = 3;

fn log_version_1() -> u32 {
    1
}

/// Something that happened to an execution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The execution began, pinned to these plugin versions (name -> content
    /// hash), hook handlers and child workflow definitions.
    ExecutionStarted {
        /// The version of every plugin the execution uses, to the end.
        #[serde(default)]
        plugins: BTreeMap<String, String>,
        /// The tenant's handlers of each hook, in the order they run.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        handlers: BTreeMap<String, Vec<HandlerBinding>>,
        /// The definitions of the workflows it runs as children, as JSON
        /// documents (the workflow module reads them).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        workflows: BTreeMap<String, Value>,
        /// The log format ([`LOG_VERSION`]; 1 when absent).
        #[serde(default = "log_version_1")]
        log_version: u32,
    },
    /// A node's code-dependent decision, made once and replayed from here.
    NodeDecided {
        /// The step or hook.
        step: StepId,
        /// What was decided.
        decision: NodeDecision,
    },
    /// An attempt of `invoke` is about to be made.
    AttemptStarted {
        /// The unit.
        step: UnitId,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// An attempt of `invoke` succeeded.
    AttemptSucceeded {
        /// The unit.
        step: UnitId,
        /// Attempt number.
        attempt: u32,
        /// The step's output.
        output: Value,
        /// Compensation data, if the step returned any.
        compensation: Option<Value>,
        /// What the guest logged.
        logs: Vec<LogLine>,
        /// What the call cost (absent in logs written before costs were recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost: Option<CallCost>,
    },
    /// An attempt of `invoke` returned that the step skipped itself (a
    /// `skippable-step` guest's `skipped` outcome): there is nothing to
    /// compensate, and the nodes that read its output are skipped.
    AttemptSkipped {
        /// The unit.
        step: UnitId,
        /// Attempt number.
        attempt: u32,
        /// Why, in the guest's words.
        reason: String,
        /// What the guest logged.
        logs: Vec<LogLine>,
        /// What the call cost.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost: Option<CallCost>,
    },
    /// An attempt of `invoke` failed.
    AttemptFailed {
        /// The unit.
        step: UnitId,
        /// Attempt number.
        attempt: u32,
        /// Why.
        failure: StepFailure,
        /// What the guest logged.
        logs: Vec<LogLine>,
        /// What the call cost (absent in logs written before costs were recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost: Option<CallCost>,
    },
    /// An attempt of `compensate` is about to be made.
    CompensationStarted {
        /// The unit.
        step: UnitId,
        /// Compensation attempt number, from 1.
        attempt: u32,
    },
    /// An attempt of `compensate` succeeded.
    CompensationSucceeded {
        /// The unit.
        step: UnitId,
        /// Compensation attempt number.
        attempt: u32,
        /// What the guest logged.
        logs: Vec<LogLine>,
        /// What the call cost (absent in logs written before costs were recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost: Option<CallCost>,
    },
    /// An attempt of `compensate` failed.
    CompensationFailed {
        /// The unit.
        step: UnitId,
        /// Compensation attempt number.
        attempt: u32,
        /// Why.
        failure: StepFailure,
        /// What the guest logged.
        logs: Vec<LogLine>,
        /// What the call cost (absent in logs written before costs were recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost: Option<CallCost>,
    },
    /// A timer the machine armed fired.
    TimerFired {
        /// Which timer.
        timer: Timer,
    },
    /// An async step was reported done from outside, with its output.
    AsyncStepSucceeded {
        /// The unit.
        step: UnitId,
        /// Its output.
        output: Value,
        /// The reporter's idempotency key: the same report again gets the same answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// An async step was reported failed from outside.
    AsyncStepFailed {
        /// The unit.
        step: UnitId,
        /// What went wrong.
        message: String,
        /// The reporter's idempotency key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// The child execution of a workflow step waits for the outside world
    /// (an async step of its own); the step finishes when the child does.
    ChildWaiting {
        /// The unit.
        step: UnitId,
        /// The attempt whose child waits.
        attempt: u32,
    },
    /// Someone (an operator, or the parent execution rolling back) asked for
    /// the execution to be rolled back: steps in flight settle, then every
    /// completed step is compensated, even after the execution succeeded.
    RollbackRequested {
        /// Why.
        reason: String,
    },
    /// An operator asked for a `failed` execution's failed compensations to
    /// be tried again (fresh attempts, the same idempotency keys) and the
    /// rollback to go on.
    RetryRequested {
        /// Why.
        reason: String,
    },
}

/// A node's decision that depends on code: its `when` condition, its
/// transform, its `for_each` list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum NodeDecision {
    /// The node runs (its condition held).
    Run,
    /// The node is skipped (its condition is false).
    Skip {
        /// Why, for people.
        reason: String,
    },
    /// The node fails (its condition, list or transform could not be evaluated).
    Fail {
        /// Why.
        failure: StepFailure,
    },
    /// A fan-out runs one unit per item.
    Expand {
        /// The items (`$.item` of each unit).
        items: Vec<Value>,
    },
    /// A transform produced its output.
    Output {
        /// The output.
        output: Value,
    },
}

/// A timer the machine asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Timer {
    /// Start attempt `attempt` of a unit after its backoff.
    Retry {
        /// The unit.
        step: UnitId,
        /// The attempt it starts.
        attempt: u32,
    },
    /// Start compensation attempt `attempt` of a unit after its backoff.
    CompensationRetry {
        /// The unit.
        step: UnitId,
        /// The compensation attempt it starts.
        attempt: u32,
    },
    /// An async step was not completed within its `timeout_ms`.
    AsyncTimeout {
        /// The unit.
        step: UnitId,
    },
    /// The workflow's `timeout_ms` elapsed.
    WorkflowTimeout,
}

impl Timer {
    /// Whether the timer is a deadline (which may lie far ahead) rather than
    /// a backoff the execution waits out while it runs.
    pub fn is_deadline(&self) -> bool {
        matches!(self, Timer::AsyncTimeout { .. } | Timer::WorkflowTimeout)
    }
}

/// One handler pinned to a hook for an execution: a plugin and its place in the order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerBinding {
    /// The plugin run as the handler.
    pub plugin: PluginName,
    /// Its priority (lower runs first).
    pub priority: i32,
}

#[cfg(test)]
impl Event {
    /// A start that pins no plugin, handler or child workflow: for tests
    /// that drive a state machine without a store or plugins.
    pub(crate) fn started_pinning_nothing() -> Self {
        Event::ExecutionStarted {
            plugins: Default::default(),
            handlers: Default::default(),
            workflows: Default::default(),
            log_version: LOG_VERSION,
        }
    }
}

/// One recorded event and when it happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    pub event: Event,
}

/// One event as the stores keep it: when it happened and its JSON. The
/// owner encodes each event once, before the state machine takes it, so the
/// event is neither copied for the store nor encoded twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedEvent {
    /// When it happened.
    pub at: Timestamp,
    /// The event as JSON.
    pub json: Box<str>,
}

impl EncodedEvent {
    /// Encodes `event`.
    pub fn new(at: Timestamp, event: &Event) -> Self {
        // An event holds JSON values and plain fields only: it always encodes.
        let json = serde_json::to_string(event).expect("events encode as JSON");
        Self { at, json: json.into_boxed_str() }
    }

    /// The event again.
    pub fn decode(&self) -> Result<RecordedEvent, serde_json::Error> {
        Ok(RecordedEvent { at: self.at, event: serde_json::from_str(&self.json)? })
    }
}

impl From<&RecordedEvent> for EncodedEvent {
    fn from(recorded: &RecordedEvent) -> Self {
        Self::new(recorded.at, &recorded.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_written_before_versions_reads_as_version_1() {
        let old = serde_json::json!({"type": "execution_started", "plugins": {}});
        let Event::ExecutionStarted { log_version, .. } = serde_json::from_value(old).unwrap() else {
            panic!("not a start")
        };
        assert_eq!(log_version, 1);
    }

    #[test]
    fn unit_ids_keep_their_text_form_in_events() {
        let event = Event::AttemptStarted { step: "reserve[3]".parse().unwrap(), attempt: 2 };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json, serde_json::json!({"type": "attempt_started", "step": "reserve[3]", "attempt": 2}));
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
    }
}
