//! Bad input loses nothing and stops nothing: malformed records on a table topic (bad JSON, an
//! unknown op, a payload that does not match its schema, a 2 MB value) and a row the replica
//! rejects (a CHECK constraint) all land in the dead-letter topic with their reason, while every
//! good change around them is applied. Once the cause is fixed, `ripple replay --dead-letter`
//! re-drives the topic and the replica equals the source.

mod common;

use common::*;
use std::time::Duration;

fn verify(config: &std::path::Path, table: &str) -> std::process::Output {
    ripple(&[
        "verify",
        "--config",
        config.to_str().unwrap(),
        "--table",
        &format!("public.{table}"),
    ])
}

#[test]
fn bad_records_go_to_the_dead_letter_topic_and_the_pipeline_goes_on() {
    require_stack();
    let t = unique("e2e_dlq");
    let dir = temp_dir(&t);
    let dlq = format!("{t}.dead-letter");
    psql(
        SOURCE_URL,
        &format!("CREATE TABLE public.{t} (id int PRIMARY KEY, qty int, note text)"),
    );
    // The replica refuses negative stock: a permanent rejection of one row.
    psql(
        REPLICA_URL,
        &format!(
            "CREATE TABLE public.{t} (id int PRIMARY KEY, qty int CONSTRAINT qty_not_negative CHECK (qty >= 0), note text)"
        ),
    );
    let connector = Connector::start(&t.replace('_', "-"), &t, &format!("public.{t}"));
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
        &format!("INSERT INTO public.{t} SELECT g, g, 'n' FROM generate_series(1, 200) g"),
    );
    psql(
        SOURCE_URL,
        &format!("UPDATE public.{t} SET qty = -1 WHERE id = 77"),
    );
    wait_until(
        Duration::from_secs(60),
        "the first changes to apply",
        || psql(REPLICA_URL, &format!("SELECT count(*) FROM public.{t}")) == "200",
    );

    // Malformed records, built from a real one of this topic.
    let real = consume(&topic, 1).pop().expect("a record");
    let (key, value) = real.split_once('\t').unwrap();
    assert!(
        value.contains("\"op\":\"r\"") || value.contains("\"op\":\"c\""),
        "{value}"
    );
    let unknown_op = value
        .replace("\"op\":\"r\"", "\"op\":\"x\"")
        .replace("\"op\":\"c\"", "\"op\":\"x\"");
    let mismatch = value.replacen("\"qty\":1", "\"qty\":\"one\"", 1);
    assert_ne!(mismatch, value, "the record has qty 1");
    let huge = format!("{{\"schema\": \"{}\"", "x".repeat(2 * 1024 * 1024));
    produce(
        &topic,
        &[
            format!("{key}\t{{\"schema\": {{ not json"),
            format!("{key}\t{unknown_op}"),
            format!("{key}\t{mismatch}"),
            format!("{key}\t{huge}"),
        ],
    );
    // Good changes after the bad ones still arrive.
    psql(
        SOURCE_URL,
        &format!("UPDATE public.{t} SET note = 'after' WHERE id <= 50"),
    );
    wait_until(
        Duration::from_secs(60),
        "changes after the bad records",
        || {
            psql(
                REPLICA_URL,
                &format!("SELECT count(*) FROM public.{t} WHERE note = 'after'"),
            ) == "50"
        },
    );
    wait_until(Duration::from_secs(60), "five dead letters", || {
        dead_letters(&dlq).len() >= 5
    });
    assert!(run.is_running(), "ripple stopped on bad input");

    let letters = dead_letters(&dlq);
    assert_eq!(letters.len(), 5, "{letters:?}");
    for (headers, _) in &letters {
        assert!(headers.contains("ripple.error.reason="), "{headers}");
        assert!(
            headers.contains(&format!("ripple.original.topic={topic}")),
            "{headers}"
        );
        assert!(headers.contains("ripple.original.offset="), "{headers}");
    }
    let decode: Vec<&(String, usize)> = letters
        .iter()
        .filter(|(h, _)| h.contains("ripple.error.stage=decode"))
        .collect();
    assert_eq!(decode.len(), 4, "{letters:?}");
    assert!(
        decode.iter().any(|(h, _)| h.contains("unknown op")),
        "{decode:?}"
    );
    assert!(
        decode.iter().any(|(_, size)| *size > 2_000_000),
        "the 2 MB value is kept whole"
    );
    let rejected: Vec<&(String, usize)> = letters
        .iter()
        .filter(|(h, _)| h.contains("ripple.error.stage=apply"))
        .collect();
    assert_eq!(rejected.len(), 1, "{letters:?}");
    assert!(
        rejected[0].0.contains("ripple.error.sink=replica"),
        "{rejected:?}"
    );
    assert!(rejected[0].0.contains("qty_not_negative"), "{rejected:?}");

    // Only the rejected row differs, and it is older in the replica, not lost.
    let out = verify(&config, &t);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("different 1"), "{}", text(&out));
    assert!(run.signal("TERM").success());

    // The cause fixed, the dead letters re-driven: the replica equals the source.
    psql(
        REPLICA_URL,
        &format!("ALTER TABLE public.{t} DROP CONSTRAINT qty_not_negative"),
    );
    let replay = ripple(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--dead-letter",
        &dlq,
    ]);
    let replay_text = text(&replay);
    assert!(
        replay_text.contains("1 events applied") && replay_text.contains("4 still undecodable"),
        "{replay_text}"
    );
    let out = verify(&config, &t);
    assert!(out.status.success(), "{}", text(&out));

    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
}
