//! The requests the sink sends and the replies it reads, typed: `_bulk` (each item's status and
//! error), and the search of tombstones.

use crate::ElasticsearchSink;
use crate::errors::{is_outage_type, status_error, transport_error};
use elasticsearch::{BulkOperation, BulkParts};
use ripple_sink::{ChangeEvent, Rejection, SinkError};
use serde::Deserialize;
use serde_json::Value as Json;
use std::fmt;

/// A `_bulk` answer: whether any item failed, and every item's result in request order.
#[derive(Deserialize)]
struct BulkReply {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Vec<BulkItem>,
}

/// One item of a `_bulk` answer, named by its action.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum BulkItem {
    Index(ItemResult),
    Create(ItemResult),
    Update(ItemResult),
    Delete(ItemResult),
}

#[derive(Deserialize)]
struct ItemResult {
    #[serde(default)]
    status: u16,
    #[serde(default)]
    error: Option<ItemError>,
}

/// The index's reason for refusing one item, with what caused it.
#[derive(Deserialize)]
struct ItemError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    caused_by: Option<Box<ItemError>>,
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(reason) = &self.reason {
            write!(f, ": {reason}")?;
        }
        if let Some(cause) = &self.caused_by {
            write!(f, " (caused by {cause})")?;
        }
        Ok(())
    }
}

/// A search of tombstones: the hits, and whether every shard answered in time.
#[derive(Deserialize)]
pub(crate) struct Tombstones {
    #[serde(default)]
    timed_out: bool,
    #[serde(rename = "_shards")]
    shards: Shards,
    pub(crate) hits: Hits,
}

#[derive(Deserialize)]
struct Shards {
    #[serde(default)]
    failed: u64,
}

#[derive(Deserialize)]
pub(crate) struct Hits {
    pub(crate) hits: Vec<Hit>,
}

#[derive(Deserialize)]
pub(crate) struct Hit {
    #[serde(rename = "_id")]
    pub(crate) id: String,
    #[serde(rename = "_version")]
    pub(crate) version: i64,
}

impl Tombstones {
    /// Whether the answer covers the whole index: a shard that failed or a search that timed out
    /// may have missed a tombstone.
    pub(crate) fn complete(&self) -> bool {
        !self.timed_out && self.shards.failed == 0
    }
}

/// The most hits a search returns (`index.max_result_window`'s default).
pub(crate) const MAX_RESULT_WINDOW: usize = 10_000;

impl ElasticsearchSink {
    /// Sends one `_bulk` request. `events` are the events behind the operations, in order, each
    /// with its index in the call: a document the index refuses becomes their [`Rejection`]
    /// (returned); an item that failed for an outage fails the call (retried).
    pub(crate) async fn bulk(
        &self,
        operations: Vec<BulkOperation<Json>>,
        events: Vec<(usize, &ChangeEvent)>,
    ) -> Result<Vec<Rejection>, SinkError> {
        let events = &events[..];
        let mut rejected = Vec::new();
        let response = self
            .client
            .bulk(BulkParts::None)
            .body(operations)
            .send()
            .await
            .map_err(|e| transport_error(e, "bulk"))?;
        let status = response.status_code().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(e, "bulk response"))?;
        if status >= 300 {
            return Err(status_error(
                status,
                format!("bulk: {}", String::from_utf8_lossy(&body)),
            ));
        }
        let reply: BulkReply = serde_json::from_slice(&body).map_err(|e| {
            SinkError::retriable(format!(
                "elasticsearch bulk: an answer that is not a bulk reply: {e}"
            ))
        })?;
        if !reply.errors {
            return Ok(rejected);
        }
        // Item by item: a version conflict means the index already holds something newer.
        let mut retriable: Option<SinkError> = None;
        for (i, item) in reply.items.into_iter().enumerate() {
            let (delete, result) = match item {
                BulkItem::Delete(r) => (true, r),
                BulkItem::Index(r) | BulkItem::Create(r) | BulkItem::Update(r) => (false, r),
            };
            let status = result.status;
            // A delete of a missing document answers 404 with `result: not_found` and no error:
            // done. A 404 with an error (an index not recovered yet after a restart) is not.
            let missing_doc = status == 404 && delete && result.error.is_none();
            if status < 300 || status == 409 || missing_doc {
                continue;
            }
            let error = result
                .error
                .as_ref()
                .map_or_else(String::new, |e| e.to_string());
            if status == 404 {
                let error = status_error(
                    503,
                    format!(
                        "delete in {} not applied, the index is not available yet: {error}",
                        event_table(events, i),
                    ),
                );
                retriable.get_or_insert(error);
                continue;
            }
            let (index, event) = events.get(i).copied().unwrap_or((0, events[0].1));
            let message = format!(
                "document for {} rejected ({status}): {error}",
                event.table()
            );
            let kind = result.error.as_ref().map_or("", |e| e.kind.as_str());
            let error = if is_outage_type(kind) {
                SinkError::retriable(format!("elasticsearch: {message}"))
            } else {
                status_error(status, message)
            };
            if error.is_retriable() {
                retriable.get_or_insert(error);
            } else {
                rejected.push(Rejection::new(index, error.message));
            }
        }
        retriable.map_or(Ok(rejected), Err)
    }
}

/// The table of the `i`-th event, for messages.
fn event_table(events: &[(usize, &ChangeEvent)], i: usize) -> String {
    events
        .get(i)
        .or(events.first())
        .map_or_else(String::new, |(_, e)| e.table().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real OpenSearch `_bulk` answer with a refused document and a conflict reads as typed
    /// items, the reason chain in the message.
    #[test]
    fn bulk_replies_read_as_typed_items() {
        let body = r#"{"took":3,"errors":true,"items":[
            {"index":{"_index":"t","_id":"1","status":201,"result":"created"}},
            {"index":{"_index":"t","_id":"2","status":400,"error":{"type":"document_parsing_exception",
              "reason":"failed to parse field [n] of type [long]","caused_by":{"type":"illegal_argument_exception","reason":"For input string: \"x\""}}}},
            {"delete":{"_index":"t","_id":"3","status":404,"result":"not_found"}},
            {"index":{"_index":"t","_id":"4","status":409,"error":{"type":"version_conflict_engine_exception","reason":"[4]: version conflict"}}}
        ]}"#;
        let reply: BulkReply = serde_json::from_str(body).unwrap();
        assert!(reply.errors);
        let statuses: Vec<(bool, u16)> = reply
            .items
            .iter()
            .map(|i| match i {
                BulkItem::Delete(r) => (true, r.status),
                BulkItem::Index(r) | BulkItem::Create(r) | BulkItem::Update(r) => (false, r.status),
            })
            .collect();
        assert_eq!(
            statuses,
            [(false, 201), (false, 400), (true, 404), (false, 409)]
        );
        let BulkItem::Index(refused) = &reply.items[1] else {
            panic!("an index item")
        };
        assert_eq!(
            refused.error.as_ref().unwrap().to_string(),
            "document_parsing_exception: failed to parse field [n] of type [long] (caused by illegal_argument_exception: For input string: \"x\")"
        );
    }
}
