//! The probit output (vampyre's `BinaryQuantEst` with Gaussian pre-activation noise):
//! `y_ij = sign(z_ij + w_ij)`, `w_ij ~ N(0, σ²)` i.i.d., so that `P(y_ij | z_ij) = Φ(y_ij z_ij / σ)`
//! (`docs/probit.md`).
//!
//! `Z_{L−1}` is `n x d`, the channel acts entry by entry, and `Y ∈ {−1, +1}^{n x d}`. Given the
//! forward message `N(r, C)`, `C = Γ^{-1}`, on a row, the belief is
//!
//! ```text
//! b(z) ∝ N(z; r, C) Π_j Φ(y_j z_j / σ)                                             (P.1)
//! ```
//!
//! which is log-concave (`log Φ` is concave), so its mode is unique. The messages carry a full
//! `d x d` precision, so the `d` coordinates are coupled unless `Γ` is diagonal.
//!
//! **Exact one-dimensional moments (P.2).** Write `u = y(z + w)`; then `y = sign(z + w)` is the
//! event `u > 0`, and `(z, u)` is jointly Gaussian under the message: `u ~ N(y r, s²)`,
//! `s² = c + σ²`, `Cov(z, u) = y c`. Conditioning on `u > 0` (a truncated normal, moments `ū`,
//! `v_u` from [`super::relu::half_line_parts`], stable in both tails) gives
//!
//! ```text
//! E[z | y] = r + y (c/s²)(ū − y r),     Var[z | y] = c σ²/s² + (c/s²)² v_u          (P.2)
//! ```
//!
//! the textbook `r + y c λ(t)/s`, `c − c² λ(t)(t + λ(t))/s²` (`t = y r/s`, `λ = φ/Φ` the inverse
//! Mills ratio) without its cancellation for large `|t|`.
//!
//! **MMSE.**
//! * `d = 1`, or `Γ` diagonal (any `d`): the belief factorises over the coordinates and (P.2)
//!   per coordinate is the exact posterior mean and covariance.
//! * `Γ` not diagonal, `2 ≤ d ≤` [`MAX_QUADRATURE_DIM`]: the Gaussian `N(μ, V)` of expectation
//!   propagation (EP) on (P.1), with one Gaussian site per coordinate updated by moment matching
//!   with (P.2) on the cavity, [`EP_SWEEPS`] sweeps (a fixed number, so that the result is a
//!   smooth function of `r`), is the frame of a tensor Gauss–Hermite rule
//!   ([`super::quadrature::frame_moments`], `v_k = μ + ζ_k Cᵀ`, `C Cᵀ = V`) that integrates
//!   (P.1) itself: the returned mean and covariance are those of the exact belief up to the
//!   quadrature error, not those of EP. Nodes per dimension: 32 (`d = 2`), 14 (`d = 3`), 8
//!   (`d = 4`). Measured against brute-force 2-D quadrature (`tests/probit.rs`): `≤ 1e-9` for
//!   `σ` comparable to the message's standard deviation, up to `6e-3` of the posterior sd at
//!   `σ ≈ 0.12 × (message sd)` (the belief then has a near-edge, which a Gauss–Hermite rule
//!   resolves slowly).
//! * `Γ` not diagonal, `d >` [`MAX_QUADRATURE_DIM`]: the EP Gaussian's mean and covariance
//!   (an approximation; EP is exact for `d = 1` and for diagonal `Γ`).
//!
//! **MAP.** The minimiser of `f(z) = ½(z − r)Γ(z − r)ᵀ − Σ_j log Φ(y_j z_j/σ)`, with
//!
//! ```text
//! ∇f = (z − r)Γ − (y_j λ(x_j)/σ)_j,   H = Γ + diag(κ(x_j)/σ²),   x_j = y_j z_j/σ,
//! κ(x) = λ(x)(x + λ(x)) ∈ (0, 1)                                                    (P.3)
//! ```
//!
//! `H` is positive definite everywhere. Diagonal `Γ` (and `d = 1`): a safeguarded scalar Newton
//! iteration per coordinate on the bracket `[r, r + y λ(y r/σ)/(σ γ)]`; otherwise damped Newton
//! ([`super::newton`]) from `r`. `Σ_i = H^{-1}` at the minimiser (spec §0, `J = Γ H^{-1}`).
//!
//! **SE.** No closed form here: the Monte-Carlo step over the channel's sampler and denoiser
//! ([`crate::factor::MonteCarloSe`]).

