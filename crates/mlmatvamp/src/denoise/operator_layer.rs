//! Matrix-free linear layers `Z_l = W Z_{l−1} + B + Ξ` (paper eq. 15 without an SVD,
//! `docs/matrix-free.md`): `W` is a [`LinearOperator`] used only through `W X` and `Wᵀ Y`, and
//! the two average covariances come from a [`SpectralLaw`] of `WᵀW`.
//!
//! In the basis `T` shared by all rows (`Tᵀ Γ⁺ T = I`, `Tᵀ P_eff T = diag(m)`,
//! [`super::linear`]), the belief's mean `V̂ = X Tᵀ` solves `d` decoupled systems
//! `(I + m_j WᵀW) x_j = [C T]_j` with `C = R⁺Γ⁺ + Wᵀ(R⁻ − B) P_eff`, solved by block conjugate
//! gradients ([`BlockCg`], primal or dual form, warm-started), or in closed form when the rows of
//! `W` are orthogonal (`W Wᵀ = c² I`: `(I + mWᵀW)^{-1} = I − m/(1 + mc²) WᵀW`). Then
//! `Û = ((W V̂ + B) N + R⁻Γ⁻)(N + Γ⁻)^{-1}` (noiseless: `W V̂ + B`),
//! `Σ̄_v = (1/n_{l−1}) T diag(a(m_j)) Tᵀ`, `Σ̄_u = A + (1/n_l) A N T diag(b(m_j)) Tᵀ N A` with
//! `A = (N + Γ⁻)^{-1}` (noiseless: `(1/n_l) T diag(b(m_j)) Tᵀ`), `a`, `b` the spectral sums.

use super::linear::{effective_precision, shared_basis};
use super::spectral::LinearSpec;
use super::{gaussian_rows, Rng};
use crate::error::{Error, Result};
use crate::factor::law::{SeBackward, SeContext, SeForward, SeStep};
use crate::factor::{
    Factor, LayerDenoiser, LayerKind, LayerSampler, LayerSe, LayerShape, WarmStart,
};
use crate::message::{Belief, Message};
use crate::operator::{self, BlockCg, CgForm, CgOptions, CgReport, LinearOperator, SpectralLaw};
use crate::rows::{check_finite, check_shape, cross_moment, mul_small};
use crate::spd::{sym, DMat, Spd};
use faer::{Mat, MatRef};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How the spectral law of a matrix-free layer is estimated when the operator does not know it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LawOptions {
    /// Rademacher probes of the stochastic Lanczos quadrature (default 10).
    pub probes: usize,
    /// Lanczos steps per probe (default 40).
    pub steps: usize,
    /// Seed of the probes (default 0).
    pub seed: u64,
}

impl Default for LawOptions {
    fn default() -> Self {
        LawOptions {
            probes: 10,
            steps: 40,
            seed: 0,
        }
    }
}

/// A linear layer that never factorises `W` (see the module documentation).
#[derive(Clone)]
pub struct OperatorLayer {
    op: Arc<dyn LinearOperator>,
    law: SpectralLaw,
    n_out: usize,
    n_in: usize,
    d: usize,
    bias: Option<Mat<f64>>,
    noise: Option<Spd>,
    cg: CgOptions,
    form: CgForm,
    law_seconds: f64,
}

impl std::fmt::Debug for OperatorLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorLayer")
            .field("operator", &self.op.describe())
            .field("law", &self.law.describe())
            .field("form", &self.form)
            .finish()
    }
}

/// The solution of the shared linear system of one call.
struct Solved {
    /// `V̂` (`n_{l−1} x d`).
    v_hat: Mat<f64>,
    t: DMat,
    m: Vec<f64>,
    a: Option<DMat>,
    report: CgReport,
}

impl OperatorLayer {
    /// A matrix-free layer over `op` with an optional bias (`n_l x d`) and noise precision
    /// (`None` = noiseless). The spectral law is the operator's own if it knows it, else
    /// estimated once here by stochastic Lanczos quadrature with `law_options`.
    pub fn new(
        op: Arc<dyn LinearOperator>,
        bias: Option<Mat<f64>>,
        noise: Option<Spd>,
        d: usize,
        cg: CgOptions,
        law_options: &LawOptions,
    ) -> Result<Self> {
        let start = std::time::Instant::now();
        let law = match op.spectral_law() {
            Some(law) => law,
            None => SpectralLaw::lanczos(
                op.as_ref(),
                law_options.probes,
                law_options.steps,
                law_options.seed,
            )?,
        };
        let mut layer = Self::with_law(op, law, bias, noise, d, cg)?;
        layer.law_seconds = start.elapsed().as_secs_f64();
        Ok(layer)
    }

