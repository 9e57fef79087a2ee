//! The factors of the model as Python classes: priors, hidden layers, outputs, and the linear
//! operators of matrix-free layers. Each class wraps the core's type (`mlmatvamp::denoise`,
//! `mlmatvamp::operator`) behind an `Arc`; its constructor checks its arguments exactly as the
//! core does, with the core's named errors.

use crate::arrays::{mat_to_py, spd_arg, square_arg, vector_arg, ArrayArg};
use crate::errors::{check, Slots};
use crate::pyop::PyOperator;
use crate::util::{core, from_py, named};
use mlmatvamp::denoise::{
    self, Activation, Estimator, HessianKind, LawOptions, OperatorLayer, ReluMmseMethod,
    TwoLayerEstimator,
};
use mlmatvamp::factor::{InputPrior, Layer as CoreLayer, LayerKind, OutputChannel};
use mlmatvamp::operator::{
    CgForm, CgOptions, DenseOperator as CoreDense, LinearOperator, SparseOperator as CoreSparse,
    SpectralLaw, SubsampledDct,
};
use mlmatvamp::spd::DMat;
use mlmatvamp::Error;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::PyClassInitializer;
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// Priors
// ---------------------------------------------------------------------------------------------

/// The prior `p_0` of the rows of `Z_0` (base class of every prior).
#[pyclass(subclass, frozen, module = "mlmatvamp._core")]
pub struct Prior {
    pub(crate) inner: Arc<dyn InputPrior>,
}

#[pymethods]
impl Prior {
    /// The number of columns `d`.
    #[getter]
    fn d(&self) -> usize {
        self.inner.dim()
    }
    /// A one-line description.
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn __repr__(&self) -> String {
        format!("<prior: {}>", self.inner.describe())
    }
}

fn prior_init(p: impl InputPrior + 'static) -> PyClassInitializer<Prior> {
    PyClassInitializer::from(Prior { inner: Arc::new(p) })
}

/// The mean (length `d`, default zeros) and covariance (`d x d`, default identity) of a
/// Gaussian law, `d` taken from whichever is given.
fn mean_cov(
    py: Python<'_>,
    mean: Option<&Bound<'_, PyAny>>,
    cov: Option<&Bound<'_, PyAny>>,
    d: Option<usize>,
) -> PyResult<(Vec<f64>, DMat)> {
    let mean = mean.map(|m| vector_arg(py, m, "mean")).transpose()?;
    let d = d.or(mean.as_ref().map(|m| m.len()));
    let cov = cov
        .map(|c| square_arg(py, c, "covariance", d))
        .transpose()?;
    let d = d.or(cov.as_ref().map(|c| c.nrows())).ok_or_else(|| {
        crate::errors::to_pyerr(
            py,
            Error::invalid("d", "give the dimension d, the mean or the covariance"),
        )
    })?;
    let mean = mean.unwrap_or_else(|| vec![0.0; d]);
    if mean.len() != d {
        return Err(crate::errors::to_pyerr(
            py,
            Error::shape(
                "mean",
                format!("a vector of length d = {d}"),
                format!("length {}", mean.len()),
            ),
        ));
    }
    Ok((mean, cov.unwrap_or_else(|| DMat::identity(d, d))))
}

/// A Gaussian prior: the rows of `Z_0` are i.i.d. `N(mean, covariance)`.
///
/// Args:
///     mean: length-`d` vector (default zeros).
///     covariance: `d x d` symmetric positive-definite matrix, or a scalar `s` for `s I`
///         (default identity).
///     d: the number of columns, when neither `mean` nor `covariance` gives it.
#[pyclass(extends = Prior, frozen, module = "mlmatvamp._core")]
pub struct GaussianPrior;

#[pymethods]
impl GaussianPrior {
    #[new]
    #[pyo3(signature = (mean=None, covariance=None, *, d=None))]
    fn new(
        py: Python<'_>,
        mean: Option<&Bound<'_, PyAny>>,
        covariance: Option<&Bound<'_, PyAny>>,
        d: Option<usize>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let (mean, cov) = mean_cov(py, mean, covariance, d)?;
        let p = core(py, denoise::GaussianPrior::new(mean, cov))?;
        Ok(prior_init(p).add_subclass(GaussianPrior))
    }

