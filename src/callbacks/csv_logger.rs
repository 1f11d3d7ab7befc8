use super::{Callback, Control, Logs, TrainingContext};
use crate::error::{Error, Result};
use std::io::Write;
use std::path::PathBuf;

/// Streams each epoch's logs to a CSV file, as `keras.callbacks.CSVLogger`: an `epoch`
/// column, then the first epoch's log keys in sorted order and, when that epoch did not
/// validate, a `val_` column for each of them (so that later validation fits the table);
/// `NA` where an epoch did not log a key (`validation_freq`, a stop mid-epoch); values as
/// Python writes them. Each row is flushed as it is written. Appending to a file that has a
/// header keeps its columns. (Keras fails on a key the first epoch did not log; it is left
/// out here.)
///
/// Keras' defaults: `separator ","`, `append false`.
///
/// ```
/// use kandle::callbacks::CSVLogger;
/// use kandle::prelude::*;
/// let x = Tensor::zeros((8, 2), DType::F32, &Device::Cpu)?;
/// let y = Tensor::zeros(8, DType::U32, &Device::Cpu)?;
/// let model = Sequential::new().seed(0).add(Dense::new(2).activation(Activation::Softmax).input_shape(2));
/// model.compile("sgd", Loss::SparseCategoricalCrossentropy, &[Metric::Accuracy])?;
/// let path = std::env::temp_dir().join("kandle-doc-log.csv");
/// model.fit(&x, &y, FitOptions::default().epochs(2).verbose(0).callback(CSVLogger::new(&path)))?;
/// let text = std::fs::read_to_string(&path)?;
/// assert_eq!(text.lines().next(), Some("epoch,accuracy,loss,val_accuracy,val_loss"));
/// assert!(text.lines().nth(1).unwrap().ends_with(",NA,NA"));
/// assert_eq!(text.lines().count(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CSVLogger {
    path: PathBuf,
    separator: String,
    append: bool,
    file: Option<std::fs::File>,
    keys: Option<Vec<String>>,
}

impl CSVLogger {
    /// A logger writing to `filename`.
    pub fn new(filename: impl Into<PathBuf>) -> Self {
        CSVLogger { path: filename.into(), separator: ",".into(), append: false, file: None, keys: None }
    }
    /// The column separator (default `,`).
    pub fn separator(mut self, s: impl Into<String>) -> Self {
        self.separator = s.into();
        self
    }
    /// Append to an existing file instead of replacing it (default false).
    pub fn append(mut self, a: bool) -> Self {
        self.append = a;
        self
    }
}

impl Callback for CSVLogger {
    fn on_train_begin(&mut self, _ctx: &mut TrainingContext) -> Result<()> {
        let has_header = self.append && std::fs::metadata(&self.path).map(|m| m.len() > 0).unwrap_or(false);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(self.append)
            .truncate(!self.append)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        self.file = Some(file);
        // An existing file's header fixes the columns.
        self.keys = if has_header {
            let text = std::fs::read_to_string(&self.path).map_err(|e| Error::io(&self.path, e))?;
            let header = text.lines().next().unwrap_or_default();
            let columns: Vec<String> = header.split(self.separator.as_str()).skip(1).map(str::to_string).collect();
            Some(columns)
        } else {
            None
        };
        Ok(())
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, _ctx: &mut TrainingContext) -> Result<Control> {
        let sep = self.separator.clone();
        let Some(file) = self.file.as_mut() else { return Ok(Control::Continue) };
        let mut out = String::new();
        let keys = match &self.keys {
            Some(keys) => keys.clone(),
            None => {
                let mut keys: Vec<String> = logs.keys().map(str::to_string).collect();
                keys.sort();
                if !keys.iter().any(|k| k.starts_with("val_")) {
                    let val: Vec<String> = keys.iter().map(|k| format!("val_{k}")).collect();
                    keys.extend(val);
                }
                out += &format!("epoch{sep}{}\n", keys.join(&sep));
                self.keys = Some(keys.clone());
                keys
            }
        };
        let vals: Vec<String> =
            keys.iter().map(|k| logs.get(k).map_or_else(|| "NA".to_string(), super::history::python_float)).collect();
        out += &format!("{epoch}{sep}{}\n", vals.join(&sep));
        file.write_all(out.as_bytes()).and_then(|_| file.flush()).map_err(|e| Error::io(&self.path, e))?;
        Ok(Control::Continue)
    }

    fn on_train_end(&mut self, _logs: &Logs, _ctx: &mut TrainingContext) -> Result<()> {
        self.file = None;
        Ok(())
    }
}
