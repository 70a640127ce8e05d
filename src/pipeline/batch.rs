//! A batch: the events consumed, grouped by table in arrival order with the sinks each goes to,
//! and the offsets it covers, whatever became of each record.

use crate::route::Assignment;
use crate::source::Partition;
use ripple_sink::{ChangeEvent, TableRef};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Events of one table from one topic, in offset order, and the sinks that own them.
pub struct TableBatch {
    pub topic: Arc<str>,
    pub table: TableRef,
    pub sinks: Arc<[Assignment]>,
    pub events: Vec<ChangeEvent>,
}

/// What one pass of the consumer loop collected.
#[derive(Default)]
pub struct Batch {
    pub tables: Vec<TableBatch>,
    /// Per partition, the highest offset in this batch (applied events and skipped records alike).
    pub offsets: BTreeMap<Partition, i64>,
    pub events: usize,
    pub skipped: usize,
    /// Records that could not be decoded, written to the dead-letter topic.
    pub dead_lettered: usize,
    /// Records consumed, per topic.
    pub records: Vec<(Arc<str>, u64)>,
    /// When every sink had applied it: the run's figures end here, not when the loop next looks.
    pub applied_at: Option<std::time::Instant>,
}

impl Batch {
    /// Records that the record at `offset` is part of this batch, whatever became of it.
    pub fn mark(&mut self, topic: &Arc<str>, partition: i32, offset: i64) {
        match self.records.iter_mut().find(|(t, _)| Arc::ptr_eq(t, topic)) {
            Some((_, n)) => *n += 1,
            None => self.records.push((topic.clone(), 1)),
        }
        let slot = self
            .offsets
            .entry((topic.clone(), partition))
            .or_insert(offset);
        *slot = (*slot).max(offset);
    }

    pub fn push(&mut self, sinks: Arc<[Assignment]>, event: ChangeEvent) {
        self.events += 1;
        // Batches hold few tables; the last one is almost always the right one.
        let found = self
            .tables
            .iter()
            .rposition(|t| Arc::ptr_eq(&t.topic, &event.origin.topic) && t.table == *event.table());
        match found {
            Some(i) => self.tables[i].events.push(event),
            None => self.tables.push(TableBatch {
                topic: event.origin.topic.clone(),
                table: event.table().clone(),
                sinks,
                events: vec![event],
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Leaves out everything from partitions this consumer no longer owns: their next owner
    /// starts at the last committed offset and applies those records itself.
    pub fn forget(&mut self, revoked: &[(String, i32)]) {
        let gone = |topic: &str, partition: i32| {
            revoked
                .iter()
                .any(|(t, p)| *p == partition && t.as_str() == topic)
        };
        self.offsets.retain(|(t, p), _| !gone(t, *p));
        for table in &mut self.tables {
            table
                .events
                .retain(|e| !gone(&e.origin.topic, e.origin.partition));
        }
        self.tables.retain(|t| !t.events.is_empty());
        self.events = self.tables.iter().map(|t| t.events.len()).sum();
    }
}
