//! The sink kinds the `ripple` binary knows. Adding a kind is one line here (and one crate).

use ripple_sink::SinkFactory;
use std::sync::Arc;

pub fn builtin() -> Vec<Arc<dyn SinkFactory>> {
    vec![
        Arc::new(ripple_sink_postgres::PostgresFactory),
        Arc::new(ripple_sink_redis::RedisFactory),
        Arc::new(ripple_sink_elasticsearch::ElasticsearchFactory),
    ]
}
