//! A deterministic simulation of the state machine and the owner's intake:
//! thousands of seeded random schedules of call results, outside events
//! (completions, failures, cancels, operator retries, each possibly
//! delivered twice),
//! timers, owners resting and crashes at every point (before an append,
//! after it, before anything was performed), with recovery by replay.
//!
//! A plain seeded loop rather than proptest or turmoil: the core is
//! synchronous and its inputs are our own event kinds, so a scheduler that
//! picks the next thing to happen from a seed explores interleavings
//! directly, and a failing seed replays exactly (`STEPWISE_SIM_SEED`).
//!
//! Invariants, checked as the schedule runs and at its end:
//! - nothing is invoked after its success was recorded, nothing is
//!   compensated after its compensation was recorded;
//! - on success nothing is compensated; on rollback every unit whose invoke
//!   succeeded is compensated exactly once (recorded), and every side effect
//!   applied at the (idempotent) services is undone; a unit whose guest
//!   skipped it is never compensated;
//! - a `failed` execution an operator retries (at random, and while it drains)
//!   still compensates each unit at most once, and exactly once when it ends
//!   `compensated`;
//! - every outside event that was answered as accepted is in the log;
//! - replaying the log rebuilds the state the owner holds.

use super::command::Command;
use super::intake::{self, Batch};
use super::machine::{Machine, Unit};
use super::outside::{Answer, Outside};
use super::view::ExecutionView;
use crate::journal::{
    Event, ExecutionId, ExecutionStatus, FailureKind, RecordedEvent, StepFailure, Timer, Timestamp, UnitId,
};
use crate::workflow::{RetryPolicy, StepBuilder, Workflow};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// SplitMix64: small, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

fn workflow() -> Arc<Workflow> {
    let plugins: std::collections::BTreeSet<String> = ["p".to_string()].into();
    let retry =
        RetryPolicy { max_attempts: 3, initial_backoff_ms: 10, multiplier: 2.0, max_backoff_ms: 40, retry_traps: true };
    let workflow = Workflow::builder("sim")
        .timeout(Duration::from_millis(5_000))
        .retry(retry)
        .step(StepBuilder::new("cart", "p", json!({"n": "$.input.n"})))
        .step(
            StepBuilder::new("reserve", "p", json!({"sku": "$.item", "at": "$.index"}))
                .for_each("$.steps.cart.output.items", Some(2)),
        )
        .step(
            StepBuilder::new("authorize", "p", json!({"cart": "$.steps.cart.output"}))
                .asynchronous()
                .timeout(Duration::from_millis(800)),
        )
        .step(StepBuilder::new("gift", "p", json!({})).when("input.gift == true").after("cart"))
        .step(StepBuilder::transform("total", "size(steps.cart.output.items)"))
        .step(StepBuilder::new(
            "order",
            "p",
            json!({"auth": "$.steps.authorize.output", "lines": "$.steps.reserve.output", "n": "$.steps.total.output"}),
        ))
        .build(&plugins)
        .expect("the simulated workflow is valid");
    Arc::new(workflow)
}

/// A call the owner made and whose result has not come back.
#[derive(Clone, Debug)]
struct Flight {
    unit: Unit,
    label: UnitId,
    attempt: u32,
    invoke: bool,
}

/// The live owner: the machine and what it has in flight.
struct Owner {
    machine: Machine,
    flights: Vec<Flight>,
    timers: Vec<(Timestamp, Timer)>,
}

/// Idempotent services: one effect per idempotency key, applied once and
/// undone once, whatever the number of calls.
#[derive(Default)]
struct Services {
    applied: HashSet<String>,
    undone: HashSet<String>,
    compensate_calls: usize,
}

struct World {
    rng: Rng,
    seed: u64,
    now: Timestamp,
    workflow: Arc<Workflow>,
    input: Value,
    log: Vec<RecordedEvent>,
    owner: Option<Owner>,
    services: Services,
    /// Outside events answered `Accepted`, with the event each must have recorded.
    accepted: Vec<Outside>,
    crashes: usize,
    /// Operator retries of a `failed` execution delivered while draining.
    retries: usize,
}

