//! Reshaping layers, as Keras' `layers/reshaping/`: `Flatten`, `Reshape`, `ZeroPadding2D`. Each
//! has its own backward pass.

use super::{
    check_input, common_layer_methods, common_trait_methods, expect_rank, not_built, single_input, Backward,
    BuildContext, CallContext, Capabilities, Common, Config, Ending, Layer, Saved,
};
use crate::error::{Error, Result};
use candle_core::Tensor;

/// Zeros around channels-last images, as `keras.layers.ZeroPadding2D`:
/// `((top, bottom), (left, right))` rows and columns (Keras' default `(1, 1)`).
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::ZeroPadding2D;
/// let m = Sequential::new().add(ZeroPadding2D::new(2).input_shape((28, 28, 1)));
/// assert_eq!(m.output_shape()?, vec![32, 32, 1]);
/// let m = Sequential::new().add(ZeroPadding2D::asymmetric((1, 0), (0, 3)).input_shape((5, 5, 2)));
/// assert_eq!(m.output_shape()?, vec![6, 8, 2]);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug)]
pub struct ZeroPadding2D {
    common: Common,
    /// `((top, bottom), (left, right))`.
    padding: ((usize, usize), (usize, usize)),
    built: Option<Vec<usize>>,
}

impl Default for ZeroPadding2D {
    fn default() -> Self {
        ZeroPadding2D { common: Common::default(), padding: ((1, 1), (1, 1)), built: None }
    }
}

impl ZeroPadding2D {
    /// Symmetric padding: `p` (every side) or `(rows, cols)` (top and bottom, left and right).
    pub fn new(padding: impl super::IntoPair) -> Self {
        let (r, c) = padding.into_pair();
        ZeroPadding2D { padding: ((r, r), (c, c)), ..Self::default() }
    }
    /// Keras' `((top, bottom), (left, right))`.
    pub fn asymmetric(rows: (usize, usize), cols: (usize, usize)) -> Self {
        ZeroPadding2D { padding: (rows, cols), ..Self::default() }
    }
    common_layer_methods!();
}

impl Layer for ZeroPadding2D {
    fn class_name(&self) -> &'static str {
        "ZeroPadding2D"
    }
    common_trait_methods!();
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        expect_rank(|| self.common.label("ZeroPadding2D"), input_shape, 3, "(height, width, channels)")?;
        let ((t, b), (l, r)) = self.padding;
        Ok(vec![input_shape[0] + t + b, input_shape[1] + l + r, input_shape[2]])
    }
    super::weightless_build!();
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let input = self.built.as_ref().ok_or_else(|| not_built(self.common.label("ZeroPadding2D")))?;
        check_input(|| self.common.label("ZeroPadding2D"), input, x)?;
        let ((t, b), (l, r)) = self.padding;
        if let Some(y) = crate::kernels::zero_pad(x, (t, b, l, r))? {
            return Ok(y);
        }
        Ok(x.pad_with_zeros(1, t, b)?.pad_with_zeros(2, l, r)?)
    }

    fn get_config(&self) -> Config {
        let ((t, b), (l, r)) = self.padding;
        Config::new().set("padding", vec![vec![t, b], vec![l, r]])
    }
    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities { backward: Some(self), ..Capabilities::default() }
    }
}

impl Backward for ZeroPadding2D {
    fn has_backward(&self) -> bool {
        true
    }

    fn forward_saved(&self, xs: &[Tensor], _ending: Ending, _ctx: &CallContext) -> Result<(Tensor, Saved)> {
        let x = single_input(|| self.common.label("ZeroPadding2D"), xs)?;
        Ok((self.forward(x, true)?, Saved::default()))
    }

    fn backward(
        &self,
        _saved: &Saved,
        dy: &Tensor,
        _need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        let input = self.built.as_ref().ok_or_else(|| not_built(self.common.label("ZeroPadding2D")))?;
        let ((t, _), (l, _)) = self.padding;
        let dx = match crate::kernels::crop_window(dy, (t, l, input[0], input[1]))? {
            Some(dx) => dx,
            None => dy.narrow(1, t, input[0])?.narrow(2, l, input[1])?.contiguous()?,
        };
        Ok((vec![Some(dx)], Vec::new()))
    }
}

/// Reshapes each sample, as `keras.layers.Reshape(target_shape)`; one dimension may be `-1`
/// (written `None` here: `Reshape::new([Some(4), None])`), inferred from the others.
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::Reshape;
/// let m = Sequential::new().add(Reshape::new([4, 4, 2]).input_shape(32));
/// assert_eq!(m.output_shape()?, vec![4, 4, 2]);
/// let m = Sequential::new().add(Reshape::with_unknown([Some(8), None]).input_shape((4, 4, 2)));
/// assert_eq!(m.output_shape()?, vec![8, 4]);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct Reshape {
    common: Common,
    target: Vec<Option<usize>>,
    built: Option<(Vec<usize>, Vec<usize>)>,
}

impl Reshape {
    /// Reshapes each sample to `target_shape` (without the batch axis).
    pub fn new(target_shape: impl super::IntoShape) -> Self {
        Reshape { target: target_shape.into_dims().into_iter().map(Some).collect(), ..Self::default() }
    }
    /// A target shape with one unknown dimension (`None`, Keras' `-1`).
    pub fn with_unknown(target_shape: impl IntoIterator<Item = Option<usize>>) -> Self {
        Reshape { target: target_shape.into_iter().collect(), ..Self::default() }
    }
    common_layer_methods!();
}

