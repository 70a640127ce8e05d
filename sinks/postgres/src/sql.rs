//! SQL text helpers: the one identifier-quoting function, qualified names and literals.

/// Quotes an identifier for PostgreSQL: always double-quoted, embedded quotes doubled, so any name
/// (mixed case, spaces, reserved words, quotes) is taken literally and can never inject SQL.
pub fn ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", ident(schema), ident(table))
}

/// A SQL string literal holding `text`, whatever `standard_conforming_strings` says.
pub fn literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_quoted() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"a\b'c"), r"E'a\\b''c'");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(ident("timestamp"), "\"timestamp\"");
        assert_eq!(ident("Mixed Case"), "\"Mixed Case\"");
        assert_eq!(
            ident("a\"; DROP TABLE x; --"),
            "\"a\"\"; DROP TABLE x; --\""
        );
        assert_eq!(qualified("public", "t"), "\"public\".\"t\"");
    }
}
