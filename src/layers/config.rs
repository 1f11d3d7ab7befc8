//! A layer's configuration, as Keras' `get_config()`: the arguments it was created with, by
//! name, as JSON values (`{"units": 10, "activation": "relu", "kernel_size": [3, 3]}`). Saved
//! with the model and read back by [`super::from_config`] and user-defined constructors
//! ([`super::CustomObjects`]).

use crate::error::{Error, Result};
use serde_json::{Map, Value};

/// A layer's configuration: argument names and their values, as Keras' `get_config()` returns
/// them.
///
/// ```
/// use kandle::layers::Config;
/// let config = Config::new().set("units", 4).set("activation", "relu").set("kernel_size", [3, 3]);
/// assert_eq!(config.get::<usize>("units")?, 4);
/// assert_eq!(config.get::<(usize, usize)>("kernel_size")?, (3, 3));
/// assert_eq!(config.get_or("use_bias", true)?, true); // absent: the default
/// assert!(config.get::<usize>("activation").is_err()); // the error names the key
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config(Map<String, Value>);

impl Config {
    /// An empty configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// The configuration with `key` set to `value` (any value serde_json converts: numbers,
    /// booleans, strings, arrays, `Option`s, JSON values).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.insert(key, value);
        self
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: &str, value: impl Into<Value>) {
        self.0.insert(key.to_string(), value.into());
    }

    /// The value of `key`, as JSON, if present.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// The value of `key` as a `T`.
    ///
    /// # Errors
    /// `key` is absent, or its value is not a `T`: the error names the key and the value.
    pub fn get<T: ConfigValue>(&self, key: &str) -> Result<T> {
        match self.0.get(key) {
            None => Err(Error::invalid("config", format!("missing {key:?} (the configuration has {})", self.keys()))),
            Some(v) => T::from_value(v).ok_or_else(|| {
                Error::invalid("config", format!("cannot read {key} = {v} as {}", std::any::type_name::<T>()))
            }),
        }
    }

    /// The value of `key` as a `T`, or `default` when it is absent (a file written before the
    /// argument existed).
    ///
    /// # Errors
    /// A value that is present but not a `T`.
    pub fn get_or<T: ConfigValue>(&self, key: &str, default: T) -> Result<T> {
        if self.0.contains_key(key) {
            self.get(key)
        } else {
            Ok(default)
        }
    }

    /// The keys, comma-separated (for messages).
    fn keys(&self) -> String {
        self.0.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
    }

    /// Every `(key, value)`, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter()
    }

    /// The configuration as a JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(self.0.clone())
    }

    /// A configuration from a JSON object (anything else is an empty configuration).
    pub fn from_json(value: &Value) -> Self {
        Config(value.as_object().cloned().unwrap_or_default())
    }

    /// The values as text, as kandle 0.1 wrote configurations: strings as they are, everything
    /// else as JSON. For constructors written for that form ([`super::CustomObjects::layer`]).
    pub fn to_strings(&self) -> std::collections::HashMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect()
    }
}

impl std::ops::Index<&str> for Config {
    type Output = Value;
    /// The value of `key`, or JSON `null` when it is absent.
    fn index(&self, key: &str) -> &Value {
        self.0.get(key).unwrap_or(&Value::Null)
    }
}

/// A type a [`Config`] value can be read as. Besides the JSON forms, the textual forms kandle 0.1
/// saved are accepted (`"10"`, `"(3, 3)"`, `"true"`, `"None"`), so that older model files load.
pub trait ConfigValue: Sized {
    /// The value, or `None` when `v` is not one.
    fn from_value(v: &Value) -> Option<Self>;
}

/// A JSON string's text, trimmed.
fn text(v: &Value) -> Option<&str> {
    v.as_str().map(str::trim)
}

impl ConfigValue for usize {
    fn from_value(v: &Value) -> Option<Self> {
        v.as_u64().and_then(|n| usize::try_from(n).ok()).or_else(|| text(v)?.parse().ok())
    }
}

impl ConfigValue for u64 {
    fn from_value(v: &Value) -> Option<Self> {
        v.as_u64().or_else(|| text(v)?.parse().ok())
    }
}

impl ConfigValue for i64 {
    fn from_value(v: &Value) -> Option<Self> {
        v.as_i64().or_else(|| text(v)?.parse().ok())
    }
}

impl ConfigValue for f64 {
    fn from_value(v: &Value) -> Option<Self> {
        v.as_f64().or_else(|| text(v)?.parse().ok())
    }
}

impl ConfigValue for bool {
    fn from_value(v: &Value) -> Option<Self> {
        v.as_bool().or_else(|| text(v)?.parse().ok())
    }
}

impl ConfigValue for String {
    fn from_value(v: &Value) -> Option<Self> {
        v.as_str().map(str::to_string)
    }
}

impl ConfigValue for Value {
    fn from_value(v: &Value) -> Option<Self> {
        Some(v.clone())
    }
}

/// The numbers of a JSON array, nested ones flattened (`[[1, 1], [2, 2]]`), or of kandle 0.1's
/// `"(3, 3)"` / `"((1, 1), (2, 2))"` text.
fn numbers(v: &Value) -> Option<Vec<i64>> {
    match v {
        Value::Number(n) => n.as_i64().map(|n| vec![n]),
        Value::Array(items) => items.iter().map(numbers).collect::<Option<Vec<_>>>().map(|v| v.concat()),
        Value::String(s) => s
            .split(|c: char| !(c.is_ascii_digit() || c == '-'))
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().ok())
            .collect(),
        _ => None,
    }
}

