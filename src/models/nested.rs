//! A model used as a layer of another, as Keras calls a model on tensors like a layer
//! (`base(inputs)`): [`Model::as_layer`]. In training the outer model's walk runs the inner
//! model's own training walk as one node, and its backward walk as that node's backward pass.

use super::model::{Model, ModelState};
use crate::error::{Error, Result};
use crate::graph::forward::NodeSaved;
use crate::graph::Pass;
use crate::layers::{
    Backward, BuildContext, CallContext, Capabilities, Config, Ending, Layer, LayerRef, MultiInput, Saved, Weight,
};
use crate::trainers::TraineeState;
use candle_core::Tensor;
use rand::RngCore;
use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

impl Model {
    /// This model as a layer of other models (Keras calls a model as a layer: `base(inputs)`):
    /// `base.as_layer().call(&inputs)?` or `Sequential::add(base.as_layer())`. The same handle
    /// every time, so the weights are shared and counted once.
    pub fn as_layer(&self) -> LayerRef {
        let mut inner = self.lock();
        if let Some(cell) = inner.as_layer.as_ref().and_then(|w| w.upgrade()) {
            return LayerRef(cell);
        }
        let handle = LayerRef::new(NestedModel::new(self.clone(), &inner));
        inner.as_layer = Some(Arc::downgrade(&handle.0));
        handle
    }
}

/// A model used as a layer of another. Its weights are the inner model's, named
/// `inner_layer/kernel`.
#[derive(Debug)]
pub(crate) struct NestedModel {
    model: Model,
    name: Option<String>,
    class: &'static str,
    input_shape: Option<Vec<usize>>,
    /// How many inputs the inner model takes (a layer of several inputs when more than one).
    inputs: usize,
}

/// What the inner model's training walk saved, for its backward walk.
struct NestedSaved {
    pass: Pass,
    saved: Vec<NodeSaved>,
}

impl NestedModel {
    fn new(model: Model, inner: &ModelState) -> Self {
        let input_shape = if inner.graph.is_stack() {
            inner.graph.layers().first().and_then(|l| l.lock().layer.declared_input_shape().map(|s| s.to_vec()))
        } else {
            inner.graph.topology().ok().and_then(|t| t.input_shapes.first().cloned())
        };
        let class = if inner.graph.is_stack() { "Sequential" } else { "Functional" };
        let inputs = inner.graph.topology().map(|t| t.input_shapes.len()).unwrap_or(1);
        // A model of the default name takes one from the model that holds it, unique there.
        let name = inner.name_set.then(|| inner.name.clone());
        NestedModel { model, name, class, input_shape, inputs }
    }

    /// The inner model, or an error if it is locked: by itself (a model inside itself) or by
    /// another thread.
    fn inner(&self) -> Result<MutexGuard<'_, ModelState>> {
        self.model.inner.try_lock().map_err(|_| {
            Error::invalid(
                "layers",
                format!(
                    "model {:?} is busy: a model cannot be a layer of itself, nor run while it trains elsewhere",
                    self.name.as_deref().unwrap_or_default()
                ),
            )
        })
    }

    fn label(&self) -> String {
        format!("{} ({})", self.name.as_deref().unwrap_or_default(), self.class)
    }

    /// The inner model, built and of one input and one output, for a forward pass.
    fn built_inner(&self) -> Result<MutexGuard<'_, ModelState>> {
        let inner = self.inner()?;
        if !inner.graph.is_built() {
            return Err(crate::layers::not_built(self.label()));
        }
        self.check_io(&inner)?;
        Ok(inner)
    }

    fn check_io(&self, inner: &ModelState) -> Result<()> {
        let t = inner.graph.topology()?;
        if t.outputs.len() != 1 {
            return Err(Error::invalid(
                "layers",
                format!(
                    "model {:?} has {} outputs; as a layer of another model it needs one (several inputs are fine)",
                    inner.name,
                    t.outputs.len()
                ),
            ));
        }
        Ok(())
    }

    /// The output shape for `input_shapes`, checked against the model's own input shapes; a
    /// stack without one takes the one given.
    fn output_for(&self, inner: &ModelState, input_shapes: &[Vec<usize>]) -> Result<Vec<usize>> {
        if !inner.graph.is_built() && inner.graph.is_stack() {
            if let (Some(first), [one]) = (inner.graph.layers().first(), input_shapes) {
                let mut cell = first.lock();
                if cell.layer.declared_input_shape().is_none() {
                    cell.layer.set_input_shape(one.clone());
                }
            }
        }
        self.check_io(inner)?;
        let expected = inner.graph.topology()?.input_shapes;
        if expected != input_shapes {
            let show =
                |s: &[Vec<usize>]| s.iter().map(|s| crate::error::fmt_shape(true, s)).collect::<Vec<_>>().join(", ");
            return Err(Error::Shape {
                context: self.label(),
                expected: show(&expected),
                received: show(input_shapes),
            });
        }
        Ok(if inner.graph.is_built() {
            inner.graph.output_shapes().remove(0)
        } else {
            inner.graph.infer_output_shapes(&expected)?.remove(0)
        })
    }

    /// Builds the inner model for inputs of `input_shapes` (see [`Layer::build`]).
    fn build_for(&mut self, input_shapes: &[Vec<usize>], ctx: &mut BuildContext) -> Result<Vec<usize>> {
        let mut inner = self.inner()?;
        if !inner.graph.is_built() {
            inner.dtype = ctx.dtype;
            inner.device = ctx.device.clone();
            // One seed fixes the whole run: a nested model without its own takes one from
            // its parent's generator.
            if !inner.seed_set {
                inner.seed = ctx.rng.next_u64();
            }
        }
        let out = self.output_for(&inner, input_shapes)?;
        inner.build()?;
        Ok(out)
    }

    /// The inner model's inference pass on `xs`.
    fn infer(&self, xs: &[Tensor], ctx: &CallContext) -> Result<Tensor> {
        let inner = self.built_inner()?;
        let mut pass = Pass::inference(&inner.graph, ctx.training, None);
        pass.ctx = *ctx;
        inner.graph.infer(xs, &pass)?.remove(0).values()
    }
}

