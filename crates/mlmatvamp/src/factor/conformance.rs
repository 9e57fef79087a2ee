//! The shared conformance suite: generic checks that every factor (prior, hidden layer, output
//! channel) must pass, one per capability trait of [`crate::factor`].
//!
//! Each check is a plain function over trait objects that returns a [`Check`]: `Ok(`[`Report`]`)`
//! with the measured deviation and the tolerance it was judged against, or `Err` with a message
//! that names the check and gives the measured deviation. A check never panics on its own; a
//! factor that panics is reported as a failure (the panic is caught).
//!
//! | capability | checks |
//! |---|---|
//! | denoisers ([`PriorDenoiser`], [`LayerDenoiser`] both ways, [`OutputDenoiser`]) | [`prior_jacobian`], [`layer_jacobian`], [`output_jacobian`]; [`prior_batch`], [`layer_batch`], [`output_batch`]; [`prior_permutation`], [`layer_permutation`], [`output_permutation`]; [`prior_bad_inputs`], [`layer_bad_inputs`], [`output_bad_inputs`]; [`output_linear_forms`] |
//! | samplers ([`PriorSampler`], [`LayerSampler`], [`OutputLaw`]) | [`prior_sampler`], [`layer_sampler`], [`output_law`] |
//! | SE steps ([`PriorSe`], [`LayerSe`], [`OutputSe`]) | [`prior_se_vs_monte_carlo`], [`layer_se_vs_monte_carlo`], [`output_se_vs_monte_carlo`] (closed forms); [`prior_se_vs_simulation`], [`layer_se_vs_simulation`], [`output_se_vs_simulation`] (Monte-Carlo steps); [`prior_se_reproducible`], [`layer_se_reproducible`], [`output_se_reproducible`] |
//!
//! **Jacobian convention (spec §0).** The Jacobian of a row map `g` is `J_{kj} = ∂g_j/∂x_k`
//! (`dg = dx · J`). With the incoming message `(R, Γ)` that the denoiser consumed, every
//! denoiser must satisfy `⟨J_i⟩ = Γ Σ̄` where `J_i = ∂ẑ_i/∂r_i` and `⟨·⟩` averages over all rows
//! (Stein's lemma for MMSE, the implicit function theorem `J_i = Γ H_i^{-1}` for MAP). The
//! transposed orientation `Σ̄ Γ` differs when `Γ` and `Σ̄` do not commute; every Jacobian report
//! gives the deviation from it too ([`Report::contrast`]), so that one can see the check tells
//! the two apart. For a layer, `G⁺` is differentiated with respect to `R⁻` (its precision `Γ⁻`,
//! `Σ̄_u`) and `G⁻` with respect to `R⁺` (`Γ⁺`, `Σ̄_v`). A linear layer couples rows, so its
//! `⟨J_i⟩` is the average of the diagonal `d x d` blocks of the full Jacobian, over every row.
//!
//! **SE checks.** A closed-form SE step ([`SeKind::Exact`]) is compared with the generic
//! Monte-Carlo step ([`super::monte_carlo`]) run on a reference factor (the factor itself, or,
//! for an SE-only factor, an equivalent full factor) with the factor's own sampler and denoiser,
//! over `batches` independent seeds. A Monte-Carlo step ([`SeKind::MonteCarlo`]) is checked for
//! reproducibility from its seed and compared with an independent simulation of the row model
//! written here (fresh draws of the law, the factor's sampler and denoiser, the algorithm's
//! message rule). The compared quantities are `E[Σ]`, the outgoing precision `Γ̄`, the predicted
//! error covariance `E[(ẑ − z)^T(ẑ − z)]`, and the outgoing law (`K⁺`, or `E[a^T e⁻]` and
//! `E[e⁻^T e⁻]`, from which `Ψ⁻, T⁻` follow). Every entry is judged by its z-score: the difference
//! divided by the Monte-Carlo standard error estimated from the spread of the batch means
//! (combined with the step's own Monte-Carlo error when the step is sampled), plus a relative
//! rounding floor of `1e-8` for quantities that do not fluctuate.
//!
//! The case types ([`PriorCase`], [`LayerCase`], [`OutputCase`]) bundle a factor with the laws
//! its checks use; their `run` method runs every applicable check, so a registry of cases (as in
//! `tests/conformance.rs`) gives a new factor every check with one entry.

use super::law::{joint_moment, PsiMode, SeBackward, SeContext, SeForward, SeStep};
use super::monte_carlo;
use super::{
    InputPrior, Layer, LayerDenoiser, LayerKind, LayerSampler, LayerSe, OutputChannel,
    OutputDenoiser, OutputLaw, OutputSe, PriorDenoiser, PriorSampler, PriorSe,
};
use crate::message::{extrinsic_mean, Belief, Message, MessagePolicy};
use crate::rng::{mix64, rng_from_seed, standard_normal, Rng};
use crate::rows::{cross_moment, mul_small};
use crate::spd::{sym, DMat, Spd};
use faer::{Mat, MatRef};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// Reports.
// ---------------------------------------------------------------------------------------------

/// The outcome of one check: the report if it passed, otherwise a message naming the check and
/// giving the measured deviation.
pub type Check = std::result::Result<Report, String>;

/// What a passed check measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The measured deviation (its meaning is the check's: a relative error, a z-score, a count
    /// of failed sub-cases).
    pub deviation: f64,
    /// The tolerance the deviation was judged against (`deviation <= tolerance` passes).
    pub tolerance: f64,
    /// The deviation that a plausible wrong answer would have produced (the transposed
    /// orientation `Σ̄Γ` for Jacobian checks, a 50% error in the predicted error covariance for
    /// SE checks), to show that the check discriminates; `None` where it does not apply.
    pub contrast: Option<f64>,
    /// Details (what was compared, partial deviations).
    pub detail: String,
}

impl Report {
    fn judge(self, check: &str) -> Check {
        if self.deviation <= self.tolerance {
            Ok(self)
        } else {
            Err(format!(
                "{check}: deviation {:.3e} exceeds the tolerance {:.3e} ({})",
                self.deviation, self.tolerance, self.detail
            ))
        }
    }
}

/// One check of one factor, as produced by the case runners.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The factor's name in the registry.
    pub factor: String,
    /// The check's name.
    pub check: String,
    /// The result.
    pub result: Check,
}

// ---------------------------------------------------------------------------------------------
// Tolerances and options.
// ---------------------------------------------------------------------------------------------

/// Default relative step of the central differences: `h = FD_STEP · max(|r_ik|, σ_k)` with
/// `σ_k = sqrt([Γ^{-1}]_kk)` the message's standard deviation in column `k`.
pub const FD_STEP: f64 = 1e-5;

/// Default tolerance of the Jacobian check (relative Frobenius error of `⟨J⟩` against `ΓΣ̄`).
/// Central differences with step `1e-5` have truncation error `O(h²) ≈ 1e-10` and rounding
/// error `≈ ε/h ≈ 1e-11` for closed-form denoisers; `1e-6` leaves four orders of margin. Denoisers
/// with an iterative solver or a quadrature need a case-specific tolerance (see the registry).
pub const JACOBIAN_TOL: f64 = 1e-6;

/// Tolerance of the batch and permutation checks (relative): the same rows must give the same
/// estimate up to rounding, whatever their order or company.
pub const EXACT_TOL: f64 = 1e-10;

/// Default z-score tolerance of the SE checks: a difference of more than 5 Monte-Carlo standard
/// errors fails. With 20 batches the standard error is estimated with 19 degrees of freedom;
/// a Student-t(19) exceeds 5 with probability `≈ 8e-5` per entry.
pub const SE_Z_TOL: f64 = 5.0;

/// Relative rounding floor of the SE comparisons (for quantities that do not fluctuate, e.g.
/// the outgoing precision of a linear denoiser).
pub const SE_ROUNDING: f64 = 1e-8;

/// Options of the Jacobian check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JacobianOptions {
    /// Relative finite-difference step (see [`FD_STEP`]).
    pub step: f64,
    /// Tolerance on `‖⟨J⟩ − ΓΣ̄‖_F / ‖ΓΣ̄‖_F`.
    pub tol: f64,
}

impl Default for JacobianOptions {
    fn default() -> Self {
        JacobianOptions {
            step: FD_STEP,
            tol: JACOBIAN_TOL,
        }
    }
}

/// Options of the SE checks.
#[derive(Clone, Debug, PartialEq)]
pub struct SeOptions {
    /// Monte-Carlo rows of the factor's own step when that step is sampled.
    pub n_mc: usize,
    /// Number of independent reference batches (at least 2; the standard errors come from their
    /// spread).
    pub batches: usize,
    /// Rows per reference batch (a layer with a fixed number of input rows uses that number).
    pub batch_rows: usize,
    /// z-score tolerance (see [`SE_Z_TOL`]).
    pub z_tol: f64,
    /// The message rule.
    pub policy: MessagePolicy,
    /// The backward-message model.
    pub psi_mode: PsiMode,
    /// Base seed of the step and of the batches.
    pub seed: u64,
}

impl Default for SeOptions {
    fn default() -> Self {
        SeOptions {
            n_mc: 100_000,
            batches: 20,
            batch_rows: 5_000,
            z_tol: SE_Z_TOL,
            policy: MessagePolicy::default(),
            psi_mode: PsiMode::General,
            seed: 0xC0F0_2B1E,
        }
    }
}

/// Which SE step a factor has, which decides what its step is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeKind {
    /// A closed form (or a deterministic quadrature): compared with the generic Monte-Carlo step.
    Exact,
    /// The Monte-Carlo step itself ([`super::MonteCarloSe`]): checked for reproducibility and
    /// against an independent simulation.
    MonteCarlo,
}

/// Which half of a hidden layer a check is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `G⁺_l` / the forward SE step (about `Z_l`).
    Forward,
    /// `G⁻_l` / the backward SE step (about `Z_{l−1}`).
    Backward,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Forward => "forward",
            Direction::Backward => "backward",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------------------------

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

/// Runs a factor method, turning its error or panic into a message.
fn call<T>(what: &str, f: impl FnOnce() -> crate::Result<T>) -> std::result::Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what} failed: {e}")),
        Err(p) => Err(format!("{what} panicked: {}", panic_text(p.as_ref()))),
    }
}

/// Rows `rows` of `m`, in that order (`m[rows[i]]` becomes row `i`).
///
/// # Panics
/// If an index is out of range (a helper for building test cases, not a check).
pub fn select_rows(m: MatRef<'_, f64>, rows: &[usize]) -> Mat<f64> {
    Mat::from_fn(rows.len(), m.ncols(), |i, j| m[(rows[i], j)])
}

/// A seeded random permutation of `0..n`, never the identity when `n ≥ 2`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    use rand::RngExt;
    let mut rng = rng_from_seed(seed);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        p.swap(i, j);
    }
    if n >= 2 && p.iter().enumerate().all(|(i, &v)| i == v) {
        p.rotate_left(1);
    }
    p
}

fn batch_seed(base: u64, b: usize) -> u64 {
    mix64(base ^ mix64(0xBA7C_0000 + b as u64))
}

fn max_abs_mat(m: MatRef<'_, f64>) -> f64 {
    let mut s = 0.0f64;
    for j in 0..m.ncols() {
        for i in 0..m.nrows() {
            s = s.max(m[(i, j)].abs());
        }
    }
    s
}

