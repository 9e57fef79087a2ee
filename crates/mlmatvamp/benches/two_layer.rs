//! Cost of one Figure-2 trial per method (spec §7): ML-Mat-VAMP (20 iterations, MAP output
//! estimator, including the thin SVD of `X_tr`) and ADAM (100 epochs, batch 32) on the paper's
//! problem (sigmoid, `nin = 100`, `d = 4`, SNR 10 dB) at `ntr = 1000` and `ntr = 4000`. The trial
//! data and the initial estimate are drawn once, outside the timed region. As inside the `fig2`
//! sweep, faer's dense products run sequentially (`Par::Seq`); the output denoiser's row map
//! uses the rayon pool.
//!
//! Run with `cargo bench --bench two_layer`.

use divan::Bencher;
use mlmatvamp::apps::adam::AdamConfig;
use mlmatvamp::apps::two_layer::{Init, InitialEstimate, TwoLayerConfig, TwoLayerTrial};
use mlmatvamp::apps::two_layer_vamp::VampConfig;
use mlmatvamp::experiments::fig2::{adam_seed, draw_trial};
use mlmatvamp::rng_from_seed;
use std::sync::OnceLock;

const SEED: u64 = 11;

fn main() {
    faer::set_global_parallelism(faer::Par::Seq);
    divan::main();
}

fn trial(ntr: usize) -> &'static (TwoLayerTrial, InitialEstimate) {
    static T1000: OnceLock<(TwoLayerTrial, InitialEstimate)> = OnceLock::new();
    static T4000: OnceLock<(TwoLayerTrial, InitialEstimate)> = OnceLock::new();
    let cell = if ntr == 1000 { &T1000 } else { &T4000 };
    cell.get_or_init(|| {
        let problem = TwoLayerConfig {
            ntr,
            ..Default::default()
        };
        draw_trial(&problem, &Init::reference(), SEED).expect("trial")
    })
}

/// One ML-Mat-VAMP trial: network construction (SVD), 20 iterations, the held-out test MSE per
/// iteration and the analytic test error at the end (as in `fig2`).
#[divan::bench(args = [1000, 4000], sample_count = 5, sample_size = 1)]
fn ml_mat_vamp(bencher: Bencher, ntr: usize) {
    let (t, init) = trial(ntr);
    let cfg = VampConfig {
        analytic_every_iteration: false,
        ..Default::default()
    };
    bencher.bench(|| cfg.run(t, init).expect("ML-Mat-VAMP"));
}

/// One ADAM trial: 100 epochs of batch-32 Adam from the same start, then the test MSE.
#[divan::bench(args = [1000, 4000], sample_count = 5, sample_size = 1)]
fn adam(bencher: Bencher, ntr: usize) {
    let (t, init) = trial(ntr);
    let cfg = AdamConfig::default();
    let reg = cfg.regularization.weight(t).expect("reg");
    bencher.bench(|| {
        let fit = cfg
            .fit(
                t.x_train.as_ref(),
                t.y_train.as_ref(),
                t.f2.as_ref(),
                t.activation(),
                reg,
                init.f1.as_ref(),
                &mut rng_from_seed(adam_seed(SEED)),
                |_, _| Ok(()),
            )
            .expect("ADAM");
        t.test_mse(fit.f1.as_ref()).expect("test MSE")
    });
}
