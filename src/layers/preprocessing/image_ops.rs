//! The image operations of the preprocessing layers, as Keras 3 runs them on TensorFlow:
//! `ImageProjectiveTransformV3` (an affine map from output to input pixels, TensorFlow's fill
//! modes and interpolations) and `tf.image.resize` (half-pixel centers), on channels-last `f32`
//! images, one image at a time (the layers spread a batch over threads).

use crate::error::{Error, Result};
use std::str::FromStr;

/// How points outside the input are filled, as Keras' `fill_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FillMode {
    /// `kkkkkkkk|abcd|kkkkkkkk` with `k = cval`.
    Constant,
    /// `aaaaaaaa|abcd|dddddddd` (Keras' default).
    #[default]
    Nearest,
    /// `abcddcba|abcd|dcbaabcd`.
    Reflect,
    /// SciPy's `wrap`, which Keras calls: `bcdabcd|abcd|bcdabcd`, a period of `size - 1`
    /// (the first and last pixels overlap), as `scipy.ndimage` maps coordinates; the result
    /// equals Keras' (see the conformance suite).
    Wrap,
}

impl FromStr for FillMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "constant" => FillMode::Constant,
            "nearest" => FillMode::Nearest,
            "reflect" => FillMode::Reflect,
            "wrap" => FillMode::Wrap,
            other => {
                return Err(Error::invalid(
                    "fill_mode",
                    format!("expected one of constant, nearest, reflect, wrap; received {other:?}"),
                ))
            }
        })
    }
}

/// The resampling, as Keras' `interpolation_order` (0 or 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interpolation {
    /// The nearest input pixel (order 0).
    Nearest,
    /// Bilinear (order 1, Keras' default).
    #[default]
    Bilinear,
}

impl FromStr for Interpolation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "nearest" => Interpolation::Nearest,
            "bilinear" => Interpolation::Bilinear,
            other => {
                return Err(Error::invalid(
                    "interpolation",
                    format!("expected nearest or bilinear, received {other:?}"),
                ))
            }
        })
    }
}

/// TensorFlow's mapping of a coordinate outside `[0, len - 1]` by the fill mode
/// (`image_ops.h`, `MapCoordinate`); constant fill leaves it (the reads outside give the fill).
#[inline]
fn map_coordinate(c: f64, len: usize, mode: FillMode) -> f64 {
    let n = len as f64;
    let mut c = c;
    match mode {
        FillMode::Constant => return c,
        FillMode::Nearest => {}
        FillMode::Reflect => {
            if len <= 1 {
                c = 0.0;
            } else if c < 0.0 {
                let sz2 = 2.0 * n;
                if c < -sz2 {
                    c += sz2 * (-c / sz2).trunc();
                }
                c = if c < -n { c + sz2 } else { -c - 1.0 };
            } else if c > n - 1.0 {
                let sz2 = 2.0 * n;
                c -= sz2 * (c / sz2).trunc();
                if c >= n {
                    c = sz2 - c - 1.0;
                }
            }
        }
        FillMode::Wrap => {
            if len <= 1 {
                c = 0.0;
            } else if c < 0.0 {
                let sz = n - 1.0;
                c += n * ((-c / sz).trunc() + 1.0);
            } else if c > n - 1.0 {
                let sz = n - 1.0;
                c -= n * (c / sz).trunc();
            }
        }
    }
    c.clamp(0.0, n - 1.0)
}

/// `out` (`oh x ow x c`) from `img` (`h x w x c`): output pixel `(x, y)` shows the input at
/// `(a0 x + a1 y + a2, b0 x + b1 y + b2)` (Keras' 8-number transform without its projective
/// part), as TensorFlow's `ImageProjectiveTransformV3`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn affine_transform(
    img: &[f32],
    (h, w, c): (usize, usize, usize),
    m: [f64; 6],
    interp: Interpolation,
    mode: FillMode,
    fill: f32,
    (oh, ow): (usize, usize),
    out: &mut [f32],
) {
    let read = |y: f64, x: f64, ch: usize| -> f32 {
        if y < 0.0 || x < 0.0 || y > h as f64 - 1.0 || x > w as f64 - 1.0 {
            fill
        } else {
            img[(y as usize * w + x as usize) * c + ch]
        }
    };
    for y in 0..oh {
        for x in 0..ow {
            let (xf, yf) = (x as f64, y as f64);
            let sx = map_coordinate(m[0] * xf + m[1] * yf + m[2], w, mode);
            let sy = map_coordinate(m[3] * xf + m[4] * yf + m[5], h, mode);
            let o = &mut out[(y * ow + x) * c..(y * ow + x + 1) * c];
            match interp {
                Interpolation::Nearest => {
                    let (ry, rx) = (sy.round(), sx.round());
                    for (ch, v) in o.iter_mut().enumerate() {
                        *v = read(ry, rx, ch);
                    }
                }
                Interpolation::Bilinear => {
                    let (y0, x0) = (sy.floor(), sx.floor());
                    let (y1, x1) = (y0 + 1.0, x0 + 1.0);
                    for (ch, v) in o.iter_mut().enumerate() {
                        let top = (x1 - sx) as f32 * read(y0, x0, ch) + (sx - x0) as f32 * read(y0, x1, ch);
                        let bottom = (x1 - sx) as f32 * read(y1, x0, ch) + (sx - x0) as f32 * read(y1, x1, ch);
                        *v = (y1 - sy) as f32 * top + (sy - y0) as f32 * bottom;
                    }
                }
            }
        }
    }
}

