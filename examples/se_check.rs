//! Scratch check of SE vs simulation on the MMV problem (development aid).
use faer::Mat;
use mlmatvamp::prelude::*;
use mlmatvamp::se::{LinearSpec, SeConfig, SpectralLinearLayer, StateEvolution};
use std::sync::Arc;

fn arg(i: usize, default: f64) -> f64 {
    std::env::args()
        .nth(i)
        .map(|s| s.parse().unwrap())
        .unwrap_or(default)
}

fn main() -> mlmatvamp::Result<()> {
    let d = 3;
    let n0 = arg(1, 2000.0) as usize;
    let seeds = arg(2, 6.0) as u64;
    let n_mc = arg(3, 1e5) as usize;
    let noise_scale = arg(4, 1.0);
    let iters = 10;
    let n1 = (0.6 * n0 as f64) as usize;
    let sigma0 = DMat::from_row_slice(3, 3, &[1.0, 0.5, 0.2, 0.5, 1.0, 0.4, 0.2, 0.4, 1.0]);
    let prior = Arc::new(BernoulliGaussianPrior::new(0.2, vec![0.0; 3], sigma0)?);
    let base = DMat::from_row_slice(3, 3, &[50.0, 10.0, 0.0, 10.0, 50.0, 5.0, 0.0, 5.0, 40.0]);
    let noise = Spd::new("N", base / noise_scale, Some(3))?;
    let mut per_seed = vec![];
    for seed in 0..seeds {
        let mut rng = rng_from_seed(100 + seed);
        let exact = arg(5, 0.0) > 0.0;
        let layer = if exact {
            // Haar singular vectors with the Marchenko-Pastur quantile spectrum.
            let haar = |n: usize, rng: &mut Rng| {
                let g = standard_normal(n, n, rng);
                let qr = g.qr();
                let q = qr.compute_Q();
                let r = qr.R();
                let mut q = q.to_owned();
                for j in 0..n {
                    if r[(j, j)] < 0.0 {
                        for i in 0..n {
                            q[(i, j)] = -q[(i, j)];
                        }
                    }
                }
                q
            };
            let s = mlmatvamp::se::marchenko_pastur_singular_values(n1, n0, 1.0 / n0 as f64)?;
            let u = haar(n1, &mut rng);
            let v = haar(n0, &mut rng).as_ref().subcols(0, n1).to_owned();
            Arc::new(LinearLayer::from_svd(u, s, v, None, None, d, 0.0)?)
        } else {
            let w = standard_normal(n1, n0, &mut rng) * faer::Scale(1.0 / (n0 as f64).sqrt());
            Arc::new(LinearLayer::new(w.as_ref(), None, None, d)?)
        };
        let out = Arc::new(AwgnOutput::new(Mat::zeros(n1, d), noise.clone(), None)?);
        let model = Network::new(prior.clone(), n0, vec![layer], out)?;
        let (mut truth, net) = model.sample(&mut rng)?;
        let net = if exact {
            // Exactly rho*n0 non-zero rows (fixed empirical sparsity).
            let k = (0.2 * n0 as f64).round() as usize;
            let slab = mlmatvamp::denoise::GaussianPrior::new(
                vec![0.0; 3],
                DMat::from_row_slice(3, 3, &[1.0, 0.5, 0.2, 0.5, 1.0, 0.4, 0.2, 0.4, 1.0]),
            )?;
            let rows = slab.sample(k, &mut rng)?;
            let mut z = Mat::<f64>::zeros(n0, d);
            for i in 0..k {
                for j in 0..d {
                    z[(i * (n0 / k), j)] = rows[(i, j)];
                }
            }
            let z1 = net.layer(1).sample(z.as_ref(), &mut rng)?;
            let out = net.output().resample(z1.as_ref(), &mut rng)?;
            truth = vec![z, z1];
            net.with_output(Arc::from(out))?
        } else {
            net
        };
        let sol = Solver::new(SolverConfig {
            iterations: iters,
            ..Default::default()
        })?
        .run(&net, Some(&truth))?;
        let z2 = truth[0].norm_l2().powi(2) / n0 as f64;
        per_seed.push(
            sol.history
                .iter()
                .map(|r| r.variables[0].mse.unwrap() / z2)
                .collect::<Vec<f64>>(),
        );
    }
    let spec = LinearSpec::marchenko_pastur(n1, n0, 1.0 / n0 as f64, d, None, None)?;
    let law = Arc::new(SpectralLinearLayer { spec });
    let out = Arc::new(AwgnOutput::new(Mat::zeros(n1, d), noise.clone(), None)?);
    let net = Network::new(prior.clone(), n0, vec![law], out)?;
    let mut ses = vec![];
    for s in 0..2 {
        let t = std::time::Instant::now();
        let dummy = |_: usize, _: faer::MatRef<'_, f64>, _: faer::MatRef<'_, f64>| 0.0;
        let metric: Option<&mlmatvamp::se::RowMetric<'_>> =
            if s == 0 { None } else { Some(&dummy) };
        let (se, _) = StateEvolution::new(SeConfig {
            iterations: iters,
            n_mc,
            seed: s,
            ..Default::default()
        })?
        .run(&net, metric)?;
        println!("SE time {:.3}s", t.elapsed().as_secs_f64());
        ses.push(se);
    }
    for k in 0..iters {
        let v: Vec<f64> = per_seed.iter().map(|p| p[k]).collect();
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let sd =
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1).max(1) as f64).sqrt();
        let s0 = ses[0][k].variables[0].nmse;
        let s1 = ses[1][k].variables[0].nmse;
        println!(
            "k={k} sim {m:.4} (se of mean {:.2}%) | SE {s0:.4} {s1:.4} (MC diff {:+.2}%) | gap {:+.2}%",
            100.0 * sd / (v.len() as f64).sqrt() / m,
            100.0 * (s1 - s0) / s0,
            100.0 * (0.5 * (s0 + s1) - m) / m
        );
    }
    Ok(())
}
