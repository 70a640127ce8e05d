//! The HTTP endpoint on `[metrics] listen`: `/metrics` (Prometheus text format), `/healthz` (the
//! process answers), `/readyz` (the broker and every sink are reachable now) and the dashboard. It
//! sits above the metrics and the dashboard, and reads both.

mod access;

use crate::dashboard::Live;
use crate::metrics::Metrics;
use ripple_sink::Sink;
use std::sync::Arc;
use std::time::Duration;

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
pub async fn serve(
    endpoint: Endpoint,
    readiness: Readiness,
    metrics: Arc<Metrics>,
    live: Arc<Live>,
) {
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
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
        .merge(crate::dashboard::routes(live.clone()))
        .layer(axum::middleware::from_fn(move |request, next| {
            let token = token.clone();
            async move { access::check(token.as_ref(), request, next).await }
        }));
    let app = axum::Router::new()
        .merge(protected)
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                let live = live.clone();
                async move { ready(&readiness, &live).await }
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

async fn ready(
    readiness: &Readiness,
    live: &Live,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    let broker = readiness.broker.clone();
    let broker = tokio::task::spawn_blocking(move || broker())
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let mut all_ok = broker.is_ok();
    let mut sinks = serde_json::Map::new();
    for sink in &readiness.sinks {
        // A store can answer a ping and still refuse every write (read-only, out of memory, a
        // write block): while the pipeline sees it failing, that is the state shown.
        let state = match live.sink_down(sink.name()) {
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
