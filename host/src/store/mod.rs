//! Where executions are persisted: the durable execution log, who owns each
//! execution, the inbox of events for executions owned elsewhere, and the
//! index of due timers.
//!
//! The engine writes each event here before acting on it; resuming an
//! execution is loading its events and replaying them through the state
//! machine. Ownership makes one driver per execution hold across processes
//! and hosts: a host *claims* an execution (a fencing number that grows with
//! every claim), its lease lives as long as the host's heartbeat, and every
//! append names the fencing number it holds, so a host that lost its claim
//! (paused, partitioned, declared dead) can never write again for it. An
//! event for an execution another live host owns is *posted* to the inbox,
//! which the owner drains and answers.
//!
//! The trait is narrow so that each backend is one file: SQLite (the
//! embedded default) and in memory (tests, `--store memory`), all held to
//! one conformance suite ([`conformance`]). [`open`] picks a backend from a
//! URL. This module knows the log's vocabulary ([`crate::journal`]) and the
//! stored definitions, never the engine that interprets them.

pub(crate) mod by_hash;
pub mod conformance;
pub mod kv;
mod memory;
mod postgres;
mod sqlite;
pub mod tokens;

pub use memory::MemoryStore;
pub use postgres::{BlockingPostgres, PostgresStore};
pub use sqlite::SqliteStore;

use crate::journal::{EncodedEvent, ExecutionId, ExecutionStatus, RecordedEvent, Timestamp};
use crate::workflow::{DefinitionRecord, WorkflowDefinition};
use async_trait::async_trait;
use kv::KvStore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokens::TokenStore;

/// The id of one host: a process that drives executions of a store.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HostId(pub String);

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fencing number of a claim: every claim of an execution gets a larger
/// one, and an append naming an older one is refused.
pub type Fence = u64;

/// An execution about to start.
#[derive(Clone, Debug)]
pub struct NewExecution {
    /// Its id.
    pub id: ExecutionId,
    /// The definition it runs (stored so that a resumed execution runs the same one).
    pub workflow: DefinitionRecord,
    /// Its input.
    pub input: Value,
    /// A caller-chosen key: a second start with the same key returns the first execution.
    pub idempotency_key: Option<String>,
    /// The tenant it runs for.
    pub tenant: Option<String>,
    /// The execution that runs it as a workflow step.
    pub parent: Option<ExecutionId>,
    /// When it was created.
    pub created_at: Timestamp,
    /// The host that creates it owns it from the start (none: it rests from
    /// the start, over or waiting for the outside world).
    pub owner: Option<HostId>,
    /// Its first events (its start and what follows at once), written with it.
    pub events: Vec<EncodedEvent>,
    /// Its status after those events.
    pub status: ExecutionStatus,
    /// When its earliest timer falls due.
    pub next_due: Option<Timestamp>,
}

/// What [`ExecutionStore::create`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// The execution was recorded, owned by its creator with this fence.
    New(Fence),
    /// An execution with the same idempotency key exists already.
    Existing(ExecutionId),
}

/// Events (and maybe a new status) for one execution, written together by its owner.
#[derive(Clone, Debug)]
pub struct Append {
    /// The execution.
    pub id: ExecutionId,
    /// The fence of the owner's claim.
    pub fence: Fence,
    /// The number of the first event (the log's first event is 0).
    pub seq: u64,
    /// The events.
    pub events: Vec<EncodedEvent>,
    /// The status when it changed, and since when.
    pub status: Option<(ExecutionStatus, Timestamp)>,
    /// When the execution's earliest armed timer falls due (none: no timer).
    pub next_due: Option<Timestamp>,
    /// Whether the owner lets go of the execution with this write (it is
    /// over, or waits for the outside world with nothing in flight).
    pub release: bool,
    /// An execution to wake in the same write (a parent whose child is
    /// over): its timer index is made due now, so that it is looked at even
    /// if this process dies before telling it.
    pub wake: Option<ExecutionId>,
    /// Inbox messages this write answers (number, answer as JSON), written
    /// with the events or not at all: a message whose event is recorded is
    /// answered by the same write, so no later owner takes it in again.
    /// The first answer of a message stands.
    pub answers: Vec<(i64, String)>,
}

/// Who owns an execution now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ownership {
    /// The owning host.
    pub host: HostId,
    /// The fence of its claim.
    pub fence: Fence,
    /// Until when its lease holds without a new heartbeat.
    #[serde(serialize_with = "crate::journal::time::rfc3339")]
    pub lease_until: Timestamp,
}

