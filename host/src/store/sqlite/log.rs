//! The writes of an execution's log: its creation with its first events,
//! and the fenced append of later ones (refused unless the writer holds the
//! execution's current fence).

use super::{backend, now_ms};
use crate::journal::{ExecutionId, RecordedEvent};
use crate::store::{Append, Created, Fence, NewExecution, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

pub(super) fn create(db: &Connection, path: &Path, execution: &NewExecution) -> Result<Created, StoreError> {
    if let Some(key) = &execution.idempotency_key {
        let existing: Option<String> = db
            .query_row("SELECT id FROM executions WHERE idempotency_key = ?1", params![key], |row| row.get(0))
            .optional()
            .map_err(|e| backend(path, e))?;
        if let Some(existing) = existing {
            return Ok(Created::Existing(ExecutionId::new(existing)));
        }
    }
    let record = &execution.workflow;
    db.prepare_cached("INSERT OR IGNORE INTO definitions (hash, definition) VALUES (?1, ?2)")
        .and_then(|mut statement| statement.execute(params![record.hash.as_ref(), record.json.as_ref()]))
        .map_err(|e| backend(path, e))?;
    let definition = format!("@{}", record.hash);
    db.prepare_cached(
        "INSERT INTO executions
            (id, workflow, definition, input, idempotency_key, status, created_at, updated_at, tenant, parent_id,
             owner, fence, next_due)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10, 1, ?11)",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            execution.id.as_str(),
            record.definition.name,
            definition,
            execution.input.to_string(),
            execution.idempotency_key,
            execution.status.as_str(),
            execution.created_at.0 as i64,
            execution.tenant,
            execution.parent.as_ref().map(|p| p.as_str()),
            execution.owner.as_ref().map(|owner| owner.0.as_str()),
            execution.next_due.map(|due| due.0 as i64),
        ])
    })
    .map_err(|e| backend(path, e))?;
    insert_events(db, path, &execution.id, 0, &execution.events)?;
    Ok(Created::New(1))
}

/// Inserts events numbered from `seq`; a number taken already is a conflict.
fn insert_events(
    db: &Connection,
    path: &Path,
    id: &ExecutionId,
    seq: u64,
    events: &[RecordedEvent],
) -> Result<(), StoreError> {
    let mut insert = db
        .prepare_cached("INSERT INTO events (execution_id, seq, at, event) VALUES (?1, ?2, ?3, ?4)")
        .map_err(|e| backend(path, e))?;
    for (offset, event) in events.iter().enumerate() {
        let seq = seq + offset as u64;
        let text = serde_json::to_string(&event.event).map_err(|e| backend(path, e))?;
        match insert.execute(params![id.as_str(), seq as i64, event.at.0 as i64, text]) {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(error, _)) if error.code == rusqlite::ErrorCode::ConstraintViolation => {
                return Err(StoreError::Conflict(id.clone(), seq))
            }
            Err(error) => return Err(backend(path, error)),
        }
    }
    Ok(())
}

pub(super) fn append(db: &Connection, path: &Path, append: &Append) -> Result<(), StoreError> {
    let fence: Option<i64> = db
        .prepare_cached("SELECT fence FROM executions WHERE id = ?1")
        .and_then(|mut statement| statement.query_row(params![append.id.as_str()], |row| row.get(0)).optional())
        .map_err(|e| backend(path, e))?;
    match fence {
        None => return Err(StoreError::NotFound(append.id.clone())),
        Some(fence) if fence as Fence != append.fence => {
            return Err(StoreError::Fenced(append.id.clone(), append.fence))
        }
        Some(_) => {}
    }
    insert_events(db, path, &append.id, append.seq, &append.events)?;
    let (status, at) = match append.status {
        Some((status, at)) => (Some(status.as_str()), Some(at.0 as i64)),
        None => (None, None),
    };
    db.prepare_cached(
        "UPDATE executions SET status = COALESCE(?2, status), updated_at = COALESCE(?3, updated_at),
            next_due = ?4, owner = CASE WHEN ?5 THEN NULL ELSE owner END
         WHERE id = ?1",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            append.id.as_str(),
            status,
            at,
            append.next_due.map(|due| due.0 as i64),
            append.release
        ])
    })
    .map_err(|e| backend(path, e))?;
    if let Some(parent) = &append.wake {
        db.prepare_cached("UPDATE executions SET next_due = MIN(COALESCE(next_due, ?2), ?2) WHERE id = ?1")
            .and_then(|mut statement| statement.execute(params![parent.as_str(), now_ms()]))
            .map_err(|e| backend(path, e))?;
    }
    for (number, answer) in &append.answers {
        db.prepare_cached("UPDATE inbox SET answer = ?2, answered_at = ?3 WHERE id = ?1 AND answer IS NULL")
            .and_then(|mut statement| statement.execute(params![number, answer, now_ms()]))
            .map_err(|e| backend(path, e))?;
    }
    Ok(())
}
