//! Development certificates: a federation CA, the coordinator's server
//! certificate and one client certificate per partner, made with `rcgen`.
//!
//! For production, use your organization's PKI; the files only need to be PEM:
//! a CA certificate, and for each party a certificate chaining to it whose
//! common name (CN) is the party's id.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// Making or writing a certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters or the key.
    #[error("cannot generate certificate for '{name}': {source}")]
    Generate {
        /// Subject being generated.
        name: String,
        /// The rcgen error.
        source: rcgen::Error,
    },
    /// A file could not be written or read.
    #[error("cannot {action} '{path}': {source}")]
    Io {
        /// "write" or "read".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A name that cannot be a client id.
    #[error("'{0}' is not a valid name (use letters, digits, '-', '_' and '.')")]
    BadName(String),
}

fn gen_err(name: &str) -> impl FnOnce(rcgen::Error) -> CertError + '_ {
    move |source| CertError::Generate {
        name: name.to_string(),
        source,
    }
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    fs::write(path, contents).map_err(|source| CertError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|source| {
            CertError::Io {
                action: "write",
                path: path.to_path_buf(),
                source,
            }
        })?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}

fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

fn valid_name(name: &str) -> Result<(), CertError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(CertError::BadName(name.to_string()));
    }
    Ok(())
}

/// Validity window of an issued certificate.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// From one hour ago for this many days.
    Days(i64),
    /// Already expired (for testing that expired certificates are refused).
    Expired,
}

impl Validity {
    fn apply(self, params: &mut CertificateParams) {
        let now = OffsetDateTime::now_utc();
        match self {
            Validity::Days(days) => {
                params.not_before = now - Duration::hours(1);
                params.not_after = now + Duration::days(days);
            }
            Validity::Expired => {
                params.not_before = now - Duration::days(30);
                params.not_after = now - Duration::days(1);
            }
        }
    }
}

/// File names used in a certificate directory.
pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

/// Key of the CA.
pub fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}

/// Certificate of a party.
pub fn cert_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pem"))
}

/// Key of a party.
pub fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.key"))
}

/// Creates a new CA in `dir` (`ca.pem`, `ca.key`), overwriting any there.
pub fn init_ca(dir: &Path, common_name: &str, days: i64) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(|source| CertError::Io {
        action: "write",
        path: dir.to_path_buf(),
        source,
    })?;
    let key = KeyPair::generate().map_err(gen_err(common_name))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err(common_name))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "fedprofile federation");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Validity::Days(days).apply(&mut params);
    let cert = params.self_signed(&key).map_err(gen_err(common_name))?;
    write(&ca_cert_path(dir), &cert.pem(), false)?;
    write(&ca_key_path(dir), &key.serialize_pem(), true)?;
    Ok(())
}

/// A development federation in `dir`: a new CA, the coordinator's certificate
/// `server_name` (with `sans`), one client certificate per name in `clients`,
/// and an empty revocation list (`certs init`, and the `local` launcher).
pub fn init_federation(
    dir: &Path,
    server_name: &str,
    sans: &[String],
    clients: &[String],
    days: i64,
) -> Result<(), CertError> {
    init_ca(dir, "fedprofile development CA", days)?;
    issue(dir, server_name, Role::Server, sans, Validity::Days(days))?;
    for client in clients {
        issue(dir, client, Role::Client, &[], Validity::Days(days))?;
    }
    // An empty revocation list, so a coordinator can name it from day one.
    let _ = fs::remove_file(crl_path(dir));
    let _ = fs::remove_file(dir.join("revoked.txt"));
    ensure_crl(dir)
}

/// What an issued certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The coordinator's server certificate; `name` is also put in the SANs with
    /// `localhost` and `127.0.0.1`.
    Server,
    /// A partner's client certificate; CN = the partner's id.
    Client,
    /// An operator's client certificate for the admin API; CN = the operator,
    /// OU = `fedprofile-operator`.
    Operator,
}

