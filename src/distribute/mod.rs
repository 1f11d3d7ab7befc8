//! Data-parallel training, as Keras' (TensorFlow's) `tf.distribute`: [`MirroredStrategy`]
//! (one replica per device, each batch split across them), the reduction that sums the
//! replicas' gradients before each optimizer step, behind a small trait ([`AllReduce`]), its
//! in-process implementation for replicas that are threads of one process (CPU replicas, and
//! the reference the NCCL implementation is checked against) and, with the `nccl` feature,
//! NCCL's (`NcclAllReduce`).
//!
//! The dropout masks of a batch split across replicas are those of the whole batch
//! ([`crate::kernels::dropout_at`]), so that N replicas with `B / N` samples each can give the
//! weights one replica gives with `B`.

use crate::error::{Error, Result};
use candle_core::Tensor;
use std::cell::Cell;
use std::sync::{Condvar, Mutex};

mod mirrored;
#[cfg(feature = "nccl")]
mod nccl;

pub use mirrored::MirroredStrategy;
#[cfg(feature = "nccl")]
pub use nccl::{nccl_unique_id, NcclAllReduce};

thread_local! {
    static ROW_OFFSET: Cell<usize> = const { Cell::new(0) };
}

/// Runs `f` as the replica whose shard starts at row `offset` of the global batch: the training
/// passes it runs (`compute_gradients`, `fit`) mask their dropout rows as rows `offset..` of the
/// whole batch, so that the replicas' gradients, weighted by their share of the batch and
/// summed, are the whole batch's gradient (dropout included). A `fit` with a
/// [`MirroredStrategy`] does this itself, through each replica's pass
/// ([`crate::layers::CallContext::row_offset`]); this is for replicas written by hand.
///
/// ```
/// use kandle::distribute::with_row_offset;
/// use kandle::prelude::*;
/// let x = Tensor::rand(0f32, 1., (8, 6), &Device::Cpu)?;
/// let y = Tensor::new(&[0u32, 1, 2, 0, 1, 2, 0, 1], &Device::Cpu)?;
/// let model = |_| {
///     let m = Sequential::new().seed(3).add(Dropout::new(0.5).input_shape(6)).add(Dense::new(3).activation(Activation::Softmax));
///     m.compile("sgd", "sparse_categorical_crossentropy", ()).map(|_| m)
/// };
/// let (whole, a, b) = (model(0)?, model(1)?, model(2)?); // three copies, one per "replica"
/// let g = whole.compute_gradients(&x, &y)?;
/// let g0 = with_row_offset(0, || a.compute_gradients(&x.narrow(0, 0, 4)?, &y.narrow(0, 0, 4)?))?;
/// let g1 = with_row_offset(4, || b.compute_gradients(&x.narrow(0, 4, 4)?, &y.narrow(0, 4, 4)?))?;
/// for ((w, g), (g0, g1)) in g.iter().zip(g0.iter().map(|p| &p.1).zip(g1.iter().map(|p| &p.1))) {
///     let mean = ((g0 + g1)? * 0.5)?;
///     let diff = (g - &mean)?.abs()?.max_all()?.to_scalar::<f32>()?;
///     assert!(diff < 1e-6, "{w}: {diff}");
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn with_row_offset<R>(offset: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            ROW_OFFSET.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(ROW_OFFSET.with(|c| c.replace(offset)));
    f()
}

/// The offset [`with_row_offset`] set on this thread (0 outside it): read by the trainer when it
/// makes a training pass, never by a layer.
pub(crate) fn legacy_row_offset() -> usize {
    ROW_OFFSET.with(|c| c.get())
}

/// Sums tensors across replicas: every replica calls [`AllReduce::all_reduce_sum`] with its
/// tensors (the same shapes, in the same order), and each gets back the element-wise sums,
/// on its own tensors' device. The call returns once every replica has contributed.
pub trait AllReduce: Send + Sync {
    /// The number of replicas taking part.
    fn replicas(&self) -> usize;

    /// The sums over all replicas of `tensors`, for replica `replica` (in `0..replicas()`).
    ///
    /// # Errors
    /// A replica number out of range, tensors whose count or shapes differ between replicas,
    /// or a replica that gave up ([`AllReduce::abort`]).
    fn all_reduce_sum(&self, replica: usize, tensors: Vec<Tensor>) -> Result<Vec<Tensor>>;

    /// Called by a replica that cannot take part any more (its step failed): the replicas
    /// waiting for it get an error instead of waiting for ever.
    fn abort(&self, reason: &str);
}

#[derive(Default)]
struct Round {
    /// This round's contributions, by replica.
    slots: Vec<Option<Vec<Tensor>>>,
    /// The sums of the last completed round.
    result: Option<Vec<Tensor>>,
    /// Rounds completed.
    generation: u64,
    /// Replicas that have taken the last result.
    taken: usize,
    aborted: Option<String>,
}

