//! Reading Redis back for `ripple verify`: each row's key read and compared with what the row
//! should leave there, row texts of tables without a key, and every key of a table (its key set).

use crate::errors::classify;
use crate::{Format, RedisSink};
use async_trait::async_trait;
use ripple_sink::{ChangeEvent, ReadBack, RowState, SinkError, TableSchema, Target, Value};
use std::collections::HashMap;

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
