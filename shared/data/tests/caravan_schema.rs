//! The Caravan demo data (`deploy/demo/caravan/`) with its schema: every split of
//! every insurer loads clean, with the customers and positives of `counts.json`, and
//! encodes to the 136 features its README states.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use fedprofile_data::{Schema, load_split};

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/demo/caravan/data"
);
const SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/demo/caravan/schema.toml"
);

fn counts() -> BTreeMap<String, BTreeMap<String, u64>> {
    let text = std::fs::read_to_string(Path::new(DATA).join("counts.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_split_loads_clean_with_the_counts_of_counts_json() {
    let schema = Schema::from_path(Path::new(SCHEMA)).unwrap();
    let counts = counts();
    assert_eq!(counts.len(), 6, "expected 3 insurers x 2 splits");
    for (name, expected) in &counts {
        let (insurer, split) = name.split_once('/').unwrap();
        let loaded = load_split(&schema, &Path::new(DATA).join(insurer), split).unwrap();
        let r = &loaded.report;
        assert!(
            loaded.problems().is_empty(),
            "{name}: {:?}",
            loaded.problems()
        );
        assert!(r.issues.is_empty(), "{name}: the exports are clean\n{r}");
        assert_eq!(r.users, expected["customers"], "{name}: customers");
        let label = r.label.as_ref().expect("caravan_policy is a binary label");
        assert_eq!(label.column, "caravan_policy");
        assert_eq!(label.positives, expected["positives"], "{name}: positives");
        // Both sources cover exactly the same customers.
        let policies = r.source("policies").unwrap();
        assert_eq!(
            (policies.users_missing, policies.orphan_rows),
            (0, 0),
            "{name}"
        );
        let d = &loaded.dataset;
        assert_eq!(d.len() as u64, r.users, "{name}");
        assert_eq!(
            d.ids().iter().collect::<HashSet<_>>().len(),
            d.len(),
            "{name}"
        );
    }
}

#[test]
fn the_schema_has_two_codes_and_encodes_136_features() {
    let schema = Schema::from_path(Path::new(SCHEMA)).unwrap();
    let loaded = load_split(&schema, &Path::new(DATA).join("insurer-a"), "test").unwrap();
    let r = &loaded.report;
    let kinds = |kind: &str| -> Vec<&str> {
        r.columns
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.name.as_str())
            .collect()
    };
    assert_eq!(kinds("categorical"), ["MOSTYPE", "MOSHOOFD"]);
    assert_eq!(
        kinds("numeric").len(),
        41 + 42,
        "the other columns of both sources"
    );
    // One-hot: 41 subtypes + unseen, 10 main types + unseen; 83 numerics.
    let spec = schema.feature_template();
    assert_eq!(spec.dim(), 42 + 11 + 83);
    let x = loaded.dataset.encode(&spec).unwrap();
    assert_eq!(x.dim(), (211, 136));
    assert!(x.iter().all(|v| v.is_finite()));
}
