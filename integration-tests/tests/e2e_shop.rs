//! A shop through real Debezium into every kind of sink at once: the seed's transactions table
//! plus `products` and `inventory`, into the replica, a Redis cache (stock per product and
//! warehouse, products without their attributes, prices as plain strings) and a search index, with
//! per-route key templates, index names, column filters and renames. `ripple verify` must find
//! every (sink, table) pair equal. Then the whole topics are replayed by a new consumer group and
//! old records are produced again (stale duplicates arriving late): verify stays equal, and no
//! row's version goes down in any store (read from each store, not assumed).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Row id -> version, per store and table.
type Versions = BTreeMap<String, BTreeMap<String, String>>;

fn config(dir: &Path, t: &str, group: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[kafka]
brokers = "{BROKERS}"
group_id = "{group}"
topics = ["^{t}\\.public\\..*"]

[source]
url = "{SOURCE_URL}"
topic_prefix = "{t}"

[sinks.replica]
type = "postgres"
url = "{REPLICA_URL}"

[sinks.cache]
type = "redis"
url = "redis://127.0.0.1:16379"

[sinks.prices]
type = "redis"
url = "redis://127.0.0.1:16379"
format = "string"
field = "price"

[sinks.search]
type = "elasticsearch"
url = "http://127.0.0.1:9251"
index = "{t}-{{table}}"

# Stock levels for the shop front: one hash per product and warehouse, two columns, one renamed.
[[routes]]
topics = ["{t}.public.{t}_inventory"]
sinks = ["cache"]
target = "{t}:stock:{{product_id}}:{{warehouse}}"
include = ["on_hand", "reserved"]
rename = {{ on_hand = "available" }}

[[routes]]
topics = ["{t}.public.{t}_products"]
sinks = ["cache"]
target = "{t}:product:{{id}}"
exclude = ["attrs"]

[[routes]]
topics = ["{t}.public.{t}_products"]
sinks = ["prices"]
target = "{t}:price:{{id}}"

[[routes]]
topics = ["{t}.public.{t}_products"]
sinks = ["search"]
target = "{t}-catalog"
rename = {{ name = "title" }}

# Everything else with each sink's own naming.
[[routes]]
topics = ["^{t}\\.public\\..*"]
sinks = ["replica", "cache", "search"]
"#
    );
    let path = dir.join(format!("{group}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn shop_sql(t: &str) -> Vec<String> {
    let (p, i) = (
        format!("public.{t}_products"),
        format!("public.{t}_inventory"),
    );
    let mut sql = vec![
        format!(
            "INSERT INTO {p} SELECT g, 'SKU-' || g, 'Product ' || g || ' ✓', (g * 1.25)::numeric(10,2), \
             ARRAY['t' || g % 5, 'all'], g % 7 <> 0, jsonb_build_object('color', 'c' || g % 3, 'weight', g * 0.1) \
             FROM generate_series(1, 300) g"
        ),
        format!(
            "INSERT INTO {i} SELECT g, w, g % 50, 0, now() FROM generate_series(1, 300) g, \
             unnest(ARRAY['north', 'south']) w"
        ),
    ];
    for round in 0..20 {
        sql.push(format!(
            "UPDATE {i} SET on_hand = on_hand + {round} - 5, reserved = reserved + 1, updated_at = now() \
             WHERE (product_id + {round}) % 7 = 0"
        ));
        sql.push(format!(
            "UPDATE {p} SET price = price + 0.10 WHERE id % 11 = {}",
            round % 11
        ));
    }
    sql.push(format!(
        "UPDATE {p} SET name = NULL, tags = NULL WHERE id % 17 = 0"
    ));
    sql.push(format!("DELETE FROM {i} WHERE product_id % 13 = 0"));
    sql.push(format!("DELETE FROM {p} WHERE id % 13 = 0"));
    // A stock take: the table emptied and refilled for half the products.
    sql.push(format!("TRUNCATE {i}"));
    sql.push(format!(
        "INSERT INTO {i} SELECT g, w, 100 + g % 9, g % 3, now() FROM generate_series(1, 150) g, \
         unnest(ARRAY['north', 'east']) w WHERE g % 13 <> 0"
    ));
    sql.push(format!(
        "UPDATE {i} SET on_hand = on_hand - 1 WHERE product_id % 5 = 0"
    ));
    sql
}

/// Runs verify over every sink; returns whether all was equal, the report, and its output.
fn verify(config: &Path) -> (bool, serde_json::Value, String) {
    // The stack's source holds other tests' tables too: name this test's.
    let t = config
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let (products, inventory) = (
        format!("public.{t}_products"),
        format!("public.{t}_inventory"),
    );
    let seed = format!("public.{t}");
    let out = ripple(&[
        "verify",
        "--config",
        config.to_str().unwrap(),
        "--json",
        "--table",
        &seed,
        "--table",
        &products,
        "--table",
        &inventory,
    ]);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_default();
    (out.status.success(), report, text(&out))
}

/// Runs ripple until verify finds every store equal, lets it drain, and stops it.
fn sync(config: &Path, what: &str) -> serde_json::Value {
    let run = RippleProcess::start(config, &[]);
    let mut last = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let (equal, _, output) = verify(config);
        if equal {
            break;
        }
        last = output;
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: stores not equal after 180 s; last verify:\n{last}\nripple log:\n{}",
            run.log_text()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let _ = last;
    // Verify can be equal before the last (stale) records are consumed: let the run drain.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        run.signal("TERM").success(),
        "{what}: ripple did not stop cleanly"
    );
    let (equal, report, output) = verify(config);
    assert!(equal, "{what}: {output}");
    report
}

