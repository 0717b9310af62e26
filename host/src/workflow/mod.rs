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
pub mod reference;
pub mod template;

pub use builder::{HookBuilder, StepBuilder, WorkflowBuilder};
pub use definition::{json_schema, HookDefinition, RetryPolicy, StepDefinition, WorkflowDefinition};
pub use directory::{DirectoryCatalog, WorkflowDirectory, WorkflowFileStatus, WorkflowWatch};
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
    /// Reads and validates a TOML workflow file (no child workflows).
    pub fn load_file(path: &Path, plugins: &dyn PluginCatalog) -> Result<Self, WorkflowError> {
        Self::load_file_with(path, plugins, &NoWorkflows)
    }

    /// Reads and validates a TOML workflow file; child workflows come from `workflows`.
    pub fn load_file_with(
        path: &Path,
        plugins: &dyn PluginCatalog,
        workflows: &dyn WorkflowCatalog,
    ) -> Result<Self, WorkflowError> {
        let source_name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| WorkflowError {
            source_name: source_name.clone(),
            problems: vec![Problem::workflow(None, format!("cannot read the file: {error}"))],
        })?;
        let definition = Self::parse_toml(&source_name, &text)?;
        Self::from_definition_with(&source_name, definition, plugins, workflows)
    }

    /// Parses and validates a TOML workflow; `source_name` names it in errors.
    pub fn from_toml(source_name: &str, text: &str, plugins: &dyn PluginCatalog) -> Result<Self, WorkflowError> {
        Self::from_definition(source_name, Self::parse_toml(source_name, text)?, plugins)
    }

    /// Parses a TOML workflow without validating it.
    pub fn parse_toml(source_name: &str, text: &str) -> Result<WorkflowDefinition, WorkflowError> {
        toml::from_str(text).map_err(|error| WorkflowError {
            source_name: source_name.to_string(),
            problems: vec![Problem::workflow(None, describe_toml_error(text, &error))],
        })
    }

    /// Validates a definition (no child workflows); `source_name` names it in errors.
    pub fn from_definition(
        source_name: &str,
        definition: WorkflowDefinition,
        plugins: &dyn PluginCatalog,
    ) -> Result<Self, WorkflowError> {
        Self::from_definition_with(source_name, definition, plugins, &NoWorkflows)
    }

    /// Validates a definition; child workflows (`workflow = "name"`) are
    /// looked up in `workflows`, validated too and pinned into the result.
    pub fn from_definition_with(
        source_name: &str,
        definition: WorkflowDefinition,
        plugins: &dyn PluginCatalog,
        workflows: &dyn WorkflowCatalog,
    ) -> Result<Self, WorkflowError> {
        Self::validate_nested(source_name, definition, plugins, Some(workflows), &mut Vec::new())
    }

    /// Checks the structure of a stored definition again, trusting that its
    /// plugins and child workflows were checked (and pinned) when it started.
    pub fn revalidate_stored(source_name: &str, definition: WorkflowDefinition) -> Result<Self, WorkflowError> {
        struct AnyPlugin;
        impl PluginCatalog for AnyPlugin {
            fn contains_plugin(&self, _name: &str) -> bool {
                true
            }
        }
        Self::validate_nested(source_name, definition, &AnyPlugin, None, &mut Vec::new())
    }

    fn validate_nested(
        source_name: &str,
        definition: WorkflowDefinition,
        plugins: &dyn PluginCatalog,
        workflows: Option<&dyn WorkflowCatalog>,
        stack: &mut Vec<String>,
    ) -> Result<Self, WorkflowError> {
        let mut problems = Vec::new();
        stack.push(definition.name.clone());
        let validated = validate(&definition, plugins, &mut problems);
        let mut children = BTreeMap::new();
        if let Some(workflows) = workflows {
            resolve_children(&definition, plugins, workflows, stack, &mut children, &mut problems);
        }
        stack.pop();
        match validated {
            Some((steps, output, index)) if problems.is_empty() => Ok(Self {
                name: definition.name.clone(),
                definition: Arc::new(definition),
                record: std::sync::OnceLock::new(),
                steps,
                output,
                index,
                children,
            }),
            _ => Err(WorkflowError { source_name: source_name.to_string(), problems }),
        }
    }

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

