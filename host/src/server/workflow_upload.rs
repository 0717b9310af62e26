//! `PUT /v1/workflows/{name}`: a workflow uploaded over HTTP, a living
//! document beside the watched directory. The TOML is checked as a file of
//! the directory would be (against the plugins and the other workflows),
//! then written into the directory and loaded before the answer; a refused
//! one changes nothing. One whose only problem is plugins that are not
//! loaded yet is kept (202) and goes live when they arrive, as a file of the
//! directory would.
//!
//! A tenant's upload is stamped with its tenant (`tenant = "acme"`): only
//! that tenant runs it, it replaces only its own workflows, its steps use the
//! platform's plugins and child workflows or its own (never another tenant's,
//! whose code would see its data), and it has no `on_event` or `schedule`
//! (those start executions for nobody in particular).

use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::access::Principal;
use crate::journal::ids::StepId;
use crate::workflow::WorkflowDefinition;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde_json::json;

/// Creates or replaces the workflow `name` from the TOML body.
#[utoipa::path(put, path = "/v1/workflows/{name}", params(("name" = String, Path, min_length = 1, max_length = 64, pattern = "^[a-z][a-z0-9_-]*$", description = "Workflow name (the file's `name`)")), request_body(content = String, content_type = "text/plain", description = "The workflow file, as `text/plain` or `application/toml`"), responses((status = 201, description = "Created and loaded", body = Object), (status = 200, description = "Replaced and loaded", body = Object), (status = 202, description = "Kept, waiting for plugins that are not loaded yet (`missing_plugins`): it loads when they arrive", body = Object), (status = 400, description = "A bad name or a body that is not UTF-8", body = ErrorBody), (status = 415, description = "Not sent as application/toml or text/plain", body = ErrorBody), (status = 422, description = "The workflow is invalid: every problem, with its step and field", body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "The token's scope does not allow this", body = ErrorBody)), security(("bearer" = [])))]
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
    if !matches!(super::api::media_type(&headers).as_deref(), Some("application/toml" | "text/plain")) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the workflow file as `Content-Type: application/toml` (or text/plain)",
        ));
    }
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the workflow file is not UTF-8"))?;
    let stamped;
    let text = match principal.tenant_filter() {
        Some(tenant) => {
            check_tenant_workflow(&state, tenant, &name, text)?;
            stamped = format!("tenant = \"{tenant}\"\n{text}");
            stamped.as_str()
        }
        None => text,
    };
    let installed = state
        .workflows
        .install(&name, text)
        .map_err(|error| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_workflow", error.to_string()))?;
    let file = installed.file.file_name().map(|f| f.to_string_lossy().into_owned());
    // Only a workflow that is not live waits (the directory never replaces a
    // live one with a version that cannot run yet).
    if !installed.missing_plugins.is_empty() {
        let missing = installed.missing_plugins.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ");
        let body = json!({"name": name, "file": file, "status": "waiting_for_plugins",
                          "missing_plugins": installed.missing_plugins,
                          "message": format!("kept: it loads once plugin(s) {missing} are loaded")});
        return Ok((StatusCode::ACCEPTED, Json(body)));
    }
    let status = if installed.replaced { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(json!({"name": name, "file": file, "status": "loaded"}))))
}

/// What a tenant may upload: see the module's documentation.
fn check_tenant_workflow(state: &AppState, tenant: &str, name: &str, text: &str) -> Result<(), ApiError> {
    let forbidden = |message: String| ApiError::new(StatusCode::FORBIDDEN, "forbidden", message);
    // Live or waiting for its plugins, a version of `name` that is not
    // this tenant's is not replaced by it.
    if state.workflows.owners_of(name).iter().any(|owner| owner.as_deref() != Some(tenant)) {
        return Err(forbidden(format!("workflow `{name}` is not tenant `{tenant}`'s")));
    }
    let Ok(definition) = toml::from_str::<WorkflowDefinition>(text) else {
        return Ok(()); // refused with its parse error by the directory
    };
    for (field, set) in [
        ("tenant", definition.tenant.is_some()),
        ("on_event", definition.on_event.is_some()),
        ("schedule", definition.schedule.is_some()),
    ] {
        if set {
            return Err(forbidden(format!("a tenant's workflow takes no `{field}` (`{name}`)")));
        }
    }
    for step in &definition.steps {
        if let Some(plugin) = &step.plugin {
            // `name@version` pins a version of the plugin `name`.
            let plugin_name = plugin.split('@').next().unwrap_or(plugin);
            if state.engine.registry().owner(plugin_name).is_some_and(|owner| owner != tenant) {
                return Err(forbidden(format!(
                    "workflow `{name}`, step `{}`: plugin `{plugin_name}` belongs to another tenant",
                    step.id
                )));
            }
        }
        if let Some(child) = &step.workflow {
            let owner = state.workflows.get(child).and_then(|w| w.definition().tenant.clone());
            if owner.is_some_and(|owner| owner != tenant) {
                return Err(forbidden(format!(
                    "workflow `{name}`, step `{}`: workflow `{child}` belongs to another tenant",
                    step.id
                )));
            }
        }
    }
    Ok(())
}
