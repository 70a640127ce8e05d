//! Avro in the Confluent wire format (byte 0, a 4-byte big-endian schema id, the Avro datum), as
//! Confluent's and Apicurio's (`as-confluent`) converters write it. Writer schemas come from a
//! schema registry's Confluent API (`GET <url>/schemas/ids/<id>`) and are kept by id, which never
//! changes meaning. The Connect schema the converter encoded into the Avro schema (`connect.name`,
//! `connect.parameters`, `connect.type`) is rebuilt, each datum becomes the JSON the JsonConverter
//! would have written, and decoding goes on as for JSON with schemas.

use super::schema::ConnectSchema;
use super::{
    DecodeError, Decoded, Decoder, Kind, Need, Record, analyse_schema, decode_change, decode_flat,
};
use ahash::AHashMap;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as Avro;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value as Json;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A writer schema: a reader for its datums, and the Connect schema it carries.
struct WriterSchema {
    /// Resolved once per schema id, not per record. It borrows the Avro schema, which is leaked
    /// to give it a `'static` home: schemas are kept for the whole run anyway, one per id.
    reader: GenericDatumReader<'static>,
    connect: ConnectSchema,
}

/// Writer schemas by id, as the registry gave them. Pure: a schema it does not hold yet is asked
/// for ([`Need::Schema`]), fetched by the [`SchemaFetcher`] in the async step before decoding, and
/// handed back with [`Registry::insert`].
#[derive(Default)]
pub struct Registry {
    schemas: AHashMap<u32, Arc<WriterSchema>>,
}

/// Where writer schemas come from: a registry's Confluent API, with its CA and credentials.
pub struct SchemaFetcher {
    /// The Confluent API's base, e.g. `http://127.0.0.1:18081/apis/ccompat/v7` for Apicurio.
    url: String,
    /// `url` with any password in it masked, for errors (they become dead-letter reasons).
    shown: String,
    client: reqwest::Client,
    /// Basic authentication: user and password.
    auth: Option<(String, ripple_sink::Secret)>,
}

const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ALLOCATION: usize = 64 << 20;

impl Registry {
    pub fn new() -> Self {
        // A damaged length prefix must not make the reader reserve Avro's default 512 MB: no
        // string or array in a Kafka record comes near this.
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION);
        Self::default()
    }

    /// Adds a schema under `id` as the registry would return it (an Avro schema's JSON text).
    pub fn insert(&mut self, id: u32, schema: &str) -> Result<(), RegistryError> {
        let json: Json =
            serde_json::from_str(schema).map_err(|source| RegistryError::NotJson { id, source })?;
        let avro = apache_avro::Schema::parse(&json).map_err(|e| RegistryError::NotAvro {
            id,
            source: Box::new(e),
        })?;
        let avro: &'static apache_avro::Schema = Box::leak(Box::new(avro));
        let reader =
            GenericDatumReader::builder(avro)
                .build()
                .map_err(|e| RegistryError::Unresolvable {
                    id,
                    source: Box::new(e),
                })?;
        let connect = connect_of(&json, &mut AHashMap::new(), None)
            .map_err(|message| RegistryError::Unsupported { id, message })?;
        self.schemas
            .insert(id, Arc::new(WriterSchema { reader, connect }));
        Ok(())
    }

    /// The schema with `id`, or the need to fetch it.
    fn get(&self, id: u32) -> Result<Arc<WriterSchema>, DecodeError> {
        self.schemas
            .get(&id)
            .cloned()
            .ok_or_else(|| DecodeError::needs(Need::Schema(id)))
    }
}

