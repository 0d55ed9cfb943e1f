//! Update schedules and the partners' data fingerprints (schema version 6,
//! tables `schedules` and `data_fingerprints`).
//!
//! - A schedule holds the update run file it starts, its rules (`every`,
//!   `on_new_data.min_partners`, the minimum interval, in seconds), its state
//!   (`active` or `stopped`, with the reason) and what it last did: when it last
//!   started a run, which run, and the *baseline* (the time from which partners'
//!   data changes count towards its data trigger; reset at every start).
//! - Times the scheduler compares are Unix seconds (integers), unlike the run
//!   timestamps, which are only displayed.
//! - A fingerprint row is the last data fingerprint a partner sent (row counts
//!   per split and a SHA-256 of its export, never rows); `changed_at` moves only
//!   when the hash differs from the one stored, so a partner that reconnects
//!   with the same data does not count as new data, and a partner's first
//!   fingerprint is its baseline, not a change.

use rusqlite::{OptionalExtension, Row, params};

use super::{Problem, Store, StoreError};

/// Version 6: schedules and data fingerprints (see the module doc).
pub(super) const MIGRATION_6: &str = "
CREATE TABLE schedules (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    target            TEXT NOT NULL CHECK (length(target) > 0),
    run_toml          TEXT NOT NULL,
    every_secs        INTEGER CHECK (every_secs IS NULL OR every_secs > 0),
    min_partners      INTEGER CHECK (min_partners IS NULL OR min_partners > 0),
    min_interval_secs INTEGER NOT NULL CHECK (min_interval_secs > 0),
    state             TEXT NOT NULL CHECK (state IN ('active', 'stopped')),
    reason            TEXT,
    created_unix      INTEGER NOT NULL,
    baseline_unix     INTEGER NOT NULL,
    last_started_unix INTEGER,
    last_run_id       TEXT,
    runs_started      INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE data_fingerprints (
    client       TEXT PRIMARY KEY,
    sha256       TEXT NOT NULL,
    rows_json    TEXT NOT NULL CONSTRAINT rows_is_json CHECK (json_valid(rows_json)),
    changed_unix INTEGER NOT NULL,
    received_at  TEXT NOT NULL
) WITHOUT ROWID;
";

/// A schedule's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleState {
    /// Starts update runs when due.
    Active,
    /// Stopped (by an operator, or by a budget refusal); starts nothing.
    Stopped,
}

impl ScheduleState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleState::Active => "active",
            ScheduleState::Stopped => "stopped",
        }
    }
}

/// One schedule, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    /// Its id.
    pub id: String,
    /// The run name of its run file.
    pub name: String,
    /// The target it updates.
    pub target: String,
    /// The update run file it starts, verbatim.
    pub run_toml: String,
    /// `every`, in seconds.
    pub every_secs: Option<u64>,
    /// `on_new_data.min_partners`.
    pub min_partners: Option<u32>,
    /// The minimum interval between two starts, in seconds.
    pub min_interval_secs: u64,
    /// Active or stopped.
    pub state: ScheduleState,
    /// Why it was stopped.
    pub reason: Option<String>,
    /// When it was created (Unix seconds).
    pub created_unix: u64,
    /// Data changes after this time count towards its trigger.
    pub baseline_unix: u64,
    /// When it last started a run.
    pub last_started_unix: Option<u64>,
    /// The run it last started.
    pub last_run_id: Option<String>,
    /// How many runs it started.
    pub runs_started: u64,
}

/// A partner's last data fingerprint.
#[derive(Debug, Clone, PartialEq)]
pub struct FingerprintRow {
    /// The partner.
    pub client: String,
    /// SHA-256 of its export (hex).
    pub sha256: String,
    /// Row counts per split, as JSON.
    pub rows_json: String,
    /// When its hash last changed (Unix seconds; 0 while it never changed).
    pub changed_unix: u64,
    /// When the coordinator received it (RFC 3339).
    pub received_at: String,
}

const SCHEDULE_COLUMNS: &str = "id, name, target, run_toml, every_secs, min_partners, \
     min_interval_secs, state, reason, created_unix, baseline_unix, last_started_unix, \
     last_run_id, runs_started";

