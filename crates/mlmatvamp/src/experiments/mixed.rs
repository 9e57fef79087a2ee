//! `mlmatvamp mixed`: parameter error of mixed linear regression (paper eq. 6) against the number
//! of samples per dimension `n/p`, for ML-Mat-VAMP (MMSE and joint MAP output denoisers, spec
//! §4.6), the alternating-minimisation baseline (Yi et al. 2014) and the state evolution.
//!
//! Every trial draws `X` (`n x p`, entries `N(0, 1/p)`), `F` (`p x d`, entries `N(0, 1)`), labels
//! `q_i ~ π` and `y_i = x_i·f_{q_i} + N(0, σ²)` with `σ² = 10^{−snr/10}`
//! ([`crate::apps::mixed::MixedConfig`]), then runs on the same data:
//!
//! * **ML-Mat-VAMP** (MMSE and MAP): Algorithm 1 on the network `Z_0 = F` (prior `N(0, I)`),
//!   `Z_1 = X F`, mixed-regression output, from the asymmetric [`RandomStart`] (the symmetric
//!   start is a fixed point, spec §4.6), for `iterations` iterations; `F̂ = Ẑ⁺_0`;
//! * **alternating minimisation** from Yi et al.'s spectral start, until the assignments stop
//!   changing;
//!
//! and records the parameter error `min_P ‖F̂P − F‖_F/‖F‖_F` per iteration with its wall time
//! (the network's SVD counted in ML-Mat-VAMP's time, the spectral start in the baseline's).
//!
//! **The state evolution** (MMSE; spec §6.2) runs once per `n/p` on the same network with the
//! linear layer described by the Marchenko–Pastur law, and its output step by Monte Carlo. Its
//! start mirrors the algorithm's: the backward message on `Z_1` has the random start's precision
//! `γ I` and noise `s² I`, and — because the exactly symmetric law `Ψ⁻ = 0` is a fixed point of
//! the SE too — the overlap with the truth that a random `R⁻_1` has at the finite size `n`,
//! `Ψ⁻_1 = (s/√n) I` (its root-mean-square value: `lstsq(Z_1, R⁻_1)` has i.i.d. entries of
//! standard deviation `s/√n` when `R⁻_1` is independent of `Z_1 = XF`). How fast the SE leaves
//! the symmetric point then also depends on its Monte-Carlo noise, so compare the *final* errors,
//! not the escape iteration. After every SE iteration the truth's columns are relabelled
//! ([`crate::apps::mixed::align_se_labels`], a symmetry of the model with equal weights) so that
//! the SE's Monte-Carlo regression stays well conditioned when it converges to swapped labels.
//!
//! **Message policy.** Near the symmetric point the output's extrinsic precision `Λ − Γ⁺` is
//! indefinite in the direction that separates the components (the mixture posterior is wider than
//! the message there), so the eigenvalue clipping of spec §2.4 binds. With the library's default
//! floor `1e-12` the clipped message has a mean of order `10^{12}`, which the algorithm tolerates
//! but which ruins the state evolution's closed-form linear step numerically (its second moments
//! cancel catastrophically). The experiment therefore clips at `1e-3` (the reference code's floor)
//! for both; the algorithm's results do not depend on the floor between `1e-12` and `1e-3`.
//! Without damping a few trials at large `n/p` leave the symmetric point through a period-2
//! oscillation of the precisions and diverge; the experiment damps the outgoing precisions by
//! 0.2 (spec §2.4.3, reference convention; the SE applies the same damping).
//!
//! **Equal-accuracy timing.** For every trial in which both ML-Mat-VAMP (MMSE) and the baseline
//! reach a parameter error below [`SUCCESS_THRESHOLD`], the target accuracy is
//! `1.05 · max(final error of the two)`, and the time each method takes to first reach it is
//! recorded (so the faster-converging method is not charged for iterations spent below the other
//! one's accuracy).
//!
//! Outputs in `DIR`: `mixed.json` (metadata with the full configuration, seed and version; per
//! `n/p` and method the per-trial final errors, median, quartiles, failures, seconds; per-iteration
//! medians; the SE prediction per iteration; the timings), `mixed.csv` (one row per `n/p` and
//! method) and `mixed.png` / `mixed.svg`.

