//! The row-sparse Bernoulli–Gaussian prior's MMSE denoiser (spec §5.2).
//!
//! * At `d = 2`, the posterior mean and covariance of single rows match a brute-force
//!   quadrature of `p(z | r) ∝ [(1−ρ)δ_0(z) + ρ N(z; μ, Σ_0)] exp(−½(z − r)Γ(z − r)^T)` on a dense
//!   2-D grid, to `1e-6`, for non-diagonal `Γ`, `Σ_0` and a non-zero slab mean.
//! * Covariance calibration (spec §8.2.6): rows drawn from the prior and observed as
//!   `R = Z + N(0, Rvar)` (random SPD `Rvar`, eigenvalues `∝ 0.5^j`) give an average posterior
//!   covariance `Σ̄` equal to the empirical error covariance within Monte Carlo error at
//!   `n = 4000`, and within 5% (relative Frobenius) at `n = 100000` (see [`covariance_calibration`]
//!   for why the spec's 5% at small `n` is below the Monte Carlo noise floor).

mod common;

use common::*;
use faer::Mat;
use mlmatvamp::denoise::gaussian_rows;
use mlmatvamp::prelude::*;
use nalgebra::{Matrix2, Vector2};

/// Posterior mean and covariance of one row by brute force: the slab integral on a uniform grid
/// over `[−half, half]²` (spacing `h`; the integrand is a smooth Gaussian negligible at the box
/// edge, so the plain Riemann sum converges spectrally), plus the spike's point mass at 0.
fn grid_posterior(
    rho: f64,
    mu: Vector2<f64>,
    sigma0: Matrix2<f64>,
    gamma: Matrix2<f64>,
    r: Vector2<f64>,
    half: f64,
    h: f64,
) -> (Vector2<f64>, Matrix2<f64>) {
    let p0 = sigma0.try_inverse().unwrap();
    let norm = 1.0 / (2.0 * std::f64::consts::PI * sigma0.determinant().sqrt());
    let like = |z: Vector2<f64>| {
        let e = z - r;
        (-0.5 * e.dot(&(gamma * e))).exp()
    };
    let spike = (1.0 - rho) * like(Vector2::zeros());
    let mut mass = 0.0;
    let mut first = Vector2::zeros();
    let mut second = Matrix2::zeros();
    let steps = (2.0 * half / h).round() as usize;
    for a in 0..=steps {
        for b in 0..=steps {
            let z = Vector2::new(-half + a as f64 * h, -half + b as f64 * h);
            let e = z - mu;
            let w = rho * norm * (-0.5 * e.dot(&(p0 * e))).exp() * like(z) * h * h;
            mass += w;
            first += z * w;
            second += z * z.transpose() * w;
        }
    }
    let total = mass + spike;
    let mean = first / total;
    (mean, second / total - mean * mean.transpose())
}

#[test]
fn d2_posterior_matches_grid_quadrature() {
    let mut rng = rng_from_seed(81);
    let rho = 0.3;
    let mu = Vector2::new(0.4, -0.7);
    let sigma0 = Matrix2::new(1.2, 0.5, 0.5, 0.8);
    let gamma = Matrix2::new(2.5, -0.9, -0.9, 1.5);
    let prior = BernoulliGaussianPrior::new(
        rho,
        vec![mu[0], mu[1]],
        DMat::from_row_slice(2, 2, sigma0.as_slice()),
    )
    .unwrap();
    let prec = Spd::new("Γ", DMat::from_row_slice(2, 2, gamma.as_slice()), Some(2)).unwrap();
    // A few random messages, one near 0 (posterior mostly spike), one far out (mostly slab).
    let g = standard_normal(6, 2, &mut rng);
    let mut rs: Vec<Vector2<f64>> = (0..6)
        .map(|i| Vector2::new(1.5 * g[(i, 0)], 1.5 * g[(i, 1)]))
        .collect();
    rs.push(Vector2::new(0.05, -0.02));
    rs.push(Vector2::new(2.5, -2.8));
    let mut worst_mean = 0.0f64;
    let mut worst_cov = 0.0f64;
    let mut norms = vec![];
    for r in &rs {
        let msg = Message {
            mean: Mat::from_fn(1, 2, |_, j| r[j]),
            precision: prec.clone(),
        };
        let b = prior.denoise(&msg).unwrap();
        let (gm, gc) = grid_posterior(rho, mu, sigma0, gamma, *r, 16.0, 0.05);
        let lib_mean = Vector2::new(b.mean[(0, 0)], b.mean[(0, 1)]);
        let lib_cov = Matrix2::new(b.cov[(0, 0)], b.cov[(0, 1)], b.cov[(1, 0)], b.cov[(1, 1)]);
        let em = (lib_mean - gm).norm() / gm.norm();
        let ec = (lib_cov - gc).norm() / gc.norm();
        // ‖ẑ‖ shows the range covered (spike-dominated: small, slab-dominated: large).
        norms.push(gm.norm());
        println!(
            "r = [{:+.3}, {:+.3}]: ‖ẑ‖ = {:.3e}, mean rel err {em:.2e}, cov rel err {ec:.2e}",
            r[0],
            r[1],
            gm.norm()
        );
        worst_mean = worst_mean.max(em);
        worst_cov = worst_cov.max(ec);
    }
    println!("worst: mean {worst_mean:.2e}, covariance {worst_cov:.2e}");
    assert!(worst_mean < 1e-6 && worst_cov < 1e-6);
    // The messages span spike-dominated and slab-dominated posteriors.
    let (lo, hi) = norms
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
    assert!(lo < 0.1 && hi > 1.0, "range of ‖ẑ‖: {lo} .. {hi}");

    // All rows at once: the same means, and Σ̄ = the average of the per-row covariances.
    let msg = Message {
        mean: Mat::from_fn(rs.len(), 2, |i, j| rs[i][j]),
        precision: prec.clone(),
    };
    let all = prior.denoise(&msg).unwrap();
    let mut avg = DMat::zeros(2, 2);
    for (i, r) in rs.iter().enumerate() {
        let one = prior
            .denoise(&Message {
                mean: Mat::from_fn(1, 2, |_, j| r[j]),
                precision: prec.clone(),
            })
            .unwrap();
        for j in 0..2 {
            assert!(
                (all.mean[(i, j)] - one.mean[(0, j)]).abs()
                    <= 1e-14 * (1.0 + one.mean[(0, j)].abs())
            );
        }
        avg += &one.cov / rs.len() as f64;
    }
    assert!(rel_err(&all.cov, &avg) < 1e-13);
}

