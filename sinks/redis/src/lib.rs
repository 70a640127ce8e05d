//! The Redis sink: one key per source row (named by a template such as `inventory:{product_id}`),
//! holding the row as a hash, a JSON document, or one column as a plain string. Each batch goes to
//! Redis as one atomic pipeline of server-side scripts that compare versions and write in one step,
//! so a row never moves back in time. Truncates find a table's keys through a per-table key set,
//! never through KEYS or SCAN over the whole keyspace.

mod config;
mod template;

pub use config::{Format, RedisSinkConfig};

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use ripple_sink::segment::{self, Step};
use ripple_sink::{
    ChangeEvent, ConfigError, Op, ReadBack, Rejection, RowState, Sink, SinkError, SinkFactory,
    TableRef, TableSchema, Target, TemplateError, Value,
};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use template::KeyTemplate;

/// Events per Redis pipeline (one MULTI/EXEC).
const PIPELINE_EVENTS: usize = 1_000;

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

    async fn truncate(
        &self,
        conn: &mut ConnectionManager,
        keys: &TableKeys,
        event: &ChangeEvent,
    ) -> Result<(), SinkError> {
        let mut first = true;
        loop {
            let removed: i64 = self
                .truncate_script
                .key(&keys.set)
                .key(&keys.versions)
                .key(&keys.watermark)
                .arg(event.version.commit)
                .arg(event.version.change)
                .arg(1000)
                .arg(if first { "first" } else { "more" })
                .invoke_async(conn)
                .await
                .map_err(|e| classify(e, "truncate"))?;
            first = false;
            if removed <= 0 {
                return Ok(());
            }
        }
    }

    /// Adds the guarded write of one change to the batch's pipeline.
    fn add(
        &self,
        pipe: &mut redis::Pipeline,
        template: &KeyTemplate,
        keys: &TableKeys,
        event: &ChangeEvent,
        index: usize,
    ) -> Result<(), SinkError> {
        if event.before.is_some() {
            return Err(SinkError::permanent(ripple_sink::keyless_refused("Redis")).at_event(index));
        }
        let key = template.render(event).map_err(|e| e.at_event(index))?;
        let cmd = pipe
            .cmd("EVALSHA")
            .arg(self.apply_script.get_hash())
            .arg(4)
            .arg(&key)
            .arg(&keys.versions)
            .arg(&keys.watermark)
            .arg(&keys.set)
            .arg(event.version.commit)
            .arg(event.version.change)
            .arg(self.config.ttl_seconds);
        let row = event.row.as_deref().unwrap_or_default();
        let columns = &event.schema.columns;
        match (event.op, &self.config.format) {
            (Op::Delete, _) => {
                cmd.arg("del");
            }
            (Op::Upsert, Format::Hash) => {
                let mut set_fields: Vec<(&str, String)> = Vec::new();
                let mut cleared: Vec<&str> = Vec::new();
                for (c, v) in columns.iter().zip(row) {
                    match v {
                        Value::Unavailable => {}
                        Value::Null => cleared.push(&c.name),
                        v => {
                            set_fields.push((&c.name, ripple_sink::to_text(v).unwrap_or_default()))
                        }
                    }
                }
                cmd.arg("hash").arg(set_fields.len());
                for (f, v) in &set_fields {
                    cmd.arg(*f).arg(v);
                }
                cmd.arg(&cleared);
            }
            (Op::Upsert, Format::Json) => {
                let (doc, unavailable) = json_document(columns, row);
                cmd.arg("json").arg(doc).arg(&unavailable);
            }
            (Op::Upsert, Format::String) => {
                let field = self.config.field.as_deref().unwrap_or_default();
                let i = event.schema.column_index(field).ok_or_else(|| {
                    SinkError::permanent(format!(
                        "table {} has no column {field:?} (the sink's `field`)",
                        event.table()
                    ))
                    .at_event(index)
                })?;
                match &row[i] {
                    // Nothing to write, but the version still moves forward.
                    Value::Unavailable => cmd.arg("keep"),
                    Value::Null => cmd.arg("del"),
                    v => cmd
                        .arg("string")
                        .arg(ripple_sink::to_text(v).unwrap_or_default()),
                };
            }
            (Op::Truncate, _) => unreachable!("truncates split the batch before it reaches `add`"),
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
        let table = target.table;
        let template = self.key_template(target)?;
        let mut conn = self.connection().await?;
        // Pipelines call the script by hash; loading it first covers a server that restarted.
        self.apply_script
            .prepare_invoke()
            .load_async(&mut conn)
            .await
            .map_err(|e| classify(e, "load script"))?;
        let keys = self.table_keys(table);
        let mut rejected = Vec::new();
        // Segments between truncates go in order, each as pipelines of up to PIPELINE_EVENTS.
        for step in segment::split_at_truncates(events) {
            let (run, offset) = match step {
                Step::Split { event, .. } => {
                    self.truncate(&mut conn, &keys, event).await?;
                    continue;
                }
                Step::Run { events, offset } => (events, offset),
            };
            // Each key's script refuses older versions, so a segment need not be one transaction:
            // pipelines of PIPELINE_EVENTS keep the commands in memory at once small.
            for (n, chunk) in run.chunks(PIPELINE_EVENTS).enumerate() {
                let from = offset + n * PIPELINE_EVENTS;
                let mut pipe = redis::pipe();
                // Each command answers for itself: a key of another type refuses one change, and
                // the transaction applies the others (Redis does not roll back).
                pipe.atomic().ignore_errors();
                let mut sent = Vec::with_capacity(chunk.len());
                for (i, e) in chunk.iter().enumerate() {
                    match self.add(&mut pipe, &template, &keys, e, from + i) {
                        Ok(()) => sent.push(from + i),
                        // An event whose key cannot be named is refused before Redis sees it.
                        Err(e) if !e.is_retriable() => {
                            rejected.push(Rejection::new(from + i, e.message));
                        }
                        Err(e) => return Err(e),
                    }
                }
                if !sent.is_empty() {
                    let answers: Vec<redis::Value> = pipe
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| classify(e, "write"))?;
                    for (&index, answer) in sent.iter().zip(answers) {
                        if let redis::Value::ServerError(e) = answer {
                            let e = classify(redis::RedisError::from(e), "write");
                            if e.is_retriable() {
                                return Err(e);
                            }
                            rejected.push(Rejection::new(index, e.message));
                        }
                    }
                }
            }
        }
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(SinkError::rejected(rejected))
        }
    }
}

