//! Running a configuration end to end (`mlmatvamp run CONFIG.toml --out DIR`): load it
//! ([`crate::config`]), run Algorithm 1, and write the outputs.
//!
//! Files written to `DIR` (created if needed):
//!
//! * `z_0.npy … z_{L−1}.npy` — the final primary estimates `Ẑ_l` (`n_l x d`, float64);
//! * `cov_0.npy … cov_{L−1}.npy` — their predicted average posterior row covariances (`d x d`);
//! * in teacher mode, `truth_0.npy … truth_{L−1}.npy` and the drawn observation `y.npy`
//!   (missing entries NaN);
//! * `history.json` — see [`History`].

use crate::config::{self, LayerInfo, Problem};
use crate::error::{Error, Result};
use crate::io;
use crate::rows::from_dmat;
use crate::solver::{Control, IterationRecord, SolverConfig};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a run reports to its observer while it goes.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// The configuration was loaded and the network built (before the first iteration).
    Loaded(&'a Problem),
    /// An iteration finished.
    Iteration(&'a IterationRecord),
}

/// Options of [`run_config`].
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Called on every [`RunEvent`] (progress display, logging); answering [`Control::Stop`]
    /// after an iteration ends the run there (the outputs are written for the iterations run).
    pub observer: Option<&'a mut dyn FnMut(RunEvent<'_>) -> Control>,
}

/// The final numbers of one variable `Z_l`.
#[derive(Clone, Debug, Serialize)]
pub struct FinalVariable {
    /// `l`.
    pub variable: usize,
    /// `n_l`.
    pub rows: usize,
    /// Predicted MSE per row (`tr Σ̄`).
    pub predicted_mse: f64,
    /// Empirical MSE per row (with a truth).
    pub mse: Option<f64>,
}

/// What [`run_config`] did.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// The output directory.
    pub out_dir: PathBuf,
    /// Every file written.
    pub files: Vec<PathBuf>,
    /// Iterations run.
    pub iterations: usize,
    /// Whether the tolerance stop fired.
    pub converged: bool,
    /// Whether the observation was drawn from the model.
    pub teacher: bool,
    /// Final numbers per variable.
    pub variables: Vec<FinalVariable>,
    /// Seconds spent loading and building (including SVDs).
    pub setup_seconds: f64,
    /// Seconds spent in the iterations.
    pub solve_seconds: f64,
    /// Wall time of the whole run.
    pub total_seconds: f64,
}

/// SVD time of one linear layer.
#[derive(Clone, Debug, Serialize)]
pub struct SvdTime {
    /// `l`.
    pub layer: usize,
    /// Seconds.
    pub seconds: f64,
}

/// The network, as recorded in the history.
#[derive(Clone, Debug, Serialize)]
pub struct NetworkInfo {
    /// Multi-line description (one line per variable and the output).
    pub description: String,
    /// `L`.
    pub depth: usize,
    /// `d`.
    pub d: usize,
    /// `n_0 … n_{L−1}`.
    pub rows: Vec<usize>,
    /// The prior.
    pub prior: String,
    /// The hidden layers.
    pub layers: Vec<LayerInfo>,
    /// The output channel.
    pub output: String,
}

/// The content of `history.json`.
#[derive(Clone, Debug, Serialize)]
pub struct History {
    /// `"mlmatvamp"`.
    pub program: &'static str,
    /// The crate version that produced the file.
    pub version: &'static str,
    /// The configuration file.
    pub config_path: Option<String>,
    /// The full configuration (the parsed TOML as JSON).
    pub config: serde_json::Value,
    /// The seed (law arrays and teacher mode).
    pub seed: u64,
    /// Whether the observation was drawn from the model.
    pub teacher: bool,
    /// Whether the empirical MSE is recorded (truth supplied or teacher mode).
    pub has_truth: bool,
    /// The effective solver options (defaults filled in).
    pub solver: SolverConfig,
    /// The network.
    pub network: NetworkInfo,
    /// SVD seconds of each linear layer.
    pub svd_seconds: Vec<SvdTime>,
    /// Seconds spent loading and building.
    pub setup_seconds: f64,
    /// Seconds spent in the iterations.
    pub solve_seconds: f64,
    /// Wall time of the whole run (without writing this file).
    pub total_seconds: f64,
    /// Whether the tolerance stop fired.
    pub converged: bool,
    /// Number of iterations run.
    pub iterations_run: usize,
    /// Per iteration: per variable the predicted MSE (`tr Σ̄`), `Σ̄`, `Γ⁺`, `Γ⁻`, the relative
    /// change, and with a truth the empirical MSE and `d x d` error covariance; the wall time.
    pub iterations: Vec<IterationRecord>,
}

