//! The lazy estimates of the last variable (`Solver::with_lazy_estimates`, `solver/lazy.rs`,
//! `docs/speed.md`) give the results of the ordinary path up to rounding: every message,
//! estimate and precision of every iteration (formed on demand through the state's
//! accessors), the solution, and every field of the history — changes, empirical errors and
//! error covariances against the truth, computed from `d x d` Gram matrices without `U_r`.
//!
//! Networks: wide and tall `W`, noiseless and noisy layers, with and without a bias, `d = 1`
//! and `d = 3`, with and without damping, a depth-4 network (linear → identity activation →
//! linear), and a clipping policy under which the exact likelihood message cannot be sent, so
//! that the lazy path must hand over to the ordinary one.

mod common;

use faer::Mat;
use mlmatvamp::prelude::*;
use std::sync::Arc;

/// Relative agreement required of every matrix (rounding of the reordered sums, carried
/// through the iterations).
const TOL: f64 = 1e-9;

struct Case {
    name: &'static str,
    d: usize,
    n0: usize,
    n1: usize,
    prior: Arc<dyn InputPrior>,
    noisy: bool,
    bias: bool,
    /// A hidden identity activation and a second linear layer (depth 4).
    deep: bool,
    out_precision: f64,
}

fn network(c: &Case, seed: u64) -> (Vec<Mat<f64>>, Network) {
    let mut rng = rng_from_seed(seed);
    let linear = |n_out: usize, n_in: usize, rng: &mut Rng| -> Arc<dyn Layer> {
        let w = mlmatvamp::denoise::standard_normal(n_out, n_in, rng)
            * faer::Scale(1.0 / (n_in as f64).sqrt());
        let bias = c
            .bias
            .then(|| mlmatvamp::denoise::standard_normal(n_out, c.d, rng) * faer::Scale(0.3));
        let noise = c.noisy.then(|| {
            Spd::from_symmetric("N", nalgebra::DMatrix::identity(c.d, c.d) * 50.0).expect("N")
        });
        Arc::new(LinearLayer::new(w.as_ref(), bias, noise, c.d).expect("layer"))
    };
    let mut layers = vec![linear(c.n1, c.n0, &mut rng)];
    let mut n_last = c.n1;
    if c.deep {
        let noise =
            Spd::from_symmetric("N", nalgebra::DMatrix::identity(c.d, c.d) * 30.0).expect("N");
        layers.push(Arc::new(
            ActivationLayer::new(Activation::Identity, Some(noise), Estimator::Mmse, c.d)
                .expect("activation"),
        ));
        n_last = c.n1 * 3 / 4;
        layers.push(linear(n_last, c.n1, &mut rng));
    }
    let noise = Spd::from_symmetric(
        "noise",
        nalgebra::DMatrix::identity(c.d, c.d) * c.out_precision,
    )
    .expect("noise");
    let out = Arc::new(AwgnOutput::new(Mat::zeros(n_last, c.d), noise, None).expect("output"));
    let model = Network::new(c.prior.clone(), c.n0, layers, out).expect("network");
    model.sample(&mut rng).expect("sample")
}

fn close(what: &str, a: &Mat<f64>, b: &Mat<f64>) {
    common::mats_agree(what, a, b, TOL);
}

fn close_small(what: &str, a: &nalgebra::DMatrix<f64>, b: &nalgebra::DMatrix<f64>) {
    common::small_agree(what, a, b, TOL);
}

fn close_value(what: &str, a: Option<f64>, b: Option<f64>, tol: f64) {
    match (a, b) {
        (Some(x), Some(y)) => assert!(
            (x - y).abs() <= tol * x.abs().max(y.abs()).max(1e-300),
            "{what}: {x} vs {y}"
        ),
        (None, None) => {}
        _ => panic!("{what}: {a:?} vs {b:?}"),
    }
}

/// Every message and belief of two states agree to `TOL`.
fn states_agree(tag: &str, a: &State, b: &State) {
    common::states_agree(tag, a, b, TOL);
}

