//! The engine: builds sinks from the config through the registered factories, then runs the loop
//! consume -> decode -> route -> batch -> apply -> commit until shut down (`run_loop.rs`, with
//! the collecting stage in `collector.rs`).
// Errors end a run and travel once; boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use crate::config::{Config, Tolerance};
use crate::dashboard::Live;
mod collector;
mod run_loop;
#[cfg(test)]
mod tests;

use crate::dead_letter::{DeadLetterQueue, DeadLetters};
use crate::decode::schemaless::{Catalog, ColumnTypes};
use crate::decode::{Decoder, Resolver, ResolvingDecoder};
use crate::exactly_once::StoredStart;
use crate::metrics::Metrics;
use crate::pipeline::{Applier, PipelineError};
use crate::route::Router;
use crate::server::Readiness;
use crate::source::{KafkaSource, SourceError, StartPositions};
use crate::telemetry::{Event, Subscriber, Telemetry};
use collector::Collector;
use ripple_sink::{ColumnCatalog, ConfigError, Sink, SinkError, SinkFactory};
use run_loop::RunLoop;
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
                sinks[id].check_target(template).map_err(|e| {
                    ConfigError::new(format!("routes[{route}].target"), e.to_string())
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
            )
                as Arc<dyn DeadLetterQueue>),
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
        let applier = Applier::new(sinks, &self.config.pipeline, dead_letters.clone())
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
    /// Also the applier's; the collector writes undecodable records here.
    dead_letters: Option<Arc<dyn DeadLetterQueue>>,
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
    /// or, with `exit_when_idle`, until caught up. The loop itself is `run_loop.rs`.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<RunSummary, EngineError> {
        let Engine {
            config,
            decoder,
            source,
            router,
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
        if let Some(settings) = config.verify.clone() {
            background.push(tokio::spawn(crate::verify::background::run(
                config.clone(),
                settings,
                telemetry.clone(),
                verify_report.clone(),
            )));
        }
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
        let started = Instant::now();
        let collector = Collector::new(
            source.applied().clone(),
            dead_letters,
            decoder,
            telemetry.clone(),
            config.pipeline.batch_size,
            Duration::from_millis(config.pipeline.batch_linger_ms),
        );
        let records = source
            .take_records()
            .expect("an engine runs its source once");
        let mut run = RunLoop::new(
            &source,
            records,
            collector,
            router,
            Arc::new(applier),
            telemetry,
            exit_when_idle,
            shutdown,
        );
        let result = run.run().await;
        for task in background {
            task.abort();
        }
        result.map(|()| run.summary(started))
    }
}
