//! A Redis Cluster primary killed while the sink writes: its replica takes over, the cluster client
//! follows it, and every change lands once the slots are served again, none lost and none older
//! than what was written. A separate test binary: it kills a node of the stack's shared cluster and
//! starts it again (`scripts/stack start redis-cluster`), which no other test may see.

use redis::AsyncCommands;
use ripple_sink::{
    ChangeEvent, Column, ColumnType, Op, Origin, Sink, TableRef, TableSchema, Target, Value,
    Version,
};
use ripple_sink_redis::{Connection, Format, RedisSink, RedisSinkConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const ROWS: i64 = 2_000;

fn url() -> String {
    std::env::var("RIPPLE_TEST_REDIS_CLUSTER_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:17000".into())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn stack_dir() -> PathBuf {
    std::env::var("RIPPLE_STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".stack"))
}

fn event(s: &Arc<TableSchema>, id: i64, round: u64) -> ChangeEvent {
    ChangeEvent {
        schema: s.clone(),
        op: Op::Upsert,
        row: Some(vec![Value::Int(id), Value::Int(round as i64)]),
        key: vec![Value::Int(id)],
        before: None,
        version: Version {
            commit: round,
            change: id as u64,
        },
        source_ts_ms: 0,
        origin: Origin {
            topic: Arc::from("t"),
            partition: 0,
            offset: 0,
        },
    }
}

/// The cluster's primaries as `(port, node id)`, seen from any node that answers.
async fn primaries() -> Vec<(u16, String)> {
    for port in 17000..=17005 {
        let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
            continue;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            continue;
        };
        let Ok(nodes) = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async::<String>(&mut conn)
            .await
        else {
            continue;
        };
        return nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let id = parts.next()?.to_string();
                let port = parts.next()?.split('@').next()?.rsplit(':').next()?;
                Some((port.parse().ok()?, id))
            })
            .collect();
    }
    panic!("no node of the Redis Cluster answers: run scripts/stack up");
}

/// `scripts/stack start redis-cluster`: starts the nodes not running and waits for a whole cluster.
fn start_cluster() {
    let status = std::process::Command::new(repo().join("scripts/stack"))
        .args(["start", "redis-cluster"])
        .status()
        .unwrap();
    assert!(status.success(), "scripts/stack start redis-cluster");
}

