//! Inpainting with a deep generative prior (paper §2.4, `L = 4`): the state evolution of
//! ML-Mat-VAMP with an MMSE relu layer (spec §6.2) against simulation, per iteration, for the
//! NMSE of the latent codes `Z_0` and the missing-entry NMSE of `Z_3`.

use mlmatvamp::apps::inpaint::{
    pattern_frequencies, run_se, run_vamp, InpaintConfig, InpaintTrial, Weights,
};
use mlmatvamp::denoise::{Estimator, ReluMmseMethod};
use mlmatvamp::prelude::*;
use mlmatvamp::se::{SeConfig, StateEvolution};

/// Per-iteration agreement between the SE and the mean over seeds of the simulation.
///
/// Both sides are normalised by the *population* second moments of the SE (the prior's
/// `tr Σ_0` for `Z_0`; `Σ_p π_p Σ_{j∉O_p} [K_aa]_jj` of `Z_3` for the missing entries), so that
/// what is compared is the error itself: the simulation's own NMSE divides by the drawn
/// `‖Z⁰‖²`, whose fluctuation over a few seeds (about 1.5% for 8 seeds at `n_0 = 500`) would
/// otherwise enter the comparison. Returns (sim Z_0, SE Z_0, sim missing, SE missing).
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
    // The SE on the first trial's network (its actual singular values).
    let trial = InpaintTrial::generate(&cfg, &Weights::Random, 100).unwrap();
    let se = SeConfig {
        iterations,
        n_mc,
        seed: 7,
        ..SeConfig::from_solver(&solver)
    };
    let curve = run_se(&trial, &se, ReluMmseMethod::Auto).unwrap();
    let net = trial
        .network_with(Estimator::Mmse, ReluMmseMethod::Auto)
        .unwrap();
    let (iters, _) = StateEvolution::new(se).unwrap().run(&net, None).unwrap();
    let patterns = pattern_frequencies(trial.mask.as_ref());
    let d = cfg.d;
    // Population second moments.
    let z0_moment = d as f64; // tr Σ_0 (unit diagonal)
    let missing_moment: Vec<f64> = iters
        .iter()
        .map(|it| {
            let k = &it.variables[3].k_plus;
            patterns
                .iter()
                .map(|(obs, pi)| pi * (0..d).filter(|&j| !obs[j]).map(|j| k[j][j]).sum::<f64>())
                .sum()
        })
        .collect();
    // Simulation: error per row normalised by the population moments, mean over seeds.
    let mut sim_z0 = vec![0.0; iterations];
    let mut sim_miss = vec![0.0; iterations];
    for s in 0..seeds {
        let trial = InpaintTrial::generate(&cfg, &Weights::Random, 100 + s).unwrap();
        let c = run_vamp(&trial, Estimator::Mmse, &solver).unwrap();
        let z0 = &trial.truth[0];
        let z3 = &trial.truth[3];
        let n0f = z0.nrows() as f64;
        let n3f = z3.nrows() as f64;
        let z0_norm = z0.squared_norm_l2();
        let mut miss_norm = 0.0;
        for i in 0..z3.nrows() {
            for j in 0..d {
                if trial.mask[(i, j)] == 0.0 {
                    miss_norm += z3[(i, j)] * z3[(i, j)];
                }
            }
        }
        for k in 0..iterations {
            sim_z0[k] += c.z0_nmse[k] * z0_norm / n0f / z0_moment / seeds as f64;
            sim_miss[k] += c.missing_nmse[k] * miss_norm / n3f / missing_moment[k] / seeds as f64;
        }
    }
    (sim_z0, curve.z0_nmse, sim_miss, curve.missing_nmse)
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
/// the entries observed, mean of 8 seeds, SE with `2·10^4` Monte-Carlo rows, errors normalised
/// by the population moments (see [`compare`]). Measured: largest gap 2.5% for `Z_0`, 2.6% for
/// the missing entries (at iteration 0), most below 2%. Slow (about 75 s on 2 cores in release):
/// `cargo test --release --test inpaint_se -- --ignored`.
#[test]
#[ignore]
fn se_matches_simulation_at_moderate_size() {
    let (s0, e0, s3, e3) = compare(500, 8, 20_000, 10);
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
