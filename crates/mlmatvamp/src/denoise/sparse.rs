//! Row-sparse priors for multi-task / multiple-measurement-vector regression (spec §5.2–5.3).

use super::quadrature;
use super::{gaussian_rows, Rng};
use crate::error::{Error, Result};
use crate::factor::law::{SeBackward, SeContext, SeEstimate, SeForward, SeStep};
use crate::factor::{Factor, MonteCarloSe, PriorDenoiser, PriorSampler, PriorSe, RowBlockDenoiser};
use crate::message::{Belief, Message};
use crate::rows::{check_finite, par_map_rows, read_row};
use crate::spd::{sym, DMat, Spd};
use faer::Mat;
use rand::RngExt;

/// Row-sparse Bernoulli–Gaussian prior: a row is `0` with probability `1 − ρ`, else
/// `N(μ_0, Σ_0)` (full `d x d` slab covariance). MMSE denoiser (spec §5.2).
#[derive(Clone, Debug)]
pub struct BernoulliGaussianPrior {
    rho: f64,
    mean: Vec<f64>,
    cov: Spd,
    prec: Spd,
}

impl BernoulliGaussianPrior {
    /// `sparsity` = `ρ ∈ (0, 1]` (probability that a row is non-zero), slab mean and covariance.
    pub fn new(sparsity: f64, mean: Vec<f64>, cov: DMat) -> Result<Self> {
        if !(sparsity > 0.0 && sparsity <= 1.0) {
            return Err(Error::invalid(
                "sparsity",
                format!("must be in (0, 1], got {sparsity}"),
            ));
        }
        let d = mean.len();
        if d == 0 {
            return Err(Error::invalid("slab mean", "d must be at least 1"));
        }
        if let Some(x) = mean.iter().find(|x| !x.is_finite()) {
            return Err(Error::NonFinite {
                what: "slab mean".into(),
                detail: format!("entry is {x}"),
            });
        }
        let cov = Spd::new("slab covariance", cov, Some(d))?;
        let prec = Spd::from_symmetric("slab precision", cov.inverse())?;
        Ok(BernoulliGaussianPrior {
            rho: sparsity,
            mean,
            cov,
            prec,
        })
    }
    /// `ρ`.
    pub fn sparsity(&self) -> f64 {
        self.rho
    }
    /// The slab mean.
    pub fn slab_mean(&self) -> &[f64] {
        &self.mean
    }
    /// The slab covariance `Σ_0`.
    pub fn slab_covariance(&self) -> &Spd {
        &self.cov
    }
}

