//! Messages `(R, Γ)`, denoiser beliefs `(Ẑ, Σ̄)`, and the message rule of spec §2.2–2.4.
//!
//! All the arithmetic on precisions that Algorithm 1 does between denoisers — the extrinsic
//! update (eq. 2.1), symmetrisation, the singular-`Σ̄` ridge, damping and eigenvalue clipping —
//! lives in [`MessagePolicy::extrinsic`], and nowhere else.

use crate::error::{Error, Result};
use crate::rows::{check_finite, check_shape, first_non_finite, mul_small_sum};
use crate::spd::{psd_inverse, sym, DMat, Spd};
use faer::Mat;
use serde::{Deserialize, Serialize};

/// A Gaussian message about an `n x d` variable: every row `z_i` is believed to be
/// `N(r_i, Γ^{-1})`, i.e. the factor `exp(-½ ||Z - R||²_Γ)`.
#[derive(Clone, Debug)]
pub struct Message {
    /// The mean `R` (`n x d`).
    pub mean: Mat<f64>,
    /// The precision `Γ` (`d x d`), shared by all rows.
    pub precision: Spd,
}

impl Message {
    /// An uninformative-ish start: `R = 0`, `Γ = γ I` (Algorithm 1, line 1).
    pub fn zero(n: usize, d: usize, gamma: f64) -> Result<Self> {
        Ok(Message {
            mean: Mat::zeros(n, d),
            precision: Spd::scaled_identity(d, gamma)?,
        })
    }
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.mean.nrows()
    }
    /// Number of columns `d`.
    pub fn dim(&self) -> usize {
        self.mean.ncols()
    }
    /// Checks that the mean is `rows x d` and the precision `d x d` (the fields are public, so a
    /// hand-built message may be inconsistent); `what` names the message in the error.
    pub fn check(&self, what: &str, rows: usize, d: usize) -> Result<()> {
        check_shape(what, self.mean.as_ref(), rows, d)?;
        let p = self.precision.dim();
        if p != d {
            return Err(Error::shape(
                format!("precision of {what}"),
                format!("{d} x {d}"),
                format!("{p} x {p}"),
            ));
        }
        Ok(())
    }
}

/// What a denoiser returns about one variable: the estimate `Ẑ` and the row-averaged posterior
/// covariance `Σ̄` (spec §0). For MMSE denoisers `Σ̄` is the average posterior covariance, for
/// MAP denoisers the average inverse Hessian; in both cases `Λ = Σ̄^{-1}` (eq. 0.1).
#[derive(Clone, Debug)]
pub struct Belief {
    /// The estimate `Ẑ` (`n x d`).
    pub mean: Mat<f64>,
    /// The average posterior row covariance `Σ̄` (`d x d`, symmetric positive semi-definite).
    pub cov: DMat,
    /// Warnings about this estimate (e.g. rows where a quadrature was unreliable). The solver
    /// moves them into the iteration's history record; the library never prints them.
    pub warnings: Vec<String>,
    /// What an iterative solve behind this belief achieved (matrix-free linear layers: the
    /// conjugate gradients' form, iterations and residual), recorded in the history.
    pub solve: Option<crate::operator::CgReport>,
}

impl Belief {
    /// A belief `(Ẑ, Σ̄)` without warnings.
    pub fn new(mean: Mat<f64>, cov: DMat) -> Self {
        Belief {
            mean,
            cov,
            warnings: Vec::new(),
            solve: None,
        }
    }
    /// The same belief with a warning attached.
    pub fn with_warning(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }
}

