//! Multi-task regression / multiple measurement vectors (MMV), paper §2.1 (eq. 4–5).
//!
//! The model is `Y = X F + Ξ` with a row-sparse `F ∈ R^{n_0 x d}` (`d` tasks sharing a support),
//! a design `X ∈ R^{n_1 x n_0}` and noise rows `N(0, N^{-1})`. ML-Mat-VAMP sees it as the network
//! `Z_0 = F`, `W_1 = X`, `Z_1 = X F` (noiseless linear layer), `Y = Z_1 + Ξ` (AWGN output):
//!
//! * with the row-sparse Bernoulli–Gaussian prior (spec §5.2) it is the MMSE estimator;
//! * with the group-lasso prior `∝ exp(−λ‖z‖₂)` (spec §5.3) its MAP problem is the multi-task
//!   (group) lasso, paper eq. (5) with the squared loss in the metric of `N`:
//!   ```text
//!   min_F  ½‖Y − X F‖²_N + λ Σ_k ‖F_k·‖₂,    ‖A‖²_N = tr(A N A^T)        (GL)
//!   ```
//!
//! This module holds the data ([`MmvConfig`], [`MmvTrial`]), the networks the algorithm and the
//! state evolution run on, and the baseline: (GL) solved by FISTA ([`fista_group_lasso`]), an
//! accelerated proximal-gradient method with backtracking and adaptive restart.

use crate::denoise::{
    gaussian_rows, standard_normal, AwgnOutput, BernoulliGaussianPrior, InputPrior, LinearLayer,
};
use crate::error::{Error, Result};
use crate::factor::{PriorSampler, PriorSe};
use crate::network::Network;
use crate::rows::{check_finite, check_shape, mul_small, shape_str};
use crate::se::{LinearSpec, SeNetwork, SpectralLinearLayer};
use crate::solver::Control;
use crate::spd::{dmat_from_rows, DMat, Spd};
use faer::{Mat, MatRef};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

// ---------------------------------------------------------------------------------------------
// Data (paper eq. 4 with φ = AWGN)
// ---------------------------------------------------------------------------------------------

/// One MMV problem size and noise level.
///
/// `F` has `n_0` rows, each `0` with probability `1 − ρ` and otherwise `N(0, Σ_0)`; `X` has
/// `n_1 = round(ratio · n_0)` rows with i.i.d. `N(0, 1/n_0)` entries; the noise is isotropic,
/// `N = I/σ²`, with `σ² = ρ tr(Σ_0)/d · 10^{−snr/10}` (the population signal power per entry of
/// `X F` over the noise variance is the SNR).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MmvConfig {
    /// `n_0`, the number of rows of `F` (features).
    pub n0: usize,
    /// `d`, the number of tasks (columns of `F` and `Y`).
    pub d: usize,
    /// `ρ`, the probability that a row of `F` is non-zero.
    pub sparsity: f64,
    /// `Σ_0`, the covariance of the non-zero rows (`d x d`, row by row).
    pub slab_covariance: Vec<Vec<f64>>,
    /// The sampling ratio `n_1/n_0`.
    pub ratio: f64,
    /// Signal-to-noise ratio in dB.
    pub snr_db: f64,
}

impl Default for MmvConfig {
    fn default() -> Self {
        MmvConfig {
            n0: 500,
            d: 3,
            sparsity: 0.2,
            slab_covariance: vec![
                vec![1.0, 0.5, 0.2],
                vec![0.5, 1.0, 0.4],
                vec![0.2, 0.4, 1.0],
            ],
            ratio: 0.6,
            snr_db: 20.0,
        }
    }
}

