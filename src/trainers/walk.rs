//! The training pass over a model's nodes: the forward pass that keeps what each layer's
//! backward pass needs, and the backward walk in reverse topological order (gradients of a
//! tensor used twice summed, a shared layer's weight gradients summed over its calls). Layers
//! without a backward pass of their own are differentiated by candle's autograd, one node at a
//! time, so that the rest of the model keeps the fast path.

use crate::error::Result;
use crate::layers::Saved;
use crate::losses::{Loss, Output};
use crate::models::core::{add_to, Fusion, Inner};
use crate::regularizers::Regularizer;
use candle_core::{Tensor, TensorId, Var};
use std::collections::HashMap;

/// Gradients of a backward walk: of each trainable variable, and of each model input.
pub(crate) type Gradients = (Vec<Option<Tensor>>, Vec<Option<Tensor>>);

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
    /// Where [`Model::profile`](crate::models::Model::profile) gathers each node's forward
    /// and backward time (`None`: not timed).
    pub timing: Option<Timing>,
}

/// Each node's forward and backward time, summed over the passes timed.
pub(crate) type Timing = std::sync::Arc<std::sync::Mutex<Vec<[std::time::Duration; 2]>>>;

/// Runs `f` and, when `timing` is given, adds its time to slot `which` of node `k`, with
/// `device` synchronised after it so that a GPU's queued work counts.
fn timed<R>(
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

/// A training forward pass: the outputs as the losses see them (leaf variables) and what each
/// node saved.
pub(crate) struct Step {
    pub outputs: Vec<Output>,
    pub saved: Vec<NodeSaved>,
}

impl Inner {
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
        TrainInfo { vars, slots, needs_grad, pre, own, regs, fusion, timing: None }
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
            let device = ins[0].device().clone();
            let y = timed(info.timing.as_ref(), (k, 0), &device, || {
                self.forward_node(k, &ins, info, &*cell.layer, &mut saved)
            })?;
            // What each layer's backward pass needs it saved itself: a tensor no later node
            // reads is freed now, as inference does.
            for &t in &node.inputs {
                if p.last_use[t] == Some(k) && !p.outputs.contains(&t) {
                    vals[t] = None;
                }
            }
            vals[p.output_of(k)] = Some(y);
        }
        Ok((vals, saved))
    }

    /// Node `k`'s training forward pass on `ins` (see [`Inner::forward_nodes`]): its output,
    /// with what it saved pushed onto `saved`.
    fn forward_node(
        &self,
        k: usize,
        ins: &[Tensor],
        info: &TrainInfo,
        layer: &dyn crate::layers::Layer,
        saved: &mut Vec<NodeSaved>,
    ) -> Result<Tensor> {
        let node = &self.plan().nodes[k];
        let y = if let (true, Some(pool)) = (info.own[k], info.fusion.pool_into[k]) {
            let (y, s) = layer.forward_saved_pooled(&ins[0], info.fusion.into[k], pool)?;
            saved.push(NodeSaved::Own(s));
            y
        } else if let (true, Some(a)) = (info.own[k], info.fusion.into[k]) {
            let (y, s) = layer.forward_saved_fused(&ins[0], a)?;
            saved.push(NodeSaved::Own(s));
            y
        } else if info.own[k] {
            let (y, s) = layer.forward_saved_multi(ins, info.pre[k])?;
            saved.push(NodeSaved::Own(s));
            y
        } else {
            let vars: Vec<Option<Var>> = node
                .inputs
                .iter()
                .zip(ins)
                .map(|(&t, x)| info.needs_grad[t].then(|| Var::from_tensor(x)).transpose())
                .collect::<candle_core::Result<_>>()?;
            let ins: Vec<Tensor> = vars
                .iter()
                .zip(ins)
                .map(|(v, x)| v.as_ref().map_or_else(|| x.clone(), |v| v.as_tensor().clone()))
                .collect();
            let y = if info.pre[k] {
                layer.forward_pre_activation(&ins[0], true)?
            } else {
                layer.forward_multi(&ins, true)?
            };
            saved.push(NodeSaved::Auto {
                inputs: vars.into_iter().map(|v| v.map(|v| v.as_tensor().clone())).collect(),
                output: y.clone(),
            });
            y.detach()
        };
        Ok(y)
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
                // The activation (or pooling) ran inside the layer before it, whose backward
                // pass has it.
                add_to(&mut dys[node.inputs[0]], dy)?;
                continue;
            }
            let need_input = node.inputs.iter().any(|&t| info.needs_grad[t]);
            let slots = &info.slots[node.layer];
            if !need_input && slots.iter().all(Option::is_none) {
                continue;
            }
            let cell = self.layers[node.layer].lock();
            let (dxs, gw) = timed(info.timing.as_ref(), (k, 1), dy.device(), || {
                self.backward_node(&*cell.layer, saved, &dy, need_input)
            })?;
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

    /// One node's backward pass (see [`Inner::backward_nodes`]): the gradients of its inputs
    /// and of its layer's trainable weights.
    fn backward_node(
        &self,
        layer: &dyn crate::layers::Layer,
        saved: &NodeSaved,
        dy: &Tensor,
        need_input: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        Ok(match saved {
            NodeSaved::Own(s) => layer.backward_multi(s, dy, need_input)?,
            NodeSaved::Auto { inputs, output } => {
                let g = (output * dy)?.sum_all()?.backward()?;
                let dxs = inputs.iter().map(|x| x.as_ref().and_then(|x| g.get(x).cloned())).collect();
                let gw = layer
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
        })
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
}
