//! The QuickJS engine inside a Stepwise JavaScript step component.
//!
//! A JavaScript step is a component made of one core module: QuickJS, this
//! crate's glue, and the state QuickJS was left in after evaluating the
//! step's bundled script once, at build time.
//!
//! - **Build time** (once per step build, [`snapshot`]): `stepwise
//!   js-component` instantiates a runtime module, copies the script into
//!   the buffer [`snapshot::stepwise_js_source`] hands out and calls the
//!   world crate's `stepwise-js-init`. QuickJS evaluates the script, which
//!   binds the step with `@stepwise/sdk` and leaves `globalThis.__stepwise_step
//!   = { invoke, compensate }`; those two functions are kept. The instance's
//!   memory and globals then become the module's initial state (wizer).
//! - **Run time** (every call, in a fresh instance, [`call`]): `invoke` and
//!   `compensate` call the kept functions with the step context and the JSON
//!   text, drive any promise they return to its end, and read the outcome
//!   the SDK built. Nothing is parsed or compiled again.
//!
//! What the script may reach is `globalThis.__stepwise_host` ([`host`]): the
//! world's imports (log, and where the world has them services and config),
//! nothing else. Whatever a step throws or rejects with becomes a step
//! error, never a trap.
//!
//! A world crate (one per step world: `worlds/*`) generates the world's
//! bindings and exports them with [`export_runtime!`].

pub mod call;
pub mod host;
pub mod snapshot;
mod text;

/// A log line's level (the WIT `log.level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// The step context of one call (the WIT `step-context`).
pub struct StepContext<'a> {
    pub workflow: &'a str,
    pub execution_id: &'a str,
    pub step_id: &'a str,
    pub attempt: u32,
    pub idempotency_key: &'a str,
}

/// What `invoke` returned (the WIT `step-outcome`).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done { output: String, compensation: Option<String> },
    Skipped(String),
}

/// Why a call failed (the WIT `step-error`).
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    Retryable(String),
    Permanent(String),
}

/// The world's imports, as the world crate binds them. `None` where the
/// world does not have the interface: the script then finds no such
/// function on `__stepwise_host`, and the SDK says which grant is missing.
#[derive(Clone, Copy)]
pub struct Host {
    pub log: fn(Level, &str),
    pub call: Option<ServiceCall>,
    pub config_get: Option<fn(&str) -> Option<String>>,
    pub kv: Option<Kv>,
}

/// `services.call(service, method, input)`: the answer, or the service's error.
pub type ServiceCall = fn(&str, &str, &str) -> Result<String, String>;

/// The `kv` interface of a world that has it.
#[derive(Clone, Copy)]
pub struct Kv {
    pub get: fn(&str) -> Option<String>,
    pub set: fn(&str, &str) -> Result<(), String>,
    pub delete: fn(&str) -> bool,
}

/// The world crate's glue: `wit_bindgen` bindings of `$world` (from the
/// repository's `wit/`), the `Guest` exports calling [`call`], and the
/// `stepwise-js-init` export the snapshot calls with this world's [`Host`].
/// `services` and `config` say whether the world imports those interfaces
/// (`config` and `kv` come together).
#[macro_export]
macro_rules! export_runtime {
    (world: $world:literal, wit: $wit:literal, services: $services:tt, config: $config:tt) => {
        wit_bindgen::generate!({ world: $world, path: $wit });

        use stepwise::step::types::StepResponse;

        struct Runtime;

        fn context(ctx: &StepContext) -> $crate::StepContext<'_> {
            $crate::StepContext {
                workflow: &ctx.workflow,
                execution_id: &ctx.execution_id,
                step_id: &ctx.step_id,
                attempt: ctx.attempt,
                idempotency_key: &ctx.idempotency_key,
            }
        }

        fn step_error(failure: $crate::Failure) -> StepError {
            match failure {
                $crate::Failure::Retryable(message) => StepError::Retryable(message),
                $crate::Failure::Permanent(message) => StepError::Permanent(message),
            }
        }

        impl Guest for Runtime {
            fn invoke(ctx: StepContext, input: Json) -> Result<StepOutcome, StepError> {
                match $crate::call::invoke(&context(&ctx), &input).map_err(step_error)? {
                    $crate::Outcome::Done { output, compensation } => {
                        Ok(StepOutcome::Done(StepResponse { output, compensation }))
                    }
                    $crate::Outcome::Skipped(reason) => Ok(StepOutcome::Skipped(reason)),
                }
            }

            fn compensate(ctx: StepContext, data: Json) -> Result<(), StepError> {
                $crate::call::compensate(&context(&ctx), &data).map_err(step_error)
            }
        }

        export!(Runtime);

        fn log(level: $crate::Level, message: &str) {
            use stepwise::step::log::{log, Level};
            let level = match level {
                $crate::Level::Trace => Level::Trace,
                $crate::Level::Debug => Level::Debug,
                $crate::Level::Info => Level::Info,
                $crate::Level::Warn => Level::Warn,
                $crate::Level::Error => Level::Error,
            };
            log(level, message)
        }

        /// Called once, by the snapshot at build time (see the crate docs).
        #[unsafe(export_name = "stepwise-js-init")]
        extern "C" fn stepwise_js_init() -> *const u8 {
            $crate::snapshot::initialize($crate::Host {
                log,
                call: $crate::export_runtime!(@services $services),
                config_get: $crate::export_runtime!(@config $config),
                kv: $crate::export_runtime!(@kv $config),
            })
        }
    };
    (@services true) => {
        Some(|service: &str, method: &str, input: &str| stepwise::step::services::call(service, method, input))
    };
    (@services false) => {
        None
    };
    (@config true) => {
        Some(|key: &str| stepwise::step::config::get(key))
    };
    (@config false) => {
        None
    };
    // `kv` comes with `config` in every world that has either.
    (@kv true) => {
        Some($crate::Kv {
            get: |key: &str| stepwise::step::kv::get(key),
            set: |key: &str, value: &str| stepwise::step::kv::set(key, value),
            delete: |key: &str| stepwise::step::kv::delete(key),
        })
    };
    (@kv false) => {
        None
    };
}
