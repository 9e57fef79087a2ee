//! Algorithm 1 index regression (spec §8.2.9, §2.3).
//!
//! The printed Algorithm 1 subtracts the wrong layer's message in the backward pass:
//! * line 18: `R⁻_{k+1,L−1} = (Ẑ⁻_{k,L−1}Λ⁻ − R⁺_{k,0}Γ⁺_{k,0})(Γ⁻_{k,0})^{-1}`
//!   (corrected: `R⁺_{k,L−1}Γ⁺_{k,L−1}` and `(Γ⁻_{k+1,L−1})^{-1}`);
//! * line 23: `R⁻_{k+1,l−1} = (Ẑ⁻_{k,l−1}Λ⁻ − R⁺_{k,l}Γ⁺_{k,l})(Γ⁻_{k+1,l})^{-1}`
//!   (corrected: `R⁺_{k,l−1}Γ⁺_{k,l−1}` and `(Γ⁻_{k+1,l−1})^{-1}`).
//!
//! A hand-written loop here runs Algorithm 1 with the library's public denoisers and
//! [`MessagePolicy::extrinsic`], with either the corrected or the printed indices. On an `L = 4`
//! network whose variables all have the same number of rows (so that the wrong indices still
//! type-check), the corrected loop reproduces the library's [`Solver`] iterate by iterate and
//! passes the fixed-point check of `tests/fixed_point.rs`; the printed one fails it.

mod common;

use common::*;
use faer::Mat;
use mlmatvamp::prelude::*;
use std::sync::Arc;

const D: usize = 3;
const N: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Indices {
    Corrected,
    Printed,
}

/// `(Ẑ Λ − R Γ) G^{-1}` for an `n x d` estimate `Ẑ`, an incoming message `(R, Γ)` and the SPD
/// matrix `G` whose inverse multiplies on the right.
fn extrinsic_mean(z: &Mat<f64>, lambda: &DMat, incoming: &Message, g: &Spd) -> Mat<f64> {
    let num = to_dmat(z) * lambda - to_dmat(&incoming.mean) * incoming.precision.matrix();
    to_mat(&g.solve_right(&num).unwrap())
}

/// One iteration of Algorithm 1 (spec §2.3) written out by hand.
fn iterate(
    net: &Network,
    policy: &MessagePolicy,
    state: &mut HandState,
    idx: Indices,
) -> Result<()> {
    let k = state.iteration;
    let last = net.depth() - 1;
    // Lines 4–7.
    let b = net.prior().denoise(&state.minus[0])?;
    let ext = policy.extrinsic(&b, &state.minus[0], state.plus[0].as_ref(), "prior", k)?;
    state.plus[0] = Some(ext.message);
    state.est_plus[0] = Some(b);
    // Lines 8–13.
    for l in 1..=last {
        let plus_prev = state.plus[l - 1].clone().unwrap();
        let b = net.layer(l)?.forward(&state.minus[l], &plus_prev)?;
        let ext = policy.extrinsic(&b, &state.minus[l], state.plus[l].as_ref(), "forward", k)?;
        state.plus[l] = Some(ext.message);
        state.est_plus[l] = Some(b);
    }
    // Lines 15–18. The precision (line 17) is the same in both versions.
    let plus_last = state.plus[last].clone().unwrap();
    let b = net.output().denoise(&plus_last)?;
    let ext = policy.extrinsic(&b, &plus_last, Some(&state.minus[last]), "output", k)?;
    let msg = match idx {
        Indices::Corrected => ext.message,
        Indices::Printed => {
            // R⁺_{k,0}Γ⁺_{k,0} and (Γ⁻_{k,0})^{-1}: state.minus[0] still holds Γ⁻_{k,0}.
            let p0 = state.plus[0].as_ref().unwrap();
            let mean = extrinsic_mean(&b.mean, &ext.lambda, p0, &state.minus[0].precision);
            Message {
                mean,
                precision: ext.message.precision,
            }
        }
    };
    state.minus[last] = msg;
    state.est_minus[last] = Some(b);
    // Lines 19–24. The precision (line 22) is the same in both versions.
    for l in (1..=last).rev() {
        let plus_prev = state.plus[l - 1].clone().unwrap();
        let b = net.layer(l)?.backward(&state.minus[l], &plus_prev)?;
        let ext = policy.extrinsic(&b, &plus_prev, Some(&state.minus[l - 1]), "backward", k)?;
        let msg = match idx {
            Indices::Corrected => ext.message,
            Indices::Printed => {
                // R⁺_{k,l}Γ⁺_{k,l} and (Γ⁻_{k+1,l})^{-1}: state.minus[l] was updated above.
                let pl = state.plus[l].as_ref().unwrap();
                let mean = extrinsic_mean(&b.mean, &ext.lambda, pl, &state.minus[l].precision);
                Message {
                    mean,
                    precision: ext.message.precision,
                }
            }
        };
        state.minus[l - 1] = msg;
        state.est_minus[l - 1] = Some(b);
    }
    state.iteration += 1;
    Ok(())
}

