//! Reading the index back for `ripple verify`: documents by id as they are stored (verify decodes
//! them on its own), how many an index holds, and every id of an index (scrolled).

use crate::ElasticsearchSink;
use crate::encode::{doc_id, field_json};
use crate::errors::{status_and_json, status_error, transport_error};
use async_trait::async_trait;
use ripple_sink::ReadBack;
use ripple_sink::{
    ChangeEvent, SinkError, SortBy, SortKey, SortedPage, StoredRow, Target, Version,
};
use serde_json::json;

impl ElasticsearchSink {
    /// The external version each event's document holds, its tombstone's, or the index's last
    /// truncate's, whichever is newest. External versions are the change's log position alone
    /// (`external_version`), so that is the part of the version given back.
    pub(crate) async fn versions_of(
        &self,
        index: &str,
        events: &[ChangeEvent],
    ) -> Result<Vec<Option<Version>>, SinkError> {
        let ids: Vec<String> = events.iter().map(doc_id).collect();
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let (truncated, deleted) = self.stale_below(index, &id_refs).await?;
        let response = self
            .client
            .mget(elasticsearch::MgetParts::Index(index))
            .body(json!({ "ids": ids }))
            ._source(&["false"])
            .send()
            .await
            .map_err(|e| transport_error(e, "read document versions"))?;
        let (status, body) = status_and_json(response, "read document versions").await?;
        let mut versions: std::collections::HashMap<String, i64> = Default::default();
        if status == 404 {
            // No index yet: only tombstones and the truncate can hold a version.
        } else if status >= 300 {
            return Err(status_error(status, format!("mget {index}: {body}")));
        } else {
            for doc in body["docs"].as_array().into_iter().flatten() {
                if let (Some(id), Some(v)) = (doc["_id"].as_str(), doc["_version"].as_i64()) {
                    versions.insert(id.to_string(), v);
                }
            }
        }
        Ok(ids
            .iter()
            .map(|id| {
                let newest = [
                    versions.get(id).copied(),
                    deleted.get(id).copied(),
                    Some(truncated),
                ]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(0);
                (newest > 0).then_some(Version {
                    commit: 0,
                    change: newest as u64,
                })
            })
            .collect())
    }
}

/// Documents per page of a sorted read (within the index's result window).
const SORTED_PAGE: usize = 2000;

/// Where a sorted read goes on: the window of first-key values being read (from, width), the
/// sort values of the last document read in it, the largest first-key value, and whether only
/// documents without a key column are left.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Cursor {
    window: Option<(i64, i64)>,
    after: Option<serde_json::Value>,
    max: i64,
    done: bool,
}

impl ElasticsearchSink {
    /// Whether the index maps every key column so that it sorts as PostgreSQL orders it: an
    /// integer as an integer field, a uuid as a keyword.
    async fn sortable(&self, index: &str, key: &[SortKey]) -> Result<bool, SinkError> {
        let response = self
            .client
            .indices()
            .get_mapping(elasticsearch::indices::IndicesGetMappingParts::Index(&[
                index,
            ]))
            .send()
            .await
            .map_err(|e| transport_error(e, "read the mapping"))?;
        let (status, body) = status_and_json(response, "read the mapping").await?;
        if status >= 300 {
            return Ok(false);
        }
        // Keyed by the index's own name, which an alias hides.
        let Some(properties) = body
            .as_object()
            .and_then(|m| m.values().next())
            .map(|m| &m["mappings"]["properties"])
        else {
            return Ok(false);
        };
        Ok(key.iter().all(|k| {
            let ty = properties[&k.field]["type"].as_str().unwrap_or_default();
            match k.by {
                SortBy::Integer => matches!(ty, "long" | "integer" | "short" | "byte"),
                SortBy::Bytes => ty == "keyword",
            }
        }))
    }

    /// The first page's cursor: for an integer first key, a window from its smallest value.
    async fn first_cursor(&self, index: &str, key: &[SortKey]) -> Result<Cursor, SinkError> {
        let plain = Cursor {
            window: None,
            after: None,
            max: 0,
            done: false,
        };
        if key[0].by != SortBy::Integer {
            return Ok(plain);
        }
        let field = &key[0].field;
        let response = self
            .client
            .search(elasticsearch::SearchParts::Index(&[index]))
            .body(json!({
                "size": 0,
                "aggs": {"lo": {"min": {"field": field}}, "hi": {"max": {"field": field}}},
            }))
            .send()
            .await
            .map_err(|e| transport_error(e, "read the key range"))?;
        let (status, body) = status_and_json(response, "read the key range").await?;
        if status >= 300 {
            return Err(status_error(status, format!("read the key range: {body}")));
        }
        // The aggregations answer in doubles, exact only below 2^53: widened by more than the
        // rounding error beyond that, so no key falls outside.
        let bound = |name: &str| body["aggregations"][name]["value"].as_f64();
        Ok(match (bound("lo"), bound("hi")) {
            (Some(lo), Some(hi)) => Cursor {
                window: Some(((lo as i64).saturating_sub(2048), SORTED_PAGE as i64)),
                max: (hi as i64).saturating_add(2048),
                ..plain
            },
            // No document holds the key column: only those without it are left.
            _ => Cursor {
                done: true,
                ..plain
            },
        })
    }

