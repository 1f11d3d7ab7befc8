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
    ///
    /// In an inference pass (`fold`: the pass's `training` flag), a BatchNormalization that
    /// normalises by its moving statistics after a linear convolution runs inside it, its scale
    /// and shift taken into the convolution's weights ([`crate::layers::Folding`]), and the
    /// activation after the normalisation then ends the convolution.
    pub fn fusion(&self, layers: &[LayerRef], pre: &[bool], own: Option<&[bool]>, fold: Option<bool>) -> Fusion {
        let n = self.nodes.len();
        let mut into: Vec<Option<Activation>> = vec![None; n];
        let mut pool_into: Vec<Option<(usize, usize)>> = vec![None; n];
        let mut absorbed = vec![false; n];
        // For a convolution, the normalisation folded into it; for that normalisation, the
        // convolution.
        let mut folded: Vec<Option<usize>> = vec![None; n];
        let mut folded_into: Vec<Option<usize>> = vec![None; n];
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
        let can_fold = |j: usize, channels: usize, ending: Ending| {
            let cell = layers[self.nodes[j].layer].lock();
            let caps = cell.layer.capabilities();
            caps.folding.is_some_and(|f| f.can_fold(channels, ending))
        };
        if let Some(training) = fold {
            for (k, node) in self.nodes.iter().enumerate() {
                let [t] = node.inputs[..] else { continue };
                let Some(j) = producer(t) else { continue };
                if pre[k] || pre[j] || self.nodes[j].layer == node.layer {
                    continue;
                }
                let fixed = {
                    let cell = layers[node.layer].lock();
                    let caps = cell.layer.capabilities();
                    let training = node.training.unwrap_or(training);
                    caps.channel_affine.is_some_and(|a| a.fixed_affine(training).is_ok_and(|v| v.is_some()))
                };
                let channels = self.shapes[t].last().copied().unwrap_or(0);
                // An activation after the normalisation that the convolution cannot end with
                // (ReLU6, swish) stays fused into the normalisation: one pass either way, and
                // the normalisation's kernels apply it in the same pass.
                let out = self.output_of(k);
                let then = self.nodes.iter().enumerate().find(|(_, n)| n.inputs.contains(&out)).map(|(c, _)| c);
                let kept = match (producer(out), then.and_then(standalone_activation)) {
                    (Some(_), Some(a)) => {
                        !can_fold(j, channels, Ending::Activation(a))
                            && fusion(k, &|f| f.can_end_with(Ending::Activation(a)))
                    }
                    _ => false,
                };
                if fixed && !kept && folded[j].is_none() && can_fold(j, channels, Ending::Own) {
                    folded[j] = Some(k);
                    folded_into[k] = Some(j);
                    absorbed[k] = true;
                }
            }
        }
        for (k, node) in self.nodes.iter().enumerate() {
            let Some(a) = standalone_activation(k) else { continue };
            let [t] = node.inputs[..] else { continue };
            let Some(j) = producer(t) else { continue };
            if let Some(conv) = folded_into[j] {
                // After a folded normalisation: the convolution ends with the activation.
                let channels = self.shapes[t].last().copied().unwrap_or(0);
                if into[conv].is_none() && !pre[k] && can_fold(conv, channels, Ending::Activation(a)) {
                    into[conv] = Some(a);
                    absorbed[k] = true;
                }
                continue;
            }
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
            if folded_into[j].is_some() {
                continue;
            }
            if absorbed[j] {
                // An activation run inside the layer before it: the pooling goes there too.
                let [t0] = self.nodes[j].inputs[..] else { continue };
                let Some(j0) = t0.checked_sub(self.n_inputs) else { continue };
                if into[j0] != standalone_activation(j) {
                    continue;
                }
                j = j0;
            }
            let free = pool_into[j].is_none() && folded[j].is_none() && !absorbed[j] && !pre[k] && !pre[j];
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
        Fusion { endings, absorbed, folded }
    }
}

