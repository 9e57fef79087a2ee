//! Times the two-layer output's MAP rows (`G⁻_2`, sigmoid, `d = 4`) on the message of a
//! Figure-2 trial, rows solved side by side and one at a time, interleaved, and checks that both
//! give the same bits: `cargo run --release -p mlmatvamp --example two_layer_rows -- [ntr] [reps]`.
use mlmatvamp::apps::two_layer::{Init, TwoLayerConfig};
use mlmatvamp::apps::two_layer_vamp::VampConfig;
use mlmatvamp::denoise::TwoLayerOutput;
use mlmatvamp::experiments::fig2::draw_trial;
use mlmatvamp::message::Message;
use mlmatvamp::spd::DMat;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let ntr = args.first().copied().unwrap_or(4000);
    let reps = args.get(1).copied().unwrap_or(50);
    let problem = TwoLayerConfig {
        ntr,
        ..Default::default()
    };
    let (t, init) = draw_trial(&problem, &Init::reference(), 11)?;
    let cfg = VampConfig {
        analytic_every_iteration: false,
        ..Default::default()
    };
    // The forward message into the output after iteration 5.
    let mut msg: Option<Message> = None;
    cfg.run_with(&t, &init, &mut |rec, state| {
        if rec.iteration == 5 {
            msg = state.plus(1).cloned();
        }
    })?;
    let msg = msg.ok_or("no message")?;
    let f2 = DMat::from_fn(t.f2.nrows(), t.f2.ncols(), |i, j| t.f2[(i, j)]);
    let lanes = TwoLayerOutput::new(t.y_train.clone(), f2, t.activation(), t.yvar, cfg.estimator)?;
    let one = lanes.clone().with_lane_kernels(false);
    let (a, _) = lanes.denoise_with_diagnostics(&msg)?;
    let (b, _) = one.denoise_with_diagnostics(&msg)?;
    let same = (0..a.mean.ncols())
        .all(|j| (0..a.mean.nrows()).all(|i| a.mean[(i, j)].to_bits() == b.mean[(i, j)].to_bits()))
        && a.cov
            .iter()
            .zip(b.cov.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits());
    let mut best = [f64::INFINITY; 2];
    for _ in 0..reps {
        for (k, out) in [&lanes, &one].into_iter().enumerate() {
            let s = Instant::now();
            std::hint::black_box(out.denoise_with_diagnostics(&msg)?);
            best[k] = best[k].min(s.elapsed().as_secs_f64());
        }
    }
    println!(
        "ntr {ntr}: rows side by side {:.3} ms, one at a time {:.3} ms (best of {reps}); same bits: {same}",
        best[0] * 1e3,
        best[1] * 1e3
    );
    Ok(())
}
