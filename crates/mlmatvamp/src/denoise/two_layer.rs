//! The output channel of two-layer network learning (paper eq. 9, spec §4.4(a)):
//! `y = σ(v) F_2 + ξ`, `ξ ~ N(0, yvar I_nout)`, where `v ∈ R^{1×d}` is a row of the hidden
//! pre-activations `Z_1`, `F_2 ∈ R^{d×nout}` is known and `σ` acts elementwise.
//!
//! The row belief is `b(v) ∝ exp(−f(v))` with the negative log-belief (spec §4.4)
//!
//! ```text
//! f(v) = ½(v − r)Γ(v − r)ᵀ + ‖y − σ(v)F_2‖² / (2 yvar)
//! e = σ(v)F_2 − y,  D = diag(σ'(v))
//! g = (v − r)Γ + (e F_2ᵀ) ⊙ σ'(v) / yvar
//! H_GN = Γ + D F_2 F_2ᵀ D / yvar,   H = H_GN + diag(σ''(v) ⊙ e F_2ᵀ) / yvar
//! ```
//!
//! Estimators ([`TwoLayerEstimator`]):
//! * **MAP** (spec §4.1–4.2): damped Newton per row ([`super::newton`]), `Σ_i = H^{-1}` at the
//!   solution. For relu the exact MAP enumerates the `2^d` closed orthants, on each of which
//!   `f` is a convex quadratic, and solves each bound-constrained QP by an active-set method
//!   (`d ≤ 6`); coordinates that end exactly at 0 get zero Jacobian (face rule of spec §4.1).
//! * **MMSE** (spec §4.3): posterior moments by adaptive (Laplace-centred) Gauss–Hermite or by
//!   importance sampling with a fixed Student-t point set ([`super::quadrature`]).
//! * **Identity activation**: the belief is Gaussian and both estimators are the closed form
//!   `Σ = (Γ + F_2F_2ᵀ/yvar)^{-1}`, `v̂ = (rΓ + yF_2ᵀ/yvar)Σ`.

use super::activation::Activation;
use super::newton::{self, HessianKind, NewtonOptions, NewtonWorkspace, RowObjective, Work};
use super::quadrature::{self, Moments, PointSet};
use super::{standard_normal, Estimator, Rng};
use crate::error::{Error, Result};
use crate::factor::{
    Factor, MonteCarloSe, OutputChannel, OutputDenoiser, OutputLaw, OutputShape, WarmStart,
};
use crate::message::{Belief, Message};
use crate::rows::{
    check_finite, check_shape, mul_small_sum, par_map_rows_with, read_row, shape_str, RowMapOutput,
    ROW_CHUNK,
};
use crate::spd::{check_finite_dmat, sym, DMat, Spd};
use faer::{Mat, MatRef};
use nalgebra::allocator::Allocator;
use nalgebra::{Const, DefaultAllocator, Dim, Dyn, OMatrix, OVector, SMatrix};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

mod lanes;

/// Largest `d` for which the exact relu MAP enumerates orthants.
pub const MAX_ORTHANT_DIM: usize = 6;

/// Importance-sampling effective sample sizes below this value are reported (spec §4.3.3).
pub const LOW_ESS: f64 = 100.0;

/// How the relu MAP is computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReluMapSolver {
    /// Exact: minimise the convex quadratic on each of the `2^d` closed orthants (active-set
    /// QP) and keep the best (spec §4.4). Requires `d ≤ 6`.
    #[default]
    Orthants,
    /// Damped Newton from `r` (a local minimiser; any `d`).
    Newton,
}

/// Options of the MAP estimator (spec §4.1–4.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MapOptions {
    /// The Hessian used by the Newton steps and for `Σ_i = H^{-1}` (default exact). If the
    /// exact Hessian is not positive definite at the solution, the Gauss–Newton one is used
    /// for that row (counted in [`TwoLayerDiagnostics::gauss_newton_covariance_rows`]).
    pub hessian: HessianKind,
    /// The relu solver (default: exact orthant enumeration). Ignored for other activations.
    pub relu_solver: ReluMapSolver,
    /// Newton options.
    pub newton: NewtonOptions,
    /// Warm start (spec §4.2, as the reference's `NeuralOutEst.Jopt`; default `false`): inside
    /// Algorithm 1 ([`OutputDenoiser::denoise_warm`]) each row's Newton solve starts at the
    /// row's estimate of the previous iteration instead of at `r_i`, and needs fewer steps.
    /// Where the row's objective is convex it reaches the same minimiser up to the Newton
    /// tolerance; where it is not, it may reach another local minimiser than the start at
    /// `r_i`, and the estimate then depends on the history, not only on the message
    /// (`docs/speed.md`, "warm-started Newton rows"). The first call of a run, and
    /// [`OutputDenoiser::denoise`], start at `r_i`.
    pub warm_start: bool,
}

/// The integration rule of the MMSE estimator (spec §4.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MmseMethod {
    /// Relu with `d ≤ 2`: [`MmseMethod::ReluOrthants`] with 32 nodes. Otherwise adaptive
    /// Gauss–Hermite for `d ≤ 4` (20 nodes per dimension for `d ≤ 2`, 12 for `d = 3`, 8 for
    /// `d = 4`) and importance sampling with `2^13` points for `d > 4`.
    #[default]
    Auto,
    /// Adaptive (Laplace-centred) tensor Gauss–Hermite with `nodes` nodes per dimension
    /// (`nodes^d` points per row).
    AdaptiveGh {
        /// Nodes per dimension.
        nodes: usize,
    },
    /// Relu only, `d ≤ 6`: the belief is split into its `2^d` orthant pieces, each a smooth
    /// (Gaussian) function, integrated by tensor Gauss–Legendre (`nodes^d` points) over a
    /// box covering its mass; negligible pieces are skipped. Unlike Gauss–Hermite across the
    /// relu kinks, this converges fast in `nodes`.
    ReluOrthants {
        /// Gauss–Legendre nodes per dimension.
        nodes: usize,
    },
    /// Importance sampling with a fixed, seeded Student-t (`ν = 5`) point set of `points`
    /// points in the Laplace frame.
    ImportanceSampling {
        /// Number of points.
        points: usize,
    },
}

/// Options of the MMSE estimator (spec §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MmseOptions {
    /// The integration rule.
    pub method: MmseMethod,
    /// The frame scale `c`: points are placed in `N(v*, c² H^{-1})` (spec §4.3 suggests
    /// `c ∈ [1, 1.5]`; accepted: `[1, 2]`). `None` (default): 1 for Gauss–Hermite (for a
    /// near-Gaussian belief the weights are then nearly constant, the most accurate choice)
    /// and 1.5 for importance sampling (relu beliefs extend beyond the Laplace frame across
    /// the kinks; with `c = 1` the weights are heavy-tailed and the ESS over-optimistic).
    pub scale: Option<f64>,
    /// The seed of the importance-sampling point set.
    pub seed: u64,
    /// Newton options for the Laplace centre `v*`.
    pub newton: NewtonOptions,
}

impl Default for MmseOptions {
    fn default() -> Self {
        MmseOptions {
            method: MmseMethod::Auto,
            scale: None,
            seed: 0x5eed_2c0f_fee0_0001,
            newton: NewtonOptions::default(),
        }
    }
}

/// Which estimate the two-layer output denoiser returns.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TwoLayerEstimator {
    /// The mode of the row belief; `Σ_i = H^{-1}` (spec §4.1–4.2).
    Map(MapOptions),
    /// The mean of the row belief; `Σ_i` = its covariance (spec §4.3).
    Mmse(MmseOptions),
}

impl Default for TwoLayerEstimator {
    /// MMSE with the automatic rule.
    fn default() -> Self {
        TwoLayerEstimator::Mmse(MmseOptions::default())
    }
}

impl From<Estimator> for TwoLayerEstimator {
    fn from(e: Estimator) -> Self {
        match e {
            Estimator::Map => TwoLayerEstimator::map(HessianKind::Exact),
            Estimator::Mmse => TwoLayerEstimator::default(),
        }
    }
}

