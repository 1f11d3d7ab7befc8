//! Merge layers, as in `keras.layers`: [`Add`], [`Subtract`], [`Multiply`], [`Average`],
//! [`Maximum`], [`Minimum`] (element-wise; axes of size 1 broadcast, as Keras' `base_merge.py`)
//! and [`Concatenate`] (along an axis). Each has its own backward pass.

use super::{
    common_layer_methods, common_trait_methods, Backward, BuildContext, CallContext, Capabilities, Common, Config,
    Ending, Fusion, Layer, MultiInput, Saved,
};
use crate::error::fmt_shape;
use crate::error::{Error, Result};
use candle_core::Tensor;

/// Checks a merge's inputs against the shapes it was built for, which it returns.
fn check_inputs<'a>(label: &str, built: Option<&'a [Vec<usize>]>, xs: &[Tensor]) -> Result<&'a [Vec<usize>]> {
    let built = built.ok_or_else(|| super::not_built(label.to_string()))?;
    if xs.len() != built.len() {
        return Err(Error::invalid(
            "inputs",
            format!("{label}: expected {} inputs, received {}", built.len(), xs.len()),
        ));
    }
    for (x, s) in xs.iter().zip(built) {
        super::check_input(|| label.to_string(), s, x)?;
    }
    Ok(built)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Subtract,
    Multiply,
    Average,
    Maximum,
    Minimum,
}

impl Op {
    fn class(self) -> &'static str {
        match self {
            Op::Add => "Add",
            Op::Subtract => "Subtract",
            Op::Multiply => "Multiply",
            Op::Average => "Average",
            Op::Maximum => "Maximum",
            Op::Minimum => "Minimum",
        }
    }
}

/// The shared state of the element-wise merges.
#[derive(Debug)]
struct Elementwise {
    common: Common,
    op: Op,
    built: Option<Vec<Vec<usize>>>,
}

impl Elementwise {
    fn new(op: Op) -> Self {
        Elementwise { common: Common::default(), op, built: None }
    }

    fn label(&self) -> String {
        self.common.label(self.op.class())
    }

    /// As Keras' `base_merge.py`: at least one input (`Subtract`: two), of one rank, each axis
    /// of one size or 1 (broadcast, as a squeeze-and-excitation's `(1, 1, c)` scales an
    /// `(h, w, c)` map).
    fn output_shape(&self, shapes: &[Vec<usize>]) -> Result<Vec<usize>> {
        let expected = if self.op == Op::Subtract { "exactly 2 inputs" } else { "at least 1 input" };
        let count_ok = if self.op == Op::Subtract { shapes.len() == 2 } else { !shapes.is_empty() };
        if !count_ok {
            return Err(Error::invalid(
                "inputs",
                format!("{}: expected {expected}, received {}", self.label(), shapes.len()),
            ));
        }
        let mut out = shapes[0].clone();
        for s in &shapes[1..] {
            let fits = s.len() == out.len() && s.iter().zip(&out).all(|(&a, &b)| a == b || a == 1 || b == 1);
            if !fits {
                return Err(Error::Shape {
                    context: format!(
                        "{}: the inputs must have one rank and, axis by axis, one size or 1 (broadcast)",
                        self.label()
                    ),
                    expected: fmt_shape(true, &out),
                    received: fmt_shape(true, s),
                });
            }
            out = out.iter().zip(s).map(|(&a, &b)| if a == 1 { b } else { a }).collect();
        }
        Ok(out)
    }

    /// Whether the inputs were built of one shape (no broadcasting).
    fn same_shapes(&self) -> bool {
        self.built.as_ref().is_none_or(|b| b.iter().all(|s| s == &b[0]))
    }

    fn check(&self, xs: &[Tensor]) -> Result<()> {
        check_inputs(&self.label(), self.built.as_deref(), xs).map(|_| ())
    }

