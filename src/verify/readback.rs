//! Verify for sinks that are not SQL (Redis, the search index), in memory bounded whatever the
//! table's size. Source rows are read in chunks; each row's stored copy is fetched by id and both
//! are decoded by verify's own rules (`canonical`). Rows the source no longer has are found without
//! holding the source's ids: both sides' ids are summed into hash buckets (a count and a sum of
//! hashes each), and only the buckets whose sums differ are read again, id by id, as many at a time
//! as the memory budget allows.

use super::canonical::{self, ColumnKind, Field, Rules};
use super::compare::{Keep, KeyType, SourceTable};
use super::live::State;
use super::postgres::PgStore;
use super::report::Fix;
use super::{TableReport, VerifyError};
use crate::route::{RouteOptions, Shape};
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use futures::TryStreamExt;
use futures::stream::BoxStream;
use ripple_sink::{
    ChangeEvent, Column, ColumnType, Op, Origin, ReadBack, SortBy, SortKey, SortedPage, StoredRow,
    TableRef, TableSchema, Target, Value, Version,
};
use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;

/// Rows asked about in one round trip, at most.
const CHUNK_ROWS: usize = 500;

/// What an id costs held in the descent's set, beyond its own bytes (the set's slot, the string's
/// header, the allocator's rounding).
const ID_OVERHEAD: usize = 64;

/// How much memory verify may use for one comparison, and how it is shared out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub bytes: usize,
}

impl Budget {
    /// Source text held for one chunk: an eighth of the budget (the stored copies fetched for it
    /// take about as much again).
    fn chunk_bytes(&self) -> usize {
        (self.bytes / 8).max(64 << 10)
    }

    /// Bytes of ids one descent pass may hold.
    fn descent_bytes(&self) -> usize {
        self.bytes / 2
    }
}

/// Per-bucket sums of a set of ids: how many, and the wrapping sum of their hashes. Two sets of
/// ids differ in a bucket exactly when its sums differ, but for a chance of 2^-64.
struct Buckets {
    count: Vec<u32>,
    sum: Vec<u64>,
}

type IdHasher = BuildHasherDefault<DefaultHasher>;

fn id_hash(id: &str) -> u64 {
    IdHasher::default().hash_one(id)
}

impl Buckets {
    /// About eight rows a bucket for the table's estimated size, from 1,024 to 2^20 buckets (12 MB).
    fn for_rows(estimate: u64) -> Self {
        let n = (estimate / 8).clamp(1024, 1 << 20).next_power_of_two() as usize;
        Self {
            count: vec![0; n],
            sum: vec![0; n],
        }
    }

    fn bucket(&self, hash: u64) -> usize {
        (hash % self.count.len() as u64) as usize
    }

    fn add(&mut self, id: &str) {
        let h = id_hash(id);
        let b = self.bucket(h);
        self.count[b] = self.count[b].wrapping_add(1);
        self.sum[b] = self.sum[b].wrapping_add(h);
    }

    fn same_size(&self) -> Self {
        Self {
            count: vec![0; self.count.len()],
            sum: vec![0; self.sum.len()],
        }
    }

    /// The buckets where the two differ.
    fn differing(&self, other: &Self) -> Vec<usize> {
        (0..self.count.len())
            .filter(|&b| self.count[b] != other.count[b] || self.sum[b] != other.sum[b])
            .collect()
    }
}

/// Source rows, a chunk at a time.
struct Chunks<'a> {
    rows: BoxStream<'a, Result<Vec<Option<String>>, VerifyError>>,
    max_bytes: usize,
}

impl Chunks<'_> {
    /// The next chunk; `None` after the last row.
    async fn next(&mut self) -> Result<Option<Vec<Vec<Option<String>>>>, VerifyError> {
        let mut chunk = Vec::with_capacity(CHUNK_ROWS);
        let mut bytes = 0;
        while chunk.len() < CHUNK_ROWS && bytes < self.max_bytes {
            let Some(texts) = self.rows.try_next().await? else {
                break;
            };
            bytes += texts.iter().flatten().map(String::len).sum::<usize>();
            chunk.push(texts);
        }
        Ok((!chunk.is_empty()).then_some(chunk))
    }
}