/// The inner model's weights, named `layer/weight`, each trainable when its layer is.
fn weights_of(inner: &ModelState) -> Vec<Weight> {
    inner
        .graph
        .layers()
        .iter()
        .flat_map(|l| {
            let name = l.name();
            l.weights().into_iter().map(move |w| Weight { name: format!("{name}/{}", w.name), ..w })
        })
        .collect()
}

impl Layer for NestedModel {
    fn class_name(&self) -> &'static str {
        self.class
    }
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    fn set_name(&mut self, name: String) {
        if let Ok(mut inner) = self.inner() {
            inner.name = name.clone();
            inner.name_set = true;
        }
        self.name = Some(name);
    }
    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        self.output_for(&*self.inner()?, &[input_shape.to_vec()])
    }
    fn build(&mut self, input_shape: &[usize], ctx: &mut BuildContext) -> Result<Vec<usize>> {
        self.build_for(&[input_shape.to_vec()], ctx)
    }
    fn built(&self) -> bool {
        self.inner().map(|i| i.graph.is_built()).unwrap_or(false)
    }
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_in(x, &CallContext { training: train, row_offset: 0 })
    }
    fn forward_in(&self, x: &Tensor, ctx: &CallContext) -> Result<Tensor> {
        self.infer(std::slice::from_ref(x), ctx)
    }
    fn weights(&self) -> Vec<Weight> {
        self.inner().map(|inner| weights_of(&inner)).unwrap_or_default()
    }
    fn set_trainable(&mut self, trainable: bool) {
        if let Ok(inner) = self.inner() {
            let layers: Vec<LayerRef> =
                inner.graph.input_layers().iter().chain(inner.graph.layers()).cloned().collect();
            drop(inner);
            for l in layers {
                l.set_trainable(trainable);
            }
        }
    }
    fn state(&self) -> Vec<u64> {
        let Ok(inner) = self.inner() else { return Vec::new() };
        let mut out = Vec::new();
        for l in inner.graph.layers() {
            let s = l.lock().layer.state();
            out.push(s.len() as u64);
            out.extend(s);
        }
        out
    }
    fn set_state(&mut self, state: &[u64]) {
        let Ok(inner) = self.inner() else { return };
        let mut rest = state;
        for l in inner.graph.layers() {
            let Some((&n, tail)) = rest.split_first() else { return };
            let n = (n as usize).min(tail.len());
            l.lock().layer.set_state(&tail[..n]);
            rest = &tail[n..];
        }
    }
    fn get_config(&self) -> Config {
        let arch = self.inner().map(|i| i.architecture_json()).unwrap_or_default();
        Config::new().set("model", arch)
    }
    fn capabilities(&self) -> Capabilities<'_> {
        let multi_input: Option<&dyn MultiInput> = if self.inputs > 1 { Some(self) } else { None };
        Capabilities { backward: Some(self), multi_input, ..Capabilities::default() }
    }
    fn multi_input_mut(&mut self) -> Option<&mut dyn MultiInput> {
        if self.inputs > 1 {
            Some(self)
        } else {
            None
        }
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// A model of several inputs as a layer of another, as Keras calls `model([a, b])`.
impl MultiInput for NestedModel {
    fn compute_output_shape_multi(&self, input_shapes: &[Vec<usize>]) -> Result<Vec<usize>> {
        self.output_for(&*self.inner()?, input_shapes)
    }
    fn build_multi(&mut self, input_shapes: &[Vec<usize>], ctx: &mut BuildContext) -> Result<Vec<usize>> {
        self.build_for(input_shapes, ctx)
    }
    fn forward_multi(&self, xs: &[Tensor], ctx: &CallContext) -> Result<Tensor> {
        self.infer(xs, ctx)
    }
}

impl LayerRef {
    /// The model behind a layer that is a model (`base.as_layer()`, or a nested model after
    /// `load_model`), to reach its own layers: `model.get_layer("base")?.as_model()`.
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let base = Sequential::new().name("base").add(Dense::new(4).input_shape(3));
    /// let outer = Sequential::new().add(base.as_layer()).add(Dense::new(1));
    /// let inner = outer.get_layer("base")?.as_model().expect("a model");
    /// assert_eq!(inner.layer_names(), ["dense"]);
    /// # Ok::<(), kandle::Error>(())
    /// ```
    pub fn as_model(&self) -> Option<Model> {
        let cell = self.lock();
        cell.layer.as_any().and_then(|a| a.downcast_ref::<NestedModel>()).map(|n| n.model.clone())
    }
}

impl Backward for NestedModel {
    fn has_backward(&self) -> bool {
        true
    }

    /// The inner model's own training walk, node by node (its layers' backward passes, or
    /// autograd for those without one).
    fn forward_saved(&self, xs: &[Tensor], _ending: Ending, ctx: &CallContext) -> Result<(Tensor, Saved)> {
        if xs.len() != self.inputs {
            return Err(Error::invalid(
                "inputs",
                format!("{}: expected {} inputs, received {}", self.label(), self.inputs, xs.len()),
            ));
        }
        let inner = self.built_inner()?;
        let n = inner.graph.plan().nodes.len();
        let mut pass = Pass::training(&inner.graph, vec![false; n], true, inner.autograd()).at_row(ctx.row_offset);
        // Called with training false (`base(x, training=False)`): dropout off, batch
        // normalization on its moving statistics, while gradients still flow.
        pass.ctx.training = ctx.training;
        let (mut vals, saved) = inner.graph.walk(xs, &pass)?;
        let y = vals[inner.graph.plan().outputs[0]].take().expect("computed");
        let state: Arc<dyn std::any::Any + Send + Sync> = Arc::new(NestedSaved { pass, saved });
        Ok((y, Saved { extra: Some(state), ..Saved::default() }))
    }

    fn backward(
        &self,
        saved: &Saved,
        dy: &Tensor,
        need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        let inner = self.inner()?;
        let state = saved
            .extra
            .as_ref()
            .and_then(|s| s.downcast_ref::<NestedSaved>())
            .ok_or_else(|| Error::invalid("saved", "no saved forward pass of the nested model"))?;
        let p = inner.graph.plan();
        let mut pass = state.pass.clone();
        if !need_input_grad {
            pass.needs_grad = crate::graph::forward::needs_grad(&inner.graph, &pass.slots, false);
        }
        let mut dys = vec![None; p.shapes.len()];
        dys[p.outputs[0]] = Some(dy.clone());
        let (wgrads, mut dxs) = inner.graph.backward(dys, &state.saved, &pass)?;
        let index: HashMap<_, _> = pass.vars.iter().enumerate().map(|(i, v)| (v.as_tensor().id(), i)).collect();
        let grads = weights_of(&inner)
            .iter()
            .filter(|w| w.trainable)
            .map(|w| match index.get(&w.var.as_tensor().id()).and_then(|&i| wgrads[i].clone()) {
                Some(g) => Ok(g),
                None => w.var.as_tensor().zeros_like(),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        dxs.truncate(self.inputs);
        if !need_input_grad {
            dxs.iter_mut().for_each(|d| *d = None);
        }
        Ok((dxs, grads))
    }
}
