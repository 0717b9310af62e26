//! The one bound every JSON value entering the log must respect: its nesting
//! depth. serde_json refuses to read values nested deeper than 128 levels, and
//! an event wraps a value in a few levels of its own, so a value accepted at
//! any door (API body, CLI input, guest output or compensation data, a
//! transform's result) is checked here first; the store can then always read
//! back what it wrote.

use serde_json::Value;

/// The deepest nesting of arrays and objects a value may have.
pub const MAX_JSON_DEPTH: usize = 64;

/// A value nested deeper than [`MAX_JSON_DEPTH`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("JSON nested deeper than the limit of {MAX_JSON_DEPTH} levels")]
pub struct TooDeep;

/// The nesting depth of `value`: 0 for a scalar, 1 for `[]` or `{}`, and so on.
pub fn depth(value: &Value) -> usize {
    // Iterative, so that a hostile value cannot overflow the host's stack.
    let mut deepest = 0;
    let mut pending = vec![(value, 0usize)];
    while let Some((value, above)) = pending.pop() {
        let level = above + 1;
        match value {
            Value::Array(items) => pending.extend(items.iter().map(|item| (item, level))),
            Value::Object(map) => pending.extend(map.values().map(|item| (item, level))),
            _ => continue,
        }
        deepest = deepest.max(level);
    }
    deepest
}

/// Refuses a value nested deeper than [`MAX_JSON_DEPTH`].
pub fn check_depth(value: &Value) -> Result<(), TooDeep> {
    if depth(value) > MAX_JSON_DEPTH {
        Err(TooDeep)
    } else {
        Ok(())
    }
}

/// Parses JSON text and checks its depth; the error says which limit was hit.
/// Text nested deeper than serde_json's own limit fails in the parser, with
/// the same message.
pub fn parse_bounded(text: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(text).map_err(|error| {
        if error.to_string().starts_with("recursion limit exceeded") {
            TooDeep.to_string()
        } else {
            error.to_string()
        }
    })?;
    check_depth(&value).map_err(|error| error.to_string())?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn depth_counts_levels_of_arrays_and_objects() {
        assert_eq!(depth(&serde_json::json!(1)), 0);
        assert_eq!(depth(&serde_json::json!({"a": [1, {"b": []}]})), 4);
    }

    #[test]
    fn values_up_to_the_limit_pass_and_deeper_ones_are_refused_by_name() {
        assert!(parse_bounded(&nested(MAX_JSON_DEPTH)).is_ok());
        for levels in [MAX_JSON_DEPTH + 1, 127, 10_000] {
            let error = parse_bounded(&nested(levels)).expect_err("too deep");
            assert!(error.contains("nested deeper than the limit of 64"), "{error}");
        }
    }
}
