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
    /// The URL names a node of a Redis Cluster: Ripple learns the others from it, sends each
    /// command to its slot's primary, follows redirections and failovers, and keeps its bookkeeping
    /// per hash slot (`{<tag>}` keys beside each row's).
    #[serde(default)]
    pub cluster: bool,
    /// More nodes of the cluster to start from, should the `url`'s be down (`redis://host:port`).
    #[serde(default)]
    pub cluster_seeds: Vec<String>,
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
    /// What the sink connects with: [`client`](Self::client) for one Redis, or a cluster client
    /// seeded with `url` and `cluster_seeds`.
    pub(crate) fn connector(
        &self,
        key_prefix: &str,
    ) -> Result<crate::connection::Client, ConfigError> {
        if !self.cluster {
            return self
                .client(key_prefix)
                .map(crate::connection::Client::Single);
        }
        if !self.tls.is_unset() {
            return Err(ConfigError::new(
                format!("{key_prefix}.tls"),
                "is not supported with cluster = true yet: use rediss:// with a CA the system trusts",
            ));
        }
        let mut nodes = Vec::new();
        for (key, url) in std::iter::once(("url".to_string(), &self.url)).chain(
            self.cluster_seeds
                .iter()
                .enumerate()
                .map(|(i, u)| (format!("cluster_seeds[{i}]"), u)),
        ) {
            let info = url.as_str().into_connection_info().map_err(|e| {
                ConfigError::new(
                    format!("{key_prefix}.{key}"),
                    format!("is not a redis:// or rediss:// URL: {e}"),
                )
            })?;
            if info.redis_settings().db() != 0 {
                return Err(ConfigError::new(
                    format!("{key_prefix}.{key}"),
                    "names a database, but a Redis Cluster has only database 0: drop the /N",
                ));
            }
            nodes.push(info);
        }
        let mut builder = crate::connection::cluster_builder(nodes);
        if let Some(user) = &self.username {
            builder = builder.username(user);
        }
        if let Some(password) = self.password(key_prefix)? {
            builder = builder.password(password.expose());
        }
        builder
            .build()
            .map(crate::connection::Client::Cluster)
            .map_err(|e| {
                ConfigError::new(format!("{key_prefix}.url"), format!("cannot be used: {e}"))
            })
    }

    fn password(&self, key_prefix: &str) -> Result<Option<ripple_sink::Secret>, ConfigError> {
        read_secret(
            key_prefix,
            "password",
            self.password_env.as_deref(),
            self.password_file.as_deref(),
        )
    }

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
        if let Some(password) = self.password(key_prefix)? {
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
        if self.cluster && self.key_set_prefix.contains(['{', '}']) {
            return Err(ConfigError::new(
                format!("{key_prefix}.key_set_prefix"),
                "may not hold { or } with cluster = true: Ripple puts its own hash tag after it",
            ));
        }
        if !self.cluster && !self.cluster_seeds.is_empty() {
            return Err(ConfigError::new(
                format!("{key_prefix}.cluster_seeds"),
                "only applies with cluster = true",
            ));
        }
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

    /// Cluster settings that cannot work name their key.
    #[test]
    fn cluster_settings_are_checked() {
        let cluster = |url: &str| RedisSinkConfig {
            cluster: true,
            ..config(url, None)
        };
        let err = |c: RedisSinkConfig| {
            c.check("sinks.cache")
                .and_then(|()| c.connector("sinks.cache").map(|_| ()))
                .unwrap_err()
                .key
        };
        assert!(cluster("redis://127.0.0.1:7000").connector("s").is_ok());
        assert_eq!(err(cluster("redis://127.0.0.1:7000/3")), "sinks.cache.url");
        let seeds = RedisSinkConfig {
            cluster_seeds: vec!["redis://127.0.0.1:7001".into(), "not a url".into()],
            ..cluster("redis://127.0.0.1:7000")
        };
        assert_eq!(err(seeds.clone()), "sinks.cache.cluster_seeds[1]");
        assert_eq!(
            err(RedisSinkConfig {
                cluster: false,
                ..seeds
            }),
            "sinks.cache.cluster_seeds"
        );
        assert_eq!(
            err(RedisSinkConfig {
                key_set_prefix: "ripple:{keys}:".into(),
                ..cluster("redis://127.0.0.1:7000")
            }),
            "sinks.cache.key_set_prefix"
        );
        assert_eq!(
            err(RedisSinkConfig {
                tls: TlsFiles {
                    ca_file: Some("ca.pem".into()),
                    ..Default::default()
                },
                ..cluster("rediss://localhost:7000")
            }),
            "sinks.cache.tls"
        );
    }
}
