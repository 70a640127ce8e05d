//! The sink contract (`ripple_sink::testkit::conformance`) against the stack's Redis and its Redis
//! Cluster, rows kept as hashes and read back with a connection of the test's own.

use async_trait::async_trait;
use redis::AsyncCommands;
use ripple_sink::testkit::conformance::{Store, Stored, assert_sink_contract};
use ripple_sink::{Sink, TableRef, Value};
use ripple_sink_redis::{Connection, Format, RedisSink, RedisSinkConfig};
use std::collections::HashMap;
use std::sync::Arc;

const PREFIX: &str = "conformance";

fn url(cluster: bool) -> String {
    match cluster {
        false => std::env::var("RIPPLE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:16379".into()),
        true => std::env::var("RIPPLE_TEST_REDIS_CLUSTER_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:17000".into()),
    }
}

fn config(url: String, cluster: bool) -> RedisSinkConfig {
    RedisSinkConfig {
        kind: "redis".into(),
        url,
        password_env: None,
        username: None,
        password_file: None,
        tls: Default::default(),
        cluster,
        cluster_seeds: Vec::new(),
        key: format!("{PREFIX}:{{table}}:{{pk}}"),
        format: Format::Hash,
        field: None,
        ttl_seconds: 0,
        key_set_prefix: format!("{PREFIX}:keys:"),
    }
}

struct Cache {
    sink: RedisSink,
    /// The test's own connection.
    reader: Connection,
}

fn key(table: &TableRef, id: i64) -> String {
    format!("{PREFIX}:{}:{id}", table.name)
}

#[async_trait]
impl Store for Cache {
    fn sink(&self) -> &dyn Sink {
        &self.sink
    }

    fn unreachable(&self) -> Arc<dyn Sink> {
        Arc::new(
            RedisSink::new(
                "down",
                "sinks.down",
                config("redis://127.0.0.1:1".into(), false),
            )
            .unwrap(),
        )
    }

    async fn row(&self, table: &TableRef, id: i64) -> Option<Stored> {
        let mut conn = self.reader.clone();
        let fields: HashMap<String, String> = conn.hgetall(key(table, id)).await.unwrap();
        (!fields.is_empty()).then(|| Stored {
            qty: fields.get("qty").cloned(),
            note: fields.get("note").cloned(),
        })
    }

    /// Redis takes any value: the row's key holding a string makes the hash write fail.
    async fn refuse(&self, table: &TableRef, id: i64) -> Value {
        let mut conn = self.reader.clone();
        let _: () = conn.set(key(table, id), "not a hash").await.unwrap();
        Value::Int(2)
    }
}

#[tokio::test]
async fn the_redis_sink_keeps_the_sink_contract() {
    keeps_the_contract(false).await
}

#[tokio::test]
async fn the_redis_sink_keeps_the_sink_contract_on_a_cluster() {
    keeps_the_contract(true).await
}

async fn keeps_the_contract(cluster: bool) {
    let mut reader = Connection::open(&url(cluster), cluster)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Redis at {} is not reachable ({e}): run scripts/stack up",
                url(cluster)
            )
        });
    let old: Vec<String> = reader.keys(format!("{PREFIX}:*")).await.unwrap();
    if !old.is_empty() {
        let _: () = reader.del(old).await.unwrap();
    }
    let sink = RedisSink::new("cache", "sinks.cache", config(url(cluster), cluster)).unwrap();
    sink.ready().await.unwrap();
    assert_sink_contract(&Cache { sink, reader }).await;
}
