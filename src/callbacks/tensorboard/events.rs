//! TensorBoard event files, as `tf.summary` writes them: `tf.summary.create_file_writer` is
//! [`SummaryWriter::create`], `tf.summary.scalar` / `histogram` / `image` its methods.
//!
//! The file is TensorFlow's: TFRecord framing (a little-endian `u64` length, its masked CRC32C,
//! the bytes, their masked CRC32C) around `Event` protocol buffers, the first one
//! `file_version: "brain.Event:2"`, named `events.out.tfevents.<time>.<host>.<pid>.<n>.v2`.
//! Summaries are written as TensorFlow 2 writes them, tensors with the plugin's metadata
//! (`scalars`, `histograms`, `images`), byte for byte the same messages for the same values
//! (checked against files TensorFlow wrote, `tests/golden/make_tensorboard_goldens.py`).

use crate::error::{Error, Result};
use prost::Message;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The messages of TensorFlow's `event.proto`, `summary.proto`, `tensor.proto` and
/// `tensor_shape.proto` that an event file needs, with TensorFlow's field numbers.
pub mod proto {
    /// `tensorflow.Event`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        /// Seconds since the Unix epoch.
        #[prost(double, tag = "1")]
        pub wall_time: f64,
        /// The global step of the summary.
        #[prost(int64, tag = "2")]
        pub step: i64,
        /// What the event carries.
        #[prost(oneof = "What", tags = "3, 5")]
        pub what: Option<What>,
        /// The program that wrote the file (first event only).
        #[prost(message, optional, tag = "10")]
        pub source_metadata: Option<SourceMetadata>,
    }

    /// `Event.what`: the file version (first event) or a summary.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        /// `"brain.Event:2"`.
        #[prost(string, tag = "3")]
        FileVersion(String),
        /// Summary values.
        #[prost(message, tag = "5")]
        Summary(Summary),
    }

    /// `tensorflow.SourceMetadata`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SourceMetadata {
        /// The writer's name.
        #[prost(string, tag = "1")]
        pub writer: String,
    }

    /// `tensorflow.Summary`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        /// The values.
        #[prost(message, repeated, tag = "1")]
        pub value: Vec<Value>,
    }

    /// `tensorflow.Summary.Value`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        /// The series' name.
        #[prost(string, tag = "1")]
        pub tag: String,
        /// The value: a scalar as TensorFlow 1 wrote it, or a tensor (TensorFlow 2).
        #[prost(oneof = "ValueKind", tags = "2, 8")]
        pub value: Option<ValueKind>,
        /// Which plugin reads the value.
        #[prost(message, optional, tag = "9")]
        pub metadata: Option<SummaryMetadata>,
    }

    /// `Summary.Value.value`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum ValueKind {
        /// TensorFlow 1's scalars.
        #[prost(float, tag = "2")]
        SimpleValue(f32),
        /// TensorFlow 2's summaries.
        #[prost(message, tag = "8")]
        Tensor(TensorProto),
    }

    /// `tensorflow.SummaryMetadata`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SummaryMetadata {
        /// The plugin and its data.
        #[prost(message, optional, tag = "1")]
        pub plugin_data: Option<PluginData>,
    }

    /// `tensorflow.SummaryMetadata.PluginData`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PluginData {
        /// `scalars`, `histograms`, `images`, ...
        #[prost(string, tag = "1")]
        pub plugin_name: String,
        /// The plugin's own data (empty for version 0 of the three above).
        #[prost(bytes = "vec", tag = "2")]
        pub content: Vec<u8>,
    }

    /// `tensorflow.TensorProto` (the fields summaries use).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        /// `DT_FLOAT` 1, `DT_DOUBLE` 2, `DT_STRING` 7.
        #[prost(int32, tag = "1")]
        pub dtype: i32,
        /// The shape.
        #[prost(message, optional, tag = "2")]
        pub tensor_shape: Option<TensorShapeProto>,
        /// Numbers, little-endian.
        #[prost(bytes = "vec", tag = "4")]
        pub tensor_content: Vec<u8>,
        /// `f32` values written one by one (other writers).
        #[prost(float, repeated, tag = "5")]
        pub float_val: Vec<f32>,
        /// `f64` values written one by one (other writers).
        #[prost(double, repeated, tag = "6")]
        pub double_val: Vec<f64>,
        /// Strings (images: width, height, PNG files).
        #[prost(bytes = "vec", repeated, tag = "8")]
        pub string_val: Vec<Vec<u8>>,
    }

    /// `tensorflow.TensorShapeProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {
        /// The dimensions.
        #[prost(message, repeated, tag = "2")]
        pub dim: Vec<Dim>,
    }

    /// `tensorflow.TensorShapeProto.Dim`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dim {
        /// The size.
        #[prost(int64, tag = "1")]
        pub size: i64,
    }

    /// TensorFlow's `DT_FLOAT`.
    pub const DT_FLOAT: i32 = 1;
    /// TensorFlow's `DT_DOUBLE`.
    pub const DT_DOUBLE: i32 = 2;
    /// TensorFlow's `DT_STRING`.
    pub const DT_STRING: i32 = 7;
}

