//! Mixed linear regression (paper Section 2.1, eq. 6): each response comes from one of `d` linear
//! models, and which one is not known,
//!
//! ```text
//! y_i = x_i · f_{q_i} + ξ_i,    q_i ~ π,  ξ_i ~ N(0, σ²),   i = 1 … n,
//! ```
//!
//! with `x_i ∈ R^p` the rows of a design `X` (`n x p`) and `F = [f_1, …, f_d]` (`p x d`) unknown.
//! ML-Mat-VAMP sees it as the two-layer network `Z_0 = F` (Gaussian prior `N(0, I)` rows),
//! `W_1 = X` (noiseless linear layer), `Z_1 = X F`, `y = φ_2(Z_1, Ξ)` with the mixed-regression
//! output of [`crate::denoise::mixed`] (spec §4.6). This module holds the application pieces:
//!
//! * [`MixedConfig`] / [`MixedTrial`] — one random problem and its network;
//! * [`RandomStart`] — the asymmetric random initialisation that Algorithm 1 needs here (the
//!   all-symmetric start is a fixed point, spec §4.6);
//! * [`parameter_error`] — `min_P ‖F̂P − F‖_F / ‖F‖_F` over column permutations `P` (the labels
//!   are not identifiable), and its state-evolution counterpart
//!   [`parameter_error_from_moments`];
//! * the baseline [`alternating_minimisation`] of Yi, Caramanis and Sanghavi (ICML 2014, the
//!   paper's reference 47) from a spectral or a random start;
//! * [`fit_message_law`] — the law `R = Z⁰Ψ + N(0, T)` of an actual message (spec §6.5), used to
//!   start the state evolution from the algorithm's own iterate.

use crate::denoise::{
    standard_normal, Estimator, GaussianPrior, LinearLayer, MixedRegressionOutput, OutputDenoiser,
};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::network::Network;
use crate::rng_from_seed;
use crate::rows::{check_finite, check_shape, cross_moment, mul_small, shape_str};
use crate::se::{clamp_psd, SeBackward, SeState};
use crate::solver::State;
use crate::spd::{psd_inverse, sym, DMat, Spd};
use faer::linalg::solvers::Solve;
use faer::{Mat, MatRef, Side};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

// ---------------------------------------------------------------------------------------------
// Problems
// ---------------------------------------------------------------------------------------------

/// The sizes and noise level of one mixed linear regression problem (paper eq. 6).
///
/// The data model: `X` has i.i.d. `N(0, 1/p)` entries, `F` i.i.d. `N(0, 1)` entries (so every
/// clean response `x_i · f_k` has variance 1), `q_i ~ π`, and `σ² = 10^{−snr_db/10}` (the SNR is
/// the clean response power over the noise power, in dB). Defaults: `p = 100`, `n = 600`,
/// `d = 2`, equal weights, SNR 20 dB.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixedConfig {
    /// Number of features `p` (rows of `F`).
    pub p: usize,
    /// Number of samples `n`.
    pub n: usize,
    /// Number of components `d` (columns of `F`).
    pub d: usize,
    /// Signal-to-noise ratio in dB.
    pub snr_db: f64,
    /// Component weights `π` (length `d`; `None` = uniform).
    pub weights: Option<Vec<f64>>,
}

impl Default for MixedConfig {
    fn default() -> Self {
        MixedConfig {
            p: 100,
            n: 600,
            d: 2,
            snr_db: 20.0,
            weights: None,
        }
    }
}

/// One random mixed regression problem: the truth, the design and the responses.
#[derive(Clone, Debug)]
pub struct MixedTrial {
    /// The configuration it was drawn from.
    pub config: MixedConfig,
    /// The design `X` (`n x p`).
    pub x: Mat<f64>,
    /// The true regressors `F` (`p x d`).
    pub f: Mat<f64>,
    /// `Z_1 = X F` (`n x d`).
    pub z: Mat<f64>,
    /// The responses `y` (`n x 1`).
    pub y: Mat<f64>,
    /// The true labels `q_i ∈ {0 … d−1}`.
    pub labels: Vec<usize>,
    /// The noise variance `σ²`.
    pub noise_variance: f64,
}

