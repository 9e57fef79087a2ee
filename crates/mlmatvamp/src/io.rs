//! Reading and writing matrices (`.npy`, `.csv`) and JSON.
//!
//! * **`.npy`** (read with `npyz`): dtypes float64, float32, signed and unsigned integers and
//!   bool are converted to `f64`; both C and Fortran order; little or big endian. A 2-D array of
//!   shape `(r, c)` is an `r x c` matrix. A **1-D array of length `n` is read as an `n x 1`
//!   column** and flagged as a vector ([`Loaded::vector`]), so that callers that expect a vector
//!   (a mean, a broadcast bias) can accept it too. 0-D and 3-D (or more) arrays are rejected.
//!   Matrices are written as float64 in C order, which `numpy.load` reads directly.
//! * **`.csv`**: numeric, comma-separated, one matrix row per line. A first line that contains a
//!   non-numeric field is taken as a header and skipped. Lines starting with `#` are comments.
//!   Fields are trimmed; an empty field reads as NaN (so it must be masked out where allowed).
//!   `nan`, `inf` and exponents (`1e-3`) are accepted spellings.
//!
//! Reading never checks finiteness: NaN may legitimately mark missing observations. Callers check
//! it with the name of the input (see [`crate::config`]).

use crate::error::{Error, Result};
use faer::{Mat, MatRef};
use npyz::{DType, TypeChar};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

/// A matrix read from a file.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The data (`r x c`; a 1-D array of length `n` is `n x 1`).
    pub data: Mat<f64>,
    /// Whether the file held a 1-D array.
    pub vector: bool,
}

