//! Mixed linear regression (paper eq. 6, spec §4.6): the output denoiser's MMSE moments against
//! brute-force quadrature (spec §8.2.10), its joint MAP against a generic numerical minimiser,
//! covariance calibration under the matched model (spec §8.2.6), the label-symmetric fixed point,
//! the alternating-minimisation baseline, the full problem with ML-Mat-VAMP and its state
//! evolution, the `run` configuration and the `mixed` command, and input validation.

mod common;

use common::{geometric_spd, to_dmat};
use faer::Mat;
use mlmatvamp::apps::mixed::{
    alternating_minimisation, best_permutation, parameter_error, parameter_error_from_moments,
    AltMinConfig, AltMinStart, MixedConfig, RandomStart,
};
use mlmatvamp::denoise::{gaussian_rows, MixedRegressionOutput};
use mlmatvamp::experiments::mixed::se_errors;
use mlmatvamp::prelude::*;

/// A channel holding one response `y` (for per-row moments).
fn one_row(y: f64, d: usize, s2: f64, w: &[f64], est: Estimator) -> MixedRegressionOutput {
    MixedRegressionOutput::new(Mat::from_fn(1, 1, |_, _| y), d, s2, Some(w.to_vec()), est).unwrap()
}

fn message(r: &[f64], gamma: &DMat) -> Message {
    Message {
        mean: Mat::from_fn(1, r.len(), |_, j| r[j]),
        precision: Spd::new("Γ", gamma.clone(), Some(r.len())).unwrap(),
    }
}

/// Posterior mean and covariance of `b(v) ∝ Σ_k π_k N(y; v_k, σ²) N(v; r, Γ^{-1})` (d = 2) by a
/// dense tensor grid in the whitened coordinates `v = r + u Lᵀ` (`LLᵀ = Γ^{-1}`), `u ∈ [−9, 9]²`,
/// spacing 0.01: the trapezoid rule on a smooth, rapidly decaying integrand.
fn grid_moments(y: f64, r: &[f64], gamma: &DMat, s2: f64, w: &[f64]) -> (Vec<f64>, DMat) {
    let c = gamma.clone().try_inverse().unwrap();
    let l = c.cholesky().unwrap().l();
    let (h, m) = (0.01, 900i32);
    let mut s0 = 0.0;
    let mut s1 = [0.0; 2];
    let mut s2m = [[0.0; 2]; 2];
    // First pass: normalising constant and mean; second: central second moments.
    let mut nodes = Vec::with_capacity(((2 * m + 1) * (2 * m + 1)) as usize);
    for a in -m..=m {
        for b in -m..=m {
            let u = [a as f64 * h, b as f64 * h];
            let v = [
                r[0] + l[(0, 0)] * u[0] + l[(0, 1)] * u[1],
                r[1] + l[(1, 0)] * u[0] + l[(1, 1)] * u[1],
            ];
            let lik: f64 = (0..2)
                .map(|k| w[k] * (-(y - v[k]).powi(2) / (2.0 * s2)).exp())
                .sum();
            let wt = (-0.5 * (u[0] * u[0] + u[1] * u[1])).exp() * lik;
            s0 += wt;
            s1[0] += wt * v[0];
            s1[1] += wt * v[1];
            nodes.push((wt, v));
        }
    }
    let mean = [s1[0] / s0, s1[1] / s0];
    for (wt, v) in &nodes {
        for p in 0..2 {
            for q in 0..2 {
                s2m[p][q] += wt * (v[p] - mean[p]) * (v[q] - mean[q]);
            }
        }
    }
    let cov = DMat::from_fn(2, 2, |p, q| s2m[p][q] / s0);
    (mean.to_vec(), cov)
}