fn all_finite(m: MatRef<'_, f64>) -> bool {
    (0..m.ncols()).all(|j| (0..m.nrows()).all(|i| m[(i, j)].is_finite()))
}

fn fmt_mat(m: &DMat) -> String {
    let rows: Vec<String> = (0..m.nrows())
        .map(|i| {
            let r: Vec<String> = (0..m.ncols())
                .map(|j| format!("{:.5e}", m[(i, j)]))
                .collect();
            format!("[{}]", r.join(", "))
        })
        .collect();
    format!("[{}]", rows.join(", "))
}

/// Checks a belief's shapes and finiteness.
fn check_belief(what: &str, b: &Belief, rows: usize, d: usize) -> std::result::Result<(), String> {
    if b.mean.nrows() != rows || b.mean.ncols() != d {
        return Err(format!(
            "{what}: estimate is {} x {}, expected {rows} x {d}",
            b.mean.nrows(),
            b.mean.ncols()
        ));
    }
    if b.cov.nrows() != d || b.cov.ncols() != d {
        return Err(format!(
            "{what}: covariance is {} x {}, expected {d} x {d}",
            b.cov.nrows(),
            b.cov.ncols()
        ));
    }
    if !all_finite(b.mean.as_ref()) || b.cov.iter().any(|x| !x.is_finite()) {
        return Err(format!("{what}: non-finite estimate or covariance"));
    }
    Ok(())
}

/// `n` rows `N(0, C)` for a positive semi-definite `C` (symmetric square root, negative
/// eigenvalues floored at 0).
fn gaussian(n: usize, cov: &DMat, rng: &mut Rng) -> Mat<f64> {
    let e = nalgebra::SymmetricEigen::new(sym(cov));
    let q = &e.eigenvectors;
    let root = q * DMat::from_diagonal(&e.eigenvalues.map(|v| v.max(0.0).sqrt())) * q.transpose();
    mul_small(standard_normal(n, cov.nrows(), rng).as_ref(), &root)
}

