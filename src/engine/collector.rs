//! The collecting stage: records from the consumer decoded, routed and gathered into a batch;
//! undecodable ones dead-lettered; records of partitions revoked meanwhile left out.

use super::EngineError;
use crate::dead_letter::{DeadLetter, DeadLetterQueue};
use crate::decode::{Decoded, Record, ResolvingDecoder};
use crate::pipeline::{Batch, PipelineError};
use crate::route::Router;
use crate::source::{Applied, Consumed, Fetched, Records, SourceError};
use crate::telemetry::{Event, Telemetry};
use rdkafka::error::RDKafkaErrorCode;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Consumes, decodes and routes records into batches.
pub(crate) struct Collector<M> {
    /// Where the rebalance callbacks say which partitions were taken away.
    applied: Arc<Applied>,
    /// Where undecodable records go; without it, the first one stops the run.
    dead_letters: Option<Arc<dyn DeadLetterQueue>>,
    decoder: ResolvingDecoder,
    telemetry: Telemetry,
    /// Partitions revoked, each with the first generation whose records of it are current.
    revoked: Vec<((String, i32), u64)>,
    topics: HashSet<Arc<str>>,
    batch_size: usize,
    linger: Duration,
    _records: std::marker::PhantomData<fn(M)>,
}

impl<M: Consumed> Collector<M> {
    pub(crate) fn new(
        applied: Arc<Applied>,
        dead_letters: Option<Arc<dyn DeadLetterQueue>>,
        decoder: ResolvingDecoder,
        telemetry: Telemetry,
        batch_size: usize,
        linger: Duration,
    ) -> Self {
        Self {
            applied,
            dead_letters,
            decoder,
            telemetry,
            revoked: Vec::new(),
            topics: HashSet::new(),
            batch_size,
            linger,
            _records: std::marker::PhantomData,
        }
    }

    pub(crate) fn full(&self, batch: &Batch) -> bool {
        batch.events + batch.skipped >= self.batch_size
    }

    /// Fills a batch starting with `first`, until it is full or `linger` has passed. A record that
    /// cannot be decoded (and cannot be dead-lettered) ends the batch before it and comes back as
    /// the failure.
    pub(crate) async fn collect(
        &mut self,
        records: &mut Records<M>,
        router: &mut Router,
        first: Fetched<M>,
    ) -> Result<(Batch, Option<PipelineError>), EngineError> {
        let mut batch = Batch::default();
        let deadline = tokio::time::Instant::now() + self.linger;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            if let Some(failure) = self.take(&mut batch, router, message).await? {
                return Ok((batch, Some(failure)));
            }
            if self.full(&batch) {
                break;
            }
            next = tokio::time::timeout_at(deadline, records.recv())
                .await
                .ok()
                .flatten();
        }
        Ok((batch, None))
    }

    /// Adds one consumed message to `batch`: decoded and routed, or dead-lettered when it cannot
    /// be decoded. Returns the decode failure when there is no dead-letter topic to take it.
    pub(crate) async fn take(
        &mut self,
        batch: &mut Batch,
        router: &mut Router,
        fetched: Fetched<M>,
    ) -> Result<Option<PipelineError>, EngineError> {
        self.note_revoked(batch);
        let m = match fetched.message {
            Ok(m) => m,
            // librdkafka reconnects and retries by itself; what it reports here (a topic not
            // created yet, a broker going away) passes unless it says it is fatal.
            Err(e) if e.rdkafka_error_code() != Some(RDKafkaErrorCode::Fatal) => {
                tracing::warn!(error = %e, "Kafka consumer reported a problem; carrying on");
                return Ok(None);
            }
            Err(e) => return Err(SourceError::from(e).into()),
        };
        if self.stale(&m, fetched.generation) {
            return Ok(None);
        }
        let Err(e) = self.add(batch, router, &m).await else {
            return Ok(None);
        };
        let (Some(dl), PipelineError::Decode { reason, .. }) = (&self.dead_letters, &e) else {
            return Ok(Some(e));
        };
        dl.send_record(DeadLetter {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            value: m.payload(),
            stage: "decode",
            sink: None,
            reason,
        })
        .await
        .map_err(PipelineError::from)?;
        let topic = self.topic(m.topic());
        batch.mark(&topic, m.partition(), m.offset());
        batch.dead_lettered += 1;
        self.telemetry.emit(Event::DeadLettered {
            topic: &topic,
            stage: "decode",
            count: 1,
        });
        Ok(None)
    }

    /// Takes in the revocations since the last look: what the batch holds of those partitions
    /// goes (the next owner reads it from the last commit), and so do records of them polled
    /// before the revocation that are still on their way.
    pub(crate) fn note_revoked(&mut self, batch: &mut Batch) {
        let revoked = self.applied.take_revoked();
        if revoked.is_empty() {
            return;
        }
        let partitions: Vec<(String, i32)> = revoked.iter().map(|(p, _)| p.clone()).collect();
        batch.forget(&partitions);
        for (p, generation) in revoked {
            match self.revoked.iter_mut().find(|(q, _)| *q == p) {
                Some((_, g)) => *g = (*g).max(generation),
                None => self.revoked.push((p, generation)),
            }
        }
    }

    /// Whether `m` was polled before its partition was last revoked. Records arrive in the order
    /// polled, so their generations never go down: once one is as new as every revocation
    /// noted, no stale record can follow, and the notes go (the check is free again).
    fn stale(&mut self, m: &M, generation: u64) -> bool {
        if self.revoked.is_empty() {
            return false;
        }
        if self.revoked.iter().all(|(_, g)| generation >= *g) {
            self.revoked.clear();
            return false;
        }
        self.revoked
            .iter()
            .any(|((t, p), g)| generation < *g && *p == m.partition() && t == m.topic())
    }

    /// The one shared name of a topic, so batches compare topics by pointer.
    fn topic(&mut self, name: &str) -> Arc<str> {
        match self.topics.get(name) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<str> = Arc::from(name);
                self.topics.insert(t.clone());
                t
            }
        }
    }

    async fn add(
        &mut self,
        batch: &mut Batch,
        router: &mut Router,
        message: &M,
    ) -> Result<(), PipelineError> {
        let topic = self.topic(message.topic());
        let record = Record {
            topic: &topic,
            partition: message.partition(),
            offset: message.offset(),
            key: message.key(),
            value: message.payload(),
        };
        match self.decoder.decode(&record).await {
            Ok(Decoded::Change(event)) => {
                let sinks = router.sinks_for(&topic);
                if sinks.is_empty() {
                    batch.skipped += 1;
                } else {
                    batch.push(sinks, event);
                }
            }
            Ok(Decoded::Skip(_)) => batch.skipped += 1,
            Err(e) => {
                return Err(PipelineError::Decode {
                    topic: topic.to_string(),
                    partition: record.partition,
                    offset: record.offset,
                    reason: e.reason,
                });
            }
        }
        batch.mark(&topic, record.partition, record.offset);
        Ok(())
    }
}
