//! The sink contract (`ripple_sink::testkit::conformance`) against the stack's OpenSearch, read
//! back with a client of the test's own (real-time GETs, so no refresh is needed).

use async_trait::async_trait;
use elasticsearch::Elasticsearch;
use elasticsearch::http::transport::Transport;
use elasticsearch::indices::IndicesDeleteParts;
use ripple_sink::testkit::conformance::{Store, Stored, assert_sink_contract};
use ripple_sink::{Sink, TableRef};
use ripple_sink_elasticsearch::ElasticsearchSink;
use serde_json::Value as Json;
use std::sync::Arc;

mod common;
use common::{config, url};

const PREFIX: &str = "conformance";

struct Index {
    sink: ElasticsearchSink,
    /// The test's own client.
    reader: Elasticsearch,
}

fn text(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::Null => None,
        Json::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[async_trait]
impl Store for Index {
    fn sink(&self) -> &dyn Sink {
        &self.sink
    }

    fn unreachable(&self) -> Arc<dyn Sink> {
        let mut down = config(PREFIX);
        down.url = "http://127.0.0.1:1".into();
        Arc::new(ElasticsearchSink::new("down", "sinks.down", down).unwrap())
    }

    async fn row(&self, table: &TableRef, id: i64) -> Option<Stored> {
        let index = format!("{PREFIX}-{}", table.name);
        let id = id.to_string();
        let response = self
            .reader
            .get(elasticsearch::GetParts::IndexId(&index, &id))
            .send()
            .await
            .unwrap();
        if response.status_code().as_u16() == 404 {
            return None;
        }
        let body: Json = response.json().await.unwrap();
        let source = body.get("_source")?;
        Some(Stored {
            qty: text(source.get("qty")),
            note: text(source.get("note")),
        })
    }
}

#[tokio::test]
async fn the_elasticsearch_sink_keeps_the_sink_contract() {
    let reader = Elasticsearch::new(Transport::single_node(&url()).unwrap());
    let _ = reader
        .indices()
        .delete(IndicesDeleteParts::Index(&[&format!("{PREFIX}-*")]))
        .send()
        .await;
    let sink = ElasticsearchSink::new("search", "sinks.search", config(PREFIX)).unwrap();
    sink.ready().await.unwrap_or_else(|e| {
        panic!(
            "search node at {} is not reachable ({e}): run scripts/stack up",
            url()
        )
    });
    assert_sink_contract(&Index { sink, reader }).await;
}
