//! Sketched clustering (`docs/sketched-clustering.md`): the frequencies, the mergeable partial
//! sketch, the finished sketch and the recovery of the centroids, over
//! `mlmatvamp::apps::sketch` and `mlmatvamp::apps::cluster`.
//!
//! The data blocks are read in place (the rules of `arrays`: a float64 array of any layout is a
//! view, other real dtypes are converted first) and the kernel runs with the GIL released, so
//! that several Python threads (Dask's threaded workers) sketch blocks at the same time. A
//! partial sketch pickles to plain numbers and numpy arrays (its `state`), so that a map-reduce
//! engine can ship it between processes: map = `sketch_block`, reduce = `merge`.

use crate::arrays::{mat_to_py, ArrayArg};
use crate::errors::to_pyerr;
use crate::util::{core, from_py, named, to_py};
use faer::Mat;
use mlmatvamp::apps::cluster::{recover_from, ClusterConfig};
use mlmatvamp::apps::sketch::{self as core_sketch, Frequencies as CoreFrequencies};
use mlmatvamp::apps::sketch::{PartialSketch as CorePartial, Sketch as CoreSketch};
use mlmatvamp::Error;
use numpy::{Complex64, PyArray1};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple, PyType};
use std::sync::Arc;

fn vec_to_py<'py>(py: Python<'py>, v: &[f64]) -> Bound<'py, PyArray1<f64>> {
    PyArray1::from_slice(py, v)
}

/// A vector argument of length `n` (a named `ShapeError` otherwise).
fn vector_of(py: Python<'_>, obj: &Bound<'_, PyAny>, name: &str, n: usize) -> PyResult<Vec<f64>> {
    let v = ArrayArg::new(obj, name)?.vector(py)?;
    if v.len() != n {
        return Err(to_pyerr(
            py,
            Error::shape(
                name,
                format!("a vector of length {n}"),
                format!("length {}", v.len()),
            ),
        ));
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// Frequencies
// ---------------------------------------------------------------------------------------------

/// The frequency matrix `Ω` (`M x p`, rows `w_m`) of a sketch, with the within-cluster variance
/// `σ²` it was adapted to (the gains of the recovery use it).
///
/// `Frequencies(matrix, sigma2)` takes given frequencies (finite, non-empty);
/// `Frequencies.draw(m, p, sigma2, seed)` draws them from the adapted-radius law. Sketches made
/// with different frequencies are never merged: every partial sketch stores the `fingerprint`
/// of its `Ω`. Picklable (the matrix and `σ²`; the fingerprint is recomputed, bit for bit).
///
/// Args:
///     matrix: `Ω`, `M x p`.
///     sigma2: `σ² > 0`.
#[pyclass(frozen, module = "mlmatvamp._core")]
pub struct Frequencies {
    pub(crate) inner: Arc<CoreFrequencies>,
}

#[pymethods]
impl Frequencies {
    #[new]
    fn new(py: Python<'_>, matrix: &Bound<'_, PyAny>, sigma2: f64) -> PyResult<Self> {
        let m = ArrayArg::new(matrix, "frequencies")?.to_mat(py, false)?;
        let f = core(py, CoreFrequencies::from_matrix(m, sigma2))?;
        Ok(Frequencies { inner: Arc::new(f) })
    }

    /// `m` frequencies in `R^p` from the adapted-radius law of Keriven et al. for the
    /// within-cluster variance `sigma2`, seeded: `w_m = (s_m/σ) u_m`, `u_m` uniform on the unit
    /// sphere, `s_m` of density `∝ (s² + s⁴/4)^{1/2} e^{−s²/2}`.
    #[staticmethod]
    #[pyo3(signature = (m, p, sigma2, seed=0))]
    fn draw(py: Python<'_>, m: usize, p: usize, sigma2: f64, seed: u64) -> PyResult<Self> {
        let f = core(py, CoreFrequencies::draw(m, p, sigma2, seed))?;
        Ok(Frequencies { inner: Arc::new(f) })
    }

    /// `Ω` as a new numpy array (`M x p`).
    #[getter]
    fn matrix<'py>(&self, py: Python<'py>) -> Bound<'py, numpy::PyArray2<f64>> {
        mat_to_py(py, self.inner.matrix())
    }
    /// The `σ²` the frequencies were adapted to.
    #[getter]
    fn sigma2(&self) -> f64 {
        self.inner.sigma2()
    }
    /// The identifier of `Ω` (FNV-1a of its shape and bits) stored in partial sketches.
    #[getter]
    fn fingerprint(&self) -> u64 {
        self.inner.fingerprint()
    }
    /// The number of frequencies `M`.
    #[getter]
    fn m(&self) -> usize {
        self.inner.m()
    }
    /// The dimension `p` of the data.
    #[getter]
    fn p(&self) -> usize {
        self.inner.p()
    }
    /// The first `m` frequencies (a prefix of i.i.d. frequencies is itself a draw; the sketch
    /// at those frequencies is the prefix of the sketch).
    fn prefix(&self, py: Python<'_>, m: usize) -> PyResult<Self> {
        let f = core(py, self.inner.prefix(m))?;
        Ok(Frequencies { inner: Arc::new(f) })
    }
    /// The gains `g_m = exp(−σ² ‖w_m‖²/2)` (default `σ²`: the frequencies'), length `M`.
    #[pyo3(signature = (sigma2=None))]
    fn gains<'py>(
        &self,
        py: Python<'py>,
        sigma2: Option<f64>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let s = sigma2.unwrap_or(self.inner.sigma2());
        core(py, core_sketch::check_sigma2(s))?;
        Ok(vec_to_py(py, &self.inner.gains(s)))
    }
    fn __repr__(&self) -> String {
        format!(
            "<Frequencies M = {}, p = {}, sigma2 = {}, fingerprint {:016x}>",
            self.inner.m(),
            self.inner.p(),
            self.inner.sigma2(),
            self.inner.fingerprint()
        )
    }
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let cls = py.get_type::<Frequencies>();
        let args = PyTuple::new(
            py,
            [
                mat_to_py(py, self.inner.matrix()).into_any(),
                self.inner.sigma2().into_pyobject(py)?.into_any(),
            ],
        )?;
        PyTuple::new(py, [cls.into_any(), args.into_any()])
    }
}

