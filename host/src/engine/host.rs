//! This process as a host of the store: its identity, its registration and
//! heartbeat (which keeps every claim it holds alive), the inbox poller that
//! routes events other processes posted for executions it owns, and the
//! reaper that ends the leases of hosts on this machine whose process is
//! gone (so a restart after a crash resumes at once instead of after the
//! lease). Safety never depends on the reaper: a host declared dead by
//! mistake is fenced off, it does not write twice.

use super::owner::Message;
use super::{Engine, Shared};
use crate::journal::{ExecutionId, Timestamp};
use crate::store::{HostId, HostRecord, StoreError};
use std::collections::HashSet;
use std::sync::{Mutex, Weak};
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

/// How long a host's claims hold after its last heartbeat, by default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// This process as a host.
pub(crate) struct Host {
    record: HostRecord,
    registered: OnceCell<()>,
    background: Mutex<Vec<JoinHandle<()>>>,
    /// When the last heartbeat was written (ms since the epoch).
    last_beat: std::sync::atomic::AtomicU64,
}

impl Host {
    /// A host identity for this process with claims that hold for `lease`.
    pub(crate) fn new(lease: Duration, address: Option<String>) -> Self {
        let now = Timestamp::now();
        std::sync::LazyLock::force(&FIRST_HOST_OF_THIS_PROCESS);
        let record = HostRecord {
            id: HostId(uuid::Uuid::now_v7().to_string()),
            node: node_id(),
            pid: std::process::id(),
            started_at: now,
            heartbeat_at: now,
            lease_ms: lease.as_millis() as u64,
            address,
            owned: 0,
        };
        let last_beat = std::sync::atomic::AtomicU64::new(now.0);
        Self { record, registered: OnceCell::new(), background: Mutex::new(Vec::new()), last_beat }
    }

    /// Its id.
    pub(crate) fn id(&self) -> &HostId {
        &self.record.id
    }

    /// Until when its claims hold, as of its last heartbeat.
    pub(crate) fn lease_until(&self) -> Timestamp {
        Timestamp(self.last_beat.load(std::sync::atomic::Ordering::Relaxed)).plus(self.lease())
    }

    /// How long its claims hold without a heartbeat.
    pub(crate) fn lease(&self) -> Duration {
        Duration::from_millis(self.record.lease_ms)
    }

