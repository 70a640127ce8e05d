//! The middle of the pipeline: a batch of decoded, routed events grouped per (topic, table), applied
//! to every owning sink (sinks concurrently, tables concurrently, each table in order) with retries
//! and dead-lettering, and the offsets that may be committed once every owner has applied them.

use crate::config::DeadLetterConfig;
use crate::config::PipelineConfig;
use crate::dead_letter::{DeadLetterError, DeadLetterQueue, Rejected};
use crate::route::Assignment;
use crate::source::Partition;
use crate::telemetry::{Event, Telemetry};
use backon::{ConstantBuilder, ExponentialBuilder, Retryable};
use ripple_sink::{ChangeEvent, Rejection, Sink, SinkError, TableRef, Target};
use std::collections::{BTreeMap, HashMap};
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

/// Events of one table from one topic, in offset order, and the sinks that own them.
pub struct TableBatch {
    pub topic: Arc<str>,
    pub table: TableRef,
    pub sinks: Arc<[Assignment]>,
    pub events: Vec<ChangeEvent>,
}

/// What one pass of the consumer loop collected.
#[derive(Default)]
pub struct Batch {
    pub tables: Vec<TableBatch>,
    /// Per partition, the highest offset in this batch (applied events and skipped records alike).
    pub offsets: BTreeMap<Partition, i64>,
    pub events: usize,
    pub skipped: usize,
    /// Records that could not be decoded, written to the dead-letter topic.
    pub dead_lettered: usize,
    /// Records consumed, per topic.
    pub records: Vec<(Arc<str>, u64)>,
    /// When every sink had applied it: the run's figures end here, not when the loop next looks.
    pub applied_at: Option<std::time::Instant>,
}

impl Batch {
    /// Records that the record at `offset` is part of this batch, whatever became of it.
    pub fn mark(&mut self, topic: &Arc<str>, partition: i32, offset: i64) {
        match self.records.iter_mut().find(|(t, _)| Arc::ptr_eq(t, topic)) {
            Some((_, n)) => *n += 1,
            None => self.records.push((topic.clone(), 1)),
        }
        let slot = self
            .offsets
            .entry((topic.clone(), partition))
            .or_insert(offset);
        *slot = (*slot).max(offset);
    }

