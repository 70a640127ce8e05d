//! The walking skeleton end to end: the seed workload written into the source PostgreSQL, captured
//! by the real Debezium connector into Kafka, applied by `ripple run` to the replica, compared by
//! `ripple verify`; with Ripple killed and restarted in the middle of the stream.

mod common;

use common::*;
use std::time::Duration;

const CHANGES: &str = "22000";

#[test]
fn seed_workload_replicates_exactly_across_a_crash() {
    require_stack();
    let table = unique("e2e_txn");
    let dir = temp_dir(&table);

    let setup = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &table, "--drop", "--setup", "--count", "0",
    ]);
    assert!(
        setup.status.success(),
        "loadgen setup failed: {}",
        text(&setup)
    );
    let connector = Connector::start(&table.replace('_', "-"), &table, &format!("public.{table}"));
    let topic = connector.topic(&table);
    let config = write_config(&dir, std::slice::from_ref(&topic), &table, "");

    let first = RippleProcess::start(&config, &[]);

    // Load in the background, paced so the crash below lands mid-stream.
    let load = std::process::Command::new(ripple_bin())
        .args([
            "loadgen", "--url", SOURCE_URL, "--table", &table, "--count", CHANGES, "--rate", "4000",
        ])
        .args(["--truncate-after", "12000", "--seed", "7"])
        .output();
    let handle = std::thread::spawn(move || load);

    // Crash Ripple once the replica has started to fill, while the load is still running.
    wait_until(
        Duration::from_secs(90),
        "the replica to receive rows",
        || {
            psql(
                REPLICA_URL,
                &format!("SELECT to_regclass('public.{table}') IS NOT NULL"),
            ) == "t"
                && psql(
                    REPLICA_URL,
                    &format!("SELECT count(*) > 500 FROM public.{table}"),
                ) == "t"
        },
    );
    let status = first.signal("KILL");
    assert!(!status.success(), "SIGKILL must not look like a clean exit");
    let second = RippleProcess::start(&config, &[]);

    let load = handle.join().expect("loadgen thread").expect("run loadgen");
    assert!(load.status.success(), "loadgen failed: {}", text(&load));
    let load_text = text(&load);
    assert!(
        load_text.contains("truncates 1") || load_text.contains("1 truncate"),
        "loadgen summary: {load_text}"
    );

    // Debezium and Ripple catch up shortly after the load ends; verify decides when they have.
    let mut last = String::new();
    wait_until(
        Duration::from_secs(180),
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
    println!("{last}");

    // The replica holds real rows of every shape the seed writes, not an empty table equal to an
    // empty source.
    let rows: i64 = psql(REPLICA_URL, &format!("SELECT count(*) FROM public.{table}"))
        .parse()
        .unwrap();
    assert!(rows > 1000, "replica has {rows} rows");
    let updated: i64 = psql(
        REPLICA_URL,
        &format!("SELECT count(*) FROM public.{table} WHERE change_info ? 'amount'"),
    )
    .parse()
    .unwrap();
    assert!(
        updated > 0,
        "no updated rows with audit JSON in the replica"
    );

    let status = second.signal("TERM");
    assert!(
        status.success(),
        "ripple did not shut down cleanly on SIGTERM"
    );
    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{table}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{table}"));
}