/// One compared column: where it is in the source row, its name in the store, how to read it.
struct Compared {
    source: usize,
    stored: String,
    kind: ColumnKind,
}

/// What one comparison reads and how.
struct Plan<'a> {
    source: &'a PgStore,
    sink: &'a dyn ReadBack,
    target: Target<'a>,
    table: &'a SourceTable,
    schema: Arc<TableSchema>,
    shape: Arc<Shape>,
    columns: Vec<Compared>,
    rules: Rules,
    budget: Budget,
}

impl Plan<'_> {
    fn sink_error(&self) -> impl Fn(ripple_sink::SinkError) -> VerifyError + '_ {
        |error| VerifyError::Sink {
            table: self.table.name.to_string(),
            error,
        }
    }

    /// The row's key as the change stream would carry it, after the route's options: all
    /// `row_id` renders the stored id from (key templates and document ids name key columns only).
    fn key_event(&self, texts: &[Option<String>]) -> ChangeEvent {
        let key = self
            .schema
            .key
            .iter()
            .map(|&i| parse_value(texts[i].as_deref(), &self.table.columns[i].type_name))
            .collect();
        self.shape.apply(&ChangeEvent {
            schema: self.schema.clone(),
            op: Op::Delete,
            key,
            row: None,
            before: None,
            version: Version::default(),
            source_ts_ms: 0,
            origin: Origin {
                topic: Arc::from("verify"),
                partition: 0,
                offset: -1,
            },
        })
    }

    fn id(&self, texts: &[Option<String>]) -> Result<String, VerifyError> {
        self.sink
            .row_id(self.target, &self.key_event(texts))
            .map_err(self.sink_error())
    }

    /// The source's rows in chunks of at most `CHUNK_ROWS` or the budget's bytes each.
    fn source_chunks(&self) -> Chunks<'_> {
        Chunks {
            rows: self.source.text_rows(self.table),
            max_bytes: self.budget.chunk_bytes(),
        }
    }

    /// Every id the store lists for the table, page by page.
    async fn each_stored_id(&self, mut on_id: impl FnMut(String)) -> Result<(), VerifyError> {
        let mut cursor = None;
        loop {
            let (page, next) = self
                .sink
                .stored_ids(self.target, cursor)
                .await
                .map_err(self.sink_error())?;
            page.into_iter().for_each(&mut on_id);
            match next {
                Some(c) => cursor = Some(c),
                None => return Ok(()),
            }
        }
    }

    /// Where the stored row differs from the source row, by verify's reading of both; `None` when
    /// it holds the same values. Fields of columns the source no longer has are not looked at.
    fn difference(&self, texts: &[Option<String>], stored: &StoredRow) -> Option<String> {
        let decoded = match Decoded::of(stored) {
            Ok(d) => d,
            Err(why) => return Some(why),
        };
        for c in &self.columns {
            let Some(field) = decoded.field(&c.stored) else {
                continue;
            };
            let source_text = texts[c.source].as_deref();
            if canonical::source(c.kind, source_text, self.rules)
                == canonical::stored(c.kind, field, self.rules)
            {
                continue;
            }
            let shown = |v: Option<&str>| v.map_or("NULL".to_string(), |s| format!("{s:?}"));
            let held = match field {
                Field::Absent => {
                    return Some(ripple_sink::absent_field(&c.stored, shown(source_text)));
                }
                Field::Text(t) => format!("{t:?}"),
                Field::Json(j) => j.to_string(),
            };
            return Some(format!(
                "field {:?}: holds {held}, the source {}",
                c.stored,
                shown(source_text)
            ));
        }
        None
    }

    /// How the key columns sort in the store, when each is an integer or a uuid (the types whose
    /// order a store can share with PostgreSQL's); `None` otherwise.
    fn sort_keys(&self) -> Option<Vec<SortKey>> {
        self.schema
            .key
            .iter()
            .map(|&k| {
                let by = match self.table.columns[k].key_type {
                    KeyType::Integer => SortBy::Integer,
                    KeyType::Uuid => SortBy::Bytes,
                    KeyType::Other => return None,
                };
                let c = self.columns.iter().find(|c| c.source == k)?;
                Some(SortKey {
                    field: c.stored.clone(),
                    by,
                })
            })
            .collect()
    }

    /// How a source row's key compares with a stored row's sort values (a value the store lacks
    /// sorts last).
    fn key_order(
        &self,
        texts: &[Option<String>],
        key: &[SortKey],
        sorted: &[serde_json::Value],
    ) -> std::cmp::Ordering {
        for ((&k, how), value) in self.schema.key.iter().zip(key).zip(sorted) {
            let source = texts[k].as_deref().unwrap_or_default();
            let order = match how.by {
                SortBy::Integer => match (source.parse::<i64>(), value.as_i64()) {
                    (Ok(a), Some(b)) => a.cmp(&b),
                    (_, None) => std::cmp::Ordering::Less,
                    (Err(_), Some(_)) => std::cmp::Ordering::Greater,
                },
                SortBy::Bytes => match value.as_str() {
                    Some(b) => source.as_bytes().cmp(b.as_bytes()),
                    None => std::cmp::Ordering::Less,
                },
            };
            if order.is_ne() {
                return order;
            }
        }
        if sorted.len() < self.schema.key.len() {
            // The store gave fewer sort values than there are key columns: it lacks the rest.
            return std::cmp::Ordering::Less;
        }
        std::cmp::Ordering::Equal
    }

    /// The key's texts of a source row, in the source's key order.
    fn key_of(&self, texts: &[Option<String>]) -> Vec<Option<String>> {
        self.schema.key.iter().map(|&i| texts[i].clone()).collect()
    }

    /// The key a stored row holds, read as its columns' canonical texts (in the source's key
    /// order); `None` parts where the row does not keep a key column (Redis's `string` format).
    fn stored_key(&self, stored: &StoredRow) -> Vec<Option<String>> {
        let decoded = Decoded::of(stored).ok();
        self.schema
            .key
            .iter()
            .map(|&k| {
                let c = self.columns.iter().find(|c| c.source == k)?;
                let field = decoded.as_ref()?.field(&c.stored)?;
                canonical::stored(c.kind, field, self.rules)
            })
            .collect()
    }

    /// For a store that keeps one column per key (Redis's `string`): that column's place among the
    /// compared ones, when its value is NULL and the row therefore has no key.
    fn stores_nothing(&self, texts: &[Option<String>]) -> bool {
        match self.sink.stored_column() {
            Some(name) => self
                .columns
                .iter()
                .find(|c| c.stored == name)
                .is_some_and(|c| texts[c.source].is_none()),
            None => false,
        }
    }
}

