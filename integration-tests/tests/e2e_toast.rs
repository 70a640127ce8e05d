//! Unchanged large values: with REPLICA IDENTITY DEFAULT an update that does not touch a TOASTed
//! column arrives with Debezium's unavailable-value placeholder in its place. Every sink must keep
//! the real value it holds.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn unchanged_large_values_survive_updates_in_every_sink() {
    require_stack();
    let table = unique("e2e_toast");
    let dir = temp_dir(&table);
    psql(
        SOURCE_URL,
        &format!(
            "CREATE TABLE public.{table} (id int PRIMARY KEY, n int, body text); \
             ALTER TABLE public.{table} ALTER COLUMN body SET STORAGE EXTERNAL; \
             ALTER TABLE public.{table} REPLICA IDENTITY DEFAULT"
        ),
    );
    let connector = Connector::start(&table.replace('_', "-"), &table, &format!("public.{table}"));
    let topic = connector.topic(&table);
    let config = dir.join("toast.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{BROKERS}"
group_id = "{table}"
topics = ["{topic}"]

[source]
url = "{SOURCE_URL}"

[sinks.replica]
type = "postgres"
url = "{REPLICA_URL}"

[sinks.cache]
type = "redis"
url = "redis://127.0.0.1:16379"
key = "{table}:{{id}}"
format = "json"

[sinks.search]
type = "elasticsearch"
url = "http://127.0.0.1:9251"

[[routes]]
topics = ["{topic}"]
sinks = ["replica", "cache", "search"]
"#
        ),
    )
    .unwrap();
    let run = RippleProcess::start(&config, &[]);

    // 20 kB of digits stored out of line, then an update of another column.
    psql(
        SOURCE_URL,
        &format!(
            "INSERT INTO public.{table} SELECT 1, 0, string_agg(md5(g::text), '') FROM generate_series(1, 640) g"
        ),
    );
    let body = psql(
        SOURCE_URL,
        &format!("SELECT body FROM public.{table} WHERE id = 1"),
    );
    assert!(body.len() > 20_000);
    psql(
        SOURCE_URL,
        &format!("UPDATE public.{table} SET n = 1 WHERE id = 1"),
    );

    // The update really came with the placeholder.
    wait_until(
        Duration::from_secs(60),
        "the update to reach the topic",
        || topic_contains(&topic, "__debezium_unavailable_value"),
    );

    wait_until(
        Duration::from_secs(60),
        "the replica to apply the update",
        || {
            psql(
                REPLICA_URL,
                &format!("SELECT to_regclass('public.{table}') IS NOT NULL"),
            ) == "t"
                && psql(
                    REPLICA_URL,
                    &format!("SELECT count(*) FROM public.{table} WHERE n = 1"),
                ) == "1"
        },
    );
    assert_eq!(
        psql(
            REPLICA_URL,
            &format!("SELECT body FROM public.{table} WHERE id = 1")
        ),
        body
    );

    let redis = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", "16379"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    wait_until(Duration::from_secs(60), "Redis to apply the update", || {
        redis(&["GET", &format!("{table}:1")]).contains("\"n\":1")
    });
    let doc: serde_json::Value =
        serde_json::from_str(&redis(&["GET", &format!("{table}:1")])).unwrap();
    assert_eq!(
        doc["body"].as_str(),
        Some(body.as_str()),
        "Redis lost the unchanged value"
    );

    let search = || {
        let out = std::process::Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:9251/{table}/_doc/1")])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    wait_until(
        Duration::from_secs(60),
        "the index to apply the update",
        || search()["_source"]["n"] == 1,
    );
    assert_eq!(
        search()["_source"]["body"].as_str(),
        Some(body.as_str()),
        "the index lost the unchanged value"
    );

    assert!(run.signal("TERM").success());
    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{table}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{table}"));
    let _ = std::process::Command::new("curl")
        .args([
            "-s",
            "-X",
            "DELETE",
            &format!("http://127.0.0.1:9251/{table}"),
        ])
        .output();
}
