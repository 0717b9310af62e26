//! One guest call: a fresh store and instance, limits installed, the call
//! raced against its deadline, and the outcome classified.
//!
//! The store and instance serve exactly this call and are dropped after it,
//! so a trap or a runaway guest never poisons anything shared.

use super::bindings::stepwise::step::types::{StepContext, StepError, StepOutcome};
use super::host_state::{LogBuffer, Stdio};
use super::linked::{LinkedStep, Returned};
use super::{Grants, HostState, Limits, Sandbox};
use crate::journal::failure::{FailureKind, StepFailure};
use crate::journal::{CallCost, LogLine};
use crate::services::Caller;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{Store, Trap};

/// A plugin ready to be called: linked code, its limits and its grants.
pub struct SandboxedPlugin {
    /// The component linked on each lane of the sandbox, in lane order
    /// ([`Sandbox::link_on_every_lane`]).
    pub linked: Vec<LinkedStep>,
    /// How many instance slots a call takes ([`Sandbox::slots_for`]).
    pub slots: u32,
    /// Its per-call limits (host defaults with the manifest's overrides).
    pub limits: Limits,
    /// Its capability grants.
    pub grants: Arc<Grants>,
}

/// What to call.
#[derive(Clone, Debug)]
pub enum Call {
    /// `invoke(ctx, input)`.
    Invoke {
        /// The step context.
        ctx: StepContext,
        /// The rendered input, as JSON text.
        input: String,
    },
    /// `compensate(ctx, data)`.
    Compensate {
        /// The step context.
        ctx: StepContext,
        /// Compensation data (or the output), as JSON text.
        data: String,
    },
}

/// What a successful call returned.
#[derive(Clone, Debug, PartialEq)]
pub struct CallSuccess {
    /// The step's output (`invoke` only).
    pub output: Option<Value>,
    /// The compensation data, when the guest returned any (`invoke` only).
    pub compensation: Option<Value>,
    /// Why the step skipped itself (`invoke` of a `skippable-step` only):
    /// then there is no output and nothing to compensate.
    pub skipped: Option<String>,
}

/// The classified result of a call and the lines the guest logged meanwhile.
#[derive(Debug)]
pub struct CallOutcome {
    /// Success or a classified failure.
    pub result: Result<CallSuccess, StepFailure>,
    /// Lines from `log`, then captured stdout and stderr.
    pub logs: Vec<LogLine>,
    /// What the call cost (nothing when it never ran: refused input, no slot).
    pub cost: CallCost,
}

