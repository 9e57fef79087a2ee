//! The one error type of the library.
//!
//! Every variant names the problem precisely (which matrix, which layer, which iteration), so
//! that a user can act on the message. Library code returns these values; it never panics on
//! user input.

use std::path::PathBuf;

/// Errors produced by `mlmatvamp`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A matrix has the wrong shape.
    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    Shape {
        /// Which matrix.
        what: String,
        /// The expected shape, e.g. `"200 x 3"`.
        expected: String,
        /// The shape that was supplied.
        got: String,
    },
    /// An input contains NaN or an infinity.
    #[error("non-finite value in {what}: {detail}")]
    NonFinite {
        /// Which input.
        what: String,
        /// Where (row/column) and which value.
        detail: String,
    },
    /// A matrix that must be symmetric is not.
    #[error("{what} is not symmetric: {detail}")]
    NotSymmetric {
        /// Which matrix.
        what: String,
        /// The largest asymmetry found.
        detail: String,
    },
    /// A covariance or precision matrix is not positive definite.
    #[error("{what} is not positive definite: {detail}")]
    NotPositiveDefinite {
        /// Which matrix.
        what: String,
        /// Why (e.g. the smallest eigenvalue).
        detail: String,
    },
    /// A message or estimate turned non-finite during the iterations.
    #[error("diverged at iteration {iteration}, {location}: {detail}")]
    Diverged {
        /// Where in the network (layer and direction).
        location: String,
        /// The iteration index (0-based).
        iteration: usize,
        /// What went non-finite.
        detail: String,
    },
    /// An invalid argument or option value.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// Which argument or option.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A problem in a configuration file (unknown key, unknown kind, missing value, ...).
    #[error("configuration error{}: {detail}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Config {
        /// The configuration file, if known.
        path: Option<PathBuf>,
        /// What is wrong.
        detail: String,
    },
    /// A file could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A data file has an unsupported or malformed content.
    #[error("cannot use {}: {detail}", path.display())]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The run was stopped at an observer's request (a callback, Ctrl-C); no result is returned.
    #[error("stopped at the observer's request: {what}")]
    Stopped {
        /// What was stopped, and how far it got.
        what: String,
    },
    /// A numerical routine failed (for example an SVD that did not converge).
    #[error("numerical failure in {what}: {detail}")]
    Numerical {
        /// Which routine.
        what: String,
        /// Details.
        detail: String,
    },
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::Shape`].
    pub fn shape(
        what: impl Into<String>,
        expected: impl Into<String>,
        got: impl Into<String>,
    ) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.into(),
            got: got.into(),
        }
    }
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            detail: detail.into(),
        }
    }
    /// Shorthand for [`Error::Config`] without a path.
    pub fn config(detail: impl Into<String>) -> Self {
        Error::Config {
            path: None,
            detail: detail.into(),
        }
    }
}
