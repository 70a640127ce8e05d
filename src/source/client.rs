//! Kafka clients beyond the consumer: the start-up probe that names what is wrong with the brokers.
//! Every client starts from `config::kafka::client_config`, so the brokers, TLS and SASL settings
//! can never differ between them.

use crate::config::KafkaConfig;
pub use crate::config::kafka::{Role, client_config};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::producer::{BaseProducer, Producer};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Checks that the brokers answer, within `timeout`, with the security settings every client
/// uses. librdkafka reports a refused login, a failed TLS handshake or a listener speaking another
/// protocol only as log lines and error events, which a consumer delivers only when it is polled:
/// the probe is a producer, polled while it asks for metadata, so the error can say why. A cause
/// that does not go away by waiting (credentials, certificates, protocol) ends it at once.
pub fn probe(kafka: &KafkaConfig, timeout: Duration) -> Result<(), String> {
    let context = Probe::default();
    let config = client_config(kafka, "ripple-probe", Role::Producer).map_err(|e| e.to_string())?;
    let producer: BaseProducer<Probe> = config
        .create_with_context(context)
        .map_err(|e| format!("invalid Kafka setting (kafka.options or kafka.*): {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = producer
            .client()
            .fetch_metadata(None, Duration::from_millis(500));
        producer.poll(Duration::from_millis(100));
        let cause = producer.context().cause();
        match attempt {
            Ok(_) => return Ok(()),
            Err(e) => {
                let fatal = cause.as_deref().is_some_and(is_fatal);
                if fatal || Instant::now() >= deadline {
                    return Err(match cause {
                        Some(cause) if cause.contains("certificate verify failed") => {
                            format!("{cause} ({e}){}", certificate_diagnosis(kafka))
                        }
                        Some(cause) => format!("{cause} ({e})"),
                        None => format!("{e} (no answer within {} s)", timeout.as_secs()),
                    });
                }
            }
        }
    }
}

/// librdkafka says only "certificate verify failed" for both an untrusted issuer and a certificate
/// that does not name the host: a second handshake with the first broker, ignoring the name, tells
/// them apart.
fn certificate_diagnosis(kafka: &KafkaConfig) -> String {
    let Some(tls) = &kafka.tls else {
        return String::new();
    };
    let Some(broker) = kafka.brokers.split(',').next().map(str::trim) else {
        return String::new();
    };
    let host = broker
        .rsplit_once(':')
        .map_or(broker, |(h, _)| h)
        .trim_matches(['[', ']']);
    let mut builder = native_tls::TlsConnector::builder();
    builder.danger_accept_invalid_hostnames(true);
    if let Some(ca) = tls
        .files()
        .read("kafka")
        .ok()
        .and_then(|m| m.ca)
        .and_then(|pem| native_tls::Certificate::from_pem(&pem).ok())
    {
        builder
            .disable_built_in_roots(true)
            .add_root_certificate(ca);
    }
    let Ok(connector) = builder.build() else {
        return String::new();
    };
    let stream = std::net::ToSocketAddrs::to_socket_addrs(broker)
        .ok()
        .and_then(|mut addrs| {
            addrs
                .find_map(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok())
        });
    let Some(stream) = stream else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    match connector.connect(host, stream) {
        Ok(_) => format!(
            "; the certificate is signed by a trusted CA but does not name {host:?}: connect by a name it carries, or set kafka.tls.verify_hostname = false"
        ),
        Err(_) => "; the certificate is not signed by a CA in kafka.tls.ca_file (or, without it, the system's store)".into(),
    }
}

/// Failures that waiting does not mend.
fn is_fatal(message: &str) -> bool {
    [
        "Authentication failed",
        "SASL authentication error",
        "SSL handshake failed",
        "certificate verify failed",
        "security.protocol",
        "Unsupported SASL mechanism",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// Keeps the most telling line librdkafka logged during the probe.
#[derive(Default)]
struct Probe {
    cause: Mutex<Option<String>>,
}

impl Probe {
    fn cause(&self) -> Option<String> {
        self.cause.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Keeps a connection failure (librdkafka's `FAIL` lines) over the generic "all brokers are
    /// down" that follows it, and a fatal cause over everything after it.
    fn keep(&self, message: &str, connection_failure: bool) {
        let mut cause = self.cause.lock().unwrap_or_else(|e| e.into_inner());
        if cause.as_deref().is_some_and(is_fatal) || (!connection_failure && cause.is_some()) {
            return;
        }
        let mut text = message.to_string();
        if message.contains("Disconnected") && message.contains("APIVERSION_QUERY") {
            // A TLS listener closes a plaintext connection without a word.
            text.push_str(": the broker hung up before answering; the listener may expect TLS ([kafka.tls]) or another security.protocol");
        }
        *cause = Some(text);
    }
}

impl rdkafka::producer::ProducerContext for Probe {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

impl ClientContext for Probe {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}");
        if fac == "FAIL" || (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            self.keep(message, fac == "FAIL");
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let text = if reason.is_empty() {
            error.to_string()
        } else {
            reason.to_string()
        };
        self.keep(&text, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::kafka::is_secret_option;

    /// librdkafka takes OAUTHBEARER's OIDC client-credentials settings (it needs curl for them).
    /// No identity provider runs on the stack, so no token is ever fetched.
    #[test]
    fn oauthbearer_oidc_clients_can_be_created() {
        let dir = std::env::temp_dir().join(format!("ripple-oidc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("client-secret");
        std::fs::write(&secret, "oidc-s3cret").unwrap();
        let kafka: KafkaConfig = toml::from_str(&format!(
            "brokers = \"127.0.0.1:1\"\ntopics = [\"t\"]\n[tls]\n[sasl]\nmechanism = \"OAUTHBEARER\"\n\
             oidc_endpoint_url = \"https://127.0.0.1:1/token\"\nclient_id = \"ripple\"\nclient_secret_file = {secret:?}\n"
        ))
        .unwrap();
        let cc = client_config(&kafka, "t", Role::Producer).unwrap();
        assert_eq!(cc.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(
            cc.get("sasl.oauthbearer.client.secret"),
            Some("oidc-s3cret")
        );
        let created: Result<BaseProducer, _> = cc.create();
        assert!(created.is_ok(), "{:?}", created.err());
    }

    #[test]
    fn secret_librdkafka_options_are_recognised() {
        for k in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "sasl.jaas.config",
        ] {
            assert!(is_secret_option(k), "{k}");
        }
        for k in [
            "ssl.ca.location",
            "sasl.username",
            "fetch.wait.max.ms",
            "ssl.certificate.pem",
        ] {
            assert!(!is_secret_option(k), "{k}");
        }
    }
}
