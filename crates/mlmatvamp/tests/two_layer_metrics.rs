//! The two-layer learning application (spec §7.1, §7.2, §7.4): data generation, the held-out
//! test MSE, the analytic test error of eq. (17) and the initialisation options.

use faer::Mat;
use mlmatvamp::apps::two_layer::{
    activation_moments, excess_test_error, normalized_test_error, predict, test_covariance, Init,
    InitPrecision, TwoLayerConfig,
};
use mlmatvamp::prelude::*;
use nalgebra::SymmetricEigen;

const ACTIVATIONS: [Activation; 3] = [Activation::Identity, Activation::Relu, Activation::Sigmoid];

/// A symmetric square root `L` with `L L^T = K` (also for singular `K`).
fn sqrt_psd(k: &DMat) -> Mat<f64> {
    let e = SymmetricEigen::new(k.clone());
    let m = k.nrows();
    Mat::from_fn(m, m, |i, j| {
        e.eigenvectors[(i, j)] * e.eigenvalues[j].max(0.0).sqrt()
    })
}

/// Monte Carlo estimates (mean, standard error) of `S_pq = E[σ(w_p)σ(w_q)]` and of the excess
/// error `E‖(σ(z) − σ(ẑ))F_2‖²/nout`, `w = (z, ẑ) ~ N(0, K)`.
fn monte_carlo(
    k: &DMat,
    f2: &Mat<f64>,
    act: Activation,
    draws: usize,
    seed: u64,
) -> (DMat, DMat, f64, f64) {
    let m = k.nrows();
    let (d, nout) = (f2.nrows(), f2.ncols());
    let mut rng = rng_from_seed(seed);
    let xi = standard_normal(draws, m, &mut rng);
    let w = &xi * sqrt_psd(k).transpose();
    let (mut s1, mut s2) = (DMat::zeros(m, m), DMat::zeros(m, m));
    let (mut e1, mut e2) = (0.0, 0.0);
    let mut h = vec![0.0; m];
    for i in 0..draws {
        for p in 0..m {
            h[p] = act.eval(w[(i, p)]);
        }
        for p in 0..m {
            for q in 0..m {
                let v = h[p] * h[q];
                s1[(p, q)] += v;
                s2[(p, q)] += v * v;
            }
        }
        let mut e = 0.0;
        for o in 0..nout {
            let r: f64 = (0..d).map(|j| (h[j] - h[d + j]) * f2[(j, o)]).sum();
            e += r * r;
        }
        e /= nout as f64;
        e1 += e;
        e2 += e * e;
    }
    let n = draws as f64;
    let mean = s1 / n;
    let se = DMat::from_fn(m, m, |p, q| {
        ((s2[(p, q)] / n - mean[(p, q)].powi(2)).max(0.0) / n).sqrt()
    });
    let em = e1 / n;
    let ese = ((e2 / n - em * em).max(0.0) / n).sqrt();
    (mean, se, em, ese)
}

/// Random `F_1` (`nin x d`, columns scaled so that the pre-activation variances range over
/// ≈0.4–3) and a correlated estimate `F̂_1`.
fn random_pair(nin: usize, d: usize, seed: u64) -> (Mat<f64>, Mat<f64>) {
    let mut rng = rng_from_seed(seed);
    let g = standard_normal(nin, d, &mut rng);
    let h = standard_normal(nin, d, &mut rng);
    let scale = |j: usize| 0.6 + 1.2 * j as f64 / (d.max(2) - 1) as f64;
    let f1 = Mat::from_fn(nin, d, |i, j| scale(j) * g[(i, j)]);
    let f1_hat = Mat::from_fn(nin, d, |i, j| 0.7 * f1[(i, j)] + 0.5 * h[(i, j)]);
    (f1, f1_hat)
}

