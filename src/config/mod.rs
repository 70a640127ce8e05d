//! `ripple.toml`: the typed configuration and its start-up validation. Every error names the key to
//! fix; secrets may come from the environment and are masked whenever the config is printed.

pub mod kafka;
mod validate;

pub use kafka::{KafkaConfig, KafkaSasl, KafkaTls, SaslMechanism};

use regex::Regex;
use ripple_sink::TlsFiles;
use ripple_sink::{ConfigError, TableRef};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    /// The database Debezium captures. Only `verify` and `loadgen` connect to it.
    #[serde(default)]
    pub source: Option<SourceConfig>,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// `[sinks.<name>]` sections; each has a `type` and that sink kind's own keys.
    #[serde(default)]
    pub sinks: BTreeMap<String, toml::Table>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Where records that cannot be decoded, and events a sink permanently rejects, go. Without
    /// this section Ripple stops at the first such record (after applying what came before it).
    #[serde(default)]
    pub dead_letter: Option<DeadLetterConfig>,
    #[serde(default)]
    pub decode: DecodeConfig,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; none without this section.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// `ripple run` verifying the sinks against the source in the background; off without it.
    #[serde(default)]
    pub verify: Option<BackgroundVerifyConfig>,
}

/// `[verify]`: live verification inside `ripple run`, one full pass every `interval_s`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackgroundVerifyConfig {
    /// Seconds from the end of one pass to the start of the next.
    #[serde(default = "default_verify_interval_s")]
    pub interval_s: u64,
    /// How long a difference may take to agree when read again (the sinks' lag), in seconds.
    #[serde(default = "default_verify_settle_s")]
    pub settle_s: u64,
    /// Memory one comparison may hold, in MiB (as `ripple verify --max-memory-mb`).
    #[serde(default = "default_verify_memory_mb")]
    pub max_memory_mb: usize,
    /// Only these source tables (SCHEMA.TABLE); default: every table a route gives a sink.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
}

fn default_verify_interval_s() -> u64 {
    300
}

fn default_verify_settle_s() -> u64 {
    60
}

fn default_verify_memory_mb() -> usize {
    128
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` to listen on, e.g. `127.0.0.1:9464`.
    pub listen: String,
    /// A bearer token required on `/metrics` and the dashboard (not on `/healthz` and `/readyz`),
    /// from an environment variable or a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate and key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
}

/// `[metrics.tls]`: the server's certificate (with its chain) and private key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl MetricsConfig {
    pub fn token(&self) -> Result<Option<ripple_sink::Secret>, ConfigError> {
        ripple_sink::read_secret(
            "metrics",
            "token",
            self.token_env.as_deref(),
            self.token_file.as_deref(),
        )
    }
}

/// `[decode]`: connector settings the records themselves do not reveal, and size limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeConfig {
    /// The connector's `binary.handling.mode`: `bytes` (default), `base64`, `base64-url-safe`
    /// or `hex`. Only `bytes` is marked as such in the records.
    #[serde(default)]
    pub binary_handling_mode: crate::decode::BinaryMode,
    /// Set when the connector writes JSON without schemas (`value.converter.schemas.enable=false`).
    #[serde(default)]
    pub schemaless: Option<SchemalessConfig>,
    /// Set when the connector writes Avro (Confluent wire format) through a schema registry.
    #[serde(default)]
    pub avro: Option<AvroConfig>,
    /// A record (key and value) larger than this is dead-lettered undecoded.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// A decoded value (a text, a bytea, a JSON document, an array) larger than this is refused
    /// with its record: what no store downstream is meant to hold (Redis strings end at 512 MB,
    /// an index request at 100 MB by default).
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: usize,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            binary_handling_mode: Default::default(),
            schemaless: None,
            avro: None,
            max_record_bytes: default_max_record_bytes(),
            max_value_bytes: default_max_value_bytes(),
        }
    }
}

fn default_max_record_bytes() -> usize {
    crate::decode::Limits::default().max_record_bytes
}
fn default_max_value_bytes() -> usize {
    crate::decode::Limits::default().max_value_bytes
}

/// `[decode.avro]`: where Avro records' writer schemas are read.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AvroConfig {
    /// The registry's Confluent-compatible API: `http://host:8081` for Confluent's or Karapace,
    /// `http://host:8080/apis/ccompat/v7` for Apicurio.
    pub registry_url: String,
    /// Basic authentication: the user, with the password from `password_env` or `password_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// `ca_file` for an `https://` registry with a private CA.
    #[serde(default, skip_serializing_if = "TlsFiles::is_unset")]
    pub tls: TlsFiles,
}

