//! The Elasticsearch sink (tested against OpenSearch): one document per source row, id from the
//! primary key, written with `_bulk` requests sized by count and bytes. Documents carry external
//! versions, so the index itself refuses anything not newer than what it holds; a 409 "version
//! conflict" therefore means "already newer" and counts as applied.
//!
//! The index remembers a deleted document's version only in memory (and for `gc_deletes`): after a
//! node restart a stale insert of a deleted row would be `created` again. So each delete also leaves
//! a tombstone document in `meta_index` (`deleted:<index>:<id>`, versioned like the row), and writes
//! older than a row's tombstone or than the index's last truncate are dropped before they are sent.

mod config;
mod mapping;

pub use config::{ElasticsearchSinkConfig, JsonFields};

use async_trait::async_trait;
use elasticsearch::http::Url;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::{
    IndicesCreateParts, IndicesGetMappingParts, IndicesPutMappingParts, IndicesRefreshParts,
};
use elasticsearch::params::VersionType;
use elasticsearch::{
    BulkOperation, BulkParts, DeleteByQueryParts, Elasticsearch, IndexParts, MgetParts,
};
use ripple_sink::segment::{self, Step};
use ripple_sink::{
    ChangeEvent, Column, ConfigError, Op, ReadBack, Rejection, RowState, Sink, SinkError,
    SinkFactory, TableSchema, Target, Template, TemplateError, Value,
};
use serde_json::{Map, Value as Json, json};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Registers `type = "elasticsearch"`.
pub struct ElasticsearchFactory;

#[async_trait]
impl SinkFactory for ElasticsearchFactory {
    fn kind(&self) -> &'static str {
        "elasticsearch"
    }

    async fn build(
        &self,
        name: &str,
        key_prefix: &str,
        section: toml::Table,
    ) -> Result<Arc<dyn Sink>, ConfigError> {
        let config: ElasticsearchSinkConfig = ripple_sink::parse_section(key_prefix, section)?;
        Ok(Arc::new(ElasticsearchSink::new(name, key_prefix, config)?))
    }
}

pub struct ElasticsearchSink {
    name: String,
    client: Elasticsearch,
    config: ElasticsearchSinkConfig,
    /// `index`, parsed.
    index: Template,
    /// Indices known to exist, with the fields their mappings are known to have.
    mapped: Mutex<HashMap<String, HashSet<String>>>,
    /// Elasticsearch or OpenSearch, read from the cluster when a mapping first needs it.
    flavour: tokio::sync::OnceCell<mapping::Flavour>,
}

impl ElasticsearchSink {
    pub fn new(
        name: &str,
        key_prefix: &str,
        config: ElasticsearchSinkConfig,
    ) -> Result<Self, ConfigError> {
        config.check(key_prefix)?;
        let index = Template::parse_table_level(&config.index)
            .map_err(|e| ConfigError::new(format!("{key_prefix}.index"), e.to_string()))?;
        let url = Url::parse(&config.url).map_err(|e| {
            ConfigError::new(
                format!("{key_prefix}.url"),
                format!("is not an http(s) URL: {e}"),
            )
        })?;
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(std::time::Duration::from_secs(60))
            .cert_validation(config.cert_validation(key_prefix)?);
        if let Some(credentials) = config.credentials(key_prefix)? {
            builder = builder.auth(credentials);
        }
        let transport = builder.build().map_err(|e| {
            ConfigError::new(
                format!("{key_prefix}.url"),
                format!("cannot build a client: {e}"),
            )
        })?;
        Ok(Self {
            name: name.to_string(),
            client: Elasticsearch::new(transport),
            config,
            index,
            mapped: Mutex::default(),
            flavour: tokio::sync::OnceCell::new(),
        })
    }

    /// The cluster's URL without any user or password, for errors.
    fn address(&self) -> String {
        match Url::parse(&self.config.url) {
            Ok(mut url) => {
                let _ = url.set_password(None);
                let _ = url.set_username("");
                url.to_string()
            }
            Err(_) => "(the configured url)".into(),
        }
    }

    pub fn client(&self) -> &Elasticsearch {
        &self.client
    }