/// The source rows (or columns) of `out_len` outputs resized from `in_len` inputs, as
/// `tf.image.resize` with half-pixel centers: `(lower, upper, weight of upper)`.
fn resize_axis(in_len: usize, out_len: usize, interp: Interpolation) -> Vec<(usize, usize, f32)> {
    let scale = in_len as f64 / out_len as f64;
    (0..out_len)
        .map(|o| match interp {
            Interpolation::Nearest => {
                let i = (((o as f64 + 0.5) * scale).floor() as usize).min(in_len - 1);
                (i, i, 0.0)
            }
            Interpolation::Bilinear => {
                let src = (o as f64 + 0.5) * scale - 0.5;
                let f = src.floor();
                let lower = (f.max(0.0) as usize).min(in_len - 1);
                let upper = (src.ceil().max(0.0) as usize).min(in_len - 1);
                (lower, upper, (src - f) as f32)
            }
        })
        .collect()
}

/// Resizes the window `(top, left, height, width)` of `img` (`h x w x c`) to `oh x ow`, as
/// `tf.image.resize` (bilinear or nearest, half-pixel centers, no antialiasing).
#[allow(clippy::too_many_arguments)]
pub(crate) fn resize(
    img: &[f32],
    (_h, w, c): (usize, usize, usize),
    (top, left, wh, ww): (usize, usize, usize, usize),
    interp: Interpolation,
    (oh, ow): (usize, usize),
    out: &mut [f32],
) {
    let rows = resize_axis(wh, oh, interp);
    let cols = resize_axis(ww, ow, interp);
    let at = |y: usize, x: usize| ((top + y) * w + left + x) * c;
    for (oy, &(y0, y1, wy)) in rows.iter().enumerate() {
        for (ox, &(x0, x1, wx)) in cols.iter().enumerate() {
            let o = &mut out[(oy * ow + ox) * c..(oy * ow + ox + 1) * c];
            let (p00, p01, p10, p11) = (at(y0, x0), at(y0, x1), at(y1, x0), at(y1, x1));
            for (ch, v) in o.iter_mut().enumerate() {
                let top = img[p00 + ch] + (img[p01 + ch] - img[p00 + ch]) * wx;
                let bottom = img[p10 + ch] + (img[p11 + ch] - img[p10 + ch]) * wx;
                *v = top + (bottom - top) * wy;
            }
        }
    }
}

/// Keras' `crop_to_aspect_ratio` window of an `h x w` image for a `th x tw` target: the
/// largest centered window of the target's aspect ratio, `(top, left, height, width)`.
pub(crate) fn aspect_window((h, w): (usize, usize), (th, tw): (usize, usize)) -> (usize, usize, usize, usize) {
    let ch = ((w as f64 * th as f64 / tw as f64) as usize).clamp(1, h);
    let cw = ((h as f64 * tw as f64 / th as f64) as usize).clamp(1, w);
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_modes_map_coordinates_as_tensorflow() {
        // reflect: (d c b a | a b c d | d c b a) on 4 pixels.
        assert_eq!(map_coordinate(-1.0, 4, FillMode::Reflect), 0.0);
        assert_eq!(map_coordinate(-2.0, 4, FillMode::Reflect), 1.0);
        assert_eq!(map_coordinate(4.0, 4, FillMode::Reflect), 3.0);
        assert_eq!(map_coordinate(5.0, 4, FillMode::Reflect), 2.0);
        assert_eq!(map_coordinate(-5.0, 4, FillMode::Reflect), 3.0);
        // nearest: clamped.
        assert_eq!(map_coordinate(-3.5, 4, FillMode::Nearest), 0.0);
        assert_eq!(map_coordinate(9.0, 4, FillMode::Nearest), 3.0);
        // constant: left as it is (reads outside give the fill value).
        assert_eq!(map_coordinate(-3.5, 4, FillMode::Constant), -3.5);
    }

    #[test]
    fn identity_transform_and_resize_keep_the_image() {
        let img: Vec<f32> = (0..2 * 3 * 2).map(|v| v as f32).collect();
        let mut out = vec![0.0; img.len()];
        affine_transform(
            &img,
            (2, 3, 2),
            [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            Interpolation::Bilinear,
            FillMode::Reflect,
            0.0,
            (2, 3),
            &mut out,
        );
        assert_eq!(out, img);
        resize(&img, (2, 3, 2), (0, 0, 2, 3), Interpolation::Bilinear, (2, 3), &mut out);
        assert_eq!(out, img);
        assert_eq!(aspect_window((10, 20), (5, 5)), (0, 5, 10, 10));
    }
}
