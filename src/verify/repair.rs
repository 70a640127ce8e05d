//! `ripple verify --repair`: the rows a comparison named are written again from a fresh read of the
//! source, through the sink's own write path and its version guards. Each is written just after
//! the version the sink holds for it, read before the source is: the stale copy is replaced, and a
//! change that reaches the sink later (newer than anything the read saw) still wins over the repair.

use super::VerifyError;
use super::compare::SourceTable;
use super::postgres::PgStore;
use super::readback::{parse_value, table_schema};
use super::report::{Fix, RepairReport};
use crate::route::RouteOptions;
use backon::{ExponentialBuilder, Retryable};
use futures::TryStreamExt;
use ripple_sink::{ChangeEvent, Op, Origin, Sink, SinkError, Target, Value, Version};
use std::sync::Arc;
use std::time::Duration;

/// Rows repaired per round trip.
const CHUNK: usize = 500;

/// Reasons kept in the report, at most.
const PROBLEMS: usize = 5;

/// Repairs `fixes` of one table in one sink.
pub(crate) async fn repair(
    source: &PgStore,
    sink: &dyn Sink,
    target: Target<'_>,
    table: &SourceTable,
    options: &RouteOptions,
    fixes: &[Fix],
) -> Result<RepairReport, VerifyError> {
    let mut report = RepairReport::default();
    let sink_error = |error: SinkError| VerifyError::Sink {
        table: table.name.to_string(),
        error,
    };
    if table.key.is_empty() {
        report.failed = fixes.len() as u64;
        report.problems.push(format!(
            "{} has no primary key: its rows cannot be named to rewrite them (replay its topic)",
            table.name
        ));
        return Ok(report);
    }
    let schema = Arc::new(table_schema(table));
    let shape = options.shape(&schema).map_err(|error| VerifyError::Shape {
        table: table.name.to_string(),
        error,
    })?;
    let key_types: Vec<&str> = schema
        .key
        .iter()
        .map(|&i| table.columns[i].type_name.as_str())
        .collect();
    let event = |op: Op, key: Vec<Value>, row: Option<Vec<Value>>, version: Version| {
        shape.apply(&ChangeEvent {
            schema: schema.clone(),
            op,
            row,
            key,
            before: None,
            version,
            source_ts_ms: 0,
            origin: Origin {
                topic: Arc::from("ripple-repair"),
                partition: 0,
                // No Kafka record: a sink that stores offsets moves none for it.
                offset: -1,
            },
        })
    };
    let mut problem = |report: &mut RepairReport, why: String| {
        report.failed += 1;
        if report.problems.len() < PROBLEMS {
            report.problems.push(why);
        }
    };
    for chunk in fixes.chunks(CHUNK) {
        let mut chunk: Vec<&Fix> = chunk.iter().collect();
        // A stored row whose key could not be read back cannot be named to the sink.
        chunk.retain(|fix| {
            let whole = fix.key.iter().all(Option::is_some);
            if !whole {
                problem(
                    &mut report,
                    format!(
                        "{}: the stored row does not hold its key; remove it by hand",
                        fix.id.as_deref().unwrap_or("a row")
                    ),
                );
            }
            whole
        });
        let keys: Vec<Vec<Value>> = chunk
            .iter()
            .map(|fix| {
                fix.key
                    .iter()
                    .zip(&key_types)
                    .map(|(text, ty)| parse_value(text.as_deref(), ty))
                    .collect()
            })
            .collect();
        // Versions first, the source second: whatever the sink holds by then is no newer than
        // the rows read after it.
        let probes: Vec<ChangeEvent> = keys
            .iter()
            .map(|key| event(Op::Delete, key.clone(), None, Version::default()))
            .collect();
        let held = retried(|| sink.held_versions(target, &probes))
            .await
            .map_err(sink_error)?
            .ok_or_else(|| VerifyError::CannotRepair {
                sink: sink.name().to_string(),
            })?;
        let fix_keys: Vec<_> = chunk.iter().map(|f| f.key.clone()).collect();
        let rows = source.rows_by_key(table, &fix_keys).await?;
        let mut events = Vec::with_capacity(chunk.len());
        let mut held_of_events = Vec::with_capacity(chunk.len());
        for (((fix, key), held), row) in chunk.iter().zip(keys).zip(held).zip(rows) {
            let version = Version::just_after(held);
            let e = match row {
                Some(texts) => {
                    let row: Vec<Value> = texts
                        .iter()
                        .zip(&table.columns)
                        .map(|(t, c)| parse_value(t.as_deref(), &c.type_name))
                        .collect();
                    event(Op::Upsert, key, Some(row), version)
                }
                None => event(Op::Delete, key, None, version),
            };
            // A row found only in the sink is removed under the id it was found at, or not at all.
            if let (Some(id), Some(read_back)) = (&fix.id, sink.read_back()) {
                match read_back.row_id(target, &e) {
                    Ok(rendered) if &rendered == id => {}
                    _ => {
                        problem(
                            &mut report,
                            format!("{id}: its key does not name it again; remove it by hand"),
                        );
                        continue;
                    }
                }
            }
            events.push(e);
            held_of_events.push(held);
        }
        apply(
            sink,
            target,
            &events,
            &held_of_events,
            &mut report,
            &mut problem,
        )
        .await?;
    }
    Ok(report)
}

