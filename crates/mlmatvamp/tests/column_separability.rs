//! Column separability (spec §8.2.4): with `d = 3`, a diagonal prior covariance, diagonal noise
//! precisions, column-separable denoisers (Gaussian prior, linear layers, noisy identity layers,
//! AWGN output) and the solver's diagonal initial `Γ⁻ = γ I`, ML-Mat-VAMP is three independent
//! `d = 1` runs: every iterate (estimates, `Σ̄`, message means and precisions) of column `j`
//! equals the `d = 1` run on column `j` to `1e-12`, and every `Γ` and `Σ̄` stays diagonal.

mod common;

use common::*;
use faer::Mat;
use mlmatvamp::prelude::*;
use std::sync::Arc;

const D: usize = 3;

enum Hidden {
    Linear {
        w: Mat<f64>,
        bias: Mat<f64>,
        noise: Option<[f64; D]>,
    },
    Identity {
        noise: [f64; D],
    },
}

struct Model {
    n0: usize,
    /// Prior mean. Every entry is non-zero: `R⁺_0 = μ` (spec §5.1) is computed as
    /// `(ẐΛ − R⁻Γ⁻)(Γ⁺)^{-1}`, so a zero column would be pure rounding noise and a relative
    /// comparison of it meaningless.
    mu: [f64; D],
    var: [f64; D],
    hidden: Vec<Hidden>,
    out_noise: [f64; D],
}

fn diag(v: &[f64]) -> DMat {
    DMat::from_diagonal(&nalgebra::DVector::from_column_slice(v))
}

/// The network on all columns (`col = None`) or on column `j` alone, observing `y`.
fn network(m: &Model, col: Option<usize>, y: &Mat<f64>) -> Network {
    let pick = |v: &[f64; D]| -> Vec<f64> {
        match col {
            Some(j) => vec![v[j]],
            None => v.to_vec(),
        }
    };
    let pick_cols = |x: &Mat<f64>| match col {
        Some(j) => column(x, j),
        None => x.clone(),
    };
    let d = if col.is_some() { 1 } else { D };
    let prior = Arc::new(GaussianPrior::new(pick(&m.mu), diag(&pick(&m.var))).unwrap());
    let layers: Vec<Arc<dyn Layer>> = m
        .hidden
        .iter()
        .map(|h| -> Arc<dyn Layer> {
            match h {
                Hidden::Linear { w, bias, noise } => {
                    let nz = noise.map(|n| Spd::new("N", diag(&pick(&n)), Some(d)).unwrap());
                    Arc::new(LinearLayer::new(w.as_ref(), Some(pick_cols(bias)), nz, d).unwrap())
                }
                Hidden::Identity { noise } => Arc::new(
                    ActivationLayer::new(
                        Activation::Identity,
                        Some(Spd::new("N", diag(&pick(noise)), Some(d)).unwrap()),
                        Estimator::Mmse,
                        d,
                    )
                    .unwrap(),
                ),
            }
        })
        .collect();
    let out = Arc::new(
        AwgnOutput::new(
            pick_cols(y),
            Spd::new("N_out", diag(&pick(&m.out_noise)), Some(d)).unwrap(),
            None,
        )
        .unwrap(),
    );
    Network::new(prior, m.n0, layers, out).unwrap()
}

fn states(net: &Network, iterations: usize) -> Vec<State> {
    let mut out = vec![];
    Solver::new(SolverConfig {
        iterations,
        ..Default::default()
    })
    .unwrap()
    .run_with(net, None, &mut |_, s| {
        out.push(s.clone());
        Control::Continue
    })
    .unwrap();
    out
}

fn rel_col(full: &Mat<f64>, j: usize, single: &Mat<f64>) -> f64 {
    rel_err_mat(&column(full, j), single)
}

