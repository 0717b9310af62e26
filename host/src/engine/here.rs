//! Driving a new execution's owner in the task that waits for it.
//!
//! A caller that starts an execution and waits for its rest at once (`run`,
//! a request that asks to wait, a child workflow's step) would otherwise
//! spawn the owner as a task and sleep until it is told: a spawn, a wake of
//! another worker and a wake of the caller for every execution. Here the
//! caller's own task polls the owner until the execution rests. The owner
//! does not depend on the caller staying: if the caller goes away first (a
//! dropped request, a timeout), or the owner goes on after telling its
//! waiters, what is left of it is spawned as a task of its own, as
//! [`crate::engine::Engine::start`] does at once.

use super::{EngineError, Rested};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

type OwnerRun = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What an owner's waiter receives once the execution rests.
pub(super) type Settled = oneshot::Receiver<Result<Rested, EngineError>>;

/// An owner polled by the task that waits for it; spawned if it outlives it.
pub(super) struct DrivenHere(Option<OwnerRun>);

impl DrivenHere {
    pub(super) fn new(owner: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(Some(Box::pin(owner)))
    }

    /// Polls the owner in this task until `settled` says the execution rests.
    pub(super) async fn until_rest(mut self, mut settled: Settled) -> Result<Rested, EngineError> {
        std::future::poll_fn(|cx| {
            self.poll_owner(cx);
            Pin::new(&mut settled).poll(cx)
        })
        .await
        .unwrap_or_else(|_| Err(owner_stopped()))
    }

    /// Polls the owner once, if it still runs here. A panic stops the owner
    /// alone, as it would stop the owner's own task: its waiters are told it
    /// stopped, and the caller goes on.
    fn poll_owner(&mut self, cx: &mut Context<'_>) {
        let Some(owner) = self.0.as_mut() else { return };
        match std::panic::catch_unwind(AssertUnwindSafe(|| owner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => {}
            Ok(Poll::Ready(())) => self.0 = None,
            Err(_) => {
                tracing::error!("an execution's owner panicked");
                self.0 = None;
            }
        }
    }
}

impl Drop for DrivenHere {
    fn drop(&mut self) {
        // Without a runtime (it is shutting down) nothing could drive it:
        // the owner is dropped, as its task would be.
        if let (Some(owner), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(owner);
        }
    }
}

/// The error a waiter gets when the owner stopped without telling it.
pub(super) fn owner_stopped() -> EngineError {
    EngineError::Lost("the execution's owner stopped".into())
}
