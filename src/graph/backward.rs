//! The backward walk: from the gradients of the outputs, the nodes in reverse topological order,
//! each output gradient the sum over the tensor's uses and each weight gradient the sum over the
//! layer's calls; a node that saved candle's autograd graph is differentiated by autograd.

use super::forward::{timed, NodeSaved, Pass, Step};
use super::{add_to, Graph};
use crate::error::Result;
use crate::layers::Layer;
use crate::losses::Output;
use candle_core::Tensor;

/// Gradients of a backward walk: of each trainable variable, and of each graph input.
pub(crate) type Gradients = (Vec<Option<Tensor>>, Vec<Option<Tensor>>);

impl Graph {
    /// The backward walk from the gradients `dys` of some tensors (the outputs). Returns the
    /// gradient of each of `pass.vars` and of each graph input that needs one.
    pub(crate) fn backward(&self, mut dys: Vec<Option<Tensor>>, saved: &[NodeSaved], pass: &Pass) -> Result<Gradients> {
        let p = self.plan();
        let mut wgrads: Vec<Option<Tensor>> = vec![None; pass.vars.len()];
        for (k, (node, saved)) in p.nodes.iter().zip(saved).enumerate().rev() {
            let Some(dy) = dys[p.output_of(k)].take() else { continue };
            if pass.fusion.absorbed[k] {
                // The activation (or pooling) ran inside the layer before it, whose backward
                // pass has it.
                add_to(&mut dys[node.inputs[0]], dy)?;
                continue;
            }
            let need_input = node.inputs.iter().any(|&t| pass.needs_grad[t]);
            let slots = &pass.slots[node.layer];
            if !need_input && slots.iter().all(Option::is_none) {
                continue;
            }
            let cell = self.layers()[node.layer].lock();
            let (dxs, gw) = timed(pass.timing.as_ref(), (k, 1), dy.device(), || {
                backward_node(&*cell.layer, || cell.all_weights(), saved, &dy, need_input)
            })?;
            drop(cell);
            for (&t, dx) in node.inputs.iter().zip(dxs) {
                if let (true, Some(dx)) = (pass.needs_grad[t], dx) {
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

    /// The gradient of `loss` (computed from `step.outputs`) for each of `pass.vars`: candle's
    /// autograd for the loss alone, then [`Graph::backward`], then the regularizers' gradients.
    pub(crate) fn train_backward(&self, loss: &Tensor, step: &Step, pass: &Pass) -> Result<Vec<Option<Tensor>>> {
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
        let (mut wgrads, _) = self.backward(dys, &step.saved, pass)?;
        for (i, r) in &pass.regs {
            add_to(&mut wgrads[*i], r.gradient(&pass.vars[*i].as_tensor().detach())?)?;
        }
        Ok(wgrads)
    }
}

/// One node's backward pass: the gradients of its inputs and of its layer's trainable weights
/// (`weights`: the layer's and those it added, in order).
fn backward_node(
    layer: &dyn Layer,
    weights: impl FnOnce() -> Vec<crate::layers::Weight>,
    saved: &NodeSaved,
    dy: &Tensor,
    need_input: bool,
) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
    Ok(match saved {
        NodeSaved::Own(s) => match layer.capabilities().backward {
            Some(b) => b.backward(s, dy, need_input)?,
            None => {
                return Err(crate::error::Error::invalid(
                    "layer",
                    format!("{} has no backward pass of its own", layer.class_name()),
                ))
            }
        },
        NodeSaved::Auto { inputs, output } => {
            let g = (output * dy)?.sum_all()?.backward()?;
            let dxs = inputs.iter().map(|x| x.as_ref().and_then(|x| g.get(x).cloned())).collect();
            let gw = weights()
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