impl SchemaFetcher {
    /// A fetcher from the registry at `url` (its Confluent API), trusting `ca` besides the
    /// system's roots, with basic authentication when `auth` is given.
    pub fn new(
        url: &str,
        ca: Option<reqwest::Certificate>,
        auth: Option<(String, ripple_sink::Secret)>,
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder().timeout(FETCH_TIMEOUT);
        if let Some(ca) = ca {
            builder = builder.add_root_certificate(ca);
        }
        let url = url.trim_end_matches('/').to_string();
        let shown = match reqwest::Url::parse(&url) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("****"));
                u.to_string().trim_end_matches('/').to_string()
            }
            _ => url.clone(),
        };
        Ok(Self {
            url,
            shown,
            client: builder.build()?,
            auth,
        })
    }

    /// The text of schema `id`. A registry that cannot be reached, or does not know the id, is a
    /// decode error: the record goes to the dead letters, to be replayed.
    pub async fn fetch(&self, id: u32) -> Result<String, RegistryError> {
        let path = format!("/schemas/ids/{id}");
        // What errors name: the URL without its password, if it holds one.
        let url = format!("{}{path}", self.shown);
        #[derive(serde::Deserialize)]
        struct Found {
            schema: String,
        }
        let mut request = self.client.get(format!("{}{path}", self.url));
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password.expose()));
        }
        let response = request
            .send()
            .await
            .map_err(|source| RegistryError::Unreachable {
                url: url.clone(),
                // reqwest names the URL it was given, password included.
                source: source.without_url(),
            })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|source| RegistryError::Read {
                url: url.clone(),
                source,
            })?;
        if !status.is_success() {
            return Err(RegistryError::Status { url, status, body });
        }
        serde_json::from_str::<Found>(&body)
            .map(|f| f.schema)
            .map_err(|source| RegistryError::NotASchema { url, source })
    }
}

/// Why a schema could not be fetched from the registry, or not used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry at {url} cannot be reached")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("reading {url}")]
    Read {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("schema registry answered {status} for {url}: {body}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
        body: String,
    },
    #[error("{url} did not return {{\"schema\": ...}}")]
    NotASchema {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("schema {id} is not JSON")]
    NotJson {
        id: u32,
        #[source]
        source: serde_json::Error,
    },
    #[error("schema {id} is not an Avro schema")]
    NotAvro {
        id: u32,
        #[source]
        source: Box<apache_avro::Error>,
    },
    #[error("schema {id} cannot be resolved")]
    Unresolvable {
        id: u32,
        #[source]
        source: Box<apache_avro::Error>,
    },
    #[error("schema {id}: {message}")]
    Unsupported { id: u32, message: String },
}

