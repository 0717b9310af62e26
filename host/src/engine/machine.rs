//! The saga state machine: `(execution state, event) -> (new state, commands)`.
//!
//! This is the one place that knows the saga rules: which steps are ready,
//! when an attempt is retried and after which backoff, when the execution
//! rolls back, and in which order completed steps are compensated. It does
//! no I/O and reads no clock: time arrives with each event, so replaying a
//! recorded log rebuilds exactly the same state (this is how a crashed
//! execution resumes). The driver ([`super::driver`]) performs the commands.

use super::event::{Command, Event, Timer};
use super::timeline::{CallPhase, TimelineEntry, TimelineKind};
use crate::failure::{FailureKind, StepFailure};
use crate::ids::{ExecutionId, StepId};
use crate::sandbox::LogLine;
use crate::time::Timestamp;
use crate::workflow::reference::Scope;
use crate::workflow::Workflow;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Status of an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// Steps are running or ready to run.
    Running,
    /// Nothing runs: async steps wait to be completed from outside.
    Waiting,
    /// A step failed: running steps are settling, then completed steps are compensated.
    Compensating,
    /// Every step succeeded.
    Succeeded,
    /// A step failed and every completed step was compensated.
    Compensated,
    /// A compensation failed after its retries: needs attention.
    Failed,
}

impl ExecutionStatus {
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

/// Where one step is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepPhase {
    /// Not started: waiting for its dependencies (or never started).
    Pending,
    /// An `invoke` attempt is in flight.
    Running {
        /// The attempt.
        attempt: u32,
    },
    /// Waiting for a backoff timer before attempt `attempt`.
    RetryWaiting {
        /// The next attempt.
        attempt: u32,
        /// When it is due.
        due: Timestamp,
    },
    /// An async step's `invoke` returned; waiting for completion from outside.
    Waiting {
        /// When the wait times out, if it can.
        due: Option<Timestamp>,
    },
    /// `invoke` succeeded (for an async step: completed from outside).
    Succeeded,
    /// `invoke` failed for good.
    Failed,
    /// Was waiting to retry when the execution started rolling back.
    Cancelled,
    /// A `compensate` attempt is in flight.
    Compensating {
        /// The compensation attempt.
        attempt: u32,
    },
    /// Waiting for a backoff timer before compensation attempt `attempt`.
    CompensationRetryWaiting {
        /// The next compensation attempt.
        attempt: u32,
        /// When it is due.
        due: Timestamp,
    },
    /// `compensate` succeeded.
    Compensated,
    /// `compensate` failed for good.
    CompensationFailed,
}

/// Everything known about one step of an execution.
#[derive(Clone, Debug, PartialEq)]
pub struct StepState {
    /// Its phase.
    pub phase: StepPhase,
    /// `invoke` attempts started.
    pub attempts: u32,
    /// `compensate` attempts started.
    pub compensation_attempts: u32,
    /// Output of the successful attempt.
    pub output: Option<Value>,
    /// Compensation data of the successful attempt.
    pub compensation_data: Option<Value>,
    /// The last `invoke` failure.
    pub error: Option<StepFailure>,
    /// The last `compensate` failure.
    pub compensation_error: Option<StepFailure>,
    /// When the first attempt started.
    pub started_at: Option<Timestamp>,
    /// When it succeeded or failed for good.
    pub finished_at: Option<Timestamp>,
}

impl StepState {
    fn new() -> Self {
        Self {
            phase: StepPhase::Pending,
            attempts: 0,
            compensation_attempts: 0,
            output: None,
            compensation_data: None,
            error: None,
            compensation_error: None,
            started_at: None,
            finished_at: None,
        }
    }
}

/// Why an execution did not succeed: the step that failed (none when the
/// workflow output could not be rendered) and its failure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExecutionError {
    /// The step that failed.
    pub step: Option<StepId>,
    /// The failure.
    #[serde(flatten)]
    pub failure: StepFailure,
}

