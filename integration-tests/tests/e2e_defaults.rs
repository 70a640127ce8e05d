//! A column added in the source with a default fills the rows already there without a single
//! change event. The replica must hold the same values for them: the column Ripple adds declares
//! the default the stream's schema carries, so the untouched rows verify EQUAL (read back with
//! SQL too). (Debezium carries no default for array columns: such a column is NULL in the
//! replica's untouched rows; the README says so.)

mod common;

use common::*;
use std::time::Duration;

#[test]
fn a_column_added_with_a_default_fills_the_replicas_untouched_rows() {
    require_stack();
    let t = unique("e2e_defaults");
    let dir = temp_dir(&t);
    psql(
        SOURCE_URL,
        &format!(
            "CREATE TABLE public.{t} (id int PRIMARY KEY, name text); \
             INSERT INTO public.{t} SELECT g, 'n' || g FROM generate_series(1, 50) g"
        ),
    );
    let connector = Connector::start(&t.replace('_', "-"), &t, &format!("public.{t}"));
    let topic = connector.topic(&t);
    let config = write_config(&dir, std::slice::from_ref(&topic), &t, "");
    let run = RippleProcess::start(&config, &[]);
    let replica = |sql: &str| psql(REPLICA_URL, &sql.replace("{t}", &t));
    wait_until(Duration::from_secs(60), "the first rows", || {
        psql(
            REPLICA_URL,
            &format!("SELECT count(*) FROM pg_tables WHERE tablename = '{t}'"),
        ) == "1"
            && replica("SELECT count(*) FROM public.{t}") == "50"
    });

    psql(
        SOURCE_URL,
        &format!(
            "ALTER TABLE public.{t} ADD COLUMN status text NOT NULL DEFAULT 'new, it''s \\ here', \
             ADD COLUMN score numeric(6,2) DEFAULT 1.50, ADD COLUMN flag boolean DEFAULT true; \
             INSERT INTO public.{t} (id, name) VALUES (51, 'after')"
        ),
    );
    wait_until(Duration::from_secs(60), "the row after the ALTER", || {
        replica("SELECT count(*) FROM public.{t}") == "51"
    });
    let report = wait_verified(&config, &format!("public.{t}"), 1, Duration::from_secs(60));
    println!("{report}");
    assert!(report.contains("matching 51"), "{report}");
    let filled = replica(
        "SELECT count(*) FROM public.{t} WHERE status = 'new, it''s \\ here' AND score = 1.50 \
         AND flag AND id <= 50",
    );
    assert_eq!(
        filled, "50",
        "the rows from before the ALTER hold the defaults"
    );
    assert!(run.signal("TERM").success());
    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
}
