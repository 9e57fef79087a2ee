//! Figure 2 of the paper (Section 5): the normalized test MSE of learning the input layer of a
//! two-layer network versus the number of training samples, for ML-Mat-VAMP and ADAM, at two
//! SNRs (spec §7) — and the single-trial run behind it.
//!
//! * [`Fig2Config`] / [`run_fig2`]: the sweep over `(snr, ntr)` with `trials` independent trials
//!   per point, run in parallel, reported to an observer. Writes `fig2.json`, `fig2.csv`, `fig2.png`
//!   and `fig2.svg` (see [`run_fig2`]).
//! * [`TwoLayerRunConfig`] / [`run_two_layer`]: one trial with the per-iteration history of
//!   ML-Mat-VAMP and the per-epoch history of ADAM (`two_layer.json`).
//!
//! **One trial** (spec §7.1–7.3), from its seed `s`: the data are drawn by
//! [`TwoLayerConfig::sample`] from `s`; the initial estimate `F1init` and ML-Mat-VAMP's first
//! message by [`Init::draw`] from the stream `trial_seed(s, 1, 0)`; ADAM's per-epoch shuffles
//! from `trial_seed(s, 2, 0)`. Both methods see the same data and start from the same `F1init`.
//! ML-Mat-VAMP runs [`VampConfig::iterations`] iterations ([`crate::apps::two_layer_vamp`]);
//! ADAM runs [`AdamConfig::epochs`] epochs ([`crate::apps::adam`]). The plotted value is the
//! normalized test MSE of the final `F̂_1` on the trial's held-out samples; the analytic test
//! error of eq. (17) is recorded alongside.
//!
//! **Seeds.** Trial `t` of the point `(snr, ntr)` has the seed
//! `trial_seed(seed, trial_seed(snr.to_bits(), ntr, 0), t)` ([`point_trial_seed`]); it is written
//! to `fig2.json`, and `mlmatvamp two-layer --ntr N --snr S --seed <that seed>` reruns that trial
//! with its full history.
//!
//! **Failures.** A trial whose method returns an error (e.g. a message that turned non-finite)
//! or a non-finite final value is counted in `failed` with its error message, and left out of
//! the median and quartiles: it is never replaced by a number.

use super::{
    prepare_out_dir, run_trials, trial_seed, write_csv_rows, Meta, Observer, Progress, Summary,
};
use crate::apps::adam::AdamConfig;
use crate::apps::two_layer::{Init, InitialEstimate, TwoLayerConfig, TwoLayerTrial};
use crate::apps::two_layer_vamp::{VampConfig, VampIteration};
use crate::error::{Error, Result};
use crate::figure::{Figure, FigureFile, Panel, Series};
use crate::rng_from_seed;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A learning method of Figure 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    /// ML-Mat-VAMP through the general engine ([`crate::apps::two_layer_vamp`]).
    #[serde(rename = "ml-mat-vamp")]
    MlMatVamp,
    /// The ADAM-MAP baseline ([`crate::apps::adam`]).
    #[serde(rename = "adam")]
    Adam,
    /// The state-evolution prediction of ML-Mat-VAMP's normalized test error, computed from the
    /// recursion with the trial's `F_2` and `yvar` ([`crate::apps::two_layer_vamp::state_evolution`]).
    #[serde(rename = "se")]
    Se,
}

impl Method {
    /// Both methods, in plotting order.
    pub const ALL: [Method; 3] = [Method::MlMatVamp, Method::Adam, Method::Se];

    /// The name used in files and on the command line (`"ml-mat-vamp"`, `"adam"`).
    pub fn name(&self) -> &'static str {
        match self {
            Method::MlMatVamp => "ml-mat-vamp",
            Method::Adam => "adam",
            Method::Se => "se",
        }
    }

    /// Parses [`Method::name`].
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "ml-mat-vamp" => Ok(Method::MlMatVamp),
            "adam" => Ok(Method::Adam),
            other => Err(Error::invalid(
                "method",
                format!("unknown method `{other}`; expected ml-mat-vamp or adam"),
            )),
        }
    }
}

