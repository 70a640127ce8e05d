//! `ripple replay`: applies records again. `--dead-letter TOPIC` re-drives a dead-letter topic once
//! the cause is fixed: each dead letter is decoded again as a record of its original topic and
//! applied to the sinks that route that topic; one a sink rejected goes back to that sink only.
//! `--topic TOPIC` re-applies a change topic from an offset or a time to its current end, in
//! batches, to the sinks its routes give it (or the `--sink`s named), with a progress bar. `--file
//! PATH` re-applies records recorded to a file (JSON lines as `kcat -J` writes them). Sinks apply
//! only what is newer than what they hold, so a replay cannot move a row back in time.
// Errors end a run and travel once; boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use crate::dead_letter::header;
use crate::decode::{Decoded, Record, ResolvingDecoder};
use crate::engine::{Engine, EngineError};
use crate::pipeline::{Applier, Batch, PipelineError};
use crate::route::Router;
use crate::source::SourceError;
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
    #[arg(
        long = "dead-letter",
        value_name = "TOPIC",
        required_unless_present_any = ["topic", "file"],
        conflicts_with_all = ["topic", "file"]
    )]
    pub dead_letter: Option<String>,
    /// A file of recorded records to re-apply, one JSON object a line as `kcat -C -J` prints
    /// them: `topic`, `partition`, `offset`, and `key` / `payload` as text (null for none), or
    /// `key_base64` / `payload_base64` for binary (Avro) records.
    #[arg(long, value_name = "PATH", conflicts_with = "topic")]
    pub file: Option<std::path::PathBuf>,
    /// A change topic to re-apply, from `--from-offset` / `--from-timestamp` (default: its
    /// beginning) to its current end.
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,
    /// With --topic: start every partition at this offset.
    #[arg(
        long,
        value_name = "N",
        requires = "topic",
        conflicts_with = "from_timestamp"
    )]
    pub from_offset: Option<i64>,
    /// With --topic: start every partition at its first record at or after this time
    /// (RFC 3339, e.g. 2026-11-25T18:00:00Z).
    #[arg(long, value_name = "TIME", requires = "topic", value_parser = parse_time)]
    pub from_timestamp: Option<i64>,
    /// Apply only to this sink (repeatable).
    #[arg(long = "sink", value_name = "NAME")]
    pub sinks: Vec<String>,
}

/// An RFC 3339 time as milliseconds since the epoch.
fn parse_time(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-11-25T18:00:00Z: {e}"))
}

#[derive(Debug, Default)]
pub struct ReplaySummary {
    /// What was replayed: `dead letters`, or `records of TOPIC`.
    pub what: String,
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
            "replayed {} {}: {} events applied, {} still undecodable, {} left alone",
            self.records, self.what, self.applied, self.undecodable, self.left
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
    #[error("reading {topic:?}: {reason}")]
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
    let decoder = builder.decoder().await?;
    let sinks = builder.build_sinks().await?;
    let names: Vec<String> = sinks.iter().map(|s| s.name().to_string()).collect();
    let router = Router::new(&config, &names).map_err(EngineError::from)?;
    // Without a dead-letter topic of its own: a record that fails again stops the replay, and
    // stays in the topic being replayed.
    let applier = Applier::new(sinks, &pipeline, None);

    let mut redrive = Redrive {
        decoder,
        router,
        names,
        sinks: &args.sinks,
    };
    if let Some(path) = &args.file {
        return replay_file(path, &pipeline, &applier, &mut redrive).await;
    }
    let Some(dead_letter) = &args.dead_letter else {
        let topic = args.topic.as_deref().expect("clap requires one of the two");
        return replay_topic(&kafka, topic, args, &pipeline, &applier, &mut redrive).await;
    };
    let records = read_all(&kafka, dead_letter).await?;
    let mut summary = ReplaySummary {
        what: "dead letters".into(),
        ..Default::default()
    };
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
        redrive
            .add(&record, only_sink, &mut batch, &mut summary)
            .await;
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
    let consumer = reader(kafka).map_err(&failed)?;
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

/// What both kinds of replay share: decoding a record and routing its change to the chosen sinks.
struct Redrive<'a> {
    decoder: ResolvingDecoder,
    router: Router,
    /// Sink names by id.
    names: Vec<String>,
    /// `--sink`: only these, when any.
    sinks: &'a [String],
}

