use super::*;
use serde_json::json;

fn plugins() -> BTreeSet<String> {
    ["retrieve-cart", "reserve-inventory", "echo"].iter().map(|s| s.to_string()).collect()
}

fn load(text: &str) -> Result<Workflow, WorkflowError> {
    Workflow::from_toml("flow.toml", text, &plugins())
}

fn only_problem(text: &str) -> String {
    let error = load(text).expect_err("the workflow should be refused");
    assert_eq!(error.problems.len(), 1, "{error}");
    error.to_string()
}

#[test]
fn infers_dependencies_from_references_and_after() {
    let workflow = load(
        r#"
        name = "quote"
        [[steps]]
        id = "reserve"
        plugin = "reserve-inventory"
        input = { items = "$.steps.cart.output.items" }
        [[steps]]
        id = "cart"
        plugin = "retrieve-cart"
        input = { cart_id = "$.input.cart_id" }
        [[steps]]
        id = "audit"
        plugin = "echo"
        after = ["reserve"]
        "#,
    )
    .unwrap();
    let deps: Vec<Vec<usize>> = workflow.steps().iter().map(|s| s.dependencies.clone()).collect();
    assert_eq!(deps, vec![vec![1], vec![], vec![0]]);
    assert_eq!(workflow.steps()[0].retry, RetryPolicy::default());
}

#[test]
fn toml_syntax_error_names_the_line() {
    let error = only_problem("name = \"quote\"\n[[steps]\nid = 1\n");
    assert!(error.contains("flow.toml"), "{error}");
    assert!(error.contains("line 2"), "{error}");
}

#[test]
fn unknown_field_is_refused_with_its_line() {
    let error = only_problem("name = \"q\"\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\nretires = 3\n");
    assert!(error.contains("unknown field `retires`"), "{error}");
    assert!(error.contains("line 5"), "{error}");
}

#[test]
fn unknown_plugin_names_step_and_field() {
    let error = only_problem("name = \"q\"\n[[steps]]\nid = \"pay\"\nplugin = \"stripe\"\n");
    assert!(error.contains("flow.toml: step `pay`, field `plugin`: unknown plugin `stripe`"), "{error}");
}

#[test]
fn an_event_name_longer_than_can_be_published_is_refused() {
    let workflow =
        |event: &str| format!("name = \"q\"\non_event = \"{event}\"\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\n");
    assert!(load(&workflow(&"e".repeat(MAX_EVENT_NAME_CHARS))).is_ok());
    let error = only_problem(&workflow(&"e".repeat(MAX_EVENT_NAME_CHARS + 1)));
    assert!(error.contains("field `on_event`: an event name has at most 128 characters, this one 129"), "{error}");
}

#[test]
fn unknown_step_reference_names_the_input_path() {
    let error = only_problem(
        "name = \"q\"\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\ninput = { x = [\"$.steps.ghost.output.id\"] }\n",
    );
    assert!(error.contains("step `a`, field `input.x[0]`"), "{error}");
    assert!(error.contains("unknown step `ghost`"), "{error}");
}

#[test]
fn unknown_after_step_is_refused() {
    let error = only_problem("name = \"q\"\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\nafter = [\"b\"]\n");
    assert!(error.contains("step `a`, field `after[0]`: unknown step `b`"), "{error}");
}

#[test]
fn malformed_reference_is_refused() {
    let error =
        only_problem("name = \"q\"\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\ninput = { x = \"$.step.a.output\" }\n");
    assert!(error.contains("step `a`, field `input.x`: malformed reference `$.step.a.output`"), "{error}");
}

#[test]
fn duplicate_step_id_is_refused() {
    let error = only_problem(
        "name = \"q\"\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\n",
    );
    assert!(error.contains("step `a`, field `id`: duplicate step id `a`"), "{error}");
}

#[test]
fn dependency_cycle_is_refused_with_its_path() {
    let error = only_problem(
        r#"
        name = "q"
        [[steps]]
        id = "a"
        plugin = "echo"
        input = "$.steps.c.output"
        [[steps]]
        id = "b"
        plugin = "echo"
        input = "$.steps.a.output"
        [[steps]]
        id = "c"
        plugin = "echo"
        after = ["b"]
        "#,
    );
    assert!(error.contains("dependency cycle"), "{error}");
    for step in ["a", "b", "c"] {
        assert!(error.contains(step), "{error}");
    }
}

#[test]
fn self_reference_is_refused() {
    let error = only_problem("name = \"q\"\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\ninput = \"$.steps.a.output\"\n");
    assert!(error.contains("cannot reference its own output"), "{error}");
}

#[test]
fn invalid_retry_policy_is_refused() {
    let error = only_problem("name = \"q\"\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\nretry = { max_attempts = 0 }\n");
    assert!(error.contains("step `a`, field `retry.max_attempts`: must be at least 1"), "{error}");
}

