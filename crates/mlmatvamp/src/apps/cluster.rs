//! Centroids from a sketch by ML-Mat-VAMP (paper §2.2; `docs/sketched-clustering.md`).
//!
//! For known weights `α`, sketched clustering `min_F Σ_m |y_m − Σ_j α_j e^{i x_mᵀ f_j}|²` is MAP
//! estimation in the two-layer network
//!
//! ```text
//! Z_0 = C (p x K)      rows i.i.d. N(0, s² I_K)          column k = centroid k (centred)
//! Z_1 = Ω C (M x K)    noiseless linear layer W_1 = Ω     row m = the phases w_mᵀ c_k
//! y_m = g_m Σ_k α_k e^{i z_mk} + ξ_m                       the complex-exponential output
//! ```
//!
//! ([`crate::denoise::cexp`]), with `d = K`. [`recover`] runs Algorithm 1 on it
//! ([`crate::solver::Solver`]) from a random asymmetric start (the symmetric start is a fixed
//! point, as in mixed regression), re-fits `α` by non-negative least squares on the sketch
//! between rounds ([`nnls_weights`]), repeats from several seeded starts (in parallel waves of
//! [`ClusterConfig::restart_batch`], stopping after a wave once a restart's residual is within
//! [`ClusterConfig::stop_residual`] times the sketch's [`noise_level`]) and keeps the one with
//! the smallest relative sketch residual ([`sketch_residual`]). An optional stall stop
//! ([`ClusterConfig::stall_improvement`]) ends the last round of a restart stuck far above the
//! noise level. The centroids are returned in data coordinates (the sketch's mean added back).
//! With the approximate MMSE output ([`Estimator::Mmse`]) every round but the last runs the MAP
//! output, and the MMSE's safeguard is on ([`CexpOutput::with_mmse_safeguard`]): from a random
//! start, and at times later, the MMSE surrogate's averaged covariance exceeds the message
//! covariance, and its extrinsic message then diverges (`docs/sketched-clustering.md`).
//!
//! Metrics: [`sse`] (the k-means cost of centroids on data) and [`adjusted_rand_index`].

use crate::apps::sketch::{Frequencies, Sketch};
use crate::denoise::newton::NewtonOptions;
use crate::denoise::{CexpOptions, CexpOutput, Estimator, GaussianPrior, HessianKind, LinearLayer};
use crate::error::{Error, Result};
use crate::message::{Message, MessagePolicy};
use crate::network::Network;
use crate::rng::{mix64, rng_from_seed, standard_normal};
use crate::solver::{Control, IterationRecord, Solver, SolverConfig, State};
use crate::spd::Spd;
use faer::{Mat, MatRef};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

/// One restart's centroids (`p x K`, centred), weights, residual, history, Algorithm-1
/// iterations and where the stall stop ended its last round.
type RestartOutcome = (
    Mat<f64>,
    Vec<f64>,
    f64,
    Vec<IterationRecord>,
    usize,
    Option<usize>,
);