fn rel_entry(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// Returns `(worst column mismatch, worst off-diagonal ratio)` over all iterates.
fn compare(m: &Model, seed: u64, iterations: usize) -> (f64, f64) {
    // Observation drawn from the d = 3 model.
    let template = network(m, None, &Mat::zeros(final_rows(m), D));
    let (_, sampled) = template.sample(&mut rng_from_seed(seed)).unwrap();
    let y = sampled.output().observation().to_owned();
    let full = states(&network(m, None, &y), iterations);
    let singles: Vec<Vec<State>> = (0..D)
        .map(|j| states(&network(m, Some(j), &y), iterations))
        .collect();
    let mut worst = 0.0f64;
    let mut worst_off = 0.0f64;
    for k in 0..iterations {
        let f = &full[k];
        for l in 0..f.depth() {
            let beliefs = [f.estimate_plus(l).unwrap(), f.estimate_minus(l).unwrap()];
            let msgs = [f.plus(l).unwrap(), f.minus(l).unwrap()];
            for b in &beliefs {
                worst_off = worst_off.max(off_diagonal_ratio(&b.cov));
            }
            for msg in &msgs {
                worst_off = worst_off.max(off_diagonal_ratio(msg.precision.matrix()));
            }
            for (j, single) in singles.iter().enumerate() {
                let s = &single[k];
                let sb = [s.estimate_plus(l).unwrap(), s.estimate_minus(l).unwrap()];
                let sm = [s.plus(l).unwrap(), s.minus(l).unwrap()];
                for (b, c) in beliefs.iter().zip(&sb) {
                    worst = worst.max(rel_col(&b.mean, j, &c.mean));
                    worst = worst.max(rel_entry(b.cov[(j, j)], c.cov[(0, 0)]));
                }
                for (a, c) in msgs.iter().zip(&sm) {
                    worst = worst.max(rel_col(&a.mean, j, &c.mean));
                    worst = worst.max(rel_entry(
                        a.precision.matrix()[(j, j)],
                        c.precision.matrix()[(0, 0)],
                    ));
                }
            }
        }
    }
    // Not vacuous: the three columns behave differently.
    let last = full.last().unwrap();
    let g = last.minus(0).unwrap().precision.matrix();
    assert!(
        (g[(0, 0)] - g[(1, 1)]).abs() > 1e-3 * g[(0, 0)]
            && (g[(1, 1)] - g[(2, 2)]).abs() > 1e-3 * g[(1, 1)],
        "columns are not distinct: {g}"
    );
    (worst, worst_off)
}

fn final_rows(m: &Model) -> usize {
    let mut n = m.n0;
    for h in &m.hidden {
        if let Hidden::Linear { w, .. } = h {
            n = w.nrows();
        }
    }
    n
}

fn check(m: Model, seed: u64, iterations: usize) {
    let (worst, off) = compare(&m, seed, iterations);
    println!("worst column mismatch {worst:.3e}, worst off-diagonal ratio {off:.3e}");
    assert!(worst < 1e-12, "column mismatch {worst:e}");
    assert!(
        off < 1e-12,
        "a precision or covariance is not diagonal: {off:e}"
    );
}

#[test]
fn l2_gaussian_linear_awgn() {
    let mut rng = rng_from_seed(41);
    let (n0, n1) = (40, 55);
    let m = Model {
        n0,
        mu: [0.5, -1.0, 0.2],
        var: [1.0, 0.3, 2.5],
        hidden: vec![Hidden::Linear {
            w: gaussian_w(n1, n0, &mut rng),
            bias: standard_normal(n1, D, &mut rng),
            noise: Some([20.0, 5.0, 60.0]),
        }],
        out_noise: [10.0, 40.0, 3.0],
    };
    check(m, 42, 25);
}

#[test]
fn l4_gaussian_linear_identity_linear_awgn() {
    let mut rng = rng_from_seed(43);
    let (n0, n1, n3) = (40, 50, 30);
    let m = Model {
        n0,
        mu: [0.3, 0.7, -0.4],
        var: [2.0, 0.5, 1.0],
        hidden: vec![
            Hidden::Linear {
                w: gaussian_w(n1, n0, &mut rng),
                bias: standard_normal(n1, D, &mut rng),
                noise: Some([15.0, 50.0, 8.0]),
            },
            Hidden::Identity {
                noise: [30.0, 6.0, 12.0],
            },
            Hidden::Linear {
                w: gaussian_w(n3, n1, &mut rng),
                bias: standard_normal(n3, D, &mut rng) * faer::Scale(0.5),
                noise: None,
            },
        ],
        out_noise: [25.0, 10.0, 4.0],
    };
    check(m, 44, 25);
}
