//! Hash-chained JSON lines, shared by the coordinator's audit log
//! (`coordinator/src/audit.rs`) and the partners' privacy ledgers
//! ([`crate::ledger`]).
//!
//! Every line is one JSON object whose last member is `"hash"`, the hex SHA-256
//! of the line's canonical form, and which has a `prev_hash` member: the
//! previous line's `hash`, [`GENESIS`] on the first line. Editing a line breaks
//! its hash; removing, reordering or inserting one breaks the chain.
//!
//! The two logs were written before they shared this module and canonicalise
//! differently; both forms are kept, as named [`Canonical`] variants, so every
//! log written so far still verifies (fixtures in `tests/fixtures/hash-chain/`):
//!
//! - [`Canonical::EmptyHashMember`] (audit log): the entry serialised with its
//!   `hash` set to the empty string, `…,"hash":""}`. Verification serialises
//!   the parsed entry again, so it depends on field order, not on the line's
//!   bytes.
//! - [`Canonical::WithoutHashMember`] (privacy ledgers): the stored line's own
//!   bytes with the trailing `,"hash":"…"` member removed, `…}`. Verification
//!   hashes the bytes as stored, so a float is checked exactly as written.
//!
//! For entries whose fields are serialised in a fixed order (a struct), with
//! `hash` last, [`Canonical::seal`] writes a line that [`Canonical::check`]
//! accepts.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The first line's `prev_hash`.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An entry of a hash-chained log: a struct serialised with `hash` as its
/// last field.
pub trait Chained: Serialize + Clone {
    /// The stored `hash`.
    fn hash(&self) -> &str;
    /// Sets `hash`.
    fn set_hash(&mut self, hash: String);
}

/// Implements [`Chained`] for a struct whose hash is its `hash: String`
/// field: `fedprofile_privacy::chained_by_hash_field!(AuditEntry);`.
#[macro_export]
macro_rules! chained_by_hash_field {
    ($entry:ty) => {
        impl $crate::hash_chain::Chained for $entry {
            fn hash(&self) -> &str {
                &self.hash
            }
            fn set_hash(&mut self, hash: String) {
                self.hash = hash;
            }
        }
    };
}

/// Why a line cannot be sealed or does not check.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The entry cannot be serialised as JSON.
    #[error("the entry cannot be serialised: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The entry's serialisation does not end with its `hash` member.
    #[error("the entry's \"hash\" member is not its last")]
    HashNotLast,
    /// The stored line does not end with a 64-digit hex `hash` member.
    #[error("the line does not end with a 64-digit hex \"hash\" member")]
    NoHashMember,
    /// The line's content does not hash to its stored hash.
    #[error("stored hash {stored} but content hashes to {computed}")]
    Mismatch {
        /// The hash written in the line.
        stored: String,
        /// The hash of the line's canonical form.
        computed: String,
    },
}

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// How a line's canonical form (what its hash covers) is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canonical {
    /// The entry serialised with `"hash":""` (the coordinator's audit log).
    EmptyHashMember,
    /// The stored line without its `,"hash":"…"` member (the privacy ledgers).
    WithoutHashMember,
}

const EMPTY_HASH_TAIL: &str = ",\"hash\":\"\"}";
const HASH_KEY: &str = ",\"hash\":\"";

impl Canonical {
    /// The canonical form of `entry` (its own `hash` is ignored).
    fn of<T: Chained>(self, entry: &T) -> Result<String, ChainError> {
        let mut unhashed = entry.clone();
        unhashed.set_hash(String::new());
        let text = serde_json::to_string(&unhashed)?;
        match self {
            Canonical::EmptyHashMember => Ok(text),
            Canonical::WithoutHashMember => text
                .strip_suffix(EMPTY_HASH_TAIL)
                .map(|body| format!("{body}}}"))
                .ok_or(ChainError::HashNotLast),
        }
    }

    /// Sets `entry`'s hash from its content and returns the line to store
    /// (without a newline).
    pub fn seal<T: Chained>(self, entry: &mut T) -> Result<String, ChainError> {
        let hash = sha256_hex(self.of(entry)?.as_bytes());
        entry.set_hash(hash);
        Ok(serde_json::to_string(entry)?)
    }