    /// The zero-mean prior with covariance `variance · I_d`.
    #[staticmethod]
    #[pyo3(signature = (d, variance=1.0))]
    fn isotropic(py: Python<'_>, d: usize, variance: f64) -> PyResult<Py<GaussianPrior>> {
        let p = core(py, denoise::GaussianPrior::isotropic(d, variance))?;
        Py::new(py, prior_init(p).add_subclass(GaussianPrior))
    }
}

/// A row-sparse (Bernoulli–Gaussian) prior: a row is zero with probability `1 - sparsity`,
/// else drawn from `N(mean, covariance)`; MMSE denoiser.
///
/// Args:
///     sparsity: probability that a row is non-zero, in (0, 1].
///     mean, covariance, d: the law of the non-zero rows, as for `GaussianPrior`.
#[pyclass(extends = Prior, frozen, module = "mlmatvamp._core")]
pub struct BernoulliGaussianPrior;

#[pymethods]
impl BernoulliGaussianPrior {
    #[new]
    #[pyo3(signature = (sparsity, mean=None, covariance=None, *, d=None))]
    fn new(
        py: Python<'_>,
        sparsity: f64,
        mean: Option<&Bound<'_, PyAny>>,
        covariance: Option<&Bound<'_, PyAny>>,
        d: Option<usize>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let (mean, cov) = mean_cov(py, mean, covariance, d)?;
        let p = core(
            py,
            denoise::BernoulliGaussianPrior::new(sparsity, mean, cov),
        )?;
        Ok(prior_init(p).add_subclass(BernoulliGaussianPrior))
    }
}

/// The group-lasso prior `∝ exp(-lam ‖z‖₂)` on rows of length `d`; MAP denoiser (the
/// group-lasso proximal operator).
#[pyclass(extends = Prior, frozen, module = "mlmatvamp._core")]
pub struct GroupLassoPrior;

#[pymethods]
impl GroupLassoPrior {
    #[new]
    #[pyo3(signature = (d, lam))]
    fn new(py: Python<'_>, d: usize, lam: f64) -> PyResult<PyClassInitializer<Self>> {
        let p = core(py, denoise::GroupLassoPrior::new(d, lam))?;
        Ok(prior_init(p).add_subclass(GroupLassoPrior))
    }
}

/// A mismatched prior: a teacher draws from `data`, the algorithm denoises with `estimator`
/// (e.g. row-sparse data estimated with the group lasso).
#[pyclass(extends = Prior, frozen, module = "mlmatvamp._core")]
pub struct MismatchedPrior;

#[pymethods]
impl MismatchedPrior {
    #[new]
    fn new(
        py: Python<'_>,
        data: &Bound<'_, Prior>,
        estimator: &Bound<'_, Prior>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let p = core(
            py,
            denoise::MismatchedPrior::new(data.get().inner.clone(), estimator.get().inner.clone()),
        )?;
        Ok(prior_init(p).add_subclass(MismatchedPrior))
    }
}

// ---------------------------------------------------------------------------------------------
// Linear operators
// ---------------------------------------------------------------------------------------------

/// A linear operator `W` for matrix-free linear layers (base class). It also follows the
/// `scipy.sparse.linalg.LinearOperator` protocol: `shape`, `dtype`, `matmat(X)`, `rmatmat(Y)`.
#[pyclass(subclass, frozen, module = "mlmatvamp._core")]
pub struct Operator {
    pub(crate) inner: Arc<dyn LinearOperator>,
    pub(crate) slots: Slots,
}

