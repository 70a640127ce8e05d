//! Deterministic fake data for the seed workload: the same seed and starting keys give the same
//! sequence of inserts, updates and deletes.

use super::Mix;
use fake::Fake;
use fake::faker::address::en::{CityName, CountryName};
use fake::faker::company::en::CompanyName;
use fake::faker::internet::en::{IPv4, Username};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One row of the seed table, every value as the text PostgreSQL parses.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    pub transaction_id: String,
    pub user_id: String,
    pub timestamp: String,
    pub amount: String,
    pub currency: String,
    pub city: String,
    pub country: String,
    pub merchant_name: String,
    pub payment_method: String,
    pub ip_address: String,
    pub voucher_code: String,
    pub affiliate_id: String,
}

/// One generated change. A batch holds only a hundred or so and lives briefly, so the large
/// Insert variant stays unboxed rather than costing an allocation per row.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Insert(Transaction),
    Update { id: String, amount: String },
    Delete { id: String },
    Truncate,
}

pub struct Generator {
    rng: StdRng,
    mix: Mix,
    /// Keys of rows that exist, so updates and deletes always hit a row.
    live: Vec<String>,
    /// Updates go to the first this many live keys only (a hot set), or to any when `None`.
    hot_keys: Option<usize>,
}

/// Timestamps are spread over 2024 from a fixed base, so runs are reproducible.
const BASE_MICROS: i64 = 1_704_067_200_000_000;
const YEAR_MICROS: i64 = 366 * 24 * 3600 * 1_000_000;

impl Generator {
    /// `live` is the table's existing keys in a fixed order. They are folded into the seed: the
    /// same seed on the same table gives the same changes, but a second run with the seed that
    /// filled the table gets fresh keys instead of inserting the first run's again.
    pub fn new(seed: u64, mix: Mix, live: Vec<String>) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed ^ fingerprint(&live)),
            mix,
            live,
            hot_keys: None,
        }
    }

    /// Sends every update to the first `n` live keys (the oldest, while there are no deletes):
    /// an update-heavy load on hot keys, where reducing to the newest change per key pays.
    pub fn with_hot_keys(mut self, n: Option<usize>) -> Self {
        self.hot_keys = n.filter(|&n| n > 0);
        self
    }

    pub fn next_change(&mut self) -> Change {
        let roll = self.rng.random_range(0..100u32);
        if self.live.is_empty() || roll < self.mix.inserts {
            let t = self.transaction();
            self.live.push(t.transaction_id.clone());
            Change::Insert(t)
        } else if roll < self.mix.inserts + self.mix.updates {
            let among = self
                .hot_keys
                .map_or(self.live.len(), |n| n.min(self.live.len()));
            let id = self.live[self.rng.random_range(0..among)].clone();
            Change::Update {
                id,
                amount: self.amount(),
            }
        } else {
            let i = self.rng.random_range(0..self.live.len());
            Change::Delete {
                id: self.live.swap_remove(i),
            }
        }
    }

    /// Rows that exist after the changes generated so far.
    pub fn live_rows(&self) -> usize {
        self.live.len()
    }

    pub fn truncate(&mut self) -> Change {
        self.live.clear();
        Change::Truncate
    }

    fn uuid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .to_string()
    }

    /// Uniform in 10..1000 with two decimals, as the seed's `round(uniform(10, 1000), 2)`.
    fn amount(&mut self) -> String {
        let cents = self.rng.random_range(1_000..=100_000u32);
        format!("{}.{:02}", cents / 100, cents % 100)
    }

    pub fn transaction(&mut self) -> Transaction {
        let micros = BASE_MICROS + self.rng.random_range(0..YEAR_MICROS);
        let timestamp = chrono::DateTime::from_timestamp_micros(micros)
            .expect("in range")
            .naive_utc()
            .format("%Y-%m-%d %H:%M:%S%.6f")
            .to_string();
        let transaction_id = self.uuid();
        let affiliate_id = self.uuid();
        let amount = self.amount();
        Transaction {
            transaction_id,
            user_id: Username().fake_with_rng(&mut self.rng),
            timestamp,
            amount,
            currency: ["USD", "GBP"][self.rng.random_range(0..2)].to_string(),
            city: CityName().fake_with_rng(&mut self.rng),
            country: CountryName().fake_with_rng(&mut self.rng),
            merchant_name: CompanyName().fake_with_rng(&mut self.rng),
            payment_method: ["credit_card", "debit_card", "online_transfer"]
                [self.rng.random_range(0..3)]
            .to_string(),
            ip_address: IPv4().fake_with_rng(&mut self.rng),
            voucher_code: if self.rng.random_bool(0.1) {
                "DISCOUNT10".into()
            } else {
                String::new()
            },
            affiliate_id,
        }
    }
}

