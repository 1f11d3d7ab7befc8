//! Pooling layers, as Keras' `layers/pooling/`: `MaxPooling2D`, `AveragePooling2D`,
//! `GlobalAveragePooling2D` and `GlobalMaxPooling2D`. Each has its own backward pass; a max
//! pooling can run inside the convolution before it ([`Fusion::standalone_max_pool`]).

use super::{
    check_input, common_layer_methods, common_trait_methods, expect_rank, not_built, single_input, Backward,
    BuildContext, CallContext, Capabilities, Common, Config, Ending, Fusion, IntoPair, Layer, Padding, Saved,
};
use crate::error::{Error, Result};
use crate::kernels::{self, PoolKind, PoolParams};
use candle_core::Tensor;

#[derive(Debug)]
struct Pool {
    common: Common,
    pool_size: (usize, usize),
    strides: Option<(usize, usize)>,
    padding: Padding,
    built: Option<(Vec<usize>, PoolParams)>,
}

impl Pool {
    fn new(pool_size: (usize, usize)) -> Self {
        Pool { common: Common::default(), pool_size, strides: None, padding: Padding::Valid, built: None }
    }

    fn geometry(&self, class: &str, input: &[usize]) -> Result<(PoolParams, Vec<usize>)> {
        let label = || self.common.label(class);
        let (ph, pw) = self.pool_size;
        let (sh, sw) = self.strides.unwrap_or(self.pool_size);
        if ph == 0 || pw == 0 || sh == 0 || sw == 0 {
            return Err(Error::invalid(
                "pool_size",
                format!(
                    "{}: pool_size and strides must be positive, received {:?} and {:?}",
                    label(),
                    self.pool_size,
                    (sh, sw)
                ),
            ));
        }
        expect_rank(label, input, 3, "(height, width, channels)")?;
        let fit = |axis: usize, k: usize, s: usize| {
            self.padding.along(input[axis], k, s).ok_or_else(|| Error::Shape {
                context: label(),
                expected: format!(
                    "an input of at least {ph}x{pw} for pool_size {:?} with padding 'valid'",
                    self.pool_size
                ),
                received: crate::error::fmt_shape(true, input),
            })
        };
        let (pt, pb, oh) = fit(0, ph, sh)?;
        let (pl, pr, ow) = fit(1, pw, sw)?;
        Ok((PoolParams { pool: (ph, pw), stride: (sh, sw), padding: (pt, pb, pl, pr) }, vec![oh, ow, input[2]]))
    }

    fn build(&mut self, class: &str, input: &[usize]) -> Result<Vec<usize>> {
        let (p, out) = self.geometry(class, input)?;
        self.built = Some((input.to_vec(), p));
        Ok(out)
    }

    fn forward(&self, class: &str, kind: PoolKind, x: &Tensor) -> Result<Tensor> {
        let (input, p) = self.built.as_ref().ok_or_else(|| not_built(self.common.label(class)))?;
        check_input(|| self.common.label(class), input, x)?;
        Ok(kernels::pool2d(x, kind, *p)?)
    }

    fn config(&self) -> Config {
        let (s0, s1) = self.strides.unwrap_or(self.pool_size);
        Config::new()
            .set("pool_size", [self.pool_size.0, self.pool_size.1])
            .set("strides", [s0, s1])
            .set("padding", self.padding.name())
    }
}