    /// A matrix-free layer with a given spectral law of `WᵀW` (exact singular values, a closed
    /// form, or an estimate); the law's shape must be the operator's.
    pub fn with_law(
        op: Arc<dyn LinearOperator>,
        law: SpectralLaw,
        bias: Option<Mat<f64>>,
        noise: Option<Spd>,
        d: usize,
        cg: CgOptions,
    ) -> Result<Self> {
        let (n_out, n_in) = operator::check_operator(op.as_ref())?;
        cg.validate()?;
        if d == 0 {
            return Err(Error::invalid("d", "must be at least 1"));
        }
        if law.shape() != (n_out, n_in) {
            return Err(Error::shape(
                "spectral law of the linear layer",
                format!("{n_out} x {n_in} (the operator's shape)"),
                format!("{} x {}", law.shape().0, law.shape().1),
            ));
        }
        if let Some(b) = &bias {
            check_shape("bias B", b.as_ref(), n_out, d)?;
            check_finite("bias B", b.as_ref())?;
        }
        if let Some(nz) = &noise {
            if nz.dim() != d {
                return Err(Error::shape(
                    "noise precision N",
                    format!("{d} x {d}"),
                    format!("{0} x {0}", nz.dim()),
                ));
            }
        }
        let form = match (op.row_gram_scale(), cg.form) {
            (Some(_), CgForm::Auto | CgForm::Closed) => CgForm::Closed,
            (None, CgForm::Closed) => {
                return Err(Error::invalid(
                    "method",
                    format!(
                    "the closed form needs orthogonal rows (W Wᵀ = c² I); {} does not have them",
                    op.describe()
                ),
                ))
            }
            (_, CgForm::Auto) => CgForm::Primal,
            (_, f) => f,
        };
        Ok(OperatorLayer {
            op,
            law,
            n_out,
            n_in,
            d,
            bias,
            noise,
            cg,
            form,
            law_seconds: 0.0,
        })
    }

    /// The operator.
    pub fn operator(&self) -> &Arc<dyn LinearOperator> {
        &self.op
    }
    /// The spectral law of `WᵀW`.
    pub fn law(&self) -> &SpectralLaw {
        &self.law
    }
    /// The form of the linear solve (primal, dual or closed form).
    pub fn form(&self) -> CgForm {
        self.form
    }
    /// Seconds spent estimating the spectral law at construction.
    pub fn law_seconds(&self) -> f64 {
        self.law_seconds
    }
    /// `(n_l, n_{l−1})`.
    pub fn shape(&self) -> (usize, usize) {
        (self.n_out, self.n_in)
    }

    /// The layer's description for the state evolution: the law as weighted singular values.
    pub fn spec(&self) -> Result<LinearSpec> {
        LinearSpec::from_law(
            &self.law,
            self.d,
            self.noise.clone(),
            self.bias
                .as_ref()
                .map(|b| cross_moment(b.as_ref(), b.as_ref())),
        )
    }

    fn apply(&self, x: MatRef<'_, f64>) -> Result<Mat<f64>> {
        operator::apply(self.op.as_ref(), x)
    }
    fn apply_t(&self, y: MatRef<'_, f64>) -> Result<Mat<f64>> {
        operator::apply_transpose(self.op.as_ref(), y)
    }

