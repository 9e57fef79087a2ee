//! The `mlmatvamp` command-line interface: a thin layer over the library.
//!
//! `mlmatvamp run CONFIG.toml --out DIR [--threads N] [--quiet]` runs ML-Mat-VAMP on the problem
//! the configuration describes (see `mlmatvamp::config` and the README) and writes the estimates,
//! their predicted covariances and `history.json` to `DIR`.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mlmatvamp::run::{run_config, RunEvent, RunOptions, RunReport};
use std::path::PathBuf;
use std::process::ExitCode;

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
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("setting up the thread pool")?;
    }
    match cli.command {
        Commands::Run(args) => run(&args, cli.quiet),
        Commands::Se(args) => se(&args, cli.quiet),
        Commands::Compare(args) => compare(&args, cli.quiet),
    }
}

fn se(args: &SeArgs, quiet: bool) -> Result<()> {
    let overrides = args.se.overrides()?;
    let report = mlmatvamp::predict::run_se(&args.config, &args.out, &overrides)
        .map_err(|e| anyhow!("{e}"))?;
    if !quiet {
        println!("{}", mlmatvamp::predict::se_table(&report.record));
        println!(
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
        quiet,
    };
    let report =
        mlmatvamp::predict::compare(&args.config, &args.out, &opts).map_err(|e| anyhow!("{e}"))?;
    if !quiet {
        println!("{}", mlmatvamp::predict::compare_table(&report.record));
        println!("outputs in {}", report.out_dir.display());
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
        println!("{}", summary(&report));
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