    fn apply(&self, xs: &[Tensor]) -> Result<Tensor> {
        self.check(xs)?;
        let same = self.same_shapes();
        if self.op == Op::Add && same {
            if let Some(y) = self.add_on_cpu(xs, false)? {
                return Ok(y);
            }
        }
        let mut acc = xs[0].clone();
        for x in &xs[1..] {
            acc = match (self.op, same) {
                (Op::Add | Op::Average, true) => (acc + x)?,
                (Op::Subtract, true) => (acc - x)?,
                (Op::Multiply, true) => (acc * x)?,
                (Op::Maximum, true) => acc.maximum(x)?,
                (Op::Minimum, true) => acc.minimum(x)?,
                (Op::Add | Op::Average, false) => acc.broadcast_add(x)?,
                (Op::Subtract, false) => acc.broadcast_sub(x)?,
                (Op::Multiply, false) => acc.broadcast_mul(x)?,
                (Op::Maximum, false) => acc.broadcast_maximum(x)?,
                (Op::Minimum, false) => acc.broadcast_minimum(x)?,
            };
        }
        if self.op == Op::Average {
            acc = (acc / xs.len() as f64)?;
        }
        Ok(acc)
    }

    /// The sum of same-shaped inputs in parallel passes on the CPU, the last with the ReLU
    /// when `relu` (`None` where the kernel does not apply).
    fn add_on_cpu(&self, xs: &[Tensor], relu: bool) -> Result<Option<Tensor>> {
        let mut acc = xs[0].clone();
        for (i, x) in xs.iter().enumerate().skip(1) {
            match crate::kernels::add_relu(&acc, x, relu && i == xs.len() - 1)? {
                Some(y) => acc = y,
                None => return Ok(None),
            }
        }
        Ok(Some(acc))
    }

    /// The sum followed by a ReLU (an `Activation('relu')` after the layer, run inside it).
    fn apply_relu(&self, xs: &[Tensor]) -> Result<Tensor> {
        self.check(xs)?;
        if self.same_shapes() && xs.len() > 1 {
            if let Some(y) = self.add_on_cpu(xs, true)? {
                return Ok(y);
            }
        }
        crate::activations::Activation::Relu.apply(&self.apply(xs)?)
    }

    /// Gradients of each input; `saved` holds the inputs and the output for the ops whose
    /// gradient needs them (multiply, maximum, minimum).
    fn backward(&self, saved: &Saved, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let built = self.built.as_ref().ok_or_else(|| super::not_built(self.label()))?;
        let grads = self.backward_full(saved, dy)?;
        if self.same_shapes() {
            return Ok(grads);
        }
        // A broadcast input's gradient is summed over the axes it was broadcast along.
        grads
            .into_iter()
            .zip(built)
            .map(|(g, shape)| {
                let Some(mut g) = g else { return Ok(None) };
                for (axis, &d) in shape.iter().enumerate() {
                    if d == 1 && g.dims()[axis + 1] != 1 {
                        g = g.sum_keepdim(axis + 1)?;
                    }
                }
                Ok(Some(g))
            })
            .collect()
    }

    /// The gradients of each input at the output's shape.
    fn backward_full(&self, saved: &Saved, dy: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let n = self.built.as_ref().ok_or_else(|| super::not_built(self.label()))?.len();
        let (xs, y) = match saved.tensors.split_last() {
            Some((y, xs)) => (xs, Some(y)),
            None => (&saved.tensors[..], None),
        };
        Ok(match self.op {
            Op::Add => vec![Some(dy.clone()); n],
            Op::Average => vec![Some((dy / n as f64)?); n],
            Op::Subtract => vec![Some(dy.clone()), Some(dy.neg()?)],
            Op::Multiply => (0..n)
                .map(|i| {
                    let mut g = dy.clone();
                    for (j, x) in xs.iter().enumerate() {
                        if j != i {
                            g = g.broadcast_mul(x)?;
                        }
                    }
                    Ok(Some(g))
                })
                .collect::<Result<_>>()?,
            Op::Maximum | Op::Minimum => {
                // The gradient goes to the first input equal to the result, as TensorFlow's
                // maximum(a, b) sends it to `a` on ties and Keras folds the inputs left to right.
                let y = y.ok_or_else(|| Error::invalid("saved", format!("{}: no saved forward pass", self.label())))?;
                let mut taken = dy.zeros_like()?;
                let mut out = Vec::with_capacity(n);
                for x in xs {
                    let hit = x.broadcast_eq(y)?.to_dtype(dy.dtype())?;
                    let mine = (hit * taken.affine(-1.0, 1.0)?)?;
                    taken = (taken + &mine)?;
                    out.push(Some((dy * mine)?));
                }
                out
            }
        })
    }
}

