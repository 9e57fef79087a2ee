//! The fused pass over `V` (`Solver::with_fused_pass`, `docs/speed.md`) gives the results of the
//! ordinary schedule up to rounding, on every estimate, message and precision of every
//! iteration, and the same bits with one thread and with two.
//!
//! Networks: `d = 1` with vampyre's Bernoulli–Gaussian prior, `d = 4` with a Gaussian prior of
//! full covariance, `d = 2` with the group-lasso prior (not row-separable: only `G⁻_1` and the
//! message rule are fused); wide and tall `W`; noiseless and noisy layers, with a bias; with and
//! without damping. Row counts are not multiples of the pass's blocks and tasks.

mod common;

use faer::Mat;
use mlmatvamp::prelude::*;
use std::sync::Arc;

/// Relative agreement required of every matrix (Frobenius norm of the difference against the
/// larger norm): rounding of the reordered sums, carried through 12 iterations.
const TOL: f64 = 1e-10;

struct Case {
    name: &'static str,
    d: usize,
    n0: usize,
    n1: usize,
    prior: Arc<dyn InputPrior>,
    noisy: bool,
    bias: bool,
}

fn network(c: &Case, seed: u64) -> Network {
    let mut rng = rng_from_seed(seed);
    let w = mlmatvamp::denoise::standard_normal(c.n1, c.n0, &mut rng)
        * faer::Scale(1.0 / (c.n0 as f64).sqrt());
    let bias = c
        .bias
        .then(|| mlmatvamp::denoise::standard_normal(c.n1, c.d, &mut rng) * faer::Scale(0.3));
    let layer_noise = c.noisy.then(|| {
        Spd::from_symmetric("N", nalgebra::DMatrix::identity(c.d, c.d) * 50.0).expect("N")
    });
    let layer = Arc::new(LinearLayer::new(w.as_ref(), bias, layer_noise, c.d).expect("layer"));
    let noise =
        Spd::from_symmetric("noise", nalgebra::DMatrix::identity(c.d, c.d) * 100.0).expect("noise");
    let out = Arc::new(AwgnOutput::new(Mat::zeros(c.n1, c.d), noise, None).expect("output"));
    let model = Network::new(c.prior.clone(), c.n0, vec![layer], out).expect("network");
    model.sample(&mut rng).expect("sample").1
}

fn close(what: &str, a: &Mat<f64>, b: &Mat<f64>) {
    common::mats_agree(what, a, b, TOL);
}

fn close_small(what: &str, a: &nalgebra::DMatrix<f64>, b: &nalgebra::DMatrix<f64>) {
    common::small_agree(what, a, b, TOL);
}

/// Every message and belief of two states agree to `TOL`.
fn states_agree(tag: &str, a: &State, b: &State) {
    common::states_agree(tag, a, b, TOL);
}

/// Runs `iterations` iterations by hand with both schedules side by side and compares the
/// states after every pass; then compares whole runs (solutions and histories).
fn compare(c: &Case, policy: MessagePolicy, seed: u64) {
    let net = network(c, seed);
    let config = SolverConfig {
        iterations: 12,
        policy,
        ..Default::default()
    };
    let ordinary = Solver::new(config.clone())
        .expect("solver")
        .with_fused_pass(false);
    let fused = Solver::new(config.clone()).expect("solver");
    assert!(fused.fused_pass() && !ordinary.fused_pass());
    let mut sa = State::new(&net, config.gamma_init).expect("state");
    let mut sb = sa.clone();
    for k in 0..config.iterations {
        sa.set_iteration(k);
        sb.set_iteration(k);
        ordinary.forward_pass(&net, &mut sa).expect("forward");
        fused.forward_pass(&net, &mut sb).expect("forward");
        ordinary.backward_pass(&net, &mut sa).expect("backward");
        fused.backward_pass(&net, &mut sb).expect("backward");
        states_agree(&format!("{} iteration {k}", c.name), &sa, &sb);
    }
    let ra = ordinary.run(&net, None).expect("run");
    let rb = fused.run(&net, None).expect("run");
    assert_eq!(ra.history.len(), rb.history.len());
    for l in 0..net.depth() {
        close(
            &format!("{} final Ẑ_{l}", c.name),
            &ra.estimates[l],
            &rb.estimates[l],
        );
        close_small(
            &format!("{} final Σ̄_{l}", c.name),
            &ra.covariances[l],
            &rb.covariances[l],
        );
    }
    for (ha, hb) in ra.history.iter().zip(&rb.history) {
        for (va, vb) in ha.variables.iter().zip(&hb.variables) {
            let rel = |x: f64, y: f64| (x - y).abs() <= TOL * x.abs().max(y.abs());
            assert!(
                rel(va.predicted_mse, vb.predicted_mse),
                "{}: predicted MSE",
                c.name
            );
            // A relative change is a difference of two iterates: equal up to rounding of
            // the iterates, i.e. absolutely.
            if let (Some(x), Some(y)) = (va.change, vb.change) {
                assert!((x - y).abs() <= TOL, "{}: change {x} vs {y}", c.name);
            }
        }
    }
    states_agree(&format!("{} final state", c.name), &ra.state, &rb.state);
}

fn damped() -> MessagePolicy {
    MessagePolicy {
        damp_precision: 0.3,
        damp_mean: 0.4,
        ..Default::default()
    }
}

fn bg(d: usize) -> Arc<dyn InputPrior> {
    Arc::new(
        BernoulliGaussianPrior::new(0.2, vec![0.0; d], nalgebra::DMatrix::identity(d, d))
            .expect("prior"),
    )
}

