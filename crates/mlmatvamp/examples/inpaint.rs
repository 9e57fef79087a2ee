//! Inpainting with a deep generative prior (paper §2.4, eq. 10; `L = 4`), one problem from end
//! to end: draw a generator, latent codes and a half-observed `Y`, impute the missing entries
//! with ML-Mat-VAMP (MMSE and MAP relu layer) and with the latent-code Adam baseline, and
//! compare with the state evolution's prediction.
//!
//! ```sh
//! cargo run --release --example inpaint [-- OBSERVED_FRACTION [SEED]]
//! ```

use mlmatvamp::apps::inpaint::{
    latent_adam, run_se, run_vamp, InpaintConfig, InpaintTrial, LatentAdamConfig, Weights,
};
use mlmatvamp::denoise::{Estimator, ReluMmseMethod};
use mlmatvamp::se::SeConfig;
use mlmatvamp::solver::SolverConfig;

fn main() -> mlmatvamp::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let observed: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0.5);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let cfg = InpaintConfig {
        observed,
        ..Default::default()
    };
    let trial = InpaintTrial::generate(&cfg, &Weights::Random, seed)?;
    println!(
        "Z_0 {} x {d} -> W_1 -> relu (+ noise) -> W_3 -> Y {} x {d}, {:.0}% of Y observed",
        cfg.n0,
        cfg.n3,
        100.0 * observed,
        d = cfg.d
    );
    let solver = SolverConfig {
        iterations: 15,
        ..Default::default()
    };
    for est in [Estimator::Mmse, Estimator::Map] {
        let c = run_vamp(&trial, est, &solver)?;
        println!(
            "ML-Mat-VAMP ({est:?}): missing-entry NMSE per iteration {:?} ({:.3} s)",
            c.missing_nmse
                .iter()
                .map(|x| format!("{x:.4}"))
                .collect::<Vec<_>>(),
            c.seconds.last().copied().unwrap_or(0.0)
        );
    }
    let se = SeConfig {
        iterations: 15,
        n_mc: 10_000,
        seed,
        ..SeConfig::from_solver(&solver)
    };
    let c = run_se(&trial, &se, ReluMmseMethod::Auto)?;
    println!(
        "state evolution (MMSE):       {:?}",
        c.missing_nmse
            .iter()
            .map(|x| format!("{x:.4}"))
            .collect::<Vec<_>>()
    );
    let a = latent_adam(&trial, &LatentAdamConfig::default(), seed)?;
    println!(
        "latent Adam-MAP baseline: missing-entry NMSE {:.4} after {} steps ({:.3} s)",
        a.missing_nmse.last().copied().unwrap_or(f64::NAN),
        a.steps.last().copied().unwrap_or(0),
        a.seconds.last().copied().unwrap_or(0.0)
    );
    Ok(())
}
