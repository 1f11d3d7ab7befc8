//! Keras 3's weights layout (`saving/saving_lib.py`): the tree of HDF5 groups that
//! `model.save_weights("m.weights.h5")` writes and that a `.keras` archive holds as
//! `model.weights.h5`.
//!
//! Each object's variables sit in a `vars` group under the object's path, numbered from 0 in
//! the order Keras creates them (trainable first), with the object's name as the group's
//! `name` attribute. A model's layers are under `layers/`, each keyed by its class in snake
//! case, a repeated key suffixed `_1`, `_2` ... in the order of `model.layers` (a functional
//! model's inputs included, as `input_layer`); a nested model is a model at its layer's path.
//! The optimizer's variables are under `optimizer/vars`: the step count, the learning rate
//! (unless it comes from a schedule), then the slots in Keras' order.

use crate::error::{Error, Result};
use crate::graph::{Op, Pass};
use crate::hdf5::{Attr, Data, Dataset, Group};
use crate::models::model::ModelState;
use candle_core::{DType, Tensor, Var};
use std::collections::HashMap;

/// Keras' `naming.to_snake_case`: `Conv2D` -> `conv2d`, `BatchNormalization` ->
/// `batch_normalization`, `RMSprop` -> `rm_sprop`.
pub(crate) fn snake_case(class: &str) -> String {
    let c: Vec<char> = class.chars().filter(|c| c.is_alphanumeric() || *c == '_').collect();
    // `(.)([A-Z][a-z]+)` -> `\1_\2`
    let mut a = String::new();
    for i in 0..c.len() {
        if i > 0 && c[i].is_ascii_uppercase() && c.get(i + 1).is_some_and(|n| n.is_ascii_lowercase()) {
            a.push('_');
        }
        a.push(c[i]);
    }
    // `([a-z])([A-Z])` -> `\1_\2`, then lower case.
    let a: Vec<char> = a.chars().collect();
    let mut out = String::new();
    for i in 0..a.len() {
        if i > 0 && a[i].is_ascii_uppercase() && a[i - 1].is_ascii_lowercase() {
            out.push('_');
        }
        out.push(a[i]);
    }
    out.to_lowercase()
}

/// Keras' `_get_unique_name`: the first `conv2d`, then `conv2d_1`, `conv2d_2` ...
fn unique(name: String, used: &mut HashMap<String, usize>) -> String {
    match used.get_mut(&name) {
        Some(n) => {
            *n += 1;
            format!("{name}_{n}")
        }
        None => {
            used.insert(name.clone(), 0);
            name
        }
    }
}

fn join(path: &str, child: &str) -> String {
    if path.is_empty() {
        child.to_string()
    } else {
        format!("{path}/{child}")
    }
}

fn to_dataset(t: &Tensor) -> Result<Dataset> {
    Ok(Dataset::f32(t.dims(), t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?))
}

/// An object's variables at one path of the tree: a model's own (none), a layer's.
struct Entry {
    path: String,
    name: String,
    weights: Vec<(String, Var)>,
}

/// Every object of the model with variables, by its path in Keras' layout, in Keras' order.
fn entries(state: &ModelState, path: &str, out: &mut Vec<Entry>) {
    out.push(Entry { path: path.to_string(), name: state.name.clone(), weights: Vec::new() });
    let mut used = HashMap::new();
    let layers = state.graph.layers();
    for op in state.graph.keras_order() {
        match op {
            Op::Input(i) => {
                let key = unique("input_layer".into(), &mut used);
                let name = state.graph.input_layers().get(i).map(|l| l.name()).unwrap_or_default();
                out.push(Entry { path: join(path, &format!("layers/{key}")), name, weights: Vec::new() });
            }
            Op::Layer(j) => {
                let l = &layers[j];
                let key = unique(snake_case(l.class_name()), &mut used);
                let lp = join(path, &format!("layers/{key}"));
                if let Some(inner) = l.as_model() {
                    entries(&inner.lock(), &lp, out);
                    continue;
                }
                let weights = l.weights().into_iter().map(|w| (w.name, w.var)).collect();
                out.push(Entry { path: lp, name: l.name(), weights });
            }
        }
    }
}

/// How Keras lays out an optimizer's slots: groups of kandle's per-variable slot indices;
/// within a group, the slots of each variable in turn (Keras' `add_optimizer_variables` with
/// several names interleaves them), groups one after the other.
fn slot_groups(optimizer: &str, per_variable: usize) -> Vec<Vec<usize>> {
    match optimizer {
        // velocity, momentum, average_gradient: each over all variables in turn.
        "rmsprop" | "sgd" | "adagrad" | "ftrl" => (0..per_variable).map(|i| vec![i]).collect(),
        // (momentum, velocity) interleaved, then velocity_hat (amsgrad).
        "adam" | "adamw" | "nadam" | "adamax" | "adadelta" => {
            let mut g = vec![(0..per_variable.min(2)).collect::<Vec<_>>()];
            g.extend((2..per_variable).map(|i| vec![i]));
            g
        }
        _ => vec![(0..per_variable).collect()],
    }
}

