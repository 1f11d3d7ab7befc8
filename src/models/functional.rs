//! The functional API: a [`Model`] read from symbolic tensors (Keras' `Model(inputs,
//! outputs)`), its graph found by walking back from the outputs, as Keras 3's
//! `ops/function.py` does.

use super::model::{Model, ModelState};
use crate::error::{Error, Result};
use crate::graph::{Graph, Node};
use crate::layers::input::Origin;
use crate::layers::{KerasTensor, LayerRef};
use std::collections::{HashMap, HashSet};

impl Model {
    /// Builds a functional model from its inputs and outputs, as Keras' `Model(inputs,
    /// outputs)`: every layer called between them, each once however often it is called,
    /// in the order they were called. Unnamed layers are named as Keras does (`conv2d`,
    /// `conv2d_1` ...).
    ///
    /// # Errors
    /// No input or output; an output that does not depend on the inputs given (Keras' "graph
    /// disconnected"), naming the input it needs; an input given twice; two layers of one name.
    pub fn new(inputs: &[crate::layers::KerasTensor], outputs: &[crate::layers::KerasTensor]) -> Result<Model> {
        from_tensors(inputs, outputs)
    }
}

fn key(t: &KerasTensor) -> *const () {
    std::sync::Arc::as_ptr(&t.0) as *const ()
}

/// `Model::new(inputs, outputs)`.
pub(crate) fn from_tensors(inputs: &[KerasTensor], outputs: &[KerasTensor]) -> Result<Model> {
    if inputs.is_empty() || outputs.is_empty() {
        return Err(Error::invalid(
            "inputs",
            format!("a model needs at least one input and one output, received {} and {}", inputs.len(), outputs.len()),
        ));
    }
    let mut ids: HashMap<*const (), usize> = HashMap::new();
    let mut input_layers = Vec::new();
    for (i, t) in inputs.iter().enumerate() {
        let layer = match &t.0.origin {
            Origin::Input(layer) => layer.clone(),
            // An intermediate tensor: the walk stops there (Keras' `ops/function.py`), and the
            // new model takes it through an input layer of its own.
            Origin::Call { .. } => crate::layers::Input::make(t.shape().to_vec(), None).layer(),
        };
        if ids.insert(key(t), i).is_some() {
            return Err(Error::invalid("inputs", format!("input #{i} is given twice")));
        }
        input_layers.push(layer);
    }
    // Every call between the inputs and the outputs, found from the outputs back.
    let mut calls: Vec<KerasTensor> = Vec::new();
    let mut seen: HashSet<*const ()> = HashSet::new();
    let mut stack: Vec<KerasTensor> = outputs.to_vec();
    while let Some(t) = stack.pop() {
        if !seen.insert(key(&t)) || ids.contains_key(&key(&t)) {
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
        let Origin::Call { layer, inputs: call_inputs, training } = &t.0.origin else {
            unreachable!("calls are layer outputs")
        };
        let li = match layers.iter().position(|l| l.same_layer(layer)) {
            Some(i) => i,
            None => {
                layers.push(layer.clone());
                layers.len() - 1
            }
        };
        nodes.push(Node { layer: li, inputs: call_inputs.iter().map(|x| ids[&key(x)]).collect(), training: *training });
        ids.insert(key(t), inputs.len() + k);
    }
    let mut state = ModelState::new("functional", Graph::stack());
    for l in input_layers.iter().chain(&layers) {
        state.name_layer(l);
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
    state.symbolic = Some((inputs.to_vec(), outputs.to_vec()));
    state.graph = Graph::functional(
        input_layers,
        inputs.iter().map(|t| t.shape().to_vec()).collect(),
        layers,
        nodes,
        outputs.iter().map(|t| ids[&key(t)]).collect(),
    );
    Ok(Model::from_state(state))
}
