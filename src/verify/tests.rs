//! Verify against two real PostgreSQL databases (`scripts/stack up`, or RIPPLE_TEST_SOURCE_URL and
//! RIPPLE_TEST_REPLICA_URL): every test builds its own `verify_test_*` tables and drops them after.

use super::*;
use futures::FutureExt;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

fn source_url() -> String {
    std::env::var("RIPPLE_TEST_SOURCE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:15432/app".into())
}

fn replica_url() -> String {
    std::env::var("RIPPLE_TEST_REPLICA_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:15433/replica".into())
}

async fn pool(url: &str) -> PgPool {
    // A direct connection first: it fails at once with the real reason (refused, unknown database),
    // where the pool would retry until its timeout.
    let reached = match PgConnection::connect(url).await {
        Ok(probe) => {
            probe.close().await.ok();
            PgPoolOptions::new().max_connections(2).connect(url).await
        }
        Err(e) => Err(e),
    };
    reached.unwrap_or_else(|e| {
        panic!(
            "cannot reach the test database at {}: {e}. Start the local stack with `scripts/stack up` \
             (or point RIPPLE_TEST_SOURCE_URL / RIPPLE_TEST_REPLICA_URL at two PostgreSQL databases)",
            crate::config::mask_url(url)
        )
    })
}

async fn exec(pool: &PgPool, sql: &str) {
    if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
    {
        panic!("{e}\nin: {sql}");
    }
}

/// Two connected databases and the tables and schemas a test made there.
struct Fixture {
    source: PgPool,
    replica: PgPool,
    id: String,
    drops: Vec<(bool, String)>,
}

