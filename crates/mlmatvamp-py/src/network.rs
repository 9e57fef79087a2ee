//! The network, Algorithm 1, the state evolution and configuration files.
//!
//! Long calls run with the GIL released. The solver calls back after every iteration: the
//! binding then re-acquires the GIL, checks for Ctrl-C (so a `KeyboardInterrupt` stops the run
//! within one iteration), and calls the user's callback, whose `True` stops the run. An
//! exception (the interrupt, one raised by the callback or by a Python operator) is kept and
//! re-raised once the core has returned.

use crate::arrays::{dmat_to_py, mat_to_py, ArrayArg};
use crate::errors::{check, ErrSlot, Slots};
use crate::factors::{Layer, Output, Prior};
use crate::util::{core, from_py, to_py};
use faer::Mat;
use mlmatvamp::message::MessagePolicy;
use mlmatvamp::network::Network as CoreNetwork;
use mlmatvamp::observe::Control;
use mlmatvamp::se::{PsiMode, SeConfig, SeIteration, StateEvolution};
use mlmatvamp::solver::{IterationRecord, Solution, Solver, SolverConfig, State};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use std::path::PathBuf;
use std::sync::Arc;

/// The model of eq. (1): a prior on `Z_0` (`rows` rows), hidden layers alternating linear /
/// row-wise (linear first), and an output holding the observation.
///
/// Args:
///     prior: the prior of `Z_0`.
///     rows: `n_0`, the number of rows of `Z_0`.
///     layers: the hidden layers `1 … L-1` in order (an odd number: linear, row-wise, …,
///         linear).
///     output: the output channel with the observation `Y`.
#[pyclass(frozen, module = "mlmatvamp._core")]
pub struct Network {
    pub(crate) inner: CoreNetwork,
    pub(crate) slots: Slots,
    prior: Py<Prior>,
    layers: Vec<Py<Layer>>,
    output: Py<Output>,
}