#[test]
fn mmse_moments_match_brute_force_quadrature() {
    // d = 2, non-diagonal Γ, unequal weights, rows from ambiguous to strongly one-sided.
    let mut rng = rng_from_seed(3);
    let w = [0.3, 0.7];
    let s2 = 0.05;
    let gamma = common::inverse(&geometric_spd(2, 0.5, &mut rng));
    let cases: [(f64, [f64; 2]); 6] = [
        (0.3, [0.1, 0.5]),
        (0.0, [0.4, -0.4]),
        (1.7, [1.2, -0.3]),
        (-1.0, [0.2, -0.9]),
        (0.25, [0.25, 0.25]),
        (4.0, [-0.5, 0.3]), // far from both components: tests the log-sum-exp
    ];
    let mut worst = 0.0f64;
    for (y, r) in cases {
        let ch = one_row(y, 2, s2, &w, Estimator::Mmse);
        let b = ch.denoise(&message(&r, &gamma)).unwrap();
        let (mean, cov) = grid_moments(y, &r, &gamma, s2, &w);
        for (j, &m) in mean.iter().enumerate() {
            let e = (b.mean[(0, j)] - m).abs();
            worst = worst.max(e);
            assert!(
                e < 1e-8,
                "y = {y}, r = {r:?}: mean {j}: {} vs {m}",
                b.mean[(0, j)]
            );
        }
        let e = (&b.cov - &cov).abs().max();
        worst = worst.max(e);
        assert!(e < 1e-8, "y = {y}, r = {r:?}: cov {} vs {}", b.cov, cov);
        // Non-vacuous: the posterior differs from the message.
        assert!((b.cov.trace() - gamma.clone().try_inverse().unwrap().trace()).abs() > 1e-3);
    }
    println!("MMSE vs 2-D grid: worst absolute difference {worst:.2e}");
}

/// Minimises `f` over `R^d` by Nelder–Mead from `x0` (restarted from the best point until it no
/// longer improves).
fn nelder_mead(f: &dyn Fn(&[f64]) -> f64, x0: &[f64], step: f64) -> (Vec<f64>, f64) {
    let d = x0.len();
    let mut best = (x0.to_vec(), f(x0));
    for _restart in 0..6 {
        let mut s: Vec<(Vec<f64>, f64)> = (0..=d)
            .map(|i| {
                let mut x = best.0.clone();
                if i > 0 {
                    x[i - 1] += step;
                }
                let fx = f(&x);
                (x, fx)
            })
            .collect();
        for _ in 0..20_000 {
            s.sort_by(|a, b| a.1.total_cmp(&b.1));
            let diam = s
                .iter()
                .map(|p| {
                    p.0.iter()
                        .zip(&s[0].0)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f64::max)
                })
                .fold(0.0, f64::max);
            if diam < 1e-13 {
                break;
            }
            let centroid: Vec<f64> = (0..d)
                .map(|j| s[..d].iter().map(|p| p.0[j]).sum::<f64>() / d as f64)
                .collect();
            let at = |t: f64| -> Vec<f64> {
                (0..d)
                    .map(|j| centroid[j] + t * (s[d].0[j] - centroid[j]))
                    .collect()
            };
            let xr = at(-1.0);
            let fr = f(&xr);
            if fr < s[0].1 {
                let xe = at(-2.0);
                let fe = f(&xe);
                s[d] = if fe < fr { (xe, fe) } else { (xr, fr) };
            } else if fr < s[d - 1].1 {
                s[d] = (xr, fr);
            } else {
                let xc = if fr < s[d].1 { at(-0.5) } else { at(0.5) };
                let fc = f(&xc);
                if fc < s[d].1.min(fr) {
                    s[d] = (xc, fc);
                } else {
                    let x0 = s[0].0.clone();
                    for p in s.iter_mut().skip(1) {
                        for (pj, x0j) in p.0.iter_mut().zip(&x0) {
                            *pj = x0j + 0.5 * (*pj - x0j);
                        }
                        p.1 = f(&p.0);
                    }
                }
            }
        }
        s.sort_by(|a, b| a.1.total_cmp(&b.1));
        if s[0].1 < best.1 {
            best = s[0].clone();
        } else {
            break;
        }
    }
    best
}

