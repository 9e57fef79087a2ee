//! The laws of messages: what the state evolution passes along the chain in place of the
//! algorithm's messages (Theorem 1), and what each factor's SE step consumes and produces.
//!
//! * forward, about `Z_l`: the `2d x 2d` second moment `K⁺ = E[[z, e⁺]^T [z, e⁺]]` of the true
//!   row `z` and the message error `e⁺ = r⁺ − z`, and the precision `Γ̄⁺` ([`SeForward`]);
//! * backward, about `Z_l`: `r⁻ = z Ψ⁻ + c`, `c ~ N(0, T⁻)` independent, and `Γ̄⁻`
//!   ([`SeBackward`]).
//!
//! See `docs/se-recursion.md` for the recursion these laws follow.

use crate::error::Error;
use crate::message::MessagePolicy;
use crate::rng::Rng;
use crate::rows::{cross_moment, mul_small};
use crate::spd::{psd_inverse, sym, DMat, Spd};
use faer::{Mat, MatRef};
use serde::{Deserialize, Serialize};

/// How backward messages are modelled (spec §6.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PsiMode {
    /// `r⁻ = z Ψ⁻ + c` with a general `Ψ⁻` fitted by regression (needed for MAP or mismatched
    /// denoisers, whose backward messages stay correlated with the truth).
    #[default]
    General,
    /// The paper's stated structure `r⁻ = z + c`, `c ~ N(0, τ⁻)`, `τ⁻ = E[e⁻^T e⁻]`.
    Identity,
}

/// The law of a forward message about `Z_l`.
#[derive(Clone, Debug)]
pub struct SeForward {
    /// `K⁺ = E[[z, e⁺]^T [z, e⁺]]` (`2d x 2d`; second moments, not covariances).
    pub k: DMat,
    /// The limit precision `Γ̄⁺`.
    pub gamma: Spd,
}

/// The law of a backward message about `Z_l`: `r⁻ = z Ψ⁻ + c`, `c ~ N(0, T⁻)`.
#[derive(Clone, Debug)]
pub struct SeBackward {
    /// `Ψ⁻` (`d x d`).
    pub psi: DMat,
    /// `T⁻` (`d x d`, positive semi-definite).
    pub t: DMat,
    /// The limit precision `Γ̄⁻`.
    pub gamma: Spd,
}

/// What an SE step predicts about the estimate its denoiser produces.
#[derive(Clone, Debug)]
pub struct SeEstimate {
    /// `E[(ẑ − z)^T (ẑ − z)]` (`d x d`): the predicted empirical error covariance.
    pub error_cov: DMat,
    /// `E[[z, ẑ]^T [z, ẑ]]` (`2d x 2d`): any quadratic row-wise metric follows from it.
    pub joint: DMat,
    /// `E[Σ]`: the algorithm's predicted average posterior covariance (its `Λ^{-1}`).
    pub predicted_cov: DMat,
    /// Monte-Carlo rows `(z, ẑ)` when the step was sampled (for non-quadratic metrics).
    pub samples: Option<(Mat<f64>, Mat<f64>)>,
}

/// One SE step's output.
#[derive(Clone, Debug)]
pub struct SeStep<T> {
    /// The outgoing law.
    pub out: T,
    /// The prediction about the step's estimate.
    pub estimate: SeEstimate,
}

/// Context of one SE step.
#[derive(Clone, Debug)]
pub struct SeContext<'a> {
    /// The message rule (the algorithm's).
    pub policy: &'a MessagePolicy,
    /// Monte-Carlo rows.
    pub n_mc: usize,
    /// Backward-message model.
    pub psi_mode: PsiMode,
    /// Seed of this step's Monte Carlo (derived from the run seed, iteration, layer, direction).
    pub seed: u64,
    /// Iteration `k`.
    pub iteration: usize,
    /// Where in the network (for error messages).
    pub location: String,
    /// Whether the caller needs Monte-Carlo rows of `(z, ẑ)` (a non-quadratic metric): steps
    /// that have an exact quadrature for non-Gaussian rows then use Monte Carlo instead.
    pub want_samples: bool,
}

impl SeContext<'_> {
    /// The step's RNG.
    pub fn rng(&self) -> Rng {
        crate::rng_from_seed(self.seed)
    }
    /// A divergence error at this step.
    pub fn diverged(&self, detail: impl Into<String>) -> Error {
        Error::Diverged {
            location: format!("state evolution, {}", self.location),
            iteration: self.iteration,
            detail: detail.into(),
        }
    }
}

