//! Workflow definitions: the file format, the Rust builder, validation and the step graph.
//!
//! A [`WorkflowDefinition`] is what a user wrote; a [`Workflow`] is a definition
//! that passed every check (plugins exist, references parse and name real
//! steps and hooks, expressions compile, no duplicate ids, no cycles, child
//! workflows exist and do not nest themselves) with its dependency graph computed.
//! The engine only ever sees a [`Workflow`]. This module does no I/O besides
//! reading the files it is asked to load ([`WorkflowDirectory`] keeps a
//! directory of them loaded and hot-reloaded).

mod builder;
mod definition;
mod directory;
mod error;
pub mod expression;
mod graph;
mod load;
pub mod reference;
pub mod template;
mod validate;

pub use builder::{HookBuilder, StepBuilder, WorkflowBuilder};
pub use definition::{
    json_schema, HookDefinition, OnPermanentFailure, RetryPolicy, StepDefinition, WorkflowDefinition,
    MAX_EVENT_NAME_CHARS,
};
pub use directory::{DirectoryCatalog, Installed, WorkflowDirectory, WorkflowFileStatus, WorkflowWatch};
pub use error::{Problem, WorkflowError};
pub use expression::Expression;

use crate::journal::ids::{PluginName, StepId};
use reference::{Reference, Root};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use template::Template;

/// Knows which plugins exist, so that a workflow naming an unknown one is refused at load.
pub trait PluginCatalog {
    /// Whether a plugin of this name can be loaded.
    fn contains_plugin(&self, name: &str) -> bool;

    /// The tenant that owns the plugin `name` (uploaded it), if a tenant does.
    fn plugin_owner(&self, _name: &str) -> Option<String> {
        None
    }
}

impl PluginCatalog for BTreeSet<String> {
    fn contains_plugin(&self, name: &str) -> bool {
        self.contains(name)
    }
}

impl PluginCatalog for HashSet<String> {
    fn contains_plugin(&self, name: &str) -> bool {
        self.contains(name)
    }
}

/// Knows the other workflows, so that a step running one as a child
/// (`workflow = "name"`) can be checked and its definition pinned.
pub trait WorkflowCatalog {
    /// The definition of the workflow called `name`, if there is one.
    fn workflow_definition(&self, name: &str) -> Option<WorkflowDefinition>;
}

/// A catalog without workflows: a step naming a child workflow is refused.
pub struct NoWorkflows;

impl WorkflowCatalog for NoWorkflows {
    fn workflow_definition(&self, _name: &str) -> Option<WorkflowDefinition> {
        None
    }
}

impl WorkflowCatalog for BTreeMap<String, WorkflowDefinition> {
    fn workflow_definition(&self, name: &str) -> Option<WorkflowDefinition> {
        self.get(name).cloned()
    }
}

/// Default number of fan-out elements that run at once.
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;

/// A definition as executions record it: shared, serialized once, and named
/// by the SHA-256 of its JSON (so a store keeps one copy per version).
#[derive(Clone, Debug)]
pub struct DefinitionRecord {
    /// The definition.
    pub definition: Arc<WorkflowDefinition>,
    /// Its JSON.
    pub json: Arc<str>,
    /// SHA-256 of `json`, hex.
    pub hash: Arc<str>,
}