/// The largest number of entries any single array may have (8 GB of `f64`), so that a malformed
/// header or configuration fails cleanly instead of exhausting memory.
pub const MAX_ENTRIES: u64 = 1 << 30;

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn data_error(path: &Path, detail: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Reads a matrix from a `.npy` or `.csv` file (chosen by the extension, case-insensitive).
pub fn read_matrix(path: &Path) -> Result<Loaded> {
    if path.is_dir() {
        return Err(data_error(
            path,
            "is a directory, not a file: give the path of a .npy or .csv file",
        ));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("npy") => read_npy(path),
        Some("csv") => read_csv(path).map(|data| Loaded {
            data,
            vector: false,
        }),
        _ => Err(data_error(
            path,
            "unsupported file type; use a .npy or a .csv file",
        )),
    }
}

/// Parses `'shape': (a, b, ...)` (or a list) out of an npy header dictionary.
fn header_shape(text: &str) -> Option<Vec<u64>> {
    let start = text.find("'shape'").or_else(|| text.find("\"shape\""))?;
    let rest = &text[start + 7..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let close = match rest.chars().next()? {
        '(' => ')',
        '[' => ']',
        _ => return None,
    };
    let end = rest.find(close)?;
    rest[1..end]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches(['L', 'l']).parse::<u64>().ok())
        .collect()
}

fn shape_text(shape: &[u64]) -> String {
    match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Reads a `.npy` file (see the module documentation for the supported contents).
pub fn read_npy(path: &Path) -> Result<Loaded> {
    let file = File::open(path).map_err(io_error("reading", path))?;
    let file_len = file.metadata().map_err(io_error("reading", path))?.len();
    let arr = parse_npy(file, file_len, path, "")?;
    let (rows, cols, vector) = match arr.shape.as_slice() {
        [n] => (*n as usize, 1, true),
        [r, c] => (*r as usize, *c as usize, false),
        _ => {
            return Err(data_error(
                path,
                format!(
                    "expected a 2-D array (or a 1-D array, read as a column), got a {}-D array of shape {}",
                    arr.shape.len(),
                    shape_text(&arr.shape)
                ),
            ))
        }
    };
    let flat = arr.values;
    let data = match arr.order {
        npyz::Order::C => Mat::from_fn(rows, cols, |i, j| flat[i * cols + j]),
        npyz::Order::Fortran => Mat::from_fn(rows, cols, |i, j| flat[i + j * rows]),
    };
    Ok(Loaded { data, vector })
}

/// An array read from a `.npy` stream: its shape, its values converted to `f64` (in file order)
/// and the order.
struct NpyArray {
    shape: Vec<u64>,
    values: Vec<f64>,
    order: npyz::Order,
}

/// Parses one `.npy` stream of `file_len` bytes (a file, or an entry of an `.npz` archive named
/// `entry`, which errors then name). Bounds the header and the shape before allocating.
fn parse_npy<R: Read>(mut file: R, file_len: u64, path: &Path, entry: &str) -> Result<NpyArray> {
    let data_error = |path: &Path, detail: String| {
        if entry.is_empty() {
            data_error(path, detail)
        } else {
            data_error(path, format!("array `{entry}`: {detail}"))
        }
    };
    // Read the pre-header ourselves, to bound the header size and the shape before `npyz`
    // allocates anything.
    let mut pre = [0u8; 10];
    file.read_exact(&mut pre).map_err(|_| {
        data_error(
            path,
            "not a .npy file (too short for the NumPy header)".into(),
        )
    })?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err(data_error(
            path,
            "not a .npy file (the NumPy magic string is missing)".into(),
        ));
    }
    let mut prefix = pre.to_vec();
    let header_len = match pre[6] {
        1 => u16::from_le_bytes([pre[8], pre[9]]) as u64,
        2 | 3 => {
            let mut more = [0u8; 2];
            file.read_exact(&mut more)
                .map_err(|_| data_error(path, "truncated .npy header".into()))?;
            prefix.extend_from_slice(&more);
            u32::from_le_bytes([pre[8], pre[9], more[0], more[1]]) as u64
        }
        v => {
            return Err(data_error(
                path,
                format!("unsupported .npy format version {v}.{}", pre[7]),
            ))
        }
    };
    let data_start = prefix.len() as u64 + header_len;
    if data_start > file_len {
        return Err(data_error(path, "truncated .npy header".into()));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|_| data_error(path, "truncated .npy header".into()))?;
    // Bound the shape before `npyz` multiplies it out.
    let shape = header_shape(&String::from_utf8_lossy(&header)).ok_or_else(|| {
        data_error(
            path,
            "not a valid .npy file (cannot read `'shape': (...)` in its header)".into(),
        )
    })?;
    let total = shape.iter().try_fold(1u64, |a, &b| a.checked_mul(b));
    if total.is_none_or(|t| t > MAX_ENTRIES) {
        return Err(data_error(
            path,
            format!(
                "array of shape {} is too large (at most {MAX_ENTRIES} entries)",
                shape_text(&shape)
            ),
        ));
    }
    prefix.extend_from_slice(&header);
    let reader = std::io::Cursor::new(prefix).chain(BufReader::new(file));
    let npy = npyz::NpyFile::new(reader)
        .map_err(|e| data_error(path, format!("not a valid .npy file: {e}")))?;
    let shape = npy.shape().to_vec();
    let dtype = npy.dtype();
    let descr = dtype.descr();
    let unsupported = || {
        data_error(
            path,
            format!("unsupported dtype {descr}; use float64, float32, an integer type or bool"),
        )
    };
    let (type_char, size) = match &dtype {
        DType::Plain(ts) => (ts.type_char(), ts.size_field()),
        _ => return Err(unsupported()),
    };
    let supported = matches!(
        (type_char, size),
        (TypeChar::Float, 4 | 8)
            | (TypeChar::Int | TypeChar::Uint, 1 | 2 | 4 | 8)
            | (TypeChar::Bool, 1)
    );
    if !supported {
        return Err(unsupported());
    }
    let needed = npy.len().saturating_mul(size);
    if needed > file_len - data_start {
        return Err(data_error(
            path,
            format!(
                "truncated data: shape {} of {descr} needs {needed} bytes, the file has {}",
                shape_text(&shape),
                file_len - data_start
            ),
        ));
    }
    let bad = |e: std::io::Error| data_error(path, format!("cannot read the data: {e}"));
    fn conv<T: npyz::Deserialize, R: Read>(
        npy: npyz::NpyFile<R>,
        f: impl Fn(T) -> f64,
    ) -> std::io::Result<Vec<f64>> {
        Ok(npy.into_vec::<T>()?.into_iter().map(f).collect())
    }
    let order = npy.order();
    let flat: Vec<f64> = match (type_char, size) {
        (TypeChar::Float, 8) => conv::<f64, _>(npy, |x| x),
        (TypeChar::Float, 4) => conv::<f32, _>(npy, f64::from),
        (TypeChar::Int, 1) => conv::<i8, _>(npy, f64::from),
        (TypeChar::Int, 2) => conv::<i16, _>(npy, f64::from),
        (TypeChar::Int, 4) => conv::<i32, _>(npy, f64::from),
        (TypeChar::Int, 8) => conv::<i64, _>(npy, |x| x as f64),
        (TypeChar::Uint, 1) => conv::<u8, _>(npy, f64::from),
        (TypeChar::Uint, 2) => conv::<u16, _>(npy, f64::from),
        (TypeChar::Uint, 4) => conv::<u32, _>(npy, f64::from),
        (TypeChar::Uint, 8) => conv::<u64, _>(npy, |x| x as f64),
        (TypeChar::Bool, 1) => conv::<bool, _>(npy, |b| if b { 1.0 } else { 0.0 }),
        _ => return Err(unsupported()),
    }
    .map_err(bad)?;
    let expected: u64 = shape.iter().product();
    if flat.len() as u64 != expected {
        return Err(data_error(
            path,
            format!(
                "expected {expected} values for shape {}, read {}",
                shape_text(&shape),
                flat.len()
            ),
        ));
    }
    Ok(NpyArray {
        shape,
        values: flat,
        order,
    })
}

/// Reads a scipy sparse matrix saved with `scipy.sparse.save_npz` (an `.npz` archive with the
/// arrays `data`, `indices`, `indptr`, `shape` and `format`), in CSR or CSC format, as a
/// validated CSR matrix ([`crate::operator::sparse::Csr::new`]: index arrays in range and sorted,
/// values finite — every problem is an error naming the file).
pub fn read_npz_csr(path: &Path) -> Result<crate::operator::sparse::Csr> {
    let file = File::open(path).map_err(io_error("reading", path))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| data_error(path, format!("not an .npz (zip) archive: {e}")))?;
    let mut read = |name: &str| -> Result<Option<NpyArray>> {
        let entry = match zip.by_name(&format!("{name}.npy")) {
            Ok(e) => e,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(data_error(path, format!("array `{name}`: {e}"))),
        };
        let len = entry.size();
        if name == "format" {
            // A byte or unicode string ('csr'): read it raw, it is tiny.
            let mut bytes = Vec::new();
            entry
                .take(1 << 16)
                .read_to_end(&mut bytes)
                .map_err(|e| data_error(path, format!("array `format`: {e}")))?;
            let text: String = bytes
                .iter()
                .rev()
                .take(16)
                .filter(|b| b.is_ascii_alphabetic())
                .map(|&b| b as char)
                .collect::<String>()
                .chars()
                .rev()
                .collect();
            return Ok(Some(NpyArray {
                shape: vec![],
                values: text.bytes().map(f64::from).collect(),
                order: npyz::Order::C,
            }));
        }
        parse_npy(entry, len, path, name).map(Some)
    };
    let format = read("format")?
        .map(|a| {
            a.values
                .iter()
                .map(|&b| b as u8 as char)
                .collect::<String>()
        })
        .unwrap_or_else(|| "csr".into());
    let need = |a: Option<NpyArray>, name: &str| {
        a.ok_or_else(|| {
            data_error(
                path,
                format!(
                    "missing array `{name}`: a sparse matrix needs `data`, `indices`, `indptr` and `shape` \
                     (as written by scipy.sparse.save_npz)"
                ),
            )
        })
    };
    let shape = need(read("shape")?, "shape")?;
    let data = need(read("data")?, "data")?;
    let indices = need(read("indices")?, "indices")?;
    let indptr = need(read("indptr")?, "indptr")?;
    let to_index = |a: NpyArray, name: &str| -> Result<Vec<usize>> {
        a.values
            .iter()
            .enumerate()
            .map(|(k, &x)| {
                if x >= 0.0 && x.fract() == 0.0 && x < 9.0e15 {
                    Ok(x as usize)
                } else {
                    Err(data_error(
                        path,
                        format!(
                            "array `{name}`: entry {k} is {x}, not a non-negative integer index"
                        ),
                    ))
                }
            })
            .collect()
    };
    let dims = to_index(shape, "shape")?;
    if dims.len() != 2 {
        return Err(data_error(
            path,
            format!("array `shape` must hold two numbers, got {}", dims.len()),
        ));
    }
    if (dims[0] as u64).saturating_mul(dims[1] as u64) == 0 {
        return Err(data_error(
            path,
            format!("empty shape {} x {}", dims[0], dims[1]),
        ));
    }
    let indices = to_index(indices, "indices")?;
    let indptr = to_index(indptr, "indptr")?;
    let what = format!("sparse matrix {}", path.display());
    match format.as_str() {
        "csr" => crate::operator::sparse::Csr::new(
            &what,
            (dims[0], dims[1]),
            indptr,
            indices,
            data.values,
        ),
        // CSC arrays of A are the CSR arrays of Aᵀ.
        "csc" => Ok(crate::operator::sparse::Csr::new(
            &what,
            (dims[1], dims[0]),
            indptr,
            indices,
            data.values,
        )?
        .transpose()),
        other => Err(data_error(
            path,
            format!("sparse format `{other}` is not supported; save the matrix as CSR or CSC (A.tocsr())"),
        )),
    }
}

