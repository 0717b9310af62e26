//! The execution's timeline as people read it: what started, failed, was
//! retried or compensated, with the lines the guests logged.

use crate::journal::{ExecutionId, LogLevel, StepFailure, Timestamp, UnitId};
use serde::Serialize;

/// One entry of the timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineEntry {
    /// When it happened.
    #[serde(serialize_with = "crate::journal::time::rfc3339")]
    pub at: Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub kind: TimelineKind,
}

/// Whether a log line came from `invoke` or `compensate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallPhase {
    /// During `invoke`.
    Invoke,
    /// During `compensate`.
    Compensate,
}

/// The kinds of timeline entries (the `type` field).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TimelineKind {
    /// The execution began.
    ExecutionStarted,
    /// An attempt of a step began.
    StepStarted {
        /// The step.
        step: UnitId,
        /// Attempt number.
        attempt: u32,
    },
    /// A line the guest logged (or wrote to stdout/stderr).
    Log {
        /// The step.
        step: UnitId,
        /// Attempt number of the call that logged it.
        attempt: u32,
        /// During invoke or compensate.
        phase: CallPhase,
        /// Level or stream.
        level: LogLevel,
        /// The text.
        message: String,
    },
    /// An async step's `invoke` returned: the execution waits for its completion.
    StepWaiting {
        /// The step.
        step: UnitId,
        /// The attempt whose `invoke` returned.
        attempt: u32,
        /// When the wait times out, if it can.
        #[serde(skip_serializing_if = "Option::is_none", serialize_with = "crate::journal::time::rfc3339_opt")]
        timeout_at: Option<Timestamp>,
    },
    /// The workflow's timeout elapsed.
    ExecutionTimedOut,
    /// A rollback was requested from outside (an operator, or the parent execution).
    RollbackRequested {
        /// Why.
        reason: String,
    },
    /// A step failed for good, and its `on_permanent_failure` lets the
    /// execution go on (`skip` or `continue`).
    FailureTolerated {
        /// The unit.
        step: UnitId,
        /// `skip` or `continue`.
        on_permanent_failure: String,
    },
    /// An operator asked for the failed compensations to be tried again.
    RetryRequested {
        /// Why.
        reason: String,
        /// The units whose compensation is tried again.
        steps: Vec<UnitId>,
    },
    /// A fan-out step or a hook expanded into its units (elements, handlers).
    StepExpanded {
        /// The step or hook.
        step: UnitId,
        /// How many units it runs.
        units: usize,
    },
    /// A step or hook was skipped: its condition was false, or it needs the
    /// output of a skipped step.
    StepSkipped {
        /// The step or hook.
        step: UnitId,
        /// Why.
        reason: String,
    },
    /// A workflow step's child execution waits for the outside world.
    ChildWaiting {
        /// The step (or element).
        step: UnitId,
        /// The attempt.
        attempt: u32,
        /// The child execution.
        child: ExecutionId,
    },
    /// A step succeeded.
    StepSucceeded {
        /// The step.
        step: UnitId,
        /// The attempt that succeeded.
        attempt: u32,
    },
    /// An attempt failed.
    StepAttemptFailed {
        /// The step.
        step: UnitId,
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        error: StepFailure,
        /// Delay before the next attempt; absent when there is none.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_in_ms: Option<u64>,
    },
    /// A step failed for good.
    StepFailed {
        /// The step.
        step: UnitId,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        error: StepFailure,
    },
    /// A step waiting to retry was abandoned because the saga is rolling back.
    StepCancelled {
        /// The step.
        step: UnitId,
    },
    /// A compensation attempt began.
    CompensationStarted {
        /// The step.
        step: UnitId,
        /// Compensation attempt number.
        attempt: u32,
    },
    /// A step was compensated.
    StepCompensated {
        /// The step.
        step: UnitId,
        /// The compensation attempt that succeeded.
        attempt: u32,
    },
    /// A compensation attempt failed.
    CompensationAttemptFailed {
        /// The step.
        step: UnitId,
        /// The compensation attempt that failed.
        attempt: u32,
        /// Why.
        error: StepFailure,
        /// Delay before the next attempt; absent when there is none.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_in_ms: Option<u64>,
    },
    /// A step's compensation failed for good.
    CompensationFailed {
        /// The step.
        step: UnitId,
        /// Compensation attempts made.
        attempts: u32,
        /// The last failure.
        error: StepFailure,
    },
    /// The workflow output template could not be rendered.
    OutputFailed {
        /// Why.
        error: StepFailure,
    },
    /// Every step succeeded.
    ExecutionSucceeded,
    /// The saga rolled back cleanly.
    ExecutionCompensated,
    /// A compensation failed: the execution needs attention.
    ExecutionFailed,
}
