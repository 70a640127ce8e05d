//! The store-independent half of verify: the "read rows back in key order" abstraction a store
//! implements, and the merge-join that counts matching, missing, extra and different rows.

use super::{TableReport, VerifyError, quote_ident};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use std::cmp::Ordering;
use std::fmt;
use std::future::Future;

/// A table as schema and name, both exact (case-sensitive, unquoted).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    /// Parses a `--table` argument: `schema.table`, `table` (schema `public`), with either part
    /// optionally double-quoted (`""` inside quotes is one quote) so that names may contain dots.
    pub fn parse_arg(arg: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = arg;
        loop {
            let part;
            if let Some(quoted) = rest.strip_prefix('"') {
                let mut name = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    if c == '"' {
                        if quoted[i + 1..].starts_with('"') {
                            name.push('"');
                            chars.next();
                        } else {
                            end = Some(i + 1);
                            break;
                        }
                    } else {
                        name.push(c);
                    }
                }
                let end = end.ok_or("a double quote is not closed")?;
                part = name;
                rest = &quoted[end..];
                if !(rest.is_empty() || rest.starts_with('.')) {
                    return Err("a quoted name must be followed by `.` or the end".into());
                }
            } else {
                let end = rest.find('.').unwrap_or(rest.len());
                part = rest[..end].to_string();
                rest = &rest[end..];
            }
            if part.is_empty() {
                return Err("is not SCHEMA.TABLE (a part is empty)".into());
            }
            parts.push(part);
            match rest.strip_prefix('.') {
                Some(r) => rest = r,
                None => break,
            }
        }
        match <[String; 2]>::try_from(parts) {
            Ok([schema, name]) => Ok(Self { schema, name }),
            Err(parts) if parts.len() == 1 => Ok(Self {
                schema: "public".into(),
                name: parts.into_iter().next().unwrap_or_default(),
            }),
            Err(_) => Err(
                "is not SCHEMA.TABLE (more than one dot: double-quote a name that contains one)"
                    .into(),
            ),
        }
    }

    /// `"schema"."name"`, for SQL.
    pub fn sql(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// Quotes a part only when an SQL user would have to, so the common case reads plainly and the
/// output can be pasted back into `--table`.
impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            display_ident(&self.schema),
            display_ident(&self.name)
        )
    }
}

/// A name as an SQL user would write it: bare when folding to lower case cannot change it.
pub(crate) fn display_ident(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain { s.to_string() } else { quote_ident(s) }
}

/// `time with time zone`, with or without a precision (`time(3) with time zone`).
pub(crate) fn is_timetz(type_name: &str) -> bool {
    type_name.starts_with("time")
        && !type_name.starts_with("timestamp")
        && type_name.ends_with("with time zone")
}

/// What decides how a key column may be ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyType {
    /// smallint, integer, bigint.
    Integer,
    Uuid,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    pub name: String,
    /// As the store declares it, for messages.
    pub type_name: String,
    pub key_type: KeyType,
}

/// A source table as verify compares it.
#[derive(Debug, Clone)]
pub(crate) struct SourceTable {
    pub name: TableName,
    /// The compared columns: the source's, without `_ripple*` and generated ones.
    pub columns: Vec<Column>,
    /// Primary-key column names in key order; empty when the table has none.
    pub key: Vec<String>,
}

/// How one key column is ordered. Both stores stream in exactly this order and the merge compares
/// keys the same way, whatever collations or types the two sides have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyOrder {
    /// By value, when both sides hold an integer type (lets the store use its primary-key index).
    Integer,
    /// By value, when both sides hold uuid: the same order as its text's bytes.
    Uuid,
    /// By the text form's bytes (`COLLATE "C"`): right for any type pairing.
    Text,
}

impl KeyOrder {
    fn choose(source: KeyType, replica: KeyType) -> Self {
        match (source, replica) {
            (KeyType::Integer, KeyType::Integer) => KeyOrder::Integer,
            (KeyType::Uuid, KeyType::Uuid) => KeyOrder::Uuid,
            _ => KeyOrder::Text,
        }
    }
}

