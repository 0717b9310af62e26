//! Adopting an execution nobody drives in this process: claiming it in the
//! store, replaying its log, taking in what other processes posted for it,
//! and driving it with the messages that woke it; or, when another live
//! host owns it, handing those messages to that host's inbox.

use super::outside::Refusal;
use super::owner::{Message, Owner};
use super::{Engine, EngineError};
use crate::journal::ExecutionId;
use crate::store::Claim;
use tokio::sync::mpsc;

/// Becomes the owner of an execution nobody drives in this process: claims
/// it in the store, replays its log, takes in what others posted for it,
/// and drives it with the messages in `mailbox`. When another live host owns
/// it, the messages go to that host's inbox instead.
pub(super) async fn adopt(engine: Engine, id: ExecutionId, mailbox: mpsc::UnboundedReceiver<Message>) {
    let claim = match engine.shared.host.ensure_registered(&engine).await {
        Ok(()) => engine.shared.store.claim(&id, engine.shared.host.id()).await,
        Err(error) => Err(error),
    };
    let fence = match claim {
        Ok(Claim::Claimed { fence, takeover }) => {
            engine.shared.metrics.claims.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if takeover {
                engine.shared.metrics.takeovers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            fence
        }
        Ok(Claim::Held(_)) => return super::forward::all_to_owner_elsewhere(&engine, &id, mailbox).await,
        Ok(Claim::NotFound) => return refuse_all(&engine, &id, mailbox, EngineError::NotFound(id.clone())),
        Err(error) => return refuse_all(&engine, &id, mailbox, EngineError::Store(error)),
    };
    adopt_claimed(engine, id, fence, mailbox).await
}

/// Drives an execution this host claimed already (with `fence`, as
/// [`crate::store::ExecutionStore::claim_due`] does): replays its log, takes
/// in what others posted for it, and drives it with the messages in
/// `mailbox`.
pub(super) async fn adopt_claimed(
    engine: Engine,
    id: ExecutionId,
    fence: crate::store::Fence,
    mailbox: mpsc::UnboundedReceiver<Message>,
) {
    let replayed = match engine.replay(&id).await {
        Ok(replayed) => replayed,
        // What is stored cannot be read back: no retry helps.
        Err(error @ (EngineError::Unloadable(..) | EngineError::Workflow(_))) => {
            let error = engine.unloadable(&id, error).await;
            return refuse_all(&engine, &id, mailbox, error);
        }
        // The store failed for now: let go, so that the next event or the
        // scheduler (here or on another host) tries again.
        Err(error) => {
            release_after_failure(&engine, &id, fence);
            return refuse_all(&engine, &id, mailbox, error);
        }
    };
    let machine = replayed.machine;
    if !machine.is_started() {
        // Only a log written before creation and start were one write can lack its start.
        let reason = EngineError::Invalid("it was created but its start was never recorded".into());
        let error = engine.unloadable(&id, reason).await;
        return refuse_all(&engine, &id, mailbox, error);
    }
    let plugins = match engine.pinned_plugins(&machine).await {
        Ok(plugins) => plugins,
        Err(error) => {
            let reason = format!("its plugins cannot be loaded: {error}");
            let error = engine.unloadable(&id, EngineError::Invalid(reason)).await;
            return refuse_all(&engine, &id, mailbox, error);
        }
    };
    let posted = match engine.shared.store.inbox(engine.shared.host.id(), Some(&id)).await {
        Ok(messages) => messages.into_iter().filter_map(|message| super::forward::posted(&message)).collect(),
        Err(error) => {
            tracing::warn!(execution = %id, "reading the inbox: {error}");
            Vec::new()
        }
    };
    let outstanding = machine.outstanding_commands();
    let owner = Owner::new(engine, machine, plugins, (replayed.events, fence, replayed.status), mailbox);
    owner.run_adopted(outstanding, posted).await;
}

/// Lets go, in the background, of an execution this host claimed (with
/// `fence`) but stopped driving before it rested; tried again while the
/// store fails, for as long as the claim is this host's.
pub(super) fn release_after_failure(engine: &Engine, id: &ExecutionId, fence: crate::store::Fence) {
    let (store, id) = (engine.shared.store.clone(), id.clone());
    tokio::spawn(async move {
        for attempt in 1..=RELEASE_ATTEMPTS {
            match store.release(&id, fence).await {
                Ok(()) => return,
                Err(error) => tracing::warn!(execution = %id, attempt, "letting go after a failure: {error}"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
}

/// How often a release after a failure is tried (a second apart); past
/// that, the claim ends with this host's lease.
const RELEASE_ATTEMPTS: u32 = 60;

/// Answers every message queued for an execution this process cannot drive.
fn refuse_all(engine: &Engine, id: &ExecutionId, mut mailbox: mpsc::UnboundedReceiver<Message>, error: EngineError) {
    loop {
        let arrived = engine.shared.live.leave_or_take(id, &mut mailbox);
        if arrived.is_empty() {
            return;
        }
        for message in arrived {
            match message {
                Message::Outside { reply, .. } => {
                    let refusal = match &error {
                        EngineError::NotFound(_) => Refusal::NoSuchExecution(error.to_string()),
                        _ => Refusal::Unavailable(error.to_string()),
                    };
                    drop(reply.send(Err(refusal)));
                }
                Message::Wait { settled } => drop(settled.send(Err(EngineError::Lost(error.to_string())))),
                Message::Show { .. } | Message::Posted { .. } | Message::Adopt => {}
            }
        }
    }
}
