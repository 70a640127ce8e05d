//! Ripple's engine as a library: consume Debezium change topics, decode, route, batch, apply to
//! sinks, commit offsets. The `ripple` binary is a thin CLI over this; embedders build an [`Engine`]
//! and may register their own sinks on it.

pub mod config;
pub mod dashboard;
pub mod dead_letter;
pub mod decode;
pub mod engine;
pub mod exactly_once;
pub mod loadgen;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod registry;
pub mod replay;
pub mod route;
pub mod server;
pub mod source;
pub mod telemetry;
pub mod verify;

pub use engine::{Engine, EngineBuilder, RunSummary};
pub use ripple_sink as sink;

/// Resolves on SIGINT or SIGTERM, for [`Engine::run`].
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
