//! Reading the index back for `ripple verify`: documents by id compared with the rows they
//! should hold, row texts of tables without a key, and every id of an index (scrolled).

use crate::ElasticsearchSink;
use crate::encode::{doc_id, document, field_json};
use crate::errors::{status_and_json, status_error, transport_error};
use async_trait::async_trait;
use ripple_sink::ReadBack;
use ripple_sink::{ChangeEvent, RowState, SinkError, TableSchema, Target};
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
