//! Why a step attempt (or a compensation attempt) failed, classified so that
//! the retry rules can decide (see `engine::machine::retry`) and people can
//! read it in the execution JSON.

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
    /// The guest returned a string that is not JSON (or JSON nested too deep).
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
    /// The kind as its JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::Permanent => "permanent",
            Self::Trap => "trap",
            Self::FuelExhausted => "fuel_exhausted",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::MemoryLimit => "memory_limit",
            Self::OutputTooLarge => "output_too_large",
            Self::InvalidOutput => "invalid_output",
            Self::InputTooLarge => "input_too_large",
            Self::InputMapping => "input_mapping",
            Self::OutputMapping => "output_mapping",
            Self::Unavailable => "unavailable",
            Self::TimedOut => "timed_out",
            Self::Expression => "expression",
            Self::Cancelled => "cancelled",
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
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kinds_text_is_its_json_name() {
        for kind in [FailureKind::FuelExhausted, FailureKind::InputMapping, FailureKind::Cancelled] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }
}
