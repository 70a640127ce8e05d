//! Decoder tests on real Debezium output captured from the stack (see `testdata/`).

use super::*;

fn topic() -> Arc<str> {
    Arc::from("ripple.public.transactions")
}

fn record<'a>(topic: &'a Arc<str>, key: Option<&'a str>, value: Option<&'a str>) -> Record<'a> {
    Record { topic, partition: 0, offset: 7, key: key.map(str::as_bytes), value: value.map(str::as_bytes) }
}

#[test]
fn tombstone_is_skipped() {
    let t = topic();
    let mut d = Decoder::new();
    assert!(matches!(d.decode(&record(&t, Some("{}"), None)).unwrap(), Decoded::Skip(Skip::Tombstone)));
}

#[test]
fn garbage_is_a_clear_error() {
    let t = topic();
    let mut d = Decoder::new();
    let err = d.decode(&record(&t, None, Some("not json"))).unwrap_err();
    assert!(err.reason.contains("not JSON"), "{err}");
    let err = d.decode(&record(&t, None, Some(r#"{"a":1}"#))).unwrap_err();
    assert!(err.reason.contains("schema"), "{err}");
}
