//! The HTTP API handlers (`/v1/...`). Each handler validates its input,
//! calls the engine, and answers JSON; errors use [`ApiError`].

use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::access::{Action, Principal};
use crate::engine::{Delivery, ExecutionView, Settling, StartOptions};
use crate::journal::{ExecutionId, ExecutionStatus, UnitId};
use crate::plugin::LoadedPlugin;
use crate::store::ListFilter;
use crate::workflow::MAX_EVENT_NAME_CHARS;
use axum::body::Bytes;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Extension;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// How long `?wait=true` (and step completion) waits for an execution to end before answering 202.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// A JSON request body (an empty one reads as `{}`): sent as
/// `application/json` (or a `+json` type), valid, nested at most 64 deep.
fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let content_type = headers.get(axum::http::header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    let essence = media_type(headers);
    if !essence.as_deref().is_some_and(|essence| essence == "application/json" || essence.ends_with("+json")) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "the request body must be sent as `Content-Type: application/json` (it was {})",
                content_type.map_or("not given".to_string(), |value| format!("`{value}`"))
            ),
        ));
    }
    let text = std::str::from_utf8(body).map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", "the request body is not valid JSON: not UTF-8")
    })?;
    crate::journal::json::parse_bounded(text).map_err(|error| {
        let code = if error.contains("nested deeper") { "too_deep" } else { "invalid_json" };
        ApiError::new(StatusCode::BAD_REQUEST, code, format!("the request body is not valid JSON: {error}"))
    })
}

/// The request's media type without its parameters, lowercased
/// (`Text/Plain; charset=utf-8` is `text/plain`).
pub(super) fn media_type(headers: &HeaderMap) -> Option<String> {
    let content_type = headers.get(axum::http::header::CONTENT_TYPE)?.to_str().ok()?;
    Some(content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(value) => {
            let key = value.to_str().map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?;
            if key.bytes().any(|byte| !(b' '..=b'~').contains(&byte)) {
                return Err(ApiError::bad_request("Idempotency-Key must be visible ASCII"));
            }
            if key.is_empty() || key.len() > 255 {
                return Err(ApiError::bad_request("Idempotency-Key must be 1 to 255 characters"));
            }
            Ok(Some(key.to_string()))
        }
    }
}

/// A `tenant` query parameter, checked: absent, or a valid tenant id.
fn checked_tenant(tenant: Option<String>) -> Result<Option<String>, ApiError> {
    match tenant {
        Some(tenant) if !crate::tenants::is_valid_tenant(&tenant) => Err(ApiError::bad_request(format!(
            "`tenant` must be 1-64 of a-z, 0-9, `_` and `-`, starting with a letter or digit (it was `{tenant}`)"
        ))),
        tenant => Ok(tenant),
    }
}

/// The idempotency key as stored: a tenant token's keys are its own, so
/// two tenants choosing the same key start two executions.
fn principal_key(principal: &Principal, key: String) -> String {
    match principal.tenant_filter() {
        Some(tenant) => format!("tenant:{tenant}:{key}"),
        None => key,
    }
}

/// Query of `POST /v1/workflows/{name}/executions`.
#[derive(Deserialize, IntoParams)]
pub struct StartQuery {
    /// Wait (up to 30 s) for the execution to end and answer it whole.
    #[serde(default)]
    wait: bool,
    /// The tenant the execution runs for: its hook handlers run.
    #[param(pattern = r"^[a-z0-9][a-z0-9_-]*$", max_length = 64, nullable = false)]
    tenant: Option<String>,
}

/// An execution accepted but not finished yet.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    execution_id: String,
    status: String,
}

