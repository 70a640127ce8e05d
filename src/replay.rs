//! `ripple replay --dead-letter TOPIC`: re-drives a dead-letter topic once the cause is fixed. Each
//! dead letter is decoded again as a record of its original topic and applied to the sinks that
//! route that topic; one a sink rejected goes back to that sink only. Sinks apply only what is
//! newer than what they hold, so replaying old dead letters cannot move a row back in time.
// Errors end a run and travel once; boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use crate::dead_letter::header;
use crate::decode::{Decoded, Decoder, Record};
use crate::engine::{Engine, EngineError};
use crate::pipeline::{Applier, Batch, PipelineError};
use crate::route::Router;
use crate::source::SourceError;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// `ripple replay` options.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// The dead-letter topic to re-drive, from its beginning to its current end.
    #[arg(long = "dead-letter", value_name = "TOPIC")]
    pub dead_letter: String,
    /// Re-drive only the dead letters of this sink (repeatable).
    #[arg(long = "sink", value_name = "NAME")]
    pub sinks: Vec<String>,
}

#[derive(Debug, Default)]
pub struct ReplaySummary {
    pub records: u64,
    pub applied: u64,
    /// Still undecodable, with the first reasons.
    pub undecodable: u64,
    pub reasons: Vec<String>,
    /// Dead letters of sinks not selected, or whose topic no route sends to that sink any more.
    pub left: u64,
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replayed {} dead letters: {} events applied, {} still undecodable, {} left alone",
            self.records, self.applied, self.undecodable, self.left
        )?;
        for r in &self.reasons {
            write!(f, "\n  still undecodable: {r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("reading dead-letter topic {topic:?}: {reason}")]
    Read { topic: String, reason: String },
    #[error("--sink {0:?} is not a configured sink")]
    UnknownSink(String),
}

pub async fn run(
    config: crate::config::Config,
    args: &ReplayArgs,
) -> Result<ReplaySummary, ReplayError> {
    for s in &args.sinks {
        if !config.sinks.contains_key(s) {
            return Err(ReplayError::UnknownSink(s.clone()));
        }
    }
    let kafka = config.kafka.clone();
    let pipeline = config.pipeline.clone();
    let builder = Engine::builder(config.clone());
    let sinks = builder.build_sinks().await?;
    let names: Vec<String> = sinks.iter().map(|s| s.name().to_string()).collect();
    let mut router = Router::new(&config, &names).map_err(EngineError::from)?;
    // Without a dead-letter topic of its own: a record that fails again stops the replay, and
    // stays in the topic being replayed.
    let applier = Applier::new(sinks, &pipeline, None);

    let records = read_all(&kafka, &args.dead_letter).await?;
    let mut decoder = Decoder::new().binary_mode(config.decode.binary_handling_mode);
    let mut summary = ReplaySummary::default();
    let mut batch = Batch::default();
    for r in &records {
        summary.records += 1;
        let Some(topic) = r.header(header::TOPIC) else {
            summary.left += 1;
            continue;
        };
        let topic: Arc<str> = Arc::from(topic);
        let partition = r
            .header(header::PARTITION)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let offset = r
            .header(header::OFFSET)
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        let only_sink = r.header(header::SINK);
        let record = Record {
            topic: &topic,
            partition,
            offset,
            key: r.key.as_deref(),
            value: r.value.as_deref(),
        };
        let event = match decoder.decode(&record) {
            Ok(Decoded::Change(event)) => event,
            Ok(Decoded::Skip(_)) => continue,
            Err(e) => {
                summary.undecodable += 1;
                if summary.reasons.len() < 5 {
                    summary
                        .reasons
                        .push(format!("{topic}[{partition}]@{offset}: {}", e.reason));
                }
                continue;
            }
        };
        let wanted: Vec<_> = router
            .sinks_for(&topic)
            .iter()
            .filter(|a| only_sink.is_none_or(|s| names[a.sink] == s))
            .filter(|a| args.sinks.is_empty() || args.sinks.contains(&names[a.sink]))
            .cloned()
            .collect();
        if wanted.is_empty() {
            summary.left += 1;
            continue;
        }
        summary.applied += 1;
        batch.push(wanted.into(), event);
    }
    if !batch.tables.is_empty() {
        applier.apply(&batch).await?;
    }
    Ok(summary)
}

/// A consumed dead letter, owned.
struct Letter {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, String)>,
}

impl Letter {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every record of `topic` from the beginning to the end it had when reading started.
async fn read_all(
    kafka: &crate::config::KafkaConfig,
    topic: &str,
) -> Result<Vec<Letter>, ReplayError> {
    let topic_name = topic.to_string();
    let failed = move |reason: String| ReplayError::Read {
        topic: topic_name.clone(),
        reason,
    };
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &kafka.brokers)
        .set("group.id", format!("{}-replay", kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("client.id", "ripple-replay");
    for (k, v) in &kafka.options {
        cc.set(k, v);
    }
    let consumer: BaseConsumer = cc
        .create()
        .map_err(|e| failed(SourceError::Config(e.to_string()).to_string()))?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_err(|e| failed(e.to_string()))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut tpl = TopicPartitionList::new();
        let mut ends = Vec::new();
        for p in partitions {
            let (low, high) = consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .map_err(|e| failed(e.to_string()))?;
            if high > low {
                tpl.add_partition_offset(&topic, p, Offset::Offset(low))
                    .map_err(|e| failed(e.to_string()))?;
                ends.push((p, high));
            }
        }
        let mut letters = Vec::new();
        if ends.is_empty() {
            return Ok(letters);
        }
        consumer.assign(&tpl).map_err(|e| failed(e.to_string()))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut done = std::collections::HashSet::new();
        while done.len() < ends.len() {
            if std::time::Instant::now() > deadline {
                return Err(failed("not read to its end within 120 s".into()));
            }
            let Some(m) = consumer.poll(Duration::from_millis(500)) else {
                continue;
            };
            let m = m.map_err(|e| failed(e.to_string()))?;
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .filter_map(|h| {
                            h.value
                                .and_then(|v| std::str::from_utf8(v).ok())
                                .map(|v| (h.key.to_string(), v.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            letters.push(Letter {
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers,
            });
            if let Some((_, end)) = ends.iter().find(|(p, _)| *p == m.partition())
                && m.offset() + 1 >= *end
            {
                done.insert(m.partition());
            }
        }
        Ok(letters)
    })
    .await
    .expect("dead-letter read task")
}