/// The Figure-2 sweep. Defaults are the paper's (Section 5, spec §7.1): sigmoid, `d = 4`,
/// `nin = 100`, one output, SNR 10 and 15 dB,
/// `ntr ∈ {200, 400, 600, 800, 1000, 1500, 2000, 2500, 3000, 4000}`, 1000 test samples,
/// 20 ML-Mat-VAMP iterations (MAP output estimator), ADAM with the reference settings
/// (100 epochs, lr 0.01, batch 32), 10 trials per point, the reference initialisation with an
/// honest initial precision, message precisions clipped into `[0.3, 1e3]` ([`VampConfig::default_policy`]), seed 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fig2Config {
    /// The SNRs in dB (one panel each).
    pub snr_db: Vec<f64>,
    /// The numbers of training samples.
    pub ntr: Vec<usize>,
    /// Trials per `(snr, ntr)` point.
    pub trials: usize,
    /// The base seed.
    pub seed: u64,
    /// The methods to run.
    pub methods: Vec<Method>,
    /// The problem sizes and activation; its `ntr` and `snr_db` are replaced by each point's.
    pub problem: TwoLayerConfig,
    /// The initialisation shared by both methods (spec §7.2).
    pub init: Init,
    /// ML-Mat-VAMP options (iterations, output estimator, message policy).
    pub vamp: VampConfig,
    /// ADAM options.
    pub adam: AdamConfig,
    /// State-evolution options of the `"se"` method (Monte-Carlo rows of the output step, seed
    /// mixing, `psi_mode`); its iterations and message policy are ML-Mat-VAMP's.
    pub se: crate::se::SeConfig,
}

impl Default for Fig2Config {
    fn default() -> Self {
        Fig2Config {
            snr_db: vec![10.0, 15.0],
            ntr: vec![200, 400, 600, 800, 1000, 1500, 2000, 2500, 3000, 4000],
            trials: 10,
            seed: 0,
            methods: Method::ALL.to_vec(),
            problem: TwoLayerConfig::default(),
            init: Init::reference(),
            vamp: VampConfig {
                analytic_every_iteration: false,
                ..VampConfig::default()
            },
            adam: AdamConfig::default(),
            se: crate::se::SeConfig {
                n_mc: 4000,
                ..Default::default()
            },
        }
    }
}

impl Fig2Config {
    /// Checks the options (every point's problem, the methods and their options).
    pub fn validate(&self) -> Result<()> {
        if self.snr_db.is_empty() {
            return Err(Error::invalid("snr", "give at least one SNR"));
        }
        if self.ntr.is_empty() {
            return Err(Error::invalid(
                "ntr",
                "give at least one number of training samples",
            ));
        }
        if self.trials == 0 {
            return Err(Error::invalid("trials", "must be at least 1"));
        }
        if self.methods.is_empty() {
            return Err(Error::invalid("methods", "give at least one method"));
        }
        for (i, m) in self.methods.iter().enumerate() {
            if self.methods[..i].contains(m) {
                return Err(Error::invalid(
                    "methods",
                    format!("`{}` is listed twice", m.name()),
                ));
            }
        }
        for (i, s) in self.snr_db.iter().enumerate() {
            if self.snr_db[..i].iter().any(|t| t.to_bits() == s.to_bits()) {
                return Err(Error::invalid("snr", format!("{s} dB is listed twice")));
            }
        }
        for (i, n) in self.ntr.iter().enumerate() {
            if self.ntr[..i].contains(n) {
                return Err(Error::invalid("ntr", format!("{n} is listed twice")));
            }
        }
        for &snr in &self.snr_db {
            for &ntr in &self.ntr {
                self.point_problem(snr, ntr).validate()?;
            }
        }
        self.init.validate()?;
        self.vamp.validate()?;
        self.adam.validate()
    }

    /// The problem of the point `(snr, ntr)`.
    pub fn point_problem(&self, snr_db: f64, ntr: usize) -> TwoLayerConfig {
        TwoLayerConfig {
            ntr,
            snr_db,
            ..self.problem.clone()
        }
    }
}

/// The seed of trial `t` of the point `(snr_db, ntr)` under the base seed (module docs).
pub fn point_trial_seed(seed: u64, snr_db: f64, ntr: usize, t: usize) -> u64 {
    trial_seed(seed, trial_seed(snr_db.to_bits(), ntr as u64, 0), t as u64)
}