fn message(mean: Mat<f64>, precision: &Spd) -> Message {
    Message {
        mean,
        precision: precision.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Test laws and test messages.
// ---------------------------------------------------------------------------------------------

/// A seeded random `d x d` SPD matrix `Q diag(λ) Q^T` with a Haar-random `Q` (so non-diagonal)
/// and eigenvalues proportional to `1, 0.6, 0.36, …` with mean `mean_eig`.
pub fn random_spd(d: usize, mean_eig: f64, seed: u64) -> DMat {
    let mut rng = rng_from_seed(seed);
    let g = standard_normal(d, d, &mut rng);
    let g = DMat::from_fn(d, d, |i, j| g[(i, j)]);
    let qr = g.qr();
    let (q, r) = (qr.q(), qr.r());
    let signs = DMat::from_diagonal(&nalgebra::DVector::from_fn(d, |i, _| {
        if r[(i, i)] < 0.0 {
            -1.0
        } else {
            1.0
        }
    }));
    let q = q * signs;
    let raw: Vec<f64> = (0..d).map(|j| 0.6f64.powi(j as i32)).collect();
    let c = mean_eig * d as f64 / raw.iter().sum::<f64>();
    let lam = DMat::from_diagonal(&nalgebra::DVector::from_iterator(
        d,
        raw.iter().map(|x| x * c),
    ));
    sym(&(&q * lam * q.transpose()))
}

/// A seeded `d x d` matrix `I + scale · G` with i.i.d. standard normal `G` (non-symmetric).
fn near_identity(d: usize, scale: f64, seed: u64) -> DMat {
    let mut rng = rng_from_seed(seed);
    let g = standard_normal(d, d, &mut rng);
    DMat::identity(d, d) + DMat::from_fn(d, d, |i, j| scale * g[(i, j)])
}

/// A valid forward law (`K⁺` 2d x 2d PSD, `Γ̄⁺` SPD) with non-diagonal blocks: the true row `a`
/// has second moment `k_aa`, the message error is `b = a M + n` with `M = −0.2 I + 0.1 G`
/// (seeded, non-symmetric) and `n ~ N(0, error_cov)` independent, and `Γ̄⁺ = (K⁺_BB)^{-1}`.
pub fn test_forward_law(
    k_aa: &DMat,
    error_cov: &DMat,
    seed: u64,
) -> std::result::Result<SeForward, String> {
    let d = k_aa.nrows();
    if k_aa.ncols() != d || error_cov.nrows() != d || error_cov.ncols() != d {
        return Err("test_forward_law: k_aa and error_cov must be d x d".into());
    }
    let m = near_identity(d, 0.1, seed) - DMat::identity(d, d) * 1.2;
    let kab = k_aa * &m;
    let kbb = sym(&(m.transpose() * k_aa * &m + error_cov));
    let mut k = DMat::zeros(2 * d, 2 * d);
    k.view_mut((0, 0), (d, d)).copy_from(&sym(k_aa));
    k.view_mut((0, d), (d, d)).copy_from(&kab);
    k.view_mut((d, 0), (d, d)).copy_from(&kab.transpose());
    k.view_mut((d, d), (d, d)).copy_from(&kbb);
    let gamma = Spd::from_symmetric("K⁺_BB", kbb)
        .and_then(|s| Spd::from_symmetric("Γ̄⁺", s.inverse()))
        .map_err(|e| format!("test_forward_law: {e}"))?;
    Ok(SeForward { k: sym(&k), gamma })
}

/// A valid backward law: `Ψ⁻ = I + 0.1 G` (seeded, non-symmetric), `T⁻ = t`, `Γ̄⁻ = t^{-1}`.
pub fn test_backward_law(t: &DMat, seed: u64) -> std::result::Result<SeBackward, String> {
    let d = t.nrows();
    let gamma = Spd::from_symmetric("T⁻", t.clone())
        .and_then(|s| Spd::from_symmetric("Γ̄⁻", s.inverse()))
        .map_err(|e| format!("test_backward_law: {e}"))?;
    Ok(SeBackward {
        psi: near_identity(d, 0.1, seed),
        t: sym(t),
        gamma,
    })
}

/// The message into a prior drawn from the SE row model (spec §6.2 (P)): `z ~ p_0` (`rows`
/// rows), `r⁻ = z Ψ⁻ + c`, `c ~ N(0, T⁻)`, precision `Γ̄⁻`. Returns `(z, message)`.
pub fn prior_message(
    prior: &dyn PriorSampler,
    law: &SeBackward,
    rows: usize,
    seed: u64,
) -> std::result::Result<(Mat<f64>, Message), String> {
    let mut rng = rng_from_seed(seed);
    let z = call("prior sample", || prior.sample(rows, &mut rng))?;
    let mut r = mul_small(z.as_ref(), &law.psi);
    r += &gaussian(rows, &law.t, &mut rng);
    Ok((z, message(r, &law.gamma)))
}

/// The messages into a hidden layer drawn from the SE row model (spec §6.2 (N)):
/// `(a, b) ~ N(0, K⁺)` (`rows` input rows), `ã` = the layer's sample given `a`,
/// `r⁻ = ã Ψ⁻ + c`, `r⁺ = a + b`. Returns `(minus, plus)`.
pub fn layer_messages(
    layer: &dyn LayerSampler,
    minus: &SeBackward,
    plus: &SeForward,
    rows: usize,
    seed: u64,
) -> std::result::Result<(Message, Message), String> {
    let d = plus.gamma.dim();
    let mut rng = rng_from_seed(seed);
    let ab = gaussian(rows, &plus.k, &mut rng);
    let a = ab.as_ref().subcols(0, d).to_owned();
    let r_plus = &a + ab.as_ref().subcols(d, d);
    let out = call("layer sample", || layer.sample(a.as_ref(), &mut rng))?;
    let mut r_minus = mul_small(out.as_ref(), &minus.psi);
    r_minus += &gaussian(out.nrows(), &minus.t, &mut rng);
    Ok((message(r_minus, &minus.gamma), message(r_plus, &plus.gamma)))
}

/// The message into an output channel whose observation was drawn for the true rows `truth`:
/// `r⁺ = truth + e`, `e ~ N(0, K⁺_BB)`, precision `Γ̄⁺`.
pub fn output_message(truth: MatRef<'_, f64>, law: &SeForward, seed: u64) -> Message {
    let d = law.gamma.dim();
    let mut rng = rng_from_seed(seed);
    let kbb = law.k.view((d, d), (d, d)).into_owned();
    let r = truth.to_owned() + gaussian(truth.nrows(), &kbb, &mut rng);
    message(r, &law.gamma)
}

// ---------------------------------------------------------------------------------------------
// (a) Jacobian = Γ Σ̄.
// ---------------------------------------------------------------------------------------------

/// The Jacobian check of spec §0 on a denoiser given as `eval(R) → (Ẑ, Σ̄)` with the incoming
/// mean `r` and precision `gamma`.
fn jacobian_check(
    what: &str,
    eval: &dyn Fn(Mat<f64>) -> crate::Result<Belief>,
    r: &Mat<f64>,
    gamma: &Spd,
    opts: &JacobianOptions,
) -> Check {
    let (n, d) = (r.nrows(), r.ncols());
    if n == 0 || d == 0 || gamma.dim() != d {
        return Err(format!(
            "{what}: the check needs a non-empty message with a d x d precision"
        ));
    }
    if !(opts.step > 0.0 && opts.step.is_finite()) {
        return Err(format!("{what}: invalid step {}", opts.step));
    }
    let base = call(what, || eval(r.clone()))?;
    check_belief(what, &base, n, d)?;
    let ginv = gamma.inverse();
    let mut jsum = DMat::zeros(d, d);
    let mut jump = 0.0f64;
    for i in 0..n {
        for k in 0..d {
            let h = opts.step * r[(i, k)].abs().max(ginv[(k, k)].sqrt());
            let mut rp = r.clone();
            let mut rm = r.clone();
            rp[(i, k)] += h;
            rm[(i, k)] -= h;
            let span = rp[(i, k)] - rm[(i, k)];
            let bp = call(what, || eval(rp))?;
            let bm = call(what, || eval(rm))?;
            check_belief(what, &bp, n, d)?;
            check_belief(what, &bm, n, d)?;
            for j in 0..d {
                let up = bp.mean[(i, j)] - base.mean[(i, j)];
                let down = base.mean[(i, j)] - bm.mean[(i, j)];
                jsum[(k, j)] += (up + down) / span;
                // Twice the one-sided slopes' difference: O(h) where the map is smooth, O(1) at
                // a kink inside [r − h, r + h].
                jump = jump.max((up - down).abs() / span);
            }
        }
    }
    let javg = jsum / n as f64;
    let target = gamma.matrix() * &base.cov;
    let transposed = &base.cov * gamma.matrix();
    let scale = target.norm().max(1e-8);
    let dev = (&javg - &target).norm() / scale;
    let contrast = (&javg - &transposed).norm() / scale;
    Report {
        deviation: dev,
        tolerance: opts.tol,
        contrast: Some(contrast),
        detail: format!(
            "{what}: ‖⟨J⟩ − ΓΣ̄‖/‖ΓΣ̄‖ over {n} rows (step {:.0e}); transposed ΣΓ would give {contrast:.2e}; largest one-sided slope jump {jump:.1e}; ⟨J⟩ = {}, ΓΣ̄ = {}",
            opts.step,
            fmt_mat(&javg),
            fmt_mat(&target)
        ),
    }
    .judge(what)
}

/// Jacobian check of `G⁺_0`: `⟨∂ẑ_i/∂r⁻_i⟩ = Γ⁻ Σ̄` (spec §0).
pub fn prior_jacobian(
    prior: &dyn PriorDenoiser,
    incoming: &Message,
    opts: &JacobianOptions,
) -> Check {
    let g = &incoming.precision;
    jacobian_check(
        "prior Jacobian",
        &|r| prior.denoise(&message(r, g)),
        &incoming.mean,
        g,
        opts,
    )
}

/// Jacobian check of a hidden layer: forward, `⟨∂û_i/∂r⁻_i⟩ = Γ⁻ Σ̄_u`; backward,
/// `⟨∂v̂_i/∂r⁺_i⟩ = Γ⁺ Σ̄_v` (spec §0). For a linear layer every row is perturbed and the
/// diagonal blocks of the full Jacobian are averaged.
pub fn layer_jacobian(
    layer: &dyn LayerDenoiser,
    dir: Direction,
    minus: &Message,
    plus: &Message,
    opts: &JacobianOptions,
) -> Check {
    match dir {
        Direction::Forward => {
            let g = &minus.precision;
            jacobian_check(
                "layer forward Jacobian (∂û/∂r⁻ = Γ⁻Σ̄_u)",
                &|r| layer.forward(&message(r, g), plus),
                &minus.mean,
                g,
                opts,
            )
        }
        Direction::Backward => {
            let g = &plus.precision;
            jacobian_check(
                "layer backward Jacobian (∂v̂/∂r⁺ = Γ⁺Σ̄_v)",
                &|r| layer.backward(minus, &message(r, g)),
                &plus.mean,
                g,
                opts,
            )
        }
    }
}

/// Jacobian check of `G⁻_L`: `⟨∂v̂_i/∂r⁺_i⟩ = Γ⁺ Σ̄` (spec §0).
pub fn output_jacobian(
    output: &dyn OutputDenoiser,
    plus: &Message,
    opts: &JacobianOptions,
) -> Check {
    let g = &plus.precision;
    jacobian_check(
        "output Jacobian",
        &|r| output.denoise(&message(r, g)),
        &plus.mean,
        g,
        opts,
    )
}

// ---------------------------------------------------------------------------------------------
// (b) batch = one row at a time, (c) permutation equivariance.
// ---------------------------------------------------------------------------------------------

/// `max |a − b| / max |b|` over matching rows, and `‖Σ_a − Σ_b‖_F / ‖Σ_b‖_F`.
fn belief_deviation(a: &Belief, b_mean: &Mat<f64>, b_cov: &DMat) -> f64 {
    let diff = &a.mean - b_mean;
    let mean_dev = max_abs_mat(diff.as_ref()) / max_abs_mat(b_mean.as_ref()).max(1e-300);
    let cov_dev = (&a.cov - b_cov).norm() / b_cov.norm().max(1e-300);
    let dev = mean_dev.max(cov_dev);
    if dev.is_nan() {
        f64::INFINITY
    } else {
        dev
    }
}

/// Stacks one-row beliefs and averages their covariances (row-weighted).
fn stack(singles: &[Belief], d: usize) -> (Mat<f64>, DMat) {
    let n = singles.len();
    let mean = Mat::from_fn(n, d, |i, j| singles[i].mean[(0, j)]);
    let mut cov = DMat::zeros(d, d);
    for b in singles {
        cov += &b.cov;
    }
    (mean, cov / n.max(1) as f64)
}

fn one_row(m: &Message, i: usize) -> Message {
    message(select_rows(m.mean.as_ref(), &[i]), &m.precision)
}

fn permuted(m: &Message, perm: &[usize]) -> Message {
    message(select_rows(m.mean.as_ref(), perm), &m.precision)
}

fn batch_report(what: &str, devs: &[(&str, f64)], tol: f64, n: usize) -> Check {
    let dev = devs.iter().map(|x| x.1).fold(0.0f64, f64::max);
    let parts: Vec<String> = devs.iter().map(|(k, v)| format!("{k} {v:.2e}")).collect();
    Report {
        deviation: dev,
        tolerance: tol,
        contrast: None,
        detail: format!("{what} over {n} rows: {}", parts.join(", ")),
    }
    .judge(what)
}

/// A batch of rows denoised together equals the rows denoised one at a time (estimates, and
/// `Σ̄` = the average of the one-row covariances).
pub fn prior_batch(prior: &dyn PriorDenoiser, incoming: &Message, tol: f64) -> Check {
    let (n, d) = (incoming.rows(), incoming.dim());
    let full = call("prior denoise (batch)", || prior.denoise(incoming))?;
    check_belief("prior denoise (batch)", &full, n, d)?;
    let mut singles = Vec::with_capacity(n);
    for i in 0..n {
        let b = call("prior denoise (one row)", || {
            prior.denoise(&one_row(incoming, i))
        })?;
        check_belief("prior denoise (one row)", &b, 1, d)?;
        singles.push(b);
    }
    let (m, c) = stack(&singles, d);
    batch_report(
        "prior batch vs one row at a time",
        &[("relative deviation", belief_deviation(&full, &m, &c))],
        tol,
        n,
    )
}

/// The batch check for a row-wise hidden layer, both directions. A linear layer couples rows,
/// so the check does not apply to it (an error says so).
pub fn layer_batch(layer: &dyn LayerDenoiser, minus: &Message, plus: &Message, tol: f64) -> Check {
    if layer.kind() != LayerKind::RowWise {
        return Err("layer batch check: applies to row-wise layers only".into());
    }
    let (n, d) = (plus.rows(), plus.dim());
    let mut devs = Vec::new();
    for dir in [Direction::Forward, Direction::Backward] {
        let run = |mi: &Message, pl: &Message| match dir {
            Direction::Forward => layer.forward(mi, pl),
            Direction::Backward => layer.backward(mi, pl),
        };
        let what = format!("layer {} (batch)", dir.name());
        let full = call(&what, || run(minus, plus))?;
        check_belief(&what, &full, n, d)?;
        let mut singles = Vec::with_capacity(n);
        for i in 0..n {
            let b = call(&what, || run(&one_row(minus, i), &one_row(plus, i)))?;
            check_belief(&what, &b, 1, d)?;
            singles.push(b);
        }
        let (m, c) = stack(&singles, d);
        devs.push((dir.name(), belief_deviation(&full, &m, &c)));
    }
    batch_report("layer batch vs one row at a time", &devs, tol, n)
}

/// The batch check of an output channel: `build(&[i])` (the channel restricted to row `i` of
/// its observation) on row `i` of the message, for every row.
pub fn output_batch(build: &OutputBuilder, plus: &Message, tol: f64) -> Check {
    let (n, d) = (plus.rows(), plus.dim());
    let base = call("output build", || build(&[]))?;
    let full = call("output denoise (batch)", || base.denoise(plus))?;
    check_belief("output denoise (batch)", &full, n, d)?;
    let mut singles = Vec::with_capacity(n);
    for i in 0..n {
        let ch = call("output build (one row)", || build(&[i]))?;
        let b = call("output denoise (one row)", || ch.denoise(&one_row(plus, i)))?;
        check_belief("output denoise (one row)", &b, 1, d)?;
        singles.push(b);
    }
    let (m, c) = stack(&singles, d);
    batch_report(
        "output batch vs one row at a time",
        &[("relative deviation", belief_deviation(&full, &m, &c))],
        tol,
        n,
    )
}

/// Permuting the rows of the message permutes the rows of the estimate and leaves `Σ̄` unchanged.
pub fn prior_permutation(
    prior: &dyn PriorDenoiser,
    incoming: &Message,
    perm: &[usize],
    tol: f64,
) -> Check {
    let (n, d) = (incoming.rows(), incoming.dim());
    if perm.len() != n {
        return Err(format!(
            "prior permutation: {} indices for {n} rows",
            perm.len()
        ));
    }
    let base = call("prior denoise", || prior.denoise(incoming))?;
    check_belief("prior denoise", &base, n, d)?;
    let p = call("prior denoise (permuted)", || {
        prior.denoise(&permuted(incoming, perm))
    })?;
    check_belief("prior denoise (permuted)", &p, n, d)?;
    let expected = select_rows(base.mean.as_ref(), perm);
    batch_report(
        "prior permutation equivariance",
        &[(
            "relative deviation",
            belief_deviation(&p, &expected, &base.cov),
        )],
        tol,
        n,
    )
}

/// Builds a hidden layer for permuted rows: `build(out_perm, in_perm)` is the layer whose output
/// rows are the base layer's rows `out_perm` and whose input rows are its rows `in_perm` (for a
/// linear layer `W[out_perm, in_perm]`, `B[out_perm]`); empty slices mean the identity. A
/// row-wise layer ignores both.
pub type LayerBuilder = dyn Fn(&[usize], &[usize]) -> crate::Result<Arc<dyn Layer>> + Send + Sync;

/// Builds an output channel for a selection of the rows of its observation: `build(rows)` is the
/// channel whose observation is rows `rows` of the base one (in that order); an empty slice means
/// all rows.
pub type OutputBuilder = dyn Fn(&[usize]) -> crate::Result<Arc<dyn OutputChannel>> + Send + Sync;

/// Permutation equivariance of a hidden layer, both directions: the layer built for the permuted
/// problem (`build(out_perm, in_perm)`), given messages with permuted rows, returns permuted
/// estimates and the same `Σ̄`. For a row-wise layer `out_perm` must equal `in_perm`.
pub fn layer_permutation(
    build: &LayerBuilder,
    minus: &Message,
    plus: &Message,
    out_perm: &[usize],
    in_perm: &[usize],
    tol: f64,
) -> Check {
    let (n_in, n_out, d) = (plus.rows(), minus.rows(), plus.dim());
    if out_perm.len() != n_out || in_perm.len() != n_in {
        return Err(format!(
            "layer permutation: permutations of lengths {} and {} for {n_out} output and {n_in} input rows",
            out_perm.len(),
            in_perm.len()
        ));
    }
    let base = call("layer build", || build(&[], &[]))?;
    let perm_layer = call("layer build (permuted)", || build(out_perm, in_perm))?;
    let (pm, pp) = (permuted(minus, out_perm), permuted(plus, in_perm));
    let mut devs = Vec::new();
    for (dir, rows, perm) in [
        (Direction::Forward, n_out, out_perm),
        (Direction::Backward, n_in, in_perm),
    ] {
        let what = format!("layer {}", dir.name());
        let (b, p) = match dir {
            Direction::Forward => (
                call(&what, || base.forward(minus, plus))?,
                call(&what, || perm_layer.forward(&pm, &pp))?,
            ),
            Direction::Backward => (
                call(&what, || base.backward(minus, plus))?,
                call(&what, || perm_layer.backward(&pm, &pp))?,
            ),
        };
        check_belief(&what, &b, rows, d)?;
        check_belief(&what, &p, rows, d)?;
        let expected = select_rows(b.mean.as_ref(), perm);
        devs.push((dir.name(), belief_deviation(&p, &expected, &b.cov)));
    }
    batch_report(
        "layer permutation equivariance",
        &devs,
        tol,
        n_in.max(n_out),
    )
}

/// Permutation equivariance of an output channel: the channel built on the permuted observation
/// (`build(perm)`), given the permuted message, returns the permuted estimate and the same `Σ̄`.
pub fn output_permutation(
    build: &OutputBuilder,
    plus: &Message,
    perm: &[usize],
    tol: f64,
) -> Check {
    let (n, d) = (plus.rows(), plus.dim());
    if perm.len() != n {
        return Err(format!(
            "output permutation: {} indices for {n} rows",
            perm.len()
        ));
    }
    let base = call("output build", || build(&[]))?;
    let b = call("output denoise", || base.denoise(plus))?;
    check_belief("output denoise", &b, n, d)?;
    let ch = call("output build (permuted)", || build(perm))?;
    let p = call("output denoise (permuted)", || {
        ch.denoise(&permuted(plus, perm))
    })?;
    check_belief("output denoise (permuted)", &p, n, d)?;
    let expected = select_rows(b.mean.as_ref(), perm);
    batch_report(
        "output permutation equivariance",
        &[(
            "relative deviation",
            belief_deviation(&p, &expected, &b.cov),
        )],
        tol,
        n,
    )
}

// ---------------------------------------------------------------------------------------------
// (d) bad shapes and non-finite inputs.
// ---------------------------------------------------------------------------------------------

/// Malformed variants of a well-formed message, with labels: wrong `d`, a precision of the wrong
/// size, NaN and infinity in the mean, and (if `rows`) one row too many / too few.
fn bad_variants(m: &Message, rows: bool) -> Vec<(String, Message)> {
    let (n, d) = (m.rows(), m.dim());
    let mut out = Vec::new();
    let wide = Mat::from_fn(n, d + 1, |i, j| if j < d { m.mean[(i, j)] } else { 0.1 });
    if let Ok(p) = Spd::scaled_identity(d + 1, 1.0) {
        out.push((
            format!("mean with {} columns (and a matching precision)", d + 1),
            message(wide, &p),
        ));
        out.push((
            format!("precision {0} x {0} for a mean with {d} columns", d + 1),
            message(m.mean.clone(), &p),
        ));
    }
    if n > 0 {
        let mut nan = m.mean.clone();
        nan[(n / 2, 0)] = f64::NAN;
        out.push(("NaN in the mean".into(), message(nan, &m.precision)));
        let mut inf = m.mean.clone();
        inf[(0, d - 1)] = f64::INFINITY;
        out.push(("+inf in the mean".into(), message(inf, &m.precision)));
    }
    if rows {
        let more = Mat::from_fn(n + 1, d, |i, j| m.mean[(i.min(n.saturating_sub(1)), j)]);
        out.push((
            format!("{} rows instead of {n}", n + 1),
            message(more, &m.precision),
        ));
        if n > 1 {
            let fewer = select_rows(m.mean.as_ref(), &(0..n - 1).collect::<Vec<_>>());
            out.push((
                format!("{} rows instead of {n}", n - 1),
                message(fewer, &m.precision),
            ));
        }
    }
    out
}

/// Records a failure unless `f` returns an error (a panic or an `Ok` are failures).
fn expect_error(
    label: String,
    f: impl FnOnce() -> crate::Result<Belief>,
    failures: &mut Vec<String>,
) {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Err(_)) => {}
        Ok(Ok(b)) => {
            let finite = all_finite(b.mean.as_ref()) && b.cov.iter().all(|x| x.is_finite());
            failures.push(format!(
                "{label}: accepted{}",
                if finite {
                    ""
                } else {
                    " and returned a non-finite estimate"
                }
            ))
        }
        Err(p) => failures.push(format!("{label}: panicked ({})", panic_text(p.as_ref()))),
    }
}

