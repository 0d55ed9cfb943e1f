//! Append-only, hash-chained JSON-lines ledger of charged tasks.
//!
//! Each line is one JSON object with the fields of [`LedgerEntry`] in a fixed
//! order, `hash` last. `hash` is the hex SHA-256 of the line's own bytes with
//! the `,"hash":"…"` member removed (the canonical line), and `prev_hash` is
//! the previous line's `hash` (64 zeros on the first line), so editing any
//! byte, removing, reordering or splicing in a line breaks the chain at a
//! line that [`verify`] names. Removing lines at the end is only detectable
//! against a stored [`VerifiedLedger::head_hash`].
//!
//! The ledger records costs; the epsilons in it come from the
//! [`crate::accountant`] (cost of the charge alone, and of the composition of
//! every charge in the ledger).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::accountant::{Accountant, Charge, Composition, MechanismKind};
use crate::error::PrivacyError;
use crate::hash_chain::{self, Canonical, ChainError};

/// `prev_hash` of the first line.
pub const GENESIS_HASH: &str = hash_chain::GENESIS;

/// Errors reading, verifying or appending to a ledger.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The file could not be read or written.
    #[error("ledger {path}: {source}")]
    Io {
        /// The ledger file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line is not a ledger entry.
    #[error("ledger line {line} is malformed: {reason}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A line's content does not match its hash: it was edited.
    #[error("ledger line {line} was edited: stored hash {stored} but content hashes to {computed}")]
    HashMismatch {
        /// 1-based line number.
        line: usize,
        /// The hash written in the line.
        stored: String,
        /// The hash of the line's content.
        computed: String,
    },
    /// A line does not follow the previous one: lines were removed,
    /// reordered, or it was appended out of chain.
    #[error(
        "ledger line {line} is out of chain: prev_hash {found} but the previous line hashes to {expected} ({hint})"
    )]
    BrokenChain {
        /// 1-based line number.
        line: usize,
        /// Hash of the previous line (or the genesis hash).
        expected: String,
        /// The line's `prev_hash`.
        found: String,
        /// What the mismatch suggests.
        hint: String,
    },
    /// A task id appears twice.
    #[error("ledger line {line} charges task {task_id} again (first charged on line {first_line})")]
    DuplicateTask {
        /// 1-based line number.
        line: usize,
        /// The task id.
        task_id: String,
        /// Line of the first charge.
        first_line: usize,
    },
    /// The file changed since it was opened.
    #[error("ledger {path} changed since it was opened: head hash {found}, expected {expected}")]
    ConcurrentModification {
        /// The ledger file.
        path: PathBuf,
        /// Head hash held in memory.
        expected: String,
        /// Head hash of the file.
        found: String,
    },
    /// The new entry's epsilon is not finite.
    #[error("cannot record an infinite privacy loss for task {0}")]
    InfiniteLoss(String),
    /// Accounting failed.
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
}

/// One charged task, as stored on one line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEntry {
    /// Training run.
    pub run_id: String,
    /// Federated round.
    pub round: u64,
    /// Task id (unique in the ledger).
    pub task_id: String,
    /// Mechanism.
    pub mechanism: MechanismKind,
    /// Sampling rate.
    pub q: f64,
    /// Noise multiplier.
    pub sigma: f64,
    /// Clip norm the noise was calibrated to.
    pub clip_norm: f64,
    /// Steps.
    pub steps: u64,
    /// Epsilon of this charge alone at `delta`.
    pub cost_epsilon: f64,
    /// Epsilon of every charge up to and including this line at `delta`.
    pub cumulative_epsilon: f64,
    /// Delta of both epsilons.
    pub delta: f64,
    /// Hash of the previous line.
    pub prev_hash: String,
    /// Hash of this line's canonical form.
    pub hash: String,
}

/// A ledger line's hash covers its stored bytes without the `hash` member.
const CANONICAL: Canonical = Canonical::WithoutHashMember;

