//! AWGN output with missing entries (spec §4.5, matrix completion eq. 10).
//!
//! * With a random mask (~30% missing) and a non-diagonal noise precision `N` on an `L = 2`
//!   Gaussian network, the solver's fixed point is the exact posterior mean, computed here by a
//!   dense solve that uses only the observed entries: row `i` with observed set `O_i` contributes
//!   the likelihood `N(y_{i,O}; z_{i,O}, [N^{-1}]_{OO})` (correlated noise: the observed
//!   sub-block of the noise covariance, not of the precision).
//! * Fully observed: the output's backward message is exactly `R⁻_{L−1} = Y`, `Γ⁻_{L−1} = N`
//!   (spec §4.5), and a Gaussian prior's forward message is exactly `R⁺_0 = 1μ^T`,
//!   `Γ⁺_0 = Σ_0^{-1}` (spec §5.1), at every iteration.

mod common;

use common::*;
use faer::Mat;
use mlmatvamp::prelude::*;
use nalgebra::{DMatrix, DVector};
use rand::RngExt;
use std::sync::Arc;

const D: usize = 3;

struct Case {
    n0: usize,
    mu: Vec<f64>,
    sigma0: DMat,
    w: Mat<f64>,
    bias: Mat<f64>,
    lin_noise: Option<DMat>,
    out_noise: DMat,
}

fn case(n0: usize, n1: usize, noisy: bool, rng: &mut Rng) -> Case {
    Case {
        n0,
        mu: vec![0.4, -0.2, 0.6],
        sigma0: random_spd(D, 1.0, rng),
        w: gaussian_w(n1, n0, rng),
        bias: standard_normal(n1, D, rng) * faer::Scale(0.5),
        lin_noise: noisy.then(|| random_spd(D, 20.0, rng)),
        out_noise: random_spd(D, 15.0, rng),
    }
}

fn network(c: &Case, y: Mat<f64>, mask: Option<Mat<f64>>) -> Network {
    let prior = Arc::new(GaussianPrior::new(c.mu.clone(), c.sigma0.clone()).unwrap());
    let nz = c
        .lin_noise
        .as_ref()
        .map(|n| Spd::new("N_1", n.clone(), Some(D)).unwrap());
    let layer = Arc::new(LinearLayer::new(c.w.as_ref(), Some(c.bias.clone()), nz, D).unwrap());
    let out = Arc::new(
        AwgnOutput::new(
            y,
            Spd::new("N_out", c.out_noise.clone(), Some(D)).unwrap(),
            mask,
        )
        .unwrap(),
    );
    Network::new(prior, c.n0, vec![layer], out).unwrap()
}

/// A fully observed `Y` drawn from the model.
fn sample_y(c: &Case, rng: &mut Rng) -> Mat<f64> {
    let template = network(c, Mat::zeros(c.w.nrows(), D), None);
    let (_, net) = template.sample(rng).unwrap();
    net.output().observation().to_owned()
}

