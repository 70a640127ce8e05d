//! `[sinks.<name>]` keys of a `type = "elasticsearch"` sink.

use ripple_sink::ConfigError;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSinkConfig {
    #[serde(rename = "type")]
    pub kind: String,
    /// `http(s)://host:port` of one node.
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the password for `username`.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Index per table: `{schema}` and `{table}` are replaced, e.g. `cdc-{table}`.
    #[serde(default = "default_index")]
    pub index: String,
    /// Most operations in one `_bulk` request.
    #[serde(default = "default_bulk_docs")]
    pub bulk_max_docs: usize,
    /// Most bytes in one `_bulk` request body.
    #[serde(default = "default_bulk_bytes")]
    pub bulk_max_bytes: usize,
    /// How long the index remembers deleted documents' versions (`index.gc_deletes`), the window in
    /// which a late, older insert of a deleted row is still recognised as stale.
    #[serde(default = "default_gc_deletes")]
    pub gc_deletes: String,
    /// Index where Ripple records, per index, the version of the last truncate applied.
    #[serde(default = "default_meta_index")]
    pub meta_index: String,
}

fn default_index() -> String {
    "{table}".into()
}
fn default_bulk_docs() -> usize {
    1_000
}
fn default_bulk_bytes() -> usize {
    10 * 1024 * 1024
}
fn default_meta_index() -> String {
    "ripple-meta".into()
}
fn default_gc_deletes() -> String {
    "7d".into()
}

impl ElasticsearchSinkConfig {
    pub fn check(&self, key_prefix: &str) -> Result<(), ConfigError> {
        if !self.index.contains("{table}") {
            return Err(ConfigError::new(
                format!("{key_prefix}.index"),
                "must contain {table}: each table needs an index of its own",
            ));
        }
        if self.bulk_max_docs == 0 {
            return Err(ConfigError::new(
                format!("{key_prefix}.bulk_max_docs"),
                "must be at least 1",
            ));
        }
        if self.password_env.is_some() && self.username.is_none() {
            return Err(ConfigError::new(
                format!("{key_prefix}.username"),
                "is required with password_env",
            ));
        }
        Ok(())
    }

    pub fn password(&self, key_prefix: &str) -> Result<Option<String>, ConfigError> {
        match &self.password_env {
            None => Ok(None),
            Some(var) => std::env::var(var).map(Some).map_err(|_| {
                ConfigError::new(
                    format!("{key_prefix}.password_env"),
                    format!("names environment variable {var}, which is not set"),
                )
            }),
        }
    }
}
