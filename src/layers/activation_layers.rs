//! Activation layers, as `keras.layers.Activation` and the ones with parameters: `ReLU`,
//! `LeakyReLU` and `Softmax`.

use super::{
    check_input, common_layer_methods, common_trait_methods, not_built, single_input, Backward, CallContext,
    Capabilities, Common, Config, Ending, Fusion, Layer, Saved,
};
use crate::activations::Activation;
use crate::error::{Error, Result};
use candle_core::Tensor;

fn same_shape(label: String, input: &[usize]) -> Result<Vec<usize>> {
    if input.is_empty() {
        return Err(Error::Shape {
            context: label,
            expected: "an input of rank >= 1".into(),
            received: crate::error::fmt_shape(true, input),
        });
    }
    Ok(input.to_vec())
}

/// The error of an ending a layer cannot take (the model's plan never asks for one).
fn cannot_end(label: String, ending: Ending) -> Error {
    Error::invalid("layer", format!("{label} cannot end a pass as {ending:?}"))
}

/// Applies an activation, as `keras.layers.Activation`. `Sequential::add(Activation::Relu)`
/// creates one.
#[derive(Debug)]
pub struct ActivationLayer {
    common: Common,
    activation: Activation,
    built: Option<Vec<usize>>,
}

impl ActivationLayer {
    /// A layer applying `activation`.
    pub fn new(activation: Activation) -> Self {
        ActivationLayer { common: Common::default(), activation, built: None }
    }

    common_layer_methods!();
}

impl Layer for ActivationLayer {
    fn class_name(&self) -> &'static str {
        "Activation"
    }

    common_trait_methods!();

    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        same_shape(self.common.label("Activation"), input_shape)
    }

    super::weightless_build!();

    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        self.activation.apply(x)
    }

    fn get_config(&self) -> Config {
        Config::new().set("activation", self.activation.name())
    }

    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities { backward: Some(self), fusion: Some(self), ..Capabilities::default() }
    }
}

impl Fusion for ActivationLayer {
    fn activation(&self) -> Activation {
        self.activation
    }

    fn standalone_activation(&self) -> Option<Activation> {
        Some(self.activation)
    }

    fn forward_ending(&self, x: &Tensor, ending: Ending, ctx: &CallContext) -> Result<Tensor> {
        match ending {
            Ending::PreActivation => Ok(x.clone()),
            Ending::Own => self.forward(x, ctx.training),
            other => Err(cannot_end(self.common.label("Activation"), other)),
        }
    }
}

impl Backward for ActivationLayer {
    fn has_backward(&self) -> bool {
        true
    }

    fn forward_saved(&self, xs: &[Tensor], ending: Ending, _ctx: &CallContext) -> Result<(Tensor, Saved)> {
        let x = single_input(|| self.common.label("Activation"), xs)?;
        if ending.pre_activation() {
            return Ok((x.clone(), Saved { ending, ..Saved::default() }));
        }
        let y = self.activation.apply(x)?;
        let tensors = if self.activation.needs_input() { vec![y.clone(), x.clone()] } else { vec![y.clone()] };
        Ok((y, Saved { tensors, ..Saved::default() }))
    }

    fn backward(
        &self,
        saved: &Saved,
        dy: &Tensor,
        _need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        if saved.ending.pre_activation() {
            return Ok((vec![Some(dy.clone())], Vec::new()));
        }
        let y = &saved.tensors[0];
        let dx = match saved.tensors.get(1) {
            Some(x) => self.activation.gradient_with_input(x, y, dy)?,
            None => self.activation.gradient(y, dy)?,
        };
        Ok((vec![Some(dx)], Vec::new()))
    }
}

/// Rectified linear unit with Keras' options, as `keras.layers.ReLU`:
/// `f(x) = min(max_value, x)` for `x >= threshold`, else `negative_slope * (x - threshold)`.
///
/// Defaults: no `max_value`, `negative_slope 0`, `threshold 0`.
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::ReLU;
/// let m = Sequential::new().add(ReLU::new().max_value(6.0).input_shape(3));
/// let y = m.call(&Tensor::new(&[[-1f32, 3., 9.]], &Device::Cpu)?, false)?;
/// assert_eq!(y.to_vec2::<f32>()?, vec![vec![0., 3., 6.]]);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct ReLU {
    common: Common,
    max_value: Option<f64>,
    negative_slope: f64,
    threshold: f64,
    built: Option<Vec<usize>>,
}

