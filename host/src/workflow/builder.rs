//! The Rust builder: the same workflows as the file format, written in code.
//!
//! The builder only assembles a [`WorkflowDefinition`]; validation is the same
//! as for files ([`Workflow::from_definition`]), so both paths agree.

use super::{PluginCatalog, RetryPolicy, StepDefinition, Workflow, WorkflowDefinition, WorkflowError};
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

impl WorkflowBuilder {
    /// A workflow named `name` with no steps yet.
    pub fn new(name: &str) -> Self {
        Self {
            definition: WorkflowDefinition {
                name: name.to_string(),
                description: None,
                retry: None,
                timeout_ms: None,
                on_event: None,
                schedule: None,
                output: None,
                steps: Vec::new(),
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
}

impl StepBuilder {
    /// A step `id` run by plugin `plugin` with the input template `input`.
    pub fn new(id: &str, plugin: &str, input: Value) -> Self {
        Self {
            definition: StepDefinition {
                id: id.to_string(),
                plugin: plugin.to_string(),
                input,
                after: Vec::new(),
                retry: None,
                timeout_ms: None,
                is_async: false,
            },
        }
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
