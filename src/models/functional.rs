//! The functional API: a [`Model`] read from symbolic tensors, and a model used as a layer of
//! another ([`NestedModel`]).

use super::core::{GraphSpec, Inner, Node};
use super::model::Model;
use crate::error::{Error, Result};
use crate::layers::input::Origin;
use crate::layers::{BuildContext, GraphState, KerasTensor, Layer, LayerRef, Saved, Weight};
use crate::trainers::walk::NestedSaved;
use candle_core::Tensor;
use rand::RngCore;
use std::collections::{HashMap, HashSet};
use std::sync::MutexGuard;

fn key(t: &KerasTensor) -> *const () {
    std::sync::Arc::as_ptr(&t.0) as *const ()
}

/// `Model::new(inputs, outputs)`.
pub(crate) fn from_graph(inputs: &[KerasTensor], outputs: &[KerasTensor]) -> Result<Model> {
    if inputs.is_empty() || outputs.is_empty() {
        return Err(Error::invalid(
            "inputs",
            format!("a model needs at least one input and one output, received {} and {}", inputs.len(), outputs.len()),
        ));
    }
    let mut ids: HashMap<*const (), usize> = HashMap::new();
    let mut input_layers = Vec::new();
    for (i, t) in inputs.iter().enumerate() {
        let Origin::Input(layer) = &t.0.origin else {
            return Err(Error::invalid(
                "inputs",
                format!("input #{i} is the output of {}, not a tensor made by Input::new", t.layer().label()),
            ));
        };
        if ids.insert(key(t), i).is_some() {
            return Err(Error::invalid("inputs", format!("input #{i} is given twice")));
        }
        input_layers.push(layer.clone());
    }
    // Every call between the inputs and the outputs, found from the outputs back.
    let mut calls: Vec<KerasTensor> = Vec::new();
    let mut seen: HashSet<*const ()> = HashSet::new();
    let mut stack: Vec<KerasTensor> = outputs.to_vec();
    while let Some(t) = stack.pop() {
        if !seen.insert(key(&t)) {
            continue;
        }
        match &t.0.origin {
            Origin::Input(layer) => {
                if !ids.contains_key(&key(&t)) {
                    return Err(Error::invalid(
                        "inputs",
                        format!(
                            "graph disconnected: the outputs need input {} of shape {}, which is not among the model's inputs",
                            layer.label(),
                            crate::error::fmt_shape(true, t.shape())
                        ),
                    ));
                }
            }
            Origin::Call { inputs, .. } => {
                stack.extend(inputs.iter().cloned());
                calls.push(t.clone());
            }
        }
    }
    calls.sort_by_key(|t| t.0.id);
    let mut layers: Vec<LayerRef> = Vec::new();
    let mut nodes = Vec::with_capacity(calls.len());
    for (k, t) in calls.iter().enumerate() {
        let Origin::Call { layer, inputs: call_inputs } = &t.0.origin else { unreachable!("calls are layer outputs") };
        let li = match layers.iter().position(|l| l.same_layer(layer)) {
            Some(i) => i,
            None => {
                layers.push(layer.clone());
                layers.len() - 1
            }
        };
        nodes.push(Node { layer: li, inputs: call_inputs.iter().map(|x| ids[&key(x)]).collect() });
        ids.insert(key(t), inputs.len() + k);
    }
    let mut inner = Inner::new("functional");
    for l in input_layers.iter().chain(&layers) {
        inner.name_layer(l);
    }
    let mut names = HashSet::new();
    for l in input_layers.iter().chain(&layers) {
        if !names.insert(l.name()) {
            return Err(Error::invalid(
                "name",
                format!("two layers of the model are named {:?}; layer names must be unique", l.name()),
            ));
        }
    }
    inner.graph = Some(GraphSpec {
        input_shapes: inputs.iter().map(|t| t.shape().to_vec()).collect(),
        inputs: input_layers,
        nodes,
        outputs: outputs.iter().map(|t| ids[&key(t)]).collect(),
    });
    inner.layers = layers;
    Ok(Model::from_inner(inner))
}