fn gaussian4() -> Arc<dyn InputPrior> {
    let cov = nalgebra::DMatrix::from_fn(4, 4, |i, j| if i == j { 1.0 } else { 0.3 });
    Arc::new(GaussianPrior::new(vec![0.1, -0.2, 0.0, 0.3], cov).expect("prior"))
}

#[test]
fn bernoulli_gaussian_d1_wide_as_vampyre() {
    let c = Case {
        name: "BG d=1 wide",
        d: 1,
        n0: 1100,
        n1: 600,
        prior: bg(1),
        noisy: false,
        bias: false,
    };
    compare(&c, MessagePolicy::default(), 1);
    compare(&c, damped(), 2);
}

#[test]
fn bernoulli_gaussian_d1_tall_noisy_with_bias() {
    let c = Case {
        name: "BG d=1 tall",
        d: 1,
        n0: 700,
        n1: 1100,
        prior: bg(1),
        noisy: true,
        bias: true,
    };
    compare(&c, MessagePolicy::default(), 3);
    compare(&c, damped(), 4);
}

#[test]
fn gaussian_full_covariance_d4_wide_and_tall() {
    for (name, n0, n1, noisy, seed) in [
        ("Gaussian d=4 wide", 900, 530, true, 5),
        ("Gaussian d=4 tall", 530, 900, false, 6),
    ] {
        let c = Case {
            name,
            d: 4,
            n0,
            n1,
            prior: gaussian4(),
            noisy,
            bias: true,
        };
        compare(&c, MessagePolicy::default(), seed);
        compare(&c, damped(), seed + 10);
    }
}

#[test]
fn a_prior_that_is_not_row_separable_fuses_only_the_backward_call() {
    let c = Case {
        name: "group lasso d=2",
        d: 2,
        n0: 800,
        n1: 500,
        prior: Arc::new(GroupLassoPrior::new(2, 0.5).expect("prior")),
        noisy: true,
        bias: false,
    };
    compare(&c, MessagePolicy::default(), 7);
    compare(&c, damped(), 8);
}

/// The fused path gives the same bits with one thread and with two.
#[test]
fn the_fused_pass_does_not_depend_on_the_number_of_threads() {
    mlmatvamp::use_deterministic_parallelism();
    for (c, seed) in [
        (
            Case {
                name: "BG d=1",
                d: 1,
                n0: 1500,
                n1: 700,
                prior: bg(1),
                noisy: false,
                bias: false,
            },
            11,
        ),
        (
            Case {
                name: "Gaussian d=4",
                d: 4,
                n0: 600,
                n1: 1000,
                prior: gaussian4(),
                noisy: true,
                bias: true,
            },
            12,
        ),
    ] {
        let net = network(&c, seed);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            pool.install(|| {
                Solver::new(SolverConfig {
                    iterations: 10,
                    policy: damped(),
                    ..Default::default()
                })
                .expect("solver")
                .run(&net, None)
                .expect("run")
            })
        };
        let (one, two) = (run(1), run(2));
        for l in 0..net.depth() {
            let (a, b) = (&one.estimates[l], &two.estimates[l]);
            for j in 0..a.ncols() {
                for i in 0..a.nrows() {
                    assert_eq!(a[(i, j)].to_bits(), b[(i, j)].to_bits(), "{}", c.name);
                }
            }
            assert_eq!(one.covariances[l], two.covariances[l], "{}", c.name);
            let (ma, mb) = (
                one.state.minus(l).expect("m"),
                two.state.minus(l).expect("m"),
            );
            assert_eq!(ma.precision.matrix(), mb.precision.matrix());
            assert_eq!(ma.mean, mb.mean, "{}", c.name);
        }
    }
}

/// Runs that share one layer (parallel trials, restarts) give the same bits concurrently as one
/// after the other: products obtained by linearity live in each run's state, never in the
/// layer's cache, whose entries are always products read from `V_r`.
#[test]
fn runs_sharing_a_layer_give_the_same_bits_concurrently() {
    let mut rng = rng_from_seed(21);
    let (n0, n1) = (900, 500);
    let w = mlmatvamp::denoise::standard_normal(n1, n0, &mut rng) * faer::Scale(0.04);
    let layer = Arc::new(LinearLayer::new(w.as_ref(), None, None, 1).expect("layer"));
    let nets: Vec<Network> = (0..2)
        .map(|s| {
            let noise =
                Spd::from_symmetric("noise", nalgebra::DMatrix::identity(1, 1) * 100.0).expect("N");
            let out = Arc::new(AwgnOutput::new(Mat::zeros(n1, 1), noise, None).expect("output"));
            let model = Network::new(bg(1), n0, vec![layer.clone()], out).expect("network");
            model.sample(&mut rng_from_seed(30 + s)).expect("sample").1
        })
        .collect();
    let solver = Solver::new(SolverConfig {
        iterations: 10,
        policy: damped(),
        ..Default::default()
    })
    .expect("solver");
    let alone: Vec<_> = nets
        .iter()
        .map(|n| solver.run(n, None).expect("run"))
        .collect();
    for _ in 0..3 {
        let (a, b) = rayon::join(
            || solver.run(&nets[0], None).expect("run"),
            || solver.run(&nets[1], None).expect("run"),
        );
        for (x, y) in [(&a, &alone[0]), (&b, &alone[1])] {
            for l in 0..2 {
                assert_eq!(x.estimates[l], y.estimates[l]);
                assert_eq!(x.covariances[l], y.covariances[l]);
            }
        }
    }
}
