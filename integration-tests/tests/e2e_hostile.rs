//! Hostile values in bounded memory: records of a real table topic altered to carry a decimal scale
//! of 2^31 - 1 and an unscaled value of 120,000 base64 characters (no PostgreSQL numeric has
//! either) are dead-lettered with their reason, Ripple's peak RSS stays under 256 MB, and the
//! changes after them are applied.

mod common;

use common::*;
use std::time::Duration;

/// Replaces the digits after every `"scale":` in `record` by `scale`.
fn with_scale(record: &str, scale: &str) -> String {
    let mut out = String::new();
    let mut rest = record;
    while let Some(at) = rest.find("\"scale\":") {
        let (head, tail) = rest.split_at(at + "\"scale\":".len());
        out.push_str(head);
        let digits = tail.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 {
            out.push_str(scale);
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn over_limit_values_are_dead_lettered_in_bounded_memory() {
    require_stack();
    let t = unique("e2e_hostile");
    let dir = temp_dir(&t);
    let dlq = format!("{t}.dead-letter");
    for url in [SOURCE_URL, REPLICA_URL] {
        psql(
            url,
            &format!("CREATE TABLE public.{t} (id int PRIMARY KEY, amount numeric)"),
        );
    }
    // Decimals as Debezium sends them by default: {scale, value} (the stack's template uses strings).
    let connector = Connector::with_settings(
        &t.replace('_', "-"),
        &t,
        &format!("public.{t}"),
        1,
        r#"{"decimal.handling.mode": "precise"}"#,
    );
    let topic = connector.topic(&t);
    let config = write_config(
        &dir,
        std::slice::from_ref(&topic),
        &t,
        &format!("\n[dead_letter]\ntopic = \"{dlq}\"\n"),
    );
    let mut run = RippleProcess::start(&config, &[]);
    psql(
        SOURCE_URL,
        &format!("INSERT INTO public.{t} SELECT g, g / 100.0 FROM generate_series(1, 50) g"),
    );
    let count = || psql(REPLICA_URL, &format!("SELECT count(*) FROM public.{t}"));
    wait_until(Duration::from_secs(60), "the first rows", || {
        count() == "50"
    });

    let real = consume(&topic, 1).pop().expect("a record");
    let (key, value) = real.split_once('\t').unwrap();
    assert!(value.contains("VariableScaleDecimal"), "{value}");
    let huge_scale = with_scale(value, "2147483647");
    assert_ne!(huge_scale, value, "the record has a scale");
    let long = format!("\"value\":\"{}\"", "A".repeat(120_000));
    let huge_digits = value.replacen("\"value\":\"", &format!("{long},\"x\":\""), 1);
    assert_ne!(huge_digits, value, "the record has an unscaled value");
    produce(
        &topic,
        &[
            format!("{key}\t{huge_scale}"),
            format!("{key}\t{huge_digits}"),
        ],
    );
    psql(
        SOURCE_URL,
        &format!("INSERT INTO public.{t} SELECT g, g / 100.0 FROM generate_series(51, 100) g"),
    );
    wait_until(
        Duration::from_secs(60),
        "the rows after the bad records",
        || count() == "100",
    );

    let peak = peak_rss_kb(run.pid());
    assert!(run.is_running(), "ripple stopped:\n{}", run.log_text());
    let letters = dead_letters(&dlq);
    let reasons: Vec<&String> = letters.iter().map(|(h, _)| h).collect();
    assert_eq!(letters.len(), 2, "{reasons:#?}");
    assert!(
        reasons.iter().any(|h| h.contains("scale 2147483647")),
        "{reasons:#?}"
    );
    assert!(reasons.iter().any(|h| h.contains("digits")), "{reasons:#?}");
    assert!(
        reasons
            .iter()
            .all(|h| h.contains("ripple.error.stage=decode")),
        "{reasons:#?}"
    );
    assert!(peak > 0 && peak < 256 * 1024, "peak RSS {} MB", peak / 1024);
    println!(
        "2 over-limit records dead-lettered, 100 rows applied, peak RSS {} MB",
        peak / 1024
    );
    assert!(run.signal("TERM").success());
    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
}
