//! Observers: how long runs report progress and how they are asked to stop.
//!
//! The library prints nothing. Algorithm 1 calls its per-iteration callback
//! ([`crate::solver::Solver::run_with`]) with every iteration's record; the experiment drivers
//! and `compare` call an [`Observer`] after every finished trial. Either may answer
//! [`Control::Stop`]. The front doors decide what to show: the CLI draws a progress bar, the
//! Python bindings call the user's callback and check for Ctrl-C.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What an observer tells a running computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop as soon as possible (after this iteration; no new trial is started).
    Stop,
}

/// Receives the progress of a long run of independent units of work (trials). Called from
/// worker threads, hence `Sync`.
pub trait Observer: Sync {
    /// A run of `total` units named `label` begins.
    fn begin(&self, label: &str, total: u64) {
        let _ = (label, total);
    }
    /// `done` of `total` units of the run `label` have finished; `error` is the message of the
    /// unit that just failed, if it failed. Answer [`Control::Stop`] to stop the run.
    fn tick(&self, label: &str, done: u64, total: u64, error: Option<&str>) -> Control {
        let _ = (label, done, total, error);
        Control::Continue
    }
    /// The run `label` ended (finished or stopped).
    fn end(&self, label: &str) {
        let _ = label;
    }
}

/// The observer that shows nothing and never stops.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Observer for Silent {}

/// A run in progress: counts finished units, forwards them to the observer and remembers a stop
/// request.
pub struct Progress<'a> {
    observer: &'a dyn Observer,
    label: String,
    total: u64,
    done: AtomicU64,
    stop: AtomicBool,
}

impl<'a> Progress<'a> {
    /// Starts a run of `total` units.
    pub fn new(observer: &'a dyn Observer, label: &str, total: u64) -> Self {
        observer.begin(label, total);
        Progress {
            observer,
            label: label.to_string(),
            total,
            done: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }
    /// One unit finished (with its error message if it failed).
    pub fn tick(&self, error: Option<&str>) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if self.observer.tick(&self.label, done, self.total, error) == Control::Stop {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
    /// `n` units finished.
    pub fn inc(&self, n: u64) {
        for _ in 0..n {
            self.tick(None);
        }
    }
    /// Whether the observer asked to stop.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    /// Ends the run: an [`Error::Stopped`] if the observer asked to stop, so that no partial
    /// result is mistaken for a complete one.
    pub fn finish(&self) -> Result<()> {
        self.observer.end(&self.label);
        if self.stopped() {
            return Err(Error::Stopped {
                what: format!(
                    "{} after {} of {} units",
                    self.label,
                    self.done.load(Ordering::Relaxed),
                    self.total
                ),
            });
        }
        Ok(())
    }
}
