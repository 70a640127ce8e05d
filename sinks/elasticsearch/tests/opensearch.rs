//! The elasticsearch sink against a real search node (the stack's OpenSearch, or
//! `RIPPLE_TEST_SEARCH_URL`): documents follow upserts, deletes and truncates, unchanged values are
//! kept, stale changes never win, fields are mapped from the schema (JSON of any shape included),
//! and a document the index rejects is a permanent error naming it.

use elasticsearch::indices::{IndicesDeleteParts, IndicesRefreshParts};
use elasticsearch::{GetParts, SearchParts};
use ripple_sink::{
    ChangeEvent, Column, ColumnType, Op, Origin, Sink, TableRef, TableSchema, Target, Value,
    Version,
};
use ripple_sink_elasticsearch::{ElasticsearchSink, JsonFields};
use serde_json::{Value as Json, json};
use std::sync::Arc;

mod common;
use common::{config, url};

async fn sink(index: &str) -> ElasticsearchSink {
    let sink = ElasticsearchSink::new("search", "sinks.search", config(index)).unwrap();
    sink.ready().await.unwrap_or_else(|e| {
        panic!(
            "search node at {} is not reachable ({e}): run scripts/stack up",
            url()
        )
    });
    let _ = sink
        .client()
        .indices()
        .delete(IndicesDeleteParts::Index(&[&format!("{index}-*")]))
        .send()
        .await;
    sink
}

fn schema(table: &str) -> Arc<TableSchema> {
    let col = Column::new;
    Arc::new(TableSchema {
        table: TableRef::new("public", table),
        columns: vec![
            col("id", ColumnType::Int64),
            col("title", ColumnType::Text),
            col(
                "price",
                ColumnType::Decimal {
                    precision: None,
                    scale: None,
                },
            ),
            col("body", ColumnType::Text),
        ],
        key: vec![0],
    })
}

fn upsert(s: &Arc<TableSchema>, id: i64, title: &str, body: Value, change: u64) -> ChangeEvent {
    ChangeEvent {
        schema: s.clone(),
        op: Op::Upsert,
        row: Some(vec![
            Value::Int(id),
            Value::Text(title.into()),
            Value::Decimal("19.90".into()),
            body,
        ]),
        key: vec![Value::Int(id)],
        before: None,
        version: Version { commit: 1, change },
        source_ts_ms: 0,
        origin: Origin {
            topic: Arc::from("t"),
            partition: 0,
            offset: 0,
        },
    }
}

fn op(s: &Arc<TableSchema>, op: Op, id: i64, change: u64) -> ChangeEvent {
    let key = if op == Op::Truncate {
        vec![]
    } else {
        vec![Value::Int(id)]
    };
    ChangeEvent {
        op,
        row: None,
        key,
        ..upsert(s, id, "", Value::Null, change)
    }
}

async fn doc(sink: &ElasticsearchSink, index: &str, id: &str) -> Option<Json> {
    let r = sink
        .client()
        .get(GetParts::IndexId(index, id))
        .send()
        .await
        .unwrap();
    let body: Json = r.json().await.unwrap();
    body["found"]
        .as_bool()
        .unwrap_or(false)
        .then(|| body["_source"].clone())
}