/// Checks that the laws an SE step receives are `d`-dimensional (`K⁺` is `2d x 2d`; `Ψ⁻`, `T⁻`,
/// every `Γ̄` and `prev` are `d x d`), so that a step called by hand with a law of another size
/// gets an error instead of a panic.
pub fn check_laws(
    d: usize,
    minus: Option<&SeBackward>,
    plus: Option<&SeForward>,
    prev: Option<&Spd>,
) -> crate::error::Result<()> {
    let sq = |m: &DMat, k: usize| m.nrows() == k && m.ncols() == k;
    let bad = |what: &str, got: String| {
        Err(Error::shape(
            format!("{what} of an SE step"),
            format!("{d}-dimensional"),
            got,
        ))
    };
    if let Some(m) = minus {
        if !sq(&m.psi, d) || !sq(&m.t, d) || m.gamma.dim() != d {
            return bad(
                "backward law",
                format!(
                    "Ψ {} x {}, T {} x {}, Γ {} x {}",
                    m.psi.nrows(),
                    m.psi.ncols(),
                    m.t.nrows(),
                    m.t.ncols(),
                    m.gamma.dim(),
                    m.gamma.dim()
                ),
            );
        }
    }
    if let Some(p) = plus {
        if !sq(&p.k, 2 * d) || p.gamma.dim() != d {
            return bad(
                "forward law",
                format!(
                    "K {} x {}, Γ {} x {}",
                    p.k.nrows(),
                    p.k.ncols(),
                    p.gamma.dim(),
                    p.gamma.dim()
                ),
            );
        }
    }
    if let Some(g) = prev {
        if g.dim() != d {
            return bad("previous precision", format!("{} x {}", g.dim(), g.dim()));
        }
    }
    Ok(())
}

/// The regression of a backward message error on the true row (spec §6.2 (N), (O)):
/// `M = E[a^T a]^{-1} E[a^T e⁻]`, `Ψ⁻ = I + M`, `T⁻ = E[e⁻^T e⁻] − M^T E[a^T a] M`; with
/// [`PsiMode::Identity`], `Ψ⁻ = I`, `T⁻ = E[e⁻^T e⁻]`.
pub fn backward_law(k_aa: &DMat, ae: &DMat, ee: &DMat, mode: PsiMode, gamma: Spd) -> SeBackward {
    let d = k_aa.nrows();
    match mode {
        PsiMode::Identity => SeBackward {
            psi: DMat::identity(d, d),
            t: clamp_psd(&sym(ee)),
            gamma,
        },
        PsiMode::General => {
            let inv = psd_inverse(k_aa).unwrap_or_else(|| DMat::zeros(d, d));
            let m = &inv * ae;
            let t = sym(&(ee - m.transpose() * k_aa * &m));
            SeBackward {
                psi: DMat::identity(d, d) + m,
                t: clamp_psd(&t),
                gamma,
            }
        }
    }
}

/// Floors the eigenvalues of a symmetric matrix at 0.
pub fn clamp_psd(m: &DMat) -> DMat {
    let e = nalgebra::SymmetricEigen::new(sym(m));
    if e.eigenvalues.iter().all(|&v| v >= 0.0) {
        return sym(m);
    }
    let q = &e.eigenvectors;
    sym(&(q * DMat::from_diagonal(&e.eigenvalues.map(|v| v.max(0.0))) * q.transpose()))
}

/// The joint second moment `E[[x, y]^T [x, y]]` of two `n x d` sample matrices.
pub fn joint_moment(x: MatRef<'_, f64>, y: MatRef<'_, f64>) -> DMat {
    let d = x.ncols();
    let mut j = DMat::zeros(2 * d, 2 * d);
    j.view_mut((0, 0), (d, d)).copy_from(&cross_moment(x, x));
    j.view_mut((0, d), (d, d)).copy_from(&cross_moment(x, y));
    j.view_mut((d, d), (d, d)).copy_from(&cross_moment(y, y));
    let upper = j.view((0, d), (d, d)).transpose();
    j.view_mut((d, 0), (d, d)).copy_from(&upper);
    sym(&j)
}

/// `x Ψ` for sample rows.
pub fn times(x: MatRef<'_, f64>, m: &DMat) -> Mat<f64> {
    mul_small(x, m)
}