impl World {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let input = json!({"n": rng.below(4), "gift": rng.percent(50)});
        Self {
            rng,
            seed,
            now: Timestamp(1_000_000),
            workflow: workflow(),
            input,
            log: Vec::new(),
            owner: None,
            services: Services::default(),
            accepted: Vec::new(),
            crashes: 0,
            retries: 0,
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!("seed {}: {what}\nlog: {:#?}", self.seed, self.log.iter().map(|r| &r.event).collect::<Vec<_>>())
    }

    /// The machine rebuilt from the durable log, as a replay does.
    fn replayed(&self) -> Machine {
        let mut machine = Machine::new(self.workflow.clone(), ExecutionId::new("sim"), self.input.clone());
        for recorded in &self.log {
            machine.apply(recorded.at, recorded.event.clone());
        }
        machine
    }

    fn status(&self) -> ExecutionStatus {
        match &self.owner {
            Some(owner) => owner.machine.status(),
            None => self.replayed().status(),
        }
    }

    fn recorded(&self, matches: impl Fn(&Event) -> bool) -> usize {
        self.log.iter().filter(|r| matches(&r.event)).count()
    }

    /// Starts the execution: it is created with its first step in one write
    /// (a crash before it leaves nothing to recover).
    fn start(&mut self) {
        let machine = Machine::new(self.workflow.clone(), ExecutionId::new("sim"), self.input.clone());
        self.owner = Some(Owner { machine, flights: Vec::new(), timers: Vec::new() });
        self.step(vec![Event::started_pinning_nothing()], None, Vec::new(), false, false);
    }

    /// Adopts the execution as an owner does after a rest or a crash: replay,
    /// then perform what is outstanding.
    fn adopt(&mut self, crashes_allowed: bool) {
        if self.owner.is_some() {
            return;
        }
        let machine = self.replayed();
        let outstanding = machine.outstanding_commands();
        self.owner = Some(Owner { machine, flights: Vec::new(), timers: Vec::new() });
        // Adopted for a reason (an event to deliver): it does not rest before it.
        self.step(Vec::new(), None, outstanding, crashes_allowed, true);
    }

    /// One owner step: takes events (and maybe an outside event), appends,
    /// answers, performs. Crashes may strike before or after the append.
    fn step(
        &mut self,
        events: Vec<Event>,
        outside: Option<Outside>,
        outstanding: Vec<Command>,
        crashes: bool,
        keep: bool,
    ) {
        let now = self.now;
        let owner = self.owner.as_mut().expect("a live owner");
        let mut batch = Batch::resuming(outstanding);
        for event in events {
            intake::record(&mut owner.machine, now, event, &mut batch);
        }
        let answer = outside.clone().map(|request| {
            let busy: HashSet<Unit> = owner.flights.iter().map(|f| f.unit).collect();
            intake::take_outside(&mut owner.machine, now, request, &busy, &mut batch)
        });
        intake::record_all(&mut owner.machine, now, Default::default(), &mut batch);
        if crashes && self.rng.percent(3) {
            return self.crash(); // before the append: nothing of this step happened
        }
        // The log holds what a store would give back.
        self.log.extend(batch.recorded.iter().map(|encoded| encoded.decode().expect("a recorded event decodes")));
        if let (Some(Ok(Answer::Accepted)), Some(outside)) = (&answer, outside) {
            self.accepted.push(outside);
        }
        self.check_replay();
        if crashes && self.rng.percent(3) {
            return self.crash(); // after the append, before anything was performed
        }
        for command in batch.commands {
            self.perform(command);
        }
        let owner = self.owner.as_ref().expect("a live owner");
        let status = owner.machine.status();
        let resting = status.is_final() || (status == ExecutionStatus::Waiting && owner.flights.is_empty());
        if resting && !keep && self.rng.percent(50) {
            self.owner = None; // the owner lets go; the next event adopts it again
        }
    }

