//! `ripple replay`: applies records again. `--dead-letter TOPIC` re-drives a dead-letter topic once
//! the cause is fixed: each dead letter is decoded again as a record of its original topic and
//! applied to the sinks that route that topic; one a sink rejected goes back to that sink only.
//! `--topic TOPIC` re-applies a change topic from an offset or a time to its current end, in
//! batches, to the sinks its routes give it (or the `--sink`s named), with a progress bar. `--file
//! PATH` re-applies records recorded to a file (JSON lines as `kcat -J` writes them). Sinks apply
//! only what is newer than what they hold, so a replay cannot move a row back in time.
//!
//! Every kind goes the same way: records read in chunks (`range.rs` for Kafka, `file.rs` for a
//! file), decoded, routed, and applied through the engine's `Applier` in batches of
//! `pipeline.batch_size`, so memory stays bounded whatever the topic's size.
// Errors end a run and travel once; boxing them would buy nothing.
#![allow(clippy::result_large_err)]

mod file;
mod range;

use crate::dead_letter::header;
use crate::decode::{Decoded, Record, ResolvingDecoder};
use crate::engine::{Engine, EngineError};
use crate::pipeline::{Applier, Batch, PipelineError};
use crate::route::Router;
use indicatif::ProgressBar;
use range::RangeReader;
pub use range::Start;
use rdkafka::message::{Headers, Message, OwnedMessage};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What `ripple replay` re-applies, and to which sinks (the CLI's flags, checked there).
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub input: Input,
    /// Only these sinks, when any.
    pub sinks: Vec<String>,
    /// How long reading a topic waits for its next record, before its end, before giving up.
    pub read_timeout: Duration,
}

/// The records to re-apply.
#[derive(Debug, Clone)]
pub enum Input {
    /// A dead-letter topic, from its beginning to its current end.
    DeadLetters(String),
    /// A change topic from a start to its current end.
    Topic { topic: String, start: Start },
    /// Records recorded to a file, one JSON object a line as `kcat -C -J` prints them.
    File(std::path::PathBuf),
}

/// By default a topic read gives up after this long without a record before its end.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct ReplaySummary {
    /// What was replayed: `dead letters`, or `records of TOPIC`.
    pub what: String,
    pub records: u64,
    pub applied: u64,
    /// Batches handed to the sinks, each of at most `pipeline.batch_size` events.
    pub batches: u64,
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
            "replayed {} {}: {} events applied in {} batches, {} still undecodable, {} left alone",
            self.records, self.what, self.applied, self.batches, self.undecodable, self.left
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
    options: &ReplayOptions,
) -> Result<ReplaySummary, ReplayError> {
    for s in &options.sinks {
        if !config.sinks.contains_key(s) {
            return Err(ReplayError::UnknownSink(s.clone()));
        }
    }
    let batch_size = config.pipeline.batch_size;
    let builder = Engine::builder(config.clone());
    let decoder = builder.decoder().await?;
    let sinks = builder.build_sinks().await?;
    let names: Vec<String> = sinks.iter().map(|s| s.name().to_string()).collect();
    let router = Router::new(&config, &names).map_err(EngineError::from)?;
    // Without a dead-letter topic of its own: a record that fails again stops the replay, and
    // stays where it is replayed from.
    let applier = Applier::new(sinks, &config.pipeline, None);
    let mut redrive = Redrive {
        decoder,
        router,
        names,
        sinks: &options.sinks,
    };
    let mut reader = Reader::open(&config.kafka, options).await?;
    let mut summary = ReplaySummary {
        what: reader.what(),
        ..Default::default()
    };
    let mut batch = Batch::default();
    while let Some(items) = reader.next_chunk(batch_size).await? {
        for item in items {
            summary.records += 1;
            match item {
                Item::Record(r) => {
                    let record = Record {
                        topic: &r.topic,
                        partition: r.partition,
                        offset: r.offset,
                        key: r.key.as_deref(),
                        value: r.value.as_deref(),
                    };
                    redrive
                        .add(&record, r.only_sink.as_deref(), &mut batch, &mut summary)
                        .await;
                }
                Item::Left => summary.left += 1,
                Item::Bad(reason) => summary.note_undecodable(reason),
            }
            if batch.events >= batch_size {
                applier.apply(&std::mem::take(&mut batch)).await?;
                summary.batches += 1;
            }
        }
    }
    // A replay marks no offsets (it commits none): what the batch holds is its tables.
    if !batch.tables.is_empty() {
        applier.apply(&batch).await?;
        summary.batches += 1;
    }
    reader.progress.finish_and_clear();
    Ok(summary)
}

