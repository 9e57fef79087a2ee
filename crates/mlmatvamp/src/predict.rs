//! Predicting performance from a configuration (spec §6): the state evolution of a `run`
//! configuration (`mlmatvamp se`) and its comparison with simulations (`mlmatvamp compare`).
//!
//! The SE takes the same TOML file as `run` ([`crate::config`]). Arrays that only matter
//! through their law may be given as laws, and no array is drawn for them:
//!
//! * a linear layer with `weight = { law = "gaussian", rows = …, cols = … }` (i.i.d. entries of
//!   variance `1/cols`, or `variance`) becomes a [`SpectralLinearLayer`] with the
//!   Marchenko–Pastur singular values of that law (spec §6.2 (Lin)), discretised at its
//!   quantiles — all of them up to [`LAW_SPECTRUM_POINTS`], about that many beyond — so that the
//!   cost does not grow with the layer size ([`gaussian_law_spec`]); a weight given as data uses
//!   its actual singular values;
//! * `y` is not needed (the SE uses the output's law) and may be omitted;
//! * an AWGN output's `mask` may be a law, `{ law = "bernoulli", observed = 0.7 }`
//!   ([`AwgnMaskLaw`]); a mask given as data enters through its pattern frequencies.
//!
//! Options come from the `[se]` table (`n_mc`, `psi_mode`, `seed`), overridden by
//! [`SeOverrides`] (the command line). The iterations, `gamma_init` and the message policy are
//! the algorithm's.
//!
//! ```no_run
//! use mlmatvamp::predict::{load_se_model, SeOverrides};
//! use std::path::Path;
//!
//! # fn main() -> mlmatvamp::Result<()> {
//! let model = load_se_model(Path::new("examples/se/mmv.toml"), &SeOverrides::default())?;
//! let (iterations, seconds) = model.run()?;
//! let last = &iterations.last().unwrap().variables[0];
//! println!("Z_0: predicted MSE per entry {:.3e} ({seconds:.2} s)", last.se_mse_per_entry);
//! # Ok(())
//! # }
//! ```

use crate::config::{config_error, Law, Prepared, RunConfig, Weight};
use crate::denoise::mask_law::AwgnMaskLaw;
use crate::error::{Error, Result};
use crate::experiments::{self, Meta, TrialOutcome};
use crate::factor::{LayerSe, OutputSe};
use crate::figure::{Figure, FigureFile, Panel, Series};
use crate::io;
use crate::observe::{Observer, Progress};
use crate::rows::cross_moment;
use crate::se::{
    LinearSpec, PsiMode, SeConfig, SeIteration, SeNetwork, SpectralLinearLayer, StateEvolution,
};
use crate::solver::{Control, Solver};
use crate::spd::{DMat, Spd};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub use crate::operator::spectral::LAW_SPECTRUM_POINTS;

/// Command-line overrides of the `[se]` table (`None`: the table's value, else the default).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeOverrides {
    /// Monte-Carlo rows per sampled SE step.
    pub n_mc: Option<usize>,
    /// Backward-message model (spec §6.3).
    pub psi_mode: Option<PsiMode>,
    /// Seed of the SE's Monte-Carlo draws.
    pub seed: Option<u64>,
}

/// How the state evolution sees one hidden layer.
#[derive(Clone, Debug, Serialize)]
pub struct SeLayerInfo {
    /// `l` (1-based).
    pub layer: usize,
    /// The configuration `kind`.
    pub kind: String,
    /// The layer's description.
    pub description: String,
    /// `n_{l−1}`.
    pub rows_in: usize,
    /// `n_l`.
    pub rows_out: usize,
    /// Linear layers: where the singular values come from.
    pub spectrum: Option<String>,
    /// Linear layers: how many singular values the closed-form SE step sums over.
    pub spectrum_points: Option<usize>,
}

/// A configuration turned into what the state evolution needs.
#[derive(Clone, Debug)]
pub struct SeModel {
    /// The configuration file, if loaded from one.
    pub path: Option<PathBuf>,
    /// The typed configuration.
    pub config: RunConfig,
    /// The configuration as parsed TOML, converted to JSON.
    pub raw: serde_json::Value,
    /// The network as the SE sees it (law layers and outputs are SE-only).
    pub network: SeNetwork,
    /// The effective SE options.
    pub se: SeConfig,
    /// One entry per hidden layer.
    pub layers: Vec<SeLayerInfo>,
    /// Seconds spent building the model (reading arrays, singular values).
    pub setup_seconds: f64,
}

/// Reads a configuration file: the typed configuration, the raw TOML as JSON, and the
/// directory relative file names are taken from.
pub fn read_config(path: &Path) -> Result<(RunConfig, serde_json::Value, PathBuf)> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    let (config, raw) = parse_config(&text, Some(path))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((config, raw, base))
}

/// Parses configuration text: the typed configuration and the raw TOML as JSON.
pub fn parse_config(text: &str, path: Option<&Path>) -> Result<(RunConfig, serde_json::Value)> {
    let config = RunConfig::parse(text, path)?;
    let raw: toml::Table = toml::from_str(text).map_err(|e| config_error(path, e.to_string()))?;
    let raw = serde_json::to_value(&raw).map_err(|e| config_error(path, e.to_string()))?;
    Ok((config, raw))
}

