//! The files of `mlmatvamp sketch` and `mlmatvamp cluster` (`docs/sketched-clustering.md`):
//! reading data in chunks, the sketch directory, merging two sketch directories, and the
//! recovery's outputs.
//!
//! * **Data** ([`DataChunks`]): a `.npy` file (float64 or float32, little-endian, C order, 2-D;
//!   a 1-D array is one column) or a numeric CSV file (comma-separated, an optional header line,
//!   `#` comments), read `chunk` rows at a time — never the whole file at once. A ragged CSV
//!   line, a non-numeric field, NaN or an infinity is an error that names the line or row.
//! * **A sketch directory**: `sketch.npy` (`M x 2`: real and imaginary part of the centred
//!   sketch), `frequencies.npy` (`M x p`), and `sketch.json` ([`SketchMeta`]: `T`, the data mean
//!   and variance, `σ²`, the settings, and the partial sums that make it mergeable). Every file is
//!   written under a temporary name and renamed once all are written, so a failed command leaves
//!   no half-written sketch.
//! * **Merge** ([`merge_dirs`]): two sketch directories made with the same frequencies (same seed,
//!   `M`, `p` and `σ²`) into the sketch of the union of their data.

use crate::apps::cluster::{recover, ClusterConfig, ClusterResult};
use crate::apps::sketch::{
    check_block, estimate_sigma2, merge, Frequencies, PartialSketch, Sketch,
};
use crate::error::{Error, Result};
use crate::experiments::{prepare_out_dir, Meta};
use crate::solver::IterationRecord;
use faer::Mat;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn data_error(path: &Path, detail: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Data in chunks
// ---------------------------------------------------------------------------------------------

enum Source {
    Npy {
        reader: BufReader<File>,
        rows: u64,
        f32: bool,
    },
    Csv {
        reader: BufReader<File>,
        line: usize,
        header_checked: bool,
    },
}

/// A data file read `chunk` rows at a time (module documentation).
pub struct DataChunks {
    path: PathBuf,
    source: Source,
    cols: Option<usize>,
    chunk: usize,
    read: u64,
}

/// Parses `'key': value` out of an npy header dictionary (the value up to the next `,` or `}` at
/// depth 0).
fn header_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text
        .find(&format!("'{key}'"))
        .or_else(|| text.find(&format!("\"{key}\"")))?;
    let rest = &text[start + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

impl DataChunks {
    /// Opens a `.npy` or `.csv` data file (by extension) to read `chunk ≥ 1` rows at a time.
    pub fn open(path: &Path, chunk: usize) -> Result<Self> {
        if chunk == 0 {
            return Err(Error::invalid("chunk", "must be at least 1 row"));
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase());
        let file = File::open(path).map_err(io_error("reading", path))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let (source, cols) = match ext.as_deref() {
            Some("npy") => {
                let mut pre = [0u8; 10];
                reader
                    .read_exact(&mut pre)
                    .map_err(|_| data_error(path, "not a .npy file (too short)"))?;
                if &pre[..6] != b"\x93NUMPY" {
                    return Err(data_error(path, "not a .npy file (no NumPy magic string)"));
                }
                let len = match pre[6] {
                    1 => u16::from_le_bytes([pre[8], pre[9]]) as usize,
                    2 | 3 => {
                        let mut more = [0u8; 2];
                        reader
                            .read_exact(&mut more)
                            .map_err(|_| data_error(path, "truncated .npy header"))?;
                        u32::from_le_bytes([pre[8], pre[9], more[0], more[1]]) as usize
                    }
                    v => return Err(data_error(path, format!("unsupported .npy version {v}"))),
                };
                if len > 1 << 20 {
                    return Err(data_error(path, "implausibly long .npy header"));
                }
                let mut header = vec![0u8; len];
                reader
                    .read_exact(&mut header)
                    .map_err(|_| data_error(path, "truncated .npy header"))?;
                let text = String::from_utf8_lossy(&header).to_string();
                let descr = header_value(&text, "descr")
                    .map(|s| s.trim_matches(['\'', '"']).to_string())
                    .ok_or_else(|| data_error(path, "no 'descr' in the .npy header"))?;
                let f32 = match descr.as_str() {
                    "<f8" => false,
                    "<f4" => true,
                    other => {
                        return Err(data_error(
                            path,
                            format!("dtype `{other}` cannot be streamed; use little-endian float64 or float32"),
                        ))
                    }
                };
                if header_value(&text, "fortran_order") == Some("True") {
                    return Err(data_error(
                        path,
                        "Fortran-order arrays cannot be read row by row; save with np.ascontiguousarray",
                    ));
                }
                let shape: Vec<u64> = header_value(&text, "shape")
                    .map(|s| {
                        s.trim_matches(['(', ')', '[', ']'])
                            .split(',')
                            .map(str::trim)
                            .filter(|x| !x.is_empty())
                            .map(|x| x.parse::<u64>())
                            .collect::<std::result::Result<Vec<_>, _>>()
                    })
                    .transpose()
                    .ok()
                    .flatten()
                    .ok_or_else(|| data_error(path, "cannot read the shape in the .npy header"))?;
                let (rows, cols) = match shape.as_slice() {
                    [n] => (*n, 1usize),
                    [r, c] => (*r, *c as usize),
                    _ => {
                        return Err(data_error(
                            path,
                            format!("expected a 2-D array, got shape {shape:?}"),
                        ))
                    }
                };
                if cols == 0 {
                    return Err(data_error(path, "the array has no columns"));
                }
                (Source::Npy { reader, rows, f32 }, Some(cols))
            }
            Some("csv") => (
                Source::Csv {
                    reader,
                    line: 0,
                    header_checked: false,
                },
                None,
            ),
            _ => {
                return Err(data_error(
                    path,
                    "unsupported file type; use a .npy or a .csv file",
                ))
            }
        };
        Ok(DataChunks {
            path: path.to_path_buf(),
            source,
            cols,
            chunk,
            read: 0,
        })
    }

    /// The number of rows, if the file says (a `.npy` header does, a CSV file does not).
    pub fn total_rows(&self) -> Option<u64> {
        match &self.source {
            Source::Npy { rows, .. } => Some(*rows),
            Source::Csv { .. } => None,
        }
    }

    /// The rows read so far.
    pub fn rows_read(&self) -> u64 {
        self.read
    }

    /// The next block of at most `chunk` rows (`None` at the end of the file).
    pub fn next_chunk(&mut self) -> Result<Option<Mat<f64>>> {
        let path = self.path.clone();
        let chunk = self.chunk;
        let out = match &mut self.source {
            Source::Npy { reader, rows, f32 } => {
                let cols = self.cols.unwrap_or(1);
                let left = *rows - self.read;
                if left == 0 {
                    return Ok(None);
                }
                let n = (chunk as u64).min(left) as usize;
                let width = if *f32 { 4 } else { 8 };
                let mut bytes = vec![0u8; n * cols * width];
                reader.read_exact(&mut bytes).map_err(|_| {
                    data_error(
                        &path,
                        format!(
                            "the file ends before row {} of the {} its header declares",
                            self.read, rows
                        ),
                    )
                })?;
                let value = |idx: usize| -> f64 {
                    if *f32 {
                        f32::from_le_bytes(bytes[idx * 4..idx * 4 + 4].try_into().unwrap_or([0; 4]))
                            as f64
                    } else {
                        f64::from_le_bytes(bytes[idx * 8..idx * 8 + 8].try_into().unwrap_or([0; 8]))
                    }
                };
                Mat::from_fn(n, cols, |i, j| value(i * cols + j))
            }
            Source::Csv {
                reader,
                line,
                header_checked,
            } => {
                let mut values = Vec::new();
                let mut n = 0usize;
                let mut buf = String::new();
                while n < chunk {
                    buf.clear();
                    let got = reader
                        .read_line(&mut buf)
                        .map_err(io_error("reading", &path))?;
                    if got == 0 {
                        break;
                    }
                    *line += 1;
                    let text = buf.trim();
                    if text.is_empty() || text.starts_with('#') {
                        continue;
                    }
                    let fields: Vec<&str> = text.split(',').map(str::trim).collect();
                    let parsed: Vec<std::result::Result<f64, &str>> = fields
                        .iter()
                        .map(|f| f.parse::<f64>().map_err(|_| *f))
                        .collect();
                    if !*header_checked {
                        *header_checked = true;
                        if parsed.iter().any(|p| p.is_err()) {
                            continue; // a header line
                        }
                    }
                    let expected = *self.cols.get_or_insert(parsed.len());
                    if parsed.len() != expected {
                        return Err(data_error(
                            &path,
                            format!(
                                "ragged CSV: line {} has {} fields, expected {expected} (as in the first data line)",
                                *line,
                                parsed.len()
                            ),
                        ));
                    }
                    for (j, p) in parsed.into_iter().enumerate() {
                        match p {
                            Ok(x) => values.push(x),
                            Err(f) => {
                                return Err(data_error(
                                    &path,
                                    format!(
                                        "line {}, column {}: `{f}` is not a number",
                                        *line,
                                        j + 1
                                    ),
                                ))
                            }
                        }
                    }
                    n += 1;
                }
                if n == 0 {
                    return Ok(None);
                }
                let cols = self.cols.unwrap_or(1);
                Mat::from_fn(n, cols, |i, j| values[i * cols + j])
            }
        };
        self.read += out.nrows() as u64;
        Ok(Some(out))
    }

    /// The number of columns `p` (known once a row has been read, or from a `.npy` header).
    pub fn cols(&self) -> Option<usize> {
        self.cols
    }
}

// ---------------------------------------------------------------------------------------------
// Sketch directories
// ---------------------------------------------------------------------------------------------

/// Options of [`sketch_file`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SketchOptions {
    /// The number of clusters `K` (for the default `M` and the `σ²` heuristic).
    pub k: usize,
    /// The number of frequencies `M` (default `5 K p`).
    pub m: Option<usize>,
    /// The within-cluster variance `σ²` (default: [`estimate_sigma2`] on the first chunk).
    pub sigma2: Option<f64>,
    /// Seed of the frequencies (and of the heuristic).
    pub seed: u64,
    /// Rows per chunk read.
    pub chunk: usize,
}

impl Default for SketchOptions {
    fn default() -> Self {
        SketchOptions {
            k: 10,
            m: None,
            sigma2: None,
            seed: 0,
            chunk: 1 << 16,
        }
    }
}

/// `sketch.json`: everything about a sketch but the arrays.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SketchMeta {
    /// Command, version, seed, settings, seconds, threads.
    pub meta: Meta,
    /// `T`.
    pub count: u64,
    /// `M`.
    pub m: usize,
    /// `p`.
    pub p: usize,
    /// `K` the sketch was sized for.
    pub k: usize,
    /// `σ²` of the frequency law (and the default of the gains).
    pub sigma2: f64,
    /// Whether `σ²` was estimated (the subsample heuristic) or given.
    pub sigma2_estimated: bool,
    /// The data mean `μ`.
    pub mean: Vec<f64>,
    /// The per-coordinate data variance.
    pub variance: Vec<f64>,
    /// Seconds spent reading and sketching.
    pub sketch_seconds: f64,
    /// Throughput: point-frequency pairs per second (`T M / seconds`).
    pub pairs_per_second: f64,
    /// The partial sums (uncentred, about a shift) that make the sketch mergeable.
    pub partial: PartialSketch,
}