impl MixedConfig {
    /// Checks the sizes, the SNR and the weights.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("p", self.p), ("n", self.n), ("d", self.d)] {
            if v == 0 {
                return Err(Error::invalid(name, "must be at least 1"));
            }
        }
        if !self.snr_db.is_finite() {
            return Err(Error::invalid(
                "snr_db",
                format!("must be finite, got {}", self.snr_db),
            ));
        }
        // The output channel validates the weights (length, sign, sum) and d.
        MixedRegressionOutput::new(
            Mat::zeros(1, 1),
            self.d,
            self.noise_variance(),
            self.weights.clone(),
            Estimator::Mmse,
        )
        .map(|_| ())
    }

    /// `σ² = 10^{−snr_db/10}` (the clean responses have unit variance).
    pub fn noise_variance(&self) -> f64 {
        10f64.powf(-self.snr_db / 10.0)
    }

    /// Draws one problem from `seed`.
    pub fn sample(&self, seed: u64) -> Result<MixedTrial> {
        self.validate()?;
        let mut rng = rng_from_seed(seed);
        let (n, p, d) = (self.n, self.p, self.d);
        let x = standard_normal(n, p, &mut rng) * faer::Scale(1.0 / (p as f64).sqrt());
        let f = standard_normal(p, d, &mut rng);
        let z = &x * &f;
        let template = MixedRegressionOutput::new(
            Mat::zeros(n, 1),
            d,
            self.noise_variance(),
            self.weights.clone(),
            Estimator::Mmse,
        )?;
        // The labels and the noise come from the channel's own sampler (the teacher).
        let drawn = template.draw(z.as_ref(), &mut rng)?;
        let labels = drawn.labels().map(<[usize]>::to_vec).unwrap_or_default();
        Ok(MixedTrial {
            config: self.clone(),
            x,
            f,
            z,
            y: drawn.observation().to_owned(),
            labels,
            noise_variance: self.noise_variance(),
        })
    }
}

impl MixedTrial {
    /// The network `Z_0 = F` (prior `N(0, I)`), `Z_1 = X F` (noiseless linear layer), mixed
    /// regression output with the trial's `σ²` and weights, using `estimator`.
    pub fn network(&self, estimator: Estimator) -> Result<Network> {
        mixed_network(
            self.x.as_ref(),
            self.y.clone(),
            self.config.d,
            self.noise_variance,
            self.config.weights.clone(),
            estimator,
        )
    }
    /// The truth `[F, X F]` in the solver's order `Z_0, Z_1`.
    pub fn truth(&self) -> Vec<Mat<f64>> {
        vec![self.f.clone(), self.z.clone()]
    }
}

/// The mixed regression network for a design `x` (`n x p`) and responses `y` (`n x 1`):
/// `Z_0 = F` with a `N(0, I_d)` prior, a noiseless linear layer `W_1 = X`, and the mixed
/// regression output (spec §4.6).
pub fn mixed_network(
    x: MatRef<'_, f64>,
    y: Mat<f64>,
    d: usize,
    noise_variance: f64,
    weights: Option<Vec<f64>>,
    estimator: Estimator,
) -> Result<Network> {
    check_shape("responses y", y.as_ref(), x.nrows(), 1)?;
    let output = MixedRegressionOutput::new(y, d, noise_variance, weights, estimator)?;
    let prior = GaussianPrior::isotropic(d, 1.0)?;
    let layer = LinearLayer::new(x, None, None, d)?;
    Network::new(
        Arc::new(prior),
        x.ncols(),
        vec![Arc::new(layer)],
        Arc::new(output),
    )
}

// ---------------------------------------------------------------------------------------------
// Parameter error up to relabelling
// ---------------------------------------------------------------------------------------------

/// The largest `d` for which the permutation search is done exhaustively (`d!` permutations).
pub const MAX_PERMUTATION_D: usize = 8;

