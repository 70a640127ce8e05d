//! Where a source table lands in the replica: the route's `{schema}.{table}` template, or the
//! source's own name in the sink's `schema`.

use crate::config::PostgresSinkConfig;
use crate::sql::qualified;
use ripple_sink::{Template, TemplateError};

/// The replica table a source table is written to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetTable {
    pub namespace: String,
    pub name: String,
}

impl TargetTable {
    /// Where `target.table` goes: the route's template (`{schema}` and `{table}` replaced; a dot
    /// separates schema and table), else the source's name, in the sink's `schema` when set.
    pub fn resolve(target: ripple_sink::Target<'_>, config: &PostgresSinkConfig) -> Self {
        let table = target.table;
        let default_namespace = || {
            config
                .schema
                .clone()
                .unwrap_or_else(|| table.namespace.clone())
        };
        let Some(t) = target.template else {
            return Self {
                namespace: default_namespace(),
                name: table.name.clone(),
            };
        };
        // Split the template, not the result: a substituted name may itself hold a dot. A part
        // that does not parse was refused at start-up (`check`); it is taken literally.
        let fill = |part: &str| match Template::parse(part) {
            Ok(p) => p.render_table(table),
            Err(_) => part.to_string(),
        };
        match t.split_once('.') {
            Some((ns, name)) => Self {
                namespace: fill(ns),
                name: fill(name),
            },
            None => Self {
                namespace: default_namespace(),
                name: fill(t),
            },
        }
    }

    /// Refuses a template that cannot name a table.
    pub fn check(template: &str) -> Result<(), TemplateError> {
        let (ns, name) = template.split_once('.').unwrap_or(("x", template));
        for part in [ns, name] {
            Template::parse_table_level(part).map_err(|e| match e {
                TemplateError::Placeholder { name, .. } => TemplateError::Placeholder {
                    template: template.to_string(),
                    name,
                },
                other => other,
            })?;
        }
        if ns.is_empty() || name.is_empty() || name.contains('.') {
            return Err(TemplateError::Refused {
                template: template.to_string(),
                reason: "is not TABLE or SCHEMA.TABLE ({schema} and {table} are replaced)",
            });
        }
        Ok(())
    }

    pub fn sql(&self) -> String {
        qualified(&self.namespace, &self.name)
    }
}
