//! What an owner takes in, as a pure step: an event (a call's result, a
//! fired timer) or an outside event (a completion, a cancel, a wake-up) is
//! applied to the machine together with everything it leads to, producing
//! the events to record in one append and the commands to perform after it.
//!
//! No I/O and no clock: the owner passes the time, and the deterministic
//! simulation ([`super::simulation`]) drives exactly these functions under
//! random schedules and crashes. The rule that decides whether an outside
//! event is taken lives here, so the owner and the simulation agree on it.

use super::command::Command;
use super::machine::{Machine, StepPhase, Unit};
use super::outside::{check_completion, Answer, Outside, Refusal};
use crate::journal::{EncodedEvent, Event, Timestamp};
use std::collections::{HashSet, VecDeque};

/// The events one step records and the commands it leads to.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Events to record, in order, in one append (encoded before the
    /// machine takes them).
    pub recorded: Vec<EncodedEvent>,
    /// Commands to perform once they are recorded.
    pub commands: Vec<Command>,
    /// Commands not looked at yet.
    pending: VecDeque<Command>,
}

impl Batch {
    /// A batch that starts by performing `outstanding` (what a replayed log
    /// left to do).
    pub(crate) fn resuming(outstanding: Vec<Command>) -> Self {
        Self { pending: outstanding.into(), ..Self::default() }
    }

    /// Whether the batch calls `unit` already.
    fn invokes(&self, unit: Unit) -> bool {
        self.commands.iter().any(|command| matches!(command, Command::Invoke { unit: called, .. } if *called == unit))
    }
}

/// Applies an event and records it, with everything it leads to.
pub(crate) fn record(machine: &mut Machine, now: Timestamp, event: Event, batch: &mut Batch) {
    record_all(machine, now, VecDeque::from([event]), batch);
}

/// Applies events and what follows from them: every call about to be made
/// gets its start event, every decision its record, and timers already due
/// fire at once (a resumed execution acts on deadlines that passed while
/// nobody drove it).
pub(crate) fn record_all(machine: &mut Machine, now: Timestamp, mut todo: VecDeque<Event>, batch: &mut Batch) {
    loop {
        if let Some(event) = todo.pop_front() {
            batch.recorded.push(EncodedEvent::new(now, &event));
            batch.pending.extend(machine.apply(now, event));
            continue;
        }
        let Some(command) = batch.pending.pop_front() else { break };
        match command {
            // A waiting child is only looked at again: its attempt already started.
            Command::Invoke { unit, attempt, .. }
                if !matches!(machine.unit(unit).phase, StepPhase::ChildWaiting { .. }) =>
            {
                todo.push_back(Event::AttemptStarted { step: machine.label(unit), attempt });
                batch.commands.push(command);
            }
            Command::Compensate { unit, attempt, .. } => {
                todo.push_back(Event::CompensationStarted { step: machine.label(unit), attempt });
                batch.commands.push(command);
            }
            Command::Decide { step, decision } => todo.push_back(Event::NodeDecided { step, decision }),
            Command::StartTimer { timer, due } if due <= now => {
                if machine.is_armed(&timer) {
                    todo.push_back(Event::TimerFired { timer })
                }
            }
            command => batch.commands.push(command),
        }
    }
}

/// Takes an outside event on the state as it is now: whether it is
/// accepted, and (recorded in `batch`) what it changes. `busy` are the
/// units with a call in flight.
pub(crate) fn take_outside(
    machine: &mut Machine,
    now: Timestamp,
    request: Outside,
    busy: &HashSet<Unit>,
    batch: &mut Batch,
) -> Result<Answer, Refusal> {
    // A deadline that passed decides first: a completion that arrives after
    // its step's timeout finds the step timed out, however late the timer.
    fire_due_timers(machine, now, batch);
    let (event, answer) = match request {
        Outside::Complete { step, output, key } => {
            let answer = check_completion(machine, &step, key.as_deref(), true)?;
            (answer.records().then_some(Event::AsyncStepSucceeded { step, output, key }), answer)
        }
        Outside::Fail { step, message, key } => {
            let answer = check_completion(machine, &step, key.as_deref(), false)?;
            (answer.records().then_some(Event::AsyncStepFailed { step, message, key }), answer)
        }
        Outside::Cancel { reason } => {
            let accepted = machine.accepts_rollback();
            let answer = if accepted { Answer::Accepted } else { Answer::AlreadyDone };
            (accepted.then_some(Event::RollbackRequested { reason }), answer)
        }
        Outside::Retry { reason } => {
            if machine.accepts_retry() {
                (Some(Event::RetryRequested { reason }), Answer::Accepted)
            } else if machine.retried_and_rolling_back() {
                (None, Answer::AlreadyDone)
            } else {
                let status = machine.status();
                return Err(Refusal::NotRetryable(format!(
                    "execution `{}` is {}: only a `failed` execution (a compensation that failed for good) \
                     can be retried",
                    machine.execution_id(),
                    status.as_str()
                )));
            }
        }
        Outside::Wake => {
            wake(machine, busy, batch);
            (None, Answer::AlreadyDone)
        }
    };
    if let Some(event) = event {
        record(machine, now, event, batch);
    }
    Ok(answer)
}