/// The state of one execution, advanced only by [`Machine::apply`].
#[derive(Clone, Debug)]
pub struct Machine {
    workflow: Arc<Workflow>,
    execution_id: ExecutionId,
    input: Value,
    status: ExecutionStatus,
    steps: Vec<StepState>,
    completion_order: Vec<usize>,
    compensation_queue: Option<Vec<usize>>,
    timeline: Vec<TimelineEntry>,
    output: Option<Value>,
    error: Option<ExecutionError>,
    started_at: Option<Timestamp>,
    finished_at: Option<Timestamp>,
    plugins: BTreeMap<String, String>,
}

/// Step outputs and input, as seen by templates.
struct Outputs<'a> {
    input: &'a Value,
    workflow: &'a Workflow,
    steps: &'a [StepState],
}

impl Scope for Outputs<'_> {
    fn input(&self) -> &Value {
        self.input
    }

    fn step_output(&self, step: &StepId) -> Option<&Value> {
        let index = self.workflow.step_index(step)?;
        self.steps[index].output.as_ref()
    }
}

impl Machine {
    /// A new execution of `workflow` with `input`, not started yet: apply
    /// [`Event::ExecutionStarted`] to start it.
    pub fn new(workflow: Arc<Workflow>, execution_id: ExecutionId, input: Value) -> Self {
        let steps = vec![StepState::new(); workflow.steps().len()];
        Self {
            workflow,
            execution_id,
            input,
            status: ExecutionStatus::Running,
            steps,
            completion_order: Vec::new(),
            compensation_queue: None,
            timeline: Vec::new(),
            output: None,
            error: None,
            started_at: None,
            finished_at: None,
            plugins: BTreeMap::new(),
        }
    }

    /// The plugin versions the execution is pinned to (name -> content hash).
    pub fn plugins(&self) -> &BTreeMap<String, String> {
        &self.plugins
    }

    /// The workflow being executed.
    pub fn workflow(&self) -> &Arc<Workflow> {
        &self.workflow
    }

    /// The execution's id.
    pub fn execution_id(&self) -> &ExecutionId {
        &self.execution_id
    }

    /// The execution's input.
    pub fn input(&self) -> &Value {
        &self.input
    }

    /// Its status.
    pub fn status(&self) -> ExecutionStatus {
        self.status
    }

    /// Whether [`Event::ExecutionStarted`] was applied.
    pub fn is_started(&self) -> bool {
        self.started_at.is_some()
    }

    /// Every step's state, in workflow order.
    pub fn steps(&self) -> &[StepState] {
        &self.steps
    }

    /// The timeline so far.
    pub fn timeline(&self) -> &[TimelineEntry] {
        &self.timeline
    }

    /// The workflow output, once succeeded.
    pub fn output(&self) -> Option<&Value> {
        self.output.as_ref()
    }

    /// Why it did not succeed, once a step failed.
    pub fn error(&self) -> Option<&ExecutionError> {
        self.error.as_ref()
    }

    /// When it started.
    pub fn started_at(&self) -> Option<Timestamp> {
        self.started_at
    }

    /// When it reached a final status.
    pub fn finished_at(&self) -> Option<Timestamp> {
        self.finished_at
    }

