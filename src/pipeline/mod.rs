//! The middle of the pipeline: a batch of decoded, routed events grouped per (topic, table), applied
//! to every owning sink (sinks concurrently, tables concurrently, each table in order) with retries
//! and dead-lettering, and the offsets that may be committed once every owner has applied them.

mod batch;

use crate::config::DeadLetterConfig;
use crate::config::PipelineConfig;
use crate::dead_letter::{DeadLetterError, DeadLetterQueue, Rejected};
use crate::route::Assignment;
use crate::telemetry::{Event, Telemetry};
use backon::{ConstantBuilder, ExponentialBuilder, Retryable};
pub use batch::{Batch, TableBatch};
use ripple_sink::{ChangeEvent, Rejection, Sink, SinkError, TableRef, Target};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("sink {sink:?} failed to apply changes to {table}: {error}")]
    Sink {
        sink: String,
        table: TableRef,
        error: SinkError,
    },
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    #[error("cannot decode record at {topic}[{partition}]@{offset}: {reason}")]
    Decode {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
}

/// When one sink rejects too much, its rejections stop being dead-lettered and it counts as down
/// until an apply succeeds: see `[dead_letter] max_rejections`, `max_rejected_share`.
#[derive(Debug, Clone, Copy)]
pub struct Breaker {
    pub max_rejections: u64,
    pub window: Duration,
    pub max_share: f64,
}

/// Batches smaller than this never open the breaker by share alone.
const SHARE_FROM: usize = 20;

impl Breaker {
    pub fn from_config(config: &DeadLetterConfig) -> Self {
        Self {
            max_rejections: config.max_rejections,
            window: Duration::from_secs(config.rejection_window_s),
            max_share: config.max_rejected_share,
        }
    }
}

/// One sink's rejections in the current window, and why its breaker is open, if it is.
#[derive(Default)]
struct BreakerState {
    since: Option<Instant>,
    rejected: u64,
    open: Option<String>,
}

/// Applies batches to the sinks with the configured retry policy.
pub struct Applier {
    sinks: Vec<Arc<dyn Sink>>,
    /// Retries of a retriable failure: exponential with jitter, `max_retries` times.
    backoff: ExponentialBuilder,
    /// After that the sink counts as down: retried every `retry_max_delay_ms` until it is back,
    /// while the engine keeps consumption paused.
    patience: ConstantBuilder,
    dead_letters: Option<Arc<dyn DeadLetterQueue>>,
    /// Events sinks rejected for good, written to the dead-letter topic.
    rejected: AtomicU64,
    breaker: Option<Breaker>,
    breakers: Mutex<HashMap<String, BreakerState>>,
    /// Longest one apply call may take; past it the call is dropped (releasing its connection)
    /// and counts as a retriable failure.
    apply_timeout: Duration,
    /// How long a sink that counts as down is left before it is tried again.
    patience_delay: Duration,
    telemetry: Telemetry,
}

