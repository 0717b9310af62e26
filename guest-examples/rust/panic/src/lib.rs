//! Test step: panics (a trap for the host) on attempts up to `panic_times`
//! (every attempt when absent), then succeeds.

use serde::Deserialize;
use stepwise_guest::*;

#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    panic_times: Option<u32>,
}

struct Panic;

impl Guest for Panic {
    fn invoke(ctx: StepContext, input: Json) -> Result<StepResponse, StepError> {
        let input: Input = parse(&input)?;
        if input.panic_times.is_none_or(|times| ctx.attempt <= times) {
            panic!("guest panicked on attempt {}", ctx.attempt);
        }
        Ok(respond_output(&ctx.attempt))
    }

    fn compensate(_ctx: StepContext, _data: Json) -> Result<(), StepError> {
        Ok(())
    }
}

stepwise_guest::export!(Panic with_types_in stepwise_guest::bindings);
