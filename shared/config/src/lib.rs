//! fedprofile's configuration files, read the same way by every binary.
//!
//! - [`run`]: the run file, read by the coordinator (which drives rounds from
//!   it) and by a partner's `privacy cost --run`;
//! - [`ConfigError`]: the one error for every configuration or run file; its
//!   message names the file, and the field when a value is wrong;
//! - [`read`] / [`parse`]: the file read and TOML parse every config file uses
//!   (raw `deny_unknown_fields` structs are parsed, then validated by their
//!   owner into the types the rest of the program uses);
//! - [`RawTls`]: the `[tls]` section that the coordinator's, the client's and
//!   the operator's config files share;
//! - [`init_logging`]: the stderr log both binaries start with.
//!
//! The coordinator's and the client's own config files stay in their crates
//! (`coordinator/src/config.rs`, `client-node/src/config.rs`) and build on these.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod run;

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
        /// What toml said, with line and column (on one line).
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

/// Reads a configuration file as text.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses `text` (the contents of `path`) as TOML into `T`; toml's message,
/// with line and column, becomes one line.
pub fn parse<T: for<'de> Deserialize<'de>>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', " "),
    })
}

/// [`read`] then [`parse`].
pub fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
    parse(&read(path)?, path)
}

/// The folder relative paths in the file at `path` are resolved against.
pub fn base_dir(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// The `[tls]` section of a configuration file, as written.
///
/// ```toml
/// [tls]
/// ca_cert = "certs/ca.pem"        # the federation CA
/// cert = "certs/partner-a.pem"    # this side's certificate
/// key = "certs/partner-a.key"
/// server_name = "coordinator"     # clients and operators: the name in the coordinator's certificate
/// crl = "certs/crl.pem"           # coordinator: revoked certificates
/// ```
///
/// Each file kind accepts only its own optional field; [`RawTls::refuse`]
/// names one that does not belong.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// The federation CA certificate.
    pub ca_cert: PathBuf,
    /// This side's certificate (chain).
    pub cert: PathBuf,
    /// This side's private key.
    pub key: PathBuf,
    /// Dialling side: the name in the coordinator's certificate.
    pub server_name: Option<String>,
    /// Coordinator: certificate revocation list (PEM).
    pub crl: Option<PathBuf>,
}

/// Which optional field of [`RawTls`] a file kind does not accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsField {
    /// `server_name` (only dialling sides name the server).
    ServerName,
    /// `crl` (only the coordinator checks revocations).
    Crl,
}

impl RawTls {
    /// An error if `field` is set: `path` is a file of a kind that does not
    /// read it (`why` says which kind reads it instead).
    pub fn refuse(&self, field: TlsField, path: &Path, why: &str) -> Result<(), ConfigError> {
        let (set, name) = match field {
            TlsField::ServerName => (self.server_name.is_some(), "tls.server_name"),
            TlsField::Crl => (self.crl.is_some(), "tls.crl"),
        };
        if set {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                field: name,
                problem: format!("is not a setting of this file: {why}"),
            });
        }
        Ok(())
    }
}

/// Starts the stderr log: `RUST_LOG` if set, else `default_filter` (e.g.
/// `"warn,fedprofile_client=info"`); colours only on a terminal, no targets.
/// A second call does nothing.
pub fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
