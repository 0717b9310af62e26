//! The workflow file format: what a user writes, before validation.
//!
//! These types are deserialized from TOML (`stepwise run workflow.toml`), built
//! by [`super::builder::WorkflowBuilder`], stored with every execution (so a
//! resumed execution runs the definition it started with), and are the source
//! of the published JSON Schema (`stepwise schema`). They carry no meaning
//! beyond syntax: [`super::Workflow::from_definition`] checks them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest event name, in characters: `on_event` and `POST /v1/events/{event}`.
pub const MAX_EVENT_NAME_CHARS: usize = 128;

/// A workflow: named steps whose inputs are JSON templates over the workflow
/// input and earlier outputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDefinition {
    /// Name of the workflow (`[a-z][a-z0-9_-]*`).
    pub name: String,
    /// The tenant that uploaded it over HTTP (stamped by the server, never
    /// written by hand): only that tenant's tokens run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// What the workflow does, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Retry policy for every step that does not set its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Wall-clock limit for the whole execution, in milliseconds: when it
    /// elapses the execution rolls back (error kind `timed_out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Run the workflow whenever this event is published (`POST /v1/events/{event}`),
    /// with the event's payload as input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_event: Option<String>,
    /// Run the workflow on this cron schedule (`sec min hour day month weekday [year]`, UTC)
    /// while a server runs, with `{"scheduled_at": ...}` as input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The workflow's result: a JSON template over `$.input` and
    /// `$.steps.<id>.output`. When absent, the result is an object holding every
    /// step's output under its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The steps, in any order: dependencies come from references and `after`.
    #[serde(default)]
    pub steps: Vec<StepDefinition>,
    /// Hook points: places in the graph where each tenant's own handlers
    /// (plugins bound in the tenant's binding file) run, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookDefinition>,
}

/// A hook point: the handlers the execution's tenant bound to it run here,
/// one after another (lower `priority` first, then by plugin name), each on
/// the rendered `input`. Referable as `$.hooks.<name>.output` (the list of
/// handler outputs, in order) and `$.hooks.<name>.handlers.<plugin>.output`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HookDefinition {
    /// Name of the hook (`[a-z][a-z0-9_-]*`), unique among steps and hooks.
    pub name: String,
    /// What handlers of this hook are for, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The input every handler receives: a JSON template, as for steps.
    #[serde(default = "empty_object")]
    pub input: Value,
    /// Steps that must succeed before the hook runs, besides those its input references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// A CEL condition; when false the hook is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// How a failing handler is retried (defaults as for steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Wall-clock limit for one handler call, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// One step of a workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDefinition {
    /// Id of the step, unique in the workflow (`[a-z][a-z0-9_-]*`).
    pub id: String,
    /// Name of the plugin (component) that implements the step, optionally
    /// pinned to a version (`name@1.2`). Exactly one of `plugin`, `workflow`
    /// and `transform` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Runs another workflow (by name) as this step: a child execution whose
    /// output is the step's output, rolled back when this execution compensates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Computes the step's output in the host with a CEL expression over
    /// `input`, `steps` and `hooks`: no plugin, no compensation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
    /// A CEL condition over `input`, `steps` and `hooks`; when false the step
    /// is `skipped`, and so is every step that needs its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// A reference to an array (`$.steps.cart.output.items`): the step runs once
    /// per element (`$.item`, `$.index` in its input) and its output is the list
    /// of element outputs, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    /// With `for_each`: how many elements run at once (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// The step's input: a JSON template. Strings starting with `$.` are
    /// references (`$.input.cart_id`, `$.steps.cart.output.items[0]`) replaced
    /// by the value they name; `$$` escapes a literal `$`.
    #[serde(default = "empty_object")]
    pub input: Value,
    /// Steps that must succeed before this one starts, besides those its
    /// input references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// How failed attempts are retried (defaults: the workflow's `retry`, else
    /// 3 attempts from 100 ms doubling up to 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Wall-clock limit for one attempt (and one compensation attempt), in
    /// milliseconds. It stops the guest's code, including time spent blocked
    /// in host calls. For an async step, the time allowed between `invoke`
    /// returning and the step being completed from outside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Whether the step is completed from outside: `invoke` starts the work,
    /// then the execution waits until `stepwise complete`/`fail` (or the API)
    /// reports the result for this step.
    #[serde(default, rename = "async", skip_serializing_if = "std::ops::Not::not")]
    pub is_async: bool,
    /// What happens when the step fails for good (a permanent error, or its
    /// retries used up): `fail` rolls the execution back (the default);
    /// `skip` marks it skipped (steps reading its output are skipped too) and
    /// goes on; `continue` makes its error its output (`{"error": {"kind",
    /// "message"}}`) and goes on. For a fan-out, per element.
    #[serde(default, skip_serializing_if = "OnPermanentFailure::is_fail")]
    pub on_permanent_failure: OnPermanentFailure,
}

/// What a step failing for good does to its execution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnPermanentFailure {
    /// The execution rolls back.
    #[default]
    Fail,
    /// The step is skipped; the execution goes on.
    Skip,
    /// The step's error becomes its output; the execution goes on.
    Continue,
}

impl OnPermanentFailure {
    /// Whether it is the default (`fail`).
    pub fn is_fail(&self) -> bool {
        *self == OnPermanentFailure::Fail
    }
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// How a failing step (or compensation) is retried: exponential backoff.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts, the first included (>= 1).
    #[serde(default = "RetryPolicy::default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the second attempt, in milliseconds.
    #[serde(default = "RetryPolicy::default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Factor applied to the delay after each further failure (>= 1.0).
    #[serde(default = "RetryPolicy::default_multiplier")]
    pub multiplier: f64,
    /// Upper bound of the delay, in milliseconds.
    #[serde(default = "RetryPolicy::default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Whether traps (panics, resource limits, timeouts) are retried like
    /// `retryable` errors. `permanent` errors are never retried.
    #[serde(default = "RetryPolicy::default_retry_traps")]
    pub retry_traps: bool,
}

impl RetryPolicy {
    fn default_max_attempts() -> u32 {
        3
    }
    fn default_initial_backoff_ms() -> u64 {
        100
    }
    fn default_multiplier() -> f64 {
        2.0
    }
    fn default_max_backoff_ms() -> u64 {
        10_000
    }
    fn default_retry_traps() -> bool {
        true
    }

    /// A policy that never retries.
    pub fn no_retry() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: Self::default_max_attempts(),
            initial_backoff_ms: Self::default_initial_backoff_ms(),
            multiplier: Self::default_multiplier(),
            max_backoff_ms: Self::default_max_backoff_ms(),
            retry_traps: Self::default_retry_traps(),
        }
    }
}

/// The JSON Schema of workflow files, generated from these types.
pub fn json_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(WorkflowDefinition)).expect("a schema is valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_describes_steps_and_retry() {
        let schema = json_schema().to_string();
        for field in ["steps", "plugin", "max_attempts", "timeout_ms", "after"] {
            assert!(schema.contains(field), "schema lacks {field}");
        }
    }
}
