//! What the engine reports as it runs: one typed [`Event`] per fact, sent through the engine's own
//! [`Telemetry`] handle to every [`Subscriber`] (the Prometheus metrics, the live dashboard). The
//! pipeline, the source and the run loop know this module only; two engines in one process have
//! two handles, and so separate figures.

use ripple_sink::{ChangeEvent, TableRef};
use std::sync::Arc;
use std::time::Duration;

/// One fact, borrowed from whoever reports it.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A sink the engine runs, before it applied anything.
    SinkKnown { sink: &'a str },
    /// Records read from `topic`, counted when their batch is handed to the sinks.
    Consumed { topic: &'a str, records: u64 },
    /// A batch of this many events is handed to the sinks.
    BatchStarted { events: usize },
    /// `sink` applied `events` (one table's, of one call) but those at `refused` (ascending
    /// indices). `took` is the call's time when it applied everything it was given.
    Applied {
        sink: &'a str,
        events: &'a [ChangeEvent],
        refused: &'a [usize],
        took: Option<Duration>,
    },
    /// An apply failed for a reason that may pass (an outage) and is retried.
    Retry {
        sink: &'a str,
        table: &'a TableRef,
        error: &'a str,
    },
    /// The sink counts as down until an apply succeeds (the dead-letter breaker opened).
    SinkDown { sink: &'a str, reason: &'a str },
    /// Records (`stage` = `decode`) or events (`stage` = the sink) written to the dead letters.
    DeadLettered {
        topic: &'a str,
        stage: &'a str,
        count: u64,
    },
    /// A batch every owning sink applied, about to be committed: each table's events, and how
    /// many of the batch's records were dead-lettered. `now_ms`: Unix milliseconds.
    BatchApplied {
        tables: &'a [&'a [ChangeEvent]],
        dead_lettered: usize,
        now_ms: i64,
    },
    /// Per partition, the records not yet applied by every sink.
    Lag { lags: &'a [((String, i32), i64)] },
    /// Fetched data librdkafka could not turn into records (`kind`: `decompression`).
    FetchError { kind: &'static str },
    /// A background verification pass ended: its report, or why it could not run.
    Verified {
        report: Result<&'a crate::verify::VerifyReport, &'a str>,
        took: Duration,
        now_ms: i64,
    },
}

/// Something that turns events into figures. Called on the reporter's task: keep it short.
pub trait Subscriber: Send + Sync {
    fn on(&self, event: &Event<'_>);
}

/// The handle events are reported through; cheap to clone. The default reports to no one.
#[derive(Clone, Default)]
pub struct Telemetry {
    subscribers: Arc<[Arc<dyn Subscriber>]>,
}

impl Telemetry {
    pub fn new(subscribers: Vec<Arc<dyn Subscriber>>) -> Self {
        Self {
            subscribers: subscribers.into(),
        }
    }

    pub fn emit(&self, event: Event<'_>) {
        for s in self.subscribers.iter() {
            s.on(&event);
        }
    }
}
