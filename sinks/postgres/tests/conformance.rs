//! The sink contract (`ripple_sink::testkit::conformance`) against the stack's replica PostgreSQL,
//! read back with a connection of the test's own.

use async_trait::async_trait;
use ripple_sink::testkit::conformance::{Store, Stored, assert_sink_contract};
use ripple_sink::{Sink, TableRef};
use ripple_sink_postgres::{PostgresSink, PostgresSinkConfig};
use sqlx::PgPool;
use std::sync::Arc;

const SCHEMA: &str = "conformance";

fn url() -> String {
    std::env::var("RIPPLE_TEST_REPLICA_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:15433/replica".into())
}

fn config(url: String) -> PostgresSinkConfig {
    PostgresSinkConfig {
        kind: "postgres".into(),
        url,
        password_env: None,
        sslmode: None,
        password_file: None,
        tls: Default::default(),
        schema: Some(SCHEMA.into()),
        create_tables: true,
        max_connections: 2,
        exactly_once: false,
    }
}

struct Replica {
    sink: PostgresSink,
    /// The test's own connection.
    reader: PgPool,
}

#[async_trait]
impl Store for Replica {
    fn sink(&self) -> &dyn Sink {
        &self.sink
    }

    fn unreachable(&self) -> Arc<dyn Sink> {
        let config = config("postgres://postgres@127.0.0.1:1/replica".into());
        Arc::new(PostgresSink::new("down", "sinks.down", config).unwrap())
    }

    async fn row(&self, table: &TableRef, id: i64) -> Option<Stored> {
        let sql = format!(
            "SELECT qty::text, note FROM \"{SCHEMA}\".\"{}\" WHERE id = $1",
            table.name
        );
        let row: Option<(Option<String>, Option<String>)> =
            match sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&self.reader)
                .await
            {
                Ok(row) => row,
                // No table yet: nothing stored.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => None,
                Err(e) => panic!("reading {table} back: {e}"),
            };
        row.map(|(qty, note)| Stored { qty, note })
    }
}

#[tokio::test]
async fn the_postgres_sink_keeps_the_sink_contract() {
    let reader = PgPool::connect(&url()).await.unwrap_or_else(|e| {
        panic!(
            "replica PostgreSQL at {} is not reachable ({e}): run scripts/stack up",
            url()
        )
    });
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{SCHEMA}\" CASCADE"
    )))
    .execute(&reader)
    .await
    .unwrap();
    let sink = PostgresSink::new("replica", "sinks.replica", config(url())).unwrap();
    sink.ready().await.unwrap();
    assert_sink_contract(&Replica { sink, reader }).await;
}
