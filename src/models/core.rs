//! What every model is inside: layers, the nodes that call them, and the passes over those
//! nodes. A `Sequential` is a model whose nodes form a line; a functional `Model` is any
//! directed acyclic graph of them (Keras 3: `Sequential` is a `Functional` model).
//!
//! Tensors of a pass are numbered: the model's inputs first, then node `k`'s output is tensor
//! `inputs + k`. Nodes are in topological order (the order the user called the layers).

use crate::activations::Activation;
use crate::layers::handle::Cell;
use crate::layers::{BuildContext, LayerRef, Saved};
use crate::losses::{Loss, Output};
use crate::metrics::Metric;
use crate::optimizers::Optimizer;
use crate::regularizers::Regularizer;
use crate::{Error, Result};
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

/// Gradients of a backward walk: of each trainable variable, and of each model input.
pub(crate) type Gradients = (Vec<Option<Tensor>>, Vec<Option<Tensor>>);

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
    pub metrics: Vec<Vec<Metric>>,
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
}

/// What one node of a training forward pass keeps for the backward pass.
#[derive(Debug)]
pub(crate) enum NodeSaved {
    /// The layer's own backward pass will run on this.
    Own(Saved),
    /// A layer without one: its inputs as variables and its output, still attached to candle's
    /// graph, so that candle's autograd differentiates this one node.
    Auto { inputs: Vec<Option<Tensor>>, output: Tensor },
}

/// A nested model's training forward pass: its [`TrainInfo`] and what each node saved.
#[derive(Debug)]
pub(crate) struct NestedSaved {
    pub info: TrainInfo,
    pub saved: Vec<NodeSaved>,
}

/// What a training pass needs to know about the model, fixed for a whole `fit`.
#[derive(Debug, Clone)]
pub(crate) struct TrainInfo {
    /// The trainable variables (each once), in layer order: what the optimizer updates.
    pub vars: Vec<Var>,
    /// For each layer, for each weight the layer itself calls trainable (what its backward
    /// pass returns a gradient for), the index in `vars`, or `None` while the layer is frozen.
    pub slots: Vec<Vec<Option<usize>>>,
    /// For each tensor, whether a gradient must reach it (a trainable weight lies upstream).
    pub needs_grad: Vec<bool>,
    /// For each node, whether it stops before its activation (fused into the loss).
    pub pre: Vec<bool>,
    /// For each node, whether its layer's own backward pass runs (else candle's autograd).
    pub own: Vec<bool>,
    /// The regularized trainable variables: index in `vars` and penalty.
    pub regs: Vec<(usize, Regularizer)>,
    /// Standalone activations fused into the layer before them.
    pub fusion: Fusion,
}

/// Standalone `Activation` layers run inside the `Conv2D` or `Dense` before them: for each
/// node, the activation fused into it, and whether it is such an activation (then a no-op).
#[derive(Debug, Clone)]
pub(crate) struct Fusion {
    pub into: Vec<Option<Activation>>,
    pub absorbed: Vec<bool>,
}

/// A training forward pass: the outputs as the losses see them (leaf variables) and what each
/// node saved.
pub(crate) struct Step {
    pub outputs: Vec<Output>,
    pub saved: Vec<NodeSaved>,
}

