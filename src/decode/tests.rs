//! Decoder tests on real Debezium output captured from the stack (see `testdata/`).

use super::*;

fn topic() -> Arc<str> {
    Arc::from("ripple.public.transactions")
}

fn record<'a>(topic: &'a Arc<str>, key: Option<&'a str>, value: Option<&'a str>) -> Record<'a> {
    Record {
        topic,
        partition: 0,
        offset: 7,
        key: key.map(str::as_bytes),
        value: value.map(str::as_bytes),
    }
}

#[test]
fn tombstone_is_skipped() {
    let t = topic();
    let mut d = Decoder::new();
    assert!(matches!(
        d.decode(&record(&t, Some("{}"), None)).unwrap(),
        Decoded::Skip(Skip::Tombstone)
    ));
}

#[test]
fn garbage_is_a_clear_error() {
    let t = topic();
    let mut d = Decoder::new();
    let err = d.decode(&record(&t, None, Some("not json"))).unwrap_err();
    assert!(err.reason.contains("not JSON"), "{err}");
    let err = d.decode(&record(&t, None, Some(r#"{"a":1}"#))).unwrap_err();
    assert!(err.reason.contains("schema"), "{err}");
}

const KEY: &str = include_str!("testdata/synthetic-update.key.json");
const VALUE: &str = include_str!("testdata/synthetic-update.value.json");

fn change(d: &mut Decoder, t: &Arc<str>, key: &str, value: &str) -> ChangeEvent {
    match d.decode(&record(t, Some(key), Some(value))).unwrap() {
        Decoded::Change(e) => e,
        other => panic!("expected a change, got {other:?}"),
    }
}

#[test]
fn seed_table_update_decodes_every_column() {
    let t = topic();
    let mut d = Decoder::new();
    let e = change(&mut d, &t, KEY, VALUE);
    assert_eq!(e.op, Op::Upsert);
    assert_eq!(e.table(), &TableRef::new("public", "transactions"));
    assert_eq!(
        e.key,
        vec![Value::Text("6f1c2a4e-0c2b-4d9e-9a57-1b2c3d4e5f60".into())]
    );
    assert_eq!(
        e.version,
        Version {
            commit: 26543000,
            change: 26543432
        }
    );
    assert_eq!(e.source_ts_ms, 1741944415000);
    assert_eq!(e.origin.offset, 7);
    let row = e.row.as_ref().unwrap();
    let col = |name: &str| &row[e.schema.column_index(name).unwrap()];
    assert_eq!(col("timestamp"), &Value::Timestamp(1741944413589793));
    assert_eq!(col("amount"), &Value::Decimal("123.40".into()));
    assert_eq!(col("city"), &Value::Text("Lake \"Anna\"".into()));
    assert_eq!(col("voucher_code"), &Value::Text(String::new()));
    assert!(
        matches!(col("change_info"), Value::Json(j) if j.starts_with("{\"amount\": {\"new\": 123.40"))
    );
    assert_eq!(e.schema.key, vec![0]);
    let amount = &e.schema.columns[e.schema.column_index("amount").unwrap()];
    assert_eq!(
        amount.ty,
        ripple_sink::ColumnType::Decimal {
            precision: None,
            scale: None
        }
    );
}

#[test]
fn one_schema_arc_per_distinct_schema() {
    let t = topic();
    let mut d = Decoder::new();
    let a = change(&mut d, &t, KEY, VALUE);
    let b = change(&mut d, &t, KEY, VALUE);
    assert!(
        Arc::ptr_eq(&a.schema, &b.schema),
        "sinks cache plans by schema identity"
    );
}

#[test]
fn delete_and_truncate() {
    let t = topic();
    let mut d = Decoder::new();
    let v: serde_json::Value = serde_json::from_str(VALUE).unwrap();
    let mut del = v.clone();
    del["payload"]["before"] = del["payload"]["after"].take();
    del["payload"]["after"] = serde_json::Value::Null;
    del["payload"]["op"] = "d".into();
    let e = change(&mut d, &t, KEY, &del.to_string());
    assert_eq!(e.op, Op::Delete);
    assert!(e.row.is_none());
    assert_eq!(
        e.key,
        vec![Value::Text("6f1c2a4e-0c2b-4d9e-9a57-1b2c3d4e5f60".into())]
    );

    let mut trunc = v.clone();
    trunc["payload"]["after"] = serde_json::Value::Null;
    trunc["payload"]["op"] = "t".into();
    match d
        .decode(&record(&t, None, Some(&trunc.to_string())))
        .unwrap()
    {
        Decoded::Change(e) => {
            assert_eq!(e.op, Op::Truncate);
            assert!(e.key.is_empty());
            assert_eq!(e.table().name, "transactions");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_payloads_name_the_problem() {
    let t = topic();
    let mut d = Decoder::new();
    let v: serde_json::Value = serde_json::from_str(VALUE).unwrap();
    let mut bad_op = v.clone();
    bad_op["payload"]["op"] = "x".into();
    let err = d
        .decode(&record(&t, Some(KEY), Some(&bad_op.to_string())))
        .unwrap_err();
    assert!(err.reason.contains("unknown op \"x\""), "{err}");

    let mut bad_type = v.clone();
    bad_type["payload"]["after"]["timestamp"] = "yesterday".into();
    let err = d
        .decode(&record(&t, Some(KEY), Some(&bad_type.to_string())))
        .unwrap_err();
    assert!(err.reason.contains("does not match its schema"), "{err}");

    let mut extra = v.clone();
    extra["payload"]["after"]["surprise"] = 1.into();
    let err = d
        .decode(&record(&t, Some(KEY), Some(&extra.to_string())))
        .unwrap_err();
    assert!(err.reason.contains("surprise"), "{err}");
}

#[test]
fn transaction_markers_are_skipped() {
    let t: Arc<str> = Arc::from("ripple.transaction");
    let mut d = Decoder::new();
    let value = r#"{"schema":{"type":"struct","name":"io.debezium.connector.common.TransactionMetadataValue","optional":false,"fields":[{"field":"status","type":"string","optional":false}]},"payload":{"status":"BEGIN"}}"#;
    assert!(matches!(
        d.decode(&record(&t, None, Some(value))).unwrap(),
        Decoded::Skip(Skip::TransactionMarker)
    ));
}

#[test]
fn repeated_schema_fast_path_still_checks_the_payload() {
    let t = topic();
    let mut d = Decoder::new();
    change(&mut d, &t, KEY, VALUE);
    // Same schema bytes, so the payload is sliced out without re-parsing the schema...
    let broken = VALUE.replacen("\"op\":\"u\"", "\"op\":\"u\",", 1);
    assert!(
        d.decode(&record(&t, Some(KEY), Some(&broken))).is_err(),
        "a broken payload is still an error"
    );
    let trailing = format!("{}x}}", &VALUE[..VALUE.len() - 1]);
    assert!(
        d.decode(&record(&t, Some(KEY), Some(&trailing))).is_err(),
        "trailing bytes are an error"
    );
    // ...and a different schema is parsed afresh.
    let other = VALUE.replace(
        "\"name\":\"ripple.public.transactions.Envelope\"",
        "\"name\":\"x.Envelope\"",
    );
    let e = change(&mut d, &t, KEY, &other);
    assert_eq!(e.op, Op::Upsert);
}

/// The decoder never panics, whatever arrives: arbitrary bytes, and real records with arbitrary
/// bytes spliced in, cut short, or a value replaced by another JSON value. Each input is decoded
/// twice by one decoder, so the schema cache's fast path is exercised as well.
mod never_panics {
    use super::*;
    use proptest::prelude::*;

    fn decode_twice(key: Option<&[u8]>, value: Option<&[u8]>) {
        let t = topic();
        let mut d = Decoder::new();
        for _ in 0..2 {
            let r = Record {
                topic: &t,
                partition: 0,
                offset: 1,
                key,
                value,
            };
            let _ = d.decode(&r);
        }
    }

    fn json_value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<f64>().prop_map(|f| format!("{f:?}")),
            "[a-zA-Z0-9 _\\-:.]{0,20}".prop_map(|s| format!("{s:?}")),
            Just("[]".to_string()),
            Just("{}".to_string()),
            Just("[1,[2,{\"a\":null}]]".to_string()),
            Just("\"__debezium_unavailable_value\"".to_string()),
            Just("\"AAAA\"".to_string()),
            Just("{\"scale\":-3,\"value\":\"//8=\"}".to_string()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn on_arbitrary_bytes(key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
                              value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..512))) {
            decode_twice(key.as_deref(), value.as_deref());
        }

        #[test]
        fn on_damaged_real_records(at in 0usize..VALUE.len(), cut in 0usize..VALUE.len(),
                                   junk in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut spliced = VALUE.as_bytes().to_vec();
            spliced.splice(at..at, junk.iter().copied());
            decode_twice(Some(KEY.as_bytes()), Some(&spliced));
            decode_twice(Some(KEY.as_bytes()), Some(&VALUE.as_bytes()[..cut]));
        }

        #[test]
        fn on_real_records_with_a_value_replaced(nth in 0usize..400, replacement in json_value()) {
            // Replace the nth JSON scalar of the payload (a string, number, bool or null) with
            // something else: a type the schema does not expect, a bad base64, a huge number.
            let payload_at = VALUE.find("\"payload\"").unwrap_or(0);
            let mut scalars = Vec::new();
            let bytes = VALUE.as_bytes();
            let mut i = payload_at;
            while i < bytes.len() {
                if bytes[i] == b':' {
                    let start = i + 1;
                    let end = VALUE[start..].find([',', '}']).map_or(VALUE.len(), |e| start + e);
                    if !VALUE[start..end].trim_start().starts_with(['{', '[']) {
                        scalars.push((start, end));
                    }
                }
                i += 1;
            }
            prop_assume!(!scalars.is_empty());
            let (start, end) = scalars[nth % scalars.len()];
            let changed = format!("{}{}{}", &VALUE[..start], replacement, &VALUE[end..]);
            decode_twice(Some(KEY.as_bytes()), Some(changed.as_bytes()));
        }

        #[test]
        fn on_schemaless_records_damaged_or_with_a_value_replaced(
            line in 0usize..4, at in 0usize..2000, junk in proptest::collection::vec(any::<u8>(), 0..16),
            nth in 0usize..60, replacement in json_value(),
        ) {
            // Schemaless records are typed from declared columns, so a value of the wrong JSON
            // type reaches the field decoders directly.
            let value = SCHEMALESS.lines().nth(line).unwrap();
            let t: Arc<str> = Arc::from("slprobe.public.slprobe");
            let mut d = schemaless_decoder();
            let mut spliced = value.as_bytes().to_vec();
            let at = at % (spliced.len() + 1);
            spliced.splice(at..at, junk.iter().copied());
            let colons: Vec<usize> = value.match_indices(':').map(|(i, _)| i + 1).collect();
            let start = colons[nth % colons.len()];
            let end = value[start..].find([',', '}']).map_or(value.len(), |e| start + e);
            let changed = format!("{}{}{}", &value[..start], replacement, &value[end..]);
            for v in [&spliced[..], changed.as_bytes(), &value.as_bytes()[..at.min(value.len())]] {
                let r = Record { topic: &t, partition: 0, offset: 1, key: Some(br#"{"id":1}"#), value: Some(v) };
                let _ = d.decode(&r);
            }
        }
    }
}

/// A row as `ExtractNewRecordState` writes it, with deletes rewritten and fields added.
fn flat_value(id: i32, name: Option<&str>, deleted: bool, lsn: Option<i64>) -> String {
    let schema = r#"{"type":"struct","name":"p.public.items.Value","optional":false,"fields":[
        {"type":"int32","optional":false,"field":"id"},
        {"type":"string","optional":true,"field":"name"},
        {"type":"string","optional":true,"field":"__op"},
        {"type":"int64","optional":true,"field":"__lsn"},
        {"type":"string","optional":true,"field":"__schema"},
        {"type":"string","optional":true,"field":"__table"},
        {"type":"string","optional":true,"field":"__deleted"}]}"#;
    let lsn = lsn.map_or("null".to_string(), |l| l.to_string());
    let name = name.map_or("null".to_string(), |n| format!("{n:?}"));
    let op = if deleted { "d" } else { "u" };
    format!(
        r#"{{"schema":{schema},"payload":{{"id":{id},"name":{name},"__op":"{op}","__lsn":{lsn},"__schema":"public","__table":"items","__deleted":"{deleted}"}}}}"#
    )
}

fn flat_key(id: i32) -> String {
    format!(
        r#"{{"schema":{{"type":"struct","name":"p.public.items.Key","optional":false,"fields":[{{"type":"int32","optional":false,"field":"id"}}]}},"payload":{{"id":{id}}}}}"#
    )
}

#[test]
fn flattened_rows_are_upserts_and_rewritten_deletes() {
    let t: Arc<str> = Arc::from("p.public.items");
    let mut d = Decoder::new();
    let up = change(
        &mut d,
        &t,
        &flat_key(1),
        &flat_value(1, Some("one"), false, Some(500)),
    );
    assert_eq!(up.op, Op::Upsert);
    assert_eq!(up.table(), &TableRef::new("public", "items"));
    assert_eq!(
        up.schema
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["id", "name"],
        "the transform's fields are not columns"
    );
    assert_eq!(
        up.row.as_deref().unwrap(),
        [Value::Int(1), Value::Text("one".into())]
    );
    assert_eq!(up.version.change, 500);
    let del = change(
        &mut d,
        &t,
        &flat_key(1),
        &flat_value(1, None, true, Some(600)),
    );
    assert_eq!(
        (del.op, del.key.clone(), del.row.clone()),
        (Op::Delete, vec![Value::Int(1)], None)
    );
    let err = d
        .decode(&record(
            &t,
            Some(&flat_key(2)),
            Some(&flat_value(2, None, false, None)),
        ))
        .unwrap_err();
    assert!(err.reason.contains("add.fields"), "{err}");
}

/// Real Debezium output with `schemas.enable=false` and precise decimals: a snapshot read, an
/// update, a delete and a truncate of `public.slprobe`.
const SCHEMALESS: &str = include_str!("testdata/schemaless-envelopes.jsonl");

/// The columns of `public.slprobe`, the table of the schemaless test records.
const SLPROBE_COLUMNS: [(&str, &str); 9] = [
    ("id", "integer"),
    ("price", "numeric(10,2)"),
    ("n", "numeric"),
    ("ts", "timestamp(3) without time zone"),
    ("tstz", "timestamp with time zone"),
    ("d", "date"),
    ("b", "bytea"),
    ("tags", "text[]"),
    ("j", "jsonb"),
];

fn schemaless_decoder() -> Decoder {
    use schemaless::{Modes, PgType};
    let mut types = ColumnTypes::new(Modes::default(), None);
    let t = TableRef::new("public", "slprobe");
    for (c, ty) in SLPROBE_COLUMNS {
        types.declare(t.clone(), c, PgType::parse(ty).unwrap());
    }
    Decoder::new().schemaless(types)
}

#[test]
fn schemaless_envelopes_decode_with_declared_types() {
    let t: Arc<str> = Arc::from("slprobe.public.slprobe");
    let mut d = schemaless_decoder();
    let lines: Vec<&str> = SCHEMALESS.lines().collect();
    let key = r#"{"id":1}"#;
    let read = change(&mut d, &t, key, lines[0]);
    assert_eq!(read.op, Op::Upsert);
    assert_eq!(read.table(), &TableRef::new("public", "slprobe"));
    assert_eq!(read.key, vec![Value::Int(1)]);
    let row = read.row.as_ref().unwrap();
    let col = |name: &str| {
        read.schema
            .columns
            .iter()
            .position(|c| c.name == name)
            .unwrap()
    };
    assert_eq!(row[col("price")], Value::Decimal("12.34".into()));
    assert_eq!(row[col("n")], Value::Decimal("5.5".into()));
    // 2024-01-01 10:00:00.123 in microseconds.
    assert_eq!(row[col("ts")], Value::Timestamp(1_704_103_200_123_000));
    assert_eq!(row[col("d")], Value::Date(19_782));
    assert_eq!(row[col("b")], Value::Bytes(vec![0x00, 0xff]));
    assert_eq!(
        row[col("tags")],
        Value::Array(vec![Value::Text("a".into()), Value::Text("b".into())])
    );
    assert_eq!(row[col("j")], Value::Json("{\"x\": 1}".into()));
    assert!(matches!(row[col("tstz")], Value::TimestampTz(_)));
    // The replica creates the table from these: the declared types carry over.
    assert_eq!(
        read.schema.columns[col("price")].source_type.as_deref(),
        Some("NUMERIC(10,2)")
    );

    let update = change(&mut d, &t, key, lines[1]);
    assert_eq!(
        update.row.as_ref().unwrap()[col("price")],
        Value::Decimal("1.00".into())
    );
    assert!(update.version > read.version);
    // Same table and fields: the same schema, so sinks reuse their per-schema plans.
    assert!(Arc::ptr_eq(&update.schema, &read.schema));
    let delete = change(&mut d, &t, key, lines[2]);
    assert_eq!(
        (delete.op, delete.key.clone()),
        (Op::Delete, vec![Value::Int(1)])
    );
    let truncate = match d.decode(&record(&t, None, Some(lines[3]))).unwrap() {
        Decoded::Change(e) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(truncate.op, Op::Truncate);
    assert_eq!(truncate.table(), &TableRef::new("public", "slprobe"));
}

#[test]
fn schemaless_records_say_what_is_missing() {
    let t: Arc<str> = Arc::from("slprobe.public.slprobe");
    // Without [decode.schemaless], the error names the setting.
    let mut plain = Decoder::new();
    let line = SCHEMALESS.lines().next().unwrap();
    let err = plain
        .decode(&record(&t, Some(r#"{"id":1}"#), Some(line)))
        .unwrap_err();
    assert!(err.reason.contains("[decode.schemaless]"), "{err}");
    // A column without a known type names the column and where to declare it.
    let mut d = schemaless_decoder();
    let added = line.replace(r#""id":1,"#, r#""id":1,"added":7,"#);
    let err = d
        .decode(&record(&t, Some(r#"{"id":1}"#), Some(&added)))
        .unwrap_err();
    assert!(
        err.reason.contains("\"added\"") && err.reason.contains("decode.schemaless.tables"),
        "{err}"
    );
    // Transaction markers and heartbeats are skipped; other objects are errors.
    let marker = r#"{"status":"BEGIN","id":"16121:589364760","event_count":null,"data_collections":null,"ts_ms":1795636819313}"#;
    assert!(matches!(
        d.decode(&record(&t, None, Some(marker))).unwrap(),
        Decoded::Skip(Skip::TransactionMarker)
    ));
    assert!(matches!(
        d.decode(&record(&t, None, Some(r#"{"ts_ms":1}"#))).unwrap(),
        Decoded::Skip(Skip::Heartbeat)
    ));
    assert!(d.decode(&record(&t, None, Some(r#"{"a":1}"#))).is_err());
    assert!(d.decode(&record(&t, None, Some("[1]"))).is_err());
    // A value that does not fit its declared type is an error, not a guess.
    let bad = line.replace(r#""d":19782"#, r#""d":"soon""#);
    assert!(
        d.decode(&record(&t, Some(r#"{"id":1}"#), Some(&bad)))
            .is_err()
    );
}

#[test]
fn schemaless_flattened_rows_decode() {
    let t: Arc<str> = Arc::from("slprobe.public.slprobe");
    let mut d = schemaless_decoder();
    let row =
        r#"{"id":2,"price":"ZA==","__deleted":"false","__op":"c","__lsn":42,"__source_ts_ms":5}"#;
    let e = change(&mut d, &t, r#"{"id":2}"#, row);
    assert_eq!((e.op, e.key.clone()), (Op::Upsert, vec![Value::Int(2)]));
    assert_eq!(e.row.as_ref().unwrap()[1], Value::Decimal("1.00".into()));
    assert_eq!(e.table(), &TableRef::new("public", "slprobe"));
    let gone = row.replace(r#""__deleted":"false""#, r#""__deleted":"true""#);
    assert_eq!(change(&mut d, &t, r#"{"id":2}"#, &gone).op, Op::Delete);
}

/// Real Avro records (Apicurio's converter, `as-confluent`, precise decimals) of
/// `public.avroprobe (id int, name text, price numeric(10,2), small smallint, ts timestamptz,
/// f real, tags text[])`, and the two writer schemas the stack's registry returned for their ids.
fn avro_decoder() -> Decoder {
    let mut registry = avro::Registry::new();
    registry
        .insert(12, include_str!("testdata/avro-schema-12.json"))
        .unwrap();
    registry
        .insert(13, include_str!("testdata/avro-schema-13.json"))
        .unwrap();
    Decoder::new().avro(registry)
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.trim().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
#[allow(clippy::approx_constant)] // the probe row's real column holds 3.14159
fn avro_records_decode_through_their_registry_schemas() {
    let t: Arc<str> = Arc::from("avroprobe.public.avroprobe");
    let mut d = avro_decoder();
    let key = unhex(include_str!("testdata/avro-key.hex"));
    let value = unhex(include_str!("testdata/avro-read.hex"));
    let r = Record {
        topic: &t,
        partition: 0,
        offset: 0,
        key: Some(&key),
        value: Some(&value),
    };
    let Decoded::Change(e) = d.decode(&r).unwrap() else {
        panic!("not a change")
    };
    assert_eq!((e.op, e.key.clone()), (Op::Upsert, vec![Value::Int(1)]));
    assert_eq!(e.table(), &TableRef::new("public", "avroprobe"));
    let row = e.row.as_ref().unwrap();
    let col = |name: &str| {
        e.schema
            .columns
            .iter()
            .position(|c| c.name == name)
            .unwrap()
    };
    assert_eq!(row[col("name")], Value::Text("héllo".into()));
    assert_eq!(row[col("price")], Value::Decimal("12.34".into()));
    assert_eq!(row[col("small")], Value::Int(-3));
    assert_eq!(row[col("f")], Value::Float(3.14159));
    assert_eq!(row[col("ts")], Value::TimestampTz(1_704_103_200_000_000));
    assert_eq!(
        row[col("tags")],
        Value::Array(vec![Value::Text("a".into()), Value::Null])
    );
    // connect.parameters carry the source types, as JSON schemas do.
    assert_eq!(
        e.schema.columns[col("price")].source_type.as_deref(),
        Some("NUMERIC(10,2)")
    );
    assert_eq!(
        e.schema.columns[col("small")].ty,
        ripple_sink::ColumnType::Int16
    );

    let value = unhex(include_str!("testdata/avro-delete.hex"));
    let r = Record {
        offset: 1,
        value: Some(&value),
        ..r
    };
    let Decoded::Change(gone) = d.decode(&r).unwrap() else {
        panic!("not a change")
    };
    assert_eq!(
        (gone.op, gone.key.clone()),
        (Op::Delete, vec![Value::Int(1)])
    );
    assert!(gone.version > e.version);
}

#[test]
fn avro_problems_are_named() {
    let t: Arc<str> = Arc::from("avroprobe.public.avroprobe");
    let key = unhex(include_str!("testdata/avro-key.hex"));
    let value = unhex(include_str!("testdata/avro-read.hex"));
    let rec = |v: &[u8]| -> Result<Decoded, DecodeError> {
        let mut d = avro_decoder();
        d.decode(&Record {
            topic: &t,
            partition: 0,
            offset: 0,
            key: Some(&key),
            value: Some(v),
        })
    };
    // Without [decode.avro], the error says what to set.
    let err = Decoder::new()
        .decode(&Record {
            topic: &t,
            partition: 0,
            offset: 0,
            key: Some(&key),
            value: Some(&value),
        })
        .unwrap_err();
    assert!(err.reason.contains("[decode.avro]"), "{err}");
    // A truncated datum, trailing bytes, a short header, an unknown id outside a runtime.
    assert!(rec(&value[..value.len() - 3]).is_err());
    let mut longer = value.clone();
    longer.push(0);
    assert!(
        rec(&longer)
            .unwrap_err()
            .reason
            .contains("after its Avro datum")
    );
    assert!(rec(&[0, 0, 0]).is_err());
    let mut other = value.clone();
    other[4] = 99;
    assert!(rec(&other).unwrap_err().reason.contains("99"));
}

mod avro_never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn on_damaged_avro_records(at in 5usize..400, junk in proptest::collection::vec(any::<u8>(), 0..8), cut in 5usize..400) {
            let t: Arc<str> = Arc::from("avroprobe.public.avroprobe");
            let key = unhex(include_str!("testdata/avro-key.hex"));
            let value = unhex(include_str!("testdata/avro-read.hex"));
            let mut d = avro_decoder();
            let mut spliced = value.clone();
            let at = at.min(spliced.len());
            spliced.splice(at..at, junk.iter().copied());
            let mut flipped = value.clone();
            let i = at.min(flipped.len() - 1);
            flipped[i] ^= 0xff;
            for v in [&spliced[..], &flipped[..], &value[..cut.min(value.len())]] {
                let _ = d.decode(&Record { topic: &t, partition: 0, offset: 0, key: Some(&key), value: Some(v) });
            }
        }
    }
}

/// A one-column change record (`id` int key, `v` of the given Connect field schema) holding `v`.
fn one_column_record(field: &str, v: &str, op: &str) -> (String, String) {
    let row = format!(
        r#"{{"type":"struct","optional":true,"name":"p.public.t.Value","fields":[{{"type":"int32","optional":false,"field":"id"}},{{"optional":true,"field":"v",{field}}}],"field":"ROW"}}"#
    );
    let value = format!(
        r#"{{"schema":{{"type":"struct","optional":false,"name":"p.public.t.Envelope","fields":[{},{},{{"type":"struct","optional":false,"name":"io.debezium.connector.postgresql.Source","fields":[],"field":"source"}},{{"type":"string","optional":false,"field":"op"}}]}},"payload":{{"before":null,"after":{{"id":1,"v":{v}}},"source":{{"schema":"public","table":"t","lsn":100,"sequence":"[\"90\",\"100\"]","ts_ms":0}},"op":"{op}"}}}}"#,
        row.replace("ROW", "before"),
        row.replace("ROW", "after")
    );
    let key = r#"{"schema":{"type":"struct","optional":false,"name":"p.public.t.Key","fields":[{"type":"int32","optional":false,"field":"id"}]},"payload":{"id":1}}"#;
    (key.to_string(), value)
}

/// Roughly the bytes a decoded value holds: the value itself and what it owns on the heap.
fn value_size(v: &Value) -> usize {
    std::mem::size_of::<Value>()
        + match v {
            Value::Text(s) | Value::Json(s) | Value::Decimal(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Array(items) => items.iter().map(value_size).sum(),
            _ => 0,
        }
}

mod value_properties {
    //! Value-level properties, type by type: whatever a field of a logical type holds (extreme
    //! scales and instants, invalid base64 and UTF-8 escapes, long strings, huge and nested
    //! arrays, deep JSON), decoding returns a value or an error, never panics, and what it
    //! returns is within a small multiple of the record's size (a decimal's scale alone could
    //! otherwise ask for gigabytes of zeros).
    use super::*;
    use proptest::prelude::*;

    fn b64() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..600).prop_map(|b| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode(b)
            }),
            "[A-Za-z0-9+/=!*\\- ]{0,80}",
        ]
    }

    fn json_text(depth: u32) -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            "[0-9]{1,60}(\\.[0-9]{1,40})?(e[+-]?[0-9]{1,4})?",
            "\\PC{0,20}".prop_map(|s| serde_json::Value::from(s).to_string()),
        ];
        leaf.prop_recursive(depth, 256, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec(("[a-z]{0,4}", inner), 0..8).prop_map(|v| {
                    let members: Vec<String> =
                        v.into_iter().map(|(k, x)| format!("{k:?}:{x}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    /// (the field's Connect schema, after `"field":"v",`; a value for it)
    fn field_and_value() -> impl Strategy<Value = (String, String)> {
        let quoted = |s: String| serde_json::Value::from(s).to_string();
        prop_oneof![
            (prop_oneof![0u32..40, 16_380u32..16_390, Just(u32::MAX)], b64()).prop_map(move |(scale, b)| (
                r#""type":"struct","name":"io.debezium.data.VariableScaleDecimal","fields":[{"type":"int32","field":"scale"},{"type":"bytes","field":"value"}]"#.to_string(),
                format!(r#"{{"scale":{scale},"value":{}}}"#, quoted(b)),
            )),
            (prop_oneof![0u32..40, Just(16_383u32), Just(1_000_000u32)], b64()).prop_map(move |(scale, b)| (
                format!(r#""type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{{"scale":"{scale}"}}"#),
                quoted(b),
            )),
            (prop_oneof![
                Just("io.debezium.time.MicroTimestamp"), Just("io.debezium.time.NanoTimestamp"),
                Just("io.debezium.time.Timestamp"), Just("io.debezium.time.MicroTime"),
                Just("io.debezium.time.NanoTime"), Just("io.debezium.time.MicroDuration"),
            ], prop_oneof![any::<i64>().prop_map(|i| i.to_string()), Just("1e400".to_string()), Just("99999999999999999999999".to_string()), Just("-0.5".to_string())])
                .prop_map(|(name, v)| (format!(r#""type":"int64","name":"{name}""#), v)),
            any::<i64>().prop_map(|d| (r#""type":"int32","name":"io.debezium.time.Date""#.to_string(), d.to_string())),
            "\\PC{0,40}".prop_map(move |s| (r#""type":"string","name":"io.debezium.time.ZonedTimestamp""#.to_string(), quoted(s))),
            "\\PC{0,40}".prop_map(move |s| (r#""type":"string","name":"io.debezium.time.IsoDate""#.to_string(), quoted(s))),
            b64().prop_map(move |b| (r#""type":"bytes""#.to_string(), quoted(b))),
            (b64(), prop_oneof![Just(1u64), Just(64), Just(83_886_080), Just(u64::MAX)]).prop_map(move |(b, len)| (
                format!(r#""type":"bytes","name":"io.debezium.data.Bits","parameters":{{"length":"{len}"}}"#),
                quoted(b),
            )),
            prop_oneof!["\\PC{0,2000}", "(\\\\u[0-9a-fA-F]{0,4}){1,8}"].prop_map(|s| (r#""type":"string""#.to_string(), format!("\"{s}\""))),
            json_text(6).prop_map(move |j| (r#""type":"string","name":"io.debezium.data.Json""#.to_string(), quoted(j))),
            prop_oneof![
                (0usize..50_000).prop_map(|n| format!("[{}]", vec!["7"; n].join(","))),
                json_text(4),
            ].prop_map(|a| (r#""type":"array","items":{"type":"int32","optional":true}"#.to_string(), a)),
            json_text(5).prop_map(|v| (r#""type":"int32""#.to_string(), v)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(600))]
        #[test]
        fn every_logical_type_decodes_or_fails_in_bounded_size((field, v) in field_and_value()) {
            let (key, value) = one_column_record(&field, &v, "c");
            let t = topic();
            let mut d = Decoder::new();
            match d.decode(&record(&t, Some(&key), Some(&value))) {
                Ok(Decoded::Change(e)) => {
                    let size: usize = e.row.iter().flatten().map(value_size).sum();
                    // An int array element is 2 bytes of record ("7,") and one Value in memory.
                    let bound = std::mem::size_of::<Value>() * value.len() + 20_000;
                    prop_assert!(size <= bound, "{size} bytes from a {}-byte record", value.len());
                }
                Ok(other) => prop_assert!(false, "{other:?}"),
                Err(e) => prop_assert!(!e.reason.is_empty()),
            }
        }
    }
}

#[test]
fn a_table_without_a_key_gets_positions_and_full_old_rows() {
    let t = topic();
    let mut d = Decoder::new();
    let (_, value) = one_column_record(r#""type":"string""#, r#""x""#, "c");
    let insert = match d.decode(&record(&t, None, Some(&value))).unwrap() {
        Decoded::Change(e) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(insert.schema.columns.last().unwrap().name, ROW_COLUMN);
    assert_eq!(insert.schema.key, [2]);
    assert_eq!(insert.key, [Value::Text("90:100".into())]);
    assert_eq!(insert.row.as_ref().unwrap()[2], insert.key[0]);
    // Snapshot rows share their LSN: the Kafka position tells them apart.
    let read = value.replace(r#""op":"c""#, r#""op":"r""#);
    match d.decode(&record(&t, None, Some(&read))).unwrap() {
        Decoded::Change(e) => assert_eq!(e.key, [Value::Text("100:0:7".into())]),
        other => panic!("{other:?}"),
    }
    // An update without the old row cannot name its row; with it, it carries the old row.
    let update = value.replace(r#""op":"c""#, r#""op":"u""#);
    let err = d.decode(&record(&t, None, Some(&update))).unwrap_err();
    assert!(err.reason.contains("REPLICA IDENTITY FULL"), "{err}");
    let full = update.replace(r#""before":null"#, r#""before":{"id":1,"v":"old"}"#);
    match d.decode(&record(&t, None, Some(&full))).unwrap() {
        Decoded::Change(e) => {
            assert_eq!(e.op, Op::Upsert);
            let before = e.before.expect("the old row");
            assert_eq!(before[1], Value::Text("old".into()));
            assert_eq!(before[2], Value::Unavailable);
            assert_eq!(e.row.unwrap()[2], Value::Unavailable);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn records_and_values_over_the_limits_are_refused_naming_the_key() {
    let t = topic();
    let (key, value) = one_column_record(
        r#""type":"string""#,
        &format!("\"{}\"", "x".repeat(5_000)),
        "c",
    );
    let limits = |record, value| Limits {
        max_record_bytes: record,
        max_value_bytes: value,
    };
    let mut d = Decoder::new().limits(limits(1_000, 1 << 20));
    let err = d.decode(&record(&t, Some(&key), Some(&value))).unwrap_err();
    assert!(
        err.reason.contains("decode.max_record_bytes (1000)"),
        "{err}"
    );
    let mut d = Decoder::new().limits(limits(1 << 20, 4_096));
    let err = d.decode(&record(&t, Some(&key), Some(&value))).unwrap_err();
    assert!(
        err.reason
            .contains(r#"column "v" holds 5000 bytes, over decode.max_value_bytes (4096)"#),
        "{err}"
    );
    let mut d = Decoder::new().limits(limits(1 << 20, 5_000));
    assert!(d.decode(&record(&t, Some(&key), Some(&value))).is_ok());
}

#[test]
fn arrays_deeper_than_postgres_allows_are_refused() {
    let t = topic();
    let nested = |depth: usize| {
        let mut field = r#""type":"int32""#.to_string();
        for _ in 0..depth {
            field = format!(r#""type":"array","items":{{{field},"optional":true}}"#);
        }
        field
    };
    let (key, value) = one_column_record(&nested(6), "[[[[[[1]]]]]]", "c");
    assert!(
        Decoder::new()
            .decode(&record(&t, Some(&key), Some(&value)))
            .is_ok()
    );
    let (key, value) = one_column_record(&nested(7), "[[[[[[[1]]]]]]]", "c");
    let err = Decoder::new()
        .decode(&record(&t, Some(&key), Some(&value)))
        .unwrap_err();
    assert!(err.reason.contains("7 dimensions"), "{err}");
}

/// A catalog the test edits, counting how often it is read.
#[derive(Clone, Default)]
struct EditableCatalog {
    columns: Arc<std::sync::Mutex<Vec<ripple_sink::CatalogColumn>>>,
    reads: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait::async_trait]
impl ripple_sink::ColumnCatalog for EditableCatalog {
    fn describe(&self) -> &str {
        "the test's catalog"
    }
    async fn columns(&self) -> Result<Vec<ripple_sink::CatalogColumn>, ripple_sink::SinkError> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(self.columns.lock().unwrap().clone())
    }
}

impl EditableCatalog {
    fn add(&self, column: &str, type_name: &str) {
        self.columns
            .lock()
            .unwrap()
            .push(ripple_sink::CatalogColumn {
                table: TableRef::new("public", "slprobe"),
                column: column.into(),
                type_name: type_name.into(),
                nullable: true,
            });
    }
    fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The catalog is read in the async step before decoding, on any runtime (a current-thread one
/// here, where the blocking read it replaced did nothing), and not more than once a second.
#[tokio::test]
async fn a_column_added_in_the_catalog_is_read_before_decoding() {
    let catalog = EditableCatalog::default();
    for (c, ty) in SLPROBE_COLUMNS {
        catalog.add(c, ty);
    }
    let types = ColumnTypes::new(
        schemaless::Modes::default(),
        Some(schemaless::Catalog::new(&catalog)),
    );
    let mut d = ResolvingDecoder::new(
        Decoder::new().schemaless(types),
        Resolver {
            schemas: None,
            catalog: Some(Box::new(catalog.clone())),
        },
    );
    d.prime().await.unwrap();
    assert_eq!(catalog.reads(), 1);
    let t: Arc<str> = Arc::from("slprobe.public.slprobe");
    let key = Some(r#"{"id":1}"#);
    let line = SCHEMALESS.lines().next().unwrap();
    assert!(matches!(
        d.decode(&record(&t, key, Some(line))).await,
        Ok(Decoded::Change(_))
    ));
    let added = line.replace(r#""id":1,"#, r#""id":1,"added":7,"#);
    // Just read: the unknown column is an error without another read.
    let err = d.decode(&record(&t, key, Some(&added))).await.unwrap_err();
    assert!(err.reason.contains("\"added\""), "{err}");
    assert_eq!(catalog.reads(), 1);
    catalog.add("added", "integer");
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let event = match d.decode(&record(&t, key, Some(&added))).await {
        Ok(Decoded::Change(e)) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(catalog.reads(), 2);
    let at = event
        .schema
        .columns
        .iter()
        .position(|c| c.name == "added")
        .unwrap();
    assert_eq!(event.row.as_ref().unwrap()[at], Value::Int(7));
}

/// A key whose schema is the topic's last one is read from its payload alone: the keys that come
/// out are the ones a full parse gives, and a key in another spelling still decodes in full.
#[test]
fn keys_with_a_known_schema_decode_as_a_full_parse_does() {
    let t = topic();
    let other = KEY.replace(
        "6f1c2a4e-0c2b-4d9e-9a57-1b2c3d4e5f60",
        "00000000-0000-4000-8000-000000000001",
    );
    let spaced = other.replacen("{\"schema\":", "{ \"schema\": ", 1);
    let mut warm = Decoder::new();
    let first = change(&mut warm, &t, KEY, VALUE);
    for key in [other.as_str(), spaced.as_str(), KEY] {
        let fast = change(&mut warm, &t, key, VALUE);
        let full = change(&mut Decoder::new(), &t, key, VALUE);
        assert_eq!(fast.key, full.key, "{key}");
        assert_eq!(fast.row, full.row);
    }
    assert_eq!(
        change(&mut warm, &t, &other, VALUE).key,
        vec![Value::Text("00000000-0000-4000-8000-000000000001".into())]
    );
    assert_eq!(change(&mut warm, &t, KEY, VALUE).key, first.key);
}

/// A registry URL holding a password never shows it: not in the error, not in its causes (they
/// become a dead letter's reason).
#[tokio::test]
async fn a_registry_password_in_the_url_is_masked_in_errors() {
    let fetcher = avro::SchemaFetcher::new("http://ripple:s3cret@127.0.0.1:1/ccompat", None, None)
        .expect("a client");
    let err = fetcher.fetch(5).await.unwrap_err();
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
}