/// The SE description of a linear layer whose `n_out x n_in` weight has i.i.d. `N(0, variance)`
/// entries: the Marchenko–Pastur singular values (spec §6.2 (Lin)). When the layer has more than
/// [`LAW_SPECTRUM_POINTS`] singular values, the law is discretised on a smaller shape with the
/// same aspect ratio (exactly when `n_out/n_in` reduces to small integers, else to within
/// `1/LAW_SPECTRUM_POINTS`) and the same singular-value law, so the SE cost does not grow with
/// the layer size.
pub fn gaussian_law_spec(
    n_out: usize,
    n_in: usize,
    variance: f64,
    d: usize,
    noise: Option<Spd>,
    bias_moment: Option<DMat>,
) -> Result<LinearSpec> {
    let r = n_out.min(n_in);
    let (a, b) = if r <= LAW_SPECTRUM_POINTS {
        (n_out, n_in)
    } else {
        let g = gcd(n_out, n_in);
        let (p, q) = (n_out / g, n_in / g);
        if p.min(q) <= LAW_SPECTRUM_POINTS {
            let k = LAW_SPECTRUM_POINTS.div_ceil(p.min(q));
            (p * k, q * k)
        } else {
            let scale = LAW_SPECTRUM_POINTS as f64 / r as f64;
            (
                ((n_out as f64 * scale).round() as usize).max(1),
                ((n_in as f64 * scale).round() as usize).max(1),
            )
        }
    };
    // s² = variance · max(n_out, n_in) · x with x ~ MP(ratio): keep variance · max fixed.
    let v = variance * n_out.max(n_in) as f64 / a.max(b) as f64;
    // The SE step uses the shape only through the ratios r / n_out and r / n_in.
    LinearSpec::marchenko_pastur(a, b, v, d, noise, bias_moment)
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// The effective SE options of a configuration: `[se]` overridden by `overrides`; the
/// iterations, `gamma_init` and policy of the solver.
pub fn se_config(
    config: &RunConfig,
    path: Option<&Path>,
    overrides: &SeOverrides,
) -> Result<SeConfig> {
    let solver = config.check_structure(path)?;
    let table = config.se.clone().unwrap_or_default();
    let se = SeConfig {
        iterations: solver.iterations,
        n_mc: overrides
            .n_mc
            .or(table.n_mc)
            .unwrap_or(SeConfig::default().n_mc),
        seed: overrides.seed.or(table.seed).unwrap_or(config.seed),
        psi_mode: overrides.psi_mode.or(table.psi_mode).unwrap_or_default(),
        gamma_init: solver.gamma_init,
        policy: solver.policy,
    };
    se.validate().map_err(|e| match e {
        Error::Invalid { what, detail } => {
            let key = match what.as_str() {
                "n_mc" if overrides.n_mc.is_some() => "--n-mc".to_string(),
                "n_mc" => "se.n_mc".to_string(),
                "damp_mean" => "policy.damp_mean".to_string(),
                w if w.starts_with("lam_") || w.starts_with("damp_") => format!("policy.{w}"),
                w => w.to_string(),
            };
            config_error(path, format!("`{key}`: {detail}"))
        }
        other => other,
    })?;
    Ok(se)
}

/// Builds the state-evolution model of a configuration (see the module documentation): phase 1
/// is the algorithm's own ([`RunConfig::resolve`]), so `run`, `se` and `compare` read and check
/// a configuration through the same code; then every linear layer becomes a
/// [`SpectralLinearLayer`] (the law's quantiles, or the given weight's singular values) and an
/// AWGN mask given as a law becomes an [`AwgnMaskLaw`].
pub fn build_se_model(
    config: &RunConfig,
    base_dir: &Path,
    path: Option<&Path>,
    overrides: &SeOverrides,
) -> Result<SeModel> {
    let start = Instant::now();
    let se = se_config(config, path, overrides)?;
    let resolved = config.resolve(base_dir, path)?;
    let d = config.d;
    let rows = resolved.rows.clone();
    let mut layers: Vec<Arc<dyn LayerSe>> = Vec::with_capacity(config.layer.len());
    let mut infos = Vec::with_capacity(config.layer.len());
    for (i, (p, lc)) in resolved.prepared.into_iter().zip(&config.layer).enumerate() {
        let l = i + 1;
        let (n_in, n_out) = (rows[i], rows[i + 1]);
        let (layer, spectrum): (Arc<dyn LayerSe>, Option<String>) = match p {
            Prepared::Linear {
                weight,
                bias,
                noise,
                method,
                law: law_options,
                ..
            } => {
                let bias_moment = bias.as_ref().map(|b| cross_moment(b.as_ref(), b.as_ref()));
                let cg = !weight.uses_svd(method, n_out, n_in);
                match weight {
                    Weight::Law {
                        spec: law,
                        label,
                        cols,
                        ..
                    } => {
                        if law.law != Law::Gaussian {
                            return Err(Error::invalid(
                                &label,
                                "a weight law must be `gaussian` (i.i.d. entries)",
                            ));
                        }
                        let variance = law.gaussian_variance(cols);
                        if variance <= 0.0 {
                            return Err(Error::invalid(
                                &label,
                                format!(
                                    "the state evolution needs a positive variance, got {variance}"
                                ),
                            ));
                        }
                        let spec = gaussian_law_spec(n_out, n_in, variance, d, noise, bias_moment)?;
                        let what =
                            format!("Marchenko-Pastur law of i.i.d. N(0, {variance:.4e}) entries");
                        let points = spec.singular_values.len();
                        (
                            Arc::new(SpectralLinearLayer::new(spec).shown_as(
                                n_out,
                                n_in,
                                what.clone(),
                            )),
                            Some(format!("{what}, {points} quantiles")),
                        )
                    }
                    // A matrix-free layer: the law the algorithm itself uses (the operator's own,
                    // or a stochastic-Lanczos estimate), so that SE and algorithm agree.
                    Weight::Matrix(_) | Weight::Sparse(_) | Weight::Operator(_) if cg => {
                        let op: Arc<dyn crate::operator::LinearOperator> = match weight {
                            Weight::Matrix(m) => Arc::new(crate::operator::DenseOperator::new(m)?),
                            Weight::Sparse(csr) => {
                                Arc::new(crate::operator::SparseOperator::new(csr))
                            }
                            Weight::Operator(op) => op,
                            Weight::Law { .. } => unreachable!("matched above"),
                        };
                        let law = match op.spectral_law() {
                            Some(law) => law,
                            None => crate::operator::SpectralLaw::lanczos(
                                op.as_ref(),
                                law_options.probes,
                                law_options.steps,
                                law_options.seed,
                            )?,
                        };
                        let what = law.describe();
                        let spec = LinearSpec::from_law(&law, d, noise, bias_moment)?;
                        let points = spec.singular_values.len();
                        (
                            Arc::new(SpectralLinearLayer::new(spec).shown_as(
                                n_out,
                                n_in,
                                format!("{}: {what}", op.describe()),
                            )),
                            Some(format!("{what}, {points} nodes")),
                        )
                    }
                    Weight::Sparse(_) | Weight::Operator(_) => {
                        return Err(Error::invalid(
                            format!("layer {l}"),
                            "the state evolution of an SVD layer needs a dense weight",
                        ))
                    }
                    Weight::Matrix(weight) => {
                        let s = weight.singular_values().map_err(|e| Error::Numerical {
                            what: format!("singular values of the weight of layer {l}"),
                            detail: format!("{e:?}"),
                        })?;
                        let spec = LinearSpec {
                            n_out,
                            n_in,
                            d,
                            singular_values: s,
                            weights: Vec::new(),
                            noise,
                            bias_moment: bias_moment.unwrap_or_else(|| DMat::zeros(d, d)),
                        };
                        let what = "singular values of the given weight";
                        (
                            Arc::new(SpectralLinearLayer::new(spec).shown_as(n_out, n_in, what)),
                            Some(format!("{what} ({})", n_out.min(n_in))),
                        )
                    }
                }
            }
            Prepared::RowWise(layer) => (layer, None),
        };
        infos.push(SeLayerInfo {
            layer: l,
            kind: lc.kind_name().to_string(),
            description: layer.describe(),
            rows_in: n_in,
            rows_out: n_out,
            spectrum_points: layer.singular_values().map(<[f64]>::len),
            spectrum,
        });
        layers.push(layer);
    }
    let n_last = rows[rows.len() - 1];
    let output: Arc<dyn OutputSe> = match resolved.output.mask_law {
        Some((observed, noise)) => Arc::new(AwgnMaskLaw::new(n_last, noise, observed)?),
        None => resolved.output.channel,
    };
    let network = SeNetwork::new(resolved.prior, rows[0], layers, output)?;
    Ok(SeModel {
        path: path.map(Path::to_path_buf),
        config: config.clone(),
        raw: serde_json::Value::Null,
        network,
        se,
        layers: infos,
        setup_seconds: start.elapsed().as_secs_f64(),
    })
}

/// Reads a configuration file and builds its state-evolution model.
pub fn load_se_model(path: &Path, overrides: &SeOverrides) -> Result<SeModel> {
    let (config, raw, base) = read_config(path)?;
    let mut model = build_se_model(&config, &base, Some(path), overrides)?;
    model.raw = raw;
    Ok(model)
}

/// The network as recorded in `se.json` and `compare.json`.
#[derive(Clone, Debug, Serialize)]
pub struct SeNetworkInfo {
    /// Multi-line description.
    pub description: String,
    /// `L`.
    pub depth: usize,
    /// `d`.
    pub d: usize,
    /// `n_0 … n_{L−1}`.
    pub rows: Vec<usize>,
    /// The hidden layers as the SE sees them.
    pub layers: Vec<SeLayerInfo>,
    /// The output channel.
    pub output: String,
}

impl SeModel {
    fn network_info(&self) -> SeNetworkInfo {
        let net = &self.network;
        SeNetworkInfo {
            description: net.describe(),
            depth: net.depth(),
            d: net.dim(),
            rows: net.rows().to_vec(),
            layers: self.layers.clone(),
            output: net.chain().output_description().to_string(),
        }
    }

    /// Runs the state evolution; returns the per-iteration predictions and the seconds spent.
    pub fn run(&self) -> Result<(Vec<SeIteration>, f64)> {
        let start = Instant::now();
        let (iters, _) = StateEvolution::new(self.se.clone())?.run(&self.network, None)?;
        Ok((iters, start.elapsed().as_secs_f64()))
    }
}

/// The content of `se.json`.
#[derive(Clone, Debug, Serialize)]
pub struct SeRecord {
    /// `"mlmatvamp"`.
    pub program: &'static str,
    /// The crate version that produced the file.
    pub version: &'static str,
    /// `"se"`.
    pub command: &'static str,
    /// The configuration file.
    pub config_path: Option<String>,
    /// The full configuration (the parsed TOML as JSON).
    pub config: serde_json::Value,
    /// The configuration's seed (law-drawn arrays such as a bias).
    pub seed: u64,
    /// The effective SE options (`seed` there is the Monte-Carlo seed).
    pub se: SeConfig,
    /// The network as the SE sees it.
    pub network: SeNetworkInfo,
    /// Seconds spent reading the configuration and building the model.
    pub setup_seconds: f64,
    /// Seconds spent in the recursion.
    pub se_seconds: f64,
    /// Wall time of the whole command (without writing this file).
    pub total_seconds: f64,
    /// Per iteration: its `seconds` and, per variable ([`crate::se::SeVariableRecord`]), the SE's
    /// predictions of the empirical error `se_mse_per_entry`, `se_mse` (per row), `se_nmse`, the
    /// `d x d` `se_error_cov`, the limit of the algorithm's own `cov` and `predicted_mse`, and the
    /// laws `gamma_plus`, `gamma_minus`, `k_plus`, `psi_minus`, `t_minus` (`docs/outputs.md`).
    pub iterations: Vec<SeIteration>,
}

/// What [`run_se`] did.
#[derive(Clone, Debug)]
pub struct SeReport {
    /// The output directory.
    pub out_dir: PathBuf,
    /// Every file written.
    pub files: Vec<PathBuf>,
    /// The content of `se.json`.
    pub record: SeRecord,
}

/// `mlmatvamp se CONFIG --out DIR`: builds the SE model of the configuration, runs the
/// recursion and writes `DIR/se.json` ([`SeRecord`]).
pub fn run_se(config_path: &Path, out_dir: &Path, overrides: &SeOverrides) -> Result<SeReport> {
    let start = Instant::now();
    let model = load_se_model(config_path, overrides)?;
    let (iterations, se_seconds) = model.run()?;
    experiments::prepare_out_dir(out_dir)?;
    let record = SeRecord {
        program: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        command: "se",
        config_path: Some(config_path.display().to_string()),
        config: model.raw.clone(),
        seed: model.config.seed,
        se: model.se.clone(),
        network: model.network_info(),
        setup_seconds: model.setup_seconds,
        se_seconds,
        total_seconds: start.elapsed().as_secs_f64(),
        iterations,
    };
    let path = out_dir.join("se.json");
    io::write_json(&path, &record)?;
    Ok(SeReport {
        out_dir: out_dir.to_path_buf(),
        files: vec![path],
        record,
    })
}

/// A per-iteration table of an SE record: predicted MSE per entry and normalized MSE per variable.
pub fn se_table(record: &SeRecord) -> String {
    let mut s = String::new();
    let depth = record.network.depth;
    s += "iter";
    for l in 0..depth {
        s += &format!(
            "  {:>12}  {:>10}",
            format!("Z_{l} mse/entry"),
            format!("Z_{l} nmse")
        );
    }
    s += "\n";
    for it in &record.iterations {
        s += &format!("{:>4}", it.iteration);
        for v in &it.variables {
            s += &format!("  {:>12.4e}  {:>10.4e}", v.se_mse_per_entry, v.se_nmse);
        }
        s += "\n";
    }
    s += &format!(
        "state evolution: {} iterations in {:.3} s (setup {:.3} s), n_mc = {}, psi_mode = {}",
        record.iterations.len(),
        record.se_seconds,
        record.setup_seconds,
        record.se.n_mc,
        psi_name(record.se.psi_mode)
    );
    s
}

fn psi_name(m: PsiMode) -> &'static str {
    match m {
        PsiMode::General => "general",
        PsiMode::Identity => "identity",
    }
}