fn apply_py<'py>(
    py: Python<'py>,
    op: &Operator,
    x: &Bound<'py, PyAny>,
    transpose: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let name = if transpose { "Y" } else { "X" };
    let a = ArrayArg::new(x, name)?;
    let one_d = a.shape().len() == 1;
    let view = a.mat(py, true)?;
    let opr = op.inner.clone();
    op.slots.clear();
    let r = py.detach(move || {
        if transpose {
            mlmatvamp::operator::apply_transpose(opr.as_ref(), view)
        } else {
            mlmatvamp::operator::apply(opr.as_ref(), view)
        }
    });
    let m = check(py, r, &op.slots)?;
    let out = mat_to_py(py, m.as_ref()).into_any();
    if one_d {
        out.call_method1("reshape", (-1,))
    } else {
        Ok(out)
    }
}

#[pymethods]
impl Operator {
    /// `(n_out, n_in)`.
    #[getter]
    fn shape(&self) -> (usize, usize) {
        self.inner.shape()
    }
    /// `numpy.float64` (for `scipy.sparse.linalg.aslinearoperator`).
    #[getter]
    fn dtype<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::arrays::numpy(py)?.getattr("float64")
    }
    /// A one-line description.
    fn describe(&self) -> String {
        self.inner.describe()
    }
    /// `W X` for `X` of `n_in` rows (a vector is one column).
    fn matmat<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        apply_py(py, self, x, false)
    }
    /// `Wᵀ Y` for `Y` of `n_out` rows (a vector is one column).
    fn rmatmat<'py>(&self, py: Python<'py>, y: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        apply_py(py, self, y, true)
    }
    /// `W x` (as `matmat`).
    fn matvec<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        apply_py(py, self, x, false)
    }
    /// `Wᵀ y` (as `rmatmat`).
    fn rmatvec<'py>(&self, py: Python<'py>, y: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        apply_py(py, self, y, true)
    }
    fn __repr__(&self) -> String {
        format!("<operator: {}>", self.inner.describe())
    }
}

fn operator_init(op: Arc<dyn LinearOperator>, slots: Slots) -> PyClassInitializer<Operator> {
    PyClassInitializer::from(Operator { inner: op, slots })
}

/// A dense `W` as an operator (stored row by row: one copy of `W`; `WᵀW X` in one pass).
#[pyclass(extends = Operator, frozen, module = "mlmatvamp._core")]
pub struct DenseOperator;

#[pymethods]
impl DenseOperator {
    #[new]
    fn new(py: Python<'_>, weight: &Bound<'_, PyAny>) -> PyResult<PyClassInitializer<Self>> {
        let w = ArrayArg::new(weight, "weight")?.to_mat(py, false)?;
        let op = core(py, CoreDense::new(w))?;
        Ok(operator_init(Arc::new(op), Slots::default()).add_subclass(DenseOperator))
    }
}

/// The CSR arrays of a scipy sparse matrix (any format), canonical (sorted, no duplicates).
fn scipy_csr(py: Python<'_>, m: &Bound<'_, PyAny>) -> PyResult<CoreSparse> {
    let csr = m.call_method0("tocsr")?.call_method0("copy")?;
    csr.call_method0("sum_duplicates")?;
    csr.call_method0("sort_indices")?;
    let shape: (usize, usize) = csr.getattr("shape")?.extract()?;
    let indptr: Vec<usize> = vector_arg(py, &csr.getattr("indptr")?, "indptr")?
        .into_iter()
        .map(|v| v as usize)
        .collect();
    let indices: Vec<usize> = vector_arg(py, &csr.getattr("indices")?, "indices")?
        .into_iter()
        .map(|v| v as usize)
        .collect();
    let data = vector_arg(py, &csr.getattr("data")?, "data")?;
    core(
        py,
        CoreSparse::from_csr("sparse weight W", shape, indptr, indices, data),
    )
}

fn is_scipy_sparse(obj: &Bound<'_, PyAny>) -> bool {
    obj.hasattr("tocsr").unwrap_or(false) && obj.hasattr("nnz").unwrap_or(false)
}

/// A sparse `W` as an operator (CSR; `Wᵀ` kept in CSR too), from a scipy sparse matrix or
/// array of any format (`SparseOperator(scipy.sparse.random(...))`), or from CSR arrays
/// (`SparseOperator.from_csr(data, indices, indptr, shape)`).
#[pyclass(extends = Operator, frozen, module = "mlmatvamp._core")]
pub struct SparseOperator;