impl Network {
    /// Wraps a core network (from a configuration): its factors become base-class objects.
    pub fn from_core(py: Python<'_>, net: CoreNetwork) -> PyResult<Self> {
        let prior = Py::new(
            py,
            Prior {
                inner: net.prior().clone(),
            },
        )?;
        let layers = net
            .layers()
            .iter()
            .map(|l| {
                Py::new(
                    py,
                    Layer {
                        inner: l.clone(),
                        slots: Slots::default(),
                    },
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        let output = Py::new(
            py,
            Output {
                inner: net.output().clone(),
            },
        )?;
        Ok(Network {
            inner: net,
            slots: Slots::default(),
            prior,
            layers,
            output,
        })
    }

    fn with_core(&self, py: Python<'_>, net: CoreNetwork, output: Py<Output>) -> Self {
        Network {
            inner: net,
            slots: self.slots.clone(),
            prior: self.prior.clone_ref(py),
            layers: self.layers.iter().map(|l| l.clone_ref(py)).collect(),
            output,
        }
    }
}

#[pymethods]
impl Network {
    #[new]
    fn new(
        py: Python<'_>,
        prior: &Bound<'_, Prior>,
        rows: usize,
        layers: &Bound<'_, PyAny>,
        output: &Bound<'_, Output>,
    ) -> PyResult<Self> {
        let mut ls: Vec<Py<Layer>> = Vec::new();
        for (i, l) in layers.try_iter()?.enumerate() {
            let l = l?;
            let layer = l.cast::<Layer>().map_err(|_| {
                pyo3::exceptions::PyTypeError::new_err(format!(
                    "argument `layers`: item {i} is not a layer (LinearLayer, ActivationLayer, …)"
                ))
            })?;
            ls.push(layer.clone().unbind());
        }
        let mut slots = Slots::default();
        for l in &ls {
            slots.extend(&l.get().slots);
        }
        let core_layers = ls.iter().map(|l| l.get().inner.clone()).collect();
        let net = core(
            py,
            CoreNetwork::new(
                prior.get().inner.clone(),
                rows,
                core_layers,
                output.get().inner.clone(),
            ),
        )?;
        Ok(Network {
            inner: net,
            slots,
            prior: prior.clone().unbind(),
            layers: ls,
            output: output.clone().unbind(),
        })
    }

    /// The number of rows `n_0 … n_{L-1}` of every variable.
    #[getter]
    fn rows(&self) -> Vec<usize> {
        self.inner.rows().to_vec()
    }
    /// The number of columns `d`.
    #[getter]
    fn d(&self) -> usize {
        self.inner.dim()
    }
    /// The number of variables `L` (hidden layers + 1).
    #[getter]
    fn depth(&self) -> usize {
        self.inner.depth()
    }
    /// The prior.
    #[getter]
    fn prior(&self, py: Python<'_>) -> Py<Prior> {
        self.prior.clone_ref(py)
    }
    /// The hidden layers.
    #[getter]
    fn layers(&self, py: Python<'_>) -> Vec<Py<Layer>> {
        self.layers.iter().map(|l| l.clone_ref(py)).collect()
    }
    /// The output.
    #[getter]
    fn output(&self, py: Python<'_>) -> Py<Output> {
        self.output.clone_ref(py)
    }
    /// One line per variable and the output.
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn __repr__(&self) -> String {
        format!("<Network\n{}>", self.inner.describe())
    }

    /// The same network with another output (e.g. another observation).
    fn with_output(&self, py: Python<'_>, output: &Bound<'_, Output>) -> PyResult<Self> {
        let net = core(py, self.inner.with_output(output.get().inner.clone()))?;
        Ok(self.with_core(py, net, output.clone().unbind()))
    }

    /// A teacher: draws a ground truth `Z_0 … Z_{L-1}` and an observation from the model
    /// (seeded), and returns `(truth, network)` where the network holds the drawn observation.
    #[pyo3(signature = (seed=0))]
    fn sample<'py>(&self, py: Python<'py>, seed: u64) -> PyResult<(Vec<Bound<'py, PyAny>>, Self)> {
        let net = self.inner.clone();
        self.slots.clear();
        let r = py.detach(move || {
            let mut rng = mlmatvamp::rng_from_seed(seed);
            net.sample(&mut rng)
        });
        let (truth, net) = check(py, r, &self.slots)?;
        let truth = truth
            .iter()
            .map(|z| mat_to_py(py, z.as_ref()).into_any())
            .collect();
        let output = Py::new(
            py,
            Output {
                inner: net.output().clone(),
            },
        )?;
        Ok((truth, self.with_core(py, net, output)))
    }
}

/// The policy from `None`, a dict or a `MessagePolicy`-like object with the four fields.
fn policy_arg(py: Python<'_>, policy: Option<&Bound<'_, PyAny>>) -> PyResult<MessagePolicy> {
    match policy {
        None => Ok(MessagePolicy::default()),
        Some(p) if p.is_none() => Ok(MessagePolicy::default()),
        Some(p) => {
            let d = if p.hasattr("_asdict")? {
                p.call_method0("_asdict")?
            } else {
                p.clone()
            };
            from_py(py, &d, "policy")
        }
    }
}

/// A list of `n_l x d` arrays (the truth).
fn truth_arg(py: Python<'_>, truth: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<Mat<f64>>>> {
    let Some(t) = truth else { return Ok(None) };
    if t.is_none() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for (l, z) in t.try_iter()?.enumerate() {
        out.push(ArrayArg::new(&z?, &format!("truth Z_{l}"))?.to_mat(py, true)?);
    }
    Ok(Some(out))
}

/// Records the time from its start to its drop as the core time of the call.
pub(crate) struct CallTimer(std::time::Instant);

impl CallTimer {
    pub(crate) fn start() -> Self {
        CallTimer(std::time::Instant::now())
    }
}

impl Drop for CallTimer {
    fn drop(&mut self) {
        crate::record_call(self.0.elapsed().as_secs_f64());
    }
}

/// Runs Algorithm 1 with the GIL released, a per-iteration check for Ctrl-C and the callback.
#[allow(clippy::too_many_arguments)]
fn run_solver<'py>(
    py: Python<'py>,
    net: &CoreNetwork,
    slots: &Slots,
    config: SolverConfig,
    start: Option<State>,
    truth: Option<Vec<Mat<f64>>>,
    callback: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyTuple>> {
    let call = ErrSlot::default();
    let mut all = slots.clone();
    all.0.push(call.clone());
    all.clear();
    let cb_slot = call.clone();
    let r = py.detach(move || -> mlmatvamp::Result<Solution> {
        // Time spent in the per-iteration hook (the binding's, not the core's).
        let mut hook_seconds = 0.0;
        let mut on_iteration = |rec: &IterationRecord, _state: &State| -> Control {
            let hook = std::time::Instant::now();
            let control = Python::attach(|py| {
                if let Err(e) = py.check_signals() {
                    cb_slot.keep(e);
                    return Control::Stop;
                }
                let Some(cb) = &callback else {
                    return Control::Continue;
                };
                match to_py(py, rec)
                    .and_then(|r| cb.bind(py).call1((r,)))
                    .and_then(|v| v.is_truthy())
                {
                    Ok(true) => Control::Stop,
                    Ok(false) => Control::Continue,
                    Err(e) => {
                        cb_slot.keep(e);
                        Control::Stop
                    }
                }
            });
            hook_seconds += hook.elapsed().as_secs_f64();
            control
        };
        let solver = Solver::new(config)?;
        let start_time = std::time::Instant::now();
        let r = match start {
            Some(state) => solver.run_from(net, state, truth.as_deref(), &mut on_iteration),
            None => solver.run_with(net, truth.as_deref(), &mut on_iteration),
        };
        crate::record_call(start_time.elapsed().as_secs_f64() - hook_seconds);
        r
    });
    let sol = check(py, r, &all)?;
    solution_tuple(py, &sol)
}

/// `(estimates, covariances, history records, converged)`.
fn solution_tuple<'py>(py: Python<'py>, sol: &Solution) -> PyResult<Bound<'py, PyTuple>> {
    let est = PyList::new(py, sol.estimates.iter().map(|z| mat_to_py(py, z.as_ref())))?;
    let cov = PyList::new(py, sol.covariances.iter().map(|c| dmat_to_py(py, c)))?;
    let hist = to_py(py, &sol.history)?;
    PyTuple::new(
        py,
        [
            est.into_any(),
            cov.into_any(),
            hist,
            sol.converged.into_pyobject(py)?.to_owned().into_any(),
        ],
    )
}

