//! The model registry: every finished run that produced a model registers a
//! *version* of its target (schema version 4, table `model_versions`).
//!
//! - A version is numbered per target (1, 2, …) and holds the run id, the
//!   family, the pooled metrics of the run's last evaluation, the ε the run
//!   reported, the federation's data fingerprint, the parent version (the
//!   champion an update run warm-started from), the model file itself (the
//!   `model.json` text, so the registry does not depend on the run folders),
//!   its status and the reason for it.
//! - At most one version per target is the `champion` (a partial unique
//!   index enforces it); the others are `challenger-rejected` (never
//!   champion, or an update run that lost) or `retired` (a former champion).
//! - **Registration is atomic with the run's finish**: [`Store::finish_run`]
//!   moves the run to its terminal state *and* registers its version (and, on
//!   a promotion, retires the former champion) in one SQLite transaction. After
//!   a crash either the run is still running and no version exists, or the run
//!   is finished and its version and the champion change are durable; a
//!   promotion is never half done.
//! - An update run is promoted only over the champion it was compared with
//!   (its parent): if the champion changed while it ran (an operator promoted
//!   or rolled back), it is registered as a rejected challenger, saying so.
//! - [`Store::promote`] and [`Store::rollback`] change the champion in one
//!   transaction each. A version that becomes champion records the champion
//!   it replaced (`replaced_version`); a rollback retires the champion and
//!   restores the one it replaced, so repeated rollbacks walk back through
//!   the champions in the order they were promoted, and a rollback past the
//!   first champion is refused.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::{Fail, Problem, RunState, Store, StoreError};

/// Version 4: the model registry (see the module doc of `store::registry`).
pub(super) const MIGRATION_4: &str = "
CREATE TABLE model_versions (
    target           TEXT NOT NULL CHECK (length(target) > 0),
    version          INTEGER NOT NULL CHECK (version >= 1),
    run_id           TEXT NOT NULL UNIQUE REFERENCES runs (id),
    family           TEXT NOT NULL,
    metrics_json     TEXT NOT NULL CONSTRAINT metrics_is_json CHECK (json_valid(metrics_json)),
    epsilon          REAL,
    data_fingerprint TEXT NOT NULL,
    parent_version   INTEGER,
    model_json       TEXT NOT NULL CONSTRAINT model_is_json CHECK (json_valid(model_json)),
    status           TEXT NOT NULL
                     CHECK (status IN ('champion', 'challenger-rejected', 'retired')),
    reason           TEXT NOT NULL,
    replaced_version INTEGER,
    decision_json    TEXT CONSTRAINT decision_is_json CHECK (decision_json IS NULL OR json_valid(decision_json)),
    registered_at    TEXT NOT NULL,
    PRIMARY KEY (target, version)
) WITHOUT ROWID;
CREATE UNIQUE INDEX one_champion_per_target ON model_versions (target) WHERE status = 'champion';
";

const VERSION_COLUMNS: &str = "target, version, run_id, family, metrics_json, epsilon, \
     data_fingerprint, parent_version, model_json, status, reason, replaced_version, \
     decision_json, registered_at";

/// The status of a model version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelStatus {
    /// The version in use for its target (at most one per target).
    Champion,
    /// Never promoted (an update run that was not better, or not yet promoted).
    ChallengerRejected,
    /// A former champion.
    Retired,
}

impl ModelStatus {
    /// The name stored and shown: "champion", "challenger-rejected", "retired".
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Champion => "champion",
            ModelStatus::ChallengerRejected => "challenger-rejected",
            ModelStatus::Retired => "retired",
        }
    }
}

impl fmt::Display for ModelStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ModelStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ModelStatus::Champion,
            ModelStatus::ChallengerRejected,
            ModelStatus::Retired,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
        .ok_or_else(|| format!("'{s}' is not a model status"))
    }
}

impl ToSql for ModelStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for ModelStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e: String| FromSqlError::Other(e.into()))
    }
}

/// A version to register with a run's finish ([`Store::finish_run`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewVersion<'a> {
    /// The target (the model's label column; a k-means model's run name).
    pub target: &'a str,
    /// The model family's name.
    pub family: &'a str,
    /// Pooled metrics of the run's last evaluation, as JSON.
    pub metrics_json: &'a str,
    /// The ε the run reported (none without DP).
    pub epsilon: Option<f64>,
    /// Fingerprint of the federation's data the run trained on.
    pub data_fingerprint: &'a str,
    /// The champion the run warm-started from (an update run).
    pub parent_version: Option<u32>,
    /// The model file (`model.json` text).
    pub model_json: &'a str,
    /// Champion (`true`) or rejected challenger. The first version of a
    /// target becomes champion whatever this says.
    pub promote: bool,
    /// Why (a sentence, shown by `model list` and `run status`).
    pub reason: &'a str,
    /// The champion/challenger comparison of an update run, as JSON.
    pub decision_json: Option<&'a str>,
}

