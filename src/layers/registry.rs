//! Rebuilding layers from their saved configuration (`load_model`).

use super::*;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// A constructor of a user-defined layer from its saved configuration (what its
/// [`Layer::config`] returned), for [`CustomObjects`].
pub type LayerConstructor = Arc<dyn Fn(&HashMap<String, String>) -> Result<Box<dyn Layer>> + Send + Sync>;

/// Keras' `custom_objects`: the user-defined layers a saved model may contain, by class name,
/// for [`crate::models::load_model_with`] (Keras: `load_model(path, custom_objects={...})`).
///
/// ```
/// use kandle::layers::{CustomObjects, Dense, Layer};
/// let objects = CustomObjects::new().layer("MyDense", |cfg| {
///     let units: usize = cfg.get("units").and_then(|u| u.parse().ok()).unwrap_or(1);
///     Ok(Box::new(Dense::new(units)) as Box<dyn Layer>)
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
    /// Registers the constructor of the layers of class `class` (their `class_name()`).
    pub fn layer(
        mut self,
        class: impl Into<String>,
        constructor: impl Fn(&HashMap<String, String>) -> Result<Box<dyn Layer>> + Send + Sync + 'static,
    ) -> Self {
        self.layers.insert(class.into(), Arc::new(constructor));
        self
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

fn bad(class: &str, key: &str, v: &str) -> Error {
    Error::invalid("config", format!("{class}: cannot read {key} = {v:?}"))
}

struct Cfg<'a> {
    class: &'a str,
    map: &'a HashMap<String, String>,
}

