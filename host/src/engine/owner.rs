//! The owner of one live execution: the only task, in the only process, that
//! drives it (a task of its own, or the task of a caller that waits for the
//! execution's rest at once: see [`super::here`]).
//!
//! Everything that happens to an execution goes through its owner: call
//! results, events from outside (an async completion or failure, a cancel, a
//! wake-up), events other processes posted to the store's inbox, and reads
//! of its live state. The owner applies each through
//! the state machine, writes what it leads to in one durable append (fenced
//! by its claim) **before** acting on it, answers each caller about its own
//! event, and performs the commands: guest calls and child executions
//! (inside its own task when nothing else is in flight, else as tasks),
//! backoff timers in-process. When the execution is over, or waits
//! for the outside world with nothing in flight, the owner lets go of it in
//! that same append and leaves; the next event adopts it again (see
//! [`adopt`]). When an append fails, the events of its batch were not
//! recorded: the outside events in it go, with the messages still queued, to
//! whoever owns the execution now (another host's claim fenced this one out)
//! or are refused with the store's error. The saga rules are not here; they
//! are in [`super::machine`].

use super::calls::{self, Export, Plugins};
use super::command::Command;
use super::intake::{self, Batch};
use super::machine::{Machine, Unit};
use super::outside::{Answer, Outside, Refusal};
use super::rested::Rested;
use super::view::ExecutionView;
use super::{Engine, EngineError};
use crate::journal::{Event, ExecutionId, ExecutionStatus, FailureKind, StepFailure, Timer, Timestamp};
use crate::store::{Append, Claim, Fence, StoreError};
use futures_util::FutureExt;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// Where a caller learns about the execution once its owner rests (it is
/// over, or waits for the outside world).
pub(crate) type Settled = oneshot::Sender<Result<Rested, EngineError>>;

/// How resting ended.
enum Rest {
    /// Messages came in: the owner claimed the execution again for them.
    Woken(Vec<Input>),
    /// The owner let go (its waiters are told by [`Owner::leave`]).
    Left,
    /// A write failed: the owner stopped; its waiters were told, or handed
    /// on when another host owns the execution now (see [`Owner::abandon`]).
    Abandoned,
}

/// What reaches an owner's mailbox.
pub(crate) enum Message {
    /// An event from outside, answered once recorded (or refused); `settled`
    /// also gets the execution once the owner rests.
    Outside { request: Outside, reply: oneshot::Sender<Result<Answer, Refusal>>, settled: Option<Settled> },
    /// An event another process posted to the store's inbox (answered there).
    Posted { message: i64, request: Outside },
    /// The execution as it is now.
    Show { reply: oneshot::Sender<ExecutionView> },
    /// The execution once its owner rests.
    Wait { settled: Settled },
    /// Become its owner if no live host is (take over after a crash, fire
    /// due timers), or drive it with the claim a scan for due work made;
    /// dropped when another live host owns it (it claimed it since), and by
    /// an owner that is live here already.
    Adopt,
}

/// One thing the owner takes in: a call's (or timer's) event, or a message.
enum Input {
    Event(Event),
    Message(Message),
}

/// A call in flight.
struct Flight {
    unit: Unit,
    /// The event that stands for the call if its task panics.
    fallback: Event,
}

/// A call the owner runs inside its own task while it is the only call in
/// flight (a sequence of steps), so that it does not cost a task, and the
/// wake-ups and hops between threads of one. When another call starts, it
/// moves to a task of its own, as that one gets, to use every core. It runs
/// while the owner waits for the store too ([`beside_inline`]), so it is
/// never paused by the owner's own writes.
struct InlineCall {
    flight: Flight,
    /// The call, its panic caught (guest code yields at every epoch tick,
    /// so the owner's mailbox is read while it runs).
    future: Pin<Box<dyn Future<Output = std::thread::Result<Event>> + Send>>,
    /// Its event, when it finished while the owner waited for the store:
    /// taken in at the owner's next turn (until then it is in flight).
    landed: Option<Event>,
}

