//! The engine: builds sinks from the config through the registered factories, then runs the loop
//! consume -> decode -> route -> batch -> apply -> commit until shut down.

use crate::config::{Config, Tolerance};
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::decode::{Decoded, Decoder, Record};
use crate::pipeline::{Applier, Batch, PipelineError};
use crate::route::Router;
use crate::source::{KafkaSource, Partition, SourceError};
use rdkafka::Message;
use rdkafka::consumer::CommitMode;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaResult;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::BorrowedMessage;
use ripple_sink::{ConfigError, Sink, SinkError, SinkFactory};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("sink {name:?} (sinks.{name}) is not reachable: {error}")]
    SinkNotReady { name: String, error: SinkError },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

pub struct EngineBuilder {
    config: Config,
    factories: Vec<Arc<dyn SinkFactory>>,
    extra_sinks: Vec<Arc<dyn Sink>>,
    exit_when_idle: Option<Duration>,
}

impl EngineBuilder {
    /// Adds a sink kind, selectable with `type = "<kind>"` in `[sinks.<name>]`.
    pub fn register(mut self, factory: Arc<dyn SinkFactory>) -> Self {
        self.factories.push(factory);
        self
    }

    /// Adds an already-built sink, addressable from routes by its `name()`.
    pub fn sink(mut self, sink: Arc<dyn Sink>) -> Self {
        self.extra_sinks.push(sink);
        self
    }

    /// Stops `run` once all assigned partitions are consumed and nothing arrived for `idle`.
    pub fn exit_when_idle(mut self, idle: Option<Duration>) -> Self {
        self.exit_when_idle = idle;
        self
    }

    /// Builds every configured sink, checks each is reachable, connects to Kafka.
    pub async fn build(self) -> Result<Engine, EngineError> {
        let sinks = self.build_sinks().await?;
        let names: Vec<String> = sinks.iter().map(|s| s.name().to_string()).collect();
        let router = Router::new(&self.config, &names)?;
        for (route, template, ids) in router.targets() {
            for &id in ids {
                sinks[id].check_target(template).map_err(|message| {
                    ConfigError::new(format!("routes[{route}].target"), message)
                })?;
            }
        }
        let source = KafkaSource::connect(&self.config.kafka).await?;
        let dead_letters = match &self.config.dead_letter {
            Some(dl) if dl.tolerance == Tolerance::All => Some(Arc::new(
                DeadLetters::new(&self.config.kafka, dl).map_err(PipelineError::from)?,
            )),
            _ => None,
        };
        let applier = Applier::new(sinks, &self.config.pipeline, dead_letters);
        Ok(Engine {
            config: self.config,
            source,
            router,
            applier,
            exit_when_idle: self.exit_when_idle,
        })
    }

    /// Builds every configured sink (and the embedded ones) and checks each is reachable. The
    /// position of a sink in the list is its id for routing.
    pub async fn build_sinks(&self) -> Result<Vec<Arc<dyn Sink>>, EngineError> {
        let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
        for (name, section) in &self.config.sinks {
            let key = format!("sinks.{name}");
            let kind = section
                .get("type")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let factory = self
                .factories
                .iter()
                .find(|f| f.kind() == kind)
                .ok_or_else(|| {
                    let known: Vec<&str> = self.factories.iter().map(|f| f.kind()).collect();
                    ConfigError::new(
                        format!("{key}.type"),
                        format!("unknown sink type {kind:?} (known: {})", known.join(", ")),
                    )
                })?;
            sinks.push(factory.build(name, &key, section.clone()).await?);
        }
        sinks.extend(self.extra_sinks.iter().cloned());
        for sink in &sinks {
            sink.ready()
                .await
                .map_err(|error| EngineError::SinkNotReady {
                    name: sink.name().to_string(),
                    error,
                })?;
        }
        Ok(sinks)
    }
}

pub struct Engine {
    config: Config,
    source: KafkaSource,
    router: Router,
    applier: Applier,
    exit_when_idle: Option<Duration>,
}

/// What a run did, printed by `ripple run` when it exits.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub events: u64,
    pub skipped: u64,
    /// Records written to the dead-letter topic: undecodable ones, and events a sink rejected.
    pub dead_lettered: u64,
    pub batches: u64,
    pub elapsed: Duration,
    /// Time from the first record to the last applied batch: the figure benchmarks want.
    pub busy: Duration,
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.busy.as_secs_f64().max(1e-9);
        write!(
            f,
            "applied {} events ({} records skipped, {} dead-lettered) in {} batches; {:.1} s from first record to last apply, {:.0} events/s",
            self.events,
            self.skipped,
            self.dead_lettered,
            self.batches,
            secs,
            self.events as f64 / secs
        )
    }
}

impl Engine {
    pub fn builder(config: Config) -> EngineBuilder {
        let factories = crate::registry::builtin();
        EngineBuilder {
            config,
            factories,
            extra_sinks: Vec::new(),
            exit_when_idle: None,
        }
    }

    pub fn sinks(&self) -> &[Arc<dyn Sink>] {
        self.applier.sinks()
    }

    /// Runs until `shutdown` resolves (finishing the batches in hand first), an unrecoverable error,
    /// or, with `exit_when_idle`, until caught up.
    ///
    /// One batch is applied while the next is being consumed and decoded; batches still reach the
    /// sinks one at a time and in order, and each batch's offsets are committed after it applied.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<RunSummary, EngineError> {
        let Engine {
            config,
            source,
            mut router,
            applier,
            exit_when_idle,
        } = self;
        let applier = Arc::new(applier);
        let started = Instant::now();
        let mut progress = Progress::default();
        let mut collector = Collector {
            dead_letters: applier.dead_letters(),
            decoder: Decoder::new(),
            topics: HashSet::new(),
            batch_size: config.pipeline.batch_size,
            linger: Duration::from_millis(config.pipeline.batch_linger_ms),
        };
        let idle = exit_when_idle.unwrap_or(Duration::from_secs(3600));
        let mut in_flight: Option<JoinHandle<Result<Batch, PipelineError>>> = None;
        tokio::pin!(shutdown);

