use super::{Callback, Control, Logs, TrainingContext};
use crate::error::{Error, Result};
use std::path::PathBuf;

/// How often [`BackupAndRestore`] and [`ModelCheckpoint`](super::ModelCheckpoint) save:
/// Keras' `save_freq`, `"epoch"` or a number of batches (`.save_freq(100)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveFreq {
    /// At the end of every epoch (Keras' default).
    #[default]
    Epoch,
    /// Every `n` training batches (counted across epochs).
    Batches(usize),
}

impl From<usize> for SaveFreq {
    fn from(n: usize) -> Self {
        SaveFreq::Batches(n)
    }
}

/// Backs up the whole training state so that a run killed at any moment and started again
/// with the same command resumes where the last backup was taken, as
/// `keras.callbacks.BackupAndRestore`.
///
/// The backup (`backup_dir/latest.kandle`) holds the weights, the optimizer state, the dropout
/// seeds and counters, and the position `(epoch, batch)`; it is written to a temporary name and
/// renamed into place, so a kill during a save leaves the previous backup intact. With
/// `double_checkpoint`, the previous backup is kept as `previous.kandle` and used if the latest
/// one cannot be read. A finished run deletes its backups (`delete_checkpoint`, default true).
///
/// Keras' defaults: `save_freq "epoch"`, `delete_checkpoint true`, `double_checkpoint false`.
///
/// ```
/// use kandle::callbacks::{BackupAndRestore, SaveFreq};
/// let cb = BackupAndRestore::new("/tmp/run1/backup").save_freq(SaveFreq::Batches(50));
/// # let _ = cb;
/// ```
pub struct BackupAndRestore {
    dir: PathBuf,
    save_freq: SaveFreq,
    double_checkpoint: bool,
    delete_checkpoint: bool,
    batches: usize,
}

impl BackupAndRestore {
    /// Backups in `backup_dir` (created when needed).
    pub fn new(backup_dir: impl Into<PathBuf>) -> Self {
        BackupAndRestore {
            dir: backup_dir.into(),
            save_freq: SaveFreq::Epoch,
            double_checkpoint: false,
            delete_checkpoint: true,
            batches: 0,
        }
    }
    /// How often to save (default every epoch).
    pub fn save_freq(mut self, f: impl Into<SaveFreq>) -> Self {
        let f = f.into();
        self.save_freq = f;
        self
    }
    /// Keep the previous backup as a fallback (default false).
    pub fn double_checkpoint(mut self, d: bool) -> Self {
        self.double_checkpoint = d;
        self
    }
    /// Delete the backups when training finishes (default true).
    pub fn delete_checkpoint(mut self, d: bool) -> Self {
        self.delete_checkpoint = d;
        self
    }

    fn latest(&self) -> PathBuf {
        self.dir.join("latest.kandle")
    }

    fn previous(&self) -> PathBuf {
        self.dir.join("previous.kandle")
    }

    fn backup(&self, ctx: &mut TrainingContext) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        if self.double_checkpoint && self.latest().exists() {
            std::fs::rename(self.latest(), self.previous()).map_err(|e| Error::io(self.previous(), e))?;
        }
        ctx.save_backup(&self.latest())
    }
}

impl Callback for BackupAndRestore {
    fn on_train_begin(&mut self, ctx: &mut TrainingContext) -> Result<()> {
        if let SaveFreq::Batches(0) = self.save_freq {
            return Err(Error::invalid("save_freq", "expected a positive number of batches, received 0"));
        }
        self.batches = 0;
        let mut candidates = vec![self.latest()];
        if self.double_checkpoint {
            candidates.push(self.previous());
        }
        let mut last_err = None;
        for path in candidates.into_iter().filter(|p| p.exists()) {
            match ctx.load_backup(&path) {
                Ok((epoch, step)) => {
                    println!("BackupAndRestore: resuming from {} at epoch {}, batch {step}", path.display(), epoch + 1);
                    ctx.resume_at(epoch, step);
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
        }
        match last_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn on_train_batch_end(&mut self, _batch: usize, _logs: &Logs, ctx: &mut TrainingContext) -> Result<Control> {
        if let SaveFreq::Batches(n) = self.save_freq {
            self.batches += 1;
            if self.batches.is_multiple_of(n) {
                self.backup(ctx)?;
            }
        }
        Ok(Control::Continue)
    }

    fn on_epoch_end(&mut self, _epoch: usize, _logs: &Logs, ctx: &mut TrainingContext) -> Result<Control> {
        if self.save_freq == SaveFreq::Epoch {
            self.backup(ctx)?;
        }
        Ok(Control::Continue)
    }

    fn on_train_end(&mut self, _logs: &Logs, _ctx: &mut TrainingContext) -> Result<()> {
        if self.delete_checkpoint {
            for p in [self.latest(), self.previous()] {
                if p.exists() {
                    std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
                }
            }
            // Keras removes the whole folder (`rmtree`); here only when nothing else is in it,
            // so that a folder given by mistake (".") keeps the user's files.
            if let Some(dir) = self.latest().parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
        Ok(())
    }
}
