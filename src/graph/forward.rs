//! The one walker over a graph's nodes, for every kind of pass ([`Pass`]): inference (also
//! Keras' `model(x, training=True)`), and training, which keeps what each node's backward pass
//! needs. Both skip the nodes that run inside another (fusions), free each tensor after its last
//! use, and, when the pass is timed, add each node's time to its slot.
//!
//! In training a node runs its layer's own saved pass ([`Backward`]), or, for a layer without
//! one, its plain pass under candle's autograd, one node at a time, so that the rest of the
//! model keeps the fast path.

use super::plan::Fusion;
use super::Graph;
use crate::activations::Activation;
use crate::error::Result;
use crate::layers::{CallContext, Ending, Layer, LayerRef, Saved};
use crate::losses::{Loss, Output};
use crate::regularizers::Regularizer;
use candle_core::{Tensor, TensorId, Var};
use std::collections::HashMap;

/// What a pass is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Each node's output only: prediction, evaluation, `model(x, training)`.
    Inference,
    /// Each node keeps what its backward pass needs.
    Training,
}

/// Each node's forward and backward time, summed over the passes timed.
pub(crate) type Timing = std::sync::Arc<std::sync::Mutex<Vec<[std::time::Duration; 2]>>>;

/// A pass over a graph, decided once before its batches: what each node does and, in training,
/// what the backward walk needs (fixed for a whole `fit`).
#[derive(Debug, Clone)]
pub(crate) struct Pass {
    /// The plan this pass was made for ([`Plan::id`](super::Plan)).
    pub plan: u64,
    pub mode: Mode,
    pub ctx: CallContext,
    /// For each node, whether it stops before its activation (fused into its output's loss).
    pub pre: Vec<bool>,
    /// For each node, whether its layer's own backward pass runs (else candle's autograd).
    pub own: Vec<bool>,
    /// How each node ends and which run inside another.
    pub fusion: Fusion,
    /// The trainable variables (each once), in layer order: what the optimizer updates.
    pub vars: Vec<Var>,
    /// For each layer, for each weight the layer itself calls trainable (what its backward
    /// pass returns a gradient for), the index in `vars`, or `None` while the layer is frozen.
    pub slots: Vec<Vec<Option<usize>>>,
    /// For each tensor, whether a gradient must reach it (a trainable weight lies upstream).
    pub needs_grad: Vec<bool>,
    /// The regularized trainable variables: index in `vars` and penalty.
    pub regs: Vec<(usize, Regularizer)>,
    /// Where [`Model::profile`](crate::models::Model::profile) gathers each node's forward
    /// and backward time (`None`: not timed).
    pub timing: Option<Timing>,
}

/// The activation a layer ends with (what a loss may take over), `Linear` for a layer that
/// offers no fusion.
pub(crate) fn activation_of(layer: &LayerRef) -> Activation {
    let cell = layer.lock();
    let caps = cell.layer.capabilities();
    caps.fusion.map_or(Activation::Linear, |f| f.activation())
}

impl Pass {
    /// An inference pass; with `pre`, the nodes fused into their outputs' losses stop before
    /// their activations (evaluation).
    pub fn inference(graph: &Graph, training: bool, pre: Option<Vec<bool>>) -> Pass {
        let p = graph.plan();
        let pre = pre.unwrap_or_else(|| vec![false; p.nodes.len()]);
        let fusion = p.fusion(graph.layers(), &pre, None, Some(training));
        Pass {
            plan: p.id,
            mode: Mode::Inference,
            ctx: CallContext { training, row_offset: 0 },
            own: vec![false; p.nodes.len()],
            pre,
            fusion,
            vars: Vec::new(),
            slots: Vec::new(),
            needs_grad: Vec::new(),
            regs: Vec::new(),
            timing: None,
        }
    }