/// One read of a whole table.
pub(crate) struct Scan<'a> {
    pub table: &'a TableName,
    pub key: &'a [String],
    pub order: &'a [KeyOrder],
    /// The columns to fingerprint; `None` reads keys only.
    pub values: Option<&'a [String]>,
    /// Of those, the `timetz` ones, compared as UTC times: Debezium carries a timetz as the same
    /// time of day in UTC, without its original offset.
    pub utc_times: &'a [String],
    /// For a table without a key: each row is keyed by its whole text (`values`), so equal rows
    /// meet in the merge and duplicates pair up one for one.
    pub by_row: bool,
    /// Only the rows whose (single, integer) key is in this range.
    pub range: Option<KeyRange>,
}

/// Part of the key space of a single integer key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyRange {
    /// From the first value to the second, both included.
    Between(i64, i64),
    /// The rows whose key is NULL (a replica table without a primary key may hold some).
    Null,
}

/// A segment's checksum: its rows, and the exact sum of a 64-bit hash of each row's text (the
/// text the merge-join fingerprints). Equal segments hold the same rows but for a chance of about
/// 2^-64.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Checksum {
    pub rows: u64,
    pub sum: String,
}

/// A key: the text form of each key column (`None` for NULL, which sorts last).
pub(crate) type Key = Vec<Option<String>>;

/// What a comparison keeps beside its counts.
#[derive(Clone, Copy)]
pub(crate) struct Keep<'a> {
    /// Sample keys per kind of difference, for people.
    pub samples: usize,
    /// Keys of differing rows kept for a repair, at most (0: none).
    pub fixes: usize,
    /// Counts the source rows read.
    pub progress: &'a indicatif::ProgressBar,
    pub bisection: Bisection,
}

/// How a replica table keyed by one integer column is compared: in segments of the key space
/// whose checksums both databases compute, descending only into the segments that differ, and
/// merge-joining the rows of a segment once it holds at most `threshold` rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bisection {
    /// Segments a differing segment is split into.
    pub factor: u64,
    pub threshold: u64,
}

impl Default for Bisection {
    fn default() -> Self {
        Self {
            factor: 32,
            threshold: 16_384,
        }
    }
}

impl Keep<'_> {
    /// Keeps `key` (in the source's key order) for a repair while there is room; `id` is where a
    /// read-back store holds a row the source may not have.
    pub fn fix(&self, report: &mut TableReport, key: &Key, id: Option<&str>) {
        if report.fixes.len() < self.fixes {
            report.fixes.push(super::report::Fix {
                key: key.clone(),
                id: id.map(str::to_string),
            });
        } else if self.fixes > 0 {
            report.fixes_incomplete = true;
        }
    }
}

pub(crate) struct KeyedRow {
    pub key: Key,
    /// md5 (hex) of the PostgreSQL record text `ROW(v1::text, v2::text, …)::text` of the scanned
    /// values, so that any store can produce one comparable with the source's.
    pub fingerprint: Option<String>,
}

pub(crate) type RowStream<'a> = BoxStream<'a, Result<KeyedRow, VerifyError>>;

/// A store verify can read rows back from. Implemented for PostgreSQL; another kind of store is
/// another implementation, and the merge below works unchanged.
pub(crate) trait RowStore: Sync {
    /// Where the store is, for messages (any password masked).
    fn label(&self) -> &str;

    /// The table's columns in this store, or `None` when it has no such table.
    fn columns(
        &self,
        table: &TableName,
    ) -> impl Future<Output = Result<Option<Vec<Column>>, VerifyError>> + Send;

    /// Every row of the table as its key and a fingerprint of `scan.values`, ascending by `scan.order`
    /// column by column (NULLs last). Must stream: tables may not fit in memory.
    fn rows<'a>(&'a self, scan: Scan<'a>) -> RowStream<'a>;