    fn crash(&mut self) {
        self.owner = None;
        self.crashes += 1;
    }

    fn perform(&mut self, command: Command) {
        let owner = self.owner.as_mut().expect("a live owner");
        match command {
            Command::Invoke { unit, attempt, .. } => {
                let label = owner.machine.label(unit);
                let done =
                    self.log.iter().any(|r| matches!(&r.event, Event::AttemptSucceeded { step, .. } if *step == label));
                if done {
                    self.fail(format!("{label} invoked (attempt {attempt}) after its success was recorded"));
                }
                let owner = self.owner.as_mut().expect("a live owner");
                owner.flights.push(Flight { unit, label, attempt, invoke: true });
            }
            Command::Compensate { unit, attempt, .. } => {
                let label = owner.machine.label(unit);
                let done = self
                    .log
                    .iter()
                    .any(|r| matches!(&r.event, Event::CompensationSucceeded { step, .. } if *step == label));
                if done {
                    self.fail(format!("{label} compensated (attempt {attempt}) after its compensation was recorded"));
                }
                self.services.compensate_calls += 1;
                let owner = self.owner.as_mut().expect("a live owner");
                owner.flights.push(Flight { unit, label, attempt, invoke: false });
            }
            Command::StartTimer { timer, due } => owner.timers.push((due, timer)),
            Command::Decide { .. } | Command::Finish => {}
        }
    }

    /// A call in flight returns.
    fn land_call(&mut self, index: usize, always_succeed: bool) {
        let owner = self.owner.as_mut().expect("a live owner");
        let flight = owner.flights.remove(index);
        let key = format!("sim/{}", flight.label);
        let roll = self.rng.below(100);
        let event = if flight.invoke {
            // An idempotent service answers a key it applied already the same way.
            let succeeds = always_succeed || self.services.applied.contains(&key) || roll < 75;
            if succeeds {
                self.services.applied.insert(key);
                let output = if flight.label.step.as_str() == "cart" {
                    json!({"items": (0..self.rng.below(4)).map(|i| format!("sku-{i}")).collect::<Vec<_>>()})
                } else {
                    json!({"ok": flight.label.to_string()})
                };
                let compensation = self.rng.percent(50).then(|| json!({"undo": flight.label.to_string()}));
                Event::AttemptSucceeded {
                    step: flight.label,
                    attempt: flight.attempt,
                    output,
                    compensation,
                    logs: vec![],
                    cost: None,
                }
            } else if roll < 80 {
                // The guest found nothing to do (it applied nothing).
                let reason = "simulated: nothing to do".to_string();
                Event::AttemptSkipped { step: flight.label, attempt: flight.attempt, reason, logs: vec![], cost: None }
            } else {
                let kind = if roll < 95 { FailureKind::Retryable } else { FailureKind::Permanent };
                let failure = StepFailure::new(kind, "simulated");
                Event::AttemptFailed { step: flight.label, attempt: flight.attempt, failure, logs: vec![], cost: None }
            }
        } else if always_succeed || self.services.undone.contains(&key) || roll < 90 {
            self.services.undone.insert(key);
            Event::CompensationSucceeded { step: flight.label, attempt: flight.attempt, logs: vec![], cost: None }
        } else {
            let failure = StepFailure::new(FailureKind::Retryable, "simulated");
            Event::CompensationFailed { step: flight.label, attempt: flight.attempt, failure, logs: vec![], cost: None }
        };
        self.step(vec![event], None, Vec::new(), !always_succeed, false);
    }

    /// The earliest armed timer fires (the clock moves to it).
    fn fire_timer(&mut self, crashes: bool) {
        let owner = self.owner.as_mut().expect("a live owner");
        let Some(index) = (0..owner.timers.len()).min_by_key(|&i| owner.timers[i].0) else { return };
        let (due, timer) = owner.timers.remove(index);
        self.now = self.now.max(due);
        if owner.machine.is_armed(&timer) {
            self.step(vec![Event::TimerFired { timer }], None, Vec::new(), crashes, false);
        }
    }