/// Options of [`recover`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The number of clusters `K` (`d`).
    pub k: usize,
    /// The output denoiser: MAP (default) or the approximate MMSE (in the last round; the
    /// rounds before it run MAP).
    pub estimator: Estimator,
    /// Algorithm 1 iterations per round.
    pub iterations: usize,
    /// Rounds of (Algorithm 1, then `α` by non-negative least squares).
    pub rounds: usize,
    /// Seeded random restarts; the one with the smallest sketch residual is kept (default 4:
    /// two full waves of [`ClusterConfig::restart_batch`]; 5 left the second core idle in a
    /// third wave for the same wall time as 6. On 40 seeds at `p = 10`, 5 gave the same
    /// success rates at `M/(Kp)` = 1, 2 and 3, one more success at 1.5, and fits up to 0.8%
    /// better in 5 of 30 seeds at 2: `docs/sketched-clustering.md`, seventh pass).
    pub restarts: usize,
    /// Base seed of the restarts.
    pub seed: u64,
    /// Restarts run in parallel in waves of this many (default 2); the early stop
    /// ([`ClusterConfig::stop_residual`]) is checked between waves, so the restarts that run and
    /// the result do not depend on the number of threads.
    pub restart_batch: usize,
    /// Stop restarting after a wave in which a restart's relative sketch residual is at most
    /// this multiple of the sketch's noise level [`noise_level`] (default `1.5`; `None`: always
    /// run every restart). A fit at that level explains the sketch up to its finite-`T`
    /// sampling noise, so another restart cannot fit it significantly better.
    pub stop_residual: Option<f64>,
    /// Stall stop of a restart's last round (default `None`: off; `Some(2e-3)` was measured,
    /// `docs/sketched-clustering.md`). Every [`ClusterConfig::stall_window`] iterations of the
    /// last round the relative sketch residual of the current estimate is computed; the round
    /// stops when it improved by less than this fraction of the best earlier check while it is
    /// still above [`ClusterConfig::stall_residual`] times the sketch's [`noise_level`]. Such a
    /// restart has settled in a local optimum that leaves much of the sketch unexplained (on
    /// the benchmark mixtures every fit above 4.5 times the noise level had a relative SSE of
    /// at least 1.06); fits near the noise level always run to the tolerance. It saves 2–9% of the decoding's
    /// critical path there but changes which bad fit is kept at `M/(Kp) = 1`, so it is off by
    /// default.
    pub stall_improvement: Option<f64>,
    /// Iterations between the stall stop's residual checks (default 10).
    pub stall_window: usize,
    /// The stall stop only ends restarts whose residual is above this multiple of the noise
    /// level (default 5).
    pub stall_residual: f64,
    /// The within-cluster variance `σ²` of the gains `g_m = e^{−σ²‖w_m‖²/2}` (default: the one
    /// the frequencies were drawn for).
    pub sigma2: Option<f64>,
    /// The output noise variance per real component, `v` (default: the finite-`T` sketch noise
    /// `(1 − |y_m|²)/(2T)` plus [`ClusterConfig::noise_floor`]).
    pub noise: Option<f64>,
    /// The model-error part of the default noise variance in the last round, relative to the
    /// mean `|y_m|²`.
    pub noise_floor: f64,
    /// Annealing of the noise variance: round `r` of `R` uses `noise_floor · anneal^{R−1−r}`
    /// (a smoother objective first; `1` = none).
    pub anneal: f64,
    /// Stop a round early when every estimate changes by less than this (relative).
    pub tolerance: Option<f64>,
    /// The prior variance `s²` of a centroid coordinate (default: the data's mean
    /// per-coordinate variance minus `σ²`, at least `σ²`).
    pub prior_variance: Option<f64>,
    /// Precision of the random start's message about `Z_1`, relative to `1/(s² mean‖w‖²)`.
    pub start_precision: f64,
    /// The message rule (clipping, damping).
    pub policy: MessagePolicy,
    /// The output denoisers' options (default: Gauss–Newton curvature, Newton gradient
    /// tolerance `1e-6 (1 + ‖r‖)` — two orders looser than the spec's `1e-8`, which only added
    /// Newton steps (about 1.4 of 5.2 per row) far below Algorithm 1's own tolerance).
    pub cexp: CexpOptions,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            k: 10,
            estimator: Estimator::Map,
            iterations: 100,
            rounds: 2,
            restarts: 4,
            seed: 0,
            restart_batch: 2,
            stop_residual: Some(1.5),
            stall_improvement: None,
            stall_window: 10,
            stall_residual: 5.0,
            sigma2: None,
            noise: None,
            noise_floor: 1e-2,
            anneal: 10.0,
            tolerance: Some(1e-4),
            prior_variance: None,
            start_precision: 0.01,
            policy: MessagePolicy {
                lam_min: 1e-6,
                damp_precision: 0.0,
                damp_mean: 0.0,
                ..MessagePolicy::default()
            },
            cexp: CexpOptions {
                hessian: HessianKind::GaussNewton,
                newton: NewtonOptions {
                    grad_tol: 1e-6,
                    ..NewtonOptions::default()
                },
                ..CexpOptions::default()
            },
        }
    }
}

impl ClusterConfig {
    /// Checks the options.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 {
            return Err(Error::invalid(
                "K",
                "the number of clusters must be at least 1",
            ));
        }
        for (name, v) in [
            ("iterations", self.iterations),
            ("rounds", self.rounds),
            ("restarts", self.restarts),
            ("restart_batch", self.restart_batch),
            ("stall_window", self.stall_window),
        ] {
            if v == 0 {
                return Err(Error::invalid(name, "must be at least 1"));
            }
        }
        if let Some(s) = self.sigma2 {
            crate::apps::sketch::check_sigma2(s)?;
        }
        for (name, v) in [
            ("noise", self.noise),
            ("prior_variance", self.prior_variance),
            ("start_precision", Some(self.start_precision)),
        ] {
            if let Some(v) = v {
                if !(v > 0.0 && v.is_finite()) {
                    return Err(Error::invalid(
                        name,
                        format!("must be positive and finite, got {v}"),
                    ));
                }
            }
        }
        if let Some(f) = self.stop_residual {
            if !(f >= 0.0 && f.is_finite()) {
                return Err(Error::invalid(
                    "stop_residual",
                    format!("must be non-negative and finite, got {f}"),
                ));
            }
        }
        if let Some(f) = self.stall_improvement {
            if !(f >= 0.0 && f.is_finite()) {
                return Err(Error::invalid(
                    "stall_improvement",
                    format!("must be non-negative and finite, got {f}"),
                ));
            }
        }
        if !(self.stall_residual >= 0.0 && self.stall_residual.is_finite()) {
            return Err(Error::invalid(
                "stall_residual",
                format!(
                    "must be non-negative and finite, got {}",
                    self.stall_residual
                ),
            ));
        }
        if !(self.anneal >= 1.0 && self.anneal.is_finite()) {
            return Err(Error::invalid(
                "anneal",
                format!("must be at least 1 and finite, got {}", self.anneal),
            ));
        }
        if !(self.noise_floor >= 0.0 && self.noise_floor.is_finite()) {
            return Err(Error::invalid(
                "noise_floor",
                format!("must be non-negative and finite, got {}", self.noise_floor),
            ));
        }
        self.policy.validate()?;
        self.cexp.validate()
    }
}

