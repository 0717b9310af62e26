//! [`UnitId`]: the name of one unit of work in an execution's log.
//!
//! A workflow's node (step or hook) runs as one or more units: a plain step
//! is one unit named by the step id; a fan-out element is `step[3]`; a hook
//! handler is `hook[plugin]`. The id is derived from the definition, the
//! element's position and the pinned handlers, never from the run time, so a
//! resumed execution finds every unit again. This one type carries it through
//! events, commands and the API; `Display` and `FromStr` are its only text form.

use super::ids::{PluginName, StepId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Which unit of a node: a fan-out element by index, or a hook handler by plugin.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    /// Element `n` of a fan-out (`step[n]`).
    Element(u32),
    /// The handler a tenant bound to a hook (`hook[plugin]`).
    Handler(PluginName),
}

/// The stable name of a unit: `step`, `step[3]` or `hook[plugin]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitId {
    /// The step or hook.
    pub step: StepId,
    /// Which of its units, for a fan-out or a hook.
    pub slot: Option<Slot>,
}

impl UnitId {
    /// The only unit of a plain step.
    pub fn step(step: StepId) -> Self {
        Self { step, slot: None }
    }

    /// Element `index` of a fan-out step.
    pub fn element(step: StepId, index: u32) -> Self {
        Self { step, slot: Some(Slot::Element(index)) }
    }

    /// The handler `plugin` of a hook.
    pub fn handler(step: StepId, plugin: PluginName) -> Self {
        Self { step, slot: Some(Slot::Handler(plugin)) }
    }
}

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.slot {
            None => write!(f, "{}", self.step),
            Some(Slot::Element(index)) => write!(f, "{}[{index}]", self.step),
            Some(Slot::Handler(plugin)) => write!(f, "{}[{plugin}]", self.step),
        }
    }
}

/// Why a text is not a unit id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid step id (`step`, `step[3]` or `hook[plugin]`)")]
pub struct InvalidUnitId(pub String);

impl FromStr for UnitId {
    type Err = InvalidUnitId;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidUnitId(text.to_string());
        let (id, inner) = match text.strip_suffix(']').and_then(|rest| rest.split_once('[')) {
            Some((id, inner)) => (id, Some(inner)),
            None => (text, None),
        };
        if !StepId::is_valid(id) {
            return Err(invalid());
        }
        let slot = match inner {
            None => None,
            Some(index) if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) => {
                Some(Slot::Element(index.parse().map_err(|_| invalid())?))
            }
            Some(plugin) if PluginName::is_valid(plugin) => Some(Slot::Handler(PluginName::new(plugin))),
            Some(_) => return Err(invalid()),
        };
        Ok(Self { step: StepId::new(id), slot })
    }
}

impl Serialize for UnitId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UnitId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_round_trips_through_its_text() {
        for text in ["reserve", "reserve[0]", "reserve[17]", "before-order[cart-limit]"] {
            let unit: UnitId = text.parse().expect("valid");
            assert_eq!(unit.to_string(), text);
            let json = serde_json::to_string(&unit).expect("serializes");
            assert_eq!(serde_json::from_str::<UnitId>(&json).expect("deserializes"), unit);
        }
        assert_eq!("reserve[3]".parse::<UnitId>().unwrap().slot, Some(Slot::Element(3)));
        let handler = "hook[cart-limit]".parse::<UnitId>().unwrap();
        assert_eq!(handler.slot, Some(Slot::Handler(PluginName::new("cart-limit"))));
    }

    #[test]
    fn malformed_ids_are_refused_with_the_text() {
        for text in ["", "Cart", "step[", "step[]", "step[3", "step[Bad]", "step[1][2]", "[1]", "step[99999999999]"] {
            let error = text.parse::<UnitId>().expect_err(text);
            assert_eq!(error.0, text);
        }
    }
}