    /// Checks that `line`, parsed as `entry`, hashes to its stored hash.
    pub fn check<T: Chained>(self, line: &str, entry: &T) -> Result<(), ChainError> {
        let (computed, stored) = match self {
            Canonical::EmptyHashMember => (sha256_hex(self.of(entry)?.as_bytes()), entry.hash()),
            Canonical::WithoutHashMember => {
                let (canonical, stored) = split_hash(line).ok_or(ChainError::NoHashMember)?;
                (sha256_hex(canonical.as_bytes()), stored)
            }
        };
        if computed != stored || entry.hash() != stored {
            return Err(ChainError::Mismatch {
                stored: stored.to_string(),
                computed,
            });
        }
        Ok(())
    }
}

/// Splits a stored line into its [`Canonical::WithoutHashMember`] form and
/// the stored hash; `None` if it does not end with a 64-digit hex `hash`.
pub fn split_hash(line: &str) -> Option<(String, &str)> {
    let idx = line.rfind(HASH_KEY)?;
    let rest = line[idx + HASH_KEY.len()..].strip_suffix("\"}")?;
    if rest.len() != 64 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((format!("{}}}", &line[..idx]), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Serialize, serde::Deserialize)]
    struct Entry {
        value: f64,
        prev_hash: String,
        hash: String,
    }

    crate::chained_by_hash_field!(Entry);

    fn entry() -> Entry {
        Entry {
            value: 0.1,
            prev_hash: GENESIS.to_string(),
            hash: String::new(),
        }
    }

    #[test]
    fn each_form_hashes_what_its_documentation_says() {
        let mut audit = entry();
        let line = Canonical::EmptyHashMember.seal(&mut audit).unwrap();
        let expected = sha256_hex(
            format!("{{\"value\":0.1,\"prev_hash\":\"{GENESIS}\",\"hash\":\"\"}}").as_bytes(),
        );
        assert_eq!(audit.hash, expected);
        assert!(line.ends_with(&format!(",\"hash\":\"{expected}\"}}")));

        let mut ledger = entry();
        let line = Canonical::WithoutHashMember.seal(&mut ledger).unwrap();
        let expected =
            sha256_hex(format!("{{\"value\":0.1,\"prev_hash\":\"{GENESIS}\"}}").as_bytes());
        assert_eq!(ledger.hash, expected);
        assert_eq!(
            line,
            format!("{{\"value\":0.1,\"prev_hash\":\"{GENESIS}\",\"hash\":\"{expected}\"}}")
        );
    }

    #[test]
    fn a_sealed_line_checks_and_an_edited_one_does_not() {
        for form in [Canonical::EmptyHashMember, Canonical::WithoutHashMember] {
            let mut e = entry();
            let line = form.seal(&mut e).unwrap();
            let parsed: Entry = serde_json::from_str(&line).unwrap();
            form.check(&line, &parsed).unwrap();
            let edited = line.replace("0.1", "0.2");
            let parsed: Entry = serde_json::from_str(&edited).unwrap();
            assert!(
                matches!(
                    form.check(&edited, &parsed),
                    Err(ChainError::Mismatch { .. })
                ),
                "{form:?}"
            );
        }
        // The ledger form needs the hash member at the end of the stored line.
        let e = entry();
        assert!(matches!(
            Canonical::WithoutHashMember.check("{\"value\":0.1}", &e),
            Err(ChainError::NoHashMember)
        ));
    }

    #[test]
    fn an_entry_that_cannot_be_serialised_is_an_error_not_an_empty_hash() {
        let mut e = entry();
        e.value = f64::NAN; // serde_json writes NaN as null: still serialisable
        assert!(Canonical::EmptyHashMember.seal(&mut e).is_ok());
        #[derive(Debug, Clone, Serialize)]
        struct Bad {
            map: std::collections::HashMap<(u8, u8), u8>,
            hash: String,
        }
        crate::chained_by_hash_field!(Bad);
        let mut bad = Bad {
            map: [((1, 2), 3)].into_iter().collect(),
            hash: String::new(),
        };
        assert!(matches!(
            Canonical::EmptyHashMember.seal(&mut bad),
            Err(ChainError::Serialize(_))
        ));
        assert!(bad.hash.is_empty());
    }
}
