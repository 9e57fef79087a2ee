use faer::Mat;
use mlmatvamp::prelude::*;
use mlmatvamp::se::{LinearSpec, SeConfig, SpectralLinearLayer, StateEvolution};
use std::sync::Arc;

fn main() -> mlmatvamp::Result<()> {
    let d = 3;
    let n0: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(2000);
    let n1 = (0.6 * n0 as f64) as usize;
    let sigma0 = DMat::from_row_slice(3, 3, &[1.0, 0.5, 0.2, 0.5, 1.0, 0.4, 0.2, 0.4, 1.0]);
    let prior = Arc::new(BernoulliGaussianPrior::new(0.2, vec![0.0; 3], sigma0)?);
    let noise = Spd::new(
        "N",
        DMat::from_row_slice(3, 3, &[50.0, 10.0, 0.0, 10.0, 50.0, 5.0, 0.0, 5.0, 40.0]),
        Some(3),
    )?;
    let iters = 10;
    let mut sims = vec![0.0; iters];
    let seeds = 6;
    for seed in 0..seeds {
        let mut rng = rng_from_seed(100 + seed);
        let w = standard_normal(n1, n0, &mut rng) * faer::Scale(1.0 / (n0 as f64).sqrt());
        let layer = Arc::new(LinearLayer::new(w.as_ref(), None, None, d)?);
        let out = Arc::new(AwgnOutput::new(Mat::zeros(n1, d), noise.clone(), None)?);
        let model = Network::new(prior.clone(), n0, vec![layer], out)?;
        let (truth, net) = model.sample(&mut rng)?;
        let sol = Solver::new(SolverConfig {
            iterations: iters,
            ..Default::default()
        })?
        .run(&net, Some(&truth))?;
        let z2 = truth[0].norm_l2().powi(2) / n0 as f64;
        for (k, rec) in sol.history.iter().enumerate() {
            sims[k] += rec.variables[0].mse.unwrap() / z2 / seeds as f64;
        }
    }
    let spec = LinearSpec::marchenko_pastur(n1, n0, 1.0 / n0 as f64, d, None, None)?;
    let law = Arc::new(SpectralLinearLayer { spec });
    let out = Arc::new(AwgnOutput::new(Mat::zeros(n1, d), noise.clone(), None)?);
    let net = Network::new(prior.clone(), n0, vec![law], out)?;
    let t = std::time::Instant::now();
    let (se, _) = StateEvolution::new(SeConfig {
        iterations: iters,
        n_mc: 100_000,
        ..Default::default()
    })?
    .run(&net, None)?;
    println!("SE time {:.3}s", t.elapsed().as_secs_f64());
    for k in 0..iters {
        let s = se[k].variables[0].nmse;
        println!(
            "k={k} sim {:.4} se {:.4} rel {:+.3}%",
            sims[k],
            s,
            100.0 * (s - sims[k]) / sims[k]
        );
    }
    Ok(())
}
