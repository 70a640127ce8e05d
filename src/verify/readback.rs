//! Verify for sinks that are not SQL (Redis, the search index): every source row becomes the upsert
//! the sink would receive for it now (the route's column options applied), and the sink's
//! `ReadBack` says whether it holds exactly that. Then the ids the sink holds are listed, so rows
//! the source no longer has show up as extra.

use super::compare::SourceTable;
use super::postgres::PgStore;
use super::{TableReport, VerifyError};
use crate::route::RouteOptions;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use futures::TryStreamExt;
use ripple_sink::{
    ChangeEvent, Column, ColumnType, Op, Origin, ReadBack, RowState, TableRef, TableSchema, Target,
    Value, Version,
};
use std::collections::HashSet;
use std::sync::Arc;

/// Rows asked about in one round trip.
const CHUNK: usize = 500;

/// Compares one source table with one read-back sink.
pub(crate) async fn compare_table(
    source: &PgStore,
    sink: &dyn ReadBack,
    target: Target<'_>,
    table: &SourceTable,
    options: &RouteOptions,
    samples: usize,
) -> Result<TableReport, VerifyError> {
    let sink_error = |error: ripple_sink::SinkError| VerifyError::Sink {
        table: table.name.to_string(),
        error,
    };
    let mut report = TableReport {
        table: table.name.to_string(),
        key_columns: table.key.clone(),
        ..Default::default()
    };
    let schema = Arc::new(table_schema(table));
    let shape = options.shape(&schema).map_err(|error| VerifyError::Shape {
        table: table.name.to_string(),
        error,
    })?;
    if table.key.is_empty() {
        compare_keyless(
            source,
            sink,
            target,
            table,
            &schema,
            &shape,
            samples,
            &mut report,
        )
        .await?;
        return Ok(report);
    }
    let keys: Vec<usize> = schema.key.clone();
    let origin = Origin {
        topic: Arc::from("verify"),
        partition: 0,
        offset: 0,
    };
    let mut ids: HashSet<String> = HashSet::new();
    let mut chunk: Vec<ChangeEvent> = Vec::with_capacity(CHUNK);
    let mut rows = source.text_rows(table);
    loop {
        let next = rows.try_next().await?;
        if let Some(texts) = &next {
            let row: Vec<Value> = texts
                .iter()
                .zip(&table.columns)
                .map(|(t, c)| parse_value(t.as_deref(), &c.type_name))
                .collect();
            let event = ChangeEvent {
                schema: schema.clone(),
                op: Op::Upsert,
                key: keys.iter().map(|&i| row[i].clone()).collect(),
                row: Some(row),
                before: None,
                version: Version::default(),
                source_ts_ms: 0,
                origin: origin.clone(),
            };
            chunk.push(shape.apply(&event));
        }
        if chunk.len() >= CHUNK || (next.is_none() && !chunk.is_empty()) {
            let states = sink.compare(target, &chunk).await.map_err(sink_error)?;
            for (event, state) in chunk.iter().zip(states) {
                report.source_rows += 1;
                let key: Vec<Option<String>> = event.key.iter().map(ripple_sink::to_text).collect();
                match state {
                    RowState::Equal => report.matching += 1,
                    RowState::Missing => {
                        report.missing += 1;
                        if report.samples.missing.len() < samples {
                            report.samples.missing.push(key);
                        }
                        continue;
                    }
                    RowState::Different(why) => {
                        report.different += 1;
                        if report.samples.different.len() < samples {
                            report.samples.different.push(key);
                            report.samples.why_different.push(why);
                        }
                    }
                }
                ids.insert(sink.row_id(target, event).map_err(sink_error)?);
            }
            chunk.clear();
        }
        if next.is_none() {
            break;
        }
    }
    drop(rows);

    report.replica_rows = ids.len() as u64;
    let mut cursor = None;
    loop {
        let (page, next) = sink.stored_ids(target, cursor).await.map_err(sink_error)?;
        for id in page {
            if !ids.contains(&id) {
                report.extra += 1;
                report.replica_rows += 1;
                if report.samples.extra.len() < samples {
                    report.samples.extra.push(vec![Some(id)]);
                }
            }
        }
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(report)
}

/// A table without a primary key: the sink's rows are keyed by source positions the source does
/// not have, so both sides are compared as bags of rows (each row as the sink's `row_text`),
/// sorted in memory.
#[allow(clippy::too_many_arguments)]
async fn compare_keyless(
    source: &PgStore,
    sink: &dyn ReadBack,
    target: Target<'_>,
    table: &SourceTable,
    schema: &Arc<TableSchema>,
    shape: &crate::route::Shape,
    samples: usize,
    report: &mut TableReport,
) -> Result<(), VerifyError> {
    let sink_error = |error: ripple_sink::SinkError| VerifyError::Sink {
        table: table.name.to_string(),
        error,
    };
    report.key_columns = vec!["row".into()];
    let as_event = |row: Vec<Value>| ChangeEvent {
        schema: schema.clone(),
        op: Op::Upsert,
        key: Vec::new(),
        row: Some(row),
        before: None,
        version: Version::default(),
        source_ts_ms: 0,
        origin: Origin {
            topic: Arc::from("verify"),
            partition: 0,
            offset: 0,
        },
    };
    let mut want = Vec::new();
    let mut rows = source.text_rows(table);
    while let Some(texts) = rows.try_next().await? {
        let row: Vec<Value> = texts
            .iter()
            .zip(&table.columns)
            .map(|(t, c)| parse_value(t.as_deref(), &c.type_name))
            .collect();
        want.push(sink.row_text(&shape.apply(&as_event(row))));
    }
    drop(rows);
    // The columns the sink holds for the table, after the route's options.
    let shaped = shape.apply(&as_event(vec![Value::Null; schema.columns.len()]));
    let mut got = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = sink.stored_ids(target, cursor).await.map_err(sink_error)?;
        match sink
            .row_texts(target, &shaped.schema, &page)
            .await
            .map_err(sink_error)?
        {
            Some(texts) => got.extend(texts),
            None => {
                report.problem = Some(format!(
                    "the source table {} has no primary key and this sink cannot list its rows",
                    table.name
                ));
                return Ok(());
            }
        }
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    want.sort_unstable();
    got.sort_unstable();
    report.source_rows = want.len() as u64;
    report.replica_rows = got.len() as u64;
    let (mut w, mut g) = (want.iter().peekable(), got.iter().peekable());
    let sample = |into: &mut Vec<Vec<Option<String>>>, row: &str| {
        if into.len() < samples {
            into.push(vec![Some(row.chars().take(200).collect())]);
        }
    };
    loop {
        match (w.peek(), g.peek()) {
            (None, None) => break,
            (Some(a), Some(b)) if a == b => {
                report.matching += 1;
                w.next();
                g.next();
            }
            (Some(a), b) if b.is_none_or(|b| a < b) => {
                report.missing += 1;
                sample(&mut report.samples.missing, a);
                w.next();
            }
            (_, Some(b)) => {
                report.extra += 1;
                sample(&mut report.samples.extra, b);
                g.next();
            }
            (Some(_), None) => unreachable!("handled above"),
        }
    }
    Ok(())
}

/// The source table as the change stream would describe it; only names and the key matter here.
pub(crate) fn table_schema(table: &SourceTable) -> TableSchema {
    TableSchema {
        table: TableRef::new(&table.name.schema, &table.name.name),
        columns: table
            .columns
            .iter()
            .map(|c| Column {
                name: c.name.clone(),
                ty: ColumnType::Other(c.type_name.clone()),
                nullable: true,
                source_type: None,
                default: None,
            })
            .collect(),
        key: table
            .key
            .iter()
            .filter_map(|k| table.columns.iter().position(|c| &c.name == k))
            .collect(),
    }
}

/// A source value, from PostgreSQL's text output (the session is in UTC and ISO date style), as
/// the decoder produces it from Debezium's encoding of the same value. Types the decoder carries as
/// text stay text.
pub(crate) fn parse_value(text: Option<&str>, type_name: &str) -> Value {
    let Some(t) = text else { return Value::Null };
    if let Some(element) = type_name.strip_suffix("[]") {
        return parse_array(t, element);
    }
    let parsed = match base_type(type_name) {
        "boolean" => Some(Value::Bool(t == "t")),
        "smallint" | "integer" | "bigint" => t.parse().ok().map(Value::Int),
        "real" | "double precision" => t.parse().ok().map(Value::Float),
        "numeric" => Some(Value::Decimal(t.to_string())),
        "json" | "jsonb" | "hstore" => Some(Value::Json(t.to_string())),
        "bytea" => t.strip_prefix("\\x").and_then(hex_decode).map(Value::Bytes),
        "date" => NaiveDate::parse_from_str(t, "%Y-%m-%d")
            .ok()
            .map(|d| Value::Date((d - NaiveDate::default()).num_days() as i32)),
        "time without time zone" | "time" => NaiveTime::parse_from_str(t, "%H:%M:%S%.f")
            .ok()
            .map(|tm| Value::Time((tm - NaiveTime::MIN).num_microseconds().unwrap_or_default())),
        "timestamp without time zone" | "timestamp" => timestamp_micros(t).map(Value::Timestamp),
        "timestamp with time zone" => {
            let naive = t.strip_suffix("+00").unwrap_or(t);
            timestamp_micros(naive).map(Value::TimestampTz)
        }
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::Text(t.to_string()))
}

/// `numeric(10,2)` -> `numeric`, `timestamp(3) without time zone` -> `timestamp without time zone`.
fn base_type(type_name: &str) -> &str {
    match type_name.find('(') {
        None => type_name,
        Some(open) => {
            let close = type_name[open..]
                .find(')')
                .map_or(type_name.len(), |c| open + c + 1);
            if close >= type_name.len() {
                &type_name[..open]
            } else {
                // Only the timestamp and time forms have words after the modifier.
                match &type_name[close..] {
                    " without time zone" if type_name.starts_with("timestamp") => {
                        "timestamp without time zone"
                    }
                    " with time zone" if type_name.starts_with("timestamp") => {
                        "timestamp with time zone"
                    }
                    " without time zone" => "time without time zone",
                    _ => &type_name[..open],
                }
            }
        }
    }
}

fn timestamp_micros(t: &str) -> Option<i64> {
    match t {
        "infinity" => Some(i64::MAX),
        "-infinity" => Some(i64::MIN),
        _ => NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
            .ok()
            .map(|d| d.and_utc().timestamp_micros()),
    }
}

fn hex_decode(h: &str) -> Option<Vec<u8>> {
    (0..h.len())
        .step_by(2)
        .map(|i| h.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

/// Arrays are read as JSON (`to_json` of the column), whose elements map onto the element type.
fn parse_array(json_text: &str, element: &str) -> Value {
    match serde_json::from_str::<serde_json::Value>(json_text) {
        Ok(serde_json::Value::Array(items)) => Value::Array(
            items
                .iter()
                .map(|item| match item {
                    serde_json::Value::Null => Value::Null,
                    serde_json::Value::String(s) => parse_value(Some(s), element),
                    serde_json::Value::Bool(b) => Value::Bool(*b),
                    other => parse_value(Some(&other.to_string()), element),
                })
                .collect(),
        ),
        _ => Value::Text(json_text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_like_the_decoder_produces_them() {
        assert_eq!(parse_value(Some("42"), "integer"), Value::Int(42));
        assert_eq!(
            parse_value(Some("56.50"), "numeric(10,2)"),
            Value::Decimal("56.50".into())
        );
        assert_eq!(
            parse_value(
                Some("2025-03-14 09:26:53.589793"),
                "timestamp without time zone"
            ),
            Value::Timestamp(1_741_944_413_589_793)
        );
        assert_eq!(
            parse_value(
                Some("2025-03-14 09:26:53.5+00"),
                "timestamp(3) with time zone"
            ),
            Value::TimestampTz(1_741_944_413_500_000)
        );
        assert_eq!(
            parse_value(Some("infinity"), "timestamp with time zone"),
            Value::TimestampTz(i64::MAX)
        );
        assert_eq!(parse_value(Some("1970-01-02"), "date"), Value::Date(1));
        assert_eq!(
            parse_value(Some("\\x01ff"), "bytea"),
            Value::Bytes(vec![1, 255])
        );
        assert_eq!(
            parse_value(Some(r#"["a", null]"#), "text[]"),
            Value::Array(vec![Value::Text("a".into()), Value::Null])
        );
        assert_eq!(
            parse_value(Some("[1,2]"), "integer[]"),
            Value::Array(vec![Value::Int(1), Value::Int(2)])
        );
        assert_eq!(parse_value(None, "text"), Value::Null);
        assert_eq!(
            parse_value(Some("x"), "character varying(255)"),
            Value::Text("x".into())
        );
        assert_eq!(
            to_text_of(parse_value(Some("1.5"), "double precision")),
            "1.5"
        );
    }

    fn to_text_of(v: Value) -> String {
        ripple_sink::to_text(&v).unwrap_or_default()
    }

    #[test]
    fn bytes_render_as_base64_like_the_sinks() {
        use base64::Engine as _;
        let v = parse_value(Some("\\x68656c6c6f"), "bytea");
        assert_eq!(
            ripple_sink::to_text(&v).unwrap(),
            base64::engine::general_purpose::STANDARD.encode("hello")
        );
    }
}
