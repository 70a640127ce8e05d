//! The one Kafka range reader of `ripple replay`: every partition of a topic from a start (its
//! beginning, an offset, a time) to the end it had when reading began, in chunks, outside Ripple's
//! consumer group. No deadline: it gives up only when no record arrives for `stall`.

use super::ReplayError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where each partition starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    Beginning,
    Offset(i64),
    /// The first record at or after this time (ms since the epoch).
    Time(i64),
}

/// One partition's range: `from` (inclusive) to `end` (exclusive), and how far reading got.
struct Range {
    partition: i32,
    from: i64,
    end: i64,
    next: i64,
}

pub struct RangeReader {
    consumer: Arc<BaseConsumer>,
    topic: String,
    ranges: Vec<Range>,
    stall: Duration,
}

/// How long one poll waits before the reader looks again.
const POLL: Duration = Duration::from_millis(300);

impl RangeReader {
    /// Assigns every partition of `topic` with records past `start`.
    pub async fn open(
        kafka: &crate::config::KafkaConfig,
        topic: &str,
        start: Start,
        stall: Duration,
    ) -> Result<Self, ReplayError> {
        let consumer = Arc::new(consumer(kafka).map_err(|reason| read_error(topic, reason))?);
        let (c, name) = (consumer.clone(), topic.to_string());
        let ranges = tokio::task::spawn_blocking(move || assign(&c, &name, start))
            .await
            .expect("assign task")
            .map_err(|reason| read_error(topic, reason))?;
        Ok(Self {
            consumer,
            topic: topic.to_string(),
            ranges,
            stall,
        })
    }

    /// Records in the ranges, over every partition.
    pub fn total(&self) -> u64 {
        self.ranges.iter().map(|r| (r.end - r.from) as u64).sum()
    }

    fn done(&self) -> bool {
        self.ranges.iter().all(|r| r.next >= r.end)
    }

    /// Up to `max` records of the ranges, in each partition's order; `None` once every partition
    /// is read to its end. A record past a partition's end (written after reading began) is left.
    pub async fn next_chunk(
        &mut self,
        max: usize,
    ) -> Result<Option<Vec<OwnedMessage>>, ReplayError> {
        if self.done() {
            return Ok(None);
        }
        let consumer = self.consumer.clone();
        let mut ranges: Vec<(i32, i64, i64)> = self
            .ranges
            .iter()
            .map(|r| (r.partition, r.next, r.end))
            .collect();
        let stall = self.stall;
        let (chunk, ranges) = tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(max.min(10_000));
            let mut last = Instant::now();
            while out.len() < max && ranges.iter().any(|(_, next, end)| next < end) {
                match consumer.poll(POLL) {
                    Some(Ok(m)) => {
                        last = Instant::now();
                        let Some(r) = ranges.iter_mut().find(|(p, _, _)| *p == m.partition())
                        else {
                            continue;
                        };
                        if m.offset() >= r.2 {
                            r.1 = r.2;
                            continue;
                        }
                        r.1 = m.offset() + 1;
                        out.push(m.detach());
                    }
                    // Past the last record: transaction markers (and compacted records) take
                    // offsets no record is delivered at, so the end may never be seen itself.
                    Some(Err(KafkaError::PartitionEOF(p))) => {
                        if let Some(r) = ranges.iter_mut().find(|(q, _, _)| *q == p) {
                            r.1 = r.2;
                        }
                    }
                    Some(Err(e)) => return Err(e.to_string()),
                    // What there is goes now; the rest comes with the next chunk.
                    None if !out.is_empty() => break,
                    None if last.elapsed() >= stall => {
                        let behind: Vec<String> = ranges
                            .iter()
                            .filter(|(_, next, end)| next < end)
                            .map(|(p, next, end)| format!("partition {p} at {next} of {end}"))
                            .collect();
                        return Err(format!(
                            "no record arrived for {} s before the end ({}); raise --read-timeout-s if the brokers are slow",
                            stall.as_secs(),
                            behind.join(", ")
                        ));
                    }
                    None => {}
                }
            }
            Ok((out, ranges))
        })
        .await
        .expect("read task")
        .map_err(|reason| read_error(&self.topic, reason))?;
        for (r, (_, next, _)) in self.ranges.iter_mut().zip(ranges) {
            r.next = next;
        }
        Ok(Some(chunk))
    }
}

fn read_error(topic: &str, reason: String) -> ReplayError {
    ReplayError::Read {
        topic: topic.to_string(),
        reason,
    }
}

/// A consumer for reading topics by assignment, outside Ripple's consumer group.
fn consumer(kafka: &crate::config::KafkaConfig) -> Result<BaseConsumer, String> {
    use crate::source::client::{Role, client_config};
    let mut cc =
        client_config(kafka, "ripple-replay", Role::Consumer).map_err(|e| e.to_string())?;
    cc.set("group.id", format!("{}-replay", kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    cc.create().map_err(|e| e.to_string())
}

/// Assigns every partition of `topic` that has records past `start`.
fn assign(consumer: &BaseConsumer, topic: &str, start: Start) -> Result<Vec<Range>, String> {
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| e.to_string())?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err("no such topic".into());
    }
    let by_time = match start {
        Start::Time(ms) => {
            let mut query = TopicPartitionList::new();
            for &p in &partitions {
                query
                    .add_partition_offset(topic, p, Offset::Offset(ms))
                    .map_err(|e| e.to_string())?;
            }
            Some(
                consumer
                    .offsets_for_times(query, timeout)
                    .map_err(|e| e.to_string())?,
            )
        }
        _ => None,
    };
    let mut tpl = TopicPartitionList::new();
    let mut ranges = Vec::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| e.to_string())?;
        let from = match (&by_time, start) {
            (Some(found), _) => match found.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                // Nothing at or after that time.
                _ => high,
            },
            (None, Start::Offset(o)) => o,
            (None, _) => low,
        }
        .clamp(low, high);
        if from < high {
            tpl.add_partition_offset(topic, p, Offset::Offset(from))
                .map_err(|e| e.to_string())?;
            ranges.push(Range {
                partition: p,
                from,
                end: high,
                next: from,
            });
        }
    }
    if !ranges.is_empty() {
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
    }
    Ok(ranges)
}
