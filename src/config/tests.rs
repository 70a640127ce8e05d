//! Config parsing and validation: defaults, every key's error naming it, secrets masked.

use super::*;

const GOOD: &str = r#"
    [kafka]
    brokers = "127.0.0.1:19092"
    topics = ["^ripple\\.public\\..*"]

    [sinks.replica]
    type = "postgres"
    url = "postgres://postgres:hunter2@127.0.0.1:15433/replica"

    [[routes]]
    topics = ["^ripple\\.public\\..*"]
    sinks = ["replica"]
"#;

#[test]
fn good_config_parses_with_defaults() {
    let c = Config::parse(GOOD).unwrap();
    assert_eq!(c.kafka.group_id, "ripple");
    assert_eq!(c.pipeline.batch_size, 10_000);
}

#[test]
fn a_dead_letter_topic_ripple_would_consume_is_refused() {
    let text = format!("{GOOD}\n[dead_letter]\ntopic = \"ripple.public.dlq\"\n");
    let err = Config::parse(&text).unwrap_err();
    assert_eq!(err.key, "dead_letter.topic", "{err}");
    assert!(err.to_string().contains("its own dead letters"), "{err}");
    let text = format!("{GOOD}\n[dead_letter]\ntopic = \"ripple-dlq\"\n");
    let c = Config::parse(&text).unwrap();
    assert_eq!(c.dead_letter.unwrap().tolerance, Tolerance::All);
}

#[test]
fn unknown_key_is_named() {
    let text = GOOD.replace("[kafka]", "[kafka]\nbrokerz = \"x\"");
    let err = Config::parse(&text).unwrap_err();
    assert_eq!(err.key, "kafka.brokerz", "{err}");
    assert!(
        err.to_string().contains("brokers"),
        "lists the expected keys: {err}"
    );
}

#[test]
fn wrong_type_names_the_full_key() {
    let text = GOOD.replace("[kafka]", "[pipeline]\nbatch_size = \"many\"\n[kafka]");
    let err = Config::parse(&text).unwrap_err();
    assert_eq!(err.key, "pipeline.batch_size", "{err}");
    let text = GOOD.replace(
        "[kafka]",
        "[kafka.options]\nfetch.wait.max.ms = \"10\"\n[kafka]",
    );
    let err = Config::parse(&text).unwrap_err();
    assert!(err.message.contains("quote them"), "{err}");
}

#[test]
fn route_to_missing_sink_is_named() {
    let text = GOOD.replace("sinks = [\"replica\"]", "sinks = [\"replika\"]");
    let err = Config::parse(&text).unwrap_err();
    assert_eq!(err.key, "routes[0].sinks[0]");
    assert!(err.message.contains("replika"));
}

#[test]
fn missing_sink_type_is_named() {
    let text = GOOD.replace("type = \"postgres\"", "");
    let err = Config::parse(&text).unwrap_err();
    assert_eq!(err.key, "sinks.replica.type");
}

#[test]
fn bad_pattern_is_named() {
    let text = GOOD.replace(
        "topics = [\"^ripple\\\\.public\\\\..*\"]\n    sinks",
        "topics = [\"^(\"]\n    sinks",
    );
    let err = Config::parse(&text).unwrap_err();
    assert_eq!(err.key, "routes[0].topics[0]", "{err}");
}

#[test]
fn urls_are_masked() {
    assert_eq!(
        mask_url("postgres://app:s3cr:et@db:5432/app"),
        "postgres://app:****@db:5432/app"
    );
    assert_eq!(
        mask_url("postgres://postgres@127.0.0.1:15432/app"),
        "postgres://postgres@127.0.0.1:15432/app"
    );
    assert_eq!(
        mask_url("postgres://u@h/db?sslmode=disable&password=x&application_name=a"),
        "postgres://u@h/db?sslmode=disable&password=****&application_name=a"
    );
    assert_eq!(mask_url("not a url"), "not a url");
}

#[test]
fn kafka_security_is_typed_and_secret_options_are_masked() {
    let dir = std::env::temp_dir().join(format!("ripple-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("kafka.pw");
    std::fs::write(&pw, "k-s3cret\n").unwrap();
    let text = GOOD.replace(
        "[kafka]\n",
        &format!(
            "[kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"ripple\"\npassword_file = {pw:?}\n\
             [kafka.options]\n\"ssl.key.password\" = \"opt-s3cret\"\n\"sasl.oauthbearer.client.secret\" = \"oauth-s3cret\"\n\"fetch.wait.max.ms\" = \"10\"\n[kafka]\n"
        ),
    );
    let c = Config::parse(&text).unwrap();
    let shown = c.to_masked_toml();
    for secret in ["k-s3cret", "opt-s3cret", "oauth-s3cret"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(
        shown.contains("fetch.wait.max.ms") && shown.contains("password_file"),
        "{shown}"
    );
    // SASL without TLS is SASL_PLAINTEXT; the password is read from its file.
    let cc =
        crate::source::client::client_config(&c.kafka, "t", crate::source::client::Role::Consumer)
            .unwrap();
    assert_eq!(cc.get("security.protocol"), Some("sasl_plaintext"));
    assert_eq!(cc.get("sasl.password"), Some("k-s3cret"));
    // A mechanism that needs a password without one names the key.
    let text = text.replace(&format!("password_file = {pw:?}\n"), "");
    assert_eq!(
        Config::parse(&text).unwrap_err().key,
        "kafka.sasl.password_env"
    );
}

#[test]
fn secrets_are_masked() {
    let c = Config::parse(GOOD).unwrap();
    let shown = c.to_masked_toml();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("postgres:****@127.0.0.1:15433"), "{shown}");
}