fn bad_input_report(what: &str, tried: usize, failures: Vec<String>) -> Check {
    Report {
        deviation: failures.len() as f64,
        tolerance: 0.0,
        contrast: None,
        detail: if failures.is_empty() {
            format!("{tried} malformed inputs, every one rejected with an error")
        } else {
            format!(
                "{} of {tried} malformed inputs not rejected: {}",
                failures.len(),
                failures.join("; ")
            )
        },
    }
    .judge(what)
}

/// Malformed messages into a prior (wrong `d`, wrong precision size, NaN or infinity in the
/// mean) give an error: not a panic, and not `Ok`.
pub fn prior_bad_inputs(prior: &dyn PriorDenoiser, incoming: &Message) -> Check {
    let mut failures = Vec::new();
    let variants = bad_variants(incoming, false);
    for (label, m) in &variants {
        expect_error(label.clone(), || prior.denoise(m), &mut failures);
    }
    bad_input_report("prior bad inputs", variants.len(), failures)
}

/// Malformed messages into a hidden layer give an error in both directions: each message with a
/// wrong `d`, a wrong precision size, NaN or infinity in its mean, or a wrong number of rows
/// (the other message fixes the rows of a row-wise layer).
pub fn layer_bad_inputs(layer: &dyn LayerDenoiser, minus: &Message, plus: &Message) -> Check {
    let mut failures = Vec::new();
    let mut tried = 0;
    for (side, variants) in [
        ("R⁻", bad_variants(minus, true)),
        ("R⁺", bad_variants(plus, true)),
    ] {
        for (label, m) in &variants {
            let (mi, pl) = if side == "R⁻" {
                (m, plus)
            } else {
                (minus, m)
            };
            expect_error(
                format!("forward, {side}: {label}"),
                || layer.forward(mi, pl),
                &mut failures,
            );
            expect_error(
                format!("backward, {side}: {label}"),
                || layer.backward(mi, pl),
                &mut failures,
            );
            tried += 2;
        }
    }
    bad_input_report("layer bad inputs", tried, failures)
}

/// Malformed messages into an output channel (wrong `d`, wrong precision size, NaN or infinity,
/// a row count different from the observation's) give an error.
pub fn output_bad_inputs(output: &dyn OutputDenoiser, plus: &Message) -> Check {
    let mut failures = Vec::new();
    let variants = bad_variants(plus, true);
    for (label, m) in &variants {
        expect_error(label.clone(), || output.denoise(m), &mut failures);
    }
    bad_input_report("output bad inputs", variants.len(), failures)
}

/// An output's shortcuts agree with its denoiser: when it offers
/// [`OutputDenoiser::linear_estimate`], `R⁺ G + Y H` and `Σ̄` are [`OutputDenoiser::denoise`]'s
/// estimate and covariance (to `1e-12` relative); when it offers
/// [`OutputDenoiser::likelihood_message`], the message rule (eq. 2.1, default policy: no
/// clipping) applied to
/// its belief gives that message (to `1e-9`). Passes trivially (deviation 0) for an output
/// that offers neither.
pub fn output_linear_forms(output: &dyn OutputDenoiser, plus: &Message) -> Check {
    let belief = call("output denoise", || output.denoise(plus))?;
    let mut deviation = 0.0f64;
    let mut detail = Vec::new();
    if let Some(est) = output.linear_estimate(&plus.precision) {
        let est = est.map_err(|e| format!("output linear estimate: error {e}"))?;
        let mean = &mul_small(plus.mean.as_ref(), &est.incoming)
            + &mul_small(output.observation(), &est.observation);
        let dm = (&mean - &belief.mean).norm_l2() / belief.mean.norm_l2().max(f64::MIN_POSITIVE);
        let dc = (&est.cov - &belief.cov).norm() / belief.cov.norm().max(f64::MIN_POSITIVE);
        deviation = deviation.max(dm / 1e-12).max(dc / 1e-12);
        detail.push(format!(
            "linear estimate: mean {dm:.2e}, covariance {dc:.2e} (relative)"
        ));
    }
    if let Some(exact) = output.likelihood_message() {
        let ext = MessagePolicy::default()
            .extrinsic(&belief, plus, None, "conformance", 0)
            .map_err(|e| format!("output likelihood message: the message rule failed: {e}"))?;
        let dm = (&ext.message.mean - &exact.mean).norm_l2()
            / exact.mean.norm_l2().max(f64::MIN_POSITIVE);
        let (a, b) = (ext.message.precision.matrix(), exact.precision.matrix());
        let dp = (a - b).norm() / b.norm().max(f64::MIN_POSITIVE);
        deviation = deviation.max(dm / 1e-9).max(dp / 1e-9);
        detail.push(format!(
            "likelihood message: mean {dm:.2e}, precision {dp:.2e} (relative)"
        ));
    }
    Report {
        deviation,
        tolerance: 1.0,
        contrast: None,
        detail: if detail.is_empty() {
            "offers neither shortcut".to_string()
        } else {
            detail.join("; ")
        },
    }
    .judge("output linear forms")
}

// ---------------------------------------------------------------------------------------------
// Samplers.
// ---------------------------------------------------------------------------------------------

fn same_bits(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> bool {
    a.nrows() == b.nrows()
        && a.ncols() == b.ncols()
        && (0..a.ncols())
            .all(|j| (0..a.nrows()).all(|i| a[(i, j)].to_bits() == b[(i, j)].to_bits()))
}

fn sampler_report(what: &str, problems: Vec<String>, detail: String) -> Check {
    Report {
        deviation: problems.len() as f64,
        tolerance: 0.0,
        contrast: None,
        detail: if problems.is_empty() {
            detail
        } else {
            problems.join("; ")
        },
    }
    .judge(what)
}

/// A prior's sampler: `n x d`, finite, identical for the same seed, different for another seed.
pub fn prior_sampler(prior: &dyn PriorSampler, n: usize, seed: u64) -> Check {
    let d = prior.dim();
    let draw = |s: u64| call("prior sample", || prior.sample(n, &mut rng_from_seed(s)));
    let (a, b, c) = (draw(seed)?, draw(seed)?, draw(mix64(seed ^ 1))?);
    let mut problems = Vec::new();
    if a.nrows() != n || a.ncols() != d {
        problems.push(format!(
            "sample is {} x {}, expected {n} x {d}",
            a.nrows(),
            a.ncols()
        ));
    }
    if !all_finite(a.as_ref()) {
        problems.push("sample is not finite".into());
    }
    if !same_bits(a.as_ref(), b.as_ref()) {
        problems.push("two draws with the same seed differ".into());
    }
    if n > 0 && same_bits(a.as_ref(), c.as_ref()) {
        problems.push("draws with different seeds are identical".into());
    }
    sampler_report(
        "prior sampler",
        problems,
        format!("{n} x {d}, finite, reproducible from its seed"),
    )
}

/// A hidden layer's sampler on input rows `z_prev`: `n_l x d` with `n_l = output_rows(n)`,
/// finite, identical for the same seed; an input with the wrong number of columns (or, for a
/// layer with fixed input rows, of rows) gives an error, not a panic.
pub fn layer_sampler(layer: &dyn LayerSampler, z_prev: MatRef<'_, f64>, seed: u64) -> Check {
    let d = layer.dim();
    let n_out = layer.output_rows(z_prev.nrows());
    let draw = |z: MatRef<'_, f64>, s: u64| {
        call("layer sample", || layer.sample(z, &mut rng_from_seed(s)))
    };
    let (a, b) = (draw(z_prev, seed)?, draw(z_prev, seed)?);
    let mut problems = Vec::new();
    if a.nrows() != n_out || a.ncols() != d {
        problems.push(format!(
            "sample is {} x {}, expected {n_out} x {d}",
            a.nrows(),
            a.ncols()
        ));
    }
    if !all_finite(a.as_ref()) {
        problems.push("sample is not finite".into());
    }
    if !same_bits(a.as_ref(), b.as_ref()) {
        problems.push("two draws with the same seed differ".into());
    }
    let n = z_prev.nrows();
    let mut bad = vec![(
        format!("input with {} columns", d + 1),
        Mat::from_fn(n, d + 1, |i, j| if j < d { z_prev[(i, j)] } else { 0.1 }),
    )];
    if let Some(k) = layer.input_rows() {
        bad.push((
            format!("input with {} rows instead of {k}", k + 1),
            Mat::from_fn(k + 1, d, |i, j| z_prev[(i.min(n.saturating_sub(1)), j)]),
        ));
    }
    for (label, z) in &bad {
        match catch_unwind(AssertUnwindSafe(|| {
            layer.sample(z.as_ref(), &mut rng_from_seed(seed))
        })) {
            Ok(Err(_)) => {}
            Ok(Ok(_)) => problems.push(format!("{label}: accepted")),
            Err(p) => problems.push(format!("{label}: panicked ({})", panic_text(p.as_ref()))),
        }
    }
    sampler_report(
        "layer sampler",
        problems,
        format!("{n} -> {n_out} x {d}, finite, reproducible; malformed inputs rejected"),
    )
}

