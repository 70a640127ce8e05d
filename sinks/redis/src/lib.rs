//! The Redis sink: one key per source row (named by a template such as `inventory:{product_id}`),
//! holding the row as a hash, a JSON document, or one column as a plain string. Each batch goes to
//! Redis as one atomic pipeline. Truncates find a table's keys through a per-table key set, never
//! through KEYS or SCAN over the whole keyspace.

mod config;
mod template;

pub use config::{Format, RedisSinkConfig};

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use ripple_sink::{ChangeEvent, ConfigError, Op, Sink, SinkError, SinkFactory, TableRef, Value};
use std::sync::Arc;
use template::KeyTemplate;

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
}

/// Writes a JSON row, keeping from the stored document the fields whose values did not come with
/// the change (ARGV[3..]: unchanged TOAST columns), so a placeholder never replaces a real value.
const JSON_MERGE: &str = r#"
local doc = cjson.decode(ARGV[1])
local old = redis.call('GET', KEYS[1])
if old then
  local prev = cjson.decode(old)
  for i = 3, #ARGV do doc[ARGV[i]] = prev[ARGV[i]] end
end
redis.call('SET', KEYS[1], cjson.encode(doc))
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
"#;

impl RedisSink {
    pub fn new(name: &str, key_prefix: &str, config: RedisSinkConfig) -> Result<Self, ConfigError> {
        let url = config.connection_url(key_prefix)?;
        let client = redis::Client::open(url).map_err(|e| {
            ConfigError::new(
                format!("{key_prefix}.url"),
                format!("is not a redis:// URL: {e}"),
            )
        })?;
        let key = KeyTemplate::parse(&config.key)
            .map_err(|e| ConfigError::new(format!("{key_prefix}.key"), e))?;
        config.check(key_prefix)?;
        Ok(Self {
            name: name.to_string(),
            client,
            connection: tokio::sync::OnceCell::new(),
            config,
            key,
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, SinkError> {
        self.connection
            .get_or_try_init(|| async { ConnectionManager::new(self.client.clone()).await })
            .await
            .cloned()
            .map_err(|e| classify(e, "connect"))
    }

    /// The set that lists every key this sink wrote for `table`.
    fn key_set(&self, table: &TableRef) -> String {
        format!(
            "{}{}.{}",
            self.config.key_set_prefix, table.namespace, table.name
        )
    }

    async fn truncate(
        &self,
        conn: &mut ConnectionManager,
        table: &TableRef,
    ) -> Result<(), SinkError> {
        let set = self.key_set(table);
        loop {
            let keys: Vec<String> = redis::cmd("SPOP")
                .arg(&set)
                .arg(1000)
                .query_async(conn)
                .await
                .map_err(|e| classify(e, "truncate"))?;
            if keys.is_empty() {
                return Ok(());
            }
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(conn)
                .await
                .map_err(|e| classify(e, "truncate"))?;
        }
    }

    /// Adds the commands for one change to the batch's pipeline.
    fn add(
        &self,
        pipe: &mut redis::Pipeline,
        set: &str,
        event: &ChangeEvent,
        index: usize,
    ) -> Result<(), SinkError> {
        let key = self
            .key
            .render(event)
            .map_err(|e| SinkError::permanent(e).at_event(index))?;
        let ttl = self.config.ttl_seconds;
        match event.op {
            Op::Delete => {
                pipe.del(&key).ignore().srem(set, &key).ignore();
            }
            Op::Upsert => {
                let row = event.row.as_deref().unwrap_or_default();
                let columns = &event.schema.columns;
                match &self.config.format {
                    Format::Hash => {
                        let mut set_fields: Vec<(&str, String)> = Vec::new();
                        let mut cleared: Vec<&str> = Vec::new();
                        for (c, v) in columns.iter().zip(row) {
                            match v {
                                Value::Unavailable => {}
                                Value::Null => cleared.push(&c.name),
                                v => set_fields
                                    .push((&c.name, ripple_sink::to_text(v).unwrap_or_default())),
                            }
                        }
                        if !cleared.is_empty() {
                            pipe.hdel(&key, cleared).ignore();
                        }
                        if !set_fields.is_empty() {
                            pipe.hset_multiple(&key, &set_fields).ignore();
                        }
                        if ttl > 0 {
                            pipe.expire(&key, ttl as i64).ignore();
                        }
                    }
                    Format::Json => {
                        let mut doc = serde_json::Map::new();
                        let mut unavailable = Vec::new();
                        for (c, v) in columns.iter().zip(row) {
                            if *v == Value::Unavailable {
                                unavailable.push(c.name.clone());
                            } else {
                                doc.insert(c.name.clone(), ripple_sink::to_json(v));
                            }
                        }
                        let doc = serde_json::Value::Object(doc).to_string();
                        if unavailable.is_empty() {
                            match ttl {
                                0 => pipe.set(&key, doc).ignore(),
                                t => pipe.set_ex(&key, doc, t).ignore(),
                            };
                        } else {
                            // EVAL rather than EVALSHA: a pipeline cannot load a script a
                            // restarted server has forgotten, and the text is short.
                            pipe.cmd("EVAL")
                                .arg(JSON_MERGE)
                                .arg(1)
                                .arg(&key)
                                .arg(doc)
                                .arg(ttl)
                                .arg(&unavailable)
                                .ignore();
                        }
                    }
                    Format::String => {
                        let field = self.config.field.as_deref().unwrap_or_default();
                        let i = event.schema.column_index(field).ok_or_else(|| {
                            SinkError::permanent(format!(
                                "table {} has no column {field:?} (the sink's `field`)",
                                event.table()
                            ))
                            .at_event(index)
                        })?;
                        match &row[i] {
                            Value::Unavailable => {}
                            Value::Null => {
                                pipe.del(&key).ignore();
                            }
                            v => {
                                let text = ripple_sink::to_text(v).unwrap_or_default();
                                match ttl {
                                    0 => pipe.set(&key, text).ignore(),
                                    t => pipe.set_ex(&key, text, t).ignore(),
                                };
                            }
                        }
                    }
                }
                pipe.sadd(set, &key).ignore();
            }
            Op::Truncate => unreachable!("truncates split the batch before it reaches `add`"),
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for RedisSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn ready(&self) -> Result<(), SinkError> {
        // A direct connection says why it failed; the manager would only retry.
        let mut conn = self
            .client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| classify(e, "connect"))?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| classify(e, "ping"))?;
        Ok(())
    }

    async fn apply(&self, table: &TableRef, events: &[ChangeEvent]) -> Result<(), SinkError> {
        let mut conn = self.connection().await?;
        let set = self.key_set(table);
        let mut start = 0;
        // Segments between truncates each go as one atomic pipeline, in order.
        for end in events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.op == Op::Truncate)
            .map(|(i, _)| i)
            .chain([events.len()])
        {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (i, e) in events[start..end].iter().enumerate() {
                self.add(&mut pipe, &set, e, start + i)?;
            }
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|e| classify(e, "write"))?;
            if end < events.len() {
                self.truncate(&mut conn, table).await?;
            }
            start = end + 1;
        }
        Ok(())
    }
}

/// Connection trouble and a busy or loading server are worth retrying; a rejected command is not.
fn classify(err: redis::RedisError, doing: &str) -> SinkError {
    let message = format!("redis {doing}: {err}");
    let retriable = err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || matches!(
            err.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::BusyLoading
                    | redis::ServerErrorKind::TryAgain
                    | redis::ServerErrorKind::ClusterDown
                    | redis::ServerErrorKind::MasterDown
            )
        );
    let e = if retriable {
        SinkError::retriable(message)
    } else {
        SinkError::permanent(message)
    };
    e.with_source(err)
}
