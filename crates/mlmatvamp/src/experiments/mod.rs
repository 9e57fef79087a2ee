//! Experiment drivers (figures and sweeps) and what they share: parallel seeded trials reported
//! to an [`Observer`], failure accounting, summaries (median and quartiles), and result files that
//! carry the full configuration, the seed and the crate version.

pub mod fig2;
pub mod inpaint;
pub mod mixed;
/// `mlmatvamp mmv`: multi-task regression / MMV over the sampling ratio.
pub mod mmv;
pub mod sketch_files;
pub mod sketched_clustering;

use crate::error::{Error, Result};
pub use crate::observe::{Observer, Progress};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// Metadata written with every result so that any figure can be regenerated exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    /// The command (e.g. `"fig2"`).
    pub command: String,
    /// `mlmatvamp` version.
    pub version: String,
    /// The base seed.
    pub seed: u64,
    /// The full configuration.
    pub config: serde_json::Value,
    /// Total wall time in seconds.
    pub seconds: f64,
    /// Threads used.
    pub threads: usize,
}

impl Meta {
    /// Metadata for a command with its configuration.
    pub fn new<C: Serialize>(command: &str, seed: u64, config: &C, seconds: f64) -> Result<Self> {
        Ok(Meta {
            command: command.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            seed,
            config: serde_json::to_value(config)
                .map_err(|e| Error::invalid("configuration", e.to_string()))?,
            seconds,
            threads: rayon::current_num_threads(),
        })
    }
}

/// Creates the output directory (and parents).
pub fn prepare_out_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::invalid(
            "output directory",
            format!("{} exists and is not a directory", dir.display()),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "creating directory",
        path: dir.to_path_buf(),
        source,
    })
}

/// The outcome of one trial: its value or the error that stopped it (never replaced by a
/// made-up number).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrialOutcome<T> {
    /// Trial index.
    pub trial: usize,
    /// The result, if the trial succeeded.
    pub value: Option<T>,
    /// The error message, if it failed.
    pub error: Option<String>,
    /// Wall time of the trial.
    pub seconds: f64,
}

/// Runs `n` independent trials in parallel (rayon), ticking `pb` after each. Trial `i` must
/// derive all its randomness from `i` (and a base seed), so results do not depend on the
/// thread count or the order of execution. Once the observer asks to stop, the trials not yet
/// started are skipped (recorded as failed with the message "stopped"); the caller's
/// [`Progress::finish`] then returns the stop as an error.
pub fn run_trials<T, F>(n: usize, pb: &Progress<'_>, f: F) -> Vec<TrialOutcome<T>>
where
    T: Send,
    F: Fn(usize) -> Result<T> + Sync,
{
    use rayon::prelude::*;
    (0..n)
        .into_par_iter()
        .map(|i| {
            let start = Instant::now();
            if pb.stopped() {
                return TrialOutcome {
                    trial: i,
                    value: None,
                    error: Some("stopped".into()),
                    seconds: 0.0,
                };
            }
            let r = f(i);
            pb.tick(r.as_ref().err().map(|e| e.to_string()).as_deref());
            let seconds = start.elapsed().as_secs_f64();
            match r {
                Ok(v) => TrialOutcome {
                    trial: i,
                    value: Some(v),
                    error: None,
                    seconds,
                },
                Err(e) => TrialOutcome {
                    trial: i,
                    value: None,
                    error: Some(e.to_string()),
                    seconds,
                },
            }
        })
        .collect()
}

/// Median, quartiles and failure count of a set of trial values.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    /// The per-trial values (successful trials only, in trial order).
    pub values: Vec<f64>,
    /// Median (NaN if no trial succeeded).
    pub median: f64,
    /// First quartile.
    pub q25: f64,
    /// Third quartile.
    pub q75: f64,
    /// Mean.
    pub mean: f64,
    /// Number of failed trials (errors or non-finite values).
    pub failed: usize,
    /// The failures' messages.
    pub errors: Vec<String>,
}

impl Summary {
    /// Summarises outcomes; a non-finite value counts as a failure.
    pub fn of(outcomes: &[TrialOutcome<f64>]) -> Self {
        let mut values = Vec::new();
        let mut errors = Vec::new();
        for o in outcomes {
            match (&o.value, &o.error) {
                (Some(v), _) if v.is_finite() => values.push(*v),
                (Some(v), _) => errors.push(format!("trial {}: non-finite value {v}", o.trial)),
                (None, Some(e)) => errors.push(format!("trial {}: {e}", o.trial)),
                (None, None) => errors.push(format!("trial {}: no value", o.trial)),
            }
        }
        Self::from_values(values, errors)
    }

    /// Summarises finite values with a list of failures.
    pub fn from_values(values: Vec<f64>, errors: Vec<String>) -> Self {
        let (q25, median, q75) =
            crate::figure::quartiles(&values).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        let mean = if values.is_empty() {
            f64::NAN
        } else {
            values.iter().sum::<f64>() / values.len() as f64
        };
        Summary {
            values,
            median,
            q25,
            q75,
            mean,
            failed: errors.len(),
            errors,
        }
    }
}

/// Writes rows of a CSV file with a header.
pub fn write_csv_rows(path: &Path, header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let io_err = |e: csv::Error| Error::Io {
        action: "writing",
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    };
    let mut w = csv::Writer::from_path(path).map_err(io_err)?;
    w.write_record(header).map_err(io_err)?;
    for r in rows {
        w.write_record(r).map_err(io_err)?;
    }
    w.flush().map_err(|source| Error::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    })
}

pub use crate::rng::trial_seed;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_failures() {
        let outs = vec![
            TrialOutcome {
                trial: 0,
                value: Some(1.0),
                error: None,
                seconds: 0.0,
            },
            TrialOutcome {
                trial: 1,
                value: Some(f64::NAN),
                error: None,
                seconds: 0.0,
            },
            TrialOutcome {
                trial: 2,
                value: None,
                error: Some("diverged".into()),
                seconds: 0.0,
            },
            TrialOutcome {
                trial: 3,
                value: Some(3.0),
                error: None,
                seconds: 0.0,
            },
        ];
        let s = Summary::of(&outs);
        assert_eq!(s.failed, 2);
        assert_eq!(s.values, vec![1.0, 3.0]);
        assert_eq!(s.median, 2.0);
    }

    #[test]
    fn trials_are_deterministic_and_parallel() {
        let pb = Progress::new(&crate::observe::Silent, "test", 16);
        let a = run_trials(16, &pb, |i| Ok(trial_seed(7, 1, i as u64) as f64));
        let b = run_trials(16, &pb, |i| Ok(trial_seed(7, 1, i as u64) as f64));
        assert!(a
            .iter()
            .zip(&b)
            .all(|(x, y)| x.value == y.value && x.trial == y.trial));
        assert_ne!(trial_seed(7, 1, 0), trial_seed(7, 1, 1));
    }
}