use super::newton::{self, HessianKind, NewtonOptions, NewtonWorkspace, RowObjective};
use super::quadrature::{self, Moments, PointSet};
use super::relu::{half_line_parts, log_ndtr};
use super::{Estimator, Rng};
use crate::error::{Error, Result};
use crate::factor::{Factor, MonteCarloSe, OutputChannel, OutputDenoiser, OutputLaw, OutputShape};
use crate::message::{Belief, Message};
use crate::rows::{check_finite, par_map_rows, read_row, shape_str};
use crate::spd::{sym, DMat, Spd};
use faer::{Mat, MatRef};
use std::sync::Arc;

/// The largest `d` of a probit output (per-row work is on the stack).
pub const MAX_PROBIT_DIM: usize = 16;

/// The largest `d` for which the MMSE denoiser integrates the belief by quadrature when `Γ` is
/// not diagonal; beyond it the EP approximation is returned.
pub const MAX_QUADRATURE_DIM: usize = 4;

/// The number of expectation-propagation sweeps over the `d` sites (fixed, for smoothness).
pub const EP_SWEEPS: usize = 12;

const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// Gauss–Hermite nodes per dimension of the MMSE quadrature for dimension `d`.
fn gh_nodes(d: usize) -> usize {
    match d {
        0..=2 => 32,
        3 => 14,
        _ => 8,
    }
}

/// The inverse Mills ratio `λ(x) = φ(x)/Φ(x)` and `κ(x) = λ(x)(x + λ(x)) = −(log Φ)''(x)`,
/// accurate in both tails (for `x < −5` both come from the truncated-normal moments of
/// [`half_line_parts`], which use a continued fraction there).
pub fn mills(x: f64) -> (f64, f64) {
    if x < -5.0 {
        // u ~ N(x, 1) given u > 0: E = x + λ, Var = 1 − κ.
        let (_, _, e, v) = half_line_parts(x, 1.0);
        (e - x, 1.0 - v)
    } else {
        let (_, _, e, _) = half_line_parts(x, 1.0);
        let lambda = if x < 0.0 {
            e - x
        } else {
            // Φ(x) close to 1: λ = φ(x)/Φ(x) directly.
            let t = x * std::f64::consts::FRAC_1_SQRT_2;
            let phi_cdf = 1.0 - 0.5 * (-t * t).exp() * super::relu::erfcx(t);
            INV_SQRT_2PI * (-0.5 * x * x).exp() / phi_cdf
        };
        (lambda, lambda * (x + lambda))
    }
}

/// The exact posterior mean and variance (P.2) of `z` under `N(z; r, c) Φ(y z/σ)`, and the log
/// of its normaliser `log P(y | message) = log Φ(y r / s)`, `s² = c + σ²`.
pub fn scalar_posterior(r: f64, c: f64, y: f64, noise_variance: f64) -> (f64, f64, f64) {
    let s2 = c + noise_variance;
    let s = s2.sqrt();
    let mu = y * r;
    let (l, mass, ubar, vu) = half_line_parts(mu, s);
    let k = c / s2;
    let mean = r + y * k * (ubar - mu);
    let var = c * noise_variance / s2 + k * k * vu;
    (mean, var, l + mass.ln())
}

/// The scalar MAP `argmin_z ½γ(z − r)² − log Φ(y z/σ)` and the curvature `γ + κ(y ẑ/σ)/σ²`
/// there (P.3), by Newton's method safeguarded by bisection on a bracket of the root of the
/// (increasing) derivative.
pub fn scalar_map(r: f64, gamma: f64, y: f64, sigma: f64) -> (f64, f64) {
    let deriv = |z: f64| -> (f64, f64) {
        let x = y * z / sigma;
        let (l, k) = mills(x);
        (gamma * (z - r) - y * l / sigma, gamma + k / (sigma * sigma))
    };
    // f'(r) = −y λ(y r/σ)/σ has the sign of −y; f'(r + y λ(y r/σ)/(σγ)) has the sign of y.
    let (l0, _) = mills(y * r / sigma);
    let far = r + y * l0 / (sigma * gamma);
    let (mut lo, mut hi) = if y > 0.0 { (r, far) } else { (far, r) };
    let mut z = r;
    for _ in 0..200 {
        let (g, h) = deriv(z);
        if g == 0.0 {
            break;
        }
        if g > 0.0 {
            hi = z;
        } else {
            lo = z;
        }
        let mut next = z - g / h;
        if !(next > lo && next < hi) {
            next = 0.5 * (lo + hi);
        }
        let done = (next - z).abs() <= 4.0 * f64::EPSILON * (1.0 + z.abs());
        z = next;
        if done || hi - lo <= 4.0 * f64::EPSILON * (1.0 + z.abs()) {
            break;
        }
    }
    (z, deriv(z).1)
}

