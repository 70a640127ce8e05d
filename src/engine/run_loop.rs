//! The run loop as a state machine: the phase the engine is in (idle, collecting, applying,
//! waiting on a slow or down sink, starting the next batch, draining, failing, stopped) and what
//! moves it on. It drives any consumer (`Consumption` plus `Records`), so its unit tests run with
//! the sink test kit and no Kafka.
//!
//! One batch is applied while the next one is collected; batches reach the sinks one at a time
//! and in order (per-key order), and a batch's offsets are committed only once it applied.
//! Revocations (served on the poll thread, inside the poll) are taken in by the collector at each
//! record and once more as a batch starts: what a batch holds of a revoked partition goes, and
//! records of it polled before the revocation are left out.

use super::collector::Collector;
use super::{EngineError, RunSummary};
use crate::pipeline::{Applier, Batch, PipelineError};
use crate::route::Router;
use crate::source::{Applied, Consumed, Consumption, Fetched, Partition, Records, SourceError};
use crate::telemetry::{Event, Telemetry};
use rdkafka::consumer::CommitMode;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::{JoinError, JoinHandle};

/// How long a batch still being applied may keep a shutdown waiting before it is abandoned (its
/// offsets uncommitted, so its events are delivered again on the next start).
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long a batch may take before consumption pauses: a healthy batch finishes well within
/// this, a sink that is down or slow does not.
pub(crate) const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// With no `exit_when_idle`, how often an idle loop looks up (it does nothing then).
const IDLE_TICK: Duration = Duration::from_secs(3600);

/// Where the run loop is. Each phase's method does its work and returns the next phase.
pub(crate) enum Phase<M> {
    /// No batch in hand: waiting for the first record of the next one. A batch in flight that
    /// lands meanwhile is committed; with `exit_when_idle`, being caught up ends the run.
    Idle,
    /// Filling a batch, from this first record, until it is full or `batch_linger_ms` passed.
    Collecting(Fetched<M>),
    /// The batch in hand waits for the one in flight to land, still filling up to its size. After
    /// `PAUSE_AFTER` the sink counts as slow or down: `WaitingOnSink`.
    Applying(Next),
    /// The batch in flight is late: every assigned partition is paused, so nothing more is fetched
    /// and memory stays bounded, while the consumer is still polled (it keeps its group
    /// membership however long the sink takes). Records fetched before the pause still join the
    /// batch in hand. Resumed when the batch lands.
    WaitingOnSink(Next),
    /// The previous batch landed: revocations since are taken in, and the batch in hand is handed
    /// to the sinks.
    Starting(Next),
    /// A record could neither be decoded nor dead-lettered: what preceded it is applied and
    /// committed, then the run ends with its error.
    Failing(PipelineError),
    /// Shutdown: the batch in flight gets `SHUTDOWN_GRACE` (then is abandoned uncommitted), the
    /// batch in hand is dropped uncommitted, and the newest offsets are committed synchronously.
    Draining,
    Stopped,
}

impl<M> Phase<M> {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Collecting(_) => "collecting",
            Phase::Applying(_) => "applying",
            Phase::WaitingOnSink(_) => "waiting on sink",
            Phase::Starting(_) => "starting",
            Phase::Failing(_) => "failing",
            Phase::Draining => "draining",
            Phase::Stopped => "stopped",
        }
    }
}

/// The batch in hand, and the record failure that ended it early, if one did.
pub(crate) struct Next {
    batch: Batch,
    failure: Option<PipelineError>,
}

type Applying = JoinHandle<Result<Batch, PipelineError>>;

/// What the run loop has applied and committed so far.
#[derive(Default)]
struct Progress {
    summary: RunSummary,
    committed: BTreeMap<Partition, i64>,
    first_record: Option<Instant>,
    last_apply: Option<Instant>,
}

pub(crate) struct RunLoop<'a, M> {
    source: &'a dyn Consumption,
    records: Records<M>,
    collector: Collector<M>,
    router: Router,
    applier: Arc<Applier>,
    telemetry: Telemetry,
    exit_when_idle: Option<Duration>,
    stop: Pin<Box<dyn futures::future::FusedFuture<Output = ()> + Send + 'a>>,
    in_flight: Option<Applying>,
    progress: Progress,
    /// The phases passed through, for the unit tests.
    #[cfg(test)]
    pub(crate) seen: Vec<&'static str>,
}

