//! The coordinator's state folder as one thing that cannot vanish silently:
//! the database (`coordinator.db`, [`crate::store`]) and the audit log
//! (`audit.jsonl`, [`crate::audit`]) vouch for each other, and [`open`]
//! refuses to start when one of them is missing, empty, or behind the other.
//!
//! The contract (the store's module doc says how each half is kept):
//!
//! - The database records a [`StateIdentity`]: the state id (random, created
//!   with a new state) and the audit log's head (sequence number and hash of
//!   its last line), updated after every append. The audit log must reach
//!   that line and hold exactly that line there; lines *after* it are fine
//!   (a crash between the append and the head update), since the chain
//!   proves they follow from it.
//! - The audit log records every queued run (`run.queue`) and every committed
//!   round (`round.commit`). Since the last anchor (see below), each such run
//!   must be in the database with at least that round committed: a database
//!   that lost its write-ahead log, or was replaced by an older copy, is
//!   behind the log.
//! - A `state.damaged` event (written when the store noticed, mid-run, that
//!   its files were deleted or replaced) blocks the next start.
//! - A missing or empty database with a non-empty audit log is refused, and
//!   so is a missing or empty audit log with a database that recorded events.
//!
//! Every refusal is one sentence naming the state folder, what is wrong, and
//! the two ways out: restore the folder from a backup, or start with
//! `serve --accept-state-loss`, which starts anyway and appends a
//! `state.lost` event saying what was lost (what the audit log and the
//! database still showed), under a new state id. That event, like
//! `state.created` (a new state) and `state.adopted` (a database written
//! before state identity existed, adopted once), is an *anchor*: the checks
//! above only look at the audit log after the last anchor.
//!
//! An audit log that does not verify (an edited or torn line) is refused with
//! the audit log's own error, whatever the flag says: see `audit recover`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::audit::{AuditEntry, AuditError, AuditLog, GENESIS};
use crate::store::{StateIdentity, Store, StoreError};

/// The database's file name in the state folder.
pub const DB_FILE: &str = "coordinator.db";
/// The audit log's file name in the state folder.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// Audit actions that (re-)anchor the state's identity.
pub const ANCHORS: [&str; 3] = ["state.created", "state.adopted", "state.lost"];

/// The state folder cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The database cannot be opened (including a failed integrity check).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log cannot be opened or does not verify.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The database and the audit log disagree: part of the state was lost.
    #[error(
        "the coordinator's state in '{dir}' is incomplete: {problem}; restore the state folder from a backup, or start with `serve --accept-state-loss` to go on and record the loss in the audit log"
    )]
    Lost {
        /// The state folder.
        dir: PathBuf,
        /// What is missing or behind.
        problem: String,
    },
}

/// An opened, checked state.
#[derive(Debug)]
pub struct OpenedState {
    /// The database.
    pub store: Arc<Store>,
    /// The audit log, reporting its head to the database after every append.
    pub audit: Arc<AuditLog>,
    /// The identity after opening.
    pub identity: StateIdentity,
    /// The anchor written at this start (`state.created`, `state.adopted`,
    /// `state.lost`), if any.
    pub anchored: Option<AuditEntry>,
}

/// What the two halves say about each other.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Neither exists: a new state.
    New,
    /// A database without identity (written before it existed).
    Adopt,
    /// They agree.
    Consistent,
    /// Something was lost: one clause per problem.
    Lost(Vec<String>),
}

