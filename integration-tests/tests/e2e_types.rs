//! The type matrix: one source column per PostgreSQL type (NULLs, extremes, unicode, ±infinity,
//! arrays, ranges, network types, bit strings, an enum, hstore, ltree) through real Debezium into
//! the replica, Redis and the search index, once per family of connector settings users run with
//! (decimal, time precision, interval, binary and hstore modes). The replica is compared value by
//! value in SQL (each column's text in the source against the same column in the replica, so a
//! mismatch names the column and both values); Redis and the index by `ripple verify`, which reads
//! each document back and compares it with the source row decoded from PostgreSQL's own text.
//!
//! What a setting cannot carry is declared, not ignored: each variant lists the columns its
//! connector settings make lossy and the expression (applied to both sides) under which the two
//! still have to agree, e.g. doubles compare as `float8`, `connect` times at milliseconds. Those
//! columns are left out of the Redis and index routes, whose check is exact. Beyond the settings:
//! a timetz's original offset (Debezium sends UTC; compared in UTC) and a varbit's leading zeros
//! (none below) cannot be carried at all.

mod common;

use common::*;
use std::time::Duration;

/// (column, type, values: one SQL literal per row, rows 1..=4).
const COLUMNS: &[(&str, &str, [&str; 4])] = &[
    ("c_int2", "smallint", ["-32768", "32767", "0", "NULL"]),
    (
        "c_int4",
        "integer",
        ["-2147483648", "2147483647", "0", "NULL"],
    ),
    (
        "c_int8",
        "bigint",
        ["-9223372036854775808", "9223372036854775807", "0", "NULL"],
    ),
    (
        "c_float4",
        "real",
        ["3.14159", "'NaN'", "'-Infinity'", "NULL"],
    ),
    (
        "c_float8",
        "double precision",
        ["1e308", "'Infinity'", "-0.000001", "NULL"],
    ),
    (
        "c_numeric",
        "numeric(12,4)",
        ["12345678.1234", "-0.0001", "0", "NULL"],
    ),
    (
        "c_decimal",
        "numeric",
        [
            "123456789012345678901234567890.123456789",
            "56.50",
            "'NaN'",
            "NULL",
        ],
    ),
    ("c_bool", "boolean", ["true", "false", "NULL", "true"]),
    (
        "c_text",
        "text",
        [
            "'héllo wörld ✓ 日本'",
            "''",
            "'quote '' and \\\\ backslash'",
            "NULL",
        ],
    ),
    (
        "c_varchar",
        "varchar(20)",
        ["'short'", "'exactly twenty chars'", "''", "NULL"],
    ),
    ("c_char", "char(5)", ["'ab'", "'abcde'", "' '", "NULL"]),
    (
        "c_bytea",
        "bytea",
        ["'\\x00ff10'", "''", "'\\xdeadbeef'", "NULL"],
    ),
    (
        "c_json",
        "json",
        [
            "'{\"a\": [1, 2.5, \"x\"], \"b\": null}'",
            "'[]'",
            "'\"s\"'",
            "NULL",
        ],
    ),
    (
        "c_jsonb",
        "jsonb",
        ["'{\"k\": {\"n\": 1e3}}'", "'{}'", "'[true, false]'", "NULL"],
    ),
    (
        "c_uuid",
        "uuid",
        [
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
            "'00000000-0000-0000-0000-000000000000'",
            "NULL",
            "gen_random_uuid()",
        ],
    ),
    (
        "c_date",
        "date",
        ["'2024-02-29'", "'1970-01-01'", "'0001-01-01'", "NULL"],
    ),
    (
        "c_time",
        "time",
        ["'23:59:59.999999'", "'00:00:00'", "'12:34:56.5'", "NULL"],
    ),
    (
        "c_timestamp",
        "timestamp",
        [
            "'2024-02-29 12:34:56.789012'",
            "'1970-01-01 00:00:00'",
            "'1900-01-01 00:00:01'",
            "NULL",
        ],
    ),
    (
        "c_timestamptz",
        "timestamptz",
        [
            "'2024-02-29 12:34:56.789012+02'",
            "'infinity'",
            "'-infinity'",
            "NULL",
        ],
    ),
    (
        "c_timestamp3",
        "timestamp(3)",
        [
            "'2024-02-29 12:34:56.789'",
            "'2000-01-01 00:00:00'",
            "NULL",
            "'2038-01-19 03:14:08'",
        ],
    ),
    (
        "c_int_array",
        "integer[]",
        ["'{1,2,3}'", "'{}'", "'{NULL,5}'", "NULL"],
    ),
    (
        "c_text_array",
        "text[]",
        ["'{\"a b\",c,\"ü\"}'", "'{}'", "NULL", "'{\"x,y\"}'"],
    ),
    (
        "c_timetz",
        "timetz",
        [
            "'12:34:56.789+02'",
            "'00:00:00+00'",
            "NULL",
            "'23:59:59-08'",
        ],
    ),
    (
        "c_interval",
        "interval",
        [
            "'1 year 2 mons 3 days 04:05:06.789'",
            "'-10 days'",
            "'0'",
            "NULL",
        ],
    ),
    ("c_money", "money", ["12.34", "-0.01", "0", "NULL"]),
    (
        "c_xml",
        "xml",
        ["'<a b=\"1\">x</a>'", "'<e/>'", "NULL", "'<t>ü</t>'"],
    ),
    (
        "c_inet",
        "inet",
        ["'192.168.0.1/24'", "'::1'", "NULL", "'10.0.0.1'"],
    ),
    (
        "c_cidr",
        "cidr",
        [
            "'10.0.0.0/8'",
            "'2001:db8::/32'",
            "NULL",
            "'192.168.1.0/24'",
        ],
    ),
    (
        "c_macaddr",
        "macaddr",
        [
            "'08:00:2b:01:02:03'",
            "'00:00:00:00:00:00'",
            "NULL",
            "'ff:ff:ff:ff:ff:ff'",
        ],
    ),
    ("c_bit", "bit(4)", ["B'1010'", "B'0000'", "NULL", "B'1111'"]),
    (
        "c_varbit",
        "varbit(16)",
        ["B'101'", "B''", "NULL", "B'1111000011110000'"],
    ),
    (
        "c_int4range",
        "int4range",
        ["'[1,10)'", "'empty'", "NULL", "'(,5]'"],
    ),
    (
        "c_tsrange",
        "tsrange",
        [
            "'[2024-01-01 00:00,2024-12-31 23:59)'",
            "'empty'",
            "NULL",
            "'[2024-01-01,)'",
        ],
    ),
    (
        "c_hstore",
        "hstore",
        [
            "'\"a\"=>\"1\", \"b\"=>NULL'",
            "''",
            "NULL",
            "'\"k y\"=>\"v\\\"q\"'",
        ],
    ),
    (
        "c_ltree",
        "ltree",
        ["'Top.Science.Astronomy'", "'a'", "NULL", "''"],
    ),
    (
        "c_mood",
        "e2e_types_mood",
        ["'happy'", "'sad'", "NULL", "'ok'"],
    ),
];

