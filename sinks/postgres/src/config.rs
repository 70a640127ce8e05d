//! `[sinks.<name>]` keys of a `type = "postgres"` sink.

use ripple_sink::ConfigError;
use serde::Deserialize;
use sqlx::postgres::PgConnectOptions;
use std::str::FromStr;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    #[serde(rename = "type")]
    pub kind: String,
    /// `postgres://user@host:port/database`. Give the password through `password_env`.
    pub url: String,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Schema every table is written to; by default each table keeps its source schema.
    #[serde(default)]
    pub schema: Option<String>,
    /// Create missing tables (and add missing columns) from the change stream's schema.
    #[serde(default = "yes")]
    pub create_tables: bool,
    #[serde(default = "default_connections")]
    pub max_connections: u32,
    /// Keep the Kafka offsets of what each table holds in `_ripple.offsets`, written in the same
    /// transaction as the rows, and start partitions that only this sink owns from them.
    #[serde(default)]
    pub exactly_once: bool,
}

fn yes() -> bool {
    true
}

fn default_connections() -> u32 {
    4
}

/// Connection options from a config section's `url` and `password_env` (the password is read from
/// the environment, never from the file); errors name `<key_prefix>.url` / `.password_env`.
pub fn connect_options(
    key_prefix: &str,
    url: &str,
    password_env: Option<&str>,
) -> Result<PgConnectOptions, ConfigError> {
    let mut options = PgConnectOptions::from_str(url).map_err(|e| {
        ConfigError::new(
            format!("{key_prefix}.url"),
            format!("is not a postgres:// URL: {e}"),
        )
    })?;
    if let Some(var) = password_env {
        let password = std::env::var(var).map_err(|_| {
            ConfigError::new(
                format!("{key_prefix}.password_env"),
                format!("names environment variable {var}, which is not set"),
            )
        })?;
        options = options.password(&password);
    }
    Ok(options)
}

impl PostgresSinkConfig {
    pub fn connect_options(&self, key_prefix: &str) -> Result<PgConnectOptions, ConfigError> {
        let options = connect_options(key_prefix, &self.url, self.password_env.as_deref())?;
        if self.max_connections == 0 {
            return Err(ConfigError::new(
                format!("{key_prefix}.max_connections"),
                "must be at least 1",
            ));
        }
        Ok(options.application_name("ripple"))
    }
}
