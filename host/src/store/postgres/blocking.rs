//! A PostgreSQL connection for synchronous callers (the kv capability and
//! the demo services' ledger, called from inside a guest's host call): its
//! own thread and single-threaded runtime, so that a caller blocking on it
//! never waits for the async runtime whose worker it is blocking.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::Arc;
use tokio_postgres::{Client, NoTls};

/// A query job: given the connection, the future that runs it.
type Job = Box<dyn FnOnce(Arc<Client>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// One connection on a thread of its own; jobs run one at a time, in order.
pub struct BlockingPostgres {
    jobs: mpsc::Sender<Job>,
}

impl BlockingPostgres {
    /// Connects (on the new thread) to the database `config` names.
    pub fn connect(config: tokio_postgres::Config) -> Result<Self, String> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, connected) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("stepwise-postgres-sync".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => return drop(ready.send(Err(error.to_string()))),
                };
                let connect = || {
                    runtime.block_on(async {
                        let (client, connection) = config.connect(NoTls).await.map_err(|e| super::explained(&e))?;
                        tokio::spawn(connection);
                        Ok::<_, String>(Arc::new(client))
                    })
                };
                let mut client = match connect() {
                    Ok(client) => {
                        let _ = ready.send(Ok(()));
                        client
                    }
                    Err(error) => return drop(ready.send(Err(error))),
                };
                while let Ok(job) = queue.recv() {
                    // A connection the server closed (a restart) is opened
                    // again; if that fails, the job fails on the closed one.
                    if client.is_closed() {
                        match connect() {
                            Ok(fresh) => client = fresh,
                            Err(error) => tracing::warn!("reconnecting to PostgreSQL: {error}"),
                        }
                    }
                    runtime.block_on(job(client.clone()));
                }
            })
            .map_err(|e| e.to_string())?;
        connected.recv().map_err(|_| "the connection thread stopped".to_string())??;
        Ok(Self { jobs })
    }

    /// Runs a query on the connection and waits for its result.
    pub fn run<T, F>(&self, query: impl FnOnce(Arc<Client>) -> F + Send + 'static) -> Result<T, String>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, String>> + Send + 'static,
    {
        let (reply, result) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |client| {
            Box::pin(async move {
                let _ = reply.send(query(client).await);
            })
        });
        self.jobs.send(job).map_err(|_| "the connection thread stopped".to_string())?;
        result.recv().map_err(|_| "the connection thread stopped".to_string())?
    }
}
