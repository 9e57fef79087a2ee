//! Inpainting with a deep generative prior (paper §2.4, `L = 4`): the state evolution of
//! ML-Mat-VAMP with an MMSE relu layer (spec §6.2) against simulation, per iteration, for the
//! NMSE of the latent codes `Z_0` and the missing-entry NMSE of `Z_3`.

use mlmatvamp::apps::inpaint::{run_se, run_vamp, InpaintConfig, InpaintTrial, Weights};
use mlmatvamp::denoise::{Estimator, ReluMmseMethod};
use mlmatvamp::prelude::*;
use mlmatvamp::se::SeConfig;

/// Per-iteration agreement between the SE and the mean over seeds of the simulation.
fn compare(
    n0: usize,
    seeds: u64,
    n_mc: usize,
    iterations: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let cfg = InpaintConfig {
        n0,
        n1: 2 * n0,
        n3: 4 * n0,
        observed: 0.5,
        ..Default::default()
    };
    let solver = SolverConfig {
        iterations,
        ..Default::default()
    };
    let mut sim_z0 = vec![0.0; iterations];
    let mut sim_miss = vec![0.0; iterations];
    for s in 0..seeds {
        let trial = InpaintTrial::generate(&cfg, &Weights::Random, 100 + s).unwrap();
        let c = run_vamp(&trial, Estimator::Mmse, &solver).unwrap();
        for k in 0..iterations {
            sim_z0[k] += c.z0_nmse[k] / seeds as f64;
            sim_miss[k] += c.missing_nmse[k] / seeds as f64;
        }
    }
    let trial = InpaintTrial::generate(&cfg, &Weights::Random, 100).unwrap();
    let se = SeConfig {
        iterations,
        n_mc,
        seed: 7,
        ..SeConfig::from_solver(&solver)
    };
    let c = run_se(&trial, &se, ReluMmseMethod::Auto).unwrap();
    (sim_z0, c.z0_nmse, sim_miss, c.missing_nmse)
}

fn report(name: &str, sim: &[f64], se: &[f64]) -> f64 {
    let gaps: Vec<f64> = sim.iter().zip(se).map(|(a, b)| (b - a) / a).collect();
    println!(
        "{name}: simulation {:?}\n{:>w$}  SE         {:?}\n{:>w$}  gap        {:?}",
        sim.iter().map(|x| format!("{x:.4}")).collect::<Vec<_>>(),
        "",
        se.iter().map(|x| format!("{x:.4}")).collect::<Vec<_>>(),
        "",
        gaps.iter()
            .map(|x| format!("{:+.1}%", 100.0 * x))
            .collect::<Vec<_>>(),
        w = name.len()
    );
    gaps.iter().fold(0.0, |m, g| m.max(g.abs()))
}

/// SE vs simulation at moderate size: `n_0 = 500`, `n_1 = 1000`, `n_3 = 2000`, `d = 3`, half
/// the entries observed, mean of 4 seeds, SE with `2·10^4` Monte-Carlo rows. Slow (about a
/// minute of CPU in release): run with `cargo test --release --test inpaint_se -- --ignored`.
#[test]
#[ignore]
fn se_matches_simulation_at_moderate_size() {
    let (s0, e0, s3, e3) = compare(500, 4, 20_000, 10);
    let g0 = report("NMSE of Z_0", &s0, &e0);
    let g3 = report("missing-entry NMSE of Z_3", &s3, &e3);
    assert!(g0 < 0.03 && g3 < 0.03, "worst gaps {g0:.3} {g3:.3}");
}

/// The same at a small size (fast). Finite-size effects and the spread of 4 seeds are larger
/// there (at `n_0 = 200` the missing-entry NMSE differs by up to ≈13% from the SE, already at
/// iteration 0 by ≈7%), so this only checks that the SE tracks the simulation: within 20% per
/// iteration. The 3% agreement is the slow test above.

#[test]
fn se_tracks_simulation_at_small_size() {
    let (s0, e0, s3, e3) = compare(200, 4, 2000, 5);
    let g0 = report("NMSE of Z_0", &s0, &e0);
    let g3 = report("missing-entry NMSE of Z_3", &s3, &e3);
    // Not vacuous: the error falls by a large factor over the iterations.
    assert!(s3[4] < 0.3 * s3[0] && e3[4] < 0.3 * e3[0]);
    assert!(g0 < 0.2 && g3 < 0.2, "worst gaps {g0:.3} {g3:.3}");
}
