//! Shared helpers for the end-to-end tests: the real stack's addresses, a unique name per test run,
//! Debezium connectors that clean up after themselves, and `ripple` child processes.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const SOURCE_URL: &str = "postgres://postgres@127.0.0.1:15432/app";
pub const REPLICA_URL: &str = "postgres://postgres@127.0.0.1:15433/replica";
pub const BROKERS: &str = "127.0.0.1:19092";

/// The repository root (the workspace).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Fails the test unless the stack's services answer. Tests never pass silently without them.
pub fn require_stack() {
    for (name, addr) in [
        ("source PostgreSQL", "127.0.0.1:15432"),
        ("replica PostgreSQL", "127.0.0.1:15433"),
        ("Kafka", "127.0.0.1:19092"),
        ("Kafka Connect", "127.0.0.1:18083"),
    ] {
        if TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)).is_err() {
            panic!("{name} is not listening on {addr}: start the stack with `scripts/stack up`");
        }
    }
}

/// The `ripple` binary under test: `$RIPPLE_BIN`, else the workspace's debug build.
pub fn ripple_bin() -> PathBuf {
    let path = std::env::var_os("RIPPLE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target").join("debug").join("ripple"));
    assert!(
        path.exists(),
        "{} does not exist: build it with `cargo build --bin ripple` (scripts/test does)",
        path.display()
    );
    path
}

/// A name no other run of any test shares (lowercase, digits, underscores: valid for slots too).
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// Runs `ripple <args>` to completion.
pub fn ripple(args: &[&str]) -> Output {
    Command::new(ripple_bin())
        .args(args)
        .output()
        .expect("run ripple")
}

pub fn stack(args: &[&str]) -> Output {
    stack_with(args, &[])
}