#[tokio::test]
async fn a_killed_primary_fails_over_and_no_change_is_lost() {
    // A run that failed half-way may have left a node down.
    start_cluster();
    let config = RedisSinkConfig {
        kind: "redis".into(),
        url: url(),
        password_env: None,
        username: None,
        password_file: None,
        tls: Default::default(),
        cluster: true,
        // Every node as a seed: whichever is killed, the others are known.
        cluster_seeds: (17001..=17005)
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect(),
        key: "rtest_fo:{pk}".into(),
        format: Format::Hash,
        field: None,
        ttl_seconds: 0,
        key_set_prefix: "rtest_fo:keys:".into(),
    };
    let sink = Arc::new(RedisSink::new("cache", "sinks.cache", config).unwrap());
    sink.ready().await.expect("the stack's Redis Cluster");
    let mut reader = Connection::open(&url(), true).await.unwrap();
    let old: Vec<String> = reader.keys("rtest_fo:*").await.unwrap();
    if !old.is_empty() {
        let _: () = reader.del(old).await.unwrap();
    }
    let before = primaries().await;
    assert_eq!(before.len(), 3, "{before:?}");

    let schema = Arc::new(TableSchema {
        table: TableRef::new("public", "failover"),
        columns: vec![
            Column::new("id", ColumnType::Int64),
            Column::new("round", ColumnType::Int64),
        ],
        key: vec![0],
    });
    // The writer applies rounds of every row, each round newer, retrying a round while the sink
    // calls its error retriable, as the engine does.
    let applying = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let rounds_done = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let writer = {
        let (sink, schema) = (sink.clone(), schema.clone());
        let (applying, stop, rounds_done, retried) = (
            applying.clone(),
            stop.clone(),
            rounds_done.clone(),
            retried.clone(),
        );
        tokio::spawn(async move {
            let mut round = 1;
            while !stop.load(Ordering::SeqCst) {
                let batch: Vec<ChangeEvent> =
                    (1..=ROWS).map(|id| event(&schema, id, round)).collect();
                loop {
                    applying.store(true, Ordering::SeqCst);
                    let t0 = Instant::now();
                    let result = tokio::time::timeout(
                        Duration::from_secs(30),
                        sink.apply(Target::of(&schema.table), &batch),
                    )
                    .await
                    // An apply must answer, if only with an outage: a hang holds the pipeline.
                    .unwrap_or_else(|_| panic!("round {round}: apply hung for 30 s"));
                    if t0.elapsed() > Duration::from_secs(1) {
                        eprintln!(
                            "round {round}: apply took {:?}: {:?}",
                            t0.elapsed(),
                            result.as_ref().err().map(|e| e.to_string())
                        );
                    }
                    applying.store(false, Ordering::SeqCst);
                    match result {
                        Ok(()) => break,
                        Err(e) if e.is_retriable() => {
                            if retried.fetch_add(1, Ordering::SeqCst) < 3 {
                                eprintln!("round {round}, retried: {e}");
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => panic!("round {round}: a failover is not the data's fault: {e}"),
                    }
                }
                rounds_done.store(round, Ordering::SeqCst);
                round += 1;
            }
        })
    };

    while rounds_done.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Kill one primary while a round is being applied.
    let (victim, victim_id) = before[0].clone();
    let pid: i32 =
        std::fs::read_to_string(stack_dir().join(format!("run/redis-cluster-{victim}.pid")))
            .expect("the stack's pidfile of the node")
            .trim()
            .parse()
            .unwrap();
    while !applying.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    let killed_at = Instant::now();
    let round_at_kill = rounds_done.load(Ordering::SeqCst);
    assert_eq!(kill9(pid), 0, "kill -9 {pid}");

    // Its replica is promoted: three primaries again, the victim not among them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let now = primaries().await;
        if now.len() == 3 && !now.iter().any(|(_, id)| *id == victim_id) {
            break now;
        }
        assert!(Instant::now() < deadline, "no failover after 60 s: {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let failover = killed_at.elapsed();
    // Rounds go on after the promotion.
    let target = rounds_done.load(Ordering::SeqCst) + 3;
    let deadline = Instant::now() + Duration::from_secs(120);
    while rounds_done.load(Ordering::SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "writes did not resume after the failover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let last = rounds_done.load(Ordering::SeqCst);
    eprintln!(
        "primary :{victim} killed during round {}; promoted after {failover:?} ({after:?}); \
         {} retried applies; {last} rounds applied",
        round_at_kill + 1,
        retried.load(Ordering::SeqCst),
    );

    // Every row holds the last round, read by a connection of the test's own.
    let reads = (1..=ROWS)
        .map(|id| {
            redis::cmd("HGET")
                .arg(format!("rtest_fo:{id}"))
                .arg("round")
                .clone()
        })
        .collect();
    let stored = reader.run(reads).await.unwrap();
    for (id, got) in (1..=ROWS).zip(stored) {
        let got: Option<String> = redis::from_redis_value(got.unwrap()).unwrap();
        assert_eq!(got, Some(last.to_string()), "row {id}");
    }

    // The node comes back (the stack restarts what is not running) and rejoins as a replica.
    start_cluster();
    let mut back = redis::Client::open(format!("redis://127.0.0.1:{victim}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut back).await.unwrap();
    let role: String = redis::from_redis_value(role[0].clone()).unwrap();
    assert_eq!(
        role, "slave",
        "the old primary rejoins as its successor's replica"
    );
    // A connection of today's topology for the clean-up, which goes to every primary.
    let mut reader = Connection::open(&format!("redis://127.0.0.1:{}", after[0].0), true)
        .await
        .unwrap();
    let left: Vec<String> = reader.keys("rtest_fo:*").await.unwrap();
    let _: () = reader.del(left).await.unwrap();
}

fn kill9(pid: i32) -> i32 {
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .map(|s| s.code().unwrap_or(1))
        .unwrap_or(1)
}
