//! Two Ripple instances in one consumer group, as engines in this process over a slow recording sink:
//! when the second joins mid-stream, the first lets the batch it is applying land and commits it
//! before its partitions move, and drops what it had fetched of them, so every event is applied
//! and none twice. (Without the commit on revocation, the new owner starts from an older offset and
//! applies the first instance's last batch again.) And when the first is paused for a sink that is
//! down as the second joins, the partitions it gets back are not left paused.

mod common;

use async_trait::async_trait;
use common::*;
use ripple::config::Config;
use ripple_sink::{ChangeEvent, Sink, SinkError, Target, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Remembers every key it was given; slow enough that a rebalance lands mid-batch, and down (every
/// apply fails, retriably) until `down_until`.
struct Recorder {
    keys: Mutex<Vec<i64>>,
    down_until: Instant,
}

impl Recorder {
    fn new(down_for: Duration) -> Arc<Self> {
        Arc::new(Self {
            keys: Mutex::default(),
            down_until: Instant::now() + down_for,
        })
    }
}

#[async_trait]
impl Sink for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    async fn ready(&self) -> Result<(), SinkError> {
        Ok(())
    }

    async fn apply(&self, _target: Target<'_>, events: &[ChangeEvent]) -> Result<(), SinkError> {
        if Instant::now() < self.down_until {
            return Err(SinkError::retriable("the recorder is down"));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut keys = self.keys.lock().unwrap();
        for e in events {
            match e.key.first() {
                Some(Value::Int(id)) => keys.push(*id),
                other => panic!("unexpected key {other:?}"),
            }
        }
        Ok(())
    }
}

/// Runs one engine until it is idle: what it did, and its metrics as `/metrics` would show them.
async fn instance(
    config: std::path::PathBuf,
    recorder: Arc<Recorder>,
) -> (ripple::RunSummary, String) {
    let config = Config::load_with_sinks(&config, &["recorder"]).unwrap();
    let engine = ripple::Engine::builder(config)
        .sink(recorder)
        .exit_when_idle(Some(Duration::from_secs(4)))
        .build()
        .await
        .unwrap();
    let metrics = engine.metrics();
    let summary = engine.run(std::future::pending()).await.unwrap();
    (summary, metrics.render())
}

/// The sum of a counter's series in Prometheus text.
fn counter_total(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A table of `rows` rows snapshotted into a 4-partition topic, and a config routing it to the
/// recorder.
fn setup(prefix: &str, rows: i64) -> (Connector, std::path::PathBuf) {
    require_stack();
    let table = unique(prefix);
    psql(
        SOURCE_URL,
        &format!(
            "DROP TABLE IF EXISTS public.{table}; \
             CREATE TABLE public.{table} (id bigint PRIMARY KEY, note text); \
             INSERT INTO public.{table} SELECT g, 'row ' || g FROM generate_series(1, {rows}) g;"
        ),
    );
    let connector = Connector::with_partitions(
        &table.replace('_', "-"),
        &table,
        &format!("public.{table}"),
        4,
    );
    let topic = connector.topic(&table);
    wait_until(
        Duration::from_secs(60),
        "the snapshot to reach the topic",
        || text(&stack(&["topic-size", &topic])).trim() == rows.to_string(),
    );
    let config = temp_dir(&table).join("rebalance.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{BROKERS}"
group_id = "{table}"
topics = ["{topic}"]

[pipeline]
batch_size = 60
batch_linger_ms = 50
max_retries = 2
retry_initial_delay_ms = 100
retry_max_delay_ms = 400

[[routes]]
topics = ["{topic}"]
sinks = ["recorder"]
"#
        ),
    )
    .unwrap();
    (connector, config)
}

/// How often each id was applied, over both recorders.
fn tally(recorders: &[&Recorder]) -> BTreeMap<i64, usize> {
    let mut applied = BTreeMap::new();
    for r in recorders {
        for id in r.keys.lock().unwrap().iter() {
            *applied.entry(*id).or_default() += 1;
        }
    }
    applied
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joining_instance_takes_over_where_the_first_stopped() {
    let rows = 1200;
    let (_connector, config) = setup("rebal", rows);
    let first = Recorder::new(Duration::ZERO);
    let second = Recorder::new(Duration::ZERO);
    let one = tokio::spawn(instance(config.clone(), first.clone()));
    // The second joins once the first is well into the stream.
    let started = Instant::now();
    while first.keys.lock().unwrap().len() < 120 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first instance applied nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let two = tokio::spawn(instance(config.clone(), second.clone()));
    let ((one, one_metrics), (two, two_metrics)) = (one.await.unwrap(), two.await.unwrap());

    let applied = tally(&[&first, &second]);
    let missing: Vec<i64> = (1..=rows).filter(|id| !applied.contains_key(id)).collect();
    let twice: Vec<i64> = applied
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    let (by_first, by_second) = (
        first.keys.lock().unwrap().len(),
        second.keys.lock().unwrap().len(),
    );
    println!(
        "rebalance: first applied {by_first}, second {by_second}; missing {}, applied twice {}\n  first: {one}\n  second: {two}",
        missing.len(),
        twice.len()
    );
    assert!(missing.is_empty(), "events never applied: {missing:?}");
    assert!(by_second > 0, "the second instance got no partition");
    assert!(
        twice.is_empty(),
        "{} events applied twice (first instance {by_first}, second {by_second}): {:?}",
        twice.len(),
        &twice[..twice.len().min(20)]
    );
    // Two engines in one process keep their own figures: each counts what its sink applied.
    let counted = (
        counter_total(&one_metrics, "ripple_events_applied_total"),
        counter_total(&two_metrics, "ripple_events_applied_total"),
    );
    assert_eq!(
        counted,
        (by_first as u64, by_second as u64),
        "each engine's ripple_events_applied_total is its own sink's count"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_assigned_while_paused_resume_with_the_sink() {
    let rows = 600;
    let (_connector, config) = setup("rebal_paused", rows);
    // The first instance's sink is down long enough for consumption to pause (after 1 s), and
    // comes back while the second instance's joining revokes the first's partitions.
    let first = Recorder::new(Duration::from_secs(4));
    let second = Recorder::new(Duration::ZERO);
    let one = tokio::spawn(instance(config.clone(), first.clone()));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let two = tokio::spawn(instance(config.clone(), second.clone()));
    // A partition left paused never catches up, so its instance never exits.
    let both = async { (one.await.unwrap().0, two.await.unwrap().0) };
    let (one, two) = tokio::time::timeout(Duration::from_secs(60), both)
        .await
        .unwrap_or_else(|_| {
            let applied = tally(&[&first, &second]);
            panic!(
                "not caught up after 60 s ({} of {rows} events applied): a partition stayed paused",
                applied.len()
            )
        });
    let applied = tally(&[&first, &second]);
    let missing: Vec<i64> = (1..=rows).filter(|id| !applied.contains_key(id)).collect();
    println!(
        "paused rebalance: first applied {}, second {}; missing {}\n  first: {one}\n  second: {two}",
        first.keys.lock().unwrap().len(),
        second.keys.lock().unwrap().len(),
        missing.len()
    );
    assert!(missing.is_empty(), "events never applied: {missing:?}");
}
