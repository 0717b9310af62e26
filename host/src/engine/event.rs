//! Events (what happened) and commands (what to do next): the vocabulary
//! between the saga state machine and its driver. Events are what the store
//! records; replaying them through the machine rebuilds an execution.

use crate::failure::StepFailure;
use crate::ids::StepId;
use crate::sandbox::LogLine;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Something that happened to an execution, in the order it was recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The execution began, pinned to these plugin versions (name -> content hash).
    ExecutionStarted {
        /// The version of every plugin the execution uses, to the end.
        #[serde(default)]
        plugins: BTreeMap<String, String>,
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
    /// Call `invoke` on the step's plugin.
    Invoke {
        /// Index of the step in the workflow.
        step: usize,
        /// Attempt number.
        attempt: u32,
        /// The rendered input.
        input: Value,
    },
    /// Call `compensate` on the step's plugin.
    Compensate {
        /// Index of the step in the workflow.
        step: usize,
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