/// [`AllReduce`] between the threads of one process: a barrier per round. The sums are taken in
/// replica order (0, 1, ..., N-1), so a run is deterministic whatever thread arrives first.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use kandle::distribute::{AllReduce, InProcessAllReduce};
/// let ar = InProcessAllReduce::new(3);
/// let sums: Vec<f32> = std::thread::scope(|s| {
///     let handles: Vec<_> = (0..3)
///         .map(|r| {
///             let ar = &ar;
///             s.spawn(move || {
///                 let t = Tensor::new(&[r as f32, 1.0], &Device::Cpu).unwrap();
///                 ar.all_reduce_sum(r, vec![t]).unwrap()[0].to_vec1::<f32>().unwrap()
///             })
///         })
///         .collect();
///     handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
/// });
/// assert_eq!(sums, [3.0, 3.0, 3.0, 3.0, 3.0, 3.0]);
/// ```
pub struct InProcessAllReduce {
    n: usize,
    round: Mutex<Round>,
    cv: Condvar,
}

impl InProcessAllReduce {
    /// A reduction between `replicas` threads (at least 1).
    pub fn new(replicas: usize) -> Self {
        let n = replicas.max(1);
        InProcessAllReduce {
            n,
            round: Mutex::new(Round { slots: vec![None; n], ..Round::default() }),
            cv: Condvar::new(),
        }
    }

    fn sum(contributions: &[Option<Vec<Tensor>>]) -> Result<Vec<Tensor>> {
        let first = contributions[0].as_ref().expect("every slot filled");
        let mut sums: Vec<Tensor> = first.clone();
        for (r, c) in contributions.iter().enumerate().skip(1) {
            let c = c.as_ref().expect("every slot filled");
            if c.len() != sums.len() {
                return Err(Error::invalid(
                    "tensors",
                    format!("replica {r} gave {} tensors, replica 0 gave {}", c.len(), sums.len()),
                ));
            }
            for (i, (s, t)) in sums.iter_mut().zip(c).enumerate() {
                if s.dims() != t.dims() {
                    return Err(Error::invalid(
                        "tensors",
                        format!("tensor {i}: replica {r} gave shape {:?}, replica 0 {:?}", t.dims(), s.dims()),
                    ));
                }
                *s = (&*s + t.to_device(s.device())?)?;
            }
        }
        Ok(sums)
    }
}

impl AllReduce for InProcessAllReduce {
    fn replicas(&self) -> usize {
        self.n
    }

    fn all_reduce_sum(&self, replica: usize, tensors: Vec<Tensor>) -> Result<Vec<Tensor>> {
        if replica >= self.n {
            return Err(Error::invalid("replica", format!("expected a replica in 0..{}, received {replica}", self.n)));
        }
        let device = tensors.first().map(|t| t.device().clone());
        let mut g = self.round.lock().unwrap_or_else(|e| e.into_inner());
        // Wait until the previous round's result has been taken by everyone.
        while g.taken < self.n && g.result.is_some() && g.aborted.is_none() {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(reason) = &g.aborted {
            return Err(Error::invalid("replica", format!("another replica gave up: {reason}")));
        }
        if g.taken == self.n {
            g.result = None;
            g.taken = 0;
        }
        if g.slots[replica].is_some() {
            return Err(Error::invalid("replica", format!("replica {replica} contributed twice to one round")));
        }
        g.slots[replica] = Some(tensors);
        let generation = g.generation;
        if g.slots.iter().all(|s| s.is_some()) {
            let sums = Self::sum(&g.slots);
            g.slots.iter_mut().for_each(|s| *s = None);
            match sums {
                Ok(s) => g.result = Some(s),
                Err(e) => {
                    g.aborted = Some(e.to_string());
                    self.cv.notify_all();
                    return Err(e);
                }
            }
            g.generation += 1;
            self.cv.notify_all();
        } else {
            while g.generation == generation && g.aborted.is_none() {
                g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            if let Some(reason) = &g.aborted {
                return Err(Error::invalid("replica", format!("another replica gave up: {reason}")));
            }
        }
        let out = g.result.clone().expect("the round's result");
        g.taken += 1;
        if g.taken == self.n {
            self.cv.notify_all();
        }
        drop(g);
        match device {
            Some(d) => out.into_iter().map(|t| Ok(t.to_device(&d)?)).collect(),
            None => Ok(out),
        }
    }

    fn abort(&self, reason: &str) {
        let mut g = self.round.lock().unwrap_or_else(|e| e.into_inner());
        g.aborted = Some(reason.to_string());
        self.cv.notify_all();
    }
}
