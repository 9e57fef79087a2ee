//! The `mlmatvamp` command-line interface: a thin layer over the library.
//!
//! `mlmatvamp run CONFIG.toml --out DIR [--threads N] [--quiet]` runs ML-Mat-VAMP on the problem
//! the configuration describes (see `mlmatvamp::config` and docs/run.md) and writes the estimates,
//! their predicted covariances and `history.json` to `DIR`.
//!
//! `mlmatvamp fig2 --out DIR` reproduces the paper's Figure 2 and `mlmatvamp two-layer --out DIR`
//! runs one of its trials with the full history (see `fig2_cli.rs`).

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mlmatvamp::observe::Control;
use mlmatvamp::run::{run_config, RunEvent, RunOptions, RunReport};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

mod fig2_cli;
use fig2_cli::{Fig2Args, TwoLayerArgs};
use mlmatvamp_cli::{progress, render, say};
mod mixed_cli;
mod sketch_cli;

/// The tool's allocator: mimalloc (docs/speed.md, "6 December, late evening"); the library leaves
/// the choice to the program that links it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Multi-Layer Matrix VAMP (Pandit et al., NeurIPS 2020) and its state evolution.
#[derive(Parser, Debug)]
#[command(name = "mlmatvamp", version, about, long_about = None)]
struct Cli {
    /// Number of worker threads (default: one per core).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    /// No progress display and no summary.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Run ML-Mat-VAMP on the problem described by a TOML configuration.
    Run(RunArgs),
    /// Reproduce the paper's Figure 2 (two-layer network learning: ML-Mat-VAMP vs ADAM).
    Fig2(Fig2Args),
    /// One two-layer learning trial with its per-iteration history (JSON).
    TwoLayer(TwoLayerArgs),
    /// Multi-task regression (MMV, paper §2.1): NMSE and time of ML-Mat-VAMP (MMSE and
    /// group-lasso MAP), FISTA and the SE over a sweep of the sampling ratio.
    Mmv(MmvArgs),
    /// Mixed linear regression: parameter error against n/p for ML-Mat-VAMP, alternating
    /// minimisation and the state evolution (mixed.json, mixed.csv, mixed.png/.svg).
    Mixed(mixed_cli::MixedArgs),
    /// Inpainting with a deep generative prior (paper §2.4, eq. 10, L = 4): fraction of entries
    /// observed against the NMSE of the missing entries for ML-Mat-VAMP (MMSE, MAP), the
    /// latent-code Adam-MAP baseline and the state evolution.
    Inpaint(InpaintArgs),
    /// Sketch a dataset in one pass (paper §2.2): sketch.npy, frequencies.npy, sketch.json; or
    /// merge two sketches of disjoint shards (--merge A B).
    Sketch(sketch_cli::SketchArgs),
    /// Recover K centroids from a sketch with ML-Mat-VAMP: centroids.npy, weights.npy,
    /// cluster.json.
    Cluster(sketch_cli::ClusterArgs),
    /// Sketched clustering on Gaussian mixtures and iris: relative SSE against M/(Kp) and time
    /// against T, ML-Mat-VAMP vs k-means++ (sketched_clustering.json, .csv, .png/.svg).
    SketchedClustering(sketch_cli::SketchedClusteringArgs),
    /// Predict the algorithm's error per iteration with the state evolution (writes se.json).
    Se(SeArgs),
    /// Run the algorithm and the state evolution on the same model and compare them.
    Compare(CompareArgs),
}

/// Options of the state evolution (override the configuration's `[se]` table).
#[derive(Args, Debug)]
struct SeFlags {
    /// Monte-Carlo rows per sampled SE step (default: `[se] n_mc`, else 20000).
    #[arg(long, value_name = "N")]
    n_mc: Option<usize>,
    /// Backward-message model, `general` or `identity` (default: `[se] psi_mode`, else general).
    #[arg(long, value_name = "MODE")]
    psi_mode: Option<String>,
    /// Seed of the SE's Monte-Carlo draws (default: `[se] seed`, else the configuration's seed).
    #[arg(long, value_name = "SEED")]
    seed: Option<u64>,
}

