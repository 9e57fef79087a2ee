//! Linear layers in the state evolution: the closed-form step (spec §6.2 (Lin)) given the
//! singular values, from an actual `W` or from a limit law (Marchenko–Pastur).

use crate::error::Result;
use crate::factor::affine::{Affine, Blocks};
use crate::factor::law::{
    backward_law, check_laws, SeBackward, SeContext, SeEstimate, SeForward, SeStep,
};
use crate::factor::{Factor, LayerKind, LayerSe, LayerShape};
use crate::spd::{sym, DMat, Spd};

/// What the SE needs of a linear layer `Z_l = W Z_{l−1} + B + Ξ`: its shape, the singular values
/// of `W`, the noise precision and the second moment `(1/n_l) B^T B` of the bias rows.
#[derive(Clone, Debug)]
pub struct LinearSpec {
    /// `n_l`.
    pub n_out: usize,
    /// `n_{l−1}`.
    pub n_in: usize,
    /// `d`.
    pub d: usize,
    /// The `r = min(n_l, n_{l−1})` singular values; or, with [`LinearSpec::weights`], the nodes of
    /// a weighted law of the singular values (e.g. from a spectral law of `WᵀW`).
    pub singular_values: Vec<f64>,
    /// Empty: every singular value counts once (an actual `W`). Otherwise one weight per entry of
    /// `singular_values` (the number of paired rows it stands for); the rows the weights do not
    /// account for (`n − Σ weights`, which may be negative when a law counts the zero
    /// eigenvalues of `WᵀW`) are rows with singular value 0.
    pub weights: Vec<f64>,
    /// `N` (`None` = noiseless).
    pub noise: Option<Spd>,
    /// `Σ_b̄ = (1/n_l) B^T B` (zeros without bias).
    pub bias_moment: DMat,
}

pub use crate::operator::spectral::marchenko_pastur_singular_values;

impl LinearSpec {
    /// A spec from a Marchenko–Pastur law (i.i.d. `N(0, variance)` weights).
    pub fn marchenko_pastur(
        n_out: usize,
        n_in: usize,
        variance: f64,
        d: usize,
        noise: Option<Spd>,
        bias_moment: Option<DMat>,
    ) -> Result<Self> {
        let s = marchenko_pastur_singular_values(n_out, n_in, variance)?;
        Ok(LinearSpec {
            n_out,
            n_in,
            d,
            singular_values: s,
            weights: Vec::new(),
            noise,
            bias_moment: bias_moment.unwrap_or_else(|| DMat::zeros(d, d)),
        })
    }

    /// The spec of a layer known by a spectral law of `WᵀW` (its nodes as weighted singular
    /// values; [`crate::operator::SpectralLaw::weighted_singular_values`]).
    pub fn from_law(
        law: &crate::operator::SpectralLaw,
        d: usize,
        noise: Option<Spd>,
        bias_moment: Option<DMat>,
    ) -> Result<Self> {
        let (n_out, n_in) = law.shape();
        let (singular_values, weights) = law.weighted_singular_values();
        let spec = LinearSpec {
            n_out,
            n_in,
            d,
            singular_values,
            weights,
            noise,
            bias_moment: bias_moment.unwrap_or_else(|| DMat::zeros(d, d)),
        };
        spec.check_weights()?;
        Ok(spec)
    }

    /// The weight of singular value `i` (1 without weights).
    fn weight(&self, i: usize) -> f64 {
        self.weights.get(i).copied().unwrap_or(1.0)
    }

    /// The number of paired rows the singular values stand for (`r`, or `Σ weights`).
    fn paired(&self) -> f64 {
        if self.weights.is_empty() {
            self.singular_values.len() as f64
        } else {
            self.weights.iter().sum()
        }
    }

