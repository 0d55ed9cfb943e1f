//! Mutual TLS with rustls (never OpenSSL).
//!
//! The coordinator requires every client to present a certificate that chains to
//! the federation CA; rustls checks the chain and the validity period during the
//! handshake, so a client with no certificate, one from another CA, or an expired
//! one never reaches the service. The client's identity is the common name (CN)
//! of its leaf certificate.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

pub mod pem;

pub use pem::{PemError, PemFile};

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file cannot be read or holds no usable block.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// This side's certificate is outside its validity period.
    #[error(
        "certificate '{path}' is not valid now: it is valid from {not_before} to {not_after}, so it {state} (renew it, or check this machine's clock)"
    )]
    NotValidNow {
        /// The certificate file.
        path: PathBuf,
        /// Start of validity (RFC 3339).
        not_before: String,
        /// End of validity (RFC 3339).
        not_after: String,
        /// "expired at …" or "is not valid yet".
        state: String,
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

/// Installs rustls' process-wide crypto provider (ring), once, before any TLS
/// configuration is built; both binaries call it at start, tests before they
/// dial. A second call does nothing.
pub fn install_crypto_provider() {
    // Err means a provider is installed already: the one this call would install.
    let _ = rustls::crypto::ring::default_provider().install_default();
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

impl TlsFiles {
    /// The files at `ca_cert`, `cert` and `key` as a configuration file names
    /// them: relative paths are resolved against `base`, the file's folder.
    pub fn under(base: &Path, ca_cert: &Path, cert: &Path, key: &Path) -> TlsFiles {
        TlsFiles {
            ca_cert: base.join(ca_cert),
            cert: base.join(cert),
            key: base.join(key),
        }
    }
}

/// A certificate file's bytes, checked to hold at least one certificate.
fn read_certificate(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let file = PemFile::read(what, path)?;
    file.certificates()?;
    Ok(file.into_bytes())
}

/// A private key file's bytes, checked to hold a key (PKCS#8, SEC1 or PKCS#1).
fn read_key(path: &Path) -> Result<Vec<u8>, TlsError> {
    let file = PemFile::read("private key", path)?;
    file.private_key()?;
    Ok(file.into_bytes())
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
        let not_after = rfc3339(validity.not_after.timestamp());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let state = if validity.not_after.timestamp() < now {
            format!("expired at {not_after}")
        } else {
            "is not valid yet".to_string()
        };
        return Err(TlsError::NotValidNow {
            path: files.cert.clone(),
            not_before: rfc3339(validity.not_before.timestamp()),
            not_after,
            state,
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

/// Client side: trust `ca_cert` for the coordinator named `server_name`, present `cert`/`key`.
pub fn client_config(files: &TlsFiles, server_name: &str) -> Result<ClientTlsConfig, TlsError> {
    let cert = read_certificate("certificate", &files.cert)?;
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
    let ca = read_certificate("CA certificate", &files.ca_cert)?;
    let cert = read_certificate("certificate", &files.cert)?;
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
    let ca = read_certificate("CA certificate", ca_cert)?;
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

/// Unix seconds as RFC 3339 UTC, e.g. `2026-11-30T00:00:00Z`.
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

/// Which side's files a TLS failure is explained with.
#[derive(Debug, Clone, Copy)]
pub struct TlsContext<'a> {
    /// This side's files.
    pub files: &'a TlsFiles,
    /// The name the coordinator's certificate must be valid for.
    pub server_name: &'a str,
}

/// Finds a rustls error in an error's source chain, looking inside
/// `io::Error`s (whose `source()` skips the error they wrap). HTTP/2 keeps only
/// the text of an I/O error, so a rustls error is also recognized by its
/// message ("received fatal alert: UnknownCA", "invalid peer certificate: …").
pub fn rustls_error_in(error: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    let mut current = Some(error);
    let mut depth = 0;
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.clone());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            let inner: &(dyn std::error::Error + 'static) = inner;
            if let Some(tls) = rustls_error_in(inner) {
                return Some(tls);
            }
        }
        if let Some(tls) = rustls_error_from_text(&e.to_string()) {
            return Some(tls);
        }
        depth += 1;
        if depth > 32 {
            return None;
        }
        current = e.source();
    }
    None
}

/// The rustls error whose `Display` is `text`, for the kinds that matter here.
fn rustls_error_from_text(text: &str) -> Option<rustls::Error> {
    use rustls::AlertDescription as A;
    use rustls::CertificateError as C;
    if let Some(name) = text.strip_prefix("received fatal alert: ") {
        const ALERTS: [A; 16] = [
            A::UnknownCA,
            A::CertificateExpired,
            A::CertificateRevoked,
            A::CertificateRequired,
            A::AccessDenied,
            A::BadCertificate,
            A::UnsupportedCertificate,
            A::CertificateUnknown,
            A::DecryptError,
            A::HandshakeFailure,
            A::ProtocolVersion,
            A::IllegalParameter,
            A::DecodeError,
            A::InternalError,
            A::UnexpectedMessage,
            A::NoApplicationProtocol,
        ];
        let name = name.trim();
        return Some(match ALERTS.iter().find(|a| format!("{a:?}") == name) {
            Some(alert) => rustls::Error::AlertReceived(*alert),
            None => rustls::Error::General(text.to_string()),
        });
    }
    if let Some(what) = text.strip_prefix("invalid peer certificate: ") {
        #[allow(deprecated)]
        let cert = if what.starts_with("UnknownIssuer") || what.starts_with("BadSignature") {
            C::UnknownIssuer
        } else if what.starts_with("Expired") || what.starts_with("certificate expired") {
            C::Expired
        } else if what.starts_with("NotValidYet") || what.starts_with("certificate not valid yet") {
            C::NotValidYet
        } else if what.starts_with("Revoked") {
            C::Revoked
        } else if what.starts_with("NotValidForName")
            || what.starts_with("certificate not valid for name")
        {
            C::NotValidForName
        } else {
            return Some(rustls::Error::General(text.to_string()));
        };
        return Some(rustls::Error::InvalidCertificate(cert));
    }
    if text.starts_with("received corrupt message") {
        return Some(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
    }
    None
}

/// A failed connection or call explained in one sentence naming this side's
/// files, when the cause is TLS: the coordinator refused our certificate (the
/// alert it sent), or our side refused the coordinator's certificate. `None`
/// when the chain holds no TLS error.
pub fn explain_tls_failure(
    error: &(dyn std::error::Error + 'static),
    ctx: TlsContext<'_>,
) -> Option<String> {
    rustls_error_in(error).map(|e| explain_rustls(&e, ctx))
}

/// [`explain_tls_failure`] for a dialling side that may run without TLS:
/// `tls` is its files and the name the coordinator's certificate must be
/// valid for, `None` without TLS (and then there is nothing to explain).
pub fn explain_tls_refusal(
    error: &(dyn std::error::Error + 'static),
    tls: Option<&(TlsFiles, String)>,
) -> Option<String> {
    let (files, server_name) = tls?;
    explain_tls_failure(error, TlsContext { files, server_name })
}

/// [`explain_tls_failure`] for one rustls error.
pub fn explain_rustls(error: &rustls::Error, ctx: TlsContext<'_>) -> String {
    use rustls::AlertDescription as A;
    use rustls::CertificateError as C;
    let cert = ctx.files.cert.display();
    let ca = ctx.files.ca_cert.display();
    match error {
        rustls::Error::AlertReceived(alert) => match alert {
            // DecryptError: a signature that does not verify, i.e. a certificate
            // issued under a trusted CA's name by another key.
            A::UnknownCA | A::DecryptError => format!(
                "the coordinator does not trust our certificate ({cert}): it is not signed by a CA the coordinator knows (use a certificate issued by the federation CA)"
            ),
            A::CertificateExpired => format!(
                "the coordinator refused our certificate ({cert}): it has expired or is not valid yet (renew it, or check the clocks)"
            ),
            A::CertificateRevoked => format!(
                "the coordinator refused our certificate ({cert}): it has been revoked (ask the coordinator's operator for a new one)"
            ),
            A::CertificateRequired => {
                "the coordinator requires a client certificate and we presented none (set cert and key in the [tls] section)".to_string()
            }
            A::AccessDenied => format!(
                "the coordinator denied access to our certificate ({cert})"
            ),
            A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateUnknown => format!(
                "the coordinator refused our certificate ({cert}) as unusable (TLS alert {alert:?}): re-issue it with `certs issue`"
            ),
            other => format!("the coordinator ended the TLS handshake with the alert {other:?}"),
        },
        rustls::Error::InvalidCertificate(c) => match c {
            #[allow(deprecated)]
            C::UnknownIssuer | C::BadSignature => format!(
                "the coordinator's certificate is not signed by {ca} (is ca_cert the federation CA, and is the URL the federation's coordinator?)"
            ),
            C::Expired | C::ExpiredContext { .. } => {
                "the coordinator's certificate has expired (its operator must renew it)".to_string()
            }
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the coordinator's certificate is not valid yet (check the clocks)".to_string()
            }
            C::Revoked => "the coordinator's certificate is revoked".to_string(),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "the coordinator's certificate is not valid for the name '{}' (set server_name in the [tls] section to a name in its certificate)",
                ctx.server_name
            ),
            other => format!("the coordinator's certificate cannot be used: {other}"),
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the coordinator did not answer in TLS (is this the coordinator's TLS port, or is it running with --insecure?)".to_string()
        }
        rustls::Error::NoCertificatesPresented => {
            "the coordinator presented no certificate".to_string()
        }
        other => format!("the TLS handshake with the coordinator failed: {other}"),
    }
}

/// Asks the coordinator at `host:port` directly why it refuses us: under TLS
/// 1.3 the client finishes its side of the handshake before the coordinator
/// checks the client certificate, so the coordinator's alert often reaches
/// HTTP/2 as a bare "operation was canceled" or "transport error". This opens
/// one TLS connection with the same files, waits (at most `wait`) for what the
/// coordinator sends, and explains an alert or a refused coordinator
/// certificate with [`explain_rustls`]. `None` when the handshake is not
/// refused (or the coordinator cannot be reached at all).
pub async fn probe_refusal(
    ctx: TlsContext<'_>,
    host: &str,
    port: u16,
    wait: std::time::Duration,
) -> Option<String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::AsyncReadExt;

    let files = ctx.files;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&files.ca_cert).ok()? {
        roots.add(ca.ok()?).ok()?;
    }
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .ok()?
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let key = PrivateKeyDer::from_pem_file(&files.key).ok()?;
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .ok()?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from(ctx.server_name.to_string()).ok()?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        let mut stream = match connector.connect(name, tcp).await {
            Ok(stream) => stream,
            Err(e) => return explain_tls_failure(&e, ctx),
        };
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await {
            Err(e) => explain_tls_failure(&e, ctx),
            Ok(_) => None,
        }
    };
    tokio::time::timeout(wait, attempt).await.ok().flatten()
}

/// An error that is not the result of a TLS refusal, explained briefly: the
/// deepest message of the chain (e.g. "Connection refused (os error 111)").
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    let mut depth = 0;
    while let Some(next) = current.source() {
        current = next;
        depth += 1;
        if depth > 32 {
            break;
        }
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_000_000), "2026-11-30T00:53:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[derive(Debug)]
    struct Wrapper(Box<dyn std::error::Error + Send + Sync + 'static>);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("transport error")
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    fn chained(e: rustls::Error) -> Wrapper {
        // As tonic/hyper report it: a transport error over an io::Error over rustls.
        Wrapper(Box::new(Wrapper(Box::new(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e,
        )))))
    }

    #[test]
    fn tls_refusals_in_an_error_chain_become_sentences_naming_the_files() {
        let files = TlsFiles {
            ca_cert: "certs/ca.pem".into(),
            cert: "certs/partner-a.pem".into(),
            key: "certs/partner-a.key".into(),
        };
        let ctx = TlsContext {
            files: &files,
            server_name: "coordinator",
        };
        let explain = |e| explain_tls_failure(&chained(e), ctx).unwrap();
        use rustls::AlertDescription as A;
        use rustls::CertificateError as C;
        let cases = [
            (
                rustls::Error::AlertReceived(A::UnknownCA),
                "the coordinator does not trust our certificate (certs/partner-a.pem): it is not signed by a CA the coordinator knows",
            ),
            (
                rustls::Error::AlertReceived(A::CertificateExpired),
                "refused our certificate (certs/partner-a.pem): it has expired",
            ),
            (
                rustls::Error::AlertReceived(A::CertificateRevoked),
                "(certs/partner-a.pem): it has been revoked",
            ),
            (
                rustls::Error::AlertReceived(A::CertificateRequired),
                "requires a client certificate",
            ),
            (
                rustls::Error::InvalidCertificate(C::UnknownIssuer),
                "the coordinator's certificate is not signed by certs/ca.pem",
            ),
            (
                rustls::Error::InvalidCertificate(C::Expired),
                "the coordinator's certificate has expired",
            ),
            (
                rustls::Error::InvalidCertificate(C::NotValidForName),
                "not valid for the name 'coordinator'",
            ),
            (
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
                "did not answer in TLS",
            ),
        ];
        for (error, expected) in cases {
            let text = explain(error.clone());
            assert!(text.contains(expected), "{error:?}: {text}");
        }
        // HTTP/2 keeps only the message of an I/O error.
        let texted = Wrapper(Box::new(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received fatal alert: UnknownCA",
        )));
        assert!(
            explain_tls_failure(&texted, ctx)
                .unwrap()
                .contains("does not trust our certificate")
        );
        let plain = Wrapper(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused",
        )));
        assert_eq!(explain_tls_failure(&plain, ctx), None);
        assert_eq!(root_cause(&plain), "Connection refused");
    }
}