/// A family of connector settings and what they cannot carry.
struct Variant {
    name: &'static str,
    /// Connector settings over the stack's template (`scripts/stack.d/debezium-source.json.tmpl`).
    settings: &'static str,
    /// Ripple's `[decode]` section for them.
    decode: &'static str,
    /// (column, expression over `{c}`): columns these settings carry with a loss, compared under
    /// the expression on both sides and left out of Redis and the index.
    lossy: &'static [(&'static str, &'static str)],
    /// Where the column types come from.
    types: Types,
}

#[derive(PartialEq)]
enum Types {
    /// The records' own schemas (`schemas.enable=true`).
    InRecords,
    /// JSON without schemas, typed from the replica's table, created beforehand like the source's.
    FromReplica,
    /// JSON without schemas, typed from `[decode.schemaless.tables]`, listing every column.
    Declared,
    /// Avro in the Confluent wire format, schemas in the stack's registry.
    Avro,
}

/// The stack's schema registry, through its Confluent-compatible API.
const REGISTRY_CCOMPAT: &str = "http://127.0.0.1:18081/apis/ccompat/v7";

/// Debezium's MicroDuration: months of 365.25 / 12 days, everything in microseconds.
const MICRO_DURATION: &str = "round(((extract(year from {c}) * 12 + extract(month from {c})) * 30.4375 * 86400 \
     + extract(day from {c}) * 86400 + extract(hour from {c}) * 3600 + extract(minute from {c}) * 60 \
     + extract(second from {c})) * 1000000)";