/// Splits the wire format into the schema id and the datum.
fn split_wire<'a>(bytes: &'a [u8], what: &str) -> Result<(u32, &'a [u8]), DecodeError> {
    match bytes {
        [0, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        _ => Err(DecodeError::new(format!(
            "{what} is not in the Avro wire format (magic byte 0, a 4-byte schema id, the datum)"
        ))),
    }
}

/// Reads one datum whole: bytes left over mean the schema is not the one it was written with.
fn read_datum(schema: &WriterSchema, mut datum: &[u8], what: &str) -> Result<Json, DecodeError> {
    let value = schema
        .reader
        .read_value(&mut datum)
        .map_err(|e| DecodeError::new(format!("{what} does not match its Avro schema: {e}")))?;
    if !datum.is_empty() {
        return Err(DecodeError::new(format!(
            "{what} has {} bytes after its Avro datum",
            datum.len()
        )));
    }
    to_json(value).map_err(|e| DecodeError::new(format!("{what}: {e}")))
}

impl Decoder {
    pub(super) fn decode_avro(
        &mut self,
        record: &Record<'_>,
        value: &[u8],
    ) -> Result<Decoded, DecodeError> {
        let registry = self.avro.as_ref().ok_or_else(|| {
            DecodeError::new(
                "record is Avro in the Confluent wire format (magic byte 0): set [decode.avro] registry_url so Ripple can read its schema",
            )
        })?;
        let (value_id, datum) = split_wire(value, "value")?;
        let value_schema = registry.get(value_id)?;
        let key = match record.key {
            Some(k) => {
                let (id, datum) = split_wire(k, "key")?;
                Some((id, registry.get(id)?, datum))
            }
            None => None,
        };
        let cache_key = (
            u64::from(value_id),
            key.as_ref().map_or(u64::MAX, |k| u64::from(k.0)),
        );
        if !self.avro_kinds.contains_key(&cache_key) {
            let kind = analyse_schema(
                &value_schema.connect,
                key.as_ref().map(|k| &k.1.connect),
                self.binary,
            )?;
            self.avro_kinds.insert(cache_key, kind);
        }
        let kind = self.avro_kinds.get_mut(&cache_key).expect("inserted above");
        if let Kind::Skip(s) = kind {
            return Ok(Decoded::Skip(*s));
        }
        let payload = read_datum(&value_schema, datum, "value")?.to_string();
        let key_json = match &key {
            Some((_, schema, datum)) => Some(read_datum(schema, datum, "key")?.to_string()),
            None => None,
        };
        let key_raw: Option<Box<RawValue>> = key_json
            .map(RawValue::from_string)
            .transpose()
            .map_err(|e| DecodeError::new(format!("key: {e}")))?;
        match kind {
            Kind::Envelope(e) => decode_change(e, record, &payload, key_raw.as_deref()),
            Kind::Flat(e) => decode_flat(e, record, &payload, key_raw.as_deref()),
            Kind::Skip(s) => Ok(Decoded::Skip(*s)),
        }
    }
}

/// The Connect schema an Avro schema written by a Connect converter stands for. `named` holds the
/// records defined so far, which later fields may name instead of repeating (Debezium's `after`
/// is `["null", "Value"]`, naming `before`'s record).
fn connect_of(
    node: &Json,
    named: &mut AHashMap<String, ConnectSchema>,
    namespace: Option<&str>,
) -> Result<ConnectSchema, String> {
    let plain = |ty: &str| ConnectSchema {
        ty: ty.to_string(),
        optional: false,
        name: None,
        parameters: None,
        fields: None,
        items: None,
        field: None,
        default: None,
    };
    match node {
        Json::String(name) => Ok(match name.as_str() {
            "null" => plain("null"),
            "boolean" => plain("boolean"),
            "int" => plain("int32"),
            "long" => plain("int64"),
            "float" => plain("float"),
            "double" => plain("double"),
            "bytes" => plain("bytes"),
            "string" => plain("string"),
            other => {
                let full = match namespace {
                    Some(ns) if !other.contains('.') => format!("{ns}.{other}"),
                    _ => other.to_string(),
                };
                named
                    .get(&full)
                    .or_else(|| named.get(other))
                    .cloned()
                    .ok_or_else(|| format!("type {other:?} is not defined before its use"))?
            }
        }),
        Json::Array(branches) => {
            // Connect writes optional fields as a union with null; other unions it does not write.
            let others: Vec<&Json> = branches.iter().filter(|b| *b != "null").collect();
            match others.as_slice() {
                [one] => {
                    let mut s = connect_of(one, named, namespace)?;
                    s.optional = others.len() < branches.len();
                    Ok(s)
                }
                _ => Err(format!(
                    "a union of {} types: only [\"null\", T] comes from a Connect schema",
                    others.len()
                )),
            }
        }
        Json::Object(o) => {
            let ty = o.get("type").ok_or("a schema object without \"type\"")?;
            let connect_name = o
                .get("connect.name")
                .and_then(Json::as_str)
                .map(str::to_string);
            let mut parameters: Option<HashMap<String, String>> = o
                .get("connect.parameters")
                .and_then(Json::as_object)
                .map(|p| {
                    p.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                });
            let mut schema = match ty.as_str() {
                Some("record") => {
                    let name = o.get("name").and_then(Json::as_str).unwrap_or_default();
                    let ns = o.get("namespace").and_then(Json::as_str).or(namespace);
                    let full = match ns {
                        Some(ns) if !name.contains('.') => format!("{ns}.{name}"),
                        _ => name.to_string(),
                    };
                    let mut fields = Vec::new();
                    for f in o
                        .get("fields")
                        .and_then(Json::as_array)
                        .ok_or("a record without \"fields\"")?
                    {
                        let field_name = f
                            .get("name")
                            .and_then(Json::as_str)
                            .ok_or("a record field without \"name\"")?;
                        let mut s = connect_of(
                            f.get("type").ok_or("a field without \"type\"")?,
                            named,
                            ns,
                        )?;
                        s.field = Some(field_name.to_string());
                        fields.push(s);
                    }
                    let mut s = plain("struct");
                    s.fields = Some(fields);
                    s.name = Some(connect_name.clone().unwrap_or_else(|| full.clone()));
                    named.insert(full, s.clone());
                    s
                }
                Some("array") => {
                    let items = connect_of(
                        o.get("items").ok_or("an array without \"items\"")?,
                        named,
                        namespace,
                    )?;
                    let mut s = plain("array");
                    s.items = Some(Box::new(items));
                    s
                }
                Some("map") => plain("map"),
                Some("enum") => plain("string"),
                Some("fixed") => plain("bytes"),
                Some("int") => plain(match o.get("connect.type").and_then(Json::as_str) {
                    Some("int8") => "int8",
                    Some("int16") => "int16",
                    _ => "int32",
                }),
                Some(_) => connect_of(ty, named, namespace)?,
                None => connect_of(ty, named, namespace)?,
            };
            if o.get("logicalType").and_then(Json::as_str) == Some("decimal") {
                let params = parameters.get_or_insert_with(HashMap::new);
                if let Some(scale) = o.get("scale").and_then(Json::as_u64) {
                    params.entry("scale".into()).or_insert(scale.to_string());
                }
            }
            if connect_name.is_some() {
                schema.name = connect_name;
            }
            if parameters.is_some() {
                schema.parameters = parameters;
            }
            Ok(schema)
        }
        other => Err(format!("{other} is not an Avro schema")),
    }
}

/// An Avro value as the JsonConverter would have written the same Connect value: bytes and
/// decimals in base64, logical types as their underlying numbers, non-finite floats as strings.
fn to_json(value: Avro) -> Result<Json, String> {
    let float = |f: f64| {
        serde_json::Number::from_f64(f)
            .map(Json::Number)
            .unwrap_or_else(|| {
                Json::String(if f.is_nan() {
                    "NaN".into()
                } else if f > 0.0 {
                    "Infinity".into()
                } else {
                    "-Infinity".into()
                })
            })
    };
    Ok(match value {
        Avro::Null => Json::Null,
        Avro::Boolean(b) => Json::Bool(b),
        Avro::Int(i) | Avro::Date(i) | Avro::TimeMillis(i) => Json::from(i),
        Avro::Long(i)
        | Avro::TimeMicros(i)
        | Avro::TimestampMillis(i)
        | Avro::TimestampMicros(i)
        | Avro::TimestampNanos(i)
        | Avro::LocalTimestampMillis(i)
        | Avro::LocalTimestampMicros(i)
        | Avro::LocalTimestampNanos(i) => Json::from(i),
        // As the JsonConverter prints a float32: its shortest text (3.14159, not 3.141590118408203).
        Avro::Float(f) => float(f.to_string().parse::<f64>().unwrap_or(f64::from(f))),
        Avro::Double(f) => float(f),
        Avro::Bytes(b) | Avro::Fixed(_, b) => Json::String(BASE64.encode(b)),
        Avro::Decimal(d) => {
            let bytes: Vec<u8> = Vec::try_from(&d).map_err(|e| e.to_string())?;
            Json::String(BASE64.encode(bytes))
        }
        Avro::String(s) | Avro::Enum(_, s) => Json::String(s),
        Avro::Uuid(u) => Json::String(u.to_string()),
        Avro::Union(_, inner) => to_json(*inner)?,
        Avro::Array(items) => {
            Json::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Avro::Map(map) => Json::Object(
            map.into_iter()
                .map(|(k, v)| Ok((k, to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        Avro::Record(fields) => Json::Object(
            fields
                .into_iter()
                .map(|(k, v)| Ok((k, to_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => return Err(format!("Avro value {other:?} has no Connect counterpart")),
    })
}
