//! Rolling back: a unit or node failing for good, a rollback requested from
//! outside (an operator's cancel, a parent rolling back its child, a workflow
//! timeout), and the compensation sequence: once no attempt is in flight,
//! every completed unit is compensated, one at a time, most recently
//! completed first, exactly once. Whether a failed compensation is retried
//! is decided in [`super::retry`].

use super::{ExecutionError, Machine, NodePhase, StepPhase, Unit};
use crate::engine::command::Command;
use crate::engine::timeline::TimelineKind;
use crate::journal::{ExecutionStatus, FailureKind, StepFailure, Timestamp, UnitId};

impl Machine {
    /// A unit failed for good: its node fails and the execution rolls back.
    pub(super) fn fail_unit(&mut self, at: Timestamp, unit: Unit, failure: StepFailure) {
        let step = self.label(unit);
        let state = self.unit_mut(unit);
        state.phase = StepPhase::Failed;
        state.error = Some(failure.clone());
        state.finished_at = Some(at);
        let attempts = state.attempts;
        self.record(at, TimelineKind::StepFailed { step: step.clone(), attempts, error: failure.clone() });
        let policy = self.workflow.steps()[unit.node].on_permanent_failure;
        if self.status.is_forward() && !policy.is_fail() {
            self.tolerate_failure(at, unit, policy, failure);
            return;
        }
        let node = &mut self.nodes[unit.node];
        node.phase = NodePhase::Failed;
        node.finished_at = Some(at);
        self.begin_rollback(at, Some(step), failure);
    }

    /// A failure of the node itself (its condition, its fan-out list, its transform).
    pub(super) fn fail_node(&mut self, at: Timestamp, node: usize, failure: StepFailure) {
        let step = UnitId::step(self.workflow.steps()[node].id.clone());
        let state = &mut self.nodes[node];
        state.phase = NodePhase::Failed;
        state.error = Some(failure.clone());
        state.started_at.get_or_insert(at);
        state.finished_at = Some(at);
        self.record(at, TimelineKind::StepFailed { step: step.clone(), attempts: 0, error: failure.clone() });
        self.begin_rollback(at, Some(step), failure);
    }

    /// Stops starting units; units waiting to retry or for the outside world
    /// are cancelled (an async step waiting for its completion is still
    /// compensated, its invoke having started work; a waiting child
    /// execution is rolled back like a completed unit). Compensation begins once the units in flight have
    /// settled (see [`Machine::advance`]).
    pub(super) fn begin_rollback(&mut self, at: Timestamp, step: Option<UnitId>, failure: StepFailure) {
        if !self.status.is_forward() {
            return;
        }
        self.status = ExecutionStatus::Compensating;
        self.error = Some(ExecutionError { step, failure });
        let units: Vec<Unit> = self.units().collect();
        for unit in units {
            match self.unit(unit).phase {
                StepPhase::RetryWaiting { .. } | StepPhase::Waiting { .. } => {
                    let state = self.unit_mut(unit);
                    state.phase = StepPhase::Cancelled;
                    state.finished_at = Some(at);
                    let step = self.label(unit);
                    self.record(at, TimelineKind::StepCancelled { step });
                }
                StepPhase::ChildWaiting { .. } => self.completion_order.push(unit),
                _ => {}
            }
        }
    }

    /// A rollback asked for from outside: a running execution rolls back, a
    /// succeeded one is compensated after the fact; one already rolling back
    /// or over is left as it is (a repeated request changes nothing).
    pub(super) fn rollback_requested(&mut self, at: Timestamp, reason: String, commands: &mut Vec<Command>) {
        let failure = StepFailure::new(FailureKind::Cancelled, reason.clone());
        if self.status.is_forward() && self.is_started() {
            self.record(at, TimelineKind::RollbackRequested { reason });
            self.begin_rollback(at, None, failure);
            self.advance(at, commands);
        } else if self.status == ExecutionStatus::Succeeded {
            self.record(at, TimelineKind::RollbackRequested { reason });
            self.status = ExecutionStatus::Compensating;
            self.error = Some(ExecutionError { step: None, failure });
            self.finished_at = None;
            self.compensation_queue = None;
            self.advance(at, commands);
        }
    }

