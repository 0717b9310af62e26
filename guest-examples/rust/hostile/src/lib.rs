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
            "read_file" => json!(std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())),
            "list_root" => json!(std::fs::read_dir("/").map(|d| d.count()).map_err(|e| e.to_string())),
            "read_env" => json!(std::env::vars().collect::<Vec<_>>()),
            "open_socket" => {
                json!(std::net::TcpStream::connect("127.0.0.1:22").map(|_| "connected").map_err(|e| e.to_string()))
            }
            "resolve_host" => {
                json!(std::net::ToSocketAddrs::to_socket_addrs("localhost:80")
                    .map(|a| a.count())
                    .map_err(|e| e.to_string()))
            }
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