/// One draw of spec §8.2.6 for the Bernoulli–Gaussian prior at `d = 3`: returns `Σ̄`, the
/// empirical error covariance `emp = (1/n) Σ_i e_i^T e_i` (`e_i` = row error) and the Monte Carlo
/// standard error of `emp` in Frobenius norm, `se = sqrt((1/n) ⟨‖e_i^T e_i − emp‖²_F⟩)`.
fn calibration(seed: u64, n: usize) -> (DMat, DMat, f64) {
    let d = 3;
    let mut rng = rng_from_seed(seed);
    let sigma0 = random_spd(d, 1.0, &mut rng);
    let prior = BernoulliGaussianPrior::new(0.3, vec![0.3, -0.5, 0.2], sigma0).unwrap();
    let z = prior.sample(n, &mut rng).unwrap();
    let rvar = geometric_spd(d, 0.07, &mut rng);
    let chol = rvar.clone().cholesky().unwrap().l();
    let r = &z + &gaussian_rows(n, &chol, &mut rng);
    let msg = Message {
        mean: r,
        precision: Spd::new("Rvar^-1", inverse(&rvar), Some(d)).unwrap(),
    };
    let b = prior.denoise(&msg).unwrap();
    let err = to_dmat(&(&b.mean - &z));
    let emp = err.transpose() * &err / n as f64;
    let mut var = 0.0;
    for i in 0..n {
        let e = err.row(i);
        var += (e.transpose() * e - &emp).norm_squared();
    }
    let se = (var / n as f64 / n as f64).sqrt();
    // Not vacuous: the denoiser removes most of the message noise, and Σ̄ is far from Rvar.
    assert!(emp.trace() < 0.6 * rvar.trace());
    assert!(rel_err(&b.cov, &rvar) > 0.2);
    (b.cov, emp, se)
}

/// Spec §8.2.6: `‖Σ̄ − emp‖_F / ‖emp‖_F < 0.05`.
///
/// The spec's fixed threshold ignores Monte Carlo error. Even for exactly Gaussian errors with
/// covariance `S`, `E‖emp − S‖²_F = (tr(S)² + tr(S²))/n`, i.e. a relative error ≈ 0.029 at
/// `n = 4000` and ≈ 0.058 at `n = 1000` for the spectrum used here (`∝ 0.5^j`, d = 3); the
/// spike-and-slab errors are heavier-tailed still (measured over 30 seeds: median 0.045 at
/// n = 4000, 40% of seeds above 0.05; all of 20 seeds above 0.05 at n = 1000). So:
/// * at `n = 4000` the test requires `‖Σ̄ − emp‖_F < 3 se`, with `se` the Monte Carlo standard
///   error of `emp` estimated from the same rows (≈ 6% of `‖emp‖_F` here);
/// * the spec's relative 5% criterion is asserted at `n = 100000`, where `se` ≈ 1.2% of `‖emp‖_F`;
/// * a 15% miscalibration of `Σ̄` is shown to fail the `3 se` test at `n = 100000`.
#[test]
fn covariance_calibration() {
    for seed in [82, 83, 84, 85, 86] {
        let (cov, emp, se) = calibration(seed, 4000);
        let gap = (&cov - &emp).norm();
        println!(
            "seed {seed}, n = 4000: ‖Σ̄ − emp‖_F/‖emp‖_F = {:.4}, ‖Σ̄ − emp‖_F / se = {:.2}",
            gap / emp.norm(),
            gap / se
        );
        assert!(
            gap < 3.0 * se,
            "seed {seed}: ‖Σ̄ − emp‖ = {gap:.3e} vs standard error {se:.3e}"
        );
    }
    for seed in [82, 83] {
        let (cov, emp, se) = calibration(seed, 100_000);
        let rel = rel_err(&cov, &emp);
        let off = rel_err(&(&cov * 1.15), &emp);
        println!(
            "seed {seed}, n = 100000: ‖Σ̄ − emp‖_F/‖emp‖_F = {rel:.4} (standard error {:.4}); with Σ̄ x 1.15: {off:.4}",
            se / emp.norm()
        );
        assert!(rel < 0.05, "seed {seed}: calibration error {rel}");
        assert!(
            (&cov * 1.15 - &emp).norm() > 3.0 * se,
            "a 15% miscalibration is not detected"
        );
    }
}
