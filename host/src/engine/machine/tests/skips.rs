//! A step's guest skipping itself (`skipped` from a `skippable-step`):
//! nothing to compensate, its readers skipped, a fan-out element `null`.

use super::*;

fn skip(machine: &mut Machine, step: &str, attempt: u32) -> Vec<Command> {
    machine.feed(at(1), Event::AttemptStarted { step: id(step), attempt });
    let reason = "no gift card on the cart".to_string();
    machine.feed(at(2), Event::AttemptSkipped { step: id(step), attempt, reason, logs: vec![], cost: None })
}

#[test]
fn a_step_that_skips_itself_skips_its_readers_and_the_execution_goes_on() {
    let workflow = Arc::new(
        Workflow::builder("w")
            .step(StepBuilder::new("gift", "p", json!({})))
            .step(StepBuilder::new("thank", "p", json!({"card": "$.steps.gift.output"})))
            .step(StepBuilder::new("other", "p", json!({})).after("gift"))
            .build(&plugins())
            .unwrap(),
    );
    let (mut machine, _) = start(workflow, json!({}));
    let commands = skip(&mut machine, "gift", 1);
    // `thank` reads the skipped output; `other` only runs after it.
    assert_eq!(invoked(&commands).iter().map(|(node, ..)| *node).collect::<Vec<_>>(), vec![2]);
    assert_eq!(
        machine.nodes()[0].phase,
        NodePhase::Skipped { reason: "the step skipped itself: no gift card on the cart".into() }
    );
    assert!(matches!(&machine.nodes()[1].phase, NodePhase::Skipped { reason } if reason.contains("`gift`")));
    succeed(&mut machine, "other", 1, json!(1), None);
    assert_eq!(machine.status(), ExecutionStatus::Succeeded);
}

#[test]
fn a_step_that_skipped_itself_is_not_compensated_on_rollback() {
    let (mut machine, _) = start(chain(1), json!({"x": 1}));
    succeed(&mut machine, "a", 1, json!({"v": 1}), Some(json!("undo-a")));
    // b skips: c reads b's output, so it is skipped too, and the run succeeds.
    skip(&mut machine, "b", 1);
    assert_eq!(machine.status(), ExecutionStatus::Succeeded);

    // A cancel of the succeeded execution compensates a alone.
    let commands = machine.feed(at(5), Event::RollbackRequested { reason: "operator".into() });
    assert_eq!(compensating(&commands), vec![(0, json!("undo-a"))]);
    compensated(&mut machine, "a", 1);
    assert_eq!(machine.status(), ExecutionStatus::Compensated);
}

#[test]
fn an_attempt_in_flight_that_skips_during_a_rollback_is_not_compensated() {
    let workflow = Arc::new(
        Workflow::builder("w")
            .retry(policy(1))
            .step(StepBuilder::new("a", "p", json!({})))
            .step(StepBuilder::new("b", "p", json!({})))
            .build(&plugins())
            .unwrap(),
    );
    let (mut machine, _) = start(workflow, json!({}));
    succeed(&mut machine, "a", 1, json!("a"), None);
    machine.feed(at(3), Event::AttemptStarted { step: id("b"), attempt: 1 });
    // Rolled back while b runs: nothing is compensated until b settles.
    let commands = machine.feed(at(4), Event::RollbackRequested { reason: "operator".into() });
    assert!(compensating(&commands).is_empty());
    let reason = "nothing to do".to_string();
    let commands =
        machine.feed(at(5), Event::AttemptSkipped { step: id("b"), attempt: 1, reason, logs: vec![], cost: None });
    assert_eq!(compensating(&commands), vec![(0, json!("a"))], "only a is compensated");
    assert!(matches!(&machine.nodes()[1].phase, NodePhase::Skipped { reason } if reason.contains("nothing to do")));
}

#[test]
fn a_fan_out_rolled_back_while_its_element_skipped_reads_as_skipped_not_running() {
    let workflow = Arc::new(
        Workflow::builder("w")
            .step(StepBuilder::new("each", "p", json!({"x": "$.item"})).for_each("$.input.items", Some(1)))
            .build(&plugins())
            .unwrap(),
    );
    let (mut machine, _) = start(workflow, json!({"items": [1, 2, 3]}));
    machine.feed(at(1), Event::AttemptStarted { step: id("each[0]"), attempt: 1 });
    machine.feed(at(2), Event::RollbackRequested { reason: "operator".into() });
    let reason = "nothing to do".to_string();
    machine.feed(at(3), Event::AttemptSkipped { step: id("each[0]"), attempt: 1, reason, logs: vec![], cost: None });
    assert_eq!(machine.status(), ExecutionStatus::Compensated);
    let view = crate::engine::view::ExecutionView::of(&machine).to_json();
    assert_eq!(view["steps"][0]["status"], "skipped", "{view:#}");
    assert_eq!(view["steps"][0]["elements"][0]["skip_reason"], "the step skipped itself: nothing to do");
}

#[test]
fn a_fan_out_element_that_skips_itself_is_null_in_the_list() {
    let workflow = Arc::new(
        Workflow::builder("w")
            .step(StepBuilder::new("each", "p", json!({"x": "$.item"})).for_each("$.input.items", None))
            .build(&plugins())
            .unwrap(),
    );
    let (mut machine, _) = start(workflow, json!({"items": [1, 2]}));
    skip(&mut machine, "each[0]", 1);
    succeed(&mut machine, "each[1]", 1, json!("two"), None);
    assert_eq!(machine.status(), ExecutionStatus::Succeeded);
    assert_eq!(machine.nodes()[0].output, Some(json!([null, "two"])));
    assert_eq!(machine.nodes()[0].elements[0].phase, StepPhase::Skipped);

    // Rolled back afterwards: only the element that did something is undone.
    let commands = machine.feed(at(5), Event::RollbackRequested { reason: "operator".into() });
    assert_eq!(compensating(&commands), vec![(0, json!("two"))]);
}

#[test]
fn an_async_step_that_skips_itself_does_not_wait() {
    let workflow = Arc::new(
        Workflow::builder("w")
            .step(StepBuilder::new("approve", "p", json!({})).asynchronous())
            .build(&plugins())
            .unwrap(),
    );
    let (mut machine, _) = start(workflow, json!({}));
    skip(&mut machine, "approve", 1);
    assert_eq!(machine.status(), ExecutionStatus::Succeeded, "not waiting for a completion");
}