/// A registered model version.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersionRow {
    /// The target.
    pub target: String,
    /// Its number within the target, from 1.
    pub version: u32,
    /// The run that trained it.
    pub run_id: String,
    /// The model family.
    pub family: String,
    /// Pooled metrics of its run's last evaluation, as JSON.
    pub metrics_json: String,
    /// ε its run reported.
    pub epsilon: Option<f64>,
    /// The federation's data fingerprint.
    pub data_fingerprint: String,
    /// The champion its run warm-started from.
    pub parent_version: Option<u32>,
    /// The model file.
    pub model_json: String,
    /// Its status.
    pub status: ModelStatus,
    /// Why it has that status.
    pub reason: String,
    /// The champion it replaced when it last became champion.
    pub replaced_version: Option<u32>,
    /// The champion/challenger comparison of its update run, as JSON.
    pub decision_json: Option<String>,
    /// When it was registered.
    pub registered_at: String,
}

impl ModelVersionRow {
    /// `target@version`, as the CLI names it.
    pub fn name(&self) -> String {
        format!("{}@{}", self.target, self.version)
    }
}

/// A change of champion ([`Store::promote`], [`Store::rollback`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChampionChange {
    /// The champion before (none if the target had none).
    pub from: Option<u32>,
    /// The champion after.
    pub to: u32,
}

fn version_row(r: &Row<'_>) -> rusqlite::Result<ModelVersionRow> {
    Ok(ModelVersionRow {
        target: r.get(0)?,
        version: r.get(1)?,
        run_id: r.get(2)?,
        family: r.get(3)?,
        metrics_json: r.get(4)?,
        epsilon: r.get(5)?,
        data_fingerprint: r.get(6)?,
        parent_version: r.get(7)?,
        model_json: r.get(8)?,
        status: r.get(9)?,
        reason: r.get(10)?,
        replaced_version: r.get(11)?,
        decision_json: r.get(12)?,
        registered_at: r.get(13)?,
    })
}

