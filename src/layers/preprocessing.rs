//! Preprocessing layers, as Keras' `layers/preprocessing/`: `Rescaling`, with its own backward
//! pass.

use super::{
    common_layer_methods, common_trait_methods, single_input, Backward, CallContext, Capabilities, Common, Config,
    Ending, Layer, Saved,
};
use crate::error::{Error, Result};
use candle_core::Tensor;

/// `x * scale + offset`, as `keras.layers.Rescaling` (Keras' default `offset 0`): the usual
/// first layer `Rescaling::new(1.0 / 255.0)`.
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
    scale: f64,
    offset: f64,
    built: Option<Vec<usize>>,
}

impl Rescaling {
    /// Multiplies by `scale`.
    pub fn new(scale: f64) -> Self {
        Rescaling { scale, ..Self::default() }
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
        if !(self.scale.is_finite() && self.offset.is_finite()) {
            return Err(Error::invalid(
                "scale",
                format!(
                    "{}: expected finite scale and offset, received {} and {}",
                    self.common.label("Rescaling"),
                    self.scale,
                    self.offset
                ),
            ));
        }
        Ok(input_shape.to_vec())
    }
    super::weightless_build!();
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(x.affine(self.scale, self.offset)?)
    }

    fn get_config(&self) -> Config {
        Config::new().set("scale", self.scale).set("offset", self.offset)
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
        Ok((vec![Some(dy.affine(self.scale, 0.0)?)], Vec::new()))
    }
}
