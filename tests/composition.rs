//! Composition on real guests: merchant hooks with several handlers per
//! tenant, conditions, fan-out, nested workflows and transforms.

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use stepwise::engine::{Engine, StartOptions};
use stepwise::journal::Event;
use stepwise::services::ledger::Ledger;
use stepwise::store::kv::KvStore;
use stepwise::tenants::TenantBindings;
use stepwise::workflow::Workflow;
use stepwise_test_support::*;

/// Tenants: `acme` binds both validate-cart handlers, `initech` only the
/// enricher, `globex` nothing.
fn tenants(label: &str) -> Arc<TenantBindings> {
    let dir = scratch_dir(&format!("tenants-{label}"));
    std::fs::copy(repo_root().join("guest-examples/tenants/acme.toml"), dir.join("acme.toml")).unwrap();
    std::fs::write(dir.join("initech.toml"), "[[handlers]]\nhook = \"validate-cart\"\nplugin = \"enrich-cart\"\n")
        .unwrap();
    std::fs::write(dir.join("globex.toml"), "").unwrap();
    Arc::new(TenantBindings::load(&dir).unwrap())
}

fn host(label: &str) -> (DemoHost, Engine) {
    let host = demo_host();
    let engine = host.engine.clone().with_tenants(tenants(label));
    (host, engine)
}

fn quote(cart: &str, unit_price: u64) -> Value {
    json!({"cart_id": cart, "currency": "EUR", "items": [{"sku": "A", "quantity": 2, "unit_price": unit_price}]})
}

async fn run_as(engine: &Engine, workflow: &Arc<Workflow>, input: Value, tenant: Option<&str>) -> Value {
    let options = StartOptions { tenant: tenant.map(str::to_string), ..Default::default() };
    engine.run(workflow.clone(), input, options).await.expect("execution ran").to_json()
}

fn hook<'a>(execution: &'a Value, name: &str) -> &'a Value {
    execution["hooks"].as_array().unwrap().iter().find(|h| h["name"] == name).expect("hook exists")
}