impl MmvConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.n0 == 0 || self.d == 0 {
            return Err(Error::invalid(
                "MMV sizes",
                format!("n0 and d must be positive, got {} and {}", self.n0, self.d),
            ));
        }
        if !(self.sparsity > 0.0 && self.sparsity <= 1.0) {
            return Err(Error::invalid(
                "sparsity",
                format!("must be in (0, 1], got {}", self.sparsity),
            ));
        }
        if !(self.ratio > 0.0 && self.ratio.is_finite()) || self.n1() == 0 {
            return Err(Error::invalid(
                "ratio",
                format!(
                    "n1 = ratio · n0 must be at least 1, got ratio {}",
                    self.ratio
                ),
            ));
        }
        if !self.snr_db.is_finite() {
            return Err(Error::invalid("snr_db", "must be finite"));
        }
        Spd::new("slab covariance", self.slab_cov()?, Some(self.d))?;
        Ok(())
    }
    /// `n_1 = round(ratio · n_0)`.
    pub fn n1(&self) -> usize {
        (self.ratio * self.n0 as f64).round() as usize
    }
    /// `Σ_0`.
    pub fn slab_cov(&self) -> Result<DMat> {
        dmat_from_rows("slab covariance", &self.slab_covariance, Some(self.d))
    }
    /// The noise variance per entry `σ² = ρ tr(Σ_0)/d · 10^{−snr/10}`.
    pub fn noise_variance(&self) -> Result<f64> {
        let tr = self.slab_cov()?.trace();
        Ok(self.sparsity * tr / self.d as f64 * 10f64.powf(-self.snr_db / 10.0))
    }
    /// The noise precision `N = I/σ²`.
    pub fn noise_precision(&self) -> Result<Spd> {
        Spd::scaled_identity(self.d, 1.0 / self.noise_variance()?)
    }
    /// The law of the rows of `F`: Bernoulli–Gaussian with zero slab mean.
    pub fn data_prior(&self) -> Result<BernoulliGaussianPrior> {
        BernoulliGaussianPrior::new(self.sparsity, vec![0.0; self.d], self.slab_cov()?)
    }
    /// Draws one problem from `seed`.
    pub fn sample(&self, seed: u64) -> Result<MmvTrial> {
        self.validate()?;
        let mut rng = crate::rng_from_seed(seed);
        let (n0, n1, d) = (self.n0, self.n1(), self.d);
        let f = self.data_prior()?.sample(n0, &mut rng)?;
        let x = standard_normal(n1, n0, &mut rng) * faer::Scale(1.0 / (n0 as f64).sqrt());
        let noise = self.noise_precision()?;
        let xi = gaussian_rows(
            n1,
            Spd::from_symmetric("noise covariance", noise.inverse())?.cholesky_lower(),
            &mut rng,
        );
        let y = &x * &f + xi;
        debug_assert_eq!(y.ncols(), d);
        Ok(MmvTrial {
            config: self.clone(),
            x,
            f,
            y,
            noise,
        })
    }
    /// The network of the state evolution: the given prior (its `sample` is the data law),
    /// a noiseless linear layer known through the Marchenko–Pastur law of `X`
    /// (`n_1 x n_0`, entry variance `1/n_0`), and the AWGN output.
    pub fn se_network(&self, prior: Arc<dyn PriorSe>) -> Result<SeNetwork> {
        self.validate()?;
        let (n0, n1, d) = (self.n0, self.n1(), self.d);
        let spec = LinearSpec::marchenko_pastur(n1, n0, 1.0 / n0 as f64, d, None, None)?;
        let out = AwgnOutput::new(Mat::zeros(n1, d), self.noise_precision()?, None)?;
        SeNetwork::new(
            prior,
            n0,
            vec![Arc::new(SpectralLinearLayer::new(spec))],
            Arc::new(out),
        )
    }
}

/// One drawn MMV problem: the truth `F`, the design `X`, the observation `Y` and `N`.
#[derive(Clone, Debug)]
pub struct MmvTrial {
    /// The configuration it was drawn from.
    pub config: MmvConfig,
    /// `X` (`n_1 x n_0`).
    pub x: Mat<f64>,
    /// The true `F` (`n_0 x d`).
    pub f: Mat<f64>,
    /// `Y = X F + Ξ` (`n_1 x d`).
    pub y: Mat<f64>,
    /// The noise precision `N`.
    pub noise: Spd,
}

impl MmvTrial {
    /// The linear layer `Z_1 = X Z_0` (one thin SVD; share it between networks).
    pub fn layer(&self) -> Result<Arc<LinearLayer>> {
        Ok(Arc::new(LinearLayer::new(
            self.x.as_ref(),
            None,
            None,
            self.config.d,
        )?))
    }
    /// The network `F → X F → Y` with the given prior and a prebuilt [`MmvTrial::layer`].
    pub fn network(&self, prior: Arc<dyn InputPrior>, layer: Arc<LinearLayer>) -> Result<Network> {
        let out = AwgnOutput::new(self.y.clone(), self.noise.clone(), None)?;
        Network::new(prior, self.config.n0, vec![layer], Arc::new(out))
    }
    /// The truth `[F, X F]` for the solver's per-iteration MSE.
    pub fn truth(&self) -> Vec<Mat<f64>> {
        vec![self.f.clone(), &self.x * &self.f]
    }
    /// `‖F̂ − F‖²_F / ‖F‖²_F`.
    pub fn nmse(&self, f_hat: MatRef<'_, f64>) -> f64 {
        nmse(f_hat, self.f.as_ref())
    }
}