impl Fixture {
    async fn new(test: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "verify_test_{test}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Self {
            source: pool(&source_url()).await,
            replica: pool(&replica_url()).await,
            id,
            drops: Vec::new(),
        }
    }

    /// A unique table name in `schema` (created by the caller), remembered for dropping.
    fn table(&mut self, schema: &str, suffix: &str) -> (String, String) {
        let name = format!("{}{suffix}", self.id);
        let sql = format!("{}.{}", quote_ident(schema), quote_ident(&name));
        self.drops
            .push((false, format!("DROP TABLE IF EXISTS {sql}")));
        (name, sql)
    }

    /// A unique schema created on the side(s) asked for, remembered for dropping.
    async fn schema(&mut self, on_source: bool, on_replica: bool) -> String {
        let name = format!("{}_schema", self.id);
        let create = format!("CREATE SCHEMA {}", quote_ident(&name));
        if on_source {
            exec(&self.source, &create).await;
        }
        if on_replica {
            exec(&self.replica, &create).await;
        }
        self.drops.push((
            true,
            format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(&name)),
        ));
        name
    }

    async fn both(&self, sql: &str) {
        exec(&self.source, sql).await;
        exec(&self.replica, sql).await;
    }

    /// Runs the test body, then drops everything the test made whether the body passed or not.
    async fn run(&self, body: impl std::future::Future<Output = ()>) {
        let outcome = AssertUnwindSafe(body).catch_unwind().await;
        // Tables before the schemas that may hold them.
        let mut drops = self.drops.clone();
        drops.sort_by_key(|(is_schema, _)| *is_schema);
        for (_, sql) in &drops {
            exec(&self.source, sql).await;
            exec(&self.replica, sql).await;
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

fn config(source: Option<&str>, sink_url: &str, sink_schema: Option<&str>) -> Config {
    let source = source
        .map(|url| format!("[source]\nurl = {url:?}\n"))
        .unwrap_or_default();
    let schema = sink_schema
        .map(|s| format!("schema = {s:?}\n"))
        .unwrap_or_default();
    let text = format!(
        "[kafka]\nbrokers = \"127.0.0.1:1\"\ntopics = [\"t\"]\n{source}\
         [sinks.replica]\ntype = \"postgres\"\nurl = {sink_url:?}\n{schema}\
         [sinks.cache]\ntype = \"memcached\"\nurl = \"memcached://127.0.0.1:1\"\n\
         [[routes]]\ntopics = [\"t\"]\nsinks = [\"replica\"]\n"
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn test_config() -> Config {
    config(Some(&source_url()), &replica_url(), None)
}

fn args(tables: &[&str]) -> VerifyArgs {
    VerifyArgs {
        tables: tables.iter().map(|t| t.to_string()).collect(),
        samples: 5,
        ..Default::default()
    }
}

fn arg(schema: &str, name: &str) -> String {
    compare::TableName {
        schema: schema.into(),
        name: name.into(),
    }
    .to_string()
}

fn key(parts: &[&str]) -> Vec<Option<String>> {
    parts.iter().map(|p| Some(p.to_string())).collect()
}

async fn verify(config: &Config, args: &VerifyArgs) -> VerifyReport {
    match run(config, args).await {
        Ok(report) => report,
        Err(e) => panic!("verify failed: {e}"),
    }
}

#[tokio::test]
async fn equal_tables_with_awkward_names_types_and_collations_are_equal() {
    let mut fx = Fixture::new("equal").await;
    let (name, table) = fx.table("public", " Mixed \"Q\" name");
    let source_ddl = format!(
        "CREATE TABLE {table} (\"Region\" text COLLATE \"en-x-icu\", no int, amount numeric, \
         at timestamp, at_tz timestamptz, doc jsonb, note text, f float8, b bytea, iv interval, \
         tags text[], gen int GENERATED ALWAYS AS (no * 2) STORED, PRIMARY KEY (\"Region\", no))"
    );
    // Other column order, other key collation and integer width, and bookkeeping columns.
    let replica_ddl = format!(
        "CREATE TABLE {table} (_ripple_version bigint DEFAULT 7, tags text[], iv interval, b bytea, \
         f float8, note text, doc jsonb, at_tz timestamptz, at timestamp, amount numeric, \
         no bigint, \"Region\" text COLLATE \"C\", extra text DEFAULT 'ignored', \
         PRIMARY KEY (\"Region\", no))"
    );
    let insert = format!(
        "INSERT INTO {table} (\"Region\", no, amount, at, at_tz, doc, note, f, b, iv, tags) VALUES \
         ('a', 1, 1.00, '2024-01-01 00:00:00.123456', '2024-01-01 00:00:00.5+02', '{{\"b\": 1, \"a\": [1, 2]}}', NULL, 0.1, '\\x00ff', '1 day 2 hours', '{{x,\"y z\"}}'), \
         ('a', 2, 1.0, '2024-01-01 00:00:00', '2024-06-01 12:00:00+00', 'null', '', 1e300, '', '0', '{{}}'), \
         ('a', 10, -0.000, NULL, NULL, NULL, 'it''s', 'NaN', NULL, NULL, NULL), \
         ('B', 1, 123456789012345678901234567890.123, 'infinity', '-infinity', '[]', 'x', '-Infinity', '\\x', '-1 mons', '{{NULL}}'), \
         ('é', 9, 0, '1999-12-31 23:59:59.999999', '1999-12-31 23:59:59.999999+00', '{{\"é\": \"\\u00e9\"}}', ' ', -0.0, '\\xdeadbeef', '00:00:00.000001', '{{\"\"}}'), \
         ('_z', 3, 2, '2000-01-01', '2000-01-01', '1', 'tab\there', 3.14159, '\\x00', '1 year', '{{a,b}}'), \
         (' ', 0, 3, '2000-01-01', '2000-01-01', '\"s\"', 'NULL', 2.5e-300, '\\x01', '-00:00:01', '{{}}')"
    );
    fx.run(async {
        exec(&fx.source, &source_ddl).await;
        exec(&fx.replica, &replica_ddl).await;
        fx.both(&insert).await;
        let report = verify(&test_config(), &args(&[&arg("public", &name)])).await;
        let t = &report.tables[0];
        assert!(report.all_equal(), "{report}");
        assert_eq!(
            (t.source_rows, t.replica_rows, t.matching),
            (7, 7, 7),
            "{report}"
        );
        assert_eq!(t.key_columns, vec!["Region".to_string(), "no".to_string()]);
        assert_eq!(
            report.skipped_sinks.len(),
            1,
            "the memcached sink is listed as not checked"
        );
        let text = report.to_string();
        assert!(text.contains("EQUAL"), "{text}");
        assert!(
            text.contains("sink cache: not checked, no route sends it anything"),
            "{text}"
        );
        assert!(text.contains(&arg("public", &name)), "{text}");
    })
    .await;
}

#[tokio::test]
async fn missing_extra_and_different_rows_are_counted_with_samples() {
    let mut fx = Fixture::new("diff").await;
    let (name, table) = fx.table("public", "");
    let ddl = format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, amount numeric, at timestamp, at_tz timestamptz, \
         doc jsonb, note text)"
    );
    let rows = format!(
        "INSERT INTO {table} SELECT i, 1.5, '2024-01-01 10:00:00.000001', '2024-01-01 10:00:00+00', \
         '{{\"a\": 1}}', 'n' || i FROM generate_series(1, 10) i"
    );
    let changes = format!(
        "DELETE FROM {table} WHERE id = 3; \
         INSERT INTO {table} VALUES (11, 1, NULL, NULL, NULL, NULL), (12, 1, NULL, NULL, NULL, NULL); \
         UPDATE {table} SET amount = 1.50 WHERE id = 2; \
         UPDATE {table} SET at = '2024-01-01 10:00:00.000002' WHERE id = 4; \
         UPDATE {table} SET doc = '{{\"a\": 1.0}}' WHERE id = 5; \
         UPDATE {table} SET note = NULL WHERE id = 6; \
         UPDATE {table} SET at_tz = '2024-01-01 11:00:00+01' WHERE id = 7"
    );
    // 1.0 vs 1.00 in the source itself, to be certain numeric scale counts.
    let scale = format!("UPDATE {table} SET amount = 1.0 WHERE id = 8");
    let scale_replica = format!("UPDATE {table} SET amount = 1.00 WHERE id = 8");
    fx.run(async {
        fx.both(&ddl).await;
        fx.both(&rows).await;
        exec(&fx.replica, &changes).await;
        exec(&fx.source, &scale).await;
        exec(&fx.replica, &scale_replica).await;
        let table_arg = arg("public", &name);
        let report = verify(&test_config(), &args(&[&table_arg])).await;
        let t = &report.tables[0];
        assert!(!report.all_equal());
        // id 7's timestamptz is the same instant written in another zone: equal.
        assert_eq!(
            (
                t.source_rows,
                t.replica_rows,
                t.matching,
                t.missing,
                t.extra,
                t.different
            ),
            (10, 11, 4, 1, 2, 5),
            "{report}"
        );
        assert_eq!(t.samples.missing, vec![key(&["3"])]);
        assert_eq!(t.samples.extra, vec![key(&["11"]), key(&["12"])]);
        // 2: 1.5 vs 1.50; 4: one microsecond; 5: jsonb 1 vs 1.0 (jsonb keeps the scale); 6: NULL vs
        // text; 8: 1.0 vs 1.00.
        assert_eq!(
            t.samples.different,
            vec![
                key(&["2"]),
                key(&["4"]),
                key(&["5"]),
                key(&["6"]),
                key(&["8"])
            ]
        );
        let text = report.to_string();
        assert!(text.contains("DIFFERENT"), "{text}");
        assert!(text.contains("missing: id=3"), "{text}");
        assert!(text.contains("extra: id=11; id=12"), "{text}");

        let few = VerifyArgs {
            samples: 1,
            json: true,
            ..args(&[&table_arg])
        };
        let report = verify(&test_config(), &few).await;
        let json: serde_json::Value = serde_json::from_str(&report.to_string()).unwrap();
        let t = &json["tables"][0];
        assert_eq!(t["different"], 5);
        assert_eq!(t["samples"]["different"], serde_json::json!([["2"]]));
        assert_eq!(t["sink"], "replica");
    })
    .await;
}

#[tokio::test]
async fn key_order_holds_across_type_and_collation_differences() {
    let mut fx = Fixture::new("order").await;
    let (name, table) = fx.table("public", "");
    // Integer key on one side, text on the other: "10" sorts before "9" as text, after as a number.
    let source_ddl =
        format!("CREATE TABLE {table} (k int PRIMARY KEY, v text COLLATE \"en-x-icu\")");
    let replica_ddl = format!("CREATE TABLE {table} (k text PRIMARY KEY, v text COLLATE \"C\")");
    let insert =
        format!("INSERT INTO {table} SELECT i, chr(64 + i % 50) FROM generate_series(-20, 120) i");
    let (name2, table2) = fx.table("public", "_t");
    // Text keys whose order differs between ICU and "C": a < B in one, B < a in the other.
    let source2 =
        format!("CREATE TABLE {table2} (k text COLLATE \"en-x-icu\" PRIMARY KEY, u uuid)");
    let replica2 = format!("CREATE TABLE {table2} (k text COLLATE \"C\" PRIMARY KEY, u uuid)");
    let insert2 = format!(
        "INSERT INTO {table2} VALUES ('a', gen_random_uuid()), ('B', NULL), ('b', NULL), ('A', NULL), \
         ('é', NULL), ('e', NULL), ('Z', NULL), ('_', NULL), ('', NULL), ('a b', NULL), ('ab', NULL)"
    );
    let (name3, table3) = fx.table("public", "_u");
    let ddl3 = format!("CREATE TABLE {table3} (id uuid PRIMARY KEY, n int)");
    // A replica without a key may hold a key twice, or NULL: both are extra rows.
    let (name4, table4) = fx.table("public", "_nokey");
    let source4 = format!("CREATE TABLE {table4} (id int PRIMARY KEY, v text)");
    let replica4 = format!("CREATE TABLE {table4} (id int, v text)");
    let insert4 = format!("INSERT INTO {table4} SELECT i, 'v' || i FROM generate_series(1, 5) i");
    let extra4 = format!("INSERT INTO {table4} VALUES (NULL, 'x'), (3, 'v3')");
    fx.run(async {
        exec(&fx.source, &source4).await;
        exec(&fx.replica, &replica4).await;
        fx.both(&insert4).await;
        exec(&fx.replica, &extra4).await;
        let report = verify(&test_config(), &args(&[&arg("public", &name4)])).await;
        let t = &report.tables[0];
        assert_eq!(
            (t.matching, t.extra, t.missing, t.different),
            (5, 2, 0, 0),
            "{report}"
        );
        assert_eq!(t.samples.extra, vec![key(&["3"]), vec![None]]);
        assert!(
            report.to_string().contains("extra: id=3; id=NULL"),
            "{report}"
        );

        exec(&fx.source, &source_ddl).await;
        exec(&fx.replica, &replica_ddl).await;
        fx.both(&insert).await;
        exec(&fx.source, &source2).await;
        exec(&fx.replica, &replica2).await;
        exec(&fx.source, &insert2).await;
        // Same rows, same uuids: copy them over as text.
        let rows: Vec<(String, Option<String>)> =
            sqlx::query_as(AssertSqlSafe(format!("SELECT k, u::text FROM {table2}")))
                .fetch_all(&fx.source)
                .await
                .unwrap();
        for (k, u) in rows {
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {table2} VALUES ($1, $2::uuid)"
            )))
            .bind(k)
            .bind(u)
            .execute(&fx.replica)
            .await
            .unwrap();
        }
        fx.both(&ddl3).await;
        exec(
            &fx.source,
            &format!(
                "INSERT INTO {table3} SELECT gen_random_uuid(), i FROM generate_series(1, 500) i"
            ),
        )
        .await;
        let copied: Vec<(String, i32)> =
            sqlx::query_as(AssertSqlSafe(format!("SELECT id::text, n FROM {table3}")))
                .fetch_all(&fx.source)
                .await
                .unwrap();
        for (id, n) in copied {
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {table3} VALUES ($1::uuid, $2)"
            )))
            .bind(id)
            .bind(n)
            .execute(&fx.replica)
            .await
            .unwrap();
        }
        let report = verify(
            &test_config(),
            &args(&[
                &arg("public", &name),
                &arg("public", &name2),
                &arg("public", &name3),
            ]),
        )
        .await;
        assert!(report.all_equal(), "{report}");
        assert_eq!(report.tables[0].matching, 141, "{report}");
        assert_eq!(report.tables[1].matching, 11, "{report}");
        assert_eq!(report.tables[2].matching, 500, "{report}");

        exec(
            &fx.replica,
            &format!("DELETE FROM {table} WHERE k IN ('9', '10', '-20')"),
        )
        .await;
        let report = verify(&test_config(), &args(&[&arg("public", &name)])).await;
        let t = &report.tables[0];
        assert_eq!((t.missing, t.extra, t.matching), (3, 0, 138), "{report}");
        assert_eq!(
            t.samples.missing,
            vec![key(&["-20"]), key(&["10"]), key(&["9"])]
        );
    })
    .await;
}

