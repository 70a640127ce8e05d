//! Name templates, shared by every sink: `cdc-{table}`, `{schema}.{table}`,
//! `inventory:{product_id}`. Parsed and checked once at start-up (route targets, `index`, `key`),
//! rendered per table or row.

use crate::TableRef;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    /// `{schema}`: the source table's schema.
    Schema,
    /// `{table}`: the source table's name.
    Table,
    /// Any other `{name}`: what it means is the sink's (a key column, `{pk}`).
    Field(String),
}

/// A template that cannot be used; each says which template and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed `{{` in {template:?}")]
    Unclosed { template: String },
    #[error("empty `{{}}` in {template:?}")]
    Empty { template: String },
    #[error(
        "{template:?} has a placeholder {{{name}}}: only {{schema}} and {{table}} are replaced"
    )]
    Placeholder { template: String, name: String },
    /// The sink names nothing from templates.
    #[error("sink {sink:?} does not take a route target (got {template:?})")]
    NotTaken { sink: String, template: String },
    /// A rule of the store's: what it names, and why it cannot.
    #[error("{template:?} {reason}")]
    Refused {
        template: String,
        reason: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| TemplateError::Unclosed {
                    template: text.to_string(),
                })?
                + open;
            parts.push(match &rest[open + 1..close] {
                "" => {
                    return Err(TemplateError::Empty {
                        template: text.to_string(),
                    });
                }
                "schema" => Part::Schema,
                "table" => Part::Table,
                name => Part::Field(name.to_string()),
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Self {
            text: text.to_string(),
            parts,
        })
    }

    /// Parses a template that names a table-level thing (a table, an index): `{schema}` and
    /// `{table}` only.
    pub fn parse_table_level(text: &str) -> Result<Self, TemplateError> {
        let t = Self::parse(text)?;
        if let Some(name) = t.fields().next() {
            return Err(TemplateError::Placeholder {
                template: text.to_string(),
                name: name.to_string(),
            });
        }
        Ok(t)
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The names of the `{field}` placeholders, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f) => Some(f.as_str()),
            _ => None,
        })
    }

    /// The store's own rule refused this template.
    pub fn refused(&self, reason: &'static str) -> TemplateError {
        TemplateError::Refused {
            template: self.text.clone(),
            reason,
        }
    }

    /// The template with `{schema}` and `{table}` replaced; `field` writes any other placeholder.
    pub fn render<E>(
        &self,
        table: &TableRef,
        mut field: impl FnMut(&str, &mut String) -> Result<(), E>,
    ) -> Result<String, E> {
        let mut out = String::with_capacity(self.text.len() + table.name.len());
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Schema => out.push_str(&table.namespace),
                Part::Table => out.push_str(&table.name),
                Part::Field(f) => field(f, &mut out)?,
            }
        }
        Ok(out)
    }

    /// The template with `{schema}` and `{table}` replaced, for table-level templates (any other
    /// placeholder is kept as written).
    pub fn render_table(&self, table: &TableRef) -> String {
        let kept = self.render(table, |f, out| {
            out.push('{');
            out.push_str(f);
            out.push('}');
            Ok::<(), std::convert::Infallible>(())
        });
        match kept {
            Ok(s) => s,
            Err(never) => match never {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_render_and_say_what_is_wrong() {
        let table = TableRef::new("public", "orders");
        let t = Template::parse("cdc-{schema}.{table}:{id}").unwrap();
        assert_eq!(t.fields().collect::<Vec<_>>(), vec!["id"]);
        let key = t
            .render(&table, |f, out| {
                out.push_str(&f.to_uppercase());
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(key, "cdc-public.orders:ID");
        assert_eq!(
            Template::parse_table_level("{table}_copy")
                .unwrap()
                .render_table(&table),
            "orders_copy"
        );
        assert_eq!(
            Template::parse("a:{b").unwrap_err(),
            TemplateError::Unclosed {
                template: "a:{b".into()
            }
        );
        assert!(matches!(
            Template::parse("a{}").unwrap_err(),
            TemplateError::Empty { .. }
        ));
        let err = Template::parse_table_level("{table}-{id}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"{table}-{id}\" has a placeholder {id}: only {schema} and {table} are replaced"
        );
    }
}