/// One restart's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestartRecord {
    /// The restart's seed.
    pub seed: u64,
    /// Its relative sketch residual `‖y − ŷ‖/‖y‖`.
    pub residual: f64,
    /// Its cluster weights.
    pub weights: Vec<f64>,
    /// Seconds.
    pub seconds: f64,
    /// Algorithm-1 iterations over all rounds (`None` if the restart failed).
    #[serde(default)]
    pub iterations: Option<usize>,
    /// The iteration of the last round at which the stall stop
    /// ([`ClusterConfig::stall_improvement`]) ended it, if it did.
    #[serde(default)]
    pub stalled: Option<usize>,
    /// The error that stopped it, if any (the restart is then not a candidate).
    pub error: Option<String>,
}

/// The result of [`recover`].
#[derive(Clone, Debug)]
pub struct ClusterResult {
    /// The centroids in data coordinates (`K x p`).
    pub centroids: Mat<f64>,
    /// The cluster weights `α` (non-negative, summing to 1).
    pub weights: Vec<f64>,
    /// The relative sketch residual `‖y − ŷ‖/‖y‖` of the kept restart.
    pub residual: f64,
    /// Which restart was kept.
    pub best: usize,
    /// Every restart that ran (fewer than [`ClusterConfig::restarts`] after an early stop).
    pub restarts: Vec<RestartRecord>,
    /// The sketch's relative noise level [`noise_level`].
    pub noise_level: f64,
    /// Whether the restarts stopped early ([`ClusterConfig::stop_residual`]).
    pub stopped_early: bool,
    /// The kept restart's Algorithm-1 history (all rounds, in order).
    pub history: Vec<IterationRecord>,
    /// The `σ²`, noise variance and prior variance used.
    pub sigma2: f64,
    /// The output noise variance per real component (mean over rows).
    pub noise: f64,
    /// The prior variance `s²`.
    pub prior_variance: f64,
    /// Total seconds.
    pub seconds: f64,
}

/// The model's sketch `ŷ_m = g_m Σ_k α_k e^{i w_mᵀ c_k}` of centred centroids `c` (`p x K`).
pub fn model_sketch(
    freqs: &Frequencies,
    gains: &[f64],
    c: MatRef<'_, f64>,
    alpha: &[f64],
) -> Mat<f64> {
    let z = freqs.matrix() * c;
    Mat::from_fn(freqs.m(), 2, |i, part| {
        let s: f64 = (0..alpha.len())
            .map(|k| {
                let (s, co) = z[(i, k)].sin_cos();
                alpha[k] * if part == 0 { co } else { s }
            })
            .sum();
        gains[i] * s
    })
}

/// The relative sketch residual `‖y − ŷ‖/‖y‖` of centred centroids `c` (`p x K`) and weights `α`.
pub fn sketch_residual(
    y: MatRef<'_, f64>,
    freqs: &Frequencies,
    gains: &[f64],
    c: MatRef<'_, f64>,
    alpha: &[f64],
) -> f64 {
    let yh = model_sketch(freqs, gains, c, alpha);
    let num = (y - &yh).norm_l2();
    let den = y.norm_l2();
    if den > 0.0 {
        num / den
    } else {
        num
    }
}

/// The relative noise level of a sketch of `T` points, `√(Σ_m (1 − |y_m|²)/T) / ‖y‖`: the
/// expected relative residual `‖y − E y‖/‖y‖` of the exact model (`E|y_m − E y_m|² =
/// (1 − |E y_m|²)/T` for the mean of `T` independent unit phasors, `|y_m|` standing in for
/// `|E y_m|`). `0` when `T = 0` or `y = 0`.
pub fn noise_level(sketch: &Sketch) -> f64 {
    let t = sketch.count as f64;
    let (mut var, mut norm2) = (0.0, 0.0);
    for i in 0..sketch.y.nrows() {
        let y2 = sketch.y[(i, 0)].powi(2) + sketch.y[(i, 1)].powi(2);
        var += (1.0 - y2).max(0.0);
        norm2 += y2;
    }
    if t > 0.0 && norm2 > 0.0 {
        (var / t).sqrt() / norm2.sqrt()
    } else {
        0.0
    }
}

