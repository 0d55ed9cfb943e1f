//! The Telco demo data against its injected-fault counts (`faults.json`): every count
//! of every partner/split must match the quality report exactly.

mod common;

use common::{assert_encodes, demo_schema, for_every_split, partner_dir};
use fedprofile_data::{Reason, load_split};

const KEYS: [&str; 8] = [
    "customers",
    "churn_rate",
    "stale_duplicate_accounts",
    "exact_duplicate_services",
    "customers_missing_from_services",
    "case_or_whitespace_noise_cells",
    "unparseable_monthly_charges",
    "blank_total_charges_real",
];

#[test]
fn every_split_matches_faults_json() {
    let schema = demo_schema("schema.toml");
    let mut mismatches = Vec::new();
    for_every_split(&schema, |name, expected, loaded| {
        let r = &loaded.report;

        let keys: Vec<&str> = expected.keys().map(String::as_str).collect();
        let mut sorted_keys = KEYS.to_vec();
        sorted_keys.sort_unstable();
        assert_eq!(keys, sorted_keys, "{name}: unexpected keys in faults.json");

        let accounts = r.source("accounts").unwrap();
        let services = r.source("services").unwrap();
        let actual: [(&str, f64); 8] = [
            ("customers", r.users as f64),
            ("churn_rate", r.positive_rate().unwrap()),
            (
                "stale_duplicate_accounts",
                accounts.stale_duplicates_removed as f64,
            ),
            (
                "exact_duplicate_services",
                services.exact_duplicates_removed as f64,
            ),
            (
                "customers_missing_from_services",
                services.users_missing as f64,
            ),
            (
                "case_or_whitespace_noise_cells",
                r.count(Reason::CaseOrWhitespaceNoise) as f64,
            ),
            (
                "unparseable_monthly_charges",
                r.column("monthly_charges").unwrap().unparseable as f64,
            ),
            (
                "blank_total_charges_real",
                r.column("total_charges").unwrap().blank as f64,
            ),
        ];
        for (key, got) in actual {
            let want = expected[key].as_f64().unwrap();
            let ok = if key == "churn_rate" {
                // faults.json rounds to 4 decimals
                ((got * 1e4).round() / 1e4 - want).abs() < 1e-9
            } else {
                got == want
            };
            if !ok {
                mismatches.push(format!("{name}: {key}: expected {want}, got {got}"));
            }
        }

        // Consistency of the dataset with the report.
        let d = &loaded.dataset;
        assert_eq!(d.len() as u64, r.users, "{name}");
        assert_eq!(
            d.ids()
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len(),
            d.len(),
            "{name}: one row per customer"
        );
        assert_eq!(d.labels().unwrap().len(), d.len());
        // No other fault kinds in this data.
        for reason in [
            Reason::MalformedRow,
            Reason::MissingId,
            Reason::MissingLabel,
            Reason::UnparseableLabel,
            Reason::OutsideVocabulary,
            Reason::OrphanRow,
            Reason::KeepNewestTie,
            Reason::DuplicateId,
        ] {
            assert_eq!(r.count(reason), 0, "{name}: {reason:?}\n{r}");
        }
    });
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn encoding_and_stats_are_consistent() {
    let schema = demo_schema("schema.toml");
    let loaded = load_split(&schema, &partner_dir("partner-b"), "train").unwrap();
    let d = &loaded.dataset;
    assert_encodes("partner-b/train", &loaded, &schema.feature_template());

    let stats = d.numeric_stats();
    let names: Vec<&str> = stats.iter().map(|s| s.column.as_str()).collect();
    assert_eq!(names, ["tenure", "monthly_charges", "total_charges"]);
    let r = &loaded.report;
    for s in &stats {
        let imputed = r.column(&s.column).unwrap().imputed;
        assert_eq!(s.count + imputed, d.len() as u64, "{}", s.column);
    }
    // 7 blank total_charges (tenure 0) are imputed as 0, not counted in the stats.
    assert_eq!(r.column("total_charges").unwrap().imputed, 7);
    // 6 customers missing from services: their service columns are imputed as unknown.
    assert_eq!(r.column("internet_service").unwrap().imputed, 6);

    let text = r.to_string();
    assert!(text.contains("stale duplicates dropped"), "{text}");
    let json = serde_json::to_value(r).unwrap();
    assert_eq!(json["users"], 1290);
}

/// Loading is a pure function of the exports: a second load gives the same
/// users, labels and quality report. (How long a load takes is printed by
/// `cargo bench -p fedprofile-data --bench load`, not asserted here.)
#[test]
fn loading_a_split_twice_gives_the_same_rows_and_report() {
    let schema = demo_schema("schema.toml");
    let dir = partner_dir("partner-a");
    let first = load_split(&schema, &dir, "train").unwrap();
    let second = load_split(&schema, &dir, "train").unwrap();
    assert_eq!(first.dataset.len(), 1892);
    assert_eq!(first.dataset.ids(), second.dataset.ids());
    assert_eq!(
        first.dataset.labels().unwrap(),
        second.dataset.labels().unwrap()
    );
    assert_eq!(first.report.users, second.report.users);
    assert_eq!(
        first.report.count(Reason::CaseOrWhitespaceNoise),
        second.report.count(Reason::CaseOrWhitespaceNoise)
    );
}

#[test]
fn every_demo_split_is_usable_and_has_no_absurd_cells() {
    let schema = demo_schema("schema.toml");
    for_every_split(&schema, |name, _, loaded| {
        assert!(
            loaded.problems().is_empty(),
            "{name}: {:?}",
            loaded.problems()
        );
        for reason in [
            Reason::NumberTooLarge,
            Reason::OutOfRangeClipped,
            Reason::OutOfRangeRejected,
        ] {
            assert_eq!(loaded.report.count(reason), 0, "{name}: {reason:?}");
        }
    });
}
