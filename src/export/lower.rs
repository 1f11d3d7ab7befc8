//! Each layer class as ONNX operators, in inference mode: what `Layer::forward(x, false)`
//! computes, written with standard operators of the default domain.

use super::builder::{attr_float, attr_int, attr_ints, attr_str, Builder, Val};
use super::ops::{
    activation, binary, conv, crop, depthwise_weights, ints, reduce_mean, relu, resize, same_pads, window_pads,
};
use super::{ExportOptions, FlatNode, OnnxLayer};
use crate::error::{Error, Result};
use candle_core::Tensor;
use serde_json::Value;

fn refuse(node: &FlatNode, why: impl std::fmt::Display) -> Error {
    Error::invalid("model", format!("layer {} ({}) cannot be exported to ONNX: {why}", node.name, node.class))
}

fn weight<'a>(node: &'a FlatNode, name: &str) -> Option<&'a Tensor> {
    node.weights.iter().find(|(n, _)| n == name).map(|(_, t)| t)
}

fn need<'a>(node: &'a FlatNode, name: &str) -> Result<&'a Tensor> {
    weight(node, name).ok_or_else(|| refuse(node, format!("it has no weight {name:?} (is it built?)")))
}

fn pair(node: &FlatNode, key: &str) -> Result<(usize, usize)> {
    let v = &node.config[key];
    let n = |x: &Value| x.as_u64().map(|u| u as usize);
    match v {
        Value::Array(a) if a.len() == 2 => match (n(&a[0]), n(&a[1])) {
            (Some(x), Some(y)) => Ok((x, y)),
            _ => Err(refuse(node, format!("cannot read {key} = {v}"))),
        },
        _ => n(v).map(|x| (x, x)).ok_or_else(|| refuse(node, format!("cannot read {key} = {v}"))),
    }
}

fn f64_of(node: &FlatNode, key: &str, default: f64) -> Result<f64> {
    match &node.config[key] {
        Value::Null => Ok(default),
        v => v.as_f64().ok_or_else(|| refuse(node, format!("cannot read {key} = {v}"))),
    }
}

fn str_of<'a>(node: &'a FlatNode, key: &str, default: &'a str) -> &'a str {
    node.config[key].as_str().unwrap_or(default)
}

fn with_activation(b: &mut Builder, node: &FlatNode, x: Val) -> Result<Val> {
    activation(b, x, str_of(node, "activation", "linear"), &node.name)
}

fn bias_const(b: &mut Builder, node: &FlatNode) -> Result<Option<String>> {
    weight(node, "bias").map(|t| b.tensor_const(&format!("{}/bias", node.name), t)).transpose()
}

/// The Keras axis `axis` of a value of `rank` Keras axes (plus the batch), from 0 (the batch).
fn keras_axis(node: &FlatNode, axis: i64, rank: usize) -> Result<usize> {
    let full = rank as i64 + 1;
    let a = if axis < 0 { axis + full } else { axis };
    if a <= 0 || a >= full {
        return Err(refuse(node, format!("axis {axis} is outside its input of {rank} axes (and the batch)")));
    }
    Ok(a as usize)
}

fn axes_of(node: &FlatNode, key: &str, rank: usize) -> Result<Vec<usize>> {
    match &node.config[key] {
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_i64().ok_or_else(|| refuse(node, format!("cannot read {key} = {v}"))))
            .map(|a| a.and_then(|a| keras_axis(node, a, rank)))
            .collect(),
        Value::Null => Ok(Vec::new()),
        v => keras_axis(node, v.as_i64().ok_or_else(|| refuse(node, format!("cannot read {key} = {v}")))?, rank)
            .map(|a| vec![a]),
    }
}

