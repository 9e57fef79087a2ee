//! `mlmatvamp mmv`: multi-task regression / MMV (paper §2.1, eq. 4–5) over a sweep of the
//! sampling ratio `n_1/n_0`.
//!
//! At every ratio, on the same drawn problems ([`crate::apps::mmv`]):
//!
//! * **ML-Mat-VAMP MMSE** with the matched row-sparse Bernoulli–Gaussian prior (spec §5.2);
//! * **ML-Mat-VAMP group-lasso MAP** (spec §5.3): the group-lasso prior as estimator on the same
//!   Bernoulli–Gaussian data; its fixed point is the minimiser of
//!   `½‖Y − XF‖²_N + λ Σ_k ‖F_k·‖₂` (paper eq. 5);
//! * **FISTA** on the same objective and `λ` (the baseline): it must reach the same minimiser;
//! * the **state evolution** of both estimators, with the Marchenko–Pastur law of `X`; the
//!   group-lasso SE draws the true rows from the Bernoulli–Gaussian law and denoises with the
//!   group lasso ([`crate::denoise::MismatchedPrior`]).
//!
//! **Choice of `λ`.** Unless fixed, `λ` is tuned once per ratio *by the state evolution*: a
//! golden-section search over `log λ` minimises the SE-predicted normalized MSE of the
//! group-lasso estimator (common random numbers, so the SE is a smooth function of `λ`). No
//! drawn problem is used to tune it.
//!
//! **SE fixed points.** The reported SE value is the mean of the last `se_average` iterations
//! (Monte-Carlo noise). Undamped, the group-lasso recursion (like the algorithm) oscillates at
//! low ratios (period 2 at `n_1/n_0 = 0.3`); its fixed point is found by damping the SE *state*
//! (the backward laws `Ψ⁻, T⁻, Γ̄⁻`: `x ← (1−α)T(x) + αx`), which leaves the fixed points
//! unchanged. The MMSE recursion is run undamped.
//!
//! **Damping fallback of the algorithm.** ML-Mat-VAMP group lasso runs undamped; if it has not
//! reached its tolerance after `solver.iterations`, it is rerun with precision and mean damping
//! `fallback_damping` (same fixed points) for up to `fallback_iterations`; its time includes
//! both runs.
//!
//! **Time at equal accuracy.** Accuracy and timing are measured separately. The trials (run in
//! parallel) give the errors. The timing phase then runs one problem per ratio *sequentially*
//! (so that the methods get the same, otherwise idle, thread pool) `timing_repeats` times and
//! keeps the fastest repeat: for each of `accuracies`, the wall time until the group-lasso
//! iterate is within that relative Frobenius distance of the minimiser `F*` (FISTA at
//! `reference_tolerance`); ML-Mat-VAMP's time includes the SVD of `X`.
//!
//! Writes `mmv.json` (metadata with the full configuration and seed, per-ratio summaries, the SE
//! curves, the `λ` search, the timings and every trial), `mmv.csv` (one row per ratio) and
//! `mmv.png`/`.svg`.

use super::{
    prepare_out_dir, run_trials, trial_seed, write_csv_rows, Meta, Observer, Progress, Summary,
};
use crate::apps::mmv::{
    fista_group_lasso, group_lasso_kkt_residual, FistaConfig, GroupLassoProblem, MmvConfig,
    MmvTrial,
};
use crate::denoise::{GroupLassoPrior, InputPrior, MismatchedPrior};
use crate::error::{Error, Result};
use crate::figure::{Figure, FigureFile, Panel, Series};
use crate::message::MessagePolicy;
use crate::network::Network;
use crate::se::{SeConfig, StateEvolution};
use crate::solver::{Control, IterationRecord, Solution, Solver, SolverConfig, State};
use crate::spd::Spd;
use faer::MatRef;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Options of the `mmv` sweep. Defaults: `n_0 = 500`, `d = 3`, `ρ = 0.2`, correlated slab
/// covariance, 20 dB, ratios `0.3, 0.4, …, 1.0`, 4 trials per ratio, `λ` tuned by the SE.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MmvSweepConfig {
    /// The problem (its `ratio` is replaced by each entry of `ratios`).
    pub problem: MmvConfig,
    /// Sampling ratios `n_1/n_0`.
    pub ratios: Vec<f64>,
    /// Trials (independent problems) per ratio.
    pub trials: usize,
    /// Base seed of the problems and of the SE.
    pub seed: u64,
    /// A fixed `λ` for every ratio; `None`: tuned per ratio by the SE.
    pub lambda: Option<f64>,
    /// Search interval of the SE tuning, in units of `sqrt(tr N)` (`N` = noise precision).
    pub lambda_range: [f64; 2],
    /// SE evaluations of the golden-section search.
    pub tuning_evaluations: usize,
    /// SE iterations during the tuning.
    pub tuning_iterations: usize,
    /// Monte-Carlo rows during the tuning.
    pub tuning_n_mc: usize,
    /// ML-Mat-VAMP: maximum iterations and tolerance on the relative change of the estimates.
    pub solver: SolverConfig,
    /// Damping (precision and mean) of the group-lasso rerun when the undamped run does not
    /// reach the tolerance; `0` disables the rerun.
    pub fallback_damping: f64,
    /// Maximum iterations of the damped rerun.
    pub fallback_iterations: usize,
    /// FISTA options.
    pub fista: FistaConfig,
    /// SE iterations of the reported predictions.
    pub se_iterations: usize,
    /// Monte-Carlo rows of the reported predictions.
    pub se_n_mc: usize,
    /// The SE prediction is the mean over this many last iterations (the fixed point, with
    /// less Monte-Carlo noise); the tuning uses half as many.
    pub se_average: usize,
    /// State damping `α` of the group-lasso SE (see the module documentation).
    pub se_lasso_damping: f64,
    /// Relative distances to the minimiser at which the time of the group-lasso solvers is
    /// recorded (the first and the last are plotted).
    pub accuracies: Vec<f64>,
    /// Repeats of the timing phase (the fastest is kept); `0` skips the timing phase.
    pub timing_repeats: usize,
    /// FISTA tolerance of the reference minimiser `F*` of the timing phase.
    pub reference_tolerance: f64,
}

