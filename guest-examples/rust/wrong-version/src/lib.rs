//! Test component: implements the step world of a future contract version
//! (`stepwise:step@0.9.0`), which the host must refuse with a clear error.

wit_bindgen::generate!({ world: "step", path: "wit" });

struct FromTheFuture;

impl Guest for FromTheFuture {
    fn invoke(_ctx: StepContext, input: Json) -> Result<StepResponse, StepError> {
        stepwise::step::log::log(stepwise::step::log::Level::Info, "from the future");
        Ok(StepResponse { output: input, compensation: None })
    }

    fn compensate(_ctx: StepContext, _data: Json) -> Result<(), StepError> {
        Ok(())
    }
}

export!(FromTheFuture);