/// Runs a workflow with the request body as input.
#[utoipa::path(post, path = "/v1/workflows/{name}/executions", params(("name" = String, Path, min_length = 1, max_length = 128, description = "Workflow name"), StartQuery, ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]*[!-~])?$", description = "Starting twice with the same key returns the first execution (1-255 visible ASCII characters)")), request_body(content = Object, description = "The workflow input"), responses((status = 200, description = "The execution, ended (with wait=true) or the one an idempotency key names", body = Object), (status = 202, description = "Started", body = Accepted), (status = 404, body = ErrorBody), (status = 400, description = "Invalid JSON (or nested deeper than 64), a bad id or field", body = ErrorBody), (status = 415, description = "A JSON body not sent as application/json", body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "The token's scope does not allow this", body = ErrorBody)), security(("bearer" = [])))]
pub async fn start_execution(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    Query(query): Query<StartQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    principal.may(Action::Start)?;
    let tenant = principal.tenant_to_run_as(checked_tenant(query.tenant.clone())?)?;
    let input = parse_body(&headers, &body)?;
    let workflow = state
        .workflows
        .get(&name)
        // Another tenant's workflow is as unknown as a missing one.
        .filter(|workflow| match (&workflow.definition().tenant, principal.tenant_filter()) {
            (Some(owner), Some(own)) => owner == own,
            _ => true,
        })
        .ok_or_else(|| ApiError::not_found(format!("no workflow `{name}`")))?;
    // A tenant's workflow runs for its tenant.
    let tenant = match (&workflow.definition().tenant, tenant) {
        (Some(owner), Some(requested)) if *owner != requested => {
            return Err(ApiError::bad_request(format!("workflow `{name}` runs for tenant `{owner}` only")))
        }
        (Some(owner), _) => Some(owner.clone()),
        (None, requested) => requested,
    };
    let key = idempotency_key(&headers)?.map(|key| principal_key(&principal, key));
    let options = StartOptions { idempotency_key: key, tenant };
    // The execution runs in a task of its own even when the client waits:
    // hyper polls a handler only while it can write the connection's next
    // answer, so a pipelining client that stops reading would pause an
    // execution driven here (its calls' slots, timers and mailbox with it).
    let (id, settling) = state.engine.start(workflow, input, options).await?;
    let Some(settling) = settling else {
        let execution = state.engine.show(&id).await?;
        if !principal.sees(execution.tenant.as_deref()) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_taken",
                "this Idempotency-Key names an execution this token may not see; choose another key",
            ));
        }
        return Ok((StatusCode::OK, Json(execution.to_json())));
    };
    if query.wait {
        if let Some(execution) = settle_within(settling, WAIT_LIMIT).await? {
            return Ok((StatusCode::OK, Json(execution.to_json())));
        }
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"execution_id": id, "status": "running"}))))
}

/// The execution once it rests, if that happens within `limit`.
async fn settle_within(settling: Settling, limit: Duration) -> Result<Option<ExecutionView>, ApiError> {
    match tokio::time::timeout(limit, settling.wait()).await {
        Ok(execution) => Ok(Some(execution?)),
        Err(_) => Ok(None),
    }
}

/// One execution, as `stepwise run` prints it.
#[utoipa::path(get, path = "/v1/executions/{id}", params(("id" = String, Path, min_length = 1, max_length = 128, description = "The execution id")), responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "The token's scope does not allow this", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_execution(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    principal.may(Action::Read)?;
    let id = ExecutionId::new(id);
    let execution = state.engine.show(&id).await?;
    if !principal.sees(execution.tenant.as_deref()) {
        return Err(hidden(&id));
    }
    Ok(Json(execution.to_json()))
}

/// What a tenant asking about another tenant's execution hears: that it
/// does not exist, exactly as for an id nobody used.
fn hidden(id: &ExecutionId) -> ApiError {
    ApiError::from(crate::engine::EngineError::Store(crate::store::StoreError::NotFound(id.clone())))
}

/// Refuses (404) a principal that may not see execution `id`: only tenant
/// tokens are limited, to their own executions.
async fn check_visible(state: &AppState, principal: &Principal, id: &ExecutionId) -> Result<(), ApiError> {
    if principal.tenant_filter().is_none() {
        return Ok(());
    }
    let stored = state.engine.store().load(id).await.map_err(crate::engine::EngineError::Store)?;
    match stored {
        Some(execution) if principal.sees(execution.tenant.as_deref()) => Ok(()),
        _ => Err(hidden(id)),
    }
}