/// The fusions of a pass: how each node ends, and which nodes run inside another.
#[derive(Debug, Clone)]
pub(crate) struct Fusion {
    pub endings: Vec<Ending>,
    /// Nodes whose work runs inside the node before them (their output is its output).
    pub absorbed: Vec<bool>,
    /// For a convolution, the BatchNormalization node folded into its weights (inference).
    pub folded: Vec<Option<usize>>,
}

#[cfg(test)]
mod tests {
    use crate::graph::Pass;
    use crate::layers::{BatchNormalization, Ending};
    use crate::prelude::*;
    use crate::trainers::TraineeState;

    /// Which BatchNormalization nodes an inference pass folds into the convolution before
    /// them: only after a linear convolution whose output nothing else reads, only while the
    /// normalisation runs by its moving statistics, never in a training pass.
    #[test]
    fn inference_folds_normalisations_into_linear_convolutions() {
        let inputs = Input::new((6, 6, 2));
        // 1-3: folded, the ReLU after it ending the convolution.
        let a = Conv2D::new(4, 3).padding(Padding::Same).call(&inputs).unwrap();
        let a = BatchNormalization::new().call(&a).unwrap();
        let a = Activation::Relu.call(&a).unwrap();
        // 4-5: the convolution ends with its own ReLU: not folded.
        let b = Conv2D::new(4, 3).padding(Padding::Same).activation(Activation::Relu).call(&inputs).unwrap();
        let b = BatchNormalization::new().call(&b).unwrap();
        // 6-7: the convolution's output is read twice (here and by the Add): not folded.
        let c = Conv2D::new(4, 1).call(&inputs).unwrap();
        let cn = BatchNormalization::new().call(&c).unwrap();
        // 8-10: a ReLU6 after the normalisation, which the convolution cannot end with: it stays
        // fused into the normalisation, which is not folded.
        let d = Conv2D::new(4, 1).call(&inputs).unwrap();
        let d = BatchNormalization::new().call(&d).unwrap();
        let d = Activation::Relu6.call(&d).unwrap();
        let s = Add::new().call(&[a, b, cn, c, d]).unwrap();
        let model = Model::new(&[inputs], &[s]).unwrap().seed(1);
        model.build().unwrap();
        let state = model.lock();
        let graph = state.graph();
        let names: Vec<String> = graph.plan().nodes.iter().map(|n| graph.layers()[n.layer].name()).collect();
        assert_eq!(names[..4], ["conv2d", "batch_normalization", "activation", "conv2d_1"]);
        let pass = Pass::inference(graph, false, None);
        let folded: Vec<(usize, usize)> =
            pass.fusion.folded.iter().enumerate().filter_map(|(k, j)| j.map(|j| (k, j))).collect();
        assert_eq!(folded, [(0, 1)]);
        assert_eq!(pass.fusion.endings[0], Ending::Activation(Activation::Relu));
        assert_eq!(names[8], "batch_normalization_3");
        assert_eq!(pass.fusion.endings[8], Ending::Activation(Activation::Relu6));
        assert!(pass.fusion.absorbed[1] && pass.fusion.absorbed[2]);
        // Batch statistics (training=True): nothing folds; the ReLU goes into the normalisation.
        let pass = Pass::inference(graph, true, None);
        assert!(pass.fusion.folded.iter().all(Option::is_none));
        assert_eq!(pass.fusion.endings[1], Ending::Activation(Activation::Relu));
        let pass = Pass::training(graph, vec![false; names.len()], false, false);
        assert!(pass.fusion.folded.iter().all(Option::is_none));
        // Frozen: the moving statistics in training mode too.
        drop(state);
        model.get_layer("batch_normalization").unwrap().set_trainable(false);
        let state = model.lock();
        let pass = Pass::inference(state.graph(), true, None);
        assert_eq!(pass.fusion.folded[0], Some(1));
    }
}
