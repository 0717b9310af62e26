//! Answers that reach a client still sending its body.
//!
//! The server answers some requests before reading their whole body: a body
//! past its route's limit (413), a missing token (401), a route that does not
//! exist. Closing the connection with unread data in it makes the kernel
//! reset it, and a client still writing its body (a 65 MiB upload) then sees
//! a broken pipe instead of the answer. So the request's body is watched: a
//! handler that drops it unfinished hands the rest back, and the rest is read
//! and discarded, at most [`MAX_DISCARDED`] bytes within [`MAX_LINGER`],
//! before the answer is sent (a lingering close). A client sending more, or
//! slower, gets the answer and the connection is closed as before.

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::header::{HeaderValue, CONNECTION};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use hyper::body::Frame;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;

/// The most of a refused body read and discarded.
pub const MAX_DISCARDED: u64 = 256 << 20;
/// How long discarding a refused body may take.
pub const MAX_LINGER: Duration = Duration::from_secs(30);

/// The middleware: serves the request, then discards what its handler left
/// of the body before the answer goes out.
pub async fn discard_unread_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let (watched, leftover) = Watched::new(body);
    let mut response = next.run(Request::from_parts(parts, Body::new(watched))).await;
    // The handler has returned, so its body is gone: finished, or handed back.
    if let Ok(rest) = leftover.await {
        let drained = tokio::time::timeout(MAX_LINGER, discard(rest)).await.unwrap_or(false);
        // The connection carries nothing after this answer.
        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        if !drained {
            tracing::debug!("a refused request body was larger or slower than the server discards");
        }
    }
    response
}

/// Reads `rest` to its end; false past [`MAX_DISCARDED`] bytes or on an error.
async fn discard(mut rest: Body) -> bool {
    let mut read = 0u64;
    while let Some(frame) = rest.frame().await {
        let Ok(frame) = frame else { return false };
        if let Some(data) = frame.data_ref() {
            read += data.len() as u64;
            if read > MAX_DISCARDED {
                return false;
            }
        }
    }
    true
}

/// A request body that, dropped before its end, hands the rest back.
struct Watched {
    inner: Option<Body>,
    rest: Option<oneshot::Sender<Body>>,
}

impl Watched {
    fn new(body: Body) -> (Self, oneshot::Receiver<Body>) {
        let (rest, leftover) = oneshot::channel();
        (Self { inner: Some(body), rest: Some(rest) }, leftover)
    }
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            // Read to its end: nothing to hand back.
            self.inner = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.as_ref().map(HttpBody::size_hint).unwrap_or_else(|| hyper::body::SizeHint::with_exact(0))
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let (Some(inner), Some(rest)) = (self.inner.take(), self.rest.take()) {
            if !inner.is_end_stream() {
                // The middleware is waiting for it, or gone with the request.
                drop(rest.send(inner));
            }
        }
    }
}
