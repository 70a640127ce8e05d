//! The Redis sink: one key per source row (named by a template such as `inventory:{product_id}`),
//! holding the row as a hash, a JSON document, or one column as a plain string. Each batch goes to
//! Redis as pipelines of server-side scripts that compare versions and write in one step, so a
//! row never moves back in time whatever order the pipelines run in. Truncates find a table's keys
//! through a per-table key set, never through KEYS or SCAN over the whole keyspace. The same sink
//! writes to a Redis Cluster (`cluster = true`), its bookkeeping kept per hash slot (`layout.rs`).

mod apply;
mod config;
mod connection;
mod encode;
mod errors;
mod layout;
mod read_back;
mod template;

pub use config::{Format, RedisSinkConfig};
pub use connection::Connection;

use async_trait::async_trait;
use connection::Client;
use errors::classify;
use layout::Layout;
use ripple_sink::{
    ChangeEvent, ConfigError, ReadBack, Sink, SinkError, SinkFactory, Target, TemplateError,
};
use std::borrow::Cow;
use std::sync::Arc;
use template::KeyTemplate;

/// Events per Redis pipeline.
const PIPELINE_EVENTS: usize = 1_000;
/// Pipelines sent before the first answer is awaited: enough that Redis never waits for Ripple to
/// encode the next one.
const PIPELINES_IN_FLIGHT: usize = 4;

/// Registers `type = "redis"`.
pub struct RedisFactory;

#[async_trait]
impl SinkFactory for RedisFactory {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn build(
        &self,
        name: &str,
        key_prefix: &str,
        section: toml::Table,
    ) -> Result<Arc<dyn Sink>, ConfigError> {
        let config: RedisSinkConfig = ripple_sink::parse_section(key_prefix, section)?;
        Ok(Arc::new(RedisSink::new(name, key_prefix, config)?))
    }
}

pub struct RedisSink {
    name: String,
    client: Client,
    /// Connected on first use, then shared; it reconnects by itself after a drop. A cluster
    /// connection is dropped after an outage (see `forget_connection`).
    connection: tokio::sync::Mutex<Option<Connection>>,
    config: RedisSinkConfig,
    key: KeyTemplate,
    layout: Layout,
    apply_script: redis::Script,
    truncate_script: redis::Script,
}

/// Guarded write of one change; see the script's header.
const APPLY: &str = concat!(
    include_str!("versions.lua"),
    include_str!("members.lua"),
    include_str!("apply.lua")
);
/// Guarded truncate of one table; see the script's header.
const TRUNCATE: &str = concat!(include_str!("versions.lua"), include_str!("truncate.lua"));

impl RedisSink {
    pub fn new(name: &str, key_prefix: &str, config: RedisSinkConfig) -> Result<Self, ConfigError> {
        config.check(key_prefix)?;
        let client = config.connector(key_prefix)?;
        let key = KeyTemplate::parse(&config.key)
            .map_err(|e| ConfigError::new(format!("{key_prefix}.key"), e.to_string()))?;
        Ok(Self {
            name: name.to_string(),
            client,
            connection: tokio::sync::Mutex::new(None),
            layout: Layout::new(&config.key_set_prefix, name, config.cluster),
            config,
            key,
            apply_script: redis::Script::new(APPLY),
            truncate_script: redis::Script::new(TRUNCATE),
        })
    }

    async fn connection(&self) -> Result<Connection, SinkError> {
        let mut held = self.connection.lock().await;
        if let Some(conn) = &*held {
            return Ok(conn.clone());
        }
        let conn = self
            .client
            .connect()
            .await
            .map_err(|e| classify(e, "connect"))?;
        *held = Some(conn.clone());
        Ok(conn)
    }

    /// After an outage, a cluster is connected to afresh. The cluster client re-reads the slot
    /// map on MOVED, but after a lost connection it only reconnects to the same node: a killed
    /// primary would be retried for ever after its replica took over. A new connection asks
    /// the seeds who serves each slot now.
    async fn forget_connection(&self, result: &Result<(), SinkError>) {
        if self.layout.is_cluster() && result.as_ref().is_err_and(|e| e.is_retriable()) {
            *self.connection.lock().await = None;
        }
    }

    /// The route's key template, or the sink's.
    fn key_template(&self, target: Target<'_>) -> Result<Cow<'_, KeyTemplate>, SinkError> {
        match target.template {
            None => Ok(Cow::Borrowed(&self.key)),
            Some(t) => KeyTemplate::parse(t)
                .map(Cow::Owned)
                .map_err(|e| SinkError::permanent(e.to_string())),
        }
    }
}

#[async_trait]
impl Sink for RedisSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn ready(&self) -> Result<(), SinkError> {
        let address = self.config.address();
        self.client
            .ping()
            .await
            .map_err(|e| classify(e, &format!("reach {address}")))
    }

    fn check_target(&self, template: &str) -> Result<(), TemplateError> {
        KeyTemplate::parse(template).map(|_| ())
    }

    fn read_back(&self) -> Option<&dyn ReadBack> {
        Some(self)
    }

    async fn apply(&self, target: Target<'_>, events: &[ChangeEvent]) -> Result<(), SinkError> {
        let result = self.write(target, events).await;
        self.forget_connection(&result).await;
        result
    }

    async fn held_versions(
        &self,
        target: Target<'_>,
        events: &[ChangeEvent],
    ) -> Result<Option<Vec<Option<ripple_sink::Version>>>, SinkError> {
        self.versions_of(target, events).await.map(Some)
    }
}