/// Loads the configuration at `config_path`, runs it, and writes the outputs to `out_dir`.
pub fn run_config(
    config_path: &Path,
    out_dir: &Path,
    options: RunOptions<'_>,
) -> Result<RunReport> {
    let start = Instant::now();
    let problem = config::load(config_path)?;
    run_problem(&problem, out_dir, options, start)
}

/// Runs an already built problem and writes the outputs; `start` is when the run began (the
/// setup time is taken from the problem).
pub fn run_problem(
    problem: &Problem,
    out_dir: &Path,
    mut options: RunOptions<'_>,
    start: Instant,
) -> Result<RunReport> {
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Io {
        action: "creating the output directory",
        path: out_dir.to_path_buf(),
        source,
    })?;
    if let Some(obs) = options.observer.as_mut() {
        let _ = obs(RunEvent::Loaded(problem));
    }
    let net = &problem.network;
    let solve_start = Instant::now();
    let solution = problem.solve(&mut |rec, _| match options.observer.as_mut() {
        Some(obs) => obs(RunEvent::Iteration(rec)),
        None => Control::Continue,
    })?;
    let solve_seconds = solve_start.elapsed().as_secs_f64();

    let mut files = Vec::new();
    let mut write = |name: String, m: faer::MatRef<'_, f64>| -> Result<()> {
        let p = out_dir.join(name);
        io::write_npy(&p, m)?;
        files.push(p);
        Ok(())
    };
    for (l, (z, c)) in solution
        .estimates
        .iter()
        .zip(&solution.covariances)
        .enumerate()
    {
        write(format!("z_{l}.npy"), z.as_ref())?;
        write(format!("cov_{l}.npy"), from_dmat(c).as_ref())?;
    }
    if problem.teacher {
        if let Some(truth) = &problem.truth {
            for (l, z) in truth.iter().enumerate() {
                write(format!("truth_{l}.npy"), z.as_ref())?;
            }
        }
        write("y.npy".into(), net.output().observation())?;
    }
    let variables: Vec<FinalVariable> = solution
        .history
        .last()
        .map(|rec| {
            rec.variables
                .iter()
                .map(|v| FinalVariable {
                    variable: v.variable,
                    rows: v.rows,
                    predicted_mse: v.predicted_mse,
                    mse: v.mse,
                })
                .collect()
        })
        .unwrap_or_default();
    let total_seconds = start.elapsed().as_secs_f64();
    let history = History {
        program: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        config_path: problem.path.as_ref().map(|p| p.display().to_string()),
        config: problem.raw.clone(),
        seed: problem.config.seed,
        teacher: problem.teacher,
        has_truth: problem.truth.is_some(),
        solver: problem.solver.clone(),
        network: NetworkInfo {
            description: net.describe(),
            depth: net.depth(),
            d: net.dim(),
            rows: net.rows().to_vec(),
            prior: net.prior().describe(),
            layers: problem.layers.clone(),
            output: net.output().describe(),
        },
        svd_seconds: problem
            .layers
            .iter()
            .filter_map(|l| {
                l.svd_seconds.map(|s| SvdTime {
                    layer: l.layer,
                    seconds: s,
                })
            })
            .collect(),
        setup_seconds: problem.setup_seconds,
        solve_seconds,
        total_seconds,
        converged: solution.converged,
        iterations_run: solution.history.len(),
        iterations: solution.history,
    };
    let hist_path = out_dir.join("history.json");
    io::write_json(&hist_path, &history)?;
    files.push(hist_path);
    Ok(RunReport {
        out_dir: out_dir.to_path_buf(),
        files,
        iterations: history.iterations_run,
        converged: history.converged,
        teacher: problem.teacher,
        variables,
        setup_seconds: problem.setup_seconds,
        solve_seconds,
        total_seconds: start.elapsed().as_secs_f64(),
    })
}
