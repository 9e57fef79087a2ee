//! The matched-MMSE identities of the state evolution (spec §6.3, test §8.2.7) and the exactness
//! of its closed-form steps.
//!
//! For Bayes-matched MMSE denoisers every message is "calibrated": the backward law has
//! `Ψ⁻ = I`, `T⁻ = (Γ̄⁻)^{-1}`, and the forward law `K⁺_BB = (Γ̄⁺)^{-1}`, `K⁺_AB = −K⁺_BB`; the
//! predicted error covariance of each estimate equals the algorithm's own `E[Σ]`.
//!
//! * (a) Linear-Gaussian network (Gaussian prior, linear layer, AWGN output): every SE step is in
//!   closed form, so from iteration 1 on (iteration 0 starts from the uninformative, hence
//!   slightly mismatched, `Γ⁻ = 1e-6 I`) the identities hold to `1e-10`. With the actual singular
//!   values of `W`, the SE's predicted covariance equals the algorithm's `Σ̄` to `1e-10` (all
//!   precisions are data-independent here); with the Marchenko–Pastur law it approaches it as the
//!   size grows, and the law's reduced discretisation matches the full quantile set.
//! * (b) MMV (Bernoulli–Gaussian prior, ρ = 0.2, d = 3, correlated slab, `n_1/n_0 = 0.6` MP law,
//!   AWGN, MMSE): the prior's step is Monte Carlo, so the identities hold within Monte-Carlo error,
//!   estimated from repeated SE runs with different seeds (`Ψ⁻ = I` and the output's `T⁻` are
//!   exact: they come out of linear denoisers); `psi_mode = identity` gives `Ψ⁻ = I`.
//! * (c) The closed-form AWGN output step (with missing entries, data mask or mask law) agrees
//!   with the generic Monte-Carlo step within Monte-Carlo error; being linear, it gives `Ψ⁻ = I`
//!   for any forward law, and without a mask `T⁻ = N^{-1}`, `Γ̄⁻ = N` exactly.

mod common;

use common::*;
use faer::Mat;
use mlmatvamp::denoise::mask_law::AwgnMaskLaw;
use mlmatvamp::factor::monte_carlo as mc;
use mlmatvamp::message::MessagePolicy;
use mlmatvamp::predict::gaussian_law_spec;
use mlmatvamp::prelude::*;
use mlmatvamp::se::{
    LinearSpec, PsiMode, SeBackward, SeConfig, SeContext, SeForward, SeIteration,
    SpectralLinearLayer, StateEvolution,
};
use std::sync::Arc;

fn m(rows: &[Vec<f64>]) -> DMat {
    DMat::from_fn(rows.len(), rows[0].len(), |i, j| rows[i][j])
}

fn inv(a: &DMat) -> DMat {
    a.clone().try_inverse().expect("invertible")
}

/// `max |a − b| / max |b|`.
fn rel(a: &DMat, b: &DMat) -> f64 {
    (a - b).abs().max() / b.abs().max()
}

fn sigma0() -> DMat {
    DMat::from_row_slice(3, 3, &[1.0, 0.5, 0.2, 0.5, 1.0, 0.4, 0.2, 0.4, 1.0])
}

fn noise() -> Spd {
    Spd::new(
        "N",
        DMat::from_row_slice(3, 3, &[50.0, 10.0, 0.0, 10.0, 50.0, 5.0, 0.0, 5.0, 40.0]),
        Some(3),
    )
    .unwrap()
}

