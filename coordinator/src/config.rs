//! Coordinator configuration and run files (TOML): raw, `deny_unknown_fields`
//! structs are parsed, then validated into the types the engine uses. Errors name
//! the file and the field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fedprofile_protocol::tls::TlsFiles;
use serde::Deserialize;

/// A configuration or run file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read '{path}': {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for its kind.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml said, with line and column.
        message: String,
    },
    /// A field has a value outside its range.
    #[error("{path}: field '{field}' {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted field name.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', " "),
    })
}

fn base_dir(path: &Path) -> PathBuf {
    path.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

// ----- run file --------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRunFile {
    run: RawRun,
    #[serde(default)]
    clients: RawClients,
    #[serde(default)]
    round: RawRound,
    #[serde(default)]
    training: RawTraining,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    name: String,
    rounds: u32,
    #[serde(default = "default_model")]
    model: String,
    seed: Option<u64>,
}

fn default_model() -> String {
    "logistic_regression".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawClients {
    fraction_per_round: f64,
    min_per_round: usize,
    min_connected_to_start: usize,
    start_timeout_secs: f64,
}

impl Default for RawClients {
    fn default() -> Self {
        RawClients {
            fraction_per_round: 1.0,
            min_per_round: 1,
            min_connected_to_start: 1,
            start_timeout_secs: 300.0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRound {
    deadline_secs: f64,
    eval_every: u32,
    max_retries: u32,
}

impl Default for RawRound {
    fn default() -> Self {
        RawRound {
            deadline_secs: 60.0,
            eval_every: 1,
            max_retries: 3,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTraining {
    local_epochs: u32,
    batch_size: u32,
    learning_rate: f64,
}

impl Default for RawTraining {
    fn default() -> Self {
        RawTraining {
            local_epochs: 1,
            batch_size: 32,
            learning_rate: 0.1,
        }
    }
}

/// A validated run description.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Human name of the run; the run id is derived from it.
    pub name: String,
    /// Number of training rounds.
    pub rounds: u32,
    /// Model family (only `logistic_regression` so far).
    pub model: String,
    /// Seed of the client-selection RNG (random when absent).
    pub seed: Option<u64>,
    /// Fraction of connected clients selected per round.
    pub fraction_per_round: f64,
    /// Fewest updates a round may close with.
    pub min_per_round: usize,
    /// Clients that must be connected before the run starts.
    pub min_connected_to_start: usize,
    /// How long to wait for them.
    pub start_timeout: Duration,
    /// A round's (and a statistics or evaluation task's) deadline.
    pub deadline: Duration,
    /// Evaluate every k rounds (and always after the last).
    pub eval_every: u32,
    /// How often a round that misses its minimum is retried before the run fails.
    pub max_retries: u32,
    /// Local epochs per training task.
    pub local_epochs: u32,
    /// Local batch size.
    pub batch_size: u32,
    /// Local learning rate.
    pub learning_rate: f64,
}

impl RunConfig {
    /// Reads and validates a run file.
    pub fn from_path(path: &Path) -> Result<RunConfig, ConfigError> {
        let raw: RawRunFile = load(path)?;
        let invalid = |field: &'static str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            problem,
        };
        let secs = |field: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 && v < 1e7 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(invalid(
                    field,
                    format!("must be a positive number of seconds, got {v}"),
                ))
            }
        };
        if raw.run.name.trim().is_empty() {
            return Err(invalid("run.name", "must not be empty".into()));
        }
        if raw.run.rounds == 0 {
            return Err(invalid("run.rounds", "must be at least 1".into()));
        }
        if raw.run.model != "logistic_regression" {
            return Err(invalid(
                "run.model",
                format!(
                    "'{}' is not supported (supported: logistic_regression)",
                    raw.run.model
                ),
            ));
        }
        let c = &raw.clients;
        if !(c.fraction_per_round > 0.0 && c.fraction_per_round <= 1.0) {
            return Err(invalid(
                "clients.fraction_per_round",
                format!("must be in (0, 1], got {}", c.fraction_per_round),
            ));
        }
        if c.min_per_round == 0 {
            return Err(invalid(
                "clients.min_per_round",
                "must be at least 1".into(),
            ));
        }
        if c.min_connected_to_start < c.min_per_round {
            return Err(invalid(
                "clients.min_connected_to_start",
                format!(
                    "must be at least clients.min_per_round ({}), got {}",
                    c.min_per_round, c.min_connected_to_start
                ),
            ));
        }
        let t = &raw.training;
        if t.local_epochs == 0 {
            return Err(invalid(
                "training.local_epochs",
                "must be at least 1".into(),
            ));
        }
        if t.batch_size == 0 {
            return Err(invalid("training.batch_size", "must be at least 1".into()));
        }
        if !(t.learning_rate.is_finite() && t.learning_rate > 0.0) {
            return Err(invalid(
                "training.learning_rate",
                format!("must be positive, got {}", t.learning_rate),
            ));
        }
        if raw.round.eval_every == 0 {
            return Err(invalid("round.eval_every", "must be at least 1".into()));
        }
        Ok(RunConfig {
            name: raw.run.name,
            rounds: raw.run.rounds,
            model: raw.run.model,
            seed: raw.run.seed,
            fraction_per_round: c.fraction_per_round,
            min_per_round: c.min_per_round,
            min_connected_to_start: c.min_connected_to_start,
            start_timeout: secs("clients.start_timeout_secs", c.start_timeout_secs)?,
            deadline: secs("round.deadline_secs", raw.round.deadline_secs)?,
            eval_every: raw.round.eval_every,
            max_retries: raw.round.max_retries,
            local_epochs: t.local_epochs,
            batch_size: t.batch_size,
            learning_rate: t.learning_rate,
        })
    }
}

// ----- coordinator config ----------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCoordinatorConfig {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_max_message")]
    max_message_bytes: usize,
    tls: Option<RawTls>,
}

fn default_listen() -> String {
    "127.0.0.1:50051".into()
}

fn default_max_message() -> usize {
    fedprofile_protocol::DEFAULT_MAX_MESSAGE_BYTES
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_cert: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A validated coordinator configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct CoordinatorConfig {
    /// Address the federation service binds to.
    pub listen: SocketAddr,
    /// Largest accepted gRPC message.
    pub max_message_bytes: usize,
    /// mTLS files (paths resolved against the config file's folder); `None`
    /// only with `--insecure`.
    pub tls: Option<TlsFiles>,
}

impl CoordinatorConfig {
    /// Reads and validates a coordinator configuration file.
    pub fn from_path(path: &Path) -> Result<CoordinatorConfig, ConfigError> {
        let raw: RawCoordinatorConfig = load(path)?;
        let base = base_dir(path);
        let listen = raw.listen.parse().map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            field: "listen",
            problem: format!(
                "'{}' is not an address like 127.0.0.1:50051 ({e})",
                raw.listen
            ),
        })?;
        if raw.max_message_bytes < 1024 {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                field: "max_message_bytes",
                problem: format!("must be at least 1024, got {}", raw.max_message_bytes),
            });
        }
        Ok(CoordinatorConfig {
            listen,
            max_message_bytes: raw.max_message_bytes,
            tls: raw.tls.map(|t| TlsFiles {
                ca_cert: base.join(t.ca_cert),
                cert: base.join(t.cert),
                key: base.join(t.key),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn defaults_fill_a_minimal_run_file() {
        let (_d, p) = write("[run]\nname = \"x\"\nrounds = 3\n");
        let c = RunConfig::from_path(&p).unwrap();
        assert_eq!(c.rounds, 3);
        assert_eq!(c.batch_size, 32);
        assert_eq!(c.deadline, Duration::from_secs(60));
    }

    #[test]
    fn errors_name_the_field() {
        let (_d, p) = write("[run]\nname = \"x\"\nrounds = 3\n[training]\nlearning_rate = -1.0\n");
        let err = RunConfig::from_path(&p).unwrap_err().to_string();
        assert!(err.contains("training.learning_rate"), "{err}");
        let (_d, p) = write("[run]\nname = \"x\"\nrounds = 3\nroundz = 4\n");
        let err = RunConfig::from_path(&p).unwrap_err().to_string();
        assert!(err.contains("roundz"), "{err}");
        let (_d, p) = write(
            "[run]\nname = \"x\"\nrounds = 3\n[clients]\nmin_per_round = 3\nmin_connected_to_start = 2\n",
        );
        let err = RunConfig::from_path(&p).unwrap_err().to_string();
        assert!(err.contains("min_connected_to_start"), "{err}");
    }
}