/// How extrinsic messages are formed from beliefs (spec §2.2–2.4): clipping bounds and damping.
///
/// Conventions:
/// * **Clipping.** The eigenvalues of every outgoing precision are floored at
///   `rel_floor · s`, where `s` is the largest eigenvalue of the incoming precision or of the
///   unclipped outgoing one (a floor relative to the variable's own scale, so that rescaling a
///   variable rescales its messages exactly), and clipped into the absolute range
///   `[lam_min, lam_max]` if the user sets one (default none; the reference code uses
///   `1e-3, 1e3`). This repairs an indefinite `Λ − Γ`. Without clipping the mean rule is
///   eq. (2.1) exactly. With clipping, the mean is `R_out = (Ẑ Λ_m − R Γ) D^{-1}`: `D` is the
///   unclipped precision in the directions `lam_max` lowered (there the mean stays the exact
///   extrinsic mean, which the reference's `Γ_out` in the divisor overshoots by `Λ/Γ_out` — a
///   blow-up for a nearly certain belief) and the clipped one where a floor raised it. Raised by
///   the user's `lam_min`: `Λ_m = Λ`, the reference code's rule. Raised by the relative floor
///   (the factor's information is below rounding there): `Λ_m = Γ + (D − ρ Γ_prev)/(1 − ρ)`, so
///   that the message reproduces the belief's mean instead of pulling it towards an extrinsic
///   mean it cannot resolve.
/// * **Singular `Σ̄`.** Its inverse is regularised by a ridge `1e-12 tr(Σ̄)/d` on the singular
///   directions, or, when `Σ̄ = 0` (a certain belief, e.g. a noiseless layer with `W = 0`),
///   taken as `1e12` times the incoming precision, whose extrinsic mean is then `Ẑ`.
/// * **Damping** uses the reference convention: `0` means no damping, values in `[0, 1)`.
///   `damp_precision` mixes the previous (clipped) precision into the new one before clipping:
///   `Γ_out ← (1−ρ)(Λ−Γ) + ρ Γ_prev`; `damp_mean` mixes the previous mean after the update:
///   `R_out ← (1−ρ) R_out + ρ R_prev`. (vampyre uses the opposite convention.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagePolicy {
    /// Smallest eigenvalue allowed in an outgoing precision, absolute (`≥ 0`; default 0: only
    /// the relative floor applies).
    pub lam_min: f64,
    /// Largest eigenvalue allowed in an outgoing precision, absolute (default `inf`).
    pub lam_max: f64,
    /// The relative floor of outgoing precisions (default `1e-12`, in `(0, 1)`): eigenvalues
    /// below `rel_floor` times the scale of the variable's messages are raised to it.
    pub rel_floor: f64,
    /// Precision damping in `[0, 1)`; `0` = none.
    pub damp_precision: f64,
    /// Mean damping in `[0, 1)`; `0` = none.
    pub damp_mean: f64,
    /// What to do when an iteration diverges (a non-finite estimate or precision, an estimate
    /// or a precision that explodes or collapses): roll back and damp harder (default), or stop
    /// with the error.
    pub on_divergence: OnDivergence,
    /// With [`OnDivergence::Damp`]: how many roll-backs before giving up (default 5).
    pub max_retries: usize,
}

/// What the solver and the state evolution do when an iteration diverges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDivergence {
    /// Roll back to the last sound iterate and continue with stronger damping (in the spirit of
    /// tramp's adaptive damping); the history records each roll-back. After `max_retries`
    /// roll-backs the divergence is an error.
    #[default]
    Damp,
    /// Stop with an error naming the factor, the iteration and what blew up.
    Stop,
}

impl Default for MessagePolicy {
    fn default() -> Self {
        MessagePolicy {
            lam_min: 0.0,
            lam_max: f64::INFINITY,
            rel_floor: 1e-12,
            damp_precision: 0.0,
            damp_mean: 0.0,
            on_divergence: OnDivergence::Damp,
            max_retries: 5,
        }
    }
}

/// Everything the message rule computed, for the history.
#[derive(Clone, Debug)]
pub struct Extrinsic {
    /// The outgoing message `(R_out, Γ_out)`.
    pub message: Message,
    /// `Λ = Σ̄^{-1}` (symmetrised).
    pub lambda: DMat,
}

impl MessagePolicy {
    /// The reference code's policy: clipping into `[1e-3, 1e3]`, no damping.
    pub fn reference() -> Self {
        MessagePolicy {
            lam_min: 1e-3,
            lam_max: 1e3,
            ..Default::default()
        }
    }

