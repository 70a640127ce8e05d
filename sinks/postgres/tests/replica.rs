//! The postgres sink against a real PostgreSQL (the stack's replica, or `RIPPLE_TEST_REPLICA_URL`):
//! table creation from the stream's schema, set-based upserts and deletes, truncates inside a
//! batch, idempotent re-delivery, unchanged TOAST values, and identifiers that need quoting.

use ripple_sink::{
    ChangeEvent, Column, ColumnType, Op, Origin, Sink, TableRef, TableSchema, Target, Value,
    Version,
};
use ripple_sink_postgres::{PostgresSink, PostgresSinkConfig};
use sqlx::Row;
use std::sync::Arc;

fn url() -> String {
    std::env::var("RIPPLE_TEST_REPLICA_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:15433/replica".into())
}

async fn sink(schema: &str) -> PostgresSink {
    let config = PostgresSinkConfig {
        kind: "postgres".into(),
        url: url(),
        password_env: None,
        sslmode: None,
        password_file: None,
        tls: Default::default(),
        schema: Some(schema.into()),
        create_tables: true,
        max_connections: 2,
        exactly_once: false,
    };
    let sink = PostgresSink::new("replica", "sinks.replica", config).unwrap();
    sink.ready().await.unwrap_or_else(|e| {
        panic!(
            "replica PostgreSQL at {} is not reachable ({e}): run scripts/stack up",
            url()
        )
    });
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(sink.pool())
    .await
    .unwrap();
    sink
}

fn col(name: &str, ty: ColumnType, source_type: Option<&str>) -> Column {
    Column {
        name: name.into(),
        ty,
        nullable: true,
        source_type: source_type.map(String::from),
        default: None,
    }
}

/// A table whose names need quoting: a reserved word, mixed case, a space and a quote.
fn schema() -> Arc<TableSchema> {
    schema_with_note(Some("VARCHAR(255)"))
}

fn schema_with_note(note_type: Option<&str>) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        table: TableRef::new("public", "Order \"Lines\""),
        columns: vec![
            col("id", ColumnType::Int64, None),
            col("timestamp", ColumnType::Timestamp, None),
            col(
                "Amount",
                ColumnType::Decimal {
                    precision: None,
                    scale: None,
                },
                Some("NUMERIC"),
            ),
            col("note", ColumnType::Text, note_type),
            col("info", ColumnType::Json, Some("JSONB")),
        ],
        key: vec![0],
    })
}

fn upsert(s: &Arc<TableSchema>, offset: i64, id: i64, amount: &str, note: Value) -> ChangeEvent {
    ChangeEvent {
        schema: s.clone(),
        op: Op::Upsert,
        row: Some(vec![
            Value::Int(id),
            Value::Timestamp(1_741_944_413_589_793 + id),
            Value::Decimal(amount.into()),
            note,
            Value::Json(format!(r#"{{"id": {id}, "tags": ["a", "é"]}}"#)),
        ]),
        key: vec![Value::Int(id)],
        before: None,
        version: Version {
            commit: 1,
            change: offset as u64,
        },
        source_ts_ms: 0,
        origin: Origin {
            topic: Arc::from("t"),
            partition: 0,
            offset,
        },
    }
}

fn delete(s: &Arc<TableSchema>, offset: i64, id: i64) -> ChangeEvent {
    ChangeEvent {
        op: Op::Delete,
        row: None,
        ..upsert(s, offset, id, "0", Value::Null)
    }
}

fn truncate(s: &Arc<TableSchema>, offset: i64) -> ChangeEvent {
    ChangeEvent {
        op: Op::Truncate,
        row: None,
        key: vec![],
        ..upsert(s, offset, 0, "0", Value::Null)
    }
}

async fn rows(
    sink: &PostgresSink,
    schema: &str,
) -> Vec<(i64, String, String, Option<String>, String)> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, \"timestamp\"::text, \"Amount\"::text, note, info::text FROM \"{schema}\".\"Order \"\"Lines\"\"\" ORDER BY id"
    )))
    .fetch_all(sink.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect()
}

