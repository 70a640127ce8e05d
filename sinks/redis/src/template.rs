//! Key templates: `inventory:{product_id}` becomes `inventory:42` for the row whose key is 42.

use ripple_sink::ChangeEvent;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Schema,
    Table,
    /// Every key column, joined by `:`.
    Pk,
    Column(String),
}

#[derive(Debug, Clone)]
pub struct KeyTemplate {
    parts: Vec<Part>,
}

impl KeyTemplate {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in {text:?}"))?
                + open;
            let name = &rest[open + 1..close];
            parts.push(match name {
                "" => return Err(format!("empty `{{}}` in {text:?}")),
                "schema" => Part::Schema,
                "table" => Part::Table,
                "pk" => Part::Pk,
                column => Part::Column(column.to_string()),
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        if !parts
            .iter()
            .any(|p| matches!(p, Part::Pk | Part::Column(_)))
        {
            return Err(format!(
                "{text:?} names no key column: every row would share one key (use {{pk}})"
            ));
        }
        Ok(Self { parts })
    }

    /// The key for an event. Only key columns may be used: a delete carries nothing else.
    pub fn render(&self, event: &ChangeEvent) -> Result<String, String> {
        let schema = &event.schema;
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Schema => out.push_str(&schema.table.namespace),
                Part::Table => out.push_str(&schema.table.name),
                Part::Pk => {
                    let texts: Vec<String> = event
                        .key
                        .iter()
                        .map(|v| ripple_sink::to_text(v).unwrap_or_default())
                        .collect();
                    out.push_str(&texts.join(":"));
                }
                Part::Column(name) => {
                    let pos = schema.key.iter().position(|&i| schema.columns[i].name == *name).ok_or_else(|| {
                        format!(
                            "the key template names column {name:?}, which is not a primary-key column of {}",
                            schema.table
                        )
                    })?;
                    out.push_str(&ripple_sink::to_text(&event.key[pos]).unwrap_or_default());
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        assert!(KeyTemplate::parse("inventory:{product_id}").is_ok());
        assert!(KeyTemplate::parse("{table}:{pk}").is_ok());
        assert!(
            KeyTemplate::parse("fixed")
                .unwrap_err()
                .contains("no key column")
        );
        assert!(KeyTemplate::parse("a:{b").unwrap_err().contains("unclosed"));
    }
}
