//! Regularization layers, as Keras' `layers/regularization/`: `Dropout` and `SpatialDropout2D`.

use super::{
    common_layer_methods, common_trait_methods, single_input, Backward, BuildContext, CallContext, Capabilities,
    Common, Config, Ending, Layer, Saved,
};
use crate::error::{Error, Result};
use candle_core::Tensor;
use rand::RngCore;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A dropout pass that ran in inference mode (its node called with `training` false).
struct Off;

/// Randomly sets a fraction `rate` of its inputs to 0 during training and scales the others by
/// `1 / (1 - rate)`, as `keras.layers.Dropout`; the identity at inference.
///
/// Masks come from a generator seeded by the model's seed, so a seeded run is reproducible.
#[derive(Debug)]
pub struct Dropout {
    common: Common,
    rate: f64,
    /// One draw per sample and channel, for whole feature maps (`SpatialDropout2D`).
    spatial: bool,
    /// Keras' `noise_shape` without the batch axis: `Some(1)` shares one draw along that axis,
    /// `None` (or the axis' size) draws per element (`[Some(1), Some(1), Some(1)]`: one draw per
    /// sample, EfficientNet's stochastic depth).
    noise_shape: Option<Vec<Option<usize>>>,
    seed: Option<u64>,
    calls: AtomicU64,
    built: Option<Vec<usize>>,
}

impl Dropout {
    /// A dropout layer dropping a fraction `rate` in `[0, 1)`.
    pub fn new(rate: f64) -> Self {
        Dropout {
            common: Common::default(),
            rate,
            spatial: false,
            noise_shape: None,
            seed: None,
            calls: AtomicU64::new(0),
            built: None,
        }
    }

    /// Keras' `noise_shape`, without the batch axis: the axes given as `Some(1)` share one draw
    /// (`[Some(1), Some(1), Some(1)]` keeps or drops each sample whole, as EfficientNet's
    /// stochastic depth `Dropout(rate, noise_shape=(None, 1, 1, 1))`); `None` draws along the axis.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let m = Sequential::new().seed(1).add(Dropout::new(0.5).noise_shape([Some(1), Some(1)]).input_shape((3, 4)));
    /// let y = m.call(&Tensor::ones((8, 3, 4), DType::F32, &Device::Cpu)?, true)?;
    /// for row in y.reshape((8, 12))?.to_vec2::<f32>()? {
    ///     assert!(row.iter().all(|&v| v == row[0]) && (row[0] == 0.0 || row[0] == 2.0));
    /// }
    /// # Ok::<(), kandle::Error>(())
    /// ```
    pub fn noise_shape(mut self, shape: impl IntoIterator<Item = Option<usize>>) -> Self {
        self.noise_shape = Some(shape.into_iter().collect());
        self
    }

    /// The shape of one sample's mask: the input's, with the axes that share a draw set to 1.
    fn mask_dims(&self, sample: &[usize]) -> Vec<usize> {
        if self.spatial {
            let c = sample.last().copied().unwrap_or(1);
            return sample.iter().take(sample.len().saturating_sub(1)).map(|_| 1).chain([c]).collect();
        }
        match &self.noise_shape {
            Some(ns) => sample.iter().zip(ns).map(|(&d, n)| if *n == Some(1) { 1 } else { d }).collect(),
            None => sample.to_vec(),
        }
    }

    /// `x` times the mask drawn from `seed`: element-wise, or one value per sample and channel
    /// broadcast over the feature map (spatial). The rows are masked as rows `row_offset..` of
    /// the whole batch ([`CallContext::row_offset`]: a replica's shard of it).
    fn apply_mask(&self, x: &Tensor, seed: u64, row_offset: usize) -> Result<Tensor> {
        let row = row_offset as u64;
        let d = x.dims();
        let n = d.first().copied().unwrap_or(1).max(1);
        let mask_dims = self.mask_dims(d.get(1..).unwrap_or_default());
        if mask_dims == d.get(1..).unwrap_or_default() {
            let per_row = (x.elem_count() / n) as u64;
            return Ok(crate::kernels::dropout_at(x, self.rate, seed, row * per_row)?);
        }
        let per_row: usize = mask_dims.iter().product();
        let ones = Tensor::ones((n, per_row), x.dtype(), x.device())?;
        let mask = crate::kernels::dropout_at(&ones, self.rate, seed, row * per_row as u64)?;
        let shape: Vec<usize> = [n].into_iter().chain(mask_dims).collect();
        Ok(x.broadcast_mul(&mask.reshape(shape)?)?)
    }

    common_layer_methods!();

    /// Fixes the layer's own seed (default: drawn from the model's seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The number of masks drawn so far (part of a training run's state).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Sets the number of masks drawn so far, to resume a run.
    pub fn set_calls(&self, calls: u64) {
        self.calls.store(calls, Ordering::Relaxed)
    }

    /// The seed of the next mask: the layer's seed mixed with the number of masks drawn.
    fn next_seed(&self) -> u64 {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let mut state = self.seed.unwrap_or(0) ^ call.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
        crate::random::splitmix64(&mut state)
    }
}

