//! Decoder throughput: how many Debezium JSON records of the seed table one core turns into change
//! events per second (the schema cache warm, as in a running pipeline).

use ripple::decode::{Decoded, Decoder, Record};
use std::sync::Arc;
use std::time::Instant;

const KEY: &str = include_str!("../src/decode/testdata/synthetic-update.key.json");
const VALUE: &str = include_str!("../src/decode/testdata/synthetic-update.value.json");

fn main() {
    let topic: Arc<str> = Arc::from("ripple.public.transactions");
    let mut decoder = Decoder::new();
    let n = 300_000;
    let started = Instant::now();
    let mut changes = 0;
    for offset in 0..n {
        let record = Record {
            topic: &topic,
            partition: 0,
            offset,
            key: Some(KEY.as_bytes()),
            value: Some(VALUE.as_bytes()),
        };
        if let Ok(Decoded::Change(_)) = decoder.decode(&record) {
            changes += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(changes, n);
    println!(
        "decode: {n} records of {} bytes in {secs:.2} s = {:.0} records/s on one core ({} cores on this machine)",
        KEY.len() + VALUE.len(),
        n as f64 / secs,
        std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(1)
    );
}
