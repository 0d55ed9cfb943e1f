//! The coordinator's audit log: who did what and when, as hash-chained JSON
//! lines (one per event), so that an edited, removed, reordered or inserted line
//! is detected by `fedprofile-coordinator audit verify`.
//!
//! Each line is `{"seq", "at", "actor", "action", "run_id", "detail", "prev_hash",
//! "hash"}`; `hash` is the SHA-256 (hex) of the line's JSON without the `hash`
//! field, `prev_hash` is the previous line's `hash` (64 zeros for the first). A
//! line is written and flushed before the action it records is acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The first line's `prev_hash`.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The audit log cannot be written or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
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

fn hash_of(entry: &AuditEntry) -> String {
    let mut unhashed = entry.clone();
    unhashed.hash = String::new();
    // Serialization of this struct is deterministic (field order is fixed).
    let text = serde_json::to_string(&unhashed).unwrap_or_default();
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

struct Head {
    file: File,
    seq: u64,
    hash: String,
}

/// An open, append-only audit log.
pub struct AuditLog {
    path: PathBuf,
    head: Mutex<Head>,
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
    /// Opens (verifying what is there) or creates the log.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
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
        Ok(AuditLog {
            path: path.to_path_buf(),
            head: Mutex::new(Head { file, seq, hash }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event (written and flushed before returning).
    pub fn record(
        &self,
        actor: &str,
        action: &str,
        run_id: Option<&str>,
        detail: &str,
    ) -> Result<AuditEntry, AuditError> {
        let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        let mut entry = AuditEntry {
            seq: head.seq + 1,
            at: now(),
            actor: actor.to_string(),
            action: action.to_string(),
            run_id: run_id.map(str::to_string),
            detail: detail.to_string(),
            prev_hash: head.hash.clone(),
            hash: String::new(),
        };
        entry.hash = hash_of(&entry);
        let mut line = serde_json::to_string(&entry).map_err(|e| AuditError::Malformed {
            path: self.path.clone(),
            line: entry.seq as usize,
            reason: e.to_string(),
        })?;
        line.push('\n');
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        head.file.write_all(line.as_bytes()).map_err(io)?;
        head.file.flush().map_err(io)?;
        head.file.sync_data().map_err(io)?;
        head.seq = entry.seq;
        head.hash = entry.hash.clone();
        Ok(entry)
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
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let entry: AuditEntry = serde_json::from_str(&line).map_err(|e| AuditError::Malformed {
            path: path.to_path_buf(),
            line: n,
            reason: e.to_string(),
        })?;
        if hash_of(&entry) != entry.hash {
            return Err(AuditError::Edited {
                path: path.to_path_buf(),
                line: n,
            });
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
