//! Forward progress: which nodes are ready, the decisions that depend on code
//! (a `when` condition, a `for_each` list, a transform), starting units up to
//! their concurrency, succeeding units and nodes, and finishing successfully.
//!
//! A decision is computed once, handed to the owner as [`Command::Decide`],
//! recorded as [`Event::NodeDecided`](crate::journal::Event::NodeDecided) and
//! only then applied, so a replay applies the recorded decision and never
//! evaluates the expression again (logs of version 1, written before
//! decisions were recorded, are replayed by evaluating as they were run).
//! Failures go to [`super::retry`]; rolling back to [`super::rollback`].

use super::{Machine, NodePhase, NodeState, StepPhase, StepState, Unit};
use crate::engine::command::Command;
use crate::engine::timeline::TimelineKind;
use crate::journal::json::check_depth;
use crate::journal::{ExecutionStatus, FailureKind, NodeDecision, StepFailure, Timer, Timestamp, UnitId};
use crate::workflow::{OnPermanentFailure, StepKind};
use serde_json::{Map, Value};

impl Machine {
    /// Moves the execution forward after a change: starts ready nodes and
    /// units, finishes, or drives the compensation sequence.
    pub(super) fn advance(&mut self, at: Timestamp, commands: &mut Vec<Command>) {
        if self.status.is_forward() {
            self.start_ready_nodes(at, commands);
        }
        if self.status.is_forward() && self.nodes.iter().all(NodeState::is_settled) {
            self.finish_successfully(at, commands);
        }
        if self.status.is_forward() {
            let busy = self.nodes.iter().flat_map(|n| &n.elements).any(|e| e.phase.is_busy());
            let deciding = self.nodes.iter().any(|n| n.phase == NodePhase::Deciding);
            self.status = if busy || deciding { ExecutionStatus::Running } else { ExecutionStatus::Waiting };
        }
        if self.status == ExecutionStatus::Compensating {
            self.advance_compensation(at, commands);
        }
    }

    /// Starts every node whose dependencies are settled, and the units of
    /// started nodes that their concurrency allows; repeats while starting a
    /// node settles it at once (skipped, empty fan-out or hook).
    fn start_ready_nodes(&mut self, at: Timestamp, commands: &mut Vec<Command>) {
        loop {
            let mut settled_one = false;
            for node in 0..self.nodes.len() {
                if !self.status.is_forward() {
                    return;
                }
                let was_settled = self.nodes[node].is_settled();
                let ready = self.nodes[node].phase == NodePhase::Pending
                    && self.workflow.steps()[node].dependencies.iter().all(|&d| self.nodes[d].is_settled());
                if ready {
                    self.start_node(at, node, commands);
                }
                if self.nodes[node].phase == NodePhase::Started {
                    self.start_units(at, node, commands);
                }
                // Settled here (skipped, empty, or every unit failed to start
                // and its step went on): nodes listed before it get another look.
                settled_one |= !was_settled && self.nodes[node].is_settled();
            }
            if !settled_one {
                return;
            }
        }
    }

    /// Starts a ready node: skips it when it reads a skipped node's output,
    /// asks for its decision when one depends on code, else expands it.
    fn start_node(&mut self, at: Timestamp, node: usize, commands: &mut Vec<Command>) {
        let workflow = self.workflow.clone();
        let step = &workflow.steps()[node];
        self.nodes[node].started_at = Some(at);
        if let Some(&skipped) =
            step.data_dependencies.iter().find(|&&d| matches!(self.nodes[d].phase, NodePhase::Skipped { .. }))
        {
            let reason = format!("needs the output of skipped step `{}`", workflow.steps()[skipped].id);
            return self.skip_node(at, node, reason);
        }
        let needs_decision = step.when.is_some() || step.for_each.is_some() || step.kind.is_transform();
        if !needs_decision {
            return self.apply_decision(at, node, NodeDecision::Run);
        }
        let decision = self.decide(node);
        if self.log_version >= 2 {
            self.nodes[node].phase = NodePhase::Deciding;
            commands.push(Command::Decide { step: step.id.clone(), decision });
        } else {
            self.apply_decision(at, node, decision);
        }
    }