/// Looks up, validates and collects the child workflows of `definition`.
fn resolve_children(
    definition: &WorkflowDefinition,
    plugins: &dyn PluginCatalog,
    workflows: &dyn WorkflowCatalog,
    stack: &mut Vec<String>,
    children: &mut BTreeMap<String, WorkflowDefinition>,
    problems: &mut Vec<Problem>,
) {
    for step in &definition.steps {
        let Some(name) = &step.workflow else { continue };
        if !StepId::is_valid(name) || step.plugin.is_some() || step.transform.is_some() {
            continue; // reported by `validate`
        }
        if stack.contains(name) {
            let mut path = stack.clone();
            path.push(name.clone());
            let start = path.iter().position(|n| n == name).unwrap_or(0);
            problems.push(Problem::step(
                &step.id,
                "workflow",
                format!("workflow `{name}` nests itself: {}", path[start..].join(" -> ")),
            ));
            continue;
        }
        if children.contains_key(name) {
            continue;
        }
        let Some(child) = workflows.workflow_definition(name) else {
            problems.push(Problem::step(&step.id, "workflow", format!("unknown workflow `{name}`")));
            continue;
        };
        if &child.name != name {
            problems.push(Problem::step(
                &step.id,
                "workflow",
                format!("the catalog returned workflow `{}` for `{name}`", child.name),
            ));
            continue;
        }
        let source = format!("workflow `{name}`");
        match Workflow::validate_nested(&source, child.clone(), plugins, Some(workflows), stack) {
            Ok(validated) => {
                children.extend(validated.children.clone());
                children.insert(name.clone(), child);
            }
            Err(error) => {
                // A cycle found deeper down is reported as such; any other problem as an invalid child.
                let message =
                    error.problems.iter().find(|p| p.message.contains("nests itself")).map(|p| p.message.clone());
                problems.push(Problem::step(
                    &step.id,
                    "workflow",
                    message.unwrap_or_else(|| format!("child workflow `{name}` is invalid: {error}")),
                ));
            }
        }
    }
}

/// "line 3, column 7: <message>" for a TOML syntax or shape error.
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim();
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_string(),
    }
}

type Validated = (Vec<Step>, Option<Template>, HashMap<StepId, usize>);

