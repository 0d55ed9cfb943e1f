//! The client node's configuration file (TOML). Relative paths are resolved
//! against the folder of the config file.
//!
//! ```toml
//! coordinator = "https://localhost:50051"   # where to connect (the client always dials out)
//! data_dir = "data/partner-a"               # this partner's exports
//! schema = "schema.toml"                    # the federation-wide schema
//! train_split = "train"                     # optional, default "train"
//! test_split = "test"                       # optional, default "test"
//!
//! [tls]
//! ca_cert = "certs/ca.pem"                  # the federation CA
//! cert = "certs/partner-a.pem"              # this partner's certificate (CN = its id)
//! key = "certs/partner-a.key"
//! server_name = "localhost"                 # optional: name in the coordinator's certificate
//!
//! [privacy]                                 # optional: this partner's budget
//! epsilon = 1.0                             # total epsilon this ledger may spend
//! delta = 1e-5
//! ledger = "privacy-ledger.jsonl"           # append-only, hash-chained
//! require_dp = false                        # refuse training without record-level DP
//!
//! [connect]                                 # optional
//! attempts = 30                             # connection attempts before giving up
//! initial_backoff_ms = 200                  # doubled after each failure, with jitter
//! max_backoff_ms = 5000
//!
//! [follow]                                  # optional: follow the champions (docs/updates.md)
//! model_dir = "models"                      # where each champion's model file is written
//! profiles_dir = "profiles"                 # scores, profiles and change reports
//! split = "test"                            # optional (test_split): the users to score
//! top = 5                                   # optional: top movers in the change report
//! features = 3                              # optional: top features per user in the profiles
//! band_width = 0.1                          # optional: score bands are [k·w, (k+1)·w)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use fedprofile_config::ConfigError;
use fedprofile_config::{RawTls, TlsField};
use fedprofile_protocol::tls::TlsFiles;

use crate::privacy::PrivacySettings;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    coordinator: String,
    data_dir: PathBuf,
    schema: PathBuf,
    #[serde(default = "default_train")]
    train_split: String,
    #[serde(default = "default_test")]
    test_split: String,
    tls: Option<RawTls>,
    #[serde(default)]
    connect: RawConnect,
    privacy: Option<RawPrivacy>,
    follow: Option<RawFollow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFollow {
    model_dir: PathBuf,
    profiles_dir: PathBuf,
    split: Option<String>,
    #[serde(default = "default_top")]
    top: usize,
    #[serde(default = "default_features")]
    features: usize,
    #[serde(default = "default_band_width")]
    band_width: f64,
}

fn default_top() -> usize {
    5
}
fn default_features() -> usize {
    3
}
fn default_band_width() -> f64 {
    0.1
}

/// Following the champions (`[follow]`): where their files go.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowSettings {
    /// Where each champion's model file is written (`<target>.json`).
    pub model_dir: PathBuf,
    /// Where scores, profiles and change reports are written.
    pub profiles_dir: PathBuf,
    /// The split whose users are scored.
    pub split: String,
    /// Top movers in a change report.
    pub top: usize,
    /// Top contributing features per user in the profiles.
    pub features: usize,
    /// Width of a score band.
    pub band_width: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrivacy {
    epsilon: f64,
    #[serde(default = "default_delta")]
    delta: f64,
    #[serde(default = "default_ledger")]
    ledger: PathBuf,
    #[serde(default)]
    require_dp: bool,
}

fn default_delta() -> f64 {
    1e-5
}
fn default_ledger() -> PathBuf {
    PathBuf::from("privacy-ledger.jsonl")
}