// ---------------------------------------------------------------------------------------------
// Partial sketches
// ---------------------------------------------------------------------------------------------

/// The sums behind the sketch of the points seen so far: the count `T`, the running mean and
/// second moments of the data, and `Σ_t e^{i w_mᵀ(x_t − s)}` about a fixed shift `s` (the mean
/// of the first block). Mergeable (`merge`) and exactly re-centred by `finish`.
///
/// `PartialSketch(freqs)` is the sketch of no points; `add_block` streams blocks through it;
/// `sketch_block(data, freqs)` is the partial sketch of one block (the "map" of a distributed
/// sketch) and `merge(a, b, freqs)` the one of the union of two disjoint shards (the "reduce").
/// It pickles to its `state` (ints and numpy arrays), bit for bit.
///
/// Args:
///     freqs: the `Frequencies`.
#[pyclass(module = "mlmatvamp._core")]
pub struct PartialSketch {
    pub(crate) inner: CorePartial,
}

/// `state[k]`, or a named error.
fn state_item<'py>(
    py: Python<'py>,
    d: &Bound<'py, PyDict>,
    k: &str,
) -> PyResult<Bound<'py, PyAny>> {
    d.get_item(k)?.ok_or_else(|| {
        to_pyerr(
            py,
            Error::invalid("state", format!("the key `{k}` is missing")),
        )
    })
}

/// The state of a partial sketch from its dict (`PartialSketch.state`), checked.
fn partial_from_state(py: Python<'_>, state: &Bound<'_, PyAny>) -> PyResult<CorePartial> {
    let d = state.cast::<PyDict>().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(
            "argument `state`: expected a dict (PartialSketch.state)",
        )
    })?;
    let get = |k: &str| state_item(d.py(), d, k);
    let m: usize = get("m")?.extract()?;
    let p: usize = get("p")?.extract()?;
    let s = CorePartial {
        fingerprint: get("fingerprint")?.extract()?,
        m,
        p,
        count: get("count")?.extract()?,
        shift: vector_of(py, &get("shift")?, "state shift", p)?,
        re: vector_of(py, &get("re")?, "state re", m)?,
        im: vector_of(py, &get("im")?, "state im", m)?,
        mean: vector_of(py, &get("mean")?, "state mean", p)?,
        m2: vector_of(py, &get("m2")?, "state m2", p)?,
    };
    Ok(s)
}

