//! API errors: `{"error": {"code", "message"}}` with a proper status code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// An error answered by the API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// The JSON body of an error.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code (`not_found`, `invalid_json`, ...).
    code: String,
    /// What went wrong, for people.
    message: String,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// 404 with code `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 400 with code `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 500 with code `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<crate::access::Denied> for ApiError {
    fn from(denied: crate::access::Denied) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", denied.0)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message } };
        (self.status, Json(body)).into_response()
    }
}

impl From<crate::engine::EngineError> for ApiError {
    fn from(error: crate::engine::EngineError) -> Self {
        use crate::engine::EngineError;
        use crate::store::StoreError;
        match &error {
            EngineError::NotFound(_) | EngineError::Store(StoreError::NotFound(_)) => {
                Self::not_found(error.to_string())
            }
            EngineError::NoSuchStep(_) => Self::new(StatusCode::NOT_FOUND, "no_such_step", error.to_string()),
            EngineError::NotWaiting(_) => Self::new(StatusCode::CONFLICT, "not_waiting", error.to_string()),
            EngineError::NotRetryable(_) => Self::new(StatusCode::CONFLICT, "not_retryable", error.to_string()),
            EngineError::Store(StoreError::Conflict(..)) | EngineError::Store(StoreError::Fenced(..)) => {
                Self::new(StatusCode::CONFLICT, "conflict", error.to_string())
            }
            EngineError::Invalid(_) => Self::new(StatusCode::BAD_REQUEST, "bad_request", error.to_string()),
            EngineError::Plugin(_) | EngineError::Workflow(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_plugin_or_workflow", error.to_string())
            }
            EngineError::Unloadable(..) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "unloadable", error.to_string())
            }
            EngineError::Lost(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", error.to_string()),
            EngineError::NewerLog(..) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "newer_log", error.to_string()),
            EngineError::Store(StoreError::Backend(_) | StoreError::Corrupt(..)) => Self::internal(error.to_string()),
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection;
        match rejection {
            JsonRejection::BytesRejection(_) => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", rejection.body_text())
            }
            JsonRejection::MissingJsonContentType(_) => {
                Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", rejection.body_text())
            }
            _ => Self::new(StatusCode::BAD_REQUEST, "invalid_json", rejection.body_text()),
        }
    }
}
