//! Schema evolution without a restart: a column added in the source mid-stream appears in the
//! replica (and in the Redis and search documents) with its values; a column dropped in the source
//! stays in the replica with its data, becomes nullable, and new rows leave it NULL. Nothing is lost
//! and every store verifies equal (verify compares the source's columns).

mod common;

use common::*;
use std::time::Duration;

#[test]
fn added_and_dropped_columns_are_followed_without_a_restart() {
    require_stack();
    let t = unique("e2e_schema");
    let dir = temp_dir(&t);
    psql(
        SOURCE_URL,
        &format!("CREATE TABLE public.{t} (id int PRIMARY KEY, name text NOT NULL, qty int)"),
    );
    let connector = Connector::start(&t.replace('_', "-"), &t, &format!("public.{t}"));
    let topic = connector.topic(&t);
    let config = dir.join("schema.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{BROKERS}"
group_id = "{t}"
topics = ["{topic}"]

[source]
url = "{SOURCE_URL}"
topic_prefix = "{t}"

[sinks.replica]
type = "postgres"
url = "{REPLICA_URL}"

[sinks.cache]
type = "redis"
url = "redis://127.0.0.1:16379"
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
    let verify = || {
        ripple(&[
            "verify",
            "--config",
            config.to_str().unwrap(),
            "--table",
            &format!("public.{t}"),
        ])
    };
    let wait_equal = |what: &str| {
        let mut last = String::new();
        wait_until(Duration::from_secs(90), what, || {
            let out = verify();
            last = text(&out);
            out.status.success()
        });
    };
    let mut run = RippleProcess::start(&config, &[]);

    psql(
        SOURCE_URL,
        &format!("INSERT INTO public.{t} SELECT g, 'item ' || g, g FROM generate_series(1, 100) g"),
    );
    wait_equal("the first rows");

    // A column added mid-stream, filled by updates and new rows.
    psql(
        SOURCE_URL,
        &format!("ALTER TABLE public.{t} ADD COLUMN price numeric(10,2)"),
    );
    psql(
        SOURCE_URL,
        &format!("UPDATE public.{t} SET price = id * 1.50 WHERE id <= 50"),
    );
    psql(
        SOURCE_URL,
        &format!(
            "INSERT INTO public.{t} SELECT g, 'item ' || g, g, g * 2.25 FROM generate_series(101, 150) g"
        ),
    );
    wait_equal("the added column");
    assert_eq!(
        psql(
            REPLICA_URL,
            &format!(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'public.{t}'::regclass AND attname = 'price'"
            )
        ),
        "numeric(10,2)"
    );
    assert_eq!(
        psql(
            REPLICA_URL,
            &format!("SELECT price FROM public.{t} WHERE id = 120")
        ),
        "270.00"
    );
    let doc = redis_cli(&["GET", &format!("{t}:120")]);
    assert!(doc.contains("\"price\":\"270.00\""), "{doc}");

    // A NOT NULL column dropped mid-stream: kept in the replica, now nullable.
    psql(
        SOURCE_URL,
        &format!("ALTER TABLE public.{t} DROP COLUMN name"),
    );
    psql(
        SOURCE_URL,
        &format!("INSERT INTO public.{t} SELECT g, g, 1.00 FROM generate_series(151, 160) g"),
    );
    psql(
        SOURCE_URL,
        &format!("UPDATE public.{t} SET qty = qty + 1 WHERE id <= 10"),
    );
    wait_equal("rows after the dropped column");
    assert!(run.is_running(), "ripple stopped:\n{}", run.log_text());
    assert_eq!(
        psql(
            REPLICA_URL,
            &format!(
                "SELECT count(*) FILTER (WHERE name IS NULL), count(*) FILTER (WHERE name = 'item 5') FROM public.{t}"
            )
        ),
        "10|1",
        "old rows keep the dropped column's data, new rows leave it NULL"
    );
    assert!(
        run.log_text().contains("no longer carries this column"),
        "the dropped column is reported"
    );
    assert!(run.signal("TERM").success());

    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    search_request("DELETE", &t, None);
}
