//! Shipping a trained model to other runtimes, as Keras 3's `model.export(path, format="onnx")`:
//! [`Model::export`](crate::models::Model::export) writes an ONNX file that ONNX Runtime, tract,
//! OpenVINO, TensorRT or a browser runs without kandle.
//!
//! ```no_run
//! use kandle::prelude::*;
//! use kandle::export::{ExportFormat, ExportOptions};
//!
//! let model = Sequential::new()
//!     .add(Conv2D::new(8, 3).activation(Activation::Relu).input_shape((28, 28, 1)))
//!     .add(Flatten::new())
//!     .add(Dense::new(10).activation(Activation::Softmax));
//! model.build()?;
//! model.export("mnist.onnx", ExportFormat::Onnx)?;
//! // Options: the operator set, a fixed batch size, weights in a file of their own.
//! model.export_with("mnist_b1.onnx", ExportFormat::Onnx, ExportOptions::default().opset_version(18).batch_size(1))?;
//! # Ok::<(), kandle::Error>(())
//! ```
//!
//! What the file holds: the model in inference mode (dropout and the augmentation layers gone,
//! BatchNormalization folded into a scale and a shift, fused activations as their own
//! operators), its input as the model takes it (channels last, `(batch, height, width,
//! channels)`; the batch dimension is named `batch` and free unless
//! [`ExportOptions::batch_size`] fixes it), named after the model's `Input` layers, and its
//! outputs named after the layers that make them. Inside, convolutions run channels first, as
//! ONNX's operators want; transposes are added where the layout changes. Weights are
//! initializers, in the file or, past 2 GB or when [`ExportOptions::external_data`] asks, in a
//! `<file>.data` beside it (ONNX's external data). A user-defined layer is exported through
//! the mapping given with [`ExportOptions::layer_mapping`], else refused by name; nothing is
//! written unless the whole model exports.

#[cfg(feature = "onnx")]
pub(crate) mod builder;
#[cfg(feature = "onnx")]
mod lower;
#[cfg(feature = "onnx")]
pub(crate) mod onnx;
#[cfg(feature = "onnx")]
mod ops;
#[cfg(feature = "onnx")]
mod proto;

use crate::error::{Error, Result};
use candle_core::Tensor;
use std::collections::HashMap;
use std::sync::Arc;

/// The file formats [`Model::export`](crate::models::Model::export) writes (Keras' `format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportFormat {
    /// ONNX (`format="onnx"`): a `.onnx` protocol buffer of standard operators.
    Onnx,
}

impl std::str::FromStr for ExportFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "onnx" => Ok(ExportFormat::Onnx),
            other => Err(Error::invalid(
                "format",
                format!("expected \"onnx\" (the one export format kandle writes), received {other:?}"),
            )),
        }
    }
}

/// An attribute of an ONNX node made by a [`layer_mapping`](ExportOptions::layer_mapping).
#[derive(Debug, Clone, PartialEq)]
pub enum OnnxAttribute {
    /// An integer.
    Int(i64),
    /// Integers.
    Ints(Vec<i64>),
    /// A float.
    Float(f32),
    /// Floats.
    Floats(Vec<f32>),
    /// A string.
    String(String),
}

/// How a user-defined layer becomes ONNX nodes: given the layer's call, it adds nodes and
/// returns the name of the value it makes (channels last, as the layer's output).
pub type OnnxMapping = Arc<dyn Fn(&mut OnnxLayer<'_>) -> Result<String> + Send + Sync>;

/// Options of [`Model::export_with`](crate::models::Model::export_with).
#[derive(Clone)]
pub struct ExportOptions {
    pub(crate) opset: i64,
    pub(crate) batch_size: Option<usize>,
    pub(crate) external_data: bool,
    pub(crate) mappings: HashMap<String, OnnxMapping>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { opset: 17, batch_size: None, external_data: false, mappings: HashMap::new() }
    }
}