impl InlineCall {
    /// Its event, once it finishes (its fallback if it panicked).
    async fn finish(&mut self) -> Event {
        if let Some(event) = self.landed.take() {
            return event;
        }
        match self.future.as_mut().await {
            Ok(event) => event,
            Err(_panic) => self.flight.fallback.clone(),
        }
    }
}

/// Something to do once the batch's events are durable.
enum AfterCommit {
    /// An outside event's answer. The request and its waiter are kept: if the
    /// append is refused, they go to whoever owns the execution now.
    Reply {
        reply: oneshot::Sender<Result<Answer, Refusal>>,
        answer: Result<Answer, Refusal>,
        request: Outside,
        settled: Option<Settled>,
    },
    Answer(i64, Result<Answer, Refusal>),
    Show(oneshot::Sender<ExecutionView>),
}

impl AfterCommit {
    /// The message again, for a batch whose append failed: its event was not
    /// recorded, so it is still to be decided (an inbox message stays in the
    /// inbox for the next owner).
    fn undelivered(self) -> Option<Message> {
        match self {
            AfterCommit::Reply { reply, request, settled, .. } => Some(Message::Outside { request, reply, settled }),
            AfterCommit::Show(reply) => Some(Message::Show { reply }),
            AfterCommit::Answer(..) => None,
        }
    }
}

/// What the store holds of the execution, as this owner last wrote it.
#[derive(Default)]
struct Persisted {
    status: Option<ExecutionStatus>,
    next_due: Option<Option<Timestamp>>,
    released: bool,
}

/// Drives one execution; see the module docs.
pub(super) struct Owner {
    engine: Engine,
    machine: Machine,
    plugins: Plugins,
    next_seq: u64,
    fence: Fence,
    mailbox: mpsc::UnboundedReceiver<Message>,
    tasks: JoinSet<Event>,
    in_flight: HashMap<tokio::task::Id, Flight>,
    inline: Option<InlineCall>,
    timers: Vec<(Timestamp, Timer)>,
    waiters: Vec<Settled>,
    posted: HashSet<i64>,
    persisted: Persisted,
    /// What a reload left to perform, taken by the next step.
    pending_outstanding: Vec<Command>,
    /// The messages of a batch whose append failed, for `abandon`.
    undelivered: Vec<Message>,
}

impl Owner {
    /// An owner of `machine` (whose log holds `next_seq` events), holding
    /// `fence`; the store holds `status` for it.
    pub(super) fn new(
        engine: Engine,
        machine: Machine,
        plugins: Plugins,
        (next_seq, fence, status): (u64, Fence, ExecutionStatus),
        mailbox: mpsc::UnboundedReceiver<Message>,
    ) -> Self {
        let persisted = Persisted { status: Some(status), next_due: None, released: false };
        Self {
            engine,
            machine,
            plugins,
            next_seq,
            fence,
            mailbox,
            tasks: JoinSet::new(),
            in_flight: HashMap::new(),
            inline: None,
            timers: Vec::new(),
            waiters: Vec::new(),
            posted: HashSet::new(),
            persisted,
            pending_outstanding: Vec::new(),
            undelivered: Vec::new(),
        }
    }

    fn id(&self) -> &ExecutionId {
        self.machine.execution_id()
    }

    /// The execution it drives.
    pub(super) fn execution_id(&self) -> &ExecutionId {
        self.machine.execution_id()
    }

    /// The execution as it is now, with this host as its owner.
    fn live_view(&self) -> ExecutionView {
        let mut view = ExecutionView::of(&self.machine);
        view.owner = Some(crate::store::Ownership {
            host: self.engine.shared.host.id().clone(),
            fence: self.fence,
            lease_until: self.engine.shared.host.lease_until(),
        });
        view
    }

    /// Sends the execution to `settled` once the owner rests.
    pub(super) fn wait_for_rest(&mut self, settled: Settled) {
        self.waiters.push(settled);
    }

