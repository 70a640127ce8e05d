//! `[sinks.<name>]` keys of a `type = "elasticsearch"` sink.

use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use ripple_sink::{ConfigError, TlsFiles, read_secret};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSinkConfig {
    #[serde(rename = "type")]
    pub kind: String,
    /// `http(s)://host:port` of one node.
    pub url: String,
    /// Basic authentication: the user, with the password from `password_env` or `password_file`.
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the password for `username`.
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// An API key (`Authorization: ApiKey ...`, the base64 `encoded` form Elasticsearch returns),
    /// from an environment variable or a file; instead of `username`.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// `ca_file`: the CA that signed the cluster's certificate, for `https://` (default: the
    /// system's store). Client certificates are not supported by this sink.
    #[serde(default)]
    pub tls: TlsFiles,
    /// Index per table: `{schema}` and `{table}` are replaced, e.g. `cdc-{table}`.
    #[serde(default = "default_index")]
    pub index: String,
    /// Most operations in one `_bulk` request.
    #[serde(default = "default_bulk_docs")]
    pub bulk_max_docs: usize,
    /// Most bytes in one `_bulk` request body.
    #[serde(default = "default_bulk_bytes")]
    pub bulk_max_bytes: usize,
    /// Most `_bulk` requests of a batch in flight at once: the cluster indexes one while the next
    /// is built and sent. External versions make the order they land in irrelevant.
    #[serde(default = "default_bulk_concurrency")]
    pub bulk_concurrency: usize,
    /// How long the index remembers deleted documents' versions (`index.gc_deletes`), the window in
    /// which a late, older insert of a deleted row is still recognised as stale.
    #[serde(default = "default_gc_deletes")]
    pub gc_deletes: String,
    /// Index where Ripple records, per index, the version of the last truncate applied.
    #[serde(default = "default_meta_index")]
    pub meta_index: String,
    /// How JSON columns (`json`, `jsonb`) are mapped: `stored` (any shape, kept in `_source`, not
    /// searchable), `flat` (`flat_object` on OpenSearch, `flattened` on Elasticsearch: objects of
    /// any shape, searchable by path; a value that is not an object is refused) or `dynamic`
    /// (the index guesses from the first document, and refuses later ones of another shape).
    #[serde(default)]
    pub json_fields: JsonFields,
}

/// `json_fields`: see [`ElasticsearchSinkConfig::json_fields`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonFields {
    #[default]
    Stored,
    Flat,
    Dynamic,
}

fn default_index() -> String {
    "{table}".into()
}
fn default_bulk_docs() -> usize {
    1_000
}
fn default_bulk_concurrency() -> usize {
    2
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
        if self.bulk_concurrency == 0 {
            return Err(ConfigError::new(
                format!("{key_prefix}.bulk_concurrency"),
                "must be at least 1 (1 sends one `_bulk` request at a time)",
            ));
        }
        let password = self.password_env.is_some() || self.password_file.is_some();
        if password && self.username.is_none() {
            return Err(ConfigError::new(
                format!("{key_prefix}.username"),
                "is required with password_env or password_file",
            ));
        }
        if self.username.is_some() && (self.api_key_env.is_some() || self.api_key_file.is_some()) {
            return Err(ConfigError::new(
                format!("{key_prefix}.api_key_env"),
                "cannot be combined with username: authenticate with a user or an API key",
            ));
        }
        if self.tls.cert_file.is_some() || self.tls.key_file.is_some() {
            return Err(ConfigError::new(
                format!("{key_prefix}.tls.cert_file"),
                "is not supported by the elasticsearch sink: authenticate with username or api_key_env",
            ));
        }
        Ok(())
    }

    /// The credentials to send: basic auth or an API key, read from the environment or files.
    pub fn credentials(&self, key_prefix: &str) -> Result<Option<Credentials>, ConfigError> {
        if let Some(key) = read_secret(
            key_prefix,
            "api_key",
            self.api_key_env.as_deref(),
            self.api_key_file.as_deref(),
        )? {
            return Ok(Some(Credentials::EncodedApiKey(key.expose().to_string())));
        }
        let Some(user) = &self.username else {
            return Ok(None);
        };
        let password = read_secret(
            key_prefix,
            "password",
            self.password_env.as_deref(),
            self.password_file.as_deref(),
        )?;
        Ok(Some(Credentials::Basic(
            user.clone(),
            password.map(|p| p.expose().to_string()).unwrap_or_default(),
        )))
    }

    /// How the server's certificate is checked: against `tls.ca_file`, or the system's store.
    pub fn cert_validation(&self, key_prefix: &str) -> Result<CertificateValidation, ConfigError> {
        match self.tls.read(key_prefix)?.ca {
            None => Ok(CertificateValidation::Default),
            Some(pem) => Certificate::from_pem(&pem)
                .map(CertificateValidation::Full)
                .map_err(|e| {
                    ConfigError::new(
                        format!("{key_prefix}.tls.ca_file"),
                        format!("cannot be read as a certificate: {e}"),
                    )
                }),
        }
    }
}
