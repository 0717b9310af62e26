//! Test component: attacks its sandbox in the way `{"attack": ..}` names.
//! Every attack must fail the attempt with the right error kind (or find
//! nothing to reach) while the host and other executions carry on.

use serde::Deserialize;
use serde_json::json;
use stepwise_guest::bindings::stepwise::step::{config, kv};
use stepwise_guest::*;

#[derive(Deserialize)]
struct Input {
    attack: String,
    #[serde(default)]
    size: usize,
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

struct Hostile;

/// Counts invocations in this instance: a fresh instance per call keeps it at 1.
static INVOCATIONS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Turns a refused operation into a permanent step error naming the attack.
fn denied<T, E: std::fmt::Display>(attack: &str, result: Result<T, E>) -> Result<T, StepError> {
    result.map_err(|error| StepError::Permanent(format!("{attack} denied: {error}")))
}

/// A GET through `wasi:http/outgoing-handler`: the status code, or the error.
fn http_get(url: &str) -> Result<u16, String> {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{Fields, Method, OutgoingRequest, Scheme};
    let (scheme, rest) = url.split_once("://").ok_or("url needs a scheme")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Get).map_err(|()| "method")?;
    let scheme = if scheme == "https" { Scheme::Https } else { Scheme::Http };
    request.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "authority")?;
    request.set_path_with_query(Some(&format!("/{path}"))).map_err(|()| "path")?;
    let response = outgoing_handler::handle(request, None).map_err(|error| format!("{error:?}"))?;
    response.subscribe().block();
    match response.get() {
        Some(Ok(Ok(response))) => Ok(response.status()),
        Some(Ok(Err(error))) => Err(format!("{error:?}")),
        other => Err(format!("no response: {other:?}")),
    }
}

fn spin() -> u64 {
    let mut counter: u64 = 0;
    loop {
        counter = std::hint::black_box(counter.wrapping_add(1));
        if counter == u64::MAX {
            return counter;
        }
    }
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    recurse(depth + 1) + frame[3]
}

impl Guest for Hostile {
    fn invoke(_ctx: StepContext, input: Json) -> Result<StepResponse, StepError> {
        let input: Input = parse(&input)?;
        let observed = match input.attack.as_str() {
            "none" | "loop_in_compensate" => json!("behaved"),
            "loop" => json!(spin()),
            "recursion" => json!(recurse(0)),
            "memory_bomb" => {
                // One large allocation: the memory limit refuses the growth.
                let block: Vec<u8> = Vec::with_capacity(input.size.max(256 << 20));
                json!(std::hint::black_box(block).capacity())
            }
            "memory_creep" => {
                let mut blocks = Vec::new();
                loop {
                    blocks.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "huge_output" => {
                // Built by hand: serializing through serde would spend the fuel first.
                let output = format!("\"{}\"", "x".repeat(input.size));
                return Ok(StepResponse { output, compensation: None });
            }
            "huge_stdout" => {
                for _ in 0..input.size {
                    println!("{}", "y".repeat(1024));
                }
                json!("printed")
            }
            "panic" => panic!("hostile guest panics on purpose"),
            // Reaching outside the sandbox must fail: the denial fails the attempt.
            "read_file" => json!(denied("read_file", std::fs::read_to_string("/etc/passwd"))?),
            "list_root" => json!(denied("list_root", std::fs::read_dir("/").map(|d| d.count()))?),
            "read_env" => {
                let vars: Vec<(String, String)> = std::env::vars().collect();
                if vars.is_empty() {
                    return Err(StepError::Permanent("read_env denied: the environment is empty".into()));
                }
                json!(vars)
            }
            "open_socket" => json!(denied("open_socket", std::net::TcpStream::connect("127.0.0.1:22").map(|_| ()))?),
            "resolve_host" => {
                json!(denied(
                    "resolve_host",
                    std::net::ToSocketAddrs::to_socket_addrs("localhost:80").map(|a| a.count())
                )?)
            }
            "http_get" => json!(denied("http_get", http_get(&input.key))?),
            "counter" => json!(INVOCATIONS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1),
            "kv_set" => json!(kv::set(&input.key, &input.value)),
            "kv_get" => json!(kv::get(&input.key)),
            "config_get" => json!(config::get(&input.key)),
            other => return Err(StepError::Permanent(format!("unknown attack `{other}`"))),
        };
        Ok(respond_output(&json!({ "attack": input.attack, "observed": observed })))
    }

    fn compensate(_ctx: StepContext, data: Json) -> Result<(), StepError> {
        if data.contains("loop_in_compensate") {
            spin();
        }
        Ok(())
    }
}

stepwise_guest::export!(Hostile with_types_in stepwise_guest::bindings);