/// All permutations of `0 … d−1` (Heap's algorithm).
fn permutations(d: usize) -> Vec<Vec<usize>> {
    let mut a: Vec<usize> = (0..d).collect();
    let mut out = vec![a.clone()];
    let mut c = vec![0usize; d];
    let mut i = 0;
    while i < d {
        if c[i] < i {
            if i % 2 == 0 {
                a.swap(0, i);
            } else {
                a.swap(c[i], i);
            }
            out.push(a.clone());
            c[i] += 1;
            i = 0;
        } else {
            c[i] = 0;
            i += 1;
        }
    }
    out
}

/// Minimises `E(P) = Σ_k (G_{P(k)P(k)} − 2 X_{P(k)k}) ` over permutations, where `G = F̂ᵀF̂`
/// and `X = F̂ᵀF`: column `P(k)` of the estimate is matched to column `k` of the truth. Returns
/// the best permutation and `E` (the squared error minus `‖F‖²`).
fn best_match(g: &DMat, x: &DMat) -> Result<(Vec<usize>, f64)> {
    let d = g.nrows();
    if d > MAX_PERMUTATION_D {
        return Err(Error::invalid(
            "d",
            format!(
                "the parameter error searches all d! column permutations; d = {d} exceeds {MAX_PERMUTATION_D}"
            ),
        ));
    }
    let mut best = (Vec::new(), f64::INFINITY);
    for perm in permutations(d) {
        let e: f64 = (0..d)
            .map(|k| g[(perm[k], perm[k])] - 2.0 * x[(perm[k], k)])
            .sum();
        if e < best.1 {
            best = (perm, e);
        }
    }
    Ok(best)
}

/// The column permutation `P` (as `perm[k]` = the estimate's column matched to truth column `k`)
/// that minimises `‖F̂P − F‖_F`.
pub fn best_permutation(f_hat: MatRef<'_, f64>, f: MatRef<'_, f64>) -> Result<Vec<usize>> {
    check_pair(f_hat, f)?;
    let g = cross_moment(f_hat, f_hat);
    let x = cross_moment(f_hat, f);
    Ok(best_match(&g, &x)?.0)
}

fn check_pair(f_hat: MatRef<'_, f64>, f: MatRef<'_, f64>) -> Result<()> {
    check_shape("estimate F̂", f_hat, f.nrows(), f.ncols())?;
    check_finite("estimate F̂", f_hat)?;
    check_finite("truth F", f)?;
    Ok(())
}

/// The parameter error up to relabelling, `min_P ‖F̂P − F‖_F / ‖F‖_F` over the `d!` column
/// permutations `P` (`d ≤` [`MAX_PERMUTATION_D`]).
pub fn parameter_error(f_hat: MatRef<'_, f64>, f: MatRef<'_, f64>) -> Result<f64> {
    check_pair(f_hat, f)?;
    let g = cross_moment(f_hat, f_hat);
    let x = cross_moment(f_hat, f);
    let ff = cross_moment(f, f).trace();
    if ff <= 0.0 {
        return Err(Error::invalid("truth F", "must not be zero"));
    }
    let (_, e) = best_match(&g, &x)?;
    Ok(((e + ff).max(0.0) / ff).sqrt())
}

/// The parameter error predicted from the `2d x 2d` joint second moment `E[[z, ẑ]ᵀ[z, ẑ]]` of a
/// true row and its estimate (as the state evolution returns it):
/// `sqrt(min_P E‖ẑP − z‖² / E‖z‖²)`.
pub fn parameter_error_from_moments(joint: &DMat) -> Result<f64> {
    let n2 = joint.nrows();
    if !n2.is_multiple_of(2) || joint.ncols() != n2 || n2 == 0 {
        return Err(Error::shape(
            "joint second moment",
            "2d x 2d",
            format!("{} x {}", joint.nrows(), joint.ncols()),
        ));
    }
    let d = n2 / 2;
    let zz = joint.view((0, 0), (d, d)).trace();
    if zz.is_nan() || zz <= 0.0 {
        return Err(Error::invalid(
            "joint second moment",
            "E‖z‖² must be positive",
        ));
    }
    let g = joint.view((d, d), (d, d)).into_owned();
    let x = joint.view((d, 0), (d, d)).into_owned();
    let (_, e) = best_match(&g, &x)?;
    Ok(((e + zz).max(0.0) / zz).sqrt())
}

