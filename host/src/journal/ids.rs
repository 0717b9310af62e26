//! Identifiers that carry meaning: an execution, a step of a workflow, a plugin.
//! (A unit of a step, `step[3]` or `hook[plugin]`, is a [`super::UnitId`].)
//!
//! Step ids come from the workflow definition and never from the run time, so a
//! resumed execution finds every step again.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Unique id of one execution of a workflow (a UUIDv7: sortable by creation time).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExecutionId(String);

impl ExecutionId {
    /// A fresh, time-ordered execution id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// Wraps an id read from the outside (a store, a command line).
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Id of a step within a workflow definition (`[a-z0-9_-]+`, unique per workflow).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepId(#[serde(with = "arc_str")] Arc<str>);

impl StepId {
    /// Wraps a step id; callers validate its syntax with [`StepId::is_valid`].
    pub fn new(id: &str) -> Self {
        Self(Arc::from(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `id` is a well-formed step id: non-empty, lowercase ASCII
    /// letters, digits, `_` and `-`, starting with a letter.
    pub fn is_valid(id: &str) -> bool {
        let mut chars = id.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A reference to a plugin by name, as written in a workflow (`plugin = "reserve-inventory"`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PluginName(#[serde(with = "arc_str")] Arc<str>);

impl PluginName {
    /// Wraps a plugin name.
    pub fn new(name: &str) -> Self {
        Self(Arc::from(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The longest plugin name (its files, `<name>.wasm.partial` and the
    /// like, stay far below file-name limits).
    pub const MAX_LEN: usize = 64;

    /// Whether `name` is a well-formed plugin name: the alphabet of step ids,
    /// at most [`Self::MAX_LEN`] characters.
    pub fn is_valid(name: &str) -> bool {
        name.len() <= Self::MAX_LEN && StepId::is_valid(name)
    }
}

impl fmt::Display for PluginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serde for `Arc<str>` (serde's own impl needs its `rc` feature).
mod arc_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(value: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(deserializer).map(Arc::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_ids_are_lowercase_words() {
        assert!(StepId::is_valid("reserve-inventory_2"));
        assert!(!StepId::is_valid(""));
        assert!(!StepId::is_valid("2fast"));
        assert!(!StepId::is_valid("Cart"));
        assert!(!StepId::is_valid("cart.items"));
    }

    #[test]
    fn execution_ids_are_unique_and_ordered() {
        let a = ExecutionId::generate();
        let b = ExecutionId::generate();
        assert_ne!(a, b);
        assert!(a < b);
    }
}
