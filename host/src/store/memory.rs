//! An execution store in memory: for tests, benchmarks and `--store
//! memory`. Nothing survives the process; hosts, claims and the inbox work
//! as in the durable stores, so the engine behaves the same on it.
//!
//! An execution's input and events are kept as JSON text, as the durable
//! stores keep them, and read back on a load: as values (maps of maps) they
//! took several times the memory, and a busy store spent a sixth of its
//! time having the kernel zero the fresh pages they filled.

use super::tokens::{TokenRecord, TokenStore};
use super::{
    Append, Claim, Created, DueClaim, ExecutionStore, ExecutionSummary, Fence, HostId, HostRecord, InboxMessage,
    ListFilter, NewExecution, Ownership, StoreError, StoredExecution,
};
use crate::journal::{EncodedEvent, ExecutionId, ExecutionStatus, Timestamp};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// Executions held in memory.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    executions: BTreeMap<ExecutionId, Row>,
    by_idempotency_key: HashMap<String, ExecutionId>,
    hosts: BTreeMap<HostId, HostRecord>,
    inbox: BTreeMap<i64, Posted>,
    next_message: i64,
    tokens: BTreeMap<String, TokenRecord>,
}

struct Row {
    /// The execution without its input and events (`Value::Null`, empty):
    /// those are `input` and `events`.
    execution: StoredExecution,
    input: Box<str>,
    events: Vec<EncodedEvent>,
    updated_at: Timestamp,
    owner: Option<HostId>,
    fence: u64,
    next_due: Option<Timestamp>,
    error: Option<String>,
}

struct Posted {
    execution_id: ExecutionId,
    message: String,
    answer: Option<String>,
}

impl Inner {
    fn live_host(&self, host: &HostId, now: Timestamp) -> Option<&HostRecord> {
        self.hosts.get(host).filter(|record| record.is_live(now))
    }

    /// The owner of a row while its lease holds.
    fn live_owner(&self, row: &Row, now: Timestamp) -> Option<Ownership> {
        let host = self.live_host(row.owner.as_ref()?, now)?;
        let lease_until = host.heartbeat_at.plus(Duration::from_millis(host.lease_ms));
        Some(Ownership { host: host.id.clone(), fence: row.fence, lease_until })
    }

    fn row(&mut self, id: &ExecutionId) -> Result<&mut Row, StoreError> {
        self.executions.get_mut(id).ok_or_else(|| StoreError::NotFound(id.clone()))
    }
}

fn as_text(value: &impl serde::Serialize) -> Result<Box<str>, StoreError> {
    serde_json::to_string(value)
        .map(String::into_boxed_str)
        .map_err(|e| StoreError::Backend(format!("memory store: cannot encode: {e}")))
}

