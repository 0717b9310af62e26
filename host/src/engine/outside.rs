//! Events from outside an execution (an async step reported done or
//! failed, a cancel, a wake-up) and the answer each caller gets: accepted,
//! the same answer again for a repeated report, or a refusal that says why.
//! They travel to the owner's mailbox, or as JSON through the store's inbox
//! when another process owns the execution.

use super::machine::{Machine, StepPhase};
use crate::journal::UnitId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An event from outside, for the execution's owner to decide.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outside {
    /// An async step is done, with this output.
    Complete {
        /// The unit.
        step: UnitId,
        /// Its output.
        output: Value,
        /// The reporter's idempotency key.
        key: Option<String>,
    },
    /// An async step failed.
    Fail {
        /// The unit.
        step: UnitId,
        /// What went wrong.
        message: String,
        /// The reporter's idempotency key.
        key: Option<String>,
    },
    /// Roll the execution back (an operator's cancel, a parent rolling back).
    Cancel {
        /// Why.
        reason: String,
    },
    /// Try the failed compensations of a `failed` execution again.
    Retry {
        /// Why.
        reason: String,
    },
    /// Look again at waiting children and due deadlines.
    Wake,
}

/// How an accepted outside event was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Recorded: it changed the execution.
    Accepted,
    /// The same report as one recorded before (same idempotency key):
    /// nothing new recorded, the same answer given.
    Repeated,
    /// Nothing to do (a cancel of an execution already rolling back or over).
    AlreadyDone,
}

impl Answer {
    /// Whether the answer records an event.
    pub fn records(self) -> bool {
        self == Answer::Accepted
    }
}

/// Why an outside event was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "refusal", content = "message", rename_all = "snake_case")]
pub enum Refusal {
    /// The step exists but does not wait for a report (never did, or was
    /// reported already with another key).
    #[error("{0}")]
    NotWaiting(String),
    /// The workflow has no such step.
    #[error("{0}")]
    NoSuchStep(String),
    /// No such execution.
    #[error("{0}")]
    NoSuchExecution(String),
    /// A retry of an execution that is not `failed`.
    #[error("{0}")]
    NotRetryable(String),
    /// The execution's owner could not take the event (its store failed).
    #[error("{0}")]
    Unavailable(String),
}

/// Whether a report that `step` succeeded (or failed) can be taken now.
pub(super) fn check_completion(
    machine: &Machine,
    step: &UnitId,
    key: Option<&str>,
    succeeded: bool,
) -> Result<Answer, Refusal> {
    let id = machine.execution_id();
    if !machine.has_node(step) {
        return Err(Refusal::NoSuchStep(format!("execution `{id}` has no step `{step}`")));
    }
    let Some(unit) = machine.unit_of(step) else {
        return Err(Refusal::NotWaiting(format!(
            "step `{step}` of execution `{id}` is not waiting for completion (it has not started)"
        )));
    };
    let state = machine.unit(unit);
    if matches!(state.phase, StepPhase::Waiting { .. }) {
        return Ok(Answer::Accepted);
    }
    let repeated = state
        .completion
        .as_ref()
        .is_some_and(|done| done.succeeded == succeeded && key.is_some() && done.key.as_deref() == key);
    if repeated {
        return Ok(Answer::Repeated);
    }
    let status: crate::engine::StepStatus = state.phase.into();
    Err(Refusal::NotWaiting(format!(
        "step `{step}` of execution `{id}` is not waiting for completion (its status is `{}`)",
        status.as_str()
    )))
}
