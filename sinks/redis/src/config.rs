//! `[sinks.<name>]` keys of a `type = "redis"` sink.

use redis::IntoConnectionInfo;
use ripple_sink::{ConfigError, TlsFiles, read_secret};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    #[serde(rename = "type")]
    pub kind: String,
    /// `redis://host:port[/db]`, or `rediss://host:port[/db]` for TLS. Give the password through
    /// `password_env` or `password_file`.
    pub url: String,
    /// ACL user (Redis 6+); without it the password is the `default` user's (`requirepass`).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// CA file and client certificate and key, with `rediss://`.
    #[serde(default)]
    pub tls: TlsFiles,
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
    /// A client for the URL, logging in as `username` with the password from `password_env` or
    /// `password_file`; over TLS with the `tls` files for `rediss://`. The password is set on
    /// the connection settings, never pasted into a URL, so no character in it needs escaping.
    pub fn client(&self, key_prefix: &str) -> Result<redis::Client, ConfigError> {
        let url_error = |e: redis::RedisError| {
            ConfigError::new(
                format!("{key_prefix}.url"),
                format!("is not a redis:// or rediss:// URL: {e}"),
            )
        };
        let mut info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(url_error)?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = read_secret(
            key_prefix,
            "password",
            self.password_env.as_deref(),
            self.password_file.as_deref(),
        )? {
            settings = settings.set_password(password.expose());
        }
        info = info.set_redis_settings(settings);
        let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        if self.tls.is_unset() {
            return redis::Client::open(info).map_err(url_error);
        }
        if !tls {
            return Err(ConfigError::new(
                format!("{key_prefix}.tls"),
                "is set, but the url is redis://: use rediss:// for TLS",
            ));
        }
        let material = self.tls.read(key_prefix)?;
        let certificates = redis::TlsCertificates {
            client_tls: material
                .identity
                .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }),
            root_cert: material.ca,
        };
        redis::Client::build_with_tls(info, certificates).map_err(|e| {
            ConfigError::new(format!("{key_prefix}.tls"), format!("cannot be used: {e}"))
        })
    }

    /// `host:port` of the URL, for errors: never the user or password.
    pub fn address(&self) -> String {
        match self
            .url
            .as_str()
            .into_connection_info()
            .as_ref()
            .map(|i| i.addr())
        {
            Ok(redis::ConnectionAddr::Tcp(h, p)) => format!("redis://{h}:{p}"),
            Ok(redis::ConnectionAddr::TcpTls { host, port, .. }) => {
                format!("rediss://{host}:{port}")
            }
            _ => "(the configured url)".into(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, password_file: Option<PathBuf>) -> RedisSinkConfig {
        toml::from_str::<RedisSinkConfig>(&format!(
            "type = \"redis\"\nurl = {url:?}\nusername = \"app\"\n"
        ))
        .map(|c| RedisSinkConfig { password_file, ..c })
        .unwrap()
    }

    /// A password with the characters a URL would need escaped reaches the connection as it is.
    #[test]
    fn passwords_are_set_on_the_connection_not_pasted_into_the_url() {
        let dir = std::env::temp_dir().join(format!("ripple-redis-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "p@ss:w/rd?#%\n").unwrap();
        let client = config("rediss://cache.example.com:6380/2", Some(file))
            .client("sinks.cache")
            .unwrap();
        let info = client.get_connection_info();
        assert_eq!(info.redis_settings().password(), Some("p@ss:w/rd?#%"));
        assert_eq!(info.redis_settings().username(), Some("app"));
        assert_eq!(info.redis_settings().db(), 2);
        assert!(
            matches!(info.addr(), redis::ConnectionAddr::TcpTls { host, port: 6380, .. } if host == "cache.example.com")
        );
        let plain = config("redis://cache.example.com:6379", None);
        assert_eq!(plain.address(), "redis://cache.example.com:6379");
        let with_tls = RedisSinkConfig {
            tls: TlsFiles {
                ca_file: Some(dir.join("ca.pem")),
                ..Default::default()
            },
            ..plain
        };
        assert_eq!(
            with_tls.client("sinks.cache").unwrap_err().key,
            "sinks.cache.tls"
        );
    }
}
