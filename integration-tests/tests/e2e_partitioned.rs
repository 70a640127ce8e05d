//! A partitioned table replicates as one table in every store: the stack's connector publishes
//! through the partition root (`publish.via.partition.root`), so the changes of every partition,
//! of a partition added mid-stream, and of rows that move between partitions by a key update all
//! arrive on the root's one topic, and the replica, Redis and the index each end EQUAL to the root.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn a_partitioned_table_replicates_as_one() {
    require_stack();
    let t = unique("e2e_parted");
    let dir = temp_dir(&t);
    psql(
        SOURCE_URL,
        &format!(
            "CREATE TABLE public.{t} (id int, region text, qty int, PRIMARY KEY (id, region)) PARTITION BY LIST (region); \
             CREATE TABLE public.{t}_a PARTITION OF public.{t} FOR VALUES IN ('a'); \
             CREATE TABLE public.{t}_b PARTITION OF public.{t} FOR VALUES IN ('b'); \
             INSERT INTO public.{t} SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, g FROM generate_series(1, 100) g"
        ),
    );
    let connector = Connector::start(&t.replace('_', "-"), &t, &format!("public.{t}"));
    let topic = connector.topic(&t);
    let config = write_config(
        &dir,
        std::slice::from_ref(&topic),
        &t,
        &cache_and_search(&topic),
    );
    let mut run = RippleProcess::start(&config, &[]);

    // Streaming: a partition added, rows written into it, rows moved between partitions by a
    // key update, updates and deletes in each.
    psql(
        SOURCE_URL,
        &format!(
            "CREATE TABLE public.{t}_c PARTITION OF public.{t} FOR VALUES IN ('c'); \
             INSERT INTO public.{t} SELECT g, 'c', g FROM generate_series(101, 150) g; \
             UPDATE public.{t} SET region = 'b' WHERE region = 'a' AND id <= 20; \
             UPDATE public.{t} SET region = 'c' WHERE region = 'b' AND id BETWEEN 21 AND 40; \
             UPDATE public.{t} SET qty = qty * 10 WHERE id % 3 = 0; \
             DELETE FROM public.{t} WHERE id % 7 = 0"
        ),
    );
    let report = wait_verified(&config, &format!("public.{t}"), 3, Duration::from_secs(120));
    println!("{report}");
    let moved = psql(
        SOURCE_URL,
        &format!("SELECT count(*) FROM public.{t}_c WHERE id <= 40"),
    );
    assert_ne!(moved, "0", "rows moved into the new partition");
    assert!(
        report.contains("matching 129"),
        "150 rows less 21 deleted, in every store: {report}"
    );
    // Nothing was published under a partition's own name.
    for part in ["a", "b", "c"] {
        let out = stack(&["topic-size", &format!("{t}.public.{t}_{part}")]);
        assert_eq!(text(&out).trim(), "0", "a topic for partition {part}");
    }
    assert!(run.is_running());
    assert!(run.signal("TERM").success());
    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    search_request("DELETE", &t, None);
}
