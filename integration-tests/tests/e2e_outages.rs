//! Outages are not bad data: while the seed workload streams into the replica, Redis and the index
//! with a dead-letter topic configured, each store in turn refuses writes for its own reasons:
//! the replica turned read-only (`default_transaction_read_only`, sessions ended), Redis at
//! `maxmemory` with `noeviction`, the index with `index.blocks.write`, and Redis frozen with SIGSTOP
//! for longer than `pipeline.apply_timeout_ms`. During each, `/readyz` must name the sink and the
//! cause; after each is undone the pipeline catches up by itself, and at the end there is not one
//! dead letter and every store verifies EQUAL.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

const REPLICA_ADMIN: &str = "postgres://postgres@127.0.0.1:15433/postgres";

/// Undoes every outage however the test ends, so later tests find the stores writable.
struct Undo {
    index: String,
}

impl Drop for Undo {
    fn drop(&mut self) {
        // Redis first: a frozen Redis would hang the commands after it.
        if let Ok(pid) = std::fs::read_to_string(repo().join(".stack/run/redis.pid")) {
            let _ = Command::new("kill").args(["-CONT", pid.trim()]).output();
        }
        let _ = Command::new("redis-cli")
            .args(["-p", "16379", "CONFIG", "SET", "maxmemory", "0"])
            .output();
        let _ = Command::new("psql")
            .args([
                REPLICA_ADMIN,
                "-XAtqc",
                "ALTER DATABASE replica RESET default_transaction_read_only",
            ])
            .output();
        search_request(
            "PUT",
            &format!("{}/_settings", self.index),
            Some(r#"{"index.blocks.write": null}"#),
        );
    }
}

fn end_replica_sessions() {
    psql(
        REPLICA_ADMIN,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'replica' AND application_name = 'ripple'",
    );
}

fn redis_signal(signal: &str) {
    let pid = std::fs::read_to_string(repo().join(".stack/run/redis.pid")).expect("redis pid file");
    assert!(
        Command::new("kill")
            .args([signal, pid.trim()])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits until /readyz answers 503 with `sink` down for a reason containing one of `causes`.
fn wait_down(port: u16, sink: &str, causes: &[&str]) -> String {
    let mut last = String::new();
    wait_until(
        Duration::from_secs(30),
        &format!("/readyz to name {sink} down ({causes:?})"),
        || {
            let (code, body) = http_get(port, "/readyz");
            last = body;
            let state: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
            let reason = state["sinks"][sink].as_str().unwrap_or_default();
            code == 503 && reason.starts_with("down:") && causes.iter().any(|c| reason.contains(c))
        },
    );
    last
}

#[test]
fn outages_of_every_kind_are_waited_out_and_nothing_is_dead_lettered() {
    require_stack();
    let t = unique("e2e_outages");
    let dir = temp_dir(&t);
    let dlq = format!("{t}.dead-letter");
    let port = 19900 + (std::process::id() % 90) as u16;
    let setup = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &t, "--drop", "--setup", "--count", "0",
    ]);
    assert!(setup.status.success(), "loadgen failed: {}", text(&setup));
    let connector = Connector::start(&t.replace('_', "-"), &t, &format!("public.{t}"));
    let topic = connector.topic(&t);
    let extra = format!(
        "\n[sinks.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:16379\"\n\
         \n[sinks.search]\ntype = \"elasticsearch\"\nurl = \"http://127.0.0.1:9251\"\n\
         \n[[routes]]\ntopics = [\"{topic}\"]\nsinks = [\"cache\", \"search\"]\n\
         \n[pipeline]\nbatch_size = 500\nmax_retries = 2\nretry_initial_delay_ms = 100\nretry_max_delay_ms = 500\napply_timeout_ms = 2000\n\
         \n[dead_letter]\ntopic = \"{dlq}\"\n\
         \n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let config = write_config(&dir, std::slice::from_ref(&topic), &t, &extra);
    let _undo = Undo { index: t.clone() };
    let mut run = RippleProcess::start(&config, &[]);
    let load = std::thread::spawn({
        let t = t.clone();
        move || {
            ripple(&[
                "loadgen", "--url", SOURCE_URL, "--table", &t, "--count", "12000", "--rate", "250",
                "--seed", "9",
            ])
        }
    });
    wait_until(Duration::from_secs(60), "the index to exist", || {
        search_request("GET", &format!("{t}/_count"), None)["count"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    let mut seen = Vec::new();

    // The replica read-only, as a standby after failover: writes refused with 25006.
    psql(
        REPLICA_ADMIN,
        "ALTER DATABASE replica SET default_transaction_read_only = on",
    );
    end_replica_sessions();
    seen.push(wait_down(port, "replica", &["read-only"]));
    std::thread::sleep(Duration::from_secs(2));
    psql(
        REPLICA_ADMIN,
        "ALTER DATABASE replica RESET default_transaction_read_only",
    );
    end_replica_sessions();

    // Redis out of memory under noeviction: every write answers OOM.
    redis_cli(&["CONFIG", "SET", "maxmemory", "1"]);
    seen.push(wait_down(port, "cache", &["OOM"]));
    std::thread::sleep(Duration::from_secs(2));
    redis_cli(&["CONFIG", "SET", "maxmemory", "0"]);

    // The index blocked for writes (as a disk watermark or an operator does).
    search_request(
        "PUT",
        &format!("{t}/_settings"),
        Some(r#"{"index.blocks.write": true}"#),
    );
    seen.push(wait_down(port, "search", &["cluster_block_exception"]));
    std::thread::sleep(Duration::from_secs(2));
    search_request(
        "PUT",
        &format!("{t}/_settings"),
        Some(r#"{"index.blocks.write": null}"#),
    );

    // Redis frozen: no error at all, only silence. The client's own response timeout or, past
    // it, pipeline.apply_timeout_ms ends each attempt.
    redis_signal("-STOP");
    seen.push(wait_down(port, "cache", &["timed out", "no answer within"]));
    std::thread::sleep(Duration::from_secs(1));
    redis_signal("-CONT");

    let load = load.join().unwrap();
    assert!(load.status.success(), "loadgen failed: {}", text(&load));
    let report = wait_verified(&config, &format!("public.{t}"), 3, Duration::from_secs(180));
    println!("{report}");
    for s in &seen {
        println!("readyz during an outage: {s}");
    }
    assert!(run.is_running(), "ripple stopped during an outage");
    assert_eq!(dead_letters(&dlq).len(), 0, "an outage was dead-lettered");
    let rows: i64 = psql(REPLICA_URL, &format!("SELECT count(*) FROM public.{t}"))
        .parse()
        .unwrap();
    assert!(rows > 1000, "replica has {rows} rows");
    assert!(run.signal("TERM").success());
    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
}