/// The probit output channel `y_ij = sign(z_ij + N(0, σ²))` with its MMSE or MAP denoiser
/// (`docs/probit.md`).
#[derive(Clone, Debug)]
pub struct ProbitOutput {
    /// The observations, `n x d`, entries `±1`.
    y: Mat<f64>,
    /// `σ²`.
    noise_variance: f64,
    /// MMSE or MAP.
    estimator: Estimator,
    /// The Gauss–Hermite points of the MMSE quadrature (`2 ≤ d ≤ MAX_QUADRATURE_DIM`).
    points: Option<Arc<PointSet>>,
}

impl ProbitOutput {
    /// A probit channel for the observations `y` (`n x d`, every entry exactly `−1` or `+1`)
    /// with pre-activation noise variance `noise_variance = σ² > 0`.
    pub fn new(y: Mat<f64>, noise_variance: f64, estimator: Estimator) -> Result<Self> {
        let (n, d) = (y.nrows(), y.ncols());
        if n == 0 || d == 0 {
            return Err(Error::invalid(
                "observation y of the probit output",
                format!("must be non-empty, got {}", shape_str(y.as_ref())),
            ));
        }
        if d > MAX_PROBIT_DIM {
            return Err(Error::invalid(
                "d",
                format!("the probit output supports d <= {MAX_PROBIT_DIM}, got {d}"),
            ));
        }
        check_finite("observation y of the probit output", y.as_ref())?;
        for j in 0..d {
            for i in 0..n {
                let v = y[(i, j)];
                if v != 1.0 && v != -1.0 {
                    return Err(Error::invalid(
                        "observation y of the probit output",
                        format!(
                            "entry ({i}, {j}) (0-based row, column) is {v}; entries must be -1 or +1"
                        ),
                    ));
                }
            }
        }
        if !(noise_variance > 0.0 && noise_variance.is_finite()) {
            return Err(Error::invalid(
                "noise_variance",
                format!(
                    "the probit noise variance σ² must be positive and finite, got {noise_variance}"
                ),
            ));
        }
        let points = if (2..=MAX_QUADRATURE_DIM).contains(&d) && estimator == Estimator::Mmse {
            Some(Arc::new(PointSet::gauss_hermite(d, gh_nodes(d))?))
        } else {
            None
        };
        Ok(ProbitOutput {
            y,
            noise_variance,
            estimator,
            points,
        })
    }

    /// The noise variance `σ²`.
    pub fn noise_variance(&self) -> f64 {
        self.noise_variance
    }
    /// MMSE or MAP.
    pub fn estimator(&self) -> Estimator {
        self.estimator
    }
    /// The same channel and data with another estimator.
    pub fn with_estimator(&self, estimator: Estimator) -> Result<Self> {
        ProbitOutput::new(self.y.clone(), self.noise_variance, estimator)
    }

    /// The same channel with a fresh observation `y_ij = sign(z_ij + N(0, σ²))` for every entry
    /// of `z` (`m x d`, any `m ≥ 1`; a zero pre-activation gives `+1`). The teacher.
    pub fn draw(&self, z: MatRef<'_, f64>, rng: &mut Rng) -> Result<ProbitOutput> {
        let d = self.y.ncols();
        if z.ncols() != d || z.nrows() == 0 {
            return Err(Error::shape(
                "Z_{L-1} for the probit output",
                format!("m x {d} with m >= 1"),
                shape_str(z),
            ));
        }
        check_finite("Z_{L-1} for the probit output", z)?;
        let sd = self.noise_variance.sqrt();
        let w = super::standard_normal(z.nrows(), d, rng);
        let y = Mat::from_fn(z.nrows(), d, |i, j| {
            if z[(i, j)] + sd * w[(i, j)] >= 0.0 {
                1.0
            } else {
                -1.0
            }
        });
        Ok(ProbitOutput { y, ..self.clone() })
    }

