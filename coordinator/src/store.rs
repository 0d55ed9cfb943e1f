//! The coordinator's embedded database: runs, committed rounds with their
//! checkpoints, and the client registry, in one SQLite file.
//!
//! SQLite is linked in (`rusqlite` with `bundled`), so no system library is
//! needed. The connection runs in WAL mode with `synchronous=FULL`: once a
//! method that writes has returned `Ok`, its change survives a crash of the
//! process or of the machine. Foreign keys are enforced and a busy timeout
//! bounds the wait for a lock held by another connection.
//!
//! A round is committed in one transaction: the round's record, its
//! checkpoint and the run's `rounds_done` are written together or not at all,
//! so after a crash [`Store::last_checkpoint`] is exactly the last round that
//! [`Store::commit_round`] reported as committed.
//!
//! Before a round's tasks go out, [`Store::begin_attempt`] records which
//! attempt of which round is in flight and whom it selected (durable when it
//! returns). A run resumed after a crash repeats exactly that attempt, under
//! the same task ids and to the same clients, so partners that already charged
//! the round's tasks to their privacy ledgers answer from their cache or say
//! the result is lost; nothing is charged twice ([`Store::in_flight`]).
//!
//! The schema is versioned: the `schema_version` table records each applied
//! migration, and [`Store::open`] applies the missing ones in one transaction.
//! To change the schema, append a migration to `MIGRATIONS`; never edit one
//! that has shipped. A database written by a newer coordinator is refused.
//!
//! Every method blocks the calling thread for at most one short SQLite
//! transaction (plus an fsync for writes). From async code, call it through
//! `tokio::task::spawn_blocking` where that matters.
//!
//! # State that cannot vanish silently
//!
//! The database and the audit log (`crate::audit`) vouch for each other, so
//! that losing either one, or part of one, is detected at the next start
//! instead of being served as "no runs" or a fresh chain
//! (`crate::state` does the checks):
//!
//! - [`Store::open`] runs SQLite's `PRAGMA quick_check` and refuses a
//!   database that fails it ([`Problem::Corrupt`]), naming the file.
//! - The database records the state's identity ([`StateIdentity`], schema
//!   version 3): a random state id, created with a new state, and the audit
//!   log's head (sequence number and hash of its last line).
//!   [`Store::record_audit_head`] keeps the head current after every append
//!   to the audit log, so a log that lost lines from its end is behind the
//!   database. That update is not fsynced on its own (it becomes durable with
//!   the next write, or at a clean close): a power loss can only leave the
//!   recorded head *behind* the log, which is allowed (the lines after it
//!   still chain from it).
//! - The audit log records every committed round (`round.commit`, written
//!   after [`Store::commit_round`] returns), so a database that lost
//!   committed rounds is behind the log.
//! - The store remembers which files it opened (device and inode of the
//!   database and of its `-wal`). After every write it checks that they are
//!   still the files at those paths: a write-ahead log deleted while the
//!   coordinator runs would silently swallow every later commit (SQLite keeps
//!   writing to the unlinked file). Once the check fails, the write that
//!   noticed it and every later write fail with [`Problem::FilesReplaced`].
//!
//! A database written before schema version 3 has no identity; it is adopted
//! once (the adoption is audited) and checked from then on.
//!
//! # The model registry
//!
//! Schema version 4 adds the model registry (`registry.rs`): the versions of
//! every target's model, one champion per target. A run's version is
//! registered in the same transaction that finishes the run
//! ([`Store::finish_run`]), so a promotion is never half done.
//!
//! Schema version 5 adds `partner_models` (`following.rs`): which champion
//! each partner acknowledged holding.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

mod following;
mod registry;
mod schedules;
pub use following::PartnerModelRow;
pub use registry::{ChampionChange, ModelStatus, ModelVersionRow, NewVersion};
pub use schedules::{FingerprintRow, NewSchedule, ScheduleRow, ScheduleState};

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations, in order: `MIGRATIONS[i]` takes the schema from version
/// `i` to version `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    registry::MIGRATION_4,
    following::MIGRATION_5,
    schedules::MIGRATION_6,
];

/// The schema version this coordinator writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Version 1: runs, rounds, checkpoints, clients.
///
/// `runs.seq` orders runs by insertion (the queue order); timestamps are
/// stored as the caller's strings and never compared.
const MIGRATION_1: &str = "
CREATE TABLE runs (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE CHECK (length(id) > 0),
    name           TEXT NOT NULL,
    run_toml       TEXT NOT NULL,
    state          TEXT NOT NULL
                   CHECK (state IN ('queued', 'running', 'finished', 'failed', 'cancelled')),
    rounds_planned INTEGER NOT NULL CHECK (rounds_planned >= 0),
    rounds_done    INTEGER NOT NULL DEFAULT 0 CHECK (rounds_done >= 0),
    created_at     TEXT NOT NULL,
    started_at     TEXT,
    finished_at    TEXT,
    failure        TEXT
);
CREATE INDEX runs_by_state ON runs (state, seq);

CREATE TABLE rounds (
    run_id       TEXT NOT NULL REFERENCES runs (id),
    round        INTEGER NOT NULL CHECK (round >= 0),
    record_json  TEXT NOT NULL CONSTRAINT record_is_json CHECK (json_valid(record_json)),
    committed_at TEXT NOT NULL,
    PRIMARY KEY (run_id, round)
) WITHOUT ROWID;

CREATE TABLE checkpoints (
    run_id          TEXT NOT NULL,
    round           INTEGER NOT NULL,
    checkpoint_json TEXT NOT NULL
                    CONSTRAINT checkpoint_is_json CHECK (json_valid(checkpoint_json)),
    PRIMARY KEY (run_id, round),
    FOREIGN KEY (run_id, round) REFERENCES rounds (run_id, round)
) WITHOUT ROWID;

CREATE TABLE clients (
    id                  TEXT PRIMARY KEY NOT NULL CHECK (length(id) > 0),
    first_seen          TEXT NOT NULL,
    last_seen           TEXT NOT NULL,
    connected           INTEGER NOT NULL CHECK (connected IN (0, 1)),
    budget_epsilon_left REAL
) WITHOUT ROWID;
";

/// Version 2: the attempt in flight per run (at most one row per run: the
/// latest `begin_attempt`), so a resumed run repeats it under the same task ids.
const MIGRATION_2: &str = "
CREATE TABLE attempts (
    run_id        TEXT PRIMARY KEY NOT NULL REFERENCES runs (id),
    round         INTEGER NOT NULL CHECK (round >= 1),
    attempt       INTEGER NOT NULL CHECK (attempt >= 0),
    selected_json TEXT NOT NULL CONSTRAINT selected_is_json CHECK (json_valid(selected_json)),
    started_at    TEXT NOT NULL
) WITHOUT ROWID;
";

/// Version 3: the state's identity (at most one row): the state id and the
/// audit log's head as last recorded. Absent in a database that predates it
/// until the state is adopted ([`Store::set_identity`]).
const MIGRATION_3: &str = "
CREATE TABLE state_identity (
    one         INTEGER PRIMARY KEY NOT NULL CHECK (one = 1),
    state_id    TEXT NOT NULL CHECK (length(state_id) > 0),
    audit_seq   INTEGER NOT NULL CHECK (audit_seq >= 0),
    audit_hash  TEXT NOT NULL CHECK (length(audit_hash) = 64),
    anchored_at TEXT NOT NULL
) WITHOUT ROWID;
";

