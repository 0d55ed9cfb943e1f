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

/// What an issued certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The coordinator's server certificate; `name` is also put in the SANs with
    /// `localhost` and `127.0.0.1`.
    Server,
    /// A partner's client certificate; CN = the partner's id.
    Client,
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
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match role {
        Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_and_issue_writes_pem_files_with_the_name_as_cn() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "test ca", 30).unwrap();
        issue(
            dir.path(),
            "coordinator",
            Role::Server,
            &[],
            Validity::Days(30),
        )
        .unwrap();
        let (cert, key) = issue(
            dir.path(),
            "partner-a",
            Role::Client,
            &[],
            Validity::Days(30),
        )
        .unwrap();
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
    fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "test ca", 30).unwrap();
        let err = issue(dir.path(), "../evil", Role::Client, &[], Validity::Days(1)).unwrap_err();
        assert!(err.to_string().contains("not a valid name"), "{err}");
    }

    fn rustls_pem_der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }
}