impl SeFlags {
    fn overrides(&self) -> Result<mlmatvamp::predict::SeOverrides> {
        let psi_mode = match &self.psi_mode {
            Some(s) => Some(mlmatvamp::predict::parse_psi_mode(s).map_err(|e| anyhow!("{e}"))?),
            None => None,
        };
        Ok(mlmatvamp::predict::SeOverrides {
            n_mc: self.n_mc,
            psi_mode,
            seed: self.seed,
        })
    }
}

#[derive(Args, Debug)]
struct SeArgs {
    /// The TOML configuration (as for `run`; arrays may be given by their law, `y` may be omitted).
    config: PathBuf,
    /// Output directory (created if needed): se.json.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    se: SeFlags,
}

#[derive(Args, Debug)]
struct CompareArgs {
    /// The TOML configuration (teacher mode without `y`; with data it needs `truth`).
    config: PathBuf,
    /// Output directory (created if needed): compare.json, compare.csv, compare.png, compare.svg.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Number of teacher draws to average (trial i uses the configuration seed + i).
    #[arg(long, value_name = "K", default_value_t = 1)]
    seeds: usize,
    /// Also run the reference code's "empirical SE" (spec §6.5), a diagnostic, not the SE.
    #[arg(long)]
    empirical_se: bool,
    #[command(flatten)]
    se: SeFlags,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The TOML configuration (file names in it are relative to its directory).
    config: PathBuf,
    /// Output directory (created if needed): z_l.npy, cov_l.npy, history.json.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A fixed task width for faer's parallel kernels (not the thread count), so that results are
    // bit-identical whatever `--threads` is (the engine's own products and SVDs already use it).
    mlmatvamp::use_deterministic_parallelism();
    mlmatvamp_cli::tune_allocator();
    let outcome = dispatch(cli)
        .and_then(|()| mlmatvamp_cli::stdout_outcome().context("writing to standard output"));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not `eprintln!`, which panics when standard error is a closed pipe.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let limit = 4 * cores;
        if n == 0 || n > limit {
            bail!(
                "--threads must be at least 1 and at most {limit} (4 per core on this machine with {cores} cores), got {n}"
            );
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("setting up the thread pool")?;
    }
    match cli.command {
        Commands::Run(args) => run(&args, cli.quiet),
        Commands::Fig2(args) => fig2_cli::fig2(&args, cli.quiet),
        Commands::TwoLayer(args) => fig2_cli::two_layer(&args, cli.quiet),
        Commands::Mmv(args) => mmv(&args, cli.quiet),
        Commands::Mixed(args) => mixed_cli::run(&args, cli.quiet),
        Commands::Sketch(args) => sketch_cli::sketch(&args, cli.quiet),
        Commands::Cluster(args) => sketch_cli::cluster(&args, cli.quiet),
        Commands::SketchedClustering(args) => sketch_cli::sketched_clustering(&args, cli.quiet),
        Commands::Se(args) => se(&args, cli.quiet),
        Commands::Compare(args) => compare(&args, cli.quiet),
        Commands::Inpaint(args) => inpaint(&args, cli.quiet),
    }
}

fn se(args: &SeArgs, quiet: bool) -> Result<()> {
    let overrides = args.se.overrides()?;
    let report = mlmatvamp::predict::run_se(&args.config, &args.out, &overrides)
        .map_err(|e| anyhow!("{e}"))?;
    if !quiet {
        say!("{}", mlmatvamp::predict::se_table(&report.record));
        say!(
            "predictions in {}",
            report.out_dir.join("se.json").display()
        );
    }
    Ok(())
}

fn compare(args: &CompareArgs, quiet: bool) -> Result<()> {
    let opts = mlmatvamp::predict::CompareOptions {
        seeds: args.seeds,
        empirical_se: args.empirical_se,
        se: args.se.overrides()?,
    };
    let report =
        mlmatvamp::predict::compare(&args.config, &args.out, &opts, &progress::Bar::new(quiet))
            .map_err(|e| anyhow!("{e}"))?;
    render::save_figures(&report.figures).map_err(|e| anyhow!("{e}"))?;
    if !quiet {
        say!("{}", mlmatvamp::predict::compare_table(&report.record));
        say!("outputs in {}", report.out_dir.display());
    }
    Ok(())
}