fn validate(
    definition: &WorkflowDefinition,
    plugins: &dyn PluginCatalog,
    problems: &mut Vec<Problem>,
) -> Option<Validated> {
    if !StepId::is_valid(&definition.name) {
        problems.push(Problem::workflow(
            Some("name"),
            format!(
                "`{}` is not a valid workflow name (lowercase letters, digits, `-`, `_`, starting with a letter)",
                definition.name
            ),
        ));
    }
    if let Some(retry) = &definition.retry {
        check_retry(retry, None, problems);
    }
    if let Some(schedule) = &definition.schedule {
        if let Err(error) = <cron::Schedule as std::str::FromStr>::from_str(schedule) {
            problems.push(Problem::workflow(
                Some("schedule"),
                format!("`{schedule}` is not a cron expression (sec min hour day month weekday [year]): {error}"),
            ));
        }
    }
    if let Some(event) = &definition.on_event {
        let valid = !event.is_empty() && event.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid {
            problems.push(Problem::workflow(
                Some("on_event"),
                format!("`{event}` is not a valid event name (letters, digits, `.`, `_`, `-`)"),
            ));
        }
    }
    if definition.timeout_ms == Some(0) {
        problems.push(Problem::workflow(Some("timeout_ms"), "must be greater than 0"));
    }
    if definition.steps.is_empty() {
        problems.push(Problem::workflow(Some("steps"), "a workflow needs at least one step"));
        return None;
    }

    // Steps, then hooks, share one id space and one index.
    let nodes: Vec<Node<'_>> =
        definition.steps.iter().map(Node::Step).chain(definition.hooks.iter().map(Node::Hook)).collect();
    let mut index = HashMap::new();
    for (position, node) in nodes.iter().enumerate() {
        let id = node.id();
        if !StepId::is_valid(id) {
            let what = if node.is_hook() { "hook name" } else { "step id" };
            problems.push(node.problem(
                node.id_field(),
                format!("`{id}` is not a valid {what} (lowercase letters, digits, `-`, `_`, starting with a letter)"),
            ));
        } else if index.insert(StepId::new(id), position).is_some() {
            let what = if node.is_hook() { "hook name" } else { "step id" };
            problems
                .push(node.problem(node.id_field(), format!("duplicate {what} `{id}` (steps and hooks share ids)")));
        }
    }
    let graph = Graph { nodes: &nodes, index: &index };

    let mut steps = Vec::with_capacity(nodes.len());
    for node in &nodes {
        steps.push(match node {
            Node::Step(step) => validate_step(definition, step, &graph, plugins, problems),
            Node::Hook(hook) => validate_hook(definition, hook, &graph, problems),
        });
    }
    let output = definition.output.as_ref().and_then(|output| {
        let template = compile_template(output, None, "output", problems)?;
        let context = Located { node: None, field: "output" };
        graph.template_references(&template, &context, false, problems);
        Some(template)
    });

    let steps: Vec<Step> = steps.into_iter().collect::<Option<_>>()?;
    if let Some(cycle) = find_cycle(&steps) {
        let path: Vec<&str> = cycle.iter().map(|&i| steps[i].id.as_str()).collect();
        problems.push(nodes[cycle[0]].problem("input", format!("dependency cycle: {}", path.join(" -> "))));
    }
    Some((steps, output, index))
}

/// A node of the definition: a step or a hook.
enum Node<'a> {
    Step(&'a StepDefinition),
    Hook(&'a HookDefinition),
}

impl Node<'_> {
    fn id(&self) -> &str {
        match self {
            Node::Step(step) => &step.id,
            Node::Hook(hook) => &hook.name,
        }
    }

    fn is_hook(&self) -> bool {
        matches!(self, Node::Hook(_))
    }

    fn id_field(&self) -> &'static str {
        if self.is_hook() {
            "name"
        } else {
            "id"
        }
    }

    fn problem(&self, field: impl Into<String>, message: impl Into<String>) -> Problem {
        match self {
            Node::Step(step) => Problem::step(&step.id, field, message),
            Node::Hook(hook) => Problem::hook(&hook.name, field, message),
        }
    }
}

/// Where a reference was written, for error messages.
struct Located<'a> {
    node: Option<&'a Node<'a>>,
    field: &'a str,
}

impl Located<'_> {
    fn problem(&self, path: &str, message: String) -> Problem {
        let field = if path.is_empty() { self.field.to_string() } else { format!("{}.{path}", self.field) };
        match self.node {
            Some(node) => node.problem(field, message),
            None => Problem { step: None, hook: false, field: Some(field), message },
        }
    }
}

/// The ids of the definition, to check references against.
struct Graph<'a> {
    nodes: &'a [Node<'a>],
    index: &'a HashMap<StepId, usize>,
}