impl std::fmt::Debug for ExportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportOptions")
            .field("opset", &self.opset)
            .field("batch_size", &self.batch_size)
            .field("external_data", &self.external_data)
            .field("mappings", &self.mappings.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The ONNX operator sets kandle writes.
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=21;

impl ExportOptions {
    /// The ONNX operator set (Keras' `opset_version`; default 17, which ONNX Runtime 1.12 and
    /// later, tract and TensorRT 8.6 read); 13 to 21.
    pub fn opset_version(mut self, opset: i64) -> Self {
        self.opset = opset;
        self
    }
    /// A fixed batch size (default: free, the dimension named `batch`).
    pub fn batch_size(mut self, batch: usize) -> Self {
        self.batch_size = Some(batch);
        self
    }
    /// Writes the weights to `<file>.data` beside the model (ONNX's external data), whatever
    /// their size (default: only past 2 GB, the most a protocol buffer holds).
    pub fn external_data(mut self, on: bool) -> Self {
        self.external_data = on;
        self
    }
    /// How to export the layers of class `class` (a user-defined layer's `class_name()`; a
    /// built-in class's mapping is replaced):
    ///
    /// ```
    /// use kandle::export::{ExportOptions, OnnxAttribute};
    /// // A layer that computes x * sigmoid(beta x).
    /// let options = ExportOptions::default().layer_mapping("Swish", |layer| {
    ///     let beta = layer.config()["beta"].as_f64().unwrap_or(1.0) as f32;
    ///     let x = layer.input(0)?;
    ///     let b = layer.constant("beta", &[], &[beta])?;
    ///     let bx = layer.node("Mul", &[&x, &b], &[])?;
    ///     let s = layer.node("Sigmoid", &[&bx], &[])?;
    ///     layer.node("Mul", &[&x, &s], &[])
    /// });
    /// # let _ = OnnxAttribute::Int(1);
    /// ```
    pub fn layer_mapping(
        mut self,
        class: impl Into<String>,
        mapping: impl Fn(&mut OnnxLayer<'_>) -> Result<String> + Send + Sync + 'static,
    ) -> Self {
        self.mappings.insert(class.into(), Arc::new(mapping));
        self
    }

    pub(crate) fn check(&self) -> Result<()> {
        if !OPSETS.contains(&self.opset) {
            return Err(Error::invalid(
                "opset_version",
                format!(
                    "expected an ONNX operator set from {} to {}, received {}",
                    OPSETS.start(),
                    OPSETS.end(),
                    self.opset
                ),
            ));
        }
        if self.batch_size == Some(0) {
            return Err(Error::invalid("batch_size", "expected at least 1, received 0"));
        }
        Ok(())
    }
}

/// A model as the exporters read it: its graph with the models inside it inlined, in
/// inference mode. Values are numbered: the inputs first, then node `k`'s output is value
/// `inputs.len() + k`.
#[cfg_attr(not(feature = "onnx"), allow(dead_code))]
pub(crate) struct FlatGraph {
    pub name: String,
    /// Each input's name and shape (without the batch axis).
    pub inputs: Vec<(String, Vec<usize>)>,
    pub nodes: Vec<FlatNode>,
    /// Each output's name and value.
    pub outputs: Vec<(String, usize)>,
}

/// One call of a layer.
#[cfg_attr(not(feature = "onnx"), allow(dead_code))]
pub(crate) struct FlatNode {
    pub class: String,
    /// The layer's name, prefixed by the models it is inside (`mobilenetv2_1.00_224/Conv1`).
    pub name: String,
    /// The layer's configuration (`Layer::get_config`, as JSON).
    pub config: serde_json::Value,
    pub weights: Vec<(String, Tensor)>,
    pub inputs: Vec<usize>,
    pub output_shape: Vec<usize>,
    /// The mode the call fixed (`layer(x, training=True)`), if any.
    pub training: Option<bool>,
}

/// A call of a user-defined layer being exported, for its [`OnnxMapping`]: its inputs, its
/// configuration and weights, and the means to add ONNX nodes and constants.
pub struct OnnxLayer<'a> {
    #[cfg(feature = "onnx")]
    pub(crate) builder: &'a mut builder::Builder,
    #[cfg(not(feature = "onnx"))]
    pub(crate) builder: std::marker::PhantomData<&'a ()>,
    pub(crate) node: &'a FlatNode,
    pub(crate) inputs: Vec<String>,
    pub(crate) input_shapes: Vec<Vec<usize>>,
}

impl OnnxLayer<'_> {
    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.node.name
    }
    /// The layer's configuration, as its `get_config` wrote it.
    pub fn config(&self) -> &serde_json::Value {
        &self.node.config
    }
    /// The name of input `i` (channels last, as the layer receives it).
    ///
    /// # Errors
    /// When the layer has fewer inputs.
    pub fn input(&self, i: usize) -> Result<String> {
        self.inputs.get(i).cloned().ok_or_else(|| {
            Error::invalid(
                "input",
                format!("layer {} has {} inputs, asked for input {i}", self.node.name, self.inputs.len()),
            )
        })
    }
    /// The shapes of the inputs, without the batch axis.
    pub fn input_shapes(&self) -> &[Vec<usize>] {
        &self.input_shapes
    }
    /// The shape of the output, without the batch axis.
    pub fn output_shape(&self) -> &[usize] {
        &self.node.output_shape
    }
    /// The layer's weight `name` (as its `weights()` names it).
    ///
    /// # Errors
    /// When the layer has no such weight.
    pub fn weight(&self, name: &str) -> Result<&Tensor> {
        self.node.weights.iter().find(|(n, _)| n == name).map(|(_, t)| t).ok_or_else(|| {
            Error::invalid(
                "weight",
                format!(
                    "layer {} has no weight {name:?} (it has {:?})",
                    self.node.name,
                    self.node.weights.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
                ),
            )
        })
    }
}

#[cfg(feature = "onnx")]
impl OnnxLayer<'_> {
    /// Adds a constant (an initializer) of `dims` holding `values`; returns its name.
    ///
    /// # Errors
    /// When `values` does not have `dims`' number of elements.
    pub fn constant(&mut self, name: &str, dims: &[usize], values: &[f32]) -> Result<String> {
        let want: usize = dims.iter().product();
        if want != values.len() {
            return Err(Error::invalid(
                "values",
                format!("expected {want} values for dims {dims:?}, received {}", values.len()),
            ));
        }
        let hint = format!("{}/{name}", self.node.name);
        Ok(self.builder.f32_const(&hint, dims, values))
    }
    /// Adds a constant holding a tensor (a weight, say); returns its name.
    ///
    /// # Errors
    /// When the tensor cannot be read as f32.
    pub fn tensor(&mut self, name: &str, t: &Tensor) -> Result<String> {
        let hint = format!("{}/{name}", self.node.name);
        self.builder.tensor_const(&hint, t)
    }
    /// Adds a node of the default domain (`op_type` as ONNX names it, one output); returns the
    /// output's name.
    ///
    /// # Errors
    /// Never for now; kept fallible for checks to come.
    pub fn node(&mut self, op_type: &str, inputs: &[&str], attributes: &[(&str, OnnxAttribute)]) -> Result<String> {
        let attrs = attributes.iter().map(|(n, a)| builder::attribute(n, a)).collect();
        let hint = format!("{}/{op_type}", self.node.name);
        Ok(self.builder.node(op_type, &hint, inputs, attrs))
    }
}
