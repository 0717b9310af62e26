//! Test step: always fails, with the error kind and message its input names
//! (`{"kind": "permanent" | "retryable", "message": ".."}`).

use serde::Deserialize;
use stepwise_guest::*;

#[derive(Deserialize)]
struct Input {
    #[serde(default = "default_kind")]
    kind: String,
    #[serde(default = "default_message")]
    message: String,
}

fn default_kind() -> String {
    "permanent".into()
}

fn default_message() -> String {
    "step failed as instructed".into()
}

struct Fail;

impl Guest for Fail {
    fn invoke(_ctx: StepContext, input: Json) -> Result<StepResponse, StepError> {
        let input: Input = parse(&input)?;
        match input.kind.as_str() {
            "retryable" => Err(StepError::Retryable(input.message)),
            _ => Err(StepError::Permanent(input.message)),
        }
    }

    fn compensate(_ctx: StepContext, _data: Json) -> Result<(), StepError> {
        Err(StepError::Permanent("a step that never succeeded has nothing to compensate".into()))
    }
}

stepwise_guest::export!(Fail with_types_in stepwise_guest::bindings);