#[tokio::test]
async fn batches_apply_in_order_and_replay_changes_nothing() {
    let ns = "sink_pg_it_order";
    let sink = sink(ns).await;
    let s = schema();
    let table = s.table.clone();
    let batch = vec![
        upsert(&s, 0, 1, "10.50", Value::Text("one".into())),
        upsert(&s, 1, 2, "20", Value::Text("two".into())),
        upsert(&s, 2, 3, "30.000", Value::Null),
        upsert(&s, 3, 1, "11.25", Value::Text("one again".into())),
        delete(&s, 4, 2),
    ];
    sink.apply(Target::of(&table), &batch).await.unwrap();
    let first = rows(&sink, ns).await;
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].0, 1);
    assert_eq!(first[0].1, "2025-03-14 09:26:53.589794");
    assert_eq!(first[0].2, "11.25", "the last change per key wins");
    assert_eq!(first[0].3.as_deref(), Some("one again"));
    assert_eq!(first[0].4, r#"{"id": 1, "tags": ["a", "é"]}"#);
    assert_eq!(first[1].2, "30.000", "numeric keeps its scale");
    assert_eq!(first[1].3, None);

    // At-least-once delivery: the same batch again leaves the same table.
    sink.apply(Target::of(&table), &batch).await.unwrap();
    assert_eq!(rows(&sink, ns).await, first);

    // The created column types follow the propagated source types.
    let types: Vec<String> = sqlx::query(
        "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 ORDER BY a.attnum",
    )
    .bind(format!("\"{ns}\".\"Order \"\"Lines\"\"\""))
    .fetch_all(sink.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(
        types,
        [
            "bigint",
            "timestamp without time zone",
            "numeric",
            "character varying(255)",
            "jsonb",
            "bigint",
            "bigint"
        ],
        "the source's columns, then Ripple's two version columns"
    );
}

#[tokio::test]
async fn truncate_in_the_middle_of_a_batch() {
    let ns = "sink_pg_it_truncate";
    let sink = sink(ns).await;
    let s = schema();
    let batch = vec![
        upsert(&s, 0, 1, "1", Value::Text("gone".into())),
        upsert(&s, 1, 2, "2", Value::Text("gone too".into())),
        truncate(&s, 2),
        upsert(&s, 3, 3, "3", Value::Text("kept".into())),
    ];
    sink.apply(Target::of(&s.table), &batch).await.unwrap();
    let r = rows(&sink, ns).await;
    assert_eq!(r.iter().map(|r| r.0).collect::<Vec<_>>(), [3]);
}

#[tokio::test]
async fn unavailable_values_keep_what_the_replica_holds() {
    let ns = "sink_pg_it_toast";
    let sink = sink(ns).await;
    let s = schema_with_note(Some("TEXT"));
    let big = "x".repeat(20_000);
    sink.apply(
        Target::of(&s.table),
        &[upsert(&s, 0, 1, "1", Value::Text(big.clone()))],
    )
    .await
    .unwrap();
    // A later update that did not touch the large column: Debezium sends the placeholder.
    sink.apply(
        Target::of(&s.table),
        &[
            upsert(&s, 1, 1, "2", Value::Unavailable),
            upsert(&s, 2, 2, "3", Value::Text("b".into())),
        ],
    )
    .await
    .unwrap();
    let r = rows(&sink, ns).await;
    assert_eq!(r[0].2, "2", "the other columns are updated");
    assert_eq!(
        r[0].3.as_deref(),
        Some(big.as_str()),
        "the unchanged value is kept"
    );
    assert_eq!(r[1].3.as_deref(), Some("b"));
}

#[tokio::test]
async fn too_long_values_fail_instead_of_being_truncated() {
    let ns = "sink_pg_it_too_long";
    let sink = sink(ns).await;
    let s = schema();
    let err = sink
        .apply(
            Target::of(&s.table),
            &[upsert(&s, 0, 1, "1", Value::Text("y".repeat(300)))],
        )
        .await
        .unwrap_err();
    assert!(!err.is_retriable(), "{err}");
    assert!(err.to_string().contains("too long"), "{err}");
}

#[tokio::test]
async fn rejected_data_is_a_permanent_error() {
    let ns = "sink_pg_it_reject";
    let sink = sink(ns).await;
    let s = schema();
    let err = sink
        .apply(
            Target::of(&s.table),
            &[upsert(&s, 0, 1, "not a number", Value::Null)],
        )
        .await
        .unwrap_err();
    assert!(!err.is_retriable(), "{err}");
    assert!(err.to_string().contains("numeric"), "{err}");
}

fn at(mut e: ChangeEvent, commit: u64, change: u64) -> ChangeEvent {
    e.version = Version { commit, change };
    e
}

#[tokio::test]
async fn rows_never_move_back_in_time() {
    let ns = "sink_pg_it_versions";
    let sink = sink(ns).await;
    let s = schema();
    let t = s.table.clone();
    sink.apply(
        Target::of(&t),
        &[at(
            upsert(&s, 0, 1, "2.00", Value::Text("new".into())),
            20,
            5,
        )],
    )
    .await
    .unwrap();
    // A stale duplicate of an older change arrives late, alone and inside a batch.
    sink.apply(
        Target::of(&t),
        &[at(
            upsert(&s, 0, 1, "1.00", Value::Text("old".into())),
            10,
            99,
        )],
    )
    .await
    .unwrap();
    sink.apply(
        Target::of(&t),
        &[
            at(upsert(&s, 0, 2, "5", Value::Null), 20, 6),
            at(upsert(&s, 0, 1, "1.50", Value::Null), 20, 4),
        ],
    )
    .await
    .unwrap();
    let r = rows(&sink, ns).await;
    assert_eq!(
        (r[0].2.as_str(), r[0].3.as_deref()),
        ("2.00", Some("new")),
        "the newer row stays"
    );
    assert_eq!(r.len(), 2);

    // A delete wins against a re-delivered older insert of the same key.
    sink.apply(Target::of(&t), &[at(delete(&s, 0, 2), 30, 1)])
        .await
        .unwrap();
    sink.apply(
        Target::of(&t),
        &[at(upsert(&s, 0, 2, "5", Value::Null), 20, 6)],
    )
    .await
    .unwrap();
    assert_eq!(
        rows(&sink, ns)
            .await
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        [1]
    );
    // A newer insert after the delete does bring the key back.
    sink.apply(
        Target::of(&t),
        &[at(upsert(&s, 0, 2, "6", Value::Null), 31, 1)],
    )
    .await
    .unwrap();
    assert_eq!(
        rows(&sink, ns)
            .await
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        [1, 2]
    );

    // A truncate removes what came before it; nothing older lands afterwards, newer rows do, and
    // the same truncate delivered again removes nothing newer.
    let truncate_at = at(truncate(&s, 0), 40, 1);
    sink.apply(
        Target::of(&t),
        &[
            truncate_at.clone(),
            at(upsert(&s, 0, 3, "3", Value::Null), 41, 1),
        ],
    )
    .await
    .unwrap();
    sink.apply(
        Target::of(&t),
        &[at(upsert(&s, 0, 1, "9", Value::Null), 39, 9), truncate_at],
    )
    .await
    .unwrap();
    let r = rows(&sink, ns).await;
    assert_eq!(r.iter().map(|r| r.0).collect::<Vec<_>>(), [3], "{r:?}");
}

/// A database that cannot take writes (read-only, as a standby after failover or with
/// `default_transaction_read_only`) is an outage: retriable, never a reason to dead-letter the
/// rows; once writable again the same batch applies. Its own database, so no other test sees it.
#[tokio::test]
async fn a_read_only_database_is_an_outage_not_bad_data() {
    let admin = sink("sink_pg_it_ro_admin").await;
    let db = format!("ripple_ro_{}", std::process::id());
    let sql = |q: String| {
        let pool = admin.pool().clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(q))
                .execute(&pool)
                .await
                .unwrap()
        }
    };
    sql(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
    sql(format!("CREATE DATABASE {db}")).await;
    let config = PostgresSinkConfig {
        kind: "postgres".into(),
        url: url()
            .rsplit_once('/')
            .map(|(base, _)| format!("{base}/{db}"))
            .unwrap(),
        password_env: None,
        sslmode: None,
        password_file: None,
        tls: Default::default(),
        schema: None,
        create_tables: true,
        max_connections: 2,
        exactly_once: false,
    };
    let sink = PostgresSink::new("replica", "sinks.replica", config).unwrap();
    let s = schema();
    sink.apply(
        Target::of(&s.table),
        &[upsert(&s, 0, 1, "1.5", Value::Null)],
    )
    .await
    .unwrap();

    let terminate = || {
        sql(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
        ))
    };
    sql(format!(
        "ALTER DATABASE {db} SET default_transaction_read_only = on"
    ))
    .await;
    terminate().await;
    let mut err = None;
    // The pool notices its terminated connections on first use; a later attempt meets the setting.
    for _ in 0..5 {
        match sink
            .apply(
                Target::of(&s.table),
                &[upsert(&s, 1, 2, "2.5", Value::Null)],
            )
            .await
        {
            Err(e) if e.to_string().contains("read-only") => {
                err = Some(e);
                break;
            }
            Err(e) => assert!(e.is_retriable(), "{e}"),
            Ok(()) => panic!("a write to a read-only database succeeded"),
        }
    }
    let err = err.expect("the read-only refusal");
    assert!(
        err.is_retriable(),
        "a read-only database must be an outage: {err}"
    );

    sql(format!(
        "ALTER DATABASE {db} RESET default_transaction_read_only"
    ))
    .await;
    terminate().await;
    let mut applied = false;
    for _ in 0..5 {
        if sink
            .apply(
                Target::of(&s.table),
                &[upsert(&s, 1, 2, "2.5", Value::Null)],
            )
            .await
            .is_ok()
        {
            applied = true;
            break;
        }
    }
    assert!(
        applied,
        "the batch did not apply once the database was writable again"
    );
    drop(sink);
    sql(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
}

