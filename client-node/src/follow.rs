//! Following the champion (`[follow]` in the client config): when the
//! coordinator sends a target's champion, the node writes the model file,
//! re-scores and re-profiles its users with it, and writes a change report
//! against the outputs of the version it held before. Nothing leaves the
//! partner except the acknowledgement (target, version, fingerprint).
//!
//! Files (see `docs/updates.md`, "Partners follow the champion"):
//! - `model_dir/<target>.json`: the champion's model file, byte for byte;
//! - `profiles_dir/<target>@<version>.scores.csv` and `.profiles.csv`: the
//!   outputs of `score` and `profile` with that version;
//! - `profiles_dir/<target>@<version>.changes.json` and `.changes.txt`: the
//!   change report against the version held before;
//! - `model_dir/followed.json`: the version held per target, with the model
//!   file's SHA-256. It is written last: it is the commit point.
//!
//! **Atomicity.** Every file is written to a temporary file in the same
//! folder, fsynced, renamed over its name, and the folder is fsynced
//! ([`write_atomic`]). A crash before `followed.json` is renamed leaves the
//! previous version recorded as held: the node reports it when it connects
//! and the coordinator sends the champion again, which is then redone from
//! the start, against the same baseline (the outputs of the held version,
//! whose names carry its version number and are never overwritten by
//! another version's).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use fedprofile_learning::ModelDocument;
use fedprofile_privacy::hash_chain::sha256_hex;
use fedprofile_protocol::messages::{ChampionPush, HeldModel};
use serde::{Deserialize, Serialize};

use crate::config::FollowSettings;
use crate::score::ScoreError;

/// A champion could not be followed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The model file's bytes do not match the fingerprint sent with them.
    #[error("the model file of {name} has SHA-256 {found}, not the {expected} it was sent with")]
    Fingerprint {
        /// `target@version`.
        name: String,
        /// What the coordinator sent.
        expected: String,
        /// What the bytes hash to.
        found: String,
    },
    /// A target that cannot be a file name.
    #[error(
        "target '{0}' cannot name a file (letters, digits, '-', '_' and '.' only, not starting with '.')"
    )]
    Target(String),
    /// A file could not be written or read.
    #[error("cannot {action} '{path}': {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file that does not parse.
    #[error("'{path}' is not valid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Scoring or profiling failed.
    #[error(transparent)]
    Score(#[from] ScoreError),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FollowError + use<> {
    let path = path.to_path_buf();
    move |source| FollowError::Io {
        action,
        path,
        source,
    }
}

/// The temporary name `path` is written under before its rename.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(
        ".{}.tmp-{}",
        name.unwrap_or_default(),
        std::process::id()
    ))
}

/// Renames the written and fsynced `temp` over `path`, then fsyncs the folder.
fn commit(temp: &Path, path: &Path) -> Result<(), FollowError> {
    std::fs::File::open(temp)
        .and_then(|f| f.sync_all())
        .map_err(io("sync", temp))?;
    std::fs::rename(temp, path).map_err(io("rename into", path))?;
    if let Some(dir) = path.parent() {
        // A folder cannot be opened for fsync everywhere; the rename stands.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder,
/// fsynced, renamed over `path`, the folder fsynced. A reader sees the old
/// file or the new one, never part of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FollowError> {
    let temp = temp_path(path);
    let mut file = std::fs::File::create(&temp).map_err(io("create", &temp))?;
    file.write_all(bytes).map_err(io("write", &temp))?;
    drop(file);
    commit(&temp, path)
}

/// Runs `write` on a temporary path next to `path`, then commits it as
/// [`write_atomic`] does.
fn produce_atomic<T>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<T, ScoreError>,
) -> Result<T, FollowError> {
    let temp = temp_path(path);
    match write(&temp) {
        Ok(value) => {
            commit(&temp, path)?;
            Ok(value)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e.into())
        }
    }
}

/// What `followed.json` records per target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Followed {
    version: u32,
    fingerprint: String,
}

