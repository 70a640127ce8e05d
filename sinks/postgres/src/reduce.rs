//! Reduction: a truncate-free run of changes grouped for one statement each, reduced to the newest
//! change per key (with unavailable TOAST values merged, `ripple_sink::segment`), or kept whole for
//! writing one by one; and a group split by key over several connections.

use crate::encode::to_text;
use ripple_sink::{ChangeEvent, ColumnType, Op, TableSchema, Value, Version};
use std::borrow::Cow;
use std::sync::Arc;

pub struct Group<'a> {
    pub schema: &'a Arc<TableSchema>,
    /// Columns that no upsert of this group carries (unchanged TOAST values): left as they are.
    pub unavailable: Vec<bool>,
    /// Rows with the version of the change that produced them.
    pub upserts: Vec<(Cow<'a, [Value]>, Version)>,
    pub deletes: Vec<&'a ChangeEvent>,
    pub(crate) first: &'a ChangeEvent,
    /// A hash of each upsert's and each delete's key, in order: see `split`.
    pub(crate) upsert_keys: Vec<u64>,
    pub(crate) delete_keys: Vec<u64>,
    /// The index, in the events `reduce` was given, of the change behind each upsert and delete.
    pub(crate) upsert_at: Vec<usize>,
    pub(crate) delete_at: Vec<usize>,
}

impl<'a> Group<'a> {
    fn empty(schema: &'a Arc<TableSchema>, first: &'a ChangeEvent, unavailable: Vec<bool>) -> Self {
        Group {
            schema,
            unavailable,
            upserts: Vec::new(),
            deletes: Vec::new(),
            first,
            upsert_keys: Vec::new(),
            delete_keys: Vec::new(),
            upsert_at: Vec::new(),
            delete_at: Vec::new(),
        }
    }

    pub fn first_event(&self) -> &'a ChangeEvent {
        self.first
    }

    /// Splits the group into `n` by key, so each part can be written by its own connection: a
    /// key's change is in exactly one part, and parts share no row.
    pub fn split(self, n: usize) -> Vec<Group<'a>> {
        let mut parts: Vec<Group<'a>> = (0..n)
            .map(|_| Group::empty(self.schema, self.first, self.unavailable.clone()))
            .collect();
        let upserts = self.upserts.into_iter().zip(self.upsert_keys);
        for ((u, k), at) in upserts.zip(self.upsert_at) {
            let p = &mut parts[(k % n as u64) as usize];
            p.upserts.push(u);
            p.upsert_keys.push(k);
            p.upsert_at.push(at);
        }
        let deletes = self.deletes.into_iter().zip(self.delete_keys);
        for ((d, k), at) in deletes.zip(self.delete_at) {
            let p = &mut parts[(k % n as u64) as usize];
            p.deletes.push(d);
            p.delete_keys.push(k);
            p.delete_at.push(at);
        }
        parts
    }
}

/// Groups a truncate-free run of events without reducing it: every change stays, for writing one
/// by one. Order between the groups does not matter: every write is guarded by version, so the
/// changes of one key land as they would in order, and a refused one leaves the key as the
/// changes before it made it.
pub fn singles(events: &[ChangeEvent]) -> Vec<Group<'_>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let unavailable: Vec<bool> = match (&e.op, &e.row) {
            (Op::Upsert, Some(r)) => r.iter().map(|v| *v == Value::Unavailable).collect(),
            _ => Vec::new(),
        };
        let delete = e.op != Op::Upsert;
        let slot = groups.iter().position(|g| {
            Arc::ptr_eq(g.schema, &e.schema)
                && if delete {
                    g.upserts.is_empty()
                } else {
                    g.deletes.is_empty() && g.unavailable == unavailable
                }
        });
        let g = match slot {
            Some(s) => &mut groups[s],
            None => {
                groups.push(Group::empty(&e.schema, e, unavailable));
                groups.last_mut().expect("just pushed")
            }
        };
        if delete {
            g.deletes.push(e);
            g.delete_keys.push(0);
            g.delete_at.push(i);
        } else {
            g.upserts.push((
                Cow::Borrowed(e.row.as_deref().unwrap_or_default()),
                e.version,
            ));
            g.upsert_keys.push(0);
            g.upsert_at.push(i);
        }
    }
    groups
}