#[tokio::test]
async fn missing_replica_table_counts_every_row_missing() {
    let mut fx = Fixture::new("notable").await;
    let (name, table) = fx.table("public", "");
    let ddl = format!("CREATE TABLE {table} (a text, b int, PRIMARY KEY (a, b))");
    let insert = format!("INSERT INTO {table} VALUES ('x', 1), ('x', 10), ('x', 2), ('y y', 1)");
    fx.run(async {
        exec(&fx.source, &ddl).await;
        exec(&fx.source, &insert).await;
        let report = verify(&test_config(), &args(&[&arg("public", &name)])).await;
        let t = &report.tables[0];
        assert!(!report.all_equal());
        assert!(t.missing_table);
        assert_eq!((t.source_rows, t.missing, t.replica_rows), (4, 4, 0));
        assert_eq!(t.samples.missing[0], key(&["x", "1"]));
        let text = report.to_string();
        assert!(
            text.contains("the replica has no table")
                && text.contains("all 4 source rows are missing"),
            "{text}"
        );
        // The integer part of the key sorts as a number.
        assert!(
            text.contains("missing: (a=x, b=1); (a=x, b=2); (a=x, b=10); (a='y y', b=1)"),
            "{text}"
        );

        // An empty source table lacks nothing on the replica.
        exec(&fx.source, &format!("TRUNCATE {table}")).await;
        let report = verify(&test_config(), &args(&[&arg("public", &name)])).await;
        assert!(
            report.tables[0].missing_table && report.all_equal(),
            "{report}"
        );
        assert!(
            report.to_string().contains("nothing is missing"),
            "{report}"
        );
    })
    .await;
}

