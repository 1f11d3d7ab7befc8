//! Flags shared by the examples (parsed by clap): `--epochs N --batch-size B --data-dir DIR
//! --limit N --seed S --verbose V`. Unknown flags are an error, so that a typo never runs a
//! different experiment.
#![allow(dead_code)]

use kandle::prelude::*;

pub struct Args {
    matches: clap::ArgMatches,
}

impl Args {
    /// Parses `--name value` (or `--name=value`) flags with clap, accepting only `known` names;
    /// `--help` lists them. A flag whose help starts with "switch:" takes no value ([`Args::on`]).
    pub fn parse(known: &[(&'static str, &'static str)]) -> Args {
        let program = std::env::args().next().unwrap_or_default();
        let name = std::path::Path::new(&program).file_name().map(|n| n.to_string_lossy().into_owned());
        // clap takes a static name; an example parses its flags once.
        let mut cmd = clap::Command::new(&*Box::leak(name.unwrap_or_default().into_boxed_str()));
        for &(name, help) in known {
            let arg = clap::Arg::new(name).long(name).help(help);
            cmd = cmd.arg(if help.starts_with("switch:") {
                arg.action(clap::ArgAction::SetTrue)
            } else {
                arg.value_name("VALUE")
            });
        }
        Args { matches: cmd.get_matches() }
    }

    /// Whether the switch `name` was given.
    pub fn on(&self, name: &str) -> bool {
        self.matches.get_flag(name)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.matches.get_one::<String>(name).map(|s| s.as_str())
    }

    /// A numeric flag, or `default`; a value that does not parse is a clear error.
    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => {
                v.parse().map_err(|_| Error::invalid("flag", format!("--{name}: expected a number, received {v:?}")))
            }
        }
    }
}

/// The first `limit` samples (all when `limit` is 0).
pub fn take(x: &Tensor, limit: usize) -> Result<Tensor> {
    let n = x.dims()[0];
    Ok(if limit == 0 || limit >= n { x.clone() } else { x.narrow(0, 0, limit)? })
}

/// Where an example reads data set `sub` (`"cifar10"`, `"mnist"`) from: `--data-dir`, else
/// (unless `$KANDLE_DATA_DIR` is set) `../shared/data/<sub>` beside the crate when it is there
/// (this project's machines, which have no network), else `None`: `load_data()`, which reads
/// Keras' cache or downloads the data set as Keras does.
pub fn data_dir(args: &Args, sub: &str) -> Option<std::path::PathBuf> {
    if let Some(d) = args.get("data-dir") {
        return Some(d.into());
    }
    if std::env::var_os("KANDLE_DATA_DIR").is_some() {
        return None;
    }
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(sub);
    shared.exists().then_some(shared)
}

/// CIFAR-10 from `--data-dir` (or the usual places), the first `--limit` training samples,
/// images in [0, 1] and one-hot labels, as the tutorial prepares them; prints the shapes.
pub fn cifar10_data(args: &Args) -> Result<((Tensor, Tensor), (Tensor, Tensor))> {
    use kandle::datasets::cifar10;
    let ((x_train, y_train), (x_test, y_test)) = match data_dir(args, "cifar10") {
        Some(d) => cifar10::load_data_from(d)?,
        None => cifar10::load_data()?,
    };
    let limit = args.num("limit", 0usize)?;
    let (x_train, y_train) = (take(&x_train, limit)?, take(&y_train, limit)?);
    let (x_train, x_test) = (to_unit(&x_train)?, to_unit(&x_test)?);
    let (y_train, y_test) = (to_categorical(&y_train, 10)?, to_categorical(&y_test, 10)?);
    println!(
        "x_train shape: {:?}, {} train samples, {} test samples",
        x_train.dims(),
        x_train.dims()[0],
        x_test.dims()[0]
    );
    Ok(((x_train, y_train), (x_test, y_test)))
}

/// `u8` images to floats in [0, 1].
pub fn to_unit(x: &Tensor) -> Result<Tensor> {
    Ok((x.to_dtype(DType::F32)? / 255.0)?)
}

/// Flags of the long-run features, shared by the CIFAR-10 examples.
pub const RUN_FLAGS: [(&str, &str); 12] = [
    ("devices", "train data-parallel, one replica per device (MirroredStrategy): cpu,cpu or cuda:0,cuda:1"),
    ("world-size", "number of worker processes of a multi-worker run (one GPU each; nccl feature)"),
    ("rank", "this process's worker number, 0 to world-size - 1 (worker 0 writes --nccl-id)"),
    ("nccl-id", "multi-worker runs: a file on a disk all workers see, for NCCL's group id"),
    ("report", "write curves.png, history.csv, confusion.png, misclassified.png and per_class.csv to this folder"),
    ("tensorboard", "write TensorBoard logs (train/, validation/) to this folder: tensorboard --logdir DIR"),
    ("eval-train", "1: also evaluate on the (clean) training set at the end, printing train_eval_accuracy"),
    ("save", "save the model (weights and training state) to this file at the end"),
    ("load", "load a model saved with --save before training or evaluating"),
    ("checkpoint-dir", "keep the best model (val_accuracy) in DIR/best.kandle after each epoch"),
    ("plot", "write the training curves to this PNG (or .svg) file"),
    ("patience", "stop when val_loss has not improved for N epochs (EarlyStopping)"),
];

