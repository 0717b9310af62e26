//! Test step: returns its input as output, optionally after sleeping.
//!
//! Input fields it understands: `sleep_ms` (blocks in a WASI sleep, to make
//! steps overlap in time) and `compensation` (returned as compensation data;
//! without it `compensate` receives the output). `compensate` logs the data
//! it received so that tests can check which one arrived.

use serde::Deserialize;
use serde_json::Value;
use stepwise_guest::*;

#[derive(Deserialize)]
struct Options {
    #[serde(default)]
    sleep_ms: u64,
    #[serde(default)]
    compensation: Option<Value>,
}

struct Echo;

impl Guest for Echo {
    fn invoke(ctx: StepContext, input: Json) -> Result<StepResponse, StepError> {
        let value: Value = parse(&input)?;
        let options: Options =
            serde_json::from_value(value.clone()).unwrap_or(Options { sleep_ms: 0, compensation: None });
        if options.sleep_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(options.sleep_ms));
        }
        info(&format!("echo {} attempt {}", ctx.step_id, ctx.attempt));
        Ok(StepResponse { output: to_json(&value), compensation: options.compensation.as_ref().map(to_json) })
    }

    fn compensate(ctx: StepContext, data: Json) -> Result<(), StepError> {
        info(&format!("compensate {} with {data}", ctx.step_id));
        Ok(())
    }
}

stepwise_guest::export!(Echo with_types_in stepwise_guest::bindings);
