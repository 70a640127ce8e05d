//! Redis refusing writes because of its own state is an outage, not bad data: at `maxmemory` with
//! `noeviction` every write answers OOM, and the sink must call that retriable (never a reason to
//! dead-letter the event), then apply once memory is raised. A separate test binary: it changes the
//! shared Redis' configuration, which other tests must not see.

use redis::AsyncCommands;
use ripple_sink::{
    ChangeEvent, Column, ColumnType, Op, Origin, Sink, TableRef, TableSchema, Target, Value,
    Version,
};
use ripple_sink_redis::{Format, RedisSink, RedisSinkConfig};
use std::sync::Arc;

fn url() -> String {
    std::env::var("RIPPLE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:16379".into())
}

fn event(s: &Arc<TableSchema>, id: i64, change: u64) -> ChangeEvent {
    ChangeEvent {
        schema: s.clone(),
        op: Op::Upsert,
        row: Some(vec![Value::Int(id), Value::Text(format!("row {id}"))]),
        key: vec![Value::Int(id)],
        before: None,
        version: Version { commit: 1, change },
        source_ts_ms: 0,
        origin: Origin {
            topic: Arc::from("t"),
            partition: 0,
            offset: change as i64,
        },
    }
}

/// Puts `maxmemory` back however the test ends.
struct Restore(redis::Client, String);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Ok(mut c) = self.0.get_connection() {
            let _: redis::RedisResult<()> = redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory")
                .arg(&self.1)
                .query(&mut c);
        }
    }
}

#[tokio::test]
async fn out_of_memory_is_an_outage_and_applies_once_memory_is_raised() {
    // Keys of this run only: a version left by an earlier run would make the change stale, and a
    // stale change writes nothing, so Redis would have nothing to refuse.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("outage_oom_{run}");
    let config = RedisSinkConfig {
        kind: "redis".into(),
        url: url(),
        username: None,
        password_env: None,
        password_file: None,
        tls: Default::default(),
        cluster: false,
        cluster_seeds: Vec::new(),
        key: format!("{prefix}:{{pk}}"),
        format: Format::Hash,
        field: None,
        ttl_seconds: 0,
        key_set_prefix: format!("{prefix}:keys:"),
    };
    let sink = RedisSink::new("cache", "sinks.cache", config).unwrap();
    sink.ready()
        .await
        .expect("the stack's Redis: run scripts/stack up");
    let client = redis::Client::open(url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let before: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _restore = Restore(client.clone(), before[1].clone());
    let policy: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(policy[1], "noeviction", "the stack's Redis evicts nothing");

    let s = Arc::new(TableSchema {
        table: TableRef::new("public", "outage_oom"),
        columns: vec![
            Column {
                name: "id".into(),
                ty: ColumnType::Int64,
                nullable: false,
                source_type: None,
                default: None,
            },
            Column {
                name: "note".into(),
                ty: ColumnType::Text,
                nullable: true,
                source_type: None,
                default: None,
            },
        ],
        key: vec![0],
    });
    sink.apply(Target::of(&s.table), &[event(&s, 1, 1)])
        .await
        .unwrap();

    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = sink
        .apply(Target::of(&s.table), &[event(&s, 2, 2)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("OOM"), "{err}");
    assert!(
        err.is_retriable(),
        "an OOM refusal must be an outage: {err}"
    );

    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(&before[1])
        .query_async(&mut conn)
        .await
        .unwrap();
    sink.apply(Target::of(&s.table), &[event(&s, 2, 2)])
        .await
        .unwrap();
    let note: String = conn.hget(format!("{prefix}:2"), "note").await.unwrap();
    assert_eq!(note, "row 2");
}