/// Issues `<name>.pem` / `<name>.key` in `dir`, signed by the CA there.
pub fn issue(
    dir: &Path,
    name: &str,
    role: Role,
    extra_sans: &[String],
    validity: Validity,
) -> Result<(PathBuf, PathBuf), CertError> {
    valid_name(name)?;
    let ca_key = KeyPair::from_pem(&read(&ca_key_path(dir))?).map_err(gen_err("ca"))?;
    let issuer =
        Issuer::from_ca_cert_pem(&read(&ca_cert_path(dir))?, ca_key).map_err(gen_err("ca"))?;

    let mut sans: Vec<String> = vec![name.to_string()];
    if role == Role::Server {
        sans.push("localhost".into());
    }
    sans.extend(extra_sans.iter().cloned());
    let mut params = CertificateParams::new(sans).map_err(gen_err(name))?;
    if role == Role::Server {
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    if role == Role::Operator {
        dn.push(
            DnType::OrganizationalUnitName,
            fedprofile_protocol::tls::OPERATOR_OU,
        );
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match role {
        Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Role::Client | Role::Operator => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    validity.apply(&mut params);
    let key = KeyPair::generate().map_err(gen_err(name))?;
    let cert = params.signed_by(&key, &issuer).map_err(gen_err(name))?;
    let (cert_file, key_file) = (cert_path(dir, name), key_path(dir, name));
    write(&cert_file, &cert.pem(), false)?;
    write(&key_file, &key.serialize_pem(), true)?;
    Ok((cert_file, key_file))
}

/// The CRL file of a certificate directory.
pub fn crl_path(dir: &Path) -> PathBuf {
    dir.join("crl.pem")
}

fn revoked_list_path(dir: &Path) -> PathBuf {
    dir.join("revoked.txt")
}

/// Revokes `<name>.pem` in `dir`: adds its serial to the directory's revocation
/// list and rewrites `crl.pem`, signed by the CA. Returns the revoked serial (hex).
pub fn revoke(dir: &Path, name: &str) -> Result<String, CertError> {
    valid_name(name)?;
    let pem = read(&cert_path(dir, name))?;
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
        .map_err(|e| CertError::BadName(format!("{name}: not a PEM certificate ({e})")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| CertError::BadName(format!("{name}: {e}")))?;
    let serial: Vec<u8> = cert.raw_serial().to_vec();
    let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
    let list_path = revoked_list_path(dir);
    let mut serials: Vec<String> = std::fs::read_to_string(&list_path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    if !serials.contains(&hex) {
        serials.push(hex.clone());
    }
    write_crl(dir, &serials)?;
    write(&list_path, &(serials.join("\n") + "\n"), false)?;
    Ok(hex)
}

fn write_crl(dir: &Path, serials_hex: &[String]) -> Result<(), CertError> {
    let ca_key = KeyPair::from_pem(&read(&ca_key_path(dir))?).map_err(gen_err("ca"))?;
    let issuer =
        Issuer::from_ca_cert_pem(&read(&ca_cert_path(dir))?, ca_key).map_err(gen_err("ca"))?;
    let now = OffsetDateTime::now_utc();
    let revoked_certs = serials_hex
        .iter()
        .map(|hex| {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect();
            rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(&bytes),
                revocation_time: now - Duration::minutes(1),
                reason_code: Some(rcgen::RevocationReason::CessationOfOperation),
                invalidity_date: None,
            }
        })
        .collect();
    let params = rcgen::CertificateRevocationListParams {
        this_update: now - Duration::minutes(1),
        next_update: now + Duration::days(30),
        crl_number: rcgen::SerialNumber::from(now.unix_timestamp().max(1) as u64),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer).map_err(gen_err("crl"))?;
    let pem = crl.pem().map_err(gen_err("crl"))?;
    write(&crl_path(dir), &pem, false)
}

/// Writes an empty CRL (nothing revoked yet) if `dir` has none.
pub fn ensure_crl(dir: &Path) -> Result<(), CertError> {
    if crl_path(dir).exists() {
        return Ok(());
    }
    write_crl(dir, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_and_issue_writes_pem_files_with_the_name_as_cn() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "test ca", 30).unwrap();
        issued(dir.path(), "coordinator", Role::Server, 30);
        let (cert, key) = issued(dir.path(), "partner-a", Role::Client, 30);
        let pem = fs::read_to_string(cert).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(fs::read_to_string(key).unwrap().contains("PRIVATE KEY"));
        let der = rustls_pem_der(&pem);
        assert_eq!(
            fedprofile_protocol::tls::identity_from_der(&der).unwrap(),
            "partner-a"
        );
    }

    #[test]
    fn operator_certificates_carry_the_operator_role_and_revocation_writes_a_crl() {
        use fedprofile_protocol::tls::PeerRole;
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "test ca", 30).unwrap();
        let (op, _) = issued(dir.path(), "alice", Role::Operator, 3);
        let (pa, _) = issued(dir.path(), "partner-a", Role::Client, 3);
        let der = |p: PathBuf| rustls_pem_der(&fs::read_to_string(p).unwrap());
        assert_eq!(
            fedprofile_protocol::tls::peer_from_der(&der(op)).unwrap(),
            ("alice".to_string(), PeerRole::Operator)
        );
        assert_eq!(
            fedprofile_protocol::tls::peer_from_der(&der(pa)).unwrap(),
            ("partner-a".to_string(), PeerRole::Partner)
        );
        let serial = revoke(dir.path(), "partner-a").unwrap();
        assert!(!serial.is_empty());
        let crl = fs::read_to_string(crl_path(dir.path())).unwrap();
        assert!(crl.starts_with("-----BEGIN X509 CRL-----"), "{crl}");
        // Revoking twice keeps one entry.
        revoke(dir.path(), "partner-a").unwrap();
        let list = fs::read_to_string(dir.path().join("revoked.txt")).unwrap();
        assert_eq!(list.lines().count(), 1);
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "test ca", 30).unwrap();
        let err = issue(dir.path(), "../evil", Role::Client, &[], Validity::Days(1)).unwrap_err();
        assert!(err.to_string().contains("not a valid name"), "{err}");
    }

    /// [`issue`] of a certificate for `name` in `role`, valid for `days`,
    /// without extra names; its certificate and key files.
    fn issued(dir: &Path, name: &str, role: Role, days: i64) -> (PathBuf, PathBuf) {
        issue(dir, name, role, &[], Validity::Days(days)).unwrap()
    }

    fn rustls_pem_der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }
}