impl Default for MmvSweepConfig {
    fn default() -> Self {
        MmvSweepConfig {
            problem: MmvConfig::default(),
            ratios: (3..=10).map(|i| i as f64 / 10.0).collect(),
            trials: 4,
            seed: 0,
            lambda: None,
            lambda_range: [0.02, 2.0],
            tuning_evaluations: 6,
            tuning_iterations: 20,
            tuning_n_mc: 3000,
            solver: SolverConfig {
                iterations: 500,
                tolerance: Some(1e-9),
                ..Default::default()
            },
            fallback_damping: 0.5,
            fallback_iterations: 1000,
            fista: FistaConfig {
                tolerance: 1e-10,
                ..Default::default()
            },
            se_iterations: 40,
            se_n_mc: 6000,
            se_average: 10,
            se_lasso_damping: 0.5,
            accuracies: vec![1e-3, 1e-4, 1e-6],
            timing_repeats: 2,
            reference_tolerance: 1e-12,
        }
    }
}

impl MmvSweepConfig {
    /// Reads the options from a TOML file (missing keys take their defaults; unknown keys are
    /// errors).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| Error::Config {
            path: Some(path.to_path_buf()),
            detail: e.to_string().trim_end().to_string(),
        })
    }

    /// Checks the options.
    pub fn validate(&self) -> Result<()> {
        if self.ratios.is_empty() {
            return Err(Error::invalid("ratios", "at least one ratio is needed"));
        }
        for &r in &self.ratios {
            MmvConfig {
                ratio: r,
                ..self.problem.clone()
            }
            .validate()?;
        }
        if self.trials == 0 {
            return Err(Error::invalid("trials", "must be at least 1"));
        }
        if let Some(l) = self.lambda {
            GroupLassoPrior::new(self.problem.d, l)?;
        }
        let [a, b] = self.lambda_range;
        if !(a > 0.0 && b > a && b.is_finite()) {
            return Err(Error::invalid(
                "lambda_range",
                format!("must satisfy 0 < lo < hi < inf, got [{a}, {b}]"),
            ));
        }
        for (name, v) in [
            ("fallback_damping", self.fallback_damping),
            ("se_lasso_damping", self.se_lasso_damping),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(Error::invalid(name, format!("must be in [0, 1), got {v}")));
            }
        }
        if self.tuning_evaluations < 3 || self.tuning_iterations < 2 {
            return Err(Error::invalid(
                "tuning",
                "at least 3 evaluations and 2 iterations are needed",
            ));
        }
        if self.se_iterations == 0 || self.se_average == 0 || self.se_average > self.se_iterations {
            return Err(Error::invalid(
                "se_average",
                format!(
                    "must be between 1 and se_iterations = {}, got {}",
                    self.se_iterations, self.se_average
                ),
            ));
        }
        if self.accuracies.is_empty() || self.accuracies.iter().any(|&a| !(a > 0.0 && a < 1.0)) {
            return Err(Error::invalid(
                "accuracies",
                format!(
                    "need at least one value, all in (0, 1), got {:?}",
                    self.accuracies
                ),
            ));
        }
        if !(self.reference_tolerance > 0.0 && self.reference_tolerance < 1.0) {
            return Err(Error::invalid(
                "reference_tolerance",
                format!("must be in (0, 1), got {}", self.reference_tolerance),
            ));
        }
        self.solver.validate()?;
        se_config(self, self.se_iterations, self.se_n_mc).validate()
    }
}

fn se_config(cfg: &MmvSweepConfig, iterations: usize, n_mc: usize) -> SeConfig {
    // The algorithm's message rule; its mean damping (if any) has no SE counterpart.
    SeConfig {
        iterations,
        n_mc,
        seed: cfg.seed,
        gamma_init: cfg.solver.gamma_init,
        policy: MessagePolicy {
            damp_mean: 0.0,
            ..cfg.solver.policy.clone()
        },
        ..Default::default()
    }
}

/// One trial at one ratio (errors and agreement; times are measured in the timing phase). A
/// method that fails (e.g. diverges) leaves its fields `None` and its error in `errors`; the
/// other methods still run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MmvTrialRecord {
    /// Seed of the problem.
    pub seed: u64,
    /// Realised fraction of non-zero rows of `F`.
    pub realised_sparsity: f64,
    /// ML-Mat-VAMP MMSE: NMSE of `F̂`.
    pub vamp_mmse_nmse: Option<f64>,
    /// Iterations of ML-Mat-VAMP MMSE.
    pub vamp_mmse_iterations: Option<usize>,
    /// Whether ML-Mat-VAMP MMSE reached its tolerance.
    pub vamp_mmse_converged: Option<bool>,
    /// ML-Mat-VAMP group-lasso MAP: NMSE of `F̂`.
    pub vamp_lasso_nmse: Option<f64>,
    /// Iterations of ML-Mat-VAMP group lasso (both runs when the damped rerun was used).
    pub vamp_lasso_iterations: Option<usize>,
    /// Whether it reached its tolerance.
    pub vamp_lasso_converged: Option<bool>,
    /// Whether the undamped run missed the tolerance and the damped rerun was used.
    pub vamp_lasso_damped: bool,
    /// FISTA: NMSE of `F̂`.
    pub fista_nmse: Option<f64>,
    /// FISTA iterations.
    pub fista_iterations: Option<usize>,
    /// Whether FISTA reached its tolerance.
    pub fista_converged: Option<bool>,
    /// `‖F_vamp − F_fista‖_F / ‖F_fista‖_F`.
    pub lasso_agreement: Option<f64>,
    /// Objective of ML-Mat-VAMP's MAP estimate minus FISTA's, relative to FISTA's.
    pub objective_gap: Option<f64>,
    /// KKT residual (relative to `λ`) of ML-Mat-VAMP's MAP estimate.
    pub vamp_lasso_kkt: Option<f64>,
    /// KKT residual (relative to `λ`) of FISTA's estimate.
    pub fista_kkt: Option<f64>,
    /// Errors of methods that failed.
    pub errors: Vec<String>,
}