#[test]
fn map_matches_a_generic_minimiser() {
    // f(v, q) = (y − v_q)²/(2σ²) + ½ log(2πσ²) − log π_q + ½(v − r)Γ(v − r)ᵀ over (v, q), d = 3.
    let d = 3;
    let mut rng = rng_from_seed(11);
    let w: [f64; 3] = [0.2, 0.3, 0.5];
    let s2 = 0.02;
    let gamma = common::inverse(&geometric_spd(d, 0.4, &mut rng));
    let rs = standard_normal(12, d, &mut rng);
    let ys = standard_normal(12, 1, &mut rng);
    let (mut agree, mut worst_v) = (0, 0.0f64);
    for i in 0..12 {
        let r: Vec<f64> = (0..d).map(|j| rs[(i, j)]).collect();
        let y = ys[(i, 0)];
        let obj = |v: &[f64], q: usize| -> f64 {
            let diff: Vec<f64> = (0..d).map(|j| v[j] - r[j]).collect();
            let quad: f64 = (0..d)
                .map(|a| {
                    (0..d)
                        .map(|b| diff[a] * gamma[(a, b)] * diff[b])
                        .sum::<f64>()
                })
                .sum();
            (y - v[q]).powi(2) / (2.0 * s2) + 0.5 * (2.0 * std::f64::consts::PI * s2).ln()
                - w[q].ln()
                + 0.5 * quad
        };
        // The generic minimiser: Nelder–Mead over v for every label, then the best label.
        let mut best: Option<(usize, Vec<f64>, f64)> = None;
        let mut values = Vec::new();
        for q in 0..d {
            let (v, fv) = nelder_mead(&|v: &[f64]| obj(v, q), &r, 0.5);
            values.push(fv);
            if best.as_ref().is_none_or(|b| fv < b.2) {
                best = Some((q, v, fv));
            }
        }
        let (q_nm, v_nm, f_nm) = best.unwrap();
        let ch = one_row(y, d, s2, &w, Estimator::Map);
        let b = ch.denoise(&message(&r, &gamma)).unwrap();
        let v_map: Vec<f64> = (0..d).map(|j| b.mean[(0, j)]).collect();
        // The denoiser's point is at least as good as the minimiser's, for its own label.
        let q_map = (0..d)
            .min_by(|&a, &c| obj(&v_map, a).total_cmp(&obj(&v_map, c)))
            .unwrap();
        let f_map = obj(&v_map, q_map);
        assert!(
            f_map <= f_nm + 1e-12 * (1.0 + f_nm.abs()),
            "row {i}: MAP objective {f_map} > minimiser {f_nm}"
        );
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        if sorted[1] - sorted[0] > 1e-6 {
            assert_eq!(q_map, q_nm, "row {i}: labels differ ({values:?})");
            let dv = v_map
                .iter()
                .zip(&v_nm)
                .map(|(a, c)| (a - c).abs())
                .fold(0.0, f64::max);
            worst_v = worst_v.max(dv);
            assert!(dv < 1e-7, "row {i}: MAP {v_map:?} vs minimiser {v_nm:?}");
            agree += 1;
            // Σ = H^{-1} of f(·, q*) at the minimiser: central differences of the objective.
            let h = 1e-4;
            let hess = DMat::from_fn(d, d, |a, c| {
                let e = |s_a: f64, s_c: f64| {
                    let mut v = v_map.clone();
                    v[a] += s_a * h;
                    v[c] += s_c * h;
                    obj(&v, q_map)
                };
                (e(1.0, 1.0) - e(1.0, -1.0) - e(-1.0, 1.0) + e(-1.0, -1.0)) / (4.0 * h * h)
            });
            let sigma = common::inverse(&hess);
            let rel = (&b.cov - &sigma).norm() / sigma.norm();
            assert!(rel < 1e-5, "row {i}: Σ {} vs H^-1 {}", b.cov, sigma);
        }
    }
    println!("MAP vs Nelder–Mead: {agree}/12 rows compared, worst |Δv| {worst_v:.2e}");
    assert!(agree >= 10, "too few rows without a near tie: {agree}");
}