type State = BTreeMap<String, Followed>;

/// A partner node that follows the champions.
#[derive(Debug, Clone)]
pub struct Follower {
    /// Where the files go.
    pub settings: FollowSettings,
    /// The schema file.
    pub schema: PathBuf,
    /// The partner's data folder.
    pub data_dir: PathBuf,
}

/// What [`Follower::follow`] did, for the log line and the acknowledgement.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The version written.
    pub model: HeldModel,
    /// Its change report.
    pub report: ChangeReport,
}

impl Follower {
    fn state_path(&self) -> PathBuf {
        self.settings.model_dir.join("followed.json")
    }

    fn read_state(&self) -> Result<State, FollowError> {
        let path = self.state_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| FollowError::Invalid {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::new()),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// The model file of `target`.
    pub fn model_path(&self, target: &str) -> PathBuf {
        self.settings.model_dir.join(format!("{target}.json"))
    }

    /// An output file of `target@version` (`kind`: `scores.csv`, …).
    pub fn output_path(&self, target: &str, version: u32, kind: &str) -> PathBuf {
        self.settings
            .profiles_dir
            .join(format!("{target}@{version}.{kind}"))
    }

    /// The versions held completely: recorded in `followed.json` and whose
    /// model file still has the recorded fingerprint (what the node reports
    /// when it connects). An unreadable state holds nothing, so the
    /// coordinator sends every champion again.
    pub fn held(&self) -> Vec<HeldModel> {
        let state = match self.read_state() {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!("{e}; asking for every champion again");
                return Vec::new();
            }
        };
        state
            .into_iter()
            .filter(|(target, f)| {
                std::fs::read(self.model_path(target))
                    .is_ok_and(|bytes| sha256_hex(&bytes) == f.fingerprint)
            })
            .map(|(target, f)| HeldModel {
                target,
                version: f.version,
                fingerprint: f.fingerprint,
            })
            .collect()
    }

    /// Writes the champion `push`, re-scores and re-profiles the users with
    /// it, writes the change report against the version held before, and
    /// records the version as held (see the module doc for the order).
    pub fn follow(&self, push: &ChampionPush) -> Result<Outcome, FollowError> {
        let model = &push.model;
        let target = &model.target;
        let name = format!("{target}@{}", model.version);
        let found = sha256_hex(push.model_json.as_bytes());
        if found != model.fingerprint {
            return Err(FollowError::Fingerprint {
                name,
                expected: model.fingerprint.clone(),
                found,
            });
        }
        let safe = !target.is_empty()
            && !target.starts_with('.')
            && target
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !safe {
            return Err(FollowError::Target(target.clone()));
        }
        let s = &self.settings;
        for dir in [&s.model_dir, &s.profiles_dir] {
            std::fs::create_dir_all(dir).map_err(io("create the folder", dir))?;
        }
        let mut state = self.read_state()?;
        let before = state.get(target).cloned();

        let model_path = self.model_path(target);
        write_atomic(&model_path, push.model_json.as_bytes())?;
        let scores = self.output_path(target, model.version, "scores.csv");
        produce_atomic(&scores, |out| {
            crate::score::score(&self.schema, &self.data_dir, &s.split, &model_path, out)
        })?;
        let document = ModelDocument::load(&model_path).map_err(ScoreError::from)?;
        // A k-means model profiles as segments, the others as predictors.
        let segments = document.model().ops().profile_header(&document).is_none();
        let profiles = self.output_path(target, model.version, "profiles.csv");
        produce_atomic(&profiles, |out| {
            let (models, seg) = if segments {
                (Vec::new(), Some(model_path.as_path()))
            } else {
                (vec![model_path.clone()], None)
            };
            crate::profile::profile(
                &self.schema,
                &self.data_dir,
                &s.split,
                &models,
                seg,
                s.features,
                out,
            )
        })?;

        let after = read_scores(&scores)?;
        let baseline = match &before {
            Some(b) if b.version != model.version => {
                let path = self.output_path(target, b.version, "scores.csv");
                std::fs::exists(&path)
                    .unwrap_or(false)
                    .then(|| read_scores(&path))
                    .transpose()?
            }
            _ => None,
        };
        let report = ChangeReport::compare(
            target,
            before.as_ref().map(|b| b.version),
            model.version,
            baseline.as_ref(),
            &after,
            s.band_width,
            s.top,
        );
        let json = serde_json::to_string_pretty(&report).map_err(|e| FollowError::Invalid {
            path: self.output_path(target, model.version, "changes.json"),
            reason: e.to_string(),
        })?;
        write_atomic(
            &self.output_path(target, model.version, "changes.json"),
            json.as_bytes(),
        )?;
        write_atomic(
            &self.output_path(target, model.version, "changes.txt"),
            report.text().as_bytes(),
        )?;

        state.insert(
            target.clone(),
            Followed {
                version: model.version,
                fingerprint: model.fingerprint.clone(),
            },
        );
        let json = serde_json::to_string_pretty(&state).map_err(|e| FollowError::Invalid {
            path: self.state_path(),
            reason: e.to_string(),
        })?;
        write_atomic(&self.state_path(), json.as_bytes())?;
        Ok(Outcome {
            model: model.clone(),
            report,
        })
    }
}

