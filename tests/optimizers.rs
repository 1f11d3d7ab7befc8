//! The optimizer machinery: every optimizer's saved hyperparameters and slots bring back the
//! same optimizer (the next steps are identical), Keras' `weight_decay` on every optimizer, a
//! user's own update rule training a model, and clear errors. The update rules' numbers against
//! Keras are in golden.rs.

use candle_core::{Device, Tensor, Var};
use kandle::callbacks::CallbackModel;
use kandle::optimizers::{
    self, Adadelta, Adagrad, Adam, AdamW, Adamax, Nadam, Optimizer, OptimizerBase, OptimizerSpec, RMSprop, UpdateRule,
    SGD,
};
use kandle::prelude::*;
use std::collections::HashMap;

/// Every optimizer, with hyperparameters other than Keras' defaults where it has any.
fn all() -> Vec<Box<dyn Optimizer>> {
    vec![
        Box::new(RMSprop::new(0.01).rho(0.8).momentum(0.5).centered(true)),
        Box::new(SGD::new(0.1).momentum(0.9).nesterov(true).weight_decay(0.01)),
        Box::new(Adam::new(0.01).beta_1(0.8).beta_2(0.9).amsgrad(true)),
        Box::new(AdamW::new(0.01).weight_decay(0.1)),
        Box::new(Adagrad::new(0.1).initial_accumulator_value(0.5)),
        Box::new(Adadelta::new(1.0).rho(0.8)),
        Box::new(Adamax::new(0.02).beta_1(0.7)),
        Box::new(Nadam::new(0.01).beta_1(0.8)),
    ]
}

fn vars() -> Vec<Var> {
    let d = &Device::Cpu;
    vec![Var::new(&[[0.5f32, -1.0], [2.0, 0.25]], d).unwrap(), Var::new(&[0.1f32, -0.3, 0.7], d).unwrap()]
}

/// The gradients of step `k`, different at each step.
fn grads(k: usize) -> Vec<Option<Tensor>> {
    let d = &Device::Cpu;
    let s = 1.0 + k as f32 * 0.5;
    vec![
        Some(Tensor::new(&[[0.3f32 * s, -0.2], [0.1, 0.4 / s]], d).unwrap()),
        Some(Tensor::new(&[-0.5f32 / s, 0.25 * s, 0.05], d).unwrap()),
    ]
}

fn values(vars: &[Var]) -> Vec<Vec<f32>> {
    vars.iter().map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect()
}

#[test]
fn saved_hyperparameters_and_slots_bring_back_the_same_optimizer() {
    for mut a in all() {
        let name = a.name();
        let (va, vb) = (vars(), vars());
        // Two steps on `a`, then a copy from its saved form continues where it stopped.
        for k in 0..2 {
            a.apply_gradients(&va, &grads(k)).unwrap();
        }
        let config: HashMap<String, f64> = a.config().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let mut b = optimizers::from_config(name, a.learning_rate(), &config).unwrap();
        assert_eq!(b.config(), a.config(), "{name}");
        for (x, y) in vb.iter().zip(&va) {
            x.set(y.as_tensor()).unwrap();
        }
        b.set_slots(a.slots(), a.iterations()).unwrap();
        assert_eq!(b.iterations(), 2, "{name}");
        for k in 2..4 {
            a.apply_gradients(&va, &grads(k)).unwrap();
            b.apply_gradients(&vb, &grads(k)).unwrap();
        }
        assert_eq!(values(&va), values(&vb), "{name}: the restored optimizer took different steps");
        assert_ne!(values(&va), values(&vars()), "{name} did not move the variables");
    }
}

#[test]
fn from_config_without_hyperparameters_takes_keras_defaults() {
    for (name, lr) in [("rmsprop", 0.001), ("sgd", 0.01), ("adam", 0.001), ("adamw", 0.001), ("nadam", 0.001)] {
        let a = optimizers::get(name).unwrap();
        let b = optimizers::from_config(name, lr, &HashMap::new()).unwrap();
        assert_eq!(a.learning_rate(), lr, "{name}");
        // AdamW's default weight decay (0.004) comes with the optimizer, not the saved config.
        assert_eq!(a.config(), b.config(), "{name}");
    }
}