fn versions(t: &str) -> Versions {
    let mut all = Versions::new();
    let replica = |table: &str, key: &str| -> BTreeMap<String, String> {
        psql(
            REPLICA_URL,
            &format!("SELECT {key}, _ripple_commit || ':' || _ripple_change FROM public.{table}"),
        )
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    all.insert("replica seed".into(), replica(t, "transaction_id"));
    all.insert(
        "replica products".into(),
        replica(&format!("{t}_products"), "id::text"),
    );
    all.insert(
        "replica inventory".into(),
        replica(&format!("{t}_inventory"), "product_id || ':' || warehouse"),
    );
    for sink in ["cache", "prices"] {
        for table in [
            t.to_string(),
            format!("{t}_products"),
            format!("{t}_inventory"),
        ] {
            let hash = format!("ripple:keys:{sink}:public.{table}:versions");
            let lines = redis_cli(&["HGETALL", &hash]);
            let lines: Vec<&str> = lines.lines().collect();
            let map: BTreeMap<String, String> = lines
                .chunks(2)
                .filter(|c| c.len() == 2)
                .map(|c| (c[0].to_string(), c[1].to_string()))
                .collect();
            if !map.is_empty() {
                all.insert(format!("{sink} {table}"), map);
            }
        }
    }
    for index in [
        format!("{t}-{t}"),
        format!("{t}-catalog"),
        format!("{t}-{t}_inventory"),
    ] {
        search_request("POST", &format!("{index}/_refresh"), None);
        let body =
            r#"{"size": 10000, "version": true, "_source": false, "query": {"match_all": {}}}"#;
        let found = search_request("POST", &format!("{index}/_search"), Some(body));
        let map: BTreeMap<String, String> = found["hits"]["hits"]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|h| {
                (
                    h["_id"].as_str().unwrap().to_string(),
                    h["_version"].to_string(),
                )
            })
            .collect();
        all.insert(format!("search {index}"), map);
    }
    all
}

/// Compares versions as `commit:change` pairs (or one number for the index).
fn parse_version(v: &str) -> (u64, u64) {
    match v.split_once(':') {
        Some((c, h)) => (c.parse().unwrap(), h.parse().unwrap()),
        None => (0, v.parse().unwrap()),
    }
}

