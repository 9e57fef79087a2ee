//! The complex-exponential output of sketched clustering (paper §2.2;
//! `docs/sketched-clustering.md`):
//!
//! ```text
//! y_m = g_m Σ_k α_k exp(i z_mk) + ξ_m,     Re ξ_m, Im ξ_m ~ N(0, v_m) independent,
//! ```
//!
//! the output mapping `φ_1(Z_1, Ξ) = Σ_j α_j e^{√−1 Z_{1,:j}} + Ξ` of the paper's §2.2 with a known
//! per-row gain `g_m` (the characteristic function `exp(−σ²‖w_m‖²/2)` of an isotropic Gaussian
//! cluster of variance `σ²`) and cluster weights `α_k ≥ 0`. Row `m` of `Z_1 = Ω C` holds the
//! phases `z_mk = w_mᵀ c_k` of the `K` centroids at frequency `w_m`, so `d = K`; the observation
//! `Y` is `M x 2` (real and imaginary part of the sketch).
//!
//! Given the forward message `N(r, C)`, `C = Γ^{-1}`, on a row, the negative log-belief is
//!
//! ```text
//! f(z) = |e(z)|² / (2 v) + ½ (z − r) Γ (z − r)ᵀ,     e(z) = y − Σ_k u_k,   u_k = g α_k e^{i z_k}
//! ∂f/∂z_k   = (Re e · Im u_k − Im e · Re u_k) / v + [(z − r) Γ]_k
//! ∂²f/∂z_j∂z_k = (Re(ū_j u_k) + δ_jk Re(ē u_k)) / v + Γ_jk
//! ```
//!
//! (the Gauss–Newton Hessian drops the `δ_jk Re(ē u_k)` term). The phases wrap, so the belief is
//! multimodal and neither estimator is exact in closed form:
//!
//! * **MAP** ([`Estimator::Map`]): damped Newton from the message mean `r` on `f` with the exact
//!   Hessian ([`super::newton`]), `Σ_i = H_i^{-1}` at the minimiser (spec §0: the implicit function
//!   theorem gives the Jacobian `Γ H^{-1}`). Where `H` is not positive definite (a non-convex
//!   region) Newton takes gradient steps, and at a point where `H` is still not positive definite
//!   the Gauss–Newton Hessian stands in for `Σ_i`; both are counted in a warning of the belief
//!   (and so in the solver's history).
//! * **Approximate MMSE** ([`Estimator::Mmse`]), in the spirit of SHyGAMP (Byrne, Chatalic,
//!   Gribonval and Schniter, 2019): for each `k`, the phase `t = z_k` is integrated exactly by a
//!   one-dimensional quadrature while the rest of the row is treated as Gaussian given `t`:
//!   `z_{−k} | t ~ N(μ(t), D)` (the message's conditional law), and the interference
//!   `S = g Σ_{j≠k} α_j e^{i z_j}` and `z_{−k}` are taken jointly Gaussian with `y` given `t`, with
//!   their exact conditional moments (closed form through the Gaussian characteristic function,
//!   `E e^{i z_j} = e^{i μ_j − D_jj/2}`, and Stein's lemma for `Cov(z_j, e^{i z_l})`). That gives
//!   the weight of `t`, `N(t; r_k, C_kk) N(y; g α_k e^{it} + E[S|t], v I + Cov[S|t])`, and
//!   `E[z_{−k} | t, y]` by Gaussian conditioning. Surrogate `k` thus provides the posterior mean
//!   and variance of `z_k` and its covariances with the other phases; the estimate takes
//!   `ẑ_k`, `Σ_kk` from surrogate `k` and `Σ_jk` as the average of surrogates `j` and `k`. It is
//!   exact for `K = 1`; for `K = 2` it is compared with brute-force two-dimensional quadrature in
//!   `tests/sketch.rs`. Being an approximation of the posterior, its Jacobian equals `ΓΣ̄` only up
//!   to the approximation error (the conformance suite's tolerance for it says by how much).
//!
//! The quadrature of `t` is a trapezoid rule on a uniform grid over `r_k ± 7 sd`
//! (`sd = √C_kk`) with a spacing of at most `2π/16` (the likelihood is `2π`-periodic in `t`
//! to first order), between [`CexpOptions::min_nodes`] and [`CexpOptions::max_nodes`] nodes;
//! when `max_nodes` binds (very uncertain phases, early iterations) the spacing is coarser and a
//! warning says so.