    /// Whether a rollback request would change anything now.
    pub fn accepts_rollback(&self) -> bool {
        (self.status.is_forward() && self.is_started()) || self.status == ExecutionStatus::Succeeded
    }

    /// An operator's retry of a `failed` execution: every unit whose
    /// compensation failed for good is compensated again, in the original
    /// order, with fresh attempts (numbered on from the last one; the
    /// idempotency key is the unit's, unchanged); units compensated already
    /// stay so. Anything but a `failed` execution is left as it is.
    pub(super) fn retry_requested(&mut self, at: Timestamp, reason: String, commands: &mut Vec<Command>) {
        if !self.accepts_retry() {
            return;
        }
        let failed: Vec<Unit> =
            self.units().filter(|unit| self.unit(*unit).phase == StepPhase::CompensationFailed).collect();
        let steps = failed.iter().map(|unit| self.label(*unit)).collect();
        self.record(at, TimelineKind::RetryRequested { reason, steps });
        for unit in failed {
            let state = self.unit_mut(unit);
            state.phase = StepPhase::Succeeded;
            state.compensation_attempts_before_retry = state.compensation_attempts;
        }
        self.status = ExecutionStatus::Compensating;
        self.finished_at = None;
        self.compensation_queue = None;
        self.advance(at, commands);
    }

    /// Whether an operator's retry would change anything now: only a
    /// `failed` execution (a compensation that failed for good) is retried.
    pub fn accepts_retry(&self) -> bool {
        self.status == ExecutionStatus::Failed
            && self.units().any(|unit| self.unit(unit).phase == StepPhase::CompensationFailed)
    }

    /// Whether the execution rolls back after an operator's retry (a second
    /// retry then has nothing to add).
    pub fn retried_and_rolling_back(&self) -> bool {
        self.status == ExecutionStatus::Compensating
            && self.units().any(|unit| self.unit(unit).compensation_attempts_before_retry > 0)
    }

    pub(super) fn start_compensation(&mut self, unit: Unit, attempt: u32, commands: &mut Vec<Command>) {
        self.unit_mut(unit).phase = StepPhase::Compensating { attempt };
        commands.push(Command::Compensate { unit, attempt, data: self.compensation_data(unit) });
    }

    /// Compensates completed units one at a time, most recently completed
    /// first, once no unit is in flight any more.
    pub(super) fn advance_compensation(&mut self, at: Timestamp, commands: &mut Vec<Command>) {
        if self.compensation_queue.is_none() {
            if self.nodes.iter().flat_map(|n| &n.elements).any(|e| matches!(e.phase, StepPhase::Running { .. })) {
                return; // let running units settle first
            }
            let queue = self.completion_order.iter().rev().copied().collect();
            self.compensation_queue = Some(queue);
        }
        let queue = self.compensation_queue.clone().unwrap_or_default();
        for unit in queue {
            match self.unit(unit).phase {
                StepPhase::Compensated | StepPhase::CompensationFailed => continue,
                StepPhase::Compensating { .. } | StepPhase::CompensationRetryWaiting { .. } => return,
                _ => {
                    let attempt = self.unit(unit).compensation_attempts + 1;
                    self.start_compensation(unit, attempt, commands);
                    return;
                }
            }
        }
        let any_failed = self.units().any(|unit| self.unit(unit).phase == StepPhase::CompensationFailed);
        self.status = if any_failed { ExecutionStatus::Failed } else { ExecutionStatus::Compensated };
        self.finished_at = Some(at);
        self.endings += 1;
        let kind = if any_failed { TimelineKind::ExecutionFailed } else { TimelineKind::ExecutionCompensated };
        self.record(at, kind);
        commands.push(Command::Finish);
    }
}