/// A model used as a layer of another (Keras calls a model on tensors like a layer). Its
/// weights are the inner model's, named `inner_layer/kernel`; in training it walks the inner
/// model's nodes with their own backward passes, as one node of the outer model.
#[derive(Debug)]
pub(crate) struct NestedModel {
    model: Model,
    name: Option<String>,
    class: &'static str,
    input_shape: Option<Vec<usize>>,
}

impl NestedModel {
    pub(crate) fn new(model: Model, inner: &Inner) -> Self {
        let input_shape = match &inner.graph {
            Some(g) => g.input_shapes.first().cloned(),
            None => inner.layers.first().and_then(|l| l.lock().layer.declared_input_shape().map(|s| s.to_vec())),
        };
        let class = if inner.graph.is_some() { "Functional" } else { "Sequential" };
        NestedModel { model, name: Some(inner.name.clone()), class, input_shape }
    }

    /// The inner model, or an error if it is locked: by itself (a model inside itself) or by
    /// another thread.
    fn inner(&self) -> Result<MutexGuard<'_, Inner>> {
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

    /// The inner model, built and of one input and one output, for a forward pass.
    fn built_inner(&self) -> Result<MutexGuard<'_, Inner>> {
        let inner = self.inner()?;
        if inner.plan.is_none() {
            return Err(crate::layers::not_built(format!(
                "{} ({})",
                self.name.as_deref().unwrap_or_default(),
                self.class
            )));
        }
        self.check_io(&inner)?;
        Ok(inner)
    }

    fn check_io(&self, inner: &Inner) -> Result<()> {
        let (inputs, _, outputs) = inner.topology()?;
        if inputs.len() != 1 || outputs.len() != 1 {
            return Err(Error::invalid(
                "layers",
                format!(
                    "model {:?} has {} inputs and {} outputs; as a layer of another model it needs one of each",
                    inner.name,
                    inputs.len(),
                    outputs.len()
                ),
            ));
        }
        Ok(())
    }

    /// The output shape for `input_shape`, checked against the model's own input shape; a
    /// stack without one takes this one.
    fn output_for(&self, inner: &Inner, input_shape: &[usize]) -> Result<Vec<usize>> {
        if inner.plan.is_none() && inner.graph.is_none() {
            if let Some(first) = inner.layers.first() {
                let mut cell = first.lock();
                if cell.layer.declared_input_shape().is_none() {
                    cell.layer.set_input_shape(input_shape.to_vec());
                }
            }
        }
        self.check_io(inner)?;
        let expected = inner.topology()?.0.remove(0);
        if expected != input_shape {
            return Err(Error::Shape {
                context: format!("{} ({})", self.name.as_deref().unwrap_or_default(), self.class),
                expected: crate::error::fmt_shape(true, &expected),
                received: crate::error::fmt_shape(true, input_shape),
            });
        }
        Ok(match &inner.plan {
            Some(_) => inner.output_shapes().remove(0),
            None => inner.infer_output_shapes(&[expected])?.remove(0),
        })
    }
}

