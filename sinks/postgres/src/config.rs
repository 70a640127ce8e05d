//! `[sinks.<name>]` keys of a `type = "postgres"` sink.

use ripple_sink::{ConfigError, TlsFiles, read_secret};
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    #[serde(rename = "type")]
    pub kind: String,
    /// `postgres://user@host:port/database`; libpq's `sslmode`, `sslrootcert`, `sslcert` and
    /// `sslkey` parameters work here too. Give the password through `password_env` or
    /// `password_file`.
    pub url: String,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (a mounted secret).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `disable`, `prefer`, `require`, `verify-ca` or `verify-full`; wins over the URL's.
    #[serde(default)]
    pub sslmode: Option<String>,
    /// CA file (the server's issuer) and client certificate and key.
    #[serde(default)]
    pub tls: TlsFiles,
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

/// How to reach and log in to a PostgreSQL server: a sink's or `[source]`'s keys.
#[derive(Debug, Clone, Copy)]
pub struct ConnectKeys<'a> {
    pub url: &'a str,
    pub password_env: Option<&'a str>,
    pub password_file: Option<&'a Path>,
    pub sslmode: Option<&'a str>,
    pub tls: &'a TlsFiles,
}

/// Connection options from a config section's keys (the password is read from the environment or
/// a file, never from `ripple.toml`); errors name `<key_prefix>.<key>`.
pub fn connect_options(
    key_prefix: &str,
    keys: ConnectKeys<'_>,
) -> Result<PgConnectOptions, ConfigError> {
    let mut options = PgConnectOptions::from_str(keys.url).map_err(|e| {
        ConfigError::new(
            format!("{key_prefix}.url"),
            format!("is not a postgres:// URL: {e}"),
        )
    })?;
    if let Some(password) = read_secret(
        key_prefix,
        "password",
        keys.password_env,
        keys.password_file,
    )? {
        options = options.password(password.expose());
    }
    if let Some(mode) = keys.sslmode {
        let mode = PgSslMode::from_str(mode).map_err(|_| {
            ConfigError::new(
                format!("{key_prefix}.sslmode"),
                format!(
                    "{mode:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ),
            )
        })?;
        options = options.ssl_mode(mode);
    }
    let material = keys.tls.read(key_prefix)?;
    if let Some(ca) = material.ca {
        options = options.ssl_root_cert_from_pem(ca);
    }
    if let Some((cert, key)) = material.identity {
        options = options
            .ssl_client_cert_from_pem(cert)
            .ssl_client_key_from_pem(key);
    }
    Ok(options)
}

/// Where `options` points, for errors: `host:port/database`, never the user or password.
pub fn address(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    )
}

impl PostgresSinkConfig {
    /// The connection keys, as verify reaches the replica with them.
    pub fn address(&self) -> ripple_sink::PostgresAddress {
        ripple_sink::PostgresAddress {
            url: self.url.clone(),
            password_env: self.password_env.clone(),
            password_file: self.password_file.clone(),
            sslmode: self.sslmode.clone(),
            tls: self.tls.clone(),
        }
    }

    pub fn connect_options(&self, key_prefix: &str) -> Result<PgConnectOptions, ConfigError> {
        let options = connect_options(
            key_prefix,
            ConnectKeys {
                url: &self.url,
                password_env: self.password_env.as_deref(),
                password_file: self.password_file.as_deref(),
                sslmode: self.sslmode.as_deref(),
                tls: &self.tls,
            },
        )?;
        if self.schema.as_deref() == Some("") {
            return Err(ConfigError::new(
                format!("{key_prefix}.schema"),
                "cannot be empty: leave it out to keep each table's source schema",
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new(
                format!("{key_prefix}.max_connections"),
                "must be at least 1",
            ));
        }
        Ok(options.application_name("ripple"))
    }
}
