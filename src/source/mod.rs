//! The Kafka side: a consumer with manual commits, a reachability check at start-up that names the
//! broker address, offset commits of what the sinks applied, and the caught-up check.

use crate::config::KafkaConfig;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A topic partition, as the pipeline tracks it.
pub type Partition = (Arc<str>, i32);

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot reach Kafka at kafka.brokers = {brokers:?}: {reason}")]
    Unreachable { brokers: String, reason: String },
    #[error("invalid Kafka setting (kafka.options or kafka.*): {0}")]
    Config(String),
    #[error("cannot subscribe to kafka.topics {topics:?}: {reason}")]
    Subscribe { topics: Vec<String>, reason: String },
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

pub struct KafkaSource {
    consumer: Arc<StreamConsumer>,
}

impl KafkaSource {
    /// Creates the consumer, checks the brokers answer, and subscribes.
    pub async fn connect(config: &KafkaConfig) -> Result<Self, SourceError> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &config.auto_offset_reset)
            // Pattern subscriptions pick up new tables' topics within seconds rather than minutes.
            .set("topic.metadata.refresh.interval.ms", "5000")
            // Bounds what librdkafka buffers ahead of the sinks (its default is 64 MB per consumer).
            .set("queued.max.messages.kbytes", "16384")
            // librdkafka waits this long before refilling a full prefetch queue (default 1 s), which
            // left the pipeline idle most of the time; refill as soon as the sinks drain it.
            .set("fetch.queue.backoff.ms", "10")
            // A crashed instance's partitions move to a live one after this long (librdkafka's
            // default is 45 s); heartbeats go every 3 s, so 10 s tolerates a couple of lost ones.
            .set("session.timeout.ms", "10000")
            .set("client.id", "ripple");
        for (k, v) in &config.options {
            cc.set(k, v);
        }
        let consumer: StreamConsumer = cc
            .create()
            .map_err(|e| SourceError::Config(e.to_string()))?;
        let consumer = Arc::new(consumer);

        let probe = consumer.clone();
        let brokers = config.brokers.clone();
        tokio::task::spawn_blocking(move || probe.fetch_metadata(None, Duration::from_secs(10)))
            .await
            .expect("metadata probe task")
            .map_err(|e| SourceError::Unreachable {
                brokers,
                reason: e.to_string(),
            })?;

        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| SourceError::Subscribe {
                topics: config.topics.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self { consumer })
    }

    pub fn consumer(&self) -> &StreamConsumer {
        &self.consumer
    }

    /// Commits, for each partition, the offset after the last applied record.
    pub fn commit(
        &self,
        applied: &BTreeMap<Partition, i64>,
        mode: CommitMode,
    ) -> Result<(), SourceError> {
        if applied.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in applied {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(offset + 1))?;
        }
        self.consumer.commit(&tpl, mode)?;
        Ok(())
    }

    /// Stops fetching from every assigned partition (backpressure); polling goes on.
    pub fn pause_all(&self) -> Result<(), SourceError> {
        let assignment = self.consumer.assignment()?;
        if assignment.count() > 0 {
            self.consumer.pause(&assignment)?;
        }
        Ok(())
    }

    pub fn resume_all(&self) -> Result<(), SourceError> {
        let assignment = self.consumer.assignment()?;
        if assignment.count() > 0 {
            self.consumer.resume(&assignment)?;
        }
        Ok(())
    }

    /// True when every assigned partition has been consumed up to its high watermark. Only
    /// meaningful while no batch is in flight.
    pub async fn caught_up(&self) -> Result<bool, SourceError> {
        let consumer = self.consumer.clone();
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
                let at = pos(&positions).or_else(|| pos(&committed)).unwrap_or(low);
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
