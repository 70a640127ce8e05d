//! What Ripple counts and measures, as Prometheus metrics: a [`Subscriber`] of the engine's
//! telemetry, one registry per engine. `server.rs` serves it at `/metrics`.

use crate::telemetry::{Event, Subscriber};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use ripple_sink::{ChangeEvent, Op};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApplyLabels {
    pub sink: String,
    pub table: String,
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkTableLabels {
    pub sink: String,
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub topic: String,
    /// `decode`, or the sink that rejected the event.
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i32,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub consumed: Family<TopicLabels, Counter>,
    pub applied: Family<ApplyLabels, Counter>,
    pub retried: Family<SinkTableLabels, Counter>,
    pub dead_lettered: Family<DeadLetterLabels, Counter>,
    pub lag: Family<PartitionLabels, Gauge>,
    pub batch_events: Histogram,
    pub apply_seconds: Histograms<SinkLabels>,
    pub end_to_end_seconds: Histogram,
    /// 1 while the sink's last apply succeeded, 0 while it is failing.
    pub sink_up: Family<SinkLabels, Gauge>,
    /// Fetched data librdkafka could not turn into records (`kind`: `decompression`).
    pub fetch_errors: Family<KindLabels, Counter>,
    /// The partitions `lag` shows: one no longer assigned is taken off.
    lag_shown: Mutex<HashSet<(String, i32)>>,
    /// Per sink and table, the rows the last background verification found missing, extra or
    /// different after reading them again (alert on it above 0).
    pub verify_differences: Family<SinkTableLabels, Gauge>,
    /// Per sink and table, the source rows the last pass compared.
    pub verify_rows: Family<SinkTableLabels, Gauge>,
    /// Passes by outcome: `equal`, `different`, `failed` (could not run: a store unreachable).
    pub verify_runs: Family<OutcomeLabels, Counter>,
    pub verify_seconds: Histogram,
    /// Unix seconds of the last pass that ran to the end.
    pub verify_last_run: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

fn latency_buckets() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ripple");
        let consumed = Family::<TopicLabels, Counter>::default();
        registry.register(
            "records_consumed",
            "Records read from Kafka",
            consumed.clone(),
        );
        let applied = Family::<ApplyLabels, Counter>::default();
        registry.register(
            "events_applied",
            "Change events a sink applied",
            applied.clone(),
        );
        let retried = Family::<SinkTableLabels, Counter>::default();
        registry.register(
            "apply_retries",
            "Retries of a failed apply",
            retried.clone(),
        );
        let dead_lettered = Family::<DeadLetterLabels, Counter>::default();
        registry.register(
            "dead_lettered",
            "Records written to the dead-letter topic",
            dead_lettered.clone(),
        );
        let lag = Family::<PartitionLabels, Gauge>::default();
        registry.register(
            "consumer_lag",
            "Records in the partition not yet applied by every sink (high watermark minus the next offset to apply)",
            lag.clone(),
        );
        let batch_events = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        registry.register(
            "batch_events",
            "Change events per batch",
            batch_events.clone(),
        );
        let apply_seconds: Histograms<SinkLabels> =
            Family::new_with_constructor(latency_buckets as fn() -> Histogram);
        registry.register(
            "apply_seconds",
            "Time one sink took to apply one table's part of a batch",
            apply_seconds.clone(),
        );
        let end_to_end_seconds = latency_buckets();
        registry.register(
            "end_to_end_seconds",
            "From the change's commit in the source to its batch being applied by every sink",
            end_to_end_seconds.clone(),
        );
        let sink_up = Family::<SinkLabels, Gauge>::default();
        registry.register(
            "sink_up",
            "1 while the sink's last apply succeeded, 0 while it fails",
            sink_up.clone(),
        );
        let fetch_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "fetch_errors",
            "Fetches librdkafka could not turn into records, such as a batch it cannot decompress",
            fetch_errors.clone(),
        );
        let verify_differences = Family::<SinkTableLabels, Gauge>::default();
        registry.register(
            "verify_differences",
            "Rows the last background verification found missing, extra or different in a sink, after reading them again",
            verify_differences.clone(),
        );
        let verify_rows = Family::<SinkTableLabels, Gauge>::default();
        registry.register(
            "verify_rows",
            "Source rows the last background verification compared with a sink",
            verify_rows.clone(),
        );
        let verify_runs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "verify_runs",
            "Background verification passes, by outcome (equal, different, failed)",
            verify_runs.clone(),
        );
        let verify_seconds = Histogram::new(exponential_buckets(0.1, 2.0, 16));
        registry.register(
            "verify_seconds",
            "Time one background verification pass took",
            verify_seconds.clone(),
        );
        let verify_last_run = Gauge::default();
        registry.register(
            "verify_last_run_timestamp_seconds",
            "When the last background verification pass ended (Unix seconds)",
            verify_last_run.clone(),
        );
        Self {
            registry,
            consumed,
            applied,
            retried,
            dead_lettered,
            lag,
            batch_events,
            apply_seconds,
            end_to_end_seconds,
            sink_up,
            fetch_errors,
            lag_shown: Mutex::default(),
            verify_differences,
            verify_rows,
            verify_runs,
            verify_seconds,
            verify_last_run,
        }
    }

    /// Everything, in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Counts what `sink` applied of `events` (one table).
    fn record_applied(&self, sink: &str, events: &[ChangeEvent], took: Duration) {
        self.count_applied(sink, events, &[]);
        let labels = SinkLabels {
            sink: sink.to_string(),
        };
        self.apply_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.sink_up.get_or_create(&labels).set(1);
    }

    /// Counts the events of a call as applied, but for those at `refused` (ascending indices).
    fn count_applied(&self, sink: &str, events: &[ChangeEvent], refused: &[usize]) {
        let Some(first) = events.first() else {
            return;
        };
        let table = first.table().to_string();
        let mut counts = [0u64; 3];
        let mut refused = refused.iter().peekable();
        for (i, e) in events.iter().enumerate() {
            if refused.next_if_eq(&&i).is_some() {
                continue;
            }
            counts[match e.op {
                Op::Upsert => 0,
                Op::Delete => 1,
                Op::Truncate => 2,
            }] += 1;
        }
        for (op, n) in ["upsert", "delete", "truncate"].into_iter().zip(counts) {
            if n > 0 {
                self.applied
                    .get_or_create(&ApplyLabels {
                        sink: sink.to_string(),
                        table: table.clone(),
                        op,
                    })
                    .inc_by(n);
            }
        }
    }

    fn record_retry(&self, sink: &str, table: &str) {
        self.retried
            .get_or_create(&SinkTableLabels {
                sink: sink.to_string(),
                table: table.to_string(),
            })
            .inc();
        self.sink_up
            .get_or_create(&SinkLabels {
                sink: sink.to_string(),
            })
            .set(0);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Subscriber for Metrics {
    fn on(&self, event: &Event<'_>) {
        match *event {
            Event::Consumed { topic, records } => {
                self.consumed
                    .get_or_create(&TopicLabels {
                        topic: topic.to_string(),
                    })
                    .inc_by(records);
            }
            Event::BatchStarted { events } => self.batch_events.observe(events as f64),
            Event::Applied {
                sink,
                events,
                refused,
                took,
            } => match took {
                Some(took) => self.record_applied(sink, events, took),
                None => self.count_applied(sink, events, refused),
            },
            Event::Retry { sink, table, .. } => self.record_retry(sink, &table.to_string()),
            Event::DeadLettered {
                topic,
                stage,
                count,
            } => {
                self.dead_lettered
                    .get_or_create(&DeadLetterLabels {
                        topic: topic.to_string(),
                        stage: stage.to_string(),
                    })
                    .inc_by(count);
            }
            Event::BatchApplied { tables, now_ms, .. } => {
                for e in tables.iter().flat_map(|t| t.iter()) {
                    if e.source_ts_ms > 0 {
                        self.end_to_end_seconds
                            .observe((now_ms - e.source_ts_ms).max(0) as f64 / 1000.0);
                    }
                }
            }
            Event::Lag { lags } => {
                let now: HashSet<(String, i32)> = lags.iter().map(|(p, _)| p.clone()).collect();
                let mut shown = self.lag_shown.lock().unwrap_or_else(|e| e.into_inner());
                for (topic, partition) in shown.difference(&now) {
                    self.lag.remove(&PartitionLabels {
                        topic: topic.clone(),
                        partition: *partition,
                    });
                }
                *shown = now;
                for ((topic, partition), lag) in lags {
                    self.lag
                        .get_or_create(&PartitionLabels {
                            topic: topic.clone(),
                            partition: *partition,
                        })
                        .set(*lag);
                }
            }
            Event::FetchError { kind } => {
                self.fetch_errors.get_or_create(&KindLabels { kind }).inc();
            }
            Event::Verified {
                report,
                took,
                now_ms,
            } => {
                self.verify_seconds.observe(took.as_secs_f64());
                let outcome = match report {
                    Err(_) => "failed",
                    Ok(r) if r.all_equal() => "equal",
                    Ok(_) => "different",
                };
                self.verify_runs
                    .get_or_create(&OutcomeLabels { outcome })
                    .inc();
                if let Ok(r) = report {
                    self.verify_last_run.set(now_ms / 1000);
                    for t in &r.tables {
                        let labels = SinkTableLabels {
                            sink: t.sink.clone(),
                            table: t.table.clone(),
                        };
                        let differences = t.missing + t.extra + t.different;
                        // A table that could not be compared row by row counts as one difference.
                        let differences = differences.max(u64::from(!t.equal()));
                        self.verify_differences
                            .get_or_create(&labels)
                            .set(differences as i64);
                        self.verify_rows
                            .get_or_create(&labels)
                            .set(t.source_rows as i64);
                    }
                }
            }
            Event::SinkKnown { .. } | Event::SinkDown { .. } => {}
        }
    }
}