// ---------------------------------------------------------------------------------------------
// compare
// ---------------------------------------------------------------------------------------------

/// Options of [`compare`].
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Number of teacher draws (teacher mode); must be 1 with data.
    pub seeds: usize,
    /// Also run the reference code's empirical SE (spec §6.5), a diagnostic.
    pub empirical_se: bool,
    /// Overrides of the `[se]` table.
    pub se: SeOverrides,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            seeds: 1,
            empirical_se: false,
            se: SeOverrides::default(),
        }
    }
}

/// Mean, standard error, minimum and maximum of a quantity over the successful simulation trials.
#[derive(Clone, Debug, Serialize)]
pub struct Spread {
    /// Mean over trials.
    pub mean: f64,
    /// Standard error of the mean (sample standard deviation / √trials; NaN for one trial).
    pub std_err: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// The per-trial values (trial order).
    pub values: Vec<f64>,
}

impl Spread {
    fn of(values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Spread {
                mean: f64::NAN,
                std_err: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
                values,
            };
        }
        let n = values.len() as f64;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mean = values.iter().sum::<f64>() / n;
        let std_err = if values.len() < 2 {
            f64::NAN
        } else {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt()
        };
        Spread {
            mean,
            std_err,
            min,
            max,
            values,
        }
    }
}