/// One user's outputs in a scores file: the numeric score (logistic `score`,
/// linear `prediction`, softmax `probability`) and the segment (k-means
/// `segment`, softmax `class`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scored {
    /// The numeric score, if the family has one.
    pub score: Option<f64>,
    /// The segment or class, if the family has one.
    pub segment: Option<String>,
}

/// A scores file by user id.
pub type Scores = BTreeMap<String, Scored>;

/// Reads a scores file written by `score`.
pub fn read_scores(path: &Path) -> Result<Scores, FollowError> {
    let invalid = |reason: String| FollowError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = csv::Reader::from_path(path).map_err(|e| invalid(e.to_string()))?;
    let header = reader
        .headers()
        .map_err(|e| invalid(e.to_string()))?
        .clone();
    let column = |names: &[&str]| header.iter().position(|h| names.contains(&h));
    let (id, score, segment) = (
        column(&["user_id"]).ok_or_else(|| invalid("it has no user_id column".into()))?,
        column(&["score", "prediction", "probability"]),
        column(&["segment", "class"]),
    );
    let mut scores = Scores::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| invalid(e.to_string()))?;
        let field = |i: usize| record.get(i).unwrap_or_default();
        let score = match score {
            Some(i) => Some(field(i).parse::<f64>().map_err(|_| {
                invalid(format!("line {}: '{}' is not a number", line + 2, field(i)))
            })?),
            None => None,
        };
        scores.insert(
            field(id).to_string(),
            Scored {
                score,
                segment: segment.map(|i| field(i).to_string()),
            },
        );
    }
    Ok(scores)
}

/// A user whose score moved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mover {
    /// The user.
    pub user_id: String,
    /// Score with the version held before.
    pub before: f64,
    /// Score with the new version.
    pub after: f64,
    /// `after − before`.
    pub delta: f64,
}

/// What changed for this partner's users from one version to the next.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeReport {
    /// The target.
    pub target: String,
    /// The version held before (none: the first version followed).
    pub from_version: Option<u32>,
    /// The version now held.
    pub to_version: u32,
    /// Users scored with the new version.
    pub users: usize,
    /// Users scored by both versions.
    pub compared: usize,
    /// The width of a score band (`floor(score / band_width)`).
    pub band_width: f64,
    /// Users scored by both whose score band changed.
    pub band_changed: usize,
    /// Users scored by both whose segment (or class) changed.
    pub segment_changed: usize,
    /// The users with the largest |Δscore|, largest first (ties by user id).
    pub top_movers: Vec<Mover>,
    /// Users scored for the first time (not in the previous outputs).
    pub new_users: Vec<String>,
    /// Users in the previous outputs and not any more.
    pub gone_users: Vec<String>,
}