/// One trial's data and initial estimate, drawn from its seed (module docs).
pub fn draw_trial(
    problem: &TwoLayerConfig,
    init: &Init,
    seed: u64,
) -> Result<(TwoLayerTrial, InitialEstimate)> {
    let trial = problem.sample(seed)?;
    let start = init.draw(&trial, &mut rng_from_seed(trial_seed(seed, 1, 0)))?;
    Ok((trial, start))
}

/// The seed of ADAM's shuffles in the trial with seed `seed` (module docs).
pub fn adam_seed(seed: u64) -> u64 {
    trial_seed(seed, 2, 0)
}

/// What one method reached in one trial.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrialResult {
    /// Trial index `t` within its point.
    pub trial: usize,
    /// The trial's seed (`two-layer --seed` reruns it).
    pub seed: u64,
    /// Final normalized test MSE on the held-out samples (`None` if the trial failed).
    pub test_mse: Option<f64>,
    /// Final analytic test error of eq. (17) (`None` if the trial failed).
    pub analytic_test_error: Option<f64>,
    /// Normalized test MSE of the initial estimate `F1init`.
    pub initial_test_mse: Option<f64>,
    /// The error that stopped the trial, if any.
    pub error: Option<String>,
    /// Wall time of this method on this trial (data generation excluded), seconds.
    pub seconds: f64,
}

/// The results of one method at one `(snr, ntr)` point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PointResult {
    /// SNR in dB.
    pub snr_db: f64,
    /// Number of training samples.
    pub ntr: usize,
    /// The method.
    pub method: Method,
    /// Final normalized test MSE over the trials: `values` (successful trials, in trial order),
    /// `median`, `q25`, `q75`, `mean`, `failed` (trials that returned an error or a non-finite
    /// value) and their `errors`.
    #[serde(flatten)]
    pub test_mse: Summary,
    /// The same summary of the final analytic test error (eq. 17).
    pub analytic_test_error: Summary,
    /// Sum over trials of the method's wall time, seconds.
    pub seconds: f64,
    /// Per-trial results.
    pub trials: Vec<TrialResult>,
}

/// The content of `fig2.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fig2Result {
    /// Command, crate version, base seed, the full [`Fig2Config`], total wall time, threads.
    pub meta: Meta,
    /// One entry per `(snr, ntr, method)`, ordered by SNR, then `ntr`, then method.
    pub points: Vec<PointResult>,
}

impl Fig2Result {
    /// The entry of `(snr_db, ntr, method)`, if present.
    pub fn point(&self, snr_db: f64, ntr: usize, method: Method) -> Option<&PointResult> {
        self.points
            .iter()
            .find(|p| p.snr_db.to_bits() == snr_db.to_bits() && p.ntr == ntr && p.method == method)
    }
}

/// The output files of [`run_fig2`].
#[derive(Clone, Debug)]
pub struct Fig2Files {
    /// `DIR/fig2.json`.
    pub json: PathBuf,
    /// `DIR/fig2.csv`.
    pub csv: PathBuf,
    /// `DIR/fig2.png`.
    pub png: PathBuf,
    /// `DIR/fig2.svg`.
    pub svg: PathBuf,
    /// The figure behind `fig2.png` and `fig2.svg` (rendered by the front door).
    pub figure: FigureFile,
}

/// Runs one method on a drawn trial; returns the final test MSE, analytic error and the initial
/// test MSE.
fn run_method(
    method: Method,
    config: &Fig2Config,
    trial: &TwoLayerTrial,
    start: &InitialEstimate,
    seed: u64,
) -> Result<(f64, f64, f64)> {
    match method {
        Method::MlMatVamp => {
            let run = config.vamp.run(trial, start)?;
            Ok((
                run.final_test_mse(),
                run.final_analytic_test_error(),
                run.initial_test_mse,
            ))
        }
        Method::Adam => {
            // Only the final estimate matters here: fit without the per-epoch test evaluation.
            let reg = config.adam.regularization.weight(trial)?;
            let fit = config.adam.fit(
                trial.x_train.as_ref(),
                trial.y_train.as_ref(),
                trial.f2.as_ref(),
                trial.activation(),
                reg,
                start.f1.as_ref(),
                &mut rng_from_seed(adam_seed(seed)),
                |_, _| Ok(()),
            )?;
            Ok((
                trial.test_mse(fit.f1.as_ref())?,
                trial.analytic_test_error(fit.f1.as_ref())?,
                trial.test_mse(start.f1.as_ref())?,
            ))
        }
        Method::Se => {
            let se = crate::se::SeConfig {
                seed: seed ^ 0x5E5E_5E5E,
                ..config.se.clone()
            };
            let pred = crate::apps::two_layer_vamp::state_evolution(
                &config.vamp,
                trial,
                &config.init,
                &start.message.precision,
                &se,
            )?;
            let last = pred.last().map_or(f64::NAN, |p| p.test_error);
            Ok((last, last, trial.test_mse(start.f1.as_ref())?))
        }
    }
}