#[test]
fn stack_settings() {
    // decimal.handling.mode=string, interval.handling.mode=string, time.precision.mode=adaptive,
    // binary.handling.mode=bytes, hstore as JSON text.
    round_trip(&Variant {
        name: "stack",
        settings: "{}",
        decode: "",
        lossy: &[],
        types: Types::InRecords,
    });
}

#[test]
fn precise_decimals_numeric_intervals_base64_and_hstore_maps() {
    round_trip(&Variant {
        name: "precise",
        settings: r#"{"decimal.handling.mode": "precise", "interval.handling.mode": "numeric",
            "time.precision.mode": "microseconds", "binary.handling.mode": "base64",
            "hstore.handling.mode": "map"}"#,
        decode: "binary_handling_mode = \"base64\"",
        lossy: &[
            // VariableScaleDecimal drops trailing zeros (56.50 -> 56.5) and cannot hold NaN.
            (
                "c_decimal",
                "CASE WHEN {c} = 'NaN' THEN NULL ELSE trim_scale({c}) END",
            ),
            ("c_interval", MICRO_DURATION),
        ],
        types: Types::InRecords,
    });
}

#[test]
fn doubles_connect_times_and_hex_bytes() {
    round_trip(&Variant {
        name: "double",
        settings: r#"{"decimal.handling.mode": "double", "time.precision.mode": "connect",
            "binary.handling.mode": "hex"}"#,
        decode: "binary_handling_mode = \"hex\"",
        lossy: &[
            ("c_numeric", "{c}::float8"),
            ("c_decimal", "{c}::float8"),
            ("c_money", "{c}::numeric::float8"),
            // Kafka Connect's Time and Timestamp hold milliseconds.
            (
                "c_time",
                "date_trunc('milliseconds', '2000-01-01'::date + {c})::time",
            ),
            ("c_timestamp", "date_trunc('milliseconds', {c})"),
        ],
        types: Types::InRecords,
    });
}

#[test]
fn nanosecond_times_and_url_safe_bytes() {
    round_trip(&Variant {
        name: "nanos",
        settings: r#"{"time.precision.mode": "nanoseconds", "binary.handling.mode": "base64-url-safe"}"#,
        decode: "binary_handling_mode = \"base64-url-safe\"",
        lossy: &[],
        types: Types::InRecords,
    });
}

#[test]
fn iso_string_times() {
    round_trip(&Variant {
        name: "iso",
        settings: r#"{"time.precision.mode": "isostring"}"#,
        decode: "",
        lossy: &[],
        types: Types::InRecords,
    });
}

#[test]
fn schemaless_json_typed_from_the_replica() {
    // The stack's settings (string decimals and intervals, adaptive times), without schemas.
    round_trip(&Variant {
        name: "noschema",
        settings: r#"{"key.converter.schemas.enable": "false", "value.converter.schemas.enable": "false"}"#,
        decode: "[decode.schemaless]\ntypes_from = \"replica\"\ndecimal_handling_mode = \"string\"\n\
                 interval_handling_mode = \"string\"",
        lossy: &[],
        types: Types::FromReplica,
    });
}