/// The timing phase at one ratio (fastest of `repeats`; times in seconds).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MmvTiming {
    /// Seed of the timed problem (trial 0 of the ratio).
    pub seed: u64,
    /// Repeats (the fastest is kept for every number).
    pub repeats: usize,
    /// The SVD of `X`.
    pub svd_seconds: f64,
    /// ML-Mat-VAMP MMSE to its tolerance, SVD included.
    pub vamp_mmse_seconds: f64,
    /// Its iterations.
    pub vamp_mmse_iterations: usize,
    /// ML-Mat-VAMP group lasso to its tolerance, SVD (and any undamped attempt) included.
    pub vamp_lasso_seconds: f64,
    /// Its iterations (both runs when the damped rerun was used).
    pub vamp_lasso_iterations: usize,
    /// FISTA to its tolerance.
    pub fista_seconds: f64,
    /// Its iterations.
    pub fista_iterations: usize,
    /// The accuracies (relative distance to `F*`).
    pub accuracies: Vec<f64>,
    /// ML-Mat-VAMP group lasso: seconds to each accuracy (`None`: not reached).
    pub vamp_lasso_to_accuracy: Vec<Option<f64>>,
    /// ML-Mat-VAMP group lasso: iterations to each accuracy.
    pub vamp_lasso_iterations_to_accuracy: Vec<Option<usize>>,
    /// ML-Mat-VAMP group lasso: seconds to each accuracy without its SVD of `X` (the time the
    /// iterations take when the SVD is reused).
    pub vamp_lasso_to_accuracy_without_svd: Vec<Option<f64>>,
    /// FISTA: seconds to each accuracy.
    pub fista_to_accuracy: Vec<Option<f64>>,
    /// FISTA: iterations to each accuracy.
    pub fista_iterations_to_accuracy: Vec<Option<usize>>,
}

/// One evaluation of the `λ` search.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LambdaEvaluation {
    /// `λ`.
    pub lambda: f64,
    /// The SE-predicted NMSE of the group-lasso estimator.
    pub se_nmse: f64,
}

/// Everything about one ratio.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MmvPoint {
    /// `n_1/n_0`.
    pub ratio: f64,
    /// `n_1`.
    pub n1: usize,
    /// The `λ` used.
    pub lambda: f64,
    /// The SE evaluations of the `λ` search (empty when `λ` is fixed).
    pub lambda_search: Vec<LambdaEvaluation>,
    /// Whether the tuned `λ` lies in the outer 5% (in `log λ`) of the search interval.
    pub lambda_at_edge: bool,
    /// SE prediction of the MMSE NMSE (mean of the last `se_average` iterations).
    pub se_mmse: f64,
    /// SE prediction of the group-lasso NMSE.
    pub se_lasso: f64,
    /// SE NMSE per iteration, MMSE.
    pub se_mmse_curve: Vec<f64>,
    /// SE NMSE per iteration, group lasso (state-damped).
    pub se_lasso_curve: Vec<f64>,
    /// Seconds of the SE (tuning and both predictions).
    pub se_seconds: f64,
    /// NMSE of ML-Mat-VAMP MMSE over the trials.
    pub vamp_mmse: Summary,
    /// NMSE of ML-Mat-VAMP group-lasso MAP.
    pub vamp_lasso: Summary,
    /// NMSE of FISTA.
    pub fista: Summary,
    /// `‖F_vamp − F_fista‖/‖F_fista‖` over the trials.
    pub lasso_agreement: Summary,
    /// Trials in which ML-Mat-VAMP group lasso needed the damped rerun.
    pub vamp_lasso_damped_trials: usize,
    /// The timing phase (`None` when skipped).
    pub timing: Option<MmvTiming>,
    /// The trials.
    pub trials: Vec<MmvTrialRecord>,
}

/// The whole result (`mmv.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MmvReport {
    /// Configuration, seed, version, total time.
    pub meta: Meta,
    /// One entry per ratio.
    pub points: Vec<MmvPoint>,
    /// The files written (the figures' files by the front door that renders them).
    pub files: Vec<PathBuf>,
    /// The figures to render.
    #[serde(skip)]
    pub figures: Vec<FigureFile>,
}

