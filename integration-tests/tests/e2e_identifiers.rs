//! Identifiers as users write them: a table whose name has mixed case, spaces and double quotes,
//! with columns named by reserved words, spaces, quotes and SQL comment characters, through real
//! Debezium into the replica (same names, quoted everywhere, nothing injected), Redis and the
//! search index (whose name has to lose the spaces and quotes). A primary-key change (Debezium's
//! delete + create pair) moves the row in every store.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn odd_names_round_trip_and_key_changes_move_the_row() {
    require_stack();
    let prefix = unique("e2e_ident");
    let dir = temp_dir(&prefix);
    let table = format!(r#"Odd "Q" Table {}"#, &prefix[prefix.len() - 6..]);
    let quoted = format!("\"{}\"", table.replace('"', "\"\""));
    psql(
        SOURCE_URL,
        &format!(
            r#"CREATE TABLE public.{quoted} ("Id" int PRIMARY KEY, "select" text, "two words" int,
               "quote""d" text, "semi;colon--" text, "UPPER" boolean);
               ALTER TABLE public.{quoted} REPLICA IDENTITY FULL;
               INSERT INTO public.{quoted} VALUES
                 (1, 'from', 10, 'a "b"', 'x; DROP TABLE y; --', true),
                 (2, 'where', 20, '''', NULL, false),
                 (3, NULL, NULL, NULL, NULL, NULL);"#
        ),
    );
    // Debezium's include list is a regular expression; Connect topic names cannot hold the
    // quotes or spaces, which Debezium replaces.
    let connector = Connector::start(&prefix.replace('_', "-"), &prefix, "public.Odd.*");
    let topics = format!("^{prefix}\\.public\\..*");
    let extra = format!(
        "\n[sinks.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:16379\"\nformat = \"json\"\n\
         \n[sinks.search]\ntype = \"elasticsearch\"\nurl = \"http://127.0.0.1:9251\"\nindex = \"{prefix}-{{table}}\"\n\
         \n[[routes]]\ntopics = [{topics:?}]\nsinks = [\"cache\", \"search\"]\n"
    );
    let config = write_config(&dir, std::slice::from_ref(&topics), &prefix, &extra);
    let run = RippleProcess::start(&config, &[]);
    psql(
        SOURCE_URL,
        &format!(
            r#"UPDATE public.{quoted} SET "two words" = 11, "select" = 'group' WHERE "Id" = 1;
               UPDATE public.{quoted} SET "Id" = 100 WHERE "Id" = 2;
               DELETE FROM public.{quoted} WHERE "Id" = 3;
               INSERT INTO public.{quoted} ("Id", "quote""d") VALUES (4, 'late');"#
        ),
    );
    let verify_arg = format!("public.{quoted}");
    let last = wait_verified(&config, &verify_arg, 3, Duration::from_secs(90));
    assert!(run.signal("TERM").success());

    // The replica has the very same names, and the key change moved the row.
    let ids = psql(
        REPLICA_URL,
        &format!(r#"SELECT string_agg("Id"::text, ',' ORDER BY "Id") FROM public.{quoted}"#),
    );
    assert_eq!(ids, "1,4,100", "{last}");
    let columns = psql(
        REPLICA_URL,
        &format!(
            "SELECT string_agg(attname, '|' ORDER BY attnum) FROM pg_attribute \
             WHERE attrelid = 'public.{}'::regclass AND attnum > 0 AND attname NOT LIKE '\\_ripple%'",
            quoted.replace('\'', "''")
        ),
    );
    assert_eq!(columns, r#"Id|select|two words|quote"d|semi;colon--|UPPER"#);
    let moved = psql(
        REPLICA_URL,
        &format!(r#"SELECT "select" FROM public.{quoted} WHERE "Id" = 100"#),
    );
    assert_eq!(moved, "where");
    // The index name lost what index names cannot hold.
    let index = format!("{prefix}-{}", table.to_lowercase().replace([' ', '"'], "_"));
    let count = search_request("GET", &format!("{index}/_count"), None);
    assert_eq!(count["count"], 3, "index {index}: {count}");

    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{quoted}"));
    psql(
        REPLICA_URL,
        &format!("DROP TABLE IF EXISTS public.{quoted}"),
    );
    search_request("DELETE", &index, None);
}