macro_rules! elementwise_layer {
    ($(#[$doc:meta])* $name:ident, $op:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            inner: Elementwise,
        }

        impl Default for $name {
            fn default() -> Self {
                $name { inner: Elementwise::new($op) }
            }
        }

        impl $name {
            /// The layer (no arguments in Keras).
            pub fn new() -> Self {
                Self::default()
            }

            /// Sets the layer's name (otherwise the model names it as Keras does).
            pub fn name(mut self, name: impl Into<String>) -> Self {
                self.inner.common.name = Some(name.into());
                self
            }
        }

        impl Layer for $name {
            fn class_name(&self) -> &'static str {
                $op.class()
            }
            fn name(&self) -> Option<&str> {
                self.inner.common.name.as_deref()
            }
            fn set_name(&mut self, name: String) {
                self.inner.common.name = Some(name);
            }
            fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
                self.inner.output_shape(&[input_shape.to_vec()])
            }
            fn build(&mut self, input_shape: &[usize], _ctx: &mut BuildContext) -> Result<Vec<usize>> {
                self.inner.output_shape(&[input_shape.to_vec()])
            }
            fn built(&self) -> bool {
                self.inner.built.is_some()
            }
            fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
                self.inner.apply(std::slice::from_ref(x))
            }
            fn get_config(&self) -> Config {
                Config::new()
            }
            fn capabilities(&self) -> Capabilities<'_> {
                let fusion: Option<&dyn Fusion> = if $op == Op::Add { Some(self) } else { None };
                Capabilities { multi_input: Some(self), backward: Some(self), fusion, ..Capabilities::default() }
            }
            fn multi_input_mut(&mut self) -> Option<&mut dyn MultiInput> {
                Some(self)
            }
        }

        impl MultiInput for $name {
            fn compute_output_shape_multi(&self, input_shapes: &[Vec<usize>]) -> Result<Vec<usize>> {
                self.inner.output_shape(input_shapes)
            }
            fn build_multi(&mut self, input_shapes: &[Vec<usize>], _ctx: &mut BuildContext) -> Result<Vec<usize>> {
                let out = self.inner.output_shape(input_shapes)?;
                self.inner.built = Some(input_shapes.to_vec());
                Ok(out)
            }
            fn forward_multi(&self, xs: &[Tensor], _ctx: &CallContext) -> Result<Tensor> {
                self.inner.apply(xs)
            }
            fn forward_multi_ending(&self, xs: &[Tensor], ending: Ending, ctx: &CallContext) -> Result<Tensor> {
                match ending {
                    Ending::Activation(crate::activations::Activation::Relu) if $op == Op::Add => {
                        self.inner.apply_relu(xs)
                    }
                    Ending::Own => self.forward_multi(xs, ctx),
                    other => Err(Error::invalid("layer", format!("{} cannot end a pass as {other:?}", self.inner.label()))),
                }
            }
        }

        impl Fusion for $name {
            /// A ReLU after an `Add` of same-shaped inputs (a residual connection's) runs inside
            /// it: one pass instead of two.
            fn can_end_with(&self, ending: Ending) -> bool {
                $op == Op::Add
                    && ending == Ending::Activation(crate::activations::Activation::Relu)
                    && self.inner.same_shapes()
                    && self.inner.built.as_ref().is_some_and(|b| b.len() > 1)
            }
            fn forward_ending(&self, x: &Tensor, ending: Ending, ctx: &CallContext) -> Result<Tensor> {
                self.forward_multi_ending(std::slice::from_ref(x), ending, ctx)
            }
        }

        impl Backward for $name {
            fn has_backward(&self) -> bool {
                true
            }
            fn forward_saved(&self, xs: &[Tensor], ending: Ending, _ctx: &CallContext) -> Result<(Tensor, Saved)> {
                if ending.fused_activation().is_some() {
                    // A fused ReLU (an Add's): its output gives the mask.
                    let y = self.inner.apply_relu(xs)?;
                    return Ok((y.clone(), Saved { tensors: vec![y], ending, ..Saved::default() }));
                }
                let y = self.inner.apply(xs)?;
                let tensors = if matches!($op, Op::Multiply | Op::Maximum | Op::Minimum) {
                    xs.iter().chain(std::iter::once(&y)).cloned().collect()
                } else {
                    Vec::new()
                };
                Ok((y, Saved { tensors, ..Saved::default() }))
            }
            fn backward(
                &self,
                saved: &Saved,
                dy: &Tensor,
                _need_input_grad: bool,
            ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
                if saved.ending.fused_activation().is_some() {
                    let dy = crate::activations::Activation::Relu.gradient(&saved.tensors[0], dy)?;
                    let n = self.inner.built.as_ref().map_or(2, Vec::len);
                    return Ok((vec![Some(dy); n], Vec::new()));
                }
                Ok((self.inner.backward(saved, dy)?, Vec::new()))
            }
        }
    };
}

