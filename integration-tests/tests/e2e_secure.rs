//! Ripple against the stack's secured endpoints only: Kafka SASL_SSL with SCRAM-SHA-512 and
//! hostname verification, PostgreSQL `verify-full` with a scram-sha-256 user (source and replica),
//! `rediss://` with an ACL user, the index over HTTPS with basic auth, the schema registry over
//! HTTPS with basic auth (Debezium writes Avro), a bearer token on the metrics port. The seed
//! workload flows through real Debezium into all three stores, `ripple
//! verify` (over TLS too) reports them EQUAL, and no secret appears in anything Ripple wrote or
//! served. Then each way a secured connection goes wrong must stop start-up within 15 s with a
//! message naming the service, the address and the cause, and no secret.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tls_dir() -> PathBuf {
    repo().join(".stack/tls")
}

fn secret(name: &str) -> String {
    std::fs::read_to_string(tls_dir().join(format!("{name}.password")))
        .unwrap_or_else(|e| panic!("the stack's {name} password (scripts/stack up makes it): {e}"))
        .trim()
        .to_string()
}

const METRICS_TOKEN: &str = "ripple-test-metrics-token-5c1e0d";

/// A config that reaches every service only through its secured endpoint. The Kafka password
/// comes from the environment (`RIPPLE_TEST_KAFKA_PASSWORD`), the others from the stack's files.
fn secure_config(topic: &str, group: &str, dlq: &str, port: u16) -> String {
    let tls = tls_dir();
    let ca = tls.join("ca.pem");
    let ca = ca.display();
    let file = |n: &str| tls.join(format!("{n}.password")).display().to_string();
    format!(
        r#"
[kafka]
brokers = "localhost:19094"
group_id = "{group}"
topics = ["{topic}"]
[kafka.tls]
ca_file = "{ca}"
[kafka.sasl]
mechanism = "SCRAM-SHA-512"
username = "ripple"
password_env = "RIPPLE_TEST_KAFKA_PASSWORD"

[source]
url = "postgres://ripple_tls@localhost:15432/app"
sslmode = "verify-full"
password_file = "{pg}"
tls = {{ ca_file = "{ca}" }}

[sinks.replica]
type = "postgres"
url = "postgres://ripple_tls@localhost:15433/replica"
sslmode = "verify-full"
password_file = "{pg}"
tls = {{ ca_file = "{ca}" }}

[sinks.cache]
type = "redis"
url = "rediss://localhost:16380"
username = "ripple"
password_file = "{redis}"
tls = {{ ca_file = "{ca}" }}

[sinks.search]
type = "elasticsearch"
url = "https://localhost:19200"
username = "ripple"
password_file = "{search}"
index = "{group}-{{table}}"
meta_index = "{group}-meta"
tls = {{ ca_file = "{ca}" }}

[[routes]]
topics = ["{topic}"]
sinks = ["replica", "cache", "search"]

[dead_letter]
topic = "{dlq}"

[decode.avro]
registry_url = "https://localhost:18082/apis/ccompat/v7"
username = "ripple"
password_file = "{registry}"
tls = {{ ca_file = "{ca}" }}

[metrics]
listen = "127.0.0.1:{port}"
token_env = "RIPPLE_TEST_METRICS_TOKEN"
[metrics.tls]
cert_file = "{cert}"
key_file = "{key}"
"#,
        cert = tls.join("server.pem").display(),
        key = tls.join("server.key").display(),
        registry = file("registry"),
        pg = file("pg"),
        redis = file("redis"),
        search = file("search"),
    )
}

fn secure_env(cmd: &mut Command) -> &mut Command {
    cmd.env("RIPPLE_TEST_KAFKA_PASSWORD", secret("kafka"))
        .env("RIPPLE_TEST_METRICS_TOKEN", METRICS_TOKEN)
        .env("RIPPLE_LOG", "info")
}

fn ripple_secure(args: &[&str]) -> std::process::Output {
    secure_env(&mut Command::new(ripple_bin()))
        .args(args)
        .output()
        .expect("run ripple")
}

/// GET over HTTPS (the stack's CA) with curl, optionally with the metrics token: (status, body).
fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "10", "-w", "\n%{http_code}", "--cacert"])
        .arg(tls_dir().join("ca.pem"));
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn all_secrets() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = ["kafka", "pg", "redis", "search", "registry"]
        .iter()
        .map(|n| (n.to_string(), secret(n)))
        .collect();
    out.push(("metrics token".into(), METRICS_TOKEN.into()));
    out
}

fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.is_empty(), "{what} is empty: nothing was searched");
    for (name, value) in all_secrets() {
        assert!(
            !text.contains(&value),
            "the {name} secret appears in {what}:\n{text}"
        );
    }
}