fn default_train() -> String {
    "train".into()
}
fn default_test() -> String {
    "test".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConnect {
    attempts: u32,
    initial_backoff_ms: u64,
    max_backoff_ms: u64,
}

impl Default for RawConnect {
    fn default() -> Self {
        RawConnect {
            attempts: 30,
            initial_backoff_ms: 200,
            max_backoff_ms: 5000,
        }
    }
}

/// Reconnection policy: bounded attempts, exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectPolicy {
    /// Attempts before giving up (at least 1).
    pub attempts: u32,
    /// First wait.
    pub initial_backoff: Duration,
    /// Longest wait.
    pub max_backoff: Duration,
}

/// A validated client configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// Coordinator URL.
    pub coordinator: String,
    /// The partner's data folder.
    pub data_dir: PathBuf,
    /// The schema file.
    pub schema: PathBuf,
    /// Split used for training and statistics.
    pub train_split: String,
    /// Split used for evaluation.
    pub test_split: String,
    /// mTLS files, with the coordinator's certificate name.
    pub tls: Option<(TlsFiles, Option<String>)>,
    /// Reconnection policy.
    pub connect: ConnectPolicy,
    /// Privacy budget and ledger.
    pub privacy: Option<PrivacySettings>,
    /// Following the champions, if configured.
    pub follow: Option<FollowSettings>,
}

impl ClientConfig {
    /// Reads and validates a client configuration.
    pub fn from_path(path: &Path) -> Result<ClientConfig, ConfigError> {
        let raw: RawConfig = fedprofile_config::load(path)?;
        let base = fedprofile_config::base_dir(path);
        if let Some(tls) = &raw.tls {
            tls.refuse(
                TlsField::Crl,
                path,
                "the coordinator checks revocations (its own config's tls.crl)",
            )?;
        }
        let invalid = |field, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            problem,
        };
        if !(raw.coordinator.starts_with("https://") || raw.coordinator.starts_with("http://")) {
            return Err(invalid(
                "coordinator",
                format!("'{}' must be a URL like https://host:port", raw.coordinator),
            ));
        }
        let privacy = match raw.privacy {
            None => None,
            Some(p) => {
                if !(p.epsilon.is_finite() && p.epsilon > 0.0) {
                    return Err(invalid(
                        "privacy.epsilon",
                        format!("must be a positive number, got {}", p.epsilon),
                    ));
                }
                if !(p.delta > 0.0 && p.delta < 1.0) {
                    return Err(invalid(
                        "privacy.delta",
                        format!("must be in (0, 1), got {}", p.delta),
                    ));
                }
                Some(PrivacySettings {
                    epsilon: p.epsilon,
                    delta: p.delta,
                    ledger: base.join(p.ledger),
                    require_dp: p.require_dp,
                })
            }
        };
        let follow = match raw.follow {
            None => None,
            Some(f) => {
                if !(f.band_width.is_finite() && f.band_width > 0.0) {
                    return Err(invalid(
                        "follow.band_width",
                        format!("must be a positive number, got {}", f.band_width),
                    ));
                }
                Some(FollowSettings {
                    model_dir: base.join(f.model_dir),
                    profiles_dir: base.join(f.profiles_dir),
                    split: f.split.unwrap_or_else(|| raw.test_split.clone()),
                    top: f.top,
                    features: f.features,
                    band_width: f.band_width,
                })
            }
        };
        if raw.connect.attempts == 0 {
            return Err(invalid("connect.attempts", "must be at least 1".into()));
        }
        Ok(ClientConfig {
            coordinator: raw.coordinator,
            data_dir: base.join(raw.data_dir),
            schema: base.join(raw.schema),
            train_split: raw.train_split,
            test_split: raw.test_split,
            tls: raw.tls.map(|t| {
                let files = TlsFiles::under(base, &t.ca_cert, &t.cert, &t.key);
                (files, t.server_name)
            }),
            connect: ConnectPolicy {
                attempts: raw.connect.attempts,
                initial_backoff: Duration::from_millis(raw.connect.initial_backoff_ms),
                max_backoff: Duration::from_millis(raw.connect.max_backoff_ms.max(1)),
            },
            privacy,
            follow,
        })
    }
}