impl<'a> Plan<'a> {
    fn new(
        source: &'a PgStore,
        sink: &'a dyn ReadBack,
        target: Target<'a>,
        table: &'a SourceTable,
        options: &RouteOptions,
        budget: Budget,
    ) -> Result<Self, VerifyError> {
        let schema = Arc::new(table_schema(table));
        let shape = options.shape(&schema).map_err(|error| VerifyError::Shape {
            table: table.name.to_string(),
            error,
        })?;
        let columns = shape
            .keep
            .iter()
            .zip(&shape.schema.columns)
            .map(|(&i, c)| Compared {
                source: i,
                stored: c.name.clone(),
                kind: ColumnKind::of(&table.columns[i].type_name),
            })
            .collect();
        Ok(Plan {
            source,
            sink,
            target,
            table,
            schema,
            shape,
            columns,
            rules: Rules {
                non_finite_as_null: sink.stores_non_finite_as_null(),
            },
            budget,
        })
    }

    /// A source row's texts holding only its key (enough for `id`).
    fn key_texts(&self, key: &[Option<String>]) -> Vec<Option<String>> {
        let mut texts = vec![None; self.table.columns.len()];
        for (&i, k) in self.schema.key.iter().zip(key) {
            texts[i] = k.clone();
        }
        texts
    }
}

