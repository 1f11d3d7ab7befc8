//! `Normalization`, as `keras.layers.Normalization`: `(x - mean) / sqrt(variance)`, with the
//! statistics given or learnt from data by `adapt`.

use crate::error::{Error, Result};
use crate::layers::{
    common_layer_methods, common_trait_methods, not_built, single_input, Backward, BuildContext, CallContext,
    Capabilities, Common, Config, Ending, Layer, Saved, Weight,
};
use candle_core::{DType, Tensor, Var};

/// Keras' `backend.epsilon()`: the smallest standard deviation divided by.
const EPSILON: f64 = 1e-7;

/// Normalizes its inputs feature by feature: `(x - mean) / max(sqrt(variance), 1e-7)`, as
/// `keras.layers.Normalization`. The statistics are given (`mean`, `variance`) or computed
/// from data with [`Normalization::adapt`]; then they are the layer's non-trainable weights
/// `mean`, `variance` and `count`, saved with the model (Keras' layout). `axis` is the axis
/// kept (one mean per channel by default, Keras' `axis=-1`); `None` keeps one mean for all.
/// `invert(true)` undoes a normalization: `mean + x * sqrt(variance)`.
///
/// ```
/// use kandle::prelude::*;
/// use kandle::layers::Normalization;
/// let data = Tensor::new(&[[1f32, 10.], [3., 30.]], &Device::Cpu)?;
/// let mut norm = Normalization::new();
/// norm.adapt(&data)?; // mean [2, 20], variance [1, 100]
/// let model = Sequential::new().add(norm.input_shape(2));
/// let y = model.predict(&data, 2)?;
/// assert_eq!(y.to_vec2::<f32>()?, vec![vec![-1., -1.], vec![1., 1.]]);
/// assert_eq!(model.count_params()?, 5); // mean, variance, count: non-trainable
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug)]
pub struct Normalization {
    common: Common,
    /// The axis kept (`-1`: channels); `None` reduces over every axis.
    axis: Option<isize>,
    /// Statistics given at construction (Keras' `mean=`, `variance=`): constants, no weights.
    given: Option<(Vec<f64>, Vec<f64>)>,
    /// Statistics computed by `adapt` before the layer was built: its weights' first values.
    adapted: Option<Stats>,
    invert: bool,
    built: Option<Built>,
}

#[derive(Debug, Clone)]
struct Stats {
    mean: Vec<f64>,
    variance: Vec<f64>,
    count: f64,
}

#[derive(Debug)]
struct Built {
    input: Vec<usize>,
    /// The kept axis, counted without the batch axis.
    kept: Option<usize>,
    /// Adapted statistics: `mean`, `variance`, `count` weights.
    weights: Option<(Var, Var, Var)>,
    /// Given statistics, as tensors of the kept axis' length.
    constants: Option<(Tensor, Tensor)>,
}

impl Default for Normalization {
    fn default() -> Self {
        Normalization {
            common: Common::default(),
            axis: Some(-1),
            given: None,
            adapted: None,
            invert: false,
            built: None,
        }
    }
}

impl Normalization {
    /// A normalization of each channel (Keras' `axis=-1`), to be adapted or given statistics.
    pub fn new() -> Self {
        Self::default()
    }

    /// The axis kept, counted with the batch axis as Keras does (`-1` the last, `3` the channels
    /// of images); `None` computes one mean and variance over every axis.
    pub fn axis(mut self, axis: Option<isize>) -> Self {
        self.axis = axis;
        self
    }

    /// Fixed statistics, as Keras' `Normalization(mean=..., variance=...)`: one value each, or
    /// one per entry of the kept axis. The layer then has no weights.
    pub fn mean_variance(mut self, mean: impl Into<Vec<f64>>, variance: impl Into<Vec<f64>>) -> Self {
        self.given = Some((mean.into(), variance.into()));
        self
    }

    /// Undoes the normalization instead: `mean + x * sqrt(variance)` (Keras' `invert=True`).
    pub fn invert(mut self, invert: bool) -> Self {
        self.invert = invert;
        self
    }

    common_layer_methods!();

    fn label(&self) -> String {
        self.common.label("Normalization")
    }

