//! Per-iteration time of vampyre's sparse problem (`side_by_side vamp-sparse`) with the fused
//! pass and the lazy estimates of `Z_1` on and off, alternating: `cargo run --release -p
//! mlmatvamp --example fused_profile -- [iterations] [rounds]`. Prints the median wall time per
//! iteration and the process CPU time of each schedule: `ordinary` (neither), `fused` (the
//! fused pass over `V`) and `fused+lazy` (also no pass over `U`, the default).
//! `FUSED_ONLY=0|1|2` runs one of them only; `HUGE_PAGES=0` keeps the factors on ordinary
//! pages (`mlmatvamp::pages`), `HUGE_PAGES=ab` alternates the default schedule on the layer with
//! and without huge pages.
use faer::Mat;
use mlmatvamp::denoise::linear::LinearLayer;
use mlmatvamp::denoise::output::AwgnOutput;
use mlmatvamp::denoise::sparse::BernoulliGaussianPrior;
use mlmatvamp::network::Network;
use mlmatvamp::rng::standard_normal;
use mlmatvamp::solver::{Solver, SolverConfig};
use mlmatvamp::spd::{DMat, Spd};
use std::sync::Arc;
use std::time::Instant;

fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let tick = 100.0;
    let u: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    let k: f64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    (u + k) / tick
}

fn main() -> mlmatvamp::Result<()> {
    mlmatvamp::use_deterministic_parallelism();
    // `HUGE_PAGES=0`: the layer's factors on ordinary pages; `HUGE_PAGES=ab`: the default
    // schedule on two copies of the layer, one on huge pages and one not, alternating (this
    // example keeps the system allocator, as the Python package does).
    let huge = std::env::var("HUGE_PAGES").ok();
    if huge.as_deref() == Some("0") {
        mlmatvamp::pages::use_huge_pages(false);
    }
    let args: Vec<String> = std::env::args().collect();
    let iters: usize = args.get(1).and_then(|x| x.parse().ok()).unwrap_or(30);
    let rounds: usize = args.get(2).and_then(|x| x.parse().ok()).unwrap_or(5);
    let (nz, ny) = (4096, 2048);
    let mut rng = mlmatvamp::rng_from_seed(7);
    let a = standard_normal(ny, nz, &mut rng) * faer::Scale(1.0 / (nz as f64).sqrt());
    let layer = Arc::new(LinearLayer::new(a.as_ref(), None, None, 1)?);
    let prior = Arc::new(BernoulliGaussianPrior::new(
        0.1,
        vec![0.0],
        DMat::identity(1, 1),
    )?);
    let z = Mat::from_fn(nz, 1, |i, _| if i % 10 == 0 { 1.0 } else { 0.0 });
    let y0 = &a * &z;
    let wvar = 1e-3 * y0.norm_l2().powi(2) / ny as f64;
    let y = &y0 + standard_normal(ny, 1, &mut rng) * faer::Scale(wvar.sqrt());
    let out = Arc::new(AwgnOutput::new(
        y,
        Spd::new("noise", DMat::from_element(1, 1, 1.0 / wvar), Some(1))?,
        None,
    )?);
    let net = Network::new(prior.clone(), nz, vec![layer], out.clone())?;
    let ab = huge.as_deref() == Some("ab");
    let plain = if ab {
        mlmatvamp::pages::use_huge_pages(false);
        let layer = Arc::new(LinearLayer::new(a.as_ref(), None, None, 1)?);
        mlmatvamp::pages::use_huge_pages(true);
        Some(Network::new(prior, nz, vec![layer], out)?)
    } else {
        None
    };
    let config = SolverConfig {
        iterations: iters,
        ..Default::default()
    };
    let mut times = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let mut cpu = [0.0, 0.0, 0.0, 0.0];
    for _ in 0..rounds {
        let modes: Vec<usize> = match std::env::var("FUSED_ONLY").ok().as_deref() {
            Some("2") => vec![2],
            Some("1") => vec![1],
            Some("0") => vec![0],
            _ if ab => vec![2, 3],
            _ => vec![0, 1, 2],
        };
        for &k in &modes {
            let solver = Solver::new(config.clone())?
                .with_fused_pass(k >= 1)
                .with_lazy_estimates(k >= 2);
            let (t, c) = (Instant::now(), cpu_seconds());
            let sol = solver.run(
                if k == 3 {
                    plain.as_ref().unwrap_or(&net)
                } else {
                    &net
                },
                None,
            )?;
            times[k].push(t.elapsed().as_secs_f64() / iters as f64);
            cpu[k] += (cpu_seconds() - c) / (iters * rounds) as f64;
            std::hint::black_box(sol);
        }
    }
    let names = [
        "ordinary",
        "fused",
        "fused+lazy",
        "fused+lazy, factors on ordinary pages",
    ];
    for (k, name) in names.iter().enumerate() {
        if times[k].is_empty() {
            continue;
        }
        times[k].sort_by(f64::total_cmp);
        println!(
            "{name}: median {:.3} ms/iteration (min {:.3}), CPU {:.3} ms/iteration",
            times[k][rounds / 2] * 1e3,
            times[k][0] * 1e3,
            cpu[k] * 1e3
        );
    }
    Ok(())
}