/// The node's operators; its output.
pub(crate) fn lower(b: &mut Builder, node: &FlatNode, inputs: Vec<Val>, options: &ExportOptions) -> Result<Val> {
    if let Some(mapping) = options.mappings.get(&node.class) {
        let keras: Vec<Val> = inputs.iter().map(|v| b.keras(v)).collect();
        let mut layer = OnnxLayer {
            input_shapes: keras.iter().map(|v| v.shape.clone()).collect(),
            inputs: keras.into_iter().map(|v| v.name).collect(),
            builder: b,
            node,
        };
        let name = mapping(&mut layer)?;
        return Ok(Val { name, shape: node.output_shape.clone(), nchw: false });
    }
    let h = node.name.as_str();
    let out_shape = node.output_shape.clone();
    let one = |inputs: &[Val]| -> Result<Val> {
        match inputs {
            [x] => Ok(x.clone()),
            _ => Err(refuse(node, format!("expected one input, received {}", inputs.len()))),
        }
    };
    let class = node.class.as_str();
    let trains_differently =
        matches!(class, "Dropout" | "SpatialDropout2D" | "BatchNormalization") || class.starts_with("Random");
    if node.training == Some(true) && trains_differently {
        return Err(refuse(node, "it is called with training=True, and an ONNX file runs inference only"));
    }
    Ok(match class {
        "InputLayer" | "Dropout" | "SpatialDropout2D" | "RandomFlip" | "RandomRotation" | "RandomTranslation"
        | "RandomZoom" | "RandomContrast" | "RandomBrightness" | "RandomCrop" => {
            if class == "RandomCrop" {
                // At inference RandomCrop resizes the largest centered window of its aspect
                // ratio to its size (Keras' smart resize), whatever the image's size.
                return Ok(smart_resize(b, node, one(&inputs)?));
            }
            one(&inputs)?
        }
        "Conv2D" => {
            let x = b.nchw(&one(&inputs)?);
            let kernel = need(node, "kernel")?;
            let w = b.tensor_const(&format!("{h}/kernel"), &kernel.permute((3, 2, 0, 1))?.contiguous()?)?;
            let bias = bias_const(b, node)?;
            let (k, s, d) = (pair(node, "kernel_size")?, pair(node, "strides")?, pair(node, "dilation_rate")?);
            let pads = window_pads(str_of(node, "padding", "valid"), &x.shape, k, s, d);
            let y = conv(b, h, &x, &w, bias.as_deref(), k, s, d, &pads, 1, &out_shape);
            with_activation(b, node, y)?
        }
        "DepthwiseConv2D" => {
            let x = b.nchw(&one(&inputs)?);
            let w = b.tensor_const(&format!("{h}/kernel"), &depthwise_weights(need(node, "kernel")?)?)?;
            let bias = bias_const(b, node)?;
            let (k, s, d) = (pair(node, "kernel_size")?, pair(node, "strides")?, pair(node, "dilation_rate")?);
            let pads = window_pads(str_of(node, "padding", "valid"), &x.shape, k, s, d);
            let y = conv(b, h, &x, &w, bias.as_deref(), k, s, d, &pads, x.shape[2], &out_shape);
            with_activation(b, node, y)?
        }
        "SeparableConv2D" => {
            let x = b.nchw(&one(&inputs)?);
            let dw = need(node, "depthwise_kernel")?;
            let m = dw.dims4()?.3;
            let w = b.tensor_const(&format!("{h}/depthwise_kernel"), &depthwise_weights(dw)?)?;
            let (k, s, d) = (pair(node, "kernel_size")?, pair(node, "strides")?, pair(node, "dilation_rate")?);
            let pads = window_pads(str_of(node, "padding", "valid"), &x.shape, k, s, d);
            let mid = [out_shape[0], out_shape[1], x.shape[2] * m];
            let y = conv(b, &format!("{h}/depthwise"), &x, &w, None, k, s, d, &pads, x.shape[2], &mid);
            let pw = need(node, "pointwise_kernel")?.permute((3, 2, 0, 1))?.contiguous()?;
            let pw = b.tensor_const(&format!("{h}/pointwise_kernel"), &pw)?;
            let bias = bias_const(b, node)?;
            let y = conv(
                b,
                &format!("{h}/pointwise"),
                &y,
                &pw,
                bias.as_deref(),
                (1, 1),
                (1, 1),
                (1, 1),
                &[0; 4],
                1,
                &out_shape,
            );
            with_activation(b, node, y)?
        }
        "Conv2DTranspose" => {
            let x = b.nchw(&one(&inputs)?);
            // Keras' (kh, kw, out, in) as ONNX's (in, out, kh, kw).
            let kernel = need(node, "kernel")?;
            let w = b.tensor_const(&format!("{h}/kernel"), &kernel.permute((3, 2, 0, 1))?.contiguous()?)?;
            let bias = bias_const(b, node)?;
            let (k, s) = (pair(node, "kernel_size")?, pair(node, "strides")?);
            let same = str_of(node, "padding", "valid") == "same";
            // TensorFlow's transposed convolution is the gradient of the convolution of the
            // output: its padding at the start is that convolution's; the end makes the size.
            let mut pads = [0i64; 4];
            let mut extra = [0i64; 2];
            for (a, (&n, &o)) in x.shape[..2].iter().zip(&out_shape[..2]).enumerate() {
                let (kk, ss) = if a == 0 { (k.0, s.0) } else { (k.1, s.1) };
                let begin = if same { same_pads(o, kk, ss, 1).0 as i64 } else { 0 };
                let end = ((n - 1) * ss + kk) as i64 - o as i64 - begin;
                pads[a] = begin;
                if end >= 0 {
                    pads[a + 2] = end;
                } else {
                    extra[a] = -end;
                }
            }
            let mut ins = vec![x.name.as_str(), w.as_str()];
            if let Some(bias) = bias.as_deref() {
                ins.push(bias);
            }
            let attrs = vec![
                attr_ints("kernel_shape", &ints(k)),
                attr_ints("strides", &ints(s)),
                attr_ints("pads", &pads),
                attr_ints("output_padding", &extra),
            ];
            let y = Val {
                name: b.node("ConvTranspose", &format!("{h}/ConvTranspose"), &ins, attrs),
                shape: out_shape,
                nchw: true,
            };
            with_activation(b, node, y)?
        }
        "Dense" => {
            let x = b.keras(&one(&inputs)?);
            let kernel = b.tensor_const(&format!("{h}/kernel"), need(node, "kernel")?)?;
            let mut y = Val {
                name: b.node("MatMul", &format!("{h}/MatMul"), &[&x.name, &kernel], Vec::new()),
                shape: out_shape,
                nchw: false,
            };
            if let Some(bias) = bias_const(b, node)? {
                y = binary(b, "Add", h, &y, &bias);
            }
            with_activation(b, node, y)?
        }
        "MaxPooling2D" | "AveragePooling2D" => {
            let x = b.nchw(&one(&inputs)?);
            let (k, s) = (pair(node, "pool_size")?, pair(node, "strides")?);
            let pads = window_pads(str_of(node, "padding", "valid"), &x.shape, k, s, (1, 1));
            let op = if class == "MaxPooling2D" { "MaxPool" } else { "AveragePool" };
            let attrs =
                vec![attr_ints("kernel_shape", &ints(k)), attr_ints("strides", &ints(s)), attr_ints("pads", &pads)];
            Val { name: b.node(op, &format!("{h}/{op}"), &[&x.name], attrs), shape: out_shape, nchw: true }
        }
        "GlobalAveragePooling2D" | "GlobalMaxPooling2D" => {
            let x = b.nchw(&one(&inputs)?);
            let op = if class == "GlobalMaxPooling2D" { "GlobalMaxPool" } else { "GlobalAveragePool" };
            let y = b.node(op, &format!("{h}/{op}"), &[&x.name], Vec::new());
            if node.config["keepdims"].as_bool().unwrap_or(false) {
                Val { name: y, shape: out_shape, nchw: true }
            } else {
                Val {
                    name: b.node("Flatten", &format!("{h}/Flatten"), &[&y], vec![attr_int("axis", 1)]),
                    shape: out_shape,
                    nchw: false,
                }
            }
        }
        "BatchNormalization" => {
            // Folded: x * gamma / sqrt(var + eps) + (beta - mean * gamma / sqrt(var + eps)).
            let x = one(&inputs)?;
            let eps = f64_of(node, "epsilon", 1e-3)?;
            let vec = |t: Option<&Tensor>| -> Result<Option<Vec<f64>>> {
                Ok(match t {
                    Some(t) => Some(t.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1::<f64>()?),
                    None => None,
                })
            };
            let mean = vec(Some(need(node, "moving_mean")?))?.unwrap_or_default();
            let var = vec(Some(need(node, "moving_variance")?))?.unwrap_or_default();
            let gamma = vec(weight(node, "gamma"))?;
            let beta = vec(weight(node, "beta"))?;
            let mut scale = Vec::with_capacity(mean.len());
            let mut shift = Vec::with_capacity(mean.len());
            for c in 0..mean.len() {
                let s = gamma.as_ref().map_or(1.0, |g| g[c]) / (var[c] + eps).sqrt();
                scale.push(s as f32);
                shift.push((beta.as_ref().map_or(0.0, |b| b[c]) - mean[c] * s) as f32);
            }
            let dims = Builder::channel_dims(&x);
            let sc = b.f32_const(&format!("{h}/scale"), &dims, &scale);
            let sh = b.f32_const(&format!("{h}/shift"), &dims, &shift);
            let y = binary(b, "Mul", h, &x, &sc);
            binary(b, "Add", h, &y, &sh)
        }
        "LayerNormalization" => {
            let x = b.keras(&one(&inputs)?);
            let rank = x.shape.len();
            let axes = axes_of(node, "axis", rank)?;
            let ax: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
            let eps = f64_of(node, "epsilon", 1e-3)? as f32;
            let mean = reduce_mean(b, &format!("{h}/mean"), &x.name, &ax);
            let d = b.node("Sub", &format!("{h}/centered"), &[&x.name, &mean], Vec::new());
            let sq = b.node("Mul", &format!("{h}/squared"), &[&d, &d], Vec::new());
            let var = reduce_mean(b, &format!("{h}/variance"), &sq, &ax);
            let e = b.scalar(&format!("{h}/epsilon"), eps);
            let ve = b.node("Add", &format!("{h}/var_eps"), &[&var, &e], Vec::new());
            let sd = b.node("Sqrt", &format!("{h}/std"), &[&ve], Vec::new());
            let mut y = Val { name: b.node("Div", &format!("{h}/normalized"), &[&d, &sd], Vec::new()), ..x.clone() };
            let dims: Vec<usize> = (1..=rank).map(|a| if axes.contains(&a) { x.shape[a - 1] } else { 1 }).collect();
            for (w, op) in [("gamma", "Mul"), ("beta", "Add")] {
                if let Some(t) = weight(node, w) {
                    let c = b.tensor_const(&format!("{h}/{w}"), &t.reshape(dims.as_slice())?)?;
                    y = binary(b, op, h, &y, &c);
                }
            }
            y
        }
        "Normalization" => {
            let x = one(&inputs)?;
            let rank = x.shape.len();
            let axes = axes_of(node, "axis", rank)?;
            let read = |key: &str| -> Result<Vec<f64>> {
                if let Some(t) = weight(node, key) {
                    return Ok(t.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1::<f64>()?);
                }
                match &node.config[key] {
                    Value::Array(a) => Ok(a.iter().filter_map(Value::as_f64).collect()),
                    v => v
                        .as_f64()
                        .map(|f| vec![f])
                        .ok_or_else(|| refuse(node, format!("it has no {key} (adapt it first)"))),
                }
            };
            let (mean, var) = (read("mean")?, read("variance")?);
            // Keras: (x - mean) / max(sqrt(variance), epsilon), in the input's f32.
            let std: Vec<f32> = var.iter().map(|&v| (v as f32).sqrt().max(1e-7)).collect();
            let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
            let (x, dims) = match axes.as_slice() {
                [a] if *a == rank && x.nchw => (x.clone(), Builder::channel_dims(&x)),
                _ => {
                    let x = b.keras(&x);
                    let dims = (1..=rank).map(|a| if axes.contains(&a) { x.shape[a - 1] } else { 1 }).collect();
                    (x, dims)
                }
            };
            let dims: Vec<usize> = if mean.len() == 1 { vec![] } else { dims };
            let m = b.f32_const(&format!("{h}/mean"), &dims, &mean);
            let s = b.f32_const(&format!("{h}/std"), &dims, &std);
            if node.config["invert"].as_bool().unwrap_or(false) {
                let y = binary(b, "Mul", h, &x, &s);
                binary(b, "Add", h, &y, &m)
            } else {
                let y = binary(b, "Sub", h, &x, &m);
                binary(b, "Div", h, &y, &s)
            }
        }
        "Rescaling" => {
            let x = one(&inputs)?;
            let scale: Vec<f32> = match &node.config["scale"] {
                Value::Array(a) => a.iter().filter_map(Value::as_f64).map(|v| v as f32).collect(),
                v => vec![v.as_f64().ok_or_else(|| refuse(node, format!("cannot read scale = {v}")))? as f32],
            };
            let offset = f64_of(node, "offset", 0.0)? as f32;
            let dims = if scale.len() == 1 { vec![] } else { Builder::channel_dims(&x) };
            let s = b.f32_const(&format!("{h}/scale"), &dims, &scale);
            let y = binary(b, "Mul", h, &x, &s);
            if offset == 0.0 {
                y
            } else {
                let o = b.scalar(&format!("{h}/offset"), offset);
                binary(b, "Add", h, &y, &o)
            }
        }
        "Activation" => with_activation(b, node, one(&inputs)?)?,
        "Softmax" => {
            let x = b.keras(&one(&inputs)?);
            let axes = axes_of(node, "axis", x.shape.len())?;
            let [axis] = axes[..] else {
                return Err(refuse(node, format!("a softmax over several axes ({:?}) has no one ONNX operator", axes)));
            };
            Val {
                name: b.node("Softmax", &format!("{h}/Softmax"), &[&x.name], vec![attr_int("axis", axis as i64)]),
                ..x
            }
        }
        "ReLU" => {
            let x = one(&inputs)?;
            let max = node.config["max_value"].as_f64().map(|m| m as f32);
            let slope = f64_of(node, "negative_slope", 0.0)? as f32;
            let threshold = f64_of(node, "threshold", 0.0)? as f32;
            relu(b, h, x, max, slope, threshold)
        }
        "LeakyReLU" => {
            let x = one(&inputs)?;
            let slope = f64_of(node, "negative_slope", 0.3)? as f32;
            Val {
                name: b.node("LeakyRelu", &format!("{h}/LeakyRelu"), &[&x.name], vec![attr_float("alpha", slope)]),
                ..x
            }
        }
        "Flatten" => {
            let x = b.keras(&one(&inputs)?);
            Val {
                name: b.node("Flatten", &format!("{h}/Flatten"), &[&x.name], vec![attr_int("axis", 1)]),
                shape: out_shape,
                nchw: false,
            }
        }
        "Reshape" => {
            let x = b.keras(&one(&inputs)?);
            let target: Vec<i64> = std::iter::once(0).chain(out_shape.iter().map(|&d| d as i64)).collect();
            let t = b.i64_const(&format!("{h}/shape"), &target);
            Val {
                name: b.node("Reshape", &format!("{h}/Reshape"), &[&x.name, &t], Vec::new()),
                shape: out_shape,
                nchw: false,
            }
        }
        "ZeroPadding2D" | "Cropping2D" => {
            let x = b.nchw(&one(&inputs)?);
            let key = if class == "ZeroPadding2D" { "padding" } else { "cropping" };
            let v = &node.config[key];
            let p = |i: usize, j: usize| {
                v[i][j].as_u64().map(|u| u as usize).ok_or_else(|| refuse(node, format!("cannot read {key} = {v}")))
            };
            let (t, bo, l, r) = (p(0, 0)?, p(0, 1)?, p(1, 0)?, p(1, 1)?);
            if class == "Cropping2D" {
                let hh = x.shape[0] - t - bo;
                let ww = x.shape[1] - l - r;
                crop(b, h, &x, (t, l), (hh, ww))
            } else {
                let pads = b.i64_const(&format!("{h}/pads"), &[0, 0, t as i64, l as i64, 0, 0, bo as i64, r as i64]);
                Val {
                    name: b.node("Pad", &format!("{h}/Pad"), &[&x.name, &pads], vec![attr_str("mode", "constant")]),
                    shape: out_shape,
                    nchw: true,
                }
            }
        }
        "UpSampling2D" => {
            let x = b.nchw(&one(&inputs)?);
            let nearest = str_of(node, "interpolation", "nearest") == "nearest";
            if nearest {
                let (sh, sw) = pair(node, "size")?;
                let scales = b.f32_const(&format!("{h}/scales"), &[4], &[1.0, 1.0, sh as f32, sw as f32]);
                let attrs = vec![
                    attr_str("mode", "nearest"),
                    attr_str("coordinate_transformation_mode", "asymmetric"),
                    attr_str("nearest_mode", "floor"),
                ];
                Val {
                    name: b.node("Resize", &format!("{h}/Resize"), &[&x.name, "", &scales], attrs),
                    shape: out_shape,
                    nchw: true,
                }
            } else {
                resize(b, h, &x, (out_shape[0], out_shape[1]), false, out_shape.clone())
            }
        }
        "Resizing" => {
            let x = b.nchw(&one(&inputs)?);
            let target = (out_shape[0], out_shape[1]);
            let x = if node.config["crop_to_aspect_ratio"].as_bool().unwrap_or(false) {
                let (top, left, ch, cw) = crate::layers::aspect_window((x.shape[0], x.shape[1]), target);
                crop(b, &format!("{h}/crop"), &x, (top, left), (ch, cw))
            } else {
                x
            };
            let nearest = str_of(node, "interpolation", "bilinear") == "nearest";
            resize(b, h, &x, target, nearest, out_shape)
        }
        "CenterCrop" => center_crop(b, node, one(&inputs)?)?,
        "Add" | "Subtract" | "Multiply" | "Average" | "Maximum" | "Minimum" => merge(b, node, inputs)?,
        "Concatenate" => {
            if inputs.is_empty() {
                return Err(refuse(node, "it has no input"));
            }
            let rank = inputs[0].shape.len();
            let axis = keras_axis(node, node.config["axis"].as_i64().unwrap_or(-1), rank)?;
            let nchw = rank == 3 && inputs.iter().all(|v| v.nchw);
            let vals: Vec<Val> = inputs.iter().map(|v| if nchw { v.clone() } else { b.keras(v) }).collect();
            let onnx_axis = if nchw { [0, 2, 3, 1][axis] } else { axis };
            let names: Vec<&str> = vals.iter().map(|v| v.name.as_str()).collect();
            Val {
                name: b.node("Concat", &format!("{h}/Concat"), &names, vec![attr_int("axis", onnx_axis as i64)]),
                shape: out_shape,
                nchw,
            }
        }
        _ => {
            return Err(refuse(
                node,
                "kandle has no ONNX mapping for this class: give one with ExportOptions::layer_mapping",
            ))
        }
    })
}

