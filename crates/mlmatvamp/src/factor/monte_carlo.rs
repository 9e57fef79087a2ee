//! Monte-Carlo SE steps over the row-wise model (spec §6.2 (P), (N), (O)), used by every prior,
//! row-wise layer and output that has no closed form. Each step draws `n_mc` rows of the row
//! model with the kind's own `sample`, runs the kind's own denoiser on them with the SE
//! precisions, and applies the algorithm's message rule.

use super::law::{
    backward_law, check_laws, joint_moment, times, SeBackward, SeContext, SeEstimate, SeForward,
    SeStep,
};
use super::{LayerDenoiser, LayerSampler, OutputLaw, PriorDenoiser, PriorSampler};
use crate::error::Result;
use crate::message::{extrinsic_mean, Message};
use crate::rng::{standard_normal, Rng};
use crate::rows::{cross_moment, mul_small};
use crate::spd::{sym, DMat, Spd};
use faer::{Mat, MatRef};

/// The symmetric square root of a positive semi-definite matrix (negative eigenvalues floored at 0).
pub fn psd_sqrt(m: &DMat) -> DMat {
    let e = nalgebra::SymmetricEigen::new(sym(m));
    let q = &e.eigenvectors;
    q * DMat::from_diagonal(&e.eigenvalues.map(|v| v.max(0.0).sqrt())) * q.transpose()
}

/// `n` rows `N(0, C)` for a positive semi-definite `C` (any size).
pub fn sample_rows(n: usize, cov: &DMat, rng: &mut Rng) -> Mat<f64> {
    let g = standard_normal(n, cov.nrows(), rng);
    mul_small(g.as_ref(), &psd_sqrt(cov))
}

fn estimate(z: MatRef<'_, f64>, zhat: MatRef<'_, f64>, predicted_cov: DMat) -> SeEstimate {
    let diff = zhat - z;
    SeEstimate {
        error_cov: sym(&cross_moment(diff.as_ref(), diff.as_ref())),
        joint: joint_moment(z, zhat),
        predicted_cov,
        samples: Some((z.to_owned(), zhat.to_owned())),
    }
}

/// `r⁻ = z Ψ⁻ + c`, `c ~ N(0, T⁻)`.
fn backward_message(z: MatRef<'_, f64>, law: &SeBackward, rng: &mut Rng) -> Message {
    let mut r = times(z, &law.psi);
    r += &sample_rows(z.nrows(), &law.t, rng);
    Message {
        mean: r,
        precision: law.gamma.clone(),
    }
}

/// `(a, b) ~ N(0, K⁺)`: returns `(a, r⁺ = a + b)`.
fn forward_rows(law: &SeForward, n: usize, rng: &mut Rng) -> (Mat<f64>, Message) {
    let d = law.gamma.dim();
    let ab = sample_rows(n, &law.k, rng);
    let a = ab.as_ref().subcols(0, d).to_owned();
    let r = &a + ab.as_ref().subcols(d, d);
    (
        a,
        Message {
            mean: r,
            precision: law.gamma.clone(),
        },
    )
}

/// (P): `z ~ p_0`, `r⁻ = zΨ⁻ + c`; `K⁺ = E[[z, e⁺]^T[z, e⁺]]` with `e⁺ = r⁺_out − z`.
pub fn prior_forward<P: PriorDenoiser + PriorSampler + ?Sized>(
    prior: &P,
    minus: &SeBackward,
    ctx: &SeContext<'_>,
    prev: Option<&Spd>,
) -> Result<SeStep<SeForward>> {
    check_laws(prior.dim(), Some(minus), None, prev)?;
    let mut rng = ctx.rng();
    let z = prior.sample(ctx.n_mc, &mut rng)?;
    let msg = backward_message(z.as_ref(), minus, &mut rng);
    let belief = prior
        .denoise(&msg)
        .map_err(|e| ctx.diverged(e.to_string()))?;
    let (lambda, gamma, divisor) = ctx.policy.precision_update(
        &belief.cov,
        &msg.precision,
        prev,
        &ctx.location,
        ctx.iteration,
    )?;
    let e = &extrinsic_mean(belief.mean.as_ref(), &lambda, &msg, &divisor)? - &z;
    Ok(SeStep {
        out: SeForward {
            k: joint_moment(z.as_ref(), e.as_ref()),
            gamma,
        },
        estimate: estimate(z.as_ref(), belief.mean.as_ref(), belief.cov),
    })
}