    /// Checks the option values.
    pub fn validate(&self) -> Result<()> {
        if !(self.lam_min >= 0.0 && self.lam_min.is_finite()) {
            return Err(Error::invalid(
                "lam_min",
                format!("must be non-negative and finite, got {}", self.lam_min),
            ));
        }
        if !(self.rel_floor > 0.0 && self.rel_floor < 1.0) {
            return Err(Error::invalid(
                "rel_floor",
                format!("must be in (0, 1), got {}", self.rel_floor),
            ));
        }
        if self.lam_max.is_nan() || self.lam_max < self.lam_min {
            return Err(Error::invalid(
                "lam_max",
                format!(
                    "must be >= lam_min = {}, got {}",
                    self.lam_min, self.lam_max
                ),
            ));
        }
        if self.max_retries > 100 {
            return Err(Error::invalid(
                "max_retries",
                format!("must be at most 100, got {}", self.max_retries),
            ));
        }
        for (name, v) in [
            ("damp_precision", self.damp_precision),
            ("damp_mean", self.damp_mean),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(Error::invalid(name, format!("must be in [0, 1), got {v}")));
            }
        }
        Ok(())
    }

    /// The precision half of the message rule (spec §2.2, §2.4): `Λ = sym(Σ̄^{-1})` (with the
    /// singular-`Σ̄` ridge), `Γ_out = clip((1−ρ)(Λ − Γ) + ρ Γ_prev)`. Returns `(Λ, Γ_out, D)`
    /// for the mean rule `R_out = (Ẑ Λ − R Γ) D^{-1}`: `D = Γ_out` unless `lam_max` lowered the
    /// precision (see the type's documentation). Shared by the algorithm and the state
    /// evolution.
    pub fn precision_update(
        &self,
        cov: &DMat,
        gamma_in: &Spd,
        previous: Option<&Spd>,
        location: &str,
        iteration: usize,
    ) -> Result<(DMat, Spd, Spd)> {
        let diverged = |detail: String| Error::Diverged {
            location: location.to_string(),
            iteration,
            detail,
        };
        if cov.iter().any(|x| !x.is_finite()) {
            return Err(diverged("posterior covariance is not finite".into()));
        }
        let lambda = invert_belief_covariance(cov, gamma_in)
            .ok_or_else(|| diverged("posterior covariance is not invertible".into()))?;
        let mut raw = sym(&(&lambda - gamma_in.matrix()));
        let damped = previous.filter(|_| self.damp_precision > 0.0);
        if let Some(prev) = damped {
            raw = raw * (1.0 - self.damp_precision) + prev.matrix() * self.damp_precision;
        }
        if raw.iter().any(|x| !x.is_finite()) {
            return Err(diverged("outgoing precision is not finite".into()));
        }
        // Nothing to clip (proved by Cholesky factorisations): the unclipped precision, as
        // `Spd::clipped_flag` returns it then, without the eigendecompositions.
        if let Some(out) = provably_unclipped(&raw, gamma_in, self) {
            return Ok((lambda, out.clone(), out));
        }
        // One eigendecomposition of `sym(raw)` serves its largest eigenvalue, the clipping and,
        // when `raw` is exactly symmetric (always, unless an entry overflows in `sym`), the
        // divisor below: the same decomposition of the same input each time.
        let symmetric = sym(&raw);
        let e_raw = nalgebra::SymmetricEigen::new(symmetric.clone());
        let scale = max_eigenvalue(gamma_in.matrix()).max(largest_eigenvalue(&e_raw));
        let floor = self.lam_min.max(self.rel_floor * scale);
        let (out, changed) =
            Spd::clipped_flag_with("outgoing precision", &raw, &e_raw, floor, self.lam_max)
                .map_err(|e| diverged(format!("cannot form the outgoing precision: {e}")))?;
        if !changed {
            return Ok((lambda, out.clone(), out));
        }
        // Clipped: the divisor keeps the unclipped precision where a bound lowered it (there the
        // mean stays the exact extrinsic mean, which the reference's rule overshoots by `Λ/Γ_out`)
        // and takes the clipped one where a bound raised it (the reference's rule).
        let relative_floor = self.rel_floor * scale > self.lam_min;
        let same_bits = symmetric
            .iter()
            .zip(raw.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits());
        let e = if same_bits {
            e_raw
        } else {
            nalgebra::SymmetricEigen::new(raw)
        };
        let lowered = e.eigenvalues.iter().any(|&r| r > self.lam_max);
        let raised = e.eigenvalues.iter().any(|&r| r < floor);
        if !(lowered || (raised && relative_floor)) {
            // Only the user's absolute floor bound: the reference code's rule.
            return Ok((lambda, out.clone(), out));
        }
        let d = e.eigenvalues.map(|r| r.max(floor));
        let q = &e.eigenvectors;
        let divisor = Spd::from_symmetric(
            "divisor of the outgoing mean",
            q * DMat::from_diagonal(&d) * q.transpose(),
        )
        .map_err(|e| diverged(format!("cannot form the outgoing mean: {e}")))?;
        if !(raised && relative_floor) {
            return Ok((lambda, out, divisor));
        }
        // Raised by the relative floor: the factor's information there is below rounding, so
        // the message must not pull the belief: its mean reproduces the belief's mean, with the
        // belief precision the divisor implies, `Λ_m = Γ + (D − ρ Γ_prev)/(1 − ρ)`.
        let rho = damped.map_or(0.0, |_| self.damp_precision);
        let mut implied = divisor.matrix().clone();
        if let Some(prev) = damped {
            implied -= prev.matrix() * rho;
        }
        let lambda_m = sym(&(gamma_in.matrix() + implied / (1.0 - rho)));
        Ok((lambda_m, out, divisor))
    }

    /// The message rule (eq. 2.1, spec §2.2) with the safeguards of spec §2.4.
    ///
    /// Given a denoiser's belief `(Ẑ, Σ̄)` about a variable and the incoming message `(R, Γ)`
    /// about the same variable that the denoiser consumed:
    /// `Λ = sym(Σ̄^{-1})`, `Γ_out = clip((1−ρ)(Λ − Γ) + ρ Γ_prev)`,
    /// `R_out = (Ẑ Λ − R Γ) Γ_out^{-1}` (then mean damping).
    ///
    /// `location` and `iteration` name the place in error messages.
    pub fn extrinsic(
        &self,
        belief: &Belief,
        incoming: &Message,
        previous: Option<&Message>,
        location: &str,
        iteration: usize,
    ) -> Result<Extrinsic> {
        self.extrinsic_map(belief, incoming, previous, location, iteration)
            .map(|(e, _)| e)
    }

    /// [`MessagePolicy::extrinsic`], also returning the linear map of the means it applied
    /// ([`MessagePolicy::extrinsic_rule`]).
    pub fn extrinsic_map(
        &self,
        belief: &Belief,
        incoming: &Message,
        previous: Option<&Message>,
        location: &str,
        iteration: usize,
    ) -> Result<(Extrinsic, MeanMap)> {
        let diverged = |detail: String| Error::Diverged {
            location: location.to_string(),
            iteration,
            detail,
        };
        // Shapes (a hand-built message or belief may be inconsistent): formatted only on error.
        let (n, d) = (incoming.rows(), incoming.dim());
        let square = |m: &DMat| m.nrows() == d && m.ncols() == d;
        if incoming.precision.dim() != d
            || belief.mean.nrows() != n
            || belief.mean.ncols() != d
            || !square(&belief.cov)
            || previous.is_some_and(|p| p.rows() != n || p.dim() != d || p.precision.dim() != d)
        {
            incoming.check(&format!("incoming message ({location})"), n, d)?;
            check_shape(
                &format!("estimate ({location})"),
                belief.mean.as_ref(),
                n,
                d,
            )?;
            if !square(&belief.cov) {
                return Err(Error::shape(
                    format!("posterior covariance ({location})"),
                    format!("{d} x {d}"),
                    format!("{} x {}", belief.cov.nrows(), belief.cov.ncols()),
                ));
            }
            if let Some(prev) = previous {
                prev.check(&format!("previous message ({location})"), n, d)?;
            }
        }
        if let Some((i, j, x)) = first_non_finite(belief.mean.as_ref()) {
            return Err(diverged(format!("estimate entry ({i}, {j}) is {x}")));
        }
        let (out_prec, map) = self.extrinsic_rule(
            &belief.cov,
            &incoming.precision,
            previous.map(|p| &p.precision),
            location,
            iteration,
        )?;
        let mut mean = mul_small_sum(
            belief.mean.as_ref(),
            &map.estimate,
            incoming.mean.as_ref(),
            &map.incoming,
        );
        if let Some(prev) = previous.filter(|_| map.damping > 0.0) {
            mean = &mean * faer::Scale(1.0 - map.damping) + &prev.mean * faer::Scale(map.damping);
        }
        check_finite("outgoing message", mean.as_ref()).map_err(|e| diverged(e.to_string()))?;
        let lambda = map.lambda.clone();
        Ok((
            Extrinsic {
                message: Message {
                    mean,
                    precision: out_prec,
                },
                lambda,
            },
            map,
        ))
    }

    /// The message rule (eq. 2.1 with the safeguards of spec §2.4) as a map of the means: the
    /// outgoing precision `Γ_out` and the `d x d` factors with which the outgoing mean is
    /// **linear** in the estimate, the incoming mean and the previous outgoing mean,
    /// `R_out = (1−ρ)(Ẑ A + R B) + ρ R_prev` ([`MeanMap`]). Everything here depends on `Σ̄`
    /// and the precisions only, never on a row, so it is known before the rows are: the solver's
    /// fused pass applies it row block by row block, and maps products `Vᵀ R_out` through it
    /// (`docs/speed.md`). [`MessagePolicy::extrinsic`] is this map applied to whole matrices.
    /// `previous` is the previous outgoing precision (precision damping); the mean damping `ρ`
    /// applies when there is a previous message.
    pub fn extrinsic_rule(
        &self,
        cov: &DMat,
        gamma_in: &Spd,
        previous: Option<&Spd>,
        location: &str,
        iteration: usize,
    ) -> Result<(Spd, MeanMap)> {
        let (lambda, out_prec, divisor) =
            self.precision_update(cov, gamma_in, previous, location, iteration)?;
        let (a, b) = mean_factors(&lambda, gamma_in, &divisor)?;
        let damping = if previous.is_some() && self.damp_mean > 0.0 {
            self.damp_mean
        } else {
            0.0
        };
        Ok((
            out_prec,
            MeanMap {
                estimate: a,
                incoming: b,
                damping,
                lambda,
            },
        ))
    }
}

