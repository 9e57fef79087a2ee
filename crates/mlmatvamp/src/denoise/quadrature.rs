//! Posterior moments of a `d`-dimensional row belief by quadrature (spec §4.3).
//!
//! The target is `q(v) ∝ exp(log_target(v))`, typically `ℓ(v) N(v; r, Γ^{-1})`. All rules here
//! are written in one form: a fixed set of standard points `ζ_k` with log-weights
//! `log ω_k − log ρ(ζ_k)` ([`PointSet`]), mapped into a Gaussian *frame* `v_k = m + ζ_k Cᵀ`
//! (`C Cᵀ` = the frame covariance). Then
//!
//! ```text
//! E_q[g(v)] ≈ Σ_k w_k g(v_k) / Σ_k w_k,     log w_k = log ω_k − log ρ(ζ_k) + log_target(v_k)
//! ```
//!
//! (the Jacobian `|det C|` cancels in the ratio). The three methods of spec §4.3 are:
//!
//! 1. **prior-frame Gauss–Hermite**: tensor-product GH points ([`PointSet::gauss_hermite`]),
//!    frame `m = r`, `C Cᵀ = Γ^{-1}` ([`precision_frame`] of `Γ`);
//! 2. **adaptive (Laplace-centred) GH**: the same points, frame `m = v*` (the MAP),
//!    `C Cᵀ = c² H^{-1}` ([`precision_frame`] of the Hessian `H` at `v*`, scale `c`);
//! 3. **importance sampling**: a fixed, seeded multivariate Student-t point set
//!    ([`PointSet::student_t`]) in the Laplace frame; the effective sample size
//!    `(Σw)²/Σw²` is reported.
//!
//! Weights are accumulated in log space with a running maximum (log-sum-exp), and moments in
//! the centred frame coordinates `ζ`, so there is no cancellation when `‖m‖` is large. The
//! point sets are fixed, so the moments are deterministic, smooth functions of the frame and
//! of the target. They are never differentiated numerically: the posterior covariance is
//! itself the denoiser's `Σ_i` (spec §0).

use crate::error::{Error, Result};
use crate::spd::DMat;
use rand::{RngExt, SeedableRng};
use std::f64::consts::PI;

/// Largest number of nodes of a one-dimensional Gauss–Hermite rule.
pub const MAX_GH_NODES: usize = 256;

/// Largest number of points of a [`PointSet`].
pub const MAX_POINTS: usize = 1 << 22;

/// The probabilists' Gauss–Hermite rule with `n` nodes: `Σ_i w_i f(x_i) ≈ E f(X)`,
/// `X ~ N(0, 1)`, exact for polynomials of degree `≤ 2n − 1`; the weights sum to one.
///
/// Nodes are the eigenvalues of the Jacobi matrix of the orthonormal Hermite polynomials
/// (Golub–Welsch; off-diagonal `√k`), refined by Newton's method on `p_n` using the
/// three-term recurrence `√(k+1) p_{k+1}(x) = x p_k(x) − √k p_{k−1}(x)`; weights are the
/// Christoffel numbers `w_i = 1 / Σ_{k<n} p_k(x_i)²`. Nodes are returned in increasing order,
/// exactly symmetric about 0.
pub fn gauss_hermite(n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    if n == 0 || n > MAX_GH_NODES {
        return Err(Error::invalid(
            "Gauss-Hermite nodes",
            format!("must be in 1..={MAX_GH_NODES}, got {n}"),
        ));
    }
    // Golub–Welsch: eigenvalues of the symmetric tridiagonal Jacobi matrix.
    let jacobi = DMat::from_fn(n, n, |i, j| {
        if i + 1 == j || j + 1 == i {
            (i.max(j) as f64).sqrt()
        } else {
            0.0
        }
    });
    let mut x: Vec<f64> = nalgebra::SymmetricEigen::new(jacobi)
        .eigenvalues
        .iter()
        .copied()
        .collect();
    x.sort_by(|a, b| a.total_cmp(b));
    // Orthonormal Hermite values p_{n-1}(x), p_n(x) and Σ_{k<n} p_k(x)².
    let eval = |x: f64| -> (f64, f64, f64) {
        let (mut pm, mut p, mut s) = (0.0_f64, 1.0_f64, 0.0_f64);
        for k in 0..n {
            s += p * p;
            let next = (x * p - (k as f64).sqrt() * pm) / ((k + 1) as f64).sqrt();
            pm = p;
            p = next;
        }
        (pm, p, s)
    };
    let mut w = vec![0.0; n];
    for (xi, wi) in x.iter_mut().zip(w.iter_mut()) {
        // Newton on p_n, with p_n' = √n p_{n−1}.
        for _ in 0..3 {
            let (pm, p, _) = eval(*xi);
            let dp = (n as f64).sqrt() * pm;
            if dp != 0.0 && dp.is_finite() {
                *xi -= p / dp;
            }
        }
        *wi = 1.0 / eval(*xi).2;
    }
    // Enforce exact symmetry.
    for i in 0..n / 2 {
        let j = n - 1 - i;
        let a = 0.5 * (x[j] - x[i]);
        let b = 0.5 * (w[i] + w[j]);
        x[i] = -a;
        x[j] = a;
        w[i] = b;
        w[j] = b;
    }
    if n % 2 == 1 {
        x[n / 2] = 0.0;
    }
    let total: f64 = w.iter().sum();
    for wi in &mut w {
        *wi /= total;
    }
    Ok((x, w))
}