impl TwoLayerEstimator {
    /// MAP with the given Hessian and the default (exact, orthant) relu solver.
    pub fn map(hessian: HessianKind) -> Self {
        TwoLayerEstimator::Map(MapOptions {
            hessian,
            ..Default::default()
        })
    }
    /// MAP computed by Newton for every activation (relu included), with the given Hessian.
    pub fn map_newton(hessian: HessianKind) -> Self {
        TwoLayerEstimator::Map(MapOptions {
            hessian,
            relu_solver: ReluMapSolver::Newton,
            ..Default::default()
        })
    }
    /// MMSE with the given rule and default frame scale and seed.
    pub fn mmse(method: MmseMethod) -> Self {
        TwoLayerEstimator::Mmse(MmseOptions {
            method,
            ..Default::default()
        })
    }
    fn describe(&self) -> String {
        match self {
            TwoLayerEstimator::Map(o) => format!("MAP ({:?} Hessian)", o.hessian),
            TwoLayerEstimator::Mmse(o) => format!("MMSE ({:?})", o.method),
        }
    }
}

/// Per-call diagnostics of [`TwoLayerOutput::denoise_with_diagnostics`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TwoLayerDiagnostics {
    /// Number of rows.
    pub rows: usize,
    /// Largest number of Newton iterations over rows (0 for closed forms and orthant MAP).
    pub newton_max_iterations: usize,
    /// Rows whose Newton solve stopped before reaching the gradient tolerance.
    pub newton_not_converged: usize,
    /// Rows that took at least one gradient-descent fallback step.
    pub gradient_fallback_rows: usize,
    /// Rows whose exact Hessian was not positive definite at the solution, so that the
    /// Gauss–Newton Hessian was used for `Σ_i` (MAP) or for the quadrature frame (MMSE).
    pub gauss_newton_covariance_rows: usize,
    /// The smallest effective sample size over rows (MMSE only).
    pub min_ess: Option<f64>,
    /// The mean effective sample size over rows (MMSE only).
    pub mean_ess: Option<f64>,
    /// Rows with an importance-sampling effective sample size below [`LOW_ESS`].
    pub low_ess_rows: usize,
}

/// The two-layer network output channel `y = σ(v)F_2 + N(0, yvar I)` and its denoiser `G⁻_2`
/// (paper eq. 9, spec §4.4(a)). Any `d ≥ 1` hidden units and `nout ≥ 1` outputs.
#[derive(Clone, Debug)]
pub struct TwoLayerOutput {
    y: Mat<f64>,
    /// `Y` row-major (`n·nout`), for contiguous row access.
    y_rows: Vec<f64>,
    f2: DMat,
    /// `F_2 F_2ᵀ` (`d x d`).
    fft: DMat,
    activation: Activation,
    noise_var: f64,
    estimator: TwoLayerEstimator,
    /// The fixed point set of the MMSE rule (none for MAP or identity).
    points: Option<Arc<PointSet>>,
    /// Newton MAP rows of `d ≤ MAX_FIXED_D` in fixed-size arithmetic (default `true`).
    fixed_size: bool,
    /// Sigmoid Newton MAP rows of fixed size solved several rows side by side (default `true`).
    lanes: bool,
}

/// Largest `d` whose Newton MAP rows run in fixed-size `d x d` arithmetic on the stack
/// (`nalgebra::SMatrix`); larger `d` use the dynamic-size code.
pub const MAX_FIXED_D: usize = 8;

const STUDENT_T_DOF: u32 = 5;

impl TwoLayerOutput {
    /// The channel for observations `y` (`n x nout`), known second-layer weights `f2`
    /// (`d x nout`), activation `σ`, noise variance `yvar > 0` and estimator.
    ///
    /// Errors name the problem: `Y` with a column count different from `F_2`'s, an empty
    /// `Y` or `F_2`, non-finite entries, a non-positive noise variance, invalid estimator
    /// options (e.g. the exact relu MAP for `d > 6`).
    pub fn new(
        y: Mat<f64>,
        f2: DMat,
        activation: Activation,
        noise_var: f64,
        estimator: TwoLayerEstimator,
    ) -> Result<Self> {
        let (d, nout) = (f2.nrows(), f2.ncols());
        if d == 0 || nout == 0 {
            return Err(Error::shape(
                "second-layer weights F_2",
                "d x nout with d >= 1 hidden units and nout >= 1 outputs",
                format!("{d} x {nout}"),
            ));
        }
        check_finite_dmat("second-layer weights F_2", &f2)?;
        if y.ncols() != nout || y.nrows() == 0 {
            return Err(Error::shape(
                "observation Y",
                format!(
                    "n x {nout} with n >= 1 (one column per column of F_2, which is {d} x {nout})"
                ),
                shape_str(y.as_ref()),
            ));
        }
        check_finite("observation Y", y.as_ref())?;
        if !(noise_var > 0.0 && noise_var.is_finite()) {
            return Err(Error::invalid(
                "output noise variance",
                format!("must be positive and finite, got {noise_var}"),
            ));
        }
        let points = Self::validate_estimator(&estimator, activation, d)?;
        let n = y.nrows();
        let mut y_rows = vec![0.0; n * nout];
        for i in 0..n {
            read_row(y.as_ref(), i, &mut y_rows[i * nout..(i + 1) * nout]);
        }
        let fft = sym(&(&f2 * f2.transpose()));
        Ok(TwoLayerOutput {
            y,
            y_rows,
            f2,
            fft,
            activation,
            noise_var,
            estimator,
            points,
            fixed_size: true,
            lanes: true,
        })
    }

    /// Checks the estimator options and builds the MMSE point set.
    fn validate_estimator(
        est: &TwoLayerEstimator,
        activation: Activation,
        d: usize,
    ) -> Result<Option<Arc<PointSet>>> {
        match est {
            TwoLayerEstimator::Map(o) => {
                o.newton.validate()?;
                if activation == Activation::Relu
                    && o.relu_solver == ReluMapSolver::Orthants
                    && d > MAX_ORTHANT_DIM
                {
                    return Err(Error::invalid(
                        "relu MAP solver",
                        format!(
                            "the exact orthant enumeration supports d <= {MAX_ORTHANT_DIM} hidden units, got d = {d}; use ReluMapSolver::Newton (TwoLayerEstimator::map_newton) or an MMSE estimator"
                        ),
                    ));
                }
                Ok(None)
            }
            TwoLayerEstimator::Mmse(o) => {
                o.newton.validate()?;
                if let Some(c) = o.scale.filter(|c| !(1.0..=2.0).contains(c)) {
                    return Err(Error::invalid(
                        "MMSE frame scale c",
                        format!("must be in [1, 2] (spec §4.3: [1, 1.5]), got {c}"),
                    ));
                }
                if activation == Activation::Identity {
                    return Ok(None);
                }
                let set = match o.method {
                    MmseMethod::Auto => match d {
                        1 | 2 if activation == Activation::Relu => PointSet::gauss_legendre(d, 32)?,
                        1 | 2 => PointSet::gauss_hermite(d, 20)?,
                        3 => PointSet::gauss_hermite(d, 12)?,
                        4 => PointSet::gauss_hermite(d, 8)?,
                        _ => PointSet::student_t(d, 1 << 13, STUDENT_T_DOF, o.seed)?,
                    },
                    MmseMethod::AdaptiveGh { nodes } => PointSet::gauss_hermite(d, nodes)?,
                    MmseMethod::ReluOrthants { nodes } => {
                        if activation != Activation::Relu || d > MAX_ORTHANT_DIM {
                            return Err(Error::invalid(
                                "MMSE method",
                                format!(
                                    "ReluOrthants needs the relu activation and d <= {MAX_ORTHANT_DIM}, got {} with d = {d}",
                                    activation.name()
                                ),
                            ));
                        }
                        PointSet::gauss_legendre(d, nodes)?
                    }
                    MmseMethod::ImportanceSampling { points } => {
                        PointSet::student_t(d, points, STUDENT_T_DOF, o.seed)?
                    }
                };
                Ok(Some(Arc::new(set)))
            }
        }
    }