/// The mean half of the message rule as a linear map (see [`MessagePolicy::extrinsic_rule`]):
/// `R_out = (1−ρ)(Ẑ A + R B) + ρ R_prev` with `A = Λ D^{-1}`, `B = −Γ D^{-1}` (right
/// multiplication, rows are samples; `D` the divisor of spec §2.4) and `ρ` the mean damping.
#[derive(Clone, Debug)]
pub struct MeanMap {
    /// `A = Λ D^{-1}` (`d x d`), applied to the estimate `Ẑ`.
    pub estimate: DMat,
    /// `B = −Γ D^{-1}` (`d x d`), applied to the incoming mean `R`.
    pub incoming: DMat,
    /// `ρ`: the weight of the previous outgoing mean (`0` without damping or without a
    /// previous message).
    pub damping: f64,
    /// `Λ` as the rule used it (see [`Extrinsic::lambda`]).
    pub lambda: DMat,
}

/// `(Λ D^{-1}, −Γ D^{-1})`, the factors of eq. (2.1)'s mean, by Cholesky solves with `D`.
fn mean_factors(lambda: &DMat, gamma_in: &Spd, out: &Spd) -> Result<(DMat, DMat)> {
    let d = out.dim();
    if lambda.nrows() != d || lambda.ncols() != d {
        return Err(Error::shape(
            "Λ of the extrinsic mean",
            format!("{d} x {d}"),
            format!("{} x {}", lambda.nrows(), lambda.ncols()),
        ));
    }
    let a = out.solve_right(lambda)?;
    let b = -out.solve_right(gamma_in.matrix())?;
    Ok((a, b))
}

