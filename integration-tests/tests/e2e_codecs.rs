//! Every Kafka compression codec a producer may use: Debezium writes the seed workload with its
//! producer overridden to gzip, snappy, lz4 or zstd; the broker's own log dump proves the batches
//! carry that codec, and Ripple must apply all of them (before librdkafka was built with zstd, a
//! zstd topic was logged as an error every 0.5 s and nothing was applied).

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

/// The codecs the topic's first log segment holds, as Kafka's DumpLogSegments names them.
fn codecs_on_disk(topic: &str) -> Vec<String> {
    let segment = repo()
        .join(".stack/kafka/data")
        .join(format!("{topic}-0"))
        .join("00000000000000000000.log");
    let out = Command::new("java")
        .arg("-cp")
        .arg(repo().join(".stack/jars/kafka/*"))
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            repo()
                .join("scripts/stack.d/log4j2-quiet.properties")
                .display()
        ))
        .args(["org.apache.kafka.tools.DumpLogSegments", "--files"])
        .arg(&segment)
        .output()
        .expect("run DumpLogSegments");
    let mut codecs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "compresscodec:")
        .map(|w| w[1].to_string())
        .collect();
    codecs.sort();
    codecs.dedup();
    codecs
}

fn applies_records_compressed_with(codec: &str) {
    require_stack();
    let t = unique(&format!("e2e_codec_{codec}"));
    let dir = temp_dir(&t);
    let setup = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &t, "--drop", "--setup", "--count", "1500",
        "--seed", "5",
    ]);
    assert!(setup.status.success(), "loadgen failed: {}", text(&setup));
    let settings = format!(r#"{{"producer.override.compression.type": "{codec}"}}"#);
    let connector = Connector::with_settings(
        &t.replace('_', "-"),
        &t,
        &format!("public.{t}"),
        1,
        &settings,
    );
    let topic = connector.topic(&t);
    let config = write_config(&dir, std::slice::from_ref(&topic), &t, "");
    let run = RippleProcess::start(&config, &[]);
    let report = wait_verified(&config, &format!("public.{t}"), 1, Duration::from_secs(120));
    let rows = psql(REPLICA_URL, &format!("SELECT count(*) FROM public.{t}"));
    assert!(
        rows.parse::<i64>().unwrap() > 100,
        "replica has {rows} rows\n{report}"
    );

    // The records really were compressed with this codec, and with nothing else.
    let on_disk = codecs_on_disk(&topic);
    assert_eq!(
        on_disk,
        vec![codec.to_string()],
        "codecs in the topic's log"
    );
    let log = run.log_text();
    assert!(
        !log.contains("Decompression"),
        "ripple logged a decompression error:\n{log}"
    );
    drop(run);
    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
}

#[test]
fn gzip_records_are_applied() {
    applies_records_compressed_with("gzip");
}

#[test]
fn snappy_records_are_applied() {
    applies_records_compressed_with("snappy");
}

#[test]
fn lz4_records_are_applied() {
    applies_records_compressed_with("lz4");
}

#[test]
fn zstd_records_are_applied() {
    applies_records_compressed_with("zstd");
}