    /// Solves the shared system (module documentation). `warm` holds `V̂` (primal) or `W V̂`
    /// (dual) of the previous call in the same direction: both are basis-free, so they are
    /// mapped into the current basis.
    fn solve(&self, minus: &Message, plus: &Message, warm: &mut WarmStart) -> Result<Solved> {
        minus.check("backward message R⁻ into linear layer", self.n_out, self.d)?;
        plus.check("forward message R⁺ into linear layer", self.n_in, self.d)?;
        check_finite("backward message R⁻ into linear layer", minus.mean.as_ref())?;
        check_finite("forward message R⁺ into linear layer", plus.mean.as_ref())?;
        let gm = minus.precision.matrix();
        let gp = &plus.precision;
        let (p_eff, a) = effective_precision(self.noise.as_ref(), gm)?;
        let (t, m) = shared_basis(gp, &p_eff);
        // C T = R⁺ Γ⁺ T + Wᵀ (R⁻ − B) P_eff T.
        let mut centred = minus.mean.clone();
        if let Some(b) = &self.bias {
            centred -= b;
        }
        let wt_centred = self.apply_t(centred.as_ref())?;
        let rhs = &mul_small(plus.mean.as_ref(), &(gp.matrix() * &t))
            + &mul_small(wt_centred.as_ref(), &(&p_eff * &t));
        // The inverse of Tᵀ maps a basis-free V̂ to X (V̂ = X Tᵀ).
        let t_inv_t = t
            .clone()
            .try_inverse()
            .ok_or_else(|| Error::Numerical {
                what: "shared basis of the linear layer".into(),
                detail: "T is singular".into(),
            })?
            .transpose();
        let (x, report) = match self.form {
            CgForm::Closed => {
                let c2 = self.op.row_gram_scale().unwrap_or(1.0);
                let arhs = operator::apply_gram(self.op.as_ref(), rhs.as_ref())?;
                let x = Mat::from_fn(self.n_in, self.d, |i, j| {
                    rhs[(i, j)] - m[j] / (1.0 + m[j] * c2) * arhs[(i, j)]
                });
                let report = CgReport {
                    form: CgForm::Closed,
                    iterations: 0,
                    residual: 0.0,
                    converged: true,
                };
                (x, report)
            }
            CgForm::Primal | CgForm::Auto => {
                let x0 = warm
                    .get()
                    .filter(|v| v.nrows() == self.n_in && v.ncols() == self.d)
                    .map(|v| mul_small(v.as_ref(), &t_inv_t));
                let cg = BlockCg {
                    shifts: &m,
                    options: &self.cg,
                };
                cg.solve(
                    |p, out| self.op.apply_gram(p, out),
                    rhs.as_ref(),
                    x0.as_ref().map(|x| x.as_ref()),
                    CgForm::Primal,
                )?
            }
            CgForm::Dual => {
                // (I + m W Wᵀ) y = m W rhs; x = rhs − Wᵀ y; and y = W x diag(m) at the solution,
                // so the previous W V̂ gives the start y0 = W V̂ T^{-T} diag(m).
                let w_rhs = self.apply(rhs.as_ref())?;
                let b = Mat::from_fn(self.n_out, self.d, |i, j| m[j] * w_rhs[(i, j)]);
                let y0 = warm
                    .get()
                    .filter(|v| v.nrows() == self.n_out && v.ncols() == self.d)
                    .map(|wv| {
                        let wx = mul_small(wv.as_ref(), &t_inv_t);
                        Mat::from_fn(self.n_out, self.d, |i, j| m[j] * wx[(i, j)])
                    });
                let cg = BlockCg {
                    shifts: &m,
                    options: &self.cg,
                };
                let (y, report) = cg.solve(
                    |p, out| {
                        let wtp = self.apply_t(p)?;
                        self.op.apply(wtp.as_ref(), out)
                    },
                    b.as_ref(),
                    y0.as_ref().map(|y| y.as_ref()),
                    CgForm::Dual,
                )?;
                let x = &rhs - &self.apply_t(y.as_ref())?;
                (x, report)
            }
        };
        if !report.converged {
            return Err(Error::Numerical {
                what: format!("conjugate gradients ({} form)", report.form.name()),
                detail: format!(
                    "did not reach the tolerance {:.1e} in {} iterations (relative residual {:.3e}); \
                     raise `max_iterations` or `tolerance`, or use method = \"svd\"",
                    self.cg.tolerance, report.iterations, report.residual
                ),
            });
        }
        let v_hat = mul_small(x.as_ref(), &t.transpose());
        Ok(Solved {
            v_hat,
            t,
            m,
            a,
            report,
        })
    }

    /// `T diag(f(m_j)) Tᵀ`.
    fn basis_diag(t: &DMat, m: &[f64], f: impl Fn(f64) -> f64) -> DMat {
        let diag = nalgebra::DVector::from_iterator(m.len(), m.iter().map(|&mj| f(mj)));
        t * DMat::from_diagonal(&diag) * t.transpose()
    }
}

impl Factor for OperatorLayer {
    fn describe(&self) -> String {
        format!(
            "matrix-free linear layer {} x {} ({}; {}; {}{}{})",
            self.n_out,
            self.n_in,
            self.op.describe(),
            self.law.describe(),
            match self.form {
                CgForm::Closed => "closed form".to_string(),
                f => format!("CG {}", f.name()),
            },
            if self.bias.is_some() {
                ", with bias"
            } else {
                ""
            },
            if self.noise.is_some() {
                ", noisy"
            } else {
                ", noiseless"
            }
        )
    }
    fn dim(&self) -> usize {
        self.d
    }
}

