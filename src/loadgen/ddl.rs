//! The seed's schema as SQL text: the `transactions` table, REPLICA IDENTITY FULL, the audit
//! columns and the two BEFORE UPDATE triggers, written so that running it again changes nothing.

use crate::verify::quote_ident;

/// `public."table"`: the seed's tables live in schema `public`.
pub(super) fn qualified(table: &str) -> String {
    format!("public.{}", quote_ident(table))
}

/// The seed's DDL for `table`, in order. Idempotent (IF NOT EXISTS, CREATE OR REPLACE, triggers
/// dropped and created again), so `--setup` can run against a table that is already set up.
///
/// The trigger functions keep the seed's names and bodies; they read only NEW and OLD, so one pair
/// serves every table. Concurrent setups replacing the same function can fail with "tuple
/// concurrently updated": run these inside one transaction after [`SETUP_LOCK_SQL`], as `run` does.
pub fn create_table_sql(table: &str) -> Vec<String> {
    let t = qualified(table);
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (transaction_id varchar(255) PRIMARY KEY, user_id varchar(255), \
             \"timestamp\" timestamp, amount decimal, currency varchar(255), city varchar(255), \
             country varchar(255), merchant_name varchar(255), payment_method varchar(255), \
             ip_address varchar(255), voucher_code varchar(255), affiliate_id varchar(255))"
        ),
        format!("ALTER TABLE {t} REPLICA IDENTITY FULL"),
        format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS modified_by TEXT"),
        format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS modified_at TIMESTAMP"),
        format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS change_info JSONB"),
        "CREATE OR REPLACE FUNCTION public.record_change_user() RETURNS TRIGGER AS $$\n\
         BEGIN\n  NEW.modified_by := current_user;\n  NEW.modified_at := CURRENT_TIMESTAMP;\n  RETURN NEW;\nEND;\n\
         $$ LANGUAGE plpgsql"
            .to_string(),
        format!("DROP TRIGGER IF EXISTS trigger_record_user_update ON {t}"),
        format!(
            "CREATE TRIGGER trigger_record_user_update BEFORE UPDATE ON {t} \
             FOR EACH ROW EXECUTE FUNCTION public.record_change_user()"
        ),
        "CREATE OR REPLACE FUNCTION public.record_changed_columns() RETURNS TRIGGER AS $$\n\
         DECLARE change_details JSONB;\n\
         BEGIN\n\
         \x20 change_details := '{}'::JSONB;\n\
         \x20 IF NEW.amount IS DISTINCT FROM OLD.amount THEN\n\
         \x20   change_details := jsonb_insert(change_details, '{amount}', jsonb_build_object('old', OLD.amount, 'new', NEW.amount));\n\
         \x20 END IF;\n\
         \x20 change_details := change_details || jsonb_build_object('modified_by', current_user, 'modified_at', now());\n\
         \x20 NEW.change_info := change_details;\n\
         \x20 RETURN NEW;\n\
         END;\n\
         $$ LANGUAGE plpgsql"
            .to_string(),
        format!("DROP TRIGGER IF EXISTS trigger_record_change_info ON {t}"),
        format!(
            "CREATE TRIGGER trigger_record_change_info BEFORE UPDATE ON {t} \
             FOR EACH ROW EXECUTE FUNCTION public.record_changed_columns()"
        ),
    ]
}

/// `DROP TABLE IF EXISTS` for `table`, for a fresh start.
pub fn drop_table_sql(table: &str) -> String {
    format!("DROP TABLE IF EXISTS {}", qualified(table))
}

/// Run first in a setup transaction: serialises setups until commit. The key is arbitrary but
/// fixed (the ASCII of "ripplelg").
pub const SETUP_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock(8244244221035637863)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_the_table_and_the_timestamp_column() {
        let ddl = create_table_sql("Weird \"name\"");
        assert!(
            ddl[0].contains("public.\"Weird \"\"name\"\"\""),
            "{}",
            ddl[0]
        );
        assert!(ddl[0].contains("\"timestamp\" timestamp"));
        assert!(
            ddl[0].contains("amount decimal,"),
            "the seed's unscaled decimal: {}",
            ddl[0]
        );
        assert!(ddl.iter().all(|s| !s.contains("\"Weird \"name\"")));
        assert_eq!(
            drop_table_sql("a\"b"),
            "DROP TABLE IF EXISTS public.\"a\"\"b\""
        );
    }

    #[test]
    fn is_idempotent_and_keeps_the_seed_trigger_names() {
        let ddl = create_table_sql("transactions");
        assert!(ddl[0].starts_with("CREATE TABLE IF NOT EXISTS "));
        for stmt in &ddl {
            assert!(
                stmt.contains("IF NOT EXISTS")
                    || stmt.contains("IF EXISTS")
                    || stmt.starts_with("CREATE OR REPLACE")
                    || stmt.starts_with("CREATE TRIGGER")
                    || stmt.contains("REPLICA IDENTITY FULL"),
                "not repeatable: {stmt}"
            );
        }
        // Each trigger is created right after it is dropped, so a second setup does not fail.
        for name in ["trigger_record_user_update", "trigger_record_change_info"] {
            let drop = ddl
                .iter()
                .position(|s| s.starts_with("DROP TRIGGER IF EXISTS") && s.contains(name));
            let create = ddl
                .iter()
                .position(|s| s.starts_with("CREATE TRIGGER") && s.contains(name));
            assert_eq!(drop.map(|d| d + 1), create, "{name}");
        }
        let all = ddl.join("\n");
        assert!(all.contains("FUNCTION public.record_change_user()"));
        assert!(all.contains("FUNCTION public.record_changed_columns()"));
        assert!(
            all.contains("'{amount}'"),
            "the jsonb path stays a literal brace pair"
        );
    }
}
