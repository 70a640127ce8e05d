//! The replica's errors, classified: connection trouble, lock conflicts, resource exhaustion and
//! missing privileges are outages (retried); rejected data and broken statements are permanent.

use ripple_sink::SinkError;

/// Classifies a database error. Connection trouble, lock conflicts and resource exhaustion are worth
/// retrying; rejected data and broken statements are not.
pub fn classify(err: sqlx::Error, doing: &str) -> SinkError {
    let message = format!("postgres {doing}: {err}");
    let retriable = match &err {
        sqlx::Error::Database(db) => {
            is_outage(&db.code().map(|c| c.to_string()).unwrap_or_default())
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

/// Whether a SQLSTATE says the database cannot take writes now, whatever the data: such a failure
/// is retried until it passes, never dead-lettered. Everything else (a constraint, a value out of
/// range, a type the column refuses) belongs to the rows sent.
pub fn is_outage(sqlstate: &str) -> bool {
    sqlstate
        .get(..2)
        .is_some_and(|class| OUTAGE_CLASSES.contains(&class))
        || OUTAGE_CODES.contains(&sqlstate)
}

/// 08 connection, 40 transaction rollback (serialization, deadlock), 53 resources (disk full, out
/// of memory, too many connections), 57 operator intervention (shutdown, cancel), 58 system error,
/// XX internal error, 28 authentication.
const OUTAGE_CLASSES: &[&str] = &["08", "40", "53", "57", "58", "XX", "28"];

/// A read-only database (a standby after failover, default_transaction_read_only), a privilege
/// taken away, the database, schema or table gone, a lock not granted, an idle-session timeout.
const OUTAGE_CODES: &[&str] = &[
    "25006", "42501", "3D000", "3F000", "42P01", "55P03", "55006", "25P03",
];

/// `is_outage` as a PL/pgSQL condition on `state` (e.g. `SQLSTATE` in an exception handler), so a
/// row-by-row write re-raises outages instead of taking them for a refused row.
pub fn outage_condition(state: &str) -> String {
    let list = |codes: &[&str]| {
        codes
            .iter()
            .map(|c| format!("'{c}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "(left({state}, 2) IN ({}) OR {state} IN ({}))",
        list(OUTAGE_CLASSES),
        list(OUTAGE_CODES)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_told_from_bad_rows() {
        for code in [
            "08006", "40001", "40P01", "53100", "57P01", "25006", "42501", "28P01", "3D000",
            "42P01", "XX000",
        ] {
            assert!(is_outage(code), "{code}");
        }
        // Constraint, check, not-null, value too long, invalid text, numeric out of range.
        for code in [
            "23505", "23514", "23502", "22001", "22P02", "22003", "42804",
        ] {
            assert!(!is_outage(code), "{code}");
        }
    }
}
