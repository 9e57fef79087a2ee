//! Small dense `d x d` matrices: the symmetric positive-definite type [`Spd`] and helpers.
//!
//! Precisions and covariances in ML-Mat-VAMP are `d x d` matrices that multiply row vectors on
//! the right (`x Γ`, spec §0). [`Spd`] owns the operations every message needs: validation,
//! symmetrisation, Cholesky solves, inverse, eigenvalue clipping (spec §2.4) and log-det.
//! Covariances that may be singular (noiseless layers) are plain [`DMat`]s.

use crate::error::{Error, Result};
use nalgebra::{DMatrix, SymmetricEigen};

/// A small dense matrix (`d x d` or `2d x 2d`).
pub type DMat = DMatrix<f64>;

/// `sym(A) = (A + A^T)/2` (spec §0).
pub(crate) fn sym(a: &DMat) -> DMat {
    // Entry by entry `(a_ij + a_ji) · 0.5`, as `(A + Aᵀ) * 0.5` computes it, without the
    // transposed copy and the sum's allocation.
    let n = a.nrows();
    debug_assert_eq!(n, a.ncols());
    DMat::from_fn(n, n, |i, j| (a[(i, j)] + a[(j, i)]) * 0.5)
}

/// Largest absolute entry of a matrix.
pub(crate) fn max_abs(a: &DMat) -> f64 {
    a.iter().fold(0.0_f64, |m, x| m.max(x.abs()))
}

/// Checks that every entry is finite.
pub fn check_finite_dmat(what: &str, a: &DMat) -> Result<()> {
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            let x = a[(i, j)];
            if !x.is_finite() {
                return Err(Error::NonFinite {
                    what: what.to_string(),
                    detail: format!("entry ({i}, {j}) is {x}"),
                });
            }
        }
    }
    Ok(())
}

/// Builds a [`DMat`] from nested rows, checking that it is `d x d` when `d` is given.
pub fn dmat_from_rows(what: &str, rows: &[Vec<f64>], d: Option<usize>) -> Result<DMat> {
    let n = rows.len();
    let m = rows.first().map_or(0, |r| r.len());
    if let Some(d) = d {
        if n != d || rows.iter().any(|r| r.len() != d) {
            let got = if rows.iter().all(|r| r.len() == m) {
                format!("{n} x {m}")
            } else {
                format!("{n} rows of unequal lengths")
            };
            return Err(Error::shape(what, format!("{d} x {d}"), got));
        }
    } else if rows.iter().any(|r| r.len() != m) {
        return Err(Error::shape(
            what,
            "rows of equal length",
            "rows of unequal lengths",
        ));
    }
    let a = DMat::from_fn(n, m, |i, j| rows[i][j]);
    check_finite_dmat(what, &a)?;
    Ok(a)
}

/// Converts a small matrix to nested rows (for JSON output).
pub fn dmat_to_rows(a: &DMat) -> Vec<Vec<f64>> {
    (0..a.nrows())
        .map(|i| (0..a.ncols()).map(|j| a[(i, j)]).collect())
        .collect()
}

/// A symmetric positive-definite `d x d` matrix (a precision, or a covariance known to be
/// non-singular).
///
/// The invariant (finite, exactly symmetric, Cholesky succeeds) is established by every
/// constructor, so [`Spd::inverse`] and [`Spd::cholesky_lower`] never fail, and
/// [`Spd::solve_right`] fails only on a shape mismatch.
#[derive(Clone, Debug, PartialEq)]
pub struct Spd {
    m: DMat,
    chol: DMat,
}

impl Spd {
    /// Validates a user-supplied matrix: square `d x d` (if `d` is given), finite, symmetric to
    /// a relative tolerance of `1e-8`, and positive definite. `what` names the matrix in errors.
    pub fn new(what: &str, m: DMat, d: Option<usize>) -> Result<Self> {
        if m.nrows() != m.ncols() || d.is_some_and(|d| m.nrows() != d) {
            let d = d.unwrap_or(m.nrows());
            return Err(Error::shape(
                what,
                format!("{d} x {d}"),
                format!("{} x {}", m.nrows(), m.ncols()),
            ));
        }
        check_finite_dmat(what, &m)?;
        let scale = max_abs(&m).max(f64::MIN_POSITIVE);
        let asym = max_abs(&(&m - m.transpose()));
        if asym > 1e-8 * scale {
            return Err(Error::NotSymmetric {
                what: what.to_string(),
                detail: format!("max |A - A^T| = {asym:.3e} (largest entry {scale:.3e})"),
            });
        }
        Self::from_symmetric(what, sym(&m))
    }