fn run(args: &RunArgs, quiet: bool) -> Result<()> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    let style = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    let mut observer = |event: RunEvent<'_>| match event {
        RunEvent::Loaded(problem) => {
            bar.set_length(problem.solver.iterations as u64);
            bar.set_message("iterating");
            Control::Continue
        }
        RunEvent::Iteration(rec) => {
            bar.set_position(rec.iteration as u64 + 1);
            if let Some(v) = rec.variables.first() {
                let mut msg = format!("Z_0 predicted MSE {:.3e}", v.predicted_mse);
                if let Some(m) = v.mse {
                    msg += &format!(", empirical {m:.3e}");
                }
                bar.set_message(msg);
            }
            Control::Continue
        }
    };
    let result = run_config(
        &args.config,
        &args.out,
        RunOptions {
            observer: Some(&mut observer),
        },
    );
    bar.finish_and_clear();
    // The library's messages are complete (they name the key, file and shape); print them as
    // they are rather than as an error chain, which would repeat the I/O cause.
    let report = result.map_err(|e| anyhow!("{e}"))?;
    if !quiet {
        say!("{}", summary(&report));
    }
    Ok(())
}

fn summary(r: &RunReport) -> String {
    let vars: Vec<String> = r
        .variables
        .iter()
        .map(|v| match v.mse {
            Some(m) => format!(
                "Z_{}: predicted MSE {:.3e}, empirical {:.3e}",
                v.variable, v.predicted_mse, m
            ),
            None => format!("Z_{}: predicted MSE {:.3e}", v.variable, v.predicted_mse),
        })
        .collect();
    format!(
        "{} iterations{} in {:.2} s; {}; outputs in {}",
        r.iterations,
        if r.converged { " (converged)" } else { "" },
        r.total_seconds,
        vars.join("; "),
        r.out_dir.display()
    )
}

#[derive(Args, Debug)]
struct MmvArgs {
    /// Output directory (created if needed): mmv.json, mmv.csv, mmv.png, mmv.svg.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A TOML file with any of the sweep options (mlmatvamp::experiments::mmv::MmvSweepConfig);
    /// the flags below override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Trials per sampling ratio (default 4).
    #[arg(long)]
    trials: Option<usize>,
    /// Rows n_0 of F (default 500).
    #[arg(long)]
    n0: Option<usize>,
    /// Sampling ratios n_1/n_0, comma-separated (default 0.3,0.4,...,1.0).
    #[arg(long, value_delimiter = ',')]
    ratios: Option<Vec<f64>>,
    /// A fixed group-lasso lambda (default: tuned per ratio by the state evolution).
    #[arg(long)]
    lambda: Option<f64>,
    /// Base seed (default 0).
    #[arg(long)]
    seed: Option<u64>,
}

fn mmv(args: &MmvArgs, quiet: bool) -> Result<()> {
    use mlmatvamp::experiments::mmv::{run, summary_table, MmvSweepConfig};
    let mut cfg = match &args.config {
        Some(path) => MmvSweepConfig::load(path).map_err(|e| anyhow!("{e}"))?,
        None => MmvSweepConfig::default(),
    };
    if let Some(t) = args.trials {
        cfg.trials = t;
    }
    if let Some(n) = args.n0 {
        cfg.problem.n0 = n;
    }
    if let Some(r) = &args.ratios {
        cfg.ratios = r.clone();
    }
    cfg.lambda = args.lambda.or(cfg.lambda);
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    let report = run(&cfg, &args.out, &progress::Bar::new(quiet)).map_err(|e| anyhow!("{e}"))?;
    render::save_figures(&report.figures).map_err(|e| anyhow!("{e}"))?;
    if !quiet {
        say!("{}", summary_table(&report));
    }
    Ok(())
}

