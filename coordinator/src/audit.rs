//! The coordinator's audit log: who did what and when, as hash-chained JSON
//! lines (one per event), so that an edited, removed, reordered or inserted line
//! is detected by `fedprofile-coordinator audit verify`.
//!
//! Each line is `{"seq", "at", "actor", "action", "run_id", "detail", "prev_hash",
//! "hash"}`; `hash` is the SHA-256 (hex) of the line's JSON with `hash` set to
//! the empty string ([`Canonical::EmptyHashMember`] of the hash chain shared
//! with the privacy ledgers, `fedprofile_privacy::hash_chain`), `prev_hash` is
//! the previous line's `hash` (64 zeros for the first). A line is written and
//! flushed before the action it records is acknowledged.
//!
//! Appends can be batched: [`AuditLog::defer`] queues an event that needs no
//! acknowledgement (a refused task, a rejected update), and the queue is
//! written with the next [`AuditLog::record`] (before its event, so the order
//! of events is kept) or by [`AuditLog::flush`]. A batch is chained exactly as
//! if its lines were written one by one, but goes out in one write and one
//! fsync. Each line's `at` is when its event happened (when it was queued),
//! so `at` is not always ascending. The daemon flushes at the latest when a
//! round is committed and when a run ends; a crash loses at most the queued
//! lines of the round in progress (the metrics counted them already).
//!
//! After every append (one line or a batch) the log reports its new head to
//! an optional sink ([`AuditLog::with_head_sink`]): the daemon records it in
//! the database, so a log that lost lines from its end is detected at the next
//! start (see `crate::state`).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fedprofile_privacy::hash_chain::{self, Canonical, ChainError};
use serde::{Deserialize, Serialize};

/// The first line's `prev_hash`.
pub const GENESIS: &str = hash_chain::GENESIS;

/// How an audit line's hash is made (the form every audit log so far uses).
const CANONICAL: Canonical = Canonical::EmptyHashMember;

/// The audit log cannot be written or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The last line is incomplete (no newline, not an entry): a write that a
    /// power loss or crash cut short. The lines before it verify.
    #[error(
        "audit log '{path}' line {line}: incomplete last line ({bytes} bytes without a newline), as a power loss or crash leaves it; the {line_before} lines before it verify. Recover with `fedprofile-coordinator audit recover {path}`: it saves the torn bytes beside the log and records the recovery in the log"
    )]
    TornTail {
        /// The file.
        path: PathBuf,
        /// 1-based number of the incomplete line.
        line: usize,
        /// Lines before it (intact).
        line_before: usize,
        /// Length of the incomplete line.
        bytes: usize,
    },
    /// I/O on the log file.
    #[error("audit log '{path}': {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not a valid audit entry.
    #[error("audit log '{path}' line {line}: not a valid entry ({reason})")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Why.
        reason: String,
    },
    /// A line's content does not match its hash: it was edited.
    #[error("audit log '{path}' line {line}: edited (its hash does not match its content)")]
    Edited {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// A line does not chain to the one before it.
    #[error(
        "audit log '{path}' line {line}: out of chain (expected sequence {expected_seq} after the previous line, found {found_seq}; a line was removed, reordered or inserted)"
    )]
    Broken {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Sequence number expected.
        expected_seq: u64,
        /// Sequence number found.
        found_seq: u64,
    },
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// 1-based sequence number.
    pub seq: u64,
    /// RFC 3339 time.
    pub at: String,
    /// Who: an operator's or partner's certificate identity, or `coordinator`.
    pub actor: String,
    /// What, e.g. `run.start`, `client.join`, `update.rejected`.
    pub action: String,
    /// The run concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Details in words.
    pub detail: String,
    /// Previous line's hash.
    pub prev_hash: String,
    /// This line's hash.
    #[serde(default)]
    pub hash: String,
}

fedprofile_privacy::chained_by_hash_field!(AuditEntry);

struct Head {
    file: File,
    seq: u64,
    hash: String,
}