crate::chained_by_hash_field!(LedgerEntry);

impl LedgerEntry {
    /// The charge this line records.
    pub fn charge(&self) -> Charge {
        Charge {
            mechanism: self.mechanism,
            q: self.q,
            sigma: self.sigma,
            steps: self.steps,
        }
    }
}

/// What to record for a task.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargeRecord {
    /// Training run.
    pub run_id: String,
    /// Federated round.
    pub round: u64,
    /// Task id.
    pub task_id: String,
    /// The charge (from the mechanism's privacy map).
    pub charge: Charge,
    /// Clip norm used.
    pub clip_norm: f64,
    /// Delta at which epsilons are recorded.
    pub delta: f64,
}

/// Outcome of [`Ledger::append_within`].
#[derive(Debug, Clone, PartialEq)]
pub enum Guarded {
    /// Written (or already there).
    Charged(Appended),
    /// Not written: the budget would be exceeded.
    Refused {
        /// The cumulative epsilon the charge would have reached.
        after: f64,
    },
}

/// Outcome of [`Ledger::append`].
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// A new line was written and synced.
    New(LedgerEntry),
    /// The task was already charged: nothing was written.
    Existing(LedgerEntry),
}

impl Appended {
    /// The entry, new or existing.
    pub fn entry(&self) -> &LedgerEntry {
        match self {
            Appended::New(e) | Appended::Existing(e) => e,
        }
    }
}

/// A ledger whose every line has been verified.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedLedger {
    /// Entries in file order.
    pub entries: Vec<LedgerEntry>,
    /// Hash of the last line (the genesis hash if empty); store it elsewhere
    /// to detect truncation.
    pub head_hash: String,
}

impl VerifiedLedger {
    /// All charges in order.
    pub fn charges(&self) -> Vec<Charge> {
        self.entries.iter().map(LedgerEntry::charge).collect()
    }
}

fn chain_hint(entries: &[LedgerEntry], line_idx: usize, found: &str) -> String {
    if let Some(j) = entries.iter().position(|e| e.hash == found) {
        if j > line_idx {
            return format!("it follows line {}: lines were reordered", j + 1);
        }
        return format!(
            "it follows line {}: lines were removed or reordered in between",
            j + 1
        );
    }
    if found == GENESIS_HASH {
        return "it claims to be the first line: earlier lines were removed or a new ledger was spliced in"
            .to_string();
    }
    "it follows no line in the ledger: a line before it was removed, or it was appended out of chain"
        .to_string()
}

/// Reads and verifies a ledger file: every line's hash, the chain from the
/// genesis hash, and uniqueness of task ids. Names the first bad line (1-based).
/// A missing file is an empty ledger.
pub fn verify(path: impl AsRef<Path>) -> Result<VerifiedLedger, LedgerError> {
    verify_with_state(path.as_ref()).map(|(verified, _)| verified)
}

/// What this process knows of the file it last read or wrote: its length and
/// modification time. Another writer changes at least one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileState {
    len: u64,
    modified: Option<SystemTime>,
}

