//! The Kafka side: a consumer with manual commits, a reachability check at start-up that names the
//! broker address, offset commits of what the sinks applied, the rebalance callbacks that commit
//! before partitions move, and the caught-up check.
//!
//! The consumer is polled on a thread of its own, which hands records to the run loop through a
//! bounded channel. librdkafka runs the rebalance callbacks inside that poll, so they may wait (for
//! the batch being applied, for the offsets a store keeps) without holding up a runtime worker.

pub mod client;

use crate::config::KafkaConfig;
use crate::telemetry::{Event, Telemetry};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A topic partition, as the pipeline tracks it.
pub type Partition = (Arc<str>, i32);

/// The consumer Ripple runs, with Ripple's rebalance callbacks; polled by the poll thread only.
pub type RippleConsumer = BaseConsumer<RebalanceContext>;

/// A record as the poll thread hands it over, with the assignment generation it was polled in:
/// one polled before its partition was revoked is stale, even if the partition came back since.
pub struct Fetched<M = Polled> {
    pub message: KafkaResult<M>,
    pub generation: u64,
}

/// What the run loop reads of a consumed record: a Kafka message as polled, or, in unit tests,
/// one built by hand (`rdkafka::message::OwnedMessage`).
pub trait Consumed: Send + 'static {
    fn topic(&self) -> &str;
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
    fn key(&self) -> Option<&[u8]>;
    fn payload(&self) -> Option<&[u8]>;
}

impl Consumed for Polled {
    fn topic(&self) -> &str {
        self.message.topic()
    }
    fn partition(&self) -> i32 {
        self.message.partition()
    }
    fn offset(&self) -> i64 {
        self.message.offset()
    }
    fn key(&self) -> Option<&[u8]> {
        self.message.key()
    }
    fn payload(&self) -> Option<&[u8]> {
        self.message.payload()
    }
}

impl Consumed for rdkafka::message::OwnedMessage {
    fn topic(&self) -> &str {
        Message::topic(self)
    }
    fn partition(&self) -> i32 {
        Message::partition(self)
    }
    fn offset(&self) -> i64 {
        Message::offset(self)
    }
    fn key(&self) -> Option<&[u8]> {
        Message::key(self)
    }
    fn payload(&self) -> Option<&[u8]> {
        Message::payload(self)
    }
}

/// A record as librdkafka holds it (no copy), with the consumer it came from: the message is
/// declared first, so it is dropped before the consumer can be.
pub struct Polled {
    message: BorrowedMessage<'static>,
    _consumer: Arc<RippleConsumer>,
}

impl Polled {
    fn new(message: BorrowedMessage<'_>, consumer: &Arc<RippleConsumer>) -> Self {
        // SAFETY: the lifetime only says the message must not outlive its consumer; it holds its
        // own reference to librdkafka's event (the record's memory), and the `Arc` kept beside it
        // keeps the consumer alive until after the message is dropped.
        let message = unsafe {
            std::mem::transmute::<BorrowedMessage<'_>, BorrowedMessage<'static>>(message)
        };
        Self {
            message,
            _consumer: consumer.clone(),
        }
    }
}

/// Records go to the run loop in chunks of up to this many (what one poll round had ready), so a
/// handover between threads costs little per record.
const CHUNK: usize = 64;

/// Chunks in flight between the poll thread and the run loop. Small: the loop pauses the
/// partitions for backpressure, and librdkafka's own queue holds the rest.
const HANDOVER: usize = 4;

/// The run loop's end of the handover: one record at a time, in the order polled.
pub struct Records<M = Polled> {
    rx: tokio::sync::mpsc::Receiver<Vec<Fetched<M>>>,
    ready: std::collections::VecDeque<Fetched<M>>,
}

impl<M> Records<M> {
    /// The receiving end of chunks sent on `rx`'s channel (by the poll thread, or a test).
    pub fn new(rx: tokio::sync::mpsc::Receiver<Vec<Fetched<M>>>) -> Self {
        Self {
            rx,
            ready: Default::default(),
        }
    }

