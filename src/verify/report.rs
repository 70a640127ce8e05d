//! What verify found, per sink and table, printed for people (text) or programs (`--json`).

use super::compare::{Key, display_ident};
use serde::Serialize;
use std::fmt;

/// Everything one `ripple verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// One entry per (sink, table) compared.
    pub tables: Vec<TableReport>,
    /// Source tables the default selection left out because a sink has no such table.
    pub absent_tables: Vec<AbsentTable>,
    /// Sinks of kinds verify cannot read back yet.
    pub skipped_sinks: Vec<SkippedSink>,
    pub elapsed_ms: u64,
    /// The most memory the verifying process held, in MiB (Linux only).
    pub peak_rss_mb: Option<u64>,
    /// Display prints JSON instead of text.
    #[serde(skip)]
    pub json: bool,
}

/// The outcome for one source table in one sink.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableReport {
    pub sink: String,
    /// The source table, `schema.table` (parts quoted when SQL would need it).
    pub table: String,
    /// Where the sink keeps it.
    pub target: String,
    /// The primary-key columns the sample keys list values for, in order.
    pub key_columns: Vec<String>,
    pub source_rows: u64,
    pub replica_rows: u64,
    pub matching: u64,
    /// In the source, not in the replica.
    pub missing: u64,
    /// In the replica, not in the source.
    pub extra: u64,
    /// Same key, different values.
    pub different: u64,
    /// The sink has no such table: every source row counts as missing (an empty source table is
    /// still equal: the replica lacks no row).
    pub missing_table: bool,
    /// Source columns the replica table lacks: every row whose key matches counts as different.
    pub missing_columns: Vec<String>,
    /// Why rows could not be compared at all (no primary key, a key column missing).
    pub problem: Option<String>,
    pub samples: Samples,
    pub elapsed_ms: u64,
    /// What `--repair` did, when it ran; the counts above are then those of the comparison after
    /// it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairReport>,
    /// With `--live`: the differences read again until they agreed or the settle time was spent;
    /// the counts above are then what still differed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveReport>,
    /// What `ripple backfill` wrote (nothing was compared: `found` is the source rows read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backfill: Option<RepairReport>,
    /// The differing rows' keys a repair rewrites (not part of the report).
    #[serde(skip)]
    pub(crate) fixes: Vec<Fix>,
    /// More rows differed than `fixes` could hold: a repair fixes the first ones only.
    #[serde(skip)]
    pub(crate) fixes_incomplete: bool,
}

/// What `ripple verify --repair` did for one comparison.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// What the comparison before the repair found: missing, extra and different rows.
    pub found: u64,
    /// Rows written again from a fresh read of the source.
    pub rewritten: u64,
    /// Rows removed from the sink because the source no longer has them.
    pub removed: u64,
    /// Rows the repair could not fix, with the first reasons.
    pub failed: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// What live verification did for one comparison.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveReport {
    /// Differences the pass found.
    pub suspects: u64,
    /// Of those, the ones that agreed when read again (changes the sink had not applied yet).
    pub settled: u64,
    /// Rounds of reading them again.
    pub rounds: u64,
    pub waited_ms: u64,
    /// More rows differed than `--max-memory-mb` holds the keys of: the counts are the pass's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
}

/// A differing row to repair: its key's texts in the source's key order, and where a read-back
/// sink holds it when it was found there (a row the source may not have).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fix {
    pub key: Key,
    pub id: Option<String>,
}

/// Up to `--samples` keys of each kind, each as its key columns' text values (`null` for NULL), in
/// key order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Samples {
    pub missing: Vec<Vec<Option<String>>>,
    pub extra: Vec<Vec<Option<String>>>,
    pub different: Vec<Vec<Option<String>>>,
    /// Where each sample in `different` differs, when the store can say (read-back sinks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub why_different: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AbsentTable {
    pub sink: String,
    pub table: String,
    pub target: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SkippedSink {
    pub sink: String,
    pub kind: String,
    /// Why it was left out.
    pub reason: String,
}

impl TableReport {
    /// The replica holds exactly the source's rows and values.
    pub fn equal(&self) -> bool {
        if let Some(b) = &self.backfill {
            return b.failed == 0;
        }
        self.missing_columns.is_empty()
            && self.problem.is_none()
            && self.missing == 0
            && self.extra == 0
            && self.different == 0
    }

