//! The pictures a user looks at after training, beside `History::plot`'s curves: a confusion
//! matrix (counts and row-normalised, class names on the axes) and a grid of the images the
//! model got wrong, and the per-class accuracy table.

use crate::error::{Error, Result};
use candle_core::{DType, Tensor};
#[cfg(feature = "plot")]
use plotters::coord::Shift;
#[cfg(feature = "plot")]
use plotters::prelude::*;
#[cfg(feature = "plot")]
use plotters::style::text_anchor::{HPos, Pos, VPos};
#[cfg(feature = "plot")]
use std::path::Path;

/// Class indices from labels: `(n,)` or `(n, 1)` indices, or `(n, k)` one-hot rows or
/// probabilities (the arg-max), as a `Vec`.
fn classes(t: &Tensor, what: &'static str) -> Result<Vec<usize>> {
    let t = t.to_device(&candle_core::Device::Cpu)?;
    match t.dims() {
        [_] => Ok(t.to_dtype(DType::F64)?.to_vec1::<f64>()?.iter().map(|&v| v as usize).collect()),
        [_, 1] => Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?.iter().map(|&v| v as usize).collect()),
        [_, _] => Ok(t.argmax(1)?.to_vec1::<u32>()?.into_iter().map(|v| v as usize).collect()),
        d => {
            Err(Error::invalid(what, format!("expected class indices (n,) or rows (n, classes), received shape {d:?}")))
        }
    }
}

/// The confusion matrix: `m[true][predicted]` counts, for `num_classes` classes. `y_true` and
/// `y_pred` are class indices `(n,)`, or rows `(n, classes)` (one-hot labels, predicted
/// probabilities) whose arg-max is taken.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let y = Tensor::new(&[0u32, 1, 1, 2], &Device::Cpu)?;
/// let p = Tensor::new(&[0u32, 1, 2, 2], &Device::Cpu)?;
/// let m = kandle::utils::confusion_matrix(&y, &p, 3)?;
/// assert_eq!(m, vec![vec![1, 0, 0], vec![0, 1, 1], vec![0, 0, 1]]);
/// # Ok::<(), kandle::Error>(())
/// ```
///
/// # Errors
/// Tensors of other shapes, of different lengths, or a class outside `0..num_classes`.
pub fn confusion_matrix(y_true: &Tensor, y_pred: &Tensor, num_classes: usize) -> Result<Vec<Vec<usize>>> {
    let (t, p) = (classes(y_true, "y_true")?, classes(y_pred, "y_pred")?);
    if t.len() != p.len() {
        return Err(Error::invalid("y_pred", format!("expected {} rows as y_true, received {}", t.len(), p.len())));
    }
    let mut m = vec![vec![0usize; num_classes]; num_classes];
    for (&a, &b) in t.iter().zip(&p) {
        if a >= num_classes || b >= num_classes {
            return Err(Error::invalid(
                "num_classes",
                format!("a class index {} is not below {num_classes}", a.max(b)),
            ));
        }
        m[a][b] += 1;
    }
    Ok(m)
}

/// Each class's accuracy (recall) as CSV: `class,name,samples,correct,accuracy`.
pub fn per_class_csv(matrix: &[Vec<usize>], class_names: &[&str]) -> String {
    let mut s = String::from("class,name,samples,correct,accuracy\n");
    for (i, row) in matrix.iter().enumerate() {
        let n: usize = row.iter().sum();
        let acc = if n > 0 { row[i] as f64 / n as f64 } else { f64::NAN };
        s += &format!("{i},{},{n},{},{acc:.4}\n", class_names.get(i).copied().unwrap_or(""), row[i]);
    }
    s
}

#[cfg(feature = "plot")]
type Draw = std::result::Result<(), String>;

