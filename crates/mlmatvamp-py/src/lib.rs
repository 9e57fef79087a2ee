//! `mlmatvamp._core`: the Python extension module over the `mlmatvamp` core library.
//!
//! The public Python API is the package `mlmatvamp` (`python/mlmatvamp/__init__.py`), which
//! re-exports the classes defined here and wraps the `_`-prefixed functions, turning the
//! JSON records they return into dicts of numpy arrays. Design notes: `docs/python.md`.
//!
//! * `arrays` — numpy in and out (zero-copy views, dtype rules, the conversion log);
//! * `errors` — the core's errors as the Python exception hierarchy;
//! * `factors` — priors, layers, outputs and operators as Python classes;
//! * `pyop` — a Python `matmat`/`rmatmat` object as a core linear operator;
//! * `network` — the network, Algorithm 1, the state evolution, configuration files;
//! * `experiments` — the experiments and `compare`;
//! * `sketch` — sketched clustering: frequencies, mergeable (picklable) partial sketches, the
//!   recovery of the centroids.

// PyO3's generated code for `#[pyfunction]`s with many arguments.
#![allow(clippy::too_many_arguments)]

use pyo3::prelude::*;

mod arrays;
mod errors;
mod experiments;
mod factors;
mod network;
mod pyop;
mod sketch;
mod util;

/// `(argument, mode)` for the recent array conversions, oldest first (`mode`: `"view"` — read
/// in place, no copy; `"copy"` — read in place and copied once into the core's storage;
/// `"converted"` — converted to a new float64 array first). `clear=True` empties the log.
#[pyfunction]
#[pyo3(signature = (clear=false))]
fn _conversion_log(clear: bool) -> Vec<(String, &'static str)> {
    arrays::conversion_log(clear)
}

/// Seconds the last solve, state evolution or experiment spent inside the core (from the
/// calling thread releasing the GIL to the core returning): the call's wall time minus this is
/// the binding's own cost (`python/benchmarks/bench.py`).
#[pyfunction]
fn _last_call_seconds() -> f64 {
    f64::from_bits(LAST_CALL.load(std::sync::atomic::Ordering::Relaxed))
}

static LAST_CALL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Records the core time of a call (see `_last_call_seconds`).
pub(crate) fn record_call(seconds: f64) {
    LAST_CALL.store(seconds.to_bits(), std::sync::atomic::Ordering::Relaxed);
}

/// The number of threads of the pool the core computes on (one per core unless
/// `RAYON_NUM_THREADS` is set before the first computation).
#[pyfunction]
fn threads() -> usize {
    rayon::current_num_threads()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Bit-identical results whatever the thread count, as the CLI.
    mlmatvamp::use_deterministic_parallelism();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<factors::Prior>()?;
    m.add_class::<factors::GaussianPrior>()?;
    m.add_class::<factors::BernoulliGaussianPrior>()?;
    m.add_class::<factors::GroupLassoPrior>()?;
    m.add_class::<factors::MismatchedPrior>()?;
    m.add_class::<factors::Operator>()?;
    m.add_class::<factors::DenseOperator>()?;
    m.add_class::<factors::SparseOperator>()?;
    m.add_class::<factors::DctOperator>()?;
    m.add_class::<factors::Layer>()?;
    m.add_class::<factors::LinearLayer>()?;
    m.add_class::<factors::ActivationLayer>()?;
    m.add_class::<factors::Output>()?;
    m.add_class::<factors::AwgnOutput>()?;
    m.add_class::<factors::TwoLayerOutput>()?;
    m.add_class::<factors::MixedRegressionOutput>()?;
    m.add_class::<network::Network>()?;
    m.add_class::<network::Problem>()?;
    m.add_function(wrap_pyfunction!(network::_solve, m)?)?;
    m.add_function(wrap_pyfunction!(network::_from_toml, m)?)?;
    m.add_function(wrap_pyfunction!(network::_state_evolution, m)?)?;
    m.add_function(wrap_pyfunction!(network::_state_evolution_config, m)?)?;
    m.add_function(wrap_pyfunction!(experiments::_fig2, m)?)?;
    m.add_function(wrap_pyfunction!(experiments::_two_layer, m)?)?;
    m.add_function(wrap_pyfunction!(experiments::_mmv, m)?)?;
    m.add_function(wrap_pyfunction!(experiments::_mixed, m)?)?;
    m.add_function(wrap_pyfunction!(experiments::_inpaint, m)?)?;
    m.add_function(wrap_pyfunction!(experiments::_compare, m)?)?;
    m.add_class::<sketch::Frequencies>()?;
    m.add_class::<sketch::PartialSketch>()?;
    m.add_class::<sketch::Sketch>()?;
    m.add_function(wrap_pyfunction!(sketch::sketch_block, m)?)?;
    m.add_function(wrap_pyfunction!(sketch::merge, m)?)?;
    m.add_function(wrap_pyfunction!(sketch::sketch, m)?)?;
    m.add_function(wrap_pyfunction!(sketch::estimate_sigma2, m)?)?;
    m.add_function(wrap_pyfunction!(sketch::_cluster, m)?)?;
    m.add_function(wrap_pyfunction!(_conversion_log, m)?)?;
    m.add_function(wrap_pyfunction!(_last_call_seconds, m)?)?;
    m.add_function(wrap_pyfunction!(threads, m)?)?;
    Ok(())
}