use super::{
    prepare_out_dir, run_trials, trial_seed, write_csv_rows, Meta, Observer, Progress, Summary,
};
use crate::apps::mixed::{
    align_se_labels, alternating_minimisation, parameter_error, parameter_error_from_moments,
    AltMinConfig, MixedConfig, RandomStart,
};
use crate::denoise::{Estimator, GaussianPrior, MixedRegressionOutput};
use crate::error::{Error, Result};
use crate::figure::{Figure, FigureFile, Panel, Series};
use crate::message::MessagePolicy;
use crate::se::{
    LinearSpec, SeBackward, SeConfig, SeNetwork, SeState, SpectralLinearLayer, StateEvolution,
};
use crate::solver::{Control, Solver, SolverConfig};
use crate::spd::{DMat, Spd};
use faer::Mat;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// A trial "succeeds" (for the equal-accuracy timing) when its final parameter error is below this.
pub const SUCCESS_THRESHOLD: f64 = 0.5;

/// The methods, in the order of the files.
pub const METHODS: [&str; 3] = ["ml-mat-vamp-mmse", "ml-mat-vamp-map", "altmin"];

/// Options of the `mixed` experiment (all overridable from the command line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixedExperimentConfig {
    /// Number of features `p`.
    pub p: usize,
    /// Number of components `d`.
    pub d: usize,
    /// Samples per dimension `n/p` (each gives `n = round(ratio · p)`).
    pub ratios: Vec<f64>,
    /// Trials per ratio.
    pub trials: usize,
    /// SNR in dB (`σ² = 10^{−snr/10}`; clean responses have unit variance).
    pub snr_db: f64,
    /// Component weights (`None` = uniform).
    pub weights: Option<Vec<f64>>,
    /// ML-Mat-VAMP iterations (and SE iterations).
    pub iterations: usize,
    /// The message policy of ML-Mat-VAMP and the SE (default: eigenvalues of every outgoing
    /// precision clipped below at `1e-3`, precision damping 0.2; see the module documentation).
    pub policy: MessagePolicy,
    /// The asymmetric random start of ML-Mat-VAMP (its seed is replaced per trial).
    pub start: RandomStart,
    /// The baseline's options (its seed is replaced per trial).
    pub altmin: AltMinConfig,
    /// Monte-Carlo rows of the SE's output step.
    pub se_n_mc: usize,
    /// Base seed.
    pub seed: u64,
}

impl Default for MixedExperimentConfig {
    fn default() -> Self {
        MixedExperimentConfig {
            p: 100,
            d: 2,
            ratios: (2..=10).map(f64::from).collect(),
            trials: 10,
            snr_db: 20.0,
            weights: None,
            iterations: 100,
            policy: MessagePolicy {
                lam_min: 1e-3,
                damp_precision: 0.2,
                ..MessagePolicy::default()
            },
            start: RandomStart::default(),
            altmin: AltMinConfig::default(),
            se_n_mc: 20_000,
            seed: 0,
        }
    }
}

impl MixedExperimentConfig {
    /// Checks the options.
    pub fn validate(&self) -> Result<()> {
        if self.ratios.is_empty() {
            return Err(Error::invalid("ratios", "give at least one n/p"));
        }
        if let Some(r) = self.ratios.iter().find(|r| !(r.is_finite() && **r > 0.0)) {
            return Err(Error::invalid(
                "ratios",
                format!("every n/p must be positive and finite, got {r}"),
            ));
        }
        if self.trials == 0 {
            return Err(Error::invalid("trials", "must be at least 1"));
        }
        if self.iterations == 0 {
            return Err(Error::invalid("iterations", "must be at least 1"));
        }
        self.start.validate()?;
        self.policy.validate()?;
        if self.policy.damp_mean != 0.0 {
            return Err(Error::invalid(
                "damp_mean",
                "mean damping has no state-evolution counterpart; use damp_precision",
            ));
        }
        for r in &self.ratios {
            self.problem(*r).validate()?;
        }
        Ok(())
    }

    /// `n` for a ratio (at least 1).
    pub fn rows(&self, ratio: f64) -> usize {
        ((ratio * self.p as f64).round() as usize).max(1)
    }

    /// The problem at one ratio.
    pub fn problem(&self, ratio: f64) -> MixedConfig {
        MixedConfig {
            p: self.p,
            n: self.rows(ratio),
            d: self.d,
            snr_db: self.snr_db,
            weights: self.weights.clone(),
        }
    }
}

/// One method's record in one trial.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MethodTrace {
    /// Final parameter error.
    pub error: f64,
    /// Total seconds (setup included).
    pub seconds: f64,
    /// Parameter error after each iteration.
    pub errors: Vec<f64>,
    /// Cumulative seconds at each iteration (setup included).
    pub times: Vec<f64>,
}