#[derive(Args, Debug)]
struct InpaintArgs {
    /// Output directory (created if needed): inpaint.json, inpaint.csv, inpaint.png, inpaint.svg.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Observed fractions, comma-separated (default 0.1,0.2,…,0.9).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    fractions: Option<Vec<f64>>,
    /// Trials per fraction.
    #[arg(long, default_value_t = 3)]
    trials: usize,
    /// Base seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// ML-Mat-VAMP iterations (and SE iterations).
    #[arg(long, default_value_t = 15)]
    iterations: usize,
    /// Number of columns d (signals), at most 6.
    #[arg(long, default_value_t = 3)]
    d: usize,
    /// Latent length n_0.
    #[arg(long, default_value_t = 100)]
    n0: usize,
    /// Hidden width n_1.
    #[arg(long, default_value_t = 200)]
    n1: usize,
    /// Signal length n_3.
    #[arg(long, default_value_t = 400)]
    n3: usize,
    /// Variance of the relu layer's noise (0: noiseless relu).
    #[arg(long, default_value_t = 0.01)]
    hidden_noise: f64,
    /// Output noise variance (correlation 0.5^|i-j| across columns).
    #[arg(long, default_value_t = 0.01)]
    output_noise: f64,
    /// Relu-layer estimators for ML-Mat-VAMP, comma-separated: mmse, map.
    #[arg(long, value_delimiter = ',', default_value = "mmse,map")]
    estimators: Vec<String>,
    /// Adam steps of the latent-code baseline (0: no baseline).
    #[arg(long, default_value_t = 1000)]
    adam_steps: usize,
    /// State-evolution Monte-Carlo rows (0: no SE).
    #[arg(long, default_value_t = 2000)]
    se_rows: usize,
    /// Generator weight W_1 (n_1 x n_0, .npy or .csv); with --w3. Default: random per trial.
    #[arg(long, value_name = "FILE", requires = "w3")]
    w1: Option<PathBuf>,
    /// Generator weight W_3 (n_3 x n_1, .npy or .csv); with --w1.
    #[arg(long, value_name = "FILE", requires = "w1")]
    w3: Option<PathBuf>,
}

fn inpaint(args: &InpaintArgs, quiet: bool) -> Result<()> {
    use mlmatvamp::apps::inpaint::{InpaintConfig, LatentAdamConfig};
    use mlmatvamp::denoise::Estimator;
    use mlmatvamp::experiments::inpaint::InpaintExperiment;
    let defaults = InpaintExperiment::default();
    let estimators = args
        .estimators
        .iter()
        .map(|e| match e.trim() {
            "mmse" => Ok(Estimator::Mmse),
            "map" => Ok(Estimator::Map),
            other => Err(anyhow!(
                "unknown estimator `{other}` in --estimators (expected mmse, map)"
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    if args.hidden_noise < 0.0 {
        bail!(
            "--hidden-noise must be non-negative (0 = noiseless), got {}",
            args.hidden_noise
        );
    }
    let exp = InpaintExperiment {
        problem: InpaintConfig {
            d: args.d,
            n0: args.n0,
            n1: args.n1,
            n3: args.n3,
            hidden_noise_variance: (args.hidden_noise > 0.0).then_some(args.hidden_noise),
            output_noise_variance: args.output_noise,
            ..Default::default()
        },
        fractions: args.fractions.clone().unwrap_or(defaults.fractions.clone()),
        trials: args.trials,
        seed: args.seed,
        iterations: args.iterations,
        estimators,
        adam: (args.adam_steps > 0).then(|| LatentAdamConfig {
            steps: args.adam_steps,
            ..Default::default()
        }),
        se_rows: (args.se_rows > 0).then_some(args.se_rows),
        weights: args.w1.clone().zip(args.w3.clone()),
        ..defaults
    };
    let report = exp
        .run(&args.out, &progress::Bar::new(quiet))
        .map_err(|e| anyhow!("{e}"))?;
    render::save_figures(&report.figures).map_err(|e| anyhow!("{e}"))?;
    if !quiet {
        say!("NMSE of the missing entries (median over trials); seconds per trial in brackets:");
        for p in &report.points {
            let cols: Vec<String> = p
                .methods
                .iter()
                .map(|m| {
                    format!(
                        "{} {:.4} [{:.2} s]",
                        m.method, m.missing_nmse.median, m.seconds.median
                    )
                })
                .collect();
            say!("  observed {:.2}: {}", p.observed, cols.join(", "));
        }
        say!(
            "{:.1} s in total; outputs in {}",
            report.meta.seconds,
            args.out.display()
        );
    }
    Ok(())
}