#[pymethods]
impl SparseOperator {
    #[new]
    fn new(py: Python<'_>, matrix: &Bound<'_, PyAny>) -> PyResult<PyClassInitializer<Self>> {
        if !is_scipy_sparse(matrix) {
            return Err(PyTypeError::new_err(
                "argument `matrix`: expected a scipy sparse matrix or array (with `tocsr`); use SparseOperator.from_csr for raw CSR arrays",
            ));
        }
        let op = scipy_csr(py, matrix)?;
        Ok(operator_init(Arc::new(op), Slots::default()).add_subclass(SparseOperator))
    }

    /// From CSR arrays: row `i` holds `data[indptr[i]:indptr[i+1]]` in the columns
    /// `indices[indptr[i]:indptr[i+1]]` (strictly increasing). Every inconsistency is a named
    /// `InvalidArgumentError`.
    #[staticmethod]
    fn from_csr(
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        indices: &Bound<'_, PyAny>,
        indptr: &Bound<'_, PyAny>,
        shape: (usize, usize),
    ) -> PyResult<Py<SparseOperator>> {
        let to_idx = |v: Vec<f64>, what: &str| -> PyResult<Vec<usize>> {
            v.into_iter()
                .map(|x| {
                    if x >= 0.0 && x.fract() == 0.0 {
                        Ok(x as usize)
                    } else {
                        Err(crate::errors::to_pyerr(
                            py,
                            Error::invalid(
                                what,
                                format!("indices must be non-negative integers, got {x}"),
                            ),
                        ))
                    }
                })
                .collect()
        };
        let indptr = to_idx(vector_arg(py, indptr, "indptr")?, "indptr")?;
        let indices = to_idx(vector_arg(py, indices, "indices")?, "indices")?;
        let data = vector_arg(py, data, "data")?;
        let op = core(
            py,
            CoreSparse::from_csr("sparse weight W", shape, indptr, indices, data),
        )?;
        Py::new(
            py,
            operator_init(Arc::new(op), Slots::default()).add_subclass(SparseOperator),
        )
    }
}

/// `W = scale · S D diag(σ)`: `rows` seeded rows `S` of the orthonormal `cols`-point DCT-II
/// `D`, with seeded random signs `σ`; `W Wᵀ = scale² I`, so a layer over it has a closed form.
#[pyclass(extends = Operator, frozen, module = "mlmatvamp._core")]
pub struct DctOperator;

#[pymethods]
impl DctOperator {
    #[new]
    #[pyo3(signature = (rows, cols, *, seed=0, scale=1.0))]
    fn new(
        py: Python<'_>,
        rows: usize,
        cols: usize,
        seed: u64,
        scale: f64,
    ) -> PyResult<PyClassInitializer<Self>> {
        let op = core(py, SubsampledDct::new(rows, cols, scale, seed))?;
        Ok(operator_init(Arc::new(op), Slots::default()).add_subclass(DctOperator))
    }
}

// ---------------------------------------------------------------------------------------------
// Hidden layers
// ---------------------------------------------------------------------------------------------

/// A hidden layer `l` (base class): linear for odd `l`, row-wise for even `l`.
#[pyclass(subclass, frozen, module = "mlmatvamp._core")]
pub struct Layer {
    pub(crate) inner: Arc<dyn CoreLayer>,
    pub(crate) slots: Slots,
}

#[pymethods]
impl Layer {
    /// The number of columns `d`.
    #[getter]
    fn d(&self) -> usize {
        self.inner.dim()
    }
    /// `"linear"` or `"row-wise"`.
    #[getter]
    fn kind(&self) -> &'static str {
        match self.inner.kind() {
            LayerKind::Linear => "linear",
            LayerKind::RowWise => "row-wise",
        }
    }
    /// A one-line description.
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn __repr__(&self) -> String {
        format!("<layer: {}>", self.inner.describe())
    }
}

/// How a linear layer solves its step.
enum Weight<'py> {
    Dense(ArrayArg<'py>),
    Op(Arc<dyn LinearOperator>, Slots),
}

