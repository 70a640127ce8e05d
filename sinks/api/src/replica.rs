//! A sink whose store is a PostgreSQL database keeping each source table as a table (a replica):
//! `ripple verify` reads it as it reads the source and merge-joins the two in key order, which
//! proves every row equal at any table size. A sink of any crate offers it through
//! [`crate::Sink::postgres_replica`].

use crate::{TableRef, Target, TlsFiles};
use std::path::PathBuf;

/// How to reach and log in to a PostgreSQL server, as a config section gives it; the password is
/// read from `password_env` or `password_file` when connecting.
#[derive(Debug, Clone, Default)]
pub struct PostgresAddress {
    /// `postgres://user@host:port/database`.
    pub url: String,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    /// `disable`, `prefer`, `require`, `verify-ca` or `verify-full`; wins over the URL's.
    pub sslmode: Option<String>,
    pub tls: TlsFiles,
}

pub trait PostgresReplica: Send + Sync {
    /// The config section the address comes from (`sinks.replica`), so errors name its keys.
    fn key_prefix(&self) -> &str;

    fn address(&self) -> &PostgresAddress;

    /// The table the rows of `target.table` land in (after the sink's schema and the route's
    /// target template).
    fn table_for(&self, target: Target<'_>) -> TableRef;
}
