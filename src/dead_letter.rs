//! The dead-letter topic: records Ripple cannot decode, and events a sink permanently rejects, are
//! written there byte for byte with headers saying why, so the pipeline can go on and nothing is
//! lost. A record is dead-lettered (and the write acknowledged) before its offset can be committed.

use crate::config::{DeadLetterConfig, KafkaConfig};
use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use ripple_sink::Origin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Header names, all under `ripple.`: what failed, where, and where the record came from.
pub mod header {
    pub const REASON: &str = "ripple.error.reason";
    /// `decode` or `apply`.
    pub const STAGE: &str = "ripple.error.stage";
    /// The sink that rejected the event (stage `apply` only).
    pub const SINK: &str = "ripple.error.sink";
    pub const TOPIC: &str = "ripple.original.topic";
    pub const PARTITION: &str = "ripple.original.partition";
    pub const OFFSET: &str = "ripple.original.offset";
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("cannot set up the dead-letter producer (dead_letter / kafka.options): {0}")]
    Config(String),
    #[error(transparent)]
    Settings(#[from] ripple_sink::ConfigError),
    #[error("cannot write to dead-letter topic {topic:?}: {reason}")]
    Write { topic: String, reason: String },
    #[error(
        "cannot read back record {topic}[{partition}]@{offset} to dead-letter it (it may have left the topic's retention): {reason}"
    )]
    Fetch {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
}

/// One record to dead-letter.
pub struct DeadLetter<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// `decode` or `apply`.
    pub stage: &'a str,
    pub sink: Option<&'a str>,
    pub reason: &'a str,
}

/// One event a sink refused, to dead-letter.
pub struct Rejected<'a> {
    pub origin: &'a Origin,
    pub reason: &'a str,
}

