//! Arrays in, batches out: checking what the user passes against the model's inputs and
//! outputs, and batching it.

use crate::error::{Error, Result};
use crate::models::core::Inner;
use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

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
}

impl Inner {
    /// Keras' `sample_weight` (`(N,)` or `(N, 1)`, finite and non-negative) or `class_weight`
    /// (weights by class index, 1 for a class not listed; targets one-hot or indices, one
    /// output only) as per-sample weights of the model's dtype.
    pub(crate) fn sample_weights(
        &self,
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
                classes.iter().map(|c| cw.get(&(c.round().max(0.0) as usize)).copied().unwrap_or(1.0)).collect()
            }
        };
        Ok(Some(Tensor::from_vec(w, n, &self.device)?.to_dtype(self.dtype)?))
    }
}

fn names(kind: &str, n: usize) -> String {
    if n == 1 {
        format!("1 array (one {kind})")
    } else {
        format!("{n} arrays (one per {kind})")
    }
}

impl Inner {
    /// Checks the inputs against the model's and converts them to its dtype and device.
    pub(crate) fn prepare_x(&self, xs: &[Tensor], name: &'static str) -> Result<Vec<Tensor>> {
        let shapes = self.input_shapes();
        if xs.len() != shapes.len() {
            return Err(Error::invalid(
                name,
                format!("model \"{}\" expects {}, received {}", self.name, names("input", shapes.len()), xs.len()),
            ));
        }
        let mut n = None;
        let mut out = Vec::with_capacity(xs.len());
        for (i, (x, shape)) in xs.iter().zip(shapes).enumerate() {
            let dims = x.dims();
            let which = if xs.len() == 1 { String::new() } else { format!(" #{i}") };
            if dims.is_empty() || &dims[1..] != shape.as_slice() {
                return Err(Error::Shape {
                    context: format!("input `{name}`{which} of model \"{}\"", self.name),
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
            out.push(x.to_device(&self.device)?.to_dtype(self.dtype)?.contiguous()?);
        }
        Ok(out)
    }

    /// Checks inputs and targets and prepares the targets for each output's loss.
    pub(crate) fn prepare(
        &mut self,
        xs: &[Tensor],
        ys: &[Tensor],
        xname: &'static str,
        yname: &'static str,
    ) -> Result<Data> {
        self.build()?;
        let losses = self.compiled.as_ref().ok_or(Error::NotCompiled("fit"))?.losses.clone();
        let xs = self.prepare_x(xs, xname)?;
        let n = xs[0].dims()[0];
        let outputs = self.output_shapes();
        if ys.len() != outputs.len() {
            return Err(Error::invalid(
                yname,
                format!("model \"{}\" expects {}, received {}", self.name, names("output", outputs.len()), ys.len()),
            ));
        }
        let mut prepared = Vec::with_capacity(ys.len());
        for ((y, shape), loss) in ys.iter().zip(&outputs).zip(&losses) {
            let ny = y.dims().first().copied().unwrap_or(0);
            if ny != n {
                return Err(Error::invalid(
                    yname,
                    format!("expected as many samples as `{xname}` ({n}), received {ny}"),
                ));
            }
            prepared.push(loss.prepare_targets(&y.to_device(&self.device)?, shape, self.dtype)?.contiguous()?);
        }
        Ok(Data { xs, ys: prepared, sw: None })
    }
}

/// Batches of in-memory data, reshuffled each epoch with a permutation that depends only on
/// the seed and the epoch, so that any batch can be produced again (a resumed run sees the
/// same batches).
pub(crate) struct ArrayBatches {
    data: Data,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
    order: Option<(usize, Tensor)>,
}

impl ArrayBatches {
    pub fn new(data: Data, batch_size: usize, shuffle: bool, seed: u64) -> Self {
        ArrayBatches { data, batch_size, shuffle, seed, order: None }
    }

    /// Batch `step` of `epoch` (steps past the data wrap around within the epoch's order).
    pub fn batch(&mut self, epoch: usize, step: usize) -> Result<Data> {
        let n = self.data.len();
        let start = (step % n.div_ceil(self.batch_size)) * self.batch_size;
        let len = self.batch_size.min(n - start);
        if !self.shuffle {
            return self.data.narrow(start, len);
        }
        if self.order.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let mut idx: Vec<u32> = (0..n as u32).collect();
            let mut rng = StdRng::seed_from_u64(self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            idx.shuffle(&mut rng);
            self.order = Some((epoch, Tensor::from_vec(idx, n, self.data.xs[0].device())?));
        }
        let idx = self.order.as_ref().expect("order").1.narrow(0, start, len)?;
        self.data.select(&idx)
    }
}