/// A linear layer `Z_l = W Z_{l-1} + B + Ξ` (rows of `Ξ` ~ `N(0, N^{-1})`, or noiseless).
///
/// `weight` is a dense array (`n_l x n_{l-1}`, read without a copy by the SVD), a scipy sparse
/// matrix, a `DenseOperator`/`SparseOperator`/`DctOperator`, or any object with `shape`,
/// `matmat(X)` and `rmatmat(Y)` (the `scipy.sparse.linalg.LinearOperator` protocol), called on
/// `n x d` blocks with the GIL held.
///
/// Args:
///     weight: `W` (see above).
///     d: the number of columns of `Z_{l-1}` and `Z_l`.
///     bias: `B`, `n_l x d`, or a length-`d` row added to every row (default none).
///     noise_precision: `N` (`d x d`, or a scalar `s` for `s I`); `None` = noiseless.
///     method: `"svd"` (one thin SVD), `"cg"` (conjugate gradients and a spectral law of
///         `WᵀW`: matrix-free) or `"auto"` (SVD for dense weights while it is cheap, else CG;
///         always CG for sparse weights and operators).
///     tolerance, max_iterations, form: conjugate-gradient options (relative residual, limit,
///         `"auto"`, `"primal"` or `"dual"`).
///     probes, lanczos_steps, law_seed: the stochastic Lanczos estimate of the spectral law of
///         `WᵀW`, when the operator does not know it.
///     singular_values: the singular values of `W`, if known (then no estimate is made).
#[pyclass(extends = Layer, frozen, module = "mlmatvamp._core")]
pub struct LinearLayer {
    method: &'static str,
    shape: (usize, usize),
    setup_seconds: f64,
}

