//! The redis sink against a real Redis (the stack's, or `RIPPLE_TEST_REDIS_URL`) and, each test
//! again, against the stack's Redis Cluster (`RIPPLE_TEST_REDIS_CLUSTER_URL`): the three value
//! formats, key templates, TTLs, deletes, truncates through the key sets, re-delivery, versions that
//! never move back, and values that did not come with a change (unchanged TOAST) staying as they
//! are. Keys are read back with a plain connection of the test's own.

use redis::AsyncCommands;
use ripple_sink::{
    ChangeEvent, Column, ColumnType, Op, Origin, Sink, TableRef, TableSchema, Target, Value,
    Version,
};
use ripple_sink_redis::{Connection, Format, RedisSink, RedisSinkConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Single,
    Cluster,
}

fn url(mode: Mode) -> String {
    match mode {
        Mode::Single => std::env::var("RIPPLE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:16379".into()),
        Mode::Cluster => std::env::var("RIPPLE_TEST_REDIS_CLUSTER_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:17000".into()),
    }
}

/// Each test runs once against the single Redis and once against the cluster.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn single() {
                super::$name(super::Mode::Single).await
            }
            #[tokio::test]
            async fn cluster() {
                super::$name(super::Mode::Cluster).await
            }
        }
    )*};
}

on_both!(
    hash_rows_follow_upserts_deletes_and_truncates,
    json_documents_keep_unavailable_values,
    string_format_stores_one_column_under_a_template,
    templates_may_only_use_key_columns,
    keys_never_move_back_in_time,
    read_back_fetches_keys_as_stored_and_lists_them,
    keys_of_another_type_are_reported_each_and_the_rest_is_written,
    versions_beyond_2_pow_53_compare_exactly,
    json_values_round_trip_byte_exactly_through_a_merge,
    keys_expire_ttl_seconds_after_their_last_write,
);

async fn sink(
    mode: Mode,
    format: Format,
    key: &str,
    field: Option<&str>,
    prefix: &str,
) -> (RedisSink, Connection) {
    sink_with(mode, format, key, field, prefix, 0).await
}

async fn sink_with(
    mode: Mode,
    format: Format,
    key: &str,
    field: Option<&str>,
    prefix: &str,
    ttl_seconds: u64,
) -> (RedisSink, Connection) {
    let config = RedisSinkConfig {
        kind: "redis".into(),
        url: url(mode),
        password_env: None,
        username: None,
        password_file: None,
        tls: Default::default(),
        cluster: mode == Mode::Cluster,
        cluster_seeds: Vec::new(),
        key: key.into(),
        format,
        field: field.map(String::from),
        ttl_seconds,
        key_set_prefix: format!("{prefix}:keys:"),
    };
    let sink = RedisSink::new("cache", "sinks.cache", config).unwrap();
    sink.ready().await.unwrap_or_else(|e| {
        panic!(
            "Redis at {} is not reachable ({e}): run scripts/stack up",
            url(mode)
        )
    });
    let mut conn = Connection::open(&url(mode), mode == Mode::Cluster)
        .await
        .unwrap();
    // KEYS goes to every primary of a cluster, and DEL to each key's own.
    let old: Vec<String> = conn.keys(format!("{prefix}*")).await.unwrap();
    if !old.is_empty() {
        let _: () = conn.del(old).await.unwrap();
    }
    (sink, conn)
}

fn schema(table: &str) -> Arc<TableSchema> {
    let col = Column::new;
    Arc::new(TableSchema {
        table: TableRef::new("public", table),
        columns: vec![
            col("product_id", ColumnType::Int64),
            col("stock", ColumnType::Int32),
            col(
                "price",
                ColumnType::Decimal {
                    precision: None,
                    scale: None,
                },
            ),
            col("notes", ColumnType::Text),
        ],
        key: vec![0],
    })
}

/// Each event built gets the next version, as the source's commit order would give it.
fn next_version() -> Version {
    static CLOCK: AtomicU64 = AtomicU64::new(1);
    Version {
        commit: 7,
        change: CLOCK.fetch_add(1, Ordering::Relaxed),
    }
}