impl FileState {
    /// The state of the file at `path` (length 0 if it does not exist).
    fn of(path: &Path) -> Result<FileState, LedgerError> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(FileState {
                len: m.len(),
                modified: m.modified().ok(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileState {
                len: 0,
                modified: None,
            }),
            Err(source) => Err(LedgerError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

/// [`verify`], also returning the state of the file as read: its length is
/// the number of bytes verified, its time the one seen before reading.
fn verify_with_state(path: &Path) -> Result<(VerifiedLedger, FileState), LedgerError> {
    let io_err = |source| LedgerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((
                VerifiedLedger {
                    entries: Vec::new(),
                    head_hash: GENESIS_HASH.to_string(),
                },
                FileState {
                    len: 0,
                    modified: None,
                },
            ));
        }
        Err(e) => return Err(io_err(e)),
    };
    let modified = file.metadata().map_err(io_err)?.modified().ok();
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io_err)?;
    let state = FileState {
        len: text.len() as u64,
        modified,
    };
    // Parse and hash every line first, so chain hints can look ahead.
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        entries.push(parse_line(line, i + 1)?);
    }
    let mut expected = GENESIS_HASH.to_string();
    let mut first_line: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        if e.prev_hash != expected {
            return Err(LedgerError::BrokenChain {
                line: i + 1,
                expected,
                found: e.prev_hash.clone(),
                hint: chain_hint(&entries, i, &e.prev_hash),
            });
        }
        if let Some(&j) = first_line.get(e.task_id.as_str()) {
            return Err(LedgerError::DuplicateTask {
                line: i + 1,
                task_id: e.task_id.clone(),
                first_line: j + 1,
            });
        }
        first_line.insert(&e.task_id, i);
        expected = e.hash.clone();
    }
    Ok((
        VerifiedLedger {
            entries,
            head_hash: expected,
        },
        state,
    ))
}

/// Parses line `n` (1-based) and checks that its content hashes to its `hash`.
fn parse_line(line: &str, n: usize) -> Result<LedgerEntry, LedgerError> {
    let entry: LedgerEntry = serde_json::from_str(line).map_err(|e| LedgerError::Malformed {
        line: n,
        reason: e.to_string(),
    })?;
    match CANONICAL.check(line, &entry) {
        Ok(()) => {}
        Err(ChainError::Mismatch { stored, computed }) => {
            return Err(LedgerError::HashMismatch {
                line: n,
                stored,
                computed,
            });
        }
        Err(e) => {
            return Err(LedgerError::Malformed {
                line: n,
                reason: e.to_string(),
            });
        }
    }
    Ok(entry)
}

/// The last line of the first `len` bytes of `file` (without its newline),
/// read backwards in growing chunks; `None` if it is not UTF-8.
fn last_line(file: &mut File, len: u64) -> std::io::Result<Option<String>> {
    let mut chunk: u64 = 4096;
    loop {
        let from = len.saturating_sub(chunk);
        file.seek(SeekFrom::Start(from))?;
        let mut buf = vec![0; usize::try_from(len - from).unwrap_or(usize::MAX)];
        file.read_exact(&mut buf)?;
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if let Some(pos) = body.iter().rposition(|&b| b == b'\n') {
            return Ok(String::from_utf8(body[pos + 1..].to_vec()).ok());
        }
        if from == 0 {
            return Ok(String::from_utf8(body.to_vec()).ok());
        }
        chunk = chunk.saturating_mul(4);
    }
}

/// An open ledger file (single writer).
///
/// It holds the incremental composition of every charge in the file
/// ([`Composition`], built once when the file is opened and verified), so an
/// append costs one PLD per distinct (q, sigma) in the ledger, not a
/// recomposition of the whole history. Before each append it checks cheaply
/// that no other writer touched the file: same length and modification time
/// as after its own last read or write, and a last line that hashes to the
/// head hash it holds; if the length or time differ, the whole file is
/// verified again and must still end at that head. (An edit of an earlier
/// line that keeps the file's length and lands within the file system's
/// time granularity of our own write is only found by [`verify`] or the
/// next [`Ledger::open`].)
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    verified: VerifiedLedger,
    accountant: Accountant,
    composition: Composition,
    /// Index in `verified.entries` of each task id.
    tasks: HashMap<String, usize>,
    /// The file as this ledger last read or wrote it.
    file: FileState,
}

impl Ledger {
    /// Opens (and verifies) the ledger at `path`; a missing file is created on first append.
    pub fn open(path: impl Into<PathBuf>) -> Result<Ledger, LedgerError> {
        let path = path.into();
        let (verified, file) = verify_with_state(&path)?;
        let accountant = Accountant::default();
        let mut composition = accountant.composition();
        let mut tasks = HashMap::with_capacity(verified.entries.len());
        for (i, e) in verified.entries.iter().enumerate() {
            composition.push(e.charge())?;
            tasks.insert(e.task_id.clone(), i);
        }
        Ok(Ledger {
            path,
            verified,
            accountant,
            composition,
            tasks,
            file,
        })
    }

