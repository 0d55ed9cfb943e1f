//! Model files written by the binaries of an earlier release still load, score
//! and profile exactly as they did, and are written back byte for byte.
//!
//! The fixtures in `tests/fixtures/model-files/` are the `model.json` files of
//! the seeded demo federations (`--insecure-test-seed 1`) of the release before
//! the model file became one versioned type: logistic regression (plain and
//! under record-level DP, version 1), linear regression and k-means (version 2).
//! The expected `*.scores.csv` and `*.profile.csv` were written by that
//! release's `score` and `profile` on partner-a's test split.

use std::fs;
use std::path::{Path, PathBuf};

use fedprofile_e2e::demo_dir;
use fedprofile_learning::ModelDocument;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/model-files")
        .join(name)
}

/// `(fixture, schema of deploy/demo/)`.
const MODELS: [(&str, &str); 4] = [
    ("logistic_regression.json", "schema.toml"),
    ("logistic_regression_dp.json", "schema.toml"),
    ("linear_regression.json", "schema-value.toml"),
    ("kmeans.json", "schema.toml"),
];

fn data_dir() -> PathBuf {
    demo_dir().join("data/partner-a")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn old_model_files_are_written_back_byte_for_byte() {
    for (name, _) in MODELS {
        let path = fixture(name);
        let model = ModelDocument::load(&path).unwrap();
        assert_eq!(model.to_json().unwrap(), read(&path), "{name}");
        let dir = tempfile::tempdir().unwrap();
        let saved = dir.path().join("model.json");
        model.save(&saved).unwrap();
        assert_eq!(read(&saved), read(&path), "{name}");
        assert_eq!(ModelDocument::load(&saved).unwrap(), model, "{name}");
    }
}

#[test]
fn old_model_files_score_as_before() {
    for (name, schema) in MODELS {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("scores.csv");
        let rows = fedprofile_client::score::score(
            &demo_dir().join(schema),
            &data_dir(),
            "test",
            &fixture(name),
            &out,
        )
        .unwrap();
        assert!(rows > 0, "{name}");
        let expected = fixture(&name.replace(".json", ".scores.csv"));
        assert_eq!(read(&out), read(&expected), "{name}");
    }
}

/// Old model files have no reference row: they profile against the
/// partner's own mean row (`FEDPROFILE_BLESS=1` rewrites the expected files).
#[test]
fn old_model_files_profile_as_before() {
    let cases: [(&str, &[&str], Option<&str>, &str); 3] = [
        (
            "schema.toml",
            &["logistic_regression.json"],
            Some("kmeans.json"),
            "logistic_regression.profile.csv",
        ),
        (
            "schema.toml",
            &["logistic_regression_dp.json"],
            None,
            "logistic_regression_dp.profile.csv",
        ),
        (
            "schema-value.toml",
            &["linear_regression.json"],
            None,
            "linear_regression.profile.csv",
        ),
    ];
    for (schema, models, segments, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("profile.csv");
        let models: Vec<PathBuf> = models.iter().map(|m| fixture(m)).collect();
        fedprofile_client::profile::profile(
            &demo_dir().join(schema),
            &data_dir(),
            "test",
            &models,
            segments.map(fixture).as_deref(),
            3,
            &out,
        )
        .unwrap();
        if std::env::var_os("FEDPROFILE_BLESS").is_some() {
            std::fs::copy(&out, fixture(expected)).unwrap();
        }
        assert_eq!(read(&out), read(&fixture(expected)), "{expected}");
    }
}
