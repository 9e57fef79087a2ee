//! Library error paths (design principle 7): wrong shapes, non-finite inputs, invalid
//! covariances/precisions and divergence are reported as [`Error`] values whose messages name
//! the culprit; nothing panics.

use faer::{Mat, MatRef};
use mlmatvamp::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const D: usize = 3;

fn msg_of<T: std::fmt::Debug>(r: Result<T>) -> (Error, String) {
    let e = r.expect_err("expected an error");
    let s = e.to_string();
    println!("{s}");
    (e, s)
}

fn assert_contains(s: &str, parts: &[&str]) {
    for p in parts {
        assert!(s.contains(p), "message {s:?} does not contain {p:?}");
    }
}

fn spd(m: f64) -> Spd {
    Spd::scaled_identity(D, m).unwrap()
}

fn weight(n: usize, m: usize) -> Mat<f64> {
    Mat::from_fn(n, m, |i, j| {
        ((i * 7 + j * 3) % 5) as f64 - 2.0 + if i == j { 3.0 } else { 0.0 }
    })
}

fn layer(n: usize, m: usize) -> Arc<LinearLayer> {
    Arc::new(LinearLayer::new(weight(n, m).as_ref(), None, Some(spd(10.0)), D).unwrap())
}

fn awgn(n: usize) -> Arc<AwgnOutput> {
    Arc::new(AwgnOutput::new(Mat::zeros(n, D), spd(10.0), None).unwrap())
}

fn prior() -> Arc<GaussianPrior> {
    Arc::new(GaussianPrior::isotropic(D, 1.0).unwrap())
}

fn message(n: usize, d: usize) -> Message {
    Message::zero(n, d, 1.0).unwrap()
}

// ---------------------------------------------------------------- shapes

#[test]
fn bias_of_wrong_size() {
    let b = Mat::zeros(29, D);
    let (e, s) = msg_of(LinearLayer::new(weight(30, 20).as_ref(), Some(b), None, D));
    assert!(matches!(e, Error::Shape { .. }));
    assert_contains(&s, &["bias B", "expected 30 x 3", "got 29 x 3"]);
}

#[test]
fn noise_precision_of_wrong_size() {
    let n2 = Spd::scaled_identity(2, 1.0).unwrap();
    let (e, s) = msg_of(LinearLayer::new(
        weight(30, 20).as_ref(),
        None,
        Some(n2.clone()),
        D,
    ));
    assert!(matches!(e, Error::Shape { .. }));
    assert_contains(&s, &["noise precision N", "expected 3 x 3", "got 2 x 2"]);

    let (e, s) = msg_of(AwgnOutput::new(Mat::zeros(10, D), n2.clone(), None));
    assert!(matches!(e, Error::Shape { .. }));
    assert_contains(
        &s,
        &["output noise precision", "expected 3 x 3", "got 2 x 2"],
    );

    let (e, s) = msg_of(ActivationLayer::new(
        Activation::Identity,
        Some(n2),
        Estimator::Mmse,
        D,
    ));
    assert!(matches!(e, Error::Shape { .. }));
    assert_contains(&s, &["noise precision N", "expected 3 x 3", "got 2 x 2"]);
}

#[test]
fn weight_of_wrong_size_in_a_network() {
    // W_1 expects 21 input rows but Z_0 has 20.
    let (e, s) = msg_of(Network::new(prior(), 20, vec![layer(30, 21)], awgn(30)));
    assert!(matches!(e, Error::Shape { .. }));
    assert_contains(&s, &["input rows of layer 1", "n_0 = 20", "got 21"]);

    // The second linear layer of an L = 4 network.
    let act = Arc::new(
        ActivationLayer::new(Activation::Identity, Some(spd(5.0)), Estimator::Mmse, D).unwrap(),
    );
    let (_, s) = msg_of(Network::new(
        prior(),
        20,
        vec![layer(30, 20), act, layer(15, 31)],
        awgn(15),
    ));
    assert_contains(&s, &["input rows of layer 3", "n_2 = 30", "got 31"]);

    // Empty weight.
    let (e, s) = msg_of(LinearLayer::new(
        Mat::<f64>::zeros(0, 5).as_ref(),
        None,
        None,
        D,
    ));
    assert!(matches!(e, Error::Invalid { .. }));
    assert_contains(&s, &["weight", "0 x 5"]);
}