/// L = 4, all variables 40 x 3: Gaussian prior, noisy linear, noisy identity activation with a
/// diagonal noise precision, noisy linear, AWGN.
fn network(seed: u64) -> Network {
    let mut rng = rng_from_seed(seed);
    let prior =
        Arc::new(GaussianPrior::new(vec![0.5, -0.4, 0.3], random_spd(D, 1.0, &mut rng)).unwrap());
    let lin = |rng: &mut Rng| -> Arc<dyn Layer> {
        let w = gaussian_w(N, N, rng);
        let b = standard_normal(N, D, rng) * faer::Scale(0.3);
        let nz = Spd::new("N", random_spd(D, 30.0, rng), Some(D)).unwrap();
        Arc::new(LinearLayer::new(w.as_ref(), Some(b), Some(nz), D).unwrap())
    };
    let l1 = lin(&mut rng);
    let act_noise = DMat::from_diagonal(&nalgebra::DVector::from_column_slice(&[20.0, 35.0, 50.0]));
    let act = Arc::new(
        ActivationLayer::new(
            Activation::Identity,
            Some(Spd::new("N_2", act_noise, Some(D)).unwrap()),
            Estimator::Mmse,
            D,
        )
        .unwrap(),
    );
    let l3 = lin(&mut rng);
    let out_noise = Spd::new("N_out", random_spd(D, 20.0, &mut rng), Some(D)).unwrap();
    let out = Arc::new(AwgnOutput::new(Mat::zeros(N, D), out_noise, None).unwrap());
    let model = Network::new(prior, N, vec![l1, act, l3], out).unwrap();
    let (_, net) = model.sample(&mut rng).unwrap();
    assert!(net.rows().iter().all(|&n| n == N));
    net
}

/// Enough for the corrected loop to converge to rounding (residual < 1e-14 by k = 40), and few
/// enough that the diverging printed loop stays far from overflow (its messages grow ≈ 20x per
/// iteration; once they reach ~1e150 norms overflow and any relative check becomes meaningless).
const ITERATIONS: usize = 60;

/// Runs the hand loop; returns the states after every iteration, or the first error.
fn hand_run(
    net: &Network,
    policy: &MessagePolicy,
    idx: Indices,
    gamma_init: f64,
) -> (Vec<HandState>, Option<Error>) {
    let mut state = HandState::new(net, gamma_init);
    let mut out = vec![];
    for _ in 0..ITERATIONS {
        if let Err(e) = iterate(net, policy, &mut state, idx) {
            return (out, Some(e));
        }
        out.push(state.clone());
    }
    (out, None)
}

fn state_diff(a: &State, b: &HandState) -> f64 {
    let mut worst = 0.0f64;
    for l in 0..a.depth() {
        for (x, y) in [
            (a.estimate_plus(l), b.estimate_plus(l)),
            (a.estimate_minus(l), b.estimate_minus(l)),
        ] {
            let (x, y) = (x.unwrap(), y.unwrap());
            worst = worst
                .max(rel_err_mat(&x.mean, &y.mean))
                .max(rel_err(&x.cov, &y.cov));
        }
        for (x, y) in [
            (a.plus(l).unwrap(), b.plus(l).unwrap()),
            (a.minus(l).unwrap(), b.minus(l).unwrap()),
        ] {
            worst = worst
                .max(rel_err_mat(&x.mean, &y.mean))
                .max(rel_err(x.precision.matrix(), y.precision.matrix()));
        }
    }
    worst
}

#[test]
fn printed_indices_fail_the_fixed_point_check_corrected_pass() {
    let net = network(61);
    let config = SolverConfig {
        iterations: ITERATIONS,
        ..Default::default()
    };
    let policy = config.policy.clone();

    // The library's solver passes the fixed-point check.
    let mut lib = vec![];
    let sol = Solver::new(config.clone())
        .unwrap()
        .run_with(&net, None, &mut |_, s| {
            lib.push(s.clone());
            Control::Continue
        })
        .unwrap();
    let lib_res = worst_fixed_point_residual(&sol.state);
    println!("solver: fixed-point residual {lib_res:.3e}");
    assert!(
        lib_res < 1e-8,
        "solver fails the fixed-point check: {lib_res:e}"
    );

    // The hand loop with the corrected indices is the solver, iterate by iterate.
    let (good, err) = hand_run(&net, &policy, Indices::Corrected, config.gamma_init);
    assert!(err.is_none(), "{err:?}");
    let same = lib
        .iter()
        .zip(&good)
        .map(|(a, b)| state_diff(a, b))
        .fold(0.0, f64::max);
    println!("corrected hand loop vs solver: worst difference {same:.3e}");
    assert!(same < 1e-12, "{same:e}");
    let good_res = worst_fixed_point_residual(good.last().unwrap());
    assert!(good_res < 1e-8, "{good_res:e}");

    // The printed indices: the precisions are identical (they do not depend on the means in this
    // Gaussian network), but the backward means are wrong. The mean recursion is then unstable:
    // the run never becomes consistent, and its messages grow geometrically.
    let (bad, err) = hand_run(&net, &policy, Indices::Printed, config.gamma_init);
    assert!(err.is_none(), "{err:?}");
    let residuals: Vec<f64> = bad.iter().map(worst_fixed_point_residual).collect();
    let min_res = residuals.iter().copied().fold(f64::INFINITY, f64::min);
    let growth = bad.last().unwrap().minus[0].mean.norm_l2() / bad[0].minus[0].mean.norm_l2();
    for (l, (m, p)) in fixed_point_residuals(bad.last().unwrap())
        .iter()
        .enumerate()
    {
        println!(
            "printed indices, k = {}: Z_{l}: mean residual {m:.3e}, precision residual {p:.3e}",
            ITERATIONS - 1
        );
    }
    println!(
        "printed indices: smallest fixed-point residual over {ITERATIONS} iterations {min_res:.3e}; \
         ||R⁻_0|| grew by {growth:.3e}"
    );
    assert!(
        min_res > 1.0,
        "printed indices pass the fixed-point check: {min_res:e}"
    );
    assert!(
        growth > 1e20,
        "printed indices did not diverge: growth {growth:e}"
    );
    for (a, b) in good
        .last()
        .unwrap()
        .minus
        .iter()
        .zip(&bad.last().unwrap().minus)
    {
        assert!(rel_err(a.precision.matrix(), b.precision.matrix()) < 1e-12);
    }
}