    /// The activation `σ`.
    pub fn activation(&self) -> Activation {
        self.activation
    }
    /// The second-layer weights `F_2` (`d x nout`).
    pub fn f2(&self) -> &DMat {
        &self.f2
    }
    /// The noise variance `yvar`.
    pub fn noise_var(&self) -> f64 {
        self.noise_var
    }
    /// The estimator.
    pub fn estimator(&self) -> &TwoLayerEstimator {
        &self.estimator
    }
    /// The MMSE point set, if any.
    pub fn point_set(&self) -> Option<&PointSet> {
        self.points.as_deref()
    }
    /// The same channel and observation with another estimator.
    pub fn with_estimator(&self, estimator: TwoLayerEstimator) -> Result<Self> {
        let points = Self::validate_estimator(&estimator, self.activation, self.f2.nrows())?;
        Ok(TwoLayerOutput {
            estimator,
            points,
            ..self.clone()
        })
    }

    /// The same channel with the fixed-size kernels on (`true`, the default) or off. With them
    /// on, the Newton MAP rows of `d ≤` [`MAX_FIXED_D`] run in fixed-size `d x d` arithmetic on
    /// the stack; off, every `d` runs the generic dynamic-size code. The iteration and its
    /// arithmetic are the same, so are the results (for tests and benchmarks).
    pub fn with_fixed_size_kernels(mut self, on: bool) -> Self {
        self.fixed_size = on;
        self
    }

    /// The same channel with the sigmoid MAP rows of fixed size (`d ≤` [`MAX_FIXED_D`]) solved
    /// sixteen rows side by side (`true`, the default) or one at a time. Every row gets the same
    /// operations in the same order either way, so the results are the same bits (for tests and
    /// benchmarks).
    pub fn with_lane_kernels(mut self, on: bool) -> Self {
        self.lanes = on;
        self
    }

