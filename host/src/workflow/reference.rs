//! References inside input templates: `$.input.cart_id`, `$.steps.cart.output.items[0]`,
//! `$.hooks.validate-cart.output`, `$.item.sku` and `$.index` (in a fan-out element).
//!
//! A reference names a root (the workflow input, the output of a step, the
//! result of a hook, the element of a fan-out) and a path of object keys and
//! array indices below it. This module parses and
//! resolves references; it knows nothing about which steps exist (validation
//! does) or when outputs become available (the engine does).

use crate::journal::ids::StepId;
use serde_json::Value;
use std::fmt;

/// What a reference starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Root {
    /// `$.input`: the execution's input.
    Input,
    /// `$.steps.<id>.output`: the output of a step.
    StepOutput(StepId),
    /// `$.hooks.<name>`: a hook's result, `{"output": [..], "handlers": {"<plugin>": {"output": ..}}}`;
    /// the path below starts with `output` or `handlers`.
    Hook(StepId),
    /// `$.item`: the element of a fan-out step (`for_each`) being run.
    Item,
    /// `$.index`: the position of that element, from 0.
    Index,
}

/// One hop below the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// `.key`: a field of an object.
    Key(String),
    /// `[n]`: an element of an array.
    Index(usize),
}

/// A parsed reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Where the path starts.
    pub root: Root,
    /// The path below the root.
    pub path: Vec<Segment>,
    text: String,
}

/// Values a reference can be resolved against.
pub trait Scope {
    /// The value a root names, if it has one here (a step without output yet,
    /// `$.item` outside a fan-out element: none).
    fn value(&self, root: &Root) -> Option<&Value>;

    /// The execution's input.
    fn input(&self) -> &Value {
        static NULL: Value = Value::Null;
        self.value(&Root::Input).unwrap_or(&NULL)
    }
}

impl Reference {
    /// Parses `text`, which must start with `$.`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest =
            text.strip_prefix("$.").ok_or_else(|| format!("malformed reference `{text}`: must start with `$.`"))?;
        let mut cursor = PathCursor::new(text, rest);
        let first = cursor.key()?;
        let root = match first.as_str() {
            "input" => Root::Input,
            "item" => Root::Item,
            "index" => {
                if !cursor.is_done() {
                    return Err(format!("malformed reference `{text}`: `$.index` is a number and has no fields"));
                }
                Root::Index
            }
            "hooks" => {
                let hook = cursor.key()?;
                if !StepId::is_valid(&hook) {
                    return Err(format!("malformed reference `{text}`: `{hook}` is not a valid hook name"));
                }
                let next = if cursor.is_done() { String::new() } else { cursor.key()? };
                match next.as_str() {
                    "output" => {}
                    "handlers" => {
                        let plugin = if cursor.is_done() { String::new() } else { cursor.key()? };
                        let output = if cursor.is_done() { String::new() } else { cursor.key()? };
                        if plugin.is_empty() || output != "output" {
                            return Err(format!(
                                "malformed reference `{text}`: expected `$.hooks.{hook}.handlers.<plugin>.output`"
                            ));
                        }
                        let path = vec![Segment::Key(next), Segment::Key(plugin), Segment::Key(output)];
                        return Self::finish(text, Root::Hook(StepId::new(&hook)), path, cursor);
                    }
                    _ => {
                        return Err(format!(
                            "malformed reference `{text}`: expected `output` or `handlers` after `$.hooks.{hook}`"
                        ))
                    }
                }
                return Self::finish(text, Root::Hook(StepId::new(&hook)), vec![Segment::Key(next)], cursor);
            }
            "steps" => {
                let step = cursor.key()?;
                if !StepId::is_valid(&step) {
                    return Err(format!("malformed reference `{text}`: `{step}` is not a valid step id"));
                }
                if cursor.is_done() {
                    return Err(format!("malformed reference `{text}`: expected `output` after `$.steps.{step}`"));
                }
                match cursor.key()?.as_str() {
                    "output" => Root::StepOutput(StepId::new(&step)),
                    other => {
                        return Err(format!(
                            "malformed reference `{text}`: expected `output` after `$.steps.{step}`, found `{other}`"
                        ))
                    }
                }
            }
            other => {
                return Err(format!(
                    "malformed reference `{text}`: unknown root `{other}` (expected `$.input`, `$.steps.<id>.output`, \
                     `$.hooks.<name>.output`, `$.item` or `$.index`)"
                ))
            }
        };
        Self::finish(text, root, Vec::new(), cursor)
    }

    /// Reads the rest of the path after `path`.
    fn finish(text: &str, root: Root, mut path: Vec<Segment>, mut cursor: PathCursor<'_>) -> Result<Self, String> {
        while !cursor.is_done() {
            path.push(cursor.segment()?);
        }
        Ok(Self { root, path, text: text.to_string() })
    }

    /// The reference as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The step this reference reads from, if any.
    pub fn step(&self) -> Option<&StepId> {
        match &self.root {
            Root::StepOutput(step) => Some(step),
            _ => None,
        }
    }

    /// The hook this reference reads from, if any.
    pub fn hook(&self) -> Option<&StepId> {
        match &self.root {
            Root::Hook(hook) => Some(hook),
            _ => None,
        }
    }

    /// Looks the reference up in `scope`; the error says which part is missing.
    pub fn resolve<'a>(&self, scope: &'a dyn Scope) -> Result<&'a Value, String> {
        let mut value = scope.value(&self.root).ok_or_else(|| match &self.root {
            Root::Input => format!("`{}`: the execution has no input", self.text),
            Root::StepOutput(step) => format!("`{}`: step `{step}` has no output", self.text),
            Root::Hook(hook) => format!("`{}`: hook `{hook}` has no result", self.text),
            Root::Item | Root::Index => format!("`{}`: only a fan-out step (`for_each`) has an element", self.text),
        })?;
        for segment in &self.path {
            let next = match segment {
                Segment::Key(key) => value.get(key.as_str()),
                Segment::Index(index) => value.get(*index),
            };
            value = next.ok_or_else(|| format!("`{}`: {} not found in {}", self.text, segment, describe(value)))?;
        }
        Ok(value)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Key(key) => write!(f, "key `{key}`"),
            Segment::Index(index) => write!(f, "index [{index}]"),
        }
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Walks the text of a path: `key.key[3].key`.
struct PathCursor<'a> {
    text: &'a str,
    rest: &'a str,
    first: bool,
}