/// `scripts/stack` with extra environment variables.
pub fn stack_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(repo().join("scripts").join("stack"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run scripts/stack");
    assert!(
        out.status.success(),
        "scripts/stack {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A Debezium connector for some tables, deleted (with its replication slot) when dropped.
pub struct Connector {
    pub name: String,
    pub prefix: String,
}

impl Connector {
    /// Registers a connector capturing `tables` (`public.x,public.y`) under topic prefix `prefix`.
    pub fn start(name: &str, prefix: &str, tables: &str) -> Self {
        Self::with_partitions(name, prefix, tables, 1)
    }

    /// Like `start`, with each table's topic created with `partitions` partitions.
    pub fn with_partitions(name: &str, prefix: &str, tables: &str, partitions: u32) -> Self {
        Self::with_settings(name, prefix, tables, partitions, "{}")
    }

    /// Like `with_partitions`, with `settings` (a JSON object) over the stack's connector settings.
    pub fn with_settings(
        name: &str,
        prefix: &str,
        tables: &str,
        partitions: u32,
        settings: &str,
    ) -> Self {
        stack_with(
            &[
                "debezium",
                name,
                prefix,
                tables,
                "initial",
                &partitions.to_string(),
            ],
            &[("DEBEZIUM_SETTINGS", settings)],
        );
        Connector {
            name: name.to_string(),
            prefix: prefix.to_string(),
        }
    }

    pub fn topic(&self, table: &str) -> String {
        format!("{}.public.{table}", self.prefix)
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts").join("stack"))
            .args(["delete-connector", &self.name])
            .output();
    }
}

/// Writes a ripple.toml for one topic into the replica, returns its path.
pub fn write_config(dir: &Path, topics: &[String], group: &str, extra: &str) -> PathBuf {
    let topics = topics
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        r#"
[kafka]
brokers = "{BROKERS}"
group_id = "{group}"
topics = [{topics}]

[source]
url = "{SOURCE_URL}"

[sinks.replica]
type = "postgres"
url = "{REPLICA_URL}"

[[routes]]
topics = [{topics}]
sinks = ["replica"]
{extra}
"#
    );
    let path = dir.join(format!("{group}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

/// Config for `write_config`'s `extra`: the stack's Redis (hash format) and index as two more
/// sinks, with their defaults, routed from `topic`.
pub fn cache_and_search(topic: &str) -> String {
    format!(
        "\n[sinks.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:16379\"\n\
         \n[sinks.search]\ntype = \"elasticsearch\"\nurl = \"http://127.0.0.1:9251\"\n\
         \n[[routes]]\ntopics = [\"{topic}\"]\nsinks = [\"cache\", \"search\"]\n"
    )
}

/// A temporary directory under the workspace's target dir, kept for post-mortems.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = repo().join("target").join("it").join(name);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A running `ripple run`, with its output going to a log file.
pub struct RippleProcess {
    child: Child,
    pub log: PathBuf,
}

impl RippleProcess {
    pub fn start(config: &Path, extra_args: &[&str]) -> Self {
        Self::start_logging(config, extra_args, "info")
    }

    /// Like `start`, with `RIPPLE_LOG` set to `filter`.
    pub fn start_logging(config: &Path, extra_args: &[&str], filter: &str) -> Self {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let log = config.with_extension(format!("run{}.log", RUNS.fetch_add(1, Ordering::Relaxed)));
        let file = std::fs::File::create(&log).expect("create log");
        let child = Command::new(ripple_bin())
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(extra_args)
            .env("RIPPLE_LOG", filter)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("start ripple run");
        RippleProcess { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`KILL`, `TERM`) and waits for the process to exit.
    pub fn signal(mut self, signal: &str) -> ExitStatus {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait for ripple")
    }

    /// Waits for the process to exit on its own, at most `timeout`.
    pub fn wait(mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll ripple") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "ripple did not exit within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("poll ripple").is_none()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RippleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test shows what Ripple last said (a sink down and why, say): CI keeps only the
        // test's output, not the log file.
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- last lines of {}:\n{}",
                self.log.display(),
                tail.join("\n")
            );
        }
    }
}

/// Polls `check` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs a SQL query through psql and returns its trimmed output.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a redis-cli command against the stack's Redis and returns its trimmed output.
pub fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", "16379"])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Sends a request to the stack's OpenSearch and returns the JSON answer (`null` if none).
pub fn search_request(method: &str, path: &str, body: Option<&str>) -> serde_json::Value {
    let mut cmd = Command::new("curl");
    // A frozen node must not hang the caller.
    cmd.args([
        "-s",
        "-m",
        "10",
        "-X",
        method,
        &format!("http://127.0.0.1:9251/{path}"),
    ]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", b]);
    }
    let out = cmd.output().expect("run curl");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Produces `records` (`key<TAB>value` lines) to `topic` with kcat, as a late re-delivery would.
pub fn produce(topic: &str, records: &[String]) {
    use std::io::Write;
    let mut producer = Command::new("kcat")
        .args(["-b", BROKERS, "-P", "-t", topic, "-K", "\t"])
        // Room for the large records tests produce (the stack's broker takes up to 10 MB).
        .args(["-X", "message.max.bytes=10000000"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run kcat producer");
    producer
        .stdin
        .as_mut()
        .unwrap()
        .write_all((records.join("\n") + "\n").as_bytes())
        .unwrap();
    assert!(producer.wait().unwrap().success());
}

/// The first `count` records of `topic` as `key<TAB>value` lines, tombstones left out.
pub fn consume(topic: &str, count: usize) -> Vec<String> {
    let out = Command::new("kcat")
        .args([
            "-b",
            BROKERS,
            "-C",
            "-t",
            topic,
            "-o",
            "beginning",
            "-c",
            &count.to_string(),
            "-e",
            "-q",
            "-f",
            "%k\t%s\n",
        ])
        .output()
        .expect("run kcat");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.ends_with('\t'))
        .map(str::to_string)
        .collect()
}

/// Every dead letter as (headers, value size).
pub fn dead_letters(topic: &str) -> Vec<(String, usize)> {
    let out = Command::new("kcat")
        .args([
            "-b",
            BROKERS,
            "-C",
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%h\t%S\n",
        ])
        .output()
        .expect("run kcat");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.rsplit_once('\t'))
        .map(|(h, size)| (h.to_string(), size.parse().unwrap_or(0)))
        .collect()
}

/// `ripple verify --config CONFIG --table TABLE` (SCHEMA.TABLE, parts quoted as verify takes them).
pub fn verify(config: &Path, table: &str) -> Output {
    ripple(&[
        "verify",
        "--config",
        config.to_str().unwrap(),
        "--table",
        table,
    ])
}

/// Waits until verify of `table` passes with `sinks` comparisons equal; returns the last report.
pub fn wait_verified(config: &Path, table: &str, sinks: usize, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let out = verify(config, table);
        let last = text(&out);
        if out.status.success() && last.matches("EQUAL ").count() == sinks {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for every store to verify equal; last report:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// (status code, body) of a GET on a local port, by curl.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-m",
            "10",
            "-w",
            "\n%{http_code}",
            &format!("http://127.0.0.1:{port}{path}"),
        ])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The count in `ripple replay`'s summary line (`replayed N ...`); fails the test if it failed.
#[allow(dead_code)]
pub fn replayed(out: &Output) -> u64 {
    let text = text(out);
    assert!(out.status.success(), "replay failed:\n{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("replayed ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no summary in:\n{text}"))
}

/// Whether any record of `topic` (read from its start) contains `needle`.
#[allow(dead_code)]
pub fn topic_contains(topic: &str, needle: &str) -> bool {
    let out = Command::new("kcat")
        .args(["-b", BROKERS, "-C", "-t", topic, "-e", "-q", "-f", "%s\n"])
        .output()
        .expect("run kcat");
    String::from_utf8_lossy(&out.stdout).contains(needle)
}

/// A verify report's comparison as (missing, extra, different).
pub fn verify_counts(t: &serde_json::Value) -> (i64, i64, i64) {
    let n = |k: &str| t[k].as_i64().unwrap_or(-1);
    (n("missing"), n("extra"), n("different"))
}