/// Stable logistic function.
pub fn logistic(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The per-call constants of the Bernoulli–Gaussian denoiser for a given `Γ` (spec §5.2).
struct BgRowDenoiser {
    d: usize,
    mean: Vec<f64>,
    g: DMat,
    c1: DMat,
    gc: DMat,
    mu_term: Vec<f64>,
    s_inv: DMat,
    logdet: f64,
    prior_logit: f64,
}

impl BgRowDenoiser {
    fn new(p: &BernoulliGaussianPrior, gamma: &Spd) -> Result<Self> {
        let d = p.dim();
        let g = gamma.matrix().clone();
        let post = Spd::from_symmetric("Σ_0^{-1} + Γ", p.prec.matrix() + &g)?;
        let c1 = post.inverse();
        let gc = &g * &c1;
        let mu = DMat::from_row_slice(1, d, &p.mean);
        let mu_term = (&mu * p.prec.matrix() * &c1).iter().copied().collect();
        // S^{-1} with S = Σ_0 + Γ^{-1}: Woodbury S^{-1} = Γ − Γ C_1 Γ.
        let s_inv = sym(&(&g - &g * &c1 * &g));
        // log det(I + Σ_0 Γ) = log det(Σ_0) + log det(Σ_0^{-1} + Γ)
        let logdet = p.cov.logdet() + post.logdet();
        let prior_logit = if p.rho >= 1.0 {
            f64::INFINITY
        } else {
            (p.rho / (1.0 - p.rho)).ln()
        };
        Ok(BgRowDenoiser {
            d,
            mean: p.mean.clone(),
            g,
            c1,
            gc,
            mu_term,
            s_inv,
            logdet,
            prior_logit,
        })
    }

    /// One row: writes `ẑ` into `z` and adds `w · Σ_i` into `cov` (row-major `d x d`).
    #[inline]
    fn row(&self, r: &[f64], z: &mut [f64], cov: &mut [f64], w: f64) {
        let d = self.d;
        let mut m1 = [0.0f64; 16];
        let mut quad_g = 0.0;
        let mut quad_s = 0.0;
        for j in 0..d {
            let mut acc = self.mu_term[j];
            for k in 0..d {
                acc += r[k] * self.gc[(k, j)];
            }
            m1[j] = acc;
        }
        for a in 0..d {
            let da = r[a] - self.mean[a];
            for b in 0..d {
                quad_g += r[a] * self.g[(a, b)] * r[b];
                quad_s += da * self.s_inv[(a, b)] * (r[b] - self.mean[b]);
            }
        }
        let llr = (self.prior_logit - 0.5 * self.logdet + 0.5 * quad_g - 0.5 * quad_s)
            .clamp(-700.0, 700.0);
        let pi = logistic(llr);
        for j in 0..d {
            z[j] = pi * m1[j];
        }
        let v = pi * (1.0 - pi);
        for a in 0..d {
            for b in 0..d {
                cov[a * d + b] += w * (pi * self.c1[(a, b)] + v * m1[a] * m1[b]);
            }
        }
    }
}

/// Largest `d` for which the Bernoulli–Gaussian SE step uses tensor Gauss–Hermite quadrature
/// (beyond it, the Monte-Carlo default).
pub const BG_QUADRATURE_MAX_D: usize = 4;

fn bg_nodes(d: usize) -> usize {
    // The posterior mean is a steep function of `r` when the slab is much wider than the
    // message noise; with 20 nodes at d = 3 the matched-MMSE identity T⁻ = (Γ̄⁻)⁻¹ was off by
    // 0.9% (tests/se_identities.rs), with 40 by 0.06%, with 60 by 0.009%.
    match d {
        1 => 200,
        2 => 100,
        3 => 48,
        _ => 20,
    }
}

impl Factor for BernoulliGaussianPrior {
    fn describe(&self) -> String {
        format!(
            "row-sparse Bernoulli-Gaussian prior (rho = {}, d = {})",
            self.rho,
            self.mean.len()
        )
    }

    fn dim(&self) -> usize {
        self.mean.len()
    }
}

impl PriorDenoiser for BernoulliGaussianPrior {
    /// Spec §5.2: with `C_1 = (Σ_0^{-1} + Γ)^{-1}` and `m_1 = (rΓ + μ_0Σ_0^{-1}) C_1`,
    /// `LLR = log(ρ/(1−ρ)) + log N(r; μ_0, Σ_0 + Γ^{-1}) − log N(r; 0, Γ^{-1})`,
    /// `π = logistic(LLR)`, `ẑ = π m_1`, `Σ_i = π C_1 + π(1−π) m_1^T m_1`.
    fn denoise(&self, incoming: &Message) -> Result<Belief> {
        let d = self.dim();
        incoming.check("backward message R⁻ into the prior", incoming.rows(), d)?;
        check_finite("message into the row-sparse prior", incoming.mean.as_ref())?;
        if d > 16 {
            return Err(Error::invalid(
                "d",
                "the row-sparse prior supports at most 16 columns",
            ));
        }
        let den = BgRowDenoiser::new(self, &incoming.precision)?;
        let r = incoming.mean.as_ref();
        let out = par_map_rows(r.nrows(), d, d * d, |i, zrow, acc| {
            let mut ri = [0.0f64; 16];
            read_row(r, i, &mut ri[..d]);
            den.row(&ri[..d], zrow, acc, 1.0);
            Ok(())
        })?;
        let cov = den.covariance(&out.acc, r.nrows());
        Ok(Belief::new(out.rows, cov))
    }

    /// Row-separable: every row is denoised on its own with the constants of `Γ⁻_0`.
    fn row_denoiser(&self, precision: &Spd) -> Option<Result<Box<dyn RowBlockDenoiser + '_>>> {
        if self.dim() > 16 || precision.dim() != self.dim() {
            return None;
        }
        Some(BgRowDenoiser::new(self, precision).map(|b| Box::new(b) as Box<dyn RowBlockDenoiser>))
    }
}