#[pymethods]
impl LinearLayer {
    #[new]
    #[pyo3(signature = (weight, d, *, bias=None, noise_precision=None, method="auto", tolerance=1e-8, max_iterations=1000, form="auto", probes=10, lanczos_steps=40, law_seed=0, singular_values=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        weight: &Bound<'_, PyAny>,
        d: usize,
        bias: Option<&Bound<'_, PyAny>>,
        noise_precision: Option<&Bound<'_, PyAny>>,
        method: &str,
        tolerance: f64,
        max_iterations: usize,
        form: &str,
        probes: usize,
        lanczos_steps: usize,
        law_seed: u64,
        singular_values: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let method: mlmatvamp::config::LinearMethod =
            named(py, method, "method", "\"svd\", \"cg\", \"auto\"")?;
        let form: CgForm = named(py, form, "form", "\"auto\", \"primal\", \"dual\"")?;
        let noise = noise_precision
            .map(|n| spd_arg(py, n, "noise_precision", Some(d)))
            .transpose()?;
        let w = if let Ok(op) = weight.cast::<Operator>() {
            Weight::Op(op.get().inner.clone(), op.get().slots.clone())
        } else if is_scipy_sparse(weight) {
            if method == mlmatvamp::config::LinearMethod::Svd {
                Weight::Dense(ArrayArg::new(&weight.call_method0("toarray")?, "weight")?)
            } else {
                Weight::Op(Arc::new(scipy_csr(py, weight)?), Slots::default())
            }
        } else if weight.hasattr("matmat")? && weight.hasattr("rmatmat")? {
            let op = PyOperator::new(weight, "weight")?;
            let slots = Slots(vec![op.slot()]);
            Weight::Op(Arc::new(op), slots)
        } else {
            Weight::Dense(ArrayArg::new(weight, "weight")?)
        };
        let (n_out, n_in) = match &w {
            Weight::Dense(a) => {
                let m = a.mat(py, false)?;
                (m.nrows(), m.ncols())
            }
            Weight::Op(op, _) => op.shape(),
        };
        let bias = match bias {
            None => None,
            Some(b) => {
                let a = ArrayArg::new(b, "bias")?;
                if a.shape().len() == 1 {
                    // One row added to every row.
                    let row = a.vector(py)?;
                    if row.len() != d {
                        return Err(
                            a.shape_error(py, &format!("{n_out} x {d}, or a row of length {d}"))
                        );
                    }
                    Some(faer::Mat::from_fn(n_out, d, |_, j| row[j]))
                } else {
                    let m = a.to_mat(py, false)?;
                    if m.nrows() == 1 && n_out != 1 {
                        if m.ncols() != d {
                            return Err(a.shape_error(
                                py,
                                &format!("{n_out} x {d}, or a row of length {d}"),
                            ));
                        }
                        Some(faer::Mat::from_fn(n_out, d, |_, j| m[(0, j)]))
                    } else {
                        Some(m)
                    }
                }
            }
        };
        let use_svd = match (&w, method) {
            (_, mlmatvamp::config::LinearMethod::Svd) => true,
            (_, mlmatvamp::config::LinearMethod::Cg) => false,
            (Weight::Dense(_), _) => mlmatvamp::config::svd_is_cheap(n_out, n_in),
            (Weight::Op(..), _) => false,
        };
        let start = std::time::Instant::now();
        let (op, slots): (Arc<dyn LinearOperator>, Slots) = match w {
            Weight::Dense(a) if use_svd => {
                let view = a.mat(py, false)?;
                let layer = py.detach(move || denoise::LinearLayer::new(view, bias, noise, d));
                let layer = core(py, layer)?;
                let init = PyClassInitializer::from(Layer {
                    inner: Arc::new(layer),
                    slots: Slots::default(),
                });
                return Ok(init.add_subclass(LinearLayer {
                    method: "svd",
                    shape: (n_out, n_in),
                    setup_seconds: start.elapsed().as_secs_f64(),
                }));
            }
            Weight::Op(..) if use_svd => return Err(crate::errors::to_pyerr(
                py,
                Error::invalid(
                    "method",
                    "method = \"svd\" needs the weight as a dense array or a scipy sparse matrix",
                ),
            )),
            Weight::Dense(a) => (
                Arc::new(core(py, CoreDense::new(a.to_mat(py, false)?))?),
                Slots::default(),
            ),
            Weight::Op(op, s) => (op, s),
        };
        let cg = CgOptions {
            tolerance,
            max_iterations,
            form,
        };
        let sv = singular_values
            .map(|s| vector_arg(py, s, "singular_values"))
            .transpose()?;
        let law_options = LawOptions {
            probes,
            steps: lanczos_steps,
            seed: law_seed,
        };
        slots.clear();
        let closed = op.row_gram_scale().is_some();
        let r = py.detach(move || -> mlmatvamp::Result<OperatorLayer> {
            match sv {
                Some(sv) => {
                    let law = SpectralLaw::exact(&sv, n_out, n_in)?;
                    OperatorLayer::with_law(op, law, bias, noise, d, cg)
                }
                None => OperatorLayer::new(op, bias, noise, d, cg, &law_options),
            }
        });
        let layer = check(py, r, &slots)?;
        let init = PyClassInitializer::from(Layer {
            inner: Arc::new(layer),
            slots,
        });
        Ok(init.add_subclass(LinearLayer {
            method: if closed { "closed form" } else { "cg" },
            shape: (n_out, n_in),
            setup_seconds: start.elapsed().as_secs_f64(),
        }))
    }

    /// How the step is solved: `"svd"`, `"cg"` or `"closed form"` (orthogonal rows).
    #[getter]
    fn method(&self) -> &'static str {
        self.method
    }
    /// `(n_l, n_{l-1})`.
    #[getter]
    fn shape(&self) -> (usize, usize) {
        self.shape
    }
    /// Seconds spent at construction (the SVD, or the spectral-law estimate).
    #[getter]
    fn setup_seconds(&self) -> f64 {
        self.setup_seconds
    }
}

/// A row-wise hidden layer `Z_l = σ(Z_{l-1}) + Ξ`: `activation` `"identity"` (linear-Gaussian,
/// exact) or `"relu"` (`d ≤ 6`); rows of `Ξ` ~ `N(0, N^{-1})` or noiseless.
///
/// Args:
///     activation: `"identity"` or `"relu"`.
///     d: the number of columns.
///     noise_precision: `N` (`d x d`, or a scalar `s` for `s I`); `None` = noiseless.
///     estimator: `"mmse"` (default) or `"map"`.
///     mmse_nodes: relu MMSE only: Gauss–Legendre nodes per panel of the orthant rule.
#[pyclass(extends = Layer, frozen, module = "mlmatvamp._core")]
pub struct ActivationLayer;

