//! Routing: which sinks receive the events of which topic, and what each route asks of them (the
//! store-side name, the columns written and their names). Pure and cached per topic.

use crate::config::{Config, RouteConfig, TopicMatcher};
use ahash::AHashMap;
use ripple_sink::{ChangeEvent, Column, ConfigError, SinkError, TableSchema};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

/// Index of a sink in the engine's sink list.
pub type SinkId = usize;

/// What one route asks of the sinks it names.
#[derive(Debug, Default)]
pub struct RouteOptions {
    /// Position of the route in the config, for messages.
    pub route: usize,
    pub target: Option<String>,
    include: Option<Vec<String>>,
    exclude: Vec<String>,
    rename: Vec<(String, String)>,
    /// Projections already worked out, by the source schema they apply to.
    shapes: Mutex<Vec<(Arc<TableSchema>, ShapeResult)>>,
}

/// A route's shape for one schema, or why the route cannot shape it.
type ShapeResult = Result<Arc<Shape>, ShapeError>;

/// A route's columns for one source schema: which source columns are kept, under which schema.
#[derive(Debug)]
pub struct Shape {
    pub schema: Arc<TableSchema>,
    /// Position in the source schema of each column of `schema`.
    pub keep: Vec<usize>,
}

/// One sink owning a topic, with the options of the route that gave it the topic.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub sink: SinkId,
    pub options: Arc<RouteOptions>,
}

impl RouteOptions {
    pub fn from_config(route: usize, r: &RouteConfig) -> Self {
        Self {
            route,
            target: r.target.clone(),
            include: r.include.clone(),
            exclude: r.exclude.clone(),
            rename: r
                .rename
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect(),
            shapes: Mutex::default(),
        }
    }

    fn shapes_columns(&self) -> bool {
        self.include.is_some() || !self.exclude.is_empty() || !self.rename.is_empty()
    }

    /// The route's shape for `schema`: key columns always stay, since every store needs them to
    /// find the row.
    pub fn shape(&self, schema: &Arc<TableSchema>) -> Result<Arc<Shape>, ShapeError> {
        let mut cache = self.shapes.lock().expect("shape cache");
        if let Some((_, s)) = cache.iter().find(|(k, _)| Arc::ptr_eq(k, schema)) {
            return s.clone();
        }
        let shape = self.work_out(schema).map(Arc::new);
        // Schemas are few (one per table and schema version); a handful of entries is the norm.
        if cache.len() > 256 {
            cache.clear();
        }
        cache.push((schema.clone(), shape.clone()));
        shape
    }

    fn work_out(&self, schema: &TableSchema) -> Result<Shape, ShapeError> {
        let mut keep = Vec::new();
        let mut columns: Vec<Column> = Vec::new();
        for (i, c) in schema.columns.iter().enumerate() {
            let is_key = schema.key.contains(&i);
            let wanted = self
                .include
                .as_ref()
                .is_none_or(|inc| inc.contains(&c.name))
                && !self.exclude.contains(&c.name);
            if !(wanted || is_key) {
                continue;
            }
            let mut column = c.clone();
            if let Some((_, to)) = self.rename.iter().find(|(from, _)| *from == c.name) {
                column.name = to.clone();
            }
            if columns.iter().any(|k| k.name == column.name) {
                return Err(ShapeError::SameName {
                    route: self.route,
                    table: schema.table.to_string(),
                    name: column.name,
                });
            }
            keep.push(i);
            columns.push(column);
        }
        let key = schema
            .key
            .iter()
            .map(|k| {
                keep.iter()
                    .position(|i| i == k)
                    .expect("key columns are kept")
            })
            .collect();
        Ok(Shape {
            schema: Arc::new(TableSchema {
                table: schema.table.clone(),
                columns,
                key,
            }),
            keep,
        })
    }

    /// The events as this route's sinks receive them: unchanged when the route keeps every column
    /// under its own name, otherwise projected and renamed.
    pub fn shape_events<'a>(
        &self,
        events: &'a [ChangeEvent],
    ) -> Result<Cow<'a, [ChangeEvent]>, SinkError> {
        if !self.shapes_columns() {
            return Ok(Cow::Borrowed(events));
        }
        let mut out = Vec::with_capacity(events.len());
        // A batch nearly always has one schema: look the shape up only when it changes.
        let mut current: Option<(&Arc<TableSchema>, Arc<Shape>)> = None;
        for (i, e) in events.iter().enumerate() {
            let shape = match &current {
                Some((schema, shape)) if Arc::ptr_eq(schema, &e.schema) => shape.clone(),
                _ => {
                    let shape = self
                        .shape(&e.schema)
                        .map_err(|m| SinkError::permanent(m.to_string()).at_event(i))?;
                    current = Some((&e.schema, shape.clone()));
                    shape
                }
            };
            out.push(shape.apply(e));
        }
        Ok(Cow::Owned(out))
    }
}

/// A route's column options that do not fit a table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("route {route} gives two columns of {table} the name {name:?} (check `rename`)")]
    SameName {
        route: usize,
        table: String,
        name: String,
    },
}

impl Shape {
    pub fn apply(&self, e: &ChangeEvent) -> ChangeEvent {
        ChangeEvent {
            schema: self.schema.clone(),
            op: e.op,
            row: e
                .row
                .as_ref()
                .map(|row| self.keep.iter().map(|&i| row[i].clone()).collect()),
            key: e.key.clone(),
            before: None,
            version: e.version,
            source_ts_ms: e.source_ts_ms,
            origin: e.origin.clone(),
        }
    }
}