/// The normalized squared error `‖A − B‖²_F / ‖B‖²_F`.
pub fn nmse(estimate: MatRef<'_, f64>, truth: MatRef<'_, f64>) -> f64 {
    let diff = estimate - truth;
    diff.norm_l2().powi(2) / truth.norm_l2().powi(2)
}

// ---------------------------------------------------------------------------------------------
// The group-lasso objective and FISTA
// ---------------------------------------------------------------------------------------------

/// The data of the group-lasso problem (GL): `min_F ½‖Y − X F‖²_N + λ Σ_k ‖F_k·‖₂`.
#[derive(Clone, Copy, Debug)]
pub struct GroupLassoProblem<'a> {
    /// `X` (`n_1 x n_0`).
    pub x: MatRef<'a, f64>,
    /// `Y` (`n_1 x d`).
    pub y: MatRef<'a, f64>,
    /// The noise precision `N` (`d x d`).
    pub noise: &'a Spd,
    /// `λ > 0`.
    pub lambda: f64,
}

impl GroupLassoProblem<'_> {
    /// Checks shapes, finiteness and `λ`.
    pub fn validate(&self) -> Result<()> {
        let (n1, d) = (self.y.nrows(), self.y.ncols());
        if self.x.nrows() != n1 || self.x.ncols() == 0 || n1 == 0 {
            return Err(Error::shape(
                "design X of the group lasso",
                format!("{n1} x n_0 (n_0 ≥ 1, as many rows as Y)"),
                shape_str(self.x),
            ));
        }
        if self.noise.dim() != d {
            return Err(Error::shape(
                "noise precision N of the group lasso",
                format!("{d} x {d}"),
                format!("{0} x {0}", self.noise.dim()),
            ));
        }
        check_finite("design X of the group lasso", self.x)?;
        check_finite("observation Y of the group lasso", self.y)?;
        if !(self.lambda > 0.0 && self.lambda.is_finite()) {
            return Err(Error::invalid(
                "group-lasso lambda",
                format!("must be positive and finite, got {}", self.lambda),
            ));
        }
        Ok(())
    }

    /// The objective (GL) at `F`.
    pub fn objective(&self, f: MatRef<'_, f64>) -> Result<f64> {
        self.validate()?;
        check_shape("F", f, self.x.ncols(), self.y.ncols())?;
        let resid = self.x * f - self.y;
        Ok(0.5 * norm_sq_n(resid.as_ref(), self.noise.matrix()) + self.lambda * row_norms_sum(f))
    }

    /// The gradient of the smooth part, `∇ = −X^T (Y − X F) N` (`n_0 x d`).
    pub fn gradient(&self, f: MatRef<'_, f64>) -> Result<Mat<f64>> {
        self.validate()?;
        check_shape("F", f, self.x.ncols(), self.y.ncols())?;
        let resid = self.x * f - self.y;
        Ok(self.x.transpose() * mul_small(resid.as_ref(), self.noise.matrix()))
    }
}

/// `‖A‖²_N = tr(A N A^T)`.
fn norm_sq_n(a: MatRef<'_, f64>, n: &DMat) -> f64 {
    let an = mul_small(a, n);
    let mut s = 0.0;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            s += a[(i, j)] * an[(i, j)];
        }
    }
    s
}

