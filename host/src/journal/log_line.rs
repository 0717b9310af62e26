//! [`LogLine`]: what a guest logged during a call, recorded with the call's result.

use super::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Severity (or origin, for captured stdio) of a guest log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// `log` at trace level.
    Trace,
    /// `log` at debug level.
    Debug,
    /// `log` at info level.
    Info,
    /// `log` at warn level.
    Warn,
    /// `log` at error level.
    Error,
    /// A line the guest wrote to stdout.
    Stdout,
    /// A line the guest wrote to stderr.
    Stderr,
}

/// One line a guest logged during a call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// When it was logged.
    pub at: Timestamp,
    /// Its level.
    pub level: LogLevel,
    /// The text.
    pub message: String,
}