impl ConfigValue for (usize, usize) {
    fn from_value(v: &Value) -> Option<Self> {
        match numbers(v)?[..] {
            [a, b] => Some((usize::try_from(a).ok()?, usize::try_from(b).ok()?)),
            _ => None,
        }
    }
}

impl ConfigValue for Vec<usize> {
    fn from_value(v: &Value) -> Option<Self> {
        numbers(v)?.into_iter().map(|n| usize::try_from(n).ok()).collect()
    }
}

impl ConfigValue for Vec<i64> {
    fn from_value(v: &Value) -> Option<Self> {
        numbers(v)
    }
}

impl<T: ConfigValue> ConfigValue for Option<T> {
    /// `null` (or kandle 0.1's `"None"`) is `None`; `"Some(x)"` of kandle 0.1 is read as `x`.
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            Value::String(s) if s.trim() == "None" => Some(None),
            Value::String(s) => match s.trim().strip_prefix("Some(").and_then(|r| r.strip_suffix(')')) {
                Some(inner) => T::from_value(&Value::String(inner.to_string())).map(Some),
                None => T::from_value(v).map(Some),
            },
            other => T::from_value(other).map(Some),
        }
    }
}

/// Enums kandle names as Keras does (`"relu"`, `"same"`, `"L2(0.0001)"`): read from their text.
macro_rules! config_value_from_str {
    ($($t:ty),*) => {$(
        impl ConfigValue for $t {
            fn from_value(v: &Value) -> Option<Self> {
                text(v)?.parse().ok()
            }
        }
    )*};
}
config_value_from_str!(
    crate::activations::Activation,
    super::Padding,
    crate::regularizers::Regularizer,
    crate::mixed_precision::DTypePolicy
);

/// `c` with the layer's initializers in Keras' serialized form, each only when it is not
/// Keras' default (`GlorotUniform` kernels, `Zeros` biases), so that the configurations of
/// models of default initializers stay as earlier kandle versions wrote them.
pub(crate) fn with_initializers(
    mut c: Config,
    kernel: crate::initializers::Initializer,
    bias: crate::initializers::Initializer,
) -> Config {
    use crate::initializers::Initializer;
    if kernel != Initializer::GlorotUniform {
        c.insert("kernel_initializer", kernel.to_keras());
    }
    if bias != Initializer::Zeros {
        c.insert("bias_initializer", bias.to_keras());
    }
    c
}

/// The initializer `key` of a configuration, as [`with_initializers`] writes it (or Keras'
/// name), when present and one kandle has.
pub(crate) fn initializer(c: &Config, key: &str) -> Option<crate::initializers::Initializer> {
    c.value(key).and_then(crate::initializers::Initializer::from_keras)
}

/// A `Dropout`'s `noise_shape` as Keras writes it (`[null, 1, 1, 1]`, the batch axis first),
/// without the batch axis; `None` when absent or null.
pub(crate) fn noise_shape(c: &Config) -> Result<Option<Vec<Option<usize>>>> {
    let bad = || {
        Error::invalid(
            "noise_shape",
            format!("expected null or a list of null or integers, received {}", c["noise_shape"]),
        )
    };
    match c.value("noise_shape") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) if !items.is_empty() => items[1..]
            .iter()
            .map(|v| match v {
                Value::Null => Ok(None),
                v => v.as_u64().and_then(|n| usize::try_from(n).ok()).map(Some).ok_or_else(bad),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

/// A number or a flat list of numbers (`Rescaling`'s `scale`, `Normalization`'s `mean`).
pub(crate) fn floats(c: &Config, key: &'static str) -> Result<Vec<f64>> {
    let bad = || Error::invalid(key, format!("expected a number or a list of numbers, received {}", c[key]));
    match c.value(key) {
        Some(Value::Array(items)) if !items.is_empty() => items.iter().map(|v| v.as_f64().ok_or_else(bad)).collect(),
        Some(v) => v.as_f64().map(|f| vec![f]).ok_or_else(bad),
        None => Err(bad()),
    }
}

/// One axis, as Keras writes it (`-1`, `[3]`), or none (`null`, `[]`); several axes are an error.
pub(crate) fn single_axis(c: &Config, key: &'static str) -> Result<Option<isize>> {
    let bad = || Error::invalid(key, format!("expected one axis (kandle keeps one axis or none), received {}", c[key]));
    let one = |v: &Value| v.as_i64().and_then(|a| isize::try_from(a).ok()).ok_or_else(bad);
    match c.value(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => match &items[..] {
            [] => Ok(None),
            [a] => one(a).map(Some),
            _ => Err(bad()),
        },
        Some(v) => one(v).map(Some),
    }
}

/// A factor as Keras writes it: a number `f` (`[max(-f, lowest), f]`) or a pair (sorted).
pub(crate) fn factor_with(c: &Config, key: &'static str, lowest: f64) -> Result<(f64, f64)> {
    use crate::layers::IntoFactor;
    match floats(c, key)?[..] {
        [f] => Ok(f.into_factor_above(lowest)),
        [a, b] => Ok((a, b).into_factor()),
        _ => Err(Error::invalid(key, format!("expected a number or a pair of numbers, received {}", c[key]))),
    }
}

/// [`factor_with`] for Keras' usual bounds `[-1, 1]`.
pub(crate) fn factor(c: &Config, key: &'static str) -> Result<(f64, f64)> {
    factor_with(c, key, -1.0)
}

/// A `value_range` pair.
pub(crate) fn value_range(c: &Config) -> Result<(f64, f64)> {
    match floats(c, "value_range")?[..] {
        [a, b] => Ok((a, b)),
        _ => Err(Error::invalid("value_range", format!("expected (low, high), received {}", c["value_range"]))),
    }
}