impl Layer for Reshape {
    fn class_name(&self) -> &'static str {
        "Reshape"
    }
    common_trait_methods!();
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        let label = self.common.label("Reshape");
        let total: usize = input_shape.iter().product();
        let known: usize = self.target.iter().flatten().product();
        let unknown = self.target.iter().filter(|d| d.is_none()).count();
        let show = |t: &[Option<usize>]| {
            let parts: Vec<String> = t.iter().map(|d| d.map_or("-1".into(), |d| d.to_string())).collect();
            format!("({})", parts.join(", "))
        };
        let fits = match unknown {
            0 => known == total,
            1 => known > 0 && total.is_multiple_of(known),
            _ => false,
        };
        if !fits || self.target.is_empty() || self.target.contains(&Some(0)) {
            return Err(Error::Shape {
                context: label,
                expected: format!(
                    "an input of as many values as the target shape {} (at most one -1)",
                    show(&self.target)
                ),
                received: crate::error::fmt_shape(true, input_shape),
            });
        }
        Ok(self.target.iter().map(|d| d.unwrap_or(total / known.max(1))).collect())
    }
    fn build(&mut self, input_shape: &[usize], _ctx: &mut BuildContext) -> Result<Vec<usize>> {
        let out = self.compute_output_shape(input_shape)?;
        self.built = Some((input_shape.to_vec(), out.clone()));
        Ok(out)
    }
    fn built(&self) -> bool {
        self.built.is_some()
    }
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let (input, out) = self.built.as_ref().ok_or_else(|| not_built(self.common.label("Reshape")))?;
        check_input(|| self.common.label("Reshape"), input, x)?;
        let dims: Vec<usize> = std::iter::once(x.dims()[0]).chain(out.iter().copied()).collect();
        Ok(x.reshape(dims)?)
    }

    fn get_config(&self) -> Config {
        let dims: Vec<i64> = self.target.iter().map(|d| d.map_or(-1, |d| d as i64)).collect();
        Config::new().set("target_shape", dims)
    }
    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities { backward: Some(self), ..Capabilities::default() }
    }
}

impl Backward for Reshape {
    fn has_backward(&self) -> bool {
        true
    }

    fn forward_saved(&self, xs: &[Tensor], _ending: Ending, _ctx: &CallContext) -> Result<(Tensor, Saved)> {
        let x = single_input(|| self.common.label("Reshape"), xs)?;
        Ok((self.forward(x, true)?, Saved::default()))
    }

    fn backward(
        &self,
        _saved: &Saved,
        dy: &Tensor,
        _need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        let (input, _) = self.built.as_ref().ok_or_else(|| not_built(self.common.label("Reshape")))?;
        let dims: Vec<usize> = std::iter::once(dy.dims()[0]).chain(input.iter().copied()).collect();
        Ok((vec![Some(dy.reshape(dims)?)], Vec::new()))
    }
}

/// Flattens each sample to one axis, as `keras.layers.Flatten` (channels-last order, so the
/// weights of a following Dense layer match Keras').
#[derive(Debug, Default)]
pub struct Flatten {
    common: Common,
    built: Option<Vec<usize>>,
}

impl Flatten {
    /// A flatten layer.
    pub fn new() -> Self {
        Self::default()
    }

    common_layer_methods!();
}

impl Layer for Flatten {
    fn class_name(&self) -> &'static str {
        "Flatten"
    }

    common_trait_methods!();

    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        if input_shape.is_empty() {
            return Err(Error::Shape {
                context: self.common.label("Flatten"),
                expected: "an input of rank >= 1".into(),
                received: crate::error::fmt_shape(true, input_shape),
            });
        }
        Ok(vec![input_shape.iter().product()])
    }

    fn build(&mut self, input_shape: &[usize], _ctx: &mut BuildContext) -> Result<Vec<usize>> {
        let out = self.compute_output_shape(input_shape)?;
        self.built = Some(input_shape.to_vec());
        Ok(out)
    }

    fn built(&self) -> bool {
        self.built.is_some()
    }

    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let input = self.built.as_ref().ok_or_else(|| not_built(self.common.label("Flatten")))?;
        check_input(|| self.common.label("Flatten"), input, x)?;
        Ok(x.flatten_from(1)?)
    }

    fn get_config(&self) -> Config {
        Config::new().set("data_format", "channels_last")
    }
    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities { backward: Some(self), ..Capabilities::default() }
    }
}

impl Backward for Flatten {
    fn has_backward(&self) -> bool {
        true
    }

    fn forward_saved(&self, xs: &[Tensor], _ending: Ending, _ctx: &CallContext) -> Result<(Tensor, Saved)> {
        let x = single_input(|| self.common.label("Flatten"), xs)?;
        Ok((self.forward(x, true)?, Saved { tensors: vec![x.clone()], ..Saved::default() }))
    }

    fn backward(
        &self,
        saved: &Saved,
        dy: &Tensor,
        _need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        Ok((vec![Some(dy.reshape(saved.tensors[0].shape())?)], Vec::new()))
    }
}
