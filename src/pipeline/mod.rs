//! The middle of the pipeline: a batch of decoded, routed events grouped per (topic, table), applied
//! to every owning sink (sinks concurrently, tables concurrently, each table in order) with retries
//! and dead-lettering, and the offsets that may be committed once every owner has applied them.

use crate::config::PipelineConfig;
use crate::dead_letter::{DeadLetterError, DeadLetters};
use crate::metrics::{DeadLetterLabels, metrics};
use crate::route::Assignment;
use crate::source::Partition;
use backon::{ConstantBuilder, ExponentialBuilder, Retryable};
use ripple_sink::{ChangeEvent, Sink, SinkError, TableRef, Target};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Applies batches to the sinks with the configured retry policy.
pub struct Applier {
    sinks: Vec<Arc<dyn Sink>>,
    /// Retries of a retriable failure: exponential with jitter, `max_retries` times.
    backoff: ExponentialBuilder,
    /// After that the sink counts as down: retried every `retry_max_delay_ms` until it is back,
    /// while the engine keeps consumption paused.
    patience: ConstantBuilder,
    dead_letters: Option<Arc<DeadLetters>>,
    /// Events sinks rejected for good, written to the dead-letter topic.
    rejected: AtomicU64,
    /// Longest one apply call may take; past it the call is dropped (releasing its connection)
    /// and counts as a retriable failure.
    apply_timeout: Duration,
}

impl Applier {
    pub fn new(
        sinks: Vec<Arc<dyn Sink>>,
        config: &PipelineConfig,
        dead_letters: Option<Arc<DeadLetters>>,
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
            apply_timeout: Duration::from_millis(config.apply_timeout_ms),
        }
    }

    pub fn dead_letters(&self) -> Option<Arc<DeadLetters>> {
        self.dead_letters.clone()
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
            Err(error) => return self.reject(sink, &t.events, error, &failed).await,
        };
        let target = Target::of(&t.table).with_template(route.options.target.as_deref());
        // Parts of the batch still to apply, in order. A permanent rejection splits the part it
        // happened in, so only the rejected event is dead-lettered: at the index the sink names,
        // or, when it names none, by halving until the culprit is alone. What a failed call had
        // applied is applied again harmlessly: sinks are idempotent.
        let mut pending = std::collections::VecDeque::new();
        pending.push_back(0..events.len());
        while let Some(part) = pending.pop_front() {
            if part.is_empty() {
                continue;
            }
            let slice = &events[part.clone()];
            let attempt = || async {
                let started = Instant::now();
                match tokio::time::timeout(self.apply_timeout, sink.apply(target, slice)).await {
                    Ok(result) => result.map(|()| started.elapsed()),
                    Err(_) => Err(SinkError::retriable(format!(
                        "no answer within {:?} applying {} events to {} (pipeline.apply_timeout_ms)",
                        self.apply_timeout,
                        slice.len(),
                        t.table
                    ))),
                }
            };
            let mut result = attempt
                .retry(self.backoff)
                .when(SinkError::is_retriable)
                .notify(|e, delay| {
                    metrics().record_retry(sink.name(), &t.table.to_string());
                    crate::dashboard::live().sink_failed(sink.name(), &e.to_string());
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
                        metrics().record_retry(sink.name(), &t.table.to_string());
                        crate::dashboard::live().sink_failed(sink.name(), &e.to_string());
                        tracing::warn!(sink = sink.name(), table = %t.table, error = %e, ?delay, "sink still down");
                    })
                    .await;
                if result.is_ok() {
                    tracing::info!(sink = sink.name(), table = %t.table, "sink is back");
                }
            }
            let error = match result {
                Ok(took) => {
                    metrics().record_applied(sink.name(), slice, took);
                    crate::dashboard::live().sink_applied(sink.name(), slice.len());
                    continue;
                }
                Err(e) if e.is_retriable() || self.dead_letters.is_none() => return Err(failed(e)),
                Err(e) => e,
            };
            match error.event_index.filter(|&i| i < slice.len()) {
                Some(i) => {
                    self.dead_letter(sink, &slice[i], &error.to_string())
                        .await?;
                    pending.push_front(part.start + i + 1..part.end);
                    pending.push_front(part.start..part.start + i);
                }
                None if slice.len() == 1 => {
                    self.dead_letter(sink, &slice[0], &error.to_string())
                        .await?;
                }
                None => {
                    let mid = part.start + slice.len() / 2;
                    pending.push_front(mid..part.end);
                    pending.push_front(part.start..mid);
                }
            }
        }
        Ok(())
    }

    /// A permanent failure before any event reached the sink (the route cannot shape the table):
    /// every event is dead-lettered for this sink, or, without a dead-letter topic, the run stops.
    async fn reject(
        &self,
        sink: &dyn Sink,
        events: &[ChangeEvent],
        error: SinkError,
        failed: &impl Fn(SinkError) -> PipelineError,
    ) -> Result<(), PipelineError> {
        if self.dead_letters.is_none() || error.is_retriable() {
            return Err(failed(error));
        }
        let reason = error.to_string();
        for e in events {
            self.dead_letter(sink, e, &reason).await?;
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        sink: &dyn Sink,
        event: &ChangeEvent,
        reason: &str,
    ) -> Result<(), PipelineError> {
        let dl = self.dead_letters.as_ref().expect("checked by the caller");
        dl.send_event(&event.origin, sink.name(), reason).await?;
        metrics()
            .dead_lettered
            .get_or_create(&DeadLetterLabels {
                topic: event.origin.topic.to_string(),
                stage: sink.name().to_string(),
            })
            .inc();
        self.rejected.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{Assignment, RouteOptions};
    use ripple_sink::testkit::{Faulty, MemorySink};
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
        let sink =
            Arc::new(Faulty::new(MemorySink::new("m")).reject(|e| e.origin.offset == 2, true));
        let applier = Applier::new(vec![sink.clone() as Arc<dyn Sink>], &fast(1_000, 5), None);
        let err = applier.apply(&batch(4)).await.unwrap_err();
        assert!(
            err.to_string().contains("\"m\"") && err.to_string().contains("public.t"),
            "{err}"
        );
        assert_eq!(sink.calls(), 1, "a permanent error is not retried");
        assert!(sink.inner().applied().is_empty());
    }
}