    /// The kept axis of a sample of `rank` axes (without the batch axis), checked.
    fn kept_axis(&self, rank: usize) -> Result<Option<usize>> {
        let Some(axis) = self.axis else { return Ok(None) };
        // Keras counts the batch axis: axis 3 of (batch, h, w, c) is the channels.
        let full = rank as isize + 1;
        let a = if axis < 0 { axis + full } else { axis };
        if a < 1 || a >= full {
            return Err(Error::invalid(
                "axis",
                format!(
                    "{}: expected an axis in [1, {}) or [-{}, -1] of inputs of rank {} (with the batch axis; \
                     the batch axis cannot be kept), received {axis}",
                    self.label(),
                    full,
                    rank,
                    full
                ),
            ));
        }
        Ok(Some(a as usize - 1))
    }

    /// Computes the mean and variance of `data` (a batch: the first axis is the samples) per
    /// entry of the kept axis, as Keras' `adapt`: the layer's weights, set now if it is built,
    /// else when it is. Call it before training (Keras adapts before `fit` too).
    ///
    /// # Errors
    /// `data` of no samples, of another shape than the layer was built for, or not finite.
    pub fn adapt(&mut self, data: &Tensor) -> Result<()> {
        let dims = data.dims();
        if dims.len() < 2 || dims.contains(&0) {
            return Err(Error::invalid(
                "data",
                format!("{}: expected a batch of samples (rank >= 2, no empty axis), received {dims:?}", self.label()),
            ));
        }
        if let Some(b) = &self.built {
            if dims[1..] != b.input[..] {
                return Err(Error::Shape {
                    context: self.label(),
                    expected: crate::error::fmt_shape(true, &b.input),
                    received: format!("adapt() data of shape {dims:?}"),
                });
            }
        }
        let kept = self.kept_axis(dims.len() - 1)?;
        let x = data.to_dtype(DType::F64)?;
        // Move the kept axis last and flatten the rest: (rows, channels).
        let (rows, c) = match kept {
            Some(k) => {
                let c = dims[k + 1];
                let moved = x.transpose(k + 1, dims.len() - 1)?.contiguous()?;
                (moved.reshape((data.elem_count() / c, c))?, c)
            }
            None => (x.reshape((data.elem_count(), 1))?, 1),
        };
        let mean = rows.mean(0)?;
        let variance = rows.broadcast_sub(&mean)?.sqr()?.mean(0)?;
        let (mean, variance): (Vec<f64>, Vec<f64>) = (mean.to_vec1()?, variance.to_vec1()?);
        if mean.iter().chain(&variance).any(|v| !v.is_finite()) {
            return Err(Error::invalid("data", format!("{}: adapt() data holds NaN or infinite values", self.label())));
        }
        debug_assert_eq!(mean.len(), c);
        let stats = Stats { mean, variance, count: rows.dim(0)? as f64 };
        match &self.built {
            Some(b) => Self::store(b, &stats)?,
            None => self.adapted = Some(stats),
        }
        Ok(())
    }

    fn store(b: &Built, s: &Stats) -> Result<()> {
        let Some((mean, variance, count)) = &b.weights else { return Ok(()) };
        let to = |v: &[f64], like: &Var| -> Result<Tensor> {
            Ok(Tensor::new(v, like.device())?.to_dtype(like.dtype())?.reshape(like.shape())?)
        };
        mean.set(&to(&s.mean, mean)?)?;
        variance.set(&to(&s.variance, variance)?)?;
        count.set(&to(&[s.count], count)?)?;
        Ok(())
    }

    /// The mean and standard deviation, shaped to broadcast against a batch.
    fn mean_std(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let b = self.built.as_ref().ok_or_else(|| not_built(self.label()))?;
        super::super::check_input(|| self.label(), &b.input, x)?;
        let (mean, variance) = match (&b.weights, &b.constants) {
            (Some((m, v, _)), _) => (m.as_detached_tensor(), v.as_detached_tensor()),
            (None, Some((m, v))) => (m.clone(), v.clone()),
            (None, None) => return Err(not_built(self.label())),
        };
        let mut shape = vec![1; x.rank()];
        if let Some(k) = b.kept {
            shape[k + 1] = b.input[k];
        }
        let (mean, variance) = (mean.to_dtype(x.dtype())?.reshape(shape.as_slice())?, variance.to_dtype(x.dtype())?);
        let std = variance.sqrt()?.maximum(EPSILON)?.reshape(shape)?;
        Ok((mean, std))
    }
}

