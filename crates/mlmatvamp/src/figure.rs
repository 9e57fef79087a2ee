//! Figures as data: a [`Figure`] is a row of [`Panel`]s, a panel holds [`Series`] (a line with
//! markers and an optional shaded band, e.g. an interquartile range).
//!
//! The core library only *describes* figures (the experiments return them with their results);
//! the front doors render them (the CLI draws PNG and SVG files with `plotters`). Logarithmic
//! axes are a flag of the panel: renderers plot `log10` of the data with `10^v` tick labels.

/// One curve.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Abscissae.
    pub x: Vec<f64>,
    /// Ordinates (non-finite points are skipped).
    pub y: Vec<f64>,
    /// Optional band `(lower, upper)` drawn shaded behind the line.
    pub band: Option<(Vec<f64>, Vec<f64>)>,
    /// Dashed line (e.g. a prediction against a measurement).
    pub dashed: bool,
    /// Palette index (defaults to the series position).
    pub color: Option<usize>,
}

/// One panel (axes).
#[derive(Clone, Debug, Default)]
pub struct Panel {
    /// Title above the axes.
    pub title: String,
    /// X-axis label.
    pub x_label: String,
    /// Y-axis label.
    pub y_label: String,
    /// The curves.
    pub series: Vec<Series>,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// Fixed y range (data units), else from the data.
    pub y_range: Option<(f64, f64)>,
}

/// A row of panels.
#[derive(Clone, Debug)]
pub struct Figure {
    /// Panels, left to right.
    pub panels: Vec<Panel>,
    /// Width in pixels of each panel.
    pub panel_width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Figure {
    /// A figure with default panel size.
    pub fn new(panels: Vec<Panel>) -> Self {
        Figure {
            panels,
            panel_width: 640,
            height: 480,
        }
    }
}

/// Median and quartiles (linear interpolation) of finite values; `None` if there are none.
pub fn quartiles(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        let pos = p * (v.len() - 1) as f64;
        let (i, f) = (pos.floor() as usize, pos - pos.floor());
        if i + 1 < v.len() {
            v[i] * (1.0 - f) + v[i + 1] * f
        } else {
            v[i]
        }
    };
    Some((q(0.25), q(0.5), q(0.75)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_of_known_data() {
        assert_eq!(quartiles(&[1.0, 2.0, 3.0, 4.0, 5.0]), Some((2.0, 3.0, 4.0)));
        assert_eq!(quartiles(&[f64::NAN]), None);
    }
}

/// A figure and where it belongs: `stem.png` and `stem.svg`. The experiment drivers return these
/// with their results (and list the two files among their outputs); the front door renders them.
#[derive(Clone, Debug)]
pub struct FigureFile {
    /// The path without extension.
    pub stem: std::path::PathBuf,
    /// The figure.
    pub figure: Figure,
}

impl FigureFile {
    /// A figure to be written as `stem.png` and `stem.svg`.
    pub fn new(stem: std::path::PathBuf, figure: Figure) -> Self {
        FigureFile { stem, figure }
    }
    /// The two files: `[stem.png, stem.svg]`.
    pub fn files(&self) -> [std::path::PathBuf; 2] {
        [
            self.stem.with_extension("png"),
            self.stem.with_extension("svg"),
        ]
    }
}