impl Sandbox {
    /// Calls `invoke` or `compensate` on a fresh instance of `plugin`, within
    /// its limits and `deadline` (the plugin's default deadline when `None`),
    /// on behalf of `tenant` (which namespaces the plugin's kv data).
    pub async fn call(
        &self,
        plugin: &SandboxedPlugin,
        call: Call,
        deadline: Option<Duration>,
        tenant: Option<&str>,
    ) -> CallOutcome {
        let limits = &plugin.limits;
        let deadline = deadline.unwrap_or(limits.deadline);
        let payload_len = match &call {
            Call::Invoke { input, .. } => input.len(),
            Call::Compensate { data, .. } => data.len(),
        };
        if payload_len > limits.max_input_bytes {
            let message = format!("input of {payload_len} bytes exceeds the limit of {} bytes", limits.max_input_bytes);
            return CallOutcome {
                result: Err(StepFailure::new(FailureKind::InputTooLarge, message)),
                logs: Vec::new(),
                cost: CallCost::default(),
            };
        }

        // The wait for a free instance slot is part of the call's deadline.
        let waiting = std::time::Instant::now();
        let (lane, _slot) = match tokio::time::timeout(deadline, self.slot(plugin.slots)).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(_closed)) => {
                let failure = StepFailure::new(FailureKind::Unavailable, "the sandbox is shutting down");
                return CallOutcome { result: Err(failure), logs: Vec::new(), cost: CallCost::default() };
            }
            Err(_elapsed) => {
                let message = format!(
                    "stopped at its deadline of {} ms while waiting for a free instance slot (all {} busy)",
                    deadline.as_millis(),
                    self.instance_slots()
                );
                return CallOutcome {
                    result: Err(StepFailure::new(FailureKind::DeadlineExceeded, message)),
                    logs: Vec::new(),
                    cost: CallCost::default(),
                };
            }
        };
        let Some(linked) = plugin.linked.get(lane) else {
            let failure = StepFailure::new(FailureKind::Unavailable, "the plugin was not linked by this sandbox");
            return CallOutcome { result: Err(failure), logs: Vec::new(), cost: CallCost::default() };
        };
        self.lanes[lane].calls.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // One reading of the clock gives the call's start and the instant
        // its deadline falls (what is left of it after the wait for a slot).
        let started = std::time::Instant::now();
        let stop_at = started + deadline.saturating_sub(started.saturating_duration_since(waiting));
        let _running = self.ticker.running();
        let logs = LogBuffer::default();
        let stdio = Stdio::new(limits.max_stdio_bytes);
        let ctx = match &call {
            Call::Invoke { ctx, .. } | Call::Compensate { ctx, .. } => ctx,
        };
        let caller = Caller {
            plugin: plugin.grants.plugin.clone(),
            execution_id: ctx.execution_id.clone(),
            step_id: ctx.step_id.clone(),
            idempotency_key: ctx.idempotency_key.clone(),
            tenant: tenant.map(str::to_string),
            deadline: stop_at,
        };
        let state = HostState::new(limits, logs.clone(), &stdio, plugin.grants.clone(), self.resources.clone(), caller);
        let mut store = Store::new(&self.lanes[lane].engine, state);
        store.limiter(|state| state.limiter());
        let fueled = store
            .set_fuel(limits.fuel)
            .map_err(|error| StepFailure::new(FailureKind::Unavailable, format!("setting fuel: {error}")));
        // At every epoch tick, running guest code yields to the executor (a
        // guest in a loop never holds a tokio worker for more than a tick),
        // and is interrupted once its deadline has passed.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if std::time::Instant::now() >= stop_at {
                wasmtime::UpdateDeadline::Interrupt
            } else {
                wasmtime::UpdateDeadline::Yield(1)
            })
        });

        let result = if let Err(failure) = fueled {
            Err(failure)
        } else {
            let run = async {
                let instance = linked.instantiate(&mut store).await.map_err(|e| (true, e))?;
                match &call {
                    Call::Invoke { ctx, input } => instance.invoke(&mut store, ctx, input).await,
                    Call::Compensate { ctx, data } => instance.compensate(&mut store, ctx, data).await,
                }
                .map_err(|e| (false, e))
            };
            match tokio::time::timeout_at(stop_at.into(), run).await {
                Err(_elapsed) => Err(StepFailure::new(
                    FailureKind::DeadlineExceeded,
                    format!("stopped at its deadline of {} ms", deadline.as_millis()),
                )),
                Ok(Err((instantiating, error))) => {
                    Err(classify_error(&error, instantiating, store.data().hit_memory_limit(), &stdio))
                }
                Ok(Ok(returned)) => interpret(returned, limits.max_output_bytes),
            }
        };
        let cost = CallCost {
            calls: 1,
            fuel: limits.fuel.saturating_sub(store.get_fuel().unwrap_or(limits.fuel)),
            wall_us: started.elapsed().as_micros() as u64,
            peak_memory_bytes: store.data().peak_memory_bytes() as u64,
        };
        drop(store);

        let mut lines = logs.take();
        stdio.drain_into(&mut lines);
        CallOutcome { result, logs: lines, cost }
    }
}