/// Query of `GET /v1/executions`.
#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only this status.
    #[param(pattern = r"^(running|waiting|compensating|succeeded|compensated|failed)$", nullable = false)]
    status: Option<String>,
    /// Only this workflow.
    #[param(nullable = false)]
    workflow: Option<String>,
    /// Only this tenant's executions (a tenant token sees only its own).
    #[param(pattern = r"^[a-z0-9][a-z0-9_-]*$", max_length = 64, nullable = false)]
    tenant: Option<String>,
    /// Page size (default 50, at most 500).
    #[param(minimum = 1, maximum = 500, nullable = false)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[param(nullable = false)]
    cursor: Option<String>,
}

/// Executions, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/executions", params(ListQuery), responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "The token's scope does not allow this", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_executions(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    principal.may(Action::Read)?;
    let tenant = match (principal.tenant_filter(), checked_tenant(query.tenant)?) {
        (Some(own), Some(asked)) if asked != own => {
            return Err(crate::access::Denied(format!("a token of tenant `{own}` may not list tenant `{asked}`")).into())
        }
        (Some(own), _) => Some(own.to_string()),
        (None, asked) => asked,
    };
    let status = match &query.status {
        Some(text) => Some(text.parse::<ExecutionStatus>().map_err(|error| ApiError::bad_request(error.to_string()))?),
        None => None,
    };
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    let before = query.cursor.map(ExecutionId::new);
    let filter = ListFilter { status, workflow: query.workflow, tenant, limit: Some(limit), before };
    let executions = state.engine.store().list(&filter).await.map_err(|e| ApiError::internal(e.to_string()))?;
    let next_cursor = (executions.len() == limit).then(|| executions.last().map(|e| e.execution_id.clone())).flatten();
    Ok(Json(json!({"executions": executions, "next_cursor": next_cursor})))
}

/// Body of a failure report.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureReport {
    /// What went wrong.
    error: String,
}

/// Reports an async step done; the body is its output.
#[utoipa::path(post, path = "/v1/executions/{id}/steps/{step}/success", params(("id" = String, Path, min_length = 1, max_length = 128, description = "The execution id"), ("step" = String, Path, pattern = r"^[a-z][a-z0-9_-]*(\[([0-9]{1,9}|[a-z][a-z0-9_-]{0,63})\])?$", description = "The async step: `step`, `step[3]` (an element) or `hook[plugin]` (a handler)"), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]*[!-~])?$", description = "The same report again with the same key gets the same answer")), request_body(content = Object, description = "The step's output"), responses((status = 200, body = Object), (status = 202, body = Accepted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 400, description = "Invalid JSON (or nested deeper than 64), a bad id or field", body = ErrorBody), (status = 415, description = "A JSON body not sent as application/json", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "The token's scope does not allow this", body = ErrorBody)), security(("bearer" = [])))]
pub async fn step_success(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, step)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    principal.may(Action::Operate)?;
    let output = parse_body(&headers, &body)?;
    let (id, step) = (ExecutionId::new(id), unit_id(&step)?);
    check_visible(&state, &principal, &id).await?;
    let key = idempotency_key(&headers)?;
    answer_delivery(&id, state.engine.complete_step(&id, &step, output, key).await?).await
}

/// Body of a cancellation or a retry (optional).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// Why, recorded in the execution.
    #[serde(default)]
    reason: Option<String>,
}

/// A JSON body read as `T` (see [`parse_body`]); a body of another shape is
/// 400 `invalid_json`, naming the `expected` shape.
fn parse_body_as<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
    expected: &str,
) -> Result<T, ApiError> {
    serde_json::from_value(parse_body(headers, body)?)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("expected {expected}: {e}")))
}

