//! The graph every model runs, as Keras 3's `ops/function.py` (`Function`,
//! `_run_through_graph`) under `models/functional.py`: the layers, the nodes that call them, the
//! [`Plan`] made when the graph is built (tensor shapes, last uses, fusions), one walker for
//! every pass ([`forward`]: inference or training, timed or not) and the backward walk
//! ([`backward`]). `models/` says what a model is and holds a [`Graph`]; `trainers/` runs passes
//! over it; neither sees its fields.
//!
//! Tensors of a pass are numbered: the graph's inputs first, then node `k`'s output is tensor
//! `inputs + k`. Nodes are in topological order (the order the user called the layers).

pub(crate) mod backward;
pub(crate) mod forward;
mod plan;

pub(crate) use forward::{Pass, Timing};
pub(crate) use plan::Plan;

use crate::error::{Error, Result};
use crate::layers::{BuildContext, LayerRef};
use crate::losses::Loss;
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;

/// One call of a layer: `layers[layer]` on the tensors `inputs`, in the pass's mode or, when
/// the call said so (Keras' `layer(x, training=False)`), always in `training`'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub layer: usize,
    pub inputs: Vec<usize>,
    pub training: Option<bool>,
}

/// An entry of [`Graph::keras_order`]: input `i` (its `InputLayer`) or layer `j`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    Input(usize),
    Layer(usize),
}

/// A graph's inputs' shapes, nodes and output tensors.
#[derive(Debug, Clone)]
pub(crate) struct Topology {
    pub input_shapes: Vec<Vec<usize>>,
    pub nodes: Vec<Node>,
    pub outputs: Vec<usize>,
}

/// Where a graph's nodes come from.
enum Source {
    /// A stack of layers (a `Sequential`): one input, of the first layer's declared shape, each
    /// layer called on the output of the one before.
    Stack,
    /// A graph read from symbolic tensors (`Model::new`): its `InputLayer`s, their shapes, the
    /// nodes and the output tensors.
    Functional { inputs: Vec<LayerRef>, input_shapes: Vec<Vec<usize>>, nodes: Vec<Node>, outputs: Vec<usize> },
}

/// What building a graph's weights needs: their dtype and device, the seed of the generator
/// they are drawn from, and how many values they may take in all (bounded while a file loads).
pub(crate) struct BuildSettings<'a> {
    pub dtype: DType,
    pub device: &'a Device,
    pub seed: u64,
    pub budget: usize,
}

/// A model's graph: its layers (each once, in the order of its first node) and how they are
/// called, and once built, its [`Plan`].
pub(crate) struct Graph {
    layers: Vec<LayerRef>,
    source: Source,
    plan: Option<Plan>,
}

impl Graph {
    /// An empty stack.
    pub fn stack() -> Self {
        Graph { layers: Vec::new(), source: Source::Stack, plan: None }
    }

    /// A functional graph: `inputs` are the `InputLayer`s of inputs of `input_shapes`, `nodes`
    /// call `layers`, `outputs` are tensor numbers.
    pub fn functional(
        inputs: Vec<LayerRef>,
        input_shapes: Vec<Vec<usize>>,
        layers: Vec<LayerRef>,
        nodes: Vec<Node>,
        outputs: Vec<usize>,
    ) -> Self {
        Graph { layers, source: Source::Functional { inputs, input_shapes, nodes, outputs }, plan: None }
    }

    /// Whether the graph is a stack (a `Sequential`).
    pub fn is_stack(&self) -> bool {
        matches!(self.source, Source::Stack)
    }

    /// The layers, each once, in the order of their first call.
    pub fn layers(&self) -> &[LayerRef] {
        &self.layers
    }

    /// The `InputLayer`s of a functional graph (none for a stack).
    pub fn input_layers(&self) -> &[LayerRef] {
        match &self.source {
            Source::Functional { inputs, .. } => inputs,
            Source::Stack => &[],
        }
    }

    /// Appends a layer to a stack.
    pub fn push(&mut self, layer: LayerRef) {
        self.layers.push(layer);
        self.plan = None;
    }

    /// Removes a stack's last layer.
    pub fn pop(&mut self) -> Option<LayerRef> {
        self.plan = None;
        self.layers.pop()
    }

    /// The inputs' shapes, nodes and outputs, as declared (a stack's input shape is its first
    /// layer's `input_shape`).
    ///
    /// # Errors
    /// A stack without layers, or whose first layer declares no input shape.
    pub fn topology(&self) -> Result<Topology> {
        Ok(match &self.source {
            Source::Functional { input_shapes, nodes, outputs, .. } => {
                Topology { input_shapes: input_shapes.clone(), nodes: nodes.clone(), outputs: outputs.clone() }
            }
            Source::Stack => {
                let first = self
                    .layers
                    .first()
                    .ok_or_else(|| Error::invalid("layers", "the model has no layer: add one with `add`"))?;
                let cell = first.lock();
                let input = cell.layer.declared_input_shape().map(|s| s.to_vec()).ok_or_else(|| {
                    Error::invalid(
                        "input_shape",
                        format!(
                            "the first layer, {}, needs an input shape: add `.input_shape((h, w, c))` to it",
                            cell.label()
                        ),
                    )
                })?;
                let n = self.layers.len();
                Topology {
                    input_shapes: vec![input],
                    nodes: (0..n).map(|i| Node { layer: i, inputs: vec![i], training: None }).collect(),
                    outputs: vec![n],
                }
            }
        })
    }

