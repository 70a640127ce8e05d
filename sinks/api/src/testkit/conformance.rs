//! The sink conformance suite: what every sink promises in the [`Sink`] contract, checked against
//! its real store. A sink's test gives a [`Store`]: the sink, and the store read by the test's own
//! client (never through the sink's code). Each check uses a table of its own and versions newer
//! than any earlier run's, so the suite can run again on the same store.

use crate::{
    ChangeEvent, Column, ColumnType, FailureKind, Op, Origin, Sink, TableRef, TableSchema, Target,
    Value, Version,
};
use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A row as the store holds it: the suite's table has `id` (int8, the key), `qty` (int4) and
/// `note` (text); both are given as text, `None` for a null or missing field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub qty: Option<String>,
    pub note: Option<String>,
}

impl Stored {
    pub fn new(qty: i64, note: Option<&str>) -> Self {
        Self {
            qty: Some(qty.to_string()),
            note: note.map(str::to_string),
        }
    }
}

/// The sink under test, and its store as the test's own client reads it.
#[async_trait]
pub trait Store: Send + Sync {
    /// The sink under test. The suite's tables are in namespace `public`, named `conformance_*`.
    fn sink(&self) -> &dyn Sink;

    /// A sink of the same kind pointed at an address where nothing answers.
    fn unreachable(&self) -> Arc<dyn Sink>;

    /// What the store holds for `id` of `table`, read without the sink's code; `None` when it
    /// holds nothing for it.
    async fn row(&self, table: &TableRef, id: i64) -> Option<Stored>;

    /// Prepares the store so that an upsert of `id` into `table` is refused for its own data, and
    /// returns the `qty` that upsert carries. A typed store needs no preparation: `qty` out of
    /// int4's range is refused (the default); a store that takes any value prepares the key.
    async fn refuse(&self, _table: &TableRef, _id: i64) -> Value {
        Value::Int(1 << 40)
    }
}

/// Runs every check, and panics naming each one that failed.
pub async fn assert_sink_contract(store: &dyn Store) {
    let mut failed = Vec::new();
    macro_rules! run {
        ($($check:ident),*) => {$(
            if let Err(e) = $check(store).await {
                failed.push(format!("{}: {e}", stringify!($check)));
            }
        )*};
    }
    run!(
        order_within_a_table,
        idempotent_reapply,
        never_back_in_time,
        delete_beats_a_late_older_insert,
        truncate_watermark,
        unavailable_values_kept,
        retriable_and_permanent
    );
    assert!(
        failed.is_empty(),
        "sink {:?} breaks its contract:\n  {}",
        store.sink().name(),
        failed.join("\n  ")
    );
}

type Checked = Result<(), String>;

/// Events of one of the suite's tables, each built with the next version.
struct Table {
    schema: Arc<TableSchema>,
}

/// Versions newer than any earlier run's (microseconds since the epoch, then a counter).
fn next_version() -> Version {
    static CLOCK: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mut seen = CLOCK.load(Ordering::Relaxed);
    loop {
        let next = seen.max(now) + 1;
        match CLOCK.compare_exchange(seen, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => {
                return Version {
                    commit: next,
                    change: next,
                };
            }
            Err(current) => seen = current,
        }
    }
}

impl Table {
    fn new(name: &str) -> Self {
        Self {
            schema: Arc::new(TableSchema {
                table: TableRef::new("public", format!("conformance_{name}")),
                columns: vec![
                    Column {
                        nullable: false,
                        ..Column::new("id", ColumnType::Int64)
                    },
                    Column::new("qty", ColumnType::Int32),
                    Column::new("note", ColumnType::Text),
                ],
                key: vec![0],
            }),
        }
    }

    fn name(&self) -> &TableRef {
        &self.schema.table
    }

    fn event(&self, op: Op, key: Vec<Value>, row: Option<Vec<Value>>) -> ChangeEvent {
        ChangeEvent {
            schema: self.schema.clone(),
            op,
            row,
            key,
            before: None,
            version: next_version(),
            source_ts_ms: 0,
            origin: Origin {
                topic: Arc::from(format!("conformance.{}", self.schema.table.name)),
                partition: 0,
                offset: 0,
            },
        }
    }

    fn upsert_value(&self, id: i64, qty: Value, note: Value) -> ChangeEvent {
        self.event(
            Op::Upsert,
            vec![Value::Int(id)],
            Some(vec![Value::Int(id), qty, note]),
        )
    }