    /// The estimate of one row and its covariance (row-major), given the message mean `r`,
    /// precision `gamma`, covariance `cov = Γ^{-1}` and whether `Γ` is diagonal.
    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        i: usize,
        r: &[f64],
        gamma: &DMat,
        cov: &DMat,
        diagonal: bool,
        v: &mut [f64],
        sigma: &mut [f64],
    ) -> Result<()> {
        let d = r.len();
        let var = self.noise_variance;
        let sd = var.sqrt();
        sigma.iter_mut().for_each(|x| *x = 0.0);
        if diagonal {
            for j in 0..d {
                let y = self.y[(i, j)];
                match self.estimator {
                    Estimator::Mmse => {
                        let (m, s, _) = scalar_posterior(r[j], cov[(j, j)], y, var);
                        v[j] = m;
                        sigma[j * d + j] = s;
                    }
                    Estimator::Map => {
                        let (m, h) = scalar_map(r[j], gamma[(j, j)], y, sd);
                        v[j] = m;
                        sigma[j * d + j] = 1.0 / h;
                    }
                }
            }
            return Ok(());
        }
        let mut yrow = [0.0; MAX_PROBIT_DIM];
        for (j, yj) in yrow[..d].iter_mut().enumerate() {
            *yj = self.y[(i, j)];
        }
        let obj = ProbitObjective {
            r,
            gamma,
            y: &yrow[..d],
            sigma: sd,
        };
        match self.estimator {
            Estimator::Map => {
                let mut ws = NewtonWorkspace::new(d);
                v.copy_from_slice(r);
                let scale = 1.0 + r.iter().map(|x| x * x).sum::<f64>().sqrt();
                newton::minimize(
                    &obj,
                    v,
                    HessianKind::Exact,
                    &NewtonOptions::default(),
                    scale,
                    &mut ws,
                )?;
                let mut g = vec![0.0; d];
                let mut h = DMat::zeros(d, d);
                obj.derivatives(v, HessianKind::Exact, &mut g, &mut h);
                let inv = Spd::from_symmetric("probit MAP Hessian", sym(&h))?.inverse();
                sigma.copy_from_slice(inv.as_slice());
                Ok(())
            }
            Estimator::Mmse => {
                let (mu, prec) = ep_gaussian(r, gamma, cov, &yrow[..d], var)?;
                let set = match &self.points {
                    Some(set) => set,
                    None => {
                        // d > MAX_QUADRATURE_DIM: the EP approximation.
                        let vcov = Spd::from_symmetric("probit EP precision", prec)?.inverse();
                        v.copy_from_slice(&mu[..d]);
                        sigma.copy_from_slice(vcov.as_slice());
                        return Ok(());
                    }
                };
                let factor =
                    quadrature::precision_frame(&prec, 1.0).ok_or_else(|| Error::Numerical {
                        what: "probit output denoiser".into(),
                        detail: format!("row {i}: the EP precision is not positive definite"),
                    })?;
                let mut m = Moments::new(d);
                let mut scratch = [0.0; MAX_PROBIT_DIM];
                quadrature::frame_moments(
                    set,
                    &mu[..d],
                    &factor,
                    |z| -obj.value(z),
                    &mut scratch[..d],
                    &mut m,
                )?;
                v.copy_from_slice(&m.mean);
                sigma.copy_from_slice(&m.cov);
                Ok(())
            }
        }
    }
}

