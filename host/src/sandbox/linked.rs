//! [`LinkedStep`]: a linked component and the world its exports were built
//! against, `step` (invoke returns a response) or `skippable-step` (invoke
//! may say the step skipped itself). It instantiates the component and
//! makes the one call a store serves.

use super::bindings::skippable::{SkippableStep, SkippableStepPre};
use super::bindings::stepwise::step::types::{StepContext, StepError, StepOutcome};
use super::bindings::{Step, StepPre};
use super::HostState;
use wasmtime::component::InstancePre;
use wasmtime::Store;

/// A component linked against the host, ready to instantiate.
pub enum LinkedStep {
    /// Built on `step` (or one of its smaller worlds).
    Plain(StepPre<HostState>),
    /// Built on `skippable-step` (or one of its smaller worlds).
    Skippable(SkippableStepPre<HostState>),
}

/// What the guest's export returned; `invoke` of either world as an outcome.
pub(super) enum Returned {
    Invoked(Result<StepOutcome, StepError>),
    Compensated(Result<(), StepError>),
}

/// An instance of either world.
enum Instance {
    Plain(Step),
    Skippable(SkippableStep),
}

impl LinkedStep {
    /// Recognises the world of the component's exports; the error says what
    /// neither world accepted.
    pub fn new(instance_pre: InstancePre<HostState>) -> Result<Self, String> {
        let plain = match StepPre::new(instance_pre.clone()) {
            Ok(pre) => return Ok(Self::Plain(pre)),
            Err(error) => error,
        };
        SkippableStepPre::new(instance_pre).map(Self::Skippable).map_err(|skippable| {
            format!("as the `step` world: {plain:#}; as the `skippable-step` world: {skippable:#}")
        })
    }

    /// Instantiates the component in `store` (errors are instantiation errors).
    pub(super) async fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<LinkedInstance> {
        Ok(LinkedInstance(match self {
            Self::Plain(pre) => Instance::Plain(pre.instantiate_async(store).await?),
            Self::Skippable(pre) => Instance::Skippable(pre.instantiate_async(store).await?),
        }))
    }
}

/// An instance of a [`LinkedStep`], for one call.
pub(super) struct LinkedInstance(Instance);

impl LinkedInstance {
    /// Calls `invoke`; a plain step's response is a `done` outcome.
    pub(super) async fn invoke(
        &self,
        store: &mut Store<HostState>,
        ctx: &StepContext,
        input: &String,
    ) -> wasmtime::Result<Returned> {
        Ok(Returned::Invoked(match &self.0 {
            Instance::Plain(step) => step.call_invoke(store, ctx, input).await?.map(StepOutcome::Done),
            Instance::Skippable(step) => step.call_invoke(store, ctx, input).await?,
        }))
    }

    /// Calls `compensate`.
    pub(super) async fn compensate(
        &self,
        store: &mut Store<HostState>,
        ctx: &StepContext,
        data: &String,
    ) -> wasmtime::Result<Returned> {
        Ok(Returned::Compensated(match &self.0 {
            Instance::Plain(step) => step.call_compensate(store, ctx, data).await?,
            Instance::Skippable(step) => step.call_compensate(store, ctx, data).await?,
        }))
    }
}