/// The current champion's version and the champion it replaced.
fn champion_of(tx: &Transaction<'_>, target: &str) -> rusqlite::Result<Option<(u32, Option<u32>)>> {
    tx.query_row(
        "SELECT version, replaced_version FROM model_versions
         WHERE target = ?1 AND status = 'champion'",
        [target],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

fn target_exists(tx: &Transaction<'_>, target: &str) -> rusqlite::Result<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM model_versions WHERE target = ?1 LIMIT 1",
            [target],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn retire(tx: &Transaction<'_>, target: &str, version: u32, reason: &str) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE model_versions SET status = 'retired', reason = ?3
         WHERE target = ?1 AND version = ?2",
        params![target, version, reason],
    )?;
    Ok(())
}

impl Store {
    /// Moves a run to its terminal `state` (as [`Store::set_run_state`]) and,
    /// when `version` is given, registers it, in one transaction (see the
    /// module doc). Returns the registered version's number and whether it
    /// became champion. Nothing is written when any part is refused or fails.
    pub fn finish_run(
        &self,
        id: &str,
        state: RunState,
        at: &str,
        failure: Option<&str>,
        version: Option<&NewVersion<'_>>,
    ) -> Result<Option<(u32, bool)>, StoreError> {
        self.write(
            || format!("finish run '{id}' as {state}"),
            |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                Store::set_state_in(&tx, id, state, at, failure)?;
                let registered = match version {
                    None => None,
                    Some(v) => Some(Store::register_in(&tx, id, at, v)?),
                };
                tx.commit()?;
                Ok(registered)
            },
        )
    }

    fn register_in(
        tx: &Transaction<'_>,
        run_id: &str,
        at: &str,
        v: &NewVersion<'_>,
    ) -> Result<(u32, bool), Fail> {
        let number: u32 = tx.query_row(
            "SELECT coalesce(max(version), 0) + 1 FROM model_versions WHERE target = ?1",
            [v.target],
            |r| r.get(0),
        )?;
        let champion = champion_of(tx, v.target)?;
        let current = champion.map(|(c, _)| c);
        // An update run beat the champion it started from; if an operator
        // changed the champion meanwhile, that comparison no longer holds.
        let changed = v.promote && v.parent_version.is_some() && current != v.parent_version;
        let promote = (v.promote && !changed) || champion.is_none();
        let reason = match (changed, current) {
            (true, Some(now)) => format!(
                "{}; but the champion changed during the run (it is now {}@{now}), so it is not promoted",
                v.reason, v.target
            ),
            _ => v.reason.to_string(),
        };
        let (status, replaced) = if promote {
            if let Some((old, _)) = champion {
                retire(
                    tx,
                    v.target,
                    old,
                    &format!("replaced by version {number} (run {run_id})"),
                )?;
            }
            (ModelStatus::Champion, champion.map(|(old, _)| old))
        } else {
            (ModelStatus::ChallengerRejected, None)
        };
        tx.execute(
            &format!(
                "INSERT INTO model_versions ({VERSION_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ),
            params![
                v.target,
                number,
                run_id,
                v.family,
                v.metrics_json,
                v.epsilon,
                v.data_fingerprint,
                v.parent_version,
                v.model_json,
                status,
                reason,
                replaced,
                v.decision_json,
                at
            ],
        )?;
        Ok((number, promote))
    }

    /// Every version (of `target`, or of all targets), by target then version.
    pub fn model_versions(&self, target: Option<&str>) -> Result<Vec<ModelVersionRow>, StoreError> {
        self.with(
            || "list model versions".into(),
            |conn| {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS} FROM model_versions
                     WHERE ?1 IS NULL OR target = ?1 ORDER BY target, version"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map([target], version_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            },
        )
    }

    /// One version; `None` if the target has no such version.
    pub fn model_version(
        &self,
        target: &str,
        version: u32,
    ) -> Result<Option<ModelVersionRow>, StoreError> {
        self.with(
            || format!("read model version {target}@{version}"),
            |conn| {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS} FROM model_versions WHERE target = ?1 AND version = ?2"
                );
                Ok(conn
                    .query_row(&sql, params![target, version], version_row)
                    .optional()?)
            },
        )
    }

    /// The version a run registered, if any.
    pub fn model_version_of_run(
        &self,
        run_id: &str,
    ) -> Result<Option<ModelVersionRow>, StoreError> {
        self.with(
            || format!("read the model version of run '{run_id}'"),
            |conn| {
                let sql = format!("SELECT {VERSION_COLUMNS} FROM model_versions WHERE run_id = ?1");
                Ok(conn.query_row(&sql, [run_id], version_row).optional()?)
            },
        )
    }

    /// The champion of `target`, if it has one.
    pub fn champion(&self, target: &str) -> Result<Option<ModelVersionRow>, StoreError> {
        self.with(
            || format!("read the champion of '{target}'"),
            |conn| {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS} FROM model_versions
                     WHERE target = ?1 AND status = 'champion'"
                );
                Ok(conn.query_row(&sql, [target], version_row).optional()?)
            },
        )
    }

    /// Makes `target@version` the champion (the former champion is retired),
    /// with the operator's `reason`. Refused: an unknown target or version, a
    /// version that is champion already.
    pub fn promote(
        &self,
        target: &str,
        version: u32,
        reason: &str,
    ) -> Result<ChampionChange, StoreError> {
        self.write(
            || format!("promote {target}@{version}"),
            |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if !target_exists(&tx, target)? {
                    return Err(Problem::UnknownTarget(target.to_string()).into());
                }
                let exists = tx
                    .query_row(
                        "SELECT 1 FROM model_versions WHERE target = ?1 AND version = ?2",
                        params![target, version],
                        |_| Ok(()),
                    )
                    .optional()?;
                if exists.is_none() {
                    return Err(Problem::UnknownVersion(format!("{target}@{version}")).into());
                }
                let champion = champion_of(&tx, target)?;
                if let Some((old, _)) = champion {
                    if old == version {
                        return Err(Problem::AlreadyChampion(format!("{target}@{version}")).into());
                    }
                    retire(
                        &tx,
                        target,
                        old,
                        &format!("replaced by version {version}: {reason}"),
                    )?;
                }
                tx.execute(
                    "UPDATE model_versions SET status = 'champion', reason = ?3, replaced_version = ?4
                     WHERE target = ?1 AND version = ?2",
                    params![target, version, reason, champion.map(|(v, _)| v)],
                )?;
                tx.commit()?;
                Ok(ChampionChange {
                    from: champion.map(|(v, _)| v),
                    to: version,
                })
            },
        )
    }

    /// Retires the champion of `target` and makes the previous champion
    /// champion again (see the module doc), with the operator's `reason`.
    /// Refused: an unknown target, a target without champion, a champion
    /// that had no predecessor.
    pub fn rollback(&self, target: &str, reason: &str) -> Result<ChampionChange, StoreError> {
        self.write(
            || format!("roll back the champion of '{target}'"),
            |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if !target_exists(&tx, target)? {
                    return Err(Problem::UnknownTarget(target.to_string()).into());
                }
                let Some((current, previous)) = champion_of(&tx, target)? else {
                    return Err(
                        Problem::NothingToRollBack(format!("'{target}' has no champion")).into(),
                    );
                };
                let Some(previous) = previous else {
                    return Err(Problem::NothingToRollBack(format!(
                        "{target}@{current} is the first champion of '{target}'"
                    ))
                    .into());
                };
                retire(&tx, target, current, &format!("rolled back: {reason}"))?;
                tx.execute(
                    "UPDATE model_versions SET status = 'champion', reason = ?3
                     WHERE target = ?1 AND version = ?2",
                    params![
                        target,
                        previous,
                        format!("restored by rollback from version {current}: {reason}")
                    ],
                )?;
                tx.commit()?;
                Ok(ChampionChange {
                    from: Some(current),
                    to: previous,
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn store_with_runs(n: usize) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.sqlite")).unwrap();
        for i in 1..=n {
            let id = format!("r{i}");
            store.insert_run(&id, "n", "x = 1", 1, "t0").unwrap();
            store
                .set_run_state(&id, RunState::Running, "t1", None)
                .unwrap();
        }
        (dir, store)
    }

    fn version<'a>(target: &'a str, promote: bool, parent: Option<u32>) -> NewVersion<'a> {
        NewVersion {
            target,
            family: "logistic_regression",
            metrics_json: r#"{"auc":0.8}"#,
            epsilon: Some(1.5),
            data_fingerprint: "abc",
            parent_version: parent,
            model_json: r#"{"version":1}"#,
            promote,
            reason: "why",
            decision_json: None,
        }
    }

    fn finish(store: &Store, run: &str, v: &NewVersion<'_>) -> (u32, bool) {
        store
            .finish_run(run, RunState::Finished, "t2", None, Some(v))
            .unwrap()
            .unwrap()
    }

    fn statuses(store: &Store, target: &str) -> Vec<(u32, ModelStatus)> {
        store
            .model_versions(Some(target))
            .unwrap()
            .into_iter()
            .map(|r| (r.version, r.status))
            .collect()
    }

    use ModelStatus::{ChallengerRejected, Champion, Retired};

    #[test]
    fn the_first_version_is_champion_and_versions_count_per_target() {
        let (_dir, store) = store_with_runs(3);
        // Even when not asked to promote: a target without champion gets one.
        assert_eq!(
            finish(&store, "r1", &version("Churn", false, None)),
            (1, true)
        );
        assert_eq!(
            finish(&store, "r2", &version("Spend", true, None)),
            (1, true)
        );
        assert_eq!(
            finish(&store, "r3", &version("Churn", false, Some(1))),
            (2, false)
        );
        assert_eq!(
            statuses(&store, "Churn"),
            vec![(1, Champion), (2, ChallengerRejected)]
        );
        let v2 = store.model_version("Churn", 2).unwrap().unwrap();
        assert_eq!(v2.run_id, "r3");
        assert_eq!(v2.parent_version, Some(1));
        assert_eq!(v2.epsilon, Some(1.5));
        assert_eq!(v2.name(), "Churn@2");
        assert_eq!(
            store.model_version_of_run("r1").unwrap().unwrap().version,
            1
        );
        assert_eq!(store.run("r3").unwrap().unwrap().state, RunState::Finished);
    }

    #[test]
    fn a_promotion_at_finish_retires_the_champion_in_the_same_transaction() {
        let (_dir, store) = store_with_runs(2);
        finish(&store, "r1", &version("Churn", true, None));
        assert_eq!(
            finish(&store, "r2", &version("Churn", true, Some(1))),
            (2, true)
        );
        assert_eq!(statuses(&store, "Churn"), vec![(1, Retired), (2, Champion)]);
        assert_eq!(store.champion("Churn").unwrap().unwrap().version, 2);
    }

    #[test]
    fn an_update_is_not_promoted_over_a_champion_it_was_not_compared_with() {
        let (_dir, store) = store_with_runs(3);
        finish(&store, "r1", &version("Churn", true, None));
        finish(&store, "r2", &version("Churn", false, Some(1)));
        store.promote("Churn", 2, "by hand").unwrap();
        // r3 beat version 1, but version 2 is champion now.
        assert_eq!(
            finish(&store, "r3", &version("Churn", true, Some(1))),
            (3, false)
        );
        let v3 = store.model_version("Churn", 3).unwrap().unwrap();
        assert_eq!(v3.status, ChallengerRejected);
        assert!(
            v3.reason.ends_with(
                "but the champion changed during the run (it is now Churn@2), so it is not promoted"
            ),
            "{}",
            v3.reason
        );
        assert_eq!(store.champion("Churn").unwrap().unwrap().version, 2);
    }

    #[test]
    fn a_failed_registration_leaves_the_run_running_and_no_version() {
        let (_dir, store) = store_with_runs(2);
        finish(&store, "r1", &version("Churn", true, None));
        // The model file is not JSON: the insert fails after the run's state
        // and the champion's retirement were written in the transaction.
        let mut bad = version("Churn", true, Some(1));
        bad.model_json = "not json";
        let err = store
            .finish_run("r2", RunState::Finished, "t2", None, Some(&bad))
            .unwrap_err();
        assert!(err.to_string().contains("finish run 'r2'"), "{err}");
        assert_eq!(store.run("r2").unwrap().unwrap().state, RunState::Running);
        assert_eq!(statuses(&store, "Churn"), vec![(1, Champion)]);
        // A terminal run is refused, with nothing registered.
        let err = store
            .finish_run(
                "r1",
                RunState::Finished,
                "t3",
                None,
                Some(&version("Churn", true, None)),
            )
            .unwrap_err();
        assert!(
            matches!(err.problem(), Some(Problem::RunTerminal { .. })),
            "{err}"
        );
        assert_eq!(statuses(&store, "Churn"), vec![(1, Champion)]);
    }

    #[test]
    fn promote_and_rollback_walk_the_champions_back_in_order() {
        let (_dir, store) = store_with_runs(4);
        finish(&store, "r1", &version("Churn", true, None));
        finish(&store, "r2", &version("Churn", true, Some(1)));
        finish(&store, "r3", &version("Churn", false, Some(2)));
        finish(&store, "r4", &version("Churn", true, Some(2)));
        assert_eq!(
            statuses(&store, "Churn"),
            vec![
                (1, Retired),
                (2, Retired),
                (3, ChallengerRejected),
                (4, Champion)
            ]
        );
        let back = store.rollback("Churn", "v4 scores badly").unwrap();
        assert_eq!(
            back,
            ChampionChange {
                from: Some(4),
                to: 2
            }
        );
        let back = store.rollback("Churn", "again").unwrap();
        assert_eq!(
            back,
            ChampionChange {
                from: Some(2),
                to: 1
            }
        );
        let err = store.rollback("Churn", "once more").unwrap_err();
        assert!(
            matches!(err.problem(), Some(Problem::NothingToRollBack(_))),
            "{err}"
        );
        assert!(
            err.to_string().contains("Churn@1 is the first champion"),
            "{err}"
        );
        // An operator may promote a rejected challenger.
        let change = store.promote("Churn", 3, "reviewed by hand").unwrap();
        assert_eq!(
            change,
            ChampionChange {
                from: Some(1),
                to: 3
            }
        );
        assert_eq!(
            store.champion("Churn").unwrap().unwrap().reason,
            "reviewed by hand"
        );
        // Rolling back from it goes to the champion before it.
        assert_eq!(store.rollback("Churn", "no").unwrap().to, 1);
        let err = store.promote("Churn", 1, "x").unwrap_err();
        assert!(
            matches!(err.problem(), Some(Problem::AlreadyChampion(_))),
            "{err}"
        );
        let err = store.promote("Churn", 9, "x").unwrap_err();
        assert!(err.to_string().contains("Churn@9"), "{err}");
        let err = store.promote("Nope", 1, "x").unwrap_err();
        assert!(
            matches!(err.problem(), Some(Problem::UnknownTarget(_))),
            "{err}"
        );
        let err = store.rollback("Nope", "x").unwrap_err();
        assert!(
            matches!(err.problem(), Some(Problem::UnknownTarget(_))),
            "{err}"
        );
    }

    #[test]
    fn a_database_of_schema_version_3_opens_and_keeps_its_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            // Today's main: migrations 1 to 3 only.
            let mut conn = Connection::open(&path).unwrap();
            super::super::migrate(&mut conn, &super::super::MIGRATIONS[..3]).unwrap();
            conn.execute(
                "INSERT INTO runs (id, name, run_toml, state, rounds_planned, created_at)
                 VALUES ('old', 'n', 'x = 1', 'finished', 2, 't0')",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.schema_version().unwrap(),
            super::super::SCHEMA_VERSION
        );
        assert_eq!(store.run("old").unwrap().unwrap().state, RunState::Finished);
        assert!(store.model_versions(None).unwrap().is_empty());
    }
}
