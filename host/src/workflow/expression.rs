//! Expressions in workflow files: `when` conditions and `transform` steps,
//! written in CEL (the Common Expression Language, evaluated by the `cel`
//! crate) over the execution's input, step outputs and hook results.
//!
//! An expression is compiled once, at load, and its references are read off
//! its syntax tree: which steps and hooks it reads (they become dependencies,
//! exactly like `$.steps.<id>.output` in a template) and which variables it
//! uses. Evaluation is pure: the same outputs always give the same value, so
//! a replayed execution takes the same branches.
//!
//! Variables: `input`, `steps.<id>.output` (or `steps["id-with-dashes"]`),
//! `hooks.<name>.output` / `hooks.<name>.handlers.<plugin>.output`, and in a
//! fan-out element, `item` and `index`.

use super::reference::{Root, Scope};
use crate::journal::ids::StepId;
use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

/// The variables an expression may use.
const VARIABLES: [&str; 5] = ["input", "steps", "hooks", "item", "index"];

/// A compiled CEL expression and what it reads.
#[derive(Clone)]
pub struct Expression {
    source: String,
    program: Arc<cel::Program>,
    steps: Vec<StepId>,
    hooks: Vec<StepId>,
    uses_element: bool,
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expression").field("source", &self.source).finish()
    }
}

/// What the syntax tree walk found.
#[derive(Default)]
struct Found {
    steps: BTreeSet<StepId>,
    hooks: BTreeSet<StepId>,
    uses_element: bool,
    problems: Vec<String>,
}

impl Expression {
    /// Parses `source` and checks its variables; the error says what is wrong.
    pub fn compile(source: &str) -> Result<Self, String> {
        if source.trim().is_empty() {
            return Err("the expression is empty".into());
        }
        let program = cel::Program::compile(source)
            .map_err(|errors| format!("`{source}` is not a valid CEL expression: {}", one_line(&errors.to_string())))?;
        let mut found = Found::default();
        walk(program.expression(), &mut Vec::new(), &mut found);
        if let Some(problem) = found.problems.first() {
            return Err(format!("`{source}`: {problem}"));
        }
        Ok(Self {
            source: source.to_string(),
            program: Arc::new(program),
            steps: found.steps.into_iter().collect(),
            hooks: found.hooks.into_iter().collect(),
            uses_element: found.uses_element,
        })
    }

    /// Checks the expression as a `when` condition: one whose value its
    /// syntax alone shows is not a boolean (a number, a string, arithmetic, a
    /// list, `size(..)`) is refused when a workflow is loaded.
    pub fn check_is_condition(&self) -> Result<(), String> {
        match result_kind(self.program.expression()) {
            Some(kind) if kind != BOOLEAN => {
                Err(format!("`{}` is a condition and must be true or false, but it is always {kind}", self.source))
            }
            _ => Ok(()),
        }
    }

