//! The chaos suite: the seed workload flows through real Debezium into the replica, Redis and the
//! search index while Ripple is SIGKILLed in the middle of applying a batch and restarted, each
//! store is stopped mid-stream for longer than Ripple's retries last (so backpressure engages),
//! each store refuses writes for reasons of its own (the replica read-only, its privileges
//! revoked, Redis at maxmemory, the index write-blocked) and each is frozen with SIGSTOP past the
//! apply timeout, the Kafka broker restarts, a second instance joins the consumer group and
//! leaves, and malformed records land on the table topic. During every refusal and freeze
//! `/readyz` must name the sink and the cause. Afterwards every store must equal the source, every
//! malformed record must be in the dead-letter topic with its reason and nothing else there, no
//! row's version may ever have gone down (sampled from all three stores throughout), and Ripple's
//! resident memory must have stayed under 256 MB while stores were down.
//!
//! `cargo test -p ripple-integration-tests --test chaos` runs the short version (part of
//! `scripts/test`); `RIPPLE_CHAOS=full` runs the full one (10 kills, longer outages, more load).
//! The figures go to stderr and to `target/it/<table>/chaos-report.txt`.

mod common;

use common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Plan {
    kills: usize,
    outage: Duration,
    changes: u64,
    rate: u64,
}

impl Plan {
    fn from_env() -> Self {
        if std::env::var("RIPPLE_CHAOS").as_deref() == Ok("full") {
            Plan {
                kills: 12,
                outage: Duration::from_secs(15),
                changes: 200_000,
                rate: 500,
            }
        } else {
            // The load lasts past the fault schedule, so each outage meets changes to apply
            // (and backpressure engages), also on a slow machine.
            Plan {
                kills: 3,
                outage: Duration::from_secs(6),
                changes: 40_000,
                rate: 200,
            }
        }
    }
}

/// A psql query that reports failure instead of panicking (stores go down on purpose here).
fn try_psql(url: &str, sql: &str) -> Option<String> {
    let out = Command::new("psql")
        .args([url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "3")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn parse_versions(text: &str, sep: char) -> HashMap<String, (u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(sep)?;
            let (c, h) = v.split_once(':')?;
            Some((k.to_string(), (c.parse().ok()?, h.parse().ok()?)))
        })
        .collect()
}

