//! The live dashboard Ripple serves itself on the metrics listener: `/` and `/dashboard` (one
//! self-contained page), `/dashboard/history` (the last five minutes of snapshots, so charts are
//! full on load) and `/dashboard/events` (server-sent events, one snapshot a second).
//!
//! [`Live`] is a [`Subscriber`] of the engine's telemetry (one per engine); a background task
//! turns what it gathered into a snapshot each second. Counts are cumulative, so the page
//! derives rates from consecutive snapshots and a missed one costs nothing.

use crate::telemetry::{Event, Subscriber};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use ripple_sink::{ChangeEvent, Op};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Snapshots kept for `/dashboard/history`: five minutes at one a second.
const HISTORY: usize = 300;
/// Changes kept for the feed.
const RECENT: usize = 40;
/// End-to-end latency percentiles are over the samples of this window.
const LATENCY_WINDOW: Duration = Duration::from_secs(10);
/// At most this many latency samples are kept per window (the newest).
const LATENCY_SAMPLES: usize = 20_000;

#[derive(Default)]
struct State {
    /// Events applied by every sink that owns them, per table and op.
    totals: BTreeMap<String, BTreeMap<&'static str, u64>>,
    consumed: u64,
    dead_lettered: u64,
    latencies: VecDeque<(Instant, f64)>,
    recent: VecDeque<Change>,
    sinks: BTreeMap<String, SinkState>,
    lag: BTreeMap<(String, i32), i64>,
}

#[derive(Clone, Default, Serialize)]
struct SinkState {
    up: bool,
    applied: u64,
    last_error: Option<String>,
    /// Unix milliseconds.
    last_error_at: Option<i64>,
}

#[derive(Clone, Serialize)]
struct Change {
    /// Unix milliseconds when applied.
    at: i64,
    table: String,
    op: &'static str,
    key: String,
    /// From the source's commit to applied.
    latency_ms: Option<i64>,
}

/// What the dashboard shows at one moment.
#[derive(Clone, Serialize)]
pub struct Snapshot {
    /// Unix milliseconds.
    pub t: i64,
    pub uptime_s: u64,
    totals: BTreeMap<String, BTreeMap<&'static str, u64>>,
    consumed: u64,
    dead_lettered: u64,
    latency_ms: Latency,
    lag: Vec<Lag>,
    sinks: BTreeMap<String, SinkState>,
    recent: Vec<Change>,
    /// The last `ripple verify` report for this config, if one was written.
    verify: Option<serde_json::Value>,
}

#[derive(Clone, Default, Serialize)]
struct Latency {
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    samples: usize,
}

#[derive(Clone, Serialize)]
struct Lag {
    topic: String,
    partition: i32,
    lag: i64,
}

/// An engine's live state.
pub struct Live {
    state: Mutex<State>,
    started: Instant,
    history: Mutex<VecDeque<Arc<str>>>,
    updates: broadcast::Sender<Arc<str>>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::default()),
            started: Instant::now(),
            history: Mutex::new(VecDeque::new()),
            updates: broadcast::channel(16).0,
        }
    }
}

impl Subscriber for Live {
    fn on(&self, event: &Event<'_>) {
        match *event {
            Event::SinkKnown { sink } => self.sink_known(sink),
            Event::Consumed { records, .. } => self.state().consumed += records,
            Event::Applied {
                sink,
                events,
                refused,
                ..
            } => self.sink_applied(sink, events.len() - refused.len()),
            Event::Retry { sink, error, .. } => self.sink_failed(sink, error),
            Event::SinkDown { sink, reason } => self.sink_failed(sink, reason),
            Event::BatchApplied {
                tables,
                dead_lettered,
                now_ms,
            } => self.batch_applied(tables, dead_lettered, now_ms),
            Event::Lag { lags } => self.state().lag = lags.iter().cloned().collect(),
            Event::BatchStarted { .. }
            | Event::DeadLettered { .. }
            | Event::FetchError { .. }
            | Event::Verified { .. } => {}
        }
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Upsert => "upsert",
        Op::Delete => "delete",
        Op::Truncate => "truncate",
    }
}