    /// Wraps a matrix that is symmetric by construction; fails if it is not positive definite.
    pub fn from_symmetric(what: &str, m: DMat) -> Result<Self> {
        let m = sym(&m);
        // nalgebra's `Cholesky::new(m).l()`, without its copies.
        let d = m.nrows();
        let mut chol = m.clone();
        if !cholesky_in_place::<0>(chol.as_mut_slice(), d) {
            return Err(not_pd(what, &m));
        }
        for j in 1..d {
            for i in 0..j {
                chol[(i, j)] = 0.0;
            }
        }
        if chol.iter().any(|x| !x.is_finite()) || (0..d).any(|i| chol[(i, i)] <= 0.0) {
            return Err(not_pd(what, &m));
        }
        Ok(Spd { m, chol })
    }

    /// `g · I_d`.
    pub fn scaled_identity(d: usize, g: f64) -> Result<Self> {
        if !(g.is_finite() && g > 0.0) {
            return Err(Error::invalid(
                "scaled identity",
                format!("the scale must be positive and finite, got {g}"),
            ));
        }
        Self::from_symmetric("scaled identity", DMat::identity(d, d) * g)
    }

    /// The identity.
    pub fn identity(d: usize) -> Self {
        Spd {
            m: DMat::identity(d, d),
            chol: DMat::identity(d, d),
        }
    }

    /// Rebuilds a symmetric matrix with its eigenvalues clipped into `[lam_min, lam_max]`
    /// (spec §2.4.2). This also repairs an indefinite matrix. `lam_min` must be positive.
    pub fn clipped(what: &str, m: &DMat, lam_min: f64, lam_max: f64) -> Result<Self> {
        Self::clipped_flag(what, m, lam_min, lam_max).map(|(s, _)| s)
    }

    /// As [`Spd::clipped`], also telling whether the clipping changed the matrix.
    pub fn clipped_flag(what: &str, m: &DMat, lam_min: f64, lam_max: f64) -> Result<(Self, bool)> {
        check_finite_dmat(what, m)?;
        Self::clipped_flag_with(what, m, &SymmetricEigen::new(sym(m)), lam_min, lam_max)
    }

    /// [`Spd::clipped_flag`] given the eigendecomposition `e` of `sym(m)` (a caller that needs
    /// it too computes it once); `m` must be finite.
    pub(crate) fn clipped_flag_with(
        what: &str,
        m: &DMat,
        e: &SymmetricEigen<f64, nalgebra::Dyn>,
        lam_min: f64,
        lam_max: f64,
    ) -> Result<(Self, bool)> {
        let needs = e.eigenvalues.iter().any(|&l| l < lam_min || l > lam_max);
        if !needs {
            if let Ok(s) = Self::from_symmetric(what, m.clone()) {
                return Ok((s, false));
            }
        }
        let vals = e.eigenvalues.map(|l| l.clamp(lam_min, lam_max));
        let q = &e.eigenvectors;
        let rebuilt = q * DMat::from_diagonal(&vals) * q.transpose();
        Self::from_symmetric(what, rebuilt).map(|s| (s, true))
    }

    /// The dimension `d`.
    pub fn dim(&self) -> usize {
        self.m.nrows()
    }

    /// The matrix itself.
    pub fn matrix(&self) -> &DMat {
        &self.m
    }

    /// Consumes `self` and returns the matrix.
    pub fn into_matrix(self) -> DMat {
        self.m
    }

    /// The lower Cholesky factor `L` with `A = L L^T`.
    pub fn cholesky_lower(&self) -> &DMat {
        &self.chol
    }