#[tokio::test]
async fn missing_column_is_reported_as_a_schema_difference() {
    let mut fx = Fixture::new("nocol").await;
    let (name, table) = fx.table("public", "");
    let source_ddl =
        format!("CREATE TABLE {table} (id bigint PRIMARY KEY, note text, \"Amount\" numeric)");
    let replica_ddl = format!("CREATE TABLE {table} (id bigint PRIMARY KEY, note text)");
    let rows = "SELECT i, 'n', 1 FROM generate_series(1, 4) i".to_string();
    let (name2, table2) = fx.table("public", "_k");
    let source2 = format!("CREATE TABLE {table2} (id int PRIMARY KEY, v text)");
    let replica2 = format!("CREATE TABLE {table2} (v text)");
    fx.run(async {
        exec(&fx.source, &source_ddl).await;
        exec(&fx.replica, &replica_ddl).await;
        exec(&fx.source, &format!("INSERT INTO {table} {rows}")).await;
        exec(
            &fx.replica,
            &format!("INSERT INTO {table} SELECT i, 'n' FROM generate_series(2, 5) i"),
        )
        .await;
        exec(&fx.source, &source2).await;
        exec(&fx.replica, &replica2).await;
        exec(&fx.source, &format!("INSERT INTO {table2} VALUES (1, 'a')")).await;

        let report = verify(
            &test_config(),
            &args(&[&arg("public", &name), &arg("public", &name2)]),
        )
        .await;
        let t = &report.tables[0];
        assert_eq!(t.missing_columns, vec!["Amount".to_string()]);
        assert_eq!(
            (t.matching, t.different, t.missing, t.extra),
            (0, 3, 1, 1),
            "{report}"
        );
        let k = &report.tables[1];
        assert!(
            k.problem.as_deref().unwrap_or("").contains("key column"),
            "{report}"
        );
        assert_eq!((k.source_rows, k.replica_rows), (1, 0));
        let text = report.to_string();
        assert!(
            text.contains("schema differs: the replica table lacks column(s) \"Amount\""),
            "{text}"
        );
        assert!(text.contains("cannot compare rows"), "{text}");
        assert!(!report.all_equal());
    })
    .await;
}

#[tokio::test]
async fn sink_schema_maps_tables_and_default_selection_finds_them() {
    let mut fx = Fixture::new("schema").await;
    let schema = fx.schema(true, true).await;
    let (name, source_table) = fx.table(&schema, "");
    let (_, replica_table) = fx.table(&format!("{schema}_r"), "");
    let replica_schema = format!("{schema}_r");
    fx.drops.push((
        true,
        format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(&replica_schema)
        ),
    ));
    let (other, other_table) = fx.table(&schema, "_not_replicated");
    let (keyless, keyless_table) = fx.table(&schema, "_keyless");
    fx.run(async {
        exec(
            &fx.replica,
            &format!("CREATE SCHEMA {}", quote_ident(&replica_schema)),
        )
        .await;
        exec(
            &fx.source,
            &format!("CREATE TABLE {source_table} (id int PRIMARY KEY, v text)"),
        )
        .await;
        exec(
            &fx.source,
            &format!("INSERT INTO {source_table} VALUES (1, 'a'), (2, NULL)"),
        )
        .await;
        exec(
            &fx.replica,
            &format!("CREATE TABLE {replica_table} (id int PRIMARY KEY, v text)"),
        )
        .await;
        exec(
            &fx.replica,
            &format!("INSERT INTO {replica_table} VALUES (1, 'a'), (2, NULL)"),
        )
        .await;
        exec(
            &fx.source,
            &format!("CREATE TABLE {other_table} (id int PRIMARY KEY)"),
        )
        .await;
        exec(
            &fx.source,
            &format!("CREATE TABLE {keyless_table} (v text)"),
        )
        .await;
        exec(
            &fx.replica,
            &format!(
                "CREATE TABLE {}.{} (v text)",
                quote_ident(&replica_schema),
                quote_ident(&keyless)
            ),
        )
        .await;

        let config = config(Some(&source_url()), &replica_url(), Some(&replica_schema));
        let report = verify(&config, &args(&[])).await;
        // Only source tables whose name exists in the mapped schema are compared.
        let mine: Vec<&TableReport> = report.tables.iter().collect();
        assert_eq!(mine.len(), 2, "{report}");
        let t = mine
            .iter()
            .find(|t| t.table == arg(&schema, &name))
            .expect("table");
        assert!(t.equal(), "{report}");
        assert_eq!(t.target, arg(&replica_schema, &name));
        let k = mine
            .iter()
            .find(|t| t.table == arg(&schema, &keyless))
            .expect("keyless");
        // A table without a key is compared as a bag of rows.
        assert!(k.equal() && k.problem.is_none(), "{report}");
        assert_eq!(k.key_columns, ["row"]);
        assert!(
            report
                .absent_tables
                .iter()
                .any(|a| a.table == arg(&schema, &other)),
            "{report}"
        );
        assert!(report.all_equal(), "{report}");
        assert!(
            report
                .to_string()
                .contains(&format!("{} -> {}", t.table, t.target))
        );

        let only = verify(
            &config,
            &VerifyArgs {
                sinks: vec!["replica".into()],
                ..args(&[&arg(&schema, &name)])
            },
        )
        .await;
        assert!(only.all_equal(), "{only}");
    })
    .await;
}

