//! The geometry of augmentation: a parameter struct, the affine matrix it stands for, and one
//! resampling pass that applies the whole transform (rotation, shift, shear, zoom and flips)
//! to a channels-last image.
//!
//! Coordinates are `(x, y)` = (column, row). The matrix maps an output pixel to the input
//! position it samples, about the image centre, composed as Keras composes it:
//! `rotation . shift . shear . zoom`. With the same parameters, [`apply_affine`] gives Keras'
//! `apply_transform` result on square images; `tx` shifts along the width (columns) and `ty`
//! along the height (rows).

/// The parameters of one random transform, as Keras' `get_random_transform` returns them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransformParams {
    /// Rotation in degrees.
    pub theta: f64,
    /// Shift along the width (x, columns), in pixels: the output samples the input at
    /// `x + tx`, so content moves by `-tx`.
    pub tx: f64,
    /// Shift along the height (y, rows), in pixels.
    pub ty: f64,
    /// Shear angle in degrees.
    pub shear: f64,
    /// Zoom along x (the output samples the input at `zx` times the distance from the centre:
    /// `zx < 1` zooms in).
    pub zx: f64,
    /// Zoom along y.
    pub zy: f64,
    /// Mirror left-right.
    pub flip_horizontal: bool,
    /// Mirror top-bottom.
    pub flip_vertical: bool,
    /// Added to every channel, then clipped to the image's range (Keras' channel shift).
    pub channel_shift_intensity: Option<f64>,
    /// Multiplies the pixel values (Keras' brightness).
    pub brightness: Option<f64>,
}

impl Default for TransformParams {
    fn default() -> Self {
        TransformParams {
            theta: 0.0,
            tx: 0.0,
            ty: 0.0,
            shear: 0.0,
            zx: 1.0,
            zy: 1.0,
            flip_horizontal: false,
            flip_vertical: false,
            channel_shift_intensity: None,
            brightness: None,
        }
    }
}

pub use crate::layers::{FillMode, Interpolation};

type M3 = [[f64; 3]; 3];

