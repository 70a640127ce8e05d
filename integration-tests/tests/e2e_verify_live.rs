//! Live verification: while the seed workload writes at a steady rate and Ripple applies it to
//! the replica, Redis and the index, `ripple verify --live` reports no difference across three
//! passes (each difference the pass sees is read again until the sink has caught up with it),
//! and a corruption injected into each store is reported in the next pass.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn live_pass(config: &std::path::Path, table: &str) -> (serde_json::Value, bool) {
    let out = ripple(&[
        "verify",
        "--config",
        config.to_str().unwrap(),
        "--table",
        table,
        "--json",
        "--live",
        "--settle-s",
        "20",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", text(&out)));
    (report, out.status.success())
}

#[test]
fn live_verify_reports_no_false_difference_under_load_and_finds_a_corruption() {
    require_stack();
    let table = unique("e2e_vlive");
    let dir = temp_dir(&table);
    let setup = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &table, "--drop", "--setup", "--count", "3000",
    ]);
    assert!(setup.status.success(), "loadgen failed: {}", text(&setup));
    let connector = Connector::start(&table.replace('_', "-"), &table, &format!("public.{table}"));
    let topic = connector.topic(&table);
    // `ripple run` verifies in the background too, every 2 s, and shows it in /metrics.
    let port = 19100 + (std::process::id() % 300) as u16;
    let extra = cache_and_search(&topic)
        + &format!(
            "\n[verify]\ninterval_s = 2\nsettle_s = 30\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
        );
    let config = write_config(&dir, std::slice::from_ref(&topic), &table, &extra);
    let _run = RippleProcess::start(&config, &[]);
    let qualified = format!("public.{table}");
    wait_verified(&config, &qualified, 3, Duration::from_secs(180));

    // A steady load for the rest of the test.
    let mut load = Command::new(ripple_bin())
        .args([
            "loadgen", "--url", SOURCE_URL, "--table", &table, "--count", "10000000", "--rate",
            "150", "--batch", "5", "--seed", "7",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start loadgen");
    std::thread::sleep(Duration::from_secs(3));

    let mut suspects = 0;
    for pass in 1..=3 {
        let (report, ok) = live_pass(&config, &qualified);
        let tables = report["tables"].as_array().unwrap();
        assert_eq!(tables.len(), 3, "pass {pass}: {report}");
        for t in tables {
            assert_eq!(
                verify_counts(t),
                (0, 0, 0),
                "pass {pass}, {}: {t}",
                t["sink"]
            );
            suspects += t["live"]["suspects"].as_i64().unwrap_or(0);
        }
        assert!(ok, "pass {pass}: {report}");
        eprintln!(
            "pass {pass}: {:?}",
            tables
                .iter()
                .map(|t| (
                    t["sink"].clone(),
                    t["source_rows"].clone(),
                    t["live"].clone()
                ))
                .collect::<Vec<_>>()
        );
    }
    // The load was really seen mid-flight: some rows differed when first read and agreed later.
    assert!(
        suspects > 0,
        "no pass saw a row the sinks had not applied yet"
    );
    // The background passes under the same load: run to the end, and never different.
    let metric = |body: &str, name: &str| -> Option<f64> {
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let (_, body) = http_get(port, "/metrics");
    assert!(
        metric(&body, "ripple_verify_runs_total{outcome=\"equal\"}").unwrap_or(0.0) >= 1.0,
        "{body}"
    );
    assert_eq!(
        metric(&body, "ripple_verify_runs_total{outcome=\"different\"}"),
        None,
        "{body}"
    );
    assert_eq!(
        metric(&body, "ripple_verify_runs_total{outcome=\"failed\"}"),
        None,
        "{body}"
    );

    // One row only each store holds, made behind Ripple's back: the next pass names it.
    let ghost = "ffffffff-verify-live-extra";
    psql(
        REPLICA_URL,
        &format!(
            "INSERT INTO public.{table} (transaction_id, user_id, amount) \
             SELECT '{ghost}', user_id, amount FROM public.{table} LIMIT 1"
        ),
    );
    redis_cli(&["HSET", &format!("{table}:{ghost}"), "transaction_id", ghost]);
    redis_cli(&[
        "SADD",
        &format!("ripple:keys:cache:public.{table}"),
        &format!("{table}:{ghost}"),
    ]);
    let answer = search_request(
        "PUT",
        &format!("{table}/_doc/{ghost}?refresh=true"),
        Some(&format!("{{\"transaction_id\": \"{ghost}\"}}")),
    );
    assert_eq!(answer["result"], "created", "{answer}");
    let (report, ok) = live_pass(&config, &qualified);
    assert!(!ok, "{report}");
    for t in report["tables"].as_array().unwrap() {
        assert_eq!(verify_counts(t), (0, 1, 0), "{}: {t}", t["sink"]);
        let sample = t["samples"]["extra"][0][0]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(sample.contains(ghost), "{}: {t}", t["sink"]);
    }

    // The background verification names it too: its differences gauge goes to 1 for each sink.
    wait_until(
        Duration::from_secs(120),
        "the background pass to count the extra row",
        || {
            let (_, body) = http_get(port, "/metrics");
            ["replica", "cache", "search"].iter().all(|sink| {
                metric(
                    &body,
                    &format!("ripple_verify_differences{{sink=\"{sink}\",table=\"{qualified}\"}}"),
                ) == Some(1.0)
            })
        },
    );

    let _ = load.kill();
    let _ = load.wait();
    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{table}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{table}"));
    search_request("DELETE", &table, None);
}