impl AvroConfig {
    /// What fetches writer schemas from this registry, with its CA and credentials read; errors
    /// name the key.
    pub fn schema_fetcher(&self) -> Result<crate::decode::avro::SchemaFetcher, ConfigError> {
        let key = "decode.avro";
        let ca = match self.tls.read(key)?.ca {
            Some(pem) => Some(reqwest::Certificate::from_pem(&pem).map_err(|e| {
                ConfigError::new(
                    "decode.avro.tls.ca_file",
                    format!("cannot be read as a certificate: {e}"),
                )
            })?),
            None => None,
        };
        let password = ripple_sink::read_secret(
            key,
            "password",
            self.password_env.as_deref(),
            self.password_file.as_deref(),
        )?;
        let auth = match (&self.username, password) {
            (Some(user), password) => Some((
                user.clone(),
                password.unwrap_or_else(|| ripple_sink::Secret::new("")),
            )),
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "decode.avro.username",
                    "is required with password_env or password_file",
                ));
            }
        };
        crate::decode::avro::SchemaFetcher::new(&self.registry_url, ca, auth)
            .map_err(|e| ConfigError::new(key, format!("cannot build an HTTP client for it: {e}")))
    }
}

/// `[decode.schemaless]`: where the column types of records without schemas come from, and the
/// connector's handling modes, which decide how Debezium encoded each type.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SchemalessConfig {
    /// `"source"` (the `[source]` database) or the name of a postgres sink: its tables' columns
    /// give the types.
    #[serde(default)]
    pub types_from: Option<String>,
    #[serde(default)]
    pub time_precision_mode: crate::decode::schemaless::TimePrecisionMode,
    #[serde(default)]
    pub decimal_handling_mode: crate::decode::schemaless::DecimalHandlingMode,
    #[serde(default)]
    pub interval_handling_mode: crate::decode::schemaless::IntervalHandlingMode,
    #[serde(default)]
    pub hstore_handling_mode: crate::decode::schemaless::HstoreHandlingMode,
    /// `"schema.table" = { column = "postgres type", ... }`: declared types, which win over the
    /// catalog's.
    #[serde(default)]
    pub tables: BTreeMap<String, BTreeMap<String, String>>,
}

impl SchemalessConfig {
    pub fn modes(&self) -> crate::decode::schemaless::Modes {
        crate::decode::schemaless::Modes {
            time: self.time_precision_mode,
            decimal: self.decimal_handling_mode,
            interval: self.interval_handling_mode,
            hstore: self.hstore_handling_mode,
        }
    }

