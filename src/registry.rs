//! The sink kinds the `ripple` binary knows. Adding a kind is one line here (and one crate).
//! The only other store code the engine uses is for its source, which is a PostgreSQL database:
//! it is reached, and its catalog read, with the postgres crate's code, so both agree.

use ripple_sink::{ColumnCatalog, ConfigError, SinkFactory, TlsFiles};
use sqlx::postgres::PgConnectOptions;
use std::path::Path;
use std::sync::Arc;

pub fn builtin() -> Vec<Arc<dyn SinkFactory>> {
    vec![
        Arc::new(ripple_sink_postgres::PostgresFactory),
        Arc::new(ripple_sink_redis::RedisFactory),
        Arc::new(ripple_sink_elasticsearch::ElasticsearchFactory),
    ]
}

/// The keys a PostgreSQL connection is configured with, in `[source]` as in a postgres sink.
pub struct PostgresKeys<'a> {
    pub url: &'a str,
    pub password_env: Option<&'a str>,
    pub password_file: Option<&'a Path>,
    pub sslmode: Option<&'a str>,
    pub tls: &'a TlsFiles,
}

/// Connection options for the source database; errors name `<key_prefix>.<key>`.
pub fn postgres_options(
    key_prefix: &str,
    keys: PostgresKeys<'_>,
) -> Result<PgConnectOptions, ConfigError> {
    ripple_sink_postgres::connect_options(
        key_prefix,
        ripple_sink_postgres::ConnectKeys {
            url: keys.url,
            password_env: keys.password_env,
            password_file: keys.password_file,
            sslmode: keys.sslmode,
            tls: keys.tls,
        },
    )
}

/// The source database's column catalog (`[decode.schemaless] types_from = "source"`).
pub fn source_catalog(options: PgConnectOptions) -> Box<dyn ColumnCatalog> {
    Box::new(ripple_sink_postgres::PgCatalog::new(
        options,
        "the source database".into(),
        None,
    ))
}
