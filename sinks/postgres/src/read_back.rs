//! How `ripple verify` reaches the replica: its address and where each source table lands (it
//! merge-joins the two databases in key order itself).

use crate::PostgresSink;
use crate::target::TargetTable;
use ripple_sink::Target;

impl ripple_sink::PostgresReplica for PostgresSink {
    fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    fn address(&self) -> &ripple_sink::PostgresAddress {
        &self.address
    }

    fn table_for(&self, target: Target<'_>) -> ripple_sink::TableRef {
        let into = TargetTable::resolve(target, &self.config);
        ripple_sink::TableRef::new(into.namespace, into.name)
    }
}
