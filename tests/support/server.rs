//! A real `stepwise serve` process for tests: started on a loopback port
//! over its own directory (plugins, workflows, tenants, SQLite store), with
//! a real HTTP client; killed when dropped.

use crate::{plugins_dir, repo_root, stepwise_bin};
use reqwest::StatusCode;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bearer token every test server requires.
pub const TOKEN: &str = "test-token-0123456789";

/// A `stepwise serve` child process; killed when dropped.
pub struct Server {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its directory: plugins, workflows, tenants, the SQLite store.
    pub dir: PathBuf,
    /// A client with a large pool.
    pub client: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workflows every test server loads.
pub const WORKFLOWS: &[(&str, &str)] = &[
    ("quote.toml", include_str!("../../guest-examples/workflows/accept-quote.toml")),
    ("declined.toml", include_str!("../../guest-examples/workflows/accept-quote-declined.toml")),
    (
        "audit.toml",
        "name = \"audit\"\non_event = \"order.placed\"\n[[steps]]\nid = \"record\"\nplugin = \"echo\"\ninput = { order = \"$.input.order_id\" }\n",
    ),
    (
        "notify.toml",
        "name = \"notify\"\non_event = \"order.placed\"\n[[steps]]\nid = \"send\"\nplugin = \"echo\"\ninput = { to = \"$.input.email\" }\n",
    ),
    (
        "approval.toml",
        "name = \"approval\"\n[[steps]]\nid = \"ask\"\nplugin = \"echo\"\nasync = true\n[[steps]]\nid = \"after\"\nplugin = \"echo\"\ninput = { approved = \"$.steps.ask.output.approved\" }\n",
    ),
    ("versioned.toml", "name = \"versioned\"\n[[steps]]\nid = \"only\"\nplugin = \"versioned\"\n"),
    ("place-order.toml", include_str!("../../guest-examples/workflows/place-order.toml")),
    ("reserve-each.toml", include_str!("../../guest-examples/workflows/reserve-each.toml")),
];

impl Server {
    /// Starts a server in a fresh directory named after `label`.
    pub fn start(label: &str, extra_workflows: &[(&str, &str)]) -> Self {
        let dir = crate::test_dir(&format!("server-{label}"));
        let _ = std::fs::remove_dir_all(&dir);
        Self::start_in(dir, extra_workflows)
    }

    /// Starts a server on `dir` (its plugins, workflows and store), e.g. again after a stop.
    pub fn start_in(dir: PathBuf, extra_workflows: &[(&str, &str)]) -> Self {
        Self::start_with(dir, extra_workflows, &[])
    }

    /// Starts a server on `dir` with extra `stepwise serve` arguments, over
    /// the store [`Self::store_in`] names.
    pub fn start_with(dir: PathBuf, extra_workflows: &[(&str, &str)], extra_args: &[&str]) -> Self {
        let store = Self::store_in(&dir);
        Self::start_on(dir, &store, extra_workflows, extra_args)
    }

    /// The URL of the SQLite store a server started on `dir` uses.
    pub fn store_in(dir: &std::path::Path) -> String {
        format!("sqlite://{}", dir.join("server.db").display())
    }

    /// Starts a server on `dir` (plugins, workflows, code cache) over the store `store`.
    pub fn start_on(dir: PathBuf, store: &str, extra_workflows: &[(&str, &str)], extra_args: &[&str]) -> Self {
        for sub in ["plugins", "workflows", "tenants"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::copy(repo_root().join("guest-examples/tenants/acme.toml"), dir.join("tenants/acme.toml")).unwrap();
        for entry in std::fs::read_dir(plugins_dir()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            // The JavaScript and Python guests (12-18 MB, seconds to compile
            // into each server's fresh cache) are tested in languages.rs.
            if !(name.starts_with("js-") || name.starts_with("py-")) {
                std::fs::copy(&path, dir.join("plugins").join(&name)).unwrap();
            }
        }
        std::fs::copy(repo_root().join("build/variants/versioned-v1.wasm"), dir.join("plugins/versioned.wasm"))
            .unwrap();
        for (name, text) in WORKFLOWS.iter().chain(extra_workflows) {
            std::fs::write(dir.join("workflows").join(name), text).unwrap();
        }
        let mut child = Command::new(stepwise_bin())
            .args(["serve", "--addr", "127.0.0.1:0", "--token", TOKEN])
            .arg("--plugins")
            .arg(dir.join("plugins"))
            .arg("--workflows")
            .arg(dir.join("workflows"))
            .arg("--tenants")
            .arg(dir.join("tenants"))
            .arg("--store")
            .arg(store)
            .args(extra_args)
            .env("STEPWISE_CACHE", dir.join("cache"))
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut printed = Vec::new();
        let base = loop {
            let Some(line) = lines.next() else {
                panic!("the server exited before listening; it printed:\n{}", printed.join("\n"));
            };
            let line = line.unwrap();
            if let Some(url) = line.strip_prefix("stepwise serving on ") {
                break url.to_string();
            }
            printed.push(line);
        };
        std::thread::spawn(move || lines.for_each(drop));
        let client = reqwest::Client::builder().pool_max_idle_per_host(512).build().unwrap();
        Server { child, base, dir, client }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON with the token.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self.client.post(self.url(path)).bearer_auth(TOKEN).json(&body).send().await.unwrap();
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }

    /// GETs JSON with the token.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.client.get(self.url(path)).bearer_auth(TOKEN).send().await.unwrap();
        (response.status(), response.json().await.unwrap_or(Value::Null))
    }

    /// Polls an execution until `reached` holds for it (30 s at most); returns it.
    pub async fn until(&self, id: &str, what: &str, reached: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let (_, execution) = self.get(&format!("/v1/executions/{id}")).await;
            if reached(&execution) {
                return execution;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{id} never {what}: {execution}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until the execution's async step `step` waits for its completion.
    pub async fn until_step_waits(&self, id: &str, step: &str) -> Value {
        self.until(id, "waited", |execution| {
            execution["steps"].as_array().into_iter().flatten().any(|s| s["id"] == step && s["status"] == "waiting")
        })
        .await
    }

    /// Polls an execution until it is final (30 s at most).
    pub async fn wait_final(&self, id: &str) -> Value {
        let started = Instant::now();
        loop {
            let (_, execution) = self.get(&format!("/v1/executions/{id}")).await;
            if is_final(&execution) {
                return execution;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{id} did not finish: {execution}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether an execution (its JSON) is over: succeeded, compensated or failed.
pub fn is_final(execution: &Value) -> bool {
    ["succeeded", "compensated", "failed"].contains(&execution["status"].as_str().unwrap_or_default())
}