/// Stored seconds are never negative (written from `u64`s, checked).
fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Seconds as SQLite integers (saturating far beyond any real date).
fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn schedule_row(r: &Row<'_>) -> rusqlite::Result<ScheduleRow> {
    let state: String = r.get(7)?;
    Ok(ScheduleRow {
        id: r.get(0)?,
        name: r.get(1)?,
        target: r.get(2)?,
        run_toml: r.get(3)?,
        every_secs: r.get::<_, Option<i64>>(4)?.map(unsigned),
        min_partners: r.get(5)?,
        min_interval_secs: unsigned(r.get(6)?),
        state: if state == "active" {
            ScheduleState::Active
        } else {
            ScheduleState::Stopped
        },
        reason: r.get(8)?,
        created_unix: unsigned(r.get(9)?),
        baseline_unix: unsigned(r.get(10)?),
        last_started_unix: r.get::<_, Option<i64>>(11)?.map(unsigned),
        last_run_id: r.get(12)?,
        runs_started: unsigned(r.get(13)?),
    })
}

/// A schedule to create.
#[derive(Debug, Clone, Copy)]
pub struct NewSchedule<'a> {
    /// Its id.
    pub id: &'a str,
    /// The run name.
    pub name: &'a str,
    /// The target.
    pub target: &'a str,
    /// The run file.
    pub run_toml: &'a str,
    /// `every`, seconds.
    pub every_secs: Option<u64>,
    /// `on_new_data.min_partners`.
    pub min_partners: Option<u32>,
    /// Minimum interval, seconds.
    pub min_interval_secs: u64,
    /// Now (Unix seconds).
    pub now_unix: u64,
}