impl MethodTrace {
    /// The first time at which the error is at most `target` (`None` if never).
    pub fn time_to(&self, target: f64) -> Option<f64> {
        self.errors
            .iter()
            .zip(&self.times)
            .find(|(e, _)| **e <= target)
            .map(|(_, t)| *t)
    }
}

/// The three methods on one trial.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrialResult {
    /// ML-Mat-VAMP with the MMSE output denoiser.
    pub mmse: MethodTrace,
    /// ML-Mat-VAMP with the joint-MAP output denoiser.
    pub map: MethodTrace,
    /// Alternating minimisation (iteration 0 = its spectral start).
    pub altmin: MethodTrace,
}

/// Runs ML-Mat-VAMP on a trial's network from `start`, recording the parameter error of `Ẑ⁺_0`
/// after every iteration.
pub fn run_vamp(
    trial: &crate::apps::mixed::MixedTrial,
    estimator: Estimator,
    start: &RandomStart,
    solver: &SolverConfig,
) -> Result<MethodTrace> {
    let t0 = Instant::now();
    let net = trial.network(estimator)?;
    let state = start.state(&net)?;
    let mut elapsed = t0.elapsed().as_secs_f64();
    let mut errors = Vec::with_capacity(solver.iterations);
    let mut times = Vec::with_capacity(solver.iterations);
    let mut failure = None;
    Solver::new(solver.clone())?.run_from(&net, state, None, &mut |rec, st| {
        elapsed += rec.seconds;
        match st
            .estimate_plus(0)
            .ok_or_else(|| Error::invalid("solver state", "no estimate of Z_0"))
            .and_then(|b| parameter_error(b.mean.as_ref(), trial.f.as_ref()))
        {
            Ok(e) => {
                errors.push(e);
                times.push(elapsed);
                Control::Continue
            }
            Err(e) => {
                failure = Some(e);
                Control::Stop
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    let error = *errors
        .last()
        .ok_or_else(|| Error::invalid("iterations", "no iteration ran"))?;
    Ok(MethodTrace {
        error,
        seconds: elapsed,
        errors,
        times,
    })
}

/// Runs alternating minimisation on a trial, recording the parameter error per iteration.
pub fn run_altmin(
    trial: &crate::apps::mixed::MixedTrial,
    config: &AltMinConfig,
) -> Result<MethodTrace> {
    let mut errors = Vec::new();
    let mut times = Vec::new();
    let mut failure = None;
    let res = alternating_minimisation(
        trial.x.as_ref(),
        trial.y.as_ref(),
        trial.config.d,
        config,
        |rec, f| match parameter_error(f, trial.f.as_ref()) {
            Ok(e) => {
                errors.push(e);
                times.push(rec.seconds);
            }
            Err(e) => failure = Some(e),
        },
    )?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(MethodTrace {
        error: parameter_error(res.f.as_ref(), trial.f.as_ref())?,
        seconds: res.history.last().map_or(0.0, |r| r.seconds),
        errors,
        times,
    })
}

/// The network the state evolution runs on at one ratio: the `N(0, I)` prior, the linear layer
/// `n x p` from the Marchenko–Pastur law of an i.i.d. `N(0, 1/p)` design, the mixed regression
/// output (MMSE) as a template (the SE draws its own observations).
pub fn se_network(problem: &MixedConfig) -> Result<SeNetwork> {
    let (n, p, d) = (problem.n, problem.p, problem.d);
    let spec = LinearSpec::marchenko_pastur(n, p, 1.0 / p as f64, d, None, None)?;
    let output = MixedRegressionOutput::new(
        Mat::zeros(n, 1),
        d,
        problem.noise_variance(),
        problem.weights.clone(),
        Estimator::Mmse,
    )?;
    SeNetwork::new(
        Arc::new(GaussianPrior::isotropic(d, 1.0)?),
        p,
        vec![Arc::new(SpectralLinearLayer::new(spec))],
        Arc::new(output),
    )
}

/// The SE start that mirrors [`RandomStart`] (see the module documentation): `Γ̄⁻_l = γI`,
/// `T⁻_l = s²I`, `Ψ⁻_0 = 0` and `Ψ⁻_1 = (s/√n) I`.
pub fn se_start(problem: &MixedConfig, start: &RandomStart) -> Result<SeState> {
    let d = problem.d;
    let s2 = start.scale * start.scale;
    let law = |psi: f64| -> Result<SeBackward> {
        Ok(SeBackward {
            psi: DMat::identity(d, d) * psi,
            t: DMat::identity(d, d) * s2,
            gamma: Spd::scaled_identity(d, start.precision)?,
        })
    };
    let minus = vec![law(0.0)?, law(start.scale / (problem.n as f64).sqrt())?];
    SeState::from_minus(minus)
}

/// The SE's predicted parameter error of `Ẑ⁺_0` after each of `iterations` iterations.
pub fn se_errors(
    problem: &MixedConfig,
    start: &RandomStart,
    iterations: usize,
    n_mc: usize,
    seed: u64,
    policy: &MessagePolicy,
) -> Result<Vec<f64>> {
    let net = se_network(problem)?;
    let se = StateEvolution::new(SeConfig {
        iterations,
        n_mc,
        seed,
        policy: policy.clone(),
        ..Default::default()
    })?;
    let mut state = se_start(problem, start)?;
    let weights = problem
        .weights
        .clone()
        .unwrap_or_else(|| vec![1.0 / problem.d as f64; problem.d]);
    let mut out = Vec::with_capacity(iterations);
    for k in 0..iterations {
        se.step(&net, &mut state, k)?;
        align_se_labels(&mut state, 1, &weights)?;
        let est = state
            .estimate(0)
            .ok_or_else(|| Error::invalid("state evolution", "no estimate of Z_0"))?;
        out.push(parameter_error_from_moments(&est.joint)?);
    }
    Ok(out)
}

/// Summary of one method at one ratio.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MethodSummary {
    /// The method's name (see [`METHODS`]).
    pub method: String,
    /// Final parameter errors (per trial), median, quartiles, failures.
    pub error: Summary,
    /// Total seconds per trial.
    pub seconds: Summary,
    /// Median over trials of the parameter error after each iteration (trials that stopped
    /// earlier hold their last value).
    pub iteration_medians: Vec<f64>,
}

/// Equal-accuracy timing at one ratio (see the module documentation).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EqualAccuracy {
    /// Trials in which both ML-Mat-VAMP (MMSE) and the baseline succeeded.
    pub trials: usize,
    /// Per such trial, the target accuracy `1.05 · max(final errors)`.
    pub targets: Vec<f64>,
    /// Seconds ML-Mat-VAMP (MMSE) took to reach each target.
    pub vamp_seconds: Summary,
    /// Seconds the baseline took to reach each target.
    pub altmin_seconds: Summary,
}

/// Everything measured at one ratio.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RatioResult {
    /// `n/p`.
    pub ratio: f64,
    /// `n`.
    pub n: usize,
    /// One summary per method (in the order of [`METHODS`]).
    pub methods: Vec<MethodSummary>,
    /// The SE's predicted parameter error after each iteration (`None` if the SE failed).
    pub se: Option<Vec<f64>>,
    /// The SE's error message, if it failed.
    pub se_error: Option<String>,
    /// Equal-accuracy timing of ML-Mat-VAMP (MMSE) against the baseline.
    pub equal_accuracy: EqualAccuracy,
}

/// The content of `mixed.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MixedReport {
    /// Command, version, seed, configuration, wall time, threads.
    pub meta: Meta,
    /// One entry per ratio.
    pub ratios: Vec<RatioResult>,
    /// The files written (the figures' files by the front door that renders them).
    pub files: Vec<PathBuf>,
    /// The figures to render.
    #[serde(skip)]
    pub figures: Vec<FigureFile>,
}

