//! The dead-letter topic: records Ripple cannot decode, and events a sink permanently rejects, are
//! written there byte for byte with headers saying why, so the pipeline can go on and nothing is
//! lost. A record is dead-lettered (and the write acknowledged) before its offset can be committed.

use crate::config::{DeadLetterConfig, KafkaConfig};
use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
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

/// Where the pipeline puts an event a sink rejected for good: the dead-letter topic, or, in unit
/// tests, anything that records them.
#[async_trait]
pub trait RejectedEvents: Send + Sync {
    /// Writes the record behind `origin` as rejected by `sink`, for `reason`.
    async fn send_event(
        &self,
        origin: &Origin,
        sink: &str,
        reason: &str,
    ) -> Result<(), DeadLetterError>;
}

#[async_trait]
impl RejectedEvents for DeadLetters {
    async fn send_event(
        &self,
        origin: &Origin,
        sink: &str,
        reason: &str,
    ) -> Result<(), DeadLetterError> {
        DeadLetters::send_event(self, origin, sink, reason).await
    }
}

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    /// Reads single records back by offset: events keep no raw bytes, and sink rejections are rare.
    fetcher: Arc<Mutex<BaseConsumer>>,
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
        cc.set("group.id", format!("{}-dead-letter-reader", kafka.group_id))
            .set("enable.auto.commit", "false");
        let producer: FutureProducer = pc
            .create()
            .map_err(|e| DeadLetterError::Config(e.to_string()))?;
        let fetcher: BaseConsumer = cc
            .create()
            .map_err(|e| DeadLetterError::Config(e.to_string()))?;
        Ok(Self {
            producer,
            topic: config.topic.clone(),
            fetcher: Arc::new(Mutex::new(fetcher)),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes one dead letter and waits until Kafka has it.
    pub async fn send(&self, letter: DeadLetter<'_>) -> Result<(), DeadLetterError> {
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
        self.producer
            .send(record, Timeout::After(Duration::from_secs(60)))
            .await
            .map_err(|(e, _)| DeadLetterError::Write {
                topic: self.topic.clone(),
                reason: e.to_string(),
            })?;
        tracing::warn!(
            topic = letter.topic,
            partition = letter.partition,
            offset = letter.offset,
            stage = letter.stage,
            sink = letter.sink,
            reason = letter.reason,
            dead_letter_topic = %self.topic,
            "dead-lettered a record"
        );
        Ok(())
    }

    /// Dead-letters the record an event was decoded from, read back from its topic.
    pub async fn send_event(
        &self,
        origin: &Origin,
        sink: &str,
        reason: &str,
    ) -> Result<(), DeadLetterError> {
        let (key, value) = self.fetch(origin).await?;
        self.send(DeadLetter {
            topic: &origin.topic,
            partition: origin.partition,
            offset: origin.offset,
            key: key.as_deref(),
            value: value.as_deref(),
            stage: "apply",
            sink: Some(sink),
            reason,
        })
        .await
    }

    async fn fetch(
        &self,
        origin: &Origin,
    ) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>), DeadLetterError> {
        let fetcher = self.fetcher.clone();
        let (topic, partition, offset) =
            (origin.topic.to_string(), origin.partition, origin.offset);
        let failed = {
            let topic = topic.clone();
            move |reason: String| DeadLetterError::Fetch {
                topic: topic.clone(),
                partition,
                offset,
                reason,
            }
        };
        tokio::task::spawn_blocking(move || {
            let consumer = fetcher.lock().expect("dead-letter reader");
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, partition, Offset::Offset(offset))
                .map_err(|e| failed(e.to_string()))?;
            consumer.assign(&tpl).map_err(|e| failed(e.to_string()))?;
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                match consumer.poll(Duration::from_millis(500)) {
                    Some(Ok(m)) if m.offset() == offset && m.partition() == partition => {
                        return Ok((m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec)));
                    }
                    Some(Ok(m)) if m.offset() > offset => {
                        return Err(failed(format!(
                            "the topic resumed at offset {}",
                            m.offset()
                        )));
                    }
                    Some(Err(e)) => return Err(failed(e.to_string())),
                    _ => {}
                }
            }
            Err(failed("no record within 30 s".into()))
        })
        .await
        .expect("dead-letter reader task")
    }
}
