//! The row belief of a relu hidden layer `u = relu(v) + ξ`, `ξ ~ N(0, N^{-1})` or noiseless
//! (spec §4.7), its MMSE moments and its MAP, and the scalar special functions they need.
//!
//! Integrating `u` out of the layer belief (spec §4.7) leaves, for each row,
//!
//! ```text
//! q(v) ∝ exp(−f(v)),  f(v) = ½(v − r⁺)Γ⁺(v − r⁺)ᵀ + ½(relu(v) − r⁻)P(relu(v) − r⁻)ᵀ,
//! P = (N^{-1} + (Γ⁻)^{-1})^{-1}   (P = Γ⁻ if noiseless)
//! ```
//!
//! On the closed orthant `O` with positive set `D = diag(1[j ∈ O])` the objective is the convex
//! quadratic `f = ½ v H_O vᵀ − b_O vᵀ + c_0`, `H_O = Γ⁺ + D P D`, `b_O = r⁺Γ⁺ + r⁻ P D`,
//! `c_0 = ½ r⁺Γ⁺r⁺ᵀ + ½ r⁻Pr⁻ᵀ`. So `q` is a mixture of `2^d` orthant-truncated Gaussians.
//!
//! * **Orthant minimisers** (MAP, and the frames of the MMSE rule): on each orthant the minimiser
//!   of `f` is the unconstrained minimiser `v_F = b_F (H_FF)^{-1}` of one face `F` (the free
//!   coordinates; the others are 0). Among the faces whose `v_F` is feasible, the one with the
//!   smallest `f` is the constrained minimiser (every feasible point bounds the minimum from
//!   above, and the minimiser's own face is among them). All `(H_FF)^{-1}` are computed once per
//!   call ([`ReluPlan`]), so a row costs `3^d` small products, with no allocation.
//! * **MAP** (spec §4.7): the best orthant minimiser; `Σ_vv = E_F (H_FF)^{-1} E_Fᵀ` on its free
//!   set `F` (the face rule of spec §4.1 for coordinates at the kink), which is `[H^{-1}]_vv` of
//!   the joint `(u, v)` Hessian.
//! * **MMSE, separable** (`Γ⁺` and `P` diagonal): `d` scalar problems in closed form (spec
//!   §4.7, the scalar formulas), with a careful `log Φ` ([`log_ndtr`]).
//! * **MMSE, general `Γ`**: orthant by orthant. On orthant `O` one coordinate `k` is integrated
//!   analytically (given the others it is a half-line-truncated Gaussian: `log Φ`, mean and
//!   variance in closed form, [`half_line_moments`]) and the others by tensor Gauss–Legendre
//!   (the 1-D rule of [`super::quadrature::gauss_legendre`]) over a box that provably holds the
//!   orthant's mass: with `v*` the orthant minimiser and `λ ≥ 0` the multipliers of its active
//!   bounds, `f(v) = f* + Σ_j λ_j |v_j| + ½(v − v*)H(v − v*)ᵀ` on the orthant, so the mass
//!   beyond `v*_j ± 7 sd_j` (`sd_j² = [H^{-1}]_jj`) or beyond `24/λ_j` is below `e^{-24}` of the
//!   orthant's bound `exp(−f*)(2π)^{d/2}det(H)^{-1/2}`. Coordinates whose box does not reach
//!   the boundary are Gaussian given the others and are integrated out exactly. Panels are split
//!   at the mode and (one quadrature coordinate) where the conditional mean of `v_k` crosses 0;
//!   `k` is the coordinate whose conditional truncation varies least over the box. Orthants
//!   whose mass bound is below `e^{-40}` of the largest are skipped; every other piece is
//!   integrated with a coarse rule (4 nodes), and those holding at least `1e-5` of the mass
//!   again with the full rule. The pieces are combined as a mixture; within orthant `O`,
//!   `relu(v) = v D`, so the moments of `relu(v)` follow from those of `v`.

use super::quadrature;
use crate::error::{Error, Result};
use crate::spd::{DMat, Spd};
use std::cell::RefCell;
use std::f64::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI, PI};
use std::sync::OnceLock;

/// Largest `d` of a relu hidden layer (the orthant enumeration visits `2^d` orthants).
pub const MAX_RELU_DIM: usize = 6;

// ---------------------------------------------------------------------------------------------
// Scalar special functions
// ---------------------------------------------------------------------------------------------

const ERFCX_WIDTH: f64 = 0.25;
const ERFCX_PIECES: usize = 32;
const ERFCX_COEFFS: usize = 10;
/// From here on the continued fraction with [`ERFCX_CF_TERMS`] terms is accurate to rounding.
const ERFCX_CF_FROM: f64 = ERFCX_WIDTH * ERFCX_PIECES as f64;
const ERFCX_CF_TERMS: usize = 12;

/// Laplace's continued fraction `erfcx(t) = (1/√π) / (t + ½/(t + 1/(t + (3/2)/(t + …))))`,
/// evaluated backwards from `terms` terms (accurate to rounding for `t ≥ 2` with 60 terms, for
/// `t ≥ 8` with 10).
fn erfcx_cf(t: f64, terms: usize) -> f64 {
    let mut f = t;
    for k in (1..=terms).rev() {
        f = t + 0.5 * k as f64 / f;
    }
    0.5 * FRAC_2_SQRT_PI / f
}

/// A slow but accurate `erfcx` on `[0, 8]`, used once to build the Chebyshev table: for
/// `t < 2` the positive series `erf(t) = (2t/√π) e^{−t²} Σ_n (2t²)^n / (2n+1)!!`, so that
/// `erfcx(t) = e^{t²} − (2t/√π) Σ_n …` (relative error ≈ 2e-13 at `t = 2`, less below); for
/// `t ≥ 2` the continued fraction with 60 terms.
fn erfcx_slow(t: f64) -> f64 {
    if t < 2.0 {
        let x = 2.0 * t * t;
        let (mut term, mut s, mut n) = (1.0_f64, 1.0_f64, 0.0_f64);
        loop {
            n += 1.0;
            term *= x / (2.0 * n + 1.0);
            s += term;
            if term < 1e-17 * s {
                break;
            }
        }
        (t * t).exp() - t * FRAC_2_SQRT_PI * s
    } else {
        erfcx_cf(t, 60)
    }
}

