//! Test step: fails with a retryable error on its first `fail_times` attempts,
//! then succeeds with `{"attempt": n, "idempotency_key": ..}`.

use serde::{Deserialize, Serialize};
use stepwise_guest::*;

#[derive(Deserialize)]
struct Input {
    fail_times: u32,
}

#[derive(Serialize)]
struct Output {
    attempt: u32,
    idempotency_key: String,
}

struct Flaky;

impl Guest for Flaky {
    fn invoke(ctx: StepContext, input: Json) -> Result<StepResponse, StepError> {
        let input: Input = parse(&input)?;
        if ctx.attempt <= input.fail_times {
            return Err(StepError::Retryable(format!(
                "transient failure on attempt {} of {}",
                ctx.attempt, input.fail_times
            )));
        }
        info(&format!("succeeded on attempt {}", ctx.attempt));
        Ok(respond_output(&Output { attempt: ctx.attempt, idempotency_key: ctx.idempotency_key }))
    }

    fn compensate(ctx: StepContext, _data: Json) -> Result<(), StepError> {
        info(&format!("compensated {}", ctx.step_id));
        Ok(())
    }
}

stepwise_guest::export!(Flaky with_types_in stepwise_guest::bindings);