impl Applier {
    pub fn new(
        sinks: Vec<Arc<dyn Sink>>,
        config: &PipelineConfig,
        dead_letters: Option<Arc<dyn DeadLetterQueue>>,
    ) -> Self {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(config.retry_initial_delay_ms))
            .with_max_delay(Duration::from_millis(config.retry_max_delay_ms))
            .with_max_times(config.max_retries)
            .with_jitter();
        let patience = ConstantBuilder::default()
            .with_delay(Duration::from_millis(config.retry_max_delay_ms))
            .with_jitter()
            .without_max_times();
        Self {
            sinks,
            backoff,
            patience,
            dead_letters,
            rejected: AtomicU64::new(0),
            breaker: None,
            breakers: Mutex::default(),
            apply_timeout: Duration::from_millis(config.apply_timeout_ms),
            patience_delay: Duration::from_millis(config.retry_max_delay_ms),
            telemetry: Telemetry::default(),
        }
    }

    /// Where applies, retries and dead letters are reported (default: nowhere).
    pub fn with_telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Sets the dead-letter breaker (none: every rejection is dead-lettered).
    pub fn with_breaker(mut self, breaker: Option<Breaker>) -> Self {
        self.breaker = breaker;
        self
    }

    fn breakers(&self) -> std::sync::MutexGuard<'_, HashMap<String, BreakerState>> {
        self.breakers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why `sink`'s breaker is open, if it is.
    fn breaker_open(&self, sink: &str) -> Option<String> {
        self.breaker?;
        self.breakers().get(sink).and_then(|s| s.open.clone())
    }

    /// Counts one more rejection by `sink`, the `rejected`-th of a table batch of `batch`
    /// events; true when this opens (or finds open) the breaker, so the event is not
    /// dead-lettered.
    fn breaker_trips(&self, sink: &str, batch: usize, rejected: usize, error: &str) -> bool {
        let Some(b) = self.breaker else {
            return false;
        };
        let mut all = self.breakers();
        let state = all.entry(sink.to_string()).or_default();
        if state.open.is_some() {
            return true;
        }
        let now = Instant::now();
        if state.since.is_none_or(|t| now.duration_since(t) > b.window) {
            state.since = Some(now);
            state.rejected = 0;
        }
        let why = if state.rejected >= b.max_rejections {
            Some(format!(
                "{} events rejected within {} s (dead_letter.max_rejections)",
                state.rejected,
                b.window.as_secs()
            ))
        } else if batch >= SHARE_FROM && rejected as f64 > b.max_share * batch as f64 {
            Some(format!(
                "{rejected} of a batch of {batch} events rejected (dead_letter.max_rejected_share = {})",
                b.max_share
            ))
        } else {
            None
        };
        match why {
            Some(why) => {
                let reason = format!(
                    "dead-letter breaker open: {why}; the store's last refusal: {error}. Nothing more is dead-lettered for this sink; it counts as down until an apply succeeds"
                );
                tracing::error!(sink, "{reason}");
                self.telemetry.emit(Event::SinkDown {
                    sink,
                    reason: &reason,
                });
                state.open = Some(reason);
                true
            }
            None => {
                state.rejected += 1;
                false
            }
        }
    }

    /// An apply of `sink` succeeded: an open breaker closes.
    fn breaker_closes(&self, sink: &str) {
        if self.breaker.is_none() {
            return;
        }
        if let Some(state) = self.breakers().get_mut(sink)
            && state.open.take().is_some()
        {
            state.rejected = 0;
            state.since = None;
            tracing::info!(sink, "dead-letter breaker closed: the sink applied again");
        }
    }

    /// Events dead-lettered after a sink rejected them, so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    pub fn sinks(&self) -> &[Arc<dyn Sink>] {
        &self.sinks
    }

    /// Applies every table batch to each of its sinks. Sinks run concurrently; within a sink the
    /// tables go one after another, each in offset order. Returns once everything is durable.
    pub async fn apply(&self, batch: &Batch) -> Result<(), PipelineError> {
        let per_sink = self.sinks.iter().enumerate().map(|(id, sink)| async move {
            // Different tables are independent, so they go concurrently (a sink's connection
            // pool bounds how many really run at once); one table's parts stay in order.
            let mut per_table: Vec<Vec<(&TableBatch, &Assignment)>> = Vec::new();
            for t in &batch.tables {
                let Some(a) = t.sinks.iter().find(|a| a.sink == id) else {
                    continue;
                };
                match per_table.iter_mut().find(|g| g[0].0.table == t.table) {
                    Some(group) => group.push((t, a)),
                    None => per_table.push(vec![(t, a)]),
                }
            }
            futures::future::try_join_all(
                per_table
                    .into_iter()
                    .map(|group| self.apply_in_order(sink.as_ref(), group)),
            )
            .await
            .map(|_| ())
        });
        for result in futures::future::join_all(per_sink).await {
            result?;
        }
        Ok(())
    }

    /// One table's parts, one after another.
    async fn apply_in_order(
        &self,
        sink: &dyn Sink,
        group: Vec<(&TableBatch, &Assignment)>,
    ) -> Result<(), PipelineError> {
        for (t, a) in group {
            self.apply_with_retry(sink, t, a).await?;
        }
        Ok(())
    }

    async fn apply_with_retry(
        &self,
        sink: &dyn Sink,
        t: &TableBatch,
        route: &Assignment,
    ) -> Result<(), PipelineError> {
        let failed = |error| PipelineError::Sink {
            sink: sink.name().to_string(),
            table: t.table.clone(),
            error,
        };
        let events = match route.options.shape_events(&t.events) {
            Ok(events) => events,
            Err(error) => return self.reject(sink, t, error, &failed).await,
        };
        let target = Target::of(&t.table).with_template(route.options.target.as_deref());
        // Parts of the batch still to apply, in order. A permanent rejection splits the part it
        // happened in, so only the rejected event is dead-lettered: at the index the sink names,
        // or, when it names none, by halving until the culprit is alone. What a failed call had
        // applied is applied again harmlessly: sinks are idempotent.
        let mut pending = std::collections::VecDeque::new();
        pending.push_back(0..events.len());
        // Events of this table batch dead-lettered for this sink so far (the breaker's share).
        let mut rejected = 0usize;
        while let Some(part) = pending.pop_front() {
            if part.is_empty() {
                continue;
            }
            let slice = &events[part.clone()];
            let attempt = || async {
                let started = Instant::now();
                let result = match tokio::time::timeout(
                    self.apply_timeout,
                    sink.apply(target, slice),
                )
                .await
                {
                    Ok(result) => result.map(|()| started.elapsed()),
                    Err(_) => Err(SinkError::retriable(format!(
                        "no answer within {:?} applying {} events to {} (pipeline.apply_timeout_ms)",
                        self.apply_timeout,
                        slice.len(),
                        t.table
                    ))),
                };
                // With the breaker open, what the store refuses is waited out like an outage.
                result.map_err(|e| match self.breaker_open(sink.name()) {
                    Some(why) if !e.is_retriable() => {
                        SinkError::retriable(format!("{why} (now: {e})"))
                    }
                    _ => e,
                })
            };
            let mut result = attempt
                .retry(self.backoff)
                .when(SinkError::is_retriable)
                .notify(|e, delay| {
                    self.telemetry.emit(Event::Retry {
                        sink: sink.name(),
                        table: &t.table,
                        error: &e.to_string(),
                    });
                    tracing::warn!(sink = sink.name(), table = %t.table, error = %e, ?delay, "retrying after a retriable failure");
                })
                .await;
            if let Err(e) = &result
                && e.is_retriable()
            {
                tracing::error!(sink = sink.name(), table = %t.table, error = %e, "sink down: retries used up; waiting for it with consumption paused");
                result = attempt
                    .retry(self.patience)
                    .when(SinkError::is_retriable)
                    .notify(|e, delay| {
                        self.telemetry.emit(Event::Retry {
                            sink: sink.name(),
                            table: &t.table,
                            error: &e.to_string(),
                        });
                        tracing::warn!(sink = sink.name(), table = %t.table, error = %e, ?delay, "sink still down");
                    })
                    .await;
                if result.is_ok() {
                    tracing::info!(sink = sink.name(), table = %t.table, "sink is back");
                }
            }
            let error = match result {
                Ok(took) => {
                    self.breaker_closes(sink.name());
                    self.telemetry.emit(Event::Applied {
                        sink: sink.name(),
                        events: slice,
                        refused: &[],
                        took: Some(took),
                    });
                    continue;
                }
                Err(e) if e.is_retriable() || self.dead_letters.is_none() => return Err(failed(e)),
                Err(e) => e,
            };
            // What the store refused of this part, and whether it applied everything else.
            let reported: Vec<Rejection> = error
                .rejections
                .iter()
                .filter(|r| r.index < slice.len())
                .cloned()
                .collect();
            let (refused, rest_applied) = if !reported.is_empty() {
                (reported, true)
            } else {
                match error.event_index.filter(|&i| i < slice.len()) {
                    Some(i) => (vec![Rejection::new(i, error.to_string())], false),
                    None if slice.len() == 1 => (vec![Rejection::new(0, error.to_string())], false),
                    None => {
                        // No event named: halve until the culprits are alone.
                        let mid = part.start + slice.len() / 2;
                        pending.push_front(mid..part.end);
                        pending.push_front(part.start..mid);
                        continue;
                    }
                }
            };
            let mut letters = Vec::with_capacity(refused.len());
            let mut tripped_at = None;
            for (n, r) in refused.iter().enumerate() {
                if self.breaker_trips(sink.name(), events.len(), rejected + 1, &r.reason) {
                    tripped_at = Some(n);
                    break;
                }
                rejected += 1;
                letters.push((part.start + r.index, r.reason.as_str()));
            }
            self.dead_letter(sink, t, &events, &letters).await?;
            match tripped_at {
                // The rest goes again, now waited out as an outage: from the first refusal not
                // dead-lettered when the store applied what came before it, else the whole part.
                Some(n) if rest_applied => {
                    pending.push_front(part.start + refused[n].index..part.end)
                }
                Some(_) => pending.push_front(part),
                None if rest_applied => {
                    let at: Vec<usize> = refused.iter().map(|r| r.index).collect();
                    self.telemetry.emit(Event::Applied {
                        sink: sink.name(),
                        events: slice,
                        refused: &at,
                        took: None,
                    });
                }
                None => {
                    let i = refused[0].index;
                    pending.push_front(part.start + i + 1..part.end);
                    pending.push_front(part.start..part.start + i);
                }
            }
        }
        Ok(())
    }

    /// A permanent failure before any event reached the sink (the route cannot shape the table):
    /// every event is dead-lettered for this sink, or, without a dead-letter topic, the run stops.
    /// Past the breaker's threshold the sink counts as down, and waits, until an apply succeeds.
    async fn reject(
        &self,
        sink: &dyn Sink,
        t: &TableBatch,
        error: SinkError,
        failed: &impl Fn(SinkError) -> PipelineError,
    ) -> Result<(), PipelineError> {
        if self.dead_letters.is_none() || error.is_retriable() {
            return Err(failed(error));
        }
        let reason = error.to_string();
        let mut from = 0;
        while from < t.events.len() {
            let mut letters = Vec::new();
            let mut tripped = false;
            for i in from..t.events.len() {
                if self.breaker_trips(sink.name(), t.events.len(), letters.len() + 1, &reason) {
                    tripped = true;
                    break;
                }
                letters.push((i, reason.as_str()));
            }
            from += letters.len();
            self.dead_letter(sink, t, &t.events, &letters).await?;
            if tripped {
                tracing::warn!(sink = sink.name(), table = %t.table, error = %reason, "not dead-lettering past the breaker; waiting for the sink to apply again");
                while self.breaker_open(sink.name()).is_some() {
                    self.telemetry.emit(Event::Retry {
                        sink: sink.name(),
                        table: &t.table,
                        error: &reason,
                    });
                    tokio::time::sleep(self.patience_delay).await;
                }
                tracing::info!(sink = sink.name(), table = %t.table, "breaker closed; dead-lettering again");
            }
        }
        Ok(())
    }

    /// Dead-letters `letters` (indices into `events`, the shaped events of `t`, with reasons)
    /// as refused by `sink`, all at once.
    async fn dead_letter(
        &self,
        sink: &dyn Sink,
        t: &TableBatch,
        events: &[ChangeEvent],
        letters: &[(usize, &str)],
    ) -> Result<(), PipelineError> {
        if letters.is_empty() {
            return Ok(());
        }
        let dl = self.dead_letters.as_ref().expect("checked by the caller");
        let rejected: Vec<Rejected<'_>> = letters
            .iter()
            .map(|&(i, reason)| Rejected {
                origin: &events[i].origin,
                reason,
            })
            .collect();
        dl.send_rejected(sink.name(), &rejected).await?;
        self.telemetry.emit(Event::DeadLettered {
            topic: &t.topic,
            stage: sink.name(),
            count: letters.len() as u64,
        });
        self.rejected
            .fetch_add(letters.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