    /// A sample key for people: `id=5`, or `(a=1, b='x y')` for a composite key.
    fn key_text(&self, key: &Key) -> String {
        let parts: Vec<String> = self
            .key_columns
            .iter()
            .zip(key)
            .map(|(column, value)| format!("{}={}", display_ident(column), value_text(value)))
            .collect();
        if parts.len() == 1 {
            parts.into_iter().next().unwrap_or_default()
        } else {
            format!("({})", parts.join(", "))
        }
    }
}

impl VerifyReport {
    /// True when at least one table was compared and every comparison found the stores equal.
    /// Nothing compared proves nothing, so an empty report is not equal.
    pub fn all_equal(&self) -> bool {
        !self.tables.is_empty() && self.tables.iter().all(TableReport::equal)
    }
}

/// Long key values are cut in text output; JSON keeps them whole.
const MAX_VALUE_CHARS: usize = 60;

fn value_text(value: &Option<String>) -> String {
    match value {
        None => "NULL".into(),
        Some(v) if v.chars().count() > MAX_VALUE_CHARS => {
            let cut: String = v.chars().take(MAX_VALUE_CHARS).collect();
            format!("{}…", quote_value(&cut))
        }
        Some(v) => quote_value(v),
    }
}

/// Bare when unambiguous, else single-quoted with quotes doubled (SQL style).
fn quote_value(text: &str) -> String {
    let plain = !text.is_empty()
        && text != "NULL"
        && text
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.:+@/".contains(c));
    if plain {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', "''"))
}

fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.json {
            let text = serde_json::to_string_pretty(self).map_err(|_| fmt::Error)?;
            return writeln!(f, "{text}");
        }
        let mut sink = None;
        for t in &self.tables {
            if sink != Some(&t.sink) {
                writeln!(f, "sink {}:", t.sink)?;
                sink = Some(&t.sink);
            }
            if let Some(b) = &t.backfill {
                let verdict = if b.failed == 0 {
                    "WRITTEN  "
                } else {
                    "FAILED   "
                };
                writeln!(
                    f,
                    "  {verdict} {}  ({}): {} source rows, {} written, {} removed (gone meanwhile), {} not written",
                    t.table,
                    seconds(t.elapsed_ms),
                    b.found,
                    b.rewritten,
                    b.removed,
                    b.failed
                )?;
                for p in &b.problems {
                    writeln!(f, "        {p}")?;
                }
                continue;
            }
            let verdict = if t.equal() { "EQUAL    " } else { "DIFFERENT" };
            let name = if t.target == t.table {
                t.table.clone()
            } else {
                format!("{} -> {}", t.table, t.target)
            };
            writeln!(f, "  {verdict} {name}  ({})", seconds(t.elapsed_ms))?;
            if let Some(l) = &t.live {
                writeln!(
                    f,
                    "      live: {} of {} differences agreed when read again ({} rounds, {}){}",
                    l.settled,
                    l.suspects,
                    l.rounds,
                    seconds(l.waited_ms),
                    if l.incomplete {
                        "; more differed than memory holds keys of"
                    } else {
                        ""
                    }
                )?;
            }
            if let Some(r) = &t.repair {
                writeln!(
                    f,
                    "      repaired: {} rows differed; {} rewritten from the source, {} removed, {} not repaired; then compared again:",
                    r.found, r.rewritten, r.removed, r.failed
                )?;
                for p in &r.problems {
                    writeln!(f, "        {p}")?;
                }
            }
            if let Some(problem) = &t.problem {
                writeln!(f, "      cannot compare rows: {problem}")?;
                writeln!(
                    f,
                    "      source {} rows, replica {} rows",
                    t.source_rows, t.replica_rows
                )?;
                continue;
            }
            if t.missing_table && t.source_rows == 0 {
                writeln!(
                    f,
                    "      the replica has no table {}, but the source table is empty: nothing is missing",
                    t.target
                )?;
            } else if t.missing_table {
                writeln!(
                    f,
                    "      the replica has no table {}: all {} source rows are missing",
                    t.target, t.source_rows
                )?;
            } else {
                if !t.missing_columns.is_empty() {
                    let names: Vec<String> =
                        t.missing_columns.iter().map(|c| display_ident(c)).collect();
                    writeln!(
                        f,
                        "      schema differs: the replica table lacks column(s) {}, so every row with a matching key differs",
                        names.join(", ")
                    )?;
                }
                writeln!(
                    f,
                    "      source {} rows, replica {} rows: matching {}, missing {}, extra {}, different {}",
                    t.source_rows, t.replica_rows, t.matching, t.missing, t.extra, t.different
                )?;
            }
            for (label, count, keys) in [
                ("missing", t.missing, &t.samples.missing),
                ("extra", t.extra, &t.samples.extra),
                ("different", t.different, &t.samples.different),
            ] {
                if !keys.is_empty() {
                    let shown: Vec<String> = keys.iter().map(|k| t.key_text(k)).collect();
                    let more = if count > keys.len() as u64 {
                        ", …"
                    } else {
                        ""
                    };
                    writeln!(f, "      {label}: {}{more}", shown.join("; "))?;
                }
            }
            for (key, why) in t.samples.different.iter().zip(&t.samples.why_different) {
                writeln!(f, "        {}: {why}", t.key_text(key))?;
            }
        }
        let mut absent_by_sink: Vec<(&str, Vec<&str>)> = Vec::new();
        for a in &self.absent_tables {
            match absent_by_sink.last_mut() {
                Some((sink, tables)) if *sink == a.sink => tables.push(&a.target),
                _ => absent_by_sink.push((&a.sink, vec![&a.target])),
            }
        }
        for (sink, tables) in absent_by_sink {
            const SHOWN: usize = 10;
            let more = if tables.len() > SHOWN {
                format!(" and {} more", tables.len() - SHOWN)
            } else {
                String::new()
            };
            let shown: Vec<&str> = tables.iter().take(SHOWN).copied().collect();
            writeln!(
                f,
                "sink {sink}: not checked, no such table in the replica: {}{more} (name a table with --table to count its rows as missing)",
                shown.join(", ")
            )?;
        }
        for s in &self.skipped_sinks {
            writeln!(f, "sink {}: not checked, {}", s.sink, s.reason)?;
        }
        if self.tables.is_empty() {
            return writeln!(
                f,
                "verify: NOT EQUAL: no table was compared (no source table exists in any checked sink)"
            );
        }
        let equal = self.tables.iter().filter(|t| t.equal()).count();
        if self.tables.iter().all(|t| t.backfill.is_some()) {
            return writeln!(
                f,
                "backfill: {equal} of {} table(s) written whole, {}",
                self.tables.len(),
                seconds(self.elapsed_ms)
            );
        }
        let verdict = if self.all_equal() {
            "EQUAL"
        } else {
            "NOT EQUAL"
        };
        writeln!(
            f,
            "verify: {verdict}: {equal} of {} table comparisons equal, {}",
            self.tables.len(),
            seconds(self.elapsed_ms)
        )
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn sample_keys_read_plainly_and_stay_unambiguous() {
        let t = TableReport {
            key_columns: vec!["id".into()],
            ..Default::default()
        };
        assert_eq!(t.key_text(&vec![Some("5".into())]), "id=5");
        let t = TableReport {
            key_columns: vec!["Region".into(), "no".into()],
            ..Default::default()
        };
        assert_eq!(
            t.key_text(&vec![Some("it's, x".into()), None]),
            "(\"Region\"='it''s, x', no=NULL)"
        );
        assert_eq!(
            t.key_text(&vec![Some("NULL".into()), Some("".into())]),
            "(\"Region\"='NULL', no='')"
        );
    }

    #[test]
    fn empty_report_is_not_equal() {
        let r = VerifyReport::default();
        assert!(!r.all_equal());
        assert!(r.to_string().contains("NOT EQUAL"));
    }

    #[test]
    fn json_report_is_json() {
        let r = VerifyReport {
            json: true,
            tables: vec![TableReport {
                sink: "replica".into(),
                table: "public.t".into(),
                target: "public.t".into(),
                key_columns: vec!["id".into()],
                missing: 1,
                samples: Samples {
                    missing: vec![vec![Some("7".into())]],
                    ..Default::default()
                },
                ..Default::default()
            }],
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::from_str(&r.to_string()).unwrap();
        assert_eq!(v["tables"][0]["samples"]["missing"][0][0], "7");
        assert_eq!(v["tables"][0]["missing"], 1);
        assert!(v.get("json").is_none());
    }
}