#[pymethods]
impl PartialSketch {
    #[new]
    fn new(freqs: &Bound<'_, Frequencies>) -> Self {
        PartialSketch {
            inner: CorePartial::empty(&freqs.get().inner),
        }
    }

    /// The partial sketch with the given `state` (a dict as returned by `state`); used by
    /// pickle.
    #[classmethod]
    fn from_state(_cls: &Bound<'_, PyType>, state: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(PartialSketch {
            inner: partial_from_state(state.py(), state)?,
        })
    }

    /// Adds a block of points (`n x p`, finite) in place. `first_row` is the index of the
    /// block's first row in the whole dataset, for error messages (default: the number of
    /// points seen so far). The block is checked before anything changes: a non-finite entry is
    /// a `NonFiniteError` naming its row, a wrong `p` a `ShapeError`, other frequencies an
    /// `InvalidArgumentError`.
    #[pyo3(signature = (data, freqs, first_row=None))]
    fn add_block(
        &mut self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        freqs: &Bound<'_, Frequencies>,
        first_row: Option<u64>,
    ) -> PyResult<()> {
        let a = ArrayArg::new(data, "data")?;
        let view = a.mat(py, false)?;
        let f = freqs.get().inner.clone();
        let first = first_row.unwrap_or(self.inner.count);
        let inner = &mut self.inner;
        let r = py.detach(move || inner.add_block(view, &f, first));
        core(py, r)
    }

    /// The finished sketch (centred at the data mean, averaged over the `T` points).
    fn finish(&self, py: Python<'_>, freqs: &Bound<'_, Frequencies>) -> PyResult<Sketch> {
        let s = core(py, self.inner.finish(&freqs.get().inner))?;
        Ok(Sketch { inner: s })
    }

    /// The partial sketch of the union with `other` (same as `merge(self, other, freqs)`).
    fn merge(
        &self,
        py: Python<'_>,
        other: &Bound<'_, PartialSketch>,
        freqs: &Bound<'_, Frequencies>,
    ) -> PyResult<Self> {
        merge_impl(py, &self.inner, &other.borrow().inner, freqs)
    }

    /// A copy.
    fn copy(&self) -> Self {
        PartialSketch {
            inner: self.inner.clone(),
        }
    }

    /// The number of points `T` seen.
    #[getter]
    fn count(&self) -> u64 {
        self.inner.count
    }
    /// `M`.
    #[getter]
    fn m(&self) -> usize {
        self.inner.m
    }
    /// `p`.
    #[getter]
    fn p(&self) -> usize {
        self.inner.p
    }
    /// The fingerprint of the frequencies it was made with.
    #[getter]
    fn fingerprint(&self) -> u64 {
        self.inner.fingerprint
    }
    /// The shift `s` the sums are taken about (length `p`).
    #[getter]
    fn shift<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        vec_to_py(py, &self.inner.shift)
    }
    /// `Σ_t e^{i w_mᵀ(x_t − s)}` as a complex array (length `M`).
    #[getter]
    fn sums<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<Complex64>> {
        let v: Vec<Complex64> = self
            .inner
            .re
            .iter()
            .zip(&self.inner.im)
            .map(|(&r, &i)| Complex64::new(r, i))
            .collect();
        PyArray1::from_vec(py, v)
    }
    /// The running mean of the points (length `p`).
    #[getter]
    fn mean<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        vec_to_py(py, &self.inner.mean)
    }
    /// `Σ_t (x_tj − mean_j)²` per coordinate (length `p`).
    #[getter]
    fn m2<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        vec_to_py(py, &self.inner.m2)
    }
    /// Everything it holds as plain values: `{"fingerprint", "m", "p", "count"}` (ints) and
    /// `{"shift", "re", "im", "mean", "m2"}` (float64 arrays); `from_state` inverts it exactly.
    #[getter]
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = &self.inner;
        let d = PyDict::new(py);
        d.set_item("fingerprint", s.fingerprint)?;
        d.set_item("m", s.m)?;
        d.set_item("p", s.p)?;
        d.set_item("count", s.count)?;
        d.set_item("shift", vec_to_py(py, &s.shift))?;
        d.set_item("re", vec_to_py(py, &s.re))?;
        d.set_item("im", vec_to_py(py, &s.im))?;
        d.set_item("mean", vec_to_py(py, &s.mean))?;
        d.set_item("m2", vec_to_py(py, &s.m2))?;
        Ok(d)
    }
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<PartialSketch>() {
            Ok(o) => self.inner == o.borrow().inner,
            Err(_) => false,
        }
    }
    fn __repr__(&self) -> String {
        format!(
            "<PartialSketch T = {}, M = {}, p = {}, fingerprint {:016x}>",
            self.inner.count, self.inner.m, self.inner.p, self.inner.fingerprint
        )
    }
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let ctor = py.get_type::<PartialSketch>().getattr("from_state")?;
        let state = slf.borrow().state(py)?;
        let args = PyTuple::new(py, [state.into_any()])?;
        PyTuple::new(py, [ctor, args.into_any()])
    }
}

