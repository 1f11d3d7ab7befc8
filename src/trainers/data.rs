//! The training loop's data interface, as Keras 3's `trainers/data_adapters/`: the
//! [`BatchGenerator`] trait every source of batches implements (`flow`, `flow_from_directory`,
//! `image_dataset_from_directory`, a user's own, and the arrays given to `fit`), the
//! [`Batch`] it yields, and the checks and conversions between the user's data and the model's
//! inputs and outputs.

use super::TraineeState;
use crate::error::{Error, Result};
use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::sync::{Arc, Mutex};

/// The data of `fit`, `evaluate` and `predict`: one tensor for a model of one input (or
/// output), or one per input (or output), in order, as a slice, an array or a `Vec`.
///
/// ```
/// use kandle::trainers::Arrays;
/// use candle_core::{DType, Device, Tensor};
/// let a = Tensor::zeros((4, 2), DType::F32, &Device::Cpu)?;
/// let b = Tensor::zeros((4, 3), DType::F32, &Device::Cpu)?;
/// assert_eq!((&a).into_arrays().len(), 1);
/// assert_eq!([&a, &b].into_arrays().len(), 2);
/// assert_eq!(vec![a, b].into_arrays().len(), 2);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub trait Arrays {
    /// The tensors, in order.
    fn into_arrays(self) -> Vec<Tensor>;
}

impl Arrays for &Tensor {
    fn into_arrays(self) -> Vec<Tensor> {
        vec![self.clone()]
    }
}
impl Arrays for Tensor {
    fn into_arrays(self) -> Vec<Tensor> {
        vec![self]
    }
}
impl Arrays for &[Tensor] {
    fn into_arrays(self) -> Vec<Tensor> {
        self.to_vec()
    }
}
impl Arrays for &[&Tensor] {
    fn into_arrays(self) -> Vec<Tensor> {
        self.iter().map(|t| (*t).clone()).collect()
    }
}
impl<const N: usize> Arrays for [Tensor; N] {
    fn into_arrays(self) -> Vec<Tensor> {
        self.to_vec()
    }
}
impl<const N: usize> Arrays for &[Tensor; N] {
    fn into_arrays(self) -> Vec<Tensor> {
        self.to_vec()
    }
}
impl<const N: usize> Arrays for [&Tensor; N] {
    fn into_arrays(self) -> Vec<Tensor> {
        self.iter().map(|t| (*t).clone()).collect()
    }
}
impl Arrays for Vec<Tensor> {
    fn into_arrays(self) -> Vec<Tensor> {
        self
    }
}
impl Arrays for &Vec<Tensor> {
    fn into_arrays(self) -> Vec<Tensor> {
        self.clone()
    }
}

/// A source of training batches, indexed by epoch and batch (Keras' `PyDataset`, and its
/// `Sequence` before it): `fit_generator`, `evaluate_generator` and `predict_generator` read
/// them, from worker threads, so batch `index` of epoch `epoch` must be a pure function of
/// both (then any number of workers gives the same run).
///
/// ```
/// use kandle::prelude::*;
/// use kandle::trainers::BatchGenerator;
/// /// Batches of 2 from 6 samples of one feature, `y = 2 x`.
/// struct Twice;
/// impl BatchGenerator for Twice {
///     fn len(&self) -> usize { 3 }
///     fn samples(&self) -> usize { 6 }
///     fn batch(&self, _epoch: usize, index: usize) -> kandle::Result<(Tensor, Tensor)> {
///         let x = Tensor::new(&[[index as f32], [index as f32 + 0.5]], &Device::Cpu)?;
///         Ok((x.clone(), (x * 2.0)?))
///     }
/// }
/// let model = Sequential::new().seed(0).add(Dense::new(1).input_shape(1));
/// model.compile(SGD::new(0.05), Loss::MeanSquaredError, ())?;
/// model.fit_generator(&Twice, FitOptions::default().epochs(30).verbose(0))?; // a reference is a generator too
/// assert!(model.evaluate_generator(&Twice, None)?.loss < 0.1);
/// # Ok::<(), kandle::Error>(())
/// ```
pub trait BatchGenerator: Send + Sync {
    /// Batches per epoch: `ceil(samples / batch_size)`.
    fn len(&self) -> usize;
    /// Whether an epoch has no batch.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The number of samples.
    fn samples(&self) -> usize;
    /// Batch `index` of epoch `epoch`: one input and one target; the last batch of an epoch
    /// may be partial.
    ///
    /// # Errors
    /// An unreadable image, or invalid generator parameters.
    fn batch(&self, epoch: usize, index: usize) -> Result<(Tensor, Tensor)>;
    /// Checks the generator's parameters before training starts.
    ///
    /// # Errors
    /// Invalid parameters.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    /// Batch `index` of epoch `epoch` with every input, target and sample weight, as the
    /// training loop reads it. Default: [`BatchGenerator::batch`]'s one input and one target.
    ///
    /// # Errors
    /// As [`BatchGenerator::batch`].
    fn batch_data(&self, epoch: usize, index: usize) -> Result<Batch> {
        let (x, y) = self.batch(epoch, index)?;
        Ok(Batch::new(vec![x], vec![y]))
    }
}

