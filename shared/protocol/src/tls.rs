//! Mutual TLS with rustls (never OpenSSL).
//!
//! The coordinator requires every client to present a certificate that chains to
//! the federation CA; rustls checks the chain and the validity period during the
//! handshake, so a client with no certificate, one from another CA, or an expired
//! one never reaches the service. The client's identity is the common name (CN)
//! of its leaf certificate.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {what} '{path}': {source}")]
    Read {
        /// Which file (e.g. "CA certificate").
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no PEM block of the expected kind.
    #[error("{what} '{path}' holds no PEM '{label}' block")]
    NotPem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The PEM label expected.
        label: &'static str,
    },
    /// This side's certificate is outside its validity period.
    #[error(
        "certificate '{path}' is not valid now: it is valid from {not_before} to {not_after} (renew it, or check this machine's clock)"
    )]
    NotValidNow {
        /// The certificate file.
        path: PathBuf,
        /// Start of validity.
        not_before: String,
        /// End of validity.
        not_after: String,
    },
    /// The private key is not the key of the certificate.
    #[error(
        "private key '{key}' does not belong to certificate '{cert}' (their public keys differ): use the key that was issued with this certificate"
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A certificate or key file does not parse.
    #[error("{what} '{path}' cannot be parsed: {reason}")]
    Unparsable {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The peer presented no certificate.
    #[error("the peer presented no client certificate")]
    NoPeerCertificate,
    /// The peer's certificate could not be parsed or has no common name.
    #[error("the peer certificate has no usable common name: {0}")]
    BadPeerCertificate(String),
}

/// Paths of the PEM files one side needs for mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The federation CA certificate, which the peer's certificate must chain to.
    pub ca_cert: PathBuf,
    /// This side's certificate (chain).
    pub cert: PathBuf,
    /// This side's private key.
    pub key: PathBuf,
}

fn read_pem(what: &'static str, path: &Path, label: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains(&format!("-----BEGIN {label}")) {
        return Err(TlsError::NotPem {
            what,
            path: path.to_path_buf(),
            label,
        });
    }
    Ok(bytes)
}

fn read_key(path: &Path) -> Result<Vec<u8>, TlsError> {
    // Accept PKCS#8 ("PRIVATE KEY"), SEC1 ("EC PRIVATE KEY") and PKCS#1 ("RSA PRIVATE KEY").
    read_pem("private key", path, "").and_then(|bytes| {
        if String::from_utf8_lossy(&bytes).contains("PRIVATE KEY-----") {
            Ok(bytes)
        } else {
            Err(TlsError::NotPem {
                what: "private key",
                path: path.to_path_buf(),
                label: "PRIVATE KEY",
            })
        }
    })
}

/// Checks this side's own identity before any handshake, so a bad file gets a
/// sentence instead of a bare "transport error": the certificate must be
/// within its validity period and the key must be the certificate's key.
fn check_identity(files: &TlsFiles, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let unparsable = |what, path: &Path, reason: String| TlsError::Unparsable {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem)
        .map_err(|e| unparsable("certificate", &files.cert, e.to_string()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| unparsable("certificate", &files.cert, e.to_string()))?;
    let validity = cert.validity();
    if !validity.is_valid() {
        return Err(TlsError::NotValidNow {
            path: files.cert.clone(),
            not_before: validity.not_before.to_string(),
            not_after: validity.not_after.to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| unparsable("private key", &files.key, e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| unparsable("private key", &files.key, e.to_string()))?;
    if let Some(public) = signing.public_key()
        && public.as_ref() != cert.tbs_certificate.subject_pki.raw
    {
        return Err(TlsError::KeyMismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        });
    }
    Ok(())
}

/// Server side: present `cert`/`key`, require a client certificate chaining to `ca_cert`.
pub fn server_config(files: &TlsFiles) -> Result<ServerTlsConfig, TlsError> {
    let ca = read_pem("CA certificate", &files.ca_cert, "CERTIFICATE")?;
    let cert = read_pem("certificate", &files.cert, "CERTIFICATE")?;
    let key = read_key(&files.key)?;
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(ca))
        .client_auth_optional(false))
}

/// Client side: trust `ca_cert` for the coordinator named `server_name`, present `cert`/`key`.
pub fn client_config(files: &TlsFiles, server_name: &str) -> Result<ClientTlsConfig, TlsError> {
    let cert = read_pem("certificate", &files.cert, "CERTIFICATE")?;
    let key = read_key(&files.key)?;
    check_identity(files, &cert, &key)?;
    client_config_unchecked(files, server_name)
}

/// Like [`client_config`] without the local identity check (only for testing
/// that the coordinator refuses expired or foreign certificates itself).
pub fn client_config_unchecked(
    files: &TlsFiles,
    server_name: &str,
) -> Result<ClientTlsConfig, TlsError> {
    let ca = read_pem("CA certificate", &files.ca_cert, "CERTIFICATE")?;
    let cert = read_pem("certificate", &files.cert, "CERTIFICATE")?;
    let key = read_key(&files.key)?;
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .domain_name(server_name.to_string()))
}

/// Client side without a client certificate (only for testing refusals).
pub fn client_config_without_identity(
    ca_cert: &Path,
    server_name: &str,
) -> Result<ClientTlsConfig, TlsError> {
    let ca = read_pem("CA certificate", ca_cert, "CERTIFICATE")?;
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(server_name.to_string()))
}

/// Organizational unit that marks an operator certificate.
pub const OPERATOR_OU: &str = "fedprofile-operator";

/// What a client certificate allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// A partner's client node: the federation service only.
    Partner,
    /// An operator: the admin service only.
    Operator,
}

/// The identity (CN) and role (operator if OU = [`OPERATOR_OU`]) of a peer.
pub fn peer_from_der(leaf: &[u8]) -> Result<(String, PeerRole), TlsError> {
    let id = identity_from_der(leaf)?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| TlsError::BadPeerCertificate(e.to_string()))?;
    let operator = cert
        .subject()
        .iter_organizational_unit()
        .any(|ou| ou.as_str().is_ok_and(|v| v == OPERATOR_OU));
    Ok((
        id,
        if operator {
            PeerRole::Operator
        } else {
            PeerRole::Partner
        },
    ))
}

/// The identity of a peer: the common name of its leaf certificate (DER).
pub fn identity_from_der(leaf: &[u8]) -> Result<String, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| TlsError::BadPeerCertificate(e.to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or_else(|| TlsError::BadPeerCertificate("no CN in subject".into()))?;
    let cn = cn
        .as_str()
        .map_err(|e| TlsError::BadPeerCertificate(e.to_string()))?;
    if cn.is_empty()
        || !cn
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(TlsError::BadPeerCertificate(format!(
            "common name {cn:?} is not a valid client id (letters, digits, '-', '_', '.')"
        )));
    }
    Ok(cn.to_string())
}