        loop {
            let first = tokio::select! {
                _ = &mut shutdown => break,
                m = source.consumer().recv() => m,
                _ = tokio::time::sleep(idle) => {
                    progress.settle(&source, in_flight.take()).await?;
                    if exit_when_idle.is_some() && source.caught_up().await? {
                        break;
                    }
                    continue;
                }
            };
            progress.first_record.get_or_insert_with(Instant::now);
            let (batch, failure) = collector
                .collect(source.consumer(), &mut router, first)
                .await?;
            // The previous batch must be durable before this one starts: per-key order.
            progress.settle(&source, in_flight.take()).await?;
            if !batch.is_empty() {
                let applier = applier.clone();
                in_flight = Some(tokio::spawn(async move {
                    applier.apply(&batch).await.map(|()| batch)
                }));
            }
            if let Some(e) = failure {
                // Apply and commit what preceded the bad record, then report it.
                progress.settle(&source, in_flight.take()).await?;
                return Err(e.into());
            }
        }
        progress.settle(&source, in_flight.take()).await?;
        // Asynchronous commits may still be under way: repeat the newest offsets synchronously.
        source.commit(&progress.committed, CommitMode::Sync)?;
        let mut summary = progress.summary;
        summary.dead_lettered += applier.rejected();
        summary.elapsed = started.elapsed();
        summary.busy = progress
            .first_record
            .zip(progress.last_apply)
            .map(|(first, last)| last.saturating_duration_since(first))
            .unwrap_or_default();
        Ok(summary)
    }
}

/// What the run loop has applied and committed so far.
#[derive(Default)]
struct Progress {
    summary: RunSummary,
    committed: BTreeMap<Partition, i64>,
    first_record: Option<Instant>,
    last_apply: Option<Instant>,
}

impl Progress {
    /// Waits for the batch being applied, if any, and commits its offsets.
    async fn settle(
        &mut self,
        source: &KafkaSource,
        in_flight: Option<JoinHandle<Result<Batch, PipelineError>>>,
    ) -> Result<(), EngineError> {
        let Some(handle) = in_flight else {
            return Ok(());
        };
        let batch = handle.await.expect("apply task panicked")?;
        source.commit(&batch.offsets, CommitMode::Async)?;
        self.committed
            .extend(batch.offsets.iter().map(|(p, o)| (p.clone(), *o)));
        self.summary.events += batch.events as u64;
        self.summary.skipped += batch.skipped as u64;
        self.summary.dead_lettered += batch.dead_lettered as u64;
        self.summary.batches += 1;
        self.last_apply = Some(Instant::now());
        tracing::debug!(
            events = batch.events,
            skipped = batch.skipped,
            "batch applied and committed"
        );
        Ok(())
    }
}

/// Consumes, decodes and routes records into batches.
struct Collector {
    /// Where undecodable records go; without it, the first one stops the run.
    dead_letters: Option<Arc<DeadLetters>>,
    decoder: Decoder,
    topics: HashSet<Arc<str>>,
    batch_size: usize,
    linger: Duration,
}

impl Collector {
    /// Fills a batch starting with `first`, until it is full or `linger` has passed. A record that
    /// cannot be decoded ends the batch before it and comes back as the failure.
    async fn collect(
        &mut self,
        consumer: &StreamConsumer,
        router: &mut Router,
        first: KafkaResult<BorrowedMessage<'_>>,
    ) -> Result<(Batch, Option<PipelineError>), EngineError> {
        let mut batch = Batch::default();
        let deadline = tokio::time::Instant::now() + self.linger;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Ok(m) => {
                    if let Err(e) = self.add(&mut batch, router, &m) {
                        let (Some(dl), PipelineError::Decode { reason, .. }) =
                            (&self.dead_letters, &e)
                        else {
                            return Ok((batch, Some(e)));
                        };
                        dl.send(DeadLetter {
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
                        let topic = Arc::from(m.topic());
                        batch.mark(&topic, m.partition(), m.offset());
                        batch.dead_lettered += 1;
                    }
                    if batch.events + batch.skipped >= self.batch_size {
                        break;
                    }
                }
                // librdkafka reconnects and retries by itself; what it reports here (a topic not
                // created yet, a broker going away) passes unless it says it is fatal.
                Err(e) if e.rdkafka_error_code() != Some(RDKafkaErrorCode::Fatal) => {
                    tracing::warn!(error = %e, "Kafka consumer reported a problem; carrying on");
                }
                Err(e) => return Err(SourceError::from(e).into()),
            }
            next = tokio::time::timeout_at(deadline, consumer.recv())
                .await
                .ok();
        }
        Ok((batch, None))
    }

    fn add(
        &mut self,
        batch: &mut Batch,
        router: &mut Router,
        message: &BorrowedMessage<'_>,
    ) -> Result<(), PipelineError> {
        let topic = match self.topics.get(message.topic()) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<str> = Arc::from(message.topic());
                self.topics.insert(t.clone());
                t
            }
        };
        let record = Record {
            topic: &topic,
            partition: message.partition(),
            offset: message.offset(),
            key: message.key(),
            value: message.payload(),
        };
        match self.decoder.decode(&record) {
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
