//! The data fingerprint a long-lived client node (`run --keep-running`) sends
//! the coordinator, so that it can start an update when partners' data changed
//! (see `docs/updates.md`, "Data triggers"): the cleaned rows per split and a
//! SHA-256 of the export files, never rows.
//!
//! The export is watched by polling the files' sizes and modification times
//! on a bounded interval ([`ExportStamp`]); the hash is computed only when the
//! stamp changed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use fedprofile_protocol::messages::DataFingerprint;
use sha2::{Digest, Sha256};

/// Most files of an export folder the fingerprint looks at.
const MAX_FILES: usize = 256;

/// The name, size and modification time of each file of an export folder.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExportStamp(Vec<(PathBuf, u64, Option<SystemTime>)>);

impl ExportStamp {
    /// The stamp of the regular files directly in `dir`, in name order (at most
    /// [`MAX_FILES`]); a folder that cannot be read has an empty stamp.
    pub fn of(dir: &Path) -> ExportStamp {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return ExportStamp::default();
        };
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                meta.is_file()
                    .then(|| (e.path(), meta.len(), meta.modified().ok()))
            })
            .collect();
        files.sort();
        files.truncate(MAX_FILES);
        ExportStamp(files)
    }

    /// SHA-256 (hex) over the files' names and bytes, in name order. A file
    /// that vanished or cannot be read counts by its name only.
    pub fn sha256(&self) -> String {
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        for (path, _, _) in &self.0 {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            hash.update(name.unwrap_or_default().as_bytes());
            hash.update([0u8]);
            if let Ok(mut file) = std::fs::File::open(path) {
                while let Ok(n) = file.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    hash.update(&buf[..n]);
                }
            }
            hash.update([0u8]);
        }
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The fingerprint of an export: `rows` (cleaned rows per split) and the
/// hash of the files of `stamp`.
pub fn fingerprint(
    stamp: &ExportStamp,
    rows: std::collections::BTreeMap<String, u64>,
) -> DataFingerprint {
    DataFingerprint {
        rows,
        sha256: stamp.sha256(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_follows_the_files_and_the_stamp_their_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.csv"), "a,b\n1,2\n").unwrap();
        let first = ExportStamp::of(dir.path());
        let hash = first.sha256();
        assert_eq!(hash.len(), 64);
        assert_eq!(ExportStamp::of(dir.path()), first);
        assert_eq!(ExportStamp::of(dir.path()).sha256(), hash);
        std::fs::write(dir.path().join("train.csv"), "a,b\n1,2\n3,4\n").unwrap();
        let second = ExportStamp::of(dir.path());
        assert_ne!(second, first);
        assert_ne!(second.sha256(), hash);
        let f = fingerprint(&second, [("train".to_string(), 2)].into());
        assert_eq!(f.rows["train"], 2);
    }
}