    /// A repair's writes. A document the index holds nothing for (no document, no tombstone) may
    /// still have a version in the index's memory of deletes (`index.gc_deletes`), which no read
    /// shows: it is created only if absent, with the index's own versioning, which counts on from
    /// that remembered version. Every other write goes the usual way, at its external version.
    pub(crate) async fn write_repair(
        &self,
        target: Target<'_>,
        events: &[ChangeEvent],
        held: &[Option<Version>],
    ) -> Result<(), SinkError> {
        let index = &self.index_name(target);
        let (fresh, versioned): (Vec<_>, Vec<_>) = events
            .iter()
            .zip(held)
            .partition(|(e, held)| held.is_none() && e.op == ripple_sink::Op::Upsert);
        let versioned: Vec<ChangeEvent> = versioned.into_iter().map(|(e, _)| e.clone()).collect();
        if !versioned.is_empty() {
            self.write(target, &versioned).await?;
        }
        if fresh.is_empty() {
            return Ok(());
        }
        self.ensure_index(index, &[&fresh[0].0.schema]).await?;
        let mut operations = Vec::with_capacity(fresh.len());
        let mut owners = Vec::with_capacity(fresh.len());
        for (i, (e, _)) in fresh.iter().enumerate() {
            let doc: serde_json::Map<String, serde_json::Value> = e
                .schema
                .columns
                .iter()
                .zip(e.row.as_deref().unwrap_or_default())
                .map(|(c, v)| (c.name.clone(), field_json(v)))
                .collect();
            // A 409 (it exists after all, written meanwhile) is what `bulk` takes as newer.
            operations.push(
                elasticsearch::BulkOperation::create(serde_json::Value::Object(doc))
                    .id(doc_id(e))
                    .index(index)
                    .into(),
            );
            owners.push((i, *e));
        }
        let rejected = self.bulk(operations, owners).await?;
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(SinkError::rejected(rejected))
        }
    }
}

#[async_trait]
impl ReadBack for ElasticsearchSink {
    fn target_name(&self, target: Target<'_>) -> String {
        format!("index {}", self.index_name(target))
    }

    async fn has_table(&self, target: Target<'_>) -> Result<bool, SinkError> {
        let index = self.index_name(target);
        let response = self
            .client
            .indices()
            .exists(elasticsearch::indices::IndicesExistsParts::Index(&[&index]))
            .send()
            .await
            .map_err(|e| transport_error(e, "look up index"))?;
        Ok(response.status_code().is_success())
    }

    fn row_id(&self, _target: Target<'_>, event: &ChangeEvent) -> Result<String, SinkError> {
        Ok(doc_id(event))
    }

    async fn fetch(
        &self,
        target: Target<'_>,
        ids: &[String],
    ) -> Result<Vec<Option<StoredRow>>, SinkError> {
        let mut stored = self.stored(&self.index_name(target), ids).await?;
        Ok(ids
            .iter()
            .map(|id| stored.remove(id).map(StoredRow::Document))
            .collect())
    }

    async fn count(&self, target: Target<'_>) -> Result<Option<u64>, SinkError> {
        let index = self.index_name(target);
        // Counting sees only what a refresh has published.
        self.refresh(&index).await;
        let response = self
            .client
            .count(elasticsearch::CountParts::Index(&[&index]))
            .send()
            .await
            .map_err(|e| transport_error(e, "count documents"))?;
        let (status, body) = status_and_json(response, "count documents").await?;
        if status == 404 {
            return Ok(Some(0));
        }
        if status >= 300 {
            return Err(status_error(status, format!("count documents: {body}")));
        }
        Ok(body["count"].as_u64())
    }

    fn stores_non_finite_as_null(&self) -> bool {
        true
    }