/// The Gaussian `N(μ, P^{-1})` of expectation propagation on (P.1): one Gaussian site
/// `exp(−½τ_j z_j² + ν_j z_j)` per coordinate, [`EP_SWEEPS`] sweeps of moment matching with
/// (P.2) on the cavity. Returns `μ` and the precision `P = Γ + diag(τ)`.
fn ep_gaussian(
    r: &[f64],
    gamma: &DMat,
    cov: &DMat,
    y: &[f64],
    noise_variance: f64,
) -> Result<([f64; MAX_PROBIT_DIM], DMat)> {
    let d = r.len();
    let mut tau = [0.0; MAX_PROBIT_DIM];
    let mut nu = [0.0; MAX_PROBIT_DIM];
    // Σ = P^{-1} (row-major) and μ = h Σ with h = rΓ + ν.
    let mut s = [0.0; MAX_PROBIT_DIM * MAX_PROBIT_DIM];
    for a in 0..d {
        for b in 0..d {
            s[a * d + b] = cov[(a, b)];
        }
    }
    let mut mu = [0.0; MAX_PROBIT_DIM];
    mu[..d].copy_from_slice(r);
    let mut col = [0.0; MAX_PROBIT_DIM];
    for _ in 0..EP_SWEEPS {
        for j in 0..d {
            let sjj = s[j * d + j];
            let v_cav = 1.0 / (1.0 / sjj - tau[j]);
            let m_cav = v_cav * (mu[j] / sjj - nu[j]);
            if !(v_cav > 0.0 && v_cav.is_finite() && m_cav.is_finite()) {
                continue;
            }
            let (mt, vt, _) = scalar_posterior(m_cav, v_cav, y[j], noise_variance);
            if vt.is_nan() || vt <= 0.0 {
                continue;
            }
            let tau_new = (1.0 / vt - 1.0 / v_cav).max(0.0);
            let nu_new = mt / vt - m_cav / v_cav;
            let dt = tau_new - tau[j];
            let dn = nu_new - nu[j];
            tau[j] = tau_new;
            nu[j] = nu_new;
            // Σ ← Σ − dt Σ_{·j} Σ_{j·} / (1 + dt Σ_jj);  μ ← μ + (dn − dt μ_j)/(1 + dt Σ_jj) Σ_{j·}.
            let denom = 1.0 + dt * sjj;
            for a in 0..d {
                col[a] = s[a * d + j];
            }
            let step = (dn - dt * mu[j]) / denom;
            for a in 0..d {
                mu[a] += step * col[a];
                for b in 0..d {
                    s[a * d + b] -= dt * col[a] * col[b] / denom;
                }
            }
        }
    }
    if mu[..d].iter().any(|x| !x.is_finite()) {
        return Err(Error::Numerical {
            what: "probit output denoiser".into(),
            detail: "the EP mean is not finite".into(),
        });
    }
    let mut prec = gamma.clone();
    for j in 0..d {
        prec[(j, j)] += tau[j];
    }
    Ok((mu, prec))
}

/// The negative log-belief of a row, (P.1) up to a constant.
struct ProbitObjective<'a> {
    r: &'a [f64],
    gamma: &'a DMat,
    y: &'a [f64],
    sigma: f64,
}

impl RowObjective for ProbitObjective<'_> {
    fn dim(&self) -> usize {
        self.r.len()
    }
    fn value(&self, z: &[f64]) -> f64 {
        let d = self.r.len();
        let mut q = 0.0;
        for a in 0..d {
            let da = z[a] - self.r[a];
            let mut s = 0.0;
            for b in 0..d {
                s += self.gamma[(a, b)] * (z[b] - self.r[b]);
            }
            q += da * s;
        }
        let mut f = 0.5 * q;
        for j in 0..d {
            f -= log_ndtr(self.y[j] * z[j] / self.sigma);
        }
        f
    }
    fn derivatives(&self, z: &[f64], _kind: HessianKind, grad: &mut [f64], hess: &mut DMat) -> f64 {
        let d = self.r.len();
        for a in 0..d {
            let mut s = 0.0;
            for b in 0..d {
                s += self.gamma[(a, b)] * (z[b] - self.r[b]);
                hess[(a, b)] = self.gamma[(a, b)];
            }
            grad[a] = s;
        }
        for j in 0..d {
            let x = self.y[j] * z[j] / self.sigma;
            let (l, k) = mills(x);
            grad[j] -= self.y[j] * l / self.sigma;
            hess[(j, j)] += k / (self.sigma * self.sigma);
        }
        self.value(z)
    }
}

impl Factor for ProbitOutput {
    fn describe(&self) -> String {
        format!(
            "probit output {} x {} (σ² = {:.3e}, {})",
            self.y.nrows(),
            self.y.ncols(),
            self.noise_variance,
            match self.estimator {
                Estimator::Mmse => "MMSE",
                Estimator::Map => "MAP",
            }
        )
    }
    fn dim(&self) -> usize {
        self.y.ncols()
    }
}

