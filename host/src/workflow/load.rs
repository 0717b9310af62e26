//! Loading a workflow: reading a TOML file, parsing it, validating it (see
//! [`super::validate`]) and resolving the child workflows it runs, with
//! errors that name the file, the step and the field. This room reads files;
//! it decides nothing about execution.

use super::validate::validate;
use super::*;

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
        if let (Some(_), Some((steps, ..))) = (workflows, &validated) {
            // New definitions only: a stored one replays as it was accepted,
            // whatever checks were added since.
            check_conditions(steps, &mut problems);
        }
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
}

/// Refuses `when` conditions whose syntax shows they are never true or false.
fn check_conditions(steps: &[Step], problems: &mut Vec<Problem>) {
    for step in steps {
        let Some(condition) = &step.when else { continue };
        if let Err(message) = condition.check_is_condition() {
            let problem = if step.is_hook() { Problem::hook } else { Problem::step };
            problems.push(problem(step.id.as_str(), "when", message));
        }
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
            Err(error) => match error.only_missing_plugins() {
                // A child that waits for plugins: the parent waits for them too.
                Some(missing) => {
                    for plugin in missing {
                        let message = format!("child workflow `{name}` waits for plugin `{plugin}`");
                        let problem = Problem::step(&step.id, "workflow", message);
                        problems.push(Problem { missing_plugin: Some(plugin), ..problem });
                    }
                }
                None => {
                    // A cycle found deeper down is reported as such; any other problem as an invalid child.
                    let message =
                        error.problems.iter().find(|p| p.message.contains("nests itself")).map(|p| p.message.clone());
                    problems.push(Problem::step(
                        &step.id,
                        "workflow",
                        message.unwrap_or_else(|| format!("child workflow `{name}` is invalid: {error}")),
                    ));
                }
            },
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
