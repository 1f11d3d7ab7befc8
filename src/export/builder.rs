//! The ONNX graph being written: its nodes and initializers under unique names, and the
//! values' layouts (Keras' channels last, or channels first for ONNX's image operators) with
//! the transposes between them.

use super::proto::*;
use super::OnnxAttribute;
use crate::error::Result;
use candle_core::{DType, Tensor};
use std::collections::{HashMap, HashSet};

/// A value of the graph being written: its name, its Keras shape (channels last, without the
/// batch axis), and whether it is held channels first (`(N, C, H, W)`, images only).
#[derive(Debug, Clone)]
pub(crate) struct Val {
    pub name: String,
    pub shape: Vec<usize>,
    pub nchw: bool,
}

/// The graph being written.
pub(crate) struct Builder {
    pub opset: i64,
    pub nodes: Vec<NodeProto>,
    pub inits: Vec<TensorProto>,
    pub used: HashSet<String>,
    /// Transposes already made: (value, to channels first) -> its transposed value.
    transposed: HashMap<(String, bool), String>,
}

pub(crate) fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: 2, i, ..Default::default() }
}
pub(crate) fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: 7, ints: ints.to_vec(), ..Default::default() }
}
pub(crate) fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: 1, f, ..Default::default() }
}
pub(crate) fn attr_str(name: &str, s: &str) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: 3, s: s.as_bytes().to_vec(), ..Default::default() }
}

/// A user's [`OnnxAttribute`] as ONNX's.
pub(crate) fn attribute(name: &str, a: &OnnxAttribute) -> AttributeProto {
    match a {
        OnnxAttribute::Int(i) => attr_int(name, *i),
        OnnxAttribute::Ints(v) => attr_ints(name, v),
        OnnxAttribute::Float(f) => attr_float(name, *f),
        OnnxAttribute::Floats(v) => {
            AttributeProto { name: name.into(), r#type: 6, floats: v.clone(), ..Default::default() }
        }
        OnnxAttribute::String(s) => attr_str(name, s),
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Builder {
    pub fn new(opset: i64) -> Self {
        Builder { opset, nodes: Vec::new(), inits: Vec::new(), used: HashSet::new(), transposed: HashMap::new() }
    }

    /// `base`, or `base_1`, `base_2` ... the first not yet used.
    pub fn unique(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 0;
        while self.used.contains(&name) {
            n += 1;
            name = format!("{base}_{n}");
        }
        self.used.insert(name.clone());
        name
    }

    /// Adds a node of one output, named after `hint`; returns the output's name.
    pub fn node(&mut self, op: &str, hint: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        let out = self.unique(hint);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op.into(),
            attribute,
        });
        out
    }

    /// Adds a node whose output is `output` (a graph output's name).
    pub fn node_named(&mut self, op: &str, output: &str, inputs: &[&str]) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            name: output.into(),
            op_type: op.into(),
            attribute: Vec::new(),
        });
    }

    /// An f32 constant.
    pub fn f32_const(&mut self, hint: &str, dims: &[usize], values: &[f32]) -> String {
        let name = self.unique(hint);
        self.inits.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            name: name.clone(),
            raw_data: f32_bytes(values),
            ..Default::default()
        });
        name
    }

    /// A scalar f32 constant.
    pub fn scalar(&mut self, hint: &str, v: f32) -> String {
        self.f32_const(hint, &[], &[v])
    }

    /// A 1-D int64 constant.
    pub fn i64_const(&mut self, hint: &str, values: &[i64]) -> String {
        let name = self.unique(hint);
        self.inits.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: INT64,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// A tensor as an f32 constant of its shape.
    pub fn tensor_const(&mut self, hint: &str, t: &Tensor) -> Result<String> {
        let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(self.f32_const(hint, t.dims(), &values))
    }

    /// `v` held channels first (an image: Keras shape of 3 axes).
    pub fn nchw(&mut self, v: &Val) -> Val {
        self.layout(v, true)
    }

    /// `v` held as Keras holds it (channels last).
    pub fn keras(&mut self, v: &Val) -> Val {
        self.layout(v, false)
    }

    fn layout(&mut self, v: &Val, nchw: bool) -> Val {
        if v.nchw == nchw || v.shape.len() != 3 {
            return v.clone();
        }
        let key = (v.name.clone(), nchw);
        let name = match self.transposed.get(&key) {
            Some(n) => n.clone(),
            None => {
                let (perm, suffix) = if nchw { ([0, 3, 1, 2], "nchw") } else { ([0, 2, 3, 1], "nhwc") };
                let n =
                    self.node("Transpose", &format!("{}/{suffix}", v.name), &[&v.name], vec![attr_ints("perm", &perm)]);
                self.transposed.insert(key, n.clone());
                n
            }
        };
        Val { name, shape: v.shape.clone(), nchw }
    }

    /// The shape of a constant that broadcasts along `v`'s channels (its last Keras axis).
    pub fn channel_dims(v: &Val) -> Vec<usize> {
        let c = *v.shape.last().unwrap_or(&1);
        if v.nchw {
            vec![c, 1, 1]
        } else {
            vec![c]
        }
    }
}
