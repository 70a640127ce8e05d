//! Replays never move rows back in time: after the replica is in sync, the whole topic is applied
//! again by a fresh consumer group, and old records are produced to the topic again (stale
//! duplicates arriving late). The replica stays equal to the source, and no row's version drops.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

fn versions(table: &str) -> HashMap<String, (i64, i64)> {
    psql(
        REPLICA_URL,
        &format!("SELECT transaction_id, _ripple_commit, _ripple_change FROM public.{table}"),
    )
    .lines()
    .map(|l| {
        let parts: Vec<&str> = l.split('|').collect();
        (
            parts[0].to_string(),
            (parts[1].parse().unwrap(), parts[2].parse().unwrap()),
        )
    })
    .collect()
}

fn sync(config: &std::path::Path, table: &str, what: &str) {
    let run = RippleProcess::start(config, &[]);
    let mut last = String::new();
    wait_until(Duration::from_secs(120), what, || {
        let out = ripple(&[
            "verify",
            "--config",
            config.to_str().unwrap(),
            "--table",
            &format!("public.{table}"),
        ]);
        last = text(&out);
        out.status.success()
    });
    // Let the run drain the topic before stopping: verify can be equal before the last stale
    // records are consumed.
    std::thread::sleep(Duration::from_secs(3));
    assert!(run.signal("TERM").success());
    let out = ripple(&[
        "verify",
        "--config",
        config.to_str().unwrap(),
        "--table",
        &format!("public.{table}"),
    ]);
    assert!(out.status.success(), "{what}: {}", text(&out));
}

#[test]
fn replay_and_stale_duplicates_change_nothing() {
    require_stack();
    let table = unique("e2e_replay");
    let dir = temp_dir(&table);
    let setup = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &table, "--drop", "--setup", "--count", "0",
    ]);
    assert!(setup.status.success(), "{}", text(&setup));
    let connector = Connector::start(&table.replace('_', "-"), &table, &format!("public.{table}"));
    let topic = connector.topic(&table);
    // Updates dominate, so many keys have several versions for a stale record to undercut.
    let load = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &table, "--count", "4000", "--mix", "40,50,10",
    ]);
    assert!(load.status.success(), "{}", text(&load));

    let first = write_config(&dir, &[topic.clone()], &format!("{table}_a"), "");
    sync(&first, &table, "the first sync");
    let before = versions(&table);
    assert!(before.len() > 500, "{} rows", before.len());

    // The whole topic again, through a new consumer group.
    let replay = write_config(&dir, &[topic.clone()], &format!("{table}_b"), "");
    sync(&replay, &table, "the replay from offset 0");
    assert_eq!(
        versions(&table),
        before,
        "a full replay changed row versions"
    );

    // Stale duplicates: the first 1,500 records (inserts and early updates) produced again.
    let old = Command::new("kcat")
        .args([
            "-b",
            BROKERS,
            "-C",
            "-t",
            &topic,
            "-o",
            "beginning",
            "-c",
            "1500",
            "-e",
            "-q",
            "-f",
            "%k\t%s\n",
        ])
        .output()
        .expect("run kcat");
    let records: Vec<&str> = std::str::from_utf8(&old.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.ends_with('\t'))
        .collect();
    assert!(records.len() > 1000, "{} records read back", records.len());
    let mut producer = Command::new("kcat")
        .args(["-b", BROKERS, "-P", "-t", &topic, "-K", "\t"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run kcat producer");
    producer
        .stdin
        .as_mut()
        .unwrap()
        .write_all((records.join("\n") + "\n").as_bytes())
        .unwrap();
    assert!(producer.wait().unwrap().success());
    sync(&first, &table, "applying the stale duplicates");
    let after = versions(&table);
    assert_eq!(after.len(), before.len());
    for (key, v) in &after {
        assert!(
            v >= &before[key],
            "row {key} went back from {:?} to {v:?}",
            before[key]
        );
    }
    assert_eq!(after, before, "stale duplicates changed the replica");

    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{table}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{table}"));
}