/// A reference or a shared pointer to a generator is the generator: one validation set serves
/// `fit` and then `evaluate`.
macro_rules! forward_generator {
    ($($ptr:ty),*) => {$(
        impl<G: BatchGenerator + ?Sized> BatchGenerator for $ptr {
            fn len(&self) -> usize {
                (**self).len()
            }
            fn samples(&self) -> usize {
                (**self).samples()
            }
            fn batch(&self, epoch: usize, index: usize) -> Result<(Tensor, Tensor)> {
                (**self).batch(epoch, index)
            }
            fn validate(&self) -> Result<()> {
                (**self).validate()
            }
            fn batch_data(&self, epoch: usize, index: usize) -> Result<Batch> {
                (**self).batch_data(epoch, index)
            }
        }
    )*};
}
forward_generator!(&G, Arc<G>);

/// One batch of a [`BatchGenerator`]: an array per input and per output, and optional per-sample
/// weights (Keras' `(x, y, sample_weight)` tuple).
#[derive(Debug, Clone)]
pub struct Batch {
    /// One tensor per model input.
    pub x: Vec<Tensor>,
    /// One tensor per model output.
    pub y: Vec<Tensor>,
    /// Keras' per-sample weights `(N,)`, or none.
    pub sample_weight: Option<Tensor>,
    /// Already checked and converted for the model (the arrays given to `fit`).
    pub(crate) prepared: bool,
}

impl Batch {
    /// A batch of inputs `x` and targets `y`, without sample weights.
    pub fn new(x: Vec<Tensor>, y: Vec<Tensor>) -> Self {
        Batch { x, y, sample_weight: None, prepared: false }
    }
}

/// Prepared data: inputs of the model's dtype on its device, targets prepared by each loss.
pub(crate) struct Data {
    pub xs: Vec<Tensor>,
    pub ys: Vec<Tensor>,
    /// Keras' per-sample weights `(N,)`, in the model's dtype (`sample_weight`, or
    /// `class_weight` turned into them).
    pub sw: Option<Tensor>,
}

impl Data {
    pub fn len(&self) -> usize {
        self.xs[0].dims()[0]
    }

    pub fn narrow(&self, start: usize, len: usize) -> Result<Data> {
        let cut = |v: &[Tensor]| v.iter().map(|t| t.narrow(0, start, len).map_err(Error::from)).collect::<Result<_>>();
        let sw = self.sw.as_ref().map(|w| w.narrow(0, start, len)).transpose()?;
        Ok(Data { xs: cut(&self.xs)?, ys: cut(&self.ys)?, sw })
    }

    fn select(&self, idx: &Tensor) -> Result<Data> {
        let pick = |v: &[Tensor]| v.iter().map(|t| t.index_select(idx, 0).map_err(Error::from)).collect::<Result<_>>();
        let sw = self.sw.as_ref().map(|w| w.index_select(idx, 0)).transpose()?;
        Ok(Data { xs: pick(&self.xs)?, ys: pick(&self.ys)?, sw })
    }