impl<'a> PathCursor<'a> {
    fn new(text: &'a str, rest: &'a str) -> Self {
        Self { text, rest, first: true }
    }

    fn is_done(&self) -> bool {
        self.rest.is_empty()
    }

    fn malformed(&self, why: &str) -> String {
        format!("malformed reference `{}`: {why}", self.text)
    }

    /// A `.key` (or the bare first key right after `$.`).
    fn key(&mut self) -> Result<String, String> {
        if !self.first {
            self.rest = self.rest.strip_prefix('.').ok_or_else(|| self.malformed("expected `.` followed by a name"))?;
        }
        self.first = false;
        let end =
            self.rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')).unwrap_or(self.rest.len());
        if end == 0 {
            return Err(self.malformed("empty name in path"));
        }
        let (key, rest) = self.rest.split_at(end);
        self.rest = rest;
        Ok(key.to_string())
    }

    /// A `.key` or `[index]`.
    fn segment(&mut self) -> Result<Segment, String> {
        if let Some(rest) = self.rest.strip_prefix('[') {
            let close = rest.find(']').ok_or_else(|| self.malformed("unclosed `[`"))?;
            let index = rest[..close]
                .parse::<usize>()
                .map_err(|_| self.malformed(&format!("`[{}]` is not an array index", &rest[..close])))?;
            self.rest = &rest[close + 1..];
            return Ok(Segment::Index(index));
        }
        self.key().map(Segment::Key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct TestScope(Value, Value);

    impl Scope for TestScope {
        fn value(&self, root: &Root) -> Option<&Value> {
            match root {
                Root::Input => Some(&self.0),
                Root::StepOutput(step) => (step.as_str() == "cart").then_some(&self.1),
                _ => None,
            }
        }
    }

    #[test]
    fn parses_input_and_step_references() {
        let input = Reference::parse("$.input.cart_id").unwrap();
        assert_eq!(input.root, Root::Input);
        assert_eq!(input.path, vec![Segment::Key("cart_id".into())]);

        let step = Reference::parse("$.steps.cart.output.items[2].sku").unwrap();
        assert_eq!(step.root, Root::StepOutput(StepId::new("cart")));
        assert_eq!(step.path, vec![Segment::Key("items".into()), Segment::Index(2), Segment::Key("sku".into())]);
        assert_eq!(Reference::parse("$.steps.cart.output").unwrap().path, vec![]);

        let hook = Reference::parse("$.hooks.validate-cart.handlers.cart-limit.output.ok").unwrap();
        assert_eq!(hook.root, Root::Hook(StepId::new("validate-cart")));
        assert_eq!(hook.path.len(), 4);
        assert_eq!(Reference::parse("$.hooks.validate-cart.output[0]").unwrap().path.len(), 2);
        assert_eq!(Reference::parse("$.item.sku").unwrap().root, Root::Item);
        assert_eq!(Reference::parse("$.index").unwrap().root, Root::Index);
    }

    #[test]
    fn rejects_malformed_references_with_a_reason() {
        for (text, reason) in [
            ("$.inputs.x", "unknown root `inputs`"),
            ("$.steps.cart", "expected `output` after `$.steps.cart`"),
            ("$.", "empty name"),
            ("$.steps.cart.outptu", "expected `output`"),
            ("$.steps.Cart.output", "not a valid step id"),
            ("$.input.items[x]", "not an array index"),
            ("$.input.items[1", "unclosed `[`"),
            ("$.input..x", "empty name"),
            ("$.hooks.check", "expected `output` or `handlers`"),
            ("$.hooks.check.handlers.limit", "expected `$.hooks.check.handlers.<plugin>.output`"),
            ("$.index.x", "has no fields"),
            ("$.input.a b", "expected `.`"),
        ] {
            let error = Reference::parse(text).unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
            assert!(error.contains(text), "{text}: {error}");
        }
    }

    #[test]
    fn resolves_paths_and_names_the_missing_part() {
        let scope = TestScope(json!({"cart_id": "c1"}), json!({"items": [{"sku": "A"}]}));
        let sku = Reference::parse("$.steps.cart.output.items[0].sku").unwrap();
        assert_eq!(sku.resolve(&scope).unwrap(), &json!("A"));
        let missing = Reference::parse("$.steps.cart.output.items[3]").unwrap();
        assert!(missing.resolve(&scope).unwrap_err().contains("index [3] not found in an array"));
        let no_output = Reference::parse("$.steps.other.output").unwrap();
        assert!(no_output.resolve(&scope).unwrap_err().contains("step `other` has no output"));
    }
}