    /// Records what the creation wrote: when the earliest timer falls due,
    /// and whether nobody drives the execution from the start.
    pub(super) fn created(&mut self, next_due: Option<Timestamp>, released: bool) {
        self.persisted.next_due = Some(next_due);
        self.persisted.released = released;
    }

    /// Drives an execution whose first step was recorded with its creation:
    /// performs `commands`, then takes in messages and results until it rests.
    pub(super) async fn run_created(mut self, commands: Vec<Command>) {
        self.perform(commands);
        self.drive().await
    }

    /// Drives an adopted execution: performs what its replayed log left
    /// outstanding, takes in what other processes posted for it, then goes on
    /// until it rests.
    pub(super) async fn run_adopted(mut self, mut outstanding: Vec<Command>, posted: Vec<Message>) {
        // Calls the log left to make are started first, in a step of their
        // own: a message taken after sees them in flight (a wake-up would
        // otherwise start a waiting child's call a second time).
        if outstanding.iter().any(Command::is_call) {
            match self.step(Vec::new(), std::mem::take(&mut outstanding)).await {
                Ok(commands) => self.perform(commands),
                Err(error) => return self.abandon(error).await,
            }
        }
        let mut inputs: Vec<Input> = posted.into_iter().map(Input::Message).collect();
        // The messages that woke it (queued before it was adopted) are taken
        // now too. Left for later, an execution at rest (one waiting for a
        // completion) would let go first and claim again to take them: two
        // writes more per completion.
        while let Ok(message) = self.mailbox.try_recv() {
            inputs.push(Input::Message(message));
        }
        match self.step(inputs, outstanding).await {
            Ok(commands) => self.perform(commands),
            Err(error) => return self.abandon(error).await,
        }
        self.drive().await
    }

    async fn drive(mut self) {
        loop {
            let inputs = if self.is_resting() {
                match self.rest().await {
                    Rest::Woken(woken) => woken,
                    Rest::Left => return self.leave(),
                    Rest::Abandoned => return,
                }
            } else {
                self.next_inputs().await
            };
            let outstanding = std::mem::take(&mut self.pending_outstanding);
            match self.step(inputs, outstanding).await {
                Ok(commands) => self.perform(commands),
                Err(error) => return self.abandon(error).await,
            }
        }
    }

    /// Waits for the next input, then takes everything else already there,
    /// so that one append records them all.
    async fn next_inputs(&mut self) -> Vec<Input> {
        // Inline calls that finish at once never make the task wait: give
        // the worker back to other tasks when its budget says so.
        tokio::task::consume_budget().await;
        let mut inputs = Vec::new();
        let due = self.timers.iter().map(|(due, _)| *due).min();
        let timer = async move {
            match due {
                Some(due) => tokio::time::sleep(Timestamp::now().until(due)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            message = self.mailbox.recv() => match message {
                Some(message) => inputs.push(Input::Message(message)),
                // The live table holds a sender while the owner lives.
                None => tracing::error!(execution = %self.id(), "the mailbox closed under its owner"),
            },
            joined = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                if let Some(event) = self.landed(joined) {
                    inputs.push(Input::Event(event));
                }
            }
            event = next_inline(&mut self.inline), if self.inline.is_some() => {
                self.inline = None;
                inputs.push(Input::Event(event));
            }
            () = timer => {}
        }
        while let Ok(message) = self.mailbox.try_recv() {
            inputs.push(Input::Message(message));
        }
        while let Some(joined) = self.tasks.try_join_next_with_id() {
            inputs.extend(self.landed(Some(joined)).map(Input::Event));
        }
        if let Some(event) = self.inline.as_mut().and_then(|call| call.landed.take()) {
            self.inline = None;
            inputs.push(Input::Event(event));
        }
        inputs.extend(self.due_timers().into_iter().map(Input::Event));
        inputs
    }

    /// The event a finished task yields (its fallback when it panicked).
    fn landed(&mut self, joined: Option<Result<(tokio::task::Id, Event), tokio::task::JoinError>>) -> Option<Event> {
        match joined? {
            Ok((id, event)) => {
                self.in_flight.remove(&id);
                Some(event)
            }
            Err(error) => {
                let flight = self.in_flight.remove(&error.id())?;
                error.is_panic().then_some(flight.fallback)
            }
        }
    }

    /// The timers due now that still mean something, as events.
    fn due_timers(&mut self) -> Vec<Event> {
        if self.timers.is_empty() {
            return Vec::new();
        }
        let now = Timestamp::now();
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.timers).into_iter().partition(|(at, _)| *at <= now);
        self.timers = later;
        due.into_iter()
            .filter(|(_, timer)| self.machine.is_armed(timer))
            .map(|(_, timer)| Event::TimerFired { timer })
            .collect()
    }