    /// The data as a prepared batch.
    pub fn into_batch(self) -> Batch {
        Batch { x: self.xs, y: self.ys, sample_weight: self.sw, prepared: true }
    }
}

/// A batch as the model takes it: prepared already (arrays), or checked and converted now.
pub(crate) fn prepare_batch(state: &mut impl TraineeState, b: Batch) -> Result<Data> {
    if b.prepared {
        return Ok(Data { xs: b.x, ys: b.y, sw: b.sample_weight });
    }
    let mut d = prepare(state, &b.x, &b.y, "x", "y")?;
    if let Some(w) = &b.sample_weight {
        d.sw = sample_weights(state, &d, Some(w), None)?;
    }
    Ok(d)
}

/// Keras' `sample_weight` (`(N,)` or `(N, 1)`, finite and non-negative) or `class_weight`
/// (weights by class index, 1 for a class not listed; targets one-hot or indices, one
/// output only) as per-sample weights of the model's dtype.
pub(crate) fn sample_weights(
    state: &impl TraineeState,
    data: &Data,
    sample_weight: Option<&Tensor>,
    class_weight: Option<&std::collections::HashMap<usize, f64>>,
) -> Result<Option<Tensor>> {
    let n = data.len();
    let w: Vec<f64> = match (sample_weight, class_weight) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "class_weight",
                "`class_weight` and `sample_weight` cannot be given together, as in Keras",
            ))
        }
        (None, None) => return Ok(None),
        (Some(sw), None) => {
            let dims = sw.dims();
            if !(dims == [n] || dims == [n, 1]) {
                return Err(Error::Shape {
                    context: "sample_weight".into(),
                    expected: format!("({n},), one weight per sample"),
                    received: format!("{dims:?}"),
                });
            }
            let w = sw.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
            if let Some((i, v)) = w.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
                return Err(Error::invalid(
                    "sample_weight",
                    format!("expected finite weights >= 0, received {v} at index {i}"),
                ));
            }
            w
        }
        (None, Some(cw)) => {
            if data.ys.len() != 1 {
                return Err(Error::invalid(
                    "class_weight",
                    format!(
                        "class_weight is only supported for a model of one output, as in Keras; this one has {}",
                        data.ys.len()
                    ),
                ));
            }
            if let Some((c, v)) = cw.iter().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
                return Err(Error::invalid(
                    "class_weight",
                    format!("expected finite weights >= 0, received {v} for class {c}"),
                ));
            }
            let y = &data.ys[0];
            let classes = if y.rank() > 1 && *y.dims().last().unwrap_or(&1) != 1 {
                y.argmax(candle_core::D::Minus1)?.flatten_all()?
            } else {
                y.flatten_all()?
            };
            let classes = classes.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
            // As Keras: NumPy's rounding (half to even); a label that is no class index (negative,
            // not finite) weighs 1.
            let weight = |c: f64| {
                let c = c.round_ties_even();
                (c.is_finite() && c >= 0.0).then(|| cw.get(&(c as usize)).copied()).flatten().unwrap_or(1.0)
            };
            classes.iter().map(|&c| weight(c)).collect()
        }
    };
    Ok(Some(Tensor::from_vec(w, n, state.device())?.to_dtype(state.dtype())?))
}

fn names(kind: &str, n: usize) -> String {
    if n == 1 {
        format!("1 array (one {kind})")
    } else {
        format!("{n} arrays (one per {kind})")
    }
}