/// Routes topics to sinks.
pub struct Router {
    routes: Vec<(Vec<TopicMatcher>, Vec<SinkId>, Arc<RouteOptions>)>,
    cache: AHashMap<Arc<str>, Arc<[Assignment]>>,
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
            routes.push((matchers, sinks, Arc::new(RouteOptions::from_config(i, r))));
        }
        Ok(Self {
            routes,
            cache: AHashMap::new(),
        })
    }

    /// The sinks that own `topic`'s events, each once, in route order, each with the options of
    /// the first route that matched it. Empty when no route matches.
    pub fn sinks_for(&mut self, topic: &Arc<str>) -> Arc<[Assignment]> {
        if let Some(s) = self.cache.get(topic) {
            return s.clone();
        }
        let mut sinks: Vec<Assignment> = Vec::new();
        for (matchers, ids, options) in &self.routes {
            if matchers.iter().any(|m| m.matches(topic)) {
                for id in ids {
                    match sinks.iter().find(|a| a.sink == *id) {
                        None => sinks.push(Assignment {
                            sink: *id,
                            options: options.clone(),
                        }),
                        Some(first) => tracing::debug!(
                            topic = %topic,
                            "routes[{}] also matches this topic for a sink that routes[{}] already sends it to; routes[{}] applies",
                            options.route, first.options.route, first.options.route
                        ),
                    }
                }
            }
        }
        let sinks: Arc<[Assignment]> = sinks.into();
        self.cache.insert(topic.clone(), sinks.clone());
        sinks
    }

    /// Every route's target, with the sinks it names, for checking at start-up.
    pub fn targets(&self) -> impl Iterator<Item = (usize, &str, &[SinkId])> {
        self.routes
            .iter()
            .filter_map(|(_, ids, o)| o.target.as_deref().map(|t| (o.route, t, ids.as_slice())))
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
        let ids = |r: &mut Router, t: &str| -> Vec<SinkId> {
            r.sinks_for(&Arc::from(t)).iter().map(|a| a.sink).collect()
        };
        assert_eq!(ids(&mut r, "app.public.orders"), [0, 1]);
        assert_eq!(ids(&mut r, "app.public.items"), [1, 0]);
        assert!(ids(&mut r, "app.transaction").is_empty());
        let orders = r.sinks_for(&Arc::from("app.public.orders"));
        assert_eq!(
            orders[0].options.route, 0,
            "the first matching route applies"
        );
        assert_eq!(orders[1].options.route, 1);
    }

    fn schema() -> Arc<TableSchema> {
        use ripple_sink::{ColumnType, TableRef};
        let col = |n: &str| Column {
            name: n.into(),
            ty: ColumnType::Text,
            nullable: true,
            source_type: None,
            default: None,
        };
        Arc::new(TableSchema {
            table: TableRef::new("public", "inventory"),
            columns: vec![
                col("note"),
                col("product_id"),
                col("on_hand"),
                col("secret"),
            ],
            key: vec![1],
        })
    }

    fn options(extra: &str) -> RouteOptions {
        let text = format!(
            "[kafka]\nbrokers = \"b:1\"\ntopics = [\"t\"]\n[sinks.a]\ntype = \"redis\"\n[[routes]]\ntopics = [\"t\"]\nsinks = [\"a\"]\n{extra}"
        );
        let config = Config::parse(&text).unwrap();
        RouteOptions::from_config(0, &config.routes[0])
    }

    #[test]
    fn include_keeps_key_columns_and_renames() {
        use ripple_sink::{Op, Origin, Value, Version};
        let o = options(
            "include = [\"on_hand\"]\nrename = { on_hand = \"stock\", product_id = \"id\" }",
        );
        let s = schema();
        let event = ChangeEvent {
            schema: s.clone(),
            op: Op::Upsert,
            row: Some(vec![
                Value::Text("n".into()),
                Value::Int(7),
                Value::Int(3),
                Value::Text("pw".into()),
            ]),
            key: vec![Value::Int(7)],
            before: None,
            version: Version::default(),
            source_ts_ms: 0,
            origin: Origin {
                topic: Arc::from("t"),
                partition: 0,
                offset: 0,
            },
        };
        let shaped = o.shape_events(std::slice::from_ref(&event)).unwrap();
        let e = &shaped[0];
        let names: Vec<&str> = e.schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "stock"]);
        assert_eq!(e.schema.key, [0]);
        assert_eq!(e.row.as_deref().unwrap(), &[Value::Int(7), Value::Int(3)]);
        // The projection is worked out once per schema.
        assert!(Arc::ptr_eq(&o.shape(&s).unwrap(), &o.shape(&s).unwrap()));
    }

    #[test]
    fn exclude_drops_columns_but_never_the_key() {
        let o = options("exclude = [\"secret\", \"product_id\"]");
        let shape = o.shape(&schema()).unwrap();
        let names: Vec<&str> = shape
            .schema
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["note", "product_id", "on_hand"]);
    }

    #[test]
    fn a_rename_onto_a_kept_name_is_refused() {
        let o = options("rename = { note = \"on_hand\" }");
        assert!(matches!(
            o.shape(&schema()).unwrap_err(),
            ShapeError::SameName { .. }
        ));
    }

    #[test]
    fn routes_without_column_options_pass_events_through() {
        let o = options("target = \"x:{pk}\"");
        let events: Vec<ChangeEvent> = Vec::new();
        assert!(matches!(o.shape_events(&events).unwrap(), Cow::Borrowed(_)));
    }
}