impl LayerShape for OperatorLayer {
    fn kind(&self) -> LayerKind {
        LayerKind::Linear
    }
    fn input_rows(&self) -> Option<usize> {
        Some(self.n_in)
    }
    fn output_rows(&self, _n_in: usize) -> usize {
        self.n_out
    }
}

impl LayerDenoiser for OperatorLayer {
    fn forward(&self, minus: &Message, plus: &Message) -> Result<Belief> {
        self.forward_warm(minus, plus, &mut WarmStart::default())
    }
    fn backward(&self, minus: &Message, plus: &Message) -> Result<Belief> {
        self.backward_warm(minus, plus, &mut WarmStart::default())
    }

    /// `G⁺_l`: `Û = ((W V̂ + B) N + R⁻Γ⁻)(N + Γ⁻)^{-1}` (noiseless: `W V̂ + B`).
    fn forward_warm(
        &self,
        minus: &Message,
        plus: &Message,
        warm: &mut WarmStart,
    ) -> Result<Belief> {
        let s = self.solve(minus, plus, warm)?;
        let mut wv = self.apply(s.v_hat.as_ref())?;
        let b_of_m = Self::basis_diag(&s.t, &s.m, |mj| self.law.b(mj));
        // Keep the basis-free start for the next call (W V̂ for the dual form, V̂ otherwise).
        match self.form {
            CgForm::Dual => warm.set(wv.clone()),
            _ => warm.set(s.v_hat.clone()),
        }
        if let Some(b) = &self.bias {
            wv += b;
        }
        let n = self.n_out as f64;
        let (mean, cov) = match (&self.noise, &s.a) {
            (Some(nz), Some(a)) => {
                let gm = minus.precision.matrix();
                let mean = &mul_small(wv.as_ref(), &(nz.matrix() * a))
                    + &mul_small(minus.mean.as_ref(), &(gm * a));
                let cov = a + a * nz.matrix() * b_of_m * nz.matrix() * a / n;
                (mean, cov)
            }
            _ => (wv, b_of_m / n),
        };
        let mut belief = Belief::new(mean, sym(&cov));
        belief.solve = Some(s.report);
        Ok(belief)
    }

    /// `G⁻_l`: `V̂`, `Σ̄_v = (1/n_{l−1}) T diag(a(m_j)) Tᵀ`.
    fn backward_warm(
        &self,
        minus: &Message,
        plus: &Message,
        warm: &mut WarmStart,
    ) -> Result<Belief> {
        let s = self.solve(minus, plus, warm)?;
        match self.form {
            CgForm::Dual => warm.set(self.apply(s.v_hat.as_ref())?),
            _ => warm.set(s.v_hat.clone()),
        }
        let cov = Self::basis_diag(&s.t, &s.m, |mj| self.law.a(mj)) / self.n_in as f64;
        let mut belief = Belief::new(s.v_hat, sym(&cov));
        belief.solve = Some(s.report);
        Ok(belief)
    }
}

impl LayerSampler for OperatorLayer {
    fn sample(&self, z_prev: MatRef<'_, f64>, rng: &mut Rng) -> Result<Mat<f64>> {
        check_shape("input of linear layer", z_prev, self.n_in, self.d)?;
        let mut z = self.apply(z_prev)?;
        if let Some(b) = &self.bias {
            z += b;
        }
        if let Some(nz) = &self.noise {
            let cov = Spd::from_symmetric("noise covariance", nz.inverse())?;
            z += &gaussian_rows(self.n_out, cov.cholesky_lower(), rng);
        }
        Ok(z)
    }
}

impl LayerSe for OperatorLayer {
    /// The closed-form step (spec §6.2 (Lin)) over the layer's spectral law: the SE and the
    /// algorithm use the same law.
    fn se_forward(
        &self,
        minus: &SeBackward,
        plus_in: &SeForward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeForward>> {
        self.spec()?.se_forward(minus, plus_in, ctx, prev)
    }
    fn se_backward(
        &self,
        minus: &SeBackward,
        plus_in: &SeForward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeBackward>> {
        self.spec()?.se_backward(minus, plus_in, ctx, prev)
    }
}