/// Reduces a truncate-free run of events to the newest change per key and groups the result.
pub fn reduce(events: &[ChangeEvent]) -> Vec<Group<'_>> {
    // Keys compare as the replica's text, so values the replica cannot tell apart are one key.
    let newest = ripple_sink::segment::newest_per_key(events, |e| {
        e.key
            .iter()
            .map(|v| to_text(v, &ColumnType::Text))
            .collect::<Vec<Option<String>>>()
    });
    let hasher = ahash::RandomState::with_seeds(1, 2, 3, 4);
    let finals = newest
        .into_iter()
        .map(|n| (n.at, n.row, hasher.hash_one(&n.key)));

    let mut groups: Vec<Group<'_>> = Vec::new();
    for (i, row, key_hash) in finals {
        let e = &events[i];
        let unavailable: Vec<bool> = match &row {
            Some(r) => r.iter().map(|v| *v == Value::Unavailable).collect(),
            None => Vec::new(),
        };
        let slot = groups.iter().position(|g| {
            Arc::ptr_eq(g.schema, &e.schema)
                && (row.is_none() || g.upserts.is_empty() || g.unavailable == unavailable)
        });
        let g = match slot {
            Some(s) => &mut groups[s],
            None => {
                groups.push(Group::empty(&e.schema, e, Vec::new()));
                groups.last_mut().expect("just pushed")
            }
        };
        match row {
            Some(r) => {
                if g.upserts.is_empty() {
                    g.unavailable = unavailable;
                }
                g.upserts.push((r, e.version));
                g.upsert_keys.push(key_hash);
                g.upsert_at.push(i);
            }
            None => {
                g.deletes.push(e);
                g.delete_keys.push(key_hash);
                g.delete_at.push(i);
            }
        }
    }
    groups
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ripple_sink::{Column, Origin, TableRef};

    /// A table `public.t (id int4 key, note text)`, for this crate's unit tests.
    pub(crate) fn schema() -> Arc<TableSchema> {
        let col = Column::new;
        Arc::new(TableSchema {
            table: TableRef::new("public", "t"),
            columns: vec![col("id", ColumnType::Int32), col("note", ColumnType::Text)],
            key: vec![0],
        })
    }

    fn ev(schema: &Arc<TableSchema>, op: Op, id: i64, note: Option<Value>) -> ChangeEvent {
        ChangeEvent {
            schema: schema.clone(),
            op,
            row: note.map(|n| vec![Value::Int(id), n]),
            key: vec![Value::Int(id)],
            before: None,
            version: Version::default(),
            source_ts_ms: 0,
            origin: Origin {
                topic: Arc::from("t"),
                partition: 0,
                offset: 0,
            },
        }
    }

    #[test]
    fn last_change_per_key_wins() {
        let s = schema();
        let events = vec![
            ev(&s, Op::Upsert, 1, Some(Value::Text("a".into()))),
            ev(&s, Op::Upsert, 2, Some(Value::Text("b".into()))),
            ev(&s, Op::Delete, 1, None),
            ev(&s, Op::Upsert, 2, Some(Value::Text("c".into()))),
        ];
        let groups = reduce(&events);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].deletes.len(), 1);
        assert_eq!(groups[0].upserts.len(), 1);
        assert_eq!(groups[0].upserts[0].0[1], Value::Text("c".into()));
    }

    #[test]
    fn split_puts_each_key_in_one_part_and_keeps_every_change() {
        let s = schema();
        let mut events = Vec::new();
        for id in 0..300 {
            events.push(ev(&s, Op::Upsert, id, Some(Value::Text(format!("v{id}")))));
        }
        for id in (0..300).step_by(3) {
            events.push(ev(&s, Op::Delete, id, None));
        }
        let groups = reduce(&events);
        let (ups, dels): (usize, usize) = (groups[0].upserts.len(), groups[0].deletes.len());
        assert_eq!((ups, dels), (200, 100));
        let parts = groups.into_iter().next().unwrap().split(3);
        assert_eq!(parts.iter().map(|p| p.upserts.len()).sum::<usize>(), 200);
        assert_eq!(parts.iter().map(|p| p.deletes.len()).sum::<usize>(), 100);
        assert!(
            parts.iter().all(|p| !p.upserts.is_empty()),
            "keys spread over the parts"
        );
        // A key's part does not depend on whether its last change was an upsert or a delete.
        let part_of = |id: i64| {
            parts.iter().position(|p| {
                p.upserts.iter().any(|(r, _)| r[0] == Value::Int(id))
                    || p.deletes.iter().any(|e| e.key[0] == Value::Int(id))
            })
        };
        let again = reduce(&events[..300]).into_iter().next().unwrap().split(3);
        for id in (0..300).step_by(3) {
            let upsert_part = again
                .iter()
                .position(|p| p.upserts.iter().any(|(r, _)| r[0] == Value::Int(id)));
            assert_eq!(part_of(id), upsert_part, "key {id}");
        }
    }

    #[test]
    fn a_stale_duplicate_later_in_the_batch_does_not_win() {
        let s = schema();
        let mut newer = ev(&s, Op::Upsert, 1, Some(Value::Text("new".into())));
        newer.version = Version {
            commit: 9,
            change: 1,
        };
        let mut stale = ev(&s, Op::Upsert, 1, Some(Value::Text("old".into())));
        stale.version = Version {
            commit: 3,
            change: 1,
        };
        let events = vec![newer, stale];
        let groups = reduce(&events);
        assert_eq!(groups[0].upserts[0].0[1], Value::Text("new".into()));
    }

    #[test]
    fn unavailable_takes_the_earlier_value_in_the_batch() {
        let s = schema();
        let events = vec![
            ev(&s, Op::Upsert, 1, Some(Value::Text("big".into()))),
            ev(&s, Op::Upsert, 1, Some(Value::Unavailable)),
        ];
        let groups = reduce(&events);
        assert_eq!(groups[0].upserts[0].0[1], Value::Text("big".into()));
        assert_eq!(groups[0].unavailable, vec![false, false]);
    }

    #[test]
    fn unavailable_columns_form_their_own_group() {
        let s = schema();
        let events = vec![
            ev(&s, Op::Upsert, 1, Some(Value::Unavailable)),
            ev(&s, Op::Upsert, 2, Some(Value::Text("x".into()))),
        ];
        let groups = reduce(&events);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].unavailable, vec![false, true]);
    }
}
