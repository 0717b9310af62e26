//! Several `stepwise serve` hosts on one PostgreSQL: shared work, an async
//! step completed through another host than the one that started it, a host
//! killed mid-burst whose executions the survivors take over, and a paused
//! host whose late writes the fencing check refuses. Each of these audits the
//! demo services' ledger (in the same database) against the recorded events.
//!
//! They run when `STEPWISE_TEST_POSTGRES` names a server (`scripts/test.sh`
//! starts one with `scripts/postgres.sh`); each test has its own database.
//! One more, on the in-memory store, plays the other host with a host record
//! and a claim: an event taken into a batch that the other host's claim
//! fences out goes to that host.

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stepwise::store::PostgresStore;
use stepwise_test_support::audit::{audit_side_effects, Db};
use stepwise_test_support::server::{is_final, Server, TOKEN};
use stepwise_test_support::*;

/// approved-quote: cart -> reserve -> approve (async) -> payment; slow-quote:
/// cart -> reserve -> slow (3 s) -> payment.
fn workflows() -> Vec<(&'static str, String)> {
    vec![
        ("approved-quote.toml", quote_workflow("approved-quote", "", &approved_payment(""))),
        ("slow-quote.toml", slow_quote("slow-quote", 3000)),
    ]
}

/// A fresh database on the test server, or none when no server is configured.
async fn database(label: &str) -> Option<String> {
    let Ok(url) = std::env::var("STEPWISE_TEST_POSTGRES") else {
        eprintln!("STEPWISE_TEST_POSTGRES is not set: the multi-host tests do not run");
        return None;
    };
    let name = format!("hosts_{label}_{}", std::process::id());
    Some(PostgresStore::create_database(&url, &name).await.expect("creating a database"))
}

/// `count` hosts on `store`, each in its own directory, with claims that
/// hold for `lease`.
fn hosts(label: &str, store: &str, count: usize, lease: &str) -> Vec<Arc<Server>> {
    // Started at once: they migrate the empty database together.
    std::thread::scope(|scope| {
        let starting: Vec<_> = (0..count)
            .map(|n| {
                scope.spawn(move || {
                    let dir = test_dir(&format!("hosts-{label}-{n}"));
                    let _ = std::fs::remove_dir_all(&dir);
                    let workflows = workflows();
                    let workflows: Vec<(&str, &str)> =
                        workflows.iter().map(|(file, toml)| (*file, toml.as_str())).collect();
                    Arc::new(Server::start_on(dir, store, &workflows, &["--lease", lease]))
                })
            })
            .collect();
        starting.into_iter().map(|host| host.join().expect("a host starts")).collect()
    })
}

