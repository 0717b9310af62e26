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
