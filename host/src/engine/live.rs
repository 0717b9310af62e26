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
use tokio::sync::mpsc;

/// The live executions of this process.
#[derive(Default)]
pub(crate) struct LiveTable {
    mailboxes: Mutex<HashMap<ExecutionId, mpsc::UnboundedSender<Message>>>,
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
        mailboxes.insert(id.clone(), sender);
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
        self.mailboxes.lock().expect("live table lock").insert(id.clone(), sender);
        receiver
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