impl Store {
    /// Creates an active schedule whose baseline is now.
    pub fn insert_schedule(&self, s: &NewSchedule<'_>) -> Result<(), StoreError> {
        self.write(
            || format!("insert schedule '{}'", s.id),
            |conn| {
                let inserted = conn.execute(
                    "INSERT INTO schedules (id, name, target, run_toml, every_secs, min_partners,
                         min_interval_secs, state, created_unix, baseline_unix)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'active', ?8, ?8)
                     ON CONFLICT (id) DO NOTHING",
                    params![
                        s.id,
                        s.name,
                        s.target,
                        s.run_toml,
                        s.every_secs.map(signed),
                        s.min_partners,
                        signed(s.min_interval_secs),
                        signed(s.now_unix)
                    ],
                )?;
                if inserted == 0 {
                    return Err(Problem::DuplicateRun.into());
                }
                Ok(())
            },
        )
    }

    /// Every schedule, oldest first.
    pub fn schedules(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        self.with(
            || "list schedules".into(),
            |conn| {
                let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY rowid");
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map([], schedule_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            },
        )
    }

    /// One schedule.
    pub fn schedule(&self, id: &str) -> Result<Option<ScheduleRow>, StoreError> {
        self.with(
            || format!("read schedule '{id}'"),
            |conn| {
                let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = ?1");
                Ok(conn.query_row(&sql, [id], schedule_row).optional()?)
            },
        )
    }

    /// Queues `run_id` (its run file is the schedule's) and records the start
    /// in the schedule, in one transaction: a crash never leaves a run the
    /// schedule does not know about, nor a start without its run.
    pub fn start_scheduled_run(
        &self,
        schedule_id: &str,
        run_id: &str,
        rounds_planned: u32,
        created_at: &str,
        now_unix: u64,
    ) -> Result<(), StoreError> {
        self.write(
            || format!("start a run of schedule '{schedule_id}'"),
            |conn| {
                let tx = conn.transaction()?;
                let (name, run_toml): (String, String) = tx.query_row(
                    "SELECT name, run_toml FROM schedules WHERE id = ?1 AND state = 'active'",
                    [schedule_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                tx.execute(
                    "INSERT INTO runs (id, name, run_toml, state, rounds_planned, created_at)
                     VALUES (?1, ?2, ?3, 'queued', ?4, ?5)",
                    params![run_id, name, run_toml, rounds_planned, created_at],
                )?;
                tx.execute(
                    "UPDATE schedules SET last_started_unix = ?2, baseline_unix = ?2,
                         last_run_id = ?3, runs_started = runs_started + 1
                     WHERE id = ?1",
                    params![schedule_id, signed(now_unix), run_id],
                )?;
                tx.commit()?;
                Ok(())
            },
        )
    }

    /// Stops a schedule with `reason`; false if it was stopped already or
    /// does not exist.
    pub fn stop_schedule(&self, id: &str, reason: &str) -> Result<bool, StoreError> {
        self.write(
            || format!("stop schedule '{id}'"),
            |conn| {
                Ok(conn.execute(
                    "UPDATE schedules SET state = 'stopped', reason = ?2
                     WHERE id = ?1 AND state = 'active'",
                    params![id, reason],
                )? == 1)
            },
        )
    }

    /// Records a partner's data fingerprint; `changed_unix` moves only when
    /// the hash differs. Returns true when the data changed (not for a first
    /// fingerprint nor an unchanged one).
    pub fn record_fingerprint(
        &self,
        client: &str,
        sha256: &str,
        rows_json: &str,
        received_at: &str,
        now_unix: u64,
    ) -> Result<bool, StoreError> {
        self.write(
            || format!("record the data fingerprint of '{client}'"),
            |conn| {
                let tx = conn.transaction()?;
                let before: Option<String> = tx
                    .query_row(
                        "SELECT sha256 FROM data_fingerprints WHERE client = ?1",
                        [client],
                        |r| r.get(0),
                    )
                    .optional()?;
                let changed = before.as_deref().is_some_and(|b| b != sha256);
                tx.execute(
                    "INSERT INTO data_fingerprints (client, sha256, rows_json, changed_unix, received_at)
                     VALUES (?1, ?2, ?3, 0, ?5)
                     ON CONFLICT (client) DO UPDATE SET
                         changed_unix = CASE WHEN sha256 = excluded.sha256
                                        THEN changed_unix ELSE ?4 END,
                         sha256 = excluded.sha256, rows_json = excluded.rows_json,
                         received_at = excluded.received_at",
                    params![client, sha256, rows_json, signed(now_unix), received_at],
                )?;
                tx.commit()?;
                Ok(changed)
            },
        )
    }

    /// Every partner's last fingerprint, by partner.
    pub fn fingerprints(&self) -> Result<Vec<FingerprintRow>, StoreError> {
        self.with(
            || "list data fingerprints".into(),
            |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT client, sha256, rows_json, changed_unix, received_at
                     FROM data_fingerprints ORDER BY client",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok(FingerprintRow {
                        client: r.get(0)?,
                        sha256: r.get(1)?,
                        rows_json: r.get(2)?,
                        changed_unix: unsigned(r.get(3)?),
                        received_at: r.get(4)?,
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

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.db")).unwrap();
        (dir, store)
    }

    fn new(id: &str) -> NewSchedule<'_> {
        NewSchedule {
            id,
            name: "churn-update",
            target: "churn",
            run_toml: "x = 1",
            every_secs: Some(60),
            min_partners: Some(2),
            min_interval_secs: 30,
            now_unix: 1000,
        }
    }

    #[test]
    fn a_schedule_and_its_starts_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        {
            let store = Store::open(&path).unwrap();
            store.insert_schedule(&new("s1")).unwrap();
            store
                .start_scheduled_run("s1", "r1", 3, "t1", 1060)
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let s = store.schedule("s1").unwrap().unwrap();
        assert_eq!(s.state, ScheduleState::Active);
        assert_eq!((s.every_secs, s.min_partners), (Some(60), Some(2)));
        assert_eq!((s.last_started_unix, s.baseline_unix), (Some(1060), 1060));
        assert_eq!((s.last_run_id.as_deref(), s.runs_started), (Some("r1"), 1));
        let run = store.run("r1").unwrap().unwrap();
        assert_eq!(
            (run.name.as_str(), run.run_toml.as_str()),
            ("churn-update", "x = 1")
        );
    }

    #[test]
    fn a_stopped_schedule_keeps_its_reason_and_starts_nothing() {
        let (_dir, store) = temp_store();
        store.insert_schedule(&new("s1")).unwrap();
        assert!(store.stop_schedule("s1", "budget").unwrap());
        assert!(!store.stop_schedule("s1", "again").unwrap());
        let s = store.schedule("s1").unwrap().unwrap();
        assert_eq!(
            (s.state, s.reason.as_deref()),
            (ScheduleState::Stopped, Some("budget"))
        );
        assert!(store.start_scheduled_run("s1", "r1", 3, "t", 2000).is_err());
        assert_eq!(store.run("r1").unwrap(), None);
    }

    #[test]
    fn only_a_changed_hash_moves_a_fingerprint() {
        let (_dir, store) = temp_store();
        assert!(!store.record_fingerprint("a", "h1", "{}", "t", 10).unwrap());
        assert!(!store.record_fingerprint("a", "h1", "{}", "t", 20).unwrap());
        assert_eq!(store.fingerprints().unwrap()[0].changed_unix, 0);
        assert!(
            store
                .record_fingerprint("a", "h2", "{\"train\":3}", "t", 30)
                .unwrap()
        );
        let f = &store.fingerprints().unwrap()[0];
        assert_eq!((f.sha256.as_str(), f.changed_unix), ("h2", 30));
        assert_eq!(f.rows_json, "{\"train\":3}");
    }
}