    /// Applies one event that happened at `at` and returns what to do next.
    /// Events that no longer match the state (a stale timer, a result for an
    /// attempt that is not in flight) change nothing.
    pub fn apply(&mut self, at: Timestamp, event: Event) -> Vec<Command> {
        let mut commands = Vec::new();
        match event {
            Event::ExecutionStarted { plugins } => {
                if self.started_at.is_none() {
                    self.started_at = Some(at);
                    self.plugins = plugins;
                    self.record(at, TimelineKind::ExecutionStarted);
                    if let Some(timeout) = self.workflow.timeout() {
                        commands.push(Command::StartTimer { timer: Timer::WorkflowTimeout, due: at.plus(timeout) });
                    }
                    self.advance(at, &mut commands);
                }
            }
            Event::AttemptStarted { step, attempt } => {
                if let Some(index) = self.step_in(&step, StepPhase::Running { attempt }) {
                    let state = &mut self.steps[index];
                    state.attempts = state.attempts.max(attempt);
                    state.started_at.get_or_insert(at);
                    self.record(at, TimelineKind::StepStarted { step, attempt });
                }
            }
            Event::AttemptSucceeded { step, attempt, output, compensation, logs } => {
                if let Some(index) = self.step_in(&step, StepPhase::Running { attempt }) {
                    self.record_logs(&step, attempt, CallPhase::Invoke, logs);
                    self.steps[index].compensation_data = compensation;
                    if self.workflow.steps()[index].is_async {
                        let due = self.workflow.steps()[index].timeout.map(|timeout| at.plus(timeout));
                        self.steps[index].phase = StepPhase::Waiting { due };
                        self.record(at, TimelineKind::StepWaiting { step: step.clone(), attempt, timeout_at: due });
                        if let Some(due) = due {
                            commands.push(Command::StartTimer { timer: Timer::AsyncTimeout { step }, due });
                        }
                    } else {
                        self.succeed_step(at, index, attempt, output);
                    }
                    self.advance(at, &mut commands);
                }
            }
            Event::AttemptFailed { step, attempt, failure, logs } => {
                if let Some(index) = self.step_in(&step, StepPhase::Running { attempt }) {
                    self.record_logs(&step, attempt, CallPhase::Invoke, logs);
                    self.attempt_failed(at, index, attempt, failure, &mut commands);
                    self.advance(at, &mut commands);
                }
            }
            Event::TimerFired { timer } => self.timer_fired(at, timer, &mut commands),
            Event::AsyncStepSucceeded { step, output } => {
                if let Some(index) = self.waiting_step(&step) {
                    let attempt = self.steps[index].attempts;
                    self.succeed_step(at, index, attempt, output);
                    self.advance(at, &mut commands);
                }
            }
            Event::AsyncStepFailed { step, message } => {
                if let Some(index) = self.waiting_step(&step) {
                    self.fail_step(at, index, StepFailure::new(FailureKind::Permanent, message));
                    self.advance(at, &mut commands);
                }
            }
            Event::CompensationStarted { step, attempt } => {
                if let Some(index) = self.step_in(&step, StepPhase::Compensating { attempt }) {
                    let state = &mut self.steps[index];
                    state.compensation_attempts = state.compensation_attempts.max(attempt);
                    self.record(at, TimelineKind::CompensationStarted { step, attempt });
                }
            }
            Event::CompensationSucceeded { step, attempt, logs } => {
                if let Some(index) = self.step_in(&step, StepPhase::Compensating { attempt }) {
                    self.record_logs(&step, attempt, CallPhase::Compensate, logs);
                    self.steps[index].phase = StepPhase::Compensated;
                    self.record(at, TimelineKind::StepCompensated { step, attempt });
                    self.advance(at, &mut commands);
                }
            }
            Event::CompensationFailed { step, attempt, failure, logs } => {
                if let Some(index) = self.step_in(&step, StepPhase::Compensating { attempt }) {
                    self.record_logs(&step, attempt, CallPhase::Compensate, logs);
                    self.compensation_failed(at, index, attempt, failure, &mut commands);
                    self.advance(at, &mut commands);
                }
            }
        }
        commands
    }

    /// The commands still outstanding in the current state: calls in flight
    /// and armed timers. After replaying a recorded log, performing these
    /// resumes the execution where it stopped.
    pub fn outstanding_commands(&self) -> Vec<Command> {
        let mut commands = Vec::new();
        for (index, state) in self.steps.iter().enumerate() {
            let step = self.workflow.steps()[index].id.clone();
            match state.phase {
                StepPhase::Running { attempt } => {
                    // The input rendered when the attempt started; outputs never change after.
                    if let Ok(input) = self.render_input(index) {
                        commands.push(Command::Invoke { step: index, attempt, input });
                    }
                }
                StepPhase::RetryWaiting { attempt, due } => {
                    commands.push(Command::StartTimer { timer: Timer::Retry { step, attempt }, due })
                }
                StepPhase::Waiting { due: Some(due) } => {
                    commands.push(Command::StartTimer { timer: Timer::AsyncTimeout { step }, due })
                }
                StepPhase::Compensating { attempt } => {
                    commands.push(Command::Compensate { step: index, attempt, data: self.compensation_data(index) })
                }
                StepPhase::CompensationRetryWaiting { attempt, due } => {
                    commands.push(Command::StartTimer { timer: Timer::CompensationRetry { step, attempt }, due })
                }
                _ => {}
            }
        }
        if let (true, Some(timeout), Some(started_at)) =
            (self.status.is_forward(), self.workflow.timeout(), self.started_at)
        {
            commands.push(Command::StartTimer { timer: Timer::WorkflowTimeout, due: started_at.plus(timeout) });
        }
        if self.status.is_final() {
            commands.push(Command::Finish);
        }
        commands
    }

