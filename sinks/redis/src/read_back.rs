//! Reading Redis back for `ripple verify`: what each key holds, as it is stored (verify decodes it
//! on its own), and every key of a table (its key set; on a cluster, every slot's).

use crate::connection::parse;
use crate::errors::classify;
use crate::{Format, RedisSink};
use async_trait::async_trait;
use ripple_sink::{ChangeEvent, ReadBack, SinkError, StoredRow, Target, Version};
use std::collections::HashMap;

impl RedisSink {
    /// The version each event's key holds in the table's versions hash (a deleted key's too),
    /// or the table's truncation watermark where that is newer.
    pub(crate) async fn versions_of(
        &self,
        target: Target<'_>,
        events: &[ChangeEvent],
    ) -> Result<Vec<Option<Version>>, SinkError> {
        let template = self.key_template(target)?;
        // Each key's version and the watermark of its slot (on a single Redis, the table's).
        let mut cmds = Vec::with_capacity(2 * events.len());
        for e in events {
            let key = template.render(e)?;
            let keys = self.layout.for_key(target.table, &key);
            cmds.push(redis::cmd("GET").arg(&keys.watermark).clone());
            cmds.push(redis::cmd("HGET").arg(&keys.versions).arg(key).clone());
        }
        let conn = self.connection().await?;
        let found = conn
            .run(cmds)
            .await
            .map_err(|e| classify(e, "read versions"))?;
        let version = |answer: Result<redis::Value, redis::RedisError>| -> Result<Option<Version>, SinkError> {
            let text: Option<String> = parse(answer)
                .map_err(|e| classify(e, "read versions"))?;
            let Some(text) = text else { return Ok(None) };
            let parsed = text
                .split_once(':')
                .and_then(|(c, h)| Some((c.parse().ok()?, h.parse().ok()?)));
            match parsed {
                Some((commit, change)) => Ok(Some(Version { commit, change })),
                None => Err(SinkError::permanent(format!(
                    "a versions hash holds {text:?}, not commit:change"
                ))),
            }
        };
        let mut found = found.into_iter();
        let mut held = Vec::with_capacity(events.len());
        while let (Some(watermark), Some(v)) = (found.next(), found.next()) {
            held.push(version(v)?.max(version(watermark)?));
        }
        Ok(held)
    }

    /// One answer of `fetch`'s commands as the row it holds.
    fn stored_row(&self, got: redis::Value) -> Option<StoredRow> {
        let unreadable =
            |e: &dyn std::fmt::Display| StoredRow::Unreadable(format!("the key holds {e}"));
        match got {
            redis::Value::Nil => None,
            got => Some(match self.config.format {
                Format::Hash => match redis::from_redis_value::<HashMap<String, String>>(got) {
                    // HGETALL of a missing key is an empty map.
                    Ok(fields) if fields.is_empty() => return None,
                    Ok(fields) => StoredRow::Fields(fields),
                    Err(e) => unreadable(&e),
                },
                Format::Json => match redis::from_redis_value::<String>(got) {
                    Ok(text) => StoredRow::JsonText(text),
                    Err(e) => unreadable(&e),
                },
                Format::String => match redis::from_redis_value::<String>(got) {
                    Ok(text) => StoredRow::Text {
                        column: self.config.field.clone().unwrap_or_default(),
                        text,
                    },
                    Err(e) => unreadable(&e),
                },
            }),
        }
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
        let conn = self.connection().await?;
        // On a cluster, slot by slot until one holds something.
        for chunk in self.layout.all(target.table).chunks(SLOTS_PER_LOOK) {
            let cmds = chunk
                .iter()
                .map(|keys| {
                    redis::cmd("EXISTS")
                        .arg(&keys.set)
                        .arg(&keys.versions)
                        .clone()
                })
                .collect();
            for answer in conn.run(cmds).await.map_err(|e| classify(e, "read"))? {
                let n: i64 = parse(answer).map_err(|e| classify(e, "read"))?;
                if n > 0 {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn row_id(&self, target: Target<'_>, event: &ChangeEvent) -> Result<String, SinkError> {
        self.key_template(target)?.render(event)
    }

    async fn fetch(
        &self,
        _target: Target<'_>,
        ids: &[String],
    ) -> Result<Vec<Option<StoredRow>>, SinkError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let command = match self.config.format {
            Format::Hash => "HGETALL",
            Format::Json | Format::String => "GET",
        };
        let cmds = ids
            .iter()
            .map(|id| redis::cmd(command).arg(id).clone())
            .collect();
        let conn = self.connection().await?;
        let found = conn.run(cmds).await.map_err(|e| classify(e, "read"))?;
        found
            .into_iter()
            .map(|got| match got {
                Ok(got) => Ok(self.stored_row(got)),
                // A key of another type answers WRONGTYPE for itself alone, not for the whole read.
                Err(e) if !crate::errors::is_outage(&e) => {
                    Ok(Some(StoredRow::Unreadable(format!("the key holds {e}"))))
                }
                Err(e) => Err(classify(e, "read")),
            })
            .collect()
    }

    fn stored_column(&self) -> Option<String> {
        match self.config.format {
            Format::String => self.config.field.clone(),
            Format::Hash | Format::Json => None,
        }
    }

    /// The cursor is `<slot>:<SSCAN cursor>`: which of the table's key sets (one on a single
    /// Redis) and where in it.
    async fn stored_ids(
        &self,
        target: Target<'_>,
        cursor: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), SinkError> {
        let sets = self.layout.all(target.table);
        let (mut slot, mut scan) = match cursor.as_deref().and_then(|c| c.split_once(':')) {
            Some((slot, scan)) => (slot.parse().unwrap_or(sets.len()), scan.to_string()),
            None => (0, "0".to_string()),
        };
        let conn = self.connection().await?;
        while slot < sets.len() {
            if scan == "0" && self.layout.is_cluster() {
                // Most slots hold none of a small table: skip the empty ones many at a time.
                let ahead = &sets[slot..(slot + SLOTS_PER_LOOK).min(sets.len())];
                let cmds = ahead
                    .iter()
                    .map(|k| redis::cmd("SCARD").arg(&k.set).clone())
                    .collect();
                let mut skip = ahead.len();
                for (i, answer) in conn
                    .run(cmds)
                    .await
                    .map_err(|e| classify(e, "list keys"))?
                    .into_iter()
                    .enumerate()
                {
                    let n: i64 = parse(answer).map_err(|e| classify(e, "list keys"))?;
                    if n > 0 {
                        skip = i;
                        break;
                    }
                }
                slot += skip;
                if skip == ahead.len() {
                    continue;
                }
            }
            let (next, ids): (String, Vec<String>) = redis::cmd("SSCAN")
                .arg(&sets[slot].set)
                .arg(&scan)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn.clone())
                .await
                .map_err(|e| classify(e, "list keys"))?;
            if next == "0" {
                slot += 1;
                scan = "0".into();
            } else {
                scan = next;
            }
            if !ids.is_empty() {
                let more = (slot < sets.len()).then(|| format!("{slot}:{scan}"));
                return Ok((ids, more));
            }
        }
        Ok((Vec::new(), None))
    }
}

/// Slots a cluster read looks at in one go.
const SLOTS_PER_LOOK: usize = 1024;