    async fn sorted_rows(
        &self,
        target: Target<'_>,
        key: &[SortKey],
        after: Option<serde_json::Value>,
    ) -> Result<Option<SortedPage>, SinkError> {
        let index = self.index_name(target);
        let mut cursor = match after {
            Some(cursor) => serde_json::from_value::<Cursor>(cursor)
                .map_err(|e| SinkError::permanent(format!("a sorted read's cursor: {e}")))?,
            None => {
                if !self.sortable(&index, key).await? {
                    return Ok(None);
                }
                // Search sees only what a refresh has published.
                self.refresh(&index).await;
                self.first_cursor(&index, key).await?
            }
        };
        let sort: Vec<serde_json::Value> = key
            .iter()
            .map(|k| json!({ &k.field: {"order": "asc", "missing": "_last"} }))
            .collect();
        let mut body = json!({"size": SORTED_PAGE, "sort": sort, "track_total_hits": false});
        // A search sorted by key alone costs the whole index per page: pages are taken from a
        // window of the first key column's values instead, so each costs what it holds.
        let field = &key[0].field;
        body["query"] = match (&cursor.window, key[0].by) {
            (Some((lo, width)), SortBy::Integer) => {
                json!({"range": {field: {"gte": lo, "lt": lo.saturating_add(*width)}}})
            }
            // Last, what lacks the key column (none but rows written by hand).
            _ if cursor.done => json!({"bool": {"must_not": {"exists": {"field": field}}}}),
            _ => json!({"match_all": {}}),
        };
        if let Some(after) = &cursor.after {
            body["search_after"] = after.clone();
        }
        let response = self
            .client
            .search(elasticsearch::SearchParts::Index(&[&index]))
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(e, "read documents in key order"))?;
        let (status, body) = status_and_json(response, "read documents in key order").await?;
        if status >= 300 {
            return Err(status_error(
                status,
                format!("read documents in key order: {body}"),
            ));
        }
        let mut page = SortedPage::default();
        for hit in body["hits"]["hits"].as_array().into_iter().flatten() {
            let (Some(id), Some(source)) = (hit["_id"].as_str(), hit.get("_source")) else {
                continue;
            };
            let sorted = hit["sort"].as_array().cloned().unwrap_or_default();
            page.rows
                .push((id.to_string(), StoredRow::Document(source.clone()), sorted));
        }
        let full = page.rows.len() >= SORTED_PAGE;
        cursor.after = if full {
            body["hits"]["hits"]
                .as_array()
                .and_then(|h| h.last())
                .map(|h| h["sort"].clone())
        } else {
            None
        };
        page.next = match (&mut cursor.window, full) {
            (_, true) => Some(cursor),
            (Some((lo, width)), false) => {
                *lo = lo.saturating_add(*width);
                if page.rows.len() < SORTED_PAGE / 4 {
                    *width = width.saturating_mul(2);
                }
                if *lo > cursor.max {
                    cursor.window = None;
                    cursor.done = true;
                }
                Some(cursor)
            }
            (None, false) if !cursor.done && key[0].by == SortBy::Integer => {
                cursor.done = true;
                Some(cursor)
            }
            (None, false) => None,
        }
        .map(|c| serde_json::to_value(c).expect("a cursor is JSON"));
        Ok(Some(page))
    }

    async fn stored_ids(
        &self,
        target: Target<'_>,
        cursor: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), SinkError> {
        let response = match &cursor {
            None => {
                let index = self.index_name(target);
                // Search sees only what a refresh has published.
                self.refresh(&index).await;
                self.client
                    .search(elasticsearch::SearchParts::Index(&[&index]))
                    .scroll("2m")
                    .body(json!({"size": 1000, "_source": false, "sort": ["_doc"]}))
                    .send()
                    .await
            }
            Some(id) => {
                self.client
                    .scroll(elasticsearch::ScrollParts::None)
                    .body(json!({"scroll": "2m", "scroll_id": id}))
                    .send()
                    .await
            }
        }
        .map_err(|e| transport_error(e, "list documents"))?;
        let (status, body) = status_and_json(response, "list documents").await?;
        if status == 404 && cursor.is_none() {
            return Ok((Vec::new(), None));
        }
        if status >= 300 {
            return Err(status_error(status, format!("list documents: {body}")));
        }
        let ids: Vec<String> = body["hits"]["hits"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["_id"].as_str().map(str::to_string))
            .collect();
        let scroll_id = body["_scroll_id"].as_str().map(str::to_string);
        if ids.is_empty() {
            if let Some(id) = scroll_id {
                let _ = self
                    .client
                    .clear_scroll(elasticsearch::ClearScrollParts::None)
                    .body(json!({"scroll_id": [id]}))
                    .send()
                    .await;
            }
            return Ok((ids, None));
        }
        Ok((ids, scroll_id))
    }
}
