//! What Ripple counts and measures, in one process-wide registry, and the HTTP endpoint that serves
//! it: `/metrics` (Prometheus text format), `/healthz` (the process answers) and `/readyz` (the
//! broker and every sink are reachable now).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use ripple_sink::{ChangeEvent, Op, Sink};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

mod access;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApplyLabels {
    pub sink: String,
    pub table: String,
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkTableLabels {
    pub sink: String,
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub topic: String,
    /// `decode`, or the sink that rejected the event.
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i32,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub consumed: Family<TopicLabels, Counter>,
    pub applied: Family<ApplyLabels, Counter>,
    pub retried: Family<SinkTableLabels, Counter>,
    pub dead_lettered: Family<DeadLetterLabels, Counter>,
    pub lag: Family<PartitionLabels, Gauge>,
    pub batch_events: Histogram,
    pub apply_seconds: Histograms<SinkLabels>,
    pub end_to_end_seconds: Histogram,
    /// 1 while the sink's last apply succeeded, 0 while it is failing.
    pub sink_up: Family<SinkLabels, Gauge>,
    /// Fetched data librdkafka could not turn into records (`kind`: `decompression`).
    pub fetch_errors: Family<KindLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

fn latency_buckets() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("ripple");
        let consumed = Family::<TopicLabels, Counter>::default();
        registry.register(
            "records_consumed",
            "Records read from Kafka",
            consumed.clone(),
        );
        let applied = Family::<ApplyLabels, Counter>::default();
        registry.register(
            "events_applied",
            "Change events a sink applied",
            applied.clone(),
        );
        let retried = Family::<SinkTableLabels, Counter>::default();
        registry.register(
            "apply_retries",
            "Retries of a failed apply",
            retried.clone(),
        );
        let dead_lettered = Family::<DeadLetterLabels, Counter>::default();
        registry.register(
            "dead_lettered",
            "Records written to the dead-letter topic",
            dead_lettered.clone(),
        );
        let lag = Family::<PartitionLabels, Gauge>::default();
        registry.register(
            "consumer_lag",
            "Records in the partition not yet applied by every sink (high watermark minus the next offset to apply)",
            lag.clone(),
        );
        let batch_events = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        registry.register(
            "batch_events",
            "Change events per batch",
            batch_events.clone(),
        );
        let apply_seconds: Histograms<SinkLabels> =
            Family::new_with_constructor(latency_buckets as fn() -> Histogram);
        registry.register(
            "apply_seconds",
            "Time one sink took to apply one table's part of a batch",
            apply_seconds.clone(),
        );
        let end_to_end_seconds = latency_buckets();
        registry.register(
            "end_to_end_seconds",
            "From the change's commit in the source to its batch being applied by every sink",
            end_to_end_seconds.clone(),
        );
        let sink_up = Family::<SinkLabels, Gauge>::default();
        registry.register(
            "sink_up",
            "1 while the sink's last apply succeeded, 0 while it fails",
            sink_up.clone(),
        );
        let fetch_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "fetch_errors",
            "Fetches librdkafka could not turn into records, such as a batch it cannot decompress",
            fetch_errors.clone(),
        );
        Self {
            registry,
            consumed,
            applied,
            retried,
            dead_lettered,
            lag,
            batch_events,
            apply_seconds,
            end_to_end_seconds,
            sink_up,
            fetch_errors,
        }
    }

    /// Everything, in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Counts what `sink` applied of `events` (one table).
    pub fn record_applied(&self, sink: &str, events: &[ChangeEvent], took: Duration) {
        self.count_applied(sink, events, &[]);
        let labels = SinkLabels {
            sink: sink.to_string(),
        };
        self.apply_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.sink_up.get_or_create(&labels).set(1);
    }

    /// Counts the events of a call as applied, but for those at `refused` (ascending indices).
    pub fn count_applied(&self, sink: &str, events: &[ChangeEvent], refused: &[usize]) {
        let Some(first) = events.first() else {
            return;
        };
        let table = first.table().to_string();
        let mut counts = [0u64; 3];
        let mut refused = refused.iter().peekable();
        for (i, e) in events.iter().enumerate() {
            if refused.next_if_eq(&&i).is_some() {
                continue;
            }
            counts[match e.op {
                Op::Upsert => 0,
                Op::Delete => 1,
                Op::Truncate => 2,
            }] += 1;
        }
        for (op, n) in ["upsert", "delete", "truncate"].into_iter().zip(counts) {
            if n > 0 {
                self.applied
                    .get_or_create(&ApplyLabels {
                        sink: sink.to_string(),
                        table: table.clone(),
                        op,
                    })
                    .inc_by(n);
            }
        }
    }

    pub fn record_retry(&self, sink: &str, table: &str) {
        self.retried
            .get_or_create(&SinkTableLabels {
                sink: sink.to_string(),
                table: table.to_string(),
            })
            .inc();
        self.sink_up
            .get_or_create(&SinkLabels {
                sink: sink.to_string(),
            })
            .set(0);
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// A blocking check that says what is wrong, if anything.
pub type Probe = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What `/readyz` checks.
pub struct Readiness {
    pub sinks: Vec<Arc<dyn Sink>>,
    /// Whether the brokers respond (a metadata request).
    pub broker: Probe,
}

/// The metrics port, bound at start-up: its listener, the bearer token it asks for, its TLS.
pub struct Endpoint {
    listener: tokio::net::TcpListener,
    token: Option<ripple_sink::Secret>,
    tls: Option<axum_server::tls_openssl::OpenSSLConfig>,
}

impl Endpoint {
    /// Binds `[metrics] listen` and reads the token and certificate; errors name the key.
    pub async fn bind(
        config: &crate::config::MetricsConfig,
    ) -> Result<Self, ripple_sink::ConfigError> {
        use ripple_sink::ConfigError;
        let token = config.token()?;
        let tls = match &config.tls {
            None => None,
            Some(files) => Some(
                axum_server::tls_openssl::OpenSSLConfig::from_pem(
                    &read_pem(&files.cert_file, "cert_file")?,
                    &read_pem(&files.key_file, "key_file")?,
                )
                .map_err(|e| {
                    ConfigError::new(
                        "metrics.tls",
                        format!("the certificate and key cannot be used: {e}"),
                    )
                })?,
            ),
        };
        if token.is_none()
            && config
                .listen
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| !a.ip().is_loopback())
        {
            tracing::warn!(
                listen = %config.listen,
                "metrics.listen is not a loopback address and no metrics.token_env or token_file is set: anyone who reaches it sees primary keys of recent changes and error texts"
            );
        }
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| {
                ConfigError::new(
                    "metrics.listen",
                    format!("cannot listen on {}: {e}", config.listen),
                )
            })?;
        Ok(Self {
            listener,
            token,
            tls,
        })
    }
}

