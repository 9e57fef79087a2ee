//! Linear layers `Z_l = W Z_{l−1} + B + Ξ` solved through one thin SVD (paper eq. 15, spec §3).
//!
//! With `W = U S V^T` (computed once, at construction) the Gaussian belief (eq. 12) separates
//! over *rotated* rows: `r` paired rows (one singular value each), `n_l − r` output-only rows
//! and `n_{l−1} − r` input-only rows (spec §3.1). Every call then costs a few thin products
//! `O(n r d)` plus `O(r d²)` in a basis shared by all paired rows (spec §3.3).

use super::spectral::LinearSpec;
use super::{gaussian_rows, Rng};
use crate::error::{Error, Result};
use crate::factor::law::{SeBackward, SeContext, SeForward, SeStep};
use crate::factor::{Factor, LayerDenoiser, LayerKind, LayerSampler, LayerSe, LayerShape};
use crate::message::{Belief, Message};
use crate::rows::{check_finite, check_shape, mul_small, shape_str};
use crate::spd::{backward_rows, forward_rows, sym, DMat, Spd};
use faer::{Mat, MatRef};
use nalgebra::SymmetricEigen;
use paired::{Paired, Tail};

mod paired;

/// A linear layer `Z_l = W Z_{l−1} + B + Ξ`, `W ∈ R^{n_l × n_{l−1}}` of any shape, optional bias
/// `B ∈ R^{n_l × d}`, and Gaussian noise rows `N(0, N^{-1})` or no noise (`N = ∞`).
#[derive(Clone, Debug)]
pub struct LinearLayer {
    n_out: usize,
    n_in: usize,
    d: usize,
    /// `U_r` (`n_l x r`), shared with the solver's lazy estimates of `Z_l` (`solver/lazy.rs`),
    /// which form `U_r C` only when asked.
    u: std::sync::Arc<Mat<f64>>,
    s: Vec<f64>,
    /// `V_rᵀ` (`r x n_{l−1}`, column-major): the rows of `V_r` are its contiguous columns, so
    /// that a block of rows of `V_r` is one contiguous slab (the fused pass of the solver,
    /// `docs/speed.md`), and both `V_rᵀ X` and `V_r X` stream it at full speed. Shared by
    /// clones of the layer, like `U_r` (both are on huge pages when large, `pages`).
    vt: std::sync::Arc<Mat<f64>>,
    bias: Option<Mat<f64>>,
    bias_rot: Mat<f64>,
    noise: Option<Spd>,
    svd_seconds: f64,
    /// The last `U_r^T R⁻` and `V_r^T R⁺` with their inputs: within an iteration the backward
    /// call gets the same `R⁺` as the forward call, and a fully observed AWGN output sends the
    /// same `R⁻` at every iteration (its exact likelihood message, see
    /// `OutputDenoiser::likelihood_message`), so each product that streams a whole factor is reused when
    /// its input is bit-identical (the result is the same bits as recomputing it).
    ut_minus: ProductCache,
    vt_plus: ProductCache,
}

/// A one-entry cache of a thin product `F^T X` of a factor `F` of the SVD, keyed on the exact
/// bits of `X`. Cloning a layer gives an empty cache.
#[derive(Default)]
struct ProductCache(std::sync::Mutex<Option<(Mat<f64>, Mat<f64>)>>);

impl ProductCache {
    fn product(&self, factor: MatRef<'_, f64>, x: MatRef<'_, f64>) -> Mat<f64> {
        let same = |k: &Mat<f64>| crate::rows::same_bits(k.as_ref(), x);
        if let Ok(guard) = self.0.lock() {
            if let Some((key, value)) = guard.as_ref() {
                if same(key) {
                    return value.clone();
                }
            }
        }
        // Algorithm 1 starts from zero messages (line 1), so the first products often have a
        // zero `X`: every entry of `Fᵀ 0` is a sum of zero products, `+0` from the kernels, so
        // the factor is not streamed for it (`tests` below check the bits against the kernel).
        if (0..x.ncols()).all(|j| (0..x.nrows()).all(|i| x[(i, j)] == 0.0)) {
            return Mat::zeros(factor.ncols(), x.ncols());
        }
        let value = crate::rows::matmul(factor.transpose(), x);
        if let Ok(mut guard) = self.0.lock() {
            *guard = Some((x.to_owned(), value.clone()));
        }
        value
    }
}