use proto::{Event, PluginData, Summary, SummaryMetadata, TensorProto, TensorShapeProto, Value, ValueKind, What};

/// TFRecord's masked CRC32C: the CRC rotated right by 15 bits plus a constant, so that a
/// CRC of data that holds CRCs stays well distributed.
///
/// ```
/// // The length field of a 62-byte record, as TensorFlow framed it in a file it wrote.
/// assert_eq!(kandle::utils::summary::masked_crc32c(&62u64.to_le_bytes()), 0xe740_d2d9);
/// ```
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, masked CRC of the length, the bytes, their masked CRC.
pub fn tfrecord(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// The records of a TFRecord file, each checked against its CRCs.
///
/// # Errors
/// A truncated record or a CRC that does not match, naming the record's offset.
pub fn read_tfrecords(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let bad = |at: usize, what: &str| Error::invalid("event file", format!("record at byte {at}: {what}"));
    while at < bytes.len() {
        let head = bytes.get(at..at + 12).ok_or_else(|| bad(at, "truncated length"))?;
        let (len, crc) = head.split_at(8);
        if masked_crc32c(len) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(bad(at, "the length's CRC does not match"));
        }
        let n = u64::from_le_bytes(len.try_into().expect("8 bytes"));
        let n =
            usize::try_from(n).ok().filter(|n| *n <= bytes.len() - at - 12).ok_or_else(|| bad(at, "truncated data"))?;
        let data = &bytes[at + 12..at + 12 + n];
        let crc = bytes.get(at + 12 + n..at + 16 + n).ok_or_else(|| bad(at, "truncated data CRC"))?;
        if masked_crc32c(data) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(bad(at, "the data's CRC does not match"));
        }
        out.push(data.to_vec());
        at += 16 + n;
    }
    Ok(out)
}

/// The events of an event file, in order.
///
/// # Errors
/// An unreadable file, a bad record or a record that is not an `Event`.
pub fn read_events(path: impl AsRef<Path>) -> Result<Vec<Event>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read_tfrecords(&bytes)?
        .iter()
        .map(|r| {
            Event::decode(r.as_slice())
                .map_err(|e| Error::invalid("event file", format!("{}: not an Event: {e}", path.display())))
        })
        .collect()
}

static WRITERS: AtomicU64 = AtomicU64::new(0);

fn plugin(name: &str) -> Option<SummaryMetadata> {
    Some(SummaryMetadata { plugin_data: Some(PluginData { plugin_name: name.into(), content: Vec::new() }) })
}

fn shape(dims: &[usize]) -> Option<TensorShapeProto> {
    Some(TensorShapeProto { dim: dims.iter().map(|&d| proto::Dim { size: d as i64 }).collect() })
}

/// The `tf.summary.scalar` value: an `f32` scalar tensor for the `scalars` plugin.
pub fn scalar_value(tag: &str, value: f64) -> Value {
    Value {
        tag: tag.into(),
        value: Some(ValueKind::Tensor(TensorProto {
            dtype: proto::DT_FLOAT,
            tensor_shape: shape(&[]),
            tensor_content: (value as f32).to_le_bytes().to_vec(),
            ..Default::default()
        })),
        metadata: plugin("scalars"),
    }
}