/// The Gauss–Legendre rule with `n` nodes on `[−1, 1]`: `Σ_i w_i f(x_i) ≈ ∫_{−1}^{1} f`, exact
/// for polynomials of degree `≤ 2n − 1`.
///
/// Nodes from the Jacobi matrix (Golub–Welsch; off-diagonal `k/√(4k²−1)`), refined by Newton's
/// method on `P_n` via `(k+1)P_{k+1} = (2k+1)xP_k − kP_{k−1}`; weights
/// `w_i = 2 / ((1 − x_i²) P_n'(x_i)²)`. Increasing order, exactly symmetric.
pub fn gauss_legendre(n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    if n == 0 || n > MAX_GH_NODES {
        return Err(Error::invalid(
            "Gauss-Legendre nodes",
            format!("must be in 1..={MAX_GH_NODES}, got {n}"),
        ));
    }
    let jacobi = DMat::from_fn(n, n, |i, j| {
        if i + 1 == j || j + 1 == i {
            let k = i.max(j) as f64;
            k / (4.0 * k * k - 1.0).sqrt()
        } else {
            0.0
        }
    });
    let mut x: Vec<f64> = nalgebra::SymmetricEigen::new(jacobi)
        .eigenvalues
        .iter()
        .copied()
        .collect();
    x.sort_by(|a, b| a.total_cmp(b));
    // (P_n(x), P_n'(x)).
    let eval = |x: f64| -> (f64, f64) {
        let (mut pm, mut p) = (0.0_f64, 1.0_f64);
        for k in 0..n {
            let kf = k as f64;
            let next = ((2.0 * kf + 1.0) * x * p - kf * pm) / (kf + 1.0);
            pm = p;
            p = next;
        }
        (p, n as f64 * (x * p - pm) / (x * x - 1.0))
    };
    let mut w = vec![0.0; n];
    for (xi, wi) in x.iter_mut().zip(w.iter_mut()) {
        for _ in 0..3 {
            let (p, dp) = eval(*xi);
            if dp != 0.0 && dp.is_finite() {
                *xi -= p / dp;
            }
        }
        let (_, dp) = eval(*xi);
        *wi = 2.0 / ((1.0 - *xi * *xi) * dp * dp);
    }
    for i in 0..n / 2 {
        let j = n - 1 - i;
        let a = 0.5 * (x[j] - x[i]);
        let b = 0.5 * (w[i] + w[j]);
        x[i] = -a;
        x[j] = a;
        w[i] = b;
        w[j] = b;
    }
    if n % 2 == 1 {
        x[n / 2] = 0.0;
    }
    Ok((x, w))
}

/// How a [`PointSet`] was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointSetKind {
    /// Tensor product of a `nodes`-point probabilists' Gauss–Hermite rule.
    GaussHermite {
        /// Nodes per dimension.
        nodes: usize,
    },
    /// Tensor product of a `nodes`-point Gauss–Legendre rule on `[−1, 1]^d` (reference
    /// density: Lebesgue measure), for integrals over boxes.
    GaussLegendre {
        /// Nodes per dimension.
        nodes: usize,
    },
    /// Seeded multivariate Student-t draws.
    StudentT {
        /// Degrees of freedom `ν`.
        nu: u32,
        /// The seed of the draws.
        seed: u64,
    },
}

