//! Reading the index back for `ripple verify`: documents by id as they are stored (verify decodes
//! them on its own), how many an index holds, and every id of an index (scrolled).

use crate::ElasticsearchSink;
use crate::encode::doc_id;
use crate::errors::{status_and_json, status_error, transport_error};
use async_trait::async_trait;
use ripple_sink::ReadBack;
use ripple_sink::{ChangeEvent, SinkError, StoredRow, Target};
use serde_json::json;

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
