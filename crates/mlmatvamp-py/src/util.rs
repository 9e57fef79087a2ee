//! Small shared helpers: core results, options given as Python dicts, enum names.

use crate::errors::to_pyerr;
use mlmatvamp::Error;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;
use serde::de::DeserializeOwned;
use serde::Serialize;

static JSON: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn json(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    JSON.get_or_try_init(py, || py.import("json").map(|m| m.unbind()))
        .map(|m| m.bind(py))
}

/// A core result as a Python result.
pub fn core<T>(py: Python<'_>, r: mlmatvamp::Result<T>) -> PyResult<T> {
    r.map_err(|e| to_pyerr(py, e))
}

/// A core configuration type from a Python value (a dict of options, a list, a string),
/// through JSON, so that every option of the Rust type is available under its Rust name and
/// unknown keys are rejected by the type itself (`deny_unknown_fields`).
pub fn from_py<T: DeserializeOwned>(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<T> {
    let kwargs = PyDict::new(py);
    kwargs.set_item("default", py.get_type::<pyo3::types::PyString>())?;
    let text: String = json(py)?
        .call_method("dumps", (obj,), Some(&kwargs))?
        .extract()?;
    serde_json::from_str(&text)
        .map_err(|e| to_pyerr(py, Error::invalid(what, format!("{e} (given {text})"))))
}

/// A core record (anything serialisable: histories, reports) as Python objects — dicts, lists,
/// floats (NaN and infinities are `None`, as in the JSON files), ints, strings — built directly
/// from its JSON value, without text. The pure-Python part turns them into dicts of arrays.
pub fn to_py<'py, T: Serialize>(py: Python<'py>, v: &T) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(v).map_err(|e| {
        to_pyerr(
            py,
            Error::invalid("result", format!("cannot serialise: {e}")),
        )
    })?;
    value_to_py(py, &value)
}

fn value_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => s.into_pyobject(py)?.into_any(),
        Value::Array(a) => {
            let items = a
                .iter()
                .map(|x| value_to_py(py, x))
                .collect::<PyResult<Vec<_>>>()?;
            pyo3::types::PyList::new(py, items)?.into_any()
        }
        Value::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, value_to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

/// An enum option given by its name (`"mmse"`, `"relu"`, …).
pub fn named<T: DeserializeOwned>(
    py: Python<'_>,
    name: &str,
    what: &str,
    choices: &str,
) -> PyResult<T> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|_| {
        to_pyerr(
            py,
            Error::invalid(
                what,
                format!("unknown value `{name}`; expected one of {choices}"),
            ),
        )
    })
}
