//! Helpers shared by the property tests: random SPD / orthogonal matrices, conversions between
//! faer and nalgebra matrices, and relative errors. Every random draw is seeded by the caller.
#![allow(dead_code)]

use faer::Mat;
use mlmatvamp::prelude::*;
use nalgebra::DMatrix;

/// A random, non-diagonal SPD `d x d` matrix with eigenvalues of order `scale`.
pub fn random_spd(d: usize, scale: f64, rng: &mut Rng) -> DMat {
    let g = to_dmat(&standard_normal(d, d, rng));
    (&g * g.transpose()) * (scale / d as f64) + DMat::identity(d, d) * (0.3 * scale)
}

/// A random orthogonal `d x d` matrix (QR of a Gaussian matrix with the signs fixed by `diag R`,
/// i.e. Haar distributed).
pub fn random_orthogonal(d: usize, rng: &mut Rng) -> DMat {
    let g = to_dmat(&standard_normal(d, d, rng));
    let qr = g.qr();
    let (q, r) = (qr.q(), qr.r());
    let signs = DMat::from_diagonal(&nalgebra::DVector::from_fn(d, |i, _| {
        if r[(i, i)] < 0.0 {
            -1.0
        } else {
            1.0
        }
    }));
    q * signs
}

/// A random SPD matrix `Q diag(c 0.5^j) Q^T` whose eigenvalues have the given mean.
pub fn geometric_spd(d: usize, mean_eig: f64, rng: &mut Rng) -> DMat {
    let q = random_orthogonal(d, rng);
    let weights: Vec<f64> = (0..d).map(|j| 0.5f64.powi(j as i32)).collect();
    let c = mean_eig * d as f64 / weights.iter().sum::<f64>();
    let diag = DMat::from_diagonal(&nalgebra::DVector::from_iterator(
        d,
        weights.iter().map(|w| c * w),
    ));
    let m = &q * diag * q.transpose();
    (&m + m.transpose()) * 0.5
}

/// faer → nalgebra.
pub fn to_dmat(m: &Mat<f64>) -> DMatrix<f64> {
    DMatrix::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)])
}

/// nalgebra → faer.
pub fn to_mat(m: &DMatrix<f64>) -> Mat<f64> {
    Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)])
}

/// Column `j` of an `n x d` matrix as an `n x 1` matrix.
pub fn column(m: &Mat<f64>, j: usize) -> Mat<f64> {
    Mat::from_fn(m.nrows(), 1, |i, _| m[(i, j)])
}

/// `||a − b||_F / ||b||_F` (absolute error when `b = 0`).
pub fn rel_err(a: &DMatrix<f64>, b: &DMatrix<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape(), "shape mismatch in rel_err");
    let nb = b.norm();
    let diff = (a - b).norm();
    if nb > 0.0 {
        diff / nb
    } else {
        diff
    }
}

/// [`rel_err`] on faer matrices.
pub fn rel_err_mat(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    rel_err(&to_dmat(a), &to_dmat(b))
}

/// `W` with i.i.d. `N(0, 1/m)` entries (`n x m`).
pub fn gaussian_w(n: usize, m: usize, rng: &mut Rng) -> Mat<f64> {
    standard_normal(n, m, rng) * faer::Scale(1.0 / (m as f64).sqrt())
}

/// `(R⁺Γ⁺ + R⁻Γ⁻)(Γ⁺ + Γ⁻)^{-1}` for two messages about the same variable.
pub fn combine(plus: &Message, minus: &Message) -> DMatrix<f64> {
    let gp = plus.precision.matrix();
    let gm = minus.precision.matrix();
    let lam = gp + gm;
    let rhs = to_dmat(&plus.mean) * gp + to_dmat(&minus.mean) * gm;
    // Solve X Λ = rhs, i.e. Λ X^T = rhs^T (Λ symmetric).
    let chol = lam.cholesky().expect("Γ⁺ + Γ⁻ is SPD");
    chol.solve(&rhs.transpose()).transpose()
}

/// The inverse of a (non-singular) covariance, symmetrised.
pub fn inverse(c: &DMat) -> DMat {
    let inv = c.clone().try_inverse().expect("invertible");
    (&inv + inv.transpose()) * 0.5
}

/// The largest off-diagonal entry relative to the largest diagonal entry.
pub fn off_diagonal_ratio(m: &DMat) -> f64 {
    let mut off = 0.0f64;
    let mut diag = 0.0f64;
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            if i == j {
                diag = diag.max(m[(i, j)].abs());
            } else {
                off = off.max(m[(i, j)].abs());
            }
        }
    }
    off / diag
}

/// The fixed-point residuals of spec §8.2.2 for every variable `l`, as the largest of
/// `||Ẑ± − (R⁺Γ⁺ + R⁻Γ⁻)(Γ⁺+Γ⁻)^{-1}||_F / ||·||_F` (both beliefs) and
/// `||Λ± − (Γ⁺+Γ⁻)||_F / ||Γ⁺+Γ⁻||_F` with `Λ = Σ̄^{-1}` (both beliefs).
/// Returns `(mean residual, precision residual)` per variable.
pub fn fixed_point_residuals(state: &impl Messages) -> Vec<(f64, f64)> {
    (0..state.depth())
        .map(|l| {
            let plus = state.plus(l).expect("forward message");
            let minus = state.minus(l).expect("backward message");
            let target = combine(plus, minus);
            let lam = plus.precision.matrix() + minus.precision.matrix();
            let mut mean_res = 0.0f64;
            let mut prec_res = 0.0f64;
            for b in [state.estimate_plus(l), state.estimate_minus(l)] {
                let b = b.expect("belief");
                mean_res = mean_res.max(rel_err(&to_dmat(&b.mean), &target));
                prec_res = prec_res.max(rel_err(&inverse(&b.cov), &lam));
            }
            (mean_res, prec_res)
        })
        .collect()
}