/// Samples row versions in the replica and in Redis and counts any that went down.
struct Sampler {
    stop: Arc<AtomicBool>,
    regressions: Arc<Mutex<Vec<String>>>,
    /// Per store, the samples that held versions.
    samples: Arc<Mutex<HashMap<String, u64>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(table: &str, pid: Arc<AtomicU32>, rss: Arc<Mutex<RssLog>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let regressions = Arc::new(Mutex::new(Vec::new()));
        let samples = Arc::new(Mutex::new(HashMap::new()));
        let (t, s, r, n) = (
            table.to_string(),
            stop.clone(),
            regressions.clone(),
            samples.clone(),
        );
        let handle = std::thread::spawn(move || {
            let mut seen: HashMap<String, HashMap<String, (u64, u64)>> = HashMap::new();
            let mut check = |store: &str, now: HashMap<String, (u64, u64)>| {
                if !now.is_empty() {
                    *n.lock().unwrap().entry(store.to_string()).or_default() += 1;
                }
                let before = seen.entry(store.to_string()).or_default();
                for (k, v) in &now {
                    if let Some(old) = before.get(k)
                        && v < old
                    {
                        r.lock()
                            .unwrap()
                            .push(format!("{store}: {k} went from {old:?} to {v:?}"));
                    }
                }
                before.extend(now);
            };
            while !s.load(Ordering::Relaxed) {
                rss.lock().unwrap().sample(pid.load(Ordering::Relaxed));
                if let Some(text) = try_psql(
                    REPLICA_URL,
                    &format!(
                        "SELECT transaction_id || '|' || _ripple_commit || ':' || _ripple_change FROM public.{t}"
                    ),
                ) {
                    check("replica", parse_versions(&text, '|'));
                }
                let hash = format!("ripple:keys:cache:public.{t}:versions");
                let out = Command::new("redis-cli")
                    .args(["-p", "16379", "--no-raw", "HGETALL", &hash])
                    .output();
                if let Ok(out) = out
                    && out.status.success()
                {
                    let text = String::from_utf8_lossy(&out.stdout);
                    let fields: Vec<&str> = text
                        .lines()
                        .filter_map(|l| l.split_once(") ").map(|(_, v)| v.trim_matches('"')))
                        .collect();
                    let map = fields
                        .chunks(2)
                        .filter(|c| c.len() == 2)
                        .filter_map(|c| {
                            let (a, b) = c[1].split_once(':')?;
                            Some((c[0].to_string(), (a.parse().ok()?, b.parse().ok()?)))
                        })
                        .collect();
                    check("redis", map);
                }
                // The index's external versions, the same (commit, change) folded into one number.
                let hits = search_request(
                    "POST",
                    &format!("{t}-{t}/_search"),
                    Some(r#"{"size": 10000, "version": true, "_source": false}"#),
                );
                if let Some(hits) = hits["hits"]["hits"].as_array() {
                    let map = hits
                        .iter()
                        .filter_map(|h| {
                            Some((h["_id"].as_str()?.to_string(), (h["_version"].as_u64()?, 0)))
                        })
                        .collect();
                    check("index", map);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Sampler {
            stop,
            regressions,
            samples,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (Vec<String>, HashMap<String, u64>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        (
            self.regressions.lock().unwrap().clone(),
            self.samples.lock().unwrap().clone(),
        )
    }
}

/// Ripple's resident memory: the peak over the run, and the peak while a store was down.
#[derive(Default)]
struct RssLog {
    peak_kb: u64,
    outage_peak_kb: u64,
    in_outage: bool,
}

impl RssLog {
    fn sample(&mut self, pid: u32) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return;
        };
        let kb = |field: &str| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let now = kb("VmRSS:");
        self.peak_kb = self.peak_kb.max(kb("VmHWM:")).max(now);
        if self.in_outage {
            self.outage_peak_kb = self.outage_peak_kb.max(now);
        }
    }
}

/// The engine's "apply started" / "apply finished" lines are what the kills are timed by.
const LOG_FILTER: &str = "info,ripple::engine=debug";

/// The replica role Ripple writes as here: no superuser, so a REVOKE bites.
const WRITER: &str = "ripple_chaos_writer";
/// For ALTER DATABASE: a session in the replica database itself would be read-only too.
const REPLICA_ADMIN: &str = "postgres://postgres@127.0.0.1:15433/postgres";

/// Creates the writer with what a replica sink needs: tables of its own in `public`, and rows in
/// Ripple's bookkeeping tables (or, on a fresh replica, the right to create them).
fn writer_role() {
    psql(
        REPLICA_URL,
        &format!(
            "DO $$ BEGIN \
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{WRITER}') THEN CREATE ROLE {WRITER} LOGIN; END IF; \
               IF to_regnamespace('_ripple') IS NOT NULL THEN \
                 GRANT USAGE, CREATE ON SCHEMA _ripple TO {WRITER}; \
                 GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA _ripple TO {WRITER}; \
               END IF; \
             END $$; \
             GRANT CREATE ON DATABASE replica TO {WRITER}; \
             GRANT USAGE, CREATE ON SCHEMA public TO {WRITER}"
        ),
    );
}

/// Reads a Ripple log as it grows and tracks whether an apply is under way.
struct LogTail {
    path: PathBuf,
    read: usize,
    in_apply: bool,
    finished: usize,
}

impl LogTail {
    fn new(path: &Path) -> Self {
        LogTail {
            path: path.to_path_buf(),
            read: 0,
            in_apply: false,
            finished: 0,
        }
    }

    fn read(&mut self) {
        let Ok(bytes) = std::fs::read(&self.path) else {
            return;
        };
        // Whole lines only: the last one may still be being written.
        let Some(end) = bytes[self.read.min(bytes.len())..]
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| self.read + i + 1)
        else {
            return;
        };
        for line in String::from_utf8_lossy(&bytes[self.read..end]).lines() {
            if line.contains("apply started") {
                self.in_apply = true;
            } else if line.contains("apply finished") {
                self.in_apply = false;
                self.finished += 1;
            }
        }
        self.read = end;
    }
}

fn pid_of(file: &str) -> String {
    let text = std::fs::read_to_string(repo().join(file)).unwrap_or_default();
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// Sends `signal` to a stack service's processes: for PostgreSQL the postmaster and every backend
/// (stopping the postmaster alone leaves its sessions running).
fn signal_service(service: &str, signal: &str) {
    let pids: Vec<String> = match service {
        "pg-replica" => {
            let main = pid_of(".stack/pg-replica/data/postmaster.pid");
            let children = Command::new("pgrep")
                .args(["-P", &main])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default();
            children
                .lines()
                .map(str::to_string)
                .chain([main])
                .filter(|p| !p.is_empty())
                .collect()
        }
        other => vec![pid_of(&format!(".stack/run/{other}.pid"))],
    };
    for pid in pids.iter().filter(|p| !p.is_empty()) {
        let _ = Command::new("kill").args([signal, pid]).status();
    }
}

/// Undoes every fault however the test ends, so later tests find the stores as they were.
struct Undo {
    index: String,
    table: String,
}

impl Drop for Undo {
    fn drop(&mut self) {
        for service in ["redis", "opensearch", "pg-replica"] {
            signal_service(service, "-CONT");
        }
        let _ = Command::new("redis-cli")
            .args(["-p", "16379", "CONFIG", "SET", "maxmemory", "0"])
            .output();
        let _ = try_psql(
            REPLICA_ADMIN,
            "ALTER DATABASE replica RESET default_transaction_read_only",
        );
        let _ = try_psql(
            REPLICA_URL,
            &format!("GRANT ALL ON public.{} TO {WRITER}", self.table),
        );
        search_request(
            "PUT",
            &format!("{}/_settings", self.index),
            Some(r#"{"index.blocks.write": null}"#),
        );
    }
}

fn end_writer_sessions() {
    psql(
        REPLICA_ADMIN,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '{WRITER}'"
        ),
    );
}

/// One way a store stops taking writes: how to cause it and undo it, the sink it hits, and words
/// one of which `/readyz` must say.
struct Fault {
    name: &'static str,
    sink: &'static str,
    causes: &'static [&'static str],
    start: fn(&str),
    end: fn(&str),
}

const FROZEN: &[&str] = &["no answer within", "timed out", "pool"];

const FAULTS: &[Fault] = &[
    Fault {
        name: "replica read-only",
        sink: "replica",
        causes: &["read-only"],
        start: |_| {
            psql(
                REPLICA_ADMIN,
                "ALTER DATABASE replica SET default_transaction_read_only = on",
            );
            end_writer_sessions();
        },
        end: |_| {
            psql(
                REPLICA_ADMIN,
                "ALTER DATABASE replica RESET default_transaction_read_only",
            );
            end_writer_sessions();
        },
    },
    Fault {
        name: "replica privileges revoked",
        sink: "replica",
        causes: &["permission denied"],
        start: |t| {
            psql(
                REPLICA_URL,
                &format!("REVOKE INSERT, UPDATE, DELETE ON public.{t} FROM {WRITER}"),
            );
        },
        end: |t| {
            psql(REPLICA_URL, &format!("GRANT ALL ON public.{t} TO {WRITER}"));
        },
    },
    Fault {
        name: "Redis at maxmemory (noeviction)",
        sink: "cache",
        causes: &["OOM"],
        start: |_| {
            redis_cli(&["CONFIG", "SET", "maxmemory", "1"]);
        },
        end: |_| {
            redis_cli(&["CONFIG", "SET", "maxmemory", "0"]);
        },
    },
    Fault {
        name: "index write-blocked",
        sink: "search",
        causes: &["cluster_block_exception"],
        start: |t| {
            search_request(
                "PUT",
                &format!("{t}-{t}/_settings"),
                Some(r#"{"index.blocks.write": true}"#),
            );
        },
        end: |t| {
            search_request(
                "PUT",
                &format!("{t}-{t}/_settings"),
                Some(r#"{"index.blocks.write": null}"#),
            );
        },
    },
    Fault {
        name: "replica frozen (SIGSTOP)",
        sink: "replica",
        causes: FROZEN,
        start: |_| signal_service("pg-replica", "-STOP"),
        end: |_| signal_service("pg-replica", "-CONT"),
    },
    Fault {
        name: "Redis frozen (SIGSTOP)",
        sink: "cache",
        causes: FROZEN,
        start: |_| signal_service("redis", "-STOP"),
        end: |_| signal_service("redis", "-CONT"),
    },
    Fault {
        name: "index frozen (SIGSTOP)",
        sink: "search",
        causes: FROZEN,
        start: |_| signal_service("opensearch", "-STOP"),
        end: |_| signal_service("opensearch", "-CONT"),
    },
];

fn readyz_reason(body: &str, sink: &str) -> String {
    let state: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    state["sinks"][sink]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until /readyz answers 503 with `sink` down for a reason containing one of `causes`.
fn wait_down(port: u16, sink: &str, causes: &[&str]) -> String {
    let mut last = String::new();
    wait_until(
        Duration::from_secs(60),
        &format!("/readyz to name {sink} down ({causes:?})"),
        || {
            let (code, body) = http_get(port, "/readyz");
            last = body;
            let reason = readyz_reason(&last, sink);
            code == 503 && reason.starts_with("down:") && causes.iter().any(|c| reason.contains(c))
        },
    );
    last
}

/// Waits until /readyz no longer names `sink` down.
fn wait_up(port: u16, sink: &str) {
    wait_until(
        Duration::from_secs(90),
        &format!("{sink} to be back in /readyz"),
        || {
            let (code, body) = http_get(port, "/readyz");
            code != 0 && !readyz_reason(&body, sink).starts_with("down:")
        },
    );
}

fn stack_cmd(args: &[&str]) {
    let out = stack(args);
    assert!(
        out.status.success(),
        "scripts/stack {args:?}: {}",
        text(&out)
    );
}

fn config(dir: &Path, t: &str, topic: &str, dlq: &str, port: u16) -> PathBuf {
    let text = format!(
        r#"
[kafka]
brokers = "{BROKERS}"
group_id = "{t}"
topics = ["{topic}"]

[kafka.options]
# A SIGKILLed member's partitions wait out its session; the broker's minimum keeps kills frequent.
"session.timeout.ms" = "6000"

[source]
url = "{SOURCE_URL}"
topic_prefix = "{t}"

[pipeline]
batch_size = 2000
# Retries run out within a second or two, so every outage below outlasts them.
max_retries = 3
retry_initial_delay_ms = 100
retry_max_delay_ms = 1000
# A frozen store is cut off here, well within each freeze below.
apply_timeout_ms = 2000

[metrics]
listen = "127.0.0.1:{port}"

# A writer with only the privileges it needs, so they can be revoked.
[sinks.replica]
type = "postgres"
url = "postgres://{WRITER}@127.0.0.1:15433/replica"

[sinks.cache]
type = "redis"
url = "redis://127.0.0.1:16379"

[sinks.search]
type = "elasticsearch"
url = "http://127.0.0.1:9251"
index = "{t}-{{table}}"

[[routes]]
topics = ["{topic}"]
sinks = ["replica", "cache", "search"]

[dead_letter]
topic = "{dlq}"
"#
    );
    let path = dir.join("chaos.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn every_store_ends_equal_whatever_fails() {
    require_stack();
    let plan = Plan::from_env();
    let started = Instant::now();
    let t = unique("chaos");
    let dir = temp_dir(&t);
    let dlq = format!("{t}.dead-letter");
    let setup = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &t, "--drop", "--setup", "--count", "0",
    ]);
    assert!(setup.status.success(), "{}", text(&setup));
    // Three partitions, so the second instance really takes some of them over.
    let connector = Connector::with_partitions(&t.replace('_', "-"), &t, &format!("public.{t}"), 3);
    let topic = connector.topic(&t);
    let port = 19800 + (std::process::id() % 90) as u16;
    let config = config(&dir, &t, &topic, &dlq, port);
    writer_role();
    let _undo = Undo {
        index: format!("{t}-{t}"),
        table: t.clone(),
    };

    let pid = Arc::new(AtomicU32::new(0));
    let rss = Arc::new(Mutex::new(RssLog::default()));
    let mut ripple_run = RippleProcess::start_logging(&config, &[], LOG_FILTER);
    pid.store(ripple_run.pid(), Ordering::Relaxed);
    let sampler = Sampler::start(&t, pid.clone(), rss.clone());

    let load = {
        let (t, changes, rate) = (t.clone(), plan.changes.to_string(), plan.rate.to_string());
        std::thread::spawn(move || {
            ripple(&[
                "loadgen", "--url", SOURCE_URL, "--table", &t, "--count", &changes, "--rate",
                &rate, "--mix", "50,40,10",
            ])
        })
    };
    let mut log = Vec::new();
    let mut note = |line: String| {
        eprintln!("chaos: {line}");
        log.push(line);
    };

    // SIGKILL while a batch is being applied: each time, once the instance holds partitions and
    // has applied something since it started, at the next "apply started" with no "apply finished"
    // after it. The dead process's log proves where the kill landed.
    let mut landed = 0;
    let mut attempts = 0;
    while landed < plan.kills {
        attempts += 1;
        assert!(
            attempts <= plan.kills * 5,
            "only {landed} of {attempts} kills landed inside an apply"
        );
        let mut log = LogTail::new(&ripple_run.log);
        wait_until(
            Duration::from_secs(90),
            "the instance to apply a batch",
            || {
                log.read();
                log.finished > 0
            },
        );
        wait_until(Duration::from_secs(30), "an apply to start", || {
            log.read();
            log.in_apply
        });
        let _ = ripple_run.signal("KILL");
        log.read();
        if log.in_apply {
            landed += 1;
        }
        ripple_run = RippleProcess::start_logging(&config, &[], LOG_FILTER);
        pid.store(ripple_run.pid(), Ordering::Relaxed);
        note(format!(
            "kill {attempts}: SIGKILL {} an apply ({landed} of {} so far), restarted",
            if log.in_apply { "inside" } else { "just after" },
            plan.kills
        ));
    }

    // Malformed records on the table topic.
    let real = consume(&topic, 1).pop().expect("a record");
    let (key, value) = real.split_once('\t').unwrap();
    let unknown_op = value
        .replace("\"op\":\"r\"", "\"op\":\"x\"")
        .replace("\"op\":\"c\"", "\"op\":\"x\"");
    // Valid JSON whose payload does not match its schema: a number where a string belongs.
    let mismatch = value.replacen("\"currency\":\"", "\"currency\":7,\"spare\":\"", 1);
    assert_ne!(mismatch, value, "the first record has a currency");
    let bad = [
        format!("{key}\t{{\"schema\": {{ not json"),
        format!("{key}\t{unknown_op}"),
        format!("{key}\t{mismatch}"),
        format!(
            "{key}\t{{\"payload\": \"{}\"}}",
            "x".repeat(2 * 1024 * 1024)
        ),
    ];
    produce(&topic, &bad);
    note(format!("{} malformed records produced", bad.len()));

    // A second instance in the same group, mid-stream: it takes over some partitions, applies
    // their changes, and hands them back when it stops.
    // The group first waits out the session timeout (10 s) of members SIGKILLed above.
    // Its own metrics port: two processes cannot listen on one.
    let second_config = dir.join("second.toml");
    std::fs::write(
        &second_config,
        std::fs::read_to_string(&config).unwrap().replace(
            &format!("127.0.0.1:{port}"),
            &format!("127.0.0.1:{}", port + 100),
        ),
    )
    .unwrap();
    let second = RippleProcess::start(&second_config, &[]);
    std::thread::sleep(Duration::from_secs(20));
    let second_log = second.log.clone();
    assert!(
        second.signal("TERM").success(),
        "the second instance did not stop cleanly"
    );
    let second_text = std::fs::read_to_string(&second_log).unwrap_or_default();
    let applied: u64 = second_text
        .lines()
        .find_map(|l| l.strip_prefix("applied ")?.split(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(
        applied > 0,
        "the second instance applied nothing:\n{second_text}"
    );
    note(format!(
        "a second instance joined the group for 20 s, applied {applied} events, and left"
    ));

    // Each store down for longer than the retries last. OpenSearch forgets the versions of deleted
    // documents when it restarts: its outage is the one that proves the search sink's own tombstones.
    let outages = ["pg-replica", "redis", "opensearch"];
    for svc in outages {
        assert!(
            ripple_run.is_running(),
            "ripple exited:\n{}",
            ripple_run.log_text()
        );
        stack_cmd(&["stop", svc]);
        rss.lock().unwrap().in_outage = true;
        let down = Instant::now();
        std::thread::sleep(plan.outage);
        stack_cmd(&["start", svc]);
        rss.lock().unwrap().in_outage = false;
        note(format!(
            "{svc} down for {:.0} s",
            down.elapsed().as_secs_f64()
        ));
    }
    assert!(
        ripple_run.log_text().contains("consumption paused"),
        "backpressure never engaged:\n{}",
        ripple_run.log_text()
    );

    // Each store refusing writes for a reason of its own, then frozen: an outage every time, never
    // bad data. /readyz must name the sink and the cause while it lasts.
    let hold = plan.outage / 2;
    let mut seen = Vec::new();
    for fault in FAULTS {
        assert!(
            ripple_run.is_running(),
            "ripple exited:\n{}",
            ripple_run.log_text()
        );
        rss.lock().unwrap().in_outage = true;
        let began = Instant::now();
        (fault.start)(&t);
        let readyz = wait_down(port, fault.sink, fault.causes);
        std::thread::sleep(hold);
        (fault.end)(&t);
        wait_up(port, fault.sink);
        rss.lock().unwrap().in_outage = false;
        note(format!(
            "{}: {:.0} s, /readyz said: {}",
            fault.name,
            began.elapsed().as_secs_f64(),
            readyz_reason(&readyz, fault.sink)
        ));
        seen.push(fault.name);
    }

    // The broker restarts once.
    stack_cmd(&["stop", "kafka"]);
    std::thread::sleep(Duration::from_secs(3));
    stack_cmd(&["start", "kafka"]);
    note("the Kafka broker restarted".into());

    let load = load.join().unwrap();
    assert!(load.status.success(), "{}", text(&load));
    note(format!(
        "load: {}",
        String::from_utf8_lossy(&load.stdout).trim()
    ));

    // Every store equal to the source.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = String::new();
    loop {
        let out = ripple(&[
            "verify",
            "--config",
            config.to_str().unwrap(),
            "--table",
            &format!("public.{t}"),
        ]);
        if out.status.success() {
            last = text(&out);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stores not equal 180 s after the load: {}\n{last}\nripple log:\n{}",
            text(&out),
            ripple_run.log_text()
        );
        last = text(&out);
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(
        ripple_run.is_running(),
        "ripple exited:\n{}",
        ripple_run.log_text()
    );
    let (regressions, samples) = sampler.finish();
    assert!(
        ripple_run.signal("TERM").success(),
        "ripple did not stop cleanly"
    );

    // Every malformed record dead-lettered with its reason. At least once, like everything else:
    // a record dead-lettered just before a kill or a rebalance, and not yet committed, is read and
    // dead-lettered again by whoever consumes it next.
    let letters = dead_letters(&dlq);
    let decode: std::collections::BTreeSet<&str> = letters
        .iter()
        .filter(|(h, _)| {
            h.contains("ripple.error.stage=decode") && h.contains("ripple.error.reason=")
        })
        .filter_map(|(h, _)| h.split("ripple.original.offset=").nth(1))
        .map(|o| o.split(',').next().unwrap_or(o))
        .collect();
    assert_eq!(decode.len(), bad.len(), "{letters:#?}");
    assert!(
        letters.iter().any(|(_, size)| *size > 2_000_000),
        "the 2 MB record is dead-lettered whole"
    );
    let refused: Vec<_> = letters
        .iter()
        .filter(|(h, _)| h.contains("ripple.error.stage=apply"))
        .collect();
    assert!(
        refused.is_empty(),
        "an outage was dead-lettered: {refused:#?}"
    );
    assert!(
        regressions.is_empty(),
        "versions went down: {regressions:#?}"
    );
    for store in ["replica", "redis", "index"] {
        let n = samples.get(store).copied().unwrap_or(0);
        assert!(
            n > 5,
            "only {n} version samples of the {store}: {samples:?}"
        );
    }
    let samples = format!(
        "{} / {} / {}",
        samples["replica"], samples["redis"], samples["index"]
    );

    let rss = rss.lock().unwrap();
    assert!(
        rss.outage_peak_kb > 0,
        "RSS was never sampled during an outage"
    );
    assert!(
        rss.outage_peak_kb < 256 * 1024,
        "Ripple's RSS reached {} MB while a store was down (bound: 256 MB)",
        rss.outage_peak_kb / 1024
    );
    let report = format!(
        "chaos report ({} mode, {:.0} s): {} SIGKILLs inside an apply survived ({} tries); outages survived: {} ({} s each), {} and one Kafka restart; \
         a second instance shared the partitions; {} malformed records, all dead-lettered with reasons ({} dead letters); {} version samples (replica / Redis / index), 0 regressions, 0 events dead-lettered by a sink; \
         Ripple peak RSS {} MB overall, {} MB during the outages (bound 256 MB)\n{}\n{}",
        if plan.kills > 3 { "full" } else { "short" },
        started.elapsed().as_secs_f64(),
        plan.kills,
        attempts,
        outages.join(", "),
        plan.outage.as_secs(),
        seen.join(", "),
        bad.len(),
        letters.len(),
        samples,
        rss.peak_kb / 1024,
        rss.outage_peak_kb / 1024,
        log.join("\n"),
        last.lines()
            .filter(|l| l.contains("EQUAL") || l.contains("source"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    eprintln!("{report}");
    std::fs::write(dir.join("chaos-report.txt"), &report).unwrap();

    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    search_request("DELETE", &format!("{t}-{t}"), None);
    // The cache's keys and key sets, so runs do not pile up in the stack's Redis.
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "redis-cli -p 16379 --scan --pattern '{t}*' | xargs -r -n 5000 redis-cli -p 16379 DEL; \
             redis-cli -p 16379 --scan --pattern 'ripple:keys:*{t}*' | xargs -r redis-cli -p 16379 DEL"
        ))
        .output();
}
