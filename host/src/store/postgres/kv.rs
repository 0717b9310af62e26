//! The kv capability's data in PostgreSQL (table `kv`), through the
//! blocking connection: guests call it synchronously from a host call.

use super::*;

impl KvStore for PostgresStore {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<String>, String> {
        let (namespace, key) = (namespace.to_string(), key.to_string());
        self.kv.run(move |client| async move {
            let row = client
                .query_opt("SELECT value FROM kv WHERE namespace = $1 AND key = $2", &[&namespace, &key])
                .await
                .map_err(|e| e.to_string())?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn set(&self, namespace: &str, key: &str, value: &str) -> Result<(), String> {
        let (namespace, key, value) = (namespace.to_string(), key.to_string(), value.to_string());
        self.kv.run(move |client| async move {
            client.batch_execute("BEGIN").await.map_err(|e| e.to_string())?;
            let written = async {
                // Serialises writers of one namespace, so the quota holds.
                client.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&namespace]).await?;
                let row = client
                    .query_one(
                        "SELECT COUNT(*), COUNT(*) FILTER (WHERE key = $2) FROM kv WHERE namespace = $1",
                        &[&namespace, &key],
                    )
                    .await?;
                Ok::<_, tokio_postgres::Error>((row.get::<_, i64>(0), row.get::<_, i64>(1)))
            }
            .await;
            let outcome = match written {
                Ok((entries, exists)) => match check_quota(&key, &value, entries as usize, exists == 0) {
                    Ok(()) => client
                        .execute(
                            "INSERT INTO kv (namespace, key, value) VALUES ($1, $2, $3)
                             ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                            &[&namespace, &key, &value],
                        )
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(refused) => Err(refused),
                },
                Err(error) => Err(error.to_string()),
            };
            let end = if outcome.is_ok() { "COMMIT" } else { "ROLLBACK" };
            client.batch_execute(end).await.map_err(|e| e.to_string())?;
            outcome
        })
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<bool, String> {
        let (namespace, key) = (namespace.to_string(), key.to_string());
        self.kv.run(move |client| async move {
            let rows = client
                .execute("DELETE FROM kv WHERE namespace = $1 AND key = $2", &[&namespace, &key])
                .await
                .map_err(|e| e.to_string())?;
            Ok(rows > 0)
        })
    }
}