#[tokio::test]
async fn errors_name_the_config_key_and_mask_the_password() {
    // No [source]: nothing is contacted.
    let no_source = config(None, &replica_url(), None);
    let e = run(&no_source, &args(&[])).await.unwrap_err();
    assert!(e.to_string().contains("`source.url` is not set"), "{e}");

    let unreachable = config(
        Some("postgres://postgres:s3cret@127.0.0.1:1/app"),
        &replica_url(),
        None,
    );
    let e = run(&unreachable, &args(&[])).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, VerifyError::Connect { .. }), "{text}");
    assert!(text.contains("postgres:****@127.0.0.1:1/app"), "{text}");
    assert!(
        text.contains("source.url") && !text.contains("s3cret"),
        "{text}"
    );

    let bad_replica = config(
        Some(&source_url()),
        "postgres://me:pw@127.0.0.1:1/replica",
        None,
    );
    let e = run(&bad_replica, &args(&[])).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("sink \"replica\"") && text.contains("sinks.replica.url"),
        "{text}"
    );
    assert!(
        text.contains("me:****@127.0.0.1:1") && !text.contains(":pw@"),
        "{text}"
    );

    let e = run(
        &test_config(),
        &VerifyArgs {
            sinks: vec!["cache".into()],
            ..args(&[])
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, VerifyError::UnsupportedSink { .. }), "{e}");
    let e = run(
        &test_config(),
        &VerifyArgs {
            sinks: vec!["nope".into()],
            ..args(&[])
        },
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("configured: cache, replica"), "{e}");
    let e = run(&test_config(), &args(&["a.b.c"])).await.unwrap_err();
    assert!(matches!(e, VerifyError::TableArg { .. }), "{e}");
    let e = run(&test_config(), &args(&["public.verify_test_no_such_table"]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("has no such table"), "{e}");
}

#[test]
fn the_run_future_is_send() {
    fn is_send<T: Send>(_: &T) {}
    let config = config(
        Some("postgres://x@127.0.0.1:1/x"),
        "postgres://x@127.0.0.1:1/y",
        None,
    );
    let args = VerifyArgs::default();
    is_send(&run(&config, &args));
}

/// `cargo test -- --ignored --nocapture million`: times verify on a 1,000,000-row table pair.
#[tokio::test]
#[ignore]
async fn million_row_table_pair() {
    let mut fx = Fixture::new("million").await;
    let (name, table) = fx.table("public", "");
    let ddl = format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, account text NOT NULL, amount numeric(12, 2), \
         at timestamptz, doc jsonb, note text)"
    );
    let fill = format!(
        "INSERT INTO {table} SELECT i, 'acct-' || (i % 9973), (i % 100000) / 100.0, \
         timestamptz '2024-01-01' + i * interval '1 second', \
         jsonb_build_object('i', i, 'tag', 'x' || (i % 17)), \
         CASE WHEN i % 10 = 0 THEN NULL ELSE 'note ' || i END \
         FROM generate_series(1, 1000000) i; ANALYZE {table}"
    );
    let (text_name, text_table) = fx.table("public", "_textkey");
    let text_ddl = format!("CREATE TABLE {text_table} (k text PRIMARY KEY, v int)");
    let text_fill = format!(
        "INSERT INTO {text_table} SELECT md5(i::text), i FROM generate_series(1, 1000000) i; ANALYZE {text_table}"
    );
    fx.run(async {
        let started = Instant::now();
        fx.both(&ddl).await;
        tokio::join!(exec(&fx.source, &fill), exec(&fx.replica, &fill));
        println!("generated 2 x 1,000,000 rows in {:.1?}", started.elapsed());

        let args = args(&[&arg("public", &name)]);
        let started = Instant::now();
        let report = verify(&test_config(), &args).await;
        println!("equal pair verified in {:.2?}:\n{report}", started.elapsed());
        assert!(report.all_equal());
        assert_eq!(report.tables[0].matching, 1_000_000);

        exec(
            &fx.replica,
            &format!(
                "DELETE FROM {table} WHERE id = 500000; UPDATE {table} SET amount = amount + 0.01 WHERE id = 999999; \
                 INSERT INTO {table} VALUES (1000001, 'x', 1, now(), '{{}}', NULL)"
            ),
        )
        .await;
        let started = Instant::now();
        let report = verify(&test_config(), &args).await;
        println!("differing pair verified in {:.2?}:\n{report}", started.elapsed());
        let t = &report.tables[0];
        assert_eq!((t.missing, t.extra, t.different, t.matching), (1, 1, 1, 999_998));

        fx.both(&text_ddl).await;
        tokio::join!(exec(&fx.source, &text_fill), exec(&fx.replica, &text_fill));
        let started = Instant::now();
        let report = verify(&test_config(), &self::args(&[&arg("public", &text_name)])).await;
        println!("text-keyed pair verified in {:.2?}:\n{report}", started.elapsed());
        assert!(report.all_equal());

        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        for line in status.lines().filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS")) {
            println!("{line}");
        }
    })
    .await;
}

/// A store held in memory, for the read-back comparison's own logic: documents by id, and a
/// listing of ids that may name ids it no longer holds (as a Redis key set may).
struct HeldStore {
    rows: std::collections::HashMap<String, ripple_sink::StoredRow>,
    listed: Vec<String>,
    /// How many times the whole listing was read.
    listings: AtomicUsize,
    counts: bool,
}