/// Opens the database and the audit log in `dir`, checks them against each
/// other (see the module doc), and anchors a new or adopted state. With
/// `accept_loss`, a loss is recorded instead of refused.
pub fn open(dir: &Path, accept_loss: bool) -> Result<OpenedState, StateError> {
    let db_path = dir.join(DB_FILE);
    let audit_path = dir.join(AUDIT_FILE);
    let db_present = fs::metadata(&db_path).is_ok_and(|m| m.len() > 0);
    let audit_entries = if audit_path.exists() {
        crate::audit::verify(&audit_path)?
    } else {
        Vec::new()
    };
    // Refuse before creating anything, so a refusal is the same next time.
    if !db_present && !audit_entries.is_empty() && !accept_loss {
        return Err(StateError::Lost {
            dir: dir.to_path_buf(),
            problem: missing_db(&db_path, &audit_path, &audit_entries),
        });
    }
    let store = Arc::new(Store::open(&db_path)?);
    let sink_store = Arc::clone(&store);
    let (log, entries) = AuditLog::open_with_entries(&audit_path)?;
    let log = log.with_head_sink(Box::new(move |seq, hash| {
        if let Err(e) = sink_store.record_audit_head(seq, hash) {
            tracing::error!("{e}");
        }
    }));
    let identity = store.identity()?;
    let verdict = match &identity {
        None if db_present => Verdict::Adopt,
        None if entries.is_empty() => Verdict::New,
        None => Verdict::Lost(vec![missing_db(&db_path, &audit_path, &entries)]),
        Some(identity) => check(&store, identity, &audit_path, &entries)?,
    };
    let (action, detail) = match verdict {
        Verdict::Consistent => {
            let identity = identity.ok_or_else(|| StateError::Lost {
                dir: dir.to_path_buf(),
                problem: "internal: a consistent state without identity".into(),
            })?;
            return Ok(OpenedState {
                store,
                audit: Arc::new(log),
                identity,
                anchored: None,
            });
        }
        Verdict::New => (
            "state.created",
            format!(
                "a new state: database '{}' and audit log '{}' created",
                db_path.display(),
                audit_path.display()
            ),
        ),
        Verdict::Adopt => (
            "state.adopted",
            format!(
                "adopted database '{}' (written before state identity; it holds {}) with the audit log's {} events",
                db_path.display(),
                db_summary(&store)?,
                entries.len()
            ),
        ),
        Verdict::Lost(problems) if !accept_loss => {
            return Err(StateError::Lost {
                dir: dir.to_path_buf(),
                problem: problems.join("; and "),
            });
        }
        Verdict::Lost(problems) => (
            "state.lost",
            format!(
                "state loss accepted by the operator (serve --accept-state-loss): {}; before this start the audit log showed {} and the database held {}",
                problems.join("; and "),
                audit_summary(&entries),
                db_summary(&store)?
            ),
        ),
    };
    let state_id = new_state_id();
    // The anchor first, then the identity that points at it: a crash between
    // the two leaves the old identity (or none), and the next start decides again.
    let anchor = log.record(
        "coordinator",
        action,
        None,
        &format!("state {state_id}: {detail}"),
    )?;
    let identity = StateIdentity {
        state_id,
        audit_seq: anchor.seq,
        audit_hash: anchor.hash.clone(),
        anchored_at: anchor.at.clone(),
    };
    store.set_identity(&identity)?;
    Ok(OpenedState {
        store,
        audit: Arc::new(log),
        identity,
        anchored: Some(anchor),
    })
}

fn missing_db(db_path: &Path, audit_path: &Path, entries: &[AuditEntry]) -> String {
    format!(
        "the database '{}' is missing or empty, but the audit log '{}' holds {} events of an existing state ({})",
        db_path.display(),
        audit_path.display(),
        entries.len(),
        audit_summary(entries)
    )
}

/// Checks a database with identity against the audit log.
fn check(
    store: &Store,
    identity: &StateIdentity,
    audit_path: &Path,
    entries: &[AuditEntry],
) -> Result<Verdict, StoreError> {
    let mut problems = Vec::new();
    let n = entries.len() as u64;
    let seq = identity.audit_seq;
    if seq > n {
        problems.push(if n == 0 {
            format!(
                "the audit log '{}' is missing or empty, but the database recorded {seq} events in it",
                audit_path.display()
            )
        } else {
            format!(
                "the audit log '{}' ends at line {n}, but the database recorded that it reached line {seq}: lines were removed from its end",
                audit_path.display()
            )
        });
    } else if let Some(recorded) = seq.checked_sub(1).and_then(|i| entries.get(i as usize))
        && recorded.hash != identity.audit_hash
    {
        problems.push(format!(
            "line {seq} of the audit log '{}' is not the line the database recorded (hash {} expected, {} found): the log was replaced or rewritten",
            audit_path.display(),
            short(&identity.audit_hash),
            short(&recorded.hash)
        ));
    } else if seq == 0 && identity.audit_hash != GENESIS {
        problems.push("the database's recorded audit head is invalid".into());
    }

    // Since the last anchor: damage reports, runs and committed rounds.
    let since = entries
        .iter()
        .rposition(|e| ANCHORS.contains(&e.action.as_str()))
        .map_or(0, |i| i + 1);
    let mut committed: BTreeMap<&str, (u32, u64)> = BTreeMap::new();
    let mut queued: Vec<(&str, u64)> = Vec::new();
    for e in &entries[since..] {
        match (e.action.as_str(), e.run_id.as_deref()) {
            ("state.damaged", _) => problems.push(format!(
                "the audit log records at line {} that the database was damaged while the coordinator ran ({})",
                e.seq, e.detail
            )),
            ("run.queue", Some(run)) => queued.push((run, e.seq)),
            ("round.commit", Some(run)) => {
                if let Some(round) = committed_round(&e.detail) {
                    let best = committed.entry(run).or_insert((round, e.seq));
                    if round >= best.0 {
                        *best = (round, e.seq);
                    }
                }
            }
            _ => {}
        }
    }
    for (run, line) in queued {
        if store.run(run)?.is_none() {
            problems.push(format!(
                "the audit log records run '{run}' (line {line}) but the database has no such run"
            ));
            committed.remove(run);
        }
    }
    for (run, (round, line)) in committed {
        let last = store.last_round(run)?;
        if last.is_none_or(|last| last < round) {
            problems.push(format!(
                "the audit log records round {round} of run '{run}' as committed (line {line}) but the database's last committed round of that run is {}",
                last.map_or_else(|| "none".to_string(), |l| l.to_string())
            ));
        }
    }
    Ok(if problems.is_empty() {
        Verdict::Consistent
    } else {
        Verdict::Lost(problems)
    })
}

