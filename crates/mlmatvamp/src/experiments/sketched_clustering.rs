//! `mlmatvamp sketched-clustering`: sketched clustering by ML-Mat-VAMP (paper §2.2) on synthetic
//! Gaussian mixtures against k-means++ on the full data, and on one real dataset
//! (`docs/sketched-clustering.md`).
//!
//! * **Streaming.** The `T` points of the mixture of [`MixtureConfig`] are generated chunk by
//!   chunk (each chunk of 2^16 points from its own seed, so any chunk can be generated again
//!   without the ones before it) and sketched as they are generated; the SSE of a set of
//!   centroids on the full data is accumulated over the chunks the same way. So the sketch and
//!   the SSE never hold the data: only the k-means++ baseline does (it needs the data in
//!   memory), and it runs only up to `kmeans_max_t` points. Above that the relative SSE is
//!   taken against the true centroids' SSE instead (the field `baseline` says which).
//! * **Relative SSE against the sketch length.** For every dimension `p` and seed: `K`
//!   centroids and `T` points, sketched once at the largest `M` of the sweep (a prefix of i.i.d.
//!   frequencies is itself a sketch, so every smaller `M` is a prefix), and the centroids
//!   recovered at every `M/(K p)`. The relative SSE is the SSE of the recovered centroids on the
//!   full data over the SSE of k-means++ (the `linfa-clustering` crate, best of `kmeans_runs`
//!   seeded runs) on the same data; a trial succeeds when it is at most [`SUCCESS_THRESHOLD`].
//! * **Time against `T`.** For the base seed and `M/(Kp)` = `timing_ratio`, at each `T` of
//!   `timing_t`: the sketching time (generation excluded: only the sketching of each generated
//!   chunk is timed) and its throughput in point-frequency pairs per second, the decoding time,
//!   and the k-means++ time.
//! * **Iris** (shipped by the `linfa-datasets` crate): `K = 3`, `p = 4`, `T = 150`; the adjusted
//!   Rand index of the recovered clustering and of k-means++ against the species.
//!
//! Outputs in `DIR`: `sketched_clustering.json` (metadata, every trial, summaries, timings,
//! iris), `sketched_clustering.csv`, and the figure `sketched_clustering.png`/`.svg` (relative
//! SSE against `M/(Kp)`; seconds against `T`).

use super::{prepare_out_dir, trial_seed, write_csv_rows, Meta, Observer, Progress, Summary};
use crate::apps::cluster::{
    adjusted_rand_index, assign, recover, sse, ClusterConfig, MixtureConfig, MIXTURE_CHUNK,
};
use crate::apps::sketch::{Frequencies, PartialSketch};
use crate::error::{Error, Result};
use crate::figure::{Figure, FigureFile, Panel, Series};
use faer::{Mat, MatRef};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A recovery succeeds when its relative SSE is at most this.
pub const SUCCESS_THRESHOLD: f64 = 1.1;

/// Options of the experiment (all overridable from the command line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SketchedClusteringConfig {
    /// Clusters `K`.
    pub k: usize,
    /// Dimensions `p`.
    pub ps: Vec<usize>,
    /// Sketch lengths `M/(K p)`.
    pub ratios: Vec<f64>,
    /// Points `T` of the relative-SSE sweep.
    pub t: u64,
    /// Seeds per `(p, M/(Kp))`.
    pub seeds: usize,
    /// `T` values of the timing sweep (seed 0, first `p`).
    pub timing_t: Vec<u64>,
    /// `M/(Kp)` of the timing sweep.
    pub timing_ratio: f64,
    /// Within-cluster variance of the mixture (and the frequencies' `σ²`).
    pub sigma2: f64,
    /// k-means++ runs of the baseline (best SSE kept).
    pub kmeans_runs: usize,
    /// The largest `T` for which the data are kept in memory and k-means++ is run (above it the
    /// relative SSE is against the true centroids).
    pub kmeans_max_t: u64,
    /// The recovery's options (`k` and `seed` are set per trial).
    pub cluster: ClusterConfig,
    /// Run the iris experiment.
    pub iris: bool,
    /// Base seed.
    pub seed: u64,
}

