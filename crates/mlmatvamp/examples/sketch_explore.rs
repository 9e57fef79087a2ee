use mlmatvamp::apps::cluster::*;
use mlmatvamp::apps::sketch::*;
use mlmatvamp::denoise::Estimator;
use mlmatvamp::experiments::sketched_clustering::{iris, kmeans_plus_plus};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(|s| s.as_str()).unwrap_or("iris");
    if mode == "iris" {
        let (data, labels) = iris();
        let (k, p) = (3, data.ncols());
        for standardize in [false, true] {
            let mut x = data.clone();
            if standardize {
                for j in 0..p {
                    let n = x.nrows() as f64;
                    let m: f64 = (0..x.nrows()).map(|i| x[(i, j)]).sum::<f64>() / n;
                    let v: f64 = (0..x.nrows()).map(|i| (x[(i, j)] - m).powi(2)).sum::<f64>() / n;
                    for i in 0..x.nrows() {
                        x[(i, j)] = (x[(i, j)] - m) / v.sqrt();
                    }
                }
            }
            let (km, _) = kmeans_plus_plus(x.as_ref(), k, 10, 0).unwrap();
            let ari_km = adjusted_rand_index(&assign(x.as_ref(), km.as_ref()), &labels).unwrap();
            let sse_km = sse(x.as_ref(), km.as_ref());
            for seed in 0..3u64 {
                let s2 = estimate_sigma2(x.as_ref(), k, 10, seed).unwrap();
                for mult in [10usize, 20, 40] {
                    for restarts in [5usize, 20] {
                        for est in [Estimator::Map, Estimator::Mmse] {
                            let m = mult * k * p;
                            let f = Frequencies::draw(m, p, s2, seed).unwrap();
                            let sk = sketch(x.as_ref(), &f).unwrap();
                            let t0 = std::time::Instant::now();
                            let r = recover(
                                &sk,
                                &f,
                                &ClusterConfig {
                                    k,
                                    seed,
                                    restarts,
                                    estimator: est,
                                    ..Default::default()
                                },
                            );
                            match r {
                                Ok(r) => {
                                    let ari = adjusted_rand_index(
                                        &assign(x.as_ref(), r.centroids.as_ref()),
                                        &labels,
                                    )
                                    .unwrap();
                                    println!("std {standardize} seed {seed} s2 {s2:.3} M {m} restarts {restarts} {est:?}: ARI {ari:.3} (km {ari_km:.3}) relSSE {:.3} res {:.3} {:.2}s", sse(x.as_ref(), r.centroids.as_ref()) / sse_km, r.residual, t0.elapsed().as_secs_f64());
                                }
                                Err(e) => {
                                    println!("std {standardize} seed {seed} M {m} {est:?}: {e}")
                                }
                            }
                        }
                    }
                }
            }
        }
    } else {
        // decode profile on a K=10, p=10 mixture
        let (k, p) = (10, 10);
        let mix = MixtureConfig {
            k,
            p,
            sigma2: 1.0,
            separation: 1.0,
        };
        let t: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(100_000);
        let ratio: f64 = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(2.0);
        let est = if args.get(4).map(|s| s.as_str()) == Some("mmse") {
            Estimator::Mmse
        } else {
            Estimator::Map
        };
        for seed in 0..3u64 {
            let c = mix.centroids(seed);
            let (x, _) = mix.points(c.as_ref(), seed, 0, t);
            let m = (ratio * (k * p) as f64) as usize;
            let f = Frequencies::draw(m, p, 1.0, seed).unwrap();
            let sk = sketch(x.as_ref(), &f).unwrap();
            let truth = sse(x.as_ref(), c.as_ref());
            for (restarts, iterations, rounds) in [(2, 100, 2)] {
                let mut cfg = ClusterConfig {
                    k,
                    seed,
                    restarts,
                    iterations,
                    rounds,
                    estimator: est,
                    ..Default::default()
                };
                if let Ok(v) = std::env::var("GRAD_TOL") {
                    cfg.cexp.newton.grad_tol = v.parse().unwrap();
                }
                if let Ok(v) = std::env::var("NEWTON_IT") {
                    cfg.cexp.newton.max_iterations = v.parse().unwrap();
                }
                if let Ok(v) = std::env::var("TOL") {
                    cfg.tolerance = Some(v.parse().unwrap());
                }
                let r = recover(&sk, &f, &cfg).unwrap();
                let its = r.history.len();
                println!("seed {seed} M {m} R{restarts} it{iterations} rounds{rounds}: sse/truth {:.4} res {:.4} iters(kept) {its} {:.2}s restarts {:?}", sse(x.as_ref(), r.centroids.as_ref()) / truth, r.residual, r.seconds, r.restarts.iter().map(|q| (q.residual * 1000.0).round() / 1000.0).collect::<Vec<_>>());
            }
        }
    }
}