fn add_to(slot: &mut Option<Tensor>, g: Tensor) -> Result<()> {
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

    /// What a training pass over the current trainable flags needs (see [`TrainInfo`]), with
    /// the nodes fused into `losses`.
    pub(crate) fn train_info(&self, losses: &[Loss]) -> TrainInfo {
        self.train_info_with(self.fused_nodes(losses), false)
    }

    /// [`Inner::train_info`] with the fused nodes given, and whether the model's inputs need a
    /// gradient (they do inside another model).
    pub(crate) fn train_info_with(&self, pre: Vec<bool>, inputs_need_grad: bool) -> TrainInfo {
        let p = self.plan();
        let autograd = self.autograd || std::env::var_os("KANDLE_AUTOGRAD").is_some();
        let mut vars: Vec<Var> = Vec::new();
        let mut seen: HashMap<TensorId, usize> = HashMap::new();
        let mut regs = Vec::new();
        let slots: Vec<Vec<Option<usize>>> = self
            .layers
            .iter()
            .map(|l| {
                let cell = l.lock();
                cell.layer
                    .weights()
                    .into_iter()
                    .filter(|w| w.trainable)
                    .map(|w| {
                        cell.trainable.then(|| {
                            *seen.entry(w.var.as_tensor().id()).or_insert_with(|| {
                                vars.push(w.var.clone());
                                if let Some(r) = w.regularizer {
                                    regs.push((vars.len() - 1, r));
                                }
                                vars.len() - 1
                            })
                        })
                    })
                    .collect()
            })
            .collect();
        let needs_grad = self.needs_grad(&slots, inputs_need_grad);
        let own: Vec<bool> = p
            .nodes
            .iter()
            .enumerate()
            .map(|(k, n)| !autograd && self.layers[n.layer].lock().layer.has_backward(pre[k]))
            .collect();
        let fusion = self.fusion(&pre, Some(&own));
        TrainInfo { vars, slots, needs_grad, pre, own, regs, fusion }
    }

    /// Which standalone activations run inside the layer before them: an `Activation` layer
    /// whose input is the output of a layer that can end with it (a `Conv2D` or `Dense` without
    /// an activation), used by nothing else and not a model output, unless the activation is
    /// fused into the loss; in training both nodes must run their own backward passes.
    pub(crate) fn fusion(&self, pre: &[bool], own: Option<&[bool]>) -> Fusion {
        let p = self.plan();
        let n = p.nodes.len();
        let mut fusion = Fusion { into: vec![None; n], absorbed: vec![false; n] };
        for (k, node) in p.nodes.iter().enumerate() {
            let Some(a) = self.layers[node.layer].lock().layer.standalone_activation() else { continue };
            let [t] = node.inputs[..] else { continue };
            let Some(j) = t.checked_sub(p.n_inputs) else { continue };
            let free = p.consumers[t] == 1 && !p.outputs.contains(&t) && fusion.into[j].is_none() && !pre[k] && !pre[j];
            let trained = own.is_none_or(|o| o[j] && o[k]);
            if free && trained && self.layers[p.nodes[j].layer].lock().layer.can_fuse_activation(a) {
                fusion.into[j] = Some(a);
                fusion.absorbed[k] = true;
            }
        }
        fusion
    }

    /// For each tensor, whether a gradient must reach it: a trainable weight (`slots`) lies
    /// upstream, or an input that needs one.
    pub(crate) fn needs_grad(&self, slots: &[Vec<Option<usize>>], inputs_need_grad: bool) -> Vec<bool> {
        let p = self.plan();
        let mut needs_grad = vec![inputs_need_grad; p.n_inputs];
        needs_grad.resize(p.shapes.len(), false);
        for (k, node) in p.nodes.iter().enumerate() {
            needs_grad[p.output_of(k)] =
                slots[node.layer].iter().any(Option::is_some) || node.inputs.iter().any(|&t| needs_grad[t]);
        }
        needs_grad
    }

    /// The training forward pass (dropout on) over the nodes: each node runs its layer's own
    /// saved forward pass, or, for a layer without one, its plain forward pass under candle's
    /// autograd. Returns every tensor's value (the outputs' kept) and what each node saved.
    pub(crate) fn forward_nodes(
        &self,
        xs: &[Tensor],
        info: &TrainInfo,
    ) -> Result<(Vec<Option<Tensor>>, Vec<NodeSaved>)> {
        let p = self.plan();
        let mut vals: Vec<Option<Tensor>> = vec![None; p.shapes.len()];
        for (i, x) in xs.iter().enumerate() {
            vals[i] = Some(x.clone());
        }
        let mut saved = Vec::with_capacity(p.nodes.len());
        for (k, node) in p.nodes.iter().enumerate() {
            let ins: Vec<Tensor> = node.inputs.iter().map(|&t| vals[t].clone().expect("computed")).collect();
            if info.fusion.absorbed[k] {
                vals[p.output_of(k)] = Some(ins[0].clone());
                saved.push(NodeSaved::Own(Saved::default()));
                continue;
            }
            let cell = self.layers[node.layer].lock();
            let y = if let (true, Some(a)) = (info.own[k], info.fusion.into[k]) {
                let (y, s) = cell.layer.forward_saved_fused(&ins[0], a)?;
                saved.push(NodeSaved::Own(s));
                y
            } else if info.own[k] {
                let (y, s) = cell.layer.forward_saved_multi(&ins, info.pre[k])?;
                saved.push(NodeSaved::Own(s));
                y
            } else {
                let vars: Vec<Option<Var>> = node
                    .inputs
                    .iter()
                    .zip(&ins)
                    .map(|(&t, x)| info.needs_grad[t].then(|| Var::from_tensor(x)).transpose())
                    .collect::<candle_core::Result<_>>()?;
                let ins: Vec<Tensor> = vars
                    .iter()
                    .zip(&ins)
                    .map(|(v, x)| v.as_ref().map_or_else(|| x.clone(), |v| v.as_tensor().clone()))
                    .collect();
                let y = if info.pre[k] {
                    cell.layer.forward_pre_activation(&ins[0], true)?
                } else {
                    cell.layer.forward_multi(&ins, true)?
                };
                saved.push(NodeSaved::Auto {
                    inputs: vars.into_iter().map(|v| v.map(|v| v.as_tensor().clone())).collect(),
                    output: y.clone(),
                });
                y.detach()
            };
            vals[p.output_of(k)] = Some(y);
        }
        Ok((vals, saved))
    }

    /// The training forward pass with the outputs as the losses see them (leaf variables).
    pub(crate) fn forward_train(&self, xs: &[Tensor], info: &TrainInfo) -> Result<Step> {
        let p = self.plan();
        let (vals, saved) = self.forward_nodes(xs, info)?;
        let outputs = p
            .outputs
            .iter()
            .map(|&t| {
                let leaf = Var::from_tensor(vals[t].as_ref().expect("computed"))?.as_tensor().clone();
                Ok(match t.checked_sub(p.n_inputs).filter(|&k| info.pre[k]) {
                    Some(k) => Output::Logits(leaf, self.layers[p.nodes[k].layer].lock().layer.activation()),
                    None => Output::Values(leaf),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Step { outputs, saved })
    }

    /// The backward walk: from the gradients `dys` of some tensors (the outputs), the nodes in
    /// reverse order, each output gradient the sum over the tensor's uses and each weight
    /// gradient the sum over the layer's calls. Returns the gradient of each of `info.vars` and
    /// of each model input that needs one.
    pub(crate) fn backward_nodes(
        &self,
        mut dys: Vec<Option<Tensor>>,
        saved: &[NodeSaved],
        info: &TrainInfo,
    ) -> Result<Gradients> {
        let p = self.plan();
        let mut wgrads: Vec<Option<Tensor>> = vec![None; info.vars.len()];
        for (k, (node, saved)) in p.nodes.iter().zip(saved).enumerate().rev() {
            let Some(dy) = dys[p.output_of(k)].take() else { continue };
            if info.fusion.absorbed[k] {
                // The activation ran inside the layer before it, whose backward pass has it.
                add_to(&mut dys[node.inputs[0]], dy)?;
                continue;
            }
            let need_input = node.inputs.iter().any(|&t| info.needs_grad[t]);
            let slots = &info.slots[node.layer];
            if !need_input && slots.iter().all(Option::is_none) {
                continue;
            }
            let cell = self.layers[node.layer].lock();
            let (dxs, gw) = match saved {
                NodeSaved::Own(s) => cell.layer.backward_multi(s, &dy, need_input)?,
                NodeSaved::Auto { inputs, output } => {
                    let g = (output * &dy)?.sum_all()?.backward()?;
                    let dxs = inputs.iter().map(|x| x.as_ref().and_then(|x| g.get(x).cloned())).collect();
                    let gw = cell
                        .layer
                        .weights()
                        .iter()
                        .filter(|w| w.trainable)
                        .map(|w| match g.get(w.var.as_tensor()) {
                            Some(t) => Ok(t.clone()),
                            None => w.var.as_tensor().zeros_like(),
                        })
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    (dxs, gw)
                }
            };
            drop(cell);
            for (&t, dx) in node.inputs.iter().zip(dxs) {
                if let (true, Some(dx)) = (info.needs_grad[t], dx) {
                    add_to(&mut dys[t], dx)?;
                }
            }
            for (slot, g) in slots.iter().zip(gw) {
                if let Some(i) = slot {
                    add_to(&mut wgrads[*i], g)?;
                }
            }
        }
        dys.truncate(p.n_inputs);
        Ok((wgrads, dys))
    }

    /// The gradient of `loss` (computed from `step.outputs`) for each of `info.vars`: candle's
    /// autograd for the loss alone, then [`Inner::backward_nodes`], then the regularizers'
    /// gradients.
    pub(crate) fn backward_train(&self, loss: &Tensor, step: &Step, info: &TrainInfo) -> Result<Vec<Option<Tensor>>> {
        let p = self.plan();
        let grads = loss.backward()?;
        let mut dys: Vec<Option<Tensor>> = vec![None; p.shapes.len()];
        for (out, &t) in step.outputs.iter().zip(&p.outputs) {
            let leaf = match out {
                Output::Values(l) | Output::Logits(l, _) => l,
            };
            if let Some(g) = grads.get(leaf) {
                add_to(&mut dys[t], g.clone())?;
            }
        }
        let (mut wgrads, _) = self.backward_nodes(dys, &step.saved, info)?;
        for (i, r) in &info.regs {
            add_to(&mut wgrads[*i], r.gradient(&info.vars[*i].as_tensor().detach())?)?;
        }
        Ok(wgrads)
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