    /// Registers the host in the store (once) and starts its heartbeat,
    /// inbox poller and reaper.
    pub(crate) async fn ensure_registered(&self, engine: &Engine) -> Result<(), StoreError> {
        self.registered
            .get_or_try_init(|| async {
                engine.shared.store.register_host(&self.record).await?;
                reap_local_dead_hosts(engine).await;
                let mut background = self.background.lock().expect("host lock");
                background.push(tokio::spawn(heartbeat(engine.downgrade())));
                background.push(tokio::spawn(poll_inbox(engine.downgrade())));
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Stops the host: its background work ends and the store forgets it,
    /// letting go of everything it owns.
    pub(crate) async fn stop(&self, engine: &Engine) {
        for task in self.background.lock().expect("host lock").drain(..) {
            task.abort();
        }
        if self.registered.initialized() {
            if let Err(error) = engine.shared.store.deregister_host(self.id()).await {
                tracing::warn!("deregistering host {}: {error}", self.id());
            }
        }
    }
}

impl Drop for Host {
    /// Background work ends with its host, even work asleep on something
    /// other than the engine (the inbox poller waits for a live execution).
    fn drop(&mut self) {
        let tasks = self.background.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        for task in tasks.drain(..) {
            task.abort();
        }
    }
}

/// The machine (its boot) and process namespace this process runs in: two
/// hosts with the same node id can see each other's processes.
fn node_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|id| id.trim().to_string());
    let namespace = std::fs::read_link("/proc/self/ns/pid").map(|link| link.to_string_lossy().into_owned());
    match (boot, namespace) {
        (Ok(boot), Ok(namespace)) => format!("{boot}/{namespace}"),
        // Without /proc, no other host can be sure this one is gone: only the lease tells.
        _ => format!("unknown-{}", uuid::Uuid::now_v7()),
    }
}

/// When this process made its first host identity. A host record of this
/// node with this process's pid that started before then belongs to an
/// earlier process whose pid was reused (it is gone); one that started
/// since belongs to this process (another engine here, alive).
static FIRST_HOST_OF_THIS_PROCESS: std::sync::LazyLock<Timestamp> = std::sync::LazyLock::new(Timestamp::now);

/// Whether the process that registered `host`, on this node, is gone.
fn process_gone(host: &HostRecord) -> bool {
    if host.pid == std::process::id() {
        host.started_at < *FIRST_HOST_OF_THIS_PROCESS
    } else {
        !process_exists(host.pid)
    }
}

/// Whether process `pid` of this node exists.
fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Renews the host's lease every quarter lease; now and then ends the leases
/// of local hosts whose process is gone.
async fn heartbeat(engine: Weak<Shared>) {
    let Some(period) = Engine::upgrade(&engine).map(|engine| engine.shared.host.lease() / 4) else { return };
    let mut beats: u64 = 0;
    loop {
        tokio::time::sleep(period).await;
        let Some(engine) = Engine::upgrade(&engine) else { return };
        let beat = Timestamp::now();
        match engine.shared.store.heartbeat(engine.shared.host.id()).await {
            Ok(()) => engine.shared.host.last_beat.store(beat.0, std::sync::atomic::Ordering::Relaxed),
            Err(error) => tracing::warn!("heartbeat of host {}: {error}", engine.shared.host.id()),
        }
        beats += 1;
        if beats.is_multiple_of(2) {
            reap_local_dead_hosts(&engine).await;
        }
    }
}

/// Ends the lease of every host of this node whose process is gone.
async fn reap_local_dead_hosts(engine: &Engine) {
    let Ok(hosts) = engine.shared.store.hosts().await else { return };
    let me = &engine.shared.host.record;
    let now = Timestamp::now();
    for host in hosts {
        let gone = host.node == me.node && host.id != me.id && host.is_live(now) && process_gone(&host);
        if gone {
            tracing::info!("host {} (pid {}) is gone: its executions can be taken over", host.id, host.pid);
            if let Err(error) = engine.shared.store.expire_host(&host.id).await {
                tracing::warn!("ending the lease of host {}: {error}", host.id);
            }
        }
    }
}

/// Routes messages other processes posted for executions this host owns
/// to their owners. Polls only while this process drives something: while
/// nothing is live it sleeps until something is (an idle host does not wake
/// for it at all).
async fn poll_inbox(engine: Weak<Shared>) {
    let mut routed: HashSet<i64> = HashSet::new();
    let wakeups = Engine::upgrade(&engine).and_then(|engine| engine.shared.store.wakeups());
    loop {
        super::forward::pause(wakeups.as_deref()).await;
        let Some(engine) = Engine::upgrade(&engine) else { return };
        if engine.shared.live.len() == 0 {
            routed.clear();
            // Asleep without holding the engine, whose host ends this task
            // when it is dropped.
            let live = engine.shared.live.clone();
            drop(engine);
            live.occupied().await;
            continue;
        }
        let messages = match engine.shared.store.inbox(engine.shared.host.id(), None).await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!("reading the inbox: {error}");
                continue;
            }
        };
        let open: HashSet<i64> = messages.iter().map(|message| message.id).collect();
        routed.retain(|id| open.contains(id));
        for message in messages {
            if !routed.insert(message.id) {
                continue;
            }
            let Some(posted) = super::forward::posted(&message) else { continue };
            deliver_posted(&engine, &message.execution_id, posted);
        }
    }
}

/// Hands a posted message to the execution's owner here; an execution that
/// rested meanwhile is adopted again, which drains its inbox.
fn deliver_posted(engine: &Engine, id: &ExecutionId, posted: Message) {
    if engine.shared.live.send(id, posted).is_err() {
        engine.route(id, Message::Adopt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{PluginDirectory, PluginRegistry};
    use crate::sandbox::{Limits, Sandbox};
    use crate::store::MemoryStore;
    use std::path::Path;
    use std::sync::Arc;

    /// Waits, a few milliseconds at a time and 10 s at most, until `done` holds.
    async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..2000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("not within 10 s: {what}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_engine_ends_its_inbox_poller_even_while_it_sleeps_for_a_live_execution() {
        let sandbox = Sandbox::new(Limits::default()).unwrap();
        let registry = Arc::new(PluginRegistry::new(sandbox, PluginDirectory::empty(Path::new("."))));
        let engine = Engine::new(registry, Arc::new(MemoryStore::new()));
        engine.register().await.unwrap();
        // Nothing is live: the poller sleeps holding the live table (and only that).
        let table = engine.shared.live.clone();
        // Held by the engine, here and by the poller.
        until("the poller asleep until an execution goes live", || Arc::strong_count(&table) == 3).await;
        let (live, shared) = (Arc::downgrade(&table), engine.downgrade());
        drop((table, engine));
        until("the engine dropped", || shared.upgrade().is_none()).await;
        until("the poller ended with its host", || live.upgrade().is_none()).await;
    }
}
