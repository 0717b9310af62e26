//! Host services: named Rust objects that plugins granted `services` can call
//! (`services.call("inventory", "reserve", json)`), Stepwise's answer to
//! Medusa's `container.resolve("inventoryService")`.
//!
//! A host registers its services in a [`ServiceRegistry`]; the `services`
//! capability checks the plugin's grant and dispatches. The demo services
//! ([`demo`]) are in memory and inspectable, so tests can count side effects.

pub mod demo;
pub mod ledger;

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Who is calling a service: for idempotency and audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The calling plugin.
    pub plugin: String,
    /// The execution the call belongs to.
    pub execution_id: String,
    /// The step the call belongs to.
    pub step_id: String,
    /// The step's idempotency key (the same across retries).
    pub idempotency_key: String,
    /// The tenant the execution runs for, if any.
    pub tenant: Option<String>,
    /// When the step's deadline passes: the call is abandoned then (the
    /// step attempt fails `deadline_exceeded`), so a service that waits on
    /// something should give up by this moment.
    pub deadline: std::time::Instant,
}

/// A service plugins can call by name.
pub trait Service: Send + Sync {
    /// Runs `method` with `input`; an error is a message returned to the guest.
    fn call(&self, method: &str, input: Value, caller: &Caller) -> Result<Value, String>;

    /// Whether a call may block its thread (on a disk, a database, a
    /// network): such calls run [`Service::call`] on a blocking thread,
    /// where the step's deadline can abandon them, never on a tokio worker.
    /// A service that answers from memory, or whose only wait is for
    /// another thread (which [`Started::finish`] awaits), says `false` and
    /// is [`Service::start`]ed in the guest's task.
    fn may_block(&self) -> bool {
        true
    }

    /// Runs `method` up to its wait, without blocking: called only when
    /// [`Service::may_block`] says `false`.
    fn start(&self, method: &str, input: Value, caller: &Caller) -> Started {
        Started::answered(self.call(method, input, caller))
    }
}

/// A call [`Service::start`]ed: its answer, given once what it waits for is over.
pub struct Started {
    output: Result<Value, String>,
    durable: ledger::Recording,
}

impl Started {
    /// A call answered at once.
    pub fn answered(output: Result<Value, String>) -> Self {
        Self { output, durable: ledger::Recording::done(Ok(())) }
    }

    /// A call whose answer `output` is given once `durable` is.
    pub fn once_durable(output: Result<Value, String>, durable: ledger::Recording) -> Self {
        Self { output, durable }
    }

    /// Waits, blocking the thread, and answers.
    pub fn wait(self) -> Result<Value, String> {
        self.durable.wait()?;
        self.output
    }

    /// Waits, without blocking the thread, and answers.
    pub async fn finish(self) -> Result<Value, String> {
        self.durable.durable().await?;
        self.output
    }
}

/// The services a host offers, by name.
#[derive(Clone, Default)]
pub struct ServiceRegistry {
    services: BTreeMap<String, Arc<dyn Service>>,
}

impl ServiceRegistry {
    /// No services.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `service` under `name`, replacing any previous one.
    pub fn register(&mut self, name: &str, service: Arc<dyn Service>) -> &mut Self {
        self.services.insert(name.to_string(), service);
        self
    }

    /// The service called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Service>> {
        self.services.get(name)
    }

    /// Names of the registered services.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(String::as_str)
    }
}

impl std::fmt::Debug for ServiceRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.services.keys()).finish()
    }
}