fn read_pem(path: &std::path::Path, key: &str) -> Result<Vec<u8>, ripple_sink::ConfigError> {
    std::fs::read(path).map_err(|e| {
        ripple_sink::ConfigError::new(
            format!("metrics.tls.{key}"),
            format!("cannot read {}: {e}", path.display()),
        )
    })
}

/// Serves `/metrics`, `/healthz`, `/readyz` and the dashboard on the endpoint until the process
/// ends. With a token, `/metrics` and the dashboard need it (`/healthz` and `/readyz`, which
/// probes call, never do).
pub async fn serve(endpoint: Endpoint, readiness: Readiness) {
    use axum::routing::get;
    let Endpoint {
        listener,
        token,
        tls,
    } = endpoint;
    let readiness = Arc::new(readiness);
    let protected = axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics().render(),
                )
            }),
        )
        .merge(crate::dashboard::routes())
        .layer(axum::middleware::from_fn(move |request, next| {
            let token = token.clone();
            async move { crate::metrics::access::check(token.as_ref(), request, next).await }
        }));
    let app = axum::Router::new()
        .merge(protected)
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move { ready(&readiness).await }
            }),
        );
    let served = match tls {
        None => axum::serve(listener, app).await,
        Some(tls) => match listener.into_std() {
            Ok(std) => match axum_server::from_tcp(std) {
                Ok(server) => {
                    server
                        .acceptor(axum_server::tls_openssl::OpenSSLAcceptor::new(tls))
                        .serve(app.into_make_service())
                        .await
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "metrics endpoint stopped");
    }
}

async fn ready(readiness: &Readiness) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    let broker = readiness.broker.clone();
    let broker = tokio::task::spawn_blocking(move || broker())
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let mut all_ok = broker.is_ok();
    let mut sinks = serde_json::Map::new();
    for sink in &readiness.sinks {
        // A store can answer a ping and still refuse every write (read-only, out of memory, a
        // write block): while the pipeline sees it failing, that is the state shown.
        let state = match crate::dashboard::live().sink_down(sink.name()) {
            Some(reason) => format!("down: {reason}"),
            None => match tokio::time::timeout(Duration::from_secs(5), sink.ready()).await {
                Ok(Ok(())) => "ok".to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer within 5 s".to_string(),
            },
        };
        all_ok &= state == "ok";
        sinks.insert(sink.name().to_string(), state.into());
    }
    let status = if all_ok {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "ready": all_ok,
        "broker": broker.err().unwrap_or_else(|| "ok".into()),
        "sinks": sinks,
    });
    (status, axum::Json(body))
}