/// `tf.summary.histogram`'s buckets: `bucket_count` rows `[left, right, count]` over the values
/// (as `f64`), with TensorFlow's arithmetic: width `(max - min) / k`, bucket
/// `min(floor((x - min) / width), k - 1)`, edges `min + i * width` with the last one `max`; one
/// distinct value gives `k` buckets `[v, v]` with everything in the last; no values, zeros.
pub fn histogram_buckets(values: &[f32], bucket_count: usize) -> Vec<[f64; 3]> {
    let k = bucket_count;
    if values.is_empty() || k == 0 {
        return vec![[0.0; 3]; k];
    }
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for &v in values {
        let v = v as f64;
        min = min.min(v);
        max = max.max(v);
    }
    let range = max - min;
    if range == 0.0 {
        let mut out = vec![[max, max, 0.0]; k];
        out[k - 1][2] = values.len() as f64;
        return out;
    }
    let width = range / k as f64;
    let mut counts = vec![0.0f64; k];
    for &v in values {
        // A NaN's bucket is TensorFlow's cast of NaN to int32 (its smallest value), clamped to
        // the last bucket by the minimum: count it there, as TensorFlow does.
        let i = ((v as f64 - min) / width).floor();
        let i = if i.is_nan() || i >= (k - 1) as f64 { k - 1 } else { i.max(0.0) as usize };
        counts[i] += 1.0;
    }
    let edge = |i: usize| {
        if i == 0 {
            min
        } else if i == k {
            max
        } else {
            min + i as f64 * width
        }
    };
    (0..k).map(|i| [edge(i), edge(i + 1), counts[i]]).collect()
}

/// The `tf.summary.histogram` value: the buckets as an `f64` `[k, 3]` tensor for the
/// `histograms` plugin.
pub fn histogram_value(tag: &str, values: &[f32], bucket_count: usize) -> Value {
    let buckets = histogram_buckets(values, bucket_count);
    let content = buckets.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
    Value {
        tag: tag.into(),
        value: Some(ValueKind::Tensor(TensorProto {
            dtype: proto::DT_DOUBLE,
            tensor_shape: shape(&[buckets.len(), 3]),
            tensor_content: content,
            ..Default::default()
        })),
        metadata: plugin("histograms"),
    }
}

/// The `tf.summary.image` value of `n` images of `height x width x channels` (1, 3 or 4)
/// floats, row-major: each value becomes `saturate(trunc(v * 255.5))` as TensorFlow's
/// `convert_image_dtype` to `uint8`, the first `max_outputs` images are PNG files, after the
/// width and the height as strings (the `images` plugin).
///
/// # Errors
/// A channel count other than 1, 3 or 4, or `data` of the wrong length.
pub fn image_value(tag: &str, data: &[f32], dims: [usize; 4], max_outputs: usize) -> Result<Value> {
    let [n, h, w, c] = dims;
    if ![1, 3, 4].contains(&c) {
        return Err(Error::invalid("image", format!("{tag}: expected 1, 3 or 4 channels, received {c}")));
    }
    if h == 0 || w == 0 {
        return Err(Error::invalid(
            "image",
            format!("{tag}: expected a positive height and width, received {h} x {w}"),
        ));
    }
    let need = [n, h, w, c].into_iter().try_fold(1usize, |a, d| a.checked_mul(d));
    if need != Some(data.len()) {
        return Err(Error::invalid(
            "image",
            format!("{tag}: expected {n} x {h} x {w} x {c} values, received {}", data.len()),
        ));
    }
    let mut strings = vec![w.to_string().into_bytes(), h.to_string().into_bytes()];
    let color = match c {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        _ => image::ExtendedColorType::Rgba8,
    };
    for img in data.chunks(h * w * c).take(max_outputs) {
        let pixels: Vec<u8> = img.iter().map(|&v| (v * 255.5).clamp(0.0, 255.0) as u8).collect();
        let mut png = Vec::new();
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(&mut png),
            &pixels,
            w as u32,
            h as u32,
            color,
        )
        .map_err(|e| Error::invalid("image", format!("{tag}: PNG encoding failed: {e}")))?;
        strings.push(png);
    }
    Ok(Value {
        tag: tag.into(),
        value: Some(ValueKind::Tensor(TensorProto {
            dtype: proto::DT_STRING,
            tensor_shape: shape(&[strings.len()]),
            string_val: strings,
            ..Default::default()
        })),
        metadata: plugin("images"),
    })
}