/// The SE of one estimator at one ratio: the NMSE of `F̂` per iteration. With `damping = α > 0`
/// the backward laws are damped after every iteration, `x ← (1−α)T(x) + αx` (same fixed
/// points; see the module documentation).
pub fn se_curve(
    problem: &MmvConfig,
    prior: Arc<dyn InputPrior>,
    base: &SeConfig,
    iterations: usize,
    n_mc: usize,
    damping: f64,
) -> Result<Vec<f64>> {
    let net = problem.se_network(prior)?;
    let se = StateEvolution::new(SeConfig {
        iterations,
        n_mc,
        ..base.clone()
    })?;
    let mut state = se.initial_state(&net)?;
    let d = problem.d;
    let mut curve = Vec::with_capacity(iterations);
    for k in 0..iterations {
        let old = state.minus_all().to_vec();
        se.step(&net, &mut state, k)?;
        if k > 0 && damping > 0.0 {
            for (l, o) in old.iter().enumerate() {
                let mut m = state.minus_all()[l].clone();
                m.psi = &m.psi * (1.0 - damping) + &o.psi * damping;
                m.t = &m.t * (1.0 - damping) + &o.t * damping;
                m.gamma = Spd::from_symmetric(
                    "damped SE precision",
                    m.gamma.matrix() * (1.0 - damping) + o.gamma.matrix() * damping,
                )?;
                state.set_minus(l, m)?;
            }
        }
        let e = state
            .estimate(0)
            .ok_or_else(|| Error::invalid("state evolution", "no estimate of Z_0"))?;
        let zz = e.joint.view((0, 0), (d, d)).trace();
        curve.push(e.error_cov.trace() / zz);
    }
    Ok(curve)
}

fn tail_mean(v: &[f64], k: usize) -> f64 {
    let k = k.min(v.len()).max(1);
    v[v.len() - k..].iter().sum::<f64>() / k as f64
}

fn lasso_prior(problem: &MmvConfig, lambda: f64) -> Result<Arc<dyn InputPrior>> {
    Ok(Arc::new(MismatchedPrior::new(
        Arc::new(problem.data_prior()?),
        Arc::new(GroupLassoPrior::new(problem.d, lambda)?),
    )?))
}

/// The SE part of one ratio: `λ` (tuned or fixed) and both predictions.
struct SePart {
    lambda: f64,
    search: Vec<LambdaEvaluation>,
    at_edge: bool,
    mmse: Vec<f64>,
    lasso: Vec<f64>,
    seconds: f64,
}