/// An output law: `resample(z)` returns a channel with `z`'s rows and `d`, the same observation
/// (bit for bit, missing entries included) for the same seed and another one for another seed,
/// and a channel that denoises the
/// message `z` (precision `precision`) to a finite estimate; `z` with a wrong number of columns
/// gives an error.
pub fn output_law(law: &dyn OutputLaw, z: MatRef<'_, f64>, precision: &Spd, seed: u64) -> Check {
    let d = law.dim();
    let (n, _) = (z.nrows(), z.ncols());
    let draw = |s: u64| call("output resample", || law.resample(z, &mut rng_from_seed(s)));
    let (a, b) = (draw(seed)?, draw(seed)?);
    let mut problems = Vec::new();
    if a.rows() != n || a.dim() != d {
        problems.push(format!(
            "resampled channel has {} rows and d = {}, expected {n} and {d}",
            a.rows(),
            a.dim()
        ));
    }
    if !same_bits(a.observation(), b.observation()) {
        problems.push("two resamples with the same seed differ".into());
    }
    let c = draw(mix64(seed ^ 1))?;
    if n > 0 && same_bits(a.observation(), c.observation()) {
        problems.push("resamples with different seeds are identical".into());
    }
    match call("denoise of the resampled channel", || {
        a.denoise(&message(z.to_owned(), precision))
    }) {
        Ok(belief) => {
            if let Err(e) = check_belief("denoise of the resampled channel", &belief, n, d) {
                problems.push(e);
            }
        }
        Err(e) => problems.push(e),
    }
    let wide = Mat::from_fn(n, d + 1, |i, j| if j < d { z[(i, j)] } else { 0.1 });
    match catch_unwind(AssertUnwindSafe(|| {
        law.resample(wide.as_ref(), &mut rng_from_seed(seed))
    })) {
        Ok(Err(_)) => {}
        Ok(Ok(_)) => problems.push(format!("Z with {} columns: accepted", d + 1)),
        Err(p) => problems.push(format!(
            "Z with {} columns: panicked ({})",
            d + 1,
            panic_text(p.as_ref())
        )),
    }
    sampler_report(
        "output law",
        problems,
        format!("{n} x {d}: reproducible observation, denoisable; malformed Z rejected"),
    )
}

// ---------------------------------------------------------------------------------------------
// SE steps.
// ---------------------------------------------------------------------------------------------

type Quantities = Vec<(&'static str, DMat)>;

fn se_ctx<'a>(opts: &'a SeOptions, seed: u64, n_mc: usize, location: &str) -> SeContext<'a> {
    SeContext {
        policy: &opts.policy,
        n_mc,
        psi_mode: opts.psi_mode,
        seed,
        iteration: 0,
        location: location.to_string(),
        want_samples: false,
    }
}

fn forward_quantities(s: &SeStep<SeForward>) -> Quantities {
    vec![
        ("E[Σ]", s.estimate.predicted_cov.clone()),
        ("Γ_out", s.out.gamma.matrix().clone()),
        ("error covariance", s.estimate.error_cov.clone()),
        ("K⁺", s.out.k.clone()),
    ]
}

/// `E[a^T e⁻] = K_AA (Ψ⁻ − I)` and `E[e⁻^T e⁻] = T⁻ + (Ψ⁻ − I)^T K_AA (Ψ⁻ − I)` (the inverse of
/// [`super::law::backward_law`]; with `PsiMode::Identity`, `E[e⁻^T e⁻] = T⁻` only). Unlike
/// `Ψ⁻, T⁻`, these are linear in sample moments, so Monte-Carlo batch means are unbiased.
fn backward_quantities(s: &SeStep<SeBackward>, k_aa: &DMat, mode: PsiMode) -> Quantities {
    let d = k_aa.nrows();
    let mut q = vec![
        ("E[Σ]", s.estimate.predicted_cov.clone()),
        ("Γ_out", s.out.gamma.matrix().clone()),
        ("error covariance", s.estimate.error_cov.clone()),
    ];
    match mode {
        PsiMode::General => {
            let m = &s.out.psi - DMat::identity(d, d);
            q.push(("E[aᵀe⁻]", k_aa * &m));
            q.push(("E[e⁻ᵀe⁻]", sym(&(&s.out.t + m.transpose() * k_aa * &m))));
        }
        PsiMode::Identity => q.push(("E[e⁻ᵀe⁻]", s.out.t.clone())),
    }
    q
}

/// Compares the step's quantities with the batch means by z-scores (module documentation).
/// `step_var` is the step's own Monte-Carlo variance in units of the variance of the batch mean.
fn compare_se(
    what: &str,
    got: &Quantities,
    batches: &[Quantities],
    step_var: f64,
    z_tol: f64,
) -> Check {
    let nb = batches.len();
    if nb < 2 {
        return Err(format!("{what}: at least 2 batches are needed"));
    }
    let mut worst = 0.0f64;
    let mut worst_at = String::new();
    let mut contrast = None;
    let mut parts = Vec::new();
    for (q, (name, g)) in got.iter().enumerate() {
        let mut mean = DMat::zeros(g.nrows(), g.ncols());
        for b in batches {
            let x = &b[q].1;
            if x.shape() != g.shape() {
                return Err(format!(
                    "{what}: {name} has shape {:?} in a batch, {:?} in the step",
                    x.shape(),
                    g.shape()
                ));
            }
            mean += x;
        }
        mean /= nb as f64;
        let mut var = DMat::zeros(g.nrows(), g.ncols());
        for b in batches {
            let dlt = &b[q].1 - &mean;
            var += dlt.component_mul(&dlt);
        }
        var /= (nb - 1) as f64;
        let scale = mean.abs().max().max(1e-300);
        let zscore = |v: &DMat| -> (f64, (usize, usize)) {
            let mut zq = 0.0f64;
            let mut at = (0, 0);
            for i in 0..v.nrows() {
                for j in 0..v.ncols() {
                    let se = (var[(i, j)] / nb as f64 * (1.0 + step_var)
                        + (SE_ROUNDING * scale).powi(2))
                    .sqrt();
                    let z = (v[(i, j)] - mean[(i, j)]).abs() / se;
                    let z = if z.is_nan() { f64::INFINITY } else { z };
                    if z > zq {
                        zq = z;
                        at = (i, j);
                    }
                }
            }
            (zq, at)
        };
        let (zq, at) = zscore(g);
        let rel = (g - &mean).norm() / mean.norm().max(1e-300);
        parts.push(format!("{name} rel {rel:.1e} z {zq:.2}"));
        if zq > worst || worst_at.is_empty() {
            worst = worst.max(zq);
            worst_at = format!(
                "{name}[{},{}]: step {:.6e} vs reference {:.6e}",
                at.0,
                at.1,
                g[(at.0, at.1)],
                mean[(at.0, at.1)]
            );
        }
        if *name == "error covariance" {
            contrast = Some(zscore(&(g * 1.5)).0);
        }
    }
    Report {
        deviation: worst,
        tolerance: z_tol,
        contrast,
        detail: format!(
            "{what} (max z-score over entries; {nb} reference batches): {}; worst {worst_at}",
            parts.join(", ")
        ),
    }
    .judge(what)
}

fn check_batches(opts: &SeOptions) -> std::result::Result<(), String> {
    if opts.batches < 2 || opts.batch_rows == 0 || opts.n_mc == 0 {
        return Err("SE check: needs batches >= 2, batch_rows >= 1 and n_mc >= 1".into());
    }
    Ok(())
}

/// The prior's SE step (assumed exact) against the generic Monte-Carlo step
/// [`monte_carlo::prior_forward`] on `reference` (usually the prior itself).
pub fn prior_se_vs_monte_carlo(
    step: &dyn PriorSe,
    reference: &dyn InputPrior,
    minus: &SeBackward,
    opts: &SeOptions,
) -> Check {
    check_batches(opts)?;
    let s = call("prior SE step", || {
        step.se_forward(minus, &se_ctx(opts, opts.seed, opts.n_mc, "prior"), None)
    })?;
    let mut batches = Vec::with_capacity(opts.batches);
    for b in 0..opts.batches {
        let ctx = se_ctx(opts, batch_seed(opts.seed, b), opts.batch_rows, "prior");
        let r = call("Monte-Carlo prior step", || {
            monte_carlo::prior_forward(reference, minus, &ctx, None)
        })?;
        batches.push(forward_quantities(&r));
    }
    compare_se(
        &format!(
            "prior SE vs Monte Carlo ({} x {} rows)",
            opts.batches, opts.batch_rows
        ),
        &forward_quantities(&s),
        &batches,
        0.0,
        opts.z_tol,
    )
}

/// The rows of one reference batch of a layer: its fixed input rows, or `opts.batch_rows`.
fn layer_batch_rows(layer: &dyn Layer, opts: &SeOptions) -> usize {
    layer.input_rows().unwrap_or(opts.batch_rows)
}

/// A layer's SE step (assumed exact) in direction `dir` against the generic Monte-Carlo step
/// ([`monte_carlo::layer_forward`], [`monte_carlo::layer_backward`]) on `reference` (the layer
/// itself, or a full layer equivalent to an SE-only one).
pub fn layer_se_vs_monte_carlo(
    step: &dyn LayerSe,
    reference: &dyn Layer,
    dir: Direction,
    minus: &SeBackward,
    plus_in: &SeForward,
    opts: &SeOptions,
) -> Check {
    check_batches(opts)?;
    let d = plus_in.gamma.dim();
    let k_aa = plus_in.k.view((0, 0), (d, d)).into_owned();
    let rows = layer_batch_rows(reference, opts);
    let loc = format!("layer {}", dir.name());
    let got = match dir {
        Direction::Forward => forward_quantities(&call("layer SE step", || {
            step.se_forward(
                minus,
                plus_in,
                &se_ctx(opts, opts.seed, opts.n_mc, &loc),
                None,
            )
        })?),
        Direction::Backward => backward_quantities(
            &call("layer SE step", || {
                step.se_backward(
                    minus,
                    plus_in,
                    &se_ctx(opts, opts.seed, opts.n_mc, &loc),
                    None,
                )
            })?,
            &k_aa,
            opts.psi_mode,
        ),
    };
    let mut batches = Vec::with_capacity(opts.batches);
    for b in 0..opts.batches {
        let ctx = se_ctx(opts, batch_seed(opts.seed, b), rows, &loc);
        batches.push(match dir {
            Direction::Forward => forward_quantities(&call("Monte-Carlo layer step", || {
                monte_carlo::layer_forward(reference, minus, plus_in, &ctx, None)
            })?),
            Direction::Backward => backward_quantities(
                &call("Monte-Carlo layer step", || {
                    monte_carlo::layer_backward(reference, minus, plus_in, &ctx, None)
                })?,
                &k_aa,
                opts.psi_mode,
            ),
        });
    }
    compare_se(
        &format!(
            "layer {} SE vs Monte Carlo ({} x {rows} rows)",
            dir.name(),
            opts.batches
        ),
        &got,
        &batches,
        0.0,
        opts.z_tol,
    )
}

