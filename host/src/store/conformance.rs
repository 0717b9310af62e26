//! One conformance suite every store passes (as Restate's `bifrost` tests
//! every log provider with one suite): create, append, fencing, claims,
//! lease expiry, the inbox, the timer index, kv, purge, tenant listings and
//! API tokens, with the same
//! test bodies for memory, SQLite and PostgreSQL. A new store is a file plus
//! one line that calls [`run`] with a way to open a fresh, empty instance.
//!
//! The checks use real clocks only for lease expiry (a lease of tens of
//! milliseconds, waited out with margin), never for ordering.

use super::{
    Append, Claim, Created, DueClaim, ExecutionStore, HostId, HostRecord, ListFilter, NewExecution, StoreError,
};
use crate::journal::{EncodedEvent, Event, ExecutionId, ExecutionStatus, RecordedEvent, Timestamp};
use crate::workflow::{DefinitionRecord, WorkflowDefinition};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Runs every check, each on a fresh store from `open`; panics on the first
/// failure, naming the check.
pub async fn run<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn ExecutionStore>>,
{
    creates_loads_and_finds_by_idempotency_key(open().await).await;
    appends_in_order_and_refuses_a_taken_number(open().await).await;
    an_append_with_a_stale_fence_is_refused(open().await).await;
    claims_are_held_by_live_hosts_and_taken_over_after_the_lease(open().await).await;
    a_released_execution_is_claimed_without_a_takeover(open().await).await;
    due_work_without_a_live_owner_is_claimed_once(open().await).await;
    waking_a_parent_makes_it_due_now(open().await).await;
    the_inbox_holds_messages_for_the_owner_and_keeps_the_first_answer(open().await).await;
    hosts_are_listed_with_what_they_own_and_deregistering_releases(open().await).await;
    a_release_with_the_current_fence_lets_go_and_a_stale_one_does_nothing(open().await).await;
    a_host_does_not_claim_its_own_executions_even_when_its_lease_lapsed(open().await).await;
    due_work_is_claimed_oldest_first_across_owners_and_never_from_a_live_one(open().await).await;
    a_message_posted_for_an_execution_at_rest_makes_it_due(open().await).await;
    answers_are_written_with_the_events_or_not_at_all(open().await).await;
    an_unloadable_execution_is_marked_failed_and_fenced(open().await).await;
    purge_deletes_only_finished_executions_before_the_cutoff(open().await).await;
    kv_keeps_namespaces_apart_within_quotas(open().await).await;
    lists_filter_by_tenant(open().await).await;
    lists_every_combination_of_filters_newest_first(open().await).await;
    tokens_are_kept_by_id_and_revoked_once(open().await).await;
}

fn definition() -> DefinitionRecord {
    let definition: WorkflowDefinition =
        serde_json::from_value(serde_json::json!({"name": "conformance", "steps": []})).expect("a definition");
    DefinitionRecord::new(Arc::new(definition))
}

fn host(name: &str, lease: Duration) -> HostRecord {
    HostRecord {
        id: HostId(format!("host-{name}")),
        node: "conformance".into(),
        pid: 0,
        started_at: Timestamp::now(),
        heartbeat_at: Timestamp::now(),
        lease_ms: lease.as_millis() as u64,
        address: None,
        owned: 0,
    }
}

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(50);

async fn create(store: &dyn ExecutionStore, id: &str, owner: &HostId, key: Option<&str>) -> Created {
    create_for(store, id, owner, key, Some("acme")).await
}

async fn create_for(
    store: &dyn ExecutionStore,
    id: &str,
    owner: &HostId,
    key: Option<&str>,
    tenant: Option<&str>,
) -> Created {
    store
        .create(NewExecution {
            id: ExecutionId::new(id),
            workflow: definition(),
            input: serde_json::json!({"n": 1}),
            idempotency_key: key.map(str::to_string),
            tenant: tenant.map(str::to_string),
            parent: None,
            created_at: Timestamp::now(),
            owner: Some(owner.clone()),
            events: Vec::new(),
            status: ExecutionStatus::Running,
            next_due: None,
        })
        .await
        .expect("create")
}

