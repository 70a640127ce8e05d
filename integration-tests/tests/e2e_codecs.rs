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

/// A batch that cannot be decompressed for any other reason (here: its compressed bytes damaged
/// in the broker's log after it was written) is signalled: counted, logged once however often
/// librdkafka retries it, and named by /readyz; Ripple keeps running and reads nothing past it.
#[test]
fn a_batch_that_cannot_be_decompressed_is_signalled_once() {
    require_stack();
    let t = unique("e2e_codec_corrupt");
    let dir = temp_dir(&t);
    let topic = format!("{t}.public.x");
    // One gzip batch of records that do not compress away, so its payload is large.
    let records: Vec<String> = (0..200u64)
        .map(|i| {
            let noise: String = (0..8)
                .map(|j| format!("{:016x}", (i * 8 + j).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
                .collect();
            format!("{{\"id\":{i}}}\t{noise}")
        })
        .collect();
    let mut kcat = Command::new("kcat")
        .args(["-b", BROKERS, "-P", "-t", &topic, "-K", "\t", "-z", "gzip"])
        .args(["-X", "linger.ms=500", "-X", "batch.num.messages=10000"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run kcat");
    use std::io::Write;
    kcat.stdin
        .as_mut()
        .unwrap()
        .write_all((records.join("\n") + "\n").as_bytes())
        .unwrap();
    assert!(kcat.wait().unwrap().success());
    assert_eq!(codecs_on_disk(&topic), vec!["gzip".to_string()]);

    // Damage the compressed payload (past the 61-byte batch header) in the segment file; the
    // broker serves the file as it is, and librdkafka does not check CRCs by default.
    let segment = repo()
        .join(".stack/kafka/data")
        .join(format!("{topic}-0"))
        .join("00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    assert!(bytes.len() > 2_000, "segment of {} bytes", bytes.len());
    for b in &mut bytes[200..1200] {
        *b ^= 0x5a;
    }
    std::fs::write(&segment, &bytes).unwrap();

    let port = 19400 + (std::process::id() % 90) as u16;
    let extra = format!(
        "\n[dead_letter]\ntopic = \"{t}.dlq\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let config = write_config(&dir, std::slice::from_ref(&topic), &t, &extra);
    let mut run = RippleProcess::start(&config, &[]);
    let mut metrics = String::new();
    wait_until(
        Duration::from_secs(60),
        "three failed decompressions counted",
        || {
            metrics = http_get(port, "/metrics").1;
            metrics
                .lines()
                .find(|l| l.starts_with("ripple_fetch_errors_total{kind=\"decompression\"}"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .is_some_and(|n| n >= 3.0)
        },
    );
    let (code, ready) = http_get(port, "/readyz");
    assert_eq!(code, 503, "{ready}");
    assert!(ready.contains("cannot be decompressed"), "{ready}");
    assert!(run.is_running(), "ripple stopped:\n{}", run.log_text());
    let log = run.log_text();
    let told = log.matches("cannot be decompressed").count();
    assert_eq!(
        told, 1,
        "the problem is logged {told} times, not once:\n{log}"
    );
    // Nothing of the damaged batch was applied or dead-lettered: it was never read.
    assert!(dead_letters(&format!("{t}.dlq")).is_empty());
    drop(run);
}
