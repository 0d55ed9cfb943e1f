//! What the tests on the Telco demo data share: its schemas, its partners'
//! folders, its injected-fault counts (`faults.json`) and a loop over every
//! partner/split those counts name.

#![allow(dead_code)] // each test file uses its own part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fedprofile_data::{FeatureColumn, FeatureSpec, LabelKind, LoadedSplit, Schema, load_split};

/// The expected counts of one partner/split, by key.
pub type Expected = BTreeMap<String, serde_json::Value>;

/// `deploy/demo/<file>`.
pub fn demo_path(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/demo")
        .join(file)
}

/// The schema `deploy/demo/<file>` (e.g. `schema.toml`).
pub fn demo_schema(file: &str) -> Schema {
    let path = demo_path(file);
    Schema::from_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The data folder of `partner`.
pub fn partner_dir(partner: &str) -> PathBuf {
    demo_path("data").join(partner)
}

/// `faults.json`: the expected counts by `partner/split`.
pub fn faults() -> BTreeMap<String, Expected> {
    let text = std::fs::read_to_string(demo_path("data/faults.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Loads every partner/split of `faults.json` (all 8 of them) under `schema`
/// and calls `check(name, expected counts, loaded split)` on each.
pub fn for_every_split(schema: &Schema, mut check: impl FnMut(&str, &Expected, &LoadedSplit)) {
    let faults = faults();
    assert_eq!(faults.len(), 8, "expected 4 partners x 2 splits");
    for (name, expected) in &faults {
        let (partner, split) = name.split_once('/').unwrap();
        let loaded = load_split(schema, &partner_dir(partner), split)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        check(name, expected, &loaded);
    }
}

/// The names of a feature template's columns.
pub fn column_names(spec: &FeatureSpec) -> Vec<&str> {
    spec.columns.iter().map(|c| c.name()).collect()
}

/// Panics unless `loaded` encodes under `spec` into one finite row per user.
pub fn assert_encodes(name: &str, loaded: &LoadedSplit, spec: &FeatureSpec) {
    let d = &loaded.dataset;
    let x = d.encode(spec).unwrap();
    assert_eq!(x.dim(), (d.len(), spec.dim()), "{name}");
    assert!(x.iter().all(|v| v.is_finite()), "{name}");
}

/// Panics unless `schema`'s label is the column `label`, of `kind`, with no
/// positive value, and its features leave out `label` and `churn` but hold
/// the numeric feature `numeric`; returns the feature template.
pub fn assert_label_and_features(
    schema: &Schema,
    label: &str,
    kind: LabelKind,
    numeric: &str,
) -> FeatureSpec {
    assert_eq!(schema.label_name(), Some(label));
    assert_eq!(schema.label_kind(), Some(kind));
    assert_eq!(schema.label_positive(), None);
    let spec = schema.feature_template();
    let names = column_names(&spec);
    assert!(!names.contains(&label), "{names:?}");
    assert!(!names.contains(&"churn"), "{names:?}");
    assert!(
        spec.columns
            .iter()
            .any(|c| matches!(c, FeatureColumn::Numeric { name, .. } if name == numeric)),
        "{numeric} is not a numeric feature: {names:?}"
    );
    spec
}