impl ChangeReport {
    /// Compares `after` with `before` (none: everyone is new).
    pub fn compare(
        target: &str,
        from_version: Option<u32>,
        to_version: u32,
        before: Option<&Scores>,
        after: &Scores,
        band_width: f64,
        top: usize,
    ) -> ChangeReport {
        let empty = Scores::new();
        let before = before.unwrap_or(&empty);
        let band = |s: f64| (s / band_width).floor() as i64;
        let (mut band_changed, mut segment_changed, mut movers) = (0, 0, Vec::new());
        let mut compared = 0;
        for (id, new) in after {
            let Some(old) = before.get(id) else {
                continue;
            };
            compared += 1;
            if let (Some(a), Some(b)) = (old.score, new.score) {
                if band(a) != band(b) {
                    band_changed += 1;
                }
                movers.push(Mover {
                    user_id: id.clone(),
                    before: a,
                    after: b,
                    delta: b - a,
                });
            }
            if let (Some(a), Some(b)) = (&old.segment, &new.segment)
                && a != b
            {
                segment_changed += 1;
            }
        }
        movers.sort_by(|a, b| {
            b.delta
                .abs()
                .total_cmp(&a.delta.abs())
                .then_with(|| a.user_id.cmp(&b.user_id))
        });
        movers.truncate(top);
        let ids = |s: &Scores| s.keys().cloned().collect::<BTreeSet<_>>();
        let (old, new) = (ids(before), ids(after));
        ChangeReport {
            target: target.to_string(),
            from_version,
            to_version,
            users: after.len(),
            compared,
            band_width,
            band_changed,
            segment_changed,
            top_movers: movers,
            new_users: new.difference(&old).cloned().collect(),
            gone_users: old.difference(&new).cloned().collect(),
        }
    }

    /// The report in a few lines.
    pub fn text(&self) -> String {
        let from = self
            .from_version
            .map_or("nothing".to_string(), |v| format!("{}@{v}", self.target));
        let mut out = format!(
            "{target}@{to} (from {from}): {users} users scored, {compared} compared\n\
             score band changed (width {w}): {band}\n\
             segment changed: {seg}\n\
             scored for the first time: {new}\n\
             gone: {gone}\n",
            target = self.target,
            to = self.to_version,
            users = self.users,
            compared = self.compared,
            w = self.band_width,
            band = self.band_changed,
            seg = self.segment_changed,
            new = self.new_users.len(),
            gone = self.gone_users.len(),
        );
        if !self.top_movers.is_empty() {
            out.push_str("top movers:\n");
            for m in &self.top_movers {
                out.push_str(&format!(
                    "  {} {:.4} -> {:.4} ({:+.4})\n",
                    m.user_id, m.before, m.after, m.delta
                ));
            }
        }
        out
    }

