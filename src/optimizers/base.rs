//! What every optimizer shares, as Keras 3's `optimizers/base_optimizer.py`: the learning rate
//! (or its schedule), gradient clipping, weight decay, the step count and the per-variable
//! slots with their saving. An optimizer is its [`UpdateRule`]: how many slots a variable gets
//! (Keras' `build`) and how one variable is updated (`update_step`); the [`Optimizer`] trait
//! comes with it.

use super::{Clipping, LearningRateSchedule, Optimizer};
use crate::error::{Error, Result};
use candle_core::{Tensor, Var};
use std::sync::Arc;

/// The state every optimizer keeps besides its hyperparameters.
#[derive(Debug, Clone)]
pub struct OptimizerBase {
    learning_rate: f64,
    schedule: Option<Arc<dyn LearningRateSchedule>>,
    clipping: Clipping,
    /// Keras' `weight_decay`: before each update, `w -= w * weight_decay * lr`.
    weight_decay: Option<f64>,
    iterations: u64,
    /// Each variable's slots, made at the first step.
    slots: Vec<Vec<Tensor>>,
}

impl OptimizerBase {
    /// A base with learning rate `learning_rate`, no schedule, clipping or weight decay.
    pub fn new(learning_rate: f64) -> Self {
        OptimizerBase {
            learning_rate,
            schedule: None,
            clipping: Clipping::default(),
            weight_decay: None,
            iterations: 0,
            slots: Vec::new(),
        }
    }

    /// The learning rate of the next step: the schedule's value at the step count, or the set
    /// one.
    pub fn learning_rate(&self) -> f64 {
        self.schedule.as_ref().map(|s| s.at(self.iterations)).unwrap_or(self.learning_rate)
    }

    /// How many steps have been applied.
    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    /// Keras' `weight_decay`, if set.
    pub fn weight_decay(&self) -> Option<f64> {
        self.weight_decay
    }

    /// Sets the learning rate (a schedule, if any, still wins).
    pub(crate) fn set_learning_rate(&mut self, lr: f64) {
        self.learning_rate = lr;
    }

    pub(crate) fn set_schedule(&mut self, s: Option<Arc<dyn LearningRateSchedule>>) {
        self.schedule = s;
    }

    pub(crate) fn set_clipping(&mut self, c: Clipping) {
        self.clipping = c;
    }

    pub(crate) fn clipping_mut(&mut self) -> &mut Clipping {
        &mut self.clipping
    }

    pub(crate) fn set_weight_decay(&mut self, wd: Option<f64>) {
        self.weight_decay = wd;
    }

    /// The slots, flat in variable order.
    fn flat_slots(&self) -> Vec<Tensor> {
        self.slots.iter().flatten().cloned().collect()
    }

    /// Restores slots saved by [`OptimizerBase::flat_slots`], `n` per variable.
    fn restore(&mut self, n: usize, slots: Vec<Tensor>, iterations: u64) -> Result<()> {
        if n == 0 || !slots.len().is_multiple_of(n) {
            if n == 0 && slots.is_empty() {
                self.iterations = iterations;
                return Ok(());
            }
            return Err(Error::invalid(
                "slots",
                format!("expected a multiple of {n} slot tensors, received {}", slots.len()),
            ));
        }
        self.slots = slots.chunks(n).map(|c| c.to_vec()).collect();
        self.iterations = iterations;
        Ok(())
    }
}