/// Polls an execution through `server` until it is final or `deadline` passes.
async fn final_by(server: &Server, id: &str, deadline: Instant) -> Value {
    loop {
        let (_, execution) = server.get(&format!("/v1/executions/{id}")).await;
        if is_final(&execution) {
            return execution;
        }
        assert!(Instant::now() < deadline, "{id} did not end in time: {execution:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_the_work_and_survive_one_killed_mid_burst() {
    let Some(store) = database("burst").await else { return };
    let servers = hosts("burst", &store, 3, "2s");
    // The slow quotes are in flight when the host dies: the survivors take them over.
    let workflows = ["accept-quote", "accept-quote-declined", "approved-quote", "slow-quote"];
    // Submitted round-robin to all three; the third host is SIGKILLed once it
    // accepted 60, with requests still in flight. A submission the
    // dead host does not answer goes to the next host, as a balancer would.
    let dead = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..600usize {
        let (servers, dead) = (servers.clone(), dead.clone());
        let workflow = workflows[n % 4];
        tasks.spawn(async move {
            let mut host = n % 3;
            loop {
                if host == 2 && dead.load(std::sync::atomic::Ordering::SeqCst) {
                    host = n % 2;
                }
                let path = servers[host].url(&format!("/v1/workflows/{workflow}/executions"));
                let request = servers[host].client.post(path).bearer_auth(TOKEN).json(&quote_input()).send().await;
                match request {
                    Ok(response) if response.status().is_success() => {
                        let body: Value = response.json().await.unwrap();
                        return (host, workflow.to_string(), body["execution_id"].as_str().unwrap().to_string());
                    }
                    Ok(response) => panic!("{}: {:?}", response.status(), response.text().await),
                    Err(_) if host == 2 => host = n % 2,
                    Err(error) => panic!("host {host}: {error}"),
                }
            }
        });
    }
    let mut started: Vec<(usize, String, String)> = Vec::new();
    let (killed_at, killed_wall) = (std::sync::OnceLock::new(), std::sync::OnceLock::new());
    let kill = |servers: &[Arc<Server>]| {
        dead.store(true, std::sync::atomic::Ordering::SeqCst);
        let pid = servers[2].child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
        killed_at.set(Instant::now()).unwrap();
        killed_wall.set(std::time::SystemTime::now()).unwrap();
    };
    while let Some(joined) = tasks.join_next().await {
        started.push(joined.unwrap());
        // Killed once it has accepted 60 (its slow quotes are then mid-step).
        let on_third = started.iter().filter(|(host, _, _)| *host == 2).count();
        if on_third == 60 && !dead.load(std::sync::atomic::Ordering::SeqCst) {
            kill(&servers);
        }
    }
    if !dead.load(std::sync::atomic::Ordering::SeqCst) {
        kill(&servers);
    }
    // Approve each async step through another host than the one that started it.
    let approvals: Vec<_> = started.iter().filter(|(_, workflow, _)| workflow == "approved-quote").cloned().collect();
    let mut completing = tokio::task::JoinSet::new();
    for (host, _, id) in approvals {
        let other = servers[(host + 1) % 2].clone();
        completing.spawn(async move {
            other.until_step_waits(&id, "approve").await;
            let path = format!("/v1/executions/{id}/steps/approve/success");
            let (status, body) = other.post(&path, json!({"approved": true})).await;
            assert!(status.is_success(), "{status}: {body}");
        });
    }
    while let Some(joined) = completing.join_next().await {
        joined.unwrap();
    }
    // Every execution ends on the survivors within the lease and 5 s.
    let deadline = Instant::now() + Duration::from_secs(2 + 5 + 10);
    let mut finals = Vec::new();
    for (n, (_, workflow, id)) in started.iter().enumerate() {
        let execution = final_by(&servers[n % 2], id, deadline).await;
        let expected = if workflow == "accept-quote-declined" { "compensated" } else { "succeeded" };
        assert_eq!(execution["status"], expected, "{execution:#}");
        finals.push(execution);
    }
    let all_ended = killed_at.get().unwrap().elapsed();
    // What the killed host had accepted (and the test does not hold back:
    // approvals wait for this test) ended within the lease, 5 s and the 3 s
    // slow step it had to run again, by the recorded finish times.
    let killed_ms = killed_wall.get().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    for ((host, workflow, _), execution) in started.iter().zip(&finals) {
        if *host == 2 && workflow != "approved-quote" {
            let finished = millis(&execution["finished_at"]);
            assert!(
                finished <= killed_ms + (2 + 5 + 3) * 1000,
                "ended {} ms after the kill: {execution:#}",
                finished.saturating_sub(killed_ms)
            );
        }
    }
    let (calls, checked) = audit_side_effects(Db::Postgres(&store), &finals, &|e| e["status"] == "compensated");
    let mut takeovers = 0;
    for server in &servers[..2] {
        let metrics =
            server.client.get(server.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
        let line = metrics.lines().find(|l| l.starts_with("stepwise_takeovers_total")).unwrap_or_default();
        takeovers += line.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    }
    let on_dead = started.iter().filter(|(host, _, _)| *host == 2).count();
    eprintln!(
        "three hosts: {} executions ({on_dead} started on the killed host, {takeovers} taken over), {calls} service calls, {checked} checked; all seen final {:.1} s after the kill",
        finals.len(),
        all_ended.as_secs_f64()
    );
    assert!(checked > 1000, "{checked} checks");
    assert!(takeovers > 0, "the survivors took over the killed host's executions in flight");
    // The dead host is not live any more.
    let (_, listed) = servers[0].get("/v1/hosts").await;
    let live: Vec<&Value> = listed["hosts"].as_array().unwrap().iter().filter(|h| h["live"] == true).collect();
    assert_eq!(live.len(), 2, "{listed:#}");
    // `stepwise hosts` reads the same from the store, without a server.
    let output = stepwise(&["hosts", "--json", "--store", &store]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let hosts = listed["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2, "only live hosts: {listed:#}");
    let owned: u64 = hosts.iter().map(|host| host["owned"].as_u64().unwrap()).sum();
    assert_eq!(owned, 0, "every execution ended and was released: {listed:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_host_cannot_write_after_another_took_its_execution_over() {
    let Some(store) = database("paused").await else { return };
    let servers = hosts("paused", &store, 2, "1s");
    let (_, started) = servers[0].post("/v1/workflows/slow-quote/executions", quote_input()).await;
    let id = started["execution_id"].as_str().unwrap().to_string();
    // Once the slow step runs on host 0, pause host 0 past its lease.
    loop {
        let (_, execution) = servers[1].get(&format!("/v1/executions/{id}")).await;
        if step(&execution, "slow")["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = servers[0].child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    // Host 1 takes it over (the slow step runs again there, same idempotency key) and finishes it.
    let execution = final_by(&servers[1], &id, Instant::now() + Duration::from_secs(30)).await;
    assert_eq!(execution["status"], "succeeded", "{execution:#}");
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    // The paused host wakes with its slow call done: its write is refused.
    let refused = loop {
        let metrics = servers[0]
            .client
            .get(servers[0].url("/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let line = metrics.lines().find(|l| l.starts_with("stepwise_fencing_refusals_total")).unwrap().to_string();
        if !line.ends_with(" 0") {
            break line;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("paused host: {refused}");
    let (_, after) = servers[1].get(&format!("/v1/executions/{id}")).await;
    assert_eq!(after["status"], "succeeded");
    let succeeded: Vec<&Value> = events(&after, "step_succeeded").into_iter().filter(|e| e["step"] == "slow").collect();
    assert_eq!(succeeded.len(), 1, "one recorded success of the slow step: {after:#}");
    let (_, checked) = audit_side_effects(Db::Postgres(&store), &[after], &|_| false);
    assert!(checked > 0);
}

/// A cancel taken into a batch whose append is refused, because another
/// host claimed the execution meanwhile, was not recorded: it goes to that
/// host's inbox (not dropped with a "lost" answer), and its caller gets the
/// answer of whoever decides it. The starter's wait for the execution goes
/// on too. Runs on the in-memory store: the other
/// host is a record and a claim, so that nothing else drives the execution
/// while the cancel waits in the inbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_refused_by_another_hosts_claim_goes_to_that_host() {
    use stepwise::journal::{ExecutionId, Timestamp};
    use stepwise::store::{Claim, ExecutionStore, HostId, HostRecord, MemoryStore};

    let store = Arc::new(MemoryStore::new());
    let host = demo_host_on(&plugins_dir(), store.clone());
    let engine = host.engine.clone();
    let slow = workflow(&engine, &slow_quote("slow-quote", 1500));
    let (id, settling) = engine.start(slow, quote_input(), Default::default()).await.expect("started");
    let starter = tokio::spawn(settling.expect("the starter can wait").wait());
    let deadline = Instant::now() + Duration::from_secs(30);
    while step(&engine.show(&id).await.unwrap().to_json(), "slow")["status"] != "running" {
        assert!(Instant::now() < deadline, "the slow step never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Another host claims it, as if this host's lease had run out (its
    // heartbeat may renew it between the two writes: then again).
    let other = HostId("the-other-host".into());
    let now = Timestamp::now();
    let record = HostRecord {
        id: other.clone(),
        node: "elsewhere".into(),
        pid: 1,
        started_at: now,
        heartbeat_at: now,
        lease_ms: 600_000,
        address: None,
        owned: 0,
    };
    store.register_host(&record).await.unwrap();
    loop {
        store.expire_host(engine.host_id()).await.unwrap();
        match store.claim(&id, &other).await.unwrap() {
            Claim::Claimed { takeover, .. } => break assert!(takeover),
            held => assert!(matches!(held, Claim::Held(_)), "{held:?}"),
        }
    }

    // The owner here takes the cancel in, and its append is fenced out.
    let canceller = engine.clone();
    let cancel_id: ExecutionId = id.clone();
    let cancel = tokio::spawn(async move { canceller.cancel(&cancel_id, "racing a takeover").await });
    let posted = loop {
        let inbox = store.inbox(&other, Some(&id)).await.unwrap();
        if let Some(message) = inbox.into_iter().next() {
            break message;
        }
        assert!(
            !cancel.is_finished(),
            "the cancel was answered without being recorded: {:?}",
            cancel.await.map(|r| r.map(|d| d.answer))
        );
        assert!(Instant::now() < deadline, "the cancel never reached the other host's inbox");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(posted.message.contains("cancel"), "{}", posted.message);
    assert!(!cancel.is_finished(), "the caller waits for the owner's answer");
    let refusals = engine.metrics().fencing_refusals.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refusals, 1, "the append was refused by the fence");

    // The other host dies unanswered: this host adopts the execution, takes
    // the cancel from the inbox and answers it.
    store.expire_host(&other).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(30), cancel).await.expect("answered").unwrap();
    let delivery = delivery.expect("the cancel is accepted");
    let rested = tokio::time::timeout(Duration::from_secs(30), delivery.settling.wait()).await.expect("it rests");
    let execution = rested.expect("the execution rests").to_json();
    assert_eq!(execution["status"], "compensated", "{execution:#}");
    assert_eq!(events(&execution, "rollback_requested").len(), 1, "{execution:#}");
    assert!(store.answer_of(posted.id).await.unwrap().is_some(), "the message was answered in the inbox");
    // The starter's wait went with the execution too, not "lost" with the fenced owner.
    let started = tokio::time::timeout(Duration::from_secs(30), starter).await.expect("the starter is answered");
    assert_eq!(started.unwrap().expect("the starter gets the execution").to_json()["status"], "compensated");
}