impl<'a, M: Consumed> RunLoop<'a, M> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        source: &'a dyn Consumption,
        records: Records<M>,
        collector: Collector<M>,
        router: Router,
        applier: Arc<Applier>,
        telemetry: Telemetry,
        exit_when_idle: Option<Duration>,
        shutdown: impl Future<Output = ()> + Send + 'a,
    ) -> Self {
        Self {
            source,
            records,
            collector,
            router,
            applier,
            telemetry,
            exit_when_idle,
            stop: Box::pin(futures::FutureExt::fuse(shutdown)),
            in_flight: None,
            progress: Progress::default(),
            #[cfg(test)]
            seen: Vec::new(),
        }
    }

    /// Runs from `Idle` to `Stopped`, or to the first unrecoverable error.
    pub(crate) async fn run(&mut self) -> Result<(), EngineError> {
        let mut phase = Phase::Idle;
        loop {
            #[cfg(test)]
            self.seen.push(phase.name());
            tracing::trace!(phase = phase.name(), "run loop");
            phase = match phase {
                Phase::Idle => self.idle().await?,
                Phase::Collecting(first) => self.collecting(first).await?,
                Phase::Applying(next) => self.applying(next).await?,
                Phase::WaitingOnSink(next) => self.waiting_on_sink(next).await?,
                Phase::Starting(next) => self.starting(next),
                Phase::Failing(error) => return Err(self.failing(error).await),
                Phase::Draining => self.draining().await?,
                Phase::Stopped => return Ok(()),
            };
        }
    }

    /// What the run did; `busy` runs from the first record to the last apply.
    pub(crate) fn summary(&self, started: Instant) -> RunSummary {
        let mut summary = self.progress.summary.clone();
        summary.dead_lettered += self.applier.rejected();
        summary.elapsed = started.elapsed();
        summary.busy = self
            .progress
            .first_record
            .zip(self.progress.last_apply)
            .map(|(first, last)| last.saturating_duration_since(first))
            .unwrap_or_default();
        summary
    }

    async fn idle(&mut self) -> Result<Phase<M>, EngineError> {
        let tick = self.exit_when_idle.unwrap_or(IDLE_TICK);
        let in_flight = self.in_flight.as_mut();
        let landing = in_flight.is_some();
        tokio::select! {
            _ = &mut self.stop => Ok(Phase::Draining),
            m = self.records.recv() => {
                let first = m.ok_or(SourceError::Stopped)?;
                self.progress.first_record.get_or_insert_with(Instant::now);
                Ok(Phase::Collecting(first))
            }
            // select! builds every branch's future, enabled or not: without a batch in flight
            // this one never resolves (and is never polled).
            r = async {
                match in_flight {
                    Some(handle) => handle.await,
                    None => std::future::pending().await,
                }
            }, if landing => {
                self.in_flight = None;
                self.land(r)?;
                Ok(Phase::Idle)
            }
            _ = tokio::time::sleep(tick) => {
                let done = self.exit_when_idle.is_some()
                    && self.in_flight.is_none()
                    && self.source.caught_up().await?;
                Ok(if done { Phase::Draining } else { Phase::Idle })
            }
        }
    }

    async fn collecting(&mut self, first: Fetched<M>) -> Result<Phase<M>, EngineError> {
        let (batch, failure) = self
            .collector
            .collect(&mut self.records, &mut self.router, first)
            .await?;
        Ok(Phase::Applying(Next { batch, failure }))
    }

    async fn applying(&mut self, mut next: Next) -> Result<Phase<M>, EngineError> {
        let Some(handle) = self.in_flight.as_mut() else {
            return Ok(Phase::Starting(next));
        };
        let pause_at = tokio::time::sleep(PAUSE_AFTER);
        tokio::pin!(pause_at);
        loop {
            // The batch in hand keeps filling up to its size while the sinks work, so a batch's
            // size follows the sinks' pace rather than what librdkafka had prefetched.
            let room = next.failure.is_none() && !self.collector.full(&next.batch);
            tokio::select! {
                r = &mut *handle => {
                    self.in_flight = None;
                    self.land(r)?;
                    return Ok(Phase::Starting(next));
                }
                _ = &mut self.stop => return Ok(Phase::Draining),
                _ = &mut pause_at => {
                    self.source.pause_all()?;
                    tracing::warn!("a sink is slow or down: consumption paused until the batch in hand is applied");
                    return Ok(Phase::WaitingOnSink(next));
                }
                m = self.records.recv(), if room => {
                    let m = m.ok_or(SourceError::Stopped)?;
                    next.failure = self.collector.take(&mut next.batch, &mut self.router, m).await?;
                }
            }
        }
    }

    async fn waiting_on_sink(&mut self, mut next: Next) -> Result<Phase<M>, EngineError> {
        let waited = Instant::now();
        let handle = self
            .in_flight
            .as_mut()
            .expect("a sink is waited on only with a batch in flight");
        let landed = loop {
            tokio::select! {
                r = &mut *handle => break r,
                _ = &mut self.stop => {
                    self.source.resume_all()?;
                    return Ok(Phase::Draining);
                }
                m = self.records.recv() => {
                    let m = m.ok_or(SourceError::Stopped)?;
                    if next.failure.is_none() {
                        next.failure =
                            self.collector.take(&mut next.batch, &mut self.router, m).await?;
                    }
                    // Partitions assigned by a rebalance meanwhile are paused too.
                    self.source.pause_all()?;
                }
            }
        };
        self.in_flight = None;
        self.source.resume_all()?;
        tracing::info!(
            waited_s = waited.elapsed().as_secs(),
            "sinks caught up: consumption resumed"
        );
        self.land(landed)?;
        Ok(Phase::Starting(next))
    }

    fn starting(&mut self, mut next: Next) -> Phase<M> {
        // A revocation can also come in a poll that returned nothing.
        self.collector.note_revoked(&mut next.batch);
        let mut batch = next.batch;
        for (topic, n) in batch.records.drain(..) {
            self.telemetry.emit(Event::Consumed {
                topic: &topic,
                records: n,
            });
        }
        if !batch.is_empty() {
            self.telemetry.emit(Event::BatchStarted {
                events: batch.events,
            });
            let applier = self.applier.clone();
            let landing = InFlight::start(self.source.applied().clone());
            self.in_flight = Some(tokio::spawn(async move {
                // The chaos suite times its kills by these two lines.
                tracing::debug!(events = batch.events, "apply started");
                let result = applier.apply(&batch).await;
                tracing::debug!(ok = result.is_ok(), "apply finished");
                if result.is_ok() {
                    batch.applied_at = Some(Instant::now());
                    landing.0.landed(Some(&batch.offsets));
                }
                result.map(|()| batch)
            }));
        }
        match next.failure {
            Some(failure) => Phase::Failing(failure),
            None => Phase::Idle,
        }
    }

    async fn failing(&mut self, failure: PipelineError) -> EngineError {
        if let Some(mut handle) = self.in_flight.take() {
            let landed = tokio::select! {
                r = &mut handle => Some(r),
                _ = &mut self.stop => self.grace(handle).await,
            };
            if let Some(Err(e)) = landed.map(|r| self.land(r)) {
                return e;
            }
        }
        failure.into()
    }

    async fn draining(&mut self) -> Result<Phase<M>, EngineError> {
        if let Some(handle) = self.in_flight.take()
            && let Some(r) = self.grace(handle).await
        {
            self.land(r)?;
        }
        // Asynchronous commits may still be under way: repeat the newest offsets synchronously.
        if let Err(e) = self
            .source
            .commit(&self.progress.committed, CommitMode::Sync)
        {
            tracing::warn!(error = %e, "final offset commit failed; the last batches will be delivered again (and change nothing)");
        }
        Ok(Phase::Stopped)
    }

    /// The batch in flight, if it lands within `SHUTDOWN_GRACE`; otherwise it is abandoned.
    async fn grace(&mut self, mut handle: Applying) -> Option<Result<BatchResult, JoinError>> {
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut handle).await {
            Ok(r) => Some(r),
            Err(_) => {
                handle.abort();
                tracing::warn!(
                    "shutting down with a batch still unapplied: its events will be delivered again"
                );
                None
            }
        }
    }

    /// A batch landed: reported, its offsets committed (asynchronously) and counted.
    fn land(&mut self, result: Result<BatchResult, JoinError>) -> Result<(), EngineError> {
        let batch = result.expect("apply task panicked")?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let tables: Vec<&[ripple_sink::ChangeEvent]> =
            batch.tables.iter().map(|t| t.events.as_slice()).collect();
        self.telemetry.emit(Event::BatchApplied {
            tables: &tables,
            dead_lettered: batch.dead_lettered,
            now_ms,
        });
        if let Err(e) = self.source.commit(&batch.offsets, CommitMode::Async) {
            // The next commit covers these offsets too; until then a restart re-delivers them.
            tracing::warn!(error = %e, "offset commit failed");
        }
        let progress = &mut self.progress;
        progress
            .committed
            .extend(batch.offsets.iter().map(|(p, o)| (p.clone(), *o)));
        progress.summary.events += batch.events as u64;
        progress.summary.skipped += batch.skipped as u64;
        progress.summary.dead_lettered += batch.dead_lettered as u64;
        progress.summary.batches += 1;
        progress.last_apply = Some(batch.applied_at.unwrap_or_else(Instant::now));
        tracing::debug!(
            events = batch.events,
            skipped = batch.skipped,
            "batch applied and committed"
        );
        Ok(())
    }
}

type BatchResult = Result<Batch, PipelineError>;

/// Tells the rebalance callbacks that a batch is being applied, and when it ended, even by being
/// aborted.
struct InFlight(Arc<Applied>);

impl InFlight {
    fn start(applied: Arc<Applied>) -> Self {
        applied.start();
        Self(applied)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.landed(None);
    }
}