#[async_trait::async_trait]
impl ripple_sink::ReadBack for HeldStore {
    fn target_name(&self, _target: ripple_sink::Target<'_>) -> String {
        "memory".into()
    }

    async fn has_table(
        &self,
        _target: ripple_sink::Target<'_>,
    ) -> Result<bool, ripple_sink::SinkError> {
        Ok(true)
    }

    async fn fetch(
        &self,
        _target: ripple_sink::Target<'_>,
        ids: &[String],
    ) -> Result<Vec<Option<ripple_sink::StoredRow>>, ripple_sink::SinkError> {
        Ok(ids.iter().map(|id| self.rows.get(id).cloned()).collect())
    }

    async fn count(
        &self,
        _target: ripple_sink::Target<'_>,
    ) -> Result<Option<u64>, ripple_sink::SinkError> {
        Ok(self.counts.then_some(self.rows.len() as u64))
    }

    fn row_id(
        &self,
        _target: ripple_sink::Target<'_>,
        event: &ripple_sink::ChangeEvent,
    ) -> Result<String, ripple_sink::SinkError> {
        Ok(format!(
            "row:{}",
            ripple_sink::to_text(&event.key[0]).unwrap_or_default()
        ))
    }

    async fn stored_ids(
        &self,
        _target: ripple_sink::Target<'_>,
        cursor: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), ripple_sink::SinkError> {
        let from: usize = cursor.as_deref().map_or(0, |c| c.parse().unwrap());
        if from == 0 {
            self.listings.fetch_add(1, Ordering::Relaxed);
        }
        let to = (from + 1000).min(self.listed.len());
        Ok((
            self.listed[from..to].to_vec(),
            (to < self.listed.len()).then(|| to.to_string()),
        ))
    }
}

/// 30,000 rows, with rows missing, different and extra, and listed ids the store no longer holds:
/// each is counted exactly, the extras are found by reading again only the buckets that differ,
/// in several passes when the budget is small, and a store that counts exactly skips the listing.
#[tokio::test]
async fn read_back_finds_each_difference_in_bounded_passes() {
    let mut fx = Fixture::new("readback").await;
    let (name, sql) = fx.table("public", "");
    fx.run(async {
        exec(
            &fx.source,
            &format!(
                "CREATE TABLE {sql} (id int8 PRIMARY KEY, qty numeric(10,2), note text, at timestamptz); \
                 INSERT INTO {sql} SELECT i, i / 4.0, CASE WHEN i % 7 = 0 THEN NULL ELSE 'n' || i END, \
                   timestamptz '2025-03-14 09:26:53.589793+00' + i * interval '1 second' \
                 FROM generate_series(1, 30000) i; ANALYZE {sql}"
            ),
        )
        .await;
        // The store's documents, as PostgreSQL's own JSON of each row: not Ripple's rendering.
        let docs: Vec<(i64, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT id, row_to_json(t)::text FROM {sql} t"
        )))
        .fetch_all(&fx.source)
        .await
        .unwrap();
        let mut rows: std::collections::HashMap<String, ripple_sink::StoredRow> = docs
            .into_iter()
            .map(|(id, doc)| {
                (
                    format!("row:{id}"),
                    ripple_sink::StoredRow::Document(serde_json::from_str(&doc).unwrap()),
                )
            })
            .collect();
        let mut listed: Vec<String> = rows.keys().cloned().collect();
        for id in (100..30000).step_by(997) {
            rows.remove(&format!("row:{id}")); // missing, and still listed
        }
        for id in (50..30000).step_by(1499) {
            if let Some(ripple_sink::StoredRow::Document(doc)) = rows.get_mut(&format!("row:{id}")) {
                doc["qty"] = serde_json::json!(-1);
            }
        }
        for id in 40_001..40_038 {
            let id = format!("row:{id}");
            rows.insert(id.clone(), ripple_sink::StoredRow::Document(serde_json::json!({"id": 1})));
            listed.push(id);
        }
        listed.push("row:99999".into()); // listed, held by nothing
        listed.sort();
        let missing = (100..30000).step_by(997).count() as u64;
        let different = (50..30000)
            .step_by(1499)
            .filter(|id| (id - 100) % 997 != 0)
            .count() as u64;

        let source = postgres::PgStore::connect(postgres::PgAddress {
            what: "the source database".into(),
            key: "source".into(),
            url: &source_url(),
            options: source_url().parse::<sqlx::postgres::PgConnectOptions>().map_err(|e| {
                ripple_sink::ConfigError::new("source.url", e.to_string())
            }),
        })
        .await
        .unwrap();
        let table = source
            .describe(&compare::TableName { schema: "public".into(), name: name.clone() })
            .await
            .unwrap()
            .unwrap();
        let store = HeldStore { rows, listed, listings: AtomicUsize::new(0), counts: false };
        let t = ripple_sink::TableRef::new("public", &name);
        let options = crate::route::RouteOptions::default();
        let (source, table, options, t) = (&source, &table, &options, &t);
        let compare = move |store: &'static HeldStore, bytes: usize| {
            async move {
                readback::compare_table(
                    source,
                    store,
                    ripple_sink::Target::of(t),
                    table,
                    options,
                    compare::Keep {
                        samples: 100,
                        fixes: 0,
                        progress: &indicatif::ProgressBar::hidden(),
                        bisection: Default::default(),
                    },
                    readback::Budget { bytes },
                )
                .await
                .unwrap()
            }
        };
        let store: &'static HeldStore = Box::leak(Box::new(store));
        let report = compare(store, 64 << 20).await;
        assert_eq!(report.source_rows, 30000, "{report:?}");
        assert_eq!(report.missing, missing, "{report:?}");
        assert_eq!(report.different, different, "{report:?}");
        assert_eq!(report.extra, 37, "{report:?}");
        assert_eq!(report.matching, 30000 - missing - different);
        assert_eq!(report.replica_rows, 30000 - missing + 37);
        assert!(report.samples.why_different.iter().all(|w| w.contains("\"qty\"")), "{report:?}");
        let mut extras: Vec<String> =
            report.samples.extra.iter().map(|k| k[0].clone().unwrap()).collect();
        extras.sort();
        assert_eq!(extras, (40_001..40_038).map(|i| format!("row:{i}")).collect::<Vec<_>>());
        // The whole listing once for the sums, once more for the one pass over differing buckets.
        assert_eq!(store.listings.swap(0, Ordering::Relaxed), 2);

        // A budget that holds only some of the differing buckets' ids: several passes, same result.
        let report = compare(store, 24 << 10).await;
        assert_eq!((report.missing, report.different, report.extra), (missing, different, 37));
        let passes = store.listings.swap(0, Ordering::Relaxed) - 1;
        assert!(passes > 1, "{passes} passes");

        // A store that counts exactly, holding just what the source rows found: no listing at all.
        let exact: &'static HeldStore = Box::leak(Box::new(HeldStore {
            rows: store
                .rows
                .iter()
                .filter(|(k, _)| k[4..].parse::<i64>().unwrap() <= 30000)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            listed: Vec::new(),
            listings: AtomicUsize::new(0),
            counts: true,
        }));
        let report = compare(exact, 64 << 20).await;
        assert_eq!((report.missing, report.extra), (missing, 0), "{report:?}");
        assert_eq!(exact.listings.load(Ordering::Relaxed), 0);
    })
    .await;
}