/// An output's SE step (assumed exact) against the generic Monte-Carlo step
/// [`monte_carlo::output_backward`] on `reference` (the channel's law, or an equivalent one).
pub fn output_se_vs_monte_carlo(
    step: &dyn OutputSe,
    reference: &dyn OutputLaw,
    plus: &SeForward,
    opts: &SeOptions,
) -> Check {
    check_batches(opts)?;
    let d = plus.gamma.dim();
    let k_aa = plus.k.view((0, 0), (d, d)).into_owned();
    let s = call("output SE step", || {
        step.se_backward(plus, &se_ctx(opts, opts.seed, opts.n_mc, "output"), None)
    })?;
    let mut batches = Vec::with_capacity(opts.batches);
    for b in 0..opts.batches {
        let ctx = se_ctx(opts, batch_seed(opts.seed, b), opts.batch_rows, "output");
        let r = call("Monte-Carlo output step", || {
            monte_carlo::output_backward(reference, plus, &ctx, None)
        })?;
        batches.push(backward_quantities(&r, &k_aa, opts.psi_mode));
    }
    compare_se(
        &format!(
            "output SE vs Monte Carlo ({} x {} rows)",
            opts.batches, opts.batch_rows
        ),
        &backward_quantities(&s, &k_aa, opts.psi_mode),
        &batches,
        0.0,
        opts.z_tol,
    )
}

// Independent simulation of the row models (spec §6.2 (P), (N), (O)), written apart from
// `monte_carlo` (own draws and draw order), for the factors whose step is Monte Carlo.

fn rule(
    opts: &SeOptions,
    belief: &Belief,
    incoming: &Message,
) -> std::result::Result<(DMat, Spd, Spd), String> {
    opts.policy
        .precision_update(&belief.cov, &incoming.precision, None, "simulation", 0)
        .map_err(|e| format!("message rule in the simulation: {e}"))
}

fn simulate_prior(
    prior: &dyn InputPrior,
    minus: &SeBackward,
    rows: usize,
    opts: &SeOptions,
    seed: u64,
) -> std::result::Result<Quantities, String> {
    let mut rng = rng_from_seed(seed);
    let c = gaussian(rows, &minus.t, &mut rng);
    let z = call("prior sample", || prior.sample(rows, &mut rng))?;
    let msg = message(mul_small(z.as_ref(), &minus.psi) + c, &minus.gamma);
    let belief = call("prior denoise", || prior.denoise(&msg))?;
    check_belief("prior denoise", &belief, rows, prior.dim())?;
    let (lambda, gamma, divisor) = rule(opts, &belief, &msg)?;
    let e = extrinsic_mean(belief.mean.as_ref(), &lambda, &msg, &divisor)
        .map_err(|e| format!("extrinsic mean in the simulation: {e}"))?
        - &z;
    let err = &belief.mean - &z;
    Ok(vec![
        ("E[Σ]", belief.cov.clone()),
        ("Γ_out", gamma.matrix().clone()),
        (
            "error covariance",
            sym(&cross_moment(err.as_ref(), err.as_ref())),
        ),
        ("K⁺", joint_moment(z.as_ref(), e.as_ref())),
    ])
}

fn backward_sim_quantities(
    belief: &Belief,
    gamma: &Spd,
    a: &Mat<f64>,
    e: &Mat<f64>,
    mode: PsiMode,
) -> Quantities {
    let err = &belief.mean - a;
    let mut q = vec![
        ("E[Σ]", belief.cov.clone()),
        ("Γ_out", gamma.matrix().clone()),
        (
            "error covariance",
            sym(&cross_moment(err.as_ref(), err.as_ref())),
        ),
    ];
    if mode == PsiMode::General {
        q.push(("E[aᵀe⁻]", cross_moment(a.as_ref(), e.as_ref())));
    }
    q.push(("E[e⁻ᵀe⁻]", sym(&cross_moment(e.as_ref(), e.as_ref()))));
    q
}

fn simulate_layer(
    layer: &dyn Layer,
    dir: Direction,
    minus: &SeBackward,
    plus_in: &SeForward,
    rows: usize,
    opts: &SeOptions,
    seed: u64,
) -> std::result::Result<Quantities, String> {
    let d = plus_in.gamma.dim();
    let mut rng = rng_from_seed(seed);
    let ab = gaussian(rows, &plus_in.k, &mut rng);
    let a = ab.as_ref().subcols(0, d).to_owned();
    let r_plus = message(&a + ab.as_ref().subcols(d, d), &plus_in.gamma);
    let out = call("layer sample", || layer.sample(a.as_ref(), &mut rng))?;
    let c = gaussian(out.nrows(), &minus.t, &mut rng);
    let r_minus = message(mul_small(out.as_ref(), &minus.psi) + c, &minus.gamma);
    match dir {
        Direction::Forward => {
            let belief = call("layer forward", || layer.forward(&r_minus, &r_plus))?;
            check_belief("layer forward", &belief, out.nrows(), d)?;
            let (lambda, gamma, divisor) = rule(opts, &belief, &r_minus)?;
            let e = extrinsic_mean(belief.mean.as_ref(), &lambda, &r_minus, &divisor)
                .map_err(|e| format!("extrinsic mean in the simulation: {e}"))?
                - &out;
            let err = &belief.mean - &out;
            Ok(vec![
                ("E[Σ]", belief.cov.clone()),
                ("Γ_out", gamma.matrix().clone()),
                (
                    "error covariance",
                    sym(&cross_moment(err.as_ref(), err.as_ref())),
                ),
                ("K⁺", joint_moment(out.as_ref(), e.as_ref())),
            ])
        }
        Direction::Backward => {
            let belief = call("layer backward", || layer.backward(&r_minus, &r_plus))?;
            check_belief("layer backward", &belief, rows, d)?;
            let (lambda, gamma, divisor) = rule(opts, &belief, &r_plus)?;
            let e = extrinsic_mean(belief.mean.as_ref(), &lambda, &r_plus, &divisor)
                .map_err(|e| format!("extrinsic mean in the simulation: {e}"))?
                - &a;
            Ok(backward_sim_quantities(
                &belief,
                &gamma,
                &a,
                &e,
                opts.psi_mode,
            ))
        }
    }
}

fn simulate_output(
    law: &dyn OutputLaw,
    plus: &SeForward,
    rows: usize,
    opts: &SeOptions,
    seed: u64,
) -> std::result::Result<Quantities, String> {
    let d = plus.gamma.dim();
    let mut rng = rng_from_seed(seed);
    let ab = gaussian(rows, &plus.k, &mut rng);
    let a = ab.as_ref().subcols(0, d).to_owned();
    let r_plus = message(&a + ab.as_ref().subcols(d, d), &plus.gamma);
    let channel = call("output resample", || law.resample(a.as_ref(), &mut rng))?;
    let belief = call("output denoise", || channel.denoise(&r_plus))?;
    check_belief("output denoise", &belief, rows, d)?;
    let (lambda, gamma, divisor) = rule(opts, &belief, &r_plus)?;
    let e = extrinsic_mean(belief.mean.as_ref(), &lambda, &r_plus, &divisor)
        .map_err(|e| format!("extrinsic mean in the simulation: {e}"))?
        - &a;
    Ok(backward_sim_quantities(
        &belief,
        &gamma,
        &a,
        &e,
        opts.psi_mode,
    ))
}

/// The variance of a step with `n_mc` rows relative to that of the mean of `batches` batches of
/// `rows` rows.
fn step_variance(opts: &SeOptions, rows: usize) -> f64 {
    opts.batches as f64 * rows as f64 / opts.n_mc as f64
}

/// A prior whose SE step is Monte Carlo: the step (with `opts.n_mc` rows) against an independent
/// simulation of the row model (P) over `opts.batches` batches of `opts.batch_rows` rows.
pub fn prior_se_vs_simulation(
    prior: &dyn InputPrior,
    minus: &SeBackward,
    opts: &SeOptions,
) -> Check {
    check_batches(opts)?;
    let s = call("prior SE step", || {
        prior.se_forward(minus, &se_ctx(opts, opts.seed, opts.n_mc, "prior"), None)
    })?;
    let mut batches = Vec::with_capacity(opts.batches);
    for b in 0..opts.batches {
        batches.push(simulate_prior(
            prior,
            minus,
            opts.batch_rows,
            opts,
            batch_seed(opts.seed ^ 0x5117, b),
        )?);
    }
    compare_se(
        &format!(
            "prior SE ({} rows) vs simulation ({} x {} rows)",
            opts.n_mc, opts.batches, opts.batch_rows
        ),
        &forward_quantities(&s),
        &batches,
        step_variance(opts, opts.batch_rows),
        opts.z_tol,
    )
}

/// A layer whose SE step is Monte Carlo: the step in direction `dir` against an independent
/// simulation of the row model (N).
pub fn layer_se_vs_simulation(
    layer: &dyn Layer,
    dir: Direction,
    minus: &SeBackward,
    plus_in: &SeForward,
    opts: &SeOptions,
) -> Check {
    check_batches(opts)?;
    let d = plus_in.gamma.dim();
    let k_aa = plus_in.k.view((0, 0), (d, d)).into_owned();
    let rows = layer_batch_rows(layer, opts);
    let loc = format!("layer {}", dir.name());
    let ctx = se_ctx(opts, opts.seed, opts.n_mc, &loc);
    let got = match dir {
        Direction::Forward => forward_quantities(&call("layer SE step", || {
            layer.se_forward(minus, plus_in, &ctx, None)
        })?),
        Direction::Backward => backward_quantities(
            &call("layer SE step", || {
                layer.se_backward(minus, plus_in, &ctx, None)
            })?,
            &k_aa,
            opts.psi_mode,
        ),
    };
    let mut batches = Vec::with_capacity(opts.batches);
    for b in 0..opts.batches {
        batches.push(simulate_layer(
            layer,
            dir,
            minus,
            plus_in,
            rows,
            opts,
            batch_seed(opts.seed ^ 0x5117, b),
        )?);
    }
    compare_se(
        &format!(
            "layer {} SE ({} rows) vs simulation ({} x {rows} rows)",
            dir.name(),
            opts.n_mc,
            opts.batches
        ),
        &got,
        &batches,
        step_variance(opts, rows),
        opts.z_tol,
    )
}