impl ReLU {
    /// A ReLU with Keras' defaults.
    pub fn new() -> Self {
        Self::default()
    }
    common_layer_methods!();
    /// The largest output (default: none).
    pub fn max_value(mut self, v: f64) -> Self {
        self.max_value = Some(v);
        self
    }
    /// Slope below the threshold (default 0).
    pub fn negative_slope(mut self, s: f64) -> Self {
        self.negative_slope = s;
        self
    }
    /// Where the linear part starts (default 0).
    pub fn threshold(mut self, t: f64) -> Self {
        self.threshold = t;
        self
    }
}

impl Layer for ReLU {
    fn class_name(&self) -> &'static str {
        "ReLU"
    }
    common_trait_methods!();
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        if self.max_value.is_some_and(|m| m < 0.0) || self.negative_slope < 0.0 {
            return Err(Error::invalid(
                "max_value",
                format!("{}: max_value and negative_slope must be >= 0", self.common.label("ReLU")),
            ));
        }
        same_shape(self.common.label("ReLU"), input_shape)
    }
    super::weightless_build!();
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let input = self.built.as_ref().ok_or_else(|| not_built(self.common.label("ReLU")))?;
        check_input(|| self.common.label("ReLU"), input, x)?;
        if let Some(y) = crate::kernels::relu_general(x, self.threshold, self.negative_slope, self.max_value)? {
            return Ok(y);
        }
        let below = (x - self.threshold)?.affine(self.negative_slope, 0.0)?;
        let y = x.ge(self.threshold)?.where_cond(x, &below)?;
        Ok(match self.max_value {
            Some(m) => y.minimum(m)?,
            None => y,
        })
    }
    fn get_config(&self) -> Config {
        Config::new()
            .set("max_value", self.max_value)
            .set("negative_slope", self.negative_slope)
            .set("threshold", self.threshold)
    }
    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities { backward: Some(self), fusion: Some(self), ..Capabilities::default() }
    }
}

impl Fusion for ReLU {
    /// With Keras' defaults, `ReLU()` is the plain ReLU, and `ReLU(6.0)` ReLU6 (as Keras' `relu`
    /// calls `relu6` then): a model runs them inside the Conv2D, Dense or BatchNormalization
    /// before it, as it does `Activation('relu')` and `Activation('relu6')`.
    fn standalone_activation(&self) -> Option<Activation> {
        if self.negative_slope != 0.0 || self.threshold != 0.0 {
            return None;
        }
        match self.max_value {
            None => Some(Activation::Relu),
            Some(6.0) => Some(Activation::Relu6),
            Some(_) => None,
        }
    }
    fn forward_ending(&self, x: &Tensor, ending: Ending, ctx: &CallContext) -> Result<Tensor> {
        match ending {
            Ending::Own => self.forward(x, ctx.training),
            other => Err(cannot_end(self.common.label("ReLU"), other)),
        }
    }
}

impl Backward for ReLU {
    fn has_backward(&self) -> bool {
        true
    }
    fn forward_saved(&self, xs: &[Tensor], _ending: Ending, _ctx: &CallContext) -> Result<(Tensor, Saved)> {
        let x = single_input(|| self.common.label("ReLU"), xs)?;
        Ok((self.forward(x, true)?, Saved { tensors: vec![x.clone()], ..Saved::default() }))
    }
    fn backward(
        &self,
        saved: &Saved,
        dy: &Tensor,
        _need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        // 1 on the linear part (below max_value), negative_slope below the threshold, 0 above
        // max_value.
        let x = &saved.tensors[0];
        if let Some(dx) = crate::kernels::relu_general_grad(x, dy, self.threshold, self.negative_slope, self.max_value)?
        {
            return Ok((vec![Some(dx)], Vec::new()));
        }
        let above = x.ge(self.threshold)?;
        let slope = above.where_cond(&x.ones_like()?, &x.ones_like()?.affine(self.negative_slope, 0.0)?)?;
        let slope = match self.max_value {
            Some(m) => (slope * x.lt(m)?.to_dtype(x.dtype())?)?,
            None => slope,
        };
        Ok((vec![Some((dy * slope)?)], Vec::new()))
    }
}

/// Leaky ReLU, as `keras.layers.LeakyReLU`: `x` for `x >= 0`, else `negative_slope * x`
/// (Keras 3's default slope: 0.3).
#[derive(Debug)]
pub struct LeakyReLU {
    common: Common,
    negative_slope: f64,
    built: Option<Vec<usize>>,
}