fn upsert(s: &Arc<TableSchema>, id: i64, stock: i64, notes: Value) -> ChangeEvent {
    ChangeEvent {
        schema: s.clone(),
        op: Op::Upsert,
        row: Some(vec![
            Value::Int(id),
            Value::Int(stock),
            Value::Decimal("9.90".into()),
            notes,
        ]),
        key: vec![Value::Int(id)],
        before: None,
        version: next_version(),
        source_ts_ms: 0,
        origin: Origin {
            topic: Arc::from("t"),
            partition: 0,
            offset: 0,
        },
    }
}

fn op(s: &Arc<TableSchema>, op: Op, id: i64) -> ChangeEvent {
    let key = if op == Op::Truncate {
        vec![]
    } else {
        vec![Value::Int(id)]
    };
    ChangeEvent {
        op,
        row: None,
        key,
        ..upsert(s, id, 0, Value::Null)
    }
}

async fn hash_rows_follow_upserts_deletes_and_truncates(mode: Mode) {
    let (sink, mut conn) = sink(
        mode,
        Format::Hash,
        "rtest_hash:{table}:{pk}",
        None,
        "rtest_hash",
    )
    .await;
    let s = schema("items");
    let batch = vec![
        upsert(&s, 1, 5, Value::Text("first".into())),
        upsert(&s, 2, 7, Value::Null),
        upsert(&s, 1, 4, Value::Null),
        op(&s, Op::Delete, 2),
        upsert(&s, 3, 1, Value::Text("x".into())),
    ];
    sink.apply(Target::of(&s.table), &batch).await.unwrap();
    sink.apply(Target::of(&s.table), &batch).await.unwrap();
    let one: HashMap<String, String> = conn.hgetall("rtest_hash:items:1").await.unwrap();
    assert_eq!(one.get("stock").map(String::as_str), Some("4"));
    assert_eq!(
        one.get("price").map(String::as_str),
        Some("9.90"),
        "decimals keep their digits"
    );
    assert!(
        !one.contains_key("notes"),
        "a NULL clears the field: {one:?}"
    );
    let gone: bool = conn.exists("rtest_hash:items:2").await.unwrap();
    assert!(!gone);

    sink.apply(
        Target::of(&s.table),
        &[op(&s, Op::Truncate, 0), upsert(&s, 9, 1, Value::Null)],
    )
    .await
    .unwrap();
    let left: Vec<String> = conn.keys("rtest_hash:items:*").await.unwrap();
    assert_eq!(
        left,
        ["rtest_hash:items:9"],
        "the truncate removed everything written before it"
    );
}

async fn json_documents_keep_unavailable_values(mode: Mode) {
    let (sink, mut conn) = sink(mode, Format::Json, "rtest_json:{pk}", None, "rtest_json").await;
    let s = schema("docs");
    let big = "y".repeat(10_000);
    sink.apply(
        Target::of(&s.table),
        &[upsert(&s, 1, 5, Value::Text(big.clone()))],
    )
    .await
    .unwrap();
    sink.apply(
        Target::of(&s.table),
        &[upsert(&s, 1, 6, Value::Unavailable)],
    )
    .await
    .unwrap();
    let doc: String = conn.get("rtest_json:1").await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["stock"], 6);
    assert_eq!(doc["price"], "9.90");
    assert_eq!(
        doc["notes"].as_str(),
        Some(big.as_str()),
        "the placeholder never replaces the real value"
    );
}

async fn string_format_stores_one_column_under_a_template(mode: Mode) {
    let (sink, mut conn) = sink(
        mode,
        Format::String,
        "rtest_inv:{product_id}",
        Some("stock"),
        "rtest_inv",
    )
    .await;
    let s = schema("inventory");
    sink.apply(
        Target::of(&s.table),
        &[
            upsert(&s, 42, 17, Value::Null),
            upsert(&s, 43, 3, Value::Null),
        ],
    )
    .await
    .unwrap();
    let stock: String = conn.get("rtest_inv:42").await.unwrap();
    assert_eq!(stock, "17");
    sink.apply(Target::of(&s.table), &[op(&s, Op::Delete, 43)])
        .await
        .unwrap();
    assert!(!conn.exists::<_, bool>("rtest_inv:43").await.unwrap());
}