/// The reason a cancellation or retry body gives, else `default`.
fn reason_of(headers: &HeaderMap, body: &Bytes, default: &str) -> Result<String, ApiError> {
    let request: ReasonRequest = parse_body_as(headers, body, r#"{"reason": "..."}"#)?;
    Ok(request.reason.unwrap_or_else(|| default.to_string()))
}

/// Rolls an execution back: running steps settle, then every completed step
/// is compensated in reverse order, even when the execution had succeeded.
#[utoipa::path(post, path = "/v1/executions/{id}/cancel", params(("id" = String, Path, min_length = 1, max_length = 128, description = "The execution id")), request_body(content = ReasonRequest, description = "Optional: why"), responses((status = 200, body = Object), (status = 202, body = Accepted), (status = 404, body = ErrorBody), (status = 400, description = "Invalid JSON (or nested deeper than 64), a bad id or field", body = ErrorBody), (status = 415, description = "A JSON body not sent as application/json", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "The token's scope does not allow this", body = ErrorBody)), security(("bearer" = [])))]
pub async fn cancel_execution(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    principal.may(Action::Operate)?;
    let reason = reason_of(&headers, &body, "cancelled through the API")?;
    let id = ExecutionId::new(id);
    check_visible(&state, &principal, &id).await?;
    answer_delivery(&id, state.engine.cancel(&id, &reason).await?).await
}

/// Retries a `failed` execution: the compensations that failed for good are
/// tried again (fresh attempts, the same idempotency keys) and the rollback
/// goes on; 409 `not_retryable` for an execution in any other status.
#[utoipa::path(post, path = "/v1/executions/{id}/retry", params(("id" = String, Path, min_length = 1, max_length = 128, description = "The execution id")), request_body(content = ReasonRequest, description = "Optional: why"), responses((status = 200, body = Object), (status = 202, body = Accepted), (status = 400, description = "Invalid JSON", body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "The execution is not `failed`", body = ErrorBody), (status = 415, description = "A JSON body not sent as application/json", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "The token's scope does not allow this", body = ErrorBody)), security(("bearer" = [])))]
pub async fn retry_execution(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    principal.may(Action::Operate)?;
    let reason = reason_of(&headers, &body, "retried through the API")?;
    let id = ExecutionId::new(id);
    check_visible(&state, &principal, &id).await?;
    answer_delivery(&id, state.engine.retry(&id, &reason).await?).await
}

/// Reports an async step failed; the execution rolls back.
#[utoipa::path(post, path = "/v1/executions/{id}/steps/{step}/failure", params(("id" = String, Path, min_length = 1, max_length = 128, description = "The execution id"), ("step" = String, Path, pattern = r"^[a-z][a-z0-9_-]*(\[([0-9]{1,9}|[a-z][a-z0-9_-]{0,63})\])?$", description = "The async step: `step`, `step[3]` (an element) or `hook[plugin]` (a handler)"), ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]*[!-~])?$", description = "The same report again with the same key gets the same answer")), request_body = FailureReport, responses((status = 200, body = Object), (status = 202, body = Accepted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 400, description = "Invalid JSON (or nested deeper than 64), a bad id or field", body = ErrorBody), (status = 415, description = "A JSON body not sent as application/json", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "The token's scope does not allow this", body = ErrorBody)), security(("bearer" = [])))]
pub async fn step_failure(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, step)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    principal.may(Action::Operate)?;
    let report: FailureReport = parse_body_as(&headers, &body, r#"{"error": "..."}"#)?;
    let (id, step) = (ExecutionId::new(id), unit_id(&step)?);
    check_visible(&state, &principal, &id).await?;
    let key = idempotency_key(&headers)?;
    answer_delivery(&id, state.engine.fail_step(&id, &step, report.error, key).await?).await
}

fn unit_id(step: &str) -> Result<UnitId, ApiError> {
    step.parse().map_err(|error: crate::journal::unit::InvalidUnitId| ApiError::bad_request(error.to_string()))
}

/// The answer to an accepted outside event: the execution once it rests
/// (200), or 202 when it does not rest within the wait limit.
async fn answer_delivery(id: &ExecutionId, delivery: Delivery) -> Result<(StatusCode, Json<Value>), ApiError> {
    match settle_within(delivery.settling, WAIT_LIMIT).await? {
        Some(execution) => Ok((StatusCode::OK, Json(execution.to_json()))),
        None => Ok((StatusCode::ACCEPTED, Json(json!({"execution_id": id, "status": "running"})))),
    }
}

/// The live workflows, and the files that do not load: each with the
/// workflow it defines, whether it waits for plugins (it goes live when they
/// arrive) or is invalid, and the error.
#[utoipa::path(get, path = "/v1/workflows", responses((status = 200, body = Object), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "The token's scope does not allow this", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_workflows(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<impl IntoResponse, ApiError> {
    principal.may(Action::Read)?;
    // A tenant sees the platform's workflows and its own; not another
    // tenant's, nor why a file it cannot see does not load.
    let tenant = principal.tenant_filter();
    let visible = |owner: Option<&str>| tenant.is_none() || owner.is_none() || owner == tenant;
    let workflows: Vec<Value> = state
        .workflows
        .workflows()
        .iter()
        .filter(|w| visible(w.definition().tenant.as_deref()))
        .map(|w| {
            let d = w.definition();
            json!({"name": d.name, "status": "live", "description": d.description, "on_event": d.on_event, "schedule": d.schedule,
                   "steps": d.steps.iter().map(|s| json!({"id": s.id, "plugin": s.plugin, "workflow": s.workflow, "transform": s.transform})).collect::<Vec<_>>(),
                   "hooks": d.hooks.iter().map(|h| json!({"name": h.name})).collect::<Vec<_>>()})
        })
        .collect();
    // The file's name: where the directory is on the server is not the caller's business.
    let directory = format!("{}/", state.workflows.dir().display());
    let errors: Vec<Value> = state
        .workflows
        .files()
        .into_iter()
        .filter(|(_, status)| {
            let name = status.defines.as_ref().or(status.workflow.as_ref());
            tenant.is_none()
                || name.is_some_and(|name| state.workflows.owners_of(name).iter().all(|o| o.as_deref() == tenant))
        })
        .filter_map(|(file, status)| {
            let file = file.file_name().map(|name| name.to_string_lossy().into_owned());
            let error = status.error?.replace(&directory, "");
            let waiting = !status.missing_plugins.is_empty();
            Some(json!({
                "file": file,
                "workflow": status.defines.or(status.workflow.clone()),
                "status": if waiting { "waiting_for_plugins" } else { "invalid" },
                "missing_plugins": status.missing_plugins,
                "previous_version_serves": status.workflow.is_some(),
                "error": error,
            }))
        })
        .collect();
    Ok(Json(json!({"workflows": workflows, "errors": errors})))
}

