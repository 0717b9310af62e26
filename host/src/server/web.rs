//! The web view: one page, served by the binary (no external assets), that
//! lists executions and draws an execution's step graph from the API.

use axum::response::Html;

/// `GET /`: the web view.
pub async fn index() -> Html<&'static str> {
    Html(include_str!("web/index.html"))
}