    fn count(&self, table: &TableName) -> impl Future<Output = Result<u64, VerifyError>> + Send;

    /// The smallest and largest value of an integer key column (`None`: no rows).
    fn key_bounds(
        &self,
        table: &TableName,
        key: &str,
    ) -> impl Future<Output = Result<Option<(i64, i64)>, VerifyError>> + Send;

    /// The checksum of the rows `scan` reads in `scan.range`, computed in the store.
    fn checksum(
        &self,
        scan: Scan<'_>,
    ) -> impl Future<Output = Result<Checksum, VerifyError>> + Send;
}

/// Which source columns a replica holds, and under which names (a route may leave some out or
/// rename them). Key columns are always held.
#[derive(Debug, Clone)]
pub(crate) struct ColumnMap {
    pub pairs: Vec<(String, String)>,
}

impl ColumnMap {
    pub fn identity(table: &SourceTable) -> Self {
        Self {
            pairs: table
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.name.clone()))
                .collect(),
        }
    }

    pub(crate) fn replica_name<'a>(&'a self, source: &'a str) -> &'a str {
        self.pairs
            .iter()
            .find(|(s, _)| s == source)
            .map_or(source, |(_, r)| r)
    }
}

/// Compares one source table with its counterpart in `replica`.
pub(crate) async fn compare_table<S: RowStore, R: RowStore>(
    source: &S,
    replica: &R,
    table: &SourceTable,
    target: &TableName,
    target_columns: Option<Vec<Column>>,
    columns: &ColumnMap,
    keep: Keep<'_>,
) -> Result<TableReport, VerifyError> {
    let mut report = TableReport {
        table: table.name.to_string(),
        target: target.to_string(),
        key_columns: table.key.clone(),
        ..Default::default()
    };
    if table.key.is_empty() {
        compare_keyless(
            source,
            replica,
            table,
            target,
            target_columns,
            columns,
            Keep { fixes: 0, ..keep },
            &mut report,
        )
        .await?;
        return Ok(report);
    }
    let source_columns: Vec<String> = columns.pairs.iter().map(|(s, _)| s.clone()).collect();
    let replica_columns: Vec<String> = columns.pairs.iter().map(|(_, r)| r.clone()).collect();
    let replica_key: Vec<String> = table
        .key
        .iter()
        .map(|k| columns.replica_name(k).to_string())
        .collect();
    let source_key_type = |k: &str| {
        table
            .columns
            .iter()
            .find(|c| c.name == k)
            .map_or(KeyType::Other, |c| c.key_type)
    };

    let Some(target_columns) = target_columns else {
        report.missing_table = true;
        // Streamed like any comparison (against nothing) so the missing rows get sample keys.
        let order: Vec<KeyOrder> = table
            .key
            .iter()
            .map(|k| KeyOrder::choose(source_key_type(k), source_key_type(k)))
            .collect();
        let left = source.rows(Scan {
            table: &table.name,
            key: &table.key,
            order: &order,
            values: None,
            utc_times: &[],
            by_row: false,
            range: None,
        });
        let right: RowStream<'_> = Box::pin(futures::stream::empty());
        let labels = (source.label(), replica.label());
        merge(left, right, &order, keep, false, &mut report, labels).await?;
        return Ok(report);
    };

    report.missing_columns = replica_columns
        .iter()
        .filter(|name| !target_columns.iter().any(|t| &t.name == *name))
        .cloned()
        .collect();
    let missing_key: Vec<&String> = replica_key
        .iter()
        .filter(|k| report.missing_columns.contains(k))
        .collect();
    if !missing_key.is_empty() {
        report.problem = Some(format!(
            "the replica table {} lacks key column(s) {}, so its rows cannot be matched by key",
            target,
            join_names(&missing_key)
        ));
        report.source_rows = source.count(&table.name).await?;
        report.replica_rows = replica.count(target).await?;
        return Ok(report);
    }
    let order: Vec<KeyOrder> = table
        .key
        .iter()
        .zip(&replica_key)
        .map(|(k, rk)| {
            let replica_type = target_columns
                .iter()
                .find(|c| &c.name == rk)
                .map_or(KeyType::Other, |c| c.key_type);
            KeyOrder::choose(source_key_type(k), replica_type)
        })
        .collect();
    // Without every column on the replica no row can be equal; keys alone still tell missing and
    // extra rows apart.
    let schema_differs = !report.missing_columns.is_empty();
    let (source_utc, replica_utc) = utc_columns(table, columns);
    if order == [KeyOrder::Integer] && !schema_differs {
        let scan = |table, key, values, utc_times, range| Scan {
            table,
            key,
            order: &order,
            values: Some(values),
            utc_times,
            by_row: false,
            range: Some(range),
        };
        super::segments::compare(
            (source, replica),
            |range| scan(&table.name, &table.key, &source_columns, &source_utc, range),
            |range| scan(target, &replica_key, &replica_columns, &replica_utc, range),
            (&table.key[0], &replica_key[0]),
            keep,
            &mut report,
        )
        .await?;
        return Ok(report);
    }
    let left = source.rows(Scan {
        table: &table.name,
        key: &table.key,
        order: &order,
        values: (!schema_differs).then_some(source_columns.as_slice()),
        utc_times: &source_utc,
        by_row: false,
        range: None,
    });
    let right = replica.rows(Scan {
        table: target,
        key: &replica_key,
        order: &order,
        values: (!schema_differs).then_some(replica_columns.as_slice()),
        utc_times: &replica_utc,
        by_row: false,
        range: None,
    });
    let labels = (source.label(), replica.label());
    merge(
        left,
        right,
        &order,
        keep,
        schema_differs,
        &mut report,
        labels,
    )
    .await?;
    Ok(report)
}

