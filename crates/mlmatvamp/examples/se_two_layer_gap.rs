//! How the state evolution's prediction of the two-layer test error approaches the simulation
//! as the problem grows at a fixed ratio `ntr / nin = 5` (sigmoid, d = 4, SNR 10 dB, MAP with the
//! exact Hessian, 10 iterations, the Figure-2 initialisation and message policy).
//!
//! `cargo run --release --example se_two_layer_gap [SEEDS]`
use mlmatvamp::apps::two_layer::{Init, TwoLayerConfig};
use mlmatvamp::apps::two_layer_vamp::{state_evolution, VampConfig};
use mlmatvamp::rng_from_seed;
use mlmatvamp::se::SeConfig;

fn main() -> mlmatvamp::Result<()> {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    println!(
        "nin   ntr    seeds  simulation(K)  SE      gap(total)  gap(excess)  mean|gap| per seed"
    );
    for nin in [50usize, 100, 200, 400, 800] {
        let problem = TwoLayerConfig {
            nin,
            ntr: 5 * nin,
            nts: 1000,
            snr_db: 10.0,
            ..Default::default()
        };
        let vamp = VampConfig {
            iterations: 10,
            analytic_every_iteration: false,
            ..Default::default()
        };
        let init = Init::reference();
        let (mut sim, mut se, mut abs_gap) = (0.0, 0.0, 0.0);
        for seed in 0..seeds {
            let trial = problem.sample(seed)?;
            let start = init.draw(&trial, &mut rng_from_seed(1000 + seed))?;
            let s = vamp.run(&trial, &start)?.final_analytic_test_error();
            let p = state_evolution(
                &vamp,
                &trial,
                &init,
                &start.message.precision,
                &SeConfig {
                    n_mc: 40_000,
                    seed,
                    ..Default::default()
                },
            )?
            .last()
            .map_or(f64::NAN, |p| p.test_error);
            sim += s / seeds as f64;
            se += p / seeds as f64;
            abs_gap += ((p - s) / s).abs() / seeds as f64;
        }
        println!(
            "{nin:<5} {:<6} {seeds:<6} {sim:<14.4} {se:<7.4} {:<+11.2} {:<+12.2} {:.2}%",
            5 * nin,
            100.0 * (se - sim) / sim,
            100.0 * (se - sim) / (sim - 1.0),
            100.0 * abs_gap
        );
    }
    Ok(())
}
