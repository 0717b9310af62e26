//! The inbox in PostgreSQL: messages posted for an execution's owner,
//! answered once; posting and answering `NOTIFY` the other hosts.

use super::*;
use deadpool_postgres::Client;

pub(super) async fn post(client: &Client, id: &ExecutionId, message: &str) -> Result<i64, StoreError> {
    let posted = client
        .query_one(
            &client
                .prepare_cached(
                    "WITH posted AS (
                INSERT INTO inbox (execution_id, message, posted_at) VALUES ($1, $2, stepwise_now_ms())
                RETURNING id
             )
             SELECT id, pg_notify('stepwise_inbox', $1) FROM posted",
                )
                .await
                .map_err(backend)?,
            &[&id.as_str(), &message],
        )
        .await;
    match posted {
        Ok(row) => Ok(row.get(0)),
        Err(error) if is(&error, &SqlState::FOREIGN_KEY_VIOLATION) => Err(StoreError::NotFound(id.clone())),
        Err(error) => Err(backend(error)),
    }
}

pub(super) async fn inbox(
    client: &Client,
    host: &HostId,
    only: Option<&ExecutionId>,
) -> Result<Vec<InboxMessage>, StoreError> {
    // One statement per case: a generic plan for `$2 IS NULL OR
    // execution_id = $2` walks every execution the host owns even for one.
    let rows = match only {
        Some(id) => {
            let statement = client
                .prepare_cached(
                    "SELECT i.id, i.execution_id, i.message FROM inbox i JOIN executions e ON e.id = i.execution_id
                     WHERE i.answer IS NULL AND i.execution_id = $2 AND e.owner = $1
                     ORDER BY i.id",
                )
                .await
                .map_err(backend)?;
            client.query(&statement, &[&host.0, &id.as_str()]).await
        }
        None => {
            let statement = client
                .prepare_cached(
                    "SELECT i.id, i.execution_id, i.message FROM inbox i JOIN executions e ON e.id = i.execution_id
                     WHERE i.answer IS NULL AND e.owner = $1
                     ORDER BY i.id",
                )
                .await
                .map_err(backend)?;
            client.query(&statement, &[&host.0]).await
        }
    }
    .map_err(backend)?;
    Ok(rows
        .iter()
        .map(|row| InboxMessage {
            id: row.get(0),
            execution_id: ExecutionId::new(row.get::<_, String>(1)),
            message: row.get(2),
        })
        .collect())
}

pub(super) async fn answer(client: &Client, message: i64, answer: &str) -> Result<(), StoreError> {
    client
        .execute(
            &client
                .prepare_cached(
                    "WITH answered AS (
                UPDATE inbox SET answer = $2, answered_at = stepwise_now_ms() WHERE id = $1 AND answer IS NULL
                RETURNING id
             )
             SELECT pg_notify('stepwise_answers', id::text) FROM answered",
                )
                .await
                .map_err(backend)?,
            &[&message, &answer],
        )
        .await
        .map_err(backend)?;
    Ok(())
}

pub(super) async fn answer_of(client: &Client, message: i64) -> Result<Option<String>, StoreError> {
    let row = client
        .query_opt(
            &client.prepare_cached("SELECT answer FROM inbox WHERE id = $1").await.map_err(backend)?,
            &[&message],
        )
        .await
        .map_err(backend)?;
    Ok(row.and_then(|row| row.get(0)))
}