    fn waiting_step(&self, step: &StepId) -> Option<usize> {
        let index = self.workflow.step_index(step)?;
        matches!(self.steps[index].phase, StepPhase::Waiting { .. }).then_some(index)
    }

    /// Whether `step` is an async step waiting to be completed from outside.
    pub fn is_waiting(&self, step: &StepId) -> bool {
        self.waiting_step(step).is_some()
    }

    fn succeed_step(&mut self, at: Timestamp, index: usize, attempt: u32, output: Value) {
        let state = &mut self.steps[index];
        state.phase = StepPhase::Succeeded;
        state.output = Some(output);
        state.finished_at = Some(at);
        self.completion_order.push(index);
        let step = self.step_id(index);
        self.record(at, TimelineKind::StepSucceeded { step, attempt });
    }

    fn step_in(&self, step: &StepId, phase: StepPhase) -> Option<usize> {
        let index = self.workflow.step_index(step)?;
        (self.steps[index].phase == phase).then_some(index)
    }

    fn record(&mut self, at: Timestamp, kind: TimelineKind) {
        self.timeline.push(TimelineEntry { at, kind });
    }

    fn record_logs(&mut self, step: &StepId, attempt: u32, phase: CallPhase, logs: Vec<LogLine>) {
        for line in logs {
            self.record(
                line.at,
                TimelineKind::Log { step: step.clone(), attempt, phase, level: line.level, message: line.message },
            );
        }
    }

    fn render_input(&self, index: usize) -> Result<Value, String> {
        let scope = Outputs { input: &self.input, workflow: &self.workflow, steps: &self.steps };
        self.workflow.steps()[index].input.render(&scope)
    }

    fn compensation_data(&self, index: usize) -> Value {
        let state = &self.steps[index];
        state.compensation_data.clone().or_else(|| state.output.clone()).unwrap_or(Value::Null)
    }

    fn step_id(&self, index: usize) -> StepId {
        self.workflow.steps()[index].id.clone()
    }

    /// Starts attempt `attempt` of step `index`, or fails it if its input cannot be rendered.
    fn start_attempt(&mut self, at: Timestamp, index: usize, attempt: u32, commands: &mut Vec<Command>) {
        match self.render_input(index) {
            Ok(input) => {
                self.steps[index].phase = StepPhase::Running { attempt };
                commands.push(Command::Invoke { step: index, attempt, input });
            }
            Err(message) => {
                let failure = StepFailure::new(FailureKind::InputMapping, format!("cannot build the input: {message}"));
                self.steps[index].attempts = attempt.saturating_sub(1);
                self.fail_step(at, index, failure);
            }
        }
    }

    fn attempt_failed(
        &mut self,
        at: Timestamp,
        index: usize,
        attempt: u32,
        failure: StepFailure,
        commands: &mut Vec<Command>,
    ) {
        let step = self.step_id(index);
        let policy = &self.workflow.steps()[index].retry;
        let retry = self.status.is_forward() && failure.kind.is_retryable(policy) && attempt < policy.max_attempts;
        if retry {
            let delay = policy.backoff_before(attempt + 1);
            let due = at.plus(delay);
            self.steps[index].phase = StepPhase::RetryWaiting { attempt: attempt + 1, due };
            self.steps[index].error = Some(failure.clone());
            self.record(
                at,
                TimelineKind::StepAttemptFailed {
                    step: step.clone(),
                    attempt,
                    error: failure,
                    retry_in_ms: Some(delay.as_millis() as u64),
                },
            );
            commands.push(Command::StartTimer { timer: Timer::Retry { step, attempt: attempt + 1 }, due });
        } else {
            self.record(
                at,
                TimelineKind::StepAttemptFailed { step, attempt, error: failure.clone(), retry_in_ms: None },
            );
            self.fail_step(at, index, failure);
        }
    }