/// FNV-1a over the keys, 0 for none (so runs on an empty table use the seed as given). Spelled out
/// rather than `DefaultHasher`, whose output may change between Rust releases.
fn fingerprint(keys: &[String]) -> u64 {
    if keys.is_empty() {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for key in keys {
        for byte in key.bytes().chain([0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIX: Mix = Mix {
        inserts: 60,
        updates: 30,
        deletes: 10,
    };

    #[test]
    fn same_seed_same_changes() {
        let a: Vec<Change> = {
            let mut g = Generator::new(7, MIX, vec![]);
            (0..500).map(|_| g.next_change()).collect()
        };
        let mut g = Generator::new(7, MIX, vec![]);
        let b: Vec<Change> = (0..500).map(|_| g.next_change()).collect();
        assert_eq!(a, b);
        let mut g = Generator::new(8, MIX, vec![]);
        let c: Vec<Change> = (0..500).map(|_| g.next_change()).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn existing_keys_steer_the_stream() {
        let first: Vec<String> = {
            let mut g = Generator::new(42, MIX, vec![]);
            (0..100)
                .filter_map(|_| match g.next_change() {
                    Change::Insert(t) => Some(t.transaction_id),
                    _ => None,
                })
                .collect()
        };
        // A second run with the same seed on the rows of the first inserts new keys.
        let mut again = Generator::new(42, MIX, first.clone());
        for _ in 0..1000 {
            if let Change::Insert(t) = again.next_change() {
                assert!(!first.contains(&t.transaction_id));
            }
        }
        let a = Generator::new(42, MIX, first.clone()).transaction();
        assert_eq!(a, Generator::new(42, MIX, first.clone()).transaction());
        assert_eq!(fingerprint(&[]), 0);
        assert_ne!(
            fingerprint(&["ab".into(), "c".into()]),
            fingerprint(&["a".into(), "bc".into()])
        );
    }

    #[test]
    fn values_have_the_seed_shapes() {
        let mut g = Generator::new(1, MIX, vec![]);
        for _ in 0..1000 {
            let t = g.transaction();
            let amount: f64 = t.amount.parse().unwrap();
            assert!((10.0..=1000.0).contains(&amount), "{}", t.amount);
            assert_eq!(t.amount.split('.').nth(1).unwrap().len(), 2, "{}", t.amount);
            assert!(["USD", "GBP"].contains(&t.currency.as_str()));
            assert!(
                ["credit_card", "debit_card", "online_transfer"]
                    .contains(&t.payment_method.as_str())
            );
            assert!(t.voucher_code.is_empty() || t.voucher_code == "DISCOUNT10");
            assert_eq!(t.transaction_id.len(), 36);
            assert!(
                t.ip_address.parse::<std::net::Ipv4Addr>().is_ok(),
                "{}",
                t.ip_address
            );
            assert!(!t.user_id.is_empty() && !t.city.is_empty() && !t.merchant_name.is_empty());
        }
    }

    #[test]
    fn mix_is_respected_and_updates_hit_live_rows() {
        let mut g = Generator::new(3, MIX, vec![]);
        let changes: Vec<Change> = (0..10_000).map(|_| g.next_change()).collect();
        let inserts = changes
            .iter()
            .filter(|c| matches!(c, Change::Insert(_)))
            .count();
        let deletes = changes
            .iter()
            .filter(|c| matches!(c, Change::Delete { .. }))
            .count();
        assert!((5_700..6_300).contains(&inserts), "{inserts}");
        assert!((800..1_200).contains(&deletes), "{deletes}");
        let mut live = std::collections::HashSet::new();
        for c in &changes {
            match c {
                Change::Insert(t) => assert!(live.insert(t.transaction_id.clone())),
                Change::Update { id, .. } => assert!(live.contains(id)),
                Change::Delete { id } => assert!(live.remove(id)),
                Change::Truncate => live.clear(),
            }
        }
    }

    #[test]
    fn hot_keys_take_every_update() {
        let mix = Mix {
            inserts: 10,
            updates: 90,
            deletes: 0,
        };
        let mut g = Generator::new(5, mix, vec![]).with_hot_keys(Some(50));
        let changes: Vec<Change> = (0..20_000).map(|_| g.next_change()).collect();
        let mut order = Vec::new();
        let mut updated = std::collections::HashSet::new();
        for c in &changes {
            match c {
                Change::Insert(t) => order.push(t.transaction_id.clone()),
                Change::Update { id, .. } => {
                    updated.insert(id.clone());
                }
                _ => unreachable!("no deletes in this mix"),
            }
        }
        assert!(order.len() > 1_500, "{}", order.len());
        let hot: std::collections::HashSet<_> = order[..50].iter().cloned().collect();
        assert_eq!(updated, hot, "updates hit exactly the first 50 keys");
    }
}