/// The matched model of spec §8.2.6, exactly: `r` rows `N(0, I)`, the truth `z = r + N(0, Rvar)`
/// (so `z | r` is the message's Gaussian), and `y` drawn from the channel given `z`. Then the
/// belief is the exact posterior of `z` given `(r, y)`, and `E[(ẑ − z)ᵀ(ẑ − z)] = E[Σ_i]`.
fn matched(
    n: usize,
    d: usize,
    w: Option<Vec<f64>>,
    s2: f64,
    seed: u64,
) -> (Mat<f64>, Message, MixedRegressionOutput, DMat) {
    let mut rng = rng_from_seed(seed);
    let rvar = geometric_spd(d, 0.075, &mut rng);
    let rvar_spd = Spd::new("Rvar", rvar.clone(), Some(d)).unwrap();
    let r = standard_normal(n, d, &mut rng);
    let z = &r + &gaussian_rows(n, rvar_spd.cholesky_lower(), &mut rng);
    let template = MixedRegressionOutput::new(Mat::zeros(1, 1), d, s2, w, Estimator::Mmse).unwrap();
    let ch = template.draw(z.as_ref(), &mut rng).unwrap();
    let msg = Message {
        mean: r,
        precision: Spd::from_symmetric("Γ", rvar_spd.inverse()).unwrap(),
    };
    (z, msg, ch, rvar)
}

/// `(‖Σ̄ − Ĉ‖_F/‖Ĉ‖_F, max |z-score| of the entries of Σ̄ − Ĉ, tr Ĉ)` with `Ĉ` the empirical
/// error covariance; the standard errors come from the per-row `e_iᵀe_i` (conservative: the
/// variance of `e_iᵀe_i − Σ_i` is at most that of `e_iᵀe_i`).
fn calibration(b: &Belief, z: &Mat<f64>) -> (f64, f64, f64) {
    let (n, d) = (z.nrows(), z.ncols());
    let e = to_dmat(&(&b.mean - z));
    let c = e.transpose() * &e / n as f64;
    let rel = (&b.cov - &c).norm() / c.norm();
    let mut zmax = 0.0f64;
    for p in 0..d {
        for q in 0..d {
            let var = (0..n)
                .map(|i| (e[(i, p)] * e[(i, q)] - c[(p, q)]).powi(2))
                .sum::<f64>()
                / (n - 1) as f64;
            let se = (var / n as f64).sqrt();
            zmax = zmax.max(((b.cov[(p, q)] - c[(p, q)]) / se).abs());
        }
    }
    (rel, zmax, c.trace())
}

#[test]
fn mmse_covariance_is_calibrated() {
    // Spec §8.2.6: non-diagonal Rvar (eigenvalues ∝ 0.5^j, mean 0.075), SNR 20 dB (σ² = 0.01).
    for (d, w) in [(2, Some(vec![0.4, 0.6])), (3, None)] {
        // At the spec's n = 4000 the statistic's own sampling error is a few percent.
        let (z, msg, ch, rvar) = matched(4000, d, w.clone(), 0.01, 40 + d as u64);
        let b = ch.denoise(&msg).unwrap();
        let (rel, zmax, err) = calibration(&b, &z);
        println!("d = {d}, n = 4000: relative calibration error {rel:.4}, max |z| {zmax:.2}; MSE message {:.4} -> estimate {err:.4}", rvar.trace());
        assert!(rel < 0.1, "d = {d}, n = 4000: {rel}");
        assert!(err < 0.8 * rvar.trace(), "the denoiser must help: {err}");
        // At n = 200 000 the test is sharp: within 4 standard errors entry by entry.
        let (z, msg, ch, _) = matched(200_000, d, w.clone(), 0.01, 50 + d as u64);
        let b = ch.denoise(&msg).unwrap();
        let (rel, zmax, _) = calibration(&b, &z);
        println!("d = {d}, n = 200000: relative calibration error {rel:.4}, max |z| {zmax:.2}");
        assert!(rel < 0.015, "d = {d}: {rel}");
        assert!(
            zmax < 4.0,
            "d = {d}: an entry is {zmax} standard errors off"
        );
        // The MAP denoiser's average inverse Hessian ignores the label uncertainty (reported only).
        let bm = ch.with_estimator(Estimator::Map).denoise(&msg).unwrap();
        let (rel_map, _, err_map) = calibration(&bm, &z);
        println!("d = {d}, n = 200000, MAP: calibration error {rel_map:.3}, MSE {err_map:.4} vs predicted {:.4}", bm.cov.trace());
    }
}

