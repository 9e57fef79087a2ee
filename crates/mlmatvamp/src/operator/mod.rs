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
use crate::rows::{check_finite, check_shape, shape_str};
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
    /// `out = WᵀW X` (`n_in` rows). The default applies `W` then `Wᵀ`; an operator that can do
    /// both in one pass over its storage (a dense `W`, read block by block) overrides it, which
    /// halves the memory traffic of every conjugate-gradient iteration.
    fn apply_gram(&self, x: MatRef<'_, f64>, mut out: MatMut<'_, f64>) -> Result<()> {
        let (n_out, _) = self.shape();
        let mut buf = crate::rows::take_buffer(n_out * x.ncols());
        let result = {
            let mut wx = MatMut::from_column_major_slice_mut(&mut buf, n_out, x.ncols());
            self.apply(x, wx.as_mut())
                .and_then(|()| self.apply_transpose(wx.as_ref(), out.as_mut()))
        };
        crate::rows::give_buffer(buf);
        result
    }
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

/// `WᵀW X` into a new matrix, with the shapes checked.
pub fn apply_gram(op: &dyn LinearOperator, x: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let (_, n_in) = op.shape();
    if x.nrows() != n_in {
        return Err(Error::shape(
            format!("input of WᵀW X ({})", op.describe()),
            format!("{n_in} rows"),
            shape_str(x),
        ));
    }
    let mut out = Mat::zeros(n_in, x.ncols());
    op.apply_gram(x, out.as_mut())?;
    check_finite(&format!("WᵀW X ({})", op.describe()), out.as_ref())?;
    Ok(out)
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

/// A dense weight `W` as an operator (faer's products, deterministic parallelism). `W` is
/// stored row by row (as the column-major `Wᵀ`), so that a block of rows is contiguous and
/// `WᵀW X` reads `W` once.
#[derive(Clone, Debug)]
pub struct DenseOperator {
    wt: Mat<f64>,
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
        // Streamed by every product: on huge pages when large (`crate::pages`).
        let mut wt = crate::pages::zeros(w.ncols(), w.nrows());
        wt.copy_from(w.transpose());
        Ok(DenseOperator { wt })
    }
    /// The matrix `W` (a transposed view of the stored `Wᵀ`).
    pub fn matrix(&self) -> MatRef<'_, f64> {
        self.wt.transpose()
    }
}

impl LinearOperator for DenseOperator {
    fn shape(&self) -> (usize, usize) {
        (self.wt.ncols(), self.wt.nrows())
    }
    fn describe(&self) -> String {
        format!("dense {} x {}", self.wt.ncols(), self.wt.nrows())
    }
    fn apply(&self, x: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()> {
        check_shape("input of W X", x, self.wt.nrows(), out.ncols())?;
        crate::rows::matmul_into(out, self.wt.transpose(), x);
        Ok(())
    }
    fn apply_transpose(&self, y: MatRef<'_, f64>, out: MatMut<'_, f64>) -> Result<()> {
        check_shape("input of Wᵀ Y", y, self.wt.ncols(), out.ncols())?;
        crate::rows::matmul_into(out, self.wt.as_ref(), y);
        Ok(())
    }

    /// One pass over `W`: for each block of rows `W_b` (contiguous columns of the stored `Wᵀ`),
    /// `t = W_b X` then `out += W_bᵀ t` while the block is in cache. The rows are split into
    /// [`GRAM_PARTS`] fixed parts, each summed in order into its own accumulator, and the parts
    /// added in order: deterministic.
    fn apply_gram(&self, x: MatRef<'_, f64>, mut out: MatMut<'_, f64>) -> Result<()> {
        let (n_in, n_out) = (self.wt.nrows(), self.wt.ncols());
        let d = x.ncols();
        check_shape("input of WᵀW X", x, n_in, d)?;
        check_shape("output of WᵀW X", out.as_ref(), n_in, d)?;
        // Rows per block: about 256 KB of W, so that the block stays in cache between its uses.
        let block = ((1usize << 15) / n_in.max(1)).clamp(4, 512);
        let parts = if n_out * n_in * d < 1 << 20 {
            1
        } else {
            GRAM_PARTS
        };
        let bounds: Vec<(usize, usize)> = (0..parts)
            .map(|p| (p * n_out / parts, (p + 1) * n_out / parts))
            .collect();
        let part = |(lo, hi): (usize, usize)| -> Mat<f64> {
            let mut acc = Mat::<f64>::zeros(n_in, d);
            let mut t = Mat::<f64>::zeros(block, d);
            let mut r = lo;
            while r < hi {
                let len = block.min(hi - r);
                let wtb = self.wt.as_ref().subcols(r, len);
                let mut tb = t.as_mut().subrows_mut(0, len);
                faer::linalg::matmul::matmul(
                    tb.as_mut(),
                    faer::Accum::Replace,
                    wtb.transpose(),
                    x,
                    1.0,
                    faer::Par::Seq,
                );
                faer::linalg::matmul::matmul(
                    acc.as_mut(),
                    faer::Accum::Add,
                    wtb,
                    tb.as_ref(),
                    1.0,
                    faer::Par::Seq,
                );
                r += len;
            }
            acc
        };
        use rayon::prelude::*;
        let accs: Vec<Mat<f64>> = if parts == 1 {
            vec![part(bounds[0])]
        } else {
            bounds.par_iter().map(|&b| part(b)).collect()
        };
        out.fill(0.0);
        for a in &accs {
            out += a;
        }
        Ok(())
    }
}

/// The number of row parts of the one-pass `WᵀW X` of a dense operator (fixed, so that the sum
/// does not depend on the thread count).
pub const GRAM_PARTS: usize = 2;
