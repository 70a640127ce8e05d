//! The Elasticsearch sink (tested against OpenSearch): one document per source row, id from the
//! primary key, written with `_bulk` requests sized by count and bytes. Documents carry external
//! versions, so the index itself refuses anything not newer than what it holds; a 409 "version
//! conflict" therefore means "already newer" and counts as applied.
//!
//! The index remembers a deleted document's version only in memory (and for `gc_deletes`): after a
//! node restart a stale insert of a deleted row would be `created` again. So each delete also leaves
//! a tombstone document in `meta_index` (`deleted:<index>:<id>`, versioned like the row), and writes
//! older than a row's tombstone or than the index's last truncate are dropped before they are sent.

mod apply;
mod config;
mod encode;
mod errors;
mod index;
mod mapping;
mod read_back;
mod request;

pub use config::{ElasticsearchSinkConfig, JsonFields};

use async_trait::async_trait;
use elasticsearch::Elasticsearch;
use elasticsearch::http::Url;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use errors::{status_error, transport_error};
use ripple_sink::{
    ChangeEvent, ConfigError, ReadBack, Sink, SinkError, SinkFactory, Target, Template,
    TemplateError,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
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
    /// Truncate records written, and how many of them a refresh of `meta_index` made searchable;
    /// a search for tombstones refreshes first when these differ. It starts one ahead: what
    /// another run wrote just before this one started may not be searchable yet either.
    truncates_written: AtomicU64,
    truncates_searchable: AtomicU64,
    /// Row tombstones this sink wrote since it last refreshed `meta_index`, by id, with their
    /// versions: a search may not see them yet, so they are looked up here as well. Refreshing
    /// for every batch that deletes stalled the index for up to 1.7 s at a time.
    unsearchable: Mutex<HashMap<String, i64>>,
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
            truncates_written: AtomicU64::new(1),
            truncates_searchable: AtomicU64::new(0),
            unsearchable: Mutex::default(),
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
        self.write(target, events).await
    }

    async fn held_versions(
        &self,
        target: Target<'_>,
        events: &[ChangeEvent],
    ) -> Result<Option<Vec<Option<ripple_sink::Version>>>, SinkError> {
        self.versions_of(&self.index_name(target), events)
            .await
            .map(Some)
    }

    async fn repair(
        &self,
        target: Target<'_>,
        events: &[ChangeEvent],
        held: &[Option<ripple_sink::Version>],
    ) -> Result<(), SinkError> {
        self.write_repair(target, events, held).await
    }
}
