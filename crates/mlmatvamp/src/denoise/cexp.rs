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
//!   (and so in the solver's history). The rows are solved by a row solver specialised to this
//!   objective (one scratch per chunk of rows, the sines and cosines of the line search's
//!   accepted point reused for the derivatives — in the SIMD lanes its residual too — loops of
//!   compile-time length for `K ≤ 16`): with
//!   the exact Hessian it performs [`super::newton::minimize`]'s operations (the same bits);
//!   with the Gauss–Newton Hessian `H = Γ + (u uᵀ + w wᵀ)/v` (`u + i w = g α ∘ e^{i z}`), a
//!   rank-2 update of the shared `Γ`, the step and `Σ_i = H^{-1}` come from the Woodbury
//!   identity through `Γ^{-1}` and the prior term along the line search from `Γ(z − r)` and
//!   `Γ p`, so a Newton step costs `O(K²)` instead of a `K x K` factorisation (equal up to
//!   rounding). These Gauss–Newton rows keep `Γ` and `Γ^{-1}` column-major (products as column
//!   updates, each entry summed in the same order) and are compiled a second time for AVX2/FMA,
//!   chosen at run time; both builds give the same bits (Rust never fuses `a * b + c`). Their
//!   sines and cosines are the sketch kernel's polynomial, vectorised over the `K` phases
//!   (within `3.3e-16` of the standard library's).
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
//!   **Safeguard** ([`CexpOutput::with_mmse_safeguard`], on in the recovery of
//!   `apps::cluster`, off by default): the extrinsic precision `Σ̄^{-1} − Γ` is positive definite
//!   only if the averaged covariance `Σ̄` is below the message covariance `C = Γ^{-1}`. The exact
//!   posterior satisfies `Σ̄ ⪯ C` on average when the rows' messages are their priors (law of
//!   total covariance, `E Cov(z|y) = C − Cov E(z|y)`); the surrogate, given a message far from
//!   the data, breaks it (measured up to `Σ̄_kk = 1.6 C_kk`), and the extrinsic message then
//!   diverges. With the safeguard, such a batch returns the MAP belief instead (its Gauss–Newton
//!   `Σ_i = (Γ + J_iᵀJ_i/v_i)^{-1}` is below `C` by construction), with a warning. The check is on
//!   the average over rows (a single row's posterior may exceed `C`, and at the fixed point most
//!   rows do in some direction), so with it a row's result depends on the other rows.
//!
//! The quadrature of `t` is a trapezoid rule on a uniform grid over `r_k ± 7 sd`
//! (`sd = √C_kk`) with a spacing of at most `2π/16` (the likelihood is `2π`-periodic in `t`
//! to first order), between [`CexpOptions::min_nodes`] and [`CexpOptions::max_nodes`] nodes;
//! when `max_nodes` binds (very uncertain phases, early iterations) the spacing is coarser and a
//! warning says so.

mod lanes;

use super::newton::{NewtonOptions, NewtonReport, RowObjective};
use super::{Estimator, HessianKind, Rng};
use crate::error::{Error, Result};
use crate::factor::{Factor, MonteCarloSe, OutputChannel, OutputDenoiser, OutputLaw, OutputShape};
use crate::message::{Belief, Message};
use crate::rows::{
    check_finite, first_non_finite, par_map_rows, par_map_rows_with, shape_str, RowMapOutput,
    ROW_CHUNK,
};
use crate::spd::{cholesky_in_place, sym, DMat};
use faer::{Mat, MatRef};
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// The largest number of clusters `K` (columns `d`) supported.
pub const MAX_CLUSTERS: usize = 64;

/// Half-width of the MMSE quadrature grid, in standard deviations of the message.
const GRID_HALF_WIDTH: f64 = 7.0;

/// Largest spacing of the MMSE quadrature grid (radians): 16 nodes per period `2π`.
const GRID_SPACING: f64 = std::f64::consts::TAU / 16.0;

/// `1.5 · 2^52`: adding it rounds an `|x| < 2^51` to the nearest integer (ties to even).
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;

/// `(sin θ, cos θ)` by Cody–Waite reduction modulo `π/2` and fdlibm's kernels, in plain
/// floating-point and bit operations (no branches, no calls), so that loops over it vectorise: the
/// sketch kernel's (`crate::apps::sketch`) and the Gauss–Newton rows' sines and cosines.
// The constants are fdlibm's, as published (more digits than an f64 holds).
#[allow(clippy::excessive_precision)]
#[inline(always)]
pub fn fast_sin_cos(x: f64) -> (f64, f64) {
    const TWO_OVER_PI: f64 = std::f64::consts::FRAC_2_PI;
    // π/2 split into pieces of 33 bits each (fdlibm's pio2_1, pio2_2, pio2_3).
    const P1: f64 = 1.570_796_326_734_125_614_17;
    const P2: f64 = 6.077_100_506_303_965_976_60e-11;
    const P3: f64 = 2.022_266_248_711_166_455_80e-21;
    const S1: f64 = -1.666_666_666_666_663_243_48e-01;
    const S2: f64 = 8.333_333_333_322_489_461_24e-03;
    const S3: f64 = -1.984_126_982_985_794_931_34e-04;
    const S4: f64 = 2.755_731_370_707_006_767_89e-06;
    const S5: f64 = -2.505_076_025_340_686_341_95e-08;
    const S6: f64 = 1.589_690_995_211_550_102_21e-10;
    const C1: f64 = 4.166_666_666_666_660_190_37e-02;
    const C2: f64 = -1.388_888_888_887_410_957_49e-03;
    const C3: f64 = 2.480_158_728_947_672_941_78e-05;
    const C4: f64 = -2.755_731_435_139_066_330_35e-07;
    const C5: f64 = 2.087_572_321_298_174_827_90e-09;
    const C6: f64 = -1.135_964_755_778_819_482_65e-11;
    // `k = round(x · 2/π)` (valid for `|x| < 2^51`): `x · 2/π + 1.5 · 2^52` lies in
    // `[2^52, 2^53)`, where the spacing is 1, so its mantissa holds `2^51 + k` and its two
    // lowest bits are the quadrant `q = k mod 4`.
    let shifted = x * TWO_OVER_PI + ROUND_MAGIC;
    let k = shifted - ROUND_MAGIC;
    let r = ((x - k * P1) - k * P2) - k * P3;
    let z = r * r;
    let s = r + r * z * (S1 + z * (S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)))));
    let c = 1.0 - 0.5 * z + z * z * (C1 + z * (C2 + z * (C3 + z * (C4 + z * (C5 + z * C6)))));
    // sin x = ±(s or c) and cos x = ±(c or s) by the quadrant: `odd` (`q mod 2`) is `1.0` or
    // `+0.0`, and a sign is flipped when the quadrant of `q` (sine) or of `q + 1` (cosine) is
    // 2 or 3. Integer operations on the bits: the same bits as multiplying by `±1.0` and
    // forming `q mod 2` in floating point (`tests::fast_sin_cos_keeps_the_bits_of_the_float_quadrant`).
    let bits = shifted.to_bits();
    let odd = f64::from_bits((bits & 1).wrapping_neg() & 1.0f64.to_bits());
    let sin_flip = (bits & 2) << 62;
    let cos_flip = (bits.wrapping_add(1) & 2) << 62;
    let sin = f64::from_bits((s + odd * (c - s)).to_bits() ^ sin_flip);
    let cos = f64::from_bits((c + odd * (s - c)).to_bits() ^ cos_flip);
    (sin, cos)
}

