//! State evolution vs simulation on two-layer network learning (spec §8.2.8, second part):
//! sigmoid, exact-Hessian MAP output estimator, `nin = 400`, `ntr = 2000`, `d = 4`, SNR 10 dB,
//! the Figure-2 initialisation and message policy, 10 iterations. The normalized test error
//! computed via `K` (eq. 17) from the simulation, averaged over 4 seeds, must match the SE's
//! prediction within 5%.
//!
//! Slow (≈ 20 s in release, minutes in the dev profile): ignored by default; run it with
//! `cargo test --release --test se_two_layer -- --ignored`.

use mlmatvamp::apps::two_layer::{Init, TwoLayerConfig};
use mlmatvamp::apps::two_layer_vamp::{state_evolution, VampConfig};
use mlmatvamp::rng_from_seed;
use mlmatvamp::se::SeConfig;

#[test]
#[ignore]
fn two_layer_se_matches_simulation() {
    let problem = TwoLayerConfig {
        nin: 400,
        ntr: 2000,
        nts: 1000,
        snr_db: 10.0,
        ..Default::default()
    };
    let vamp = VampConfig {
        iterations: 10,
        ..Default::default()
    };
    let init = Init::reference();
    let (mut sim, mut se) = (0.0, 0.0);
    let seeds = 4;
    for seed in 0..seeds {
        let trial = problem.sample(seed).unwrap();
        let start = init.draw(&trial, &mut rng_from_seed(1000 + seed)).unwrap();
        let run = vamp.run(&trial, &start).unwrap();
        let s = run.final_analytic_test_error();
        let pred = state_evolution(
            &vamp,
            &trial,
            &init,
            &start.message.precision,
            &SeConfig {
                n_mc: 40_000,
                seed,
                ..Default::default()
            },
        )
        .unwrap();
        let p = pred.last().unwrap().test_error;
        println!(
            "seed {seed}: simulation (via K) {s:.4}, SE {p:.4} ({:+.2}%)",
            100.0 * (p - s) / s
        );
        sim += s / seeds as f64;
        se += p / seeds as f64;
    }
    let gap = (se - sim) / sim;
    println!(
        "mean: simulation {sim:.4}, SE {se:.4} ({:+.2}%)",
        100.0 * gap
    );
    assert!(sim.is_finite() && sim > 1.0);
    assert!(gap.abs() < 0.05, "SE {se} vs simulation {sim}");
}