/// `Σ_k ‖F_k·‖₂`.
fn row_norms_sum(f: MatRef<'_, f64>) -> f64 {
    (0..f.nrows())
        .map(|i| {
            (0..f.ncols())
                .map(|j| f[(i, j)].powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .sum()
}

/// Block soft-thresholding, the prox of `τ‖·‖₂` in the Euclidean metric, applied to every row:
/// `z_k = v_k · max(0, 1 − τ/‖v_k‖₂)`.
pub fn block_soft_threshold(v: &mut Mat<f64>, tau: f64) {
    let d = v.ncols();
    for i in 0..v.nrows() {
        let norm = (0..d).map(|j| v[(i, j)].powi(2)).sum::<f64>().sqrt();
        let scale = if norm > tau { 1.0 - tau / norm } else { 0.0 };
        for j in 0..d {
            v[(i, j)] *= scale;
        }
    }
}

/// An estimate of the largest singular value of `X` by `iterations` steps of the power method on
/// `X^T X` from a fixed (deterministic) start. It is a lower bound; FISTA's backtracking covers
/// the gap.
pub fn largest_singular_value(x: MatRef<'_, f64>, iterations: usize) -> f64 {
    let p = x.ncols();
    if p == 0 || x.nrows() == 0 {
        return 0.0;
    }
    // A fixed start with no special symmetry.
    let mut v = Mat::from_fn(p, 1, |i, _| 1.0 + ((i * 7919) % 101) as f64 / 101.0);
    let mut sigma = 0.0;
    for _ in 0..iterations.max(1) {
        let nv = v.norm_l2();
        if nv == 0.0 {
            return 0.0;
        }
        v *= faer::Scale(1.0 / nv);
        let xv = x * &v;
        sigma = xv.norm_l2();
        v = x.transpose() * xv;
    }
    sigma
}

/// Options of [`fista_group_lasso`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FistaConfig {
    /// Maximum number of iterations.
    pub max_iterations: usize,
    /// Stop when `‖F_{k+1} − F_k‖_F ≤ tolerance · ‖F_{k+1}‖_F`.
    pub tolerance: f64,
    /// Gradient-based adaptive restart of the momentum (O'Donoghue & Candès).
    pub restart: bool,
    /// Power-method steps for the initial Lipschitz estimate `σ_max(X)² λ_max(N)`.
    pub power_iterations: usize,
}

impl Default for FistaConfig {
    fn default() -> Self {
        FistaConfig {
            max_iterations: 20_000,
            tolerance: 1e-10,
            restart: true,
            power_iterations: 50,
        }
    }
}

/// What [`fista_group_lasso`] returns.
#[derive(Clone, Debug)]
pub struct FistaResult {
    /// The final iterate `F` (`n_0 x d`).
    pub estimate: Mat<f64>,
    /// Iterations run.
    pub iterations: usize,
    /// Whether the tolerance was reached.
    pub converged: bool,
    /// The objective (GL) at the estimate.
    pub objective: f64,
    /// Wall time in seconds (callbacks excluded).
    pub seconds: f64,
    /// The final step-size constant `L` (step `1/L`).
    pub lipschitz: f64,
    /// Momentum restarts.
    pub restarts: usize,
    /// Backtracking increases of `L`.
    pub backtracks: usize,
}

/// Solves the group lasso (GL) `min_F ½‖Y − X F‖²_N + λ Σ_k ‖F_k·‖₂` by FISTA (Beck & Teboulle)
/// from `F = 0` (or `start`).
///
/// * Step `1/L` with `L` starting at the power-method estimate of the Lipschitz constant
///   `σ_max(X)² λ_max(N)` of the gradient `−X^T(Y − XF)N`, and increased by 1.5x whenever the
///   (exact, since the loss is quadratic) sufficient-decrease test `‖X D‖²_N ≤ L‖D‖²_F` fails for
///   the step `D`.
/// * Prox step: block soft-thresholding with threshold `λ/L`.
/// * Adaptive restart: the momentum is reset when `⟨Y_k − F_{k+1}, F_{k+1} − F_k⟩ > 0`.
/// * Stop on the relative change `‖F_{k+1} − F_k‖_F ≤ tol ‖F_{k+1}‖_F`.
///
/// `callback(k, F_k, seconds)` is called after every iteration with the iterate and the elapsed
/// time excluding callbacks; returning [`Control::Stop`] ends the run.
pub fn fista_group_lasso(
    problem: &GroupLassoProblem<'_>,
    config: &FistaConfig,
    start: Option<MatRef<'_, f64>>,
    callback: &mut dyn FnMut(usize, MatRef<'_, f64>, f64) -> Control,
) -> Result<FistaResult> {
    problem.validate()?;
    if !(config.tolerance >= 0.0 && config.tolerance.is_finite()) {
        return Err(Error::invalid(
            "FISTA tolerance",
            format!("must be non-negative and finite, got {}", config.tolerance),
        ));
    }
    let (x, y, nmat, lambda) = (problem.x, problem.y, problem.noise.matrix(), problem.lambda);
    let (n0, d) = (x.ncols(), y.ncols());
    let mut paused = 0.0;
    let clock = Instant::now();
    let lam_max_n = problem.noise.eigenvalues().last().copied().unwrap_or(1.0);
    let sigma = largest_singular_value(x, config.power_iterations);
    let mut l = (sigma * sigma * lam_max_n).max(f64::MIN_POSITIVE);
    let mut f = match start {
        Some(s) => {
            check_shape("FISTA start", s, n0, d)?;
            check_finite("FISTA start", s)?;
            s.to_owned()
        }
        None => Mat::zeros(n0, d),
    };
    let mut xf = x * &f;
    let mut yk = f.clone();
    let mut xy = xf.clone();
    let mut t = 1.0f64;
    let (mut restarts, mut backtracks) = (0, 0);
    let mut converged = false;
    let mut iterations = 0;
    for k in 0..config.max_iterations {
        // ∇ at the extrapolated point: X^T (X Y_k − Y) N.
        let resid = &xy - y;
        let grad = x.transpose() * mul_small(resid.as_ref(), nmat);
        let (f_new, xf_new) = loop {
            let mut cand = &yk - &grad * faer::Scale(1.0 / l);
            block_soft_threshold(&mut cand, lambda / l);
            let xc = x * &cand;
            let step = &cand - &yk;
            let xstep = &xc - &xy;
            let lhs = norm_sq_n(xstep.as_ref(), nmat);
            let rhs = l * step.norm_l2().powi(2);
            if !lhs.is_finite() || !rhs.is_finite() {
                return Err(Error::Diverged {
                    location: "FISTA (group lasso)".into(),
                    iteration: k,
                    detail: "the iterate is not finite".into(),
                });
            }
            if lhs <= rhs * (1.0 + 1e-12) {
                break (cand, xc);
            }
            l *= 1.5;
            backtracks += 1;
        };
        let diff = &f_new - &f;
        let change = diff.norm_l2();
        let norm = f_new.norm_l2();
        // Restart test ⟨Y_k − F_{k+1}, F_{k+1} − F_k⟩ > 0.
        let mut restart = false;
        if config.restart {
            let mut ip = 0.0;
            for j in 0..d {
                for i in 0..n0 {
                    ip += (yk[(i, j)] - f_new[(i, j)]) * diff[(i, j)];
                }
            }
            restart = ip > 0.0;
        }
        let t_next = if restart {
            restarts += 1;
            1.0
        } else {
            0.5 * (1.0 + (1.0 + 4.0 * t * t).sqrt())
        };
        let beta = if restart { 0.0 } else { (t - 1.0) / t_next };
        yk = &f_new + &diff * faer::Scale(beta);
        xy = &xf_new + (&xf_new - &xf) * faer::Scale(beta);
        f = f_new;
        xf = xf_new;
        t = t_next;
        iterations = k + 1;
        let elapsed = clock.elapsed().as_secs_f64() - paused;
        let cb = Instant::now();
        let control = callback(k, f.as_ref(), elapsed);
        paused += cb.elapsed().as_secs_f64();
        if change <= config.tolerance * norm {
            converged = true;
            break;
        }
        if control == Control::Stop {
            break;
        }
    }
    let seconds = clock.elapsed().as_secs_f64() - paused;
    let objective = problem.objective(f.as_ref())?;
    Ok(FistaResult {
        estimate: f,
        iterations,
        converged,
        objective,
        seconds,
        lipschitz: l,
        restarts,
        backtracks,
    })
}

/// The optimality (KKT) residual of (GL) at `F`, relative to `λ`: with `G = X^T(Y − XF)N`,
/// `max_k ‖G_k − λ F_k/‖F_k‖‖` over non-zero rows and `max_k (‖G_k‖ − λ)_+` over zero rows,
/// divided by `λ`. Zero exactly at the minimiser.
pub fn group_lasso_kkt_residual(
    problem: &GroupLassoProblem<'_>,
    f: MatRef<'_, f64>,
) -> Result<f64> {
    let g = problem.gradient(f)?;
    let lambda = problem.lambda;
    let d = f.ncols();
    let mut worst = 0.0f64;
    for i in 0..f.nrows() {
        let norm = (0..d).map(|j| f[(i, j)].powi(2)).sum::<f64>().sqrt();
        let r = if norm > 0.0 {
            (0..d)
                .map(|j| (-g[(i, j)] - lambda * f[(i, j)] / norm).powi(2))
                .sum::<f64>()
                .sqrt()
        } else {
            let gn = (0..d).map(|j| g[(i, j)].powi(2)).sum::<f64>().sqrt();
            (gn - lambda).max(0.0)
        };
        worst = worst.max(r);
    }
    Ok(worst / lambda)
}
