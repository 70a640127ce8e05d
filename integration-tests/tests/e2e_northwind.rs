//! A second real-world data set: Microsoft's Northwind (integration-tests/data/northwind, Ms-PL;
//! 14 tables, 3,362 rows of real names and addresses in several languages; smallint, real, date,
//! bytea, blank-padded char, bounded and unbounded text; composite keys; foreign keys) loaded into
//! a schema of its own, captured by real Debezium, then a workload of inserts, updates, deletes, a
//! key change, an added column with a default and a truncate, into the replica, Redis and the
//! index. `ripple verify` must say EQUAL for every table in every store, and an independent SQL
//! comparison (every column as text, by key) must find the replica equal to the source.

mod common;

use common::*;
use std::time::Duration;

const TABLES: [&str; 14] = [
    "categories",
    "customer_customer_demo",
    "customer_demographics",
    "customers",
    "employees",
    "employee_territories",
    "order_details",
    "orders",
    "products",
    "region",
    "shippers",
    "suppliers",
    "territories",
    "us_states",
];

/// Every table of `schema` in `url` as text: each row's columns (the source's, by name, each cast
/// to text), ordered by the primary key. Read with psql alone, not through Ripple.
fn as_text(url: &str, schema: &str, table: &str, columns: &str, key: &str) -> String {
    psql(
        url,
        &format!(
            "SELECT coalesce(string_agg(r, E'\\n' ORDER BY k), '') FROM \
             (SELECT ROW({columns})::text AS r, ROW({key})::text AS k FROM {schema}.{table}) t"
        ),
    )
}

/// The source's columns of `table` (as a select list) and its primary key's.
fn columns_and_key(schema: &str, table: &str) -> (String, String) {
    let columns = psql(
        SOURCE_URL,
        &format!(
            "SELECT string_agg(quote_ident(attname) || '::text', ', ' ORDER BY attnum) FROM pg_attribute \
             WHERE attrelid = '{schema}.{table}'::regclass AND attnum > 0 AND NOT attisdropped"
        ),
    );
    let key = psql(
        SOURCE_URL,
        &format!(
            "SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY array_position(i.indkey, a.attnum)) \
             FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = '{schema}.{table}'::regclass AND i.indisprimary"
        ),
    );
    (columns, key)
}

fn verify_all(config: &std::path::Path, schema: &str) -> (bool, String) {
    let tables: Vec<String> = TABLES.iter().map(|t| format!("{schema}.{t}")).collect();
    let mut args = vec!["verify", "--config", config.to_str().unwrap()];
    for t in &tables {
        args.extend(["--table", t.as_str()]);
    }
    let out = ripple(&args);
    let report = text(&out);
    let equal = out.status.success() && report.matches("EQUAL ").count() == 3 * TABLES.len();
    (equal, report)
}

