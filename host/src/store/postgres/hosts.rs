//! Hosts, claims and leases in PostgreSQL: registration and heartbeats,
//! claims of one execution or of all due work (`FOR UPDATE SKIP LOCKED`),
//! release, takeover. Leases are judged by the database's clock.

use super::*;
use deadpool_postgres::Client;

pub(super) async fn register_host(client: &Client, host: &HostRecord) -> Result<(), StoreError> {
    client
        .execute(
            &client
                .prepare_cached(
                    "INSERT INTO hosts (id, node, pid, started_at, heartbeat_at, lease_ms, address)
             VALUES ($1, $2, $3, $4, stepwise_now_ms(), $5, $6)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = stepwise_now_ms(), lease_ms = $5, address = $6",
                )
                .await
                .map_err(backend)?,
            &[
                &host.id.0,
                &host.node,
                &(host.pid as i64),
                &(host.started_at.0 as i64),
                &(host.lease_ms as i64),
                &host.address,
            ],
        )
        .await
        .map_err(backend)?;
    Ok(())
}

pub(super) async fn heartbeat(client: &Client, host: &HostId) -> Result<(), StoreError> {
    client
        .execute(
            &client
                .prepare_cached("UPDATE hosts SET heartbeat_at = stepwise_now_ms() WHERE id = $1")
                .await
                .map_err(backend)?,
            &[&host.0],
        )
        .await
        .map_err(backend)?;
    Ok(())
}

pub(super) async fn deregister_host(client: &Client, host: &HostId) -> Result<(), StoreError> {
    client
        .execute(
            &client.prepare_cached("WITH released AS (UPDATE executions SET owner = NULL, fence = fence + 1 WHERE owner = $1 RETURNING 1)
             DELETE FROM hosts WHERE id = $1").await.map_err(backend)?,
            &[&host.0],
        )
        .await
        .map_err(backend)?;
    Ok(())
}

pub(super) async fn expire_host(client: &Client, host: &HostId) -> Result<(), StoreError> {
    client
        .execute(
            &client.prepare_cached("UPDATE hosts SET heartbeat_at = 0 WHERE id = $1").await.map_err(backend)?,
            &[&host.0],
        )
        .await
        .map_err(backend)?;
    Ok(())
}

pub(super) async fn hosts(client: &Client) -> Result<Vec<HostRecord>, StoreError> {
    let rows = client
        .query(
            &client
                .prepare_cached(
                    "SELECT id, node, pid, started_at, heartbeat_at, lease_ms, address,
                (SELECT COUNT(*) FROM executions WHERE owner = hosts.id)
             FROM hosts ORDER BY started_at",
                )
                .await
                .map_err(backend)?,
            &[],
        )
        .await
        .map_err(backend)?;
    Ok(rows
        .iter()
        .map(|row| HostRecord {
            id: HostId(row.get(0)),
            node: row.get(1),
            pid: row.get::<_, i64>(2) as u32,
            started_at: Timestamp(row.get::<_, i64>(3) as u64),
            heartbeat_at: Timestamp(row.get::<_, i64>(4) as u64),
            lease_ms: row.get::<_, i64>(5) as u64,
            address: row.get(6),
            owned: row.get::<_, i64>(7) as u64,
        })
        .collect())
}

pub(super) async fn claim(client: &Client, id: &ExecutionId, host: &HostId) -> Result<Claim, StoreError> {
    // Refused because a live host owns it; that host may let go before
    // the owner is read back, then the claim is tried again.
    for _ in 0..3 {
        match claim_once(client, id, host).await? {
            Claim::Held(owner) if owner.0.is_empty() => continue,
            claim => return Ok(claim),
        }
    }
    claim_once(client, id, host).await
}

pub(super) async fn claim_due(
    client: &Client,
    host: &HostId,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<DueClaim>, StoreError> {
    // Rows another host is claiming right now are skipped, not waited for:
    // hosts scanning at once take different executions.
    let rows = client
        .query(
            &client
                .prepare_cached(
                    "WITH due AS (
                SELECT e.id, e.owner AS previous FROM executions e
                WHERE e.id IN (
                    SELECT id FROM executions WHERE status IN ('running', 'compensating')
                    UNION
                    SELECT id FROM executions WHERE next_due <= $2 AND status IN ('running', 'waiting', 'compensating')
                    UNION
                    SELECT execution_id FROM inbox WHERE answer IS NULL
                )
                AND e.status IN ('running', 'waiting', 'compensating')
                AND (e.owner IS NULL
                     OR (e.owner <> $1 AND NOT EXISTS (SELECT 1 FROM hosts h WHERE h.id = e.owner
                                                       AND h.heartbeat_at + h.lease_ms > stepwise_now_ms())))
                ORDER BY e.created_at LIMIT $3
                FOR UPDATE SKIP LOCKED
             )
             UPDATE executions SET owner = $1, fence = executions.fence + 1
             FROM due WHERE executions.id = due.id
             RETURNING executions.id, executions.fence, due.previous IS NOT NULL AND due.previous <> $1",
                )
                .await
                .map_err(backend)?,
            &[&host.0, &(now.0 as i64), &(limit as i64)],
        )
        .await
        .map_err(backend)?;
    Ok(rows
        .iter()
        .map(|row| DueClaim {
            id: ExecutionId::new(row.get::<_, String>(0)),
            fence: row.get::<_, i64>(1) as Fence,
            takeover: row.get(2),
        })
        .collect())
}

pub(super) async fn release(client: &Client, id: &ExecutionId, fence: Fence) -> Result<(), StoreError> {
    client
        .execute(
            &client
                .prepare_cached("UPDATE executions SET owner = NULL WHERE id = $1 AND fence = $2")
                .await
                .map_err(backend)?,
            &[&id.as_str(), &(fence as i64)],
        )
        .await
        .map_err(backend)?;
    Ok(())
}

/// One claim attempt: granted, or who holds it (an empty id when nobody
/// does any more: the holder let go meanwhile).
async fn claim_once(client: &deadpool_postgres::Client, id: &ExecutionId, host: &HostId) -> Result<Claim, StoreError> {
    let claimed = client
        .query_opt(
            &client
                .prepare_cached(
                    "WITH current AS (SELECT owner FROM executions WHERE id = $1 FOR UPDATE)
             UPDATE executions e SET owner = $2, fence = e.fence + 1
             FROM current
             WHERE e.id = $1 AND (current.owner IS NULL OR current.owner = $2 OR NOT EXISTS
                (SELECT 1 FROM hosts h WHERE h.id = current.owner AND h.heartbeat_at + h.lease_ms > stepwise_now_ms()))
             RETURNING e.fence, current.owner",
                )
                .await
                .map_err(backend)?,
            &[&id.as_str(), &host.0],
        )
        .await
        .map_err(backend)?;
    if let Some(row) = claimed {
        let previous: Option<String> = row.get(1);
        let takeover = previous.is_some_and(|previous| previous != host.0);
        return Ok(Claim::Claimed { fence: row.get::<_, i64>(0) as Fence, takeover });
    }
    let owner = client
        .query_opt(
            &client.prepare_cached("SELECT owner FROM executions WHERE id = $1").await.map_err(backend)?,
            &[&id.as_str()],
        )
        .await;
    Ok(match owner.map_err(backend)? {
        None => Claim::NotFound,
        Some(row) => Claim::Held(HostId(row.get::<_, Option<String>>(0).unwrap_or_default())),
    })
}
