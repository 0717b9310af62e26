//! Driving a new execution's owner in the task that waits for it.
//!
//! A caller that starts an execution and waits for its rest at once
//! ([`crate::engine::Engine::run`]) would otherwise spawn the owner as a task
//! and sleep until it is told: a spawn, a wake of another worker and a wake
//! of the caller for every execution. Here the caller's own task polls the
//! owner until the execution rests. The owner does not depend on the caller
//! staying: if the caller goes away first (a dropped future, a timeout), or
//! the owner goes on after telling its waiters, what is left of it is
//! spawned as a task of its own, as [`crate::engine::Engine::start`] does at
//! once. The owner moves only while the caller polls: this is for callers
//! that await the execution and nothing else (not for a server's handler,
//! which its connection may stop polling).

use super::{EngineError, Rested};
use crate::journal::ExecutionId;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

type OwnerRun = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What an owner's waiter receives once the execution rests.
pub(super) type Settled = oneshot::Receiver<Result<Rested, EngineError>>;

/// An owner polled by the task that waits for it; spawned if it outlives it.
pub(super) struct DrivenHere {
    id: ExecutionId,
    owner: Option<OwnerRun>,
    /// Where what is left of the owner goes (the runtime it was created on,
    /// wherever the guard is dropped).
    runtime: tokio::runtime::Handle,
}

impl DrivenHere {
    /// Must be called inside a tokio runtime (it panics outside one).
    pub(super) fn new(id: ExecutionId, owner: impl Future<Output = ()> + Send + 'static) -> Self {
        Self { id, owner: Some(Box::pin(owner)), runtime: tokio::runtime::Handle::current() }
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
        let Some(owner) = self.owner.as_mut() else { return };
        match std::panic::catch_unwind(AssertUnwindSafe(|| owner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => {}
            Ok(Poll::Ready(())) => self.owner = None,
            Err(_) => {
                tracing::error!(execution = %self.id, "the execution's owner panicked");
                self.owner = None;
            }
        }
    }
}

impl Drop for DrivenHere {
    fn drop(&mut self) {
        // A runtime that is shutting down drops it at once, as it would
        // drop the owner's own task.
        if let Some(owner) = self.owner.take() {
            self.runtime.spawn(owner);
        }
    }
}

/// The error a waiter gets when the owner stopped without telling it.
pub(super) fn owner_stopped() -> EngineError {
    EngineError::Lost("the execution's owner stopped".into())
}