/// A fixed set of standard points `ζ_k ∈ R^{1×d}` with log-weights `log ω_k − log ρ(ζ_k)`,
/// where `ρ` is the standard reference density of the rule (standard normal for GH, Lebesgue
/// measure for Gauss–Legendre, standard Student-t for importance sampling): `∫ g(ζ) dζ ≈ Σ_k exp(logw_k) g(ζ_k)`.
#[derive(Clone, Debug)]
pub struct PointSet {
    dim: usize,
    points: Vec<f64>,
    log_weights: Vec<f64>,
    kind: PointSetKind,
}

/// `ln Γ(k/2)` for a positive integer `k` (exact recurrence from `Γ(1) = 1`, `Γ(½) = √π`).
fn ln_gamma_half(k: u32) -> f64 {
    let (mut x, mut acc) = if k.is_multiple_of(2) {
        (1.0, 0.0)
    } else {
        (0.5, 0.5 * PI.ln())
    };
    while x < k as f64 / 2.0 {
        acc += x.ln();
        x += 1.0;
    }
    acc
}

impl PointSet {
    /// The tensor-product Gauss–Hermite rule in `dim` dimensions with `nodes` nodes per
    /// dimension (`nodes^dim` points, at most [`MAX_POINTS`]).
    pub fn gauss_hermite(dim: usize, nodes: usize) -> Result<Self> {
        let (x, w) = gauss_hermite(nodes)?;
        // log ω − log φ_d(ζ), φ_d the standard normal density.
        let log_norm = 0.5 * dim as f64 * (2.0 * PI).ln();
        Self::tensor(dim, &x, &w, |sq| 0.5 * sq + log_norm, "Gauss-Hermite nodes").map(|mut s| {
            s.kind = PointSetKind::GaussHermite { nodes };
            s
        })
    }

    /// The tensor-product Gauss–Legendre rule on `[−1, 1]^dim` with `nodes` nodes per
    /// dimension: with a diagonal frame (centre = box midpoint, factor = half-widths),
    /// [`frame_moments`] integrates over an axis-aligned box.
    pub fn gauss_legendre(dim: usize, nodes: usize) -> Result<Self> {
        let (x, w) = gauss_legendre(nodes)?;
        Self::tensor(dim, &x, &w, |_| 0.0, "Gauss-Legendre nodes").map(|mut s| {
            s.kind = PointSetKind::GaussLegendre { nodes };
            s
        })
    }

    /// Tensor product of a 1-D rule; `neg_log_ref(|ζ|²)` is `−log ρ(ζ)`.
    fn tensor(
        dim: usize,
        x: &[f64],
        w: &[f64],
        neg_log_ref: impl Fn(f64) -> f64,
        what: &str,
    ) -> Result<Self> {
        if dim == 0 {
            return Err(Error::invalid("quadrature dimension", "must be at least 1"));
        }
        let nodes = x.len();
        let total = u32::try_from(dim)
            .ok()
            .and_then(|e| nodes.checked_pow(e))
            .filter(|&k| k <= MAX_POINTS)
            .ok_or_else(|| {
                Error::invalid(
                    what,
                    format!(
                        "{nodes}^{dim} tensor points exceed the limit of {MAX_POINTS}; use fewer nodes or importance sampling"
                    ),
                )
            })?;
        let log_w: Vec<f64> = w.iter().map(|w| w.ln()).collect();
        let mut points = Vec::with_capacity(total * dim);
        let mut log_weights = Vec::with_capacity(total);
        let mut idx = vec![0usize; dim];
        for _ in 0..total {
            let mut lw = 0.0;
            let mut sq = 0.0;
            for &i in &idx {
                points.push(x[i]);
                lw += log_w[i];
                sq += x[i] * x[i];
            }
            log_weights.push(lw + neg_log_ref(sq));
            for slot in idx.iter_mut().rev() {
                *slot += 1;
                if *slot < nodes {
                    break;
                }
                *slot = 0;
            }
        }
        Ok(PointSet {
            dim,
            points,
            log_weights,
            kind: PointSetKind::GaussHermite { nodes },
        })
    }