/// `α ≥ 0` minimising `‖y − A α‖` where column `k` of `A` is `g ∘ e^{iΩc_k}` (stacked real and
/// imaginary parts), by the active-set method of Lawson and Hanson; then normalised to sum 1
/// (uniform if every weight is zero).
pub fn nnls_weights(
    y: MatRef<'_, f64>,
    freqs: &Frequencies,
    gains: &[f64],
    c: MatRef<'_, f64>,
) -> Vec<f64> {
    let k = c.ncols();
    let m = freqs.m();
    let z = freqs.matrix() * c;
    // A (2M x K) and b (2M).
    let a = Mat::from_fn(2 * m, k, |r, j| {
        let (i, part) = (r % m, r / m);
        let (s, co) = z[(i, j)].sin_cos();
        gains[i] * if part == 0 { co } else { s }
    });
    let b: Vec<f64> = (0..2 * m).map(|r| y[(r % m, r / m)]).collect();
    let ata = Mat::from_fn(k, k, |p, q| {
        (0..2 * m).map(|r| a[(r, p)] * a[(r, q)]).sum::<f64>()
    });
    let atb: Vec<f64> = (0..k)
        .map(|p| (0..2 * m).map(|r| a[(r, p)] * b[r]).sum())
        .collect();
    let x = nnls_normal(&ata, &atb);
    let total: f64 = x.iter().sum();
    if total > 0.0 {
        x.iter().map(|v| v / total).collect()
    } else {
        vec![1.0 / k as f64; k]
    }
}

/// Lawson–Hanson NNLS on the normal equations `(AᵀA) x = Aᵀb` (small `K`).
fn nnls_normal(ata: &Mat<f64>, atb: &[f64]) -> Vec<f64> {
    let k = atb.len();
    let mut x = vec![0.0; k];
    let mut passive = vec![false; k];
    let solve = |set: &[bool]| -> Vec<f64> {
        let idx: Vec<usize> = (0..k).filter(|&i| set[i]).collect();
        let n = idx.len();
        let mut out = vec![0.0; k];
        if n == 0 {
            return out;
        }
        let mut mat = nalgebra::DMatrix::from_fn(n, n, |p, q| ata[(idx[p], idx[q])]);
        let tr = mat.trace() / n as f64;
        for p in 0..n {
            mat[(p, p)] += 1e-12 * tr.max(1e-300);
        }
        let rhs = nalgebra::DVector::from_fn(n, |p, _| atb[idx[p]]);
        if let Some(ch) = mat.cholesky() {
            let sol = ch.solve(&rhs);
            for (p, &i) in idx.iter().enumerate() {
                out[i] = sol[p];
            }
        }
        out
    };
    for _ in 0..3 * k + 10 {
        // Gradient of ½‖Ax − b‖²: w = Aᵀb − AᵀA x.
        let w: Vec<f64> = (0..k)
            .map(|i| atb[i] - (0..k).map(|j| ata[(i, j)] * x[j]).sum::<f64>())
            .collect();
        let cand = (0..k)
            .filter(|&i| !passive[i] && w[i] > 1e-12 * (1.0 + atb[i].abs()))
            .max_by(|&a, &b| w[a].total_cmp(&w[b]));
        let Some(j) = cand else { break };
        passive[j] = true;
        loop {
            let s = solve(&passive);
            if (0..k).filter(|&i| passive[i]).all(|i| s[i] > 0.0) {
                x = s;
                break;
            }
            // Step back towards x until a passive variable hits zero.
            let mut alpha = 1.0f64;
            for i in 0..k {
                if passive[i] && s[i] <= 0.0 {
                    let d = x[i] - s[i];
                    if d > 0.0 {
                        alpha = alpha.min(x[i] / d);
                    }
                }
            }
            for i in 0..k {
                x[i] += alpha * (s[i] - x[i]);
                if passive[i] && x[i] <= 1e-15 {
                    passive[i] = false;
                    x[i] = 0.0;
                }
            }
        }
    }
    x
}

/// The defaults [`recover`] resolves from the sketch: `(σ², noise variances per row, s²)`.
pub fn resolve_parameters(
    sketch: &Sketch,
    freqs: &Frequencies,
    config: &ClusterConfig,
) -> Result<(f64, Vec<f64>, f64)> {
    resolve_with_floor(sketch, freqs, config, config.noise_floor)
}

fn resolve_with_floor(
    sketch: &Sketch,
    freqs: &Frequencies,
    config: &ClusterConfig,
    floor: f64,
) -> Result<(f64, Vec<f64>, f64)> {
    let sigma2 = config.sigma2.unwrap_or(freqs.sigma2());
    let m = freqs.m();
    let t = sketch.count.max(1) as f64;
    let y2: Vec<f64> = (0..m)
        .map(|i| sketch.y[(i, 0)].powi(2) + sketch.y[(i, 1)].powi(2))
        .collect();
    let mean_y2 = y2.iter().sum::<f64>() / m as f64;
    let noise = match config.noise {
        Some(v) => vec![v; m],
        None => y2
            .iter()
            .map(|v| ((1.0 - v).max(0.0) / (2.0 * t) + floor * mean_y2).max(1e-12))
            .collect(),
    };
    let data_var = sketch.variance.iter().sum::<f64>() / sketch.variance.len().max(1) as f64;
    let prior = config
        .prior_variance
        .unwrap_or_else(|| (data_var - sigma2).max(sigma2));
    if !(prior > 0.0 && prior.is_finite()) {
        return Err(Error::invalid(
            "prior_variance",
            format!("the centroid prior variance resolved to {prior}"),
        ));
    }
    Ok((sigma2, noise, prior))
}