elementwise_layer!(
    /// Adds its inputs element-wise, as `keras.layers.Add` (a residual connection:
    /// `Add::new().call(&[x, y])?`).
    ///
    /// ```
    /// use kandle::prelude::*;
    /// let (a, b) = (Input::new(4), Input::new(4));
    /// let model = Model::new(&[a.clone(), b.clone()], &[Add::new().call(&[a, b])?])?;
    /// let x = Tensor::new(&[[1f32, 2., 3., 4.]], &Device::Cpu)?;
    /// let y = model.predict(&[x.clone(), x], 32)?;
    /// assert_eq!(y.to_vec2::<f32>()?, vec![vec![2., 4., 6., 8.]]);
    /// # Ok::<(), kandle::Error>(())
    /// ```
    Add,
    Op::Add
);
elementwise_layer!(
    /// Subtracts its second input from its first, as `keras.layers.Subtract` (exactly two
    /// inputs).
    Subtract,
    Op::Subtract
);
elementwise_layer!(
    /// Multiplies its inputs element-wise, as `keras.layers.Multiply`.
    Multiply,
    Op::Multiply
);
elementwise_layer!(
    /// The element-wise mean of its inputs, as `keras.layers.Average`.
    Average,
    Op::Average
);
elementwise_layer!(
    /// The element-wise maximum of its inputs, as `keras.layers.Maximum` (on ties the gradient
    /// goes to the first input holding the maximum, as TensorFlow's).
    Maximum,
    Op::Maximum
);
elementwise_layer!(
    /// The element-wise minimum of its inputs, as `keras.layers.Minimum`.
    Minimum,
    Op::Minimum
);

/// Joins its inputs along `axis`, as `keras.layers.Concatenate` (default `axis -1`, the
/// channels). The axis counts the batch axis as Keras does: `1` is the first axis of a
/// sample, negative values count from the end.
///
/// ```
/// use kandle::prelude::*;
/// let (a, b) = (Input::new((8, 8, 3)), Input::new((8, 8, 5)));
/// let joined = Concatenate::new().call(&[a, b])?;
/// assert_eq!(joined.shape(), &[8, 8, 8]);
/// # Ok::<(), kandle::Error>(())
/// ```
#[derive(Debug)]
pub struct Concatenate {
    common: Common,
    axis: isize,
    built: Option<Vec<Vec<usize>>>,
}

impl Default for Concatenate {
    fn default() -> Self {
        Concatenate { common: Common::default(), axis: -1, built: None }
    }
}

impl Concatenate {
    /// Concatenation along the last axis (Keras' default).
    pub fn new() -> Self {
        Self::default()
    }

    common_layer_methods!();

    /// The axis (default -1); `0`, the batch axis, is not allowed.
    pub fn axis(mut self, axis: isize) -> Self {
        self.axis = axis;
        self
    }

    fn label(&self) -> String {
        self.common.label("Concatenate")
    }