    /// `A^{-1}` via Cholesky, symmetrised.
    pub fn inverse(&self) -> DMat {
        let d = self.dim();
        sym(&self.solve_unchecked(&DMat::identity(d, d)))
    }

    /// `X A^{-1}` for a matrix `X` with `d` columns (right solve, row-vector convention); an
    /// error if `X` does not have `d` columns.
    pub fn solve_right(&self, x: &DMat) -> Result<DMat> {
        if x.ncols() != self.dim() {
            return Err(Error::shape(
                "right-hand side of X A^{-1}",
                format!("{} columns", self.dim()),
                format!("{} x {}", x.nrows(), x.ncols()),
            ));
        }
        Ok(self.solve_unchecked(x))
    }

    fn solve_unchecked(&self, x: &DMat) -> DMat {
        // X A^{-1} = (A^{-1} X^T)^T: `L L^T y = x` for every row `x` of X.
        let mut out = x.clone();
        cholesky_solve_rows(&self.chol, &mut out);
        out
    }

    /// `log det A`.
    pub fn logdet(&self) -> f64 {
        2.0 * (0..self.dim()).map(|i| self.chol[(i, i)].ln()).sum::<f64>()
    }

    /// Eigenvalues in ascending order.
    pub fn eigenvalues(&self) -> Vec<f64> {
        let mut v: Vec<f64> = SymmetricEigen::new(self.m.clone())
            .eigenvalues
            .iter()
            .copied()
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    }

    /// Congruence `Q^T A Q` (used for rotation tests and change of basis).
    pub fn congruence(&self, q: &DMat) -> Result<Self> {
        if q.nrows() != self.dim() {
            return Err(Error::shape(
                "Q of the congruence Q^T A Q",
                format!("{} rows", self.dim()),
                format!("{} x {}", q.nrows(), q.ncols()),
            ));
        }
        Self::from_symmetric("congruence", q.transpose() * &self.m * q)
    }
}

/// `nalgebra`'s `Cholesky::new` of the `n x n` column-major `a` in place (lower triangle; the
/// strict upper triangle is left as it was), with the same operations and hence the same bits;
/// `N > 0` fixes `n` at compile time. Returns `false` if a pivot is zero, negative or NaN.
pub(crate) fn cholesky_in_place<const N: usize>(l: &mut [f64], n: usize) -> bool {
    let n = if N > 0 { N } else { n };
    let l = &mut l[..n * n];
    for j in 0..n {
        let (left, right) = l.split_at_mut(j * n);
        let col_j = &mut right[..n];
        for kk in 0..j {
            let col_k = &left[kk * n..(kk + 1) * n];
            let factor = -col_k[j];
            for i in j..n {
                col_j[i] += factor * col_k[i];
            }
        }
        let diag = col_j[j];
        if diag <= 0.0 || diag.is_nan() {
            return false;
        }
        let denom = diag.sqrt();
        col_j[j] = denom;
        for x in col_j[j + 1..].iter_mut() {
            *x /= denom;
        }
    }
    true
}

/// Rows of the right-hand side solved side by side in [`cholesky_solve_rows`]'s back
/// substitution (its accumulators stay on the stack).
const SOLVE_ROWS: usize = 8;

/// `X ← X (L Lᵀ)^{-1}` for the lower-triangular `d x d` factor `L` and an `m x d` matrix `X`,
/// in place. Each row `x` of `X` goes through exactly the operations of nalgebra's
/// `solve_lower_triangular_mut` and then `tr_solve_lower_triangular_mut` on the column `xᵀ`
/// (forward: `x_i ← x_i / L_ii`, then `x_r ← x_r + (−x_i) L_ri`; backward: `x_i ← (x_i −
/// Σ_{r>i} L_ri x_r) / L_ii` with nalgebra's eight-accumulator dot product), so the result has
/// the same bits; but the rows are solved side by side along the contiguous columns of `X`
/// instead of one transposed column at a time, which vectorises across rows and needs neither
/// transpose nor allocation. `L` must have a non-zero diagonal ([`Spd`]'s factor has a positive
/// one).
fn cholesky_solve_rows(l: &DMat, x: &mut DMat) {
    forward_rows(l, x);
    backward_rows(l, x);
}

