//! The `mlmatvamp mixed` subcommand (a thin wrapper over `mlmatvamp::experiments::mixed`).

use anyhow::{anyhow, Result};
use clap::Args;
use mlmatvamp::experiments::mixed::{run as run_mixed, MixedExperimentConfig, METHODS};
use mlmatvamp_cli::say;
use std::path::PathBuf;

/// Options of `mlmatvamp mixed` (defaults: p = 100, d = 2, n/p = 2…10, 10 trials, SNR 20 dB,
/// 100 iterations, equal weights).
#[derive(Args, Debug)]
pub struct MixedArgs {
    /// Output directory (created if needed).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Number of features p.
    #[arg(long)]
    p: Option<usize>,
    /// Number of components d.
    #[arg(long)]
    d: Option<usize>,
    /// Samples per dimension n/p, comma separated (e.g. 2,4,6).
    #[arg(long, value_delimiter = ',')]
    ratios: Option<Vec<f64>>,
    /// Trials per n/p.
    #[arg(long)]
    trials: Option<usize>,
    /// SNR in dB.
    #[arg(long)]
    snr: Option<f64>,
    /// Component weights, comma separated, summing to 1 (default uniform).
    #[arg(long, value_delimiter = ',')]
    weights: Option<Vec<f64>>,
    /// ML-Mat-VAMP (and state evolution) iterations.
    #[arg(long)]
    iterations: Option<usize>,
    /// Precision of the random start's messages (gamma · I).
    #[arg(long)]
    start_precision: Option<f64>,
    /// Damping of the outgoing precisions in [0, 1) (0 = none; the SE uses the same).
    #[arg(long)]
    damp: Option<f64>,
    /// Eigenvalue floor of the outgoing precisions (default 1e-3).
    #[arg(long)]
    lam_min: Option<f64>,
    /// Monte-Carlo rows of the state evolution's output step.
    #[arg(long)]
    se_n_mc: Option<usize>,
    /// Base seed.
    #[arg(long)]
    seed: Option<u64>,
}

/// Runs the experiment and prints a short summary.
pub fn run(args: &MixedArgs, quiet: bool) -> Result<()> {
    let mut c = MixedExperimentConfig::default();
    macro_rules! set {
        ($field:ident, $arg:expr) => {
            if let Some(v) = $arg.clone() {
                c.$field = v;
            }
        };
    }
    set!(p, args.p);
    set!(d, args.d);
    set!(ratios, args.ratios);
    set!(trials, args.trials);
    set!(snr_db, args.snr);
    set!(iterations, args.iterations);
    set!(se_n_mc, args.se_n_mc);
    set!(seed, args.seed);
    if let Some(w) = &args.weights {
        c.weights = Some(w.clone());
    }
    if let Some(g) = args.start_precision {
        c.start.precision = g;
    }
    if let Some(x) = args.damp {
        c.policy.damp_precision = x;
    }
    if let Some(x) = args.lam_min {
        c.policy.lam_min = x;
    }
    let report = run_mixed(&c, &args.out, &mlmatvamp_cli::progress::Bar::new(quiet))
        .map_err(|e| anyhow!("{e}"))?;
    mlmatvamp_cli::render::save_figures(&report.figures).map_err(|e| anyhow!("{e}"))?;
    if !quiet {
        say!(
            "{:>5} {:>6}  {:>22} {:>22} {:>22} {:>8}",
            "n/p",
            "n",
            METHODS[0],
            METHODS[1],
            METHODS[2],
            "se"
        );
        for r in &report.ratios {
            let cell = |m: usize| {
                let s = &r.methods[m].error;
                format!(
                    "{:.4} [{:.3},{:.3}]{}",
                    s.median,
                    s.q25,
                    s.q75,
                    if s.failed > 0 {
                        format!(" {}F", s.failed)
                    } else {
                        String::new()
                    }
                )
            };
            let se =
                r.se.as_ref()
                    .and_then(|v| v.last().copied())
                    .map_or("failed".to_string(), |x| format!("{x:.4}"));
            say!(
                "{:>5} {:>6}  {:>22} {:>22} {:>22} {:>8}",
                r.ratio,
                r.n,
                cell(0),
                cell(1),
                cell(2),
                se
            );
        }
        say!(
            "{:.1} s; outputs in {}",
            report.meta.seconds,
            args.out.display()
        );
    }
    Ok(())
}
