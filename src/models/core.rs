//! What every model is inside: layers, the nodes that call them, building and inference (the
//! training pass is `trainers::walk`). A `Sequential` is a model whose nodes form a line; a
//! functional `Model` is any directed acyclic graph of them (Keras 3: `Sequential` is a
//! `Functional` model).
//!
//! Tensors of a pass are numbered: the model's inputs first, then node `k`'s output is tensor
//! `inputs + k`. Nodes are in topological order (the order the user called the layers).

use crate::activations::Activation;
use crate::error::{Error, Result};
use crate::layers::handle::Cell;
use crate::layers::{BuildContext, LayerRef};
use crate::losses::{Loss, Output};
use crate::optimizers::Optimizer;
use candle_core::{DType, Device, Tensor, TensorId, Var};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;
use std::sync::{Mutex, Weak};

/// One call of a layer: `layers[layer]` on the tensors `inputs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub layer: usize,
    pub inputs: Vec<usize>,
}

/// Input shapes, nodes and output tensors of a model.
pub(crate) type Topology = (Vec<Vec<usize>>, Vec<Node>, Vec<usize>);

/// A functional model's graph, as `Model::new` read it from the symbolic tensors.
pub(crate) struct GraphSpec {
    /// The `InputLayer` of each input, in order.
    pub inputs: Vec<LayerRef>,
    pub input_shapes: Vec<Vec<usize>>,
    pub nodes: Vec<Node>,
    pub outputs: Vec<usize>,
}

/// The built model: nodes, tensor shapes and how often each tensor is used.
pub(crate) struct Plan {
    pub n_inputs: usize,
    pub nodes: Vec<Node>,
    pub outputs: Vec<usize>,
    /// Shape of every tensor, without the batch axis.
    pub shapes: Vec<Vec<usize>>,
    /// How many nodes read each tensor.
    pub consumers: Vec<usize>,
    /// The last node that reads each tensor (inference frees it after that node).
    pub last_use: Vec<Option<usize>>,
}

impl Plan {
    pub fn output_of(&self, node: usize) -> usize {
        self.n_inputs + node
    }
}

pub(crate) struct Compiled {
    pub optimizer: Box<dyn Optimizer>,
    /// One loss per output.
    pub losses: Vec<Loss>,
    pub loss_weights: Vec<f64>,
    /// The metrics of each output.
    pub metrics: Vec<Vec<Box<dyn crate::metrics::StatefulMetric>>>,
    /// The variables the optimizer's state belongs to, once it has some.
    pub trained_vars: Option<Vec<TensorId>>,
}

pub(crate) struct Inner {
    pub name: String,
    /// Every layer once, in the order of its first node (shared layers appear once).
    pub layers: Vec<LayerRef>,
    /// How many layers of each base name were named (Keras' `conv2d`, `conv2d_1` ...).
    pub names: HashMap<String, usize>,
    /// `None` for a stack (a `Sequential`): its nodes are its layers in order.
    pub graph: Option<GraphSpec>,
    pub plan: Option<Plan>,
    pub seed: u64,
    /// Whether the user fixed the seed (a nested model that did not takes one from its parent).
    pub seed_set: bool,
    pub device: Device,
    pub dtype: DType,
    pub compiled: Option<Compiled>,
    /// Values the weights may take in all when built (bounded by `load_model`).
    pub weight_budget: usize,
    /// The handle of this model as a layer of other models (`Model::as_layer`), kept weakly.
    pub as_layer: Option<Weak<Mutex<Cell>>>,
    /// Differentiate every layer with candle's autograd (`Model::use_autograd`).
    pub autograd: bool,
    /// A `fit` is running (it locks the model step by step, not for the whole run).
    pub training: bool,
}

/// Standalone `Activation` layers run inside the `Conv2D` or `Dense` before them: for each
/// node, the activation fused into it, and whether it is such an activation (then a no-op).
#[derive(Debug, Clone)]
pub(crate) struct Fusion {
    pub into: Vec<Option<Activation>>,
    /// Max pooling windows fused into the layer before them (after its activation).
    pub pool_into: Vec<Option<(usize, usize)>>,
    pub absorbed: Vec<bool>,
}

pub(crate) fn add_to(slot: &mut Option<Tensor>, g: Tensor) -> Result<()> {
    *slot = Some(match slot.take() {
        Some(a) => (a + g)?,
        None => g,
    });
    Ok(())
}