    /// Declared tables as (table, column, type), checked.
    pub fn declared(
        &self,
    ) -> Result<Vec<(TableRef, String, crate::decode::schemaless::PgType)>, ConfigError> {
        let mut out = Vec::new();
        for (table, columns) in &self.tables {
            let Some((schema, name)) = table
                .split_once('.')
                .filter(|(s, t)| !s.is_empty() && !t.is_empty())
            else {
                return Err(ConfigError::new(
                    format!("decode.schemaless.tables.{table:?}"),
                    "must be \"schema.table\", as in [decode.schemaless.tables.\"public.orders\"]",
                ));
            };
            for (column, ty) in columns {
                let ty = crate::decode::schemaless::PgType::parse(ty).map_err(|e| {
                    ConfigError::new(
                        format!("decode.schemaless.tables.{table:?}.{column}"),
                        format!("{e}: give a PostgreSQL type such as \"integer\", \"numeric(10,2)\" or \"timestamptz\""),
                    )
                })?;
                out.push((TableRef::new(schema, name), column.clone(), ty));
            }
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// The topic bad records are written to, unchanged, with `ripple.*` headers saying why.
    pub topic: String,
    /// `all` (default): dead-letter every bad record and go on. `none`: stop at the first one.
    #[serde(default)]
    pub tolerance: Tolerance,
    /// The breaker: once one sink has rejected this many events within `rejection_window_s`,
    /// its rejections are no longer dead-lettered: the sink counts as down (retried, consumption
    /// paused) until an apply succeeds again. Default 1,000: a storm of bad rows is seldom bad
    /// rows, and a thousand dead letters are still few enough to replay by hand.
    #[serde(default = "default_max_rejections")]
    pub max_rejections: u64,
    #[serde(default = "default_rejection_window_s")]
    pub rejection_window_s: u64,
    /// The breaker also opens when more than this share of one table's batch (of at least 20
    /// events) is rejected: a store that refuses most of a batch refuses the table, not rows.
    /// Default 0.5; 1.0 turns this rule off.
    #[serde(default = "default_max_rejected_share")]
    pub max_rejected_share: f64,
}

fn default_max_rejections() -> u64 {
    1_000
}
fn default_rejection_window_s() -> u64 {
    60
}
fn default_max_rejected_share() -> f64 {
    0.5
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tolerance {
    #[default]
    All,
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `postgres://user@host:port/db`; the password is given through `password_env` or
    /// `password_file`.
    pub url: String,
    /// Name of an environment variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// A file holding the password (a mounted secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// `disable`, `prefer`, `require`, `verify-ca` or `verify-full`; wins over the URL's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<String>,
    /// CA file and client certificate and key.
    #[serde(default, skip_serializing_if = "TlsFiles::is_unset")]
    pub tls: TlsFiles,
    /// Debezium's `topic.prefix`: lets verify find each table's topic (`<prefix>.<schema>.<table>`)
    /// and so the route, and its options, that brought the table to each sink.
    #[serde(default)]
    pub topic_prefix: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Most events in one batch handed to the sinks.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long to wait for a batch to fill before applying what there is.
    #[serde(default = "default_batch_linger_ms")]
    pub batch_linger_ms: u64,
    /// Retries of a retriable sink failure before Ripple gives up and stops.
    #[serde(default = "default_max_retries")]
    pub max_retries: usize,
    /// First backoff delay; it doubles (with jitter) up to `retry_max_delay_ms`.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_delay_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_delay_ms: u64,
    /// Longest one apply call to one sink may take before it counts as failed (an outage: retried,
    /// never dead-lettered). Default 30 s: a 10,000-event batch takes well under a second on the
    /// stack, so only a store that hangs (a lock held elsewhere, a frozen node) reaches it.
    #[serde(default = "default_apply_timeout_ms")]
    pub apply_timeout_ms: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            batch_size: default_batch_size(),
            batch_linger_ms: default_batch_linger_ms(),
            max_retries: default_max_retries(),
            retry_initial_delay_ms: default_retry_initial_ms(),
            retry_max_delay_ms: default_retry_max_ms(),
            apply_timeout_ms: default_apply_timeout_ms(),
        }
    }
}

impl SourceConfig {
    /// Connection options for the source database; errors name `source.<key>`.
    pub fn connect_options(&self) -> Result<sqlx::postgres::PgConnectOptions, ConfigError> {
        crate::registry::postgres_options("source", &self.address())
    }

    /// The connection keys, as one PostgreSQL address.
    pub fn address(&self) -> ripple_sink::PostgresAddress {
        ripple_sink::PostgresAddress {
            url: self.url.clone(),
            password_env: self.password_env.clone(),
            password_file: self.password_file.clone(),
            sslmode: self.sslmode.clone(),
            tls: self.tls.clone(),
        }
    }
}

/// Sends the events of matching topics to the named sinks, with options for what they write. When
/// several routes match one topic and name one sink, the first of them applies.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Exact topic names or regular expressions starting with `^`.
    pub topics: Vec<String>,
    pub sinks: Vec<String>,
    /// The store-side name for the routed tables, read by each sink in its own way: a table name
    /// for postgres (`{schema}`, `{table}`), a key template for redis (`inventory:{product_id}`),
    /// an index name for elasticsearch (`shop-{table}`). Default: the sink's own naming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Only these columns are written (key columns always are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    /// These columns are not written (key columns always are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Source column name -> name in the store.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rename: BTreeMap<String, String>,
}