/// Runs the Figure-2 sweep and writes, in `out_dir` (created if needed):
///
/// * `fig2.json` — [`Fig2Result`]: the metadata (full configuration, seed, crate version, total
///   seconds, threads) and, for every `(snr, ntr, method)`, the per-trial final normalized test
///   MSE (with each trial's seed, analytic test error, error message and seconds), the median,
///   quartiles, mean, number of failed trials and the summed seconds;
/// * `fig2.csv` — one row per `(snr, ntr, method)`: `snr_db, ntr, method, trials, failed,
///   median, q25, q75, mean, analytic_median, analytic_q25, analytic_q75, seconds` (`NaN` where
///   no trial succeeded);
/// * `fig2.png`, `fig2.svg` — one panel per SNR, normalized test MSE against `ntr`, the median
///   of each method with its interquartile band.
///
/// All trials (of all points and methods) run in parallel on the rayon pool; `observer` is told
/// of every finished trial (and may stop the sweep). Errors are returned only for invalid options and I/O; a
/// failing trial is recorded (module docs).
pub fn run_fig2(
    config: &Fig2Config,
    out_dir: &Path,
    observer: &dyn Observer,
) -> Result<(Fig2Result, Fig2Files)> {
    config.validate()?;
    prepare_out_dir(out_dir)?;
    let wall = Instant::now();
    // Jobs: (snr index, ntr index, trial); the largest problems first so that the parallel
    // tail is short.
    let mut jobs: Vec<(usize, usize, usize)> = Vec::new();
    for s in 0..config.snr_db.len() {
        for n in 0..config.ntr.len() {
            for t in 0..config.trials {
                jobs.push((s, n, t));
            }
        }
    }
    jobs.sort_by_key(|&(s, n, t)| (std::cmp::Reverse(config.ntr[n]), s, t));
    let pb = Progress::new(observer, "fig2 trials", jobs.len() as u64);
    let outcomes = {
        run_trials(jobs.len(), &pb, |j| {
            let (s, n, t) = jobs[j];
            let (snr, ntr) = (config.snr_db[s], config.ntr[n]);
            let seed = point_trial_seed(config.seed, snr, ntr, t);
            let problem = config.point_problem(snr, ntr);
            let drawn = draw_trial(&problem, &config.init, seed);
            let per_method: Vec<TrialResult> = config
                .methods
                .iter()
                .map(|&m| {
                    let start = Instant::now();
                    let r = drawn
                        .as_ref()
                        .map_err(|e| Error::invalid("trial data", e.to_string()))
                        .and_then(|(trial, init)| run_method(m, config, trial, init, seed));
                    let seconds = start.elapsed().as_secs_f64();
                    match r {
                        Ok((mse, analytic, initial)) => TrialResult {
                            trial: t,
                            seed,
                            test_mse: Some(mse),
                            analytic_test_error: Some(analytic),
                            initial_test_mse: Some(initial),
                            error: None,
                            seconds,
                        },
                        Err(e) => TrialResult {
                            trial: t,
                            seed,
                            test_mse: None,
                            analytic_test_error: None,
                            initial_test_mse: None,
                            error: Some(e.to_string()),
                            seconds,
                        },
                    }
                })
                .collect();
            Ok(per_method)
        })
    };
    pb.finish()?;
    // Gather per (snr, ntr, method).
    let mut points = Vec::new();
    for (s, &snr) in config.snr_db.iter().enumerate() {
        for (n, &ntr) in config.ntr.iter().enumerate() {
            for (mi, &method) in config.methods.iter().enumerate() {
                let mut trials: Vec<TrialResult> = jobs
                    .iter()
                    .zip(&outcomes)
                    .filter(|((js, jn, _), _)| *js == s && *jn == n)
                    .map(|(_, o)| match &o.value {
                        Some(v) => v[mi].clone(),
                        // run_trials never sees an error here (errors are per method), but
                        // account for it rather than dropping the trial.
                        None => TrialResult {
                            trial: jobs[o.trial].2,
                            seed: point_trial_seed(config.seed, snr, ntr, jobs[o.trial].2),
                            test_mse: None,
                            analytic_test_error: None,
                            initial_test_mse: None,
                            error: o.error.clone(),
                            seconds: o.seconds,
                        },
                    })
                    .collect();
                trials.sort_by_key(|t| t.trial);
                points.push(summarise(snr, ntr, method, trials));
            }
        }
    }
    let meta = Meta::new("fig2", config.seed, config, wall.elapsed().as_secs_f64())?;
    let result = Fig2Result { meta, points };
    let files = write_fig2(config, &result, out_dir)?;
    Ok((result, files))
}

