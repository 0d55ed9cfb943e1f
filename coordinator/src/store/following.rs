//! Which partner holds which champion (schema version 5, table
//! `partner_models`): one row per (partner, target), the version and model
//! fingerprint the partner last acknowledged (see `crate::follow`).
//!
//! A row is written when the partner acknowledges a champion it wrote; it is
//! what `model show` lists as the partners holding a version. It is a record,
//! not a commitment: which champion a partner *should* hold is always the
//! registry's champion, and a partner whose copy differs is sent it again
//! when it connects.

use rusqlite::params;

use super::{Store, StoreError};

/// Version 5: the partners' acknowledged copies of the champions.
pub(super) const MIGRATION_5: &str = "
CREATE TABLE partner_models (
    client_id       TEXT NOT NULL CHECK (length(client_id) > 0),
    target          TEXT NOT NULL CHECK (length(target) > 0),
    version         INTEGER NOT NULL CHECK (version >= 1),
    fingerprint     TEXT NOT NULL,
    acknowledged_at TEXT NOT NULL,
    PRIMARY KEY (client_id, target)
) WITHOUT ROWID;
";

/// A partner's acknowledged copy of a target's champion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerModelRow {
    /// The partner.
    pub client_id: String,
    /// The target.
    pub target: String,
    /// The version it wrote.
    pub version: u32,
    /// SHA-256 of the model file it wrote.
    pub fingerprint: String,
    /// When it acknowledged it.
    pub acknowledged_at: String,
}

impl Store {
    /// Records that `row.client_id` holds `row.version` of `row.target`
    /// (replacing what it held before).
    pub fn record_partner_model(&self, row: &PartnerModelRow) -> Result<(), StoreError> {
        self.write(
            || {
                format!(
                    "record that {} holds {}@{}",
                    row.client_id, row.target, row.version
                )
            },
            |conn| {
                conn.execute(
                    "INSERT INTO partner_models (client_id, target, version, fingerprint, acknowledged_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (client_id, target) DO UPDATE SET
                       version = excluded.version, fingerprint = excluded.fingerprint,
                       acknowledged_at = excluded.acknowledged_at",
                    params![
                        row.client_id,
                        row.target,
                        row.version,
                        row.fingerprint,
                        row.acknowledged_at
                    ],
                )?;
                Ok(())
            },
        )
    }

    /// The partners whose acknowledged copy of `target` is `version`, by id.
    pub fn partners_holding(
        &self,
        target: &str,
        version: u32,
    ) -> Result<Vec<PartnerModelRow>, StoreError> {
        self.with(
            || format!("list the partners holding {target}@{version}"),
            |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT client_id, target, version, fingerprint, acknowledged_at
                     FROM partner_models WHERE target = ?1 AND version = ?2 ORDER BY client_id",
                )?;
                let rows = stmt.query_map(params![target, version], |r| {
                    Ok(PartnerModelRow {
                        client_id: r.get(0)?,
                        target: r.get(1)?,
                        version: r.get(2)?,
                        fingerprint: r.get(3)?,
                        acknowledged_at: r.get(4)?,
                    })
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partner_holds_one_version_per_target() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let row = |client: &str, version| PartnerModelRow {
            client_id: client.into(),
            target: "churn".into(),
            version,
            fingerprint: format!("f{version}"),
            acknowledged_at: "t".into(),
        };
        store.record_partner_model(&row("b", 1)).unwrap();
        store.record_partner_model(&row("a", 1)).unwrap();
        store.record_partner_model(&row("a", 2)).unwrap();
        let one: Vec<String> = store
            .partners_holding("churn", 1)
            .unwrap()
            .into_iter()
            .map(|r| r.client_id)
            .collect();
        assert_eq!(one, ["b"]);
        assert_eq!(store.partners_holding("churn", 2).unwrap(), [row("a", 2)]);
        assert!(store.partners_holding("other", 1).unwrap().is_empty());
    }

    #[test]
    fn a_database_of_schema_version_4_opens_with_no_partner_models() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let mut conn = rusqlite::Connection::open(&path).unwrap();
            super::super::migrate(&mut conn, &super::super::MIGRATIONS[..4]).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.schema_version().unwrap(),
            super::super::SCHEMA_VERSION
        );
        assert!(store.partners_holding("churn", 1).unwrap().is_empty());
    }
}
