//! `LISTEN` on its own connection: a message posted to the inbox or an
//! answer given there (`NOTIFY stepwise_inbox` / `stepwise_answers`) wakes
//! this host's pollers at once. Polling stays the fallback: a dropped
//! connection is reopened after a pause, and a missed notification only
//! costs the poll interval.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};

/// How often a listener with nothing to hear checks that its store is still there.
const STORE_CHECK: Duration = Duration::from_secs(1);

/// Starts the listener task; it ends with the store (when `wakeups` is the last handle).
pub(super) fn spawn(config: tokio_postgres::Config, wakeups: Arc<Notify>) {
    let wakeups = Arc::downgrade(&wakeups);
    tokio::spawn(async move {
        loop {
            if wakeups.strong_count() == 0 {
                return;
            }
            match config.connect(NoTls).await {
                Ok((client, mut connection)) => {
                    let driver = tokio::spawn(async move {
                        let mut listening =
                            std::pin::pin!(client.batch_execute("LISTEN stepwise_inbox; LISTEN stepwise_answers"));
                        let _ = (&mut listening).await;
                        // Keep the client alive while the connection runs.
                        std::future::pending::<()>().await;
                    });
                    loop {
                        let message = tokio::select! {
                            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => message,
                            // Ends with the store even when nothing is notified.
                            () = tokio::time::sleep(STORE_CHECK) => match wakeups.strong_count() {
                                0 => break,
                                _ => continue,
                            },
                        };
                        match message {
                            Some(Ok(AsyncMessage::Notification(_))) => match wakeups.upgrade() {
                                Some(wakeups) => wakeups.notify_waiters(),
                                None => break,
                            },
                            Some(Ok(_)) => {}
                            Some(Err(error)) => {
                                if wakeups.strong_count() > 0 {
                                    tracing::warn!("postgres listener: {error}");
                                }
                                break;
                            }
                            None => break,
                        }
                    }
                    driver.abort();
                }
                Err(error) if wakeups.strong_count() > 0 => tracing::warn!("postgres listener: connecting: {error}"),
                Err(_) => return,
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}
