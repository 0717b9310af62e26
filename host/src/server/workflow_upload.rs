//! `PUT /v1/workflows/{name}`: a workflow uploaded over HTTP, a living
//! document beside the watched directory. The TOML is checked as a file of
//! the directory would be (against the plugins and the other workflows),
//! then written into the directory and loaded before the answer; a refused
//! one changes nothing. A tenant uploads workflows named `<tenant>-...`
//! whose steps use the platform's plugins or its own, never another
//! tenant's (whose code would then see its data).

use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::access::Principal;
use crate::journal::ids::StepId;
use crate::workflow::WorkflowDefinition;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde_json::json;

/// Creates or replaces the workflow `name` from the TOML body.
#[utoipa::path(put, path = "/v1/workflows/{name}", params(("name" = String, Path, min_length = 1, max_length = 64, pattern = "^[a-z][a-z0-9_-]*$", description = "Workflow name (the file's `name`)")), request_body(content = String, content_type = "text/plain", description = "The workflow file, as `text/plain` or `application/toml`"), responses((status = 201, description = "Created and loaded", body = Object), (status = 200, description = "Replaced and loaded", body = Object), (status = 400, description = "A bad name or a body that is not UTF-8", body = ErrorBody), (status = 415, description = "Not sent as application/toml or text/plain", body = ErrorBody), (status = 422, description = "The workflow is invalid: every problem, with its step and field", body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "The token's scope does not allow this", body = ErrorBody)), security(("bearer" = [])))]
pub async fn upload_workflow(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    if !StepId::is_valid(&name) || name.len() > 64 {
        let shown: String = name.chars().take(64).collect();
        return Err(ApiError::bad_request(format!(
            "`{shown}` is not a valid workflow name: 1-64 of a-z, 0-9, `_` and `-`, starting with a letter"
        )));
    }
    principal.may_upload_workflow(&name)?;
    let media = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media = media.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if media != "application/toml" && media != "text/plain" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the workflow file as `Content-Type: application/toml` (or text/plain)",
        ));
    }
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the workflow file is not UTF-8"))?;
    if let Some(tenant) = principal.tenant_filter() {
        check_tenant_plugins(&state, tenant, &name, text)?;
    }
    let installed = state
        .workflows
        .install(&name, text)
        .map_err(|error| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_workflow", error.to_string()))?;
    let status = if installed.replaced { StatusCode::OK } else { StatusCode::CREATED };
    let file = installed.file.file_name().map(|f| f.to_string_lossy().into_owned());
    Ok((status, Json(json!({"name": name, "file": file, "status": "loaded"}))))
}

/// A tenant's workflow may use the platform's plugins and its own only.
fn check_tenant_plugins(state: &AppState, tenant: &str, name: &str, text: &str) -> Result<(), ApiError> {
    let Ok(definition) = toml::from_str::<WorkflowDefinition>(text) else {
        return Ok(()); // refused with its parse error by the directory
    };
    for step in &definition.steps {
        let Some(plugin) = &step.plugin else { continue };
        if let Some(owner) = state.engine.registry().owner(plugin) {
            if owner != tenant {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("workflow `{name}`, step `{}`: plugin `{plugin}` belongs to another tenant", step.id),
                ));
            }
        }
    }
    Ok(())
}
