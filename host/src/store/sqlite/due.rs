//! The scan for work that needs a driver ([`crate::store::ExecutionStore::claim_due`]):
//! executions in flight that nobody live owns, timers due, messages posted
//! for executions at rest; selected and claimed in one transaction of the
//! writer thread.
//!
//! The scan reads only what it may claim. Executions in flight are found per
//! owner through `executions_in_flight` (status, owner, creation): those of
//! no owner, then those of each owner that is not live, each oldest first
//! and at most `limit`. The owners are enumerated from the owner index one
//! seek each, so a live host with thousands in flight costs one seek, not a
//! walk of its executions (this scan runs back to back while a dead host's
//! backlog is taken over, in the thread every write waits on).

use super::{backend, claim_row, now_ms};
use crate::store::{DueClaim, HostId, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashSet;
use std::path::Path;

/// Claims for `host` up to `limit` executions that need a driver at `now`
/// (timers due by then), oldest first.
pub(super) fn claim_due(
    db: &Connection,
    path: &Path,
    host: &HostId,
    now: i64,
    limit: usize,
) -> Result<Vec<DueClaim>, StoreError> {
    // The scan and the claims are one transaction: the fences read are current.
    let due = due(db, host, now, limit).map_err(|e| backend(path, e))?;
    let mut claimed = Vec::with_capacity(due.len());
    for Due { id, owner, fence, .. } in due {
        let fence = claim_row(db, &id, host, fence).map_err(|e| backend(path, e))?;
        let takeover = owner.is_some_and(|owner| owner != host.0);
        claimed.push(DueClaim { id: crate::journal::ExecutionId::new(id), fence, takeover });
    }
    Ok(claimed)
}

/// An execution that needs a driver.
struct Due {
    created_at: i64,
    id: String,
    owner: Option<String>,
    fence: i64,
}

/// What needs a driver, oldest first, at most `limit`.
fn due(db: &Connection, host: &HostId, now: i64, limit: usize) -> rusqlite::Result<Vec<Due>> {
    let mut found = Vec::new();
    let row = |row: &rusqlite::Row<'_>| {
        Ok(Due { id: row.get(0)?, created_at: row.get(1)?, owner: row.get(2)?, fence: row.get(3)? })
    };
    // In flight, unowned or owned by a host that is not live.
    let mut unowned = db.prepare_cached(UNOWNED)?;
    let mut owned_by = db.prepare_cached(OWNED_BY)?;
    // Leases are judged by the clock; `now` is when timers are due.
    let stale = stale_owners(db, host, now_ms())?;
    for status in ["running", "compensating"] {
        found.extend(unowned.query_map(params![status, limit as i64], row)?.collect::<rusqlite::Result<Vec<_>>>()?);
        for owner in &stale {
            let rows = owned_by.query_map(params![status, owner, limit as i64], row)?;
            found.extend(rows.collect::<rusqlite::Result<Vec<_>>>()?);
        }
    }
    // Timers due and messages posted, whoever held the execution: few rows,
    // filtered by owner here. The unary `+` keeps SQLite from reading the
    // status terms through `executions_in_flight`: it would walk every
    // execution in flight (11 ms at 20,000, in the thread every write waits
    // on) where the timer index and the inbox hold the few that are due.
    let mut waking = db.prepare_cached(WAKING)?;
    let claimable = |due: &Due| due.owner.as_ref().is_none_or(|owner| stale.contains(owner));
    for due in waking.query_map(params![now], row)? {
        let due = due?;
        if claimable(&due) {
            found.push(due);
        }
    }
    found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    found.dedup_by(|a, b| a.id == b.id);
    found.truncate(limit);
    Ok(found)
}

/// Executions in flight with status `?1` and no owner, oldest first, at
/// most `?2`. The `in_flight!()` term repeats the partial index's condition,
/// so that SQLite reads the index.
pub(super) const UNOWNED: &str = concat!(
    "SELECT id, created_at, owner, fence FROM executions WHERE ",
    in_flight!(),
    " AND status = ?1 AND owner IS NULL ORDER BY created_at LIMIT ?2"
);

/// Executions in flight with status `?1` owned by `?2`, oldest first, at
/// most `?3` (through the same index).
pub(super) const OWNED_BY: &str = concat!(
    "SELECT id, created_at, owner, fence FROM executions WHERE ",
    in_flight!(),
    " AND status = ?1 AND owner = ?2 ORDER BY created_at LIMIT ?3"
);

/// Executions whose timer is due by `?1`, and those with a message posted,
/// if they are still in flight.
pub(super) const WAKING: &str = "SELECT id, created_at, owner, fence FROM executions
  WHERE next_due <= ?1 AND +status IN ('running', 'waiting', 'compensating')
 UNION
 SELECT id, created_at, owner, fence FROM executions
  WHERE id IN (SELECT execution_id FROM inbox WHERE answer IS NULL)
    AND +status IN ('running', 'waiting', 'compensating')";

/// The owners of executions that are neither `host` nor live at `now`
/// (expired leases, and hosts that are gone from the table). The owner
/// index is walked one distinct owner at a time.
fn stale_owners(db: &Connection, host: &HostId, now: i64) -> rusqlite::Result<HashSet<String>> {
    let mut next = db.prepare_cached("SELECT min(owner) FROM executions WHERE owner > ?1")?;
    let mut live = db.prepare_cached("SELECT 1 FROM hosts WHERE id = ?1 AND heartbeat_at + lease_ms > ?2")?;
    let mut stale = HashSet::new();
    let mut after = String::new();
    while let Some(owner) = next.query_row(params![after], |row| row.get::<_, Option<String>>(0))? {
        if owner != host.0 && live.query_row(params![owner, now], |_| Ok(())).optional()?.is_none() {
            stale.insert(owner.clone());
        }
        after = owner;
    }
    Ok(stale)
}