    /// The output shapes for `input_shapes`, without creating any weight.
    ///
    /// # Errors
    /// A layer that does not fit its inputs.
    pub fn infer_output_shapes(&self, input_shapes: &[Vec<usize>]) -> Result<Vec<Vec<usize>>> {
        let t = self.topology()?;
        let mut shapes = input_shapes.to_vec();
        for node in &t.nodes {
            let ins: Vec<Vec<usize>> = node.inputs.iter().map(|&i| shapes[i].clone()).collect();
            shapes.push(self.layers[node.layer].lock().output_shape(&ins)?);
        }
        Ok(t.outputs.iter().map(|&i| shapes[i].clone()).collect())
    }

    /// Whether the graph is built (every layer has its weights, the plan is made).
    pub fn is_built(&self) -> bool {
        self.plan.is_some()
    }

    /// Creates the weights of every layer that has none yet, node by node, from one generator
    /// seeded by `s.seed`, and makes the plan.
    ///
    /// # Errors
    /// No input shape, a layer that does not fit its input (the error names the layer and both
    /// shapes), or weights larger than the budget.
    pub fn build(&mut self, s: &BuildSettings) -> Result<()> {
        if self.plan.is_some() {
            return Ok(());
        }
        let t = self.topology()?;
        let mut rng = StdRng::seed_from_u64(s.seed);
        let mut shapes = t.input_shapes;
        let mut budget = s.budget;
        for node in &t.nodes {
            let ins: Vec<Vec<usize>> = node.inputs.iter().map(|&i| shapes[i].clone()).collect();
            let mut ctx = BuildContext::new(s.dtype, s.device, &mut rng);
            ctx.budget = budget;
            let out = self.layers[node.layer].lock().build(&ins, &mut ctx)?;
            budget = ctx.budget;
            shapes.push(out);
        }
        self.plan = Some(Plan::new(shapes.len() - t.nodes.len(), t.nodes, t.outputs, shapes));
        Ok(())
    }

    /// The inputs and layers in Keras' order (`model.layers`, the order of `get_weights`), as
    /// Keras 3's `ops/function.py` `map_graph` orders operations: by depth (the longest path
    /// to an output) from the deepest, ties by the order a depth-first walk back from the
    /// outputs first meets them; an input no output needs comes last. A stack: its layers.
    pub fn keras_order(&self) -> Vec<Op> {
        let t = match (&self.source, self.topology()) {
            (Source::Functional { .. }, Ok(t)) => t,
            _ => return (0..self.layers.len()).map(Op::Layer).collect(),
        };
        let n_in = t.input_shapes.len();
        let op_of =
            |tensor: usize| if tensor < n_in { Op::Input(tensor) } else { Op::Layer(t.nodes[tensor - n_in].layer) };
        // The walk back from the outputs: each operation's first index, and the tensors in
        // post-order (from the inputs to the outputs).
        let mut index: HashMap<Op, usize> = HashMap::new();
        let mut finished = vec![false; n_in + t.nodes.len()];
        let mut post = Vec::with_capacity(finished.len());
        for &out in &t.outputs {
            // An explicit stack: (tensor, whether its inputs were pushed).
            let mut stack = vec![(out, false)];
            while let Some((tensor, expanded)) = stack.pop() {
                if finished[tensor] {
                    continue;
                }
                if expanded {
                    finished[tensor] = true;
                    post.push(tensor);
                    continue;
                }
                let op = op_of(tensor);
                let next = index.len();
                index.entry(op).or_insert(next);
                stack.push((tensor, true));
                if tensor >= n_in {
                    // Pushed in reverse, so that the first input is walked first.
                    for &i in t.nodes[tensor - n_in].inputs.iter().rev() {
                        if !finished[i] {
                            stack.push((i, false));
                        }
                    }
                }
            }
        }
        let mut node_depth = vec![0usize; finished.len()];
        let mut op_depth: HashMap<Op, usize> = HashMap::new();
        for &tensor in post.iter().rev() {
            let op = op_of(tensor);
            let depth = node_depth[tensor].max(op_depth.get(&op).copied().unwrap_or(0));
            op_depth.insert(op, depth);
            node_depth[tensor] = depth;
            if tensor >= n_in {
                for &i in &t.nodes[tensor - n_in].inputs {
                    node_depth[i] = node_depth[i].max(depth + 1);
                }
            }
        }
        let mut ops: Vec<(Op, usize, i64)> =
            op_depth.iter().map(|(&op, &d)| (op, d, index.get(&op).map_or(-1, |&i| i as i64))).collect();
        for i in 0..n_in {
            if !op_depth.contains_key(&Op::Input(i)) {
                ops.push((Op::Input(i), 0, -1));
            }
        }
        ops.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        ops.into_iter().map(|(op, ..)| op).collect()
    }