fn se_part(problem: &MmvConfig, cfg: &MmvSweepConfig) -> Result<SePart> {
    let start = Instant::now();
    let base = se_config(cfg, cfg.se_iterations, cfg.se_n_mc);
    let mut search = Vec::new();
    let mut at_edge = false;
    let lambda = match cfg.lambda {
        Some(l) => l,
        None => {
            let scale = problem.noise_precision()?.matrix().trace().sqrt();
            let (a, b) = (
                (cfg.lambda_range[0] * scale).ln(),
                (cfg.lambda_range[1] * scale).ln(),
            );
            let mut eval = |log_l: f64| -> Result<f64> {
                let l = log_l.exp();
                let curve = se_curve(
                    problem,
                    lasso_prior(problem, l)?,
                    &base,
                    cfg.tuning_iterations,
                    cfg.tuning_n_mc,
                    cfg.se_lasso_damping,
                )?;
                let v = tail_mean(&curve, cfg.se_average.div_ceil(2));
                search.push(LambdaEvaluation {
                    lambda: l,
                    se_nmse: v,
                });
                // A diverged SE counts as a bad λ, not as a failure of the search.
                Ok(if v.is_finite() { v } else { f64::INFINITY })
            };
            let best = golden_section(a, b, cfg.tuning_evaluations, &mut eval)?;
            let width = b - a;
            at_edge = best - a < 0.05 * width || b - best < 0.05 * width;
            best.exp()
        }
    };
    let mmse = se_curve(
        problem,
        Arc::new(problem.data_prior()?),
        &base,
        cfg.se_iterations,
        cfg.se_n_mc,
        0.0,
    )?;
    let lasso = se_curve(
        problem,
        lasso_prior(problem, lambda)?,
        &base,
        cfg.se_iterations,
        cfg.se_n_mc,
        cfg.se_lasso_damping,
    )?;
    Ok(SePart {
        lambda,
        search,
        at_edge,
        mmse,
        lasso,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Golden-section minimisation of `f` on `[a, b]` with `evaluations` calls; returns the best
/// point evaluated.
pub fn golden_section(
    a: f64,
    b: f64,
    evaluations: usize,
    f: &mut dyn FnMut(f64) -> Result<f64>,
) -> Result<f64> {
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (a, b);
    let mut c = b - phi * (b - a);
    let mut d = a + phi * (b - a);
    let (mut fc, mut fd) = (f(c)?, f(d)?);
    let mut best = if fc <= fd { (c, fc) } else { (d, fd) };
    for _ in 2..evaluations {
        if fc <= fd {
            b = d;
            d = c;
            fd = fc;
            c = b - phi * (b - a);
            fc = f(c)?;
            if fc < best.1 {
                best = (c, fc);
            }
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + phi * (b - a);
            fd = f(d)?;
            if fd < best.1 {
                best = (d, fd);
            }
        }
    }
    Ok(best.0)
}

fn rel_dist(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> f64 {
    (a - b).norm_l2() / b.norm_l2().max(f64::MIN_POSITIVE)
}

/// The first time (and iteration) at which an iterate came within each accuracy of `F*`.
struct Trace<'a> {
    reference: MatRef<'a, f64>,
    accuracies: &'a [f64],
    hits: Vec<Option<(f64, usize)>>,
}

impl<'a> Trace<'a> {
    fn new(reference: MatRef<'a, f64>, accuracies: &'a [f64]) -> Self {
        Trace {
            reference,
            accuracies,
            hits: vec![None; accuracies.len()],
        }
    }
    /// Records the iterate; returns whether every accuracy has been reached.
    fn note(&mut self, f: MatRef<'_, f64>, seconds: f64, iteration: usize) -> bool {
        let dist = rel_dist(f, self.reference);
        for (hit, &acc) in self.hits.iter_mut().zip(self.accuracies) {
            if hit.is_none() && dist <= acc {
                *hit = Some((seconds, iteration));
            }
        }
        self.hits.iter().all(Option::is_some)
    }
}

/// ML-Mat-VAMP group lasso with the damping fallback. `watch(record, state)` sees every
/// iteration of both runs. Returns the solution and whether the damped rerun was used.
fn run_lasso(
    net: &Network,
    truth: Option<&[faer::Mat<f64>]>,
    cfg: &MmvSweepConfig,
    watch: &mut dyn FnMut(&IterationRecord, &State) -> Control,
) -> (Result<Solution>, bool, Option<String>) {
    let plain = Solver::new(cfg.solver.clone()).and_then(|s| s.run_with(net, truth, watch));
    let failed = !matches!(&plain, Ok(sol) if sol.converged);
    if !failed || cfg.fallback_damping == 0.0 {
        return (plain, false, None);
    }
    let note = plain.as_ref().err().map(|e| e.to_string());
    let damped = Solver::new(SolverConfig {
        iterations: cfg.fallback_iterations,
        policy: MessagePolicy {
            damp_precision: cfg.fallback_damping,
            damp_mean: cfg.fallback_damping,
            ..cfg.solver.policy.clone()
        },
        ..cfg.solver.clone()
    })
    .and_then(|s| s.run_with(net, truth, watch));
    (damped, true, note)
}

/// One trial: draw the problem, run the three methods (each failure recorded separately).
fn run_trial(
    problem: &MmvConfig,
    lambda: f64,
    seed: u64,
    cfg: &MmvSweepConfig,
) -> Result<MmvTrialRecord> {
    let trial = problem.sample(seed)?;
    let truth = trial.truth();
    let layer = trial.layer()?;
    let nonzero = (0..trial.f.nrows())
        .filter(|&i| (0..trial.f.ncols()).any(|j| trial.f[(i, j)] != 0.0))
        .count();
    let mut rec = MmvTrialRecord {
        seed,
        realised_sparsity: nonzero as f64 / problem.n0 as f64,
        ..Default::default()
    };

    // ML-Mat-VAMP MMSE with the matched Bernoulli–Gaussian prior.
    let net = trial.network(Arc::new(problem.data_prior()?), layer.clone())?;
    match Solver::new(cfg.solver.clone())?.run(&net, Some(&truth)) {
        Ok(sol) => {
            rec.vamp_mmse_nmse = Some(trial.nmse(sol.estimates[0].as_ref()));
            rec.vamp_mmse_iterations = Some(sol.history.len());
            rec.vamp_mmse_converged = Some(sol.converged);
        }
        Err(e) => rec.errors.push(format!("ML-Mat-VAMP MMSE: {e}")),
    }

    // FISTA.
    let gl = lasso_problem(&trial, lambda);
    let fista = fista_group_lasso(&gl, &cfg.fista, None, &mut |_, _, _| Control::Continue)?;
    let f_fista = fista.estimate.as_ref();
    rec.fista_nmse = Some(trial.nmse(f_fista));
    rec.fista_iterations = Some(fista.iterations);
    rec.fista_converged = Some(fista.converged);
    rec.fista_kkt = Some(group_lasso_kkt_residual(&gl, f_fista)?);

    // ML-Mat-VAMP group-lasso MAP.
    let net = trial.network(lasso_prior(problem, lambda)?, layer)?;
    let mut iterations = 0;
    let (lasso, damped, note) = run_lasso(&net, Some(&truth), cfg, &mut |_, _| {
        iterations += 1;
        Control::Continue
    });
    rec.vamp_lasso_damped = damped;
    if let Some(e) = note {
        rec.errors.push(format!(
            "ML-Mat-VAMP group lasso (undamped; rerun damped): {e}"
        ));
    }
    match lasso {
        Ok(sol) => {
            let f_vamp = sol.estimates[0].as_ref();
            rec.vamp_lasso_nmse = Some(trial.nmse(f_vamp));
            rec.vamp_lasso_iterations = Some(iterations);
            rec.vamp_lasso_converged = Some(sol.converged);
            rec.lasso_agreement = Some(rel_dist(f_vamp, f_fista));
            rec.objective_gap =
                Some((gl.objective(f_vamp)? - fista.objective) / fista.objective.abs());
            rec.vamp_lasso_kkt = Some(group_lasso_kkt_residual(&gl, f_vamp)?);
        }
        Err(e) => rec.errors.push(format!("ML-Mat-VAMP group lasso: {e}")),
    }
    Ok(rec)
}

fn lasso_problem(trial: &MmvTrial, lambda: f64) -> GroupLassoProblem<'_> {
    GroupLassoProblem {
        x: trial.x.as_ref(),
        y: trial.y.as_ref(),
        noise: &trial.noise,
        lambda,
    }
}

fn min_opt<T: Copy + PartialOrd>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y < x { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The timing phase at one ratio (see the module documentation).
fn run_timing(
    problem: &MmvConfig,
    lambda: f64,
    seed: u64,
    cfg: &MmvSweepConfig,
) -> Result<MmvTiming> {
    let trial = problem.sample(seed)?;
    let gl = lasso_problem(&trial, lambda);
    let reference = fista_group_lasso(
        &gl,
        &FistaConfig {
            tolerance: cfg.reference_tolerance,
            ..cfg.fista.clone()
        },
        None,
        &mut |_, _, _| Control::Continue,
    )?
    .estimate;
    let na = cfg.accuracies.len();
    let mut t = MmvTiming {
        seed,
        repeats: cfg.timing_repeats,
        svd_seconds: f64::INFINITY,
        vamp_mmse_seconds: f64::INFINITY,
        vamp_mmse_iterations: 0,
        vamp_lasso_seconds: f64::INFINITY,
        vamp_lasso_iterations: 0,
        fista_seconds: f64::INFINITY,
        fista_iterations: 0,
        accuracies: cfg.accuracies.clone(),
        vamp_lasso_to_accuracy: vec![None; na],
        vamp_lasso_iterations_to_accuracy: vec![None; na],
        vamp_lasso_to_accuracy_without_svd: vec![None; na],
        fista_to_accuracy: vec![None; na],
        fista_iterations_to_accuracy: vec![None; na],
    };
    for _ in 0..cfg.timing_repeats {
        // ML-Mat-VAMP MMSE, SVD included.
        let start = Instant::now();
        let layer = trial.layer()?;
        let svd = start.elapsed().as_secs_f64();
        let net = trial.network(Arc::new(problem.data_prior()?), layer.clone())?;
        let sol = Solver::new(cfg.solver.clone())?.run(&net, None)?;
        t.svd_seconds = t.svd_seconds.min(svd);
        let secs = start.elapsed().as_secs_f64();
        if secs < t.vamp_mmse_seconds {
            t.vamp_mmse_seconds = secs;
            t.vamp_mmse_iterations = sol.history.len();
        }
        // ML-Mat-VAMP group lasso, SVD included (a fresh one), distance checks excluded.
        let start = Instant::now();
        let layer = trial.layer()?;
        let svd = start.elapsed().as_secs_f64();
        let net = trial.network(lasso_prior(problem, lambda)?, layer)?;
        let mut elapsed = start.elapsed().as_secs_f64();
        let mut trace = Trace::new(reference.as_ref(), &cfg.accuracies);
        let mut iterations = 0;
        let (sol, _, _) = run_lasso(&net, None, cfg, &mut |rec, state| {
            elapsed += rec.seconds;
            iterations += 1;
            if let Some(b) = state.estimate(0) {
                trace.note(b.mean.as_ref(), elapsed, iterations);
            }
            Control::Continue
        });
        sol?;
        if elapsed < t.vamp_lasso_seconds {
            t.vamp_lasso_seconds = elapsed;
            t.vamp_lasso_iterations = iterations;
        }
        for (i, hit) in trace.hits.iter().enumerate() {
            t.vamp_lasso_to_accuracy[i] = min_opt(t.vamp_lasso_to_accuracy[i], hit.map(|h| h.0));
            t.vamp_lasso_iterations_to_accuracy[i] = hit.map(|h| h.1);
            t.vamp_lasso_to_accuracy_without_svd[i] = min_opt(
                t.vamp_lasso_to_accuracy_without_svd[i],
                hit.map(|h| h.0 - svd),
            );
        }
        // FISTA (its callbacks are excluded from its clock).
        let mut trace = Trace::new(reference.as_ref(), &cfg.accuracies);
        let fista = fista_group_lasso(&gl, &cfg.fista, None, &mut |k, f, secs| {
            trace.note(f, secs, k + 1);
            Control::Continue
        })?;
        if fista.seconds < t.fista_seconds {
            t.fista_seconds = fista.seconds;
            t.fista_iterations = fista.iterations;
        }
        for (i, hit) in trace.hits.iter().enumerate() {
            t.fista_to_accuracy[i] = min_opt(t.fista_to_accuracy[i], hit.map(|h| h.0));
            t.fista_iterations_to_accuracy[i] = hit.map(|h| h.1);
        }
    }
    Ok(t)
}

fn summary_of(
    outcomes: &[std::result::Result<MmvTrialRecord, String>],
    f: impl Fn(&MmvTrialRecord) -> Option<f64>,
) -> Summary {
    let mut values = Vec::new();
    let mut errors = Vec::new();
    for (i, o) in outcomes.iter().enumerate() {
        match o {
            Ok(r) => match f(r) {
                Some(v) if v.is_finite() => values.push(v),
                Some(v) => errors.push(format!("trial {i}: non-finite value {v}")),
                None => errors.push(format!("trial {i}: {}", r.errors.join("; "))),
            },
            Err(e) => errors.push(format!("trial {i}: {e}")),
        }
    }
    Summary::from_values(values, errors)
}

/// Runs the sweep and writes `mmv.json`, `mmv.csv`, `mmv.png` and `mmv.svg` to `out_dir`.
pub fn run(cfg: &MmvSweepConfig, out_dir: &Path, observer: &dyn Observer) -> Result<MmvReport> {
    use rayon::prelude::*;
    cfg.validate()?;
    prepare_out_dir(out_dir)?;
    let start = Instant::now();
    let problems: Vec<MmvConfig> = cfg
        .ratios
        .iter()
        .map(|&ratio| MmvConfig {
            ratio,
            ..cfg.problem.clone()
        })
        .collect();
    let np = problems.len();
    let timed = if cfg.timing_repeats > 0 { np } else { 0 };
    let pb = Progress::new(observer, "mmv", (np + np * cfg.trials + timed) as u64);
    // Phase 1: the SE (λ tuning and predictions) of every ratio, in parallel.
    let se: Vec<Result<SePart>> = problems
        .par_iter()
        .map(|p| {
            let r = se_part(p, cfg);
            pb.inc(1);
            r
        })
        .collect();
    let se: Vec<SePart> = se.into_iter().collect::<Result<_>>()?;
    // Phase 2: every (ratio, trial) in parallel.
    let outcomes = run_trials(np * cfg.trials, &pb, |i| {
        let (p, t) = (i / cfg.trials, i % cfg.trials);
        run_trial(
            &problems[p],
            se[p].lambda,
            trial_seed(cfg.seed, p as u64, t as u64),
            cfg,
        )
    });
    // Phase 3: timing, one ratio at a time.
    let mut timings = Vec::with_capacity(np);
    for (p, problem) in problems.iter().enumerate() {
        if cfg.timing_repeats == 0 {
            timings.push(None);
            continue;
        }
        let seed = trial_seed(cfg.seed, p as u64, 0);
        timings.push(Some(run_timing(problem, se[p].lambda, seed, cfg)?));
        pb.inc(1);
    }
    pb.finish()?;
    let mut points = Vec::with_capacity(np);
    for (p, ((problem, se), timing)) in problems.iter().zip(se).zip(timings).enumerate() {
        let outs: Vec<std::result::Result<MmvTrialRecord, String>> = outcomes
            [p * cfg.trials..(p + 1) * cfg.trials]
            .iter()
            .map(|o| match (&o.value, &o.error) {
                (Some(v), _) => Ok(v.clone()),
                (None, e) => Err(e.clone().unwrap_or_else(|| "no value".into())),
            })
            .collect();
        points.push(MmvPoint {
            ratio: problem.ratio,
            n1: problem.n1(),
            lambda: se.lambda,
            lambda_search: se.search,
            lambda_at_edge: se.at_edge,
            se_mmse: tail_mean(&se.mmse, cfg.se_average),
            se_lasso: tail_mean(&se.lasso, cfg.se_average),
            se_mmse_curve: se.mmse,
            se_lasso_curve: se.lasso,
            se_seconds: se.seconds,
            vamp_mmse: summary_of(&outs, |r| r.vamp_mmse_nmse),
            vamp_lasso: summary_of(&outs, |r| r.vamp_lasso_nmse),
            fista: summary_of(&outs, |r| r.fista_nmse),
            lasso_agreement: summary_of(&outs, |r| r.lasso_agreement),
            vamp_lasso_damped_trials: outs
                .iter()
                .filter(|o| matches!(o, Ok(r) if r.vamp_lasso_damped))
                .count(),
            timing,
            trials: outs.into_iter().filter_map(|o| o.ok()).collect(),
        });
    }
    let meta = Meta::new("mmv", cfg.seed, cfg, start.elapsed().as_secs_f64())?;
    let mut report = MmvReport {
        meta,
        points,
        files: vec![],
        figures: vec![],
    };
    let (files, figure) = write_outputs(&report, out_dir)?;
    report.files = files;
    report.figures = vec![figure];
    Ok(report)
}

/// A text table of the results (one line per ratio), as printed by `mlmatvamp mmv`.
pub fn summary_table(report: &MmvReport) -> String {
    let mut out = format!(
        "{:>5} {:>5} {:>7} | {:>7} {:>7} | {:>7} {:>7} {:>7} {:>8} | {:>7} {:>7} {:>8} {:>8}\n",
        "ratio",
        "n1",
        "lambda",
        "MMSE",
        "SE",
        "GL-VAMP",
        "FISTA",
        "SE",
        "max|dF|",
        "t_MMSE",
        "t_GL",
        "tV@acc",
        "tF@acc"
    );
    let mut acc = f64::NAN;
    for p in &report.points {
        let max_agree = p
            .lasso_agreement
            .values
            .iter()
            .copied()
            .fold(f64::NAN, f64::max);
        let (t_mmse, t_gl, tv, tf) = match &p.timing {
            Some(t) => {
                acc = t.accuracies.first().copied().unwrap_or(f64::NAN);
                let first = |v: &[Option<f64>]| v.first().copied().flatten().unwrap_or(f64::NAN);
                (
                    t.vamp_mmse_seconds,
                    t.vamp_lasso_seconds,
                    first(&t.vamp_lasso_to_accuracy),
                    first(&t.fista_to_accuracy),
                )
            }
            None => (f64::NAN, f64::NAN, f64::NAN, f64::NAN),
        };
        out += &format!(
            "{:>5.2} {:>5} {:>7.2} | {:>7.4} {:>7.4} | {:>7.4} {:>7.4} {:>7.4} {:>8.1e} | {:>7.3} {:>7.3} {:>8.4} {:>8.4}\n",
            p.ratio, p.n1, p.lambda, p.vamp_mmse.median, p.se_mmse, p.vamp_lasso.median,
            p.fista.median, p.se_lasso, max_agree, t_mmse, t_gl, tv, tf,
        );
    }
    out += &format!(
        "NMSE = ||F^ - F||^2/||F||^2, medians over {} trials; max|dF| = largest ||F_VAMP - F_FISTA||/||F_FISTA||.\n\
         Seconds (fastest of {} sequential repeats on one problem per ratio; ML-Mat-VAMP includes the SVD): \
         t_MMSE, t_GL = ML-Mat-VAMP MMSE / group lasso to tolerance; tV@acc, tF@acc = ML-Mat-VAMP / FISTA \
         group lasso to within {acc:.0e} of the minimiser. Total {:.1} s.",
        report.meta.config["trials"],
        report.meta.config["timing_repeats"],
        report.meta.seconds,
    );
    out
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "NaN".into(), |x| format!("{x}"))
}

fn write_outputs(report: &MmvReport, out_dir: &Path) -> Result<(Vec<PathBuf>, FigureFile)> {
    let json = out_dir.join("mmv.json");
    let csv = out_dir.join("mmv.csv");
    let accuracies: Vec<f64> = report.meta.config["accuracies"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    let mut header: Vec<String> = [
        "ratio",
        "n1",
        "lambda",
        "se_mmse",
        "vamp_mmse_median",
        "vamp_mmse_q25",
        "vamp_mmse_q75",
        "se_lasso",
        "vamp_lasso_median",
        "vamp_lasso_q25",
        "vamp_lasso_q75",
        "fista_median",
        "fista_q25",
        "fista_q75",
        "lasso_agreement_max",
        "failed",
        "svd_seconds",
        "vamp_mmse_seconds",
        "vamp_lasso_seconds",
        "fista_seconds",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for a in &accuracies {
        header.push(format!("vamp_lasso_seconds_to_{a:e}"));
        header.push(format!("fista_seconds_to_{a:e}"));
    }
    let rows: Vec<Vec<String>> = report
        .points
        .iter()
        .map(|p| {
            let max_agree = p
                .lasso_agreement
                .values
                .iter()
                .copied()
                .fold(f64::NAN, f64::max);
            let failed = p
                .vamp_mmse
                .failed
                .max(p.vamp_lasso.failed)
                .max(p.fista.failed);
            let mut row: Vec<String> = [
                p.ratio,
                p.n1 as f64,
                p.lambda,
                p.se_mmse,
                p.vamp_mmse.median,
                p.vamp_mmse.q25,
                p.vamp_mmse.q75,
                p.se_lasso,
                p.vamp_lasso.median,
                p.vamp_lasso.q25,
                p.vamp_lasso.q75,
                p.fista.median,
                p.fista.q25,
                p.fista.q75,
                max_agree,
                failed as f64,
            ]
            .iter()
            .map(|v| format!("{v}"))
            .collect();
            match &p.timing {
                Some(t) => {
                    for v in [
                        t.svd_seconds,
                        t.vamp_mmse_seconds,
                        t.vamp_lasso_seconds,
                        t.fista_seconds,
                    ] {
                        row.push(format!("{v}"));
                    }
                    for i in 0..accuracies.len() {
                        row.push(fmt_opt(t.vamp_lasso_to_accuracy.get(i).copied().flatten()));
                        row.push(fmt_opt(t.fista_to_accuracy.get(i).copied().flatten()));
                    }
                }
                None => row.extend((0..4 + 2 * accuracies.len()).map(|_| "NaN".to_string())),
            }
            row
        })
        .collect();
    let header_ref: Vec<&str> = header.iter().map(String::as_str).collect();
    write_csv_rows(&csv, &header_ref, &rows)?;
    let figure = FigureFile::new(out_dir.join("mmv"), figure(report));
    let [png, svg] = figure.files();
    // The JSON last, so that it lists every file (itself included).
    let files = vec![json.clone(), csv, png, svg];
    let mut full = report.clone();
    full.files = files.clone();
    let text = serde_json::to_string_pretty(&full)
        .map_err(|e| Error::invalid("mmv report", e.to_string()))?;
    std::fs::write(&json, text).map_err(|source| Error::Io {
        action: "writing",
        path: json.clone(),
        source,
    })?;
    Ok((files, figure))
}

fn figure(report: &MmvReport) -> Figure {
    let x: Vec<f64> = report.points.iter().map(|p| p.ratio).collect();
    let summary = |label: &str, f: &dyn Fn(&MmvPoint) -> &Summary, color: usize| Series {
        label: label.into(),
        x: x.clone(),
        y: report.points.iter().map(|p| f(p).median).collect(),
        band: Some((
            report.points.iter().map(|p| f(p).q25).collect(),
            report.points.iter().map(|p| f(p).q75).collect(),
        )),
        dashed: false,
        color: Some(color),
    };
    let line = |label: &str, y: Vec<f64>, color: usize, dashed: bool| Series {
        label: label.into(),
        x: x.clone(),
        y,
        band: None,
        dashed,
        color: Some(color),
    };
    let nmse = Panel {
        title: "MMV: normalized MSE of F (median, IQR)".into(),
        x_label: "sampling ratio n1/n0".into(),
        y_label: "||F^ - F||^2 / ||F||^2".into(),
        series: vec![
            summary("ML-Mat-VAMP MMSE (BG prior)", &|p| &p.vamp_mmse, 0),
            line(
                "SE, MMSE",
                report.points.iter().map(|p| p.se_mmse).collect(),
                0,
                true,
            ),
            summary("ML-Mat-VAMP group lasso (MAP)", &|p| &p.vamp_lasso, 1),
            summary("FISTA group lasso", &|p| &p.fista, 2),
            line(
                "SE, group lasso",
                report.points.iter().map(|p| p.se_lasso).collect(),
                1,
                true,
            ),
        ],
        log_y: true,
        ..Default::default()
    };
    let timing = |f: &dyn Fn(&MmvTiming) -> f64| -> Vec<f64> {
        report
            .points
            .iter()
            .map(|p| p.timing.as_ref().map_or(f64::NAN, f))
            .collect()
    };
    let at = |which: usize, vamp: bool| -> Vec<f64> {
        timing(&|t| {
            let v = if vamp {
                &t.vamp_lasso_to_accuracy
            } else {
                &t.fista_to_accuracy
            };
            v.get(which).copied().flatten().unwrap_or(f64::NAN)
        })
    };
    let accs = report
        .points
        .iter()
        .find_map(|p| p.timing.as_ref().map(|t| t.accuracies.clone()))
        .unwrap_or_default();
    let mut series = vec![line(
        "ML-Mat-VAMP MMSE (to tol.)",
        timing(&|t| t.vamp_mmse_seconds),
        0,
        false,
    )];
    if let (Some(first), Some(last)) = (accs.first(), accs.last()) {
        let n = accs.len() - 1;
        series.push(line(
            &format!("ML-Mat-VAMP group lasso, to {first:.0e}"),
            at(0, true),
            1,
            false,
        ));
        series.push(line(
            &format!("FISTA, to {first:.0e}"),
            at(0, false),
            2,
            false,
        ));
        if n > 0 {
            series.push(line(
                &format!("ML-Mat-VAMP group lasso, to {last:.0e}"),
                at(n, true),
                1,
                true,
            ));
            series.push(line(
                &format!("FISTA, to {last:.0e}"),
                at(n, false),
                2,
                true,
            ));
        }
    }
    let time = Panel {
        title: "Wall time to a relative distance from the minimiser".into(),
        x_label: "sampling ratio n1/n0".into(),
        y_label: "seconds (fastest repeat)".into(),
        series,
        log_y: true,
        ..Default::default()
    };
    Figure::new(vec![nmse, time])
}