/// `X ← X L^{-T}`: nalgebra's `solve_lower_triangular_mut` (`L y = xᵀ`) for every row `x` of
/// `X`, with its operations (see [`cholesky_solve_rows`]).
pub(crate) fn forward_rows(l: &DMat, x: &mut DMat) {
    debug_assert_eq!(x.ncols(), l.nrows());
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::has_avx2_fma() {
        // SAFETY: the processor has AVX2 and FMA (checked at run time).
        return unsafe { forward_rows_avx2(l, x) };
    }
    forward_rows_portable(l, x)
}

/// `X ← X L^{-1}`: nalgebra's `tr_solve_lower_triangular_mut` (`Lᵀ z = xᵀ`) for every row `x`
/// of `X`, with its operations (see [`cholesky_solve_rows`]), [`SOLVE_ROWS`] rows at a time.
pub(crate) fn backward_rows(l: &DMat, x: &mut DMat) {
    debug_assert_eq!(x.ncols(), l.nrows());
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::has_avx2_fma() {
        // SAFETY: the processor has AVX2 and FMA (checked at run time).
        return unsafe { backward_rows_avx2(l, x) };
    }
    backward_rows_portable(l, x)
}

/// [`forward_rows_portable`] compiled for AVX2 (the same bits: Rust does not contract
/// `a * b + c` into a fused multiply-add).
///
/// # Safety
/// The processor must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_rows_avx2(l: &DMat, x: &mut DMat) {
    forward_rows_portable(l, x)
}

/// [`backward_rows_portable`] compiled for AVX2 (the same bits).
///
/// # Safety
/// The processor must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn backward_rows_avx2(l: &DMat, x: &mut DMat) {
    backward_rows_portable(l, x)
}

#[inline(always)]
fn forward_rows_portable(l: &DMat, x: &mut DMat) {
    let d = l.nrows();
    let m = x.nrows();
    let l = l.as_slice();
    let x = x.as_mut_slice();
    // Column i of X is entry i of every row.
    for i in 0..d {
        let diag = l[i * d + i];
        let (head, tail) = x.split_at_mut((i + 1) * m);
        let xi = &mut head[i * m..];
        for v in xi.iter_mut() {
            *v /= diag;
        }
        for (r, xr) in (i + 1..d).zip(tail.chunks_exact_mut(m)) {
            let lri = l[i * d + r];
            for (o, c) in xr.iter_mut().zip(xi.iter()) {
                *o += -*c * lri;
            }
        }
    }
}

#[inline(always)]
fn backward_rows_portable(l: &DMat, x: &mut DMat) {
    let m = x.nrows();
    let mut c0 = 0;
    while c0 + SOLVE_ROWS <= m {
        backward_block::<SOLVE_ROWS>(l, x, c0);
        c0 += SOLVE_ROWS;
    }
    if c0 + 4 <= m {
        backward_block::<4>(l, x, c0);
        c0 += 4;
    }
    while c0 < m {
        backward_block::<1>(l, x, c0);
        c0 += 1;
    }
}

