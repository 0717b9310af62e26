//! The executions this process drives now, each with its owner's mailbox.
//!
//! This table is what makes "one driver per execution" hold inside a
//! process: a message for an execution goes to the mailbox found here, and
//! only a message that finds no mailbox opens one (and the caller starts an
//! owner that claims the execution in the store, or drives it with the
//! claim a scan for due work made). An owner leaves the table
//! only while holding its lock with an empty mailbox, so no message is ever
//! left in a mailbox nobody reads. Across processes the store's claims do
//! the same job (see [`crate::store`]).

use super::owner::Message;
use crate::journal::ExecutionId;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::{mpsc, Notify};

/// The live executions of this process.
#[derive(Default)]
pub(crate) struct LiveTable {
    mailboxes: Mutex<HashMap<ExecutionId, mpsc::UnboundedSender<Message>>>,
    /// Told when the table goes from empty to occupied (see [`Self::occupied`]).
    first_opened: Notify,
}

impl LiveTable {
    /// Hands `message` to the execution's owner in this process; when there
    /// is none, opens a mailbox holding the message and returns it: the
    /// caller must start an owner with it.
    pub(crate) fn send_or_open(&self, id: &ExecutionId, message: Message) -> Option<mpsc::UnboundedReceiver<Message>> {
        let mut mailboxes = self.mailboxes.lock().expect("live table lock");
        let message = match mailboxes.get(id) {
            Some(mailbox) => match mailbox.send(message) {
                Ok(()) => return None,
                // Its owner is gone without leaving (it panicked): replace it.
                Err(mpsc::error::SendError(message)) => message,
            },
            None => message,
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        sender.send(message).expect("the receiver is here");
        self.insert(&mut mailboxes, id, sender);
        Some(receiver)
    }

    /// Hands `message` to the execution's owner in this process, or gives
    /// it back when the execution is not live here.
    pub(crate) fn send(&self, id: &ExecutionId, message: Message) -> Result<(), Message> {
        let mailboxes = self.mailboxes.lock().expect("live table lock");
        match mailboxes.get(id) {
            Some(mailbox) => mailbox.send(message).map_err(|mpsc::error::SendError(message)| message),
            None => Err(message),
        }
    }

    /// Opens the mailbox of an execution just created here.
    pub(crate) fn open(&self, id: &ExecutionId) -> mpsc::UnboundedReceiver<Message> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.insert(&mut self.mailboxes.lock().expect("live table lock"), id, sender);
        receiver
    }

    /// Adds a mailbox; the first one in an empty table wakes whoever waits
    /// in [`Self::occupied`].
    fn insert(
        &self,
        mailboxes: &mut HashMap<ExecutionId, mpsc::UnboundedSender<Message>>,
        id: &ExecutionId,
        sender: mpsc::UnboundedSender<Message>,
    ) {
        let was_empty = mailboxes.is_empty();
        mailboxes.insert(id.clone(), sender);
        if was_empty {
            self.first_opened.notify_waiters();
        }
    }

    /// Returns once at least one execution is live here (at once if one is).
    pub(crate) async fn occupied(&self) {
        loop {
            let opened = self.first_opened.notified();
            tokio::pin!(opened);
            // Registered before the check: a first mailbox opened between the
            // check and the wait still wakes this one.
            opened.as_mut().enable();
            if self.len() > 0 {
                return;
            }
            opened.await;
        }
    }

    /// Leaves the table if nothing arrived in `mailbox`; otherwise stays and
    /// returns what arrived.
    pub(crate) fn leave_or_take(
        &self,
        id: &ExecutionId,
        mailbox: &mut mpsc::UnboundedReceiver<Message>,
    ) -> Vec<Message> {
        let mut mailboxes = self.mailboxes.lock().expect("live table lock");
        let mut arrived = Vec::new();
        while let Ok(message) = mailbox.try_recv() {
            arrived.push(message);
        }
        if arrived.is_empty() {
            mailboxes.remove(id);
        }
        arrived
    }

    /// How many executions are live here.
    pub(crate) fn len(&self) -> usize {
        self.mailboxes.lock().expect("live table lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// Lets every other task of this (current-thread) runtime run until it waits.
    async fn let_others_run() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn occupied_waits_for_the_first_live_execution_and_returns_at_once_while_one_is() {
        let table = Arc::new(LiveTable::default());
        let waiter = tokio::spawn({
            let table = table.clone();
            async move { table.occupied().await }
        });
        let_others_run().await;
        assert!(!waiter.is_finished(), "nothing is live: the waiter sleeps");

        let id = ExecutionId::new("first".to_string());
        let mut mailbox = table.open(&id);
        tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("woken by the first mailbox").unwrap();
        tokio::time::timeout(Duration::from_secs(10), table.occupied()).await.expect("one is live: at once");

        // Empty again: the next wait sleeps until a mailbox opens.
        assert!(table.leave_or_take(&id, &mut mailbox).is_empty());
        let waiter = tokio::spawn({
            let table = table.clone();
            async move { table.occupied().await }
        });
        let_others_run().await;
        assert!(!waiter.is_finished(), "the table is empty again");
        let _second = table.open(&ExecutionId::new("second".to_string()));
        tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("woken again").unwrap();
    }
}