/// The callbacks the flags ask for.
pub fn run_callbacks(args: &Args) -> Result<Vec<Box<dyn kandle::callbacks::Callback>>> {
    use kandle::callbacks::{EarlyStopping, ModelCheckpoint};
    let mut cbs: Vec<Box<dyn kandle::callbacks::Callback>> = Vec::new();
    if let Some(tb) = tensorboard(args)? {
        cbs.push(tb);
    }
    if let Some(dir) = args.get("checkpoint-dir") {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = std::path::Path::new(dir).join("best.kandle").display().to_string();
        cbs.push(Box::new(ModelCheckpoint::new(path).monitor("val_accuracy").save_best_only(true).verbose(1)));
    }
    if args.get("patience").is_some() {
        cbs.push(Box::new(
            EarlyStopping::new().patience(args.num("patience", 0usize)?).restore_best_weights(true).verbose(1),
        ));
    }
    Ok(cbs)
}

/// The error of a flag whose work needs one of kandle's optional features.
#[allow(unused)]
fn needs_feature(flag: &str, feature: &str) -> Error {
    Error::invalid(
        "flag",
        format!("--{flag} needs kandle's `{feature}` feature, which this build left out (it is on by default)"),
    )
}

/// With `--tensorboard DIR`: the TensorBoard callback (epoch scalars, weight histograms).
pub fn tensorboard(args: &Args) -> Result<Option<Box<dyn kandle::callbacks::Callback>>> {
    let Some(dir) = args.get("tensorboard") else { return Ok(None) };
    #[cfg(feature = "tensorboard")]
    {
        println!("TensorBoard logs in {dir}: tensorboard --logdir {dir}");
        Ok(Some(Box::new(kandle::callbacks::TensorBoard::new(dir).histogram_freq(1))))
    }
    #[cfg(not(feature = "tensorboard"))]
    {
        let _ = dir;
        Err(needs_feature("tensorboard", "tensorboard"))
    }
}

/// Writes the training curves of `h` to `path` (`--plot`, `--report`).
pub fn plot(h: &History, path: impl AsRef<std::path::Path>) -> Result<()> {
    #[cfg(feature = "plot")]
    {
        h.plot(path)
    }
    #[cfg(not(feature = "plot"))]
    {
        let _ = (h, path);
        Err(needs_feature("plot", "plot"))
    }
}

/// Loads `--load` into the (compiled) model.
pub fn maybe_load(args: &Args, model: &Model) -> Result<()> {
    if let Some(p) = args.get("load") {
        model.load(p)?;
        println!("loaded {p}");
    }
    Ok(())
}

/// Saves (`--save`) and plots (`--plot`) after training.
pub fn after_training(args: &Args, model: &Model, history: Option<&History>) -> Result<()> {
    if let (Some(p), Some(h)) = (args.get("plot"), history) {
        plot(h, p)?;
        println!("wrote the training curves to {p}");
    }
    if let Some(p) = args.get("save") {
        model.save(p)?;
        println!("saved the model to {p}");
    }
    Ok(())
}

/// With `--report DIR`: the training curves (`curves.png`, and `history.csv` with the same
/// figures), the confusion matrix of the test
/// set (`confusion.png`), the first 36 test images the model got wrong (`misclassified.png`)
/// and each class's accuracy (`per_class.csv`), and prints where they are.
pub fn write_report(
    args: &Args,
    model: &Model,
    history: Option<&History>,
    x_test: &Tensor,
    y_test: &Tensor,
    class_names: &[&str],
    batch_size: usize,
) -> Result<()> {
    let Some(dir) = args.get("report") else { return Ok(()) };
    let dir = std::path::Path::new(dir);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if let Some(h) = history.filter(|h| !h.epoch.is_empty()) {
        plot(h, dir.join("curves.png"))?;
        h.save_csv(dir.join("history.csv"))?;
    }
    let probs = model.predict(x_test, batch_size)?;
    let wrong = pictures(dir, "", x_test, y_test, &probs, class_names)?;
    let m = kandle::utils::confusion_matrix(y_test, &probs, class_names.len())?;
    let csv = kandle::utils::per_class_csv(&m, class_names);
    kandle::utils::write_atomic(&dir.join("per_class.csv"), csv.as_bytes())?;
    println!(
        "wrote the report to {}: curves.png, history.csv, confusion.png, misclassified.png ({wrong} test images wrong), per_class.csv",
        dir.display()
    );
    Ok(())
}