/// An output whose SE step is Monte Carlo: the step against an independent simulation of the
/// row model (O) that draws observations with `law`.
pub fn output_se_vs_simulation(
    step: &dyn OutputSe,
    law: &dyn OutputLaw,
    plus: &SeForward,
    opts: &SeOptions,
) -> Check {
    check_batches(opts)?;
    let d = plus.gamma.dim();
    let k_aa = plus.k.view((0, 0), (d, d)).into_owned();
    let s = call("output SE step", || {
        step.se_backward(plus, &se_ctx(opts, opts.seed, opts.n_mc, "output"), None)
    })?;
    let mut batches = Vec::with_capacity(opts.batches);
    for b in 0..opts.batches {
        batches.push(simulate_output(
            law,
            plus,
            opts.batch_rows,
            opts,
            batch_seed(opts.seed ^ 0x5117, b),
        )?);
    }
    compare_se(
        &format!(
            "output SE ({} rows) vs simulation ({} x {} rows)",
            opts.n_mc, opts.batches, opts.batch_rows
        ),
        &backward_quantities(&s, &k_aa, opts.psi_mode),
        &batches,
        step_variance(opts, opts.batch_rows),
        opts.z_tol,
    )
}

/// Two runs with the same seed give the same quantities bit for bit; if `seed_dependent`, a run
/// with another seed changes the predicted error covariance (the seed is used).
fn reproducible(
    what: &str,
    run: &dyn Fn(u64) -> std::result::Result<Quantities, String>,
    seed: u64,
    seed_dependent: bool,
) -> Check {
    let (a, b) = (run(seed)?, run(seed)?);
    let mut problems = Vec::new();
    let mut max_diff = 0.0f64;
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        let same = x.shape() == y.shape()
            && x.iter()
                .zip(y.iter())
                .all(|(p, q)| p.to_bits() == q.to_bits());
        if !same {
            let diff = if x.shape() == y.shape() {
                (x - y).abs().max()
            } else {
                f64::INFINITY
            };
            max_diff = max_diff.max(diff);
            problems.push(format!(
                "{name} differs between two runs with the same seed (by {diff:.2e})"
            ));
        }
    }
    if seed_dependent {
        let c = run(mix64(seed ^ 0xD1FF))?;
        let idx = a.iter().position(|(n, _)| *n == "error covariance");
        if let Some(i) = idx {
            if a[i].1 == c[i].1 {
                problems.push("the error covariance does not depend on the seed".into());
            }
        }
    }
    Report {
        deviation: problems.len() as f64,
        tolerance: 0.0,
        contrast: None,
        detail: if problems.is_empty() {
            format!(
                "{what}: identical for the same seed{}",
                if seed_dependent {
                    ", different for another seed"
                } else {
                    ""
                }
            )
        } else {
            format!(
                "{what}: {} (largest difference {max_diff:.2e})",
                problems.join("; ")
            )
        },
    }
    .judge(what)
}

/// The prior's SE step is a deterministic function of its seed (`n_mc` rows); if
/// `seed_dependent` (a Monte-Carlo step), another seed changes its prediction.
pub fn prior_se_reproducible(
    step: &dyn PriorSe,
    minus: &SeBackward,
    opts: &SeOptions,
    n_mc: usize,
    seed_dependent: bool,
) -> Check {
    reproducible(
        "prior SE reproducibility",
        &|seed| {
            let s = call("prior SE step", || {
                step.se_forward(minus, &se_ctx(opts, seed, n_mc, "prior"), None)
            })?;
            Ok(forward_quantities(&s))
        },
        opts.seed,
        seed_dependent,
    )
}

/// The layer's SE step in direction `dir` is a deterministic function of its seed.
pub fn layer_se_reproducible(
    step: &dyn LayerSe,
    dir: Direction,
    minus: &SeBackward,
    plus_in: &SeForward,
    opts: &SeOptions,
    n_mc: usize,
    seed_dependent: bool,
) -> Check {
    let d = plus_in.gamma.dim();
    let k_aa = plus_in.k.view((0, 0), (d, d)).into_owned();
    reproducible(
        &format!("layer {} SE reproducibility", dir.name()),
        &|seed| {
            let ctx = se_ctx(opts, seed, n_mc, "layer");
            Ok(match dir {
                Direction::Forward => forward_quantities(&call("layer SE step", || {
                    step.se_forward(minus, plus_in, &ctx, None)
                })?),
                Direction::Backward => backward_quantities(
                    &call("layer SE step", || {
                        step.se_backward(minus, plus_in, &ctx, None)
                    })?,
                    &k_aa,
                    opts.psi_mode,
                ),
            })
        },
        opts.seed,
        seed_dependent,
    )
}

/// The output's SE step is a deterministic function of its seed.
pub fn output_se_reproducible(
    step: &dyn OutputSe,
    plus: &SeForward,
    opts: &SeOptions,
    n_mc: usize,
    seed_dependent: bool,
) -> Check {
    let d = plus.gamma.dim();
    let k_aa = plus.k.view((0, 0), (d, d)).into_owned();
    reproducible(
        "output SE reproducibility",
        &|seed| {
            let s = call("output SE step", || {
                step.se_backward(plus, &se_ctx(opts, seed, n_mc, "output"), None)
            })?;
            Ok(backward_quantities(&s, &k_aa, opts.psi_mode))
        },
        opts.seed,
        seed_dependent,
    )
}

/// Monte-Carlo rows of the reproducibility runs (small: only determinism is checked).
pub const REPRODUCIBILITY_ROWS: usize = 2_000;

// ---------------------------------------------------------------------------------------------
// Cases: a factor with the laws its checks use, and the runner of every applicable check.
// ---------------------------------------------------------------------------------------------

fn outcome(factor: &str, check: impl Into<String>, result: Check) -> Outcome {
    Outcome {
        factor: factor.to_string(),
        check: check.into(),
        result,
    }
}

/// A prior under test.
#[derive(Clone)]
pub struct PriorCase {
    /// The name shown in failures.
    pub name: String,
    /// The prior.
    pub prior: Arc<dyn InputPrior>,
    /// Its SE step.
    pub se_kind: SeKind,
    /// The law of the backward message into it (SE check; the denoiser checks draw their
    /// message from it).
    pub minus: SeBackward,
    /// Rows of the denoiser checks.
    pub rows: usize,
    /// Jacobian options.
    pub jacobian: JacobianOptions,
    /// SE options.
    pub se: SeOptions,
    /// Seed of the drawn messages and permutations.
    pub seed: u64,
}

impl PriorCase {
    /// A case with the default options (12 rows, [`JacobianOptions::default`],
    /// [`SeOptions::default`]).
    pub fn new(
        name: impl Into<String>,
        prior: Arc<dyn InputPrior>,
        se_kind: SeKind,
        minus: SeBackward,
    ) -> Self {
        PriorCase {
            name: name.into(),
            prior,
            se_kind,
            minus,
            rows: 12,
            jacobian: JacobianOptions::default(),
            se: SeOptions::default(),
            seed: 0x9E11,
        }
    }
    /// The same case with other Jacobian options.
    pub fn with_jacobian(mut self, jacobian: JacobianOptions) -> Self {
        self.jacobian = jacobian;
        self
    }
    /// The same case with other SE options.
    pub fn with_se(mut self, se: SeOptions) -> Self {
        self.se = se;
        self
    }

    /// Runs every check of a prior: Jacobian, batch, permutation, bad inputs, sampler and the SE
    /// checks of its kind.
    pub fn run(&self) -> Vec<Outcome> {
        let name = &self.name;
        let p: &dyn InputPrior = self.prior.as_ref();
        let mut out = Vec::new();
        let msg = match prior_message(p, &self.minus, self.rows, self.seed) {
            Ok((_, m)) => m,
            Err(e) => return vec![outcome(name, "test message", Err(e))],
        };
        out.push(outcome(
            name,
            "jacobian",
            prior_jacobian(p, &msg, &self.jacobian),
        ));
        out.push(outcome(name, "batch", prior_batch(p, &msg, EXACT_TOL)));
        let perm = permutation(self.rows, mix64(self.seed));
        out.push(outcome(
            name,
            "permutation",
            prior_permutation(p, &msg, &perm, EXACT_TOL),
        ));
        out.push(outcome(name, "bad inputs", prior_bad_inputs(p, &msg)));
        out.push(outcome(name, "sampler", prior_sampler(p, 200, self.seed)));
        match self.se_kind {
            SeKind::Exact => {
                out.push(outcome(
                    name,
                    "se vs monte carlo",
                    prior_se_vs_monte_carlo(p, p, &self.minus, &self.se),
                ));
                out.push(outcome(
                    name,
                    "se reproducible",
                    prior_se_reproducible(p, &self.minus, &self.se, REPRODUCIBILITY_ROWS, false),
                ));
            }
            SeKind::MonteCarlo => {
                out.push(outcome(
                    name,
                    "se reproducible",
                    prior_se_reproducible(p, &self.minus, &self.se, REPRODUCIBILITY_ROWS, true),
                ));
                out.push(outcome(
                    name,
                    "se vs simulation",
                    prior_se_vs_simulation(p, &self.minus, &self.se),
                ));
            }
        }
        out
    }
}

/// A hidden layer under test: a complete layer (built for any row permutation), or an SE-only
/// layer with an equivalent complete layer to compare its SE step with.
#[derive(Clone)]
pub enum LayerFactor {
    /// A complete layer; see [`LayerBuilder`].
    Full(Arc<LayerBuilder>),
    /// An SE-only layer and a complete layer with the same law.
    SeOnly {
        /// The SE step under test.
        step: Arc<dyn LayerSe>,
        /// The equivalent complete layer whose Monte-Carlo step it must reproduce.
        reference: Arc<dyn Layer>,
    },
}

/// A hidden layer under test.
#[derive(Clone)]
pub struct LayerCase {
    /// The name shown in failures.
    pub name: String,
    /// The layer.
    pub factor: LayerFactor,
    /// Its SE step.
    pub se_kind: SeKind,
    /// The law of the backward message about `Z_l`.
    pub minus: SeBackward,
    /// The law of the forward message about `Z_{l−1}`.
    pub plus: SeForward,
    /// Rows of the denoiser checks of a row-wise layer (a linear layer uses its own).
    pub rows: usize,
    /// Jacobian options (both directions).
    pub jacobian: JacobianOptions,
    /// SE options.
    pub se: SeOptions,
    /// Seed of the drawn messages and permutations.
    pub seed: u64,
}

