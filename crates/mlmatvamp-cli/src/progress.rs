//! The CLI's view of the library's observers: an `indicatif` progress bar on stderr (hidden when
//! `--quiet`, or when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};
use mlmatvamp::observe::{Control, Observer};
use std::sync::Mutex;

/// A progress bar per run of trials.
pub struct Bar {
    quiet: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bar {
    /// A bar that draws unless `quiet`.
    pub fn new(quiet: bool) -> Self {
        Bar {
            quiet,
            bar: Mutex::new(None),
        }
    }
}

impl Observer for Bar {
    fn begin(&self, label: &str, total: u64) {
        let pb = if self.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(total)
        };
        pb.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({elapsed}, eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_message(label.to_string());
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(pb);
        }
    }
    fn tick(&self, _label: &str, done: u64, _total: u64, _error: Option<&str>) -> Control {
        if let Ok(slot) = self.bar.lock() {
            if let Some(pb) = slot.as_ref() {
                pb.set_position(done);
            }
        }
        Control::Continue
    }
    fn end(&self, _label: &str) {
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(pb) = slot.take() {
                pb.finish_and_clear();
            }
        }
    }
}
