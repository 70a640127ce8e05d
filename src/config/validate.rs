//! The checks `ripple.toml` passes at start-up, beyond its types: what the keys mean together
//! (routes naming sinks and topics, the dead-letter settings, the decoders' options, each route's
//! columns). Every error names its key and the fix.

use super::*;

impl Config {
    /// Checks what serde cannot: cross references, value ranges, patterns. `embedded` names sinks
    /// that exist outside the file.
    pub fn validate(&self, embedded: &[&str]) -> Result<(), ConfigError> {
        if let Some(m) = &self.metrics {
            m.token()?;
        }
        if let Some(m) = &self.metrics
            && m.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::new(
                "metrics.listen",
                format!(
                    "{:?} is not host:port with a numeric host, e.g. \"127.0.0.1:9464\"",
                    m.listen
                ),
            ));
        }
        if let Some(v) = &self.verify {
            if self.source.as_ref().is_none_or(|s| s.url.trim().is_empty()) {
                return Err(ConfigError::new(
                    "verify",
                    "verifying in the background needs the source database: add a [source] section with url = \"postgres://...\"",
                ));
            }
            if v.interval_s == 0 {
                return Err(ConfigError::new(
                    "verify.interval_s",
                    "must be at least 1 (seconds between passes); remove [verify] to turn it off",
                ));
            }
            if v.max_memory_mb < 8 {
                return Err(ConfigError::new(
                    "verify.max_memory_mb",
                    "must be at least 8",
                ));
            }
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(ConfigError::new(
                "kafka.brokers",
                "must list at least one host:port",
            ));
        }
        // The settings as librdkafka will take them: files and secrets read, SASL and TLS combined.
        kafka::client_config(&self.kafka, "ripple", kafka::Role::Consumer)?;
        if self.kafka.topics.is_empty() {
            return Err(ConfigError::new(
                "kafka.topics",
                "must name at least one topic or ^pattern",
            ));
        }
        for (i, t) in self.kafka.topics.iter().enumerate() {
            TopicMatcher::parse(&format!("kafka.topics[{i}]"), t)?;
        }
        if !matches!(self.kafka.auto_offset_reset.as_str(), "earliest" | "latest") {
            return Err(ConfigError::new(
                "kafka.auto_offset_reset",
                "must be \"earliest\" or \"latest\"",
            ));
        }
        if self.pipeline.apply_timeout_ms == 0 {
            return Err(ConfigError::new(
                "pipeline.apply_timeout_ms",
                "must be at least 1: it bounds how long one apply to a sink may take",
            ));
        }
        if self.pipeline.batch_size == 0 {
            return Err(ConfigError::new(
                "pipeline.batch_size",
                "must be at least 1",
            ));
        }
        if self.sinks.is_empty() && embedded.is_empty() {
            return Err(ConfigError::new(
                "sinks",
                "no sink is configured: add a [sinks.<name>] section with a `type`",
            ));
        }
        for (name, section) in &self.sinks {
            match section.get("type") {
                Some(toml::Value::String(_)) => {}
                Some(_) => {
                    return Err(ConfigError::new(
                        format!("sinks.{name}.type"),
                        "must be a string",
                    ));
                }
                None => {
                    return Err(ConfigError::new(
                        format!("sinks.{name}.type"),
                        "is missing: say which kind of sink this is, e.g. type = \"postgres\"",
                    ));
                }
            }
        }
        if self.routes.is_empty() {
            return Err(ConfigError::new(
                "routes",
                "no route is configured: add a [[routes]] with topics and sinks",
            ));
        }
        for (i, route) in self.routes.iter().enumerate() {
            if route.topics.is_empty() {
                return Err(ConfigError::new(
                    format!("routes[{i}].topics"),
                    "must name at least one topic",
                ));
            }
            for (j, t) in route.topics.iter().enumerate() {
                TopicMatcher::parse(&format!("routes[{i}].topics[{j}]"), t)?;
            }
            if route.sinks.is_empty() {
                return Err(ConfigError::new(
                    format!("routes[{i}].sinks"),
                    "must name at least one sink",
                ));
            }
            route.check_columns(i)?;
            if route.target.as_deref().is_some_and(|t| t.trim().is_empty()) {
                return Err(ConfigError::new(
                    format!("routes[{i}].target"),
                    "cannot be empty: leave it out to use the sink's own naming",
                ));
            }
            for (j, s) in route.sinks.iter().enumerate() {
                if !self.sinks.contains_key(s) && !embedded.contains(&s.as_str()) {
                    let known: Vec<&str> = self.sinks.keys().map(String::as_str).collect();
                    return Err(ConfigError::new(
                        format!("routes[{i}].sinks[{j}]"),
                        format!(
                            "names sink {s:?}, which is not configured (configured: {})",
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
        if let Some(dl) = &self.dead_letter {
            if !(dl.max_rejected_share > 0.0 && dl.max_rejected_share <= 1.0) {
                return Err(ConfigError::new(
                    "dead_letter.max_rejected_share",
                    "must be above 0 and at most 1 (1 turns the share rule off)",
                ));
            }
            if dl.rejection_window_s == 0 {
                return Err(ConfigError::new(
                    "dead_letter.rejection_window_s",
                    "must be at least 1",
                ));
            }
            if dl.topic.trim().is_empty() {
                return Err(ConfigError::new(
                    "dead_letter.topic",
                    "cannot be empty: name the topic bad records go to",
                ));
            }
            for (i, t) in self.kafka.topics.iter().enumerate() {
                if TopicMatcher::parse(&format!("kafka.topics[{i}]"), t)?.matches(&dl.topic) {
                    return Err(ConfigError::new(
                        "dead_letter.topic",
                        format!(
                            "{:?} is matched by kafka.topics[{i}] = {t:?}: Ripple would consume its own dead letters; pick a name outside the pattern",
                            dl.topic
                        ),
                    ));
                }
            }
        }
        if let Some(source) = self.source.as_ref().filter(|s| !s.url.trim().is_empty()) {
            source.connect_options()?;
        }
        if let Some(schemaless) = &self.decode.schemaless {
            self.check_schemaless(schemaless)?;
        }
        if let Some(avro) = &self.decode.avro
            && !(avro.registry_url.starts_with("http://")
                || avro.registry_url.starts_with("https://"))
        {
            return Err(ConfigError::new(
                "decode.avro.registry_url",
                format!(
                    "{:?} is not an http(s):// URL: give the registry's Confluent API, e.g. \"http://127.0.0.1:8081\" (Apicurio: \".../apis/ccompat/v7\")",
                    avro.registry_url
                ),
            ));
        }
        Ok(())
    }

    fn check_schemaless(&self, schemaless: &SchemalessConfig) -> Result<(), ConfigError> {
        schemaless.declared()?;
        match schemaless.types_from.as_deref() {
            None if schemaless.tables.is_empty() => Err(ConfigError::new(
                "decode.schemaless.types_from",
                "is missing, and no [decode.schemaless.tables] are declared: records without schemas need column types; set types_from = \"source\" or the name of a postgres sink",
            )),
            None => Ok(()),
            Some("source") if self.source.as_ref().is_none_or(|s| s.url.trim().is_empty()) => {
                Err(ConfigError::new(
                    "decode.schemaless.types_from",
                    "is \"source\", but there is no [source] url: add one, or name a postgres sink",
                ))
            }
            Some("source") => Ok(()),
            // Whether the sink's store has a catalog is its factory's to say, when it is built.
            Some(sink) => match self.sinks.get(sink) {
                Some(_) => Ok(()),
                None => Err(ConfigError::new(
                    "decode.schemaless.types_from",
                    format!("names {sink:?}, which is neither \"source\" nor a configured sink"),
                )),
            },
        }
    }
}

impl RouteConfig {
    fn check_columns(&self, i: usize) -> Result<(), ConfigError> {
        if self.include.is_some() && !self.exclude.is_empty() {
            return Err(ConfigError::new(
                format!("routes[{i}].exclude"),
                "cannot be combined with `include`: list the columns to keep, or the ones to drop",
            ));
        }
        if self.include.as_ref().is_some_and(Vec::is_empty) {
            return Err(ConfigError::new(
                format!("routes[{i}].include"),
                "is empty: name the columns to keep, or leave `include` out to keep them all",
            ));
        }
        let mut new_names = std::collections::BTreeSet::new();
        for (from, to) in &self.rename {
            let key = format!("routes[{i}].rename.{from}");
            if to.trim().is_empty() {
                return Err(ConfigError::new(
                    key,
                    "cannot rename a column to an empty name",
                ));
            }
            if !new_names.insert(to.as_str()) {
                return Err(ConfigError::new(
                    key,
                    format!("gives a second column the name {to:?}"),
                ));
            }
        }
        Ok(())
    }
}