    fn upsert(&self, id: i64, qty: i64, note: Option<&str>) -> ChangeEvent {
        let note = note.map_or(Value::Null, |n| Value::Text(n.into()));
        self.upsert_value(id, Value::Int(qty), note)
    }

    fn delete(&self, id: i64) -> ChangeEvent {
        self.event(Op::Delete, vec![Value::Int(id)], None)
    }

    fn truncate(&self) -> ChangeEvent {
        self.event(Op::Truncate, Vec::new(), None)
    }

    async fn apply(&self, store: &dyn Store, events: &[ChangeEvent]) -> Checked {
        store
            .sink()
            .apply(Target::of(self.name()), events)
            .await
            .map_err(|e| format!("apply failed: {e}"))
    }

    async fn expect(&self, store: &dyn Store, id: i64, want: Option<Stored>, why: &str) -> Checked {
        let got = store.row(self.name(), id).await;
        if got == want {
            Ok(())
        } else {
            Err(format!("{why}: row {id} is {got:?}, expected {want:?}"))
        }
    }
}

/// Events of one call apply in order, and calls apply in order.
pub async fn order_within_a_table(store: &dyn Store) -> Checked {
    let t = Table::new("order");
    let batch = [
        t.upsert(1, 1, Some("a")),
        t.upsert(2, 1, None),
        t.upsert(1, 2, Some("b")),
        t.delete(2),
        t.upsert(1, 3, Some("c")),
        t.upsert(3, 1, None),
    ];
    t.apply(store, &batch).await?;
    t.expect(
        store,
        1,
        Some(Stored::new(3, Some("c"))),
        "the last of three upserts in one call",
    )
    .await?;
    t.expect(store, 2, None, "an upsert then a delete in one call")
        .await?;
    t.apply(store, &[t.upsert(3, 2, None)]).await?;
    t.apply(store, &[t.upsert(3, 3, Some("later"))]).await?;
    t.expect(
        store,
        3,
        Some(Stored::new(3, Some("later"))),
        "the later of two calls",
    )
    .await
}

/// A call delivered again (whole, or a part of it after it) leaves the store as it was.
pub async fn idempotent_reapply(store: &dyn Store) -> Checked {
    let t = Table::new("reapply");
    let batch = [
        t.upsert(1, 1, Some("a")),
        t.upsert(2, 5, None),
        t.upsert(1, 2, Some("b")),
        t.delete(2),
        t.upsert(3, 7, Some("c")),
    ];
    t.apply(store, &batch).await?;
    t.apply(store, &batch).await?;
    t.apply(store, &batch[..3]).await?;
    t.expect(
        store,
        1,
        Some(Stored::new(2, Some("b"))),
        "after re-deliveries",
    )
    .await?;
    t.expect(store, 2, None, "a deleted row after re-deliveries")
        .await?;
    t.expect(
        store,
        3,
        Some(Stored::new(7, Some("c"))),
        "after re-deliveries",
    )
    .await
}

/// A change older than the one a key holds changes nothing, be it an upsert or a delete.
pub async fn never_back_in_time(store: &dyn Store) -> Checked {
    let t = Table::new("monotonic");
    let older = t.upsert(1, 5, Some("older"));
    let older_delete = t.delete(1);
    let newer = t.upsert(1, 10, Some("newer"));
    t.apply(store, std::slice::from_ref(&newer)).await?;
    t.apply(store, std::slice::from_ref(&older)).await?;
    t.expect(
        store,
        1,
        Some(Stored::new(10, Some("newer"))),
        "an older upsert applied after a newer one",
    )
    .await?;
    t.apply(store, &[older_delete]).await?;
    t.expect(
        store,
        1,
        Some(Stored::new(10, Some("newer"))),
        "an older delete applied after a newer upsert",
    )
    .await
}

/// A deleted key keeps its version: an older insert arriving after the delete stays out.
pub async fn delete_beats_a_late_older_insert(store: &dyn Store) -> Checked {
    let t = Table::new("tombstone");
    let insert = t.upsert(1, 1, Some("ghost"));
    let delete = t.delete(1);
    t.apply(store, std::slice::from_ref(&delete)).await?;
    t.apply(store, std::slice::from_ref(&insert)).await?;
    t.expect(
        store,
        1,
        None,
        "an insert older than a delete already applied",
    )
    .await?;
    let insert = t.upsert(2, 1, Some("ghost"));
    let delete = t.delete(2);
    t.apply(store, std::slice::from_ref(&insert)).await?;
    t.apply(store, std::slice::from_ref(&delete)).await?;
    t.apply(store, std::slice::from_ref(&insert)).await?;
    t.expect(store, 2, None, "an insert delivered again after its delete")
        .await
}