    /// The index of `target`: the route's template, or the sink's `index`. Index names must be
    /// lowercase and cannot hold spaces, quotes and a few other characters that table names can:
    /// those become `_` (a table `Order Items` lands in `order_items`).
    pub fn index_name(&self, target: Target<'_>) -> String {
        let name = match target.template {
            Some(t) => Template::parse(t).map(|t| t.render_table(target.table)),
            None => Ok(self.index.render_table(target.table)),
        };
        // A route's template was checked at start-up (`check_target`); one that still does not
        // parse names the index literally.
        let name = name
            .unwrap_or_else(|_| target.template.unwrap_or_default().to_string())
            .to_lowercase();
        let name: String = name
            .chars()
            .map(|c| match c {
                ' ' | ',' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | '\\' | '#' | ':' => '_',
                c => c,
            })
            .collect();
        // Nor start with `_`, `-` or `+` (a table `_tmp` lands in `t_tmp`).
        if name.starts_with(['_', '-', '+']) {
            format!("t{name}")
        } else {
            name
        }
    }

    /// Creates the index with `gc_deletes` long enough for delete versions to outlive late,
    /// stale inserts, and its fields mapped from `schemas`. An index that already exists keeps its
    /// settings and the fields it has; columns it lacks are added to its mapping (a column added
    /// to the source extends the mapping before the first document that holds it).
    async fn ensure_index(&self, index: &str, schemas: &[&TableSchema]) -> Result<(), SinkError> {
        let columns = |known: Option<&HashSet<String>>| -> Vec<&Column> {
            let mut seen = HashSet::new();
            schemas
                .iter()
                .flat_map(|s| &s.columns)
                .filter(|c| known.is_none_or(|k| !k.contains(&c.name)) && seen.insert(&c.name))
                .collect()
        };
        let missing = {
            let mapped = self.mapped.lock().expect("index map");
            mapped.get(index).map(|known| columns(Some(known)))
        };
        let missing = match missing {
            Some(missing) => missing,
            None => {
                let known = self.create_index(index, &columns(None)).await?;
                let missing = columns(Some(&known));
                self.mapped
                    .lock()
                    .expect("index map")
                    .insert(index.to_string(), known);
                missing
            }
        };
        if missing.is_empty() {
            return Ok(());
        }
        let properties = mapping::properties(
            missing.iter().copied(),
            self.config.json_fields,
            self.flavour_for_json().await?,
        );
        if !properties.is_empty() {
            let response = self
                .client
                .indices()
                .put_mapping(IndicesPutMappingParts::Index(&[index]))
                .body(json!({ "properties": properties }))
                .send()
                .await
                .map_err(|e| transport_error(e, "extend a mapping"))?;
            let status = response.status_code().as_u16();
            if status >= 300 {
                let body: Json = response.json().await.unwrap_or(Json::Null);
                let err = status_error(status, format!("extend the mapping of {index}: {body}"));
                if err.is_retriable() {
                    return Err(err);
                }
                // A field the index will not take this way (a name it reserves, say) is left to
                // dynamic mapping: each document is then accepted or refused on its own.
                tracing::warn!(index, error = %err, "columns left to dynamic mapping");
            }
        }
        self.mapped
            .lock()
            .expect("index map")
            .entry(index.to_string())
            .or_default()
            .extend(missing.iter().map(|c| c.name.clone()));
        Ok(())
    }

