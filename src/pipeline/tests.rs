//! The applier's unit tests, with the sink test kit: order, retries past the timeout, outages
//! waited out, rejections found by bisection or named by the store, the breaker.

use super::*;
use crate::dead_letter::DeadLetter;
use crate::route::{Assignment, RouteOptions};
use ripple_sink::testkit::{Faulty, MemorySink, Naming};
use ripple_sink::{Column, ColumnType, FailureKind, Op, Origin, TableSchema, Value, Version};

/// `n` upserts of one table, offsets 0..n, routed to sink 0.
fn batch(n: i64) -> Batch {
    let schema = Arc::new(TableSchema {
        table: TableRef::new("public", "t"),
        columns: vec![Column {
            name: "id".into(),
            ty: ColumnType::Int64,
            nullable: false,
            source_type: None,
            default: None,
        }],
        key: vec![0],
    });
    let sinks: Arc<[Assignment]> = Arc::from(vec![Assignment {
        sink: 0,
        options: Arc::new(RouteOptions::default()),
    }]);
    let topic: Arc<str> = Arc::from("t");
    let mut b = Batch::default();
    for i in 0..n {
        b.mark(&topic, 0, i);
        b.push(
            sinks.clone(),
            ChangeEvent {
                schema: schema.clone(),
                op: Op::Upsert,
                row: Some(vec![Value::Int(i)]),
                key: vec![Value::Int(i)],
                before: None,
                version: Version {
                    commit: 1,
                    change: i as u64,
                },
                source_ts_ms: 0,
                origin: Origin {
                    topic: topic.clone(),
                    partition: 0,
                    offset: i,
                },
            },
        );
    }
    b
}

fn fast(apply_timeout_ms: u64, max_retries: usize) -> PipelineConfig {
    PipelineConfig {
        apply_timeout_ms,
        max_retries,
        retry_initial_delay_ms: 1,
        retry_max_delay_ms: 5,
        ..PipelineConfig::default()
    }
}

/// A sink call that never returns is cut off at `apply_timeout_ms` and retried like any outage;
/// nothing is dead-lettered (there is no dead-letter topic, so a permanent error would fail).
#[tokio::test]
async fn a_hanging_apply_times_out_and_is_retried() {
    let sink = Arc::new(Faulty::new(MemorySink::new("m")).hang_first(2));
    let applier = Applier::new(vec![sink.clone() as Arc<dyn Sink>], &fast(50, 5), None);
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), applier.apply(&batch(3))).await;
    result
        .expect("the applier hung with the sink")
        .expect("applied after the timeouts");
    assert_eq!(sink.inner().offsets(), vec![0, 1, 2]);
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "two timeouts of 50 ms each"
    );
    assert_eq!(sink.calls(), 3);
}

/// Retriable failures are retried (past `max_retries`, with the sink counted as down) until the
/// sink takes the batch, which it then holds exactly once.
#[tokio::test]
async fn an_outage_longer_than_the_retries_is_waited_out() {
    let sink = Arc::new(Faulty::new(MemorySink::new("m")).fail_first(6, FailureKind::Retriable));
    let applier = Applier::new(vec![sink.clone() as Arc<dyn Sink>], &fast(1_000, 2), None);
    tokio::time::timeout(Duration::from_secs(5), applier.apply(&batch(4)))
        .await
        .expect("waited out")
        .expect("applied");
    assert_eq!(sink.calls(), 7, "six failures, then the call that worked");
    assert_eq!(sink.inner().offsets(), vec![0, 1, 2, 3]);
}

/// Without a dead-letter topic a permanent rejection stops the run, naming sink and table, and
/// is not retried.
#[tokio::test]
async fn a_permanent_rejection_without_dead_letters_stops_at_once() {
    let sink =
        Arc::new(Faulty::new(MemorySink::new("m")).reject(|e| e.origin.offset == 2, Naming::First));
    let applier = Applier::new(vec![sink.clone() as Arc<dyn Sink>], &fast(1_000, 5), None);
    let err = applier.apply(&batch(4)).await.unwrap_err();
    assert!(
        err.to_string().contains("\"m\"") && err.to_string().contains("public.t"),
        "{err}"
    );
    assert_eq!(sink.calls(), 1, "a permanent error is not retried");
    assert!(sink.inner().applied().is_empty());
}

/// Records what the pipeline dead-letters, by offset, and in how many calls.
#[derive(Default)]
struct Letters(std::sync::Mutex<Vec<i64>>, AtomicU64);

