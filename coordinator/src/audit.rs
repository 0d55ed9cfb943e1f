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
