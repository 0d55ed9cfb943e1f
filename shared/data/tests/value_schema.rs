//! The Telco demo data with `deploy/demo/schema-value.toml`: `monthly_charges` is a
//! numeric regression target (`type = "target"`) and `churn` ignored.

mod common;

use std::collections::HashSet;

use common::{
    assert_encodes, assert_label_and_features, column_names, demo_schema, for_every_split,
};
use fedprofile_data::{LabelKind, Reason};

const SCHEMA: &str = "schema-value.toml";

#[test]
fn schema_declares_monthly_charges_as_target() {
    let schema = demo_schema(SCHEMA);
    let spec = assert_label_and_features(
        &schema,
        "monthly_charges",
        LabelKind::Numeric,
        "total_charges",
    );
    let names = column_names(&spec);
    // Every input is a feature of schema.toml too (one config profiles with all models).
    let base = demo_schema("schema.toml");
    let base_spec = base.feature_template();
    let base_names = column_names(&base_spec);
    assert!(names.iter().all(|n| base_names.contains(n)), "{names:?}");
}

#[test]
fn every_split_loads_with_numeric_targets() {
    let schema = demo_schema(SCHEMA);
    let spec = schema.feature_template();
    for_every_split(&schema, |name, expected, loaded| {
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
        assert_encodes(name, loaded, &spec);
    });
}