const RUN_COLUMNS: &str = "id, name, run_toml, state, rounds_planned, rounds_done, \
                           created_at, started_at, finished_at, failure";

/// A store operation failed. The message names the operation and the
/// database file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The directory that holds the database could not be created.
    #[error("cannot create the directory of database '{path}': {source}")]
    CreateDir {
        /// The database file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// SQLite reported an error (I/O, corruption, a violated constraint…).
    #[error("cannot {op} in database '{path}': {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What was being done, e.g. "commit round 3 of run 'r1'".
        op: String,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The operation was refused; the database is unchanged.
    #[error("cannot {op} in database '{path}': {problem}")]
    Refused {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        op: String,
        /// Why it was refused.
        problem: Problem,
    },
}

impl StoreError {
    /// Why the operation was refused, if it was refused rather than failed.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            StoreError::Refused { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

/// Why the store refused an operation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// No run has this id.
    #[error("no run has this id")]
    UnknownRun,
    /// A run with this id already exists.
    #[error("a run with this id already exists")]
    DuplicateRun,
    /// The run is finished, failed or cancelled; its state is final.
    #[error("the run is already {state}")]
    RunTerminal {
        /// The run's current state.
        state: RunState,
    },
    /// This round of this run is already committed.
    #[error("the round is already committed")]
    DuplicateRound,
    /// A later round of this run is already committed.
    #[error("round {last} is already committed, rounds must ascend")]
    StaleRound {
        /// The highest committed round.
        last: u32,
    },
    /// A privacy budget was NaN.
    #[error("the epsilon budget is not a number")]
    NanBudget,
    /// The database was written by a newer coordinator.
    #[error("the schema is at version {found}, newer than this coordinator's {supported}")]
    NewerSchema {
        /// The database's schema version.
        found: u32,
        /// [`SCHEMA_VERSION`].
        supported: u32,
    },
    /// SQLite did not switch to WAL mode (e.g. the file system lacks shared memory).
    #[error("the journal mode is '{mode}', not 'wal'")]
    NotWal {
        /// The journal mode SQLite reported.
        mode: String,
    },
    /// The database fails SQLite's integrity check (`PRAGMA quick_check`).
    #[error(
        "the database fails SQLite's integrity check ({detail}); restore it from a backup, or move it aside and start with `serve --accept-state-loss`"
    )]
    Corrupt {
        /// What SQLite reported (its first complaint).
        detail: String,
    },
    /// The database file or its write-ahead log is no longer the file the
    /// store opened: it was deleted or replaced while the coordinator ran.
    #[error(
        "'{file}' was deleted or replaced while the coordinator had it open, so what was committed since is lost; stop the coordinator and restore the state folder from a backup, or restart with `serve --accept-state-loss`"
    )]
    FilesReplaced {
        /// The file that changed (the database or its `-wal`).
        file: PathBuf,
    },
    /// No model version has this target.
    #[error("no model has the target '{0}'")]
    UnknownTarget(String),
    /// The target has no such version.
    #[error("there is no model version {0}")]
    UnknownVersion(String),
    /// The version is the champion already.
    #[error("{0} is the champion already")]
    AlreadyChampion(String),
    /// A rollback has no former champion to restore.
    #[error("there is nothing to roll back to: {0}")]
    NothingToRollBack(String),
}

/// Inside an operation: an SQLite error or a refusal, before the path and the
/// operation's name are attached.
#[derive(Debug)]
enum Fail {
    Sql(rusqlite::Error),
    Refused(Problem),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<Problem> for Fail {
    fn from(p: Problem) -> Self {
        Fail::Refused(p)
    }
}

impl Fail {
    /// SQLite's "malformed"/"not a database" errors, as [`Problem::Corrupt`].
    fn corrupt_if_malformed(self) -> Fail {
        match self {
            Fail::Sql(rusqlite::Error::SqliteFailure(e, message))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
                ) =>
            {
                Fail::Refused(Problem::Corrupt {
                    detail: message.unwrap_or_else(|| e.to_string()),
                })
            }
            other => other,
        }
    }

    fn at(self, path: &Path, op: String) -> StoreError {
        let path = path.to_path_buf();
        match self {
            Fail::Sql(source) => StoreError::Sqlite { path, op, source },
            Fail::Refused(problem) => StoreError::Refused { path, op, problem },
        }
    }
}

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    /// Waiting to start.
    Queued,
    /// Rounds are being run.
    Running,
    /// All rounds done, outputs written.
    Finished,
    /// Stopped by an error (see [`RunRow::failure`]).
    Failed,
    /// Stopped by an operator.
    Cancelled,
}

impl RunState {
    /// Every state, in lifecycle order.
    pub const ALL: [RunState; 5] = [
        RunState::Queued,
        RunState::Running,
        RunState::Finished,
        RunState::Failed,
        RunState::Cancelled,
    ];

    /// The name stored in the database: "queued", "running", "finished",
    /// "failed" or "cancelled".
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Finished => "finished",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    /// Finished, failed or cancelled: the run will not change state again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Finished | RunState::Failed | RunState::Cancelled
        )
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a [`RunState`] name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a run state (queued, running, finished, failed or cancelled)")]
pub struct ParseRunStateError(pub String);

impl FromStr for RunState {
    type Err = ParseRunStateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| ParseRunStateError(s.to_string()))
    }
}

impl ToSql for RunState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for RunState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    /// The run's id.
    pub id: String,
    /// A human-readable name.
    pub name: String,
    /// The run file, verbatim.
    pub run_toml: String,
    /// The current state.
    pub state: RunState,
    /// Rounds the run file asks for.
    pub rounds_planned: u32,
    /// The highest committed round (0 until a round after round 0 is committed).
    pub rounds_done: u32,
    /// When the run was queued.
    pub created_at: String,
    /// When it first entered [`RunState::Running`].
    pub started_at: Option<String>,
    /// When it entered a terminal state.
    pub finished_at: Option<String>,
    /// Why it failed (or was cancelled), if a reason was given.
    pub failure: Option<String>,
}

/// One round to commit: its record, the checkpoint to resume from, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundCommit<'a> {
    /// The run.
    pub run_id: &'a str,
    /// The round number; 0 is the state after the statistics phase.
    pub round: u32,
    /// The round's record (metrics, participants…), as JSON.
    pub record_json: &'a str,
    /// The model and server state after the round, as JSON (opaque here).
    pub checkpoint_json: &'a str,
    /// When the round was committed.
    pub committed_at: &'a str,
}

/// The checkpoint of a committed round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The round it was taken after.
    pub round: u32,
    /// The model and server state, as committed.
    pub checkpoint_json: String,
}

/// An attempt of a round that was sent out (see [`Store::begin_attempt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The round.
    pub round: u32,
    /// The attempt (0 = first).
    pub attempt: u32,
    /// JSON array of the selected client ids.
    pub selected_json: String,
}

/// A committed round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundRow {
    /// The round number.
    pub round: u32,
    /// The round's record, as committed.
    pub record_json: String,
    /// When it was committed.
    pub committed_at: String,
}

/// A client node the coordinator has seen.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRow {
    /// The client's id (its certificate's common name).
    pub id: String,
    /// When it was first seen.
    pub first_seen: String,
    /// When it was last seen.
    pub last_seen: String,
    /// Whether it was connected when last seen.
    pub connected: bool,
    /// The privacy budget it last reported as left, if it ever reported one.
    pub budget_epsilon_left: Option<f64>,
}