/// `(X_SᵀX_S/σ² + I)^{-1} X_Sᵀy_S/σ²` on the rows `S`.
fn ridge(x: &Mat<f64>, y: &Mat<f64>, rows: &[usize], s2: f64) -> Vec<f64> {
    let p = x.ncols();
    let a = DMat::from_fn(rows.len(), p, |i, j| x[(rows[i], j)]);
    let b = nalgebra::DVector::from_fn(rows.len(), |i, _| y[(rows[i], 0)]);
    let g = a.transpose() * &a / s2 + DMat::identity(p, p);
    g.cholesky()
        .unwrap()
        .solve(&(a.transpose() * b / s2))
        .iter()
        .copied()
        .collect()
}

#[test]
fn alternating_minimisation_recovers_a_noiseless_truth() {
    // Easy and noiseless (σ² = 1e-30): p = 20, n = 400.
    let cfg = MixedConfig {
        p: 20,
        n: 400,
        d: 2,
        snr_db: 300.0,
        weights: None,
    };
    for seed in 0..3 {
        let t = cfg.sample(seed).unwrap();
        let res = alternating_minimisation(
            t.x.as_ref(),
            t.y.as_ref(),
            2,
            &AltMinConfig {
                seed,
                ..Default::default()
            },
            |_, _| {},
        )
        .unwrap();
        let err = parameter_error(res.f.as_ref(), t.f.as_ref()).unwrap();
        assert!(res.converged);
        assert!(err < 1e-6, "seed {seed}: parameter error {err}");
        // The assignments are the true labels up to the relabelling, except where both
        // components fit the sample equally well (then the assignment is immaterial).
        let perm = best_permutation(res.f.as_ref(), t.f.as_ref()).unwrap();
        let gap = |i: usize| (t.z[(i, 0)] - t.z[(i, 1)]).abs();
        let wrong: Vec<usize> = (0..cfg.n)
            .filter(|&i| res.labels[i] != perm[t.labels[i]])
            .collect();
        assert!(
            wrong.iter().all(|&i| gap(i) < 1e-6),
            "seed {seed}: wrong labels with gaps {:?}",
            wrong.iter().map(|&i| gap(i)).collect::<Vec<_>>()
        );
        println!(
            "seed {seed}: error {err:.1e} after {} iterations",
            res.history.len() - 1
        );
    }
}

#[test]
fn parameter_error_is_invariant_to_relabelling() {
    let mut rng = rng_from_seed(5);
    let f = standard_normal(30, 3, &mut rng);
    let noise = standard_normal(30, 3, &mut rng) * faer::Scale(0.1);
    let est = &f + &noise;
    let swapped = Mat::from_fn(30, 3, |i, j| est[(i, [2, 0, 1][j])]);
    let direct = noise.norm_l2() / f.norm_l2();
    let a = parameter_error(est.as_ref(), f.as_ref()).unwrap();
    let b = parameter_error(swapped.as_ref(), f.as_ref()).unwrap();
    assert!((a - direct).abs() < 1e-12 && (b - direct).abs() < 1e-12);
    assert_eq!(
        best_permutation(swapped.as_ref(), f.as_ref()).unwrap(),
        vec![1, 2, 0]
    );
    // The SE form from the exact second moments of the same rows agrees.
    let joint = mlmatvamp::se::joint_moment(f.as_ref(), swapped.as_ref());
    let c = parameter_error_from_moments(&joint).unwrap();
    assert!((c - direct).abs() < 1e-12, "{c} vs {direct}");
}