fn merge_impl(
    py: Python<'_>,
    a: &CorePartial,
    b: &CorePartial,
    freqs: &Bound<'_, Frequencies>,
) -> PyResult<PartialSketch> {
    let s = core(py, core_sketch::merge(a, b, &freqs.get().inner))?;
    Ok(PartialSketch { inner: s })
}

/// The partial sketch of one block of points (`n x p`, finite; read in place, the kernel runs
/// with the GIL released) — the "map" of a distributed sketch. Its shift is the block's mean.
#[pyfunction]
pub fn sketch_block(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    freqs: &Bound<'_, Frequencies>,
) -> PyResult<PartialSketch> {
    let a = ArrayArg::new(data, "data")?;
    let view = a.mat(py, false)?;
    let f = freqs.get().inner.clone();
    let r = py.detach(move || core_sketch::sketch_block(view, &f));
    Ok(PartialSketch {
        inner: core(py, r)?,
    })
}

/// The partial sketch of the union of two disjoint shards made with the same frequencies —
/// the "reduce" of a distributed sketch (the sums of `b` are re-expressed about the shift of
/// `a`, exactly). Other frequencies (or another `p`) are an `InvalidArgumentError`.
#[pyfunction]
pub fn merge(
    py: Python<'_>,
    a: &Bound<'_, PartialSketch>,
    b: &Bound<'_, PartialSketch>,
    freqs: &Bound<'_, Frequencies>,
) -> PyResult<PartialSketch> {
    merge_impl(py, &a.borrow().inner, &b.borrow().inner, freqs)
}

/// The sketch `(1/T) Σ_t e^{i w_mᵀ(x_t − μ)}` of an in-memory dataset (`T x p`).
#[pyfunction]
pub fn sketch(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    freqs: &Bound<'_, Frequencies>,
) -> PyResult<Sketch> {
    let a = ArrayArg::new(data, "data")?;
    let view = a.mat(py, false)?;
    let f = freqs.get().inner.clone();
    let r = py.detach(move || core_sketch::sketch(view, &f));
    Ok(Sketch {
        inner: core(py, r)?,
    })
}

/// The within-cluster variance per coordinate `σ²` estimated from a subsample (`n x p`):
/// `rounds` Lloyd iterations from a seeded k-means++ start with `k` centres, then the mean
/// squared distance to the nearest centre over `p` (the heuristic of `mlmatvamp sketch`, which
/// uses at most 10 000 points of the first chunk).
#[pyfunction]
#[pyo3(signature = (sample, k, rounds=10, seed=0))]
pub fn estimate_sigma2(
    py: Python<'_>,
    sample: &Bound<'_, PyAny>,
    k: usize,
    rounds: usize,
    seed: u64,
) -> PyResult<f64> {
    let a = ArrayArg::new(sample, "sample")?;
    let view = a.mat(py, false)?;
    let r = py.detach(move || core_sketch::estimate_sigma2(view, k, rounds, seed));
    core(py, r)
}