/// The identity of the coordinator's state, as the database records it (see
/// the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateIdentity {
    /// Random, created with a new state (and again when a loss is accepted).
    pub state_id: String,
    /// Sequence number of the audit log's last line when last recorded (0: empty).
    pub audit_seq: u64,
    /// That line's hash (the audit log's genesis hash when empty).
    pub audit_hash: String,
    /// When the identity was created or re-anchored.
    pub anchored_at: String,
}

/// Device and inode of a file, to tell whether a path still names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

fn file_id(path: &Path) -> Option<FileId> {
    let meta = fs::metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Some(FileId { dev: 0, ino: 0 })
    }
}

/// The files the store opened: the database and its write-ahead log.
#[derive(Debug)]
struct OpenedFiles {
    db: Option<FileId>,
    wal: Option<FileId>,
}

/// The coordinator's database. One connection behind a mutex: share it with
/// an `Arc<Store>`.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
    wal_path: PathBuf,
    opened: Mutex<OpenedFiles>,
    /// Set once the files were found replaced: every later write is refused.
    replaced: AtomicBool,
    /// Which file was found replaced.
    replaced_file: Mutex<Option<PathBuf>>,
    /// [`Store::take_damage_report`] returned it already.
    damage_reported: AtomicBool,
}

impl Store {
    /// Opens the database at `path`, creating it and its parent directory if
    /// needed, switches it to WAL mode and brings its schema to
    /// [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let mut conn = Connection::open(path)
            .map_err(|e| Fail::Sql(e).at(path, "open the database".into()))?;
        let check = |e: Fail| e.corrupt_if_malformed();
        configure(&conn)
            .map_err(check)
            .map_err(|e| e.at(path, "configure the connection".into()))?;
        quick_check(&conn)
            .map_err(check)
            .map_err(|e| e.at(path, "check the database's integrity".into()))?;
        migrate(&mut conn, MIGRATIONS)
            .map_err(|(to, e)| check(e).at(path, format!("migrate the schema to version {to}")))?;
        let wal_path = wal_path(path);
        let opened = OpenedFiles {
            db: file_id(path),
            wal: file_id(&wal_path),
        };
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            wal_path,
            opened: Mutex::new(opened),
            replaced: AtomicBool::new(false),
            replaced_file: Mutex::new(None),
            damage_reported: AtomicBool::new(false),
        })
    }

    /// The state's identity, if the database records one (see the module doc).
    pub fn identity(&self) -> Result<Option<StateIdentity>, StoreError> {
        self.optional_row(
            || "read the state identity".into(),
            "SELECT state_id, audit_seq, audit_hash, anchored_at
             FROM state_identity WHERE one = 1",
            [],
            |r| {
                Ok(StateIdentity {
                    state_id: r.get(0)?,
                    audit_seq: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    audit_hash: r.get(2)?,
                    anchored_at: r.get(3)?,
                })
            },
        )
    }

    /// Creates or replaces the state's identity (a new state, an adopted one,
    /// or one re-anchored after an accepted loss). Durable when it returns.
    pub fn set_identity(&self, identity: &StateIdentity) -> Result<(), StoreError> {
        self.write(
            || format!("record state identity {}", identity.state_id),
            |conn| {
                conn.execute(
                    "INSERT INTO state_identity (one, state_id, audit_seq, audit_hash, anchored_at)
                     VALUES (1, ?1, ?2, ?3, ?4)
                     ON CONFLICT (one) DO UPDATE SET state_id = ?1, audit_seq = ?2,
                         audit_hash = ?3, anchored_at = ?4",
                    params![
                        identity.state_id,
                        i64::try_from(identity.audit_seq).unwrap_or(i64::MAX),
                        identity.audit_hash,
                        identity.anchored_at
                    ],
                )?;
                Ok(())
            },
        )
    }

    /// Records the audit log's head after an append: its last line's sequence
    /// number and hash. Only moves the head forward, and only once an identity
    /// exists. Not fsynced on its own (see the module doc): it is durable with
    /// the next write or at a clean close.
    pub fn record_audit_head(&self, seq: u64, hash: &str) -> Result<(), StoreError> {
        self.write(
            || format!("record the audit log's head (line {seq})"),
            |conn| {
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                let updated = conn.execute(
                    "UPDATE state_identity SET audit_seq = ?1, audit_hash = ?2
                     WHERE one = 1 AND audit_seq < ?1",
                    params![i64::try_from(seq).unwrap_or(i64::MAX), hash],
                );
                conn.pragma_update(None, "synchronous", "FULL")?;
                updated?;
                Ok(())
            },
        )
    }

    /// The highest committed round of a run (`None`: no round committed, or
    /// no such run).
    pub fn last_round(&self, run_id: &str) -> Result<Option<u32>, StoreError> {
        self.with(
            || format!("read the last committed round of run '{run_id}'"),
            |conn| {
                Ok(conn.query_row(
                    "SELECT max(round) FROM rounds WHERE run_id = ?1",
                    [run_id],
                    |r| r.get(0),
                )?)
            },
        )
    }

    /// Checks that the database file and its write-ahead log are still the
    /// files this store opened (see the module doc). Once this fails, every
    /// later write is refused.
    pub fn check_files(&self) -> Result<(), StoreError> {
        self.files_unchanged()
            .map_err(|e| e.at(&self.path, "check the database's files".into()))
    }

    /// The file found deleted or replaced (see [`Store::check_files`]), the
    /// first time it is asked after that happened; `None` otherwise. Whoever
    /// gets it reports the damage (once).
    pub fn take_damage_report(&self) -> Option<PathBuf> {
        if !self.replaced.load(Ordering::SeqCst)
            || self.damage_reported.swap(true, Ordering::SeqCst)
        {
            return None;
        }
        self.replaced_file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn files_unchanged(&self) -> Result<(), Fail> {
        let replaced = |file: &Path| {
            *self
                .replaced_file
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(file.to_path_buf());
            self.replaced.store(true, Ordering::SeqCst);
            Fail::Refused(Problem::FilesReplaced {
                file: file.to_path_buf(),
            })
        };
        if self.replaced.load(Ordering::SeqCst) {
            let file = self
                .replaced_file
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_else(|| self.wal_path.clone());
            return Err(Fail::Refused(Problem::FilesReplaced { file }));
        }
        let mut opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
        if file_id(&self.path) != opened.db {
            return Err(replaced(&self.path));
        }
        match (opened.wal, file_id(&self.wal_path)) {
            // SQLite creates the log on first use; from then on it is kept
            // open (and at that path) until the connection closes.
            (None, now) => opened.wal = now,
            (Some(was), Some(now)) if was == now => {}
            _ => return Err(replaced(&self.wal_path)),
        }
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database's schema version (after [`Store::open`], [`SCHEMA_VERSION`]).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.with(
            || "read the schema version".into(),
            |conn| Ok(schema_version(conn)?),
        )
    }

    // ----- runs -----

    /// Queues a new run. A run with the same id is an error.
    pub fn insert_run(
        &self,
        id: &str,
        name: &str,
        run_toml: &str,
        rounds_planned: u32,
        created_at: &str,
    ) -> Result<(), StoreError> {
        self.write(
            || format!("insert run '{id}'"),
            |conn| {
                let inserted = conn.execute(
                    "INSERT INTO runs (id, name, run_toml, state, rounds_planned, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (id) DO NOTHING",
                    params![
                        id,
                        name,
                        run_toml,
                        RunState::Queued,
                        rounds_planned,
                        created_at
                    ],
                )?;
                if inserted == 0 {
                    return Err(Problem::DuplicateRun.into());
                }
                Ok(())
            },
        )
    }

    /// Moves a run to `state` at time `at`.
    ///
    /// Entering [`RunState::Running`] sets `started_at` if it is unset;
    /// entering a terminal state sets `finished_at`. `failure`, when given,
    /// replaces the stored reason. An unknown run, or a run whose state is
    /// already terminal, is an error and changes nothing.
    pub fn set_run_state(
        &self,
        id: &str,
        state: RunState,
        at: &str,
        failure: Option<&str>,
    ) -> Result<(), StoreError> {
        self.write(
            || format!("set run '{id}' to {state}"),
            |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                Store::set_state_in(&tx, id, state, at, failure)?;
                tx.commit()?;
                Ok(())
            },
        )
    }

    /// [`Store::set_run_state`] inside a transaction.
    fn set_state_in(
        tx: &Transaction<'_>,
        id: &str,
        state: RunState,
        at: &str,
        failure: Option<&str>,
    ) -> Result<(), Fail> {
        let current: RunState = tx
            .query_row("SELECT state FROM runs WHERE id = ?1", [id], |r| r.get(0))
            .optional()?
            .ok_or(Problem::UnknownRun)?;
        if current.is_terminal() {
            return Err(Problem::RunTerminal { state: current }.into());
        }
        tx.execute(
            "UPDATE runs SET
                 state = ?2,
                 started_at = CASE WHEN ?3 THEN coalesce(started_at, ?5) ELSE started_at END,
                 finished_at = CASE WHEN ?4 THEN ?5 ELSE finished_at END,
                 failure = coalesce(?6, failure)
             WHERE id = ?1",
            params![
                id,
                state,
                state == RunState::Running,
                state.is_terminal(),
                at,
                failure
            ],
        )?;
        Ok(())
    }

    /// The run with this id, if any.
    pub fn run(&self, id: &str) -> Result<Option<RunRow>, StoreError> {
        self.with(
            || format!("read run '{id}'"),
            |conn| {
                let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1");
                Ok(conn.query_row(&sql, [id], run_row).optional()?)
            },
        )
    }

    /// Every run, newest (last inserted) first.
    pub fn runs(&self) -> Result<Vec<RunRow>, StoreError> {
        self.with(
            || "list runs".into(),
            |conn| {
                let sql = format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY seq DESC");
                Ok(query_runs(conn, &sql, [])?)
            },
        )
    }

    /// The oldest (first inserted) queued run, if any.
    pub fn next_queued(&self) -> Result<Option<RunRow>, StoreError> {
        self.with(
            || "find the next queued run".into(),
            |conn| {
                let sql = format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE state = ?1 ORDER BY seq ASC LIMIT 1"
                );
                Ok(conn
                    .query_row(&sql, [RunState::Queued], run_row)
                    .optional()?)
            },
        )
    }

    /// The runs in state [`RunState::Running`], oldest first: after a crash,
    /// these are the runs to resume from their [`Store::last_checkpoint`].
    pub fn in_progress(&self) -> Result<Vec<RunRow>, StoreError> {
        self.with(
            || "list running runs".into(),
            |conn| {
                let sql =
                    format!("SELECT {RUN_COLUMNS} FROM runs WHERE state = ?1 ORDER BY seq ASC");
                Ok(query_runs(conn, &sql, [RunState::Running])?)
            },
        )
    }

    // ----- rounds -----

    /// Commits a round in one transaction: the round's record, its
    /// checkpoint, and the run's `rounds_done` (set to this round). Either
    /// all of it is durable when this returns `Ok`, or none of it is written.
    ///
    /// Refused: an unknown run, a round already committed, a round below the
    /// highest committed one. Record and checkpoint must be valid JSON.
    pub fn commit_round(&self, c: &RoundCommit<'_>) -> Result<(), StoreError> {
        self.write(
            || format!("commit round {} of run '{}'", c.round, c.run_id),
            |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let exists = tx
                    .query_row("SELECT 1 FROM runs WHERE id = ?1", [c.run_id], |_| Ok(()))
                    .optional()?;
                if exists.is_none() {
                    return Err(Problem::UnknownRun.into());
                }
                let last: Option<u32> = tx.query_row(
                    "SELECT max(round) FROM rounds WHERE run_id = ?1",
                    [c.run_id],
                    |r| r.get(0),
                )?;
                if let Some(last) = last.filter(|&last| c.round <= last) {
                    let duplicate = tx
                        .query_row(
                            "SELECT 1 FROM rounds WHERE run_id = ?1 AND round = ?2",
                            params![c.run_id, c.round],
                            |_| Ok(()),
                        )
                        .optional()?;
                    return Err(match duplicate {
                        Some(()) => Problem::DuplicateRound,
                        None => Problem::StaleRound { last },
                    }
                    .into());
                }
                tx.execute(
                    "INSERT INTO rounds (run_id, round, record_json, committed_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![c.run_id, c.round, c.record_json, c.committed_at],
                )?;
                tx.execute(
                    "INSERT INTO checkpoints (run_id, round, checkpoint_json) VALUES (?1, ?2, ?3)",
                    params![c.run_id, c.round, c.checkpoint_json],
                )?;
                let updated = tx.execute(
                    "UPDATE runs SET rounds_done = max(rounds_done, ?2) WHERE id = ?1",
                    params![c.run_id, c.round],
                )?;
                if updated != 1 {
                    // Dropping `tx` rolls the inserts back.
                    return Err(Problem::UnknownRun.into());
                }
                tx.commit()?;
                Ok(())
            },
        )
    }

    /// Records that `attempt` of `round` is about to send its tasks to
    /// `selected` (a JSON array of client ids). Durable when it returns `Ok`.
    /// Refused for an unknown run or a round already committed.
    pub fn begin_attempt(
        &self,
        run_id: &str,
        round: u32,
        attempt: u32,
        selected_json: &str,
        at: &str,
    ) -> Result<(), StoreError> {
        self.write(
            || format!("record attempt {attempt} of round {round} of run '{run_id}'"),
            |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let exists = tx
                    .query_row("SELECT 1 FROM runs WHERE id = ?1", [run_id], |_| Ok(()))
                    .optional()?;
                if exists.is_none() {
                    return Err(Problem::UnknownRun.into());
                }
                let last: Option<u32> = tx.query_row(
                    "SELECT max(round) FROM rounds WHERE run_id = ?1",
                    [run_id],
                    |r| r.get(0),
                )?;
                if let Some(last) = last.filter(|&last| round <= last) {
                    return Err(Problem::StaleRound { last }.into());
                }
                tx.execute(
                    "INSERT INTO attempts (run_id, round, attempt, selected_json, started_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (run_id) DO UPDATE SET round = ?2, attempt = ?3,
                         selected_json = ?4, started_at = ?5",
                    params![run_id, round, attempt, selected_json, at],
                )?;
                tx.commit()?;
                Ok(())
            },
        )
    }

    /// The attempt that was in flight when the run stopped: `Some` only if
    /// its round was never committed (a committed round has nothing to repeat).
    pub fn in_flight(&self, run_id: &str) -> Result<Option<Attempt>, StoreError> {
        self.optional_row(
            || format!("read the attempt in flight of run '{run_id}'"),
            "SELECT a.round, a.attempt, a.selected_json FROM attempts a
             WHERE a.run_id = ?1 AND NOT EXISTS (
                 SELECT 1 FROM rounds r WHERE r.run_id = a.run_id AND r.round >= a.round)",
            [run_id],
            |r| {
                Ok(Attempt {
                    round: r.get(0)?,
                    attempt: r.get(1)?,
                    selected_json: r.get(2)?,
                })
            },
        )
    }

    /// The checkpoint of the run's highest committed round, if any.
    pub fn last_checkpoint(&self, run_id: &str) -> Result<Option<Checkpoint>, StoreError> {
        self.optional_row(
            || format!("read the last checkpoint of run '{run_id}'"),
            "SELECT round, checkpoint_json FROM checkpoints
             WHERE run_id = ?1 ORDER BY round DESC LIMIT 1",
            [run_id],
            |r| {
                Ok(Checkpoint {
                    round: r.get(0)?,
                    checkpoint_json: r.get(1)?,
                })
            },
        )
    }

    /// The run's committed rounds, ascending (empty for an unknown run).
    pub fn rounds(&self, run_id: &str) -> Result<Vec<RoundRow>, StoreError> {
        self.with(
            || format!("list the rounds of run '{run_id}'"),
            |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT round, record_json, committed_at FROM rounds
                     WHERE run_id = ?1 ORDER BY round ASC",
                )?;
                let rows = stmt.query_map([run_id], |r| {
                    Ok(RoundRow {
                        round: r.get(0)?,
                        record_json: r.get(1)?,
                        committed_at: r.get(2)?,
                    })
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            },
        )
    }

    // ----- client registry -----

    /// Records that client `id` was seen at `at`, connected or not. The first
    /// sighting sets `first_seen`, later ones keep it; the budget is only
    /// overwritten when `budget_epsilon_left` is `Some` (NaN is refused).
    pub fn client_seen(
        &self,
        id: &str,
        connected: bool,
        at: &str,
        budget_epsilon_left: Option<f64>,
    ) -> Result<(), StoreError> {
        self.write(
            || format!("record client '{id}'"),
            |conn| {
                if budget_epsilon_left.is_some_and(f64::is_nan) {
                    return Err(Problem::NanBudget.into());
                }
                conn.execute(
                    "INSERT INTO clients (id, first_seen, last_seen, connected, budget_epsilon_left)
                     VALUES (?1, ?2, ?2, ?3, ?4)
                     ON CONFLICT (id) DO UPDATE SET
                         last_seen = excluded.last_seen,
                         connected = excluded.connected,
                         budget_epsilon_left =
                             coalesce(excluded.budget_epsilon_left, clients.budget_epsilon_left)",
                    params![id, at, connected, budget_epsilon_left],
                )?;
                Ok(())
            },
        )
    }

    /// Every client seen, by id.
    pub fn clients(&self) -> Result<Vec<ClientRow>, StoreError> {
        self.with(
            || "list clients".into(),
            |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, first_seen, last_seen, connected, budget_epsilon_left
                     FROM clients ORDER BY id ASC",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok(ClientRow {
                        id: r.get(0)?,
                        first_seen: r.get(1)?,
                        last_seen: r.get(2)?,
                        connected: r.get(3)?,
                        budget_epsilon_left: r.get(4)?,
                    })
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            },
        )
    }

    // ----- plumbing -----

    /// Runs `f` on the locked connection; on error, names the operation
    /// (`op` is only called then) and the file.
    fn with<T>(
        &self,
        op: impl FnOnce() -> String,
        f: impl FnOnce(&mut Connection) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        f(&mut conn).map_err(|e| e.at(&self.path, op()))
    }

    /// The one row `sql` selects with `params`, as `row` reads it, if any.
    fn optional_row<T, P: rusqlite::Params>(
        &self,
        op: impl FnOnce() -> String,
        sql: &str,
        params: P,
        row: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, StoreError> {
        self.with(op, |conn| {
            Ok(conn.query_row(sql, params, row).optional()?)
        })
    }

    /// Like [`Store::with`] for a write: refused once the files were found
    /// replaced, and followed by that check (so a commit that went into a
    /// deleted write-ahead log is reported, not acknowledged).
    fn write<T>(
        &self,
        op: impl FnOnce() -> String,
        f: impl FnOnce(&mut Connection) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let result = (|| {
            if self.replaced.load(Ordering::SeqCst) {
                self.files_unchanged()?;
            }
            let value = f(&mut conn)?;
            self.files_unchanged()?;
            Ok(value)
        })();
        result.map_err(|e: Fail| e.at(&self.path, op()))
    }

    /// A panic while the lock was held unwound through the open transaction,
    /// which rolled it back on drop: the connection is consistent, so a
    /// poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The write-ahead log of the database at `path`: `<path>-wal`.
fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// `PRAGMA quick_check`: `Ok` if SQLite answers a single "ok".
fn quick_check(conn: &Connection) -> Result<(), Fail> {
    let mut stmt = conn.prepare("PRAGMA quick_check(5)")?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    match rows.as_slice() {
        [ok] if ok == "ok" => Ok(()),
        _ => {
            // One line: SQLite's complaints, without its "*** in database" banner.
            let mut detail = rows
                .iter()
                .flat_map(|r| r.lines())
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("***"))
                .collect::<Vec<_>>()
                .join("; ");
            if detail.len() > 300 {
                let cut = (0..=300).rev().find(|&i| detail.is_char_boundary(i));
                detail.truncate(cut.unwrap_or(0));
                detail.push('…');
            }
            Err(Problem::Corrupt { detail }.into())
        }
    }
}