impl Layer for Normalization {
    fn class_name(&self) -> &'static str {
        "Normalization"
    }
    common_trait_methods!();

    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        let kept = self.kept_axis(input_shape.len())?;
        let n = kept.map_or(1, |k| input_shape[k]);
        if let Some((m, v)) = &self.given {
            let fits = |s: &[f64]| s.len() == 1 || s.len() == n;
            if !fits(m) || !fits(v) || m.iter().chain(v).any(|x| !x.is_finite()) || v.iter().any(|&x| x < 0.0) {
                return Err(Error::invalid(
                    "mean",
                    format!(
                        "{}: expected finite mean and variance >= 0 of 1 or {n} values (the kept axis), received \
                         {} and {}",
                        self.label(),
                        m.len(),
                        v.len()
                    ),
                ));
            }
        }
        Ok(input_shape.to_vec())
    }

    fn build(&mut self, input_shape: &[usize], ctx: &mut BuildContext) -> Result<Vec<usize>> {
        let out = self.compute_output_shape(input_shape)?;
        let kept = self.kept_axis(input_shape.len())?;
        let n = kept.map_or(1, |k| input_shape[k]);
        let (weights, constants) = match &self.given {
            Some((m, v)) => {
                let full = |s: &[f64]| -> Result<Tensor> {
                    let s = if s.len() == 1 { vec![s[0]; n] } else { s.to_vec() };
                    Ok(Tensor::new(s, ctx.device)?.to_dtype(ctx.dtype)?)
                };
                (None, Some((full(m)?, full(v)?)))
            }
            None => {
                let zeros = crate::initializers::Initializer::Zeros;
                let ones = crate::initializers::Initializer::Ones;
                let w = (ctx.weight(&zeros, &[n])?, ctx.weight(&ones, &[n])?, ctx.weight(&zeros, &[])?);
                (Some(w), None)
            }
        };
        let built = Built { input: input_shape.to_vec(), kept, weights, constants };
        if let Some(s) = self.adapted.take() {
            if s.mean.len() != n {
                return Err(Error::Shape {
                    context: self.label(),
                    expected: format!("inputs whose kept axis has the {} entries adapt() saw", s.mean.len()),
                    received: crate::error::fmt_shape(true, input_shape),
                });
            }
            Self::store(&built, &s)?;
        }
        self.built = Some(built);
        Ok(out)
    }

    fn built(&self) -> bool {
        self.built.is_some()
    }

    fn forward(&self, x: &Tensor, _training: bool) -> Result<Tensor> {
        let (mean, std) = self.mean_std(x)?;
        Ok(if self.invert {
            x.broadcast_mul(&std)?.broadcast_add(&mean)?
        } else {
            x.broadcast_sub(&mean)?.broadcast_div(&std)?
        })
    }

    fn weights(&self) -> Vec<Weight> {
        match self.built.as_ref().and_then(|b| b.weights.as_ref()) {
            Some((m, v, c)) => vec![
                Weight::new("mean", m.clone()).non_trainable(),
                Weight::new("variance", v.clone()).non_trainable(),
                Weight::new("count", c.clone()).non_trainable(),
            ],
            None => Vec::new(),
        }
    }

    fn get_config(&self) -> Config {
        let axis = self.axis.map_or(serde_json::Value::Null, |a| serde_json::json!([a]));
        let c = Config::new().set("axis", axis).set("invert", self.invert);
        match &self.given {
            Some((m, v)) => c.set("mean", m.clone()).set("variance", v.clone()),
            None => c.set("mean", serde_json::Value::Null).set("variance", serde_json::Value::Null),
        }
    }

    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities { backward: Some(self), ..Capabilities::default() }
    }
}

impl Backward for Normalization {
    fn has_backward(&self) -> bool {
        true
    }

    fn forward_saved(&self, xs: &[Tensor], _ending: Ending, _ctx: &CallContext) -> Result<(Tensor, Saved)> {
        let x = single_input(|| self.label(), xs)?;
        let (_, std) = self.mean_std(x)?;
        Ok((self.forward(x, true)?, Saved { tensors: vec![std], ..Saved::default() }))
    }

    fn backward(
        &self,
        saved: &Saved,
        dy: &Tensor,
        _need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        let [std] = &saved.tensors[..] else {
            return Err(Error::invalid("saved", format!("{}: no saved forward pass", self.label())));
        };
        let dx = if self.invert { dy.broadcast_mul(std)? } else { dy.broadcast_div(std)? };
        Ok((vec![Some(dx)], Vec::new()))
    }
}
