//! Hand-checked values, heterogeneous composition, calibration and speed.

use std::time::{Duration, Instant};

use fedprofile_privacy::{
    Accountant, AccountantKind, Charge, PrivacyBudget, calibrate, pld, rdp, would_exceed,
};

#[test]
fn analytic_gaussian_sigma_one() {
    // Balle & Wang 2018: sigma 1, sensitivity 1, delta 1e-5 -> 4.37718.
    let c = Charge::subsampled_gaussian(1.0, 1.0, 1).unwrap();
    let r = Accountant::default().epsilon(&[c], 1e-5).unwrap();
    assert!((r.epsilon - 4.377_18).abs() < 5e-6, "{r:?}");
    assert_eq!(r.accountant, AccountantKind::Pld);
    // The discretised PLD reaches it closely, from above.
    let d = pld::epsilon_with_interval(&[c], 1e-5, 1e-4).unwrap();
    assert!((4.377_17..4.3773).contains(&d), "{d}");
}

#[test]
fn dp_sgd_reference_point() {
    // q 0.01, sigma 1.1, 1000 steps, delta 1e-5: 1.7118 by RDP, 1.5154 by PLD.
    let c = Charge::subsampled_gaussian(0.01, 1.1, 1000).unwrap();
    let r = Accountant::default().epsilon(&[c], 1e-5).unwrap();
    assert!((r.rdp_epsilon - 1.7118).abs() < 1e-4, "{r:?}");
    assert!((r.pld_epsilon.unwrap() - 1.5154).abs() < 2e-4, "{r:?}");
    assert_eq!(r.epsilon, r.pld_epsilon.unwrap());
    assert_eq!(r.accountant, AccountantKind::Pld);
}

#[test]
fn heterogeneous_charges_compose() {
    let acc = Accountant::default();
    let half = Charge::subsampled_gaussian(0.01, 1.1, 500).unwrap();
    let whole = Charge::subsampled_gaussian(0.01, 1.1, 1000).unwrap();
    let split = acc.epsilon(&[half, half], 1e-5).unwrap();
    let joint = acc.epsilon(&[whole], 1e-5).unwrap();
    assert!((split.rdp_epsilon - joint.rdp_epsilon).abs() < 1e-9 * joint.rdp_epsilon);
    let (s, j) = (split.pld_epsilon.unwrap(), joint.pld_epsilon.unwrap());
    assert!((s - j).abs() < 1e-3 * j, "split {s} joint {j}");

    // Rounds with different parameters, including one without sampling.
    let a = Charge::subsampled_gaussian(0.01, 1.1, 300).unwrap();
    let b = Charge::subsampled_gaussian(0.05, 2.0, 200).unwrap();
    let g = Charge::subsampled_gaussian(1.0, 8.0, 3).unwrap();
    let all = acc.epsilon(&[a, b, g], 1e-5).unwrap();
    for single in [a, b, g] {
        let e = acc.epsilon(&[single], 1e-5).unwrap();
        assert!(all.epsilon > e.epsilon);
    }
    let rdp_sum = acc.rdp(&[a]).unwrap();
    assert!(all.epsilon <= all.rdp_epsilon);
    assert!(all.pld_epsilon.unwrap() <= all.rdp_epsilon);
    assert_eq!(rdp_sum.len(), rdp::default_orders().len());
    // Charges with q = 0 cost nothing.
    let free = Charge::subsampled_gaussian(0.0, 1.0, 10).unwrap();
    assert_eq!(acc.epsilon(&[free], 1e-5).unwrap().epsilon, 0.0);
}

#[test]
fn fractional_orders_match_direct_integration() {
    // Reference: the defining integral A_alpha = E_{N(0, s^2)}[(1 - q + q e^{(2z-1)/(2s^2)})^alpha]
    // by composite Simpson's rule on a wide, fine grid (independent of the crate's quadrature).
    for (q, sigma, alpha) in [
        (0.01, 1.1, 2.5),
        (0.1, 0.8, 1.7),
        (0.5, 2.0, 7.3),
        (0.001, 4.0, 10.9),
    ] {
        let (lo, hi, n) = (-40.0 * sigma, alpha + 40.0 * sigma, 200_000usize);
        let h = (hi - lo) / n as f64;
        let f = |z: f64| {
            let dens = (-z * z / (2.0 * sigma * sigma)).exp()
                / (sigma * (2.0 * std::f64::consts::PI).sqrt());
            // (1 + u)^alpha - 1 keeps precision when A is close to 1.
            let u = q * ((2.0 * z - 1.0) / (2.0 * sigma * sigma)).exp_m1();
            dens * (alpha * u.ln_1p()).exp_m1()
        };
        let mut s = f(lo) + f(hi);
        for i in 1..n {
            s += f(lo + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        let reference = (s * h / 3.0).ln_1p() / (alpha - 1.0);
        let ours = rdp::subsampled_gaussian_rdp(q, sigma, &[alpha]).unwrap()[0];
        assert!(
            ((ours - reference) / reference).abs() < 1e-6,
            "q {q} sigma {sigma} alpha {alpha}: ours {ours} integral {reference}"
        );
    }
}

#[test]
fn calibration_returns_a_sigma_that_meets_the_target() {
    let acc = Accountant::default();
    let sigma = calibrate::noise_multiplier(1.5154, 1e-5, 0.01, 1000).unwrap();
    assert!((sigma - 1.1).abs() < 0.01, "{sigma}");
    let at = |s: f64| {
        let c = Charge::subsampled_gaussian(0.01, s, 1000).unwrap();
        acc.epsilon(&[c], 1e-5).unwrap().epsilon
    };
    assert!(at(sigma) <= 1.5154);
    assert!(at(sigma * (1.0 - 1e-3)) > 1.5154);
    // Unsampled Gaussian: sigma 1 gives 4.37718, so target 4.37718 needs sigma ~1.
    let s = calibrate::noise_multiplier(4.377_19, 1e-5, 1.0, 1).unwrap();
    assert!((s - 1.0).abs() < 2e-4, "{s}");
    assert!(calibrate::noise_multiplier(-1.0, 1e-5, 0.01, 10).is_err());
}

#[test]
fn budget_filter_refuses_before_spending() {
    let spent = vec![Charge::subsampled_gaussian(0.01, 1.1, 900).unwrap()];
    let next = Charge::subsampled_gaussian(0.01, 1.1, 100).unwrap();
    let ok = would_exceed(&spent, &next, &PrivacyBudget::new(1.52, 1e-5).unwrap()).unwrap();
    assert!(ok.is_allowed(), "{ok:?}");
    let no = would_exceed(&spent, &next, &PrivacyBudget::new(1.51, 1e-5).unwrap()).unwrap();
    assert!(!no.is_allowed(), "{no:?}");
}

#[test]
fn ten_thousand_steps_are_fast() {
    let c = Charge::subsampled_gaussian(0.01, 1.1, 10_000).unwrap();
    let t = Instant::now();
    let r = Accountant::default().epsilon(&[c], 1e-5).unwrap();
    let took = t.elapsed();
    assert!((r.epsilon - 5.1926).abs() < 0.01 * 5.1926, "{r:?}");
    // Release builds take a few tens of milliseconds; debug builds are slower.
    let limit = if cfg!(debug_assertions) {
        Duration::from_secs(10)
    } else {
        Duration::from_millis(500)
    };
    assert!(took < limit, "{took:?}");
}
