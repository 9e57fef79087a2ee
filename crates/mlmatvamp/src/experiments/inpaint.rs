//! `mlmatvamp inpaint`: the fraction of observed entries against the reconstruction error of
//! the missing entries, for inpainting with a deep generative prior (paper §2.4, eq. 10;
//! `L = 4`, see [`crate::apps::inpaint`]).
//!
//! For every observed fraction and trial, one problem is drawn (generator weights unless given,
//! latent codes, mask, observation) and solved by ML-Mat-VAMP with an MMSE and/or a MAP relu
//! layer and by the latent-code Adam-MAP baseline; the state evolution (MMSE) predicts the
//! ML-Mat-VAMP curve from the first trial's network. The metric is the missing-entry NMSE
//! `‖(Ẑ_3 − Z_3)⊙(1−M)‖²/‖Z_3⊙(1−M)‖²` at the final iteration (step).
//!
//! Outputs in the output directory: `inpaint.json` (metadata with the full configuration, seed
//! and version; per point and method the per-trial values, median and quartiles, timings and
//! median per-iteration curves), `inpaint.csv` (one row per point and method) and
//! `inpaint.png` / `inpaint.svg`.

use super::{
    prepare_out_dir, run_trials, trial_seed, write_csv_rows, Meta, Observer, Progress, Summary,
};
use crate::apps::inpaint::{
    latent_adam, run_se, run_vamp, time_to_reach, AdamCurve, Curve, InpaintConfig, InpaintTrial,
    LatentAdamConfig, Weights,
};
use crate::denoise::{Estimator, ReluMmseMethod};
use crate::error::{Error, Result};
use crate::figure::{Figure, FigureFile, Panel, Series};
use crate::io::write_json;
use crate::message::MessagePolicy;
use crate::se::SeConfig;
use crate::solver::SolverConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The configuration of the sweep (recorded in `inpaint.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InpaintExperiment {
    /// The problem (its `observed` is replaced by each fraction of the sweep).
    pub problem: InpaintConfig,
    /// The observed fractions.
    pub fractions: Vec<f64>,
    /// Trials per fraction.
    pub trials: usize,
    /// Base seed.
    pub seed: u64,
    /// ML-Mat-VAMP iterations.
    pub iterations: usize,
    /// The relu-layer estimators to run ML-Mat-VAMP with.
    pub estimators: Vec<Estimator>,
    /// Initial backward precisions `gamma_init · I`.
    pub gamma_init: f64,
    /// The message policy.
    pub policy: MessagePolicy,
    /// The latent-code Adam-MAP baseline (`None`: not run).
    pub adam: Option<LatentAdamConfig>,
    /// State-evolution Monte-Carlo rows (`None`: no SE).
    pub se_rows: Option<usize>,
    /// Gauss–Legendre nodes per panel of the SE's relu MMSE rule (`None`: the default).
    pub se_relu_nodes: Option<usize>,
    /// The SE's reported value is the mean of its last `se_tail` iterations (at most all of
    /// them; its Monte-Carlo noise averaged over iterations at the fixed point; 1 = the last
    /// iteration).
    pub se_tail: usize,
    /// Generator weights `W_1`, `W_3` from `.npy`/`.csv` files (`None`: random per trial).
    pub weights: Option<(PathBuf, PathBuf)>,
}

impl Default for InpaintExperiment {
    fn default() -> Self {
        InpaintExperiment {
            problem: InpaintConfig::default(),
            fractions: (1..=9).map(|i| i as f64 / 10.0).collect(),
            trials: 3,
            seed: 0,
            iterations: 15,
            estimators: vec![Estimator::Mmse, Estimator::Map],
            gamma_init: SolverConfig::default().gamma_init,
            policy: MessagePolicy::default(),
            adam: Some(LatentAdamConfig {
                steps: 1000,
                ..Default::default()
            }),
            se_rows: Some(2000),
            se_relu_nodes: Some(8),
            se_tail: 5,
            weights: None,
        }
    }
}

/// One method's results at one observed fraction.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MethodPoint {
    /// `"ml-mat-vamp-mmse"`, `"ml-mat-vamp-map"`, `"adam-map"` or `"se"`.
    pub method: String,
    /// Final missing-entry NMSE over trials (the SE has one value: the mean of its last
    /// `se_tail` iterations).
    pub missing_nmse: Summary,
    /// Final latent NMSE `‖Ẑ_0 − Z_0‖²/‖Z_0‖²` over trials.
    pub z0_nmse: Summary,
    /// Wall time per trial (seconds).
    pub seconds: Summary,
    /// Median over trials of the missing-entry NMSE per iteration (Adam: per record).
    pub curve: Vec<f64>,
    /// Adam only: the steps of the records.
    pub curve_steps: Option<Vec<usize>>,
    /// Adam only: per trial, the time Adam took to reach the ML-Mat-VAMP MMSE trial's final
    /// missing-entry NMSE (`None` if it never did).
    pub seconds_to_vamp_accuracy: Option<Vec<Option<f64>>>,
    /// ML-Mat-VAMP only: per trial, the time it took to reach the Adam baseline's final
    /// missing-entry NMSE on the same trial (`None` if it never did).
    pub seconds_to_adam_accuracy: Option<Vec<Option<f64>>>,
}

/// All methods at one observed fraction.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FractionPoint {
    /// The observed fraction.
    pub observed: f64,
    /// One entry per method.
    pub methods: Vec<MethodPoint>,
}

/// The content of `inpaint.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InpaintReport {
    /// Metadata (command, version, seed, configuration, time, threads).
    pub meta: Meta,
    /// One entry per observed fraction.
    pub points: Vec<FractionPoint>,
    /// The files written (the figures' files by the front door that renders them).
    pub files: Vec<PathBuf>,
    /// The figures to render.
    #[serde(skip)]
    pub figures: Vec<FigureFile>,
}

/// Per-trial outcome.
struct TrialResult {
    vamp: Vec<(Estimator, Curve)>,
    adam: Option<AdamCurve>,
    adam_seconds: f64,
}

fn median_curve(curves: &[&[f64]]) -> Vec<f64> {
    let len = curves.iter().map(|c| c.len()).max().unwrap_or(0);
    (0..len)
        .map(|k| {
            let v: Vec<f64> = curves.iter().filter_map(|c| c.get(k).copied()).collect();
            crate::figure::quartiles(&v).map_or(f64::NAN, |q| q.1)
        })
        .collect()
}

fn method_name(e: Estimator) -> &'static str {
    match e {
        Estimator::Mmse => "ml-mat-vamp-mmse",
        Estimator::Map => "ml-mat-vamp-map",
    }
}

