//! Optimizers, as in `keras.optimizers`, with Keras 3's update rules and defaults.
//!
//! As in Keras, an optimizer is its update rule over a shared base ([`OptimizerBase`], Keras'
//! `BaseOptimizer`): the base keeps the learning rate (or its schedule), gradient clipping,
//! weight decay, the step count and the per-variable slots (momentum, velocity ...), created
//! on the first step; each optimizer's file declares its hyperparameters and writes its
//! [`UpdateRule`] (Keras' `build` and `update_step`).

mod adadelta;
mod adagrad;
mod adam;
mod adamax;
pub(crate) mod base;
mod nadam;
mod rmsprop;
pub mod schedules;
mod sgd;

pub use adadelta::Adadelta;
pub use adagrad::Adagrad;
pub use adam::{Adam, AdamW};
pub use adamax::Adamax;
pub use base::{Hyperparameter, OptimizerBase, OptimizerSpec, UpdateRule};
pub use nadam::Nadam;
pub use rmsprop::RMSprop;
pub use schedules::{CosineDecay, ExponentialDecay, LearningRateSchedule};
pub use sgd::SGD;

use crate::error::{Error, Result};
use candle_core::{Tensor, Var};

/// A gradient-descent optimizer.
pub trait Optimizer: Send + std::fmt::Debug {
    /// Keras' name (`"rmsprop"`).
    fn name(&self) -> &'static str;
    /// The current learning rate.
    fn learning_rate(&self) -> f64;
    /// Changes the learning rate (used by callbacks and schedules).
    fn set_learning_rate(&mut self, lr: f64);
    /// How many steps have been applied.
    fn iterations(&self) -> u64;
    /// Applies one step: `grads[i]` is the gradient of `vars[i]` (`None` when it got none).
    ///
    /// # Errors
    /// If a gradient's shape differs from its variable's, or the variables changed since the
    /// first step.
    fn apply_gradients(&mut self, vars: &[Var], grads: &[Option<Tensor>]) -> Result<()>;
    /// Keras' hyperparameters other than the learning rate (booleans as 0 or 1), for saving.
    fn config(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
    /// The optimizer's state (its slot tensors, in a fixed order), for saving.
    fn slots(&self) -> Vec<Tensor>;
    /// Restores a state returned by [`Optimizer::slots`] with the step count.
    ///
    /// # Errors
    /// If the tensors do not fit the optimizer.
    fn set_slots(&mut self, slots: Vec<Tensor>, iterations: u64) -> Result<()>;
    /// How many slots each variable gets (Keras' `build`), when known: what Keras' weight
    /// files are laid out by. Default: unknown.
    fn slots_per_variable(&self) -> Option<usize> {
        None
    }
    /// Keras' gradient clipping (`clipnorm`, `clipvalue`, `global_clipnorm`).
    fn clipping(&self) -> Clipping;
    /// Replaces the gradient clipping (used when a saved optimizer is rebuilt).
    fn set_clipping(&mut self, clipping: Clipping);
    /// The learning-rate schedule, when the learning rate comes from one.
    fn schedule(&self) -> Option<std::sync::Arc<dyn LearningRateSchedule>>;
    /// Replaces the learning-rate schedule (used when a saved optimizer is rebuilt).
    fn set_schedule(&mut self, schedule: Option<std::sync::Arc<dyn LearningRateSchedule>>);
}

/// Keras' gradient clipping, applied to the gradients before each step; at most one is set
/// (Keras: "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set").
///
/// ```
/// use kandle::optimizers::{Optimizer, SGD};
/// let sgd = SGD::new(0.1).clipnorm(1.0);
/// assert_eq!(sgd.clipping().clipnorm, Some(1.0));
/// assert!(SGD::new(0.1).clipnorm(1.0).clipvalue(0.5).clipping().validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Clipping {
    /// Each gradient is rescaled so that its L2 norm is at most this.
    pub clipnorm: Option<f64>,
    /// Each gradient value is clipped to `[-clipvalue, clipvalue]`.
    pub clipvalue: Option<f64>,
    /// All gradients are rescaled together so that their joint L2 norm is at most this.
    pub global_clipnorm: Option<f64>,
}

