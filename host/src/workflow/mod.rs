//! Workflow definitions: the file format, the Rust builder, validation and the step graph.
//!
//! A [`WorkflowDefinition`] is what a user wrote; a [`Workflow`] is a definition
//! that passed every check (plugins exist, references parse and name real
//! steps, no duplicate ids, no cycles) with its dependency graph computed.
//! The engine only ever sees a [`Workflow`]. This module does no I/O besides
//! reading the files it is asked to load ([`WorkflowDirectory`] keeps a
//! directory of them loaded and hot-reloaded).

mod builder;
mod definition;
mod directory;
mod error;
pub mod reference;
pub mod template;

pub use builder::{StepBuilder, WorkflowBuilder};
pub use definition::{json_schema, RetryPolicy, StepDefinition, WorkflowDefinition};
pub use directory::{WorkflowDirectory, WorkflowFileStatus, WorkflowWatch};
pub use error::{Problem, WorkflowError};

use crate::ids::{PluginName, StepId};
use reference::{Reference, Root};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
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

/// A validated workflow, ready to execute.
#[derive(Debug)]
pub struct Workflow {
    name: String,
    definition: WorkflowDefinition,
    steps: Vec<Step>,
    output: Option<Template>,
    index: HashMap<StepId, usize>,
}

/// A validated step.
#[derive(Debug)]
pub struct Step {
    /// Id from the definition.
    pub id: StepId,
    /// The plugin implementing it.
    pub plugin: PluginName,
    /// The plugin version it pins (`plugin = "name@1.2"`), if any.
    pub plugin_version: Option<String>,
    /// Its input template.
    pub input: Template,
    /// Indices of the steps that must succeed first (sorted, no duplicates).
    pub dependencies: Vec<usize>,
    /// Retry policy for invoke and compensate.
    pub retry: RetryPolicy,
    /// Per-attempt wall-clock limit (for an async step: the wait for completion).
    pub timeout: Option<Duration>,
    /// Completed from outside after `invoke`.
    pub is_async: bool,
}