    /// Creates `index` with `columns` mapped; returns the fields its mapping has (those of an
    /// index that was already there, read back).
    async fn create_index(
        &self,
        index: &str,
        columns: &[&Column],
    ) -> Result<HashSet<String>, SinkError> {
        let properties = mapping::properties(
            columns.iter().copied(),
            self.config.json_fields,
            self.flavour_for_json().await?,
        );
        let response = self
            .client
            .indices()
            .create(IndicesCreateParts::Index(index))
            .body(json!({
                "settings": {"index": {"gc_deletes": self.config.gc_deletes}},
                "mappings": {
                    "properties": properties,
                    // Dynamic mapping would make every fractional number a 32-bit float, which
                    // turns a double such as 1e308 into Infinity and rejects the document.
                    "dynamic_templates": [
                        {"fractions_as_double": {"match_mapping_type": "double", "mapping": {"type": "double"}}}
                    ]
                }
            }))
            .send()
            .await
            .map_err(|e| transport_error(e, "create index"))?;
        let status = response.status_code().as_u16();
        if status < 300 {
            return Ok(columns.iter().map(|c| c.name.clone()).collect());
        }
        let body: Json = response.json().await.unwrap_or(Json::Null);
        if body["error"]["type"].as_str() != Some("resource_already_exists_exception") {
            return Err(status_error(
                status,
                format!("create index {index}: {body}"),
            ));
        }
        let response = self
            .client
            .indices()
            .get_mapping(IndicesGetMappingParts::Index(&[index]))
            .send()
            .await
            .map_err(|e| transport_error(e, "read a mapping"))?;
        let (status, body) = status_and_json(response, "read a mapping").await?;
        if status >= 300 {
            return Err(status_error(
                status,
                format!("read the mapping of {index}: {body}"),
            ));
        }
        // Keyed by the index's real name, which differs from `index` when that is an alias.
        Ok(body
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|m| m["mappings"]["properties"].as_object())
            .flat_map(|p| p.keys().cloned())
            .collect())
    }

    /// The product, asked only when JSON columns are mapped `flat` (the types differ): `GET /`
    /// needs a privilege a writer may lack.
    async fn flavour_for_json(&self) -> Result<mapping::Flavour, SinkError> {
        if self.config.json_fields != JsonFields::Flat {
            return Ok(mapping::Flavour::Elasticsearch);
        }
        self.flavour().await
    }

    async fn flavour(&self) -> Result<mapping::Flavour, SinkError> {
        self.flavour
            .get_or_try_init(|| async {
                let response = self
                    .client
                    .info()
                    .send()
                    .await
                    .map_err(|e| transport_error(e, "read the cluster's version"))?;
                let (status, body) =
                    status_and_json(response, "read the cluster's version").await?;
                if status >= 300 {
                    return Err(status_error(
                        status,
                        format!("read the cluster's version: {body}"),
                    ));
                }
                Ok(mapping::Flavour::of(&body))
            })
            .await
            .copied()
    }

    /// Empties the index, unless a truncate at least as new was already applied: each truncate
    /// first records its version on a document of `meta_index` (external versioning again), so a
    /// truncate delivered twice cannot delete documents written after it.
    async fn truncate(&self, index: &str, event: &ChangeEvent) -> Result<(), SinkError> {
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
    async fn stale_below(
        &self,
        index: &str,
        ids: &[&str],
    ) -> Result<(i64, HashMap<String, i64>), SinkError> {
        let mut truncated = 0;
        let mut deleted = HashMap::new();
        // A few requests of up to a bulk's size rather than one for the whole batch: a response is
        // held whole while it is read, and one for a batch's ids was the sink's largest allocation.
        let size = self.config.bulk_max_docs.max(1);
        let mut start = 0;
        loop {
            let chunk = &ids[start..(start + size).min(ids.len())];
            let with_truncate = start == 0;
            let mut docs = Vec::with_capacity(chunk.len() + 1);
            if with_truncate {
                docs.push(json!({"_id": truncated_id(index), "_source": false}));
            }
            docs.extend(
                chunk
                    .iter()
                    .map(|id| json!({"_id": tombstone_id(index, id), "_source": false})),
            );
            let response = self
                .client
                .mget(MgetParts::Index(&self.config.meta_index))
                .body(json!({ "docs": docs }))
                .send()
                .await
                .map_err(|e| transport_error(e, "read tombstones"))?;
            let status = response.status_code().as_u16();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| transport_error(e, "read tombstones"))?;
            let found: Option<Found> = serde_json::from_slice(&bytes).ok();
            let found = match found {
                Some(found) if status < 300 => found,
                // An answer that is not an `_mget` one counts as a server error: retried.
                _ => {
                    return Err(status_error(
                        if status >= 300 { status } else { 500 },
                        format!("read tombstones: {}", String::from_utf8_lossy(&bytes)),
                    ));
                }
            };
            for (i, doc) in found.docs.into_iter().enumerate() {
                if let Some(error) = doc.error {
                    return Err(status_error(
                        503,
                        format!("read tombstones of {index}: {error}"),
                    ));
                }
                let Some(version) = doc.version.filter(|_| doc.found) else {
                    continue;
                };
                match (with_truncate, i) {
                    (true, 0) => truncated = version,
                    (true, i) => {
                        deleted.insert(chunk[i - 1].to_string(), version);
                    }
                    (false, i) => {
                        deleted.insert(chunk[i].to_string(), version);
                    }
                }
            }
            start += chunk.len();
            if start >= ids.len() {
                break;
            }
        }
        Ok((truncated, deleted))
    }

    /// The stored documents for the ids whose changes lack some values (unchanged TOAST columns).
    async fn stored(&self, index: &str, ids: &[String]) -> Result<Map<String, Json>, SinkError> {
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

    /// Sends one `_bulk` request; `events[i]` produced `operations[i]`. Adds the documents the
    /// index refused for their own data to `rejected`; fails when any item failed for a reason
    /// that is the cluster's (then the whole request goes again).
    async fn bulk(
        &self,
        operations: Vec<BulkOperation<Json>>,
        events: &[(usize, &ChangeEvent)],
        rejected: &mut Vec<Rejection>,
    ) -> Result<(), SinkError> {
        let response = self
            .client
            .bulk(BulkParts::None)
            .body(operations)
            .send()
            .await
            .map_err(|e| transport_error(e, "bulk"))?;
        let (status, body) = status_and_json(response, "bulk response").await?;
        if status >= 300 {
            return Err(status_error(status, format!("bulk: {body}")));
        }
        if body["errors"].as_bool() != Some(true) {
            return Ok(());
        }
        // Item by item: a version conflict means the index already holds something newer.
        let mut retriable: Option<SinkError> = None;
        for (i, item) in body["items"].as_array().into_iter().flatten().enumerate() {
            let result = item
                .as_object()
                .and_then(|o| o.values().next())
                .cloned()
                .unwrap_or(Json::Null);
            let status = result["status"].as_u64().unwrap_or(0) as u16;
            // A delete of a missing document answers 404 with `result: not_found` and no error:
            // done. A 404 with an error (an index not recovered yet after a restart) is not.
            let missing_doc =
                status == 404 && item.get("delete").is_some() && result.get("error").is_none();
            if status < 300 || status == 409 || missing_doc {
                continue;
            }
            if status == 404 {
                let error = status_error(
                    503,
                    format!(
                        "delete in {} not applied, the index is not available yet: {}",
                        event_table(events, i),
                        result["error"]
                    ),
                );
                retriable.get_or_insert(error);
                continue;
            }
            let (index, event) = events.get(i).copied().unwrap_or((0, events[0].1));
            let message = format!(
                "document for {} rejected ({status}): {}",
                event.table(),
                result["error"]
            );
            let kind = result["error"]["type"].as_str().unwrap_or_default();
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
        retriable.map_or(Ok(()), Err)
    }

    async fn apply_segment(
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
                self.bulk(
                    std::mem::take(&mut operations),
                    &std::mem::take(&mut owners),
                    rejected,
                )
                .await?;
                bytes = 0;
            }
        }
        if !operations.is_empty() {
            self.bulk(operations, &owners, rejected).await?;
        }
        Ok(())
    }
}

