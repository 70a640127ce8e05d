//! The middle of the pipeline: a batch of decoded, routed events grouped per (topic, table), applied
//! to every owning sink (sinks concurrently, each table in order) with retries, and the offsets that
//! may be committed once every owner has applied them.

use crate::config::PipelineConfig;
use crate::route::Assignment;
use crate::source::Partition;
use backon::{ExponentialBuilder, Retryable};
use ripple_sink::{ChangeEvent, Sink, SinkError, TableRef, Target};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("sink {sink:?} failed to apply changes to {table}: {error}")]
    Sink {
        sink: String,
        table: TableRef,
        error: SinkError,
    },
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
}

impl Batch {
    /// Records that the record at `offset` is part of this batch, whatever became of it.
    pub fn mark(&mut self, topic: &Arc<str>, partition: i32, offset: i64) {
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
}

/// Applies batches to the sinks with the configured retry policy.
pub struct Applier {
    sinks: Vec<Arc<dyn Sink>>,
    backoff: ExponentialBuilder,
}

impl Applier {
    pub fn new(sinks: Vec<Arc<dyn Sink>>, config: &PipelineConfig) -> Self {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(config.retry_initial_delay_ms))
            .with_max_delay(Duration::from_millis(config.retry_max_delay_ms))
            .with_max_times(config.max_retries)
            .with_jitter();
        Self { sinks, backoff }
    }

    pub fn sinks(&self) -> &[Arc<dyn Sink>] {
        &self.sinks
    }

    /// Applies every table batch to each of its sinks. Sinks run concurrently; within a sink the
    /// tables go one after another, each in offset order. Returns once everything is durable.
    pub async fn apply(&self, batch: &Batch) -> Result<(), PipelineError> {
        let per_sink = self.sinks.iter().enumerate().map(|(id, sink)| async move {
            for t in &batch.tables {
                if let Some(a) = t.sinks.iter().find(|a| a.sink == id) {
                    self.apply_with_retry(sink.as_ref(), t, a).await?;
                }
            }
            Ok::<(), PipelineError>(())
        });
        for result in futures::future::join_all(per_sink).await {
            result?;
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
        let events = route.options.shape_events(&t.events).map_err(failed)?;
        let target = Target::of(&t.table).with_template(route.options.target.as_deref());
        let attempt = || async { sink.apply(target, &events).await };
        attempt
            .retry(self.backoff)
            .when(SinkError::is_retriable)
            .notify(|e, delay| {
                tracing::warn!(sink = sink.name(), table = %t.table, error = %e, ?delay, "retrying after a retriable failure");
            })
            .await
            .map_err(failed)
    }
}