/// The round of a `round.commit` event's detail ("round N committed").
pub fn committed_round(detail: &str) -> Option<u32> {
    detail
        .strip_prefix("round ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The `round.commit` detail for `round`.
pub fn round_commit_detail(round: u32) -> String {
    format!("round {round} committed")
}

/// "runs a, b; last committed round 3 of run a", from the audit log.
fn audit_summary(entries: &[AuditEntry]) -> String {
    if entries.is_empty() {
        return "no events".into();
    }
    let mut runs: Vec<&str> = Vec::new();
    let mut last = None;
    for e in entries {
        if let Some(run) = e.run_id.as_deref()
            && !runs.contains(&run)
        {
            runs.push(run);
        }
        if e.action == "round.commit"
            && let (Some(run), Some(round)) = (e.run_id.as_deref(), committed_round(&e.detail))
        {
            last = Some((run, round));
        }
    }
    let runs = if runs.is_empty() {
        "no runs".to_string()
    } else {
        format!("runs {}", runs.join(", "))
    };
    match last {
        Some((run, round)) => format!("{runs}; last committed round {round} of run {run}"),
        None => format!("{runs}; no committed round"),
    }
}

/// "2 runs (a: 3 rounds, b: none)", from the database.
fn db_summary(store: &Store) -> Result<String, StoreError> {
    let runs = store.runs()?;
    if runs.is_empty() {
        return Ok("no runs".into());
    }
    let mut parts = Vec::new();
    for run in runs.iter().rev() {
        let last = store.last_round(&run.id)?;
        parts.push(format!(
            "{} ({}, last committed round {})",
            run.id,
            run.state,
            last.map_or_else(|| "none".to_string(), |l| l.to_string())
        ));
    }
    Ok(format!("runs {}", parts.join(", ")))
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn new_state_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opening `dir` (accepting a state loss when `accept_loss`) anchors the
    /// audit chain once with `action`, its detail naming `detail`; opening it
    /// again anchors nothing.
    fn assert_anchored_once(dir: &Path, accept_loss: bool, action: &str, detail: &str) {
        let state = open(dir, accept_loss).unwrap();
        let anchor = state.anchored.unwrap();
        assert_eq!(anchor.action, action);
        assert!(anchor.detail.contains(detail), "{}", anchor.detail);
        drop((state.store, state.audit));
        assert!(open(dir, false).unwrap().anchored.is_none());
    }

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    /// A state with one run, two committed rounds (audited), then closed.
    fn make_state(dir: &Path) {
        let state = open(dir, false).unwrap();
        assert_eq!(
            state.anchored.as_ref().map(|a| a.action.as_str()),
            Some("state.created")
        );
        state.store.insert_run("r1", "n", "", 3, "t0").unwrap();
        state.audit.note("op", "run.queue", Some("r1"), "queued");
        for round in 0..=1 {
            state
                .store
                .commit_round(&crate::store::RoundCommit {
                    run_id: "r1",
                    round,
                    record_json: "null",
                    checkpoint_json: "{}",
                    committed_at: "t",
                })
                .unwrap();
            state.audit.note(
                "coordinator",
                "round.commit",
                Some("r1"),
                &round_commit_detail(round),
            );
        }
        state
            .audit
            .note("coordinator", "coordinator.stop", None, "x");
    }

    fn refused(dir: &Path) -> String {
        match open(dir, false) {
            Err(e @ StateError::Lost { .. }) => e.to_string(),
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("started on a lost state"),
        }
    }

    #[test]
    fn a_new_state_reopens_and_its_head_follows_every_append() {
        let d = dir();
        make_state(d.path());
        let state = open(d.path(), false).unwrap();
        assert!(state.anchored.is_none());
        let (seq, hash) = state.audit.head();
        assert_eq!(
            (state.identity.audit_seq, state.identity.audit_hash.as_str()),
            (seq, hash.as_str())
        );
        assert_eq!(seq, 5);
        // A batch moves the recorded head once, to its last line.
        state.audit.defer("c", "task.refused", Some("r1"), "a");
        state.audit.defer("c", "task.refused", Some("r1"), "b");
        state.audit.flush();
        assert_eq!(state.store.identity().unwrap().unwrap().audit_seq, 7);
    }

    #[test]
    fn a_deleted_database_is_refused_and_accepting_the_loss_is_audited() {
        let d = dir();
        make_state(d.path());
        fs::remove_file(d.path().join(DB_FILE)).unwrap();
        let why = refused(d.path());
        assert!(why.contains(&d.path().display().to_string()), "{why}");
        assert!(why.contains("missing or empty"), "{why}");
        assert!(why.contains("last committed round 1 of run r1"), "{why}");
        assert!(why.contains("--accept-state-loss"), "{why}");
        // Refusing created nothing: the same refusal next time.
        assert!(!d.path().join(DB_FILE).exists());
        assert!(refused(d.path()).contains("missing or empty"));

        assert_anchored_once(d.path(), true, "state.lost", "runs r1");
        let entries = crate::audit::verify(&d.path().join(AUDIT_FILE)).unwrap();
        assert_eq!(entries.len(), 6);
    }

    #[test]
    fn an_emptied_database_is_refused() {
        let d = dir();
        make_state(d.path());
        fs::write(d.path().join(DB_FILE), b"").unwrap();
        assert!(refused(d.path()).contains("missing or empty"));
    }

    #[test]
    fn an_emptied_or_deleted_audit_log_is_refused() {
        let d = dir();
        make_state(d.path());
        fs::write(d.path().join(AUDIT_FILE), b"").unwrap();
        let why = refused(d.path());
        assert!(why.contains("audit log"), "{why}");
        assert!(why.contains("recorded 5 events"), "{why}");
        fs::remove_file(d.path().join(AUDIT_FILE)).unwrap();
        assert!(refused(d.path()).contains("recorded 5 events"));
        let state = open(d.path(), true).unwrap();
        assert_eq!(state.anchored.unwrap().seq, 1, "a new chain, anchored");
    }

    #[test]
    fn the_audit_logs_last_line_deleted_is_refused_and_lines_ahead_are_fine() {
        let d = dir();
        make_state(d.path());
        let path = d.path().join(AUDIT_FILE);
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // Ahead: a line appended without the database hearing of it (a crash
        // between the two writes, or `audit recover` while stopped).
        {
            let log = AuditLog::open(&path).unwrap();
            log.record("operator", "audit.recovered", None, "x")
                .unwrap();
        }
        let state = open(d.path(), false).unwrap();
        state
            .audit
            .note("coordinator", "coordinator.start", None, "y");
        assert_eq!(state.store.identity().unwrap().unwrap().audit_seq, 7);
        drop(state);
        // Cut the last two lines.
        fs::write(&path, lines.join("\n") + "\n").unwrap();
        let why = refused(d.path());
        assert!(why.contains("ends at line 5"), "{why}");
        assert!(why.contains("reached line 7"), "{why}");
    }

    #[test]
    fn a_database_behind_the_audit_logs_rounds_is_refused() {
        let d = dir();
        make_state(d.path());
        // The audit log says round 2 was committed; the database never heard.
        {
            let log = AuditLog::open(&d.path().join(AUDIT_FILE)).unwrap();
            log.record(
                "coordinator",
                "round.commit",
                Some("r1"),
                "round 2 committed",
            )
            .unwrap();
            log.record("op", "run.queue", Some("ghost"), "queued")
                .unwrap();
        }
        let why = refused(d.path());
        assert!(
            why.contains("round 2 of run 'r1' as committed (line 6)"),
            "{why}"
        );
        assert!(
            why.contains("last committed round of that run is 1"),
            "{why}"
        );
        assert!(why.contains("run 'ghost'"), "{why}");
        // Accepted: anchored, and the old events no longer count.
        drop(open(d.path(), true).unwrap());
        assert!(open(d.path(), false).unwrap().anchored.is_none());
    }

    #[test]
    fn a_damage_report_blocks_the_next_start() {
        let d = dir();
        make_state(d.path());
        {
            let log = AuditLog::open(&d.path().join(AUDIT_FILE)).unwrap();
            log.record("coordinator", "state.damaged", None, "wal deleted")
                .unwrap();
        }
        assert!(refused(d.path()).contains("wal deleted"));
    }

    #[test]
    fn an_old_database_without_identity_is_adopted_once() {
        let d = dir();
        make_state(d.path());
        {
            let conn = rusqlite::Connection::open(d.path().join(DB_FILE)).unwrap();
            conn.execute("DELETE FROM state_identity", []).unwrap();
        }
        assert_anchored_once(d.path(), false, "state.adopted", "r1 (queued");
    }

    #[test]
    fn committed_round_parses_its_own_detail() {
        assert_eq!(committed_round(&round_commit_detail(17)), Some(17));
        assert_eq!(committed_round("round x"), None);
    }
}
