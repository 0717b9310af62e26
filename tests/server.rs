//! The server as clients see it: a real `stepwise serve` process on a
//! loopback port, a real HTTP client. Every endpoint's success and error
//! paths, auth, events, schedules, async steps over HTTP, plugin upload,
//! a burst of concurrent requests, and the web view in headless Chromium.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stepwise_test_support::browser::Page;
use stepwise_test_support::server::{Server, TOKEN};
use stepwise_test_support::web;
use stepwise_test_support::*;

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_api_success_and_error_paths() {
    let server = Server::start("api", &[]);
    // Run and wait.
    let (status, execution) = server.post("/v1/workflows/accept-quote/executions?wait=true", quote_input()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(execution["status"], "succeeded");
    let id = execution["execution_id"].as_str().unwrap().to_string();
    // Run without waiting: 202 with the id.
    let (status, accepted) = server.post("/v1/workflows/accept-quote-declined/executions", quote_input()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let declined = server.wait_final(accepted["execution_id"].as_str().unwrap()).await;
    assert_eq!(declined["status"], "compensated");
    // Idempotency-Key returns the same execution.
    let keyed = |key: &'static str| {
        server
            .client
            .post(server.url("/v1/workflows/accept-quote/executions?wait=true"))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", key)
            .json(&quote_input())
            .send()
    };
    let first: Value = keyed("k-1").await.unwrap().json().await.unwrap();
    let second: Value = keyed("k-1").await.unwrap().json().await.unwrap();
    assert_eq!(first["execution_id"], second["execution_id"]);

    // Get one, list, filter, paginate.
    let (status, fetched) = server.get(&format!("/v1/executions/{id}")).await;
    assert_eq!((status, fetched["execution_id"].as_str()), (StatusCode::OK, Some(id.as_str())));
    let (_, all) = server.get("/v1/executions").await;
    assert_eq!(all["executions"].as_array().unwrap().len(), 3);
    let (_, compensated) = server.get("/v1/executions?status=compensated").await;
    assert_eq!(compensated["executions"].as_array().unwrap().len(), 1);
    let (_, by_workflow) = server.get("/v1/executions?workflow=accept-quote").await;
    assert_eq!(by_workflow["executions"].as_array().unwrap().len(), 2);
    let (_, page) = server.get("/v1/executions?limit=2").await;
    assert_eq!(page["executions"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = server.get(&format!("/v1/executions?limit=2&cursor={cursor}")).await;
    assert_eq!(rest["executions"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());

    // Errors.
    let (status, body) = server.get("/v1/executions/no-such-id").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = server.get("/v1/executions?status=exploded").await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (status, body) = server.get("/v1/executions?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = server.post("/v1/workflows/no-such-workflow/executions", json!({})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = server.get("/v2/whatever").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let raw = |content_type: Option<&str>, body: &'static str| {
        let request = server.client.post(server.url("/v1/workflows/accept-quote/executions")).bearer_auth(TOKEN);
        let request = match content_type {
            Some(content_type) => request.header("content-type", content_type),
            None => request,
        };
        request.body(body).send()
    };
    let response = raw(Some("application/json"), "{oops").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&response.json().await.unwrap()), "invalid_json");
    // JSON is read only when sent as JSON: a form or an unlabelled body is refused, 415.
    for content_type in [Some("application/x-www-form-urlencoded"), Some("text/plain"), None] {
        let response = raw(content_type, r#"{"cart_id": "c"}"#).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(error_code(&body), "unsupported_media_type");
        assert!(body["error"]["message"].as_str().unwrap().contains("application/json"), "{body}");
    }
    let response = raw(Some("Application/JSON; charset=utf-8"), r#"{"cart_id": "c", "items": []}"#).await.unwrap();
    assert_ne!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "parameters and case do not matter");
    // A cancellation with a misspelled field is refused, naming it.
    let (status, body) = server.post("/v1/executions/no-such-id/cancel", json!({"reasn": "typo"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap().contains("reasn"), "{body}");
    let response = server.client.delete(server.url("/v1/executions")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    // An oversized body: the server answers 413 and closes the connection, so a client of its own.
    let big = "x".repeat(2 << 20);
    let response = reqwest::Client::new()
        .post(server.url("/v1/events/big"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(format!("\"{big}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&response.json().await.unwrap()), "payload_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_token_are_refused_reads_included() {
    let server = Server::start("auth", &[]);
    for (path, request) in [
        (
            "/v1/workflows/accept-quote/executions",
            server.client.post(server.url("/v1/workflows/accept-quote/executions")),
        ),
        ("/v1/events/order.placed", server.client.post(server.url("/v1/events/order.placed"))),
        ("/v1/executions/x/steps/ask/success", server.client.post(server.url("/v1/executions/x/steps/ask/success"))),
        ("/v1/plugins/echo", server.client.put(server.url("/v1/plugins/echo"))),
    ] {
        let response = request.bearer_auth("wrong-token").json(&json!({})).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(error_code(&response.json().await.unwrap()), "unauthorized");
    }
    let response = server.client.post(server.url("/v1/events/order.placed")).json(&json!({})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "no token at all");
    for path in ["/v1/executions", "/v1/workflows", "/v1/plugins", "/metrics", "/v1/hosts"] {
        let anonymous = server.client.get(server.url(path)).send().await.unwrap().status();
        assert_eq!(anonymous, StatusCode::UNAUTHORIZED, "{path} without a token");
        assert_eq!(server.get(path).await.0, StatusCode::OK, "{path} with the admin token");
    }
    for path in ["/healthz", "/openapi.json", "/"] {
        assert_eq!(server.client.get(server.url(path)).send().await.unwrap().status(), StatusCode::OK, "{path}");
    }
    let (_, health) = server.get("/healthz").await;
    assert_eq!(health, json!({"status": "ok"}));
}

/// Connects to the server and sends a request's head: `head` (its request
/// line and headers), then `Host` and a `Content-Length` of `body_len`.
fn send_head(base: &str, head: &str, body_len: usize) -> std::io::Result<std::net::TcpStream> {
    use std::io::Write;
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(stream, "{head}Host: {address}\r\nContent-Length: {body_len}\r\n\r\n")?;
    Ok(stream)
}

/// Sends one request as a plain HTTP/1.1 client does: the head, then the
/// whole body of `body_len` bytes, and only then reads the answer. Returns
/// the status and the JSON body of the answer.
fn send_whole_body_then_read(base: &str, head: &str, body_len: usize) -> std::io::Result<(u16, Value)> {
    use std::io::{Read, Write};
    let mut stream = send_head(base, head, body_len)?;
    let chunk = vec![b'x'; 1 << 20];
    let mut left = body_len;
    while left > 0 {
        let n = left.min(chunk.len());
        stream.write_all(&chunk[..n])?;
        left -= n;
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or("");
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// The server refuses these bodies before reading them; a client that sends
/// its whole body before it reads still gets the answer, not a reset
/// connection (the server reads and discards what was refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_a_refused_body_to_its_end_gets_the_answer() {
    let server = Server::start("linger", &[]);
    let base = server.base.clone();
    let cases = [
        // Past the 64 MiB upload limit.
        (
            format!("PUT /v1/plugins/big HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: multipart/form-data; boundary=x\r\n"),
            (65 << 20) + 1,
            (413, "payload_too_large"),
        ),
        // Past the 1 MiB JSON limit.
        (
            format!("POST /v1/events/big HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"),
            8 << 20,
            (413, "payload_too_large"),
        ),
        // No token: refused before the body matters.
        ("POST /v1/events/big HTTP/1.1\r\nContent-Type: application/json\r\n".to_string(), 8 << 20, (401, "unauthorized")),
    ];
    for (head, body_len, (status, code)) in cases {
        let base = base.clone();
        let head_line = head.lines().next().unwrap_or_default().to_string();
        let (got, body) = tokio::task::spawn_blocking(move || send_whole_body_then_read(&base, &head, body_len))
            .await
            .unwrap()
            .unwrap_or_else(|error| panic!("{head_line} ({body_len} bytes): the connection broke: {error}"));
        assert_eq!((got, error_code(&body)), (status, code), "{head_line}: {body}");
    }
    // A client that asks before sending (`Expect: 100-continue`) and is
    // refused is not told to continue: its first answer is the refusal.
    let head = "POST /v1/events/big HTTP/1.1\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n";
    let first_line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let stream = send_head(&base, head, 8 << 20).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stream).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert!(first_line.starts_with("HTTP/1.1 401"), "the refusal comes first, not a 100: {first_line}");
    // The server goes on serving.
    assert_eq!(server.get("/v1/workflows").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_runs_every_subscribed_workflow() {
    let server = Server::start("events", &[]);
    let (status, published) =
        server.post("/v1/events/order.placed", json!({"order_id": "o-1", "email": "a@b.c"})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let started = published["executions"].as_array().unwrap();
    let mut workflows: Vec<&str> = started.iter().map(|e| e["workflow"].as_str().unwrap()).collect();
    workflows.sort();
    assert_eq!(workflows, vec!["audit", "notify"]);
    for execution in started {
        let done = server.wait_final(execution["execution_id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "succeeded");
        assert_eq!(done["input"]["order_id"], "o-1", "the payload is the input");
    }
    let (_, none) = server.post("/v1/events/nobody.listens", json!({})).await;
    assert_eq!(none["executions"], json!([]));
    let longest = "é".repeat(128);
    let (status, _) = server.post(&format!("/v1/events/{longest}"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "128 characters (256 bytes) is the documented maximum");
    let (status, refused) = server.post(&format!("/v1/events/{longest}x"), json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(refused["error"]["message"].as_str().unwrap().contains("1 to 128 characters, not 129"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_schedule_fires_once_per_slot() {
    let every_second = "name = \"tick\"\nschedule = \"* * * * * *\"\n[[steps]]\nid = \"beat\"\nplugin = \"echo\"\ninput = { at = \"$.input.scheduled_at\" }\n";
    let slots = |listed: &Value| -> Vec<String> {
        let runs = listed["executions"].as_array().unwrap();
        runs.iter().map(|run| run["execution_id"].as_str().unwrap().to_string()).collect()
    };
    let first = Server::start("cron", &[("tick.toml", every_second)]);
    // Serving: wait for two slots to run.
    while slots(&first.get("/v1/executions?workflow=tick&limit=100").await.1).len() < 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = first.dir.clone();
    drop(first); // down for a while: slots pass with no server
    let stopped = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let restarted = chrono::Utc::now();
    let server = Server::start_in(dir, &[("tick.toml", every_second)]);
    // Serving again: wait until a slot after the restart ran.
    let scheduled_at = |execution: &Value| -> chrono::DateTime<chrono::Utc> {
        execution["input"]["scheduled_at"].as_str().unwrap().parse().unwrap()
    };
    let executions = loop {
        let (_, listed) = server.get("/v1/executions?workflow=tick&limit=100").await;
        let mut executions = Vec::new();
        for id in slots(&listed) {
            executions.push(server.wait_final(&id).await);
        }
        if executions.iter().any(|execution| scheduled_at(execution) > restarted) {
            break executions;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let at: Vec<_> = executions.iter().map(scheduled_at).collect();
    let unique: std::collections::BTreeSet<_> = at.iter().collect();
    assert_eq!(unique.len(), at.len(), "no slot ran twice: {at:?}");
    // Of the slots that passed while no server ran, at most the latest was caught up.
    let caught_up = at.iter().filter(|slot| **slot > stopped && **slot <= restarted).count();
    assert!(caught_up <= 1, "{caught_up} missed slots ran: {at:?}");
    let (_, workflows) = server.get("/v1/workflows").await;
    assert!(workflows["workflows"].as_array().unwrap().iter().any(|w| w["schedule"] == "* * * * * *"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_step_is_completed_over_http() {
    let server = Server::start("async", &[]);
    let (_, execution) = server.post("/v1/workflows/approval/executions?wait=true", json!({})).await;
    assert_eq!(execution["status"], "waiting");
    let id = execution["execution_id"].as_str().unwrap();
    // A step the workflow does not have: 404, and the execution still waits.
    for step in ["nope", "after"] {
        let (status, body) = server.post(&format!("/v1/executions/{id}/steps/{step}/success"), json!({})).await;
        let expected = if step == "nope" { StatusCode::NOT_FOUND } else { StatusCode::CONFLICT };
        assert_eq!(status, expected, "{step}: {body}");
    }
    let claims_before = claims_total(&server).await;
    let (status, done) =
        server.post(&format!("/v1/executions/{id}/steps/ask/success"), json!({"approved": true})).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "succeeded");
    assert_eq!(step(&done, "after")["output"]["approved"], true);
    // The execution rested unowned: the completion claimed it once, and took
    // the report in at once (no release and second claim first).
    assert_eq!(claims_total(&server).await, claims_before + 1);
    let (status, body) = server.post(&format!("/v1/executions/{id}/steps/ask/success"), json!({})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "not_waiting"));

    let (_, other) = server.post("/v1/workflows/approval/executions?wait=true", json!({})).await;
    let id = other["execution_id"].as_str().unwrap();
    let (status, failed) =
        server.post(&format!("/v1/executions/{id}/steps/ask/failure"), json!({"error": "declined"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(failed["status"], "compensated");
    let (status, body) = server.post(&format!("/v1/executions/{id}/steps/ask/failure"), json!({"nope": 1})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_json"));
    let (status, _) = server.post("/v1/executions/missing/steps/ask/success", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The server's `stepwise_claims_total`.
async fn claims_total(server: &Server) -> u64 {
    let text = server.client.get(server.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    let line =
        text.lines().find_map(|line| line.strip_prefix("stepwise_claims_total ")).expect("stepwise_claims_total");
    line.trim().parse().unwrap()
}

async fn upload(server: &Server, name: &str, component: Vec<u8>, manifest: Option<&str>) -> (StatusCode, Value) {
    let mut form = reqwest::multipart::Form::new().part("component", reqwest::multipart::Part::bytes(component));
    if let Some(manifest) = manifest {
        form = form.text("manifest", manifest.to_string());
    }
    let request = server.client.put(server.url(&format!("/v1/plugins/{name}"))).bearer_auth(TOKEN).multipart(form);
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_plugin_is_used_at_once() {
    let server = Server::start("upload", &[]);
    let (_, before) = server.post("/v1/workflows/versioned/executions?wait=true", json!({})).await;
    assert_eq!(step(&before, "only")["output"]["version"], "v1");
    let v2 = std::fs::read(repo_root().join("build/variants/versioned-v2.wasm")).unwrap();
    let (status, uploaded) = upload(&server, "versioned", v2, Some("version = \"2.0.0\"\n")).await;
    assert_eq!(status, StatusCode::CREATED, "{uploaded}");
    assert_eq!(uploaded["version"], "2.0.0");
    let (_, after) = server.post("/v1/workflows/versioned/executions?wait=true", json!({})).await;
    assert_eq!(step(&after, "only")["output"]["version"], "v2", "used at once");
    let (_, plugins) = server.get("/v1/plugins").await;
    let versioned = plugins["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "versioned").unwrap().clone();
    assert_eq!(versioned["version"], "2.0.0");

    // An invalid upload is refused and changes nothing.
    let (status, body) = upload(&server, "versioned", b"not wasm".to_vec(), None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_plugin"));
    let not_a_step = std::fs::read(invalid_component("not-a-step")).unwrap();
    let (status, body) = upload(&server, "versioned", not_a_step, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["message"].as_str().unwrap().contains("missing export `invoke`"));
    let (_, still) = server.post("/v1/workflows/versioned/executions?wait=true", json!({})).await;
    assert_eq!(step(&still, "only")["output"]["version"], "v2");
    assert!(Path::new(&server.dir.join("plugins/versioned.toml")).exists());

    // A name too long for the plugin directory: 400 naming the rule, no path of the server.
    let (status, body) = upload(&server, &"a".repeat(251), b"x".to_vec(), None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "bad_request"), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("not a valid plugin name") && !message.contains(&server.dir.display().to_string()));
    // Past the 64 MiB upload limit: 413 (the server discards the refused
    // body, so the client, still writing, gets the answer).
    let (status, body) = upload(&server, "versioned", vec![0u8; 65 << 20], None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"), "{body}");
}

/// PUTs a workflow file; its status and JSON answer.
async fn put_workflow(server: &Server, name: &str, content_type: &str, text: &str) -> (StatusCode, Value) {
    let response = server
        .client
        .put(server.url(&format!("/v1/workflows/{name}")))
        .bearer_auth(TOKEN)
        .header("Content-Type", content_type)
        .body(text.to_string())
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_are_uploaded_over_http_and_load_once_their_plugins_arrive() {
    let late =
        "name = \"late\"\n[[steps]]\nid = \"greet\"\nplugin = \"late-echo\"\ninput = { hello = \"$.input.name\" }\n";
    let server = Server::start("workflow-upload", &[("late.toml", late)]);
    // A workflow file naming a plugin that is not there yet waits for it...
    let (_, listed) = server.get("/v1/workflows").await;
    let waiting = |listed: &Value, workflow: &str| {
        listed["errors"].as_array().unwrap().iter().find(|e| e["workflow"] == workflow).cloned()
    };
    let error = waiting(&listed, "late").unwrap_or_else(|| panic!("{listed:#}"));
    assert_eq!((&error["file"], &error["status"]), (&json!("late.toml"), &json!("waiting_for_plugins")), "{error}");
    assert_eq!(error["missing_plugins"], json!(["late-echo"]), "{error}");
    assert!(error["error"].as_str().unwrap().contains("unknown plugin `late-echo`"), "{error}");
    // ... and so does one uploaded over HTTP before its plugin (accepted, not refused) ...
    let later =
        "name = \"later\"\n[[steps]]\nid = \"greet\"\nplugin = \"later-echo\"\ninput = { bye = \"$.input.name\" }\n";
    let (status, body) = put_workflow(&server, "later", "application/toml", later).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!((&body["status"], &body["missing_plugins"]), (&json!("waiting_for_plugins"), &json!(["later-echo"])));
    let (status, _) = server.post("/v1/workflows/later/executions?wait=true", json!({"name": "Ada"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not live before its plugin");
    let (_, listed) = server.get("/v1/workflows").await;
    assert_eq!(waiting(&listed, "later").unwrap()["status"], "waiting_for_plugins", "{listed:#}");
    // ... and both go live once their plugins are uploaded, without touching the files.
    let echo = std::fs::read(plugins_dir().join("echo.wasm")).unwrap();
    assert_eq!(upload(&server, "late-echo", echo.clone(), None).await.0, StatusCode::CREATED);
    assert_eq!(upload(&server, "later-echo", echo, None).await.0, StatusCode::CREATED);
    for (workflow, field, step) in [("late", "hello", "greet"), ("later", "bye", "greet")] {
        let started = Instant::now();
        loop {
            let path = format!("/v1/workflows/{workflow}/executions?wait=true");
            let (status, ran) = server.post(&path, json!({"name": "Ada"})).await;
            if status == StatusCode::OK {
                assert_eq!(ran["output"][step][field], "Ada", "{ran:#}");
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{workflow} never loaded: {status} {ran}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (_, listed) = server.get("/v1/workflows").await;
    assert!(waiting(&listed, "later").is_none() && waiting(&listed, "late").is_none(), "{listed:#}");
    let live = listed["workflows"].as_array().unwrap().iter().find(|w| w["name"] == "later").cloned();
    assert_eq!(live.unwrap_or_default()["status"], "live", "{listed:#}");

    // Uploaded over HTTP: checked, written, loaded before the answer.
    let greet = |suffix: &str| {
        format!(
            "name = \"greet\"\n[[steps]]\nid = \"say\"\nplugin = \"echo\"\ninput = {{ text = \"hello{suffix}\" }}\n"
        )
    };
    let (status, body) = put_workflow(&server, "greet", "application/toml", &greet("")).await;
    assert_eq!((status, body["file"].as_str()), (StatusCode::CREATED, Some("greet.toml")), "{body}");
    let (_, ran) = server.post("/v1/workflows/greet/executions?wait=true", json!({})).await;
    assert_eq!(ran["output"]["say"]["text"], "hello", "{ran:#}");
    let (status, _) = put_workflow(&server, "greet", "text/plain; charset=utf-8", &greet(" again")).await;
    assert_eq!(status, StatusCode::OK, "replaced");
    let (_, ran) = server.post("/v1/workflows/greet/executions?wait=true", json!({})).await;
    assert_eq!(ran["output"]["say"]["text"], "hello again", "the new version runs at once");
    assert!(server.dir.join("workflows/greet.toml").is_file());

    // A live workflow is not replaced by a version that cannot run yet (a
    // typo would take it down): its plugins come first.
    let waits = "name = \"greet\"\n[[steps]]\nid = \"say\"\nplugin = \"nope\"\n";
    let (status, body) = put_workflow(&server, "greet", "application/toml", waits).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("unknown plugin `nope`") && message.contains("`greet` is live"), "{message}");
    assert!(!std::fs::read_to_string(server.dir.join("workflows/greet.toml")).unwrap().contains("nope"));
    // A parent whose child waits for a plugin waits for it too.
    let child = "name = \"kid\"\n[[steps]]\nid = \"say\"\nplugin = \"kid-echo\"\ninput = \"$.input\"\n";
    let parent = "name = \"mom\"\n[[steps]]\nid = \"call\"\nworkflow = \"kid\"\ninput = \"$.input\"\n";
    assert_eq!(put_workflow(&server, "kid", "application/toml", child).await.0, StatusCode::ACCEPTED);
    let (status, body) = put_workflow(&server, "mom", "application/toml", parent).await;
    assert_eq!((status, &body["missing_plugins"]), (StatusCode::ACCEPTED, &json!(["kid-echo"])), "{body}");
    let echo = std::fs::read(plugins_dir().join("echo.wasm")).unwrap();
    assert_eq!(upload(&server, "kid-echo", echo, None).await.0, StatusCode::CREATED);
    let started = Instant::now();
    loop {
        let (status, ran) = server.post("/v1/workflows/mom/executions?wait=true", json!({"n": 7})).await;
        if status == StatusCode::OK {
            assert_eq!(ran["status"], "succeeded", "{ran:#}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the parent never loaded: {status} {ran}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Refusals change nothing and say why, with the CLI's words; so does a
    // missing plugin beside a real problem.
    let broken = "name = \"greet\"\n[[steps]]\nid = \"say\"\nplugin = \"nope\"\ninput = \"$.steps.nowhere.output\"\n";
    let (status, body) = put_workflow(&server, "greet", "application/toml", broken).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("step `say`, field `plugin`") && message.contains("nope"), "{message}");
    assert!(message.contains("step `say`, field `input`") && message.contains("nowhere"), "{message}");
    let unauthenticated = server
        .client
        .put(server.url("/v1/workflows/greet"))
        .header("Content-Type", "application/toml")
        .body(greet(" anonymous"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = put_workflow(&server, "other", "application/toml", &greet("")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"]["message"].as_str().unwrap().contains("defines workflow `greet`, not `other`"), "{body}");
    assert_eq!(
        put_workflow(&server, "greet", "application/json", &greet("")).await.0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(put_workflow(&server, "Bad Name", "application/toml", &greet("")).await.0, StatusCode::BAD_REQUEST);
    let (_, ran) = server.post("/v1/workflows/greet/executions?wait=true", json!({})).await;
    assert_eq!(ran["output"]["say"]["text"], "hello again", "the good version still serves");
    assert!(!server.dir.join("workflows/other.toml").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_uploads_each_answer_their_own_version_and_leave_a_matching_pair() {
    let server = std::sync::Arc::new(Server::start("upload-race", &[]));
    let variants: Vec<(Vec<u8>, &str)> = ["v1", "v2"]
        .iter()
        .map(|v| (std::fs::read(repo_root().join(format!("build/variants/versioned-{v}.wasm"))).unwrap(), *v))
        .collect();
    let mut uploads = tokio::task::JoinSet::new();
    for round in 0..8 {
        let (component, variant) = variants[round % 2].clone();
        let server = server.clone();
        uploads.spawn(async move {
            let manifest = format!("version = \"{}.0.{round}\"\n", &variant[1..]);
            let (status, answer) = upload(&server, "versioned", component, Some(&manifest)).await;
            (status, answer, variant, round)
        });
    }
    while let Some(joined) = uploads.join_next().await {
        let (status, answer, variant, round) = joined.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["version"], format!("{}.0.{round}", &variant[1..]), "each answer names its own upload");
    }
    // Whatever won, the component and its manifest belong together.
    let (_, plugins) = server.get("/v1/plugins").await;
    let listed = plugins["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "versioned").unwrap().clone();
    let (_, run) = server.post("/v1/workflows/versioned/executions?wait=true", json!({})).await;
    let running = step(&run, "only")["output"]["version"].as_str().unwrap().to_string();
    assert!(listed["version"].as_str().unwrap().starts_with(&running[1..]), "{listed} runs {running}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_openapi_describe_the_server() {
    let server = Server::start("metrics", &[]);
    server.post("/v1/workflows/accept-quote/executions?wait=true", quote_input()).await;
    server.post("/v1/workflows/accept-quote/executions?wait=true&tenant=acme", quote_input()).await;
    server.post("/v1/workflows/accept-quote/executions?wait=true&tenant=acme", quote_input()).await;
    let text = server.client.get(server.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    for metric in [
        "stepwise_executions{status=\"succeeded\"} 3",
        "stepwise_step_attempts_total{outcome=\"succeeded\"} 16",
        "stepwise_step_latency_seconds_count 16",
        "stepwise_guest_calls_total{tenant=\"\",plugin=\"reserve-inventory\"} 1",
        "stepwise_guest_calls_total{tenant=\"acme\",plugin=\"reserve-inventory\"} 2",
        "stepwise_plugin_loads_total{source=\"compiled\"}",
    ] {
        assert!(text.contains(metric), "missing {metric} in:\n{text}");
    }
    // Fuel is summed per tenant and plugin: acme ran twice what the platform ran once.
    let fuel = |tenant: &str| -> u64 {
        let prefix = format!("stepwise_guest_fuel_total{{tenant=\"{tenant}\",plugin=\"reserve-inventory\"}} ");
        text.lines().find_map(|line| line.strip_prefix(&prefix)).expect("a fuel line").parse().unwrap()
    };
    assert!(fuel("acme") > fuel("") && fuel("") > 0, "{} vs {}", fuel("acme"), fuel(""));
    let (_, openapi) = server.get("/openapi.json").await;
    for path in [
        "/v1/workflows/{name}/executions",
        "/v1/executions/{id}",
        "/v1/events/{event}",
        "/v1/plugins/{name}",
        "/metrics",
    ] {
        assert!(openapi["paths"][path].is_object(), "openapi lacks {path}");
    }
}

/// 2,000 execution requests at once: none lost, every one final. Reports
/// throughput and p99 request latency (a figure, not a check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_2000_concurrent_requests_loses_nothing() {
    let server = std::sync::Arc::new(Server::start("burst", &[]));
    let total = 2000;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let server = server.clone();
        tasks.spawn(async move {
            let sent = Instant::now();
            let mut input = quote_input();
            input["cart_id"] = json!(format!("burst-{i}"));
            let (status, body) = server.post("/v1/workflows/accept-quote/executions", input).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            (body["execution_id"].as_str().unwrap().to_string(), sent.elapsed())
        });
    }
    let mut ids = Vec::new();
    let mut latencies = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let (id, latency) = result.unwrap();
        ids.push(id);
        latencies.push(latency);
    }
    let accepted = started.elapsed();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), total);
    for id in &ids {
        assert_eq!(server.wait_final(id).await["status"], "succeeded");
    }
    let finished = started.elapsed();
    latencies.sort();
    let p99 = latencies[total * 99 / 100];
    eprintln!(
        "burst: {total} requests accepted in {:.2} s, all succeeded after {:.2} s ({:.0} executions/s), request p99 {} ms",
        accepted.as_secs_f64(),
        finished.as_secs_f64(),
        total as f64 / finished.as_secs_f64(),
        p99.as_millis()
    );
    let (_, counted) = server.get("/v1/executions?status=succeeded&limit=500").await;
    assert_eq!(counted["executions"].as_array().unwrap().len(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_view_shows_a_compensated_execution() {
    let server = Server::start("web", &[]);
    let (_, execution) = server.post("/v1/workflows/accept-quote-declined/executions?wait=true", quote_input()).await;
    assert_eq!(execution["status"], "compensated");
    let id = execution["execution_id"].as_str().unwrap();
    let dom = dump_dom(&server, &format!("/#/executions/{id}"));
    assert!(dom.contains("accept-quote-declined"), "{dom}");
    for (step_id, status) in
        [("cart", "compensated"), ("reserve", "compensated"), ("payment", "compensated"), ("order", "failed")]
    {
        let node = format!("data-step=\"{step_id}\" data-status=\"{status}\"");
        assert!(dom.contains(&node), "the graph lacks {node}");
    }
    assert!(dom.contains("order rejected: quote expired"), "the error is shown");
    assert!(dom.contains("compensation_started"), "the timeline is shown");
    assert!(dom.contains("class=\"cost\" data-fuel=") && dom.contains("id=\"execution-cost\""), "costs are shown");
    assert!(dom.contains("at rest: no host owns it"), "a finished execution has no owner: {dom}");
    // The list page with a status filter.
    let dom = dump_dom(&server, "/#/?status=compensated");
    assert!(dom.contains(id) && dom.contains("data-status=\"compensated\""), "{dom}");
    // The hosts sharing the store, this one live.
    let (_, hosts) = server.get("/v1/hosts").await;
    let this = hosts["hosts"][0]["id"].as_str().unwrap();
    assert!(dom.contains(&format!("<tr data-host=\"{this}\" data-live=\"true\">")), "{dom}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_view_shows_which_host_owns_a_running_execution() {
    let slow = "name = \"slow\"\n[[steps]]\nid = \"nap\"\nplugin = \"echo\"\ninput = { sleep_ms = 20000 }\n";
    let server = Server::start("web-owner", &[("slow.toml", slow)]);
    let (_, started) = server.post("/v1/workflows/slow/executions", json!({})).await;
    let id = started["execution_id"].as_str().unwrap();
    let (_, execution) = server.get(&format!("/v1/executions/{id}")).await;
    let owner = execution["owner"]["host"].as_str().expect("a running execution has an owner").to_string();
    assert!(execution["owner"]["lease_until"].is_string() && execution["owner"]["fence"].is_u64(), "{execution:#}");
    let dom = dump_dom(&server, &format!("/#/executions/{id}"));
    assert!(dom.contains(&format!("owned by host <b data-owner=\"{owner}\">")), "{dom}");
}

/// The DOM of a page of the web view, signed in with the admin token
/// (handed over in the fragment).
fn dump_dom(server: &Server, path: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    web::dump_dom(server, &format!("{path}{separator}token={TOKEN}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_view_shows_hooks_skipped_steps_fan_out_elements_and_child_executions() {
    let server = Server::start("web-composition", &[]);
    let mut input = quote_input();
    input["refuse_shipping"] = json!(true);
    let (_, parent) = server.post("/v1/workflows/place-order/executions?wait=true&tenant=acme", input).await;
    assert_eq!(parent["status"], "compensated", "{parent:#}");
    let child = parent["child_execution_ids"][0].as_str().unwrap();
    let dom = dump_dom(&server, &format!("/#/executions/{}", parent["execution_id"].as_str().unwrap()));
    assert!(dom.contains("tenant <b id=\"tenant\">acme</b>"), "{dom}");
    assert!(dom.contains(&format!("href=\"#/executions/{child}\"")), "the child is linked: {dom}");
    assert!(dom.contains("data-step=\"ship\" data-status=\"skipped\""), "{dom}");
    assert!(dom.contains("skipped: condition"), "the skip reason is shown");
    assert!(dom.contains("data-step=\"quote\" data-status=\"compensated\""));

    let dom = dump_dom(&server, &format!("/#/executions/{child}"));
    assert!(dom.contains("child of"), "{dom}");
    for handler in ["validate-cart[enrich-cart]", "validate-cart[cart-limit]"] {
        assert!(dom.contains(&format!("<tr class=\"unit handler\" data-step=\"{handler}\">")), "{handler}: {dom}");
    }
    assert!(dom.contains("enrich-cart (priority 10)"));

    let (_, fan_out) = server.post("/v1/workflows/reserve-each/executions?wait=true", quote_input()).await;
    assert_eq!(fan_out["status"], "succeeded", "{fan_out:#}");
    let dom = dump_dom(&server, &format!("/#/executions/{}", fan_out["execution_id"].as_str().unwrap()));
    for element in ["reserve[0]", "reserve[1]"] {
        assert!(dom.contains(&format!("<tr class=\"unit element\" data-step=\"{element}\">")), "{element}: {dom}");
    }
    assert!(dom.contains("2 elements"), "the graph counts the elements");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_hook_handlers_run_over_http_and_an_execution_can_be_cancelled() {
    let server = Server::start("tenants", &[]);
    let mut big = quote_input();
    big["items"] = json!([{"sku": "TV", "quantity": 1, "unit_price": 50000}]);
    let (status, vetoed) =
        server.post("/v1/workflows/accept-quote/executions?wait=true&tenant=acme", big.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(vetoed["status"], "compensated", "{vetoed:#}");
    assert_eq!(vetoed["tenant"], "acme");
    assert_eq!(vetoed["hooks"][0]["handlers"].as_array().unwrap().len(), 2);

    let (status, error) = server.post("/v1/workflows/accept-quote/executions?tenant=Not%20Valid", big).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&error), "bad_request");

    let (_, done) = server.post("/v1/workflows/accept-quote/executions?wait=true", quote_input()).await;
    assert_eq!(done["status"], "succeeded");
    let id = done["execution_id"].as_str().unwrap();
    let unauthorized = server.client.post(server.url(&format!("/v1/executions/{id}/cancel"))).send().await.unwrap();
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    // The scheme is case-insensitive (RFC 7235); any other token is refused.
    let cancel_nothing = |authorization: String| {
        let request = server.client.post(server.url("/v1/executions/no-such-id/cancel"));
        request.header("authorization", authorization).send()
    };
    assert_eq!(cancel_nothing(format!("bearer  {TOKEN}")).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(cancel_nothing(format!("Bearer {TOKEN}x")).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(cancel_nothing(format!("Basic {TOKEN}")).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let (status, cancelled) =
        server.post(&format!("/v1/executions/{id}/cancel"), json!({"reason": "customer cancelled"})).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "compensated");
    assert_eq!(cancelled["error"]["message"], "customer cancelled");
    let (status, _) = server.post("/v1/executions/no-such-id/cancel", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn serve_refuses_a_token_no_request_could_present_and_no_auth_overrides_the_environment() {
    let dir = scratch_dir("serve-tokens");
    let serve = |extra: &[&str]| {
        let mut command = Command::new(stepwise_bin());
        command.args(["serve", "--addr", "127.0.0.1:0", "--store", "memory", "--workflows"]).arg(&dir);
        command.arg("--plugins").arg(plugins_dir()).args(extra).env_remove("STEPWISE_TOKEN");
        command
    };
    let refused = serve(&["--token", "0123456789abcdef\n"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("trailing newline"), "{refused:?}");
    let refused = serve(&[]).env("STEPWISE_TOKEN", "short").output().unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("at least 16"), "{refused:?}");
    // --no-auth with a token in the environment: it serves, open, and says so.
    let mut child = serve(&["--no-auth"])
        .env("STEPWISE_TOKEN", "0123456789abcdef")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut warned = false;
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        warned |= line.contains("STEPWISE_TOKEN is ignored");
        if line.starts_with("stepwise serving on ") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned, "--no-auth says the environment's token is ignored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_execution_is_retried_over_http_and_anything_else_is_refused() {
    let stuck = "name = \"stuck\"\n[[steps]]\nid = \"hold\"\nplugin = \"compensate-fails\"\ninput = { compensation_failures = 1 }\nretry = { max_attempts = 1 }\n[[steps]]\nid = \"boom\"\nplugin = \"fail\"\nafter = [\"hold\"]\n";
    let server = Server::start("retry", &[("stuck.toml", stuck)]);
    let (_, failed) = server.post("/v1/workflows/stuck/executions?wait=true", json!({})).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    let id = failed["execution_id"].as_str().unwrap();
    let (status, retried) = server.post(&format!("/v1/executions/{id}/retry"), json!({"reason": "fixed"})).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["status"], "compensated");
    assert_eq!(step(&retried, "hold")["compensation_attempts"], 2);
    let (status, body) = server.post(&format!("/v1/executions/{id}/retry"), json!({})).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "not_retryable"), "{body}");
    let (_, done) = server.post("/v1/workflows/accept-quote/executions?wait=true", quote_input()).await;
    let done = done["execution_id"].as_str().unwrap();
    let (status, body) = server.post(&format!("/v1/executions/{done}/retry"), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "a succeeded execution is not retried: {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("is succeeded"), "{body}");
    let (status, _) = server.post("/v1/executions/no-such-id/retry", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_view_searches_pages_and_offers_the_actions_an_execution_allows() {
    let stuck = "name = \"stuck\"\n[[steps]]\nid = \"hold\"\nplugin = \"compensate-fails\"\ninput = { compensation_failures = 1 }\nretry = { max_attempts = 1 }\n[[steps]]\nid = \"boom\"\nplugin = \"fail\"\nafter = [\"hold\"]\n";
    let server = Server::start("web-operate", &[("stuck.toml", stuck)]);
    let (_, acme) = server.post("/v1/workflows/accept-quote/executions?wait=true&tenant=acme", quote_input()).await;
    let (_, plain) = server.post("/v1/workflows/accept-quote/executions?wait=true", quote_input()).await;
    let (_, waiting) = server.post("/v1/workflows/approval/executions?wait=true", json!({"ask": "ana"})).await;
    let (_, failed) = server.post("/v1/workflows/stuck/executions?wait=true", json!({})).await;
    let id = |execution: &Value| execution["execution_id"].as_str().unwrap().to_string();

    // Search by workflow and tenant.
    let dom = dump_dom(&server, "/#/?workflow=accept-quote&tenant=acme");
    assert!(dom.contains(&id(&acme)) && !dom.contains(&id(&plain)), "{dom}");
    assert!(!dom.contains(&id(&waiting)), "another workflow is not listed");
    // A page at a time, with a link to the next one.
    let dom = dump_dom(&server, "/#/?limit=1");
    assert!(dom.contains("id=\"next-page\"") && dom.contains(&id(&failed)), "newest first, one per page: {dom}");
    assert!(!dom.contains(&id(&acme)), "{dom}");

    // A failed execution offers a retry; a waiting one a form to complete its step.
    // (The dumped page holds its script too: look inside the rendered actions only.)
    let actions = |dom: &str| -> String {
        const OPEN: &str = "<div id=\"actions\">";
        let rendered = |at: &usize| !dom[at + OPEN.len()..].starts_with("${");
        let start = dom.match_indices(OPEN).map(|(at, _)| at).find(rendered).expect("the actions are rendered");
        let rest = &dom[start..];
        rest[..rest.find("</div>").unwrap()].to_string()
    };
    let dom = dump_dom(&server, &format!("/#/executions/{}", id(&failed)));
    let offered = actions(&dom);
    assert!(offered.contains("data-action=\"retry\""), "{offered}");
    assert!(!offered.contains("data-action=\"cancel\""), "a failed execution cannot be cancelled: {offered}");
    let dom = dump_dom(&server, &format!("/#/executions/{}", id(&waiting)));
    let offered = actions(&dom);
    assert!(offered.contains("<form class=\"complete\" data-step=\"ask\">"), "{offered}");
    assert!(offered.contains("data-action=\"cancel\"") && !offered.contains("data-action=\"retry\""), "{offered}");
    // Payloads, collapsed, and how long each step took.
    let dom = dump_dom(&server, &format!("/#/executions/{}", id(&plain)));
    assert!(dom.contains("data-payload=\"input\"") && dom.contains("data-payload=\"output\""), "{dom}");
    assert!(dom.contains("data-payload=\"compensation data\""), "reserve returns compensation data");
    assert!(dom.contains("class=\"duration\" data-ms="), "{dom}");
}

/// Each action of the web view, clicked in headless Chromium as an operator
/// would: the search form, retry, complete and fail an async step with the
/// JSON editor, cancel; the server's answer says each one took effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_view_actions_work_when_clicked_in_a_browser() {
    let stuck = "name = \"stuck\"\n[[steps]]\nid = \"hold\"\nplugin = \"compensate-fails\"\ninput = { compensation_failures = 1 }\nretry = { max_attempts = 1 }\n[[steps]]\nid = \"boom\"\nplugin = \"fail\"\nafter = [\"hold\"]\n";
    let server = Server::start("web-click", &[("stuck.toml", stuck)]);
    let (_, failed) = server.post("/v1/workflows/stuck/executions?wait=true", json!({})).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let (_, execution) = server.post("/v1/workflows/approval/executions?wait=true", json!({})).await;
        assert_eq!(execution["status"], "waiting");
        waiting.push(execution["execution_id"].as_str().unwrap().to_string());
    }
    let id = |execution: &Value| execution["execution_id"].as_str().unwrap().to_string();
    let mut page = Page::open(&server, &format!("/#/?token={TOKEN}")).await;

    // Search: type a workflow into the form and submit it.
    page.wait_for("the search form", "document.querySelector('#search input[name=workflow]')").await;
    page.evaluate(
        "document.querySelector('#search input[name=workflow]').value = 'stuck'; \
         document.querySelector('#search button').click()",
    )
    .await;
    let listed = page
        .wait_for(
            "the search result",
            "location.hash.includes('workflow=stuck') && document.querySelectorAll('#executions tr').length === 2 \
             && document.querySelector('#executions').innerText",
        )
        .await;
    assert!(listed.as_str().unwrap().contains(&id(&failed)), "{listed}");

    // Retry the failed execution's compensations: it ends compensated.
    let show = |execution: &str| format!("location.hash = '#/executions/{execution}'");
    page.evaluate(&show(&id(&failed))).await;
    let retry = format!(
        "document.body.innerText.includes('{}') && document.querySelector('button[data-action=retry]')",
        id(&failed)
    );
    page.wait_for("the retry button", &retry).await;
    page.evaluate("document.querySelector('button[data-action=retry]').click()").await;
    page.wait_for("the retry's answer", "document.getElementById('action-result').innerText.startsWith('done')").await;
    let retried = server.until(&id(&failed), "became compensated", |e| e["status"] == "compensated").await;
    assert_eq!(retried["events"].as_array().unwrap().iter().filter(|e| e["type"] == "retry_requested").count(), 1);

    // Complete a waiting step with the JSON typed into its editor.
    let fill_and_press = |outcome: &str, body: &str| {
        format!(
            "document.querySelector('form.complete[data-step=ask] textarea').value = {body:?}; \
             document.querySelector('form.complete[data-step=ask] button[data-outcome={outcome}]').click()"
        )
    };
    // Each page is waited for by its execution's id: the previous one's
    // form must not be mistaken for it.
    let form_of = |execution: &str| {
        format!(
            "document.body.innerText.includes('{execution}') && document.querySelector('form.complete[data-step=ask]')"
        )
    };
    page.evaluate(&show(&waiting[0])).await;
    page.wait_for("the completion form", &form_of(&waiting[0])).await;
    page.evaluate(&fill_and_press("success", r#"{"approved": "by ana"}"#)).await;
    let completed = server.until(&waiting[0], "became succeeded", |e| e["status"] == "succeeded").await;
    let after = completed["steps"].as_array().unwrap().iter().find(|s| s["id"] == "after").unwrap().clone();
    assert_eq!(after["output"]["approved"], "by ana", "{completed:#}");

    // Fail one: the text becomes the step's error, and the execution rolls back.
    page.evaluate(&show(&waiting[1])).await;
    page.wait_for("the completion form", &form_of(&waiting[1])).await;
    page.evaluate(&fill_and_press("failure", r#""no budget this quarter""#)).await;
    let rejected = server.until(&waiting[1], "became compensated", |e| e["status"] == "compensated").await;
    assert!(rejected["error"]["message"].as_str().unwrap().contains("no budget this quarter"), "{rejected:#}");

    // JSON that does not parse is refused in the page, and nothing is sent.
    page.evaluate(&show(&waiting[2])).await;
    page.wait_for("the completion form", &form_of(&waiting[2])).await;
    page.evaluate(&fill_and_press("success", "{not json")).await;
    page.wait_for("the refusal", "document.getElementById('action-result').innerText.startsWith('not JSON')").await;
    let (_, still) = server.get(&format!("/v1/executions/{}", waiting[2])).await;
    assert_eq!(still["status"], "waiting");

    // Cancel it instead.
    page.evaluate("document.querySelector('button[data-action=cancel]').click()").await;
    let cancelled = server.until(&waiting[2], "became compensated", |e| e["status"] == "compensated").await;
    assert_eq!(cancelled["error"]["kind"], "cancelled", "{cancelled:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_view_never_paints_an_overtaken_answer_over_the_page_shown() {
    let server = Server::start("web-overtaken", &[]);
    let mut ids = Vec::new();
    for workflow in ["accept-quote", "accept-quote-declined"] {
        let (_, execution) =
            server.post(&format!("/v1/workflows/{workflow}/executions?wait=true"), quote_input()).await;
        ids.push(execution["execution_id"].as_str().unwrap().to_string());
    }
    let (slow, shown) = (&ids[0], &ids[1]);
    let mut page = Page::open(&server, &format!("/#/?token={TOKEN}")).await;
    page.wait_for("the list", "document.querySelector('#executions')").await;
    // The answer for `slow` is held back until the test releases it, as a
    // slow network or server would.
    page.evaluate(&format!(
        "window.heldBack = null; window.released = false; const realFetch = window.fetch; \
         window.fetch = (url, init) => String(url).includes('{slow}') \
           ? new Promise(resolve => {{ window.heldBack = () => realFetch(url, init) \
               .then(response => response.json()).then(data => resolve({{ ok: true, status: 200, \
                 json: async () => {{ setTimeout(() => {{ window.released = true; }}, 0); return data; }} }})); }}) \
           : realFetch(url, init); true"
    ))
    .await;
    page.evaluate(&format!("location.hash = '#/executions/{slow}'; true")).await;
    page.wait_for("the held-back request", "window.heldBack !== null").await;
    page.evaluate(&format!("location.hash = '#/executions/{shown}'; true")).await;
    page.wait_for("the second execution", &format!("document.body.innerText.includes('{shown}')")).await;
    page.evaluate("window.heldBack(); true").await;
    page.wait_for("the held-back answer", "window.released").await;
    let body = page.evaluate("document.body.innerText").await;
    let body = body.as_str().unwrap();
    assert!(
        body.contains(shown.as_str()) && !body.contains(slow.as_str()),
        "the overtaken answer was painted:\n{body}"
    );
}

/// An OTLP/HTTP collector on a loopback port: the spans it was sent, each
/// with its resource's attributes under `resource`; a body that is not
/// OTLP/JSON is kept as `{"unreadable": ...}` for the test to see.
async fn otlp_collector() -> (String, Arc<std::sync::Mutex<Vec<Value>>>) {
    let spans = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = spans.clone();
    let collect = move |body: axum::body::Bytes| async move {
        let Ok(request) = serde_json::from_slice::<Value>(&body) else {
            sink.lock().unwrap().push(json!({"unreadable": String::from_utf8_lossy(&body)}));
            return ([("content-type", "application/json")], "{}");
        };
        for resource in request["resourceSpans"].as_array().into_iter().flatten() {
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let mut span = span.clone();
                    span["resource"] = resource["resource"]["attributes"].clone();
                    sink.lock().unwrap().push(span);
                }
            }
        }
        ([("content-type", "application/json")], "{}")
    };
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(collect));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (endpoint, spans)
}

/// The spans of the execution `id`'s trace (its UUID without dashes), once
/// one of them is `wanted` (30 s at most: spans are exported in batches).
async fn trace_until(
    spans: &std::sync::Mutex<Vec<Value>>,
    id: &str,
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let trace_id = id.replace('-', "");
    let started = Instant::now();
    loop {
        let trace: Vec<Value> = spans.lock().unwrap().iter().filter(|s| s["traceId"] == trace_id).cloned().collect();
        if trace.iter().any(&wanted) {
            return trace;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{what} never arrived: {trace:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A span attribute's value (`stringValue` or `intValue`, as text).
fn attribute(span: &Value, key: &str) -> String {
    let value = &span["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|kv| kv["key"] == key)
        .unwrap_or_else(|| panic!("span {} has no `{key}`", span["name"]))["value"];
    value["stringValue"].as_str().or(value["intValue"].as_str()).map(str::to_string).unwrap_or(value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_execution_is_a_trace_of_its_attempts_and_compensations_sent_over_otlp() {
    let (endpoint, spans) = otlp_collector().await;
    let dir = test_dir("server-otlp");
    let server = Server::start_with(dir, &[], &["--otlp-endpoint", &endpoint]);
    let path = "/v1/workflows/accept-quote-declined/executions?wait=true&tenant=acme";
    let (_, execution) = server.post(path, quote_input()).await;
    assert_eq!(execution["status"], "compensated", "{execution:#}");
    let id = execution["execution_id"].as_str().unwrap().to_string();
    // Exported in batches: wait for the root span to arrive.
    let trace = trace_until(&spans, &id, "the root span", |s| s["parentSpanId"] == "").await;
    assert!(!spans.lock().unwrap().iter().any(|s| s.get("unreadable").is_some()), "every body is OTLP/JSON");
    let root = trace.iter().find(|s| s["parentSpanId"] == "").unwrap();
    let service = json!({"key": "service.name", "value": {"stringValue": "stepwise"}});
    assert!(root["resource"].as_array().unwrap().contains(&service), "{}", root["resource"]);
    assert_eq!(root["name"], "execution accept-quote-declined");
    assert_eq!(attribute(root, "outcome"), "compensated");
    assert_eq!(attribute(root, "tenant"), "acme");
    assert_eq!(root["status"]["code"], 2, "not succeeded: an error status");

    let named = |name: &str| trace.iter().filter(|s| s["name"] == name).collect::<Vec<_>>();
    for step in ["cart", "reserve", "payment", "order"] {
        let attempts = named(&format!("attempt {step}"));
        assert_eq!(attempts.len(), 1, "one attempt of {step}: {trace:#?}");
        let attempt = attempts[0];
        assert_eq!(attempt["parentSpanId"], root["spanId"], "a child of the execution");
        assert_eq!(attribute(attempt, "attempt"), "1");
        assert_eq!(attribute(attempt, "tenant"), "acme");
        assert_eq!(attribute(attempt, "workflow"), "accept-quote-declined");
        assert_eq!(attribute(attempt, "plugin.hash").len(), 64, "the pinned version");
        assert!(attribute(attempt, "fuel").parse::<u64>().unwrap() > 0);
        let (start, end) = (&attempt["startTimeUnixNano"], &attempt["endTimeUnixNano"]);
        let nanos = |v: &Value| v.as_str().unwrap().parse::<u128>().unwrap();
        assert!(nanos(start) <= nanos(end) && nanos(start) >= nanos(&root["startTimeUnixNano"]), "{attempt}");
        assert!(nanos(end) <= nanos(&root["endTimeUnixNano"]), "within the execution: {attempt}");
    }
    let order = named("attempt order")[0];
    assert_eq!(attribute(order, "outcome"), "permanent");
    assert!(order["status"]["message"].as_str().unwrap().contains("quote expired"), "{order}");
    for step in ["cart", "reserve", "payment"] {
        let compensation = named(&format!("compensation {step}"));
        assert_eq!(compensation.len(), 1, "{step} compensated once: {trace:#?}");
        assert_eq!(attribute(compensation[0], "export"), "compensate");
        assert_eq!(attribute(compensation[0], "outcome"), "succeeded");
    }
    assert!(named("compensation order").is_empty(), "the failed step is not compensated");

    // Cancelled after it succeeded, an execution ends twice: one root, and
    // the second ending a child of it.
    let (_, succeeded) = server.post("/v1/workflows/accept-quote/executions?wait=true", quote_input()).await;
    let id = succeeded["execution_id"].as_str().unwrap().to_string();
    server.post(&format!("/v1/executions/{id}/cancel"), json!({"reason": "customer changed their mind"})).await;
    server.until(&id, "was compensated", |e| e["status"] == "compensated").await;
    let ended_again = |s: &Value| s["name"] == "execution accept-quote (ended again)";
    let trace = trace_until(&spans, &id, "the second ending", ended_again).await;
    let roots: Vec<&Value> = trace.iter().filter(|s| s["parentSpanId"] == "").collect();
    assert_eq!(roots.len(), 1, "one root: {trace:#?}");
    assert_eq!(attribute(roots[0], "outcome"), "succeeded");
    let again = trace.iter().find(|s| s["name"] == "execution accept-quote (ended again)").unwrap();
    assert_eq!((attribute(again, "outcome").as_str(), &again["parentSpanId"]), ("compensated", &roots[0]["spanId"]));
}