#[test]
fn eq17_closed_forms_and_quadrature_agree_with_monte_carlo() {
    let draws = 200_000;
    let mut case = 0;
    for &d in &[2usize, 4] {
        for &nout in &[1usize, 2] {
            let (f1, f1_hat) = random_pair(3 * d, d, 10 + d as u64);
            // A non-degenerate K, and (d = 2 only) two degenerate ones: F̂_1 = 0, and F̂_1 = F_1
            // with its first column negated (pairs with ρ = 1 and ρ = −1).
            let mut cases = vec![(
                "generic",
                test_covariance(f1.as_ref(), f1_hat.as_ref()).unwrap(),
            )];
            if d == 2 && nout == 1 {
                let zero = Mat::<f64>::zeros(3 * d, d);
                cases.push((
                    "F̂_1 = 0",
                    test_covariance(f1.as_ref(), zero.as_ref()).unwrap(),
                ));
                let flip = Mat::from_fn(
                    3 * d,
                    d,
                    |i, j| if j == 0 { -f1[(i, j)] } else { f1[(i, j)] },
                );
                cases.push((
                    "ρ = ±1",
                    test_covariance(f1.as_ref(), flip.as_ref()).unwrap(),
                ));
            }
            let mut rng = rng_from_seed(100 + nout as u64);
            let f2 = standard_normal(d, nout, &mut rng);
            for (name, k) in &cases {
                if *name == "generic" {
                    let min_eig = SymmetricEigen::new(k.clone()).eigenvalues.min();
                    assert!(
                        min_eig > 1e-3,
                        "K should be non-degenerate, λ_min = {min_eig}"
                    );
                }
                for act in ACTIVATIONS {
                    case += 1;
                    let s = activation_moments(k, act).unwrap();
                    let excess = excess_test_error(k, f2.as_ref(), act).unwrap();
                    let (s_mc, s_se, e_mc, e_se) = monte_carlo(k, &f2, act, draws, 1000 + case);
                    let mut worst: f64 = 0.0;
                    for p in 0..2 * d {
                        for q in 0..2 * d {
                            let diff = (s[(p, q)] - s_mc[(p, q)]).abs();
                            if s_se[(p, q)] > 0.0 {
                                worst = worst.max(diff / s_se[(p, q)]);
                            } else {
                                assert!(
                                    diff < 1e-12,
                                    "{name} {act:?}: S[{p},{q}] = {} vs exactly {}",
                                    s[(p, q)],
                                    s_mc[(p, q)]
                                );
                            }
                        }
                    }
                    println!(
                        "d={d} nout={nout} {name:9} {:8}: excess {excess:.6} MC {e_mc:.6} ± {e_se:.1e} (z = {:+.2}); worst S z-score {worst:.2}",
                        act.name(),
                        (excess - e_mc) / e_se.max(1e-300)
                    );
                    assert!(
                        worst < 5.0,
                        "{name} {act:?} d={d}: S entry off by {worst:.2} standard errors"
                    );
                    if e_se > 0.0 {
                        assert!(
                            (excess - e_mc).abs() < 4.0 * e_se,
                            "{name} {act:?} d={d} nout={nout}: excess {excess} vs MC {e_mc} ± {e_se}"
                        );
                    } else {
                        assert!((excess - e_mc).abs() < 1e-12);
                    }
                }
            }
        }
    }
}

#[test]
fn relu_and_linear_closed_forms_hit_known_values() {
    // Diagonal: E[relu(x)²] = a/2, E[x²] = a; independent: E[relu(x)relu(y)] = √(ac)/(2π).
    let k = DMat::from_row_slice(2, 2, &[2.0, 0.0, 0.0, 0.5]);
    let s = activation_moments(&k, Activation::Relu).unwrap();
    assert!((s[(0, 0)] - 1.0).abs() < 1e-15);
    assert!((s[(1, 1)] - 0.25).abs() < 1e-15);
    assert!((s[(0, 1)] - 1.0 / (2.0 * std::f64::consts::PI)).abs() < 1e-15);
    let s = activation_moments(&k, Activation::Identity).unwrap();
    assert_eq!(s, k);
    // Sigmoid: E[σ(x)σ(y)] = 1/4 for independent centred x, y; E[σ(x)] = 1/2 ⇒ with a zero
    // variance partner, E[σ(x)σ(0)] = 1/4.
    let k = DMat::from_row_slice(3, 3, &[1.3, 0.0, 0.0, 0.0, 0.7, 0.0, 0.0, 0.0, 0.0]);
    let s = activation_moments(&k, Activation::Sigmoid).unwrap();
    for (p, q) in [(0, 1), (0, 2), (1, 2), (2, 2)] {
        assert!(
            (s[(p, q)] - 0.25).abs() < 1e-14,
            "S[{p},{q}] = {}",
            s[(p, q)]
        );
    }
}

