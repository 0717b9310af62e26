//! The writes of an execution's log: its creation with its first events,
//! and the fenced append of later ones (refused unless the writer holds the
//! execution's current fence).
//!
//! Events come encoded ([`crate::journal::EncodedEvent`]) and the input's
//! JSON is made by the caller, on an engine worker: the one writer thread
//! only writes rows.

use super::{backend, now_ms};
use crate::journal::{EncodedEvent, ExecutionId};
use crate::store::{Append, Created, NewExecution, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

/// A new execution's row, owned under fence 1.
pub(super) const INSERT_EXECUTION: &str = "INSERT INTO executions
    (id, workflow, definition, input, idempotency_key, status, created_at, updated_at, tenant, parent_id,
     owner, fence, next_due)
 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10, 1, ?11)";

/// Wakes a parent: its timer is due now, unless it is due sooner.
pub(super) const WAKE_PARENT: &str = "UPDATE executions SET next_due = MIN(COALESCE(next_due, ?2), ?2) WHERE id = ?1";

pub(super) fn create(
    db: &Connection,
    path: &Path,
    execution: &NewExecution,
    input: &str,
) -> Result<Created, StoreError> {
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
    db.prepare_cached(INSERT_EXECUTION)
        .and_then(|mut statement| {
            statement.execute(params![
                execution.id.as_str(),
                record.definition.name,
                definition,
                input,
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
    events: &[EncodedEvent],
) -> Result<(), StoreError> {
    let mut insert = db
        .prepare_cached("INSERT INTO events (execution_id, seq, at, event) VALUES (?1, ?2, ?3, ?4)")
        .map_err(|e| backend(path, e))?;
    for (offset, event) in events.iter().enumerate() {
        let seq = seq + offset as u64;
        match insert.execute(params![id.as_str(), seq as i64, event.at.0 as i64, &*event.json]) {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(error, _)) if error.code == rusqlite::ErrorCode::ConstraintViolation => {
                return Err(StoreError::Conflict(id.clone(), seq))
            }
            Err(error) => return Err(backend(path, error)),
        }
    }
    Ok(())
}

/// The execution row's update for an append, by (status changes, owner
/// released): only the columns that change are written, so an index on a
/// column that does not change is left alone, and a row with nothing to
/// change is not written at all (its page stays out of the commit). No row
/// updated: nothing changed, or the writer does not hold the current fence.
pub(super) const UPDATES: [&str; 4] = [
    "UPDATE executions SET next_due = ?4 WHERE id = ?1 AND fence = ?5 AND next_due IS NOT ?4",
    "UPDATE executions SET next_due = ?4, owner = NULL WHERE id = ?1 AND fence = ?5",
    "UPDATE executions SET status = ?2, updated_at = ?3, next_due = ?4 WHERE id = ?1 AND fence = ?5",
    "UPDATE executions SET status = ?2, updated_at = ?3, next_due = ?4, owner = NULL WHERE id = ?1 AND fence = ?5",
];

pub(super) fn append(db: &Connection, path: &Path, append: &Append) -> Result<(), StoreError> {
    let (status, at) = match append.status {
        Some((status, at)) => (Some(status.as_str()), Some(at.0 as i64)),
        None => (None, None),
    };
    let update = UPDATES[usize::from(status.is_some()) * 2 + usize::from(append.release)];
    let updated = db
        .prepare_cached(update)
        .and_then(|mut statement| {
            statement.execute(params![
                append.id.as_str(),
                status,
                at,
                append.next_due.map(|due| due.0 as i64),
                append.fence as i64
            ])
        })
        .map_err(|e| backend(path, e))?;
    if updated == 0 {
        // Nothing to change, or refused: the execution is unknown, or another
        // owner fenced this one out.
        let fence: Option<i64> = db
            .prepare_cached("SELECT fence FROM executions WHERE id = ?1")
            .and_then(|mut statement| statement.query_row(params![append.id.as_str()], |row| row.get(0)).optional())
            .map_err(|e| backend(path, e))?;
        match fence {
            None => return Err(StoreError::NotFound(append.id.clone())),
            Some(fence) if fence != append.fence as i64 => {
                return Err(StoreError::Fenced(append.id.clone(), append.fence))
            }
            Some(_) => {}
        }
    }
    // A number taken already refuses the whole append; the writer undoes
    // the update above with it (the transaction's rollback for a write
    // alone, else its savepoint when it runs the batch again).
    insert_events(db, path, &append.id, append.seq, &append.events)?;
    if let Some(parent) = &append.wake {
        db.prepare_cached(WAKE_PARENT)
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