/// One iteration and variable of the comparison.
#[derive(Clone, Debug, Serialize)]
pub struct CompareRow {
    /// Iteration `k`.
    pub iteration: usize,
    /// Variable `l`.
    pub variable: usize,
    /// Simulated MSE per entry `(1/(n_l d))||Ẑ_l − Z_l||²_F` over the trials.
    pub sim_mse_per_entry: Spread,
    /// SE-predicted MSE per entry.
    pub se_mse_per_entry: f64,
    /// `(SE − mean simulation) / mean simulation` of the MSE per entry.
    pub mse_rel_gap: f64,
    /// Simulated normalized MSE `||Ẑ_l − Z_l||²_F / ||Z_l||²_F` over the trials.
    pub sim_nmse: Spread,
    /// SE-predicted normalized MSE `tr E / E||z||²`.
    pub se_nmse: f64,
    /// `(SE − mean simulation) / mean simulation` of the normalized MSE.
    pub nmse_rel_gap: f64,
    /// With `--empirical-se`: the reference's empirical-SE diagnostic (spec §6.5), MSE per entry.
    pub empirical_se_mse_per_entry: Option<Spread>,
}

/// One simulation trial.
#[derive(Clone, Debug, Serialize)]
pub struct TrialRecord {
    /// Trial index.
    pub trial: usize,
    /// The configuration seed of this trial (`seed + trial` in teacher mode).
    pub seed: u64,
    /// Seconds spent building the problem (drawing laws and the teacher, SVDs).
    pub setup_seconds: Option<f64>,
    /// Seconds spent in the iterations.
    pub solve_seconds: Option<f64>,
    /// Seconds spent in the empirical-SE diagnostic run.
    pub empirical_se_seconds: Option<f64>,
    /// The error that stopped the trial, if any.
    pub error: Option<String>,
}