/// A table without a primary key: the two sides are compared as bags of rows, each row by its
/// whole text, so a row the replica lacks is missing, one it holds too often is extra (the
/// sample is the row itself).
#[allow(clippy::too_many_arguments)]
async fn compare_keyless<S: RowStore, R: RowStore>(
    source: &S,
    replica: &R,
    table: &SourceTable,
    target: &TableName,
    target_columns: Option<Vec<Column>>,
    columns: &ColumnMap,
    keep: Keep<'_>,
    report: &mut TableReport,
) -> Result<(), VerifyError> {
    report.key_columns = vec!["row".into()];
    let Some(target_columns) = target_columns else {
        report.missing_table = true;
        report.source_rows = source.count(&table.name).await?;
        report.missing = report.source_rows;
        return Ok(());
    };
    report.missing_columns = columns
        .pairs
        .iter()
        .map(|(_, r)| r)
        .filter(|name| !target_columns.iter().any(|t| &t.name == *name))
        .cloned()
        .collect();
    if !report.missing_columns.is_empty() {
        report.problem = Some(format!(
            "the source table {} has no primary key and the replica table {target} lacks columns, so no row can match",
            table.name
        ));
        report.source_rows = source.count(&table.name).await?;
        report.replica_rows = replica.count(target).await?;
        report.missing = report.source_rows;
        report.extra = report.replica_rows;
        return Ok(());
    }
    let (source_columns, replica_columns): (Vec<String>, Vec<String>) =
        columns.pairs.iter().cloned().unzip();
    let (source_utc, replica_utc) = utc_columns(table, columns);
    let order = [KeyOrder::Text];
    let left = source.rows(Scan {
        table: &table.name,
        key: &[],
        order: &order,
        values: Some(&source_columns),
        utc_times: &source_utc,
        by_row: true,
        range: None,
    });
    let right = replica.rows(Scan {
        table: target,
        key: &[],
        order: &order,
        values: Some(&replica_columns),
        utc_times: &replica_utc,
        by_row: true,
        range: None,
    });
    let labels = (source.label(), replica.label());
    merge(left, right, &order, keep, false, report, labels).await
}