/// The inner model's weights, named `layer/weight`, each trainable when its layer is.
fn weights_of(inner: &Inner) -> Vec<Weight> {
    inner
        .layers
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
        }
        self.name = Some(name);
    }
    fn declared_input_shape(&self) -> Option<&[usize]> {
        self.input_shape.as_deref()
    }
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        self.output_for(&*self.inner()?, input_shape)
    }
    fn build(&mut self, input_shape: &[usize], ctx: &mut BuildContext) -> Result<Vec<usize>> {
        let mut inner = self.inner()?;
        if inner.plan.is_none() {
            inner.dtype = ctx.dtype;
            inner.device = ctx.device.clone();
            // One seed fixes the whole run: a nested model without its own takes one from
            // its parent's generator.
            if !inner.seed_set {
                inner.seed = ctx.rng.next_u64();
            }
        }
        let out = self.output_for(&inner, input_shape)?;
        inner.build()?;
        Ok(out)
    }
    fn built(&self) -> bool {
        self.inner().map(|i| i.plan.is_some()).unwrap_or(false)
    }
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let inner = self.built_inner()?;
        inner.run(std::slice::from_ref(x), train, None)?.remove(0).values()
    }
    fn weights(&self) -> Vec<Weight> {
        self.inner().map(|inner| weights_of(&inner)).unwrap_or_default()
    }
    fn has_backward(&self, _pre_activation: bool) -> bool {
        true
    }
    /// The inner model's own training pass, node by node (its layers' backward passes, or
    /// autograd for those without one).
    fn forward_saved(&self, x: &Tensor, _pre_activation: bool) -> Result<(Tensor, Saved)> {
        let inner = self.built_inner()?;
        let info = inner.train_info_with(vec![false; inner.plan().nodes.len()], true);
        let (mut vals, saved) = inner.forward_nodes(std::slice::from_ref(x), &info)?;
        let y = vals[inner.plan().outputs[0]].take().expect("computed");
        let state = GraphState(std::sync::Arc::new(NestedSaved { info, saved }));
        Ok((y, Saved { graph: Some(state), ..Saved::default() }))
    }
    fn backward(&self, saved: &Saved, dy: &Tensor, need_input_grad: bool) -> Result<(Option<Tensor>, Vec<Tensor>)> {
        let inner = self.inner()?;
        let state =
            saved.graph.as_ref().ok_or_else(|| Error::invalid("saved", "no saved forward pass of the nested model"))?;
        let p = inner.plan();
        let mut info = state.0.info.clone();
        if !need_input_grad {
            info.needs_grad = inner.needs_grad(&info.slots, false);
        }
        let mut dys = vec![None; p.shapes.len()];
        dys[p.outputs[0]] = Some(dy.clone());
        let (wgrads, mut dxs) = inner.backward_nodes(dys, &state.0.saved, &info)?;
        let index: HashMap<_, _> = info.vars.iter().enumerate().map(|(i, v)| (v.as_tensor().id(), i)).collect();
        let grads = weights_of(&inner)
            .iter()
            .filter(|w| w.trainable)
            .map(|w| match index.get(&w.var.as_tensor().id()).and_then(|&i| wgrads[i].clone()) {
                Some(g) => Ok(g),
                None => w.var.as_tensor().zeros_like(),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let dx = if need_input_grad { dxs.swap_remove(0) } else { None };
        Ok((dx, grads))
    }
    fn set_trainable(&mut self, trainable: bool) {
        if let Ok(inner) = self.inner() {
            let layers: Vec<LayerRef> =
                inner.graph.iter().flat_map(|g| g.inputs.iter().cloned()).chain(inner.layers.iter().cloned()).collect();
            drop(inner);
            for l in layers {
                l.set_trainable(trainable);
            }
        }
    }
    fn state(&self) -> Vec<u64> {
        let Ok(inner) = self.inner() else { return Vec::new() };
        let mut out = Vec::new();
        for l in &inner.layers {
            let s = l.lock().layer.state();
            out.push(s.len() as u64);
            out.extend(s);
        }
        out
    }
    fn set_state(&mut self, state: &[u64]) {
        let Ok(inner) = self.inner() else { return };
        let mut rest = state;
        for l in &inner.layers {
            let Some((&n, tail)) = rest.split_first() else { return };
            let n = (n as usize).min(tail.len());
            l.lock().layer.set_state(&tail[..n]);
            rest = &tail[n..];
        }
    }
    fn config(&self) -> Vec<(&'static str, String)> {
        let arch = self.inner().map(|i| i.architecture()).unwrap_or_default();
        vec![("model", arch)]
    }
}
