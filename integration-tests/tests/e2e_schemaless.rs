//! JSON without schemas (`schemas.enable=false`) through real Debezium, with a column added
//! mid-stream. Typed from the source's catalog, the new column is followed at once; typed from the
//! replica's, records carrying a column the replica lacks are dead-lettered with a reason naming
//! it, records after the replica gained the column apply without a restart, and replaying the dead
//! letters leaves every store equal. (The type matrix in `e2e_types` covers the types themselves.)

mod common;

use common::*;
use std::time::Duration;

const NO_SCHEMAS: &str =
    r#"{"key.converter.schemas.enable": "false", "value.converter.schemas.enable": "false"}"#;

struct Setup {
    t: String,
    config: std::path::PathBuf,
    dead_letter: String,
    connector: Connector,
}

fn setup(name: &str, types_from: &str) -> Setup {
    require_stack();
    let t = unique(name);
    let dir = temp_dir(&t);
    let create = format!(
        "CREATE TABLE public.{t} (id int PRIMARY KEY, name text, price numeric(10,2), seen timestamptz)"
    );
    psql(SOURCE_URL, &create);
    psql(REPLICA_URL, &create);
    let connector = Connector::with_settings(
        &t.replace('_', "-"),
        &t,
        &format!("public.{t}"),
        1,
        NO_SCHEMAS,
    );
    let topic = connector.topic(&t);
    let dead_letter = format!("{t}.dead");
    let extra = format!(
        "\n[sinks.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:16379\"\nformat = \"json\"\n\
         \n[[routes]]\ntopics = [\"{topic}\"]\nsinks = [\"cache\"]\n\
         \n[dead_letter]\ntopic = \"{dead_letter}\"\n\
         \n[decode.schemaless]\ntypes_from = \"{types_from}\"\ndecimal_handling_mode = \"string\"\n"
    );
    let config = write_config(&dir, &[topic], &t, &extra);
    Setup {
        t,
        config,
        dead_letter,
        connector,
    }
}

fn teardown(s: Setup) {
    let t = s.t.clone();
    drop(s.connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
}

fn load(t: &str, from: i32, to: i32) {
    psql(
        SOURCE_URL,
        &format!(
            "INSERT INTO public.{t} (id, name, price, seen) SELECT g, 'item ' || g, g * 1.25, \
             '2024-06-01 12:00+02'::timestamptz + g * interval '1 minute' FROM generate_series({from}, {to}) g"
        ),
    );
}

#[test]
fn typed_from_the_source_an_added_column_is_followed_at_once() {
    let s = setup("e2e_noschema_src", "source");
    let t = &s.t;
    let table = format!("public.{t}");
    let run = RippleProcess::start(&s.config, &[]);
    load(t, 1, 100);
    psql(
        SOURCE_URL,
        &format!("UPDATE public.{t} SET price = NULL WHERE id % 10 = 0"),
    );
    psql(SOURCE_URL, &format!("DELETE FROM public.{t} WHERE id > 90"));
    wait_verified(&s.config, &table, 2, Duration::from_secs(60));

    // The replica gets the column from Ripple (it adds columns it is sent); its type comes from
    // the source's catalog, read again when a record names a column it did not know.
    psql(
        SOURCE_URL,
        &format!("ALTER TABLE public.{t} ADD COLUMN qty smallint"),
    );
    psql(
        SOURCE_URL,
        &format!("UPDATE public.{t} SET qty = id WHERE id <= 20"),
    );
    load(t, 101, 150);
    let report = wait_verified(&s.config, &table, 2, Duration::from_secs(60));
    assert!(report.contains("EQUAL"), "{report}");
    assert_eq!(
        psql(
            REPLICA_URL,
            &format!(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'public.{t}'::regclass AND attname = 'qty'"
            )
        ),
        "smallint"
    );
    assert_eq!(
        psql(
            REPLICA_URL,
            &format!("SELECT count(qty), sum(qty) FROM public.{t}")
        ),
        "20|210"
    );
    assert!(
        dead_letters(&s.dead_letter).is_empty(),
        "nothing is dead-lettered"
    );
    assert!(run.signal("TERM").success());
    teardown(s);
}

#[test]
fn typed_from_the_replica_an_unknown_column_waits_in_the_dead_letters() {
    let s = setup("e2e_noschema_rep", "replica");
    let t = &s.t;
    let table = format!("public.{t}");
    let mut run = RippleProcess::start(&s.config, &[]);
    load(t, 1, 50);
    wait_verified(&s.config, &table, 2, Duration::from_secs(60));

    // The source gains a column the replica does not have: those records cannot be typed.
    psql(
        SOURCE_URL,
        &format!("ALTER TABLE public.{t} ADD COLUMN qty int"),
    );
    psql(
        SOURCE_URL,
        &format!("UPDATE public.{t} SET qty = id WHERE id <= 5"),
    );
    wait_until(Duration::from_secs(60), "five dead letters", || {
        dead_letters(&s.dead_letter).len() >= 5
    });
    let letters = dead_letters(&s.dead_letter);
    assert_eq!(letters.len(), 5, "{letters:?}");
    assert!(
        letters[0].0.contains("\"qty\"") && letters[0].0.contains("has no known type"),
        "the reason names the column: {}",
        letters[0].0
    );
    // Once the replica has the column, new records apply, without a restart.
    psql(
        REPLICA_URL,
        &format!("ALTER TABLE public.{t} ADD COLUMN qty int"),
    );
    load(t, 51, 60);
    psql(
        SOURCE_URL,
        &format!("UPDATE public.{t} SET qty = 7 WHERE id = 55"),
    );
    wait_until(
        Duration::from_secs(60),
        "rows after the replica gained the column",
        || {
            psql(
                REPLICA_URL,
                &format!("SELECT qty FROM public.{t} WHERE id = 55"),
            ) == "7"
        },
    );
    assert!(run.is_running(), "{}", run.log_text());
    assert!(run.signal("TERM").success());

    // The five waiting updates are replayed, and every store matches the source.
    let out = ripple(&[
        "replay",
        "--config",
        s.config.to_str().unwrap(),
        "--dead-letter",
        &s.dead_letter,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report = text(&verify(&s.config, &table));
    assert_eq!(report.matches("EQUAL ").count(), 2, "{report}");
    assert_eq!(
        psql(
            REPLICA_URL,
            &format!("SELECT count(qty), sum(qty) FROM public.{t}")
        ),
        "6|22"
    );
    teardown(s);
}