    /// Checks that the weights, if any, match the singular values and are finite.
    fn check_weights(&self) -> Result<()> {
        if !self.weights.is_empty()
            && (self.weights.len() != self.singular_values.len()
                || self.weights.iter().any(|w| !w.is_finite()))
        {
            return Err(crate::error::Error::invalid(
                "linear layer spectrum",
                format!(
                    "need one finite weight per singular value ({}), got {}",
                    self.singular_values.len(),
                    self.weights.len()
                ),
            ));
        }
        Ok(())
    }

    /// `P_eff = (N^{-1} + (Γ⁻)^{-1})^{-1}` and `A = (N + Γ⁻)^{-1}` (`None` when noiseless).
    fn p_eff(&self, gm: &DMat) -> Result<(DMat, Option<DMat>)> {
        Ok(match &self.noise {
            Some(nz) => {
                let a = Spd::from_symmetric("N + Γ⁻", nz.matrix() + gm)?.inverse();
                (sym(&(gm * &a * nz.matrix())), Some(a))
            }
            None => (gm.clone(), None),
        })
    }

    fn sigma_vv(gp: &DMat, p_eff: &DMat, s: f64) -> Result<DMat> {
        Ok(Spd::from_symmetric("Γ⁺ + s² P_eff", gp + p_eff * (s * s))?.inverse())
    }

    fn blocks(&self, plus_in: &SeForward, minus: &SeBackward) -> Blocks {
        let d = self.d;
        let noise_cov = self
            .noise
            .as_ref()
            .map_or_else(|| DMat::zeros(d, d), |n| n.inverse());
        Blocks::new(&[&plus_in.k, &noise_cov, &self.bias_moment, &minus.t])
    }

    /// `(ã, r⁻, r⁺, v̂)` of a paired row with singular value `s` (spec §3.1(a) as affine maps).
    fn row(
        &self,
        bl: &Blocks,
        s: f64,
        gp: &DMat,
        p_eff: &DMat,
        minus: &SeBackward,
    ) -> Result<(Affine, Affine, Affine, Affine, Affine)> {
        let d = self.d;
        let a = bl.var_range(0, 0, d, d);
        let b = bl.var_range(0, d, d, d);
        let bbar = bl.var(2, d);
        let a_out = a.scale(s).add(&bbar).add(&bl.var(1, d));
        let r_minus = a_out.mul(&minus.psi).add(&bl.var(3, d));
        let r_plus = a.add(&b);
        let v_hat = r_plus
            .mul(gp)
            .add(&r_minus.sub(&bbar).mul(p_eff).scale(s))
            .mul(&Self::sigma_vv(gp, p_eff, s)?);
        Ok((a, a_out, r_minus, r_plus, v_hat))
    }