    fn fail_step(&mut self, at: Timestamp, index: usize, failure: StepFailure) {
        let step = self.step_id(index);
        let state = &mut self.steps[index];
        state.phase = StepPhase::Failed;
        state.error = Some(failure.clone());
        state.finished_at = Some(at);
        let attempts = state.attempts;
        self.record(at, TimelineKind::StepFailed { step: step.clone(), attempts, error: failure.clone() });
        self.begin_rollback(at, Some(step), failure);
    }

    /// Stops starting steps; steps waiting to retry are cancelled. Compensation
    /// begins once the steps in flight have settled (see [`Machine::advance`]).
    fn begin_rollback(&mut self, at: Timestamp, step: Option<StepId>, failure: StepFailure) {
        if !self.status.is_forward() {
            return;
        }
        self.status = ExecutionStatus::Compensating;
        self.error = Some(ExecutionError { step, failure });
        for index in 0..self.steps.len() {
            if matches!(self.steps[index].phase, StepPhase::RetryWaiting { .. } | StepPhase::Waiting { .. }) {
                self.steps[index].phase = StepPhase::Cancelled;
                self.steps[index].finished_at = Some(at);
                let step = self.step_id(index);
                self.record(at, TimelineKind::StepCancelled { step });
            }
        }
    }

    fn timer_fired(&mut self, at: Timestamp, timer: Timer, commands: &mut Vec<Command>) {
        match timer {
            Timer::Retry { step, attempt } => {
                let Some(index) = self.workflow.step_index(&step) else { return };
                let due_now =
                    matches!(self.steps[index].phase, StepPhase::RetryWaiting { attempt: a, .. } if a == attempt);
                if due_now && self.status.is_forward() {
                    self.start_attempt(at, index, attempt, commands);
                    self.advance(at, commands);
                }
            }
            Timer::CompensationRetry { step, attempt } => {
                let Some(index) = self.workflow.step_index(&step) else { return };
                if matches!(self.steps[index].phase, StepPhase::CompensationRetryWaiting { attempt: a, .. } if a == attempt)
                {
                    self.start_compensation(index, attempt, commands);
                }
            }
            Timer::AsyncTimeout { step } => {
                if let Some(index) = self.waiting_step(&step) {
                    let timeout = self.workflow.steps()[index].timeout.unwrap_or_default();
                    let message = format!("not completed within its timeout of {} ms", timeout.as_millis());
                    self.fail_step(at, index, StepFailure::new(FailureKind::TimedOut, message));
                    self.advance(at, commands);
                }
            }
            Timer::WorkflowTimeout => {
                if self.status.is_forward() {
                    let timeout = self.workflow.timeout().unwrap_or_default();
                    let message =
                        format!("the workflow did not finish within its timeout of {} ms", timeout.as_millis());
                    self.record(at, TimelineKind::ExecutionTimedOut);
                    self.begin_rollback(at, None, StepFailure::new(FailureKind::TimedOut, message));
                    self.advance(at, commands);
                }
            }
        }
    }

    fn start_compensation(&mut self, index: usize, attempt: u32, commands: &mut Vec<Command>) {
        self.steps[index].phase = StepPhase::Compensating { attempt };
        commands.push(Command::Compensate { step: index, attempt, data: self.compensation_data(index) });
    }

    fn compensation_failed(
        &mut self,
        at: Timestamp,
        index: usize,
        attempt: u32,
        failure: StepFailure,
        commands: &mut Vec<Command>,
    ) {
        let step = self.step_id(index);
        let policy = &self.workflow.steps()[index].retry;
        if failure.kind.is_retryable(policy) && attempt < policy.max_attempts {
            let delay = policy.backoff_before(attempt + 1);
            let due = at.plus(delay);
            self.steps[index].phase = StepPhase::CompensationRetryWaiting { attempt: attempt + 1, due };
            self.steps[index].compensation_error = Some(failure.clone());
            self.record(
                at,
                TimelineKind::CompensationAttemptFailed {
                    step: step.clone(),
                    attempt,
                    error: failure,
                    retry_in_ms: Some(delay.as_millis() as u64),
                },
            );
            let timer = Timer::CompensationRetry { step, attempt: attempt + 1 };
            commands.push(Command::StartTimer { timer, due });
        } else {
            let state = &mut self.steps[index];
            state.phase = StepPhase::CompensationFailed;
            state.compensation_error = Some(failure.clone());
            let attempts = state.compensation_attempts;
            self.record(
                at,
                TimelineKind::CompensationAttemptFailed {
                    step: step.clone(),
                    attempt,
                    error: failure.clone(),
                    retry_in_ms: None,
                },
            );
            self.record(at, TimelineKind::CompensationFailed { step, attempts, error: failure });
        }
    }