    /// One line for the log.
    pub fn headline(&self) -> String {
        format!(
            "{} band changes, {} segment changes, {} new, {} gone of {} users",
            self.band_changed,
            self.segment_changed,
            self.new_users.len(),
            self.gone_users.len(),
            self.users
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(rows: &[(&str, f64, &str)]) -> Scores {
        rows.iter()
            .map(|(id, s, seg)| {
                (
                    id.to_string(),
                    Scored {
                        score: Some(*s),
                        segment: (!seg.is_empty()).then(|| seg.to_string()),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn the_change_report_counts_bands_segments_movers_new_and_gone() {
        let before = scores(&[
            ("u1", 0.05, "0"),
            ("u2", 0.15, "1"),
            ("u3", 0.55, "1"),
            ("u4", 0.91, "2"),
            ("gone", 0.3, "0"),
        ]);
        let after = scores(&[
            ("u1", 0.08, "0"),  // same band, same segment, Δ +0.03
            ("u2", 0.25, "1"),  // band 1 -> 2, Δ +0.10
            ("u3", 0.35, "0"),  // band 5 -> 3, segment 1 -> 0, Δ −0.20
            ("u4", 0.905, "1"), // same band, segment 2 -> 1, Δ −0.005
            ("new", 0.5, "1"),
        ]);
        let r = ChangeReport::compare("churn", Some(1), 2, Some(&before), &after, 0.1, 2);
        assert_eq!((r.users, r.compared), (5, 4));
        assert_eq!(r.band_changed, 2);
        assert_eq!(r.segment_changed, 2);
        assert_eq!(r.new_users, ["new"]);
        assert_eq!(r.gone_users, ["gone"]);
        let movers: Vec<&str> = r.top_movers.iter().map(|m| m.user_id.as_str()).collect();
        assert_eq!(movers, ["u3", "u2"]);
        assert!((r.top_movers[0].delta + 0.2).abs() < 1e-12);
        let text = r.text();
        assert!(text.contains("churn@2 (from churn@1): 5 users scored, 4 compared"));
        assert!(text.contains("score band changed (width 0.1): 2"));
    }

    #[test]
    fn the_first_version_scores_everyone_for_the_first_time() {
        let after = scores(&[("a", 0.1, ""), ("b", 0.2, "")]);
        let r = ChangeReport::compare("churn", None, 1, None, &after, 0.1, 5);
        assert_eq!((r.compared, r.band_changed, r.segment_changed), (0, 0, 0));
        assert_eq!(r.new_users, ["a", "b"]);
        assert!(r.gone_users.is_empty() && r.top_movers.is_empty());
    }

    #[test]
    fn scores_files_of_every_family_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.csv");
        std::fs::write(&path, "user_id,segment,distance\na,2,0.5\nb,0,1.5\n").unwrap();
        let s = read_scores(&path).unwrap();
        assert_eq!(s["a"].segment.as_deref(), Some("2"));
        assert_eq!(s["a"].score, None);
        std::fs::write(&path, "user_id,score\na,0.25\nb,x\n").unwrap();
        let e = read_scores(&path).unwrap_err().to_string();
        assert!(e.contains("line 3: 'x' is not a number"), "{e}");
    }

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.json");
        write_atomic(&path, b"{\"v\":1}").unwrap();
        write_atomic(&path, b"{\"v\":2}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"v\":2}");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["model.json"]);
        // A write that fails leaves the old file and no temporary behind.
        let failed: Result<(), _> = produce_atomic(&path, |_| {
            Err(ScoreError::Write {
                path: path.clone(),
                reason: "disk full".into(),
            })
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"v\":2}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Into a folder that does not exist: a sentence naming the file.
        let e = write_atomic(&dir.path().join("no/such/m.json"), b"x").unwrap_err();
        assert!(e.to_string().starts_with("cannot create '"), "{e}");
    }

    #[test]
    fn a_model_whose_bytes_do_not_match_its_fingerprint_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let follower = Follower {
            settings: FollowSettings {
                model_dir: dir.path().join("m"),
                profiles_dir: dir.path().join("p"),
                split: "test".into(),
                top: 5,
                features: 3,
                band_width: 0.1,
            },
            schema: dir.path().join("schema.toml"),
            data_dir: dir.path().to_path_buf(),
        };
        let push = ChampionPush {
            model: HeldModel {
                target: "churn".into(),
                version: 1,
                fingerprint: "0".repeat(64),
            },
            model_json: "{}".into(),
        };
        let e = follower.follow(&push).unwrap_err().to_string();
        assert!(e.contains("churn@1 has SHA-256"), "{e}");
        let bad = ChampionPush {
            model: HeldModel {
                target: "../x".into(),
                version: 1,
                fingerprint: sha256_hex(b"{}"),
            },
            model_json: "{}".into(),
        };
        assert!(matches!(follower.follow(&bad), Err(FollowError::Target(_))));
        assert!(follower.held().is_empty());
        assert!(!dir.path().join("m").exists());
    }
}
