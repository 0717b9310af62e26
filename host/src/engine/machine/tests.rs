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
    Event::ExecutionStarted {
        plugins: Default::default(),
        handlers: Default::default(),
        workflows: Default::default(),
        log_version: LOG_VERSION,
    }
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
    machine.feed(at(2), Event::AttemptSucceeded { step: id(step), attempt, output, compensation, logs: vec![] })
}

fn fail(machine: &mut Machine, step: &str, attempt: u32, kind: FailureKind) -> Vec<Command> {
    machine.feed(at(1), Event::AttemptStarted { step: id(step), attempt });
    let failure = StepFailure::new(kind, "boom");
    machine.feed(at(2), Event::AttemptFailed { step: id(step), attempt, failure, logs: vec![] })
}

fn compensated(machine: &mut Machine, step: &str, attempt: u32) -> Vec<Command> {
    machine.feed(at(3), Event::CompensationStarted { step: id(step), attempt });
    machine.feed(at(4), Event::CompensationSucceeded { step: id(step), attempt, logs: vec![] })
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
    let commands = machine
        .feed(at(4), Event::CompensationFailed { step: id("b"), attempt: 1, failure: failure.clone(), logs: vec![] });
    let timer = Timer::CompensationRetry { step: id("b"), attempt: 2 };
    assert!(matches!(&commands[..], [Command::StartTimer { timer: t, .. }] if *t == timer));
    let commands = machine.feed(at(200), Event::TimerFired { timer });
    assert_eq!(compensating(&commands).len(), 1);
    machine.feed(at(201), Event::CompensationStarted { step: id("b"), attempt: 2 });
    let commands =
        machine.feed(at(202), Event::CompensationFailed { step: id("b"), attempt: 2, failure, logs: vec![] });
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
        Event::AttemptSucceeded { step: id("slow"), attempt: 1, output: json!("s"), compensation: None, logs: vec![] },
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
    let stale =
        Event::AttemptSucceeded { step: id("b"), attempt: 1, output: json!(1), compensation: None, logs: vec![] };
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

// --- Composition: conditions, transforms, fan-out, hooks, rollback requests ---

fn started_with_handlers(
    workflow: Arc<Workflow>,
    input: Value,
    hook: &str,
    plugins: &[&str],
) -> (Machine, Vec<Command>) {
    let handlers = plugins
        .iter()
        .enumerate()
        .map(|(i, p)| HandlerBinding { plugin: crate::journal::PluginName::new(p), priority: i as i32 })
        .collect();
    let mut machine = Machine::new(workflow, ExecutionId::new("e1"), input);
    let event = Event::ExecutionStarted {
        plugins: Default::default(),
        handlers: [(hook.to_string(), handlers)].into_iter().collect(),
        workflows: Default::default(),
        log_version: LOG_VERSION,
    };
    let commands = machine.feed(at(0), event);
    (machine, commands)
}

fn labels(machine: &Machine, commands: &[Command]) -> Vec<String> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Invoke { unit, .. } => Some(machine.label(*unit).to_string()),
            _ => None,
        })
        .collect()
}

