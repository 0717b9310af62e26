//! The OTLP/HTTP exporter behind [`super::Traces`], and the ids that put
//! every span of an execution into one trace.
//!
//! The SDK's batch processor exports from a thread of its own, without a
//! tokio runtime: each request is handed to the server's runtime instead
//! ([`RuntimeClient`]), through the hyper client the project already has.

use anyhow::{bail, Context as _};
use opentelemetry::trace::Tracer as _;
use opentelemetry::trace::{SpanBuilder, SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use sha2::Digest as _;
use std::cell::Cell;
use std::time::Duration;

/// The longest an export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often buffered spans are sent.
const EXPORT_EVERY: Duration = Duration::from_millis(500);

/// A provider exporting to the collector at `endpoint`.
pub(super) fn provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let url: http::Uri = endpoint.parse().with_context(|| format!("the OTLP endpoint `{endpoint}` is not a URL"))?;
    match (url.scheme_str(), url.authority()) {
        (Some("http"), Some(_)) => {}
        (Some("https"), _) => {
            bail!("the OTLP endpoint `{endpoint}`: https is not supported; use a collector's http:// address")
        }
        _ => bail!("the OTLP endpoint `{endpoint}` must be an http:// URL with a host (e.g. http://127.0.0.1:4318)"),
    }
    let runtime = tokio::runtime::Handle::try_current().context("the OTLP exporter needs a tokio runtime")?;
    let client = RuntimeClient { runtime, inner: HyperClient::with_default_connector(EXPORT_TIMEOUT, None) };
    let exporter = SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("building the OTLP exporter")?;
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(BatchConfigBuilder::default().with_scheduled_delay(EXPORT_EVERY).build())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_id_generator(ExecutionIds::default())
        .with_resource(Resource::builder().with_service_name("stepwise").build())
        .build())
}

/// Sends each export request on the server's runtime.
#[derive(Debug, Clone)]
struct RuntimeClient {
    runtime: tokio::runtime::Handle,
    inner: HyperClient,
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let inner = self.inner.clone();
        self.runtime.spawn(async move { inner.send_bytes(request).await }).await?
    }
}

thread_local! {
    /// The ids the next span built on this thread takes (an execution's root span).
    static ROOT_IDS: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Random ids, except for an execution's root span, which takes the ids
/// derived from its execution id.
#[derive(Debug, Default)]
struct ExecutionIds(RandomIdGenerator);

impl IdGenerator for ExecutionIds {
    fn new_trace_id(&self) -> TraceId {
        ROOT_IDS.with(Cell::get).map_or_else(|| self.0.new_trace_id(), |(trace, _)| trace)
    }

    fn new_span_id(&self) -> SpanId {
        ROOT_IDS.with(Cell::get).map_or_else(|| self.0.new_span_id(), |(_, span)| span)
    }
}

/// An execution's trace id (its UUID's bytes, so the trace id reads as the
/// execution id without dashes; a hash for ids that are not UUIDs) and its
/// root span's id.
fn execution_ids(execution_id: &str) -> (TraceId, SpanId) {
    let hash = sha2::Sha256::digest(format!("stepwise-execution:{execution_id}").as_bytes());
    let trace = match uuid::Uuid::parse_str(execution_id) {
        Ok(uuid) => *uuid.as_bytes(),
        Err(_) => hash[..16].try_into().expect("16 bytes"),
    };
    (TraceId::from_bytes(trace), SpanId::from_bytes(hash[16..24].try_into().expect("8 bytes")))
}

/// The execution's root span as a (remote, sampled) parent: any host can
/// add a span to the trace without holding the root.
pub(super) fn execution_parent(execution_id: &str) -> Context {
    let (trace, span) = execution_ids(execution_id);
    Context::new().with_remote_span_context(SpanContext::new(
        trace,
        span,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

/// Builds an execution's root span, with the ids its children point to.
pub(super) fn root_span(
    tracer: &SdkTracer,
    execution_id: &str,
    builder: SpanBuilder,
) -> opentelemetry_sdk::trace::Span {
    ROOT_IDS.with(|ids| ids.set(Some(execution_ids(execution_id))));
    let span = tracer.build_with_context(builder, &Context::new());
    ROOT_IDS.with(|ids| ids.set(None));
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_execution_ids_trace_is_its_uuid() {
        let id = "01a228cb-bb34-70f3-8590-1f45e243dc6a";
        let (trace, span) = execution_ids(id);
        assert_eq!(trace.to_string(), id.replace('-', ""));
        assert_eq!(execution_ids(id).1, span, "stable");
        assert_ne!(execution_ids("not-a-uuid").0, trace);
    }

    #[tokio::test]
    async fn endpoints_that_cannot_work_are_refused() {
        for (endpoint, expected) in [
            ("https://collector:4318", "https is not supported"),
            ("collector:4318", "must be an http:// URL"),
            ("http://", "not a URL"),
        ] {
            let Err(error) = provider(endpoint) else { panic!("{endpoint} is accepted") };
            let error = error.to_string();
            assert!(error.contains(expected), "{endpoint}: {error}");
        }
    }
}