impl Default for LeakyReLU {
    fn default() -> Self {
        LeakyReLU { common: Common::default(), negative_slope: 0.3, built: None }
    }
}

impl LeakyReLU {
    /// A leaky ReLU with Keras' default slope 0.3.
    pub fn new() -> Self {
        Self::default()
    }
    common_layer_methods!();
    /// Slope for negative inputs (default 0.3).
    pub fn negative_slope(mut self, s: f64) -> Self {
        self.negative_slope = s;
        self
    }
}

impl Layer for LeakyReLU {
    fn class_name(&self) -> &'static str {
        "LeakyReLU"
    }
    common_trait_methods!();
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        if self.negative_slope.is_nan() || self.negative_slope < 0.0 {
            return Err(Error::invalid(
                "negative_slope",
                format!("expected a number >= 0, received {}", self.negative_slope),
            ));
        }
        same_shape(self.common.label("LeakyReLU"), input_shape)
    }
    super::weightless_build!();
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let input = self.built.as_ref().ok_or_else(|| not_built(self.common.label("LeakyReLU")))?;
        check_input(|| self.common.label("LeakyReLU"), input, x)?;
        Ok(x.ge(0.0)?.where_cond(x, &x.affine(self.negative_slope, 0.0)?)?)
    }
    fn get_config(&self) -> Config {
        Config::new().set("negative_slope", self.negative_slope)
    }
    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities { backward: Some(self), ..Capabilities::default() }
    }
}

impl Backward for LeakyReLU {
    fn has_backward(&self) -> bool {
        true
    }
    fn forward_saved(&self, xs: &[Tensor], _ending: Ending, _ctx: &CallContext) -> Result<(Tensor, Saved)> {
        let x = single_input(|| self.common.label("LeakyReLU"), xs)?;
        Ok((self.forward(x, true)?, Saved { tensors: vec![x.clone()], ..Saved::default() }))
    }
    fn backward(
        &self,
        saved: &Saved,
        dy: &Tensor,
        _need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        let x = &saved.tensors[0];
        Ok((vec![Some(x.ge(0.0)?.where_cond(dy, &dy.affine(self.negative_slope, 0.0)?)?)], Vec::new()))
    }
}

/// Softmax over the last axis, as `keras.layers.Softmax()`. As a final layer it fuses with
/// the cross-entropy losses, like `Dense(..., activation='softmax')`.
#[derive(Debug, Default)]
pub struct Softmax {
    common: Common,
    built: Option<Vec<usize>>,
}

impl Softmax {
    /// A softmax layer.
    pub fn new() -> Self {
        Self::default()
    }
    common_layer_methods!();
}

impl Layer for Softmax {
    fn class_name(&self) -> &'static str {
        "Softmax"
    }
    common_trait_methods!();
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        same_shape(self.common.label("Softmax"), input_shape)
    }
    super::weightless_build!();
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Activation::Softmax.apply(x)
    }
    fn get_config(&self) -> Config {
        Config::new().set("axis", -1)
    }
    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities { backward: Some(self), fusion: Some(self), ..Capabilities::default() }
    }
}

impl Fusion for Softmax {
    fn activation(&self) -> Activation {
        Activation::Softmax
    }
    fn forward_ending(&self, x: &Tensor, ending: Ending, ctx: &CallContext) -> Result<Tensor> {
        match ending {
            Ending::PreActivation => Ok(x.clone()),
            Ending::Own => self.forward(x, ctx.training),
            other => Err(cannot_end(self.common.label("Softmax"), other)),
        }
    }
}

impl Backward for Softmax {
    fn has_backward(&self) -> bool {
        true
    }
    fn forward_saved(&self, xs: &[Tensor], ending: Ending, _ctx: &CallContext) -> Result<(Tensor, Saved)> {
        let x = single_input(|| self.common.label("Softmax"), xs)?;
        if ending.pre_activation() {
            return Ok((x.clone(), Saved { ending, ..Saved::default() }));
        }
        let y = Activation::Softmax.apply(x)?;
        Ok((y.clone(), Saved { tensors: vec![y], ..Saved::default() }))
    }
    fn backward(
        &self,
        saved: &Saved,
        dy: &Tensor,
        _need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        if saved.ending.pre_activation() {
            return Ok((vec![Some(dy.clone())], Vec::new()));
        }
        Ok((vec![Some(Activation::Softmax.gradient(&saved.tensors[0], dy)?)], Vec::new()))
    }
}