    /// The next record; `None` once the poll thread has stopped. Cancel-safe: a chunk received is
    /// kept before anything else can be awaited.
    pub async fn recv(&mut self) -> Option<Fetched<M>> {
        if let Some(f) = self.ready.pop_front() {
            return Some(f);
        }
        let chunk = self.rx.recv().await?;
        self.ready.extend(chunk);
        self.ready.pop_front()
    }
}

/// How long one poll waits for a record before the thread looks whether it should stop.
const POLL_TICK: Duration = Duration::from_millis(100);

/// How long a revocation waits for the batch being applied before it gives the partitions up with
/// that batch uncommitted (its events then reach the new owner again, and change nothing).
pub const REVOKE_GRACE: Duration = Duration::from_secs(10);

/// How long start-up waits for the brokers to answer before it gives up, naming the cause.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the run loop shares with the rebalance callbacks: whether a batch is being applied, the
/// offsets applied so far, and the partitions revoked since the loop last looked.
#[derive(Default)]
pub struct Applied {
    state: Mutex<AppliedState>,
    landed: Condvar,
    /// Set with `revoked`, so the loop's per-record check costs no lock.
    any_revoked: AtomicBool,
    /// Incremented by each revocation; see [`Fetched`].
    generation: AtomicU64,
}

#[derive(Default)]
struct AppliedState {
    in_flight: bool,
    offsets: BTreeMap<Partition, i64>,
    /// Revoked partitions, each with the generation that began after: records of it polled in
    /// an earlier generation are stale.
    revoked: Vec<((String, i32), u64)>,
    /// Where assigned partitions were told to start (exactly-once), until a record is consumed.
    starts: BTreeMap<(String, i32), i64>,
    /// Whether consumption is paused (backpressure): partitions assigned meanwhile start paused.
    paused: bool,
}

impl Applied {
    fn state(&self) -> std::sync::MutexGuard<'_, AppliedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A batch starts being applied; `landed` ends it.
    pub fn start(&self) {
        self.state().in_flight = true;
    }

    /// The batch in flight ended: applied (its offsets given) or abandoned (`None`).
    pub fn landed(&self, offsets: Option<&BTreeMap<Partition, i64>>) {
        let mut state = self.state();
        state.in_flight = false;
        if let Some(offsets) = offsets {
            state
                .offsets
                .extend(offsets.iter().map(|(p, o)| (p.clone(), *o)));
        }
        self.landed.notify_all();
    }

    fn started_at(&self, topic: &str, partition: i32) -> Option<i64> {
        self.state()
            .starts
            .get(&(topic.to_string(), partition))
            .copied()
    }

    /// Partitions revoked since the last call, each with the generation that began after it:
    /// what the loop holds of them, and records of them polled before that generation, must go.
    pub fn take_revoked(&self) -> Vec<((String, i32), u64)> {
        if !self.any_revoked.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut self.state().revoked)
    }

    /// Waits up to `grace` for the batch in flight, then returns the applied offsets of `revoked`
    /// and notes them as revoked. Runs on the poll thread (inside the poll), which may wait.
    pub(crate) fn revoke(
        &self,
        revoked: &TopicPartitionList,
        grace: Duration,
    ) -> TopicPartitionList {
        let deadline = Instant::now() + grace;
        let mut state = self.state();
        while state.in_flight {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    "partitions revoked while a batch is still being applied: it is given up uncommitted"
                );
                break;
            }
            state = self
                .landed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let mut commit = TopicPartitionList::new();
        for ((topic, partition), offset) in &state.offsets {
            if revoked.find_partition(topic, *partition).is_some() {
                let _ = commit.add_partition_offset(topic, *partition, Offset::Offset(offset + 1));
            }
        }
        let gone: HashSet<(String, i32)> = revoked
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        state
            .offsets
            .retain(|(t, p), _| !gone.contains(&(t.to_string(), *p)));
        state.starts.retain(|k, _| !gone.contains(k));
        let next = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        state.revoked.extend(gone.into_iter().map(|p| (p, next)));
        self.any_revoked.store(true, Ordering::Release);
        commit
    }
}