/// Two registered hosts, `a` and `b`, with these leases.
async fn two_hosts(store: &dyn ExecutionStore, a: Duration, b: Duration) -> (HostRecord, HostRecord) {
    let (a, b) = (host("a", a), host("b", b));
    store.register_host(&a).await.unwrap();
    store.register_host(&b).await.unwrap();
    (a, b)
}

/// An execution created by `owner` that then waits with nothing in flight
/// (released: nobody owns it).
async fn create_resting(store: &dyn ExecutionStore, id: &str, owner: &HostId) {
    create(store, id, owner, None).await;
    let mut rest = append(id, 1, 0, vec![event("waits")]);
    rest.status = Some((ExecutionStatus::Waiting, Timestamp::now()));
    rest.release = true;
    store.append(rest).await.unwrap();
}

fn event(reason: &str) -> RecordedEvent {
    RecordedEvent { at: Timestamp::now(), event: Event::RollbackRequested { reason: reason.into() } }
}

fn append(id: &str, fence: u64, seq: u64, events: Vec<RecordedEvent>) -> Append {
    Append {
        id: ExecutionId::new(id),
        fence,
        seq,
        events: events.iter().map(EncodedEvent::from).collect(),
        status: None,
        next_due: None,
        release: false,
        wake: None,
        answers: Vec::new(),
    }
}

async fn creates_loads_and_finds_by_idempotency_key(store: Arc<dyn ExecutionStore>) {
    let a = host("a", LONG);
    store.register_host(&a).await.unwrap();
    assert_eq!(create(&*store, "e1", &a.id, Some("key")).await, Created::New(1));
    assert_eq!(create(&*store, "e2", &a.id, Some("key")).await, Created::Existing(ExecutionId::new("e1")));
    let loaded = store.load(&ExecutionId::new("e1")).await.unwrap().expect("e1 exists");
    assert_eq!(loaded.input, serde_json::json!({"n": 1}));
    assert_eq!(loaded.tenant.as_deref(), Some("acme"));
    assert_eq!(loaded.status, ExecutionStatus::Running);
    assert_eq!(loaded.owner.expect("owned by its creator").host, a.id);
    assert_eq!(store.status(&ExecutionId::new("e1")).await.unwrap(), Some(ExecutionStatus::Running));
    assert!(store.load(&ExecutionId::new("e2")).await.unwrap().is_none());
    assert_eq!(store.status(&ExecutionId::new("e2")).await.unwrap(), None);
}

async fn appends_in_order_and_refuses_a_taken_number(store: Arc<dyn ExecutionStore>) {
    let a = host("a", LONG);
    store.register_host(&a).await.unwrap();
    create(&*store, "e1", &a.id, None).await;
    store.append(append("e1", 1, 0, vec![event("0"), event("1")])).await.unwrap();
    let mut second = append("e1", 1, 2, vec![event("2")]);
    second.status = Some((ExecutionStatus::Waiting, Timestamp(42)));
    store.append(second).await.unwrap();
    let loaded = store.load(&ExecutionId::new("e1")).await.unwrap().unwrap();
    let reasons: Vec<String> = loaded
        .events
        .iter()
        .map(|e| match &e.event {
            Event::RollbackRequested { reason } => reason.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(reasons, ["0", "1", "2"]);
    assert_eq!(loaded.status, ExecutionStatus::Waiting);
    let listed = store.list(&ListFilter::default()).await.unwrap();
    assert_eq!(listed[0].updated_at, Timestamp(42));
    // A number taken already: refused, and nothing of it is written (not
    // its events, nor the status and due time it carries).
    let mut taken = append("e1", 1, 1, vec![event("x"), event("y")]);
    taken.status = Some((ExecutionStatus::Failed, Timestamp(43)));
    taken.next_due = Some(Timestamp(1));
    let refused = store.append(taken).await;
    assert!(matches!(refused, Err(StoreError::Conflict(_, 1))), "{refused:?}");
    let loaded = store.load(&ExecutionId::new("e1")).await.unwrap().unwrap();
    assert_eq!((loaded.events.len(), loaded.status), (3, ExecutionStatus::Waiting));
    assert_eq!(store.list(&ListFilter::default()).await.unwrap()[0].updated_at, Timestamp(42));
    // An append that changes nothing of the row (no status, no timer) is
    // written all the same.
    store.append(append("e1", 1, 3, vec![event("3")])).await.unwrap();
    assert_eq!(store.load(&ExecutionId::new("e1")).await.unwrap().unwrap().events.len(), 4);
    let missing = store.append(append("nope", 1, 0, vec![event("0")])).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))), "{missing:?}");
}