/// The worst residual of [`fixed_point_residuals`] over all variables (NaN counts as a failure:
/// it is returned as infinity).
pub fn worst_fixed_point_residual(state: &impl Messages) -> f64 {
    fixed_point_residuals(state)
        .iter()
        .map(|&(a, b)| a.max(b))
        .fold(
            0.0f64,
            |m, x| if x.is_nan() { f64::INFINITY } else { m.max(x) },
        )
}

/// Read access to the messages and beliefs of an iterate: the solver's [`State`], or the plain
/// vectors of a hand-written loop ([`HandState`]).
pub trait Messages {
    /// `L`.
    fn depth(&self) -> usize;
    /// `(R⁺_l, Γ⁺_l)`.
    fn plus(&self, l: usize) -> Option<&Message>;
    /// `(R⁻_l, Γ⁻_l)`.
    fn minus(&self, l: usize) -> Option<&Message>;
    /// `Ẑ⁺_l`.
    fn estimate_plus(&self, l: usize) -> Option<&Belief>;
    /// `Ẑ⁻_l`.
    fn estimate_minus(&self, l: usize) -> Option<&Belief>;
}

impl Messages for State {
    fn depth(&self) -> usize {
        State::depth(self)
    }
    fn plus(&self, l: usize) -> Option<&Message> {
        State::plus(self, l)
    }
    fn minus(&self, l: usize) -> Option<&Message> {
        State::minus(self, l)
    }
    fn estimate_plus(&self, l: usize) -> Option<&Belief> {
        State::estimate_plus(self, l)
    }
    fn estimate_minus(&self, l: usize) -> Option<&Belief> {
        State::estimate_minus(self, l)
    }
}

/// The messages of a hand-written Algorithm 1 loop, as plain vectors.
#[derive(Clone, Debug)]
pub struct HandState {
    pub plus: Vec<Option<Message>>,
    pub minus: Vec<Message>,
    pub est_plus: Vec<Option<Belief>>,
    pub est_minus: Vec<Option<Belief>>,
    pub iteration: usize,
}

impl HandState {
    /// Algorithm 1, line 1 for `net`.
    pub fn new(net: &Network, gamma_init: f64) -> Self {
        let l = net.depth();
        HandState {
            plus: vec![None; l],
            minus: net
                .rows()
                .iter()
                .map(|&n| Message::zero(n, net.dim(), gamma_init).unwrap())
                .collect(),
            est_plus: vec![None; l],
            est_minus: vec![None; l],
            iteration: 0,
        }
    }
}

impl Messages for HandState {
    fn depth(&self) -> usize {
        self.minus.len()
    }
    fn plus(&self, l: usize) -> Option<&Message> {
        self.plus.get(l)?.as_ref()
    }
    fn minus(&self, l: usize) -> Option<&Message> {
        self.minus.get(l)
    }
    fn estimate_plus(&self, l: usize) -> Option<&Belief> {
        self.est_plus.get(l)?.as_ref()
    }
    fn estimate_minus(&self, l: usize) -> Option<&Belief> {
        self.est_minus.get(l)?.as_ref()
    }
}

/// Two matrices agree to `tol` relative (Frobenius norm of the difference against the larger
/// norm); `what` names them in the failure.
pub fn mats_agree(what: &str, a: &Mat<f64>, b: &Mat<f64>, tol: f64) {
    assert_eq!(
        (a.nrows(), a.ncols()),
        (b.nrows(), b.ncols()),
        "{what}: shape"
    );
    let diff = (a - b).norm_l2();
    let scale = a.norm_l2().max(b.norm_l2()).max(f64::MIN_POSITIVE);
    assert!(
        diff <= tol * scale,
        "{what}: relative difference {:.3e}",
        diff / scale
    );
}

/// Two small matrices agree to `tol` relative.
pub fn small_agree(what: &str, a: &DMatrix<f64>, b: &DMatrix<f64>, tol: f64) {
    let diff = (a - b).norm();
    let scale = a.norm().max(b.norm()).max(f64::MIN_POSITIVE);
    assert!(
        diff <= tol * scale,
        "{what}: relative difference {:.3e}",
        diff / scale
    );
}

/// Every message, estimate and precision of two solver states agree to `tol` (formed through
/// the state's accessors).
pub fn states_agree(tag: &str, a: &State, b: &State, tol: f64) {
    for l in 0..a.depth() {
        let (pa, pb) = (a.plus(l).expect("plus"), b.plus(l).expect("plus"));
        mats_agree(&format!("{tag} R+_{l}"), &pa.mean, &pb.mean, tol);
        small_agree(
            &format!("{tag} Γ+_{l}"),
            pa.precision.matrix(),
            pb.precision.matrix(),
            tol,
        );
        let (ma, mb) = (a.minus(l).expect("minus"), b.minus(l).expect("minus"));
        mats_agree(&format!("{tag} R-_{l}"), &ma.mean, &mb.mean, tol);
        small_agree(
            &format!("{tag} Γ-_{l}"),
            ma.precision.matrix(),
            mb.precision.matrix(),
            tol,
        );
        for (dir, ea, eb) in [
            ("Ẑ+", a.estimate_plus(l), b.estimate_plus(l)),
            ("Ẑ-", a.estimate_minus(l), b.estimate_minus(l)),
        ] {
            let (ea, eb) = (ea.expect("estimate"), eb.expect("estimate"));
            mats_agree(&format!("{tag} {dir}_{l}"), &ea.mean, &eb.mean, tol);
            small_agree(&format!("{tag} Σ̄ of {dir}_{l}"), &ea.cov, &eb.cov, tol);
        }
    }
}
