//! SQL text helpers: the one identifier-quoting function, and mapping database errors to retriable
//! or permanent sink errors.

use ripple_sink::SinkError;

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

/// Classifies a database error. Connection trouble, lock conflicts and resource exhaustion are worth
/// retrying; rejected data and broken statements are not.
pub fn classify(err: sqlx::Error, doing: &str) -> SinkError {
    let message = format!("postgres {doing}: {err}");
    let retriable = match &err {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            // 08 connection, 40 transaction rollback (serialization, deadlock), 53 resources,
            // 57 operator intervention (shutdown), 58 system error.
            matches!(&code.get(..2), Some("08" | "40" | "53" | "57" | "58"))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        _ => false,
    };
    let e = if retriable {
        SinkError::retriable(message)
    } else {
        SinkError::permanent(message)
    };
    e.with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;

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
