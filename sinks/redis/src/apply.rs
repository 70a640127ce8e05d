//! The write path: each change as a guarded script call (versions compared and the row written
//! in one step) in pipelines of up to `PIPELINE_EVENTS`, a few in flight at once, split at
//! truncates, which empty a table through its key set and leave a watermark.

use crate::encode::json_document;
use crate::errors::classify;
use crate::{
    Format, PIPELINE_EVENTS, PIPELINES_IN_FLIGHT, RedisSink, TableKeys, template::KeyTemplate,
};
use redis::aio::ConnectionManager;
use ripple_sink::in_flight::InFlight;
use ripple_sink::segment::{self, Step};
use ripple_sink::{ChangeEvent, Op, Rejection, SinkError, Target, Value};

impl RedisSink {
    /// `Sink::apply`.
    pub(crate) async fn write(
        &self,
        target: Target<'_>,
        events: &[ChangeEvent],
    ) -> Result<(), SinkError> {
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
            // Each key's script refuses older versions, so neither a segment nor the order of its
            // pipelines matters to the outcome: up to PIPELINES_IN_FLIGHT pipelines of
            // PIPELINE_EVENTS share the multiplexed connection, so Redis runs one while the next
            // is encoded and sent, and the commands held at once stay bounded.
            let mut in_flight = InFlight::new(PIPELINES_IN_FLIGHT);
            for (n, chunk) in run.chunks(PIPELINE_EVENTS).enumerate() {
                let from = offset + n * PIPELINE_EVENTS;
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
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
                in_flight.send(send(conn.clone(), pipe, sent)).await?;
            }
            rejected.extend(in_flight.finish().await?);
        }
        if rejected.is_empty() {
            Ok(())
        } else {
            // Refusals before sending and Redis's answers arrive in two streams.
            rejected.sort_by_key(|r| r.index);
            Err(SinkError::rejected(rejected))
        }
    }

    pub(crate) async fn truncate(
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
    pub(crate) fn add(
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

/// Sends one pipeline and returns the changes Redis refused for their own data (each command
/// answers for itself: a key of another type refuses one change, and the others apply).
async fn send(
    mut conn: ConnectionManager,
    pipe: redis::Pipeline,
    sent: Vec<usize>,
) -> Result<Vec<Rejection>, SinkError> {
    let mut refused = Vec::new();
    if sent.is_empty() {
        return Ok(refused);
    }
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
            refused.push(Rejection::new(index, e.message));
        }
    }
    Ok(refused)
}