fn mul(a: &M3, b: &M3) -> M3 {
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            r[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    r
}

/// The 3x3 matrix mapping an output pixel `(x, y, 1)` of a `h x w` image to the input position
/// it samples (flips not included).
pub fn affine_matrix(p: &TransformParams, h: usize, w: usize) -> [[f64; 3]; 3] {
    let id: M3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let mut m = id;
    if p.theta != 0.0 {
        let (s, c) = p.theta.to_radians().sin_cos();
        m = mul(&m, &[[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]);
    }
    if p.tx != 0.0 || p.ty != 0.0 {
        m = mul(&m, &[[1.0, 0.0, p.tx], [0.0, 1.0, p.ty], [0.0, 0.0, 1.0]]);
    }
    if p.shear != 0.0 {
        let (s, c) = p.shear.to_radians().sin_cos();
        m = mul(&m, &[[1.0, -s, 0.0], [0.0, c, 0.0], [0.0, 0.0, 1.0]]);
    }
    if p.zx != 1.0 || p.zy != 1.0 {
        m = mul(&m, &[[p.zx, 0.0, 0.0], [0.0, p.zy, 0.0], [0.0, 0.0, 1.0]]);
    }
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let offset = [[1.0, 0.0, cx], [0.0, 1.0, cy], [0.0, 0.0, 1.0]];
    let reset = [[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]];
    mul(&mul(&offset, &m), &reset)
}

/// Maps an integer index to one inside `0..n` by the fill mode, or `None` for constant fill.
#[inline]
fn map_index(i: isize, n: usize, mode: FillMode) -> Option<usize> {
    let n_i = n as isize;
    if (0..n_i).contains(&i) {
        return Some(i as usize);
    }
    match mode {
        FillMode::Constant => None,
        FillMode::Nearest => Some(i.clamp(0, n_i - 1) as usize),
        FillMode::Wrap => Some(i.rem_euclid(n_i) as usize),
        FillMode::Reflect => {
            let r = i.rem_euclid(2 * n_i);
            Some(if r < n_i { r } else { 2 * n_i - 1 - r } as usize)
        }
    }
}

/// SciPy's `wrap` mapping of a coordinate outside `[0, n - 1]` (`map_coordinate` in
/// `ni_interpolation.c`): a period of `n - 1`, with its integer truncation.
#[inline]
fn scipy_wrap(cc: f64, n: usize) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    let sz = (n - 1) as f64;
    if cc < 0.0 {
        cc + sz * ((-cc / sz).trunc() + 1.0)
    } else if cc > sz {
        cc - sz * (cc / sz).trunc()
    } else {
        cc
    }
}

/// One axis of a sample: the two input indices, the weight of the second, or `None` when the
/// point lies outside the input with constant fill.
#[inline]
fn axis_sample(coord: f64, n: usize, mode: FillMode, interp: Interpolation) -> Option<(usize, usize, f32)> {
    const EPS: f64 = 1e-6;
    // SciPy's constant mode: a coordinate outside [0, n - 1] is the constant, for every order
    // (`map_coordinate` returns -1); EPS absorbs rounding in the transform's matrix.
    if mode == FillMode::Constant && (coord < -EPS || coord > n as f64 - 1.0 + EPS) {
        return None;
    }
    // SciPy maps the continuous coordinate for `wrap` before interpolating.
    let (coord, mode) = if mode == FillMode::Wrap { (scipy_wrap(coord, n), FillMode::Nearest) } else { (coord, mode) };
    match interp {
        Interpolation::Nearest => {
            // SciPy's order 0 takes floor(c + 0.5).
            let i = map_index((coord + 0.5).floor() as isize, n, mode).unwrap_or(0);
            Some((i, i, 0.0))
        }
        Interpolation::Bilinear => {
            let f = coord.floor();
            let wgt = (coord - f) as f32;
            let i0 = f as isize;
            let a = map_index(i0, n, mode).unwrap_or(0);
            let b = map_index(i0 + 1, n, mode).unwrap_or(a);
            Some((a, b, wgt))
        }
    }
}

/// Resamples a `h x w x c` image by the whole transform of `p` into `out` (same size):
/// affine (with flips folded into the output coordinates), then channel shift and brightness,
/// in Keras' order.
#[allow(clippy::too_many_arguments)]
pub fn apply_affine(
    img: &[f32],
    (h, w, c): (usize, usize, usize),
    p: &TransformParams,
    mode: FillMode,
    cval: f32,
    interp: Interpolation,
    out: &mut [f32],
) {
    debug_assert_eq!(img.len(), h * w * c);
    debug_assert_eq!(out.len(), h * w * c);
    let m = affine_matrix(p, h, w);
    // Output pixel (x, y) after the flips shows the affine result at (x', y').
    let fx = |x: usize| if p.flip_horizontal { w - 1 - x } else { x };
    let fy = |y: usize| if p.flip_vertical { h - 1 - y } else { y };
    let pure_shift = m[0][0] == 1.0 && m[0][1] == 0.0 && m[1][0] == 0.0 && m[1][1] == 1.0;
    if pure_shift {
        // Separable: each output column reads the same two input columns with the same weight.
        let cols: Vec<Option<(usize, usize, f32)>> =
            (0..w).map(|x| axis_sample(fx(x) as f64 + m[0][2], w, mode, interp)).collect();
        for y in 0..h {
            let row = &mut out[y * w * c..(y + 1) * w * c];
            let Some((r0, r1, wy)) = axis_sample(fy(y) as f64 + m[1][2], h, mode, interp) else {
                row.fill(cval);
                continue;
            };
            let (s0, s1) = (&img[r0 * w * c..(r0 + 1) * w * c], &img[r1 * w * c..(r1 + 1) * w * c]);
            for (x, col) in cols.iter().enumerate() {
                let o = &mut row[x * c..(x + 1) * c];
                match *col {
                    None => o.fill(cval),
                    Some((c0, c1, wx)) => {
                        for ch in 0..c {
                            let top = s0[c0 * c + ch] + wx * (s0[c1 * c + ch] - s0[c0 * c + ch]);
                            let bot = s1[c0 * c + ch] + wx * (s1[c1 * c + ch] - s1[c0 * c + ch]);
                            o[ch] = top + wy * (bot - top);
                        }
                    }
                }
            }
        }
    } else {
        for y in 0..h {
            let yy = fy(y) as f64;
            for x in 0..w {
                let xx = fx(x) as f64;
                let sx = m[0][0] * xx + m[0][1] * yy + m[0][2];
                let sy = m[1][0] * xx + m[1][1] * yy + m[1][2];
                let o = &mut out[(y * w + x) * c..(y * w + x + 1) * c];
                match (axis_sample(sx, w, mode, interp), axis_sample(sy, h, mode, interp)) {
                    (Some((c0, c1, wx)), Some((r0, r1, wy))) => {
                        let (p00, p01) = ((r0 * w + c0) * c, (r0 * w + c1) * c);
                        let (p10, p11) = ((r1 * w + c0) * c, (r1 * w + c1) * c);
                        for ch in 0..c {
                            let top = img[p00 + ch] + wx * (img[p01 + ch] - img[p00 + ch]);
                            let bot = img[p10 + ch] + wx * (img[p11 + ch] - img[p10 + ch]);
                            o[ch] = top + wy * (bot - top);
                        }
                    }
                    _ => o.fill(cval),
                }
            }
        }
    }
    if let Some(intensity) = p.channel_shift_intensity {
        let (lo, hi) = out.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        out.iter_mut().for_each(|v| *v = (*v + intensity as f32).clamp(lo, hi));
    }
    if let Some(b) = p.brightness {
        let b = b as f32;
        out.iter_mut().for_each(|v| *v = (*v * b).clamp(0.0, 255.0f32.max(*v)));
    }
}