impl RowBlockDenoiser for BgRowDenoiser {
    fn denoise_rows(
        &self,
        r: faer::MatRef<'_, f64>,
        mut z: faer::MatMut<'_, f64>,
        cov_sum: &mut [f64],
    ) -> Result<()> {
        let d = self.d;
        let mut ri = [0.0f64; 16];
        let mut zi = [0.0f64; 16];
        for i in 0..r.nrows() {
            read_row(r, i, &mut ri[..d]);
            self.row(&ri[..d], &mut zi[..d], cov_sum, 1.0);
            for (j, &x) in zi[..d].iter().enumerate() {
                z[(i, j)] = x;
            }
        }
        Ok(())
    }

    fn covariance(&self, cov_sum: &[f64], n: usize) -> DMat {
        let d = self.d;
        let n = n.max(1) as f64;
        sym(&DMat::from_fn(d, d, |a, b| cov_sum[a * d + b] / n))
    }
}

impl PriorSampler for BernoulliGaussianPrior {
    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Mat<f64>> {
        let d = self.dim();
        let mut z = gaussian_rows(n, self.cov.cholesky_lower(), rng);
        for i in 0..n {
            let on = rng.random::<f64>() < self.rho;
            for j in 0..d {
                z[(i, j)] = if on { z[(i, j)] + self.mean[j] } else { 0.0 };
            }
        }
        Ok(z)
    }
}