    /// Every weight named `layer/weight`, in Keras' order of the layers ([`Graph::keras_order`]).
    pub fn named_weights_keras(&self) -> Vec<(String, Var)> {
        let order = self.keras_order().into_iter().filter_map(|op| if let Op::Layer(j) = op { Some(j) } else { None });
        self.named_weights_in(order)
    }

    /// The weights of the layers `order` (indices), named `layer/weight`, a name met twice
    /// suffixed `_1`, `_2` ...
    fn named_weights_in(&self, order: impl Iterator<Item = usize>) -> Vec<(String, Var)> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        for j in order {
            let l = &self.layers[j];
            let layer = l.name();
            for w in l.weights() {
                let base = format!("{layer}/{}", w.name);
                let n = seen.entry(base.clone()).or_insert(0);
                out.push((if *n == 0 { base } else { format!("{base}_{n}") }, w.var));
                *n += 1;
            }
        }
        out
    }

    /// The plan, once built.
    pub fn plan_if_built(&self) -> Option<&Plan> {
        self.plan.as_ref()
    }

    /// The plan of a built graph.
    ///
    /// # Panics
    /// When the graph is not built: every caller builds it first.
    pub fn plan(&self) -> &Plan {
        self.plan.as_ref().expect("the graph is built before it is walked")
    }

    /// The inputs' shapes (built graph).
    pub fn input_shapes(&self) -> &[Vec<usize>] {
        let p = self.plan();
        &p.shapes[..p.n_inputs]
    }

    /// The outputs' shapes (built graph).
    pub fn output_shapes(&self) -> Vec<Vec<usize>> {
        let p = self.plan();
        p.outputs.iter().map(|&t| p.shapes[t].clone()).collect()
    }

    /// Names of the outputs as Keras' logs use them: the name of the layer that makes each.
    pub fn output_names(&self) -> Vec<String> {
        let p = self.plan();
        p.outputs
            .iter()
            .map(|&t| match t.checked_sub(p.n_inputs) {
                Some(k) => self.layers[p.nodes[k].layer].name(),
                None => self.input_layers().get(t).map(|l| l.name()).unwrap_or_default(),
            })
            .collect()
    }

    /// For each node, whether it should stop before its activation because that activation is
    /// fused into its output's loss (softmax with cross-entropy ...): only for a node whose
    /// output is a graph output used nowhere else.
    pub fn loss_fused_nodes(&self, losses: &[Loss]) -> Vec<bool> {
        let p = self.plan();
        let mut pre = vec![false; p.nodes.len()];
        for (j, &t) in p.outputs.iter().enumerate() {
            let Some(k) = t.checked_sub(p.n_inputs) else { continue };
            let once = p.outputs.iter().filter(|&&o| o == t).count() == 1;
            let act = forward::activation_of(&self.layers[p.nodes[k].layer]);
            if once && p.consumers[t] == 0 && p.nodes[k].inputs.len() == 1 && losses[j].fuses_with(act) {
                pre[k] = true;
            }
        }
        pre
    }

    /// The sum of the trainable weights' regularization penalties (Keras' `model.losses`), a
    /// scalar of the weights' dtype, or `None` when no weight has a regularizer.
    ///
    /// # Errors
    /// If candle cannot compute a penalty.
    pub fn penalty(&self) -> Result<Option<Tensor>> {
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

    /// `(name, weight)` for every weight, layer by layer in the order of their first call (the
    /// names files hold: `conv2d/kernel`).
    /// A name used twice (a user-defined layer whose inner layers both have a `kernel`) gets
    /// `_1`, `_2` ... in order, so that names stay unique in files.
    pub fn named_weights(&self) -> Vec<(String, Var)> {
        self.named_weights_in(0..self.layers.len())
    }

    /// Replaces all weights after checking every count and shape; nothing changes unless all
    /// fit.
    ///
    /// # Errors
    /// A wrong number of tensors or a tensor of the wrong shape (the error names the weight).
    pub fn set_weights(&self, weights: &[Tensor]) -> Result<()> {
        let named = self.named_weights_keras();
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

/// `slot += g` (or `slot = g` when empty): how gradients of a tensor used twice are summed.
pub(crate) fn add_to(slot: &mut Option<Tensor>, g: Tensor) -> Result<()> {
    *slot = Some(match slot.take() {
        Some(a) => (a + g)?,
        None => g,
    });
    Ok(())
}
