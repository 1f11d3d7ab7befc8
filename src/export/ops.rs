//! Small ONNX subgraphs the layers are written with: activations, convolutions, TensorFlow's
//! `same` padding, resizing and cropping of channels-first images, Keras' general ReLU.

use super::builder::{attr_float, attr_int, attr_ints, attr_str, Builder, Val};
use crate::error::{Error, Result};
use candle_core::Tensor;

/// `((top, bottom), (left, right))` of TensorFlow's `same` padding for a window of `k` at
/// stride `s` and dilation `d` over `n` values (the odd one at the end).
pub(crate) fn same_pads(n: usize, k: usize, s: usize, d: usize) -> (usize, usize) {
    let out = n.div_ceil(s);
    let eff = (k - 1) * d + 1;
    let total = ((out.saturating_sub(1)) * s + eff).saturating_sub(n);
    (total / 2, total - total / 2)
}

/// ONNX's `pads` (`[top, left, bottom, right]`) for a window over an image of Keras shape
/// `shape`.
pub(crate) fn window_pads(
    padding: &str,
    shape: &[usize],
    k: (usize, usize),
    s: (usize, usize),
    d: (usize, usize),
) -> Vec<i64> {
    if padding != "same" {
        return vec![0; 4];
    }
    let (t, b) = same_pads(shape[0], k.0, s.0, d.0);
    let (l, r) = same_pads(shape[1], k.1, s.1, d.1);
    [t, l, b, r].iter().map(|&p| p as i64).collect()
}

pub(crate) fn ints(v: (usize, usize)) -> [i64; 2] {
    [v.0 as i64, v.1 as i64]
}

/// Keras' activation `name` on `x`.
pub(crate) fn activation(b: &mut Builder, x: Val, name: &str, hint: &str) -> Result<Val> {
    let un = |b: &mut Builder, op: &str, x: &Val, attrs| Val {
        name: b.node(op, &format!("{hint}/{op}"), &[&x.name], attrs),
        ..x.clone()
    };
    Ok(match name {
        "linear" => x,
        "relu" => un(b, "Relu", &x, Vec::new()),
        "sigmoid" => un(b, "Sigmoid", &x, Vec::new()),
        "tanh" => un(b, "Tanh", &x, Vec::new()),
        "softplus" => un(b, "Softplus", &x, Vec::new()),
        "elu" => un(b, "Elu", &x, vec![attr_float("alpha", 1.0)]),
        "selu" => un(b, "Selu", &x, vec![attr_float("alpha", 1.673_263_2), attr_float("gamma", 1.050_701)]),
        "hard_sigmoid" => un(b, "HardSigmoid", &x, vec![attr_float("alpha", 1.0 / 6.0), attr_float("beta", 0.5)]),
        "softmax" => {
            let x = b.keras(&x);
            un(b, "Softmax", &x, vec![attr_int("axis", -1)])
        }
        "relu6" => clip(b, x, 0.0, Some(6.0), hint),
        "silu" | "swish" => {
            let s = b.node("Sigmoid", &format!("{hint}/Sigmoid"), &[&x.name], Vec::new());
            Val { name: b.node("Mul", &format!("{hint}/silu"), &[&x.name, &s], Vec::new()), ..x }
        }
        "gelu" => {
            // 0.5 x (1 + erf(x / sqrt(2))), Keras' exact GELU.
            let r2 = b.scalar(&format!("{hint}/sqrt2"), std::f32::consts::SQRT_2);
            let d = b.node("Div", &format!("{hint}/gelu_div"), &[&x.name, &r2], Vec::new());
            let e = b.node("Erf", &format!("{hint}/gelu_erf"), &[&d], Vec::new());
            let one = b.scalar(&format!("{hint}/one"), 1.0);
            let p = b.node("Add", &format!("{hint}/gelu_add"), &[&e, &one], Vec::new());
            let half = b.scalar(&format!("{hint}/half"), 0.5);
            let hx = b.node("Mul", &format!("{hint}/gelu_half"), &[&x.name, &half], Vec::new());
            Val { name: b.node("Mul", &format!("{hint}/gelu"), &[&hx, &p], Vec::new()), ..x }
        }
        other => return Err(Error::invalid("model", format!("{hint}: activation {other:?} has no ONNX mapping"))),
    })
}

/// `min(max(x, lo), hi)`.
pub(crate) fn clip(b: &mut Builder, x: Val, lo: f32, hi: Option<f32>, hint: &str) -> Val {
    let lo = b.scalar(&format!("{hint}/min"), lo);
    let mut inputs = vec![x.name.clone(), lo];
    if let Some(hi) = hi {
        inputs.push(b.scalar(&format!("{hint}/max"), hi));
    }
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    Val { name: b.node("Clip", &format!("{hint}/Clip"), &refs, Vec::new()), ..x }
}

pub(crate) fn binary(b: &mut Builder, op: &str, hint: &str, x: &Val, y: &str) -> Val {
    Val { name: b.node(op, &format!("{hint}/{op}"), &[&x.name, y], Vec::new()), ..x.clone() }
}

/// A 2-D convolution on channels-first `x` (weights `w` as ONNX's `(M, C/group, kh, kw)`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv(
    b: &mut Builder,
    hint: &str,
    x: &Val,
    w: &str,
    bias: Option<&str>,
    k: (usize, usize),
    s: (usize, usize),
    d: (usize, usize),
    pads: &[i64],
    group: usize,
    out_shape: &[usize],
) -> Val {
    let mut inputs = vec![x.name.as_str(), w];
    if let Some(bias) = bias {
        inputs.push(bias);
    }
    let attrs = vec![
        attr_ints("kernel_shape", &ints(k)),
        attr_ints("strides", &ints(s)),
        attr_ints("dilations", &ints(d)),
        attr_ints("pads", pads),
        attr_int("group", group as i64),
    ];
    Val { name: b.node("Conv", &format!("{hint}/Conv"), &inputs, attrs), shape: out_shape.to_vec(), nchw: true }
}