/// Called with the new head (sequence number and hash of the last line)
/// after every append.
pub type HeadSink = Box<dyn Fn(u64, &str) + Send + Sync>;

/// An open, append-only audit log.
pub struct AuditLog {
    path: PathBuf,
    head: Mutex<Head>,
    /// Deferred events, written before the next recorded one (lock order:
    /// `head`, then `pending`).
    pending: Mutex<Vec<Event>>,
    on_append: Option<HeadSink>,
}

/// An event to append: everything but its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When it happened (RFC 3339).
    pub at: String,
    /// Who (see [`AuditEntry::actor`]).
    pub actor: String,
    /// What (see [`AuditEntry::action`]).
    pub action: String,
    /// The run concerned, if any.
    pub run_id: Option<String>,
    /// Details in words.
    pub detail: String,
}

impl Event {
    /// An event that happens now.
    pub fn now(actor: &str, action: &str, run_id: Option<&str>, detail: &str) -> Event {
        Event {
            at: now(),
            actor: actor.to_string(),
            action: action.to_string(),
            run_id: run_id.map(str::to_string),
            detail: detail.to_string(),
        }
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish()
    }
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl AuditLog {
    /// Past this many deferred events, [`AuditLog::defer`] flushes them.
    pub const MAX_PENDING: usize = 10_000;

    /// Opens (verifying what is there) or creates the log.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        Ok(AuditLog::open_with_entries(path)?.0)
    }

    /// Opens (verifying what is there) or creates the log, and returns the
    /// entries it already holds.
    pub fn open_with_entries(path: &Path) -> Result<(AuditLog, Vec<AuditEntry>), AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let entries = if path.exists() {
            verify(path)?
        } else {
            Vec::new()
        };
        let (seq, hash) = entries
            .last()
            .map_or((0, GENESIS.to_string()), |e| (e.seq, e.hash.clone()));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let log = AuditLog {
            path: path.to_path_buf(),
            head: Mutex::new(Head { file, seq, hash }),
            pending: Mutex::new(Vec::new()),
            on_append: None,
        };
        Ok((log, entries))
    }

    /// Reports the head to `sink` after every append.
    pub fn with_head_sink(mut self, sink: HeadSink) -> AuditLog {
        self.on_append = Some(sink);
        self
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sequence number and hash of the last line ([`GENESIS`] when empty).
    pub fn head(&self) -> (u64, String) {
        let head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        (head.seq, head.hash.clone())
    }

    /// Appends one event, after the deferred ones (all written and flushed
    /// before returning).
    pub fn record(
        &self,
        actor: &str,
        action: &str,
        run_id: Option<&str>,
        detail: &str,
    ) -> Result<AuditEntry, AuditError> {
        let mut entries = self.record_batch(vec![Event::now(actor, action, run_id, detail)])?;
        entries.pop().ok_or_else(|| AuditError::Malformed {
            path: self.path.clone(),
            line: 0,
            reason: "internal: an append wrote no line".into(),
        })
    }

    /// Queues an event that happens now, to be written with the next append
    /// (at once if [`AuditLog::MAX_PENDING`] events are waiting).
    pub fn defer(&self, actor: &str, action: &str, run_id: Option<&str>, detail: &str) {
        let full = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.push(Event::now(actor, action, run_id, detail));
            pending.len() >= Self::MAX_PENDING
        };
        if full {
            self.flush();
        }
    }

    /// Events deferred and not yet written.
    pub fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Writes the deferred events as one append (nothing if none), logging
    /// (not failing) if the log cannot be written.
    pub fn flush(&self) {
        if let Err(e) = self.record_batch(Vec::new()) {
            tracing::error!("{e}");
        }
    }

    /// Appends the deferred events and then `events`, in order, chained as if
    /// recorded one by one, with one write and one fsync for all of them
    /// (written and flushed before returning; returns the lines written). If
    /// the write fails, the head stays where it was and none of them counts
    /// as written (a partly written last line is a torn tail).
    pub fn record_batch(&self, events: Vec<Event>) -> Result<Vec<AuditEntry>, AuditError> {
        let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        all.extend(events);
        let events = all;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (mut seq, mut prev) = (head.seq, head.hash.clone());
        let mut text = String::new();
        let mut entries = Vec::with_capacity(events.len());
        for event in events {
            let mut entry = AuditEntry {
                seq: seq + 1,
                at: event.at,
                actor: event.actor,
                action: event.action,
                run_id: event.run_id,
                detail: event.detail,
                prev_hash: prev,
                hash: String::new(),
            };
            let line = CANONICAL
                .seal(&mut entry)
                .map_err(|e| AuditError::Malformed {
                    path: self.path.clone(),
                    line: entry.seq as usize,
                    reason: e.to_string(),
                })?;
            text.push_str(&line);
            text.push('\n');
            seq = entry.seq;
            prev = entry.hash.clone();
            entries.push(entry);
        }
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        head.file.write_all(text.as_bytes()).map_err(io)?;
        head.file.flush().map_err(io)?;
        head.file.sync_data().map_err(io)?;
        head.seq = seq;
        head.hash = prev;
        if let Some(sink) = &self.on_append {
            sink(head.seq, &head.hash);
        }
        Ok(entries)
    }

    /// Records an event, logging (not failing) if the log cannot be written.
    pub fn note(&self, actor: &str, action: &str, run_id: Option<&str>, detail: &str) {
        if let Err(e) = self.record(actor, action, run_id, detail) {
            tracing::error!("{e}");
        }
    }
}

