//! The engine: builds sinks from the config through the registered factories, then runs the loop
//! consume -> decode -> route -> batch -> apply -> commit until shut down.
// Errors end a run and travel once; boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use crate::config::{Config, Tolerance};
use crate::dashboard::Live;
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::decode::schemaless::{Catalog, ColumnTypes};
use crate::decode::{Decoded, Decoder, Record, Resolver, ResolvingDecoder};
use crate::exactly_once::StoredStart;
use crate::metrics::Metrics;
use crate::pipeline::{Applier, Batch, PipelineError};
use crate::route::Router;
use crate::server::Readiness;
use crate::source::{
    Applied, Fetched, KafkaSource, Partition, Records, SourceError, StartPositions,
};
use crate::telemetry::{Event, Subscriber, Telemetry};
use rdkafka::Message;
use rdkafka::consumer::CommitMode;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::BorrowedMessage;
use ripple_sink::{ColumnCatalog, ConfigError, Sink, SinkError, SinkFactory};
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
    verify_report: Option<std::path::PathBuf>,
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

    /// Where `ripple verify` leaves its last report, for the dashboard's sync panel.
    pub fn verify_report(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.verify_report = path;
        self
    }

    /// Stops `run` once all assigned partitions are consumed and nothing arrived for `idle`.
    pub fn exit_when_idle(mut self, idle: Option<Duration>) -> Self {
        self.exit_when_idle = idle;
        self
    }

    /// The decoder for this config, with what fetches its schemas (`[decode.avro]`) and reads its
    /// column catalog (`[decode.schemaless] types_from`); the catalog is read once here.
    pub async fn decoder(&self) -> Result<ResolvingDecoder, EngineError> {
        let decode = &self.config.decode;
        let mut decoder = Decoder::new()
            .binary_mode(decode.binary_handling_mode)
            .limits(crate::decode::Limits {
                max_record_bytes: decode.max_record_bytes,
                max_value_bytes: decode.max_value_bytes,
            });
        let mut resolver = Resolver::default();
        if let Some(avro) = &decode.avro {
            decoder = decoder.avro(crate::decode::avro::Registry::new());
            resolver.schemas = Some(avro.schema_fetcher()?);
        }
        if let Some(schemaless) = &decode.schemaless {
            resolver.catalog = match schemaless.types_from.as_deref() {
                Some(from) => Some(self.column_catalog(from).await?),
                None => None,
            };
            let mut types = ColumnTypes::new(
                schemaless.modes(),
                resolver.catalog.as_deref().map(Catalog::new),
            );
            for (table, column, ty) in schemaless.declared()? {
                types.declare(table, &column, ty);
            }
            decoder = decoder.schemaless(types);
        }
        let mut decoder = ResolvingDecoder::new(decoder, resolver);
        decoder
            .prime()
            .await
            .map_err(|e| ConfigError::new("decode.schemaless.types_from", e.to_string()))?;
        Ok(decoder)
    }

    /// The catalog `types_from` names: `"source"`, or a sink whose store keeps one.
    async fn column_catalog(&self, from: &str) -> Result<Box<dyn ColumnCatalog>, EngineError> {
        let key = "decode.schemaless.types_from";
        if from == "source" {
            let source =
                self.config.source.as_ref().ok_or_else(|| {
                    ConfigError::new(key, "is \"source\", but there is no [source]")
                })?;
            return Ok(crate::registry::source_catalog(source.connect_options()?));
        }
        let section = self.config.sinks.get(from).ok_or_else(|| {
            ConfigError::new(
                key,
                format!("names {from:?}, which is not a configured sink"),
            )
        })?;
        let kind = section
            .get("type")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let factory = self.factory(&format!("sinks.{from}"), kind)?;
        factory
            .column_catalog(from, &format!("sinks.{from}"), section.clone())
            .await?
            .ok_or_else(|| {
                ConfigError::new(
                    key,
                    format!(
                        "names sink {from:?}, whose store (type = {kind:?}) keeps no column types: name the source or a database sink"
                    ),
                )
                .into()
            })
    }

    fn factory(&self, key: &str, kind: &str) -> Result<&Arc<dyn SinkFactory>, ConfigError> {
        self.factories
            .iter()
            .find(|f| f.kind() == kind)
            .ok_or_else(|| {
                let known: Vec<&str> = self.factories.iter().map(|f| f.kind()).collect();
                ConfigError::new(
                    format!("{key}.type"),
                    format!("unknown sink type {kind:?} (known: {})", known.join(", ")),
                )
            })
    }

    /// Builds every configured sink, checks each is reachable, connects to Kafka.
    pub async fn build(self) -> Result<Engine, EngineError> {
        let decoder = self.decoder().await?;
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
        let start = StoredStart::new(&self.config, &sinks)
            .await
            .map_err(|(name, error)| EngineError::SinkNotReady { name, error })?
            .map(|s| Arc::new(s) as Arc<dyn StartPositions>);
        // Each engine its own figures: two in one process do not mix them.
        let metrics = Arc::new(Metrics::new());
        let live = Arc::new(Live::default());
        let telemetry = Telemetry::new(vec![
            metrics.clone() as Arc<dyn Subscriber>,
            live.clone() as Arc<dyn Subscriber>,
        ]);
        let source = KafkaSource::connect(&self.config.kafka, start, telemetry.clone()).await?;
        let dead_letters = match &self.config.dead_letter {
            Some(dl) if dl.tolerance == Tolerance::All => Some(Arc::new(
                DeadLetters::new(&self.config.kafka, dl).map_err(PipelineError::from)?,
            )),
            _ => None,
        };
        // Bound now, so a port in use or a bad certificate stops start-up with the key named.
        let metrics_endpoint = match &self.config.metrics {
            Some(m) => Some(crate::server::Endpoint::bind(m).await?),
            None => None,
        };
        let breaker = self
            .config
            .dead_letter
            .as_ref()
            .map(crate::pipeline::Breaker::from_config);
        let applier = Applier::new(
            sinks,
            &self.config.pipeline,
            dead_letters
                .clone()
                .map(|d| d as Arc<dyn crate::dead_letter::RejectedEvents>),
        )
        .with_breaker(breaker)
        .with_telemetry(telemetry.clone());
        Ok(Engine {
            telemetry,
            metrics,
            live,
            dead_letters,
            config: self.config,
            decoder,
            source,
            router,
            applier,
            exit_when_idle: self.exit_when_idle,
            metrics_endpoint,
            verify_report: self.verify_report,
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
            let factory = self.factory(&key, kind)?;
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
    decoder: ResolvingDecoder,
    source: KafkaSource,
    router: Router,
    applier: Applier,
    exit_when_idle: Option<Duration>,
    metrics_endpoint: Option<crate::server::Endpoint>,
    telemetry: Telemetry,
    metrics: Arc<Metrics>,
    live: Arc<Live>,
    /// Also the applier's, as `RejectedEvents`; the collector writes undecodable records here.
    dead_letters: Option<Arc<DeadLetters>>,
    verify_report: Option<std::path::PathBuf>,
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
            verify_report: None,
        }
    }

    pub fn sinks(&self) -> &[Arc<dyn Sink>] {
        self.applier.sinks()
    }

    /// This engine's Prometheus metrics (what `/metrics` serves).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Runs until `shutdown` resolves (finishing the batches in hand first), an unrecoverable error,
    /// or, with `exit_when_idle`, until caught up.
    ///
    /// One batch is applied while the next is being consumed and decoded; batches still reach the
    /// sinks one at a time and in order, and each batch's offsets are committed after it applied.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<RunSummary, EngineError> {
        let Engine {
            config,
            decoder,
            source,
            mut router,
            applier,
            exit_when_idle,
            metrics_endpoint,
            verify_report,
            dead_letters,
            telemetry,
            metrics,
            live,
        } = self;
        let mut background = Vec::new();
        if let Some(endpoint) = metrics_endpoint {
            let readiness = Readiness {
                sinks: applier.sinks().to_vec(),
                broker: source.reachability(),
            };
            background.push(tokio::spawn(crate::server::serve(
                endpoint,
                readiness,
                metrics,
                live.clone(),
            )));
            background.push(tokio::spawn(live.run(verify_report)));
        }
        for sink in applier.sinks() {
            telemetry.emit(Event::SinkKnown { sink: sink.name() });
        }
        background.push(tokio::spawn(source.report_lag(telemetry.clone())));
        let applier = Arc::new(applier);
        let started = Instant::now();
        let mut progress = Progress {
            telemetry: telemetry.clone(),
            ..Progress::default()
        };
        let mut collector = Collector {
            applied: source.applied().clone(),
            dead_letters,
            decoder,
            telemetry: telemetry.clone(),
            revoked: Vec::new(),
            topics: HashSet::new(),
            batch_size: config.pipeline.batch_size,
            linger: Duration::from_millis(config.pipeline.batch_linger_ms),
        };
        let idle = exit_when_idle.unwrap_or(Duration::from_secs(3600));
        let mut in_flight: Option<JoinHandle<Result<Batch, PipelineError>>> = None;
        let mut stop = Stop {
            signal: Box::pin(futures::FutureExt::fuse(shutdown)),
            requested: false,
        };

        let mut records = source
            .take_records()
            .expect("an engine runs its source once");
        loop {
            if stop.requested {
                break;
            }
            let first = tokio::select! {
                _ = &mut stop.signal => break,
                m = records.recv() => m.ok_or(EngineError::Source(SourceError::Stopped))?,
                _ = tokio::time::sleep(idle) => {
                    // Only a finished batch is settled here: one still waiting for a sink is waited
                    // for below, with consumption paused.
                    if in_flight.as_ref().is_some_and(JoinHandle::is_finished) {
                        progress.settle(&source, in_flight.take(), &mut stop, None).await?;
                    }
                    if exit_when_idle.is_some() && in_flight.is_none() && source.caught_up().await? {
                        break;
                    }
                    continue;
                }
            };
            progress.first_record.get_or_insert_with(Instant::now);
            let (mut batch, mut failure) =
                collector.collect(&mut records, &mut router, first).await?;
            // The previous batch must be durable before this one starts: per-key order.
            let waiting = Waiting {
                records: &mut records,
                collector: &mut collector,
                router: &mut router,
                batch: &mut batch,
                failure: &mut failure,
            };
            progress
                .settle(&source, in_flight.take(), &mut stop, Some(waiting))
                .await?;
            if stop.requested {
                break;
            }
            // A revocation can also come in a poll that returned nothing.
            collector.note_revoked(&mut batch);
            for (topic, n) in batch.records.drain(..) {
                telemetry.emit(Event::Consumed {
                    topic: &topic,
                    records: n,
                });
            }
            if !batch.is_empty() {
                telemetry.emit(Event::BatchStarted {
                    events: batch.events,
                });
                let applier = applier.clone();
                let landing = InFlight::start(source.applied().clone());
                in_flight = Some(tokio::spawn(async move {
                    let mut batch = batch;
                    // The chaos suite times its kills by these two lines.
                    tracing::debug!(events = batch.events, "apply started");
                    let result = applier.apply(&batch).await;
                    tracing::debug!(ok = result.is_ok(), "apply finished");
                    if result.is_ok() {
                        batch.applied_at = Some(Instant::now());
                        landing.0.landed(Some(&batch.offsets));
                    }
                    result.map(|()| batch)
                }));
            }
            if let Some(e) = failure.take() {
                // Apply and commit what preceded the bad record, then report it.
                progress
                    .settle(&source, in_flight.take(), &mut stop, None)
                    .await?;
                return Err(e.into());
            }
        }
        stop.requested = true;
        progress
            .settle(&source, in_flight.take(), &mut stop, None)
            .await?;
        // Asynchronous commits may still be under way: repeat the newest offsets synchronously.
        if let Err(e) = source.commit(&progress.committed, CommitMode::Sync) {
            tracing::warn!(error = %e, "final offset commit failed; the last batches will be delivered again (and change nothing)");
        }
        for task in background {
            task.abort();
        }
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

/// Tells the rebalance callbacks that a batch is being applied, and when it ended, even by being
/// aborted.
struct InFlight(Arc<Applied>);

impl InFlight {
    fn start(applied: Arc<Applied>) -> Self {
        applied.start();
        Self(applied)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.landed(None);
    }
}

/// What the run loop has applied and committed so far.
#[derive(Default)]
struct Progress {
    telemetry: Telemetry,
    summary: RunSummary,
    committed: BTreeMap<Partition, i64>,
    first_record: Option<Instant>,
    last_apply: Option<Instant>,
}

/// How long a batch still being applied may keep a shutdown waiting before it is abandoned (its
/// offsets uncommitted, so its events are delivered again on the next start).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long a batch may take before consumption pauses: a healthy batch finishes well within
/// this, a sink that is down or slow does not.
const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// The shutdown signal, and whether it came.
struct Stop<'a> {
    signal: std::pin::Pin<Box<dyn futures::future::FusedFuture<Output = ()> + Send + 'a>>,
    requested: bool,
}