    /// Moves the execution forward after a change: starts ready steps,
    /// finishes, or drives the compensation sequence.
    fn advance(&mut self, at: Timestamp, commands: &mut Vec<Command>) {
        if self.status.is_forward() {
            self.start_ready_steps(at, commands);
        }
        if self.status.is_forward() && self.steps.iter().all(|s| s.phase == StepPhase::Succeeded) {
            self.finish_successfully(at, commands);
        }
        if self.status.is_forward() {
            let busy = self
                .steps
                .iter()
                .any(|s| matches!(s.phase, StepPhase::Running { .. } | StepPhase::RetryWaiting { .. }));
            self.status = if busy { ExecutionStatus::Running } else { ExecutionStatus::Waiting };
        }
        if self.status == ExecutionStatus::Compensating {
            self.advance_compensation(at, commands);
        }
    }

    fn start_ready_steps(&mut self, at: Timestamp, commands: &mut Vec<Command>) {
        for index in 0..self.steps.len() {
            if !self.status.is_forward() {
                return;
            }
            let ready = self.steps[index].phase == StepPhase::Pending
                && self.workflow.steps()[index]
                    .dependencies
                    .iter()
                    .all(|&dependency| self.steps[dependency].phase == StepPhase::Succeeded);
            if ready {
                self.start_attempt(at, index, 1, commands);
            }
        }
    }

    fn finish_successfully(&mut self, at: Timestamp, commands: &mut Vec<Command>) {
        let rendered = match self.workflow.output() {
            Some(template) => {
                let scope = Outputs { input: &self.input, workflow: &self.workflow, steps: &self.steps };
                template.render(&scope)
            }
            None => Ok(Value::Object(
                self.workflow
                    .steps()
                    .iter()
                    .zip(&self.steps)
                    .map(|(step, state)| (step.id.to_string(), state.output.clone().unwrap_or(Value::Null)))
                    .collect(),
            )),
        };
        match rendered {
            Ok(output) => {
                self.output = Some(output);
                self.status = ExecutionStatus::Succeeded;
                self.finished_at = Some(at);
                self.record(at, TimelineKind::ExecutionSucceeded);
                commands.push(Command::Finish);
            }
            Err(message) => {
                let failure = StepFailure::new(
                    FailureKind::OutputMapping,
                    format!("cannot build the workflow output: {message}"),
                );
                self.record(at, TimelineKind::OutputFailed { error: failure.clone() });
                self.begin_rollback(at, None, failure);
            }
        }
    }

    /// Compensates completed steps one at a time, most recently completed
    /// first, once no step is in flight any more.
    fn advance_compensation(&mut self, at: Timestamp, commands: &mut Vec<Command>) {
        if self.compensation_queue.is_none() {
            if self.steps.iter().any(|s| matches!(s.phase, StepPhase::Running { .. })) {
                return; // let running steps settle first
            }
            let queue = self.completion_order.iter().rev().copied().collect();
            self.compensation_queue = Some(queue);
        }
        let queue = self.compensation_queue.clone().unwrap_or_default();
        for index in queue {
            match self.steps[index].phase {
                StepPhase::Compensated | StepPhase::CompensationFailed => continue,
                StepPhase::Compensating { .. } | StepPhase::CompensationRetryWaiting { .. } => return,
                _ => {
                    self.start_compensation(index, 1, commands);
                    return;
                }
            }
        }
        let any_failed = self.steps.iter().any(|s| s.phase == StepPhase::CompensationFailed);
        self.status = if any_failed { ExecutionStatus::Failed } else { ExecutionStatus::Compensated };
        self.finished_at = Some(at);
        let kind = if any_failed { TimelineKind::ExecutionFailed } else { TimelineKind::ExecutionCompensated };
        self.record(at, kind);
        commands.push(Command::Finish);
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
