//! A fully observed AWGN output sends its exact likelihood message `(Y, N)` (eq. (2.1): its
//! belief divided by the incoming message), not the rounded quotient, so that the linear layer
//! below sees the same bits at every iteration; with a mask, or when damping moves the message,
//! the computed message is sent.

use faer::Mat;
use mlmatvamp::prelude::*;
use std::sync::Arc;

fn network(mask: Option<Mat<f64>>, seed: u64) -> (Vec<Mat<f64>>, Network) {
    let mut rng = rng_from_seed(seed);
    let (n, d) = (60, 2);
    let w = mlmatvamp::denoise::standard_normal(90, n, &mut rng) * faer::Scale(0.1);
    let prior = Arc::new(
        GaussianPrior::new(vec![0.0, 0.5], Spd::identity(d).into_matrix()).expect("prior"),
    );
    let layer = Arc::new(LinearLayer::new(w.as_ref(), None, None, d).expect("layer"));
    let noise = Spd::from_symmetric(
        "N",
        nalgebra::DMatrix::from_row_slice(2, 2, &[20.0, 3.0, 3.0, 10.0]),
    )
    .expect("noise");
    let out = Arc::new(AwgnOutput::new(Mat::zeros(90, d), noise, mask).expect("output"));
    let model = Network::new(prior, n, vec![layer], out).expect("network");
    model.sample(&mut rng).expect("sample")
}

#[test]
fn a_fully_observed_awgn_output_sends_y_and_n_exactly() {
    let (_, net) = network(None, 3);
    let y = net.output().observation().to_owned();
    let solver = Solver::new(SolverConfig {
        iterations: 6,
        ..Default::default()
    })
    .expect("solver");
    let sol = solver.run(&net, None).expect("run");
    let msg = sol.state.minus(1).expect("message into the layer");
    for j in 0..y.ncols() {
        for i in 0..y.nrows() {
            assert_eq!(msg.mean[(i, j)].to_bits(), y[(i, j)].to_bits());
        }
    }
    let n = nalgebra::DMatrix::from_row_slice(2, 2, &[20.0, 3.0, 3.0, 10.0]);
    assert_eq!(msg.precision.matrix(), &n);
}

#[test]
fn with_a_mask_the_computed_message_is_sent() {
    // Half the entries of the first column unobserved: rows have different precisions, there is
    // no single likelihood message, and the computed one (not `Y`) goes to the layer.
    let mask = Mat::from_fn(90, 2, |i, j| if j == 0 && i % 2 == 0 { 0.0 } else { 1.0 });
    let (_, net) = network(Some(mask), 4);
    let solver = Solver::new(SolverConfig {
        iterations: 4,
        ..Default::default()
    })
    .expect("solver");
    let sol = solver.run(&net, None).expect("run");
    let msg = sol.state.minus(1).expect("message into the layer");
    let y = net.output().observation();
    let differs = (0..90).any(|i| msg.mean[(i, 0)].to_bits() != y[(i, 0)].to_bits());
    assert!(differs, "a masked output's message is not its observation");
}