/// Writes a CSR matrix as an `.npz` archive that `scipy.sparse.load_npz` reads (float64 data,
/// int64 index arrays, uncompressed).
pub fn write_npz_csr(path: &Path, m: &crate::operator::sparse::Csr) -> Result<()> {
    use npyz::WriterBuilder;
    let file = File::create(path).map_err(io_error("writing", path))?;
    let mut zip = zip::ZipWriter::new(BufWriter::new(file));
    let opts: zip::write::SimpleFileOptions =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let (indptr, indices, data) = m.parts();
    let (r, c) = m.shape();
    let err = |e: zip::result::ZipError| data_error(path, format!("cannot write the archive: {e}"));
    let io = io_error("writing", path);
    let put_i64 =
        |zip: &mut zip::ZipWriter<BufWriter<File>>, name: &str, v: &[i64]| -> Result<()> {
            zip.start_file(format!("{name}.npy"), opts).map_err(err)?;
            let mut w = npyz::WriteOptions::<i64>::new()
                .default_dtype()
                .shape(&[v.len() as u64])
                .writer(&mut *zip)
                .begin_nd()
                .map_err(|e| data_error(path, format!("cannot write `{name}`: {e}")))?;
            w.extend(v.iter().copied())
                .map_err(|e| data_error(path, format!("cannot write `{name}`: {e}")))?;
            w.finish()
                .map_err(|e| data_error(path, format!("cannot write `{name}`: {e}")))
        };
    put_i64(
        &mut zip,
        "indptr",
        &indptr.iter().map(|&x| x as i64).collect::<Vec<_>>(),
    )?;
    put_i64(
        &mut zip,
        "indices",
        &indices.iter().map(|&x| x as i64).collect::<Vec<_>>(),
    )?;
    put_i64(&mut zip, "shape", &[r as i64, c as i64])?;
    zip.start_file("data.npy", opts).map_err(err)?;
    let mut w = npyz::WriteOptions::<f64>::new()
        .default_dtype()
        .shape(&[data.len() as u64])
        .writer(&mut zip)
        .begin_nd()
        .map_err(|e| data_error(path, format!("cannot write `data`: {e}")))?;
    w.extend(data.iter().copied())
        .map_err(|e| data_error(path, format!("cannot write `data`: {e}")))?;
    w.finish()
        .map_err(|e| data_error(path, format!("cannot write `data`: {e}")))?;
    zip.start_file("format.npy", opts).map_err(err)?;
    // A 3-byte string array 'csr' (dtype |S3), as scipy writes it.
    let header = "{'descr': '|S3', 'fortran_order': False, 'shape': (), }";
    let mut h = header.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
    bytes.extend_from_slice(h.as_bytes());
    bytes.extend_from_slice(b"csr");
    zip.write_all(&bytes).map_err(io)?;
    zip.finish().map_err(err)?;
    Ok(())
}