    /// `points` draws of the standard multivariate Student-t with `nu` degrees of freedom
    /// (`ζ = g / √(χ²_ν/ν)`, `g ~ N(0, I)`) from a fixed `seed`, each with weight `1/K`
    /// (importance sampling, spec §4.3.3). The draws are independent (no antithetic pairs),
    /// so that the effective sample size is an honest accuracy measure for second moments too.
    pub fn student_t(dim: usize, points: usize, nu: u32, seed: u64) -> Result<Self> {
        if dim == 0 {
            return Err(Error::invalid("quadrature dimension", "must be at least 1"));
        }
        if points < 2 || points > MAX_POINTS / dim {
            return Err(Error::invalid(
                "importance-sampling points",
                format!("must be in 2..={}, got {points}", MAX_POINTS / dim),
            ));
        }
        if nu == 0 {
            return Err(Error::invalid(
                "Student-t degrees of freedom",
                "must be at least 1",
            ));
        }
        let mut rng = super::Rng::seed_from_u64(seed);
        let chi2 = rand_distr::ChiSquared::new(nu as f64)
            .map_err(|e| Error::invalid("Student-t degrees of freedom", format!("{e}")))?;
        let (nuf, df) = (nu as f64, dim as f64);
        // log t_{ν,d}(ζ) = lnΓ((ν+d)/2) − lnΓ(ν/2) − (d/2) ln(νπ) − ((ν+d)/2) ln(1 + |ζ|²/ν)
        let log_c = ln_gamma_half(nu + dim as u32) - ln_gamma_half(nu) - 0.5 * df * (nuf * PI).ln();
        let log_k = (points as f64).ln();
        let mut pts = Vec::with_capacity(points * dim);
        let mut log_weights = Vec::with_capacity(points);
        let mut g = vec![0.0; dim];
        while log_weights.len() < points {
            for gj in g.iter_mut() {
                *gj = rng.sample::<f64, _>(rand_distr::StandardNormal);
            }
            let s = (rng.sample(chi2) / nuf).sqrt().max(f64::MIN_POSITIVE);
            let sq: f64 = g.iter().map(|x| (x / s) * (x / s)).sum();
            let lw = -log_k - (log_c - 0.5 * (nuf + df) * (sq / nuf).ln_1p());
            pts.extend(g.iter().map(|x| x / s));
            log_weights.push(lw);
        }
        Ok(PointSet {
            dim,
            points: pts,
            log_weights,
            kind: PointSetKind::StudentT { nu, seed },
        })
    }

    /// The dimension `d`.
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// The number of points `K`.
    pub fn len(&self) -> usize {
        self.log_weights.len()
    }
    /// Whether there are no points (never true for a constructed set).
    pub fn is_empty(&self) -> bool {
        self.log_weights.is_empty()
    }
    /// How the set was built.
    pub fn kind(&self) -> PointSetKind {
        self.kind
    }
    /// Point `k` (`ζ_k`, length `d`).
    pub fn point(&self, k: usize) -> &[f64] {
        &self.points[k * self.dim..(k + 1) * self.dim]
    }
    /// `log ω_k − log ρ(ζ_k)`.
    pub fn log_weight(&self, k: usize) -> f64 {
        self.log_weights[k]
    }
}

/// The frame factor `C = c L^{-T}` for a precision (or Hessian) `P = L Lᵀ`, so that
/// `C Cᵀ = c² P^{-1}` and `v = m + ζ Cᵀ` maps standard points into the frame (spec §4.3.1–2).
/// Returns `None` if `P` is not positive definite or `c` is not positive.
pub fn precision_frame(precision: &DMat, scale: f64) -> Option<DMat> {
    if !(scale > 0.0 && scale.is_finite()) {
        return None;
    }
    let d = precision.nrows();
    let l = nalgebra::Cholesky::new(precision.clone())?.l();
    let mut c = DMat::identity(d, d) * scale;
    // C = c L^{-T}: solve Lᵀ C = c I (C is upper triangular).
    if !l.tr_solve_lower_triangular_mut(&mut c) {
        return None;
    }
    c.iter().all(|x| x.is_finite()).then_some(c)
}

/// The moments computed by [`frame_moments`].
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    /// The posterior mean (length `d`).
    pub mean: Vec<f64>,
    /// The posterior covariance, `d x d`, row-major (symmetric).
    pub cov: Vec<f64>,
    /// The effective sample size `(Σ w)² / Σ w²`.
    pub ess: f64,
    /// `log ∫ exp(log_target(v)) dv` as estimated by the rule.
    pub log_normalizer: f64,
}