/// What an optimizer is declared with: Keras' name, the shared [`OptimizerBase`], its
/// hyperparameters. kandle's optimizers get it from their declaration.
pub trait OptimizerSpec {
    /// Keras' name (`"rmsprop"`).
    fn keras_name(&self) -> &'static str;
    /// The shared state.
    fn base(&self) -> &OptimizerBase;
    /// The shared state, mutable.
    fn base_mut(&mut self) -> &mut OptimizerBase;
    /// Keras' hyperparameters other than the learning rate (booleans as 0 or 1), for saving.
    fn hyperparameters(&self) -> Vec<(&'static str, f64)>;
}

/// An optimizer's update rule over the shared [`OptimizerBase`], as a Keras optimizer subclass
/// defines `build` and `update_step`. Every `UpdateRule` is an [`Optimizer`].
///
/// ```
/// use kandle::optimizers::{Optimizer, OptimizerBase, OptimizerSpec, UpdateRule};
/// use candle_core::{Device, Tensor, Var};
/// /// Plain gradient descent with a fixed step: `w -= lr * g`.
/// #[derive(Debug)]
/// struct Descent { base: OptimizerBase }
/// impl OptimizerSpec for Descent {
///     fn keras_name(&self) -> &'static str { "descent" }
///     fn base(&self) -> &OptimizerBase { &self.base }
///     fn base_mut(&mut self) -> &mut OptimizerBase { &mut self.base }
///     fn hyperparameters(&self) -> Vec<(&'static str, f64)> { Vec::new() }
/// }
/// impl UpdateRule for Descent {
///     fn slot_count(&self) -> usize { 0 }
///     fn update_step(&self, lr: f64, _t: u64, _slots: &mut [Tensor], w: &Tensor, g: &Tensor) -> kandle::Result<Tensor> {
///         Ok((w - (g * lr)?)?)
///     }
/// }
/// let mut opt = Descent { base: OptimizerBase::new(0.5) };
/// let w = Var::new(&[1f32, 2.], &Device::Cpu)?;
/// opt.apply_gradients(&[w.clone()], &[Some(Tensor::new(&[2f32, 2.], &Device::Cpu)?)])?;
/// assert_eq!(w.as_tensor().to_vec1::<f32>()?, [0., 1.]);
/// assert_eq!(opt.iterations(), 1);
/// # Ok::<(), kandle::Error>(())
/// ```
pub trait UpdateRule: OptimizerSpec + Send + std::fmt::Debug {
    /// Keras' `build`: the slots each variable gets.
    fn slot_count(&self) -> usize;
    /// The value new slots start at (Adagrad's `initial_accumulator_value`; default 0).
    fn slot_init(&self) -> f64 {
        0.0
    }
    /// Called once per step, before the variables' updates, with the step's learning rate and
    /// number `t` (`iterations + 1`): for state that moves with the steps (Nadam's momentum
    /// product).
    ///
    /// # Errors
    /// Settings that do not allow a step.
    fn begin_step(&mut self, _lr: f64, _t: u64) -> Result<()> {
        Ok(())
    }
    /// Keras' `update_step`: the new value of one variable `w` for its gradient `g` (both
    /// detached, of the variable's dtype), updating its `slots`.
    ///
    /// # Errors
    /// If candle cannot compute it.
    fn update_step(&self, lr: f64, t: u64, slots: &mut [Tensor], w: &Tensor, g: &Tensor) -> Result<Tensor>;
    /// State beyond the slots, saved after them (Nadam's momentum product; default none).
    fn extra_state(&self) -> Vec<f64> {
        Vec::new()
    }
    /// Restores [`UpdateRule::extra_state`].
    ///
    /// # Errors
    /// A state of the wrong length.
    fn set_extra_state(&mut self, _state: &[f64]) -> Result<()> {
        Ok(())
    }
}

impl<R: UpdateRule> Optimizer for R {
    fn name(&self) -> &'static str {
        self.keras_name()
    }
    fn learning_rate(&self) -> f64 {
        self.base().learning_rate()
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.base_mut().set_learning_rate(lr);
    }
    fn iterations(&self) -> u64 {
        self.base().iterations
    }