async fn ids(sink: &ElasticsearchSink, index: &str) -> Vec<String> {
    sink.client()
        .indices()
        .refresh(IndicesRefreshParts::Index(&[index]))
        .send()
        .await
        .unwrap();
    let r = sink
        .client()
        .search(SearchParts::Index(&[index]))
        .body(json!({"size": 100, "sort": ["id"]}))
        .send()
        .await
        .unwrap();
    let body: Json = r.json().await.unwrap();
    body["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn documents_follow_changes_and_never_go_back() {
    let sink = sink("rtest-docs").await;
    let s = schema("Products");
    let index = "rtest-docs-products";
    let batch = vec![
        upsert(&s, 1, "one", Value::Null, 10),
        upsert(&s, 2, "two", Value::Null, 11),
        upsert(&s, 3, "three", Value::Null, 12),
        upsert(&s, 1, "one again", Value::Text("long".into()), 13),
        op(&s, Op::Delete, 2, 14),
    ];
    sink.apply(Target::of(&s.table), &batch).await.unwrap();
    sink.apply(Target::of(&s.table), &batch).await.unwrap();
    assert_eq!(ids(&sink, index).await, ["1", "3"]);
    let one = doc(&sink, index, "1").await.unwrap();
    assert_eq!(one["title"], "one again");
    assert_eq!(one["price"], "19.90", "decimals keep their digits");

    // Stale changes: an older update, an older insert of a deleted document.
    sink.apply(
        Target::of(&s.table),
        &[
            upsert(&s, 1, "stale", Value::Null, 12),
            upsert(&s, 2, "resurrected", Value::Null, 11),
        ],
    )
    .await
    .unwrap();
    assert_eq!(doc(&sink, index, "1").await.unwrap()["title"], "one again");
    assert!(
        doc(&sink, index, "2").await.is_none(),
        "a delete wins against an older insert"
    );

    // An unchanged large value arrives as unavailable and stays as it was.
    sink.apply(
        Target::of(&s.table),
        &[upsert(&s, 1, "renamed", Value::Unavailable, 20)],
    )
    .await
    .unwrap();
    let one = doc(&sink, index, "1").await.unwrap();
    assert_eq!(
        (one["title"].as_str(), one["body"].as_str()),
        (Some("renamed"), Some("long"))
    );

    sink.apply(
        Target::of(&s.table),
        &[
            op(&s, Op::Truncate, 0, 30),
            upsert(&s, 4, "after", Value::Null, 31),
        ],
    )
    .await
    .unwrap();
    assert_eq!(ids(&sink, index).await, ["4"]);
}

/// Drops `index`, so the node forgets the versions it kept for it, and returns a sink that has not
/// seen the index yet, as after a restart of Ripple too.
async fn forget(sink: &ElasticsearchSink, prefix: &str, index: &str) -> ElasticsearchSink {
    sink.client()
        .indices()
        .delete(IndicesDeleteParts::Index(&[index]))
        .send()
        .await
        .unwrap();
    ElasticsearchSink::new("search", "sinks.search", config(prefix)).unwrap()
}

/// The index keeps a deleted document's version in memory only, and forgets it when the node
/// restarts; dropping the index here forgets it the same way (and more). The sink's own tombstones
/// and truncate record must still refuse the stale writes.
#[tokio::test]
async fn deletes_and_truncates_outlive_an_index_that_forgot_them() {
    let sink = sink("rtest-tomb").await;
    let s = schema("items");
    let index = "rtest-tomb-items";
    let target = Target::of(&s.table);
    let forget = || forget(&sink, "rtest-tomb", index);
    sink.apply(
        target,
        &[
            upsert(&s, 1, "one", Value::Null, 5),
            upsert(&s, 2, "two", Value::Null, 6),
            op(&s, Op::Delete, 1, 9),
        ],
    )
    .await
    .unwrap();
    let fresh = forget().await;
    fresh
        .apply(
            target,
            &[
                upsert(&s, 1, "stale", Value::Null, 7),
                upsert(&s, 2, "two again", Value::Null, 8),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        ids(&fresh, index).await,
        ["2"],
        "an insert older than the row's delete stays out"
    );
    fresh
        .apply(target, &[upsert(&s, 1, "reborn", Value::Null, 10)])
        .await
        .unwrap();
    assert_eq!(doc(&fresh, index, "1").await.unwrap()["title"], "reborn");

    fresh
        .apply(target, &[op(&s, Op::Truncate, 0, 20)])
        .await
        .unwrap();
    let fresh = forget().await;
    fresh
        .apply(
            target,
            &[
                upsert(&s, 3, "before the truncate", Value::Null, 15),
                upsert(&s, 4, "after it", Value::Null, 21),
            ],
        )
        .await
        .unwrap();
    assert_eq!(ids(&fresh, index).await, ["4"], "the truncate still holds");
}

/// The tombstones a sink wrote count before any refresh makes them searchable: with refreshes of
/// the meta index turned off, a delete, then the index forgetting it, then a stale insert through
/// the same sink must still leave the row out.
#[tokio::test]
async fn tombstones_not_yet_searchable_still_refuse_stale_writes() {
    let sink = sink("rtest-held").await;
    let s = schema("items");
    let index = "rtest-held-items";
    let target = Target::of(&s.table);
    sink.apply(target, &[upsert(&s, 1, "one", Value::Null, 5)])
        .await
        .unwrap();
    let settings = sink
        .client()
        .indices()
        .put_settings(elasticsearch::indices::IndicesPutSettingsParts::Index(&[
            "rtest-held-meta",
        ]))
        .body(json!({"index": {"refresh_interval": "-1"}}))
        .send()
        .await
        .unwrap();
    assert!(settings.status_code().is_success());
    sink.apply(
        target,
        &[
            op(&s, Op::Delete, 1, 9),
            upsert(&s, 2, "two", Value::Null, 10),
        ],
    )
    .await
    .unwrap();
    sink.client()
        .indices()
        .delete(IndicesDeleteParts::Index(&[index]))
        .send()
        .await
        .unwrap();
    sink.apply(
        target,
        &[
            upsert(&s, 1, "stale", Value::Null, 7),
            upsert(&s, 3, "three", Value::Null, 11),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        ids(&sink, index).await,
        ["3"],
        "an insert older than a delete not yet searchable stays out"
    );
}

/// Tombstones are read in slices of `bulk_max_docs` ids (3 here), the first slice also holding
/// the truncate record: each tombstone must still be matched to its own id.
#[tokio::test]
async fn tombstones_read_in_slices_stay_with_their_ids() {
    let sink = sink("rtest-slices").await;
    let s = schema("items");
    let index = "rtest-slices-items";
    let target = Target::of(&s.table);
    let mut batch: Vec<ChangeEvent> = (1..=8)
        .map(|i| upsert(&s, i, "first", Value::Null, i as u64))
        .collect();
    batch.extend(
        (2..=8)
            .step_by(2)
            .map(|i| op(&s, Op::Delete, i, 100 + i as u64)),
    );
    sink.apply(target, &batch).await.unwrap();
    let fresh = forget(&sink, "rtest-slices", index).await;
    // Every id again, older than the deletes: only the ids never deleted may come back.
    let stale: Vec<ChangeEvent> = (1..=8)
        .map(|i| upsert(&s, i, "stale", Value::Null, 50 + i as u64))
        .collect();
    fresh.apply(target, &stale).await.unwrap();
    assert_eq!(ids(&fresh, index).await, ["1", "3", "5", "7"]);
}

/// Every document of a `_bulk` the index refuses is reported, in one answer; every other one is
/// written (read back with a search).
#[tokio::test]
async fn every_rejected_document_is_reported_and_the_rest_is_written() {
    let sink = sink("rtest-reject").await;
    let s = schema("items");
    let index = sink.index_name(Target::of(&s.table));
    sink.apply(Target::of(&s.table), &[upsert(&s, 1, "ok", Value::Null, 1)])
        .await
        .unwrap();
    // `title` is mapped as text now; an object there is a mapping error.
    let bad = |id: i64, v: u64| {
        let mut e = upsert(&s, id, "x", Value::Null, v);
        e.row.as_mut().unwrap()[1] = Value::Json(r#"{"nested": true}"#.into());
        e
    };
    // Ten changes in bulks of 3, two in flight: each refusal must come back to its own change
    // whichever request answers it.
    let refused = [1, 3, 7, 9];
    let batch: Vec<ChangeEvent> = (0..10)
        .map(|i| {
            let (id, version) = (i as i64 + 2, i as u64 + 3);
            if refused.contains(&i) {
                bad(id, version)
            } else {
                upsert(&s, id, "fine", Value::Null, version)
            }
        })
        .collect();
    let err = sink.apply(Target::of(&s.table), &batch).await.unwrap_err();
    assert!(!err.is_retriable(), "{err}");
    let at: Vec<usize> = err.rejections.iter().map(|r| r.index).collect();
    assert_eq!(at, refused, "{err}");
    assert!(
        err.rejections[0]
            .reason
            .contains("mapper_parsing_exception")
            || err.rejections[0]
                .reason
                .contains("document_parsing_exception"),
        "{:?}",
        err.rejections
    );
    let want: Vec<String> = std::iter::once(1)
        .chain((0..10).filter(|i| !refused.contains(i)).map(|i| i + 2))
        .map(|id| id.to_string())
        .collect();
    assert_eq!(ids(&sink, &index).await, want);
}

#[tokio::test]
async fn read_back_fetches_documents_as_stored_counts_and_lists_them() {
    use ripple_sink::StoredRow;
    let sink = sink("rtest-rb").await;
    let s = schema("items");
    // The route's target names the index here, over the sink's own template.
    let target = Target::of(&s.table).with_template(Some("rtest-rb-catalog"));
    let read = sink.read_back().expect("the search sink reads back");
    assert!(!read.has_table(target).await.unwrap());
    sink.apply(
        target,
        &[
            upsert(&s, 1, "one", Value::Null, 10),
            upsert(&s, 2, "two", Value::Null, 11),
        ],
    )
    .await
    .unwrap();
    assert!(read.has_table(target).await.unwrap());
    assert_eq!(ids(&sink, "rtest-rb-catalog").await, ["1", "2"]);
    let ids: Vec<String> = ["2", "3", "1"].map(String::from).into();
    let stored = read.fetch(target, &ids).await.unwrap();
    match &stored[0] {
        Some(StoredRow::Document(doc)) => {
            assert_eq!(doc["title"], "two", "{doc}");
            assert_eq!(doc["id"], 2, "{doc}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(stored[1], None);
    assert!(matches!(&stored[2], Some(StoredRow::Document(d)) if d["title"] == "one"));
    assert_eq!(read.count(target).await.unwrap(), Some(2));
    assert!(read.stores_non_finite_as_null());
    let (mut listed, mut cursor) = (Vec::new(), None);
    loop {
        let (page, next) = read.stored_ids(target, cursor).await.unwrap();
        listed.extend(page);
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    listed.sort();
    assert_eq!(listed, ["1", "2"]);
}

/// An index that refuses writes for its own reasons (a write block, as a disk watermark or an
/// operator sets it) is an outage: every document is refused, but none for its data, so the error
/// is retriable and names no event; once the block is lifted the same batch applies.
#[tokio::test]
async fn a_write_block_is_an_outage_not_bad_data() {
    let sink = sink("sink-es-it-block").await;
    let s = schema("blocked");
    let target = Target::of(&s.table);
    sink.apply(target, &[upsert(&s, 1, "first", Value::Null, 1)])
        .await
        .unwrap();
    let index = sink.index_name(target);
    let block = |on: bool| {
        let client = sink.client().clone();
        let index = index.clone();
        async move {
            let r = client
                .indices()
                .put_settings(elasticsearch::indices::IndicesPutSettingsParts::Index(&[
                    &index,
                ]))
                .body(json!({"index.blocks.write": on}))
                .send()
                .await
                .unwrap();
            assert!(r.status_code().is_success(), "{:?}", r.text().await);
        }
    };
    block(true).await;
    let err = sink
        .apply(target, &[upsert(&s, 2, "second", Value::Null, 2)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cluster_block_exception"), "{err}");
    assert!(err.is_retriable(), "a write block must be an outage: {err}");
    assert_eq!(err.event_index, None, "no event is to blame: {err}");
    block(false).await;
    sink.apply(target, &[upsert(&s, 2, "second", Value::Null, 2)])
        .await
        .unwrap();
}

/// A table with a JSON column whose values vary in shape from row to row.
fn shapes_schema(extra: bool) -> Arc<TableSchema> {
    let col = Column::new;
    let mut columns = vec![
        col("id", ColumnType::Int64),
        col("doc", ColumnType::Json),
        col("at", ColumnType::TimestampTz),
        col(
            "price",
            ColumnType::Decimal {
                precision: None,
                scale: None,
            },
        ),
        col("tags", ColumnType::Array(Box::new(ColumnType::Text))),
    ];
    if extra {
        columns.push(col("added", ColumnType::Int32));
    }
    Arc::new(TableSchema {
        table: TableRef::new("public", "shapes"),
        columns,
        key: vec![0],
    })
}

fn shaped(s: &Arc<TableSchema>, id: i64, doc: &str) -> ChangeEvent {
    let mut e = upsert(s, id, "", Value::Null, id as u64);
    let mut row = vec![
        Value::Int(id),
        Value::Json(doc.into()),
        Value::TimestampTz(1_700_000_000_000_000),
        Value::Decimal("1e400".into()),
        Value::Array(vec![Value::Text("a".into()), Value::Null]),
    ];
    if s.columns.len() > 5 {
        row.push(Value::Int(7));
    }
    e.row = Some(row);
    e
}

async fn mapping_of(sink: &ElasticsearchSink, index: &str) -> Json {
    let r = sink
        .client()
        .indices()
        .get_mapping(elasticsearch::indices::IndicesGetMappingParts::Index(&[
            index,
        ]))
        .send()
        .await
        .unwrap();
    let body: Json = r.json().await.unwrap();
    body[index]["mappings"]["properties"].clone()
}

#[tokio::test]
async fn fields_are_mapped_from_the_schema_and_json_of_any_shape_is_kept() {
    let sink = sink("rtest-shapes").await;
    let s = shapes_schema(false);
    let index = sink.index_name(Target::of(&s.table));
    // Dynamic mapping would type `doc.arr` by the first document (long) and refuse the others.
    let docs = [
        r#"{"arr": [1, "x"]}"#,
        r#"{"arr": {"o": 1}}"#,
        r#"[1, "two", {"three": 3}]"#,
        r#""just a string""#,
        "42",
        r#"{"a": {"b": {"c": {"d": [[1, [2]], {"e": true}]}}}}"#,
        "{}",
        "[]",
    ];
    let events: Vec<ChangeEvent> = (1..).zip(docs).map(|(id, d)| shaped(&s, id, d)).collect();
    sink.apply(Target::of(&s.table), &events).await.unwrap();
    assert_eq!(ids(&sink, &index).await.len(), docs.len());
    let m = mapping_of(&sink, &index).await;
    assert_eq!(m["id"]["type"], "long", "{m}");
    assert_eq!(m["doc"]["enabled"], false, "{m}");
    assert_eq!(m["at"]["type"], "date", "{m}");
    assert_eq!(m["price"]["type"], "double", "{m}");
    assert_eq!(m["tags"]["type"], "text", "{m}");
    // Kept exactly, whatever the field's type: 1e400 is beyond a double and stays unindexed.
    let got = sink
        .client()
        .get(GetParts::IndexId(&index, "3"))
        .send()
        .await
        .unwrap()
        .json::<Json>()
        .await
        .unwrap();
    assert_eq!(got["_source"]["doc"], json!([1, "two", {"three": 3}]));
    assert_eq!(got["_source"]["price"], "1e400");

    // A column added to the source extends the mapping before any document holds it.
    let s2 = shapes_schema(true);
    sink.apply(Target::of(&s2.table), &[shaped(&s2, 20, "{}")])
        .await
        .unwrap();
    assert_eq!(mapping_of(&sink, &index).await["added"]["type"], "integer");
}

#[tokio::test]
async fn flat_json_fields_take_objects_of_any_shape_and_search_them_by_path() {
    let mut c = config("rtest-flat");
    c.json_fields = JsonFields::Flat;
    let sink = ElasticsearchSink::new("search", "sinks.search", c).unwrap();
    let _ = sink
        .client()
        .indices()
        .delete(IndicesDeleteParts::Index(&["rtest-flat-*"]))
        .send()
        .await;
    let s = shapes_schema(false);
    let index = sink.index_name(Target::of(&s.table));
    sink.apply(
        Target::of(&s.table),
        &[
            shaped(&s, 1, r#"{"arr": [1, "x"]}"#),
            shaped(&s, 2, r#"{"arr": {"o": 1}}"#),
            shaped(&s, 3, r#"{"arr": 5}"#),
        ],
    )
    .await
    .unwrap();
    assert_eq!(ids(&sink, &index).await, ["1", "2", "3"]);
    assert_eq!(
        mapping_of(&sink, &index).await["doc"]["type"],
        "flat_object"
    );
    let r = sink
        .client()
        .search(SearchParts::Index(&[&index]))
        .body(json!({"query": {"term": {"doc.arr": "x"}}}))
        .send()
        .await
        .unwrap();
    let body: Json = r.json().await.unwrap();
    let hits: Vec<&str> = body["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_id"].as_str().unwrap())
        .collect();
    assert_eq!(hits, ["1"], "{body}");
    // Not an object: the one document is refused, as the option's documentation says.
    let err = sink
        .apply(Target::of(&s.table), &[shaped(&s, 4, "[1, 2]")])
        .await
        .unwrap_err();
    assert_eq!(err.rejections.len(), 1, "{err}");
}
