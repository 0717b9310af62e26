//! Test step: `invoke` succeeds (output = input); `compensate` fails on its
//! first `compensation_failures` attempts (every attempt when absent) with the
//! error kind `compensation_error_kind` ("retryable" by default).

use serde::Deserialize;
use serde_json::Value;
use stepwise_guest::*;

#[derive(Deserialize)]
struct Instructions {
    #[serde(default)]
    compensation_failures: Option<u32>,
    #[serde(default)]
    compensation_error_kind: Option<String>,
}

struct CompensateFails;

impl Guest for CompensateFails {
    fn invoke(_ctx: StepContext, input: Json) -> Result<StepResponse, StepError> {
        let value: Value = parse(&input)?;
        Ok(respond_output(&value))
    }

    fn compensate(ctx: StepContext, data: Json) -> Result<(), StepError> {
        let instructions: Instructions = parse(&data)?;
        let failing = instructions.compensation_failures.is_none_or(|n| ctx.attempt <= n);
        if !failing {
            info(&format!("compensation succeeded on attempt {}", ctx.attempt));
            return Ok(());
        }
        let message = format!("compensation failed on attempt {}", ctx.attempt);
        match instructions.compensation_error_kind.as_deref() {
            Some("permanent") => Err(StepError::Permanent(message)),
            _ => Err(StepError::Retryable(message)),
        }
    }
}

stepwise_guest::export!(CompensateFails with_types_in stepwise_guest::bindings);