impl Redrive<'_> {
    /// Decodes `record` and adds its change to `batch` for the sinks its topic routes to (only
    /// `only_sink` when given), counting in `summary` what became of it.
    async fn add(
        &mut self,
        record: &Record<'_>,
        only_sink: Option<&str>,
        batch: &mut Batch,
        summary: &mut ReplaySummary,
    ) {
        let event = match self.decoder.decode(record).await {
            Ok(Decoded::Change(event)) => event,
            Ok(Decoded::Skip(_)) => return,
            Err(e) => {
                summary.undecodable += 1;
                if summary.reasons.len() < 5 {
                    summary.reasons.push(format!(
                        "{}[{}]@{}: {}",
                        record.topic, record.partition, record.offset, e.reason
                    ));
                }
                return;
            }
        };
        let names = &self.names;
        let wanted: Vec<_> = self
            .router
            .sinks_for(record.topic)
            .iter()
            .filter(|a| only_sink.is_none_or(|s| names[a.sink] == s))
            .filter(|a| self.sinks.is_empty() || self.sinks.contains(&names[a.sink]))
            .cloned()
            .collect();
        if wanted.is_empty() {
            summary.left += 1;
            return;
        }
        summary.applied += 1;
        batch.push(wanted.into(), event);
    }
}

/// Re-applies `topic` from the requested start to the end it has now, one batch at a time.
async fn replay_topic(
    kafka: &crate::config::KafkaConfig,
    topic: &str,
    args: &ReplayArgs,
    pipeline: &crate::config::PipelineConfig,
    applier: &Applier,
    redrive: &mut Redrive<'_>,
) -> Result<ReplaySummary, ReplayError> {
    let failed = |reason: String| ReplayError::Read {
        topic: topic.to_string(),
        reason,
    };
    let consumer = reader(kafka).map_err(&failed)?;
    let consumer = Arc::new(consumer);
    let (start, args_copy, name) = (consumer.clone(), args.clone(), topic.to_string());
    let ends = tokio::task::spawn_blocking(move || assign_from(&start, &name, &args_copy))
        .await
        .expect("assign task")
        .map_err(&failed)?;
    let total: i64 = ends.iter().map(|(_, from, end)| end - from).sum();
    let progress = crate::progress::bar(
        total.max(0) as u64,
        "replay [{bar:30}] {pos}/{len} records, {per_sec}, {elapsed} (eta {eta})",
    );
    let mut summary = ReplaySummary {
        what: format!("records of {topic}"),
        ..Default::default()
    };
    let topic_arc: Arc<str> = Arc::from(topic);
    let mut done = std::collections::HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while done.len() < ends.len() {
        // One batch: up to batch_size records, read on a blocking thread.
        let (reader, size) = (consumer.clone(), pipeline.batch_size);
        let chunk = tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(size);
            while out.len() < size {
                match reader.poll(Duration::from_millis(300)) {
                    Some(Ok(m)) => out.push((
                        m.partition(),
                        m.offset(),
                        m.key().map(<[u8]>::to_vec),
                        m.payload().map(<[u8]>::to_vec),
                    )),
                    Some(Err(e)) => return Err(e.to_string()),
                    None => break,
                }
            }
            Ok(out)
        })
        .await
        .expect("read task")
        .map_err(&failed)?;
        if chunk.is_empty() && std::time::Instant::now() > deadline {
            return Err(failed("not read to its end within 600 s".into()));
        }
        let mut batch = Batch::default();
        for (partition, offset, key, value) in &chunk {
            let Some((_, _, end)) = ends.iter().find(|(p, _, _)| p == partition) else {
                continue;
            };
            if *offset >= *end {
                done.insert(*partition);
                continue;
            }
            if offset + 1 >= *end {
                done.insert(*partition);
            }
            summary.records += 1;
            progress.inc(1);
            let record = Record {
                topic: &topic_arc,
                partition: *partition,
                offset: *offset,
                key: key.as_deref(),
                value: value.as_deref(),
            };
            redrive.add(&record, None, &mut batch, &mut summary).await;
        }
        if !batch.tables.is_empty() {
            applier.apply(&batch).await?;
        }
    }
    progress.finish_and_clear();
    Ok(summary)
}