#[test]
fn secured_services_end_to_end_and_no_secret_leaks() {
    require_stack();
    let t = unique("e2e_secure");
    let dir = temp_dir(&t);
    let port = 19100 + (std::process::id() % 300) as u16;
    let setup = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &t, "--drop", "--setup", "--count", "0",
    ]);
    assert!(setup.status.success(), "loadgen failed: {}", text(&setup));
    // Kafka Connect keeps the plaintext listener and registry port; Ripple never touches them.
    let avro = std::fs::read_to_string(repo().join("scripts/stack.d/avro-settings.json"))
        .expect("the stack's Avro converter settings");
    let connector =
        Connector::with_settings(&t.replace('_', "-"), &t, &format!("public.{t}"), 1, &avro);
    let topic = connector.topic(&t);
    let dlq = format!("{t}.dead-letter");
    let config = dir.join("secure.toml");
    std::fs::write(&config, secure_config(&topic, &t, &dlq, port)).unwrap();
    let config_s = config.to_str().unwrap();

    let check = ripple_secure(&["check-config", "--config", config_s]);
    assert!(check.status.success(), "check-config: {}", text(&check));
    let check_text = text(&check);

    let log = dir.join("run.log");
    let mut run = secure_env(&mut Command::new(ripple_bin()))
        .args(["run", "--config", config_s])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .expect("start ripple");
    wait_until(Duration::from_secs(30), "the metrics endpoint", || {
        get(port, "/healthz", None).0 == 200
    });

    let load = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &t, "--count", "3000", "--seed", "11",
    ]);
    assert!(load.status.success(), "loadgen failed: {}", text(&load));
    // A record no store can take: its dead letter goes out over SASL_SSL with Ripple's headers.
    produce(&topic, &["{\"id\":1}\tnot json".to_string()]);

    let table = format!("public.{t}");
    let mut report = String::new();
    wait_until(
        Duration::from_secs(180),
        "every store to verify equal over TLS",
        || {
            let out = ripple_secure(&["verify", "--config", config_s, "--table", &table]);
            report = text(&out);
            out.status.success() && report.matches("EQUAL ").count() == 3
        },
    );
    println!("{report}");
    let rows: i64 = psql(REPLICA_URL, &format!("SELECT count(*) FROM {table}"))
        .parse()
        .unwrap();
    assert!(rows > 500, "replica has {rows} rows");

    // The connections really are the secured ones: Ripple's sessions in the replica are TLS
    // sessions of ripple_tls, and its Redis clients are on the TLS port as the ACL user.
    let pg_tls = psql(
        REPLICA_URL,
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'ripple_tls' AND a.application_name = 'ripple'",
    );
    let (ssl, all) = pg_tls.split_once('|').unwrap();
    assert!(
        all != "0" && ssl == all,
        "ripple's replica sessions (tls|all): {pg_tls}"
    );
    let clients = redis_cli(&["CLIENT", "LIST"]);
    assert!(
        clients
            .lines()
            .any(|l| l.contains("laddr=127.0.0.1:16380") && l.contains("user=ripple ")),
        "no ripple client on the TLS port:\n{clients}"
    );

    // The token guards /metrics and the dashboard, not the probes.
    assert_eq!(get(port, "/metrics", None).0, 401);
    assert_eq!(get(port, "/dashboard/history", None).0, 401);
    assert_eq!(get(port, "/metrics", Some("wrong-token")).0, 401);
    let (code, metrics) = get(port, "/metrics", Some(METRICS_TOKEN));
    assert_eq!(code, 200);
    assert!(metrics.contains("ripple_events_applied_total"), "{metrics}");
    let (code, history) = get(port, "/dashboard/history", Some(METRICS_TOKEN));
    assert_eq!(code, 200, "{history}");
    let (code, ready) = get(port, "/readyz", None);
    assert_eq!(code, 200, "readyz: {ready}");

    let letters = wait_dead_letters(&dlq);
    assert!(
        letters.contains("ripple.error.reason"),
        "dead-letter headers: {letters}"
    );

    run.kill().ok();
    run.wait().ok();
    let verify_report = std::fs::read_to_string(dir.join("secure.last-verify.json"))
        .expect("verify leaves its report beside the config");
    for (what, body) in [
        ("the run's log", std::fs::read_to_string(&log).unwrap()),
        ("check-config's output", check_text),
        ("/metrics", metrics),
        ("the dashboard's JSON", history),
        ("/readyz", ready),
        ("verify's output", report),
        ("verify's report file", verify_report),
        ("the dead-letter headers", letters),
    ] {
        assert_no_secret(what, &body);
    }
    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS {table}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS {table}"));
}