    /// Applies `inputs` (and what they lead to), writes the events in one
    /// durable append, then answers the callers; returns the commands to
    /// perform. A caller's answer is decided on the state its own event
    /// meets, so of two racing completions exactly one is accepted.
    async fn step(&mut self, inputs: Vec<Input>, outstanding: Vec<Command>) -> Result<Vec<Command>, EngineError> {
        let before = self.machine.status();
        let now = Timestamp::now();
        let mut batch = Batch::resuming(outstanding);
        let mut after = Vec::new();
        for input in inputs {
            match input {
                Input::Event(event) => intake::record(&mut self.machine, now, event, &mut batch),
                Input::Message(message) => self.take_message(message, now, &mut batch, &mut after),
            }
        }
        intake::record_all(&mut self.machine, now, VecDeque::new(), &mut batch);
        let Batch { recorded, commands, .. } = batch;
        let status = self.machine.status();
        let next_due = self.machine.next_due();
        let calls_ahead = self.calls_in_flight() || commands.iter().any(Command::is_call);
        let release = status.is_final() || (status == ExecutionStatus::Waiting && !calls_ahead);
        let changed_status = (status != before || self.persisted.status != Some(status)).then(|| {
            let at = if status.is_final() { self.machine.finished_at() } else { None };
            (status, at.unwrap_or_else(Timestamp::now))
        });
        let unchanged = recorded.is_empty()
            && changed_status.is_none()
            && self.persisted.next_due == Some(next_due)
            && (!release || self.persisted.released);
        if !unchanged {
            let count = recorded.len() as u64;
            // Answers to inbox messages go with the events they led to.
            let mut answers = Vec::new();
            after.retain(|done| match done {
                AfterCommit::Answer(message, answer) => {
                    answers.push((*message, serde_json::to_string(answer).expect("answers serialize")));
                    false
                }
                _ => true,
            });
            // A child that ends wakes its parent in the same write, so that
            // the parent learns of it even if this process dies now.
            let ends = status.is_final() && changed_status.is_some();
            let wake = if ends { self.machine.origin().parent.clone() } else { None };
            let append = Append {
                id: self.id().clone(),
                fence: self.fence,
                seq: self.next_seq,
                events: recorded,
                status: changed_status,
                next_due,
                release,
                wake,
                answers,
            };
            if let Err(error) = beside_inline(&mut self.inline, self.engine.shared.store.append(append)).await {
                if matches!(error, StoreError::Fenced(..)) {
                    self.engine.shared.metrics.fencing_refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                self.undelivered = after.into_iter().filter_map(AfterCommit::undelivered).collect();
                return Err(EngineError::Store(error));
            }
            self.next_seq += count;
            self.persisted = Persisted { status: Some(status), next_due: Some(next_due), released: release };
            if status.is_final() && changed_status.is_some() {
                self.engine.finished(&self.machine, status);
            }
        }
        for done in after {
            self.settle(done).await;
        }
        Ok(commands)
    }

    /// Sends an answer that waited for the batch to be durable.
    async fn settle(&mut self, done: AfterCommit) {
        match done {
            AfterCommit::Reply { reply, answer, settled, .. } => {
                if let (Ok(_), Some(settled)) = (&answer, settled) {
                    self.waiters.push(settled);
                }
                drop(reply.send(answer));
            }
            AfterCommit::Show(reply) => drop(reply.send(self.live_view())),
            AfterCommit::Answer(message, answer) => {
                let text = serde_json::to_string(&answer).expect("answers serialize");
                let answered = self.engine.shared.store.answer(message, &text);
                if let Err(error) = beside_inline(&mut self.inline, answered).await {
                    tracing::warn!(execution = %self.id(), message, "answering an inbox message: {error}");
                }
            }
        }
    }

    /// Takes one message into the batch: an outside event is decided on the
    /// state as it is now (after the batch's earlier events).
    fn take_message(&mut self, message: Message, now: Timestamp, batch: &mut Batch, after: &mut Vec<AfterCommit>) {
        match message {
            Message::Outside { request, reply, settled } => {
                let answer = self.take_outside(request.clone(), now, batch);
                after.push(AfterCommit::Reply { reply, answer, request, settled });
            }
            Message::Posted { message, request } => {
                if self.posted.insert(message) {
                    let answer = self.take_outside(request, now, batch);
                    after.push(AfterCommit::Answer(message, answer));
                }
            }
            Message::Show { reply } => after.push(AfterCommit::Show(reply)),
            Message::Wait { settled } => self.waiters.push(settled),
            Message::Adopt => {}
        }
    }

    fn take_outside(&mut self, request: Outside, now: Timestamp, batch: &mut Batch) -> Result<Answer, Refusal> {
        let busy: HashSet<Unit> = self.flights().map(|flight| flight.unit).collect();
        intake::take_outside(&mut self.machine, now, request, &busy, batch)
    }

    /// Performs commands: calls are made (inline or as tasks), timers are armed.
    fn perform(&mut self, commands: Vec<Command>) {
        for command in commands {
            match command {
                Command::Invoke { unit, attempt, input } => self.spawn_call(unit, attempt, Export::Invoke, input),
                Command::Compensate { unit, attempt, data } => self.spawn_call(unit, attempt, Export::Compensate, data),
                Command::StartTimer { timer, due } => self.timers.push((due, timer)),
                // The status says when the execution is over: a `Finish`
                // left from before a rollback request must not end it.
                Command::Finish | Command::Decide { .. } => {}
            }
        }
        let machine = &self.machine;
        self.timers.retain(|(_, timer)| machine.is_armed(timer));
    }

    fn spawn_call(&mut self, unit: Unit, attempt: u32, export: Export, payload: serde_json::Value) {
        let fallback = calls::failed_event(
            export,
            self.machine.label(unit),
            attempt,
            StepFailure::new(FailureKind::Trap, "the host task running this call panicked"),
            Vec::new(),
            None,
        );
        let call = calls::call(&self.engine, &self.machine, &self.plugins, unit, attempt, export, payload);
        let flight = Flight { unit, fallback };
        if let Some(inline) = self.inline.take() {
            self.move_to_task(inline);
        }
        if self.calls_in_flight() {
            let handle = self.tasks.spawn(call);
            self.in_flight.insert(handle.id(), flight);
        } else {
            let future = Box::pin(std::panic::AssertUnwindSafe(call).catch_unwind());
            self.inline = Some(InlineCall { flight, future, landed: None });
        }
    }

    /// Goes on with the inline call in a task of its own (a panic in it is
    /// then the task's, which its fallback stands for).
    fn move_to_task(&mut self, inline: InlineCall) {
        let InlineCall { flight, future, landed } = inline;
        let handle = match landed {
            Some(event) => self.tasks.spawn(async move { event }),
            None => {
                self.tasks.spawn(async move { future.await.unwrap_or_else(|panic| std::panic::resume_unwind(panic)) })
            }
        };
        self.in_flight.insert(handle.id(), flight);
    }

    /// The calls in flight, in tasks and inline.
    fn flights(&self) -> impl Iterator<Item = &Flight> {
        self.in_flight.values().chain(self.inline.as_ref().map(|call| &call.flight))
    }

    fn calls_in_flight(&self) -> bool {
        self.flights().next().is_some()
    }

    /// Whether the owner can let go: the execution is over, or waits for the
    /// outside world with no call in flight (its deadlines are in the store).
    fn is_resting(&self) -> bool {
        let status = self.machine.status();
        if status.is_final() || (status == ExecutionStatus::Waiting && !self.calls_in_flight()) {
            return true;
        }
        if !self.calls_in_flight() && self.timers.is_empty() {
            tracing::error!(execution = %self.id(), status = status.as_str(), "nothing in flight and nothing armed");
            return true;
        }
        false
    }

    /// Lets go of the execution: leaves the live table unless messages
    /// arrived meanwhile, in which case it claims the execution again and
    /// returns them. Reads are answered without owning it.
    async fn rest(&mut self) -> Rest {
        // Only an execution that is over rests with a call in flight; its
        // event would be ignored (tasks go with the owner when it leaves).
        // Not polled from here on, the call is dropped now.
        self.inline = None;
        if !self.persisted.released {
            let release = Append {
                id: self.id().clone(),
                fence: self.fence,
                seq: self.next_seq,
                events: Vec::new(),
                status: None,
                next_due: self.machine.next_due(),
                release: true,
                wake: None,
                answers: Vec::new(),
            };
            if let Err(error) = self.engine.shared.store.append(release).await {
                self.abandon(EngineError::Store(error)).await;
                return Rest::Abandoned;
            }
            self.persisted.released = true;
        }
        loop {
            let arrived = self.engine.shared.live.leave_or_take(self.machine.execution_id(), &mut self.mailbox);
            if arrived.is_empty() {
                return Rest::Left;
            }
            let mut writes = Vec::new();
            for message in arrived {
                match message {
                    Message::Show { reply } => drop(reply.send(ExecutionView::of(&self.machine))),
                    Message::Wait { settled } => drop(settled.send(Ok(Rested::from(ExecutionView::of(&self.machine))))),
                    Message::Adopt => {}
                    message => writes.push(Input::Message(message)),
                }
            }
            if writes.is_empty() {
                continue;
            }
            match self.engine.shared.store.claim(self.machine.execution_id(), self.engine.shared.host.id()).await {
                Ok(Claim::Claimed { fence, .. }) => {
                    self.engine.shared.metrics.claims.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let untouched = fence == self.fence + 1;
                    self.fence = fence;
                    self.persisted.released = false;
                    if !untouched {
                        // Another process drove it meanwhile: start from its log.
                        if let Err(error) = self.reload().await {
                            self.refuse(writes, &error);
                            self.abandon(error).await;
                            return Rest::Abandoned;
                        }
                    }
                    return Rest::Woken(writes);
                }
                Ok(Claim::Held(_)) => {
                    let messages = writes.into_iter().filter_map(|input| match input {
                        Input::Message(message) => Some(message),
                        Input::Event(_) => None,
                    });
                    for message in messages {
                        super::forward::to_owner_elsewhere(&self.engine, self.machine.execution_id(), message).await;
                    }
                }
                Ok(Claim::NotFound) | Err(_) => {
                    let error = EngineError::NotFound(self.machine.execution_id().clone());
                    self.refuse(writes, &error);
                }
            }
        }
    }

    /// Replaces the state by a replay of the log (another process appended
    /// since this owner rested) and arms what it left outstanding.
    async fn reload(&mut self) -> Result<(), EngineError> {
        let replayed = self.engine.replay(self.machine.execution_id()).await?;
        self.machine = replayed.machine;
        self.next_seq = replayed.events;
        self.persisted = Persisted { status: Some(replayed.status), next_due: None, released: false };
        self.timers.clear();
        let outstanding = self.machine.outstanding_commands();
        self.pending_outstanding = outstanding;
        Ok(())
    }

    /// A child that is over tells its parent (before its own callers hear of
    /// it), which looks at its waiting workflow steps again. The store was
    /// told in the same write (a wake-up in the timer index), in case this
    /// process dies first.
    fn wake_parent(&self) {
        if let (true, Some(parent)) = (self.machine.status().is_final(), &self.machine.origin().parent) {
            let (reply, _) = oneshot::channel();
            self.engine.route(parent, Message::Outside { request: Outside::Wake, reply, settled: None });
        }
    }

    /// Leaves for good (the execution rests and no message came in): wakes a
    /// parent, and hands the state as it is to everyone waiting for the rest
    /// (nothing changes it any more; the view is built by a waiter that asks).
    fn leave(self) {
        self.wake_parent();
        let Owner { machine, waiters, .. } = self;
        if waiters.is_empty() {
            return;
        }
        let machine = std::sync::Arc::new(machine);
        for waiter in waiters {
            let _ = waiter.send(Ok(Rested::left(machine.clone())));
        }
    }

    /// Stops driving after a failed write (the store failed, or another host
    /// claimed the execution): calls in flight are dropped (the next owner
    /// makes them again, with the same idempotency keys), callers are told,
    /// and messages still queued go to whoever owns it now.
    async fn abandon(&mut self, error: EngineError) {
        self.tasks.abort_all();
        // Dropped once the execution is let go and its waiters told (a call
        // dropped in the middle runs the sandbox's drop code), and before
        // any wait: paused, it could hold a pooled connection.
        let inline = self.inline.take();
        let id = self.machine.execution_id().clone();
        tracing::warn!(execution = %id, "stopped driving: {error}");
        let fenced = matches!(error, EngineError::Store(StoreError::Fenced(..)));
        if !fenced {
            // Still ours in the store: let go, or no host would claim it while this one lives.
            super::adopt::release_after_failure(&self.engine, &id, self.fence);
        }
        // The failed batch's messages first (they came first), then those
        // queued. Waiters wait for the execution wherever it is driven now.
        let mut arrived = std::mem::take(&mut self.undelivered);
        for settled in self.waiters.drain(..) {
            if fenced {
                arrived.push(Message::Wait { settled });
            } else {
                let _ = settled.send(Err(EngineError::Lost(format!("execution `{id}`: {error}"))));
            }
        }
        drop(inline);
        loop {
            for message in arrived {
                if fenced {
                    super::forward::to_owner_elsewhere(&self.engine, &id, message).await;
                } else {
                    self.refuse(vec![Input::Message(message)], &error);
                }
            }
            arrived = self.engine.shared.live.leave_or_take(&id, &mut self.mailbox);
            if arrived.is_empty() {
                break;
            }
        }
    }

    /// Answers messages with an error.
    fn refuse(&mut self, inputs: Vec<Input>, error: &EngineError) {
        for input in inputs {
            let Input::Message(message) = input else { continue };
            match message {
                Message::Outside { reply, .. } => drop(reply.send(Err(Refusal::Unavailable(error.to_string())))),
                // The machine may hold events that were not recorded: the
                // reader, left without an answer, reads the store instead.
                Message::Show { reply } => drop(reply),
                Message::Wait { settled } => drop(settled.send(Err(EngineError::Lost(error.to_string())))),
                Message::Posted { .. } | Message::Adopt => {}
            }
        }
    }
}

/// The inline call's event, once it finishes.
async fn next_inline(inline: &mut Option<InlineCall>) -> Event {
    match inline {
        Some(call) => call.finish().await,
        None => std::future::pending().await,
    }
}

/// Awaits `work` (a write to the store) while the inline call goes on
/// running: if it finishes meanwhile, its event waits in the call for the
/// owner's next turn. Paused, a call would spend its deadline waiting, and
/// could hold a pooled database connection it cannot use.
async fn beside_inline<T>(inline: &mut Option<InlineCall>, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    loop {
        let running = inline.as_ref().is_some_and(|call| call.landed.is_none());
        tokio::select! {
            done = &mut work => return done,
            event = next_inline(inline), if running => {
                inline.as_mut().expect("the inline call is running").landed = Some(event);
            }
        }
    }
}

impl Command {
    /// Whether the command makes a call.
    fn is_call(&self) -> bool {
        matches!(self, Command::Invoke { .. } | Command::Compensate { .. })
    }
}