impl Inner {
    pub(crate) fn new(name: &str) -> Self {
        Inner {
            name: name.into(),
            layers: Vec::new(),
            names: HashMap::new(),
            graph: None,
            plan: None,
            seed: rand::random(),
            seed_set: false,
            device: Device::Cpu,
            dtype: DType::F32,
            compiled: None,
            weight_budget: usize::MAX,
            as_layer: None,
            autograd: false,
            training: false,
        }
    }

    /// Names an unnamed layer as Keras does (`conv2d`, `conv2d_1` ...) and counts named ones,
    /// so that names stay unique in the model.
    pub(crate) fn name_layer(&mut self, layer: &LayerRef) {
        let mut cell = layer.lock();
        let base = match cell.layer.name() {
            Some(n) => n.to_string(),
            None => snake_case(cell.layer.class_name()),
        };
        let count = self.names.entry(base.clone()).or_insert(0);
        if cell.layer.name().is_none() {
            cell.layer.set_name(if *count == 0 { base } else { format!("{base}_{count}") });
        }
        *count += 1;
    }

    pub(crate) fn plan(&self) -> &Plan {
        self.plan.as_ref().expect("model is built")
    }

    /// The model's inputs' shapes, nodes and outputs, as declared (a stack's input shape is
    /// its first layer's `input_shape`).
    pub(crate) fn topology(&self) -> Result<Topology> {
        Ok(match &self.graph {
            Some(g) => (g.input_shapes.clone(), g.nodes.clone(), g.outputs.clone()),
            None => {
                let first = self
                    .layers
                    .first()
                    .ok_or_else(|| Error::invalid("layers", "the model has no layer: add one with `add`"))?;
                let cell = first.lock();
                let input = cell.layer.declared_input_shape().map(|s| s.to_vec()).ok_or_else(|| {
                    Error::invalid(
                        "input_shape",
                        format!(
                            "the first layer, {} ({}), needs an input shape: add `.input_shape((h, w, c))` to it",
                            cell.layer.name().unwrap_or_default(),
                            cell.layer.class_name()
                        ),
                    )
                })?;
                let n = self.layers.len();
                (vec![input], (0..n).map(|i| Node { layer: i, inputs: vec![i] }).collect(), vec![n])
            }
        })
    }

    /// The output shapes for `input_shapes`, without creating any weight.
    pub(crate) fn infer_output_shapes(&self, input_shapes: &[Vec<usize>]) -> Result<Vec<Vec<usize>>> {
        let (_, nodes, outputs) = self.topology()?;
        let mut shapes = input_shapes.to_vec();
        for node in &nodes {
            let ins: Vec<Vec<usize>> = node.inputs.iter().map(|&t| shapes[t].clone()).collect();
            shapes.push(self.layers[node.layer].lock().layer.compute_output_shape_multi(&ins)?);
        }
        Ok(outputs.iter().map(|&t| shapes[t].clone()).collect())
    }

    /// Creates the weights of every layer that has none yet, node by node, from one generator
    /// seeded by the model's seed.
    pub(crate) fn build(&mut self) -> Result<()> {
        if self.plan.is_some() {
            return Ok(());
        }
        if !matches!(self.dtype, DType::F32 | DType::F64) {
            return Err(Error::invalid(
                "dtype",
                format!(
                    "model {:?}: expected f32 or f64 (kandle trains in those; mixed precision is not supported yet), received {:?}",
                    self.name, self.dtype
                ),
            ));
        }
        let (input_shapes, nodes, outputs) = self.topology()?;
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut shapes = input_shapes;
        let n_inputs = shapes.len();
        let mut budget = self.weight_budget;
        for node in &nodes {
            let ins: Vec<Vec<usize>> = node.inputs.iter().map(|&t| shapes[t].clone()).collect();
            let mut cell = self.layers[node.layer].lock();
            let out = if cell.layer.built() {
                cell.layer.compute_output_shape_multi(&ins)?
            } else {
                let mut ctx = BuildContext { dtype: self.dtype, device: &self.device, rng: &mut rng, budget };
                let out = cell.layer.build_multi(&ins, &mut ctx)?;
                budget = ctx.budget;
                out
            };
            shapes.push(out);
        }
        let mut consumers = vec![0; shapes.len()];
        let mut last_use = vec![None; shapes.len()];
        for (k, node) in nodes.iter().enumerate() {
            for &t in &node.inputs {
                consumers[t] += 1;
                last_use[t] = Some(k);
            }
        }
        self.plan = Some(Plan { n_inputs, nodes, outputs, shapes, consumers, last_use });
        Ok(())
    }