/// The dead-letter topic's headers, read over the plaintext listener once one has arrived.
fn wait_dead_letters(topic: &str) -> String {
    let mut headers = String::new();
    wait_until(Duration::from_secs(30), "a dead letter", || {
        headers = dead_letters(topic)
            .into_iter()
            .map(|(h, _)| h)
            .collect::<Vec<_>>()
            .join("\n");
        !headers.is_empty()
    });
    headers
}

/// Runs `ripple run` with `config` and expects it to stop within 15 s, failing; returns its output.
fn fails_at_start(dir: &Path, name: &str, config: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let started = Instant::now();
    let mut child = secure_env(&mut Command::new(ripple_bin()))
        .args(["run", "--config", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("start ripple");
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(15) {
            child.kill().ok();
            panic!("{name}: ripple was still running after 15 s instead of failing at start-up");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{name}: ripple exited 0");
    let text = text(&out);
    assert_no_secret(name, &text);
    // Also the wrong password given in this case.
    assert!(
        !text.contains("wrong-pass-8d1f"),
        "{name}: the wrong password is printed:\n{text}"
    );
    println!(
        "{name} ({:.1} s): {}",
        started.elapsed().as_secs_f64(),
        text.lines().last().unwrap_or("")
    );
    text
}

fn assert_names(name: &str, text: &str, wants: &[&str]) {
    for want in wants {
        assert!(
            text.contains(want),
            "{name}: the error does not name {want:?}:\n{text}"
        );
    }
}

#[test]
fn secured_connections_that_go_wrong_fail_fast_and_say_why() {
    require_stack();
    let t = unique("e2e_insecure");
    let dir = temp_dir(&t);
    let good = secure_config("secure-nothing", &t, &format!("{t}.dlq"), 0);
    let good = good[..good.find("[metrics]").unwrap()].to_string();
    let wrong_file = dir.join("wrong.password");
    std::fs::write(&wrong_file, "wrong-pass-8d1f").unwrap();
    let wrong = wrong_file.display().to_string();
    let ca = tls_dir().join("ca.pem").display().to_string();
    let other_ca = tls_dir().join("other-ca.pem").display().to_string();
    let file = |n: &str| {
        tls_dir()
            .join(format!("{n}.password"))
            .display()
            .to_string()
    };

    let password = |name: &str| format!("password_file = \"{}\"", file(name));
    let wrong_password = format!("password_file = \"{wrong}\"");
    let kafka_tls = format!("[kafka.tls]\nca_file = \"{ca}\"\n");
    // (case, config, what its error must name)
    let cases: [(&str, String, &[&str]); 7] = [
        (
            "kafka-wrong-password",
            good.replace(
                "password_env = \"RIPPLE_TEST_KAFKA_PASSWORD\"",
                &wrong_password,
            ),
            &["Kafka", "localhost:19094", "Authentication failed"],
        ),
        (
            "kafka-untrusted-ca",
            good.replacen(
                &kafka_tls,
                &format!("[kafka.tls]\nca_file = \"{other_ca}\"\n"),
                1,
            ),
            &[
                "Kafka",
                "localhost:19094",
                "certificate verify failed",
                "not signed by a CA in kafka.tls.ca_file",
            ],
        ),
        (
            "kafka-hostname-mismatch",
            good.replace(
                "brokers = \"localhost:19094\"",
                "brokers = \"127.0.0.1:19094\"",
            ),
            &[
                "Kafka",
                "127.0.0.1:19094",
                "certificate verify failed",
                "does not name \"127.0.0.1\"",
            ],
        ),
        (
            // SASL without TLS, to the TLS listener.
            "kafka-plaintext-to-tls",
            good.replace(&kafka_tls, ""),
            &["Kafka", "localhost:19094", "security.protocol"],
        ),
        (
            "postgres-wrong-password",
            good.replacen(&password("pg"), &wrong_password, 2),
            &[
                "replica",
                "localhost:15433",
                "password authentication failed",
            ],
        ),
        (
            "redis-wrong-password",
            good.replace(&password("redis"), &wrong_password),
            &[
                "cache",
                "rediss://localhost:16380",
                "Password authentication failed",
            ],
        ),
        (
            "index-401",
            good.replace(&password("search"), &wrong_password),
            &["search", "https://localhost:19200", "401"],
        ),
    ];
    for (name, config, wants) in cases {
        assert_ne!(config, good, "{name}: the case changes nothing");
        let out = fails_at_start(&dir, name, &config);
        assert_names(name, &out, wants);
    }
}