impl DefinitionRecord {
    /// Serializes and hashes `definition`.
    pub fn new(definition: Arc<WorkflowDefinition>) -> Self {
        use sha2::{Digest, Sha256};
        let json = serde_json::to_string(definition.as_ref()).expect("a definition serializes to JSON");
        let hash: String = Sha256::digest(json.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        Self { definition, json: Arc::from(json), hash: Arc::from(hash) }
    }
}

/// A validated workflow, ready to execute.
#[derive(Debug)]
pub struct Workflow {
    name: String,
    definition: Arc<WorkflowDefinition>,
    record: std::sync::OnceLock<DefinitionRecord>,
    steps: Vec<Step>,
    output: Option<Template>,
    index: HashMap<StepId, usize>,
    children: BTreeMap<String, WorkflowDefinition>,
}

/// A validated node of the graph: a step or a hook.
#[derive(Debug)]
pub struct Step {
    /// Id from the definition (a hook's name, for a hook).
    pub id: StepId,
    /// What runs: a plugin, a child workflow, a transform, or a hook's handlers.
    pub kind: StepKind,
    /// Its input template (every handler of a hook gets the same input).
    pub input: Template,
    /// Indices of the nodes that must be settled (succeeded or skipped) first:
    /// the ones it references and the ones in `after` (sorted, no duplicates).
    pub dependencies: Vec<usize>,
    /// The subset of `dependencies` whose output it reads: when one of them is
    /// skipped, this node is skipped too.
    pub data_dependencies: Vec<usize>,
    /// Its condition, if any.
    pub when: Option<Expression>,
    /// Its fan-out, if any.
    pub for_each: Option<ForEach>,
    /// Retry policy for invoke and compensate.
    pub retry: RetryPolicy,
    /// Per-attempt wall-clock limit (for an async step: the wait for completion).
    pub timeout: Option<Duration>,
    /// Completed from outside after `invoke`.
    pub is_async: bool,
    /// What failing for good does: roll back, skip, or continue with the error as output.
    pub on_permanent_failure: OnPermanentFailure,
}

/// What a node runs.
#[derive(Debug)]
pub enum StepKind {
    /// A plugin's `invoke` and `compensate`.
    Plugin {
        /// The plugin.
        name: PluginName,
        /// The version it pins (`plugin = "name@1.2"`), if any.
        version: Option<String>,
    },
    /// Another workflow, run as a child execution.
    Workflow(String),
    /// A value computed in the host; nothing to compensate.
    Transform(Expression),
    /// A hook point: the tenant's handlers run here, in order.
    Hook,
}

impl StepKind {
    /// Whether the node is a transform (computed in the host).
    pub fn is_transform(&self) -> bool {
        matches!(self, StepKind::Transform(_))
    }
}

/// `for_each`: the array to fan out over, and how many elements run at once.
#[derive(Debug)]
pub struct ForEach {
    /// The reference naming the array.
    pub items: Reference,
    /// Elements running at once, at least 1.
    pub max_concurrency: usize,
}

impl Step {
    /// The plugin a plugin step runs.
    pub fn plugin(&self) -> Option<&PluginName> {
        match &self.kind {
            StepKind::Plugin { name, .. } => Some(name),
            _ => None,
        }
    }

    /// Whether the node is a hook point.
    pub fn is_hook(&self) -> bool {
        matches!(self.kind, StepKind::Hook)
    }
}

impl Workflow {
    /// Starts a workflow in Rust code (the equivalent of a file).
    pub fn builder(name: &str) -> WorkflowBuilder {
        WorkflowBuilder::new(name)
    }

    /// The workflow's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The definition it was validated from (stored with each execution).
    pub fn definition(&self) -> &WorkflowDefinition {
        &self.definition
    }

    /// The definition as executions record it (serialized and hashed once).
    pub fn record(&self) -> &DefinitionRecord {
        self.record.get_or_init(|| DefinitionRecord::new(self.definition.clone()))
    }

    /// The nodes, in definition order: the steps, then the hooks.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The index of a node by id (a step's id or a hook's name).
    pub fn step_index(&self, id: &StepId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The output template, if the definition has one.
    pub fn output(&self) -> Option<&Template> {
        self.output.as_ref()
    }

    /// The workflow's overall timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.definition.timeout_ms.map(Duration::from_millis)
    }

    /// Every plugin its plugin steps use, without duplicates (hook handlers
    /// depend on the tenant and are resolved when an execution starts).
    pub fn plugins(&self) -> BTreeSet<PluginName> {
        self.steps.iter().filter_map(|step| step.plugin().cloned()).collect()
    }

    /// The definitions of the workflows it runs as children, transitively, by name.
    pub fn children(&self) -> &BTreeMap<String, WorkflowDefinition> {
        &self.children
    }
}

#[cfg(test)]
mod tests;
