//! The async step before decoding. The decoder does no I/O: when a record needs something fetched
//! (an Avro writer schema, the column catalog read again) it says so, this step fetches it, hands
//! it to the decoder, and the record is decoded again.

use super::avro::SchemaFetcher;
use super::{DecodeError, Decoded, Decoder, Need, Record};
use ripple_sink::{ColumnCatalog, SinkError};

/// Where what the decoder needs comes from.
#[derive(Default)]
pub struct Resolver {
    /// `[decode.avro]`: the schema registry.
    pub schemas: Option<SchemaFetcher>,
    /// `[decode.schemaless] types_from`: the store whose catalog types schemaless records.
    pub catalog: Option<Box<dyn ColumnCatalog>>,
}

/// A decoder and its resolver: what the run loop and replay decode records with.
pub struct ResolvingDecoder {
    decoder: Decoder,
    resolver: Resolver,
}

/// A record needs at most its value's schema, its key's, and one catalog read.
const MOST_NEEDS: usize = 3;

impl ResolvingDecoder {
    pub fn new(decoder: Decoder, resolver: Resolver) -> Self {
        Self { decoder, resolver }
    }

    /// Reads the catalog before the first record, so one that cannot be read stops start-up.
    pub async fn prime(&mut self) -> Result<(), SinkError> {
        if let (Some(catalog), Some(types)) = (&self.resolver.catalog, &mut self.decoder.schemaless)
            && let Some(held) = types.catalog_mut()
        {
            held.install(catalog.columns().await?);
        }
        Ok(())
    }

    pub async fn decode(&mut self, record: &Record<'_>) -> Result<Decoded, DecodeError> {
        for _ in 0..MOST_NEEDS {
            match self.decoder.decode(record) {
                Err(e) => match e.need() {
                    Some(need) => self.resolve(need).await?,
                    None => return Err(e),
                },
                decoded => return decoded,
            }
        }
        self.decoder.decode(record)
    }

    /// Fetches what `need` names into the decoder. A schema that cannot be fetched fails the
    /// record; a catalog that cannot be read is logged, and the record fails for its unknown
    /// column.
    async fn resolve(&mut self, need: Need) -> Result<(), DecodeError> {
        match need {
            Need::Schema(id) => {
                let (Some(fetcher), Some(registry)) =
                    (&self.resolver.schemas, &mut self.decoder.avro)
                else {
                    return Err(DecodeError::new(format!(
                        "Avro schema {id} is not known and there is no registry to fetch it from"
                    )));
                };
                let text = fetcher
                    .fetch(id)
                    .await
                    .map_err(|e| DecodeError::new(with_causes(&e)))?;
                registry
                    .insert(id, &text)
                    .map_err(|e| DecodeError::new(with_causes(&e)))
            }
            Need::Catalog => {
                let (Some(catalog), Some(held)) = (
                    &self.resolver.catalog,
                    self.decoder
                        .schemaless
                        .as_mut()
                        .and_then(|t| t.catalog_mut()),
                ) else {
                    return Err(DecodeError::new("there is no column catalog to read"));
                };
                match catalog.columns().await {
                    Ok(columns) => held.install(columns),
                    Err(e) => {
                        tracing::warn!("{e}");
                        held.read_failed();
                    }
                }
                Ok(())
            }
        }
    }
}

/// An error and its causes on one line: the reason a dead letter carries.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
