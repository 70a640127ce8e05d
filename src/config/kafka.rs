//! `[kafka]`: the brokers, topics, TLS and SASL, and the one place they become a librdkafka
//! configuration (`client_config`): every Kafka client Ripple creates (the consumer, the dead-letter
//! producer and reader, replay's readers, the start-up probe) starts from it.

use rdkafka::config::ClientConfig;
use ripple_sink::{ConfigError, TlsFiles, read_secret};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`
    pub brokers: String,
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Topics to consume: exact names, or regular expressions starting with `^`.
    pub topics: Vec<String>,
    /// Where a new consumer group starts: `earliest` (default) or `latest`.
    #[serde(default = "default_offset_reset")]
    pub auto_offset_reset: String,
    /// TLS to the brokers (`security.protocol` SSL, or SASL_SSL with `[kafka.sasl]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,
    /// SASL authentication (SASL_PLAINTEXT, or SASL_SSL with `[kafka.tls]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
    /// Extra librdkafka properties, passed through as they are (they win over the typed keys).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// `[kafka.tls]`: present means the brokers are spoken to over TLS.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTls {
    /// PEM file of the CA that signed the brokers' certificates (default: the system's store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM), for brokers that authenticate clients by certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The password of an encrypted `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_password_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_password_file: Option<PathBuf>,
    /// Check that a broker's certificate names the host connected to (default true).
    #[serde(default = "yes")]
    pub verify_hostname: bool,
}

impl KafkaTls {
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
        }
    }
}

/// `[kafka.sasl]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    /// PLAIN and SCRAM: the user, and its password from `password_env` or `password_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// OAUTHBEARER through OIDC client credentials: the token endpoint, the client, its secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc_endpoint_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "OAUTHBEARER")]
    OauthBearer,
}

impl SaslMechanism {
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OauthBearer => "OAUTHBEARER",
        }
    }
}

fn yes() -> bool {
    true
}

fn default_group_id() -> String {
    "ripple".into()
}

fn default_offset_reset() -> String {
    "earliest".into()
}

/// What the client is for: producers get only the settings that apply to every client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Consumer,
    Producer,
}

/// librdkafka's configuration for one client: brokers, `client.id`, the typed `[kafka.tls]` and
/// `[kafka.sasl]` settings with their secrets read from the environment or files, then the raw
/// `kafka.options` (which win, so anything librdkafka knows can still be set).
pub fn client_config(
    kafka: &KafkaConfig,
    client_id: &str,
    role: Role,
) -> Result<ClientConfig, ConfigError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &kafka.brokers)
        .set("client.id", client_id);
    let tls = kafka.tls.as_ref();
    let sasl = kafka.sasl.as_ref();
    let protocol = match (tls.is_some(), sasl.is_some()) {
        (false, false) => None,
        (true, false) => Some("ssl"),
        (false, true) => Some("sasl_plaintext"),
        (true, true) => Some("sasl_ssl"),
    };
    if let Some(p) = protocol {
        cc.set("security.protocol", p);
    }
    if let Some(tls) = tls {
        let material = tls.files().read("kafka")?;
        // PEM strings rather than file paths: the files are read (and checked) once, here, and
        // a missing file is named with its key instead of as a librdkafka error.
        if let Some(ca) = material.ca {
            cc.set("ssl.ca.pem", pem_text("kafka.tls.ca_file", ca)?);
        }
        if let Some((cert, key)) = material.identity {
            cc.set(
                "ssl.certificate.pem",
                pem_text("kafka.tls.cert_file", cert)?,
            );
            cc.set("ssl.key.pem", pem_text("kafka.tls.key_file", key)?);
        }
        if let Some(pw) = read_secret(
            "kafka.tls",
            "key_password",
            tls.key_password_env.as_deref(),
            tls.key_password_file.as_deref(),
        )? {
            cc.set("ssl.key.password", pw.expose());
        }
        cc.set(
            "ssl.endpoint.identification.algorithm",
            if tls.verify_hostname { "https" } else { "none" },
        );
    }
    if let Some(sasl) = sasl {
        cc.set("sasl.mechanism", sasl.mechanism.as_librdkafka());
        match sasl.mechanism {
            SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
                let user = sasl.username.as_deref().ok_or_else(|| {
                    ConfigError::new("kafka.sasl.username", "is required with this mechanism")
                })?;
                let password = read_secret(
                    "kafka.sasl",
                    "password",
                    sasl.password_env.as_deref(),
                    sasl.password_file.as_deref(),
                )?
                .ok_or_else(|| {
                    ConfigError::new(
                        "kafka.sasl.password_env",
                        "is required with this mechanism (or password_file)",
                    )
                })?;
                cc.set("sasl.username", user)
                    .set("sasl.password", password.expose());
            }
            SaslMechanism::OauthBearer => {
                let oidc = sasl.oidc_endpoint_url.as_deref().ok_or_else(|| {
                    ConfigError::new(
                        "kafka.sasl.oidc_endpoint_url",
                        "is required with OAUTHBEARER: the identity provider's token endpoint",
                    )
                })?;
                let id = sasl.client_id.as_deref().ok_or_else(|| {
                    ConfigError::new("kafka.sasl.client_id", "is required with OAUTHBEARER")
                })?;
                let secret = read_secret(
                    "kafka.sasl",
                    "client_secret",
                    sasl.client_secret_env.as_deref(),
                    sasl.client_secret_file.as_deref(),
                )?
                .ok_or_else(|| {
                    ConfigError::new(
                        "kafka.sasl.client_secret_env",
                        "is required with OAUTHBEARER (or client_secret_file)",
                    )
                })?;
                cc.set("sasl.oauthbearer.method", "oidc")
                    .set("sasl.oauthbearer.token.endpoint.url", oidc)
                    .set("sasl.oauthbearer.client.id", id)
                    .set("sasl.oauthbearer.client.secret", secret.expose());
                if let Some(scope) = &sasl.scope {
                    cc.set("sasl.oauthbearer.scope", scope);
                }
            }
        }
    }
    for (k, v) in &kafka.options {
        if role == Role::Consumer || applies_to_every_client(k) {
            cc.set(k, v);
        }
    }
    Ok(cc)
}

/// Settings a producer shares with the consumer; consumer-only options would only draw
/// librdkafka's "ignored" warnings on it.
fn applies_to_every_client(key: &str) -> bool {
    [
        "security.",
        "sasl.",
        "ssl.",
        "ssl_",
        "socket.",
        "broker.",
        "client.dns",
        "enable.ssl",
    ]
    .iter()
    .any(|p| key.starts_with(p))
}

fn pem_text(key: &str, bytes: Vec<u8>) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|_| ConfigError::new(key, "is not a text (PEM) file"))
}

/// librdkafka property names whose values are secrets or key material, masked when the config
/// is printed.
pub fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "jaas",
        "key.pem",
        "sasl.oauthbearer.config",
        "credential",
    ]
    .iter()
    .any(|s| key.contains(s))
}