// ---------------------------------------------------------------------------------------------
// Asymmetric random start for Algorithm 1
// ---------------------------------------------------------------------------------------------

/// A random, asymmetric start of Algorithm 1.
///
/// With equal weights the mixed regression problem is symmetric under relabelling, and so is
/// Algorithm 1's default start (`R⁻ = 0`, `Γ⁻ ∝ I`): every message stays symmetric and `F̂` keeps
/// identical columns for ever (spec §4.6). This start replaces every backward message by
/// `R⁻_l` with i.i.d. `N(0, scale²)` entries and `Γ⁻_l = precision · I`, independent of the data.
///
/// Note: a random `R⁻_0` alone would not help with a Gaussian prior on `Z_0`, whose forward
/// message is the prior itself whatever it receives (spec §5.1); the message that matters here is
/// `R⁻_1` about `Z_1 = X F`, which the linear layer's first forward step consumes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RandomStart {
    /// Seed of the random messages.
    pub seed: u64,
    /// `Γ⁻_l = precision · I` (positive).
    pub precision: f64,
    /// Standard deviation of the entries of `R⁻_l` (positive).
    pub scale: f64,
}

impl Default for RandomStart {
    fn default() -> Self {
        RandomStart {
            seed: 0,
            precision: 1e-6,
            scale: 1.0,
        }
    }
}

impl RandomStart {
    /// Checks the options.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("precision", self.precision), ("scale", self.scale)] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::invalid(
                    format!("random start {name}"),
                    format!("must be positive and finite, got {v}"),
                ));
            }
        }
        Ok(())
    }

    /// The initial state of Algorithm 1 for `net` (use with [`crate::solver::Solver::run_from`]).
    pub fn state(&self, net: &Network) -> Result<State> {
        self.validate()?;
        let mut state = State::new(net, self.precision)?;
        let mut rng = rng_from_seed(self.seed);
        for (l, &n) in net.rows().iter().enumerate() {
            let d = net.dim();
            state.set_minus(
                l,
                Message {
                    mean: standard_normal(n, d, &mut rng) * faer::Scale(self.scale),
                    precision: Spd::scaled_identity(d, self.precision)?,
                },
            )?;
        }
        Ok(state)
    }
}

// ---------------------------------------------------------------------------------------------
// State evolution from the algorithm's own iterate
// ---------------------------------------------------------------------------------------------

/// The law of an actual message relative to the truth (the reference's `lin_fit`, spec §6.5):
/// `R = Z⁰Ψ + N(0, T)` with `Ψ = lstsq(Z⁰, R)` and `T = (1/n)(Z⁰Ψ − R)ᵀ(Z⁰Ψ − R)`; the precision
/// is the message's own.
pub fn fit_message_law(truth: MatRef<'_, f64>, msg: &Message) -> Result<SeBackward> {
    msg.check("message", truth.nrows(), truth.ncols())?;
    let zz = cross_moment(truth, truth);
    let zr = cross_moment(truth, msg.mean.as_ref());
    let inv = psd_inverse(&zz).ok_or_else(|| Error::NonFinite {
        what: "truth".into(),
        detail: "its second moment is not finite".into(),
    })?;
    let psi = &inv * zr;
    let resid = &mul_small(truth, &psi) - &msg.mean;
    let t = clamp_psd(&sym(&cross_moment(resid.as_ref(), resid.as_ref())));
    Ok(SeBackward {
        psi,
        t,
        gamma: msg.precision.clone(),
    })
}

/// The state-evolution state whose backward laws are those of the algorithm's backward messages
/// in `state` (fitted against `truth` with [`fit_message_law`]): the SE then continues from the
/// algorithm's iterate `state.iteration`.
pub fn se_state_from(state: &State, truth: &[Mat<f64>]) -> Result<SeState> {
    if truth.len() != state.depth() {
        return Err(Error::shape(
            "truth",
            format!("{} matrices", state.depth()),
            format!("{} matrices", truth.len()),
        ));
    }
    let minus = state
        .minus_all()
        .iter()
        .zip(truth)
        .map(|(m, z)| fit_message_law(z.as_ref(), m))
        .collect::<Result<Vec<_>>>()?;
    SeState::from_minus(minus)
}