async fn templates_may_only_use_key_columns(mode: Mode) {
    let (sink, _conn) = sink(mode, Format::Hash, "rtest_bad:{stock}", None, "rtest_bad").await;
    let s = schema("items");
    let err = sink
        .apply(Target::of(&s.table), &[upsert(&s, 1, 5, Value::Null)])
        .await
        .unwrap_err();
    assert!(!err.is_retriable());
    assert!(
        err.to_string().contains("not a primary-key column"),
        "{err}"
    );
}

#[test]
fn string_format_needs_a_field() {
    let config = RedisSinkConfig {
        kind: "redis".into(),
        url: url(Mode::Single),
        password_env: None,
        username: None,
        password_file: None,
        tls: Default::default(),
        cluster: false,
        cluster_seeds: Vec::new(),
        key: "{pk}".into(),
        format: Format::String,
        field: None,
        ttl_seconds: 0,
        key_set_prefix: "x".into(),
    };
    let err = RedisSink::new("cache", "sinks.cache", config)
        .err()
        .expect("rejected");
    assert_eq!(err.key, "sinks.cache.field");
}

async fn keys_never_move_back_in_time(mode: Mode) {
    let (sink, mut conn) = sink(mode, Format::Hash, "rtest_ver:row:{pk}", None, "rtest_ver").await;
    let s = schema("versions");
    let t = s.table.clone();
    sink.apply(Target::of(&t), &[at(upsert(&s, 1, 10, Value::Null), 50, 1)])
        .await
        .unwrap();
    // A stale duplicate, alone and after the newer change in one batch.
    sink.apply(Target::of(&t), &[at(upsert(&s, 1, 3, Value::Null), 40, 9)])
        .await
        .unwrap();
    sink.apply(
        Target::of(&t),
        &[
            at(upsert(&s, 2, 1, Value::Null), 50, 2),
            at(upsert(&s, 1, 4, Value::Null), 49, 1),
        ],
    )
    .await
    .unwrap();
    let stock: String = conn.hget("rtest_ver:row:1", "stock").await.unwrap();
    assert_eq!(stock, "10");

    // A delete wins against a late older insert; a newer insert brings the key back.
    sink.apply(Target::of(&t), &[at(op(&s, Op::Delete, 2), 60, 1)])
        .await
        .unwrap();
    sink.apply(Target::of(&t), &[at(upsert(&s, 2, 1, Value::Null), 50, 2)])
        .await
        .unwrap();
    assert!(!conn.exists::<_, bool>("rtest_ver:row:2").await.unwrap());
    sink.apply(Target::of(&t), &[at(upsert(&s, 2, 8, Value::Null), 61, 1)])
        .await
        .unwrap();
    assert!(conn.exists::<_, bool>("rtest_ver:row:2").await.unwrap());

    // Nothing older than a truncate lands after it, and the same truncate again removes nothing newer.
    let truncate = at(op(&s, Op::Truncate, 0), 70, 1);
    sink.apply(
        Target::of(&t),
        &[truncate.clone(), at(upsert(&s, 3, 1, Value::Null), 71, 1)],
    )
    .await
    .unwrap();
    sink.apply(
        Target::of(&t),
        &[at(upsert(&s, 1, 99, Value::Null), 69, 1), truncate],
    )
    .await
    .unwrap();
    let left: Vec<String> = conn.keys("rtest_ver:row:*").await.unwrap();
    assert_eq!(left, ["rtest_ver:row:3"]);
}

fn at(mut e: ChangeEvent, commit: u64, change: u64) -> ChangeEvent {
    e.version = Version { commit, change };
    e
}