use super::newton::{minimize, NewtonOptions, NewtonWorkspace, RowObjective};
use super::{Estimator, HessianKind, Rng};
use crate::error::{Error, Result};
use crate::factor::{Factor, MonteCarloSe, OutputChannel, OutputDenoiser, OutputLaw, OutputShape};
use crate::message::{Belief, Message};
use crate::rows::{check_finite, first_non_finite, par_map_rows, shape_str};
use crate::spd::{sym, DMat};
use faer::{Mat, MatRef};
use nalgebra::Cholesky;
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// The largest number of clusters `K` (columns `d`) supported.
pub const MAX_CLUSTERS: usize = 64;

/// Half-width of the MMSE quadrature grid, in standard deviations of the message.
const GRID_HALF_WIDTH: f64 = 7.0;

/// Largest spacing of the MMSE quadrature grid (radians): 16 nodes per period `2π`.
const GRID_SPACING: f64 = std::f64::consts::TAU / 16.0;

/// Options of the complex-exponential output's denoisers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CexpOptions {
    /// Newton options of the MAP denoiser (spec §4.2 defaults).
    pub newton: NewtonOptions,
    /// The curvature of the MAP denoiser's steps and of its `Σ_i = H_i^{-1}`: the exact Hessian
    /// (default; the Jacobian is then `ΓΣ̄`, spec §0) or Gauss–Newton (always positive definite,
    /// so that the extrinsic precision `Σ̄^{-1} − Γ` is too; the Jacobian identity then holds only
    /// where the residual term is small).
    pub hessian: HessianKind,
    /// Fewest nodes of the MMSE quadrature in `t` (default 33).
    pub min_nodes: usize,
    /// Most nodes of the MMSE quadrature in `t` (default 257).
    pub max_nodes: usize,
}

impl Default for CexpOptions {
    fn default() -> Self {
        CexpOptions {
            newton: NewtonOptions::default(),
            hessian: HessianKind::Exact,
            min_nodes: 33,
            max_nodes: 257,
        }
    }
}

impl CexpOptions {
    /// Checks the option values.
    pub fn validate(&self) -> Result<()> {
        self.newton.validate()?;
        if self.min_nodes < 3 || self.max_nodes < self.min_nodes {
            return Err(Error::invalid(
                "cexp quadrature nodes",
                format!(
                    "need 3 <= min_nodes <= max_nodes, got {} and {}",
                    self.min_nodes, self.max_nodes
                ),
            ));
        }
        Ok(())
    }
}

/// The complex-exponential output `y_m = g_m Σ_k α_k e^{i z_mk} + ξ_m` of sketched clustering
/// (paper §2.2), with its MAP and approximate-MMSE denoisers (module documentation).
#[derive(Clone, Debug)]
pub struct CexpOutput {
    /// The observation, `M x 2` (real, imaginary).
    y: Mat<f64>,
    /// `g_m > 0`.
    gains: Vec<f64>,
    /// `α_k ≥ 0` (length `K = d`).
    weights: Vec<f64>,
    /// `v_m > 0`, the noise variance of each real component.
    noise: Vec<f64>,
    estimator: Estimator,
    options: CexpOptions,
}

fn positive_finite(what: &str, v: &[f64], allow_zero: bool) -> Result<()> {
    if let Some((i, x)) = v
        .iter()
        .enumerate()
        .find(|(_, x)| !(x.is_finite() && (**x > 0.0 || (allow_zero && **x == 0.0))))
    {
        return Err(Error::invalid(
            what,
            format!(
                "entry {i} is {x}; every entry must be {} and finite",
                if allow_zero {
                    "non-negative"
                } else {
                    "positive"
                }
            ),
        ));
    }
    Ok(())
}

