//! A test kit for code that drives sinks (the engine's pipeline, or a user's): an in-memory sink
//! that records what it was given, and a wrapper that injects faults into any sink: fail the n-th
//! call, reject events matching a predicate, hang, be slow. No store and no Kafka needed. Enabled
//! with the `testkit` feature.

pub mod conformance;

use crate::{ChangeEvent, FailureKind, Rejection, Sink, SinkError, Target};
use async_trait::async_trait;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Keeps every event it is given, in the order of the calls.
pub struct MemorySink {
    name: String,
    applied: Mutex<Vec<ChangeEvent>>,
    calls: AtomicUsize,
}

impl MemorySink {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            applied: Mutex::default(),
            calls: AtomicUsize::new(0),
        }
    }

    /// Every event applied so far, in order (re-deliveries included).
    pub fn applied(&self) -> Vec<ChangeEvent> {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The Kafka offsets of the events applied so far, in order.
    pub fn offsets(&self) -> Vec<i64> {
        self.applied().iter().map(|e| e.origin.offset).collect()
    }

    /// How many times `apply` was called.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn ready(&self) -> Result<(), SinkError> {
        Ok(())
    }

    async fn apply(&self, _target: Target<'_>, events: &[ChangeEvent]) -> Result<(), SinkError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(events);
        Ok(())
    }
}

/// How a [`Faulty`] sink tells which events it refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// The call fails, applying nothing, and names no event: the caller must find them.
    None,
    /// The call fails, applying nothing, naming the first refused event (as one SQL error can).
    First,
    /// Every other event is applied and every refused one reported (as `_bulk` items are).
    All,
}

type Predicate = Box<dyn Fn(&ChangeEvent) -> bool + Send + Sync>;

/// Wraps a sink and makes some of its calls fail, hang or wait, as configured with the builder
/// methods. Calls are counted from 1, across every table.
pub struct Faulty<S> {
    inner: S,
    calls: AtomicUsize,
    fail_calls: Vec<(usize, FailureKind)>,
    fail_until: Option<(usize, FailureKind)>,
    reject: Option<(Predicate, Naming)>,
    hang_calls: usize,
    delay: Option<Duration>,
}

impl<S: Sink> Faulty<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            calls: AtomicUsize::new(0),
            fail_calls: Vec::new(),
            fail_until: None,
            reject: None,
            hang_calls: 0,
            delay: None,
        }
    }

    /// The `n`-th call fails with `kind`, applying nothing.
    pub fn fail_call(mut self, n: usize, kind: FailureKind) -> Self {
        self.fail_calls.push((n, kind));
        self
    }

    /// Every call up to and including the `n`-th fails with `kind` (an outage that lasts).
    pub fn fail_first(mut self, n: usize, kind: FailureKind) -> Self {
        self.fail_until = Some((n, kind));
        self
    }

    /// Events that match `predicate` are refused, as a store refusing their data would; how the
    /// refusal is told is `naming`'s.
    pub fn reject(
        mut self,
        predicate: impl Fn(&ChangeEvent) -> bool + Send + Sync + 'static,
        naming: Naming,
    ) -> Self {
        self.reject = Some((Box::new(predicate), naming));
        self
    }

    /// The first `n` calls never return (until the caller drops them).
    pub fn hang_first(mut self, n: usize) -> Self {
        self.hang_calls = n;
        self
    }

    /// Every call waits `delay` before it goes to the inner sink.
    pub fn slow(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// How many times `apply` was called, the failed calls included.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

fn failure(kind: FailureKind, message: String) -> SinkError {
    match kind {
        FailureKind::Retriable => SinkError::retriable(message),
        FailureKind::Permanent => SinkError::permanent(message),
    }
}

#[async_trait]
impl<S: Sink> Sink for Faulty<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn ready(&self) -> Result<(), SinkError> {
        self.inner.ready().await
    }

    async fn apply(&self, target: Target<'_>, events: &[ChangeEvent]) -> Result<(), SinkError> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= self.hang_calls {
            std::future::pending::<()>().await;
        }
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        if let Some((until, kind)) = self.fail_until
            && n <= until
        {
            return Err(failure(
                kind,
                format!("injected failure of call {n} (first {until})"),
            ));
        }
        if let Some(&(_, kind)) = self.fail_calls.iter().find(|(at, _)| *at == n) {
            return Err(failure(kind, format!("injected failure of call {n}")));
        }
        if let Some((predicate, naming)) = &self.reject {
            let refused: Vec<usize> = (0..events.len())
                .filter(|&i| predicate(&events[i]))
                .collect();
            let reason = |i: usize| {
                format!(
                    "injected rejection of the event at offset {}",
                    events[i].origin.offset
                )
            };
            match (naming, refused.first()) {
                (_, None) => {}
                (Naming::None, Some(&i)) => return Err(SinkError::permanent(reason(i))),
                (Naming::First, Some(&i)) => {
                    return Err(SinkError::permanent(reason(i)).at_event(i));
                }
                (Naming::All, Some(_)) => {
                    let kept: Vec<ChangeEvent> = (0..events.len())
                        .filter(|i| !refused.contains(i))
                        .map(|i| events[i].clone())
                        .collect();
                    self.inner.apply(target, &kept).await?;
                    return Err(SinkError::rejected(
                        refused
                            .iter()
                            .map(|&i| Rejection::new(i, reason(i)))
                            .collect(),
                    ));
                }
            }
        }
        self.inner.apply(target, events).await
    }
}