/// Algorithm 1 (the pure-Python `mlmatvamp.solve` wraps this).
#[pyfunction]
#[pyo3(signature = (network, iterations, tol, truth, policy, gamma_init, callback, init))]
#[allow(clippy::too_many_arguments)]
pub fn _solve<'py>(
    py: Python<'py>,
    network: &Bound<'py, Network>,
    iterations: usize,
    tol: Option<f64>,
    truth: Option<&Bound<'py, PyAny>>,
    policy: Option<&Bound<'py, PyAny>>,
    gamma_init: f64,
    callback: Option<Py<PyAny>>,
    init: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyTuple>> {
    let net = network.get();
    let config = SolverConfig {
        iterations,
        tolerance: tol,
        gamma_init,
        policy: policy_arg(py, policy)?,
    };
    core(py, config.validate())?;
    let truth = truth_arg(py, truth)?;
    let start = match init {
        Some(i) if !i.is_none() => {
            let start: mlmatvamp::apps::mixed::RandomStart = from_py(py, i, "init")?;
            Some(core(py, start.state(&net.inner))?)
        }
        _ => None,
    };
    run_solver(py, &net.inner, &net.slots, config, start, truth, callback)
}

/// A configuration file, read and built by the same code as `mlmatvamp run` (the core's
/// `config::load`, i.e. `RunConfig::resolve`): the network (with its observation, or a drawn
/// one in teacher mode), the solver options, the truth and the starting point. Made by
/// `mlmatvamp.from_toml(path)`.
#[pyclass(frozen, module = "mlmatvamp._core")]
pub struct Problem {
    inner: Arc<mlmatvamp::config::Problem>,
    network: Py<Network>,
}

#[pymethods]
impl Problem {
    /// The network (holding the observation; drawn in teacher mode).
    #[getter]
    fn network(&self, py: Python<'_>) -> Py<Network> {
        self.network.clone_ref(py)
    }
    /// The ground truth `Z_0 … Z_{L-1}` (given by `truth`, or drawn in teacher mode), or `None`.
    #[getter]
    fn truth<'py>(&self, py: Python<'py>) -> Option<Vec<Bound<'py, PyAny>>> {
        self.inner.truth.as_ref().map(|t| {
            t.iter()
                .map(|z| mat_to_py(py, z.as_ref()).into_any())
                .collect()
        })
    }
    /// Whether the observation was drawn from the model (no `y` in `[output]`).
    #[getter]
    fn teacher(&self) -> bool {
        self.inner.teacher
    }
    /// The configuration file.
    #[getter]
    fn path(&self) -> Option<PathBuf> {
        self.inner.path.clone()
    }
    /// The effective solver options (`iterations`, `tolerance`, `gamma_init`, `policy`).
    #[getter]
    fn solver<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.solver)
    }
    /// The configuration as parsed TOML.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.raw)
    }
    /// Seconds spent building the problem (reading, SVDs, sampling).
    #[getter]
    fn setup_seconds(&self) -> f64 {
        self.inner.setup_seconds
    }

    /// Runs Algorithm 1 as `mlmatvamp run` does: from the configuration's start (`[init]`),
    /// with its options and truth (the pure-Python `Problem.solve` wraps this).
    #[pyo3(signature = (callback=None))]
    fn _solve<'py>(
        &self,
        py: Python<'py>,
        callback: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let start = core(py, self.inner.initial_state())?;
        let net = self.network.get();
        run_solver(
            py,
            &self.inner.network,
            &net.slots,
            self.inner.solver.clone(),
            Some(start),
            self.inner.truth.clone(),
            callback,
        )
    }
    fn __repr__(&self) -> String {
        format!(
            "<Problem {}{}\n{}>",
            self.inner
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            if self.inner.teacher { " (teacher)" } else { "" },
            self.inner.network.describe()
        )
    }
}