/// Keras 3 (`BaseOptimizer._apply_weight_decay`): before the update rule,
/// `w -= w * weight_decay * lr`, on any optimizer.
#[test]
fn weight_decay_shrinks_the_weights_before_any_update_rule() {
    let (lr, wd) = (0.1, 0.2);
    let with: Vec<Box<dyn Optimizer>> = vec![
        Box::new(SGD::new(lr).weight_decay(wd)),
        Box::new(Adam::new(lr).weight_decay(wd)),
        Box::new(RMSprop::new(lr).weight_decay(wd)),
    ];
    let without: Vec<Box<dyn Optimizer>> =
        vec![Box::new(SGD::new(lr)), Box::new(Adam::new(lr)), Box::new(RMSprop::new(lr))];
    for (mut a, mut b) in with.into_iter().zip(without) {
        let name = a.name();
        assert_eq!(a.config().last(), Some(&("weight_decay", wd)), "{name}");
        let (va, vb) = (vars(), vars());
        // `b` sees the decayed weights that `a` decays itself: the results must agree.
        for v in &vb {
            let w = v.as_tensor().clone();
            v.set(&(&w - (&w * (wd * lr)).unwrap()).unwrap()).unwrap();
        }
        a.apply_gradients(&va, &grads(0)).unwrap();
        b.apply_gradients(&vb, &grads(0)).unwrap();
        for (x, y) in values(&va).iter().zip(values(&vb)) {
            for (p, q) in x.iter().zip(&y) {
                assert!((p - q).abs() < 1e-6, "{name}: {p} vs {q}");
            }
        }
    }
    // A variable without a gradient is neither decayed nor updated.
    let v = vars();
    let before = values(&v);
    SGD::new(lr).weight_decay(wd).apply_gradients(&v, &[None, None]).unwrap();
    assert_eq!(values(&v), before);
}

/// A user's optimizer: sign descent (`w -= lr * sign(g)`) with a step counter of its own.
#[derive(Debug)]
struct SignDescent {
    base: OptimizerBase,
    steps_seen: u64,
}

impl OptimizerSpec for SignDescent {
    fn keras_name(&self) -> &'static str {
        "sign_descent"
    }
    fn base(&self) -> &OptimizerBase {
        &self.base
    }
    fn base_mut(&mut self) -> &mut OptimizerBase {
        &mut self.base
    }
    fn hyperparameters(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
}

impl UpdateRule for SignDescent {
    fn slot_count(&self) -> usize {
        0
    }
    fn begin_step(&mut self, _lr: f64, t: u64) -> kandle::Result<()> {
        self.steps_seen = t;
        Ok(())
    }
    fn update_step(&self, lr: f64, _t: u64, _s: &mut [Tensor], w: &Tensor, g: &Tensor) -> kandle::Result<Tensor> {
        Ok((w - (g.sign()? * lr)?)?)
    }
}

#[test]
fn a_users_update_rule_trains_a_model() {
    // y = 2x - 1 on 64 points.
    let x: Vec<f32> = (0..64).map(|i| i as f32 / 32.0 - 1.0).collect();
    let y: Vec<f32> = x.iter().map(|x| 2.0 * x - 1.0).collect();
    let x = Tensor::from_vec(x, (64, 1), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(y, (64, 1), &Device::Cpu).unwrap();
    let model = Sequential::new().seed(1).add(Dense::new(1).input_shape(1));
    let opt = SignDescent { base: OptimizerBase::new(0.01), steps_seen: 0 };
    model.compile(opt, Loss::MeanSquaredError, ()).unwrap();
    let first = model.evaluate(&x, &y, 64).unwrap().loss;
    model.fit(&x, &y, FitOptions::default().batch_size(16).epochs(40).verbose(0)).unwrap();
    let last = model.evaluate(&x, &y, 64).unwrap().loss;
    assert!(last < first * 0.05, "loss {first} -> {last}");
    assert_eq!(model.optimizer_iterations(), 40 * 4);
}

#[test]
fn bad_steps_are_clear_errors_that_change_nothing() {
    let v = vars();
    let before = values(&v);
    let e = SGD::new(-0.1).apply_gradients(&v, &grads(0)).unwrap_err().to_string();
    assert!(e.contains("learning_rate") && e.contains("-0.1"), "{e}");
    let e = Adam::default().apply_gradients(&v, &grads(0)[..1]).unwrap_err().to_string();
    assert!(e.contains("grads") && e.contains("expected 2") && e.contains("received 1"), "{e}");
    let wrong = vec![Some(Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap()), None];
    let e = RMSprop::default().apply_gradients(&v, &wrong).unwrap_err().to_string();
    assert!(e.contains("[2, 2]") && e.contains("[3]"), "{e}");
    // The second gradient is the wrong one: the first variable is not updated (nor decayed).
    let wrong = vec![grads(0)[0].clone(), Some(Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap())];
    let mut sgd = SGD::new(0.1).weight_decay(0.5);
    let e = sgd.apply_gradients(&v, &wrong).unwrap_err().to_string();
    assert!(e.contains("[3]") && e.contains("[2]"), "{e}");
    assert_eq!(sgd.iterations(), 0);
    assert_eq!(values(&v), before, "a refused step changed the variables");
    let e = optimizers::from_config("adamm", 0.1, &HashMap::new()).unwrap_err().to_string();
    assert!(e.contains("adamm"), "{e}");
    let e = optimizers::get("ftrl").unwrap_err().to_string();
    assert!(e.contains("rmsprop") && e.contains("\"ftrl\""), "{e}");
    // Slots of the wrong count for the optimizer.
    let mut a = Adam::default();
    let e = a.set_slots(vec![Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap()], 3).unwrap_err();
    assert!(e.to_string().contains("slots"), "{e}");
}
