//! Training curves as a picture, like the Keras tutorial's figures: loss on the left,
//! accuracy on the right, training and validation per epoch, with axes and legends.

use super::History;
use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Registers the bundled DejaVu Sans as plotters' `sans-serif` font (once): the pictures need no
/// system font library.
pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    h: &History,
    metric: &str,
    title: &str,
) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    let series: Vec<(String, &[f64], RGBColor)> =
        [(metric.to_string(), BLUE), (format!("val_{metric}"), RGBColor(230, 120, 20))]
            .into_iter()
            .filter_map(|(k, c)| h.get(&k).map(|v| (k, v, c)))
            .collect();
    let epochs: Vec<f64> = h.epoch.iter().map(|&e| (e + 1) as f64).collect();
    let values: Vec<f64> = series.iter().flat_map(|(_, v, _)| v.iter().copied()).filter(|v| v.is_finite()).collect();
    let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let (x0, x1) = (epochs.first().copied().unwrap_or(1.0), epochs.last().copied().unwrap_or(1.0));
    let (x0, x1) = if x1 > x0 { (x0, x1) } else { (x0 - 0.5, x0 + 0.5) };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, (lo - pad)..(hi + pad))
        .map_err(|e| e.to_string())?;
    let n_labels = ((x1 - x0) as usize + 1).min(10);
    chart
        .configure_mesh()
        .x_labels(n_labels)
        .x_label_formatter(&|x| if x.fract().abs() < 1e-9 { format!("{x:.0}") } else { String::new() })
        .x_desc("epoch")
        .y_desc(metric)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(|e| e.to_string())?;
    for (name, v, color) in series {
        let pts: Vec<(f64, f64)> =
            epochs.iter().copied().zip(v.iter().copied()).filter(|(_, y)| y.is_finite()).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(if name.starts_with("val_") { "validation" } else { "training" })
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, h: &History) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let has_acc = h.get("accuracy").is_some() || h.get("val_accuracy").is_some();
    if has_acc {
        let (l, r) = root.split_horizontally(root.dim_in_pixel().0 / 2);
        panel(&l, h, "loss", "Model loss")?;
        panel(&r, h, "accuracy", "Model accuracy")?;
    } else {
        panel(&root, h, "loss", "Model loss")?;
    }
    root.present().map_err(|e| e.to_string())
}

impl History {
    /// Draws the training curves, like the Keras tutorial's figures: loss and accuracy per
    /// epoch, training and validation, with axes and legends. A path ending in `.svg` gives
    /// an SVG file, anything else a PNG (1200 x 500). Written to a temporary name and renamed.
    ///
    /// ```
    /// use kandle::models::History;
    /// let mut h = History::default();
    /// for (e, (l, a)) in [(1.9, 0.3), (1.5, 0.45), (1.3, 0.52)].into_iter().enumerate() {
    ///     h.push(e, &[("accuracy".into(), a), ("loss".into(), l), ("val_accuracy".into(), a + 0.02), ("val_loss".into(), l - 0.1)]);
    /// }
    /// let path = std::env::temp_dir().join("kandle-doc-curves.png");
    /// h.plot(&path)?;
    /// assert!(std::fs::metadata(&path)?.len() > 1000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// An empty history, or a file that cannot be written.
    pub fn plot(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if self.epoch.is_empty() {
            return Err(Error::invalid("history", "there is no epoch to plot"));
        }
        register_font();
        let fail = |e: String| Error::invalid("path", format!("{}: cannot draw the curves: {e}", path.display()));
        let (w, h) = (1200u32, 500u32);
        let svg = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg"));
        let bytes = if svg {
            let mut s = String::new();
            draw(SVGBackend::with_string(&mut s, (w, h)).into_drawing_area(), self).map_err(fail)?;
            s.into_bytes()
        } else {
            let mut buf = vec![0u8; (w * h * 3) as usize];
            draw(BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area(), self).map_err(fail)?;
            let img = image::RgbImage::from_raw(w, h, buf).ok_or_else(|| fail("bad buffer".into()))?;
            let mut out = std::io::Cursor::new(Vec::new());
            img.write_to(&mut out, image::ImageFormat::Png).map_err(|e| fail(e.to_string()))?;
            out.into_inner()
        };
        crate::fs::write_atomic(path, &bytes)
    }
}
