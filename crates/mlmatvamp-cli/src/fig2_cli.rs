//! The binary's `fig2` and `two-layer` subcommands (part of `main.rs`, not of the library):
//! parse the options into [`Fig2Config`] / [`TwoLayerRunConfig`], call the library, print a
//! summary.

use anyhow::{anyhow, Result};
use clap::{Args, ValueEnum};
use mlmatvamp::apps::adam::Regularization;
use mlmatvamp::apps::two_layer::{Init, InitPrecision};
use mlmatvamp::denoise::{Activation, Estimator, HessianKind, MapOptions, TwoLayerEstimator};
use mlmatvamp::experiments::fig2::{
    run_fig2, run_two_layer, Fig2Config, Method, TwoLayerRunConfig,
};
use mlmatvamp_cli::say;
use std::path::PathBuf;

/// The activation `σ` (data and estimators).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ActivationArg {
    /// `1/(1 + e^{-v})` (the paper's Figure 2).
    Sigmoid,
    /// `max(v, 0)`.
    Relu,
    /// `v` (also `linear`).
    #[value(alias = "linear")]
    Identity,
}

impl From<ActivationArg> for Activation {
    fn from(a: ActivationArg) -> Self {
        match a {
            ActivationArg::Sigmoid => Activation::Sigmoid,
            ActivationArg::Relu => Activation::Relu,
            ActivationArg::Identity => Activation::Identity,
        }
    }
}

/// ML-Mat-VAMP's output estimator.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EstimatorArg {
    /// MAP (exact-Hessian Newton; relu: exact orthant enumeration), as in the paper.
    Map,
    /// MMSE (adaptive Gauss–Hermite; much slower at d = 4).
    Mmse,
}

/// The Hessian of the MAP output estimator (Newton steps and `Σ_i = H^{-1}`).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum HessianArg {
    /// The exact Hessian (spec §4.2: needed for the state evolution to match with sigmoid).
    Exact,
    /// The Gauss–Newton Hessian (the reference code's covariance; always positive definite).
    GaussNewton,
}

/// The initialisation shared by both methods (spec §7.2).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum InitArg {
    /// The reference's F1init = √0.25·F_1 + N(0, 0.75), with the honestly scaled precision of
    /// the first message.
    Reference,
    /// The same F1init with the reference code's overconfident precision (≈ 400 I).
    ReferenceOverconfident,
    /// F1init with i.i.d. N(0, 0.1²) entries, independent of F_1; an uninformative first message.
    Uninformed,
}

impl From<InitArg> for Init {
    fn from(a: InitArg) -> Self {
        match a {
            InitArg::Reference => Init::reference(),
            InitArg::ReferenceOverconfident => Init::Reference {
                wcorr: 0.25,
                precision: InitPrecision::Reference,
            },
            InitArg::Uninformed => Init::uninformed(),
        }
    }
}

/// ADAM's L2 weight on F_1 (spec §7.3).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AdamRegArg {
    /// The reference's yvar/(w1var·nin·d): the MAP weight only when ntr = nin·d.
    Reference,
    /// The exact MAP weight yvar/(w1var·ntr·nout), the problem ML-Mat-VAMP solves.
    Map,
    /// No regularisation.
    None,
}

/// Which methods to run.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MethodArg {
    /// ML-Mat-VAMP.
    MlMatVamp,
    /// The ADAM-MAP baseline.
    Adam,
    /// The state-evolution prediction of ML-Mat-VAMP's test error.
    Se,
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::MlMatVamp => Method::MlMatVamp,
            MethodArg::Adam => Method::Adam,
            MethodArg::Se => Method::Se,
        }
    }
}

/// The state evolution's backward-message model.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PsiModeArg {
    /// General `Ψ⁻` fitted by regression.
    General,
    /// The paper's `Ψ⁻ = I`.
    Identity,
}

fn apply_se(c: &CommonArgs, se: &mut mlmatvamp::se::SeConfig) {
    if let Some(n) = c.se_n_mc {
        se.n_mc = n;
    }
    se.psi_mode = match c.psi_mode {
        PsiModeArg::General => mlmatvamp::se::PsiMode::General,
        PsiModeArg::Identity => mlmatvamp::se::PsiMode::Identity,
    };
}