/// Checks the inputs against the model's and converts them to its dtype and device.
pub(crate) fn prepare_x(state: &impl TraineeState, xs: &[Tensor], name: &'static str) -> Result<Vec<Tensor>> {
    let shapes = state.graph().input_shapes();
    if xs.len() != shapes.len() {
        return Err(Error::invalid(
            name,
            format!("model \"{}\" expects {}, received {}", state.name(), names("input", shapes.len()), xs.len()),
        ));
    }
    let mut n = None;
    let mut out = Vec::with_capacity(xs.len());
    for (i, (x, shape)) in xs.iter().zip(shapes).enumerate() {
        let dims = x.dims();
        let which = if xs.len() == 1 { String::new() } else { format!(" #{i}") };
        if dims.is_empty() || &dims[1..] != shape.as_slice() {
            return Err(Error::Shape {
                context: format!("input `{name}`{which} of model \"{}\"", state.name()),
                expected: crate::error::fmt_shape(true, shape),
                received: format!("{dims:?}"),
            });
        }
        if dims[0] == 0 {
            return Err(Error::invalid(name, "expected at least one sample, received an empty tensor"));
        }
        if let Some(n) = n.filter(|&n| n != dims[0]) {
            return Err(Error::invalid(
                name,
                format!("every input needs the same number of samples: #0 has {n}, #{i} has {}", dims[0]),
            ));
        }
        n = Some(dims[0]);
        out.push(x.to_device(state.device())?.to_dtype(state.dtype())?.contiguous()?);
    }
    Ok(out)
}

/// Checks inputs and targets and prepares the targets for each output's loss.
pub(crate) fn prepare(
    state: &mut impl TraineeState,
    xs: &[Tensor],
    ys: &[Tensor],
    xname: &'static str,
    yname: &'static str,
) -> Result<Data> {
    state.build()?;
    let losses = state.compiled().ok_or(Error::NotCompiled("fit"))?.losses.clone();
    let xs = prepare_x(state, xs, xname)?;
    let n = xs[0].dims()[0];
    let outputs = state.graph().output_shapes();
    if ys.len() != outputs.len() {
        return Err(Error::invalid(
            yname,
            format!("model \"{}\" expects {}, received {}", state.name(), names("output", outputs.len()), ys.len()),
        ));
    }
    let mut prepared = Vec::with_capacity(ys.len());
    for ((y, shape), loss) in ys.iter().zip(&outputs).zip(&losses) {
        let ny = y.dims().first().copied().unwrap_or(0);
        if ny != n {
            return Err(Error::invalid(yname, format!("expected as many samples as `{xname}` ({n}), received {ny}")));
        }
        prepared.push(loss.prepare_targets(&y.to_device(state.device())?, shape, state.dtype())?.contiguous()?);
    }
    Ok(Data { xs, ys: prepared, sw: None })
}

/// The arrays given to `fit`, prepared once, as a [`BatchGenerator`]: reshuffled each epoch with
/// a permutation that depends only on the seed and the epoch, so that any batch can be made
/// again (a resumed run sees the same batches) and from any thread.
pub(crate) struct ArrayBatches {
    data: Data,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
    order: Mutex<Option<(usize, Tensor)>>,
}

impl ArrayBatches {
    pub fn new(data: Data, batch_size: usize, shuffle: bool, seed: u64) -> Self {
        ArrayBatches { data, batch_size, shuffle, seed, order: Mutex::new(None) }
    }

    /// Batch `step` of `epoch` (steps past the data wrap around within the epoch's order).
    fn data_batch(&self, epoch: usize, step: usize) -> Result<Data> {
        let n = self.data.len();
        let start = (step % n.div_ceil(self.batch_size)) * self.batch_size;
        let len = self.batch_size.min(n - start);
        if !self.shuffle {
            return self.data.narrow(start, len);
        }
        let mut order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        if order.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let mut idx: Vec<u32> = (0..n as u32).collect();
            let mut rng = StdRng::seed_from_u64(self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            idx.shuffle(&mut rng);
            *order = Some((epoch, Tensor::from_vec(idx, n, self.data.xs[0].device())?));
        }
        let idx = order.as_ref().expect("order").1.narrow(0, start, len)?;
        drop(order);
        self.data.select(&idx)
    }
}

impl BatchGenerator for ArrayBatches {
    fn len(&self) -> usize {
        self.data.len().div_ceil(self.batch_size)
    }
    fn samples(&self) -> usize {
        self.data.len()
    }
    fn batch(&self, epoch: usize, index: usize) -> Result<(Tensor, Tensor)> {
        let d = self.data_batch(epoch, index)?;
        Ok((d.xs[0].clone(), d.ys[0].clone()))
    }
    fn batch_data(&self, epoch: usize, index: usize) -> Result<Batch> {
        Ok(self.data_batch(epoch, index)?.into_batch())
    }
}
