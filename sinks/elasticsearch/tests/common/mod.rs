//! What the elasticsearch sink's tests share: where the search node is, and a sink config.

use ripple_sink_elasticsearch::{ElasticsearchSinkConfig, JsonFields};

pub fn url() -> String {
    std::env::var("RIPPLE_TEST_SEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9251".into())
}

pub fn config(index: &str) -> ElasticsearchSinkConfig {
    ElasticsearchSinkConfig {
        kind: "elasticsearch".into(),
        url: url(),
        username: None,
        password_env: None,
        api_key_env: None,
        api_key_file: None,
        password_file: None,
        tls: Default::default(),
        index: format!("{index}-{{table}}"),
        bulk_max_docs: 3,
        bulk_max_bytes: 1 << 20,
        bulk_concurrency: 2,
        gc_deletes: "1d".into(),
        meta_index: format!("{index}-meta"),
        json_fields: JsonFields::Stored,
    }
}