#[test]
fn k_based_error_is_one_at_the_truth_and_larger_otherwise() {
    for act in ACTIVATIONS {
        for nout in [1, 2] {
            let cfg = TwoLayerConfig {
                activation: act,
                nout,
                ntr: 50,
                nts: 50,
                ..Default::default()
            };
            let trial = cfg.sample(7).unwrap();
            let at_truth = trial.analytic_test_error(trial.f1.as_ref()).unwrap();
            assert_eq!(at_truth, 1.0, "{act:?}: K-based error at F̂_1 = F_1");
            let mut rng = rng_from_seed(8);
            let g = standard_normal(cfg.nin, cfg.d, &mut rng);
            for (name, f1_hat) in [
                ("F_1 + 0.1 G", &trial.f1 + &g * faer::Scale(0.1)),
                ("0.5 F_1", &trial.f1 * faer::Scale(0.5)),
                ("0", Mat::zeros(cfg.nin, cfg.d)),
                ("G", g.clone()),
            ] {
                let e = trial.analytic_test_error(f1_hat.as_ref()).unwrap();
                assert!(e > 1.0 + 1e-3, "{act:?} nout={nout} F̂_1 = {name}: {e}");
            }
            if act == Activation::Identity {
                // Linear: excess = (1/nin)‖(F_1 − F̂_1)F_2‖²_F / nout exactly.
                let f1_hat = &trial.f1 + &g * faer::Scale(0.1);
                let r = (&trial.f1 - &f1_hat) * &trial.f2;
                let want = r.squared_norm_l2() / (cfg.nin * nout) as f64;
                let k = trial.test_covariance(f1_hat.as_ref()).unwrap();
                let got = excess_test_error(&k, trial.f2.as_ref(), act).unwrap();
                assert!((got - want).abs() < 1e-12 * want, "{got} vs {want}");
            }
        }
    }
}

#[test]
fn held_out_mse_at_the_truth_is_one_and_matches_the_analytic_error() {
    for (act, nout) in [
        (Activation::Sigmoid, 1),
        (Activation::Sigmoid, 2),
        (Activation::Relu, 1),
    ] {
        let nts = 20_000;
        let cfg = TwoLayerConfig {
            activation: act,
            nout,
            ntr: 10,
            nts,
            ..Default::default()
        };
        let trial = cfg.sample(21).unwrap();
        // At F̂_1 = F_1 the residual is pure noise: mean of χ²_1/1, sd √(2/(nts·nout)).
        let m = trial.test_mse(trial.f1.as_ref()).unwrap();
        let sd = (2.0 / (nts * nout) as f64).sqrt();
        assert!((m - 1.0).abs() < 4.0 * sd, "{act:?}: {m} (sd {sd})");
        // A perturbed estimate: held-out MSE vs eq. (17), within the sample's standard error.
        let mut rng = rng_from_seed(22);
        let f1_hat = &trial.f1 * faer::Scale(0.8)
            + standard_normal(cfg.nin, cfg.d, &mut rng) * faer::Scale(0.3);
        let analytic = trial.analytic_test_error(f1_hat.as_ref()).unwrap();
        let y_hat = predict(
            trial.x_test.as_ref(),
            f1_hat.as_ref(),
            trial.f2.as_ref(),
            act,
        )
        .unwrap();
        let mut per_sample = Vec::with_capacity(nts);
        for i in 0..nts {
            let e: f64 = (0..nout)
                .map(|o| (y_hat[(i, o)] - trial.y_test[(i, o)]).powi(2))
                .sum();
            per_sample.push(e / nout as f64 / trial.yvar);
        }
        let mean = per_sample.iter().sum::<f64>() / nts as f64;
        let var = per_sample.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (nts - 1) as f64;
        let se = (var / nts as f64).sqrt();
        let sample = trial.test_mse(f1_hat.as_ref()).unwrap();
        assert!((sample - mean).abs() < 1e-12 * mean);
        println!("{act:?} nout={nout}: at truth {m:.4}; perturbed: held-out {sample:.4} ± {se:.4}, eq. (17) {analytic:.4}");
        assert!(analytic > 1.1, "the perturbation should matter: {analytic}");
        // The test set's X is a finite sample: allow its sampling error plus that of X_ts.
        assert!(
            (sample - analytic).abs() < 4.0 * se,
            "{act:?}: held-out {sample} ± {se} vs eq. (17) {analytic}"
        );
    }
}

