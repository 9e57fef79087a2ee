//! Cost of one ML-Mat-VAMP iteration at a realistic size, and of the SVD done once per linear
//! layer.
//!
//! Network: `Z_0` (2000 x 4) with a Gaussian prior (non-diagonal covariance) → noisy linear layer
//! with an i.i.d. Gaussian `W` (4000 x 2000) → AWGN output. The network, its thin SVD and a
//! warmed-up solver state are built once, outside the timed region.
//!
//! Run with `cargo bench --bench iteration`.

use divan::Bencher;
use faer::Mat;
use mlmatvamp::prelude::*;
use std::sync::{Arc, OnceLock};

const N0: usize = 2000;
const N1: usize = 4000;
const D: usize = 4;

fn main() {
    divan::main();
}

/// `W` with i.i.d. `N(0, 1/n_0)` entries.
fn weight() -> &'static Mat<f64> {
    static W: OnceLock<Mat<f64>> = OnceLock::new();
    W.get_or_init(|| {
        let mut rng = rng_from_seed(1);
        standard_normal(N1, N0, &mut rng) * faer::Scale(1.0 / (N0 as f64).sqrt())
    })
}

fn spd(rows: &[[f64; D]; D]) -> Spd {
    let m = DMat::from_fn(D, D, |i, j| rows[i][j]);
    Spd::new("benchmark matrix", m, Some(D)).expect("SPD")
}

/// The network (with a sampled observation) and the solver state after two iterations.
fn setup() -> &'static (Network, State, Solver) {
    static S: OnceLock<(Network, State, Solver)> = OnceLock::new();
    S.get_or_init(|| {
        let mut rng = rng_from_seed(2);
        let sigma0 = spd(&[
            [1.0, 0.3, 0.1, 0.0],
            [0.3, 0.8, 0.2, 0.1],
            [0.1, 0.2, 1.2, 0.4],
            [0.0, 0.1, 0.4, 0.9],
        ]);
        let prior = Arc::new(
            GaussianPrior::new(vec![0.1, -0.2, 0.0, 0.3], sigma0.into_matrix()).expect("prior"),
        );
        let lin_noise = spd(&[
            [50.0, 5.0, 0.0, 2.0],
            [5.0, 40.0, 3.0, 0.0],
            [0.0, 3.0, 60.0, 4.0],
            [2.0, 0.0, 4.0, 45.0],
        ]);
        let layer =
            Arc::new(LinearLayer::new(weight().as_ref(), None, Some(lin_noise), D).expect("layer"));
        let out_noise = spd(&[
            [20.0, 2.0, 1.0, 0.0],
            [2.0, 25.0, 0.0, 3.0],
            [1.0, 0.0, 15.0, 2.0],
            [0.0, 3.0, 2.0, 30.0],
        ]);
        let out = Arc::new(AwgnOutput::new(Mat::zeros(N1, D), out_noise, None).expect("output"));
        let model = Network::new(prior, N0, vec![layer], out).expect("network");
        let (_, net) = model.sample(&mut rng).expect("sample");
        let solver = Solver::new(SolverConfig {
            iterations: 2,
            ..Default::default()
        })
        .expect("solver");
        let state = solver.run(&net, None).expect("run").state;
        (net, state, solver)
    })
}

/// One full iteration: forward pass (prior, linear `G⁺_1`) and backward pass (output, linear
/// `G⁻_1`), with the message rule after every denoiser.
#[divan::bench(sample_count = 30)]
fn full_iteration(bencher: Bencher) {
    let (net, state, solver) = setup();
    bencher
        .with_inputs(|| state.clone())
        .bench_local_values(|mut s| {
            solver.forward_pass(net, &mut s).expect("forward");
            solver.backward_pass(net, &mut s).expect("backward");
            s
        });
}

/// The pieces of an iteration, to locate the cost.
mod parts {
    use super::*;

    #[divan::bench(sample_count = 30)]
    fn linear_forward(bencher: Bencher) {
        let (net, state, _) = setup();
        let plus0 = state.plus(0).expect("message");
        bencher.bench(|| {
            net.layer(1)
                .expect("layer 1")
                .forward(state.minus(1).unwrap(), plus0)
                .expect("forward")
        });
    }

    #[divan::bench(sample_count = 30)]
    fn linear_backward(bencher: Bencher) {
        let (net, state, _) = setup();
        let plus0 = state.plus(0).expect("message");
        bencher.bench(|| {
            net.layer(1)
                .expect("layer 1")
                .backward(state.minus(1).unwrap(), plus0)
                .expect("backward")
        });
    }

    #[divan::bench(sample_count = 30)]
    fn output_denoise(bencher: Bencher) {
        let (net, state, _) = setup();
        let plus1 = state.plus(1).expect("message");
        bencher.bench(|| net.output().denoise(plus1).expect("output"));
    }

    #[divan::bench(sample_count = 30)]
    fn message_rule_on_z1(bencher: Bencher) {
        let (net, state, solver) = setup();
        let plus1 = state.plus(1).expect("message");
        let belief = net.output().denoise(plus1).expect("output");
        bencher.bench(|| {
            solver
                .config
                .policy
                .extrinsic(&belief, plus1, None, "bench", 0)
                .expect("extrinsic")
        });
    }
}

/// The thin SVD of the 4000 x 2000 weight (`LinearLayer::new`), done once per layer.
#[divan::bench(sample_count = 3, sample_size = 1)]
fn svd_linear_layer_new(bencher: Bencher) {
    let w = weight();
    bencher.bench(|| LinearLayer::new(w.as_ref(), None, None, D).expect("layer"));
}
