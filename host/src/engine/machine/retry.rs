//! Where a step is retried: whether a failed `invoke` or `compensate` attempt
//! is tried again, and after which backoff. The policy itself (attempts,
//! backoff, whether traps retry) is data of the workflow definition
//! ([`RetryPolicy`]); the rules that read it are all here. The wait is a
//! timer the owner arms ([`Timer::Retry`], [`Timer::CompensationRetry`]).

use super::{Machine, StepPhase, Unit};
use crate::engine::command::Command;
use crate::engine::timeline::TimelineKind;
use crate::journal::{FailureKind, StepFailure, Timer, Timestamp, UnitId};
use crate::workflow::RetryPolicy;
use std::time::Duration;

/// Whether a failure of `kind` is retried under `policy`.
pub fn is_retryable(kind: FailureKind, policy: &RetryPolicy) -> bool {
    match kind {
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

/// The delay before attempt `next_attempt` (2 or more): exponential from the
/// initial backoff, capped.
pub fn backoff_before(policy: &RetryPolicy, next_attempt: u32) -> Duration {
    let exponent = next_attempt.saturating_sub(2) as i32;
    let delay = policy.initial_backoff_ms as f64 * policy.multiplier.powi(exponent);
    Duration::from_millis(delay.min(policy.max_backoff_ms as f64) as u64)
}

/// When attempt `attempt` failed with `failure`: the due time of the next
/// attempt, or none when the failure is final.
fn next_attempt_due(policy: &RetryPolicy, attempt: u32, failure: &StepFailure, at: Timestamp) -> Option<Timestamp> {
    (is_retryable(failure.kind, policy) && attempt < policy.max_attempts)
        .then(|| at.plus(backoff_before(policy, attempt + 1)))
}

/// Whether and when a failed attempt of a unit is tried again.
struct Retry {
    step: UnitId,
    due: Option<Timestamp>,
    retry_in_ms: Option<u64>,
}

impl Machine {
    /// The retry decision for attempt `attempt` of `unit`, which failed with
    /// `failure` at `at`; `allowed` is false when nothing may be retried now.
    fn retry(&self, unit: Unit, attempt: u32, failure: &StepFailure, at: Timestamp, allowed: bool) -> Retry {
        let policy = &self.workflow.steps()[unit.node].retry;
        let due = next_attempt_due(policy, attempt, failure, at).filter(|_| allowed);
        Retry { step: self.label(unit), due, retry_in_ms: due.map(|due| at.until(due).as_millis() as u64) }
    }

    /// An `invoke` attempt failed: retry after the backoff (only while the
    /// execution moves forward), or fail the unit for good.
    pub(super) fn attempt_failed(
        &mut self,
        at: Timestamp,
        unit: Unit,
        attempt: u32,
        failure: StepFailure,
        commands: &mut Vec<Command>,
    ) {
        let Retry { step, due, retry_in_ms } = self.retry(unit, attempt, &failure, at, self.status.is_forward());
        self.record(
            at,
            TimelineKind::StepAttemptFailed { step: step.clone(), attempt, error: failure.clone(), retry_in_ms },
        );
        match due {
            Some(due) => {
                let state = self.unit_mut(unit);
                state.phase = StepPhase::RetryWaiting { attempt: attempt + 1, due };
                state.error = Some(failure);
                commands.push(Command::StartTimer { timer: Timer::Retry { step, attempt: attempt + 1 }, due });
            }
            None => self.fail_unit(at, unit, failure),
        }
    }

    /// A `compensate` attempt failed: retry after the backoff, or give up on
    /// the unit (the execution will end `failed`).
    pub(super) fn compensation_failed(
        &mut self,
        at: Timestamp,
        unit: Unit,
        attempt: u32,
        failure: StepFailure,
        commands: &mut Vec<Command>,
    ) {
        // After an operator's retry the policy grants a fresh set of attempts.
        let counted = attempt.saturating_sub(self.unit(unit).compensation_attempts_before_retry);
        let Retry { step, due, retry_in_ms } = self.retry(unit, counted, &failure, at, true);
        self.record(
            at,
            TimelineKind::CompensationAttemptFailed {
                step: step.clone(),
                attempt,
                error: failure.clone(),
                retry_in_ms,
            },
        );
        let state = self.unit_mut(unit);
        state.compensation_error = Some(failure.clone());
        match due {
            Some(due) => {
                state.phase = StepPhase::CompensationRetryWaiting { attempt: attempt + 1, due };
                let timer = Timer::CompensationRetry { step, attempt: attempt + 1 };
                commands.push(Command::StartTimer { timer, due });
            }
            None => {
                state.phase = StepPhase::CompensationFailed;
                let attempts = state.compensation_attempts;
                self.record(at, TimelineKind::CompensationFailed { step, attempts, error: failure });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_errors_are_never_retried_and_traps_follow_the_policy() {
        let retry_traps = RetryPolicy::default();
        let no_trap_retry = RetryPolicy { retry_traps: false, ..RetryPolicy::default() };
        assert!(is_retryable(FailureKind::Retryable, &no_trap_retry));
        assert!(!is_retryable(FailureKind::Permanent, &retry_traps));
        assert!(is_retryable(FailureKind::Trap, &retry_traps));
        assert!(!is_retryable(FailureKind::Trap, &no_trap_retry));
        assert!(!is_retryable(FailureKind::InputMapping, &retry_traps));
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let policy =
            RetryPolicy { initial_backoff_ms: 100, multiplier: 2.0, max_backoff_ms: 350, ..Default::default() };
        assert_eq!(backoff_before(&policy, 2), Duration::from_millis(100));
        assert_eq!(backoff_before(&policy, 3), Duration::from_millis(200));
        assert_eq!(backoff_before(&policy, 4), Duration::from_millis(350));
        assert_eq!(backoff_before(&policy, 40), Duration::from_millis(350));
    }
}