impl Graph<'_> {
    /// Checks one reference; returns the index of the node it reads, if any.
    fn reference(
        &self,
        reference: &Reference,
        at: &Located<'_>,
        path: &str,
        fan_out: bool,
        problems: &mut Vec<Problem>,
    ) -> Option<usize> {
        let own = at.node.map(|node| node.id());
        let (target, is_hook) = match &reference.root {
            Root::Input => return None,
            Root::Item | Root::Index => {
                if !fan_out {
                    problems.push(at.problem(
                        path,
                        format!("`{reference}`: `$.item` and `$.index` exist only in a step with `for_each`"),
                    ));
                }
                return None;
            }
            Root::StepOutput(step) => (step, false),
            Root::Hook(hook) => (hook, true),
        };
        if Some(target.as_str()) == own {
            problems.push(at.problem(path, format!("`{reference}`: a step cannot reference its own output")));
            return None;
        }
        match self.index.get(target) {
            Some(&position) if self.nodes[position].is_hook() == is_hook => Some(position),
            Some(_) if is_hook => {
                problems.push(at.problem(path, format!("`{reference}`: `{target}` is a step, not a hook")));
                None
            }
            Some(_) => {
                problems.push(at.problem(
                    path,
                    format!("`{reference}`: `{target}` is a hook: read it as `$.hooks.{target}.output`"),
                ));
                None
            }
            None => {
                let what = if is_hook { "hook" } else { "step" };
                problems.push(at.problem(path, format!("`{reference}`: unknown {what} `{target}`")));
                None
            }
        }
    }

    /// Checks every reference of a template; returns the nodes it reads.
    fn template_references(
        &self,
        template: &Template,
        at: &Located<'_>,
        fan_out: bool,
        problems: &mut Vec<Problem>,
    ) -> Vec<usize> {
        let mut found = Vec::new();
        for (path, reference) in template.references() {
            found.extend(self.reference(reference, at, &path, fan_out, problems));
        }
        found
    }

    /// Checks the step and hook ids an expression reads; returns their nodes.
    fn expression_references(
        &self,
        expression: &Expression,
        at: &Located<'_>,
        fan_out: bool,
        problems: &mut Vec<Problem>,
    ) -> Vec<usize> {
        if expression.uses_element() && !fan_out {
            problems.push(at.problem(
                "",
                format!("`{}`: `item` and `index` exist only in a step with `for_each`", expression.source()),
            ));
        }
        let mut found = Vec::new();
        let steps = expression.steps().iter().map(|id| Reference::parse(&format!("$.steps.{id}.output")));
        let hooks = expression.hooks().iter().map(|id| Reference::parse(&format!("$.hooks.{id}.output")));
        for reference in steps.chain(hooks).flatten() {
            found.extend(self.reference(&reference, at, "", true, problems));
        }
        found
    }

    /// Checks `after`; returns the nodes it names.
    fn after(&self, node: &Node<'_>, after: &[String], problems: &mut Vec<Problem>) -> Vec<usize> {
        let mut found = Vec::new();
        for (position, name) in after.iter().enumerate() {
            match self.index.get(&StepId::new(name)) {
                Some(&dependency) if name != node.id() => found.push(dependency),
                Some(_) => problems.push(node.problem(format!("after[{position}]"), "a step cannot wait for itself")),
                None => problems.push(node.problem(format!("after[{position}]"), format!("unknown step `{name}`"))),
            }
        }
        found
    }
}

fn compile_expression(source: &str, at: &Located<'_>, problems: &mut Vec<Problem>) -> Option<Expression> {
    Expression::compile(source).map_err(|message| problems.push(at.problem("", message))).ok()
}

