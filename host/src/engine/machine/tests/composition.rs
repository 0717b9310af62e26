//! Composition: conditions, transforms, fan-out, hooks, rollback requests.

use super::*;

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

pub(super) fn labels(machine: &Machine, commands: &[Command]) -> Vec<String> {
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
            // A type error (a missing key would make the condition false instead).
            .step(StepBuilder::new("b", "p", json!({})).when("steps.a.output.name > 1"))
            .build(&plugins())
            .unwrap(),
    );
    let (mut machine, _) = start(workflow, json!({}));
    let commands = succeed(&mut machine, "a", 1, json!({"name": "x"}), None);
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

pub(super) fn fan_out(max_concurrency: u32) -> Arc<Workflow> {
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
            cost: None,
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
        Event::AttemptSucceeded {
            step: id("a"),
            attempt: 1,
            output: json!(7),
            compensation: None,
            logs: vec![],
            cost: None,
        },
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

#[test]
fn a_step_that_fails_to_start_and_goes_on_lets_the_steps_listed_before_it_start() {
    use crate::workflow::OnPermanentFailure;
    // `b` is listed first and reads `a`; `a`'s input cannot be rendered.
    let workflow = Arc::new(
        Workflow::builder("w")
            .step(StepBuilder::new("b", "p", json!({"saw": "$.steps.a.output"})))
            .step(
                StepBuilder::new("a", "p", json!({"x": "$.input.missing"}))
                    .on_permanent_failure(OnPermanentFailure::Continue),
            )
            .build(&plugins())
            .unwrap(),
    );
    let (machine, commands) = start(workflow, json!({}));
    assert_eq!(labels(&machine, &commands), vec!["b"], "b starts in the same pass: {commands:?}");
    assert_eq!(machine.status(), ExecutionStatus::Running);
}

#[test]
fn fan_out_elements_that_fail_to_start_and_go_on_hold_no_slot() {
    use crate::workflow::OnPermanentFailure;
    let workflow = Arc::new(
        Workflow::builder("w")
            .step(
                StepBuilder::new("each", "p", json!({"x": "$.item.x"}))
                    .for_each("$.input.items", Some(1))
                    .on_permanent_failure(OnPermanentFailure::Skip),
            )
            .build(&plugins())
            .unwrap(),
    );
    let (machine, commands) = start(workflow, json!({"items": [{}, {}, {"x": 1}]}));
    assert_eq!(labels(&machine, &commands), vec!["each[2]"], "the third element runs: {commands:?}");
    assert_eq!(machine.status(), ExecutionStatus::Running);
}

#[test]
fn no_two_units_share_a_child_execution_and_older_logs_keep_their_childrens_names() {
    // A fan-out `a` and a step named `a-1`: element 1 of `a` and `a-1` were
    // both `e1.a-1.1` before log version 3.
    let workflow = Arc::new(
        Workflow::builder("w")
            .step(StepBuilder::new("a", "p", json!({})).for_each("$.input.items", None))
            .step(StepBuilder::new("a-1", "p", json!({})))
            .build(&plugins())
            .unwrap(),
    );
    let (machine, _) = start(workflow.clone(), json!({"items": [1, 2]}));
    let element = Unit { node: 0, element: 1 };
    let step = Unit::single(1);
    assert_eq!(machine.child_execution_id(element, 1).as_str(), "e1.a.1.1");
    assert_eq!(machine.child_execution_id(step, 1).as_str(), "e1.a-1.1");
    assert_eq!(machine.child_execution_id(element, 2).as_str(), "e1.a.1.2", "each attempt its own child");
    // A log written before version 3 started its children under the old name.
    let mut old = Machine::new(workflow, ExecutionId::new("e1"), json!({"items": [1, 2]}));
    let mut started = started_event();
    if let Event::ExecutionStarted { log_version, .. } = &mut started {
        *log_version = 2;
    }
    old.apply(at(0), started);
    assert_eq!(old.child_execution_id(element, 1).as_str(), "e1.a-1.1");
    assert_eq!(old.child_execution_id(step, 1).as_str(), "e1.a-1.1");
}