impl Moments {
    /// Zeroed moments for dimension `d` (to be filled by [`frame_moments`]).
    pub fn new(d: usize) -> Self {
        Moments {
            mean: vec![0.0; d],
            cov: vec![0.0; d * d],
            ess: 0.0,
            log_normalizer: f64::NEG_INFINITY,
        }
    }
}

impl Moments {
    /// The moments of the sum of the unnormalised densities whose moments are `parts`
    /// (e.g. the pieces of a belief on disjoint regions): `Z = Σ Z_p`, mean `Σ π_p m_p`,
    /// covariance `Σ π_p (C_p + (m_p − m)ᵀ(m_p − m))` with `π_p = Z_p/Z`. The ESS is the
    /// `π`-weighted mean of the parts' ESS. Returns `None` if `parts` is empty or has no mass.
    pub fn combine(parts: &[Moments]) -> Option<Moments> {
        let d = parts.first()?.mean.len();
        let top = parts
            .iter()
            .map(|p| p.log_normalizer)
            .fold(f64::NEG_INFINITY, f64::max);
        if !top.is_finite() {
            return None;
        }
        let pw: Vec<f64> = parts
            .iter()
            .map(|p| (p.log_normalizer - top).exp())
            .collect();
        let total: f64 = pw.iter().sum();
        let mut out = Moments::new(d);
        out.log_normalizer = top + total.ln();
        out.ess = 0.0;
        for (p, w) in parts.iter().zip(&pw) {
            let pi = w / total;
            out.ess += pi * p.ess;
            for a in 0..d {
                out.mean[a] += pi * p.mean[a];
            }
        }
        for (p, w) in parts.iter().zip(&pw) {
            let pi = w / total;
            for a in 0..d {
                let da = p.mean[a] - out.mean[a];
                for b in 0..d {
                    let db = p.mean[b] - out.mean[b];
                    out.cov[a * d + b] += pi * (p.cov[a * d + b] + da * db);
                }
            }
        }
        Some(out)
    }
}