/// The `timetz` columns, by their source and replica names: compared as UTC times.
pub(crate) fn utc_columns(table: &SourceTable, columns: &ColumnMap) -> (Vec<String>, Vec<String>) {
    let timetz = |name: &String| {
        table
            .columns
            .iter()
            .any(|c| &c.name == name && is_timetz(&c.type_name))
    };
    columns
        .pairs
        .iter()
        .filter(|(s, _)| timetz(s))
        .cloned()
        .unzip()
}

fn join_names(names: &[&String]) -> String {
    names
        .iter()
        .map(|n| display_ident(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compares two keys in the order both streams are sorted by.
pub(crate) fn compare_keys(a: &Key, b: &Key, order: &[KeyOrder]) -> Ordering {
    for ((x, y), how) in a.iter().zip(b).zip(order) {
        let o = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => match how {
                KeyOrder::Integer => match (x.parse::<i128>(), y.parse::<i128>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    _ => x.as_bytes().cmp(y.as_bytes()),
                },
                KeyOrder::Uuid | KeyOrder::Text => x.as_bytes().cmp(y.as_bytes()),
            },
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// One input of the merge: the row under consideration and the key of the one before it.
struct Side<'a> {
    rows: RowStream<'a>,
    head: Option<KeyedRow>,
    last: Option<Key>,
    label: &'a str,
}

impl<'a> Side<'a> {
    /// Moves past `head`, checking that the stream really is in key order: if a store sorted in any
    /// other way, the merge would silently report wrong counts.
    async fn advance(&mut self, order: &[KeyOrder], table: &str) -> Result<(), VerifyError> {
        if let Some(row) = self.head.take() {
            self.last = Some(row.key);
        }
        self.head = self.rows.try_next().await?;
        if let (Some(head), Some(last)) = (&self.head, &self.last)
            && compare_keys(&head.key, last, order) == Ordering::Less
        {
            return Err(VerifyError::OutOfOrder {
                table: table.to_string(),
                store: self.label.to_string(),
                detail: format!("{:?} came after {:?}", head.key, last),
            });
        }
        Ok(())
    }
}

/// Merge-joins the two sorted streams into the report's counts and samples. A replica without a
/// unique key may hold a key twice: the second copy counts as extra.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn merge(
    source: RowStream<'_>,
    replica: RowStream<'_>,
    order: &[KeyOrder],
    keep: Keep<'_>,
    all_differ: bool,
    report: &mut TableReport,
    (source_label, replica_label): (&str, &str),
) -> Result<(), VerifyError> {
    let mut left = Side {
        rows: source.inspect_ok(|_| keep.progress.inc(1)).boxed(),
        head: None,
        last: None,
        label: source_label,
    };
    let mut right = Side {
        rows: replica,
        head: None,
        last: None,
        label: replica_label,
    };
    let (source_name, target_name) = (report.table.clone(), report.target.clone());
    left.advance(order, &source_name).await?;
    right.advance(order, &target_name).await?;
    let sample = |into: &mut Vec<Key>, key: &Key| {
        if into.len() < keep.samples {
            into.push(key.clone());
        }
    };
    loop {
        let step = match (&left.head, &right.head) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(l), Some(r)) => compare_keys(&l.key, &r.key, order),
        };
        match step {
            Ordering::Less => {
                let row = left.head.as_ref().expect("source row");
                report.source_rows += 1;
                report.missing += 1;
                sample(&mut report.samples.missing, &row.key);
                keep.fix(report, &row.key, None);
                left.advance(order, &source_name).await?;
            }
            Ordering::Greater => {
                let row = right.head.as_ref().expect("replica row");
                report.replica_rows += 1;
                report.extra += 1;
                sample(&mut report.samples.extra, &row.key);
                keep.fix(report, &row.key, None);
                right.advance(order, &target_name).await?;
            }
            Ordering::Equal => {
                let (l, r) = (
                    left.head.as_ref().expect("source row"),
                    right.head.as_ref().expect("replica row"),
                );
                report.source_rows += 1;
                report.replica_rows += 1;
                if !all_differ && l.fingerprint == r.fingerprint {
                    report.matching += 1;
                } else {
                    report.different += 1;
                    sample(&mut report.samples.different, &l.key);
                    keep.fix(report, &l.key, None);
                }
                left.advance(order, &source_name).await?;
                right.advance(order, &target_name).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    fn key(parts: &[Option<&str>]) -> Key {
        parts.iter().map(|p| p.map(str::to_string)).collect()
    }

    #[test]
    fn table_args_parse_with_optional_quotes() {
        let t = |s: &str| TableName::parse_arg(s);
        assert_eq!(
            t("public.orders").unwrap(),
            TableName {
                schema: "public".into(),
                name: "orders".into()
            }
        );
        assert_eq!(t("orders").unwrap().schema, "public");
        assert_eq!(t("s.My Table").unwrap().name, "My Table");
        let q = t(r#""my.schema"."Odd ""x"" name""#).unwrap();
        assert_eq!(q.schema, "my.schema");
        assert_eq!(q.name, r#"Odd "x" name"#);
        assert!(t("a.b.c").is_err());
        assert!(t("a.").is_err());
        assert!(t(r#""open.x"#).is_err());
        assert!(t(r#""a"b.c"#).is_err());
    }

    #[test]
    fn display_round_trips_through_parse() {
        for (schema, name) in [
            ("public", "orders"),
            ("public", "Odd \"x\" name"),
            ("my.schema", "t.1"),
            ("S", "_x9"),
        ] {
            let t = TableName {
                schema: schema.into(),
                name: name.into(),
            };
            assert_eq!(TableName::parse_arg(&t.to_string()).unwrap(), t, "{t}");
        }
        assert_eq!(
            TableName {
                schema: "public".into(),
                name: "Odd \"x\" name".into()
            }
            .to_string(),
            r#"public."Odd ""x"" name""#
        );
    }

    #[test]
    fn sql_names_are_always_quoted() {
        let t = TableName {
            schema: "public".into(),
            name: "x\"; DROP TABLE y; --".into(),
        };
        assert_eq!(t.sql(), r#""public"."x""; DROP TABLE y; --""#);
    }

    #[test]
    fn keys_compare_like_the_sql_order() {
        use KeyOrder::*;
        let cmp = |a: &[Option<&str>], b: &[Option<&str>], o: &[KeyOrder]| {
            compare_keys(&key(a), &key(b), o)
        };
        assert_eq!(cmp(&[Some("9")], &[Some("10")], &[Integer]), Ordering::Less);
        assert_eq!(cmp(&[Some("-5")], &[Some("3")], &[Integer]), Ordering::Less);
        assert_eq!(cmp(&[Some("9")], &[Some("10")], &[Text]), Ordering::Greater);
        // Byte order, as COLLATE "C": capitals before lower case, "é" after "z".
        assert_eq!(cmp(&[Some("B")], &[Some("a")], &[Text]), Ordering::Less);
        assert_eq!(cmp(&[Some("z")], &[Some("é")], &[Text]), Ordering::Less);
        assert_eq!(cmp(&[None], &[Some("")], &[Text]), Ordering::Greater);
        assert_eq!(cmp(&[None], &[Some("-1")], &[Integer]), Ordering::Greater);
        assert_eq!(
            cmp(
                &[Some("a"), Some("2")],
                &[Some("a"), Some("10")],
                &[Text, Integer]
            ),
            Ordering::Less
        );
        assert_eq!(
            cmp(
                &[Some("a"), Some("2")],
                &[Some("a"), Some("2")],
                &[Text, Integer]
            ),
            Ordering::Equal
        );
    }
}
