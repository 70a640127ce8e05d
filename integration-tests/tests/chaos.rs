//! The chaos suite: the seed workload flows through real Debezium into the replica, Redis and the
//! search index while Ripple is SIGKILLed and restarted, each store is stopped mid-stream for longer
//! than Ripple's retries last (so backpressure engages), the Kafka broker restarts, a second
//! instance joins the consumer group and leaves, and malformed records land on the table topic.
//! Afterwards every store must equal the source, every malformed record must be in the
//! dead-letter topic with its reason, and no row's version may ever have gone down (sampled from
//! the replica and Redis throughout).
//!
//! `cargo test -p ripple-integration-tests --test chaos` runs the short version (part of
//! `scripts/test`); `RIPPLE_CHAOS=full` runs the full one (10 kills, longer outages, more load).
//! The figures go to stderr and to `target/it/<table>/chaos-report.txt`.

mod common;

use common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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
                changes: 60_000,
                rate: 500,
            }
        } else {
            // The load lasts past the fault schedule, so each outage meets changes to apply
            // (and backpressure engages), also on a slow machine.
            Plan {
                kills: 3,
                outage: Duration::from_secs(6),
                changes: 12_000,
                rate: 200,
            }
        }
    }
}

/// A psql query that reports failure instead of panicking (stores go down on purpose here).
fn try_psql(url: &str, sql: &str) -> Option<String> {
    let out = Command::new("psql")
        .args([url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
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
    samples: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(table: &str, pid: Arc<AtomicU32>, rss: Arc<Mutex<RssLog>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let regressions = Arc::new(Mutex::new(Vec::new()));
        let samples = Arc::new(AtomicU64::new(0));
        let (t, s, r, n) = (
            table.to_string(),
            stop.clone(),
            regressions.clone(),
            samples.clone(),
        );
        let handle = std::thread::spawn(move || {
            let mut seen: HashMap<String, HashMap<String, (u64, u64)>> = HashMap::new();
            let mut check = |store: &str, now: HashMap<String, (u64, u64)>| {
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
                    n.fetch_add(1, Ordering::Relaxed);
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

    fn finish(mut self) -> (Vec<String>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        (
            self.regressions.lock().unwrap().clone(),
            self.samples.load(Ordering::Relaxed),
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

fn stack_cmd(args: &[&str]) {
    let out = stack(args);
    assert!(
        out.status.success(),
        "scripts/stack {args:?}: {}",
        text(&out)
    );
}

fn config(dir: &Path, t: &str, topic: &str, dlq: &str) -> PathBuf {
    let text = format!(
        r#"
[kafka]
brokers = "{BROKERS}"
group_id = "{t}"
topics = ["{topic}"]

[source]
url = "{SOURCE_URL}"
topic_prefix = "{t}"

[pipeline]
batch_size = 2000
# Retries run out within a second or two, so every outage below outlasts them.
max_retries = 3
retry_initial_delay_ms = 100
retry_max_delay_ms = 1000

[sinks.replica]
type = "postgres"
url = "{REPLICA_URL}"

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
    let config = config(&dir, &t, &topic, &dlq);

    let pid = Arc::new(AtomicU32::new(0));
    let rss = Arc::new(Mutex::new(RssLog::default()));
    let mut ripple_run = RippleProcess::start(&config, &[]);
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

    // SIGKILL at random moments, restart at once.
    let mut seed = std::process::id() as u64;
    let mut random = |lo: u64, hi: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (seed >> 33) % (hi - lo)
    };
    for i in 0..plan.kills {
        std::thread::sleep(Duration::from_millis(random(700, 2500)));
        assert!(
            ripple_run.is_running(),
            "ripple exited by itself:\n{}",
            ripple_run.log_text()
        );
        let _ = ripple_run.signal("KILL");
        ripple_run = RippleProcess::start(&config, &[]);
        pid.store(ripple_run.pid(), Ordering::Relaxed);
        note(format!(
            "kill {} of {}: SIGKILL, restarted",
            i + 1,
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
    let second = RippleProcess::start(&config, &[]);
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
    assert!(
        regressions.is_empty(),
        "versions went down: {regressions:#?}"
    );
    assert!(samples > 5, "only {samples} version samples");

    let rss = rss.lock().unwrap();
    let report = format!(
        "chaos report ({} mode, {:.0} s): {} SIGKILLs survived; outages survived: {} ({} s each) and one Kafka restart; \
         a second instance shared the partitions; {} malformed records, all dead-lettered with reasons ({} dead letters); {} version samples, 0 regressions; \
         Ripple peak RSS {} MB overall, {} MB during the outages\n{}\n{}",
        if plan.kills > 3 { "full" } else { "short" },
        started.elapsed().as_secs_f64(),
        plan.kills,
        outages.join(", "),
        plan.outage.as_secs(),
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
}
