//! An execution store in memory: for tests and `--store memory`. Nothing
//! survives the process.

use super::{
    Created, ExecutionStore, ExecutionSummary, ListFilter, NewExecution, RecordedEvent, StoreError, StoredExecution,
};
use crate::engine::ExecutionStatus;
use crate::ids::ExecutionId;
use crate::time::Timestamp;
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Executions held in memory.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    executions: BTreeMap<ExecutionId, (StoredExecution, Timestamp)>,
    by_idempotency_key: HashMap<String, ExecutionId>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("memory store lock poisoned")
    }
}

#[async_trait]
impl ExecutionStore for MemoryStore {
    async fn create(&self, execution: NewExecution) -> Result<Created, StoreError> {
        let mut inner = self.lock();
        if let Some(key) = &execution.idempotency_key {
            if let Some(existing) = inner.by_idempotency_key.get(key) {
                return Ok(Created::Existing(existing.clone()));
            }
            inner.by_idempotency_key.insert(key.clone(), execution.id.clone());
        }
        let stored = StoredExecution {
            id: execution.id.clone(),
            workflow: execution.workflow.definition,
            input: execution.input,
            idempotency_key: execution.idempotency_key,
            tenant: execution.tenant,
            parent: execution.parent,
            status: ExecutionStatus::Running,
            created_at: execution.created_at,
            events: Vec::new(),
        };
        inner.executions.insert(execution.id, (stored, execution.created_at));
        Ok(Created::New)
    }

    async fn append(
        &self,
        id: &ExecutionId,
        seq: u64,
        events: Vec<RecordedEvent>,
        status: Option<(ExecutionStatus, Timestamp)>,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let (execution, updated_at) = inner.executions.get_mut(id).ok_or_else(|| StoreError::NotFound(id.clone()))?;
        if seq != execution.events.len() as u64 {
            return Err(StoreError::Conflict(id.clone(), seq));
        }
        execution.events.extend(events);
        if let Some((status, at)) = status {
            execution.status = status;
            *updated_at = at;
        }
        Ok(())
    }

    async fn set_status(&self, id: &ExecutionId, status: ExecutionStatus, at: Timestamp) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let (execution, updated_at) = inner.executions.get_mut(id).ok_or_else(|| StoreError::NotFound(id.clone()))?;
        execution.status = status;
        *updated_at = at;
        Ok(())
    }

    async fn load(&self, id: &ExecutionId) -> Result<Option<StoredExecution>, StoreError> {
        Ok(self.lock().executions.get(id).map(|(execution, _)| execution.clone()))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ExecutionSummary>, StoreError> {
        let inner = self.lock();
        let matching = inner
            .executions
            .values()
            .rev()
            .filter(|(e, _)| filter.before.as_ref().is_none_or(|before| &e.id < before))
            .filter(|(e, _)| filter.status.is_none_or(|status| e.status == status))
            .filter(|(e, _)| filter.workflow.as_ref().is_none_or(|name| &e.workflow.name == name))
            .map(|(e, updated_at)| ExecutionSummary {
                execution_id: e.id.clone(),
                workflow: e.workflow.name.clone(),
                status: e.status,
                created_at: e.created_at,
                updated_at: *updated_at,
            });
        Ok(matching.take(filter.limit.unwrap_or(usize::MAX)).collect())
    }

    async fn count_by_status(&self) -> Result<Vec<(ExecutionStatus, u64)>, StoreError> {
        let mut counts: std::collections::BTreeMap<&'static str, (ExecutionStatus, u64)> = Default::default();
        for (execution, _) in self.lock().executions.values() {
            counts.entry(execution.status.as_str()).or_insert((execution.status, 0)).1 += 1;
        }
        Ok(counts.into_values().collect())
    }

    async fn purge_finished_before(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let before = inner.executions.len();
        inner.executions.retain(|_, (e, updated_at)| !(e.status.is_final() && *updated_at < cutoff));
        let ids: std::collections::HashSet<ExecutionId> = inner.executions.keys().cloned().collect();
        inner.by_idempotency_key.retain(|_, id| ids.contains(id));
        Ok(before - inner.executions.len())
    }

    fn kv(self: std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn crate::sandbox::capabilities::kv::KvStore>> {
        None
    }

    async fn unfinished(&self) -> Result<Vec<ExecutionId>, StoreError> {
        Ok(self.lock().executions.values().filter(|(e, _)| !e.status.is_final()).map(|(e, _)| e.id.clone()).collect())
    }
}
