//! `exactly_once = true` on the replica: the offsets of what each table holds are written in the
//! same transaction as its rows, and a partition only the replica owns starts from them. A new
//! consumer group (no committed offsets) therefore applies nothing the replica already holds,
//! where a run without the option applies everything again; and a replica rolled back (rows and
//! offsets, as a restored backup would be) gets back what it lost although Kafka's committed
//! offsets are past it.

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn config(dir: &Path, topic: &str, group: &str, exactly_once: bool) -> PathBuf {
    let path = dir.join(format!("{group}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[kafka]
brokers = "{BROKERS}"
group_id = "{group}"
topics = ["{topic}"]

[source]
url = "{SOURCE_URL}"

[sinks.replica]
type = "postgres"
url = "{REPLICA_URL}"
exactly_once = {exactly_once}

[[routes]]
topics = ["{topic}"]
sinks = ["replica"]
"#
        ),
    )
    .unwrap();
    path
}

/// Runs ripple until it is caught up; returns how many events it applied.
fn run_until_idle(config: &Path) -> u64 {
    let out = ripple(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--exit-when-idle-ms",
        "2000",
    ]);
    let log = text(&out);
    assert!(out.status.success(), "ripple run failed:\n{log}");
    log.lines()
        .find_map(|l| l.strip_prefix("applied ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no summary in:\n{log}"))
}

fn verify(config: &Path, table: &str) -> String {
    let out = ripple(&[
        "verify",
        "--config",
        config.to_str().unwrap(),
        "--table",
        &format!("public.{table}"),
    ]);
    assert!(out.status.success(), "verify failed:\n{}", text(&out));
    text(&out)
}

#[test]
fn replica_offsets_decide_where_partitions_start() {
    require_stack();
    let table = unique("e2e_once");
    let dir = temp_dir(&table);
    let load = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &table, "--drop", "--setup", "--count", "600",
    ]);
    assert!(load.status.success(), "loadgen failed: {}", text(&load));
    let connector = Connector::start(&table.replace('_', "-"), &table, &format!("public.{table}"));
    let topic = connector.topic(&table);
    wait_until(
        std::time::Duration::from_secs(60),
        "the snapshot to reach the topic",
        || {
            text(&stack(&["topic-size", &topic]))
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
                > 0
        },
    );

    let first = config(&dir, &topic, &format!("{table}_a"), true);
    let applied = run_until_idle(&first);
    assert!(applied > 0, "the first run applied nothing");
    verify(&first, &table);
    let stored = psql(
        REPLICA_URL,
        &format!("SELECT next_offset FROM _ripple.offsets WHERE topic = '{topic}'"),
    );
    assert!(
        stored.trim().parse::<i64>().unwrap_or(0) > 0,
        "no offset stored for {topic}: {stored:?}"
    );

    // A new group has no committed offsets and reads from the beginning, unless the replica's
    // own offsets say where it stands.
    let fresh = config(&dir, &topic, &format!("{table}_b"), true);
    assert_eq!(
        run_until_idle(&fresh),
        0,
        "a new group re-applied events the replica holds"
    );
    let without = config(&dir, &topic, &format!("{table}_c"), false);
    assert_eq!(
        run_until_idle(&without),
        applied,
        "without exactly_once a new group applies everything again"
    );

    // Roll the replica back to nothing, rows and offsets together; the first group's committed
    // offsets are at the end of the topic, the replica's at its start.
    psql(
        REPLICA_URL,
        &format!(
            "BEGIN; DELETE FROM public.{table}; \
             UPDATE _ripple.offsets SET next_offset = 0 WHERE topic = '{topic}'; COMMIT;"
        ),
    );
    assert_eq!(
        run_until_idle(&first),
        applied,
        "the rolled-back replica did not get everything again"
    );
    let report = verify(&first, &table);
    assert!(report.contains("EQUAL"), "{report}");
}