#[test]
fn a_shop_replicates_into_every_sink_and_replays_change_nothing() {
    require_stack();
    let t = unique("shop");
    let dir = temp_dir(&t);
    let setup = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &t, "--drop", "--setup", "--count", "0",
    ]);
    assert!(setup.status.success(), "{}", text(&setup));
    psql(
        SOURCE_URL,
        &format!(
            "CREATE TABLE public.{t}_products (id bigint PRIMARY KEY, sku text NOT NULL, name text, \
               price numeric(10,2), tags text[], active boolean, attrs jsonb, \
               created_at timestamptz NOT NULL DEFAULT now()); \
             CREATE TABLE public.{t}_inventory (product_id bigint, warehouse text, on_hand int, \
               reserved int, updated_at timestamp, PRIMARY KEY (product_id, warehouse))"
        ),
    );
    let tables = format!("public.{t},public.{t}_products,public.{t}_inventory");
    let connector = Connector::start(&t.replace('_', "-"), &t, &tables);

    for statement in shop_sql(&t) {
        psql(SOURCE_URL, &statement);
    }
    let load = ripple(&[
        "loadgen", "--url", SOURCE_URL, "--table", &t, "--count", "3000", "--mix", "40,50,10",
    ]);
    assert!(load.status.success(), "{}", text(&load));

    let first = config(&dir, &t, &format!("{t}_a"));
    let report = sync(&first, "the first sync");
    let mut pairs: Vec<(String, String, u64)> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["sink"].as_str().unwrap().to_string(),
                r["table"].as_str().unwrap().to_string(),
                r["source_rows"].as_u64().unwrap(),
            )
        })
        .collect();
    pairs.sort();
    let expected: Vec<(String, String)> = [
        ("cache", t.clone()),
        ("cache", format!("{t}_inventory")),
        ("cache", format!("{t}_products")),
        ("prices", format!("{t}_products")),
        ("replica", t.clone()),
        ("replica", format!("{t}_inventory")),
        ("replica", format!("{t}_products")),
        ("search", t.clone()),
        ("search", format!("{t}_inventory")),
        ("search", format!("{t}_products")),
    ]
    .into_iter()
    .map(|(s, table)| (s.to_string(), format!("public.{table}")))
    .collect();
    assert_eq!(
        pairs
            .iter()
            .map(|(s, t, _)| (s.clone(), t.clone()))
            .collect::<Vec<_>>(),
        expected,
        "verify covered exactly the routed (sink, table) pairs"
    );
    for (sink, table, rows) in &pairs {
        assert!(
            *rows > 100,
            "{sink} {table}: only {rows} source rows compared"
        );
    }

    // The route options really shaped what the stores hold.
    let stock = redis_cli(&["HGETALL", &format!("{t}:stock:1:north")]);
    // The key columns, always kept, and the two included columns.
    assert_eq!(stock.lines().count(), 8, "four fields: {stock}");
    assert!(
        stock.contains("available") && !stock.contains("on_hand"),
        "{stock}"
    );
    assert_eq!(
        redis_cli(&["GET", &format!("{t}:price:1")]),
        psql(
            SOURCE_URL,
            &format!("SELECT price FROM public.{t}_products WHERE id = 1")
        )
    );
    let product = redis_cli(&["HGETALL", &format!("{t}:product:2")]);
    assert!(
        product.contains("sku") && !product.contains("attrs"),
        "{product}"
    );
    let doc = search_request("GET", &format!("{t}-catalog/_doc/2"), None);
    assert_eq!(doc["_source"]["title"], "Product 2 ✓", "{doc}");

    let before = versions(&t);
    assert!(before.values().all(|m| !m.is_empty()), "{before:?}");

    // The whole topics again, through a new consumer group: nothing may change.
    let replay = config(&dir, &t, &format!("{t}_b"));
    sync(&replay, "the replay from offset 0");
    assert_eq!(versions(&t), before, "a full replay changed row versions");

    // Stale duplicates: each topic's first records (inserts, early updates, the truncate's
    // predecessors) produced again, late.
    let mut produced = 0;
    for table in [t.clone(), format!("{t}_products"), format!("{t}_inventory")] {
        let topic = connector.topic(&table);
        let records = consume(&topic, 800);
        assert!(records.len() > 100, "{topic}: {} records", records.len());
        produced += records.len();
        produce(&topic, &records);
    }
    assert!(produced > 1500, "{produced} stale records");
    sync(&first, "applying the stale duplicates");
    let after = versions(&t);
    for (store, rows) in &after {
        for (key, v) in rows {
            if let Some(old) = before[store].get(key) {
                assert!(
                    parse_version(v) >= parse_version(old),
                    "{store}: row {key} went back from {old} to {v}"
                );
            }
        }
    }
    assert_eq!(after, before, "stale duplicates changed a store");

    drop(connector);
    for table in [t.clone(), format!("{t}_products"), format!("{t}_inventory")] {
        psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{table}"));
        psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{table}"));
    }
    for index in [
        format!("{t}-{t}"),
        format!("{t}-catalog"),
        format!("{t}-{t}_inventory"),
    ] {
        search_request("DELETE", &index, None);
    }
}