/// The plugins: current version, status, last load error.
#[utoipa::path(get, path = "/v1/plugins", responses((status = 200, body = Object), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "The token's scope does not allow this", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_plugins(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<impl IntoResponse, ApiError> {
    principal.may(Action::Read)?;
    let plugins: Vec<Value> = state
        .engine
        .registry()
        .statuses()
        .into_iter()
        .map(|status| {
            let (hash, version, size) = status.current.clone().map_or((None, None, None), |(h, v, s)| (Some(h), v, Some(s)));
            let state = match (&status.current, &status.error) {
                (_, Some(_)) if status.current.is_some() => "ok_previous_version",
                (_, Some(_)) => "invalid",
                (Some(_), None) => "ok",
                (None, None) => "not_loaded",
            };
            json!({"name": status.name, "status": state, "hash": hash, "version": version, "size": size, "error": status.error})
        })
        .collect();
    Ok(Json(json!({"plugins": plugins})))
}

/// The parts of a plugin upload.
#[derive(ToSchema)]
#[allow(dead_code)] // read part by part from the multipart stream; this describes it
pub struct PluginUpload {
    /// The component (`.wasm`).
    #[schema(value_type = String, format = Binary)]
    component: Vec<u8>,
    /// Its manifest (TOML), if any.
    manifest: Option<String>,
}