fn from_text<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Backend(format!("memory store: cannot decode: {e}")))
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
        let input = as_text(&execution.input)?;
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
            definition_hash: None,
            input: serde_json::Value::Null,
            idempotency_key: execution.idempotency_key,
            tenant: execution.tenant,
            parent: execution.parent,
            status: execution.status,
            created_at: execution.created_at,
            events: Vec::new(),
            owner: None,
        };
        let row = Row {
            execution: stored,
            input,
            events: execution.events,
            updated_at: execution.created_at,
            owner: execution.owner,
            fence: 1,
            next_due: execution.next_due,
            error: None,
        };
        inner.executions.insert(execution.id, row);
        Ok(Created::New(1))
    }

    async fn append(&self, append: Append) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let row = inner.row(&append.id)?;
        if row.fence != append.fence {
            return Err(StoreError::Fenced(append.id, append.fence));
        }
        if append.seq != row.events.len() as u64 {
            return Err(StoreError::Conflict(append.id, append.seq));
        }
        row.events.extend(append.events);
        if let Some((status, at)) = append.status {
            row.execution.status = status;
            row.updated_at = at;
        }
        row.next_due = append.next_due;
        if append.release {
            row.owner = None;
        }
        if let Some(parent) = &append.wake {
            if let Ok(parent) = inner.row(parent) {
                let now = Timestamp::now();
                parent.next_due = Some(parent.next_due.map_or(now, |due| due.min(now)));
            }
        }
        for (number, answer) in append.answers {
            if let Some(posted) = inner.inbox.get_mut(&number) {
                posted.answer.get_or_insert(answer);
            }
        }
        Ok(())
    }

    async fn status(&self, id: &ExecutionId) -> Result<Option<ExecutionStatus>, StoreError> {
        Ok(self.lock().executions.get(id).map(|row| row.execution.status))
    }

    async fn load(&self, id: &ExecutionId) -> Result<Option<StoredExecution>, StoreError> {
        // The text is copied under the lock and decoded outside it.
        let (mut execution, input, events) = {
            let inner = self.lock();
            let Some(row) = inner.executions.get(id) else { return Ok(None) };
            let mut execution = row.execution.clone();
            execution.owner = inner.live_owner(row, Timestamp::now());
            (execution, row.input.clone(), row.events.clone())
        };
        execution.input = from_text(&input)?;
        execution.events = events.iter().map(EncodedEvent::decode).collect::<Result<_, _>>().map_err(|e| {
            StoreError::Backend(format!("memory store: cannot decode an event of {}: {e}", execution.id))
        })?;
        Ok(Some(execution))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ExecutionSummary>, StoreError> {
        let inner = self.lock();
        let matching = inner
            .executions
            .values()
            .rev()
            .map(|row| (&row.execution, row))
            .filter(|(e, _)| filter.before.as_ref().is_none_or(|before| &e.id < before))
            .filter(|(e, _)| filter.status.is_none_or(|status| e.status == status))
            .filter(|(e, _)| filter.workflow.as_ref().is_none_or(|name| &e.workflow.name == name))
            .filter(|(e, _)| filter.tenant.is_none() || e.tenant == filter.tenant)
            .map(|(e, row)| ExecutionSummary {
                execution_id: e.id.clone(),
                workflow: e.workflow.name.clone(),
                tenant: e.tenant.clone(),
                status: e.status,
                created_at: e.created_at,
                updated_at: row.updated_at,
                error: row.error.clone(),
            });
        Ok(matching.take(filter.limit.unwrap_or(usize::MAX)).collect())
    }

    async fn count_by_status(&self) -> Result<Vec<(ExecutionStatus, u64)>, StoreError> {
        let mut counts: BTreeMap<&'static str, (ExecutionStatus, u64)> = Default::default();
        for row in self.lock().executions.values() {
            let status = row.execution.status;
            counts.entry(status.as_str()).or_insert((status, 0)).1 += 1;
        }
        Ok(counts.into_values().collect())
    }

    async fn purge_finished_before(
        &self,
        cutoff: Timestamp,
        statuses: &[ExecutionStatus],
    ) -> Result<Vec<(ExecutionStatus, u64)>, StoreError> {
        let mut inner = self.lock();
        let mut purged: BTreeMap<&'static str, (ExecutionStatus, u64)> = BTreeMap::new();
        inner.executions.retain(|_, row| {
            let status = row.execution.status;
            let goes = status.is_final() && statuses.contains(&status) && row.updated_at < cutoff;
            if goes {
                purged.entry(status.as_str()).or_insert((status, 0)).1 += 1;
            }
            !goes
        });
        let Inner { executions, by_idempotency_key, inbox, .. } = &mut *inner;
        by_idempotency_key.retain(|_, id| executions.contains_key(id));
        inbox.retain(|_, posted| executions.contains_key(&posted.execution_id));
        Ok(purged.into_values().collect())
    }

    async fn mark_unloadable(&self, id: &ExecutionId, reason: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let row = inner.row(id)?;
        row.execution.status = ExecutionStatus::Failed;
        row.updated_at = Timestamp::now();
        row.error = Some(reason.to_string());
        row.owner = None;
        row.next_due = None;
        row.fence += 1;
        Ok(())
    }

    async fn unfinished(&self) -> Result<Vec<ExecutionId>, StoreError> {
        let inner = self.lock();
        let mut unfinished: Vec<&StoredExecution> =
            inner.executions.values().map(|row| &row.execution).filter(|e| !e.status.is_final()).collect();
        unfinished.sort_by_key(|e| e.created_at);
        Ok(unfinished.into_iter().map(|e| e.id.clone()).collect())
    }

    async fn register_host(&self, host: &HostRecord) -> Result<(), StoreError> {
        let mut record = host.clone();
        record.heartbeat_at = Timestamp::now();
        self.lock().hosts.insert(host.id.clone(), record);
        Ok(())
    }

    async fn heartbeat(&self, host: &HostId) -> Result<(), StoreError> {
        if let Some(record) = self.lock().hosts.get_mut(host) {
            record.heartbeat_at = Timestamp::now();
        }
        Ok(())
    }

    async fn deregister_host(&self, host: &HostId) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.hosts.remove(host);
        for row in inner.executions.values_mut().filter(|row| row.owner.as_ref() == Some(host)) {
            row.owner = None;
            row.fence += 1;
        }
        Ok(())
    }

    async fn expire_host(&self, host: &HostId) -> Result<(), StoreError> {
        if let Some(record) = self.lock().hosts.get_mut(host) {
            record.heartbeat_at = Timestamp(0);
        }
        Ok(())
    }

    async fn hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        let inner = self.lock();
        let mut hosts: Vec<HostRecord> = inner.hosts.values().cloned().collect();
        for host in &mut hosts {
            host.owned = inner.executions.values().filter(|row| row.owner.as_ref() == Some(&host.id)).count() as u64;
        }
        Ok(hosts)
    }

    async fn claim(&self, id: &ExecutionId, host: &HostId) -> Result<Claim, StoreError> {
        let mut inner = self.lock();
        let now = Timestamp::now();
        let Some(row) = inner.executions.get(id) else { return Ok(Claim::NotFound) };
        let held_by = row.owner.clone().filter(|owner| owner != host && inner.live_host(owner, now).is_some());
        if let Some(owner) = held_by {
            return Ok(Claim::Held(owner));
        }
        let row = inner.row(id)?;
        let takeover = row.owner.as_ref().is_some_and(|owner| owner != host);
        row.owner = Some(host.clone());
        row.fence += 1;
        Ok(Claim::Claimed { fence: row.fence, takeover })
    }

    async fn claim_due(&self, host: &HostId, now: Timestamp, limit: usize) -> Result<Vec<DueClaim>, StoreError> {
        let mut inner = self.lock();
        let posted_for: std::collections::HashSet<&ExecutionId> =
            inner.inbox.values().filter(|posted| posted.answer.is_none()).map(|posted| &posted.execution_id).collect();
        let mut due: Vec<(Timestamp, ExecutionId)> = inner
            .executions
            .values()
            .filter(|row| {
                let status = row.execution.status;
                let needs_driver = matches!(status, ExecutionStatus::Running | ExecutionStatus::Compensating)
                    || row.next_due.is_some_and(|due| due <= now)
                    || posted_for.contains(&row.execution.id);
                let unowned = match &row.owner {
                    None => true,
                    Some(owner) => owner != host && inner.live_host(owner, now).is_none(),
                };
                !status.is_final() && needs_driver && unowned
            })
            .map(|row| (row.execution.created_at, row.execution.id.clone()))
            .collect();
        due.sort();
        due.truncate(limit);
        let mut claimed = Vec::with_capacity(due.len());
        for (_, id) in due {
            let row = inner.row(&id)?;
            let takeover = row.owner.as_ref().is_some_and(|owner| owner != host);
            row.owner = Some(host.clone());
            row.fence += 1;
            claimed.push(DueClaim { id, fence: row.fence, takeover });
        }
        Ok(claimed)
    }

    async fn release(&self, id: &ExecutionId, fence: Fence) -> Result<(), StoreError> {
        if let Some(row) = self.lock().executions.get_mut(id).filter(|row| row.fence == fence) {
            row.owner = None;
        }
        Ok(())
    }

    async fn post(&self, id: &ExecutionId, message: &str) -> Result<i64, StoreError> {
        let mut inner = self.lock();
        if !inner.executions.contains_key(id) {
            return Err(StoreError::NotFound(id.clone()));
        }
        inner.next_message += 1;
        let number = inner.next_message;
        let posted = Posted { execution_id: id.clone(), message: message.to_string(), answer: None };
        inner.inbox.insert(number, posted);
        Ok(number)
    }

    async fn inbox(&self, host: &HostId, only: Option<&ExecutionId>) -> Result<Vec<InboxMessage>, StoreError> {
        let inner = self.lock();
        let owned_by_host =
            |id: &ExecutionId| inner.executions.get(id).is_some_and(|row| row.owner.as_ref() == Some(host));
        Ok(inner
            .inbox
            .iter()
            .filter(|(_, posted)| posted.answer.is_none())
            .filter(|(_, posted)| only.is_none_or(|only| &posted.execution_id == only))
            .filter(|(_, posted)| owned_by_host(&posted.execution_id))
            .map(|(number, posted)| InboxMessage {
                id: *number,
                execution_id: posted.execution_id.clone(),
                message: posted.message.clone(),
            })
            .collect())
    }

    async fn answer(&self, message: i64, answer: &str) -> Result<(), StoreError> {
        if let Some(posted) = self.lock().inbox.get_mut(&message) {
            posted.answer.get_or_insert_with(|| answer.to_string());
        }
        Ok(())
    }

    async fn answer_of(&self, message: i64) -> Result<Option<String>, StoreError> {
        Ok(self.lock().inbox.get(&message).and_then(|posted| posted.answer.clone()))
    }

    fn kv(self: std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn super::kv::KvStore>> {
        None
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.tokens.contains_key(&token.id) {
            return Err(StoreError::Backend(format!("a token with id `{}` exists", token.id)));
        }
        inner.tokens.insert(token.id.clone(), token.clone());
        Ok(())
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.lock().tokens.get(id).cloned())
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let mut tokens: Vec<TokenRecord> = self.lock().tokens.values().cloned().collect();
        tokens.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(tokens)
    }

    async fn revoke_token(&self, id: &str, at: Timestamp) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(token) = inner.tokens.get_mut(id) else { return Ok(false) };
        token.revoked_at.get_or_insert(at);
        Ok(true)
    }
}