#[test]
fn output_references_are_checked() {
    let error = only_problem(
        "name = \"q\"\noutput = { id = \"$.steps.nope.output\" }\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\n",
    );
    assert!(error.contains("field `output.id`"), "{error}");
}

#[test]
fn reports_every_problem_at_once() {
    let error = load(
        "name = \"Bad Name\"\n[[steps]]\nid = \"a\"\nplugin = \"nope\"\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\n",
    )
    .unwrap_err();
    assert_eq!(error.problems.len(), 3, "{error}");
}

#[test]
fn builder_and_file_produce_the_same_definition() {
    let built = Workflow::builder("quote")
        .step(StepBuilder::new("cart", "retrieve-cart", json!({"cart_id": "$.input.cart_id"})))
        .step(
            StepBuilder::new("reserve", "reserve-inventory", json!({"items": "$.steps.cart.output.items"}))
                .timeout(Duration::from_millis(500)),
        )
        .build(&plugins())
        .unwrap();
    let file = load(
        r#"
        name = "quote"
        [[steps]]
        id = "cart"
        plugin = "retrieve-cart"
        input = { cart_id = "$.input.cart_id" }
        [[steps]]
        id = "reserve"
        plugin = "reserve-inventory"
        input = { items = "$.steps.cart.output.items" }
        timeout_ms = 500
        "#,
    )
    .unwrap();
    assert_eq!(built.definition(), file.definition());
    assert_eq!(built.steps()[1].dependencies, vec![0]);
}

fn base(extra: &str) -> String {
    format!("name = \"q\"\n[[steps]]\nid = \"cart\"\nplugin = \"retrieve-cart\"\n{extra}")
}

#[test]
fn composition_errors_name_the_file_the_step_or_hook_and_the_field() {
    for (extra, expected) in [
        (
            "[[steps]]\nid = \"a\"\nplugin = \"echo\"\nwhen = \"input.x >\"\n",
            "flow.toml: step `a`, field `when`: `input.x >` is not a valid CEL expression",
        ),
        (
            "[[steps]]\nid = \"a\"\nplugin = \"echo\"\nwhen = \"order.total > 1\"\n",
            "step `a`, field `when`: `order.total > 1`: unknown variable `order`",
        ),
        (
            "[[steps]]\nid = \"a\"\ntransform = \"steps.nope.output\"\n",
            "step `a`, field `transform`: `steps.nope.output` reads `steps.nope`: unknown step `nope`",
        ),
        (
            "[[steps]]\nid = \"a\"\nplugin = \"echo\"\nwhen = \"steps.nope.output.ok\"\n",
            "step `a`, field `when`: `steps.nope.output.ok` reads `steps.nope`: unknown step `nope`",
        ),
        (
            "[[steps]]\nid = \"a\"\nplugin = \"echo\"\nwhen = \"size(steps.cart.output.items)\"\n",
            "step `a`, field `when`: `size(steps.cart.output.items)` is a condition and must be true or false, but it is always a number",
        ),
        (
            "[[hooks]]\nname = \"check\"\nwhen = \"input.total * 2\"\n",
            "hook `check`, field `when`: `input.total * 2` is a condition and must be true or false",
        ),
        (
            "[[steps]]\nid = \"a\"\nplugin = \"echo\"\ninput = { c = \"$.hooks.check.output\" }\n",
            "step `a`, field `input.c`: `$.hooks.check.output`: unknown hook `check`",
        ),
        (
            "[[steps]]\nid = \"a\"\nplugin = \"echo\"\nfor_each = \"items\"\n",
            "step `a`, field `for_each`: `items` is not a reference",
        ),
        (
            "[[steps]]\nid = \"a\"\nplugin = \"echo\"\ninput = { x = \"$.item\" }\n",
            "step `a`, field `input.x`: `$.item`: `$.item` and `$.index` exist only in a step with `for_each`",
        ),
        (
            "[[steps]]\nid = \"a\"\nplugin = \"echo\"\nmax_concurrency = 2\n",
            "step `a`, field `max_concurrency`: needs `for_each`",
        ),
        (
            "[[steps]]\nid = \"a\"\nplugin = \"echo\"\nworkflow = \"w\"\n",
            "step `a`, field `plugin`: a step needs exactly one of `plugin`, `workflow` or `transform`",
        ),
        ("[[steps]]\nid = \"a\"\nworkflow = \"nope\"\n", "step `a`, field `workflow`: unknown workflow `nope`"),
        (
            "[[hooks]]\nname = \"check\"\ninput = \"$.steps.nope.output\"\n",
            "hook `check`, field `input`: `$.steps.nope.output`: unknown step `nope`",
        ),
        ("[[hooks]]\nname = \"cart\"\n", "hook `cart`, field `name`: duplicate hook name `cart`"),
        (
            "[[hooks]]\nname = \"check\"\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\ninput = { c = \"$.steps.check.output\" }\n",
            "`check` is a hook: read it as `$.hooks.check.output`",
        ),
    ] {
        let error = only_problem(&base(extra));
        assert!(error.contains(expected), "{extra}\n{error}");
    }
}