/// Polynomial coefficients (in `y ∈ [−1, 1]`, the position within the piece) of `erfcx` on
/// `[iW, (i+1)W]`, `W = ¼`, `i < 32`, degree 9: the Chebyshev interpolant of [`erfcx_slow`] at
/// the Chebyshev points, converted to the monomial basis (its coefficients sum to about 1 in
/// absolute value, so the conversion costs no accuracy). Built once.
fn erfcx_table() -> &'static [[f64; ERFCX_COEFFS]; ERFCX_PIECES] {
    static TABLE: OnceLock<[[f64; ERFCX_COEFFS]; ERFCX_PIECES]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let n = ERFCX_COEFFS;
        let mut table = [[0.0; ERFCX_COEFFS]; ERFCX_PIECES];
        for (i, poly) in table.iter_mut().enumerate() {
            let a = i as f64 * ERFCX_WIDTH;
            let f: Vec<f64> = (0..n)
                .map(|k| {
                    let x = (PI * (k as f64 + 0.5) / n as f64).cos();
                    erfcx_slow(a + 0.5 * ERFCX_WIDTH * (1.0 + x))
                })
                .collect();
            let mut cheb = [0.0; ERFCX_COEFFS];
            for (j, cj) in cheb.iter_mut().enumerate() {
                let s: f64 = (0..n)
                    .map(|k| f[k] * (PI * j as f64 * (k as f64 + 0.5) / n as f64).cos())
                    .sum();
                *cj = 2.0 * s / n as f64;
            }
            cheb[0] *= 0.5;
            // Σ_j c_j T_j(y) in the monomial basis, with T_{j+1} = 2y T_j − T_{j−1}.
            let mut t_prev = [0.0; ERFCX_COEFFS];
            let mut t_cur = [0.0; ERFCX_COEFFS];
            t_prev[0] = 1.0; // T_0
            t_cur[1] = 1.0; // T_1
            for (m, p) in poly.iter_mut().enumerate() {
                *p = cheb[0] * t_prev[m] + cheb[1] * t_cur[m];
            }
            for cj in cheb.iter().skip(2) {
                let mut t_next = [0.0; ERFCX_COEFFS];
                for m in 0..n {
                    t_next[m] = -t_prev[m] + if m > 0 { 2.0 * t_cur[m - 1] } else { 0.0 };
                }
                for (m, p) in poly.iter_mut().enumerate() {
                    *p += cj * t_next[m];
                }
                t_prev = t_cur;
                t_cur = t_next;
            }
        }
        table
    })
}

/// The scaled complementary error function `erfcx(t) = e^{t²} erfc(t)`.
///
/// For `0 ≤ t < 8`: piecewise polynomial interpolation (32 pieces of width ¼, degree 9,
/// evaluated by Estrin's scheme) of an accurate series / continued-fraction evaluation; for
/// `t ≥ 8`: Laplace's continued fraction (12 terms); for `t < 0`: `2e^{t²} − erfcx(−t)`.
/// Relative error below `1e-12` for `t ≥ 0` (checked against 40-digit arithmetic while
/// writing it).
pub fn erfcx(t: f64) -> f64 {
    if t.is_nan() {
        return f64::NAN;
    }
    if t < 0.0 {
        return 2.0 * (t * t).exp() - erfcx(-t);
    }
    if t >= ERFCX_CF_FROM {
        return erfcx_cf(t, ERFCX_CF_TERMS);
    }
    let i = ((t / ERFCX_WIDTH) as usize).min(ERFCX_PIECES - 1);
    let c = &erfcx_table()[i];
    let y = 2.0 * (t - i as f64 * ERFCX_WIDTH) / ERFCX_WIDTH - 1.0;
    // Estrin's scheme (short dependency chains).
    let y2 = y * y;
    let y4 = y2 * y2;
    let y8 = y4 * y4;
    let p01 = c[0] + c[1] * y;
    let p23 = c[2] + c[3] * y;
    let p45 = c[4] + c[5] * y;
    let p67 = c[6] + c[7] * y;
    let p89 = c[8] + c[9] * y;
    (p01 + p23 * y2) + (p45 + p67 * y2) * y4 + p89 * y8
}

/// `log Φ(x)`, `Φ` the standard normal distribution function, accurate in both tails:
/// `x ≥ 0`: `log1p(−½ e^{−x²/2} erfcx(x/√2))`; `x < 0`: `−x²/2 + log(½ erfcx(−x/√2))`.
pub fn log_ndtr(x: f64) -> f64 {
    if x >= 0.0 {
        let t = x * FRAC_1_SQRT_2;
        (-0.5 * (-t * t).exp() * erfcx(t)).ln_1p()
    } else {
        let t = -x * FRAC_1_SQRT_2;
        -t * t + (0.5 * erfcx(t)).ln()
    }
}

/// Beyond this standardised distance of the truncation point into the tail, the moments of
/// [`half_line_moments`] come from the continued fraction (no cancellation).
const HALF_LINE_CF_FROM: f64 = 6.0;

/// `N(m, σ²)` restricted to `v ≥ 0`, in a form that needs one `erfcx` and at most one `exp`:
/// returns `(ℓ, c, E[v | v ≥ 0], Var[v | v ≥ 0])` with `P(v ≥ 0) = e^ℓ c`, where `c` lies in
/// `(0, 1]` and is never tiny, so that a caller can form weights `exp(… + ℓ) · c` without
/// logarithms (spec §4.7, truncated moments).
///
/// With `a = −m/σ` and the inverse Mills ratio `λ = φ(a)/Φ(−a)`: `E = m + σλ`,
/// `Var = σ²(1 + aλ − λ²)`. For `a ≤ 0`: `Φ(−a) = 1 − ½e^{−a²/2} erfcx(−a/√2)`; for
/// `0 < a < 6`: `Φ(−a) = e^{−a²/2} · ½ erfcx(a/√2)`, `λ = √(2/π)/erfcx(a/√2)`. For `a ≥ 6` the
/// mean and variance suffer cancellation; there the Mills-ratio continued fraction
/// `G_k = a + k/G_{k+1}` (23, 18, 13 or 10 terms, accurate to rounding) gives
/// `Φ(−a) = e^{−a²/2} (2π)^{-1/2} / G_1`, `E = σ/G_2`, `Var = σ²(2/G_3 − 1/G_2)/G_2`.
#[inline]
pub fn half_line_parts(m: f64, sigma: f64) -> (f64, f64, f64, f64) {
    let a = -m / sigma;
    if a <= 0.0 {
        let t = -a * FRAC_1_SQRT_2;
        let x = (-t * t).exp();
        let mass = 1.0 - 0.5 * x * erfcx(t);
        let lambda = x * INV_SQRT_2PI / mass;
        let mean = m + sigma * lambda;
        let var = (sigma * sigma * (1.0 + a * lambda - lambda * lambda)).max(0.0);
        (0.0, mass, mean, var)
    } else if a < HALF_LINE_CF_FROM {
        let e = erfcx(a * FRAC_1_SQRT_2);
        let lambda = FRAC_2_SQRT_PI * FRAC_1_SQRT_2 / e;
        let mean = m + sigma * lambda;
        let var = (sigma * sigma * (1.0 + a * lambda - lambda * lambda)).max(0.0);
        (-0.5 * a * a, 0.5 * e, mean, var)
    } else {
        let terms = if a < 8.0 {
            23
        } else if a < 12.0 {
            18
        } else if a < 20.0 {
            13
        } else {
            10
        };
        let mut g = a;
        let (mut g1, mut g2, mut g3) = (a, a, a);
        for k in (1..=terms).rev() {
            g = a + k as f64 / g;
            match k {
                3 => g3 = g,
                2 => g2 = g,
                1 => g1 = g,
                _ => {}
            }
        }
        let mean = sigma / g2;
        let var = sigma * sigma * (2.0 / g3 - 1.0 / g2) / g2;
        (-0.5 * a * a, INV_SQRT_2PI / g1, mean, var.max(0.0))
    }
}