impl CexpOutput {
    /// The channel for the observation `y` (`M x 2`, finite), the gains `g` (length `M`,
    /// positive), the cluster weights `α` (length `K ≥ 1`, non-negative, not all zero) and the
    /// per-row noise variances `v` (length `M`, positive; the variance of each of the real and
    /// imaginary parts).
    pub fn new(
        y: Mat<f64>,
        gains: Vec<f64>,
        weights: Vec<f64>,
        noise: Vec<f64>,
        estimator: Estimator,
        options: CexpOptions,
    ) -> Result<Self> {
        let m = y.nrows();
        if m == 0 || y.ncols() != 2 {
            return Err(Error::shape(
                "observation y of the complex-exponential output",
                "M x 2 with M >= 1 (real and imaginary part of the sketch)",
                shape_str(y.as_ref()),
            ));
        }
        check_finite(
            "observation y of the complex-exponential output",
            y.as_ref(),
        )?;
        let k = weights.len();
        if k == 0 || k > MAX_CLUSTERS {
            return Err(Error::invalid(
                "cluster weights α",
                format!("need between 1 and {MAX_CLUSTERS} clusters, got {k}"),
            ));
        }
        positive_finite("cluster weights α", &weights, true)?;
        if weights.iter().all(|w| *w == 0.0) {
            return Err(Error::invalid("cluster weights α", "all weights are zero"));
        }
        for (what, v) in [("gains g", &gains), ("noise variances v", &noise)] {
            if v.len() != m {
                return Err(Error::shape(
                    format!("{what} of the complex-exponential output"),
                    format!("a vector of length M = {m}"),
                    format!("a vector of length {}", v.len()),
                ));
            }
            positive_finite(what, v, false)?;
        }
        options.validate()?;
        Ok(CexpOutput {
            y,
            gains,
            weights,
            noise,
            estimator,
            options,
        })
    }

    /// The gains `g_m`.
    pub fn gains(&self) -> &[f64] {
        &self.gains
    }
    /// The cluster weights `α`.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }
    /// The noise variances `v_m` (per real component).
    pub fn noise(&self) -> &[f64] {
        &self.noise
    }
    /// MAP or approximate MMSE.
    pub fn estimator(&self) -> Estimator {
        self.estimator
    }
    /// The denoisers' options.
    pub fn options(&self) -> &CexpOptions {
        &self.options
    }

    /// The same channel restricted to rows `rows` of its observation (in that order).
    pub fn select_rows(&self, rows: &[usize]) -> Result<Self> {
        let m = self.y.nrows();
        if let Some(&i) = rows.iter().find(|&&i| i >= m) {
            return Err(Error::invalid(
                "row selection",
                format!("row {i} is out of range for M = {m}"),
            ));
        }
        CexpOutput::new(
            Mat::from_fn(rows.len(), 2, |i, j| self.y[(rows[i], j)]),
            rows.iter().map(|&i| self.gains[i]).collect(),
            self.weights.clone(),
            rows.iter().map(|&i| self.noise[i]).collect(),
            self.estimator,
            self.options,
        )
    }

    /// The same channel with other cluster weights (checked as in [`CexpOutput::new`]).
    pub fn with_weights(&self, weights: Vec<f64>) -> Result<Self> {
        CexpOutput::new(
            self.y.clone(),
            self.gains.clone(),
            weights,
            self.noise.clone(),
            self.estimator,
            self.options,
        )
    }

    /// The same channel with other noise variances.
    pub fn with_noise(&self, noise: Vec<f64>) -> Result<Self> {
        CexpOutput::new(
            self.y.clone(),
            self.gains.clone(),
            self.weights.clone(),
            noise,
            self.estimator,
            self.options,
        )
    }

    /// The same channel with another estimator.
    pub fn with_estimator(&self, estimator: Estimator) -> Self {
        CexpOutput {
            estimator,
            ..self.clone()
        }
    }

    /// The noiseless output `g_m Σ_k α_k e^{i z_mk}` for every row of `z` (`n x K`, `n` = the
    /// channel's rows), as `n x 2`.
    pub fn mean_output(&self, z: MatRef<'_, f64>) -> Result<Mat<f64>> {
        let k = self.weights.len();
        if z.ncols() != k || z.nrows() != self.y.nrows() {
            return Err(Error::shape(
                "Z_1 for the complex-exponential output",
                format!("{} x {k}", self.y.nrows()),
                shape_str(z),
            ));
        }
        Ok(Mat::from_fn(z.nrows(), 2, |i, c| {
            let s: f64 = (0..k)
                .map(|j| {
                    let (s, co) = z[(i, j)].sin_cos();
                    self.weights[j] * if c == 0 { co } else { s }
                })
                .sum();
            self.gains[i] * s
        }))
    }