#[async_trait::async_trait]
impl DeadLetterQueue for Letters {
    async fn send_record(&self, _letter: DeadLetter<'_>) -> Result<(), DeadLetterError> {
        unreachable!("the applier dead-letters events, not records")
    }

    async fn send_rejected(
        &self,
        _sink: &str,
        rejected: &[Rejected<'_>],
    ) -> Result<(), DeadLetterError> {
        self.1.fetch_add(1, Ordering::Relaxed);
        let mut all = self.0.lock().unwrap();
        all.extend(rejected.iter().map(|r| r.origin.offset));
        Ok(())
    }
}

impl Letters {
    fn offsets(&self) -> Vec<i64> {
        self.0.lock().unwrap().clone()
    }

    fn calls(&self) -> u64 {
        self.1.load(Ordering::Relaxed)
    }
}

/// A sink that rejects every event (naming it) while `refusing` is set, and an applier with a
/// dead-letter recorder and the given breaker.
fn refusing_setup(
    breaker: Breaker,
    naming: Naming,
) -> (
    Arc<Faulty<MemorySink>>,
    Arc<std::sync::atomic::AtomicBool>,
    Arc<Letters>,
    Arc<Applier>,
) {
    let refusing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = refusing.clone();
    let sink = Arc::new(
        Faulty::new(MemorySink::new("m")).reject(move |_| flag.load(Ordering::Relaxed), naming),
    );
    let letters = Arc::new(Letters::default());
    let applier = Applier::new(
        vec![sink.clone() as Arc<dyn Sink>],
        &fast(1_000, 1),
        Some(letters.clone() as Arc<dyn DeadLetterQueue>),
    )
    .with_breaker(Some(breaker));
    (sink, refusing, letters, Arc::new(applier))
}

/// A rejection storm: at most `max_rejections` are dead-lettered, then the sink counts as down
/// (nothing more dead-lettered however long it refuses) until the cause goes; then everything
/// else is applied and the breaker closes.
#[tokio::test]
async fn the_breaker_stops_dead_lettering_a_storm_and_closes_when_the_sink_applies() {
    let (sink, refusing, letters, applier) = refusing_setup(
        Breaker {
            max_rejections: 5,
            window: Duration::from_secs(60),
            max_share: 1.0,
        },
        Naming::First,
    );
    let run = tokio::spawn({
        let applier = applier.clone();
        async move { applier.apply(&batch(50)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        letters.offsets(),
        vec![0, 1, 2, 3, 4],
        "exactly the threshold dead-lettered"
    );
    let why = applier.breaker_open("m").expect("the breaker is open");
    assert!(why.contains("max_rejections"), "{why}");
    assert!(!run.is_finished(), "the sink is waited for, not skipped");
    let calls = sink.calls();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        sink.calls() > calls,
        "the refused part is retried while the breaker is open"
    );
    assert_eq!(
        letters.offsets().len(),
        5,
        "nothing more dead-lettered while open"
    );

    refusing.store(false, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("applied once the sink takes the events")
        .unwrap()
        .expect("no error");
    assert_eq!(sink.inner().offsets(), (5..50).collect::<Vec<_>>());
    assert!(
        applier.breaker_open("m").is_none(),
        "closed after the apply"
    );
}

/// A store that refuses more than `max_rejected_share` of one table's batch opens the breaker
/// before `max_rejections` is reached.
#[tokio::test]
async fn the_breaker_opens_on_a_share_of_the_batch() {
    let (_sink, refusing, letters, applier) = refusing_setup(
        Breaker {
            max_rejections: 1_000,
            window: Duration::from_secs(60),
            max_share: 0.5,
        },
        Naming::First,
    );
    let run = tokio::spawn({
        let applier = applier.clone();
        async move { applier.apply(&batch(40)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        letters.offsets().len(),
        20,
        "half of 40 dead-lettered, then the breaker"
    );
    assert!(
        applier
            .breaker_open("m")
            .unwrap()
            .contains("max_rejected_share")
    );
    refusing.store(false, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A rejection that names no event is narrowed down by halving: one bad event among 64 costs
/// at most 2 * log2(64) + 1 calls, and only it is dead-lettered.
#[tokio::test]
async fn bisection_finds_the_one_culprit_in_few_calls() {
    let sink =
        Arc::new(Faulty::new(MemorySink::new("m")).reject(|e| e.origin.offset == 37, Naming::None));
    let letters = Arc::new(Letters::default());
    let applier = Applier::new(
        vec![sink.clone() as Arc<dyn Sink>],
        &fast(1_000, 1),
        Some(letters.clone() as Arc<dyn DeadLetterQueue>),
    );
    applier.apply(&batch(64)).await.unwrap();
    assert_eq!(letters.offsets(), vec![37]);
    assert_eq!(
        sink.inner().offsets(),
        (0..64).filter(|&o| o != 37).collect::<Vec<_>>()
    );
    assert!(
        sink.calls() <= 13,
        "{} calls to find one event in 64",
        sink.calls()
    );
}

/// A sink that reports every refused event of a call (as `_bulk` does) costs one call and one
/// dead-letter write for the whole batch, however many it refuses; the rest is applied once.
#[tokio::test]
async fn every_reported_rejection_is_dead_lettered_from_one_call() {
    let sink = Arc::new(
        Faulty::new(MemorySink::new("m")).reject(|e| e.origin.offset % 3 == 0, Naming::All),
    );
    let letters = Arc::new(Letters::default());
    let applier = Applier::new(
        vec![sink.clone() as Arc<dyn Sink>],
        &fast(1_000, 1),
        Some(letters.clone() as Arc<dyn DeadLetterQueue>),
    );
    applier.apply(&batch(3_000)).await.unwrap();
    assert_eq!(sink.calls(), 1, "no call again for the rest");
    assert_eq!(letters.calls(), 1, "one dead-letter write for all");
    assert_eq!(
        letters.offsets(),
        (0..3_000).filter(|o| o % 3 == 0).collect::<Vec<_>>()
    );
    assert_eq!(
        sink.inner().offsets(),
        (0..3_000).filter(|o| o % 3 != 0).collect::<Vec<_>>()
    );
    assert_eq!(applier.rejected(), 1_000);
}

/// With reported rejections the breaker still stops at its threshold: the events refused past
/// it are waited out, and applied once the store takes them, with nothing dead-lettered twice.
#[tokio::test]
async fn the_breaker_holds_for_reported_rejections() {
    let (sink, refusing, letters, applier) = refusing_setup(
        Breaker {
            max_rejections: 7,
            window: Duration::from_secs(60),
            max_share: 1.0,
        },
        Naming::All,
    );
    let run = tokio::spawn({
        let applier = applier.clone();
        async move { applier.apply(&batch(30)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(letters.offsets(), (0..7).collect::<Vec<_>>());
    assert!(applier.breaker_open("m").is_some());
    refusing.store(false, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(letters.offsets().len(), 7);
    assert_eq!(sink.inner().offsets(), (7..30).collect::<Vec<_>>());
}

/// Backpressure: while one sink is down, `apply` does not return (so the engine takes no new
/// records), the healthy sink is given its events once and not again, and the down sink gets
/// only retries of the same events, spaced by the retry delay, not a flood.
#[tokio::test]
async fn a_down_sink_holds_the_batch_without_flooding_anyone() {
    let healthy = Arc::new(Faulty::new(MemorySink::new("healthy")));
    let down = Arc::new(
        Faulty::new(MemorySink::new("down")).fail_first(1_000_000, FailureKind::Retriable),
    );
    let mut config = fast(1_000, 2);
    config.retry_max_delay_ms = 20;
    let applier = Arc::new(Applier::new(
        vec![
            healthy.clone() as Arc<dyn Sink>,
            down.clone() as Arc<dyn Sink>,
        ],
        &config,
        None,
    ));
    let mut b = batch(10);
    let both: Arc<[Assignment]> = Arc::from(vec![
        Assignment {
            sink: 0,
            options: Arc::new(RouteOptions::default()),
        },
        Assignment {
            sink: 1,
            options: Arc::new(RouteOptions::default()),
        },
    ]);
    b.tables[0].sinks = both;
    let run = tokio::spawn({
        let applier = applier.clone();
        async move { applier.apply(&b).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!run.is_finished(), "the batch is held while a sink is down");
    assert_eq!(
        healthy.calls(),
        1,
        "the healthy sink is not sent the batch again"
    );
    assert_eq!(healthy.inner().offsets(), (0..10).collect::<Vec<_>>());
    let calls = down.calls();
    assert!(
        (5..=60).contains(&calls),
        "{calls} calls in 500 ms: retried at the retry delay (about 20 ms), not in a loop"
    );
    run.abort();
}
