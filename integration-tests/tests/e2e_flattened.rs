//! Records flattened by Debezium's `ExtractNewRecordState` transform (the "unwrap" many sink
//! setups use): each value is the row itself plus `__deleted` (deletes rewritten, not dropped) and
//! the added `__op`, `__lsn`, `__source_ts_ms`, `__schema`, `__table` fields. The seed workload
//! (inserts, updates, deletes) through real Debezium with the transform must leave the replica,
//! Redis and the search index equal to the source; once with the records' schemas, once as JSON
//! without schemas typed from the source's catalog.

mod common;

use common::*;
use std::time::Duration;

const UNWRAP: &str = r#"{"transforms": "unwrap",
  "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState",
  "transforms.unwrap.delete.tombstone.handling.mode": "rewrite",
  "transforms.unwrap.add.fields": "op,lsn,source.ts_ms,schema,table"}"#;

#[test]
fn flattened_records_replicate_into_every_store() {
    flattened("e2e_flat", UNWRAP, "");
}

#[test]
fn flattened_records_without_schemas_replicate_into_every_store() {
    let settings = UNWRAP.replace(
        "{",
        r#"{"key.converter.schemas.enable": "false", "value.converter.schemas.enable": "false","#,
    );
    flattened(
        "e2e_flat_noschema",
        &settings,
        "\n[decode.schemaless]\ntypes_from = \"source\"\ndecimal_handling_mode = \"string\"\n",
    );
}

fn flattened(name: &str, settings: &str, decode: &str) {
    require_stack();
    let t = unique(name);
    let dir = temp_dir(&t);
    let setup = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &t, "--drop", "--setup", "--count", "300",
    ]);
    assert!(setup.status.success(), "loadgen failed: {}", text(&setup));
    let connector = Connector::with_settings(
        &t.replace('_', "-"),
        &t,
        &format!("public.{t}"),
        1,
        settings,
    );
    let topic = connector.topic(&t);
    let extra = format!(
        "\n[sinks.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:16379\"\nformat = \"json\"\n\
         \n[sinks.search]\ntype = \"elasticsearch\"\nurl = \"http://127.0.0.1:9251\"\n\
         \n[[routes]]\ntopics = [\"{topic}\"]\nsinks = [\"cache\", \"search\"]\n{decode}"
    );
    let config = write_config(&dir, std::slice::from_ref(&topic), &t, &extra);
    let run = RippleProcess::start(&config, &[]);
    let load = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &t, "--count", "1500", "--seed", "5",
    ]);
    assert!(load.status.success(), "loadgen failed: {}", text(&load));
    let last = wait_verified(&config, &format!("public.{t}"), 3, Duration::from_secs(90));
    assert!(run.signal("TERM").success());

    // The records really were flattened, deletes rewritten.
    let records = consume(&topic, 2000);
    assert!(
        records
            .iter()
            .all(|r| !r.contains("\"before\"") && (decode.is_empty() == r.contains("\"schema\""))),
        "an envelope among the records: {:?}",
        records.first()
    );
    assert!(
        records.iter().any(|r| r.contains("\"__deleted\":\"true\"")),
        "no rewritten delete among {} records",
        records.len()
    );
    let rows: i64 = psql(REPLICA_URL, &format!("SELECT count(*) FROM public.{t}"))
        .parse()
        .unwrap();
    assert!(rows > 100, "replica holds only {rows} rows: {last}");

    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    search_request("DELETE", &t, None);
}