impl InpaintExperiment {
    /// Checks the options.
    pub fn validate(&self) -> Result<()> {
        self.problem.validate()?;
        if self.fractions.is_empty() {
            return Err(Error::invalid(
                "fractions",
                "at least one observed fraction is needed",
            ));
        }
        for &f in &self.fractions {
            if !(f > 0.0 && f <= 1.0) {
                return Err(Error::invalid(
                    "fractions",
                    format!("observed fractions must be in (0, 1], got {f}"),
                ));
            }
        }
        if self.trials == 0 || self.iterations == 0 {
            return Err(Error::invalid("trials / iterations", "must be at least 1"));
        }
        if self.se_tail == 0 {
            return Err(Error::invalid("se_tail", "must be at least 1"));
        }
        if let Some(a) = &self.adam {
            a.validate()?;
        }
        if let Some(n) = self.se_rows {
            if n < 100 {
                return Err(Error::invalid(
                    "se_rows",
                    format!("the SE needs at least 100 Monte-Carlo rows, got {n}"),
                ));
            }
        }
        self.solver().validate()
    }

    fn solver(&self) -> SolverConfig {
        SolverConfig {
            iterations: self.iterations,
            tolerance: None,
            gamma_init: self.gamma_init,
            policy: self.policy.clone(),
        }
    }