/// Reads a numeric `.csv` file (see the module documentation for the accepted format).
pub fn read_csv(path: &Path) -> Result<Mat<f64>> {
    let file = File::open(path).map_err(io_error("reading", path))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(BufReader::new(file));
    let mut values: Vec<f64> = Vec::new();
    let mut cols: Option<usize> = None;
    let mut rows = 0usize;
    let mut first = true;
    // A field with a separator other than the comma (`1;2;3`, or tabs) is a common mistake;
    // named below instead of "not a number".
    let other_separator = |f: &str| [';', '\t', '|'].into_iter().find(|&c| f.contains(c));
    for record in reader.records() {
        let record = record.map_err(|e| data_error(path, format!("malformed CSV: {e}")))?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() == 1 && record[0].is_empty() {
            continue; // blank line
        }
        let parsed: Vec<std::result::Result<f64, &str>> = record
            .iter()
            .map(|f| {
                if f.is_empty() {
                    Ok(f64::NAN)
                } else {
                    f.parse::<f64>().map_err(|_| f)
                }
            })
            .collect();
        if let Some(sep) = record.iter().find_map(other_separator) {
            if record.len() == 1 {
                return Err(data_error(
                    path,
                    format!(
                        "line {line} is one field containing {sep:?}: fields must be separated by commas (this file seems to use {})",
                        if sep == '\t' { "tabs".to_string() } else { format!("`{sep}`") }
                    ),
                ));
            }
        }
        if first {
            first = false;
            if parsed.iter().any(|p| p.is_err()) {
                continue; // header row
            }
        }
        let expected = *cols.get_or_insert(parsed.len());
        if parsed.len() != expected {
            return Err(data_error(
                path,
                format!(
                    "line {line} has {} fields, expected {expected} (as in the first data row)",
                    parsed.len()
                ),
            ));
        }
        for (j, p) in parsed.into_iter().enumerate() {
            match p {
                Ok(x) => values.push(x),
                Err(f) => {
                    return Err(data_error(
                        path,
                        format!("line {line}, column {}: `{f}` is not a number", j + 1),
                    ))
                }
            }
        }
        rows += 1;
        if values.len() as u64 > MAX_ENTRIES {
            return Err(data_error(
                path,
                format!("too large (at most {MAX_ENTRIES} entries)"),
            ));
        }
    }
    let cols = cols.unwrap_or(0);
    if rows == 0 {
        return Err(data_error(path, "contains no numeric rows"));
    }
    Ok(Mat::from_fn(rows, cols, |i, j| values[i * cols + j]))
}