macro_rules! pooling_layer {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            inner: Pool,
        }

        impl $name {
            /// A pooling over `pool_size` windows (`2` or `(2, 2)`).
            pub fn new(pool_size: impl IntoPair) -> Self {
                $name { inner: Pool::new(pool_size.into_pair()) }
            }

            /// Strides (default: `pool_size`).
            pub fn strides(mut self, strides: impl IntoPair) -> Self {
                self.inner.strides = Some(strides.into_pair());
                self
            }

            /// Padding (default [`Padding::Valid`]); with `Same`, windows that reach past the
            /// image only see its pixels.
            pub fn padding(mut self, padding: Padding) -> Self {
                self.inner.padding = padding;
                self
            }

            /// Sets the layer's name.
            pub fn name(mut self, name: impl Into<String>) -> Self {
                self.inner.common.name = Some(name.into());
                self
            }

            /// Declares the input shape (Keras' `input_shape`).
            pub fn input_shape(mut self, shape: impl super::IntoShape) -> Self {
                self.inner.common.input_shape = Some(shape.into_dims());
                self
            }
        }

        impl Layer for $name {
            fn class_name(&self) -> &'static str {
                stringify!($name)
            }
            fn name(&self) -> Option<&str> {
                self.inner.common.name.as_deref()
            }
            fn set_name(&mut self, name: String) {
                self.inner.common.name = Some(name);
            }
            fn declared_input_shape(&self) -> Option<&[usize]> {
                self.inner.common.input_shape.as_deref()
            }
            fn set_input_shape(&mut self, shape: Vec<usize>) {
                self.inner.common.input_shape = Some(shape);
            }
            fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
                Ok(self.inner.geometry(stringify!($name), input_shape)?.1)
            }
            fn build(&mut self, input_shape: &[usize], _ctx: &mut BuildContext) -> Result<Vec<usize>> {
                self.inner.build(stringify!($name), input_shape)
            }
            fn built(&self) -> bool {
                self.inner.built.is_some()
            }
            fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
                self.inner.forward(stringify!($name), $kind, x)
            }
            fn get_config(&self) -> Config {
                self.inner.config()
            }
            fn capabilities(&self) -> Capabilities<'_> {
                Capabilities { backward: Some(self), fusion: Some(self), ..Capabilities::default() }
            }
        }

        impl Fusion for $name {
            fn standalone_max_pool(&self) -> Option<(usize, usize)> {
                let (_, p) = self.inner.built.as_ref()?;
                ($kind == PoolKind::Max && p.stride == p.pool && p.padding == (0, 0, 0, 0)).then_some(p.pool)
            }
            fn forward_ending(&self, x: &Tensor, ending: Ending, ctx: &CallContext) -> Result<Tensor> {
                match ending {
                    Ending::Own => self.forward(x, ctx.training),
                    other => Err(Error::invalid(
                        "layer",
                        format!("{} cannot end a pass as {other:?}", self.inner.common.label(stringify!($name))),
                    )),
                }
            }
        }

        impl Backward for $name {
            fn has_backward(&self) -> bool {
                true
            }
            fn forward_saved(&self, xs: &[Tensor], _ending: Ending, _ctx: &CallContext) -> Result<(Tensor, Saved)> {
                let x = single_input(|| self.inner.common.label(stringify!($name)), xs)?;
                let y = self.inner.forward(stringify!($name), $kind, x)?;
                Ok((y.clone(), Saved { tensors: vec![x.clone(), y], ..Saved::default() }))
            }
            fn backward(
                &self,
                saved: &Saved,
                dy: &Tensor,
                _need_input_grad: bool,
            ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
                let (_, p) = self.inner.built.as_ref().ok_or_else(|| not_built(self.inner.common.label(stringify!($name))))?;
                let dx = kernels::pool2d_backward(&saved.tensors[0], &saved.tensors[1], dy, $kind, *p)?;
                Ok((vec![Some(dx)], Vec::new()))
            }
        }
    };
}

pooling_layer!(
    /// Max pooling over channels-last images, as `keras.layers.MaxPooling2D`.
    ///
    /// Keras' defaults: `strides = pool_size`, `padding valid`. Its gradient goes to the first
    /// maximum of each window, also on odd sizes (13x13 -> 6x6), where candle 0.11's is wrong.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let model = Sequential::new().add(MaxPooling2D::new((2, 2)).input_shape((13, 13, 4)));
    /// assert_eq!(model.output_shape()?, vec![6, 6, 4]);
    /// # Ok::<(), kandle::Error>(())
    /// ```
    MaxPooling2D,
    PoolKind::Max
);

pooling_layer!(
    /// Average pooling over channels-last images, as `keras.layers.AveragePooling2D`.
    ///
    /// Keras' defaults: `strides = pool_size`, `padding valid`; with `same` padding the average
    /// is over the pixels inside the image only, as in TensorFlow.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let model = Sequential::new().add(AveragePooling2D::new(2).padding(Padding::Same).input_shape((5, 5, 1)));
    /// assert_eq!(model.output_shape()?, vec![3, 3, 1]);
    /// # Ok::<(), kandle::Error>(())
    /// ```
    AveragePooling2D,
    PoolKind::Avg
);