/// An execution as stored: its definition, input and event log.
#[derive(Clone, Debug)]
pub struct StoredExecution {
    /// Its id.
    pub id: ExecutionId,
    /// The definition it runs.
    pub workflow: Arc<WorkflowDefinition>,
    /// The hash the definition is stored under, when the store keeps each
    /// definition once (the same hash, the same definition).
    pub definition_hash: Option<String>,
    /// Its input.
    pub input: Value,
    /// Its idempotency key.
    pub idempotency_key: Option<String>,
    /// The tenant it runs for.
    pub tenant: Option<String>,
    /// The execution that runs it as a workflow step.
    pub parent: Option<ExecutionId>,
    /// Its last recorded status.
    pub status: ExecutionStatus,
    /// When it was created.
    pub created_at: Timestamp,
    /// Its events, in order.
    pub events: Vec<RecordedEvent>,
    /// Who owns it, when a live host does.
    pub owner: Option<Ownership>,
}

/// One line of an execution listing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExecutionSummary {
    /// Its id.
    pub execution_id: ExecutionId,
    /// Workflow name.
    pub workflow: String,
    /// The tenant it runs for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Last recorded status.
    pub status: ExecutionStatus,
    /// When it was created.
    #[serde(serialize_with = "crate::journal::time::rfc3339")]
    pub created_at: Timestamp,
    /// When its status last changed.
    #[serde(serialize_with = "crate::journal::time::rfc3339")]
    pub updated_at: Timestamp,
    /// Why it was marked failed without a log to say it (it could not be loaded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Which executions to list.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<ExecutionStatus>,
    /// Only this workflow.
    pub workflow: Option<String>,
    /// Only executions of this tenant.
    pub tenant: Option<String>,
    /// At most this many (newest first).
    pub limit: Option<usize>,
    /// Only executions older than this one (a page's cursor: the last execution of the previous page).
    pub before: Option<ExecutionId>,
}

impl ListFilter {
    /// The SQL of this listing, newest first: only the filters given become
    /// conditions (`? IS NULL OR status = ?` would hide every index from the
    /// planner, and a status no execution has would read them all). The
    /// values are the conditions' text in placeholder order; the page size is
    /// the placeholder after them. `placeholder(n)` spells the n-th one.
    pub(crate) fn sql(&self, placeholder: impl Fn(usize) -> String) -> (String, Vec<String>) {
        let mut conditions = Vec::new();
        let mut values = Vec::new();
        let given = [
            ("status =", self.status.map(|status| status.as_str().to_string())),
            ("workflow =", self.workflow.clone()),
            ("tenant =", self.tenant.clone()),
            ("id <", self.before.as_ref().map(|id| id.as_str().to_string())),
        ];
        for (condition, value) in given {
            if let Some(value) = value {
                values.push(value);
                conditions.push(format!("{condition} {}", placeholder(values.len())));
            }
        }
        let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
        let sql = format!(
            "SELECT id, workflow, status, created_at, updated_at, error, tenant FROM executions {filter}
             ORDER BY id DESC LIMIT {}",
            placeholder(values.len() + 1)
        );
        (sql, values)
    }
}

/// A host as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostRecord {
    /// Its id.
    pub id: HostId,
    /// The machine (boot) and process namespace it runs in: hosts of the same
    /// node can tell whether each other's process is alive.
    pub node: String,
    /// Its process id on that node.
    pub pid: u32,
    /// When it registered.
    #[serde(serialize_with = "crate::journal::time::rfc3339")]
    pub started_at: Timestamp,
    /// Its last heartbeat.
    #[serde(serialize_with = "crate::journal::time::rfc3339")]
    pub heartbeat_at: Timestamp,
    /// How long its claims hold after a heartbeat, in milliseconds.
    pub lease_ms: u64,
    /// Where it serves HTTP, if it does.
    pub address: Option<String>,
    /// How many executions it owns now.
    pub owned: u64,
}

impl HostRecord {
    /// Whether its lease holds at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.heartbeat_at.plus(Duration::from_millis(self.lease_ms)) > now
    }
}

/// An execution `claim_due` claimed; `takeover` when another host owned it
/// (its lease had expired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueClaim {
    pub id: ExecutionId,
    /// The fence this claim set: the owner's appends carry it.
    pub fence: Fence,
    pub takeover: bool,
}

/// What [`ExecutionStore::claim`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The caller owns the execution now, with this fence; `takeover` when
    /// another host held it and its lease had expired.
    Claimed {
        /// The new fence.
        fence: Fence,
        /// Whether a dead host's claim was taken over.
        takeover: bool,
    },
    /// Another live host owns it.
    Held(HostId),
    /// No such execution.
    NotFound,
}