/// The next batch, ready while the previous one is still being applied.
struct Waiting<'a> {
    records: &'a mut Records,
    collector: &'a mut Collector,
    router: &'a mut Router,
    batch: &'a mut Batch,
    failure: &'a mut Option<PipelineError>,
}

impl Progress {
    /// Waits for the batch being applied, if any, and commits its offsets. Meanwhile the next
    /// batch, when there is one, goes on filling up to the batch size.
    ///
    /// Backpressure: when the batch takes longer than `PAUSE_AFTER` (a sink down or slow) and the
    /// next batch is ready, every assigned partition is paused, so nothing more is fetched and
    /// memory stays bounded; the consumer is still polled, so it keeps its group membership however
    /// long the sink takes, and records fetched before the pause join the waiting batch. When the
    /// batch lands, consumption resumes. A shutdown gives the batch `SHUTDOWN_GRACE`, then abandons
    /// it uncommitted.
    async fn settle(
        &mut self,
        source: &KafkaSource,
        in_flight: Option<JoinHandle<Result<Batch, PipelineError>>>,
        stop: &mut Stop<'_>,
        mut next: Option<Waiting<'_>>,
    ) -> Result<(), EngineError> {
        let Some(mut handle) = in_flight else {
            return Ok(());
        };
        let mut paused = false;
        let waited = Instant::now();
        let pause_at = tokio::time::sleep(PAUSE_AFTER);
        tokio::pin!(pause_at);
        let result = loop {
            if stop.requested {
                match tokio::time::timeout(SHUTDOWN_GRACE, &mut handle).await {
                    Ok(r) => break Some(r),
                    Err(_) => break None,
                }
            }
            // The waiting batch keeps filling up to its size while the sinks work, so a batch's
            // size follows the sinks' pace rather than what librdkafka had prefetched.
            let room = next
                .as_ref()
                .is_some_and(|w| w.failure.is_none() && !w.collector.full(w.batch));
            tokio::select! {
                r = &mut handle => break Some(r),
                _ = &mut stop.signal => stop.requested = true,
                _ = &mut pause_at, if !paused && next.is_some() => {
                    source.pause_all()?;
                    paused = true;
                    tracing::warn!("a sink is slow or down: consumption paused until the batch in hand is applied");
                }
                // select! builds every branch's future, enabled or not: without a waiting batch
                // this one never resolves (and is never polled).
                m = async {
                    match next.as_mut() {
                        Some(w) => w.records.recv().await,
                        None => std::future::pending().await,
                    }
                }, if paused || room => {
                    let m = m.ok_or(EngineError::Source(SourceError::Stopped))?;
                    let w = next.as_mut().expect("records are taken only into a waiting batch");
                    if w.failure.is_none() {
                        *w.failure = w.collector.take(w.batch, w.router, m).await?;
                    }
                    if paused {
                        // Partitions assigned by a rebalance meanwhile are paused too.
                        source.pause_all()?;
                    }
                }
            }
        };
        if paused {
            source.resume_all()?;
            tracing::info!(
                waited_s = waited.elapsed().as_secs(),
                "sinks caught up: consumption resumed"
            );
        }
        let Some(result) = result else {
            handle.abort();
            tracing::warn!(
                "shutting down with a batch still unapplied: its events will be delivered again"
            );
            return Ok(());
        };
        let batch = result.expect("apply task panicked")?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let tables: Vec<&[ripple_sink::ChangeEvent]> =
            batch.tables.iter().map(|t| t.events.as_slice()).collect();
        self.telemetry.emit(Event::BatchApplied {
            tables: &tables,
            dead_lettered: batch.dead_lettered,
            now_ms,
        });
        if let Err(e) = source.commit(&batch.offsets, CommitMode::Async) {
            // The next commit covers these offsets too; until then a restart re-delivers them.
            tracing::warn!(error = %e, "offset commit failed");
        }
        self.committed
            .extend(batch.offsets.iter().map(|(p, o)| (p.clone(), *o)));
        self.summary.events += batch.events as u64;
        self.summary.skipped += batch.skipped as u64;
        self.summary.dead_lettered += batch.dead_lettered as u64;
        self.summary.batches += 1;
        self.last_apply = Some(batch.applied_at.unwrap_or_else(Instant::now));
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
    /// Where the rebalance callbacks say which partitions were taken away.
    applied: Arc<Applied>,
    /// Where undecodable records go; without it, the first one stops the run.
    dead_letters: Option<Arc<DeadLetters>>,
    decoder: ResolvingDecoder,
    telemetry: Telemetry,
    /// Partitions revoked, each with the first generation whose records of it are current.
    revoked: Vec<((String, i32), u64)>,
    topics: HashSet<Arc<str>>,
    batch_size: usize,
    linger: Duration,
}

impl Collector {
    fn full(&self, batch: &Batch) -> bool {
        batch.events + batch.skipped >= self.batch_size
    }

    /// Fills a batch starting with `first`, until it is full or `linger` has passed. A record that
    /// cannot be decoded (and cannot be dead-lettered) ends the batch before it and comes back as
    /// the failure.
    async fn collect(
        &mut self,
        records: &mut Records,
        router: &mut Router,
        first: Fetched,
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
    async fn take(
        &mut self,
        batch: &mut Batch,
        router: &mut Router,
        fetched: Fetched,
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
    fn note_revoked(&mut self, batch: &mut Batch) {
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
    fn stale(&mut self, m: &BorrowedMessage<'_>, generation: u64) -> bool {
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
        message: &BorrowedMessage<'_>,
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