/// A TensorBoard event file in a folder, as `tf.summary.create_file_writer(logdir)`: events
/// are buffered and reach the file at [`SummaryWriter::flush`] (and when the writer is dropped).
///
/// ```
/// use kandle::utils::summary::{read_events, SummaryWriter};
/// let dir = std::env::temp_dir().join(format!("kandle-doc-summary-{}", std::process::id()));
/// let mut w = SummaryWriter::create(&dir)?;
/// w.scalar("epoch_loss", 0.5, 0)?;
/// w.histogram("dense/kernel/histogram", &[0.1, -0.2, 0.3], 0)?;
/// w.flush()?;
/// let events = read_events(w.path())?;
/// assert_eq!(events.len(), 3); // the file version, then one event per summary
/// assert_eq!(events[1].step, 0);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SummaryWriter {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl std::fmt::Debug for SummaryWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SummaryWriter").field("path", &self.path).finish()
    }
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().replace(['/', '\\'], "_"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl SummaryWriter {
    /// Creates `logdir` (and its parents) and a new event file in it, named as TensorFlow
    /// names them, and writes its first event (the file version) to disk.
    ///
    /// # Errors
    /// If the folder or the file cannot be created or written.
    pub fn create(logdir: impl AsRef<Path>) -> Result<Self> {
        let dir = logdir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let wall = now();
        let n = WRITERS.fetch_add(1, Ordering::Relaxed);
        let name = format!("events.out.tfevents.{:010}.{}.{}.{n}.v2", wall as u64, hostname(), std::process::id());
        let path = dir.join(name);
        let f =
            std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = SummaryWriter { path, file: std::io::BufWriter::new(f) };
        w.write_event(&Event {
            wall_time: wall.floor(),
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
            source_metadata: Some(proto::SourceMetadata { writer: "kandle".into() }),
        })?;
        w.flush()?;
        Ok(w)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event (buffered).
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn write_event(&mut self, event: &Event) -> Result<()> {
        self.file.write_all(&tfrecord(&event.encode_to_vec())).map_err(|e| Error::io(&self.path, e))
    }

    /// Appends a summary of `values` at `step`, stamped with the current time.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn write(&mut self, values: Vec<Value>, step: i64) -> Result<()> {
        self.write_event(&Event {
            wall_time: now(),
            step,
            what: Some(What::Summary(Summary { value: values })),
            source_metadata: None,
        })
    }

    /// `tf.summary.scalar(tag, value, step)`.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn scalar(&mut self, tag: &str, value: f64, step: i64) -> Result<()> {
        self.write(vec![scalar_value(tag, value)], step)
    }

    /// `tf.summary.histogram(tag, values, step)` with TensorFlow's 30 buckets.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn histogram(&mut self, tag: &str, values: &[f32], step: i64) -> Result<()> {
        self.write(vec![histogram_value(tag, values, 30)], step)
    }

    /// `tf.summary.image(tag, data, step, max_outputs)` of `dims = [n, height, width, channels]`
    /// floats in `[0, 1]`; see [`image_value`].
    ///
    /// # Errors
    /// A wrong channel count or length, or if the file cannot be written.
    pub fn image(&mut self, tag: &str, data: &[f32], dims: [usize; 4], step: i64, max_outputs: usize) -> Result<()> {
        let v = image_value(tag, data, dims, max_outputs)?;
        self.write(vec![v], step)
    }

    /// Writes the buffered events to the file and asks the system to keep them.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))?;
        self.file.get_ref().sync_data().map_err(|e| Error::io(&self.path, e))
    }
}

impl Drop for SummaryWriter {
    fn drop(&mut self) {
        let _ = self.file.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_flipped_bit_is_caught() {
        let mut file = tfrecord(b"hello");
        file.extend(tfrecord(b""));
        assert_eq!(read_tfrecords(&file).unwrap(), vec![b"hello".to_vec(), Vec::new()]);
        for bit in [0usize, 8 * 9, 8 * 13] {
            let mut bad = file.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(read_tfrecords(&bad).is_err(), "bit {bit}");
        }
        assert!(read_tfrecords(&file[..file.len() - 1]).is_err());
    }

    #[test]
    fn histogram_edges_and_counts() {
        let b = histogram_buckets(&[0.0, 1.0, 0.5, 0.25], 4);
        assert_eq!(b, vec![[0.0, 0.25, 1.0], [0.25, 0.5, 1.0], [0.5, 0.75, 1.0], [0.75, 1.0, 1.0]]);
        assert_eq!(histogram_buckets(&[2.0, 2.0], 3), vec![[2.0, 2.0, 0.0], [2.0, 2.0, 0.0], [2.0, 2.0, 2.0]]);
        assert_eq!(histogram_buckets(&[], 2), vec![[0.0; 3]; 2]);
    }

    #[test]
    fn bad_image_shapes_are_errors_not_panics() {
        assert!(image_value("t", &[], [1, 0, 5, 1], 3).unwrap_err().to_string().contains("height and width"));
        assert!(image_value("t", &[0.0; 4], [usize::MAX, 2, 2, 1], 3).unwrap_err().to_string().contains("values"));
        assert!(image_value("t", &[0.0; 4], [1, 2, 2, 2], 3).unwrap_err().to_string().contains("channels"));
    }
}
