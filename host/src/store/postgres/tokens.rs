//! The PostgreSQL store's API tokens (table `tokens`), shared by every host
//! of the store: a token created or revoked on one host holds on all.

use super::{backend, PostgresStore};
use crate::journal::Timestamp;
use crate::store::tokens::{TokenRecord, TokenStore};
use crate::store::StoreError;
use async_trait::async_trait;
use tokio_postgres::Row;

fn token_record(row: &Row) -> TokenRecord {
    TokenRecord {
        id: row.get(0),
        scope: row.get(1),
        label: row.get(2),
        secret_hash: row.get(3),
        created_at: Timestamp(row.get::<_, i64>(4) as u64),
        revoked_at: row.get::<_, Option<i64>>(5).map(|at| Timestamp(at as u64)),
    }
}

const COLUMNS: &str = "id, scope, label, secret_hash, created_at, revoked_at";

#[async_trait]
impl TokenStore for PostgresStore {
    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO tokens (id, scope, label, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
                &[&token.id, &token.scope, &token.label, &token.secret_hash, &(token.created_at.0 as i64)],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let client = self.client().await?;
        let statement =
            client.prepare_cached(&format!("SELECT {COLUMNS} FROM tokens WHERE id = $1")).await.map_err(backend)?;
        Ok(client.query_opt(&statement, &[&id]).await.map_err(backend)?.as_ref().map(token_record))
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(&format!("SELECT {COLUMNS} FROM tokens ORDER BY created_at, id"), &[])
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(token_record).collect())
    }

    async fn revoke_token(&self, id: &str, at: Timestamp) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let changed = client
            .execute("UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1", &[&id, &(at.0 as i64)])
            .await
            .map_err(backend)?;
        Ok(changed > 0)
    }
}