async fn an_append_with_a_stale_fence_is_refused(store: Arc<dyn ExecutionStore>) {
    let (a, b) = two_hosts(&*store, SHORT, LONG).await;
    create(&*store, "e1", &a.id, None).await;
    store.append(append("e1", 1, 0, vec![event("a")])).await.unwrap();
    tokio::time::sleep(SHORT * 3).await;
    let claim = store.claim(&ExecutionId::new("e1"), &b.id).await.unwrap();
    assert_eq!(claim, Claim::Claimed { fence: 2, takeover: true });
    // The paused host comes back: every write of its old claim is refused.
    store.heartbeat(&a.id).await.unwrap();
    let late = store.append(append("e1", 1, 1, vec![event("late")])).await;
    assert!(matches!(late, Err(StoreError::Fenced(_, 1))), "{late:?}");
    store.append(append("e1", 2, 1, vec![event("b")])).await.unwrap();
    assert_eq!(store.load(&ExecutionId::new("e1")).await.unwrap().unwrap().events.len(), 2);
}

async fn claims_are_held_by_live_hosts_and_taken_over_after_the_lease(store: Arc<dyn ExecutionStore>) {
    let (a, b) = two_hosts(&*store, SHORT, LONG).await;
    create(&*store, "e1", &a.id, None).await;
    let id = ExecutionId::new("e1");
    assert_eq!(store.claim(&id, &b.id).await.unwrap(), Claim::Held(a.id.clone()));
    // The owner itself claims again (it rested and was woken).
    assert_eq!(store.claim(&id, &a.id).await.unwrap(), Claim::Claimed { fence: 2, takeover: false });
    tokio::time::sleep(SHORT * 3).await;
    assert_eq!(store.claim(&id, &b.id).await.unwrap(), Claim::Claimed { fence: 3, takeover: true });
    assert_eq!(store.claim(&ExecutionId::new("nope"), &b.id).await.unwrap(), Claim::NotFound);
    // Ending a lease at once (its process is known gone) frees its claims.
    create(&*store, "e2", &b.id, None).await;
    store.expire_host(&b.id).await.unwrap();
    assert!(matches!(store.claim(&ExecutionId::new("e2"), &a.id).await.unwrap(), Claim::Claimed { .. }));
}

async fn a_released_execution_is_claimed_without_a_takeover(store: Arc<dyn ExecutionStore>) {
    let (a, b) = two_hosts(&*store, LONG, LONG).await;
    create_resting(&*store, "e1", &a.id).await;
    assert!(store.load(&ExecutionId::new("e1")).await.unwrap().unwrap().owner.is_none());
    let claim = store.claim(&ExecutionId::new("e1"), &b.id).await.unwrap();
    assert_eq!(claim, Claim::Claimed { fence: 2, takeover: false });
}

async fn due_work_without_a_live_owner_is_claimed_once(store: Arc<dyn ExecutionStore>) {
    let (live, dead) = (host("live", LONG), host("dead", SHORT));
    store.register_host(&live).await.unwrap();
    store.register_host(&dead).await.unwrap();
    let now = Timestamp::now();
    // Running, owned by a live host: not to be claimed.
    create(&*store, "running-live", &live.id, None).await;
    // Running, owned by a host whose lease will expire: to be claimed.
    create(&*store, "running-dead", &dead.id, None).await;
    // Waiting with a deadline due / in the future / none, released.
    for (id, due) in [("due", Some(now)), ("later", Some(now.plus(LONG))), ("no-timer", None)] {
        create(&*store, id, &live.id, None).await;
        let mut rest = append(id, 1, 0, vec![event("waits")]);
        rest.status = Some((ExecutionStatus::Waiting, now));
        rest.next_due = due;
        rest.release = true;
        store.append(rest).await.unwrap();
    }
    // Finished: never claimed, whatever its owner.
    create(&*store, "done", &dead.id, None).await;
    let mut done = append("done", 1, 0, vec![event("done")]);
    done.status = Some((ExecutionStatus::Succeeded, now));
    store.append(done).await.unwrap();
    tokio::time::sleep(SHORT * 3).await;
    let first = store.claim_due(&live.id, Timestamp::now(), 1).await.unwrap();
    assert_eq!(first.len(), 1, "the limit holds");
    let mut claimed: Vec<(String, bool)> = store
        .claim_due(&live.id, Timestamp::now(), 100)
        .await
        .unwrap()
        .into_iter()
        .chain(first)
        .map(|claim| (claim.id.to_string(), claim.takeover))
        .collect();
    claimed.sort();
    // Taken from the dead host: a takeover; the released one: not.
    assert_eq!(claimed, [("due".to_string(), false), ("running-dead".to_string(), true)]);
    // Claimed by a live host now: nobody else gets them.
    let other = host("other", LONG);
    store.register_host(&other).await.unwrap();
    assert!(store.claim_due(&other.id, Timestamp::now(), 100).await.unwrap().is_empty());
    let owner = store.load(&ExecutionId::new("due")).await.unwrap().unwrap().owner.unwrap();
    assert_eq!(owner.host, live.id);
}