/// Maps a guest's return value to the engine's terms, checking output size and JSON.
fn interpret(returned: Returned, max_output_bytes: usize) -> Result<CallSuccess, StepFailure> {
    let from_step_error = |error: StepError| match error {
        StepError::Retryable(message) => StepFailure::new(FailureKind::Retryable, bounded(message)),
        StepError::Permanent(message) => StepFailure::new(FailureKind::Permanent, bounded(message)),
    };
    match returned {
        Returned::Compensated(result) => {
            result.map(|()| CallSuccess { output: None, compensation: None, skipped: None }).map_err(from_step_error)
        }
        Returned::Invoked(Err(error)) => Err(from_step_error(error)),
        Returned::Invoked(Ok(StepOutcome::Skipped(reason))) => {
            within_output_limit("skip reason", &reason, max_output_bytes)?;
            Ok(CallSuccess { output: None, compensation: None, skipped: Some(reason) })
        }
        Returned::Invoked(Ok(StepOutcome::Done(response))) => {
            let output = parse_json("output", &response.output, max_output_bytes)?;
            let compensation = match &response.compensation {
                Some(data) => Some(parse_json("compensation data", data, max_output_bytes)?),
                None => None,
            };
            Ok(CallSuccess { output: Some(output), compensation, skipped: None })
        }
    }
}

/// How much of a step error's message is kept: it is recorded in the log,
/// shown and retried with; a guest may make it as large as its memory.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 16 << 10;

/// `message` cut to [`MAX_ERROR_MESSAGE_BYTES`] (at a character boundary),
/// saying how much was left out.
fn bounded(mut message: String) -> String {
    if message.len() <= MAX_ERROR_MESSAGE_BYTES {
        return message;
    }
    let mut end = MAX_ERROR_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let left_out = message.len() - end;
    message.truncate(end);
    message.push_str(&format!("... ({left_out} more bytes left out)"));
    message
}

fn within_output_limit(what: &str, text: &str, max_bytes: usize) -> Result<(), StepFailure> {
    if text.len() > max_bytes {
        return Err(StepFailure::new(
            FailureKind::OutputTooLarge,
            format!("{what} of {} bytes exceeds the limit of {max_bytes} bytes", text.len()),
        ));
    }
    Ok(())
}

fn parse_json(what: &str, text: &str, max_bytes: usize) -> Result<Value, StepFailure> {
    within_output_limit(what, text, max_bytes)?;
    // Bounded depth: whatever a guest returns, the store can read it back.
    crate::journal::json::parse_bounded(text)
        .map_err(|error| StepFailure::new(FailureKind::InvalidOutput, format!("{what} is not valid JSON: {error}")))
}

/// Classifies a wasmtime error from instantiation or a call.
fn classify_error(error: &wasmtime::Error, instantiating: bool, memory_limit_hit: bool, stdio: &Stdio) -> StepFailure {
    let trap = error.downcast_ref::<Trap>().copied();
    let kind = match trap {
        Some(Trap::OutOfFuel) => FailureKind::FuelExhausted,
        Some(Trap::Interrupt) => FailureKind::DeadlineExceeded,
        _ if memory_limit_hit => FailureKind::MemoryLimit,
        Some(_) => FailureKind::Trap,
        None if instantiating => FailureKind::Unavailable,
        None => FailureKind::Trap,
    };
    let mut message = match trap {
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    };
    if kind == FailureKind::MemoryLimit {
        message = format!("memory limit reached ({message})");
    }
    if let Some(stderr) = stdio.stderr_tail(2000) {
        message = format!("{message}; stderr: {stderr}");
    }
    StepFailure::new(kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_error_message_is_cut_at_a_character_boundary_and_says_so() {
        assert_eq!(bounded("short".into()), "short");
        let long = "é".repeat(MAX_ERROR_MESSAGE_BYTES); // two bytes each
        let cut = bounded(long.clone());
        assert!(cut.starts_with(&"é".repeat(MAX_ERROR_MESSAGE_BYTES / 2)));
        assert!(cut.ends_with(&format!("... ({} more bytes left out)", long.len() - MAX_ERROR_MESSAGE_BYTES)));
        let odd = format!("a{}", "é".repeat(MAX_ERROR_MESSAGE_BYTES)); // the limit falls inside a character
        assert!(bounded(odd).contains("... ("));
    }
}