/// The back substitution of rows `c0..c0 + W` of `X`: per row, nalgebra's
/// `x_i ← (x_i − dot(L_{i+1.., i}, x_{i+1..})) / L_ii` with its dot product (eight accumulators
/// over full groups of eight terms, combined as `(a0 + a4) + (a1 + a5) + …`, then the
/// remaining terms in order).
#[inline(always)]
fn backward_block<const W: usize>(l: &DMat, x: &mut DMat, c0: usize) {
    let d = l.nrows();
    let m = x.nrows();
    let l = l.as_slice();
    let x = x.as_mut_slice();
    for i in (0..d).rev() {
        let col = &l[i * d + i + 1..(i + 1) * d];
        let len = col.len();
        let entry = |k: usize| {
            let at = (i + 1 + k) * m + c0;
            &x[at..at + W]
        };
        let mut res = [0.0f64; W];
        let mut k = 0;
        if len >= 8 {
            let mut acc = [[0.0f64; W]; 8];
            while len - k >= 8 {
                for (q, a) in acc.iter_mut().enumerate() {
                    let lv = col[k + q];
                    for (a, xv) in a.iter_mut().zip(entry(k + q)) {
                        *a += lv * xv;
                    }
                }
                k += 8;
            }
            for (c, r) in res.iter_mut().enumerate() {
                *r += acc[0][c] + acc[4][c];
                *r += acc[1][c] + acc[5][c];
                *r += acc[2][c] + acc[6][c];
                *r += acc[3][c] + acc[7][c];
            }
        }
        for (kk, &lv) in col.iter().enumerate().skip(k) {
            for (r, xv) in res.iter_mut().zip(entry(kk)) {
                *r += lv * xv;
            }
        }
        let diag = l[i * d + i];
        for (v, r) in x[i * m + c0..i * m + c0 + W].iter_mut().zip(&res) {
            *v = (*v - r) / diag;
        }
    }
}

fn not_pd(what: &str, m: &DMat) -> Error {
    let ev = SymmetricEigen::new(m.clone()).eigenvalues;
    let min = ev.iter().copied().fold(f64::INFINITY, f64::min);
    Error::NotPositiveDefinite {
        what: what.to_string(),
        detail: format!("smallest eigenvalue is {min:.6e}"),
    }
}

/// Inverse of a symmetric positive semi-definite matrix that may be singular (spec §2.4.4):
/// if the Cholesky factorisation fails, the eigenvalues are floored at `ε = 1e-12 · tr(A)/d`
/// (a ridge on the singular directions) before inverting. Returns `None` only for non-finite
/// input.
pub(crate) fn psd_inverse(a: &DMat) -> Option<DMat> {
    if a.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let d = a.nrows();
    let a = sym(a);
    if let Ok(s) = Spd::from_symmetric("", a.clone()) {
        let inv = s.inverse();
        if inv.iter().all(|x| x.is_finite()) {
            return Some(inv);
        }
    }
    let tr = a.trace().abs() / d as f64;
    let eps = if tr > 0.0 { 1e-12 * tr } else { 1e-300 };
    let e = SymmetricEigen::new(a);
    let inv_vals = e.eigenvalues.map(|l| 1.0 / l.max(eps));
    let q = &e.eigenvectors;
    Some(sym(&(q * DMat::from_diagonal(&inv_vals) * q.transpose())))
}

/// The largest `d` of [`small_spd_inverse`]'s stack path.
const SMALL_D: usize = 16;