impl Layer for Dropout {
    fn class_name(&self) -> &'static str {
        if self.spatial {
            "SpatialDropout2D"
        } else {
            "Dropout"
        }
    }

    common_trait_methods!();

    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(Error::invalid(
                "rate",
                format!("{}: expected a float in [0, 1), received {}", self.common.label(self.class_name()), self.rate),
            ));
        }
        if self.spatial {
            super::expect_rank(|| self.common.label("SpatialDropout2D"), input_shape, 3, "(height, width, channels)")?;
        }
        if let Some(ns) = &self.noise_shape {
            let fits = ns.len() == input_shape.len()
                && ns.iter().zip(input_shape).all(|(n, &d)| n.is_none_or(|n| n == 1 || n == d));
            if !fits {
                let shown: Vec<String> = ns.iter().map(|n| n.map_or("None".to_string(), |n| n.to_string())).collect();
                return Err(Error::invalid(
                    "noise_shape",
                    format!(
                        "{}: expected one entry per input axis (without the batch axis), each None, 1 or the \
                         axis' size, for inputs of shape {}; received ({})",
                        self.common.label("Dropout"),
                        crate::error::fmt_shape(true, input_shape),
                        shown.join(", ")
                    ),
                ));
            }
        }
        Ok(input_shape.to_vec())
    }

    fn build(&mut self, input_shape: &[usize], ctx: &mut BuildContext) -> Result<Vec<usize>> {
        let out = self.compute_output_shape(input_shape)?;
        if self.seed.is_none() {
            self.seed = Some(ctx.rng.next_u64());
        }
        self.built = Some(input_shape.to_vec());
        Ok(out)
    }

    fn built(&self) -> bool {
        self.built.is_some()
    }

    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        self.forward_in(x, &CallContext { training, row_offset: 0 })
    }

    fn forward_in(&self, x: &Tensor, ctx: &CallContext) -> Result<Tensor> {
        if !ctx.training || self.rate == 0.0 {
            return Ok(x.clone());
        }
        self.apply_mask(x, self.next_seed(), ctx.row_offset)
    }

    fn state(&self) -> Vec<u64> {
        vec![self.seed.unwrap_or(0), self.calls()]
    }

    fn set_state(&mut self, state: &[u64]) {
        if let [seed, calls] = *state {
            self.seed = Some(seed);
            self.set_calls(calls);
        }
    }

    fn get_config(&self) -> Config {
        let c = Config::new().set("rate", self.rate);
        match &self.noise_shape {
            // Keras' form: the batch axis first, as None.
            Some(ns) if !self.spatial => c.set(
                "noise_shape",
                serde_json::Value::Array(
                    std::iter::once(serde_json::Value::Null)
                        .chain(ns.iter().map(|n| n.map_or(serde_json::Value::Null, |n| n.into())))
                        .collect(),
                ),
            ),
            _ => c,
        }
    }

    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities { backward: Some(self), ..Capabilities::default() }
    }
}

impl Backward for Dropout {
    fn has_backward(&self) -> bool {
        true
    }

    fn forward_saved(&self, xs: &[Tensor], _ending: Ending, ctx: &CallContext) -> Result<(Tensor, Saved)> {
        let x = single_input(|| self.common.label(self.class_name()), xs)?;
        if self.rate == 0.0 || !ctx.training {
            // Off: the backward pass passes the gradient through.
            return Ok((x.clone(), Saved { extra: Some(Arc::new(Off)), ..Saved::default() }));
        }
        let seed = self.next_seed();
        let saved = Saved { seed, row_offset: ctx.row_offset, ..Saved::default() };
        Ok((self.apply_mask(x, seed, ctx.row_offset)?, saved))
    }

    fn backward(
        &self,
        saved: &Saved,
        dy: &Tensor,
        _need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        if self.rate == 0.0 || saved.extra.as_ref().is_some_and(|e| e.is::<Off>()) {
            return Ok((vec![Some(dy.clone())], Vec::new()));
        }
        // The same seed draws the same mask: d(x * m) / dx = m.
        Ok((vec![Some(self.apply_mask(dy, saved.seed, saved.row_offset)?)], Vec::new()))
    }
}

/// Dropout of whole feature maps, as `keras.layers.SpatialDropout2D`: each sample's channel is
/// kept (scaled by `1 / (1 - rate)`) or zeroed over all its pixels. Keras' `SpatialDropout2D`
/// is a `Dropout` with a noise shape; so here: `SpatialDropout2D::new(rate)` returns a
/// [`Dropout`] that draws one value per sample and channel, named and saved as
/// `SpatialDropout2D`.
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::SpatialDropout2D;
/// let m = Sequential::new().seed(0).add(SpatialDropout2D::new(0.5).input_shape((4, 4, 8)));
/// let y = m.call(&Tensor::ones((2, 4, 4, 8), DType::F32, &Device::Cpu)?, true)?;
/// // Every channel of a sample is all kept (2.0) or all dropped (0.0).
/// let v = y.permute((0, 3, 1, 2))?.reshape((16, 16))?.to_vec2::<f32>()?;
/// assert!(v.iter().all(|row| row.iter().all(|&a| a == row[0]) && (row[0] == 0.0 || row[0] == 2.0)));
/// assert_eq!(m.layer_names(), vec!["spatial_dropout2d"]);
/// # Ok::<(), kandle::Error>(())
/// ```
pub struct SpatialDropout2D;

impl SpatialDropout2D {
    /// A dropout layer dropping a fraction `rate` in `[0, 1)` of each sample's channels.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(rate: f64) -> Dropout {
        Dropout { spatial: true, ..Dropout::new(rate) }
    }
}