fn validate_step(
    definition: &WorkflowDefinition,
    step: &StepDefinition,
    graph: &Graph<'_>,
    plugins: &dyn PluginCatalog,
    problems: &mut Vec<Problem>,
) -> Option<Step> {
    let id = &step.id;
    let node = Node::Step(step);
    let fan_out = step.for_each.is_some();
    let mut data = BTreeSet::new();
    let kind = match (&step.plugin, &step.workflow, &step.transform) {
        (Some(plugin), None, None) => validate_plugin(id, plugin, plugins, problems),
        (None, Some(name), None) => {
            if !StepId::is_valid(name) {
                problems.push(Problem::step(id, "workflow", format!("`{name}` is not a valid workflow name")));
            }
            if step.is_async {
                problems.push(Problem::step(id, "async", "a workflow step cannot be async (its child can be)"));
            }
            if step.timeout_ms.is_some() {
                problems.push(Problem::step(
                    id,
                    "timeout_ms",
                    "not supported on a workflow step: set `timeout_ms` in the child workflow",
                ));
            }
            Some(StepKind::Workflow(name.clone()))
        }
        (None, None, Some(source)) => {
            let at = Located { node: Some(&node), field: "transform" };
            for (field, present) in [
                ("input", step.input.as_object().is_none_or(|fields| !fields.is_empty())),
                ("for_each", fan_out),
                ("async", step.is_async),
                ("retry", step.retry.is_some()),
                ("timeout_ms", step.timeout_ms.is_some()),
            ] {
                if present {
                    problems.push(Problem::step(
                        id,
                        field,
                        format!("a transform step takes no `{field}` (its expression reads what it needs)"),
                    ));
                }
            }
            compile_expression(source, &at, problems).map(|expression| {
                data.extend(graph.expression_references(&expression, &at, false, problems));
                StepKind::Transform(expression)
            })
        }
        _ => {
            problems.push(Problem::step(
                id,
                "plugin",
                "a step needs exactly one of `plugin`, `workflow` or `transform`",
            ));
            None
        }
    };
    if step.timeout_ms == Some(0) {
        problems.push(Problem::step(id, "timeout_ms", "must be greater than 0"));
    }
    let retry = step.retry.clone().or_else(|| definition.retry.clone()).unwrap_or_default();
    if let Some(own) = &step.retry {
        check_retry(own, Some(&node), problems);
    }
    let for_each = match &step.for_each {
        Some(text) => validate_for_each(&node, text, step.max_concurrency, graph, &mut data, problems),
        None => {
            if step.max_concurrency.is_some() {
                problems.push(Problem::step(id, "max_concurrency", "needs `for_each`"));
            }
            None
        }
    };
    let input = compile_template(&step.input, Some(&node), "input", problems);
    if let Some(input) = &input {
        let at = Located { node: Some(&node), field: "input" };
        data.extend(graph.template_references(input, &at, fan_out, problems));
    }
    let when = step.when.as_ref().and_then(|source| {
        let at = Located { node: Some(&node), field: "when" };
        let expression = compile_expression(source, &at, problems)?;
        data.extend(graph.expression_references(&expression, &at, false, problems));
        Some(expression)
    });
    let mut dependencies = data.clone();
    dependencies.extend(graph.after(&node, &step.after, problems));
    Some(Step {
        id: StepId::new(id),
        kind: kind?,
        input: input?,
        dependencies: dependencies.into_iter().collect(),
        data_dependencies: data.into_iter().collect(),
        when,
        for_each,
        retry,
        timeout: step.timeout_ms.map(Duration::from_millis),
        is_async: step.is_async,
    })
}

fn validate_plugin(
    id: &str,
    plugin: &str,
    plugins: &dyn PluginCatalog,
    problems: &mut Vec<Problem>,
) -> Option<StepKind> {
    let (name, version) = match plugin.split_once('@') {
        Some((name, version)) => (name, Some(version.to_string())),
        None => (plugin, None),
    };
    if !PluginName::is_valid(name) {
        problems.push(Problem::step(id, "plugin", format!("`{name}` is not a valid plugin name")));
    } else if !plugins.contains_plugin(name) {
        problems.push(Problem::step(id, "plugin", format!("unknown plugin `{name}`")));
    }
    if let Some(version) = &version {
        let valid = !version.is_empty() && version.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !valid {
            problems.push(Problem::step(id, "plugin", format!("`{plugin}`: `{version}` is not a version")));
        }
    }
    Some(StepKind::Plugin { name: PluginName::new(name), version })
}

fn validate_for_each(
    node: &Node<'_>,
    text: &str,
    max_concurrency: Option<u32>,
    graph: &Graph<'_>,
    data: &mut BTreeSet<usize>,
    problems: &mut Vec<Problem>,
) -> Option<ForEach> {
    if max_concurrency == Some(0) {
        problems.push(node.problem("max_concurrency", "must be at least 1"));
    }
    let at = Located { node: Some(node), field: "for_each" };
    if !text.starts_with("$.") {
        problems.push(at.problem(
            "",
            format!("`{text}` is not a reference: `for_each` names an array, like `$.steps.cart.output.items`"),
        ));
        return None;
    }
    let reference = Reference::parse(text).map_err(|message| problems.push(at.problem("", message))).ok()?;
    data.extend(graph.reference(&reference, &at, "", false, problems));
    let max_concurrency = max_concurrency.map_or(DEFAULT_MAX_CONCURRENCY, |max| max.max(1) as usize);
    Some(ForEach { items: reference, max_concurrency })
}

