//! Adopting an execution nobody drives in this process: claiming it in the
//! store (unless a scan for due work claimed it already), replaying its log,
//! taking in what other processes posted for it, and driving it with the
//! messages that woke it; or, when another live host owns it, handing those
//! messages to that host's inbox.

use super::outside::Refusal;
use super::owner::{Message, Owner};
use super::{Engine, EngineError, Replayed};
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
    drive(engine, id, fence, replayed, mailbox).await
}

/// Drives an execution this host claimed already, with `fence` (as
/// [`crate::store::ExecutionStore::claim_due`] does), without claiming it
/// again. That claim may have been overtaken before this runs (this host
/// claimed it again and drove it to rest, or another host took it over while
/// this one's lease had lapsed): then, and when its log cannot be replayed,
/// adoption starts over with a claim of its own ([`adopt`]), which finds
/// the live owner, or marks the execution failed only while it holds it.
pub(super) async fn adopt_claimed(
    engine: Engine,
    id: ExecutionId,
    fence: crate::store::Fence,
    mailbox: mpsc::UnboundedReceiver<Message>,
) {
    match engine.replay(&id).await {
        Ok(replayed) if is_owned_with(&replayed, engine.shared.host.id(), fence) => {
            drive(engine, id, fence, replayed, mailbox).await
        }
        _ => adopt(engine, id, mailbox).await,
    }
}

/// Whether the replayed execution's live owner is `host`, with `fence`.
fn is_owned_with(replayed: &Replayed, host: &crate::store::HostId, fence: crate::store::Fence) -> bool {
    replayed.owner.as_ref().is_some_and(|owner| &owner.host == host && owner.fence == fence)
}

/// Drives a replayed execution this host holds with `fence`: loads its
/// pinned plugins, takes in what others posted for it, and runs its owner.
async fn drive(
    engine: Engine,
    id: ExecutionId,
    fence: crate::store::Fence,
    replayed: Replayed,
    mailbox: mpsc::UnboundedReceiver<Message>,
) {
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
