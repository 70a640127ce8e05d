//! Errors a sink reports: whether a failure is worth retrying, and configuration errors that name
//! the key to fix.

use std::fmt;

/// Whether trying the same work again may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The store was unreachable, overloaded, timed out, or lost a race (deadlock, serialization).
    Retriable,
    /// The store rejected the data itself; retrying the same events fails the same way.
    Permanent,
}

/// A failed `apply` or `ready`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub kind: FailureKind,
    pub message: String,
    /// The index, within the batch handed to `apply`, of the event that caused a permanent failure,
    /// when the store says which one it was.
    pub event_index: Option<usize>,
    /// Every event of the call the store refused for its own data, when the store answers event by
    /// event: then each event of the call not listed here was applied. Empty otherwise.
    pub rejections: Vec<Rejection>,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SinkError {
    pub fn retriable(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Retriable,
            message: message.into(),
            event_index: None,
            rejections: Vec::new(),
            source: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Permanent,
            message: message.into(),
            event_index: None,
            rejections: Vec::new(),
            source: None,
        }
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn at_event(mut self, index: usize) -> Self {
        self.event_index = Some(index);
        self
    }

    /// The store refused `rejections` (indices into the batch handed to `apply`) and applied every
    /// other event of the call: what a `_bulk` answer or per-command results say.
    pub fn rejected(mut rejections: Vec<Rejection>) -> Self {
        rejections.sort_by_key(|r| r.index);
        rejections.dedup_by_key(|r| r.index);
        let message = match rejections.as_slice() {
            [] => "no event rejected".to_string(),
            [one] => one.reason.clone(),
            [first, ..] => format!(
                "{} events rejected, the first (#{}) for: {}",
                rejections.len(),
                first.index,
                first.reason
            ),
        };
        Self {
            rejections,
            ..Self::permanent(message)
        }
    }

    pub fn is_retriable(&self) -> bool {
        self.kind == FailureKind::Retriable
    }
}

/// One event a store refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Its index in the batch handed to `apply`.
    pub index: usize,
    pub reason: String,
}

impl Rejection {
    pub fn new(index: usize, reason: impl Into<String>) -> Self {
        Self {
            index,
            reason: reason.into(),
        }
    }
}

/// A configuration problem, with the full key path (`sinks.replica.url`) and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config key `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}