impl PriorSe for BernoulliGaussianPrior {
    /// Exact SE step (spec §6.2 (P)) by quadrature instead of Monte Carlo: given the indicator,
    /// `(z, r⁻ = zΨ⁻ + c)` is jointly Gaussian, so every expectation is an integral over `r`
    /// alone, with `E[z | r] = μ_0 + (r − m_r) S^+ Ψ^T Σ_0`, `S = Ψ^T Σ_0 Ψ + T⁻` for the slab
    /// and `z = 0` for the spike. The `d`-dimensional integrals use tensor Gauss–Hermite rules
    /// (`d ≤ 4`; Monte Carlo beyond).
    fn se_forward(
        &self,
        minus: &SeBackward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeForward>> {
        let d = self.dim();
        crate::factor::law::check_laws(d, Some(minus), None, prev)?;
        if d > BG_QUADRATURE_MAX_D || ctx.want_samples {
            return crate::factor::monte_carlo::prior_forward(self, minus, ctx, prev);
        }
        let den = BgRowDenoiser::new(self, &minus.gamma)?;
        let (x, w) = quadrature::gauss_hermite(bg_nodes(d))?;
        let npts = x.len().pow(d as u32);
        let mu = DMat::from_row_slice(1, d, &self.mean);
        // Components: (weight, m_r, S^{1/2}, S^{+1/2} Ψ^T Σ_0 (maps g to E[z|r] − μ), z mean).
        let sqrt_pinv = |s: &DMat| {
            let e = nalgebra::SymmetricEigen::new(sym(s));
            let tol = 1e-14
                * e.eigenvalues
                    .iter()
                    .fold(0.0f64, |m, v| m.max(v.abs()))
                    .max(f64::MIN_POSITIVE);
            let q = &e.eigenvectors;
            let root =
                q * DMat::from_diagonal(&e.eigenvalues.map(|v| v.max(0.0).sqrt())) * q.transpose();
            let pinv =
                q * DMat::from_diagonal(&e.eigenvalues.map(|v| {
                    if v > tol {
                        1.0 / v.sqrt()
                    } else {
                        0.0
                    }
                })) * q.transpose();
            (root, pinv)
        };
        let (spike_root, _) = sqrt_pinv(&minus.t);
        let slab_s = minus.psi.transpose() * self.cov.matrix() * &minus.psi + &minus.t;
        let (slab_root, slab_pinv) = sqrt_pinv(&slab_s);
        let slab_gain = &slab_pinv * minus.psi.transpose() * self.cov.matrix();
        struct Comp {
            weight: f64,
            m_r: DMat,
            root: DMat,
            gain: Option<DMat>,
        }
        let comps = [
            Comp {
                weight: 1.0 - self.rho,
                m_r: DMat::zeros(1, d),
                root: spike_root,
                gain: None,
            },
            Comp {
                weight: self.rho,
                m_r: &mu * &minus.psi,
                root: slab_root,
                gain: Some(slab_gain),
            },
        ];
        // First pass: E[Σ] and the needed moments of (r, ẑ, E[z|r]).
        let mut sigma = vec![0.0; d * d];
        let mut e_zz = DMat::zeros(d, d); // E[ẑ^T ẑ]
        let mut e_rz = DMat::zeros(d, d); // E[r^T ẑ]
        let mut e_rr = DMat::zeros(d, d); // E[r^T r]
        let mut e_tz = DMat::zeros(d, d); // E[z^T ẑ]
        let mut e_tr = DMat::zeros(d, d); // E[z^T r]
        let mut idx = vec![0usize; d];
        let (mut g, mut r, mut zh, mut zt) =
            ([0.0f64; 16], [0.0f64; 16], [0.0f64; 16], [0.0f64; 16]);
        for comp in &comps {
            if comp.weight == 0.0 {
                continue;
            }
            idx.iter_mut().for_each(|v| *v = 0);
            for _ in 0..npts {
                let mut wk = comp.weight;
                for j in 0..d {
                    g[j] = x[idx[j]];
                    wk *= w[idx[j]];
                }
                for j in 0..d {
                    r[j] = comp.m_r[(0, j)] + (0..d).map(|k| g[k] * comp.root[(k, j)]).sum::<f64>();
                    zt[j] = match &comp.gain {
                        Some(gain) => {
                            self.mean[j] + (0..d).map(|k| g[k] * gain[(k, j)]).sum::<f64>()
                        }
                        None => 0.0,
                    };
                }
                den.row(&r[..d], &mut zh[..d], &mut sigma, wk);
                for a in 0..d {
                    for b in 0..d {
                        e_zz[(a, b)] += wk * zh[a] * zh[b];
                        e_rz[(a, b)] += wk * r[a] * zh[b];
                        e_rr[(a, b)] += wk * r[a] * r[b];
                        e_tz[(a, b)] += wk * zt[a] * zh[b];
                        e_tr[(a, b)] += wk * zt[a] * r[b];
                    }
                }
                for v in idx.iter_mut() {
                    *v += 1;
                    if *v < x.len() {
                        break;
                    }
                    *v = 0;
                }
            }
        }
        let predicted = sym(&DMat::from_fn(d, d, |a, b| sigma[a * d + b]));
        let (lambda, gamma, divisor) = ctx.policy.precision_update(
            &predicted,
            &minus.gamma,
            prev,
            &ctx.location,
            ctx.iteration,
        )?;
        // E[z^T z] exactly; e⁺ = R_out − z with R_out = ẑ A − r B, A = Λ D^{-1}, B = Γ⁻ D^{-1}
        // (D = Γ_out without clipping).
        let e_zz_true = (self.cov.matrix() + mu.transpose() * &mu) * self.rho;
        let a = divisor.solve_right(&lambda)?;
        let b = divisor.solve_right(minus.gamma.matrix())?;
        // E[R^T R], E[z^T R]
        let e_out_out = a.transpose() * &e_zz * &a
            - a.transpose() * e_rz.transpose() * &b
            - b.transpose() * &e_rz * &a
            + b.transpose() * &e_rr * &b;
        let e_z_out = &e_tz * &a - &e_tr * &b;
        let e_ze = &e_z_out - &e_zz_true;
        let e_ee = &e_out_out - &e_z_out - e_z_out.transpose() + &e_zz_true;
        let mut k = DMat::zeros(2 * d, 2 * d);
        k.view_mut((0, 0), (d, d)).copy_from(&e_zz_true);
        k.view_mut((0, d), (d, d)).copy_from(&e_ze);
        k.view_mut((d, 0), (d, d)).copy_from(&e_ze.transpose());
        k.view_mut((d, d), (d, d)).copy_from(&e_ee);
        let mut joint = DMat::zeros(2 * d, 2 * d);
        joint.view_mut((0, 0), (d, d)).copy_from(&e_zz_true);
        joint.view_mut((0, d), (d, d)).copy_from(&e_tz);
        joint.view_mut((d, 0), (d, d)).copy_from(&e_tz.transpose());
        joint.view_mut((d, d), (d, d)).copy_from(&e_zz);
        let error_cov = &e_zz - &e_tz - e_tz.transpose() + &e_zz_true;
        Ok(SeStep {
            out: SeForward { k: sym(&k), gamma },
            estimate: SeEstimate {
                error_cov: sym(&error_cov),
                joint: sym(&joint),
                predicted_cov: predicted,
                samples: None,
            },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Group lasso (spec §5.3)
// ---------------------------------------------------------------------------------------------

/// The group-lasso prior `p_0(z) ∝ exp(−λ‖z‖₂)` on the rows of `Z_0`, with its **MAP** denoiser,
/// the proximal operator of `λ‖·‖₂` in the metric of a full `d x d` precision `Γ` (spec §5.3).
///
/// With this prior, an AWGN output of noise precision `N` and `Z_1 = X Z_0`, the MAP problem of
/// the network is the multi-task (group) lasso of paper eq. (5):
/// `min_F ½‖Y − X F‖²_N + λ Σ_k ‖F_k·‖₂`.
///
/// * **Denoiser** (spec §5.3): `ẑ = argmin_z λ‖z‖₂ + ½(z − r)Γ(z − r)^T`. If `‖rΓ‖₂ ≤ λ`,
///   `ẑ = 0` and `Σ_i = 0` (the face rule of spec §4.1: the estimate is locally constant).
///   Otherwise, with `Γ = Q diag(g) Q^T` and `c = rΓQ`, `t* = ‖ẑ‖` is the root of
///   `ψ(t) = Σ_j c_j²/(g_j t + λ)² − 1`, `ẑQ = c ⊘ (g + λ/t*)` and
///   `Σ_i = H_i^{-1} = (Γ + (λ/t*)(I − û^Tû))^{-1}`, `û = ẑ/t*` (inverse Hessian, spec §0).
///   `Σ̄` is the average over all rows (zero rows included).
/// * **Sampling**: `‖z‖₂ ~ Gamma(d, 1/λ)` (shape `d`, scale `1/λ`) and `z/‖z‖₂` uniform on the
///   sphere, which is exactly the density `∝ exp(−λ‖z‖₂)` on `R^d`. The prior is not sparse: for
///   the usual *mismatched* use (row-sparse data, group-lasso estimator) wrap it in a
///   [`crate::denoise::MismatchedPrior`] whose data law is, e.g., a [`BernoulliGaussianPrior`].
#[derive(Clone, Debug)]
pub struct GroupLassoPrior {
    lambda: f64,
    d: usize,
}

/// Relative accuracy of the root `t*` of `ψ` (spec §5.3: 1e-14).
const PSI_TOL: f64 = 1e-15;

/// The eigen-decomposition `Γ = Q diag(g) Q^T` shared by every row of one call.
struct GammaEigen {
    q: DMat,
    g: Vec<f64>,
}

impl GammaEigen {
    fn new(gamma: &Spd) -> Self {
        let e = nalgebra::SymmetricEigen::new(gamma.matrix().clone());
        // Γ is SPD (an Spd invariant); floor rounding noise in the smallest eigenvalue.
        let gmax = e.eigenvalues.iter().copied().fold(0.0f64, f64::max);
        let g = e
            .eigenvalues
            .iter()
            .map(|&x| x.max(gmax * f64::EPSILON))
            .collect();
        GammaEigen {
            q: e.eigenvectors,
            g,
        }
    }
}

/// The root `t* > 0` of `ψ(t) = Σ_j c_j²/(g_j t + λ)² − 1` given `‖c‖ > λ` (spec §5.3).
///
/// `ψ` is strictly decreasing on `t > 0`, and the root lies in
/// `[t_lo, t_hi] = [(‖c‖ − λ)/g_max, (‖c‖ − λ)/g_min]` (at `t_lo` every term is `≥ c_j²/‖c‖²`, at
/// `t_hi` `≤`). Newton's method is applied to the equivalent equation `h(t) = 1` with
/// `h(t) = (ψ(t) + 1)^{-1/2} = (Σ_j (c_j/g_j)² (t + λ/g_j)^{-2})^{-1/2}`, which is increasing,
/// concave (the Moré–Sorensen secular function) and exactly linear when all `g_j` are equal.
/// Started at `t_lo`, the iterates increase monotonically to the root (concavity), so the
/// bracket alone safeguards them; a bisection finishes the job should they stall.
fn psi_root(c: &[f64], g: &[f64], lambda: f64, cnorm: f64) -> f64 {
    let gmax = g.iter().copied().fold(0.0f64, f64::max);
    let gmin = g.iter().copied().fold(f64::INFINITY, f64::min);
    let excess = cnorm - lambda;
    let (lo0, hi) = (excess / gmax, excess / gmin);
    if hi <= lo0 {
        return lo0; // all g_j equal: h is linear and t_lo is the root.
    }
    // (ψ(t) + 1, −ψ'(t)/2).
    let s = |t: f64| -> (f64, f64) {
        let (mut v, mut dv) = (0.0, 0.0);
        for (cj, gj) in c.iter().zip(g) {
            let den = gj * t + lambda;
            let q = cj * cj / (den * den);
            v += q;
            dv += q * gj / den;
        }
        (v, dv)
    };
    let mut lo = lo0;
    let mut t = lo0;
    for _ in 0..50 {
        let (v, dv) = s(t);
        let h = 1.0 / v.sqrt();
        // 1 − h at the rounding level: t is the root to working precision.
        if h >= 1.0 - 4.0 * f64::EPSILON {
            return t;
        }
        lo = t;
        // h' = S^{-3/2} Σ c_j² g_j/(g_j t + λ)³.
        let dh = dv * h * h * h;
        let next = (t + (1.0 - h) / dh).min(hi);
        // Stop when the step no longer increases t (a NaN step also ends here) or is tiny.
        if next.partial_cmp(&t) != Some(std::cmp::Ordering::Greater) || next - t <= PSI_TOL * next {
            return next.max(t);
        }
        t = next;
    }
    // Bisection fallback on the bracket [lo, hi].
    let mut hi = hi;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if s(mid).0 > 1.0 {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= PSI_TOL * hi {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// One row of the prox, in the eigenbasis of `Γ`: writes `ẑ` (original basis) to `z` and adds
/// `Q^T Σ_i Q` (flattened, row-major `d x d`) to `acc`. `work` is scratch of length `≥ 3d`.
fn group_lasso_row(
    r: &[f64],
    eig: &GammaEigen,
    lambda: f64,
    z: &mut [f64],
    acc: &mut [f64],
    work: &mut [f64],
) {
    let d = r.len();
    let (q, g) = (&eig.q, &eig.g);
    let (c, rest) = work.split_at_mut(d);
    let (w, s) = rest.split_at_mut(d);
    // c = rΓQ = (rQ) diag(g).
    for (j, cj) in c.iter_mut().enumerate() {
        let rq: f64 = (0..d).map(|k| r[k] * q[(k, j)]).sum();
        *cj = rq * g[j];
    }
    let cnorm = c.iter().map(|x| x * x).sum::<f64>().sqrt();
    if cnorm <= lambda {
        // ‖rΓ‖₂ ≤ λ: ẑ = 0 and, by the face rule (spec §4.1), Σ_i = 0.
        z.iter_mut().for_each(|x| *x = 0.0);
        return;
    }
    let t = psi_root(c, g, lambda, cnorm);
    // ẑQ_j = c_j t/(g_j t + λ); the unit direction w = ẑQ/t.
    for j in 0..d {
        w[j] = c[j] / (g[j] * t + lambda);
    }
    let wn = w.iter().map(|x| x * x).sum::<f64>().sqrt();
    w.iter_mut().for_each(|x| *x /= wn);
    for (i, zi) in z.iter_mut().enumerate() {
        *zi = t * (0..d).map(|j| w[j] * q[(i, j)]).sum::<f64>();
    }
    // Q^T H Q = diag(g + a) − a w w^T with a = λ/t*; Sherman–Morrison:
    // (Q^T H Q)^{-1} = D^{-1} + a (D^{-1}w)(D^{-1}w)^T / (Σ_j w_j² g_j / D_j),  D = diag(g + a).
    let a = lambda / t;
    let mut den = 0.0;
    for j in 0..d {
        let dinv = 1.0 / (g[j] + a);
        den += w[j] * w[j] * g[j] * dinv;
        s[j] = w[j] * dinv;
    }
    for j in 0..d {
        acc[j * d + j] += 1.0 / (g[j] + a);
        for k in 0..d {
            acc[j * d + k] += a * s[j] * s[k] / den;
        }
    }
}

impl GroupLassoPrior {
    /// The prior `∝ exp(−λ‖z‖₂)` on rows of length `d`; `λ` must be positive and finite.
    pub fn new(d: usize, lambda: f64) -> Result<Self> {
        if d == 0 {
            return Err(Error::invalid("group lasso", "d must be at least 1"));
        }
        if !(lambda > 0.0 && lambda.is_finite()) {
            return Err(Error::invalid(
                "group-lasso lambda",
                format!("must be positive and finite, got {lambda}"),
            ));
        }
        Ok(GroupLassoPrior { lambda, d })
    }

    /// `λ`.
    pub fn lambda(&self) -> f64 {
        self.lambda
    }

    /// The prox of one row and its inverse Hessian `Σ_i` (spec §5.3): returns
    /// `(ẑ, Σ_i)` for `ẑ = argmin_z λ‖z‖₂ + ½(z − r)Γ(z − r)^T` (`Σ_i = 0` when `ẑ = 0`).
    pub fn prox(&self, r: &[f64], gamma: &Spd) -> Result<(Vec<f64>, DMat)> {
        let d = self.d;
        if r.len() != d || gamma.dim() != d {
            return Err(Error::shape(
                "group-lasso prox input",
                format!("a row of length {d} and a {d} x {d} precision"),
                format!(
                    "a row of length {} and a {1} x {1} precision",
                    r.len(),
                    gamma.dim()
                ),
            ));
        }
        if let Some(x) = r.iter().find(|x| !x.is_finite()) {
            return Err(Error::NonFinite {
                what: "group-lasso prox input".into(),
                detail: format!("entry is {x}"),
            });
        }
        let eig = GammaEigen::new(gamma);
        let mut z = vec![0.0; d];
        let mut acc = vec![0.0; d * d];
        let mut work = vec![0.0; 3 * d];
        group_lasso_row(r, &eig, self.lambda, &mut z, &mut acc, &mut work);
        let cov = DMat::from_row_slice(d, d, &acc);
        Ok((z, sym(&(&eig.q * cov * eig.q.transpose()))))
    }
}

impl Factor for GroupLassoPrior {
    fn describe(&self) -> String {
        format!(
            "group-lasso prior exp(-lambda ||z||_2) (lambda = {}, d = {}, MAP)",
            self.lambda, self.d
        )
    }

    fn dim(&self) -> usize {
        self.d
    }
}

impl PriorDenoiser for GroupLassoPrior {
    /// Spec §5.3, row by row (see [`GroupLassoPrior`]); `Σ̄ = ⟨Σ_i⟩` over all rows.
    fn denoise(&self, incoming: &Message) -> Result<Belief> {
        let d = self.d;
        incoming.check("backward message R⁻ into the prior", incoming.rows(), d)?;
        check_finite("message into the group-lasso prior", incoming.mean.as_ref())?;
        let eig = GammaEigen::new(&incoming.precision);
        let r = incoming.mean.as_ref();
        let out = par_map_rows(r.nrows(), d, d * d, |i, zrow, acc| {
            let mut work = vec![0.0; 4 * d];
            let (ri, work) = work.split_at_mut(d);
            for (j, x) in ri.iter_mut().enumerate() {
                *x = r[(i, j)];
            }
            group_lasso_row(ri, &eig, self.lambda, zrow, acc, work);
            Ok(())
        })?;
        let n = r.nrows().max(1) as f64;
        let rot = DMat::from_row_slice(d, d, &out.acc) / n;
        Ok(Belief::new(
            out.rows,
            sym(&(&eig.q * rot * eig.q.transpose())),
        ))
    }
}

impl PriorSampler for GroupLassoPrior {
    /// `‖z‖₂ ~ Gamma(d, 1/λ)`, direction uniform on the sphere: the density `∝ exp(−λ‖z‖₂)`.
    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Mat<f64>> {
        let d = self.d;
        let radius = rand_distr::Gamma::new(d as f64, 1.0 / self.lambda)
            .map_err(|e| Error::invalid("group-lasso radius law", e.to_string()))?;
        let mut z = super::standard_normal(n, d, rng);
        for i in 0..n {
            let norm = (0..d).map(|j| z[(i, j)].powi(2)).sum::<f64>().sqrt();
            let t: f64 = rng.sample(radius);
            let scale = if norm > 0.0 { t / norm } else { 0.0 };
            for j in 0..d {
                z[(i, j)] *= scale;
            }
        }
        Ok(z)
    }
}

/// No closed form: the Monte-Carlo SE step over this factor's sampler and denoiser.
impl MonteCarloSe for GroupLassoPrior {}