/// One line of a recorded file: `kcat -J`'s fields, plus base64 forms for binary records.
#[derive(serde::Deserialize)]
struct Recorded {
    topic: String,
    #[serde(default)]
    partition: i32,
    #[serde(default)]
    offset: i64,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    key_base64: Option<String>,
    #[serde(default)]
    payload_base64: Option<String>,
}

impl Recorded {
    fn bytes(
        text: Option<String>,
        b64: Option<String>,
        what: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        use base64::Engine as _;
        match (b64, text) {
            (Some(b), _) => base64::engine::general_purpose::STANDARD
                .decode(b.as_bytes())
                .map(Some)
                .map_err(|e| format!("{what}_base64 is not base64: {e}")),
            (None, t) => Ok(t.map(String::into_bytes)),
        }
    }
}

/// Re-applies the records of a file, in its order, one batch at a time. A line that is not a
/// record is counted, with its number, among the undecodable.
async fn replay_file(
    path: &std::path::Path,
    pipeline: &crate::config::PipelineConfig,
    applier: &Applier,
    redrive: &mut Redrive<'_>,
) -> Result<ReplaySummary, ReplayError> {
    use std::io::BufRead;
    let failed = |reason: String| ReplayError::Read {
        topic: path.display().to_string(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| failed(e.to_string()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let progress = crate::progress::bar(
        size,
        "replay [{bar:30}] {bytes}/{total_bytes}, {binary_bytes_per_sec}, {elapsed} (eta {eta})",
    );
    let mut summary = ReplaySummary {
        what: format!("records of {}", path.display()),
        ..Default::default()
    };
    let mut batch = Batch::default();
    let mut topics: std::collections::HashMap<String, Arc<str>> = Default::default();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| failed(e.to_string()))?;
        progress.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        summary.records += 1;
        let parsed = serde_json::from_str::<Recorded>(&line)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                let key = Recorded::bytes(r.key, r.key_base64, "key")?;
                let value = Recorded::bytes(r.payload, r.payload_base64, "payload")?;
                Ok((r.topic, r.partition, r.offset, key, value))
            });
        let (topic, partition, offset, key, value) = match parsed {
            Ok(p) => p,
            Err(e) => {
                summary.undecodable += 1;
                if summary.reasons.len() < 5 {
                    summary
                        .reasons
                        .push(format!("line {}: not a recorded record: {e}", n + 1));
                }
                continue;
            }
        };
        let topic = topics
            .entry(topic)
            .or_insert_with_key(|t| Arc::from(t.as_str()))
            .clone();
        let record = Record {
            topic: &topic,
            partition,
            offset,
            key: key.as_deref(),
            value: value.as_deref(),
        };
        redrive.add(&record, None, &mut batch, &mut summary).await;
        if batch.events >= pipeline.batch_size {
            applier.apply(&std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.tables.is_empty() {
        applier.apply(&batch).await?;
    }
    progress.finish_and_clear();
    Ok(summary)
}

/// A consumer for reading topics by assignment, outside Ripple's consumer group.
fn reader(kafka: &crate::config::KafkaConfig) -> Result<BaseConsumer, String> {
    use crate::source::client::{Role, client_config};
    let mut cc =
        client_config(kafka, "ripple-replay", Role::Consumer).map_err(|e| e.to_string())?;
    cc.set("group.id", format!("{}-replay", kafka.group_id))
        .set("enable.auto.commit", "false");
    cc.create()
        .map_err(|e| SourceError::Config(e.to_string()).to_string())
}

/// Assigns every partition of `topic` that has records past the requested start; returns
/// (partition, start offset, end offset) for each.
fn assign_from(
    consumer: &BaseConsumer,
    topic: &str,
    args: &ReplayArgs,
) -> Result<Vec<(i32, i64, i64)>, String> {
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
    let by_time = match args.from_timestamp {
        Some(ms) => {
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
        None => None,
    };
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| e.to_string())?;
        let from = match (&by_time, args.from_offset) {
            (Some(found), _) => match found.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                // Nothing at or after that time.
                _ => high,
            },
            (None, Some(o)) => o,
            (None, None) => low,
        }
        .clamp(low, high);
        if from < high {
            tpl.add_partition_offset(topic, p, Offset::Offset(from))
                .map_err(|e| e.to_string())?;
            ends.push((p, from, high));
        }
    }
    if !ends.is_empty() {
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
    }
    Ok(ends)
}