#[test]
fn schemaless_json_with_declared_types_precise_and_microseconds() {
    round_trip(&Variant {
        name: "declared",
        settings: r#"{"key.converter.schemas.enable": "false", "value.converter.schemas.enable": "false",
            "decimal.handling.mode": "precise", "interval.handling.mode": "numeric",
            "time.precision.mode": "adaptive_time_microseconds", "binary.handling.mode": "base64",
            "hstore.handling.mode": "map"}"#,
        decode: "binary_handling_mode = \"base64\"\n[decode.schemaless]\n\
                 time_precision_mode = \"adaptive_time_microseconds\"\nhstore_handling_mode = \"map\"",
        lossy: &[
            (
                "c_decimal",
                "CASE WHEN {c} = 'NaN' THEN NULL ELSE trim_scale({c}) END",
            ),
            ("c_interval", MICRO_DURATION),
        ],
        types: Types::Declared,
    });
}

#[test]
fn avro_with_a_schema_registry() {
    round_trip(&Variant {
        name: "avro",
        settings: r#"{"decimal.handling.mode": "precise", "interval.handling.mode": "numeric",
            "time.precision.mode": "adaptive", "hstore.handling.mode": "map"}"#,
        decode: "",
        lossy: &[
            (
                "c_decimal",
                "CASE WHEN {c} = 'NaN' THEN NULL ELSE trim_scale({c}) END",
            ),
            ("c_interval", MICRO_DURATION),
        ],
        types: Types::Avro,
    });
}