/// A sketch read back from its directory.
#[derive(Clone, Debug)]
pub struct SketchDir {
    /// The finished sketch.
    pub sketch: Sketch,
    /// Its frequencies.
    pub frequencies: Frequencies,
    /// `sketch.json`.
    pub meta: SketchMeta,
}

/// A file name and the function that writes it.
type FileWriter<'a> = (&'a str, Box<dyn Fn(&Path) -> Result<()> + 'a>);

/// Writes files into `dir` under temporary names, then renames them all (nothing half-written
/// is left under a final name).
fn write_atomically(dir: &Path, files: Vec<FileWriter<'_>>) -> Result<Vec<PathBuf>> {
    prepare_out_dir(dir)?;
    let mut temps = Vec::new();
    for (name, write) in &files {
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        if let Err(e) = write(&tmp) {
            for t in &temps {
                let _ = std::fs::remove_file(t);
            }
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        temps.push(tmp);
    }
    let mut out = Vec::new();
    for ((name, _), tmp) in files.iter().zip(&temps) {
        let dest = dir.join(name);
        std::fs::rename(tmp, &dest).map_err(io_error("renaming", &dest))?;
        out.push(dest);
    }
    Ok(out)
}

fn write_sketch_dir(dir: &Path, d: &SketchDir) -> Result<Vec<PathBuf>> {
    write_atomically(
        dir,
        vec![
            (
                "sketch.npy",
                Box::new(|p: &Path| crate::io::write_npy(p, d.sketch.y.as_ref())),
            ),
            (
                "frequencies.npy",
                Box::new(|p: &Path| crate::io::write_npy(p, d.frequencies.matrix())),
            ),
            (
                "sketch.json",
                Box::new(|p: &Path| crate::io::write_json(p, &d.meta)),
            ),
        ],
    )
}

/// Sketches a data file in one pass (module documentation) and writes the sketch directory
/// `out`. Everything is checked before anything is written.
pub fn sketch_file(data: &Path, out: &Path, options: &SketchOptions) -> Result<SketchDir> {
    let start = Instant::now();
    if options.k == 0 {
        return Err(Error::invalid(
            "K",
            "the number of clusters must be at least 1",
        ));
    }
    if let Some(s) = options.sigma2 {
        crate::apps::sketch::check_sigma2(s)?;
    }
    if let Some(m) = options.m {
        if m < options.k {
            return Err(Error::invalid(
                "M",
                format!(
                    "M = {m} frequencies are fewer than K = {} clusters",
                    options.k
                ),
            ));
        }
    }
    let mut chunks = DataChunks::open(data, options.chunk)?;
    if let Some(t) = chunks.total_rows() {
        if (options.k as u64) > t {
            return Err(Error::invalid(
                "K",
                format!(
                    "K = {} exceeds the number of data points T = {t}",
                    options.k
                ),
            ));
        }
    }
    let first = chunks
        .next_chunk()?
        .ok_or_else(|| data_error(data, "contains no data rows"))?;
    let p = first.ncols();
    let m = options.m.unwrap_or(5 * options.k * p);
    if m < options.k {
        return Err(Error::invalid(
            "M",
            format!(
                "M = {m} frequencies are fewer than K = {} clusters",
                options.k
            ),
        ));
    }
    // The σ² heuristic on the first chunk (up to 10 000 points).
    let (sigma2, estimated) = match options.sigma2 {
        Some(s) => (s, false),
        None => {
            check_block(first.as_ref(), p, 0)?;
            let n = first.nrows().min(10_000);
            if options.k > n {
                return Err(Error::invalid(
                    "K",
                    format!(
                        "K = {} exceeds the number of data points ({n} in the first chunk)",
                        options.k
                    ),
                ));
            }
            (
                estimate_sigma2(
                    first.as_ref().subrows(0, n),
                    options.k,
                    10,
                    options.seed ^ 0x51,
                )?,
                true,
            )
        }
    };
    let freqs = Frequencies::draw(m, p, sigma2, options.seed)?;
    let mut partial = PartialSketch::empty(&freqs);
    partial.add_block(first.as_ref(), &freqs, 0)?;
    while let Some(block) = chunks.next_chunk()? {
        let first_row = chunks.rows_read() - block.nrows() as u64;
        partial.add_block(block.as_ref(), &freqs, first_row)?;
    }
    if (options.k as u64) > partial.count {
        return Err(Error::invalid(
            "K",
            format!(
                "K = {} exceeds the number of data points T = {}",
                options.k, partial.count
            ),
        ));
    }
    let sketch = partial.finish(&freqs)?;
    let seconds = start.elapsed().as_secs_f64();
    let dir = SketchDir {
        meta: SketchMeta {
            meta: Meta::new("sketch", options.seed, options, seconds)?,
            count: partial.count,
            m,
            p,
            k: options.k,
            sigma2,
            sigma2_estimated: estimated,
            mean: sketch.mean.clone(),
            variance: sketch.variance.clone(),
            sketch_seconds: seconds,
            pairs_per_second: partial.count as f64 * m as f64 / seconds.max(1e-9),
            partial,
        },
        sketch,
        frequencies: freqs,
    };
    write_sketch_dir(out, &dir)?;
    Ok(dir)
}

/// Reads a sketch directory and checks that its files agree (`M`, `p`, the frequencies'
/// fingerprint).
pub fn read_sketch_dir(dir: &Path) -> Result<SketchDir> {
    let json = dir.join("sketch.json");
    let text = std::fs::read_to_string(&json).map_err(io_error("reading", &json))?;
    let meta: SketchMeta = serde_json::from_str(&text)
        .map_err(|e| data_error(&json, format!("not a sketch description: {e}")))?;
    let fpath = dir.join("frequencies.npy");
    let omega = crate::io::read_npy(&fpath)?.data;
    if omega.nrows() != meta.m || omega.ncols() != meta.p {
        return Err(Error::shape(
            format!("frequencies {}", fpath.display()),
            format!("{} x {} (as sketch.json says: M x p)", meta.m, meta.p),
            format!("{} x {}", omega.nrows(), omega.ncols()),
        ));
    }
    let freqs = Frequencies::from_matrix(omega, meta.sigma2)?;
    if freqs.fingerprint() != meta.partial.fingerprint {
        return Err(data_error(
            &fpath,
            "these frequencies are not the ones the sketch was made with",
        ));
    }
    if meta.mean.len() != meta.p || meta.partial.p != meta.p || meta.partial.m != meta.m {
        return Err(Error::shape(
            format!("sketch {}", json.display()),
            format!("p = {} and M = {} throughout", meta.p, meta.m),
            format!(
                "a mean of length {}, partial sums for p = {}, M = {}",
                meta.mean.len(),
                meta.partial.p,
                meta.partial.m
            ),
        ));
    }
    let sketch = meta.partial.finish(&freqs)?;
    Ok(SketchDir {
        sketch,
        frequencies: freqs,
        meta,
    })
}

/// Merges two sketch directories (same frequencies) into `out`: the sketch of the union of
/// their data.
pub fn merge_dirs(a: &Path, b: &Path, out: &Path) -> Result<SketchDir> {
    let start = Instant::now();
    let da = read_sketch_dir(a)?;
    let db = read_sketch_dir(b)?;
    if da.meta.p != db.meta.p {
        return Err(Error::shape(
            format!("sketch {}", b.display()),
            format!("p = {} (as {})", da.meta.p, a.display()),
            format!("p = {}", db.meta.p),
        ));
    }
    if da.frequencies.fingerprint() != db.frequencies.fingerprint() {
        return Err(Error::invalid(
            "frequencies",
            format!(
                "{} and {} were sketched with different frequencies (M = {} and {}, σ² = {} and {}); sketch every shard with the same --seed, --m and --sigma2",
                a.display(),
                b.display(),
                da.meta.m,
                db.meta.m,
                da.meta.sigma2,
                db.meta.sigma2
            ),
        ));
    }
    let partial = merge(&da.meta.partial, &db.meta.partial, &da.frequencies)?;
    let sketch = partial.finish(&da.frequencies)?;
    let seconds = start.elapsed().as_secs_f64();
    let mut meta = da.meta.clone();
    meta.meta = Meta::new(
        "sketch --merge",
        da.meta.meta.seed,
        &serde_json::json!({ "a": a, "b": b }),
        seconds,
    )?;
    meta.count = partial.count;
    meta.mean = sketch.mean.clone();
    meta.variance = sketch.variance.clone();
    meta.sketch_seconds = da.meta.sketch_seconds + db.meta.sketch_seconds;
    meta.pairs_per_second = partial.count as f64 * meta.m as f64 / meta.sketch_seconds.max(1e-9);
    meta.partial = partial;
    let dir = SketchDir {
        sketch,
        frequencies: da.frequencies,
        meta,
    };
    write_sketch_dir(out, &dir)?;
    Ok(dir)
}

// ---------------------------------------------------------------------------------------------
// Recovery outputs
// ---------------------------------------------------------------------------------------------

/// `cluster.json`: the recovery's result but the arrays.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterReport {
    /// Command, version, seed, configuration, seconds, threads.
    pub meta: Meta,
    /// The sketch directory.
    pub sketch: PathBuf,
    /// The cluster weights.
    pub weights: Vec<f64>,
    /// The relative sketch residual of the kept restart.
    pub residual: f64,
    /// The kept restart.
    pub best: usize,
    /// Every restart that ran.
    pub restarts: Vec<crate::apps::cluster::RestartRecord>,
    /// The sketch's relative noise level (`crate::apps::cluster::noise_level`).
    pub noise_level: f64,
    /// Whether the restarts stopped early (a restart reached `stop_residual` times the noise
    /// level).
    pub stopped_early: bool,
    /// `σ²`, noise variance and prior variance used.
    pub sigma2: f64,
    /// Mean output noise variance (last round).
    pub noise: f64,
    /// Centroid prior variance.
    pub prior_variance: f64,
    /// Decoding seconds.
    pub decode_seconds: f64,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// The kept restart's Algorithm-1 history.
    pub history: Vec<IterationRecord>,
    /// The centroids (`K x p`, data coordinates), also in `centroids.npy`.
    #[serde(skip)]
    pub centroids: Mat<f64>,
}