    /// Evaluates a ready node's condition, list or transform. Reads the state
    /// and changes nothing: the result is applied once it is recorded.
    pub(super) fn decide(&self, node: usize) -> NodeDecision {
        let step = &self.workflow.steps()[node];
        let scope = self.scope(None);
        if let Some(condition) = &step.when {
            match condition.evaluate_condition(&scope) {
                Ok(true) => {}
                Ok(false) => {
                    return NodeDecision::Skip { reason: format!("condition `{}` is false", condition.source()) }
                }
                Err(message) => {
                    let failure = StepFailure::new(FailureKind::Expression, format!("condition {message}"));
                    return NodeDecision::Fail { failure };
                }
            }
        }
        if let StepKind::Transform(expression) = &step.kind {
            return match expression.evaluate(&scope) {
                Ok(output) => match check_depth(&output) {
                    Ok(()) => NodeDecision::Output { output },
                    Err(error) => NodeDecision::Fail {
                        failure: StepFailure::new(FailureKind::Expression, format!("transform: {error}")),
                    },
                },
                Err(message) => NodeDecision::Fail {
                    failure: StepFailure::new(FailureKind::Expression, format!("transform {message}")),
                },
            };
        }
        let Some(for_each) = &step.for_each else { return NodeDecision::Run };
        match for_each.items.resolve(&scope) {
            Ok(Value::Array(items)) => NodeDecision::Expand { items: items.clone() },
            Ok(other) => NodeDecision::Fail {
                failure: StepFailure::new(
                    FailureKind::InputMapping,
                    format!("`for_each` = `{}` is not an array but {other}", for_each.items),
                ),
            },
            Err(message) => NodeDecision::Fail {
                failure: StepFailure::new(FailureKind::InputMapping, format!("`for_each`: {message}")),
            },
        }
    }

    /// Applies a node's decision (recorded, or made without code).
    pub(super) fn apply_decision(&mut self, at: Timestamp, node: usize, decision: NodeDecision) {
        let workflow = self.workflow.clone();
        let step = &workflow.steps()[node];
        let count = match decision {
            NodeDecision::Skip { reason } => return self.skip_node(at, node, reason),
            NodeDecision::Fail { failure } => return self.fail_node(at, node, failure),
            NodeDecision::Output { output } => return self.transform_succeeded(at, node, output),
            NodeDecision::Run if step.kind.is_transform() || step.for_each.is_some() => {
                // Only a malformed log records `run` for these: evaluate them
                // as a version 1 log would.
                let decision = self.decide(node);
                return self.apply_decision(at, node, decision);
            }
            NodeDecision::Run if step.is_hook() => self.handlers_of(node).len(),
            NodeDecision::Run => 1,
            NodeDecision::Expand { items } => {
                let count = items.len();
                self.nodes[node].items = Some(items);
                count
            }
        };
        self.nodes[node].elements = vec![StepState::new(); count];
        self.nodes[node].phase = NodePhase::Started;
        if step.is_hook() || step.for_each.is_some() {
            self.record(at, TimelineKind::StepExpanded { step: UnitId::step(step.id.clone()), units: count });
        }
        if count == 0 {
            self.succeed_node(at, node);
        }
    }

    /// A transform is one unit, succeeded at once with its decided output.
    fn transform_succeeded(&mut self, at: Timestamp, node: usize, output: Value) {
        let step = UnitId::step(self.workflow.steps()[node].id.clone());
        let unit = Unit::single(node);
        self.nodes[node].elements = vec![StepState::new()];
        let state = self.unit_mut(unit);
        state.attempts = 1;
        state.started_at = Some(at);
        state.phase = StepPhase::Succeeded;
        state.output = Some(output);
        state.finished_at = Some(at);
        self.record(at, TimelineKind::StepStarted { step: step.clone(), attempt: 1 });
        self.record(at, TimelineKind::StepSucceeded { step, attempt: 1 });
        self.succeed_node(at, node);
    }

    fn skip_node(&mut self, at: Timestamp, node: usize, reason: String) {
        let step = UnitId::step(self.workflow.steps()[node].id.clone());
        let state = &mut self.nodes[node];
        state.phase = NodePhase::Skipped { reason: reason.clone() };
        state.finished_at = Some(at);
        self.record(at, TimelineKind::StepSkipped { step, reason });
    }

    /// Starts pending units of a started node, in order, up to its concurrency:
    /// a fan-out's `max_concurrency`, one at a time for a hook's handlers.
    fn start_units(&mut self, at: Timestamp, node: usize, commands: &mut Vec<Command>) {
        let step = &self.workflow.steps()[node];
        let limit = step.for_each.as_ref().map_or(1, |for_each| for_each.max_concurrency);
        let mut active = self.nodes[node].elements.iter().filter(|e| e.phase.is_active()).count();
        for element in 0..self.nodes[node].elements.len() {
            if active >= limit || !self.status.is_forward() {
                return;
            }
            if self.nodes[node].elements[element].phase == StepPhase::Pending {
                self.start_attempt(at, Unit { node, element }, 1, commands);
                // An element whose input failed to render (and whose step goes
                // on past failures) holds no slot.
                if self.nodes[node].elements[element].phase.is_active() {
                    active += 1;
                }
            }
        }
    }