fn calls(host: &DemoHost, service: &str, method: &str) -> Vec<String> {
    host.ledger
        .entries(service)
        .unwrap()
        .into_iter()
        .filter(|entry| entry.method == method)
        .map(|entry| entry.idempotency_key)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_handlers_run_in_order_and_a_veto_rolls_back_everything_including_the_handlers() {
    let (host, engine) = host("veto");
    let workflow = example(&engine, "accept-quote.toml");

    let accepted = run_as(&engine, &workflow, quote("small", 1000), Some("acme")).await;
    assert_eq!(accepted["status"], "succeeded", "{accepted:#}");
    let handlers = &hook(&accepted, "validate-cart")["handlers"];
    let order: Vec<&str> = handlers.as_array().unwrap().iter().map(|h| h["plugin"].as_str().unwrap()).collect();
    assert_eq!(order, vec!["enrich-cart", "cart-limit"], "priority 10 before 20");
    assert_eq!(handlers[0]["output"]["loyalty_tier"], "silver");
    assert_eq!(accepted["tenant"], "acme");

    // Over acme's limit (10000): cart-limit vetoes after enrich-cart wrote to kv.
    let vetoed = run_as(&engine, &workflow, quote("big", 9000), Some("acme")).await;
    assert_eq!(vetoed["status"], "compensated", "{vetoed:#}");
    assert_eq!(vetoed["error"]["step"], "validate-cart[cart-limit]");
    assert!(vetoed["error"]["message"].as_str().unwrap().contains("exceeds this merchant's limit of 10000"));
    assert_eq!(
        event_steps(&vetoed, "step_compensated"),
        vec!["validate-cart[enrich-cart]", "cart"],
        "the enricher's own compensation ran, then the cart's"
    );
    for step in ["reserve", "payment", "order"] {
        assert_eq!(step_of(&vetoed, step)["status"], "pending", "{step} never ran");
    }
    // enrich-cart's compensation restored its kv writes to before the vetoed run.
    assert_eq!(host.kv.get("acme/enrich-cart", "last_cart").unwrap().as_deref(), Some("small"));
    assert_eq!(host.kv.get("acme/enrich-cart", "carts_seen").unwrap().as_deref(), Some("1"));
    // Only the accepted quote reserved stock.
    assert_eq!(calls(&host, "inventory", "reserve").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_without_handlers_goes_straight_through_and_kv_is_private_to_each_tenant() {
    let (host, engine) = host("kv");
    let workflow = example(&engine, "accept-quote.toml");

    let plain = run_as(&engine, &workflow, quote("plain", 9000), Some("globex")).await;
    assert_eq!(plain["status"], "succeeded", "over acme's limit, but globex binds no handler");
    assert_eq!(hook(&plain, "validate-cart")["handlers"], json!([]));
    assert_eq!(hook(&plain, "validate-cart")["output"], json!([]));
    let anonymous = run_as(&engine, &workflow, quote("anon", 9000), None).await;
    assert_eq!(anonymous["status"], "succeeded");

    let initech = run_as(&engine, &workflow, quote("initech-cart", 100), Some("initech")).await;
    assert_eq!(initech["status"], "succeeded");
    // acme's handler (the same plugin) does not see initech's last cart.
    let acme = run_as(&engine, &workflow, quote("acme-cart", 100), Some("acme")).await;
    let enrich = &hook(&acme, "validate-cart")["handlers"][0]["output"];
    assert_eq!(enrich["previous_cart"], Value::Null, "{acme:#}");
    assert_eq!(enrich["carts_seen"], 1);
    assert_eq!(host.kv.get("initech/enrich-cart", "last_cart").unwrap().as_deref(), Some("initech-cart"));
    assert_eq!(host.kv.get("acme/enrich-cart", "last_cart").unwrap().as_deref(), Some("acme-cart"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_outputs_are_referable_by_plugin_and_as_a_list() {
    let (_host, engine) = host("refs");
    let toml = r#"
        name = "refs"
        [[steps]]
        id = "cart"
        plugin = "retrieve-cart"
        input = { cart_id = "$.input.cart_id" }
        [[hooks]]
        name = "validate-cart"
        input = "$.steps.cart.output"
        [[steps]]
        id = "after"
        plugin = "echo"
        input = { tier = "$.hooks.validate-cart.handlers.enrich-cart.output.loyalty_tier", all = "$.hooks.validate-cart.output" }
    "#;
    let execution = run_as(&engine, &workflow(&engine, toml), json!({"cart_id": "c"}), Some("acme")).await;
    assert_eq!(execution["status"], "succeeded", "{execution:#}");
    let input = &step_of(&execution, "after")["output"];
    assert_eq!(input["tier"], "gold");
    // acme binds cart-limit to accept-quote's hook only: here the enricher runs alone.
    assert_eq!(input["all"].as_array().unwrap().len(), 1);
    assert_eq!(hook(&execution, "validate-cart")["handlers"][0]["plugin"], "enrich-cart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_skip_steps_and_their_dependants_and_transforms_compute_in_the_host() {
    let (_host, engine) = host("when");
    let workflow = example(&engine, "reserve-each.toml");
    let input = quote("c-1", 1000);

    let plain = run_as(&engine, &workflow, input.clone(), None).await;
    assert_eq!(plain["status"], "succeeded", "{plain:#}");
    assert_eq!(step_of(&plain, "gift-wrap")["status"], "skipped");
    assert!(step_of(&plain, "gift-wrap")["skip_reason"].as_str().unwrap().contains("is false"));
    assert_eq!(step_of(&plain, "gift-note")["status"], "skipped");
    assert_eq!(step_of(&plain, "gift-note")["skip_reason"], "needs the output of skipped step `gift-wrap`");
    assert_eq!(plain["output"]["gift"], Value::Null);
    assert_eq!(plain["output"]["total_with_tax"], 2420);
    assert_eq!(step_of(&plain, "total-with-tax")["kind"], "transform");
    assert_eq!(event_steps(&plain, "step_skipped"), vec!["gift-wrap", "gift-note"]);

    let mut gift = input;
    gift["gift"] = json!(true);
    let wrapped = run_as(&engine, &workflow, gift, None).await;
    assert_eq!(step_of(&wrapped, "gift-wrap")["status"], "succeeded");
    assert_eq!(wrapped["output"]["gift"]["wrapped"]["wrap"], "c-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_over_50_items_with_a_failing_element_compensates_every_completed_element_exactly_once() {
    let (host, engine) = host("fan-out");
    let workflow = example(&engine, "reserve-each.toml");
    let items: Vec<Value> = (0..50)
        .map(|i| json!({"sku": format!("SKU-{i}"), "quantity": if i == 17 { 0 } else { 1 }, "unit_price": 10}))
        .collect();
    let input = json!({"cart_id": "big", "currency": "EUR", "items": items});
    let execution = run_as(&engine, &workflow, input, None).await;
    assert_eq!(execution["status"], "compensated", "{:#}", execution["error"]);
    assert_eq!(execution["error"]["step"], "reserve[17]");
    let reserve = step_of(&execution, "reserve");
    let elements = reserve["elements"].as_array().unwrap();
    assert_eq!(elements.len(), 50);
    assert_eq!(elements[17]["status"], "failed");
    assert_eq!(elements[17]["id"], "reserve[17]");

    let reserved = calls(&host, "inventory", "reserve");
    let released = calls(&host, "inventory", "release");
    let completed: Vec<&Value> = elements.iter().filter(|e| e["status"] == "compensated").collect();
    assert!(!completed.is_empty());
    assert_eq!(reserved.len(), completed.len(), "one reservation per completed element");
    let mut released_per_key: HashMap<&String, usize> = HashMap::new();
    for key in &released {
        *released_per_key.entry(key).or_default() += 1;
    }
    for key in &reserved {
        assert_eq!(released_per_key.get(key), Some(&1), "{key} released exactly once");
    }
    assert_eq!(released.len(), reserved.len());
    assert!(host.inventory.snapshot().reservations.is_empty(), "nothing stays reserved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_workflow_is_rolled_back_by_its_parent_in_the_childs_reverse_order() {
    let (host, engine) = host("nested");
    let workflow = example(&engine, "place-order.toml");
    let mut input = quote("nested", 1500);
    input["refuse_shipping"] = json!(true);
    let parent = run_as(&engine, &workflow, input, Some("acme")).await;
    assert_eq!(parent["status"], "compensated", "{parent:#}");
    assert_eq!(parent["error"]["step"], "refused");
    assert_eq!(step_of(&parent, "quote")["status"], "compensated");
    let children = parent["child_execution_ids"].as_array().unwrap();
    assert_eq!(children.len(), 1);

    let child =
        engine.show(&stepwise::journal::ExecutionId::new(children[0].as_str().unwrap())).await.unwrap().to_json();
    assert_eq!(child["parent_execution_id"], parent["execution_id"]);
    assert_eq!(child["tenant"], "acme", "the child runs for its parent's tenant");
    assert_eq!(child["status"], "compensated");
    assert_eq!(
        event_steps(&child, "step_compensated"),
        vec!["order", "payment", "reserve", "validate-cart[cart-limit]", "validate-cart[enrich-cart]", "cart"]
    );
    assert_eq!(calls(&host, "inventory", "release").len(), 1);
    assert_eq!(calls(&host, "payments", "void").len(), 1);

    // Shipping accepted: the parent succeeds with the child's output.
    let done = run_as(&engine, &workflow, quote("nested-ok", 1500), Some("acme")).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["output"]["shipping"]["class"], "standard");
    assert!(done["output"]["order_id"].as_str().unwrap().starts_with("order_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_rolls_back_fails_its_step_and_the_retry_policy_reruns_the_whole_child() {
    let (_host, engine) = host("child-retry");
    let child = r#"
        name = "child"
        [[steps]]
        id = "flaky"
        plugin = "flaky"
        input = { fail_times = 1, key = "$.input.key" }
        retry = { max_attempts = 1 }
    "#;
    let parent = r#"
        name = "parent"
        [[steps]]
        id = "run-child"
        workflow = "child"
        input = { key = "$.input.key" }
        retry = { max_attempts = 2, initial_backoff_ms = 10 }
    "#;
    let workflow = parent_and_child(&engine, child, parent);
    let execution = run_as(&engine, &workflow, json!({"key": "k-1"}), None).await;
    assert_eq!(execution["status"], "compensated", "{execution:#}");
    let step = step_of(&execution, "run-child");
    assert_eq!(step["attempts"], 2, "the child's retryable failure is retried as a whole");
    assert_eq!(step["error"]["kind"], "retryable");
    let children = step["child_execution_ids"].as_array().unwrap();
    assert_eq!(children.len(), 2, "one child execution per attempt");
    for child in children {
        let child = engine.show(&stepwise::journal::ExecutionId::new(child.as_str().unwrap())).await.unwrap().to_json();
        assert_eq!(child["status"], "compensated");
        assert_eq!(child["parent_execution_id"], execution["execution_id"]);
    }
}

/// A fan-out over a child workflow and a step named like one of its
/// elements (`a` over two items, and `a-1`): each unit runs its own child
/// with its own input, and none takes another's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_of_children_and_a_step_named_like_an_element_each_run_their_own_child() {
    let (_host, engine) = host("child-names");
    let child = "name = \"child\"\n[[steps]]\nid = \"say\"\nplugin = \"echo\"\ninput = { n = \"$.input.n\" }\n";
    let parent = r#"
        name = "parent"
        [[steps]]
        id = "a"
        workflow = "child"
        for_each = "$.input.items"
        input = { n = "$.item" }
        [[steps]]
        id = "a-1"
        workflow = "child"
        after = ["a"]
        input = { n = 100 }
    "#;
    let workflow = parent_and_child(&engine, child, parent);
    let execution = run_as(&engine, &workflow, json!({"items": [10, 11]}), None).await;
    assert_eq!(execution["status"], "succeeded", "{execution:#}");
    let mut children: Vec<&str> = ["a", "a-1"]
        .iter()
        .flat_map(|id| step_of(&execution, id)["child_execution_ids"].as_array().unwrap())
        .map(|child| child.as_str().unwrap())
        .collect();
    assert_eq!(children.len(), 3, "{execution:#}");
    let mut inputs = Vec::new();
    for child in &children {
        let shown = engine.show(&stepwise::journal::ExecutionId::new(*child)).await.unwrap().to_json();
        inputs.push(shown["input"]["n"].clone());
    }
    assert_eq!(inputs, [json!(10), json!(11), json!(100)], "each unit's child runs its own input: {children:?}");
    children.sort();
    children.dedup();
    assert_eq!(children.len(), 3, "three distinct children");
    assert_eq!(execution["output"]["a-1"]["say"]["n"], 100, "{execution:#}");
}

fn step_of<'a>(execution: &'a Value, id: &str) -> &'a Value {
    step(execution, id)
}

fn parent_and_child(engine: &Engine, child: &str, parent: &str) -> Arc<Workflow> {
    let catalog: BTreeMap<String, _> =
        [("child".to_string(), Workflow::parse_toml("child.toml", child).unwrap())].into();
    let definition = Workflow::parse_toml("parent.toml", parent).unwrap();
    Arc::new(Workflow::from_definition_with("parent.toml", definition, engine.registry().as_ref(), &catalog).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_waiting_on_an_async_step_holds_its_parent_until_it_is_completed() {
    let (_host, engine) = host("child-async");
    let workflow = parent_and_child(
        &engine,
        "name = \"child\"\n[[steps]]\nid = \"approve\"\nplugin = \"echo\"\nasync = true\n",
        r#"
        name = "parent"
        [[steps]]
        id = "approval"
        workflow = "child"
        [[steps]]
        id = "after"
        plugin = "echo"
        input = { approved = "$.steps.approval.output.approve" }
        "#,
    );
    let parent = run_as(&engine, &workflow, json!({}), None).await;
    assert_eq!(parent["status"], "waiting", "{parent:#}");
    assert_eq!(step_of(&parent, "approval")["status"], "waiting");
    let child_id = stepwise::journal::ExecutionId::new(parent["child_execution_ids"][0].as_str().unwrap());
    assert_eq!(engine.show(&child_id).await.unwrap().to_json()["status"], "waiting");

    // Completing the child's async step finishes the child, then the parent carries on.
    let child = complete(&engine, &child_id, "approve", json!({"by": "ana"})).await;
    assert_eq!(child["status"], "succeeded");
    let parent_id = stepwise::journal::ExecutionId::new(parent["execution_id"].as_str().unwrap());
    let parent = engine.wait_for_rest(&parent_id).await.unwrap().to_json();
    assert_eq!(parent["status"], "succeeded", "{parent:#}");
    assert_eq!(step_of(&parent, "after")["output"]["approved"], json!({"by": "ana"}));
    // The child's end woke the resting parent, adopted with that wake-up
    // queued: the child step's call was made again once, its result recorded once.
    let log = engine.store().load(&parent_id).await.unwrap().unwrap().events;
    let results = log
        .iter()
        .filter(|recorded| matches!(&recorded.event, Event::AttemptSucceeded { step, .. } if step.to_string() == "approval"))
        .count();
    assert_eq!(results, 1, "{:#?}", log.iter().map(|recorded| &recorded.event).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_rollback_compensates_a_succeeded_execution_and_its_children() {
    let (host, engine) = host("cancel");
    let workflow = example(&engine, "place-order.toml");
    let done = run_as(&engine, &workflow, quote("to-cancel", 1000), None).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let id = stepwise::journal::ExecutionId::new(done["execution_id"].as_str().unwrap());
    let cancelled = cancel(&engine, &id, "customer changed their mind").await;
    assert_eq!(cancelled["status"], "compensated", "{cancelled:#}");
    assert_eq!(cancelled["error"]["kind"], "cancelled");
    assert_eq!(event_steps(&cancelled, "step_compensated"), vec!["ship", "quote"]);
    assert_eq!(calls(&host, "inventory", "release").len(), 1);
    assert_eq!(calls(&host, "payments", "void").len(), 1);
    // Asking again changes nothing.
    let again = cancel(&engine, &id, "again").await;
    assert_eq!(again["events"].as_array().unwrap().len(), cancelled["events"].as_array().unwrap().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_on_optional_data_is_false_when_the_data_is_missing() {
    let toml = r#"
        name = "gift"
        [[steps]]
        id = "wrap"
        plugin = "echo"
        when = "input.gift.wrap == true"
        input = { wrap = true }
        [[steps]]
        id = "ship"
        plugin = "echo"
        input = { to = "$.input.address", note = "$.input.note ?? \"none\"", gift = "$.input.gift.wrap ?? false" }
    "#;
    let engine = engine();
    let without = run(&engine, toml, json!({"address": "Main St"})).await;
    assert_eq!(without["status"], "succeeded", "{without:#}");
    // Optional references in an input fall back to their defaults.
    assert_eq!(step(&without, "ship")["output"], json!({"to": "Main St", "note": "none", "gift": false}));
    assert_eq!(step(&without, "wrap")["status"], "skipped");
    assert!(step(&without, "wrap")["skip_reason"].as_str().unwrap().contains("is false"));
    assert_eq!(step(&without, "ship")["status"], "succeeded");
    let null_gift = run(&engine, toml, json!({"address": "Main St", "gift": null})).await;
    assert_eq!(step(&null_gift, "wrap")["status"], "skipped", "a field of null is missing too");
    let with = run(&engine, toml, json!({"address": "Main St", "gift": {"wrap": true}})).await;
    assert_eq!(step(&with, "wrap")["status"], "succeeded", "{with:#}");
    // A condition that is not about missing data still fails the step.
    let typed = toml.replace("input.gift.wrap == true", "input.address > 3");
    let failed = run(&engine, &typed, json!({"address": "Main St"})).await;
    assert_eq!(step(&failed, "wrap")["error"]["kind"], "expression", "{failed:#}");
}