    pub(crate) fn input_shapes(&self) -> &[Vec<usize>] {
        let p = self.plan();
        &p.shapes[..p.n_inputs]
    }

    pub(crate) fn output_shapes(&self) -> Vec<Vec<usize>> {
        let p = self.plan();
        p.outputs.iter().map(|&t| p.shapes[t].clone()).collect()
    }

    /// Names of the outputs as Keras' logs use them: the name of the layer that makes each.
    pub(crate) fn output_names(&self) -> Vec<String> {
        let p = self.plan();
        p.outputs
            .iter()
            .map(|&t| match t.checked_sub(p.n_inputs) {
                Some(k) => self.layers[p.nodes[k].layer].name(),
                None => self.graph.as_ref().map(|g| g.inputs[t].name()).unwrap_or_default(),
            })
            .collect()
    }

    /// For each node, whether it should stop before its activation because that activation is
    /// fused into its output's loss (softmax with cross-entropy ...): only for a node whose
    /// output is a model output used nowhere else.
    pub(crate) fn fused_nodes(&self, losses: &[Loss]) -> Vec<bool> {
        let p = self.plan();
        let mut pre = vec![false; p.nodes.len()];
        for (j, &t) in p.outputs.iter().enumerate() {
            let Some(k) = t.checked_sub(p.n_inputs) else { continue };
            let once = p.outputs.iter().filter(|&&o| o == t).count() == 1;
            let act = self.layers[p.nodes[k].layer].lock().layer.activation();
            if once && p.consumers[t] == 0 && p.nodes[k].inputs.len() == 1 && losses[j].fuses_with(act) {
                pre[k] = true;
            }
        }
        pre
    }

    /// Runs the model on a batch (one tensor per input): every output, or with `pre` the
    /// outputs as the losses want them (logits where the activation is fused).
    pub(crate) fn run(&self, xs: &[Tensor], train: bool, pre: Option<&[bool]>) -> Result<Vec<Output>> {
        let p = self.plan();
        let mut vals: Vec<Option<Tensor>> = vec![None; p.shapes.len()];
        for (i, x) in xs.iter().enumerate() {
            vals[i] = Some(x.clone());
        }
        let mut outs = vec![None; p.nodes.len()];
        let no_pre = vec![false; p.nodes.len()];
        let fusion = self.fusion(pre.unwrap_or(&no_pre), None);
        for (k, node) in p.nodes.iter().enumerate() {
            let ins: Vec<Tensor> = node.inputs.iter().map(|&t| vals[t].clone().expect("computed")).collect();
            if fusion.absorbed[k] {
                vals[p.output_of(k)] = Some(ins[0].clone());
                continue;
            }
            let cell = self.layers[node.layer].lock();
            let fused = pre.is_some_and(|p| p[k]);
            let y = if fused {
                cell.layer.forward_pre_activation(&ins[0], train)?
            } else if let Some(pool) = fusion.pool_into[k] {
                cell.layer.forward_pooled(&ins[0], train, fusion.into[k], pool)?
            } else if let Some(a) = fusion.into[k] {
                cell.layer.forward_fused(&ins[0], train, a)?
            } else {
                cell.layer.forward_multi(&ins, train)?
            };
            if fused {
                outs[k] = Some(Output::Logits(y.clone(), cell.layer.activation()));
            }
            drop(cell);
            for &t in &node.inputs {
                if p.last_use[t] == Some(k) && !p.outputs.contains(&t) {
                    vals[t] = None;
                }
            }
            vals[p.output_of(k)] = Some(y);
        }
        Ok(p.outputs
            .iter()
            .map(|&t| match t.checked_sub(p.n_inputs).and_then(|k| outs[k].clone()) {
                Some(o) => o,
                None => Output::Values(vals[t].clone().expect("computed")),
            })
            .collect())
    }