/// Uploads a plugin (multipart: `component`, optional `manifest`): checked as a
/// watched file would be, then written to the plugin directory and swapped in.
#[utoipa::path(put, path = "/v1/plugins/{name}", params(("name" = String, Path, max_length = 64, pattern = "^[a-z][a-z0-9_-]*$")), request_body(content = PluginUpload, content_type = "multipart/form-data", description = "`component` (the .wasm) and an optional `manifest` (TOML)"), responses((status = 201, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 403, description = "The token's scope does not allow this", body = ErrorBody)), security(("bearer" = [])))]
pub async fn upload_plugin(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    mut multipart: Multipart,
) -> Result<impl IntoResponse, ApiError> {
    use crate::journal::ids::PluginName;
    if !PluginName::is_valid(&name) {
        let shown: String = name.chars().take(PluginName::MAX_LEN).collect();
        return Err(ApiError::bad_request(format!(
            "`{shown}{}` is not a valid plugin name: 1-{} of a-z, 0-9, `_` and `-`, starting with a letter",
            if shown.len() < name.len() { "..." } else { "" },
            PluginName::MAX_LEN
        )));
    }
    principal.may_upload(&name)?;
    let (mut component, mut manifest) = (None, None);
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let part = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(multipart_error)?;
        match part.as_str() {
            "component" => component = Some(bytes),
            "manifest" => {
                manifest = Some(
                    String::from_utf8(bytes.to_vec())
                        .map_err(|_| ApiError::bad_request("the manifest is not UTF-8"))?,
                )
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected part `{other}` (expected `component`, `manifest`)"
                )))
            }
        }
    }
    let component = component.ok_or_else(|| ApiError::bad_request("missing the `component` part"))?;
    // One upload at a time: each is checked, written and swapped in whole,
    // and answers with the version it installed.
    let _one_at_a_time = UPLOADS.lock().await;
    let registry = state.engine.registry().clone();
    let path = registry.dir().join(format!("{name}.wasm"));
    if let Some(tenant) = principal.tenant_filter() {
        manifest = Some(tenant_manifest(&path, &name, tenant, manifest.as_deref(), registry.sandbox().limits())?);
    }
    let (checked_name, checked_path, checked_manifest, checked_component) =
        (name.clone(), path.clone(), manifest.clone(), component.clone());
    let sandbox = registry.sandbox().clone();
    tokio::task::spawn_blocking(move || {
        LoadedPlugin::from_bytes(
            &sandbox,
            None,
            &checked_name,
            &checked_path,
            &checked_component,
            checked_manifest.as_deref(),
        )
    })
    .await
    .map_err(|e| ApiError::internal(format!("validation failed: {e}")))?
    .map_err(|error| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_plugin", error.to_string()))?;
    // The component and manifest are replaced as one unit (the watcher waits).
    registry.install(&name, &component, manifest.as_deref()).await.map_err(|error| match error {
        crate::plugin::PluginError::Read { .. } => {
            tracing::error!(plugin = %name, "installing an uploaded plugin: {error}");
            ApiError::internal(format!("installing `{name}` failed: the plugin directory could not be written"))
        }
        error => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_plugin", error.to_string()),
    })?;
    let plugin = registry.get(&name).await.map_err(|error| ApiError::internal(error.to_string()))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": name, "hash": plugin.hash, "version": plugin.version(), "size": plugin.size})),
    ))
}

/// The manifest a tenant's upload installs: the plugin must be new or the
/// tenant's own, and the manifest within what a tenant may grant itself,
/// stamped with the tenant (see [`crate::plugin::tenant_upload`]).
fn tenant_manifest(
    path: &std::path::Path,
    name: &str,
    tenant: &str,
    manifest: Option<&str>,
    defaults: &crate::sandbox::Limits,
) -> Result<String, ApiError> {
    use crate::plugin::tenant_upload::{owner_of, stamped_manifest, Owner};
    let owner = owner_of(path).map_err(|error| {
        tracing::error!(plugin = name, "reading the owner of a plugin: {error}");
        ApiError::internal(format!("the manifest of plugin `{name}` cannot be read"))
    })?;
    match owner {
        Owner::Nobody => {}
        Owner::Tenant(owner) if owner == tenant => {}
        Owner::Tenant(_) | Owner::Platform => {
            return Err(crate::access::Denied(format!("plugin `{name}` exists and is not tenant `{tenant}`'s")).into())
        }
    }
    stamped_manifest(manifest, tenant, defaults)
        .map_err(|problems| crate::access::Denied(format!("the manifest: {}", problems.join("; "))).into())
}