async fn waking_a_parent_makes_it_due_now(store: Arc<dyn ExecutionStore>) {
    let a = host("a", LONG);
    store.register_host(&a).await.unwrap();
    for id in ["parent", "child"] {
        create(&*store, id, &a.id, None).await;
        let mut rest = append(id, 1, 0, vec![event("waits")]);
        rest.status = Some((ExecutionStatus::Waiting, Timestamp::now()));
        rest.release = true;
        store.append(rest).await.unwrap();
    }
    assert!(store.claim_due(&a.id, Timestamp::now(), 10).await.unwrap().is_empty());
    store.claim(&ExecutionId::new("child"), &a.id).await.unwrap();
    let mut over = append("child", 2, 1, vec![event("over")]);
    over.status = Some((ExecutionStatus::Succeeded, Timestamp::now()));
    over.release = true;
    over.wake = Some(ExecutionId::new("parent"));
    store.append(over).await.unwrap();
    let due = store.claim_due(&a.id, Timestamp::now().plus(Duration::from_millis(1)), 10).await.unwrap();
    assert_eq!(due, [DueClaim { id: ExecutionId::new("parent"), fence: 2, takeover: false }]);
}

async fn the_inbox_holds_messages_for_the_owner_and_keeps_the_first_answer(store: Arc<dyn ExecutionStore>) {
    let (a, b) = two_hosts(&*store, LONG, LONG).await;
    create(&*store, "e1", &a.id, None).await;
    create(&*store, "e2", &b.id, None).await;
    let id = ExecutionId::new("e1");
    let first = store.post(&id, r#"{"n":1}"#).await.unwrap();
    let second = store.post(&id, r#"{"n":2}"#).await.unwrap();
    store.post(&ExecutionId::new("e2"), r#"{"n":3}"#).await.unwrap();
    assert!(second > first);
    assert!(matches!(store.post(&ExecutionId::new("nope"), "{}").await, Err(StoreError::NotFound(_))));
    let for_a = store.inbox(&a.id, None).await.unwrap();
    assert_eq!(for_a.iter().map(|m| m.id).collect::<Vec<_>>(), [first, second]);
    assert_eq!(for_a[0].message, r#"{"n":1}"#);
    assert_eq!(store.inbox(&a.id, Some(&ExecutionId::new("e2"))).await.unwrap(), []);
    assert_eq!(store.inbox(&b.id, None).await.unwrap().len(), 1);
    assert_eq!(store.answer_of(first).await.unwrap(), None);
    store.answer(first, "\"accepted\"").await.unwrap();
    store.answer(first, "\"other\"").await.unwrap();
    assert_eq!(store.answer_of(first).await.unwrap().as_deref(), Some("\"accepted\""));
    assert_eq!(store.inbox(&a.id, Some(&id)).await.unwrap().len(), 1, "answered messages leave the inbox");
    // The inbox follows the owner: after a takeover the new owner sees it.
    store.expire_host(&a.id).await.unwrap();
    store.claim(&id, &b.id).await.unwrap();
    assert_eq!(store.inbox(&b.id, Some(&id)).await.unwrap().iter().map(|m| m.id).collect::<Vec<_>>(), [second]);
}

async fn hosts_are_listed_with_what_they_own_and_deregistering_releases(store: Arc<dyn ExecutionStore>) {
    let (a, b) = two_hosts(&*store, LONG, LONG).await;
    create(&*store, "e1", &a.id, None).await;
    create(&*store, "e2", &a.id, None).await;
    let hosts = store.hosts().await.unwrap();
    let owned = |name: &HostId| hosts.iter().find(|h| &h.id == name).map(|h| h.owned);
    assert_eq!(owned(&a.id), Some(2));
    assert_eq!(owned(&b.id), Some(0));
    assert!(hosts.iter().all(|h| h.is_live(Timestamp::now())));
    store.deregister_host(&a.id).await.unwrap();
    assert_eq!(store.hosts().await.unwrap().len(), 1);
    assert!(store.load(&ExecutionId::new("e1")).await.unwrap().unwrap().owner.is_none());
    // A write the stopping host still makes is refused: its claims ended.
    let late = store.append(append("e2", 1, 0, vec![event("late")])).await;
    assert!(matches!(late, Err(StoreError::Fenced(_, 1))), "{late:?}");
    let claim = store.claim(&ExecutionId::new("e1"), &b.id).await.unwrap();
    assert_eq!(claim, Claim::Claimed { fence: 3, takeover: false });
}

async fn a_release_with_the_current_fence_lets_go_and_a_stale_one_does_nothing(store: Arc<dyn ExecutionStore>) {
    let (a, b) = two_hosts(&*store, LONG, LONG).await;
    create(&*store, "e1", &a.id, None).await;
    let id = ExecutionId::new("e1");
    assert_eq!(store.claim(&id, &a.id).await.unwrap(), Claim::Claimed { fence: 2, takeover: false });
    store.release(&id, 1).await.unwrap();
    assert_eq!(store.load(&id).await.unwrap().unwrap().owner.unwrap().host, a.id, "a stale fence changes nothing");
    store.release(&id, 2).await.unwrap();
    assert!(store.load(&id).await.unwrap().unwrap().owner.is_none());
    // Running and unowned: due for any host at once.
    let due = store.claim_due(&b.id, Timestamp::now(), 10).await.unwrap();
    assert_eq!(due, [DueClaim { id: id.clone(), fence: 3, takeover: false }]);
    store.release(&ExecutionId::new("nope"), 1).await.unwrap();
}

async fn a_host_does_not_claim_its_own_executions_even_when_its_lease_lapsed(store: Arc<dyn ExecutionStore>) {
    let (a, b) = two_hosts(&*store, SHORT, LONG).await;
    create(&*store, "e1", &a.id, None).await;
    tokio::time::sleep(SHORT * 3).await;
    // Its heartbeat is late: its own scan leaves what it drives alone (no
    // fencing of itself); another host takes it over.
    assert!(store.claim_due(&a.id, Timestamp::now(), 10).await.unwrap().is_empty());
    let due = store.claim_due(&b.id, Timestamp::now(), 10).await.unwrap();
    assert_eq!(due, [DueClaim { id: ExecutionId::new("e1"), fence: 2, takeover: true }]);
    // The fence the claim returned is the one the new owner writes with;
    // the old owner's is refused.
    let stale = store.append(append("e1", 1, 0, vec![event("late")])).await;
    assert!(matches!(stale, Err(StoreError::Fenced(_, 1))), "{stale:?}");
    store.append(append("e1", due[0].fence, 0, vec![event("taken over")])).await.unwrap();
}

async fn due_work_is_claimed_oldest_first_across_owners_and_never_from_a_live_one(store: Arc<dyn ExecutionStore>) {
    let (dead, live) = two_hosts(&*store, SHORT, LONG).await;
    let claimer = host("c", LONG);
    store.register_host(&claimer).await.unwrap();
    // Oldest first: e1 (dead host's), e2 (live host's), e3 (released), e4
    // (dead host's), e5 (the claimer's own), e6 (a host whose lease was ended).
    for (id, owner) in [("e1", &dead.id), ("e2", &live.id), ("e3", &live.id), ("e4", &dead.id), ("e5", &claimer.id)] {
        create(&*store, id, owner, None).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    store.release(&ExecutionId::new("e3"), 1).await.unwrap();
    let gone = host("gone", LONG);
    store.register_host(&gone).await.unwrap();
    create(&*store, "e6", &gone.id, None).await;
    store.expire_host(&gone.id).await.unwrap();
    tokio::time::sleep(SHORT * 3).await;
    let due = store.claim_due(&claimer.id, Timestamp::now(), 2).await.unwrap();
    let ids =
        |due: &[DueClaim]| due.iter().map(|claim| (claim.id.as_str().to_string(), claim.takeover)).collect::<Vec<_>>();
    assert_eq!(ids(&due), [("e1".to_string(), true), ("e3".to_string(), false)]);
    let rest = store.claim_due(&claimer.id, Timestamp::now(), 10).await.unwrap();
    assert_eq!(ids(&rest), [("e4".to_string(), true), ("e6".to_string(), true)]);
    assert!(store.claim_due(&claimer.id, Timestamp::now(), 10).await.unwrap().is_empty());
    assert_eq!(store.load(&ExecutionId::new("e2")).await.unwrap().unwrap().owner.unwrap().host, live.id);
}

async fn a_message_posted_for_an_execution_at_rest_makes_it_due(store: Arc<dyn ExecutionStore>) {
    let (a, b) = two_hosts(&*store, LONG, LONG).await;
    create_resting(&*store, "e1", &a.id).await;
    assert!(store.claim_due(&b.id, Timestamp::now(), 10).await.unwrap().is_empty());
    // Posted while its owner let go: whoever scans next takes it and the message.
    let id = ExecutionId::new("e1");
    let posted = store.post(&id, r#"{"cancel":true}"#).await.unwrap();
    let due = store.claim_due(&b.id, Timestamp::now(), 10).await.unwrap();
    assert_eq!(due, [DueClaim { id: id.clone(), fence: 2, takeover: false }]);
    assert_eq!(store.inbox(&b.id, Some(&id)).await.unwrap().len(), 1);
    // Answered: not due any more.
    store.answer(posted, "{}").await.unwrap();
    let fence = store.load(&id).await.unwrap().unwrap().owner.unwrap().fence;
    store.release(&id, fence).await.unwrap();
    assert!(store.claim_due(&b.id, Timestamp::now(), 10).await.unwrap().is_empty());
}

async fn an_unloadable_execution_is_marked_failed_and_fenced(store: Arc<dyn ExecutionStore>) {
    let a = host("a", LONG);
    store.register_host(&a).await.unwrap();
    create(&*store, "e1", &a.id, None).await;
    store.mark_unloadable(&ExecutionId::new("e1"), "corrupt event 3").await.unwrap();
    let listed = store.list(&ListFilter::default()).await.unwrap();
    assert_eq!(listed[0].status, ExecutionStatus::Failed);
    assert_eq!(listed[0].error.as_deref(), Some("corrupt event 3"));
    let late = store.append(append("e1", 1, 0, vec![event("late")])).await;
    assert!(matches!(late, Err(StoreError::Fenced(..))), "{late:?}");
    assert!(store.claim_due(&a.id, Timestamp::now(), 10).await.unwrap().is_empty());
    assert!(store.unfinished().await.unwrap().is_empty());
}

async fn purge_deletes_only_finished_executions_before_the_cutoff(store: Arc<dyn ExecutionStore>) {
    let a = host("a", LONG);
    store.register_host(&a).await.unwrap();
    for (id, status, at) in [
        ("old-done", ExecutionStatus::Succeeded, 1_000),
        ("old-failed", ExecutionStatus::Failed, 1_000),
        ("old-waiting", ExecutionStatus::Waiting, 1_000),
        ("new-done", ExecutionStatus::Compensated, 9_000),
    ] {
        create(&*store, id, &a.id, Some(id)).await;
        let mut last = append(id, 1, 0, vec![event(id)]);
        last.status = Some((status, Timestamp(at)));
        store.append(last).await.unwrap();
    }
    let everything = [ExecutionStatus::Succeeded, ExecutionStatus::Compensated, ExecutionStatus::Waiting];
    let purged = store.purge_finished_before(Timestamp(5_000), &everything).await.unwrap();
    assert_eq!(purged, [(ExecutionStatus::Succeeded, 1)], "failed not asked for; waiting never; new-done too new");
    let purged = store.purge_finished_before(Timestamp(5_000), &[ExecutionStatus::Failed]).await.unwrap();
    assert_eq!(purged, [(ExecutionStatus::Failed, 1)]);
    let mut left: Vec<String> =
        store.list(&ListFilter::default()).await.unwrap().into_iter().map(|e| e.execution_id.to_string()).collect();
    left.sort();
    assert_eq!(left, ["new-done", "old-waiting"]);
    assert_eq!(store.unfinished().await.unwrap(), [ExecutionId::new("old-waiting")]);
    // A purged execution's idempotency key is free again.
    assert_eq!(create(&*store, "again", &a.id, Some("old-done")).await, Created::New(1));
    let counts = store.count_by_status().await.unwrap();
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 3);
}

async fn kv_keeps_namespaces_apart_within_quotas(store: Arc<dyn ExecutionStore>) {
    let Some(kv) = store.kv() else { return };
    tokio::task::spawn_blocking(move || {
        kv.set("acme/p", "k", "1").unwrap();
        assert_eq!(kv.get("acme/p", "k").unwrap().as_deref(), Some("1"));
        assert_eq!(kv.get("globex/p", "k").unwrap(), None);
        assert!(kv.set("acme/p", "big", &"x".repeat(super::kv::MAX_VALUE_BYTES + 1)).is_err());
        assert!(kv.set("acme/p", "", "v").is_err());
        assert!(kv.delete("acme/p", "k").unwrap());
        assert!(!kv.delete("acme/p", "k").unwrap());
    })
    .await
    .expect("kv checks");
}

async fn answers_are_written_with_the_events_or_not_at_all(store: Arc<dyn ExecutionStore>) {
    let (a, b) = two_hosts(&*store, SHORT, LONG).await;
    create(&*store, "e1", &a.id, None).await;
    let id = ExecutionId::new("e1");
    let (first, second) = (store.post(&id, "{}").await.unwrap(), store.post(&id, "{}").await.unwrap());
    let mut decided = append("e1", 1, 0, vec![event("cancel")]);
    decided.answers = vec![(first, r#"{"ok":1}"#.into())];
    store.append(decided).await.unwrap();
    assert_eq!(store.answer_of(first).await.unwrap().as_deref(), Some(r#"{"ok":1}"#));
    // The first answer stands.
    store.answer(first, r#"{"ok":2}"#).await.unwrap();
    assert_eq!(store.answer_of(first).await.unwrap().as_deref(), Some(r#"{"ok":1}"#));
    // A fenced write answers nothing: the new owner takes the message in.
    tokio::time::sleep(SHORT * 3).await;
    assert!(matches!(store.claim(&id, &b.id).await.unwrap(), Claim::Claimed { .. }));
    let mut late = append("e1", 1, 1, vec![event("late")]);
    late.answers = vec![(second, r#"{"ok":3}"#.into())];
    assert!(matches!(store.append(late).await, Err(StoreError::Fenced(..))));
    assert_eq!(store.answer_of(second).await.unwrap(), None);
    assert_eq!(store.inbox(&b.id, Some(&id)).await.unwrap().len(), 1);
}

async fn lists_filter_by_tenant(store: Arc<dyn ExecutionStore>) {
    let a = host("a", LONG);
    store.register_host(&a).await.unwrap();
    for (id, tenant) in [("e1", Some("acme")), ("e2", Some("globex")), ("e3", None), ("e4", Some("acme"))] {
        create_for(&*store, id, &a.id, None, tenant).await;
    }
    let listed = |tenant: Option<&str>| {
        let filter = ListFilter { tenant: tenant.map(str::to_string), ..ListFilter::default() };
        let store = store.clone();
        async move { store.list(&filter).await.unwrap() }
    };
    let acme = listed(Some("acme")).await;
    assert_eq!(acme.iter().map(|e| e.execution_id.as_str()).collect::<Vec<_>>(), ["e4", "e1"]);
    assert!(acme.iter().all(|e| e.tenant.as_deref() == Some("acme")));
    assert_eq!(listed(Some("globex")).await.len(), 1);
    assert!(listed(Some("initech")).await.is_empty());
    let all = listed(None).await;
    assert_eq!(all.len(), 4);
    assert_eq!(all.iter().find(|e| e.execution_id.as_str() == "e3").unwrap().tenant, None);
}

/// Every combination of status, workflow, tenant, cursor and page size lists
/// what a plain filter over all executions gives, newest (largest id) first.
async fn lists_every_combination_of_filters_newest_first(store: Arc<dyn ExecutionStore>) {
    let statuses = [ExecutionStatus::Running, ExecutionStatus::Waiting, ExecutionStatus::Succeeded];
    let mut all = Vec::new();
    for n in 0..12u64 {
        let (id, workflow, tenant) =
            (format!("e{n:02}"), ["w1", "w2"][(n % 2) as usize], (n % 3 == 0).then_some("acme"));
        let status = statuses[(n % 3) as usize];
        let definition: WorkflowDefinition =
            serde_json::from_value(serde_json::json!({"name": workflow, "steps": []})).expect("a definition");
        let created = store
            .create(NewExecution {
                id: ExecutionId::new(&id),
                workflow: DefinitionRecord::new(Arc::new(definition)),
                input: serde_json::json!({}),
                idempotency_key: None,
                tenant: tenant.map(str::to_string),
                parent: None,
                created_at: Timestamp(1_000 + n),
                owner: None,
                events: Vec::new(),
                status,
                next_due: None,
            })
            .await
            .expect("create");
        assert!(matches!(created, Created::New(_)));
        all.push((id, workflow, tenant, status));
    }
    for status in [None, Some(ExecutionStatus::Waiting), Some(ExecutionStatus::Failed)] {
        for workflow in [None, Some("w1"), Some("w2")] {
            for tenant in [None, Some("acme"), Some("initech")] {
                for before in [None, Some("e07"), Some("e00")] {
                    for limit in [None, Some(2)] {
                        let filter = ListFilter {
                            status,
                            workflow: workflow.map(str::to_string),
                            tenant: tenant.map(str::to_string),
                            limit,
                            before: before.map(ExecutionId::new),
                        };
                        let listed: Vec<String> = store
                            .list(&filter)
                            .await
                            .unwrap()
                            .into_iter()
                            .map(|summary| summary.execution_id.as_str().to_string())
                            .collect();
                        let expected: Vec<String> = all
                            .iter()
                            .rev()
                            .filter(|(id, w, t, s)| {
                                status.is_none_or(|status| status == *s)
                                    && workflow.is_none_or(|workflow| workflow == *w)
                                    && tenant.is_none_or(|tenant| Some(tenant) == *t)
                                    && before.is_none_or(|before| id.as_str() < before)
                            })
                            .take(limit.unwrap_or(usize::MAX))
                            .map(|(id, ..)| id.clone())
                            .collect();
                        assert_eq!(listed, expected, "{filter:?}");
                    }
                }
            }
        }
    }
}

async fn tokens_are_kept_by_id_and_revoked_once(store: Arc<dyn ExecutionStore>) {
    use super::tokens::TokenRecord;
    let token = |id: &str, scope: &str, at: u64| TokenRecord {
        id: id.into(),
        scope: scope.into(),
        label: Some(format!("label of {id}")),
        secret_hash: format!("hash-{id}"),
        created_at: Timestamp(at),
        revoked_at: None,
    };
    store.insert_token(&token("t2", "tenant:acme", 2_000)).await.unwrap();
    store.insert_token(&token("t1", "read", 1_000)).await.unwrap();
    assert!(store.insert_token(&token("t1", "admin", 3_000)).await.is_err(), "an id is never reused");
    assert_eq!(store.token("t2").await.unwrap(), Some(token("t2", "tenant:acme", 2_000)));
    assert_eq!(store.token("t3").await.unwrap(), None);
    let ids: Vec<String> = store.tokens().await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["t1", "t2"], "oldest first");
    assert!(store.revoke_token("t1", Timestamp(5_000)).await.unwrap());
    assert!(store.revoke_token("t1", Timestamp(9_000)).await.unwrap());
    assert_eq!(
        store.token("t1").await.unwrap().unwrap().revoked_at,
        Some(Timestamp(5_000)),
        "the first revocation stands"
    );
    assert_eq!(store.token("t1").await.unwrap().unwrap().scope, "read", "the failed insert changed nothing");
    assert!(!store.revoke_token("t3", Timestamp(5_000)).await.unwrap());
    assert_eq!(store.token("t2").await.unwrap().unwrap().revoked_at, None);
}