/// Checks that a sketch and its frequencies agree and that `K` is possible.
fn check_inputs(sketch: &Sketch, freqs: &Frequencies, config: &ClusterConfig) -> Result<()> {
    config.validate()?;
    if sketch.y.nrows() != freqs.m() || sketch.y.ncols() != 2 {
        return Err(Error::shape(
            "sketch",
            format!("{} x 2 (one row per frequency)", freqs.m()),
            format!("{} x {}", sketch.y.nrows(), sketch.y.ncols()),
        ));
    }
    if sketch.mean.len() != freqs.p() {
        return Err(Error::shape(
            "sketch data mean",
            format!("length p = {} (the frequencies' dimension)", freqs.p()),
            format!("length {}", sketch.mean.len()),
        ));
    }
    crate::rows::check_finite("sketch", sketch.y.as_ref())?;
    if (config.k as u64) > sketch.count {
        return Err(Error::invalid(
            "K",
            format!(
                "K = {} exceeds the number of data points T = {}",
                config.k, sketch.count
            ),
        ));
    }
    if freqs.m() < config.k {
        return Err(Error::invalid(
            "M",
            format!(
                "the sketch has M = {} frequencies, fewer than K = {} clusters",
                freqs.m(),
                config.k
            ),
        ));
    }
    Ok(())
}

/// How far from the data mean a recovered centroid may lie, in units of the data's total
/// standard deviation `√(Σ_j Var x_j)`, before its restart counts as diverged.
pub const CENTROID_RANGE: f64 = 10.0;

/// A restart's centroids (`p x K`, centred) must be finite and within [`CENTROID_RANGE`] total
/// standard deviations of the data mean; otherwise the restart diverged (a named error, so that
/// it is never kept as a candidate).
fn check_centroids(c: MatRef<'_, f64>, sketch: &Sketch) -> Result<()> {
    let scale = sketch.variance.iter().sum::<f64>().sqrt();
    for k in 0..c.ncols() {
        let norm = (0..c.nrows())
            .map(|j| c[(j, k)].powi(2))
            .sum::<f64>()
            .sqrt();
        if !norm.is_finite() || (scale > 0.0 && norm > CENTROID_RANGE * scale) {
            return Err(Error::Numerical {
                what: "sketched clustering".into(),
                detail: format!(
                    "the restart diverged: centroid {k} lies {norm:.3e} from the data mean, more than {CENTROID_RANGE} data standard deviations ({scale:.3e})"
                ),
            });
        }
    }
    Ok(())
}

/// The network of the module documentation for weights `α`.
pub fn cluster_network(
    sketch: &Sketch,
    layer: Arc<LinearLayer>,
    gains: Vec<f64>,
    noise: Vec<f64>,
    alpha: Vec<f64>,
    prior_variance: f64,
    config: &ClusterConfig,
) -> Result<Network> {
    let k = alpha.len();
    let output = CexpOutput::new(
        sketch.y.clone(),
        gains,
        alpha,
        noise,
        config.estimator,
        config.cexp,
    )?
    .with_mmse_safeguard(config.estimator == Estimator::Mmse);
    let prior = GaussianPrior::isotropic(k, prior_variance)?;
    let p = layer.shape().1;
    Network::new(Arc::new(prior), p, vec![layer], Arc::new(output))
}

/// Centroids and weights from a sketch (module documentation). `sketch` and `freqs` must match
/// (`M x 2` and `M x p`).
pub fn recover(
    sketch: &Sketch,
    freqs: &Frequencies,
    config: &ClusterConfig,
) -> Result<ClusterResult> {
    recover_from(sketch, freqs, config, None)
}