/// Exact posterior means of `Z_0` and `Z_1` given the observed entries of `Y`, by a dense solve
/// over the free variables `x = [vec Z_0; vec Ξ_1]` (row-major vec).
///
/// `precision_subblock = true` gives the tempting but wrong likelihood that uses the sub-block
/// of the noise *precision*, `[N]_{OO}`, instead of `([N^{-1}]_{OO})^{-1}`; the two differ on
/// partially observed rows whenever the noise is correlated.
fn exact_means(
    c: &Case,
    y: &Mat<f64>,
    observed: &[Vec<bool>],
    precision_subblock: bool,
) -> (DMatrix<f64>, DMatrix<f64>) {
    let (n1, n0) = (c.w.nrows(), c.w.ncols());
    let noisy = c.lin_noise.is_some();
    let m = n0 * D + if noisy { n1 * D } else { 0 };
    let mut p = DMatrix::<f64>::zeros(m, m);
    let mut h = DVector::<f64>::zeros(m);
    let p0 = inverse(&c.sigma0);
    let hmu = &p0 * DVector::from_column_slice(&c.mu);
    for i in 0..n0 {
        p.view_mut((i * D, i * D), (D, D)).copy_from(&p0);
        h.rows_mut(i * D, D).copy_from(&hmu);
    }
    if let Some(n1p) = &c.lin_noise {
        for i in 0..n1 {
            let o = n0 * D + i * D;
            p.view_mut((o, o), (D, D)).copy_from(n1p);
        }
    }
    // vec Z_1 = A x + c0.
    let mut a = DMatrix::<f64>::zeros(n1 * D, m);
    let mut c0 = DVector::<f64>::zeros(n1 * D);
    for i in 0..n1 {
        for j in 0..D {
            for k in 0..n0 {
                a[(i * D + j, k * D + j)] = c.w[(i, k)];
            }
            if noisy {
                a[(i * D + j, n0 * D + i * D + j)] = 1.0;
            }
            c0[i * D + j] = c.bias[(i, j)];
        }
    }
    // Likelihood of the observed entries, row by row.
    let cov = inverse(&c.out_noise);
    let mut big = DMatrix::<f64>::zeros(n1 * D, n1 * D);
    let mut yt = DVector::<f64>::zeros(n1 * D);
    for i in 0..n1 {
        let idx: Vec<usize> = (0..D).filter(|&j| observed[i][j]).collect();
        if idx.is_empty() {
            continue;
        }
        let sub_inv = if precision_subblock {
            DMatrix::from_fn(idx.len(), idx.len(), |a, b| c.out_noise[(idx[a], idx[b])])
        } else {
            let sub = DMatrix::from_fn(idx.len(), idx.len(), |a, b| cov[(idx[a], idx[b])]);
            sub.try_inverse().unwrap()
        };
        for (ai, &ja) in idx.iter().enumerate() {
            yt[i * D + ja] = y[(i, ja)];
            for (bi, &jb) in idx.iter().enumerate() {
                big[(i * D + ja, i * D + jb)] = sub_inv[(ai, bi)];
            }
        }
    }
    p += a.transpose() * &big * &a;
    h += a.transpose() * &big * (yt - &c0);
    let x = p.cholesky().unwrap().solve(&h);
    let z1 = &a * &x + c0;
    (
        DMatrix::from_fn(n0, D, |i, j| x[i * D + j]),
        DMatrix::from_fn(n1, D, |i, j| z1[i * D + j]),
    )
}

fn masked_case(c: &Case, seed: u64) -> f64 {
    let mut rng = rng_from_seed(seed);
    let y_full = sample_y(c, &mut rng);
    let n1 = y_full.nrows();
    let observed: Vec<Vec<bool>> = (0..n1)
        .map(|_| (0..D).map(|_| rng.random::<f64>() >= 0.3).collect())
        .collect();
    let mask = Mat::from_fn(n1, D, |i, j| if observed[i][j] { 1.0 } else { 0.0 });
    // Missing entries carry NaN: the channel must never read them.
    let y = Mat::from_fn(n1, D, |i, j| {
        if observed[i][j] {
            y_full[(i, j)]
        } else {
            f64::NAN
        }
    });
    let missing = observed.iter().flatten().filter(|o| !**o).count();
    let empty_rows = observed.iter().filter(|r| r.iter().all(|o| !o)).count();
    let partial_rows = observed
        .iter()
        .filter(|r| r.iter().any(|o| *o) && r.iter().any(|o| !o))
        .count();
    println!(
        "{missing} of {} entries missing, {empty_rows} empty rows, {partial_rows} partially observed rows",
        n1 * D
    );
    assert!(
        empty_rows >= 1 && partial_rows >= 10,
        "mask is not diverse enough"
    );
    let (z0, z1) = exact_means(c, &y_full, &observed, false);
    let net = network(c, y, Some(mask));
    let sol = Solver::new(SolverConfig {
        iterations: 400,
        tolerance: Some(1e-13),
        ..Default::default()
    })
    .unwrap()
    .run(&net, None)
    .unwrap();
    println!("stopped after {} iterations", sol.history.len());
    let mut worst = 0.0f64;
    for (l, exact) in [(0, &z0), (1, &z1)] {
        for b in [sol.state.estimate_plus(l), sol.state.estimate_minus(l)] {
            let e = rel_err(&to_dmat(&b.unwrap().mean), exact);
            println!("Z_{l}: relative error vs the dense posterior mean {e:.3e}");
            worst = worst.max(e);
        }
    }
    // Not vacuous: the precision-sub-block likelihood gives a clearly different answer, which the
    // solver does not match.
    let (_, z1_wrong) = exact_means(c, &y_full, &observed, true);
    let gap = rel_err(&z1_wrong, &z1);
    let solver_gap = rel_err(
        &to_dmat(&sol.state.estimate_minus(1).unwrap().mean),
        &z1_wrong,
    );
    println!(
        "precision-sub-block likelihood differs by {gap:.3e} (solver vs it: {solver_gap:.3e})"
    );
    assert!(gap > 1e-3 && solver_gap > 1e-3);
    worst
}

