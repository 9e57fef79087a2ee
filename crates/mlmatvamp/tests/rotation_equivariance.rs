//! Rotation equivariance (spec §8.2.5): replacing `Z → ZQ` for a random orthogonal `d x d`
//! matrix `Q` and transforming every parameter accordingly (`μ → μQ`, `Σ_0 → QᵀΣ_0Q`,
//! `N → QᵀNQ`, `B → BQ`, `Y → YQ`; the initial `Γ⁻ = γI` is invariant) transforms every iterate
//! as `Ẑ → ẐQ`, `R → RQ`, `Γ → QᵀΓQ`, `Σ̄ → QᵀΣ̄Q`, to `1e-10`.
//!
//! The prior is the row-sparse Bernoulli–Gaussian one (non-Gaussian, but rotation-equivariant:
//! a row `z` is `0` or `N(μ, Σ_0)`, so `zQ` is `0` or `N(μQ, QᵀΣ_0Q)`), with a non-diagonal slab
//! covariance and non-zero slab mean.

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
        noise: Option<DMat>,
    },
    Identity {
        noise: DMat,
    },
}

struct Model {
    n0: usize,
    rho: f64,
    mu: DMat,
    sigma0: DMat,
    hidden: Vec<Hidden>,
    out_noise: DMat,
}

/// `Qᵀ M Q`, as an SPD matrix.
fn congruent(what: &str, m: &DMat, q: &DMat) -> Spd {
    Spd::new(what, q.transpose() * m * q, Some(D)).unwrap()
}

/// `X Q` for an `n x d` matrix.
fn rotate(x: &Mat<f64>, q: &DMat) -> Mat<f64> {
    to_mat(&(to_dmat(x) * q))
}