/// The four identities of one variable at one iteration, as (name, deviation, scale) triples.
fn identity_deviations(it: &SeIteration, l: usize) -> Vec<(&'static str, DMat, DMat)> {
    let v = &it.variables[l];
    let d = v.se_error_cov.len();
    let k = m(&v.k_plus);
    let k_ab = k.view((0, d), (d, d)).into_owned();
    let k_bb = k.view((d, d), (d, d)).into_owned();
    let gp_inv = inv(&m(&v.gamma_plus));
    let gm_inv = inv(&m(&v.gamma_minus));
    let eye = DMat::identity(d, d);
    vec![
        ("Psi- - I", m(&v.psi_minus) - &eye, eye.clone()),
        ("T- - (Gamma-)^-1", m(&v.t_minus) - &gm_inv, gm_inv.clone()),
        ("K+_BB - (Gamma+)^-1", &k_bb - &gp_inv, gp_inv.clone()),
        ("K+_AB + K+_BB", &k_ab + &k_bb, k_bb.clone()),
        (
            "se_error_cov - cov",
            m(&v.se_error_cov) - m(&v.cov),
            m(&v.cov),
        ),
    ]
}

fn gaussian_network(layer: Arc<dyn Layer>, n0: usize, n1: usize) -> Network {
    let prior = Arc::new(GaussianPrior::new(vec![0.0; 3], sigma0()).unwrap());
    let out = Arc::new(AwgnOutput::new(Mat::zeros(n1, 3), noise(), None).unwrap());
    Network::new(prior, n0, vec![layer], out).unwrap()
}

/// [`gaussian_network`] with a layer that has only its SE step.
fn gaussian_se_network(layer: Arc<dyn LayerSe>, n0: usize, n1: usize) -> SeNetwork {
    let prior = Arc::new(GaussianPrior::new(vec![0.0; 3], sigma0()).unwrap());
    let out = Arc::new(AwgnOutput::new(Mat::zeros(n1, 3), noise(), None).unwrap());
    SeNetwork::new(prior, n0, vec![layer], out).unwrap()
}