    fn apply_gradients(&mut self, vars: &[Var], grads: &[Option<Tensor>]) -> Result<()> {
        let lr = self.base().learning_rate();
        super::check_lr(lr)?;
        if vars.len() != grads.len() {
            return Err(Error::invalid(
                "grads",
                format!("expected {} gradients, received {}", vars.len(), grads.len()),
            ));
        }
        // Everything is checked and computed before any variable or slot changes: a refused
        // step leaves the model and the optimizer as they were.
        for (var, grad) in vars.iter().zip(grads) {
            if let Some(grad) = grad {
                if grad.dims() != var.dims() {
                    return Err(Error::Shape {
                        context: "optimizer".into(),
                        expected: format!("a gradient of shape {:?}", var.dims()),
                        received: format!("{:?}", grad.dims()),
                    });
                }
            }
        }
        let built = self.base().slots.len();
        if built != 0 && built != vars.len() {
            return Err(Error::invalid(
                "vars",
                format!("the optimizer was built for {built} variables, received {}", vars.len()),
            ));
        }
        let clipped;
        let clipping = self.base().clipping;
        let grads = if clipping == Clipping::default() {
            grads
        } else {
            clipped = clipping.apply(grads)?;
            &clipped[..]
        };
        let t = self.base().iterations + 1;
        let extra = self.extra_state();
        self.begin_step(lr, t)?;
        let computed = (|| {
            let (n, init) = (self.slot_count(), self.slot_init());
            let mut slots = self.base().slots.clone();
            if slots.is_empty() {
                slots = vars
                    .iter()
                    .map(|v| (0..n).map(|_| (v.as_tensor().zeros_like()? + init).map_err(Error::from)).collect())
                    .collect::<Result<_>>()?;
            }
            let wd = self.base().weight_decay;
            let mut updates = Vec::with_capacity(vars.len());
            for ((var, grad), s) in vars.iter().zip(grads).zip(slots.iter_mut()) {
                let Some(grad) = grad else { continue };
                // Detached: candle's gradients reference the forward graph, and slots built
                // from them would chain every step's graph together.
                let mut w = var.as_detached_tensor();
                if let Some(wd) = wd {
                    // Keras' weight decay, before the update rule: `w -= w * weight_decay * lr`.
                    w = (&w - (&w * (wd * lr))?)?;
                }
                updates.push((var, self.update_step(lr, t, s, &w, &grad.detach().to_dtype(var.dtype())?)?));
            }
            Ok((slots, updates))
        })();
        let (slots, updates) = match computed {
            Ok(c) => c,
            Err(e) => {
                self.set_extra_state(&extra)?;
                return Err(e);
            }
        };
        for (var, new) in updates {
            var.set(&new)?;
        }
        self.base_mut().slots = slots;
        self.base_mut().iterations += 1;
        Ok(())
    }

    fn config(&self) -> Vec<(&'static str, f64)> {
        let mut c = self.hyperparameters();
        if let Some(wd) = self.base().weight_decay {
            c.push(("weight_decay", wd));
        }
        c
    }
    fn slots(&self) -> Vec<Tensor> {
        let mut v = self.base().flat_slots();
        let extra = self.extra_state();
        if !extra.is_empty() {
            if let Ok(t) = Tensor::new(extra.as_slice(), &candle_core::Device::Cpu) {
                v.push(t);
            }
        }
        v
    }
    fn set_slots(&mut self, mut slots: Vec<Tensor>, iterations: u64) -> Result<()> {
        if !self.extra_state().is_empty() {
            let t = slots.pop().ok_or_else(|| {
                Error::invalid("slots", format!("{}'s state ends with its own values", self.keras_name()))
            })?;
            let values = t.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            self.set_extra_state(&values)?;
        }
        let n = self.slot_count();
        self.base_mut().restore(n, slots, iterations)
    }
    fn slots_per_variable(&self) -> Option<usize> {
        Some(self.slot_count())
    }
    fn clipping(&self) -> Clipping {
        self.base().clipping
    }
    fn set_clipping(&mut self, clipping: Clipping) {
        self.base_mut().set_clipping(clipping);
    }
    fn schedule(&self) -> Option<Arc<dyn LearningRateSchedule>> {
        self.base().schedule.clone()
    }
    fn set_schedule(&mut self, schedule: Option<Arc<dyn LearningRateSchedule>>) {
        self.base_mut().set_schedule(schedule);
    }
}

/// A hyperparameter as saved: a number, booleans as 0 or 1.
pub trait Hyperparameter: Copy {
    /// The saved number.
    fn to_f64(self) -> f64;
    /// The value from its saved number.
    fn from_f64(v: f64) -> Self;
}

impl Hyperparameter for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

