//! The monitor that `EarlyStopping`, `ModelCheckpoint` and `ReduceLROnPlateau` share, as Keras
//! 3's `MonitorCallback`: which logged value to watch, in which direction it improves (`auto`:
//! from the metric itself), by how much it must change to count, and the best value so far.

use super::{Logs, TrainingContext};
use crate::error::{Error, Result};
use crate::metrics::Direction;

/// Whether a monitored value improves when it goes down or up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// From the value itself, as Keras 3: a loss (`loss`, `val_loss`, `out1_loss`) goes down; a
    /// compiled metric goes the way it declares
    /// ([`StatefulMetric::direction`](crate::metrics::StatefulMetric::direction): accuracies,
    /// precision and recall up). Anything else is an error asking for `Min` or `Max`.
    #[default]
    Auto,
    /// Lower is better.
    Min,
    /// Higher is better.
    Max,
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Mode::Auto),
            "min" => Ok(Mode::Min),
            "max" => Ok(Mode::Max),
            other => Err(Error::invalid("mode", format!("expected auto, min or max, received {other:?}"))),
        }
    }
}

/// A watched value: its key in the logs, the direction it improves in and the smallest change
/// that counts, and the best value seen.
#[derive(Debug, Clone)]
pub(crate) struct Monitor {
    pub key: String,
    pub mode: Mode,
    /// The smallest change that counts as an improvement (>= 0).
    min_delta: f64,
    /// The best value so far (`None`: nothing seen yet).
    pub best: Option<f64>,
    /// Whether higher is better, once known (resolved at the first value, when the model's
    /// metrics are built, as Keras does).
    maximize: Option<bool>,
}

impl Monitor {
    pub fn new(key: impl Into<String>, mode: Mode, min_delta: f64) -> Self {
        Monitor { key: key.into(), mode, min_delta: min_delta.abs(), best: None, maximize: None }
    }

    pub fn set_min_delta(&mut self, d: f64) {
        self.min_delta = d.abs();
    }

    /// Forgets the best value (a new run).
    pub fn reset(&mut self) {
        self.best = None;
    }

    /// The watched value in `logs`, or `None` with Keras' warning when they lack it.
    pub fn current(&self, logs: &Logs, who: &str) -> Option<f64> {
        let v = logs.get(&self.key);
        if v.is_none() {
            let keys: Vec<&str> = logs.0.iter().map(|(k, _)| k.as_str()).collect();
            eprintln!(
                "{who}: the monitored metric `{}` is not available (available: {}); skipping",
                self.key,
                keys.join(", ")
            );
        }
        v
    }

    /// Settles the direction (Keras' `_set_monitor_op`), once.
    ///
    /// # Errors
    /// `auto` for a value whose direction nothing says (Keras' `ValueError`).
    pub fn resolve(&mut self, ctx: &TrainingContext, who: &str) -> Result<()> {
        if self.maximize.is_some() {
            return Ok(());
        }
        let maximize = match self.mode {
            Mode::Max => true,
            Mode::Min => false,
            Mode::Auto => {
                let name = self.key.strip_prefix("val_").unwrap_or(&self.key);
                if name == "loss" || name.ends_with("_loss") {
                    false
                } else {
                    match ctx.metric_direction(name) {
                        Some(d) => d == Direction::Up,
                        None => {
                            return Err(Error::invalid(
                                "monitor",
                                format!(
                                    "{who} monitors {:?}, but kandle cannot tell whether it should be maximized or \
                                     minimized (it is neither a loss nor a compiled metric that declares its \
                                     direction): set .mode(Mode::Max) or .mode(Mode::Min), as in Keras",
                                    self.key
                                ),
                            ))
                        }
                    }
                }
            }
        };
        self.maximize = Some(maximize);
        Ok(())
    }

    /// Whether `current` improves on `reference` by more than the smallest change (Keras'
    /// `_is_improvement`); anything improves on nothing.
    pub fn is_improvement(&self, current: f64, reference: Option<f64>) -> bool {
        let Some(r) = reference else { return true };
        if self.maximize.unwrap_or(false) {
            current - self.min_delta > r
        } else {
            current + self.min_delta < r
        }
    }
}

/// The setters of a callback that watches a value through its `monitor: Monitor` field:
/// `monitor` and `mode`, and `min_delta` where the callback has one (with its default).
macro_rules! monitor_setters {
    ($ty:ident $(, min_delta = $default:literal)?) => {
        impl $ty {
            /// The logged value to watch (default `val_loss`), such as `val_accuracy`.
            pub fn monitor(mut self, m: impl Into<String>) -> Self {
                self.monitor.key = m.into();
                self
            }
            /// The direction the value improves in (default [`Mode::Auto`]: from the metric).
            pub fn mode(mut self, m: $crate::callbacks::Mode) -> Self {
                self.monitor.mode = m;
                self
            }
            $(
                #[doc = concat!("The smallest change that counts as an improvement (default ", $default, ").")]
                pub fn min_delta(mut self, d: f64) -> Self {
                    self.monitor.set_min_delta(d);
                    self
                }
            )?
        }
    };
}
pub(crate) use monitor_setters;