    /// The verified entries.
    pub fn entries(&self) -> &[LedgerEntry] {
        &self.verified.entries
    }

    /// All charges recorded so far.
    pub fn charges(&self) -> Vec<Charge> {
        self.verified.charges()
    }

    /// The composition of every charge recorded so far.
    pub fn composition(&self) -> &Composition {
        &self.composition
    }

    /// The entry of `task_id`, if it was charged.
    pub fn entry_of(&self, task_id: &str) -> Option<&LedgerEntry> {
        self.tasks
            .get(task_id)
            .and_then(|&i| self.verified.entries.get(i))
    }

    /// Hash of the last line.
    pub fn head_hash(&self) -> &str {
        &self.verified.head_hash
    }

    /// Records a charged task: computes its cost and the cumulative cost with
    /// the accountant, writes one line and fsyncs. A task id already in the
    /// ledger is never charged twice: its existing entry is returned.
    /// A change of the file by another writer is an error.
    pub fn append(&mut self, record: ChargeRecord) -> Result<Appended, LedgerError> {
        if let Some(existing) = self.prepare(&record)? {
            return Ok(Appended::Existing(existing));
        }
        let mut next = self.composition.clone();
        next.push(record.charge)?;
        let cumulative = next.epsilon(record.delta)?.epsilon;
        self.write_entry(record, cumulative, next)
    }

    /// Checks shared by every append: the file is unchanged by another writer,
    /// and the record is valid. Returns the existing entry when the task was
    /// already charged (it is never charged twice).
    fn prepare(&mut self, record: &ChargeRecord) -> Result<Option<LedgerEntry>, LedgerError> {
        self.check_unchanged()?;
        if let Some(e) = self.entry_of(&record.task_id) {
            return Ok(Some(e.clone()));
        }
        record.charge.validate()?;
        if !(record.clip_norm > 0.0 && record.clip_norm.is_finite()) {
            return Err(PrivacyError::InvalidClipNorm(record.clip_norm).into());
        }
        Ok(None)
    }

    /// Errors if the file is not the one this ledger last read or wrote.
    fn check_unchanged(&mut self) -> Result<(), LedgerError> {
        let now = FileState::of(&self.path)?;
        if now == self.file && self.last_line_is_head()? {
            return Ok(());
        }
        // Touched, or rewritten: verify everything; it must still end at our head.
        let (on_disk, state) = verify_with_state(&self.path)?;
        if on_disk.head_hash != self.verified.head_hash
            || on_disk.entries.len() != self.verified.entries.len()
        {
            return Err(LedgerError::ConcurrentModification {
                path: self.path.clone(),
                expected: self.verified.head_hash.clone(),
                found: on_disk.head_hash,
            });
        }
        self.file = state;
        Ok(())
    }

    /// Whether the file's last line hashes to the head hash held in memory
    /// (an empty ledger: whether the file is empty or absent).
    fn last_line_is_head(&self) -> Result<bool, LedgerError> {
        if self.file.len == 0 {
            return Ok(self.verified.entries.is_empty());
        }
        let io_err = |source| LedgerError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = File::open(&self.path).map_err(io_err)?;
        let Some(line) = last_line(&mut file, self.file.len).map_err(io_err)? else {
            return Ok(false);
        };
        Ok(parse_line(&line, self.verified.entries.len())
            .is_ok_and(|e| e.hash == self.verified.head_hash))
    }

    /// The epsilon of `charges` at `delta`, by this ledger's accountant.
    pub fn epsilon_of(&self, charges: &[Charge], delta: f64) -> Result<f64, PrivacyError> {
        Ok(self.accountant.epsilon(charges, delta)?.epsilon)
    }