fn center_crop(b: &mut Builder, node: &FlatNode, x: Val) -> Result<Val> {
    let x = b.nchw(&x);
    let (th, tw) = (node.output_shape[0], node.output_shape[1]);
    let (hh, ww) = (x.shape[0], x.shape[1]);
    if hh >= th && ww >= tw {
        return Ok(crop(b, &node.name, &x, ((hh - th) / 2, (ww - tw) / 2), (th, tw)));
    }
    Ok(smart_resize(b, node, x))
}

/// Keras' `smart_resize`: the largest centered window of the output's aspect ratio, resized to
/// the output's size (bilinear, half-pixel).
fn smart_resize(b: &mut Builder, node: &FlatNode, x: Val) -> Val {
    let x = b.nchw(&x);
    let (th, tw) = (node.output_shape[0], node.output_shape[1]);
    let (top, left, ch, cw) = crate::layers::aspect_window((x.shape[0], x.shape[1]), (th, tw));
    let x = crop(b, &format!("{}/crop", node.name), &x, (top, left), (ch, cw));
    if (ch, cw) == (th, tw) {
        return x;
    }
    resize(b, &node.name, &x, (th, tw), false, node.output_shape.clone())
}

fn merge(b: &mut Builder, node: &FlatNode, inputs: Vec<Val>) -> Result<Val> {
    let h = node.name.as_str();
    if inputs.len() < 2 {
        return Err(refuse(node, format!("expected at least 2 inputs, received {}", inputs.len())));
    }
    // Channels first only when every input is an image held so; otherwise as Keras holds
    // them, where ONNX's broadcasting is Keras'.
    let nchw = inputs.iter().all(|v| v.shape.len() == 3 && v.nchw);
    let vals: Vec<Val> = inputs.iter().map(|v| if nchw { v.clone() } else { b.keras(v) }).collect();
    let out = |name: String| Val { name, shape: node.output_shape.clone(), nchw };
    let names: Vec<&str> = vals.iter().map(|v| v.name.as_str()).collect();
    Ok(match node.class.as_str() {
        "Add" => out(b.node("Sum", &format!("{h}/Sum"), &names, Vec::new())),
        "Maximum" => out(b.node("Max", &format!("{h}/Max"), &names, Vec::new())),
        "Minimum" => out(b.node("Min", &format!("{h}/Min"), &names, Vec::new())),
        "Average" => {
            let s = b.node("Sum", &format!("{h}/Sum"), &names, Vec::new());
            let n = b.scalar(&format!("{h}/count"), 1.0 / vals.len() as f32);
            out(b.node("Mul", &format!("{h}/Mean"), &[&s, &n], Vec::new()))
        }
        "Subtract" => {
            let [x, y] = &names[..] else {
                return Err(refuse(node, format!("expected 2 inputs, received {}", names.len())));
            };
            out(b.node("Sub", &format!("{h}/Sub"), &[x, y], Vec::new()))
        }
        _ => {
            let mut acc = names[0].to_string();
            for y in &names[1..] {
                acc = b.node("Mul", &format!("{h}/Mul"), &[&acc, y], Vec::new());
            }
            out(acc)
        }
    })
}