    /// Starts attempt `attempt` of a unit, or fails it if its input cannot be rendered.
    pub(super) fn start_attempt(&mut self, at: Timestamp, unit: Unit, attempt: u32, commands: &mut Vec<Command>) {
        match self.render_input(unit) {
            Ok(input) => {
                self.unit_mut(unit).phase = StepPhase::Running { attempt };
                commands.push(Command::Invoke { unit, attempt, input });
            }
            Err(message) => {
                let failure = StepFailure::new(FailureKind::InputMapping, format!("cannot build the input: {message}"));
                self.unit_mut(unit).attempts = attempt.saturating_sub(1);
                self.fail_unit(at, unit, failure);
            }
        }
    }

    /// An `invoke` attempt returned: the unit succeeds, or (an async step)
    /// waits for its completion from outside, with its timeout armed. An
    /// async unit counts as completed for the rollback from then on: if it
    /// then fails from outside, times out or is cancelled while waiting, it
    /// is compensated with the data its invoke returned.
    pub(super) fn attempt_succeeded(
        &mut self,
        at: Timestamp,
        unit: Unit,
        attempt: u32,
        output: Value,
        compensation: Option<Value>,
        commands: &mut Vec<Command>,
    ) {
        self.unit_mut(unit).compensation_data = compensation;
        let definition = &self.workflow.steps()[unit.node];
        if definition.is_async {
            let due = definition.timeout.map(|timeout| at.plus(timeout));
            let step = self.label(unit);
            self.unit_mut(unit).phase = StepPhase::Waiting { due };
            // Its invoke started work that only its compensation undoes:
            // whatever the outside reports later, a rollback compensates it.
            self.completion_order.push(unit);
            self.record(at, TimelineKind::StepWaiting { step: step.clone(), attempt, timeout_at: due });
            if let Some(due) = due {
                commands.push(Command::StartTimer { timer: Timer::AsyncTimeout { step }, due });
            }
        } else {
            self.succeed_unit(at, unit, attempt, output);
        }
    }

    pub(super) fn succeed_unit(&mut self, at: Timestamp, unit: Unit, attempt: u32, output: Value) {
        let state = self.unit_mut(unit);
        state.phase = StepPhase::Succeeded;
        state.output = Some(output);
        state.finished_at = Some(at);
        if !self.workflow.steps()[unit.node].is_async {
            self.completion_order.push(unit); // an async unit is in it since its invoke returned
        }
        let step = self.label(unit);
        self.record(at, TimelineKind::StepSucceeded { step, attempt });
        self.settle_node_if_done(at, unit.node);
    }

    /// An `invoke` attempt said the step had nothing to do: the unit is
    /// skipped and never compensated. A plain step's node is skipped with it
    /// (and so are the nodes that read its output); a fan-out element's or a
    /// hook handler's output is `null`.
    pub(super) fn attempt_skipped(&mut self, at: Timestamp, unit: Unit, reason: String) {
        let state = self.unit_mut(unit);
        state.phase = StepPhase::Skipped;
        state.skip_reason = Some(reason.clone());
        state.finished_at = Some(at);
        let step = self.label(unit);
        self.record(at, TimelineKind::StepSkipped { step, reason: format!("the step skipped itself: {reason}") });
        if self.status.is_forward() {
            self.settle_node_if_done(at, unit.node);
        } else if self.is_plain(unit.node) {
            // Rolling back: nothing starts after it, but it reads as skipped.
            self.mark_self_skipped(at, unit.node, &reason);
        }
    }

    /// A plain step: one unit, neither a fan-out nor a hook.
    fn is_plain(&self, node: usize) -> bool {
        let step = &self.workflow.steps()[node];
        step.for_each.is_none() && !step.is_hook()
    }

    /// Marks a plain step's node skipped by its own guest; its timeline
    /// entry was recorded with the unit's skip.
    fn mark_self_skipped(&mut self, at: Timestamp, node: usize, reason: &str) {
        let state = &mut self.nodes[node];
        state.phase = NodePhase::Skipped { reason: format!("the step skipped itself: {reason}") };
        state.finished_at = Some(at);
    }

