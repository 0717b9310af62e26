//! The execution as JSON: what `stepwise run` prints and the API returns.

use super::machine::{ExecutionError, ExecutionStatus, Machine, StepPhase};
use super::timeline::TimelineEntry;
use crate::failure::StepFailure;
use crate::ids::{ExecutionId, PluginName, StepId};
use crate::time::Timestamp;
use serde::Serialize;
use serde_json::Value;

/// A step's status as shown to people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// An attempt is in flight.
    Running,
    /// Waiting to retry after a failed attempt.
    Retrying,
    /// An async step waiting to be completed from outside.
    Waiting,
    /// Succeeded (and not rolled back).
    Succeeded,
    /// Failed for good.
    Failed,
    /// Was waiting to retry when the execution rolled back.
    Cancelled,
    /// Being compensated.
    Compensating,
    /// Compensated.
    Compensated,
    /// Its compensation failed for good.
    CompensationFailed,
}

impl From<StepPhase> for StepStatus {
    fn from(phase: StepPhase) -> Self {
        match phase {
            StepPhase::Pending => Self::Pending,
            StepPhase::Running { .. } => Self::Running,
            StepPhase::RetryWaiting { .. } => Self::Retrying,
            StepPhase::Waiting { .. } => Self::Waiting,
            StepPhase::Succeeded => Self::Succeeded,
            StepPhase::Failed => Self::Failed,
            StepPhase::Cancelled => Self::Cancelled,
            StepPhase::Compensating { .. } | StepPhase::CompensationRetryWaiting { .. } => Self::Compensating,
            StepPhase::Compensated => Self::Compensated,
            StepPhase::CompensationFailed => Self::CompensationFailed,
        }
    }
}

/// One step in the execution JSON.
#[derive(Clone, Debug, Serialize)]
pub struct StepView {
    /// Step id.
    pub id: StepId,
    /// Plugin name.
    pub plugin: PluginName,
    /// Steps that must succeed before this one (from its references and `after`).
    pub depends_on: Vec<StepId>,
    /// Status.
    pub status: StepStatus,
    /// `invoke` attempts made.
    pub attempts: u32,
    /// Output, once succeeded.
    pub output: Option<Value>,
    /// Compensation data the step returned, if any.
    pub compensation_data: Option<Value>,
    /// The last `invoke` failure.
    pub error: Option<StepFailure>,
    /// `compensate` attempts made.
    pub compensation_attempts: u32,
    /// The last `compensate` failure.
    pub compensation_error: Option<StepFailure>,
    /// When its first attempt started.
    #[serde(serialize_with = "crate::time::rfc3339_opt")]
    pub started_at: Option<Timestamp>,
    /// When it succeeded or failed.
    #[serde(serialize_with = "crate::time::rfc3339_opt")]
    pub finished_at: Option<Timestamp>,
}

/// The execution JSON.
#[derive(Clone, Debug, Serialize)]
pub struct ExecutionView {
    /// Execution id.
    pub execution_id: ExecutionId,
    /// Workflow name.
    pub workflow: String,
    /// Status.
    pub status: ExecutionStatus,
    /// The input it was started with.
    pub input: Value,
    /// The workflow output (when succeeded).
    pub output: Option<Value>,
    /// Why it did not succeed (when it did not).
    pub error: Option<ExecutionError>,
    /// When it started.
    #[serde(serialize_with = "crate::time::rfc3339_opt")]
    pub started_at: Option<Timestamp>,
    /// When it finished.
    #[serde(serialize_with = "crate::time::rfc3339_opt")]
    pub finished_at: Option<Timestamp>,
    /// The plugin versions it is pinned to: name -> content hash.
    pub plugins: std::collections::BTreeMap<String, String>,
    /// Every step, in workflow order.
    pub steps: Vec<StepView>,
    /// The timeline.
    pub events: Vec<TimelineEntry>,
}

impl ExecutionView {
    /// The view of a machine's current state.
    pub fn of(machine: &Machine) -> Self {
        let steps = machine
            .workflow()
            .steps()
            .iter()
            .zip(machine.steps())
            .map(|(step, state)| StepView {
                id: step.id.clone(),
                plugin: step.plugin.clone(),
                depends_on: step.dependencies.iter().map(|&i| machine.workflow().steps()[i].id.clone()).collect(),
                status: state.phase.into(),
                attempts: state.attempts,
                output: state.output.clone(),
                compensation_data: state.compensation_data.clone(),
                error: state.error.clone(),
                compensation_attempts: state.compensation_attempts,
                compensation_error: state.compensation_error.clone(),
                started_at: state.started_at,
                finished_at: state.finished_at,
            })
            .collect();
        Self {
            execution_id: machine.execution_id().clone(),
            workflow: machine.workflow().name().to_string(),
            status: machine.status(),
            input: machine.input().clone(),
            output: machine.output().cloned(),
            error: machine.error().cloned(),
            started_at: machine.started_at(),
            finished_at: machine.finished_at(),
            plugins: machine.plugins().clone(),
            steps,
            events: machine.timeline().to_vec(),
        }
    }

    /// The view as a JSON value.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("an execution view is valid JSON")
    }
}
