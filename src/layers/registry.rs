//! Rebuilding layers from their saved configuration (`load_model`).

use super::*;
use crate::error::{Error, Result};
use std::collections::HashMap;

/// An affine augmentation layer with the configuration's `fill_mode`, `interpolation` and
/// `fill_value`.
macro_rules! resampling {
    ($l:expr, $c:expr) => {
        $l.fill_mode($c.get::<String>("fill_mode")?.parse()?)
            .interpolation($c.get::<String>("interpolation")?.parse()?)
            .fill_value($c.get_or("fill_value", 0.0)?)
    };
}
use std::sync::Arc;

/// A constructor of a user-defined layer from its saved configuration (what its
/// [`Layer::get_config`] returned), for [`CustomObjects`].
pub type LayerConstructor = Arc<dyn Fn(&Config) -> Result<Box<dyn Layer>> + Send + Sync>;

/// Keras' `custom_objects`: the user-defined layers a saved model may contain, by class name,
/// for [`crate::models::load_model_with`] (Keras: `load_model(path, custom_objects={...})`).
///
/// ```
/// use kandle::layers::{CustomObjects, Dense, Layer};
/// let objects = CustomObjects::new().register("MyDense", |config| {
///     Ok(Box::new(Dense::new(config.get("units")?)) as Box<dyn Layer>)
/// });
/// assert!(objects.contains("MyDense"));
/// ```
#[derive(Clone, Default)]
pub struct CustomObjects {
    layers: HashMap<String, LayerConstructor>,
    metrics: HashMap<String, MetricConstructor>,
}

/// A constructor of a user-defined metric, for [`CustomObjects::metric`].
pub type MetricConstructor = Arc<dyn Fn() -> Box<dyn crate::metrics::StatefulMetric> + Send + Sync>;

impl std::fmt::Debug for CustomObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomObjects")
            .field("layers", &self.layers.keys().collect::<Vec<_>>())
            .field("metrics", &self.metrics.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl CustomObjects {
    /// No custom object.
    pub fn new() -> Self {
        Self::default()
    }
    /// Registers the constructor of the layers of class `class` (their `class_name()`), which
    /// makes the layer again from its configuration ([`Layer::get_config`]), as Keras'
    /// `from_config`.
    pub fn register(
        mut self,
        class: impl Into<String>,
        constructor: impl Fn(&Config) -> Result<Box<dyn Layer>> + Send + Sync + 'static,
    ) -> Self {
        self.layers.insert(class.into(), Arc::new(constructor));
        self
    }

    /// [`CustomObjects::register`] with the configuration's values as text, as kandle 0.1 gave
    /// them to constructors (strings as they are, anything else as JSON: `"4"`, `"[3,3]"`).
    #[deprecated(note = "use `register`, whose constructor reads the configuration's JSON values")]
    pub fn layer(
        self,
        class: impl Into<String>,
        constructor: impl Fn(&HashMap<String, String>) -> Result<Box<dyn Layer>> + Send + Sync + 'static,
    ) -> Self {
        self.register(class, move |config: &Config| constructor(&config.to_strings()))
    }
    /// Registers a user-defined metric by its name (its [`StatefulMetric::name`]), so that
    /// `load_model_with` compiles the loaded model with it (Keras: `custom_objects`).
    ///
    /// [`StatefulMetric::name`]: crate::metrics::StatefulMetric::name
    pub fn metric<M: crate::metrics::StatefulMetric + Default + 'static>(mut self, name: impl Into<String>) -> Self {
        self.metrics.insert(name.into(), Arc::new(|| Box::new(M::default())));
        self
    }
    /// Whether a constructor of `class` (a layer class or a metric name) is registered.
    pub fn contains(&self, class: &str) -> bool {
        self.layers.contains_key(class) || self.metrics.contains_key(class)
    }
    pub(crate) fn metric_entry(&self, name: &str) -> Result<crate::metrics::MetricEntry> {
        let make = self.metrics.get(name).ok_or_else(|| {
            Error::invalid(
                "metrics",
                format!(
                    "the saved model was compiled with the user-defined metric {name:?}: load it with \
                     load_model_with(path, &CustomObjects::new().metric::<YourMetric>({name:?}))"
                ),
            )
        })?;
        Ok(crate::metrics::MetricEntry(crate::metrics::Entry::Custom(make())))
    }
}