impl Hyperparameter for bool {
    fn to_f64(self) -> f64 {
        f64::from(u8::from(self))
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
}

/// Declares an optimizer: its struct (the shared base and its Keras hyperparameters, each with
/// its default and a setter), `new(learning_rate)`, `Default`, the setters every optimizer has
/// (schedule, clipping, weight decay), its saved hyperparameters and `from_config`. The file
/// adds its [`UpdateRule`].
macro_rules! optimizer {
    (
        $(#[$doc:meta])*
        $name:ident($keras:literal, learning_rate = $lr:expr $(, weight_decay = $wd:expr)?) {
            $( $(#[$fdoc:meta])* $field:ident: $ty:ty = $default:expr ),* $(,)?
        }
        $( state { $( $(#[$sdoc:meta])* $sfield:ident: $sty:ty = $sdefault:expr ),* $(,)? } )?
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            base: $crate::optimizers::OptimizerBase,
            $( $field: $ty, )*
            $( $( $(#[$sdoc])* $sfield: $sty, )* )?
        }

        impl Default for $name {
            fn default() -> Self {
                #[allow(unused_mut)]
                let mut base = $crate::optimizers::OptimizerBase::new($lr);
                $( base.set_weight_decay(Some($wd)); )?
                $name {
                    base,
                    $( $field: $default, )*
                    $( $( $sfield: $sdefault, )* )?
                }
            }
        }

        impl $name {
            #[doc = concat!("`", stringify!($name), "` with learning rate `lr` and Keras' other defaults.")]
            pub fn new(lr: f64) -> Self {
                Self::default().with_learning_rate(lr)
            }
            #[doc = concat!("The learning rate (default ", stringify!($lr), ").")]
            pub fn with_learning_rate(mut self, lr: f64) -> Self {
                self.base.set_learning_rate(lr);
                self
            }
            $(
                $(#[$fdoc])*
                pub fn $field(mut self, value: $ty) -> Self {
                    self.$field = value;
                    self
                }
            )*
            /// Takes the learning rate from a schedule of the step count (Keras:
            /// `learning_rate=ExponentialDecay(...)`).
            pub fn with_schedule(mut self, schedule: impl $crate::optimizers::LearningRateSchedule + 'static) -> Self {
                self.base.set_schedule(Some(std::sync::Arc::new(schedule)));
                self
            }
            /// Keras' `clipnorm`: each gradient is rescaled to an L2 norm of at most `c`.
            pub fn clipnorm(mut self, c: f64) -> Self {
                self.base.clipping_mut().clipnorm = Some(c);
                self
            }
            /// Keras' `clipvalue`: each gradient value is clipped to `[-c, c]`.
            pub fn clipvalue(mut self, c: f64) -> Self {
                self.base.clipping_mut().clipvalue = Some(c);
                self
            }
            /// Keras' `global_clipnorm`: all gradients are rescaled together to a joint L2 norm
            /// of at most `c`.
            pub fn global_clipnorm(mut self, c: f64) -> Self {
                self.base.clipping_mut().global_clipnorm = Some(c);
                self
            }
            /// Keras' `weight_decay`: before each update, `w -= w * weight_decay * lr`.
            pub fn weight_decay(mut self, weight_decay: f64) -> Self {
                self.base.set_weight_decay(Some(weight_decay));
                self
            }
            /// The optimizer with learning rate `lr` and the saved hyperparameters `config`
            /// (missing ones take Keras' defaults).
            pub(crate) fn from_config(lr: f64, config: &std::collections::HashMap<String, f64>) -> Self {
                let d = Self::default();
                let mut o = Self::new(lr);
                $(
                    o.$field = config
                        .get(stringify!($field))
                        .map(|v| $crate::optimizers::base::Hyperparameter::from_f64(*v))
                        .unwrap_or(d.$field);
                )*
                if let Some(wd) = config.get("weight_decay") {
                    o.base.set_weight_decay(Some(*wd));
                }
                o
            }
        }

        impl $crate::optimizers::OptimizerSpec for $name {
            fn keras_name(&self) -> &'static str {
                $keras
            }
            fn base(&self) -> &$crate::optimizers::OptimizerBase {
                &self.base
            }
            fn base_mut(&mut self) -> &mut $crate::optimizers::OptimizerBase {
                &mut self.base
            }
            fn hyperparameters(&self) -> Vec<(&'static str, f64)> {
                vec![$( (stringify!($field), $crate::optimizers::base::Hyperparameter::to_f64(self.$field)) ),*]
            }
        }
    };
}
pub(crate) use optimizer;