impl Clone for ProductCache {
    fn clone(&self) -> Self {
        ProductCache::default()
    }
}

impl std::fmt::Debug for ProductCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProductCache")
    }
}

/// `G⁻_l` before its last product (spec §3.2–3.3): `Ẑ⁻_{l−1} = V_r q (+ R⁺)` and `Σ̄_v`.
pub(crate) struct BackwardRotated {
    /// `q = Ṽ − V_rᵀ R⁺` when the layer has input-only rows (then `Ẑ⁻ = V_r q + R⁺`), else
    /// `q = Ṽ` (`Ẑ⁻ = V_r q`); `r x d`.
    pub q: Mat<f64>,
    /// Whether `R⁺` is added (`n_{l−1} > r`).
    pub complement: bool,
    /// `Σ̄_v` (`d x d`).
    pub cov: DMat,
}

/// Checks that `m` (`n x r`) has orthonormal columns, with a fixed pseudo-random probe
/// `x ∈ R^r`: `‖mᵀ(m x) − x‖ ≤ 1e-8 ‖x‖` (two passes over `m`). An SVD's factors pass with
/// about `1e-15` (the Gram-matrix SVD of the two-layer application with `κ² ε`, a few `1e-14`);
/// unnormalised, transposed-and-padded or unrelated factors fail it.
fn check_orthonormal(what: &str, m: MatRef<'_, f64>) -> Result<()> {
    const TOL: f64 = 1e-8;
    if m.ncols() == 0 {
        return Ok(());
    }
    let mut rng = crate::rng::rng_from_seed(0x6f72_7468_6f6e);
    let x = crate::rng::standard_normal(m.ncols(), 1, &mut rng);
    let back = crate::rows::matmul(m.transpose(), crate::rows::matmul(m, x.as_ref()).as_ref());
    let err = (&back - &x).norm_l2();
    let scale = x.norm_l2();
    if err <= TOL * scale {
        return Ok(());
    }
    Err(Error::invalid(
        what,
        format!(
            "must have orthonormal columns (an SVD's factor): for a probe x, ‖MᵀMx − x‖ / ‖x‖ = \
             {:.3e} > {TOL:e}",
            err / scale
        ),
    ))
}

/// What the paired rows of `G⁺` and `G⁻` in the rotated domain are computed from
/// ([`paired`]).
struct Rotated {
    /// `U_r^T R⁻` (r x d).
    rt_minus: Mat<f64>,
    /// `V_r^T R⁺` (r x d).
    rt_plus: Mat<f64>,
    /// `Γ⁺ T`.
    plus_t: DMat,
    /// `P_eff T`.
    peff_t: DMat,
    /// Shared basis `T = L^{-T} Q` with `Σ_vv(s) = T diag(1/(1 + s² m)) T^T`.
    t: DMat,
    /// Eigenvalues `m` of `L^{-1} P_eff L^{-T}`.
    m: Vec<f64>,
    /// `A = (N + Γ⁻)^{-1}` (`None` when noiseless).
    a: Option<DMat>,
}

impl LinearLayer {
    /// Builds the layer from the weight `W` (`n_l x n_{l−1}`), an optional bias (`n_l x d`) and an
    /// optional noise precision `N` (`None` = noiseless). Computes the thin SVD once.
    pub fn new(
        weight: MatRef<'_, f64>,
        bias: Option<Mat<f64>>,
        noise: Option<Spd>,
        d: usize,
    ) -> Result<Self> {
        if weight.nrows() == 0 || weight.ncols() == 0 {
            return Err(Error::invalid(
                "weight",
                format!("W must be non-empty, got {}", shape_str(weight)),
            ));
        }
        check_finite("weight W", weight)?;
        let start = std::time::Instant::now();
        let (u, s, v) = crate::rows::thin_svd(weight)?;
        let svd_seconds = start.elapsed().as_secs_f64();
        Self::from_svd(u, s, v, bias, noise, d, svd_seconds)
    }

