//! Errors found while loading a workflow, each naming the file, the step and the field.

use std::fmt;

/// Everything wrong with one workflow definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowError {
    /// The file the workflow came from (or `<builder>` for the Rust builder).
    pub source_name: String,
    /// The problems, in the order found.
    pub problems: Vec<Problem>,
}

/// One problem in a workflow definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The step (or hook) concerned, if any.
    pub step: Option<String>,
    /// Whether `step` names a hook.
    pub hook: bool,
    /// The field concerned (`input.cart_id`, `retry.max_attempts`), if any.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
    /// The plugin it names that is not loaded, when that is the problem: a
    /// workflow whose only problems are these waits for its plugins.
    pub missing_plugin: Option<String>,
}

impl Problem {
    /// A problem with the workflow as a whole.
    pub fn workflow(field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            step: None,
            hook: false,
            field: field.map(str::to_string),
            message: message.into(),
            missing_plugin: None,
        }
    }

    /// A problem with one field of one step.
    pub fn step(step: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            step: Some(step.to_string()),
            hook: false,
            field: Some(field.into()),
            message: message.into(),
            missing_plugin: None,
        }
    }

    /// A step's `plugin` names a plugin that is not loaded.
    pub fn missing_plugin(step: &str, plugin: &str) -> Self {
        Self {
            missing_plugin: Some(plugin.to_string()),
            ..Self::step(step, "plugin", format!("unknown plugin `{plugin}`"))
        }
    }

    /// A problem with one field of one hook.
    pub fn hook(hook: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { hook: true, ..Self::step(hook, field, message) }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.hook { "hook" } else { "step" };
        match (&self.step, &self.field) {
            (Some(step), Some(field)) => write!(f, "{what} `{step}`, field `{field}`: ")?,
            (Some(step), None) => write!(f, "{what} `{step}`: ")?,
            (None, Some(field)) => write!(f, "field `{field}`: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

impl fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut problems = self.problems.iter();
        if let Some(first) = problems.next() {
            write!(f, "invalid workflow {}: {first}", self.source_name)?;
        }
        for problem in problems {
            write!(f, "\ninvalid workflow {}: {problem}", self.source_name)?;
        }
        Ok(())
    }
}

impl std::error::Error for WorkflowError {}

impl WorkflowError {
    /// The plugins the workflow names that are not loaded, when nothing
    /// else is wrong with it (it can go live once they arrive).
    pub fn only_missing_plugins(&self) -> Option<Vec<String>> {
        let missing: Option<Vec<String>> = self.problems.iter().map(|problem| problem.missing_plugin.clone()).collect();
        missing.filter(|missing| !missing.is_empty()).map(|mut missing| {
            missing.sort();
            missing.dedup();
            missing
        })
    }
}
