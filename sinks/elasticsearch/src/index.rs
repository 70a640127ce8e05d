//! The indices: created with `gc_deletes` and the fields mapped from the stream's schema, their
//! mappings extended when a column is added, and the cluster's product (Elasticsearch or
//! OpenSearch) read when a mapping depends on it.

use crate::ElasticsearchSink;
use crate::JsonFields;
use crate::errors::{status_and_json, status_error, transport_error};
use crate::mapping;
use elasticsearch::indices::{
    IndicesCreateParts, IndicesGetMappingParts, IndicesPutMappingParts, IndicesRefreshParts,
};
use ripple_sink::{Column, SinkError, TableSchema};
use serde_json::{Value as Json, json};
use std::collections::HashSet;

impl ElasticsearchSink {
    /// Publishes what was written to `index` to search (delete-by-query, scrolls). A refresh that
    /// fails only makes the next read see less; the write itself stands.
    pub(crate) async fn refresh(&self, index: &str) {
        let _ = self
            .client
            .indices()
            .refresh(IndicesRefreshParts::Index(&[index]))
            .send()
            .await;
    }

    /// Creates the index with `gc_deletes` long enough for delete versions to outlive late,
    /// stale inserts, and its fields mapped from `schemas`. An index that already exists keeps its
    /// settings and the fields it has; columns it lacks are added to its mapping (a column added
    /// to the source extends the mapping before the first document that holds it).
    pub(crate) async fn ensure_index(
        &self,
        index: &str,
        schemas: &[&TableSchema],
    ) -> Result<(), SinkError> {
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
    pub(crate) async fn create_index(
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
    pub(crate) async fn flavour_for_json(&self) -> Result<mapping::Flavour, SinkError> {
        if self.config.json_fields != JsonFields::Flat {
            return Ok(mapping::Flavour::Elasticsearch);
        }
        self.flavour().await
    }

    pub(crate) async fn flavour(&self) -> Result<mapping::Flavour, SinkError> {
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
}