/// (N) forward: `(a, b) ~ N(0, K⁺_{l−1})`, `ã = φ(a, ξ)`, `r⁻ = ãΨ⁻ + c`, `r⁺ = a + b`;
/// `K⁺_l = E[[ã, e⁺]^T[ã, e⁺]]`.
pub fn layer_forward<L: LayerDenoiser + LayerSampler + ?Sized>(
    layer: &L,
    minus: &SeBackward,
    plus_in: &SeForward,
    ctx: &SeContext<'_>,
    prev: Option<&Spd>,
) -> Result<SeStep<SeForward>> {
    check_laws(layer.dim(), Some(minus), Some(plus_in), prev)?;
    let mut rng = ctx.rng();
    let (a, r_plus) = forward_rows(plus_in, ctx.n_mc, &mut rng);
    let a_out = layer.sample(a.as_ref(), &mut rng)?;
    let r_minus = backward_message(a_out.as_ref(), minus, &mut rng);
    let belief = layer
        .forward(&r_minus, &r_plus)
        .map_err(|e| ctx.diverged(e.to_string()))?;
    let (lambda, gamma, divisor) = ctx.policy.precision_update(
        &belief.cov,
        &r_minus.precision,
        prev,
        &ctx.location,
        ctx.iteration,
    )?;
    let e = &extrinsic_mean(belief.mean.as_ref(), &lambda, &r_minus, &divisor)? - &a_out;
    Ok(SeStep {
        out: SeForward {
            k: joint_moment(a_out.as_ref(), e.as_ref()),
            gamma,
        },
        estimate: estimate(a_out.as_ref(), belief.mean.as_ref(), belief.cov),
    })
}

/// (N) backward: as forward with the updated backward law; `e⁻ = r⁻_out − a` regressed on `a`.
pub fn layer_backward<L: LayerDenoiser + LayerSampler + ?Sized>(
    layer: &L,
    minus: &SeBackward,
    plus_in: &SeForward,
    ctx: &SeContext<'_>,
    prev: Option<&Spd>,
) -> Result<SeStep<SeBackward>> {
    let d = layer.dim();
    check_laws(d, Some(minus), Some(plus_in), prev)?;
    let mut rng = ctx.rng();
    let (a, r_plus) = forward_rows(plus_in, ctx.n_mc, &mut rng);
    let a_out = layer.sample(a.as_ref(), &mut rng)?;
    let r_minus = backward_message(a_out.as_ref(), minus, &mut rng);
    let belief = layer
        .backward(&r_minus, &r_plus)
        .map_err(|e| ctx.diverged(e.to_string()))?;
    let (lambda, gamma, divisor) = ctx.policy.precision_update(
        &belief.cov,
        &r_plus.precision,
        prev,
        &ctx.location,
        ctx.iteration,
    )?;
    let e = &extrinsic_mean(belief.mean.as_ref(), &lambda, &r_plus, &divisor)? - &a;
    let k_aa = plus_in.k.view((0, 0), (d, d)).into_owned();
    let out = backward_law(
        &k_aa,
        &cross_moment(a.as_ref(), e.as_ref()),
        &cross_moment(e.as_ref(), e.as_ref()),
        ctx.psi_mode,
        gamma,
    );
    Ok(SeStep {
        out,
        estimate: estimate(a.as_ref(), belief.mean.as_ref(), belief.cov),
    })
}

/// (O): `(a, b) ~ N(0, K⁺_{L−1})`, `y ~ p(y | a)`, `r⁺ = a + b`; `e⁻` regressed on `a`.
pub fn output_backward<O: OutputLaw + ?Sized>(
    output: &O,
    plus: &SeForward,
    ctx: &SeContext<'_>,
    prev: Option<&Spd>,
) -> Result<SeStep<SeBackward>> {
    let d = output.dim();
    check_laws(d, None, Some(plus), prev)?;
    let mut rng = ctx.rng();
    let (a, r_plus) = forward_rows(plus, ctx.n_mc, &mut rng);
    let channel = output.resample(a.as_ref(), &mut rng)?;
    let belief = channel
        .denoise(&r_plus)
        .map_err(|e| ctx.diverged(e.to_string()))?;
    let (lambda, gamma, divisor) = ctx.policy.precision_update(
        &belief.cov,
        &r_plus.precision,
        prev,
        &ctx.location,
        ctx.iteration,
    )?;
    let e = &extrinsic_mean(belief.mean.as_ref(), &lambda, &r_plus, &divisor)? - &a;
    let k_aa = plus.k.view((0, 0), (d, d)).into_owned();
    let out = backward_law(
        &k_aa,
        &cross_moment(a.as_ref(), e.as_ref()),
        &cross_moment(e.as_ref(), e.as_ref()),
        ctx.psi_mode,
        gamma,
    );
    Ok(SeStep {
        out,
        estimate: estimate(a.as_ref(), belief.mean.as_ref(), belief.cov),
    })
}