    /// The epsilon at `delta` of everything the ledger holds composed with
    /// `charges` (e.g. a planned run), without writing anything.
    pub fn epsilon_with(&self, charges: &[Charge], delta: f64) -> Result<f64, PrivacyError> {
        let mut next = self.composition.clone();
        for c in charges {
            next.push(*c)?;
        }
        Ok(next.epsilon(delta)?.epsilon)
    }

    /// Computes ahead, at `delta`, the cumulative figures of the next `count`
    /// appends of `charge` (a run's planned rounds), so that each of those
    /// appends finds its figure already computed instead of running a PLD
    /// whose size grows with the run. The figures are the ones an append
    /// computes (same function, remembered per process). Nothing is written.
    pub fn plan_ahead(&self, charge: Charge, count: u32, delta: f64) -> Result<(), PrivacyError> {
        let mut next = self.composition.clone();
        self.accountant.epsilon(&[charge], delta)?;
        for _ in 0..count {
            next.push(charge)?;
            next.epsilon(delta)?;
        }
        Ok(())
    }

    /// Appends `record` only if everything the ledger holds composed with it stays
    /// within `budget` (at the budget's delta); otherwise writes nothing and returns
    /// [`Guarded::Refused`] with the epsilon the charge would have reached. The
    /// composition is computed once and is the figure recorded as cumulative.
    /// A task already in the ledger is returned as charged, never charged twice.
    pub fn append_within(
        &mut self,
        mut record: ChargeRecord,
        budget: &crate::PrivacyBudget,
    ) -> Result<Guarded, LedgerError> {
        if let Some(existing) = self.prepare(&record)? {
            return Ok(Guarded::Charged(Appended::Existing(existing)));
        }
        record.delta = budget.delta();
        let mut next = self.composition.clone();
        next.push(record.charge)?;
        let cumulative = next.epsilon(record.delta)?.epsilon;
        if cumulative > budget.epsilon() {
            return Ok(Guarded::Refused { after: cumulative });
        }
        self.write_entry(record, cumulative, next)
            .map(Guarded::Charged)
    }

    fn write_entry(
        &mut self,
        record: ChargeRecord,
        cumulative: f64,
        composition: Composition,
    ) -> Result<Appended, LedgerError> {
        let cost = self
            .accountant
            .epsilon(&[record.charge], record.delta)?
            .epsilon;
        if !(cost.is_finite() && cumulative.is_finite()) {
            return Err(LedgerError::InfiniteLoss(record.task_id));
        }
        let mut entry = LedgerEntry {
            run_id: record.run_id,
            round: record.round,
            task_id: record.task_id,
            mechanism: record.charge.mechanism,
            q: record.charge.q,
            sigma: record.charge.sigma,
            clip_norm: record.clip_norm,
            steps: record.charge.steps,
            cost_epsilon: cost,
            cumulative_epsilon: cumulative,
            delta: record.delta,
            prev_hash: self.verified.head_hash.clone(),
            hash: String::new(),
        };
        let line = CANONICAL
            .seal(&mut entry)
            .map_err(|e| LedgerError::Malformed {
                line: self.verified.entries.len() + 1,
                reason: e.to_string(),
            })?;
        let line = format!("{line}\n");
        let io_err = |source| LedgerError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io_err)?;
        file.write_all(line.as_bytes()).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        // Our own write: the length we expect next time is ours plus this line
        // (if another writer slipped in, the next check sees a different length).
        self.file = FileState {
            len: self.file.len + line.len() as u64,
            modified: file.metadata().map_err(io_err)?.modified().ok(),
        };
        self.tasks
            .insert(entry.task_id.clone(), self.verified.entries.len());
        self.verified.entries.push(entry.clone());
        self.verified.head_hash = entry.hash.clone();
        self.composition = composition;
        Ok(Appended::New(entry))
    }
}

