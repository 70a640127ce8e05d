//! Ripple's bookkeeping in the replica: the version columns, tombstones, keyless marks and
//! truncation watermarks, created when missing, and the DDL lock they and the tables share.

use crate::errors::classify;
use ripple_sink::SinkError;
use sqlx::{Postgres, Transaction};

/// Version columns Ripple adds to every replica table; `verify` ignores `_ripple*` columns.
pub const COMMIT_COLUMN: &str = "_ripple_commit";
pub const CHANGE_COLUMN: &str = "_ripple_change";
/// Versions of deleted keys, so a late, older insert cannot resurrect a row.
pub const TOMBSTONES: &str = "_ripple.tombstones";
/// Per table without a key, the version of the last update or delete applied to it.
pub const KEYLESS: &str = "_ripple.keyless";
/// Per table, the version of its last truncate: nothing older may land afterwards.
pub const TRUNCATIONS: &str = "_ripple.truncations";

/// Creates Ripple's bookkeeping tables in the replica if they are missing.
pub async fn ensure_bookkeeping(tx: &mut Transaction<'_, Postgres>) -> Result<(), SinkError> {
    // A writer with only the privileges it needs (no CREATE on the database, not the owner of the
    // tables) cannot run even `IF NOT EXISTS` DDL: PostgreSQL checks the privilege first. So the
    // DDL runs only when something is missing.
    let present: bool = sqlx::query_scalar(
        "SELECT to_regclass('_ripple.tombstones') IS NOT NULL \
         AND to_regclass('_ripple.tombstones_newest') IS NOT NULL \
         AND to_regclass('_ripple.truncations') IS NOT NULL \
         AND to_regclass('_ripple.offsets') IS NOT NULL",
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(|e| classify(e, "look up bookkeeping tables"))?;
    if present {
        return Ok(());
    }
    lock_ddl(tx).await?;
    for ddl in [
        "CREATE SCHEMA IF NOT EXISTS _ripple",
        "CREATE TABLE IF NOT EXISTS _ripple.tombstones (table_name text NOT NULL, key text NOT NULL, \
         commit_lsn bigint NOT NULL, change_lsn bigint NOT NULL, PRIMARY KEY (table_name, key))",
        // A table's newest tombstone, read once per write to skip the per-row probe.
        "CREATE INDEX IF NOT EXISTS tombstones_newest ON _ripple.tombstones (table_name, commit_lsn, change_lsn)",
        "CREATE TABLE IF NOT EXISTS _ripple.truncations (table_name text PRIMARY KEY, \
         commit_lsn bigint NOT NULL, change_lsn bigint NOT NULL)",
        "CREATE TABLE IF NOT EXISTS _ripple.offsets (topic text NOT NULL, partition int NOT NULL, \
         table_name text NOT NULL, next_offset bigint NOT NULL, PRIMARY KEY (topic, partition, table_name))",
    ] {
        sqlx::query(ddl)
            .execute(&mut **tx)
            .await
            .map_err(|e| classify(e, "create bookkeeping tables"))?;
    }
    Ok(())
}

/// `_ripple.keyless`, created when a table without a key first has an update or delete (so a
/// writer without the privilege to create it is only asked to when it needs it).
pub(crate) async fn ensure_keyless_marks(
    tx: &mut Transaction<'_, Postgres>,
) -> Result<(), SinkError> {
    let present: bool = sqlx::query_scalar("SELECT to_regclass('_ripple.keyless') IS NOT NULL")
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| classify(e, "look up bookkeeping tables"))?;
    if present {
        return Ok(());
    }
    lock_ddl(tx).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS _ripple.keyless (table_name text PRIMARY KEY, \
         commit_lsn bigint NOT NULL, change_lsn bigint NOT NULL)",
    )
    .execute(&mut **tx)
    .await
    .map_err(|e| classify(e, "create bookkeeping tables"))?;
    Ok(())
}

/// The table's key in the bookkeeping tables: its name and OID, so a table dropped and created again
/// starts with no tombstones or watermark. `None` when the table does not exist.
pub async fn bookkeeping_name(
    tx: &mut Transaction<'_, Postgres>,
    target: &str,
) -> Result<Option<String>, SinkError> {
    let oid: Option<i64> = sqlx::query_scalar("SELECT to_regclass($1)::oid::int8")
        .bind(target)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| classify(e, "look up table"))?;
    Ok(oid.map(|oid| format!("{target}#{oid}")))
}

/// Serializes Ripple's DDL across sinks and instances until the transaction ends: concurrent
/// `CREATE ... IF NOT EXISTS` of the same object otherwise fails on a catalog unique index.
pub(crate) async fn lock_ddl(tx: &mut Transaction<'_, Postgres>) -> Result<(), SinkError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('ripple ddl'))")
        .execute(&mut **tx)
        .await
        .map_err(|e| classify(e, "lock for DDL"))?;
    Ok(())
}