    /// A training pass over the current trainable flags, the nodes `pre` stopping before their
    /// activations; `inputs_need_grad` for a graph inside another model; `autograd` to
    /// differentiate every node with candle's autograd.
    pub fn training(graph: &Graph, pre: Vec<bool>, inputs_need_grad: bool, autograd: bool) -> Pass {
        let p = graph.plan();
        let mut vars: Vec<Var> = Vec::new();
        let mut seen: HashMap<TensorId, usize> = HashMap::new();
        let mut regs = Vec::new();
        let slots: Vec<Vec<Option<usize>>> = graph
            .layers()
            .iter()
            .map(|l| {
                let cell = l.lock();
                cell.all_weights()
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
        let needs_grad = needs_grad(graph, &slots, inputs_need_grad);
        let own: Vec<bool> = p
            .nodes
            .iter()
            .map(|n| {
                let cell = graph.layers()[n.layer].lock();
                let caps = cell.layer.capabilities();
                !autograd && caps.backward.is_some_and(|b| b.has_backward())
            })
            .collect();
        let fusion = p.fusion(graph.layers(), &pre, Some(&own), None);
        Pass {
            plan: p.id,
            mode: Mode::Training,
            ctx: CallContext { training: true, row_offset: 0 },
            pre,
            own,
            fusion,
            vars,
            slots,
            needs_grad,
            regs,
            timing: None,
        }
    }

    /// The training pass of a model compiled with `losses` (nodes fused into them stop before
    /// their activations).
    pub fn for_losses(graph: &Graph, losses: &[Loss], autograd: bool) -> Pass {
        Pass::training(graph, graph.loss_fused_nodes(losses), false, autograd)
    }

    /// This pass with its rows at `offset` in the whole batch (a replica's shard).
    pub fn at_row(mut self, offset: usize) -> Pass {
        self.ctx = self.ctx.with_row_offset(offset);
        self
    }
}

/// For each tensor, whether a gradient must reach it: a trainable weight (`slots`) lies
/// upstream, or an input that needs one.
pub(crate) fn needs_grad(graph: &Graph, slots: &[Vec<Option<usize>>], inputs_need_grad: bool) -> Vec<bool> {
    let p = graph.plan();
    let mut needs_grad = vec![inputs_need_grad; p.n_inputs];
    needs_grad.resize(p.shapes.len(), false);
    for (k, node) in p.nodes.iter().enumerate() {
        needs_grad[p.output_of(k)] =
            slots[node.layer].iter().any(Option::is_some) || node.inputs.iter().any(|&t| needs_grad[t]);
    }
    needs_grad
}

/// What one node of a training pass keeps for the backward pass.
#[derive(Debug)]
pub(crate) enum NodeSaved {
    /// The layer's own backward pass will run on this.
    Own(Saved),
    /// A layer without one: its inputs as variables and its output, still attached to candle's
    /// graph, so that candle's autograd differentiates this one node.
    Auto { inputs: Vec<Option<Tensor>>, output: Tensor },
}

/// A training forward pass: the outputs as the losses see them (leaf variables) and what each
/// node saved.
#[derive(Debug)]
pub(crate) struct Step {
    pub outputs: Vec<Output>,
    pub saved: Vec<NodeSaved>,
}

/// Runs `f` and, when `timing` is given, adds its time to slot `which` of node `k`, with
/// `device` synchronised after it so that a GPU's queued work counts.
pub(crate) fn timed<R>(
    timing: Option<&Timing>,
    (k, which): (usize, usize),
    device: &candle_core::Device,
    f: impl FnOnce() -> Result<R>,
) -> Result<R> {
    let Some(timing) = timing else { return f() };
    let t = std::time::Instant::now();
    let r = f()?;
    if !device.is_cpu() {
        device.synchronize()?;
    }
    let elapsed = t.elapsed();
    let mut times = timing.lock().unwrap_or_else(|e| e.into_inner());
    if times.len() <= k {
        times.resize(k + 1, [std::time::Duration::ZERO; 2]);
    }
    times[k][which] += elapsed;
    Ok(r)
}

/// A layer's plain pass (no backward kept), ending as `ending` says.
fn plain(layer: &dyn Layer, ins: &[Tensor], ending: Ending, ctx: &CallContext) -> Result<Tensor> {
    let caps = layer.capabilities();
    match (ending, caps.multi_input, caps.fusion) {
        (Ending::Own, Some(m), _) => m.forward_multi(ins, ctx),
        (Ending::Own, None, _) => {
            layer.forward_in(crate::layers::single_input(|| layer.class_name().to_string(), ins)?, ctx)
        }
        (other, Some(m), _) => m.forward_multi_ending(ins, other, ctx),
        (other, _, Some(f)) => f.forward_ending(&ins[0], other, ctx),
        (other, _, None) => {
            Err(crate::error::Error::invalid("layer", format!("{} cannot end a pass as {other:?}", layer.class_name())))
        }
    }
}

impl Graph {
    /// A convolution's inference pass with the BatchNormalization node `j` folded in (`affine`
    /// its scale and shift), ending as `ending` says; with no affine (the normalisation no
    /// longer runs by its moving statistics), the two passes one after the other.
    fn folded(
        &self,
        layer: &dyn Layer,
        ins: &[Tensor],
        ending: Ending,
        (j, affine): (usize, Option<(Tensor, Tensor)>),
        (ctx, bn_ctx): (&CallContext, &CallContext),
    ) -> Result<Tensor> {
        let x = crate::layers::single_input(|| layer.class_name().to_string(), ins)?;
        let folding = layer.capabilities().folding;
        if let (Some(f), Some((scale, shift))) = (folding, affine) {
            return f.forward_folded(x, &scale, &shift, ending);
        }
        let z = plain(layer, ins, Ending::Own, ctx)?;
        let bn = self.layers()[self.plan().nodes[j].layer].lock();
        let y = plain(&*bn.layer, &[z], Ending::Own, bn_ctx)?;
        match ending.fused_activation() {
            Some(a) => a.apply(&y),
            None => Ok(y),
        }
    }

    /// The plan, if `pass` was made for it.
    ///
    /// # Errors
    /// A graph changed since the pass was made: a callback added or removed a layer during
    /// `fit`.
    pub(crate) fn check(&self, pass: &Pass) -> Result<&super::Plan> {
        match self.plan_if_built() {
            Some(p) if p.id == pass.plan => Ok(p),
            _ => Err(crate::error::Error::invalid(
                "model",
                "the model changed while it ran (layers added or removed, by a callback during fit?); \
                 change a model between fits, not during one",
            )),
        }
    }

    /// The walk: each node's pass as `pass` says, in topological order. Returns every tensor's
    /// value (the outputs' kept, the others freed after their last use) and, in training, what
    /// each node saved.
    ///
    /// # Errors
    /// A graph changed since the pass was made (a callback added or removed a layer during
    /// `fit`), or a layer's error.
    pub(crate) fn walk(&self, xs: &[Tensor], pass: &Pass) -> Result<(Vec<Option<Tensor>>, Vec<NodeSaved>)> {
        let p = self.check(pass)?;
        let mut vals: Vec<Option<Tensor>> = vec![None; p.shapes.len()];
        for (i, x) in xs.iter().enumerate() {
            vals[i] = Some(x.clone());
        }
        let training = pass.mode == Mode::Training;
        let mut saved = Vec::with_capacity(if training { p.nodes.len() } else { 0 });
        for (k, node) in p.nodes.iter().enumerate() {
            let ins: Vec<Tensor> = node.inputs.iter().map(|&t| vals[t].clone().expect("computed")).collect();
            if pass.fusion.absorbed[k] {
                // The activation (or pooling) runs inside the layer before it.
                vals[p.output_of(k)] = Some(ins[0].clone());
                if training {
                    saved.push(NodeSaved::Own(Saved::default()));
                }
                continue;
            }
            let node_ctx = |node: &super::Node| match node.training {
                Some(training) => CallContext { training, ..pass.ctx },
                None => pass.ctx,
            };
            let ctx = node_ctx(node);
            // A BatchNormalization folded into this convolution: its scale and shift, taken
            // before this node's layer is locked.
            let fold = match pass.fusion.folded[k].filter(|_| !training) {
                Some(j) => {
                    let bn = self.layers()[p.nodes[j].layer].lock();
                    let affine =
                        bn.layer.capabilities().channel_affine.map(|a| a.fixed_affine(node_ctx(&p.nodes[j]).training));
                    Some((j, affine.transpose()?.flatten()))
                }
                None => None,
            };
            let cell = self.layers()[node.layer].lock();
            let device = ins[0].device().clone();
            let y = timed(pass.timing.as_ref(), (k, 0), &device, || {
                let ending = pass.fusion.endings[k];
                if let Some((j, affine)) = fold {
                    return self.folded(&*cell.layer, &ins, ending, (j, affine), (&ctx, &node_ctx(&p.nodes[j])));
                }
                if !training {
                    return plain(&*cell.layer, &ins, ending, &ctx);
                }
                let caps = cell.layer.capabilities();
                if let (true, Some(b)) = (pass.own[k], caps.backward) {
                    let (y, s) = b.forward_saved(&ins, ending, &ctx)?;
                    saved.push(NodeSaved::Own(s));
                    return Ok(y);
                }
                // Candle's autograd for this node: its inputs become variables.
                let vars: Vec<Option<Var>> = node
                    .inputs
                    .iter()
                    .zip(&ins)
                    .map(|(&t, x)| pass.needs_grad[t].then(|| Var::from_tensor(x)).transpose())
                    .collect::<candle_core::Result<_>>()?;
                let ins: Vec<Tensor> = vars
                    .iter()
                    .zip(&ins)
                    .map(|(v, x)| v.as_ref().map_or_else(|| x.clone(), |v| v.as_tensor().clone()))
                    .collect();
                let y = plain(&*cell.layer, &ins, ending, &ctx)?;
                saved.push(NodeSaved::Auto {
                    inputs: vars.into_iter().map(|v| v.map(|v| v.as_tensor().clone())).collect(),
                    output: y.clone(),
                });
                Ok(y.detach())
            })?;
            drop(cell);
            // What each layer's backward pass needs it saved itself: a tensor no later node
            // reads is freed now.
            for &t in &node.inputs {
                if p.last_use[t] == Some(k) && !p.outputs.contains(&t) {
                    vals[t] = None;
                }
            }
            vals[p.output_of(k)] = Some(y);
        }
        Ok((vals, saved))
    }

    /// An inference pass: every output, or, with nodes stopping before their activations
    /// (`pass.pre`), the outputs as the losses want them (logits where the activation is fused).
    pub(crate) fn infer(&self, xs: &[Tensor], pass: &Pass) -> Result<Vec<Output>> {
        let p = self.plan();
        let (vals, _) = self.walk(xs, pass)?;
        Ok(p.outputs
            .iter()
            .map(|&t| {
                let value = vals[t].clone().expect("computed");
                match t.checked_sub(p.n_inputs).filter(|&k| pass.pre[k]) {
                    Some(k) => Output::Logits(value, activation_of(&self.layers()[p.nodes[k].layer])),
                    None => Output::Values(value),
                }
            })
            .collect())
    }

    /// A training forward pass with the outputs as the losses see them (leaf variables).
    pub(crate) fn train_forward(&self, xs: &[Tensor], pass: &Pass) -> Result<Step> {
        let p = self.plan();
        let (vals, saved) = self.walk(xs, pass)?;
        let outputs = p
            .outputs
            .iter()
            .map(|&t| {
                let leaf = Var::from_tensor(vals[t].as_ref().expect("computed"))?.as_tensor().clone();
                Ok(match t.checked_sub(p.n_inputs).filter(|&k| pass.pre[k]) {
                    Some(k) => Output::Logits(leaf, activation_of(&self.layers()[p.nodes[k].layer])),
                    None => Output::Values(leaf),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Step { outputs, saved })
    }
}
