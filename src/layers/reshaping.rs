//! Layers that move values without weights, as Keras' reshaping and preprocessing layers:
//! `ZeroPadding2D`, `Reshape`, `Rescaling`, and `GlobalMaxPooling2D`. Each has its own
//! backward pass.

use super::{
    check_input, common_layer_methods, common_trait_methods, expect_rank, not_built, BuildContext, Common, Layer, Saved,
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
        Ok(x.pad_with_zeros(1, t, b)?.pad_with_zeros(2, l, r)?)
    }
    fn has_backward(&self, _pre_activation: bool) -> bool {
        true
    }
    fn forward_saved(&self, x: &Tensor, _pre_activation: bool) -> Result<(Tensor, Saved)> {
        Ok((self.forward(x, true)?, Saved::default()))
    }
    fn backward(&self, _saved: &Saved, dy: &Tensor, _need_input_grad: bool) -> Result<(Option<Tensor>, Vec<Tensor>)> {
        let input = self.built.as_ref().ok_or_else(|| not_built(self.common.label("ZeroPadding2D")))?;
        let ((t, _), (l, _)) = self.padding;
        let dx = dy.narrow(1, t, input[0])?.narrow(2, l, input[1])?.contiguous()?;
        Ok((Some(dx), Vec::new()))
    }
    fn config(&self) -> Vec<(&'static str, String)> {
        let ((t, b), (l, r)) = self.padding;
        vec![("padding", format!("(({t}, {b}), ({l}, {r}))"))]
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
    fn has_backward(&self, _pre_activation: bool) -> bool {
        true
    }
    fn forward_saved(&self, x: &Tensor, _pre_activation: bool) -> Result<(Tensor, Saved)> {
        Ok((self.forward(x, true)?, Saved::default()))
    }
    fn backward(&self, _saved: &Saved, dy: &Tensor, _need_input_grad: bool) -> Result<(Option<Tensor>, Vec<Tensor>)> {
        let (input, _) = self.built.as_ref().ok_or_else(|| not_built(self.common.label("Reshape")))?;
        let dims: Vec<usize> = std::iter::once(dy.dims()[0]).chain(input.iter().copied()).collect();
        Ok((Some(dy.reshape(dims)?), Vec::new()))
    }
    fn config(&self) -> Vec<(&'static str, String)> {
        let parts: Vec<String> = self.target.iter().map(|d| d.map_or("-1".into(), |d| d.to_string())).collect();
        vec![("target_shape", format!("({})", parts.join(", ")))]
    }
}

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
    fn has_backward(&self, _pre_activation: bool) -> bool {
        true
    }
    fn forward_saved(&self, x: &Tensor, _pre_activation: bool) -> Result<(Tensor, Saved)> {
        Ok((self.forward(x, true)?, Saved::default()))
    }
    fn backward(&self, _saved: &Saved, dy: &Tensor, _need_input_grad: bool) -> Result<(Option<Tensor>, Vec<Tensor>)> {
        Ok((Some(dy.affine(self.scale, 0.0)?), Vec::new()))
    }
    fn config(&self) -> Vec<(&'static str, String)> {
        vec![("scale", self.scale.to_string()), ("offset", self.offset.to_string())]
    }
}

/// The maximum over the spatial axes, as `keras.layers.GlobalMaxPooling2D`: `(h, w, c)` ->
/// `(c,)` (or `(1, 1, c)` with `keepdims`). The gradient is shared among tied maxima, as
/// TensorFlow's.
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::GlobalMaxPooling2D;
/// let m = Sequential::new().add(GlobalMaxPooling2D::new().input_shape((6, 6, 64)));
/// assert_eq!(m.output_shape()?, vec![64]);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct GlobalMaxPooling2D {
    common: Common,
    keepdims: bool,
    built: Option<Vec<usize>>,
}

impl GlobalMaxPooling2D {
    /// The layer (Keras' default `keepdims false`).
    pub fn new() -> Self {
        Self::default()
    }
    common_layer_methods!();
    /// Keep the spatial axes as size 1 (default false).
    pub fn keepdims(mut self, k: bool) -> Self {
        self.keepdims = k;
        self
    }
}

impl Layer for GlobalMaxPooling2D {
    fn class_name(&self) -> &'static str {
        "GlobalMaxPooling2D"
    }
    common_trait_methods!();
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        expect_rank(|| self.common.label("GlobalMaxPooling2D"), input_shape, 3, "(height, width, channels)")?;
        Ok(if self.keepdims { vec![1, 1, input_shape[2]] } else { vec![input_shape[2]] })
    }
    super::weightless_build!();
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let input = self.built.as_ref().ok_or_else(|| not_built(self.common.label("GlobalMaxPooling2D")))?;
        check_input(|| self.common.label("GlobalMaxPooling2D"), input, x)?;
        let n = x.dims()[0];
        let m = x.reshape((n, input[0] * input[1], input[2]))?.max(1)?;
        Ok(if self.keepdims { m.reshape((n, 1, 1, input[2]))? } else { m })
    }
    fn has_backward(&self, _pre_activation: bool) -> bool {
        true
    }
    fn forward_saved(&self, x: &Tensor, _pre_activation: bool) -> Result<(Tensor, Saved)> {
        let y = self.forward(x, true)?;
        Ok((y.clone(), Saved { tensors: vec![x.clone(), y], ..Saved::default() }))
    }
    fn backward(&self, saved: &Saved, dy: &Tensor, _need_input_grad: bool) -> Result<(Option<Tensor>, Vec<Tensor>)> {
        let (x, y) = (&saved.tensors[0], &saved.tensors[1]);
        let (n, c) = (x.dims()[0], x.dims()[3]);
        let hit = x.broadcast_eq(&y.reshape((n, 1, 1, c))?)?.to_dtype(x.dtype())?;
        let count = hit.sum_keepdim((1, 2))?;
        let dx = hit.broadcast_mul(&dy.reshape((n, 1, 1, c))?.broadcast_div(&count)?)?;
        Ok((Some(dx), Vec::new()))
    }
    fn config(&self) -> Vec<(&'static str, String)> {
        vec![("keepdims", self.keepdims.to_string())]
    }
}
