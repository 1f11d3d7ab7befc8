//! The plan of a built graph: every tensor's shape, who reads it and when it is last read, and
//! the fusions every pass uses (which layer ends with the activation or pooling that follows
//! it), decided here once for all passes.

use super::Node;
use crate::activations::Activation;
use crate::layers::{Ending, LayerRef};

/// A built graph's tensors and nodes.
pub(crate) struct Plan {
    /// Unique to this plan: a pass made for it refuses to walk another (the model changed
    /// under a running `fit`, as a callback that adds or pops a layer changes it).
    pub id: u64,
    pub n_inputs: usize,
    pub nodes: Vec<Node>,
    pub outputs: Vec<usize>,
    /// Shape of every tensor, without the batch axis.
    pub shapes: Vec<Vec<usize>>,
    /// How many nodes read each tensor.
    pub consumers: Vec<usize>,
    /// The last node that reads each tensor (a pass frees it after that node).
    pub last_use: Vec<Option<usize>>,
}

impl Plan {
    pub fn new(n_inputs: usize, nodes: Vec<Node>, outputs: Vec<usize>, shapes: Vec<Vec<usize>>) -> Self {
        let mut consumers = vec![0; shapes.len()];
        let mut last_use = vec![None; shapes.len()];
        for (k, node) in nodes.iter().enumerate() {
            for &t in &node.inputs {
                consumers[t] += 1;
                last_use[t] = Some(k);
            }
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Plan { id, n_inputs, nodes, outputs, shapes, consumers, last_use }
    }

    /// The tensor node `node` makes.
    pub fn output_of(&self, node: usize) -> usize {
        self.n_inputs + node
    }

    /// How each node's pass ends, and which nodes run inside the one before them (absorbed):
    /// a standalone activation (`Activation('relu')`, `ReLU()`) runs inside the layer before it
    /// when that layer can end with it, and a max pooling after it (or after such an activation)
    /// inside the layer that makes its input. Both need the tensor between them to be used by
    /// nothing else and not to be a graph output; a node that stops before its activation for
    /// the loss (`pre`) takes part in none; in training (`own`) both nodes must run their own
    /// backward passes.
    pub fn fusion(&self, layers: &[LayerRef], pre: &[bool], own: Option<&[bool]>) -> Fusion {
        let n = self.nodes.len();
        let mut into: Vec<Option<Activation>> = vec![None; n];
        let mut pool_into: Vec<Option<(usize, usize)>> = vec![None; n];
        let mut absorbed = vec![false; n];
        let fusion = |k: usize, f: &dyn Fn(&dyn crate::layers::Fusion) -> bool| {
            let cell = layers[self.nodes[k].layer].lock();
            let caps = cell.layer.capabilities();
            caps.fusion.is_some_and(f)
        };
        let standalone_activation = |k: usize| -> Option<Activation> {
            let cell = layers[self.nodes[k].layer].lock();
            let caps = cell.layer.capabilities();
            caps.fusion.and_then(|f| f.standalone_activation())
        };
        // The node whose output tensor `t` is, and whether that tensor is free to fuse: used
        // by its one consumer only, not a graph output.
        let producer =
            |t: usize| t.checked_sub(self.n_inputs).filter(|_| self.consumers[t] == 1 && !self.outputs.contains(&t));
        for (k, node) in self.nodes.iter().enumerate() {
            let Some(a) = standalone_activation(k) else { continue };
            let [t] = node.inputs[..] else { continue };
            let Some(j) = producer(t) else { continue };
            let free = into[j].is_none() && !pre[k] && !pre[j];
            let trained = own.is_none_or(|o| o[j] && o[k]);
            if free && trained && fusion(j, &|f| f.can_end_with(Ending::Activation(a))) {
                into[j] = Some(a);
                absorbed[k] = true;
            }
        }
        // Max poolings after a layer (or after an activation fused into it): the layer pools
        // its own output, which is never stored at full size.
        for (k, node) in self.nodes.iter().enumerate() {
            let Some(pool) = ({
                let cell = layers[node.layer].lock();
                let caps = cell.layer.capabilities();
                caps.fusion.and_then(|f| f.standalone_max_pool())
            }) else {
                continue;
            };
            let [t] = node.inputs[..] else { continue };
            let Some(mut j) = producer(t) else { continue };
            if absorbed[j] {
                // An activation run inside the layer before it: the pooling goes there too.
                let [t0] = self.nodes[j].inputs[..] else { continue };
                let Some(j0) = t0.checked_sub(self.n_inputs) else { continue };
                if into[j0] != standalone_activation(j) {
                    continue;
                }
                j = j0;
            }
            let free = pool_into[j].is_none() && !absorbed[j] && !pre[k] && !pre[j];
            let trained = own.is_none_or(|o| o[j] && o[k]);
            let ending = Ending::Pooled { activation: into[j], pool };
            if free && trained && fusion(j, &|f| f.can_end_with(ending)) {
                pool_into[j] = Some(pool);
                absorbed[k] = true;
            }
        }
        let endings = (0..n)
            .map(|k| {
                if pre[k] {
                    Ending::PreActivation
                } else if let Some(pool) = pool_into[k] {
                    Ending::Pooled { activation: into[k], pool }
                } else if let Some(a) = into[k] {
                    Ending::Activation(a)
                } else {
                    Ending::Own
                }
            })
            .collect();
        Fusion { endings, absorbed }
    }
}

/// The fusions of a pass: how each node ends, and which nodes run inside another.
#[derive(Debug, Clone)]
pub(crate) struct Fusion {
    pub endings: Vec<Ending>,
    /// Nodes whose work runs inside the node before them (their output is its output).
    pub absorbed: Vec<bool>,
}
