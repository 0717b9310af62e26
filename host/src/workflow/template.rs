//! JSON templates: a JSON value whose strings may be references.
//!
//! A string that starts with `$.` is a reference and is replaced by the value
//! it names (whole value, any JSON type). A string that starts with `$$` is a
//! literal with the first `$` removed, so `"$$.5"` renders as `"$.5"`. A
//! reference followed by ` ?? <JSON>` is optional: when the data it names is
//! not there (a missing key, an index past the end, a field of `null`), the
//! JSON after `??` is used instead (`"$.input.gift ?? null"`,
//! `"$.input.note ?? \"none\""`). Every other value is copied as is.

use super::reference::{Reference, Scope};
use serde_json::{Map, Value};

/// A compiled template.
#[derive(Clone, Debug)]
pub struct Template {
    root: Node,
}

#[derive(Clone, Debug)]
enum Node {
    Literal(Value),
    Reference(Reference),
    Optional(Reference, Value),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// A problem found while compiling a template: where (`items[0].sku`) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    /// Path inside the template, empty for the root.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Template {
    /// Compiles `value`, parsing every reference; reports all malformed ones.
    pub fn compile(value: &Value) -> Result<Self, Vec<TemplateError>> {
        let mut errors = Vec::new();
        let root = compile_node(value, String::new(), &mut errors);
        if errors.is_empty() {
            Ok(Self { root })
        } else {
            Err(errors)
        }
    }

    /// Every reference in the template, with its path inside the template.
    pub fn references(&self) -> Vec<(String, &Reference)> {
        let mut found = Vec::new();
        collect_references(&self.root, String::new(), &mut found);
        found
    }

    /// Renders the template against `scope`; the error names the reference that could not be resolved.
    pub fn render(&self, scope: &dyn Scope) -> Result<Value, String> {
        render_node(&self.root, scope)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn compile_node(value: &Value, path: String, errors: &mut Vec<TemplateError>) -> Node {
    match value {
        Value::String(text) if text.starts_with("$$") => Node::Literal(Value::String(text[1..].to_string())),
        Value::String(text) if text.starts_with("$.") => {
            let (reference, default) = match text.split_once(" ?? ") {
                Some((reference, default)) => (reference.trim_end(), Some(default.trim())),
                None => (text.as_str(), None),
            };
            let default = match default.map(serde_json::from_str::<Value>) {
                None => None,
                Some(Ok(value)) => Some(value),
                Some(Err(_)) => {
                    let message = format!(
                        "the default after `??` in `{text}` must be a JSON value (null, 0, \"text\", [], {{}})"
                    );
                    errors.push(TemplateError { path, message });
                    return Node::Literal(Value::Null);
                }
            };
            match (Reference::parse(reference), default) {
                (Ok(reference), None) => Node::Reference(reference),
                (Ok(reference), Some(default)) => Node::Optional(reference, default),
                (Err(message), _) => {
                    errors.push(TemplateError { path, message });
                    Node::Literal(Value::Null)
                }
            }
        }
        Value::Array(items) => Node::Array(
            items
                .iter()
                .enumerate()
                .map(|(index, item)| compile_node(item, format!("{path}[{index}]"), errors))
                .collect(),
        ),
        Value::Object(fields) => Node::Object(
            fields.iter().map(|(key, field)| (key.clone(), compile_node(field, join(&path, key), errors))).collect(),
        ),
        literal => Node::Literal(literal.clone()),
    }
}

fn collect_references<'a>(node: &'a Node, path: String, found: &mut Vec<(String, &'a Reference)>) {
    match node {
        Node::Literal(_) => {}
        Node::Reference(reference) | Node::Optional(reference, _) => found.push((path, reference)),
        Node::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                collect_references(item, format!("{path}[{index}]"), found);
            }
        }
        Node::Object(fields) => {
            for (key, field) in fields {
                collect_references(field, join(&path, key), found);
            }
        }
    }
}

fn render_node(node: &Node, scope: &dyn Scope) -> Result<Value, String> {
    Ok(match node {
        Node::Literal(value) => value.clone(),
        Node::Reference(reference) => reference.resolve(scope)?.clone(),
        Node::Optional(reference, default) => reference.resolve(scope).unwrap_or(default).clone(),
        Node::Array(items) => {
            Value::Array(items.iter().map(|item| render_node(item, scope)).collect::<Result<_, _>>()?)
        }
        Node::Object(fields) => {
            let mut object = Map::with_capacity(fields.len());
            for (key, field) in fields {
                object.insert(key.clone(), render_node(field, scope)?);
            }
            Value::Object(object)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Outputs(Value, Value);

    impl Scope for Outputs {
        fn value(&self, root: &crate::workflow::reference::Root) -> Option<&Value> {
            use crate::workflow::reference::Root;
            match root {
                Root::Input => Some(&self.0),
                Root::StepOutput(step) => (step.as_str() == "cart").then_some(&self.1),
                _ => None,
            }
        }
    }

    #[test]
    fn renders_references_literals_and_escapes() {
        let template = Template::compile(&json!({
            "cart": "$.input.cart_id",
            "items": ["$.steps.cart.output.items", 3, "plain"],
            "price": "$$.5",
            "nested": {"total": "$.steps.cart.output.total"}
        }))
        .unwrap();
        let scope = Outputs(json!({"cart_id": "c1"}), json!({"items": [1, 2], "total": 9}));
        assert_eq!(
            template.render(&scope).unwrap(),
            json!({"cart": "c1", "items": [[1, 2], 3, "plain"], "price": "$.5", "nested": {"total": 9}})
        );
        let paths: Vec<String> = template.references().into_iter().map(|(path, _)| path).collect();
        assert_eq!(paths, vec!["cart", "items[0]", "nested.total"]);
    }

    #[test]
    fn reports_every_malformed_reference_with_its_path() {
        let errors = Template::compile(&json!({"a": "$.nope", "b": ["$.input[x]"]})).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].path, "a");
        assert_eq!(errors[1].path, "b[0]");
    }

    #[test]
    fn an_optional_reference_falls_back_to_its_default() {
        let template = Template::compile(&json!({
            "gift": "$.input.gift ?? null",
            "note": "$.input.note ?? \"none\"",
            "first": "$.steps.cart.output.items[5] ?? 0",
            "deep": "$.input.a.b.c ?? {\"empty\": true}",
            "present": "$.input.cart_id ?? \"unused\""
        }))
        .unwrap();
        let scope = Outputs(json!({"cart_id": "c1", "a": null}), json!({"items": [1, 2]}));
        assert_eq!(
            template.render(&scope).unwrap(),
            json!({"gift": null, "note": "none", "first": 0, "deep": {"empty": true}, "present": "c1"})
        );
        assert_eq!(template.references().len(), 5, "optional references still count as reads");
        let errors = Template::compile(&json!({"x": "$.input.a ?? not json"})).unwrap_err();
        assert!(errors[0].message.contains("must be a JSON value"), "{errors:?}");
        let errors = Template::compile(&json!({"x": "$.input. ?? 1"})).unwrap_err();
        assert_eq!(errors[0].path, "x");
    }
}
