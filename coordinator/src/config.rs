//! Coordinator configuration and run files (TOML): raw, `deny_unknown_fields`
//! structs are parsed, then validated into the types the engine uses. Errors name
//! the file and the field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use fedprofile_config::ConfigError;
pub use fedprofile_config::run::RunConfig;
use fedprofile_config::{RawTls, TlsField, base_dir, load};
use fedprofile_protocol::tls::TlsFiles;
use serde::Deserialize;

// ----- coordinator config ----------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCoordinatorConfig {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_max_message")]
    max_message_bytes: usize,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    metrics_listen: Option<String>,
    tls: Option<RawTls>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("state")
}

fn default_listen() -> String {
    "127.0.0.1:50051".into()
}

fn default_max_message() -> usize {
    fedprofile_protocol::DEFAULT_MAX_MESSAGE_BYTES
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
    /// Certificate revocation list (PEM), re-read with the certificates.
    pub crl: Option<PathBuf>,
    /// Database, ledgers, audit log and run reports.
    pub state_dir: PathBuf,
    /// Where `/metrics` is served (loopback by default in the examples); `None`: off.
    pub metrics_listen: Option<SocketAddr>,
}

impl CoordinatorConfig {
    /// Reads and validates a coordinator configuration file.
    pub fn from_path(path: &Path) -> Result<CoordinatorConfig, ConfigError> {
        let raw: RawCoordinatorConfig = load(path)?;
        let base = base_dir(path).to_path_buf();
        if let Some(tls) = &raw.tls {
            tls.refuse(
                TlsField::ServerName,
                path,
                "only clients and operators name the coordinator's certificate",
            )?;
        }
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
        let metrics_listen = match &raw.metrics_listen {
            None => None,
            Some(text) => Some(text.parse().map_err(|e| ConfigError::Invalid {
                path: path.to_path_buf(),
                field: "metrics_listen",
                problem: format!("'{text}' is not an address like 127.0.0.1:9464 ({e})"),
            })?),
        };
        Ok(CoordinatorConfig {
            listen,
            max_message_bytes: raw.max_message_bytes,
            crl: raw
                .tls
                .as_ref()
                .and_then(|t| t.crl.as_ref())
                .map(|c| base.join(c)),
            tls: raw
                .tls
                .map(|t| TlsFiles::under(&base, &t.ca_cert, &t.cert, &t.key)),
            state_dir: base.join(raw.state_dir),
            metrics_listen,
        })
    }
}
