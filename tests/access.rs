//! Who may do what over HTTP: API tokens created with `stepwise tokens`
//! (a tenant's, `read`, `operator`) and the admin token, each against the
//! routes, on a real server over a real SQLite store. A tenant never
//! reads, lists, completes or cancels another tenant's executions; a read
//! token never writes; a revoked token is refused at once.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use stepwise_test_support::server::{Server, TOKEN};
use stepwise_test_support::web;
use stepwise_test_support::*;

/// Creates a token in the store with `scope`; returns (id, token).
fn create_token(store: &str, scope: &str) -> (String, String) {
    let output = stepwise(&["tokens", "create", "--scope", scope, "--label", "test", "--json", "--store", store]);
    assert!(output.status.success(), "{output:?}");
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(created["scope"], scope);
    (created["id"].as_str().unwrap().to_string(), created["token"].as_str().unwrap().to_string())
}

/// A server over a fresh store (directory `label`) that holds a token for
/// each of `scopes`, created before it starts; returns the server, its store
/// URL and the `(id, token)` of each scope, in order.
fn server_with_tokens(label: &str, scopes: &[&str]) -> (Server, String, Vec<(String, String)>) {
    let dir = scratch_dir(label);
    let store = Server::store_in(&dir);
    let tokens = scopes.iter().map(|scope| create_token(&store, scope)).collect();
    (Server::start_with(dir, &[], &[]), store, tokens)
}