/// Options shared by `fig2` and `two-layer`.
#[derive(Args, Debug)]
pub struct CommonArgs {
    /// Output directory (created if needed).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Base seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// ML-Mat-VAMP iterations.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Activation σ used for the data and by both methods.
    #[arg(long, value_enum, default_value = "sigmoid")]
    activation: ActivationArg,
    /// ML-Mat-VAMP's output estimator.
    #[arg(long, value_enum, default_value = "map")]
    estimator: EstimatorArg,
    /// Hessian of the MAP output estimator.
    #[arg(long, value_enum, default_value = "exact")]
    hessian: HessianArg,
    /// Start the MAP output's Newton rows at the previous iteration's estimate (as the
    /// authors' code), not at the message mean: fewer Newton steps; where a row's objective
    /// is not convex it may reach another local minimiser (docs/speed.md).
    #[arg(long)]
    warm_start: bool,
    /// Initialisation of F_1 (both methods) and of ML-Mat-VAMP's first message.
    #[arg(long, value_enum, default_value = "reference")]
    init: InitArg,
    /// Methods to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["ml-mat-vamp", "adam", "se"])]
    methods: Vec<MethodArg>,
    /// Monte-Carlo rows of the state evolution's output step (default: 4000 for fig2, 20000
    /// for two-layer).
    #[arg(long, value_name = "ROWS")]
    se_n_mc: Option<usize>,
    /// Backward-message model of the state evolution (spec §6.3).
    #[arg(long, value_enum, default_value = "general")]
    psi_mode: PsiModeArg,
    /// Number of inputs nin.
    #[arg(long, default_value_t = 100)]
    nin: usize,
    /// Number of hidden units d.
    #[arg(long, default_value_t = 4)]
    hidden: usize,
    /// Smallest eigenvalue of every message precision (the reference code uses 1e-3, which
    /// makes ML-Mat-VAMP diverge in many trials at large ntr; see docs/fig2.md).
    #[arg(long, default_value_t = 0.3)]
    lam_min: f64,
    /// Largest eigenvalue of every message precision (`inf` for none).
    #[arg(long, default_value_t = 1e3)]
    lam_max: f64,
    /// Damping of ML-Mat-VAMP's messages in [0, 1) (precision and mean; 0 = none).
    #[arg(long, default_value_t = 0.0)]
    damping: f64,
    /// ADAM epochs.
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    /// ADAM's L2 weight on F_1.
    #[arg(long, value_enum, default_value = "reference")]
    adam_regularization: AdamRegArg,
}

/// `mlmatvamp fig2`.
#[derive(Args, Debug)]
pub struct Fig2Args {
    #[command(flatten)]
    common: CommonArgs,
    /// SNRs in dB (comma-separated); one panel each.
    #[arg(long, value_delimiter = ',', default_values = ["10", "15"])]
    snr: Vec<f64>,
    /// Numbers of training samples (comma-separated).
    #[arg(long, value_delimiter = ',', default_values = ["200", "400", "600", "800", "1000", "1500", "2000", "2500", "3000", "4000"])]
    ntr: Vec<usize>,
    /// Trials per (snr, ntr) point.
    #[arg(long, default_value_t = 10)]
    trials: usize,
}

/// `mlmatvamp two-layer`.
#[derive(Args, Debug)]
pub struct TwoLayerArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// SNR in dB.
    #[arg(long, default_value_t = 10.0)]
    snr: f64,
    /// Number of training samples.
    #[arg(long, default_value_t = 1000)]
    ntr: usize,
}

