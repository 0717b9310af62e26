//! Recorded decisions, async steps, timeouts and rollback requests.

use super::composition::{fan_out, labels};
use super::*;

fn gift_workflow() -> Arc<Workflow> {
    Arc::new(
        Workflow::builder("w")
            .step(StepBuilder::new("wrap", "p", json!({})).when("input.gift == true"))
            .step(StepBuilder::transform("total", "input.price * 2"))
            .build(&plugins())
            .unwrap(),
    )
}

/// Applies a recorded log as a replay does: events only, nothing derived.
fn replay(workflow: Arc<Workflow>, input: Value, log: &[RecordedEvent]) -> Machine {
    let mut machine = Machine::new(workflow, ExecutionId::new("e1"), input);
    for recorded in log {
        machine.apply(recorded.at, recorded.event.clone());
    }
    machine
}

#[test]
fn a_decision_is_handed_out_to_be_recorded_and_applied_only_once_recorded() {
    let mut machine = Machine::new(gift_workflow(), ExecutionId::new("e1"), json!({"gift": true, "price": 5}));
    let commands = machine.apply(at(0), started_event());
    let decisions: Vec<(String, NodeDecision)> = commands
        .iter()
        .filter_map(|c| match c {
            Command::Decide { step, decision } => Some((step.to_string(), decision.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        decisions,
        vec![("wrap".into(), NodeDecision::Run), ("total".into(), NodeDecision::Output { output: json!(10) })]
    );
    assert!(invoked(&commands).is_empty(), "nothing runs before its decision is recorded");
    assert_eq!(machine.nodes()[0].phase, NodePhase::Deciding);
    assert_eq!(machine.status(), ExecutionStatus::Running);
    // Not recorded yet (a crash here): the decision is outstanding work.
    let outstanding = machine.outstanding_commands();
    assert_eq!(outstanding.iter().filter(|c| matches!(c, Command::Decide { .. })).count(), 2);
    let commands = machine
        .feed(at(1), Event::NodeDecided { step: crate::journal::StepId::new("wrap"), decision: NodeDecision::Run });
    assert_eq!(labels(&machine, &commands), vec!["wrap"]);
}

#[test]
fn a_replay_applies_the_recorded_decision_even_when_the_expression_now_says_otherwise() {
    // The log says `wrap` was skipped and the transform gave 99, although the
    // input would now make the condition true and the transform 10.
    let input = json!({"gift": true, "price": 5});
    let log = vec![
        RecordedEvent { at: at(0), event: started_event() },
        RecordedEvent {
            at: at(0),
            event: Event::NodeDecided {
                step: crate::journal::StepId::new("wrap"),
                decision: NodeDecision::Skip { reason: "recorded".into() },
            },
        },
        RecordedEvent {
            at: at(0),
            event: Event::NodeDecided {
                step: crate::journal::StepId::new("total"),
                decision: NodeDecision::Output { output: json!(99) },
            },
        },
    ];
    let machine = replay(gift_workflow(), input, &log);
    assert_eq!(machine.nodes()[0].phase, NodePhase::Skipped { reason: "recorded".into() });
    assert_eq!(machine.nodes()[1].output, Some(json!(99)));
    assert_eq!(machine.status(), ExecutionStatus::Succeeded);
    assert_eq!(machine.output(), Some(&json!({"wrap": null, "total": 99})));
}

#[test]
fn a_version_1_log_is_replayed_by_evaluating_its_decisions_as_it_ran() {
    let mut started = started_event();
    if let Event::ExecutionStarted { log_version, .. } = &mut started {
        *log_version = 1;
    }
    let log = vec![RecordedEvent { at: at(0), event: started }];
    let machine = replay(gift_workflow(), json!({"gift": false, "price": 4}), &log);
    assert!(matches!(machine.nodes()[0].phase, NodePhase::Skipped { .. }));
    assert_eq!(machine.nodes()[1].output, Some(json!(8)));
    assert!(machine.outstanding_commands().iter().all(|c| !matches!(c, Command::Decide { .. })));
}

#[test]
fn a_fan_out_list_is_recorded_with_the_decision() {
    let (mut machine, _) = start(fan_out(8), json!({}));
    let commands = machine.apply(at(1), Event::AttemptStarted { step: id("cart"), attempt: 1 });
    assert!(commands.is_empty());
    let items = json!([{"sku": "a"}, {"sku": "b"}]);
    let commands = machine.apply(
        at(2),
        Event::AttemptSucceeded {
            step: id("cart"),
            attempt: 1,
            output: json!({"items": items}),
            compensation: None,
            logs: vec![],
            cost: None,
        },
    );
    let [Command::Decide { decision: NodeDecision::Expand { items: listed }, .. }] = commands.as_slice() else {
        panic!("{commands:?}")
    };
    assert_eq!(Value::Array(listed.clone()), items);
}

// --- Async steps, timeouts, rollback requests ---

fn async_workflow(timeout_ms: Option<u64>) -> Arc<Workflow> {
    let mut authorize = StepBuilder::new("authorize", "p", json!({})).asynchronous();
    if let Some(timeout) = timeout_ms {
        authorize = authorize.timeout(std::time::Duration::from_millis(timeout));
    }
    Arc::new(
        Workflow::builder("w")
            .step(StepBuilder::new("reserve", "p", json!({})))
            .step(authorize.after("reserve"))
            .step(StepBuilder::new("order", "p", json!({"auth": "$.steps.authorize.output"})))
            .build(&plugins())
            .unwrap(),
    )
}

#[test]
fn an_async_step_waits_for_its_completion_and_a_repeated_completion_changes_nothing() {
    let (mut machine, _) = start(async_workflow(None), json!({}));
    succeed(&mut machine, "reserve", 1, json!({"r": 1}), None);
    succeed(&mut machine, "authorize", 1, json!({"started": true}), Some(json!({"auth": "A1"})));
    assert_eq!(machine.status(), ExecutionStatus::Waiting);
    assert!(machine.is_waiting(&id("authorize")));
    assert_eq!(machine.next_due(), None, "no timeout, no timer");
    let completed = Event::AsyncStepSucceeded { step: id("authorize"), output: json!("A1"), key: Some("k".into()) };
    let commands = machine.feed(at(5), completed.clone());
    assert_eq!(invoked(&commands), vec![(2, 1, json!({"auth": "A1"}))]);
    assert_eq!(machine.unit(Unit::single(1)).completion, Some(Completion { key: Some("k".into()), succeeded: true }));
    assert!(machine.feed(at(6), completed).is_empty(), "a second completion is stale");
}

#[test]
fn an_async_timeout_fails_the_step_and_compensates_what_completed() {
    let (mut machine, _) = start(async_workflow(Some(1000)), json!({}));
    succeed(&mut machine, "reserve", 1, json!({"r": 1}), None);
    let commands = succeed(&mut machine, "authorize", 1, json!({}), Some(json!({"auth": "A1"})));
    let timer = Timer::AsyncTimeout { step: id("authorize") };
    assert_eq!(commands, vec![Command::StartTimer { timer: timer.clone(), due: at(1002) }]);
    assert_eq!(machine.next_due(), Some(at(1002)), "the store indexes the deadline");
    assert!(machine.is_armed(&timer));
    let commands = machine.feed(at(1002), Event::TimerFired { timer: timer.clone() });
    assert_eq!(machine.error().unwrap().failure.kind, FailureKind::TimedOut);
    // Its invoke started work (an authorization hold): it is compensated
    // first, with the data its invoke returned, then what completed before.
    assert_eq!(compensating(&commands), vec![(1, json!({"auth": "A1"}))]);
    assert_eq!(compensating(&compensated(&mut machine, "authorize", 1)), vec![(0, json!({"r": 1}))]);
    assert!(!machine.is_armed(&timer), "a fired deadline is not armed again");
    assert!(machine.feed(at(1003), Event::TimerFired { timer }).is_empty());
}

#[test]
fn the_workflow_timeout_rolls_back_a_running_execution() {
    let workflow = Arc::new(
        Workflow::builder("w")
            .timeout(std::time::Duration::from_millis(500))
            .step(StepBuilder::new("a", "p", json!({})))
            .step(StepBuilder::new("b", "p", json!({"a": "$.steps.a.output"})))
            .build(&plugins())
            .unwrap(),
    );
    let (mut machine, commands) = start(workflow, json!({}));
    assert!(commands.contains(&Command::StartTimer { timer: Timer::WorkflowTimeout, due: at(500) }));
    succeed(&mut machine, "a", 1, json!(1), None);
    machine.feed(at(10), Event::AttemptStarted { step: id("b"), attempt: 1 });
    let commands = machine.feed(at(500), Event::TimerFired { timer: Timer::WorkflowTimeout });
    assert!(commands.is_empty(), "b is in flight: compensation waits for it");
    assert_eq!(machine.status(), ExecutionStatus::Compensating);
    let commands = machine.feed(
        at(501),
        Event::AttemptSucceeded {
            step: id("b"),
            attempt: 1,
            output: json!(2),
            compensation: None,
            logs: vec![],
            cost: None,
        },
    );
    assert_eq!(compensating(&commands), vec![(1, json!(2))], "b completed after all: compensated first");
    compensated(&mut machine, "b", 1);
    let commands = compensated(&mut machine, "a", 1);
    assert_eq!(commands, vec![Command::Finish]);
    assert_eq!(machine.status(), ExecutionStatus::Compensated);
    assert_eq!(machine.error().unwrap().failure.kind, FailureKind::TimedOut);
}

#[test]
fn rollback_requests_are_taken_once_and_repeated_requests_change_nothing() {
    let (mut machine, _) = start(async_workflow(None), json!({}));
    succeed(&mut machine, "reserve", 1, json!({"r": 1}), None);
    succeed(&mut machine, "authorize", 1, json!({}), Some(json!({"auth": "A1"})));
    assert!(machine.accepts_rollback());
    let commands = machine.feed(at(7), Event::RollbackRequested { reason: "operator".into() });
    assert_eq!(compensating(&commands), vec![(1, json!({"auth": "A1"}))], "the waiting async step first");
    assert!(!machine.accepts_rollback(), "already rolling back");
    assert!(machine.feed(at(8), Event::RollbackRequested { reason: "again".into() }).is_empty());
    // Its completion arriving now is stale: it is being compensated.
    let late = Event::AsyncStepSucceeded { step: id("authorize"), output: json!("A1"), key: None };
    assert!(machine.feed(at(8), late).is_empty());
    compensated(&mut machine, "authorize", 1);
    compensated(&mut machine, "reserve", 1);
    assert_eq!(machine.status(), ExecutionStatus::Compensated);
    assert!(!machine.accepts_rollback());
    assert_eq!(machine.error().unwrap().failure.message, "operator");
}

#[test]
fn a_rollback_request_while_a_step_runs_waits_for_it_then_compensates_it_once() {
    let (mut machine, _) = start(chain(3), json!({"x": 1}));
    succeed(&mut machine, "a", 1, json!({"v": 1}), None);
    machine.feed(at(3), Event::AttemptStarted { step: id("b"), attempt: 1 });
    let commands = machine.feed(at(4), Event::RollbackRequested { reason: "cancel".into() });
    assert!(commands.is_empty(), "b is in flight");
    // b fails retryably: no retry while rolling back; a is compensated.
    machine.feed(at(5), Event::AttemptStarted { step: id("b"), attempt: 1 });
    let failure = StepFailure::new(FailureKind::Retryable, "flaky");
    let commands =
        machine.feed(at(6), Event::AttemptFailed { step: id("b"), attempt: 1, failure, logs: vec![], cost: None });
    assert_eq!(compensating(&commands), vec![(0, json!({"v": 1}))]);
    assert!(!commands.iter().any(|c| matches!(c, Command::StartTimer { .. })));
}
