//! The Redis sink: one key per source row (named by a template such as `inventory:{product_id}`),
//! holding the row as a hash, a JSON document, or one column as a plain string. Each batch goes to
//! Redis as pipelines of server-side scripts that compare versions and write in one step, so a
//! row never moves back in time whatever order the pipelines run in. Truncates find a table's keys through a per-table key set,
//! never through KEYS or SCAN over the whole keyspace.

mod apply;
mod config;
mod encode;
mod errors;
mod read_back;
mod template;

pub use config::{Format, RedisSinkConfig};

use async_trait::async_trait;
use errors::classify;
use redis::aio::ConnectionManager;
use ripple_sink::{
    ChangeEvent, ConfigError, ReadBack, Sink, SinkError, SinkFactory, TableRef, Target,
    TemplateError,
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
    client: redis::Client,
    /// Connected on first use, then shared; it reconnects by itself after a drop.
    connection: tokio::sync::OnceCell<ConnectionManager>,
    config: RedisSinkConfig,
    key: KeyTemplate,
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

/// The per-table keys Ripple keeps next to the data.
struct TableKeys {
    /// Every data key written and not deleted: what a truncate removes.
    set: String,
    /// Version per data key, deleted ones included.
    versions: String,
    /// Version of the last truncate.
    watermark: String,
}

impl RedisSink {
    pub fn new(name: &str, key_prefix: &str, config: RedisSinkConfig) -> Result<Self, ConfigError> {
        let client = config.client(key_prefix)?;
        let key = KeyTemplate::parse(&config.key)
            .map_err(|e| ConfigError::new(format!("{key_prefix}.key"), e.to_string()))?;
        config.check(key_prefix)?;
        Ok(Self {
            name: name.to_string(),
            client,
            connection: tokio::sync::OnceCell::new(),
            config,
            key,
            apply_script: redis::Script::new(APPLY),
            truncate_script: redis::Script::new(TRUNCATE),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, SinkError> {
        self.connection
            .get_or_try_init(|| async { ConnectionManager::new(self.client.clone()).await })
            .await
            .cloned()
            .map_err(|e| classify(e, "connect"))
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

    fn table_keys(&self, table: &TableRef) -> TableKeys {
        // Per sink as well as per table: two sinks sharing one Redis each keep their own key set
        // and truncate watermark, so one's truncate cannot hide the other's keys from it.
        let prefix = &self.config.key_set_prefix;
        let t = format!("{}:{}.{}", self.name, table.namespace, table.name);
        TableKeys {
            set: format!("{prefix}{t}"),
            versions: format!("{prefix}{t}:versions"),
            watermark: format!("{prefix}{t}:truncated"),
        }
    }
}

#[async_trait]
impl Sink for RedisSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn ready(&self) -> Result<(), SinkError> {
        // A direct connection says why it failed; the manager would only retry.
        let address = self.config.address();
        let mut conn = self
            .client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| classify(e, &format!("connect to {address}")))?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| classify(e, &format!("ping {address}")))?;
        Ok(())
    }

    fn check_target(&self, template: &str) -> Result<(), TemplateError> {
        KeyTemplate::parse(template).map(|_| ())
    }

    fn read_back(&self) -> Option<&dyn ReadBack> {
        Some(self)
    }

    async fn apply(&self, target: Target<'_>, events: &[ChangeEvent]) -> Result<(), SinkError> {
        self.write(target, events).await
    }

    async fn held_versions(
        &self,
        target: Target<'_>,
        events: &[ChangeEvent],
    ) -> Result<Option<Vec<Option<ripple_sink::Version>>>, SinkError> {
        self.versions_of(target, events).await.map(Some)
    }
}
