//! ONNX files from a [`FlatGraph`]: the model around the graph ([`super::builder`]'s, each
//! layer's operators from [`super::lower`]), and the file (inline or external weights, written
//! whole or not at all).

use super::builder::{Builder, Val};
use super::proto::*;
use super::{ExportOptions, FlatGraph};
use crate::error::{Error, Result};
use prost::Message;
use std::path::Path;

/// The IR version that goes with an operator set.
fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

fn tensor_type(name: &str, batch: Option<usize>, dims: &[usize]) -> ValueInfoProto {
    let first = match batch {
        Some(b) => DimensionValue::DimValue(b as i64),
        None => DimensionValue::DimParam("batch".into()),
    };
    let dim = std::iter::once(Dimension { value: Some(first) })
        .chain(dims.iter().map(|&d| Dimension { value: Some(DimensionValue::DimValue(d as i64)) }))
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto { elem_type: FLOAT, shape: Some(TensorShapeProto { dim }) }),
        }),
    }
}

/// Tensors of at least this many bytes go to the external data file (as `onnx`'s
/// `convert_model_to_external_data` default).
const EXTERNAL_THRESHOLD: usize = 1024;
/// The most the model's own protocol buffer may hold before the weights go outside.
const PROTOBUF_LIMIT: usize = 2_000_000_000;

/// The ONNX model of `graph`, in memory.
pub(crate) fn model(graph: &FlatGraph, options: &ExportOptions) -> Result<ModelProto> {
    options.check()?;
    let mut b = Builder::new(options.opset);
    // Inputs and outputs keep their names: reserved first.
    for (name, _) in &graph.inputs {
        if !b.used.insert(name.clone()) {
            return Err(Error::invalid("model", format!("two inputs are named {name:?}")));
        }
    }
    let mut output_names = Vec::new();
    for (name, _) in &graph.outputs {
        let n = b.unique(name);
        output_names.push(n);
    }
    let mut values: Vec<Val> = graph
        .inputs
        .iter()
        .map(|(name, shape)| Val { name: name.clone(), shape: shape.clone(), nchw: false })
        .collect();
    for node in &graph.nodes {
        let inputs: Vec<Val> = node.inputs.iter().map(|&i| values[i].clone()).collect();
        let out = super::lower::lower(&mut b, node, inputs, options)?;
        if out.shape != node.output_shape {
            return Err(Error::invalid(
                "model",
                format!(
                    "layer {} ({}): its ONNX nodes make shape {:?}, the layer {:?}",
                    node.name, node.class, out.shape, node.output_shape
                ),
            ));
        }
        values.push(out);
    }
    let mut outputs = Vec::new();
    for ((_, v), name) in graph.outputs.iter().zip(&output_names) {
        let val = b.keras(&values[*v]);
        b.node_named("Identity", name, &[&val.name]);
        outputs.push(tensor_type(name, options.batch_size, &val.shape));
    }
    let inputs = graph.inputs.iter().map(|(name, shape)| tensor_type(name, options.batch_size, shape)).collect();
    Ok(ModelProto {
        ir_version: ir_version(options.opset),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: options.opset }],
        producer_name: "kandle".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("{}: exported by kandle in inference mode, input channels last", graph.name),
        graph: Some(GraphProto {
            node: b.nodes,
            name: graph.name.clone(),
            initializer: b.inits,
            input: inputs,
            output: outputs,
        }),
        metadata_props: Vec::new(),
    })
}

/// Writes `graph` as an ONNX file at `path` (and its weights at `path` + `.data` when they go
/// outside): both written whole, or neither.
pub(crate) fn write(path: &Path, graph: &FlatGraph, options: &ExportOptions) -> Result<()> {
    let mut model = model(graph, options)?;
    let g = model.graph.as_mut().expect("the model has its graph");
    let weight_bytes: usize = g.initializer.iter().map(|t| t.raw_data.len()).sum();
    if options.external_data || weight_bytes > PROTOBUF_LIMIT {
        let file =
            path.file_name().ok_or_else(|| Error::invalid("path", format!("{} has no file name", path.display())))?;
        let data_name = format!("{}.data", file.to_string_lossy());
        let mut data = Vec::new();
        for t in g.initializer.iter_mut().filter(|t| t.raw_data.len() >= EXTERNAL_THRESHOLD) {
            // Each tensor at an offset aligned to 4 KiB, so that runtimes may map it.
            data.resize(data.len().div_ceil(4096) * 4096, 0);
            let offset = data.len();
            data.extend_from_slice(&t.raw_data);
            let entry = |k: &str, v: String| StringStringEntryProto { key: k.into(), value: v };
            t.external_data = vec![
                entry("location", data_name.clone()),
                entry("offset", offset.to_string()),
                entry("length", t.raw_data.len().to_string()),
            ];
            t.data_location = 1;
            t.raw_data = Vec::new();
        }
        let bytes = model.encode_to_vec();
        if !data.is_empty() {
            crate::fs::write_atomic(&path.with_file_name(&data_name), &data)?;
        }
        return crate::fs::write_atomic(path, &bytes);
    }
    crate::fs::write_atomic(path, &model.encode_to_vec())
}