/// Writes every row of `table` into one sink from the source, as a repair of every key does (each
/// just after the version the sink holds for it): a sink or route added later gets the rows the
/// topic may no longer hold, without a new snapshot for every consumer. Memory holds one chunk.
pub(crate) async fn backfill(
    source: &PgStore,
    sink: &dyn Sink,
    target: Target<'_>,
    table: &SourceTable,
    options: &RouteOptions,
    progress: &indicatif::ProgressBar,
) -> Result<RepairReport, VerifyError> {
    let mut total = RepairReport::default();
    if table.key.is_empty() {
        return repair(source, sink, target, table, options, &[]).await;
    }
    // The keys alone, in key-column order: each chunk's rows are read again by key after the
    // sink's versions, as a repair reads them.
    let keys_only = SourceTable {
        name: table.name.clone(),
        columns: table
            .key
            .iter()
            .filter_map(|k| table.columns.iter().find(|c| &c.name == k).cloned())
            .collect(),
        key: table.key.clone(),
    };
    let mut keys = source.text_rows(&keys_only);
    let mut fixes = Vec::with_capacity(CHUNK);
    loop {
        let next = keys.try_next().await?;
        let done = next.is_none();
        if let Some(key) = next {
            fixes.push(Fix { key, id: None });
        }
        if fixes.len() >= CHUNK || (done && !fixes.is_empty()) {
            let r = repair(source, sink, target, table, options, &fixes).await?;
            total.found += fixes.len() as u64;
            total.rewritten += r.rewritten;
            total.removed += r.removed;
            total.failed += r.failed;
            for p in r.problems {
                if total.problems.len() < PROBLEMS {
                    total.problems.push(p);
                }
            }
            progress.inc(fixes.len() as u64);
            fixes.clear();
        }
        if done {
            return Ok(total);
        }
    }
}

/// Writes the repair's events; a store that refuses some (for their data) has the others written
/// and the refusals counted.
async fn apply(
    sink: &dyn Sink,
    target: Target<'_>,
    events: &[ChangeEvent],
    held: &[Option<Version>],
    report: &mut RepairReport,
    problem: &mut impl FnMut(&mut RepairReport, String),
) -> Result<(), VerifyError> {
    let count = |report: &mut RepairReport, events: &[&ChangeEvent]| {
        for e in events {
            match e.op {
                Op::Delete => report.removed += 1,
                _ => report.rewritten += 1,
            }
        }
    };
    match retried(|| sink.repair(target, events, held)).await {
        Ok(()) => count(report, &events.iter().collect::<Vec<_>>()),
        Err(e) if !e.rejections.is_empty() => {
            let refused: Vec<usize> = e.rejections.iter().map(|r| r.index).collect();
            for r in &e.rejections {
                problem(report, format!("the sink refused a row: {}", r.reason));
            }
            let written: Vec<&ChangeEvent> = events
                .iter()
                .enumerate()
                .filter(|(i, _)| !refused.contains(i))
                .map(|(_, e)| e)
                .collect();
            count(report, &written);
        }
        // Refused without naming a row: one at a time, to name them.
        Err(e) if !e.is_retriable() && events.len() > 1 => {
            for (one, held) in events.chunks(1).zip(held.chunks(1)) {
                Box::pin(apply(sink, target, one, held, report, problem)).await?;
            }
        }
        Err(e) if !e.is_retriable() => problem(report, format!("the sink refused a row: {e}")),
        Err(error) => {
            return Err(VerifyError::Sink {
                table: target.table.to_string(),
                error,
            });
        }
    }
    Ok(())
}

/// A sink call tried again while it fails for a reason that may pass (an outage), for about a
/// minute; a permanent failure comes back at once.
async fn retried<T, F, Fut>(call: F) -> Result<T, SinkError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SinkError>>,
{
    call.retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(8),
    )
    .when(SinkError::is_retriable)
    .notify(|e, wait| tracing::warn!(error = %e, ?wait, "repair: the sink failed; trying again"))
    .await
}