/// Applies the shared options to the library configurations.
fn apply_common(
    c: &CommonArgs,
    problem: &mut mlmatvamp::apps::two_layer::TwoLayerConfig,
    vamp: &mut mlmatvamp::apps::two_layer_vamp::VampConfig,
    adam: &mut mlmatvamp::apps::adam::AdamConfig,
) -> Vec<Method> {
    problem.activation = c.activation.into();
    problem.nin = c.nin;
    problem.d = c.hidden;
    vamp.iterations = c.iterations;
    let hessian = match c.hessian {
        HessianArg::Exact => HessianKind::Exact,
        HessianArg::GaussNewton => HessianKind::GaussNewton,
    };
    vamp.estimator = match c.estimator {
        EstimatorArg::Map => TwoLayerEstimator::Map(MapOptions {
            hessian,
            warm_start: c.warm_start,
            ..Default::default()
        }),
        EstimatorArg::Mmse => TwoLayerEstimator::from(Estimator::Mmse),
    };
    vamp.policy.lam_min = c.lam_min;
    vamp.policy.lam_max = c.lam_max;
    vamp.policy.damp_precision = c.damping;
    vamp.policy.damp_mean = c.damping;
    adam.epochs = c.epochs;
    adam.regularization = match c.adam_regularization {
        AdamRegArg::Reference => Regularization::Reference,
        AdamRegArg::Map => Regularization::Map,
        AdamRegArg::None => Regularization::None,
    };
    let mut methods: Vec<Method> = Vec::new();
    for m in &c.methods {
        let m = Method::from(*m);
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    methods
}

/// `mlmatvamp fig2`: runs the sweep, writes the files, prints one line per point.
pub fn fig2(args: &Fig2Args, quiet: bool) -> Result<()> {
    let mut cfg = Fig2Config {
        snr_db: args.snr.clone(),
        ntr: args.ntr.clone(),
        trials: args.trials,
        seed: args.common.seed,
        init: args.common.init.into(),
        ..Default::default()
    };
    cfg.methods = apply_common(&args.common, &mut cfg.problem, &mut cfg.vamp, &mut cfg.adam);
    apply_se(&args.common, &mut cfg.se);
    let (result, files) = run_fig2(
        &cfg,
        &args.common.out,
        &mlmatvamp_cli::progress::Bar::new(quiet),
    )
    .map_err(|e| anyhow!("{e}"))?;
    mlmatvamp_cli::render::save_figures(std::slice::from_ref(&files.figure))
        .map_err(|e| anyhow!("{e}"))?;
    if !quiet {
        say!("snr_db  ntr   method        median   q25      q75      failed");
        for p in &result.points {
            say!(
                "{:<6}  {:<5} {:<12}  {:<8.4} {:<8.4} {:<8.4} {}/{}",
                p.snr_db,
                p.ntr,
                p.method.name(),
                p.test_mse.median,
                p.test_mse.q25,
                p.test_mse.q75,
                p.test_mse.failed,
                p.trials.len()
            );
        }
        say!(
            "{:.1} s on {} threads; wrote {}, {}, {}, {}",
            result.meta.seconds,
            result.meta.threads,
            files.json.display(),
            files.csv.display(),
            files.png.display(),
            files.svg.display()
        );
    }
    Ok(())
}

/// `mlmatvamp two-layer`: one trial, its histories to `DIR/two_layer.json`.
pub fn two_layer(args: &TwoLayerArgs, quiet: bool) -> Result<()> {
    let mut cfg = TwoLayerRunConfig {
        seed: args.common.seed,
        init: args.common.init.into(),
        ..Default::default()
    };
    cfg.problem.ntr = args.ntr;
    cfg.problem.snr_db = args.snr;
    cfg.methods = apply_common(&args.common, &mut cfg.problem, &mut cfg.vamp, &mut cfg.adam);
    apply_se(&args.common, &mut cfg.se);
    let (report, path) = run_two_layer(&cfg, &args.common.out).map_err(|e| anyhow!("{e}"))?;
    if !quiet {
        say!(
            "yvar {:.4e}; normalized test MSE: initial {:.4}, true F_1 {:.4}",
            report.trial.yvar,
            report.trial.initial_test_mse,
            report.trial.oracle_test_mse
        );
        if let Some(v) = &report.ml_mat_vamp {
            let per_it: Vec<String> = v
                .iterations
                .iter()
                .map(|h| format!("{:.4}", h.test_mse))
                .collect();
            say!(
                "ML-Mat-VAMP: test MSE {:.4}, analytic (eq. 17) {:.4}, {:.2} s; per iteration: {}",
                v.test_mse,
                v.analytic_test_error,
                v.seconds,
                per_it.join(" ")
            );
        }
        if let Some(a) = &report.adam {
            say!(
                "ADAM: test MSE {:.4}, analytic (eq. 17) {:.4}, {:.2} s",
                a.test_mse,
                a.analytic_test_error,
                a.seconds
            );
        }
        if let Some(se) = &report.se {
            let per_it: Vec<String> = se
                .iterations
                .iter()
                .map(|h| format!("{:.4}", h.test_error))
                .collect();
            say!(
                "SE prediction: test error {:.4}, {:.2} s; per iteration: {}",
                se.test_error,
                se.seconds,
                per_it.join(" ")
            );
        }
        say!("wrote {}", path.display());
    }
    Ok(())
}
