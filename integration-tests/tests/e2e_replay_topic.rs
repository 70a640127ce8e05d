//! `ripple replay --topic`: a replica that lost its rows gets them back from the change topic; a
//! start time after the last change replays nothing; a start offset replays exactly the records
//! from there to the end. `ripple replay --file`: the topic recorded with `kcat -C -J` brings a
//! replica that lost its rows back, and a line that is not a record is reported by its number.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn a_topic_replays_from_its_start_a_time_or_an_offset() {
    require_stack();
    let t = unique("e2e_replay_topic");
    let dir = temp_dir(&t);
    let load = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &t, "--drop", "--setup", "--count", "800",
    ]);
    assert!(load.status.success(), "loadgen failed: {}", text(&load));
    let connector = Connector::start(&t.replace('_', "-"), &t, &format!("public.{t}"));
    let topic = connector.topic(&t);
    // Small batches, so a replay is seen to go in many.
    let config = write_config(
        &dir,
        std::slice::from_ref(&topic),
        &t,
        "\n[pipeline]\nbatch_size = 100\n",
    );
    let table = format!("public.{t}");
    let run = RippleProcess::start(&config, &[]);
    wait_verified(&config, &table, 1, Duration::from_secs(60));
    assert!(run.signal("TERM").success());

    // The replica loses its rows; the topic has them all.
    psql(REPLICA_URL, &format!("DELETE FROM public.{t}"));
    assert!(
        !verify(&config, &table).status.success(),
        "verify missed the lost rows"
    );
    let size: u64 = text(&stack(&["topic-size", &topic]))
        .trim()
        .parse()
        .unwrap();
    let replay = |from: &[&str]| {
        let mut args = vec![
            "replay",
            "--config",
            config.to_str().unwrap(),
            "--topic",
            &topic,
        ];
        args.extend_from_slice(from);
        ripple(&args)
    };
    let all = replay(&[]);
    assert_eq!(replayed(&all), size, "{}", text(&all));
    let (applied, batches) = applied_in_batches(&all);
    assert!(applied > 100, "{}", text(&all));
    assert_eq!(
        batches,
        applied.div_ceil(100),
        "batches of batch_size: {}",
        text(&all)
    );
    let report = text(&verify(&config, &table));
    assert!(report.contains("EQUAL "), "{report}");
    let later = replay(&["--from-timestamp", "2100-01-01T00:00:00Z"]);
    assert_eq!(replayed(&later), 0);
    let tail = replay(&["--from-offset", &(size - 10).to_string()]);
    assert_eq!(replayed(&tail), 10);
    let bad = replay(&["--from-timestamp", "yesterday"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("RFC 3339"), "{}", text(&bad));

    // The topic recorded to a file (with one line of junk) replays into an emptied replica.
    let recorded = std::process::Command::new("kcat")
        .args([
            "-b",
            BROKERS,
            "-C",
            "-t",
            &topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-J",
        ])
        .output()
        .expect("run kcat");
    assert!(recorded.status.success());
    let mut lines = String::from_utf8(recorded.stdout).expect("JSON records are text");
    assert_eq!(lines.lines().count() as u64, size);
    lines.push_str("this is not a record\n");
    let file = dir.join("recorded.jsonl");
    std::fs::write(&file, lines).unwrap();
    psql(REPLICA_URL, &format!("DELETE FROM public.{t}"));
    let out = ripple(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--file",
        file.to_str().unwrap(),
    ]);
    let summary = text(&out);
    assert!(
        !out.status.success(),
        "the junk line is an error: {summary}"
    );
    assert!(
        summary.contains(&format!("replayed {} records", size + 1)),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("line {}: not a recorded record", size + 1)),
        "{summary}"
    );
    assert_eq!(applied_in_batches(&out), (applied, batches), "{summary}");
    let report = text(&verify(&config, &table));
    assert!(report.contains("EQUAL "), "{report}");

    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
}

/// The events a replay applied and the batches it took, from its summary.
fn applied_in_batches(out: &std::process::Output) -> (u64, u64) {
    let text = text(out);
    let line = text
        .lines()
        .find(|l| l.starts_with("replayed "))
        .unwrap_or_else(|| panic!("no summary in:\n{text}"));
    let number_before = |word: &str| -> u64 {
        let at = line
            .find(word)
            .unwrap_or_else(|| panic!("no {word:?} in {line:?}"));
        line[..at]
            .split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number before {word:?} in {line:?}"))
    };
    (number_before(" events applied"), number_before(" batches"))
}
