//! Rows that exist before Debezium starts arrive as snapshot reads (`op: r`); changes after it as
//! streamed events. Both must land in the replica.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn snapshot_then_stream() {
    require_stack();
    let table = unique("e2e_snap");
    let dir = temp_dir(&table);
    let before = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &table, "--drop", "--setup", "--count", "800",
    ]);
    assert!(before.status.success(), "loadgen failed: {}", text(&before));
    let connector = Connector::start(&table.replace('_', "-"), &table, &format!("public.{table}"));
    let config = write_config(&dir, &[connector.topic(&table)], &table, "");
    let run = RippleProcess::start(&config, &[]);

    let after = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &table, "--count", "1200", "--seed", "9",
    ]);
    assert!(after.status.success(), "loadgen failed: {}", text(&after));
    let mut last = String::new();
    wait_until(
        Duration::from_secs(120),
        "verify to report the replica equal to the source",
        || {
            let out = ripple(&[
                "verify",
                "--config",
                config.to_str().unwrap(),
                "--table",
                &format!("public.{table}"),
            ]);
            last = text(&out);
            out.status.success()
        },
    );
    let rows: i64 = psql(REPLICA_URL, &format!("SELECT count(*) FROM public.{table}"))
        .parse()
        .unwrap();
    assert!(rows >= 400, "replica has only {rows} rows: {last}");
    // The rows written before the connector started really came as snapshot reads.
    let ops = std::process::Command::new("kcat")
        .args([
            "-b",
            BROKERS,
            "-C",
            "-t",
            &connector.topic(&table),
            "-e",
            "-q",
            "-f",
            "%s\n",
        ])
        .output()
        .expect("run kcat (installed by scripts/stack)");
    let snapshot_reads = String::from_utf8_lossy(&ops.stdout)
        .matches("\"op\":\"r\"")
        .count();
    assert!(
        snapshot_reads >= 300,
        "only {snapshot_reads} snapshot reads in the topic"
    );
    assert!(run.signal("TERM").success());
    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{table}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{table}"));
}