/// Relabels the truth's columns in a state-evolution state so that the backward message on
/// `variable` is aligned with the identity: finds the column permutation `P` (among those that
/// leave the weights `π` unchanged, `π_{P(k)} = π_k`) maximising `tr(PᵀΨ⁻)`, and replaces every
/// backward law `r = zΨ + c` by its law relative to the relabelled truth `z' = zP`, `Ψ' = PᵀΨ`
/// (`T`, `Γ̄` unchanged). Returns whether anything changed.
///
/// With such weights the model is invariant under relabelling (prior `N(0, I)`, the linear layer
/// acts on every column alike, and the output law is unchanged), so this is a change of
/// coordinates, not of the prediction: parameter errors are minimised over permutations anyway.
/// It matters numerically: once the SE has converged to a swapped labelling, `e⁻ = r⁻ − z` is of
/// order one and the Monte-Carlo regression of `e⁻` on `z` (spec §6.2 (O)) becomes noisy; aligned,
/// `e⁻` is small and so is its sampling noise.
pub fn align_se_labels(state: &mut SeState, variable: usize, weights: &[f64]) -> Result<bool> {
    let law = state.minus(variable).ok_or_else(|| {
        Error::invalid(
            "variable",
            format!("the SE state has {} variables", state.depth()),
        )
    })?;
    let d = law.psi.nrows();
    if weights.len() != d {
        return Err(Error::shape(
            "weights",
            format!("length {d}"),
            format!("length {}", weights.len()),
        ));
    }
    if d > MAX_PERMUTATION_D {
        return Ok(false);
    }
    let psi = &law.psi;
    let score = |perm: &[usize]| -> f64 { (0..d).map(|k| psi[(perm[k], k)]).sum() };
    let identity: Vec<usize> = (0..d).collect();
    let mut best = (identity.clone(), score(&identity));
    for perm in permutations(d) {
        if (0..d).any(|k| weights[perm[k]] != weights[k]) {
            continue;
        }
        let s = score(&perm);
        if s > best.1 {
            best = (perm, s);
        }
    }
    if best.0 == identity {
        return Ok(false);
    }
    // P with P[perm[k], k] = 1: (zP)_k = z_{perm[k]}; Ψ' = PᵀΨ has rows Ψ'_{k·} = Ψ_{perm[k]·}.
    let perm = best.0;
    for l in 0..state.depth() {
        let mut m = state.minus_all()[l].clone();
        let old = m.psi.clone();
        for k in 0..d {
            for j in 0..d {
                m.psi[(k, j)] = old[(perm[k], j)];
            }
        }
        state.set_minus(l, m)?;
    }
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Baseline: alternating minimisation (Yi, Caramanis and Sanghavi, 2014)
// ---------------------------------------------------------------------------------------------

/// How alternating minimisation starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AltMinStart {
    /// Yi et al.'s spectral start: the top-`d` eigenvectors `U` (`p x d`) of
    /// `M = (1/n) Σ_i y_i² x_i x_iᵀ` span (approximately) the columns of `F`; the starting `F`
    /// is the best (lowest loss) of `restarts` alternating minimisations restricted to that
    /// `d`-dimensional subspace (features `x_i U`), each from a random start.
    #[default]
    Spectral,
    /// `F` with i.i.d. `N(0, 1)` entries.
    Random,
}

/// Options of [`alternating_minimisation`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AltMinConfig {
    /// The start.
    pub start: AltMinStart,
    /// Random restarts of the in-subspace search of the spectral start.
    pub restarts: usize,
    /// Maximum number of assign/refit iterations.
    pub max_iterations: usize,
    /// Seed of the random start(s).
    pub seed: u64,
}

impl Default for AltMinConfig {
    fn default() -> Self {
        AltMinConfig {
            start: AltMinStart::Spectral,
            restarts: 20,
            max_iterations: 100,
            seed: 0,
        }
    }
}

