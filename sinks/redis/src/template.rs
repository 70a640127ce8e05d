//! Key templates: `inventory:{product_id}` becomes `inventory:42` for the row whose key is 42.
//! The parsing is the shared [`Template`]'s; what a `{field}` means (a key column, or `{pk}`) is
//! Redis's.

use ripple_sink::{ChangeEvent, SinkError, Template, TemplateError};

#[derive(Debug, Clone)]
pub struct KeyTemplate(Template);

impl KeyTemplate {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let template = Template::parse(text)?;
        if template.fields().next().is_none() {
            return Err(
                template.refused("names no key column: every row would share one key (use {pk})")
            );
        }
        Ok(Self(template))
    }

    /// The key for an event. Only key columns may be used: a delete carries nothing else. `{pk}`
    /// is every key column, joined by `:`.
    pub fn render(&self, event: &ChangeEvent) -> Result<String, SinkError> {
        let schema = &event.schema;
        self.0.render(&schema.table, |field, out| {
            if field == "pk" {
                for (i, v) in event.key.iter().enumerate() {
                    if i > 0 {
                        out.push(':');
                    }
                    out.push_str(&ripple_sink::to_text(v).unwrap_or_default());
                }
                return Ok(());
            }
            let pos = schema
                .key
                .iter()
                .position(|&i| schema.columns[i].name == field)
                .ok_or_else(|| {
                    SinkError::permanent(format!(
                        "the key template names column {field:?}, which is not a primary-key column of {}",
                        schema.table
                    ))
                })?;
            out.push_str(&ripple_sink::to_text(&event.key[pos]).unwrap_or_default());
            Ok(())
        })
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
                .to_string()
                .contains("no key column")
        );
        assert!(matches!(
            KeyTemplate::parse("a:{b").unwrap_err(),
            TemplateError::Unclosed { .. }
        ));
    }
}