impl Default for SketchedClusteringConfig {
    fn default() -> Self {
        SketchedClusteringConfig {
            k: 10,
            ps: vec![10],
            ratios: vec![1.0, 2.0, 3.0, 5.0, 10.0],
            t: 100_000,
            seeds: 5,
            timing_t: vec![10_000, 100_000, 1_000_000],
            timing_ratio: 5.0,
            sigma2: 1.0,
            kmeans_runs: 3,
            kmeans_max_t: 10_000_000,
            cluster: ClusterConfig::default(),
            iris: true,
            seed: 0,
        }
    }
}

impl SketchedClusteringConfig {
    /// Checks the options.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 || self.ps.is_empty() || self.ps.contains(&0) {
            return Err(Error::invalid("k, ps", "K and every p must be at least 1"));
        }
        if self.ratios.is_empty() || self.ratios.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
            return Err(Error::invalid(
                "ratios",
                "give positive, finite M/(Kp) values",
            ));
        }
        if self.seeds == 0 || self.kmeans_runs == 0 {
            return Err(Error::invalid("seeds, kmeans_runs", "must be at least 1"));
        }
        if self.t < self.k as u64 || self.timing_t.iter().any(|&t| t < self.k as u64) {
            return Err(Error::invalid("t", "every T must be at least K"));
        }
        crate::apps::sketch::check_sigma2(self.sigma2)?;
        ClusterConfig {
            k: self.k,
            ..self.cluster.clone()
        }
        .validate()
    }
    fn m(&self, p: usize, ratio: f64) -> usize {
        ((ratio * (self.k * p) as f64).round() as usize).max(self.k)
    }
}

/// k-means++ (linfa-clustering, best of `runs` seeded runs) on `data` (`T x p`): the centroids
/// (`K x p`) and the seconds.
pub fn kmeans_plus_plus(
    data: MatRef<'_, f64>,
    k: usize,
    runs: usize,
    seed: u64,
) -> Result<(Mat<f64>, f64)> {
    use linfa::traits::Fit;
    use rand_xoshiro_06::rand_core::SeedableRng;
    let (n, p) = (data.nrows(), data.ncols());
    let arr = ndarray::Array2::from_shape_fn((n, p), |(i, j)| data[(i, j)]);
    let t0 = Instant::now();
    let ds = linfa::DatasetBase::from(arr);
    let rng = rand_xoshiro_06::Xoshiro256Plus::seed_from_u64(seed);
    let model = linfa_clustering::KMeans::params_with_rng(k, rng)
        .n_runs(runs)
        .max_n_iterations(300)
        .tolerance(1e-4)
        .fit(&ds)
        .map_err(|e| Error::Numerical {
            what: "k-means++ (linfa-clustering)".into(),
            detail: e.to_string(),
        })?;
    let secs = t0.elapsed().as_secs_f64();
    let c = model.centroids();
    Ok((Mat::from_fn(k, p, |i, j| c[(i, j)]), secs))
}

/// Points per generated chunk of a streamed mixture.
const STREAM_CHUNK: u64 = MIXTURE_CHUNK;

/// A mixture's `T` points, generated chunk by chunk on demand.
struct MixtureStream<'a> {
    mix: &'a MixtureConfig,
    centroids: MatRef<'a, f64>,
    seed: u64,
    t: u64,
}