/// What [`from_config`] takes as a configuration: a [`Config`], or the string map of kandle 0.1.
pub trait IntoConfig {
    /// The configuration.
    fn into_config(self) -> Config;
}

impl IntoConfig for &Config {
    fn into_config(self) -> Config {
        self.clone()
    }
}

impl IntoConfig for &HashMap<String, String> {
    fn into_config(self) -> Config {
        self.iter().fold(Config::new(), |c, (k, v)| c.set(k, v.as_str()))
    }
}

/// The layer of Keras class `class` with the configuration `config` (as [`Layer::config`]
/// writes it), named `name`, with an optional declared input shape.
///
/// # Errors
/// An unknown class or an unreadable configuration.
pub fn from_config(
    class: &str,
    name: &str,
    config: impl IntoConfig,
    input_shape: Option<Vec<usize>>,
) -> Result<Box<dyn Layer>> {
    from_config_with(class, name, config, input_shape, &CustomObjects::default())
}

/// [`from_config`], with the user-defined layers of `custom`.
///
/// # Errors
/// An unknown class or an unreadable configuration.
pub fn from_config_with(
    class: &str,
    name: &str,
    config: impl IntoConfig,
    input_shape: Option<Vec<usize>>,
    custom: &CustomObjects,
) -> Result<Box<dyn Layer>> {
    let c = config.into_config();
    let named = |e: Error| match e {
        Error::InvalidArgument { name: "config", reason } => {
            Error::invalid("config", format!("{class} {name:?}: {reason}"))
        }
        other => other,
    };
    let mut layer = build_layer(class, &c, custom).map_err(named)?;
    layer.set_name(name.to_string());
    // Files written without a policy hold float32 layers, whatever the global policy.
    layer.set_dtype_policy(c.get_or("dtype", crate::mixed_precision::DTypePolicy::Float32).map_err(named)?);
    if let Some(s) = input_shape {
        layer.set_input_shape(s);
    }
    Ok(layer)
}

