//! numpy arrays in and out.
//!
//! **In.** A float64 array (C order, Fortran order, or any strided view of either, native byte
//! order, aligned) is read *in place*: faer's `MatRef` takes a pointer, a row stride and a column
//! stride, so a C-ordered `n x d` array is the view with strides `(d, 1)` and a Fortran-ordered
//! one the view with strides `(1, n)`; nothing is copied. Where the core keeps the matrix (an
//! observation, a bias) it copies it once into its own storage from that view. Other real dtypes
//! (float32, integers, bool) and array-likes (lists, scalars, objects with `__array__`) are
//! converted to float64 first. Complex, object, string or other non-numeric dtypes are a
//! `TypeError` that names the argument.
//!
//! Every conversion is logged (argument name and what happened: `"view"`, `"copy"`,
//! `"converted"`) in a small ring buffer that `mlmatvamp._core._conversion_log()` returns, so
//! that tests can check that an input was not copied.
//!
//! **Out.** Results are new numpy arrays (Fortran order for `n x d` estimates).

use crate::errors::to_pyerr;
use faer::{Mat, MatRef};
use mlmatvamp::spd::{DMat, Spd};
use mlmatvamp::Error;
use numpy::prelude::*;
use numpy::{PyArray2, PyArrayDyn, PyUntypedArray};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use std::sync::Mutex;

static NUMPY: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The `numpy` module.
pub fn numpy(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    NUMPY
        .get_or_try_init(py, || py.import("numpy").map(|m| m.unbind()))
        .map(|m| m.bind(py))
}

/// What happened to an input array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Read in place (no copy).
    View,
    /// Read in place and copied once into the core's own storage (the core keeps it).
    Copy,
    /// Converted to a new float64 array first (another dtype, an array-like, a misaligned or
    /// byte-swapped array).
    Converted,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::View => "view",
            Mode::Copy => "copy",
            Mode::Converted => "converted",
        }
    }
}

static LOG: Mutex<Vec<(String, &'static str)>> = Mutex::new(Vec::new());
const LOG_LEN: usize = 256;

fn note(name: &str, mode: Mode) {
    let mut log = LOG.lock().unwrap_or_else(|p| p.into_inner());
    if log.len() >= LOG_LEN {
        log.remove(0);
    }
    log.push((name.to_string(), mode.name()));
}

/// The conversion log: `(argument, mode)` pairs, oldest first; `clear` empties it.
pub fn conversion_log(clear: bool) -> Vec<(String, &'static str)> {
    let mut log = LOG.lock().unwrap_or_else(|p| p.into_inner());
    let out = log.clone();
    if clear {
        log.clear();
    }
    out
}

/// A float64 array argument, kept alive while its data is viewed.
pub struct ArrayArg<'py> {
    /// Keeps the array (the caller's or the converted one) alive.
    _array: Bound<'py, PyAny>,
    name: String,
    shape: Vec<usize>,
    /// Strides in elements.
    strides: Vec<isize>,
    ptr: *const f64,
    converted: bool,
}