    /// The axis of a sample's shape (without the batch axis) for inputs of `rank` (same).
    fn sample_axis(&self, rank: usize) -> Result<usize> {
        let full = rank as isize + 1;
        let a = if self.axis < 0 { self.axis + full } else { self.axis };
        if a <= 0 || a >= full {
            return Err(Error::invalid(
                "axis",
                format!("{}: expected an axis in [1, {rank}] or [-{rank}, -1] for inputs of rank {full} (with the batch axis), received {}", self.label(), self.axis),
            ));
        }
        Ok(a as usize - 1)
    }

    fn output_shape(&self, shapes: &[Vec<usize>]) -> Result<Vec<usize>> {
        if shapes.len() < 2 {
            return Err(Error::invalid(
                "inputs",
                format!("{}: expected at least 2 inputs, received {}", self.label(), shapes.len()),
            ));
        }
        let axis = self.sample_axis(shapes[0].len())?;
        let mut out = shapes[0].clone();
        for s in &shapes[1..] {
            let fits = s.len() == out.len() && s.iter().zip(&out).enumerate().all(|(i, (a, b))| i == axis || a == b);
            if !fits {
                return Err(Error::Shape {
                    context: format!("{}: inputs must match on every axis but {}", self.label(), self.axis),
                    expected: fmt_shape(true, &shapes[0]),
                    received: fmt_shape(true, s),
                });
            }
            out[axis] += s[axis];
        }
        Ok(out)
    }

    fn apply(&self, xs: &[Tensor]) -> Result<Tensor> {
        let built = check_inputs(&self.label(), self.built.as_deref(), xs)?;
        Ok(Tensor::cat(xs, self.sample_axis(built[0].len())? + 1)?)
    }
}

impl Layer for Concatenate {
    fn class_name(&self) -> &'static str {
        "Concatenate"
    }
    common_trait_methods!();
    fn compute_output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>> {
        self.output_shape(&[input_shape.to_vec()])
    }
    fn build(&mut self, input_shape: &[usize], _ctx: &mut BuildContext) -> Result<Vec<usize>> {
        self.output_shape(&[input_shape.to_vec()])
    }
    fn built(&self) -> bool {
        self.built.is_some()
    }
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        self.apply(std::slice::from_ref(x))
    }
    fn get_config(&self) -> Config {
        Config::new().set("axis", self.axis as i64)
    }
    fn capabilities(&self) -> Capabilities<'_> {
        Capabilities { multi_input: Some(self), backward: Some(self), ..Capabilities::default() }
    }
    fn multi_input_mut(&mut self) -> Option<&mut dyn MultiInput> {
        Some(self)
    }
}

impl MultiInput for Concatenate {
    fn compute_output_shape_multi(&self, input_shapes: &[Vec<usize>]) -> Result<Vec<usize>> {
        self.output_shape(input_shapes)
    }
    fn build_multi(&mut self, input_shapes: &[Vec<usize>], _ctx: &mut BuildContext) -> Result<Vec<usize>> {
        let out = self.output_shape(input_shapes)?;
        self.built = Some(input_shapes.to_vec());
        Ok(out)
    }
    fn forward_multi(&self, xs: &[Tensor], _ctx: &CallContext) -> Result<Tensor> {
        self.apply(xs)
    }
}

impl Backward for Concatenate {
    fn has_backward(&self) -> bool {
        true
    }
    fn forward_saved(&self, xs: &[Tensor], _ending: Ending, _ctx: &CallContext) -> Result<(Tensor, Saved)> {
        Ok((self.apply(xs)?, Saved::default()))
    }
    fn backward(
        &self,
        _saved: &Saved,
        dy: &Tensor,
        _need_input_grad: bool,
    ) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>)> {
        let built = self.built.as_ref().ok_or_else(|| super::not_built(self.label()))?;
        let axis = self.sample_axis(built[0].len())?;
        let mut start = 0;
        let mut out = Vec::with_capacity(built.len());
        for s in built {
            out.push(Some(dy.narrow(axis + 1, start, s[axis])?.contiguous()?));
            start += s[axis];
        }
        Ok((out, Vec::new()))
    }
}
