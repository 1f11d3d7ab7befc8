use super::monitor::{monitor_setters, Mode, Monitor};
use super::{Callback, Control, Logs, TrainingContext};
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
/// # let _ = cb;
/// ```
pub struct ModelCheckpoint {
    filepath: String,
    monitor: Monitor,
    save_best_only: bool,
    save_weights_only: bool,
    verbose: u8,
}

impl ModelCheckpoint {
    /// A checkpoint written to `filepath` (a template).
    pub fn new(filepath: impl Into<String>) -> Self {
        ModelCheckpoint {
            filepath: filepath.into(),
            monitor: Monitor::new("val_loss", Mode::Auto, 0.0),
            save_best_only: false,
            save_weights_only: false,
            verbose: 0,
        }
    }
    /// Only save when the monitored value improves (default false).
    pub fn save_best_only(mut self, b: bool) -> Self {
        self.save_best_only = b;
        self
    }
    /// Save only the weights, not the optimizer state (default false).
    pub fn save_weights_only(mut self, b: bool) -> Self {
        self.save_weights_only = b;
        self
    }
    /// 1 prints each save (default 0).
    pub fn verbose(mut self, v: u8) -> Self {
        self.verbose = v;
        self
    }
}

/// Fills Keras-style placeholders: `{name}`, `{name:02d}`, `{name:.4f}`.
pub(crate) fn format_path(template: &str, epoch: usize, logs: &Logs) -> Result<String> {
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
        let value = if name == "epoch" {
            (epoch + 1) as f64
        } else {
            logs.get(name).ok_or_else(|| {
                Error::invalid("filepath", format!("{template:?} uses {{{name}}}, which is not in the logs"))
            })?
        };
        out += &if let Some(w) = spec.strip_suffix('d') {
            let width: usize = w.trim_start_matches('0').parse().unwrap_or(0);
            if w.starts_with('0') {
                format!("{:0width$}", value as i64)
            } else {
                format!("{:width$}", value as i64)
            }
        } else if let Some(p) = spec.strip_prefix('.').and_then(|p| p.strip_suffix('f')) {
            let prec: usize = p.parse().map_err(|_| Error::invalid("filepath", format!("bad format {spec:?}")))?;
            format!("{value:.prec$}")
        } else if name == "epoch" {
            format!("{}", value as i64)
        } else {
            format!("{value}")
        };
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

monitor_setters!(ModelCheckpoint);

impl Callback for ModelCheckpoint {
    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, ctx: &mut TrainingContext) -> Result<Control> {
        let path = format_path(&self.filepath, epoch, logs)?;
        if self.save_best_only {
            self.monitor.resolve(ctx, "ModelCheckpoint")?;
            let Some(current) = self.monitor.current(logs, "ModelCheckpoint") else { return Ok(Control::Continue) };
            if !self.monitor.is_improvement(current, self.monitor.best) {
                return Ok(Control::Continue);
            }
            if self.verbose > 0 {
                println!(
                    "Epoch {}: {} improved from {:?} to {current}, saving model to {path}",
                    epoch + 1,
                    self.monitor.key,
                    self.monitor.best
                );
            }
            self.monitor.best = Some(current);
        } else if self.verbose > 0 {
            println!("Epoch {}: saving model to {path}", epoch + 1);
        }
        if let Some(dir) = std::path::Path::new(&path).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        if self.save_weights_only {
            ctx.save_weights(&path)?;
        } else {
            ctx.save(&path)?;
        }
        Ok(Control::Continue)
    }
}
