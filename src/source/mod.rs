//! The Kafka side: a consumer with manual commits, a reachability check at start-up that names the
//! broker address, offset commits of what the sinks applied, the rebalance callbacks that commit
//! before partitions move, and the caught-up check.
//!
//! The consumer is polled on a thread of its own, which hands records to the run loop through a
//! bounded channel. librdkafka runs the rebalance callbacks inside that poll, so they may wait (for
//! the batch being applied, for the offsets a store keeps) without holding up a runtime worker.

pub mod client;
mod handover;
mod rebalance;

pub use handover::{Consumed, Fetched, Polled, Records};
use handover::{HANDOVER, poll_loop};
use rebalance::FetchProblem;
pub use rebalance::{Applied, REVOKE_GRACE, RebalanceContext, StartPositions};

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

/// How long start-up waits for the brokers to answer before it gives up, naming the cause.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

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