/// The layer of class `class` made from `c`, unnamed.
fn build_layer(class: &str, c: &Config, custom: &CustomObjects) -> Result<Box<dyn Layer>> {
    Ok(match class {
        "Conv2DTranspose" => {
            let mut l = Conv2DTranspose::new(c.get::<usize>("filters")?, c.get::<(usize, usize)>("kernel_size")?)
                .strides(c.get::<(usize, usize)>("strides")?)
                .padding(c.get("padding")?)
                .activation(c.get("activation")?)
                .use_bias(c.get("use_bias")?);
            if let Some(i) = config::initializer(c, "kernel_initializer") {
                l = l.kernel_initializer(i);
            }
            if let Some(i) = config::initializer(c, "bias_initializer") {
                l = l.bias_initializer(i);
            }
            Box::new(l)
        }
        "Conv2D" => {
            let mut l = Conv2D::new(c.get::<usize>("filters")?, c.get::<(usize, usize)>("kernel_size")?)
                .strides(c.get::<(usize, usize)>("strides")?)
                .padding(c.get("padding")?)
                .dilation_rate(c.get::<(usize, usize)>("dilation_rate")?)
                .activation(c.get("activation")?)
                .use_bias(c.get("use_bias")?);
            if let Some(r) = c.get_or("kernel_regularizer", None)? {
                l = l.kernel_regularizer(r);
            }
            if let Some(r) = c.get_or("bias_regularizer", None)? {
                l = l.bias_regularizer(r);
            }
            if let Some(i) = config::initializer(c, "kernel_initializer") {
                l = l.kernel_initializer(i);
            }
            if let Some(i) = config::initializer(c, "bias_initializer") {
                l = l.bias_initializer(i);
            }
            Box::new(l)
        }
        "DepthwiseConv2D" => {
            let mut l = DepthwiseConv2D::new(c.get::<(usize, usize)>("kernel_size")?)
                .strides(c.get::<(usize, usize)>("strides")?)
                .padding(c.get("padding")?)
                .dilation_rate(c.get::<(usize, usize)>("dilation_rate")?)
                .depth_multiplier(c.get("depth_multiplier")?)
                .activation(c.get("activation")?)
                .use_bias(c.get("use_bias")?);
            if let Some(r) = c.get_or("depthwise_regularizer", None)? {
                l = l.depthwise_regularizer(r);
            }
            Box::new(l)
        }
        "SeparableConv2D" => Box::new(
            SeparableConv2D::new(c.get::<usize>("filters")?, c.get::<(usize, usize)>("kernel_size")?)
                .strides(c.get::<(usize, usize)>("strides")?)
                .padding(c.get("padding")?)
                .dilation_rate(c.get::<(usize, usize)>("dilation_rate")?)
                .depth_multiplier(c.get("depth_multiplier")?)
                .activation(c.get("activation")?)
                .use_bias(c.get("use_bias")?),
        ),
        "MaxPooling2D" => Box::new(
            MaxPooling2D::new(c.get::<(usize, usize)>("pool_size")?)
                .strides(c.get::<(usize, usize)>("strides")?)
                .padding(c.get("padding")?),
        ),
        "AveragePooling2D" => Box::new(
            AveragePooling2D::new(c.get::<(usize, usize)>("pool_size")?)
                .strides(c.get::<(usize, usize)>("strides")?)
                .padding(c.get("padding")?),
        ),
        "GlobalAveragePooling2D" => Box::new(GlobalAveragePooling2D::new().keepdims(c.get("keepdims")?)),
        "Dense" => {
            let mut l = Dense::new(c.get("units")?).activation(c.get("activation")?).use_bias(c.get("use_bias")?);
            if let Some(r) = c.get_or("kernel_regularizer", None)? {
                l = l.kernel_regularizer(r);
            }
            if let Some(r) = c.get_or("bias_regularizer", None)? {
                l = l.bias_regularizer(r);
            }
            if let Some(i) = config::initializer(c, "kernel_initializer") {
                l = l.kernel_initializer(i);
            }
            if let Some(i) = config::initializer(c, "bias_initializer") {
                l = l.bias_initializer(i);
            }
            Box::new(l)
        }
        "Flatten" => Box::new(Flatten::new()),
        "Dropout" => {
            let l = Dropout::new(c.get("rate")?);
            Box::new(match config::noise_shape(c)? {
                Some(ns) => l.noise_shape(ns),
                None => l,
            })
        }
        "SpatialDropout2D" => Box::new(SpatialDropout2D::new(c.get("rate")?)),
        "GlobalMaxPooling2D" => Box::new(GlobalMaxPooling2D::new().keepdims(c.get("keepdims")?)),
        "Rescaling" => {
            let l = match c.value("scale") {
                Some(serde_json::Value::Array(_)) => Rescaling::per_channel(config::floats(c, "scale")?),
                _ => Rescaling::new(c.get("scale")?),
            };
            Box::new(l.offset(c.get("offset")?))
        }
        "RandomFlip" => Box::new(with_seed(RandomFlip::new(c.get::<String>("mode")?.parse()?), c, RandomFlip::seed)?),
        "RandomRotation" => {
            let l = RandomRotation::new(config::factor(c, "factor")?);
            Box::new(with_seed(resampling!(l, c), c, RandomRotation::seed)?)
        }
        "RandomTranslation" => {
            let l = RandomTranslation::new(config::factor(c, "height_factor")?, config::factor(c, "width_factor")?);
            Box::new(with_seed(resampling!(l, c), c, RandomTranslation::seed)?)
        }
        "RandomZoom" => {
            let mut l = RandomZoom::new(config::factor(c, "height_factor")?);
            if !matches!(c.value("width_factor"), None | Some(serde_json::Value::Null)) {
                l = l.width_factor(config::factor(c, "width_factor")?);
            }
            Box::new(with_seed(resampling!(l, c), c, RandomZoom::seed)?)
        }
        "RandomContrast" => {
            let (lo, hi) = config::value_range(c)?;
            let l = RandomContrast::new(config::factor_with(c, "factor", 0.0)?).value_range(lo, hi);
            Box::new(with_seed(l, c, RandomContrast::seed)?)
        }
        "RandomBrightness" => {
            let (lo, hi) = config::value_range(c)?;
            let l = RandomBrightness::new(config::factor(c, "factor")?).value_range(lo, hi);
            Box::new(with_seed(l, c, RandomBrightness::seed)?)
        }
        "Resizing" => Box::new(
            Resizing::new(c.get("height")?, c.get("width")?)
                .interpolation(c.get::<String>("interpolation")?.parse()?)
                .crop_to_aspect_ratio(c.get_or("crop_to_aspect_ratio", false)?),
        ),
        "CenterCrop" => Box::new(CenterCrop::new(c.get("height")?, c.get("width")?)),
        "RandomCrop" => Box::new(with_seed(RandomCrop::new(c.get("height")?, c.get("width")?), c, RandomCrop::seed)?),
        "Normalization" => {
            let mut l = Normalization::new().axis(config::single_axis(c, "axis")?).invert(c.get_or("invert", false)?);
            if !matches!(c.value("mean"), None | Some(serde_json::Value::Null)) {
                l = l.mean_variance(config::floats(c, "mean")?, config::floats(c, "variance")?);
            }
            Box::new(l)
        }
        "ZeroPadding2D" => match c.get::<Vec<usize>>("padding")?[..] {
            [t, b, l, r] => Box::new(ZeroPadding2D::asymmetric((t, b), (l, r))),
            _ => return Err(Error::invalid("config", format!("cannot read padding = {}", c["padding"]))),
        },
        "Cropping2D" => match c.get::<Vec<usize>>("cropping")?[..] {
            [t, b, l, r] => Box::new(Cropping2D::asymmetric((t, b), (l, r))),
            _ => return Err(Error::invalid("config", format!("cannot read cropping = {}", c["cropping"]))),
        },
        "UpSampling2D" => Box::new(
            UpSampling2D::new(c.get::<(usize, usize)>("size")?)
                .interpolation(c.get::<String>("interpolation")?.parse()?),
        ),
        "LayerNormalization" => {
            let axis: i64 = c.get_or("axis", -1)?;
            if axis != -1 {
                return Err(Error::invalid(
                    "config",
                    format!("LayerNormalization: axis {axis}: kandle normalises the last axis (-1) only"),
                ));
            }
            Box::new(
                LayerNormalization::new().epsilon(c.get("epsilon")?).center(c.get("center")?).scale(c.get("scale")?),
            )
        }
        "Reshape" => {
            let dims: Vec<i64> = c.get("target_shape")?;
            Box::new(Reshape::with_unknown(dims.into_iter().map(|d| usize::try_from(d).ok())))
        }
        "Activation" => Box::new(ActivationLayer::new(c.get("activation")?)),
        "ReLU" => {
            let mut r = ReLU::new().negative_slope(c.get("negative_slope")?).threshold(c.get("threshold")?);
            if let Some(m) = c.get::<Option<f64>>("max_value")? {
                r = r.max_value(m);
            }
            Box::new(r)
        }
        "LeakyReLU" => Box::new(LeakyReLU::new().negative_slope(c.get("negative_slope")?)),
        "Softmax" => Box::new(Softmax::new()),
        "BatchNormalization" => Box::new(
            BatchNormalization::new()
                .momentum(c.get("momentum")?)
                .epsilon(c.get("epsilon")?)
                .center(c.get("center")?)
                .scale(c.get("scale")?),
        ),
        "Add" => Box::new(Add::new()),
        "Subtract" => Box::new(Subtract::new()),
        "Multiply" => Box::new(Multiply::new()),
        "Average" => Box::new(Average::new()),
        "Maximum" => Box::new(Maximum::new()),
        "Minimum" => Box::new(Minimum::new()),
        "Concatenate" => Box::new(Concatenate::new().axis(c.get::<i64>("axis")? as isize)),
        other => match custom.layers.get(other) {
            Some(make) => make(c)?,
            None => {
                return Err(Error::invalid(
                    "config",
                    format!(
                        "unknown layer class {other:?}: a user-defined layer loads with \
                         load_model_with(path, &CustomObjects::new().register({other:?}, constructor))"
                    ),
                ))
            }
        },
    })
}

/// `layer` with the configuration's `seed` when it has one.
fn with_seed<L>(layer: L, c: &Config, seed: fn(L, u64) -> L) -> Result<L> {
    Ok(match c.get_or::<Option<u64>>("seed", None)? {
        Some(s) => seed(layer, s),
        None => layer,
    })
}