/// The summaries of one point.
fn summarise(snr_db: f64, ntr: usize, method: Method, trials: Vec<TrialResult>) -> PointResult {
    let collect = |get: &dyn Fn(&TrialResult) -> Option<f64>| {
        let mut values = Vec::new();
        let mut errors = Vec::new();
        for t in &trials {
            match (get(t), &t.error) {
                (Some(v), _) if v.is_finite() => values.push(v),
                (Some(v), _) => errors.push(format!("trial {}: non-finite value {v}", t.trial)),
                (None, Some(e)) => errors.push(format!("trial {}: {e}", t.trial)),
                (None, None) => errors.push(format!("trial {}: no value", t.trial)),
            }
        }
        Summary::from_values(values, errors)
    };
    let test_mse = collect(&|t| t.test_mse);
    let analytic_test_error = collect(&|t| t.analytic_test_error);
    let seconds = trials.iter().map(|t| t.seconds).sum();
    PointResult {
        snr_db,
        ntr,
        method,
        test_mse,
        analytic_test_error,
        seconds,
        trials,
    }
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "NaN".into()
    }
}

/// Writes `fig2.json`, `fig2.csv`, `fig2.png` and `fig2.svg`.
fn write_fig2(config: &Fig2Config, result: &Fig2Result, dir: &Path) -> Result<Fig2Files> {
    let json = dir.join("fig2.json");
    crate::io::write_json(&json, result)?;
    let csv = dir.join("fig2.csv");
    let header = [
        "snr_db",
        "ntr",
        "method",
        "trials",
        "failed",
        "median",
        "q25",
        "q75",
        "mean",
        "analytic_median",
        "analytic_q25",
        "analytic_q75",
        "seconds",
    ];
    let rows: Vec<Vec<String>> = result
        .points
        .iter()
        .map(|p| {
            vec![
                num(p.snr_db),
                p.ntr.to_string(),
                p.method.name().to_string(),
                p.trials.len().to_string(),
                p.test_mse.failed.to_string(),
                num(p.test_mse.median),
                num(p.test_mse.q25),
                num(p.test_mse.q75),
                num(p.test_mse.mean),
                num(p.analytic_test_error.median),
                num(p.analytic_test_error.q25),
                num(p.analytic_test_error.q75),
                format!("{:.3}", p.seconds),
            ]
        })
        .collect();
    write_csv_rows(&csv, &header, &rows)?;
    let figure = FigureFile::new(dir.join("fig2"), figure(config, result));
    let [png, svg] = figure.files();
    Ok(Fig2Files {
        json,
        csv,
        png,
        svg,
        figure,
    })
}

