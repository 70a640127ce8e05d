//! Segment checksums with bisection, for a replica table keyed by one integer column: the key
//! space is split into segments, both databases compute each segment's checksum themselves (a
//! count and sums of the rows' fingerprints), and only segments whose checksums differ are split
//! again, down to segments small enough to merge-join row by row. Equal tables cost one pass of
//! each database over its rows and next to nothing on the wire; memory holds the segments to visit.

use super::VerifyError;
use super::compare::{Checksum, Keep, KeyRange, RowStore, Scan, merge};
use super::report::TableReport;
use std::collections::VecDeque;

/// Checksums computed at once on each side: two connections each, as each pool holds.
const CONCURRENT: usize = 2;

/// Compares the two tables segment by segment. `source_scan` and `replica_scan` give each side's
/// scan of a key range; `keys` names the key column on each side.
pub(crate) async fn compare<'s, S: RowStore, R: RowStore>(
    (source, replica): (&S, &R),
    source_scan: impl Fn(KeyRange) -> Scan<'s>,
    replica_scan: impl Fn(KeyRange) -> Scan<'s>,
    (source_key, replica_key): (&str, &str),
    keep: Keep<'_>,
    report: &mut TableReport,
) -> Result<(), VerifyError> {
    let bounds = |a: Option<(i64, i64)>, b: Option<(i64, i64)>| match (a, b) {
        (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
        (a, b) => a.or(b),
    };
    let Some(whole) = bounds(
        source
            .key_bounds(source_scan(KeyRange::Null).table, source_key)
            .await?,
        replica
            .key_bounds(replica_scan(KeyRange::Null).table, replica_key)
            .await?,
    ) else {
        return merge_nulls(&source_scan, &replica_scan, (source, replica), keep, report).await;
    };
    let bisection = keep.bisection;
    let mut to_visit: VecDeque<(i64, i64)> = split(whole, bisection.factor).into();
    while !to_visit.is_empty() {
        let batch: Vec<(i64, i64)> = (0..CONCURRENT)
            .filter_map(|_| to_visit.pop_front())
            .collect();
        let (source_scan, replica_scan) = (&source_scan, &replica_scan);
        let sums = futures::future::try_join_all(batch.iter().map(|&range| async move {
            let range = KeyRange::Between(range.0, range.1);
            let (a, b) = futures::try_join!(
                source.checksum(source_scan(range)),
                replica.checksum(replica_scan(range))
            )?;
            Ok::<(Checksum, Checksum), VerifyError>((a, b))
        }))
        .await?;
        for (range, (a, b)) in batch.into_iter().zip(sums) {
            if a == b {
                report.source_rows += a.rows;
                report.replica_rows += b.rows;
                report.matching += a.rows;
                keep.progress.inc(a.rows);
                continue;
            }
            let narrow = range.0 == range.1;
            if a.rows.max(b.rows) <= bisection.threshold || narrow {
                let between = KeyRange::Between(range.0, range.1);
                let order = source_scan(between).order;
                merge(
                    source.rows(source_scan(between)),
                    replica.rows(replica_scan(between)),
                    order,
                    keep,
                    false,
                    report,
                    (source.label(), replica.label()),
                )
                .await?;
            } else {
                to_visit.extend(split(range, bisection.factor));
            }
        }
    }
    merge_nulls(&source_scan, &replica_scan, (source, replica), keep, report).await
}

/// Rows keyed NULL (a replica without a primary key may hold some) are in no range: merged on
/// their own, after every range (NULL sorts last).
async fn merge_nulls<'s, S: RowStore, R: RowStore>(
    source_scan: &impl Fn(KeyRange) -> Scan<'s>,
    replica_scan: &impl Fn(KeyRange) -> Scan<'s>,
    (source, replica): (&S, &R),
    keep: Keep<'_>,
    report: &mut TableReport,
) -> Result<(), VerifyError> {
    merge(
        source.rows(source_scan(KeyRange::Null)),
        replica.rows(replica_scan(KeyRange::Null)),
        source_scan(KeyRange::Null).order,
        keep,
        false,
        report,
        (source.label(), replica.label()),
    )
    .await
}

/// `range` (inclusive) cut into at most `factor` contiguous ranges of about equal width.
fn split((lo, hi): (i64, i64), factor: u64) -> Vec<(i64, i64)> {
    let width = (hi as i128 - lo as i128) + 1;
    let parts = (factor.max(2) as i128).min(width);
    let step = (width + parts - 1) / parts;
    let mut out = Vec::with_capacity(parts as usize);
    let mut start = lo as i128;
    while start <= hi as i128 {
        let end = (start + step - 1).min(hi as i128);
        out.push((start as i64, end as i64));
        start = end + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_the_range_once() {
        for (range, factor) in [
            ((1, 100), 32),
            ((1, 1), 32),
            ((-5, 5), 3),
            ((i64::MIN, i64::MAX), 32),
            ((0, 31), 32),
        ] {
            let parts = split(range, factor);
            assert!(parts.len() as u64 <= factor, "{range:?}: {parts:?}");
            assert_eq!(parts.first().unwrap().0, range.0);
            assert_eq!(parts.last().unwrap().1, range.1);
            for w in parts.windows(2) {
                assert_eq!(w[0].1 as i128 + 1, w[1].0 as i128, "{range:?}: {parts:?}");
            }
        }
    }
}