/// Writes a matrix as a float64 `.npy` file in C order.
pub fn write_npy(path: &Path, m: MatRef<'_, f64>) -> Result<()> {
    use npyz::WriterBuilder;
    let werr = io_error("writing", path);
    let inner = || -> std::io::Result<()> {
        let mut out = BufWriter::new(File::create(path)?);
        {
            let mut writer = npyz::WriteOptions::<f64>::new()
                .default_dtype()
                .shape(&[m.nrows() as u64, m.ncols() as u64])
                .writer(&mut out)
                .begin_nd()?;
            for i in 0..m.nrows() {
                for j in 0..m.ncols() {
                    writer.push(&m[(i, j)])?;
                }
            }
            writer.finish()?;
        }
        out.flush()
    };
    inner().map_err(werr)
}

/// Writes a matrix as CSV (no header; shortest round-trip decimal representation).
pub fn write_csv(path: &Path, m: MatRef<'_, f64>) -> Result<()> {
    let inner = || -> std::io::Result<()> {
        let mut out = BufWriter::new(File::create(path)?);
        for i in 0..m.nrows() {
            let line: Vec<String> = (0..m.ncols()).map(|j| format!("{}", m[(i, j)])).collect();
            writeln!(out, "{}", line.join(","))?;
        }
        out.flush()
    };
    inner().map_err(io_error("writing", path))
}