    /// An outside event arrives (adopting the execution if nobody drives it).
    fn deliver(&mut self, outside: Outside, crashes: bool) {
        self.adopt(crashes);
        if self.owner.is_some() {
            self.step(Vec::new(), Some(outside), Vec::new(), crashes, false);
        }
    }

    fn random_outside(&mut self) -> Outside {
        let step: UnitId = "authorize".parse().expect("a unit id");
        let key = Some(format!("k{}", self.rng.below(2)));
        match self.rng.below(10) {
            0..=5 => Outside::Complete { step, output: json!({"auth": "A1"}), key },
            6..=7 => Outside::Fail { step, message: "declined".into(), key },
            8 => Outside::Cancel { reason: "operator".into() },
            // Mostly refused (only a `failed` execution is retried): racing
            // the rest is the point.
            _ if self.rng.percent(50) => Outside::Retry { reason: "operator".into() },
            _ => Outside::Wake,
        }
    }

    fn check_replay(&self) {
        let Some(owner) = &self.owner else { return };
        let replayed = self.replayed();
        let live = ExecutionView::of(&owner.machine).to_json();
        if ExecutionView::of(&replayed).to_json() != live {
            self.fail("the replayed state differs from the owner's".into());
        }
        if replayed.outstanding_commands().len() < owner.flights.len() {
            self.fail("the replay lost a call in flight".into());
        }
    }

    /// Random actions for a while, then everything drains to a final status.
    fn run(mut self) -> Self {
        self.start();
        for _ in 0..60 {
            if self.status().is_final() && self.rng.percent(70) {
                break;
            }
            match self.rng.below(10) {
                0..=4 => match &self.owner {
                    Some(owner) if !owner.flights.is_empty() => {
                        let index = self.rng.below(owner.flights.len());
                        self.land_call(index, false);
                    }
                    _ => self.adopt(true),
                },
                5 => match &self.owner {
                    Some(owner) if !owner.timers.is_empty() => self.fire_timer(true),
                    _ => self.adopt(true),
                },
                6..=8 => {
                    let outside = self.random_outside();
                    let twice = self.rng.percent(30);
                    self.deliver(outside.clone(), true);
                    if twice {
                        self.deliver(outside, true);
                    }
                }
                _ => self.crash(),
            }
        }
        self.drain();
        self
    }

    /// No more crashes or failures: calls succeed, the async step is
    /// completed, timers fire, until the execution is final.
    fn drain(&mut self) {
        for _ in 0..500 {
            self.adopt(false);
            let owner = self.owner.as_ref().expect("adopted");
            if owner.machine.status() == ExecutionStatus::Failed && self.retries < 3 && self.rng.percent(60) {
                // An operator retries the failed compensations.
                self.retries += 1;
                self.deliver(Outside::Retry { reason: "drain".into() }, false);
                continue;
            }
            let owner = self.owner.as_ref().expect("adopted");
            if owner.machine.status().is_final() && owner.flights.is_empty() {
                return;
            }
            if !owner.flights.is_empty() {
                self.land_call(0, true);
            } else if owner.machine.status() == ExecutionStatus::Waiting {
                let step: UnitId = "authorize".parse().expect("a unit id");
                if owner.machine.is_waiting(&step) {
                    self.deliver(Outside::Complete { step, output: json!({"auth": "A1"}), key: None }, false);
                } else {
                    self.fire_timer(false);
                }
            } else {
                self.fire_timer(false);
            }
        }
        self.fail("the execution did not reach a final status".into());
    }