    /// Compiles a `when` condition ([`Expression::compile`], then
    /// [`Expression::check_is_condition`]).
    pub fn compile_condition(source: &str) -> Result<Self, String> {
        let expression = Self::compile(source)?;
        expression.check_is_condition()?;
        Ok(expression)
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The steps whose output it reads.
    pub fn steps(&self) -> &[StepId] {
        &self.steps
    }

    /// The hooks whose results it reads.
    pub fn hooks(&self) -> &[StepId] {
        &self.hooks
    }

    /// Whether it reads `item` or `index` (only meaningful in a fan-out element).
    pub fn uses_element(&self) -> bool {
        self.uses_element
    }

    /// Evaluates the expression against `scope` and returns its value as JSON.
    pub fn evaluate(&self, scope: &dyn Scope) -> Result<Value, String> {
        let value = self.execute(scope).map_err(|error| format!("`{}`: {error}", self.source))?;
        value.json().map_err(|error| format!("`{}`: the result cannot be JSON: {error}", self.source))
    }

    /// Evaluates a condition: the value must be a boolean. A condition that
    /// reads a key the data does not have (`input.gift.wrap` without a
    /// `gift`, a field of a skipped step's `null` output) is false, not an
    /// error: optional data is the normal case for a condition.
    pub fn evaluate_condition(&self, scope: &dyn Scope) -> Result<bool, String> {
        match self.execute(scope) {
            Ok(cel::Value::Bool(value)) => Ok(value),
            Err(error) if reads_missing_data(&error) => Ok(false),
            Err(error) => Err(format!("`{}`: {error}", self.source)),
            Ok(other) => {
                let shown = other.json().map_or_else(|_| format!("{other:?}"), |json| json.to_string());
                Err(format!("`{}` must be true or false, but is {shown}", self.source))
            }
        }
    }

    fn execute(&self, scope: &dyn Scope) -> Result<cel::Value, cel::ExecutionError> {
        let mut context = cel::Context::default();
        context.add_variable_from_value("input", to_cel(scope.input()));
        let mut steps = HashMap::new();
        for step in &self.steps {
            if let Some(output) = scope.value(&Root::StepOutput(step.clone())) {
                let entry = cel_map([("output".to_string(), to_cel(output))]);
                steps.insert(cel::objects::Key::String(Arc::new(step.to_string())), entry);
            }
        }
        context.add_variable_from_value("steps", cel::Value::Map(cel::objects::Map { map: Arc::new(steps) }));
        let mut hooks = HashMap::new();
        for hook in &self.hooks {
            if let Some(result) = scope.value(&Root::Hook(hook.clone())) {
                hooks.insert(cel::objects::Key::String(Arc::new(hook.to_string())), to_cel(result));
            }
        }
        context.add_variable_from_value("hooks", cel::Value::Map(cel::objects::Map { map: Arc::new(hooks) }));
        if let (Some(item), Some(index)) = (scope.value(&Root::Item), scope.value(&Root::Index)) {
            context.add_variable_from_value("item", to_cel(item));
            context.add_variable_from_value("index", to_cel(index));
        }
        self.program.execute(&context)
    }
}

/// Whether an evaluation failed only because it read data that is not there:
/// a missing key, or a field of `null`.
fn reads_missing_data(error: &cel::ExecutionError) -> bool {
    match error {
        cel::ExecutionError::NoSuchKey(_) => true,
        cel::ExecutionError::UnsupportedTargetType { target } => matches!(target, cel::Value::Null),
        // `x.field` where `x` is null: the field select (`_._`) on a null.
        cel::ExecutionError::NoSuchOverload(overload) => {
            overload.function() == "_._" && overload.argument_types().first().is_some_and(|t| t == "null_type")
        }
        _ => false,
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Collects the references of an expression; `bound` holds the variables
/// that comprehensions (`all`, `map`, ...) introduce, which shadow ours.
fn walk(node: &IdedExpr, bound: &mut Vec<String>, found: &mut Found) {
    match &node.expr {
        Expr::Ident(name) if bound.iter().any(|b| b == name) => {}
        Expr::Ident(name) => match name.as_str() {
            "input" => {}
            "item" | "index" => found.uses_element = true,
            "steps" | "hooks" => found
                .problems
                .push(format!("`{name}` must be followed by an id: `{name}.cart` or `{name}[\"validate-cart\"]`")),
            other => {
                found.problems.push(format!("unknown variable `{other}` (expected one of {})", VARIABLES.join(", ")))
            }
        },
        Expr::Select(select) => {
            if let Some(root) = unbound_root(&select.operand, bound) {
                record(root, &select.field, found);
            } else {
                walk(&select.operand, bound, found);
            }
        }
        Expr::Call(call) => {
            let indexed = call.func_name == "_[_]" && call.args.len() == 2;
            let root = if indexed { unbound_root(&call.args[0], bound) } else { None };
            match (root, call.args.get(1).map(|arg| &arg.expr)) {
                (Some(root), Some(Expr::Literal(LiteralValue::String(key)))) => {
                    record(root, key.inner(), found);
                }
                (Some(root), _) => found.problems.push(format!("`{root}[...]` needs a literal id in quotes")),
                (None, _) => {
                    if let Some(target) = &call.target {
                        walk(target, bound, found);
                    }
                    for arg in &call.args {
                        walk(arg, bound, found);
                    }
                }
            }
        }
        Expr::Comprehension(comprehension) => {
            walk(&comprehension.iter_range, bound, found);
            walk(&comprehension.accu_init, bound, found);
            let depth = bound.len();
            bound.push(comprehension.iter_var.clone());
            bound.extend(comprehension.iter_var2.clone());
            bound.push(comprehension.accu_var.clone());
            walk(&comprehension.loop_cond, bound, found);
            walk(&comprehension.loop_step, bound, found);
            walk(&comprehension.result, bound, found);
            bound.truncate(depth);
        }
        Expr::List(list) => list.elements.iter().for_each(|element| walk(element, bound, found)),
        Expr::Map(map) => {
            for entry in &map.entries {
                match &entry.expr {
                    EntryExpr::MapEntry(entry) => {
                        walk(&entry.key, bound, found);
                        walk(&entry.value, bound, found);
                    }
                    EntryExpr::StructField(field) => walk(&field.value, bound, found),
                }
            }
        }
        Expr::Struct(structure) => {
            for entry in &structure.entries {
                if let EntryExpr::StructField(field) = &entry.expr {
                    walk(&field.value, bound, found);
                }
            }
        }
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

const BOOLEAN: &str = "a boolean";

/// What kind of value `node` evaluates to, when its syntax alone tells
/// (`None`: it depends on the data, as `input.flag` does).
fn result_kind(node: &IdedExpr) -> Option<&'static str> {
    use cel::common::ast::operators as op;
    match &node.expr {
        Expr::Literal(literal) => Some(match literal {
            LiteralValue::Boolean(_) => BOOLEAN,
            LiteralValue::Int(_) | LiteralValue::UInt(_) | LiteralValue::Double(_) => "a number",
            LiteralValue::String(_) => "a string",
            LiteralValue::Bytes(_) => "bytes",
            LiteralValue::Null => "null",
        }),
        Expr::List(_) => Some("a list"),
        Expr::Map(_) | Expr::Struct(_) => Some("a map"),
        Expr::Select(select) if select.test => Some(BOOLEAN), // has(..)
        Expr::Call(call) => match call.func_name.as_str() {
            op::LOGICAL_AND
            | op::LOGICAL_OR
            | op::LOGICAL_NOT
            | op::EQUALS
            | op::NOT_EQUALS
            | op::GREATER
            | op::GREATER_EQUALS
            | op::LESS
            | op::LESS_EQUALS
            | op::IN
            | op::NOT_STRICTLY_FALSE => Some(BOOLEAN),
            "contains" | "startsWith" | "endsWith" | "matches" => Some(BOOLEAN),
            op::ADD => Some("the result of `+` (a number, a string or a list)"),
            op::SUBSTRACT | op::MULTIPLY | op::DIVIDE | op::MODULO | op::NEGATE => Some("a number"),
            "size" | "int" | "uint" | "double" => Some("a number"),
            "string" => Some("a string"),
            op::CONDITIONAL if call.args.len() == 3 => match (result_kind(&call.args[1]), result_kind(&call.args[2])) {
                (Some(then), Some(otherwise)) if then != BOOLEAN && otherwise != BOOLEAN => Some(then),
                _ => None,
            },
            _ => None,
        },
        // `map` and `filter` build a list; `all`, `exists`, `exists_one` a boolean.
        Expr::Comprehension(comprehension) => match (&comprehension.accu_init.expr, &comprehension.result.expr) {
            (Expr::List(_), Expr::Ident(result)) if *result == comprehension.accu_var => Some("a list"),
            _ => None,
        },
        Expr::Ident(_) | Expr::Select(_) | Expr::Unspecified => None,
    }
}

/// `steps` or `hooks`, when `node` is that variable and no comprehension shadows it.
fn unbound_root<'a>(node: &'a IdedExpr, bound: &[String]) -> Option<&'a str> {
    match &node.expr {
        Expr::Ident(name) if (name == "steps" || name == "hooks") && !bound.contains(name) => Some(name),
        _ => None,
    }
}

fn record(root: &str, id: &str, found: &mut Found) {
    if !StepId::is_valid(id) {
        found.problems.push(format!("`{id}` is not a valid {} id", if root == "steps" { "step" } else { "hook" }));
    } else if root == "steps" {
        found.steps.insert(StepId::new(id));
    } else {
        found.hooks.insert(StepId::new(id));
    }
}

fn cel_map(entries: impl IntoIterator<Item = (String, cel::Value)>) -> cel::Value {
    let map = entries.into_iter().map(|(key, value)| (cel::objects::Key::String(Arc::new(key)), value)).collect();
    cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
}

/// JSON to CEL: integers become `int` (so `input.total * 2` type-checks), larger ones `uint`.
fn to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(value) => cel::Value::Bool(*value),
        Value::Number(number) => match (number.as_i64(), number.as_u64()) {
            (Some(int), _) => cel::Value::Int(int),
            (None, Some(uint)) => cel::Value::UInt(uint),
            _ => cel::Value::Float(number.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(text) => cel::Value::String(Arc::new(text.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(fields) => cel_map(fields.iter().map(|(key, value)| (key.clone(), to_cel(value)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct TestScope {
        input: Value,
        cart: Value,
        hook: Value,
    }

    impl Scope for TestScope {
        fn value(&self, root: &Root) -> Option<&Value> {
            match root {
                Root::Input => Some(&self.input),
                Root::StepOutput(step) if step.as_str() == "validate-cart" || step.as_str() == "cart" => {
                    Some(&self.cart)
                }
                Root::Hook(hook) if hook.as_str() == "check" => Some(&self.hook),
                _ => None,
            }
        }
    }

    fn scope() -> TestScope {
        TestScope {
            input: json!({"express": true, "total": 120}),
            cart: json!({"items": [{"q": 1}, {"q": 2}], "total": 30.5}),
            hook: json!({"output": [{"ok": true}], "handlers": {"limit": {"output": {"ok": true}}}}),
        }
    }

    #[test]
    fn finds_step_and_hook_references_in_every_spelling() {
        let expression =
            Expression::compile(r#"steps.cart.output.total > 10.0 && steps["validate-cart"].output.items.all(i, i.q > 0) && hooks.check.output[0].ok"#)
                .unwrap();
        let steps: Vec<&str> = expression.steps().iter().map(StepId::as_str).collect();
        assert_eq!(steps, vec!["cart", "validate-cart"]);
        assert_eq!(expression.hooks(), &[StepId::new("check")]);
        assert!(!expression.uses_element());
        assert_eq!(expression.evaluate_condition(&scope()), Ok(true));
    }

    #[test]
    fn integers_from_json_mix_with_integer_literals() {
        let expression =
            Expression::compile("{'double': input.total * 2, 'qs': steps.cart.output.items.map(i, i.q)}").unwrap();
        assert_eq!(expression.evaluate(&scope()).unwrap(), json!({"double": 240, "qs": [1, 2]}));
    }

    #[test]
    fn refuses_bad_syntax_unknown_variables_and_bare_roots() {
        for (source, reason) in [
            ("input.total >", "not a valid CEL expression"),
            ("order.total > 1", "unknown variable `order`"),
            ("size(steps) > 0", "`steps` must be followed by an id"),
            ("steps[input.id].output", "needs a literal id"),
            ("steps.Cart.output", "not a valid step id"),
            ("", "empty"),
        ] {
            let error = Expression::compile(source).unwrap_err();
            assert!(error.contains(reason), "{source}: {error}");
        }
    }

    #[test]
    fn a_condition_must_be_boolean_and_errors_name_the_expression() {
        let not_bool = Expression::compile("input.total").unwrap();
        assert!(not_bool.evaluate_condition(&scope()).unwrap_err().contains("must be true or false"));
        let missing = Expression::compile("input.nope == 1").unwrap();
        assert!(missing.evaluate(&scope()).unwrap_err().contains("`input.nope == 1`"));
    }

    #[test]
    fn a_condition_that_cannot_be_boolean_is_refused_at_compile_time() {
        for (source, kind) in [
            ("1", "a number"),
            ("'yes'", "a string"),
            ("input.total * 2", "a number"),
            ("input.name + '!'", "the result of `+`"),
            ("size(input.items)", "a number"),
            ("[input.a]", "a list"),
            ("{'a': 1}", "a map"),
            ("input.items.map(i, i.q)", "a list"),
            ("input.vip ? 'gold' : 'plain'", "a string"),
            ("null", "null"),
        ] {
            let error = Expression::compile_condition(source).unwrap_err();
            assert!(error.contains("must be true or false") && error.contains(kind), "{source}: {error}");
        }
        for source in [
            "input.flag",
            "input.total > 100 && !input.vip",
            "has(input.gift)",
            "input.items.all(i, i.q > 0)",
            "input.items.exists_one(i, i.q > 0)",
            "'a' in input.tags",
            "input.name.startsWith('x')",
            "input.vip ? true : input.total > 10",
            "steps.cart.output.ok",
        ] {
            assert!(Expression::compile_condition(source).is_ok(), "{source}");
        }
    }

    #[test]
    fn a_condition_reading_missing_data_is_false() {
        let mut with_nulls = scope();
        with_nulls.input = json!({"gift": null, "total": 120});
        for source in [
            "input.nope == 1",
            "input.gift.wrap",
            "input.gift.wrap == true",
            "input.nope.deeper.still",
            "has(input.total) && input.nope > 1",
        ] {
            let condition = Expression::compile(source).unwrap();
            assert_eq!(condition.evaluate_condition(&with_nulls), Ok(false), "{source}");
        }
        // Present data still decides, and other errors are still errors.
        assert_eq!(Expression::compile("input.total > 100").unwrap().evaluate_condition(&with_nulls), Ok(true));
        assert_eq!(Expression::compile("!has(input.nope)").unwrap().evaluate_condition(&with_nulls), Ok(true));
        let type_error = Expression::compile("input.total > 'x'").unwrap();
        assert!(type_error.evaluate_condition(&with_nulls).is_err(), "comparing a number with a string");
        // A value (not a condition) reading missing data is an error, naming the expression.
        assert!(Expression::compile("input.nope").unwrap().evaluate(&with_nulls).unwrap_err().contains("No such key"));
    }
}