impl LayerCase {
    /// A complete layer rebuilt for permuted rows by `build` (see [`LayerBuilder`]).
    pub fn rebuilt(
        name: impl Into<String>,
        build: impl Fn(&[usize], &[usize]) -> crate::Result<Arc<dyn Layer>> + Send + Sync + 'static,
        se_kind: SeKind,
        minus: SeBackward,
        plus: SeForward,
    ) -> Self {
        LayerCase {
            name: name.into(),
            factor: LayerFactor::Full(Arc::new(build)),
            se_kind,
            minus,
            plus,
            rows: 12,
            jacobian: JacobianOptions::default(),
            se: SeOptions::default(),
            seed: 0x1A7E,
        }
    }
    /// A complete row-wise layer (the same layer serves every permutation).
    pub fn row_wise(
        name: impl Into<String>,
        layer: Arc<dyn Layer>,
        se_kind: SeKind,
        minus: SeBackward,
        plus: SeForward,
    ) -> Self {
        Self::rebuilt(name, move |_, _| Ok(layer.clone()), se_kind, minus, plus)
    }
    /// An SE-only layer (its step is taken to be exact) and an equivalent complete layer.
    pub fn se_only(
        name: impl Into<String>,
        step: Arc<dyn LayerSe>,
        reference: Arc<dyn Layer>,
        minus: SeBackward,
        plus: SeForward,
    ) -> Self {
        LayerCase {
            name: name.into(),
            factor: LayerFactor::SeOnly { step, reference },
            se_kind: SeKind::Exact,
            minus,
            plus,
            rows: 12,
            jacobian: JacobianOptions::default(),
            se: SeOptions::default(),
            seed: 0x1A7E,
        }
    }
    /// The same case with other Jacobian options.
    pub fn with_jacobian(mut self, jacobian: JacobianOptions) -> Self {
        self.jacobian = jacobian;
        self
    }
    /// The same case with other SE options.
    pub fn with_se(mut self, se: SeOptions) -> Self {
        self.se = se;
        self
    }

    /// Runs every check of a layer: for a complete layer the Jacobian (both directions), batch
    /// (row-wise layers), permutation, bad inputs, sampler and SE checks; for an SE-only layer
    /// the SE checks against its reference.
    pub fn run(&self) -> Vec<Outcome> {
        let name = &self.name;
        let mut out = Vec::new();
        let dirs = [Direction::Forward, Direction::Backward];
        let build = match &self.factor {
            LayerFactor::SeOnly { step, reference } => {
                for dir in dirs {
                    out.push(outcome(
                        name,
                        format!("se {} vs monte carlo", dir.name()),
                        layer_se_vs_monte_carlo(
                            step.as_ref(),
                            reference.as_ref(),
                            dir,
                            &self.minus,
                            &self.plus,
                            &self.se,
                        ),
                    ));
                    out.push(outcome(
                        name,
                        format!("se {} reproducible", dir.name()),
                        layer_se_reproducible(
                            step.as_ref(),
                            dir,
                            &self.minus,
                            &self.plus,
                            &self.se,
                            REPRODUCIBILITY_ROWS,
                            false,
                        ),
                    ));
                }
                return out;
            }
            LayerFactor::Full(build) => build,
        };
        let layer = match call("layer build", || build(&[], &[])) {
            Ok(l) => l,
            Err(e) => return vec![outcome(name, "build", Err(e))],
        };
        let l: &dyn Layer = layer.as_ref();
        let n_in = l.input_rows().unwrap_or(self.rows);
        let n_out = l.output_rows(n_in);
        let (minus, plus) = match layer_messages(l, &self.minus, &self.plus, n_in, self.seed) {
            Ok(m) => m,
            Err(e) => return vec![outcome(name, "test messages", Err(e))],
        };
        for dir in dirs {
            out.push(outcome(
                name,
                format!("jacobian {}", dir.name()),
                layer_jacobian(l, dir, &minus, &plus, &self.jacobian),
            ));
        }
        let row_wise = l.kind() == LayerKind::RowWise;
        if row_wise {
            out.push(outcome(
                name,
                "batch",
                layer_batch(l, &minus, &plus, EXACT_TOL),
            ));
        }
        let in_perm = permutation(n_in, mix64(self.seed));
        let out_perm = if row_wise {
            in_perm.clone()
        } else {
            permutation(n_out, mix64(self.seed ^ 7))
        };
        out.push(outcome(
            name,
            "permutation",
            layer_permutation(
                build.as_ref(),
                &minus,
                &plus,
                &out_perm,
                &in_perm,
                EXACT_TOL,
            ),
        ));
        out.push(outcome(
            name,
            "bad inputs",
            layer_bad_inputs(l, &minus, &plus),
        ));
        let d = self.plus.gamma.dim();
        let z_prev = gaussian(
            n_in,
            &self.plus.k.view((0, 0), (d, d)).into_owned(),
            &mut rng_from_seed(self.seed ^ 3),
        );
        out.push(outcome(
            name,
            "sampler",
            layer_sampler(l, z_prev.as_ref(), self.seed),
        ));
        for dir in dirs {
            match self.se_kind {
                SeKind::Exact => {
                    out.push(outcome(
                        name,
                        format!("se {} vs monte carlo", dir.name()),
                        layer_se_vs_monte_carlo(l, l, dir, &self.minus, &self.plus, &self.se),
                    ));
                    out.push(outcome(
                        name,
                        format!("se {} reproducible", dir.name()),
                        layer_se_reproducible(
                            l,
                            dir,
                            &self.minus,
                            &self.plus,
                            &self.se,
                            REPRODUCIBILITY_ROWS,
                            false,
                        ),
                    ));
                }
                SeKind::MonteCarlo => {
                    out.push(outcome(
                        name,
                        format!("se {} reproducible", dir.name()),
                        layer_se_reproducible(
                            l,
                            dir,
                            &self.minus,
                            &self.plus,
                            &self.se,
                            REPRODUCIBILITY_ROWS,
                            true,
                        ),
                    ));
                    out.push(outcome(
                        name,
                        format!("se {} vs simulation", dir.name()),
                        layer_se_vs_simulation(l, dir, &self.minus, &self.plus, &self.se),
                    ));
                }
            }
        }
        out
    }
}

/// An output channel under test: a complete channel (built on any selection of its observation's
/// rows) with the true rows its observation was drawn for, or an SE-only channel with an
/// equivalent law to compare its SE step with.
#[derive(Clone)]
pub enum OutputFactor {
    /// A complete channel; see [`OutputBuilder`].
    Full {
        /// Builds the channel on selected rows of its observation.
        build: Arc<OutputBuilder>,
        /// The true rows `Z_{L−1}` (`n x d`) the observation was drawn for.
        truth: Mat<f64>,
    },
    /// An SE-only channel and an equivalent law.
    SeOnly {
        /// The SE step under test.
        step: Arc<dyn OutputSe>,
        /// The law whose Monte-Carlo step it must reproduce.
        reference: Arc<dyn OutputLaw>,
    },
}

/// An output channel under test.
#[derive(Clone)]
pub struct OutputCase {
    /// The name shown in failures.
    pub name: String,
    /// The channel.
    pub factor: OutputFactor,
    /// Its SE step.
    pub se_kind: SeKind,
    /// The law of the forward message about `Z_{L−1}`.
    pub plus: SeForward,
    /// Jacobian options.
    pub jacobian: JacobianOptions,
    /// SE options.
    pub se: SeOptions,
    /// Seed of the drawn messages and permutations.
    pub seed: u64,
}

impl OutputCase {
    /// A complete channel built by `build` (see [`OutputBuilder`]) whose observation was drawn for
    /// the true rows `truth`.
    pub fn full(
        name: impl Into<String>,
        build: impl Fn(&[usize]) -> crate::Result<Arc<dyn OutputChannel>> + Send + Sync + 'static,
        truth: Mat<f64>,
        se_kind: SeKind,
        plus: SeForward,
    ) -> Self {
        OutputCase {
            name: name.into(),
            factor: OutputFactor::Full {
                build: Arc::new(build),
                truth,
            },
            se_kind,
            plus,
            jacobian: JacobianOptions::default(),
            se: SeOptions::default(),
            seed: 0x0C7E,
        }
    }
    /// An SE-only channel (its step is taken to be exact) and an equivalent law.
    pub fn se_only(
        name: impl Into<String>,
        step: Arc<dyn OutputSe>,
        reference: Arc<dyn OutputLaw>,
        plus: SeForward,
    ) -> Self {
        OutputCase {
            name: name.into(),
            factor: OutputFactor::SeOnly { step, reference },
            se_kind: SeKind::Exact,
            plus,
            jacobian: JacobianOptions::default(),
            se: SeOptions::default(),
            seed: 0x0C7E,
        }
    }
    /// The same case with other Jacobian options.
    pub fn with_jacobian(mut self, jacobian: JacobianOptions) -> Self {
        self.jacobian = jacobian;
        self
    }
    /// The same case with other SE options.
    pub fn with_se(mut self, se: SeOptions) -> Self {
        self.se = se;
        self
    }

    /// Runs every check of an output: for a complete channel the Jacobian, batch, permutation,
    /// bad inputs, law and SE checks; for an SE-only channel the SE checks against its reference.
    pub fn run(&self) -> Vec<Outcome> {
        let name = &self.name;
        let mut out = Vec::new();
        let (build, truth) = match &self.factor {
            OutputFactor::SeOnly { step, reference } => {
                out.push(outcome(
                    name,
                    "se vs monte carlo",
                    output_se_vs_monte_carlo(
                        step.as_ref(),
                        reference.as_ref(),
                        &self.plus,
                        &self.se,
                    ),
                ));
                out.push(outcome(
                    name,
                    "se reproducible",
                    output_se_reproducible(
                        step.as_ref(),
                        &self.plus,
                        &self.se,
                        REPRODUCIBILITY_ROWS,
                        false,
                    ),
                ));
                return out;
            }
            OutputFactor::Full { build, truth } => (build, truth),
        };
        let channel = match call("output build", || build(&[])) {
            Ok(c) => c,
            Err(e) => return vec![outcome(name, "build", Err(e))],
        };
        let c: &dyn OutputChannel = channel.as_ref();
        let n = c.rows();
        if truth.nrows() != n || truth.ncols() != c.dim() {
            return vec![outcome(
                name,
                "truth",
                Err(format!(
                    "the true rows are {} x {}, the channel has {n} rows and d = {}",
                    truth.nrows(),
                    truth.ncols(),
                    c.dim()
                )),
            )];
        }
        let plus = output_message(truth.as_ref(), &self.plus, self.seed);
        out.push(outcome(
            name,
            "jacobian",
            output_jacobian(c, &plus, &self.jacobian),
        ));
        out.push(outcome(
            name,
            "batch",
            output_batch(build.as_ref(), &plus, EXACT_TOL),
        ));
        let perm = permutation(n, mix64(self.seed));
        out.push(outcome(
            name,
            "permutation",
            output_permutation(build.as_ref(), &plus, &perm, EXACT_TOL),
        ));
        out.push(outcome(name, "bad inputs", output_bad_inputs(c, &plus)));
        out.push(outcome(name, "linear forms", output_linear_forms(c, &plus)));
        out.push(outcome(
            name,
            "law",
            output_law(c, truth.as_ref(), &self.plus.gamma, self.seed),
        ));
        match self.se_kind {
            SeKind::Exact => {
                out.push(outcome(
                    name,
                    "se vs monte carlo",
                    output_se_vs_monte_carlo(c, c, &self.plus, &self.se),
                ));
                out.push(outcome(
                    name,
                    "se reproducible",
                    output_se_reproducible(c, &self.plus, &self.se, REPRODUCIBILITY_ROWS, false),
                ));
            }
            SeKind::MonteCarlo => {
                out.push(outcome(
                    name,
                    "se reproducible",
                    output_se_reproducible(c, &self.plus, &self.se, REPRODUCIBILITY_ROWS, true),
                ));
                out.push(outcome(
                    name,
                    "se vs simulation",
                    output_se_vs_simulation(c, c, &self.plus, &self.se),
                ));
            }
        }
        out
    }
}
