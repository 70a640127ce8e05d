//! The run loop's phases driven without Kafka: records built by hand, a consumer stand-in that
//! logs commits and pauses, and the sink test kit's in-memory and fault-injecting sinks. Time is
//! tokio's paused clock, so a sink down for seconds costs none.

use super::collector::Collector;
use super::run_loop::{PAUSE_AFTER, RunLoop, SHUTDOWN_GRACE};
use super::{EngineError, RunSummary};
use crate::config::{Config, PipelineConfig};
use crate::dead_letter::{DeadLetter, DeadLetterError, DeadLetterQueue, Rejected};
use crate::decode::{Decoder, Resolver, ResolvingDecoder};
use crate::pipeline::{Applier, PipelineError};
use crate::route::Router;
use crate::source::{Applied, Consumption, Fetched, Partition, Records, SourceError};
use crate::telemetry::Telemetry;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::CommitMode;
use rdkafka::message::{OwnedMessage, Timestamp};
use ripple_sink::testkit::{Faulty, MemorySink};
use ripple_sink::{FailureKind, Sink};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = include_str!("../decode/testdata/synthetic-update.key.json");
const VALUE: &str = include_str!("../decode/testdata/synthetic-update.value.json");
const TOPIC: &str = "ripple.public.transactions";

#[derive(Debug, Clone, PartialEq)]
enum Call {
    /// Offsets committed (partition, offset), and whether synchronously.
    Commit(Vec<(i32, i64)>, bool),
    Pause,
    Resume,
}

/// Stands in for the Kafka consumer: logs what the loop asks, and checks each commit against
/// what the sink holds at that moment.
struct Consumer {
    applied: Arc<Applied>,
    log: Mutex<Vec<Call>>,
    caught_up: AtomicBool,
    sink: Arc<MemorySink>,
    letters: Arc<Letters>,
}

impl Consumer {
    fn log(&self) -> Vec<Call> {
        self.log.lock().unwrap().clone()
    }