/// An event posted for an execution another host owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxMessage {
    /// Its number (increasing).
    pub id: i64,
    /// The execution it is for.
    pub execution_id: ExecutionId,
    /// The message, as JSON (the engine's `Outside`).
    pub message: String,
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No execution with this id.
    #[error("no execution `{0}`")]
    NotFound(ExecutionId),
    /// The appending host no longer holds the execution: another claimed it.
    #[error("execution `{0}` is owned by another host now (fence {1} is stale)")]
    Fenced(ExecutionId, Fence),
    /// An event with this number exists: two writers with one fence (a bug).
    #[error("execution `{0}` already has event {1}")]
    Conflict(ExecutionId, u64),
    /// What is stored for the execution cannot be read back (a corrupted
    /// event, definition or input): retrying does not help.
    #[error("execution `{0}`: {1}")]
    Corrupt(ExecutionId, String),
    /// The backend failed.
    #[error("execution store: {0}")]
    Backend(String),
}

/// Where executions are recorded. Every implementation passes [`conformance`].
#[async_trait]
pub trait ExecutionStore: TokenStore + Send + Sync {
    /// Records a new execution owned by its creator (or finds the one with
    /// the same idempotency key).
    async fn create(&self, execution: NewExecution) -> Result<Created, StoreError>;
    /// Appends events (numbered from `seq`), all or nothing, durable when it
    /// returns; refused with [`StoreError::Fenced`] unless `fence` is the
    /// execution's current one.
    async fn append(&self, append: Append) -> Result<(), StoreError>;
    /// An execution's last recorded status, if it exists.
    async fn status(&self, id: &ExecutionId) -> Result<Option<ExecutionStatus>, StoreError>;
    /// Loads an execution with its events.
    async fn load(&self, id: &ExecutionId) -> Result<Option<StoredExecution>, StoreError>;
    /// Lists executions, newest first.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<ExecutionSummary>, StoreError>;
    /// Ids of the executions not in a final status, oldest first.
    async fn unfinished(&self) -> Result<Vec<ExecutionId>, StoreError>;
    /// How many executions have each status.
    async fn count_by_status(&self) -> Result<Vec<(ExecutionStatus, u64)>, StoreError>;
    /// Deletes the executions in one of `statuses` last updated before
    /// `cutoff`, final statuses only (an unfinished execution is never
    /// deleted, whatever is asked); returns how many of each status went.
    async fn purge_finished_before(
        &self,
        cutoff: Timestamp,
        statuses: &[ExecutionStatus],
    ) -> Result<Vec<(ExecutionStatus, u64)>, StoreError>;
    /// Marks an execution that cannot be loaded `failed`, with the reason,
    /// and lets go of it, so that it blocks nothing.
    async fn mark_unloadable(&self, id: &ExecutionId, reason: &str) -> Result<(), StoreError>;

    /// Registers (or re-registers) a host; its lease starts now.
    async fn register_host(&self, host: &HostRecord) -> Result<(), StoreError>;
    /// Renews every claim of `host` at once.
    async fn heartbeat(&self, host: &HostId) -> Result<(), StoreError>;
    /// Removes a host that stops, letting go of everything it owns; their
    /// fences move on, so a write the host still makes for them is refused.
    async fn deregister_host(&self, host: &HostId) -> Result<(), StoreError>;
    /// Ends a host's lease now (its process is known to be gone).
    async fn expire_host(&self, host: &HostId) -> Result<(), StoreError>;
    /// Every registered host, with how many executions each owns.
    async fn hosts(&self) -> Result<Vec<HostRecord>, StoreError>;
    /// Claims an execution for `host`: granted when nobody owns it, `host`
    /// itself does, or its owner's lease expired.
    async fn claim(&self, id: &ExecutionId, host: &HostId) -> Result<Claim, StoreError>;
    /// Lets go of an execution whose claim still has `fence` (its owner
    /// stopped without resting it: a failed write, a failed load), so that
    /// any host can claim it at once; a stale fence changes nothing.
    async fn release(&self, id: &ExecutionId, fence: Fence) -> Result<(), StoreError>;
    /// Claims for `host` up to `limit` executions that need a driver and have
    /// no live owner (unfinished ones with work in flight, those whose
    /// earliest timer is due by `now`, and those with unanswered inbox
    /// messages), oldest first, and returns them. Executions `host` owns
    /// itself are not claimed again (they are live here, or being released).
    /// Hosts claiming at once get different executions.
    async fn claim_due(&self, host: &HostId, now: Timestamp, limit: usize) -> Result<Vec<DueClaim>, StoreError>;