/// Keras' optimizer class in snake case (the `name` of its `vars` group).
fn optimizer_snake(name: &str) -> String {
    match name {
        "rmsprop" => "rm_sprop".into(),
        "adamw" => "adam_w".into(),
        other => other.into(),
    }
}

impl ModelState {
    /// The variables `trained` (the optimizer's, in kandle's order) in Keras' order.
    fn keras_trainable(&self, trained: &[Var]) -> Vec<Var> {
        let mut all = Vec::new();
        entries(self, "", &mut all);
        let trainable: std::collections::HashSet<_> = trained.iter().map(|v| v.as_tensor().id()).collect();
        all.into_iter()
            .flat_map(|Entry { weights, .. }| weights)
            .map(|(_, v)| v)
            .filter(|v| trainable.contains(&v.as_tensor().id()))
            .collect()
    }

    /// The model's variables (and the optimizer's, when it has state) in Keras 3's layout.
    pub(crate) fn keras_weights_tree(&mut self) -> Result<Group> {
        self.build()?;
        let mut tree = Group::default();
        let mut all = Vec::new();
        entries(self, "", &mut all);
        for Entry { path, name, weights } in all {
            let vars = tree.group_mut(&join(&path, "vars"));
            vars.attrs.insert("name".into(), Attr::Str(name));
            for (i, (_, v)) in weights.iter().enumerate() {
                vars.datasets.insert(i.to_string(), to_dataset(v.as_tensor())?);
            }
        }
        if let Some(group) = self.keras_optimizer_group()? {
            *tree.group_mut("optimizer/vars") = group;
        }
        Ok(tree)
    }

    /// The optimizer's `vars` group: its step count, learning rate and slots in Keras' order.
    fn keras_optimizer_group(&self) -> Result<Option<Group>> {
        let Some(c) = &self.compiled else { return Ok(None) };
        let opt = &c.optimizer;
        let mut g = Group::default();
        g.attrs.insert("name".into(), Attr::Str(optimizer_snake(opt.name())));
        let mut values: Vec<Dataset> = vec![Dataset { shape: vec![], data: Data::I64(vec![opt.iterations() as i64]) }];
        if opt.schedule().is_none() {
            values.push(Dataset { shape: vec![], data: Data::F32(vec![opt.learning_rate() as f32]) });
        }
        let mut slots = opt.slots();
        let vars = Pass::for_losses(&self.graph, &c.losses, false).vars;
        let extra = if opt.name() == "nadam" && !slots.is_empty() { slots.pop() } else { None };
        if slots.is_empty() {
            // Compiled, not trained yet: the slots the optimizer will start from, as Keras
            // writes a built optimizer's (zeros; Adagrad's initial accumulator value).
            let init = opt.config().iter().find(|(k, _)| *k == "initial_accumulator_value").map_or(0.0, |(_, v)| *v);
            let per = opt.slots_per_variable().unwrap_or(0);
            for v in &vars {
                for _ in 0..per {
                    slots.push((v.as_tensor().zeros_like()? + init)?);
                }
            }
        }
        if !slots.is_empty() && !vars.is_empty() {
            let per = slots.len() / vars.len();
            // kandle keeps the slots by variable in its training order; Keras by its layers'.
            let index: HashMap<_, usize> = vars.iter().enumerate().map(|(k, v)| (v.as_tensor().id(), k)).collect();
            let order: Vec<usize> =
                self.keras_trainable(&vars).iter().filter_map(|v| index.get(&v.as_tensor().id()).copied()).collect();
            for group in slot_groups(opt.name(), per) {
                for &k in &order {
                    for &j in &group {
                        values.push(to_dataset(&slots[k * per + j])?);
                    }
                }
            }
        }
        if let Some(t) = extra {
            values.push(Dataset { shape: vec![], data: Data::F32(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?) });
        }
        for (i, d) in values.into_iter().enumerate() {
            g.datasets.insert(i.to_string(), d);
        }
        Ok(Some(g))
    }