impl Clipping {
    /// Checks that at most one kind is set, to a positive finite value.
    ///
    /// # Errors
    /// Two kinds set, or a value that is not positive and finite.
    pub fn validate(&self) -> Result<()> {
        let set: Vec<(&str, f64)> =
            [("clipnorm", self.clipnorm), ("clipvalue", self.clipvalue), ("global_clipnorm", self.global_clipnorm)]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect();
        if set.len() > 1 {
            return Err(Error::invalid(
                set[1].0,
                format!(
                    "only one of clipnorm, clipvalue and global_clipnorm can be set, as in Keras; received {}",
                    set.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if let Some((k, v)) = set.first().filter(|(_, v)| !(*v > 0.0 && v.is_finite())) {
            return Err(Error::invalid(k, format!("expected a positive finite number, received {v}")));
        }
        Ok(())
    }

    /// The settings as `(name, value)` pairs, for saving.
    pub fn config(&self) -> Vec<(&'static str, f64)> {
        [("clipnorm", self.clipnorm), ("clipvalue", self.clipvalue), ("global_clipnorm", self.global_clipnorm)]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect()
    }

    /// The gradients after clipping, as Keras 3's `_clip_gradients`.
    ///
    /// # Errors
    /// As [`Clipping::validate`].
    pub fn apply(&self, grads: &[Option<Tensor>]) -> Result<Vec<Option<Tensor>>> {
        self.validate()?;
        let sq = |g: &Tensor| -> Result<f64> {
            Ok(g.to_dtype(candle_core::DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?)
        };
        if let Some(c) = self.clipnorm {
            // clip_by_norm: g * c / max(||g||, c).
            return grads
                .iter()
                .map(|g| {
                    g.as_ref()
                        .map(|g| {
                            let n = sq(g)?.sqrt();
                            Ok(if n > c { (g * (c / n))? } else { g.clone() })
                        })
                        .transpose()
                })
                .collect();
        }
        if let Some(c) = self.global_clipnorm {
            let mut total = 0.0;
            for g in grads.iter().flatten() {
                total += sq(g)?;
            }
            let n = total.sqrt();
            if n > c {
                return grads.iter().map(|g| g.as_ref().map(|g| Ok((g * (c / n))?)).transpose()).collect();
            }
        }
        if let Some(c) = self.clipvalue {
            return grads.iter().map(|g| g.as_ref().map(|g| Ok(g.clamp(-c, c)?)).transpose()).collect();
        }
        Ok(grads.to_vec())
    }
}

/// Any optimizer, as `compile` accepts it: a typed one, or Keras' name parsed with
/// [`get`] (`"rmsprop"`, `"sgd"`, `"adam"`) with Keras' defaults.
pub trait IntoOptimizer {
    /// The boxed optimizer.
    fn into_optimizer(self) -> Result<Box<dyn Optimizer>>;
}

impl<O: Optimizer + 'static> IntoOptimizer for O {
    fn into_optimizer(self) -> Result<Box<dyn Optimizer>> {
        Ok(Box::new(self))
    }
}

impl IntoOptimizer for Box<dyn Optimizer> {
    fn into_optimizer(self) -> Result<Box<dyn Optimizer>> {
        Ok(self)
    }
}

impl IntoOptimizer for &str {
    fn into_optimizer(self) -> Result<Box<dyn Optimizer>> {
        get(self)
    }
}

/// The optimizer Keras names `name`, with Keras' defaults.
///
/// # Errors
/// An unknown name.
pub fn get(name: &str) -> Result<Box<dyn Optimizer>> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "rmsprop" => Box::new(RMSprop::default()),
        "sgd" => Box::new(SGD::default()),
        "adam" => Box::new(Adam::default()),
        "adamw" => Box::new(AdamW::default()),
        "adagrad" => Box::new(Adagrad::default()),
        "adadelta" => Box::new(Adadelta::default()),
        "adamax" => Box::new(Adamax::default()),
        "nadam" => Box::new(Nadam::default()),
        _ => {
            return Err(Error::invalid(
                "optimizer",
                format!(
                    "expected one of rmsprop, sgd, adam, adamw, adagrad, adadelta, adamax, nadam; received {name:?}"
                ),
            ))
        }
    })
}

/// Sets `optimizer`'s learning rate, as callbacks and `Model::set_learning_rate` do.
///
/// # Errors
/// When the learning rate comes from a schedule (Keras: "This optimizer was created with a
/// `LearningRateSchedule` object as its `learning_rate` constructor argument, hence its
/// learning rate is not settable").
pub fn set_learning_rate(optimizer: &mut dyn Optimizer, lr: f64) -> Result<()> {
    if let Some(s) = optimizer.schedule() {
        return Err(Error::invalid(
            "learning_rate",
            format!(
                "the optimizer takes its learning rate from a schedule ({}), so it cannot be set \
                 (by ReduceLROnPlateau, LearningRateScheduler or set_learning_rate), as in Keras",
                s.config().map_or("user-defined", |(c, _)| c)
            ),
        ));
    }
    optimizer.set_learning_rate(lr);
    Ok(())
}

/// `x` rounded to the nearest f32, as Keras' TensorFlow backend rounds a Python float that
/// becomes a tensor before casting it to the variable's dtype.
pub(crate) fn f32_rounded(x: f64) -> f64 {
    x as f32 as f64
}

pub(crate) fn check_lr(lr: f64) -> Result<()> {
    if !lr.is_finite() || lr < 0.0 {
        return Err(Error::invalid("learning_rate", format!("expected a finite number >= 0, received {lr}")));
    }
    Ok(())
}

/// The optimizer Keras names `name` with learning rate `lr` and the hyperparameters `config`
/// (as [`Optimizer::config`] gives them); missing ones take Keras' defaults.
///
/// # Errors
/// An unknown name.
pub fn from_config(name: &str, lr: f64, config: &std::collections::HashMap<String, f64>) -> Result<Box<dyn Optimizer>> {
    let mut opt: Box<dyn Optimizer> = match name {
        "rmsprop" => Box::new(RMSprop::from_config(lr, config)),
        "sgd" => Box::new(SGD::from_config(lr, config)),
        "adam" => Box::new(Adam::from_config(lr, config)),
        "adamw" => Box::new(AdamW::from_config(lr, config)),
        "adagrad" => Box::new(Adagrad::from_config(lr, config)),
        "adadelta" => Box::new(Adadelta::from_config(lr, config)),
        "adamax" => Box::new(Adamax::from_config(lr, config)),
        "nadam" => Box::new(Nadam::from_config(lr, config)),
        other => return Err(Error::invalid("optimizer", format!("unknown optimizer {other:?}"))),
    };
    opt.set_clipping(Clipping {
        clipnorm: config.get("clipnorm").copied(),
        clipvalue: config.get("clipvalue").copied(),
        global_clipnorm: config.get("global_clipnorm").copied(),
    });
    Ok(opt)
}