impl Workflow {
    /// Reads and validates a TOML workflow file.
    pub fn load_file(path: &Path, plugins: &dyn PluginCatalog) -> Result<Self, WorkflowError> {
        let source_name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| WorkflowError {
            source_name: source_name.clone(),
            problems: vec![Problem::workflow(None, format!("cannot read the file: {error}"))],
        })?;
        Self::from_toml(&source_name, &text, plugins)
    }

    /// Parses and validates a TOML workflow; `source_name` names it in errors.
    pub fn from_toml(source_name: &str, text: &str, plugins: &dyn PluginCatalog) -> Result<Self, WorkflowError> {
        let definition: WorkflowDefinition = toml::from_str(text).map_err(|error| WorkflowError {
            source_name: source_name.to_string(),
            problems: vec![Problem::workflow(None, describe_toml_error(text, &error))],
        })?;
        Self::from_definition(source_name, definition, plugins)
    }

    /// Validates a definition; `source_name` names it in errors.
    pub fn from_definition(
        source_name: &str,
        definition: WorkflowDefinition,
        plugins: &dyn PluginCatalog,
    ) -> Result<Self, WorkflowError> {
        let mut problems = Vec::new();
        let workflow = validate(&definition, plugins, &mut problems);
        match workflow {
            Some((steps, output, index)) if problems.is_empty() => {
                Ok(Self { name: definition.name.clone(), definition, steps, output, index })
            }
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

    /// The steps, in definition order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The index of a step by id.
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

    /// Every plugin the workflow uses, without duplicates.
    pub fn plugins(&self) -> BTreeSet<PluginName> {
        self.steps.iter().map(|step| step.plugin.clone()).collect()
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

    let mut index = HashMap::new();
    for (position, step) in definition.steps.iter().enumerate() {
        if !StepId::is_valid(&step.id) {
            problems.push(Problem::step(
                &step.id,
                "id",
                format!(
                    "`{}` is not a valid step id (lowercase letters, digits, `-`, `_`, starting with a letter)",
                    step.id
                ),
            ));
        } else if index.insert(StepId::new(&step.id), position).is_some() {
            problems.push(Problem::step(&step.id, "id", format!("duplicate step id `{}`", step.id)));
        }
    }

    let mut steps = Vec::with_capacity(definition.steps.len());
    for step in &definition.steps {
        steps.push(validate_step(definition, step, &index, plugins, problems));
    }
    let output = definition.output.as_ref().and_then(|output| {
        let template = compile_template(output, None, "output", problems)?;
        check_references(&template, None, "output", &index, problems);
        Some(template)
    });

    let steps: Vec<Step> = steps.into_iter().collect::<Option<_>>()?;
    if let Some(cycle) = find_cycle(&steps) {
        let path: Vec<&str> = cycle.iter().map(|&i| steps[i].id.as_str()).collect();
        problems.push(Problem::step(path[0], "input", format!("dependency cycle: {}", path.join(" -> "))));
    }
    Some((steps, output, index))
}

fn validate_step(
    definition: &WorkflowDefinition,
    step: &StepDefinition,
    index: &HashMap<StepId, usize>,
    plugins: &dyn PluginCatalog,
    problems: &mut Vec<Problem>,
) -> Option<Step> {
    let id = &step.id;
    let (plugin_name, plugin_version) = match step.plugin.split_once('@') {
        Some((name, version)) => (name, Some(version.to_string())),
        None => (step.plugin.as_str(), None),
    };
    if !PluginName::is_valid(plugin_name) {
        problems.push(Problem::step(id, "plugin", format!("`{plugin_name}` is not a valid plugin name")));
    } else if !plugins.contains_plugin(plugin_name) {
        problems.push(Problem::step(id, "plugin", format!("unknown plugin `{plugin_name}`")));
    }
    if let Some(version) = &plugin_version {
        let valid = !version.is_empty() && version.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !valid {
            problems.push(Problem::step(id, "plugin", format!("`{}`: `{version}` is not a version", step.plugin)));
        }
    }
    if step.timeout_ms == Some(0) {
        problems.push(Problem::step(id, "timeout_ms", "must be greater than 0"));
    }
    let retry = step.retry.clone().or_else(|| definition.retry.clone()).unwrap_or_default();
    if let Some(own) = &step.retry {
        check_retry(own, Some(id), problems);
    }

    let input = compile_template(&step.input, Some(id), "input", problems);
    let mut dependencies = BTreeSet::new();
    if let Some(input) = &input {
        for dependency in check_references(input, Some(id), "input", index, problems) {
            dependencies.insert(dependency);
        }
    }
    for (position, after) in step.after.iter().enumerate() {
        match index.get(&StepId::new(after)) {
            Some(&dependency) => {
                dependencies.insert(dependency);
            }
            None => problems.push(Problem::step(id, format!("after[{position}]"), format!("unknown step `{after}`"))),
        }
    }
    Some(Step {
        id: StepId::new(id),
        plugin: PluginName::new(plugin_name),
        plugin_version,
        input: input?,
        dependencies: dependencies.into_iter().collect(),
        retry,
        timeout: step.timeout_ms.map(Duration::from_millis),
        is_async: step.is_async,
    })
}

fn check_retry(retry: &RetryPolicy, step: Option<&str>, problems: &mut Vec<Problem>) {
    let mut report = |field: &str, message: &str| match step {
        Some(step) => problems.push(Problem::step(step, format!("retry.{field}"), message)),
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
    step: Option<&str>,
    field: &str,
    problems: &mut Vec<Problem>,
) -> Option<Template> {
    Template::compile(value)
        .map_err(|errors| {
            for error in errors {
                problems.push(located(step, field, &error.path, error.message));
            }
        })
        .ok()
}

/// Checks that every step reference names a known step other than `step`;
/// returns the indices of the referenced steps.
fn check_references(
    template: &Template,
    step: Option<&str>,
    field: &str,
    index: &HashMap<StepId, usize>,
    problems: &mut Vec<Problem>,
) -> Vec<usize> {
    let mut found = Vec::new();
    for (path, reference) in template.references() {
        let Reference { root: Root::StepOutput(target), .. } = reference else { continue };
        if Some(target.as_str()) == step {
            problems.push(located(
                step,
                field,
                &path,
                format!("`{reference}`: a step cannot reference its own output"),
            ));
        } else if let Some(&position) = index.get(target) {
            found.push(position);
        } else {
            problems.push(located(step, field, &path, format!("`{reference}`: unknown step `{target}`")));
        }
    }
    found
}

fn located(step: Option<&str>, field: &str, path: &str, message: String) -> Problem {
    let field = if path.is_empty() { field.to_string() } else { format!("{field}.{path}") };
    Problem { step: step.map(str::to_string), field: Some(field), message }
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