/// One iteration of alternating minimisation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AltMinRecord {
    /// Iteration (0 = the start, before any refit).
    pub iteration: usize,
    /// Seconds since the call began (the start included).
    pub seconds: f64,
    /// The loss `(1/n) Σ_i min_k (y_i − x_i·f_k)²` of the iterate.
    pub loss: f64,
    /// How many assignments changed in this iteration's assign step.
    pub changed: usize,
}

/// What [`alternating_minimisation`] returns.
#[derive(Clone, Debug)]
pub struct AltMinResult {
    /// The estimate `F̂` (`p x d`).
    pub f: Mat<f64>,
    /// The final assignments.
    pub labels: Vec<usize>,
    /// Whether the assignments stopped changing before `max_iterations`.
    pub converged: bool,
    /// One record per iteration (the start first).
    pub history: Vec<AltMinRecord>,
}

/// Assigns each sample to its best-fitting component: `argmin_k (y_i − x_i·f_k)²` (ties to the
/// smallest `k`); returns the labels and the loss `(1/n) Σ_i min_k (…)²`.
fn assign(x: MatRef<'_, f64>, y: MatRef<'_, f64>, f: MatRef<'_, f64>) -> (Vec<usize>, f64) {
    let pred = x * f;
    let (n, d) = (pred.nrows(), pred.ncols());
    let mut labels = Vec::with_capacity(n);
    let mut loss = 0.0;
    for i in 0..n {
        let mut best = (0, f64::INFINITY);
        for k in 0..d {
            let r = y[(i, 0)] - pred[(i, k)];
            if r * r < best.1 {
                best = (k, r * r);
            }
        }
        labels.push(best.0);
        loss += best.1;
    }
    (labels, loss / n.max(1) as f64)
}

/// Refits each component by least squares on its assigned samples:
/// `f_k = (X_kᵀX_k + εI)^{-1} X_kᵀ y_k` with a tiny ridge `ε = 1e-10 · tr(X_kᵀX_k)/p` (so that a
/// component with fewer than `p` samples gets the minimum-norm-like solution instead of
/// failing). A component with no samples keeps its previous value.
fn refit(x: MatRef<'_, f64>, y: MatRef<'_, f64>, labels: &[usize], f: &mut Mat<f64>) -> Result<()> {
    let (p, d) = (x.ncols(), f.ncols());
    for k in 0..d {
        let idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == k).collect();
        if idx.is_empty() {
            continue;
        }
        let xk = Mat::from_fn(idx.len(), p, |a, j| x[(idx[a], j)]);
        let yk = Mat::from_fn(idx.len(), 1, |a, _| y[(idx[a], 0)]);
        let mut g = xk.transpose() * &xk;
        let tr: f64 = (0..p).map(|j| g[(j, j)]).sum();
        let ridge = 1e-10 * tr.max(f64::MIN_POSITIVE) / p as f64;
        for j in 0..p {
            g[(j, j)] += ridge;
        }
        let rhs = xk.transpose() * &yk;
        let llt = g.llt(Side::Lower).map_err(|e| Error::Numerical {
            what: "alternating minimisation least squares".into(),
            detail: format!("component {k}: Cholesky of X_kᵀX_k failed ({e:?})"),
        })?;
        let sol = llt.solve(&rhs);
        for j in 0..p {
            f[(j, k)] = sol[(j, 0)];
        }
    }
    Ok(())
}

