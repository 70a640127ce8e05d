//! Mechanics every sink needs inside one `apply` call: splitting the events where the store must
//! act on its own (a truncate, and whatever else the sink picks), and reducing a run of changes to
//! the newest per key with unavailable (TOAST) values merged from the changes it replaces.

use crate::{ChangeEvent, Op, Value};
use std::borrow::Cow;
use std::hash::Hash;

/// A piece of a call's events, in order.
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    /// Events with no split among them; `offset` is the first one's index in the call (what
    /// [`crate::Rejection`]s count from).
    Run {
        events: &'a [ChangeEvent],
        offset: usize,
    },
    /// One event the batch is split at, and its index in the call.
    Split { event: &'a ChangeEvent, at: usize },
}

/// The call's events as runs between the events `split` picks, each split event on its own.
/// Empty runs are left out.
pub fn split_at<'a>(
    events: &'a [ChangeEvent],
    mut split: impl FnMut(&ChangeEvent) -> bool,
) -> Vec<Step<'a>> {
    let mut steps = Vec::new();
    let mut start = 0;
    for (i, e) in events.iter().enumerate() {
        if split(e) {
            if start < i {
                steps.push(Step::Run {
                    events: &events[start..i],
                    offset: start,
                });
            }
            steps.push(Step::Split { event: e, at: i });
            start = i + 1;
        }
    }
    if start < events.len() {
        steps.push(Step::Run {
            events: &events[start..],
            offset: start,
        });
    }
    steps
}

/// [`split_at`] truncates: what came before a truncate is wiped by it, what comes after stays.
pub fn split_at_truncates(events: &[ChangeEvent]) -> Vec<Step<'_>> {
    split_at(events, |e| e.op == Op::Truncate)
}

/// The newest change of each key in a truncate-free run: the index of its event and, for an
/// upsert, its row with every [`Value::Unavailable`] filled from the newest earlier upsert of the
/// key that had it (so the reduced batch ends where applying every event would). In the order
/// of those events. "Newest" is by [`crate::Version`], not position: a stale duplicate can follow
/// the change it duplicates. `key` says how the sink tells keys apart; each result has its key.
pub fn newest_per_key<'a, K: Hash + Eq>(
    events: &'a [ChangeEvent],
    key: impl Fn(&ChangeEvent) -> K,
) -> Vec<Newest<'a, K>> {
    // Per key: the index of its newest event so far, and that event's (merged) row.
    type Kept<'a> = (usize, Option<Cow<'a, [Value]>>);
    let mut last: ahash::AHashMap<K, Kept<'a>> = ahash::AHashMap::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let k = key(e);
        let prev = last.get(&k);
        if let Some((kept, _)) = prev
            && events[*kept].version > e.version
        {
            continue;
        }
        let row = match e.op {
            Op::Upsert => {
                let row = e.row.as_deref().unwrap_or_default();
                Some(match prev {
                    Some((_, Some(prev)))
                        if row.contains(&Value::Unavailable) && prev.len() == row.len() =>
                    {
                        let mut merged = row.to_vec();
                        for (v, p) in merged.iter_mut().zip(prev.iter()) {
                            if *v == Value::Unavailable {
                                *v = p.clone();
                            }
                        }
                        Cow::Owned(merged)
                    }
                    _ => Cow::Borrowed(row),
                })
            }
            _ => None,
        };
        last.insert(k, (i, row));
    }
    let mut newest: Vec<Newest<'a, K>> = last
        .into_iter()
        .map(|(key, (at, row))| Newest { at, key, row })
        .collect();
    newest.sort_by_key(|n| n.at);
    newest
}

/// A key's newest change in a run: see [`newest_per_key`].
#[derive(Debug)]
pub struct Newest<'a, K> {
    /// The event's index in the run.
    pub at: usize,
    pub key: K,
    /// An upsert's row, unavailable values merged; `None` for a delete.
    pub row: Option<Cow<'a, [Value]>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Column, ColumnType, Origin, TableRef, TableSchema, Version};
    use std::sync::Arc;

    fn event(op: Op, id: i64, v: Option<Value>, change: u64) -> ChangeEvent {
        let schema = Arc::new(TableSchema {
            table: TableRef::new("public", "t"),
            columns: ["id", "v"]
                .iter()
                .map(|n| Column {
                    name: n.to_string(),
                    ty: ColumnType::Text,
                    nullable: true,
                    source_type: None,
                    default: None,
                })
                .collect(),
            key: vec![0],
        });
        ChangeEvent {
            schema,
            op,
            row: v.map(|v| vec![Value::Int(id), v]),
            key: vec![Value::Int(id)],
            before: None,
            version: Version { commit: 1, change },
            source_ts_ms: 0,
            origin: Origin {
                topic: Arc::from("t"),
                partition: 0,
                offset: change as i64,
            },
        }
    }

    #[test]
    fn runs_split_at_truncates() {
        let events = vec![
            event(Op::Upsert, 1, Some(Value::Int(1)), 1),
            event(Op::Truncate, 0, None, 2),
            event(Op::Truncate, 0, None, 3),
            event(Op::Upsert, 2, Some(Value::Int(1)), 4),
        ];
        let shape: Vec<String> = split_at_truncates(&events)
            .iter()
            .map(|s| match s {
                Step::Run { events, offset } => format!("run {offset}+{}", events.len()),
                Step::Split { at, .. } => format!("split {at}"),
            })
            .collect();
        assert_eq!(shape, ["run 0+1", "split 1", "split 2", "run 3+1"]);
    }

    #[test]
    fn the_newest_change_per_key_wins_with_unavailable_values_merged() {
        let events = vec![
            event(Op::Upsert, 1, Some(Value::Text("a".into())), 1),
            event(Op::Upsert, 1, Some(Value::Unavailable), 2),
            event(Op::Upsert, 2, Some(Value::Text("b".into())), 5),
            // A stale duplicate after the change it duplicates.
            event(Op::Upsert, 2, Some(Value::Text("old".into())), 4),
            event(Op::Delete, 3, None, 6),
        ];
        let newest = newest_per_key(&events, |e| format!("{:?}", e.key));
        let got: Vec<(usize, Option<Vec<Value>>)> = newest
            .into_iter()
            .map(|n| (n.at, n.row.map(|r| r.into_owned())))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, Some(vec![Value::Int(1), Value::Text("a".into())])),
                (2, Some(vec![Value::Int(2), Value::Text("b".into())])),
                (4, None),
            ]
        );
    }
}