/// Where the run loop puts records it cannot decode and the pipeline puts events a sink rejected
/// for good: the dead-letter topic ([`DeadLetters`]), or, in unit tests, anything that records
/// them. Each call returns once what it was given is durable.
#[async_trait]
pub trait DeadLetterQueue: Send + Sync {
    /// Writes one record as it was consumed, with why it failed.
    async fn send_record(&self, letter: DeadLetter<'_>) -> Result<(), DeadLetterError>;

    /// Writes every record in `rejected` as refused by `sink`.
    async fn send_rejected(
        &self,
        sink: &str,
        rejected: &[Rejected<'_>],
    ) -> Result<(), DeadLetterError>;
}

/// Records read back and written per round: bounds the memory a storm of rejections takes.
const CHUNK: usize = 1_000;

#[async_trait]
impl DeadLetterQueue for DeadLetters {
    async fn send_record(&self, letter: DeadLetter<'_>) -> Result<(), DeadLetterError> {
        self.send(letter).await
    }

    async fn send_rejected(
        &self,
        sink: &str,
        rejected: &[Rejected<'_>],
    ) -> Result<(), DeadLetterError> {
        for chunk in rejected.chunks(CHUNK) {
            let origins: Vec<Origin> = chunk.iter().map(|r| r.origin.clone()).collect();
            let started = std::time::Instant::now();
            let records = self.fetch(origins).await?;
            let fetched = started.elapsed();
            let letters: Vec<DeadLetter<'_>> = chunk
                .iter()
                .zip(&records)
                .map(|(r, (key, value))| DeadLetter {
                    topic: &r.origin.topic,
                    partition: r.origin.partition,
                    offset: r.origin.offset,
                    key: key.as_deref(),
                    value: value.as_deref(),
                    stage: "apply",
                    sink: Some(sink),
                    reason: r.reason,
                })
                .collect();
            self.send_all(&letters).await?;
            tracing::debug!(records = chunk.len(), ?fetched, sent = ?(started.elapsed() - fetched), "dead-letter chunk");
        }
        Ok(())
    }
}

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    /// Reads rejected records back by offset.
    fetcher: Arc<Mutex<Reader>>,
    /// What has been logged lately, so a stream of bad records is a line a minute, not a line each.
    lines: Mutex<LogSummary>,
}

impl DeadLetters {
    pub fn new(kafka: &KafkaConfig, config: &DeadLetterConfig) -> Result<Self, DeadLetterError> {
        use crate::source::client::{Role, client_config};
        let mut pc = client_config(kafka, "ripple-dead-letter", Role::Producer)?;
        // A dead letter may be as large as the biggest record consumed.
        pc.set("message.max.bytes", "10485760")
            .set("enable.idempotence", "true")
            .set("linger.ms", "0");
        let mut cc = client_config(kafka, "ripple-dead-letter-reader", Role::Consumer)?;
        // It reads back what the batch just held: a small read-ahead is enough.
        cc.set("group.id", format!("{}-dead-letter-reader", kafka.group_id))
            .set("enable.auto.commit", "false")
            .set("queued.max.messages.kbytes", "8192")
            .set("fetch.max.bytes", "4194304")
            .set("fetch.wait.max.ms", "20")
            // With its small queue full the reader would otherwise wait a second before fetching on.
            .set("fetch.queue.backoff.ms", "5");
        let producer: FutureProducer = pc
            .create()
            .map_err(|e| DeadLetterError::Config(e.to_string()))?;
        let fetcher: BaseConsumer = cc
            .create()
            .map_err(|e| DeadLetterError::Config(e.to_string()))?;
        Ok(Self {
            producer,
            topic: config.topic.clone(),
            fetcher: Arc::new(Mutex::new(Reader {
                consumer: fetcher,
                next: Default::default(),
            })),
            lines: Mutex::new(LogSummary::new(Duration::from_secs(60))),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes one dead letter and waits until Kafka has it.
    pub async fn send(&self, letter: DeadLetter<'_>) -> Result<(), DeadLetterError> {
        self.send_all(std::slice::from_ref(&letter)).await
    }

    /// Writes `letters` and waits until Kafka has every one. They are all handed to the producer
    /// before the first acknowledgement is awaited, so a storm of rejections costs a few produce
    /// requests, not one round trip per record.
    pub async fn send_all(&self, letters: &[DeadLetter<'_>]) -> Result<(), DeadLetterError> {
        let failed = |e: rdkafka::error::KafkaError| DeadLetterError::Write {
            topic: self.topic.clone(),
            reason: e.to_string(),
        };
        let mut pending = std::collections::VecDeque::new();
        for letter in letters {
            let mut record = self.record(letter);
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push_back(delivery);
                        break;
                    }
                    // The producer's queue is full: wait for the oldest to be acknowledged.
                    Err((e, back)) => {
                        record = back;
                        let Some(oldest) = pending.pop_front() else {
                            return Err(failed(e));
                        };
                        Self::delivered(oldest).await.map_err(failed)?;
                    }
                }
            }
        }
        for delivery in pending {
            Self::delivered(delivery).await.map_err(failed)?;
        }
        for letter in letters {
            tracing::debug!(
                topic = letter.topic,
                partition = letter.partition,
                offset = letter.offset,
                stage = letter.stage,
                sink = letter.sink,
                reason = letter.reason,
                "dead-lettered a record"
            );
        }
        // At most a line a minute per topic, stage and sink, with the count since the last one: a
        // storm of bad records must not become a storm of log lines (the metric counts each).
        if let (Some(first), Some(last)) = (letters.first(), letters.last()) {
            let key = format!(
                "{}/{}/{}",
                first.topic,
                first.stage,
                first.sink.unwrap_or("")
            );
            let due = self.lines.lock().unwrap_or_else(|e| e.into_inner()).admit(
                &key,
                letters.len() as u64,
                std::time::Instant::now(),
            );
            if let Some(records) = due {
                tracing::warn!(
                    records,
                    topic = first.topic,
                    last_offset = last.offset,
                    stage = first.stage,
                    sink = first.sink,
                    reason = last.reason,
                    dead_letter_topic = %self.topic,
                    "dead-lettered {records} record(s) since the last such line (at most one a minute); the latest reason is given"
                );
            }
        }
        Ok(())
    }

    async fn delivered(
        delivery: rdkafka::producer::DeliveryFuture,
    ) -> Result<(), rdkafka::error::KafkaError> {
        match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(e),
            Err(_) => Err(rdkafka::error::KafkaError::Canceled),
        }
    }

    fn record<'a>(&'a self, letter: &'a DeadLetter<'a>) -> FutureRecord<'a, [u8], [u8]> {
        let partition = letter.partition.to_string();
        let offset = letter.offset.to_string();
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: header::REASON,
                value: Some(letter.reason),
            })
            .insert(Header {
                key: header::STAGE,
                value: Some(letter.stage),
            })
            .insert(Header {
                key: header::TOPIC,
                value: Some(letter.topic),
            })
            .insert(Header {
                key: header::PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: header::OFFSET,
                value: Some(&offset),
            });
        if let Some(sink) = letter.sink {
            headers = headers.insert(Header {
                key: header::SINK,
                value: Some(sink),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(k) = letter.key {
            record = record.key(k);
        }
        if let Some(v) = letter.value {
            record = record.payload(v);
        }
        record
    }

    /// Reads the records at `origins` back, in one pass per partition: events keep no bytes (a
    /// batch holding every record's bytes as well would take several times the memory), and
    /// reading a range again is one fetch, not one per record. Returns (key, value) per origin.
    async fn fetch(&self, origins: Vec<Origin>) -> Result<Vec<Record>, DeadLetterError> {
        let fetcher = self.fetcher.clone();
        tokio::task::spawn_blocking(move || {
            let mut reader = fetcher.lock().unwrap_or_else(|e| e.into_inner());
            reader.read_back(&origins)
        })
        .await
        .expect("dead-letter reader task")
    }
}

/// A record's key and value.
type Record = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The consumer that reads rejected records back, and where it stands per partition: the next
/// chunk of a storm usually starts where the last one ended, and seeking would throw away what
/// was already fetched ahead.
struct Reader {
    consumer: BaseConsumer,
    /// Per assigned partition, the offset the next poll will deliver.
    next: std::collections::HashMap<(String, i32), i64>,
}

/// How far ahead of the reader's position a wanted record may be and still be read on to, rather
/// than sought.
const READ_ON: i64 = 20_000;

impl Reader {
    fn read_back(&mut self, origins: &[Origin]) -> Result<Vec<Record>, DeadLetterError> {
        use std::collections::{BTreeSet, HashMap};
        let failed = |o: &Origin, reason: String| DeadLetterError::Fetch {
            topic: o.topic.to_string(),
            partition: o.partition,
            offset: o.offset,
            reason,
        };
        // Per partition, the offsets still wanted, lowest first.
        let mut wanted: HashMap<(String, i32), BTreeSet<i64>> = HashMap::new();
        for o in origins {
            wanted
                .entry((o.topic.to_string(), o.partition))
                .or_default()
                .insert(o.offset);
        }
        let reads_on = wanted.iter().all(|(tp, offsets)| {
            let first = *offsets.first().expect("not empty");
            self.next
                .get(tp)
                .is_some_and(|&at| at <= first && first - at < READ_ON)
        });
        if !reads_on {
            let mut tpl = TopicPartitionList::new();
            self.next.clear();
            for ((topic, partition), offsets) in &wanted {
                let first = *offsets.first().expect("not empty");
                tpl.add_partition_offset(topic, *partition, Offset::Offset(first))
                    .map_err(|e| failed(&origins[0], e.to_string()))?;
                self.next.insert((topic.clone(), *partition), first);
            }
            self.consumer
                .assign(&tpl)
                .map_err(|e| failed(&origins[0], e.to_string()))?;
        }
        let consumer = &self.consumer;
        let mut found: HashMap<(String, i32, i64), Record> = HashMap::new();
        let mut left: usize = wanted.values().map(BTreeSet::len).sum();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while left > 0 {
            if std::time::Instant::now() > deadline {
                let o = origins
                    .iter()
                    .find(|o| !found.contains_key(&(o.topic.to_string(), o.partition, o.offset)))
                    .unwrap_or(&origins[0]);
                return Err(failed(o, "no record within 30 s".into()));
            }
            let m = match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(failed(&origins[0], e.to_string())),
                None => continue,
            };
            let tp = (m.topic().to_string(), m.partition());
            if let Some(at) = self.next.get_mut(&tp) {
                *at = m.offset() + 1;
            }
            let Some(offsets) = wanted.get_mut(&tp) else {
                continue;
            };
            // Offsets below the next wanted one are skipped; one above it means the wanted one is
            // gone (retention, compaction).
            if let Some(&next) = offsets.first()
                && m.offset() > next
            {
                let o = origins
                    .iter()
                    .find(|o| {
                        o.partition == m.partition() && o.offset == next && &*o.topic == m.topic()
                    })
                    .unwrap_or(&origins[0]);
                return Err(failed(
                    o,
                    format!("the topic resumed at offset {}", m.offset()),
                ));
            }
            if offsets.remove(&m.offset()) {
                left -= 1;
                found.insert(
                    (m.topic().to_string(), m.partition(), m.offset()),
                    (m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec)),
                );
            }
        }
        Ok(origins
            .iter()
            .map(|o| {
                found
                    .get(&(o.topic.to_string(), o.partition, o.offset))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect())
    }
}

/// Counts events per key and says when a line is due: the first at once, then at most one per
/// `every`, carrying the count since the last. Holds at most `KEYS` keys.
struct LogSummary {
    every: Duration,
    keys: std::collections::HashMap<String, (std::time::Instant, u64)>,
}

impl LogSummary {
    const KEYS: usize = 1_024;

    fn new(every: Duration) -> Self {
        Self {
            every,
            keys: Default::default(),
        }
    }

    /// Notes `n` more under `key`; the count to log now, if a line is due.
    fn admit(&mut self, key: &str, n: u64, now: std::time::Instant) -> Option<u64> {
        if self.keys.len() >= Self::KEYS && !self.keys.contains_key(key) {
            self.keys
                .retain(|_, (at, _)| now.duration_since(*at) < self.every);
        }
        match self.keys.get_mut(key) {
            Some((at, pending)) => {
                *pending += n;
                (now.duration_since(*at) >= self.every).then(|| {
                    *at = now;
                    std::mem::take(pending)
                })
            }
            None => {
                self.keys.insert(key.to_string(), (now, 0));
                Some(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first batch of bad records is logged at once; the next minute's are one line with their
    /// count; another topic has lines of its own.
    #[test]
    fn repeated_dead_letters_are_one_line_a_minute() {
        let mut lines = LogSummary::new(Duration::from_secs(60));
        let t0 = std::time::Instant::now();
        assert_eq!(lines.admit("a", 1, t0), Some(1));
        let said: Vec<Option<u64>> = (1..=1_000)
            .map(|i| lines.admit("a", 1, t0 + Duration::from_millis(i * 50)))
            .collect();
        assert_eq!(
            said.iter().flatten().count(),
            0,
            "nothing within the minute"
        );
        assert_eq!(lines.admit("b", 3, t0), Some(3), "another key is its own");
        assert_eq!(
            lines.admit("a", 1, t0 + Duration::from_secs(61)),
            Some(1_001),
            "one line with everything since"
        );
        assert_eq!(lines.admit("a", 1, t0 + Duration::from_secs(62)), None);
    }
}
