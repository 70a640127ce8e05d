//! Writes one batch of generated changes as one source transaction, in a few multi-row statements
//! instead of one round trip per change.

use super::generate::{Change, Transaction};
use super::{LoadgenError, LoadgenSummary, sql_error};
use sqlx::{AssertSqlSafe, PgConnection};
use std::collections::HashMap;

/// One statement of a batch.
#[derive(Debug, PartialEq)]
pub enum Step<'a> {
    Insert(Vec<&'a Transaction>),
    /// `(transaction_id, amount)` pairs with distinct keys.
    Update(Vec<(&'a str, &'a str)>),
    Delete(Vec<&'a str>),
    Truncate,
}

/// Groups a batch into statements: between truncates, all inserts, then the updates in rounds
/// (the n-th update of each key in round n, since one UPDATE cannot change a row twice), then all
/// deletes. Every key's own changes keep their generated order (a key is inserted before it is
/// updated and deleted after, and never comes back), so the table ends up exactly as with one
/// statement per change and each row sees the same sequence of events, at a few round trips per
/// batch; only the interleaving of different keys inside one transaction differs.
pub fn plan(changes: &[Change]) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    for (i, segment) in changes.split(|c| matches!(c, Change::Truncate)).enumerate() {
        if i > 0 {
            steps.push(Step::Truncate);
        }
        let mut inserts = Vec::new();
        let mut rounds: Vec<Vec<(&str, &str)>> = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut deletes = Vec::new();
        for change in segment {
            match change {
                Change::Insert(t) => inserts.push(t),
                Change::Update { id, amount } => {
                    let round = seen.entry(id.as_str()).or_insert(0);
                    if *round == rounds.len() {
                        rounds.push(Vec::new());
                    }
                    rounds[*round].push((id.as_str(), amount.as_str()));
                    *round += 1;
                }
                Change::Delete { id } => deletes.push(id.as_str()),
                Change::Truncate => unreachable!("split on truncates"),
            }
        }
        if !inserts.is_empty() {
            steps.push(Step::Insert(inserts));
        }
        steps.extend(rounds.into_iter().map(Step::Update));
        if !deletes.is_empty() {
            steps.push(Step::Delete(deletes));
        }
    }
    steps
}

/// Statement texts for one table, built once per run.
pub struct Statements {
    insert: String,
    update: String,
    delete: String,
    truncate: String,
}

impl Statements {
    /// `table` is already quoted and schema-qualified.
    pub fn new(table: &str) -> Self {
        // Everything is bound as text and cast by the server: the amount stays an exact
        // two-decimal numeric, and one parameter per column holds the whole batch.
        Self {
            insert: format!(
                "INSERT INTO {table} (transaction_id, user_id, \"timestamp\", amount, currency, city, country, \
                 merchant_name, payment_method, ip_address, voucher_code, affiliate_id) \
                 SELECT a, b, c::timestamp, d::numeric, e, f, g, h, i, j, k, l \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
                 $8::text[], $9::text[], $10::text[], $11::text[], $12::text[]) AS s(a, b, c, d, e, f, g, h, i, j, k, l)"
            ),
            update: format!(
                "UPDATE {table} AS t SET amount = v.amount::numeric \
                 FROM unnest($1::text[], $2::text[]) AS v(id, amount) WHERE t.transaction_id = v.id"
            ),
            delete: format!("DELETE FROM {table} WHERE transaction_id = ANY($1::text[])"),
            truncate: format!("TRUNCATE {table}"),
        }
    }
}

/// Writes `changes` in one transaction and adds them to `summary`.
pub async fn write_batch(
    conn: &mut PgConnection,
    statements: &Statements,
    changes: &[Change],
    summary: &mut LoadgenSummary,
) -> Result<(), LoadgenError> {
    use sqlx::Connection;
    let mut tx = conn
        .begin()
        .await
        .map_err(sql_error("begin a transaction"))?;
    let mut added = LoadgenSummary::default();
    for step in plan(changes) {
        match step {
            Step::Insert(rows) => {
                let col =
                    |f: fn(&Transaction) -> &str| rows.iter().map(|r| f(r)).collect::<Vec<&str>>();
                sqlx::query(AssertSqlSafe(statements.insert.as_str()))
                    .bind(col(|r| &r.transaction_id))
                    .bind(col(|r| &r.user_id))
                    .bind(col(|r| &r.timestamp))
                    .bind(col(|r| &r.amount))
                    .bind(col(|r| &r.currency))
                    .bind(col(|r| &r.city))
                    .bind(col(|r| &r.country))
                    .bind(col(|r| &r.merchant_name))
                    .bind(col(|r| &r.payment_method))
                    .bind(col(|r| &r.ip_address))
                    .bind(col(|r| &r.voucher_code))
                    .bind(col(|r| &r.affiliate_id))
                    .execute(&mut *tx)
                    .await
                    .map_err(sql_error("insert rows"))?;
                added.inserts += rows.len() as u64;
            }
            Step::Update(pairs) => {
                let (ids, amounts): (Vec<&str>, Vec<&str>) = pairs.into_iter().unzip();
                let done = sqlx::query(AssertSqlSafe(statements.update.as_str()))
                    .bind(&ids)
                    .bind(&amounts)
                    .execute(&mut *tx)
                    .await
                    .map_err(sql_error("update amounts"))?;
                // A shortfall means another writer removed rows this run believes are live.
                expect_rows("update", ids.len(), done.rows_affected())?;
                added.updates += ids.len() as u64;
            }
            Step::Delete(ids) => {
                let done = sqlx::query(AssertSqlSafe(statements.delete.as_str()))
                    .bind(&ids)
                    .execute(&mut *tx)
                    .await
                    .map_err(sql_error("delete rows"))?;
                expect_rows("delete", ids.len(), done.rows_affected())?;
                added.deletes += ids.len() as u64;
            }
            Step::Truncate => {
                sqlx::query(AssertSqlSafe(statements.truncate.as_str()))
                    .execute(&mut *tx)
                    .await
                    .map_err(sql_error("truncate the table"))?;
                added.truncates += 1;
            }
        }
    }
    tx.commit().await.map_err(sql_error("commit"))?;
    // Counted only once committed, so the summary never claims changes that were rolled back.
    summary.inserts += added.inserts;
    summary.updates += added.updates;
    summary.deletes += added.deletes;
    summary.truncates += added.truncates;
    Ok(())
}

