//! The metrics endpoint while the seed workload streams through real Debezium into the replica and
//! Redis: every metric (records consumed, events applied per op, retries, dead letters, lag per
//! partition, batch sizes, apply and end-to-end latency, sink status) is there with a non-zero
//! value, `/healthz` answers, and `/readyz` turns 503 naming the sink while Redis is down.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// The sum of every sample of `name` whose labels contain all of `labels`.
fn sample_sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn every_metric_moves_and_readiness_follows_the_sinks() {
    require_stack();
    let t = unique("e2e_metrics");
    let dir = temp_dir(&t);
    let port = 19500 + (std::process::id() % 400) as u16;
    let setup = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &t, "--drop", "--setup", "--count", "200",
    ]);
    assert!(setup.status.success(), "loadgen failed: {}", text(&setup));
    let connector = Connector::start(&t.replace('_', "-"), &t, &format!("public.{t}"));
    let topic = connector.topic(&t);
    let dlq = format!("{t}.dead-letter");
    let extra = format!(
        "\n[sinks.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:16379\"\n\
         \n[[routes]]\ntopics = [\"{topic}\"]\nsinks = [\"cache\"]\n\
         \n[pipeline]\nbatch_size = 200\nmax_retries = 2\nretry_initial_delay_ms = 100\nretry_max_delay_ms = 500\n\
         \n[dead_letter]\ntopic = \"{dlq}\"\n\
         \n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let config = write_config(&dir, std::slice::from_ref(&topic), &t, &extra);
    let mut run = RippleProcess::start(&config, &[]);
    wait_until(Duration::from_secs(30), "the metrics endpoint", || {
        http_get(port, "/healthz").0 == 200
    });
    assert_eq!(
        http_get(port, "/readyz").0,
        200,
        "{}",
        http_get(port, "/readyz").1
    );

    // Load, sampling the lag while it streams; one malformed record for the dead-letter count.
    let load = std::thread::spawn({
        let t = t.clone();
        move || {
            ripple(&[
                "loadgen", "--url", SOURCE_URL, "--table", &t, "--count", "6000", "--rate", "600",
                "--seed", "3",
            ])
        }
    });
    produce(&topic, &["{\"id\":1}\tnot json".to_string()]);
    let mut max_lag = 0.0f64;
    let started = Instant::now();
    while !load.is_finished() && started.elapsed() < Duration::from_secs(60) {
        let (_, body) = http_get(port, "/metrics");
        max_lag = max_lag.max(sample_sum(&body, "ripple_consumer_lag", &[]));
        std::thread::sleep(Duration::from_millis(300));
    }
    let load = load.join().unwrap();
    assert!(load.status.success(), "loadgen failed: {}", text(&load));

    // Redis down for longer than the retries: retries counted, the sink reported down, readiness
    // names it.
    stack(&["stop", "redis"]);
    std::thread::sleep(Duration::from_secs(3));
    let (code, body) = http_get(port, "/readyz");
    // Changes that arrive while a sink is down are lag until it is back (reported every 5 s).
    let more = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &t, "--count", "20", "--seed", "4",
    ]);
    assert!(more.status.success(), "loadgen failed: {}", text(&more));
    let waiting = Instant::now();
    while max_lag <= 0.0 && waiting.elapsed() < Duration::from_secs(15) {
        let (_, body) = http_get(port, "/metrics");
        max_lag = max_lag.max(sample_sum(&body, "ripple_consumer_lag", &[]));
        std::thread::sleep(Duration::from_millis(300));
    }
    stack(&["start", "redis"]);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"cache\""), "{body}");
    assert!(run.is_running(), "ripple exited:\n{}", run.log_text());

    wait_verified(&config, &format!("public.{t}"), 2, Duration::from_secs(90));
    wait_until(Duration::from_secs(30), "readiness back", || {
        http_get(port, "/readyz").0 == 200
    });
    let (_, metrics) = http_get(port, "/metrics");
    let topic_label = format!("topic=\"{topic}\"");
    let checks: Vec<(&str, f64)> = vec![
        (
            "records consumed",
            sample_sum(&metrics, "ripple_records_consumed_total", &[&topic_label]),
        ),
        (
            "upserts applied",
            sample_sum(&metrics, "ripple_events_applied_total", &["op=\"upsert\""]),
        ),
        (
            "deletes applied",
            sample_sum(&metrics, "ripple_events_applied_total", &["op=\"delete\""]),
        ),
        (
            "retries",
            sample_sum(&metrics, "ripple_apply_retries_total", &["sink=\"cache\""]),
        ),
        (
            "dead letters",
            sample_sum(
                &metrics,
                "ripple_dead_lettered_total",
                &["stage=\"decode\""],
            ),
        ),
        ("lag (max sampled)", max_lag),
        (
            "batches",
            sample_sum(&metrics, "ripple_batch_events_count", &[]),
        ),
        (
            "replica apply latency samples",
            sample_sum(
                &metrics,
                "ripple_apply_seconds_count",
                &["sink=\"replica\""],
            ),
        ),
        (
            "end-to-end latency samples",
            sample_sum(&metrics, "ripple_end_to_end_seconds_count", &[]),
        ),
        (
            "end-to-end latency total",
            sample_sum(&metrics, "ripple_end_to_end_seconds_sum", &[]),
        ),
        ("sinks up", sample_sum(&metrics, "ripple_sink_up", &[])),
    ];
    let zero: Vec<String> = checks
        .iter()
        .filter(|(_, v)| *v <= 0.0)
        .map(|(what, _)| what.to_string())
        .collect();
    println!("metrics: {checks:?}");
    assert!(zero.is_empty(), "zero: {zero:?}\n{metrics}");
    assert!(run.signal("TERM").success());

    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
}