#[pymethods]
impl ActivationLayer {
    #[new]
    #[pyo3(signature = (activation, d, *, noise_precision=None, estimator="mmse", mmse_nodes=None))]
    fn new(
        py: Python<'_>,
        activation: &str,
        d: usize,
        noise_precision: Option<&Bound<'_, PyAny>>,
        estimator: &str,
        mmse_nodes: Option<usize>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let act = core(py, Activation::parse(activation))?;
        let est: Estimator = named(py, estimator, "estimator", "\"mmse\", \"map\"")?;
        let noise = noise_precision
            .map(|n| spd_arg(py, n, "noise_precision", Some(d)))
            .transpose()?;
        let mut layer = core(py, denoise::ActivationLayer::new(act, noise, est, d))?;
        if let Some(nodes) = mmse_nodes {
            layer = core(py, layer.with_relu_mmse(ReluMmseMethod::Orthants { nodes }))?;
        }
        let init = PyClassInitializer::from(Layer {
            inner: Arc::new(layer),
            slots: Slots::default(),
        });
        Ok(init.add_subclass(ActivationLayer))
    }
}

// ---------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------

/// The output channel `p(Y | Z_{L-1})` with its observation (base class).
#[pyclass(subclass, frozen, module = "mlmatvamp._core")]
pub struct Output {
    pub(crate) inner: Arc<dyn OutputChannel>,
}

#[pymethods]
impl Output {
    /// The number of columns `d` of `Z_{L-1}`.
    #[getter]
    fn d(&self) -> usize {
        self.inner.dim()
    }
    /// The number of rows `n_{L-1}`.
    #[getter]
    fn rows(&self) -> usize {
        self.inner.rows()
    }
    /// The observation `Y` (a copy).
    #[getter]
    fn observation<'py>(&self, py: Python<'py>) -> Bound<'py, numpy::PyArray2<f64>> {
        mat_to_py(py, self.inner.observation())
    }
    /// A one-line description.
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn __repr__(&self) -> String {
        format!("<output: {}>", self.inner.describe())
    }
}

fn output_init(o: impl OutputChannel + 'static) -> PyClassInitializer<Output> {
    PyClassInitializer::from(Output { inner: Arc::new(o) })
}

/// The AWGN output `Y = Z_{L-1} + Ξ` on the observed entries (rows of `Ξ` ~ `N(0, N^{-1})`).
///
/// Args:
///     y: `n x d` (a 1-D array is one column); missing entries may hold anything (NaN).
///     noise_precision: `N` (`d x d`, or a scalar `s` for `s I`).
///     mask: optional, the shape of `y`: 1 = observed, 0 = missing.
#[pyclass(extends = Output, frozen, module = "mlmatvamp._core")]
pub struct AwgnOutput;

#[pymethods]
impl AwgnOutput {
    #[new]
    #[pyo3(signature = (y, noise_precision, mask=None))]
    fn new(
        py: Python<'_>,
        y: &Bound<'_, PyAny>,
        noise_precision: &Bound<'_, PyAny>,
        mask: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        let y = ArrayArg::new(y, "y")?.to_mat(py, true)?;
        let noise = spd_arg(py, noise_precision, "noise_precision", Some(y.ncols()))?;
        let mask = mask
            .map(|m| ArrayArg::new(m, "mask").and_then(|a| a.to_mat(py, true)))
            .transpose()?;
        let o = core(py, denoise::AwgnOutput::new(y, noise, mask))?;
        Ok(output_init(o).add_subclass(AwgnOutput))
    }
}

