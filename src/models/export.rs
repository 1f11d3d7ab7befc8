//! `Model::export` (Keras' `model.export(path, format="onnx")`): the model's graph, with the
//! models inside it inlined, handed to the exporters of [`crate::export`].

use super::model::ModelState;
use super::Model;
use crate::error::{Error, Result};
use crate::export::{ExportFormat, ExportOptions, FlatGraph, FlatNode};
use std::path::Path;

/// Appends `state`'s nodes to `flat`, its inputs being the values `inputs`, under `prefix`;
/// returns the values of its outputs.
fn inline(state: &mut ModelState, inputs: &[usize], prefix: &str, flat: &mut FlatGraph) -> Result<Vec<usize>> {
    state.build()?;
    let plan = state.graph.plan();
    let (n_inputs, nodes, outputs) = (plan.n_inputs, plan.nodes.clone(), plan.outputs.clone());
    let shapes = plan.shapes.clone();
    if inputs.len() != n_inputs {
        return Err(Error::invalid(
            "model",
            format!("model {}: called on {} inputs, it has {n_inputs}", state.name, inputs.len()),
        ));
    }
    let layers = state.graph.layers().to_vec();
    // The value of every tensor of this graph.
    let mut values: Vec<usize> = inputs.to_vec();
    for (k, node) in nodes.iter().enumerate() {
        let layer = &layers[node.layer];
        let args: Vec<usize> = node.inputs.iter().map(|&t| values[t]).collect();
        let name = format!("{prefix}{}", layer.name());
        if let Some(inner) = layer.as_model() {
            let outs = inline(&mut inner.lock(), &args, &format!("{name}/"), flat)?;
            let [out] = outs[..] else {
                return Err(Error::invalid(
                    "model",
                    format!(
                        "model {name} inside {}: a model of {} outputs as a layer cannot be exported",
                        state.name,
                        outs.len()
                    ),
                ));
            };
            values.push(out);
            continue;
        }
        let weights = layer.weights().into_iter().map(|w| (w.name, w.var.as_tensor().clone())).collect();
        flat.nodes.push(FlatNode {
            class: layer.class_name().to_string(),
            name,
            config: layer.get_config().to_json(),
            weights,
            inputs: args,
            output_shape: shapes[n_inputs + k].clone(),
            training: node.training,
        });
        values.push(flat.inputs.len() + flat.nodes.len() - 1);
    }
    Ok(outputs.iter().map(|&t| values[t]).collect())
}

impl Model {
    /// Writes the model for another runtime, as Keras' `model.export(filepath, format=...)`:
    /// an ONNX file of the model in inference mode (see [`crate::export`] for what it holds).
    /// Nothing is written unless every layer exports.
    ///
    /// ```no_run
    /// # use kandle::prelude::*;
    /// use kandle::export::ExportFormat;
    /// let model = Sequential::new()
    ///     .add(Dense::new(10).activation(Activation::Softmax).input_shape(784));
    /// model.build()?;
    /// model.export("classifier.onnx", ExportFormat::Onnx)?;
    /// # Ok::<(), kandle::Error>(())
    /// ```
    ///
    /// # Errors
    /// A layer that has no ONNX mapping (a user-defined one without
    /// [`ExportOptions::layer_mapping`]), a layer called with `training=True` whose training
    /// behaviour differs, a model that cannot be built, a file that cannot be written, or a
    /// kandle built without its `onnx` feature.
    pub fn export(&self, path: impl AsRef<Path>, format: ExportFormat) -> Result<()> {
        self.export_with(path, format, ExportOptions::default())
    }

    /// [`Model::export`] with options: the ONNX operator set, a fixed batch size, external
    /// weights, mappings of user-defined layers.
    ///
    /// # Errors
    /// As [`Model::export`], and options out of range.
    pub fn export_with(&self, path: impl AsRef<Path>, format: ExportFormat, options: ExportOptions) -> Result<()> {
        let ExportFormat::Onnx = format;
        options.check()?;
        let flat = self.flat_graph()?;
        #[cfg(feature = "onnx")]
        {
            crate::export::onnx::write(path.as_ref(), &flat, &options)
        }
        #[cfg(not(feature = "onnx"))]
        {
            let _ = (path, flat);
            Err(Error::invalid("format", "ONNX export needs kandle's `onnx` feature (on by default)"))
        }
    }

    /// The model's graph, models inside it inlined.
    pub(crate) fn flat_graph(&self) -> Result<FlatGraph> {
        let mut state = self.lock();
        state.build()?;
        let input_names: Vec<String> = match state.graph.input_layers() {
            [] => vec!["input_layer".to_string()],
            layers => layers.iter().map(|l| l.name()).collect(),
        };
        let shapes = state.graph.input_shapes().to_vec();
        let mut flat = FlatGraph {
            name: state.name.clone(),
            inputs: input_names.into_iter().zip(shapes).collect(),
            nodes: Vec::new(),
            outputs: Vec::new(),
        };
        let inputs: Vec<usize> = (0..flat.inputs.len()).collect();
        let outs = inline(&mut state, &inputs, "", &mut flat)?;
        let plan = state.graph.plan();
        let layers = state.graph.layers();
        for (i, (&t, &v)) in plan.outputs.iter().zip(&outs).enumerate() {
            // Named after the layer that makes it (a model's last layer, inside a model).
            let name = match t.checked_sub(plan.n_inputs) {
                Some(k) => layers[plan.nodes[k].layer].name(),
                None => format!("output_{i}"),
            };
            flat.outputs.push((name, v));
        }
        Ok(flat)
    }
}