/// Serializes plugin uploads.
static UPLOADS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A multipart body that cannot be read: too large (413, past the upload
/// limit) or malformed (400).
fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the upload is too large: {error}"))
    } else {
        ApiError::bad_request(format!("invalid multipart body: {error}"))
    }
}

/// Query of `POST /v1/events/{event}`.
#[derive(Deserialize, IntoParams)]
pub struct EventQuery {
    /// The tenant the triggered executions run for.
    #[param(pattern = r"^[a-z0-9][a-z0-9_-]*$", max_length = 64, nullable = false)]
    tenant: Option<String>,
}

/// Publishes an event: every workflow with `on_event` equal to it runs with the body as input.
#[utoipa::path(post, path = "/v1/events/{event}", params(("event" = String, Path, min_length = 1, max_length = 128, description = "The event name (as in `on_event`)"), EventQuery, ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]*[!-~])?$", description = "Publishing twice with the same key starts each workflow once")), request_body(content = Object, description = "The event payload"), responses((status = 202, body = Object), (status = 400, body = ErrorBody), (status = 415, description = "A JSON body not sent as application/json", body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 403, description = "The token's scope does not allow this", body = ErrorBody)), security(("bearer" = [])))]
pub async fn publish_event(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(event): Path<String>,
    Query(query): Query<EventQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    principal.may(Action::Start)?;
    let event_length = event.chars().count();
    // The OpenAPI document's `maxLength` (characters, as JSON Schema counts them).
    if !(1..=MAX_EVENT_NAME_CHARS).contains(&event_length) {
        return Err(ApiError::bad_request(format!(
            "an event name has 1 to {MAX_EVENT_NAME_CHARS} characters, not {event_length}"
        )));
    }
    let tenant = principal.tenant_to_run_as(checked_tenant(query.tenant.clone())?)?;
    let payload = parse_body(&headers, &body)?;
    if !payload.is_object() {
        return Err(ApiError::bad_request("an event's payload is a JSON object"));
    }
    let key = idempotency_key(&headers)?.map(|key| principal_key(&principal, key));
    let mut started = Vec::new();
    for workflow in state.workflows.workflows() {
        if workflow.definition().on_event.as_deref() != Some(event.as_str()) {
            continue;
        }
        let name = workflow.name().to_string();
        let options = StartOptions {
            idempotency_key: key.as_ref().map(|key| format!("event:{event}:{key}:{name}")),
            tenant: tenant.clone(),
        };
        let (id, _settling) = state.engine.start(workflow, payload.clone(), options).await?;
        started.push(json!({"workflow": name, "execution_id": id}));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"event": event, "executions": started}))))
}

/// The hosts sharing this store: heartbeat, lease, how many executions each
/// drives, and whether its lease holds now.
#[utoipa::path(get, path = "/v1/hosts", responses((status = 200, body = Object), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "The token's scope does not allow this", body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_hosts(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<impl IntoResponse, ApiError> {
    principal.may(Action::Observe)?;
    let hosts = state.engine.store().hosts().await.map_err(|e| ApiError::internal(e.to_string()))?;
    let now = crate::journal::Timestamp::now();
    let hosts: Vec<Value> = hosts
        .iter()
        .map(|host| {
            let mut json = host_json(host, now);
            json["this"] = json!(&host.id == state.engine.host_id());
            json
        })
        .collect();
    Ok(Json(json!({ "hosts": hosts })))
}

/// A host as `GET /v1/hosts` and `stepwise hosts --json` show it: its
/// record, and whether its lease holds at `now`.
pub fn host_json(host: &crate::store::HostRecord, now: crate::journal::Timestamp) -> Value {
    let mut json = serde_json::to_value(host).expect("host records serialize");
    json["live"] = json!(host.is_live(now));
    json
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Object)))]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain", body = String), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "The token's scope does not allow this", body = ErrorBody)), security(("bearer" = [])))]
pub async fn metrics(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<impl IntoResponse, ApiError> {
    principal.may(Action::Observe)?;
    let text = super::metrics::render(&state).await.map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}
