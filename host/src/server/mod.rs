//! The long-running host: the HTTP API (axum), event subscribers, cron
//! schedules, deadlines and retention, and a web view of executions.
//!
//! It owns no saga logic: handlers call the [`Engine`]; background tasks
//! (see [`scheduler`]) start scheduled workflows, fire the deadlines of
//! waiting executions and purge old ones. Plugins and workflows are watched
//! and hot-reloaded while it runs.

mod api;
pub mod auth;
mod error;
mod linger;
mod metrics;
pub mod scheduler;
mod web;
mod workflow_upload;

pub use api::host_json;
pub use error::ApiError;

use crate::engine::Engine;
use crate::workflow::WorkflowDirectory;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;

/// Largest JSON request body.
pub const MAX_JSON_BODY: usize = 1 << 20;
/// Largest plugin upload.
pub const MAX_UPLOAD_BODY: usize = 64 << 20;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Engine,
    /// The watched workflow directory.
    pub workflows: Arc<WorkflowDirectory>,
    /// The admin token (`None`: every route is open, only with `--no-auth`);
    /// API tokens of the store are accepted beside it.
    pub token: Option<Arc<str>>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Stepwise", description = "A workflow engine whose steps are sandboxed WebAssembly components"),
    paths(
        api::start_execution,
        api::get_execution,
        api::list_executions,
        api::step_success,
        api::step_failure,
        api::cancel_execution,
        api::retry_execution,
        api::list_workflows,
        api::list_plugins,
        api::list_hosts,
        api::upload_plugin,
        workflow_upload::upload_workflow,
        api::publish_event,
        api::healthz,
        api::metrics
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail, api::Accepted, api::FailureReport, api::ReasonRequest)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of the API, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The router: API, metrics, OpenAPI, web view, JSON errors for everything else.
pub fn router(state: AppState) -> Router {
    let uploads = Router::new()
        .route("/v1/plugins/{name}", put(api::upload_plugin))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BODY));
    Router::new()
        .route("/v1/workflows", get(api::list_workflows))
        .route("/v1/workflows/{name}", put(workflow_upload::upload_workflow))
        .route("/v1/workflows/{name}/executions", post(api::start_execution))
        .route("/v1/executions", get(api::list_executions))
        .route("/v1/executions/{id}", get(api::get_execution))
        .route("/v1/executions/{id}/steps/{step}/success", post(api::step_success))
        .route("/v1/executions/{id}/steps/{step}/failure", post(api::step_failure))
        .route("/v1/executions/{id}/cancel", post(api::cancel_execution))
        .route("/v1/executions/{id}/retry", post(api::retry_execution))
        .route("/v1/plugins", get(api::list_plugins))
        .route("/v1/hosts", get(api::list_hosts))
        .route("/v1/events/{event}", post(api::publish_event))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .merge(uploads)
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/openapi.json", get(|| async { Json(openapi()) }))
        .route("/", get(web::index))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept this method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(linger::discard_unread_body))
        .with_state(state)
}

/// Turns the plain-text errors of axum's own extractors (oversized body,
/// bad query string, bad path) into the API's JSON error format.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 64 << 10).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        status if status.is_server_error() => "internal",
        _ => "invalid_request",
    };
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
    ApiError::new(status, code, message).into_response()
}

/// How the server runs.
pub struct ServeOptions {
    /// Where to listen.
    pub addr: std::net::SocketAddr,
    /// The admin token (`None`: no authentication, `--no-auth`).
    pub token: Option<String>,
    /// Finished executions older than this are purged hourly.
    pub retention: Option<Duration>,
    /// How long this host's claims hold without a heartbeat.
    pub lease: Duration,
}

/// Serves until SIGINT/SIGTERM: resumes unfinished executions, watches the
/// plugin, workflow and tenant directories, runs schedules, deadlines and retention.
/// In-flight executions are durable: the next start resumes them.
pub async fn serve(engine: Engine, workflows: Arc<WorkflowDirectory>, options: ServeOptions) -> anyhow::Result<()> {
    let _plugin_watch = engine.registry().watch().map_err(anyhow::Error::msg)?;
    let _workflow_watch = workflows.watch().map_err(anyhow::Error::msg)?;
    // A workflow naming a plugin that is not there yet loads once it arrives.
    let _plugin_follow = workflows.follow_plugins(engine.registry().subscribe());
    let _tenant_watch = engine.tenants().watch().map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(options.addr).await?;
    let address = listener.local_addr()?;
    let engine = engine.with_host(options.lease, Some(format!("http://{address}")));
    engine.register().await?;
    tracing::info!("listening on http://{address} as host {}", engine.host_id());
    eprintln!("stepwise serving on http://{address}");
    let state = AppState { engine: engine.clone(), workflows: workflows.clone(), token: options.token.map(Arc::from) };
    let background = scheduler::spawn(engine.clone(), workflows, options.retention);
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown_signal()).await?;
    background.abort();
    engine.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down: executions in flight resume on the next start");
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn document() -> Value {
        serde_json::to_value(super::openapi()).expect("the document serializes")
    }

    #[test]
    fn every_route_but_health_documents_its_token_and_scope_answers() {
        let document = document();
        for (path, operations) in document["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                let responses = &operation["responses"];
                if path == "/healthz" {
                    assert!(responses.get("401").is_none(), "{path} is open");
                    continue;
                }
                for status in ["401", "403"] {
                    assert!(responses.get(status).is_some(), "{method} {path} lacks {status}");
                }
                assert!(operation["security"].is_array(), "{method} {path} lacks its security");
            }
        }
        for (path, method) in [
            ("/v1/workflows/{name}/executions", "post"),
            ("/v1/events/{event}", "post"),
            ("/v1/executions/{id}/cancel", "post"),
            ("/v1/executions/{id}/steps/{step}/success", "post"),
        ] {
            let responses = &document["paths"][path][method]["responses"];
            assert!(responses.get("415").is_some() && responses.get("400").is_some(), "{method} {path}");
        }
    }

    #[test]
    fn the_limits_are_in_the_schema() {
        let document = document();
        let parameter = |path: &str, method: &str, name: &str| -> Value {
            document["paths"][path][method]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|parameter| parameter["name"] == name)
                .unwrap_or_else(|| panic!("{method} {path} lacks the parameter {name}"))["schema"]
                .clone()
        };
        let limit = parameter("/v1/executions", "get", "limit");
        assert_eq!((limit["minimum"].as_u64(), limit["maximum"].as_u64()), (Some(1), Some(500)), "{limit}");
        let key = parameter("/v1/workflows/{name}/executions", "post", "Idempotency-Key");
        assert_eq!(key["maxLength"], 255, "{key}");
        let name = parameter("/v1/plugins/{name}", "put", "name");
        assert_eq!((name["maxLength"].as_u64(), name["pattern"].as_str()), (Some(64), Some("^[a-z][a-z0-9_-]*$")));
    }
}