/// The length of `doc` as JSON, counted without building the text.
fn json_len(doc: &Json) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, doc);
    count.0
}

/// The document id: the primary key's values, `:`-joined.
pub fn doc_id(event: &ChangeEvent) -> String {
    event
        .key
        .iter()
        .map(|v| ripple_sink::to_text(v).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(":")
}

/// The `meta_index` document recording a row's delete.
fn tombstone_id(index: &str, id: &str) -> String {
    format!("deleted:{index}:{id}")
}

/// The `meta_index` document recording an index's last truncate.
fn truncated_id(index: &str) -> String {
    format!("truncated:{index}")
}

/// External versions are one `long`. Changes to one row are serialised by the source's row locks,
/// so per document the change's log position alone grows with commit order; the commit part of
/// the version, needed to order different rows, does not fit beside it.
pub fn external_version(event: &ChangeEvent) -> i64 {
    event.version.change as i64
}

#[async_trait]
impl Sink for ElasticsearchSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn ready(&self) -> Result<(), SinkError> {
        let response = self
            .client
            .ping()
            .send()
            .await
            .map_err(|e| transport_error(e, &format!("connect to {}", self.address())))?;
        let status = response.status_code().as_u16();
        if status >= 300 {
            let why = match status {
                401 => ": the credentials were refused (username/password or api key)",
                403 => ": the user may not read the cluster",
                _ => "",
            };
            return Err(status_error(
                status,
                format!("{} answered {status} to a ping{why}", self.address()),
            ));
        }
        Ok(())
    }

    fn check_target(&self, template: &str) -> Result<(), TemplateError> {
        let parsed = Template::parse_table_level(template)?;
        if template.starts_with(['_', '-', '+'])
            || template.contains([' ', ',', '/', '*', '?', '"', '<', '>', '|', '\\', '#'])
        {
            return Err(parsed.refused(
                "cannot name an index (no leading _ - +, no spaces or , / * ? \" < > | \\ #)",
            ));
        }
        Ok(())
    }

    fn read_back(&self) -> Option<&dyn ReadBack> {
        Some(self)
    }

    async fn apply(&self, target: Target<'_>, events: &[ChangeEvent]) -> Result<(), SinkError> {
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
                    let _ = self
                        .client
                        .indices()
                        .refresh(IndicesRefreshParts::Index(&[&index]))
                        .send()
                        .await;
                    self.truncate(&index, event).await?;
                }
            }
        }
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(SinkError::rejected(rejected))
        }
    }
}

