//! Rendering the core's figures ([`mlmatvamp::figure::Figure`]) to PNG and SVG with `plotters`,
//! with an embedded font so that every machine draws the same picture (no system font
//! libraries). Logarithmic axes are drawn by plotting `log10` of the data with `10^v` tick
//! labels.

use mlmatvamp::figure::{Figure, FigureFile, Panel};
use mlmatvamp::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "dejavu-embedded";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in; failing to parse it would be a build defect.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// Writes `stem.png` and `stem.svg` of a figure; returns their paths.
pub fn save(fig: &Figure, stem: &Path) -> Result<(PathBuf, PathBuf)> {
    register_font();
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let size = (fig.panel_width * fig.panels.len().max(1) as u32, fig.height);
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        draw(fig, &root).map_err(|e| plot_error(&png, e))?;
        root.present().map_err(|e| plot_error(&png, e))?;
    }
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        draw(fig, &root).map_err(|e| plot_error(&svg, e))?;
        root.present().map_err(|e| plot_error(&svg, e))?;
    }
    Ok((png, svg))
}

/// Writes every figure a library call returned; returns the files.
pub fn save_figures(figures: &[FigureFile]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::with_capacity(2 * figures.len());
    for f in figures {
        let (png, svg) = save(&f.figure, &f.stem)?;
        files.push(png);
        files.push(svg);
    }
    Ok(files)
}

fn draw<DB: DrawingBackend>(
    fig: &Figure,
    root: &DrawingArea<DB, Shift>,
) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((1, fig.panels.len().max(1)));
    for (panel, area) in fig.panels.iter().zip(areas.iter()) {
        draw_panel(panel, area)?;
    }
    Ok(())
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        detail: format!("cannot draw the figure: {e}"),
    }
}

/// The palette (colour-blind friendly).
fn palette(i: usize) -> RGBColor {
    const P: [(u8, u8, u8); 8] = [
        (0, 114, 178),
        (230, 159, 0),
        (0, 158, 115),
        (204, 121, 167),
        (86, 180, 233),
        (213, 94, 0),
        (240, 228, 66),
        (0, 0, 0),
    ];
    let (r, g, b) = P[i % P.len()];
    RGBColor(r, g, b)
}

fn tf(v: f64, log: bool) -> Option<f64> {
    if !v.is_finite() {
        return None;
    }
    if log {
        (v > 0.0).then(|| v.log10())
    } else {
        Some(v)
    }
}

fn fmt_tick(v: f64, log: bool) -> String {
    let x = if log { 10f64.powf(v) } else { v };
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{x:.0e}")
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 1.0 {
        let s = format!("{x:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        let s = format!("{x:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn range(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 * (1.0 + hi.abs()) {
        let pad = 0.5 * (1.0 + hi.abs()) * 0.1;
        return (lo - pad, hi + pad);
    }
    let pad = 0.05 * (hi - lo);
    (lo - pad, hi + pad)
}

fn draw_panel<DB: DrawingBackend>(
    p: &Panel,
    area: &DrawingArea<DB, Shift>,
) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    let xs = p
        .series
        .iter()
        .flat_map(|s| s.x.iter().filter_map(|&v| tf(v, p.log_x)));
    let (x0, x1) = range(xs);
    let (y0, y1) = match p.y_range {
        Some((a, b)) => (tf(a, p.log_y).unwrap_or(0.0), tf(b, p.log_y).unwrap_or(1.0)),
        None => {
            let ys = p.series.iter().flat_map(|s| {
                let band = s
                    .band
                    .iter()
                    .flat_map(|(lo, hi)| lo.iter().chain(hi.iter()).copied());
                s.y.iter()
                    .copied()
                    .chain(band)
                    .filter_map(|v| tf(v, p.log_y))
                    .collect::<Vec<_>>()
            });
            range(ys)
        }
    };
    let font = |size: u32| (FAMILY, size).into_font();
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, font(20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    let (lx, ly) = (p.log_x, p.log_y);
    chart
        .configure_mesh()
        .x_desc(p.x_label.as_str())
        .y_desc(p.y_label.as_str())
        .label_style(font(13))
        .axis_desc_style(font(15))
        .x_label_formatter(&|v| fmt_tick(*v, lx))
        .y_label_formatter(&|v| fmt_tick(*v, ly))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, s) in p.series.iter().enumerate() {
        let color = palette(s.color.unwrap_or(i));
        if let Some((lo, hi)) = &s.band {
            let mut poly: Vec<(f64, f64)> = Vec::new();
            for ((&x, &l), _) in s.x.iter().zip(lo).zip(hi) {
                if let (Some(x), Some(l)) = (tf(x, lx), tf(l, ly)) {
                    poly.push((x, l));
                }
            }
            for (&x, &h) in s.x.iter().zip(hi).rev() {
                if let (Some(x), Some(h)) = (tf(x, lx), tf(h, ly)) {
                    poly.push((x, h));
                }
            }
            if poly.len() >= 3 {
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        poly,
                        color.mix(0.18).filled(),
                    )))
                    .map_err(|e| e.to_string())?;
            }
        }
        let pts: Vec<(f64, f64)> =
            s.x.iter()
                .zip(&s.y)
                .filter_map(|(&x, &y)| Some((tf(x, lx)?, tf(y, ly)?)))
                .collect();
        let style = ShapeStyle::from(&color).stroke_width(2);
        let drawn = if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(pts.clone(), 8, 5, style))
                .map_err(|e| e.to_string())?
        } else {
            chart
                .draw_series(LineSeries::new(pts.clone(), style))
                .map_err(|e| e.to_string())?
        };
        if !s.label.is_empty() {
            drawn
                .label(s.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
        chart
            .draw_series(
                pts.iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    if p.series.iter().any(|s| !s.label.is_empty()) {
        chart
            .configure_series_labels()
            .label_font(font(13))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlmatvamp::figure::Series;

    #[test]
    fn writes_png_and_svg() {
        let dir = std::env::temp_dir().join(format!("mlmatvamp-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = Series {
            label: "curve".into(),
            x: vec![200.0, 400.0, 800.0],
            y: vec![1.5, 1.2, 1.1],
            band: Some((vec![1.4, 1.1, 1.05], vec![1.6, 1.3, 1.15])),
            ..Default::default()
        };
        let fig = Figure::new(vec![
            Panel {
                title: "a".into(),
                x_label: "n".into(),
                y_label: "mse".into(),
                series: vec![s.clone()],
                log_x: true,
                ..Default::default()
            },
            Panel {
                title: "b".into(),
                series: vec![Series { dashed: true, ..s }],
                log_y: true,
                ..Default::default()
            },
        ]);
        let (png, svg) = save(&fig, &dir.join("fig")).unwrap();
        assert!(std::fs::metadata(&png).unwrap().len() > 1000);
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("<svg") && text.contains("curve"));
        if std::env::var_os("KEEP_PLOT").is_none() {
            std::fs::remove_dir_all(&dir).ok();
        }
    }
}