#[test]
fn symmetric_start_is_a_fixed_point_up_to_rounding() {
    // Spec §4.6: with equal weights, R⁻ = 0 and Γ ∝ I keep F̂'s columns equal (exactly, in exact
    // arithmetic). The fixed point is unstable at n/p = 6: only rounding errors (~1e-15) make the
    // columns differ, and they grow geometrically. A random start differs at once.
    let t = MixedConfig::default().sample(9).unwrap();
    let net = t.network(Estimator::Mmse).unwrap();
    let policy = MessagePolicy {
        lam_min: 1e-3,
        ..Default::default()
    };
    let solver = Solver::new(SolverConfig {
        iterations: 4,
        policy,
        ..Default::default()
    })
    .unwrap();
    let col_diff = |st: &State| {
        let f = &st.estimate_plus(0).unwrap().mean;
        let m = f.norm_max().max(f64::MIN_POSITIVE);
        (0..f.nrows())
            .map(|i| (f[(i, 0)] - f[(i, 1)]).abs())
            .fold(0.0, f64::max)
            / m
    };
    let mut sym = Vec::new();
    let sol = solver
        .run_with(&net, None, &mut |_, st| {
            sym.push(col_diff(st));
            Control::Continue
        })
        .unwrap();
    let bound = {
        let d12 = (0..t.f.nrows())
            .map(|i| (t.f[(i, 0)] - t.f[(i, 1)]).powi(2))
            .sum::<f64>();
        (d12 / 2.0).sqrt() / t.f.norm_l2()
    };
    let err = parameter_error(sol.estimates[0].as_ref(), t.f.as_ref()).unwrap();
    println!("symmetric start: column differences {sym:?}; error {err:.4} (bound for equal columns {bound:.4})");
    assert!(sym.iter().all(|&x| x < 1e-11), "{sym:?}");
    assert!(
        err >= bound - 1e-9,
        "equal columns cannot beat ‖f_1 − f_2‖/√2: {err} < {bound}"
    );
    let mut rnd = Vec::new();
    solver
        .run_from(
            &net,
            RandomStart::default().state(&net).unwrap(),
            None,
            &mut |_, st| {
                rnd.push(col_diff(st));
                Control::Continue
            },
        )
        .unwrap();
    assert!(
        rnd[1] > 1e-9,
        "the random start must break the symmetry: {rnd:?}"
    );
}

#[test]
fn ml_mat_vamp_solves_mixed_regression_and_matches_the_state_evolution() {
    // d = 2, p = 100, n = 6p, SNR 20 dB, MMSE output, asymmetric random start, the `mixed`
    // command's policy.
    let cfg = MixedConfig::default();
    let policy = MessagePolicy {
        lam_min: 1e-3,
        damp_precision: 0.2,
        ..Default::default()
    };
    let solver = Solver::new(SolverConfig {
        iterations: 60,
        policy: policy.clone(),
        ..Default::default()
    })
    .unwrap();
    let mut errs = Vec::new();
    let mut good = 0;
    for seed in 0..5u64 {
        let t = cfg.sample(200 + seed).unwrap();
        let net = t.network(Estimator::Mmse).unwrap();
        let start = RandomStart {
            seed: 300 + seed,
            ..Default::default()
        };
        let sol = solver
            .run_from(&net, start.state(&net).unwrap(), None, &mut |_, _| {
                Control::Continue
            })
            .unwrap();
        let err = parameter_error(sol.estimates[0].as_ref(), t.f.as_ref()).unwrap();
        // The oracle that knows the labels: the exact posterior mean of each f_k given its own
        // samples, (X_kᵀX_k/σ² + I)^{-1} X_kᵀy_k/σ². Knowing the labels can only help (in
        // expectation), so ML-Mat-VAMP cannot do much better than this.
        let mut oracle = Mat::<f64>::zeros(cfg.p, 2);
        for k in 0..2 {
            let rows: Vec<usize> = (0..cfg.n).filter(|&i| t.labels[i] == k).collect();
            for (j, v) in ridge(&t.x, &t.y, &rows, t.noise_variance)
                .into_iter()
                .enumerate()
            {
                oracle[(j, k)] = v;
            }
        }
        let oracle_err = parameter_error(oracle.as_ref(), t.f.as_ref()).unwrap();
        println!(
            "seed {seed}: ML-Mat-VAMP {err:.4}, known-labels posterior mean {oracle_err:.4} (ratio {:.3})",
            err / oracle_err
        );
        assert!(
            err > 0.9 * oracle_err,
            "seed {seed}: {err} beats the oracle {oracle_err}"
        );
        if err < 0.15 {
            good += 1;
        }
        errs.push(err);
    }
    assert!(
        good >= 4,
        "only {good}/5 seeds reached a small error: {errs:?}"
    );
    errs.sort_by(f64::total_cmp);
    let median = errs[2];
    let se = se_errors(&cfg, &RandomStart::default(), 60, 20_000, 1, &policy).unwrap();
    let predicted = *se.last().unwrap();
    println!("median {median:.4}, state evolution {predicted:.4}");
    assert!(
        (predicted - median).abs() < 0.15 * median,
        "SE {predicted} vs median {median}"
    );
}

