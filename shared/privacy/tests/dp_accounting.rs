//! Agreement with Google's dp-accounting 0.6 on the reference vectors in
//! `tests/fixtures/dp_accounting/vectors.json` (see `generate.py` there).

use fedprofile_privacy::{Accountant, Charge, rdp};
use serde::Deserialize;

const VECTORS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/dp_accounting/vectors.json"
));

#[derive(Deserialize)]
struct Vectors {
    int_orders: Vec<f64>,
    frac_orders: Vec<f64>,
    frac_integral_orders: Vec<f64>,
    rdp: Vec<RdpRow>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct RdpRow {
    q: f64,
    sigma: f64,
    rdp_int: Vec<f64>,
    rdp_frac_dpa: Vec<Option<f64>>,
    rdp_frac_integral: Vec<f64>,
}

#[derive(Deserialize, Clone)]
struct Case {
    q: f64,
    sigma: f64,
    steps: u64,
    delta: f64,
    rdp_epsilon_int: f64,
    rdp_epsilon_default: f64,
    pld_pessimistic: Option<f64>,
    pld_optimistic: Option<f64>,
}

fn vectors() -> Vectors {
    serde_json::from_str(VECTORS).expect("vectors.json parses")
}

fn rel(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / a.abs().max(b.abs())
    }
}

/// Our subsampled-Gaussian RDP of `row` at `orders` is within the relative
/// tolerance `tol` of `expected` (the values of `source`).
fn assert_rdp_close(row: &RdpRow, orders: &[f64], expected: &[f64], tol: f64, source: &str) {
    let ours = rdp::subsampled_gaussian_rdp(row.q, row.sigma, orders).unwrap();
    for ((a, o), t) in orders.iter().zip(&ours).zip(expected) {
        assert!(
            rel(*o, *t) < tol,
            "q {} sigma {} order {a}: ours {o} {source} {t}",
            row.q,
            row.sigma
        );
    }
}

#[test]
fn rdp_at_integer_orders_matches_to_1e9() {
    let v = vectors();
    assert_eq!(v.rdp.len(), 36);
    for row in &v.rdp {
        assert_rdp_close(row, &v.int_orders, &row.rdp_int, 1e-9, "dp-accounting");
    }
}

#[test]
fn rdp_at_fractional_orders_is_exact_and_never_above_dp_accounting() {
    let v = vectors();
    for row in &v.rdp {
        let ours = rdp::subsampled_gaussian_rdp(row.q, row.sigma, &v.frac_orders).unwrap();
        for ((a, o), t) in v.frac_orders.iter().zip(&ours).zip(&row.rdp_frac_dpa) {
            if let Some(t) = t {
                assert!(
                    *o <= t * (1.0 + 1e-9),
                    "q {} sigma {} order {a}: ours {o} above dp-accounting {t}",
                    row.q,
                    row.sigma
                );
            }
        }
        let (orders, expected) = (&v.frac_integral_orders, &row.rdp_frac_integral);
        assert_rdp_close(row, orders, expected, 1e-6, "integral");
    }
}

#[test]
fn rdp_epsilon_matches() {
    let v = vectors();
    let acc = Accountant::default();
    for c in &v.cases {
        let row = v
            .rdp
            .iter()
            .find(|r| r.q == c.q && r.sigma == c.sigma)
            .unwrap();
        let ours_rdp = rdp::subsampled_gaussian_rdp(c.q, c.sigma, &v.int_orders).unwrap();
        let composed: Vec<f64> = ours_rdp.iter().map(|r| r * c.steps as f64).collect();
        let (eps, _) = rdp::rdp_to_epsilon(&v.int_orders, &composed, c.delta).unwrap();
        assert!(
            rel(eps, c.rdp_epsilon_int) < 1e-9,
            "q {} sigma {} steps {} delta {}: ours {eps} dp-accounting {}",
            c.q,
            c.sigma,
            c.steps,
            c.delta,
            c.rdp_epsilon_int
        );
        assert_eq!(row.rdp_int.len(), v.int_orders.len());
        let charge = Charge::subsampled_gaussian(c.q, c.sigma, c.steps).unwrap();
        let (full, _) = acc.rdp_epsilon(&[charge], c.delta).unwrap();
        assert!(
            full <= c.rdp_epsilon_default * (1.0 + 1e-9) && full <= eps * (1.0 + 1e-9),
            "q {} sigma {} steps {}: ours {full} dp-accounting {}",
            c.q,
            c.sigma,
            c.steps,
            c.rdp_epsilon_default
        );
    }
}

/// The PLD epsilon (what the accountant computes, before taking the minimum
/// with RDP) lies within 1 % of dp-accounting's pessimistic estimate and
/// never below its optimistic one. The rows are split over two threads.
#[test]
fn pld_epsilon_within_one_percent() {
    let v = vectors();
    let cases: Vec<Case> = v
        .cases
        .iter()
        .filter(|c| c.pld_pessimistic.is_some())
        .cloned()
        .collect();
    assert!(cases.len() > 300);
    let acc = Accountant::default();
    let check = |chunk: &[Case]| -> Vec<String> {
        let mut failures = Vec::new();
        for c in chunk {
            let (pess, opt) = (c.pld_pessimistic.unwrap(), c.pld_optimistic.unwrap());
            let charge = Charge::subsampled_gaussian(c.q, c.sigma, c.steps).unwrap();
            let report = acc.epsilon(&[charge], c.delta).unwrap();
            let ours = report.pld_epsilon.unwrap();
            let ok = ours >= opt && (ours - pess).abs() <= 0.01 * pess && report.epsilon <= ours;
            let line = format!(
                "q {} sigma {} steps {} delta {}: ours {ours} pessimistic {pess} optimistic {opt} (rel {:.2e})",
                c.q,
                c.sigma,
                c.steps,
                c.delta,
                (ours - pess) / pess
            );
            if std::env::var_os("PLD_VERBOSE").is_some() {
                eprintln!("{line}");
            }
            if !ok {
                failures.push(line);
            }
        }
        failures
    };
    let mid = cases.len() / 2;
    let (a, b) = cases.split_at(mid);
    let failures: Vec<String> = std::thread::scope(|s| {
        let h = s.spawn(|| check(b));
        let mut f = check(a);
        f.extend(h.join().unwrap());
        f
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