async fn read_back_fetches_keys_as_stored_and_lists_them(mode: Mode) {
    use ripple_sink::StoredRow;
    for format in [Format::Hash, Format::Json, Format::String] {
        let field = (format == Format::String).then_some("stock");
        let prefix = format!("rtest_rb_{format:?}").to_lowercase();
        let (sink, mut conn) = sink(
            mode,
            format.clone(),
            &format!("{prefix}:{{pk}}"),
            field,
            &prefix,
        )
        .await;
        let s = schema("read_back");
        let t = TableRef::new("public", "read_back");
        let read = sink.read_back().expect("redis reads back");
        assert!(!read.has_table(Target::of(&t)).await.unwrap());
        sink.apply(
            Target::of(&t),
            &[
                upsert(&s, 1, 5, Value::Text("a".into())),
                upsert(&s, 2, 6, Value::Null),
            ],
        )
        .await
        .unwrap();
        assert!(read.has_table(Target::of(&t)).await.unwrap());
        let _: () = match format {
            Format::Hash => conn
                .hset(format!("{prefix}:2"), "stock", "60")
                .await
                .unwrap(),
            _ => conn
                .set(format!("{prefix}:2"), "{\"stock\": 60}")
                .await
                .unwrap(),
        };
        let rows = [
            upsert(&s, 1, 5, Value::Text("a".into())),
            upsert(&s, 2, 6, Value::Null),
            upsert(&s, 3, 7, Value::Null),
        ];
        let _: () = conn.sadd(format!("{prefix}:set"), "x").await.unwrap();
        let keys: Vec<String> = ["1", "3", "set", "2"]
            .map(|k| format!("{prefix}:{k}"))
            .into();
        let stored = read.fetch(Target::of(&t), &keys).await.unwrap();
        match (&format, &stored[0]) {
            (Format::Hash, Some(StoredRow::Fields(f))) => {
                assert_eq!(f.get("stock").map(String::as_str), Some("5"), "{f:?}")
            }
            (Format::Json, Some(StoredRow::JsonText(text))) => {
                let doc: serde_json::Value = serde_json::from_str(text).unwrap();
                assert_eq!(doc["stock"], 5, "{doc}");
            }
            (Format::String, Some(StoredRow::Text { column, text })) => {
                assert_eq!((column.as_str(), text.as_str()), ("stock", "5"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(stored[1], None, "{format:?}");
        assert!(
            matches!(&stored[2], Some(StoredRow::Unreadable(why)) if why.contains("WRONGTYPE")),
            "{format:?}: {:?}",
            stored[2]
        );
        assert!(stored[3].is_some(), "{format:?}");
        assert_eq!(
            read.stored_column(),
            field.map(str::to_string),
            "{format:?}"
        );
        let (mut ids, mut cursor) = (Vec::new(), None);
        loop {
            let (page, next) = read.stored_ids(Target::of(&t), cursor).await.unwrap();
            ids.extend(page);
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        ids.sort();
        assert_eq!(ids, [format!("{prefix}:1"), format!("{prefix}:2")]);
        assert_eq!(
            read.row_id(Target::of(&t), &rows[2]).unwrap(),
            format!("{prefix}:3")
        );
    }
}

/// A key that holds another type refuses its change; every such change of a call is reported at
/// once and every other one is written. The refused change leaves no version behind, so it
/// applies once the key is freed (as replaying its dead letter would). The call spans more
/// pipelines than the sink keeps in flight, so each refusal must be matched to its own event
/// across pipelines answered in turn.
async fn keys_of_another_type_are_reported_each_and_the_rest_is_written(mode: Mode) {
    let (sink, mut conn) = sink(
        mode,
        Format::Hash,
        "rtest_clash:{table}:{pk}",
        None,
        "rtest_clash",
    )
    .await;
    let s = schema("items");
    let clashing = [2, 4, 2502, 5499];
    for id in clashing {
        let _: () = conn
            .set(format!("rtest_clash:items:{id}"), "a string")
            .await
            .unwrap();
    }
    let batch: Vec<ChangeEvent> = (1..=5500)
        .map(|id| upsert(&s, id, id, Value::Null))
        .collect();
    let err = sink.apply(Target::of(&s.table), &batch).await.unwrap_err();
    assert!(!err.is_retriable(), "{err}");
    let at: Vec<usize> = err.rejections.iter().map(|r| r.index).collect();
    assert_eq!(at, clashing.map(|id| id as usize - 1), "{err}");
    assert!(err.rejections[0].reason.contains("WRONGTYPE"), "{err:?}");
    let reads = (1..=5500)
        .map(|id| {
            redis::cmd("HGET")
                .arg(format!("rtest_clash:items:{id}"))
                .arg("stock")
                .clone()
        })
        .collect();
    let stocks = conn.run(reads).await.unwrap();
    for (id, stock) in (1..=5500).zip(stocks) {
        if clashing.contains(&id) {
            continue;
        }
        let stock: Option<String> = redis::from_redis_value(stock.unwrap()).unwrap();
        assert_eq!(stock, Some(id.to_string()), "row {id}");
    }
    let _: () = conn.del("rtest_clash:items:2").await.unwrap();
    sink.apply(Target::of(&s.table), &batch[1..2])
        .await
        .unwrap();
    let stock: Option<String> = conn.hget("rtest_clash:items:2", "stock").await.unwrap();
    assert_eq!(
        stock.as_deref(),
        Some("2"),
        "the refused change was not recorded as applied"
    );
}

/// Versions are compared exactly whatever their size: 2^60 and 2^60 + 1 are one double in Lua.
async fn versions_beyond_2_pow_53_compare_exactly(mode: Mode) {
    let (sink, mut conn) = sink(mode, Format::Hash, "rtest_big:row:{pk}", None, "rtest_big").await;
    let s = schema("big_versions");
    let t = s.table.clone();
    let big = 1u64 << 60;
    sink.apply(Target::of(&t), &[at(upsert(&s, 1, 1, Value::Null), big, 1)])
        .await
        .unwrap();
    sink.apply(
        Target::of(&t),
        &[at(upsert(&s, 1, 2, Value::Null), big + 1, 1)],
    )
    .await
    .unwrap();
    let stock: String = conn.hget("rtest_big:row:1", "stock").await.unwrap();
    assert_eq!(stock, "2", "a commit one above 2^60 is newer");
    sink.apply(Target::of(&t), &[at(upsert(&s, 1, 3, Value::Null), big, 9)])
        .await
        .unwrap();
    let stock: String = conn.hget("rtest_big:row:1", "stock").await.unwrap();
    assert_eq!(stock, "2", "an older commit does not land");
    sink.apply(
        Target::of(&t),
        &[at(upsert(&s, 1, 4, Value::Null), big + 1, u64::MAX)],
    )
    .await
    .unwrap();
    let stock: String = conn.hget("rtest_big:row:1", "stock").await.unwrap();
    assert_eq!(
        stock, "4",
        "the change LSN decides within one commit, up to u64::MAX"
    );
}

async fn json_values_round_trip_byte_exactly_through_a_merge(mode: Mode) {
    let (sink, mut conn) = sink(mode, Format::Json, "rtest_exact:{pk}", None, "rtest_exact").await;
    let col = Column::new;
    let s = Arc::new(TableSchema {
        table: TableRef::new("public", "exact"),
        columns: vec![
            col("a \"quoted\" name", ColumnType::Text),
            col("id", ColumnType::Int64),
            col("big", ColumnType::Int64),
            col("f", ColumnType::Float64),
            col("j", ColumnType::Json),
            col("t", ColumnType::Text),
        ],
        key: vec![1],
    });
    // What cjson would change: digits past 14, [] (it writes {}), escapes, nesting; and text
    // holding the characters a scanner of the stored document must not stop at.
    let j = r#"{"big": 123456789012345678901234567890, "d": 1.2345678901234567, "e": [], "o": {}, "u": "é✓😀 \"\\/", "n": [[{}], {"x": [null, true]}]}"#;
    let t = r#"text with } { ] [ , : " \ and "quotes""#;
    let event = |row: Vec<Value>| ChangeEvent {
        row: Some(row),
        ..upsert(&s, 1, 0, Value::Null)
    };
    sink.apply(
        Target::of(&s.table),
        &[event(vec![
            Value::Text("first".into()),
            Value::Int(1),
            Value::Int(9_007_199_254_740_993),
            Value::Float(1.234_567_890_123_456_7),
            Value::Json(j.into()),
            Value::Text(t.into()),
        ])],
    )
    .await
    .unwrap();
    let before: String = conn.get("rtest_exact:1").await.unwrap();
    assert!(
        before.contains(j),
        "the JSON column goes in as written: {before}"
    );
    // An update that carries none of the large values: they are merged from what Redis holds.
    sink.apply(
        Target::of(&s.table),
        &[event(vec![
            Value::Unavailable,
            Value::Int(1),
            Value::Int(9_007_199_254_740_995),
            Value::Unavailable,
            Value::Unavailable,
            Value::Unavailable,
        ])],
    )
    .await
    .unwrap();
    let after: String = conn.get("rtest_exact:1").await.unwrap();
    for kept in [
        r#""a \"quoted\" name":"first""#.to_string(),
        r#""f":1.2345678901234567"#.into(),
        format!(r#""j":{j}"#),
        format!(r#""t":{}"#, serde_json::Value::from(t)),
        r#""big":9007199254740995"#.into(),
    ] {
        assert!(after.contains(&kept), "{kept} not in {after}");
    }
    let doc: serde_json::Value = serde_json::from_str(&after).expect("still JSON");
    assert_eq!(doc.as_object().unwrap().len(), 6, "{after}");
}

/// `ttl_seconds` sets an expiry on every write, renewed by the next one; deletes and the
/// bookkeeping never expire (a forgotten version would let an older change back in).
async fn keys_expire_ttl_seconds_after_their_last_write(mode: Mode) {
    let (sink, mut conn) =
        sink_with(mode, Format::Hash, "rtest_ttl:{pk}", None, "rtest_ttl", 300).await;
    let s = schema("ttl");
    sink.apply(
        Target::of(&s.table),
        &[upsert(&s, 1, 5, Value::Null), upsert(&s, 2, 5, Value::Null)],
    )
    .await
    .unwrap();
    let _: () = conn.expire("rtest_ttl:1", 10).await.unwrap();
    sink.apply(Target::of(&s.table), &[upsert(&s, 1, 6, Value::Null)])
        .await
        .unwrap();
    for id in [1, 2] {
        let ttl: i64 = conn.ttl(format!("rtest_ttl:{id}")).await.unwrap();
        assert!((290..=300).contains(&ttl), "row {id}: ttl {ttl}");
    }
    let bookkeeping: Vec<String> = conn.keys("rtest_ttl:keys:*").await.unwrap();
    assert!(!bookkeeping.is_empty());
    for key in bookkeeping {
        let ttl: i64 = conn.ttl(&key).await.unwrap();
        assert_eq!(ttl, -1, "{key} never expires");
    }
}

/// On a cluster a table's keys spread over every primary, and each key's version sits in a
/// versions hash of the key's own slot, as the servers themselves compute slots (CLUSTER KEYSLOT).
#[tokio::test]
async fn on_a_cluster_each_rows_version_lives_in_its_own_slot() {
    let (sink, mut conn) = sink(
        Mode::Cluster,
        Format::Json,
        "rtest_slots:{table}:{pk}",
        None,
        "rtest_slots",
    )
    .await;
    let s = schema("spread");
    let batch: Vec<ChangeEvent> = (1..=300)
        .map(|id| upsert(&s, id, id, Value::Null))
        .collect();
    sink.apply(Target::of(&s.table), &batch).await.unwrap();
    let hashes: Vec<String> = conn.keys("rtest_slots:keys:*:versions").await.unwrap();
    assert!(
        hashes.len() > 100,
        "300 rows over {} versions hashes",
        hashes.len()
    );
    let mut versioned = 0;
    for hash in &hashes {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(hash)
            .query_async(&mut conn)
            .await
            .unwrap();
        let rows: Vec<String> = conn.hkeys(hash).await.unwrap();
        for row in rows {
            let row_slot: i64 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&row)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(row_slot, slot, "{row} is versioned in {hash}");
            versioned += 1;
        }
    }
    assert_eq!(versioned, 300);
    // Each primary holds some of the rows: DBSIZE on every node, replicas counted out.
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
        .unwrap();
    let primaries: Vec<&str> = nodes
        .lines()
        .filter(|l| l.contains("master") && !l.contains("fail"))
        .filter_map(|l| l.split_whitespace().nth(1)?.split('@').next())
        .collect();
    assert_eq!(primaries.len(), 3, "{nodes}");
    for node in primaries {
        let mut one = redis::Client::open(format!("redis://{node}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mine: Vec<String> = one.keys("rtest_slots:spread:*").await.unwrap();
        assert!(mine.len() > 50, "{node} holds {} of 300 rows", mine.len());
    }
}