const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// `N(m, σ²)` restricted to `v ≥ 0`: returns `(log P(v ≥ 0), E[v | v ≥ 0], Var[v | v ≥ 0])`
/// (spec §4.7, truncated moments; see [`half_line_parts`]).
pub fn half_line_moments(m: f64, sigma: f64) -> (f64, f64, f64) {
    let (l, c, e, v) = half_line_parts(m, sigma);
    (l + c.ln(), e, v)
}

/// [`half_line_parts`] for the half-line `s·v ≥ 0` (`s = ±1`).
#[inline]
fn signed_half_line(m: f64, sigma: f64, s: f64) -> (f64, f64, f64, f64) {
    if s > 0.0 {
        half_line_parts(m, sigma)
    } else {
        let (l, c, e, v) = half_line_parts(-m, sigma);
        (l, c, -e, v)
    }
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

/// How the MMSE moments of a relu layer's row belief are computed (spec §4.7, §4.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ReluMmseMethod {
    /// The separable closed form when `Γ⁺` and `P` are diagonal (always for `d = 1`);
    /// otherwise [`ReluMmseMethod::Orthants`] with 16, 12, 6, 4, 4 nodes per panel for
    /// `d = 2 … 6`.
    #[default]
    Auto,
    /// The orthant decomposition with one coordinate integrated analytically and `nodes`
    /// Gauss–Legendre nodes per panel of every remaining coordinate, even when the problem
    /// is separable.
    Orthants {
        /// Gauss–Legendre nodes per coordinate (2 ..= 256).
        nodes: usize,
    },
}