    /// The channel with a fresh observation drawn from the model for every row of `z` (`n x K`,
    /// any `n`; the gains and noise variances are recycled cyclically when `n` differs from the
    /// channel's rows).
    pub fn draw(&self, z: MatRef<'_, f64>, rng: &mut Rng) -> Result<CexpOutput> {
        let k = self.weights.len();
        if z.ncols() != k {
            return Err(Error::shape(
                "Z_1 for the complex-exponential output",
                format!("n x {k}"),
                shape_str(z),
            ));
        }
        check_finite("Z_1 for the complex-exponential output", z)?;
        let n = z.nrows();
        if n == 0 {
            return Err(Error::invalid(
                "Z_1 for the complex-exponential output",
                "must have at least one row",
            ));
        }
        let m = self.y.nrows();
        let gains: Vec<f64> = (0..n).map(|i| self.gains[i % m]).collect();
        let noise: Vec<f64> = (0..n).map(|i| self.noise[i % m]).collect();
        let mut y = Mat::<f64>::zeros(n, 2);
        for i in 0..n {
            let (mut re, mut im) = (0.0, 0.0);
            for j in 0..k {
                let (s, c) = z[(i, j)].sin_cos();
                re += self.weights[j] * c;
                im += self.weights[j] * s;
            }
            let sd = noise[i].sqrt();
            let (a, b): (f64, f64) = (
                rng.sample(rand_distr::StandardNormal),
                rng.sample(rand_distr::StandardNormal),
            );
            y[(i, 0)] = gains[i] * re + sd * a;
            y[(i, 1)] = gains[i] * im + sd * b;
        }
        CexpOutput::new(
            y,
            gains,
            self.weights.clone(),
            noise,
            self.estimator,
            self.options,
        )
    }

    /// The number of quadrature nodes of the MMSE denoiser for a message variance `var` of one
    /// phase, and whether `max_nodes` bound.
    fn nodes_for(&self, var: f64) -> (usize, bool) {
        let sd = var.max(0.0).sqrt();
        let wanted = (2.0 * GRID_HALF_WIDTH * sd / GRID_SPACING).ceil() as usize + 1;
        let n = wanted.clamp(self.options.min_nodes, self.options.max_nodes);
        // An odd count puts a node on the message mean.
        let n = if n.is_multiple_of(2) { n + 1 } else { n };
        (n, wanted > self.options.max_nodes)
    }