    pub fn push(&mut self, sinks: Arc<[Assignment]>, event: ChangeEvent) {
        self.events += 1;
        // Batches hold few tables; the last one is almost always the right one.
        let found = self
            .tables
            .iter()
            .rposition(|t| Arc::ptr_eq(&t.topic, &event.origin.topic) && t.table == *event.table());
        match found {
            Some(i) => self.tables[i].events.push(event),
            None => self.tables.push(TableBatch {
                topic: event.origin.topic.clone(),
                table: event.table().clone(),
                sinks,
                events: vec![event],
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Leaves out everything from partitions this consumer no longer owns: their next owner
    /// starts at the last committed offset and applies those records itself.
    pub fn forget(&mut self, revoked: &[(String, i32)]) {
        let gone = |topic: &str, partition: i32| {
            revoked
                .iter()
                .any(|(t, p)| *p == partition && t.as_str() == topic)
        };
        self.offsets.retain(|(t, p), _| !gone(t, *p));
        for table in &mut self.tables {
            table
                .events
                .retain(|e| !gone(&e.origin.topic, e.origin.partition));
        }
        self.tables.retain(|t| !t.events.is_empty());
        self.events = self.tables.iter().map(|t| t.events.len()).sum();
    }
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
mod tests {
    use super::*;
    use crate::dead_letter::DeadLetter;
    use crate::route::{Assignment, RouteOptions};
    use ripple_sink::testkit::{Faulty, MemorySink, Naming};
    use ripple_sink::{Column, ColumnType, FailureKind, Op, Origin, TableSchema, Value, Version};

    /// `n` upserts of one table, offsets 0..n, routed to sink 0.
    fn batch(n: i64) -> Batch {
        let schema = Arc::new(TableSchema {
            table: TableRef::new("public", "t"),
            columns: vec![Column {
                name: "id".into(),
                ty: ColumnType::Int64,
                nullable: false,
                source_type: None,
                default: None,
            }],
            key: vec![0],
        });
        let sinks: Arc<[Assignment]> = Arc::from(vec![Assignment {
            sink: 0,
            options: Arc::new(RouteOptions::default()),
        }]);
        let topic: Arc<str> = Arc::from("t");
        let mut b = Batch::default();
        for i in 0..n {
            b.mark(&topic, 0, i);
            b.push(
                sinks.clone(),
                ChangeEvent {
                    schema: schema.clone(),
                    op: Op::Upsert,
                    row: Some(vec![Value::Int(i)]),
                    key: vec![Value::Int(i)],
                    before: None,
                    version: Version {
                        commit: 1,
                        change: i as u64,
                    },
                    source_ts_ms: 0,
                    origin: Origin {
                        topic: topic.clone(),
                        partition: 0,
                        offset: i,
                    },
                },
            );
        }
        b
    }

    fn fast(apply_timeout_ms: u64, max_retries: usize) -> PipelineConfig {
        PipelineConfig {
            apply_timeout_ms,
            max_retries,
            retry_initial_delay_ms: 1,
            retry_max_delay_ms: 5,
            ..PipelineConfig::default()
        }
    }

    /// A sink call that never returns is cut off at `apply_timeout_ms` and retried like any outage;
    /// nothing is dead-lettered (there is no dead-letter topic, so a permanent error would fail).
    #[tokio::test]
    async fn a_hanging_apply_times_out_and_is_retried() {
        let sink = Arc::new(Faulty::new(MemorySink::new("m")).hang_first(2));
        let applier = Applier::new(vec![sink.clone() as Arc<dyn Sink>], &fast(50, 5), None);
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(5), applier.apply(&batch(3))).await;
        result
            .expect("the applier hung with the sink")
            .expect("applied after the timeouts");
        assert_eq!(sink.inner().offsets(), vec![0, 1, 2]);
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "two timeouts of 50 ms each"
        );
        assert_eq!(sink.calls(), 3);
    }

    /// Retriable failures are retried (past `max_retries`, with the sink counted as down) until the
    /// sink takes the batch, which it then holds exactly once.
    #[tokio::test]
    async fn an_outage_longer_than_the_retries_is_waited_out() {
        let sink =
            Arc::new(Faulty::new(MemorySink::new("m")).fail_first(6, FailureKind::Retriable));
        let applier = Applier::new(vec![sink.clone() as Arc<dyn Sink>], &fast(1_000, 2), None);
        tokio::time::timeout(Duration::from_secs(5), applier.apply(&batch(4)))
            .await
            .expect("waited out")
            .expect("applied");
        assert_eq!(sink.calls(), 7, "six failures, then the call that worked");
        assert_eq!(sink.inner().offsets(), vec![0, 1, 2, 3]);
    }

    /// Without a dead-letter topic a permanent rejection stops the run, naming sink and table, and
    /// is not retried.
    #[tokio::test]
    async fn a_permanent_rejection_without_dead_letters_stops_at_once() {
        let sink = Arc::new(
            Faulty::new(MemorySink::new("m")).reject(|e| e.origin.offset == 2, Naming::First),
        );
        let applier = Applier::new(vec![sink.clone() as Arc<dyn Sink>], &fast(1_000, 5), None);
        let err = applier.apply(&batch(4)).await.unwrap_err();
        assert!(
            err.to_string().contains("\"m\"") && err.to_string().contains("public.t"),
            "{err}"
        );
        assert_eq!(sink.calls(), 1, "a permanent error is not retried");
        assert!(sink.inner().applied().is_empty());
    }

    /// Records what the pipeline dead-letters, by offset, and in how many calls.
    #[derive(Default)]
    struct Letters(std::sync::Mutex<Vec<i64>>, AtomicU64);

    #[async_trait::async_trait]
    impl DeadLetterQueue for Letters {
        async fn send_record(&self, _letter: DeadLetter<'_>) -> Result<(), DeadLetterError> {
            unreachable!("the applier dead-letters events, not records")
        }

        async fn send_rejected(
            &self,
            _sink: &str,
            rejected: &[Rejected<'_>],
        ) -> Result<(), DeadLetterError> {
            self.1.fetch_add(1, Ordering::Relaxed);
            let mut all = self.0.lock().unwrap();
            all.extend(rejected.iter().map(|r| r.origin.offset));
            Ok(())
        }
    }

    impl Letters {
        fn offsets(&self) -> Vec<i64> {
            self.0.lock().unwrap().clone()
        }

        fn calls(&self) -> u64 {
            self.1.load(Ordering::Relaxed)
        }
    }

    /// A sink that rejects every event (naming it) while `refusing` is set, and an applier with a
    /// dead-letter recorder and the given breaker.
    fn refusing_setup(
        breaker: Breaker,
        naming: Naming,
    ) -> (
        Arc<Faulty<MemorySink>>,
        Arc<std::sync::atomic::AtomicBool>,
        Arc<Letters>,
        Arc<Applier>,
    ) {
        let refusing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = refusing.clone();
        let sink = Arc::new(
            Faulty::new(MemorySink::new("m")).reject(move |_| flag.load(Ordering::Relaxed), naming),
        );
        let letters = Arc::new(Letters::default());
        let applier = Applier::new(
            vec![sink.clone() as Arc<dyn Sink>],
            &fast(1_000, 1),
            Some(letters.clone() as Arc<dyn DeadLetterQueue>),
        )
        .with_breaker(Some(breaker));
        (sink, refusing, letters, Arc::new(applier))
    }

    /// A rejection storm: at most `max_rejections` are dead-lettered, then the sink counts as down
    /// (nothing more dead-lettered however long it refuses) until the cause goes; then everything
    /// else is applied and the breaker closes.
    #[tokio::test]
    async fn the_breaker_stops_dead_lettering_a_storm_and_closes_when_the_sink_applies() {
        let (sink, refusing, letters, applier) = refusing_setup(
            Breaker {
                max_rejections: 5,
                window: Duration::from_secs(60),
                max_share: 1.0,
            },
            Naming::First,
        );
        let run = tokio::spawn({
            let applier = applier.clone();
            async move { applier.apply(&batch(50)).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            letters.offsets(),
            vec![0, 1, 2, 3, 4],
            "exactly the threshold dead-lettered"
        );
        let why = applier.breaker_open("m").expect("the breaker is open");
        assert!(why.contains("max_rejections"), "{why}");
        assert!(!run.is_finished(), "the sink is waited for, not skipped");
        let calls = sink.calls();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            sink.calls() > calls,
            "the refused part is retried while the breaker is open"
        );
        assert_eq!(
            letters.offsets().len(),
            5,
            "nothing more dead-lettered while open"
        );

        refusing.store(false, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("applied once the sink takes the events")
            .unwrap()
            .expect("no error");
        assert_eq!(sink.inner().offsets(), (5..50).collect::<Vec<_>>());
        assert!(
            applier.breaker_open("m").is_none(),
            "closed after the apply"
        );
    }

    /// A store that refuses more than `max_rejected_share` of one table's batch opens the breaker
    /// before `max_rejections` is reached.
    #[tokio::test]
    async fn the_breaker_opens_on_a_share_of_the_batch() {
        let (_sink, refusing, letters, applier) = refusing_setup(
            Breaker {
                max_rejections: 1_000,
                window: Duration::from_secs(60),
                max_share: 0.5,
            },
            Naming::First,
        );
        let run = tokio::spawn({
            let applier = applier.clone();
            async move { applier.apply(&batch(40)).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            letters.offsets().len(),
            20,
            "half of 40 dead-lettered, then the breaker"
        );
        assert!(
            applier
                .breaker_open("m")
                .unwrap()
                .contains("max_rejected_share")
        );
        refusing.store(false, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    /// A rejection that names no event is narrowed down by halving: one bad event among 64 costs
    /// at most 2 * log2(64) + 1 calls, and only it is dead-lettered.
    #[tokio::test]
    async fn bisection_finds_the_one_culprit_in_few_calls() {
        let sink = Arc::new(
            Faulty::new(MemorySink::new("m")).reject(|e| e.origin.offset == 37, Naming::None),
        );
        let letters = Arc::new(Letters::default());
        let applier = Applier::new(
            vec![sink.clone() as Arc<dyn Sink>],
            &fast(1_000, 1),
            Some(letters.clone() as Arc<dyn DeadLetterQueue>),
        );
        applier.apply(&batch(64)).await.unwrap();
        assert_eq!(letters.offsets(), vec![37]);
        assert_eq!(
            sink.inner().offsets(),
            (0..64).filter(|&o| o != 37).collect::<Vec<_>>()
        );
        assert!(
            sink.calls() <= 13,
            "{} calls to find one event in 64",
            sink.calls()
        );
    }

    /// A sink that reports every refused event of a call (as `_bulk` does) costs one call and one
    /// dead-letter write for the whole batch, however many it refuses; the rest is applied once.
    #[tokio::test]
    async fn every_reported_rejection_is_dead_lettered_from_one_call() {
        let sink = Arc::new(
            Faulty::new(MemorySink::new("m")).reject(|e| e.origin.offset % 3 == 0, Naming::All),
        );
        let letters = Arc::new(Letters::default());
        let applier = Applier::new(
            vec![sink.clone() as Arc<dyn Sink>],
            &fast(1_000, 1),
            Some(letters.clone() as Arc<dyn DeadLetterQueue>),
        );
        applier.apply(&batch(3_000)).await.unwrap();
        assert_eq!(sink.calls(), 1, "no call again for the rest");
        assert_eq!(letters.calls(), 1, "one dead-letter write for all");
        assert_eq!(
            letters.offsets(),
            (0..3_000).filter(|o| o % 3 == 0).collect::<Vec<_>>()
        );
        assert_eq!(
            sink.inner().offsets(),
            (0..3_000).filter(|o| o % 3 != 0).collect::<Vec<_>>()
        );
        assert_eq!(applier.rejected(), 1_000);
    }

    /// With reported rejections the breaker still stops at its threshold: the events refused past
    /// it are waited out, and applied once the store takes them, with nothing dead-lettered twice.
    #[tokio::test]
    async fn the_breaker_holds_for_reported_rejections() {
        let (sink, refusing, letters, applier) = refusing_setup(
            Breaker {
                max_rejections: 7,
                window: Duration::from_secs(60),
                max_share: 1.0,
            },
            Naming::All,
        );
        let run = tokio::spawn({
            let applier = applier.clone();
            async move { applier.apply(&batch(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(letters.offsets(), (0..7).collect::<Vec<_>>());
        assert!(applier.breaker_open("m").is_some());
        refusing.store(false, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(letters.offsets().len(), 7);
        assert_eq!(sink.inner().offsets(), (7..30).collect::<Vec<_>>());
    }

    /// Backpressure: while one sink is down, `apply` does not return (so the engine takes no new
    /// records), the healthy sink is given its events once and not again, and the down sink gets
    /// only retries of the same events, spaced by the retry delay, not a flood.
    #[tokio::test]
    async fn a_down_sink_holds_the_batch_without_flooding_anyone() {
        let healthy = Arc::new(Faulty::new(MemorySink::new("healthy")));
        let down = Arc::new(
            Faulty::new(MemorySink::new("down")).fail_first(1_000_000, FailureKind::Retriable),
        );
        let mut config = fast(1_000, 2);
        config.retry_max_delay_ms = 20;
        let applier = Arc::new(Applier::new(
            vec![
                healthy.clone() as Arc<dyn Sink>,
                down.clone() as Arc<dyn Sink>,
            ],
            &config,
            None,
        ));
        let mut b = batch(10);
        let both: Arc<[Assignment]> = Arc::from(vec![
            Assignment {
                sink: 0,
                options: Arc::new(RouteOptions::default()),
            },
            Assignment {
                sink: 1,
                options: Arc::new(RouteOptions::default()),
            },
        ]);
        b.tables[0].sinks = both;
        let run = tokio::spawn({
            let applier = applier.clone();
            async move { applier.apply(&b).await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!run.is_finished(), "the batch is held while a sink is down");
        assert_eq!(
            healthy.calls(),
            1,
            "the healthy sink is not sent the batch again"
        );
        assert_eq!(healthy.inner().offsets(), (0..10).collect::<Vec<_>>());
        let calls = down.calls();
        assert!(
            (5..=60).contains(&calls),
            "{calls} calls in 500 ms: retried at the retry delay (about 20 ms), not in a loop"
        );
        run.abort();
    }
}