/// Opens the ledger at `path` and appends `record` (see [`Ledger::append`]).
pub fn append(path: impl Into<PathBuf>, record: ChargeRecord) -> Result<Appended, LedgerError> {
    Ledger::open(path)?.append(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash_chain::{sha256_hex, split_hash};

    fn record(task: &str, round: u64) -> ChargeRecord {
        ChargeRecord {
            run_id: "run-1".to_string(),
            round,
            task_id: task.to_string(),
            // Unsampled, so the accountant uses the exact Gaussian path and
            // the tamper tests stay fast in debug builds.
            charge: Charge::subsampled_gaussian(1.0, 2.0, 10).unwrap(),
            clip_norm: 1.0,
            delta: 1e-5,
        }
    }

    #[test]
    fn append_within_refuses_over_budget_without_writing_and_never_charges_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut ledger = Ledger::open(&path).unwrap();
        let one = ledger.epsilon_of(&[record("t1", 1).charge], 1e-5).unwrap();
        // Room for one charge but not two.
        let budget = crate::PrivacyBudget::new(one * 1.5, 1e-5).unwrap();
        let first = ledger.append_within(record("t1", 1), &budget).unwrap();
        assert!(matches!(first, Guarded::Charged(Appended::New(_))));
        let again = ledger.append_within(record("t1", 1), &budget).unwrap();
        assert!(matches!(again, Guarded::Charged(Appended::Existing(_))));
        let Guarded::Refused { after } = ledger.append_within(record("t2", 2), &budget).unwrap()
        else {
            panic!("a charge over budget was written");
        };
        assert!(after > budget.epsilon());
        assert_eq!(verify(&path).unwrap().entries.len(), 1);
    }

    fn ledger_with(n: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut l = Ledger::open(&path).unwrap();
        for i in 0..n {
            l.append(record(&format!("task-{i}"), i as u64)).unwrap();
        }
        (dir, path)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn write(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    /// `err` must be a broken chain at ledger line `line`.
    fn assert_broken_chain(err: &LedgerError, line: usize) {
        assert!(
            matches!(err, LedgerError::BrokenChain { line: l, .. } if *l == line),
            "{err}"
        );
    }

    /// A ledger of `n` entries whose lines `edit` changes: the error `verify` must give.
    fn tampered(n: usize, edit: impl FnOnce(&mut Vec<String>)) -> LedgerError {
        let (_d, path) = ledger_with(n);
        let mut l = lines(&path);
        edit(&mut l);
        write(&path, &l);
        verify(&path).unwrap_err()
    }

    /// A ledger written by the demo's DP run (partner-a, 20 charges) before the
    /// hash chain was shared with the audit log: it must keep verifying.
    #[test]
    fn a_ledger_written_by_an_earlier_release_still_verifies() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/hash-chain/ledger-partner-a.jsonl");
        let verified = verify(&path).unwrap();
        assert_eq!(verified.entries.len(), 20);
        assert_eq!(
            verified.head_hash,
            "61914717692664416a3feb0375d150b0b57563db828830765cd933fa0b3aad6b"
        );
        // Appending continues the chain, and the longer file verifies too.
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("ledger.jsonl");
        std::fs::copy(&path, &copy).unwrap();
        let mut ledger = Ledger::open(&copy).unwrap();
        ledger.append(record("after-upgrade", 21)).unwrap();
        let again = verify(&copy).unwrap();
        assert_eq!(again.entries.len(), 21);
        assert_eq!(again.entries[20].prev_hash, verified.head_hash);
    }

    #[test]
    fn append_chains_and_accumulates() {
        let (_d, path) = ledger_with(3);
        let v = verify(&path).unwrap();
        assert_eq!(v.entries.len(), 3);
        assert_eq!(v.entries[0].prev_hash, GENESIS_HASH);
        assert_eq!(v.entries[1].prev_hash, v.entries[0].hash);
        assert_eq!(v.head_hash, v.entries[2].hash);
        let e = &v.entries;
        assert!(e[0].cumulative_epsilon == e[0].cost_epsilon);
        assert!(e[1].cumulative_epsilon > e[0].cumulative_epsilon);
        // Composition, not a sum of epsilons.
        assert!(e[2].cumulative_epsilon < 3.0 * e[0].cost_epsilon);
        assert!(
            lines(&path)[0].starts_with("{\"run_id\":\"run-1\",\"round\":0,\"task_id\":\"task-0\"")
        );
    }

    #[test]
    fn records_subsampled_charges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut rec = record("task-s", 0);
        rec.charge = Charge::subsampled_gaussian(0.01, 1.1, 1000).unwrap();
        let e = append(&path, rec).unwrap().entry().clone();
        assert!((e.cost_epsilon - 1.5154).abs() < 2e-3, "{e:?}");
        assert_eq!(e.cost_epsilon, e.cumulative_epsilon);
        assert_eq!(verify(&path).unwrap().charges(), vec![e.charge()]);
    }

    #[test]
    fn task_is_never_charged_twice() {
        let (_d, path) = ledger_with(2);
        let mut l = Ledger::open(&path).unwrap();
        let again = l.append(record("task-1", 9)).unwrap();
        assert!(matches!(again, Appended::Existing(ref e) if e.round == 1));
        assert_eq!(lines(&path).len(), 2);
    }

    #[test]
    fn detects_edited_line() {
        let err = tampered(3, |l| {
            l[1] = l[1].replace("\"sigma\":2.0", "\"sigma\":2.5");
        });
        assert!(
            matches!(err, LedgerError::HashMismatch { line: 2, .. }),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("ledger line 2 was edited"),
            "{err}"
        );
    }

    #[test]
    fn detects_edited_line_with_recomputed_hash() {
        let err = tampered(3, |l| {
            let edited = l[0].replace("\"sigma\":2.0", "\"sigma\":9.0");
            let (canonical, _) = split_hash(&edited).unwrap();
            let h = sha256_hex(canonical.as_bytes());
            l[0] = format!(
                "{},\"hash\":\"{h}\"}}",
                canonical.strip_suffix('}').unwrap()
            );
        });
        assert_broken_chain(&err, 2);
    }

    #[test]
    fn detects_removed_line() {
        let err = tampered(4, |l| {
            l.remove(1);
        });
        assert_broken_chain(&err, 2);
        assert!(
            err.to_string().contains("a line before it was removed"),
            "{err}"
        );
        // Removing the first line breaks line 1.
        let err = tampered(2, |l| {
            l.remove(0);
        });
        assert_broken_chain(&err, 1);
    }

    #[test]
    fn detects_reordered_lines() {
        let err = tampered(4, |l| {
            l.swap(1, 2);
        });
        assert_broken_chain(&err, 2);
        assert!(err.to_string().contains("reordered"), "{err}");
    }

    #[test]
    fn detects_line_appended_out_of_chain() {
        let (_d, path) = ledger_with(3);
        // A valid line from another ledger, appended at the end.
        let (_d2, other) = ledger_with(1);
        let mut l = lines(&path);
        let mut foreign = lines(&other)[0].replace("task-0", "task-x");
        // Re-hash so only the chain is wrong.
        let (canonical, _) = split_hash(&foreign).unwrap();
        let h = sha256_hex(canonical.as_bytes());
        foreign = format!(
            "{},\"hash\":\"{h}\"}}",
            canonical.strip_suffix('}').unwrap()
        );
        l.push(foreign);
        write(&path, &l);
        let err = verify(&path).unwrap_err();
        assert_broken_chain(&err, 4);
        assert!(err.to_string().contains("first line"), "{err}");
    }

    #[test]
    fn detects_malformed_and_refuses_to_append_to_tampered_file() {
        let (_d, path) = ledger_with(2);
        let mut l = lines(&path);
        l[1].push_str("garbage");
        write(&path, &l);
        let err = verify(&path).unwrap_err();
        assert!(
            matches!(err, LedgerError::Malformed { line: 2, .. }),
            "{err}"
        );
        assert!(append(&path, record("task-9", 9)).is_err());
    }

    #[test]
    fn detects_concurrent_writer() {
        let (_d, path) = ledger_with(1);
        let mut a = Ledger::open(&path).unwrap();
        let mut b = Ledger::open(&path).unwrap();
        a.append(record("task-a", 1)).unwrap();
        let err = b.append(record("task-b", 1)).unwrap_err();
        assert!(
            matches!(err, LedgerError::ConcurrentModification { .. }),
            "{err}"
        );
    }

    fn rehash(line: &str) -> String {
        let (canonical, _) = split_hash(line).unwrap();
        let h = sha256_hex(canonical.as_bytes());
        format!(
            "{},\"hash\":\"{h}\"}}",
            canonical.strip_suffix('}').unwrap()
        )
    }

    #[test]
    fn detects_duplicate_task_in_a_valid_chain() {
        let (_d, path) = ledger_with(3);
        let mut l = lines(&path);
        l[2] = rehash(&l[2].replace("task-2", "task-0"));
        write(&path, &l);
        let err = verify(&path).unwrap_err();
        assert!(
            matches!(
                err,
                LedgerError::DuplicateTask {
                    line: 3,
                    first_line: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(Ledger::open(&path).is_err());
    }

    #[test]
    fn cumulative_is_the_accountants_figure_for_the_whole_file_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let kinds = [
            Charge::subsampled_gaussian(0.09, 1.0, 40).unwrap(),
            Charge::subsampled_gaussian(1.0, 4.0, 1).unwrap(),
            Charge::subsampled_gaussian(0.2, 2.0, 5).unwrap(),
        ];
        for i in 0..12 {
            // Reopen every third append: the state is rebuilt from the file.
            let mut l = Ledger::open(&path).unwrap();
            let mut rec = record(&format!("t{i}"), i);
            rec.charge = kinds[i as usize % kinds.len()];
            let e = l.append(rec).unwrap().entry().clone();
            let all = verify(&path).unwrap().charges();
            let full = Accountant::default().epsilon(&all, 1e-5).unwrap().epsilon;
            assert_eq!(e.cumulative_epsilon, full, "after {} charges", i + 1);
            assert_eq!(l.epsilon_with(&[], 1e-5).unwrap(), full);
            assert_eq!(l.composition().len(), all.len());
        }
    }

    #[test]
    fn an_open_ledger_refuses_to_append_after_its_last_line_was_edited() {
        let (_d, path) = ledger_with(2);
        let mut ledger = Ledger::open(&path).unwrap();
        ledger.append(record("task-2", 2)).unwrap();
        // Same length, so only the content (and the time) tell.
        let mut l = lines(&path);
        l[2] = l[2].replace("\"sigma\":2.0", "\"sigma\":2.5");
        write(&path, &l);
        let err = ledger.append(record("task-3", 3)).unwrap_err();
        assert!(
            matches!(err, LedgerError::HashMismatch { line: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_touched_but_unchanged_file_is_verified_again_and_accepted() {
        let (_d, path) = ledger_with(2);
        let mut ledger = Ledger::open(&path).unwrap();
        let f = OpenOptions::new().append(true).open(&path).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH).unwrap();
        drop(f);
        assert!(matches!(
            ledger.append(record("task-2", 2)).unwrap(),
            Appended::New(_)
        ));
        assert!(matches!(
            ledger.append(record("task-3", 3)).unwrap(),
            Appended::New(_)
        ));
        assert_eq!(verify(&path).unwrap().entries.len(), 4);
    }
}
