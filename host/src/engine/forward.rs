//! Messages for an execution another live host owns: posted to the store's
//! inbox, with a relay that waits for the owner's answer and gives it to the
//! caller. If the owner dies before answering, the relay adopts the
//! execution here (which drains the inbox, this message included), so an
//! accepted event is never lost with its owner.

use super::outside::{Answer, Outside, Refusal};
use super::owner::{Message, Settled};
use super::{Engine, EngineError};
use crate::journal::ExecutionId;
use crate::store::InboxMessage;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How often a relay looks for its answer when the store cannot notify
/// (SQLite), and how often at most when it can (PostgreSQL).
pub(crate) const POLL: Duration = Duration::from_millis(20);
const POLL_NOTIFIED: Duration = Duration::from_millis(250);

/// Waits until the store says an inbox message or an answer may have
/// arrived, or for the poll interval.
pub(crate) async fn pause(wakeups: Option<&tokio::sync::Notify>) {
    match wakeups {
        Some(wakeups) => {
            let _ = tokio::time::timeout(POLL_NOTIFIED, wakeups.notified()).await;
        }
        None => tokio::time::sleep(POLL).await,
    }
}

/// Sends a message to whoever owns the execution elsewhere.
pub(super) async fn to_owner_elsewhere(engine: &Engine, id: &ExecutionId, message: Message) {
    match message {
        Message::Outside { request, reply, settled } => {
            let text = serde_json::to_string(&request).expect("outside events serialize");
            match engine.shared.store.post(id, &text).await {
                Ok(number) => {
                    tokio::spawn(relay(engine.clone(), id.clone(), number, reply, settled));
                }
                Err(error) => drop(reply.send(Err(Refusal::Unavailable(error.to_string())))),
            }
        }
        Message::Show { reply } => {
            let engine = engine.clone();
            let id = id.clone();
            tokio::spawn(async move {
                if let Ok(view) = engine.read(&id).await {
                    let _ = reply.send(view);
                }
            });
        }
        Message::Wait { settled } => {
            tokio::spawn(wait_elsewhere(engine.clone(), id.clone(), settled));
        }
        // Posted messages are in the inbox already; an adoption that finds
        // a live owner has nothing to do.
        Message::Posted { .. } | Message::Adopt => {}
    }
}

/// Sends every message of a mailbox (which leaves the live table) to the
/// owner elsewhere.
pub(super) async fn all_to_owner_elsewhere(
    engine: &Engine,
    id: &ExecutionId,
    mut mailbox: mpsc::UnboundedReceiver<Message>,
) {
    loop {
        let arrived = engine.shared.live.leave_or_take(id, &mut mailbox);
        if arrived.is_empty() {
            return;
        }
        for message in arrived {
            to_owner_elsewhere(engine, id, message).await;
        }
    }
}

/// An inbox message as the owner's mailbox takes it.
pub(super) fn posted(message: &InboxMessage) -> Option<Message> {
    match serde_json::from_str::<Outside>(&message.message) {
        Ok(request) => Some(Message::Posted { message: message.id, request }),
        Err(error) => {
            tracing::warn!(execution = %message.execution_id, message = message.id, "unreadable inbox message: {error}");
            None
        }
    }
}

/// Every how many polls a relay checks whether the owner is still alive.
const ADOPT_EVERY: u32 = 25;

/// Waits for the owner's answer to a posted message.
async fn relay(
    engine: Engine,
    id: ExecutionId,
    number: i64,
    reply: oneshot::Sender<Result<Answer, Refusal>>,
    settled: Option<Settled>,
) {
    let mut polls = 0u32;
    let wakeups = engine.shared.store.wakeups();
    loop {
        pause(wakeups.as_deref()).await;
        match engine.shared.store.answer_of(number).await {
            Ok(Some(text)) => {
                let answer: Result<Answer, Refusal> = serde_json::from_str(&text)
                    .unwrap_or_else(|e| Err(Refusal::Unavailable(format!("unreadable answer: {e}"))));
                let accepted = answer.is_ok();
                let _ = reply.send(answer);
                if let (true, Some(settled)) = (accepted, settled) {
                    wait_elsewhere(engine, id, settled).await;
                }
                return;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(execution = %id, "waiting for an inbox answer: {error}"),
        }
        if reply.is_closed() {
            return; // nobody listens; the message stays for the owner
        }
        polls += 1;
        if polls.is_multiple_of(ADOPT_EVERY) {
            engine.route(&id, Message::Adopt);
        }
    }
}

/// Waits until an execution driven elsewhere rests, then reads it.
async fn wait_elsewhere(engine: Engine, id: ExecutionId, settled: Settled) {
    let mut polls = 0u32;
    loop {
        match engine.shared.store.status(&id).await {
            Ok(Some(status)) if status.is_final() || status == crate::journal::ExecutionStatus::Waiting => {
                let _ = settled.send(engine.read(&id).await.map(super::Rested::from));
                return;
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                let _ = settled.send(Err(EngineError::NotFound(id)));
                return;
            }
            Err(error) => tracing::warn!(execution = %id, "waiting for an execution: {error}"),
        }
        if settled.is_closed() {
            return;
        }
        polls += 1;
        if polls.is_multiple_of(ADOPT_EVERY) {
            engine.route(&id, Message::Adopt);
        }
        // Statuses change without a notification: plain polling.
        tokio::time::sleep(POLL).await;
    }
}