impl ReluMmseMethod {
    /// The default number of Gauss–Legendre nodes for dimension `d`.
    pub fn default_nodes(d: usize) -> usize {
        match d {
            0..=2 => 16,
            3 => 12,
            4 => 6,
            _ => 4,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The per-call plan
// ---------------------------------------------------------------------------------------------

/// Box half-width in marginal standard deviations of an orthant piece.
const BOX_SDS: f64 = 7.0;
/// Box width in units of `1/λ_j` for a coordinate held at 0 by a bound with multiplier `λ_j`.
const BOX_DECAY: f64 = 24.0;
/// Orthant pieces whose mass bound is below `e^{-SKIP}` of the largest are skipped.
const SKIP: f64 = 40.0;
/// Orthant pieces with at least this share of the mass (after the coarse pass) are integrated
/// again with the full rule.
const REFINE: f64 = 1e-5;

/// The Gauss–Legendre rules of the orthant MMSE: a coarse one (every piece) and the full one
/// (pieces holding at least `1e-5` of the mass).
#[derive(Clone, Debug)]
pub struct ReluRules {
    /// Nodes and log-weights on `[−1, 1]` of the coarse rule (4 nodes, one panel per
    /// coordinate; never more than the full rule).
    pub coarse: (Vec<f64>, Vec<f64>),
    /// Nodes and log-weights of the full rule.
    pub fine: (Vec<f64>, Vec<f64>),
}

impl ReluRules {
    /// The rules for `nodes` Gauss–Legendre nodes per panel (`2 ≤ nodes ≤ 256`).
    pub fn new(nodes: usize) -> Result<Self> {
        if !(2..=quadrature::MAX_GH_NODES).contains(&nodes) {
            return Err(Error::invalid(
                "relu MMSE Gauss-Legendre nodes",
                format!("must be in 2..={}, got {nodes}", quadrature::MAX_GH_NODES),
            ));
        }
        let log_rule = |n: usize| -> Result<(Vec<f64>, Vec<f64>)> {
            let (x, w) = quadrature::gauss_legendre(n)?;
            Ok((x, w.iter().map(|w| w.ln()).collect()))
        };
        Ok(ReluRules {
            coarse: log_rule(4.min(nodes))?,
            fine: log_rule(nodes)?,
        })
    }
    /// The full rule's number of nodes.
    pub fn nodes(&self) -> usize {
        self.fine.0.len()
    }
}

/// Everything about one call's messages that does not depend on the row: `Γ⁺`, `P`, and the
/// inverses `(H_FF)^{-1}` of `H = Γ⁺ + D_pos P D_pos` for every face `F` and positive set
/// `pos ⊆ F`.
#[derive(Clone, Debug)]
pub struct ReluPlan {
    d: usize,
    /// `Γ⁺` row-major.
    gp: Vec<f64>,
    /// `P` row-major.
    p: Vec<f64>,
    /// Whether `Γ⁺` and `P` are diagonal.
    separable: bool,
    /// `inv[(F·2^d + pos)·d² ..]`: `(H_FF)^{-1}` embedded in `d x d` (zeros outside `F`), for
    /// `pos ⊆ F`.
    inv: Vec<f64>,
    /// `log det H_FF` for each `(F, pos)` (0 for `F = ∅`), indexed `F·2^d + pos`.
    inv_logdet: Vec<f64>,
    /// Per orthant `o` (bit `j` set = `v_j ≥ 0`): `H_o` row-major.
    h: Vec<f64>,
    /// Per orthant: `log det H_o`.
    logdet: Vec<f64>,
    /// Per orthant: marginal standard deviations `sqrt([H_o^{-1}]_jj)`.
    sd: Vec<f64>,
}

fn is_diagonal(m: &DMat) -> bool {
    (0..m.nrows()).all(|i| (0..m.ncols()).all(|j| i == j || m[(i, j)] == 0.0))
}

impl ReluPlan {
    /// The plan for the forward message precision `Γ⁺` and the effective precision `P`
    /// (spec §4.7). Both must be `d x d` SPD with `d ≤ 6`.
    pub fn new(gamma_plus: &Spd, p: &Spd) -> Result<Self> {
        let d = gamma_plus.dim();
        if d == 0 || d > MAX_RELU_DIM || p.dim() != d {
            return Err(Error::invalid(
                "relu layer",
                format!(
                    "supports 1 <= d <= {MAX_RELU_DIM} columns (Γ⁺ is {d} x {d}, P is {0} x {0})",
                    p.dim()
                ),
            ));
        }
        let (gm, pm) = (gamma_plus.matrix(), p.matrix());
        let nf = 1usize << d;
        let dd = d * d;
        let mut inv = vec![0.0; nf * nf * dd];
        let mut inv_logdet = vec![0.0; nf * nf];
        let mut sub = Vec::with_capacity(d);
        for f in 0..nf {
            sub.clear();
            sub.extend((0..d).filter(|&j| f & (1 << j) != 0));
            let k = sub.len();
            if k == 0 {
                continue;
            }
            // Every pos ⊆ F: iterate the submasks of f.
            let mut pos = f;
            loop {
                let on = |j: usize| pos & (1 << j) != 0;
                let hff = DMat::from_fn(k, k, |a, b| {
                    let (ja, jb) = (sub[a], sub[b]);
                    gm[(ja, jb)] + if on(ja) && on(jb) { pm[(ja, jb)] } else { 0.0 }
                });
                let hs = Spd::from_symmetric("relu orthant Hessian Γ⁺ + D P D", hff)?;
                inv_logdet[f * nf + pos] = hs.logdet();
                let hi = hs.inverse();
                let base = (f * nf + pos) * dd;
                for a in 0..k {
                    for b in 0..k {
                        inv[base + sub[a] * d + sub[b]] = hi[(a, b)];
                    }
                }
                if pos == 0 {
                    break;
                }
                pos = (pos - 1) & f;
            }
        }
        let mut h = vec![0.0; nf * dd];
        let mut logdet = vec![0.0; nf];
        let mut sd = vec![0.0; nf * d];
        for o in 0..nf {
            let on = |j: usize| o & (1 << j) != 0;
            let ho = DMat::from_fn(d, d, |a, b| {
                gm[(a, b)] + if on(a) && on(b) { pm[(a, b)] } else { 0.0 }
            });
            for a in 0..d {
                for b in 0..d {
                    h[o * dd + a * d + b] = ho[(a, b)];
                }
            }
            logdet[o] = Spd::from_symmetric("relu orthant Hessian", ho)?.logdet();
            let base = ((nf - 1) * nf + o) * dd;
            for j in 0..d {
                sd[o * d + j] = inv[base + j * d + j].sqrt();
            }
        }
        let row_major = |m: &DMat| -> Vec<f64> {
            (0..d)
                .flat_map(|a| (0..d).map(move |b| m[(a, b)]))
                .collect()
        };
        Ok(ReluPlan {
            d,
            gp: row_major(gm),
            p: row_major(pm),
            separable: is_diagonal(gm) && is_diagonal(pm),
            inv,
            inv_logdet,
            h,
            logdet,
            sd,
        })
    }

    /// The dimension `d`.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Whether `Γ⁺` and `P` are both diagonal (the belief separates over coordinates).
    pub fn is_separable(&self) -> bool {
        self.separable
    }

    fn inv(&self, f: usize, pos: usize) -> &[f64] {
        let dd = self.d * self.d;
        let base = (f * (1usize << self.d) + pos) * dd;
        &self.inv[base..base + dd]
    }
}

// ---------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------

/// The moments (or MAP) of one row: `v̂`, `Σ_v`, the mean of `relu(v)` and `C = Cov(relu(v))`
/// (MMSE) or `D Σ_v D` (MAP, delta method). Fixed-size buffers (no allocation); `d x d`
/// matrices are row-major in the first `d²` entries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReluRow {
    /// The dimension `d`.
    pub d: usize,
    /// `v̂` (first `d` entries).
    pub v_mean: [f64; MAX_RELU_DIM],
    /// `Σ_v`, row-major.
    pub v_cov: [f64; MAX_RELU_DIM * MAX_RELU_DIM],
    /// `E[relu(v)]` (MMSE) or `relu(v̂)` (MAP).
    pub relu_mean: [f64; MAX_RELU_DIM],
    /// `Cov(relu(v))` (MMSE) or `D Σ_v D` (MAP), row-major.
    pub relu_cov: [f64; MAX_RELU_DIM * MAX_RELU_DIM],
}

impl ReluRow {
    /// Zeroed buffers for dimension `d ≤ 6`.
    pub fn new(d: usize) -> Self {
        ReluRow {
            d: d.min(MAX_RELU_DIM),
            v_mean: [0.0; MAX_RELU_DIM],
            v_cov: [0.0; MAX_RELU_DIM * MAX_RELU_DIM],
            relu_mean: [0.0; MAX_RELU_DIM],
            relu_cov: [0.0; MAX_RELU_DIM * MAX_RELU_DIM],
        }
    }
    /// `v̂`.
    pub fn v_mean(&self) -> &[f64] {
        &self.v_mean[..self.d]
    }
    /// `Σ_v` (row-major `d x d`).
    pub fn v_cov(&self) -> &[f64] {
        &self.v_cov[..self.d * self.d]
    }
    /// `E[relu(v)]` or `relu(v̂)`.
    pub fn relu_mean(&self) -> &[f64] {
        &self.relu_mean[..self.d]
    }
    /// `Cov(relu(v))` or `D Σ_v D` (row-major `d x d`).
    pub fn relu_cov(&self) -> &[f64] {
        &self.relu_cov[..self.d * self.d]
    }
}

/// Per-thread work space (allocated once per thread and dimension, then reused).
#[derive(Default)]
struct Scratch {
    d: usize,
    /// `r⁺Γ⁺` and `r⁻P`.
    rg: Vec<f64>,
    rp: Vec<f64>,
    /// Per face candidate `(F, pos)`: objective value (`+∞` if infeasible).
    cand: Vec<f64>,
    /// Per orthant: constrained minimiser, its face, value, multipliers.
    vstar: Vec<f64>,
    face: Vec<usize>,
    fstar: Vec<f64>,
    lam: Vec<f64>,
    /// Per orthant: log mass (−∞ if skipped), mean, covariance.
    logm: Vec<f64>,
    mean: Vec<f64>,
    cov: Vec<f64>,
    /// Quadrature: per remaining dimension, nodes `u` (signed coordinate) and log-weights.
    nodes: Vec<Vec<(f64, f64)>>,
}

impl Scratch {
    fn ensure(&mut self, d: usize) {
        if self.d == d && !self.rg.is_empty() {
            return;
        }
        let nf = 1usize << d;
        self.d = d;
        self.rg = vec![0.0; d];
        self.rp = vec![0.0; d];
        self.cand = vec![f64::INFINITY; nf * nf];
        self.vstar = vec![0.0; nf * d];
        self.face = vec![0; nf];
        self.fstar = vec![0.0; nf];
        self.lam = vec![0.0; nf * d];
        self.logm = vec![0.0; nf];
        self.mean = vec![0.0; nf * d];
        self.cov = vec![0.0; nf * d * d];
        self.nodes = vec![Vec::with_capacity(3 * 256); d];
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn sign_of(o: usize, j: usize) -> f64 {
    if o & (1 << j) != 0 {
        1.0
    } else {
        -1.0
    }
}

impl ReluPlan {
    /// `v_F = b_F (H_FF)^{-1}` for the candidate `(F, pos)`, written into `v` (zeros outside `F`),
    /// with `b = r⁺Γ⁺ + r⁻ P D_pos`. Returns `f(v) − c_0 = −½ b_F v_Fᵀ`.
    fn candidate(&self, f: usize, pos: usize, rg: &[f64], rp: &[f64], v: &mut [f64]) -> f64 {
        let d = self.d;
        let inv = self.inv(f, pos);
        let mut val = 0.0;
        for (a, va) in v.iter_mut().enumerate() {
            if f & (1 << a) == 0 {
                *va = 0.0;
                continue;
            }
            let mut x = 0.0;
            for b in 0..d {
                if f & (1 << b) != 0 {
                    let bb = rg[b] + if pos & (1 << b) != 0 { rp[b] } else { 0.0 };
                    x += bb * inv[b * d + a];
                }
            }
            *va = x;
        }
        for a in 0..d {
            if f & (1 << a) != 0 {
                let ba = rg[a] + if pos & (1 << a) != 0 { rp[a] } else { 0.0 };
                val -= 0.5 * ba * v[a];
            }
        }
        val
    }

    /// Fills the per-orthant constrained minimisers (`s.vstar`, `s.face`, `s.fstar` = `f* − c_0`)
    /// and returns the index of the best orthant.
    fn orthant_minimisers(&self, s: &mut Scratch) -> usize {
        let d = self.d;
        let nf = 1usize << d;
        let mut v = [0.0; MAX_RELU_DIM];
        // Candidates (F, pos ⊆ F): feasible iff the free coordinates have the signs of pos.
        for f in 0..nf {
            let mut pos = f;
            loop {
                let val = self.candidate(f, pos, &s.rg, &s.rp, &mut v[..d]);
                let feasible = (0..d).all(|j| {
                    f & (1 << j) == 0
                        || (if pos & (1 << j) != 0 {
                            v[j] >= 0.0
                        } else {
                            v[j] <= 0.0
                        })
                });
                s.cand[f * nf + pos] = if feasible && val.is_finite() {
                    val
                } else {
                    f64::INFINITY
                };
                if pos == 0 {
                    break;
                }
                pos = (pos - 1) & f;
            }
        }
        let mut best = 0;
        for o in 0..nf {
            let (mut fb, mut vb) = (0usize, f64::INFINITY);
            for f in 0..nf {
                let c = s.cand[f * nf + (o & f)];
                if c < vb {
                    vb = c;
                    fb = f;
                }
            }
            // F = ∅ (v = 0) is always feasible, so vb is finite.
            s.face[o] = fb;
            s.fstar[o] = vb;
            self.candidate(fb, o & fb, &s.rg, &s.rp, &mut s.vstar[o * d..(o + 1) * d]);
            if vb < s.fstar[best] {
                best = o;
            }
        }
        best
    }

    fn prepare_row(&self, s: &mut Scratch, r_plus: &[f64], r_minus: &[f64]) -> f64 {
        let d = self.d;
        let mut c0 = 0.0;
        for a in 0..d {
            let (mut x, mut y) = (0.0, 0.0);
            for b in 0..d {
                x += r_plus[b] * self.gp[b * d + a];
                y += r_minus[b] * self.p[b * d + a];
            }
            s.rg[a] = x;
            s.rp[a] = y;
            c0 += 0.5 * (x * r_plus[a] + y * r_minus[a]);
        }
        c0
    }

    /// MAP of one row (spec §4.7): the best orthant minimiser `v̂`, `Σ_v = E_F (H_FF)^{-1} E_Fᵀ`
    /// on its free set (face rule), `relu(v̂)` and `D Σ_v D`.
    pub fn map_row(&self, r_plus: &[f64], r_minus: &[f64], out: &mut ReluRow) {
        let d = self.d;
        SCRATCH.with(|cell| {
            let mut s = cell.borrow_mut();
            s.ensure(d);
            self.prepare_row(&mut s, r_plus, r_minus);
            let best = self.orthant_minimisers(&mut s);
            let v = &s.vstar[best * d..(best + 1) * d];
            // Free set: coordinates off the kink (a free coordinate exactly at 0 is treated as
            // on the face, spec §4.1).
            let mut free = 0usize;
            let mut pos = 0usize;
            for (j, &vj) in v.iter().enumerate() {
                if vj != 0.0 {
                    free |= 1 << j;
                }
                if vj > 0.0 {
                    pos |= 1 << j;
                }
            }
            let inv = self.inv(free, pos);
            out.d = d;
            out.v_mean[..d].copy_from_slice(v);
            out.v_cov[..d * d].copy_from_slice(inv);
            for a in 0..d {
                out.relu_mean[a] = v[a].max(0.0);
                for b in 0..d {
                    let on = pos & (1 << a) != 0 && pos & (1 << b) != 0;
                    out.relu_cov[a * d + b] = if on { inv[a * d + b] } else { 0.0 };
                }
            }
        });
    }

    /// MMSE of one row by the separable closed form (requires [`ReluPlan::is_separable`]):
    /// for each coordinate, the two-piece mixture of spec §4.7.
    pub fn separable_row(&self, r_plus: &[f64], r_minus: &[f64], out: &mut ReluRow) {
        let d = self.d;
        *out = ReluRow::new(d);
        for j in 0..d {
            let g = self.gp[j * d + j];
            let p = self.p[j * d + j];
            let (rp, rm) = (r_plus[j], r_minus[j]);
            let m = scalar_mixture(g, p, rp, rm);
            out.v_mean[j] = m.0;
            out.v_cov[j * d + j] = m.1;
            out.relu_mean[j] = m.2;
            out.relu_cov[j * d + j] = m.3;
        }
    }

    /// MMSE of one row by the orthant decomposition (see the module documentation): every
    /// piece with the coarse rule, then the pieces holding at least `1e-5` of the mass again
    /// with the full rule.
    pub fn orthant_row(
        &self,
        r_plus: &[f64],
        r_minus: &[f64],
        rules: &ReluRules,
        out: &mut ReluRow,
    ) -> Result<()> {
        let d = self.d;
        let nf = 1usize << d;
        let dd = d * d;
        SCRATCH.with(|cell| {
            let mut guard = cell.borrow_mut();
            let s = &mut *guard;
            s.ensure(d);
            self.prepare_row(s, r_plus, r_minus);
            self.orthant_minimisers(s);
            // Mass bounds and multipliers.
            let half_log_2pi = 0.5 * (2.0 * PI).ln();
            let mut top = f64::NEG_INFINITY;
            for o in 0..nf {
                // g = v*H − b; λ_j = s_j g_j ≥ 0 on the active bounds.
                let h = &self.h[o * dd..(o + 1) * dd];
                let face = s.face[o];
                let mut log_lam = 0.0;
                for j in 0..d {
                    let mut g = -(s.rg[j] + if o & (1 << j) != 0 { s.rp[j] } else { 0.0 });
                    for a in 0..d {
                        g += s.vstar[o * d + a] * h[a * d + j];
                    }
                    let lam = if face & (1 << j) == 0 {
                        (sign_of(o, j) * g).max(0.0)
                    } else {
                        0.0
                    };
                    s.lam[o * d + j] = lam;
                    if face & (1 << j) == 0 {
                        log_lam += if lam > 0.0 {
                            lam.ln()
                        } else {
                            f64::NEG_INFINITY
                        };
                    }
                }
                // exp(−f*) ∫ exp(−½δHδ) over R^d, and the sharper
                // exp(−f*) Π_{j∉F} 1/λ_j · ∫ exp(−½δ_F H_FF δ_F) (f − f* ≥ Σ λ_j|v_j| + ½δHδ).
                let lb = -s.fstar[o] + d as f64 * half_log_2pi - 0.5 * self.logdet[o];
                let nfree = face.count_ones() as f64;
                let lb2 = -s.fstar[o] + nfree * half_log_2pi
                    - 0.5 * self.inv_logdet[face * nf + (o & face)]
                    - log_lam;
                s.logm[o] = lb.min(lb2);
                top = top.max(s.logm[o]);
            }
            for o in 0..nf {
                if s.logm[o] < top - SKIP {
                    s.logm[o] = f64::NEG_INFINITY;
                    continue;
                }
                s.logm[o] = self.orthant_piece(s, o, &rules.coarse)?;
            }
            if rules.coarse.0.len() < rules.fine.0.len() {
                let top = s.logm.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = s.logm.iter().map(|l| (l - top).exp()).sum();
                for o in 0..nf {
                    if s.logm[o] > f64::NEG_INFINITY && (s.logm[o] - top).exp() >= REFINE * total {
                        s.logm[o] = self.orthant_piece(s, o, &rules.fine)?;
                    }
                }
            }
            combine_pieces(s, d, nf, out)
        })
    }

    /// Integrates orthant `o`'s piece with the Gauss–Legendre `rule` per panel: returns its log
    /// mass (relative to `exp(−c_0)`) and writes its mean and covariance into the scratch.
    ///
    /// With `δ = v − v*` and `g = ∇f(v*)`, `f = f* + gδᵀ + ½δHδᵀ` on the orthant. Coordinates
    /// whose box does not reach the orthant's boundary (`D`, necessarily free, so `g_D = 0`)
    /// are Gaussian given the others, `δ_D = δ_C Mᵀ + N(0, H_DD^{-1})`, `M = −H_DD^{-1}H_DC`,
    /// and are integrated out exactly; the remaining coordinates `C` have the Schur-complement
    /// precision `H_C = H_CC + H_CD M`. On `C` one coordinate `k` is integrated analytically (a
    /// half-line truncated Gaussian given the others) and the rest by tensor Gauss–Legendre,
    /// with panels split at the mode `v*_j` (and, for one quadrature coordinate, where the
    /// conditional mean of `v_k` crosses 0).
    fn orthant_piece(&self, s: &mut Scratch, o: usize, rule: &(Vec<f64>, Vec<f64>)) -> Result<f64> {
        const M6: usize = MAX_RELU_DIM;
        let d = self.d;
        let dd = d * d;
        let full = (1usize << d) - 1;
        let h = &self.h[o * dd..(o + 1) * dd];
        let vstar: [f64; M6] =
            std::array::from_fn(|j| if j < d { s.vstar[o * d + j] } else { 0.0 });
        let sign: [f64; M6] = std::array::from_fn(|j| sign_of(o, j));
        // Gradient at v*: g = v*H − b.
        let mut g = [0.0; M6];
        for (j, gj) in g.iter_mut().enumerate().take(d) {
            let mut x = -(s.rg[j] + if o & (1 << j) != 0 { s.rp[j] } else { 0.0 });
            for a in 0..d {
                x += vstar[a] * h[a * d + j];
            }
            *gj = x;
        }
        // Boxes in the signed coordinates u_j = s_j v_j ≥ 0.
        let mut hi = [0.0; M6];
        let mut ustar = [0.0; M6];
        let mut cmask = 0usize;
        for j in 0..d {
            let sd = self.sd[o * d + j];
            let u = sign[j] * vstar[j];
            ustar[j] = u.max(0.0);
            if s.face[o] & (1 << j) != 0 {
                hi[j] = u + BOX_SDS * sd;
                if u - BOX_SDS * sd <= 0.0 {
                    cmask |= 1 << j;
                }
            } else {
                let lam = s.lam[o * d + j];
                hi[j] = if lam > 0.0 {
                    (BOX_SDS * sd).min(BOX_DECAY / lam)
                } else {
                    BOX_SDS * sd
                };
                cmask |= 1 << j;
            }
        }
        let dmask = full & !cmask;
        let hdd_inv = self.inv(dmask, o & dmask);
        let ndeep = dmask.count_ones() as f64;
        let half_log_2pi = 0.5 * (2.0 * PI).ln();
        let deep_log =
            ndeep * half_log_2pi - 0.5 * self.inv_logdet[dmask * (1usize << d) + (o & dmask)];
        if cmask == 0 {
            // No constraint reaches the piece: the Gaussian N(v*, H^{-1}) itself.
            s.mean[o * d..(o + 1) * d].copy_from_slice(&vstar[..d]);
            s.cov[o * dd..(o + 1) * dd].copy_from_slice(hdd_inv);
            return Ok(-s.fstar[o] + deep_log);
        }
        // Compact indices of C and D.
        let mut ci = [0usize; M6];
        let mut di = [0usize; M6];
        let (mut nc, mut nd) = (0, 0);
        for j in 0..d {
            if cmask & (1 << j) != 0 {
                ci[nc] = j;
                nc += 1;
            } else {
                di[nd] = j;
                nd += 1;
            }
        }
        let (ci, di) = (&ci[..nc], &di[..nd]);
        // M = −H_DD^{-1} H_DC (nd x nc) and H_C = H_CC + H_CD M (nc x nc), compact.
        let mut m = [0.0; M6 * M6];
        for (a, &ja) in di.iter().enumerate() {
            for (b, &jb) in ci.iter().enumerate() {
                let mut x = 0.0;
                for &ji in di {
                    x -= hdd_inv[ja * d + ji] * h[ji * d + jb];
                }
                m[a * M6 + b] = x;
            }
        }
        let mut hc = [0.0; M6 * M6];
        for (a, &ja) in ci.iter().enumerate() {
            for (b, &jb) in ci.iter().enumerate() {
                let mut x = h[ja * d + jb];
                for (e, &je) in di.iter().enumerate() {
                    x += h[ja * d + je] * m[e * M6 + b];
                }
                hc[a * M6 + b] = x;
            }
        }
        let gc: [f64; M6] = std::array::from_fn(|a| if a < nc { g[ci[a]] } else { 0.0 });
        let vc: [f64; M6] = std::array::from_fn(|a| if a < nc { vstar[ci[a]] } else { 0.0 });
        // The analytic coordinate kc: least variation of its conditional mean over the box.
        let mut kc = 0;
        let mut best = f64::INFINITY;
        for a in 0..nc {
            let tv: f64 = (0..nc)
                .filter(|&b| b != a)
                .map(|b| hi[ci[b]] * hc[a * M6 + b].abs())
                .sum::<f64>()
                / hc[a * M6 + a].sqrt();
            if tv < best {
                best = tv;
                kc = a;
            }
        }
        let k = ci[kc];
        let hkk = hc[kc * M6 + kc];
        if !(hkk > 0.0 && hkk.is_finite()) {
            return Err(Error::Numerical {
                what: "relu layer MMSE".into(),
                detail: "the marginal precision of an orthant piece is not positive".into(),
            });
        }
        let sigma = 1.0 / hkk.sqrt();
        // Quadrature coordinates (compact positions): C without kc.
        let mut oc = [0usize; M6];
        let mut q = 0;
        for a in (0..nc).filter(|&a| a != kc) {
            oc[q] = a;
            q += 1;
        }
        let oc = &oc[..q];
        let (x, w) = rule;
        for (slot, &a) in oc.iter().enumerate() {
            let j = ci[a];
            let nodes = &mut s.nodes[slot];
            nodes.clear();
            // Panel cuts in u_j: 0, the mode u*_j, the crossing point (one coordinate only),
            // the box end.
            let mut cuts = [0.0, hi[j], hi[j], hi[j]];
            let mut ncut = 2;
            let add = |u: f64, cuts: &mut [f64; 4], ncut: &mut usize| {
                if u > 0.0 && u < hi[j] {
                    cuts[*ncut] = u;
                    *ncut += 1;
                }
            };
            // Split at the mode only if it is well inside (the coarse rule never splits).
            let coarse = x.len() < 6;
            if !coarse && ustar[j] > 1.5 * self.sd[o * d + j] {
                add(ustar[j], &mut cuts, &mut ncut);
            }
            if !coarse && q == 1 && hc[kc * M6 + a] != 0.0 {
                let delta = (hkk * vstar[k] - g[k]) / hc[kc * M6 + a];
                add(sign[j] * (vstar[j] + delta), &mut cuts, &mut ncut);
            }
            let cuts = &mut cuts[..ncut];
            cuts.sort_by(|p, r| p.total_cmp(r));
            for p in 0..ncut - 1 {
                let (lo, up) = (cuts[p], cuts[p + 1]);
                let half = 0.5 * (up - lo);
                if half <= 0.0 {
                    continue;
                }
                let log_half = half.ln();
                for (xi, lwi) in x.iter().zip(w) {
                    let u = lo + half * (1.0 + xi);
                    nodes.push((sign[j] * u - vstar[j], lwi + log_half));
                }
            }
            if nodes.is_empty() {
                // Degenerate box (zero width): no mass in this orthant.
                return Ok(f64::NEG_INFINITY);
            }
        }
        // Tensor loop with log-sum-exp accumulation of the moments of x_C = v_C − v*_C.
        let mut s1 = [0.0; M6];
        let mut s2 = [0.0; M6 * M6];
        let (mut s0, mut run) = (0.0_f64, f64::NEG_INFINITY);
        let mut idx = [0usize; M6];
        let mut delta = [0.0; M6];
        let mut xv = [0.0; M6];
        let hk_row: [f64; M6] = std::array::from_fn(|b| if b < nc { hc[kc * M6 + b] } else { 0.0 });
        loop {
            let mut lw = 0.0;
            for (slot, &a) in oc.iter().enumerate() {
                let (da, lwa) = s.nodes[slot][idx[slot]];
                delta[a] = da;
                lw += lwa;
            }
            // −[g·δ + ½ δ H_C δ] over the quadrature coordinates, and the conditional mean
            // shift of v_k.
            let mut quad = 0.0;
            let mut hk = gc[kc];
            for &a in oc {
                let mut row = 0.0;
                for &b in oc {
                    row += hc[a * M6 + b] * delta[b];
                }
                quad += delta[a] * (gc[a] + 0.5 * row);
                hk += hk_row[a] * delta[a];
            }
            let mu = -hk / hkk;
            let (lz, cz, ek, vk) = signed_half_line(vc[kc] + mu, sigma, sign[k]);
            // log-weight up to the bounded factor cz ∈ (0, 1].
            lw += -quad + 0.5 * hkk * mu * mu + lz;
            if lw.is_nan() || cz.is_nan() {
                return Err(Error::Numerical {
                    what: "relu layer MMSE".into(),
                    detail: "the log-density of the orthant quadrature is NaN".into(),
                });
            }
            if lw > f64::NEG_INFINITY {
                if lw > run {
                    let f = (run - lw).exp();
                    s0 *= f;
                    s1[..nc].iter_mut().for_each(|a| *a *= f);
                    s2[..nc * M6].iter_mut().for_each(|a| *a *= f);
                    run = lw;
                }
                let wt = (lw - run).exp() * cz;
                s0 += wt;
                for &a in oc {
                    xv[a] = delta[a];
                }
                xv[kc] = ek - vc[kc];
                for a in 0..nc {
                    let wa = wt * xv[a];
                    s1[a] += wa;
                    for b in a..nc {
                        s2[a * M6 + b] += wa * xv[b];
                    }
                }
                s2[kc * M6 + kc] += wt * vk;
            }
            // Odometer.
            let mut slot = 0;
            while slot < q {
                idx[slot] += 1;
                if idx[slot] < s.nodes[slot].len() {
                    break;
                }
                idx[slot] = 0;
                slot += 1;
            }
            if slot == q {
                break;
            }
        }
        if s0.is_nan() || s0 <= 0.0 {
            return Ok(f64::NEG_INFINITY);
        }
        // Moments of x_C (compact), then lifted to D: x_D = x_C Mᵀ + N(0, H_DD^{-1}).
        let mut mc = [0.0; M6];
        for a in 0..nc {
            mc[a] = s1[a] / s0;
        }
        let mut ccc = [0.0; M6 * M6];
        for a in 0..nc {
            for b in a..nc {
                let c = s2[a * M6 + b] / s0 - mc[a] * mc[b];
                ccc[a * M6 + b] = c;
                ccc[b * M6 + a] = c;
            }
        }
        // Cov(x_D, x_C) = M C_CC.
        let mut mcc = [0.0; M6 * M6];
        for a in 0..nd {
            for b in 0..nc {
                mcc[a * M6 + b] = (0..nc).map(|e| m[a * M6 + e] * ccc[e * M6 + b]).sum();
            }
        }
        let mean = &mut s.mean[o * d..(o + 1) * d];
        let cov = &mut s.cov[o * dd..(o + 1) * dd];
        for (a, &ja) in ci.iter().enumerate() {
            mean[ja] = vstar[ja] + mc[a];
            for (b, &jb) in ci.iter().enumerate() {
                cov[ja * d + jb] = ccc[a * M6 + b];
            }
        }
        for (a, &ja) in di.iter().enumerate() {
            mean[ja] = vstar[ja] + (0..nc).map(|c| m[a * M6 + c] * mc[c]).sum::<f64>();
            for (b, &jb) in ci.iter().enumerate() {
                cov[ja * d + jb] = mcc[a * M6 + b];
                cov[jb * d + ja] = mcc[a * M6 + b];
            }
            for (b, &jb) in di.iter().enumerate() {
                cov[ja * d + jb] = hdd_inv[ja * d + jb]
                    + (0..nc)
                        .map(|c| mcc[a * M6 + c] * m[b * M6 + c])
                        .sum::<f64>();
            }
        }
        Ok(run + s0.ln() - s.fstar[o] + 0.5 * (2.0 * PI / hkk).ln() + deep_log)
    }
}

/// Combines the orthant pieces (log masses `s.logm`, means, covariances) into the mixture
/// moments of `v` and of `relu(v)` (`relu(v) = v D_o` on orthant `o`).
fn combine_pieces(s: &Scratch, d: usize, nf: usize, out: &mut ReluRow) -> Result<()> {
    let dd = d * d;
    let top = s.logm.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !top.is_finite() {
        return Err(Error::Numerical {
            what: "relu layer MMSE".into(),
            detail: "no orthant piece has mass".into(),
        });
    }
    let mut total = 0.0;
    for o in 0..nf {
        total += (s.logm[o] - top).exp();
    }
    *out = ReluRow::new(d);
    for o in 0..nf {
        let pi = (s.logm[o] - top).exp() / total;
        if pi == 0.0 {
            continue;
        }
        for a in 0..d {
            let m = s.mean[o * d + a];
            out.v_mean[a] += pi * m;
            if o & (1 << a) != 0 {
                out.relu_mean[a] += pi * m;
            }
        }
    }
    for o in 0..nf {
        let pi = (s.logm[o] - top).exp() / total;
        if pi == 0.0 {
            continue;
        }
        for a in 0..d {
            let ma = s.mean[o * d + a];
            let da = ma - out.v_mean[a];
            let on_a = o & (1 << a) != 0;
            let ra = if on_a { ma } else { 0.0 } - out.relu_mean[a];
            for b in 0..d {
                let mb = s.mean[o * d + b];
                let db = mb - out.v_mean[b];
                let on_b = o & (1 << b) != 0;
                let rb = if on_b { mb } else { 0.0 } - out.relu_mean[b];
                let c = s.cov[o * dd + a * d + b];
                out.v_cov[a * d + b] += pi * (c + da * db);
                out.relu_cov[a * d + b] += pi * (if on_a && on_b { c } else { 0.0 } + ra * rb);
            }
        }
    }
    Ok(())
}

/// The scalar relu belief `q(v) ∝ N(v; r⁺, 1/γ) exp(−p (relu(v) − r⁻)²/2)` (spec §4.7, scalar
/// MMSE): returns `(E v, Var v, E relu v, Var relu v)`.
///
/// Pieces: `v > 0` with precision `γ + p`, mean `m₊ = (γr⁺ + pr⁻)/(γ + p)`,
/// `log Z₊ = −γp(r⁺ − r⁻)²/(2(γ + p)) − ½log(γ + p) + log Φ(m₊√(γ + p))`; `v < 0` with
/// precision `γ`, mean `r⁺`, `log Z₋ = −p(r⁻)²/2 − ½log γ + log Φ(−r⁺√γ)`;
/// `w₊ = logistic(log Z₊ − log Z₋)`.
pub fn scalar_mixture(gamma: f64, p: f64, r_plus: f64, r_minus: f64) -> (f64, f64, f64, f64) {
    let hp = gamma + p;
    let mp = (gamma * r_plus + p * r_minus) / hp;
    let (lp, ep, vp) = half_line_moments(mp, 1.0 / hp.sqrt());
    let log_zp = -gamma * p * (r_plus - r_minus).powi(2) / (2.0 * hp) - 0.5 * hp.ln() + lp;
    let (ln_, en, vn) = half_line_moments(-r_plus, 1.0 / gamma.sqrt());
    let en = -en;
    let log_zn = -0.5 * p * r_minus * r_minus - 0.5 * gamma.ln() + ln_;
    let t = log_zp - log_zn;
    // logistic(t) and logistic(−t) without overflow.
    let (wp, wn) = if t >= 0.0 {
        let e = (-t).exp();
        (1.0 / (1.0 + e), e / (1.0 + e))
    } else {
        let e = t.exp();
        (e / (1.0 + e), 1.0 / (1.0 + e))
    };
    let mean = wp * ep + wn * en;
    let var = wp * vp + wn * vn + wp * wn * (ep - en).powi(2);
    let rmean = wp * ep;
    let rvar = wp * vp + wp * wn * ep * ep;
    (mean, var, rmean, rvar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfcx_matches_known_values() {
        // Reference values from 40-digit arithmetic (mpmath).
        assert!((erfcx(0.0) - 1.0).abs() < 1e-13);
        let cases = [
            (0.3, 0.734_599_334_567_655_2),
            (1.0, 0.427_583_576_155_807),
            (2.0, 0.255_395_676_310_505_74),
            (5.0, 0.110_704_637_733_068_63),
            (7.9, 0.070_857_477_367_397_0),
            (10.0, 0.056_140_992_743_822_59),
            (100.0, 0.005_641_613_782_989_433),
        ];
        for (t, v) in cases {
            assert!(
                (erfcx(t) - v).abs() < 1e-13 * v,
                "erfcx({t}) = {} vs {v}",
                erfcx(t)
            );
        }
        // erfc(−1) = 2 − erfc(1)
        let e1 = erfcx(1.0) * (-1.0f64).exp();
        assert!((erfcx(-1.0) * (-1.0f64).exp() - (2.0 - e1)).abs() < 1e-15);
    }

    #[test]
    fn log_ndtr_tails() {
        assert!((log_ndtr(0.0) - 0.5f64.ln()).abs() < 1e-13);
        // Reference values from 40-digit arithmetic (mpmath).
        assert!((log_ndtr(-40.0) + 804.608_442_013_753_8).abs() < 1e-10);
        assert!((log_ndtr(5.0) + 2.866_516_129_637_636e-7).abs() < 1e-19);
    }

    #[test]
    fn half_line_branches_agree() {
        // The two branches meet at a = 6 without a visible jump.
        let (l1, e1, v1) = half_line_moments(-6.0 * (1.0 - 1e-12), 1.0);
        let (l2, e2, v2) = half_line_moments(-6.0 * (1.0 + 1e-12), 1.0);
        assert!((l1 - l2).abs() < 1e-9 && (e1 - e2).abs() < 1e-9 && (v1 - v2).abs() < 1e-9);
    }
}