#[test]
fn run_configuration_solves_the_example() {
    // examples/mixed/mixed.toml: teacher mode with the [init] random start.
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mixed/mixed.toml");
    let problem = mlmatvamp::config::load(&path).unwrap();
    let truth = problem.truth.clone().unwrap();
    let solver = Solver::new(problem.solver.clone()).unwrap();
    let sol = solver
        .run_from(
            &problem.network,
            problem.initial_state().unwrap(),
            None,
            &mut |_, _| Control::Continue,
        )
        .unwrap();
    let err = parameter_error(sol.estimates[0].as_ref(), truth[0].as_ref()).unwrap();
    println!("examples/mixed/mixed.toml: parameter error {err:.4}");
    assert!(err < 0.15, "{err}");

    // The same model with user data: y as a vector and explicit weights.
    let dir = std::env::temp_dir().join(format!("mlmatvamp-mixed-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let y = problem.network.output().observation().to_owned();
    mlmatvamp::io::write_npy(&dir.join("y.npy"), y.as_ref()).unwrap();
    let text = |weights: &str, est: &str| {
        format!(
            "d = 2\niterations = 5\n[init]\nprecision = 1e-6\n[prior]\nkind = \"gaussian\"\nrows = 10\n\
             [[layer]]\nkind = \"linear\"\nweight = {{ law = \"gaussian\", rows = 600, cols = 10 }}\n\
             [output]\nkind = \"mixed-regression\"\ny = \"y.npy\"\nnoise_variance = 0.01\n{weights}estimator = \"{est}\"\n"
        )
    };
    let p = mlmatvamp::config::from_toml_str(&text("weights = [0.25, 0.75]\n", "map"), &dir, None)
        .unwrap();
    assert!(!p.teacher);
    assert!(p.network.output().describe().contains("joint MAP"));
    let bad = |t: String, want: &str| {
        let e = mlmatvamp::config::from_toml_str(&t, &dir, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{e}");
    };
    bad(text("weights = [0.5, 0.6]\n", "mmse"), "sum to 1");
    bad(text("weights = [1.0]\n", "mmse"), "length 2");
    bad(text("", "median"), "median");
    bad(
        text("", "mmse").replace("rows = 600", "rows = 601"),
        "601 x 1",
    );
    bad(text("", "mmse").replace("0.01", "-1.0"), "noise variance");
    bad(
        text("", "mmse").replace("precision = 1e-6", "precision = 0"),
        "[init]",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mixed_command_writes_its_outputs() {
    let dir = std::env::temp_dir().join(format!("mlmatvamp-mixed-cmd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlmatvamp"))
        .args([
            "mixed",
            "--out",
            dir.to_str().unwrap(),
            "--p",
            "40",
            "--ratios",
            "3,8",
            "--trials",
            "2",
            "--iterations",
            "20",
            "--se-n-mc",
            "2000",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("mixed.json")).unwrap()).unwrap();
    assert_eq!(json["meta"]["command"], "mixed");
    assert_eq!(json["meta"]["config"]["p"], 40);
    let ratios = json["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 2);
    for r in ratios {
        let methods = r["methods"].as_array().unwrap();
        assert_eq!(methods.len(), 3);
        for m in methods {
            let n_ok = m["error"]["values"].as_array().unwrap().len();
            assert_eq!(n_ok + m["error"]["failed"].as_u64().unwrap() as usize, 2);
            assert!(!m["iteration_medians"].as_array().unwrap().is_empty());
        }
        assert_eq!(r["se"].as_array().unwrap().len(), 20);
    }
    let csv = std::fs::read_to_string(dir.join("mixed.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 4);
    for f in ["mixed.png", "mixed.svg"] {
        assert!(std::fs::metadata(dir.join(f)).unwrap().len() > 1000, "{f}");
    }
    // Clean failures.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_mlmatvamp"))
        .args([
            "mixed",
            "--out",
            dir.to_str().unwrap(),
            "--weights",
            "0.5,0.2",
            "--quiet",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("sum to 1") && !err.contains("panicked"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn invalid_inputs_are_errors() {
    let y = Mat::from_fn(5, 1, |i, _| i as f64);
    let new = |y: Mat<f64>, d: usize, s2: f64, w: Option<Vec<f64>>| {
        MixedRegressionOutput::new(y, d, s2, w, Estimator::Mmse)
            .unwrap_err()
            .to_string()
    };
    assert!(new(Mat::zeros(5, 2), 2, 0.1, None).contains("n x 1"));
    assert!(new(Mat::zeros(0, 1), 2, 0.1, None).contains("n x 1"));
    let mut nan = y.clone();
    nan[(3, 0)] = f64::NAN;
    assert!(new(nan, 2, 0.1, None).contains("(3, 0)"));
    assert!(new(y.clone(), 2, 0.0, None).contains("σ²"));
    assert!(new(y.clone(), 2, f64::INFINITY, None).contains("σ²"));
    assert!(new(y.clone(), 0, 0.1, None).contains("at least one component"));
    assert!(new(y.clone(), 17, 0.1, None).contains("at most 16"));
    assert!(new(y.clone(), 2, 0.1, Some(vec![0.5])).contains("length"));
    assert!(new(y.clone(), 2, 0.1, Some(vec![1.5, -0.5])).contains("π_1"));
    assert!(new(y.clone(), 2, 0.1, Some(vec![0.5, 0.6])).contains("sum to 1"));
    let ch = MixedRegressionOutput::new(y, 2, 0.1, None, Estimator::Mmse).unwrap();
    let wrong = Message::zero(4, 2, 1.0).unwrap();
    assert!(ch
        .denoise(&wrong)
        .unwrap_err()
        .to_string()
        .contains("5 x 2"));
    let mut bad = Message::zero(5, 2, 1.0).unwrap();
    bad.mean[(1, 1)] = f64::INFINITY;
    assert!(ch.denoise(&bad).is_err());
    let mut rng = rng_from_seed(0);
    assert!(ch.draw(Mat::zeros(3, 3).as_ref(), &mut rng).is_err());
    // Application helpers.
    let f = Mat::<f64>::zeros(4, 2);
    assert!(parameter_error(Mat::zeros(4, 3).as_ref(), f.as_ref()).is_err());
    assert!(parameter_error(f.as_ref(), f.as_ref())
        .unwrap_err()
        .to_string()
        .contains("zero"));
    assert!(RandomStart {
        precision: -1.0,
        ..Default::default()
    }
    .validate()
    .is_err());
    let x = Mat::<f64>::zeros(10, 3);
    let yy = Mat::<f64>::zeros(10, 1);
    assert!(alternating_minimisation(
        x.as_ref(),
        yy.as_ref(),
        4,
        &AltMinConfig::default(),
        |_, _| {}
    )
    .is_err());
    assert!(alternating_minimisation(
        x.as_ref(),
        Mat::<f64>::zeros(9, 1).as_ref(),
        2,
        &AltMinConfig {
            start: AltMinStart::Random,
            ..Default::default()
        },
        |_, _| {}
    )
    .is_err());
    assert!(MixedConfig {
        weights: Some(vec![0.2, 0.2]),
        ..Default::default()
    }
    .validate()
    .is_err());
}
