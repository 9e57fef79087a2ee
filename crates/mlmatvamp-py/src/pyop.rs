//! A Python object with `shape`, `matmat(X)` and `rmatmat(Y)` (the
//! `scipy.sparse.linalg.LinearOperator` protocol) as a core [`LinearOperator`]; an optional
//! `gram(X)` computing `WᵀW X` in one call is used for the conjugate gradients' products.
//!
//! The core calls `apply`/`apply_transpose` with the GIL released (the solve runs without it);
//! each call re-acquires the GIL, checks for Ctrl-C, copies the `n x d` block into a new numpy
//! array, calls the method and copies the result back (any real dtype, any layout, or anything
//! `numpy.asarray` accepts, e.g. a dask array, which it computes). An exception raised by the
//! method (or a result of the wrong shape or dtype) is kept in the operator's [`ErrSlot`] and
//! reported to the core as an error; the binding re-raises the original exception when the core
//! returns.

use crate::arrays::{mat_to_py, numpy, ArrayArg};
use crate::errors::{to_pyerr, ErrSlot};
use faer::{MatMut, MatRef};
use mlmatvamp::operator::LinearOperator;
use mlmatvamp::Error;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

/// A Python operator.
pub struct PyOperator {
    obj: Py<PyAny>,
    shape: (usize, usize),
    name: String,
    slot: ErrSlot,
    /// Whether the object has the optional `gram(X)` (`WᵀW X` in one call).
    gram: bool,
}

impl PyOperator {
    /// Wraps `obj`: reads its `shape` (two positive integers) and checks that it has `matmat`
    /// and `rmatmat`.
    pub fn new(obj: &Bound<'_, PyAny>, arg: &str) -> PyResult<Self> {
        for m in ["matmat", "rmatmat"] {
            if !obj.hasattr(m)? {
                return Err(PyTypeError::new_err(format!(
                    "argument `{arg}`: an operator needs `shape`, `matmat(X)` and `rmatmat(Y)`; {} has no `{m}`",
                    describe(obj)
                )));
            }
        }
        let shape: (usize, usize) = obj
            .getattr("shape")
            .and_then(|s| s.extract())
            .map_err(|_| {
                PyTypeError::new_err(format!(
                    "argument `{arg}`: an operator's `shape` must be a pair of non-negative integers (n_out, n_in); {} has none",
                    describe(obj)
                ))
            })?;
        Ok(PyOperator {
            obj: obj.clone().unbind(),
            shape,
            name: describe(obj),
            slot: ErrSlot::default(),
            gram: obj.hasattr("gram")?,
        })
    }

    /// Where a failure of this operator is kept.
    pub fn slot(&self) -> ErrSlot {
        self.slot.clone()
    }

    /// Calls `method` on `x` and writes the `rows x d` result into `out`.
    fn call(
        &self,
        method: &str,
        x: MatRef<'_, f64>,
        mut out: MatMut<'_, f64>,
    ) -> mlmatvamp::Result<()> {
        let rows = out.nrows();
        let d = x.ncols();
        Python::attach(|py| {
            let fail = |e: PyErr| -> Error {
                let detail = e.to_string();
                self.slot.keep(e);
                Error::Numerical {
                    what: format!("{}.{method} (a Python operator)", self.name),
                    detail,
                }
            };
            if self.slot.is_set() {
                return Err(Error::Numerical {
                    what: format!("{}.{method} (a Python operator)", self.name),
                    detail: "an earlier call failed".into(),
                });
            }
            py.check_signals().map_err(fail)?;
            let arg = mat_to_py(py, x);
            let result = self
                .obj
                .bind(py)
                .call_method1(method, (arg,))
                .map_err(fail)?;
            // `numpy.asarray` computes lazy arrays (dask) and accepts np.matrix results.
            let result = numpy(py)
                .and_then(|np| np.call_method1("asarray", (result,)))
                .map_err(fail)?;
            let what = format!("result of {}.{method}", self.name);
            let a = ArrayArg::new(&result, &what).map_err(fail)?;
            let view = a.mat(py, d == 1).map_err(fail)?;
            if view.nrows() != rows || view.ncols() != d {
                let e = Error::shape(
                    what,
                    format!("{rows} x {d}"),
                    format!("{} x {}", view.nrows(), view.ncols()),
                );
                return Err(fail(to_pyerr(py, e)));
            }
            out.copy_from(view);
            Ok(())
        })
    }
}

fn describe(obj: &Bound<'_, PyAny>) -> String {
    let ty = obj
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".into());
    format!("Python operator {ty}")
}

impl LinearOperator for PyOperator {
    fn shape(&self) -> (usize, usize) {
        self.shape
    }
    fn describe(&self) -> String {
        format!("{} {} x {}", self.name, self.shape.0, self.shape.1)
    }
    fn apply(&self, x: MatRef<'_, f64>, out: MatMut<'_, f64>) -> mlmatvamp::Result<()> {
        self.call("matmat", x, out)
    }
    fn apply_transpose(&self, y: MatRef<'_, f64>, out: MatMut<'_, f64>) -> mlmatvamp::Result<()> {
        self.call("rmatmat", y, out)
    }
    /// `gram(X)` if the object has it (one call instead of two: what a remote operator wants,
    /// every call being a round trip), else `rmatmat(matmat(X))`.
    fn apply_gram(&self, x: MatRef<'_, f64>, out: MatMut<'_, f64>) -> mlmatvamp::Result<()> {
        if self.gram {
            return self.call("gram", x, out);
        }
        let mut wx = faer::Mat::<f64>::zeros(self.shape.0, x.ncols());
        self.call("matmat", x, wx.as_mut())?;
        self.call("rmatmat", wx.as_ref(), out)
    }
}