/// Reads and checks the whole chain; the error names the first bad line.
pub fn verify(path: &Path) -> Result<Vec<AuditEntry>, AuditError> {
    let file = File::open(path).map_err(|source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut entries: Vec<AuditEntry> = Vec::new();
    let mut prev_hash = GENESIS.to_string();
    let mut reader = BufReader::new(file);
    let mut raw = String::new();
    let mut i = 0;
    loop {
        raw.clear();
        let read = reader
            .read_line(&mut raw)
            .map_err(|source| AuditError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if read == 0 {
            break;
        }
        i += 1;
        let n = i;
        let complete = raw.ends_with('\n');
        let line = raw.trim_end_matches(['\n', '\r']).to_string();
        if !complete && serde_json::from_str::<AuditEntry>(&line).is_err() {
            return Err(AuditError::TornTail {
                path: path.to_path_buf(),
                line: n,
                line_before: n - 1,
                bytes: raw.len(),
            });
        }
        let entry: AuditEntry = serde_json::from_str(&line).map_err(|e| AuditError::Malformed {
            path: path.to_path_buf(),
            line: n,
            reason: e.to_string(),
        })?;
        match CANONICAL.check(&line, &entry) {
            Ok(()) => {}
            Err(ChainError::Mismatch { .. }) => {
                return Err(AuditError::Edited {
                    path: path.to_path_buf(),
                    line: n,
                });
            }
            Err(e) => {
                return Err(AuditError::Malformed {
                    path: path.to_path_buf(),
                    line: n,
                    reason: e.to_string(),
                });
            }
        }
        let expected_seq = entries.last().map_or(1, |e| e.seq + 1);
        if entry.prev_hash != prev_hash || entry.seq != expected_seq {
            return Err(AuditError::Broken {
                path: path.to_path_buf(),
                line: n,
                expected_seq,
                found_seq: entry.seq,
            });
        }
        prev_hash = entry.hash.clone();
        entries.push(entry);
    }
    Ok(entries)
}

/// What [`recover_torn_tail`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    /// Where the torn bytes were saved.
    pub saved: PathBuf,
    /// How many bytes were cut.
    pub bytes: usize,
    /// Intact events kept.
    pub kept: usize,
}

/// Cuts an incomplete last line (see [`AuditError::TornTail`]) off the log,
/// saves its bytes to `<log>.torn-<unix seconds>`, and appends an
/// `audit.recovered` event saying so. Any other problem (an edited or
/// removed line) is returned unchanged: only a torn tail is recoverable.
pub fn recover_torn_tail(path: &Path) -> Result<Recovered, AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let (line, bytes) = match verify(path) {
        Err(AuditError::TornTail { line, bytes, .. }) => (line, bytes),
        Err(other) => return Err(other),
        Ok(entries) => {
            return Err(AuditError::Malformed {
                path: path.to_path_buf(),
                line: entries.len(),
                reason: "nothing to recover: the log verifies".into(),
            });
        }
    };
    let content = std::fs::read(path).map_err(io)?;
    let keep = content.len().saturating_sub(bytes);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut saved = path.as_os_str().to_owned();
    saved.push(format!(".torn-{stamp}"));
    let saved = PathBuf::from(saved);
    std::fs::write(&saved, &content[keep..]).map_err(io)?;
    let file = OpenOptions::new().write(true).open(path).map_err(io)?;
    file.set_len(keep as u64).map_err(io)?;
    file.sync_all().map_err(io)?;
    let log = AuditLog::open(path)?;
    log.record(
        "operator",
        "audit.recovered",
        None,
        &format!(
            "cut an incomplete last line (line {line}, {bytes} bytes, saved to {})",
            saved.display()
        ),
    )?;
    Ok(Recovered {
        saved,
        bytes,
        kept: line - 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with_three(dir: &Path) -> PathBuf {
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.record("alice", "run.start", Some("r1"), "started run r1")
            .unwrap();
        log.record("partner-a", "client.join", None, "joined")
            .unwrap();
        log.record("coordinator", "run.finish", Some("r1"), "finished")
            .unwrap();
        path
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// An audit log written by the demo's DP run before the hash chain was
    /// shared with the privacy ledgers: it must keep verifying and extending.
    #[test]
    fn a_log_written_by_an_earlier_release_still_verifies_and_extends() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hash-chain/audit.jsonl");
        let entries = verify(&fixture).unwrap();
        assert_eq!(entries.len(), 35);
        assert_eq!(
            entries[34].hash,
            "0b48760a2f9de4367e4d5fecdbc2595d91e633bd7a44676a1aba66c7602f2de1"
        );
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("audit.jsonl");
        std::fs::copy(&fixture, &copy).unwrap();
        let log = AuditLog::open(&copy).unwrap();
        log.record("op", "run.start", Some("r2"), "after the upgrade")
            .unwrap();
        let again = verify(&copy).unwrap();
        assert_eq!(again.len(), 36);
        assert_eq!(again[35].prev_hash, entries[34].hash);
    }

    #[test]
    fn an_intact_log_verifies_and_reopening_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with_three(dir.path());
        assert_eq!(verify(&path).unwrap().len(), 3);
        let log = AuditLog::open(&path).unwrap();
        let e = log.record("bob", "run.cancel", Some("r2"), "x").unwrap();
        assert_eq!(e.seq, 4);
        assert_eq!(verify(&path).unwrap().len(), 4);
    }

    #[test]
    fn a_torn_last_line_is_named_and_recovered_by_an_audited_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with_three(dir.path());
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"seq\":4,\"at\":\"2026-");
        std::fs::write(&path, &text).unwrap();
        let err = verify(&path).unwrap_err();
        assert!(
            matches!(
                err,
                AuditError::TornTail {
                    line: 4,
                    line_before: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("audit recover"), "{err}");
        assert!(
            AuditLog::open(&path).is_err(),
            "a torn log must not be reopened silently"
        );
        let done = recover_torn_tail(&path).unwrap();
        assert_eq!((done.kept, done.bytes), (3, 20));
        assert_eq!(
            std::fs::read_to_string(&done.saved).unwrap(),
            "{\"seq\":4,\"at\":\"2026-"
        );
        let entries = verify(&path).unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[3].action, "audit.recovered");
        // An edited line is not "recovered".
        let mut lines = lines(&path);
        lines[1] = lines[1].replace("\"seq\":2", "\"seq\":9");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        assert!(recover_torn_tail(&path).is_err());
    }

    #[test]
    fn deferred_events_go_out_in_one_batch_before_the_next_recorded_one_and_verify() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = log_with_three(dir.path());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let writes = Arc::new(AtomicU64::new(0));
        let (h, w) = (Arc::clone(&heads), Arc::clone(&writes));
        let log = AuditLog::open(&path)
            .unwrap()
            .with_head_sink(Box::new(move |seq, hash| {
                w.fetch_add(1, Ordering::SeqCst);
                h.lock().unwrap().push((seq, hash.to_string()));
            }));
        for i in 0..100 {
            log.defer("partner-a", "task.refused", Some("r1"), &format!("t{i}"));
        }
        assert_eq!(log.pending(), 100);
        assert_eq!(lines(&path).len(), 3, "nothing written yet");
        let commit = log
            .record(
                "coordinator",
                "round.commit",
                Some("r1"),
                "round 1 committed",
            )
            .unwrap();
        assert_eq!(commit.seq, 104, "after the deferred ones");
        assert_eq!(log.pending(), 0);
        assert_eq!(writes.load(Ordering::SeqCst), 1, "one append for 101 lines");
        assert_eq!(heads.lock().unwrap()[0], (104, commit.hash.clone()));
        assert_eq!(log.head(), (104, commit.hash.clone()));
        let entries = verify(&path).unwrap();
        assert_eq!(entries.len(), 104);
        assert_eq!(entries[3].detail, "t0");
        assert_eq!(entries[102].detail, "t99");
        // An empty flush writes nothing; a flush writes what is deferred.
        log.flush();
        assert_eq!(writes.load(Ordering::SeqCst), 1);
        log.defer("partner-b", "update.rejected", None, "x");
        log.flush();
        assert_eq!(writes.load(Ordering::SeqCst), 2);
        assert_eq!(verify(&path).unwrap().len(), 105);
        // Reopened, the chain continues.
        drop(log);
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.record("a", "b", None, "c").unwrap().seq, 106);
        assert_eq!(verify(&path).unwrap().len(), 106);
    }

    #[test]
    fn a_full_queue_is_written_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        for i in 0..AuditLog::MAX_PENDING {
            log.defer("c", "task.refused", None, &i.to_string());
        }
        assert_eq!(log.pending(), 0);
        assert_eq!(verify(&path).unwrap().len(), AuditLog::MAX_PENDING);
    }

    #[test]
    fn an_edited_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with_three(dir.path());
        let mut l = lines(&path);
        l[1] = l[1].replace("partner-a", "partner-z");
        std::fs::write(&path, l.join("\n") + "\n").unwrap();
        let err = verify(&path).unwrap_err();
        assert!(matches!(err, AuditError::Edited { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("line 2: edited"));
    }

    #[test]
    fn removed_reordered_and_inserted_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with_three(dir.path());
        let l = lines(&path);
        std::fs::write(&path, format!("{}\n{}\n", l[0], l[2])).unwrap();
        assert!(matches!(
            verify(&path).unwrap_err(),
            AuditError::Broken { line: 2, .. }
        ));
        std::fs::write(&path, format!("{}\n{}\n{}\n", l[0], l[2], l[1])).unwrap();
        assert!(matches!(
            verify(&path).unwrap_err(),
            AuditError::Broken { line: 2, .. }
        ));
        // A well-formed line from another log, inserted: out of chain.
        let other = log_with_three(&dir.path().join("other"));
        let foreign = lines(&other)[1].clone();
        std::fs::write(&path, format!("{}\n{foreign}\n{}\n{}\n", l[0], l[1], l[2])).unwrap();
        assert!(matches!(
            verify(&path).unwrap_err(),
            AuditError::Broken { line: 2, .. }
        ));
    }
}