/// `R_out = (Ẑ Λ − R Γ) Γ_out^{-1}` (eq. 2.1), computed as `Ẑ (Λ Γ_out^{-1}) − R (Γ Γ_out^{-1})`.
/// An error if the shapes disagree.
pub fn extrinsic_mean(
    estimate: faer::MatRef<'_, f64>,
    lambda: &DMat,
    incoming: &Message,
    out: &Spd,
) -> Result<Mat<f64>> {
    let d = out.dim();
    incoming.check(
        "incoming message of the extrinsic mean",
        estimate.nrows(),
        d,
    )?;
    check_shape(
        "estimate of the extrinsic mean",
        estimate,
        incoming.rows(),
        d,
    )?;
    let (a, b) = mean_factors(lambda, &incoming.precision, out)?;
    Ok(mul_small_sum(estimate, &a, incoming.mean.as_ref(), &b))
}

/// The outgoing precision `raw` (symmetric, finite) as [`Spd::clipped_flag`] returns it when no
/// eigenvalue needs clipping, or `None` unless that is proved without an eigendecomposition: a
/// Gershgorin bound `b ≥ |λ|` of `Γ_in` and `raw` bounds the floor by `max(lam_min,
/// rel_floor · b)`, and Cholesky factorisations of `raw − (floor + δ) I` (and of
/// `(lam_max − δ) I − raw` under an upper bound) succeed, with the margin `δ = 64 d ε b` above the
/// rounding errors of the factorisation and of the eigensolver. The result is then the same
/// bits as the eigendecomposition path's (which returns `raw` unchanged when nothing is clipped);
/// near a bound (within `δ`) the eigendecomposition decides.
fn provably_unclipped(raw: &DMat, gamma_in: &Spd, policy: &MessagePolicy) -> Option<Spd> {
    let d = raw.nrows();
    if d == 0 || gamma_in.dim() != d {
        return None;
    }
    let gershgorin = |m: &DMat| {
        (0..d)
            .map(|i| (0..d).map(|j| m[(i, j)].abs()).sum::<f64>())
            .fold(0.0, f64::max)
    };
    let bound = gershgorin(gamma_in.matrix()).max(gershgorin(raw));
    if !(bound.is_finite() && bound > 0.0) {
        return None;
    }
    let margin = 64.0 * d as f64 * f64::EPSILON * bound;
    let floor = policy.lam_min.max(policy.rel_floor * bound) + margin;
    let mut lower = raw.clone();
    for i in 0..d {
        lower[(i, i)] -= floor;
    }
    lower.cholesky()?;
    if policy.lam_max.is_finite() {
        let mut upper = -raw.clone();
        for i in 0..d {
            upper[(i, i)] += policy.lam_max - margin;
        }
        upper.cholesky()?;
    }
    Spd::from_symmetric("outgoing precision", raw.clone()).ok()
}