    /// The invariants at the end of a schedule.
    fn check(&self) {
        let machine = self.replayed();
        let status = machine.status();
        if !status.is_final() {
            self.fail(format!("ended {status:?}"));
        }
        let succeeded: Vec<UnitId> = self
            .log
            .iter()
            .filter_map(|r| match &r.event {
                Event::AttemptSucceeded { step, .. } => Some(step.clone()),
                _ => None,
            })
            .collect();
        let mut compensations: HashMap<UnitId, usize> = HashMap::new();
        for recorded in &self.log {
            if let Event::CompensationSucceeded { step, .. } = &recorded.event {
                *compensations.entry(step.clone()).or_default() += 1;
            }
        }
        if compensations.values().any(|&n| n > 1) {
            self.fail(format!("a unit compensated more than once: {compensations:?}"));
        }
        // A unit that skipped itself did nothing: nothing of it is undone.
        for recorded in &self.log {
            if let Event::AttemptSkipped { step, .. } = &recorded.event {
                if self.recorded(|e| matches!(e, Event::CompensationStarted { step: s, .. } if s == step)) > 0 {
                    self.fail(format!("{step} skipped itself but was compensated"));
                }
            }
        }
        match status {
            ExecutionStatus::Succeeded => {
                if self.services.compensate_calls > 0 || !self.services.undone.is_empty() {
                    self.fail("a succeeded execution was compensated".into());
                }
                let expected: HashSet<String> = succeeded.iter().map(|s| format!("sim/{s}")).collect();
                if expected != self.services.applied {
                    self.fail(format!("effects {:?} but recorded successes {expected:?}", self.services.applied));
                }
            }
            ExecutionStatus::Compensated => {
                for unit in &succeeded {
                    if compensations.get(unit) != Some(&1) {
                        self.fail(format!("{unit} succeeded but was compensated {:?} times", compensations.get(unit)));
                    }
                }
                if self.services.applied != self.services.undone {
                    self.fail(format!("applied {:?} but undone {:?}", self.services.applied, self.services.undone));
                }
            }
            _ => {} // a compensation gave up: `failed`, each unit compensated at most once (checked above)
        }
        for outside in &self.accepted {
            let recorded = match outside {
                Outside::Complete { step, .. } => {
                    self.recorded(|e| matches!(e, Event::AsyncStepSucceeded { step: s, .. } if s == step))
                }
                Outside::Fail { step, .. } => {
                    self.recorded(|e| matches!(e, Event::AsyncStepFailed { step: s, .. } if s == step))
                }
                Outside::Cancel { .. } => self.recorded(|e| matches!(e, Event::RollbackRequested { .. })),
                Outside::Retry { .. } => self.recorded(|e| matches!(e, Event::RetryRequested { .. })),
                Outside::Wake => 1,
            };
            if recorded == 0 {
                self.fail(format!("the accepted {outside:?} is not in the log"));
            }
        }
    }
}

#[test]
fn random_schedules_with_crashes_keep_the_saga_invariants() {
    let seeds: Vec<u64> = match std::env::var("STEPWISE_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("STEPWISE_SIM_SEED is a number")],
        Err(_) => (0..2_000).collect(),
    };
    let mut finals: HashMap<&'static str, usize> = HashMap::new();
    let mut crashes = 0;
    let mut retried = 0;
    for seed in seeds.iter().copied() {
        let world = World::new(seed).run();
        world.check();
        *finals.entry(world.status().as_str()).or_default() += 1;
        crashes += world.crashes;
        let accepted_retry = world.accepted.iter().any(|outside| matches!(outside, Outside::Retry { .. }));
        retried += usize::from(world.retries > 0 || accepted_retry);
    }
    if seeds.len() > 1 {
        // The schedules reach every ending, and crash often.
        for status in ["succeeded", "compensated"] {
            assert!(finals.get(status).copied().unwrap_or(0) > seeds.len() / 20, "{finals:?}");
        }
        assert!(crashes > seeds.len(), "{crashes} crashes in {} schedules", seeds.len());
        // Few schedules end `failed` (three failed compensation attempts in a
        // row); those that do are retried, and the retries keep the invariants.
        assert!(retried > 0, "no schedule retried a failed execution: {finals:?}");
    }
}
