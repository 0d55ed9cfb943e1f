//! The Telco demo data with `deploy/demo/schema-contract.toml`: `contract` is a
//! multi-class label (`type = "class"`), `monthly_charges` a numeric feature and
//! `churn` ignored.

mod common;

use std::collections::HashSet;

use common::{
    assert_encodes, assert_label_and_features, column_names, demo_schema, faults, for_every_split,
    partner_dir,
};
use fedprofile_data::{FeatureColumn, LabelKind, Reason, load_split};

const SCHEMA: &str = "schema-contract.toml";

const CLASSES: [&str; 3] = ["month-to-month", "one year", "two year"];

#[test]
fn schema_declares_contract_as_class() {
    let schema = demo_schema(SCHEMA);
    let spec = assert_label_and_features(
        &schema,
        "contract",
        LabelKind::Multiclass,
        "monthly_charges",
    );
    assert_eq!(schema.label_classes().unwrap(), CLASSES);
    let names = column_names(&spec);

    // The same features as schema.toml, without contract.
    let base = demo_schema("schema.toml");
    let base_spec = base.feature_template();
    let mut expected: Vec<&str> = base_spec
        .columns
        .iter()
        .map(|c| c.name())
        .filter(|n| *n != "contract")
        .collect();
    let mut names = names;
    names.sort_unstable();
    expected.sort_unstable();
    assert_eq!(names, expected);
}

#[test]
fn partner_a_train_has_three_classes() {
    let schema = demo_schema(SCHEMA);
    let base = demo_schema("schema.toml");
    let dir = partner_dir("partner-a");
    let loaded = load_split(&schema, &dir, "train").unwrap();
    let base_loaded = load_split(&base, &dir, "train").unwrap();
    let (d, r) = (&loaded.dataset, &loaded.report);

    assert_eq!(d.label_kind(), Some(LabelKind::Multiclass));
    let y = d.labels().unwrap();
    assert_eq!(y.len(), d.len());
    let seen: HashSet<u64> = y
        .iter()
        .map(|&v| {
            assert!(v == 0.0 || v == 1.0 || v == 2.0, "label {v}");
            v as u64
        })
        .collect();
    assert_eq!(seen, HashSet::from([0, 1, 2]), "all three classes present");

    // Rows: those of schema.toml minus the rows dropped for the class label (none in
    // the demo data: the vocabulary matches every normalised contract cell).
    let accounts = r.source("accounts").unwrap();
    let dropped = accounts.rows_missing_label + accounts.rows_unparseable_label;
    assert_eq!(
        dropped,
        r.count(Reason::MissingLabel) + r.count(Reason::UnparseableLabel)
    );
    assert_eq!(d.len(), base_loaded.dataset.len() - dropped as usize, "{r}");
    assert_eq!(dropped, 0, "{r}");
    assert_eq!(r.users, faults()["partner-a/train"]["customers"]);
    assert_eq!(d.ids(), base_loaded.dataset.ids());

    // The class index is the contract's index in schema.toml's categorical one-hot.
    let base_spec = base.feature_template();
    let offset: usize = base_spec
        .columns
        .iter()
        .take_while(|c| c.name() != "contract")
        .map(FeatureColumn::width)
        .sum();
    let x = base_loaded.dataset.encode(&base_spec).unwrap();
    for (row, &label) in x.rows().into_iter().zip(&y) {
        let one_hot: Vec<f64> = (0..=CLASSES.len()).map(|j| row[offset + j]).collect();
        let mut expected = vec![0.0; CLASSES.len() + 1];
        expected[label as usize] = 1.0;
        assert_eq!(one_hot, expected);
    }

    // Same cleaning as schema.toml: the contract cells' noise is counted as before, and
    // monthly_charges is a numeric feature again (its N/A cells imputed).
    assert_eq!(
        r.count(Reason::CaseOrWhitespaceNoise),
        base_loaded.report.count(Reason::CaseOrWhitespaceNoise)
    );
    assert_eq!(
        r.column("contract").unwrap().noise,
        base_loaded.report.column("contract").unwrap().noise
    );
    assert_eq!(
        r.column("monthly_charges").unwrap().unparseable,
        faults()["partner-a/train"]["unparseable_monthly_charges"]
    );

    // The report's class summary.
    assert!(r.label.is_none() && r.target.is_none());
    let c = r.classes.as_ref().unwrap();
    assert_eq!(c.column, "contract");
    assert_eq!(c.classes, CLASSES);
    assert_eq!(Some(c.counts.clone()), d.class_counts());
    assert_eq!(c.counts.iter().sum::<u64>(), r.users);
    for (i, &n) in c.counts.iter().enumerate() {
        assert_eq!(n, y.iter().filter(|&&v| v == i as f64).count() as u64);
    }
    let text = r.to_string();
    assert!(
        text.contains(&format!(
            "users after cleaning and fusion: {} (contract: month-to-month = {} (",
            r.users, c.counts[0]
        )),
        "{text}"
    );
    let json = serde_json::to_value(r).unwrap();
    assert_eq!(json["classes"]["counts"], serde_json::json!(c.counts));
}

#[test]
fn every_split_loads_with_class_labels() {
    let schema = demo_schema(SCHEMA);
    let spec = schema.feature_template();
    for_every_split(&schema, |name, expected, loaded| {
        let (d, r) = (&loaded.dataset, &loaded.report);

        // Every contract cell is one of the classes after trimming and case-folding.
        assert_eq!(r.count(Reason::MissingLabel), 0, "{name}\n{r}");
        assert_eq!(r.count(Reason::UnparseableLabel), 0, "{name}\n{r}");
        assert_eq!(r.users, expected["customers"].as_u64().unwrap(), "{name}");
        assert_eq!(d.len() as u64, r.users, "{name}");

        let counts = d.class_counts().unwrap();
        assert_eq!(counts.len(), 3, "{name}");
        assert!(counts.iter().all(|&n| n > 0), "{name}: {counts:?}");
        assert_eq!(counts.iter().sum::<u64>(), r.users, "{name}");
        assert_eq!(r.classes.as_ref().unwrap().counts, counts, "{name}");

        assert_encodes(name, loaded, &spec);
    });
}