/// What a row looks like in Redis, in each format; `None`: no key at all.
enum Stored {
    /// Per source column, its text (`None`: NULL, no field).
    Hash(Vec<(String, Option<String>)>),
    Json(serde_json::Value),
    Text(String),
}

impl RedisSink {
    /// The value an upsert of `event` leaves under its key (when nothing was unavailable).
    fn expected(&self, event: &ChangeEvent) -> Result<Option<Stored>, SinkError> {
        let row = event.row.as_deref().unwrap_or_default();
        let columns = &event.schema.columns;
        Ok(Some(match self.config.format {
            Format::Hash => Stored::Hash(
                columns
                    .iter()
                    .zip(row)
                    .map(|(c, v)| (c.name.clone(), ripple_sink::to_text(v)))
                    .collect(),
            ),
            Format::Json => Stored::Json(serde_json::Value::Object(
                columns
                    .iter()
                    .zip(row)
                    .map(|(c, v)| (c.name.clone(), ripple_sink::to_json(v)))
                    .collect(),
            )),
            Format::String => {
                let field = self.config.field.as_deref().unwrap_or_default();
                let i = event.schema.column_index(field).ok_or_else(|| {
                    SinkError::permanent(format!(
                        "table {} has no column {field:?} (the sink's `field`)",
                        event.table()
                    ))
                })?;
                match ripple_sink::to_text(&row[i]) {
                    Some(t) => Stored::Text(t),
                    None => return Ok(None),
                }
            }
        }))
    }
}

#[async_trait]
impl ReadBack for RedisSink {
    fn target_name(&self, target: Target<'_>) -> String {
        let template = target.template.unwrap_or(&self.config.key);
        let table = target.table;
        format!(
            "keys {}",
            template
                .replace("{schema}", &table.namespace)
                .replace("{table}", &table.name)
        )
    }

    async fn has_table(&self, target: Target<'_>) -> Result<bool, SinkError> {
        let keys = self.table_keys(target.table);
        let mut conn = self.connection().await?;
        let n: i64 = redis::cmd("EXISTS")
            .arg(&keys.set)
            .arg(&keys.versions)
            .query_async(&mut conn)
            .await
            .map_err(|e| classify(e, "read"))?;
        Ok(n > 0)
    }

    fn row_id(&self, target: Target<'_>, event: &ChangeEvent) -> Result<String, SinkError> {
        self.key_template(target)?.render(event)
    }