/// The confusion matrix (`confusion{suffix}.png`) and the first 36 test images the model got
/// wrong (`misclassified{suffix}.png`) in `dir`; returns how many it got wrong.
pub fn pictures(
    dir: &std::path::Path,
    suffix: &str,
    x: &Tensor,
    y: &Tensor,
    probs: &Tensor,
    class_names: &[&str],
) -> Result<usize> {
    #[cfg(feature = "plot")]
    {
        kandle::utils::plot_confusion_matrix(dir.join(format!("confusion{suffix}.png")), y, probs, class_names)?;
        kandle::utils::plot_misclassified(dir.join(format!("misclassified{suffix}.png")), x, y, probs, class_names, 36)
    }
    #[cfg(not(feature = "plot"))]
    {
        let _ = (dir, suffix, x, y, probs, class_names);
        Err(needs_feature("report", "plot"))
    }
}

/// With `--eval-train 1`, evaluates the final model on the training set (inference mode, no
/// augmentation) and prints `train_eval_loss=<f> train_eval_accuracy=<f>`: with the test
/// figures, the train-test gap that data augmentation is meant to shrink.
pub fn eval_train(args: &Args, model: &mut Model, x: &Tensor, y: &Tensor, batch_size: usize) -> Result<()> {
    if args.num("eval-train", 0u8)? == 1 {
        let s = model.evaluate(x, y, batch_size)?;
        println!("train_eval_loss={:.4} train_eval_accuracy={:.4}", s.loss, s.accuracy().unwrap_or(f64::NAN));
    }
    Ok(())
}

/// Prints an error as a sentence (not as a debug structure) and exits with status 1.
pub fn exit_on_error(r: Result<()>) {
    if let Err(e) = r {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// The devices of `--devices` (`cpu`, `cuda`, `cuda:N`), or the CPU alone.
pub fn devices(args: &Args) -> Result<Vec<Device>> {
    let Some(list) = args.get("devices") else { return Ok(vec![Device::Cpu]) };
    list.split(',')
        .map(|d| match d.trim() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::new_cuda(0)?),
            other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => Ok(Device::new_cuda(n)?),
                None => Err(Error::invalid("devices", format!("expected cpu, cuda or cuda:N, received {other:?}"))),
            },
        })
        .collect()
}

/// The strategy the flags ask for: `--devices` with several devices (replicas in this process),
/// or `--world-size N --rank W --nccl-id FILE` (one process per GPU, NCCL between them). The
/// model must then be built on `devices[0]` ([`place`]).
pub fn strategy(args: &Args) -> Result<Option<kandle::distribute::MirroredStrategy>> {
    use kandle::distribute::MirroredStrategy;
    let devices = devices(args)?;
    let workers = args.num("world-size", 1usize)?;
    if workers > 1 {
        return multi_worker(args, devices[0].clone(), workers).map(Some);
    }
    if devices.len() == 1 {
        return Ok(None);
    }
    let s = MirroredStrategy::new(devices)?;
    println!("Number of devices: {}", s.num_replicas_in_sync());
    Ok(Some(s))
}

#[cfg(feature = "nccl")]
fn multi_worker(args: &Args, device: Device, workers: usize) -> Result<kandle::distribute::MirroredStrategy> {
    use kandle::distribute::{nccl_unique_id, MirroredStrategy, NcclAllReduce};
    let worker = args.num("rank", 0usize)?;
    let file =
        args.get("nccl-id").ok_or_else(|| Error::invalid("nccl-id", "a multi-worker run needs --nccl-id FILE"))?;
    let id = if worker == 0 {
        // Written whole, then renamed: the others never read half an id.
        let id = nccl_unique_id()?;
        let tmp = format!("{file}.tmp");
        std::fs::write(&tmp, &id).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, file).map_err(|e| Error::io(file, e))?;
        id
    } else {
        let start = std::time::Instant::now();
        loop {
            match std::fs::read_to_string(file) {
                Ok(id) if id.trim().len() == 256 => break id.trim().to_string(),
                _ if start.elapsed().as_secs() > 300 => {
                    return Err(Error::invalid("nccl-id", format!("worker 0 wrote no id to {file} within 5 minutes")))
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(200)),
            }
        }
    };
    println!("Worker {worker} of {workers}: joining the NCCL group");
    let reduce = std::sync::Arc::new(NcclAllReduce::from_rank(&device, worker, workers, &id)?);
    MirroredStrategy::multi_worker(device, worker, workers, reduce)
}

#[cfg(not(feature = "nccl"))]
fn multi_worker(_: &Args, _: Device, workers: usize) -> Result<kandle::distribute::MirroredStrategy> {
    Err(Error::invalid("world-size", format!("{workers} workers need NCCL: build with --features nccl")))
}

/// Puts a model on the strategy's first device (before it is built).
pub fn place(model: &Model, strategy: Option<&kandle::distribute::MirroredStrategy>) {
    if let Some(s) = strategy {
        model.device(s.devices()[0].clone());
    }
}