#[test]
fn a_workflow_that_nests_itself_through_its_children_is_refused() {
    let child = |name: &str, runs: &str| {
        Workflow::parse_toml("x", &format!("name = \"{name}\"\n[[steps]]\nid = \"s\"\nworkflow = \"{runs}\"\n"))
            .unwrap()
    };
    let catalog: std::collections::BTreeMap<String, WorkflowDefinition> =
        [("b".to_string(), child("b", "c")), ("c".to_string(), child("c", "a"))].into_iter().collect();
    let error = Workflow::from_definition_with("a.toml", child("a", "b"), &plugins(), &catalog).unwrap_err();
    assert!(
        error.to_string().contains("a.toml: step `s`, field `workflow`: workflow `a` nests itself: a -> b -> c -> a"),
        "{error}"
    );
    let direct = Workflow::from_definition_with("a.toml", child("a", "a"), &plugins(), &catalog).unwrap_err();
    assert!(direct.to_string().contains("workflow `a` nests itself: a -> a"), "{direct}");
}

#[test]
fn children_are_validated_and_pinned_transitively() {
    let parse = |text: &str| Workflow::parse_toml("x", text).unwrap();
    let catalog: std::collections::BTreeMap<String, WorkflowDefinition> = [
        ("b".to_string(), parse("name = \"b\"\n[[steps]]\nid = \"s\"\nworkflow = \"c\"\n")),
        ("c".to_string(), parse("name = \"c\"\n[[steps]]\nid = \"s\"\nplugin = \"echo\"\n")),
    ]
    .into_iter()
    .collect();
    let parent = parse("name = \"a\"\n[[steps]]\nid = \"s\"\nworkflow = \"b\"\n");
    let workflow = Workflow::from_definition_with("a.toml", parent, &plugins(), &catalog).unwrap();
    assert_eq!(workflow.children().keys().collect::<Vec<_>>(), vec!["b", "c"]);

    let broken: std::collections::BTreeMap<String, WorkflowDefinition> =
        [("b".to_string(), parse("name = \"b\"\n[[steps]]\nid = \"s\"\nplugin = \"stripe\"\n"))].into_iter().collect();
    let error = Workflow::from_definition_with(
        "a.toml",
        parse("name = \"a\"\n[[steps]]\nid = \"s\"\nworkflow = \"b\"\n"),
        &plugins(),
        &broken,
    )
    .unwrap_err();
    // A child that only lacks a plugin: the parent waits for that plugin too.
    assert!(error.to_string().contains("child workflow `b` waits for plugin `stripe`"), "{error}");
    assert_eq!(error.only_missing_plugins(), Some(vec!["stripe".to_string()]));
    // Any other problem in a child makes the parent invalid.
    let invalid: std::collections::BTreeMap<String, WorkflowDefinition> =
        [("b".to_string(), parse("name = \"b\"\n[[steps]]\nid = \"s\"\nplugin = \"Bad Name\"\n"))]
            .into_iter()
            .collect();
    let parent = parse("name = \"a\"\n[[steps]]\nid = \"s\"\nworkflow = \"b\"\n");
    let error = Workflow::from_definition_with("a.toml", parent, &plugins(), &invalid).unwrap_err();
    assert!(error.to_string().contains("child workflow `b` is invalid"), "{error}");
    assert_eq!(error.only_missing_plugins(), None);
}

#[test]
fn conditions_and_hooks_add_dependencies_like_references() {
    let workflow = load(&base(
        "[[hooks]]\nname = \"check\"\ninput = \"$.steps.cart.output\"\n[[steps]]\nid = \"pay\"\nplugin = \"echo\"\nwhen = \"hooks.check.output.size() == 0 && steps['cart'].output.total > 0\"\n",
    ))
    .unwrap();
    let pay = &workflow.steps()[workflow.step_index(&StepId::new("pay")).unwrap()];
    assert_eq!(pay.data_dependencies, vec![0, 2]);
    assert!(workflow.steps()[2].is_hook());
}

#[test]
fn a_stored_definition_replays_whatever_condition_checks_were_added_since() {
    // Accepted before conditions were type-checked at load: an execution
    // started with it must still replay.
    let text = "name = \"old\"\n[[steps]]\nid = \"a\"\nplugin = \"echo\"\nwhen = \"size(input.items)\"\n";
    let definition = Workflow::parse_toml("old.toml", text).unwrap();
    assert!(Workflow::revalidate_stored("stored definition", definition).is_ok());
    assert!(only_problem(text).contains("must be true or false"), "a new one is refused");
}
