//! JSON columns as real tables hold them: a `jsonb` column whose shape varies from row to row (an
//! array of numbers and text, an object where another row has a number) is indexed in every row, and
//! an update that leaves a large `jsonb` value out (Debezium's unavailable-value placeholder) keeps
//! it byte for byte in Redis's `json` format: big numbers, long fractions, `[]` and `{}`, unicode.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn json_of_any_shape_is_indexed_and_kept_exactly_through_a_merge() {
    require_stack();
    let t = unique("e2e_json");
    let dir = temp_dir(&t);
    // Row 100 is large enough to be stored out of line, so an update of `n` leaves it out.
    psql(
        SOURCE_URL,
        &format!(
            r#"CREATE TABLE public.{t} (id int PRIMARY KEY, n int, doc jsonb);
               ALTER TABLE public.{t} ALTER COLUMN doc SET STORAGE EXTERNAL;
               ALTER TABLE public.{t} REPLICA IDENTITY DEFAULT;
               INSERT INTO public.{t} VALUES
                 (1, 0, '{{"arr": [1, "x"]}}'), (2, 0, '{{"arr": {{"o": 1}}}}'),
                 (3, 0, '[1, "two", {{"three": 3}}]'), (4, 0, '"just a string"'), (5, 0, '42'),
                 (6, 0, '{{"a": {{"b": {{"c": [[1, [2]], {{"e": true}}]}}}}}}'), (7, 0, '{{}}'),
                 (8, 0, '[]'), (9, 0, NULL);
               INSERT INTO public.{t} SELECT 100, 0, jsonb_build_object(
                 'big', 9007199254740993, 'huge', 123456789012345678901234567890,
                 'frac', 1.2345678901234567, 'empty_a', '[]'::jsonb, 'empty_o', '{{}}'::jsonb,
                 'u', 'é✓😀 "q" \ /', 'pad', (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 200) g))"#
        ),
    );
    let connector = Connector::start(&t.replace('_', "-"), &t, &format!("public.{t}"));
    let topic = connector.topic(&t);
    let extra = format!(
        "\n[sinks.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:16379\"\n\
         key = \"{t}:{{id}}\"\nformat = \"json\"\n\
         \n[sinks.search]\ntype = \"elasticsearch\"\nurl = \"http://127.0.0.1:9251\"\n\
         \n[[routes]]\ntopics = [\"{topic}\"]\nsinks = [\"cache\", \"search\"]\n"
    );
    let config = write_config(&dir, std::slice::from_ref(&topic), &t, &extra);
    let run = RippleProcess::start(&config, &[]);
    let report = wait_verified(&config, &format!("public.{t}"), 3, Duration::from_secs(90));
    assert_eq!(report.matches("matching 10,").count(), 3, "{report}");
    let redis_get = || {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", "16379", "GET", &format!("{t}:100")])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let before = redis_get();
    let doc_text = psql(
        SOURCE_URL,
        &format!("SELECT doc FROM public.{t} WHERE id = 100"),
    );

    psql(SOURCE_URL, &format!("UPDATE public.{t} SET n = 1"));
    // The update really left the large value out.
    wait_until(
        Duration::from_secs(60),
        "the update to reach the topic",
        || topic_contains(&topic, "__debezium_unavailable_value"),
    );
    wait_until(Duration::from_secs(60), "Redis to apply the update", || {
        redis_get().contains(r#""n":1"#)
    });
    let after = redis_get();
    // The stored document holds the source's jsonb text as it is, before and after the merge.
    let member = format!(r#""doc":{doc_text}"#);
    assert!(before.contains(&member), "{member} not in {before:.300}");
    assert!(
        after.contains(&member),
        "the merge changed the kept value: {after:.300}"
    );
    let report = wait_verified(&config, &format!("public.{t}"), 3, Duration::from_secs(60));
    assert_eq!(report.matches("matching 10,").count(), 3, "{report}");

    assert!(run.signal("TERM").success());
    drop(connector);
    psql(SOURCE_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    psql(REPLICA_URL, &format!("DROP TABLE IF EXISTS public.{t}"));
    search_request("DELETE", &t, None);
}