/// `--repair` rewrites what differs from the source through the replica sink's versioned writes,
/// each just after the version the replica held for the row, and the comparison after it is
/// equal; a later change still wins over a repaired row, an older one still does not.
#[tokio::test]
async fn repair_rewrites_what_differs_just_after_the_held_versions() {
    let mut fx = Fixture::new("repair").await;
    let (name, table) = fx.table("public", "");
    fx.run(async {
        exec(
            &fx.source,
            &format!(
                "CREATE TABLE {table} (id int8 PRIMARY KEY, qty int, note text, at timestamptz); \
                 INSERT INTO {table} SELECT i, i, 'n' || i, '2025-01-01 00:00:00+00' FROM generate_series(1, 2000) i"
            ),
        )
        .await;
        exec(
            &fx.replica,
            &format!(
                "CREATE TABLE {table} (id int8 PRIMARY KEY, qty int, note text, at timestamptz, \
                   _ripple_commit bigint, _ripple_change bigint); \
                 INSERT INTO {table} SELECT i, i, 'n' || i, '2025-01-01 00:00:00+00', 100, 5 FROM generate_series(1, 2000) i; \
                 DELETE FROM {table} WHERE id IN (10, 20, 30); \
                 UPDATE {table} SET qty = -1 WHERE id IN (40, 50); \
                 UPDATE {table} SET note = NULL WHERE id = 60; \
                 UPDATE {table} SET at = now() WHERE id = 70; \
                 INSERT INTO {table} VALUES (5001, 1, 'x', NULL, 100, 5), (5002, 2, 'y', NULL, NULL, NULL)"
            ),
        )
        .await;
        let table_arg = arg("public", &name);
        let repair = VerifyArgs {
            repair: true,
            ..args(&[&table_arg])
        };
        let report = verify(&test_config(), &repair).await;
        let t = &report.tables[0];
        let r = t.repair.as_ref().expect("a repair ran");
        assert_eq!(
            (r.found, r.rewritten, r.removed, r.failed),
            (9, 7, 2, 0),
            "{report}"
        );
        assert!(report.all_equal(), "{report}");
        assert!(report.to_string().contains("repaired: 9 rows differed"), "{report}");

        // Rewritten rows hold the version just after the one the replica held; rows found only in
        // the replica are gone, with tombstones at the version just after theirs.
        let versions: Vec<(i64, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT id, _ripple_commit, _ripple_change FROM {table} WHERE id IN (10, 40, 60, 70, 1) ORDER BY id"
        )))
        .fetch_all(&fx.replica)
        .await
        .unwrap();
        assert_eq!(
            versions,
            [(1, 100, 5), (10, 0, 1), (40, 100, 6), (60, 100, 6), (70, 100, 6)]
        );
        let tombstones: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT key, commit_lsn, change_lsn FROM _ripple.tombstones \
             WHERE table_name = $1 || '#' || to_regclass($1)::oid ORDER BY key",
        )
        .bind(format!("\"public\".{}", quote_ident(&name)))
        .fetch_all(&fx.replica)
        .await
        .unwrap();
        assert_eq!(
            tombstones,
            [("{5001}".into(), 100, 6), ("{5002}".into(), 0, 1)]
        );

        // Through the same sink: the change after the repaired one wins, the one before does not.
        let sink = crate::registry::builtin()
            .into_iter()
            .find(|f| f.kind() == "postgres")
            .unwrap()
            .build(
                "replica",
                "sinks.replica",
                toml::from_str(&format!("type = \"postgres\"\nurl = {:?}", replica_url())).unwrap(),
            )
            .await
            .unwrap();
        let schema = Arc::new(readback::table_schema(
            &postgres::PgStore::connect(postgres::PgAddress {
                what: "the source database".into(),
                key: "source".into(),
                url: &source_url(),
                options: source_url()
                    .parse::<sqlx::postgres::PgConnectOptions>()
                    .map_err(|e| ripple_sink::ConfigError::new("source.url", e.to_string())),
            })
            .await
            .unwrap()
            .describe(&compare::TableName {
                schema: "public".into(),
                name: name.clone(),
            })
            .await
            .unwrap()
            .unwrap(),
        ));
        let change = |qty: i64, commit: u64, change: u64| ripple_sink::ChangeEvent {
            schema: schema.clone(),
            op: ripple_sink::Op::Upsert,
            key: vec![ripple_sink::Value::Int(40)],
            row: Some(vec![
                ripple_sink::Value::Int(40),
                ripple_sink::Value::Int(qty),
                ripple_sink::Value::Text("n40".into()),
                ripple_sink::Value::Null,
            ]),
            before: None,
            version: ripple_sink::Version { commit, change },
            source_ts_ms: 0,
            origin: ripple_sink::Origin {
                topic: Arc::from("t"),
                partition: 0,
                offset: 1,
            },
        };
        let t = ripple_sink::TableRef::new("public", &name);
        sink.apply(ripple_sink::Target::of(&t), &[change(-5, 100, 5)])
            .await
            .unwrap();
        sink.apply(ripple_sink::Target::of(&t), &[change(77, 100, 30)])
            .await
            .unwrap();
        let qty: i32 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT qty FROM {table} WHERE id = 40"
        )))
        .fetch_one(&fx.replica)
        .await
        .unwrap();
        assert_eq!(qty, 77);
        exec(
            &fx.replica,
            &format!("DELETE FROM _ripple.tombstones WHERE table_name LIKE 'public.%{name}%'"),
        )
        .await;
    })
    .await;
}