    /// The negative log-belief `f` of row `i` for the message row `r` (length `d`) and
    /// precision `Γ` (spec §4.4), as a [`RowObjective`].
    pub fn row_objective<'a>(
        &'a self,
        i: usize,
        r: &'a [f64],
        gamma: &'a Spd,
    ) -> Result<TwoLayerObjective<'a>> {
        let (n, d) = (self.y.nrows(), self.f2.nrows());
        if i >= n {
            return Err(Error::invalid(
                "row index",
                format!("{i} is out of range for {n} rows"),
            ));
        }
        if r.len() != d || gamma.dim() != d {
            return Err(Error::shape(
                "message row and precision",
                format!("length {d} and {d} x {d}"),
                format!("length {} and {} x {}", r.len(), gamma.dim(), gamma.dim()),
            ));
        }
        Ok(self.objective(i, r, gamma.matrix()))
    }

    fn objective<'a>(&'a self, i: usize, r: &'a [f64], gamma: &'a DMat) -> TwoLayerObjective<'a> {
        self.objective_in(i, r, gamma, &self.fft)
    }

    /// The objective of row `i` with `d x d` matrices `Γ` and `F_2F_2ᵀ` of dimension `D`.
    #[inline]
    fn objective_in<'a, D: Dim>(
        &'a self,
        i: usize,
        r: &'a [f64],
        gamma: &'a OMatrix<f64, D, D>,
        fft: &'a OMatrix<f64, D, D>,
    ) -> TwoLayerObjective<'a, D>
    where
        DefaultAllocator: Allocator<D, D>,
    {
        let nout = self.f2.ncols();
        TwoLayerObjective {
            r,
            gamma,
            y: &self.y_rows[i * nout..(i + 1) * nout],
            f2: &self.f2,
            fft,
            activation: self.activation,
            inv_var: 1.0 / self.noise_var,
        }
    }

    /// The closed form for the identity activation (spec §4.4):
    /// `Σ = (Γ + F_2F_2ᵀ/yvar)^{-1}`, `v̂ = (rΓ + yF_2ᵀ/yvar)Σ`.
    fn identity_closed_form(&self, plus: &Message) -> Result<Belief> {
        let g = plus.precision.matrix();
        let prec = Spd::from_symmetric(
            "Γ + F_2 F_2ᵀ / yvar",
            g + &self.fft * (1.0 / self.noise_var),
        )?;
        let sigma = prec.inverse();
        let a = g * &sigma;
        let b = self.f2.transpose() * &sigma * (1.0 / self.noise_var);
        let mean = mul_small_sum(plus.mean.as_ref(), &a, self.y.as_ref(), &b);
        Ok(Belief::new(mean, sigma))
    }

    /// `G⁻_2` with per-call diagnostics (Newton convergence, effective sample sizes).
    pub fn denoise_with_diagnostics(
        &self,
        plus: &Message,
    ) -> Result<(Belief, TwoLayerDiagnostics)> {
        self.denoise_from(plus, None)
    }

    /// [`Self::denoise_with_diagnostics`] with the Newton MAP rows started at the rows of `v0`
    /// (`n x d`, finite; the warm start of [`MapOptions::warm_start`]) instead of at `R⁺`.
    /// `v0` is ignored by the other estimators, the identity's closed form and the exact relu
    /// MAP.
    fn denoise_from(
        &self,
        plus: &Message,
        v0: Option<MatRef<'_, f64>>,
    ) -> Result<(Belief, TwoLayerDiagnostics)> {
        let (n, d) = (self.y.nrows(), self.f2.nrows());
        check_shape(
            "forward message R⁺ into the two-layer output",
            plus.mean.as_ref(),
            n,
            d,
        )?;
        if plus.precision.dim() != d {
            return Err(Error::shape(
                "forward message precision Γ⁺ into the two-layer output",
                format!("{d} x {d}"),
                format!("{0} x {0}", plus.precision.dim()),
            ));
        }
        check_finite(
            "forward message R⁺ into the two-layer output",
            plus.mean.as_ref(),
        )?;
        let diag = TwoLayerDiagnostics {
            rows: n,
            ..Default::default()
        };
        if self.activation == Activation::Identity {
            return Ok((self.identity_closed_form(plus)?, diag));
        }
        if let TwoLayerEstimator::Map(o) = &self.estimator {
            let orthants =
                self.activation == Activation::Relu && o.relu_solver == ReluMapSolver::Orthants;
            if self.fixed_size && !orthants {
                let out = match d {
                    1 => Some(self.map_rows_fixed::<1>(plus, v0, o)),
                    2 => Some(self.map_rows_fixed::<2>(plus, v0, o)),
                    3 => Some(self.map_rows_fixed::<3>(plus, v0, o)),
                    4 => Some(self.map_rows_fixed::<4>(plus, v0, o)),
                    5 => Some(self.map_rows_fixed::<5>(plus, v0, o)),
                    6 => Some(self.map_rows_fixed::<6>(plus, v0, o)),
                    7 => Some(self.map_rows_fixed::<7>(plus, v0, o)),
                    8 => Some(self.map_rows_fixed::<8>(plus, v0, o)),
                    _ => None,
                };
                if let Some(out) = out {
                    return Ok(self.finish(out?, diag));
                }
            }
        }
        let gamma = plus.precision.matrix();
        // Marginal standard deviations of the message, sqrt([Γ^{-1}]_jj).
        let gamma_inv = plus.precision.inverse();
        let prior_sd: Vec<f64> = (0..d).map(|j| gamma_inv[(j, j)].sqrt()).collect();
        let r = plus.mean.as_ref();
        // Per row: d estimates, then [Newton iterations, flags, ESS].
        let width = d + 3;
        // One set of buffers per chunk of rows: no allocation per row.
        let out = par_map_rows_with(
            n,
            width,
            d * d,
            || RowScratch::new(d),
            |rs, i, row, acc| {
                read_row(r, i, &mut rs.r);
                let r_i = std::mem::take(&mut rs.r);
                let obj = self.objective(i, &r_i, gamma);
                let stats = match &self.estimator {
                    TwoLayerEstimator::Map(o) => {
                        match v0 {
                            Some(v0) => read_row(v0, i, &mut rs.v),
                            None => rs.v.copy_from_slice(&r_i),
                        }
                        self.map_row(&obj, o, rs)
                    }
                    TwoLayerEstimator::Mmse(o) => self.mmse_row(&obj, o, &prior_sd, rs),
                };
                rs.r = r_i;
                let stats = stats?;
                row[..d].copy_from_slice(&rs.v);
                row[d] = stats.iterations as f64;
                row[d + 1] = stats.flags as f64;
                row[d + 2] = stats.ess;
                for (a, s) in acc.iter_mut().zip(rs.sigma.iter()) {
                    *a += s;
                }
                if rs.v.iter().any(|x| !x.is_finite()) || rs.sigma.iter().any(|x| !x.is_finite()) {
                    return Err(Error::Numerical {
                        what: "two-layer output denoiser".into(),
                        detail: format!("row {i}: the estimate or its covariance is not finite"),
                    });
                }
                Ok(())
            },
        )?;
        Ok(self.finish(out, diag))
    }

    /// The belief and diagnostics from the per-row outputs (`d` estimates, then Newton
    /// iterations, flags and ESS) and the sum of the row covariances.
    fn finish(
        &self,
        out: RowMapOutput,
        mut diag: TwoLayerDiagnostics,
    ) -> (Belief, TwoLayerDiagnostics) {
        let (n, d) = (self.y.nrows(), self.f2.nrows());
        let mean = Mat::from_fn(n, d, |i, j| out.rows[(i, j)]);
        let cov = sym(&DMat::from_fn(d, d, |a, b| out.acc[a * d + b] / n as f64));
        let mut ess_sum = 0.0;
        let mut ess_min = f64::INFINITY;
        for i in 0..n {
            let iters = out.rows[(i, d)] as usize;
            let flags = out.rows[(i, d + 1)] as u32;
            let ess = out.rows[(i, d + 2)];
            diag.newton_max_iterations = diag.newton_max_iterations.max(iters);
            diag.newton_not_converged += (flags & FLAG_NOT_CONVERGED != 0) as usize;
            diag.gradient_fallback_rows += (flags & FLAG_FALLBACK != 0) as usize;
            diag.gauss_newton_covariance_rows += (flags & FLAG_GN_COVARIANCE != 0) as usize;
            diag.low_ess_rows += (flags & FLAG_LOW_ESS != 0) as usize;
            ess_sum += ess;
            ess_min = ess_min.min(ess);
        }
        if matches!(self.estimator, TwoLayerEstimator::Mmse(_)) {
            diag.min_ess = Some(ess_min);
            diag.mean_ess = Some(ess_sum / n as f64);
        }
        (Belief::new(mean, cov), diag)
    }

    /// The Newton MAP rows (spec §4.1–4.2) in fixed-size `D x D` arithmetic on the stack: the
    /// same iteration and arithmetic as [`TwoLayerOutput::map_row`] (hence the same bits),
    /// without heap storage or dynamic sizes per row. Output as for [`Self::finish`].
    fn map_rows_fixed<const D: usize>(
        &self,
        plus: &Message,
        v0: Option<MatRef<'_, f64>>,
        o: &MapOptions,
    ) -> Result<RowMapOutput> {
        if self.lanes && self.lanes_apply() {
            // Sigmoid: LANES rows side by side, the same bits (lanes.rs).
            self.map_rows_lanes::<D>(plus, v0, o)
        } else {
            self.map_rows_one::<D>(plus, v0, o)
        }
    }

    /// `Γ⁺` and `F_2 F_2ᵀ` as fixed-size `D x D` matrices (the rows' shared factors).
    fn fixed_factors<const D: usize>(
        &self,
        plus: &Message,
    ) -> (SMatrix<f64, D, D>, SMatrix<f64, D, D>) {
        let g = plus.precision.matrix();
        (
            SMatrix::<f64, D, D>::from_fn(|a, b| g[(a, b)]),
            SMatrix::<f64, D, D>::from_fn(|a, b| self.fft[(a, b)]),
        )
    }

    /// [`Self::map_rows_fixed`] for sigmoid, [`lanes::LANES`] rows at a time (lanes.rs).
    fn map_rows_lanes<const D: usize>(
        &self,
        plus: &Message,
        v0: Option<MatRef<'_, f64>>,
        o: &MapOptions,
    ) -> Result<RowMapOutput> {
        let n = self.y.nrows();
        let (gamma, fft) = self.fixed_factors::<D>(plus);
        let r = plus.mean.as_ref();
        let v0 = v0.unwrap_or(r);
        par_map_rows_with(
            n,
            D + 3,
            D * D,
            lanes::ChunkRows::<D>::default,
            |chunk, i, row, acc| {
                let end = (i - i % ROW_CHUNK + ROW_CHUNK).min(n);
                let res = chunk.row(self, &gamma, &fft, r, v0, o, i, end)?;
                let (v, sigma) = (&res.v, &res.sigma);
                row[..D].copy_from_slice(v);
                row[D] = res.iterations as f64;
                row[D + 1] = res.flags as f64;
                row[D + 2] = 0.0;
                for (a, s) in acc.iter_mut().zip(sigma.iter()) {
                    *a += s;
                }
                if v.iter().any(|x| !x.is_finite()) || sigma.iter().any(|x| !x.is_finite()) {
                    return Err(Error::Numerical {
                        what: "two-layer output denoiser".into(),
                        detail: format!("row {i}: the estimate or its covariance is not finite"),
                    });
                }
                Ok(())
            },
        )
    }

    /// [`Self::map_rows_fixed`] one row at a time.
    fn map_rows_one<const D: usize>(
        &self,
        plus: &Message,
        v0: Option<MatRef<'_, f64>>,
        o: &MapOptions,
    ) -> Result<RowMapOutput> {
        let n = self.y.nrows();
        let (gamma, fft) = self.fixed_factors::<D>(plus);
        let r = plus.mean.as_ref();
        let v0 = v0.unwrap_or(r);
        par_map_rows_with(
            n,
            D + 3,
            D * D,
            || Work::new(Const::<D>),
            |ws, i, row, acc| {
                let mut r_i = [0.0; D];
                read_row(r, i, &mut r_i);
                let obj = self.objective_in(i, &r_i, &gamma, &fft);
                read_row(v0, i, ws.v.as_mut_slice());
                let scale = 1.0 + r_i.iter().map(|x| x * x).sum::<f64>().sqrt();
                let rep = newton::minimize_in(&obj, o.hessian, &o.newton, scale, ws)?;
                let mut stats = RowStats::from_report(&rep);
                // Σ = H^{-1} (symmetric), on the stack.
                let mut sigma = SMatrix::<f64, D, D>::zeros();
                if !spd_inverse_fixed(&ws.hess, &mut sigma) {
                    stats.flags |= FLAG_GN_COVARIANCE;
                    let mut grad = OVector::<f64, Const<D>>::zeros();
                    let mut hess = SMatrix::<f64, D, D>::zeros();
                    obj.derivatives_slice(
                        ws.v.as_slice(),
                        HessianKind::GaussNewton,
                        grad.as_mut_slice(),
                        &mut hess,
                    );
                    let h = DMat::from_column_slice(D, D, hess.as_slice());
                    let inv = Spd::from_symmetric("Gauss-Newton MAP Hessian", h)?.inverse();
                    sigma.copy_from_slice(inv.as_slice());
                }
                row[..D].copy_from_slice(ws.v.as_slice());
                row[D] = stats.iterations as f64;
                row[D + 1] = stats.flags as f64;
                row[D + 2] = 0.0;
                for (a, s) in acc.iter_mut().zip(sigma.iter()) {
                    *a += s;
                }
                if ws.v.iter().any(|x| !x.is_finite()) || sigma.iter().any(|x| !x.is_finite()) {
                    return Err(Error::Numerical {
                        what: "two-layer output denoiser".into(),
                        detail: format!("row {i}: the estimate or its covariance is not finite"),
                    });
                }
                Ok(())
            },
        )
    }

    /// One MAP row (spec §4.1–4.2): writes `v̂` into `rs.v` and `Σ_i` into `rs.sigma`.
    fn map_row(
        &self,
        obj: &TwoLayerObjective<'_>,
        o: &MapOptions,
        rs: &mut RowScratch,
    ) -> Result<RowStats> {
        let d = obj.dim();
        if self.activation == Activation::Relu && o.relu_solver == ReluMapSolver::Orthants {
            relu_orthant_map(obj, &mut rs.v)?;
            // Face rule (spec §4.1): coordinates exactly at the kink are locally constant;
            // Σ = E_F (H_FF)^{-1} E_Fᵀ on the free set F with the orthant's Hessian.
            obj.derivatives(&rs.v, HessianKind::GaussNewton, &mut rs.grad, &mut rs.hess);
            let free: Vec<usize> = (0..d).filter(|&j| rs.v[j] != 0.0).collect();
            rs.sigma.iter_mut().for_each(|x| *x = 0.0);
            if !free.is_empty() {
                let hff = DMat::from_fn(free.len(), free.len(), |a, b| rs.hess[(free[a], free[b])]);
                let inv = Spd::from_symmetric("relu MAP Hessian on the free set", hff)?.inverse();
                for (a, &ja) in free.iter().enumerate() {
                    for (b, &jb) in free.iter().enumerate() {
                        rs.sigma[ja * d + jb] = inv[(a, b)];
                    }
                }
            }
            return Ok(RowStats::default());
        }
        // `rs.v` holds the start: `r` or the warm start (the caller's).
        let scale = 1.0 + obj.r.iter().map(|x| x * x).sum::<f64>().sqrt();
        let rep = newton::minimize(obj, &mut rs.v, o.hessian, &o.newton, scale, &mut rs.newton)?;
        let mut stats = RowStats::from_report(&rep);
        // Σ = H^{-1} (symmetric, so row- and column-major agree), on the stack.
        if !crate::spd::small_spd_inverse(rs.newton.hessian(), &mut rs.sigma) {
            stats.flags |= FLAG_GN_COVARIANCE;
            obj.derivatives(&rs.v, HessianKind::GaussNewton, &mut rs.grad, &mut rs.hess);
            let inv = Spd::from_symmetric("Gauss-Newton MAP Hessian", rs.hess.clone())?.inverse();
            rs.sigma.copy_from_slice(inv.as_slice());
        }
        Ok(stats)
    }

    /// One MMSE row (spec §4.3.2–3): Laplace centre `v*` and Hessian `H`, then quadrature in
    /// the frame `N(v*, c² H^{-1})` (for relu, `H` keeps the likelihood curvature only of
    /// units clearly on; `prior_sd` are the message's marginal standard deviations). Writes the mean into `rs.v` and the covariance into
    /// `rs.sigma`.
    fn mmse_row(
        &self,
        obj: &TwoLayerObjective<'_>,
        o: &MmseOptions,
        prior_sd: &[f64],
        rs: &mut RowScratch,
    ) -> Result<RowStats> {
        let d = obj.dim();
        let set = self.points.as_deref().ok_or_else(|| Error::Numerical {
            what: "two-layer output denoiser".into(),
            detail: "MMSE point set missing".into(),
        })?;
        let mut stats = RowStats::default();
        if let quadrature::PointSetKind::GaussLegendre { .. } = set.kind() {
            let m = relu_orthant_moments(obj, set, &mut rs.grad)?;
            rs.v.copy_from_slice(&m.mean);
            rs.sigma.copy_from_slice(&m.cov);
            stats.ess = m.ess;
            return Ok(stats);
        }
        // Laplace centre.
        if self.activation == Activation::Relu && d <= MAX_ORTHANT_DIM {
            relu_orthant_map(obj, &mut rs.v)?;
            obj.derivatives(&rs.v, HessianKind::GaussNewton, &mut rs.grad, &mut rs.hess);
        } else {
            rs.v.copy_from_slice(obj.r);
            let scale = 1.0 + obj.r.iter().map(|x| x * x).sum::<f64>().sqrt();
            let rep = newton::minimize(
                obj,
                &mut rs.v,
                HessianKind::Exact,
                &o.newton,
                scale,
                &mut rs.newton,
            )?;
            stats = RowStats::from_report(&rep);
            rs.hess.copy_from(rs.newton.hessian());
        }
        if self.activation == Activation::Relu {
            // Relu frame: the belief of a coordinate near the kink extends to the side where
            // the unit is off and only Γ curves it; keep the likelihood curvature only for
            // units clearly on (v*_j > 3 prior standard deviations), so that the frame covers
            // both sides: H = Γ + D F_2F_2ᵀ D / yvar with D = diag(1[v*_j > 3 sd_j]).
            for a in 0..d {
                for b in 0..d {
                    let on = rs.v[a] > 3.0 * prior_sd[a] && rs.v[b] > 3.0 * prior_sd[b];
                    rs.hess[(a, b)] = obj.gamma[(a, b)]
                        + if on {
                            obj.inv_var * obj.fft[(a, b)]
                        } else {
                            0.0
                        };
                }
            }
        }
        let c = o.scale.unwrap_or(match set.kind() {
            quadrature::PointSetKind::StudentT { .. } => 1.5,
            _ => 1.0,
        });
        let factor = match quadrature::precision_frame(&rs.hess, c) {
            Some(c) => c,
            None => {
                stats.flags |= FLAG_GN_COVARIANCE;
                obj.derivatives(&rs.v, HessianKind::GaussNewton, &mut rs.grad, &mut rs.hess);
                quadrature::precision_frame(&rs.hess, c).ok_or_else(|| Error::Numerical {
                    what: "two-layer output denoiser".into(),
                    detail: "the Gauss-Newton Hessian is not positive definite".into(),
                })?
            }
        };
        let mut m = Moments::new(d);
        quadrature::frame_moments(set, &rs.v, &factor, |v| -obj.value(v), &mut rs.grad, &mut m)?;
        rs.v.copy_from_slice(&m.mean);
        rs.sigma.copy_from_slice(&m.cov);
        stats.ess = m.ess;
        if matches!(set.kind(), quadrature::PointSetKind::StudentT { .. }) && m.ess < LOW_ESS {
            stats.flags |= FLAG_LOW_ESS;
        }
        Ok(stats)
    }
}

