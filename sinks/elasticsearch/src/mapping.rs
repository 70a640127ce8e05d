//! Index mappings from the stream's schema: each column's field type follows its source type, so
//! documents are not typed by dynamic guessing from the first value the index happens to see (a
//! `jsonb` array `[1, "x"]` guessed `long`, then refused every document that held text there).

use crate::config::JsonFields;
use ripple_sink::{Column, ColumnType};
use serde_json::{Map, Value as Json, json};

/// Which product the cluster is: their types for "any JSON object" differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Elasticsearch,
    OpenSearch,
}

impl Flavour {
    /// From the body of `GET /`: OpenSearch says so in `version.distribution`.
    pub fn of(info: &Json) -> Self {
        match info["version"]["distribution"].as_str() {
            Some("opensearch") => Flavour::OpenSearch,
            _ => Flavour::Elasticsearch,
        }
    }
}

/// The mapping of one column; `None` leaves the field to dynamic mapping.
pub fn field(ty: &ColumnType, json: JsonFields, flavour: Flavour) -> Option<Json> {
    // A value the field cannot parse (a decimal beyond a double, a date PostgreSQL allows and the
    // index does not, such as year 10000 or 'infinity') is kept in `_source` and left unindexed,
    // instead of refusing the whole row.
    let lenient = |ty: &str| json!({"type": ty, "ignore_malformed": true});
    Some(match ty {
        ColumnType::Bool => json!({"type": "boolean"}),
        ColumnType::Int16 => json!({"type": "short"}),
        ColumnType::Int32 => json!({"type": "integer"}),
        ColumnType::Int64 => json!({"type": "long"}),
        ColumnType::Float32 => json!({"type": "float"}),
        ColumnType::Float64 => json!({"type": "double"}),
        ColumnType::Decimal { .. } => lenient("double"),
        ColumnType::Date | ColumnType::Timestamp | ColumnType::TimestampTz => lenient("date"),
        // What dynamic mapping gives a string, so queries written for it keep working.
        ColumnType::Text => {
            json!({"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}})
        }
        ColumnType::Uuid | ColumnType::Time | ColumnType::TimeTz | ColumnType::Interval => {
            json!({"type": "keyword"})
        }
        ColumnType::Bytes => json!({"type": "binary"}),
        ColumnType::Json => match (json, flavour) {
            // Any shape at all: kept in `_source`, not searchable.
            (JsonFields::Stored, _) => json!({"type": "object", "enabled": false}),
            // Objects of any shape, searchable by path; a value that is not an object is refused.
            (JsonFields::Flat, Flavour::OpenSearch) => json!({"type": "flat_object"}),
            (JsonFields::Flat, Flavour::Elasticsearch) => json!({"type": "flattened"}),
            (JsonFields::Dynamic, _) => return None,
        },
        // An array is a field with several values of its element's type.
        ColumnType::Array(inner) => return field(inner, json, flavour),
        // Enums, geometries, ranges...: their values vary too much to fix a type here.
        ColumnType::Other(_) => return None,
    })
}

/// `properties` for `columns` (those dynamic mapping is left to are not listed).
pub fn properties<'a>(
    columns: impl IntoIterator<Item = &'a Column>,
    json: JsonFields,
    flavour: Flavour,
) -> Map<String, Json> {
    columns
        .into_iter()
        .filter_map(|c| Some((c.name.clone(), field(&c.ty, json, flavour)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_columns_follow_the_option_and_the_product() {
        let ty = ColumnType::Json;
        let f = |j, p| field(&ty, j, p);
        assert_eq!(
            f(JsonFields::Stored, Flavour::OpenSearch).unwrap()["enabled"],
            false
        );
        assert_eq!(
            f(JsonFields::Flat, Flavour::OpenSearch).unwrap()["type"],
            "flat_object"
        );
        assert_eq!(
            f(JsonFields::Flat, Flavour::Elasticsearch).unwrap()["type"],
            "flattened"
        );
        assert_eq!(f(JsonFields::Dynamic, Flavour::OpenSearch), None);
        let arr = ColumnType::Array(Box::new(ColumnType::Json));
        assert_eq!(
            field(&arr, JsonFields::Stored, Flavour::OpenSearch),
            f(JsonFields::Stored, Flavour::OpenSearch)
        );
    }

    #[test]
    fn the_product_is_read_from_its_info() {
        assert_eq!(
            Flavour::of(&json!({"version": {"distribution": "opensearch", "number": "3.3.0"}})),
            Flavour::OpenSearch
        );
        assert_eq!(
            Flavour::of(&json!({"version": {"number": "8.15.0"}})),
            Flavour::Elasticsearch
        );
    }
}
