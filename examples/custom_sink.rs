//! Embedding Ripple with a sink of your own: a store Ripple does not ship (here, an in-memory map
//! that counts rows per table) implements `ripple::sink::Sink` and is handed to the engine builder.
//! Routes name it like any configured sink.
//!
//!     cargo run --example custom_sink -- ripple.toml
//!
//! with a config whose `[[routes]]` list `sinks = ["rows-per-table"]` (and any `[sinks.*]` it needs).

use async_trait::async_trait;
use ripple::config::Config;
use ripple::sink::{ChangeEvent, Op, Sink, SinkError, Target};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Keeps the set of live keys per table: enough to show the contract (ordered batches,
/// at-least-once delivery handled by idempotent set operations).
#[derive(Default)]
struct RowsPerTable {
    keys: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

#[async_trait]
impl Sink for RowsPerTable {
    fn name(&self) -> &str {
        "rows-per-table"
    }

    async fn ready(&self) -> Result<(), SinkError> {
        Ok(())
    }

    async fn apply(&self, target: Target<'_>, events: &[ChangeEvent]) -> Result<(), SinkError> {
        let mut keys = self
            .keys
            .lock()
            .map_err(|_| SinkError::permanent("state poisoned"))?;
        let live = keys.entry(target.table.to_string()).or_default();
        for e in events {
            let key = format!("{:?}", e.key);
            match e.op {
                Op::Upsert => {
                    live.insert(key);
                }
                Op::Delete => {
                    live.remove(&key);
                }
                Op::Truncate => live.clear(),
            }
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ripple.toml".into());
    let counter = Arc::new(RowsPerTable::default());
    let config = Config::load_with_sinks(path.as_ref(), &[counter.name()])?;
    let engine = ripple::Engine::builder(config)
        .sink(counter.clone())
        .exit_when_idle(Some(std::time::Duration::from_secs(3)))
        .build()
        .await?;
    let summary = engine.run(ripple::shutdown_signal()).await?;
    println!("{summary}");
    for (table, keys) in counter.keys.lock().expect("state").iter() {
        println!("{table}: {} rows", keys.len());
    }
    Ok(())
}
