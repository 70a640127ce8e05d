//! Redis's errors, classified: connection trouble, a read-only replica, OOM, a busy or loading
//! server and missing permissions are outages (retried); a command a key's data refuses is
//! permanent.

use ripple_sink::SinkError;

/// Connection trouble and a busy or loading server are worth retrying; a rejected command is not.
/// Whether Redis refused because of its own state, not the data: unreachable, loading, out of
/// memory under `noeviction`, a read-only replica after failover, a login or ACL refusal, a busy
/// script, failing persistence (MISCONF), a cluster without its master. Retried without end; what
/// is left (a key of another type, a script's own error) belongs to the event.
pub(crate) fn is_outage(err: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind as S};
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || matches!(
            err.kind(),
            ErrorKind::AuthenticationFailed
                | ErrorKind::Server(
                    S::BusyLoading
                        | S::TryAgain
                        | S::ClusterDown
                        | S::MasterDown
                        | S::ReadOnly
                        | S::NoPerm
                )
        )
        || err.code().is_some_and(|code| OUTAGE_CODES.contains(&code))
        || {
            // A transaction or pipeline reports its commands' errors inside its own (EXECABORT),
            // each code quoted, and a script's failed call names the code in its detail.
            let text = err.to_string();
            OUTAGE_CODES.iter().any(|c| {
                text.contains(&format!("\"{c}\""))
                    || text.contains(&format!("{c} command not allowed"))
            }) || text.contains("READONLY You can't write")
        }
}

/// Error codes of a Redis that cannot take writes now.
const OUTAGE_CODES: &[&str] = &[
    "OOM",
    "MISCONF",
    "NOAUTH",
    "WRONGPASS",
    "NOPERM",
    "BUSY",
    "READONLY",
    "LOADING",
    "MASTERDOWN",
    "NOREPLICAS",
    "CLUSTERDOWN",
    "TRYAGAIN",
    // A node that lost its script cache (a replica promoted, a restart): the batch is sent again
    // after the script is loaded.
    "NOSCRIPT",
    // Slots moving between nodes, or a cluster written to as one Redis (see `classify`).
    "MOVED",
    "ASK",
];

pub(crate) fn classify(err: redis::RedisError, doing: &str) -> SinkError {
    let mut message = format!("redis {doing}: {err}");
    // An aborted transaction lists every command's error, the same one a thousand times over.
    const LONGEST: usize = 400;
    if message.len() > LONGEST {
        let cut = (0..=LONGEST)
            .rev()
            .find(|&i| message.is_char_boundary(i))
            .unwrap_or(0);
        let more = message.len() - cut;
        message.truncate(cut);
        message.push_str(&format!("… ({more} more bytes)"));
    }
    if err.code() == Some("MOVED") {
        message.push_str(" (the url is a node of a Redis Cluster: set cluster = true)");
    }
    let retriable = is_outage(&err);
    let e = if retriable {
        SinkError::retriable(message)
    } else {
        SinkError::permanent(message)
    };
    e.with_source(err)
}
