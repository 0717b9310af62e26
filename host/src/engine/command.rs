//! [`Command`]: what the state machine asks its owner to do next. Commands
//! are not recorded; the events they lead to are.

use super::machine::Unit;
use crate::journal::{NodeDecision, StepId, Timer, Timestamp};
use serde_json::Value;

/// What the owner must do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Call `invoke` on the unit's plugin (or start its child workflow).
    Invoke {
        /// The unit.
        unit: Unit,
        /// Attempt number.
        attempt: u32,
        /// The rendered input.
        input: Value,
    },
    /// Call `compensate` on the unit's plugin (or roll back its child workflow).
    Compensate {
        /// The unit.
        unit: Unit,
        /// Compensation attempt number.
        attempt: u32,
        /// Compensation data, or the step's output when it returned none.
        data: Value,
    },
    /// Record this decision ([`crate::journal::Event::NodeDecided`]) and apply it.
    Decide {
        /// The step or hook.
        step: StepId,
        /// What the machine decided.
        decision: NodeDecision,
    },
    /// Feed [`crate::journal::Event::TimerFired`] back at `due`.
    StartTimer {
        /// The timer.
        timer: Timer,
        /// When it fires.
        due: Timestamp,
    },
    /// The execution reached a final status.
    Finish,
}