// ---------------------------------------------------------------------------------------------
// Finished sketches
// ---------------------------------------------------------------------------------------------

/// A finished sketch: `y_m = (1/T) Σ_t e^{i w_mᵀ(x_t − μ)}`, centred at the data mean `μ`, with
/// `T`, `μ` and the per-coordinate variance of the data.
///
/// `Sketch(y, count, mean, variance)` rebuilds one from its parts (e.g. `sketch.npy` and
/// `sketch.json` of `mlmatvamp sketch`); `y` is `M x 2` (real, imaginary) or a complex vector.
/// Picklable.
///
/// Args:
///     y: `M x 2` real array (real and imaginary parts) or a length-`M` complex array.
///     count: the number of points `T`.
///     mean: the data mean (length `p`).
///     variance: the per-coordinate variance of the data (length `p`).
#[pyclass(frozen, module = "mlmatvamp._core")]
pub struct Sketch {
    pub(crate) inner: CoreSketch,
}

#[pymethods]
impl Sketch {
    #[new]
    fn new(
        py: Python<'_>,
        y: &Bound<'_, PyAny>,
        count: u64,
        mean: &Bound<'_, PyAny>,
        variance: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let np = crate::arrays::numpy(py)?;
        let y = np.call_method1("asarray", (y,))?;
        let y = if y.getattr("dtype")?.getattr("kind")?.extract::<String>()? == "c" {
            let re = y.getattr("real")?;
            let im = y.getattr("imag")?;
            np.call_method1("column_stack", ((re, im),))?
        } else {
            y
        };
        let ya = ArrayArg::new(&y, "y")?;
        let y = ya.to_mat(py, false)?;
        if y.ncols() != 2 || y.nrows() == 0 {
            return Err(ya.shape_error(py, "M x 2 (real, imaginary), M >= 1"));
        }
        mlmatvamp_check_finite(py, "y", &y)?;
        let mean = ArrayArg::new(mean, "mean")?.vector(py)?;
        let variance = vector_of(py, variance, "variance", mean.len())?;
        if count == 0 {
            return Err(to_pyerr(
                py,
                Error::invalid("count", "the sketch has seen no points (T = 0)"),
            ));
        }
        Ok(Sketch {
            inner: CoreSketch {
                y,
                count,
                mean,
                variance,
            },
        })
    }

    /// `y` as a new `M x 2` array (real, imaginary parts: the layout of `sketch.npy`).
    #[getter]
    fn y<'py>(&self, py: Python<'py>) -> Bound<'py, numpy::PyArray2<f64>> {
        mat_to_py(py, self.inner.y.as_ref())
    }
    /// `y` as a complex array (length `M`).
    #[getter]
    fn values<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<Complex64>> {
        let y = &self.inner.y;
        let v: Vec<Complex64> = (0..y.nrows())
            .map(|i| Complex64::new(y[(i, 0)], y[(i, 1)]))
            .collect();
        PyArray1::from_vec(py, v)
    }
    /// The number of points `T`.
    #[getter]
    fn count(&self) -> u64 {
        self.inner.count
    }
    /// The data mean `μ` (length `p`).
    #[getter]
    fn mean<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        vec_to_py(py, &self.inner.mean)
    }
    /// The per-coordinate variance of the data (length `p`).
    #[getter]
    fn variance<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        vec_to_py(py, &self.inner.variance)
    }
    /// `M`.
    #[getter]
    fn m(&self) -> usize {
        self.inner.y.nrows()
    }
    /// `p`.
    #[getter]
    fn p(&self) -> usize {
        self.inner.mean.len()
    }
    /// The sketch at the first `m` frequencies (matches `Frequencies.prefix(m)`).
    fn prefix(&self, py: Python<'_>, m: usize) -> PyResult<Self> {
        Ok(Sketch {
            inner: core(py, self.inner.prefix(m))?,
        })
    }
    fn __repr__(&self) -> String {
        format!(
            "<Sketch T = {}, M = {}, p = {}>",
            self.inner.count,
            self.inner.y.nrows(),
            self.inner.mean.len()
        )
    }
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let cls = py.get_type::<Sketch>();
        let args = PyTuple::new(
            py,
            [
                mat_to_py(py, self.inner.y.as_ref()).into_any(),
                self.inner.count.into_pyobject(py)?.into_any(),
                vec_to_py(py, &self.inner.mean).into_any(),
                vec_to_py(py, &self.inner.variance).into_any(),
            ],
        )?;
        PyTuple::new(py, [cls.into_any(), args.into_any()])
    }
}

