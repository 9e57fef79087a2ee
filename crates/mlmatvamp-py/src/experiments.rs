//! The experiments (`fig2`, `two-layer`, `mmv`, `mixed`, `inpaint`) and `compare`: the core's
//! drivers, with their options given as a dict (the Rust configuration type's fields) and their
//! report returned as Python dicts and lists, which the pure-Python part turns into dicts of
//! arrays.
//!
//! The drivers run their trials on the rayon pool and report finished trials to an
//! [`Observer`]. The driver runs on a helper thread while the calling thread waits with the GIL
//! released, waking every 50 ms to check for Ctrl-C (signals can only be handled on Python's
//! main thread); an interrupt asks the observer to stop, the driver finishes the trials in
//! flight and returns, and the `KeyboardInterrupt` is raised. The single two-layer trial takes
//! no observer and runs on the calling thread instead.

use crate::errors::{check, ErrSlot, Slots};
use crate::util::{from_py, to_py};
use mlmatvamp::experiments;
use mlmatvamp::observe::{Control, Observer};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// The user's progress callback `callback(label, done, total, error)` (its `True` stops the
/// run) and the stop request of an interrupt.
struct PyObserver {
    callback: Option<Py<PyAny>>,
    stop: AtomicBool,
    slot: ErrSlot,
}

impl Observer for PyObserver {
    fn tick(&self, label: &str, done: u64, total: u64, error: Option<&str>) -> Control {
        if self.stop.load(Ordering::Relaxed) {
            return Control::Stop;
        }
        let Some(cb) = &self.callback else {
            return Control::Continue;
        };
        Python::attach(|py| {
            match cb
                .bind(py)
                .call1((label, done, total, error))
                .and_then(|v| v.is_truthy())
            {
                Ok(true) => {
                    self.stop.store(true, Ordering::Relaxed);
                    Control::Stop
                }
                Ok(false) => Control::Continue,
                Err(e) => {
                    self.slot.keep(e);
                    self.stop.store(true, Ordering::Relaxed);
                    Control::Stop
                }
            }
        })
    }
}

/// Runs `f` (a driver) on a helper thread, waiting with the GIL released and checking for
/// Ctrl-C on the calling thread; returns its result as Python objects.
fn run_driver<T, F>(py: Python<'_>, callback: Option<Py<PyAny>>, f: F) -> PyResult<Py<PyAny>>
where
    T: serde::Serialize + Send,
    F: FnOnce(&dyn Observer) -> mlmatvamp::Result<T> + Send,
{
    let obs = PyObserver {
        callback,
        stop: AtomicBool::new(false),
        slot: ErrSlot::default(),
    };
    let slots = Slots(vec![obs.slot.clone()]);
    let result = std::thread::scope(|s| -> mlmatvamp::Result<T> {
        let (tx, rx) = mpsc::channel::<()>();
        // A `Receiver` is not `Sync`; the waiting closure below borrows it.
        let rx = std::sync::Mutex::new(rx);
        let obs_ref = &obs;
        let handle = s.spawn(move || {
            let timer = crate::network::CallTimer::start();
            let r = f(obs_ref);
            drop(timer);
            let _ = tx.send(());
            r
        });
        loop {
            let finished = py.detach(|| {
                let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                !matches!(
                    rx.recv_timeout(Duration::from_millis(50)),
                    Err(mpsc::RecvTimeoutError::Timeout)
                )
            });
            if finished {
                break;
            }
            if let Err(e) = py.check_signals() {
                obs.slot.keep(e);
                obs.stop.store(true, Ordering::Relaxed);
            }
        }
        match py.detach(|| handle.join()) {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    let v = check(py, result, &slots)?;
    Ok(to_py(py, &v)?.unbind())
}

/// `mlmatvamp fig2`: the Figure-2 sweep.
#[pyfunction]
pub fn _fig2(
    py: Python<'_>,
    options: &Bound<'_, PyAny>,
    out: PathBuf,
    callback: Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    let cfg: experiments::fig2::Fig2Config = from_py(py, options, "fig2 options")?;
    run_driver(py, callback, move |obs| {
        experiments::fig2::run_fig2(&cfg, &out, obs).map(|(r, _files)| r)
    })
}

/// `mlmatvamp two-layer`: one Figure-2 trial with its histories. The trial takes no observer,
/// so nothing could stop it early: it runs on the calling thread with the GIL released (no
/// helper thread to hand over to and back), and a Ctrl-C pressed meanwhile is raised when it
/// returns.
#[pyfunction]
pub fn _two_layer(py: Python<'_>, options: &Bound<'_, PyAny>, out: PathBuf) -> PyResult<Py<PyAny>> {
    let cfg: experiments::fig2::TwoLayerRunConfig = from_py(py, options, "two_layer options")?;
    let r = py.detach(move || {
        let timer = crate::network::CallTimer::start();
        let r = experiments::fig2::run_two_layer(&cfg, &out).map(|(r, _path)| r);
        drop(timer);
        r
    });
    let v = crate::util::core(py, r)?;
    py.check_signals()?;
    Ok(to_py(py, &v)?.unbind())
}

/// `mlmatvamp mmv`: multi-task regression over the sampling ratio.
#[pyfunction]
pub fn _mmv(
    py: Python<'_>,
    options: &Bound<'_, PyAny>,
    out: PathBuf,
    callback: Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    let cfg: experiments::mmv::MmvSweepConfig = from_py(py, options, "mmv options")?;
    run_driver(py, callback, move |obs| {
        experiments::mmv::run(&cfg, &out, obs)
    })
}

/// `mlmatvamp mixed`: mixed linear regression over `n/p`.
#[pyfunction]
pub fn _mixed(
    py: Python<'_>,
    options: &Bound<'_, PyAny>,
    out: PathBuf,
    callback: Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    let cfg: experiments::mixed::MixedExperimentConfig = from_py(py, options, "mixed options")?;
    run_driver(py, callback, move |obs| {
        experiments::mixed::run(&cfg, &out, obs)
    })
}

/// `mlmatvamp inpaint`: inpainting with a deep generative prior over the observed fraction.
#[pyfunction]
pub fn _inpaint(
    py: Python<'_>,
    options: &Bound<'_, PyAny>,
    out: PathBuf,
    callback: Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    let cfg: experiments::inpaint::InpaintExperiment = from_py(py, options, "inpaint options")?;
    run_driver(py, callback, move |obs| cfg.run(&out, obs))
}

/// `mlmatvamp compare`: the algorithm and the state evolution on the same configuration.
#[pyfunction]
#[pyo3(signature = (path, out, seeds, empirical_se, n_mc, psi_mode, seed, callback))]
#[allow(clippy::too_many_arguments)]
pub fn _compare(
    py: Python<'_>,
    path: PathBuf,
    out: PathBuf,
    seeds: usize,
    empirical_se: bool,
    n_mc: Option<usize>,
    psi_mode: Option<&str>,
    seed: Option<u64>,
    callback: Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    let psi_mode = psi_mode
        .map(|p| crate::util::core(py, mlmatvamp::predict::parse_psi_mode(p)))
        .transpose()?;
    let opts = mlmatvamp::predict::CompareOptions {
        seeds,
        empirical_se,
        se: mlmatvamp::predict::SeOverrides {
            n_mc,
            psi_mode,
            seed,
        },
    };
    run_driver(py, callback, move |obs| {
        mlmatvamp::predict::compare(&path, &out, &opts, obs).map(|r| r.record)
    })
}
