use super::{Callback, Control, Logs, TrainingContext};
use crate::error::Result;
use std::path::Path;

/// What `fit` returns, as Keras' `History`: per-epoch values of the loss and metrics, for
/// training (`loss`, `accuracy`) and validation (`val_loss`, `val_accuracy`).
///
/// ```
/// use kandle::models::History;
/// let mut h = History::default();
/// h.push(0, &[("loss".into(), 1.5), ("accuracy".into(), 0.4)]);
/// h.push(1, &[("loss".into(), 1.2), ("accuracy".into(), 0.5)]);
/// assert_eq!(h.get("loss"), Some(&[1.5, 1.2][..]));
/// assert_eq!(h.epoch, vec![0, 1]);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// The epochs run (0-based, as Keras' `history.epoch`).
    pub epoch: Vec<usize>,
    /// `(key, values per epoch)` in the order Keras shows them.
    pub history: Vec<(String, Vec<f64>)>,
}

impl History {
    /// Records one epoch's logs.
    pub fn push(&mut self, epoch: usize, logs: &[(String, f64)]) {
        self.epoch.push(epoch);
        for (k, v) in logs {
            match self.history.iter_mut().find(|(name, _)| name == k) {
                Some((_, values)) => values.push(*v),
                None => self.history.push((k.clone(), vec![*v])),
            }
        }
    }

    /// The values recorded for `key` (`"loss"`, `"val_accuracy"` ...).
    pub fn get(&self, key: &str) -> Option<&[f64]> {
        self.history.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
    }

    /// The keys recorded.
    pub fn keys(&self) -> Vec<&str> {
        self.history.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// The history as CSV: an `epoch` column, then one column per key.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("epoch");
        for (k, _) in &self.history {
            s.push(',');
            s.push_str(k);
        }
        s.push('\n');
        for (i, e) in self.epoch.iter().enumerate() {
            s.push_str(&e.to_string());
            for (_, v) in &self.history {
                s.push(',');
                if let Some(x) = v.get(i) {
                    s.push_str(&x.to_string());
                }
            }
            s.push('\n');
        }
        s
    }

    /// Writes [`History::to_csv`] to `path` (through a temporary file renamed into place).
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save_csv(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::fs::write_atomic(path.as_ref(), self.to_csv().as_bytes())
    }

    /// The history as JSON: `{"epoch": [...], "loss": [...], ...}`.
    pub fn to_json(&self) -> String {
        let list = |v: &[f64]| {
            v.iter().map(|x| if x.is_finite() { x.to_string() } else { "null".into() }).collect::<Vec<_>>().join(", ")
        };
        let mut s =
            format!("{{\"epoch\": [{}]", self.epoch.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "));
        for (k, v) in &self.history {
            s += &format!(", \"{k}\": [{}]", list(v));
        }
        s + "}"
    }

    /// Writes [`History::to_json`] to `path` (atomically).
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save_json(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::fs::write_atomic(path.as_ref(), self.to_json().as_bytes())
    }
}

/// Keras' `History` callback: each epoch's logs, recorded at its end (the list of every `fit`
/// holds one and returns it).
impl Callback for History {
    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, _ctx: &mut TrainingContext) -> Result<Control> {
        self.push(epoch, &logs.0);
        Ok(Control::Continue)
    }
}
