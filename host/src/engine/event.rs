//! Events (what happened) and commands (what to do next): the vocabulary
//! between the saga state machine and its driver. Events are what the store
//! records; replaying them through the machine rebuilds an execution.

use crate::failure::StepFailure;
use crate::ids::StepId;
use crate::sandbox::LogLine;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Something that happened to an execution, in the order it was recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The execution began.
    ExecutionStarted,
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
}

/// A timer the machine asked for: the next attempt of a step or of its compensation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    /// The step.
    pub step: StepId,
    /// What the timer is for.
    pub purpose: TimerPurpose,
    /// The attempt it starts.
    pub attempt: u32,
}

/// What a timer starts when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerPurpose {
    /// Another attempt of `invoke`.
    Retry,
    /// Another attempt of `compensate`.
    CompensationRetry,
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