/// A request as `token` (none: anonymous); its status and JSON body.
async fn call(
    server: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = server.client.request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The listing's entry for `workflow` once it is `invalid` (the workflows
/// are checked again in the background when plugins change).
async fn listed_invalid(server: &Server, workflow: &str) -> Value {
    let started = std::time::Instant::now();
    loop {
        let (_, listed) = get(server, "/v1/workflows", TOKEN).await;
        let entry = listed["errors"].as_array().unwrap().iter().find(|e| e["workflow"] == workflow).cloned();
        if let Some(entry) = entry.filter(|entry| entry["status"] == "invalid") {
            return entry;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "never re-checked: {listed:#}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn get(server: &Server, path: &str, token: &str) -> (StatusCode, Value) {
    call(server, Method::GET, path, Some(token), None).await
}

async fn post(server: &Server, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    call(server, Method::POST, path, Some(token), Some(body)).await
}

fn ids(listing: &Value) -> Vec<String> {
    listing["executions"].as_array().unwrap().iter().map(|e| e["execution_id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scope_reaches_only_what_it_may() {
    let (server, _, tokens) =
        server_with_tokens("access-scopes", &["tenant:acme", "tenant:globex", "read", "operator"]);
    let [(_, acme), (_, globex), (_, read), (_, operator)] = <[_; 4]>::try_from(tokens).unwrap();

    // Each tenant starts an execution that waits for an async step.
    let (status, started) = post(&server, "/v1/workflows/approval/executions", &acme, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let acme_run = started["execution_id"].as_str().unwrap().to_string();
    let (_, started) = post(&server, "/v1/workflows/approval/executions", &globex, json!({})).await;
    let globex_run = started["execution_id"].as_str().unwrap().to_string();
    let (_, admin_run) = post(&server, "/v1/workflows/approval/executions", TOKEN, json!({})).await;
    let admin_run = admin_run["execution_id"].as_str().unwrap().to_string();
    for id in [&acme_run, &globex_run, &admin_run] {
        server.until_step_waits(id, "ask").await;
    }
    let (_, execution) = get(&server, &format!("/v1/executions/{acme_run}"), &acme).await;
    assert_eq!(execution["tenant"], "acme", "a tenant token runs executions as its tenant");

    // A tenant may not run as another tenant.
    let (status, denied) = post(&server, "/v1/workflows/approval/executions?tenant=globex", &acme, json!({})).await;
    assert_eq!((status, denied["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{denied}");
    let (status, _) = post(&server, "/v1/events/order.placed?tenant=globex", &acme, json!({"order_id": "o"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Reads: a tenant sees its own executions only; another's is as if it did not exist.
    let (status, _) = get(&server, &format!("/v1/executions/{acme_run}"), &acme).await;
    assert_eq!(status, StatusCode::OK);
    for hidden in [&globex_run, &admin_run] {
        let (status, body) = get(&server, &format!("/v1/executions/{hidden}"), &acme).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (_, unknown) = get(&server, "/v1/executions/no-such-execution", &acme).await;
        assert_eq!(body["error"]["code"], unknown["error"]["code"], "indistinguishable from an unknown id");
    }
    let (_, listed) = get(&server, "/v1/executions", &acme).await;
    assert_eq!(ids(&listed), vec![acme_run.clone()]);
    let (status, _) = get(&server, "/v1/executions?tenant=globex", &acme).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, listed) = get(&server, "/v1/executions?status=waiting", &read).await;
    assert_eq!(ids(&listed).len(), 3, "a read token sees every execution: {listed}");
    let (_, listed) = get(&server, "/v1/executions?tenant=globex", &read).await;
    assert_eq!(ids(&listed), vec![globex_run.clone()], "the tenant filter");
    for token in [&acme, &read, &operator] {
        for path in ["/v1/workflows", "/v1/plugins"] {
            assert_eq!(get(&server, path, token).await.0, StatusCode::OK, "{path}");
        }
    }
    for path in ["/v1/hosts", "/metrics"] {
        assert_eq!(get(&server, path, &acme).await.0, StatusCode::FORBIDDEN, "a tenant does not see {path}");
        assert_eq!(get(&server, path, &read).await.0, StatusCode::OK, "{path}");
        assert_eq!(get(&server, path, &operator).await.0, StatusCode::OK, "{path}");
    }

    // Writes on another tenant's execution: as if it did not exist; nothing changes.
    let success = |id: &str| format!("/v1/executions/{id}/steps/ask/success");
    let (status, _) = post(&server, &success(&globex_run), &acme, json!({"approved": true})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        post(&server, &format!("/v1/executions/{globex_run}/steps/ask/failure"), &acme, json!({"error": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(&server, &format!("/v1/executions/{globex_run}/cancel"), &acme, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, untouched) = get(&server, &format!("/v1/executions/{globex_run}"), TOKEN).await;
    assert_eq!(untouched["status"], "waiting", "{untouched}");

    // A read token writes nothing.
    for path in [
        success(&globex_run),
        format!("/v1/executions/{globex_run}/cancel"),
        "/v1/workflows/approval/executions".into(),
        "/v1/events/order.placed".into(),
    ] {
        let (status, body) = post(&server, &path, &read, json!({"approved": true})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("scope `read`"), "{body}");
    }
    // An operator completes and cancels anyone's, but starts nothing.
    let (status, _) = post(&server, "/v1/workflows/approval/executions", &operator, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, cancelled) = post(&server, &format!("/v1/executions/{globex_run}/cancel"), &operator, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "compensated");
    // The tenant completes its own.
    let (status, done) = post(&server, &success(&acme_run), &acme, json!({"approved": true})).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "succeeded");
    let (_, untouched) = get(&server, &format!("/v1/executions/{admin_run}"), TOKEN).await;
    assert_eq!(untouched["status"], "waiting");

    // Idempotency keys are each tenant's own: the same key starts one execution per tenant.
    let keyed = |token: &str| {
        server
            .client
            .post(server.url("/v1/workflows/accept-quote/executions?wait=true"))
            .bearer_auth(token.to_string())
            .header("Idempotency-Key", "order-1")
            .json(&quote_input())
            .send()
    };
    let first: Value = keyed(&acme).await.unwrap().json().await.unwrap();
    let second: Value = keyed(&globex).await.unwrap().json().await.unwrap();
    let again: Value = keyed(&acme).await.unwrap().json().await.unwrap();
    assert_ne!(first["execution_id"], second["execution_id"]);
    assert_eq!(first["execution_id"], again["execution_id"]);
    assert_eq!(second["tenant"], "globex");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_uploads_only_its_own_plugins_within_a_ceiling() {
    let (server, _, tokens) = server_with_tokens("access-uploads", &["tenant:acme", "tenant:acme-evil", "operator"]);
    let [(_, acme), (_, acme_evil), (_, operator)] = <[_; 3]>::try_from(tokens).unwrap();
    let dir = server.dir.clone();
    let component = std::fs::read(plugins_dir().join("echo.wasm")).unwrap();
    let upload = |name: &str, token: &str, manifest: Option<&str>| {
        let mut form = reqwest::multipart::Form::new()
            .part("component", reqwest::multipart::Part::bytes(component.clone()).file_name("c.wasm"));
        if let Some(manifest) = manifest {
            form = form.text("manifest", manifest.to_string());
        }
        // A client per upload: a refusal answers before the body is read and
        // closes the connection, as it should for up to 64 MiB it will not use.
        let request =
            reqwest::Client::new().put(server.url(&format!("/v1/plugins/{name}"))).bearer_auth(token.to_string());
        async move {
            let response = request.multipart(form).send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = upload("echo", &acme, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["error"]["message"].as_str().unwrap().contains("`acme-...`"), "{body}");
    assert_eq!(upload("acme-echo", &operator, None).await.0, StatusCode::FORBIDDEN);
    let (status, body) = upload("acme-echo", &acme, Some("version = \"1.0.0\"\n")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let stamped = std::fs::read_to_string(dir.join("plugins/acme-echo.toml")).unwrap();
    assert!(stamped.contains("tenant = \"acme\"") && stamped.contains("1.0.0"), "{stamped}");
    assert_eq!(upload("acme-echo", &acme, None).await.0, StatusCode::CREATED, "its own plugin, replaced");
    // A name that looks like acme's but is another tenant's, or the platform's: refused.
    assert_eq!(upload("acme-evil-check", &acme_evil, None).await.0, StatusCode::CREATED);
    let (status, body) = upload("acme-evil-check", &acme, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("is not tenant `acme`'s"), "{body}");
    assert_eq!(upload("acme-platform", TOKEN, None).await.0, StatusCode::CREATED, "the admin uploads any name");
    assert_eq!(upload("acme-platform", &acme, None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(upload("acme-echo", TOKEN, None).await.0, StatusCode::CREATED, "an admin may replace a tenant's");
    // A tenant cannot grant itself the host's environment, shared services,
    // private addresses or more than the default limits.
    let greedy = "[capabilities]\nconfig = true\nservices = [\"payments\"]\nhttp = [\"169.254.169.254\"]\n[secrets]\nt = { env = \"STEPWISE_TOKEN\" }\n[limits]\ndeadline_ms = 3600000\n";
    let (status, body) = upload("acme-greedy", &acme, Some(greedy)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    for refused in ["`secrets`", "`capabilities.services`", "`169.254.169.254`", "`limits.deadline_ms`"] {
        assert!(message.contains(refused), "{refused} in {message}");
    }
    assert!(!dir.join("plugins/acme-greedy.wasm").exists(), "nothing was installed");

    // Workflows: a tenant's own names, with the platform's plugins or its own.
    let put_workflow = |name: &str, token: &str, plugin: &str| {
        let text = format!("name = \"{name}\"\n[[steps]]\nid = \"only\"\nplugin = \"{plugin}\"\n");
        let request = server
            .client
            .put(server.url(&format!("/v1/workflows/{name}")))
            .bearer_auth(token.to_string())
            .header("Content-Type", "application/toml")
            .body(text);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    assert_eq!(put_workflow("globex-flow", &acme, "echo").await.0, StatusCode::FORBIDDEN);
    let (status, body) = put_workflow("acme-flow", &acme, "acme-evil-check").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another tenant's code would see acme's data: {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("belongs to another tenant"), "{body}");
    assert!(!dir.join("workflows/acme-flow.toml").exists());
    // A pinned version of another tenant's plugin is another tenant's plugin.
    let (status, body) = put_workflow("acme-flow", &acme, "acme-evil-check@1").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // A workflow waiting for a plugin does not go live with another tenant's of that name.
    let (status, body) = put_workflow("acme-waits", &acme, "acme-evil-later").await;
    assert_eq!((status, &body["status"]), (StatusCode::ACCEPTED, &json!("waiting_for_plugins")), "{body}");
    assert_eq!(upload("acme-evil-later", &acme_evil, None).await.0, StatusCode::CREATED);
    let refused = listed_invalid(&server, "acme-waits").await;
    assert!(refused["error"].as_str().unwrap().contains("belongs to another tenant (`acme-evil`)"), "{refused}");
    let (status, _) = post(&server, "/v1/workflows/acme-waits/executions", &acme, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not live with acme-evil's code");
    // Nor does a tenant replace another tenant's waiting workflow (acme may
    // upload `acme-...` names, and `acme-evil-...` is one).
    let (status, body) = put_workflow("acme-evil-waits", &acme_evil, "acme-evil-someday").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = put_workflow("acme-evil-waits", &acme, "echo").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(std::fs::read_to_string(dir.join("workflows/acme-evil-waits.toml")).unwrap().contains("acme-evil"));
    // A platform workflow runs for every tenant: waiting, it does not go live with a tenant's plugin.
    let (status, body) = put_workflow("plat-waits", TOKEN, "acme-later").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(upload("acme-later", &acme, None).await.0, StatusCode::CREATED);
    let refused = listed_invalid(&server, "plat-waits").await;
    assert!(refused["error"].as_str().unwrap().contains("a platform workflow"), "{refused}");
    // A tenant does not see why the platform's or another tenant's files do not load.
    let (_, seen) = get(&server, "/v1/workflows", &acme).await;
    let names: Vec<&Value> = seen["errors"].as_array().unwrap().iter().map(|e| &e["workflow"]).collect();
    assert!(!names.contains(&&json!("plat-waits")) && !names.contains(&&json!("acme-evil-waits")), "{seen:#}");
    assert!(names.contains(&&json!("acme-waits")), "its own: {seen:#}");
    assert_eq!(put_workflow("acme-flow", &acme, "echo").await.0, StatusCode::CREATED);
    let stamped = std::fs::read_to_string(dir.join("workflows/acme-flow.toml")).unwrap();
    assert!(stamped.starts_with("tenant = \"acme\"\n"), "{stamped}");
    let (status, ran) = post(&server, "/v1/workflows/acme-flow/executions?wait=true", &acme, json!({"n": 1})).await;
    assert_eq!((status, ran["status"].as_str()), (StatusCode::OK, Some("succeeded")), "{ran}");
    assert_eq!(ran["tenant"], "acme");
    // Only acme runs it; the admin's run is acme's too.
    let (status, _) = post(&server, "/v1/workflows/acme-flow/executions", &acme_evil, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's workflow is unknown");
    let (_, ran) = post(&server, "/v1/workflows/acme-flow/executions?wait=true", TOKEN, json!({})).await;
    assert_eq!(ran["tenant"], "acme", "{ran}");
    // No triggers for nobody in particular, and no replacing what is not its own.
    let with = |extra: &str| format!("name = \"acme-timed\"\n{extra}\n[[steps]]\nid = \"only\"\nplugin = \"echo\"\n");
    for extra in ["on_event = \"order.placed\"", "schedule = \"0 * * * * *\"", "tenant = \"acme\""] {
        let response = server
            .client
            .put(server.url("/v1/workflows/acme-timed"))
            .bearer_auth(&acme)
            .header("Content-Type", "application/toml")
            .body(with(extra))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{extra}");
    }
    assert_eq!(put_workflow("acme-platform-flow", TOKEN, "echo").await.0, StatusCode::CREATED);
    let (status, body) = put_workflow("acme-platform-flow", &acme, "echo").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the platform's, though named like acme's: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_mistyped_and_revoked_tokens_are_refused_everywhere_but_the_open_routes() {
    let (server, store, mut tokens) = server_with_tokens("access-refused", &["read"]);
    let (id, read) = tokens.remove(0);
    let routes = [
        (Method::GET, "/v1/executions"),
        (Method::GET, "/v1/executions/x"),
        (Method::GET, "/v1/workflows"),
        (Method::GET, "/v1/plugins"),
        (Method::GET, "/v1/hosts"),
        (Method::GET, "/metrics"),
        (Method::POST, "/v1/workflows/approval/executions"),
        (Method::POST, "/v1/executions/x/cancel"),
        (Method::POST, "/v1/executions/x/steps/ask/success"),
        (Method::POST, "/v1/events/order.placed"),
        (Method::PUT, "/v1/plugins/echo"),
    ];
    let mistyped = format!("{}0", &read[..read.len() - 1]);
    for token in [None, Some("not-a-token"), Some(mistyped.as_str())] {
        for (method, path) in &routes {
            let (status, body) = call(&server, method.clone(), path, token, Some(json!({}))).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} as {token:?}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    let response = server.client.get(server.url("/v1/executions")).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    for path in ["/healthz", "/openapi.json", "/"] {
        assert_eq!(call(&server, Method::GET, path, None, None).await.0, StatusCode::OK, "{path} stays open");
    }
    // Revoked: refused from the next request on, by the running server.
    assert_eq!(get(&server, "/v1/executions", &read).await.0, StatusCode::OK);
    let revoked = stepwise(&["tokens", "revoke", &id, "--store", &store]);
    assert!(revoked.status.success(), "{revoked:?}");
    assert_eq!(get(&server, "/v1/executions", &read).await.0, StatusCode::UNAUTHORIZED);
    // The listing shows it revoked, and never a secret or its hash.
    let listed = stepwise(&["tokens", "list", "--json", "--store", &store]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(listed["tokens"][0]["revoked_at"].is_string(), "{listed}");
    let text = listed.to_string();
    assert!(!text.contains(&read[20..]) && !text.contains("secret"), "{text}");
    let unknown = stepwise(&["tokens", "revoke", "0000000000000000", "--store", &store]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no token with id"));
    let bad_scope = stepwise(&["tokens", "create", "--scope", "tenant:Acme", "--store", &store]);
    assert_eq!(bad_scope.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_scope.stderr).contains("--scope"), "{bad_scope:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_view_asks_for_a_token_and_a_tenant_sees_only_its_own() {
    let (server, _, mut tokens) = server_with_tokens("access-web", &["tenant:acme"]);
    let (_, acme) = tokens.remove(0);
    let (_, own) = post(&server, "/v1/workflows/accept-quote/executions?wait=true", &acme, quote_input()).await;
    let (_, other) = post(&server, "/v1/workflows/accept-quote/executions?wait=true", TOKEN, quote_input()).await;
    let dom = web::dump_dom(&server, "/#/");
    assert!(dom.contains("id=\"sign-in\""), "without a token the page asks for one: {dom}");
    let dom = web::dump_dom(&server, &format!("/#/?token={acme}"));
    assert!(dom.contains(own["execution_id"].as_str().unwrap()), "{dom}");
    assert!(!dom.contains(other["execution_id"].as_str().unwrap()), "another's execution is not listed: {dom}");
    assert!(dom.contains("not shown to this token"), "a tenant does not see the hosts: {dom}");
}