#[test]
fn data_generation_follows_its_definition() {
    let cfg = TwoLayerConfig {
        ntr: 300,
        nts: 200,
        nout: 2,
        snr_db: 15.0,
        ..Default::default()
    };
    let t = cfg.sample(3).unwrap();
    let (nin, d) = (cfg.nin, cfg.d);
    assert_eq!((t.x_train.nrows(), t.x_train.ncols()), (300, nin));
    assert_eq!((t.y_train.nrows(), t.y_train.ncols()), (300, 2));
    assert_eq!((t.x_test.nrows(), t.x_test.ncols()), (200, nin));
    assert_eq!((t.y_test.nrows(), t.y_test.ncols()), (200, 2));
    assert_eq!((t.f1.nrows(), t.f1.ncols()), (nin, d));
    assert_eq!((t.f2.nrows(), t.f2.ncols()), (d, 2));
    let mean_sq = |m: &Mat<f64>| m.squared_norm_l2() / (m.nrows() * m.ncols()) as f64;
    // w1var = mean(F_1²) exactly.
    assert!((t.w1var - mean_sq(&t.f1)).abs() < 1e-15 * t.w1var);
    // yvar = mean(Y0²)·10^{−snr/10}, Y0 over all ntr + nts samples.
    let x = Mat::from_fn(500, nin, |i, k| {
        if i < 300 {
            t.x_train[(i, k)]
        } else {
            t.x_test[(i - 300, k)]
        }
    });
    let y = Mat::from_fn(500, 2, |i, o| {
        if i < 300 {
            t.y_train[(i, o)]
        } else {
            t.y_test[(i - 300, o)]
        }
    });
    let y0 = predict(x.as_ref(), t.f1.as_ref(), t.f2.as_ref(), cfg.activation).unwrap();
    let want = mean_sq(&y0) * 10f64.powf(-1.5);
    assert!((t.yvar - want).abs() < 1e-13 * want, "{} vs {want}", t.yvar);
    // Noise of variance yvar (1000 entries: sd of the ratio √(2/1000) ≈ 0.045); X ~ N(0, 1/nin).
    let noise = mean_sq(&(&y - &y0)) / t.yvar;
    assert!((noise - 1.0).abs() < 0.18, "noise power ratio {noise}");
    let xpow = mean_sq(&x) * nin as f64;
    assert!((xpow - 1.0).abs() < 0.02, "nin·mean(X²) = {xpow}");
    // F_1, F_2 ~ N(0, 1).
    assert!((t.w1var - 1.0).abs() < 0.3);
}

#[test]
fn data_generation_is_deterministic_per_seed() {
    let cfg = TwoLayerConfig {
        ntr: 40,
        nts: 30,
        ..Default::default()
    };
    let (a, b, c) = (
        cfg.sample(5).unwrap(),
        cfg.sample(5).unwrap(),
        cfg.sample(6).unwrap(),
    );
    assert_eq!(a.x_train, b.x_train);
    assert_eq!(a.y_train, b.y_train);
    assert_eq!(a.x_test, b.x_test);
    assert_eq!(a.y_test, b.y_test);
    assert_eq!(a.f1, b.f1);
    assert_eq!(a.f2, b.f2);
    assert_eq!(a.yvar.to_bits(), b.yvar.to_bits());
    assert_ne!(a.f1, c.f1);
    assert_ne!(a.y_train, c.y_train);
    // Initial estimates are deterministic per seed as well.
    let i1 = Init::reference().draw(&a, &mut rng_from_seed(9)).unwrap();
    let i2 = Init::reference().draw(&a, &mut rng_from_seed(9)).unwrap();
    assert_eq!(i1.f1, i2.f1);
    assert_eq!(i1.message.mean, i2.message.mean);
}