    fn map_denoise(&self, plus: &Message) -> Result<Belief> {
        let (m, k) = (self.y.nrows(), self.weights.len());
        let gamma = plus.precision.matrix();
        let r = plus.mean.as_ref();
        // Accumulator: Σ_i H_i^{-1} (k*k), rows with gradient fallbacks, rows whose final
        // Hessian was not positive definite, rows that did not converge.
        let out = par_map_rows(m, k, k * k + 3, |i, z, acc| {
            let obj = RowFit {
                y: (self.y[(i, 0)], self.y[(i, 1)]),
                g: self.gains[i],
                v: self.noise[i],
                alpha: &self.weights,
                r: (0..k).map(|j| r[(i, j)]).collect(),
                gamma,
            };
            z.copy_from_slice(&obj.r);
            let mut ws = NewtonWorkspace::new(k);
            let scale = 1.0 + obj.r.iter().map(|x| x * x).sum::<f64>().sqrt();
            let rep = minimize(
                &obj,
                z,
                self.options.hessian,
                &self.options.newton,
                scale,
                &mut ws,
            )?;
            if rep.fallback_steps > 0 {
                acc[k * k] += 1.0;
            }
            if !rep.converged {
                acc[k * k + 2] += 1.0;
            }
            let cov = match Cholesky::new(ws.hessian().clone()) {
                Some(ch) => ch.inverse(),
                None => {
                    acc[k * k + 1] += 1.0;
                    let mut h = DMat::zeros(k, k);
                    let mut g = vec![0.0; k];
                    obj.derivatives(z, HessianKind::GaussNewton, &mut g, &mut h);
                    Cholesky::new(h)
                        .ok_or_else(|| Error::Numerical {
                            what: "complex-exponential MAP denoiser".into(),
                            detail: format!("the Gauss–Newton Hessian of row {i} is singular"),
                        })?
                        .inverse()
                }
            };
            for (a, c) in acc[..k * k].iter_mut().zip(cov.iter()) {
                *a += c;
            }
            Ok(())
        })?;
        let nf = m as f64;
        let cov = DMat::from_fn(k, k, |a, b| out.acc[a + b * k] / nf);
        let mut belief = Belief::new(out.rows, sym(&cov));
        let (fallback, indefinite, unconverged) = (
            out.acc[k * k] as usize,
            out.acc[k * k + 1] as usize,
            out.acc[k * k + 2] as usize,
        );
        if fallback > 0 || indefinite > 0 {
            belief = belief.with_warning(format!(
                "complex-exponential MAP: the row objective was not convex along the Newton path in {fallback} of {m} rows (gradient steps taken); the Hessian at the solution was not positive definite in {indefinite} rows (Gauss–Newton curvature used for Σ)"
            ));
        }
        if unconverged > 0 {
            belief = belief.with_warning(format!(
                "complex-exponential MAP: Newton did not reach its gradient tolerance in {unconverged} of {m} rows"
            ));
        }
        Ok(belief)
    }

    fn mmse_denoise(&self, plus: &Message) -> Result<Belief> {
        let (m, k) = (self.y.nrows(), self.weights.len());
        let c = plus.precision.inverse();
        let surrogates = Surrogates::new(&c, &self.weights)?;
        let mut coarse = false;
        let nodes: Vec<usize> = (0..k)
            .map(|j| {
                let (n, bound) = self.nodes_for(c[(j, j)]);
                coarse |= bound;
                n
            })
            .collect();
        let r = plus.mean.as_ref();
        let out = par_map_rows(m, k, k * k, |i, z, acc| {
            let row: Vec<f64> = (0..k).map(|j| r[(i, j)]).collect();
            let cov = surrogates.row(
                &row,
                (self.y[(i, 0)], self.y[(i, 1)]),
                self.gains[i],
                self.noise[i],
                &nodes,
                z,
            );
            for (a, x) in acc.iter_mut().zip(cov.iter()) {
                *a += x;
            }
            Ok(())
        })?;
        let nf = m as f64;
        let cov = DMat::from_fn(k, k, |a, b| out.acc[a + b * k] / nf);
        let mut belief = Belief::new(out.rows, sym(&cov));
        if coarse {
            belief = belief.with_warning(format!(
                "complex-exponential MMSE: the phase quadrature used max_nodes = {} nodes, coarser than 16 per period (message standard deviation up to {:.3e} rad)",
                self.options.max_nodes,
                (0..k).map(|j| c[(j, j)].sqrt()).fold(0.0, f64::max)
            ));
        }
        Ok(belief)
    }
}

/// The MAP row objective `f(z)` of the module documentation.
struct RowFit<'a> {
    y: (f64, f64),
    g: f64,
    v: f64,
    alpha: &'a [f64],
    r: Vec<f64>,
    gamma: &'a DMat,
}

impl RowFit<'_> {
    /// The residual `e = y − g Σ α_k e^{i z_k}`.
    fn residual(&self, z: &[f64]) -> (f64, f64) {
        let (mut re, mut im) = (self.y.0, self.y.1);
        for (a, zk) in self.alpha.iter().zip(z) {
            let (s, c) = zk.sin_cos();
            re -= self.g * a * c;
            im -= self.g * a * s;
        }
        (re, im)
    }
    fn prior(&self, z: &[f64]) -> f64 {
        let k = z.len();
        let mut q = 0.0;
        for a in 0..k {
            let da = z[a] - self.r[a];
            for b in 0..k {
                q += da * self.gamma[(a, b)] * (z[b] - self.r[b]);
            }
        }
        0.5 * q
    }
}