fn default_batch_size() -> usize {
    10_000
}
fn default_batch_linger_ms() -> u64 {
    20
}
fn default_max_retries() -> usize {
    10
}
fn default_retry_initial_ms() -> u64 {
    100
}
fn default_retry_max_ms() -> u64 {
    10_000
}
fn default_apply_timeout_ms() -> u64 {
    30_000
}

/// A topic name or pattern, as written in `kafka.topics` or `routes.topics`.
#[derive(Debug, Clone)]
pub enum TopicMatcher {
    Exact(String),
    Pattern(Regex),
}

impl TopicMatcher {
    pub fn parse(key: &str, text: &str) -> Result<Self, ConfigError> {
        if text.starts_with('^') {
            Regex::new(text).map(TopicMatcher::Pattern).map_err(|e| {
                ConfigError::new(key, format!("invalid regular expression {text:?}: {e}"))
            })
        } else if text.is_empty() {
            Err(ConfigError::new(key, "a topic name cannot be empty"))
        } else {
            Ok(TopicMatcher::Exact(text.to_string()))
        }
    }

    pub fn matches(&self, topic: &str) -> bool {
        match self {
            TopicMatcher::Exact(t) => t == topic,
            TopicMatcher::Pattern(r) => r.is_match(topic),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_sinks(path, &[])
    }

    /// Reads and validates a config file whose routes may also name `embedded` sinks: sinks an
    /// embedding program builds itself and hands to the engine builder.
    pub fn load_with_sinks(path: &Path, embedded: &[&str]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("(file)", format!("cannot read {}: {e}", path.display()))
        })?;
        Self::parse_with_sinks(&text, embedded)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_with_sinks(text, &[])
    }

    /// Parses and validates config text; see [`Config::load_with_sinks`].
    pub fn parse_with_sinks(text: &str, embedded: &[&str]) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::new("(file)", e.to_string()))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(toml_error)?;
        config.validate(embedded)?;
        Ok(config)
    }

    /// The config as TOML with every secret masked, for `ripple check-config` and logs.
    pub fn to_masked_toml(&self) -> String {
        let mut copy = self.clone();
        if let Some(s) = copy.source.as_mut() {
            s.url = mask_url(&s.url);
        }
        for (key, value) in copy.kafka.options.iter_mut() {
            if kafka::is_secret_option(key) {
                *value = "****".into();
            }
        }
        for section in copy.sinks.values_mut() {
            for (key, value) in section.iter_mut() {
                if let toml::Value::String(s) = value {
                    if key == "url" || key.ends_with("_url") {
                        *s = mask_url(s);
                    } else if (key.contains("password")
                        || key.contains("secret")
                        || key.contains("token"))
                        && !key.ends_with("_env")
                    {
                        *s = "****".into();
                    }
                }
            }
        }
        toml::to_string_pretty(&copy).unwrap_or_else(|e| format!("# cannot render config: {e}"))
    }
}

/// Replaces the password in `scheme://user:password@host/...` and in a `password=` query parameter
/// with `****`, so errors can name the URL.
pub fn mask_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "****");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let query: Vec<String> = out[q + 1..]
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=****"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{}?{}", &out[..q], query.join("&"));
    }
    out
}

fn toml_error(e: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let mut message = inner.message().to_string();
    let key = if path == "." {
        unknown_field_key(&message).unwrap_or_else(|| "(file)".into())
    } else {
        path
    };
    if message.contains("invalid type: map") && key.contains("options") {
        message.push_str(" (librdkafka property names contain dots: quote them, e.g. \"fetch.wait.max.ms\" = \"10\")");
    }
    ConfigError::new(key, message)
}

fn unknown_field_key(message: &str) -> Option<String> {
    let start = message.find("unknown field `")? + "unknown field `".len();
    let end = message[start..].find('`')? + start;
    Some(message[start..end].to_string())
}

#[cfg(test)]
mod tests;
