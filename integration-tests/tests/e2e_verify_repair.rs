//! Verify and repair at size: a table of RIPPLE_VERIFY_ROWS rows (default 1,000,000) replicated by
//! Debezium and Ripple into the replica, Redis and the index; then a few hundred corruptions made
//! directly in each store (rows deleted, values changed, rows only the store holds). Verify must
//! name exactly those, within its memory bound as the kernel measures it; `--repair` must fix them,
//! each store read back by its own client afterwards; and verify must then say EQUAL.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Corruptions of each kind in each store.
const EACH: i64 = 100;
/// The bound verify runs with.
const MAX_MEMORY_MB: i64 = 64;

fn rows() -> i64 {
    std::env::var("RIPPLE_VERIFY_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// The ids each kind of corruption hits, spread over the whole table.
fn ids(kind: i64) -> Vec<i64> {
    let step = rows() / EACH;
    (0..EACH).map(|k| 1 + k * step + kind).collect()
}

fn extra_ids() -> Vec<i64> {
    (1..=EACH).map(|k| rows() + 1000 + k * 7).collect()
}

/// Runs verify, waits for it with `wait4` and returns its JSON report, its exit code and the
/// peak resident memory the kernel recorded for it, in MiB.
fn verify_measured(
    config: &std::path::Path,
    table: &str,
    extra: &[&str],
) -> (serde_json::Value, i32, i64) {
    let child = Command::new(ripple_bin())
        .args([
            "verify",
            "--config",
            config.to_str().unwrap(),
            "--table",
            table,
            "--json",
        ])
        .args(["--max-memory-mb", &MAX_MEMORY_MB.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ripple verify");
    let pid = child.id() as libc::pid_t;
    let output = std::thread::spawn(move || {
        use std::io::Read;
        let (mut out, mut err) = (String::new(), String::new());
        let mut child = child;
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        std::mem::forget(child); // reaped by wait4 below
        (out, err)
    });
    let mut status = 0;
    // SAFETY: a plain wait for our own child; the structs are zeroed C data.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let (out, err) = output.join().unwrap();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let report = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("verify printed no JSON report ({e}): {out}\n{err}"));
    (report, code, usage.ru_maxrss / 1024)
}

fn table_report<'a>(report: &'a serde_json::Value, sink: &str) -> &'a serde_json::Value {
    report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["sink"] == sink)
        .unwrap_or_else(|| panic!("no comparison for sink {sink}: {report}"))
}

#[test]
fn verify_names_every_corruption_in_bounded_memory_and_repair_fixes_them() {
    require_stack();
    let n = rows();
    let table = unique("e2e_vrep");
    let dir = temp_dir(&table);
    psql(
        SOURCE_URL,
        &format!(
            "DROP TABLE IF EXISTS public.{table}; \
             CREATE TABLE public.{table} (id bigint PRIMARY KEY, account int NOT NULL, \
               amount numeric(12,2), note text, at timestamptz); \
             INSERT INTO public.{table} SELECT i, i % 997, (i % 100000) / 100.0, 'note ' || i, \
               timestamptz '2025-01-01 00:00:00+00' + i * interval '1 second' \
             FROM generate_series(1, {n}) i; ANALYZE public.{table}"
        ),
    );
    let connector = Connector::start(&table.replace('_', "-"), &table, &format!("public.{table}"));
    let topic = connector.topic(&table);
    let config = write_config(
        &dir,
        std::slice::from_ref(&topic),
        &table,
        &cache_and_search(&topic),
    );
    let started = Instant::now();
    let run = RippleProcess::start(&config, &[]);
    let index = table.clone();
    let keys = format!("ripple:keys:cache:public.{table}");
    wait_until(
        Duration::from_secs(900),
        "every store to hold every row",
        || {
            psql(
                REPLICA_URL,
                &format!("SELECT to_regclass('public.{table}') IS NOT NULL"),
            ) == "t"
                && psql(REPLICA_URL, &format!("SELECT count(*) FROM public.{table}"))
                    == n.to_string()
                && redis_cli(&["SCARD", &keys]) == n.to_string()
                && search_request("GET", &format!("{index}/_count"), None)["count"].as_i64()
                    == Some(n)
        },
    );
    eprintln!("{n} rows in all three stores after {:?}", started.elapsed());
    // Offline: nothing changes the stores but the corruptions below and the repair.
    drop(run);

    let list = |ids: &[i64]| {
        ids.iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (gone, changed, extra) = (ids(0), ids(1), extra_ids());
    psql(
        REPLICA_URL,
        &format!(
            "DELETE FROM public.{table} WHERE id IN ({}); \
             UPDATE public.{table} SET amount = -1 WHERE id IN ({}); \
             INSERT INTO public.{table} (id, account, amount, note) SELECT i, 1, 1, 'extra' FROM unnest(ARRAY[{}]::bigint[]) i",
            list(&gone),
            list(&changed),
            list(&extra)
        ),
    );
    let mut redis = String::new();
    for id in &gone {
        redis += &format!("DEL {table}:{id}\n");
    }
    for id in &changed {
        redis += &format!("HSET {table}:{id} note corrupted\n");
    }
    for id in &extra {
        redis +=
            &format!("HSET {table}:{id} id {id} account 1 note extra\nSADD {keys} {table}:{id}\n");
    }
    let mut cli = Command::new("redis-cli")
        .args(["-p", "16379"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    cli.stdin
        .take()
        .unwrap()
        .write_all(redis.as_bytes())
        .unwrap();
    assert!(cli.wait().unwrap().success());
    let mut bulk = String::new();
    for id in &gone {
        bulk += &format!("{{\"delete\":{{\"_index\":\"{index}\",\"_id\":\"{id}\"}}}}\n");
    }
    for id in &changed {
        bulk += &format!(
            "{{\"update\":{{\"_index\":\"{index}\",\"_id\":\"{id}\"}}}}\n{{\"doc\":{{\"note\":\"corrupted\"}}}}\n"
        );
    }
    for id in &extra {
        bulk += &format!(
            "{{\"index\":{{\"_index\":\"{index}\",\"_id\":\"{id}\"}}}}\n{{\"id\":{id},\"account\":1,\"note\":\"extra\"}}\n"
        );
    }
    let answer = search_request("POST", "_bulk?refresh=true", Some(&bulk));
    assert_eq!(answer["errors"], false, "{answer}");

    // Verify names exactly the corruptions, in every store, within its bound.
    let qualified = format!("public.{table}");
    let t0 = Instant::now();
    let (report, code, rss) = verify_measured(&config, &qualified, &[]);
    eprintln!(
        "verify of 3 x {n} rows: {:?}, peak RSS {rss} MiB",
        t0.elapsed()
    );
    for t in report["tables"].as_array().unwrap() {
        eprintln!("  {}: {} ms", t["sink"], t["elapsed_ms"]);
    }
    assert_eq!(code, 1, "{report}");
    for sink in ["replica", "cache", "search"] {
        let t = table_report(&report, sink);
        assert_eq!(verify_counts(t), (EACH, EACH, EACH), "{sink}: {t}");
        assert_eq!(t["source_rows"], n, "{sink}: {t}");
    }
    let replica = table_report(&report, "replica");
    assert_eq!(
        replica["samples"]["missing"][0][0],
        gone[0].to_string(),
        "{replica}"
    );
    assert_eq!(
        replica["samples"]["extra"][0][0],
        extra[0].to_string(),
        "{replica}"
    );
    let cache = table_report(&report, "cache");
    assert!(
        cache["samples"]["why_different"][0]
            .as_str()
            .unwrap()
            .contains("\"note\""),
        "{cache}"
    );
    assert!(
        rss < MAX_MEMORY_MB,
        "verify held {rss} MiB at its peak, over its bound of {MAX_MEMORY_MB} MiB"
    );
    assert_eq!(
        report["peak_rss_mb"].as_i64().map(|r| r <= rss),
        Some(true),
        "{report}"
    );

    // Repair, then the comparison after it is equal.
    let t0 = Instant::now();
    let (report, code, rss) = verify_measured(&config, &qualified, &["--repair"]);
    eprintln!("verify --repair: {:?}, peak RSS {rss} MiB", t0.elapsed());
    for sink in ["replica", "cache", "search"] {
        let t = table_report(&report, sink);
        let r = &t["repair"];
        assert_eq!(
            (
                r["found"].as_i64(),
                r["rewritten"].as_i64(),
                r["removed"].as_i64(),
                r["failed"].as_i64()
            ),
            (Some(3 * EACH), Some(2 * EACH), Some(EACH), Some(0)),
            "{sink}: {t}"
        );
        assert_eq!(verify_counts(t), (0, 0, 0), "{sink} after the repair: {t}");
    }
    assert_eq!(code, 0, "{report}");

    // Each store read by its own client: the rows are the source's again, the extras gone.
    let source_rows = psql(
        SOURCE_URL,
        &format!(
            "SELECT string_agg(concat_ws('|', id, account, amount, note, at), ',' ORDER BY id) \
             FROM public.{table} WHERE id IN ({}, {})",
            list(&gone),
            list(&changed)
        ),
    );
    let replica_rows = psql(
        REPLICA_URL,
        &format!(
            "SELECT string_agg(concat_ws('|', id, account, amount, note, at), ',' ORDER BY id) \
             FROM public.{table} WHERE id IN ({}, {})",
            list(&gone),
            list(&changed)
        ),
    );
    assert_eq!(replica_rows, source_rows);
    assert_eq!(
        psql(
            REPLICA_URL,
            &format!(
                "SELECT count(*) FROM public.{table} WHERE id IN ({})",
                list(&extra)
            )
        ),
        "0"
    );
    for id in gone.iter().chain(&changed) {
        let note = redis_cli(&["HGET", &format!("{table}:{id}"), "note"]);
        assert_eq!(note, format!("note {id}"), "redis {table}:{id}");
        let doc = search_request("GET", &format!("{index}/_doc/{id}"), None);
        assert_eq!(
            doc["_source"]["note"],
            format!("note {id}"),
            "index {id}: {doc}"
        );
    }
    for id in &extra {
        assert_eq!(redis_cli(&["EXISTS", &format!("{table}:{id}")]), "0");
        assert_eq!(
            redis_cli(&["SISMEMBER", &keys, &format!("{table}:{id}")]),
            "0"
        );
        let doc = search_request("GET", &format!("{index}/_doc/{id}"), None);
        assert_eq!(doc["found"], false, "index {id}: {doc}");
    }

    if std::env::var_os("RIPPLE_VERIFY_KEEP").is_some() {
        // For profiling by hand: the stores stay as they are, and the connector too.
        eprintln!("kept: {} (table public.{table})", config.display());
        std::mem::forget(connector);
        return;
    }
    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{table}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{table}"));
    search_request("DELETE", &index, None);
    let _ = redis_cli(&[
        "EVAL",
        "for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do redis.call('DEL', k) end return redis.call('DEL', KEYS[1], KEYS[1] .. ':versions')",
        "1",
        &keys,
    ]);
}

/// Deletes a Redis sink's keys of one table, its key set and its versions.
fn drop_keys(set: &str) {
    let _ = redis_cli(&[
        "EVAL",
        "for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do redis.call('DEL', k) end \
         return redis.call('DEL', KEYS[1], KEYS[1] .. ':versions')",
        "1",
        set,
    ]);
}

/// A sink added after the table's changes went by: `ripple backfill` writes every source row
/// into it through its versioned writes, and it then verifies equal.
#[test]
fn backfill_fills_a_sink_added_later() {
    require_stack();
    let table = unique("e2e_vfill");
    let dir = temp_dir(&table);
    let n = 5000;
    psql(
        SOURCE_URL,
        &format!(
            "DROP TABLE IF EXISTS public.{table}; \
             CREATE TABLE public.{table} (id bigint PRIMARY KEY, note text, at timestamptz); \
             INSERT INTO public.{table} SELECT i, 'note ' || i, now() FROM generate_series(1, {n}) i"
        ),
    );
    let topic = format!("{table}.public.{table}");
    let config = write_config(&dir, std::slice::from_ref(&topic), &table, "");
    let later = dir.join("later.toml");
    std::fs::write(
        &later,
        std::fs::read_to_string(&config).unwrap()
            + &format!(
                "\n[sinks.later]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:16379\"\nkey = \"later:{{table}}:{{pk}}\"\n\
                 \n[[routes]]\ntopics = [\"{topic}\"]\nsinks = [\"later\"]\n"
            ),
    )
    .unwrap();
    let qualified = format!("public.{table}");
    let out = ripple(&[
        "backfill",
        "--config",
        later.to_str().unwrap(),
        "--sink",
        "later",
        "--table",
        &qualified,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{n} source rows, {n} written")),
        "{}",
        text(&out)
    );
    let later_keys = format!("ripple:keys:later:public.{table}");
    assert_eq!(redis_cli(&["SCARD", &later_keys]), n.to_string());
    assert_eq!(
        redis_cli(&["HGET", &format!("later:{table}:17"), "note"]),
        "note 17"
    );
    // Written at the version just after nothing: any real change wins over it.
    assert_eq!(
        redis_cli(&[
            "HGET",
            &format!("{later_keys}:versions"),
            &format!("later:{table}:17")
        ]),
        "0:1"
    );
    let out = ripple(&[
        "verify",
        "--config",
        later.to_str().unwrap(),
        "--sink",
        "later",
        "--table",
        &qualified,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{table}"));
    drop_keys(&later_keys);
}