#[test]
fn message_of_wrong_size() {
    let l = layer(30, 20);
    let (e, s) = msg_of(l.forward(&message(31, D), &message(20, D)));
    assert!(matches!(e, Error::Shape { .. }));
    assert_contains(
        &s,
        &[
            "backward message R⁻ into linear layer",
            "expected 30 x 3",
            "got 31 x 3",
        ],
    );
    let (_, s) = msg_of(l.backward(&message(30, D), &message(20, 2)));
    assert_contains(
        &s,
        &[
            "forward message R⁺ into linear layer",
            "expected 20 x 3",
            "got 20 x 2",
        ],
    );

    let (_, s) = msg_of(awgn(30).denoise(&message(29, D)));
    assert_contains(
        &s,
        &[
            "forward message R⁺ into the output",
            "expected 30 x 3",
            "got 29 x 3",
        ],
    );

    let act =
        ActivationLayer::new(Activation::Identity, Some(spd(5.0)), Estimator::Mmse, D).unwrap();
    let (_, s) = msg_of(act.forward(&message(10, D), &message(11, D)));
    assert_contains(
        &s,
        &["into activation layer", "expected 11 x 3", "got 10 x 3"],
    );

    // Priors accept any number of rows, but not the wrong number of columns.
    let (_, s) = msg_of(prior().denoise(&message(20, 2)));
    assert_contains(
        &s,
        &[
            "backward message R⁻ into the prior",
            "expected 20 x 3",
            "got 20 x 2",
        ],
    );
    let sparse = BernoulliGaussianPrior::new(0.2, vec![0.0; D], DMat::identity(D, D)).unwrap();
    let (_, s) = msg_of(sparse.denoise(&message(20, 4)));
    assert_contains(
        &s,
        &[
            "backward message R⁻ into the prior",
            "expected 20 x 3",
            "got 20 x 4",
        ],
    );
}

#[test]
fn message_whose_precision_does_not_match_its_mean() {
    // A hand-built message with n x 3 means but a 2 x 2 precision: an error, not a panic.
    let bad = Message {
        mean: Mat::zeros(20, D),
        precision: Spd::scaled_identity(2, 1.0).unwrap(),
    };
    let (_, s) = msg_of(prior().denoise(&bad));
    assert_contains(&s, &["precision", "expected 3 x 3", "got 2 x 2"]);
    let sparse = BernoulliGaussianPrior::new(0.2, vec![0.0; D], DMat::identity(D, D)).unwrap();
    let (_, s) = msg_of(sparse.denoise(&bad));
    assert_contains(&s, &["precision", "expected 3 x 3", "got 2 x 2"]);
    let (_, s) = msg_of(layer(30, 20).backward(&message(30, D), &bad));
    assert_contains(&s, &["precision", "expected 3 x 3", "got 2 x 2"]);
    let bad30 = Message {
        mean: Mat::zeros(30, D),
        precision: Spd::scaled_identity(2, 1.0).unwrap(),
    };
    let (_, s) = msg_of(layer(30, 20).forward(&bad30, &message(20, D)));
    assert_contains(&s, &["precision", "expected 3 x 3", "got 2 x 2"]);
    let (_, s) = msg_of(awgn(30).denoise(&bad30));
    assert_contains(&s, &["precision", "expected 3 x 3", "got 2 x 2"]);
    let act =
        ActivationLayer::new(Activation::Identity, Some(spd(5.0)), Estimator::Mmse, D).unwrap();
    let (_, s) = msg_of(act.forward(&message(20, D), &bad));
    assert_contains(&s, &["precision", "expected 3 x 3", "got 2 x 2"]);
    // The message rule itself.
    let belief = Belief::new(Mat::zeros(20, D), DMat::identity(D, D));
    let (_, s) = msg_of(MessagePolicy::default().extrinsic(&belief, &bad, None, "here", 0));
    assert_contains(&s, &["precision", "expected 3 x 3", "got 2 x 2"]);
    let good = message(20, D);
    let short = Belief::new(Mat::zeros(19, D), DMat::identity(D, D));
    let (_, s) = msg_of(MessagePolicy::default().extrinsic(&short, &good, None, "here", 0));
    assert_contains(&s, &["estimate (here)", "expected 20 x 3", "got 19 x 3"]);
    let small_cov = Belief::new(Mat::zeros(20, D), DMat::identity(2, 2));
    let (_, s) = msg_of(MessagePolicy::default().extrinsic(&small_cov, &good, None, "here", 0));
    assert_contains(
        &s,
        &["posterior covariance (here)", "expected 3 x 3", "got 2 x 2"],
    );
    let (_, s) = msg_of(MessagePolicy::default().extrinsic(
        &belief,
        &good,
        Some(&message(21, D)),
        "here",
        0,
    ));
    assert_contains(
        &s,
        &["previous message (here)", "expected 20 x 3", "got 21 x 3"],
    );
}