/// What the run loop asks of the consumer besides its records: [`KafkaSource`], or a unit test's
/// stand-in.
#[async_trait::async_trait]
pub trait Consumption: Send + Sync {
    /// What the run loop tells the rebalance callbacks.
    fn applied(&self) -> &Arc<Applied>;
    /// Commits the offset after each applied one, for the partitions still assigned.
    fn commit(
        &self,
        applied: &BTreeMap<Partition, i64>,
        mode: CommitMode,
    ) -> Result<(), SourceError>;
    /// Stops fetching (backpressure); the consumer is still polled.
    fn pause_all(&self) -> Result<(), SourceError>;
    fn resume_all(&self) -> Result<(), SourceError>;
    /// Whether every assigned partition is consumed to its end (only while nothing is in flight).
    async fn caught_up(&self) -> Result<bool, SourceError>;
}

#[async_trait::async_trait]
impl Consumption for KafkaSource {
    fn applied(&self) -> &Arc<Applied> {
        KafkaSource::applied(self)
    }
    fn commit(
        &self,
        applied: &BTreeMap<Partition, i64>,
        mode: CommitMode,
    ) -> Result<(), SourceError> {
        KafkaSource::commit(self, applied, mode)
    }
    fn pause_all(&self) -> Result<(), SourceError> {
        KafkaSource::pause_all(self)
    }
    fn resume_all(&self) -> Result<(), SourceError> {
        KafkaSource::resume_all(self)
    }
    async fn caught_up(&self) -> Result<bool, SourceError> {
        KafkaSource::caught_up(self).await
    }
}

/// Where assigned partitions start when not at Kafka's committed offsets: offsets a store keeps
/// with its data (exactly-once). Called inside the rebalance, on the poll thread, which may wait.
pub trait StartPositions: Send + Sync {
    /// The next offset to read for those of `partitions` it knows better than Kafka does.
    fn positions(&self, partitions: &[(String, i32)]) -> Vec<((String, i32), i64)>;
}

/// The consumer's callbacks. Before partitions are taken away, the batch being applied may finish
/// and what was applied is committed, so the next owner starts where this instance stopped. When
/// partitions arrive, stores that keep their own offsets say where they start.
pub struct RebalanceContext {
    applied: Arc<Applied>,
    start: Option<Arc<dyn StartPositions>>,
    fetch_problem: FetchProblem,
}

impl ClientContext for RebalanceContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if reason.contains("Decompression") {
            self.fetch_problem.report(reason);
        } else {
            tracing::error!(target: "rdkafka::client", "librdkafka: {error}: {reason}");
        }
    }
}

/// How long /readyz keeps failing after the last report of data that cannot be read: librdkafka
/// retries the same fetch about twice a second for as long as the partition is stuck.
const FETCH_PROBLEM_SHOWN: Duration = Duration::from_secs(30);

/// A record batch librdkafka cannot decompress (corrupt, or a codec it lacks). Nothing past it
/// on its partition can be read, so no later offset is committed and nothing is lost; but the
/// partition is stuck until someone acts, so it is logged once (not at every retry), counted in
/// `ripple_fetch_errors_total{kind="decompression"}`, and `/readyz` fails while it lasts.
struct FetchProblem {
    telemetry: Telemetry,
    state: Mutex<FetchProblemState>,
}

#[derive(Default)]
struct FetchProblemState {
    logged: HashSet<String>,
    last: Option<(String, Instant)>,
}

impl FetchProblem {
    fn report(&self, reason: &str) {
        self.telemetry.emit(Event::FetchError {
            kind: "decompression",
        });
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // One entry per damaged batch seen; a run that meets thousands forgets the old ones.
        if state.logged.len() >= 1024 {
            state.logged.clear();
        }
        if state.logged.insert(reason.to_string()) {
            tracing::error!(
                "a fetched record batch cannot be decompressed: {reason}. Ripple cannot read past it: nothing after it on its partition is applied or committed until the batch is readable (a consumer built with the producer's codec, or the topic repaired); /readyz fails meanwhile"
            );
        } else {
            tracing::debug!("still cannot decompress: {reason}");
        }
        state.last = Some((reason.to_string(), Instant::now()));
    }