impl Cfg<'_> {
    fn raw(&self, key: &str) -> Result<&str> {
        self.map
            .get(key)
            .map(|s| s.as_str())
            .ok_or_else(|| Error::invalid("config", format!("{}: missing {key}", self.class)))
    }
    fn num<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        let v = self.raw(key)?;
        v.parse().map_err(|_| bad(self.class, key, v))
    }
    fn pair(&self, key: &str) -> Result<(usize, usize)> {
        let v = self.raw(key)?;
        let inner = v.trim().trim_start_matches('(').trim_end_matches(')');
        let mut it = inner.split(',').map(|s| s.trim().parse::<usize>());
        match (it.next(), it.next(), it.next()) {
            (Some(Ok(a)), Some(Ok(b)), None) => Ok((a, b)),
            _ => Err(bad(self.class, key, v)),
        }
    }
    /// A regularizer, absent from files of earlier versions.
    fn regularizer(&self, key: &str) -> Result<Option<crate::regularizers::Regularizer>> {
        match self.map.get(key).map(|s| s.as_str()) {
            None | Some("None") => Ok(None),
            Some(v) => v.parse().map(Some),
        }
    }
    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        let v = self.raw(key)?;
        if v == "None" {
            return Ok(None);
        }
        let inner = v.strip_prefix("Some(").and_then(|s| s.strip_suffix(')')).ok_or_else(|| bad(self.class, key, v))?;
        inner.parse().map(Some).map_err(|_| bad(self.class, key, v))
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
    config: &HashMap<String, String>,
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
    config: &HashMap<String, String>,
    input_shape: Option<Vec<usize>>,
    custom: &CustomObjects,
) -> Result<Box<dyn Layer>> {
    let c = Cfg { class, map: config };
    let mut layer: Box<dyn Layer> = match class {
        "Conv2D" => {
            let mut l = Conv2D::new(c.num("filters")?, c.pair("kernel_size")?)
                .strides(c.pair("strides")?)
                .padding(c.raw("padding")?.parse()?)
                .dilation_rate(c.pair("dilation_rate")?)
                .activation(c.raw("activation")?.parse()?)
                .use_bias(c.num("use_bias")?);
            if let Some(r) = c.regularizer("kernel_regularizer")? {
                l = l.kernel_regularizer(r);
            }
            if let Some(r) = c.regularizer("bias_regularizer")? {
                l = l.bias_regularizer(r);
            }
            Box::new(l)
        }
        "DepthwiseConv2D" => {
            let mut l = DepthwiseConv2D::new(c.pair("kernel_size")?)
                .strides(c.pair("strides")?)
                .padding(c.raw("padding")?.parse()?)
                .dilation_rate(c.pair("dilation_rate")?)
                .depth_multiplier(c.num("depth_multiplier")?)
                .activation(c.raw("activation")?.parse()?)
                .use_bias(c.num("use_bias")?);
            if let Some(r) = c.regularizer("depthwise_regularizer")? {
                l = l.depthwise_regularizer(r);
            }
            Box::new(l)
        }
        "SeparableConv2D" => Box::new(
            SeparableConv2D::new(c.num("filters")?, c.pair("kernel_size")?)
                .strides(c.pair("strides")?)
                .padding(c.raw("padding")?.parse()?)
                .dilation_rate(c.pair("dilation_rate")?)
                .depth_multiplier(c.num("depth_multiplier")?)
                .activation(c.raw("activation")?.parse()?)
                .use_bias(c.num("use_bias")?),
        ),
        "MaxPooling2D" => Box::new(
            MaxPooling2D::new(c.pair("pool_size")?).strides(c.pair("strides")?).padding(c.raw("padding")?.parse()?),
        ),
        "AveragePooling2D" => Box::new(
            AveragePooling2D::new(c.pair("pool_size")?).strides(c.pair("strides")?).padding(c.raw("padding")?.parse()?),
        ),
        "GlobalAveragePooling2D" => Box::new(GlobalAveragePooling2D::new().keepdims(c.num("keepdims")?)),
        "Dense" => {
            let mut l =
                Dense::new(c.num("units")?).activation(c.raw("activation")?.parse()?).use_bias(c.num("use_bias")?);
            if let Some(r) = c.regularizer("kernel_regularizer")? {
                l = l.kernel_regularizer(r);
            }
            if let Some(r) = c.regularizer("bias_regularizer")? {
                l = l.bias_regularizer(r);
            }
            Box::new(l)
        }
        "Flatten" => Box::new(Flatten::new()),
        "Dropout" => Box::new(Dropout::new(c.num("rate")?)),
        "SpatialDropout2D" => Box::new(SpatialDropout2D::new(c.num("rate")?)),
        "GlobalMaxPooling2D" => Box::new(GlobalMaxPooling2D::new().keepdims(c.num("keepdims")?)),
        "Rescaling" => Box::new(Rescaling::new(c.num("scale")?).offset(c.num("offset")?)),
        "ZeroPadding2D" => {
            let v = c.raw("padding")?;
            let nums: Vec<usize> = v
                .split(|ch: char| !ch.is_ascii_digit())
                .filter(|p| !p.is_empty())
                .map(|p| p.parse().map_err(|_| bad(class, "padding", v)))
                .collect::<Result<_>>()?;
            match nums[..] {
                [t, b, l, r] => Box::new(ZeroPadding2D::asymmetric((t, b), (l, r))),
                _ => return Err(bad(class, "padding", v)),
            }
        }
        "Reshape" => {
            let v = c.raw("target_shape")?;
            let dims: Vec<Option<usize>> =
                v.trim_matches(|ch| ch == '(' || ch == ')')
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        if p == "-1" {
                            Ok(None)
                        } else {
                            p.parse().map(Some).map_err(|_| bad(class, "target_shape", v))
                        }
                    })
                    .collect::<Result<_>>()?;
            Box::new(Reshape::with_unknown(dims))
        }
        "Activation" => Box::new(ActivationLayer::new(c.raw("activation")?.parse()?)),
        "ReLU" => {
            let mut r = ReLU::new().negative_slope(c.num("negative_slope")?).threshold(c.num("threshold")?);
            if let Some(m) = c.opt_f64("max_value")? {
                r = r.max_value(m);
            }
            Box::new(r)
        }
        "LeakyReLU" => Box::new(LeakyReLU::new().negative_slope(c.num("negative_slope")?)),
        "Softmax" => Box::new(Softmax::new()),
        "BatchNormalization" => Box::new(
            BatchNormalization::new()
                .momentum(c.num("momentum")?)
                .epsilon(c.num("epsilon")?)
                .center(c.num("center")?)
                .scale(c.num("scale")?),
        ),
        "Add" => Box::new(Add::new()),
        "Subtract" => Box::new(Subtract::new()),
        "Multiply" => Box::new(Multiply::new()),
        "Average" => Box::new(Average::new()),
        "Maximum" => Box::new(Maximum::new()),
        "Minimum" => Box::new(Minimum::new()),
        "Concatenate" => Box::new(Concatenate::new().axis(c.num("axis")?)),
        other => match custom.layers.get(other) {
            Some(make) => make(config)?,
            None => {
                return Err(Error::invalid(
                    "config",
                    format!(
                        "unknown layer class {other:?}: a user-defined layer loads with \
                         load_model_with(path, &CustomObjects::new().layer({other:?}, constructor))"
                    ),
                ))
            }
        },
    };
    layer.set_name(name.to_string());
    // Files written without a policy hold float32 layers, whatever the global policy.
    layer.set_dtype_policy(match config.get("dtype") {
        Some(p) => p.parse()?,
        None => crate::mixed_precision::DTypePolicy::Float32,
    });
    if let Some(s) = input_shape {
        layer.set_input_shape(s);
    }
    Ok(layer)
}