#[test]
fn network_structure_errors() {
    // Output rows differ from n_{L-1}.
    let (e, s) = msg_of(Network::new(prior(), 20, vec![layer(30, 20)], awgn(25)));
    assert!(matches!(e, Error::Shape { .. }));
    assert_contains(
        &s,
        &["rows of the output observation", "n_{L-1} = 30", "got 25"],
    );

    // Odd depth L = 3 (two hidden layers).
    let act = || -> Arc<dyn Layer> {
        Arc::new(
            ActivationLayer::new(Activation::Identity, Some(spd(5.0)), Estimator::Mmse, D).unwrap(),
        )
    };
    let (e, s) = msg_of(Network::new(
        prior(),
        20,
        vec![layer(30, 20), act()],
        awgn(30),
    ));
    assert!(matches!(e, Error::Invalid { .. }));
    assert_contains(&s, &["L = 3", "odd"]);

    // Not alternating: linear, linear, linear.
    let (_, s) = msg_of(Network::new(
        prior(),
        20,
        vec![layer(20, 20), layer(20, 20), layer(30, 20)],
        awgn(30),
    ));
    assert_contains(
        &s,
        &[
            "layer 2 must be a row-wise nonlinear layer",
            "linear layer 20 x 20",
        ],
    );

    // Not alternating: starts with a row-wise layer.
    let (_, s) = msg_of(Network::new(
        prior(),
        20,
        vec![act(), layer(20, 20), act()],
        awgn(20),
    ));
    assert_contains(&s, &["layer 1 must be linear", "identity activation layer"]);

    // Column count mismatch.
    let l2 = Arc::new(LinearLayer::new(weight(30, 20).as_ref(), None, None, 2).unwrap());
    let (_, s) = msg_of(Network::new(prior(), 20, vec![l2], awgn(30)));
    assert_contains(&s, &["columns of layer 1", "expected 3", "got 2"]);

    // No rows.
    let (_, s) = msg_of(Network::new(prior(), 0, vec![layer(30, 20)], awgn(30)));
    assert_contains(&s, &["n_0"]);
}

// ---------------------------------------------------------------- non-finite inputs