/// Writes a matrix to `.npy` or `.csv`, chosen by the extension.
pub fn write_matrix(path: &Path, m: MatRef<'_, f64>) -> Result<()> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("csv") => write_csv(path, m),
        Some("npy") => write_npy(path, m),
        _ => Err(data_error(
            path,
            "unsupported file type; use a .npy or a .csv file",
        )),
    }
}

/// Writes a value as pretty-printed JSON (non-finite numbers become `null`).
pub fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let inner = || -> std::io::Result<()> {
        let mut out = BufWriter::new(File::create(path)?);
        serde_json::to_writer_pretty(&mut out, value)?;
        writeln!(out)?;
        out.flush()
    };
    inner().map_err(io_error("writing", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mlmatvamp-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    /// A hand-made npy v1.0 file.
    fn npy_bytes(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut dict = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        while (10 + dict.len() + 1) % 64 != 0 {
            dict.push(' ');
        }
        dict.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        out.extend_from_slice(dict.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn f64_bytes(v: &[f64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn npy_round_trip_is_exact() {
        let m = Mat::from_fn(7, 3, |i, j| {
            (i as f64 + 0.1) * (j as f64 - 1.3).powi(3) / 7.0
        });
        let p = temp("round.npy");
        write_npy(&p, m.as_ref()).unwrap();
        let back = read_npy(&p).unwrap();
        assert!(!back.vector);
        assert_eq!(back.data, m);
    }

    #[test]
    fn hand_made_c_and_fortran_order_npy() {
        // The 2 x 3 matrix [[1, 2, 3], [4, 5, 6]].
        let c = npy_bytes(
            "<f8",
            false,
            "(2, 3)",
            &f64_bytes(&[1., 2., 3., 4., 5., 6.]),
        );
        let f = npy_bytes("<f8", true, "(2, 3)", &f64_bytes(&[1., 4., 2., 5., 3., 6.]));
        let want = Mat::from_fn(2, 3, |i, j| (3 * i + j + 1) as f64);
        for (name, bytes) in [("c.npy", c), ("f.npy", f)] {
            let p = temp(name);
            std::fs::write(&p, bytes).unwrap();
            assert_eq!(read_npy(&p).unwrap().data, want, "{name}");
        }
    }

    #[test]
    fn npy_dtypes_are_converted() {
        let i32s: Vec<u8> = [1i32, -2, 3, 4]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let f32s: Vec<u8> = [1f32, -2.5, 3., 4.]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let be: Vec<u8> = [1f64, -2., 3., 4.]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        let cases = [
            ("<i4", i32s, [1., -2., 3., 4.]),
            ("<f4", f32s, [1., -2.5, 3., 4.]),
            (">f8", be, [1., -2., 3., 4.]),
            ("|b1", vec![1, 0, 0, 1], [1., 0., 0., 1.]),
        ];
        for (descr, data, want) in cases {
            let p = temp(&format!("dtype{}.npy", descr.replace(['<', '>', '|'], "_")));
            std::fs::write(&p, npy_bytes(descr, false, "(2, 2)", &data)).unwrap();
            let got = read_npy(&p).unwrap().data;
            assert_eq!(
                got,
                Mat::from_fn(2, 2, |i, j| want[2 * i + j]),
                "dtype {descr}"
            );
        }
    }

    #[test]
    fn npy_one_dimensional_is_a_column_and_3d_is_rejected() {
        let p = temp("vec.npy");
        std::fs::write(
            &p,
            npy_bytes("<f8", false, "(3,)", &f64_bytes(&[1., 2., 3.])),
        )
        .unwrap();
        let v = read_npy(&p).unwrap();
        assert!(v.vector);
        assert_eq!((v.data.nrows(), v.data.ncols()), (3, 1));
        let p = temp("cube.npy");
        std::fs::write(
            &p,
            npy_bytes("<f8", false, "(1, 2, 1)", &f64_bytes(&[1., 2.])),
        )
        .unwrap();
        let e = read_npy(&p).unwrap_err().to_string();
        assert!(e.contains("3-D array of shape (1, 2, 1)"), "{e}");
    }

    #[test]
    fn npy_malformed_files_are_errors() {
        let p = temp("trunc.npy");
        std::fs::write(&p, npy_bytes("<f8", false, "(4, 4)", &f64_bytes(&[1., 2.]))).unwrap();
        let e = read_npy(&p).unwrap_err().to_string();
        assert!(
            e.contains("truncated data") && e.contains("trunc.npy"),
            "{e}"
        );
        let p = temp("huge.npy");
        std::fs::write(&p, npy_bytes("<f8", false, "(4294967296, 4294967296)", &[])).unwrap();
        let e = read_npy(&p).unwrap_err().to_string();
        assert!(e.contains("too large"), "{e}");
        let p = temp("text.npy");
        std::fs::write(&p, "1,2,3\n").unwrap();
        let e = read_npy(&p).unwrap_err().to_string();
        assert!(e.contains("not a .npy file"), "{e}");
        let p = temp("complex.npy");
        std::fs::write(&p, npy_bytes("<c16", false, "(1, 1)", &[0; 16])).unwrap();
        let e = read_npy(&p).unwrap_err().to_string();
        assert!(e.contains("unsupported dtype"), "{e}");
    }

    #[test]
    fn npy_header_shape_forms() {
        assert_eq!(
            header_shape("{'descr': '<f8', 'shape': (3, 4), }"),
            Some(vec![3, 4])
        );
        assert_eq!(
            header_shape("{'shape':[5L], 'descr': '<f8'}"),
            Some(vec![5])
        );
        assert_eq!(header_shape("{'shape': (), }"), Some(vec![]));
        assert_eq!(header_shape("{'shape': (0x10, 2), }"), None);
        assert_eq!(header_shape("{'descr': '<f8'}"), None);
    }

    #[test]
    fn csv_with_header_comments_and_empty_fields() {
        let p = temp("h.csv");
        std::fs::write(&p, "# a comment\na, b ,c\n1, 2.5, -3e-1\n\n4,,inf\n").unwrap();
        let m = read_csv(&p).unwrap();
        assert_eq!((m.nrows(), m.ncols()), (2, 3));
        assert_eq!(m[(0, 1)], 2.5);
        assert_eq!(m[(0, 2)], -0.3);
        assert!(m[(1, 1)].is_nan());
        assert_eq!(m[(1, 2)], f64::INFINITY);
        let p = temp("bad.csv");
        std::fs::write(&p, "1,2\n3,x\n").unwrap();
        let e = read_csv(&p).unwrap_err().to_string();
        assert!(e.contains("line 2, column 2: `x` is not a number"), "{e}");
        std::fs::write(&p, "1,2\n3\n").unwrap();
        let e = read_csv(&p).unwrap_err().to_string();
        assert!(e.contains("line 2 has 1 fields, expected 2"), "{e}");
    }

    #[test]
    fn csv_round_trip_is_exact() {
        let m = Mat::from_fn(4, 2, |i, j| (i as f64 - 1.7).exp() / (j as f64 + 3.0));
        let p = temp("round.csv");
        write_matrix(&p, m.as_ref()).unwrap();
        assert_eq!(read_matrix(&p).unwrap().data, m);
    }
}