fn se(iterations: usize, n_mc: usize, seed: u64, psi_mode: PsiMode) -> StateEvolution {
    StateEvolution::new(SeConfig {
        iterations,
        n_mc,
        seed,
        psi_mode,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn linear_gaussian_identities_are_exact() {
    // Noiseless wide W (n_1/n_0 = 0.6) and a noisy tall W with a bias.
    let bias = DMat::from_row_slice(3, 3, &[0.3, 0.1, 0.0, 0.1, 0.2, 0.05, 0.0, 0.05, 0.1]);
    let n_lin = Spd::new(
        "N_1",
        DMat::from_row_slice(3, 3, &[20.0, 4.0, 0.0, 4.0, 30.0, 2.0, 0.0, 2.0, 25.0]),
        Some(3),
    )
    .unwrap();
    let cases = [
        (600usize, 1000usize, None, None),
        (1500, 1000, Some(n_lin), Some(bias)),
    ];
    for (n1, n0, nz, b) in cases {
        let spec = LinearSpec::marchenko_pastur(n1, n0, 1.0 / n0 as f64, 3, nz, b).unwrap();
        let net = gaussian_se_network(Arc::new(SpectralLinearLayer::new(spec)), n0, n1);
        let (iters, _) = se(4, 1000, 3, PsiMode::General).run(&net, None).unwrap();
        let mut checked = 0;
        for it in &iters[1..] {
            for l in 0..2 {
                for (name, dev, scale) in identity_deviations(it, l) {
                    let r = dev.abs().max() / scale.abs().max();
                    assert!(
                        r < 1e-10,
                        "{n1}x{n0}, iteration {}, Z_{l}: {name} = {r:e} (relative)",
                        it.iteration
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 3 * 2 * 5);
        // Iteration 0 is mismatched (R⁻ = 0 with Γ⁻ = 1e-6 I), at the level of 1e-6: the check
        // above is not vacuous.
        let k1 = m(&iters[0].variables[1].k_plus);
        let gp = inv(&m(&iters[0].variables[1].gamma_plus));
        let bb = k1.view((3, 3), (3, 3)).into_owned();
        assert!(rel(&bb, &gp) > 1e-9, "iteration 0 unexpectedly matched");
    }
}

#[test]
fn se_with_actual_singular_values_reproduces_the_algorithm() {
    // All precisions of a linear-Gaussian network are data-independent, so the SE (closed form,
    // with the actual singular values of W) reproduces the algorithm's Γ and Σ̄ exactly; the
    // algorithm's empirical error matches the SE's prediction within sampling error.
    let (n0, n1) = (400, 240);
    let mut rng = rng_from_seed(11);
    let w = gaussian_w(n1, n0, &mut rng);
    let layer = Arc::new(LinearLayer::new(w.as_ref(), None, None, 3).unwrap());
    let model = gaussian_network(layer, n0, n1);
    let (truth, net) = model.sample(&mut rng).unwrap();
    let iterations = 4;
    let sol = Solver::new(SolverConfig {
        iterations,
        ..Default::default()
    })
    .unwrap()
    .run(&net, Some(&truth))
    .unwrap();
    let (iters, _) = se(iterations, 1000, 0, PsiMode::General)
        .run(&net, None)
        .unwrap();
    for (rec, it) in sol.history.iter().zip(&iters) {
        for l in 0..2 {
            let alg = m(&rec.variables[l].cov);
            let pred = m(&it.variables[l].cov);
            assert!(
                rel(&pred, &alg) < 1e-10,
                "iteration {}, Z_{l}: SE E[Σ] vs algorithm Σ̄: {:e}",
                rec.iteration,
                rel(&pred, &alg)
            );
            assert!(
                rel(
                    &m(&it.variables[l].gamma_plus),
                    &m(&rec.variables[l].gamma_plus)
                ) < 1e-10
            );
            if rec.iteration >= 1 {
                // SE mse = tr E = tr E[Σ] (matched), and the empirical error agrees with it within
                // 5 standard deviations of (1/n)||Ẑ − Z||² (≈ sqrt(2/(n d)) relative for Gaussian
                // errors).
                let se_mse = it.variables[l].se_mse;
                let emp = rec.variables[l].mse.unwrap();
                let n = net.rows()[l] as f64;
                let tol = 5.0 * (2.0 / (3.0 * n)).sqrt();
                assert!(
                    ((emp - se_mse) / se_mse).abs() < tol,
                    "iteration {}, Z_{l}: empirical {emp} vs SE {se_mse} (tol {tol})",
                    rec.iteration
                );
            }
        }
    }
}

#[test]
fn marchenko_pastur_se_is_the_large_system_limit() {
    // The algorithm's predicted MSE (tr Σ̄, a spectral statistic of W) converges to the SE with
    // the Marchenko–Pastur law: its deviation shrinks as n grows at a fixed ratio 0.6.
    let iterations = 3;
    let mp_mse = |n0: usize| {
        let n1 = 3 * n0 / 5;
        let spec = LinearSpec::marchenko_pastur(n1, n0, 1.0 / n0 as f64, 3, None, None).unwrap();
        let net = gaussian_se_network(Arc::new(SpectralLinearLayer::new(spec)), n0, n1);
        let (iters, _) = se(iterations, 1000, 0, PsiMode::General)
            .run(&net, None)
            .unwrap();
        iters.last().unwrap().variables[0].se_mse
    };
    let alg_mse = |n0: usize, seed: u64| {
        let n1 = 3 * n0 / 5;
        let mut rng = rng_from_seed(seed);
        let w = gaussian_w(n1, n0, &mut rng);
        let layer = Arc::new(LinearLayer::new(w.as_ref(), None, None, 3).unwrap());
        let net = gaussian_network(layer, n0, n1);
        let sol = Solver::new(SolverConfig {
            iterations,
            ..Default::default()
        })
        .unwrap()
        .run(&net, None)
        .unwrap();
        sol.history.last().unwrap().variables[0].predicted_mse
    };
    let gap = |n0: usize| {
        let se = mp_mse(n0);
        (0..2)
            .map(|s| ((alg_mse(n0, 40 + s) - se) / se).abs())
            .fold(0.0, f64::max)
    };
    let (small, large) = (gap(100), gap(1000));
    eprintln!("relative gap of the algorithm's tr Σ̄ to the MP-law SE: n_0 = 100: {small:e}, n_0 = 1000: {large:e}");
    assert!(large < 1e-3, "n_0 = 1000: relative gap {large:e}");
    assert!(
        large < small / 2.0,
        "gap did not shrink: {small:e} -> {large:e}"
    );
}

#[test]
fn reduced_law_discretisation_matches_the_full_quantile_set() {
    // 6000 x 10000 (6000 singular values) against the reduced law (3 x 5 scaled to 2001 values).
    let (n0, n1) = (10_000, 6_000);
    let run = |spec: LinearSpec| {
        // The SE uses the shape only through its ratios; the network needs consistent rows.
        let (a, b) = (spec.n_in, spec.n_out);
        let net = gaussian_se_network(Arc::new(SpectralLinearLayer::new(spec)), a, b);
        let (iters, _) = se(3, 1000, 0, PsiMode::General).run(&net, None).unwrap();
        (iters[2].variables[0].se_mse, iters[2].variables[1].se_mse)
    };
    let full = run(LinearSpec::marchenko_pastur(n1, n0, 1.0 / n0 as f64, 3, None, None).unwrap());
    let reduced = gaussian_law_spec(n1, n0, 1.0 / n0 as f64, 3, None, None).unwrap();
    assert!(reduced.singular_values.len() < 2100);
    let red = run(reduced);
    for (a, b) in [(full.0, red.0), (full.1, red.1)] {
        assert!(((a - b) / a).abs() < 1e-4, "full {a} vs reduced {b}");
    }
}

/// The MMV network of spec §8.2.8 with an MP-law design.
fn mmv_network(n0: usize) -> SeNetwork {
    let n1 = 3 * n0 / 5;
    let prior = Arc::new(BernoulliGaussianPrior::new(0.2, vec![0.0; 3], sigma0()).unwrap());
    let spec = LinearSpec::marchenko_pastur(n1, n0, 1.0 / n0 as f64, 3, None, None).unwrap();
    let out = Arc::new(AwgnOutput::new(Mat::zeros(n1, 3), noise(), None).unwrap());
    SeNetwork::new(
        prior,
        n0,
        vec![Arc::new(SpectralLinearLayer::new(spec))],
        out,
    )
    .unwrap()
}

#[test]
fn mmv_identities_hold_within_monte_carlo_error() {
    // The MP law's discretisation (n_1 = 300 quantiles) does not enter the identities.
    let net = mmv_network(500);
    let (runs, iterations, n_mc) = (8usize, 4usize, 50_000usize);
    let all: Vec<Vec<SeIteration>> = (0..runs)
        .map(|r| {
            se(iterations, n_mc, 1000 + r as u64, PsiMode::General)
                .run(&net, None)
                .unwrap()
                .0
        })
        .collect();
    let mut checked = 0;
    for k in 1..iterations {
        for l in 0..2 {
            let per_run: Vec<Vec<(&str, DMat, DMat)>> = all
                .iter()
                .map(|it| identity_deviations(&it[k], l))
                .collect();
            for q in 0..per_run[0].len() {
                let name = per_run[0][q].0;
                let devs: Vec<&DMat> = per_run.iter().map(|x| &x[q].1).collect();
                let scale = per_run[0][q].2.norm();
                let mean = devs.iter().fold(DMat::zeros(3, 3), |a, b| a + *b) / runs as f64;
                // Entry-wise sample variance over the runs; the standard error of the mean
                // deviation's Frobenius norm is sqrt(Σ_ij s²_ij / R).
                let var = devs
                    .iter()
                    .fold(DMat::zeros(3, 3), |a, b| a + (*b - &mean).map(|x| x * x))
                    / (runs - 1) as f64;
                let se_norm = (var.sum() / runs as f64).sqrt();
                let dev = mean.norm();
                eprintln!(
                    "k {k}, Z_{l}, {name}: |mean deviation| {dev:.2e}, 3 sigma {:.2e}, scale {scale:.2e}",
                    3.0 * se_norm
                );
                // Exact whatever the Monte-Carlo error: Ψ⁻ of both variables (the backward
                // messages come out of linear denoisers — the AWGN output and the linear layer —
                // whose Onsager term cancels the correlation with the truth, spec §6.3), and T⁻ of
                // Z_1 (the closed-form output: e⁻ is the noise itself).
                let exact = q == 0 || (l == 1 && q == 1);
                if exact {
                    assert!(dev < 1e-10 * scale, "k {k}, Z_{l}: {name} = {dev:e}");
                } else {
                    // Quadrature-based steps have no Monte-Carlo spread: then the
                    // identity must hold to the quadrature's accuracy (measured 0.06–0.6%).
                    assert!(
                        dev <= 3.0 * se_norm || dev < 1e-2 * scale,
                        "k {k}, Z_{l}: {name}: |mean deviation| {dev:e} > 3 sigma {:e}",
                        3.0 * se_norm
                    );
                    // Not vacuous: the Monte-Carlo error is small against the matrix scale
                    // (both Frobenius norms), so a violation of 5% would be detected.
                    assert!(
                        3.0 * se_norm < 0.05 * scale,
                        "k {k}, Z_{l}: {name}: 3 sigma {:e} vs scale {scale:e}",
                        3.0 * se_norm
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * 2 * 5);

    // psi_mode = identity: Ψ⁻ = I by construction, and the predictions agree with the general
    // mode's (whose Ψ⁻ is I to rounding here) within the Monte-Carlo error.
    let (ident, _) = se(iterations, n_mc, 1000, PsiMode::Identity)
        .run(&net, None)
        .unwrap();
    let eye = DMat::identity(3, 3);
    for it in &ident {
        for v in &it.variables {
            assert_eq!(m(&v.psi_minus), eye, "iteration {}", it.iteration);
        }
    }
    for l in 0..2 {
        let gen: Vec<f64> = all
            .iter()
            .map(|it| it[iterations - 1].variables[l].se_mse)
            .collect();
        let mean = gen.iter().sum::<f64>() / runs as f64;
        let sd = (gen.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (runs - 1) as f64).sqrt();
        let id = ident[iterations - 1].variables[l].se_mse;
        // One identity-mode run against the general runs: within 3 sd of a single run.
        assert!(
            (id - mean).abs() <= 3.0 * sd * (1.0 + 1.0 / runs as f64).sqrt() + 1e-10 * mean.abs(),
            "Z_{l}: identity mode {id} vs general {mean} ± {sd}"
        );
    }
}

fn ctx<'a>(policy: &'a MessagePolicy, n_mc: usize, seed: u64) -> SeContext<'a> {
    SeContext {
        policy,
        n_mc,
        psi_mode: PsiMode::General,
        seed,
        iteration: 1,
        location: "test".into(),
        want_samples: false,
    }
}

/// A forward law about Z_{L−1} that is *not* matched (so that Ψ⁻ ≠ I with missing entries).
fn forward_law(rng: &mut Rng) -> SeForward {
    let k = random_spd(6, 1.0, rng);
    SeForward {
        k,
        gamma: Spd::new("Γ⁺", random_spd(3, 5.0, rng), Some(3)).unwrap(),
    }
}

/// Compares a closed-form backward law with `runs` Monte-Carlo ones (mean within 3 standard
/// errors, Frobenius norm, for Ψ⁻, T⁻, Γ̄⁻ and the error covariance).
fn check_against_mc(exact: &(SeBackward, DMat), mc_runs: &[(SeBackward, DMat)], what: &str) {
    type Getter = fn(&(SeBackward, DMat)) -> DMat;
    let get: [(&str, Getter); 4] = [
        ("Psi-", |x| x.0.psi.clone()),
        ("T-", |x| x.0.t.clone()),
        ("Gamma-", |x| x.0.gamma.matrix().clone()),
        ("error_cov", |x| x.1.clone()),
    ];
    let r = mc_runs.len() as f64;
    for (name, f) in get {
        let e = f(exact);
        let vals: Vec<DMat> = mc_runs.iter().map(f).collect();
        let mean = vals.iter().fold(DMat::zeros(3, 3), |a, b| a + b) / r;
        let var = vals
            .iter()
            .fold(DMat::zeros(3, 3), |a, b| a + (b - &mean).map(|x| x * x))
            / (r - 1.0);
        let se_norm = (var.sum() / r).sqrt();
        let dev = (&mean - &e).norm();
        assert!(
            dev <= 3.0 * se_norm + 1e-12 * e.norm(),
            "{what}: {name}: closed form vs MC mean differ by {dev:e} (3 sigma {:e})",
            3.0 * se_norm
        );
        assert!(
            3.0 * se_norm < 0.05 * e.norm().max(1e-3),
            "{what}: {name}: MC too noisy"
        );
    }
}

#[test]
fn closed_form_awgn_output_matches_monte_carlo() {
    let policy = MessagePolicy::default();
    let mut rng = rng_from_seed(5);
    let plus = forward_law(&mut rng);
    let n = 300;
    // A data mask: 30% of the entries missing.
    let mask = Mat::from_fn(n, 3, |_, _| {
        use rand::RngExt;
        if rng.random::<f64>() < 0.7 {
            1.0
        } else {
            0.0
        }
    });
    let data = AwgnOutput::new(Mat::zeros(n, 3), noise(), Some(mask)).unwrap();
    let law = AwgnMaskLaw::new(n, noise(), 0.7).unwrap();
    let (runs, n_mc) = (6, 40_000);
    let pack = |s: mlmatvamp::se::SeStep<SeBackward>| (s.out, s.estimate.error_cov);

    let exact = pack(
        data.se_backward(&plus, &ctx(&policy, n_mc, 0), None)
            .unwrap(),
    );
    let mc_runs: Vec<_> = (0..runs)
        .map(|s| {
            pack(mc::output_backward(&data, &plus, &ctx(&policy, n_mc, 10 + s), None).unwrap())
        })
        .collect();
    check_against_mc(&exact, &mc_runs, "data mask");
    // The denoiser is linear, so the Onsager term removes the correlation with the truth whatever
    // the forward law: Ψ⁻ = I exactly (spec §6.3), while the missing entries raise T⁻ above N^{-1}.
    assert!(rel(&exact.0.psi, &DMat::identity(3, 3)) < 1e-12);
    assert!(exact.0.t.trace() > 1.2 * noise().inverse().trace());

    let exact = pack(
        law.se_backward(&plus, &ctx(&policy, n_mc, 0), None)
            .unwrap(),
    );
    let mc_runs: Vec<_> = (0..runs)
        .map(|s| pack(mc::output_backward(&law, &plus, &ctx(&policy, n_mc, 20 + s), None).unwrap()))
        .collect();
    check_against_mc(&exact, &mc_runs, "mask law");
    let w: f64 = law.patterns().iter().map(|p| p.1).sum();
    assert!((w - 1.0).abs() < 1e-14 && law.patterns().len() == 8);

    // Without a mask the output's backward error is the noise itself, whatever the forward law:
    // Ψ⁻ = I, T⁻ = N^{-1}, Γ̄⁻ = N exactly.
    let full = AwgnOutput::new(Mat::zeros(n, 3), noise(), None).unwrap();
    let step = full
        .se_backward(&plus, &ctx(&policy, n_mc, 0), None)
        .unwrap();
    let nz = noise();
    assert!(rel(&step.out.psi, &DMat::identity(3, 3)) < 1e-12);
    assert!(rel(&step.out.t, &nz.inverse()) < 1e-12);
    assert!(rel(step.out.gamma.matrix(), nz.matrix()) < 1e-12);
}
