//! `[sinks.<name>]` keys of a `type = "redis"` sink.

use ripple_sink::ConfigError;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    #[serde(rename = "type")]
    pub kind: String,
    /// `redis://host:port[/db]`. Give a password through `password_env`.
    pub url: String,
    #[serde(default)]
    pub password_env: Option<String>,
    /// Key per row: `{schema}`, `{table}`, `{pk}` (key columns joined by `:`) and any key column by
    /// name, e.g. `inventory:{product_id}`.
    #[serde(default = "default_key")]
    pub key: String,
    #[serde(default)]
    pub format: Format,
    /// The column stored as the key's value when `format = "string"`.
    #[serde(default)]
    pub field: Option<String>,
    /// Expire keys this many seconds after their last write; 0 keeps them.
    #[serde(default)]
    pub ttl_seconds: u64,
    /// Prefix of Ripple's per-table bookkeeping keys (`<prefix><sink>:<schema>.<table>`: the set of
    /// keys written, used to truncate a table, plus `:versions` and `:truncated`).
    #[serde(default = "default_key_set_prefix")]
    pub key_set_prefix: String,
}

/// How a row is stored under its key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A hash, one field per non-null column.
    #[default]
    Hash,
    /// A JSON object as a string.
    Json,
    /// One column's value as a plain string (`field`).
    String,
}

fn default_key() -> String {
    "{table}:{pk}".into()
}

fn default_key_set_prefix() -> String {
    "ripple:keys:".into()
}

impl RedisSinkConfig {
    /// The URL with the password from `password_env` filled in.
    pub fn connection_url(&self, key_prefix: &str) -> Result<String, ConfigError> {
        let Some(var) = &self.password_env else {
            return Ok(self.url.clone());
        };
        let password = std::env::var(var).map_err(|_| {
            ConfigError::new(
                format!("{key_prefix}.password_env"),
                format!("names environment variable {var}, which is not set"),
            )
        })?;
        let Some(rest) = self.url.strip_prefix("redis://") else {
            return Err(ConfigError::new(
                format!("{key_prefix}.url"),
                "must start with redis:// to take a password",
            ));
        };
        Ok(format!("redis://:{password}@{rest}"))
    }

    pub fn check(&self, key_prefix: &str) -> Result<(), ConfigError> {
        if self.format == Format::String && self.field.is_none() {
            return Err(ConfigError::new(
                format!("{key_prefix}.field"),
                "is required with format = \"string\": name the column to store",
            ));
        }
        if self.format != Format::String && self.field.is_some() {
            return Err(ConfigError::new(
                format!("{key_prefix}.field"),
                "only applies to format = \"string\"",
            ));
        }
        Ok(())
    }
}