/// Alternating minimisation from `f0` until the assignments stop changing (or `max_iterations`).
fn alternate(
    x: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    mut f: Mat<f64>,
    max_iterations: usize,
    start: Instant,
    mut on_iter: impl FnMut(&AltMinRecord, MatRef<'_, f64>),
) -> Result<AltMinResult> {
    let (mut labels, loss) = assign(x, y, f.as_ref());
    let mut history = vec![AltMinRecord {
        iteration: 0,
        seconds: start.elapsed().as_secs_f64(),
        loss,
        changed: labels.len(),
    }];
    on_iter(&history[0], f.as_ref());
    let mut converged = false;
    for it in 1..=max_iterations {
        refit(x, y, &labels, &mut f)?;
        let (new, loss) = assign(x, y, f.as_ref());
        let changed = new.iter().zip(&labels).filter(|(a, b)| a != b).count();
        labels = new;
        let rec = AltMinRecord {
            iteration: it,
            seconds: start.elapsed().as_secs_f64(),
            loss,
            changed,
        };
        on_iter(&rec, f.as_ref());
        history.push(rec);
        if changed == 0 {
            converged = true;
            break;
        }
    }
    Ok(AltMinResult {
        f,
        labels,
        converged,
        history,
    })
}

/// The top-`d` eigenvectors (`p x d`) of `M = (1/n) Σ_i y_i² x_i x_iᵀ` (Yi et al.'s spectral
/// subspace: for Gaussian designs `E M = Σ_k π_k (‖f_k‖² I + 2 f_k f_kᵀ)/p² + σ²I/p` up to the
/// design scale, whose top-`d` eigenspace is the span of the `f_k`).
pub fn spectral_subspace(x: MatRef<'_, f64>, y: MatRef<'_, f64>, d: usize) -> Result<Mat<f64>> {
    let (n, p) = (x.nrows(), x.ncols());
    check_shape("responses y", y, n, 1)?;
    if d == 0 || d > p {
        return Err(Error::invalid(
            "d",
            format!("the spectral start needs 1 <= d <= p = {p}, got {d}"),
        ));
    }
    let a = Mat::from_fn(n, p, |i, j| y[(i, 0)].abs() * x[(i, j)]);
    let m = a.transpose() * &a * faer::Scale(1.0 / n as f64);
    let eig = m
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Numerical {
            what: "eigendecomposition of the spectral matrix".into(),
            detail: format!("{e:?}"),
        })?;
    // Eigenvalues ascending: the last d columns.
    let u = eig.U();
    Ok(Mat::from_fn(p, d, |i, k| u[(i, p - 1 - k)]))
}

/// Alternating minimisation for mixed linear regression (Yi, Caramanis and Sanghavi, ICML 2014):
/// from a spectral or random start, repeat (1) assign every sample to the component that fits it
/// best, `q_i = argmin_k (y_i − x_i·f_k)²`; (2) refit every `f_k` by least squares on its
/// samples; until no assignment changes. `on_iter` sees every iterate (for accuracy-vs-time
/// curves); the history's times include the start.
pub fn alternating_minimisation(
    x: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    d: usize,
    config: &AltMinConfig,
    on_iter: impl FnMut(&AltMinRecord, MatRef<'_, f64>),
) -> Result<AltMinResult> {
    let start = Instant::now();
    let (n, p) = (x.nrows(), x.ncols());
    check_shape("responses y", y, n, 1)?;
    check_finite("design X", x)?;
    check_finite("responses y", y)?;
    if n == 0 || p == 0 {
        return Err(Error::invalid(
            "design X",
            format!("must be non-empty, got {}", shape_str(x)),
        ));
    }
    if d == 0 || d > p {
        return Err(Error::invalid(
            "d",
            format!("alternating minimisation needs 1 <= d <= p = {p}, got {d}"),
        ));
    }
    let mut rng = rng_from_seed(config.seed);
    let f0 = match config.start {
        AltMinStart::Random => standard_normal(p, d, &mut rng),
        AltMinStart::Spectral => {
            let u = spectral_subspace(x, y, d)?;
            let xu = x * &u; // n x d: the features in the subspace
            let mut best: Option<(f64, Mat<f64>)> = None;
            for _ in 0..config.restarts.max(1) {
                let g0 = standard_normal(d, d, &mut rng);
                let res = alternate(xu.as_ref(), y, g0, config.max_iterations, start, |_, _| {})?;
                let loss = res.history.last().map_or(f64::INFINITY, |r| r.loss);
                if best.as_ref().is_none_or(|(l, _)| loss < *l) {
                    best = Some((loss, res.f));
                }
            }
            let g = best
                .ok_or_else(|| Error::invalid("restarts", "no restart was run"))?
                .1;
            &u * &g
        }
    };
    alternate(x, y, f0, config.max_iterations, start, on_iter)
}
