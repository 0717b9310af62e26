//! The `{{name}}` step: a Stepwise step component (world `step-log`).
//!
//! `invoke` does the work and returns the output (and, optionally, the data
//! `compensate` needs to undo it); `compensate` undoes it when the workflow
//! rolls back. Return `StepError::Retryable` for transient failures (the host
//! retries) and `StepError::Permanent` for the others (the saga compensates).

wit_bindgen::generate!({ world: "step-log", path: "wit" });

// The world's `use types.{..}` brings StepContext, StepResponse and StepError into scope.
use stepwise::step::log::{log, Level};

struct Step;

impl Guest for Step {
    fn invoke(ctx: StepContext, input: String) -> Result<StepResponse, StepError> {
        let input: serde_json::Value =
            serde_json::from_str(&input).map_err(|e| StepError::Permanent(format!("invalid input: {e}")))?;
        let name = input["name"].as_str().ok_or_else(|| StepError::Permanent("`name` is missing".into()))?;
        log(Level::Info, &format!("greeting {name} (attempt {})", ctx.attempt));
        let output = serde_json::json!({ "greeting": format!("Hello, {name}!") });
        Ok(StepResponse { output: output.to_string(), compensation: None })
    }

    fn compensate(_ctx: StepContext, data: String) -> Result<(), StepError> {
        log(Level::Info, &format!("nothing to undo for {data}"));
        Ok(())
    }
}

export!(Step);