impl ReplaySummary {
    /// Counts a record that cannot be applied, keeping the first reasons.
    fn note_undecodable(&mut self, reason: String) {
        self.undecodable += 1;
        if self.reasons.len() < 5 {
            self.reasons.push(reason);
        }
    }
}

/// One record to re-apply, as read.
struct Replayed {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    /// A dead letter's rejecting sink: it goes back to that sink only.
    only_sink: Option<String>,
}

enum Item {
    Record(Replayed),
    /// A dead letter that does not say where it came from.
    Left,
    /// A line of a file that is not a record, and why.
    Bad(String),
}

/// Where the records come from, read a chunk at a time.
struct Reader {
    source: Source,
    progress: ProgressBar,
    /// One shared name per topic.
    topics: HashMap<String, Arc<str>>,
}

enum Source {
    DeadLetters(RangeReader),
    Topic { range: RangeReader, topic: Arc<str> },
    File(file::Recording),
}

impl Reader {
    async fn open(
        kafka: &crate::config::KafkaConfig,
        options: &ReplayOptions,
    ) -> Result<Self, ReplayError> {
        let records = "replay [{bar:30}] {pos}/{len} records, {per_sec}, {elapsed} (eta {eta})";
        let (source, progress) = match &options.input {
            Input::DeadLetters(topic) => {
                let range =
                    RangeReader::open(kafka, topic, Start::Beginning, options.read_timeout).await?;
                let bar = crate::progress::bar(range.total(), records);
                (Source::DeadLetters(range), bar)
            }
            Input::Topic { topic, start } => {
                let range = RangeReader::open(kafka, topic, *start, options.read_timeout).await?;
                let bar = crate::progress::bar(range.total(), records);
                let topic = Arc::from(topic.as_str());
                (Source::Topic { range, topic }, bar)
            }
            Input::File(path) => {
                let recording = file::Recording::open(path)?;
                let bar = crate::progress::bar(
                    recording.size(),
                    "replay [{bar:30}] {bytes}/{total_bytes}, {binary_bytes_per_sec}, {elapsed} (eta {eta})",
                );
                (Source::File(recording), bar)
            }
        };
        Ok(Self {
            source,
            progress,
            topics: HashMap::new(),
        })
    }

    fn what(&self) -> String {
        match &self.source {
            Source::DeadLetters(_) => "dead letters".into(),
            Source::Topic { topic, .. } => format!("records of {topic}"),
            Source::File(f) => format!("records of {}", f.path().display()),
        }
    }

    /// Up to `max` records; `None` at the end.
    async fn next_chunk(&mut self, max: usize) -> Result<Option<Vec<Item>>, ReplayError> {
        let (messages, letters) = match &mut self.source {
            Source::File(recording) => {
                let Some((items, bytes)) = recording.next_chunk(max, &mut self.topics)? else {
                    return Ok(None);
                };
                self.progress.inc(bytes);
                return Ok(Some(items));
            }
            Source::DeadLetters(range) => (range.next_chunk(max).await?, true),
            Source::Topic { range, .. } => (range.next_chunk(max).await?, false),
        };
        let Some(messages) = messages else {
            return Ok(None);
        };
        self.progress.inc(messages.len() as u64);
        let items = messages
            .into_iter()
            .map(|m| match &self.source {
                Source::Topic { topic, .. } => Item::Record(Replayed {
                    topic: topic.clone(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    only_sink: None,
                }),
                _ => {
                    debug_assert!(letters);
                    letter(&m, &mut self.topics)
                }
            })
            .collect();
        Ok(Some(items))
    }
}

/// A dead letter as the record it was: its original topic, partition and offset from the
/// headers, with the sink that rejected it.
fn letter(m: &OwnedMessage, topics: &mut HashMap<String, Arc<str>>) -> Item {
    let header = |name: &str| {
        m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_string)
        })
    };
    let Some(topic) = header(header::TOPIC) else {
        return Item::Left;
    };
    let topic = topics
        .entry(topic)
        .or_insert_with_key(|t| Arc::from(t.as_str()))
        .clone();
    Item::Record(Replayed {
        topic,
        partition: header(header::PARTITION)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0),
        offset: header(header::OFFSET)
            .and_then(|o| o.parse().ok())
            .unwrap_or(0),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        only_sink: header(header::SINK),
    })
}

/// What every kind of replay shares: decoding a record and routing its change to the chosen sinks.
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
                summary.note_undecodable(format!(
                    "{}[{}]@{}: {}",
                    record.topic, record.partition, record.offset, e.reason
                ));
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