/// Reads and builds a configuration file (`mlmatvamp.from_toml`).
#[pyfunction]
pub fn _from_toml(py: Python<'_>, path: PathBuf) -> PyResult<Problem> {
    let p = path.clone();
    let problem = core(py, py.detach(move || mlmatvamp::config::load(&p)))?;
    let network = Py::new(py, Network::from_core(py, problem.network.clone())?)?;
    Ok(Problem {
        inner: Arc::new(problem),
        network,
    })
}

/// Runs the SE recursion with the GIL released, checking for Ctrl-C after every iteration.
fn run_se(
    py: Python<'_>,
    se: SeConfig,
    net: &mlmatvamp::network::SeNetwork,
    slots: &Slots,
    callback: Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    let call = ErrSlot::default();
    let mut all = slots.clone();
    all.0.push(call.clone());
    all.clear();
    let r = py.detach(move || -> mlmatvamp::Result<Vec<SeIteration>> {
        let _timer = CallTimer::start();
        let se = StateEvolution::new(se)?;
        let mut state = se.initial_state(net)?;
        let mut out = Vec::new();
        for k in 0..se.config().iterations {
            let start = std::time::Instant::now();
            se.step(net, &mut state, k)?;
            let rec = se.record(net, &state, k, start.elapsed().as_secs_f64(), None)?;
            let stop = Python::attach(|py| {
                if let Err(e) = py.check_signals() {
                    call.keep(e);
                    return true;
                }
                let Some(cb) = &callback else { return false };
                match to_py(py, &rec)
                    .and_then(|r| cb.bind(py).call1((r,)))
                    .and_then(|v| v.is_truthy())
                {
                    Ok(s) => s,
                    Err(e) => {
                        call.keep(e);
                        true
                    }
                }
            });
            out.push(rec);
            if stop {
                break;
            }
        }
        Ok(out)
    });
    let iters = check(py, r, &all)?;
    Ok(to_py(py, &iters)?.unbind())
}

/// The state evolution of a network (`mlmatvamp.state_evolution` wraps this).
#[pyfunction]
#[pyo3(signature = (network, iterations, n_mc, seed, psi_mode, gamma_init, policy, callback))]
#[allow(clippy::too_many_arguments)]
pub fn _state_evolution(
    py: Python<'_>,
    network: &Bound<'_, Network>,
    iterations: usize,
    n_mc: usize,
    seed: u64,
    psi_mode: &str,
    gamma_init: f64,
    policy: Option<&Bound<'_, PyAny>>,
    callback: Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    let psi_mode: PsiMode = core(py, mlmatvamp::predict::parse_psi_mode(psi_mode))?;
    let se = SeConfig {
        iterations,
        n_mc,
        seed,
        psi_mode,
        gamma_init,
        policy: policy_arg(py, policy)?,
    };
    let net = network.get();
    run_se(py, se, net.inner.se_network(), &net.slots, callback)
}

/// The state evolution of a configuration file, as `mlmatvamp se` (`mlmatvamp.state_evolution`
/// wraps this): law weights enter through their spectral laws, nothing is drawn.
#[pyfunction]
#[pyo3(signature = (path, n_mc, psi_mode, seed, callback))]
pub fn _state_evolution_config(
    py: Python<'_>,
    path: PathBuf,
    n_mc: Option<usize>,
    psi_mode: Option<&str>,
    seed: Option<u64>,
    callback: Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    let psi_mode = psi_mode
        .map(|p| core(py, mlmatvamp::predict::parse_psi_mode(p)))
        .transpose()?;
    let overrides = mlmatvamp::predict::SeOverrides {
        n_mc,
        psi_mode,
        seed,
    };
    let model = core(
        py,
        py.detach(|| mlmatvamp::predict::load_se_model(&path, &overrides)),
    )?;
    run_se(
        py,
        model.se.clone(),
        &model.network,
        &Slots::default(),
        callback,
    )
}