/// Self-normalised moments of `q(v) ∝ exp(log_target(v))` with the points of `set` mapped into
/// the frame `v_k = center + ζ_k factorᵀ` (spec §4.3; see the module documentation).
///
/// `log_target` may return `−∞` (zero density); it must not return NaN or `+∞`. `scratch`
/// must have length `d` (it receives each `v_k`). The result is written into `out`, whose
/// buffers are reused. Errors if every weight is zero or a log-density is NaN.
pub fn frame_moments<F>(
    set: &PointSet,
    center: &[f64],
    factor: &DMat,
    mut log_target: F,
    scratch: &mut [f64],
    out: &mut Moments,
) -> Result<()>
where
    F: FnMut(&[f64]) -> f64,
{
    let d = set.dim;
    if center.len() != d || scratch.len() != d || factor.nrows() != d || factor.ncols() != d {
        return Err(Error::shape(
            "frame of the quadrature",
            format!("centre and scratch of length {d}, factor {d} x {d}"),
            format!(
                "lengths {} and {}, factor {} x {}",
                center.len(),
                scratch.len(),
                factor.nrows(),
                factor.ncols()
            ),
        ));
    }
    out.mean.resize(d, 0.0);
    out.cov.resize(d * d, 0.0);
    // Accumulators in the ζ frame, relative to the running maximum log-weight `top`.
    let (s1, s2) = (&mut out.mean, &mut out.cov);
    s1.iter_mut().for_each(|x| *x = 0.0);
    s2.iter_mut().for_each(|x| *x = 0.0);
    let (mut s0, mut sw2, mut top) = (0.0_f64, 0.0_f64, f64::NEG_INFINITY);
    for k in 0..set.len() {
        let z = set.point(k);
        for (a, va) in scratch.iter_mut().enumerate() {
            let mut x = center[a];
            for (b, zb) in z.iter().enumerate() {
                x += factor[(a, b)] * zb;
            }
            *va = x;
        }
        let lt = log_target(scratch);
        if lt.is_nan() || lt == f64::INFINITY {
            return Err(Error::Numerical {
                what: "quadrature".into(),
                detail: format!("log-density is {lt} at point {k}"),
            });
        }
        let lw = set.log_weights[k] + lt;
        if lw == f64::NEG_INFINITY {
            continue;
        }
        if lw > top {
            // Rescale the accumulators to the new maximum (log-sum-exp).
            let f = (top - lw).exp();
            s0 *= f;
            sw2 *= f * f;
            s1.iter_mut().for_each(|x| *x *= f);
            s2.iter_mut().for_each(|x| *x *= f);
            top = lw;
        }
        let w = (lw - top).exp();
        s0 += w;
        sw2 += w * w;
        for a in 0..d {
            let wa = w * z[a];
            s1[a] += wa;
            for b in a..d {
                s2[a * d + b] += wa * z[b];
            }
        }
    }
    if s0.is_nan() || s0 <= 0.0 {
        return Err(Error::Numerical {
            what: "quadrature".into(),
            detail: "every point has zero weight (the frame misses the posterior mass)".into(),
        });
    }
    // ζ-frame mean μ and covariance S, then v-frame: mean = m + μ Cᵀ, cov = C S Cᵀ.
    let mu: Vec<f64> = s1.iter().map(|x| x / s0).collect();
    let mut s = DMat::zeros(d, d);
    for a in 0..d {
        for b in a..d {
            let c = s2[a * d + b] / s0 - mu[a] * mu[b];
            s[(a, b)] = c;
            s[(b, a)] = c;
        }
    }
    let cov = factor * s * factor.transpose();
    for a in 0..d {
        out.mean[a] = center[a] + (0..d).map(|b| factor[(a, b)] * mu[b]).sum::<f64>();
        for b in 0..d {
            out.cov[a * d + b] = 0.5 * (cov[(a, b)] + cov[(b, a)]);
        }
    }
    out.ess = s0 * s0 / sw2;
    let log_det: f64 = (0..d).map(|a| factor[(a, a)].abs().ln()).sum();
    // factor is triangular (from precision_frame) in the common case; for a general factor
    // use its determinant.
    let log_det = if is_triangular(factor) {
        log_det
    } else {
        factor.determinant().abs().ln()
    };
    out.log_normalizer = top + s0.ln() + log_det;
    Ok(())
}

fn is_triangular(m: &DMat) -> bool {
    let d = m.nrows();
    let upper = (0..d).all(|a| (0..a).all(|b| m[(a, b)] == 0.0));
    let lower = (0..d).all(|a| (a + 1..d).all(|b| m[(a, b)] == 0.0));
    upper || lower
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_hermite_integrates_gaussian_moments() {
        for n in [1, 2, 5, 20, 80, 200] {
            let (x, w) = gauss_hermite(n).unwrap();
            let m = |p: i32| x.iter().zip(&w).map(|(x, w)| w * x.powi(p)).sum::<f64>();
            assert!((m(0) - 1.0).abs() < 1e-13);
            if n >= 2 {
                assert!((m(2) - 1.0).abs() < 1e-12, "n={n}: {}", m(2));
            }
            if n >= 3 {
                assert!((m(4) - 3.0).abs() < 1e-11, "n={n}: {}", m(4));
            }
            if n >= 5 {
                // E X^8 = 105
                assert!((m(8) - 105.0).abs() < 1e-9 * 105.0, "n={n}: {}", m(8));
            }
        }
    }

    #[test]
    fn gauss_legendre_integrates_polynomials() {
        for n in [1, 3, 16, 64] {
            let (x, w) = gauss_legendre(n).unwrap();
            let m = |p: i32| x.iter().zip(&w).map(|(x, w)| w * x.powi(p)).sum::<f64>();
            assert!((m(0) - 2.0).abs() < 1e-13);
            if n >= 3 {
                assert!((m(4) - 0.4).abs() < 1e-13, "n={n}: {}", m(4));
            }
        }
    }

    #[test]
    fn ln_gamma_half_matches_known_values() {
        assert!((ln_gamma_half(1) - 0.5 * PI.ln()).abs() < 1e-15);
        assert!(ln_gamma_half(2).abs() < 1e-15);
        assert!((ln_gamma_half(9) - (105.0 / 16.0 * PI.sqrt()).ln()).abs() < 1e-13);
        assert!((ln_gamma_half(10) - 24f64.ln()).abs() < 1e-13);
    }
}