    /// Builds the layer from a thin SVD `W = U diag(s) V^T` (`U`: `n_l x r`, `V`: `n_{l−1} x r`,
    /// orthonormal columns, `r = min(n_l, n_{l−1})`). Every formula of the layer assumes
    /// orthonormal columns; factors that are not are a named error (a random probe `x`: `‖MᵀMx − x‖ ≤ 1e-8 ‖x‖`, two passes over each factor).
    pub fn from_svd(
        u: Mat<f64>,
        s: Vec<f64>,
        v: Mat<f64>,
        bias: Option<Mat<f64>>,
        noise: Option<Spd>,
        d: usize,
        svd_seconds: f64,
    ) -> Result<Self> {
        let (n_out, n_in) = (u.nrows(), v.nrows());
        let r = n_out.min(n_in);
        if d == 0 {
            return Err(Error::invalid("d", "must be at least 1"));
        }
        if s.len() != r || u.ncols() != r || v.ncols() != r {
            return Err(Error::shape(
                "thin SVD factors",
                format!("U {n_out} x {r}, s {r}, V {n_in} x {r}"),
                format!(
                    "U {}, s {}, V {}",
                    shape_str(u.as_ref()),
                    s.len(),
                    shape_str(v.as_ref())
                ),
            ));
        }
        if s.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return Err(Error::invalid(
                "singular values",
                "must be finite and non-negative",
            ));
        }
        // Finite factors: every product with them is then finite, and a zero message's is
        // exactly zero (`ProductCache::product` skips those).
        check_finite("left singular vectors U", u.as_ref())?;
        check_finite("right singular vectors V", v.as_ref())?;
        check_orthonormal("left singular vectors U", u.as_ref())?;
        check_orthonormal("right singular vectors V", v.as_ref())?;
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
        let bias_rot = match &bias {
            Some(b) => crate::rows::matmul(u.transpose(), b.as_ref()),
            None => Mat::zeros(r, d),
        };
        // Streamed every iteration: on huge pages when large (`pages`; `U_r` from `thin_svd`
        // is too).
        let mut vt = crate::pages::zeros(r, n_in);
        vt.copy_from(v.transpose());
        drop(v);
        Ok(LinearLayer {
            n_out,
            n_in,
            d,
            u: std::sync::Arc::new(u),
            s,
            vt: std::sync::Arc::new(vt),
            bias,
            bias_rot,
            noise,
            svd_seconds,
            ut_minus: ProductCache::default(),
            vt_plus: ProductCache::default(),
        })
    }

    /// The layer's description for the state evolution: shape, singular values, noise and the
    /// bias second moment `(1/n_l) B^T B`.
    pub fn spec(&self) -> LinearSpec {
        let bias_moment = match &self.bias {
            Some(b) => crate::rows::cross_moment(b.as_ref(), b.as_ref()),
            None => DMat::zeros(self.d, self.d),
        };
        LinearSpec {
            n_out: self.n_out,
            n_in: self.n_in,
            d: self.d,
            singular_values: self.s.clone(),
            weights: Vec::new(),
            noise: self.noise.clone(),
            bias_moment,
        }
    }

    /// Seconds spent in the SVD at construction.
    pub fn svd_seconds(&self) -> f64 {
        self.svd_seconds
    }
    /// The noise precision `N` (`None` = noiseless).
    pub fn noise(&self) -> Option<&Spd> {
        self.noise.as_ref()
    }
    /// The bias `B`, if any.
    pub fn bias(&self) -> Option<&Mat<f64>> {
        self.bias.as_ref()
    }
    /// `(n_l, n_{l−1})`.
    pub fn shape(&self) -> (usize, usize) {
        (self.n_out, self.n_in)
    }
    /// Left singular vectors `U_r` (`n_l x r`).
    pub fn u(&self) -> MatRef<'_, f64> {
        (*self.u).as_ref()
    }
    /// `U_r`, shared (the solver's lazy estimates hold it to form `U_r C` on demand).
    pub(crate) fn u_shared(&self) -> std::sync::Arc<Mat<f64>> {
        std::sync::Arc::clone(&self.u)
    }
    /// `U_rᵀ B` (`r x d`, zero without a bias).
    pub(crate) fn bias_rotated(&self) -> MatRef<'_, f64> {
        self.bias_rot.as_ref()
    }
    /// `U_rᵀ X` through the layer's one-entry cache (the product the forward call uses for
    /// `X = R⁻`: priming it with the observation of an exact likelihood message is free).
    pub(crate) fn ut_product(&self, x: MatRef<'_, f64>) -> Mat<f64> {
        self.ut_minus.product(self.u(), x)
    }
    /// Right singular vectors `V_r` (`n_{l−1} x r`).
    pub fn v(&self) -> MatRef<'_, f64> {
        (*self.vt).as_ref().transpose()
    }
    /// `V_rᵀ` (`r x n_{l−1}`, column-major: column `i` is row `i` of `V_r`).
    pub fn vt(&self) -> MatRef<'_, f64> {
        (*self.vt).as_ref()
    }
    /// `W X` computed from the SVD (`U diag(s) V^T X`).
    pub fn apply(&self, x: MatRef<'_, f64>) -> Mat<f64> {
        let mut t = crate::rows::matmul((*self.vt).as_ref(), x);
        for (i, &si) in self.s.iter().enumerate() {
            for j in 0..t.ncols() {
                t[(i, j)] *= si;
            }
        }
        crate::rows::matmul(self.u(), t.as_ref())
    }

    /// `V_rᵀ X` through the layer's one-entry cache (the product the forward and backward calls
    /// use for `X = R⁺`).
    pub(crate) fn vt_product(&self, x: MatRef<'_, f64>) -> Mat<f64> {
        self.vt_plus.product((*self.vt).as_ref().transpose(), x)
    }

    /// `G⁻_l` without its final product with `V_r`: the solver's fused pass computes
    /// `Ẑ⁻_{l−1} = V_r q (+ R⁺)` block by block. `vt_plus`, if given, is `V_rᵀ R⁺` (computed by
    /// the caller without streaming `V_r`, e.g. by linearity from earlier products); otherwise
    /// it is computed (through the cache, whose entries are always true products).
    pub(crate) fn backward_rotated(
        &self,
        minus: &Message,
        plus: &Message,
        vt_plus: Option<&Mat<f64>>,
    ) -> Result<BackwardRotated> {
        let rot = self.solve(minus, plus, vt_plus)?;
        let r = self.s.len();
        let n_comp = self.n_in - r;
        // q = Ṽ − V_rᵀR⁺ with input-only rows, else Ṽ.
        let q = self.paired(
            &rot,
            Tail::Backward {
                complement: n_comp > 0,
            },
        );
        let sum_vv = self.basis_sum(&rot, |s2, mj| 1.0 / (1.0 + s2 * mj));
        let cov = sym(&((sum_vv + plus.precision.inverse() * n_comp as f64) / self.n_in as f64));
        Ok(BackwardRotated {
            q,
            complement: n_comp > 0,
            cov,
        })
    }

    fn check_messages(&self, minus: &Message, plus: &Message) -> Result<()> {
        minus.check("backward message R⁻ into linear layer", self.n_out, self.d)?;
        plus.check("forward message R⁺ into linear layer", self.n_in, self.d)?;
        check_finite("backward message R⁻ into linear layer", minus.mean.as_ref())?;
        check_finite("forward message R⁺ into linear layer", plus.mean.as_ref())?;
        Ok(())
    }

    /// The paired rows' `v̂ = (r⁺Γ⁺ + s(r⁻ − b)P_eff) Σ_vv(s)` (spec §3.1(a), §3.3) followed by
    /// `tail`, in one pass over the rows ([`paired`]).
    fn paired(&self, rot: &Rotated, tail: Tail<'_>) -> Mat<f64> {
        Paired {
            s: &self.s,
            rt_plus: rot.rt_plus.as_ref(),
            rt_minus: rot.rt_minus.as_ref(),
            bias_rot: self.bias_rot.as_ref(),
            plus_t: &rot.plus_t,
            peff_t: &rot.peff_t,
            t_t: &rot.t.transpose(),
            m: &rot.m,
            tail,
        }
        .run()
    }

    /// What the paired rows are solved from (spec §3.1(a), §3.3): the rotated messages and the
    /// shared basis.
    fn solve(
        &self,
        minus: &Message,
        plus: &Message,
        vt_plus: Option<&Mat<f64>>,
    ) -> Result<Rotated> {
        self.check_messages(minus, plus)?;
        let gm = minus.precision.matrix();
        let gp = &plus.precision;
        let (p_eff, a) = effective_precision(self.noise.as_ref(), gm)?;
        let (t, m) = shared_basis(gp, &p_eff);

        let rt_minus = self.ut_minus.product(self.u(), minus.mean.as_ref());
        let rt_plus = match vt_plus {
            Some(x) => {
                check_shape("V_rᵀ R⁺", x.as_ref(), self.s.len(), self.d)?;
                x.clone()
            }
            None => self
                .vt_plus
                .product((*self.vt).as_ref().transpose(), plus.mean.as_ref()),
        };
        // a_i = r⁺_i Γ⁺ + s_i (r⁻_i − b_i) P_eff, in the basis T (then scaled by 1/(1 + s_i² m_j),
        // `paired`).
        Ok(Rotated {
            rt_minus,
            rt_plus,
            plus_t: gp.matrix() * &t,
            peff_t: &p_eff * &t,
            t,
            m,
            a,
        })
    }

    /// `T diag(Σ_i w(s_i)) T^T` for a weight function of `(s², m_j)`.
    fn basis_sum(&self, rot: &Rotated, w: impl Fn(f64, f64) -> f64) -> DMat {
        let diag: Vec<f64> = rot
            .m
            .iter()
            .map(|&mj| self.s.iter().map(|&si| w(si * si, mj)).sum::<f64>())
            .collect();
        &rot.t * DMat::from_diagonal(&nalgebra::DVector::from_vec(diag)) * rot.t.transpose()
    }
}