/// A store that counts the rows it streams, to see how much a comparison downloaded.
struct Counting<'a> {
    store: &'a postgres::PgStore,
    rows: std::sync::Arc<AtomicUsize>,
}

impl compare::RowStore for Counting<'_> {
    fn label(&self) -> &str {
        self.store.label()
    }

    async fn columns(
        &self,
        table: &compare::TableName,
    ) -> Result<Option<Vec<compare::Column>>, VerifyError> {
        self.store.columns(table).await
    }

    fn rows<'a>(&'a self, scan: compare::Scan<'a>) -> compare::RowStream<'a> {
        use futures::TryStreamExt;
        let rows = self.rows.clone();
        Box::pin(self.store.rows(scan).inspect_ok(move |_| {
            rows.fetch_add(1, Ordering::Relaxed);
        }))
    }

    async fn count(&self, table: &compare::TableName) -> Result<u64, VerifyError> {
        self.store.count(table).await
    }

    async fn key_bounds(
        &self,
        table: &compare::TableName,
        key: &str,
    ) -> Result<Option<(i64, i64)>, VerifyError> {
        self.store.key_bounds(table, key).await
    }

    async fn checksum(&self, scan: compare::Scan<'_>) -> Result<compare::Checksum, VerifyError> {
        self.store.checksum(scan).await
    }
}

/// A table keyed by one integer column is compared by segment checksums: every difference is
/// found, and only the rows of the few segments that differ are downloaded.
#[tokio::test]
async fn segment_checksums_find_every_difference_and_download_little() {
    let mut fx = Fixture::new("segments").await;
    let (name, table) = fx.table("public", "");
    fx.run(async {
        let ddl = format!(
            "CREATE TABLE {table} (id int8 PRIMARY KEY, qty int, note text, at timestamptz); \
             INSERT INTO {table} SELECT i, i % 13, 'n' || i, '2025-01-01 00:00:00+00' FROM generate_series(1, 60000) i"
        );
        fx.both(&ddl).await;
        exec(
            &fx.replica,
            &format!(
                "DELETE FROM {table} WHERE id IN (7, 30001, 59999); \
                 UPDATE {table} SET qty = -1 WHERE id IN (100, 45000); \
                 UPDATE {table} SET at = at + interval '1 microsecond' WHERE id = 20000; \
                 INSERT INTO {table} VALUES (60001, 1, 'x', NULL), (0, 1, 'y', NULL)"
            ),
        )
        .await;
        let connect = |url: String, what: &str| {
            let what = what.to_string();
            async move {
                postgres::PgStore::connect(postgres::PgAddress {
                    what,
                    key: "source".into(),
                    url: &url,
                    options: url
                        .parse::<sqlx::postgres::PgConnectOptions>()
                        .map_err(|e| ripple_sink::ConfigError::new("source.url", e.to_string())),
                })
                .await
                .unwrap()
            }
        };
        let (source, replica) = (
            connect(source_url(), "source").await,
            connect(replica_url(), "replica").await,
        );
        let name = compare::TableName {
            schema: "public".into(),
            name: name.clone(),
        };
        let described = source.describe(&name).await.unwrap().unwrap();
        let target_columns = compare::RowStore::columns(&replica, &name).await.unwrap();
        let downloaded = std::sync::Arc::new(AtomicUsize::new(0));
        let count = |store| Counting {
            store,
            rows: downloaded.clone(),
        };
        let report = compare::compare_table(
            &count(&source),
            &count(&replica),
            &described,
            &name,
            target_columns,
            &compare::ColumnMap::identity(&described),
            compare::Keep {
                samples: 10,
                fixes: 0,
                progress: &indicatif::ProgressBar::hidden(),
                bisection: compare::Bisection {
                    factor: 8,
                    threshold: 200,
                },
            },
        )
        .await
        .unwrap();
        assert_eq!(
            (report.missing, report.extra, report.different),
            (3, 2, 3),
            "{report:?}"
        );
        assert_eq!((report.source_rows, report.replica_rows), (60000, 59999));
        assert_eq!(report.matching, 60000 - 3 - 3);
        let sorted = |mut keys: Vec<Vec<Option<String>>>| {
            keys.sort_by_key(|k| k[0].as_deref().unwrap_or_default().parse::<i64>().unwrap());
            keys
        };
        assert_eq!(
            sorted(report.samples.missing.clone()),
            vec![key(&["7"]), key(&["30001"]), key(&["59999"])]
        );
        assert_eq!(sorted(report.samples.extra.clone()), vec![key(&["0"]), key(&["60001"])]);
        let downloaded = downloaded.load(Ordering::Relaxed);
        assert!(
            downloaded < 60000 / 20,
            "{downloaded} rows downloaded: the segments were not narrowed"
        );
    })
    .await;
}
