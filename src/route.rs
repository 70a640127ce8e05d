//! Routing: which sinks receive the events of which topic. Pure and cached per topic.

use crate::config::{Config, TopicMatcher};
use ahash::AHashMap;
use ripple_sink::ConfigError;
use std::sync::Arc;

/// Index of a sink in the engine's sink list.
pub type SinkId = usize;

pub struct Router {
    routes: Vec<(Vec<TopicMatcher>, Vec<SinkId>)>,
    cache: AHashMap<Arc<str>, Arc<[SinkId]>>,
}

impl Router {
    /// `sink_names` gives each sink's id by position.
    pub fn new(config: &Config, sink_names: &[String]) -> Result<Self, ConfigError> {
        let mut routes = Vec::new();
        for (i, r) in config.routes.iter().enumerate() {
            let matchers = r
                .topics
                .iter()
                .enumerate()
                .map(|(j, t)| TopicMatcher::parse(&format!("routes[{i}].topics[{j}]"), t))
                .collect::<Result<Vec<_>, _>>()?;
            let sinks = r
                .sinks
                .iter()
                .enumerate()
                .map(|(j, s)| {
                    sink_names.iter().position(|n| n == s).ok_or_else(|| {
                        ConfigError::new(
                            format!("routes[{i}].sinks[{j}]"),
                            format!("unknown sink {s:?}"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            routes.push((matchers, sinks));
        }
        Ok(Self {
            routes,
            cache: AHashMap::new(),
        })
    }

    /// The sinks that own `topic`'s events, each once, in route order. Empty when no route matches.
    pub fn sinks_for(&mut self, topic: &Arc<str>) -> Arc<[SinkId]> {
        if let Some(s) = self.cache.get(topic) {
            return s.clone();
        }
        let mut sinks: Vec<SinkId> = Vec::new();
        for (matchers, ids) in &self.routes {
            if matchers.iter().any(|m| m.matches(topic)) {
                for id in ids {
                    if !sinks.contains(id) {
                        sinks.push(*id);
                    }
                }
            }
        }
        let sinks: Arc<[SinkId]> = sinks.into();
        self.cache.insert(topic.clone(), sinks.clone());
        sinks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_route_to_their_sinks() {
        let config = Config::parse(
            r#"
            [kafka]
            brokers = "b:1"
            topics = ["^app\\..*"]
            [sinks.a]
            type = "postgres"
            [sinks.b]
            type = "redis"
            [[routes]]
            topics = ["app.public.orders"]
            sinks = ["a"]
            [[routes]]
            topics = ["^app\\.public\\..*"]
            sinks = ["b", "a"]
            "#,
        )
        .unwrap();
        let names = vec!["a".to_string(), "b".to_string()];
        let mut r = Router::new(&config, &names).unwrap();
        assert_eq!(&*r.sinks_for(&Arc::from("app.public.orders")), &[0, 1]);
        assert_eq!(&*r.sinks_for(&Arc::from("app.public.items")), &[1, 0]);
        assert!(r.sinks_for(&Arc::from("app.transaction")).is_empty());
    }
}