/// Recovers the centroids from a sketch directory and writes `centroids.npy` (`K x p`, data
/// coordinates), `weights.npy` (`K x 1`) and `cluster.json` (residual, restarts, history) to
/// `out`.
pub fn cluster_dir(sketch_dir: &Path, out: &Path, config: &ClusterConfig) -> Result<ClusterReport> {
    let start = Instant::now();
    let d = read_sketch_dir(sketch_dir)?;
    let res: ClusterResult = recover(&d.sketch, &d.frequencies, config)?;
    let k = res.weights.len();
    let weights = Mat::from_fn(k, 1, |i, _| res.weights[i]);
    let mut report = ClusterReport {
        meta: Meta::new(
            "cluster",
            config.seed,
            config,
            start.elapsed().as_secs_f64(),
        )?,
        sketch: sketch_dir.to_path_buf(),
        weights: res.weights.clone(),
        residual: res.residual,
        best: res.best,
        restarts: res.restarts.clone(),
        noise_level: res.noise_level,
        stopped_early: res.stopped_early,
        sigma2: res.sigma2,
        noise: res.noise,
        prior_variance: res.prior_variance,
        decode_seconds: res.seconds,
        files: vec![
            out.join("centroids.npy"),
            out.join("weights.npy"),
            out.join("cluster.json"),
        ],
        history: res.history,
        centroids: res.centroids.clone(),
    };
    let centroids = res.centroids;
    let rep = &report;
    write_atomically(
        out,
        vec![
            (
                "centroids.npy",
                Box::new(|p: &Path| crate::io::write_npy(p, centroids.as_ref())),
            ),
            (
                "weights.npy",
                Box::new(|p: &Path| crate::io::write_npy(p, weights.as_ref())),
            ),
            (
                "cluster.json",
                Box::new(move |p: &Path| crate::io::write_json(p, rep)),
            ),
        ],
    )?;
    report.meta.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
