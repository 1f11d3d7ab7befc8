//! `Rescaling`, with its own backward pass.

use crate::error::{Error, Result};
use crate::layers::{
    common_layer_methods, common_trait_methods, single_input, Backward, CallContext, Capabilities, Common, Config,
    Ending, Layer, Saved,
};
use candle_core::Tensor;

/// `x * scale + offset`, as `keras.layers.Rescaling` (Keras' default `offset 0`): the usual
/// first layer `Rescaling::new(1.0 / 255.0)`. Keras' list of scales, one per channel (the last
/// axis), is [`Rescaling::per_channel`].
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::Rescaling;
/// let m = Sequential::new().add(Rescaling::new(1.0 / 127.5).offset(-1.0).input_shape(2));
/// let y = m.predict(&Tensor::new(&[[0f32, 255.]], &Device::Cpu)?, 1)?;
/// assert_eq!(y.to_vec2::<f32>()?, vec![vec![-1., 1.]]);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct Rescaling {
    common: Common,
    /// One scale, or one per channel.
    scale: Vec<f64>,
    offset: f64,
    built: Option<Vec<usize>>,
}

impl Rescaling {
    /// Multiplies by `scale`.
    pub fn new(scale: f64) -> Self {
        Rescaling { scale: vec![scale], ..Self::default() }
    }

    /// Multiplies channel `c` (the last axis) by `scales[c]`, as Keras'
    /// `Rescaling(scale=[...])` (EfficientNet's ImageNet stem).
    ///
    /// ```
    /// use kandle::prelude::*;
    /// use kandle::layers::Rescaling;
    /// let m = Sequential::new().add(Rescaling::per_channel([1.0, 2.0, 0.5]).input_shape((1, 3)));
    /// let y = m.predict(&Tensor::new(&[[[2f32, 2., 2.]]], &Device::Cpu)?, 1)?;
    /// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![2., 4., 1.]);
    /// # Ok::<(), kandle::Error>(())
    /// ```
    pub fn per_channel(scales: impl Into<Vec<f64>>) -> Self {
        Rescaling { scale: scales.into(), ..Self::default() }
    }

    /// `x * scale` for one scale or one per channel.
    fn scaled(&self, x: &Tensor) -> Result<Tensor> {
        match self.scale[..] {
            [s] => Ok(x.affine(s, 0.0)?),
            _ => {
                let s = Tensor::new(self.scale.iter().map(|&v| v as f32).collect::<Vec<_>>(), x.device())?
                    .to_dtype(x.dtype())?;
                Ok(x.broadcast_mul(&s)?)
            }
        }
    }
    /// Adds `offset` after scaling (default 0).
    pub fn offset(mut self, offset: f64) -> Self {
        self.offset = offset;
        self
    }
    common_layer_methods!();
}

impl Layer for Rescaling {
    fn class_name(&self) -> &'static str {
        "Rescaling"
    }
    common_trait_methods!();
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        if self.scale.is_empty() || !(self.scale.iter().all(|s| s.is_finite()) && self.offset.is_finite()) {
            return Err(Error::invalid(
                "scale",
                format!(
                    "{}: expected finite scale and offset, received {:?} and {}",
                    self.common.label("Rescaling"),
                    self.scale,
                    self.offset
                ),
            ));
        }
        if self.scale.len() > 1 && input_shape.last() != Some(&self.scale.len()) {
            return Err(Error::Shape {
                context: self.common.label("Rescaling"),
                expected: format!("inputs of {} channels (one per scale)", self.scale.len()),
                received: crate::error::fmt_shape(true, input_shape),
            });
        }
        Ok(input_shape.to_vec())
    }
    crate::layers::weightless_build!();
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let y = self.scaled(x)?;
        Ok(if self.offset == 0.0 { y } else { y.affine(1.0, self.offset)? })
    }

    fn get_config(&self) -> Config {
        let c = match self.scale[..] {
            [s] => Config::new().set("scale", s),
            _ => Config::new().set("scale", self.scale.clone()),
        };
        c.set("offset", self.offset)
    }
    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities { backward: Some(self), ..Capabilities::default() }
    }
}

impl Backward for Rescaling {
    fn has_backward(&self) -> bool {
        true
    }

    fn forward_saved(&self, xs: &[Tensor], _ending: Ending, _ctx: &CallContext) -> Result<(Tensor, Saved)> {
        let x = single_input(|| self.common.label("Rescaling"), xs)?;
        Ok((self.forward(x, true)?, Saved::default()))
    }

    fn backward(
        &self,
        _saved: &Saved,
        dy: &Tensor,
        _need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        Ok((vec![Some(self.scaled(dy)?)], Vec::new()))
    }
}