fn wait_all_verified(config: &std::path::Path, schema: &str, what: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let (equal, report) = verify_all(config, schema);
        if equal {
            return report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for every Northwind table to verify equal {what}; last report:\n{report}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn northwind_replicates_into_every_store_and_verifies_equal() {
    require_stack();
    let s = unique("nw");
    let dir = temp_dir(&s);
    let script = repo()
        .join("integration-tests")
        .join("data")
        .join("northwind")
        .join("northwind.sql");
    let dump = std::fs::read_to_string(&script).expect("read northwind.sql");
    // The dump names no schema: loaded with a search path, its tables land in one of their own.
    let sql_file = dir.join("load.sql");
    std::fs::write(
        &sql_file,
        format!("CREATE SCHEMA {s}; SET search_path = {s};\n{dump}"),
    )
    .unwrap();
    let out = std::process::Command::new("psql")
        .args([SOURCE_URL, "-Xq", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&sql_file)
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: i64 = TABLES
        .iter()
        .map(|t| {
            psql(SOURCE_URL, &format!("SELECT count(*) FROM {s}.{t}"))
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(rows, 3_362, "the whole data set was loaded");

    let prefix = s.replace('_', "-");
    // A regular expression over schema.table ([.] needs no escape in the connector's JSON).
    let connector = Connector::start(&prefix, &prefix, &format!("{s}[.].*"));
    let pattern = format!("^{prefix}[.]{s}[.].*");
    let config = dir.join("northwind.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{BROKERS}"
group_id = "{s}"
topics = ["{pattern}"]

[source]
url = "{SOURCE_URL}"

[sinks.replica]
type = "postgres"
url = "{REPLICA_URL}"

[sinks.cache]
type = "redis"
url = "redis://127.0.0.1:16379"
key = "{{schema}}:{{table}}:{{pk}}"

[sinks.search]
type = "elasticsearch"
url = "http://127.0.0.1:9251"
index = "{{schema}}-{{table}}"

[[routes]]
topics = ["{pattern}"]
sinks = ["replica", "cache", "search"]
"#
        ),
    )
    .unwrap();
    let run = RippleProcess::start(&config, &[]);
    let report = wait_all_verified(&config, &s, "after the snapshot");
    assert!(
        report.contains("matching 2155,"),
        "order_details in full: {report}"
    );

    // The workload: new orders with their lines, price and address changes, deleted lines, a key
    // change, a column added with a default, a truncate and new rows after it.
    psql(
        SOURCE_URL,
        &format!(
            "SET search_path = {s};
             INSERT INTO orders (order_id, customer_id, employee_id, order_date, ship_via, freight, ship_name, ship_city, ship_country)
               SELECT 20000 + g, 'ALFKI', 1 + g % 9, DATE '2026-12-01' + g, 1 + g % 3, g * 1.25, 'Ship ' || g, 'Zürich', 'Switzerland'
               FROM generate_series(1, 200) g;
             INSERT INTO order_details SELECT 20000 + g, 1 + g % 77, 9.5 + g, g % 20 + 1, 0.05 FROM generate_series(1, 200) g;
             UPDATE products SET unit_price = unit_price * 1.1, units_in_stock = units_in_stock - 1 WHERE product_id % 3 = 0;
             UPDATE customers SET address = address || ' (Hinterhaus)', phone = NULL WHERE country = 'Germany';
             UPDATE employees SET notes = notes || ' Promoted in 2026.', photo = '\\xdeadbeef'::bytea WHERE employee_id <= 3;
             DELETE FROM order_details WHERE order_id BETWEEN 10248 AND 10300;
             UPDATE us_states SET state_id = state_id + 1000 WHERE state_abbr IN ('WA', 'OR');
             ALTER TABLE categories ADD COLUMN shelf smallint DEFAULT 7;
             UPDATE categories SET description = 'Soft drinks, coffees, teas, beers and ales' WHERE category_id = 1;
             TRUNCATE region CASCADE;
             INSERT INTO region VALUES (1, 'Eastern'), (2, 'Westerly'), (5, 'Arctic');"
        ),
    );
    // TRUNCATE ... CASCADE emptied the tables that reference region (territories, and
    // employee_territories through them): each is its own truncate event.
    assert_eq!(
        psql(SOURCE_URL, &format!("SELECT count(*) FROM {s}.territories")),
        "0"
    );
    // Redis and the index cannot fill the new column of the seven categories no change has
    // touched since the ALTER: verify says which field and why, and everything else is equal.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let (_, report) = verify_all(&config, &s);
        if report.matches("EQUAL ").count() == 3 * TABLES.len() - 2
            && report.matches("DIFFERENT nw").count() == 2
            && report
                .matches("categories: field \"shelf\" is absent")
                .count()
                == 0
            && report
                .matches("category_id=2: field \"shelf\" is absent")
                .count()
                == 2
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for verify to name the absent column; last report:\n{report}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // The repair the report suggests.
    psql(
        SOURCE_URL,
        &format!("UPDATE {s}.categories SET shelf = shelf"),
    );
    let report = wait_all_verified(&config, &s, "after the workload");
    println!("{report}");

    // Independently of Ripple: the replica, read with psql, holds what the source holds.
    for t in TABLES {
        // A table that never had a row has had no event either, so no replica table.
        if psql(
            REPLICA_URL,
            &format!("SELECT to_regclass('{s}.{t}') IS NULL"),
        ) == "t"
        {
            assert_eq!(
                psql(SOURCE_URL, &format!("SELECT count(*) FROM {s}.{t}")),
                "0",
                "{t}"
            );
            continue;
        }
        let (columns, key) = columns_and_key(&s, t);
        let want = as_text(SOURCE_URL, &s, t, &columns, &key);
        let got = as_text(REPLICA_URL, &s, t, &columns, &key);
        assert!(want == got, "{t}: the replica differs from the source");
    }

    assert!(run.signal("TERM").success());
    drop(connector);
    psql(SOURCE_URL, &format!("DROP SCHEMA {s} CASCADE"));
    psql(REPLICA_URL, &format!("DROP SCHEMA IF EXISTS {s} CASCADE"));
    search_request("DELETE", &format!("{s}-*"), None);
    let keys = redis_cli(&["--scan", "--pattern", &format!("{s}:*")]);
    for k in keys.lines().filter(|k| !k.is_empty()) {
        redis_cli(&["DEL", k]);
    }
}
