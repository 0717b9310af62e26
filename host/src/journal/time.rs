//! Wall-clock timestamps as the engine records them: milliseconds since the
//! Unix epoch, rendered as RFC 3339 at the JSON boundary.

use serde::{Deserialize, Serialize, Serializer};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, in milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self(since_epoch.as_millis() as u64)
    }

    /// This time plus a duration.
    pub fn plus(self, duration: Duration) -> Self {
        Self(self.0.saturating_add(duration.as_millis() as u64))
    }

    /// How long from `self` until `later` (zero if `later` is not later).
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0))
    }

    /// RFC 3339 with milliseconds, e.g. `2026-11-25T10:00:00.123Z`.
    pub fn to_rfc3339(self) -> String {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(self.0)).to_string()
    }
}

/// Serializes a timestamp as RFC 3339 (`#[serde(serialize_with = "crate::journal::time::rfc3339")]`),
/// for JSON meant for people; the store keeps the number.
pub fn rfc3339<S: Serializer>(timestamp: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&timestamp.to_rfc3339())
}

/// Like [`rfc3339`] for an optional timestamp.
pub fn rfc3339_opt<S: Serializer>(timestamp: &Option<Timestamp>, serializer: S) -> Result<S::Ok, S::Error> {
    match timestamp {
        Some(timestamp) => rfc3339(timestamp, serializer),
        None => serializer.serialize_none(),
    }
}