/// A value as a document field. NaN and ±Infinity have no JSON number and no date either, and the
/// index's numeric and date fields refuse them as strings: they are stored as null.
fn field_json(v: &Value) -> Json {
    match v {
        Value::Float(f) if !f.is_finite() => Json::Null,
        Value::Timestamp(t) | Value::TimestampTz(t) if *t == i64::MAX || *t == i64::MIN => {
            Json::Null
        }
        Value::Array(items) => Json::Array(items.iter().map(field_json).collect()),
        v => ripple_sink::to_json(v),
    }
}

/// The document an upsert of `event` leaves (when nothing was unavailable).
fn document(event: &ChangeEvent) -> Json {
    Json::Object(
        event
            .schema
            .columns
            .iter()
            .zip(event.row.as_deref().unwrap_or_default())
            .map(|(c, v)| (c.name.clone(), field_json(v)))
            .collect(),
    )
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

    async fn compare(
        &self,
        target: Target<'_>,
        rows: &[ChangeEvent],
    ) -> Result<Vec<RowState>, SinkError> {
        let index = self.index_name(target);
        let ids: Vec<String> = rows.iter().map(doc_id).collect();
        let stored = self.stored(&index, &ids).await?;
        Ok(rows
            .iter()
            .zip(&ids)
            .map(|(e, id)| match stored.get(id) {
                None => RowState::Missing,
                Some(got) => {
                    let want = document(e);
                    if ripple_sink::json_rows_equal(&want, got) {
                        RowState::Equal
                    } else {
                        RowState::Different(ripple_sink::json_difference(&want, got))
                    }
                }
            })
            .collect())
    }

    fn row_text(&self, event: &ChangeEvent) -> String {
        ripple_sink::row_text(
            event
                .row
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(field_json),
        )
    }

    async fn row_texts(
        &self,
        target: Target<'_>,
        schema: &TableSchema,
        ids: &[String],
    ) -> Result<Option<Vec<String>>, SinkError> {
        let stored = self.stored(&self.index_name(target), ids).await?;
        Ok(Some(
            ids.iter()
                .map(|id| {
                    let doc = stored.get(id).cloned().unwrap_or_default();
                    ripple_sink::row_text(
                        schema
                            .columns
                            .iter()
                            .map(|c| doc.get(&c.name).cloned().unwrap_or_default()),
                    )
                })
                .collect(),
        ))
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
                let _ = self
                    .client
                    .indices()
                    .refresh(IndicesRefreshParts::Index(&[&index]))
                    .send()
                    .await;
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

fn event_table(events: &[(usize, &ChangeEvent)], i: usize) -> String {
    events
        .get(i)
        .or(events.first())
        .map_or_else(String::new, |(_, e)| e.table().to_string())
}

/// A response's status and JSON body; a body that does not arrive is a transport failure.
/// An `_mget` answer of tombstones, read without building a JSON tree of it.
#[derive(serde::Deserialize)]
struct Found {
    docs: Vec<FoundDoc>,
}

#[derive(serde::Deserialize)]
struct FoundDoc {
    #[serde(default)]
    found: bool,
    #[serde(rename = "_version")]
    version: Option<i64>,
    error: Option<Json>,
}

async fn status_and_json(
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

fn transport_error(err: elasticsearch::Error, doing: &str) -> SinkError {
    // Connection failures and timeouts are the transport's; anything that reached the cluster
    // comes back as a status code instead.
    SinkError::retriable(format!("elasticsearch {doing}: {err}")).with_source(err)
}

/// Error types that say the cluster or index cannot take writes now, whatever the document: a
/// block (read-only index, flood-stage disk watermark), a closed or missing index, rejected
/// execution (queues full), a tripped circuit breaker, shards not available.
fn is_outage_type(kind: &str) -> bool {
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
fn status_error(status: u16, message: String) -> SinkError {
    let message = format!("elasticsearch: {message}");
    if matches!(status, 401 | 403 | 408 | 429) || status >= 500 {
        SinkError::retriable(message)
    } else {
        SinkError::permanent(message)
    }
}
