//! The durable execution log: the events of every execution, in order.
//!
//! The engine writes each event here before acting on it; resuming an
//! execution is loading its events and replaying them through the state
//! machine. The trait is deliberately narrow (create, append, set status,
//! load, list) so that each backend is one file: SQLite (the embedded
//! default) and in memory (tests, `--store memory`). [`open`] picks a backend
//! from a URL (`memory`, `sqlite://PATH`).

mod memory;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

use crate::engine::{Event, ExecutionStatus};
use crate::ids::ExecutionId;
use crate::sandbox::capabilities::kv::KvStore;
use crate::time::Timestamp;
use crate::workflow::{DefinitionRecord, WorkflowDefinition};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

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
}

/// What [`ExecutionStore::create`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// The execution was recorded.
    New,
    /// An execution with the same idempotency key exists already.
    Existing(ExecutionId),
}

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    pub event: Event,
}

/// An execution as stored: its definition, input and event log.
#[derive(Clone, Debug)]
pub struct StoredExecution {
    /// Its id.
    pub id: ExecutionId,
    /// The definition it runs.
    pub workflow: Arc<WorkflowDefinition>,
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
}

/// One line of an execution listing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExecutionSummary {
    /// Its id.
    pub execution_id: ExecutionId,
    /// Workflow name.
    pub workflow: String,
    /// Last recorded status.
    pub status: ExecutionStatus,
    /// When it was created.
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub created_at: Timestamp,
    /// When its status last changed.
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub updated_at: Timestamp,
}

/// Which executions to list.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<ExecutionStatus>,
    /// Only this workflow.
    pub workflow: Option<String>,
    /// At most this many (newest first).
    pub limit: Option<usize>,
    /// Only executions older than this one (a page's cursor: the last execution of the previous page).
    pub before: Option<ExecutionId>,
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No execution with this id.
    #[error("no execution `{0}`")]
    NotFound(ExecutionId),
    /// Another driver appended this event number first: this one lost the execution.
    #[error("execution `{0}` was advanced by another process (event {1} exists)")]
    Conflict(ExecutionId, u64),
    /// The backend failed.
    #[error("execution store: {0}")]
    Backend(String),
}

/// Where executions are recorded.
#[async_trait]
pub trait ExecutionStore: Send + Sync {
    /// Records a new execution (or finds the one with the same idempotency key).
    async fn create(&self, execution: NewExecution) -> Result<Created, StoreError>;
    /// Appends `events`, numbered from `seq` (the log's first event is 0), to
    /// an execution's log, and records `status` when given: all or nothing,
    /// durable when it returns. Fails with [`StoreError::Conflict`] when `seq`
    /// exists (another driver advanced the execution).
    async fn append(
        &self,
        id: &ExecutionId,
        seq: u64,
        events: Vec<RecordedEvent>,
        status: Option<(ExecutionStatus, Timestamp)>,
    ) -> Result<(), StoreError>;
    /// Records the execution's status (for listing; the log stays the truth).
    async fn set_status(&self, id: &ExecutionId, status: ExecutionStatus, at: Timestamp) -> Result<(), StoreError>;
    /// Loads an execution with its events.
    async fn load(&self, id: &ExecutionId) -> Result<Option<StoredExecution>, StoreError>;
    /// Lists executions, newest first.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<ExecutionSummary>, StoreError>;
    /// Ids of the executions not in a final status, oldest first.
    async fn unfinished(&self) -> Result<Vec<ExecutionId>, StoreError>;
    /// How many executions have each status.
    async fn count_by_status(&self) -> Result<Vec<(ExecutionStatus, u64)>, StoreError>;
    /// Deletes finished executions last updated before `cutoff`; returns how many.
    async fn purge_finished_before(&self, cutoff: Timestamp) -> Result<usize, StoreError>;
    /// The store's kv backend, when it persists kv data itself.
    fn kv(self: Arc<Self>) -> Option<Arc<dyn KvStore>>;
}

/// Opens the store a URL names: `memory`, or `sqlite://PATH` (created if missing).
pub fn open(url: &str) -> Result<Arc<dyn ExecutionStore>, StoreError> {
    if url == "memory" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(StoreError::Backend("`sqlite://` needs a file path, e.g. sqlite://./stepwise.db".into()));
        }
        return Ok(Arc::new(SqliteStore::open(std::path::Path::new(path))?));
    }
    Err(StoreError::Backend(format!("unknown store URL `{url}` (expected `memory` or `sqlite://PATH`)")))
}