#[test]
fn non_finite_inputs() {
    let mut w = weight(30, 20);
    w[(2, 3)] = f64::NAN;
    let (e, s) = msg_of(LinearLayer::new(w.as_ref(), None, None, D));
    assert!(matches!(e, Error::NonFinite { .. }));
    assert_contains(&s, &["weight W", "entry (2, 3) is NaN"]);

    let mut b = Mat::zeros(30, D);
    b[(4, 1)] = f64::INFINITY;
    let (e, s) = msg_of(LinearLayer::new(weight(30, 20).as_ref(), Some(b), None, D));
    assert!(matches!(e, Error::NonFinite { .. }));
    assert_contains(&s, &["bias B", "entry (4, 1) is inf"]);

    let mut y = Mat::zeros(10, D);
    y[(7, 2)] = f64::NAN;
    let (e, s) = msg_of(AwgnOutput::new(y.clone(), spd(1.0), None));
    assert!(matches!(e, Error::NonFinite { .. }));
    assert_contains(&s, &["observation Y", "entry (7, 2) is NaN"]);
    // The same NaN is fine when the mask marks it missing, and an error when marked observed.
    let mut mask = Mat::from_fn(10, D, |_, _| 1.0);
    mask[(7, 2)] = 0.0;
    assert!(AwgnOutput::new(y.clone(), spd(1.0), Some(mask.clone())).is_ok());
    mask[(7, 2)] = 1.0;
    let (_, s) = msg_of(AwgnOutput::new(y, spd(1.0), Some(mask)));
    assert_contains(
        &s,
        &[
            "observation Y",
            "entry (7, 2) is NaN",
            "mask marks it observed",
        ],
    );

    let (e, s) = msg_of(GaussianPrior::new(
        vec![0.0, f64::NAN, 0.0],
        DMat::identity(D, D),
    ));
    assert!(matches!(e, Error::NonFinite { .. }));
    assert_contains(&s, &["prior mean", "NaN"]);
    let (_, s) = msg_of(BernoulliGaussianPrior::new(
        0.3,
        vec![f64::NEG_INFINITY, 0.0, 0.0],
        DMat::identity(D, D),
    ));
    assert_contains(&s, &["slab mean", "-inf"]);

    let mut c = DMat::identity(D, D);
    c[(1, 1)] = f64::NAN;
    let (e, s) = msg_of(GaussianPrior::new(vec![0.0; D], c));
    assert!(matches!(e, Error::NonFinite { .. }));
    assert_contains(&s, &["prior covariance", "entry (1, 1) is NaN"]);
}

// ---------------------------------------------------------------- covariances and precisions

#[test]
fn non_symmetric_and_non_positive_definite_matrices() {
    let mut c = DMat::identity(D, D);
    c[(0, 2)] = 0.5;
    let (e, s) = msg_of(GaussianPrior::new(vec![0.0; D], c.clone()));
    assert!(matches!(e, Error::NotSymmetric { .. }));
    assert_contains(&s, &["prior covariance", "not symmetric"]);
    let (e, s) = msg_of(BernoulliGaussianPrior::new(0.3, vec![0.0; D], c.clone()));
    assert!(matches!(e, Error::NotSymmetric { .. }));
    assert_contains(&s, &["slab covariance", "not symmetric"]);
    let (_, s) = msg_of(Spd::new("output noise precision", c, Some(D)));
    assert_contains(&s, &["output noise precision", "not symmetric"]);

    // Symmetric but indefinite: eigenvalues 3, -1, 1.
    let indef = DMat::from_row_slice(D, D, &[1.0, 2.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
    let (e, s) = msg_of(GaussianPrior::new(vec![0.0; D], indef.clone()));
    assert!(matches!(e, Error::NotPositiveDefinite { .. }));
    assert_contains(
        &s,
        &[
            "prior covariance",
            "not positive definite",
            "smallest eigenvalue is -1",
        ],
    );
    let (_, s) = msg_of(BernoulliGaussianPrior::new(
        0.3,
        vec![0.0; D],
        indef.clone(),
    ));
    assert_contains(&s, &["slab covariance", "not positive definite"]);
    let (_, s) = msg_of(Spd::new("noise precision N_1", indef, Some(D)));
    assert_contains(&s, &["noise precision N_1", "not positive definite"]);
    // Singular (positive semi-definite) is not positive definite either.
    let (_, s) = msg_of(Spd::new(
        "noise precision N_1",
        DMat::from_diagonal_element(D, D, 0.0),
        Some(D),
    ));
    assert_contains(&s, &["noise precision N_1", "not positive definite"]);
    // Wrong shape of a d x d parameter.
    let (_, s) = msg_of(GaussianPrior::new(vec![0.0; D], DMat::identity(2, 2)));
    assert_contains(&s, &["prior covariance", "expected 3 x 3", "got 2 x 2"]);
}

#[test]
fn invalid_solver_options() {
    for (config, what) in [
        (
            SolverConfig {
                gamma_init: 0.0,
                ..Default::default()
            },
            "gamma_init",
        ),
        (
            SolverConfig {
                tolerance: Some(f64::NAN),
                ..Default::default()
            },
            "tolerance",
        ),
        (
            SolverConfig {
                policy: MessagePolicy {
                    lam_min: -1.0,
                    ..Default::default()
                },
                ..Default::default()
            },
            "lam_min",
        ),
        (
            SolverConfig {
                policy: MessagePolicy {
                    damp_precision: 1.0,
                    ..Default::default()
                },
                ..Default::default()
            },
            "damp_precision",
        ),
    ] {
        let (e, s) = msg_of(Solver::new(config));
        assert!(matches!(e, Error::Invalid { .. }));
        assert_contains(&s, &[what]);
    }
}

// ---------------------------------------------------------------- divergence

/// An AWGN-like output channel that returns a NaN estimate from its third call on, i.e. at
/// iteration 2 (the output denoiser runs once per iteration).
struct FailingOutput {
    y: Mat<f64>,
    calls: AtomicUsize,
}

impl Factor for FailingOutput {
    fn describe(&self) -> String {
        "failing test output".into()
    }
    fn dim(&self) -> usize {
        self.y.ncols()
    }
}

impl OutputShape for FailingOutput {
    fn rows(&self) -> usize {
        self.y.nrows()
    }
}

impl OutputDenoiser for FailingOutput {
    fn observation(&self) -> MatRef<'_, f64> {
        self.y.as_ref()
    }
    fn denoise(&self, plus: &Message) -> Result<Belief> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        // Noise precision 4 I: ẑ = (rΓ + 4y)(Γ + 4I)^{-1}.
        let g = plus.precision.matrix();
        let sigma = (g + DMat::identity(D, D) * 4.0).try_inverse().unwrap();
        let mut mean = Mat::zeros(self.y.nrows(), D);
        for i in 0..self.y.nrows() {
            for j in 0..D {
                mean[(i, j)] = (0..D)
                    .map(|k| {
                        let h: f64 = (0..D).map(|l| plus.mean[(i, l)] * g[(l, k)]).sum::<f64>()
                            + 4.0 * self.y[(i, k)];
                        h * sigma[(k, j)]
                    })
                    .sum();
            }
        }
        if call >= 2 {
            mean[(3, 1)] = f64::NAN;
        }
        Ok(Belief::new(mean, sigma))
    }
}

