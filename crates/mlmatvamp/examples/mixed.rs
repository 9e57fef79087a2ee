//! Mixed linear regression (paper eq. 6) with ML-Mat-VAMP, against alternating minimisation and
//! the state evolution, on one problem:
//!
//! ```sh
//! cargo run --release --example mixed [-- RATIO SEED]
//! ```
//!
//! `p = 100` features, `n = RATIO · p` samples (default 6), `d = 2` equally likely components,
//! SNR 20 dB. Prints the parameter error `min_P ‖F̂P − F‖_F/‖F‖_F` every 10 iterations of
//! ML-Mat-VAMP (MMSE output denoiser, from the asymmetric random start), the baseline's error and
//! time, and the state evolution's prediction.

use mlmatvamp::apps::mixed::{
    alternating_minimisation, parameter_error, AltMinConfig, MixedConfig, RandomStart,
};
use mlmatvamp::experiments::mixed::se_errors;
use mlmatvamp::prelude::*;
use std::time::Instant;

fn main() -> mlmatvamp::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let ratio: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(6.0);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let problem = MixedConfig {
        n: (ratio * 100.0).round() as usize,
        ..Default::default()
    };
    let trial = problem.sample(seed)?;
    println!(
        "mixed regression: p = {}, n = {}, d = {}, SNR {} dB (σ² = {:.3}), seed {seed}",
        problem.p,
        problem.n,
        problem.d,
        problem.snr_db,
        problem.noise_variance()
    );

    // ML-Mat-VAMP: Z_0 = F (prior N(0, I)), Z_1 = X F, mixed-regression output (MMSE).
    // The `mixed` command's policy: eigenvalue floor 1e-3, precision damping 0.2.
    let policy = MessagePolicy {
        lam_min: 1e-3,
        damp_precision: 0.2,
        ..Default::default()
    };
    let start = RandomStart {
        seed: seed + 1,
        ..Default::default()
    };
    let t = Instant::now();
    let net = trial.network(Estimator::Mmse)?;
    let solver = Solver::new(SolverConfig {
        iterations: 100,
        policy: policy.clone(),
        ..Default::default()
    })?;
    let mut errors = Vec::new();
    let solution = solver.run_from(&net, start.state(&net)?, None, &mut |_, state| {
        if let Some(b) = state.estimate_plus(0) {
            errors.push(parameter_error(b.mean.as_ref(), trial.f.as_ref()).unwrap_or(f64::NAN));
        }
        Control::Continue
    })?;
    let vamp_seconds = t.elapsed().as_secs_f64();
    for (k, e) in errors.iter().enumerate().filter(|(k, _)| k % 10 == 0) {
        println!("  ML-Mat-VAMP iteration {k:3}: parameter error {e:.4}");
    }
    let vamp = parameter_error(solution.estimates[0].as_ref(), trial.f.as_ref())?;
    println!("ML-Mat-VAMP (MMSE, 100 iterations): {vamp:.4} in {vamp_seconds:.3} s");

    // Alternating minimisation from the spectral start (Yi et al. 2014).
    let t = Instant::now();
    let am = alternating_minimisation(
        trial.x.as_ref(),
        trial.y.as_ref(),
        problem.d,
        &AltMinConfig {
            seed,
            ..Default::default()
        },
        |_, _| {},
    )?;
    println!(
        "alternating minimisation (spectral start, {} iterations): {:.4} in {:.3} s",
        am.history.len() - 1,
        parameter_error(am.f.as_ref(), trial.f.as_ref())?,
        t.elapsed().as_secs_f64()
    );

    // The state evolution (Marchenko–Pastur linear layer, Monte-Carlo output step).
    let se = se_errors(&problem, &start, 100, 20_000, seed, &policy)?;
    println!(
        "state evolution prediction after 100 iterations: {:.4}",
        se.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}