fn key_text(e: &ChangeEvent) -> String {
    e.key
        .iter()
        .map(|v| ripple_sink::to_text(v).unwrap_or_else(|| "null".into()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Live {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A batch every owning sink applied and whose offsets are being committed.
    fn batch_applied(&self, tables: &[&[ChangeEvent]], dead_lettered: usize, now_ms: i64) {
        let now = Instant::now();
        let mut s = self.state();
        s.dead_lettered += dead_lettered as u64;
        for events in tables {
            let Some(first) = events.first() else {
                continue;
            };
            let name = first.table().to_string();
            let counts = s.totals.entry(name).or_default();
            for e in events.iter() {
                *counts.entry(op_name(e.op)).or_default() += 1;
            }
            for e in events.iter().filter(|e| e.source_ts_ms > 0) {
                s.latencies
                    .push_back((now, (now_ms - e.source_ts_ms).max(0) as f64));
            }
        }
        while s.latencies.len() > LATENCY_SAMPLES {
            s.latencies.pop_front();
        }
        // The feed shows the batch's last changes, newest first.
        let newest: Vec<&ChangeEvent> = tables
            .iter()
            .flat_map(|t| t.iter())
            .rev()
            .take(RECENT)
            .collect();
        for e in newest.into_iter().rev() {
            s.recent.push_front(Change {
                at: now_ms,
                table: e.table().to_string(),
                op: op_name(e.op),
                key: key_text(e),
                latency_ms: (e.source_ts_ms > 0).then(|| (now_ms - e.source_ts_ms).max(0)),
            });
        }
        s.recent.truncate(RECENT);
    }

    fn sink_applied(&self, sink: &str, events: usize) {
        let mut s = self.state();
        let state = s.sinks.entry(sink.to_string()).or_default();
        state.up = true;
        state.applied += events as u64;
    }

    fn sink_failed(&self, sink: &str, error: &str) {
        let mut s = self.state();
        let state = s.sinks.entry(sink.to_string()).or_default();
        state.up = false;
        state.last_error = Some(error.to_string());
        state.last_error_at = Some(chrono::Utc::now().timestamp_millis());
    }

    /// Why the sink is down (its last failure), while its last apply failed.
    pub fn sink_down(&self, sink: &str) -> Option<String> {
        let s = self.state();
        let state = s.sinks.get(sink)?;
        if state.up {
            None
        } else {
            state.last_error.clone()
        }
    }

    /// Sinks known before they applied anything show as up with nothing applied.
    fn sink_known(&self, sink: &str) {
        self.state()
            .sinks
            .entry(sink.to_string())
            .or_insert_with(|| SinkState {
                up: true,
                ..Default::default()
            });
    }

    fn snapshot(&self, verify: Option<serde_json::Value>) -> Snapshot {
        let now = Instant::now();
        let mut s = self.state();
        while s
            .latencies
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > LATENCY_WINDOW)
        {
            s.latencies.pop_front();
        }
        let mut window: Vec<f64> = s.latencies.iter().map(|(_, l)| *l).collect();
        window.sort_by(f64::total_cmp);
        let pct = |p: f64| -> Option<f64> {
            (!window.is_empty()).then(|| window[((window.len() - 1) as f64 * p).round() as usize])
        };
        Snapshot {
            t: chrono::Utc::now().timestamp_millis(),
            uptime_s: self.started.elapsed().as_secs(),
            totals: s.totals.clone(),
            consumed: s.consumed,
            dead_lettered: s.dead_lettered,
            latency_ms: Latency {
                p50: pct(0.50),
                p95: pct(0.95),
                p99: pct(0.99),
                samples: window.len(),
            },
            lag: s
                .lag
                .iter()
                .map(|((topic, partition), lag)| Lag {
                    topic: topic.clone(),
                    partition: *partition,
                    lag: *lag,
                })
                .collect(),
            sinks: s.sinks.clone(),
            recent: s.recent.iter().cloned().collect(),
            verify,
        }
    }

    /// Takes a snapshot a second, keeps five minutes of them and sends each to the page.
    pub async fn run(self: Arc<Self>, verify_report: Option<PathBuf>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let verify = match &verify_report {
                Some(path) => tokio::fs::read(path)
                    .await
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok()),
                None => None,
            };
            let json: Arc<str> = match serde_json::to_string(&self.snapshot(verify)) {
                Ok(j) => j.into(),
                Err(_) => continue,
            };
            {
                let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
                h.push_back(json.clone());
                while h.len() > HISTORY {
                    h.pop_front();
                }
            }
            // No page open is not an error.
            let _ = self.updates.send(json);
        }
    }

    fn history_json(&self) -> String {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::from("[");
        for (i, s) in h.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(s);
        }
        out.push(']');
        out
    }
}

const PAGE: &str = include_str!("page.html");

/// The dashboard's routes, merged into the metrics server.
pub fn routes(live: Arc<Live>) -> axum::Router {
    use axum::routing::get;
    let page = || async { axum::response::Html(PAGE) };
    axum::Router::new()
        .route("/", get(page))
        .route("/dashboard", get(page))
        .route(
            "/dashboard/history",
            get({
                let live = live.clone();
                move || async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        live.history_json(),
                    )
                }
            }),
        )
        .route(
            "/dashboard/events",
            get(move || events(live.updates.subscribe())),
        )
}

async fn events(
    rx: broadcast::Receiver<Arc<str>>,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, std::convert::Infallible>>> {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(json) => return Some((Ok(SseEvent::default().data(&*json)), rx)),
                // A slow page skips snapshots; counts are cumulative, so nothing is lost.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Where `ripple verify` leaves its last report for the dashboard: beside the config,
/// `<config stem>.last-verify.json`.
pub fn verify_report_path(config: &std::path::Path) -> PathBuf {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ripple".into());
    config.with_file_name(format!("{stem}.last-verify.json"))
}