impl OutputShape for ProbitOutput {
    fn rows(&self) -> usize {
        self.y.nrows()
    }
}

impl OutputDenoiser for ProbitOutput {
    fn observation(&self) -> MatRef<'_, f64> {
        self.y.as_ref()
    }

    /// `G⁻_L`: the MMSE or MAP estimate of every row of `Z_{L−1}` (see the module documentation).
    fn denoise(&self, plus: &Message) -> Result<Belief> {
        let (n, d) = (self.y.nrows(), self.y.ncols());
        plus.check("forward message R⁺ into the probit output", n, d)?;
        check_finite(
            "forward message R⁺ into the probit output",
            plus.mean.as_ref(),
        )?;
        let gamma = plus.precision.matrix();
        let cov = plus.precision.inverse();
        let diagonal = (0..d).all(|a| (0..d).all(|b| a == b || gamma[(a, b)] == 0.0));
        let r = plus.mean.as_ref();
        let out = par_map_rows(n, d, d * d, |i, row, acc| {
            let mut ri = [0.0; MAX_PROBIT_DIM];
            let mut sigma = [0.0; MAX_PROBIT_DIM * MAX_PROBIT_DIM];
            read_row(r, i, &mut ri[..d]);
            self.row(i, &ri[..d], gamma, &cov, diagonal, row, &mut sigma[..d * d])?;
            if row.iter().any(|x| !x.is_finite()) || sigma[..d * d].iter().any(|x| !x.is_finite()) {
                return Err(Error::Numerical {
                    what: "probit output denoiser".into(),
                    detail: format!("row {i}: the estimate or its covariance is not finite"),
                });
            }
            for (a, s) in acc.iter_mut().zip(sigma.iter()) {
                *a += s;
            }
            Ok(())
        })?;
        let nf = n as f64;
        let cov = sym(&DMat::from_fn(d, d, |a, b| out.acc[a * d + b] / nf));
        Ok(Belief::new(out.rows, cov))
    }
}

impl OutputLaw for ProbitOutput {
    /// Draws `y_ij = sign(z_ij + N(0, σ²))` for every entry of `z` (any number of rows).
    fn resample(&self, z: MatRef<'_, f64>, rng: &mut Rng) -> Result<Box<dyn OutputChannel>> {
        Ok(Box::new(self.draw(z, rng)?))
    }
}

/// No closed form: the Monte-Carlo SE step over this factor's sampler and denoiser.
impl MonteCarloSe for ProbitOutput {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mills_matches_its_definition_and_tails() {
        for &x in &[-30.0, -8.0, -5.5, -4.9, -1.0, 0.0, 0.7, 3.0, 9.0] {
            let (l, k) = mills(x);
            if x > -8.0 {
                let direct = INV_SQRT_2PI * (-0.5 * x * x).exp() / log_ndtr(x).exp();
                assert!((l - direct).abs() <= 1e-12 * direct.max(1e-300), "x={x}");
            }
            assert!(k > 0.0 && k < 1.0, "x={x}: κ = {k}");
        }
        // λ(x) ~ −x − 1/x for x → −∞, κ → 1 − 1/x².
        let (l, k) = mills(-30.0);
        assert!((l - (30.0 + 1.0 / 30.0 - 2.0 / 27000.0)).abs() < 1e-6);
        assert!((k - (1.0 - 1.0 / 900.0)).abs() < 1e-5);
    }

    #[test]
    fn scalar_map_solves_the_stationarity_equation() {
        for &(r, g, y, s) in &[
            (0.3, 2.0, 1.0, 0.5),
            (-4.0, 0.1, 1.0, 0.01),
            (5.0, 10.0, -1.0, 1.0),
        ] {
            let (z, h) = scalar_map(r, g, y, s);
            let (l, k) = mills(y * z / s);
            let grad = g * (z - r) - y * l / s;
            assert!(grad.abs() < 1e-9 * (1.0 + g * r.abs() + l / s), "{grad}");
            assert!((h - (g + k / (s * s))).abs() < 1e-12 * h);
        }
    }
}
