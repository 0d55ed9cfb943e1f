//! Checkpoints and round records written by earlier coordinators still load:
//! the fixtures in `tests/fixtures/checkpoints/` were taken from the databases
//! of the four seeded demo federations (logistic, logistic under record-level
//! DP, linear regression, k-means) as the coordinator of 2026-12-01 wrote them.
//! A change to `Checkpoint` or `RoundRecord` that cannot read them breaks the
//! resume of every run in progress at an upgrade.

use std::path::PathBuf;

use fedprofile_coordinator::engine::{Checkpoint, RoundRecord};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/checkpoints")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn checkpoints_of_every_family_written_by_the_previous_coordinator_load() {
    // (file stem, family, round, outputs)
    let cases = [
        ("logistic-round-10", "logistic_regression", 10, 1),
        ("logistic-dp-round-10", "logistic_regression", 10, 1),
        ("linear-round-10", "linear_regression", 10, 1),
        ("kmeans-round-8", "kmeans", 8, 4),
    ];
    for (stem, family, round, outputs) in cases {
        let checkpoint: Checkpoint = serde_json::from_str(&fixture(&format!("{stem}.json")))
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert_eq!(checkpoint.round, round, "{stem}");
        assert_eq!(checkpoint.model.model_type, family, "{stem}");
        assert_eq!(checkpoint.model.outputs, outputs, "{stem}");
        let dim = checkpoint.model.features.dim();
        let expected = if family == "kmeans" {
            outputs * dim
        } else {
            dim + 1
        };
        assert_eq!(checkpoint.model.params.len(), expected, "{stem}");
        assert!(
            checkpoint.model.params.iter().all(|p| p.is_finite()),
            "{stem}"
        );
        assert_eq!(checkpoint.state.reported_examples.len(), 4, "{stem}");
        // Serialising again and reading back gives the same checkpoint.
        let again: Checkpoint =
            serde_json::from_str(&serde_json::to_string(&checkpoint).unwrap()).unwrap();
        assert_eq!(again, checkpoint, "{stem}");

        let record: Option<RoundRecord> =
            serde_json::from_str(&fixture(&format!("{stem}-record.json")))
                .unwrap_or_else(|e| panic!("{stem}-record: {e}"));
        let record = record.unwrap_or_else(|| panic!("{stem}-record: empty"));
        assert_eq!(record.round, round, "{stem}");
        assert_eq!(record.accepted, 4, "{stem}");
        assert!(
            record.metrics.is_some() || record.quality.is_some(),
            "{stem}"
        );
    }
}