    async fn compare(
        &self,
        target: Target<'_>,
        rows: &[ChangeEvent],
    ) -> Result<Vec<RowState>, SinkError> {
        let template = self.key_template(target)?;
        let mut pipe = redis::pipe();
        let mut expected = Vec::with_capacity(rows.len());
        for e in rows {
            let key = template.render(e)?;
            match self.config.format {
                Format::Hash => pipe.cmd("HGETALL").arg(&key),
                Format::Json | Format::String => pipe.cmd("GET").arg(&key),
            };
            expected.push(self.expected(e)?);
        }
        let mut conn = self.connection().await?;
        let found: Vec<redis::Value> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| classify(e, "read"))?;
        let mut states = Vec::with_capacity(rows.len());
        for (want, got) in expected.into_iter().zip(found) {
            states.push(match (want, got) {
                (None, redis::Value::Nil) => RowState::Equal,
                (_, redis::Value::Nil) => RowState::Missing,
                (Some(Stored::Hash(_)), redis::Value::Array(a)) if a.is_empty() => {
                    RowState::Missing
                }
                (Some(Stored::Hash(_)), redis::Value::Map(m)) if m.is_empty() => RowState::Missing,
                (None, _) => RowState::Different("a key is held for a NULL value".into()),
                (Some(Stored::Hash(want)), got) => {
                    match redis::from_redis_value::<HashMap<String, String>>(got) {
                        Ok(got) => compare_maps(&want, &got),
                        Err(e) => unreadable(e),
                    }
                }
                (Some(Stored::Json(want)), got) => match redis::from_redis_value::<String>(got) {
                    Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                        Ok(got) if ripple_sink::json_rows_equal(&want, &got) => RowState::Equal,
                        Ok(got) => RowState::Different(ripple_sink::json_difference(&want, &got)),
                        Err(e) => RowState::Different(format!("the value is not JSON: {e}")),
                    },
                    Err(e) => unreadable(e),
                },
                (Some(Stored::Text(want)), got) => match redis::from_redis_value::<String>(got) {
                    Ok(got) if got == want => RowState::Equal,
                    Ok(got) => RowState::Different(format!("holds {got:?}, the source {want:?}")),
                    Err(e) => unreadable(e),
                },
            });
        }
        Ok(states)
    }

    fn row_text(&self, event: &ChangeEvent) -> String {
        let row = event.row.as_deref().unwrap_or_default();
        let text = |v: &Value| ripple_sink::to_text(v).map_or(serde_json::Value::Null, Into::into);
        match self.config.format {
            Format::Hash => ripple_sink::row_text(row.iter().map(text)),
            Format::Json => ripple_sink::row_text(row.iter().map(ripple_sink::to_json)),
            Format::String => {
                let field = self.config.field.as_deref().unwrap_or_default();
                let value = event.schema.column_index(field).map(|i| &row[i]);
                ripple_sink::row_text(value.map(text))
            }
        }
    }

    async fn row_texts(
        &self,
        _target: Target<'_>,
        schema: &TableSchema,
        ids: &[String],
    ) -> Result<Option<Vec<String>>, SinkError> {
        let mut pipe = redis::pipe();
        for id in ids {
            match self.config.format {
                Format::Hash => pipe.cmd("HGETALL").arg(id),
                Format::Json | Format::String => pipe.cmd("GET").arg(id),
            };
        }
        let mut conn = self.connection().await?;
        let found: Vec<redis::Value> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| classify(e, "read"))?;
        let null = serde_json::Value::Null;
        let mut texts = Vec::with_capacity(found.len());
        for got in found {
            texts.push(match self.config.format {
                Format::Hash => {
                    let got: HashMap<String, String> =
                        redis::from_redis_value(got).unwrap_or_default();
                    ripple_sink::row_text(
                        schema
                            .columns
                            .iter()
                            .map(|c| got.get(&c.name).map_or(null.clone(), |v| v.as_str().into())),
                    )
                }
                Format::Json => {
                    let text: String = redis::from_redis_value(got).unwrap_or_default();
                    let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    ripple_sink::row_text(
                        schema
                            .columns
                            .iter()
                            .map(|c| doc.get(&c.name).cloned().unwrap_or_default()),
                    )
                }
                Format::String => {
                    let text: Option<String> = redis::from_redis_value(got).unwrap_or_default();
                    ripple_sink::row_text(text.map(serde_json::Value::from))
                }
            });
        }
        Ok(Some(texts))
    }

    async fn stored_ids(
        &self,
        target: Target<'_>,
        cursor: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), SinkError> {
        let keys = self.table_keys(target.table);
        let mut conn = self.connection().await?;
        let (next, ids): (String, Vec<String>) = redis::cmd("SSCAN")
            .arg(&keys.set)
            .arg(cursor.as_deref().unwrap_or("0"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(|e| classify(e, "list keys"))?;
        Ok((ids, (next != "0").then_some(next)))
    }
}

/// The `json` format's document for `row`, and the names of its unavailable columns (JSON-encoded,
/// as the document writes them, for the script to copy from the stored one). A JSON column goes
/// in as the source wrote it, not through a parse: a number beyond a double keeps its digits.
fn json_document(columns: &[ripple_sink::Column], row: &[Value]) -> (String, Vec<String>) {
    let mut doc = String::from("{");
    let mut unavailable = Vec::new();
    for (c, v) in columns.iter().zip(row) {
        let name = serde_json::Value::from(c.name.as_str()).to_string();
        if *v == Value::Unavailable {
            unavailable.push(name);
            continue;
        }
        if doc.len() > 1 {
            doc.push(',');
        }
        doc.push_str(&name);
        doc.push(':');
        match v {
            Value::Json(text)
                if serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok() =>
            {
                doc.push_str(text.trim())
            }
            v => doc.push_str(&ripple_sink::to_json(v).to_string()),
        }
    }
    doc.push('}');
    (doc, unavailable)
}

fn unreadable(e: impl std::fmt::Display) -> RowState {
    RowState::Different(format!(
        "the key holds another kind of value than the sink writes: {e}"
    ))
}

/// Compares the source's columns only: fields of columns the source no longer has (dropped after
/// the row was written) stay, as they stay in a replica table.
fn compare_maps(want: &[(String, Option<String>)], got: &HashMap<String, String>) -> RowState {
    for (name, w) in want {
        let g = got.get(name);
        if let (Some(w), None) = (w, g) {
            return RowState::Different(ripple_sink::absent_field(name, format!("{w:?}")));
        }
        if w.as_ref() != g {
            return RowState::Different(format!("field {name:?}: holds {g:?}, the source {w:?}"));
        }
    }
    RowState::Equal
}

/// Connection trouble and a busy or loading server are worth retrying; a rejected command is not.
/// Whether Redis refused because of its own state, not the data: unreachable, loading, out of
/// memory under `noeviction`, a read-only replica after failover, a login or ACL refusal, a busy
/// script, failing persistence (MISCONF), a cluster without its master. Retried without end; what
/// is left (a key of another type, a script's own error) belongs to the event.
fn is_outage(err: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind as S};
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || matches!(
            err.kind(),
            ErrorKind::AuthenticationFailed
                | ErrorKind::Server(
                    S::BusyLoading
                        | S::TryAgain
                        | S::ClusterDown
                        | S::MasterDown
                        | S::ReadOnly
                        | S::NoPerm
                )
        )
        || err.code().is_some_and(|code| OUTAGE_CODES.contains(&code))
        || {
            // A transaction or pipeline reports its commands' errors inside its own (EXECABORT),
            // each code quoted, and a script's failed call names the code in its detail.
            let text = err.to_string();
            OUTAGE_CODES.iter().any(|c| {
                text.contains(&format!("\"{c}\""))
                    || text.contains(&format!("{c} command not allowed"))
            }) || text.contains("READONLY You can't write")
        }
}

/// Error codes of a Redis that cannot take writes now.
const OUTAGE_CODES: &[&str] = &[
    "OOM",
    "MISCONF",
    "NOAUTH",
    "WRONGPASS",
    "NOPERM",
    "BUSY",
    "READONLY",
    "LOADING",
    "MASTERDOWN",
    "NOREPLICAS",
    "CLUSTERDOWN",
    "TRYAGAIN",
];

fn classify(err: redis::RedisError, doing: &str) -> SinkError {
    let mut message = format!("redis {doing}: {err}");
    // An aborted transaction lists every command's error, the same one a thousand times over.
    const LONGEST: usize = 400;
    if message.len() > LONGEST {
        let cut = (0..=LONGEST)
            .rev()
            .find(|&i| message.is_char_boundary(i))
            .unwrap_or(0);
        let more = message.len() - cut;
        message.truncate(cut);
        message.push_str(&format!("… ({more} more bytes)"));
    }
    let retriable = is_outage(&err);
    let e = if retriable {
        SinkError::retriable(message)
    } else {
        SinkError::permanent(message)
    };
    e.with_source(err)
}