impl OutputLaw for FailingOutput {
    fn resample(&self, _z: MatRef<'_, f64>, _rng: &mut Rng) -> Result<Box<dyn OutputChannel>> {
        Err(Error::invalid("failing test output", "cannot resample"))
    }
}

impl mlmatvamp::factor::MonteCarloSe for FailingOutput {}

#[test]
fn nan_from_a_custom_output_gives_diverged_at_iteration_2() {
    let y = Mat::from_fn(30, D, |i, j| ((i + 2 * j) % 7) as f64 * 0.3 - 1.0);
    let out = Arc::new(FailingOutput {
        y,
        calls: AtomicUsize::new(0),
    });
    let net = Network::new(prior(), 20, vec![layer(30, 20)], out.clone()).unwrap();
    let mut seen = vec![];
    // Stopping at the first divergence (the default rolls back and damps first: tests/robustness.rs).
    let result = Solver::new(SolverConfig {
        iterations: 10,
        policy: mlmatvamp::message::MessagePolicy {
            on_divergence: mlmatvamp::message::OnDivergence::Stop,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap()
    .run_with(&net, None, &mut |rec, _| {
        seen.push(rec.iteration);
        Control::Continue
    });
    let (e, s) = msg_of(result);
    match &e {
        Error::Diverged {
            iteration,
            location,
            ..
        } => {
            assert_eq!(*iteration, 2);
            assert_contains(location, &["output", "failing test output", "Z_1"]);
        }
        other => panic!("expected Diverged, got {other:?}"),
    }
    assert_contains(&s, &["diverged at iteration 2", "out of the output", "NaN"]);
    // Iterations 0 and 1 completed; the output was called exactly three times.
    assert_eq!(seen, vec![0, 1]);
    assert_eq!(out.calls.load(Ordering::SeqCst), 3);
}

// ---------------------------------------------------------------- public API never panics

/// A small valid network `Z_0 (20 x 3) → Z_1 (30 x 3) → Y`.
fn small_network() -> Network {
    Network::new(prior(), 20, vec![layer(30, 20)], awgn(30)).unwrap()
}

#[test]
fn layer_and_estimate_indices_out_of_range_are_errors_or_none() {
    let net = small_network();
    let (_, s) = msg_of(net.layer(0).map(|_| ()));
    assert_contains(&s, &["hidden layers are numbered 1 … 1", "got 0"]);
    let (_, s) = msg_of(net.layer(2).map(|_| ()));
    assert_contains(&s, &["got 2"]);
    assert!(net.layer(1).is_ok());
    let se_net = net.se_network();
    assert!(se_net.layer(0).is_err() && se_net.layer(7).is_err());

    let state = State::new(&net, 1e-6).unwrap();
    assert!(
        state.estimate(0).is_none(),
        "no estimate before the first pass"
    );
    assert!(state.estimate(99).is_none() && state.plus(99).is_none() && state.minus(99).is_none());
    let sol = Solver::new(SolverConfig {
        iterations: 2,
        ..Default::default()
    })
    .unwrap()
    .run(&net, None)
    .unwrap();
    assert!(sol.state.estimate(1).is_some());
    assert!(sol.state.estimate(2).is_none() && sol.state.estimate_minus(5).is_none());
}

#[test]
fn a_hand_built_state_is_checked() {
    let net = small_network();
    let mut state = State::new(&net, 1e-6).unwrap();
    // Wrong rows, wrong d, non-finite mean, wrong variable.
    let (_, s) = msg_of(state.set_minus(1, message(29, D)));
    assert_contains(
        &s,
        &[
            "backward message about Z_1",
            "expected 30 x 3",
            "got 29 x 3",
        ],
    );
    let (_, s) = msg_of(state.set_plus(0, message(20, 2)));
    assert_contains(&s, &["forward message about Z_0", "20 x 3"]);
    let mut nan = message(20, D);
    nan.mean[(4, 1)] = f64::NAN;
    let (_, s) = msg_of(state.set_minus(0, nan));
    assert_contains(&s, &["Z_0", "NaN"]);
    let (_, s) = msg_of(state.set_minus(2, message(30, D)));
    assert_contains(&s, &["variables are numbered 0 … 1", "got 2"]);
    // The backward pass before any forward pass: an error, not a panic.
    let solver = Solver::new(SolverConfig::default()).unwrap();
    let (_, s) = msg_of(solver.backward_pass(&net, &mut state));
    assert_contains(&s, &["forward pass first"]);
    // A state of another network.
    let other = Network::new(prior(), 20, vec![layer(25, 20)], awgn(25)).unwrap();
    let mut foreign = State::new(&other, 1e-6).unwrap();
    let (_, s) = msg_of(solver.forward_pass(&net, &mut foreign));
    assert_contains(&s, &["solver state", "rows [20, 30]", "got rows [20, 25]"]);
    let (_, s) = msg_of(solver.run_from(&net, foreign, None, &mut |_, _| Control::Continue));
    assert_contains(&s, &["solver state"]);
    assert!(State::new(&net, 0.0).is_err() && State::new(&net, f64::NAN).is_err());
}

#[test]
fn a_record_with_a_truth_of_the_wrong_shape_is_an_error() {
    let net = small_network();
    let solver = Solver::new(SolverConfig {
        iterations: 1,
        ..Default::default()
    })
    .unwrap();
    let sol = solver.run(&net, None).unwrap();
    let good = vec![Mat::zeros(20, D), Mat::zeros(30, D)];
    assert!(solver
        .record(&net, &sol.state, None, Some(&good), 0.0)
        .is_ok());
    let short = vec![Mat::zeros(20, D)];
    let (_, s) = msg_of(solver.record(&net, &sol.state, None, Some(&short), 0.0));
    assert_contains(&s, &["truth", "2 matrices", "got 1 matrices"]);
    let wrong = vec![Mat::zeros(20, D), Mat::zeros(30, 2)];
    let (_, s) = msg_of(solver.record(&net, &sol.state, None, Some(&wrong), 0.0));
    assert_contains(&s, &["truth Z_1", "expected 30 x 3", "got 30 x 2"]);
    let (_, s) = msg_of(solver.record(&net, &sol.state, Some(&wrong), None, 0.0));
    assert_contains(&s, &["previous estimates Z_1"]);
    let (_, s) = msg_of(mlmatvamp::solver::error_stats(
        Mat::<f64>::zeros(3, 2).as_ref(),
        Mat::<f64>::zeros(2, 3).as_ref(),
    ));
    assert_contains(&s, &["truth", "expected 3 x 2", "got 2 x 3"]);
}

#[test]
fn the_state_evolution_checks_its_state_and_laws() {
    use mlmatvamp::se::{SeBackward, SeConfig, SeForward, SeState, StateEvolution};
    let net = small_network();
    let se = StateEvolution::new(SeConfig {
        iterations: 2,
        n_mc: 500,
        ..Default::default()
    })
    .unwrap();
    let mut state = se.initial_state(&net).unwrap();
    // Recording before any step.
    let (_, s) = msg_of(se.record(&net, &state, 0, 0.0, None));
    assert_contains(&s, &["has not completed an iteration"]);
    // The backward pass before the forward pass.
    let (_, s) = msg_of(se.backward_pass(&net, &mut state, 0, false));
    assert_contains(&s, &["forward pass first"]);
    se.step(&net, &mut state, 0).unwrap();
    assert!(se.record(&net, &state, 0, 0.0, None).is_ok());
    assert!(state.estimate(2).is_none() && state.plus(9).is_none());
    // Laws of the wrong size.
    let eye = |k: usize| DMat::identity(k, k);
    let bad = SeBackward {
        psi: eye(2),
        t: eye(2),
        gamma: Spd::identity(2),
    };
    let (_, s) = msg_of(state.set_minus(0, bad.clone()));
    assert_contains(&s, &["backward law about Z_0", "3 x 3"]);
    let (_, s) = msg_of(state.set_plus(
        1,
        SeForward {
            k: eye(4),
            gamma: Spd::identity(3),
        },
    ));
    assert_contains(&s, &["forward law about Z_1", "K 6 x 6"]);
    assert!(SeState::from_minus(vec![]).is_err());
    // A state of another network.
    let other = Network::new(prior(), 20, vec![layer(25, 20)], awgn(25)).unwrap();
    let two = Network::new(
        Arc::new(GaussianPrior::isotropic(2, 1.0).unwrap()),
        20,
        vec![Arc::new(
            LinearLayer::new(weight(30, 20).as_ref(), None, None, 2).unwrap(),
        )],
        Arc::new(AwgnOutput::new(Mat::zeros(30, 2), Spd::identity(2), None).unwrap()),
    )
    .unwrap();
    let mut foreign = se.initial_state(&two).unwrap();
    let (_, s) = msg_of(se.step(&net, &mut foreign, 0));
    assert_contains(&s, &["SE state", "d = 3", "got L = 2, d = 2"]);
    assert!(se.initial_state(&other).is_ok());
    // A factor's SE step called by hand with a law of another size.
    let ctx = mlmatvamp::se::SeContext {
        policy: &MessagePolicy::default(),
        n_mc: 200,
        psi_mode: Default::default(),
        seed: 0,
        iteration: 0,
        location: "test".into(),
        want_samples: false,
    };
    let (_, s) = msg_of(prior().se_forward(&bad, &ctx, None));
    assert_contains(&s, &["backward law of an SE step", "3-dimensional"]);
}

#[test]
fn small_linear_algebra_checks_its_shapes() {
    let a = Spd::scaled_identity(3, 2.0).unwrap();
    let (_, s) = msg_of(a.solve_right(&DMat::zeros(4, 2)));
    assert_contains(&s, &["3 columns", "got 4 x 2"]);
    assert!(a.congruence(&DMat::identity(2, 2)).is_err());
    assert_eq!(Spd::identity(0).dim(), 0);
    let (_, s) = msg_of(mlmatvamp::message::extrinsic_mean(
        Mat::<f64>::zeros(5, 3).as_ref(),
        &DMat::identity(3, 3),
        &message(4, 3),
        &a,
    ));
    assert_contains(&s, &["extrinsic mean", "5 x 3"]);
    let mut adam = mlmatvamp::apps::adam::AdamStep::new(3, 0.1, 0.9, 0.999, 1e-8).unwrap();
    assert!(adam.step(&mut [0.0; 2], &[0.0; 3]).is_err());
    assert!(adam.step(&mut [0.0; 3], &[1.0; 3]).is_ok());
}