fn validate_hook(
    definition: &WorkflowDefinition,
    hook: &HookDefinition,
    graph: &Graph<'_>,
    problems: &mut Vec<Problem>,
) -> Option<Step> {
    let node = Node::Hook(hook);
    let name = &hook.name;
    if hook.timeout_ms == Some(0) {
        problems.push(Problem::hook(name, "timeout_ms", "must be greater than 0"));
    }
    if let Some(own) = &hook.retry {
        check_retry(own, Some(&node), problems);
    }
    let retry = hook.retry.clone().or_else(|| definition.retry.clone()).unwrap_or_default();
    let mut data = BTreeSet::new();
    let input = compile_template(&hook.input, Some(&node), "input", problems);
    if let Some(input) = &input {
        let at = Located { node: Some(&node), field: "input" };
        data.extend(graph.template_references(input, &at, false, problems));
    }
    let when = hook.when.as_ref().and_then(|source| {
        let at = Located { node: Some(&node), field: "when" };
        let expression = compile_expression(source, &at, problems)?;
        data.extend(graph.expression_references(&expression, &at, false, problems));
        Some(expression)
    });
    let mut dependencies = data.clone();
    dependencies.extend(graph.after(&node, &hook.after, problems));
    Some(Step {
        id: StepId::new(name),
        kind: StepKind::Hook,
        input: input?,
        dependencies: dependencies.into_iter().collect(),
        data_dependencies: data.into_iter().collect(),
        when,
        for_each: None,
        retry,
        timeout: hook.timeout_ms.map(Duration::from_millis),
        is_async: false,
    })
}

fn check_retry(retry: &RetryPolicy, node: Option<&Node<'_>>, problems: &mut Vec<Problem>) {
    let mut report = |field: &str, message: &str| match node {
        Some(node) => problems.push(node.problem(format!("retry.{field}"), message)),
        None => problems.push(Problem::workflow(Some(&format!("retry.{field}")), message)),
    };
    if retry.max_attempts == 0 {
        report("max_attempts", "must be at least 1");
    }
    if !(retry.multiplier.is_finite() && retry.multiplier >= 1.0) {
        report("multiplier", "must be a finite number >= 1.0");
    }
    if retry.initial_backoff_ms > retry.max_backoff_ms {
        report("initial_backoff_ms", "must not exceed max_backoff_ms");
    }
}

fn compile_template(
    value: &serde_json::Value,
    node: Option<&Node<'_>>,
    field: &str,
    problems: &mut Vec<Problem>,
) -> Option<Template> {
    let at = Located { node, field };
    Template::compile(value)
        .map_err(|errors| {
            for error in errors {
                problems.push(at.problem(&error.path, error.message));
            }
        })
        .ok()
}

/// A dependency cycle as a path of step indices that starts and ends at the same step.
fn find_cycle(steps: &[Step]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(node: usize, steps: &[Step], marks: &mut [Mark], path: &mut Vec<usize>) -> Option<Vec<usize>> {
        marks[node] = Mark::OnPath;
        path.push(node);
        for &next in &steps[node].dependencies {
            match marks[next] {
                Mark::OnPath => {
                    let start = path.iter().position(|&n| n == next).expect("on the path");
                    let mut cycle: Vec<usize> = path[start..].to_vec();
                    cycle.reverse(); // show the order in which steps would run
                    cycle.push(cycle[0]);
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, steps, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[node] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; steps.len()];
    (0..steps.len()).find_map(|node| {
        if marks[node] == Mark::New {
            visit(node, steps, &mut marks, &mut Vec::new())
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests;