    /// Loads the model's variables (and the optimizer's state, when the model is compiled and
    /// the tree has some) from Keras 3's layout. Every variable's presence and shape is
    /// checked before any changes.
    pub(crate) fn load_keras_weights_tree(&mut self, tree: &Group, file: &std::path::Path) -> Result<()> {
        self.build()?;
        let bad = |reason: String| Error::Format { path: file.into(), format: "Keras weights", offset: 0, reason };
        let mut all = Vec::new();
        entries(self, "", &mut all);
        let mut assign: Vec<(Var, Tensor)> = Vec::new();
        for Entry { path, name, weights } in &all {
            let vars_path = join(path, "vars");
            let found = tree.group(&vars_path);
            let count = found.map_or(0, |g| g.datasets.len());
            if count != weights.len() {
                let want: Vec<String> = weights.iter().map(|(n, v)| format!("{n} {:?}", v.dims())).collect();
                return Err(bad(format!(
                    "{vars_path} (layer {name}): expected {} variables{}, the file holds {count}{}",
                    weights.len(),
                    if want.is_empty() { String::new() } else { format!(" ({})", want.join(", ")) },
                    if found.is_none() { " (no such group: saved from another architecture?)" } else { "" }
                )));
            }
            for (i, (wname, var)) in weights.iter().enumerate() {
                let key = format!("{vars_path}/{i}");
                let d = found.and_then(|g| g.datasets.get(&i.to_string())).ok_or_else(|| {
                    bad(format!("no variable {key} (layer {name}'s {wname}); the group holds other names"))
                })?;
                if d.shape != var.dims() {
                    return Err(Error::Shape {
                        context: format!("{key} (layer {name}'s {wname}) in {}", file.display()),
                        expected: format!("{:?}", var.dims()),
                        received: format!("{:?}", d.shape),
                    });
                }
                let t = Tensor::from_vec(d.data.to_f32(), var.dims(), var.device())?.to_dtype(var.dtype())?;
                assign.push((var.clone(), t));
            }
        }
        let optimizer = self.keras_optimizer_state(tree, &bad)?;
        // Everything checked: now the change, all of it.
        if let (Some(c), Some((slots, iterations, lr))) = (&mut self.compiled, optimizer) {
            c.optimizer.set_slots(slots, iterations)?;
            if let Some(lr) = lr {
                c.optimizer.set_learning_rate(lr);
            }
        }
        for (var, t) in assign {
            var.set(&t)?;
        }
        Ok(())
    }

    /// The optimizer state of `tree`, in kandle's order, checked against the compiled model:
    /// `None` when the model is not compiled or the file holds no optimizer state.
    #[allow(clippy::type_complexity)]
    fn keras_optimizer_state(
        &self,
        tree: &Group,
        bad: &dyn Fn(String) -> Error,
    ) -> Result<Option<(Vec<Tensor>, u64, Option<f64>)>> {
        let (Some(c), Some(g)) = (&self.compiled, tree.group("optimizer/vars")) else { return Ok(None) };
        let opt = &c.optimizer;
        let get =
            |i: usize| g.datasets.get(&i.to_string()).ok_or_else(|| bad(format!("optimizer/vars/{i} is missing")));
        let iterations = match &get(0)?.data {
            Data::I64(v) if v.len() == 1 && v[0] >= 0 => v[0] as u64,
            Data::I32(v) if v.len() == 1 && v[0] >= 0 => v[0] as u64,
            other => return Err(bad(format!("optimizer/vars/0 (the step count) holds {other:?}, not one int"))),
        };
        let mut next = 1;
        let lr = if opt.schedule().is_none() {
            let d = get(1)?;
            next = 2;
            match d.data.to_f32().as_slice() {
                [lr] => Some(f64::from(*lr)),
                _ => return Err(bad("optimizer/vars/1 (the learning rate) is not one number".into())),
            }
        } else {
            None
        };
        let vars = Pass::for_losses(&self.graph, &c.losses, false).vars;
        let keras = self.keras_trainable(&vars);
        let per = opt
            .slots_per_variable()
            .ok_or_else(|| bad(format!("the optimizer {} does not say how many slots a variable has", opt.name())))?;
        let nadam = usize::from(opt.name() == "nadam");
        let expected = next + per * keras.len() + nadam;
        if g.datasets.len() == next {
            // Compiled but never trained: no slot yet.
            return Ok(Some((Vec::new(), iterations, lr)));
        }
        if g.datasets.len() != expected {
            return Err(bad(format!(
                "optimizer/vars holds {} variables; {} with {} trainable weights has {expected} \
                 (saved with another optimizer or its options, e.g. momentum or amsgrad?)",
                g.datasets.len(),
                opt.name(),
                keras.len()
            )));
        }
        let index: HashMap<_, usize> = vars.iter().enumerate().map(|(k, v)| (v.as_tensor().id(), k)).collect();
        let mut slots: Vec<Option<Tensor>> = vec![None; per * vars.len()];
        for group in slot_groups(opt.name(), per) {
            for v in &keras {
                for &j in &group {
                    let d = get(next)?;
                    if d.shape != v.dims() {
                        return Err(bad(format!(
                            "optimizer/vars/{next} has shape {:?}, its weight {:?}",
                            d.shape,
                            v.dims()
                        )));
                    }
                    let k = *index
                        .get(&v.as_tensor().id())
                        .ok_or_else(|| bad("the optimizer's weights are not the model's trainable weights".into()))?;
                    slots[k * per + j] =
                        Some(Tensor::from_vec(d.data.to_f32(), v.dims(), v.device())?.to_dtype(v.dtype())?);
                    next += 1;
                }
            }
        }
        let mut slots: Vec<Tensor> = slots
            .into_iter()
            .map(|s| s.ok_or_else(|| bad("the optimizer's state does not cover every trainable weight".into())))
            .collect::<Result<_>>()?;
        if nadam == 1 {
            let d = get(next)?;
            slots.push(Tensor::new(
                d.data.to_f32().iter().map(|&x| f64::from(x)).collect::<Vec<_>>(),
                &candle_core::Device::Cpu,
            )?);
        }
        Ok(Some((slots, iterations, lr)))
    }
}
