//! Reading Redis back for `ripple verify`: what each key holds, as it is stored (verify decodes it
//! on its own), and every key of a table (its key set).

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
        let keys = self.table_keys(target.table);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&keys.watermark);
        for e in events {
            pipe.cmd("HGET")
                .arg(&keys.versions)
                .arg(template.render(e)?);
        }
        let mut conn = self.connection().await?;
        let found: Vec<Option<String>> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| classify(e, "read versions"))?;
        let parse = |text: &Option<String>| -> Result<Option<Version>, SinkError> {
            let Some(text) = text else { return Ok(None) };
            let parsed = text
                .split_once(':')
                .and_then(|(c, h)| Some((c.parse().ok()?, h.parse().ok()?)));
            match parsed {
                Some((commit, change)) => Ok(Some(Version { commit, change })),
                None => Err(SinkError::permanent(format!(
                    "the versions hash {} holds {text:?}, not commit:change",
                    keys.versions
                ))),
            }
        };
        let watermark = parse(&found[0])?;
        found[1..]
            .iter()
            .map(|v| Ok(parse(v)?.max(watermark)))
            .collect()
    }

    /// One answer of `fetch`'s pipeline as the row it holds.
    fn stored_row(&self, got: redis::Value) -> Option<StoredRow> {
        let unreadable =
            |e: &dyn std::fmt::Display| StoredRow::Unreadable(format!("the key holds {e}"));
        match got {
            redis::Value::Nil => None,
            redis::Value::ServerError(e) => Some(unreadable(&e)),
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

    async fn fetch(
        &self,
        _target: Target<'_>,
        ids: &[String],
    ) -> Result<Vec<Option<StoredRow>>, SinkError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        // A key of another type answers WRONGTYPE for itself alone, not for the whole read.
        pipe.ignore_errors();
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
        Ok(found.into_iter().map(|got| self.stored_row(got)).collect())
    }

    fn stored_column(&self) -> Option<String> {
        match self.config.format {
            Format::String => self.config.field.clone(),
            Format::Hash | Format::Json => None,
        }
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