/// [`recover`] with given starting centroids (`K x p`, data coordinates) for every restart
/// instead of draws from the prior (the restarts then differ only if the start is perturbed).
pub fn recover_from(
    sketch: &Sketch,
    freqs: &Frequencies,
    config: &ClusterConfig,
    init: Option<MatRef<'_, f64>>,
) -> Result<ClusterResult> {
    let start = Instant::now();
    check_inputs(sketch, freqs, config)?;
    let (sigma2, noise, prior) = resolve_parameters(sketch, freqs, config)?;
    let gains = freqs.gains(sigma2);
    let k = config.k;
    let p = freqs.p();
    let layer = Arc::new(LinearLayer::new(freqs.matrix(), None, None, k)?);
    let mean_w2 = (0..freqs.m())
        .map(|i| (0..p).map(|j| freqs.matrix()[(i, j)].powi(2)).sum::<f64>())
        .sum::<f64>()
        / freqs.m() as f64;
    let solver = Solver::new(SolverConfig {
        iterations: config.iterations,
        tolerance: config.tolerance,
        gamma_init: 1e-6,
        policy: config.policy.clone(),
    })?;
    let mut restarts = Vec::with_capacity(config.restarts);
    let mut best: Option<(usize, RestartOutcome)> = None;
    let noise_level = noise_level(sketch);
    // With the approximate MMSE, every round but the last runs MAP (a start for the MMSE round
    // near a fit of the sketch; module documentation).
    let round_config = |round: usize| -> std::borrow::Cow<'_, ClusterConfig> {
        if config.estimator == Estimator::Mmse && round + 1 < config.rounds {
            std::borrow::Cow::Owned(ClusterConfig {
                estimator: Estimator::Map,
                ..config.clone()
            })
        } else {
            std::borrow::Cow::Borrowed(config)
        }
    };
    let run_restart = |r: usize| {
        let t0 = Instant::now();
        let seed = mix64(config.seed ^ mix64(0x5EED_0000 + r as u64));
        let outcome = (|| -> Result<RestartOutcome> {
            let mut alpha = vec![1.0 / k as f64; k];
            let round_noise = |round: usize| -> Result<Vec<f64>> {
                if config.noise.is_some() {
                    return Ok(noise.clone());
                }
                let floor =
                    config.noise_floor * config.anneal.powi((config.rounds - 1 - round) as i32);
                Ok(resolve_with_floor(sketch, freqs, config, floor)?.1)
            };
            let mut net = cluster_network(
                sketch,
                layer.clone(),
                gains.clone(),
                round_noise(0)?,
                alpha.clone(),
                prior,
                &round_config(0),
            )?;
            // Random asymmetric start: centroids drawn from the prior, R⁻_1 = Ω C_0.
            let mut rng = rng_from_seed(seed);
            let c0 = match init {
                Some(c) => Mat::from_fn(p, k, |j, kk| c[(kk, j)] - sketch.mean[j]),
                None => standard_normal(p, k, &mut rng) * faer::Scale(prior.sqrt()),
            };
            let mut state = State::new(&net, 1e-6)?;
            let gamma1 = config.start_precision / (prior * mean_w2);
            state.set_minus(
                1,
                Message {
                    mean: freqs.matrix() * &c0,
                    precision: Spd::scaled_identity(k, gamma1)?,
                },
            )?;
            state.set_minus(
                0,
                Message {
                    mean: c0,
                    precision: Spd::scaled_identity(k, 1.0 / prior)?,
                },
            )?;
            let mut history = Vec::new();
            let mut c = Mat::zeros(p, k);
            let mut iterations = 0usize;
            let mut stalled_at: Option<usize> = None;
            for round in 0..config.rounds {
                // The stall stop ([`ClusterConfig::stall_improvement`]), last round only: every
                // `stall_window` iterations the sketch residual of the current estimate is
                // compared with the best at the earlier checks.
                let stall = config
                    .stall_improvement
                    .filter(|_| round + 1 == config.rounds);
                let alpha_now = alpha.clone();
                let mut best_check = f64::INFINITY;
                let mut in_round = 0usize;
                let sol = solver.run_from(&net, state, None, &mut |_, st| {
                    in_round += 1;
                    let check = stall.is_some() && in_round.is_multiple_of(config.stall_window);
                    let (true, Some(min_gain)) = (check, stall) else {
                        return Control::Continue;
                    };
                    let Some(b) = st.estimate(0) else {
                        return Control::Continue;
                    };
                    let res = sketch_residual(
                        sketch.y.as_ref(),
                        freqs,
                        &gains,
                        b.mean.as_ref(),
                        &alpha_now,
                    );
                    let stalled = res > config.stall_residual * noise_level
                        && best_check - res.min(best_check) < min_gain * best_check;
                    best_check = best_check.min(res);
                    if stalled {
                        stalled_at = Some(in_round);
                        return Control::Stop;
                    }
                    Control::Continue
                })?;
                iterations += sol.history.len();
                history.extend(sol.history.iter().cloned());
                c = sol.estimates[0].clone();
                state = sol.state;
                alpha = nnls_weights(sketch.y.as_ref(), freqs, &gains, c.as_ref());
                if round + 1 < config.rounds {
                    net = cluster_network(
                        sketch,
                        layer.clone(),
                        gains.clone(),
                        round_noise(round + 1)?,
                        alpha.iter().map(|a| a.max(1e-6)).collect(),
                        prior,
                        &round_config(round + 1),
                    )?;
                }
            }
            check_centroids(c.as_ref(), sketch)?;
            let res = sketch_residual(sketch.y.as_ref(), freqs, &gains, c.as_ref(), &alpha);
            Ok((c, alpha, res, history, iterations, stalled_at))
        })();
        (seed, t0.elapsed().as_secs_f64(), outcome)
    };
    // The restarts run in parallel in waves of `restart_batch`; each is deterministic, and they
    // are compared in order. After a wave, stop if a restart has reached the noise level.
    let mut stopped_early = false;
    let mut first = 0;
    while first < config.restarts {
        let last = (first + config.restart_batch).min(config.restarts);
        let outcomes: Vec<(u64, f64, Result<RestartOutcome>)> =
            (first..last).into_par_iter().map(run_restart).collect();
        for (r, (seed, seconds, outcome)) in (first..last).zip(outcomes) {
            match outcome {
                Ok((c, alpha, res, history, iterations, stalled)) => {
                    restarts.push(RestartRecord {
                        seed,
                        residual: res,
                        weights: alpha.clone(),
                        seconds,
                        iterations: Some(iterations),
                        stalled,
                        error: None,
                    });
                    if res.is_finite() && best.as_ref().is_none_or(|b| res < b.1 .2) {
                        best = Some((r, (c, alpha, res, history, iterations, stalled)));
                    }
                }
                Err(e) => restarts.push(RestartRecord {
                    seed,
                    residual: f64::NAN,
                    weights: vec![],
                    seconds,
                    iterations: None,
                    stalled: None,
                    error: Some(e.to_string()),
                }),
            }
        }
        first = last;
        if let (Some(factor), Some((_, b))) = (config.stop_residual, best.as_ref()) {
            if first < config.restarts && b.2 <= factor * noise_level {
                stopped_early = true;
                break;
            }
        }
    }
    let Some((best, (c, weights, residual, history, _, _))) = best else {
        return Err(Error::Numerical {
            what: "sketched clustering".into(),
            detail: format!(
                "every restart failed: {}",
                restarts
                    .iter()
                    .filter_map(|r| r.error.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        });
    };
    let centroids = Mat::from_fn(k, p, |kk, j| c[(j, kk)] + sketch.mean[j]);
    Ok(ClusterResult {
        centroids,
        weights,
        residual,
        best,
        restarts,
        noise_level,
        stopped_early,
        history,
        sigma2,
        noise: noise.iter().sum::<f64>() / noise.len() as f64,
        prior_variance: prior,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The k-means cost `Σ_t min_k ‖x_t − c_k‖²` of centroids (`K x p`) on data (`T x p`).
pub fn sse(data: MatRef<'_, f64>, centroids: MatRef<'_, f64>) -> f64 {
    use rayon::prelude::*;
    let (n, p, k) = (data.nrows(), data.ncols(), centroids.nrows());
    let chunk = 4096;
    (0..n.div_ceil(chunk))
        .into_par_iter()
        .map(|c| {
            let mut s = 0.0;
            for i in c * chunk..((c + 1) * chunk).min(n) {
                let mut best = f64::INFINITY;
                for kk in 0..k {
                    let d: f64 = (0..p)
                        .map(|j| (data[(i, j)] - centroids[(kk, j)]).powi(2))
                        .sum();
                    best = best.min(d);
                }
                s += best;
            }
            s
        })
        .collect::<Vec<f64>>()
        .iter()
        .sum()
}

/// The index of the nearest centroid (`K x p`) of every point (`T x p`).
pub fn assign(data: MatRef<'_, f64>, centroids: MatRef<'_, f64>) -> Vec<usize> {
    let (n, p, k) = (data.nrows(), data.ncols(), centroids.nrows());
    (0..n)
        .map(|i| {
            (0..k)
                .map(|kk| {
                    let d: f64 = (0..p)
                        .map(|j| (data[(i, j)] - centroids[(kk, j)]).powi(2))
                        .sum();
                    (kk, d)
                })
                .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a })
                .0
        })
        .collect()
}

/// The adjusted Rand index of two labelings of the same points (Hubert and Arabie, 1985).
pub fn adjusted_rand_index(a: &[usize], b: &[usize]) -> Result<f64> {
    if a.len() != b.len() || a.is_empty() {
        return Err(Error::invalid(
            "labelings",
            format!(
                "need two non-empty labelings of equal length, got {} and {}",
                a.len(),
                b.len()
            ),
        ));
    }
    let ka = a.iter().max().map_or(0, |x| x + 1);
    let kb = b.iter().max().map_or(0, |x| x + 1);
    let mut table = vec![0u64; ka * kb];
    for (&x, &y) in a.iter().zip(b) {
        table[x * kb + y] += 1;
    }
    let c2 = |n: u64| (n as f64) * (n as f64 - 1.0) / 2.0;
    let sum_ij: f64 = table.iter().map(|&n| c2(n)).sum();
    let sum_a: f64 = (0..ka)
        .map(|i| c2((0..kb).map(|j| table[i * kb + j]).sum()))
        .sum();
    let sum_b: f64 = (0..kb)
        .map(|j| c2((0..ka).map(|i| table[i * kb + j]).sum()))
        .sum();
    let total = c2(a.len() as u64);
    let expected = sum_a * sum_b / total;
    let max = 0.5 * (sum_a + sum_b);
    if (max - expected).abs() < 1e-300 {
        return Ok(1.0);
    }
    Ok((sum_ij - expected) / (max - expected))
}

/// A seeded Gaussian mixture in `R^p`: `K` centroids `N(0, (1.5 K^{1/p})² I_p)` (the setting of
/// Keriven et al.'s compressive k-means experiments), equal weights, clusters `N(c_k, σ² I_p)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixtureConfig {
    /// Clusters `K`.
    pub k: usize,
    /// Dimension `p`.
    pub p: usize,
    /// Within-cluster variance `σ²`.
    pub sigma2: f64,
    /// Scale of the centroids relative to `1.5 K^{1/p}`.
    pub separation: f64,
}

impl Default for MixtureConfig {
    fn default() -> Self {
        MixtureConfig {
            k: 10,
            p: 10,
            sigma2: 1.0,
            separation: 1.0,
        }
    }
}

impl MixtureConfig {
    /// The centroids (`K x p`) for a seed.
    pub fn centroids(&self, seed: u64) -> Mat<f64> {
        let scale = self.separation * 1.5 * (self.k as f64).powf(1.0 / self.p as f64);
        standard_normal(self.k, self.p, &mut rng_from_seed(mix64(seed ^ 0xC3A7)))
            * faer::Scale(scale)
    }
    /// Points `[start, start + n)` of the stream of seed `seed` (`n x p`) with their labels; the
    /// stream is generated in chunks of [`MIXTURE_CHUNK`] points, each from its own seed, so any
    /// range is reproducible without generating what precedes it.
    pub fn points(
        &self,
        centroids: MatRef<'_, f64>,
        seed: u64,
        start: u64,
        n: usize,
    ) -> (Mat<f64>, Vec<usize>) {
        use rand::RngExt;
        let p = self.p;
        let sd = self.sigma2.sqrt();
        let mut out = Mat::zeros(n, p);
        let mut labels = vec![0usize; n];
        let mut i = 0usize;
        while i < n {
            let global = start + i as u64;
            let chunk = global / MIXTURE_CHUNK;
            let offset = (global % MIXTURE_CHUNK) as usize;
            let take = ((MIXTURE_CHUNK as usize) - offset).min(n - i);
            let mut rng = rng_from_seed(mix64(seed ^ mix64(chunk.wrapping_add(0x9E37))));
            // Skip to the offset (draws are in a fixed order: label, then p coordinates).
            for _ in 0..offset {
                let _: usize = rng.random_range(0..self.k);
                for _ in 0..p {
                    let _: f64 = rng.sample(rand_distr::StandardNormal);
                }
            }
            for r in 0..take {
                let lab = rng.random_range(0..self.k);
                labels[i + r] = lab;
                for j in 0..p {
                    let g: f64 = rng.sample(rand_distr::StandardNormal);
                    out[(i + r, j)] = centroids[(lab, j)] + sd * g;
                }
            }
            i += take;
        }
        (out, labels)
    }
}

/// Points per independently seeded chunk of [`MixtureConfig::points`].
pub const MIXTURE_CHUNK: u64 = 1 << 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch_with_variance(variance: Vec<f64>) -> Sketch {
        Sketch {
            y: Mat::zeros(3, 2),
            count: 10,
            mean: vec![0.0; variance.len()],
            variance,
        }
    }

    /// The default restarts fill whole waves: a partly empty last wave costs as long as a full
    /// one and leaves threads idle (`docs/sketched-clustering.md`, seventh pass).
    #[test]
    fn default_restarts_fill_whole_waves() {
        let c = ClusterConfig::default();
        assert_eq!((c.restarts, c.restart_batch), (4, 2));
        assert_eq!(c.restarts % c.restart_batch, 0);
    }

    /// A restart whose centroids are not finite or lie beyond `CENTROID_RANGE` data standard
    /// deviations is a named error (so it is never kept); centroids inside the range pass.
    #[test]
    fn diverged_centroids_are_named_errors() {
        let s = sketch_with_variance(vec![1.0, 3.0]); // total standard deviation 2
        let inside = Mat::from_fn(
            2,
            3,
            |j, k| if j == 0 { 19.0 * (k as f64 - 1.0) } else { 0.0 },
        );
        assert!(check_centroids(inside.as_ref(), &s).is_ok());
        let far = Mat::from_fn(2, 3, |j, k| if j == 1 && k == 2 { 20.5 } else { 0.0 });
        let e = check_centroids(far.as_ref(), &s).unwrap_err();
        assert!(matches!(e, Error::Numerical { .. }), "{e:?}");
        assert!(e.to_string().contains("centroid 2"), "{e}");
        let nan = Mat::from_fn(2, 3, |j, k| if j == 0 && k == 1 { f64::NAN } else { 0.0 });
        assert!(check_centroids(nan.as_ref(), &s).is_err());
    }
}