/// Sets the connection's pragmas and checks that WAL mode took effect.
fn configure(conn: &Connection) -> Result<(), Fail> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Problem::NotWal { mode }.into());
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    Ok(())
}

/// The highest applied migration (0 for a new database).
fn schema_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )
}

/// Brings the schema to `migrations.len()` in one transaction, so a crash
/// mid-migration leaves the previous version. Returns the version reached;
/// on error, the version it was migrating to.
fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<u32, (u32, Fail)> {
    let target = u32::try_from(migrations.len()).unwrap_or(u32::MAX);
    let fail = |to: u32| move |e: rusqlite::Error| (to, Fail::Sql(e));
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail(target))?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    INTEGER PRIMARY KEY NOT NULL,
             applied_at TEXT NOT NULL
         );",
    )
    .map_err(fail(target))?;
    let current = schema_version(&tx).map_err(fail(target))?;
    if current > target {
        let problem = Problem::NewerSchema {
            found: current,
            supported: target,
        };
        return Err((target, problem.into()));
    }
    for (to, sql) in (1..).zip(migrations).skip(current as usize) {
        tx.execute_batch(sql).map_err(fail(to))?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at)
             VALUES (?1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            [to],
        )
        .map_err(fail(to))?;
    }
    tx.commit().map_err(fail(target))?;
    Ok(target)
}