/// The content of `compare.json`.
#[derive(Clone, Debug, Serialize)]
pub struct CompareRecord {
    /// Command, version, seed, configuration, wall time, threads.
    pub meta: Meta,
    /// The configuration file.
    pub config_path: Option<String>,
    /// Whether the simulations draw their own truth and observation (no `y`).
    pub teacher: bool,
    /// Number of simulation trials.
    pub seeds: usize,
    /// Number of failed trials.
    pub failed: usize,
    /// The effective SE options.
    pub se: SeConfig,
    /// The network as the SE sees it.
    pub network: SeNetworkInfo,
    /// Seconds spent building the SE model.
    pub se_setup_seconds: f64,
    /// Seconds spent in the SE recursion.
    pub se_seconds: f64,
    /// The simulation trials.
    pub trials: Vec<TrialRecord>,
    /// Whether the empirical-SE diagnostic was run.
    pub empirical_se: bool,
    /// One row per iteration and variable.
    pub rows: Vec<CompareRow>,
    /// The full SE predictions.
    pub se_iterations: Vec<SeIteration>,
}

/// What [`compare`] did.
#[derive(Clone, Debug)]
pub struct CompareReport {
    /// The output directory.
    pub out_dir: PathBuf,
    /// Every file written.
    pub files: Vec<PathBuf>,
    /// The content of `compare.json`.
    pub record: CompareRecord,
    /// The figure behind `compare.png` and `compare.svg` (rendered by the front door).
    pub figures: Vec<FigureFile>,
}

/// Per-trial curves: `[iteration][variable]`.
struct TrialCurves {
    mse: Vec<Vec<f64>>,
    nmse: Vec<Vec<f64>>,
    emp: Option<Vec<Vec<f64>>>,
    setup: f64,
    solve: f64,
    emp_seconds: Option<f64>,
}