/// The figure: one panel per SNR, the median normalized test MSE of each method against `ntr`
/// with its interquartile band (paper Figure 2).
pub fn figure(config: &Fig2Config, result: &Fig2Result) -> Figure {
    let act = config.problem.activation;
    let panels = config
        .snr_db
        .iter()
        .map(|&snr| {
            let series = config
                .methods
                .iter()
                .map(|&m| {
                    let pts: Vec<&PointResult> = config
                        .ntr
                        .iter()
                        .filter_map(|&n| result.point(snr, n, m))
                        .collect();
                    let label = match m {
                        Method::MlMatVamp => "ML-Mat-VAMP",
                        Method::Adam => "ADAM-MAP",
                        Method::Se => "SE prediction",
                    };
                    let mut order: Vec<usize> = (0..pts.len()).collect();
                    order.sort_by_key(|&k| pts[k].ntr);
                    Series {
                        label: format!("{label} (median, IQR)"),
                        x: order.iter().map(|&k| pts[k].ntr as f64).collect(),
                        y: order.iter().map(|&k| pts[k].test_mse.median).collect(),
                        band: Some((
                            order.iter().map(|&k| pts[k].test_mse.q25).collect(),
                            order.iter().map(|&k| pts[k].test_mse.q75).collect(),
                        )),
                        dashed: m == Method::Se,
                        color: Some(match m {
                            Method::MlMatVamp => 1,
                            Method::Adam => 0,
                            Method::Se => 2,
                        }),
                    }
                })
                .collect();
            let mut series: Vec<Series> = series;
            // The optimum: the noise floor, normalized test MSE 1 (paper Section 5).
            let (lo, hi) = config
                .ntr
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(a, b), &n| {
                    (a.min(n as f64), b.max(n as f64))
                });
            series.push(Series {
                label: "optimum (noise level)".into(),
                x: vec![lo, hi],
                y: vec![1.0, 1.0],
                band: None,
                dashed: true,
                color: Some(7),
            });
            Panel {
                title: format!(
                    "SNR = {snr} dB ({}, d = {}, nin = {})",
                    act.name(),
                    config.problem.d,
                    config.problem.nin
                ),
                x_label: "number of training samples".into(),
                y_label: "normalized test MSE".into(),
                series,
                log_x: false,
                log_y: false,
                y_range: None,
            }
        })
        .collect();
    Figure::new(panels)
}

// ---------------------------------------------------------------------------------------------
// One trial with its history (`mlmatvamp two-layer`)
// ---------------------------------------------------------------------------------------------

/// One two-layer learning trial with full histories. Defaults: the Figure-2 problem
/// (sigmoid, `d = 4`, `nin = 100`, 1000 test samples) at `ntr = 1000`, SNR 10 dB, seed 0, both
/// methods, the reference initialisation with an honest precision, and the per-iteration
/// analytic test error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwoLayerRunConfig {
    /// The problem (sizes, SNR, activation).
    pub problem: TwoLayerConfig,
    /// The trial's seed (module docs).
    pub seed: u64,
    /// The methods to run.
    pub methods: Vec<Method>,
    /// The initialisation shared by both methods.
    pub init: Init,
    /// ML-Mat-VAMP options.
    pub vamp: VampConfig,
    /// ADAM options.
    pub adam: AdamConfig,
    /// State-evolution options of the `"se"` method (Monte-Carlo rows of the output step, seed
    /// mixing, `psi_mode`); its iterations and message policy are ML-Mat-VAMP's.
    pub se: crate::se::SeConfig,
}

impl Default for TwoLayerRunConfig {
    fn default() -> Self {
        TwoLayerRunConfig {
            problem: TwoLayerConfig::default(),
            seed: 0,
            methods: Method::ALL.to_vec(),
            init: Init::reference(),
            vamp: VampConfig::default(),
            adam: AdamConfig::default(),
            se: crate::se::SeConfig {
                n_mc: 20_000,
                ..Default::default()
            },
        }
    }
}

/// The trial's scalars.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrialInfo {
    /// Output noise variance `yvar`.
    pub yvar: f64,
    /// `w1var = mean(F_1²)`, the oracle prior variance of ML-Mat-VAMP.
    pub w1var: f64,
    /// Normalized test MSE of the initial estimate `F1init`.
    pub initial_test_mse: f64,
    /// Analytic test error (eq. 17) of `F1init`.
    pub initial_analytic_test_error: f64,
    /// Normalized test MSE of the true `F_1` on the held-out samples (≈ 1, the noise floor).
    pub oracle_test_mse: f64,
}

/// The state evolution's part of [`TwoLayerReport`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeReport {
    /// Final predicted normalized test error.
    pub test_error: f64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Per-iteration predictions.
    pub iterations: Vec<crate::apps::two_layer_vamp::SeTwoLayerIteration>,
}

/// ML-Mat-VAMP's part of [`TwoLayerReport`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VampReport {
    /// Final normalized test MSE.
    pub test_mse: f64,
    /// Final analytic test error (eq. 17).
    pub analytic_test_error: f64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Per iteration: both test-error measures, the `F_1` error and its prediction, and the
    /// engine's record with the message precisions.
    pub iterations: Vec<VampIteration>,
}

