//! The write path: each change as a guarded script call (versions compared and the row written
//! in one step) in pipelines of up to `PIPELINE_EVENTS`, a few in flight at once, split at
//! truncates, which empty a table through its key set and leave a watermark (on a cluster, the
//! key set and watermark of every slot).

use crate::connection::{Connection, parse};
use crate::encode::json_document;
use crate::errors::classify;
use crate::layout::TableKeys;
use crate::{
    APPLY, Format, PIPELINE_EVENTS, PIPELINES_IN_FLIGHT, RedisSink, TRUNCATE, template::KeyTemplate,
};
use futures::{StreamExt, TryStreamExt};
use ripple_sink::in_flight::InFlight;
use ripple_sink::segment::{self, Step};
use ripple_sink::{ChangeEvent, Op, Rejection, SinkError, Target, Value};

/// Slots a cluster truncate empties at once.
const TRUNCATE_SLOTS_IN_FLIGHT: usize = 64;

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
        // Pipelines call the script by hash; on a single Redis, loading it first saves a restarted
        // server from being sent each call of the batch again in full (`Connection::run_script`).
        if !self.layout.is_cluster() {
            self.apply_script
                .prepare_invoke()
                .load_async(&mut conn)
                .await
                .map_err(|e| classify(e, "load script"))?;
        }
        let table_keys = self.layout.table_wide(table);
        let mut rejected = Vec::new();
        // Segments between truncates go in order, each as pipelines of up to PIPELINE_EVENTS.
        for step in segment::split_at_truncates(events) {
            let (run, offset) = match step {
                Step::Split { event, .. } => {
                    self.truncate(&conn, table, event).await?;
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
                let mut cmds = Vec::with_capacity(chunk.len());
                let mut sent = Vec::with_capacity(chunk.len());
                for (i, e) in chunk.iter().enumerate() {
                    match self.command(&template, table, table_keys.as_ref(), e, from + i) {
                        Ok(cmd) => {
                            cmds.push(cmd);
                            sent.push(from + i);
                        }
                        // An event whose key cannot be named is refused before Redis sees it.
                        Err(e) if !e.is_retriable() => {
                            rejected.push(Rejection::new(from + i, e.message));
                        }
                        Err(e) => return Err(e),
                    }
                }
                in_flight.send(send(conn.clone(), cmds, sent)).await?;
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

    /// Empties a table: on a single Redis through its one key set; on a cluster through every
    /// slot's, a few slots at once, each moving its watermark before it removes anything.
    pub(crate) async fn truncate(
        &self,
        conn: &Connection,
        table: &ripple_sink::TableRef,
        event: &ChangeEvent,
    ) -> Result<(), SinkError> {
        futures::stream::iter(self.layout.all(table))
            .map(|keys| async move { self.truncate_keys(conn, &keys, event).await })
            .buffer_unordered(TRUNCATE_SLOTS_IN_FLIGHT)
            .try_collect::<()>()
            .await
    }

    async fn truncate_keys(
        &self,
        conn: &Connection,
        keys: &TableKeys,
        event: &ChangeEvent,
    ) -> Result<(), SinkError> {
        let mut first = true;
        loop {
            let mut call = redis::cmd("EVALSHA");
            call.arg(self.truncate_script.get_hash())
                .arg(3)
                .arg(&keys.set)
                .arg(&keys.versions)
                .arg(&keys.watermark)
                .arg(event.version.commit)
                .arg(event.version.change)
                .arg(1000)
                .arg(if first { "first" } else { "more" });
            let answer = conn
                .run_script(vec![call], TRUNCATE)
                .await
                .and_then(|mut a| parse::<i64>(a.pop().unwrap_or(Ok(redis::Value::Nil))));
            let removed = answer.map_err(|e| classify(e, "truncate"))?;
            first = false;
            if removed <= 0 {
                return Ok(());
            }
        }
    }

    /// The guarded write of one change.
    pub(crate) fn command(
        &self,
        template: &KeyTemplate,
        table: &ripple_sink::TableRef,
        table_keys: Option<&TableKeys>,
        event: &ChangeEvent,
        index: usize,
    ) -> Result<redis::Cmd, SinkError> {
        if event.before.is_some() {
            return Err(SinkError::permanent(ripple_sink::keyless_refused("Redis")).at_event(index));
        }
        let key = template.render(event).map_err(|e| e.at_event(index))?;
        let slot_keys;
        let keys = match table_keys {
            Some(keys) => keys,
            None => {
                slot_keys = self.layout.for_key(table, &key);
                &slot_keys
            }
        };
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.apply_script.get_hash())
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
            (Op::Truncate, _) => {
                unreachable!("truncates split the batch before it reaches `command`")
            }
        }
        Ok(cmd)
    }
}

/// Sends one pipeline's commands and returns the changes Redis refused for their own data (each
/// command answers for itself: a key of another type refuses one change, and the others apply).
async fn send(
    conn: Connection,
    cmds: Vec<redis::Cmd>,
    sent: Vec<usize>,
) -> Result<Vec<Rejection>, SinkError> {
    let mut refused = Vec::new();
    let answers = conn
        .run_script(cmds, APPLY)
        .await
        .map_err(|e| classify(e, "write"))?;
    for (&index, answer) in sent.iter().zip(answers) {
        if let Err(e) = answer {
            let e = classify(e, "write");
            if e.is_retriable() {
                return Err(e);
            }
            refused.push(Rejection::new(index, e.message));
        }
    }
    Ok(refused)
}