/// `sym(A)^{-1}` of a symmetric positive-definite `D x D` matrix into `out`, on the stack:
/// the same arithmetic as [`crate::spd::small_spd_inverse`] (a Cholesky factor `L`, then
/// `Mᵀ M` with `M = L^{-1}`), hence the same bits. Returns `false` if `A` is not positive
/// definite or the result is not finite.
fn spd_inverse_fixed<const D: usize>(a: &SMatrix<f64, D, D>, out: &mut SMatrix<f64, D, D>) -> bool {
    // Lower Cholesky factor, l[i][j] = L_ij.
    let mut l = [[0.0f64; D]; D];
    for i in 0..D {
        for j in 0..=i {
            let mut s = 0.5 * (a[(i, j)] + a[(j, i)]);
            for p in 0..j {
                s -= l[i][p] * l[j][p];
            }
            if i == j {
                if !(s > 0.0 && s.is_finite()) {
                    return false;
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    // M = L^{-1} (lower), then A^{-1} = Mᵀ M.
    let mut m = [[0.0f64; D]; D];
    for j in 0..D {
        m[j][j] = 1.0 / l[j][j];
        for i in j + 1..D {
            let mut s = 0.0;
            for p in j..i {
                s -= l[i][p] * m[p][j];
            }
            m[i][j] = s / l[i][i];
        }
    }
    for i in 0..D {
        for j in 0..=i {
            let mut s = 0.0;
            for row in &m[i..] {
                s += row[i] * row[j];
            }
            out[(i, j)] = s;
            out[(j, i)] = s;
        }
    }
    out.iter().all(|x| x.is_finite())
}

const FLAG_NOT_CONVERGED: u32 = 1;
const FLAG_FALLBACK: u32 = 2;
const FLAG_GN_COVARIANCE: u32 = 4;
const FLAG_LOW_ESS: u32 = 8;

#[derive(Default)]
struct RowStats {
    iterations: usize,
    flags: u32,
    ess: f64,
}

impl RowStats {
    fn from_report(rep: &newton::NewtonReport) -> Self {
        let mut flags = 0;
        if !rep.converged {
            flags |= FLAG_NOT_CONVERGED;
        }
        if rep.fallback_steps > 0 {
            flags |= FLAG_FALLBACK;
        }
        RowStats {
            iterations: rep.iterations,
            flags,
            ess: 0.0,
        }
    }
}

/// Row buffers, allocated once per chunk of rows ([`par_map_rows_with`]) and reused by every
/// row of the chunk.
struct RowScratch {
    r: Vec<f64>,
    v: Vec<f64>,
    grad: Vec<f64>,
    hess: DMat,
    sigma: Vec<f64>,
    newton: NewtonWorkspace,
}

impl RowScratch {
    fn new(d: usize) -> Self {
        RowScratch {
            r: vec![0.0; d],
            v: vec![0.0; d],
            grad: vec![0.0; d],
            hess: DMat::zeros(d, d),
            sigma: vec![0.0; d * d],
            newton: NewtonWorkspace::new(d),
        }
    }
}

impl Factor for TwoLayerOutput {
    fn describe(&self) -> String {
        format!(
            "two-layer network output {} x {} ({} activation, d = {}, noise variance {:.4e}, {})",
            self.y.nrows(),
            self.y.ncols(),
            self.activation.name(),
            self.f2.nrows(),
            self.noise_var,
            self.estimator.describe()
        )
    }

    fn dim(&self) -> usize {
        self.f2.nrows()
    }
}

impl OutputShape for TwoLayerOutput {
    fn rows(&self) -> usize {
        self.y.nrows()
    }
}

impl OutputDenoiser for TwoLayerOutput {
    fn observation(&self) -> MatRef<'_, f64> {
        self.y.as_ref()
    }

    /// `G⁻_2`; see [`TwoLayerOutput::denoise_with_diagnostics`]. Attaches a warning to the
    /// belief (which the solver records in the history) if some rows have an importance-sampling
    /// ESS below [`LOW_ESS`] (spec §4.3.3), or took a gradient-descent fallback step in the MAP
    /// Newton solve.
    fn denoise(&self, plus: &Message) -> Result<Belief> {
        let (belief, diag) = self.denoise_with_diagnostics(plus)?;
        Ok(with_warnings(belief, &diag))
    }

    /// [`OutputDenoiser::denoise`]; with the MAP estimator and [`MapOptions::warm_start`], the
    /// Newton rows start at the estimate left in `warm` by the previous call (if it has the
    /// shape `n x d`), and this call's estimate is left there.
    fn denoise_warm(&self, plus: &Message, warm: &mut WarmStart) -> Result<Belief> {
        // Only the Newton MAP rows use a start (not the identity's closed form, nor the exact
        // relu MAP by orthants).
        let newton_map = matches!(&self.estimator, TwoLayerEstimator::Map(o) if o.warm_start
            && self.activation != Activation::Identity
            && !(self.activation == Activation::Relu && o.relu_solver == ReluMapSolver::Orthants));
        if !newton_map {
            return self.denoise(plus);
        }
        let (n, d) = (self.y.nrows(), self.f2.nrows());
        let v0 = warm.get().filter(|m| {
            m.nrows() == n
                && m.ncols() == d
                && (0..d).all(|j| m.col(j).iter().all(|x| x.is_finite()))
        });
        let (belief, diag) = self.denoise_from(plus, v0.map(|m| m.as_ref()))?;
        warm.set(belief.mean.clone());
        Ok(with_warnings(belief, &diag))
    }
}

/// The belief with a warning if some rows have an importance-sampling ESS below [`LOW_ESS`], or
/// took a gradient-descent fallback step in the MAP Newton solve.
fn with_warnings(mut belief: Belief, diag: &TwoLayerDiagnostics) -> Belief {
    if diag.low_ess_rows > 0 {
        belief = belief.with_warning(format!(
            "two-layer output MMSE: {} of {} rows have an importance-sampling effective sample size below {LOW_ESS} (min {:.1}); use more points",
            diag.low_ess_rows,
            diag.rows,
            diag.min_ess.unwrap_or(f64::NAN)
        ));
    }
    if diag.gradient_fallback_rows > 0 {
        belief = belief.with_warning(format!(
            "two-layer output MAP: {} of {} rows took a gradient-descent fallback step (Hessian not positive definite)",
            diag.gradient_fallback_rows, diag.rows
        ));
    }
    belief
}

impl OutputLaw for TwoLayerOutput {
    /// Draws `y = σ(z)F_2 + N(0, yvar I)` for every row of `z` (eq. 9).
    fn resample(&self, z: MatRef<'_, f64>, rng: &mut Rng) -> Result<Box<dyn OutputChannel>> {
        let d = self.f2.nrows();
        if z.ncols() != d {
            return Err(Error::shape(
                "Z_1 (hidden pre-activations) for the two-layer output",
                format!("n x {d}"),
                shape_str(z),
            ));
        }
        check_finite("Z_1 for the two-layer output", z)?;
        let (n, nout) = (z.nrows(), self.f2.ncols());
        let act = self.activation;
        let s = Mat::from_fn(n, d, |i, j| act.eval(z[(i, j)]));
        let f2 = crate::rows::from_dmat(&self.f2);
        let mut y = &s * &f2;
        y += &standard_normal(n, nout, rng) * faer::Scale(self.noise_var.sqrt());
        // Same F_2, activation, noise and estimator (the point set is shared, not rebuilt).
        check_finite("resampled observation Y", y.as_ref())?;
        let mut y_rows = vec![0.0; n * nout];
        for i in 0..n {
            read_row(y.as_ref(), i, &mut y_rows[i * nout..(i + 1) * nout]);
        }
        Ok(Box::new(TwoLayerOutput {
            y,
            y_rows,
            ..self.clone()
        }))
    }
}

/// No closed form: the Monte-Carlo SE step over this factor's sampler and denoiser.
impl MonteCarloSe for TwoLayerOutput {}

/// The negative log-belief of one row of the two-layer output (spec §4.4), with its gradient
/// and exact or Gauss–Newton Hessian. Obtained from [`TwoLayerOutput::row_objective`].
///
/// `D` is the nalgebra dimension of its `d x d` matrices: [`Dyn`] (the public, any-`d` form, a
/// [`RowObjective`]) or, inside the denoiser, `Const<d>` for small `d` (fixed-size arithmetic on
/// the stack). Both run the same code, so they give the same bits.
#[derive(Clone, Copy, Debug)]
pub struct TwoLayerObjective<'a, D: Dim = Dyn>
where
    DefaultAllocator: Allocator<D, D>,
{
    r: &'a [f64],
    gamma: &'a OMatrix<f64, D, D>,
    y: &'a [f64],
    f2: &'a DMat,
    fft: &'a OMatrix<f64, D, D>,
    activation: Activation,
    inv_var: f64,
}

/// Small stack buffers for the per-point evaluations (heap only for `d > 16`).
const STACK_D: usize = 16;

impl<D: Dim> TwoLayerObjective<'_, D>
where
    DefaultAllocator: Allocator<D, D>,
{
    /// `d`: a constant for a fixed size.
    #[inline(always)]
    fn d(&self) -> usize {
        self.gamma.shape_generic().0.value()
    }

    /// `½(v − r)Γ(v − r)ᵀ`.
    #[inline(always)]
    fn prior_term(&self, v: &[f64]) -> f64 {
        let d = self.d();
        let (v, r) = (&v[..d], &self.r[..d]);
        let mut q = 0.0;
        for a in 0..d {
            let da = v[a] - r[a];
            let s: f64 = v
                .iter()
                .zip(r)
                .enumerate()
                .map(|(b, (vb, rb))| self.gamma[(a, b)] * (vb - rb))
                .sum();
            q += da * s;
        }
        0.5 * q
    }

    /// `‖y − s F_2‖² / (2 yvar)` for `s = σ(v)`, adding `(e F_2ᵀ)_j` into `ef` if given.
    #[inline]
    fn likelihood_term(&self, s: &[f64], mut ef: Option<&mut [f64]>) -> f64 {
        let d = self.d();
        let s = &s[..d];
        let mut sum = 0.0;
        for (o, &yo) in self.y.iter().enumerate() {
            // Column o of F_2 (column-major storage).
            let f2o = &self.f2.as_slice()[o * d..(o + 1) * d];
            let mut e = -yo;
            for (&sj, &fj) in s.iter().zip(f2o) {
                e += sj * fj;
            }
            sum += e * e;
            if let Some(ef) = ef.as_deref_mut() {
                for (x, &fj) in ef[..d].iter_mut().zip(f2o) {
                    *x += e * fj;
                }
            }
        }
        0.5 * self.inv_var * sum
    }

    #[inline]
    fn value_with(&self, v: &[f64], s: &mut [f64]) -> f64 {
        let d = self.d();
        for (sj, &vj) in s[..d].iter_mut().zip(&v[..d]) {
            *sj = self.activation.eval(vj);
        }
        self.prior_term(v) + self.likelihood_term(s, None)
    }

    /// `f(v)` (stack buffers for `d ≤ 16`).
    #[inline]
    fn value_slice(&self, v: &[f64]) -> f64 {
        let d = self.d();
        if d <= STACK_D {
            let mut buf = [0.0; STACK_D];
            self.value_with(v, &mut buf[..d])
        } else {
            self.value_with(v, &mut vec![0.0; d])
        }
    }

    /// `f(v)`, its gradient and Hessian (stack buffers for `d ≤ 16`).
    #[inline]
    fn derivatives_slice(
        &self,
        v: &[f64],
        kind: HessianKind,
        grad: &mut [f64],
        hess: &mut OMatrix<f64, D, D>,
    ) -> f64 {
        let d = self.d();
        if d <= STACK_D {
            let mut buf = [0.0; 3 * STACK_D];
            self.derivatives_with(v, kind, grad, hess, &mut buf[..3 * d], None)
        } else {
            self.derivatives_with(v, kind, grad, hess, &mut vec![0.0; 3 * d], None)
        }
    }

    /// As [`Self::derivatives_slice`]; `act`, if given, holds `σ(v)` (as computed by
    /// [`Self::value_with`] at this `v`).
    #[inline]
    fn derivatives_with(
        &self,
        v: &[f64],
        kind: HessianKind,
        grad: &mut [f64],
        hess: &mut OMatrix<f64, D, D>,
        buf: &mut [f64],
        act: Option<&[f64]>,
    ) -> f64 {
        let d = self.d();
        let (v, r, grad) = (&v[..d], &self.r[..d], &mut grad[..d]);
        let (s, rest) = buf.split_at_mut(d);
        let (s1, rest) = rest.split_at_mut(d);
        let (ef, _) = rest.split_at_mut(d);
        let sigmoid = self.activation == Activation::Sigmoid;
        match act {
            Some(a) => s.copy_from_slice(&a[..d]),
            None => {
                for (sj, &vj) in s.iter_mut().zip(v) {
                    *sj = self.activation.eval(vj);
                }
            }
        }
        for j in 0..d {
            // One evaluation of σ per coordinate: for sigmoid σ' = σ(1 − σ) (as `deriv`).
            s1[j] = if sigmoid {
                s[j] * (1.0 - s[j])
            } else {
                self.activation.deriv(v[j])
            };
            ef[j] = 0.0;
        }
        let lik = self.likelihood_term(s, Some(ef));
        // g = (v − r)Γ + (eF_2ᵀ) ⊙ σ'(v) / yvar
        for (a, ga) in grad.iter_mut().enumerate() {
            let x: f64 = v
                .iter()
                .zip(r)
                .enumerate()
                .map(|(b, (vb, rb))| (vb - rb) * self.gamma[(b, a)])
                .sum();
            *ga = x + self.inv_var * ef[a] * s1[a];
        }
        // H_GN = Γ + D F_2F_2ᵀ D / yvar;  exact: + diag(σ'' ⊙ eF_2ᵀ) / yvar
        for a in 0..d {
            for b in 0..d {
                hess[(a, b)] = self.gamma[(a, b)] + self.inv_var * s1[a] * s1[b] * self.fft[(a, b)];
            }
            if kind == HessianKind::Exact {
                // σ'' = σ'(1 − 2σ) for sigmoid (as `second_deriv`), zero otherwise.
                let s2 = if sigmoid {
                    s1[a] * (1.0 - 2.0 * s[a])
                } else {
                    self.activation.second_deriv(v[a])
                };
                hess[(a, a)] += self.inv_var * s2 * ef[a];
            }
        }
        self.prior_term(v) + lik
    }

    /// The message mean `r` of this row.
    pub fn message_mean(&self) -> &[f64] {
        self.r
    }
}

impl RowObjective for TwoLayerObjective<'_> {
    fn dim(&self) -> usize {
        self.r.len()
    }
    fn value(&self, v: &[f64]) -> f64 {
        self.value_slice(v)
    }
    fn derivatives(&self, v: &[f64], kind: HessianKind, grad: &mut [f64], hess: &mut DMat) -> f64 {
        self.derivatives_slice(v, kind, grad, hess)
    }
}

impl<D: Dim> newton::NewtonObjective<D> for TwoLayerObjective<'_, D>
where
    DefaultAllocator: Allocator<D> + Allocator<D, D>,
{
    /// `f(v)`, leaving `σ(v)` in `memo`.
    #[inline]
    fn value(&self, v: &OVector<f64, D>, memo: &mut OVector<f64, D>) -> f64 {
        self.value_with(v.as_slice(), memo.as_mut_slice())
    }
    #[inline]
    fn derivatives(
        &self,
        v: &OVector<f64, D>,
        kind: HessianKind,
        grad: &mut OVector<f64, D>,
        hess: &mut OMatrix<f64, D, D>,
        memo: Option<&OVector<f64, D>>,
    ) -> f64 {
        let d = self.d();
        let (v, grad) = (v.as_slice(), grad.as_mut_slice());
        let memo = memo.map(|m| m.as_slice());
        if d <= STACK_D {
            let mut buf = [0.0; 3 * STACK_D];
            self.derivatives_with(v, kind, grad, hess, &mut buf[..3 * d], memo)
        } else {
            self.derivatives_with(v, kind, grad, hess, &mut vec![0.0; 3 * d], memo)
        }
    }
}

/// Visits the `2^d` closed orthants of the relu belief (spec §4.4). On the orthant with
/// positive set `P` (`D = diag(1[j ∈ P])`) the objective is the convex quadratic
/// `½ v H_P vᵀ − b_P vᵀ + const`, `H_P = Γ + D F_2F_2ᵀ D / yvar`, `b_P = rΓ + y F_2ᵀ D / yvar`;
/// it is minimised subject to `v_j ≥ 0 (j ∈ P)`, `v_j ≤ 0 (j ∉ P)` by a primal active-set
/// method started at `v = 0`. `visit(sign, H_P, v_P, f(v_P))` receives each orthant's sign
/// vector (`±1`), Hessian, constrained minimiser (coordinates on an active bound are exactly
/// 0) and objective value.
fn for_each_orthant(
    obj: &TwoLayerObjective<'_>,
    mut visit: impl FnMut(&[f64], &DMat, &[f64], f64) -> Result<()>,
) -> Result<()> {
    let d = obj.dim();
    if d > MAX_ORTHANT_DIM {
        return Err(Error::invalid(
            "relu orthant enumeration",
            format!("supports d <= {MAX_ORTHANT_DIM}, got {d}"),
        ));
    }
    let gamma = obj.gamma;
    // rΓ and yF_2ᵀ / yvar.
    let r_gamma: Vec<f64> = (0..d)
        .map(|a| (0..d).map(|b| obj.r[b] * gamma[(b, a)]).sum())
        .collect();
    let y_f: Vec<f64> = (0..d)
        .map(|j| {
            obj.inv_var
                * obj
                    .y
                    .iter()
                    .enumerate()
                    .map(|(o, yo)| yo * obj.f2[(j, o)])
                    .sum::<f64>()
        })
        .collect();
    let mut h = DMat::zeros(d, d);
    let mut b = vec![0.0; d];
    let mut sign = vec![0.0; d];
    let mut cur = vec![0.0; d];
    let mut qp = ActiveSet::new(d);
    for mask in 0u32..(1u32 << d) {
        for j in 0..d {
            let pos = mask & (1 << j) != 0;
            sign[j] = if pos { 1.0 } else { -1.0 };
            b[j] = r_gamma[j] + if pos { y_f[j] } else { 0.0 };
        }
        for a in 0..d {
            for c in 0..d {
                let on = sign[a] > 0.0 && sign[c] > 0.0;
                h[(a, c)] = gamma[(a, c)]
                    + if on {
                        obj.inv_var * obj.fft[(a, c)]
                    } else {
                        0.0
                    };
            }
        }
        qp.solve(&h, &b, &sign, &mut cur)?;
        let f = obj.value(&cur);
        visit(&sign, &h, &cur, f)?;
    }
    Ok(())
}

/// Exact relu MAP (spec §4.4): the best of the `2^d` orthant minimisers (by `f`; the first
/// in enumeration order on ties), written into `v`.
fn relu_orthant_map(obj: &TwoLayerObjective<'_>, v: &mut [f64]) -> Result<()> {
    let mut best = f64::INFINITY;
    for_each_orthant(obj, |_, _, cur, f| {
        if f < best {
            best = f;
            v.copy_from_slice(cur);
        }
        Ok(())
    })?;
    if !best.is_finite() {
        return Err(Error::Numerical {
            what: "relu orthant MAP".into(),
            detail: "no orthant gave a finite objective".into(),
        });
    }
    Ok(())
}

/// Half-width, in marginal standard deviations, of the box that covers an orthant piece.
const ORTHANT_BOX_SDS: f64 = 9.0;

/// One orthant piece of the relu belief: signs, log of the mass bound, constrained minimiser,
/// marginal standard deviations of the piece's Gaussian.
struct OrthantPiece {
    sign: Vec<f64>,
    log_bound: f64,
    vstar: Vec<f64>,
    sd: Vec<f64>,
}

/// Relu MMSE by orthant decomposition: on each closed orthant the belief is a Gaussian piece
/// `exp(−f)` with `f ≥ f_P* + ½‖v − v_P*‖²_{H_P}` (first-order optimality of the constrained
/// minimiser `v_P*`), so its mass is at most `exp(−f_P*) (2π)^{d/2} det(H_P)^{-1/2}` and lies
/// within `|v_j − v*_j| ≤ 9 σ_j` (`σ_j² = [H_P^{-1}]_jj`) up to `e^{-40}`. Each piece with a
/// non-negligible bound is integrated by tensor Gauss–Legendre over that box intersected with
/// the orthant (a smooth integrand, so the rule converges fast); the pieces are combined by
/// [`Moments::combine`].
fn relu_orthant_moments(
    obj: &TwoLayerObjective<'_>,
    set: &PointSet,
    scratch: &mut [f64],
) -> Result<Moments> {
    let d = obj.dim();
    let mut pieces: Vec<OrthantPiece> = Vec::with_capacity(1 << d);
    for_each_orthant(obj, |sign, h, cur, f| {
        let hs = Spd::from_symmetric("relu orthant Hessian", h.clone())?;
        let inv = hs.inverse();
        let log_bound = -f + 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln() - 0.5 * hs.logdet();
        let sd = (0..d).map(|j| inv[(j, j)].sqrt()).collect();
        pieces.push(OrthantPiece {
            sign: sign.to_vec(),
            log_bound,
            vstar: cur.to_vec(),
            sd,
        });
        Ok(())
    })?;
    let top = pieces
        .iter()
        .map(|p| p.log_bound)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut parts = Vec::new();
    let mut center = vec![0.0; d];
    let mut factor = DMat::zeros(d, d);
    for OrthantPiece {
        sign,
        log_bound,
        vstar,
        sd,
    } in &pieces
    {
        if *log_bound < top - 40.0 {
            continue;
        }
        for j in 0..d {
            // In u = sign·v ≥ 0 the piece lives in [max(0, u* − Kσ), u* + Kσ].
            let u = sign[j] * vstar[j];
            let lo = (u - ORTHANT_BOX_SDS * sd[j]).max(0.0);
            let hi = u + ORTHANT_BOX_SDS * sd[j];
            center[j] = sign[j] * 0.5 * (lo + hi);
            factor[(j, j)] = 0.5 * (hi - lo);
        }
        let mut m = Moments::new(d);
        quadrature::frame_moments(set, &center, &factor, |v| -obj.value(v), scratch, &mut m)?;
        parts.push(m);
    }
    Moments::combine(&parts).ok_or_else(|| Error::Numerical {
        what: "relu orthant MMSE".into(),
        detail: "no orthant piece has mass".into(),
    })
}

/// Primal active-set solver for `min ½ v H vᵀ − b vᵀ` s.t. `sign_j v_j ≥ 0`, `H` SPD.
struct ActiveSet {
    fixed: Vec<bool>,
    cand: Vec<f64>,
    free: Vec<usize>,
}

impl ActiveSet {
    fn new(d: usize) -> Self {
        ActiveSet {
            fixed: vec![true; d],
            cand: vec![0.0; d],
            free: Vec::with_capacity(d),
        }
    }

    fn solve(&mut self, h: &DMat, b: &[f64], sign: &[f64], v: &mut [f64]) -> Result<()> {
        let d = b.len();
        v.iter_mut().for_each(|x| *x = 0.0);
        self.fixed.iter_mut().for_each(|x| *x = true);
        let bscale = 1.0 + b.iter().fold(0.0_f64, |m, x| m.max(x.abs()));
        let tol = 1e-12 * bscale;
        // Each iteration either adds a blocking bound (free set shrinks) or releases one with
        // a negative multiplier after a full step (objective strictly decreases); the bound
        // guards against degenerate cycling.
        for _ in 0..(8 * d + 8) {
            self.free.clear();
            self.free.extend((0..d).filter(|&j| !self.fixed[j]));
            self.cand.iter_mut().for_each(|x| *x = 0.0);
            if !self.free.is_empty() {
                let k = self.free.len();
                let hff = DMat::from_fn(k, k, |a, c| h[(self.free[a], self.free[c])]);
                let mut rhs = nalgebra::DVector::from_fn(k, |a, _| b[self.free[a]]);
                let ch = nalgebra::Cholesky::new(hff).ok_or_else(|| Error::Numerical {
                    what: "relu orthant MAP".into(),
                    detail: "the orthant Hessian is not positive definite".into(),
                })?;
                ch.solve_mut(&mut rhs);
                for (a, &j) in self.free.iter().enumerate() {
                    self.cand[j] = rhs[a];
                }
            }
            // Longest feasible step towards the candidate.
            let mut alpha = 1.0;
            let mut block = None;
            for &j in &self.free {
                if sign[j] * self.cand[j] < 0.0 {
                    let a = v[j] / (v[j] - self.cand[j]);
                    if a < alpha {
                        alpha = a;
                        block = Some(j);
                    }
                }
            }
            if let Some(jb) = block {
                for &j in &self.free {
                    v[j] += alpha * (self.cand[j] - v[j]);
                }
                v[jb] = 0.0;
                self.fixed[jb] = true;
                continue;
            }
            v.copy_from_slice(&self.cand);
            // Multipliers of the fixed bounds: λ_j = sign_j (vH − b)_j must be ≥ 0 (KKT).
            let mut worst = -tol;
            let mut release = None;
            for j in 0..d {
                if self.fixed[j] {
                    let g: f64 = (0..d).map(|a| v[a] * h[(a, j)]).sum::<f64>() - b[j];
                    let lam = sign[j] * g;
                    if lam < worst {
                        worst = lam;
                        release = Some(j);
                    }
                }
            }
            match release {
                Some(j) => self.fixed[j] = false,
                None => return Ok(()),
            }
        }
        // Cycling guard hit: v is feasible; keep it.
        Ok(())
    }
}