fn compare(c: &Case, policy: MessagePolicy, seed: u64) {
    let (truth, net) = network(c, seed);
    let config = SolverConfig {
        iterations: 12,
        policy,
        ..Default::default()
    };
    let ordinary = Solver::new(config.clone())
        .expect("solver")
        .with_lazy_estimates(false);
    let lazy = Solver::new(config.clone()).expect("solver");
    assert!(lazy.lazy_estimates() && !ordinary.lazy_estimates());
    // By hand, pass by pass.
    let mut sa = State::new(&net, config.gamma_init).expect("state");
    let mut sb = sa.clone();
    for k in 0..config.iterations {
        sa.set_iteration(k);
        sb.set_iteration(k);
        ordinary.forward_pass(&net, &mut sa).expect("forward");
        lazy.forward_pass(&net, &mut sb).expect("forward");
        ordinary.backward_pass(&net, &mut sa).expect("backward");
        lazy.backward_pass(&net, &mut sb).expect("backward");
        states_agree(&format!("{} iteration {k}", c.name), &sa, &sb);
    }
    // Whole runs with the truth: solutions and every field of the history.
    let ra = ordinary.run(&net, Some(&truth)).expect("run");
    let rb = lazy.run(&net, Some(&truth)).expect("run");
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
            let tag = format!("{} iteration {} Z_{}", c.name, ha.iteration, va.variable);
            close_value(
                &format!("{tag} predicted"),
                Some(va.predicted_mse),
                Some(vb.predicted_mse),
                TOL,
            );
            close_value(&format!("{tag} mse"), va.mse, vb.mse, TOL);
            close_value(&format!("{tag} mse+"), va.mse_plus, vb.mse_plus, TOL);
            close_value(&format!("{tag} mse-"), va.mse_minus, vb.mse_minus, TOL);
            let (ca, cb) = (
                va.error_cov.as_ref().expect("error covariance"),
                vb.error_cov.as_ref().expect("error covariance"),
            );
            let m =
                |c: &Vec<Vec<f64>>| nalgebra::DMatrix::from_fn(c.len(), c.len(), |i, j| c[i][j]);
            close_small(&format!("{tag} error covariance"), &m(ca), &m(cb));
            // A relative change is a difference of two iterates: equal up to rounding of the
            // iterates, i.e. absolutely.
            match (va.change, vb.change) {
                (Some(x), Some(y)) => {
                    assert!((x - y).abs() <= TOL, "{tag}: change {x} vs {y}")
                }
                (None, None) => {}
                other => panic!("{tag}: change {other:?}"),
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

fn gaussian3() -> Arc<dyn InputPrior> {
    let cov = nalgebra::DMatrix::from_fn(3, 3, |i, j| if i == j { 1.0 } else { 0.3 });
    Arc::new(GaussianPrior::new(vec![0.1, -0.2, 0.3], cov).expect("prior"))
}

#[test]
fn wide_noiseless_d1_as_vampyre() {
    let c = Case {
        name: "BG d=1 wide",
        d: 1,
        n0: 900,
        n1: 500,
        prior: bg(1),
        noisy: false,
        bias: false,
        deep: false,
        out_precision: 100.0,
    };
    compare(&c, MessagePolicy::default(), 1);
    compare(&c, damped(), 2);
}

#[test]
fn tall_noisy_with_bias_d1_and_d3() {
    for (name, d, prior, seed) in [
        ("BG d=1 tall", 1, bg(1), 3),
        ("Gaussian d=3 tall", 3, gaussian3(), 5),
    ] {
        let c = Case {
            name,
            d,
            n0: 400,
            n1: 750,
            prior,
            noisy: true,
            bias: true,
            deep: false,
            out_precision: 100.0,
        };
        compare(&c, MessagePolicy::default(), seed);
        compare(&c, damped(), seed + 1);
    }
}

#[test]
fn tall_noiseless_with_bias_and_wide_noisy_d3() {
    for (name, n0, n1, noisy, seed) in [
        ("Gaussian d=3 tall noiseless", 350, 600, false, 7),
        ("Gaussian d=3 wide noisy", 600, 350, true, 8),
    ] {
        let c = Case {
            name,
            d: 3,
            n0,
            n1,
            prior: gaussian3(),
            noisy,
            bias: true,
            deep: false,
            out_precision: 100.0,
        };
        compare(&c, MessagePolicy::default(), seed);
        compare(&c, damped(), seed + 10);
    }
}

#[test]
fn depth_four_keeps_the_last_variable_lazy() {
    let c = Case {
        name: "depth 4",
        d: 2,
        n0: 300,
        n1: 480,
        prior: bg(2),
        noisy: true,
        bias: true,
        deep: true,
        out_precision: 80.0,
    };
    compare(&c, MessagePolicy::default(), 9);
    compare(&c, damped(), 10);
}

/// Clipping into `[1e-3, 1e3]` moves the output's message precision `N = 1e4`: the exact
/// likelihood message is not sent, the lazy path hands over to the ordinary one, and the
/// results still agree.
#[test]
fn a_clipped_output_message_falls_back_to_the_ordinary_path() {
    let c = Case {
        name: "clipped",
        d: 2,
        n0: 300,
        n1: 420,
        prior: bg(2),
        noisy: true,
        bias: false,
        deep: false,
        out_precision: 1e4,
    };
    compare(&c, MessagePolicy::reference(), 11);
}

/// The empirical SE replaces messages: the lazy path never engages, and results are the
/// same bits with the option on or off.
#[test]
fn the_empirical_se_is_unaffected() {
    let c = Case {
        name: "empirical SE",
        d: 1,
        n0: 300,
        n1: 200,
        prior: bg(1),
        noisy: false,
        bias: false,
        deep: false,
        out_precision: 100.0,
    };
    let (truth, net) = network(&c, 12);
    let config = SolverConfig {
        iterations: 6,
        ..Default::default()
    };
    let run = |lazy: bool| {
        Solver::new(config.clone())
            .expect("solver")
            .with_lazy_estimates(lazy)
            .run_empirical_se(&net, &truth, 5, &mut |_, _| Control::Continue)
            .expect("run")
    };
    let (a, b) = (run(true), run(false));
    for l in 0..net.depth() {
        assert_eq!(a.estimates[l], b.estimates[l]);
    }
}

/// A state driven by hand: a forward message replaced between iterations, a solver without
/// the lazy path taking over a lazy state, and the public `Solver::record` with previous
/// estimates and the truth — all agree with the ordinary path.
#[test]
fn hand_driven_states_and_public_records_agree() {
    let c = Case {
        name: "hand-driven",
        d: 2,
        n0: 260,
        n1: 400,
        prior: bg(2),
        noisy: true,
        bias: true,
        deep: false,
        out_precision: 60.0,
    };
    let (truth, net) = network(&c, 13);
    let config = SolverConfig::default();
    let ordinary = Solver::new(config.clone())
        .expect("solver")
        .with_lazy_estimates(false);
    let lazy = Solver::new(config.clone()).expect("solver");
    let mut sa = State::new(&net, config.gamma_init).expect("state");
    let mut sb = sa.clone();
    let mut previous: Option<Vec<Mat<f64>>> = None;
    for k in 0..8 {
        sa.set_iteration(k);
        sb.set_iteration(k);
        if k == 3 {
            // Replace the (lazy) forward message about Z_1 by a formed, perturbed copy.
            let mut msg = sb.plus(1).expect("plus").clone();
            msg.mean = &msg.mean * faer::Scale(0.9);
            sa.set_plus(1, msg.clone()).expect("set");
            sb.set_plus(1, msg).expect("set");
        }
        // The lazy state is advanced by the ordinary solver at iteration 5 (it forms what it
        // holds first).
        let b = if k == 5 { &ordinary } else { &lazy };
        ordinary.forward_pass(&net, &mut sa).expect("forward");
        b.forward_pass(&net, &mut sb).expect("forward");
        ordinary.backward_pass(&net, &mut sa).expect("backward");
        b.backward_pass(&net, &mut sb).expect("backward");
        states_agree(&format!("iteration {k}"), &sa, &sb);
        let ra = ordinary
            .record(&net, &sa, previous.as_deref(), Some(&truth), 0.0)
            .expect("record");
        let rb = lazy
            .record(&net, &sb, previous.as_deref(), Some(&truth), 0.0)
            .expect("record");
        for (va, vb) in ra.variables.iter().zip(&rb.variables) {
            let tag = format!("iteration {k} Z_{}", va.variable);
            close_value(&format!("{tag} mse"), va.mse, vb.mse, TOL);
            close_value(&format!("{tag} mse+"), va.mse_plus, vb.mse_plus, TOL);
            close_value(&format!("{tag} mse-"), va.mse_minus, vb.mse_minus, TOL);
            match (va.change, vb.change) {
                (Some(x), Some(y)) => assert!((x - y).abs() <= TOL, "{tag}: change {x} vs {y}"),
                (None, None) => {}
                other => panic!("{tag}: change {other:?}"),
            }
        }
        previous = Some(
            (0..net.depth())
                .map(|l| sa.estimate(l).expect("estimate").mean.clone())
                .collect(),
        );
    }
}