    /// The forward SE step of the linear layer (`K⁺_l`, `Γ̄⁺_l` and the prediction about `Ẑ⁺_l`).
    pub fn se_forward(
        &self,
        minus: &SeBackward,
        plus_in: &SeForward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeForward>> {
        let d = self.d;
        check_laws(d, Some(minus), Some(plus_in), prev)?;
        let (gm, gp) = (minus.gamma.matrix(), plus_in.gamma.matrix());
        self.check_weights()?;
        let (p_eff, a_mat) = self.p_eff(gm)?;
        let comp = self.n_out as f64 - self.paired();
        // Σ̄_u = (1/n_l)[Σ_i Σ_uu(s_i) + (n_l − r) Σ_uu(0)].
        let sigma_uu = |s: f64| -> Result<DMat> {
            let svv = Self::sigma_vv(gp, &p_eff, s)?;
            Ok(match (&self.noise, &a_mat) {
                (Some(nz), Some(a)) => a + a * nz.matrix() * svv * nz.matrix() * a * (s * s),
                _ => svv * (s * s),
            })
        };
        let mut sum = sigma_uu(0.0)? * comp;
        for (i, &s) in self.singular_values.iter().enumerate() {
            sum += sigma_uu(s)? * self.weight(i);
        }
        let predicted = sym(&(sum / self.n_out as f64));
        let (lambda, gamma, divisor) = ctx.policy.precision_update(
            &predicted,
            &minus.gamma,
            prev,
            &ctx.location,
            ctx.iteration,
        )?;
        let gamma_inv = divisor.inverse();
        let bl = self.blocks(plus_in, minus);
        let mut k = DMat::zeros(2 * d, 2 * d);
        let mut joint = DMat::zeros(2 * d, 2 * d);
        let mut err = DMat::zeros(d, d);
        let mut add = |s: f64, w: f64| -> Result<()> {
            let (_, a_out, r_minus, _, v_hat) = self.row(&bl, s, gp, &p_eff, minus)?;
            let bbar = bl.var(2, d);
            let u_hat = match (&self.noise, &a_mat) {
                (Some(nz), Some(a)) => v_hat
                    .scale(s)
                    .add(&bbar)
                    .mul(&(nz.matrix() * a))
                    .add(&r_minus.mul(&(gm * a))),
                _ => v_hat.scale(s).add(&bbar),
            };
            let e = u_hat
                .mul(&lambda)
                .sub(&r_minus.mul(gm))
                .mul(&gamma_inv)
                .sub(&a_out);
            k += bl.joint(&a_out, &e) * w;
            joint += bl.joint(&a_out, &u_hat) * w;
            let diff = u_hat.sub(&a_out);
            err += bl.moment(&diff, &diff) * w;
            Ok(())
        };
        for (i, &s) in self.singular_values.iter().enumerate() {
            add(s, self.weight(i))?;
        }
        if comp != 0.0 {
            add(0.0, comp)?;
        }
        let n = self.n_out as f64;
        Ok(SeStep {
            out: SeForward {
                k: sym(&(k / n)),
                gamma,
            },
            estimate: SeEstimate {
                error_cov: sym(&(err / n)),
                joint: sym(&(joint / n)),
                predicted_cov: predicted,
                samples: None,
            },
        })
    }

    /// The backward SE step of the linear layer (`Ψ⁻, T⁻, Γ̄⁻` about `Z_{l−1}` and the prediction
    /// about `Ẑ⁻_{l−1}`).
    pub fn se_backward(
        &self,
        minus: &SeBackward,
        plus_in: &SeForward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeBackward>> {
        let d = self.d;
        check_laws(d, Some(minus), Some(plus_in), prev)?;
        let (gm, gp) = (minus.gamma.matrix(), plus_in.gamma.matrix());
        self.check_weights()?;
        let (p_eff, _) = self.p_eff(gm)?;
        let comp = self.n_in as f64 - self.paired();
        // Σ̄_v = (1/n_{l−1})[Σ_i Σ_vv(s_i) + (n_{l−1} − r)(Γ⁺)^{-1}].
        let mut sum = plus_in.gamma.inverse() * comp;
        for (i, &s) in self.singular_values.iter().enumerate() {
            sum += Self::sigma_vv(gp, &p_eff, s)? * self.weight(i);
        }
        let predicted = sym(&(sum / self.n_in as f64));
        let (lambda, gamma, divisor) = ctx.policy.precision_update(
            &predicted,
            &plus_in.gamma,
            prev,
            &ctx.location,
            ctx.iteration,
        )?;
        let gamma_inv = divisor.inverse();
        let bl = self.blocks(plus_in, minus);
        let mut ae = DMat::zeros(d, d);
        let mut ee = DMat::zeros(d, d);
        let mut joint = DMat::zeros(2 * d, 2 * d);
        let mut err = DMat::zeros(d, d);
        let mut add = |v_hat: &Affine, a: &Affine, r_plus: &Affine, w: f64| {
            let e = v_hat
                .mul(&lambda)
                .sub(&r_plus.mul(gp))
                .mul(&gamma_inv)
                .sub(a);
            ae += bl.moment(a, &e) * w;
            ee += bl.moment(&e, &e) * w;
            joint += bl.joint(a, v_hat) * w;
            let diff = v_hat.sub(a);
            err += bl.moment(&diff, &diff) * w;
        };
        for (i, &s) in self.singular_values.iter().enumerate() {
            let (a, _, _, r_plus, v_hat) = self.row(&bl, s, gp, &p_eff, minus)?;
            add(&v_hat, &a, &r_plus, self.weight(i));
        }
        if comp != 0.0 {
            // Input-only rows: v̂ = r⁺.
            let a = bl.var_range(0, 0, d, d);
            let r_plus = a.add(&bl.var_range(0, d, d, d));
            add(&r_plus.clone(), &a, &r_plus, comp);
        }
        let n = self.n_in as f64;
        let k_aa = plus_in.k.view((0, 0), (d, d)).into_owned();
        let out = backward_law(&k_aa, &(ae / n), &(ee / n), ctx.psi_mode, gamma);
        Ok(SeStep {
            out,
            estimate: SeEstimate {
                error_cov: sym(&(err / n)),
                joint: sym(&(joint / n)),
                predicted_cov: predicted,
                samples: None,
            },
        })
    }
}

/// A linear layer known only through its singular values (e.g. `weight = { law = "gaussian" }`
/// in an SE configuration, or the actual singular values of a given weight): the state
/// evolution's closed-form step (spec §6.2 (Lin)) and nothing else. It implements only the SE
/// capability ([`LayerSe`]); the algorithm and a teacher need a [`super::LinearLayer`].
#[derive(Clone, Debug)]
pub struct SpectralLinearLayer {
    spec: LinearSpec,
    /// The shape shown to the user `(n_l, n_{l−1})` (the spec may be a reduced discretisation).
    shape: (usize, usize),
    /// Where the singular values come from, for the description.
    source: String,
}

impl SpectralLinearLayer {
    /// The layer of a spec (shown with the spec's shape).
    pub fn new(spec: LinearSpec) -> Self {
        SpectralLinearLayer {
            shape: (spec.n_out, spec.n_in),
            spec,
            source: "singular-value law".into(),
        }
    }
    /// The same layer shown with the real shape `n_out x n_in` of the layer it stands for (when
    /// the spec is a reduced discretisation of the same law) and the source of its singular
    /// values. The state evolution uses the shape only through the spec.
    pub fn shown_as(mut self, n_out: usize, n_in: usize, source: impl Into<String>) -> Self {
        self.shape = (n_out, n_in);
        self.source = source.into();
        self
    }
    /// The layer's SE description.
    pub fn spec(&self) -> &LinearSpec {
        &self.spec
    }
}

impl Factor for SpectralLinearLayer {
    fn describe(&self) -> String {
        format!(
            "linear layer {} x {} ({}{})",
            self.shape.0,
            self.shape.1,
            self.source,
            if self.spec.noise.is_some() {
                ", noisy"
            } else {
                ", noiseless"
            }
        )
    }

    fn dim(&self) -> usize {
        self.spec.d
    }
}

impl LayerShape for SpectralLinearLayer {
    fn kind(&self) -> LayerKind {
        LayerKind::Linear
    }

    fn input_rows(&self) -> Option<usize> {
        Some(self.shape.1)
    }

    fn output_rows(&self, _n_in: usize) -> usize {
        self.shape.0
    }
}

impl LayerSe for SpectralLinearLayer {
    fn singular_values(&self) -> Option<&[f64]> {
        Some(&self.spec.singular_values)
    }

    fn se_forward(
        &self,
        minus: &SeBackward,
        plus_in: &SeForward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeForward>> {
        self.spec.se_forward(minus, plus_in, ctx, prev)
    }

    fn se_backward(
        &self,
        minus: &SeBackward,
        plus_in: &SeForward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeBackward>> {
        self.spec.se_backward(minus, plus_in, ctx, prev)
    }
}
