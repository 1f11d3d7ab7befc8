//! Where a training step's time goes, layer by layer: [`Model::profile`](crate::models::Model::profile).

use super::data::prepare;
use super::{Trainee, TraineeState};
use crate::error::{Error, Result};
use crate::graph::{Pass, Timing};
use candle_core::Tensor;
use std::time::Duration;

/// One layer's share of a training step, from [`Model::profile`](crate::models::Model::profile):
/// the mean time of its forward pass (as training runs it: dropout on, what the backward pass
/// needs kept) and of its backward pass (the gradients of its input and its weights), summed
/// over its calls for a layer called more than once.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerTime {
    /// The layer's name (`conv2d`, `dense_1`, ...).
    pub name: String,
    /// Its class (`Conv2D`, `Dense`, ...).
    pub class_name: String,
    /// Mean forward time per step.
    pub forward: Duration,
    /// Mean backward time per step (zero for a layer the backward walk skips: no weights of
    /// its own to train and nothing trainable before it).
    pub backward: Duration,
    /// Whether the layer ran inside the one before it: a standalone `Activation` fused into the
    /// convolution or dense layer it follows, or a `MaxPooling2D` fused into the convolution
    /// it follows; that layer's times include its work.
    pub fused: bool,
}

/// The per-layer times of [`Model::profile`](crate::models::Model::profile), printable as a table.
///
/// ```
/// use kandle::prelude::*;
/// use candle_core::{Device, Tensor};
/// let model = Sequential::new()
///     .add(Dense::new(8).input_shape(3))
///     .add(Activation::Relu)
///     .add(Dense::new(2).activation(Activation::Softmax));
/// model.compile("sgd", Loss::CategoricalCrossentropy, ())?;
/// let x = Tensor::rand(0f32, 1.0, (4, 3), &Device::Cpu)?;
/// let y = to_categorical(&Tensor::new(&[0u32, 1, 1, 0], &Device::Cpu)?, 2)?;
/// let profile = model.profile(&x, &y, 3)?;
/// // The ReLU runs inside the dense layer before it: its time is that layer's.
/// let fused: Vec<(&str, bool)> = profile.layers.iter().map(|l| (l.name.as_str(), l.fused)).collect();
/// assert_eq!(fused, [("dense", false), ("activation", true), ("dense_1", false)]);
/// assert!(profile.total() >= profile.layers[0].forward + profile.layers[0].backward);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Each layer, in the model's order.
    pub layers: Vec<LayerTime>,
    /// The batch size the step ran on.
    pub batch_size: usize,
    /// The steps timed (the times are their means).
    pub steps: usize,
}

impl Profile {
    /// The whole forward and backward pass per step (the loss and the optimizer's update not
    /// included).
    pub fn total(&self) -> Duration {
        self.layers.iter().map(|l| l.forward + l.backward).sum()
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let total = ms(self.total()).max(f64::MIN_POSITIVE);
        writeln!(f, "Training step, batch {} (mean of {} steps)", self.batch_size, self.steps)?;
        writeln!(f, "{:<34} {:>12} {:>12} {:>8}", "Layer (type)", "forward ms", "backward ms", "share")?;
        for l in &self.layers {
            let label = format!("{} ({})", l.name, l.class_name);
            if l.fused {
                writeln!(f, "{label:<34} {:>12} {:>12} {:>8}", "fused", "fused", "")?;
                continue;
            }
            let share = 100.0 * (ms(l.forward) + ms(l.backward)) / total;
            writeln!(f, "{label:<34} {:>12.2} {:>12.2} {share:>7.1}%", ms(l.forward), ms(l.backward))?;
        }
        write!(f, "{:<34} {:>25.2}", "Total", ms(self.total()))
    }
}

/// `Model::profile`: the forward and backward pass `fit` runs on the batch `(x, y)`, once to
/// warm up, then `steps` times, timed node by node.
pub(crate) fn profile<M: Trainee>(model: &M, xs: &[Tensor], ys: &[Tensor], steps: usize) -> Result<Profile> {
    crate::kernels::tune_allocator();
    let mut guard = model.state();
    let state = &mut *guard;
    if state.compiled().is_none() {
        return Err(Error::NotCompiled("profile"));
    }
    if steps == 0 {
        return Err(Error::invalid("steps", "expected a positive number of steps to time, received 0"));
    }
    let d = prepare(state, xs, ys, "x", "y")?;
    let (graph, c) = (state.graph(), state.compiled().ok_or(Error::NotCompiled("profile"))?);
    let mut pass = Pass::for_losses(graph, &c.losses, state.autograd());
    let timing = Timing::default();
    // One warm-up step (buffers, kernel transforms), then the timed ones.
    for timed in std::iter::once(false).chain(std::iter::repeat_n(true, steps)) {
        pass.timing = timed.then(|| timing.clone());
        let step = graph.train_forward(&d.xs, &pass)?;
        let (l, _) = c.total_loss(graph, &d.ys, d.sw.as_ref(), &step.outputs)?;
        graph.train_backward(&l, &step, &pass)?;
    }
    let times = timing.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let p = graph.plan();
    let mut layers: Vec<LayerTime> = graph
        .layers()
        .iter()
        .map(|l| LayerTime {
            name: l.name(),
            class_name: l.class_name().to_string(),
            forward: Duration::ZERO,
            backward: Duration::ZERO,
            fused: false,
        })
        .collect();
    for (k, node) in p.nodes.iter().enumerate() {
        let l = &mut layers[node.layer];
        l.fused = pass.fusion.absorbed[k];
        if let Some([f, b]) = times.get(k) {
            l.forward += f.div_f64(steps as f64);
            l.backward += b.div_f64(steps as f64);
        }
    }
    Ok(Profile { layers, batch_size: d.xs.first().map_or(0, |x| x.dims()[0]), steps })
}
