//! Keras 3.15's options of each layer class kandle builds: those kandle reads, and those that
//! must hold the value kandle implements (checked when a Keras file is read).

use serde_json::{json, Value};

/// Keras' initializers kandle knows: a file may name them (the weights come from the file).
pub(super) const INITIALIZERS: &[&str] = &[
    "GlorotUniform",
    "GlorotNormal",
    "HeUniform",
    "HeNormal",
    "Zeros",
    "Ones",
    "RandomUniform",
    "RandomNormal",
    "Constant",
    "TruncatedNormal",
    "LecunNormal",
    "LecunUniform",
    "VarianceScaling",
    "Orthogonal",
];

/// Options of a Keras layer class: those kandle reads, and those that must hold a fixed value.
pub(super) struct Options {
    pub read: &'static [&'static str],
    pub fixed: Vec<(&'static str, Vec<Value>)>,
    pub initializers: &'static [&'static str],
}

fn no_constraints(keys: &[&'static str]) -> Vec<(&'static str, Vec<Value>)> {
    keys.iter().map(|k| (*k, vec![Value::Null])).collect()
}

fn channels_last() -> (&'static str, Vec<Value>) {
    ("data_format", vec![json!("channels_last"), Value::Null])
}

/// Keras 3.15's options of each class kandle builds.
pub(super) fn options(class: &str) -> Option<Options> {
    let mut fixed = vec![];
    let (read, initializers): (&[&str], &[&str]) = match class {
        "Conv2D" => {
            fixed.push(channels_last());
            fixed.push(("groups", vec![json!(1)]));
            fixed.extend(no_constraints(&[
                "activity_regularizer",
                "kernel_constraint",
                "bias_constraint",
                "lora_rank",
            ]));
            (
                &[
                    "filters",
                    "kernel_size",
                    "strides",
                    "padding",
                    "dilation_rate",
                    "activation",
                    "use_bias",
                    "kernel_regularizer",
                    "bias_regularizer",
                ],
                &["kernel_initializer", "bias_initializer"],
            )
        }
        "Conv2DTranspose" => {
            fixed.push(channels_last());
            fixed.push(("groups", vec![json!(1)]));
            fixed.push(("output_padding", vec![Value::Null]));
            fixed.push(("dilation_rate", vec![json!([1, 1]), json!(1)]));
            fixed.extend(no_constraints(&[
                "kernel_regularizer",
                "bias_regularizer",
                "activity_regularizer",
                "kernel_constraint",
                "bias_constraint",
            ]));
            (
                &["filters", "kernel_size", "strides", "padding", "activation", "use_bias"],
                &["kernel_initializer", "bias_initializer"],
            )
        }
        "DepthwiseConv2D" => {
            fixed.push(channels_last());
            fixed.push(("groups", vec![json!(1)]));
            fixed.extend(no_constraints(&[
                "bias_regularizer",
                "activity_regularizer",
                "depthwise_constraint",
                "bias_constraint",
            ]));
            (
                &[
                    "kernel_size",
                    "strides",
                    "padding",
                    "dilation_rate",
                    "depth_multiplier",
                    "activation",
                    "use_bias",
                    "depthwise_regularizer",
                ],
                &["depthwise_initializer", "bias_initializer"],
            )
        }
        "SeparableConv2D" => {
            fixed.push(channels_last());
            fixed.push(("groups", vec![json!(1)]));
            fixed.extend(no_constraints(&[
                "depthwise_regularizer",
                "pointwise_regularizer",
                "bias_regularizer",
                "activity_regularizer",
                "depthwise_constraint",
                "pointwise_constraint",
                "bias_constraint",
            ]));
            (
                &[
                    "filters",
                    "kernel_size",
                    "strides",
                    "padding",
                    "dilation_rate",
                    "depth_multiplier",
                    "activation",
                    "use_bias",
                ],
                &["depthwise_initializer", "pointwise_initializer", "bias_initializer"],
            )
        }
        "Dense" => {
            fixed.extend(no_constraints(&[
                "activity_regularizer",
                "kernel_constraint",
                "bias_constraint",
                "quantization_config",
                "lora_rank",
            ]));
            (
                &["units", "activation", "use_bias", "kernel_regularizer", "bias_regularizer"],
                &["kernel_initializer", "bias_initializer"],
            )
        }
        "MaxPooling2D" | "AveragePooling2D" => {
            fixed.push(channels_last());
            (&["pool_size", "strides", "padding"], &[])
        }
        "GlobalAveragePooling2D" | "GlobalMaxPooling2D" => {
            fixed.push(channels_last());
            (&["keepdims"], &[])
        }
        "Flatten" => {
            fixed.push(channels_last());
            (&[], &[])
        }
        // The seed of Keras' dropout mask: kandle draws its masks from the model's seed.
        "Dropout" => (&["rate", "seed", "noise_shape"], &[]),
        "SpatialDropout2D" => {
            fixed.push(channels_last());
            (&["rate", "seed"], &[])
        }
        "Rescaling" => (&["scale", "offset"], &[]),
        "Normalization" => (&["axis", "invert", "mean", "variance"], &[]),
        "RandomFlip" => {
            fixed.push(channels_last());
            (&["mode", "seed"], &[])
        }
        "RandomRotation" => {
            fixed.push(channels_last());
            (&["factor", "fill_mode", "fill_value", "interpolation", "seed"], &[])
        }
        "RandomTranslation" | "RandomZoom" => {
            fixed.push(channels_last());
            (&["height_factor", "width_factor", "fill_mode", "fill_value", "interpolation", "seed"], &[])
        }
        "RandomContrast" | "RandomBrightness" => {
            fixed.push(channels_last());
            (&["factor", "value_range", "seed"], &[])
        }
        "Resizing" => {
            fixed.push(channels_last());
            fixed.push(("pad_to_aspect_ratio", vec![json!(false)]));
            fixed.push(("antialias", vec![json!(false)]));
            fixed.push(("fill_mode", vec![json!("constant")]));
            fixed.push(("fill_value", vec![json!(0.0), json!(0)]));
            (&["height", "width", "interpolation", "crop_to_aspect_ratio"], &[])
        }
        "CenterCrop" => {
            fixed.push(channels_last());
            (&["height", "width"], &[])
        }
        "RandomCrop" => {
            fixed.push(channels_last());
            (&["height", "width", "seed"], &[])
        }
        "ZeroPadding2D" => {
            fixed.push(channels_last());
            (&["padding"], &[])
        }
        "Cropping2D" => {
            fixed.push(channels_last());
            (&["cropping"], &[])
        }
        "UpSampling2D" => {
            fixed.push(channels_last());
            (&["size", "interpolation"], &[])
        }
        "LayerNormalization" => {
            fixed.push(("rms_scaling", vec![json!(false)]));
            fixed.extend(no_constraints(&[
                "beta_regularizer",
                "gamma_regularizer",
                "beta_constraint",
                "gamma_constraint",
            ]));
            (&["axis", "epsilon", "center", "scale"], &["beta_initializer", "gamma_initializer"])
        }
        "Reshape" => (&["target_shape"], &[]),
        "Activation" => (&["activation"], &[]),
        "ReLU" => (&["max_value", "negative_slope", "threshold"], &[]),
        "LeakyReLU" => (&["negative_slope"], &[]),
        "Softmax" => {
            fixed.push(("axis", vec![json!(-1)]));
            (&[], &[])
        }
        "BatchNormalization" => {
            fixed.push(("axis", vec![json!(-1), json!(3), json!([3]), json!([-1])]));
            fixed.push(("synchronized", vec![json!(false)]));
            fixed.push(("renorm", vec![json!(false)]));
            fixed.push(("renorm_clipping", vec![Value::Null]));
            fixed.push(("renorm_momentum", vec![json!(0.99)]));
            fixed.extend(no_constraints(&[
                "beta_regularizer",
                "gamma_regularizer",
                "beta_constraint",
                "gamma_constraint",
            ]));
            (
                &["momentum", "epsilon", "center", "scale"],
                &["beta_initializer", "gamma_initializer", "moving_mean_initializer", "moving_variance_initializer"],
            )
        }
        "Add" | "Subtract" | "Multiply" | "Average" | "Maximum" | "Minimum" => (&[], &[]),
        "Concatenate" => (&["axis"], &[]),
        _ => return None,
    };
    Some(Options { read, fixed, initializers })
}
