//! The TOML run configuration of `mlmatvamp run CONFIG.toml`: parsing, array sources, and
//! building the [`Network`], the [`SolverConfig`] and the optional ground truth.
//!
//! ```toml
//! d = 3
//! iterations = 50
//! tolerance = 1e-10          # optional: stop when every estimate changes by less (relative)
//! seed = 0                   # optional (default 0): laws and teacher mode draw from it
//! gamma_init = 1e-6          # optional: initial backward precisions gamma_init * I
//! truth = ["Z0.npy", "Z1.npy"]   # optional: one per Z_0 … Z_{L-1}, adds the empirical MSE
//!
//! [policy]                   # optional message policy (see MessagePolicy)
//! lam_min = 1e-12
//!
//! [prior]                    # Z_0
//! kind = "gaussian"
//! rows = 200
//! covariance = [[1.0, 0.3, 0.0], [0.3, 1.0, 0.0], [0.0, 0.0, 1.0]]
//!
//! [[layer]]                  # layers 1 … L-1, alternating linear / row-wise
//! kind = "linear"
//! weight = "W1.npy"
//!
//! [output]
//! kind = "awgn"
//! y = "Y.npy"                # omit for teacher mode
//! noise_precision = [[100.0, 0.0, 0.0], [0.0, 100.0, 0.0], [0.0, 0.0, 100.0]]
//! ```
//!
//! Every array-valued key is an [`ArraySource`]: a file name (`.npy` or `.csv`, relative to the
//! configuration file's directory), an inline TOML array (a vector `[1.0, 2.0]` or a matrix
//! `[[1.0, 0.0], [0.0, 1.0]]`), or a law table such as `{ law = "gaussian", rows = 600,
//! cols = 1000 }` drawn from `seed`.
//!
//! Without `y` in `[output]` the configuration is in *teacher mode*: the truth and the
//! observation are drawn from the model itself, so a configuration alone is a complete problem:
//!
//! ```
//! # fn main() -> mlmatvamp::Result<()> {
//! use mlmatvamp::{config, solver::Solver};
//! let text = r#"
//! d = 2
//! [prior]
//! kind = "gaussian"
//! rows = 50
//! [[layer]]
//! kind = "linear"
//! weight = { law = "gaussian", rows = 80, cols = 50 }
//! [output]
//! kind = "awgn"
//! noise_precision = [[100.0, 0.0], [0.0, 100.0]]
//! "#;
//! let problem = config::from_toml_str(text, std::path::Path::new("."), None)?;
//! assert!(problem.teacher);
//! let solution = Solver::new(problem.solver.clone())?.run(&problem.network, problem.truth.as_deref())?;
//! let z0 = &solution.history.last().unwrap().variables[0];
//! assert!(z0.mse.unwrap() < 0.2 * 2.0); // far below the prior MSE tr(I) = 2
//! # Ok(())
//! # }
//! ```
//!
//! Unknown keys and kinds are errors. Every array is checked against `d` and the row counts,
//! every input for NaN/Inf, every covariance/precision for symmetry and positive definiteness,
//! and each error names the key, the file and the expected versus actual shape.

use crate::denoise::{
    ActivationLayer, AwgnOutput, BernoulliGaussianPrior, Estimator, GaussianPrior, InputPrior,
    Layer, LinearLayer, OutputChannel,
};
use crate::denoise::{GroupLassoPrior, MismatchedPrior};
use crate::error::{Error, Result};
use crate::io;
use crate::message::MessagePolicy;
use crate::network::Network;
use crate::rows::check_finite;
use crate::solver::SolverConfig;
use crate::spd::{DMat, Spd};
use faer::Mat;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// Array sources
// ---------------------------------------------------------------------------------------------

/// Where an array comes from: a file, an inline TOML array, or a random law.
///
/// In TOML: `"W1.npy"` / `"data/X.csv"` (a file, relative to the configuration's directory),
/// `[1.0, 2.0]` (an inline vector), `[[1.0, 0.0], [0.0, 1.0]]` (an inline matrix, one inner
/// array per row), or a law such as `{ law = "gaussian", rows = 600, cols = 1000 }` or
/// `{ law = "bernoulli", observed = 0.7 }` (see [`LawSpec`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ArraySource {
    /// A `.npy` or `.csv` file (see [`crate::io`] for the accepted contents).
    File(PathBuf),
    /// An inline TOML array.
    Inline(InlineArray),
    /// An array drawn at random from `seed`.
    Law(LawSpec),
    /// A linear operator that is never stored as a matrix (a linear layer's `weight` only):
    /// `{ operator = "dct", rows = …, cols = …, seed = … }`.
    Operator(OperatorSpec),
}

/// A weight given as an operator: `{ operator = "dct", rows = 512, cols = 1024, seed = 3 }`, the
/// `rows` rows of the orthonormal DCT of length `cols`, with random signs and a random row
/// selection drawn from `seed` (default: the configuration's), scaled by `scale` (default 1, so
/// that `W Wᵀ = I`, like a Gaussian weight of variance `1/cols` on average).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSpec {
    /// The operator: `"dct"`.
    pub operator: OperatorKind,
    /// `n_l`.
    pub rows: usize,
    /// `n_{l−1}`.
    pub cols: usize,
    /// The seed of the signs and the row selection (default: derived from the top-level seed).
    pub seed: Option<u64>,
    /// The scale `c` (`W Wᵀ = c² I`, default 1).
    pub scale: Option<f64>,
}

/// The operators a configuration can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperatorKind {
    /// A subsampled orthonormal DCT with random signs ([`crate::operator::SubsampledDct`]).
    Dct,
}

/// An inline TOML array.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum InlineArray {
    /// `[a, b, c]`: a vector (used as an `n x 1` column where a matrix is expected).
    Vector(Vec<f64>),
    /// `[[a, b], [c, d]]`: a matrix given row by row.
    Matrix(Vec<Vec<f64>>),
}

/// A random array: `{ law = "gaussian", rows = 600, cols = 1000, variance = 0.001 }` or
/// `{ law = "bernoulli", observed = 0.7 }` (a mask; its shape is implied by `y`).
///
/// Each law array has its own random stream derived from the top-level `seed` and the key it
/// belongs to, so adding or resizing one array does not change the others.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LawSpec {
    /// The distribution of the entries.
    pub law: Law,
    /// Number of rows (may be omitted where the shape is implied, e.g. for a mask).
    pub rows: Option<usize>,
    /// Number of columns (may be omitted where the shape is implied).
    pub cols: Option<usize>,
    /// `gaussian`: entry variance; the default is `1/cols` (so that `W x` has entries of the
    /// size of `x`).
    pub variance: Option<f64>,
    /// `bernoulli`: the probability that an entry is 1 (observed); `probability` is accepted
    /// as an alias.
    #[serde(alias = "probability")]
    pub observed: Option<f64>,
}

/// Entry distributions of a [`LawSpec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Law {
    /// I.i.d. `N(0, variance)` entries.
    Gaussian,
    /// I.i.d. entries equal to 1 with probability `observed`, else 0 (a missing-entry mask).
    Bernoulli,
}

impl Law {
    /// The name used in configurations.
    pub fn name(&self) -> &'static str {
        match self {
            Law::Gaussian => "gaussian",
            Law::Bernoulli => "bernoulli",
        }
    }
}

impl LawSpec {
    /// Checks the law's keys and returns its shape; `implied` is the shape the key requires, if
    /// known (then `rows`/`cols` may be omitted). `label` names the array in errors.
    pub fn check(&self, label: &str, implied: Option<(usize, usize)>) -> Result<(usize, usize)> {
        let dim = |given: Option<usize>, imp: Option<usize>, name: &str| {
            given.or(imp).ok_or_else(|| {
                Error::invalid(
                    label,
                    format!("`{name}` is required here (the shape is not implied by the key)"),
                )
            })
        };
        let rows = dim(self.rows, implied.map(|s| s.0), "rows")?;
        let cols = dim(self.cols, implied.map(|s| s.1), "cols")?;
        let too_big = (rows as u64)
            .checked_mul(cols as u64)
            .is_none_or(|n| n > io::MAX_ENTRIES);
        if rows == 0 || cols == 0 || too_big {
            return Err(Error::invalid(
                label,
                format!(
                    "rows and cols must be at least 1 and rows x cols at most {}, got {rows} x {cols}",
                    io::MAX_ENTRIES
                ),
            ));
        }
        let misplaced = |key: &str| {
            Error::invalid(
                label,
                format!("`{key}` does not apply to the {} law", self.law.name()),
            )
        };
        match self.law {
            Law::Gaussian => {
                if self.observed.is_some() {
                    return Err(misplaced("observed"));
                }
                let v = self.gaussian_variance(cols);
                if !(v >= 0.0 && v.is_finite()) {
                    return Err(Error::invalid(
                        label,
                        format!("variance must be non-negative and finite, got {v}"),
                    ));
                }
            }
            Law::Bernoulli => {
                if self.variance.is_some() {
                    return Err(misplaced("variance"));
                }
                match self.observed {
                    Some(p) if (0.0..=1.0).contains(&p) => {}
                    Some(p) => {
                        return Err(Error::invalid(
                            label,
                            format!("`observed` must be a probability in [0, 1], got {p}"),
                        ))
                    }
                    None => return Err(Error::invalid(
                        label,
                        "the bernoulli law needs `observed` (the probability that an entry is 1)",
                    )),
                }
            }
        }
        Ok((rows, cols))
    }