fn run_row(r: &Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        name: r.get(1)?,
        run_toml: r.get(2)?,
        state: r.get(3)?,
        rounds_planned: r.get(4)?,
        rounds_done: r.get(5)?,
        created_at: r.get(6)?,
        started_at: r.get(7)?,
        finished_at: r.get(8)?,
        failure: r.get(9)?,
    })
}

fn query_runs<P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
) -> rusqlite::Result<Vec<RunRow>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, run_row)?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db").join("coordinator.sqlite")).unwrap();
        (dir, store)
    }

    fn commit(store: &Store, run_id: &str, round: u32) -> Result<(), StoreError> {
        let record = format!(r#"{{"round":{round}}}"#);
        let checkpoint = format!(r#"{{"weights":[{round}.5],"round":{round}}}"#);
        let at = format!("2025-01-01T00:00:{round:02}Z");
        store.commit_round(&RoundCommit {
            run_id,
            round,
            record_json: &record,
            checkpoint_json: &checkpoint,
            committed_at: &at,
        })
    }

    fn count(store: &Store, sql: &str) -> i64 {
        store.lock().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Store>();
    }

    #[test]
    fn wal_mode_and_pragmas_are_on() {
        let (dir, store) = temp_store();
        let conn = store.lock();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        let busy: i64 = conn
            .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
            .unwrap();
        assert_eq!(busy, 5000);
        drop(conn);
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        store.insert_run("r1", "n", "", 1, "t0").unwrap();
        let wal = dir.path().join("db").join("coordinator.sqlite-wal");
        assert!(fs::metadata(wal).unwrap().len() > 0);
    }

    #[test]
    fn open_refuses_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-db.sqlite");
        fs::write(
            &path,
            "this is not an sqlite database, not at all ".repeat(40),
        )
        .unwrap();
        let err = Store::open(&path).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("cannot "), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[test]
    fn open_refuses_a_newer_schema_and_path_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.path(), path);
            store
                .lock()
                .execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?1, 'later')",
                    [SCHEMA_VERSION + 1],
                )
                .unwrap();
        }
        let err = Store::open(&path).unwrap_err();
        assert_eq!(
            err.problem(),
            Some(&Problem::NewerSchema {
                found: SCHEMA_VERSION + 1,
                supported: SCHEMA_VERSION
            })
        );
        assert!(err.to_string().contains("c.sqlite"), "{err}");
    }

    #[test]
    fn the_attempt_in_flight_survives_a_reopen_until_its_round_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        {
            let store = Store::open(&path).unwrap();
            store.insert_run("r1", "n", "", 5, "t0").unwrap();
            commit(&store, "r1", 0).unwrap();
            store
                .begin_attempt("r1", 1, 0, r#"["a","b"]"#, "t1")
                .unwrap();
            store.begin_attempt("r1", 1, 1, r#"["b"]"#, "t2").unwrap();
            // An unknown run is refused.
            let err = store.begin_attempt("nope", 1, 0, "[]", "t").unwrap_err();
            assert!(matches!(err.problem(), Some(Problem::UnknownRun)), "{err}");
        }
        // "Crash": reopen. The latest attempt of the uncommitted round is there.
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.in_flight("r1").unwrap(),
            Some(Attempt {
                round: 1,
                attempt: 1,
                selected_json: r#"["b"]"#.into()
            })
        );
        commit(&store, "r1", 1).unwrap();
        // Committed: nothing to repeat, and an attempt of a committed round is refused.
        assert_eq!(store.in_flight("r1").unwrap(), None);
        let err = store.begin_attempt("r1", 1, 2, "[]", "t3").unwrap_err();
        assert!(
            matches!(err.problem(), Some(Problem::StaleRound { last: 1 })),
            "{err}"
        );
        assert_eq!(store.in_flight("other").unwrap(), None);
    }

    #[test]
    fn migrations_upgrade_an_existing_database_and_keep_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        {
            let store = Store::open(&path).unwrap();
            store.insert_run("r1", "first", "x = 1", 3, "t0").unwrap();
        }
        let mut conn = Connection::open(&path).unwrap();
        let v2 = "ALTER TABLE runs ADD COLUMN note TEXT NOT NULL DEFAULT 'none';";
        let mut next: Vec<&str> = MIGRATIONS.to_vec();
        next.push(v2);
        assert_eq!(migrate(&mut conn, &next).unwrap(), SCHEMA_VERSION + 1);
        // Idempotent: nothing left to apply.
        assert_eq!(migrate(&mut conn, &next).unwrap(), SCHEMA_VERSION + 1);
        let note: String = conn
            .query_row("SELECT note FROM runs WHERE id = 'r1'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(note, "none");
        let applied: i64 = conn
            .query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(applied, i64::from(SCHEMA_VERSION) + 1);
        // A failing migration leaves the previous version in place.
        next.push("ALTER TABLE no_such_table ADD COLUMN x TEXT;");
        let (to, _) = migrate(&mut conn, &next).unwrap_err();
        assert_eq!(to, SCHEMA_VERSION + 2);
        assert_eq!(schema_version(&conn).unwrap(), SCHEMA_VERSION + 1);
    }

    #[test]
    fn reopen_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let (run, rounds, clients);
        {
            let store = Store::open(&path).unwrap();
            store
                .insert_run("r1", "churn", "[model]\nkind = \"logistic\"\n", 20, "t0")
                .unwrap();
            store
                .set_run_state("r1", RunState::Running, "t1", None)
                .unwrap();
            commit(&store, "r1", 0).unwrap();
            commit(&store, "r1", 1).unwrap();
            store
                .client_seen("partner-a", true, "t1", Some(0.75))
                .unwrap();
            run = store.run("r1").unwrap().unwrap();
            rounds = store.rounds("r1").unwrap();
            clients = store.clients().unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.run("r1").unwrap().unwrap(), run);
        assert_eq!(run.rounds_done, 1);
        assert_eq!(run.run_toml, "[model]\nkind = \"logistic\"\n");
        assert_eq!(store.rounds("r1").unwrap(), rounds);
        assert_eq!(store.clients().unwrap(), clients);
        assert_eq!(store.last_checkpoint("r1").unwrap().unwrap().round, 1);
    }

    #[test]
    fn insert_run_refuses_a_duplicate_id() {
        let (_dir, store) = temp_store();
        store.insert_run("r1", "a", "x = 1", 5, "t0").unwrap();
        let err = store.insert_run("r1", "b", "x = 2", 6, "t1").unwrap_err();
        assert_eq!(err.problem(), Some(&Problem::DuplicateRun));
        assert!(err.to_string().contains("insert run 'r1'"), "{err}");
        let run = store.run("r1").unwrap().unwrap();
        assert_eq!((run.name.as_str(), run.rounds_planned), ("a", 5));
        assert_eq!(run.state, RunState::Queued);
        assert_eq!(run.rounds_done, 0);
        assert_eq!(store.run("nope").unwrap(), None);
    }

    #[test]
    fn state_transitions_set_timestamps() {
        let (_dir, store) = temp_store();
        store.insert_run("r1", "a", "", 5, "t0").unwrap();
        let run = store.run("r1").unwrap().unwrap();
        assert_eq!((run.started_at, run.finished_at), (None, None));

        store
            .set_run_state("r1", RunState::Running, "t1", None)
            .unwrap();
        let run = store.run("r1").unwrap().unwrap();
        assert_eq!(run.state, RunState::Running);
        assert_eq!(run.started_at.as_deref(), Some("t1"));
        assert_eq!(run.finished_at, None);

        // Running again (a resume) keeps the first start.
        store
            .set_run_state("r1", RunState::Running, "t2", None)
            .unwrap();
        assert_eq!(
            store.run("r1").unwrap().unwrap().started_at.as_deref(),
            Some("t1")
        );

        store
            .set_run_state("r1", RunState::Failed, "t3", Some("client quorum lost"))
            .unwrap();
        let failed = store.run("r1").unwrap().unwrap();
        assert_eq!(failed.state, RunState::Failed);
        assert_eq!(failed.started_at.as_deref(), Some("t1"));
        assert_eq!(failed.finished_at.as_deref(), Some("t3"));
        assert_eq!(failed.failure.as_deref(), Some("client quorum lost"));

        // A terminal state is final.
        let err = store
            .set_run_state("r1", RunState::Running, "t4", None)
            .unwrap_err();
        assert_eq!(
            err.problem(),
            Some(&Problem::RunTerminal {
                state: RunState::Failed
            })
        );
        assert_eq!(store.run("r1").unwrap().unwrap(), failed);

        // Cancelled straight from the queue: finished, never started.
        store.insert_run("r2", "b", "", 5, "t5").unwrap();
        store
            .set_run_state("r2", RunState::Cancelled, "t6", None)
            .unwrap();
        let r2 = store.run("r2").unwrap().unwrap();
        assert_eq!(
            (r2.started_at, r2.finished_at.as_deref()),
            (None, Some("t6"))
        );
        assert_eq!(r2.failure, None);

        let err = store
            .set_run_state("ghost", RunState::Running, "t7", None)
            .unwrap_err();
        assert_eq!(err.problem(), Some(&Problem::UnknownRun));
        assert!(err.to_string().contains("'ghost'"), "{err}");
    }

    #[test]
    fn queue_order_and_listing() {
        let (_dir, store) = temp_store();
        assert_eq!(store.next_queued().unwrap(), None);
        for id in ["a", "b", "c", "d"] {
            store.insert_run(id, id, "", 3, "same-time").unwrap();
        }
        assert_eq!(store.next_queued().unwrap().unwrap().id, "a");
        store
            .set_run_state("a", RunState::Running, "t1", None)
            .unwrap();
        store
            .set_run_state("c", RunState::Running, "t1", None)
            .unwrap();
        assert_eq!(store.next_queued().unwrap().unwrap().id, "b");
        store
            .set_run_state("b", RunState::Cancelled, "t2", None)
            .unwrap();
        assert_eq!(store.next_queued().unwrap().unwrap().id, "d");

        let ids = |rows: Vec<RunRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(store.runs().unwrap()), ["d", "c", "b", "a"]);
        assert_eq!(ids(store.in_progress().unwrap()), ["a", "c"]);
    }

    #[test]
    fn rounds_commit_in_order_from_round_zero() {
        let (_dir, store) = temp_store();
        store.insert_run("r1", "a", "", 3, "t0").unwrap();
        assert_eq!(store.last_checkpoint("r1").unwrap(), None);
        assert!(store.rounds("r1").unwrap().is_empty());
        for round in 0..=3 {
            commit(&store, "r1", round).unwrap();
        }
        let rounds = store.rounds("r1").unwrap();
        assert_eq!(
            rounds.iter().map(|r| r.round).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(rounds[2].record_json, r#"{"round":2}"#);
        assert_eq!(rounds[2].committed_at, "2025-01-01T00:00:02Z");
        assert_eq!(
            store.last_checkpoint("r1").unwrap(),
            Some(Checkpoint {
                round: 3,
                checkpoint_json: r#"{"weights":[3.5],"round":3}"#.into()
            })
        );
        assert_eq!(store.run("r1").unwrap().unwrap().rounds_done, 3);
    }

    type Snapshot = (Option<RunRow>, Vec<RoundRow>, Vec<(u32, String)>);

    /// Everything a failed commit must leave untouched: the run, its rounds
    /// and all its checkpoints.
    fn snapshot(store: &Store, run: &str) -> Snapshot {
        let conn = store.lock();
        let mut stmt = conn
            .prepare(
                "SELECT round, checkpoint_json FROM checkpoints WHERE run_id = ?1 ORDER BY round",
            )
            .unwrap();
        let checkpoints = stmt
            .query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        drop(stmt);
        drop(conn);
        (
            store.run(run).unwrap(),
            store.rounds(run).unwrap(),
            checkpoints,
        )
    }

    #[test]
    fn a_round_commit_is_atomic_when_its_second_half_fails() {
        let (_dir, store) = temp_store();
        store.insert_run("r1", "a", "", 5, "t0").unwrap();
        commit(&store, "r1", 0).unwrap();
        commit(&store, "r1", 1).unwrap();
        let before = snapshot(&store, "r1");

        // The round row is inserted, then the checkpoint insert fails.
        let err = store
            .commit_round(&RoundCommit {
                run_id: "r1",
                round: 2,
                record_json: r#"{"round":2}"#,
                checkpoint_json: "{truncated",
                committed_at: "t9",
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::Sqlite { .. }), "{err}");
        assert!(err.to_string().contains("checkpoint_is_json"), "{err}");
        assert!(
            err.to_string().contains("commit round 2 of run 'r1'"),
            "{err}"
        );
        assert_eq!(snapshot(&store, "r1"), before);
        assert_eq!(store.run("r1").unwrap().unwrap().rounds_done, 1);

        // The store still works, and round 2 can then be committed.
        commit(&store, "r1", 2).unwrap();
        assert_eq!(store.last_checkpoint("r1").unwrap().unwrap().round, 2);
    }

    #[test]
    fn a_refused_round_commit_changes_nothing() {
        let (_dir, store) = temp_store();
        store.insert_run("r1", "a", "", 5, "t0").unwrap();
        for round in 0..=2 {
            commit(&store, "r1", round).unwrap();
        }
        let before = snapshot(&store, "r1");

        // The same round again, with different content.
        let err = store
            .commit_round(&RoundCommit {
                run_id: "r1",
                round: 2,
                record_json: r#"{"other":true}"#,
                checkpoint_json: r#"{"other":true}"#,
                committed_at: "t9",
            })
            .unwrap_err();
        assert_eq!(err.problem(), Some(&Problem::DuplicateRound));
        assert_eq!(snapshot(&store, "r1"), before);

        // An earlier round that is missing.
        store.insert_run("r2", "b", "", 5, "t0").unwrap();
        commit(&store, "r2", 0).unwrap();
        commit(&store, "r2", 3).unwrap();
        let err = commit(&store, "r2", 1).unwrap_err();
        assert_eq!(err.problem(), Some(&Problem::StaleRound { last: 3 }));
        assert_eq!(store.rounds("r2").unwrap().len(), 2);

        // A run that does not exist.
        let err = commit(&store, "ghost", 0).unwrap_err();
        assert_eq!(err.problem(), Some(&Problem::UnknownRun));
        assert_eq!(
            count(&store, "SELECT count(*) FROM rounds WHERE run_id = 'ghost'"),
            0
        );
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM checkpoints WHERE run_id = 'ghost'"
            ),
            0
        );
        assert_eq!(snapshot(&store, "r1"), before);
    }

    #[test]
    fn committed_rounds_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let image = dir.path().join("image");
        fs::create_dir(&image).unwrap();
        {
            let store = Store::open(&path).unwrap();
            store.insert_run("r1", "a", "", 9, "t0").unwrap();
            store
                .set_run_state("r1", RunState::Running, "t1", None)
                .unwrap();
            for round in 0..=4 {
                commit(&store, "r1", round).unwrap();
            }
            // The files as a power cut would leave them: the main file and
            // the WAL (not yet checkpointed into the main file), no -shm.
            let wal = PathBuf::from(format!("{}-wal", path.display()));
            assert!(fs::metadata(&wal).unwrap().len() > 0);
            fs::copy(&path, image.join("c.sqlite")).unwrap();
            fs::copy(&wal, image.join("c.sqlite-wal")).unwrap();
            // Never closed: no final checkpoint, no clean shutdown.
            std::mem::forget(store);
        }
        for path in [path, image.join("c.sqlite")] {
            let store = Store::open(&path).unwrap();
            let last = store.last_checkpoint("r1").unwrap().unwrap();
            assert_eq!(last.round, 4, "{}", path.display());
            assert_eq!(last.checkpoint_json, r#"{"weights":[4.5],"round":4}"#);
            let run = store.run("r1").unwrap().unwrap();
            assert_eq!(run.rounds_done, 4);
            assert_eq!(run.state, RunState::Running);
            assert_eq!(store.in_progress().unwrap(), vec![run]);
            commit(&store, "r1", 5).unwrap();
        }
    }

    #[test]
    fn client_seen_upserts() {
        let (_dir, store) = temp_store();
        store.client_seen("b", true, "t1", None).unwrap();
        store.client_seen("a", true, "t1", Some(1.0)).unwrap();
        store.client_seen("a", false, "t2", None).unwrap();
        let clients = store.clients().unwrap();
        assert_eq!(
            clients,
            [
                ClientRow {
                    id: "a".into(),
                    first_seen: "t1".into(),
                    last_seen: "t2".into(),
                    connected: false,
                    budget_epsilon_left: Some(1.0),
                },
                ClientRow {
                    id: "b".into(),
                    first_seen: "t1".into(),
                    last_seen: "t1".into(),
                    connected: true,
                    budget_epsilon_left: None,
                },
            ]
        );
        store.client_seen("a", true, "t3", Some(0.25)).unwrap();
        let a = &store.clients().unwrap()[0];
        assert_eq!((a.first_seen.as_str(), a.last_seen.as_str()), ("t1", "t3"));
        assert_eq!((a.connected, a.budget_epsilon_left), (true, Some(0.25)));

        let err = store
            .client_seen("a", true, "t4", Some(f64::NAN))
            .unwrap_err();
        assert_eq!(err.problem(), Some(&Problem::NanBudget));
        assert_eq!(store.clients().unwrap()[0].last_seen, "t3");
    }

    #[test]
    fn the_store_is_shared_across_threads() {
        let (_dir, store) = temp_store();
        let store = Arc::new(store);
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..10 {
                        let at = format!("t{i}");
                        store
                            .client_seen(&format!("c{t}"), i % 2 == 0, &at, None)
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let clients = store.clients().unwrap();
        assert_eq!(clients.len(), 4);
        assert!(clients.iter().all(|c| c.last_seen == "t9" && !c.connected));
    }

    #[test]
    fn a_database_that_fails_quick_check_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        {
            let store = Store::open(&path).unwrap();
            store.insert_run("r1", "n", "", 3, "t0").unwrap();
            for round in 0..40 {
                store
                    .client_seen(
                        &format!("client-{round:03}-{}", "x".repeat(200)),
                        true,
                        "t",
                        None,
                    )
                    .unwrap();
            }
        }
        let mut bytes = fs::read(&path).unwrap();
        let pages = bytes.len() / 4096;
        assert!(pages >= 4, "{pages} pages");
        // Garbage over the middle pages (the header and schema page intact).
        for page in 1..pages - 1 {
            for b in &mut bytes[page * 4096 + 8..page * 4096 + 200] {
                *b = 0x5a;
            }
        }
        fs::write(&path, &bytes).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(
            matches!(err.problem(), Some(Problem::Corrupt { .. })),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("integrity check"), "{msg}");
    }

    #[test]
    fn a_deleted_write_ahead_log_fails_the_write_that_follows_and_every_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let store = Store::open(&path).unwrap();
        store.insert_run("r1", "n", "", 3, "t0").unwrap();
        commit(&store, "r1", 0).unwrap();
        store.check_files().unwrap();
        fs::remove_file(wal_path(&path)).unwrap();
        let err = commit(&store, "r1", 1).unwrap_err();
        assert_eq!(
            err.problem(),
            Some(&Problem::FilesReplaced {
                file: wal_path(&path)
            })
        );
        assert!(
            err.to_string().contains("-wal' was deleted or replaced"),
            "{err}"
        );
        assert!(err.to_string().contains("--accept-state-loss"), "{err}");
        // Sticky: no later write is acknowledged, even after the file is back.
        fs::write(wal_path(&path), b"").unwrap();
        let err = store.client_seen("a", true, "t", None).unwrap_err();
        assert!(matches!(err.problem(), Some(Problem::FilesReplaced { .. })));
        assert!(store.check_files().is_err());
        // Reads still work.
        assert!(store.run("r1").unwrap().is_some());
        // The damage is reported once.
        assert_eq!(store.take_damage_report(), Some(wal_path(&path)));
        assert_eq!(store.take_damage_report(), None);
    }

    #[test]
    fn a_replaced_database_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let store = Store::open(&path).unwrap();
        store.insert_run("r1", "n", "", 3, "t0").unwrap();
        let moved = dir.path().join("moved.sqlite");
        fs::rename(&path, &moved).unwrap();
        fs::copy(&moved, &path).unwrap();
        let err = store.insert_run("r2", "n", "", 3, "t0").unwrap_err();
        assert_eq!(
            err.problem(),
            Some(&Problem::FilesReplaced { file: path.clone() })
        );
    }

    #[test]
    fn the_identity_is_recorded_and_the_audit_head_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.identity().unwrap(), None);
            // Without an identity there is nothing to move.
            store.record_audit_head(3, &"c".repeat(64)).unwrap();
            assert_eq!(store.identity().unwrap(), None);
            store
                .set_identity(&StateIdentity {
                    state_id: "s1".into(),
                    audit_seq: 1,
                    audit_hash: "a".repeat(64),
                    anchored_at: "t0".into(),
                })
                .unwrap();
            store.record_audit_head(5, &"b".repeat(64)).unwrap();
            store.record_audit_head(4, &"d".repeat(64)).unwrap();
        }
        let store = Store::open(&path).unwrap();
        let identity = store.identity().unwrap().unwrap();
        assert_eq!(identity.state_id, "s1");
        assert_eq!(
            (identity.audit_seq, identity.audit_hash),
            (5, "b".repeat(64))
        );
        // The head update does not leave the connection less durable.
        let sync: i64 = store
            .lock()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2);
    }

    #[test]
    fn run_state_names_round_trip() {
        for state in RunState::ALL {
            assert_eq!(state.as_str().parse::<RunState>(), Ok(state));
            assert_eq!(state.to_string(), state.as_str());
        }
        assert!(RunState::Finished.is_terminal());
        assert!(RunState::Failed.is_terminal());
        assert!(RunState::Cancelled.is_terminal());
        assert!(!RunState::Queued.is_terminal());
        assert!(!RunState::Running.is_terminal());
        let err = "done".parse::<RunState>().unwrap_err();
        assert!(err.to_string().starts_with("'done' is not a run state"));
    }
}