/// The network in the coordinates `Z Q`, observing `y` (already rotated).
fn network(m: &Model, q: &DMat, y: &Mat<f64>) -> Network {
    let mu = &m.mu * q;
    let prior = Arc::new(
        BernoulliGaussianPrior::new(
            m.rho,
            mu.iter().copied().collect(),
            congruent("Σ_0", &m.sigma0, q).into_matrix(),
        )
        .unwrap(),
    );
    let layers: Vec<Arc<dyn Layer>> = m
        .hidden
        .iter()
        .map(|h| -> Arc<dyn Layer> {
            match h {
                Hidden::Linear { w, bias, noise } => Arc::new(
                    LinearLayer::new(
                        w.as_ref(),
                        Some(rotate(bias, q)),
                        noise.as_ref().map(|n| congruent("N", n, q)),
                        D,
                    )
                    .unwrap(),
                ),
                Hidden::Identity { noise } => Arc::new(
                    ActivationLayer::new(
                        Activation::Identity,
                        Some(congruent("N", noise, q)),
                        Estimator::Mmse,
                        D,
                    )
                    .unwrap(),
                ),
            }
        })
        .collect();
    let out =
        Arc::new(AwgnOutput::new(y.clone(), congruent("N_out", &m.out_noise, q), None).unwrap());
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

/// Runs the original and the rotated problem; returns the worst relative deviation from
/// equivariance over all iterates.
fn compare(m: &Model, n_last: usize, seed: u64, iterations: usize) -> f64 {
    let mut rng = rng_from_seed(seed);
    let q = random_orthogonal(D, &mut rng);
    assert!((q.transpose() * &q - DMat::identity(D, D)).norm() < 1e-14);
    let eye = DMat::identity(D, D);
    let (_, sampled) = network(m, &eye, &Mat::zeros(n_last, D))
        .sample(&mut rng)
        .unwrap();
    let y = sampled.output().observation().to_owned();
    let a = states(&network(m, &eye, &y), iterations);
    let b = states(&network(m, &q, &rotate(&y, &q)), iterations);
    let sim = |x: &DMat| q.transpose() * x * &q;
    let mut worst = 0.0f64;
    for (k, (sa, sb)) in a.iter().zip(&b).enumerate() {
        let mut worst_k = 0.0f64;
        for l in 0..sa.depth() {
            for (ba, bb) in [
                (sa.estimate_plus(l), sb.estimate_plus(l)),
                (sa.estimate_minus(l), sb.estimate_minus(l)),
            ] {
                let (ba, bb) = (ba.unwrap(), bb.unwrap());
                worst_k = worst_k.max(rel_err(&to_dmat(&bb.mean), &(to_dmat(&ba.mean) * &q)));
                worst_k = worst_k.max(rel_err(&bb.cov, &sim(&ba.cov)));
            }
            for (ma, mb) in [
                (sa.plus(l).unwrap(), sb.plus(l).unwrap()),
                (sa.minus(l).unwrap(), sb.minus(l).unwrap()),
            ] {
                worst_k = worst_k.max(rel_err(&to_dmat(&mb.mean), &(to_dmat(&ma.mean) * &q)));
                worst_k = worst_k.max(rel_err(mb.precision.matrix(), &sim(ma.precision.matrix())));
            }
        }
        if k < 2 || k + 1 == iterations {
            println!("k = {k}: worst deviation {worst_k:.2e}");
        }
        worst = worst.max(worst_k);
    }
    // Not vacuous: the rotation changes the iterates (Q is far from ±I and the precisions are
    // not multiples of the identity).
    let last = a.last().unwrap();
    let g = last.plus(0).unwrap().precision.matrix();
    assert!(
        rel_err(&sim(g), g) > 0.1,
        "Γ⁺_0 is (nearly) rotation invariant"
    );
    assert!(
        rel_err(
            &(to_dmat(&last.estimate_plus(0).unwrap().mean) * &q),
            &to_dmat(&last.estimate_plus(0).unwrap().mean)
        ) > 0.1
    );
    worst
}

fn sparse_model(n0: usize, hidden: Vec<Hidden>, rng: &mut Rng) -> Model {
    Model {
        n0,
        rho: 0.3,
        mu: DMat::from_row_slice(1, D, &[0.4, -0.6, 0.2]),
        sigma0: random_spd(D, 1.0, rng),
        hidden,
        out_noise: random_spd(D, 30.0, rng),
    }
}

#[test]
fn l2_sparse_prior_linear_awgn() {
    let mut rng = rng_from_seed(51);
    let (n0, n1) = (80, 60);
    let hidden = vec![Hidden::Linear {
        w: gaussian_w(n1, n0, &mut rng),
        bias: standard_normal(n1, D, &mut rng) * faer::Scale(0.3),
        noise: Some(random_spd(D, 40.0, &mut rng)),
    }];
    let m = sparse_model(n0, hidden, &mut rng);
    let worst = compare(&m, n1, 52, 20);
    println!("L = 2: worst deviation from equivariance {worst:.3e}");
    assert!(worst < 1e-10, "{worst:e}");
}

#[test]
fn l4_sparse_prior_linear_identity_linear_awgn() {
    let mut rng = rng_from_seed(53);
    let (n0, n1, n3) = (60, 80, 70);
    let hidden = vec![
        Hidden::Linear {
            w: gaussian_w(n1, n0, &mut rng),
            bias: standard_normal(n1, D, &mut rng) * faer::Scale(0.3),
            noise: Some(random_spd(D, 40.0, &mut rng)),
        },
        Hidden::Identity {
            noise: random_spd(D, 25.0, &mut rng),
        },
        Hidden::Linear {
            w: gaussian_w(n3, n1, &mut rng),
            bias: standard_normal(n3, D, &mut rng) * faer::Scale(0.3),
            noise: None,
        },
    ];
    let m = sparse_model(n0, hidden, &mut rng);
    let worst = compare(&m, n3, 54, 20);
    println!("L = 4: worst deviation from equivariance {worst:.3e}");
    assert!(worst < 1e-10, "{worst:e}");
}