/// `P_eff = (N^{-1} + (Γ⁻)^{-1})^{-1} = Γ⁻ (N + Γ⁻)^{-1} N` and `A = (N + Γ⁻)^{-1}`; `P_eff = Γ⁻`
/// and no `A` when the layer is noiseless (spec §3.1, `docs/linear-layer.md`).
pub(crate) fn effective_precision(noise: Option<&Spd>, gm: &DMat) -> Result<(DMat, Option<DMat>)> {
    Ok(match noise {
        Some(nz) => {
            let a = Spd::from_symmetric("N + Γ⁻", nz.matrix() + gm)?.inverse();
            (sym(&(gm * &a * nz.matrix())), Some(a))
        }
        None => (gm.clone(), None),
    })
}

/// The basis shared by all rows (spec §3.3, `docs/linear-layer.md`): `Γ⁺ = L Lᵀ`,
/// `L^{-1} P_eff L^{-T} = Q diag(m) Qᵀ`, `T = L^{-T} Q`, so that `Tᵀ Γ⁺ T = I` and
/// `Tᵀ P_eff T = diag(m)`. Returns `(T, m)` (`m` floored at 0).
pub(crate) fn shared_basis(gp: &Spd, p_eff: &DMat) -> (DMat, Vec<f64>) {
    // nalgebra's column solves `Y = L^{-1} P_eff`, `X = L^{-1} Yᵀ`, `T = L^{-T} Q`, done on the
    // transposes by the row solves of `spd` (the same operations per column, so the same
    // bits): `Yᵀ = P_effᵀ L^{-T}`, `Xᵀ = Y L^{-T}`, `Tᵀ = Qᵀ L^{-1}`; `sym(Xᵀ) = sym(X)`.
    let l = gp.cholesky_lower();
    let mut yt = p_eff.transpose();
    forward_rows(l, &mut yt);
    let mut xt = yt.transpose();
    forward_rows(l, &mut xt);
    let eig = SymmetricEigen::new(sym(&xt));
    let m: Vec<f64> = eig.eigenvalues.iter().map(|&v| v.max(0.0)).collect();
    let mut tt = eig.eigenvectors.transpose();
    backward_rows(l, &mut tt);
    (tt.transpose(), m)
}

