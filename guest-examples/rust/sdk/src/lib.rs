//! The Rust side of the Stepwise step contract (`wit/step.wit`).
//!
//! A step crate implements [`Guest`] and exports it with
//! `stepwise_guest::export!(MyStep with_types_in stepwise_guest::bindings);`.
//! Besides the generated bindings this crate offers the small amount of glue
//! every step needs: parsing the JSON input into a typed value, serializing
//! outputs, and logging into the execution's timeline.

/// Bindings generated from `wit/step.wit`.
pub mod bindings {
    wit_bindgen::generate!({
        world: "step",
        path: "../../../wit",
        pub_export_macro: true,
        default_bindings_module: "stepwise_guest::bindings",
    });
}

/// Bindings of the `skippable-step` world, whose `invoke` returns a
/// [`StepOutcome`]: a step that may find it has nothing to do exports with
/// `stepwise_guest::export_skippable!(MyStep with_types_in stepwise_guest::skippable);`.
/// Its interfaces (types, log, services, ...) are the ones in [`bindings`],
/// so every helper here works for both.
pub mod skippable {
    wit_bindgen::generate!({
        world: "skippable-step",
        path: "../../../wit",
        pub_export_macro: true,
        default_bindings_module: "stepwise_guest::skippable",
        export_macro_name: "export_skippable",
        with: {
            "stepwise:step/types@0.1.0": crate::bindings::stepwise::step::types,
            "stepwise:step/log@0.1.0": crate::bindings::stepwise::step::log,
            "stepwise:step/config@0.1.0": crate::bindings::stepwise::step::config,
            "stepwise:step/kv@0.1.0": crate::bindings::stepwise::step::kv,
            "stepwise:step/services@0.1.0": crate::bindings::stepwise::step::services,
        },
    });
}

pub use bindings::export;
pub use bindings::stepwise::step::log::Level;
pub use bindings::stepwise::step::types::StepOutcome;
pub use bindings::{Guest, Json, StepContext, StepError, StepResponse};
pub use skippable::export_skippable;

use serde::{de::DeserializeOwned, Serialize};

/// Parses the step's JSON input; malformed input is a permanent error (retrying cannot fix it).
pub fn parse<T: DeserializeOwned>(json: &str) -> Result<T, StepError> {
    serde_json::from_str(json).map_err(|e| StepError::Permanent(format!("invalid input: {e}")))
}

/// Serializes a value as the JSON string the contract carries.
pub fn to_json<T: Serialize>(value: &T) -> Json {
    serde_json::to_string(value).expect("serializing a step value to JSON cannot fail")
}

/// A successful response with an output and compensation data.
pub fn respond<O: Serialize, C: Serialize>(output: &O, compensation: &C) -> StepResponse {
    StepResponse { output: to_json(output), compensation: Some(to_json(compensation)) }
}

/// A successful response whose compensation receives the output itself.
pub fn respond_output<O: Serialize>(output: &O) -> StepResponse {
    StepResponse { output: to_json(output), compensation: None }
}

/// Calls `method` of the host service `service` (granted in the plugin's
/// manifest); a service error is a retryable step error.
pub fn call_service<I: Serialize, O: DeserializeOwned>(service: &str, method: &str, input: &I) -> Result<O, StepError> {
    let output = bindings::stepwise::step::services::call(service, method, &to_json(input))
        .map_err(|error| StepError::Retryable(format!("{service}.{method}: {error}")))?;
    serde_json::from_str(&output)
        .map_err(|error| StepError::Permanent(format!("{service}.{method} returned invalid JSON: {error}")))
}

/// Logs a line at `info` level into the execution's timeline.
pub fn info(message: &str) {
    bindings::stepwise::step::log::log(Level::Info, message);
}

/// Logs a line at `warn` level into the execution's timeline.
pub fn warn(message: &str) {
    bindings::stepwise::step::log::log(Level::Warn, message);
}

/// A short, stable identifier derived from a key (FNV-1a): steps use it to
/// name the resources they create, so that a retried attempt (same
/// idempotency key) produces the same id.
pub fn stable_id(prefix: &str, key: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{prefix}_{:012x}", hash & 0xffff_ffff_ffff)
}