/// ADAM's part of [`TwoLayerReport`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdamReport {
    /// Final normalized test MSE.
    pub test_mse: f64,
    /// Final analytic test error (eq. 17).
    pub analytic_test_error: f64,
    /// The L2 weight used.
    pub reg: f64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Normalized test MSE after each epoch.
    pub epoch_test_mse: Vec<f64>,
    /// Training loss of each epoch.
    pub epoch_train_loss: Vec<f64>,
}

/// The content of `two_layer.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TwoLayerReport {
    /// Command, version, seed, the full [`TwoLayerRunConfig`], total seconds, threads.
    pub meta: Meta,
    /// The trial's scalars.
    pub trial: TrialInfo,
    /// ML-Mat-VAMP (if run).
    pub ml_mat_vamp: Option<VampReport>,
    /// ADAM (if run).
    pub adam: Option<AdamReport>,
    /// The state-evolution prediction (if run).
    pub se: Option<SeReport>,
}

/// Runs one trial and writes `out_dir/two_layer.json` ([`TwoLayerReport`]); returns the report
/// and the file's path. A method's error is returned (it names the iteration and the factor).
pub fn run_two_layer(
    config: &TwoLayerRunConfig,
    out_dir: &Path,
) -> Result<(TwoLayerReport, PathBuf)> {
    config.problem.validate()?;
    config.init.validate()?;
    config.vamp.validate()?;
    config.adam.validate()?;
    if config.methods.is_empty() {
        return Err(Error::invalid("methods", "give at least one method"));
    }
    prepare_out_dir(out_dir)?;
    let wall = Instant::now();
    let (trial, start) = draw_trial(&config.problem, &config.init, config.seed)?;
    let info = TrialInfo {
        yvar: trial.yvar,
        w1var: trial.w1var,
        initial_test_mse: trial.test_mse(start.f1.as_ref())?,
        initial_analytic_test_error: trial.analytic_test_error(start.f1.as_ref())?,
        oracle_test_mse: trial.test_mse(trial.f1.as_ref())?,
    };
    let mut vamp = None;
    let mut adam = None;
    let mut se = None;
    for &m in &config.methods {
        let t0 = Instant::now();
        match m {
            Method::MlMatVamp => {
                let run = config.vamp.run(&trial, &start)?;
                vamp = Some(VampReport {
                    test_mse: run.final_test_mse(),
                    analytic_test_error: run.final_analytic_test_error(),
                    seconds: t0.elapsed().as_secs_f64(),
                    iterations: run.history,
                });
            }
            Method::Adam => {
                let res = config.adam.train(
                    &trial,
                    start.f1.as_ref(),
                    &mut rng_from_seed(adam_seed(config.seed)),
                )?;
                adam = Some(AdamReport {
                    test_mse: res.test_mse.last().copied().unwrap_or(res.initial_test_mse),
                    analytic_test_error: trial.analytic_test_error(res.f1.as_ref())?,
                    reg: res.reg,
                    seconds: t0.elapsed().as_secs_f64(),
                    epoch_test_mse: res.test_mse,
                    epoch_train_loss: res.train_loss,
                });
            }
            Method::Se => {
                let cfg = crate::se::SeConfig {
                    seed: config.seed ^ 0x5E5E_5E5E,
                    ..config.se.clone()
                };
                let iterations = crate::apps::two_layer_vamp::state_evolution(
                    &config.vamp,
                    &trial,
                    &config.init,
                    &start.message.precision,
                    &cfg,
                )?;
                se = Some(SeReport {
                    test_error: iterations.last().map_or(f64::NAN, |p| p.test_error),
                    seconds: t0.elapsed().as_secs_f64(),
                    iterations,
                });
            }
        }
    }
    let meta = Meta::new(
        "two-layer",
        config.seed,
        config,
        wall.elapsed().as_secs_f64(),
    )?;
    let report = TwoLayerReport {
        meta,
        trial: info,
        ml_mat_vamp: vamp,
        se,
        adam,
    };
    let path = out_dir.join("two_layer.json");
    crate::io::write_json(&path, &report)?;
    Ok((report, path))
}