impl RowObjective for RowFit<'_> {
    fn dim(&self) -> usize {
        self.alpha.len()
    }
    fn value(&self, z: &[f64]) -> f64 {
        let (er, ei) = self.residual(z);
        (er * er + ei * ei) / (2.0 * self.v) + self.prior(z)
    }
    fn derivatives(&self, z: &[f64], kind: HessianKind, grad: &mut [f64], hess: &mut DMat) -> f64 {
        let k = z.len();
        let (er, ei) = self.residual(z);
        let u: Vec<(f64, f64)> = self
            .alpha
            .iter()
            .zip(z)
            .map(|(a, zk)| {
                let (s, c) = zk.sin_cos();
                (self.g * a * c, self.g * a * s)
            })
            .collect();
        let iv = 1.0 / self.v;
        // The prior term ½ (z − r)ᵀ Γ (z − r) from the gradient's Γ (z − r).
        let mut prior = 0.0;
        for a in 0..k {
            let mut gz = 0.0;
            for b in 0..k {
                gz += self.gamma[(a, b)] * (z[b] - self.r[b]);
                let mut h = (u[a].0 * u[b].0 + u[a].1 * u[b].1) * iv + self.gamma[(a, b)];
                if a == b && kind == HessianKind::Exact {
                    h += (er * u[a].0 + ei * u[a].1) * iv;
                }
                hess[(a, b)] = h;
            }
            prior += 0.5 * (z[a] - self.r[a]) * gz;
            grad[a] = (er * u[a].1 - ei * u[a].0) * iv + gz;
        }
        (er * er + ei * ei) * iv * 0.5 + prior
    }
}

/// The `t`-independent pieces of the `K` surrogates of the approximate MMSE denoiser (module
/// documentation) for one message covariance `C`.
struct Surrogates {
    k: usize,
    alpha: Vec<f64>,
    /// Per `k`: `C_kk`, `β_j = C_jk / C_kk`, `D = C_{−k,−k} − C_{−k,k}C_{k,−k}/C_kk` and its
    /// element-wise `e^{D} − 1`, `e^{−D} − 1` (indices `j, l ≠ k` kept in `0..K`, row `k` and
    /// column `k` zero).
    parts: Vec<SurrogatePart>,
}

struct SurrogatePart {
    var: f64,
    beta: Vec<f64>,
    d: DMat,
    exp_plus: DMat,
    exp_minus: DMat,
}

impl Surrogates {
    fn new(c: &DMat, alpha: &[f64]) -> Result<Self> {
        let k = alpha.len();
        let mut parts = Vec::with_capacity(k);
        for kk in 0..k {
            let var = c[(kk, kk)];
            if !(var > 0.0 && var.is_finite()) {
                return Err(Error::Numerical {
                    what: "complex-exponential MMSE denoiser".into(),
                    detail: format!("message variance of phase {kk} is {var}"),
                });
            }
            let beta: Vec<f64> = (0..k)
                .map(|j| if j == kk { 0.0 } else { c[(j, kk)] / var })
                .collect();
            let d = DMat::from_fn(k, k, |a, b| {
                if a == kk || b == kk {
                    0.0
                } else {
                    c[(a, b)] - c[(a, kk)] * c[(kk, b)] / var
                }
            });
            let exp_plus = d.map(|x| x.exp_m1());
            let exp_minus = d.map(|x| (-x).exp_m1());
            parts.push(SurrogatePart {
                var,
                beta,
                d,
                exp_plus,
                exp_minus,
            });
        }
        Ok(Surrogates {
            k,
            alpha: alpha.to_vec(),
            parts,
        })
    }

