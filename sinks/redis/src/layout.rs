//! Where Ripple's bookkeeping for a row lives (the key set a truncate empties, the versions hash and
//! the truncation watermark). A single Redis keeps one of each per table. A Redis Cluster runs a
//! script only when all its keys share one hash slot, so there each is kept per slot, under a
//! hash tag chosen to fall in the slot of the row's own key: the row, its version and the
//! watermark it is checked against are then always on one node, and a table spreads over the
//! whole cluster instead of piling its bookkeeping into one slot.

use ripple_sink::TableRef;
use std::sync::OnceLock;

/// Redis Cluster's hash slots.
pub(crate) const SLOTS: u16 = 16_384;

/// The per-table keys Ripple keeps next to the data (on a cluster, one such triple per slot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableKeys {
    /// Every data key written and not deleted: what a truncate removes.
    pub set: String,
    /// Version per data key, deleted ones included.
    pub versions: String,
    /// Version of the last truncate.
    pub watermark: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    prefix: String,
    sink: String,
    cluster: bool,
}

impl Layout {
    pub fn new(prefix: &str, sink: &str, cluster: bool) -> Self {
        Self {
            prefix: prefix.to_string(),
            sink: sink.to_string(),
            cluster,
        }
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The bookkeeping that guards `data_key`.
    pub fn for_key(&self, table: &TableRef, data_key: &str) -> TableKeys {
        if self.cluster {
            self.in_slot(table, slot_of(data_key.as_bytes()))
        } else {
            self.single(table)
        }
    }

    /// The one bookkeeping of a whole table on a single Redis (none on a cluster, where each
    /// key has its slot's): worked out once per batch, not per event.
    pub fn table_wide(&self, table: &TableRef) -> Option<TableKeys> {
        (!self.cluster).then(|| self.single(table))
    }

    /// Every place a table's bookkeeping may be: one on a single Redis, each slot on a cluster.
    pub fn all(&self, table: &TableRef) -> Vec<TableKeys> {
        if self.cluster {
            (0..SLOTS).map(|s| self.in_slot(table, s)).collect()
        } else {
            vec![self.single(table)]
        }
    }

    fn base(&self, table: &TableRef) -> String {
        // Per sink as well as per table: two sinks sharing one Redis each keep their own key set
        // and truncate watermark, so one's truncate cannot hide the other's keys from it.
        format!("{}:{}.{}", self.sink, table.namespace, table.name)
    }

    fn single(&self, table: &TableRef) -> TableKeys {
        Self::named(format!("{}{}", self.prefix, self.base(table)))
    }

    fn in_slot(&self, table: &TableRef, slot: u16) -> TableKeys {
        let tag = &slot_tags()[slot as usize];
        Self::named(format!("{}{{{tag}}}{}", self.prefix, self.base(table)))
    }

    fn named(set: String) -> TableKeys {
        TableKeys {
            versions: format!("{set}:versions"),
            watermark: format!("{set}:truncated"),
            set,
        }
    }
}

/// The slot Redis Cluster gives `key`: CRC16 (XMODEM) of its hash tag (the text between the first
/// `{` and the next `}`, when not empty) or of the whole key, modulo 16,384.
pub(crate) fn slot_of(key: &[u8]) -> u16 {
    let tag = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let close = key[open + 1..].iter().position(|&b| b == b'}')?;
            Some(&key[open + 1..open + 1 + close])
        })
        .filter(|tag| !tag.is_empty())
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tag) % SLOTS
}

/// For each slot, a short text whose slot it is (the first decimal number that lands there),
/// found once: about 160,000 CRCs, a few milliseconds.
fn slot_tags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags = vec![String::new(); SLOTS as usize];
        let mut left = SLOTS as usize;
        let mut n = 0u64;
        while left > 0 {
            let text = n.to_string();
            let slot = &mut tags[slot_of(text.as_bytes()) as usize];
            if slot.is_empty() {
                *slot = text;
                left -= 1;
            }
            n += 1;
        }
        tags
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(
            crc16::State::<crc16::XMODEM>::calculate(b"123456789"),
            0x31C3
        );
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_ne!(
            slot_of(b"foo{}{bar}"),
            slot_of(b"bar"),
            "an empty tag is no tag"
        );
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
    }

    #[test]
    fn each_rows_bookkeeping_shares_the_rows_slot() {
        let layout = Layout::new("ripple:keys:", "cache", true);
        let table = TableRef::new("public", "items");
        for key in ["items:1", "items:2", "inventory:{42}:x", "a}b", "{}", "é:7"] {
            let keys = layout.for_key(&table, key);
            let slot = slot_of(key.as_bytes());
            for k in [&keys.set, &keys.versions, &keys.watermark] {
                assert_eq!(slot_of(k.as_bytes()), slot, "{k} for {key}");
            }
        }
        let all = layout.all(&table);
        assert_eq!(all.len(), SLOTS as usize);
        for (slot, keys) in all.iter().enumerate() {
            assert_eq!(slot_of(keys.set.as_bytes()) as usize, slot);
        }
        let single = Layout::new("ripple:keys:", "cache", false);
        assert_eq!(
            single.for_key(&table, "items:1"),
            single.all(&table)[0],
            "one Redis keeps one set per table"
        );
        assert_eq!(single.all(&table)[0].set, "ripple:keys:cache:public.items");
    }
}