    fn load_weights(&self) -> Result<Weights> {
        match &self.weights {
            None => Ok(Weights::Random),
            Some((p1, p3)) => {
                let w1 = crate::io::read_matrix(p1)?.data;
                let w3 = crate::io::read_matrix(p3)?.data;
                let w = Weights::Given {
                    w1: Arc::new(w1),
                    w3: Arc::new(w3),
                };
                w.check(&self.problem)?;
                Ok(w)
            }
        }
    }

    /// Runs the sweep and writes `inpaint.json`, `inpaint.csv`, `inpaint.png` and `inpaint.svg`
    /// into `out_dir`.
    pub fn run(&self, out_dir: &Path, observer: &dyn Observer) -> Result<InpaintReport> {
        let start = Instant::now();
        self.validate()?;
        prepare_out_dir(out_dir)?;
        let weights = self.load_weights()?;
        let solver = self.solver();
        let nf = self.fractions.len();
        let total = nf * self.trials + if self.se_rows.is_some() { nf } else { 0 };
        let pb = Progress::new(observer, "inpaint", total as u64);
        let problem = |f: usize| InpaintConfig {
            observed: self.fractions[f],
            ..self.problem.clone()
        };
        // Trials (and the SE jobs, one per fraction) in parallel.
        enum Job {
            Trial(TrialResult),
            Se(Curve),
        }
        let jobs = run_trials(total, &pb, |i| {
            if i < nf * self.trials {
                let (f, t) = (i / self.trials, i % self.trials);
                let seed = trial_seed(self.seed, f as u64, t as u64);
                let trial = InpaintTrial::generate(&problem(f), &weights, seed)?;
                let mut vamp = vec![];
                for &e in &self.estimators {
                    vamp.push((e, run_vamp(&trial, e, &solver)?));
                }
                let (adam, adam_seconds) = match &self.adam {
                    Some(a) => {
                        let s = Instant::now();
                        let c = latent_adam(&trial, a, seed ^ 0xADA)?;
                        (Some(c), s.elapsed().as_secs_f64())
                    }
                    None => (None, 0.0),
                };
                Ok(Job::Trial(TrialResult {
                    vamp,
                    adam,
                    adam_seconds,
                }))
            } else {
                let f = i - nf * self.trials;
                let trial = InpaintTrial::generate(
                    &problem(f),
                    &weights,
                    trial_seed(self.seed, f as u64, 0),
                )?;
                let se = SeConfig {
                    iterations: self.iterations,
                    n_mc: self.se_rows.unwrap_or(2000),
                    seed: trial_seed(self.seed ^ 0x5E, f as u64, 0),
                    ..SeConfig::from_solver(&solver)
                };
                let rule = match self.se_relu_nodes {
                    Some(nodes) => ReluMmseMethod::Orthants { nodes },
                    None => ReluMmseMethod::Auto,
                };
                Ok(Job::Se(run_se(&trial, &se, rule)?))
            }
        });
        pb.finish()?;
        let mut points = Vec::with_capacity(nf);
        for f in 0..nf {
            let outs = &jobs[f * self.trials..(f + 1) * self.trials];
            let mut errors = vec![];
            let trials: Vec<&TrialResult> = outs
                .iter()
                .filter_map(|o| match (&o.value, &o.error) {
                    (Some(Job::Trial(t)), _) => Some(t),
                    (_, Some(e)) => {
                        errors.push(format!("trial {}: {e}", o.trial % self.trials));
                        None
                    }
                    _ => None,
                })
                .collect();
            let mut methods = vec![];
            let mut mmse_final: Vec<Option<f64>> = vec![];
            let adam_final: Vec<Option<f64>> = trials
                .iter()
                .map(|t| t.adam.as_ref().and_then(|a| a.missing_nmse.last().copied()))
                .collect();
            for (ei, &e) in self.estimators.iter().enumerate() {
                let curves: Vec<&Curve> = trials.iter().map(|t| &t.vamp[ei].1).collect();
                let last = |m: &[f64]| m.last().copied().unwrap_or(f64::NAN);
                let fin: Vec<f64> = curves.iter().map(|c| last(&c.missing_nmse)).collect();
                if e == Estimator::Mmse {
                    mmse_final = fin.iter().map(|&x| Some(x)).collect();
                }
                methods.push(MethodPoint {
                    method: method_name(e).into(),
                    missing_nmse: Summary::from_values(fin, errors.clone()),
                    z0_nmse: Summary::from_values(
                        curves.iter().map(|c| last(&c.z0_nmse)).collect(),
                        errors.clone(),
                    ),
                    seconds: Summary::from_values(
                        curves
                            .iter()
                            .map(|c| c.seconds.last().copied().unwrap_or(f64::NAN))
                            .collect(),
                        vec![],
                    ),
                    curve: median_curve(
                        &curves
                            .iter()
                            .map(|c| c.missing_nmse.as_slice())
                            .collect::<Vec<_>>(),
                    ),
                    curve_steps: None,
                    seconds_to_vamp_accuracy: None,
                    seconds_to_adam_accuracy: self.adam.is_some().then(|| {
                        curves
                            .iter()
                            .zip(&adam_final)
                            .map(|(c, a)| {
                                a.and_then(|target| {
                                    time_to_reach(&c.seconds, &c.missing_nmse, target)
                                })
                            })
                            .collect()
                    }),
                });
            }
            if self.adam.is_some() {
                let curves: Vec<&AdamCurve> =
                    trials.iter().filter_map(|t| t.adam.as_ref()).collect();
                let reach: Vec<Option<f64>> =
                    curves
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            mmse_final.get(i).copied().flatten().and_then(|target| {
                                time_to_reach(&c.seconds, &c.missing_nmse, target)
                            })
                        })
                        .collect();
                methods.push(MethodPoint {
                    method: "adam-map".into(),
                    missing_nmse: Summary::from_values(
                        curves
                            .iter()
                            .map(|c| c.missing_nmse.last().copied().unwrap_or(f64::NAN))
                            .collect(),
                        errors.clone(),
                    ),
                    z0_nmse: Summary::from_values(
                        curves
                            .iter()
                            .map(|c| c.z0_nmse.last().copied().unwrap_or(f64::NAN))
                            .collect(),
                        errors.clone(),
                    ),
                    seconds: Summary::from_values(
                        trials.iter().map(|t| t.adam_seconds).collect(),
                        vec![],
                    ),
                    curve: median_curve(
                        &curves
                            .iter()
                            .map(|c| c.missing_nmse.as_slice())
                            .collect::<Vec<_>>(),
                    ),
                    curve_steps: curves.first().map(|c| c.steps.clone()),
                    seconds_to_vamp_accuracy: self
                        .estimators
                        .contains(&Estimator::Mmse)
                        .then_some(reach),
                    seconds_to_adam_accuracy: None,
                });
            }
            if self.se_rows.is_some() {
                let o = &jobs[nf * self.trials + f];
                let (curve, err) = match (&o.value, &o.error) {
                    (Some(Job::Se(c)), _) => (Some(c), vec![]),
                    (_, Some(e)) => (None, vec![format!("state evolution: {e}")]),
                    _ => (None, vec![]),
                };
                let one = |v: Option<f64>| match v {
                    Some(x) if x.is_finite() => vec![x],
                    _ => vec![],
                };
                let tail = |v: &[f64]| -> Option<f64> {
                    let k = self.se_tail.min(v.len());
                    (k > 0).then(|| v[v.len() - k..].iter().sum::<f64>() / k as f64)
                };
                methods.push(MethodPoint {
                    method: "se".into(),
                    missing_nmse: Summary::from_values(
                        one(curve.and_then(|c| tail(&c.missing_nmse))),
                        err.clone(),
                    ),
                    z0_nmse: Summary::from_values(one(curve.and_then(|c| tail(&c.z0_nmse))), err),
                    seconds: Summary::from_values(vec![o.seconds], vec![]),
                    curve: curve.map(|c| c.missing_nmse.clone()).unwrap_or_default(),
                    curve_steps: None,
                    seconds_to_vamp_accuracy: None,
                    seconds_to_adam_accuracy: None,
                });
            }
            points.push(FractionPoint {
                observed: self.fractions[f],
                methods,
            });
        }
        let mut report = InpaintReport {
            meta: Meta::new("inpaint", self.seed, self, start.elapsed().as_secs_f64())?,
            points,
            files: vec![],
            figures: vec![],
        };
        // CSV.
        let csv = out_dir.join("inpaint.csv");
        let mut rows = vec![];
        for p in &report.points {
            for m in &p.methods {
                rows.push(vec![
                    format!("{}", p.observed),
                    m.method.clone(),
                    format!("{}", m.missing_nmse.median),
                    format!("{}", m.missing_nmse.q25),
                    format!("{}", m.missing_nmse.q75),
                    format!("{}", m.missing_nmse.mean),
                    format!("{}", m.z0_nmse.median),
                    format!("{}", m.seconds.median),
                    format!("{}", m.missing_nmse.values.len()),
                    format!("{}", m.missing_nmse.failed),
                ]);
            }
        }
        write_csv_rows(
            &csv,
            &[
                "observed",
                "method",
                "missing_nmse_median",
                "missing_nmse_q25",
                "missing_nmse_q75",
                "missing_nmse_mean",
                "z0_nmse_median",
                "seconds_median",
                "trials",
                "failed",
            ],
            &rows,
        )?;
        // Plot: missing-entry NMSE against the observed fraction.
        let series_of = |name: &str, label: &str, dashed: bool, color: usize| -> Option<Series> {
            let pts: Vec<(f64, &MethodPoint)> = report
                .points
                .iter()
                .filter_map(|p| {
                    p.methods
                        .iter()
                        .find(|m| m.method == name)
                        .map(|m| (p.observed, m))
                })
                .collect();
            if pts.is_empty() {
                return None;
            }
            let band = (name != "se").then(|| {
                (
                    pts.iter().map(|(_, m)| m.missing_nmse.q25).collect(),
                    pts.iter().map(|(_, m)| m.missing_nmse.q75).collect(),
                )
            });
            Some(Series {
                label: label.into(),
                x: pts.iter().map(|(x, _)| *x).collect(),
                y: pts.iter().map(|(_, m)| m.missing_nmse.median).collect(),
                band,
                dashed,
                color: Some(color),
            })
        };
        let series: Vec<Series> = [
            series_of("ml-mat-vamp-mmse", "ML-Mat-VAMP (MMSE)", false, 0),
            series_of("ml-mat-vamp-map", "ML-Mat-VAMP (MAP)", false, 1),
            series_of("adam-map", "latent Adam-MAP", false, 2),
            series_of("se", "state evolution (MMSE)", true, 3),
        ]
        .into_iter()
        .flatten()
        .collect();
        let c = &self.problem;
        let mut fig = Figure::new(vec![Panel {
            title: format!(
                "Inpainting, generative prior: n0={}, n1={}, n3={}, d={} ({} trials)",
                c.n0, c.n1, c.n3, c.d, self.trials
            ),
            x_label: "fraction of entries observed".into(),
            y_label: "NMSE of the missing entries".into(),
            series,
            log_y: true,
            ..Default::default()
        }]);
        fig.panel_width = 760;
        let figure = FigureFile::new(out_dir.join("inpaint"), fig);
        let [png, svg] = figure.files();
        report.figures = vec![figure];
        let json = out_dir.join("inpaint.json");
        report.files = vec![json.clone(), csv, png, svg];
        report.meta.seconds = start.elapsed().as_secs_f64();
        write_json(&json, &report)?;
        Ok(report)
    }
}