    /// Which standalone activations run inside the layer before them: an `Activation` layer
    /// whose input is the output of a layer that can end with it (a `Conv2D` or `Dense` without
    /// an activation), used by nothing else and not a model output, unless the activation is
    /// fused into the loss; in training both nodes must run their own backward passes.
    pub(crate) fn fusion(&self, pre: &[bool], own: Option<&[bool]>) -> Fusion {
        let p = self.plan();
        let n = p.nodes.len();
        let mut fusion = Fusion { into: vec![None; n], pool_into: vec![None; n], absorbed: vec![false; n] };
        // The node whose output tensor `t` is, and whether that tensor is free to fuse: used
        // by its one consumer only, not a model output.
        let producer = |t: usize| t.checked_sub(p.n_inputs).filter(|_| p.consumers[t] == 1 && !p.outputs.contains(&t));
        for (k, node) in p.nodes.iter().enumerate() {
            let Some(a) = self.layers[node.layer].lock().layer.standalone_activation() else { continue };
            let [t] = node.inputs[..] else { continue };
            let Some(j) = producer(t) else { continue };
            let free = fusion.into[j].is_none() && !pre[k] && !pre[j];
            let trained = own.is_none_or(|o| o[j] && o[k]);
            if free && trained && self.layers[p.nodes[j].layer].lock().layer.can_fuse_activation(a) {
                fusion.into[j] = Some(a);
                fusion.absorbed[k] = true;
            }
        }
        // Max poolings after a layer (or after an activation fused into it): the layer pools
        // its own output, which is never stored at full size.
        for (k, node) in p.nodes.iter().enumerate() {
            let Some(pool) = self.layers[node.layer].lock().layer.standalone_max_pool() else { continue };
            let [t] = node.inputs[..] else { continue };
            let Some(mut j) = producer(t) else { continue };
            if fusion.absorbed[j] {
                // An activation run inside the layer before it: the pooling goes there too.
                let [t0] = p.nodes[j].inputs[..] else { continue };
                let Some(j0) = t0.checked_sub(p.n_inputs) else { continue };
                if fusion.into[j0] != self.layers[p.nodes[j].layer].lock().layer.standalone_activation() {
                    continue;
                }
                j = j0;
            }
            let free = fusion.pool_into[j].is_none() && !fusion.absorbed[j] && !pre[k] && !pre[j];
            let trained = own.is_none_or(|o| o[j] && o[k]);
            if free && trained && self.layers[p.nodes[j].layer].lock().layer.can_fuse_max_pool(fusion.into[j], pool) {
                fusion.pool_into[j] = Some(pool);
                fusion.absorbed[k] = true;
            }
        }
        fusion
    }

    /// The sum of the trainable weights' regularization penalties (Keras' `model.losses`), a
    /// scalar of the model's dtype, or `None` when no weight has a regularizer.
    pub(crate) fn penalty(&self) -> Result<Option<Tensor>> {
        let mut total: Option<Tensor> = None;
        let mut seen = std::collections::HashSet::new();
        for l in &self.layers {
            for w in l.weights() {
                if let (true, Some(r)) = (w.trainable, w.regularizer) {
                    if seen.insert(w.var.as_tensor().id()) {
                        add_to(&mut total, r.penalty(&w.var.as_tensor().detach())?)?;
                    }
                }
            }
        }
        Ok(total)
    }

    /// `(name, weight)` for every weight, layer by layer in Keras' order (`conv2d/kernel`).
    /// A name used twice (a user-defined layer whose inner layers both have a `kernel`) gets
    /// `_1`, `_2` ... in order, so that names stay unique in files.
    pub(crate) fn named_weight_vars(&mut self) -> Result<Vec<(String, Var)>> {
        self.build()?;
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        for l in &self.layers {
            let layer = l.name();
            for w in l.weights() {
                let base = format!("{layer}/{}", w.name);
                let n = seen.entry(base.clone()).or_insert(0);
                out.push((if *n == 0 { base } else { format!("{base}_{n}") }, w.var));
                *n += 1;
            }
        }
        Ok(out)
    }

    /// Replaces all weights after checking every count and shape.
    pub(crate) fn set_weights(&mut self, weights: &[Tensor]) -> Result<()> {
        let named = self.named_weight_vars()?;
        if named.len() != weights.len() {
            return Err(Error::invalid(
                "weights",
                format!("expected {} tensors, received {}", named.len(), weights.len()),
            ));
        }
        for ((name, var), w) in named.iter().zip(weights) {
            if var.dims() != w.dims() {
                return Err(Error::Shape {
                    context: format!("weight {name}"),
                    expected: format!("{:?}", var.dims()),
                    received: format!("{:?}", w.dims()),
                });
            }
        }
        for ((_, var), w) in named.iter().zip(weights) {
            var.set(&w.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }
}

/// Keras' `to_snake_case`: `MaxPooling2D` -> `max_pooling2d`.
pub(crate) fn snake_case(name: &str) -> String {
    let c: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &ch) in c.iter().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            let next_lower = c.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if c[i - 1].is_ascii_lowercase() || (next_lower && c[i - 1] != '_') {
                out.push('_');
            }
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}
