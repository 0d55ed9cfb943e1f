//! The one PEM reader: every certificate, private key and revocation list the
//! coordinator or a client reads goes through [`PemFile`], so a missing, empty
//! or garbled file gets the same sentence on both sides, naming which file it
//! is (`what`, e.g. "CA certificate") and its path.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

/// A PEM file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
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
    /// The file is not valid PEM.
    #[error("{what} '{path}' is not valid PEM: {detail}")]
    Invalid {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The file holds no PEM block of the expected kind.
    #[error("{what} '{path}' holds no PEM '{label}' block")]
    NoBlock {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The PEM label expected.
        label: &'static str,
    },
}

/// The bytes of one PEM file, with what it is for and where it was read from.
#[derive(Debug, Clone)]
pub struct PemFile {
    what: &'static str,
    path: PathBuf,
    bytes: Vec<u8>,
}

impl PemFile {
    /// Reads the file at `path`; `what` names it in errors.
    pub fn read(what: &'static str, path: &Path) -> Result<PemFile, PemError> {
        let bytes = std::fs::read(path).map_err(|source| PemError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })?;
        Ok(PemFile {
            what,
            path: path.to_path_buf(),
            bytes,
        })
    }

    /// The file's bytes, as read.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The file's bytes, as read.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    fn invalid(&self, e: rustls::pki_types::pem::Error) -> PemError {
        PemError::Invalid {
            what: self.what,
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    fn no_block(&self, label: &'static str) -> PemError {
        PemError::NoBlock {
            what: self.what,
            path: self.path.clone(),
            label,
        }
    }

    /// Every "CERTIFICATE" block, in file order; at least one.
    pub fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, PemError> {
        self.blocks("CERTIFICATE")
    }

    /// The first private key: PKCS#8 ("PRIVATE KEY"), SEC1 ("EC PRIVATE KEY")
    /// or PKCS#1 ("RSA PRIVATE KEY").
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, PemError> {
        PrivateKeyDer::from_pem_slice(&self.bytes).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => self.no_block("PRIVATE KEY"),
            e => self.invalid(e),
        })
    }

    /// Every "X509 CRL" block; at least one (an empty file is more likely one
    /// caught mid-write than a revocation list).
    pub fn revocation_lists(&self) -> Result<Vec<CertificateRevocationListDer<'static>>, PemError> {
        self.blocks("X509 CRL")
    }

    /// Every block of kind `T` (labelled `label`), in file order; at least one.
    fn blocks<T: PemObject>(&self, label: &'static str) -> Result<Vec<T>, PemError> {
        let blocks = T::pem_slice_iter(&self.bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.invalid(e))?;
        if blocks.is_empty() {
            return Err(self.no_block(label));
        }
        Ok(blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn missing_empty_and_garbled_files_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let missing = PemFile::read("CA certificate", &dir.join("absent.pem")).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("cannot read CA certificate '"),
            "{missing}"
        );
        let empty = file(dir, "empty.pem", "");
        let err = PemFile::read("certificate", &empty)
            .unwrap()
            .certificates()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "certificate '{}' holds no PEM 'CERTIFICATE' block",
                empty.display()
            )
        );
        let err = PemFile::read("private key", &empty)
            .unwrap()
            .private_key()
            .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("holds no PEM 'PRIVATE KEY' block"),
            "{err}"
        );
        let err = PemFile::read("certificate revocation list", &empty)
            .unwrap()
            .revocation_lists()
            .unwrap_err();
        assert!(
            err.to_string().ends_with("holds no PEM 'X509 CRL' block"),
            "{err}"
        );
        let garbled = file(
            dir,
            "garbled.pem",
            "-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n",
        );
        let err = PemFile::read("certificate", &garbled)
            .unwrap()
            .certificates()
            .unwrap_err();
        assert!(err.to_string().contains("is not valid PEM"), "{err}");
    }
}