    /// Posts a message for an execution's owner; returns its number.
    async fn post(&self, id: &ExecutionId, message: &str) -> Result<i64, StoreError>;
    /// Unanswered messages for executions `host` owns (or for `only` one
    /// execution), oldest first.
    async fn inbox(&self, host: &HostId, only: Option<&ExecutionId>) -> Result<Vec<InboxMessage>, StoreError>;
    /// Answers a message (JSON); the first answer stands.
    async fn answer(&self, message: i64, answer: &str) -> Result<(), StoreError>;
    /// A message's answer, once given.
    async fn answer_of(&self, message: i64) -> Result<Option<String>, StoreError>;

    /// The store's kv backend, when it persists kv data itself.
    fn kv(self: Arc<Self>) -> Option<Arc<dyn KvStore>>;

    /// Notified when an inbox message or an answer may have arrived, when
    /// the backend can tell (PostgreSQL's `NOTIFY`); without it, waiters poll.
    fn wakeups(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
}

/// What a purge deletes by default: executions that ended well or were
/// rolled back cleanly. `failed` ones (a compensation that kept failing)
/// need an operator and stay unless asked for.
pub const PURGED_BY_DEFAULT: [ExecutionStatus; 2] = [ExecutionStatus::Succeeded, ExecutionStatus::Compensated];

/// A purge report as one line: `3 succeeded, 1 compensated` (or `nothing`).
pub fn describe_purge(purged: &[(ExecutionStatus, u64)]) -> String {
    if purged.is_empty() {
        return "nothing".to_string();
    }
    purged.iter().map(|(status, count)| format!("{count} {}", status.as_str())).collect::<Vec<_>>().join(", ")
}

/// Opens the store a URL names: `memory`, `sqlite://PATH` (created if
/// missing) or `postgres://USER@HOST:PORT/DATABASE` (shared by several hosts).
pub async fn open(url: &str) -> Result<Arc<dyn ExecutionStore>, StoreError> {
    if url == "memory" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(StoreError::Backend("`sqlite://` needs a file path, e.g. sqlite://./stepwise.db".into()));
        }
        return Ok(Arc::new(SqliteStore::open(std::path::Path::new(path))?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PostgresStore::open(url).await?));
    }
    Err(StoreError::Backend(format!(
        "unknown store URL `{url}` (expected `memory`, `sqlite://PATH` or `postgres://...`)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_store_conforms() {
        conformance::run(|| async { Arc::new(MemoryStore::new()) as Arc<dyn ExecutionStore> }).await;
    }

    #[tokio::test]
    async fn the_sqlite_store_conforms() {
        let dir = std::env::temp_dir().join(format!("stepwise-conformance-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let opened = std::sync::atomic::AtomicUsize::new(0);
        conformance::run(|| {
            let path = dir.join(format!("{}.db", opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
            async move { Arc::new(SqliteStore::open(&path).expect("opening")) as Arc<dyn ExecutionStore> }
        })
        .await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Runs when `STEPWISE_TEST_POSTGRES` names a server (`scripts/test.sh`
    /// starts one with `scripts/postgres.sh`); each check gets a fresh database.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_postgres_store_conforms() {
        let Ok(url) = std::env::var("STEPWISE_TEST_POSTGRES") else {
            eprintln!("STEPWISE_TEST_POSTGRES is not set: the PostgreSQL store is not checked");
            return;
        };
        let opened = std::sync::atomic::AtomicUsize::new(0);
        conformance::run(|| {
            let name = format!(
                "conformance_{}_{}",
                std::process::id(),
                opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let url = url.clone();
            async move {
                let url = PostgresStore::create_database(&url, &name).await.expect("creating a database");
                Arc::new(PostgresStore::open(&url).await.expect("opening")) as Arc<dyn ExecutionStore>
            }
        })
        .await;
    }

    /// Hosts started together migrate one empty database at once: every one
    /// of them opens it, and the schema is applied once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_hosts_opening_an_empty_database_together_all_open_it() {
        let Ok(url) = std::env::var("STEPWISE_TEST_POSTGRES") else {
            eprintln!("STEPWISE_TEST_POSTGRES is not set: the PostgreSQL store is not checked");
            return;
        };
        for round in 0..8 {
            let name = format!("migrate_together_{}_{round}", std::process::id());
            let url = PostgresStore::create_database(&url, &name).await.expect("creating a database");
            let opening: Vec<_> = (0..6)
                .map(|_| {
                    let url = url.clone();
                    tokio::spawn(async move { PostgresStore::open(&url).await.map(drop) })
                })
                .collect();
            for host in opening {
                host.await.unwrap().unwrap_or_else(|e| panic!("round {round}: a host failed to open: {e}"));
            }
        }
    }
}
