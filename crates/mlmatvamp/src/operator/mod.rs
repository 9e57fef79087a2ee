//! Linear operators for matrix-free linear layers (`docs/matrix-free.md`).
//!
//! VAMP needs three things from the weight `W` of a linear layer `Z_l = W Z_{l−1} + B + Ξ`
//! (eq. 1a): the products `W X` and `Wᵀ Y` on `n × d` blocks, and a spectral law of `WᵀW`
//! ([`SpectralLaw`]). A [`LinearOperator`] provides the first two (and, when it knows it, the
//! third); it never has to be stored as a matrix. Implementations:
//!
//! * [`DenseOperator`] — a dense `W` (faer products);
//! * [`SparseOperator`] — a CSR matrix (scipy's `data`, `indices`, `indptr`, `shape`);
//! * [`SubsampledDct`] — rows of an orthonormal DCT with random signs, `W Wᵀ = c² I`;
//! * any user type implementing [`LinearOperator`] (the Python bindings plug callbacks in here).
//!
//! Every product is one pass over the operator for all `d` columns of the block, and every
//! product is deterministic (independent of the thread count).

pub mod cg;
pub mod dct;
pub mod lanczos;
pub mod sparse;
pub mod spectral;

pub use cg::{BlockCg, CgForm, CgOptions, CgReport};
pub use dct::SubsampledDct;
pub use sparse::SparseOperator;
pub use spectral::SpectralLaw;

use crate::error::{Error, Result};
use crate::rows::{check_finite, check_shape, par_for, shape_str};
use faer::{Mat, MatMut, MatRef};

/// A linear map `W: R^{n_in} → R^{n_out}` applied to blocks of `d` columns.
///
/// Implementations must be pure (the same input gives the same output, whatever the thread
/// count) and may fail (a user callback can raise an error): a failure is reported as an
/// [`Error`] and stops the algorithm with the layer and iteration named.
pub trait LinearOperator: Send + Sync {
    /// `(n_out, n_in)`.
    fn shape(&self) -> (usize, usize);
    /// A one-line description (for histories and error messages).
    fn describe(&self) -> String;
    /// `out = W X` for `X` of `n_in` rows (`out` has `n_out` rows and the same columns).
    fn apply(&self, x: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()>;
    /// `out = Wᵀ Y` for `Y` of `n_out` rows (`out` has `n_in` rows and the same columns).
    fn apply_transpose(&self, y: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()>;
    /// The spectral law of `WᵀW` when the operator knows it exactly or in closed form (an
    /// orthogonal transform, known singular values); `None` otherwise (the layer then estimates
    /// it by stochastic Lanczos quadrature, [`SpectralLaw::lanczos`]).
    fn spectral_law(&self) -> Option<SpectralLaw> {
        None
    }
    /// `c²` when the rows are orthogonal with `W Wᵀ = c² I` (then the linear step has a closed
    /// form and needs no conjugate gradients); `None` otherwise.
    fn row_gram_scale(&self) -> Option<f64> {
        None
    }
}

/// `W X` into a new matrix, with the shapes checked.
pub fn apply(op: &dyn LinearOperator, x: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let (n_out, n_in) = op.shape();
    if x.nrows() != n_in {
        return Err(Error::shape(
            format!("input of W X ({})", op.describe()),
            format!("{n_in} rows"),
            shape_str(x),
        ));
    }
    let mut out = Mat::zeros(n_out, x.ncols());
    op.apply(x, out.as_mut())?;
    check_finite(&format!("W X ({})", op.describe()), out.as_ref())?;
    Ok(out)
}

/// `Wᵀ Y` into a new matrix, with the shapes checked.
pub fn apply_transpose(op: &dyn LinearOperator, y: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let (n_out, n_in) = op.shape();
    if y.nrows() != n_out {
        return Err(Error::shape(
            format!("input of Wᵀ Y ({})", op.describe()),
            format!("{n_out} rows"),
            shape_str(y),
        ));
    }
    let mut out = Mat::zeros(n_in, y.ncols());
    op.apply_transpose(y, out.as_mut())?;
    check_finite(&format!("Wᵀ Y ({})", op.describe()), out.as_ref())?;
    Ok(out)
}

/// Checks an operator's shape against its use: `(n_out, n_in)` both positive.
pub(crate) fn check_operator(op: &dyn LinearOperator) -> Result<(usize, usize)> {
    let (n_out, n_in) = op.shape();
    if n_out == 0 || n_in == 0 {
        return Err(Error::invalid(
            "linear operator",
            format!(
                "W must have at least one row and one column, got {n_out} x {n_in} ({})",
                op.describe()
            ),
        ));
    }
    Ok((n_out, n_in))
}

/// A dense weight `W` as an operator (faer's products, deterministic parallelism).
#[derive(Clone, Debug)]
pub struct DenseOperator {
    w: Mat<f64>,
}

impl DenseOperator {
    /// Wraps a dense `W` (non-empty, finite).
    pub fn new(w: Mat<f64>) -> Result<Self> {
        if w.nrows() == 0 || w.ncols() == 0 {
            return Err(Error::invalid(
                "weight",
                format!("W must be non-empty, got {}", shape_str(w.as_ref())),
            ));
        }
        check_finite("weight W", w.as_ref())?;
        Ok(DenseOperator { w })
    }
    /// The matrix.
    pub fn matrix(&self) -> MatRef<'_, f64> {
        self.w.as_ref()
    }
}

impl LinearOperator for DenseOperator {
    fn shape(&self) -> (usize, usize) {
        (self.w.nrows(), self.w.ncols())
    }
    fn describe(&self) -> String {
        format!("dense {} x {}", self.w.nrows(), self.w.ncols())
    }
    fn apply(&self, x: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()> {
        check_shape("input of W X", x, self.w.ncols(), out.ncols())?;
        let par = par_for(self.w.nrows() * self.w.ncols() * x.ncols());
        faer::linalg::matmul::matmul(out, faer::Accum::Replace, self.w.as_ref(), x, 1.0, par);
        Ok(())
    }
    fn apply_transpose(&self, y: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()> {
        check_shape("input of Wᵀ Y", y, self.w.nrows(), out.ncols())?;
        let par = par_for(self.w.nrows() * self.w.ncols() * y.ncols());
        faer::linalg::matmul::matmul(out, faer::Accum::Replace, self.w.transpose(), y, 1.0, par);
        Ok(())
    }
}
