//! Why a step attempt (or a compensation attempt) failed, classified so that
//! the retry policy can decide and people can read it in the execution JSON.

use crate::workflow::RetryPolicy;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The class of a failure. Serialized in snake_case (`fuel_exhausted`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The guest returned `step-error::retryable`.
    Retryable,
    /// The guest returned `step-error::permanent`.
    Permanent,
    /// The guest trapped (panic, `unreachable`, stack overflow, ...).
    Trap,
    /// The guest ran out of fuel (its CPU budget).
    FuelExhausted,
    /// The call ran past its wall-clock deadline and was stopped.
    DeadlineExceeded,
    /// The guest tried to grow its memory past the limit.
    MemoryLimit,
    /// The guest returned more JSON than allowed.
    OutputTooLarge,
    /// The guest returned a string that is not JSON.
    InvalidOutput,
    /// The step's input, once rendered, is larger than allowed.
    InputTooLarge,
    /// The step's input template referenced something that does not exist.
    InputMapping,
    /// The workflow's output template referenced something that does not exist.
    OutputMapping,
    /// The host could not run the call (no instance slot, instantiation failed).
    Unavailable,
    /// An async step was not completed, or the workflow did not finish, in time.
    TimedOut,
    /// A `when` condition, a `transform` or a `for_each` could not be evaluated.
    Expression,
    /// A rollback was requested from outside (an operator, or the parent execution).
    Cancelled,
}

impl FailureKind {
    /// Whether a failure of this kind is retried under `policy`.
    pub fn is_retryable(self, policy: &RetryPolicy) -> bool {
        match self {
            FailureKind::Retryable | FailureKind::Unavailable => true,
            FailureKind::Trap
            | FailureKind::FuelExhausted
            | FailureKind::DeadlineExceeded
            | FailureKind::MemoryLimit
            | FailureKind::OutputTooLarge => policy.retry_traps,
            FailureKind::Permanent
            | FailureKind::InvalidOutput
            | FailureKind::InputTooLarge
            | FailureKind::InputMapping
            | FailureKind::OutputMapping
            | FailureKind::TimedOut
            | FailureKind::Expression
            | FailureKind::Cancelled => false,
        }
    }
}

/// A classified failure with a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFailure {
    /// Its class.
    pub kind: FailureKind,
    /// What happened.
    pub message: String,
}

impl StepFailure {
    /// A failure of `kind` saying `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

impl fmt::Display for StepFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = serde_json::to_value(self.kind).ok();
        let kind = kind.as_ref().and_then(|v| v.as_str()).unwrap_or("failure");
        write!(f, "{kind}: {}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_errors_are_never_retried_and_traps_follow_the_policy() {
        let retry_traps = RetryPolicy::default();
        let no_trap_retry = RetryPolicy { retry_traps: false, ..RetryPolicy::default() };
        assert!(FailureKind::Retryable.is_retryable(&no_trap_retry));
        assert!(!FailureKind::Permanent.is_retryable(&retry_traps));
        assert!(FailureKind::Trap.is_retryable(&retry_traps));
        assert!(!FailureKind::Trap.is_retryable(&no_trap_retry));
        assert!(!FailureKind::InputMapping.is_retryable(&retry_traps));
    }
}