#[cfg(feature = "plot")]
fn heatmap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    m: &[Vec<usize>],
    names: &[&str],
    normalised: bool,
) -> Draw
where
    DB::ErrorType: 'static,
{
    let k = m.len();
    let title = if normalised { "Confusion matrix (each row sums to 1)" } else { "Confusion matrix (counts)" };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(90)
        .y_label_area_size(100)
        .build_cartesian_2d((0..k.saturating_sub(1)).into_segmented(), (0..k.saturating_sub(1)).into_segmented())
        .map_err(|e| e.to_string())?;
    // Row 0 (the first true class) at the top: y = k - 1 - t.
    let name = |i: usize| names.get(i).map(|s| s.to_string()).unwrap_or_else(|| i.to_string());
    let centre = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) if *i < k => Some(*i),
        _ => None,
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(k + 1)
        .y_labels(k + 1)
        // The x labels are drawn below, rotated and starting at the axis: plotters centres
        // rotated axis labels on their tick, which pushes half of each under the plot.
        .x_label_formatter(&|_| String::new())
        .y_label_formatter(&|v| centre(v).map(|i| name(k - 1 - i)).unwrap_or_default())
        .y_label_style(("sans-serif", 13))
        .x_desc("predicted")
        .y_desc("true")
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    let rows: Vec<f64> = m.iter().map(|r| r.iter().sum::<usize>().max(1) as f64).collect();
    let max = m.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let value = |t: usize, p: usize| if normalised { m[t][p] as f64 / rows[t] } else { m[t][p] as f64 / max };
    let cells = || (0..k).flat_map(|t| (0..k).map(move |p| (t, p)));
    chart
        .draw_series(cells().map(|(t, p)| {
            let v = value(t, p);
            let shade = (255.0 * (1.0 - 0.85 * v.sqrt())) as u8;
            Rectangle::new(
                [
                    (SegmentValue::Exact(p), SegmentValue::Exact(k - 1 - t)),
                    (SegmentValue::Exact(p + 1), SegmentValue::Exact(k - t)),
                ],
                RGBColor(shade, shade, 255).filled(),
            )
        }))
        .map_err(|e| e.to_string())?;
    let base = area.get_base_pixel();
    let label_font = ("sans-serif", if k <= 10 { 13 } else { 9 })
        .into_font()
        .transform(FontTransform::Rotate90)
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for p in 0..k {
        let (x, y) = chart.backend_coord(&(SegmentValue::CenterOf(p), SegmentValue::Exact(0)));
        area.draw(&Text::new(name(p), (x - base.0, y - base.1 + 10), label_font.clone())).map_err(|e| e.to_string())?;
    }
    let font_size = if k <= 10 { 13 } else { 9 };
    chart
        .draw_series(cells().map(|(t, p)| {
            let v = value(t, p);
            let text = if normalised { format!("{:.2}", m[t][p] as f64 / rows[t]) } else { m[t][p].to_string() };
            let color = if v > 0.45 { WHITE } else { BLACK };
            Text::new(
                text,
                (SegmentValue::CenterOf(p), SegmentValue::CenterOf(k - 1 - t)),
                ("sans-serif", font_size).into_font().color(&color).pos(Pos::new(HPos::Center, VPos::Center)),
            )
        }))
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(feature = "plot")]
/// Renders with `draw` into a PNG (or an SVG when `path` ends in `.svg`) of `size`, atomically.
fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl Fn(&DrawingArea<BitMapBackend<'_>, Shift>) -> Draw,
    draw_svg: impl Fn(&DrawingArea<SVGBackend<'_>, Shift>) -> Draw,
) -> Result<()> {
    crate::callbacks::register_font();
    let fail = |e: String| Error::invalid("path", format!("{}: cannot draw: {e}", path.display()));
    let (w, h) = size;
    let bytes = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg")) {
        let mut s = String::new();
        {
            let root = SVGBackend::with_string(&mut s, (w, h)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
            draw_svg(&root).map_err(fail)?;
            root.present().map_err(|e| fail(e.to_string()))?;
        }
        s.into_bytes()
    } else {
        let mut buf = vec![0u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
            draw(&root).map_err(fail)?;
            root.present().map_err(|e| fail(e.to_string()))?;
        }
        let img = image::RgbImage::from_raw(w, h, buf).ok_or_else(|| fail("bad buffer".into()))?;
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).map_err(|e| fail(e.to_string()))?;
        out.into_inner()
    };
    crate::fs::write_atomic(path, &bytes)
}

#[cfg(feature = "plot")]
/// Draws the confusion matrix of `y_true` against `y_pred` (class indices, one-hot rows or
/// predicted probabilities), counts on the left and row-normalised on the right, with the
/// class names on both axes. A path ending in `.svg` gives an SVG, anything else a PNG.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let y = Tensor::new(&[0u32, 1, 1, 2, 2, 2], &Device::Cpu)?;
/// let p = Tensor::new(&[0u32, 1, 2, 2, 2, 0], &Device::Cpu)?;
/// let path = std::env::temp_dir().join("kandle-doc-confusion.png");
/// kandle::utils::plot_confusion_matrix(&path, &y, &p, &["cat", "dog", "bird"])?;
/// assert!(std::fs::metadata(&path)?.len() > 1000);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As [`confusion_matrix`], no class name, or a file that cannot be written.
pub fn plot_confusion_matrix(
    path: impl AsRef<Path>,
    y_true: &Tensor,
    y_pred: &Tensor,
    class_names: &[&str],
) -> Result<()> {
    if class_names.is_empty() {
        return Err(Error::invalid("class_names", "expected one name per class, received none"));
    }
    let m = confusion_matrix(y_true, y_pred, class_names.len())?;
    let side = (360 + 45 * class_names.len() as u32).min(1400);
    render(
        path.as_ref(),
        (2 * side, side),
        |root| {
            let (l, r) = root.split_horizontally(side);
            heatmap(&l, &m, class_names, false)?;
            heatmap(&r, &m, class_names, true)
        },
        |root| {
            let (l, r) = root.split_horizontally(side);
            heatmap(&l, &m, class_names, false)?;
            heatmap(&r, &m, class_names, true)
        },
    )
}