fn round_trip(v: &Variant) {
    require_stack();
    let t = unique(&format!("e2e_types_{}", v.name));
    let dir = temp_dir(&t);
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|(name, ty, _)| format!("{name} {ty}"))
        .collect();
    // An enum type and the extensions, in the replica too: Ripple creates tables, not types.
    for url in [SOURCE_URL, REPLICA_URL] {
        psql(
            url,
            "DO $$ BEGIN CREATE TYPE public.e2e_types_mood AS ENUM ('sad', 'ok', 'happy'); \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
        );
        for extension in ["hstore", "ltree"] {
            psql(
                url,
                &format!(
                    "DO $$ BEGIN CREATE EXTENSION IF NOT EXISTS {extension}; \
                     EXCEPTION WHEN unique_violation OR duplicate_object THEN NULL; END $$"
                ),
            );
        }
    }
    let create = format!(
        "CREATE TABLE public.{t} (id int PRIMARY KEY, {})",
        columns.join(", ")
    );
    psql(SOURCE_URL, &create);
    if v.types == Types::FromReplica {
        psql(REPLICA_URL, &create);
    }
    let mut decode = v.decode.to_string();
    if v.types == Types::Declared {
        decode += &format!("\n[decode.schemaless.tables.\"public.{t}\"]\nid = \"integer\"\n");
        for (name, ty, _) in COLUMNS {
            decode += &format!("{name} = {ty:?}\n");
        }
    }
    let names: Vec<&str> = COLUMNS.iter().map(|(n, _, _)| *n).collect();
    for row in 0..4 {
        let values: Vec<&str> = COLUMNS.iter().map(|(_, _, v)| v[row]).collect();
        psql(
            SOURCE_URL,
            &format!(
                "INSERT INTO public.{t} (id, {}) VALUES ({}, {})",
                names.join(", "),
                row + 1,
                values.join(", ")
            ),
        );
    }
    let mut settings: serde_json::Value = serde_json::from_str(v.settings).unwrap();
    if v.types == Types::Avro {
        let avro = std::fs::read_to_string(repo().join("scripts/stack.d/avro-settings.json"))
            .expect("the stack's Avro converter settings");
        let avro: serde_json::Value = serde_json::from_str(&avro).unwrap();
        settings
            .as_object_mut()
            .unwrap()
            .extend(avro.as_object().unwrap().clone());
        decode += &format!("\n[decode.avro]\nregistry_url = \"{REGISTRY_CCOMPAT}\"\n");
    }
    let connector = Connector::with_settings(
        &t.replace('_', "-"),
        &t,
        &format!("public.{t}"),
        1,
        &settings.to_string(),
    );
    let topic = connector.topic(&t);
    // Row 5 arrives by streaming rather than by the snapshot.
    psql(
        SOURCE_URL,
        &format!(
            "INSERT INTO public.{t} SELECT 5, {} FROM public.{t} WHERE id = 1",
            names.join(", ")
        ),
    );
    // Redis (JSON documents) and the search index get every column these settings carry exactly.
    // The index also leaves out the JSON columns: their rows hold an object, an array and a string
    // in turn, which no index mapping can take.
    let lossy: Vec<String> = v.lossy.iter().map(|(c, _)| format!("{c:?}")).collect();
    let mut search_excluded = lossy.clone();
    search_excluded.extend(["\"c_json\"".to_string(), "\"c_jsonb\"".to_string()]);
    let extra = format!(
        "\n[sinks.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:16379\"\nformat = \"json\"\n\
         \n[sinks.search]\ntype = \"elasticsearch\"\nurl = \"http://127.0.0.1:9251\"\n\
         \n[[routes]]\ntopics = [\"{topic}\"]\nsinks = [\"cache\"]\nexclude = [{}]\n\
         \n[[routes]]\ntopics = [\"{topic}\"]\nsinks = [\"search\"]\nexclude = [{}]\n\
         \n[decode]\n{}\n",
        lossy.join(", "),
        search_excluded.join(", "),
        decode
    );
    let config = write_config(&dir, &[topic], &t, &extra);
    let run = RippleProcess::start(&config, &[]);
    wait_until(Duration::from_secs(60), "five rows in the replica", || {
        psql(
            REPLICA_URL,
            &format!("SELECT to_regclass('public.{t}') IS NOT NULL"),
        ) == "t"
            && psql(REPLICA_URL, &format!("SELECT count(*) FROM public.{t}")) == "5"
    });
    assert!(run.signal("TERM").success());

    let mut mismatches = Vec::new();
    for (name, ty, _) in COLUMNS {
        let expr = match v.lossy.iter().find(|(c, _)| c == name) {
            Some((_, e)) => e.replace("{c}", name),
            // Debezium sends a timetz as the same time of day in UTC (its ZonedTime drops the
            // offset), so the two compare as UTC times.
            None if *ty == "timetz" => format!("({name} AT TIME ZONE 'UTC')"),
            None => name.to_string(),
        };
        let query = format!(
            "SELECT id || ' ' || coalesce(({expr})::text, '<NULL>') FROM public.{t} ORDER BY id"
        );
        let (source, replica) = (psql(SOURCE_URL, &query), psql(REPLICA_URL, &query));
        if source != replica {
            let replica_type = psql(
                REPLICA_URL,
                &format!(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'public.{t}'::regclass AND attname = '{name}'"
                ),
            );
            mismatches.push(format!(
                "{name} ({ty} -> replica {replica_type}):\n  source:  {}\n  replica: {}",
                source.replace('\n', " | "),
                replica.replace('\n', " | ")
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}: {} of {} columns differ:\n{}",
        v.name,
        mismatches.len(),
        COLUMNS.len(),
        mismatches.join("\n")
    );
    // The replica is checked exactly by verify too when nothing is lossy.
    let table = format!("public.{t}");
    let mut args = vec![
        "verify",
        "--config",
        config.to_str().unwrap(),
        "--table",
        &table,
    ];
    if !v.lossy.is_empty() {
        args.extend(["--sink", "cache", "--sink", "search"]);
    }
    let out = ripple(&args);
    let report = text(&out);
    assert!(out.status.success(), "{}: {report}", v.name);
    let expected = if v.lossy.is_empty() { 3 } else { 2 };
    assert_eq!(
        report.matches("EQUAL ").count(),
        expected,
        "{}: {report}",
        v.name
    );

    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    search_request("DELETE", &t, None);
}
