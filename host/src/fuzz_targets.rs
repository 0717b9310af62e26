//! The doors the fuzzers knock on, each taking arbitrary bytes and bound to
//! answer with an error, never a panic, a hang or a crash: the workflow
//! file parser and validator, the manifest parser, JSON templates and CEL
//! conditions, and the plugin loader. `fuzz/` runs them under libFuzzer
//! (`cargo +nightly fuzz run <target>`); `tests/fuzz_smoke.rs` runs them on
//! stable over the seed corpus and every crash found (`fuzz/regressions/`).

use crate::journal::json::parse_bounded;
use crate::plugin::{LoadedPlugin, Manifest};
use crate::sandbox::{Limits, Sandbox};
use crate::workflow::reference::{Root, Scope};
use crate::workflow::template::Template;
use crate::workflow::{Expression, Workflow};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Parses and validates a workflow file against a catalog of a few plugins.
pub fn workflow_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let catalog: BTreeSet<String> = ["echo", "reserve-inventory", "authorize-payment"].map(String::from).into();
    if let Ok(workflow) = Workflow::from_toml("fuzz.toml", text, &catalog) {
        // What loaded must describe itself.
        let _ = serde_json::to_string(workflow.definition()).expect("a loaded definition serializes");
    }
}

/// Parses a plugin manifest and checks it.
pub fn manifest_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(manifest) = Manifest::parse(text, Path::new("fuzz.toml")) {
        let _ = manifest.check("fuzz", 64 << 20);
        let _ = manifest.grants("fuzz", None);
    }
}

/// A scope of fixed values: the input and the output of step `a`.
struct FixedScope {
    input: Value,
    output: Value,
}

impl Scope for FixedScope {
    fn value(&self, root: &Root) -> Option<&Value> {
        match root {
            Root::Input => Some(&self.input),
            Root::StepOutput(step) if step.as_str() == "a" => Some(&self.output),
            Root::Item => Some(&self.output),
            _ => None,
        }
    }
}

/// Compiles a JSON template and a CEL expression and evaluates both, from
/// `template \0 input \0 expression`.
pub fn template_and_condition(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '\0');
    let (template, input, expression) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next());
    let input = parse_bounded(input).unwrap_or(Value::Null);
    let scope = FixedScope { output: serde_json::json!({"items": [input.clone()], "ok": true}), input };
    if let Ok(template) = parse_bounded(template) {
        if let Ok(template) = Template::compile(&template) {
            let _ = template.render(&scope);
        }
    }
    if let Some(expression) = expression {
        if let Ok(expression) = Expression::compile(expression) {
            let _ = expression.evaluate(&scope);
            let _ = expression.evaluate_condition(&scope);
        }
    }
}

/// Checks and compiles bytes as a step component, as an upload would.
pub fn plugin_component(data: &[u8]) {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    let sandbox = SANDBOX.get_or_init(|| Sandbox::new(Limits::default()).expect("a sandbox"));
    let _ = LoadedPlugin::from_bytes(sandbox, None, "fuzz", Path::new("fuzz.wasm"), data, None);
}

/// A fuzz target: arbitrary bytes in, nothing out, never a panic.
pub type Target = fn(&[u8]);

/// Every target, by name (the directories of `fuzz/corpus/`).
pub const TARGETS: [(&str, Target); 4] = [
    ("workflow_file", workflow_file),
    ("manifest_file", manifest_file),
    ("template_and_condition", template_and_condition),
    ("plugin_component", plugin_component),
];