    fn current(&self) -> Option<String> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &state.last {
            Some((reason, at)) if at.elapsed() < FETCH_PROBLEM_SHOWN => Some(format!(
                "a fetched record batch cannot be decompressed: {reason}"
            )),
            _ => None,
        }
    }
}

impl ConsumerContext for RebalanceContext {
    /// librdkafka's default handling, except that an assignment may carry start offsets.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Some(start) = &self.start {
                    let partitions: Vec<(String, i32)> = tpl
                        .elements()
                        .iter()
                        .map(|e| (e.topic().to_string(), e.partition()))
                        .collect();
                    for ((topic, partition), next) in start.positions(&partitions) {
                        tracing::info!(
                            topic,
                            partition,
                            next,
                            "partition starts at the offset its store keeps"
                        );
                        let _ = tpl.set_partition_offset(&topic, partition, Offset::Offset(next));
                        self.applied.state().starts.insert((topic, partition), next);
                    }
                }
                let rebalance = Rebalance::Assign(tpl);
                self.pre_rebalance(consumer, &rebalance);
                let mut result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                // librdkafka keeps a partition's pause across an unassign and a new assign: a
                // partition paused for backpressure, revoked and assigned again would stay paused
                // after the loop resumed (the resume found nothing assigned). The loop's current
                // state decides instead.
                if result.is_ok() {
                    result = if self.applied.state().paused {
                        consumer.pause(tpl)
                    } else {
                        consumer.resume(tpl)
                    };
                }
                self.post_rebalance(consumer, &rebalance);
                result
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.pre_rebalance(consumer, &Rebalance::Revoke(tpl));
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed; giving up the assignment");
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "applying the rebalance failed");
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let commit = self.applied.revoke(revoked, REVOKE_GRACE);
        tracing::info!(
            partitions = revoked.count(),
            committed = commit.count(),
            "partitions revoked: applied offsets committed"
        );
        if commit.count() > 0
            && let Err(e) = consumer.commit(&commit, CommitMode::Sync)
        {
            tracing::warn!(error = %e, "commit on revocation failed; the next owner re-applies those events (and they change nothing)");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            tracing::info!(partitions = assigned.count(), "partitions assigned");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot reach Kafka at kafka.brokers = {brokers:?}: {reason}")]
    Unreachable { brokers: String, reason: String },
    #[error("invalid Kafka setting (kafka.options or kafka.*): {0}")]
    Config(String),
    #[error("{0}")]
    Settings(#[from] ripple_sink::ConfigError),
    #[error("cannot subscribe to kafka.topics {topics:?}: {reason}")]
    Subscribe { topics: Vec<String>, reason: String },
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the Kafka consumer's poll thread stopped")]
    Stopped,
}

pub struct KafkaSource {
    consumer: Arc<RippleConsumer>,
    applied: Arc<Applied>,
    /// What the poll thread hands over, until the run loop takes it.
    records: Mutex<Option<Records>>,
    /// Tells the poll thread to end.
    stop: Arc<AtomicBool>,
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Polls the consumer until told to stop or the receiving side is gone. librdkafka runs the
/// rebalance callbacks in here.
fn poll_loop(
    consumer: Arc<RippleConsumer>,
    tx: tokio::sync::mpsc::Sender<Vec<Fetched>>,
    stop: Arc<AtomicBool>,
) {
    let mut chunk = Vec::with_capacity(CHUNK);
    while !stop.load(Ordering::Acquire) && !tx.is_closed() {
        // Wait for the first record of a chunk; take the rest only as far as they are ready.
        let wait = if chunk.is_empty() {
            POLL_TICK
        } else {
            Duration::ZERO
        };
        if let Some(polled) = consumer.poll(wait) {
            // Read after the poll: a revocation served inside it has already moved the generation.
            let generation = consumer
                .context()
                .applied
                .generation
                .load(Ordering::Acquire);
            let message = polled.map(|m| Polled::new(m, &consumer));
            chunk.push(Fetched {
                message,
                generation,
            });
            if chunk.len() < CHUNK {
                continue;
            }
        }
        if !chunk.is_empty()
            && tx
                .blocking_send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
                .is_err()
        {
            break;
        }
    }
}

impl KafkaSource {
    /// Creates the consumer, checks the brokers answer, and subscribes. `start`, when given, says
    /// where assigned partitions begin instead of the committed offsets.
    pub async fn connect(
        config: &KafkaConfig,
        start: Option<Arc<dyn StartPositions>>,
        telemetry: Telemetry,
    ) -> Result<Self, SourceError> {
        let mut cc = client::client_config(config, "ripple", client::Role::Consumer)?;
        cc.set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &config.auto_offset_reset)
            // Pattern subscriptions pick up new tables' topics within seconds rather than minutes.
            .set("topic.metadata.refresh.interval.ms", "5000")
            // Bounds what librdkafka buffers ahead of the sinks (its default is 64 MB per consumer).
            // Decompressed record sets stay allocated while any of their records is queued, so
            // the memory held is several times this: at 16 MB they were 41 MB of a search-sink
            // run's 75 MB heap; 8 MB still keeps the Postgres sink's batches full.
            .set("queued.max.messages.kbytes", "8192")
            // librdkafka waits this long before refilling a full prefetch queue (default 1 s), which
            // left the pipeline idle most of the time; refill as soon as the sinks drain it.
            .set("fetch.queue.backoff.ms", "10")
            // A crashed instance's partitions move to a live one after this long (librdkafka's
            // default is 45 s); heartbeats go every 3 s, so 10 s tolerates a couple of lost ones.
            .set("session.timeout.ms", "10000");
        // Set again: kafka.options win over the typed keys, and over Ripple's defaults above.
        for (k, v) in &config.options {
            cc.set(k, v);
        }
        let applied = Arc::new(Applied::default());
        let context = RebalanceContext {
            applied: applied.clone(),
            start,
            fetch_problem: FetchProblem {
                telemetry,
                state: Mutex::default(),
            },
        };
        let consumer: RippleConsumer = cc
            .create_with_context(context)
            .map_err(|e| SourceError::Config(e.to_string()))?;
        let consumer = Arc::new(consumer);

        let probe_config = config.clone();
        tokio::task::spawn_blocking(move || client::probe(&probe_config, PROBE_TIMEOUT))
            .await
            .expect("broker probe task")
            .map_err(|reason| SourceError::Unreachable {
                brokers: config.brokers.clone(),
                reason,
            })?;

        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| SourceError::Subscribe {
                topics: config.topics.clone(),
                reason: e.to_string(),
            })?;
        let (tx, rx) = tokio::sync::mpsc::channel(HANDOVER);
        let stop = Arc::new(AtomicBool::new(false));
        let (c, halt) = (consumer.clone(), stop.clone());
        std::thread::Builder::new()
            .name("ripple-poll".into())
            .spawn(move || poll_loop(c, tx, halt))
            .map_err(|e| SourceError::Config(format!("cannot start the poll thread: {e}")))?;
        Ok(Self {
            consumer,
            applied,
            records: Mutex::new(Some(Records::new(rx))),
            stop,
        })
    }

    /// The records the poll thread hands over, in the order polled; for the one run loop.
    pub fn take_records(&self) -> Option<Records> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// What the run loop tells the rebalance callbacks.
    pub fn applied(&self) -> &Arc<Applied> {
        &self.applied
    }

    /// Commits, for each partition still assigned, the offset after the last applied record. A
    /// partition revoked meanwhile was committed by the revocation, and belongs to another
    /// consumer now.
    pub fn commit(
        &self,
        applied: &BTreeMap<Partition, i64>,
        mode: CommitMode,
    ) -> Result<(), SourceError> {
        if applied.is_empty() {
            return Ok(());
        }
        let assignment = self.consumer.assignment()?;
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in applied {
            if assignment.find_partition(topic, *partition).is_some() {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(offset + 1))?;
            }
        }
        if tpl.count() > 0 {
            self.consumer.commit(&tpl, mode)?;
        }
        Ok(())
    }

    /// Stops fetching from every assigned partition (backpressure); polling goes on.
    pub fn pause_all(&self) -> Result<(), SourceError> {
        self.applied.state().paused = true;
        let assignment = self.consumer.assignment()?;
        if assignment.count() > 0 {
            self.consumer.pause(&assignment)?;
        }
        Ok(())
    }

    pub fn resume_all(&self) -> Result<(), SourceError> {
        self.applied.state().paused = false;
        let assignment = self.consumer.assignment()?;
        if assignment.count() > 0 {
            self.consumer.resume(&assignment)?;
        }
        Ok(())
    }

    /// A check that the brokers answer (a metadata request), for readiness probes. Blocking.
    pub fn reachability(&self) -> Arc<dyn Fn() -> Result<(), String> + Send + Sync> {
        let consumer = self.consumer.clone();
        Arc::new(move || {
            consumer
                .fetch_metadata(None, Duration::from_secs(3))
                .map_err(|e| e.to_string())?;
            match consumer.context().fetch_problem.current() {
                Some(problem) => Err(problem),
                None => Ok(()),
            }
        })
    }

    /// Reports each assigned partition's lag (records not yet applied) every 5 s, until dropped.
    pub fn report_lag(
        &self,
        telemetry: Telemetry,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let consumer = self.consumer.clone();
        let applied = self.applied.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let c = consumer.clone();
                let a = applied.clone();
                let lags = tokio::task::spawn_blocking(move || partition_lags(&c, &a)).await;
                let Ok(Ok(lags)) = lags else {
                    continue;
                };
                telemetry.emit(Event::Lag { lags: &lags });
            }
        }
    }

    /// True when every assigned partition has been consumed up to its high watermark. Only
    /// meaningful while no batch is in flight.
    pub async fn caught_up(&self) -> Result<bool, SourceError> {
        let consumer = self.consumer.clone();
        let applied = self.applied.clone();
        tokio::task::spawn_blocking(move || {
            let assignment = consumer.assignment()?;
            if assignment.count() == 0 {
                return Ok(false);
            }
            let positions = consumer.position()?;
            let committed = consumer.committed(Duration::from_secs(5))?;
            for elem in assignment.elements() {
                let (low, high) = consumer.fetch_watermarks(
                    elem.topic(),
                    elem.partition(),
                    Duration::from_secs(5),
                )?;
                let pos = |list: &TopicPartitionList| match list
                    .find_partition(elem.topic(), elem.partition())
                    .map(|p| p.offset())
                {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                };
                // Nothing consumed yet: the partition is where it was told to start.
                let at = pos(&positions)
                    .or_else(|| applied.started_at(elem.topic(), elem.partition()))
                    .or_else(|| pos(&committed))
                    .unwrap_or(low);
                if at < high {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await
        .expect("caught-up task")
    }
}

/// Per assigned partition (topic, partition), how many records it is behind.
type Lags = Vec<((String, i32), i64)>;

/// Each assigned partition's lag: its high watermark minus the next offset to apply. Not the
/// consumer's position: librdkafka fetches ahead and the loop decodes ahead of the sinks, so
/// the position says what was read, not what the stores hold. Before this run applied anything
/// of a partition, its committed offset stands in (with none, the position, then the low
/// watermark).
fn partition_lags(consumer: &RippleConsumer, applied: &Applied) -> Result<Lags, SourceError> {
    let assignment = consumer.assignment()?;
    let done = applied.state().offsets.clone();
    // Read from the broker and librdkafka only when some partition has nothing applied yet.
    let mut fallbacks: Option<[Option<TopicPartitionList>; 2]> = None;
    let mut out = Vec::new();
    for elem in assignment.elements() {
        let (topic, partition) = (elem.topic(), elem.partition());
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(3))?;
        let next = done
            .iter()
            .find(|((t, p), _)| &**t == topic && *p == partition)
            .map(|(_, o)| o + 1);
        let at = match next {
            Some(o) => o,
            None => {
                let lists = match &mut fallbacks {
                    Some(lists) => lists,
                    None => fallbacks.insert([
                        Some(consumer.committed(Duration::from_secs(3))?),
                        consumer.position().ok(),
                    ]),
                };
                lists
                    .iter()
                    .flatten()
                    .find_map(|l| match l.find_partition(topic, partition)?.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .unwrap_or(low)
            }
        };
        out.push(((topic.to_string(), partition), (high - at).max(0)));
    }
    Ok(out)
}