    /// The entry variance of a `gaussian` law with `cols` columns (default `1/cols`).
    pub fn gaussian_variance(&self, cols: usize) -> f64 {
        self.variance.unwrap_or(1.0 / cols as f64)
    }
}

enum Element {
    Number(f64),
    Row(Vec<f64>),
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Element;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or an array of numbers")
            }
            fn visit_f64<E: de::Error>(self, x: f64) -> std::result::Result<Element, E> {
                Ok(Element::Number(x))
            }
            fn visit_i64<E: de::Error>(self, x: i64) -> std::result::Result<Element, E> {
                Ok(Element::Number(x as f64))
            }
            fn visit_u64<E: de::Error>(self, x: u64) -> std::result::Result<Element, E> {
                Ok(Element::Number(x as f64))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Element, A::Error> {
                let mut row = Vec::new();
                while let Some(x) = seq.next_element::<f64>()? {
                    row.push(x);
                }
                Ok(Element::Row(row))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ArraySource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ArraySource;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a file name (.npy or .csv), an inline array (of numbers, or of rows of \
                     numbers) or a law table such as { law = \"gaussian\", rows = 10, cols = 5 }",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<ArraySource, E> {
                Ok(ArraySource::File(PathBuf::from(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<ArraySource, A::Error> {
                let mut numbers = Vec::new();
                let mut rows = Vec::new();
                while let Some(e) = seq.next_element::<Element>()? {
                    match e {
                        Element::Number(x) => numbers.push(x),
                        Element::Row(r) => rows.push(r),
                    }
                }
                match (numbers.is_empty(), rows.is_empty()) {
                    (_, true) => Ok(ArraySource::Inline(InlineArray::Vector(numbers))),
                    (true, false) => Ok(ArraySource::Inline(InlineArray::Matrix(rows))),
                    (false, false) => Err(de::Error::custom(
                        "an inline array must hold either numbers (a vector) or arrays of \
                         numbers (the rows of a matrix), not both",
                    )),
                }
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<ArraySource, A::Error> {
                // `{ operator = … }` is an operator, any other table a law.
                let table = toml::Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if table.contains_key("operator") {
                    table
                        .try_into::<OperatorSpec>()
                        .map(ArraySource::Operator)
                        .map_err(|e| de::Error::custom(format!("operator table: {}", e.message())))
                } else {
                    table
                        .try_into::<LawSpec>()
                        .map(ArraySource::Law)
                        .map_err(|e| de::Error::custom(e.message()))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A resolved array with the label used in error messages.
#[derive(Clone, Debug)]
pub struct Array {
    /// The values (`r x c`; a vector of length `n` is `n x 1`).
    pub data: Mat<f64>,
    /// Whether it was given as a vector (1-D `.npy` array or flat inline array).
    pub vector: bool,
    /// E.g. ``weight of layer 1 (W1.npy, key `layer[1].weight`)``.
    pub label: String,
}

impl Array {
    fn got(&self) -> String {
        if self.vector {
            format!("a vector of length {}", self.data.nrows())
        } else {
            format!("{} x {}", self.data.nrows(), self.data.ncols())
        }
    }

    /// Checks that every entry is finite (the error names the label and the entry).
    pub fn finite(self) -> Result<Self> {
        check_finite(&self.label, self.data.as_ref())?;
        Ok(self)
    }

    /// The array as an exact `rows x cols` matrix (a vector of length `rows` is accepted when
    /// `cols == 1`).
    pub fn matrix(self, rows: usize, cols: usize) -> Result<Mat<f64>> {
        if self.data.nrows() == rows && self.data.ncols() == cols {
            return Ok(self.data);
        }
        Err(Error::shape(
            &self.label,
            format!("{rows} x {cols}"),
            self.got(),
        ))
    }

    /// The array as a vector of length `d` (a vector, a `1 x d` row or a `d x 1` column).
    pub fn vector_of(self, d: usize) -> Result<Vec<f64>> {
        let (r, c) = (self.data.nrows(), self.data.ncols());
        if r == 1 && c == d {
            return Ok((0..d).map(|j| self.data[(0, j)]).collect());
        }
        if c == 1 && r == d {
            return Ok((0..d).map(|i| self.data[(i, 0)]).collect());
        }
        Err(Error::shape(
            &self.label,
            format!("a vector of length {d} (or 1 x {d})"),
            self.got(),
        ))
    }

    /// The array as a `d x d` matrix.
    pub fn square(self, d: usize) -> Result<DMat> {
        let m = self.data;
        if m.nrows() == d && m.ncols() == d && !self.vector {
            return Ok(DMat::from_fn(d, d, |i, j| m[(i, j)]));
        }
        let got = if self.vector {
            format!("a vector of length {}", m.nrows())
        } else {
            format!("{} x {}", m.nrows(), m.ncols())
        };
        Err(Error::shape(&self.label, format!("{d} x {d}"), got))
    }

    /// The array as a symmetric positive-definite `d x d` matrix.
    pub fn spd(self, d: usize) -> Result<Spd> {
        let label = self.label.clone();
        let m = self.finite()?.square(d)?;
        Spd::new(&label, m, Some(d))
    }
}

/// Resolves [`ArraySource`]s: files relative to a base directory, laws from a seed.
#[derive(Clone, Debug)]
pub struct Resolver {
    /// The directory relative file names are taken from (the configuration's directory).
    pub base_dir: PathBuf,
    /// The seed of law-drawn arrays.
    pub seed: u64,
}

pub use crate::rng::named_stream as stream;

impl Resolver {
    /// Loads or draws the array of `key`; `desc` is its human name ("weight of layer 1").
    pub fn resolve(&self, src: &ArraySource, key: &str, desc: &str) -> Result<Array> {
        self.resolve_shaped(src, key, desc, None)
    }

    /// As [`Resolver::resolve`], where the key implies the shape `implied` (a law may then omit
    /// `rows` and `cols`).
    pub fn resolve_shaped(
        &self,
        src: &ArraySource,
        key: &str,
        desc: &str,
        implied: Option<(usize, usize)>,
    ) -> Result<Array> {
        match src {
            ArraySource::File(p) => {
                let label = format!("{desc} ({}, key `{key}`)", p.display());
                let path = self.base_dir.join(p);
                let loaded = io::read_matrix(&path)?;
                Ok(Array {
                    data: loaded.data,
                    vector: loaded.vector,
                    label,
                })
            }
            ArraySource::Inline(a) => {
                let label = format!("{desc} (inline, key `{key}`)");
                match a {
                    InlineArray::Vector(v) => Ok(Array {
                        data: Mat::from_fn(v.len(), 1, |i, _| v[i]),
                        vector: true,
                        label,
                    }),
                    InlineArray::Matrix(rows) => {
                        let c = rows.first().map_or(0, Vec::len);
                        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != c) {
                            return Err(Error::shape(
                                &label,
                                format!("rows of equal length {c} (as row 0)"),
                                format!("row {i} of length {}", r.len()),
                            ));
                        }
                        Ok(Array {
                            data: Mat::from_fn(rows.len(), c, |i, j| rows[i][j]),
                            vector: false,
                            label,
                        })
                    }
                }
            }
            ArraySource::Law(spec) => {
                let label = format!("{desc} ({} law, key `{key}`)", spec.law.name());
                let (rows, cols) = spec.check(&label, implied)?;
                Ok(Array {
                    data: draw_law(spec, rows, cols, self.seed, key),
                    vector: false,
                    label,
                })
            }
            ArraySource::Operator(_) => Err(Error::invalid(
                format!("{desc} (key `{key}`)"),
                "an operator (`{ operator = … }`) is only allowed as the `weight` of a linear layer",
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The configuration
// ---------------------------------------------------------------------------------------------

/// The largest `d` a configuration may ask for (every `d x d` matrix is dense and small).
pub const MAX_D: usize = 1024;

fn default_iterations() -> usize {
    SolverConfig::default().iterations
}

/// The whole run configuration (one TOML file).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The number of columns `d` of every `Z_l`.
    pub d: usize,
    /// Maximum number of iterations (default 50).
    #[serde(default = "default_iterations")]
    pub iterations: usize,
    /// Optional early stop: all estimates change by less than this (relative Frobenius norm).
    pub tolerance: Option<f64>,
    /// Seed of law-drawn arrays and of teacher mode (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Initial backward precisions `gamma_init · I` (default 1e-6).
    pub gamma_init: Option<f64>,
    /// Message policy: `lam_min`, `lam_max`, `damp_precision`, `damp_mean`.
    pub policy: Option<MessagePolicy>,
    /// Default estimator (`"map"` or `"mmse"`) of the row-wise layers that do not set their own
    /// (default `"mmse"`).
    pub estimator: Option<Estimator>,
    /// Optional ground truth `Z_0 … Z_{L−1}` for the empirical MSE.
    pub truth: Option<Vec<ArraySource>>,
    /// The prior on `Z_0`.
    pub prior: PriorConfig,
    /// Hidden layers `1 … L−1` in order (`[[layer]]` tables).
    #[serde(default)]
    pub layer: Vec<LayerConfig>,
    /// The output channel.
    pub output: OutputConfig,
    /// Optional random asymmetric start (`[init]`: `seed`, `precision`, `scale`): every initial
    /// backward message `R⁻_l` gets i.i.d. `N(0, scale²)` entries and precision `precision · I`
    /// instead of `R⁻ = 0`, `gamma_init · I`. Needed when the model is symmetric under
    /// relabelling the columns (mixed regression with equal weights, spec §4.6), where the
    /// default start is a fixed point. See [`crate::apps::mixed::RandomStart`].
    pub init: Option<crate::apps::mixed::RandomStart>,
    /// Options of the state evolution (`mlmatvamp se`, `mlmatvamp compare`); ignored by `run`.
    pub se: Option<SeTable>,
}

/// `[se]`: options of the state evolution. Command-line options override them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeTable {
    /// Monte-Carlo rows per sampled step (default 20000).
    pub n_mc: Option<usize>,
    /// `"general"` (default) or `"identity"` (spec §6.3).
    pub psi_mode: Option<crate::se::PsiMode>,
    /// Seed of the Monte-Carlo draws (default: the top-level `seed`).
    pub seed: Option<u64>,
}

/// The prior on the rows of `Z_0` (`[prior]`, tagged by `kind`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PriorConfig {
    /// `kind = "gaussian"`: rows i.i.d. `N(mean, covariance)`.
    Gaussian {
        /// `n_0`.
        rows: usize,
        /// Length-`d` mean (default zeros).
        mean: Option<ArraySource>,
        /// `d x d` covariance (default the identity).
        covariance: Option<ArraySource>,
    },
    /// `kind = "row-sparse"`: a row is 0 with probability `1 − sparsity`, else
    /// `N(mean, covariance)` (Bernoulli–Gaussian, MMSE).
    RowSparse {
        /// `n_0`.
        rows: usize,
        /// Probability `ρ ∈ (0, 1]` that a row is non-zero.
        sparsity: f64,
        /// Slab mean (default zeros).
        mean: Option<ArraySource>,
        /// Slab covariance (default the identity).
        covariance: Option<ArraySource>,
    },
    /// `kind = "group-lasso"`: the prior `∝ exp(−lambda ‖z‖₂)` on every row with its MAP
    /// denoiser (spec §5.3), so that the algorithm's MAP problem carries the penalty
    /// `lambda Σ_k ‖Z_0,k·‖₂` (with an AWGN output: the multi-task group lasso, paper eq. 5).
    GroupLasso {
        /// `n_0`.
        rows: usize,
        /// `λ > 0`.
        lambda: f64,
        /// Teacher mode only: the law the truth is drawn from (default: the group-lasso
        /// prior itself, which is not sparse).
        teacher: Option<TeacherLaw>,
    },
}

/// The law teacher mode draws `Z_0` from when it differs from the estimator's prior
/// (`[prior.teacher]`, tagged by `kind`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TeacherLaw {
    /// `kind = "gaussian"`: rows `N(mean, covariance)`.
    Gaussian {
        /// Length-`d` mean (default zeros).
        mean: Option<ArraySource>,
        /// `d x d` covariance (default the identity).
        covariance: Option<ArraySource>,
    },
    /// `kind = "row-sparse"`: Bernoulli–Gaussian rows.
    RowSparse {
        /// Probability `ρ ∈ (0, 1]` that a row is non-zero.
        sparsity: f64,
        /// Slab mean (default zeros).
        mean: Option<ArraySource>,
        /// Slab covariance (default the identity).
        covariance: Option<ArraySource>,
    },
}

/// A hidden layer (`[[layer]]`, tagged by `kind`). Layers alternate linear / row-wise, starting
/// with a linear layer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LayerConfig {
    /// `kind = "linear"`: `Z_l = W Z_{l−1} + B + Ξ`.
    Linear {
        /// `W` (`n_l x n_{l−1}`); its row count defines `n_l`. A dense `.npy`/`.csv` file or
        /// inline array, a sparse `.npz` (scipy's `save_npz`), a law, or an operator
        /// (`{ operator = "dct", rows = …, cols = … }`).
        weight: ArraySource,
        /// `B`: `n_l x d`, or a length-`d` vector / `1 x d` row added to every row.
        bias: Option<ArraySource>,
        /// `d x d` noise precision `N`; omitted means noiseless.
        noise_precision: Option<ArraySource>,
        /// How the linear step is solved: `"svd"` (one SVD at the start), `"cg"` (conjugate
        /// gradients and a spectral law, no SVD) or `"auto"` (default: SVD while it is cheap,
        /// else CG; sparse weights and operators always use CG).
        method: Option<LinearMethod>,
        /// CG only: the relative residual at which a solve stops (default `1e-8`).
        tolerance: Option<f64>,
        /// CG only: the iteration limit of a solve (default 1000); not converging is an error.
        max_iterations: Option<usize>,
        /// CG only: `"primal"`, `"dual"` or `"auto"` (default: the smaller system).
        form: Option<crate::operator::CgForm>,
        /// CG only: Rademacher probes of the spectral-law estimate (default 10), when the law is
        /// not known in closed form.
        probes: Option<usize>,
        /// CG only: Lanczos steps per probe (default 40).
        lanczos_steps: Option<usize>,
    },
    /// `kind = "identity"`: the row-wise noisy identity `Z_l = Z_{l−1} + Ξ`.
    Identity {
        /// `d x d` noise precision `N`; omitted means noiseless.
        noise_precision: Option<ArraySource>,
        /// `"map"` or `"mmse"` (they coincide for the identity).
        estimator: Option<Estimator>,
    },
    /// `kind = "relu"`: the row-wise `Z_l = relu(Z_{l−1}) + Ξ` (spec §4.7, `d ≤ 6`).
    Relu {
        /// `d x d` noise precision `N`; omitted means noiseless.
        noise_precision: Option<ArraySource>,
        /// `"map"` or `"mmse"` (default: the top-level `estimator`, else `"mmse"`).
        estimator: Option<Estimator>,
        /// MMSE only: Gauss–Legendre nodes per panel of the orthant rule (default by `d`: 16,
        /// 12, 6, 4, 4 for `d = 2 … 6`; `d = 1` and diagonal precisions use the closed form).
        mmse_nodes: Option<usize>,
    },
}

/// How a linear layer's step is solved (`method` in `[[layer]]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinearMethod {
    /// One thin SVD at the start, then a few thin products per iteration (exact).
    Svd,
    /// Conjugate gradients on the operator and a spectral law of `WᵀW`: no SVD, no dense `W`
    /// needed (`docs/matrix-free.md`).
    Cg,
    /// SVD while it costs less than [`AUTO_SVD_FLOPS`], else CG; always CG for sparse weights and
    /// operators.
    #[default]
    Auto,
}

/// The SVD cost `min(n_l, n_{l−1})² · max(n_l, n_{l−1})` (multiply-adds) below which `method =
/// "auto"` uses the SVD: about ten seconds on the project's machine.
pub const AUTO_SVD_FLOPS: f64 = 2e10;

/// Whether `auto` chooses the SVD for an `n_out x n_in` dense weight.
pub fn svd_is_cheap(n_out: usize, n_in: usize) -> bool {
    let (r, m) = (n_out.min(n_in) as f64, n_out.max(n_in) as f64);
    r * r * m <= AUTO_SVD_FLOPS
}

impl LayerConfig {
    /// Whether this is a linear layer (odd `l`) rather than a row-wise one (even `l`).
    pub fn is_linear(&self) -> bool {
        matches!(self, LayerConfig::Linear { .. })
    }
    /// The `kind` name.
    pub fn kind_name(&self) -> &'static str {
        match self {
            LayerConfig::Linear { .. } => "linear",
            LayerConfig::Identity { .. } => "identity",
            LayerConfig::Relu { .. } => "relu",
        }
    }
}

/// The output channel `p(Y | Z_{L−1})` (`[output]`, tagged by `kind`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum OutputConfig {
    /// `kind = "awgn"`: `Y = Z_{L−1} + Ξ` on the observed entries.
    Awgn {
        /// The observation `Y` (`n_{L−1} x d`). Omitted: teacher mode.
        y: Option<ArraySource>,
        /// `d x d` noise precision `N`.
        noise_precision: ArraySource,
        /// Optional mask of `Y`'s shape: 1 = observed, 0 = missing.
        mask: Option<ArraySource>,
    },
    /// `kind = "mixed-regression"`: `y_i = [Z_{L−1}]_{i q_i} + N(0, σ²)` with a hidden label
    /// `q_i ~ π` (paper eq. 6, spec §4.6; `d` = number of components).
    MixedRegression {
        /// The responses `y` (`n_{L−1}` values: a vector or an `n x 1` matrix). Omitted: teacher
        /// mode.
        y: Option<ArraySource>,
        /// The noise variance `σ² > 0`.
        noise_variance: f64,
        /// The component weights `π` (length `d`, positive, summing to 1; default uniform).
        weights: Option<ArraySource>,
        /// `"mmse"` (default) or `"map"` (joint MAP over the value and the label).
        estimator: Option<Estimator>,
    },
    /// `kind = "probit"`: `y_ij = sign([Z_{L−1}]_ij + N(0, σ²))` entry by entry (vampyre's
    /// `BinaryQuantEst` with Gaussian pre-activation noise; `docs/probit.md`).
    Probit {
        /// The signs `Y` (`n_{L−1} x d`, every entry `-1` or `+1`). Omitted: teacher mode.
        y: Option<ArraySource>,
        /// The pre-activation noise variance `σ² > 0`.
        noise_variance: f64,
        /// `"mmse"` (default) or `"map"`.
        estimator: Option<Estimator>,
    },
}

/// Information about one hidden layer, for the history.
#[derive(Clone, Debug, Serialize)]
pub struct LayerInfo {
    /// `l` (1-based).
    pub layer: usize,
    /// The configuration `kind`.
    pub kind: String,
    /// The layer's own description.
    pub description: String,
    /// `n_{l−1}`.
    pub rows_in: usize,
    /// `n_l`.
    pub rows_out: usize,
    /// Seconds spent in the SVD (linear layers).
    pub svd_seconds: Option<f64>,
}

/// A configuration turned into everything a run needs.
#[derive(Clone, Debug)]
pub struct Problem {
    /// The configuration file, if loaded from one.
    pub path: Option<PathBuf>,
    /// The typed configuration.
    pub config: RunConfig,
    /// The configuration as parsed TOML, converted to JSON (for the history).
    pub raw: serde_json::Value,
    /// The network, holding the observation (drawn from the model in teacher mode).
    pub network: Network,
    /// The solver options.
    pub solver: SolverConfig,
    /// The ground truth `Z_0 … Z_{L−1}` (from `truth`, or drawn in teacher mode).
    pub truth: Option<Vec<Mat<f64>>>,
    /// Whether the observation was drawn from the model (no `y` in `[output]`).
    pub teacher: bool,
    /// One entry per hidden layer.
    pub layers: Vec<LayerInfo>,
    /// Seconds spent building the problem (reading, SVDs, sampling).
    pub setup_seconds: f64,
}

impl Problem {
    /// Runs Algorithm 1 on this problem: from [`Problem::initial_state`], with the solver options
    /// and the truth (if any) of the configuration, calling `callback` after every iteration.
    /// `run` and `compare` both solve through here, so they cannot disagree on the start.
    pub fn solve(
        &self,
        callback: &mut dyn FnMut(
            &crate::solver::IterationRecord,
            &crate::solver::State,
        ) -> crate::solver::Control,
    ) -> Result<crate::solver::Solution> {
        let solver = crate::solver::Solver::new(self.solver.clone())?;
        solver.run_from(
            &self.network,
            self.initial_state()?,
            self.truth.as_deref(),
            callback,
        )
    }

    /// Algorithm 1's initial state: the `[init]` random start if the configuration has one, else
    /// line 1 (`R⁻ = 0`, `Γ⁻ = gamma_init · I`).
    pub fn initial_state(&self) -> Result<crate::solver::State> {
        match &self.config.init {
            Some(start) => start.state(&self.network),
            None => crate::solver::State::new(&self.network, self.solver.gamma_init),
        }
    }
}

/// Reads and builds a configuration file. Relative file names are taken from its directory.
pub fn load(path: &Path) -> Result<Problem> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    from_toml_str(&text, &base, Some(path))
}

/// Parses and builds a configuration given as text; `base_dir` resolves relative file names and
/// `path` (if any) is named in error messages.
pub fn from_toml_str(text: &str, base_dir: &Path, path: Option<&Path>) -> Result<Problem> {
    let config = RunConfig::parse(text, path)?;
    let raw: toml::Table = toml::from_str(text).map_err(|e| config_error(path, e.to_string()))?;
    let raw = serde_json::to_value(&raw).map_err(|e| config_error(path, e.to_string()))?;
    let mut problem = config.build(base_dir, path)?;
    problem.raw = raw;
    Ok(problem)
}

pub(crate) fn config_error(path: Option<&Path>, detail: impl Into<String>) -> Error {
    Error::Config {
        path: path.map(Path::to_path_buf),
        detail: detail.into(),
    }
}

/// The built prior: the denoiser and `n_0`.
pub(crate) type BuiltPrior = (Arc<dyn InputPrior>, usize);

impl PriorConfig {
    pub(crate) fn build(
        &self,
        res: &Resolver,
        d: usize,
        path: Option<&Path>,
    ) -> Result<BuiltPrior> {
        let rows = match self {
            PriorConfig::Gaussian { rows, .. }
            | PriorConfig::RowSparse { rows, .. }
            | PriorConfig::GroupLasso { rows, .. } => *rows,
        };
        if rows == 0 || rows as u64 * d as u64 > io::MAX_ENTRIES {
            return Err(config_error(
                path,
                format!(
                    "`prior.rows` must be at least 1 and rows x d at most {}, got {rows}",
                    io::MAX_ENTRIES
                ),
            ));
        }
        let mean_cov = |mean: &Option<ArraySource>, cov: &Option<ArraySource>, what: &str| {
            let mean = match mean {
                Some(src) => res
                    .resolve(src, "prior.mean", &format!("{what} mean"))?
                    .finite()?
                    .vector_of(d)?,
                None => vec![0.0; d],
            };
            let cov = match cov {
                Some(src) => res
                    .resolve(src, "prior.covariance", &format!("{what} covariance"))?
                    .spd(d)?
                    .into_matrix(),
                None => DMat::identity(d, d),
            };
            Ok::<_, Error>((mean, cov))
        };
        let prior: Arc<dyn InputPrior> = match self {
            PriorConfig::Gaussian {
                mean, covariance, ..
            } => {
                let (mean, cov) = mean_cov(mean, covariance, "prior")?;
                Arc::new(GaussianPrior::new(mean, cov)?)
            }
            PriorConfig::RowSparse {
                sparsity,
                mean,
                covariance,
                ..
            } => {
                if !(*sparsity > 0.0 && *sparsity <= 1.0) {
                    return Err(config_error(
                        path,
                        format!("`prior.sparsity` must be in (0, 1], got {sparsity}"),
                    ));
                }
                let (mean, cov) = mean_cov(mean, covariance, "slab")?;
                Arc::new(BernoulliGaussianPrior::new(*sparsity, mean, cov)?)
            }
            PriorConfig::GroupLasso {
                lambda, teacher, ..
            } => {
                if !(*lambda > 0.0 && lambda.is_finite()) {
                    return Err(config_error(
                        path,
                        format!("`prior.lambda` must be positive and finite, got {lambda}"),
                    ));
                }
                let estimator = Arc::new(GroupLassoPrior::new(d, *lambda)?);
                match teacher {
                    None => estimator,
                    Some(law) => {
                        Arc::new(MismatchedPrior::new(law.build(res, d, path)?, estimator)?)
                    }
                }
            }
        };
        Ok((prior, rows))
    }
}

impl TeacherLaw {
    fn build(&self, res: &Resolver, d: usize, path: Option<&Path>) -> Result<Arc<dyn InputPrior>> {
        let (mean, cov) = match self {
            TeacherLaw::Gaussian { mean, covariance }
            | TeacherLaw::RowSparse {
                mean, covariance, ..
            } => (mean, covariance),
        };
        let mean = match mean {
            Some(src) => res
                .resolve(src, "prior.teacher.mean", "teacher mean")?
                .finite()?
                .vector_of(d)?,
            None => vec![0.0; d],
        };
        let cov = match cov {
            Some(src) => res
                .resolve(src, "prior.teacher.covariance", "teacher covariance")?
                .spd(d)?
                .into_matrix(),
            None => DMat::identity(d, d),
        };
        Ok(match self {
            TeacherLaw::Gaussian { .. } => Arc::new(GaussianPrior::new(mean, cov)?),
            TeacherLaw::RowSparse { sparsity, .. } => {
                if !(*sparsity > 0.0 && *sparsity <= 1.0) {
                    return Err(config_error(
                        path,
                        format!("`prior.teacher.sparsity` must be in (0, 1], got {sparsity}"),
                    ));
                }
                Arc::new(BernoulliGaussianPrior::new(*sparsity, mean, cov)?)
            }
        })
    }
}

/// A hidden layer with its arrays loaded and checked, before any SVD.
#[allow(clippy::large_enum_variant)] // one per layer, built once
pub(crate) enum Prepared {
    Linear {
        weight: Weight,
        bias: Option<Mat<f64>>,
        noise: Option<Spd>,
        method: LinearMethod,
        cg: crate::operator::CgOptions,
        law: crate::denoise::LawOptions,
    },
    RowWise(Arc<dyn Layer>),
}

/// The weight of a linear layer: a matrix, or a law that is drawn only when the algorithm needs
/// the matrix (the state evolution needs only its singular-value law).
pub(crate) enum Weight {
    /// A given (or inline) matrix, checked finite.
    Matrix(Mat<f64>),
    /// `{ law = …, rows = …, cols = … }`, checked; drawn from the stream of `key`.
    Law {
        spec: Box<LawSpec>,
        key: String,
        label: String,
        rows: usize,
        cols: usize,
    },
    /// A sparse matrix from an `.npz` file.
    Sparse(crate::operator::sparse::Csr),
    /// An operator (never a matrix).
    Operator(Arc<dyn crate::operator::LinearOperator>),
}

impl Weight {
    /// The matrix: the given one, or the law drawn from its own stream of `seed`; `None` for a
    /// sparse weight or an operator.
    fn into_matrix(self, seed: u64) -> Option<Mat<f64>> {
        match self {
            Weight::Matrix(m) => Some(m),
            Weight::Law {
                spec,
                key,
                rows,
                cols,
                ..
            } => Some(draw_law(&spec, rows, cols, seed, &key)),
            Weight::Sparse(_) | Weight::Operator(_) => None,
        }
    }

    /// Whether the layer is solved by SVD under `method` (the decision of `auto`).
    pub(crate) fn uses_svd(&self, method: LinearMethod, n_out: usize, n_in: usize) -> bool {
        match (method, self) {
            (LinearMethod::Svd, _) => true,
            (LinearMethod::Cg, _) => false,
            (LinearMethod::Auto, Weight::Matrix(_) | Weight::Law { .. }) => {
                svd_is_cheap(n_out, n_in)
            }
            (LinearMethod::Auto, _) => false,
        }
    }
}

/// Builds a linear layer for the algorithm: the SVD layer, or the matrix-free layer with the
/// operator's own spectral law, the Marchenko–Pastur law of a Gaussian law weight, or a
/// stochastic-Lanczos estimate. Returns the layer and its set-up seconds (SVD or law).
#[allow(clippy::too_many_arguments)]
fn build_linear(
    weight: Weight,
    bias: Option<Mat<f64>>,
    noise: Option<Spd>,
    method: LinearMethod,
    cg: crate::operator::CgOptions,
    law_options: &crate::denoise::LawOptions,
    d: usize,
    n_out: usize,
    n_in: usize,
    seed: u64,
) -> Result<(Arc<dyn Layer>, Option<f64>)> {
    use crate::denoise::OperatorLayer;
    use crate::operator::{DenseOperator, LinearOperator, SparseOperator, SpectralLaw};
    if weight.uses_svd(method, n_out, n_in) {
        let matrix = match weight {
            Weight::Sparse(csr) => {
                // Densify for an SVD the user asked for (bounded like any array).
                if (n_out as u64) * (n_in as u64) > io::MAX_ENTRIES {
                    return Err(Error::invalid(
                        "method",
                        format!("method = \"svd\" would densify a {n_out} x {n_in} sparse weight; use \"cg\""),
                    ));
                }
                let op = SparseOperator::new(csr);
                crate::operator::apply(&op, Mat::<f64>::identity(n_in, n_in).as_ref())?
            }
            other => other.into_matrix(seed).ok_or_else(|| {
                Error::invalid("method", "method = \"svd\" needs the weight as a matrix")
            })?,
        };
        let lin = LinearLayer::new(matrix.as_ref(), bias, noise, d)?;
        let s = lin.svd_seconds();
        return Ok((Arc::new(lin), Some(s)));
    }
    let start = std::time::Instant::now();
    let (op, law): (Arc<dyn LinearOperator>, Option<SpectralLaw>) = match weight {
        Weight::Law {
            spec,
            key,
            rows,
            cols,
            ..
        } => {
            let law = (spec.law == Law::Gaussian).then(|| {
                SpectralLaw::marchenko_pastur(
                    rows,
                    cols,
                    spec.gaussian_variance(cols),
                    crate::operator::spectral::LAW_SPECTRUM_POINTS,
                )
            });
            let m = draw_law(&spec, rows, cols, seed, &key);
            (Arc::new(DenseOperator::new(m)?), law.transpose()?)
        }
        Weight::Matrix(m) => (Arc::new(DenseOperator::new(m)?), None),
        Weight::Sparse(csr) => (Arc::new(SparseOperator::new(csr)), None),
        Weight::Operator(op) => (op, None),
    };
    let layer = match law {
        Some(law) => OperatorLayer::with_law(op, law, bias, noise, d, cg)?,
        None => OperatorLayer::new(op, bias, noise, d, cg, law_options)?,
    };
    Ok((Arc::new(layer), Some(start.elapsed().as_secs_f64())))
}

/// Draws a law array from the stream of `key` under `seed` (each key has its own stream).
fn draw_law(spec: &LawSpec, rows: usize, cols: usize, seed: u64, key: &str) -> Mat<f64> {
    let mut rng = stream(seed, key);
    match spec.law {
        Law::Gaussian => {
            crate::rng::standard_normal(rows, cols, &mut rng)
                * faer::Scale(spec.gaussian_variance(cols).sqrt())
        }
        Law::Bernoulli => {
            use rand::RngExt;
            let p = spec.observed.unwrap_or(1.0);
            Mat::from_fn(
                rows,
                cols,
                |_, _| {
                    if rng.random::<f64>() < p {
                        1.0
                    } else {
                        0.0
                    }
                },
            )
        }
    }
}

impl LayerConfig {
    pub(crate) fn prepare(
        &self,
        l: usize,
        n_in: usize,
        d: usize,
        res: &Resolver,
        default_estimator: Option<Estimator>,
    ) -> Result<(Prepared, usize)> {
        let noise = |src: &Option<ArraySource>| -> Result<Option<Spd>> {
            src.as_ref()
                .map(|s| {
                    res.resolve(
                        s,
                        &format!("layer[{l}].noise_precision"),
                        &format!("noise precision of layer {l}"),
                    )?
                    .spd(d)
                })
                .transpose()
        };
        match self {
            LayerConfig::Linear {
                weight,
                bias,
                noise_precision,
                method,
                tolerance,
                max_iterations,
                form,
                probes,
                lanczos_steps,
            } => {
                let key = format!("layer[{l}].weight");
                let desc = format!("weight of layer {l}");
                let method = method.unwrap_or_default();
                let defaults = crate::operator::CgOptions::default();
                let cg = crate::operator::CgOptions {
                    tolerance: tolerance.unwrap_or(defaults.tolerance),
                    max_iterations: max_iterations.unwrap_or(defaults.max_iterations),
                    form: form.unwrap_or_default(),
                };
                cg.validate().map_err(|e| match e {
                    Error::Invalid { what, detail } => {
                        Error::invalid(format!("`layer[{l}].{what}`"), detail)
                    }
                    other => other,
                })?;
                let law_defaults = crate::denoise::LawOptions::default();
                let law = crate::denoise::LawOptions {
                    probes: probes.unwrap_or(law_defaults.probes),
                    steps: lanczos_steps.unwrap_or(law_defaults.steps),
                    seed: crate::rng::mix64(res.seed ^ l as u64),
                };
                if law.probes == 0 || law.steps == 0 {
                    return Err(Error::invalid(
                        format!("`layer[{l}].probes` / `layer[{l}].lanczos_steps`"),
                        "the spectral-law estimate needs at least one probe and one step",
                    ));
                }
                // A law is checked here and drawn only when the algorithm needs the matrix.
                let (w, label, (r, c), got) = match weight {
                    ArraySource::Operator(spec) => {
                        let label = format!("{desc} (operator, key `{key}`)");
                        // The shape against the neighbours before anything is allocated.
                        if spec.cols != n_in {
                            return Err(Error::shape(
                                &label,
                                format!(
                                    "n_{l} x {n_in} (n_{} = {n_in} rows of Z_{})",
                                    l - 1,
                                    l - 1
                                ),
                                format!("{} x {}", spec.rows, spec.cols),
                            ));
                        }
                        // The operator's own memory (a permutation and signs) and its output's.
                        let words = (spec.rows as u64 + 2 * spec.cols as u64)
                            .saturating_add((spec.rows as u64).saturating_mul(12 * d as u64));
                        crate::limits::check_memory(
                            &format!("the {} x {} operator", spec.rows, spec.cols),
                            &key,
                            crate::limits::f64_bytes(words),
                        )?;
                        let op = match spec.operator {
                            OperatorKind::Dct => crate::operator::SubsampledDct::new(
                                spec.rows,
                                spec.cols,
                                spec.scale.unwrap_or(1.0),
                                spec.seed.unwrap_or_else(|| {
                                    crate::rng::mix64(res.seed ^ 0xD0C7 ^ l as u64)
                                }),
                            )
                            .map_err(|e| Error::invalid(&label, e.to_string()))?,
                        };
                        let shape = (spec.rows, spec.cols);
                        (
                            Weight::Operator(Arc::new(op)),
                            label,
                            shape,
                            format!("{} x {}", shape.0, shape.1),
                        )
                    }
                    ArraySource::File(p)
                        if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz")) =>
                    {
                        let label = format!("{desc} ({}, key `{key}`)", p.display());
                        let csr = io::read_npz_csr(&res.base_dir.join(p))?;
                        let shape = csr.shape();
                        (
                            Weight::Sparse(csr),
                            label,
                            shape,
                            format!("{} x {}", shape.0, shape.1),
                        )
                    }
                    ArraySource::Law(spec) => {
                        let label = format!("{desc} ({} law, key `{key}`)", spec.law.name());
                        let shape = spec.check(&label, None)?;
                        let w = Weight::Law {
                            spec: Box::new(spec.clone()),
                            key,
                            label: label.clone(),
                            rows: shape.0,
                            cols: shape.1,
                        };
                        (w, label, shape, format!("{} x {}", shape.0, shape.1))
                    }
                    other => {
                        let a = res.resolve(other, &key, &desc)?.finite()?;
                        let shape = (a.data.nrows(), a.data.ncols());
                        let got = a.got();
                        (Weight::Matrix(a.data), a.label, shape, got)
                    }
                };
                if c != n_in {
                    let hint = if r == n_in {
                        " (is it transposed?)"
                    } else {
                        ""
                    };
                    return Err(Error::shape(
                        &label,
                        format!("n_{l} x {n_in} (n_{} = {n_in} rows of Z_{})", l - 1, l - 1),
                        format!("{got}{hint}"),
                    ));
                }
                let n_out = r;
                if n_out as u64 * d as u64 > io::MAX_ENTRIES {
                    return Err(Error::invalid(
                        &label,
                        format!("n_{l} x d = {n_out} x {d} is too large"),
                    ));
                }
                let bias = bias
                    .as_ref()
                    .map(|src| {
                        let b = res
                            .resolve(
                                src,
                                &format!("layer[{l}].bias"),
                                &format!("bias of layer {l}"),
                            )?
                            .finite()?;
                        broadcast_bias(b, n_out, d)
                    })
                    .transpose()?;
                let noise = noise(noise_precision)?;
                if method == LinearMethod::Svd && matches!(w, Weight::Operator(_)) {
                    return Err(Error::invalid(
                        &label,
                        "method = \"svd\" needs the weight as a matrix; an operator is solved by \
                         conjugate gradients (method = \"cg\" or \"auto\")",
                    ));
                }
                Ok((
                    Prepared::Linear {
                        weight: w,
                        bias,
                        noise,
                        method,
                        cg,
                        law,
                    },
                    n_out,
                ))
            }
            LayerConfig::Identity {
                noise_precision,
                estimator,
            } => {
                let layer = ActivationLayer::new(
                    crate::denoise::Activation::Identity,
                    noise(noise_precision)?,
                    estimator.or(default_estimator).unwrap_or_default(),
                    d,
                )?;
                Ok((Prepared::RowWise(Arc::new(layer)), n_in))
            }
            LayerConfig::Relu {
                noise_precision,
                estimator,
                mmse_nodes,
            } => {
                let mut layer = ActivationLayer::new(
                    crate::denoise::Activation::Relu,
                    noise(noise_precision)?,
                    estimator.or(default_estimator).unwrap_or_default(),
                    d,
                )
                .map_err(|e| Error::Config {
                    path: None,
                    detail: format!("layer {l} (`kind = \"relu\"`): {e}"),
                })?;
                if let Some(nodes) = mmse_nodes {
                    layer = layer
                        .with_relu_mmse(crate::denoise::ReluMmseMethod::Orthants { nodes: *nodes })
                        .map_err(|e| Error::Config {
                            path: None,
                            detail: format!("`layer[{l}].mmse_nodes`: {e}"),
                        })?;
                }
                Ok((Prepared::RowWise(Arc::new(layer)), n_in))
            }
        }
    }
}

/// `n x d`, or a length-`d` vector / `1 x d` row broadcast over the `n` rows.
pub(crate) fn broadcast_bias(b: Array, n: usize, d: usize) -> Result<Mat<f64>> {
    let (r, c) = (b.data.nrows(), b.data.ncols());
    if !b.vector && r == n && c == d {
        return Ok(b.data);
    }
    if b.vector && d == 1 && r == n {
        return Ok(b.data);
    }
    let row: Option<Vec<f64>> = if b.vector && r == d {
        Some((0..d).map(|i| b.data[(i, 0)]).collect())
    } else if !b.vector && r == 1 && c == d {
        Some((0..d).map(|j| b.data[(0, j)]).collect())
    } else {
        None
    };
    match row {
        Some(row) => Ok(Mat::from_fn(n, d, |_, j| row[j])),
        None => Err(Error::shape(
            &b.label,
            format!("{n} x {d} (or a row of length {d}, added to every row)"),
            b.got(),
        )),
    }
}

/// A built output channel and what the state evolution needs beyond it.
pub(crate) struct BuiltOutput {
    /// The channel (holding `y`, or a zero placeholder in teacher mode).
    pub channel: Arc<dyn OutputChannel>,
    /// Teacher mode: no `y` was given.
    pub teacher: bool,
    /// An AWGN mask given as a Bernoulli law: its observed fraction and the output's noise
    /// precision (the state evolution uses the law, not the drawn mask).
    pub mask_law: Option<(f64, Spd)>,
}

impl OutputConfig {
    /// Builds the channel for `n` rows (a mask given as a law is drawn, and also kept as a law).
    pub(crate) fn build(&self, n: usize, d: usize, res: &Resolver) -> Result<BuiltOutput> {
        match self {
            OutputConfig::Awgn {
                y,
                noise_precision,
                mask,
            } => {
                let noise = res
                    .resolve(
                        noise_precision,
                        "output.noise_precision",
                        "noise precision of the output",
                    )?
                    .spd(d)?;
                let mask_matrix = match mask {
                    Some(src) => {
                        let m = res.resolve_shaped(
                            src,
                            "output.mask",
                            "mask of the output",
                            Some((n, d)),
                        )?;
                        let label = m.label.clone();
                        let m = m.matrix(n, d)?;
                        for j in 0..d {
                            for i in 0..n {
                                let v = m[(i, j)];
                                if v != 0.0 && v != 1.0 {
                                    return Err(Error::invalid(
                                        &label,
                                        format!(
                                            "entry ({i}, {j}) (0-based row, column) is {v}; entries must be 1 (observed) or 0 (missing)"
                                        ),
                                    ));
                                }
                            }
                        }
                        Some(m)
                    }
                    None => None,
                };
                let (y, teacher) = match y {
                    Some(src) => {
                        let a = res.resolve(src, "output.y", "observation y of the output")?;
                        let label = a.label.clone();
                        let y = a.matrix(n, d)?;
                        // NaN/Inf are allowed only where the mask marks an entry missing.
                        let observed = |i: usize, j: usize| {
                            mask_matrix.as_ref().is_none_or(|m| m[(i, j)] == 1.0)
                        };
                        for j in 0..d {
                            for i in 0..n {
                                let v = y[(i, j)];
                                if !v.is_finite() && observed(i, j) {
                                    return Err(Error::NonFinite {
                                        what: label,
                                        detail: format!(
                                            "entry ({i}, {j}) (0-based row, column) is {v}{}",
                                            if mask_matrix.is_some() {
                                                ", but the mask marks it observed"
                                            } else {
                                                "; mark missing entries with `mask` (0 = missing)"
                                            }
                                        ),
                                    });
                                }
                            }
                        }
                        (y, false)
                    }
                    None => (Mat::zeros(n, d), true),
                };
                let mask_law = match mask {
                    Some(ArraySource::Law(law)) if law.law == Law::Bernoulli => {
                        Some((law.observed.unwrap_or(1.0), noise.clone()))
                    }
                    _ => None,
                };
                Ok(BuiltOutput {
                    channel: Arc::new(AwgnOutput::new(y, noise, mask_matrix)?),
                    teacher,
                    mask_law,
                })
            }
            OutputConfig::MixedRegression {
                y,
                noise_variance,
                weights,
                estimator,
            } => {
                let weights = weights
                    .as_ref()
                    .map(|src| {
                        res.resolve(src, "output.weights", "mixed regression weights")?
                            .finite()?
                            .vector_of(d)
                    })
                    .transpose()?;
                let (y, teacher) = match y {
                    Some(src) => {
                        let a = res.resolve(src, "output.y", "responses y of the output")?;
                        (a.finite()?.matrix(n, 1)?, false)
                    }
                    None => (Mat::zeros(n, 1), true),
                };
                let channel = crate::denoise::MixedRegressionOutput::new(
                    y,
                    d,
                    *noise_variance,
                    weights,
                    estimator.unwrap_or_default(),
                )?;
                Ok(BuiltOutput {
                    channel: Arc::new(channel),
                    teacher,
                    mask_law: None,
                })
            }
            OutputConfig::Probit {
                y,
                noise_variance,
                estimator,
            } => {
                if !(*noise_variance > 0.0 && noise_variance.is_finite()) {
                    return Err(Error::invalid(
                        "output.noise_variance",
                        format!(
                            "the probit noise variance σ² must be positive and finite, got {noise_variance}"
                        ),
                    ));
                }
                let (y, teacher) = match y {
                    Some(src) => {
                        let a = res.resolve(src, "output.y", "signs y of the probit output")?;
                        let label = a.label.clone();
                        let y = a.finite()?.matrix(n, d)?;
                        for j in 0..d {
                            for i in 0..n {
                                let v = y[(i, j)];
                                if v != 1.0 && v != -1.0 {
                                    return Err(Error::invalid(
                                        &label,
                                        format!(
                                            "entry ({i}, {j}) (0-based row, column) is {v}; entries must be -1 or +1"
                                        ),
                                    ));
                                }
                            }
                        }
                        (y, false)
                    }
                    None => (Mat::from_fn(n, d, |_, _| 1.0), true),
                };
                let channel = crate::denoise::ProbitOutput::new(
                    y,
                    *noise_variance,
                    estimator.unwrap_or_default(),
                )?;
                Ok(BuiltOutput {
                    channel: Arc::new(channel),
                    teacher,
                    mask_law: None,
                })
            }
        }
    }
}

impl RunConfig {
    /// Teacher mode: the configuration gives no observation (`y` in `[output]`, for any output
    /// kind), so the truth and the observation are drawn from the model with `seed`.
    pub fn is_teacher(&self) -> bool {
        match &self.output {
            OutputConfig::Awgn { y, .. }
            | OutputConfig::MixedRegression { y, .. }
            | OutputConfig::Probit { y, .. } => y.is_none(),
        }
    }

    /// Parses the TOML text (unknown keys and kinds are errors naming them and the valid ones).
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let mut msg = e.to_string().trim_end().to_string();
            if let Some(hint) = name_the_key(text, &e) {
                msg += &format!("\n{hint}");
            }
            config_error(path, msg)
        })
    }

    /// The solver options of this configuration.
    pub fn solver_config(&self) -> SolverConfig {
        let defaults = SolverConfig::default();
        SolverConfig {
            iterations: self.iterations,
            tolerance: self.tolerance,
            gamma_init: self.gamma_init.unwrap_or(defaults.gamma_init),
            policy: self.policy.clone().unwrap_or_default(),
        }
    }

    /// Checks `d`, `iterations`, the solver options and the alternation of the layers (before
    /// any array is read); returns the solver options.
    pub(crate) fn check_structure(&self, path: Option<&Path>) -> Result<SolverConfig> {
        let d = self.d;
        if d == 0 || d > MAX_D {
            return Err(config_error(
                path,
                format!("`d` must be between 1 and {MAX_D} (the number of columns of every Z_l), got {d}"),
            ));
        }
        if self.iterations == 0 {
            return Err(config_error(path, "`iterations` must be at least 1"));
        }
        let solver = self.solver_config();
        solver.validate().map_err(|e| match e {
            Error::Invalid { what, detail } => {
                let key = if what.starts_with("lam_") || what.starts_with("damp_") {
                    format!("policy.{what}")
                } else {
                    what
                };
                config_error(path, format!("`{key}` {detail}"))
            }
            other => other,
        })?;
        if let Some(init) = &self.init {
            init.validate()
                .map_err(|e| config_error(path, format!("`[init]`: {e}")))?;
        }
        // The structure first (Network::new checks it again), so that a misplaced layer is
        // reported as such rather than as a shape mismatch further down.
        let kinds: Vec<&str> = self.layer.iter().map(LayerConfig::kind_name).collect();
        let alternates = self
            .layer
            .iter()
            .enumerate()
            .all(|(i, l)| l.is_linear() == (i % 2 == 0));
        if !alternates || self.layer.len().is_multiple_of(2) {
            return Err(config_error(
                path,
                format!(
                    "the [[layer]] tables must alternate linear / row-wise, starting and ending \
                     with a linear layer (an odd number of layers, so that the depth L is even), got [{}]",
                    kinds.join(", ")
                ),
            ));
        }
        Ok(solver)
    }

    /// Loads every array, checks it, and builds the network (teacher mode: draws the truth and
    /// the observation from the model with `seed`). The same as [`RunConfig::resolve`] followed
    /// by [`Resolved::problem`].
    pub fn build(&self, base_dir: &Path, path: Option<&Path>) -> Result<Problem> {
        self.resolve(base_dir, path)?.problem()
    }

    /// Phase 1 of every use of a configuration (`run`, `se`, `compare`, the Python package):
    /// checks the structure and the options, reads and checks every array (laws of weights are
    /// checked but not drawn), builds the prior, the row-wise layers and the output. No SVD and
    /// no teacher draw yet: [`Resolved::problem`] does those for the algorithm,
    /// [`crate::predict::build_se_model`] uses the spectral laws instead for the state evolution.
    pub fn resolve(&self, base_dir: &Path, path: Option<&Path>) -> Result<Resolved> {
        let start = std::time::Instant::now();
        let d = self.d;
        let solver = self.check_structure(path)?;
        let res = Resolver {
            base_dir: base_dir.to_path_buf(),
            seed: self.seed,
        };
        let (prior, n0) = self.prior.build(&res, d, path)?;
        check_network_memory(&[n0], d, &[])?;
        let mut rows = vec![n0];
        let mut prepared = Vec::with_capacity(self.layer.len());
        for (i, layer) in self.layer.iter().enumerate() {
            let n_in = rows[rows.len() - 1];
            let (p, n_out) = layer.prepare(i + 1, n_in, d, &res, self.estimator)?;
            rows.push(n_out);
            prepared.push(p);
        }
        check_network_memory(&rows, d, &prepared)?;
        let n_last = rows[rows.len() - 1];
        let output = self.output.build(n_last, d, &res)?;
        let teacher = output.teacher;
        if !teacher
            && matches!(
                self.prior,
                PriorConfig::GroupLasso {
                    teacher: Some(_),
                    ..
                }
            )
        {
            return Err(config_error(
                path,
                "`prior.teacher` only applies in teacher mode (no `y` in [output]); remove it \
                 when the observation is given",
            ));
        }
        let truth = match &self.truth {
            None => None,
            Some(_) if teacher => {
                return Err(config_error(
                    path,
                    "`truth` cannot be combined with teacher mode (no `y` in [output]): the \
                     teacher draws its own truth",
                ))
            }
            Some(list) => {
                if list.len() != rows.len() {
                    return Err(config_error(
                        path,
                        format!(
                            "`truth` must list one array per variable Z_0 … Z_{} ({} arrays), got {}",
                            rows.len() - 1,
                            rows.len(),
                            list.len()
                        ),
                    ));
                }
                let mut out = Vec::with_capacity(list.len());
                for (l, src) in list.iter().enumerate() {
                    let z = res
                        .resolve(src, &format!("truth[{l}]"), &format!("truth Z_{l}"))?
                        .finite()?
                        .matrix(rows[l], d)?;
                    out.push(z);
                }
                Some(out)
            }
        };
        Ok(Resolved {
            config: self.clone(),
            path: path.map(Path::to_path_buf),
            solver,
            prior,
            rows,
            prepared,
            output,
            truth,
            res,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// Checks, before the algorithm allocates its state, that the network fits in this machine's
/// memory: about a dozen `n_l x d` blocks per variable (estimates, messages, the truth, work
/// space) and, for a weight drawn from a law or solved by an SVD, the matrix and its factors.
fn check_network_memory(rows: &[usize], d: usize, prepared: &[Prepared]) -> Result<()> {
    use crate::limits::{check_memory, f64_bytes};
    let mut bytes = 0u64;
    for &n in rows {
        bytes = bytes.saturating_add(f64_bytes((n as u64).saturating_mul(d as u64 * 12)));
    }
    for (i, p) in prepared.iter().enumerate() {
        if let Prepared::Linear { weight, method, .. } = p {
            let (r, c) = (rows[i + 1] as u64, rows[i] as u64);
            let entries = r.saturating_mul(c);
            let copies = match (weight.uses_svd(*method, r as usize, c as usize), weight) {
                (true, _) => 3,
                (false, Weight::Law { .. }) => 1,
                _ => 0,
            };
            bytes = bytes.saturating_add(f64_bytes(entries.saturating_mul(copies)));
        }
    }
    let sizes: Vec<String> = rows.iter().map(|n| n.to_string()).collect();
    check_memory(
        &format!("the network (rows n_l = [{}], d = {d})", sizes.join(", ")),
        "prior.rows / layer weights",
        bytes,
    )
}

/// A configuration after phase 1 ([`RunConfig::resolve`]): every array read and checked, the
/// prior, row-wise layers and output built; linear layers not yet factorised, laws not yet drawn.
pub struct Resolved {
    pub(crate) config: RunConfig,
    pub(crate) path: Option<PathBuf>,
    pub(crate) solver: SolverConfig,
    pub(crate) prior: Arc<dyn InputPrior>,
    pub(crate) rows: Vec<usize>,
    pub(crate) prepared: Vec<Prepared>,
    pub(crate) output: BuiltOutput,
    pub(crate) truth: Option<Vec<Mat<f64>>>,
    pub(crate) res: Resolver,
    pub(crate) seconds: f64,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl Resolved {
    /// The typed configuration.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }
    /// The row counts `n_0 … n_{L−1}`.
    pub fn rows(&self) -> &[usize] {
        &self.rows
    }
    /// Whether the observation is drawn from the model (no `y` in `[output]`).
    pub fn is_teacher(&self) -> bool {
        self.output.teacher
    }

    /// Phase 2 for the algorithm: draws law weights, factorises the linear layers (SVD), builds
    /// the network and, in teacher mode, draws the truth and the observation from `seed`.
    pub fn problem(self) -> Result<Problem> {
        let start = std::time::Instant::now();
        let Resolved {
            config,
            path,
            solver,
            prior,
            rows,
            prepared,
            output,
            truth,
            res,
            seconds,
        } = self;
        let d = config.d;
        let n0 = rows[0];
        let teacher = output.teacher;
        let output = output.channel;
        // Phase 2: the SVDs of the linear layers.
        let mut layers: Vec<Arc<dyn Layer>> = Vec::with_capacity(prepared.len());
        let mut infos = Vec::with_capacity(prepared.len());
        for (i, (p, cfg)) in prepared.into_iter().zip(&config.layer).enumerate() {
            let (layer, svd): (Arc<dyn Layer>, Option<f64>) = match p {
                Prepared::Linear {
                    weight,
                    bias,
                    noise,
                    method,
                    cg,
                    law,
                } => build_linear(
                    weight,
                    bias,
                    noise,
                    method,
                    cg,
                    &law,
                    d,
                    rows[i + 1],
                    rows[i],
                    res.seed,
                )?,
                Prepared::RowWise(layer) => (layer, None),
            };
            infos.push(LayerInfo {
                layer: i + 1,
                kind: cfg.kind_name().to_string(),
                description: layer.describe(),
                rows_in: rows[i],
                rows_out: rows[i + 1],
                svd_seconds: svd,
            });
            layers.push(layer);
        }
        let network = Network::new(prior, n0, layers, output)?;
        let (network, truth) = if teacher {
            let (truth, net) = network.sample(&mut stream(config.seed, "teacher"))?;
            (net, Some(truth))
        } else {
            (network, truth)
        };
        Ok(Problem {
            path,
            config,
            raw: serde_json::Value::Null,
            network,
            solver,
            truth,
            teacher,
            layers: infos,
            setup_seconds: seconds + start.elapsed().as_secs_f64(),
        })
    }
}

/// A type error inside a `kind`-tagged table (`[prior]`, `[[layer]]`, `[output]`) is reported by
/// the TOML parser at the table's header, without the key: serde reads such a table whole before
/// it knows its variant. This finds the key by the offending value the message quotes
/// (`string "100"`, `floating point `1.0``, …) among the table's entries, and names it.
fn name_the_key(text: &str, err: &toml::de::Error) -> Option<String> {
    let msg = err.message();
    let quoted = quoted_value(msg)?;
    let span = err.span()?;
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let header = text.lines().nth(line - 1)?.trim();
    let name = header
        .strip_prefix("[[")
        .and_then(|h| h.strip_suffix("]]"))
        .or_else(|| header.strip_prefix('[').and_then(|h| h.strip_suffix(']')))?
        .trim();
    let table: toml::Table = toml::from_str(text).ok()?;
    // The tables of that name (one, or the array of tables); which one is at the header's line
    // does not matter for naming the key.
    let sections: Vec<&toml::Table> = match table.get(name)? {
        toml::Value::Table(t) => vec![t],
        toml::Value::Array(a) => a.iter().filter_map(toml::Value::as_table).collect(),
        _ => return None,
    };
    let mut keys: Vec<String> = Vec::new();
    for (i, sec) in sections.iter().enumerate() {
        for (k, v) in sec.iter() {
            if contains_value(v, &quoted) {
                let key = if sections.len() > 1 {
                    format!("{name}[{}].{k}", i + 1)
                } else {
                    format!("{name}.{k}")
                };
                keys.push(format!("`{key}`"));
            }
        }
    }
    match keys.len() {
        0 => None,
        _ => Some(format!("(the value of {})", keys.join(" or "))),
    }
}

/// The offending value quoted by a serde type error: `string "100"`, `floating point `1.0``,
/// `integer `3``, `boolean `true``.
fn quoted_value(msg: &str) -> Option<toml::Value> {
    let rest = msg.split("invalid type: ").nth(1)?;
    if let Some(r) = rest.strip_prefix("string \"") {
        return Some(toml::Value::String(r.split('"').next()?.to_string()));
    }
    let inner = |r: &str| r.split('`').nth(1).map(str::to_string);
    if let Some(r) = rest.strip_prefix("floating point ") {
        return inner(r)?.parse().ok().map(toml::Value::Float);
    }
    if let Some(r) = rest.strip_prefix("integer ") {
        return inner(r)?.parse().ok().map(toml::Value::Integer);
    }
    if let Some(r) = rest.strip_prefix("boolean ") {
        return inner(r)?.parse().ok().map(toml::Value::Boolean);
    }
    None
}

/// Whether `v` is `want` or holds it (in an array or an inline table).
fn contains_value(v: &toml::Value, want: &toml::Value) -> bool {
    match v {
        toml::Value::Array(a) => a.iter().any(|x| contains_value(x, want)),
        toml::Value::Table(t) => t.values().any(|x| contains_value(x, want)),
        toml::Value::Float(x) => matches!(want, toml::Value::Float(y) if x == y),
        other => other == want,
    }
}