/// `(sin x_j, cos x_j)` for every `j` into `s`, `c`: the sketch kernel's polynomial
/// [`fast_sin_cos`] (Cody–Waite reduction, fdlibm's kernels; within `3.3e-16` of the standard
/// library's), in one loop over the slices, which the compiler vectorises (its quadrant's bit
/// operations included; a loop of four explicit lanes was left scalar by them) in the AVX2/FMA
/// builds of the Gauss–Newton rows and of the sketch kernel. One call per trial point covers
/// all `K` phases; it replaced glibc's `sincos` (22% of the decoding's CPU time): 14–16% less
/// single-thread CPU time, results equal up to rounding (`docs/sketched-clustering.md`, fourth
/// pass).
#[inline(always)]
pub(crate) fn sin_cos_into(x: &[f64], s: &mut [f64], c: &mut [f64]) {
    for ((x, s), c) in x.iter().zip(s.iter_mut()).zip(c.iter_mut()) {
        (*s, *c) = fast_sin_cos(*x);
    }
}

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
    /// The approximate MMSE's safeguard ([`CexpOutput::with_mmse_safeguard`]; default off).
    mmse_safeguard: bool,
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
            mmse_safeguard: false,
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
        .map(|o| o.with_mmse_safeguard(self.mmse_safeguard))
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
        .map(|o| o.with_mmse_safeguard(self.mmse_safeguard))
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
        .map(|o| o.with_mmse_safeguard(self.mmse_safeguard))
    }

    /// The same channel with the approximate MMSE's safeguard on or off (module documentation;
    /// off by default): where the averaged covariance `Σ̄` is not below the message covariance,
    /// the MAP belief of the whole batch is returned instead. It makes each row's result depend
    /// on the other rows', so it is a setting of the recovery (`apps::cluster`), not a property
    /// of the row denoiser.
    pub fn with_mmse_safeguard(self, on: bool) -> Self {
        CexpOutput {
            mmse_safeguard: on,
            ..self
        }
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

    /// The MAP rows of [`CexpOutput::map_denoise`] with the row solver for `K = N` (`N = 0`: any).
    fn map_rows<const N: usize>(
        &self,
        r: MatRef<'_, f64>,
        gamma_rows: &[f64],
        gn: &GnMatrices,
        lanes: bool,
    ) -> Result<RowMapOutput> {
        let (m, k) = (self.y.nrows(), self.weights.len());
        let kind = self.options.hessian;
        let newton = &self.options.newton;
        // Gauss–Newton rows with `K ≤ 16` are solved `LANES` at a time, a chunk at its first
        // row (`lanes`), with the one-row solver's bits; rows that leave the common path, and
        // every other case, run the one-row solver below.
        let use_lanes = lanes && N > 0 && kind == HessianKind::GaussNewton;
        par_map_rows_with(
            m,
            k,
            k * k + 3,
            || {
                (
                    MapRow::<N>::new(k),
                    use_lanes.then(lanes::GnLanes::<N>::new),
                )
            },
            |(row, group), i, z, acc| {
                if let Some(group) = group {
                    if !group.holds(i) {
                        // The rows of this chunk, from row i (the chunk's first) on.
                        let end = (i - i % ROW_CHUNK + ROW_CHUNK).min(m);
                        group.solve(&lanes::Chunk {
                            range: i..end,
                            y: self.y.as_ref(),
                            gains: &self.gains,
                            noise: &self.noise,
                            r,
                            alpha: &self.weights,
                            gn,
                            opts: newton,
                        });
                    }
                    let state = group.state(i);
                    if matches!(state, lanes::Lane::Done | lanes::Lane::Limited) {
                        group.estimate(i, z);
                        group.add_covariance(i, &mut acc[..k * k]);
                        if state == lanes::Lane::Limited {
                            acc[k * k + 2] += 1.0;
                        }
                        return Ok(());
                    }
                }
                row.set(
                    (self.y[(i, 0)], self.y[(i, 1)]),
                    self.gains[i],
                    self.noise[i],
                    &self.weights,
                    |j| r[(i, j)],
                );
                z.copy_from_slice(&row.r);
                let scale = 1.0 + row.r.iter().map(|x| x * x).sum::<f64>().sqrt();
                if kind == HessianKind::GaussNewton {
                    let (rep, added) = row.gn_row(gn, z, newton, scale, &mut acc[..k * k])?;
                    if rep.fallback_steps > 0 {
                        acc[k * k] += 1.0;
                    }
                    if !rep.converged {
                        acc[k * k + 2] += 1.0;
                    }
                    if added {
                        return Ok(());
                    }
                    // The 2 x 2 capacitance matrix was not positive definite numerically: the
                    // Cholesky inverse of the assembled Hessian.
                    row.derivatives(gamma_rows, z, HessianKind::GaussNewton);
                } else {
                    let rep = row.minimize(gamma_rows, z, kind, newton, scale)?;
                    if rep.fallback_steps > 0 {
                        acc[k * k] += 1.0;
                    }
                    if !rep.converged {
                        acc[k * k + 2] += 1.0;
                    }
                }
                if !row.covariance_into_inverse() {
                    acc[k * k + 1] += 1.0;
                    // Gauss–Newton curvature at the solution (the sines and cosines at `z` are
                    // those of the last evaluation of the derivatives).
                    row.derivatives(gamma_rows, z, HessianKind::GaussNewton);
                    if !row.covariance_into_inverse() {
                        return Err(Error::Numerical {
                            what: "complex-exponential MAP denoiser".into(),
                            detail: format!("the Gauss–Newton Hessian of row {i} is singular"),
                        });
                    }
                }
                for (a, c) in acc[..k * k].iter_mut().zip(row.inv.iter()) {
                    *a += c;
                }
                Ok(())
            },
        )
    }

    fn map_denoise(&self, plus: &Message) -> Result<Belief> {
        self.map_denoise_with(plus, true)
    }

    /// [`Self::map_denoise`]; with `lanes = false` every row takes the one-row solver (the
    /// reference of the lanes' bits in the tests).
    fn map_denoise_with(&self, plus: &Message, lanes: bool) -> Result<Belief> {
        let (m, k) = (self.y.nrows(), self.weights.len());
        let gamma = plus.precision.matrix();
        // Γ row-major, shared by every row.
        let gamma_rows: Vec<f64> = (0..k * k).map(|i| gamma[(i / k, i % k)]).collect();
        let r = plus.mean.as_ref();
        // With the Gauss–Newton curvature, H_i = Γ + (u_i u_iᵀ + w_i w_iᵀ)/v_i is a rank-2 update
        // of Γ, solved through C = Γ^{-1} by the Woodbury identity (Γ and C column-major).
        let gn = if self.options.hessian == HessianKind::GaussNewton {
            let c = plus.precision.inverse();
            GnMatrices {
                gamma: (0..k * k).map(|i| gamma[(i % k, i / k)]).collect(),
                cov: (0..k * k).map(|i| c[(i % k, i / k)]).collect(),
            }
        } else {
            GnMatrices {
                gamma: vec![],
                cov: vec![],
            }
        };
        // Accumulator: Σ_i H_i^{-1} (k*k), rows with gradient fallbacks, rows whose final
        // Hessian was not positive definite, rows that did not converge. The row solver is
        // compiled for every K up to 16 (loops of known length); any other K takes the general
        // one. All perform the same operations.
        macro_rules! dispatch {
            ($($n:literal)*) => {
                match k {
                    $($n => self.map_rows::<$n>(r, &gamma_rows, &gn, lanes)?,)*
                    _ => self.map_rows::<0>(r, &gamma_rows, &gn, lanes)?,
                }
            };
        }
        let out = dispatch!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
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
        let cov = sym(&DMat::from_fn(k, k, |a, b| out.acc[a + b * k] / nf));
        if self.mmse_safeguard {
            // The extrinsic precision `Σ̄^{-1} − Γ` is positive definite iff the eigenvalues of
            // `Lᵀ Σ̄ L` (`Γ = L Lᵀ`) lie in `(0, 1)` (module documentation).
            let l = plus.precision.cholesky_lower();
            let whitened = sym(&(l.transpose() * &cov * l)).symmetric_eigenvalues();
            let (lo, hi) = (whitened.min(), whitened.max());
            if !(lo > 0.0 && hi < 1.0) {
                return Ok(self.map_denoise(plus)?.with_warning(format!(
                    "complex-exponential MMSE: the averaged posterior covariance was not below the message covariance (eigenvalues of Σ̄Γ in [{lo:.3e}, {hi:.3e}]); the MAP belief was used"
                )));
            }
        }
        let mut belief = Belief::new(out.rows, cov);
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

/// The matrices of the Gauss–Newton rows, column-major (`a[i + j k] = A_ij`, so that a
/// product `A x` runs down contiguous columns): the message precision `Γ` and `C = Γ^{-1}`.
struct GnMatrices {
    gamma: Vec<f64>,
    cov: Vec<f64>,
}

/// Whether the AVX2/FMA build of the Gauss–Newton rows may run (detected once). Rust never
/// contracts `a * b + c` into a fused multiply-add, so both builds give the same bits.
fn use_avx2() -> bool {
    crate::rows::has_avx2_fma()
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

/// The MAP row solver with its scratch (one per chunk of rows, so that no row allocates): the
/// damped Newton iteration of [`super::newton::minimize`] on the objective of [`RowFit`],
/// specialised to it. It performs the same floating-point operations in the same order (the
/// Cholesky factorisation, triangular solves and dot products of `nalgebra` included), so the
/// results are bit-identical to the generic solver's, but it keeps the sines and cosines of the
/// line search's accepted point for the derivatives there (one `sin_cos` per phase and
/// evaluation instead of three per Newton step) and works on flat arrays.
struct MapRow<const N: usize> {
    /// `K` when `N = 0` (any `K`); for `N > 0` the dimension is `N`, known at compile time.
    k: usize,
    y: (f64, f64),
    /// `v` and `1/v`.
    v: f64,
    iv: f64,
    /// `g α_j`.
    ga: Vec<f64>,
    /// `u_j = g α_j e^{i z_j}` (real, imaginary part) at the current point.
    u0: Vec<f64>,
    u1: Vec<f64>,
    /// The message mean of the row.
    r: Vec<f64>,
    /// `z − r` at the last evaluated point.
    dz: Vec<f64>,
    /// The residual `e` at the current point (Gauss–Newton path).
    res: (f64, f64),
    /// Gauss–Newton path: `Γ (z − r)` at the current point, `Γ p` of the step, and `C u`,
    /// `C w`, `C g` (`C = Γ^{-1}`).
    gz: Vec<f64>,
    gp: Vec<f64>,
    cu0: Vec<f64>,
    cu1: Vec<f64>,
    cg: Vec<f64>,
    /// Sine and cosine of the phases at the current point and at the line search's trial point.
    sin: Vec<f64>,
    cos: Vec<f64>,
    tsin: Vec<f64>,
    tcos: Vec<f64>,
    grad: Vec<f64>,
    /// The Hessian, column-major (`hess[a + b k] = H_ab`).
    hess: Vec<f64>,
    /// Cholesky factor (lower triangle, column-major, as `nalgebra` stores it).
    factor: Vec<f64>,
    step: Vec<f64>,
    trial: Vec<f64>,
    /// `H^{-1}`, column-major.
    inv: Vec<f64>,
}

/// `nalgebra`'s dot product of two equally long slices (eight accumulators over blocks of eight,
/// then the tail in order), for bit-identical triangular solves.
#[inline]
fn nalgebra_dot(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len();
    let mut res = 0.0;
    let mut i = 0;
    let mut acc = [0.0f64; 8];
    while n - i >= 8 {
        for q in 0..8 {
            acc[q] += x[i + q] * y[i + q];
        }
        i += 8;
    }
    res += acc[0] + acc[4];
    res += acc[1] + acc[5];
    res += acc[2] + acc[6];
    res += acc[3] + acc[7];
    for q in i..n {
        res += x[q] * y[q];
    }
    res
}

/// `nalgebra`'s `Cholesky::solve_mut` for one right-hand side `b`: `L y = b`, then `Lᵀ x = y`.
/// `skip` leading entries of `b` are known to be zero (they stay zero in the forward pass).
fn cholesky_solve<const N: usize>(l: &[f64], n: usize, b: &mut [f64], skip: usize) {
    let n = if N > 0 { N } else { n };
    let (l, b) = (&l[..n * n], &mut b[..n]);
    for i in skip..n {
        let coeff = b[i] / l[i + i * n];
        b[i] = coeff;
        let col = &l[i * n..(i + 1) * n];
        for r in i + 1..n {
            b[r] += -coeff * col[r];
        }
    }
    for i in (0..n).rev() {
        let dot = nalgebra_dot(&l[i * n + i + 1..(i + 1) * n], &b[i + 1..n]);
        b[i] = (b[i] - dot) / l[i + i * n];
    }
}

impl<const N: usize> MapRow<N> {
    /// The dimension `K`.
    #[inline(always)]
    fn k(&self) -> usize {
        if N > 0 {
            N
        } else {
            self.k
        }
    }

    fn new(k: usize) -> Self {
        debug_assert!(N == 0 || N == k);
        let v = || vec![0.0; k];
        MapRow {
            k,
            y: (0.0, 0.0),
            v: 1.0,
            iv: 1.0,
            ga: v(),
            u0: v(),
            u1: v(),
            r: v(),
            dz: v(),
            res: (0.0, 0.0),
            gz: v(),
            gp: v(),
            cu0: v(),
            cu1: v(),
            cg: v(),
            sin: v(),
            cos: v(),
            tsin: v(),
            tcos: v(),
            grad: v(),
            hess: vec![0.0; k * k],
            factor: vec![0.0; k * k],
            step: v(),
            trial: v(),
            inv: vec![0.0; k * k],
        }
    }

    /// Loads row `i`: observation, gain, noise variance, weights and message mean `r_j`.
    fn set(&mut self, y: (f64, f64), g: f64, v: f64, alpha: &[f64], r: impl Fn(usize) -> f64) {
        self.y = y;
        self.v = v;
        self.iv = 1.0 / v;
        for (j, a) in alpha.iter().enumerate() {
            self.ga[j] = g * a;
            self.r[j] = r(j);
        }
    }

    /// The residual `e = y − Σ g α_j e^{i z_j}` from the sines and cosines `(s, c)`.
    #[inline(always)]
    fn residual(&self, s: &[f64], c: &[f64]) -> (f64, f64) {
        let (mut re, mut im) = (self.y.0, self.y.1);
        for ((ga, s), c) in self.ga.iter().zip(s).zip(c) {
            re -= ga * c;
            im -= ga * s;
        }
        (re, im)
    }

    /// `f(z)` at the trial point `self.trial`, whose sines and cosines are kept in
    /// `tsin`, `tcos` ([`RowFit::value`]'s operations).
    fn trial_value(&mut self, gamma: &[f64]) -> f64 {
        let k = self.k();
        for j in 0..k {
            let (s, c) = self.trial[j].sin_cos();
            self.tsin[j] = s;
            self.tcos[j] = c;
            self.dz[j] = self.trial[j] - self.r[j];
        }
        let (er, ei) = self.residual(&self.tsin, &self.tcos);
        let mut q = 0.0;
        for a in 0..k {
            let da = self.dz[a];
            let row = &gamma[a * k..(a + 1) * k];
            for (g, db) in row.iter().zip(&self.dz) {
                q += da * g * db;
            }
        }
        (er * er + ei * ei) / (2.0 * self.v) + 0.5 * q
    }

    /// `f(z)`, the gradient and the Hessian of kind `kind` at `z`, whose sines and cosines are
    /// in `sin`, `cos` ([`RowFit::derivatives`]'s operations).
    fn derivatives(&mut self, gamma: &[f64], z: &[f64], kind: HessianKind) -> f64 {
        let k = self.k();
        let (er, ei) = self.residual(&self.sin, &self.cos);
        for j in 0..k {
            self.dz[j] = z[j] - self.r[j];
        }
        for j in 0..k {
            self.u0[j] = self.ga[j] * self.cos[j];
            self.u1[j] = self.ga[j] * self.sin[j];
        }
        let iv = self.iv;
        let (u0, u1, dz) = (&self.u0[..k], &self.u1[..k], &self.dz[..k]);
        let hess = &mut self.hess[..k * k];
        let mut prior = 0.0;
        for a in 0..k {
            let (ua0, ua1) = (u0[a], u1[a]);
            let row = &gamma[a * k..(a + 1) * k];
            let mut gz = 0.0;
            for b in 0..k {
                gz += row[b] * dz[b];
                let mut h = (ua0 * u0[b] + ua1 * u1[b]) * iv + row[b];
                if a == b && kind == HessianKind::Exact {
                    h += (er * ua0 + ei * ua1) * iv;
                }
                hess[a + b * k] = h;
            }
            prior += 0.5 * dz[a] * gz;
            self.grad[a] = (er * ua1 - ei * ua0) * iv + gz;
        }
        (er * er + ei * ei) * iv * 0.5 + prior
    }

    /// `newton::newton_direction`: `p = −H^{-1} g`; `false` if `H` is not positive definite.
    fn newton_direction(&mut self) -> bool {
        let k = self.k();
        self.factor.copy_from_slice(&self.hess);
        if !cholesky_in_place::<N>(&mut self.factor, k) {
            return false;
        }
        for j in 0..k {
            self.step[j] = -self.grad[j];
        }
        cholesky_solve::<N>(&self.factor, k, &mut self.step, 0);
        self.step.iter().all(|x| x.is_finite())
    }

    /// `newton::gradient_direction`.
    fn gradient_direction(&mut self) {
        let k = self.k();
        let mut kappa = 0.0_f64;
        for a in 0..k {
            let s: f64 = (0..k).map(|b| self.hess[a + b * k].abs()).sum();
            kappa = kappa.max(s);
        }
        if !(kappa.is_finite() && kappa > 0.0) {
            kappa = 1.0;
        }
        for j in 0..k {
            self.step[j] = -self.grad[j] / kappa;
        }
    }

    /// `newton::line_search`; on success `v` and the current sines and cosines move to the
    /// accepted point.
    fn line_search(
        &mut self,
        gamma: &[f64],
        v: &mut [f64],
        f: f64,
        opts: &NewtonOptions,
    ) -> Option<f64> {
        let slope: f64 = self
            .grad
            .iter()
            .zip(self.step.iter())
            .map(|(g, p)| g * p)
            .sum();
        if slope.is_nan() || slope >= 0.0 {
            return None;
        }
        let noise = 8.0 * f64::EPSILON * (1.0 + f.abs());
        let mut t = 1.0;
        for _ in 0..=opts.max_halvings {
            for ((x, &vj), &pj) in self.trial.iter_mut().zip(v.iter()).zip(self.step.iter()) {
                *x = vj + t * pj;
            }
            let ft = self.trial_value(gamma);
            if ft.is_finite() && ft <= f + opts.armijo * t * slope + noise {
                v.copy_from_slice(&self.trial);
                std::mem::swap(&mut self.sin, &mut self.tsin);
                std::mem::swap(&mut self.cos, &mut self.tcos);
                return Some(ft);
            }
            t *= 0.5;
        }
        None
    }

    /// `newton::minimize` from `v` (overwritten with the solution); afterwards `hess` holds the
    /// Hessian of kind `kind` at the returned point.
    fn minimize(
        &mut self,
        gamma: &[f64],
        v: &mut [f64],
        kind: HessianKind,
        opts: &NewtonOptions,
        scale: f64,
    ) -> Result<NewtonReport> {
        for j in 0..self.k() {
            let (s, c) = v[j].sin_cos();
            self.sin[j] = s;
            self.cos[j] = c;
        }
        let tol = opts.grad_tol * scale;
        let mut report = NewtonReport::unstarted();
        loop {
            let f = self.derivatives(gamma, v, kind);
            let gn = self.grad.iter().map(|a| a * a).sum::<f64>().sqrt();
            report.value = f;
            report.grad_norm = gn;
            if !f.is_finite() || !gn.is_finite() || self.hess.iter().any(|x| !x.is_finite()) {
                return Err(super::newton::not_finite(report.iterations, f, gn));
            }
            if gn <= tol {
                report.converged = true;
                return Ok(report);
            }
            if report.iterations >= opts.max_iterations {
                return Ok(report);
            }
            let accepted = if self.newton_direction() {
                match self.line_search(gamma, v, f, opts) {
                    Some(_) => true,
                    None => {
                        self.gradient_direction();
                        report.fallback_steps += 1;
                        self.line_search(gamma, v, f, opts).is_some()
                    }
                }
            } else {
                self.gradient_direction();
                report.fallback_steps += 1;
                self.line_search(gamma, v, f, opts).is_some()
            };
            if !accepted {
                return Ok(report);
            }
            report.iterations += 1;
        }
    }

    /// `y_i = Σ_j A_ij x_j` (summed in the order `j = 0, 1, …`) for the column-major `k x k`
    /// matrix `a`, as `k` column updates of `y` (vectorised over `i`).
    #[inline(always)]
    fn matvec(a: &[f64], x: &[f64], y: &mut [f64], k: usize) {
        let y = &mut y[..k];
        y.fill(0.0);
        for (col, xj) in a[..k * k].chunks_exact(k).zip(&x[..k]) {
            for (yi, aij) in y.iter_mut().zip(col) {
                *yi += aij * xj;
            }
        }
    }

    /// Gauss–Newton solve: `C u`, `C w` and the 2 x 2 capacitance matrix
    /// `S = v I + [u w]ᵀ C [u w]` at the current point (`u`, `w` = `u0`, `u1`; `cov` = `C`,
    /// column-major); `None` if `S` is not positive definite numerically.
    #[inline(always)]
    fn capacitance(&mut self, cov: &[f64]) -> Option<[f64; 3]> {
        let k = self.k();
        {
            let (y0, y1) = (&mut self.cu0[..k], &mut self.cu1[..k]);
            y0.fill(0.0);
            y1.fill(0.0);
            for ((col, x0), x1) in cov[..k * k]
                .chunks_exact(k)
                .zip(&self.u0[..k])
                .zip(&self.u1[..k])
            {
                for ((a0, a1), cij) in y0.iter_mut().zip(y1.iter_mut()).zip(col) {
                    *a0 += cij * x0;
                    *a1 += cij * x1;
                }
            }
        }
        let dot =
            |a: &[f64], b: &[f64]| a[..k].iter().zip(&b[..k]).map(|(x, y)| x * y).sum::<f64>();
        let s00 = self.v + dot(&self.u0, &self.cu0);
        let s11 = self.v + dot(&self.u1, &self.cu1);
        let s01 = 0.5 * (dot(&self.u0, &self.cu1) + dot(&self.u1, &self.cu0));
        let det = s00 * s11 - s01 * s01;
        if det > 0.0 && det.is_finite() && s00 > 0.0 {
            Some([s11 / det, -s01 / det, s00 / det])
        } else {
            None
        }
    }

    /// `f`, the gradient, `u` and `w` at the current point from the kept sines, cosines,
    /// `Γ (z − r)` and `(z − r)ᵀ Γ (z − r) = q`.
    #[inline(always)]
    fn gn_derivatives(&mut self, q: f64) -> f64 {
        let k = self.k();
        let (er, ei) = self.residual(&self.sin, &self.cos);
        self.res = (er, ei);
        let iv = self.iv;
        for a in 0..k {
            let (u0, u1) = (self.ga[a] * self.cos[a], self.ga[a] * self.sin[a]);
            self.u0[a] = u0;
            self.u1[a] = u1;
            self.grad[a] = (er * u1 - ei * u0) * iv + self.gz[a];
        }
        (er * er + ei * ei) * iv * 0.5 + 0.5 * q
    }

    /// One Gauss–Newton row ([`MapRow::minimize_gn`], then [`MapRow::woodbury_covariance`] into
    /// `acc`), in the AVX2/FMA build when the CPU has it (the same bits).
    fn gn_row(
        &mut self,
        gn: &GnMatrices,
        v: &mut [f64],
        opts: &NewtonOptions,
        scale: f64,
        acc: &mut [f64],
    ) -> Result<(NewtonReport, bool)> {
        #[cfg(target_arch = "x86_64")]
        if use_avx2() {
            // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
            return unsafe { self.gn_row_avx2(gn, v, opts, scale, acc) };
        }
        self.gn_row_portable(gn, v, opts, scale, acc)
    }

    /// [`MapRow::gn_row`] compiled for AVX2 and FMA.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn gn_row_avx2(
        &mut self,
        gn: &GnMatrices,
        v: &mut [f64],
        opts: &NewtonOptions,
        scale: f64,
        acc: &mut [f64],
    ) -> Result<(NewtonReport, bool)> {
        self.gn_row_portable(gn, v, opts, scale, acc)
    }

    #[inline(always)]
    fn gn_row_portable(
        &mut self,
        gn: &GnMatrices,
        v: &mut [f64],
        opts: &NewtonOptions,
        scale: f64,
        acc: &mut [f64],
    ) -> Result<(NewtonReport, bool)> {
        let rep = self.minimize_gn(&gn.gamma, &gn.cov, v, opts, scale)?;
        let added = self.woodbury_covariance(&gn.cov, acc);
        Ok((rep, added))
    }

    /// [`MapRow::minimize`] with the Gauss–Newton curvature, in `O(K²)` per step: the step
    /// `p = −H^{-1} g` by the Woodbury identity through `C = Γ^{-1}` (`cov`; `gamma` = `Γ`,
    /// both column-major), and the prior term along the line search from `Γ (z − r)` and
    /// `Γ p` (no `K x K` matrix is formed or factorised). The same stopping rule, Armijo line
    /// search and gradient fallback; the sines and cosines by [`sin_cos_into`].
    #[inline(always)]
    fn minimize_gn(
        &mut self,
        gamma: &[f64],
        cov: &[f64],
        v: &mut [f64],
        opts: &NewtonOptions,
        scale: f64,
    ) -> Result<NewtonReport> {
        let k = self.k();
        sin_cos_into(&v[..k], &mut self.sin[..k], &mut self.cos[..k]);
        for j in 0..k {
            self.dz[j] = v[j] - self.r[j];
        }
        Self::matvec(gamma, &self.dz, &mut self.gz, k);
        let mut q: f64 = self.dz[..k]
            .iter()
            .zip(&self.gz[..k])
            .map(|(a, b)| a * b)
            .sum();
        let tol = opts.grad_tol * scale;
        let mut report = NewtonReport::unstarted();
        loop {
            let f = self.gn_derivatives(q);
            let gn = self.grad[..k].iter().map(|a| a * a).sum::<f64>().sqrt();
            report.value = f;
            report.grad_norm = gn;
            if !f.is_finite() || !gn.is_finite() {
                return Err(super::newton::not_finite(report.iterations, f, gn));
            }
            if gn <= tol {
                report.converged = true;
                return Ok(report);
            }
            if report.iterations >= opts.max_iterations {
                return Ok(report);
            }
            // p = −(C g − [Cu Cw] S^{-1} [Cu Cw]ᵀ g).
            let newton = match self.capacitance(cov) {
                Some([i00, i01, i11]) => {
                    // C g = C ((e_re w − e_im u)/v + Γ(z − r)) = (e_re Cw − e_im Cu)/v + (z − r).
                    let (er, ei) = self.res;
                    for j in 0..k {
                        self.cg[j] = (er * self.cu1[j] - ei * self.cu0[j]) * self.iv + self.dz[j];
                    }
                    let t0: f64 = self.cu0[..k]
                        .iter()
                        .zip(&self.grad[..k])
                        .map(|(a, b)| a * b)
                        .sum();
                    let t1: f64 = self.cu1[..k]
                        .iter()
                        .zip(&self.grad[..k])
                        .map(|(a, b)| a * b)
                        .sum();
                    let (s0, s1) = (i00 * t0 + i01 * t1, i01 * t0 + i11 * t1);
                    for j in 0..k {
                        self.step[j] = -(self.cg[j] - self.cu0[j] * s0 - self.cu1[j] * s1);
                    }
                    self.step[..k].iter().all(|x| x.is_finite())
                }
                None => false,
            };
            let accepted = if newton {
                match self.gn_line_search(gamma, v, f, &mut q, opts) {
                    true => true,
                    false => {
                        self.gn_gradient_direction(gamma);
                        report.fallback_steps += 1;
                        self.gn_line_search(gamma, v, f, &mut q, opts)
                    }
                }
            } else {
                self.gn_gradient_direction(gamma);
                report.fallback_steps += 1;
                self.gn_line_search(gamma, v, f, &mut q, opts)
            };
            if !accepted {
                return Ok(report);
            }
            report.iterations += 1;
        }
    }

    /// [`MapRow::gradient_direction`] for the Gauss–Newton Hessian `Γ + (u uᵀ + w wᵀ)/v`
    /// (`gamma` column-major).
    #[inline(always)]
    fn gn_gradient_direction(&mut self, gamma: &[f64]) {
        let k = self.k();
        let mut kappa = 0.0_f64;
        for a in 0..k {
            let s: f64 = (0..k)
                .map(|b| {
                    ((self.u0[a] * self.u0[b] + self.u1[a] * self.u1[b]) * self.iv
                        + gamma[a + b * k])
                        .abs()
                })
                .sum();
            kappa = kappa.max(s);
        }
        if !(kappa.is_finite() && kappa > 0.0) {
            kappa = 1.0;
        }
        for j in 0..k {
            self.step[j] = -self.grad[j] / kappa;
        }
    }

    /// [`MapRow::line_search`] with the prior term `½ (d + t p)ᵀ Γ (d + t p)` expanded in `t`;
    /// on success `v`, the sines and cosines, `z − r`, `Γ (z − r)` and `q` move to the accepted
    /// point.
    #[inline(always)]
    fn gn_line_search(
        &mut self,
        gamma: &[f64],
        v: &mut [f64],
        f: f64,
        q: &mut f64,
        opts: &NewtonOptions,
    ) -> bool {
        let k = self.k();
        let slope: f64 = self.grad[..k]
            .iter()
            .zip(&self.step[..k])
            .map(|(g, p)| g * p)
            .sum();
        if slope.is_nan() || slope >= 0.0 {
            return false;
        }
        Self::matvec(gamma, &self.step, &mut self.gp, k);
        let cross: f64 = (0..k)
            .map(|j| self.step[j] * self.gz[j] + self.dz[j] * self.gp[j])
            .sum();
        let quad: f64 = self.step[..k]
            .iter()
            .zip(&self.gp[..k])
            .map(|(a, b)| a * b)
            .sum();
        let noise = 8.0 * f64::EPSILON * (1.0 + f.abs());
        let mut t = 1.0;
        for _ in 0..=opts.max_halvings {
            for j in 0..k {
                self.trial[j] = v[j] + t * self.step[j];
            }
            sin_cos_into(&self.trial[..k], &mut self.tsin[..k], &mut self.tcos[..k]);
            let (er, ei) = self.residual(&self.tsin, &self.tcos);
            let qt = *q + t * cross + t * t * quad;
            let ft = (er * er + ei * ei) / (2.0 * self.v) + 0.5 * qt;
            if ft.is_finite() && ft <= f + opts.armijo * t * slope + noise {
                v[..k].copy_from_slice(&self.trial[..k]);
                std::mem::swap(&mut self.sin, &mut self.tsin);
                std::mem::swap(&mut self.cos, &mut self.tcos);
                for j in 0..k {
                    self.dz[j] = v[j] - self.r[j];
                    self.gz[j] += t * self.gp[j];
                }
                *q = qt;
                return true;
            }
            t *= 0.5;
        }
        false
    }

    /// Adds `H^{-1} = C − [Cu Cw] S^{-1} [Cu Cw]ᵀ` at the current point to `acc` (column-major;
    /// `cov` = `C`, column-major); `false` (nothing added) if `S` is not positive definite
    /// numerically.
    #[inline(always)]
    fn woodbury_covariance(&mut self, cov: &[f64], acc: &mut [f64]) -> bool {
        let k = self.k();
        // u, w at the solution (gn_derivatives ran there last).
        let Some([i00, i01, i11]) = self.capacitance(cov) else {
            return false;
        };
        for b in 0..k {
            let (x0, x1) = (self.cu0[b], self.cu1[b]);
            let (y0, y1) = (i00 * x0 + i01 * x1, i01 * x0 + i11 * x1);
            let col = &mut acc[b * k..(b + 1) * k];
            let cov_col = &cov[b * k..(b + 1) * k];
            for a in 0..k {
                col[a] += cov_col[a] - (self.cu0[a] * y0 + self.cu1[a] * y1);
            }
        }
        true
    }

    /// `inv = H^{-1}` (`nalgebra`'s `Cholesky::inverse`); `false` if `H` is not positive definite.
    fn covariance_into_inverse(&mut self) -> bool {
        let k = self.k();
        self.factor.copy_from_slice(&self.hess);
        if !cholesky_in_place::<N>(&mut self.factor, k) {
            return false;
        }
        self.inv.fill(0.0);
        for c in 0..k {
            let col = &mut self.inv[c * k..(c + 1) * k];
            col[c] = 1.0;
            cholesky_solve::<N>(&self.factor, k, col, c);
        }
        true
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::denoise::newton::{minimize, NewtonWorkspace};
    use crate::rng::{rng_from_seed, standard_normal};
    use crate::spd::Spd;
    use nalgebra::Cholesky;

    /// [`fast_sin_cos`] with its quadrant in floating-point arithmetic (its form until 7
    /// December 2026): `q = k mod 4` and its bits by exact roundings, the signs as `±1.0`
    /// factors.
    #[allow(clippy::excessive_precision)]
    fn float_quadrant_sin_cos(x: f64) -> (f64, f64) {
        let round_int = |v: f64| (v + ROUND_MAGIC) - ROUND_MAGIC;
        let (s, c, k) = {
            // The same reduction and kernels as `fast_sin_cos` (the quadrant aside).
            let k = round_int(x * std::f64::consts::FRAC_2_PI);
            let r = ((x - k * 1.570_796_326_734_125_614_17) - k * 6.077_100_506_303_965_976_60e-11)
                - k * 2.022_266_248_711_166_455_80e-21;
            let z = r * r;
            let s = r + r
                * z
                * (-1.666_666_666_666_663_243_48e-01
                    + z * (8.333_333_333_322_489_461_24e-03
                        + z * (-1.984_126_982_985_794_931_34e-04
                            + z * (2.755_731_370_707_006_767_89e-06
                                + z * (-2.505_076_025_340_686_341_95e-08
                                    + z * 1.589_690_995_211_550_102_21e-10)))));
            let c = 1.0 - 0.5 * z
                + z * z
                    * (4.166_666_666_666_660_190_37e-02
                        + z * (-1.388_888_888_887_410_957_49e-03
                            + z * (2.480_158_728_947_672_941_78e-05
                                + z * (-2.755_731_435_139_066_330_35e-07
                                    + z * (2.087_572_321_298_174_827_90e-09
                                        + z * -1.135_964_755_778_819_482_65e-11)))));
            (s, c, k)
        };
        let q = k - 4.0 * round_int(0.25 * k - 0.375);
        let high = round_int(0.5 * q - 0.25);
        let odd = q - 2.0 * high;
        let q1 = q + 1.0 - 4.0 * round_int(0.25 * (q + 1.0) - 0.375);
        let high1 = round_int(0.5 * q1 - 0.25);
        let sin = (1.0 - 2.0 * high) * (s + odd * (c - s));
        let cos = (1.0 - 2.0 * high1) * (c + odd * (s - c));
        (sin, cos)
    }

    /// The quadrant from the bits of `x · 2/π + 1.5 · 2^52` and the signs as flipped sign bits
    /// give exactly the bits of the floating-point quadrant, signed zeros included: at zeros,
    /// at and next to every multiple of `π/4` up to `1024 π` (all four quadrants on both sides
    /// of zero), near `2^e π` up to `2^20 π`, and at random phases of the sizes the sketch and
    /// the recovery meet.
    #[test]
    fn fast_sin_cos_keeps_the_bits_of_the_float_quadrant() {
        let mut xs = vec![0.0, -0.0, 1e-300, -1e-300, f64::MIN_POSITIVE, 1e-8, -1e-8];
        for m in -4096i64..=4096 {
            let x = m as f64 * std::f64::consts::FRAC_PI_4;
            xs.extend([x, x.next_up(), x.next_down()]);
        }
        for e in 0..=20 {
            let x = std::f64::consts::PI * f64::powi(2.0, e);
            for y in [x, -x, x.next_up(), -x.next_down(), x + 0.5, -x - 0.5] {
                xs.push(y);
            }
        }
        let mut rng = rng_from_seed(20_261_207);
        let draws = standard_normal(20_000, 1, &mut rng);
        for (i, g) in draws.col(0).iter().enumerate() {
            xs.push(g * [1.0, 30.0, 1e3, 7e3][i % 4]);
        }
        for &x in &xs {
            let (s, c) = fast_sin_cos(x);
            let (s0, c0) = float_quadrant_sin_cos(x);
            assert_eq!(
                (s.to_bits(), c.to_bits()),
                (s0.to_bits(), c0.to_bits()),
                "x = {x:e}: ({s:e}, {c:e}) against ({s0:e}, {c0:e})"
            );
        }
    }

    /// The reference: every row by the generic `newton::minimize` on [`RowFit`], `Σ_i` by
    /// `nalgebra`'s Cholesky inverse (the denoiser before its specialised row solvers).
    fn reference(out: &CexpOutput, plus: &Message) -> (Mat<f64>, DMat) {
        let (m, k) = (out.y.nrows(), out.weights.len());
        let gamma = plus.precision.matrix();
        let mut est = Mat::zeros(m, k);
        let mut acc = DMat::zeros(k, k);
        // Summed per chunk of rows, then over chunks, as `par_map_rows` does.
        let mut chunk = DMat::zeros(k, k);
        for i in 0..m {
            if i % crate::rows::ROW_CHUNK == 0 {
                acc += &chunk;
                chunk.fill(0.0);
            }
            let obj = RowFit {
                y: (out.y[(i, 0)], out.y[(i, 1)]),
                g: out.gains[i],
                v: out.noise[i],
                alpha: &out.weights,
                r: (0..k).map(|j| plus.mean[(i, j)]).collect(),
                gamma,
            };
            let mut z = obj.r.clone();
            let mut ws = NewtonWorkspace::new(k);
            let scale = 1.0 + obj.r.iter().map(|x| x * x).sum::<f64>().sqrt();
            minimize(
                &obj,
                &mut z,
                out.options.hessian,
                &out.options.newton,
                scale,
                &mut ws,
            )
            .unwrap();
            chunk += match Cholesky::new(ws.hessian().clone()) {
                Some(ch) => ch.inverse(),
                None => {
                    let mut h = DMat::zeros(k, k);
                    let mut g = vec![0.0; k];
                    obj.derivatives(&z, HessianKind::GaussNewton, &mut g, &mut h);
                    Cholesky::new(h).unwrap().inverse()
                }
            };
            for j in 0..k {
                est[(i, j)] = z[j];
            }
        }
        acc += &chunk;
        (est, acc / m as f64)
    }

    fn problem(k: usize, hessian: HessianKind, seed: u64) -> (CexpOutput, Message) {
        problem_with(k, hessian, seed, 1e-13, 1.0)
    }

    /// [`problem`] with a given gradient tolerance, and the message's deviation from the truth
    /// scaled by `spread`.
    fn problem_with(
        k: usize,
        hessian: HessianKind,
        seed: u64,
        grad_tol: f64,
        spread: f64,
    ) -> (CexpOutput, Message) {
        let m = 300;
        let mut rng = rng_from_seed(seed);
        let z = standard_normal(m, k, &mut rng);
        let weights: Vec<f64> = (0..k).map(|j| 1.0 + 0.1 * j as f64).collect();
        let total: f64 = weights.iter().sum();
        let weights: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let gains: Vec<f64> = (0..m).map(|i| 0.3 + 0.7 * (i as f64 / m as f64)).collect();
        let noise: Vec<f64> = (0..m).map(|i| 1e-3 + 1e-4 * (i % 7) as f64).collect();
        // A tight gradient tolerance, so that the two Gauss–Newton paths (equal up to rounding)
        // stop at the same point up to rounding.
        let options = CexpOptions {
            hessian,
            newton: NewtonOptions {
                grad_tol,
                ..NewtonOptions::default()
            },
            ..CexpOptions::default()
        };
        let proto = CexpOutput::new(
            Mat::zeros(m, 2),
            gains,
            weights,
            noise,
            Estimator::Map,
            options,
        )
        .unwrap();
        let out = proto.draw(z.as_ref(), &mut rng).unwrap();
        // The message: the truth plus noise, with a correlated precision.
        let mean = &z + standard_normal(m, k, &mut rng) * faer::Scale(0.3 * spread);
        let b = DMat::from_fn(k, k, |a, c| {
            if a == c {
                2.0
            } else {
                0.3 / (1.0 + (a + c) as f64)
            }
        });
        let precision = Spd::from_symmetric("Γ", &b * b.transpose()).unwrap();
        (out, Message { mean, precision })
    }

    /// With the exact Hessian the specialised row solver gives the generic Newton solver's bits
    /// (fixed-size path for `K ≤ 16`, general path above); with Gauss–Newton (the Woodbury
    /// path, `O(K²)` per step) the same estimates and covariance up to rounding.
    #[test]
    fn specialised_map_rows_match_the_generic_newton_solver() {
        for (k, seed) in [(1usize, 1u64), (3, 2), (10, 3), (20, 4)] {
            let (out, plus) = problem(k, HessianKind::Exact, seed);
            let got = out.denoise(&plus).unwrap();
            let (est, cov) = reference(&out, &plus);
            for i in 0..est.nrows() {
                for j in 0..k {
                    assert_eq!(
                        got.mean[(i, j)].to_bits(),
                        est[(i, j)].to_bits(),
                        "K = {k}, exact Hessian, row {i}"
                    );
                }
            }
            assert!(
                (&got.cov - &sym(&cov)).norm() == 0.0,
                "K = {k}, exact Hessian Σ"
            );

            let (out, plus) = problem(k, HessianKind::GaussNewton, seed);
            let got = out.denoise(&plus).unwrap();
            let (est, cov) = reference(&out, &plus);
            let scale = 1.0 + est.norm_max();
            // Rows where Gauss–Newton (linear convergence) stops on the iteration limit or at
            // the rounding level of `f` before the tolerance may end apart by more: at most 2%
            // (the rows' sines and cosines are the polynomial's, the reference's the standard
            // library's; measured: 4 of 300 rows at K = 3, within 1.8e-8; none at K = 1, 10, 20).
            let apart = (0..est.nrows())
                .filter(|&i| (0..k).any(|j| (got.mean[(i, j)] - est[(i, j)]).abs() > 1e-10))
                .count();
            assert!(
                apart * 50 <= est.nrows(),
                "K = {k}, Gauss–Newton: {apart} rows apart"
            );
            let dmean = (&got.mean - &est).norm_max();
            assert!(
                dmean <= 1e-6 * scale,
                "K = {k}, Gauss–Newton: mean differs by {dmean:e}"
            );
            let dcov = (&got.cov - &sym(&cov)).norm() / cov.norm();
            assert!(
                dcov <= 1e-8,
                "K = {k}, Gauss–Newton: Σ differs by {dcov:e} (relative)"
            );
        }
    }

    /// The Gauss–Newton rows solved `LANES` at a time give the one-row solver's bits: every
    /// estimate, the covariance and the warnings, for `K` from 1 to 16, with the recovery's
    /// tolerance and with a tight one, messages near and far from the truth, 300 rows (a full
    /// chunk of 256 and 44). Among them rows that stop at the iteration limit and rows that take
    /// gradient steps (re-solved by the one-row solver).
    #[test]
    fn lanes_give_the_bits_of_the_one_row_solver() {
        let (mut fallback_cases, mut limited_cases) = (0, 0);
        for (k, seed) in [(1usize, 5u64), (2, 6), (3, 7), (7, 8), (10, 9), (16, 10)] {
            for (tol, spread) in [(1e-6, 1.0), (1e-13, 1.0), (1e-6, 8.0)] {
                let (out, plus) = problem_with(k, HessianKind::GaussNewton, seed, tol, spread);
                let lanes = out.map_denoise_with(&plus, true).unwrap();
                let rows = out.map_denoise_with(&plus, false).unwrap();
                let tag = format!("K = {k}, tolerance {tol:e}, spread {spread}");
                for i in 0..lanes.mean.nrows() {
                    for j in 0..k {
                        assert_eq!(
                            lanes.mean[(i, j)].to_bits(),
                            rows.mean[(i, j)].to_bits(),
                            "{tag}: row {i}"
                        );
                    }
                }
                for a in 0..k {
                    for b in 0..k {
                        assert_eq!(
                            lanes.cov[(a, b)].to_bits(),
                            rows.cov[(a, b)].to_bits(),
                            "{tag}: Σ"
                        );
                    }
                }
                assert_eq!(lanes.warnings, rows.warnings, "{tag}");
                for w in &rows.warnings {
                    fallback_cases += usize::from(w.contains("gradient steps taken"));
                    limited_cases +=
                        usize::from(w.contains("did not reach its gradient tolerance"));
                }
            }
        }
        // Some rows take gradient steps (they leave the lanes for the one-row solver) and some
        // stop at the iteration limit (kept in the lanes, counted as not converged).
        assert!(fallback_cases > 0 && limited_cases > 0);
    }

    /// The rows' sines and cosines (the polynomial over a slice) for every length up to 17:
    /// within `2e-15` of the standard library's (the polynomial's own bound,
    /// `tests/sketch.rs`), and nothing written beyond the length.
    #[test]
    fn rows_sines_and_cosines_match_the_standard_library_for_every_length() {
        for n in 0..=17usize {
            let x: Vec<f64> = (0..n)
                .map(|j| (j as f64 - 8.0) * 3.7 + 0.1 * n as f64)
                .collect();
            let (mut s, mut c) = (vec![7.0; n + 3], vec![7.0; n + 3]);
            sin_cos_into(&x, &mut s[..n], &mut c[..n]);
            for j in 0..n {
                let (s0, c0) = x[j].sin_cos();
                assert!(
                    (s[j] - s0).abs() < 2e-15 && (c[j] - c0).abs() < 2e-15,
                    "n = {n}, j = {j}"
                );
            }
            assert!(s[n..].iter().chain(&c[n..]).all(|&v| v == 7.0), "n = {n}");
        }
    }
}