#[cfg(feature = "plot")]
/// Draws a grid of the images the model got wrong (at most `max`, in data order), each with
/// its true class, the predicted class and the model's confidence under it. `x` holds the
/// images `(n, h, w, c)` (c 1 or 3) in `[0, 1]` or as `u8`, `y_true` the labels, `y_pred` the
/// predicted probabilities `(n, classes)`. Returns how many images were wrong in all.
///
/// # Errors
/// Images of another shape, labels or predictions of another length, or a file that cannot be
/// written.
pub fn plot_misclassified(
    path: impl AsRef<Path>,
    x: &Tensor,
    y_true: &Tensor,
    y_pred: &Tensor,
    class_names: &[&str],
    max: usize,
) -> Result<usize> {
    let d = x.dims().to_vec();
    if d.len() != 4 || !(d[3] == 1 || d[3] == 3) {
        return Err(Error::invalid("x", format!("expected images (n, height, width, 1 or 3), received shape {d:?}")));
    }
    let (n, h, w, c) = (d[0], d[1], d[2], d[3]);
    let t = classes(y_true, "y_true")?;
    if y_pred.rank() != 2 || y_pred.dims()[0] != n || t.len() != n {
        return Err(Error::invalid(
            "y_pred",
            format!(
                "expected probabilities ({n}, classes) and {n} labels, received {:?} and {}",
                y_pred.dims(),
                t.len()
            ),
        ));
    }
    let probs = y_pred.to_device(&candle_core::Device::Cpu)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let wrong: Vec<(usize, usize, f32)> = probs
        .iter()
        .enumerate()
        .filter_map(|(i, row)| {
            let (p, conf) =
                row.iter().enumerate().fold((0, f32::MIN), |(bi, bv), (j, &v)| if v > bv { (j, v) } else { (bi, bv) });
            (p != t[i]).then_some((i, p, conf))
        })
        .collect();
    let shown: Vec<_> = wrong.iter().take(max.max(1)).copied().collect();
    let scale = if x.dtype() == DType::U8 { 1.0 } else { 255.0 };
    let pixels = x.to_device(&candle_core::Device::Cpu)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let cols = (shown.len() as f64).sqrt().ceil().max(1.0) as usize;
    let rows = shown.len().div_ceil(cols).max(1);
    let zoom = (128 / h.max(w)).max(1);
    let (cw, ch) = ((w * zoom).max(150) as u32 + 10, (h * zoom) as u32 + 48);
    let title = format!("{} of {n} images misclassified (first {} shown)", wrong.len(), shown.len());
    struct Grid<'a> {
        title: String,
        shown: Vec<(usize, usize, f32)>,
        cells: (usize, u32, u32),
        img: (usize, usize, usize, usize),
        pixels: &'a [f32],
        scale: f32,
        truth: &'a [usize],
        names: &'a [&'a str],
    }
    impl Grid<'_> {
        fn name(&self, i: usize) -> String {
            self.names.get(i).map(|s| s.to_string()).unwrap_or_else(|| i.to_string())
        }
        fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Draw {
            let (cols, cw, ch) = self.cells;
            let (h, w, c, zoom) = self.img;
            root.draw(&Text::new(self.title.clone(), (10, 8), ("sans-serif", 18))).map_err(|e| e.to_string())?;
            for (k, &(i, p, conf)) in self.shown.iter().enumerate() {
                let (x0, y0) = ((k % cols) as i32 * cw as i32 + 5, (k / cols) as i32 * ch as i32 + 36);
                let ox = x0 + (cw as i32 - 10 - (w * zoom) as i32) / 2;
                for yy in 0..h {
                    for xx in 0..w {
                        let at = ((i * h + yy) * w + xx) * c;
                        let v = |ch: usize| (self.pixels[at + ch.min(c - 1)] * self.scale).clamp(0.0, 255.0) as u8;
                        let color = RGBColor(v(0), v(1), v(2));
                        let (px, py) = (ox + (xx * zoom) as i32, y0 + (yy * zoom) as i32);
                        root.draw(&Rectangle::new([(px, py), (px + zoom as i32, py + zoom as i32)], color.filled()))
                            .map_err(|e| e.to_string())?;
                    }
                }
                let ty = y0 + (h * zoom) as i32 + 3;
                root.draw(&Text::new(format!("true: {}", self.name(self.truth[i])), (x0, ty), ("sans-serif", 13)))
                    .map_err(|e| e.to_string())?;
                root.draw(&Text::new(
                    format!("pred: {} ({:.0}%)", self.name(p), 100.0 * conf),
                    (x0, ty + 16),
                    ("sans-serif", 13).into_font().color(&RGBColor(200, 30, 30)),
                ))
                .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
    }
    let size = ((cols as u32 * cw).max(420), rows as u32 * ch + 40);
    let grid = Grid {
        title,
        shown,
        cells: (cols, cw, ch),
        img: (h, w, c, zoom),
        pixels: &pixels,
        scale,
        truth: &t,
        names: class_names,
    };
    render(path.as_ref(), size, |root| grid.draw(root), |root| grid.draw(root))?;
    Ok(wrong.len())
}
