use super::monitor::{monitor_setters, Mode, Monitor};
use super::{Callback, Control, Logs, SaveFreq, TrainingContext};
use crate::error::{Error, Result};

/// Saves the model (or only its weights) after each epoch, as
/// `keras.callbacks.ModelCheckpoint`. The file path may hold Keras' placeholders:
/// `{epoch}` / `{epoch:02d}` (1-based, as Keras) and any log key, e.g. `{val_accuracy:.4f}`.
///
/// Keras' defaults: `monitor "val_loss"`, `save_best_only false`, `save_weights_only false`,
/// `mode auto`. Files are written to a temporary name and renamed into place, so a crash
/// during a save leaves the previous file intact.
///
/// ```
/// use kandle::callbacks::ModelCheckpoint;
/// let cb = ModelCheckpoint::new("ckpt/weights.{epoch:02d}-{val_accuracy:.4f}.safetensors")
///     .monitor("val_accuracy").save_best_only(true).save_weights_only(true);
/// // Every 500 batches, the path numbered by epoch and batch; only below a loss of 2.
/// let every = ModelCheckpoint::new("ckpt/{epoch:02d}-{batch:05d}-{loss:.3e}.kandle")
///     .save_freq(500).monitor("loss").save_best_only(true).initial_value_threshold(2.0);
/// # let _ = (cb, every);
/// ```
pub struct ModelCheckpoint {
    filepath: String,
    monitor: Monitor,
    save_best_only: bool,
    save_weights_only: bool,
    save_freq: SaveFreq,
    verbose: u8,
    epoch: usize,
    /// Batches since the last batch-level save.
    since_save: usize,
}

impl ModelCheckpoint {
    /// A checkpoint written to `filepath` (a template).
    pub fn new(filepath: impl Into<String>) -> Self {
        ModelCheckpoint {
            filepath: filepath.into(),
            monitor: Monitor::new("val_loss", Mode::Auto, 0.0),
            save_best_only: false,
            save_weights_only: false,
            save_freq: SaveFreq::Epoch,
            verbose: 0,
            epoch: 0,
            since_save: 0,
        }
    }
    /// Only save when the monitored value improves (default false). When the logs lack the
    /// monitored value, Keras warns and saves anyway; so does this.
    pub fn save_best_only(mut self, b: bool) -> Self {
        self.save_best_only = b;
        self
    }
    /// Save only the weights, not the optimizer state (default false).
    pub fn save_weights_only(mut self, b: bool) -> Self {
        self.save_weights_only = b;
        self
    }
    /// Keras' `save_freq`: [`SaveFreq::Epoch`] (default) or a number of batches
    /// (`.save_freq(100)`).
    pub fn save_freq(mut self, freq: impl Into<SaveFreq>) -> Self {
        self.save_freq = freq.into();
        self
    }
    /// Keras' `initial_value_threshold`: with `save_best_only`, the value to beat before the
    /// first save (default none).
    pub fn initial_value_threshold(mut self, value: f64) -> Self {
        self.monitor.best = Some(value);
        self
    }
    /// 1 prints each save, as Keras words it (default 0).
    pub fn verbose(mut self, v: u8) -> Self {
        self.verbose = v;
        self
    }

    /// Saves after `epoch` (and `batch`, for a batch-level save) if the rules say so.
    fn save(&mut self, epoch: usize, batch: Option<usize>, logs: &Logs, ctx: &mut TrainingContext) -> Result<()> {
        let path = format_path(&self.filepath, epoch, batch, logs)?;
        if self.save_best_only {
            self.monitor.resolve(ctx, "ModelCheckpoint")?;
            match logs.get(&self.monitor.key) {
                None => eprintln!("ModelCheckpoint: can save best model only with {} available.", self.monitor.key),
                Some(current) => {
                    let best = self.monitor.best.map_or_else(|| "None".to_string(), |b| format!("{b:.5}"));
                    if !self.monitor.is_improvement(current, self.monitor.best) {
                        if self.verbose > 0 {
                            println!("\nEpoch {}: {} did not improve from {best}", epoch + 1, self.monitor.key);
                        }
                        return Ok(());
                    }
                    if self.verbose > 0 {
                        println!(
                            "\nEpoch {}: {} improved from {best} to {current:.5}, saving model to {path}",
                            epoch + 1,
                            self.monitor.key
                        );
                    }
                    self.monitor.best = Some(current);
                }
            }
        } else if self.verbose > 0 {
            println!("\nEpoch {}: saving model to {path}", epoch + 1);
        }
        if let Some(dir) = std::path::Path::new(&path).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        if self.save_weights_only {
            ctx.save_weights(&path)
        } else {
            ctx.save(&path)
        }
    }
}

/// The widest field a path placeholder may ask for (`{epoch:04000000000d}` is an error, not
/// gigabytes of zeros).
const MAX_WIDTH: usize = 256;