    /// One row: writes `ẑ` into `z` and returns the row's posterior covariance (`K x K`).
    fn row(
        &self,
        r: &[f64],
        y: (f64, f64),
        g: f64,
        v: f64,
        nodes: &[usize],
        z: &mut [f64],
    ) -> DMat {
        let k = self.k;
        // cross[kk][j] = Cov^{(kk)}(z_kk, z_j); var[kk] = Var^{(kk)}(z_kk).
        let mut cross = DMat::zeros(k, k);
        let mut var = vec![0.0; k];
        // Per-node scratch: log weight, t, E[z_j | t, y].
        let mut logw = Vec::new();
        let mut ts = Vec::new();
        let mut ez = Vec::new();
        let mut phi = vec![(0.0, 0.0); k];
        let mut a = vec![(0.0, 0.0); k];
        for kk in 0..k {
            let part = &self.parts[kk];
            let n = nodes[kk];
            let sd = part.var.sqrt();
            let h = 2.0 * GRID_HALF_WIDTH / (n - 1) as f64;
            logw.clear();
            ts.clear();
            ez.clear();
            for q in 0..n {
                let xi = -GRID_HALF_WIDTH + h * q as f64;
                let t = r[kk] + sd * xi;
                // μ_j(t), φ_j = E[e^{i z_j} | t], a_j = α_j φ_j.
                for j in 0..k {
                    if j == kk {
                        phi[j] = (0.0, 0.0);
                        a[j] = (0.0, 0.0);
                        continue;
                    }
                    let mu = r[j] + part.beta[j] * (t - r[kk]);
                    let damp = (-0.5 * part.d[(j, j)]).exp();
                    let (s, c) = mu.sin_cos();
                    phi[j] = (damp * c, damp * s);
                    a[j] = (self.alpha[j] * phi[j].0, self.alpha[j] * phi[j].1);
                }
                // E[S|t] = g Σ a_j; P = g² Σ a_j (e^D − 1)_jl ā_l; Q = g² Σ a_j (e^{−D} − 1)_jl a_l;
                // c_j = g Σ_l D_jl a_l (Cov(z_j, S | t) = i c_j).
                let (mut ms_re, mut ms_im) = (0.0, 0.0);
                let (mut p, mut q_re, mut q_im) = (0.0, 0.0, 0.0);
                for j in 0..k {
                    ms_re += a[j].0;
                    ms_im += a[j].1;
                    let (mut bp_re, mut bp_im, mut bm_re, mut bm_im) = (0.0, 0.0, 0.0, 0.0);
                    for l in 0..k {
                        let (ep, em) = (part.exp_plus[(j, l)], part.exp_minus[(j, l)]);
                        bp_re += ep * a[l].0;
                        bp_im += ep * a[l].1;
                        bm_re += em * a[l].0;
                        bm_im += em * a[l].1;
                    }
                    // a_j · conj(b⁺_j) (real part), a_j · b⁻_j.
                    p += a[j].0 * bp_re + a[j].1 * bp_im;
                    q_re += a[j].0 * bm_re - a[j].1 * bm_im;
                    q_im += a[j].0 * bm_im + a[j].1 * bm_re;
                }
                let g2 = g * g;
                let (p, q_re, q_im) = (g2 * p, g2 * q_re, g2 * q_im);
                // Σ_y = v I + Cov[(Re S, Im S) | t].
                let s11 = v + 0.5 * (p + q_re).max(0.0);
                let s22 = v + 0.5 * (p - q_re).max(0.0);
                let s12 = 0.5 * q_im;
                let det = (s11 * s22 - s12 * s12).max(v * v);
                let (c_t, s_t) = (t.cos(), t.sin());
                let res_re = y.0 - g * (self.alpha[kk] * c_t + ms_re);
                let res_im = y.1 - g * (self.alpha[kk] * s_t + ms_im);
                // ρ = Σ_y^{-1} res.
                let rho_re = (s22 * res_re - s12 * res_im) / det;
                let rho_im = (s11 * res_im - s12 * res_re) / det;
                let loglik = -0.5 * (res_re * rho_re + res_im * rho_im) - 0.5 * det.ln();
                logw.push(-0.5 * xi * xi + loglik);
                ts.push(t);
                // E[z_j | t, y] = μ_j + X_j ρ, X_j = (−Im c_j, Re c_j).
                for j in 0..k {
                    if j == kk {
                        ez.push(t);
                        continue;
                    }
                    let mu = r[j] + part.beta[j] * (t - r[kk]);
                    let (mut c_re, mut c_im) = (0.0, 0.0);
                    for l in 0..k {
                        c_re += part.d[(j, l)] * a[l].0;
                        c_im += part.d[(j, l)] * a[l].1;
                    }
                    ez.push(mu + g * (-c_im * rho_re + c_re * rho_im));
                }
            }
            // Normalised trapezoid weights (the end nodes carry half weight).
            let max = logw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut total = 0.0;
            for (q, w) in logw.iter_mut().enumerate() {
                let end = if q == 0 || q == n - 1 { 0.5 } else { 1.0 };
                *w = end * (*w - max).exp();
                total += *w;
            }
            let mut mean = vec![0.0; k];
            for (q, w) in logw.iter().enumerate() {
                for j in 0..k {
                    mean[j] += w * ez[q * k + j];
                }
            }
            for x in mean.iter_mut() {
                *x /= total;
            }
            let mut row_cross = vec![0.0; k];
            for (q, w) in logw.iter().enumerate() {
                let dt = ts[q] - mean[kk];
                for j in 0..k {
                    row_cross[j] += w * dt * (ez[q * k + j] - mean[j]);
                }
            }
            for j in 0..k {
                cross[(kk, j)] = row_cross[j] / total;
            }
            var[kk] = cross[(kk, kk)];
            z[kk] = mean[kk];
        }
        DMat::from_fn(k, k, |p, q| {
            if p == q {
                var[p]
            } else {
                0.5 * (cross[(p, q)] + cross[(q, p)])
            }
        })
    }
}