fn iteration_medians(traces: &[&MethodTrace]) -> Vec<f64> {
    let len = traces.iter().map(|t| t.errors.len()).max().unwrap_or(0);
    (0..len)
        .map(|k| {
            let v: Vec<f64> = traces
                .iter()
                .filter_map(|t| t.errors.get(k).or(t.errors.last()).copied())
                .collect();
            crate::figure::quartiles(&v).map_or(f64::NAN, |q| q.1)
        })
        .collect()
}

/// Runs the experiment and writes `mixed.json`, `mixed.csv`, `mixed.png` and `mixed.svg` to
/// `out_dir`.
pub fn run(
    config: &MixedExperimentConfig,
    out_dir: &Path,
    observer: &dyn Observer,
) -> Result<MixedReport> {
    let start_time = Instant::now();
    config.validate()?;
    prepare_out_dir(out_dir)?;
    let solver = SolverConfig {
        iterations: config.iterations,
        policy: config.policy.clone(),
        ..Default::default()
    };
    solver.validate()?;
    let nr = config.ratios.len();
    let total = nr * config.trials;
    let pb = Progress::new(observer, "mixed", (total + nr) as u64);
    let outcomes = run_trials(total, &pb, |i| {
        let (r, t) = (i / config.trials, i % config.trials);
        let seed = trial_seed(config.seed, r as u64, t as u64);
        let trial = config.problem(config.ratios[r]).sample(seed)?;
        let start = RandomStart {
            seed: trial_seed(seed, 1, 0),
            ..config.start.clone()
        };
        let altmin = AltMinConfig {
            seed: trial_seed(seed, 2, 0),
            ..config.altmin.clone()
        };
        Ok(TrialResult {
            mmse: run_vamp(&trial, Estimator::Mmse, &start, &solver)?,
            map: run_vamp(&trial, Estimator::Map, &start, &solver)?,
            altmin: run_altmin(&trial, &altmin)?,
        })
    });
    // The SE, one run per ratio (in parallel).
    let se: Vec<Result<Vec<f64>>> = {
        use rayon::prelude::*;
        config
            .ratios
            .par_iter()
            .enumerate()
            .map(|(r, &ratio)| {
                let out = se_errors(
                    &config.problem(ratio),
                    &config.start,
                    config.iterations,
                    config.se_n_mc,
                    trial_seed(config.seed, r as u64, u64::MAX),
                    &solver.policy,
                );
                pb.inc(1);
                out
            })
            .collect()
    };
    pb.finish()?;

    let mut ratios = Vec::with_capacity(nr);
    for (r, se_r) in se.into_iter().enumerate() {
        let ratio = config.ratios[r];
        let outs = &outcomes[r * config.trials..(r + 1) * config.trials];
        let pick = |m: usize| -> Vec<Option<&MethodTrace>> {
            outs.iter()
                .map(|o| {
                    o.value.as_ref().map(|v| match m {
                        0 => &v.mmse,
                        1 => &v.map,
                        _ => &v.altmin,
                    })
                })
                .collect()
        };
        let errors: Vec<String> = outs
            .iter()
            .filter_map(|o| o.error.as_ref().map(|e| format!("trial {}: {e}", o.trial)))
            .collect();
        let mut methods = Vec::with_capacity(METHODS.len());
        for (m, name) in METHODS.iter().enumerate() {
            let traces: Vec<&MethodTrace> = pick(m).into_iter().flatten().collect();
            let mut errs = Vec::new();
            let mut fails = errors.clone();
            for (o, t) in outs.iter().zip(pick(m)) {
                if let Some(t) = t {
                    if t.error.is_finite() {
                        errs.push(t.error);
                    } else {
                        fails.push(format!("trial {}: non-finite error {}", o.trial, t.error));
                    }
                }
            }
            methods.push(MethodSummary {
                method: name.to_string(),
                error: Summary::from_values(errs, fails),
                seconds: Summary::from_values(traces.iter().map(|t| t.seconds).collect(), vec![]),
                iteration_medians: iteration_medians(&traces),
            });
        }
        let mut targets = Vec::new();
        let mut tv = Vec::new();
        let mut ta = Vec::new();
        for o in outs.iter().filter_map(|o| o.value.as_ref()) {
            if o.mmse.error < SUCCESS_THRESHOLD && o.altmin.error < SUCCESS_THRESHOLD {
                let target = 1.05 * o.mmse.error.max(o.altmin.error);
                if let (Some(a), Some(b)) = (o.mmse.time_to(target), o.altmin.time_to(target)) {
                    targets.push(target);
                    tv.push(a);
                    ta.push(b);
                }
            }
        }
        let (se, se_error) = match se_r {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e.to_string())),
        };
        ratios.push(RatioResult {
            ratio,
            n: config.rows(ratio),
            methods,
            se,
            se_error,
            equal_accuracy: EqualAccuracy {
                trials: targets.len(),
                targets,
                vamp_seconds: Summary::from_values(tv, vec![]),
                altmin_seconds: Summary::from_values(ta, vec![]),
            },
        });
    }

    let json = out_dir.join("mixed.json");
    let csv = out_dir.join("mixed.csv");
    let stem = out_dir.join("mixed");
    write_csv(&csv, &ratios, config.trials)?;
    let figure = FigureFile::new(stem, figure(&ratios, config));
    let [png, svg] = figure.files();
    let files = vec![json.clone(), csv, png, svg];
    let report = MixedReport {
        meta: Meta::new(
            "mixed",
            config.seed,
            config,
            start_time.elapsed().as_secs_f64(),
        )?,
        ratios,
        files,
        figures: vec![figure],
    };
    crate::io::write_json(&json, &report)?;
    Ok(report)
}

