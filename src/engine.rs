//! The engine: builds sinks from the config through the registered factories, then runs the loop
//! consume -> decode -> route -> batch -> apply -> commit until shut down.

use crate::config::Config;
use crate::decode::{Decoded, Decoder, Record};
use crate::pipeline::{Applier, Batch, PipelineError};
use crate::route::Router;
use crate::source::{KafkaSource, Partition, SourceError};
use rdkafka::Message;
use rdkafka::consumer::CommitMode;
use rdkafka::error::RDKafkaErrorCode;
use ripple_sink::{ConfigError, Sink, SinkError, SinkFactory};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        sinks.extend(self.extra_sinks);
        for sink in &sinks {
            sink.ready()
                .await
                .map_err(|error| EngineError::SinkNotReady {
                    name: sink.name().to_string(),
                    error,
                })?;
        }
        let names: Vec<String> = sinks.iter().map(|s| s.name().to_string()).collect();
        let router = Router::new(&self.config, &names)?;
        let source = KafkaSource::connect(&self.config.kafka).await?;
        let applier = Applier::new(sinks, &self.config.pipeline);
        Ok(Engine {
            config: self.config,
            source,
            router,
            applier,
            exit_when_idle: self.exit_when_idle,
        })
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
            "applied {} events ({} records skipped) in {} batches; {:.1} s from first record to last apply, {:.0} events/s",
            self.events,
            self.skipped,
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

    /// Runs until `shutdown` resolves (finishing the batch in hand first), an unrecoverable error,
    /// or, with `exit_when_idle`, until caught up.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<RunSummary, EngineError> {
        let started = Instant::now();
        let mut first_record: Option<Instant> = None;
        let mut last_apply = started;
        let mut summary = RunSummary::default();
        let mut decoder = Decoder::new();
        let mut topics: HashSet<Arc<str>> = HashSet::new();
        let mut applied: BTreeMap<Partition, i64> = BTreeMap::new();
        let batch_size = self.config.pipeline.batch_size;
        let linger = Duration::from_millis(self.config.pipeline.batch_linger_ms);
        let idle = self.exit_when_idle.unwrap_or(Duration::from_secs(3600));
        tokio::pin!(shutdown);

        loop {
            let mut batch = Batch::default();
            let mut failure: Option<PipelineError> = None;
            let consumer = self.source.consumer();
            let first = tokio::select! {
                _ = &mut shutdown => break,
                m = consumer.recv() => m,
                _ = tokio::time::sleep(idle) => {
                    if self.exit_when_idle.is_some() && self.source.caught_up().await? {
                        break;
                    }
                    continue;
                }
            };
            let deadline = tokio::time::Instant::now() + linger;
            let mut next = Some(first);
            while let Some(message) = next.take() {
                let message = match message {
                    Ok(m) => m,
                    // librdkafka reconnects and retries by itself; what it reports here (a topic
                    // not created yet, a broker going away) passes unless it says it is fatal.
                    Err(e) if e.rdkafka_error_code() != Some(RDKafkaErrorCode::Fatal) => {
                        tracing::warn!(error = %e, "Kafka consumer reported a problem; carrying on");
                        next = tokio::time::timeout_at(deadline, consumer.recv())
                            .await
                            .ok();
                        continue;
                    }
                    Err(e) => return Err(SourceError::from(e).into()),
                };
                first_record.get_or_insert_with(Instant::now);
                let topic = match topics.get(message.topic()) {
                    Some(t) => t.clone(),
                    None => {
                        let t: Arc<str> = Arc::from(message.topic());
                        topics.insert(t.clone());
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
                match decoder.decode(&record) {
                    Ok(Decoded::Change(event)) => {
                        let sinks = self.router.sinks_for(&topic);
                        if sinks.is_empty() {
                            batch.skipped += 1;
                        } else {
                            batch.push(sinks, event);
                        }
                    }
                    Ok(Decoded::Skip(_)) => batch.skipped += 1,
                    Err(e) => {
                        // Stop before this record: apply and commit what precedes it, then report.
                        failure = Some(PipelineError::Decode {
                            topic: topic.to_string(),
                            partition: record.partition,
                            offset: record.offset,
                            reason: e.reason,
                        });
                        break;
                    }
                }
                batch.mark(&topic, record.partition, record.offset);
                if batch.events + batch.skipped >= batch_size {
                    break;
                }
                next = tokio::time::timeout_at(deadline, consumer.recv())
                    .await
                    .ok();
            }
            if !batch.is_empty() {
                let collected = Instant::now();
                self.applier.apply(&batch).await?;
                tracing::debug!(
                    events = batch.events,
                    apply_ms = collected.elapsed().as_millis() as u64,
                    "applied"
                );
                self.source.commit(&batch.offsets, CommitMode::Async)?;
                applied.extend(batch.offsets.iter().map(|(p, o)| (p.clone(), *o)));
                summary.events += batch.events as u64;
                summary.skipped += batch.skipped as u64;
                summary.batches += 1;
                last_apply = Instant::now();
                tracing::debug!(
                    events = batch.events,
                    skipped = batch.skipped,
                    "batch applied"
                );
            }
            if let Some(e) = failure {
                return Err(e.into());
            }
        }
        // Asynchronous commits may still be in flight: repeat the newest offsets synchronously.
        self.source.commit(&applied, CommitMode::Sync)?;
        summary.elapsed = started.elapsed();
        summary.busy = first_record
            .map(|f| last_apply.saturating_duration_since(f))
            .unwrap_or_default();
        Ok(summary)
    }
}
