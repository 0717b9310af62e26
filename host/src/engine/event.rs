//! Events (what happened) and commands (what to do next): the vocabulary
//! between the saga state machine and its driver. Events are what the store
//! records; replaying them through the machine rebuilds an execution.
//!
//! Events name the unit they concern by its stable label: the step id for a
//! plain step, `<step>[<index>]` for a fan-out element and `<hook>[<plugin>]`
//! for a hook handler (see [`super::machine::Unit`]).

use super::machine::Unit;
use crate::failure::StepFailure;
use crate::ids::StepId;
use crate::sandbox::LogLine;
use crate::tenants::HandlerBinding;
use crate::time::Timestamp;
use crate::workflow::WorkflowDefinition;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Something that happened to an execution, in the order it was recorded.
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
        /// The definitions of the workflows it runs as children.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        workflows: BTreeMap<String, WorkflowDefinition>,
    },
    /// An attempt of `invoke` is about to be made.
    AttemptStarted {
        /// The step.
        step: StepId,
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// An attempt of `invoke` succeeded.
    AttemptSucceeded {
        /// The step.
        step: StepId,
        /// Attempt number.
        attempt: u32,
        /// The step's output.
        output: Value,
        /// Compensation data, if the step returned any.
        compensation: Option<Value>,
        /// What the guest logged.
        logs: Vec<LogLine>,
    },
    /// An attempt of `invoke` failed.
    AttemptFailed {
        /// The step.
        step: StepId,
        /// Attempt number.
        attempt: u32,
        /// Why.
        failure: StepFailure,
        /// What the guest logged.
        logs: Vec<LogLine>,
    },
    /// An attempt of `compensate` is about to be made.
    CompensationStarted {
        /// The step.
        step: StepId,
        /// Compensation attempt number, from 1.
        attempt: u32,
    },
    /// An attempt of `compensate` succeeded.
    CompensationSucceeded {
        /// The step.
        step: StepId,
        /// Compensation attempt number.
        attempt: u32,
        /// What the guest logged.
        logs: Vec<LogLine>,
    },
    /// An attempt of `compensate` failed.
    CompensationFailed {
        /// The step.
        step: StepId,
        /// Compensation attempt number.
        attempt: u32,
        /// Why.
        failure: StepFailure,
        /// What the guest logged.
        logs: Vec<LogLine>,
    },
    /// A timer armed by [`Command::StartTimer`] fired.
    TimerFired {
        /// Which timer.
        timer: Timer,
    },
    /// An async step was reported done from outside, with its output.
    AsyncStepSucceeded {
        /// The step.
        step: StepId,
        /// Its output.
        output: Value,
    },
    /// An async step was reported failed from outside.
    AsyncStepFailed {
        /// The step.
        step: StepId,
        /// What went wrong.
        message: String,
    },
    /// The child execution of a workflow step waits for the outside world
    /// (an async step of its own); the step finishes when the child does.
    ChildWaiting {
        /// The step (or element).
        step: StepId,
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
}

/// A timer the machine asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Timer {
    /// Start attempt `attempt` of a step after its backoff.
    Retry {
        /// The step.
        step: StepId,
        /// The attempt it starts.
        attempt: u32,
    },
    /// Start compensation attempt `attempt` of a step after its backoff.
    CompensationRetry {
        /// The step.
        step: StepId,
        /// The compensation attempt it starts.
        attempt: u32,
    },
    /// An async step was not completed within its `timeout_ms`.
    AsyncTimeout {
        /// The step.
        step: StepId,
    },
    /// The workflow's `timeout_ms` elapsed.
    WorkflowTimeout,
}

impl Timer {
    /// Whether the timer is a deadline (which may lie far ahead and is
    /// re-armed on resume) rather than a backoff the driver waits out.
    pub fn is_deadline(&self) -> bool {
        matches!(self, Timer::AsyncTimeout { .. } | Timer::WorkflowTimeout)
    }
}

/// What the driver must do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Call `invoke` on the unit's plugin (or start its child workflow).
    Invoke {
        /// The unit.
        unit: Unit,
        /// Attempt number.
        attempt: u32,
        /// The rendered input.
        input: Value,
    },
    /// Call `compensate` on the unit's plugin (or roll back its child workflow).
    Compensate {
        /// The unit.
        unit: Unit,
        /// Compensation attempt number.
        attempt: u32,
        /// Compensation data, or the step's output when it returned none.
        data: Value,
    },
    /// Feed [`Event::TimerFired`] back at `due`.
    StartTimer {
        /// The timer.
        timer: Timer,
        /// When it fires.
        due: Timestamp,
    },
    /// The execution reached a final status.
    Finish,
}