fn write_csv(path: &Path, ratios: &[RatioResult], trials: usize) -> Result<()> {
    let header = [
        "ratio",
        "n",
        "method",
        "median_error",
        "q25_error",
        "q75_error",
        "mean_error",
        "trials",
        "failed",
        "median_seconds",
    ];
    let mut rows = Vec::new();
    let f = |x: f64| format!("{x}");
    for r in ratios {
        for m in &r.methods {
            rows.push(vec![
                f(r.ratio),
                r.n.to_string(),
                m.method.clone(),
                f(m.error.median),
                f(m.error.q25),
                f(m.error.q75),
                f(m.error.mean),
                trials.to_string(),
                m.error.failed.to_string(),
                f(m.seconds.median),
            ]);
        }
        let se_final =
            r.se.as_ref()
                .and_then(|v| v.last().copied())
                .unwrap_or(f64::NAN);
        rows.push(vec![
            f(r.ratio),
            r.n.to_string(),
            "se".into(),
            f(se_final),
            f(se_final),
            f(se_final),
            f(se_final),
            "1".into(),
            (r.se.is_none() as usize).to_string(),
            String::new(),
        ]);
    }
    write_csv_rows(path, &header, &rows)
}

fn figure(ratios: &[RatioResult], config: &MixedExperimentConfig) -> Figure {
    let x: Vec<f64> = ratios.iter().map(|r| r.ratio).collect();
    let labels = [
        "ML-Mat-VAMP (MMSE)",
        "ML-Mat-VAMP (MAP)",
        "alternating minimisation",
    ];
    let mut series = Vec::new();
    for (m, label) in labels.iter().enumerate() {
        let med: Vec<f64> = ratios.iter().map(|r| r.methods[m].error.median).collect();
        let lo: Vec<f64> = ratios.iter().map(|r| r.methods[m].error.q25).collect();
        let hi: Vec<f64> = ratios.iter().map(|r| r.methods[m].error.q75).collect();
        series.push(Series {
            label: label.to_string(),
            x: x.clone(),
            y: med,
            band: Some((lo, hi)),
            color: Some(m),
            ..Default::default()
        });
    }
    // Timing: to the common accuracy (solid) and for the full runs (dashed).
    let mut time_series = vec![
        Series {
            label: "ML-Mat-VAMP (MMSE), to equal accuracy".into(),
            x: x.clone(),
            y: ratios
                .iter()
                .map(|r| r.equal_accuracy.vamp_seconds.median)
                .collect(),
            color: Some(0),
            ..Default::default()
        },
        Series {
            label: "alt. min., to equal accuracy".into(),
            x: x.clone(),
            y: ratios
                .iter()
                .map(|r| r.equal_accuracy.altmin_seconds.median)
                .collect(),
            color: Some(2),
            ..Default::default()
        },
    ];
    for (m, label) in [
        (
            0,
            format!("ML-Mat-VAMP (MMSE), {} iterations", config.iterations),
        ),
        (
            1,
            format!("ML-Mat-VAMP (MAP), {} iterations", config.iterations),
        ),
        (2, "alt. min., until no label changes".to_string()),
    ] {
        time_series.push(Series {
            label,
            x: x.clone(),
            y: ratios.iter().map(|r| r.methods[m].seconds.median).collect(),
            dashed: true,
            color: Some(m),
            ..Default::default()
        });
    }
    series.push(Series {
        label: "state evolution (MMSE)".into(),
        x: x.clone(),
        y: ratios
            .iter()
            .map(|r| {
                r.se.as_ref()
                    .and_then(|v| v.last().copied())
                    .unwrap_or(f64::NAN)
            })
            .collect(),
        dashed: true,
        color: Some(7),
        ..Default::default()
    });
    let title = format!(
        "Mixed linear regression, p = {}, d = {}, SNR {} dB, {} trials",
        config.p, config.d, config.snr_db, config.trials
    );
    Figure::new(vec![
        Panel {
            title,
            x_label: "samples per dimension n/p".into(),
            y_label: "parameter error min_P ||F̂P − F||/||F||".into(),
            series,
            log_y: true,
            ..Default::default()
        },
        Panel {
            title: "seconds per trial (median)".into(),
            x_label: "samples per dimension n/p".into(),
            y_label: "seconds".into(),
            series: time_series,
            log_y: true,
            ..Default::default()
        },
    ])
}
