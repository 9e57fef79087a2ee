//! Runs one Figure-2 ML-Mat-VAMP trial (20 iterations, MAP output) many times, for profiling:
//! `cargo run --release -p mlmatvamp --example trial_profile -- [ntr] [reps]`.
use mlmatvamp::apps::two_layer::{Init, TwoLayerConfig};
use mlmatvamp::apps::two_layer_vamp::VampConfig;
use mlmatvamp::experiments::fig2::draw_trial;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let ntr = args.first().copied().unwrap_or(200);
    let reps = args.get(1).copied().unwrap_or(500);
    let problem = TwoLayerConfig {
        ntr,
        ..Default::default()
    };
    let (t, init) = draw_trial(&problem, &Init::reference(), 11)?;
    let cfg = VampConfig {
        analytic_every_iteration: false,
        ..Default::default()
    };
    let mut best = f64::INFINITY;
    let start = Instant::now();
    for _ in 0..reps {
        let s = Instant::now();
        std::hint::black_box(cfg.run(&t, &init)?);
        best = best.min(s.elapsed().as_secs_f64());
    }
    println!(
        "ntr {ntr}: best {:.3} ms, mean {:.3} ms",
        best * 1e3,
        start.elapsed().as_secs_f64() * 1e3 / reps as f64
    );
    Ok(())
}