/// The two-layer network output `Y = σ(Z_1) F_2 + N(0, noise_variance I)` (paper eq. 9) with
/// known second-layer weights `F_2` (`d x n_out`).
///
/// Args:
///     y: `n x n_out` observations.
///     f2: `d x n_out` second-layer weights.
///     noise_variance: the output noise variance.
///     activation: `"sigmoid"` (default), `"relu"` or `"identity"`.
///     estimator: `"map"` (default), `"mmse"`, or a dict of the core's `TwoLayerEstimator`
///         (e.g. `{"mmse": {"method": {"adaptive_gh": {"nodes": 12}}}}`).
///     hessian: MAP only: `"exact"` (default) or `"gauss_newton"`.
#[pyclass(extends = Output, frozen, module = "mlmatvamp._core")]
pub struct TwoLayerOutput;

#[pymethods]
impl TwoLayerOutput {
    #[new]
    #[pyo3(signature = (y, f2, noise_variance, *, activation="sigmoid", estimator=None, hessian="exact"))]
    fn new(
        py: Python<'_>,
        y: &Bound<'_, PyAny>,
        f2: &Bound<'_, PyAny>,
        noise_variance: f64,
        activation: &str,
        estimator: Option<&Bound<'_, PyAny>>,
        hessian: &str,
    ) -> PyResult<PyClassInitializer<Self>> {
        let y = ArrayArg::new(y, "y")?.to_mat(py, true)?;
        let f2 = square_or_rect(py, f2, "f2")?;
        let act = core(py, Activation::parse(activation))?;
        let hessian: HessianKind = named(py, hessian, "hessian", "\"exact\", \"gauss_newton\"")?;
        let est = match estimator {
            None => TwoLayerEstimator::map(hessian),
            Some(e) => match e.extract::<String>() {
                Ok(s) if s == "map" => TwoLayerEstimator::map(hessian),
                Ok(s) if s == "mmse" => TwoLayerEstimator::from(Estimator::Mmse),
                Ok(s) => {
                    return Err(crate::errors::to_pyerr(
                        py,
                        Error::invalid(
                            "estimator",
                            format!("unknown value `{s}`; expected \"map\", \"mmse\" or a dict"),
                        ),
                    ))
                }
                Err(_) => from_py(py, e, "estimator")?,
            },
        };
        let o = core(
            py,
            denoise::TwoLayerOutput::new(y, f2, act, noise_variance, est),
        )?;
        Ok(output_init(o).add_subclass(TwoLayerOutput))
    }
}

fn square_or_rect(py: Python<'_>, obj: &Bound<'_, PyAny>, name: &str) -> PyResult<DMat> {
    let a = ArrayArg::new(obj, name)?;
    let m = a.mat(py, true)?;
    Ok(DMat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)]))
}

/// The mixed linear regression output `y_i = [Z_{L-1}]_{i q_i} + N(0, noise_variance)` with a
/// hidden label `q_i` drawn with probabilities `weights` (paper eq. 6).
///
/// Args:
///     y: the `n` responses (a vector or an `n x 1` array).
///     d: the number of components.
///     noise_variance: `σ² > 0`.
///     weights: component probabilities (length `d`, positive, summing to 1; default uniform).
///     estimator: `"mmse"` (default) or `"map"` (joint MAP over the value and the label).
#[pyclass(extends = Output, frozen, module = "mlmatvamp._core")]
pub struct MixedRegressionOutput;

#[pymethods]
impl MixedRegressionOutput {
    #[new]
    #[pyo3(signature = (y, d, noise_variance, *, weights=None, estimator="mmse"))]
    fn new(
        py: Python<'_>,
        y: &Bound<'_, PyAny>,
        d: usize,
        noise_variance: f64,
        weights: Option<&Bound<'_, PyAny>>,
        estimator: &str,
    ) -> PyResult<PyClassInitializer<Self>> {
        let y = ArrayArg::new(y, "y")?.to_mat(py, true)?;
        let w = weights.map(|w| vector_arg(py, w, "weights")).transpose()?;
        let est: Estimator = named(py, estimator, "estimator", "\"mmse\", \"map\"")?;
        let o = core(
            py,
            denoise::MixedRegressionOutput::new(y, d, noise_variance, w, est),
        )?;
        Ok(output_init(o).add_subclass(MixedRegressionOutput))
    }
}
