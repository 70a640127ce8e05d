//! The write path: truncates (delete-by-query plus a watermark), writes older than a row's
//! tombstone or the index's last truncate dropped before they are sent, unavailable values merged
//! from the stored document, and each segment sent as `_bulk` requests sized by count and bytes.

use crate::ElasticsearchSink;
use crate::encode::{doc_id, external_version, field_json, json_len, tombstone_id, truncated_id};
use crate::errors::{status_and_json, status_error, transport_error};
use crate::request::{MAX_RESULT_WINDOW, Tombstones};
use elasticsearch::indices::IndicesRefreshParts;
use elasticsearch::params::VersionType;
use elasticsearch::{BulkOperation, DeleteByQueryParts, IndexParts, MgetParts, SearchParts};
use ripple_sink::in_flight::InFlight;
use ripple_sink::segment::{self, Step};
use ripple_sink::{ChangeEvent, Op, Rejection, SinkError, TableSchema, Target, Value};
use serde_json::{Map, Value as Json, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

/// Most tombstones held in memory until a refresh makes them searchable.
const UNSEARCHABLE_MAX: usize = 50_000;

/// Records `version` for `id` unless a newer one is recorded already.
fn keep_newest(versions: &mut HashMap<String, i64>, id: String, version: i64) {
    let v = versions.entry(id).or_insert(version);
    *v = (*v).max(version);
}

impl ElasticsearchSink {
    /// `Sink::apply`: the index made ready for the call's schemas, then each segment between
    /// truncates.
    pub(crate) async fn write(
        &self,
        target: Target<'_>,
        events: &[ChangeEvent],
    ) -> Result<(), SinkError> {
        let index = self.index_name(target);
        self.ensure_index(&self.config.meta_index, &[]).await?;
        let mut schemas: Vec<&TableSchema> = Vec::new();
        for e in events {
            if !schemas
                .iter()
                .any(|s| std::ptr::eq(*s, &*e.schema) || **s == *e.schema)
            {
                schemas.push(&e.schema);
            }
        }
        self.ensure_index(&index, &schemas).await?;
        // Documents the index refuses are collected over the whole call, and the call goes on:
        // every other event is applied and the refused ones are reported together.
        let mut rejected = Vec::new();
        for step in segment::split_at_truncates(events) {
            match step {
                Step::Run { events, offset } => {
                    self.apply_segment(&index, events, offset, &mut rejected)
                        .await?;
                }
                Step::Split { event, .. } => {
                    // Writes before the truncate must be searchable for delete-by-query to see them.
                    self.refresh(&index).await;
                    self.truncate(&index, event).await?;
                }
            }
        }
        if rejected.is_empty() {
            Ok(())
        } else {
            rejected.sort_by_key(|r| r.index);
            Err(SinkError::rejected(rejected))
        }
    }

    /// Empties the index, unless a truncate at least as new was already applied: each truncate
    /// first records its version on a document of `meta_index` (external versioning again), so a
    /// truncate delivered twice cannot delete documents written after it.
    pub(crate) async fn truncate(&self, index: &str, event: &ChangeEvent) -> Result<(), SinkError> {
        // Read back by the search for tombstones, which must refresh to see it.
        self.truncates_written.fetch_add(1, Ordering::AcqRel);
        let response = self
            .client
            .index(IndexParts::IndexId(&self.config.meta_index, &truncated_id(index)))
            .version(external_version(event))
            .version_type(VersionType::External)
            .body(json!({"index": index, "commit": event.version.commit, "change": event.version.change}))
            .send()
            .await
            .map_err(|e| transport_error(e, "record truncate"))?;
        match response.status_code().as_u16() {
            409 => return Ok(()),
            s if s >= 300 => {
                let body = response.text().await.unwrap_or_default();
                return Err(status_error(
                    s,
                    format!("record truncate of {index}: {body}"),
                ));
            }
            _ => {}
        }
        let response = self
            .client
            .delete_by_query(DeleteByQueryParts::Index(&[index]))
            .body(json!({"query": {"match_all": {}}}))
            .refresh(true)
            .conflicts(elasticsearch::params::Conflicts::Proceed)
            .send()
            .await
            .map_err(|e| transport_error(e, "truncate"))?;
        let status = response.status_code().as_u16();
        if status >= 300 && status != 404 {
            let body = response.text().await.unwrap_or_default();
            return Err(status_error(status, format!("truncate {index}: {body}")));
        }
        Ok(())
    }

    /// The versions below which writes to `ids` are stale: the newest of the index's last truncate
    /// and each row's tombstone. A tombstone that cannot be read (shards still recovering) is a
    /// retriable error, never "no tombstone".
    ///
    /// Read by an `ids` search, not an `_mget`: most rows have no tombstone, and a search looks the
    /// ids up in the terms dictionary at once where a get reads each one alone (the `_mget` was a
    /// fifth of the index's CPU). A search sees only what a refresh made visible: the tombstones
    /// this sink wrote since its last refresh are taken from memory (refreshed once more than
    /// `UNSEARCHABLE_MAX` are held), and `meta_index` is refreshed first after a truncate record
    /// and on first use. Tombstones another Ripple wrote less than a refresh interval ago (a
    /// rebalance) are left to the index's own memory of the delete (`gc_deletes`, days by
    /// default).
    pub(crate) async fn stale_below(
        &self,
        index: &str,
        ids: &[&str],
    ) -> Result<(i64, HashMap<String, i64>), SinkError> {
        let written = self.truncates_written.load(Ordering::Acquire);
        let held = self.unsearchable().len();
        if self.truncates_searchable.load(Ordering::Acquire) < written || held > UNSEARCHABLE_MAX {
            // Taken before the refresh: tombstones written meanwhile wait for the next one.
            let taken = std::mem::take(&mut *self.unsearchable());
            if let Err(e) = self.refresh_tombstones().await {
                let mut held = self.unsearchable();
                for (id, version) in taken {
                    keep_newest(&mut held, id, version);
                }
                return Err(e);
            }
            self.truncates_searchable
                .fetch_max(written, Ordering::AcqRel);
        }
        let truncated_id = truncated_id(index);
        let row_prefix = tombstone_id(index, "");
        let mut truncated = 0;
        let mut deleted = HashMap::new();
        // A few requests of up to a bulk's size rather than one for the whole batch (an answer is
        // held whole while it is read), each within the index's result window.
        let size = self.config.bulk_max_docs.clamp(1, MAX_RESULT_WINDOW - 1);
        let mut start = 0;
        loop {
            let chunk = &ids[start..(start + size).min(ids.len())];
            let mut wanted: Vec<String> = Vec::with_capacity(chunk.len() + 1);
            if start == 0 {
                wanted.push(truncated_id.clone());
            }
            wanted.extend(chunk.iter().map(|id| tombstone_id(index, id)));
            let response = self
                .client
                .search(SearchParts::Index(&[&self.config.meta_index]))
                .body(json!({
                    "query": {"ids": {"values": wanted}},
                    "_source": false,
                    "version": true,
                    "size": wanted.len(),
                }))
                .send()
                .await
                .map_err(|e| transport_error(e, "read tombstones"))?;
            let status = response.status_code().as_u16();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| transport_error(e, "read tombstones"))?;
            let found: Option<Tombstones> = serde_json::from_slice(&bytes).ok();
            let found = match found {
                Some(found) if status < 300 && found.complete() => found,
                // An answer that is not a whole search one counts as a server error: retried.
                _ => {
                    return Err(status_error(
                        if status >= 300 { status } else { 503 },
                        format!(
                            "read tombstones of {index}: {}",
                            String::from_utf8_lossy(&bytes)
                        ),
                    ));
                }
            };
            for hit in found.hits.hits {
                if hit.id == truncated_id {
                    truncated = hit.version;
                } else if let Some(row) = hit.id.strip_prefix(&row_prefix) {
                    // An `ids` query answers only the ids it was asked for.
                    deleted.insert(row.to_string(), hit.version);
                }
            }
            start += chunk.len();
            if start >= ids.len() {
                break;
            }
        }
        let held = self.unsearchable();
        for id in ids.iter().filter(|_| !held.is_empty()) {
            if let Some(&version) = held.get(&tombstone_id(index, id)) {
                keep_newest(&mut deleted, id.to_string(), version);
            }
        }
        Ok((truncated, deleted))
    }

    /// Makes every tombstone and truncate record written so far searchable.
    async fn refresh_tombstones(&self) -> Result<(), SinkError> {
        let response = self
            .client
            .indices()
            .refresh(IndicesRefreshParts::Index(&[&self.config.meta_index]))
            .send()
            .await
            .map_err(|e| transport_error(e, "refresh tombstones"))?;
        let status = response.status_code().as_u16();
        // A meta index not created yet holds no tombstone.
        if status >= 300 && status != 404 {
            let body = response.text().await.unwrap_or_default();
            return Err(status_error(status, format!("refresh tombstones: {body}")));
        }
        Ok(())
    }

    fn unsearchable(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        // A panic elsewhere while holding it leaves a map that is still whole.
        self.unsearchable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stored documents for the ids whose changes lack some values (unchanged TOAST columns).
    pub(crate) async fn stored(
        &self,
        index: &str,
        ids: &[String],
    ) -> Result<Map<String, Json>, SinkError> {
        if ids.is_empty() {
            return Ok(Map::new());
        }
        let response = self
            .client
            .mget(MgetParts::Index(index))
            .body(json!({ "ids": ids }))
            .send()
            .await
            .map_err(|e| transport_error(e, "read documents"))?;
        let (status, body) = status_and_json(response, "read documents").await?;
        if status >= 300 {
            return Err(status_error(status, format!("mget {index}: {body}")));
        }
        let mut out = Map::new();
        for doc in body["docs"].as_array().into_iter().flatten() {
            if let (Some(id), Some(source)) = (doc["_id"].as_str(), doc.get("_source")) {
                out.insert(id.to_string(), source.clone());
            }
        }
        Ok(out)
    }

    pub(crate) async fn apply_segment(
        &self,
        index: &str,
        events: &[ChangeEvent],
        offset: usize,
        rejected: &mut Vec<Rejection>,
    ) -> Result<(), SinkError> {
        // Unchanged values are taken from the newest earlier change to the same document in this
        // segment, or, when there is none, from the document the index holds.
        let mut seen = HashSet::new();
        let mut to_read = Vec::new();
        let mut any_lacks_values = false;
        for e in events
            .iter()
            .filter(|e| e.op == Op::Upsert && e.before.is_none())
        {
            let id = doc_id(e);
            let lacks_values = e
                .row
                .as_deref()
                .is_some_and(|r| r.contains(&Value::Unavailable));
            any_lacks_values |= lacks_values;
            if lacks_values && !seen.contains(&id) {
                to_read.push(id.clone());
            }
            seen.insert(id);
        }
        let stored = self.stored(index, &to_read).await?;
        let upserted: Vec<&str> = seen.iter().map(String::as_str).collect();
        let (truncated, deleted) = self.stale_below(index, &upserted).await?;

        let mut latest: HashMap<String, Option<Map<String, Json>>> = HashMap::new();
        let mut operations = Vec::new();
        let mut owners: Vec<(usize, &ChangeEvent)> = Vec::new();
        let mut bytes = 0usize;
        let mut in_flight = InFlight::new(self.config.bulk_concurrency);
        for (i, e) in events.iter().enumerate() {
            if e.before.is_some() {
                rejected.push(Rejection::new(
                    offset + i,
                    ripple_sink::keyless_refused("the search index"),
                ));
                continue;
            }
            let id = doc_id(e);
            let version = external_version(e);
            let operation: BulkOperation<Json> = match e.op {
                Op::Delete => {
                    // Held before it is sent, until a refresh makes it searchable.
                    keep_newest(&mut self.unsearchable(), tombstone_id(index, &id), version);
                    if any_lacks_values {
                        latest.insert(id.clone(), None);
                    }
                    bytes += 200 + 2 * id.len();
                    // The tombstone first: should the delete then fail, the row is still refused
                    // to older writes, and the retry sends both again.
                    let tombstone = BulkOperation::index(json!({}))
                        .id(tombstone_id(index, &id))
                        .index(&self.config.meta_index)
                        .version(version)
                        .version_type(VersionType::External);
                    operations.push(tombstone.into());
                    owners.push((offset + i, e));
                    BulkOperation::delete(&id)
                        .index(index)
                        .version(version)
                        .version_type(VersionType::External)
                        .into()
                }
                Op::Upsert => {
                    let stale_below = deleted.get(&id).copied().unwrap_or(0).max(truncated);
                    if version <= stale_below {
                        continue;
                    }
                    let previous = match latest.get(&id) {
                        Some(doc) => doc.as_ref(),
                        None => stored.get(&id).and_then(Json::as_object),
                    };
                    let mut doc = Map::new();
                    for (c, v) in e
                        .schema
                        .columns
                        .iter()
                        .zip(e.row.as_deref().unwrap_or_default())
                    {
                        let value = match v {
                            Value::Unavailable => previous
                                .and_then(|p| p.get(&c.name))
                                .cloned()
                                .unwrap_or(Json::Null),
                            v => field_json(v),
                        };
                        doc.insert(c.name.clone(), value);
                    }
                    // Documents are kept for later changes of the segment only when one of them
                    // needs an earlier value: copying every document would double the memory.
                    if any_lacks_values {
                        latest.insert(id.clone(), Some(doc.clone()));
                    }
                    let doc = Json::Object(doc);
                    bytes += 100 + id.len() + json_len(&doc);
                    BulkOperation::index(doc)
                        .id(&id)
                        .index(index)
                        .version(version)
                        .version_type(VersionType::External)
                        .into()
                }
                Op::Truncate => unreachable!("truncates split the batch: {}", offset + i),
            };
            operations.push(operation);
            owners.push((offset + i, e));
            if operations.len() >= self.config.bulk_max_docs || bytes >= self.config.bulk_max_bytes
            {
                // Up to `bulk_concurrency` requests in flight: external versions settle each
                // document whichever lands first.
                in_flight
                    .send(self.bulk(std::mem::take(&mut operations), std::mem::take(&mut owners)))
                    .await?;
                bytes = 0;
            }
        }
        if !operations.is_empty() {
            in_flight.send(self.bulk(operations, owners)).await?;
        }
        rejected.extend(in_flight.finish().await?);
        Ok(())
    }
}
