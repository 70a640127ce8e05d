//! The sink kinds the `ripple` binary knows. Adding a kind is one line here (and one crate).
//! The only other store code the engine uses is for its source, which is a PostgreSQL database:
//! it is reached, and its catalog read, with the postgres crate's code, so both agree.

use ripple_sink::{ColumnCatalog, ConfigError, PostgresAddress, SinkFactory};
use sqlx::postgres::PgConnectOptions;
use std::sync::Arc;

pub fn builtin() -> Vec<Arc<dyn SinkFactory>> {
    vec![
        Arc::new(ripple_sink_postgres::PostgresFactory),
        Arc::new(ripple_sink_redis::RedisFactory),
        Arc::new(ripple_sink_elasticsearch::ElasticsearchFactory),
    ]
}

/// Connection options for a PostgreSQL database (the source, or a replica verify reads);
/// errors name `<key_prefix>.<key>`.
pub fn postgres_options(
    key_prefix: &str,
    address: &PostgresAddress,
) -> Result<PgConnectOptions, ConfigError> {
    ripple_sink_postgres::connect_options(
        key_prefix,
        ripple_sink_postgres::ConnectKeys {
            url: &address.url,
            password_env: address.password_env.as_deref(),
            password_file: address.password_file.as_deref(),
            sslmode: address.sslmode.as_deref(),
            tls: &address.tls,
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