fn shape_text(shape: &[usize]) -> String {
    match shape.len() {
        0 => "a scalar (0-D array)".to_string(),
        1 => format!("a 1-D array of length {}", shape[0]),
        _ => format!(
            "a {}-D array of shape ({})",
            shape.len(),
            shape
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl<'py> ArrayArg<'py> {
    /// Reads `obj` as a float64 array (see the module documentation).
    pub fn new(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Self> {
        let py = obj.py();
        let np = numpy(py)?;
        let (mut any, mut converted) = if obj.cast::<PyUntypedArray>().is_ok() {
            (obj.clone(), false)
        } else {
            let a = np.call_method1("asarray", (obj,)).map_err(|e| {
                PyTypeError::new_err(format!(
                    "argument `{name}`: expected a real numeric array, got {} ({e})",
                    type_name(obj)
                ))
            })?;
            (a, true)
        };
        let ua = any.cast::<PyUntypedArray>()?.clone();
        let dtype = ua.dtype();
        let kind = dtype.kind();
        if !matches!(kind, b'f' | b'i' | b'u' | b'b') || dtype.has_fields() {
            let dt = dtype.str().map(|s| s.to_string()).unwrap_or_default();
            return Err(PyTypeError::new_err(format!(
                "argument `{name}`: expected a real numeric array, got {} of dtype {dt}",
                if converted {
                    type_name(obj)
                } else {
                    "an array".to_string()
                }
            )));
        }
        let usable = |a: &Bound<'py, PyAny>| -> bool {
            match a.cast::<PyArrayDyn<f64>>() {
                Ok(arr) => {
                    let aligned = (arr.data() as usize).is_multiple_of(std::mem::align_of::<f64>())
                        && arr.strides().iter().all(|s| s % 8 == 0);
                    aligned && arr.dtype().is_native_byteorder() != Some(false)
                }
                Err(_) => false,
            }
        };
        if !usable(&any) {
            // Another dtype, byte-swapped or misaligned: a fresh float64 array.
            let f64_dtype = np.getattr("float64")?;
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("dtype", f64_dtype)?;
            kwargs.set_item("order", "K")?;
            kwargs.set_item("copy", true)?;
            any = np.call_method("array", (any,), Some(&kwargs))?;
            converted = true;
        }
        let arr = any.cast::<PyArrayDyn<f64>>()?.clone();
        let shape = arr.shape().to_vec();
        let strides = arr.strides().iter().map(|s| s / 8).collect();
        let ptr = arr.data() as *const f64;
        Ok(ArrayArg {
            _array: any,
            name: name.to_string(),
            shape,
            strides,
            ptr,
            converted,
        })
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn mode(&self) -> Mode {
        if self.converted {
            Mode::Converted
        } else {
            Mode::View
        }
    }

    /// A shape error naming this argument.
    pub fn shape_error(&self, py: Python<'_>, expected: &str) -> PyErr {
        to_pyerr(
            py,
            Error::shape(self.name.clone(), expected, shape_text(&self.shape)),
        )
    }

    /// The array as an `n x m` matrix view (no copy). With `column_ok`, a 1-D array of length
    /// `n` is the `n x 1` column.
    pub fn mat(&self, py: Python<'_>, column_ok: bool) -> PyResult<MatRef<'_, f64>> {
        let view = match self.shape.len() {
            2 => unsafe {
                // SAFETY: the pointer, shape and strides are numpy's for an aligned float64
                // array that `self` keeps alive; faer accepts any (also negative) strides.
                MatRef::from_raw_parts(
                    self.ptr,
                    self.shape[0],
                    self.shape[1],
                    self.strides[0],
                    self.strides[1],
                )
            },
            1 if column_ok => unsafe {
                // SAFETY: as above, a single column.
                MatRef::from_raw_parts(self.ptr, self.shape[0], 1, self.strides[0], 1)
            },
            _ => {
                return Err(self.shape_error(
                    py,
                    if column_ok {
                        "a 2-D array (or a 1-D array for one column)"
                    } else {
                        "a 2-D array"
                    },
                ))
            }
        };
        note(&self.name, self.mode());
        Ok(view)
    }

    /// The matrix copied into the core's own storage.
    pub fn to_mat(&self, py: Python<'_>, column_ok: bool) -> PyResult<Mat<f64>> {
        let m = self.mat(py, column_ok)?.to_owned();
        // Replace the "view" just logged by what really happened.
        let mut log = LOG.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = log.last_mut() {
            last.1 = if self.converted {
                Mode::Converted.name()
            } else {
                Mode::Copy.name()
            };
        }
        Ok(m)
    }

    /// The array as a vector (1-D, or a scalar as a vector of length 1).
    pub fn vector(&self, py: Python<'_>) -> PyResult<Vec<f64>> {
        let v = match self.shape.len() {
            0 => vec![unsafe { *self.ptr }],
            1 => (0..self.shape[0])
                // SAFETY: in bounds of the 1-D array kept alive by `self`.
                .map(|i| unsafe { *self.ptr.offset(i as isize * self.strides[0]) })
                .collect(),
            _ => return Err(self.shape_error(py, "a 1-D array (a vector)")),
        };
        note(
            &self.name,
            if self.converted {
                Mode::Converted
            } else {
                Mode::Copy
            },
        );
        Ok(v)
    }

    /// A scalar (0-D) value, if the array is one.
    pub fn scalar(&self) -> Option<f64> {
        // SAFETY: a 0-D array has one element.
        (self.shape.is_empty()).then(|| unsafe { *self.ptr })
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an object".into())
}

/// A `d x d` matrix argument: a 2-D array, or a scalar `s` meaning `s I_d` (needs `d`).
pub fn square_arg(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    name: &str,
    d: Option<usize>,
) -> PyResult<DMat> {
    let a = ArrayArg::new(obj, name)?;
    if let Some(s) = a.scalar() {
        let d = d.ok_or_else(|| {
            to_pyerr(
                py,
                Error::invalid(
                    name,
                    "a scalar needs the dimension d to be known; give a d x d array",
                ),
            )
        })?;
        return Ok(DMat::identity(d, d) * s);
    }
    if a.shape().len() == 1 && a.shape()[0] == 1 && d.is_none_or(|d| d == 1) {
        let v = a.vector(py)?;
        return Ok(DMat::from_element(1, 1, v[0]));
    }
    let m = a.mat(py, false)?;
    Ok(DMat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)]))
}

/// A symmetric positive-definite `d x d` argument (checked by the core: shape, finite,
/// symmetric, positive definite, each a named error).
pub fn spd_arg(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    name: &str,
    d: Option<usize>,
) -> PyResult<Spd> {
    let m = square_arg(py, obj, name, d)?;
    Spd::new(name, m, d).map_err(|e| to_pyerr(py, e))
}

/// A vector argument (1-D array, list or scalar).
pub fn vector_arg(py: Python<'_>, obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<f64>> {
    ArrayArg::new(obj, name)?.vector(py)
}

/// A new `n x m` numpy array (Fortran order) holding `m`.
pub fn mat_to_py<'py>(py: Python<'py>, m: MatRef<'_, f64>) -> Bound<'py, PyArray2<f64>> {
    let out = PyArray2::<f64>::zeros(py, [m.nrows(), m.ncols()], true);
    {
        // SAFETY: a new, contiguous (Fortran) array that nothing else references yet.
        let slice = unsafe { out.as_slice_mut() }.expect("a new contiguous array");
        let n = m.nrows();
        for j in 0..m.ncols() {
            let col = m.col(j);
            for i in 0..n {
                slice[j * n + i] = col[i];
            }
        }
    }
    out
}

/// A new `d x d` numpy array holding `m`.
pub fn dmat_to_py<'py>(py: Python<'py>, m: &DMat) -> Bound<'py, PyArray2<f64>> {
    let out = PyArray2::<f64>::zeros(py, [m.nrows(), m.ncols()], true);
    {
        // SAFETY: as above.
        let slice = unsafe { out.as_slice_mut() }.expect("a new contiguous array");
        slice.copy_from_slice(m.as_slice());
    }
    out
}