/// `sym(A)^{-1}` of a small symmetric positive-definite `d x d` matrix, written row-major into
/// `out` (`d²` entries), without allocating for `d ≤ 16` (a Cholesky factor and its inverse on
/// the stack): the per-row covariance of a MAP row denoiser, `Σ = H^{-1}`. Returns `false` (and
/// leaves `out` unspecified) if `A` is not positive definite or the result is not finite.
pub fn small_spd_inverse(a: &DMat, out: &mut [f64]) -> bool {
    let d = a.nrows();
    debug_assert_eq!(out.len(), d * d);
    if d > SMALL_D {
        return match Spd::from_symmetric("matrix", a.clone()) {
            Ok(s) => {
                out.copy_from_slice(s.inverse().as_slice());
                true
            }
            Err(_) => false,
        };
    }
    // Lower Cholesky factor L of sym(A), row-major on the stack.
    let mut l = [0.0f64; SMALL_D * SMALL_D];
    for i in 0..d {
        for j in 0..=i {
            let mut s = 0.5 * (a[(i, j)] + a[(j, i)]);
            for p in 0..j {
                s -= l[i * d + p] * l[j * d + p];
            }
            if i == j {
                if !(s > 0.0 && s.is_finite()) {
                    return false;
                }
                l[i * d + i] = s.sqrt();
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    // M = L^{-1} (lower), then A^{-1} = Mᵀ M.
    let mut m = [0.0f64; SMALL_D * SMALL_D];
    for j in 0..d {
        m[j * d + j] = 1.0 / l[j * d + j];
        for i in j + 1..d {
            let mut s = 0.0;
            for p in j..i {
                s -= l[i * d + p] * m[p * d + j];
            }
            m[i * d + j] = s / l[i * d + i];
        }
    }
    for i in 0..d {
        for j in 0..=i {
            let mut s = 0.0;
            for p in i..d {
                s += m[p * d + i] * m[p * d + j];
            }
            out[i * d + j] = s;
            out[j * d + i] = s;
        }
    }
    out.iter().all(|x| x.is_finite())
}

#[cfg(test)]
mod small_inverse_tests {
    use super::*;

    /// nalgebra's solves on the transpose, which [`cholesky_solve_rows`] reproduces.
    fn nalgebra_solve_right(chol: &DMat, x: &DMat) -> DMat {
        let mut y = x.transpose();
        assert!(chol.solve_lower_triangular_mut(&mut y));
        assert!(chol.tr_solve_lower_triangular_mut(&mut y));
        y.transpose()
    }

    #[test]
    fn row_solves_have_the_bits_of_nalgebras_triangular_solves() {
        use rand::RngExt;
        let mut rng = crate::rng::rng_from_seed(12);
        let mut next = || rng.random::<f64>() * 2.0 - 1.0;
        for d in [1usize, 2, 3, 4, 7, 8, 9, 10, 16, 17, 20] {
            for m in [1usize, 2, 5, 8, 9, 10, 17] {
                let b = DMat::from_fn(d, d, |_, _| next());
                let a = &b * b.transpose() + DMat::identity(d, d) * (0.01 + next().abs());
                let s = Spd::from_symmetric("a", a.clone()).unwrap();
                // The factor and the symmetrisation: nalgebra's bits.
                let want_l = sym(&a).cholesky().unwrap().l();
                assert!(s
                    .cholesky_lower()
                    .iter()
                    .zip(want_l.iter())
                    .all(|(g, w)| g.to_bits() == w.to_bits()));
                let skew = DMat::from_fn(d, d, |_, _| next());
                let want_sym = (&skew + skew.transpose()) * 0.5;
                assert!(sym(&skew)
                    .iter()
                    .zip(want_sym.iter())
                    .all(|(g, w)| g.to_bits() == w.to_bits()));
                let mut x = DMat::from_fn(m, d, |_, _| 1e3 * next());
                // Signed zeros and an infinity: the same IEEE results, not just close ones.
                x[(0, 0)] = -0.0;
                if m > 1 && d > 1 {
                    x[(m - 1, d - 1)] = f64::INFINITY;
                }
                let want = nalgebra_solve_right(s.cholesky_lower(), &x);
                let got = s.solve_unchecked(&x);
                for (g, w) in got.iter().zip(want.iter()) {
                    assert!(
                        g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                        "d = {d}, m = {m}: {g} vs {w}"
                    );
                }
                let inv = s.inverse();
                let want = sym(&nalgebra_solve_right(
                    s.cholesky_lower(),
                    &DMat::identity(d, d),
                ));
                assert!(inv
                    .iter()
                    .zip(want.iter())
                    .all(|(g, w)| g.to_bits() == w.to_bits()));
            }
        }
    }

    #[test]
    fn the_stack_inverse_equals_the_cholesky_inverse_and_rejects_indefinite_matrices() {
        for d in [1usize, 2, 4, 7, 16, 17] {
            let b = DMat::from_fn(d, d, |i, j| {
                ((i * 7 + j * 3) % 5) as f64 - 2.0 + 0.1 * i as f64
            });
            let a = &b * b.transpose() + DMat::identity(d, d) * 0.5;
            let mut out = vec![0.0; d * d];
            assert!(small_spd_inverse(&a, &mut out));
            let want = Spd::from_symmetric("a", a.clone()).unwrap().inverse();
            let got = DMat::from_row_slice(d, d, &out);
            assert!((&got - &want).norm() <= 1e-12 * want.norm(), "d = {d}");
            let mut neg = a.clone();
            neg[(0, 0)] = -1.0;
            assert!(!small_spd_inverse(&neg, &mut out), "d = {d}");
        }
    }
}
