//! The saga rules, exercised without Wasm or a store: events in, commands out.

use super::*;
use crate::journal::{NodeDecision, RecordedEvent};
use crate::workflow::{RetryPolicy, StepBuilder, Workflow};
use serde_json::json;
use std::collections::BTreeSet;

fn plugins() -> BTreeSet<String> {
    ["p"].iter().map(|s| s.to_string()).collect()
}

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy { max_attempts, initial_backoff_ms: 100, multiplier: 2.0, max_backoff_ms: 1000, retry_traps: true }
}

/// a -> b -> c, each with `max_attempts` attempts.
fn chain(max_attempts: u32) -> Arc<Workflow> {
    Arc::new(
        Workflow::builder("chain")
            .retry(policy(max_attempts))
            .step(StepBuilder::new("a", "p", json!({"x": "$.input.x"})))
            .step(StepBuilder::new("b", "p", json!({"from_a": "$.steps.a.output.v"})))
            .step(StepBuilder::new("c", "p", json!({"from_b": "$.steps.b.output.v"})))
            .build(&plugins())
            .unwrap(),
    )
}

fn id(step: &str) -> UnitId {
    step.parse().expect("a valid unit id")
}

/// Applies events as the owner does: a decision the machine hands back is
/// recorded and applied at once; returns the other commands.
trait Feed {
    fn feed(&mut self, at: Timestamp, event: Event) -> Vec<Command>;
}

impl Feed for Machine {
    fn feed(&mut self, at: Timestamp, event: Event) -> Vec<Command> {
        let mut commands = Vec::new();
        let mut queue = std::collections::VecDeque::from(self.apply(at, event));
        while let Some(command) = queue.pop_front() {
            match command {
                Command::Decide { step, decision } => {
                    queue.extend(self.apply(at, Event::NodeDecided { step, decision }))
                }
                other => commands.push(other),
            }
        }
        commands
    }
}

fn at(ms: u64) -> Timestamp {
    Timestamp(1_000_000 + ms)
}

fn started_event() -> Event {
    Event::started_pinning_nothing()
}

fn start(workflow: Arc<Workflow>, input: Value) -> (Machine, Vec<Command>) {
    let mut machine = Machine::new(workflow, ExecutionId::new("e1"), input);
    let commands = machine.feed(at(0), started_event());
    (machine, commands)
}

fn succeed(
    machine: &mut Machine,
    step: &str,
    attempt: u32,
    output: Value,
    compensation: Option<Value>,
) -> Vec<Command> {
    machine.feed(at(1), Event::AttemptStarted { step: id(step), attempt });
    machine.feed(
        at(2),
        Event::AttemptSucceeded { step: id(step), attempt, output, compensation, logs: vec![], cost: None },
    )
}

fn fail(machine: &mut Machine, step: &str, attempt: u32, kind: FailureKind) -> Vec<Command> {
    machine.feed(at(1), Event::AttemptStarted { step: id(step), attempt });
    let failure = StepFailure::new(kind, "boom");
    machine.feed(at(2), Event::AttemptFailed { step: id(step), attempt, failure, logs: vec![], cost: None })
}

fn compensated(machine: &mut Machine, step: &str, attempt: u32) -> Vec<Command> {
    machine.feed(at(3), Event::CompensationStarted { step: id(step), attempt });
    machine.feed(at(4), Event::CompensationSucceeded { step: id(step), attempt, logs: vec![], cost: None })
}

fn invoked(commands: &[Command]) -> Vec<(usize, u32, Value)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Invoke { unit, attempt, input } => Some((unit.node, *attempt, input.clone())),
            _ => None,
        })
        .collect()
}