/// Average over the spatial axes, as `keras.layers.GlobalAveragePooling2D`:
/// `(h, w, c)` -> `(c,)` (or `(1, 1, c)` with `keepdims`).
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::GlobalAveragePooling2D;
/// let m = Sequential::new().add(GlobalAveragePooling2D::new().input_shape((6, 6, 64)));
/// assert_eq!(m.output_shape()?, vec![64]);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct GlobalAveragePooling2D {
    common: Common,
    keepdims: bool,
    built: Option<Vec<usize>>,
}

impl GlobalAveragePooling2D {
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

impl Layer for GlobalAveragePooling2D {
    fn class_name(&self) -> &'static str {
        "GlobalAveragePooling2D"
    }
    common_trait_methods!();
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        expect_rank(|| self.common.label("GlobalAveragePooling2D"), input_shape, 3, "(height, width, channels)")?;
        Ok(if self.keepdims { vec![1, 1, input_shape[2]] } else { vec![input_shape[2]] })
    }
    super::weightless_build!();
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let input = self.built.as_ref().ok_or_else(|| not_built(self.common.label("GlobalAveragePooling2D")))?;
        check_input(|| self.common.label("GlobalAveragePooling2D"), input, x)?;
        if let Some(m) = crate::kernels::spatial_mean_f32(x)? {
            let c = input[2];
            return Ok(if self.keepdims { m.reshape((x.dims()[0], 1, 1, c))? } else { m });
        }
        Ok(if self.keepdims { x.mean_keepdim((1, 2))? } else { x.mean((1, 2))? })
    }

    fn get_config(&self) -> Config {
        Config::new().set("keepdims", self.keepdims)
    }
    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities { backward: Some(self), ..Capabilities::default() }
    }
}

impl Backward for GlobalAveragePooling2D {
    fn has_backward(&self) -> bool {
        true
    }

    fn forward_saved(&self, xs: &[Tensor], _ending: Ending, _ctx: &CallContext) -> Result<(Tensor, Saved)> {
        let x = single_input(|| self.common.label("GlobalAveragePooling2D"), xs)?;
        Ok((self.forward(x, true)?, Saved::default()))
    }

    fn backward(
        &self,
        _saved: &Saved,
        dy: &Tensor,
        _need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        let input = self.built.as_ref().ok_or_else(|| not_built(self.common.label("GlobalAveragePooling2D")))?;
        let (h, w, c) = (input[0], input[1], input[2]);
        let n = dy.dims()[0];
        let dx = (dy.reshape((n, 1, 1, c))? / (h * w) as f64)?.broadcast_as((n, h, w, c))?.contiguous()?;
        Ok((vec![Some(dx)], Vec::new()))
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

    fn get_config(&self) -> Config {
        Config::new().set("keepdims", self.keepdims)
    }
    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities { backward: Some(self), ..Capabilities::default() }
    }
}

impl Backward for GlobalMaxPooling2D {
    fn has_backward(&self) -> bool {
        true
    }

    fn forward_saved(&self, xs: &[Tensor], _ending: Ending, _ctx: &CallContext) -> Result<(Tensor, Saved)> {
        let x = single_input(|| self.common.label("GlobalMaxPooling2D"), xs)?;
        let y = self.forward(x, true)?;
        Ok((y.clone(), Saved { tensors: vec![x.clone(), y], ..Saved::default() }))
    }

    fn backward(
        &self,
        saved: &Saved,
        dy: &Tensor,
        _need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        let (x, y) = (&saved.tensors[0], &saved.tensors[1]);
        let (n, c) = (x.dims()[0], x.dims()[3]);
        let hit = x.broadcast_eq(&y.reshape((n, 1, 1, c))?)?.to_dtype(x.dtype())?;
        let count = hit.sum_keepdim((1, 2))?;
        let dx = hit.broadcast_mul(&dy.reshape((n, 1, 1, c))?.broadcast_div(&count)?)?;
        Ok((vec![Some(dx)], Vec::new()))
    }
}