    /// A unit failed for good, and its step says to go on (`on_permanent_failure`
    /// `skip` or `continue`): the unit stays failed (nothing of it is
    /// compensated, its invoke having failed), its output is its error
    /// (`continue`) or nothing (`skip`), and the execution goes on.
    pub(super) fn tolerate_failure(
        &mut self,
        at: Timestamp,
        unit: Unit,
        policy: OnPermanentFailure,
        failure: StepFailure,
    ) {
        let state = self.unit_mut(unit);
        state.tolerated = true;
        if policy == OnPermanentFailure::Continue {
            // An async step whose invoke returned is still compensated on a
            // later rollback: its compensation gets what its invoke returned,
            // never this error.
            state.compensation_data.get_or_insert(Value::Null);
            state.output = Some(serde_json::json!({ "error": failure }));
        }
        let step = self.label(unit);
        let outcome = if policy == OnPermanentFailure::Continue { "continue" } else { "skip" };
        self.record(at, TimelineKind::FailureTolerated { step, on_permanent_failure: outcome.to_string() });
        self.settle_node_if_done(at, unit.node);
    }

    /// Once every unit of a node succeeded or failed in a tolerated way, the
    /// node succeeds; a single unit that failed with `skip` skips its node.
    fn settle_node_if_done(&mut self, at: Timestamp, node: usize) {
        let elements = &self.nodes[node].elements;
        let settled = |element: &StepState| {
            matches!(element.phase, StepPhase::Succeeded | StepPhase::Skipped) || element.tolerated
        };
        if !elements.iter().all(settled) {
            return;
        }
        if let (true, [StepState { skip_reason: Some(reason), .. }]) = (self.is_plain(node), elements.as_slice()) {
            let reason = reason.clone();
            return self.mark_self_skipped(at, node, &reason);
        }
        let step = &self.workflow.steps()[node];
        let single_skipped = step.for_each.is_none()
            && step.on_permanent_failure == OnPermanentFailure::Skip
            && elements.iter().all(|element| element.tolerated);
        if single_skipped {
            let error = elements[0].error.as_ref().map(ToString::to_string).unwrap_or_default();
            self.skip_node(at, node, format!("it failed ({error}) and its on_permanent_failure is `skip`"));
        } else {
            self.succeed_node(at, node);
        }
    }

    /// Marks a node succeeded and builds its output from its units.
    fn succeed_node(&mut self, at: Timestamp, node: usize) {
        let step = &self.workflow.steps()[node];
        let outputs = self.nodes[node].elements.iter().map(|e| e.output.clone().unwrap_or(Value::Null));
        let output = if step.is_hook() {
            let list: Vec<Value> = outputs.collect();
            let handlers: Map<String, Value> = self
                .handlers_of(node)
                .iter()
                .zip(&list)
                .map(|(handler, output)| (handler.plugin.to_string(), serde_json::json!({ "output": output })))
                .collect();
            serde_json::json!({ "output": list, "handlers": handlers })
        } else if step.for_each.is_some() {
            Value::Array(outputs.collect())
        } else {
            self.nodes[node].elements[0].output.clone().unwrap_or(Value::Null)
        };
        let state = &mut self.nodes[node];
        state.phase = NodePhase::Succeeded;
        state.output = Some(output);
        state.finished_at = Some(at);
    }

    fn finish_successfully(&mut self, at: Timestamp, commands: &mut Vec<Command>) {
        let rendered = match self.workflow.output() {
            Some(template) => template.render(&self.scope(None)),
            None => Ok(Value::Object(
                self.workflow
                    .steps()
                    .iter()
                    .zip(&self.nodes)
                    .filter(|(step, _)| !step.is_hook())
                    .map(|(step, state)| (step.id.to_string(), state.output.clone().unwrap_or(Value::Null)))
                    .collect(),
            )),
        };
        match rendered {
            Ok(output) => {
                self.output = Some(output);
                self.status = ExecutionStatus::Succeeded;
                self.finished_at = Some(at);
                self.endings += 1;
                self.record(at, TimelineKind::ExecutionSucceeded);
                commands.push(Command::Finish);
            }
            Err(message) => {
                let failure = StepFailure::new(
                    FailureKind::OutputMapping,
                    format!("cannot build the workflow output: {message}"),
                );
                self.record(at, TimelineKind::OutputFailed { error: failure.clone() });
                self.begin_rollback(at, None, failure);
            }
        }
    }
}