/// `mlmatvamp compare CONFIG --out DIR`: runs the state evolution and the algorithm on the same
/// model and writes `compare.json` ([`CompareRecord`]), `compare.csv` and `compare.png`/`.svg`.
///
/// Teacher mode (no `y`): `seeds` simulations, trial `i` with the configuration seed
/// `seed + i` (so trial 0 is exactly `mlmatvamp run CONFIG`), each drawing its law arrays (e.g.
/// `W`), truth and observation. With data, one simulation, which needs `truth`. The tolerance
/// stop is disabled so that every trial runs all iterations.
pub fn compare(
    config_path: &Path,
    out_dir: &Path,
    opts: &CompareOptions,
    observer: &dyn Observer,
) -> Result<CompareReport> {
    let start = Instant::now();
    let (config, raw, base) = read_config(config_path)?;
    let path = Some(config_path);
    let teacher = config.is_teacher();
    if opts.seeds == 0 {
        return Err(Error::invalid(
            "--seeds",
            "at least one simulation is needed",
        ));
    }
    if !teacher {
        if config.truth.is_none() {
            return Err(config_error(
                path,
                "`compare` needs the ground truth: give `truth` (one array per Z_0 … Z_{L-1}), \
                 or omit `y` in [output] for teacher mode",
            ));
        }
        if opts.seeds > 1 {
            return Err(Error::invalid(
                "--seeds",
                "several draws need teacher mode (no `y` in [output]); on given data the \
                 simulation is deterministic and runs once",
            ));
        }
    }
    // The SE first: it is cheap, and its errors (e.g. mean damping) come before any simulation.
    let mut model = build_se_model(&config, &base, path, &opts.se)?;
    model.raw = raw.clone();
    let (se_iters, se_seconds) = model.run()?;
    let depth = model.network.depth();
    let d = config.d;
    let iterations = se_iters.len();

    let pb = Progress::new(observer, "simulations", opts.seeds as u64);
    let trial = |i: usize| -> Result<TrialCurves> {
        let mut cfg = config.clone();
        cfg.seed = config.seed.wrapping_add(i as u64);
        cfg.tolerance = None;
        let t0 = Instant::now();
        let problem = cfg.build(&base, path)?;
        let setup = t0.elapsed().as_secs_f64();
        let truth = problem.truth.as_deref().ok_or_else(|| {
            config_error(
                path,
                "`compare` needs the ground truth (`truth`, or teacher mode)",
            )
        })?;
        let solver = Solver::new(problem.solver.clone())?;
        let t1 = Instant::now();
        // The same start as `run` (the `[init]` random start when the configuration has one).
        let sol = problem.solve(&mut |_, _| Control::Continue)?;
        let solve = t1.elapsed().as_secs_f64();
        let norms: Vec<f64> = truth
            .iter()
            .map(|z| z.norm_l2().powi(2) / z.nrows() as f64)
            .collect();
        let curve = |hist: &[crate::solver::IterationRecord], normalize: bool| {
            hist.iter()
                .map(|rec| {
                    rec.variables
                        .iter()
                        .map(|v| {
                            let m = v.mse.unwrap_or(f64::NAN);
                            if normalize {
                                m / norms[v.variable]
                            } else {
                                m / d as f64
                            }
                        })
                        .collect()
                })
                .collect::<Vec<Vec<f64>>>()
        };
        let (emp, emp_seconds) = if opts.empirical_se {
            let t2 = Instant::now();
            let e = solver.run_empirical_se(
                &problem.network,
                truth,
                experiments::trial_seed(cfg.seed, 6, 5),
                &mut |_, _| Control::Continue,
            )?;
            (
                Some(curve(&e.history, false)),
                Some(t2.elapsed().as_secs_f64()),
            )
        } else {
            (None, None)
        };
        Ok(TrialCurves {
            mse: curve(&sol.history, false),
            nmse: curve(&sol.history, true),
            emp,
            setup,
            solve,
            emp_seconds,
        })
    };
    let outcomes: Vec<TrialOutcome<TrialCurves>> = experiments::run_trials(opts.seeds, &pb, trial);
    pb.finish()?;
    let trials: Vec<TrialRecord> = outcomes
        .iter()
        .map(|o| TrialRecord {
            trial: o.trial,
            seed: config.seed.wrapping_add(o.trial as u64),
            setup_seconds: o.value.as_ref().map(|v| v.setup),
            solve_seconds: o.value.as_ref().map(|v| v.solve),
            empirical_se_seconds: o.value.as_ref().and_then(|v| v.emp_seconds),
            error: o.error.clone(),
        })
        .collect();
    let ok: Vec<&TrialCurves> = outcomes.iter().filter_map(|o| o.value.as_ref()).collect();
    if ok.is_empty() {
        let first = outcomes
            .iter()
            .find_map(|o| o.error.clone())
            .unwrap_or_default();
        return Err(Error::invalid(
            "simulation",
            format!("every simulation failed; the first error: {first}"),
        ));
    }
    let mut rows = Vec::with_capacity(iterations * depth);
    for (k, se_it) in se_iters.iter().enumerate() {
        for l in 0..depth {
            let pick = |f: &dyn Fn(&TrialCurves) -> Option<f64>| {
                Spread::of(ok.iter().filter_map(|t| f(t)).collect())
            };
            let sim = pick(&|t| t.mse.get(k).map(|r| r[l]));
            let sim_n = pick(&|t| t.nmse.get(k).map(|r| r[l]));
            let emp = opts
                .empirical_se
                .then(|| pick(&|t| t.emp.as_ref().and_then(|e| e.get(k)).map(|r| r[l])));
            let v = &se_it.variables[l];
            rows.push(CompareRow {
                iteration: k,
                variable: l,
                mse_rel_gap: (v.se_mse_per_entry - sim.mean) / sim.mean,
                se_mse_per_entry: v.se_mse_per_entry,
                sim_mse_per_entry: sim,
                nmse_rel_gap: (v.se_nmse - sim_n.mean) / sim_n.mean,
                se_nmse: v.se_nmse,
                sim_nmse: sim_n,
                empirical_se_mse_per_entry: emp,
            });
        }
    }
    experiments::prepare_out_dir(out_dir)?;
    let record = CompareRecord {
        meta: Meta::new("compare", config.seed, &raw, start.elapsed().as_secs_f64())?,
        config_path: Some(config_path.display().to_string()),
        teacher,
        seeds: opts.seeds,
        failed: outcomes.len() - ok.len(),
        se: model.se.clone(),
        network: model.network_info(),
        se_setup_seconds: model.setup_seconds,
        se_seconds,
        trials,
        empirical_se: opts.empirical_se,
        rows,
        se_iterations: se_iters,
    };
    let mut files = Vec::new();
    let json = out_dir.join("compare.json");
    io::write_json(&json, &record)?;
    files.push(json);
    let csv = out_dir.join("compare.csv");
    write_compare_csv(&csv, &record)?;
    files.push(csv);
    let figure = FigureFile::new(out_dir.join("compare"), compare_figure(&record));
    files.extend(figure.files());
    Ok(CompareReport {
        out_dir: out_dir.to_path_buf(),
        files,
        record,
        figures: vec![figure],
    })
}

