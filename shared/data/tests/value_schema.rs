//! The Telco demo data with `deploy/demo/schema-value.toml`: `monthly_charges` is a
//! numeric regression target (`type = "target"`) and `churn` ignored.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use fedprofile_data::{FeatureColumn, LabelKind, Reason, Schema, load_split};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/demo/data");
const SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/demo/schema-value.toml"
);
const BASE_SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/demo/schema.toml");

fn faults() -> BTreeMap<String, BTreeMap<String, serde_json::Value>> {
    let text = std::fs::read_to_string(Path::new(DATA).join("faults.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn schema_declares_monthly_charges_as_target() {
    let schema = Schema::from_path(Path::new(SCHEMA)).unwrap();
    assert_eq!(schema.label_name(), Some("monthly_charges"));
    assert_eq!(schema.label_kind(), Some(LabelKind::Numeric));
    assert_eq!(schema.label_positive(), None);

    let spec = schema.feature_template();
    let names: Vec<&str> = spec.columns.iter().map(|c| c.name()).collect();
    assert!(!names.contains(&"monthly_charges"), "{names:?}");
    assert!(!names.contains(&"churn"), "{names:?}");
    // Every input is a feature of schema.toml too (one config profiles with all models).
    let base = Schema::from_path(Path::new(BASE_SCHEMA)).unwrap();
    let base_spec = base.feature_template();
    let base_names: Vec<&str> = base_spec.columns.iter().map(|c| c.name()).collect();
    assert!(names.iter().all(|n| base_names.contains(n)), "{names:?}");
    assert!(
        spec.columns
            .iter()
            .any(|c| matches!(c, FeatureColumn::Numeric { name, .. } if name == "total_charges")),
        "{names:?}"
    );
}

#[test]
fn every_split_loads_with_numeric_targets() {
    let schema = Schema::from_path(Path::new(SCHEMA)).unwrap();
    let spec = schema.feature_template();
    let faults = faults();
    assert_eq!(faults.len(), 8, "expected 4 partners x 2 splits");
    for (name, expected) in &faults {
        let (partner, split) = name.split_once('/').unwrap();
        let loaded = load_split(&schema, &Path::new(DATA).join(partner), split).unwrap();
        let (d, r) = (&loaded.dataset, &loaded.report);

        let customers = expected["customers"].as_u64().unwrap();
        let unparseable = expected["unparseable_monthly_charges"].as_u64().unwrap();
        assert_eq!(
            r.count(Reason::UnparseableLabel),
            unparseable,
            "{name}\n{r}"
        );
        assert_eq!(
            r.source("accounts").unwrap().rows_unparseable_label,
            unparseable,
            "{name}"
        );
        assert_eq!(r.count(Reason::MissingLabel), 0, "{name}");
        // The services rows of the dropped customers are no longer joined.
        assert!(r.count(Reason::OrphanRow) <= unparseable, "{name}\n{r}");
        assert_eq!(r.users, customers - unparseable, "{name}\n{r}");
        assert_eq!(d.len() as u64, r.users, "{name}");
        assert_eq!(
            d.ids().iter().collect::<HashSet<_>>().len(),
            d.len(),
            "{name}: one row per customer"
        );

        assert_eq!(d.label_kind(), Some(LabelKind::Numeric), "{name}");
        assert_eq!(d.positives(), None, "{name}");
        let y = d.labels().unwrap();
        assert_eq!(y.len(), d.len(), "{name}");
        for &v in &y {
            assert!(v.is_finite() && (18.0..=120.0).contains(&v), "{name}: {v}");
        }

        assert!(r.label.is_none(), "{name}");
        let t = r.target.as_ref().unwrap();
        assert_eq!(t.column, "monthly_charges");
        assert_eq!(t.count, r.users, "{name}");
        assert!(t.min >= 18.0 && t.max <= 120.0 && t.min <= t.mean && t.mean <= t.max);
        assert!(r.to_string().contains("(monthly_charges: "), "{name}\n{r}");

        assert!(!d.feature_names().contains(&"monthly_charges"));
        let x = d.encode(&spec).unwrap();
        assert_eq!(x.dim(), (d.len(), spec.dim()), "{name}");
        assert!(x.iter().all(|v| v.is_finite()), "{name}");
    }
}