#[test]
fn masked_output_tall_noisy_layer_gives_exact_posterior_mean() {
    let mut rng = rng_from_seed(71);
    let c = case(30, 60, true, &mut rng);
    let worst = masked_case(&c, 72);
    assert!(worst < 1e-8, "{worst:e}");
}

#[test]
fn masked_output_wide_noiseless_layer_gives_exact_posterior_mean() {
    let mut rng = rng_from_seed(73);
    let c = case(50, 40, false, &mut rng);
    let worst = masked_case(&c, 76);
    assert!(worst < 1e-8, "{worst:e}");
}

#[test]
fn fully_observed_output_and_gaussian_prior_messages_are_exact() {
    let mut rng = rng_from_seed(75);
    let c = case(30, 45, true, &mut rng);
    let y = sample_y(&c, &mut rng);
    let net = network(&c, y.clone(), None);
    let mu_rows = DMatrix::from_fn(c.n0, D, |_, j| c.mu[j]);
    let prior_prec = inverse(&c.sigma0);
    let yd = to_dmat(&y);
    let mut worst = [0.0f64; 4];
    let mut count = 0;
    Solver::new(SolverConfig {
        iterations: 10,
        ..Default::default()
    })
    .unwrap()
    .run_with(&net, None, &mut |_, s| {
        let out_msg = s.minus(1).unwrap();
        let prior_msg = s.plus(0).unwrap();
        let errs = [
            rel_err(&to_dmat(&out_msg.mean), &yd),
            rel_err(out_msg.precision.matrix(), &c.out_noise),
            rel_err(&to_dmat(&prior_msg.mean), &mu_rows),
            rel_err(prior_msg.precision.matrix(), &prior_prec),
        ];
        for (w, e) in worst.iter_mut().zip(errs) {
            *w = w.max(e);
        }
        count += 1;
        Control::Continue
    })
    .unwrap();
    assert_eq!(count, 10);
    println!(
        "worst over 10 iterations: R⁻_1 vs Y {:.2e}, Γ⁻_1 vs N {:.2e}, R⁺_0 vs μ {:.2e}, Γ⁺_0 vs Σ_0^-1 {:.2e}",
        worst[0], worst[1], worst[2], worst[3]
    );
    for e in worst {
        assert!(e < 1e-12, "{e:e}");
    }
}

/// Many columns (`d = 70`, beyond a 64-bit pattern key): rows with different missing sets are
/// kept apart, and with an isotropic noise precision the masked denoiser is exact per entry —
/// `(γ r + ν y)/(γ + ν)` where observed and `r` where missing, posterior variance averaged over
/// rows.
#[test]
fn many_columns_with_a_mask() {
    let (n, d) = (5, 70);
    let (gamma, nu) = (2.0, 8.0);
    let y = Mat::from_fn(n, d, |i, j| (i * d + j) as f64 * 0.01);
    // Row i misses column 64 + i (rows 0..5 differ only beyond the 64th column).
    let mask = Mat::from_fn(n, d, |i, j| if j == 64 + i { 0.0 } else { 1.0 });
    let noise = Spd::new("N", DMat::identity(d, d) * nu, Some(d)).unwrap();
    let out = AwgnOutput::new(y.clone(), noise, Some(mask)).unwrap();
    let r = Mat::from_fn(n, d, |i, j| 1.0 - 0.02 * (i + j) as f64);
    let msg = Message {
        mean: r.clone(),
        precision: Spd::new("Γ", DMat::identity(d, d) * gamma, Some(d)).unwrap(),
    };
    let b = out.denoise(&msg).unwrap();
    for i in 0..n {
        for j in 0..d {
            let want = if j == 64 + i {
                r[(i, j)]
            } else {
                (gamma * r[(i, j)] + nu * y[(i, j)]) / (gamma + nu)
            };
            assert!((b.mean[(i, j)] - want).abs() < 1e-12, "({i}, {j})");
        }
    }
    // Column 64 + k is missing in one row of five.
    for j in 0..d {
        let miss = if (64..69).contains(&j) { 1.0 } else { 0.0 };
        let want = (miss / gamma + (n as f64 - miss) / (gamma + nu)) / n as f64;
        assert!((b.cov[(j, j)] - want).abs() < 1e-12, "var {j}");
    }
}