fn compensated_labels(machine: &Machine, commands: &[Command]) -> Vec<String> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Compensate { unit, .. } => Some(machine.label(*unit).to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_false_condition_skips_the_step_and_every_step_that_needs_its_output() {
    let workflow = Arc::new(
        Workflow::builder("w")
            .step(StepBuilder::new("wrap", "p", json!({})).when("input.gift == true"))
            .step(StepBuilder::new("note", "p", json!({"wrapped": "$.steps.wrap.output"})))
            .step(StepBuilder::new("ordered", "p", json!({})).after("wrap"))
            .output(json!({"wrapped": "$.steps.wrap.output"}))
            .build(&plugins())
            .unwrap(),
    );
    let (mut machine, commands) = start(workflow.clone(), json!({"gift": false}));
    // `after` only orders: a skipped step lets it run; `note` reads its output and is skipped.
    assert_eq!(labels(&machine, &commands), vec!["ordered"]);
    assert_eq!(
        machine.nodes()[0].phase,
        NodePhase::Skipped { reason: "condition `input.gift == true` is false".into() }
    );
    assert_eq!(
        machine.nodes()[1].phase,
        NodePhase::Skipped { reason: "needs the output of skipped step `wrap`".into() }
    );
    succeed(&mut machine, "ordered", 1, json!(1), None);
    assert_eq!(machine.status(), ExecutionStatus::Succeeded);
    assert_eq!(machine.output(), Some(&json!({"wrapped": null})), "a skipped step reads as null in the output");

    let (machine, commands) = start(workflow, json!({"gift": true}));
    assert_eq!(labels(&machine, &commands), vec!["wrap"]);
}

#[test]
fn a_condition_that_cannot_be_evaluated_fails_the_step_and_rolls_back() {
    let workflow = Arc::new(
        Workflow::builder("w")
            .step(StepBuilder::new("a", "p", json!({})))
            .step(StepBuilder::new("b", "p", json!({})).when("steps.a.output.missing > 1"))
            .build(&plugins())
            .unwrap(),
    );
    let (mut machine, _) = start(workflow, json!({}));
    let commands = succeed(&mut machine, "a", 1, json!({}), None);
    assert_eq!(compensated_labels(&machine, &commands), vec!["a"]);
    assert_eq!(machine.error().unwrap().failure.kind, FailureKind::Expression);
    assert_eq!(machine.error().unwrap().step, Some(id("b")));
}

#[test]
fn a_transform_computes_its_output_in_the_machine_and_is_not_compensated() {
    let workflow = Arc::new(
        Workflow::builder("w")
            .step(StepBuilder::new("a", "p", json!({})))
            .step(StepBuilder::transform("double", "steps.a.output.n * 2"))
            .step(StepBuilder::new("c", "p", json!({"n": "$.steps.double.output"})))
            .build(&plugins())
            .unwrap(),
    );
    let (mut machine, _) = start(workflow, json!({}));
    let commands = succeed(&mut machine, "a", 1, json!({"n": 21}), None);
    assert_eq!(invoked(&commands), vec![(2, 1, json!({"n": 42}))]);
    let commands = fail(&mut machine, "c", 1, FailureKind::Permanent);
    assert_eq!(compensated_labels(&machine, &commands), vec!["a"], "the transform has nothing to undo");
}

fn fan_out(max_concurrency: u32) -> Arc<Workflow> {
    Arc::new(
        Workflow::builder("w")
            .step(StepBuilder::new("cart", "p", json!({})))
            .step(
                StepBuilder::new("line", "p", json!({"sku": "$.item.sku", "at": "$.index"}))
                    .for_each("$.steps.cart.output.items", Some(max_concurrency))
                    .retry(policy(1)),
            )
            .build(&plugins())
            .unwrap(),
    )
}

#[test]
fn a_fan_out_runs_one_unit_per_element_within_its_concurrency_and_collects_outputs_in_order() {
    let (mut machine, _) = start(fan_out(2), json!({}));
    let items = json!({"items": [{"sku": "A"}, {"sku": "B"}, {"sku": "C"}]});
    let commands = succeed(&mut machine, "cart", 1, items, None);
    assert_eq!(labels(&machine, &commands), vec!["line[0]", "line[1]"]);
    assert_eq!(invoked(&commands)[1].2, json!({"sku": "B", "at": 1}));
    // Element 1 finishing frees a slot for element 2; outputs keep element order.
    let commands = succeed(&mut machine, "line[1]", 1, json!("b"), None);
    assert_eq!(labels(&machine, &commands), vec!["line[2]"]);
    succeed(&mut machine, "line[2]", 1, json!("c"), None);
    succeed(&mut machine, "line[0]", 1, json!("a"), None);
    assert_eq!(machine.status(), ExecutionStatus::Succeeded);
    assert_eq!(machine.nodes()[1].output, Some(json!(["a", "b", "c"])));
}

#[test]
fn a_failed_element_compensates_every_completed_element_once_with_its_own_data() {
    let (mut machine, _) = start(fan_out(2), json!({}));
    succeed(&mut machine, "cart", 1, json!({"items": [{"sku": "A"}, {"sku": "B"}, {"sku": "C"}, {"sku": "D"}]}), None);
    // line[0] finishing lets line[2] start beside line[1].
    let commands = succeed(&mut machine, "line[0]", 1, json!("a"), Some(json!({"undo": 0})));
    assert_eq!(labels(&machine, &commands), vec!["line[2]"]);
    machine.feed(at(1), Event::AttemptStarted { step: id("line[2]"), attempt: 1 });
    let commands = fail(&mut machine, "line[1]", 1, FailureKind::Permanent);
    assert!(compensated_labels(&machine, &commands).is_empty(), "line[2] is still running");
    // line[2] settles after the failure; line[3] never started.
    let commands = machine.feed(
        at(5),
        Event::AttemptSucceeded {
            step: id("line[2]"),
            attempt: 1,
            output: json!("c"),
            compensation: None,
            logs: vec![],
        },
    );
    assert_eq!(compensated_labels(&machine, &commands), vec!["line[2]"]);
    let commands = compensated(&mut machine, "line[2]", 1);
    assert_eq!(compensating(&commands), vec![(1, json!({"undo": 0}))]);
    assert_eq!(compensated_labels(&machine, &commands), vec!["line[0]"]);
    let commands = compensated(&mut machine, "line[0]", 1);
    assert_eq!(compensated_labels(&machine, &commands), vec!["cart"]);
    compensated(&mut machine, "cart", 1);
    assert_eq!(machine.status(), ExecutionStatus::Compensated);
    assert_eq!(machine.unit(Unit { node: 1, element: 3 }).phase, StepPhase::Pending);
    assert_eq!(machine.error().unwrap().step, Some(id("line[1]")));
}

#[test]
fn a_fan_out_over_something_that_is_not_an_array_fails_the_step() {
    let (mut machine, _) = start(fan_out(3), json!({}));
    let commands = succeed(&mut machine, "cart", 1, json!({"items": "none"}), None);
    assert_eq!(compensated_labels(&machine, &commands), vec!["cart"]);
    assert!(machine.error().unwrap().failure.message.contains("is not an array"));
}

fn hooked() -> Arc<Workflow> {
    Arc::new(
        Workflow::builder("w")
            .step(StepBuilder::new("cart", "p", json!({})))
            .hook(crate::workflow::HookBuilder::new("check", json!("$.steps.cart.output")))
            .step(StepBuilder::new("pay", "p", json!({"checks": "$.hooks.check.output"})))
            .output(json!({"by_plugin": "$.hooks.check.handlers.limit.output"}))
            .build(&plugins())
            .unwrap(),
    )
}

#[test]
fn hook_handlers_run_one_after_another_and_their_outputs_are_referable() {
    let (mut machine, _) = started_with_handlers(hooked(), json!({}), "check", &["enrich", "limit"]);
    let commands = succeed(&mut machine, "cart", 1, json!({"total": 5}), None);
    assert_eq!(labels(&machine, &commands), vec!["check[enrich]"]);
    assert_eq!(machine.target(Unit { node: 2, element: 1 }), Target::Plugin(crate::journal::PluginName::new("limit")));
    let commands = succeed(&mut machine, "check[enrich]", 1, json!({"tier": "gold"}), None);
    assert_eq!(labels(&machine, &commands), vec!["check[limit]"]);
    let commands = succeed(&mut machine, "check[limit]", 1, json!({"ok": true}), None);
    assert_eq!(invoked(&commands), vec![(1, 1, json!({"checks": [{"tier": "gold"}, {"ok": true}]}))]);
    succeed(&mut machine, "pay", 1, json!({}), None);
    assert_eq!(machine.output(), Some(&json!({"by_plugin": {"ok": true}})));
}

#[test]
fn a_hook_without_handlers_is_a_no_op() {
    let (mut machine, _) = start(hooked(), json!({}));
    let commands = succeed(&mut machine, "cart", 1, json!({}), None);
    assert_eq!(invoked(&commands), vec![(1, 1, json!({"checks": []}))]);
}

#[test]
fn a_handler_veto_compensates_everything_completed_including_earlier_handlers() {
    let (mut machine, _) = started_with_handlers(hooked(), json!({}), "check", &["enrich", "limit"]);
    succeed(&mut machine, "cart", 1, json!({}), None);
    succeed(&mut machine, "check[enrich]", 1, json!({}), Some(json!({"restore": true})));
    let commands = fail(&mut machine, "check[limit]", 1, FailureKind::Permanent);
    assert_eq!(compensating(&commands), vec![(2, json!({"restore": true}))]);
    let commands = compensated(&mut machine, "check[enrich]", 1);
    assert_eq!(compensated_labels(&machine, &commands), vec!["cart"]);
}

#[test]
fn a_rollback_requested_after_success_compensates_every_step_in_reverse_order() {
    let (mut machine, _) = start(chain(1), json!({"x": 1}));
    succeed(&mut machine, "a", 1, json!({"v": 1}), None);
    succeed(&mut machine, "b", 1, json!({"v": 2}), None);
    succeed(&mut machine, "c", 1, json!({"v": 3}), None);
    assert_eq!(machine.status(), ExecutionStatus::Succeeded);
    let commands = machine.feed(at(10), Event::RollbackRequested { reason: "parent rolls back".into() });
    assert_eq!(compensated_labels(&machine, &commands), vec!["c"]);
    compensated(&mut machine, "c", 1);
    compensated(&mut machine, "b", 1);
    assert_eq!(compensated(&mut machine, "a", 1), vec![Command::Finish]);
    assert_eq!(machine.status(), ExecutionStatus::Compensated);
    assert_eq!(machine.error().unwrap().failure.kind, FailureKind::Cancelled);
    // A second request changes nothing.
    assert!(machine.feed(at(20), Event::RollbackRequested { reason: "again".into() }).is_empty());
}

#[test]
fn a_waiting_child_holds_its_step_until_the_child_ends() {
    let workflow = Arc::new(
        Workflow::builder("w")
            .step(StepBuilder::new("a", "p", json!({})))
            .step(StepBuilder::new("b", "p", json!({"from": "$.steps.a.output"})))
            .build(&plugins())
            .unwrap(),
    );
    let (mut machine, _) = start(workflow, json!({}));
    machine.feed(at(1), Event::AttemptStarted { step: id("a"), attempt: 1 });
    machine.feed(at(2), Event::ChildWaiting { step: id("a"), attempt: 1 });
    assert_eq!(machine.status(), ExecutionStatus::Waiting);
    // On resume the child is looked at again (same attempt).
    assert_eq!(invoked(&machine.outstanding_commands()), vec![(0, 1, json!({}))]);
    let commands = machine.feed(
        at(3),
        Event::AttemptSucceeded { step: id("a"), attempt: 1, output: json!(7), compensation: None, logs: vec![] },
    );
    assert_eq!(invoked(&commands), vec![(1, 1, json!({"from": 7}))]);
}

#[test]
fn unit_labels_name_elements_and_handlers_and_nothing_else() {
    let (mut machine, _) = started_with_handlers(hooked(), json!({}), "check", &["enrich"]);
    succeed(&mut machine, "cart", 1, json!({}), None);
    assert_eq!(machine.unit_of(&id("check[enrich]")), Some(Unit { node: 2, element: 0 }));
    for label in ["check", "check[limit]", "cart[0]", "nope", "check[0]"] {
        assert_eq!(machine.unit_of(&id(label)), None, "{label}");
    }
}

// --- Recorded decisions ---

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
        Event::AttemptSucceeded { step: id("b"), attempt: 1, output: json!(2), compensation: None, logs: vec![] },
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
    let commands = machine.feed(at(6), Event::AttemptFailed { step: id("b"), attempt: 1, failure, logs: vec![] });
    assert_eq!(compensating(&commands), vec![(0, json!({"v": 1}))]);
    assert!(!commands.iter().any(|c| matches!(c, Command::StartTimer { .. })));
}
