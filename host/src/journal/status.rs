//! [`ExecutionStatus`]: where an execution is in its life, as recorded and listed.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// Status of an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// Steps are running or ready to run.
    Running,
    /// Nothing runs: async steps (or child executions) wait for the outside world.
    Waiting,
    /// A step failed: running steps are settling, then completed steps are compensated.
    Compensating,
    /// Every step succeeded (or was skipped).
    Succeeded,
    /// A step failed and every completed step was compensated.
    Compensated,
    /// A compensation failed after its retries (or the execution could not be
    /// loaded any more): needs attention.
    Failed,
}

impl ExecutionStatus {
    /// Every status, in the order of an execution's life.
    pub const ALL: [Self; 6] =
        [Self::Running, Self::Waiting, Self::Compensating, Self::Succeeded, Self::Compensated, Self::Failed];

    /// Whether the execution is over.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Compensated | Self::Failed)
    }

    /// Whether the execution moves forward (not rolling back, not over).
    pub fn is_forward(self) -> bool {
        matches!(self, Self::Running | Self::Waiting)
    }

    /// The status as its JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Compensating => "compensating",
            Self::Succeeded => "succeeded",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
        }
    }
}

/// A text that names no status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown status `{0}` (running, waiting, compensating, succeeded, compensated, failed)")]
pub struct UnknownStatus(pub String);

impl FromStr for ExecutionStatus {
    type Err = UnknownStatus;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|status| status.as_str() == text).ok_or_else(|| UnknownStatus(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_parses_from_its_json_name() {
        for status in ExecutionStatus::ALL {
            assert_eq!(status.as_str().parse::<ExecutionStatus>(), Ok(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        assert!("done".parse::<ExecutionStatus>().is_err());
    }
}