fn mlmatvamp_check_finite(py: Python<'_>, what: &str, m: &Mat<f64>) -> PyResult<()> {
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            if !m[(i, j)].is_finite() {
                return Err(to_pyerr(
                    py,
                    Error::NonFinite {
                        what: what.into(),
                        detail: format!("row {i}, column {j} is {}", m[(i, j)]),
                    },
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------------------------

/// Centroids from a sketch by ML-Mat-VAMP (`mlmatvamp::apps::cluster::recover`; wrapped by
/// `mlmatvamp.sketch.cluster`). Returns a dict: `centroids` (`K x p`, data coordinates),
/// `weights`, `residual`, `best`, `restarts`, `history`, `sigma2`, `noise`, `prior_variance`,
/// `seconds`.
#[pyfunction]
#[pyo3(signature = (sketch, freqs, k, *, estimator="map", restarts=None, iterations=None,
                    rounds=None, seed=0, sigma2=None, noise=None, init=None, options=None))]
pub fn _cluster<'py>(
    py: Python<'py>,
    sketch: &Bound<'_, Sketch>,
    freqs: &Bound<'_, Frequencies>,
    k: usize,
    estimator: &str,
    restarts: Option<usize>,
    iterations: Option<usize>,
    rounds: Option<usize>,
    seed: u64,
    sigma2: Option<f64>,
    noise: Option<f64>,
    init: Option<&Bound<'_, PyAny>>,
    options: Option<&Bound<'_, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let mut c: ClusterConfig = match options {
        Some(o) => from_py(py, o, "options")?,
        None => ClusterConfig::default(),
    };
    c.k = k;
    c.estimator = named(py, estimator, "estimator", "\"map\", \"mmse\"")?;
    c.seed = seed;
    if let Some(r) = restarts {
        c.restarts = r;
    }
    if let Some(i) = iterations {
        c.iterations = i;
    }
    if let Some(r) = rounds {
        c.rounds = r;
    }
    if sigma2.is_some() {
        c.sigma2 = sigma2;
    }
    if noise.is_some() {
        c.noise = noise;
    }
    let init_mat = match init {
        Some(i) => {
            let a = ArrayArg::new(i, "init")?;
            let m = a.to_mat(py, false)?;
            if m.nrows() != k || m.ncols() != freqs.get().inner.p() {
                return Err(a.shape_error(
                    py,
                    &format!(
                        "K x p = {k} x {} (starting centroids)",
                        freqs.get().inner.p()
                    ),
                ));
            }
            Some(m)
        }
        None => None,
    };
    let s = sketch.get().inner.clone();
    let f = freqs.get().inner.clone();
    let start = std::time::Instant::now();
    let r = py.detach(move || recover_from(&s, &f, &c, init_mat.as_ref().map(|m| m.as_ref())));
    crate::record_call(start.elapsed().as_secs_f64());
    let res = core(py, r)?;
    let d = PyDict::new(py);
    d.set_item("centroids", mat_to_py(py, res.centroids.as_ref()))?;
    d.set_item("weights", vec_to_py(py, &res.weights))?;
    d.set_item("residual", res.residual)?;
    d.set_item("best", res.best)?;
    d.set_item("restarts", to_py(py, &res.restarts)?)?;
    d.set_item("history", to_py(py, &res.history)?)?;
    d.set_item("sigma2", res.sigma2)?;
    d.set_item("noise", res.noise)?;
    d.set_item("prior_variance", res.prior_variance)?;
    d.set_item("seconds", res.seconds)?;
    Ok(d)
}
