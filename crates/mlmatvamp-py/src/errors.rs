//! From the core's [`mlmatvamp::Error`] to the Python exception hierarchy.
//!
//! The exception classes are defined in pure Python (`mlmatvamp/_errors.py`), where multiple
//! inheritance is natural (`ShapeError(MlmatvampError, ValueError)`); this module looks them up
//! once and raises them with the core's message and its structured fields as attributes.

use mlmatvamp::Error;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use std::sync::{Arc, Mutex};

static ERRORS_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    ERRORS_MODULE
        .get_or_try_init(py, || py.import("mlmatvamp._errors").map(|m| m.unbind()))
        .map(|m| m.bind(py))
}

/// The exception class `name` of `mlmatvamp._errors`.
pub fn error_class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    Ok(errors_module(py)?.getattr(name)?.cast_into::<PyType>()?)
}

/// An exception of class `name` with message `msg` and attributes `attrs`.
fn raise(py: Python<'_>, name: &str, msg: String, attrs: &[(&str, Py<PyAny>)]) -> PyErr {
    let class = match error_class(py, name) {
        Ok(c) => c,
        // The package's Python part is missing (the extension imported on its own).
        Err(_) => return PyRuntimeError::new_err(msg),
    };
    match class.call1((msg.clone(),)) {
        Ok(instance) => {
            for (k, v) in attrs {
                let _ = instance.setattr(*k, v.bind(py));
            }
            PyErr::from_value(instance)
        }
        Err(e) => e,
    }
}

fn s(py: Python<'_>, v: &str) -> Py<PyAny> {
    v.into_pyobject(py).unwrap().into_any().unbind()
}

/// The Python exception for a core error.
pub fn to_pyerr(py: Python<'_>, e: Error) -> PyErr {
    let msg = e.to_string();
    match &e {
        Error::Shape {
            what,
            expected,
            got,
        } => raise(
            py,
            "ShapeError",
            msg,
            &[
                ("what", s(py, what)),
                ("expected", s(py, expected)),
                ("got", s(py, got)),
            ],
        ),
        Error::NonFinite { what, detail } => raise(
            py,
            "NonFiniteError",
            msg,
            &[("what", s(py, what)), ("detail", s(py, detail))],
        ),
        Error::NotSymmetric { what, detail } => raise(
            py,
            "NotSymmetricError",
            msg,
            &[("what", s(py, what)), ("detail", s(py, detail))],
        ),
        Error::NotPositiveDefinite { what, detail } => raise(
            py,
            "NotPositiveDefiniteError",
            msg,
            &[("what", s(py, what)), ("detail", s(py, detail))],
        ),
        Error::Diverged {
            location,
            iteration,
            detail,
        } => raise(
            py,
            "DivergenceError",
            msg,
            &[
                ("location", s(py, location)),
                (
                    "iteration",
                    iteration.into_pyobject(py).unwrap().into_any().unbind(),
                ),
                ("detail", s(py, detail)),
            ],
        ),
        Error::Invalid { what, detail } => raise(
            py,
            "InvalidArgumentError",
            msg,
            &[("what", s(py, what)), ("detail", s(py, detail))],
        ),
        Error::Config { path, detail } => {
            let p = path
                .as_ref()
                .map(|p| s(py, &p.display().to_string()))
                .unwrap_or_else(|| py.None());
            raise(
                py,
                "ConfigurationError",
                msg,
                &[("path", p), ("detail", s(py, detail))],
            )
        }
        Error::Data { path, detail } => raise(
            py,
            "DataFileError",
            msg,
            &[
                ("path", s(py, &path.display().to_string())),
                ("detail", s(py, detail)),
            ],
        ),
        Error::Io { path, source, .. } => {
            // OSError(errno, strerror, filename) becomes FileNotFoundError etc. by itself.
            match source.raw_os_error() {
                Some(code) => PyOSError::new_err((code, msg, path.display().to_string())),
                None => PyOSError::new_err(msg),
            }
        }
        Error::Stopped { what } => raise(py, "StoppedError", msg, &[("what", s(py, what))]),
        Error::Numerical { what, detail } => raise(
            py,
            "NumericalError",
            msg,
            &[("what", s(py, what)), ("detail", s(py, detail))],
        ),
        #[allow(unreachable_patterns)]
        _ => raise(py, "MlmatvampError", msg, &[]),
    }
}

/// Where a Python callable (an operator's `matmat`, a callback) leaves the exception it raised,
/// so that the original exception is re-raised after the Rust call returns, instead of the
/// core's error that merely reports the failure.
#[derive(Clone, Default)]
pub struct ErrSlot(Arc<Mutex<Option<PyErr>>>);

impl ErrSlot {
    /// Keeps `e` unless an earlier exception is already kept (the first one is the cause).
    pub fn keep(&self, e: PyErr) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(e);
        }
    }
    /// Takes the kept exception, if any.
    pub fn take(&self) -> Option<PyErr> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
    /// Whether an exception is kept.
    pub fn is_set(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
    /// Whether two slots are the same.
    pub fn same(&self, other: &ErrSlot) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A set of slots (one per Python operator of a network, plus the call's own).
#[derive(Clone, Default)]
pub struct Slots(pub Vec<ErrSlot>);

impl Slots {
    /// Adds the slots of `other` not already present.
    pub fn extend(&mut self, other: &Slots) {
        for s in &other.0 {
            if !self.0.iter().any(|t| t.same(s)) {
                self.0.push(s.clone());
            }
        }
    }
    /// Forgets anything kept (before a new call).
    pub fn clear(&self) {
        for s in &self.0 {
            let _ = s.take();
        }
    }
    /// The first kept exception, if any (all slots are emptied).
    pub fn take(&self) -> Option<PyErr> {
        let mut first = None;
        for s in &self.0 {
            if let Some(e) = s.take() {
                first.get_or_insert(e);
            }
        }
        first
    }
}

/// A core result to a Python result: the kept Python exception if a Python callable failed
/// (the core's error then only reports it), else the mapped core error.
pub fn check<T>(py: Python<'_>, r: mlmatvamp::Result<T>, slots: &Slots) -> PyResult<T> {
    match r {
        Ok(v) => match slots.take() {
            // A kept exception with a successful result: a stop request (Ctrl-C, a callback
            // that raised) — the result is discarded and the exception raised.
            Some(e) => Err(e),
            None => Ok(v),
        },
        Err(e) => match slots.take() {
            Some(pe) => Err(pe),
            None => Err(to_pyerr(py, e)),
        },
    }
}
