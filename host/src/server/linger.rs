//! Answers that reach a client still sending its body.
//!
//! The server answers some requests before reading their whole body: a body
//! past its route's limit (413), a missing token (401), a route that does not
//! exist. Closing the connection with unread data in it makes the kernel
//! reset it, and a client still writing its body (a 65 MiB upload) then sees
//! a broken pipe instead of the answer. So the request's body is watched: a
//! handler that drops it unfinished hands the rest back, and the rest is read
//! and discarded before the answer is sent (a lingering close), within
//! bounds: at most [`MAX_DISCARDED`] bytes, [`MAX_LINGER`] in all,
//! [`MAX_IDLE`] between two reads, and [`MAX_LINGERING`] requests at once.
//! Past a bound, the answer goes out and the connection is closed as before.
//!
//! A client that asked `Expect: 100-continue` and was not told to continue
//! has sent no body: nothing is read, so that it is not told to send one.

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::header::{HeaderValue, CONNECTION, EXPECT};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};
use tokio::time::{timeout, Instant};

/// The most of a refused body read and discarded.
pub const MAX_DISCARDED: u64 = 256 << 20;
/// How long discarding a refused body may take.
pub const MAX_LINGER: Duration = Duration::from_secs(30);
/// How long a refused body may send nothing before it is given up.
pub const MAX_IDLE: Duration = Duration::from_secs(5);
/// How many refused bodies are discarded at once; past that, answers go out
/// at once.
pub const MAX_LINGERING: usize = 64;

static LINGERING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(MAX_LINGERING));

/// The middleware: serves the request, then discards what its handler left
/// of the body before the answer goes out.
pub async fn discard_unread_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let expects_continue =
        parts.headers.get(EXPECT).is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (watched, leftover) = Watched::new(body);
    let mut response = next.run(Request::from_parts(parts, Body::new(watched))).await;
    // The handler has returned; its body is finished, or handed back (a body
    // kept past the response is not waited for).
    let Ok(Ok(Leftover { rest, polled })) = timeout(MAX_IDLE, leftover).await else { return response };
    let drained = if expects_continue && !polled {
        // Not told to continue: the client sent nothing, and reading now
        // would tell it to.
        false
    } else if let Ok(_permit) = LINGERING.try_acquire() {
        discard(rest).await
    } else {
        false
    };
    if !drained {
        tracing::debug!("a refused request body was not read to its end: the connection closes with the answer");
    }
    // A refused request ends its connection (as a lingering close does):
    // nothing follows this answer, read to its end or not.
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Reads `rest` to its end within the bounds; whether it got there.
async fn discard(mut rest: Body) -> bool {
    let deadline = Instant::now() + MAX_LINGER;
    let mut read = 0u64;
    loop {
        let idle_until = deadline.min(Instant::now() + MAX_IDLE);
        match tokio::time::timeout_at(idle_until, rest.frame()).await {
            Ok(None) => return true,
            Ok(Some(Ok(frame))) => {
                read += frame.data_ref().map_or(0, |data| data.len() as u64);
                if read > MAX_DISCARDED {
                    return false;
                }
            }
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}

/// What a handler left of a body: the rest, and whether it was read at all.
struct Leftover {
    rest: Body,
    polled: bool,
}

/// A request body that, dropped before its end, hands the rest back.
struct Watched {
    inner: Option<Body>,
    polled: bool,
    leftover: Option<oneshot::Sender<Leftover>>,
}

impl Watched {
    fn new(body: Body) -> (Self, oneshot::Receiver<Leftover>) {
        let (leftover, receiver) = oneshot::channel();
        (Self { inner: Some(body), polled: false, leftover: Some(leftover) }, receiver)
    }
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.polled = true;
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

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(HttpBody::size_hint).unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let (Some(rest), Some(leftover)) = (self.inner.take(), self.leftover.take()) {
            if !rest.is_end_stream() {
                // The middleware is waiting for it, or gone with the request.
                drop(leftover.send(Leftover { rest, polled: self.polled }));
            }
        }
    }
}
