//! The Rust builder: the same workflows as the file format, written in code.
//!
//! The builder only assembles a [`WorkflowDefinition`]; validation is the same
//! as for files ([`Workflow::from_definition`]), so both paths agree.

use super::{
    HookDefinition, PluginCatalog, RetryPolicy, StepDefinition, Workflow, WorkflowCatalog, WorkflowDefinition,
    WorkflowError,
};
use serde_json::Value;
use std::time::Duration;

/// Assembles a workflow step by step.
#[derive(Debug, Clone)]
pub struct WorkflowBuilder {
    definition: WorkflowDefinition,
}

/// Assembles one step; pass it to [`WorkflowBuilder::step`].
#[derive(Debug, Clone)]
pub struct StepBuilder {
    definition: StepDefinition,
}

/// Assembles one hook point; pass it to [`WorkflowBuilder::hook`].
#[derive(Debug, Clone)]
pub struct HookBuilder {
    definition: HookDefinition,
}

impl WorkflowBuilder {
    /// A workflow named `name` with no steps yet.
    pub fn new(name: &str) -> Self {
        Self {
            definition: WorkflowDefinition {
                tenant: None,
                name: name.to_string(),
                description: None,
                retry: None,
                timeout_ms: None,
                on_event: None,
                schedule: None,
                output: None,
                steps: Vec::new(),
                hooks: Vec::new(),
            },
        }
    }

    /// Sets the description.
    pub fn description(mut self, description: &str) -> Self {
        self.definition.description = Some(description.to_string());
        self
    }

    /// Sets the workflow's overall timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.definition.timeout_ms = Some(timeout.as_millis() as u64);
        self
    }

    /// Sets the retry policy of steps that have none of their own.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.definition.retry = Some(policy);
        self
    }

    /// Adds a step.
    pub fn step(mut self, step: StepBuilder) -> Self {
        self.definition.steps.push(step.definition);
        self
    }

    /// Adds a hook point.
    pub fn hook(mut self, hook: HookBuilder) -> Self {
        self.definition.hooks.push(hook.definition);
        self
    }

    /// Sets the output template.
    pub fn output(mut self, template: Value) -> Self {
        self.definition.output = Some(template);
        self
    }

    /// The definition assembled so far.
    pub fn definition(&self) -> &WorkflowDefinition {
        &self.definition
    }

    /// Validates the workflow against the plugins that exist.
    pub fn build(self, plugins: &dyn PluginCatalog) -> Result<Workflow, WorkflowError> {
        Workflow::from_definition("<builder>", self.definition, plugins)
    }

    /// Validates the workflow against the plugins and child workflows that exist.
    pub fn build_with(
        self,
        plugins: &dyn PluginCatalog,
        workflows: &dyn WorkflowCatalog,
    ) -> Result<Workflow, WorkflowError> {
        Workflow::from_definition_with("<builder>", self.definition, plugins, workflows)
    }
}

impl StepBuilder {
    /// A step `id` run by plugin `plugin` with the input template `input`.
    pub fn new(id: &str, plugin: &str, input: Value) -> Self {
        Self::bare(id, input).with(|step| step.plugin = Some(plugin.to_string()))
    }

    /// A step `id` that runs the workflow `workflow` as a child execution.
    pub fn workflow(id: &str, workflow: &str, input: Value) -> Self {
        Self::bare(id, input).with(|step| step.workflow = Some(workflow.to_string()))
    }

    /// A step `id` whose output is the CEL `expression`, computed in the host.
    pub fn transform(id: &str, expression: &str) -> Self {
        Self::bare(id, Value::Object(Default::default())).with(|step| step.transform = Some(expression.to_string()))
    }

    fn bare(id: &str, input: Value) -> Self {
        Self {
            definition: StepDefinition {
                id: id.to_string(),
                plugin: None,
                workflow: None,
                transform: None,
                when: None,
                for_each: None,
                max_concurrency: None,
                input,
                after: Vec::new(),
                retry: None,
                timeout_ms: None,
                is_async: false,
                on_permanent_failure: Default::default(),
            },
        }
    }

    fn with(mut self, change: impl FnOnce(&mut StepDefinition)) -> Self {
        change(&mut self.definition);
        self
    }

    /// Runs the step only when the CEL `condition` is true (else it is skipped).
    pub fn when(self, condition: &str) -> Self {
        self.with(|step| step.when = Some(condition.to_string()))
    }

    /// What failing for good does: roll back (the default), skip, or continue.
    pub fn on_permanent_failure(self, policy: super::OnPermanentFailure) -> Self {
        self.with(|step| step.on_permanent_failure = policy)
    }

    /// Runs the step once per element of the array `items` names, at most
    /// `max_concurrency` at once.
    pub fn for_each(self, items: &str, max_concurrency: Option<u32>) -> Self {
        self.with(|step| {
            step.for_each = Some(items.to_string());
            step.max_concurrency = max_concurrency;
        })
    }

    /// Makes the step async: completed from outside after `invoke` returns.
    pub fn asynchronous(mut self) -> Self {
        self.definition.is_async = true;
        self
    }

    /// Runs this step only after `step` succeeded.
    pub fn after(mut self, step: &str) -> Self {
        self.definition.after.push(step.to_string());
        self
    }

    /// Sets the step's retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.definition.retry = Some(policy);
        self
    }

    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.definition.timeout_ms = Some(timeout.as_millis() as u64);
        self
    }
}

impl HookBuilder {
    /// A hook point `name` whose handlers receive the input template `input`.
    pub fn new(name: &str, input: Value) -> Self {
        Self {
            definition: HookDefinition {
                name: name.to_string(),
                description: None,
                input,
                after: Vec::new(),
                when: None,
                retry: None,
                timeout_ms: None,
            },
        }
    }

    /// Runs the handlers only after `step` succeeded.
    pub fn after(mut self, step: &str) -> Self {
        self.definition.after.push(step.to_string());
        self
    }

    /// Runs the hook only when the CEL `condition` is true.
    pub fn when(mut self, condition: &str) -> Self {
        self.definition.when = Some(condition.to_string());
        self
    }

    /// Sets the handlers' retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.definition.retry = Some(policy);
        self
    }
}