/// Compares one source table with one read-back sink.
pub(crate) async fn compare_table(
    source: &PgStore,
    sink: &dyn ReadBack,
    target: Target<'_>,
    table: &SourceTable,
    options: &RouteOptions,
    keep: Keep<'_>,
    budget: Budget,
) -> Result<TableReport, VerifyError> {
    let mut report = TableReport {
        table: table.name.to_string(),
        key_columns: table.key.clone(),
        ..Default::default()
    };
    let plan = Plan::new(source, sink, target, table, options, budget)?;
    if table.key.is_empty() {
        compare_keyless(&plan, keep, &mut report).await?;
    } else {
        compare_keyed(&plan, keep, &mut report).await?;
    }
    Ok(report)
}

/// Reads the rows `fixes` name again on both sides and says how each compares now.
pub(crate) async fn recheck(
    source: &PgStore,
    sink: &dyn ReadBack,
    target: Target<'_>,
    table: &SourceTable,
    options: &RouteOptions,
    fixes: &[Fix],
) -> Result<Vec<State>, VerifyError> {
    let plan = Plan::new(
        source,
        sink,
        target,
        table,
        options,
        Budget { bytes: 1 << 20 },
    )?;
    let mut states = Vec::with_capacity(fixes.len());
    for chunk in fixes.chunks(CHUNK_ROWS) {
        let keys: Vec<_> = chunk.iter().map(|f| f.key.clone()).collect();
        let rows = source.rows_by_key(table, &keys).await?;
        let ids = chunk
            .iter()
            .zip(&rows)
            .map(|(fix, row)| match (&fix.id, row) {
                (Some(id), _) => Ok(id.clone()),
                (None, Some(texts)) => plan.id(texts),
                (None, None) => plan.id(&plan.key_texts(&fix.key)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let stored = sink.fetch(target, &ids).await.map_err(plan.sink_error())?;
        for ((fix, row), stored) in chunk.iter().zip(rows).zip(stored) {
            // Found under an id the source row's key does not give: not that row's copy.
            let elsewhere = match (&fix.id, &row) {
                (Some(id), Some(texts)) => &plan.id(texts)? != id,
                _ => false,
            };
            states.push(match (row, stored) {
                (_, Some(_)) if elsewhere => State::Extra,
                (None, None) => State::Equal,
                (Some(texts), None) if plan.stores_nothing(&texts) => State::Equal,
                (Some(_), None) => State::Missing,
                (None, Some(_)) => State::Extra,
                (Some(texts), Some(stored)) => match plan.difference(&texts, &stored) {
                    None => State::Equal,
                    Some(why) => State::Different(Some(why)),
                },
            });
        }
    }
    Ok(states)
}

async fn compare_keyed(
    plan: &Plan<'_>,
    keep: Keep<'_>,
    report: &mut TableReport,
) -> Result<(), VerifyError> {
    if let Some(key) = plan.sort_keys() {
        let first = plan
            .sink
            .sorted_rows(plan.target, &key, None)
            .await
            .map_err(plan.sink_error())?;
        if let Some(first) = first {
            return merge_sorted(plan, &key, first, keep, report).await;
        }
    }
    let estimate = plan.source.estimate_rows(&plan.table.name).await?;
    // The ids the store holds for source rows, bucketed: compared below with all it holds.
    let mut held = Buckets::for_rows(estimate);
    let mut held_rows = 0u64;
    let mut chunks = plan.source_chunks();
    while let Some(chunk) = chunks.next().await? {
        let ids = chunk
            .iter()
            .map(|texts| plan.id(texts))
            .collect::<Result<Vec<_>, _>>()?;
        let stored = plan
            .sink
            .fetch(plan.target, &ids)
            .await
            .map_err(plan.sink_error())?;
        for ((texts, id), stored) in chunk.iter().zip(&ids).zip(stored) {
            report.source_rows += 1;
            let key = || plan.key_of(texts);
            let Some(stored) = stored else {
                if plan.stores_nothing(texts) {
                    report.matching += 1;
                } else {
                    report.missing += 1;
                    if report.samples.missing.len() < keep.samples {
                        report.samples.missing.push(key());
                    }
                    keep.fix(report, &key(), None);
                }
                continue;
            };
            held.add(id);
            held_rows += 1;
            let why = if plan.stores_nothing(texts) {
                Some("a key is held for a NULL value".to_string())
            } else {
                plan.difference(texts, &stored)
            };
            match why {
                None => report.matching += 1,
                Some(why) => {
                    report.different += 1;
                    if report.samples.different.len() < keep.samples {
                        report.samples.different.push(key());
                        report.samples.why_different.push(why);
                    }
                    keep.fix(report, &key(), None);
                }
            }
        }
        keep.progress.inc(chunk.len() as u64);
    }
    report.replica_rows = held_rows;

    // A store that counts exactly and holds as many rows as were found has no others.
    let counted = plan
        .sink
        .count(plan.target)
        .await
        .map_err(plan.sink_error())?;
    if counted == Some(held_rows) {
        return Ok(());
    }
    let mut listed = held.same_size();
    plan.each_stored_id(|id| listed.add(&id)).await?;
    let differing = held.differing(&listed);
    if differing.is_empty() {
        return Ok(());
    }
    tracing::info!(
        table = %plan.table.name,
        buckets = differing.len(),
        of = held.count.len(),
        "reading again the id buckets that differ, to name the rows the source does not have"
    );
    // The buckets' ids a pass may hold: their counts on the store's side, at the id length seen.
    let per_id = ID_OVERHEAD + 48;
    let mut start = 0;
    while start < differing.len() {
        let mut end = start;
        let mut bytes = 0usize;
        while end < differing.len() && (end == start || bytes < plan.budget.descent_bytes()) {
            bytes += (listed.count[differing[end]] as usize + held.count[differing[end]] as usize)
                * per_id;
            end += 1;
        }
        let group: HashSet<usize> = differing[start..end].iter().copied().collect();
        find_extras(plan, &held, &group, keep, report).await?;
        start = end;
    }
    Ok(())
}

/// Both sides in key order, merged in one pass: a store that sorts by the key needs neither reads
/// by id nor a listing of its ids.
async fn merge_sorted(
    plan: &Plan<'_>,
    key: &[SortKey],
    first: SortedPage,
    keep: Keep<'_>,
    report: &mut TableReport,
) -> Result<(), VerifyError> {
    let mut rows = plan.source.text_rows_in_key_order(plan.table);
    let mut source = rows.try_next().await?;
    let mut page = first.rows.into_iter();
    let mut next = first.next;
    let mut stored = page.next();
    let sample = |into: &mut Vec<Vec<Option<String>>>, key: Vec<Option<String>>| {
        if into.len() < keep.samples {
            into.push(key);
        }
    };
    loop {
        // A page may be empty (a window of keys the store holds none of): read on until a row
        // or the end.
        while stored.is_none()
            && let Some(after) = next.take()
        {
            let more = plan
                .sink
                .sorted_rows(plan.target, key, Some(after))
                .await
                .map_err(plan.sink_error())?
                .unwrap_or_default();
            next = more.next;
            page = more.rows.into_iter();
            stored = page.next();
        }
        let order = match (&source, &stored) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(texts), Some((_, _, sorted))) => plan.key_order(texts, key, sorted),
        };
        let id = match (&source, order) {
            (Some(texts), std::cmp::Ordering::Equal) => Some(plan.id(texts)?),
            _ => None,
        };
        match (order, stored.take()) {
            // The store's row under another id than the source row's (one written by hand, say):
            // not the source row's copy.
            (std::cmp::Ordering::Equal, Some((stored_id, row, _)))
                if id.as_ref() != Some(&stored_id) =>
            {
                extra(plan, keep, report, &stored_id, &row);
                stored = page.next();
            }
            (std::cmp::Ordering::Equal, Some((_, row, _))) => {
                let texts = source.take().expect("a source row");
                report.source_rows += 1;
                report.replica_rows += 1;
                match plan.difference(&texts, &row) {
                    None => report.matching += 1,
                    Some(why) => {
                        report.different += 1;
                        if report.samples.different.len() < keep.samples {
                            report.samples.different.push(plan.key_of(&texts));
                            report.samples.why_different.push(why);
                        }
                        keep.fix(report, &plan.key_of(&texts), None);
                    }
                }
                keep.progress.inc(1);
                source = rows.try_next().await?;
                stored = page.next();
            }
            (std::cmp::Ordering::Less, held) => {
                stored = held;
                let texts = source.take().expect("a source row");
                report.source_rows += 1;
                report.missing += 1;
                sample(&mut report.samples.missing, plan.key_of(&texts));
                keep.fix(report, &plan.key_of(&texts), None);
                keep.progress.inc(1);
                source = rows.try_next().await?;
            }
            (std::cmp::Ordering::Greater, Some((stored_id, row, _))) => {
                extra(plan, keep, report, &stored_id, &row);
                stored = page.next();
            }
            (_, None) => unreachable!("a stored row to compare"),
        }
    }
    Ok(())
}

/// Counts a row only the store holds.
fn extra(plan: &Plan<'_>, keep: Keep<'_>, report: &mut TableReport, id: &str, row: &StoredRow) {
    report.extra += 1;
    report.replica_rows += 1;
    if report.samples.extra.len() < keep.samples {
        report.samples.extra.push(vec![Some(id.to_string())]);
    }
    keep.fix(report, &plan.stored_key(row), Some(id));
}

/// One descent pass over a group of buckets: the source's ids in them, then the store's ids in them
/// that are not among those and that the store really holds.
async fn find_extras(
    plan: &Plan<'_>,
    buckets: &Buckets,
    group: &HashSet<usize>,
    keep: Keep<'_>,
    report: &mut TableReport,
) -> Result<(), VerifyError> {
    let in_group = |id: &str| group.contains(&buckets.bucket(id_hash(id)));
    let mut source_ids = HashSet::new();
    let mut chunks = plan.source_chunks();
    while let Some(chunk) = chunks.next().await? {
        for texts in &chunk {
            let id = plan.id(texts)?;
            if in_group(&id) {
                source_ids.insert(id);
            }
        }
    }
    let mut candidates = Vec::new();
    plan.each_stored_id(|id| {
        if in_group(&id) && !source_ids.contains(&id) {
            candidates.push(id);
        }
    })
    .await?;
    drop(source_ids);
    // A key set may name a key that is gone (expired, deleted by hand): only what is stored counts.
    for ids in candidates.chunks(CHUNK_ROWS) {
        let stored = plan
            .sink
            .fetch(plan.target, ids)
            .await
            .map_err(plan.sink_error())?;
        for (id, stored) in ids.iter().zip(stored) {
            let Some(stored) = stored else { continue };
            report.extra += 1;
            report.replica_rows += 1;
            if report.samples.extra.len() < keep.samples {
                report.samples.extra.push(vec![Some(id.clone())]);
            }
            keep.fix(report, &plan.stored_key(&stored), Some(id));
        }
    }
    Ok(())
}

/// A table without a primary key: the sink's rows are keyed by source positions the source does
/// not have, so both sides are compared as bags of rows (each row as the canonical texts of its
/// columns), sorted in memory.
async fn compare_keyless(
    plan: &Plan<'_>,
    keep: Keep<'_>,
    report: &mut TableReport,
) -> Result<(), VerifyError> {
    let samples = keep.samples;
    report.key_columns = vec!["row".into()];
    let row_text = |values: Vec<Option<String>>| {
        serde_json::Value::Array(
            values
                .into_iter()
                .map(|v| v.map_or(serde_json::Value::Null, serde_json::Value::String))
                .collect(),
        )
        .to_string()
    };
    let mut want = Vec::new();
    let mut chunks = plan.source_chunks();
    while let Some(chunk) = chunks.next().await? {
        for texts in &chunk {
            want.push(row_text(
                plan.columns
                    .iter()
                    .map(|c| canonical::source(c.kind, texts[c.source].as_deref(), plan.rules))
                    .collect(),
            ));
        }
        keep.progress.inc(chunk.len() as u64);
    }
    let mut ids = Vec::new();
    plan.each_stored_id(|id| ids.push(id)).await?;
    let mut got = Vec::with_capacity(ids.len());
    for page in ids.chunks(CHUNK_ROWS) {
        let stored = plan
            .sink
            .fetch(plan.target, page)
            .await
            .map_err(plan.sink_error())?;
        for stored in stored.into_iter().flatten() {
            got.push(row_text(stored_values(plan, &stored)));
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

/// A stored row's compared columns, each as its canonical text (an unreadable row as no fields).
fn stored_values(plan: &Plan<'_>, stored: &StoredRow) -> Vec<Option<String>> {
    let decoded = Decoded::of(stored).ok();
    plan.columns
        .iter()
        .map(|c| {
            let field = decoded
                .as_ref()
                .and_then(|d| d.field(&c.stored))
                .unwrap_or(Field::Absent);
            canonical::stored(c.kind, field, plan.rules)
        })
        .collect()
}

/// A stored row with its document parsed, if it is one.
struct Decoded<'a> {
    stored: &'a StoredRow,
    parsed: Option<serde_json::Value>,
}

impl<'a> Decoded<'a> {
    /// Fails, saying why, when a document is not a JSON object.
    fn of(stored: &'a StoredRow) -> Result<Self, String> {
        let parsed = match stored {
            StoredRow::JsonText(text) => Some(
                serde_json::from_str::<serde_json::Value>(text)
                    .map_err(|e| format!("the value is not JSON: {e}"))?,
            ),
            StoredRow::Unreadable(why) => return Err(why.clone()),
            _ => None,
        };
        let decoded = Self { stored, parsed };
        match decoded.document() {
            Some(doc) if !doc.is_object() => Err(format!("the value is not a JSON object: {doc}")),
            _ => Ok(decoded),
        }
    }

    fn document(&self) -> Option<&serde_json::Value> {
        match self.stored {
            StoredRow::Document(doc) => Some(doc),
            _ => self.parsed.as_ref(),
        }
    }

    /// The stored field of a column; `None` when the row does not keep that column at all (the
    /// one-column form holds one).
    fn field(&self, name: &str) -> Option<Field<'_>> {
        if let Some(doc) = self.document() {
            return Some(doc.get(name).map_or(Field::Absent, Field::Json));
        }
        match self.stored {
            StoredRow::Fields(map) => Some(map.get(name).map_or(Field::Absent, |s| Field::Text(s))),
            StoredRow::Text { column, text } => (column == name).then_some(Field::Text(text)),
            StoredRow::JsonText(_) | StoredRow::Document(_) | StoredRow::Unreadable(_) => {
                Some(Field::Absent)
            }
        }
    }
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
