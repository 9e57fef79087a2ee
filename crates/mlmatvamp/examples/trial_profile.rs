//! Runs one Figure-2 ML-Mat-VAMP trial (20 iterations, MAP output) many times, for profiling:
//! `cargo run --release -p mlmatvamp --example trial_profile -- [ntr] [reps]`.
//!
//! Each repetition times the trial with the thin SVD of `X_tr` (`VampConfig::run`, which builds
//! the network) and without it (`VampConfig::run_network` on a network built once, as the
//! authors' code is timed), one after the other; prints the best and mean of each, and the best
//! time of one evaluation of the per-iteration test MSE. With a third argument `profile`, runs
//! only the trial without the SVD (`reps` times), for `perf record`; with `lean`, times only
//! `VampConfig::run_network_lean` (the same iterations recording only the test MSE) and prints
//! the best, median, 90th percentile and mean; with
//! `lean-warm`, the same with the output's Newton rows warm-started (`MapOptions::warm_start`).
use mlmatvamp::apps::two_layer::{Init, TwoLayerConfig};
use mlmatvamp::apps::two_layer_vamp::{network, VampConfig};
use mlmatvamp::denoise::{MapOptions, TwoLayerEstimator};
use mlmatvamp::experiments::fig2::draw_trial;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .take(2)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let ntr = args.first().copied().unwrap_or(200);
    let reps = args.get(1).copied().unwrap_or(500).max(1);
    let problem = TwoLayerConfig {
        ntr,
        ..Default::default()
    };
    let (t, init) = draw_trial(&problem, &Init::reference(), 11)?;
    let cfg = VampConfig {
        analytic_every_iteration: false,
        ..Default::default()
    };
    let net = network(&t, cfg.estimator)?;
    if std::env::args().nth(3).as_deref() == Some("profile") {
        for _ in 0..reps {
            std::hint::black_box(cfg.run_network(&net, &t, &init)?);
        }
        return Ok(());
    }
    let mode = std::env::args().nth(3);
    if matches!(mode.as_deref(), Some("lean" | "lean-warm")) {
        // The lean run (`run_network_lean`, test MSE only) alone; with
        // `lean-warm`, the MAP output's Newton rows warm-started (`MapOptions::warm_start`).
        let warm = mode.as_deref() == Some("lean-warm");
        let cfg = VampConfig {
            estimator: match cfg.estimator {
                TwoLayerEstimator::Map(o) => TwoLayerEstimator::Map(MapOptions {
                    warm_start: warm,
                    ..o
                }),
                other => other,
            },
            ..cfg.clone()
        };
        let net = network(&t, cfg.estimator)?;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let s = Instant::now();
            std::hint::black_box(cfg.run_network_lean(&net, &t, &init)?);
            times.push(s.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize] * 1e3;
        println!(
            "ntr {ntr}: lean{} (test MSE only, without the SVD): best {:.3} ms, median {:.3} ms, \
             90th percentile {:.3} ms, mean {:.3} ms",
            if warm { ", warm-started rows" } else { "" },
            at(0.0),
            at(0.5),
            at(0.9),
            times.iter().sum::<f64>() * 1e3 / reps as f64
        );
        return Ok(());
    }
    // [with the SVD, without]: best and total seconds.
    let mut best = [f64::INFINITY; 2];
    let mut total = [0.0; 2];
    for _ in 0..reps {
        let s = Instant::now();
        std::hint::black_box(cfg.run(&t, &init)?);
        let e = s.elapsed().as_secs_f64();
        best[0] = best[0].min(e);
        total[0] += e;
        let s = Instant::now();
        std::hint::black_box(cfg.run_network(&net, &t, &init)?);
        let e = s.elapsed().as_secs_f64();
        best[1] = best[1].min(e);
        total[1] += e;
    }
    // One evaluation of the per-iteration test metric (normalized test MSE on `X_ts`).
    let mut best_mse = f64::INFINITY;
    for _ in 0..reps {
        let s = Instant::now();
        std::hint::black_box(t.test_mse(init.f1.as_ref())?);
        best_mse = best_mse.min(s.elapsed().as_secs_f64());
    }
    println!("test MSE alone: best {:.1} us", best_mse * 1e6);
    println!(
        "ntr {ntr}: best {:.3} ms, mean {:.3} ms; without the SVD: best {:.3} ms, mean {:.3} ms",
        best[0] * 1e3,
        total[0] * 1e3 / reps as f64,
        best[1] * 1e3,
        total[1] * 1e3 / reps as f64
    );
    Ok(())
}

// The allocator of the command-line tool (`mlmatvamp-cli`), so that the times are the tool's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