fn expect_rows(what: &'static str, expected: usize, affected: u64) -> Result<(), LoadgenError> {
    if affected == expected as u64 {
        Ok(())
    } else {
        Err(LoadgenError::LostRows {
            what,
            expected: expected as u64,
            affected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Mix;
    use super::super::generate::Generator;
    use super::*;

    fn id(n: u32) -> String {
        format!("k{n}")
    }
    fn upd(n: u32, amount: &str) -> Change {
        Change::Update {
            id: id(n),
            amount: amount.into(),
        }
    }
    fn del(n: u32) -> Change {
        Change::Delete { id: id(n) }
    }
    fn ins(g: &mut Generator, n: u32) -> Change {
        let mut t = g.transaction();
        t.transaction_id = id(n);
        Change::Insert(t)
    }

    /// Applies changes to a map of key -> (amount, per-key event log).
    fn apply_sequential(changes: &[Change]) -> HashMap<String, (String, Vec<String>)> {
        let mut rows: HashMap<String, (String, Vec<String>)> = HashMap::new();
        for c in changes {
            match c {
                Change::Insert(t) => {
                    rows.insert(
                        t.transaction_id.clone(),
                        (t.amount.clone(), vec![format!("i{}", t.amount)]),
                    );
                }
                Change::Update { id, amount } => {
                    let row = rows.get_mut(id).expect("update hits a live row");
                    row.0 = amount.clone();
                    row.1.push(format!("u{amount}"));
                }
                Change::Delete { id } => {
                    rows.remove(id).expect("delete hits a live row");
                }
                Change::Truncate => rows.clear(),
            }
        }
        rows
    }

    fn apply_plan(steps: &[Step]) -> HashMap<String, (String, Vec<String>)> {
        let mut rows: HashMap<String, (String, Vec<String>)> = HashMap::new();
        for step in steps {
            match step {
                Step::Insert(ts) => {
                    for t in ts {
                        assert!(
                            rows.insert(
                                t.transaction_id.clone(),
                                (t.amount.clone(), vec![format!("i{}", t.amount)])
                            )
                            .is_none()
                        );
                    }
                }
                Step::Update(pairs) => {
                    let mut keys = std::collections::HashSet::new();
                    for (id, amount) in pairs {
                        assert!(keys.insert(*id), "one UPDATE changes {id} twice");
                        let row = rows.get_mut(*id).expect("update hits a live row");
                        row.0 = amount.to_string();
                        row.1.push(format!("u{amount}"));
                    }
                }
                Step::Delete(ids) => {
                    for id in ids {
                        rows.remove(*id).expect("delete hits a live row");
                    }
                }
                Step::Truncate => rows.clear(),
            }
        }
        rows
    }

    #[test]
    fn plan_groups_by_kind_and_splits_repeated_updates_into_rounds() {
        let mut g = Generator::new(
            1,
            Mix {
                inserts: 100,
                updates: 0,
                deletes: 0,
            },
            vec![],
        );
        let changes = vec![
            ins(&mut g, 1),
            upd(1, "10.00"),
            ins(&mut g, 2),
            upd(1, "11.00"),
            upd(2, "12.00"),
            del(1),
            Change::Truncate,
            ins(&mut g, 3),
        ];
        let steps = plan(&changes);
        let kinds: Vec<String> = steps
            .iter()
            .map(|s| match s {
                Step::Insert(v) => format!("I{}", v.len()),
                Step::Update(v) => format!("U{}", v.len()),
                Step::Delete(v) => format!("D{}", v.len()),
                Step::Truncate => "T".into(),
            })
            .collect();
        assert_eq!(kinds, ["I2", "U2", "U1", "D1", "T", "I1"]);
        assert_eq!(
            steps[1],
            Step::Update(vec![("k1", "10.00"), ("k2", "12.00")])
        );
        assert_eq!(steps[2], Step::Update(vec![("k1", "11.00")]));
        assert!(plan(&[]).is_empty());
        assert_eq!(plan(&[Change::Truncate]), vec![Step::Truncate]);
    }

    #[test]
    fn planned_batches_give_the_same_rows_and_per_key_histories() {
        for seed in 0..20 {
            let mix = Mix {
                inserts: 40,
                updates: 45,
                deletes: 15,
            };
            let mut g = Generator::new(seed, mix, vec![]);
            let mut changes: Vec<Change> = (0..150).map(|_| g.next_change()).collect();
            changes.push(g.truncate());
            changes.extend((0..250).map(|_| g.next_change()));
            let expected = apply_sequential(&changes);
            for batch in [1, 7, 100, 1000] {
                // Batching only moves transaction boundaries; planning must not change any row
                // nor the order of any key's own events.
                let steps: Vec<Step> = changes.chunks(batch).flat_map(plan).collect();
                assert_eq!(apply_plan(&steps), expected, "seed {seed}, batch {batch}");
            }
        }
    }
}
