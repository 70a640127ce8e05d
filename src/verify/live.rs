//! Live verification: on a system where changes never stop, a row read from the source just
//! before the sink applied its change looks different without being so. Every difference a
//! comparison finds is a suspect, read again on both sides after a wait (1 s, then doubling), until
//! it agrees or the settle time is spent; only what still differs then is reported.

use super::VerifyError;
use super::compare::{ColumnMap, RowStore, SourceTable, TableName, utc_columns};
use super::postgres::{ByKey, PgStore};
use super::report::{Fix, LiveReport, TableReport};
use std::future::Future;
use std::time::{Duration, Instant};

/// How a suspect compares when read again.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum State {
    Equal,
    /// The source has the row, the sink does not.
    Missing,
    /// The sink has the row, the source does not.
    Extra,
    /// Both have it, with other values; where, when the store can say.
    Different(Option<String>),
}

/// Re-reads `report.fixes` with `recheck` until each agrees or `within` is spent, then rewrites
/// the report's counts and samples from what still differs.
pub(crate) async fn settle<F, Fut>(
    report: &mut TableReport,
    within: Duration,
    samples: usize,
    mut recheck: F,
) -> Result<(), VerifyError>
where
    F: FnMut(Vec<Fix>) -> Fut,
    Fut: Future<Output = Result<Vec<State>, VerifyError>>,
{
    let started = Instant::now();
    let suspects = report.fixes.len() as u64;
    let mut live = LiveReport {
        suspects,
        ..Default::default()
    };
    if report.fixes_incomplete {
        live.incomplete = true;
    }
    let mut pending: Vec<(Fix, State)> = Vec::new();
    let mut remaining = std::mem::take(&mut report.fixes);
    let mut wait = Duration::from_secs(1);
    while !remaining.is_empty() {
        let left = within.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(wait.min(left)).await;
        wait = (wait * 2).min(Duration::from_secs(15));
        live.rounds += 1;
        let states = recheck(remaining.clone()).await?;
        pending = remaining
            .into_iter()
            .zip(states)
            .filter(|(_, s)| *s != State::Equal)
            .collect();
        remaining = pending.iter().map(|(f, _)| f.clone()).collect();
    }
    if live.rounds == 0 {
        // No time to read anything again: the pass's findings stand.
        report.fixes = remaining;
        report.live = Some(live);
        return Ok(());
    }
    live.settled = suspects - pending.len() as u64;
    live.waited_ms = started.elapsed().as_millis() as u64;
    let (mut missing, mut extra, mut different) = (0, 0, 0);
    report.samples = Default::default();
    for (fix, state) in &pending {
        let shown = match &fix.id {
            Some(id) => vec![Some(id.clone())],
            None => fix.key.clone(),
        };
        let (count, into) = match state {
            State::Missing => (&mut missing, &mut report.samples.missing),
            State::Extra => (&mut extra, &mut report.samples.extra),
            State::Different(_) => (&mut different, &mut report.samples.different),
            State::Equal => unreachable!("settled ones are gone"),
        };
        *count += 1;
        if into.len() < samples {
            into.push(if matches!(state, State::Extra) {
                shown
            } else {
                fix.key.clone()
            });
            if let State::Different(Some(why)) = state {
                report.samples.why_different.push(why.clone());
            }
        }
    }
    if !live.incomplete {
        report.missing = missing;
        report.extra = extra;
        report.different = different;
        report.matching = report.source_rows.saturating_sub(missing + different);
        report.replica_rows = report.matching + different + extra;
    }
    report.fixes = pending.into_iter().map(|(f, _)| f).collect();
    report.live = Some(live);
    Ok(())
}

/// Reads the rows `fixes` name again in the source and the replica and compares their
/// fingerprints.
pub(crate) async fn recheck_replica(
    source: &PgStore,
    replica: &PgStore,
    table: &SourceTable,
    target: &TableName,
    columns: &ColumnMap,
    fixes: &[Fix],
) -> Result<Vec<State>, VerifyError> {
    let target_columns = replica.columns(target).await?.unwrap_or_default();
    let (source_values, replica_values): (Vec<String>, Vec<String>) =
        columns.pairs.iter().cloned().unzip();
    let (source_utc, replica_utc) = utc_columns(table, columns);
    let cast = |columns: &[super::compare::Column], name: &str| {
        columns
            .iter()
            .find(|c| c.name == name)
            .map_or_else(|| "text".to_string(), |c| c.type_name.clone())
    };
    let replica_key: Vec<String> = table
        .key
        .iter()
        .map(|k| columns.replica_name(k).to_string())
        .collect();
    let source_casts: Vec<String> = table.key.iter().map(|k| cast(&table.columns, k)).collect();
    let replica_casts: Vec<String> = replica_key
        .iter()
        .map(|k| cast(&target_columns, k))
        .collect();
    let keys: Vec<_> = fixes.iter().map(|f| f.key.clone()).collect();
    let mut states = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        let want = source
            .fingerprints_by_key(
                &ByKey {
                    table: &table.name,
                    key: &table.key,
                    casts: &source_casts,
                    values: &source_values,
                    utc_times: &source_utc,
                },
                chunk,
            )
            .await?;
        let got = replica
            .fingerprints_by_key(
                &ByKey {
                    table: target,
                    key: &replica_key,
                    casts: &replica_casts,
                    values: &replica_values,
                    utc_times: &replica_utc,
                },
                chunk,
            )
            .await?;
        states.extend(want.into_iter().zip(got).map(|pair| match pair {
            (None, None) => State::Equal,
            (Some(_), None) => State::Missing,
            (None, Some(_)) => State::Extra,
            (Some(a), Some(b)) if a == b => State::Equal,
            (Some(_), Some(_)) => State::Different(None),
        }));
    }
    Ok(states)
}
