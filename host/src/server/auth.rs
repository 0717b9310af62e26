//! Who a request comes from: the bearer token of its `Authorization` header
//! (RFC 6750: the scheme is case-insensitive, then one or more spaces),
//! matched in constant time against the admin token of the environment or
//! an API token of the store, becomes the request's [`Principal`]; what
//! each route then allows is `crate::access`'s table. Also what a
//! configured admin token must look like.

use super::{ApiError, AppState};
use crate::access::{tokens, Principal, Scope};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Routes anyone may call: liveness, the API description, and the web
/// view's page (its data comes from routes that need a token).
const OPEN_ROUTES: &[&str] = &["/healthz", "/openapi.json", "/"];

/// Resolves the request's principal and hands it to the route as an
/// extension; without a valid token (on any route but the open ones) the
/// answer is 401. With `--no-auth` everyone is an admin.
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if OPEN_ROUTES.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let principal = match &state.token {
        None => Ok(Principal::unauthenticated_admin()),
        Some(admin_token) => {
            let presented = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(bearer_token);
            match presented {
                None => Err(unauthorized("this endpoint needs `Authorization: Bearer <token>`")),
                Some(presented) => principal_of(&state, presented, admin_token).await,
            }
        }
    };
    match principal {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => error,
    }
}

/// The principal a presented token stands for: the admin token, or a live
/// API token of the store whose secret matches.
async fn principal_of(state: &AppState, presented: &str, admin_token: &str) -> Result<Principal, Response> {
    if token_matches(presented, admin_token) {
        return Ok(Principal { scope: Scope::Admin, token_id: "env".into() });
    }
    let refused = || unauthorized("the bearer token is not valid (unknown, revoked or mistyped)");
    let Some((id, secret)) = tokens::parse(presented) else { return Err(refused()) };
    let record = state.engine.store().token(id).await.map_err(|error| {
        tracing::error!("checking an API token: {error}");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the token could not be checked; try again")
            .into_response()
    })?;
    let Some(record) = record.filter(|record| record.revoked_at.is_none()) else { return Err(refused()) };
    if !tokens::secret_matches(secret, &record.secret_hash) {
        return Err(refused());
    }
    let scope = record.scope.parse::<Scope>().map_err(|error| {
        ApiError::internal(format!("token `{}` has a scope this host does not know: {error}", record.id))
            .into_response()
    })?;
    Ok(Principal { scope, token_id: record.id })
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The shortest token `serve` accepts.
pub const MIN_TOKEN_LEN: usize = 16;

/// The token of an `Authorization: Bearer <token>` header value, if it is one.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches(' ');
    (!token.is_empty()).then_some(token)
}

/// Whether `presented` is the `expected` token. Both are hashed first, so
/// the comparison takes the same time whatever they hold, their lengths too.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    let (presented, expected) = (Sha256::digest(presented.as_bytes()), Sha256::digest(expected.as_bytes()));
    presented.ct_eq(&expected).into()
}

/// Why a token cannot be configured, if it cannot: too short, or with
/// whitespace or control characters that no header could carry (a stray
/// newline from a file).
pub fn check_token(token: &str) -> Result<(), String> {
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the bearer token contains whitespace or a control character (a trailing newline?): \
                    no request could present it"
            .into());
    }
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!("the bearer token must be at least {MIN_TOKEN_LEN} characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_case_insensitive_and_spaces_may_repeat() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER   abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(token_matches("0123456789abcdef", "0123456789abcdef"));
        assert!(!token_matches("0123456789abcdeF", "0123456789abcdef"));
        assert!(!token_matches("0123456789abcdef ", "0123456789abcdef"));
        assert!(!token_matches("", "0123456789abcdef"));
    }

    #[test]
    fn a_token_with_whitespace_or_too_short_is_refused() {
        assert!(check_token("0123456789abcdef").is_ok());
        assert!(check_token("0123456789abcdef\n").unwrap_err().contains("trailing newline"));
        assert!(check_token(" 0123456789abcdef").is_err());
        assert!(check_token("short").unwrap_err().contains("at least 16"));
    }
}
