//! Traces of executions, exported over OTLP/HTTP when an endpoint is
//! configured (`stepwise serve --otlp-endpoint`): each execution is a trace,
//! each `invoke` attempt and each compensation a span in it.
//!
//! Spans are recorded after the fact, from what the engine knows when a
//! call returns or an execution ends, with their real start and end times.
//! The trace id is derived from the execution id (its UUID's bytes), so
//! every host that drives a part of one execution adds to the same trace,
//! and an operator can find the trace from the id.

mod otlp;

use crate::journal::{CallCost, Timestamp};
use opentelemetry::trace::{Span as _, SpanBuilder, SpanKind, Status, Tracer as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use std::time::{Duration, SystemTime};

/// The exporter of execution traces.
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// One guest call, as it ran.
pub struct CallSpan<'a> {
    /// The execution.
    pub execution_id: &'a str,
    /// Its workflow.
    pub workflow: &'a str,
    /// Its tenant, if any.
    pub tenant: Option<&'a str>,
    /// The unit (`reserve`, `check[2]`).
    pub step: &'a str,
    /// The plugin called.
    pub plugin: &'a str,
    /// The plugin's content hash (the version the execution is pinned to).
    pub plugin_hash: &'a str,
    /// The plugin's manifest version, if it has one.
    pub plugin_version: Option<&'a str>,
    /// `invoke` or `compensate`.
    pub export: &'static str,
    /// The attempt number.
    pub attempt: u32,
    /// `succeeded`, `skipped`, or the failure kind (`retryable`, `trap`, ...).
    pub outcome: &'a str,
    /// The failure's message, when it failed.
    pub error: Option<&'a str>,
    /// What the call cost.
    pub cost: &'a CallCost,
    /// When it started.
    pub started: SystemTime,
    /// How long it took.
    pub duration: Duration,
}

/// One execution that reached a final status.
pub struct ExecutionSpan<'a> {
    /// The execution.
    pub execution_id: &'a str,
    /// Its workflow.
    pub workflow: &'a str,
    /// Its tenant, if any.
    pub tenant: Option<&'a str>,
    /// `succeeded`, `compensated` or `failed`.
    pub status: &'a str,
    /// When it was created.
    pub started: Timestamp,
    /// When it ended (the span ends now, after every call's span: the
    /// recorded time is in milliseconds).
    pub finished: Timestamp,
    /// Its calls' cost, summed.
    pub cost: &'a CallCost,
    /// Whether it ended before (rolled back after it succeeded, retried
    /// after it failed): the trace has its root, this ending is a child.
    pub ended_before: bool,
}

impl Traces {
    /// Exports to the OTLP/HTTP collector at `endpoint` (`http://host:4318`;
    /// spans go to its `/v1/traces`). Call inside the tokio runtime that
    /// will carry the exports.
    pub fn otlp(endpoint: &str) -> anyhow::Result<Self> {
        let provider = otlp::provider(endpoint)?;
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "stepwise");
        Ok(Self { provider, tracer })
    }

    /// Records a call as a span of its execution's trace.
    pub fn call(&self, call: &CallSpan<'_>) {
        let mut attributes = vec![
            KeyValue::new("execution.id", call.execution_id.to_string()),
            KeyValue::new("workflow", call.workflow.to_string()),
            KeyValue::new("step", call.step.to_string()),
            KeyValue::new("plugin", call.plugin.to_string()),
            KeyValue::new("plugin.hash", call.plugin_hash.to_string()),
            KeyValue::new("export", call.export),
            KeyValue::new("attempt", i64::from(call.attempt)),
            KeyValue::new("outcome", call.outcome.to_string()),
        ];
        attributes.extend(cost_attributes(call.cost));
        attributes.extend(call.tenant.map(|tenant| KeyValue::new("tenant", tenant.to_string())));
        attributes.extend(call.plugin_version.map(|version| KeyValue::new("plugin.version", version.to_string())));
        let name = if call.export == "invoke" { "attempt" } else { "compensation" };
        let builder = SpanBuilder::from_name(format!("{name} {}", call.step))
            .with_kind(SpanKind::Internal)
            .with_start_time(call.started)
            .with_attributes(attributes);
        let mut span = self.tracer.build_with_context(builder, &otlp::execution_parent(call.execution_id));
        span.set_status(match call.error {
            None => Status::Ok,
            Some(message) => Status::error(format!("{}: {message}", call.outcome)),
        });
        span.end_with_timestamp(call.started + call.duration);
    }

    /// Records an execution's root span, when it reaches a final status.
    pub fn execution(&self, execution: &ExecutionSpan<'_>) {
        let mut attributes = vec![
            KeyValue::new("execution.id", execution.execution_id.to_string()),
            KeyValue::new("workflow", execution.workflow.to_string()),
            KeyValue::new("outcome", execution.status.to_string()),
        ];
        attributes.extend(cost_attributes(execution.cost));
        attributes.extend(execution.tenant.map(|tenant| KeyValue::new("tenant", tenant.to_string())));
        let again = if execution.ended_before { " (ended again)" } else { "" };
        let builder = SpanBuilder::from_name(format!("execution {}{again}", execution.workflow))
            .with_kind(SpanKind::Internal)
            .with_start_time(system_time(execution.started))
            .with_attributes(attributes);
        let mut span = if execution.ended_before {
            self.tracer.build_with_context(builder, &otlp::execution_parent(execution.execution_id))
        } else {
            otlp::root_span(&self.tracer, execution.execution_id, builder)
        };
        span.set_status(match execution.status {
            "succeeded" => Status::Ok,
            other => Status::error(other.to_string()),
        });
        span.end_with_timestamp(system_time(execution.finished).max(SystemTime::now()));
    }

    /// Sends what is buffered and stops the exporter (at most a few
    /// seconds; off the tokio workers, as the export needs them).
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        let done = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(Duration::from_secs(5))).await;
        if let Ok(Err(error)) = done {
            tracing::warn!("stopping the trace exporter: {error}");
        }
    }
}

fn cost_attributes(cost: &CallCost) -> [KeyValue; 3] {
    [
        KeyValue::new("fuel", cost.fuel as i64),
        KeyValue::new("wall_us", cost.wall_us as i64),
        KeyValue::new("peak_memory_bytes", cost.peak_memory_bytes as i64),
    ]
}

fn system_time(at: Timestamp) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(at.0)
}
