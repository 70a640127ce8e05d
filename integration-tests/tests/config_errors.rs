//! Bad configuration fails at start-up, before anything is consumed, with a message that names the
//! key or the address to fix.

mod common;

use common::*;

fn run_with(name: &str, text: &str) -> String {
    let dir = temp_dir("config_errors");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let out = ripple(&[
        "run",
        "--config",
        path.to_str().unwrap(),
        "--exit-when-idle-ms",
        "1000",
    ]);
    assert!(
        !out.status.success(),
        "ripple accepted a bad config ({name}): {}",
        text_of(&out)
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "config errors exit with 2: {}",
        text_of(&out)
    );
    text_of(&out)
}

fn text_of(out: &std::process::Output) -> String {
    text(out)
}

fn good(brokers: &str, replica: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{brokers}"
topics = ["config_errors.public.t"]

[sinks.replica]
type = "postgres"
url = "{replica}"

[[routes]]
topics = ["config_errors.public.t"]
sinks = ["replica"]
"#
    )
}

#[test]
fn unknown_key_is_named() {
    let text = good(BROKERS, REPLICA_URL).replace("[kafka]", "[kafka]\nbatch = 5");
    let err = run_with("unknown_key", &text);
    assert!(err.contains("`batch`"), "{err}");
    assert!(
        err.contains("expected one of"),
        "says what is accepted: {err}"
    );
}

#[test]
fn route_to_a_missing_sink_is_named() {
    let text = good(BROKERS, REPLICA_URL).replace("sinks = [\"replica\"]", "sinks = [\"search\"]");
    let err = run_with("missing_sink", &text);
    assert!(
        err.contains("routes[0].sinks[0]") && err.contains("\"search\""),
        "{err}"
    );
}

#[test]
fn no_sink_at_all_is_named() {
    let text = "[kafka]\nbrokers = \"127.0.0.1:19092\"\ntopics = [\"t\"]\n";
    let err = run_with("no_sinks", text);
    assert!(err.contains("`sinks`"), "{err}");
}

#[test]
fn unknown_sink_type_is_named() {
    let text = good(BROKERS, REPLICA_URL).replace("type = \"postgres\"", "type = \"postgress\"");
    let err = run_with("unknown_type", &text);
    assert!(
        err.contains("sinks.replica.type") && err.contains("postgress"),
        "{err}"
    );
}

#[test]
fn unreachable_broker_names_the_address() {
    require_stack();
    let err = run_with("unreachable_broker", &good("127.0.0.1:1", REPLICA_URL));
    assert!(
        err.contains("kafka.brokers") && err.contains("127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn unreachable_sink_names_the_sink() {
    let err = run_with(
        "unreachable_sink",
        &good(BROKERS, "postgres://postgres@127.0.0.1:1/replica"),
    );
    assert!(
        err.contains("sinks.replica") && err.contains("not reachable"),
        "{err}"
    );
}

#[test]
fn a_route_target_the_sink_cannot_use_is_named() {
    // A key template without a key column would send every row to one key.
    let text = format!(
        "{}\n[sinks.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:16379\"\n\n[[routes]]\ntopics = [\"config_errors.public.t\"]\nsinks = [\"cache\"]\ntarget = \"stock\"\n",
        good(BROKERS, REPLICA_URL)
    );
    let err = run_with("route_target", &text);
    assert!(err.contains("routes[1].target"), "{err}");
    assert!(err.contains("no key column"), "{err}");

    let text = good(BROKERS, REPLICA_URL).replace(
        "sinks = [\"replica\"]",
        "sinks = [\"replica\"]\ninclude = [\"a\"]\nexclude = [\"b\"]",
    );
    let err = run_with("include_and_exclude", &text);
    assert!(err.contains("routes[0].exclude"), "{err}");
}

#[test]
fn schemaless_types_from_must_name_a_database() {
    let base = good(BROKERS, REPLICA_URL);
    let err = run_with(
        "schemaless_from",
        &format!("{base}\n[decode.schemaless]\ntypes_from = \"cache\"\n"),
    );
    assert!(
        err.contains("decode.schemaless.types_from") && err.contains("\"cache\""),
        "{err}"
    );
    let err = run_with("schemaless_none", &format!("{base}\n[decode.schemaless]\n"));
    assert!(
        err.contains("decode.schemaless.types_from") && err.contains("is missing"),
        "{err}"
    );
}

#[test]
fn schemaless_declared_types_are_checked() {
    let base = good(BROKERS, REPLICA_URL);
    let err = run_with(
        "schemaless_type",
        &format!(
            "{base}\n[decode.schemaless.tables.\"public.t\"]\nid = \"integer\"\nprice = \"numeric(10,x)\"\n"
        ),
    );
    assert!(
        err.contains("decode.schemaless.tables.\"public.t\".price")
            && err.contains("numeric(10,2)"),
        "{err}"
    );
    let err = run_with(
        "schemaless_table",
        &format!("{base}\n[decode.schemaless.tables.orders]\nid = \"integer\"\n"),
    );
    assert!(err.contains("\"schema.table\""), "{err}");
    let err = run_with(
        "schemaless_mode",
        &format!(
            "{base}\n[decode.schemaless]\ntypes_from = \"replica\"\ntime_precision_mode = \"micro\"\n"
        ),
    );
    assert!(
        err.contains("time_precision_mode") && err.contains("adaptive"),
        "{err}"
    );
}

#[test]
fn avro_registry_url_must_be_http() {
    let base = good(BROKERS, REPLICA_URL);
    let err = run_with(
        "avro_url",
        &format!("{base}\n[decode.avro]\nregistry_url = \"127.0.0.1:18081\"\n"),
    );
    assert!(
        err.contains("decode.avro.registry_url") && err.contains("http"),
        "{err}"
    );
}
