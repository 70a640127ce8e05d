//! The cluster's answers, classified: transport failures, blocks, overload, missing shards and
//! the authentication and authorization statuses are outages (retried); a document the index
//! refuses is permanent.

use ripple_sink::SinkError;
use serde_json::Value as Json;

/// A response's status and JSON body; a body that does not arrive is a transport failure.
pub(crate) async fn status_and_json(
    response: elasticsearch::http::response::Response,
    doing: &str,
) -> Result<(u16, Json), SinkError> {
    let status = response.status_code().as_u16();
    let body = response
        .json()
        .await
        .map_err(|e| transport_error(e, doing))?;
    Ok((status, body))
}

pub(crate) fn transport_error(err: elasticsearch::Error, doing: &str) -> SinkError {
    // Connection failures and timeouts are the transport's; anything that reached the cluster
    // comes back as a status code instead.
    SinkError::retriable(format!("elasticsearch {doing}: {err}")).with_source(err)
}

/// Error types that say the cluster or index cannot take writes now, whatever the document: a
/// block (read-only index, flood-stage disk watermark), a closed or missing index, rejected
/// execution (queues full), a tripped circuit breaker, shards not available.
pub(crate) fn is_outage_type(kind: &str) -> bool {
    matches!(
        kind,
        "cluster_block_exception"
            | "index_closed_exception"
            | "index_not_found_exception"
            | "es_rejected_execution_exception"
            | "circuit_breaking_exception"
            | "unavailable_shards_exception"
            | "no_shard_available_action_exception"
            | "process_cluster_event_timeout_exception"
            | "node_not_connected_exception"
            | "security_exception"
    )
}

/// The cluster's answers that are outages: 401 and 403 (credentials, privileges, a write block),
/// 408 and 429 (timeout, overload) and 5xx. Other 4xx (mapping errors, bad documents) belong to
/// the data.
pub(crate) fn status_error(status: u16, message: String) -> SinkError {
    let message = format!("elasticsearch: {message}");
    if matches!(status, 401 | 403 | 408 | 429) || status >= 500 {
        SinkError::retriable(message)
    } else {
        SinkError::permanent(message)
    }
}