/// The largest eigenvalue of a symmetric matrix (0 for an empty one).
fn max_eigenvalue(m: &DMat) -> f64 {
    if m.nrows() == 0 {
        return 0.0;
    }
    largest_eigenvalue(&nalgebra::SymmetricEigen::new(sym(m)))
}

/// The largest eigenvalue of a decomposition (0 for a `0 x 0` matrix).
fn largest_eigenvalue(e: &nalgebra::SymmetricEigen<f64, nalgebra::Dyn>) -> f64 {
    if e.eigenvalues.is_empty() {
        return 0.0;
    }
    e.eigenvalues
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max)
}

/// `Λ = Σ̄^{-1}` for a belief covariance that may be singular: [`psd_inverse`]'s relative ridge,
/// and for `Σ̄ = 0` (a certain belief) the cap `1e12 · λ_max(Γ_in) · I`, so that the outgoing
/// precision stays finite and on the variable's own scale.
fn invert_belief_covariance(cov: &DMat, gamma_in: &Spd) -> Option<DMat> {
    if cov.iter().any(|x| !x.is_finite()) {
        return None;
    }
    if cov.iter().all(|&x| x == 0.0) {
        let d = cov.nrows();
        let cap = 1e12 * max_eigenvalue(gamma_in.matrix()).max(f64::MIN_POSITIVE);
        return Some(DMat::identity(d, d) * cap);
    }
    psd_inverse(cov)
}