fn compensating(commands: &[Command]) -> Vec<(usize, Value)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Compensate { unit, data, .. } => Some((unit.node, data.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn runs_steps_in_dependency_order_wiring_outputs_into_inputs() {
    let (mut machine, commands) = start(chain(1), json!({"x": 7}));
    assert_eq!(invoked(&commands), vec![(0, 1, json!({"x": 7}))]);
    let commands = succeed(&mut machine, "a", 1, json!({"v": "A"}), None);
    assert_eq!(invoked(&commands), vec![(1, 1, json!({"from_a": "A"}))]);
    let commands = succeed(&mut machine, "b", 1, json!({"v": "B"}), None);
    assert_eq!(invoked(&commands), vec![(2, 1, json!({"from_b": "B"}))]);
    let commands = succeed(&mut machine, "c", 1, json!({"v": "C"}), None);
    assert_eq!(commands, vec![Command::Finish]);
    assert_eq!(machine.status(), ExecutionStatus::Succeeded);
    assert_eq!(machine.output(), Some(&json!({"a": {"v": "A"}, "b": {"v": "B"}, "c": {"v": "C"}})));
}

#[test]
fn independent_steps_start_together() {
    let workflow = Arc::new(
        Workflow::builder("fan")
            .step(StepBuilder::new("left", "p", json!({})))
            .step(StepBuilder::new("right", "p", json!({})))
            .step(StepBuilder::new("join", "p", json!(["$.steps.left.output", "$.steps.right.output"])))
            .build(&plugins())
            .unwrap(),
    );
    let (mut machine, commands) = start(workflow, json!({}));
    assert_eq!(invoked(&commands).iter().map(|c| c.0).collect::<Vec<_>>(), vec![0, 1]);
    assert!(invoked(&succeed(&mut machine, "right", 1, json!(2), None)).is_empty());
    assert_eq!(invoked(&succeed(&mut machine, "left", 1, json!(1), None)), vec![(2, 1, json!([1, 2]))]);
}

#[test]
fn retryable_failure_arms_a_backoff_timer_then_retries_with_the_next_attempt() {
    let (mut machine, _) = start(chain(3), json!({"x": 1}));
    let commands = fail(&mut machine, "a", 1, FailureKind::Retryable);
    let timer = Timer::Retry { step: id("a"), attempt: 2 };
    assert_eq!(
        commands,
        vec![Command::StartTimer { timer: timer.clone(), due: at(2).plus(std::time::Duration::from_millis(100)) }]
    );
    assert_eq!(machine.unit(Unit::single(0)).phase, StepPhase::RetryWaiting { attempt: 2, due: at(102) });

    let commands = machine.feed(at(102), Event::TimerFired { timer: timer.clone() });
    assert_eq!(invoked(&commands), vec![(0, 2, json!({"x": 1}))]);
    // The same timer firing twice (a replayed or stale timer) changes nothing.
    assert!(machine.feed(at(103), Event::TimerFired { timer }).is_empty());

    let commands = fail(&mut machine, "a", 2, FailureKind::Trap);
    let Command::StartTimer { due, .. } = &commands[0] else { panic!("{commands:?}") };
    assert_eq!(*due, at(2).plus(std::time::Duration::from_millis(200)), "backoff doubles");
}

#[test]
fn exhausted_retries_fail_the_step_and_with_nothing_completed_the_saga_is_compensated() {
    let (mut machine, _) = start(chain(2), json!({"x": 1}));
    fail(&mut machine, "a", 1, FailureKind::Retryable);
    machine.feed(at(200), Event::TimerFired { timer: Timer::Retry { step: id("a"), attempt: 2 } });
    let commands = fail(&mut machine, "a", 2, FailureKind::Retryable);
    assert_eq!(commands, vec![Command::Finish]);
    assert_eq!(machine.status(), ExecutionStatus::Compensated);
    assert_eq!(machine.unit(Unit::single(0)).phase, StepPhase::Failed);
    assert_eq!(machine.unit(Unit::single(0)).attempts, 2);
}

#[test]
fn permanent_failure_is_not_retried_and_completed_steps_are_compensated_in_reverse_order() {
    let (mut machine, _) = start(chain(5), json!({"x": 1}));
    succeed(&mut machine, "a", 1, json!({"v": 1}), Some(json!({"undo": "a"})));
    succeed(&mut machine, "b", 1, json!({"v": 2}), None);
    let commands = fail(&mut machine, "c", 1, FailureKind::Permanent);
    assert_eq!(machine.status(), ExecutionStatus::Compensating);
    // b first, with its output since it returned no compensation data ...
    assert_eq!(compensating(&commands), vec![(1, json!({"v": 2}))]);
    // ... then a, with its compensation data.
    let commands = compensated(&mut machine, "b", 1);
    assert_eq!(compensating(&commands), vec![(0, json!({"undo": "a"}))]);
    let commands = compensated(&mut machine, "a", 1);
    assert_eq!(commands, vec![Command::Finish]);
    assert_eq!(machine.status(), ExecutionStatus::Compensated);
    let error = machine.error().unwrap();
    assert_eq!(error.step, Some(id("c")));
    assert_eq!(error.failure.kind, FailureKind::Permanent);
}

#[test]
fn traps_are_not_retried_when_the_policy_says_so() {
    let workflow = Arc::new(
        Workflow::builder("w")
            .step(StepBuilder::new("a", "p", json!({})).retry(RetryPolicy { retry_traps: false, ..policy(5) }))
            .build(&plugins())
            .unwrap(),
    );
    let (mut machine, _) = start(workflow, json!({}));
    assert_eq!(fail(&mut machine, "a", 1, FailureKind::Trap), vec![Command::Finish]);
}

#[test]
fn a_failing_compensation_is_retried_then_the_execution_fails_but_other_steps_are_still_compensated() {
    let (mut machine, _) = start(chain(2), json!({"x": 1}));
    succeed(&mut machine, "a", 1, json!({"v": 1}), None);
    succeed(&mut machine, "b", 1, json!({"v": 2}), None);
    fail(&mut machine, "c", 1, FailureKind::Permanent);
    machine.feed(at(3), Event::CompensationStarted { step: id("b"), attempt: 1 });
    let failure = StepFailure::new(FailureKind::Retryable, "down");
    let commands = machine.feed(
        at(4),
        Event::CompensationFailed { step: id("b"), attempt: 1, failure: failure.clone(), logs: vec![], cost: None },
    );
    let timer = Timer::CompensationRetry { step: id("b"), attempt: 2 };
    assert!(matches!(&commands[..], [Command::StartTimer { timer: t, .. }] if *t == timer));
    let commands = machine.feed(at(200), Event::TimerFired { timer });
    assert_eq!(compensating(&commands).len(), 1);
    machine.feed(at(201), Event::CompensationStarted { step: id("b"), attempt: 2 });
    let commands = machine
        .feed(at(202), Event::CompensationFailed { step: id("b"), attempt: 2, failure, logs: vec![], cost: None });
    // b is given up on; a is still compensated.
    assert_eq!(compensating(&commands), vec![(0, json!({"v": 1}))]);
    assert_eq!(compensated(&mut machine, "a", 1), vec![Command::Finish]);
    assert_eq!(machine.status(), ExecutionStatus::Failed);
    assert_eq!(machine.unit(Unit::single(1)).phase, StepPhase::CompensationFailed);
    assert_eq!(machine.unit(Unit::single(1)).compensation_attempts, 2);
}

#[test]
fn running_steps_settle_before_compensation_and_steps_waiting_to_retry_are_cancelled() {
    let workflow = Arc::new(
        Workflow::builder("w")
            .retry(policy(3))
            .step(StepBuilder::new("slow", "p", json!({})))
            .step(StepBuilder::new("flaky", "p", json!({})))
            .step(StepBuilder::new("bad", "p", json!({})))
            .build(&plugins())
            .unwrap(),
    );
    let (mut machine, commands) = start(workflow, json!({}));
    assert_eq!(invoked(&commands).len(), 3);
    machine.feed(at(1), Event::AttemptStarted { step: id("slow"), attempt: 1 });
    fail(&mut machine, "flaky", 1, FailureKind::Retryable);
    let commands = fail(&mut machine, "bad", 1, FailureKind::Permanent);
    assert!(commands.is_empty(), "slow is still running: {commands:?}");
    assert_eq!(machine.unit(Unit::single(1)).phase, StepPhase::Cancelled);
    // The slow step completes after the failure: it is compensated.
    let commands = machine.feed(
        at(5),
        Event::AttemptSucceeded {
            step: id("slow"),
            attempt: 1,
            output: json!("s"),
            compensation: None,
            logs: vec![],
            cost: None,
        },
    );
    assert_eq!(compensating(&commands), vec![(0, json!("s"))]);
    // The cancelled step's timer fires late: ignored.
    let late = Timer::Retry { step: id("flaky"), attempt: 2 };
    assert!(machine.feed(at(500), Event::TimerFired { timer: late }).is_empty());
    assert_eq!(compensated(&mut machine, "slow", 1), vec![Command::Finish]);
}

#[test]
fn a_missing_input_path_fails_the_step_permanently() {
    let (mut machine, _) = start(chain(3), json!({"x": 1}));
    let commands = succeed(&mut machine, "a", 1, json!({"no_v": true}), None);
    let step = &machine.unit(Unit::single(1));
    assert_eq!(step.phase, StepPhase::Failed);
    assert_eq!(step.error.as_ref().unwrap().kind, FailureKind::InputMapping);
    assert!(step.error.as_ref().unwrap().message.contains("$.steps.a.output.v"));
    assert_eq!(compensating(&commands), vec![(0, json!({"no_v": true}))]);
}

#[test]
fn results_for_attempts_not_in_flight_are_ignored() {
    let (mut machine, _) = start(chain(3), json!({"x": 1}));
    let stale = Event::AttemptSucceeded {
        step: id("b"),
        attempt: 1,
        output: json!(1),
        compensation: None,
        logs: vec![],
        cost: None,
    };
    assert!(machine.feed(at(1), stale).is_empty());
    assert_eq!(machine.nodes()[1].phase, NodePhase::Pending);
    let unknown = Event::AttemptStarted { step: id("nope"), attempt: 1 };
    assert!(machine.feed(at(1), unknown).is_empty());
}

#[test]
fn replaying_the_same_events_rebuilds_the_same_state_and_outstanding_work() {
    let (mut machine, _) = start(chain(3), json!({"x": 1}));
    let mut log = vec![(at(0), started_event())];
    let mut record = |machine: &mut Machine, when: Timestamp, event: Event| {
        log.push((when, event.clone()));
        machine.feed(when, event)
    };
    record(&mut machine, at(1), Event::AttemptStarted { step: id("a"), attempt: 1 });
    record(
        &mut machine,
        at(2),
        Event::AttemptSucceeded {
            step: id("a"),
            attempt: 1,
            output: json!({"v": 1}),
            compensation: None,
            logs: vec![],
            cost: None,
        },
    );
    record(&mut machine, at(3), Event::AttemptStarted { step: id("b"), attempt: 1 });

    let mut replayed = Machine::new(chain(3), ExecutionId::new("e1"), json!({"x": 1}));
    for (when, event) in log {
        replayed.feed(when, event);
    }
    assert_eq!(replayed.nodes(), machine.nodes());
    assert_eq!(replayed.timeline(), machine.timeline());
    // b was in flight when the log ends: it is the work to resume, same attempt.
    assert_eq!(invoked(&replayed.outstanding_commands()), vec![(1, 1, json!({"from_a": 1}))]);
}

#[test]
fn outstanding_work_includes_armed_timers_and_compensations() {
    let (mut machine, _) = start(chain(3), json!({"x": 1}));
    fail(&mut machine, "a", 1, FailureKind::Retryable);
    assert!(matches!(&machine.outstanding_commands()[..], [Command::StartTimer { .. }]));

    let (mut machine, _) = start(chain(1), json!({"x": 1}));
    succeed(&mut machine, "a", 1, json!({"v": 1}), None);
    fail(&mut machine, "b", 1, FailureKind::Permanent);
    assert_eq!(compensating(&machine.outstanding_commands()), vec![(0, json!({"v": 1}))]);
}

#[test]
fn output_template_failure_rolls_back() {
    let workflow = Arc::new(
        Workflow::builder("w")
            .step(StepBuilder::new("a", "p", json!({})))
            .output(json!({"id": "$.steps.a.output.id"}))
            .build(&plugins())
            .unwrap(),
    );
    let (mut machine, _) = start(workflow, json!({}));
    let commands = succeed(&mut machine, "a", 1, json!({}), None);
    assert_eq!(compensating(&commands).len(), 1);
    assert_eq!(machine.error().unwrap().failure.kind, FailureKind::OutputMapping);
    assert_eq!(machine.error().unwrap().step, None);
}

mod composition;
mod decisions;
mod skips;