/// A depthwise kernel `(kh, kw, C, m)` as ONNX's grouped weights `(C m, 1, kh, kw)` (output
/// channel `c m + j` is input channel `c`'s `j`-th filter, as Keras orders them).
pub(crate) fn depthwise_weights(t: &Tensor) -> Result<Tensor> {
    let (kh, kw, c, m) = t.dims4()?;
    Ok(t.reshape((kh, kw, c * m))?.permute((2, 0, 1))?.reshape((c * m, 1, kh, kw))?.contiguous()?)
}

/// `ReduceMean(x)` over `axes`, kept (an attribute before opset 18, an input since).
pub(crate) fn reduce_mean(b: &mut Builder, hint: &str, x: &str, axes: &[i64]) -> String {
    if b.opset >= 18 {
        let a = b.i64_const(&format!("{hint}/axes"), axes);
        b.node("ReduceMean", hint, &[x, &a], vec![attr_int("keepdims", 1)])
    } else {
        b.node("ReduceMean", hint, &[x], vec![attr_ints("axes", axes), attr_int("keepdims", 1)])
    }
}

/// `x` resized to `(h, w)` (channels first), TensorFlow's `tf.image.resize` (half-pixel
/// centres, no antialiasing): the output size from the input's batch and channels and the
/// target, so that the batch stays free.
pub(crate) fn resize(
    b: &mut Builder,
    hint: &str,
    x: &Val,
    (h, w): (usize, usize),
    nearest: bool,
    out_shape: Vec<usize>,
) -> Val {
    let shape = b.node("Shape", &format!("{hint}/shape"), &[&x.name], Vec::new());
    let (s, e) = (b.i64_const(&format!("{hint}/zero"), &[0]), b.i64_const(&format!("{hint}/two"), &[2]));
    let nc = b.node("Slice", &format!("{hint}/nc"), &[&shape, &s, &e], Vec::new());
    let hw = b.i64_const(&format!("{hint}/hw"), &[h as i64, w as i64]);
    let sizes = b.node("Concat", &format!("{hint}/sizes"), &[&nc, &hw], vec![attr_int("axis", 0)]);
    let mut attrs = vec![attr_str("coordinate_transformation_mode", "half_pixel")];
    if nearest {
        attrs.push(attr_str("mode", "nearest"));
        attrs.push(attr_str("nearest_mode", "round_prefer_ceil"));
    } else {
        attrs.push(attr_str("mode", "linear"));
    }
    Val {
        name: b.node("Resize", &format!("{hint}/Resize"), &[&x.name, "", "", &sizes], attrs),
        shape: out_shape,
        nchw: true,
    }
}

/// Rows `top..top+h`, columns `left..left+w` of channels-first `x`.
pub(crate) fn crop(b: &mut Builder, hint: &str, x: &Val, (top, left): (usize, usize), (h, w): (usize, usize)) -> Val {
    let c = x.shape[2];
    if (top, left, h, w) == (0, 0, x.shape[0], x.shape[1]) {
        return x.clone();
    }
    let starts = b.i64_const(&format!("{hint}/starts"), &[top as i64, left as i64]);
    let ends = b.i64_const(&format!("{hint}/ends"), &[(top + h) as i64, (left + w) as i64]);
    let axes = b.i64_const(&format!("{hint}/axes"), &[2, 3]);
    let name = b.node("Slice", &format!("{hint}/Slice"), &[&x.name, &starts, &ends, &axes], Vec::new());
    Val { name, shape: vec![h, w, c], nchw: true }
}

/// Keras' `relu(x, negative_slope, max_value, threshold)`.
pub(crate) fn relu(b: &mut Builder, h: &str, x: Val, max: Option<f32>, slope: f32, threshold: f32) -> Val {
    if threshold == 0.0 && slope == 0.0 {
        return match max {
            None => Val { name: b.node("Relu", &format!("{h}/Relu"), &[&x.name], Vec::new()), ..x },
            Some(m) => clip(b, x, 0.0, Some(m), h),
        };
    }
    if threshold == 0.0 && max.is_none() {
        return Val {
            name: b.node("LeakyRelu", &format!("{h}/LeakyRelu"), &[&x.name], vec![attr_float("alpha", slope)]),
            ..x
        };
    }
    // x * (x > threshold), clipped to [0, max], minus slope * relu(threshold - x).
    let t = b.scalar(&format!("{h}/threshold"), threshold);
    let above = b.node("Greater", &format!("{h}/above"), &[&x.name, &t], Vec::new());
    let mask = b.node("Cast", &format!("{h}/mask"), &[&above], vec![attr_int("to", 1)]);
    let mut pos = Val { name: b.node("Mul", &format!("{h}/positive"), &[&x.name, &mask], Vec::new()), ..x.clone() };
    if let Some(m) = max {
        pos = clip(b, pos, 0.0, Some(m), h);
    }
    if slope == 0.0 {
        return pos;
    }
    let under = b.node("Sub", &format!("{h}/under"), &[&t, &x.name], Vec::new());
    let neg = b.node("Relu", &format!("{h}/negative"), &[&under], Vec::new());
    let s = b.scalar(&format!("{h}/slope"), slope);
    let sn = b.node("Mul", &format!("{h}/slope_neg"), &[&neg, &s], Vec::new());
    binary(b, "Sub", h, &pos, &sn)
}