fn write_compare_csv(path: &Path, r: &CompareRecord) -> Result<()> {
    let mut header = vec![
        "iteration",
        "variable",
        "sim_mse_per_entry_mean",
        "sim_mse_per_entry_min",
        "sim_mse_per_entry_max",
        "sim_mse_per_entry_std_err",
        "se_mse_per_entry",
        "mse_rel_gap",
        "sim_nmse_mean",
        "sim_nmse_min",
        "sim_nmse_max",
        "sim_nmse_std_err",
        "se_nmse",
        "nmse_rel_gap",
    ];
    if r.empirical_se {
        header.push("empirical_se_mse_per_entry_mean");
    }
    let f = |x: f64| format!("{x:e}");
    let rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|row| {
            let mut v = vec![
                row.iteration.to_string(),
                row.variable.to_string(),
                f(row.sim_mse_per_entry.mean),
                f(row.sim_mse_per_entry.min),
                f(row.sim_mse_per_entry.max),
                f(row.sim_mse_per_entry.std_err),
                f(row.se_mse_per_entry),
                f(row.mse_rel_gap),
                f(row.sim_nmse.mean),
                f(row.sim_nmse.min),
                f(row.sim_nmse.max),
                f(row.sim_nmse.std_err),
                f(row.se_nmse),
                f(row.nmse_rel_gap),
            ];
            if let Some(e) = &row.empirical_se_mse_per_entry {
                v.push(f(e.mean));
            }
            v
        })
        .collect();
    experiments::write_csv_rows(path, &header, &rows)
}

/// The comparison figure: one panel per variable, MSE per entry against the iteration (log
/// scale); simulation solid with its across-trial range shaded, SE dashed.
pub fn compare_figure(r: &CompareRecord) -> Figure {
    let ok = r.seeds - r.failed;
    let panels = (0..r.network.depth)
        .map(|l| {
            let rows: Vec<&CompareRow> = r.rows.iter().filter(|x| x.variable == l).collect();
            let x: Vec<f64> = rows.iter().map(|x| x.iteration as f64).collect();
            let sim_label = if ok > 1 {
                format!("simulation (mean of {ok}; band: min-max)")
            } else {
                "simulation".to_string()
            };
            let mut series = vec![
                Series {
                    label: sim_label,
                    x: x.clone(),
                    y: rows.iter().map(|x| x.sim_mse_per_entry.mean).collect(),
                    band: (ok > 1).then(|| {
                        (
                            rows.iter().map(|x| x.sim_mse_per_entry.min).collect(),
                            rows.iter().map(|x| x.sim_mse_per_entry.max).collect(),
                        )
                    }),
                    color: Some(0),
                    ..Default::default()
                },
                Series {
                    label: "state evolution".into(),
                    x: x.clone(),
                    y: rows.iter().map(|x| x.se_mse_per_entry).collect(),
                    dashed: true,
                    color: Some(5),
                    ..Default::default()
                },
            ];
            if r.empirical_se {
                series.push(Series {
                    label: "empirical SE (reference diagnostic)".into(),
                    x,
                    y: rows
                        .iter()
                        .map(|x| {
                            x.empirical_se_mse_per_entry
                                .as_ref()
                                .map_or(f64::NAN, |e| e.mean)
                        })
                        .collect(),
                    dashed: true,
                    color: Some(2),
                    ..Default::default()
                });
            }
            Panel {
                title: format!("Z_{l} ({} x {})", r.network.rows[l], r.network.d),
                x_label: "iteration".into(),
                y_label: "MSE per entry".into(),
                series,
                log_y: true,
                ..Default::default()
            }
        })
        .collect();
    Figure::new(panels)
}

