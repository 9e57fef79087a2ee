//! Multi-task regression / MMV (paper §2.1, eq. 4–5) with the library: one problem
//! `Y = X F + Ξ` with a row-sparse `F` (500 x 3), solved by
//!
//! * ML-Mat-VAMP with the matched Bernoulli–Gaussian prior (MMSE),
//! * ML-Mat-VAMP with the group-lasso prior (MAP): the minimiser of
//!   `½‖Y − XF‖²_N + λ Σ_k ‖F_k·‖₂`,
//! * FISTA on the same objective (it must find the same minimiser),
//!
//! and the state-evolution predictions of both estimators.
//!
//! Run: `cargo run --release --example mmv [ratio] [lambda]` (defaults 0.6 and 13.3).

use mlmatvamp::apps::mmv::{
    fista_group_lasso, group_lasso_kkt_residual, FistaConfig, GroupLassoProblem, MmvConfig,
};
use mlmatvamp::experiments::mmv::se_curve;
use mlmatvamp::prelude::*;
use mlmatvamp::se::SeConfig;
use std::sync::Arc;
use std::time::Instant;

fn main() -> mlmatvamp::Result<()> {
    let mut args = std::env::args().skip(1);
    let parse = |s: Option<String>, default: f64| -> mlmatvamp::Result<f64> {
        match s {
            None => Ok(default),
            Some(s) => s
                .parse()
                .map_err(|_| Error::invalid("argument", format!("not a number: {s}"))),
        }
    };
    let ratio = parse(args.next(), 0.6)?;
    let lambda = parse(args.next(), 13.3)?;

    // n_0 = 500 rows, d = 3 tasks, 20% non-zero rows with correlated columns, 20 dB.
    let problem = MmvConfig {
        ratio,
        ..Default::default()
    };
    let trial = problem.sample(7)?;
    let truth = trial.truth();
    let d = problem.d;
    println!(
        "F: {} x {d}, X: {} x {}, noise variance {:.2e}, lambda = {lambda}",
        problem.n0,
        problem.n1(),
        problem.n0,
        problem.noise_variance()?
    );

    // One SVD of X, shared by both ML-Mat-VAMP runs.
    let start = Instant::now();
    let layer = trial.layer()?;
    println!("SVD of X: {:.3} s", start.elapsed().as_secs_f64());
    let solver = Solver::new(SolverConfig {
        iterations: 500,
        tolerance: Some(1e-9),
        ..Default::default()
    })?;

    // ML-Mat-VAMP, MMSE with the matched Bernoulli–Gaussian prior.
    let data: Arc<dyn InputPrior> = Arc::new(problem.data_prior()?);
    let start = Instant::now();
    let mmse = solver.run(&trial.network(data.clone(), layer.clone())?, Some(&truth))?;
    println!(
        "ML-Mat-VAMP MMSE:        NMSE {:.4}  ({} iterations, {:.3} s)",
        trial.nmse(mmse.estimates[0].as_ref()),
        mmse.history.len(),
        start.elapsed().as_secs_f64()
    );

    // ML-Mat-VAMP, group-lasso MAP. The data law only matters for the SE (and a teacher).
    let gl: Arc<dyn InputPrior> = Arc::new(MismatchedPrior::new(
        data.clone(),
        Arc::new(GroupLassoPrior::new(d, lambda)?),
    )?);
    let start = Instant::now();
    let map = solver.run(&trial.network(gl.clone(), layer)?, Some(&truth))?;
    let f_vamp = map.estimates[0].as_ref();
    println!(
        "ML-Mat-VAMP group lasso: NMSE {:.4}  ({} iterations, {:.3} s)",
        trial.nmse(f_vamp),
        map.history.len(),
        start.elapsed().as_secs_f64()
    );

    // FISTA on the same objective.
    let objective = GroupLassoProblem {
        x: trial.x.as_ref(),
        y: trial.y.as_ref(),
        noise: &trial.noise,
        lambda,
    };
    let fista = fista_group_lasso(&objective, &FistaConfig::default(), None, &mut |_, _, _| {
        Control::Continue
    })?;
    let f_fista = fista.estimate.as_ref();
    println!(
        "FISTA group lasso:       NMSE {:.4}  ({} iterations, {:.3} s)",
        trial.nmse(f_fista),
        fista.iterations,
        fista.seconds
    );
    println!(
        "same minimiser: ||F_vamp - F_fista|| / ||F_fista|| = {:.2e}; objectives {:.10e} vs {:.10e}; \
         KKT residuals {:.1e} vs {:.1e}",
        (f_vamp - f_fista).norm_l2() / f_fista.norm_l2(),
        objective.objective(f_vamp)?,
        fista.objective,
        group_lasso_kkt_residual(&objective, f_vamp)?,
        group_lasso_kkt_residual(&objective, f_fista)?,
    );

    // State evolution (Marchenko–Pastur law of X), the mean of the last 10 of 40 iterations;
    // the group-lasso recursion is state-damped (same fixed point).
    let base = SeConfig::default();
    let tail = |c: Vec<f64>| c[c.len() - 10..].iter().sum::<f64>() / 10.0;
    let se_mmse = tail(se_curve(&problem, data, &base, 40, 6000, 0.0)?);
    let se_gl = tail(se_curve(&problem, gl, &base, 40, 6000, 0.5)?);
    println!("SE prediction: MMSE NMSE {se_mmse:.4}, group lasso NMSE {se_gl:.4}");
    Ok(())
}
