//! Tables without a primary key, through real Debezium. A log table (inserts only, two of them
//! identical, some from the snapshot) goes into all three stores, each row keyed by its source
//! position; a history table with REPLICA IDENTITY FULL has updates and deletes, which the
//! replica applies to one row holding the old values. verify compares both as bags of rows, and
//! replaying both topics from their start adds no row and changes none.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn tables_without_a_key_append_once_and_match_full_old_rows() {
    require_stack();
    let t = unique("e2e_keyless");
    let (log, hist) = (format!("{t}_log"), format!("{t}_hist"));
    let dir = temp_dir(&t);
    psql(
        SOURCE_URL,
        &format!(
            "CREATE TABLE public.{log} (at timestamptz, who text, n int, doc jsonb);
             INSERT INTO public.{log} VALUES ('2026-12-01 10:00+00', 'snap', 1, '{{\"a\": 1}}'),
               ('2026-12-01 10:00+00', 'snap', 1, '{{\"a\": 1}}'), ('2026-12-01 11:00+00', 'snap', 2, NULL);
             CREATE TABLE public.{hist} (item text, qty int, note text);
             ALTER TABLE public.{hist} REPLICA IDENTITY FULL;
             INSERT INTO public.{hist} VALUES ('a', 1, 'x'), ('a', 1, 'x'), ('b', 2, NULL), ('c', 3, 'y');"
        ),
    );
    let connector = Connector::start(
        &t.replace('_', "-"),
        &t,
        &format!("public.{log},public.{hist}"),
    );
    let (log_topic, hist_topic) = (connector.topic(&log), connector.topic(&hist));
    let extra = format!(
        "\n[sinks.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:16379\"\n\
         \n[sinks.search]\ntype = \"elasticsearch\"\nurl = \"http://127.0.0.1:9251\"\n\
         \n[[routes]]\ntopics = [\"{log_topic}\"]\nsinks = [\"cache\", \"search\"]\n"
    );
    let config = write_config(&dir, &[log_topic.clone(), hist_topic.clone()], &t, &extra);
    let run = RippleProcess::start(&config, &[]);
    psql(
        SOURCE_URL,
        &format!(
            "INSERT INTO public.{log} VALUES ('2026-12-02 09:00+00', 'live', 3, '[1, \"x\"]'),
               ('2026-12-02 09:00+00', 'live', 3, '[1, \"x\"]'), (NULL, NULL, NULL, NULL);
             UPDATE public.{hist} SET qty = 10 WHERE ctid = (SELECT ctid FROM public.{hist} WHERE item = 'a' LIMIT 1);
             UPDATE public.{hist} SET note = 'now' WHERE item = 'b';
             DELETE FROM public.{hist} WHERE item = 'c';
             INSERT INTO public.{hist} VALUES ('d', 4, NULL);"
        ),
    );
    let log_report = wait_verified(
        &config,
        &format!("public.{log}"),
        3,
        Duration::from_secs(90),
    );
    assert_eq!(log_report.matches("matching 6,").count(), 3, "{log_report}");
    let hist_report = wait_verified(
        &config,
        &format!("public.{hist}"),
        1,
        Duration::from_secs(60),
    );
    assert!(hist_report.contains("matching 4,"), "{hist_report}");
    // Independently: the replica holds the source's bag of rows.
    let bag = |url: &str, table: &str, columns: &str| {
        psql(
            url,
            &format!(
                "SELECT string_agg(r, ' | ' ORDER BY r) FROM (SELECT ROW({columns})::text AS r FROM public.{table}) s"
            ),
        )
    };
    assert_eq!(
        bag(REPLICA_URL, &hist, "item, qty, note"),
        bag(SOURCE_URL, &hist, "item, qty, note")
    );
    assert_eq!(
        bag(REPLICA_URL, &hist, "item, qty, note"),
        "(a,1,x) | (a,10,x) | (b,2,now) | (d,4,)"
    );
    assert!(run.signal("TERM").success());

    // Both topics again from their start: every insert is there already, every update and delete
    // is not newer than the last one applied.
    for topic in [&log_topic, &hist_topic] {
        let out = ripple(&[
            "replay",
            "--config",
            config.to_str().unwrap(),
            "--topic",
            topic,
        ]);
        assert!(replayed(&out) >= 6, "{}", text(&out));
    }
    assert_eq!(
        psql(REPLICA_URL, &format!("SELECT count(*) FROM public.{log}")),
        "6"
    );
    assert_eq!(
        bag(REPLICA_URL, &hist, "item, qty, note"),
        "(a,1,x) | (a,10,x) | (b,2,now) | (d,4,)",
        "the replay changed the history table"
    );
    let report = wait_verified(
        &config,
        &format!("public.{log}"),
        3,
        Duration::from_secs(30),
    );
    assert_eq!(report.matches("matching 6,").count(), 3, "{report}");

    drop(connector);
    for table in [&log, &hist] {
        psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{table}"));
        psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{table}"));
    }
    search_request("DELETE", &log, None);
}
