// The step shared by `versioned-v1` and `versioned-v2`, which differ only in
// `VERSION`: two builds of "the same plugin" for the hot-reload tests.

use serde_json::{json, Value};
use stepwise_guest::*;

struct Versioned;

impl Guest for Versioned {
    fn invoke(_ctx: StepContext, input: Json) -> Result<StepResponse, StepError> {
        let input: Value = parse(&input)?;
        info(&format!("running {VERSION}"));
        Ok(respond_output(&json!({ "version": VERSION, "input": input })))
    }

    fn compensate(_ctx: StepContext, _data: Json) -> Result<(), StepError> {
        info(&format!("compensated by {VERSION}"));
        Ok(())
    }
}

stepwise_guest::export!(Versioned with_types_in stepwise_guest::bindings);