impl Factor for LinearLayer {
    fn describe(&self) -> String {
        format!(
            "linear layer {} x {}{}{}",
            self.n_out,
            self.n_in,
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

impl LayerShape for LinearLayer {
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

impl LayerDenoiser for LinearLayer {
    /// `G⁺_l` (spec §3.1–3.3): `û = ((s v̂ + b) N + r⁻Γ⁻)(N + Γ⁻)^{-1}` on paired rows (noiseless:
    /// `û = s v̂ + b`), `û = (bN + r⁻Γ⁻)(N + Γ⁻)^{-1}` on output-only rows (noiseless: `b`).
    fn forward(&self, minus: &Message, plus: &Message) -> Result<Belief> {
        self.forward_with(minus, plus, None)
    }

    /// `G⁻_l` (spec §3.1–3.3): `v̂` on paired rows, `v̂ = r⁺` on input-only rows.
    fn backward(&self, minus: &Message, plus: &Message) -> Result<Belief> {
        let b = self.backward_rotated(minus, plus, None)?;
        let mut mean = crate::rows::matmul((*self.vt).as_ref().transpose(), b.q.as_ref());
        if b.complement {
            mean += &plus.mean;
        }
        Ok(Belief::new(mean, b.cov))
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// `G⁺_l` before its product with `U_r` (spec §3.1–3.3): the estimate of `Z_l` is
/// `Ẑ⁺_l = U_r C (+ R⁻ K_r + B K_b)`, the last two terms only when `W` has output-only rows
/// (`n_l > r`). The solver keeps an estimate of the last variable in this form
/// (`solver/lazy.rs`) and forms `U_r C` only when it is asked for.
pub(crate) struct ForwardParts {
    /// `C` (`r x d`): `Ũ − U_rᵀ M⁻` with output-only rows, else `Ũ`.
    pub c: Mat<f64>,
    /// Whether `W` has output-only rows (`n_l > r`): then `Ẑ⁺ = U_r C + M⁻`.
    pub complement: bool,
    /// `K_r = Γ⁻ (N + Γ⁻)^{-1}`, the factor of `R⁻` in `M⁻` (noisy layers; `None` when
    /// noiseless, where `M⁻ = B`).
    pub minus_factor: Option<DMat>,
    /// `K_b = N (N + Γ⁻)^{-1}` (noisy) or `I` (noiseless), the factor of `B` in `M⁻` (`None`
    /// without a bias).
    pub bias_factor: Option<DMat>,
    /// `Σ̄_u` (`d x d`).
    pub cov: DMat,
}

impl LinearLayer {
    /// `G⁺_l` ([`LayerDenoiser::forward`]) with `V_rᵀ R⁺` given by the caller (`None`: computed,
    /// through the cache); see [`LinearLayer::backward_rotated`].
    pub(crate) fn forward_with(
        &self,
        minus: &Message,
        plus: &Message,
        vt_plus: Option<&Mat<f64>>,
    ) -> Result<Belief> {
        let parts = self.forward_parts(minus, plus, vt_plus)?;
        let mean = if parts.complement {
            // Ẑ⁺ = U (Ũ − U^T M⁻) + M⁻ with M⁻ = (B N + R⁻ Γ⁻)(N + Γ⁻)^{-1} (noiseless: B).
            let m_full = match &parts.minus_factor {
                Some(kr) => {
                    let mut mm = mul_small(minus.mean.as_ref(), kr);
                    if let (Some(b), Some(kb)) = (&self.bias, &parts.bias_factor) {
                        mm += &mul_small(b.as_ref(), kb);
                    }
                    mm
                }
                None => self
                    .bias
                    .clone()
                    .unwrap_or_else(|| Mat::zeros(self.n_out, self.d)),
            };
            &crate::rows::matmul(self.u(), parts.c.as_ref()) + &m_full
        } else {
            crate::rows::matmul(self.u(), parts.c.as_ref())
        };
        Ok(Belief::new(mean, parts.cov))
    }

    /// `G⁺_l` up to its product with `U_r` ([`ForwardParts`]).
    pub(crate) fn forward_parts(
        &self,
        minus: &Message,
        plus: &Message,
        vt_plus: Option<&Mat<f64>>,
    ) -> Result<ForwardParts> {
        let rot = self.solve(minus, plus, vt_plus)?;
        let r = self.s.len();
        let complement = self.n_out > r;
        let gm = minus.precision.matrix();
        // Û on paired rows minus U^T M⁻ (the complement mean rotated onto the paired subspace)
        // when there are output-only rows (`paired`).
        let (c, sum_uu, comp_cov, minus_factor, bias_factor) = match (&self.noise, &rot.a) {
            (Some(nz), Some(a)) => {
                let na = nz.matrix() * a;
                let ga = gm * a;
                let c = self.paired(
                    &rot,
                    Tail::ForwardNoisy {
                        na: &na,
                        ga: &ga,
                        complement,
                    },
                );
                // Σ_uu(s) = A + s² A N Σ_vv(s) N A
                let inner = self.basis_sum(&rot, |s2, mj| s2 / (1.0 + s2 * mj));
                let sum = a * (r as f64) + a * nz.matrix() * inner * nz.matrix() * a;
                let kb = self.bias.as_ref().map(|_| na.clone());
                (c, sum, a.clone(), Some(ga), kb)
            }
            _ => {
                // Noiseless: Σ_uu(s) = s² Σ_vv(s); output-only rows are known exactly (Σ = 0).
                let c = self.paired(&rot, Tail::ForwardNoiseless { complement });
                let sum = self.basis_sum(&rot, |s2, mj| s2 / (1.0 + s2 * mj));
                let kb = self.bias.as_ref().map(|_| DMat::identity(self.d, self.d));
                (c, sum, DMat::zeros(self.d, self.d), None, kb)
            }
        };
        let n_comp = self.n_out - r;
        let cov = sym(&((sum_uu + comp_cov * n_comp as f64) / self.n_out as f64));
        Ok(ForwardParts {
            c,
            complement,
            minus_factor,
            bias_factor,
            cov,
        })
    }
}

impl LayerSampler for LinearLayer {
    fn sample(&self, z_prev: MatRef<'_, f64>, rng: &mut Rng) -> Result<Mat<f64>> {
        check_shape("input of linear layer", z_prev, self.n_in, self.d)?;
        let mut z = self.apply(z_prev);
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

impl LayerSe for LinearLayer {
    fn singular_values(&self) -> Option<&[f64]> {
        Some(&self.s)
    }

    /// Closed form given the singular values (spec §6.2 (Lin)).
    fn se_forward(
        &self,
        minus: &SeBackward,
        plus_in: &SeForward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeForward>> {
        self.spec().se_forward(minus, plus_in, ctx, prev)
    }

    /// Closed form given the singular values (spec §6.2 (Lin)).
    fn se_backward(
        &self,
        minus: &SeBackward,
        plus_in: &SeForward,
        ctx: &SeContext<'_>,
        prev: Option<&Spd>,
    ) -> Result<SeStep<SeBackward>> {
        self.spec().se_backward(minus, plus_in, ctx, prev)
    }
}

#[cfg(test)]
mod tests {
    use super::ProductCache;
    use crate::rng::{rng_from_seed, standard_normal};
    use faer::Mat;

    /// `shared_basis` through the `spd` row solves has the bits of nalgebra's column solves.
    #[test]
    fn shared_basis_has_the_bits_of_nalgebras_solves() {
        use super::{shared_basis, DMat, Spd, SymmetricEigen};
        let mut rng = rng_from_seed(41);
        for d in [1usize, 2, 4, 9, 10, 17] {
            let b = standard_normal(d, d, &mut rng);
            let c = standard_normal(d, d, &mut rng);
            let g = DMat::from_fn(d, d, |i, j| (0..d).map(|k| b[(i, k)] * b[(j, k)]).sum())
                + DMat::identity(d, d) * 0.3;
            // Not exactly symmetric, as a computed P_eff may be.
            let p = DMat::from_fn(d, d, |i, j| c[(i, j)] + c[(j, i)] + 1e-9 * c[(i, j)]);
            let gp = Spd::from_symmetric("g", g).unwrap();
            let l = gp.cholesky_lower();
            let mut y = p.clone();
            l.solve_lower_triangular_mut(&mut y);
            let mut x = y.transpose();
            l.solve_lower_triangular_mut(&mut x);
            let eig = SymmetricEigen::new(crate::spd::sym(&x));
            let mut t = eig.eigenvectors.clone();
            l.tr_solve_lower_triangular_mut(&mut t);
            let (got_t, got_m) = shared_basis(&gp, &p);
            assert!(got_t
                .iter()
                .zip(t.iter())
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            let m: Vec<f64> = eig.eigenvalues.iter().map(|&v| v.max(0.0)).collect();
            assert_eq!(got_m, m, "d = {d}");
        }
    }

    /// Non-finite SVD factors are a named error (so a zero message's product, skipped, would
    /// have been zero).
    #[test]
    fn non_finite_svd_factors_are_rejected() {
        let u = Mat::from_fn(3, 2, |i, j| if (i, j) == (2, 1) { f64::NAN } else { 0.5 });
        let v = Mat::<f64>::identity(2, 2);
        let err = super::LinearLayer::from_svd(u, vec![1.0, 0.5], v.clone(), None, None, 1, 0.0)
            .expect_err("NaN in U");
        assert!(err.to_string().contains("left singular vectors U"), "{err}");
        let u = Mat::<f64>::identity(2, 2);
        let mut v = v;
        v[(0, 1)] = f64::INFINITY;
        let err = super::LinearLayer::from_svd(u, vec![1.0, 0.5], v, None, None, 1, 0.0)
            .expect_err("Inf in V");
        assert!(
            err.to_string().contains("right singular vectors V"),
            "{err}"
        );
    }

    /// Factors without orthonormal columns are a named error; an SVD's pass.
    #[test]
    fn non_orthonormal_svd_factors_are_rejected() {
        let mut rng = crate::rng::rng_from_seed(11);
        let w = crate::rng::standard_normal(30, 12, &mut rng);
        let svd = w.thin_svd().expect("svd");
        let (u, v) = (svd.U().to_owned(), svd.V().to_owned());
        let s: Vec<f64> = (0..12).map(|i| svd.S()[i]).collect();
        super::LinearLayer::from_svd(u.clone(), s.clone(), v.clone(), None, None, 1, 0.0)
            .expect("an SVD's factors");
        // V scaled by 1.001 (unnormalised columns): an error about V.
        let err = super::LinearLayer::from_svd(
            u.clone(),
            s.clone(),
            &v * faer::Scale(1.001),
            None,
            None,
            1,
            0.0,
        )
        .expect_err("scaled V");
        let msg = err.to_string();
        assert!(
            msg.contains("right singular vectors V") && msg.contains("orthonormal"),
            "{msg}"
        );
        // U replaced by W's first 12 columns (not orthonormal): an error about U.
        let err = super::LinearLayer::from_svd(
            w.as_ref().subcols(0, 12).to_owned(),
            s,
            v,
            None,
            None,
            1,
            0.0,
        )
        .expect_err("W for U");
        assert!(err.to_string().contains("left singular vectors U"), "{err}");
    }

    /// The zero-input shortcut of [`ProductCache::product`] gives the kernels' bits: `+0`
    /// everywhere, for both layouts of the factor (`U_r`, column-major, and `V_r` as the
    /// transpose of the stored `V_rᵀ`), zeros of both signs in `X`, and sizes on both sides of
    /// the parallel split of `rows::matmul`.
    #[test]
    fn zero_input_products_have_the_kernel_bits() {
        let mut rng = rng_from_seed(41);
        for &(n, r, d) in &[
            (7, 3, 1),
            (300, 150, 4),
            (1100, 1000, 1),
            (400, 64, 8),
            (50, 50, 9),
        ] {
            let f = standard_normal(n, r, &mut rng);
            let f_t = standard_normal(r, n, &mut rng);
            let x = Mat::from_fn(n, d, |i, j| if (i + j) % 3 == 0 { -0.0 } else { 0.0 });
            for factor in [f.as_ref(), f_t.as_ref().transpose()] {
                let kernel = crate::rows::matmul(factor.transpose(), x.as_ref());
                let cached = ProductCache::default().product(factor, x.as_ref());
                assert_eq!((cached.nrows(), cached.ncols()), (r, d));
                for j in 0..d {
                    for i in 0..r {
                        assert_eq!(kernel[(i, j)].to_bits(), 0, "kernel ({n}, {r}, {d})");
                        assert_eq!(cached[(i, j)].to_bits(), 0, "cache ({n}, {r}, {d})");
                    }
                }
            }
            // A non-zero entry is a true product.
            let mut y = x.clone();
            y[(n / 2, 0)] = 1.5;
            let cached = ProductCache::default().product(f.as_ref(), y.as_ref());
            let kernel = crate::rows::matmul(f.transpose(), y.as_ref());
            assert!((0..r).all(|i| cached[(i, 0)].to_bits() == kernel[(i, 0)].to_bits()));
            assert!((0..r).any(|i| cached[(i, 0)] != 0.0));
        }
    }
}