#[test]
fn initial_message_precisions() {
    let cfg = TwoLayerConfig {
        nin: 400,
        ntr: 2000,
        nts: 1,
        ..Default::default()
    };
    let t = cfg.sample(11).unwrap();
    let z1 = &t.x_train * &t.f1;
    let realised = |r: &Mat<f64>| {
        let e = r - &z1;
        e.squared_norm_l2() / (e.nrows() * e.ncols()) as f64
    };
    // Reference F1init with the honest precision: 1/Γ is the expected error variance of R_1.
    // The realised one fluctuates with F1init (1600 entries) and X_tr: relative sd ≈ 5%.
    let honest = Init::reference().draw(&t, &mut rng_from_seed(1)).unwrap();
    let v = realised(&honest.message.mean);
    let claimed = 1.0 / honest.message.precision.matrix()[(0, 0)];
    assert!(
        (v / claimed - 1.0).abs() < 0.2,
        "realised {v} vs claimed {claimed}"
    );
    assert!(
        (claimed - 1.0).abs() < 0.15,
        "≈1 at the defaults, got {claimed}"
    );
    // F1init = √wcorr F_1 + N(0, 1 − wcorr): correlation ≈ √0.25 = 0.5.
    let dot: f64 = (0..cfg.nin)
        .flat_map(|i| (0..cfg.d).map(move |j| (i, j)))
        .map(|(i, j)| honest.f1[(i, j)] * t.f1[(i, j)])
        .sum();
    let corr = dot / (honest.f1.norm_l2() * t.f1.norm_l2());
    assert!((corr - 0.5).abs() < 0.05, "correlation {corr}");
    // Same draw, reference precision: werr·mean(X²) = 0.25/nin, i.e. ≈ nin·4 times too confident.
    let reference = Init::Reference {
        wcorr: 0.25,
        precision: InitPrecision::Reference,
    }
    .draw(&t, &mut rng_from_seed(1))
    .unwrap();
    assert_eq!(reference.f1, honest.f1);
    let claimed_ref = 1.0 / reference.message.precision.matrix()[(0, 0)];
    let xpow = t.x_train.squared_norm_l2() / (2000 * 400) as f64;
    assert!((claimed_ref - 0.25 * xpow).abs() < 1e-15);
    println!(
        "honest: realised {v:.4} vs claimed {claimed:.4}; reference claims {claimed_ref:.2e} (factor {:.0})",
        v / claimed_ref
    );
    assert!(
        v / claimed_ref > 1000.0,
        "overconfidence factor {}",
        v / claimed_ref
    );
    // Uninformed: uncorrelated with F_1; precision = that of the prior of Z_1 around R_1.
    let un = Init::uninformed().draw(&t, &mut rng_from_seed(2)).unwrap();
    let v = realised(&un.message.mean);
    let claimed = 1.0 / un.message.precision.matrix()[(0, 0)];
    println!("uninformed: realised {v:.4} vs claimed {claimed:.4}");
    assert!(
        (v / claimed - 1.0).abs() < 0.2,
        "realised {v} vs claimed {claimed}"
    );
    let dot: f64 = (0..cfg.nin)
        .flat_map(|i| (0..cfg.d).map(move |j| (i, j)))
        .map(|(i, j)| un.f1[(i, j)] * t.f1[(i, j)])
        .sum();
    assert!((dot / (un.f1.norm_l2() * t.f1.norm_l2())).abs() < 0.1);
    let zero = Init::Uninformed { std: 0.0 }
        .draw(&t, &mut rng_from_seed(2))
        .unwrap();
    assert_eq!(zero.f1, Mat::<f64>::zeros(cfg.nin, cfg.d));
}

#[test]
fn invalid_inputs_are_errors() {
    let bad = TwoLayerConfig {
        nin: 0,
        ..Default::default()
    };
    assert!(bad.sample(0).is_err());
    let bad = TwoLayerConfig {
        snr_db: f64::NAN,
        ..Default::default()
    };
    assert!(bad.sample(0).is_err());
    let t = TwoLayerConfig {
        ntr: 5,
        nts: 5,
        ..Default::default()
    }
    .sample(0)
    .unwrap();
    let k = t.test_covariance(t.f1.as_ref()).unwrap();
    assert!(normalized_test_error(&k, t.f2.as_ref(), Activation::Sigmoid, 0.0).is_err());
    assert!(normalized_test_error(&k, t.f2.as_ref(), Activation::Sigmoid, f64::NAN).is_err());
    let small = DMat::identity(4, 4);
    assert!(normalized_test_error(&small, t.f2.as_ref(), Activation::Sigmoid, 1.0).is_err());
    let mut asym = k.clone();
    asym[(0, 1)] += 1.0;
    assert!(normalized_test_error(&asym, t.f2.as_ref(), Activation::Relu, 1.0).is_err());
    let mut neg = k.clone();
    neg[(2, 2)] = -1.0;
    assert!(activation_moments(&neg, Activation::Relu).is_err());
    let mut nan = k;
    nan[(1, 1)] = f64::NAN;
    assert!(activation_moments(&nan, Activation::Relu).is_err());
    assert!(t.test_mse(Mat::<f64>::zeros(3, 4).as_ref()).is_err());
    assert!(test_covariance(t.f1.as_ref(), Mat::<f64>::zeros(100, 3).as_ref()).is_err());
    assert!(Init::Reference {
        wcorr: 1.0,
        precision: InitPrecision::Honest
    }
    .draw(&t, &mut rng_from_seed(0))
    .is_err());
    assert!(Init::Uninformed { std: -1.0 }
        .draw(&t, &mut rng_from_seed(0))
        .is_err());
}