impl MixtureStream<'_> {
    /// Calls `f(first_row, chunk)` for every chunk in order.
    fn for_each(&self, mut f: impl FnMut(u64, MatRef<'_, f64>) -> Result<()>) -> Result<()> {
        let mut start = 0u64;
        while start < self.t {
            let n = STREAM_CHUNK.min(self.t - start);
            let (x, _) = self
                .mix
                .points(self.centroids, self.seed, start, n as usize);
            f(start, x.as_ref())?;
            start += n;
        }
        Ok(())
    }

    /// Sketches the stream (only the sketching is timed) and keeps a copy of the data when
    /// `keep`: the partial sketch, the sketching seconds and the data.
    fn sketch(
        &self,
        freqs: &Frequencies,
        keep: bool,
    ) -> Result<(PartialSketch, f64, Option<Mat<f64>>)> {
        let mut s = PartialSketch::empty(freqs);
        let mut seconds = 0.0;
        let mut data = if keep {
            Some(Mat::<f64>::zeros(self.t as usize, self.mix.p))
        } else {
            None
        };
        self.for_each(|start, x| {
            let t0 = Instant::now();
            s.add_block(x, freqs, start)?;
            seconds += t0.elapsed().as_secs_f64();
            if let Some(d) = data.as_mut() {
                d.as_mut()
                    .subrows_mut(start as usize, x.nrows())
                    .copy_from(x);
            }
            Ok(())
        })?;
        Ok((s, seconds, data))
    }

    /// The SSE of every set of centroids (`K x p` each) on the full data: from `data` if it is
    /// in memory, else accumulated over the regenerated chunks.
    fn sse(&self, data: Option<&Mat<f64>>, sets: &[MatRef<'_, f64>]) -> Result<Vec<f64>> {
        if let Some(d) = data {
            return Ok(sets.iter().map(|c| sse(d.as_ref(), *c)).collect());
        }
        let mut out = vec![0.0; sets.len()];
        self.for_each(|_, x| {
            for (o, c) in out.iter_mut().zip(sets) {
                *o += sse(x, *c);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// One seed at one `p`: the relative SSE and decoding time at every ratio.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedResult {
    /// `p`.
    pub p: usize,
    /// The seed.
    pub seed: u64,
    /// `T`.
    pub t: u64,
    /// The k-means++ SSE (`NaN` when `T` is above `kmeans_max_t`).
    pub kmeans_sse: f64,
    /// The SSE of the true centroids.
    pub truth_sse: f64,
    /// The denominator of the relative SSE: `"k-means++"` or `"true centroids"`.
    pub baseline: String,
    /// k-means++ seconds (`NaN` when not run).
    pub kmeans_seconds: f64,
    /// Sketching seconds at the largest `M`.
    pub sketch_seconds: f64,
    /// The largest `M`.
    pub m_max: usize,
    /// Per ratio: relative SSE (`NaN` if the recovery failed).
    pub relative_sse: Vec<f64>,
    /// Per ratio: decoding seconds.
    pub decode_seconds: Vec<f64>,
    /// Per ratio: the relative sketch residual of the kept restart.
    pub residual: Vec<f64>,
    /// Restarts run per sketch length (fewer than configured after an early stop).
    #[serde(default)]
    pub restarts_run: Vec<usize>,
    /// Per ratio: the Algorithm-1 iterations of every restart that ran, in order (`0` for a
    /// restart that failed) — a measure of the decoding's work that does not depend on the
    /// machine's load.
    #[serde(default)]
    pub restart_iterations: Vec<Vec<usize>>,
    /// Per ratio: the recovery's error, if it failed.
    pub errors: Vec<Option<String>>,
}

/// The summary at one `(p, ratio)`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RatioSummary {
    /// `p`.
    pub p: usize,
    /// `M/(Kp)`.
    pub ratio: f64,
    /// `M`.
    pub m: usize,
    /// Relative SSE over seeds.
    pub relative_sse: Summary,
    /// Fraction of seeds with relative SSE at most [`SUCCESS_THRESHOLD`].
    pub success_rate: f64,
    /// Decoding seconds over seeds.
    pub decode_seconds: Summary,
}

/// One row of the timing sweep.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TimingRow {
    /// `T`.
    pub t: u64,
    /// `p`.
    pub p: usize,
    /// `M`.
    pub m: usize,
    /// Sketching seconds.
    pub sketch_seconds: f64,
    /// Point-frequency pairs per second.
    pub pairs_per_second: f64,
    /// Decoding seconds.
    pub decode_seconds: f64,
    /// k-means++ seconds (all `kmeans_runs`; `NaN` when not run).
    pub kmeans_seconds: f64,
    /// Relative SSE of the recovered centroids.
    pub relative_sse: f64,
    /// Its denominator: `"k-means++"` or `"true centroids"`.
    pub baseline: String,
    /// Worker threads of the sketching and decoding.
    pub threads: usize,
}

/// The iris experiment: one sketch and recovery per seed (its own frequencies, `σ²` heuristic
/// and restarts).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IrisResult {
    /// `M` (`10 K p = 120`).
    pub m: usize,
    /// Restarts of every recovery.
    pub restarts: usize,
    /// Per seed: `σ²` (subsample heuristic on all 150 points).
    pub sigma2: Vec<f64>,
    /// Per seed: adjusted Rand index of the sketched clustering against the species.
    pub ari_sketch: Vec<f64>,
    /// Per seed: relative SSE (sketched / k-means++).
    pub relative_sse: Vec<f64>,
    /// Median of `ari_sketch`.
    pub ari_sketch_median: f64,
    /// Adjusted Rand index of k-means++ (best of `kmeans_runs`) against the species.
    pub ari_kmeans: f64,
    /// The SSE of k-means++.
    pub kmeans_sse: f64,
}

/// The content of `sketched_clustering.json`.
#[derive(Clone, Debug, Serialize)]
pub struct SketchedClusteringReport {
    /// Command, version, seed, configuration, seconds, threads.
    pub meta: Meta,
    /// Every seed.
    pub seeds: Vec<SeedResult>,
    /// Per `(p, ratio)`.
    pub summaries: Vec<RatioSummary>,
    /// The timing sweep.
    pub timing: Vec<TimingRow>,
    /// Iris (if run).
    pub iris: Option<IrisResult>,
    /// The trials that failed.
    pub failures: Vec<String>,
    /// Files written (the figure's by the front door).
    pub files: Vec<PathBuf>,
    /// The figure to render.
    #[serde(skip)]
    pub figures: Vec<FigureFile>,
}

fn run_seed(config: &SketchedClusteringConfig, p: usize, seed: u64) -> Result<SeedResult> {
    let mix = MixtureConfig {
        k: config.k,
        p,
        sigma2: config.sigma2,
        separation: 1.0,
    };
    let cents = mix.centroids(seed);
    let stream = MixtureStream {
        mix: &mix,
        centroids: cents.as_ref(),
        seed,
        t: config.t,
    };
    let m_max = config
        .ratios
        .iter()
        .map(|&r| config.m(p, r))
        .max()
        .unwrap_or(config.k);
    let freqs = Frequencies::draw(m_max, p, config.sigma2, trial_seed(seed, 7, 0))?;
    let keep = config.t <= config.kmeans_max_t;
    let (partial, sketch_seconds, data) = stream.sketch(&freqs, keep)?;
    let full = partial.finish(&freqs)?;
    let (km, kmeans_seconds) = match &data {
        Some(d) => {
            let (c, s) = kmeans_plus_plus(d.as_ref(), config.k, config.kmeans_runs, seed)?;
            (Some(c), s)
        }
        None => (None, f64::NAN),
    };
    let mut out = SeedResult {
        p,
        seed,
        t: config.t,
        kmeans_sse: f64::NAN,
        truth_sse: f64::NAN,
        baseline: String::new(),
        kmeans_seconds,
        sketch_seconds,
        m_max,
        relative_sse: vec![],
        decode_seconds: vec![],
        residual: vec![],
        restarts_run: vec![],
        restart_iterations: vec![],
        errors: vec![],
    };
    let mut recovered: Vec<Option<Mat<f64>>> = Vec::new();
    for &ratio in &config.ratios {
        let m = config.m(p, ratio);
        let f = freqs.prefix(m)?;
        let sk = full.prefix(m)?;
        let cfg = ClusterConfig {
            k: config.k,
            seed: trial_seed(seed, 11, m as u64),
            ..config.cluster.clone()
        };
        match recover(&sk, &f, &cfg) {
            Ok(r) => {
                out.decode_seconds.push(r.seconds);
                out.residual.push(r.residual);
                out.restarts_run.push(r.restarts.len());
                out.restart_iterations.push(
                    r.restarts
                        .iter()
                        .map(|x| x.iterations.unwrap_or(0))
                        .collect(),
                );
                out.errors.push(None);
                recovered.push(Some(r.centroids));
            }
            Err(e) => {
                out.decode_seconds.push(f64::NAN);
                out.residual.push(f64::NAN);
                out.restarts_run.push(0);
                out.restart_iterations.push(vec![]);
                out.errors.push(Some(e.to_string()));
                recovered.push(None);
            }
        }
    }
    // Every SSE in one pass over the data.
    let mut sets: Vec<MatRef<'_, f64>> = vec![cents.as_ref()];
    if let Some(c) = &km {
        sets.push(c.as_ref());
    }
    sets.extend(recovered.iter().flatten().map(|c| c.as_ref()));
    let sses = stream.sse(data.as_ref(), &sets)?;
    out.truth_sse = sses[0];
    let mut next = 1;
    let denominator = if km.is_some() {
        out.kmeans_sse = sses[1];
        next = 2;
        out.baseline = "k-means++".into();
        out.kmeans_sse
    } else {
        out.baseline = "true centroids".into();
        out.truth_sse
    };
    for r in &recovered {
        if r.is_some() {
            out.relative_sse.push(sses[next] / denominator);
            next += 1;
        } else {
            out.relative_sse.push(f64::NAN);
        }
    }
    Ok(out)
}

fn run_timing(config: &SketchedClusteringConfig, t: u64) -> Result<TimingRow> {
    let p = config.ps[0];
    let mix = MixtureConfig {
        k: config.k,
        p,
        sigma2: config.sigma2,
        separation: 1.0,
    };
    let seed = config.seed;
    let cents = mix.centroids(seed);
    let stream = MixtureStream {
        mix: &mix,
        centroids: cents.as_ref(),
        seed,
        t,
    };
    let m = config.m(p, config.timing_ratio);
    let freqs = Frequencies::draw(m, p, config.sigma2, trial_seed(seed, 7, 1))?;
    let (partial, sketch_seconds, data) = stream.sketch(&freqs, t <= config.kmeans_max_t)?;
    let sk = partial.finish(&freqs)?;
    let cfg = ClusterConfig {
        k: config.k,
        seed: trial_seed(seed, 13, t),
        ..config.cluster.clone()
    };
    let r = recover(&sk, &freqs, &cfg)?;
    let (km, kmeans_seconds) = match &data {
        Some(d) => {
            let (c, s) = kmeans_plus_plus(d.as_ref(), config.k, config.kmeans_runs, seed)?;
            (Some(c), s)
        }
        None => (None, f64::NAN),
    };
    let mut sets = vec![r.centroids.as_ref(), cents.as_ref()];
    if let Some(c) = &km {
        sets.push(c.as_ref());
    }
    let sses = stream.sse(data.as_ref(), &sets)?;
    let (denominator, baseline) = match km {
        Some(_) => (sses[2], "k-means++"),
        None => (sses[1], "true centroids"),
    };
    Ok(TimingRow {
        t,
        p,
        m,
        sketch_seconds,
        pairs_per_second: t as f64 * m as f64 / sketch_seconds.max(1e-9),
        decode_seconds: r.seconds,
        kmeans_seconds,
        relative_sse: sses[0] / denominator,
        baseline: baseline.into(),
        threads: rayon::current_num_threads(),
    })
}

/// The iris table of `linfa-datasets` as `150 x 4` data and labels `0, 1, 2`.
pub fn iris() -> (Mat<f64>, Vec<usize>) {
    let ds = linfa_datasets::iris();
    let x = ds.records();
    let (n, p) = x.dim();
    let data = Mat::from_fn(n, p, |i, j| x[(i, j)]);
    let labels = ds.targets().iter().copied().collect();
    (data, labels)
}

/// Restarts of the iris recoveries (at least; a recovery takes well under a second there).
const IRIS_RESTARTS: usize = 10;

fn run_iris(config: &SketchedClusteringConfig) -> Result<IrisResult> {
    let (data, labels) = iris();
    let (k, p) = (3, data.ncols());
    let m = 10 * k * p;
    let restarts = config.cluster.restarts.max(IRIS_RESTARTS);
    let (km, _) = kmeans_plus_plus(data.as_ref(), k, config.kmeans_runs, config.seed)?;
    let kmeans_sse = sse(data.as_ref(), km.as_ref());
    let mut out = IrisResult {
        m,
        restarts,
        sigma2: vec![],
        ari_sketch: vec![],
        relative_sse: vec![],
        ari_sketch_median: f64::NAN,
        ari_kmeans: adjusted_rand_index(&assign(data.as_ref(), km.as_ref()), &labels)?,
        kmeans_sse,
    };
    for s in 0..config.seeds {
        let seed = trial_seed(config.seed, 17, s as u64);
        let sigma2 = crate::apps::sketch::estimate_sigma2(data.as_ref(), k, 10, seed)?;
        let freqs = Frequencies::draw(m, p, sigma2, seed)?;
        let sk = crate::apps::sketch::sketch(data.as_ref(), &freqs)?;
        let cfg = ClusterConfig {
            k,
            seed,
            restarts,
            ..config.cluster.clone()
        };
        let r = recover(&sk, &freqs, &cfg)?;
        out.sigma2.push(sigma2);
        out.ari_sketch.push(adjusted_rand_index(
            &assign(data.as_ref(), r.centroids.as_ref()),
            &labels,
        )?);
        out.relative_sse
            .push(sse(data.as_ref(), r.centroids.as_ref()) / kmeans_sse);
    }
    out.ari_sketch_median = crate::figure::quartiles(&out.ari_sketch).map_or(f64::NAN, |q| q.1);
    Ok(out)
}

/// Runs the experiment and writes `sketched_clustering.json`, `.csv` (and lists the figure's
/// `.png`/`.svg`, which the front door renders) to `out_dir`.
pub fn run(
    config: &SketchedClusteringConfig,
    out_dir: &Path,
    observer: &dyn Observer,
) -> Result<SketchedClusteringReport> {
    let start = Instant::now();
    config.validate()?;
    prepare_out_dir(out_dir)?;
    let np = config.ps.len();
    let total = np * config.seeds;
    let pb = Progress::new(
        observer,
        "sketched clustering",
        (total + config.timing_t.len() + usize::from(config.iris)) as u64,
    );
    // Trials one after the other (each is parallel inside), so that the timings are not shared.
    let mut seeds = Vec::new();
    let mut failures = Vec::new();
    for i in 0..total {
        if pb.stopped() {
            break;
        }
        let (pi, s) = (i / config.seeds, i % config.seeds);
        let seed = trial_seed(config.seed, pi as u64, s as u64);
        match run_seed(config, config.ps[pi], seed) {
            Ok(r) => {
                for (ratio, e) in config.ratios.iter().zip(&r.errors) {
                    if let Some(e) = e {
                        failures.push(format!("p {} seed {seed} M/(Kp) {ratio}: {e}", r.p));
                    }
                }
                seeds.push(r);
                pb.tick(None);
            }
            Err(e) => {
                failures.push(format!("p {} seed {seed}: {e}", config.ps[pi]));
                pb.tick(Some(&e.to_string()));
            }
        }
    }
    let mut timing = Vec::new();
    for &t in &config.timing_t {
        if pb.stopped() {
            break;
        }
        match run_timing(config, t) {
            Ok(r) => {
                timing.push(r);
                pb.tick(None);
            }
            Err(e) => {
                failures.push(format!("timing T = {t}: {e}"));
                pb.tick(Some(&e.to_string()));
            }
        }
    }
    let iris = if config.iris && !pb.stopped() {
        let r = run_iris(config);
        pb.tick(r.as_ref().err().map(|e| e.to_string()).as_deref());
        match r {
            Ok(r) => Some(r),
            Err(e) => {
                failures.push(format!("iris: {e}"));
                None
            }
        }
    } else {
        None
    };
    pb.finish()?;
    let mut summaries = Vec::new();
    for &p in &config.ps {
        for (ri, &ratio) in config.ratios.iter().enumerate() {
            let rows: Vec<&SeedResult> = seeds.iter().filter(|s| s.p == p).collect();
            let vals: Vec<f64> = rows.iter().map(|s| s.relative_sse[ri]).collect();
            let errs: Vec<String> = rows.iter().filter_map(|s| s.errors[ri].clone()).collect();
            let ok: Vec<f64> = vals.iter().copied().filter(|v| v.is_finite()).collect();
            let success = vals.iter().filter(|v| **v <= SUCCESS_THRESHOLD).count() as f64
                / rows.len().max(1) as f64;
            summaries.push(RatioSummary {
                p,
                ratio,
                m: config.m(p, ratio),
                relative_sse: Summary::from_values(ok, errs),
                success_rate: success,
                decode_seconds: Summary::from_values(
                    rows.iter()
                        .map(|s| s.decode_seconds[ri])
                        .filter(|v| v.is_finite())
                        .collect(),
                    vec![],
                ),
            });
        }
    }
    let json = out_dir.join("sketched_clustering.json");
    let csv = out_dir.join("sketched_clustering.csv");
    write_csv(&csv, &summaries, &timing)?;
    let figure = FigureFile::new(
        out_dir.join("sketched_clustering"),
        figure(&summaries, &timing, config),
    );
    let [png, svg] = figure.files();
    let report = SketchedClusteringReport {
        meta: Meta::new(
            "sketched-clustering",
            config.seed,
            config,
            start.elapsed().as_secs_f64(),
        )?,
        seeds,
        summaries,
        timing,
        iris,
        failures,
        files: vec![json.clone(), csv, png, svg],
        figures: vec![figure],
    };
    crate::io::write_json(&json, &report)?;
    Ok(report)
}

fn write_csv(path: &Path, summaries: &[RatioSummary], timing: &[TimingRow]) -> Result<()> {
    let header = [
        "kind",
        "p",
        "ratio_or_T",
        "M",
        "median_relative_sse",
        "q25_relative_sse",
        "q75_relative_sse",
        "success_rate",
        "median_decode_seconds",
        "sketch_seconds",
        "kmeans_seconds",
    ];
    let f = |x: f64| format!("{x}");
    let mut rows = Vec::new();
    for s in summaries {
        rows.push(vec![
            "sweep".into(),
            s.p.to_string(),
            f(s.ratio),
            s.m.to_string(),
            f(s.relative_sse.median),
            f(s.relative_sse.q25),
            f(s.relative_sse.q75),
            f(s.success_rate),
            f(s.decode_seconds.median),
            String::new(),
            String::new(),
        ]);
    }
    for t in timing {
        rows.push(vec![
            "timing".into(),
            t.p.to_string(),
            t.t.to_string(),
            t.m.to_string(),
            f(t.relative_sse),
            String::new(),
            String::new(),
            String::new(),
            f(t.decode_seconds),
            f(t.sketch_seconds),
            f(t.kmeans_seconds),
        ]);
    }
    write_csv_rows(path, &header, &rows)
}

fn figure(
    summaries: &[RatioSummary],
    timing: &[TimingRow],
    config: &SketchedClusteringConfig,
) -> Figure {
    let mut series = Vec::new();
    for (i, &p) in config.ps.iter().enumerate() {
        let rows: Vec<&RatioSummary> = summaries.iter().filter(|s| s.p == p).collect();
        series.push(Series {
            label: format!("ML-Mat-VAMP, p = {p} (median, IQR)"),
            x: rows.iter().map(|s| s.ratio).collect(),
            y: rows.iter().map(|s| s.relative_sse.median).collect(),
            band: Some((
                rows.iter().map(|s| s.relative_sse.q25).collect(),
                rows.iter().map(|s| s.relative_sse.q75).collect(),
            )),
            color: Some(i),
            ..Default::default()
        });
    }
    series.push(Series {
        label: format!("success threshold {SUCCESS_THRESHOLD}"),
        x: config.ratios.clone(),
        y: vec![SUCCESS_THRESHOLD; config.ratios.len()],
        dashed: true,
        color: Some(7),
        ..Default::default()
    });
    let x: Vec<f64> = timing.iter().map(|t| t.t as f64).collect();
    let time_series = vec![
        Series {
            label: "sketching".into(),
            x: x.clone(),
            y: timing.iter().map(|t| t.sketch_seconds).collect(),
            color: Some(0),
            ..Default::default()
        },
        Series {
            label: "decoding (ML-Mat-VAMP)".into(),
            x: x.clone(),
            y: timing.iter().map(|t| t.decode_seconds).collect(),
            color: Some(1),
            ..Default::default()
        },
        Series {
            label: "sketch + decode".into(),
            x,
            y: timing
                .iter()
                .map(|t| t.sketch_seconds + t.decode_seconds)
                .collect(),
            dashed: true,
            color: Some(2),
            ..Default::default()
        },
        Series {
            label: format!("k-means++ ({} runs)", config.kmeans_runs),
            x: timing
                .iter()
                .filter(|t| t.kmeans_seconds.is_finite())
                .map(|t| t.t as f64)
                .collect(),
            y: timing
                .iter()
                .filter(|t| t.kmeans_seconds.is_finite())
                .map(|t| t.kmeans_seconds)
                .collect(),
            color: Some(3),
            ..Default::default()
        },
    ];
    Figure::new(vec![
        Panel {
            title: format!(
                "Sketched clustering, K = {}, T = {}, {} seeds",
                config.k, config.t, config.seeds
            ),
            x_label: "sketch length M/(K p)".into(),
            y_label: "relative SSE (sketched / k-means++)".into(),
            series,
            log_y: true,
            ..Default::default()
        },
        Panel {
            title: format!(
                "time, p = {}, M/(Kp) = {}",
                config.ps[0], config.timing_ratio
            ),
            x_label: "points T".into(),
            y_label: "seconds".into(),
            series: time_series,
            log_x: true,
            log_y: true,
            ..Default::default()
        },
    ])
}
