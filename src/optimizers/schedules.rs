//! Learning-rate schedules, as in `keras.optimizers.schedules`: the learning rate as a
//! function of the optimizer's step count.

/// A learning rate that depends on the step count.
pub trait LearningRateSchedule: Send + Sync + std::fmt::Debug {
    /// The learning rate at `step` (0 for the first step).
    fn at(&self, step: u64) -> f64;
    /// Keras' class name and settings, saved with the model so that `load_model` resumes
    /// the schedule (at the saved step); `None` (the default) for a user-defined schedule,
    /// which a loaded model does not get back.
    fn config(&self) -> Option<(&'static str, Vec<(&'static str, f64)>)> {
        None
    }
}

/// The schedule Keras names `class` with `config` (as [`LearningRateSchedule::config`] gives
/// them).
///
/// ```
/// use kandle::optimizers::{schedules, ExponentialDecay, LearningRateSchedule};
/// let s = ExponentialDecay::new(0.1, 100, 0.5).staircase(true);
/// let (class, cfg) = s.config().unwrap();
/// let back = schedules::from_config(class, &cfg.into_iter().map(|(k, v)| (k.to_string(), v)).collect())?;
/// assert_eq!(back.at(150), s.at(150));
/// # Ok::<(), kandle::Error>(())
/// ```
///
/// # Errors
/// An unknown class or a missing setting.
pub fn from_config(
    class: &str,
    config: &std::collections::HashMap<String, f64>,
) -> crate::error::Result<std::sync::Arc<dyn LearningRateSchedule>> {
    let get = |k: &str| {
        config.get(k).copied().ok_or_else(|| {
            crate::error::Error::invalid("learning_rate", format!("schedule {class}: the saved settings lack {k}"))
        })
    };
    Ok(match class {
        "ExponentialDecay" => std::sync::Arc::new(
            ExponentialDecay::new(get("initial_learning_rate")?, get("decay_steps")? as u64, get("decay_rate")?)
                .staircase(get("staircase")? != 0.0),
        ),
        "CosineDecay" => std::sync::Arc::new(
            CosineDecay::new(get("initial_learning_rate")?, get("decay_steps")? as u64).alpha(get("alpha")?),
        ),
        other => {
            return Err(crate::error::Error::invalid(
                "learning_rate",
                format!("unknown schedule {other:?}: expected ExponentialDecay or CosineDecay"),
            ))
        }
    })
}

/// `initial * decay_rate ^ (step / decay_steps)` (the exponent floored with `staircase`), as
/// `keras.optimizers.schedules.ExponentialDecay`.
///
/// ```
/// use kandle::optimizers::{ExponentialDecay, LearningRateSchedule};
/// let s = ExponentialDecay::new(0.1, 100, 0.5);
/// assert!((s.at(100) - 0.05).abs() < 1e-12);
/// assert!((s.staircase(true).at(150) - 0.05).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ExponentialDecay {
    initial: f64,
    decay_steps: u64,
    decay_rate: f64,
    staircase: bool,
}

impl ExponentialDecay {
    /// The schedule (Keras' default `staircase false`).
    pub fn new(initial_learning_rate: f64, decay_steps: u64, decay_rate: f64) -> Self {
        ExponentialDecay {
            initial: initial_learning_rate,
            decay_steps: decay_steps.max(1),
            decay_rate,
            staircase: false,
        }
    }
    /// Decay in whole periods.
    pub fn staircase(mut self, s: bool) -> Self {
        self.staircase = s;
        self
    }
}

impl LearningRateSchedule for ExponentialDecay {
    fn at(&self, step: u64) -> f64 {
        let mut p = step as f64 / self.decay_steps as f64;
        if self.staircase {
            p = p.floor();
        }
        self.initial * self.decay_rate.powf(p)
    }
    fn config(&self) -> Option<(&'static str, Vec<(&'static str, f64)>)> {
        Some((
            "ExponentialDecay",
            vec![
                ("initial_learning_rate", self.initial),
                ("decay_steps", self.decay_steps as f64),
                ("decay_rate", self.decay_rate),
                ("staircase", f64::from(u8::from(self.staircase))),
            ],
        ))
    }
}

/// Cosine decay from `initial` to `initial * alpha` over `decay_steps`, then constant, as
/// `keras.optimizers.schedules.CosineDecay` (without warm-up).
///
/// ```
/// use kandle::optimizers::{CosineDecay, LearningRateSchedule};
/// let s = CosineDecay::new(0.1, 100);
/// assert!((s.at(50) - 0.05).abs() < 1e-12);
/// assert_eq!(s.at(100), 0.0);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct CosineDecay {
    initial: f64,
    decay_steps: u64,
    alpha: f64,
}

impl CosineDecay {
    /// The schedule (Keras' default `alpha 0`).
    pub fn new(initial_learning_rate: f64, decay_steps: u64) -> Self {
        CosineDecay { initial: initial_learning_rate, decay_steps: decay_steps.max(1), alpha: 0.0 }
    }
    /// The final fraction of the initial rate (default 0).
    pub fn alpha(mut self, a: f64) -> Self {
        self.alpha = a;
        self
    }
}

impl LearningRateSchedule for CosineDecay {
    fn at(&self, step: u64) -> f64 {
        let p = step.min(self.decay_steps) as f64 / self.decay_steps as f64;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * p).cos());
        self.initial * ((1.0 - self.alpha) * cosine + self.alpha)
    }
    fn config(&self) -> Option<(&'static str, Vec<(&'static str, f64)>)> {
        Some((
            "CosineDecay",
            vec![
                ("initial_learning_rate", self.initial),
                ("decay_steps", self.decay_steps as f64),
                ("alpha", self.alpha),
            ],
        ))
    }
}
