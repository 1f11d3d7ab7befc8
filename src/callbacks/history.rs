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
    /// `(key, values per epoch)` in the order Keras shows them. A key logged in some epochs
    /// only (`val_loss` under `validation_freq`, `learning_rate`) has a value for those epochs
    /// only, as in Keras.
    pub history: Vec<(String, Vec<f64>)>,
    /// Each epoch's logs as recorded, for tables with one row per epoch.
    rows: Vec<Vec<(String, f64)>>,
}

impl History {
    /// Records one epoch's logs.
    pub fn push(&mut self, epoch: usize, logs: &[(String, f64)]) {
        self.epoch.push(epoch);
        self.rows.push(logs.to_vec());
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

    /// The history as CSV: an `epoch` column, then one column per key, one row per epoch,
    /// `NA` where an epoch did not log a key (as Keras' `CSVLogger`).
    ///
    /// ```
    /// use kandle::models::History;
    /// let mut h = History::default();
    /// h.push(0, &[("loss".into(), 1.5)]);
    /// h.push(1, &[("loss".into(), 1.25), ("val_loss".into(), 2.0)]);
    /// assert_eq!(h.to_csv(), "epoch,loss,val_loss\n0,1.5,NA\n1,1.25,2.0\n");
    /// ```
    pub fn to_csv(&self) -> String {
        let mut s = String::from("epoch");
        for (k, _) in &self.history {
            s.push(',');
            s.push_str(k);
        }
        s.push('\n');
        for (e, row) in self.epoch.iter().zip(&self.rows) {
            s.push_str(&e.to_string());
            for (k, _) in &self.history {
                s.push(',');
                match row.iter().find(|(name, _)| name == k) {
                    Some((_, x)) => s.push_str(&python_float(*x)),
                    None => s.push_str("NA"),
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

/// `x` as Python's `str(float)` writes it (`1.0`, `0.1`, `nan`, `inf`), as Keras' CSV files
/// hold it.
pub(crate) fn python_float(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else if x == x.trunc() && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        let s = format!("{x:?}");
        // Rust writes 1e-5 as "1e-5", Python as "1e-05".
        match s.split_once('e') {
            Some((m, e)) => {
                let (sign, digits) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
                format!("{m}e{sign}{digits:0>2}")
            }
            None => s,
        }
    }
}