/// Looks again at children that waited (one of them may be over); due
/// deadlines were fired before. A child looked at already, by a call in
/// flight or by an earlier wake-up of the same step (two children that end
/// together), is not looked at twice.
fn wake(machine: &mut Machine, busy: &HashSet<Unit>, batch: &mut Batch) {
    for command in machine.outstanding_commands() {
        match command {
            Command::Invoke { unit, .. }
                if !busy.contains(&unit)
                    && !batch.invokes(unit)
                    && matches!(machine.unit(unit).phase, StepPhase::ChildWaiting { .. }) =>
            {
                batch.commands.push(command)
            }
            _ => {}
        }
    }
}

/// Fires every armed timer whose time has come (deadlines that passed while
/// nobody drove the execution, or before the owner's own timer woke it).
fn fire_due_timers(machine: &mut Machine, now: Timestamp, batch: &mut Batch) {
    if machine.next_due().is_none_or(|due| due > now) {
        return;
    }
    for command in machine.outstanding_commands() {
        if let Command::StartTimer { timer, due } = command {
            if due <= now && machine.is_armed(&timer) {
                record(machine, now, Event::TimerFired { timer }, batch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::ExecutionId;
    use crate::workflow::{StepBuilder, Workflow};
    use serde_json::json;
    use std::sync::Arc;

    /// An execution whose only step waits for its child.
    fn waiting_on_a_child() -> Machine {
        let plugins: std::collections::BTreeSet<String> = ["p".to_string()].into();
        let workflow = Workflow::builder("w").step(StepBuilder::new("a", "p", json!({}))).build(&plugins).unwrap();
        let mut machine = Machine::new(Arc::new(workflow), ExecutionId::new("e1"), json!({}));
        let now = Timestamp(1_000);
        let step: crate::journal::UnitId = "a".parse().unwrap();
        for event in [
            Event::started_pinning_nothing(),
            Event::AttemptStarted { step: step.clone(), attempt: 1 },
            Event::ChildWaiting { step, attempt: 1 },
        ] {
            machine.apply(now, event);
        }
        machine
    }

    #[test]
    fn two_wake_ups_in_one_step_look_at_a_waiting_child_once() {
        let mut machine = waiting_on_a_child();
        let mut batch = Batch::default();
        for _ in 0..2 {
            let answer = take_outside(&mut machine, Timestamp(2_000), Outside::Wake, &HashSet::new(), &mut batch);
            assert_eq!(answer, Ok(Answer::AlreadyDone));
        }
        assert_eq!(
            batch.commands.iter().filter(|command| matches!(command, Command::Invoke { .. })).count(),
            1,
            "{:?}",
            batch.commands
        );
        assert!(batch.recorded.is_empty(), "a wake-up records nothing of its own");
    }

    #[test]
    fn a_wake_up_leaves_a_child_whose_call_is_in_flight_alone() {
        let mut machine = waiting_on_a_child();
        let unit = machine.unit_of(&"a".parse().unwrap()).unwrap();
        let mut batch = Batch::default();
        take_outside(&mut machine, Timestamp(2_000), Outside::Wake, &HashSet::from([unit]), &mut batch).unwrap();
        assert!(batch.commands.is_empty(), "{:?}", batch.commands);
    }
}