/// A batch the replica refuses without naming a row (a CHECK constraint, a value too long) is
/// written again change by change in one transaction: every refused change is reported, each
/// with its reason, and every other change of the call is written (read back with SQL).
#[tokio::test]
async fn every_refused_row_of_a_batch_is_named_and_the_rest_is_written() {
    let ns = "sink_pg_it_each";
    let sink = sink(ns).await;
    let s = schema();
    let target = Target::of(&s.table);
    sink.apply(target, &[upsert(&s, 0, 7, "7", Value::Null)])
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE \"{ns}\".\"Order \"\"Lines\"\"\" ADD CONSTRAINT amount_not_negative CHECK (\"Amount\" >= 0)"
    )))
    .execute(sink.pool())
    .await
    .unwrap();
    let batch = [
        upsert(&s, 1, 1, "1", Value::Null),
        upsert(&s, 2, 2, "-2", Value::Null),
        upsert(&s, 3, 3, "3", Value::Null),
        delete(&s, 4, 7),
        upsert(&s, 5, 5, "-5", Value::Null),
        upsert(&s, 6, 6, "6", Value::Text("y".repeat(300))),
        upsert(&s, 7, 4, "4", Value::Null),
        // A refused update of a row this batch inserted: the insert stays.
        upsert(&s, 8, 3, "-3", Value::Null),
    ];
    let err = sink.apply(target, &batch).await.unwrap_err();
    assert!(!err.is_retriable(), "{err}");
    let at: Vec<usize> = err.rejections.iter().map(|r| r.index).collect();
    assert_eq!(at, [1, 4, 5, 7], "{err:?}");
    assert!(
        err.rejections[0].reason.contains("amount_not_negative")
            && err.rejections[0].reason.contains("23514"),
        "{:?}",
        err.rejections[0]
    );
    assert!(
        err.rejections[2].reason.contains("22001"),
        "{:?}",
        err.rejections[2]
    );
    let stored: Vec<(i64, String)> = rows(&sink, ns)
        .await
        .into_iter()
        .map(|r| (r.0, r.2))
        .collect();
    assert_eq!(
        stored,
        [(1, "1".into()), (3, "3".into()), (4, "4".into())],
        "the others written, the delete too, and row 3 as its insert left it"
    );
}