impl Factor for CexpOutput {
    fn describe(&self) -> String {
        format!(
            "complex-exponential (sketched clustering) output {} x 2 ({} clusters, {})",
            self.y.nrows(),
            self.weights.len(),
            match self.estimator {
                Estimator::Mmse => "approximate MMSE",
                Estimator::Map => "MAP",
            }
        )
    }
    fn dim(&self) -> usize {
        self.weights.len()
    }
}

impl OutputShape for CexpOutput {
    fn rows(&self) -> usize {
        self.y.nrows()
    }
}

impl OutputDenoiser for CexpOutput {
    fn observation(&self) -> MatRef<'_, f64> {
        self.y.as_ref()
    }

    /// `G⁻_L` (module documentation): MAP by Newton, or the SHyGAMP-style approximate MMSE.
    fn denoise(&self, plus: &Message) -> Result<Belief> {
        let (m, k) = (self.y.nrows(), self.weights.len());
        plus.check(
            "forward message R⁺ into the complex-exponential output",
            m,
            k,
        )?;
        check_finite(
            "forward message R⁺ into the complex-exponential output",
            plus.mean.as_ref(),
        )?;
        let belief = match self.estimator {
            Estimator::Map => self.map_denoise(plus)?,
            Estimator::Mmse => self.mmse_denoise(plus)?,
        };
        if let Some((i, j, x)) = first_non_finite(belief.mean.as_ref()) {
            return Err(Error::Numerical {
                what: "complex-exponential denoiser".into(),
                detail: format!("estimate entry ({i}, {j}) is {x}"),
            });
        }
        Ok(belief)
    }
}

impl OutputLaw for CexpOutput {
    /// Draws `y_m = g_m Σ_k α_k e^{i z_mk} + ξ_m` for every row of `z`.
    fn resample(&self, z: MatRef<'_, f64>, rng: &mut Rng) -> Result<Box<dyn OutputChannel>> {
        Ok(Box::new(self.draw(z, rng)?))
    }
}

/// No closed form: the Monte-Carlo SE step over this factor's sampler and denoiser.
impl MonteCarloSe for CexpOutput {}

/// The row objective's value, gradient and exact Hessian (for tests of the MAP denoiser): the
/// negative log-belief `f(z)` of the module documentation for one row with observation `y`,
/// gain `g`, noise variance `v`, weights `α` and message `(r, Γ)`.
pub fn row_objective(
    z: &[f64],
    y: (f64, f64),
    g: f64,
    v: f64,
    alpha: &[f64],
    r: &[f64],
    gamma: &DMat,
) -> (f64, Vec<f64>, DMat) {
    let k = alpha.len();
    let obj = RowFit {
        y,
        g,
        v,
        alpha,
        r: r.to_vec(),
        gamma,
    };
    let mut grad = vec![0.0; k];
    let mut hess = DMat::zeros(k, k);
    let f = obj.derivatives(z, HessianKind::Exact, &mut grad, &mut hess);
    (f, grad, hess)
}
