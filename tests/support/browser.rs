//! A headless Chromium page driven over the DevTools protocol: the tests
//! click the web view's buttons and fill its forms as an operator would,
//! then read what the page and the server say.

use crate::server::Server;
use crate::web::chromium;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One page of a headless Chromium, killed on drop.
pub struct Page {
    chromium: Child,
    socket: Socket,
    next_id: u64,
}

impl Page {
    /// Opens `path` of `server` (e.g. `/#/executions/ID?token=T`).
    pub async fn open(server: &Server, path: &str) -> Page {
        let profile = server.dir.join(format!("chromium-devtools-{}", std::process::id()));
        let mut chromium = Command::new(chromium())
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .args(["--remote-debugging-port=0", "--remote-allow-origins=*"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running chromium");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let mut lines = BufReader::new(chromium.stderr.take().unwrap()).lines();
        let browser = loop {
            let line = lines.next().expect("chromium exited before listening").unwrap();
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                break url.trim().to_string();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        let http = browser.replacen("ws://", "http://", 1);
        let http = &http[..http.find("/devtools").unwrap()];
        let targets: Value = reqwest::get(format!("{http}/json/list")).await.unwrap().json().await.unwrap();
        let page =
            targets.as_array().unwrap().iter().find(|target| target["type"] == "page").expect("chromium has a page")
                ["webSocketDebuggerUrl"]
                .as_str()
                .unwrap()
                .to_string();
        let (socket, _) = tokio_tungstenite::connect_async(page.as_str()).await.expect("connecting to the page");
        let mut page = Page { chromium, socket, next_id: 0 };
        page.call("Page.navigate", json!({"url": server.url(path)})).await;
        page
    }

    /// Sends a DevTools command and returns its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let reply = self.try_call(method, params).await;
        assert!(reply["error"].is_null(), "{method}: {reply}");
        reply["result"].clone()
    }

    /// Sends a DevTools command and returns the whole reply (`result` or `error`).
    async fn try_call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let text = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket.send(Message::Text(text.into())).await.expect("sending to chromium");
        loop {
            let message = self.socket.next().await.expect("chromium closed the page").expect("reading from chromium");
            let Message::Text(text) = message else { continue };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == id {
                return reply;
            }
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub async fn evaluate(&mut self, expression: &str) -> Value {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let result = self.call("Runtime.evaluate", params).await;
        assert!(result["exceptionDetails"].is_null(), "`{expression}` threw: {result}");
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy in the page (it re-renders as the
    /// server answers); returns its value. Panics with `what` after 30 s.
    pub async fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        let guarded = format!("(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()");
        loop {
            // A page being replaced (navigation) answers with an error: try again.
            let params = json!({"expression": guarded, "returnByValue": true});
            let reply = self.try_call("Runtime.evaluate", params).await;
            let value = reply["result"]["result"]["value"].clone();
            let truthy = !matches!(&value, Value::Null | Value::Bool(false)) && value != json!("") && value != json!(0);
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let body = self.evaluate("document.body.innerText").await;
                panic!("the page never showed {what}; it shows:\n{}", body.as_str().unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.chromium.kill();
        let _ = self.chromium.wait();
    }
}