/// Fills Keras' placeholders (Python's `str.format`): `{epoch}` (1-based), `{batch}` for a
/// batch-level save, and any log key, with a format spec `[0][width][.precision][type]`, type
/// `d`, `f`, `e`, `E`, `g` or `%` (`{epoch:02d}`, `{val_accuracy:.4f}`, `{val_loss:.3e}`).
pub(crate) fn format_path(template: &str, epoch: usize, batch: Option<usize>, logs: &Logs) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| Error::invalid("filepath", format!("unclosed '{{' in {template:?}")))?
            + open;
        let field = &rest[open + 1..close];
        let (name, spec) = field.split_once(':').unwrap_or((field, ""));
        let (value, integer) = match (name, batch) {
            ("epoch", _) => ((epoch + 1) as f64, true),
            ("batch", Some(b)) if logs.get("batch").is_none() => ((b + 1) as f64, true),
            _ => (
                logs.get(name).ok_or_else(|| {
                    Error::invalid("filepath", format!("{template:?} uses {{{name}}}, which is not in the logs"))
                })?,
                false,
            ),
        };
        out += &python_format(value, integer, spec)
            .map_err(|why| Error::invalid("filepath", format!("{template:?}: format {{{field}}}: {why}")))?;
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `value` formatted by a Python format spec (the subset paths use); `integer` for values
/// Python holds as ints (`{epoch}`).
fn python_format(value: f64, integer: bool, spec: &str) -> std::result::Result<String, String> {
    let (zero, spec) = spec.strip_prefix('0').map_or((false, spec), |s| (true, s));
    let digits = spec.find(|c: char| !c.is_ascii_digit()).unwrap_or(spec.len());
    let width: usize = match &spec[..digits] {
        "" => 0,
        w => w.parse().ok().filter(|&w| w <= MAX_WIDTH).ok_or(format!("a width of at most {MAX_WIDTH}"))?,
    };
    let spec = &spec[digits..];
    let (precision, kind) = match spec.strip_prefix('.') {
        Some(p) => {
            let d = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
            let prec = p[..d].parse::<usize>().ok().filter(|&p| p <= 64).ok_or("a precision of at most 64")?;
            (Some(prec), &p[d..])
        }
        None => (None, spec),
    };
    let exponent = |s: String, upper: bool| -> String {
        // Rust's 1.5e-3 is Python's 1.5e-03.
        let Some((m, e)) = s.split_once('e') else { return s };
        let (sign, d) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
        format!("{m}{}{sign}{d:0>2}", if upper { 'E' } else { 'e' })
    };
    let body = match kind {
        "d" => format!("{}", value as i64),
        "f" | "F" => format!("{value:.*}", precision.unwrap_or(6)),
        "e" | "E" => exponent(format!("{value:.*e}", precision.unwrap_or(6)), kind == "E"),
        "%" => format!("{:.*}%", precision.unwrap_or(6), value * 100.0),
        "g" | "" if integer && precision.is_none() => format!("{}", value as i64),
        "" if precision.is_none() => crate::callbacks::history::python_float(value),
        "g" | "" => {
            // Python's general format: significant digits, exponent outside [1e-4, 10^p).
            let p = precision.unwrap_or(6).max(1);
            let exp = if value == 0.0 { 0 } else { value.abs().log10().floor() as i32 };
            if exp < -4 || exp >= p as i32 {
                let s = exponent(format!("{value:.*e}", p - 1), false);
                let (m, e) = s.split_once('e').unwrap_or((&s, ""));
                let m = if m.contains('.') { m.trim_end_matches('0').trim_end_matches('.') } else { m };
                format!("{m}e{e}")
            } else {
                let s = format!("{value:.*}", (p as i32 - 1 - exp).max(0) as usize);
                if s.contains('.') {
                    s.trim_end_matches('0').trim_end_matches('.').to_string()
                } else {
                    s
                }
            }
        }
        other => return Err(format!("unknown format type {other:?}")),
    };
    Ok(if body.len() >= width {
        body
    } else if zero {
        let (sign, digits) = body.strip_prefix('-').map_or(("", body.as_str()), |d| ("-", d));
        format!("{sign}{digits:0>w$}", w = width - sign.len())
    } else {
        format!("{body:>width$}")
    })
}

monitor_setters!(ModelCheckpoint);

impl Callback for ModelCheckpoint {
    fn on_epoch_begin(&mut self, epoch: usize, _ctx: &mut TrainingContext) -> Result<()> {
        self.epoch = epoch;
        Ok(())
    }

    fn on_train_batch_end(&mut self, batch: usize, logs: &Logs, ctx: &mut TrainingContext) -> Result<Control> {
        if let SaveFreq::Batches(n) = self.save_freq {
            self.since_save += 1;
            if self.since_save >= n.max(1) {
                self.since_save = 0;
                self.save(self.epoch, Some(batch), logs, ctx)?;
            }
        }
        Ok(Control::Continue)
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, ctx: &mut TrainingContext) -> Result<Control> {
        if self.save_freq == SaveFreq::Epoch {
            self.save(epoch, None, logs, ctx)?;
        }
        Ok(Control::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python's own answers: `format(x, spec)`.
    #[test]
    fn python_format_specs() {
        let cases: [(f64, bool, &str, &str); 12] = [
            (3.0, true, "02d", "03"),
            (12.0, true, "", "12"),
            (0.81234, false, ".4f", "0.8123"),
            (0.0012345, false, ".3e", "1.234e-03"),
            (12345.678, false, ".2E", "1.23E+04"),
            (0.5, false, "", "0.5"),
            (2.0, false, "", "2.0"),
            (0.000012345, false, ".3g", "1.23e-05"),
            (123.456, false, ".4g", "123.5"),
            (0.25, false, ".1%", "25.0%"),
            (-1.5, false, "06.2f", "-01.50"),
            (7.0, true, "4", "   7"),
        ];
        for (v, int, spec, want) in cases {
            assert_eq!(python_format(v, int, spec).unwrap(), want, "format({v}, {spec:?})");
        }
        assert!(python_format(1.0, true, "04000000000d").is_err());
        assert!(python_format(1.0, false, ".3q").is_err());
    }
}