/// The comparison as a text table (one line per iteration and variable) with the timings.
pub fn compare_table(r: &CompareRecord) -> String {
    let ok = r.seeds - r.failed;
    let mut s = format!(
        "SE vs simulation ({}), MSE per entry and normalized MSE; gap = (SE - sim) / sim, \
         +-se = standard error of the simulated mean (relative)\n",
        if r.teacher {
            format!(
                "mean of {ok} teacher draw{}",
                if ok == 1 { "" } else { "s" }
            )
        } else {
            "given data".to_string()
        }
    );
    s += &format!(
        "{:>4} {:>4}  {:>11} {:>11} {:>8} {:>7}  {:>10} {:>10} {:>8} {:>7}",
        "iter", "var", "sim mse", "SE mse", "gap", "+-se", "sim nmse", "SE nmse", "gap", "+-se"
    );
    if r.empirical_se {
        s += &format!("  {:>11}", "emp-SE mse");
    }
    s += "\n";
    for row in &r.rows {
        // The gap's sampling uncertainty: the standard error of the simulated mean, relative.
        let pm = |x: &Spread| {
            if x.std_err.is_finite() {
                format!("{:.2}%", 100.0 * x.std_err / x.mean)
            } else {
                "-".into()
            }
        };
        s += &format!(
            "{:>4} {:>4}  {:>11.4e} {:>11.4e} {:>+7.2}% {:>7}  {:>10.4e} {:>10.4e} {:>+7.2}% {:>7}",
            row.iteration,
            format!("Z_{}", row.variable),
            row.sim_mse_per_entry.mean,
            row.se_mse_per_entry,
            100.0 * row.mse_rel_gap,
            pm(&row.sim_mse_per_entry),
            row.sim_nmse.mean,
            row.se_nmse,
            100.0 * row.nmse_rel_gap,
            pm(&row.sim_nmse),
        );
        if let Some(e) = &row.empirical_se_mse_per_entry {
            s += &format!("  {:>11.4e}", e.mean);
        }
        s += "\n";
    }
    let mean = |f: &dyn Fn(&TrialRecord) -> Option<f64>| {
        let v: Vec<f64> = r.trials.iter().filter_map(f).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    s += &format!(
        "state evolution: {:.3} s (+ {:.3} s setup); simulation: {:.3} s per draw (setup incl. \
         SVD {:.3} s, iterations {:.3} s)",
        r.se_seconds,
        r.se_setup_seconds,
        mean(&|t| Some(t.setup_seconds? + t.solve_seconds?)),
        mean(&|t| t.setup_seconds),
        mean(&|t| t.solve_seconds),
    );
    if r.failed > 0 {
        s += &format!("\n{} of {} simulations failed:", r.failed, r.seeds);
        for t in r.trials.iter().filter(|t| t.error.is_some()) {
            s += &format!(
                "\n  trial {}: {}",
                t.trial,
                t.error.as_deref().unwrap_or("")
            );
        }
    }
    s
}

/// Parses `general` / `identity` (the `--psi-mode` option).
pub fn parse_psi_mode(s: &str) -> Result<PsiMode> {
    match s.to_ascii_lowercase().as_str() {
        "general" => Ok(PsiMode::General),
        "identity" => Ok(PsiMode::Identity),
        other => Err(Error::invalid(
            "--psi-mode",
            format!("unknown mode `{other}`: expected `general` or `identity`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduced_law_keeps_the_ratio_and_the_law() {
        // 12000 x 20000 reduces to 3 x 5 scaled to at least LAW_SPECTRUM_POINTS rows.
        let s = gaussian_law_spec(12_000, 20_000, 1.0 / 20_000.0, 1, None, None).unwrap();
        assert_eq!(s.n_out * 5, s.n_in * 3);
        assert!(s.singular_values.len() >= LAW_SPECTRUM_POINTS);
        assert!(s.singular_values.len() < LAW_SPECTRUM_POINTS + 3);
        // Same law: E[s²] = variance · n_in = 1 per paired row in both discretisations.
        let full =
            crate::se::marchenko_pastur_singular_values(12_000, 20_000, 1.0 / 20_000.0).unwrap();
        let m2 = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64;
        assert!((m2(&full) - 1.0).abs() < 1e-3, "{}", m2(&full));
        assert!((m2(&s.singular_values) - 1.0).abs() < 1e-3);
        // Small layers keep every singular value.
        let small = gaussian_law_spec(60, 100, 0.01, 1, None, None).unwrap();
        assert_eq!(
            (small.n_out, small.n_in, small.singular_values.len()),
            (60, 100, 60)
        );
    }

    #[test]
    fn psi_mode_parses() {
        assert_eq!(parse_psi_mode("Identity").unwrap(), PsiMode::Identity);
        let e = parse_psi_mode("foo").unwrap_err().to_string();
        assert!(e.contains("`foo`") && e.contains("general"), "{e}");
    }
}