/// A truncate removes what is older, keeps out what is older arriving later, and delivered again
/// removes nothing newer.
pub async fn truncate_watermark(store: &dyn Store) -> Checked {
    let t = Table::new("truncate");
    let before = [t.upsert(1, 1, None), t.upsert(2, 2, None)];
    let late = t.upsert(3, 3, Some("late"));
    let truncate = t.truncate();
    let after = t.upsert(4, 4, Some("after"));
    t.apply(store, &before).await?;
    t.apply(store, std::slice::from_ref(&truncate)).await?;
    t.expect(store, 1, None, "a row older than a truncate")
        .await?;
    t.expect(store, 2, None, "a row older than a truncate")
        .await?;
    t.apply(store, std::slice::from_ref(&late)).await?;
    t.expect(
        store,
        3,
        None,
        "an upsert older than a truncate, arriving after it",
    )
    .await?;
    t.apply(store, std::slice::from_ref(&after)).await?;
    t.apply(store, std::slice::from_ref(&truncate)).await?;
    t.expect(
        store,
        4,
        Some(Stored::new(4, Some("after"))),
        "a newer row after the truncate is delivered again",
    )
    .await
}

/// An unavailable value keeps what the store holds, or what an earlier change of the call gave.
pub async fn unavailable_values_kept(store: &dyn Store) -> Checked {
    let t = Table::new("unavailable");
    t.apply(store, &[t.upsert(1, 1, Some("kept"))]).await?;
    t.apply(
        store,
        &[t.upsert_value(1, Value::Int(2), Value::Unavailable)],
    )
    .await?;
    t.expect(
        store,
        1,
        Some(Stored::new(2, Some("kept"))),
        "a later call leaving the note out",
    )
    .await?;
    t.apply(
        store,
        &[
            t.upsert(2, 1, Some("kept in the call")),
            t.upsert_value(2, Value::Int(2), Value::Unavailable),
        ],
    )
    .await?;
    t.expect(
        store,
        2,
        Some(Stored::new(2, Some("kept in the call"))),
        "a later change of the same call leaving the note out",
    )
    .await
}

/// An unreachable store is retriable; an event the store refuses is permanent, and when the sink
/// names refused events, it names that one alone and applied the others.
pub async fn retriable_and_permanent(store: &dyn Store) -> Checked {
    let t = Table::new("classify");
    let down = store.unreachable();
    match down
        .apply(Target::of(t.name()), &[t.upsert(1, 1, None)])
        .await
    {
        Err(e) if e.kind == FailureKind::Retriable => {}
        Err(e) => {
            return Err(format!(
                "an unreachable store answered a permanent error: {e}"
            ));
        }
        Ok(()) => return Err("an unreachable store answered Ok".into()),
    }
    if down.ready().await.is_ok() {
        return Err("an unreachable store is ready".into());
    }
    let qty = store.refuse(t.name(), 2).await;
    let batch = [
        t.upsert(1, 1, Some("fine")),
        t.upsert_value(2, qty, Value::Null),
        t.upsert(3, 3, Some("fine")),
    ];
    let e = match store.sink().apply(Target::of(t.name()), &batch).await {
        Ok(()) => return Err("an event the store refuses was applied".into()),
        Err(e) => e,
    };
    if e.kind != FailureKind::Permanent {
        return Err(format!("an event the store refuses is retriable: {e}"));
    }
    if let Some(index) = e.event_index
        && index != 1
    {
        return Err(format!(
            "the refused event is #1, the error names #{index}: {e}"
        ));
    }
    if !e.rejections.is_empty() {
        let named: Vec<usize> = e.rejections.iter().map(|r| r.index).collect();
        if named != [1] {
            return Err(format!(
                "the refused event is #1, the sink reports {named:?}: {e}"
            ));
        }
        t.expect(
            store,
            1,
            Some(Stored::new(1, Some("fine"))),
            "an event applied beside a rejected one",
        )
        .await?;
        t.expect(
            store,
            3,
            Some(Stored::new(3, Some("fine"))),
            "an event applied beside a rejected one",
        )
        .await?;
    }
    Ok(())
}