    fn committed(&self) -> Vec<(i32, i64)> {
        let mut all: Vec<(i32, i64)> = self
            .log()
            .into_iter()
            .filter_map(|c| match c {
                Call::Commit(offsets, _) => Some(offsets),
                _ => None,
            })
            .flatten()
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

#[async_trait::async_trait]
impl Consumption for Consumer {
    fn applied(&self) -> &Arc<Applied> {
        &self.applied
    }

    fn commit(
        &self,
        applied: &BTreeMap<Partition, i64>,
        mode: CommitMode,
    ) -> Result<(), SourceError> {
        let held = self.sink.offsets();
        let letters = self.letters.0.lock().unwrap().clone();
        for ((_, p), o) in applied {
            assert!(
                held.contains(o) || letters.iter().any(|(l, _)| l == o),
                "offset {o} of partition {p} committed before the sink or the dead letters held it ({held:?}, {letters:?})"
            );
        }
        let offsets = applied.iter().map(|((_, p), o)| (*p, *o)).collect();
        self.log
            .lock()
            .unwrap()
            .push(Call::Commit(offsets, matches!(mode, CommitMode::Sync)));
        Ok(())
    }

    fn pause_all(&self) -> Result<(), SourceError> {
        let mut log = self.log.lock().unwrap();
        if log.last() != Some(&Call::Pause) {
            log.push(Call::Pause);
        }
        Ok(())
    }

    fn resume_all(&self) -> Result<(), SourceError> {
        self.log.lock().unwrap().push(Call::Resume);
        Ok(())
    }

    async fn caught_up(&self) -> Result<bool, SourceError> {
        Ok(self.caught_up.load(Ordering::Relaxed))
    }
}

/// Records what the loop dead-letters: (offset, stage).
#[derive(Default)]
struct Letters(Mutex<Vec<(i64, String)>>);

#[async_trait::async_trait]
impl DeadLetterQueue for Letters {
    async fn send_record(&self, letter: DeadLetter<'_>) -> Result<(), DeadLetterError> {
        let mut all = self.0.lock().unwrap();
        all.push((letter.offset, letter.stage.to_string()));
        Ok(())
    }

    async fn send_rejected(
        &self,
        sink: &str,
        rejected: &[Rejected<'_>],
    ) -> Result<(), DeadLetterError> {
        let mut all = self.0.lock().unwrap();
        all.extend(rejected.iter().map(|r| (r.origin.offset, sink.to_string())));
        Ok(())
    }
}

/// A record of the seed table (the same row each time), or garbage.
fn record(partition: i32, offset: i64, generation: u64, good: bool) -> Fetched<OwnedMessage> {
    let value = if good { VALUE } else { "not json" };
    Fetched {
        message: Ok(OwnedMessage::new(
            Some(value.as_bytes().to_vec()),
            Some(KEY.as_bytes().to_vec()),
            TOPIC.to_string(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )),
        generation,
    }
}

struct Setup {
    consumer: Arc<Consumer>,
    memory: Arc<MemorySink>,
    letters: Arc<Letters>,
    tx: tokio::sync::mpsc::Sender<Vec<Fetched<OwnedMessage>>>,
    run: RunLoop<'static, OwnedMessage>,
}

/// A run loop over one sink (`faulty`, wrapping `memory`), batches of `batch_size`, with or
/// without a dead-letter recorder, ending 500 ms after it is caught up and idle.
fn setup(
    memory: Arc<MemorySink>,
    sink: Arc<dyn Sink>,
    batch_size: usize,
    dead_letters: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Setup {
    let config = Config::parse(&format!(
        "[kafka]\nbrokers = \"127.0.0.1:1\"\ntopics = [\"{TOPIC}\"]\n\
         [sinks.m]\ntype = \"memory\"\n[[routes]]\ntopics = [\"{TOPIC}\"]\nsinks = [\"m\"]\n"
    ))
    .expect("config");
    let router = Router::new(&config, &["m".to_string()]).expect("router");
    let letters = Arc::new(Letters::default());
    let consumer = Arc::new(Consumer {
        applied: Arc::new(Applied::default()),
        log: Mutex::default(),
        caught_up: AtomicBool::new(false),
        sink: memory.clone(),
        letters: letters.clone(),
    });
    let queue = dead_letters.then(|| letters.clone() as Arc<dyn DeadLetterQueue>);
    let pipeline = PipelineConfig {
        batch_size,
        batch_linger_ms: 50,
        retry_initial_delay_ms: 100,
        retry_max_delay_ms: 200,
        max_retries: 3,
        ..PipelineConfig::default()
    };
    let applier = Arc::new(Applier::new(vec![sink], &pipeline, queue.clone()));
    let collector = Collector::new(
        consumer.applied.clone(),
        queue,
        ResolvingDecoder::new(Decoder::new(), Resolver::default()),
        Telemetry::default(),
        batch_size,
        Duration::from_millis(pipeline.batch_linger_ms),
    );
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    // The loop borrows its consumer for the run; a test's lives as long as the test.
    let source: &'static Arc<Consumer> = Box::leak(Box::new(consumer.clone()));
    let source: &'static Consumer = source;
    let run = RunLoop::new(
        source,
        Records::new(rx),
        collector,
        router,
        applier,
        Telemetry::default(),
        Some(Duration::from_millis(500)),
        shutdown,
    );
    Setup {
        consumer,
        memory,
        letters,
        tx,
        run,
    }
}

impl Setup {
    async fn send(&self, records: Vec<Fetched<OwnedMessage>>) {
        self.tx.send(records).await.expect("the loop is listening");
    }

    /// Runs the loop to its end; caught up from the start (records already sent come first).
    async fn run(&mut self) -> (Result<(), EngineError>, RunSummary) {
        self.consumer.caught_up.store(true, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let result = self.run.run().await;
        (result, self.run.summary(started))
    }

    /// What the sink holds, as (partition, offset) in the order applied.
    fn applied(&self) -> Vec<(i32, i64)> {
        self.memory
            .applied()
            .iter()
            .map(|e| (e.origin.partition, e.origin.offset))
            .collect()
    }

    fn phases(&self) -> Vec<&'static str> {
        let mut seen = self.run.seen.clone();
        seen.dedup();
        seen
    }
}

fn plain(batch_size: usize, dead_letters: bool) -> Setup {
    let memory = Arc::new(MemorySink::new("m"));
    setup(
        memory.clone(),
        memory,
        batch_size,
        dead_letters,
        std::future::pending(),
    )
}

/// Records go through in order, in batches of the batch size, each batch committed only once the
/// sink holds it (the stand-in checks at every commit), the last commit synchronous.
#[tokio::test(start_paused = true)]
async fn batches_are_applied_in_order_and_committed_after_they_land() {
    let mut s = plain(2, false);
    s.send((0..5).map(|o| record(0, o, 0, true)).collect())
        .await;
    let (result, summary) = s.run().await;
    result.expect("run");
    assert_eq!(s.memory.offsets(), vec![0, 1, 2, 3, 4]);
    assert_eq!(summary.batches, 3, "{summary}");
    assert_eq!(s.memory.calls(), 3, "batches of two, two and one");
    assert_eq!(s.consumer.committed(), vec![(0, 1), (0, 3), (0, 4)]);
    let log = s.consumer.log();
    assert_eq!(
        log.last(),
        Some(&Call::Commit(vec![(0, 4)], true)),
        "{log:?}"
    );
    assert!(!log.contains(&Call::Pause), "a healthy sink pauses nothing");
    let phases = s.phases();
    assert_eq!(phases.first(), Some(&"idle"));
    assert!(
        phases.ends_with(&["idle", "draining", "stopped"]),
        "{phases:?}"
    );
    assert!(phases.contains(&"collecting") && phases.contains(&"applying"));
}

/// A sink down for longer than `PAUSE_AFTER`: consumption pauses while the next batch waits,
/// resumes when the batch lands, and nothing is lost or committed early.
#[tokio::test(start_paused = true)]
async fn a_down_sink_pauses_consumption_until_its_batch_lands() {
    let memory = Arc::new(MemorySink::new("m"));
    let down =
        Arc::new(Faulty::new(MemorySinkRef(memory.clone())).fail_first(12, FailureKind::Retriable));
    let mut s = setup(memory, down.clone(), 2, false, std::future::pending());
    s.send((0..4).map(|o| record(0, o, 0, true)).collect())
        .await;
    let (consumer, tx) = (s.consumer.clone(), s.tx.clone());
    let late = tokio::spawn(async move {
        // The first batch is failing, the second full and waiting: paused by now, with no
        // record taken meanwhile.
        tokio::time::sleep(PAUSE_AFTER + Duration::from_millis(500)).await;
        let paused = consumer.log().contains(&Call::Pause);
        tx.send((4..6).map(|o| record(0, o, 0, true)).collect())
            .await
            .unwrap();
        paused
    });
    let started = tokio::time::Instant::now();
    let (result, _) = s.run().await;
    assert!(
        late.await.unwrap(),
        "paused once the batch outlasted PAUSE_AFTER"
    );
    result.expect("run");
    assert!(
        started.elapsed() > PAUSE_AFTER,
        "the outage outlasted PAUSE_AFTER"
    );
    assert_eq!(s.memory.offsets(), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(
        down.calls(),
        12 + 2,
        "twelve failures, then two batches: the second took in what was fetched before the pause"
    );
    let log = s.consumer.log();
    let pause = log.iter().position(|c| *c == Call::Pause).expect("paused");
    let resume = log
        .iter()
        .position(|c| *c == Call::Resume)
        .expect("resumed");
    let first_commit = log
        .iter()
        .position(|c| matches!(c, Call::Commit(..)))
        .expect("committed");
    assert!(
        pause < resume && resume < first_commit,
        "paused, resumed, then committed: {log:?}"
    );
    assert!(s.phases().contains(&"waiting on sink"), "{:?}", s.phases());
}

/// Lets a test keep its own handle on the memory sink inside a `Faulty`.
struct MemorySinkRef(Arc<MemorySink>);

#[async_trait::async_trait]
impl Sink for MemorySinkRef {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn ready(&self) -> Result<(), ripple_sink::SinkError> {
        self.0.ready().await
    }
    async fn apply(
        &self,
        target: ripple_sink::Target<'_>,
        events: &[ripple_sink::ChangeEvent],
    ) -> Result<(), ripple_sink::SinkError> {
        self.0.apply(target, events).await
    }
}

/// A shutdown while a batch cannot land gives it `SHUTDOWN_GRACE`, then abandons it: its
/// offsets are never committed (they are delivered again on the next start).
#[tokio::test(start_paused = true)]
async fn a_shutdown_abandons_a_batch_that_does_not_land_within_the_grace() {
    let memory = Arc::new(MemorySink::new("m"));
    let hung = Arc::new(Faulty::new(MemorySinkRef(memory.clone())).hang_first(usize::MAX));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut s = setup(memory, hung.clone(), 10, false, async {
        let _ = stopped.await;
    });
    s.send(vec![record(0, 0, 0, true), record(0, 1, 0, true)])
        .await;
    let started = tokio::time::Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = stop.send(());
    });
    // Never caught up: only the shutdown ends this run.
    let result = s.run.run().await;
    result.expect("a shutdown is not an error");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) + SHUTDOWN_GRACE
            && took < Duration::from_secs(3) + SHUTDOWN_GRACE,
        "{took:?}"
    );
    assert!(hung.calls() >= 1, "the batch reached the sink");
    assert!(s.memory.offsets().is_empty());
    assert_eq!(s.consumer.committed(), vec![], "nothing committed");
    assert!(
        s.phases().ends_with(&["applying", "draining", "stopped"])
            || s.phases().ends_with(&["idle", "draining", "stopped"]),
        "{:?}",
        s.phases()
    );
}

/// An undecodable record goes to the dead letters (stage `decode`), its offset is committed with
/// its batch, and the records around it are applied.
#[tokio::test(start_paused = true)]
async fn an_undecodable_record_is_dead_lettered_and_the_run_goes_on() {
    let mut s = plain(10, true);
    s.send(vec![
        record(0, 0, 0, true),
        record(0, 1, 0, false),
        record(0, 2, 0, true),
        record(0, 3, 0, false),
    ])
    .await;
    let (result, summary) = s.run().await;
    result.expect("run");
    assert_eq!(s.memory.offsets(), vec![0, 2]);
    assert_eq!(
        *s.letters.0.lock().unwrap(),
        vec![(1, "decode".to_string()), (3, "decode".to_string())]
    );
    assert_eq!(summary.dead_lettered, 2);
    assert_eq!(
        s.consumer.committed(),
        vec![(0, 3)],
        "the last dead letter's offset too"
    );
}

/// Without a dead-letter topic an undecodable record ends the run: what preceded it is applied
/// and committed first, nothing after it is.
#[tokio::test(start_paused = true)]
async fn without_dead_letters_an_undecodable_record_ends_the_run_after_what_preceded_it() {
    let mut s = plain(10, false);
    s.send(vec![
        record(0, 0, 0, true),
        record(0, 1, 0, true),
        record(0, 2, 0, false),
        record(0, 3, 0, true),
    ])
    .await;
    let (result, _) = s.run().await;
    match result {
        Err(EngineError::Pipeline(PipelineError::Decode { offset, .. })) => assert_eq!(offset, 2),
        other => panic!("expected the decode error, got {other:?}"),
    }
    assert_eq!(s.memory.offsets(), vec![0, 1]);
    assert_eq!(s.consumer.committed(), vec![(0, 1)]);
    assert!(
        s.phases().ends_with(&["starting", "failing"]),
        "{:?}",
        s.phases()
    );
}

fn revoke(applied: &Applied, partition: i32) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(TOPIC, partition);
    // No batch is in flight in these tests' revocations, or it is not waited for.
    applied.revoke(&tpl, Duration::ZERO);
}

/// Records of a revoked partition polled before the revocation are left out; those polled after
/// it (the partition came back) and other partitions' are applied.
#[tokio::test(start_paused = true)]
async fn records_polled_before_a_revocation_are_left_out() {
    let mut s = plain(10, false);
    revoke(&s.consumer.applied, 0);
    s.send(vec![
        record(0, 5, 0, true),
        record(1, 0, 0, true),
        record(0, 6, 0, true),
        record(0, 7, 1, true),
    ])
    .await;
    let (result, _) = s.run().await;
    result.expect("run");
    let applied = s.applied();
    assert_eq!(applied, vec![(1, 0), (0, 7)]);
}

/// A partition revoked while a batch holding its records waits for the one in flight: the
/// waiting batch drops them as it starts (the next owner reads them from the last commit).
#[tokio::test(start_paused = true)]
async fn a_revocation_takes_its_records_out_of_the_batch_in_hand() {
    let memory = Arc::new(MemorySink::new("m"));
    let slow = Arc::new(Faulty::new(MemorySinkRef(memory.clone())).slow(Duration::from_secs(2)));
    let mut s = setup(memory, slow, 1, false, std::future::pending());
    s.send(vec![record(1, 0, 0, true), record(0, 3, 0, true)])
        .await;
    let applied = s.consumer.applied.clone();
    tokio::spawn(async move {
        // The first batch is at the sink, the second (partition 0) collected and waiting.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        revoke(&applied, 0);
    });
    let (result, _) = s.run().await;
    result.expect("run");
    let applied = s.applied();
    assert_eq!(applied, vec![(1, 0)]);
    assert_eq!(s.consumer.committed(), vec![(1, 0)]);
}
